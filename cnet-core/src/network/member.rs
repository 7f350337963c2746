//! A node's membership of the cluster (cargo feature `etcd`): its own
//! lease kept alive, and the other nodes' leases followed one event at a
//! time, each applied to the peer it concerns.
//!
//! ```text
//!   Member::step(sink)
//!     store away?        ──▶ connect again (paced by the backoff)
//!     renewal due?       ──▶ renew_or_claim: one etcd lease keep-alive
//!                            (no key written: no node's watch fires)
//!     own lease gone or taken (seen by the watch) ──▶ claim_again
//!     lease events       ──▶ All(list) ─▶ sink.all   (at start, after a
//!                            │               reconnection or a compaction)
//!                            Put(lease) ─▶ sink.put   (one peer)
//!                            Gone(net)  ─▶ sink.gone  (one peer)
//!     kept peers' time over ─▶ sink.gone for each
//!   Member::as_fd / wake_in ──▶ the caller's one poll(2), with the kernel
//!                              watch's descriptor beside it
//! ```
//!
//! A change costs each node nothing from the store but the event itself:
//! nobody lists the leases after the first time (unless the watch lost
//! track), and renewals are invisible to the others. What the node does
//! with a peer is a [`PeerSink`]: the kernel ([`KernelPeers`], one route,
//! neighbour and FDB entry per vxlan peer through
//! [`DriftRepair::put_lease`]), or anything else (a recorder in a
//! simulation of many nodes).
//!
//! When the store is away the kernel keeps what it has (stale beats
//! empty). After a reconnection the watch starts again with the whole set
//! (and whenever it lost track: a compacted history, an etcd that lost its
//! data); for one TTL a peer missing from such a set is kept (its owner
//! may not have republished yet), unless another lease covers its subnet
//! ([`crate::ipam::keep_missing`]).

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::node::{Backend, DriftRepair, Node, PeerReport};
use crate::ipam::{
    claim_again, keep_missing, renew_or_claim, Call, EtcdSession, LeaseEvent, NodeAttrs, NodeLease,
    Renewal,
};
use crate::{Error, Result};

/// What a node does with its peers' leases.
pub trait PeerSink {
    /// Make the peers exactly `leases` (this node's own lease among them
    /// is skipped).
    fn all(&mut self, leases: &[NodeLease]) -> Result<PeerReport>;
    /// One lease was taken or changed.
    fn put(&mut self, lease: &NodeLease) -> Result<PeerReport>;
    /// The lease of `subnet` ended.
    fn gone(&mut self, subnet: IpNet) -> Result<PeerReport>;
}

/// The kernel as a [`PeerSink`]: the node's routes (and devices,
/// neighbours, FDB entries) with `backend`, remembered by `drift` so that
/// its repairs and one-peer changes know what was programmed.
#[derive(Debug)]
pub struct KernelPeers<'a, 'h> {
    /// The node.
    pub node: &'a Node<'h>,
    /// Its backend.
    pub backend: &'a Backend,
    /// What it programmed.
    pub drift: &'a mut DriftRepair,
}

impl PeerSink for KernelPeers<'_, '_> {
    fn all(&mut self, leases: &[NodeLease]) -> Result<PeerReport> {
        self.drift.reconcile_leases(self.node, self.backend, leases)
    }
    fn put(&mut self, lease: &NodeLease) -> Result<PeerReport> {
        self.drift.put_lease(self.node, lease)
    }
    fn gone(&mut self, subnet: IpNet) -> Result<PeerReport> {
        self.drift.remove_subnet(self.node, subnet)
    }
}

/// What [`Member::step`] did, for the caller to tell.
#[derive(Debug)]
#[non_exhaustive]
pub enum Happened {
    /// Peers were programmed: `what` says which event (`all`, `put NODE
    /// SUBNET`, `gone SUBNET`, `kept SUBNET over`).
    Peers {
        /// The event.
        what: String,
        /// What the sink did.
        report: PeerReport,
    },
    /// The sink failed on an event (the next full reconcile tries again).
    SinkFailed {
        /// The event.
        what: String,
        /// Its error.
        error: Error,
    },
    /// The store answers again after it was away.
    StoreBack,
    /// The store could not be reached; tried again in `retry_in`.
    StoreAway {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        error: Error,
        /// When the next try is.
        retry_in: Duration,
    },
    /// The store answered a renewal with an error of its own (a lost
    /// race): tried again after the backoff.
    RenewFailed(Error),
    /// The lease was gone from the store and its subnet free: this node's
    /// again.
    TakenBack,
    /// This node's subnet is another node's lease now (or the node holds
    /// another one): the caller must stop routing it (see the node agent).
    Lost(Error),
}

/// A node's own lease, kept alive, and its peers, followed; see the
/// [module documentation](self).
#[derive(Debug)]
pub struct Member {
    session: EtcdSession,
    lease: NodeLease,
    attrs: NodeAttrs,
    ttl: Duration,
    renew_at: Instant,
    /// The lease set as the store said it (this node's own among them),
    /// plus the kept ones.
    known: BTreeMap<IpNet, NodeLease>,
    /// Subnets missing from the store but kept until `keep_until`.
    kept: BTreeSet<IpNet>,
    keep_until: Option<Instant>,
    /// Whether a whole set was seen (the ones after it mean the watch
    /// lost track).
    seen_all: bool,
    /// The watch says this node's lease went away or is another node's:
    /// claim the subnet again at the next step (a keep-alive renewal
    /// would not notice a key deleted under a live etcd lease).
    check_own: bool,
    connections: u64,
}

impl Member {
    /// Keep `lease` (this node's, as the store gave it with `attrs` and
    /// `ttl`) alive through `session`, and follow the other leases.
    pub fn new(session: EtcdSession, lease: NodeLease, attrs: NodeAttrs, ttl: Duration) -> Member {
        let connections = session.connections();
        Member {
            session,
            lease,
            attrs,
            ttl,
            renew_at: Instant::now() + renewal_in(ttl),
            known: BTreeMap::new(),
            kept: BTreeSet::new(),
            keep_until: None,
            seen_all: false,
            check_own: false,
            connections,
        }
    }

    /// This node's lease.
    pub fn lease(&self) -> &NodeLease {
        &self.lease
    }

    /// Every lease known (this node's own among them), by subnet.
    pub fn leases(&self) -> Vec<NodeLease> {
        self.known.values().cloned().collect()
    }

    /// The session (for a last call such as a release).
    pub fn session(&mut self) -> &mut EtcdSession {
        &mut self.session
    }

    /// The descriptor to `poll(2)` for lease events (`None` while the
    /// store is away: then [`Member::wake_in`] says when to try again).
    pub fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        self.session.watch_fd()
    }

    /// How long the caller may wait for the descriptors before the next
    /// [`Member::step`] is due anyway (a renewal, a reconnection, the end
    /// of the time peers are kept).
    pub fn wake_in(&mut self) -> Duration {
        let now = Instant::now();
        let mut t = if self.check_own {
            Duration::ZERO
        } else {
            self.renew_at.saturating_duration_since(now)
        };
        if let Some(k) = self.keep_until {
            t = t.min(k.saturating_duration_since(now));
        }
        if !self.session.is_connected() {
            t = t.min(self.session.backoff().ready_in());
        }
        t
    }

    /// Do what is due: connect again, renew, and apply every lease event
    /// that waits to `sink`. Never blocks longer than one store call.
    pub fn step(&mut self, sink: &mut dyn PeerSink) -> Vec<Happened> {
        let mut out = Vec::new();
        if !self.session.is_connected() {
            // A new connection's watch starts with the whole set.
            self.call(&mut out, "connect", |_| Ok(()));
        }
        if self.session.reconnected() {
            self.keep_until = Some(Instant::now() + self.ttl);
        }
        while let Some(ev) = self.session.event() {
            self.apply(ev, sink, &mut out);
        }
        if self.renew_at <= Instant::now() || self.check_own {
            self.renew(&mut out);
            if matches!(out.last(), Some(Happened::Lost(_))) {
                return out;
            }
        }
        if self.keep_until.is_some_and(|t| Instant::now() >= t) {
            self.keep_until = None;
            for subnet in std::mem::take(&mut self.kept) {
                self.known.remove(&subnet);
                let what = format!("kept {subnet} over");
                out.push(done(what, sink.gone(subnet)));
            }
        }
        out
    }

    /// Release the lease (one try; it expires by itself otherwise).
    pub fn leave(&mut self) -> Result<()> {
        self.session.backoff().reset();
        let node = self.lease.node.clone();
        match self
            .session
            .call(|l| crate::ipam::LeaseStore::release(l, &node))
        {
            Call::Done(r) => r,
            Call::Away { error, .. } => Err(error),
            _ => Ok(()),
        }
    }

    fn renew(&mut self, out: &mut Vec<Happened>) {
        let (lease, attrs, ttl) = (self.lease.clone(), self.attrs.clone(), self.ttl);
        let check = self.check_own;
        let r = self.call(out, "renew", |l| {
            if check {
                claim_again(l, &lease, &attrs, ttl)
            } else {
                renew_or_claim(l, &lease, &attrs, ttl)
            }
        });
        match r {
            Some(Ok(Renewal::Lost(e))) => out.push(Happened::Lost(e)),
            Some(Ok(r)) => {
                if matches!(r, Renewal::TakenBack) {
                    out.push(Happened::TakenBack);
                }
                self.check_own = false;
                self.renew_at = Instant::now() + renewal_in(self.ttl);
            }
            Some(Err(e)) => {
                self.session.backoff().failed();
                out.push(Happened::RenewFailed(e));
            }
            None => {}
        }
    }

    /// `session.call(f)`; `None` when not tried or the store was away
    /// (said in `out`).
    fn call<T>(
        &mut self,
        out: &mut Vec<Happened>,
        what: &'static str,
        f: impl FnOnce(&mut crate::ipam::EtcdLeases) -> Result<T>,
    ) -> Option<Result<T>> {
        match self.session.call(f) {
            Call::Done(r) => {
                let now = self.session.connections();
                if now > self.connections && self.connections > 0 {
                    out.push(Happened::StoreBack);
                }
                self.connections = now;
                Some(r)
            }
            Call::Away { error, retry_in } => {
                out.push(Happened::StoreAway {
                    what,
                    error,
                    retry_in,
                });
                None
            }
            _ => None,
        }
    }

    fn apply(&mut self, ev: LeaseEvent, sink: &mut dyn PeerSink, out: &mut Vec<Happened>) {
        match ev {
            LeaseEvent::All(fresh) => {
                // A whole set after the first one means the watch lost
                // track (a reconnection, a compacted history, an etcd
                // whose history went back, as after a data loss): its
                // owners may not have republished yet, so a missing peer
                // is kept for a TTL, as after a reconnection.
                let lost_track = self.seen_all;
                if lost_track && self.keep_until.is_none() {
                    self.keep_until = Some(Instant::now() + self.ttl);
                }
                self.seen_all = true;
                let all = if self.keep_until.is_some() {
                    let last = self.leases();
                    let fresh_nets: BTreeSet<IpNet> = fresh.iter().map(|l| l.subnet).collect();
                    let all = keep_missing(fresh, &last);
                    self.kept = all
                        .iter()
                        .map(|l| l.subnet)
                        .filter(|s| !fresh_nets.contains(s))
                        .collect();
                    all
                } else {
                    self.kept.clear();
                    fresh
                };
                self.known = all.iter().map(|l| (l.subnet, l.clone())).collect();
                // The first set may predate this node's lease (the watch
                // was made before the lease was taken): its put follows.
                let own = &self.lease;
                if lost_track
                    && !all
                        .iter()
                        .any(|l| l.node == own.node && l.subnet == own.subnet)
                {
                    self.check_own = true;
                }
                out.push(done("all".into(), sink.all(&all)));
            }
            LeaseEvent::Put(l) => {
                let own = &self.lease;
                match (l.subnet == own.subnet, l.node == own.node) {
                    (true, true) => self.check_own = false, // ours, there
                    (false, false) => {}
                    _ => self.check_own = true, // another node on our subnet, or we elsewhere
                }
                self.kept.remove(&l.subnet);
                self.known.retain(|_, o| o.node != l.node);
                self.known.insert(l.subnet, l.clone());
                let what = format!("put {} {}", l.node, l.subnet);
                out.push(done(what, sink.put(&l)));
            }
            LeaseEvent::Gone(subnet) => {
                if subnet == self.lease.subnet {
                    self.check_own = true;
                }
                self.kept.remove(&subnet);
                if self.known.remove(&subnet).is_some() {
                    out.push(done(format!("gone {subnet}"), sink.gone(subnet)));
                }
            }
        }
    }
}

/// When the next renewal is due: a third of the TTL, less up to a
/// twelfth at random, so nodes started together do not renew in bursts.
fn renewal_in(ttl: Duration) -> Duration {
    let third = ttl / 3;
    let spread = u64::try_from((ttl / 12).as_millis()).unwrap_or(u64::MAX);
    third.saturating_sub(Duration::from_millis(fastrand::u64(0..=spread)))
}

fn done(what: String, r: Result<PeerReport>) -> Happened {
    match r {
        Ok(report) => Happened::Peers { what, report },
        Err(error) => Happened::SinkFailed { what, error },
    }
}
