//! Watches of the etcd store: [`EtcdWatch`], a v3 watch on a key prefix
//! read by a thread of its own, and [`EtcdLeaseWatch`] over it.
//!
//! ```text
//! WatchThread ── POST /v3/watch (stream) ──▶ member i
//!      │ events ──▶ mpsc ──▶ EtcdWatch::next ──▶ EtcdLeaseWatch::wait
//!      │ stream broke ──▶ member i+1, start_revision = last event + 1
//!      └ compact_revision ──▶ range of the prefix ──▶ WatchEvent::Resync
//! ```

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};
use serde_json::{json, Value};

use super::etcd::{b64, num, parse_kvs, prefix_end, protocol};
use super::etcd_client::{body_text, token_rejected, Client};
use super::etcd_conn::agent;
use super::{LeaseEvent, LeaseWatch, NodeLease};
use crate::{Error, Result};

/// [`LeaseWatch`] of the etcd store: an [`EtcdWatch`] on the lease keys.
/// Its first event is the list the watch started from; then every put of a
/// lease key is a [`LeaseEvent::Put`] and every delete a
/// [`LeaseEvent::Gone`]; a [`WatchEvent::Resync`] is a [`LeaseEvent::All`].
/// Expiry is etcd's own: it deletes the keys, which the watch sees; a
/// renewal (an etcd lease keep-alive) changes no key and is no event.
#[derive(Debug)]
pub struct EtcdLeaseWatch {
    watch: EtcdWatch,
    prefix: String,
    pending: std::collections::VecDeque<LeaseEvent>,
}

impl EtcdLeaseWatch {
    pub(super) fn start(client: &Client, prefix: &str, ctx: &str) -> Result<EtcdLeaseWatch> {
        let (kvs, watch) = EtcdWatch::start_listed(client, prefix, ctx)?;
        let mut w = EtcdLeaseWatch {
            watch,
            prefix: prefix.to_string(),
            pending: Default::default(),
        };
        let all = w.leases(kvs);
        w.pending.push_back(LeaseEvent::All(all));
        Ok(w)
    }

    /// The leases of a list (a value that is not a lease is left out: the
    /// store's `list` reports it).
    fn leases(&self, kvs: KeyValues) -> Vec<NodeLease> {
        let mut v: Vec<NodeLease> = kvs
            .into_iter()
            .filter_map(|(_, value)| serde_json::from_slice(&value).ok())
            .collect();
        v.sort_by_key(|l: &NodeLease| super::addr_to_u128(l.subnet.network()));
        v
    }

    fn lease_event(&self, e: WatchEvent) -> Option<LeaseEvent> {
        match e {
            WatchEvent::Put { value, .. } => {
                serde_json::from_slice(&value).ok().map(LeaseEvent::Put)
            }
            WatchEvent::Delete { key, .. } => {
                // The key is `<prefix><subnet>` with the subnet as
                // `net_key` wrote it ('/' → '_', ':' → '-').
                let name = key.strip_prefix(&self.prefix)?;
                name.replace('_', "/")
                    .replace('-', ":")
                    .parse()
                    .ok()
                    .map(LeaseEvent::Gone)
            }
            WatchEvent::Resync { kvs, .. } => Some(LeaseEvent::All(self.leases(kvs))),
        }
    }
}

impl LeaseWatch for EtcdLeaseWatch {
    fn wait(&mut self, timeout: Duration) -> Result<bool> {
        // The list the watch started from is for `next`; a caller of
        // `wait` lists by itself.
        self.pending.clear();
        match self.watch.next(timeout)? {
            Some(_) => {
                while self.watch.next(Duration::ZERO)?.is_some() {} // coalesce a burst
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn next(&mut self, timeout: Duration) -> Result<Option<LeaseEvent>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Some(e) = self.watch.next(left)? else {
                return Ok(None);
            };
            // A value under the prefix that is not a lease (another
            // program's) is skipped, as `list` reports it.
            if let Some(e) = self.lease_event(e) {
                return Ok(Some(e));
            }
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.watch.as_fd()
    }
}

/// Keys and values under a prefix.
type KeyValues = Vec<(String, Vec<u8>)>;

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
    /// Readable while events may wait in `rx` (the thread writes to it
    /// after every event it passes on).
    wake: Arc<EventFd>,
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
        Self::from_revision(client, prefix, rev, ctx)
    }

    /// Everything under `prefix`, and a watch of the changes after that
    /// list (one read: the list's revision is where the watch starts).
    pub(super) fn start_listed(
        client: &Client,
        prefix: &str,
        ctx: &str,
    ) -> Result<(KeyValues, EtcdWatch)> {
        let v = client.post(
            "/v3/kv/range",
            &json!({ "key": b64(prefix), "range_end": prefix_end(prefix) }),
            ctx,
        )?;
        let rev = num(&v["header"]["revision"], "header revision").map_err(|w| protocol(ctx, w))?;
        let kvs = parse_kvs(&v["kvs"], ctx)?
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        Ok((kvs, Self::from_revision(client, prefix, rev, ctx)?))
    }

    fn from_revision(client: &Client, prefix: &str, rev: u64, ctx: &str) -> Result<EtcdWatch> {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| Error::io("etcd watch: eventfd", e.into()))?,
        );
        // A quiet stream stays open: etcd sends progress notifications
        // (at its --experimental-watch-progress-notify-interval, 10 min by
        // default), and the read timeout only reopens a stream that said
        // nothing for `watch_idle` (from the revision it had: nothing is
        // lost). It is also how the thread of a dropped watch ends when no
        // event comes.
        let mut streams = client.clone();
        streams.agent = agent(
            client.tls.as_ref(),
            Duration::from_secs(2),
            client.watch_idle,
            None,
        );
        let w = WatchThread {
            streams,
            lists: client.with_own_revision(),
            prefix: prefix.to_string(),
            next_rev: rev + 1,
            tx,
            wake: wake.clone(),
            stop: stop.clone(),
            ctx: ctx.to_string(),
        };
        std::thread::Builder::new()
            .name("cnet-etcd-watch".into())
            .spawn(move || w.run())
            .map_err(|e| Error::io("etcd watch: spawn thread", e))?;
        Ok(EtcdWatch { rx, wake, stop })
    }

    /// The next event, waiting up to `timeout` (`Ok(None)`: none came).
    pub fn next(&mut self, timeout: Duration) -> Result<Option<WatchEvent>> {
        // Cleared before the channel is read: an event sent after this
        // makes it readable again (see `as_fd`).
        let _ = self.wake.read();
        match self.rx.recv_timeout(timeout) {
            Ok(e) => Ok(Some(e)),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::Protocol {
                context: "etcd watch".into(),
                reason: "the watch thread ended".into(),
            }),
        }
    }

    /// A descriptor readable when an event may be waiting: after `poll(2)`
    /// says so, call `next(Duration::ZERO)` until it returns `None`.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
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
    wake: Arc<EventFd>,
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
        let _ = self.wake.write(1); // a poller learns the watch ended
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
            "progress_notify": true,
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
                let _ = self.wake.write(1);
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
        let _ = self.wake.write(1);
        Ok(())
    }
}
