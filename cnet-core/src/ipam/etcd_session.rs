//! An etcd connection for a long-running node agent: it survives etcd
//! restarting, being unreachable, or losing its data (cargo feature
//! `etcd`).
//!
//! ```text
//!   call(f) ──▶ backoff over? ── no ──▶ Call::Later
//!                   │ yes
//!                   ▼
//!              connected? ── no ──▶ EtcdStore::open + subnets + watch
//!                   │                     │ fails: Call::Away(error, retry in)
//!                   ▼                     ▼
//!              f(&mut EtcdLeases) ── timeout, I/O, HTTP error, revision went back
//!                   │                 ──▶ connection dropped, Call::Away
//!                   ▼
//!              Call::Done(what the store answered)
//! ```
//!
//! A failure that is about reaching the store drops the connection and
//! backs off ([`Backoff`]: capped, jittered); the next call once the
//! backoff allows makes a new one (a new client, so a store whose history
//! went back is usable again; the network registered again; a new lease
//! watch). What the store answers (`NotFound`, `Conflict`, …) is the
//! caller's. [`EtcdSession::reconnected`] says when a connection was made
//! again, so the caller lists the leases and claims its own again
//! ([`super::renew_or_claim`]).

use std::os::fd::BorrowedFd;
use std::time::Duration;

use super::{
    Backoff, EtcdConfig, EtcdLeases, EtcdStore, LeaseEvent, LeaseStore, LeaseWatch, SubnetConfig,
};
use crate::{Error, Result};

/// The outcome of [`EtcdSession::call`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Call<T> {
    /// The store answered (with a value or an error of its own).
    Done(Result<T>),
    /// The store could not be reached; the connection was dropped and the
    /// next call waits `retry_in`.
    Away {
        /// What went wrong.
        error: Error,
        /// How long the backoff waits before the next call.
        retry_in: Duration,
    },
    /// Not tried: the backoff after the last failure is not over.
    Later,
}

/// Node subnet leases in etcd, connected again as needed; see the module
/// docs.
#[derive(Debug)]
pub struct EtcdSession {
    etcd: EtcdConfig,
    config: SubnetConfig,
    conn: Option<(EtcdLeases, Box<dyn LeaseWatch>)>,
    backoff: Backoff,
    connections: u64,
    reconnected: bool,
}

impl EtcdSession {
    /// A session with etcd as `etcd` says (endpoints, key prefix, TLS and
    /// authentication; every request bounded by its timeout), the leases of
    /// `config.network`, retries paced by `backoff`. Nothing is sent until
    /// the first call.
    pub fn new(etcd: EtcdConfig, config: SubnetConfig, backoff: Backoff) -> EtcdSession {
        EtcdSession {
            etcd,
            config,
            conn: None,
            backoff,
            connections: 0,
            reconnected: false,
        }
    }

    /// Run `f` against the leases if the backoff allows (connecting first
    /// when needed).
    pub fn call<T>(&mut self, f: impl FnOnce(&mut EtcdLeases) -> Result<T>) -> Call<T> {
        if !self.backoff.ready() {
            return Call::Later;
        }
        // Any failure to connect (a network registered with another
        // configuration included) is the store's trouble, not the call's.
        let (connected, r) = match self.connect() {
            Ok((leases, _)) => (true, f(leases)),
            Err(e) => (false, Err(e)),
        };
        match r {
            Err(error) if !connected || is_away(&error) => {
                self.conn = None;
                let retry_in = self.backoff.failed();
                Call::Away { error, retry_in }
            }
            r => {
                self.backoff.reset();
                Call::Done(r)
            }
        }
    }

    fn connect(&mut self) -> Result<&mut (EtcdLeases, Box<dyn LeaseWatch>)> {
        if self.conn.is_none() {
            let store = EtcdStore::open(self.etcd.clone())?;
            let mut leases = store.subnets(self.config.clone())?;
            let watch = leases.watch()?;
            self.connections += 1;
            self.reconnected |= self.connections > 1;
            self.conn = Some((leases, watch));
        }
        // Set just above.
        self.conn.as_mut().ok_or_else(|| Error::Protocol {
            context: "etcd session".into(),
            reason: "no connection".into(),
        })
    }

    /// Whether a connection was made again (after a failure) since the
    /// last time this was asked.
    pub fn reconnected(&mut self) -> bool {
        std::mem::take(&mut self.reconnected)
    }

    /// Connections made so far.
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// The next change of the lease set, without waiting (`None`: none
    /// waits, or there is no connection). The first event of every
    /// connection is [`LeaseEvent::All`]. A watch that failed drops the
    /// connection (made again by the next call, whose new watch starts
    /// with the whole set again).
    pub fn event(&mut self) -> Option<LeaseEvent> {
        let (_, watch) = self.conn.as_mut()?;
        match watch.next(Duration::ZERO) {
            Ok(e) => e,
            Err(_) => {
                self.conn = None;
                None
            }
        }
    }

    /// The lease watch's descriptor ([`LeaseWatch::as_fd`]) to `poll(2)`
    /// with others; `None` while there is no connection.
    pub fn watch_fd(&self) -> Option<BorrowedFd<'_>> {
        self.conn.as_ref().map(|(_, w)| w.as_fd())
    }

    /// Whether the session has a connection (the last call reached etcd).
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The retry pacing (e.g. [`Backoff::failed`] when the store's answer
    /// means "try again later", [`Backoff::reset`] for one try now).
    pub fn backoff(&mut self) -> &mut Backoff {
        &mut self.backoff
    }
}

/// Whether `e` says the store could not be used (rather than answered).
fn is_away(e: &Error) -> bool {
    matches!(
        e,
        Error::Timeout { .. } | Error::Io { .. } | Error::Protocol { .. } | Error::Corrupt { .. }
    )
}
