//! Watches of the etcd store: [`EtcdWatch`], a v3 watch on a key prefix
//! read by a thread of its own, and [`EtcdLeaseWatch`] over it.
//!
//! ```text
//! WatchThread ── POST /v3/watch (stream) ──▶ member i
//!      │ events ──▶ mpsc ──▶ EtcdWatch::next ──▶ EtcdLeaseWatch::wait
//!      │ stream broke ──▶ member i+1, start_revision = last event + 1
//!      └ compact_revision ──▶ range of the prefix ──▶ WatchEvent::Resync
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde_json::{json, Value};

use super::etcd::{b64, num, parse_kvs, prefix_end, protocol};
use super::etcd_client::{body_text, token_rejected, Client};
use super::etcd_conn::agent;
use super::LeaseWatch;
use crate::{Error, Result};

/// [`LeaseWatch`] of the etcd store: an [`EtcdWatch`] on the lease keys;
/// every batch of its events (and a resync) wakes the caller. Expiry is
/// etcd's own: it deletes the keys, which the watch sees.
#[derive(Debug)]
pub struct EtcdLeaseWatch {
    watch: EtcdWatch,
}

impl EtcdLeaseWatch {
    pub(super) fn start(client: &Client, prefix: &str, ctx: &str) -> Result<EtcdLeaseWatch> {
        Ok(EtcdLeaseWatch {
            watch: EtcdWatch::start(client, prefix, ctx)?,
        })
    }
}

impl LeaseWatch for EtcdLeaseWatch {
    fn wait(&mut self, timeout: Duration) -> Result<bool> {
        match self.watch.next(timeout)? {
            Some(_) => {
                while self.watch.next(Duration::ZERO)?.is_some() {} // coalesce a burst
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// One change under a watched prefix ([`EtcdWatch::next`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// `key` was created or changed to `value` at `revision`.
    Put {
        /// The full key.
        key: String,
        /// Its new value.
        value: Vec<u8>,
        /// The revision of the change (the key's mod revision).
        revision: u64,
    },
    /// `key` was deleted (or its etcd lease expired) at `revision`.
    Delete {
        /// The full key.
        key: String,
        /// The revision of the deletion.
        revision: u64,
    },
    /// etcd compacted the history the watch needed to resume (it was
    /// disconnected meanwhile): this is everything under the prefix as of
    /// `revision`, to replace what the caller knew; events go on after it.
    Resync {
        /// Every key and value under the prefix.
        kvs: Vec<(String, Vec<u8>)>,
        /// The revision of that list.
        revision: u64,
    },
}

/// An etcd v3 watch on a key prefix (`/v3/watch`, a stream of JSON
/// objects), read by a thread of its own. When the stream breaks (the
/// member died, a restart, a quiet stream's read timeout) it reopens on the
/// next endpoint from the revision after the last event it passed on, so no
/// event is lost or repeated; when etcd has compacted that revision away it
/// passes on a [`WatchEvent::Resync`] with the full list instead. The
/// thread runs in the network namespace of the thread that made the watch
/// and ends soon after the watch is dropped.
#[derive(Debug)]
pub struct EtcdWatch {
    rx: mpsc::Receiver<WatchEvent>,
    stop: Arc<AtomicBool>,
}

impl EtcdWatch {
    pub(super) fn start(client: &Client, prefix: &str, ctx: &str) -> Result<EtcdWatch> {
        // Where the watch starts: just after the revision of a first read,
        // so a change between this call and the stream is seen.
        let v = client.post(
            "/v3/kv/range",
            &json!({ "key": b64(prefix), "range_end": prefix_end(prefix), "count_only": true }),
            ctx,
        )?;
        let rev = num(&v["header"]["revision"], "header revision").map_err(|w| protocol(ctx, w))?;
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        // A stream that stays quiet is reopened now and then (the read
        // timeout), which is also how the thread notices a dropped watch.
        let mut streams = client.clone();
        streams.agent = agent(
            client.tls.as_ref(),
            Duration::from_secs(2),
            Duration::from_secs(5),
            None,
        );
        let w = WatchThread {
            streams,
            lists: client.with_own_revision(),
            prefix: prefix.to_string(),
            next_rev: rev + 1,
            tx,
            stop: stop.clone(),
            ctx: ctx.to_string(),
        };
        std::thread::Builder::new()
            .name("cnet-etcd-watch".into())
            .spawn(move || w.run())
            .map_err(|e| Error::io("etcd watch: spawn thread", e))?;
        Ok(EtcdWatch { rx, stop })
    }

    /// The next event, waiting up to `timeout` (`Ok(None)`: none came).
    pub fn next(&mut self, timeout: Duration) -> Result<Option<WatchEvent>> {
        match self.rx.recv_timeout(timeout) {
            Ok(e) => Ok(Some(e)),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::Protocol {
                context: "etcd watch".into(),
                reason: "the watch thread ended".into(),
            }),
        }
    }
}

impl Drop for EtcdWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The thread behind an [`EtcdWatch`].
struct WatchThread {
    /// For the streams: no whole-request bound.
    streams: Client,
    /// For the resync lists: the store's bounds and failover.
    lists: Client,
    prefix: String,
    /// The revision to resume from: one past the last event passed on.
    next_rev: u64,
    tx: mpsc::Sender<WatchEvent>,
    stop: Arc<AtomicBool>,
    ctx: String,
}

impl WatchThread {
    /// Open streams until told to stop (or the watch is dropped).
    fn run(mut self) {
        let n = self.streams.endpoints.len();
        let mut ep = self.streams.current.load(Ordering::Relaxed);
        while !self.stop.load(Ordering::SeqCst) {
            match self.stream(ep % n) {
                Ok(true) => {} // reopen on the same member
                Ok(false) => return,
                Err(()) => {
                    ep += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// One stream from endpoint `i`: `Ok(true)` to reopen, `Ok(false)` to
    /// end (stopped), `Err` to move to another endpoint.
    fn stream(&mut self, i: usize) -> std::result::Result<bool, ()> {
        let ep = self.streams.endpoints[i].trim_end_matches('/').to_string();
        let token = match &self.streams.auth {
            Some(a) => match a.token() {
                Some(t) => Some(t),
                None => self
                    .streams
                    .authenticate(&ep, a, &self.ctx)
                    .map_err(|_| ())?,
            },
            None => None,
        };
        let body = json!({ "create_request": {
            "key": b64(&self.prefix),
            "range_end": prefix_end(&self.prefix),
            "start_revision": self.next_rev.to_string(),
        }});
        // etcd's "require leader" (gRPC metadata `hasleader`, passed on by
        // the gateway): a member cut off from the others ends the stream
        // instead of keeping it open and silent, so the watch moves on.
        let mut req = self
            .streams
            .agent
            .post(&format!("{ep}/v3/watch"))
            .set("Grpc-Metadata-Hasleader", "true");
        if let Some(t) = token.as_deref().filter(|t| !t.is_empty()) {
            req = req.set("Authorization", t);
        }
        let resp = match req.send_json(&body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, resp)) => {
                let text = body_text(resp);
                if let Some(a) = &self.streams.auth {
                    if token_rejected(&text) {
                        a.invalidate(token.as_deref());
                    }
                }
                return Err(());
            }
            Err(_) => return Err(()),
        };
        let stream = serde_json::Deserializer::from_reader(resp.into_reader()).into_iter::<Value>();
        let mut created = false;
        for item in stream {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(false);
            }
            // A read timeout on a quiet stream: reopen here. A broken one
            // (the member died): another member.
            let v = match item {
                Ok(v) => v,
                Err(e) if e.is_io() && created => return Ok(true),
                Err(_) => return Err(()),
            };
            if !v["error"].is_null() {
                return Err(()); // the gateway's error (e.g. auth, no leader)
            }
            let r = &v["result"];
            created = true;
            if num(&r["header"]["revision"], "revision").is_ok_and(|rev| rev + 1 < self.next_rev) {
                // The server's history went back (an etcd restored from a
                // backup, or a new empty one at this endpoint): a watch
                // from our revision would wait for a future that means
                // nothing. Pass on its full list and watch from its now, so
                // a caller that claims its lease again hears the others.
                self.lists.forget_revision();
                return self.resync().map(|()| true);
            }
            let compacted = num(&r["compact_revision"], "compact_revision").unwrap_or(0);
            if compacted > 0 {
                return self.resync().map(|()| true);
            }
            for ev in r["events"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                let Some(e) = self.event(ev) else {
                    return Err(());
                };
                if self.tx.send(e).is_err() {
                    return Ok(false); // the watch was dropped
                }
            }
            if r["canceled"].as_bool() == Some(true) {
                return Err(());
            }
        }
        Ok(true)
    }

    /// A watch event as [`WatchEvent`] (advancing the resume revision).
    fn event(&mut self, ev: &Value) -> Option<WatchEvent> {
        let kv = parse_kvs(&json!([ev["kv"]]), &self.ctx).ok()?.pop()?;
        self.next_rev = self.next_rev.max(kv.mod_revision + 1);
        Some(if ev["type"].as_str() == Some("DELETE") {
            WatchEvent::Delete {
                key: kv.key,
                revision: kv.mod_revision,
            }
        } else {
            WatchEvent::Put {
                key: kv.key,
                value: kv.value,
                revision: kv.mod_revision,
            }
        })
    }

    /// The history is compacted: pass on the full list, resume after it.
    fn resync(&mut self) -> std::result::Result<(), ()> {
        let body = json!({ "key": b64(&self.prefix), "range_end": prefix_end(&self.prefix) });
        let v = self
            .lists
            .post("/v3/kv/range", &body, &self.ctx)
            .map_err(|_| ())?;
        let kvs = parse_kvs(&v["kvs"], &self.ctx).map_err(|_| ())?;
        let rev = num(&v["header"]["revision"], "revision").map_err(|_| ())?;
        self.next_rev = rev + 1;
        let e = WatchEvent::Resync {
            kvs: kvs.into_iter().map(|kv| (kv.key, kv.value)).collect(),
            revision: rev,
        };
        if self.tx.send(e).is_err() {
            self.stop.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}
