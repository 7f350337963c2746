//! The etcd store's HTTP client: one cluster's endpoints, failover between
//! them, TLS and auth per [`EtcdConfig`](super::EtcdConfig), and the sorting
//! of etcd's answers into retry (another member may serve) or typed error.
//!
//! ```text
//! Client::post ─▶ attempt(endpoint that answered last)
//!                   ├─ token? no: authenticate (user/password → token)
//!                   ├─ POST path, Authorization: token
//!                   ├─ 2xx ─▶ check_revision ─▶ Done
//!                   ├─ "invalid auth token" ─▶ forget it, authenticate, once more
//!                   ├─ no leader / leader changed / 503 / connection error ─▶ Retry
//!                   └─ TLS refusal, wrong password, permission denied ─▶ Fail
//!              Retry on every endpoint ─▶ pause 50→400 ms ─▶ again, within the timeout
//! ```

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::etcd::{num, protocol};
use super::etcd_conn::{agent, denied, tls_failure, Auth};
use super::EtcdConfig;
use crate::{Error, Result};

/// The blocking HTTP client over all endpoints of one cluster (see
/// [`Client::post`] for failover), with TLS and auth per [`EtcdConfig`].
#[derive(Clone)]
pub(crate) struct Client {
    pub(super) agent: ureq::Agent,
    pub(super) endpoints: Arc<Vec<String>>,
    /// The endpoint that answered last: requests start there.
    pub(super) current: Arc<AtomicUsize>,
    /// User/password auth and its token, shared by the clones.
    pub(super) auth: Option<Arc<Auth>>,
    /// TLS settings (for the watch threads' own agents).
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
    /// How long failover keeps trying (see [`Client::post`]).
    retry_for: Duration,
    /// The highest header revision seen (see `check_revision`).
    revision: Arc<AtomicU64>,
    /// How long a watch stream may stay silent ([`EtcdConfig::watch_idle`]).
    pub(super) watch_idle: Duration,
}

/// Never prints the agent (its TLS configuration holds the private key)
/// nor the token.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// How one endpoint answered a request.
pub(super) enum Attempt {
    Done(Value),
    /// Worth trying another endpoint (or this one again after a pause).
    Retry(Error),
    /// The answer, even if another endpoint were asked.
    Fail(Error),
}

impl Client {
    /// The client of `config`, with its TLS settings made (`tls`).
    pub(super) fn new(config: &EtcdConfig, tls: Option<Arc<rustls::ClientConfig>>) -> Client {
        let t = config.timeout;
        Client {
            agent: agent(tls.as_ref(), t, t, Some(t)),
            endpoints: Arc::new(config.endpoints.clone()),
            current: Arc::new(AtomicUsize::new(0)),
            auth: config.auth.clone().map(|a| Arc::new(Auth::new(a))),
            tls,
            // An election takes about one election timeout (1 s by
            // default): the caller's timeout bounds the failover too.
            retry_for: t,
            revision: Arc::new(AtomicU64::new(0)),
            watch_idle: config.watch_idle,
        }
    }

    /// The same client with a revision check of its own, starting from
    /// nothing: for a reader that must follow a server whose history went
    /// back (the watch's resync lists) without loosening the store's check.
    pub(super) fn with_own_revision(&self) -> Client {
        Client {
            revision: Arc::new(AtomicU64::new(0)),
            ..self.clone()
        }
    }

    /// Forget the highest revision seen (see [`Client::with_own_revision`]).
    pub(super) fn forget_revision(&self) {
        self.revision.store(0, Ordering::SeqCst);
    }

    /// POST `body` to `path`, failing over between endpoints: it starts at
    /// the endpoint that answered last and moves to the next on a
    /// connection error, a timeout, or etcd's "no leader" / "leader
    /// changed" / unavailable answers; after a round with no answer it
    /// pauses (50 ms, doubling to 400 ms) and goes round again until
    /// `retry_for` (the request timeout) has passed, so an election (about one election timeout)
    /// is ridden out and a dead cluster still fails soon. Every request
    /// sent again is one whose repeat is harmless (reads, and transactions
    /// guarded by compares).
    pub(super) fn post(&self, path: &str, body: &Value, ctx: &str) -> Result<Value> {
        let start = std::time::Instant::now();
        let n = self.endpoints.len();
        let mut pause = Duration::from_millis(50);
        loop {
            let first = self.current.load(Ordering::Relaxed);
            let mut last = None;
            for k in 0..n {
                let i = (first + k) % n;
                match self.attempt(i, path, body, ctx) {
                    Attempt::Done(v) => {
                        self.current.store(i, Ordering::Relaxed);
                        return Ok(v);
                    }
                    Attempt::Fail(e) => return Err(e),
                    Attempt::Retry(e) => last = Some(e),
                }
            }
            let last = last.unwrap_or_else(|| Error::invalid(ctx.to_string(), "no etcd endpoints"));
            if start.elapsed() + pause > self.retry_for {
                return Err(last);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(400));
        }
    }

    /// One request to endpoint `i`, authenticating first when a user is
    /// set and there is no token (and once more when etcd says the token
    /// is invalid or expired).
    fn attempt(&self, i: usize, path: &str, body: &Value, ctx: &str) -> Attempt {
        let ep = self.endpoints[i].trim_end_matches('/');
        let url = format!("{ep}{path}");
        let floor = self.revision.load(Ordering::SeqCst);
        let mut reauthenticated = false;
        loop {
            let token = match &self.auth {
                Some(a) => match a.token() {
                    Some(t) => Some(t),
                    None => match self.authenticate(ep, a, ctx) {
                        Ok(t) => t,
                        Err(e) => return e,
                    },
                },
                None => None,
            };
            let mut req = self.agent.post(&url);
            if let Some(t) = token.as_deref().filter(|t| !t.is_empty()) {
                req = req.set("Authorization", t);
            }
            match req.send_json(body) {
                Ok(resp) => {
                    let v = match resp.into_json::<Value>() {
                        Ok(v) => v,
                        Err(e) => {
                            return Attempt::Retry(Error::Protocol {
                                context: format!("{ctx}: etcd {url}"),
                                reason: format!("bad JSON reply: {e}"),
                            })
                        }
                    };
                    return match check_revision(&self.revision, floor, &v, ctx) {
                        Ok(_) => Attempt::Done(v),
                        Err(e) => Attempt::Fail(e),
                    };
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let text = body_text(resp);
                    if let (Some(a), false) = (&self.auth, reauthenticated) {
                        if token_rejected(&text) {
                            a.invalidate(token.as_deref());
                            reauthenticated = true;
                            continue;
                        }
                    }
                    return status_answer(code, &text, &format!("{ctx}: etcd {url}"), ctx);
                }
                Err(ureq::Error::Transport(t)) => {
                    let context = format!("{ctx}: etcd {url}");
                    return match tls_failure(&context, &t) {
                        Some(e) => Attempt::Fail(e),
                        None => Attempt::Retry(transport_error(context, t)),
                    };
                }
            }
        }
    }

    /// A new token for `a` from endpoint `ep` (`Ok(None)`: etcd has auth
    /// off, so none is needed).
    pub(super) fn authenticate(
        &self,
        ep: &str,
        a: &Auth,
        ctx: &str,
    ) -> std::result::Result<Option<String>, Attempt> {
        let url = format!("{ep}/v3/auth/authenticate");
        let context = format!("{ctx}: etcd {url} as user {:?}", a.user.username);
        match self.agent.post(&url).send_json(a.request()) {
            Ok(resp) => {
                let v: Value = resp.into_json().map_err(|e| {
                    Attempt::Retry(Error::Protocol {
                        context: context.clone(),
                        reason: format!("bad JSON reply: {e}"),
                    })
                })?;
                match v["token"].as_str() {
                    Some(t) if !t.is_empty() => {
                        a.set(t.to_string());
                        Ok(Some(t.to_string()))
                    }
                    _ => Err(Attempt::Fail(Error::Protocol {
                        context,
                        reason: "etcd's authenticate reply has no token".into(),
                    })),
                }
            }
            Err(ureq::Error::Status(code, resp)) => {
                let text = body_text(resp);
                if text.contains("authentication is not enabled") {
                    a.set(String::new()); // none needed: don't ask again
                    return Ok(None);
                }
                if text.contains("authentication failed") {
                    return Err(Attempt::Fail(denied(
                        context,
                        format!(
                            "etcd refused the user name or password: check --etcd-username and \
                             the password file (etcd said: {})",
                            server_words(&text)
                        ),
                    )));
                }
                Err(status_answer(code, &text, &context, ctx))
            }
            Err(ureq::Error::Transport(t)) => Err(match tls_failure(&context, &t) {
                Some(e) => Attempt::Fail(e),
                None => Attempt::Retry(transport_error(context, t)),
            }),
        }
    }
}

fn transport_error(context: String, t: ureq::Transport) -> Error {
    let text = t.to_string();
    let io_kind = std::error::Error::source(&t)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(|e| e.kind());
    let timed_out = matches!(
        io_kind,
        Some(std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)
    ) || text.contains("timed out");
    if timed_out {
        return Error::Timeout {
            context,
            reason: text,
        };
    }
    let kind = match t.kind() {
        ureq::ErrorKind::ConnectionFailed => std::io::ErrorKind::ConnectionRefused,
        _ => io_kind.unwrap_or(std::io::ErrorKind::Other),
    };
    Error::Io {
        context,
        source: std::io::Error::new(kind, text),
    }
}

/// The body of an error reply, as much as arrived: etcd's gateway ends
/// it with a chunked trailer that the reader may refuse after the text.
pub(super) fn body_text(resp: ureq::Response) -> String {
    use std::io::Read as _;
    let mut buf = Vec::new();
    let _ = resp.into_reader().take(1 << 20).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// etcd's own words in an error body (`{"error": …, "message": …}`).
fn server_words(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| {
            v["message"]
                .as_str()
                .or(v["error"].as_str())
                .map(String::from)
        })
        .unwrap_or_else(|| text.trim().to_string())
}

/// etcd says the token is no longer good (expired, or the member
/// restarted: simple tokens live in one member's memory).
pub(super) fn token_rejected(text: &str) -> bool {
    text.contains("invalid auth token") || text.contains("token is expired")
}

/// An HTTP error status of etcd's gateway, sorted into retry or answer.
fn status_answer(code: u16, text: &str, context: &str, ctx: &str) -> Attempt {
    let words = server_words(text);
    // gRPC NotFound (HTTP 404) is, for the calls this store makes, only
    // ever "requested lease not found" (the body is sometimes empty).
    if code == 404 || text.contains("requested lease not found") {
        // The etcd lease expired or was revoked between its grant and this
        // request: callers retry with a new one.
        return Attempt::Fail(Error::NotFound {
            context: format!("{ctx}: etcd lease (expired or revoked meanwhile)"),
            kernel: None,
        });
    }
    // This member cannot serve now (an election, a member cut off, a
    // request caught in a leader change): another may, or it will soon.
    let unavailable = [
        "no leader",
        "leader changed",
        "request timed out",
        "not capable",
        "too many requests",
        "unhealthy cluster",
        "server stopped",
        "timed out waiting for read index",
    ];
    if code == 503 || unavailable.iter().any(|u| text.contains(u)) {
        return Attempt::Retry(Error::Timeout {
            context: context.to_string(),
            reason: format!("etcd member unavailable (HTTP {code}): {words}"),
        });
    }
    if text.contains("user name is empty") || token_rejected(text) {
        return Attempt::Fail(denied(
            context.to_string(),
            format!(
                "etcd has authentication enabled: give --etcd-username and a password \
                 (etcd said: {words})"
            ),
        ));
    }
    if text.contains("permission denied") || code == 401 || code == 403 {
        return Attempt::Fail(denied(
            context.to_string(),
            format!(
                "the etcd user may not do this: grant its role read/write on the key prefix \
                 (etcd said: {words})"
            ),
        ));
    }
    Attempt::Fail(Error::Protocol {
        context: context.to_string(),
        reason: format!("HTTP {code}: {words}"),
    })
}

/// The header revision of a reply: etcd's revision never goes back, so a
/// reply older than one already seen means the endpoint now serves another
/// (or a restored) cluster, where generations (create revisions) could be
/// handed out again. `floor` is the highest revision seen when the request
/// was sent: replies to requests in flight at the same time (threads
/// sharing a store) may arrive in any order, but every reply is at least as
/// new as what was known before its request (etcd's reads are
/// linearizable, on any member).
pub(super) fn check_revision(seen: &AtomicU64, floor: u64, v: &Value, ctx: &str) -> Result<u64> {
    // A stream's reply (a lease keep-alive) wraps its header in "result".
    let header = if v["header"].is_null() {
        &v["result"]["header"]
    } else {
        &v["header"]
    };
    let rev = num(&header["revision"], "header revision").map_err(|why| protocol(ctx, why))?;
    seen.fetch_max(rev, Ordering::SeqCst);
    if rev < floor {
        let before = floor;
        return Err(Error::Corrupt {
            context: format!("{ctx}: etcd"),
            reason: format!(
                "etcd's revision went back from {before} to {rev}: the endpoint serves another \
                 cluster, or one restored from a backup; allocations made since could be handed \
                 out again, so nothing more is done (reconnect once the store is known good)"
            ),
        });
    }
    Ok(rev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_answers_fail_over_and_refusals_do_not() {
        let no_leader =
            r#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#;
        assert!(matches!(
            status_answer(503, no_leader, "c", "c"),
            Attempt::Retry(Error::Timeout { .. })
        ));
        let changed = r#"{"message":"etcdserver: leader changed","code":14}"#;
        assert!(matches!(
            status_answer(500, changed, "c", "c"),
            Attempt::Retry(_)
        ));
        let denied = r#"{"message":"etcdserver: permission denied","code":7}"#;
        match status_answer(403, denied, "c", "c") {
            Attempt::Fail(e @ Error::PermissionDenied { .. }) => {
                assert!(e.to_string().contains("grant its role"), "{e}")
            }
            _ => panic!("permission denied must not fail over"),
        }
        let no_user = r#"{"message":"etcdserver: user name is empty","code":3}"#;
        assert!(matches!(
            status_answer(400, no_user, "c", "c"),
            Attempt::Fail(Error::PermissionDenied { .. })
        ));
        assert!(matches!(
            status_answer(400, "{}", "c", "c"),
            Attempt::Fail(Error::Protocol { .. })
        ));
        assert!(token_rejected(
            r#"{"message":"etcdserver: invalid auth token"}"#
        ));
    }

    #[test]
    fn debug_never_shows_password_or_token() {
        let auth = Auth::new(super::super::EtcdAuth::new("cnet", "hunter2-secret"));
        auth.set("tok3n.42".into());
        let config = EtcdConfig::new(&["http://127.0.0.1:1"], "/p").auth("cnet", "hunter2-secret");
        for dbg in [format!("{auth:?}"), format!("{config:?}")] {
            assert!(!dbg.contains("hunter2-secret"), "{dbg}");
            assert!(!dbg.contains("tok3n"), "{dbg}");
            assert!(dbg.contains("<redacted>"), "{dbg}");
        }
    }
}
