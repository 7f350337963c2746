//! What a peer reconcile did: plain counts and lists, per-peer failures
//! that a caller cannot drop unnoticed (`#[must_use]`,
//! [`PeerReport::into_result`]).

use crate::error::{Error, Result};
use crate::route::ReconcileReport;

/// How a peer's subnet is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerPath {
    /// A route via the peer's underlay address (host-gw).
    Direct,
    /// Through the VXLAN device.
    Vxlan,
    /// Through the IP-in-IP device.
    IpIp,
    /// Through the WireGuard device (encrypted).
    WireGuard,
    /// Beyond the node's segment with no kernel entry: the host's default
    /// route takes the packets to a router whose own route table holds
    /// the peer's subnet (a cloud's, e.g. a VPC route table kept by
    /// [`super::aws_vpc::AwsVpcRoutes`]); [`super::Encap::RouteTable`].
    RouteTable,
}

/// Counts of one kind of entry (routes, neighbours or FDB entries).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// Missing, added.
    pub added: usize,
    /// Different, replaced.
    pub replaced: usize,
    /// Stale (a departed peer's, or the old backend's), deleted.
    pub deleted: usize,
    /// Already right.
    pub unchanged: usize,
}

impl Changes {
    /// Nothing written.
    pub fn is_noop(&self) -> bool {
        self.added == 0 && self.replaced == 0 && self.deleted == 0
    }

    /// Take the counts of a reconcile and move its errors to `errors`,
    /// each with the peer it is about: `peers[i]` is the peer of the
    /// reconcile's desired entry `i` (`None`: about no peer's entry).
    pub(crate) fn absorb(
        &mut self,
        r: ReconcileReport,
        peers: &[usize],
        errors: &mut Vec<(Option<usize>, Error)>,
    ) {
        self.added += r.added;
        self.replaced += r.replaced;
        self.deleted += r.deleted;
        self.unchanged += r.unchanged;
        errors.extend(
            r.item_errors()
                .into_iter()
                .map(|(item, e)| (item.and_then(|i| peers.get(i).copied()), e)),
        );
    }
}

/// A device the reconcile created, re-created or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceChange {
    /// Created (it was missing).
    Created {
        /// Device name.
        name: String,
    },
    /// Deleted and created again: it differed in what cannot be changed in
    /// place ("field: have X, want Y").
    Recreated {
        /// Device name.
        name: String,
        /// What differed.
        differences: Vec<String>,
    },
    /// Brought up, or its address set.
    Updated {
        /// Device name.
        name: String,
        /// What was done.
        what: String,
    },
    /// Deleted: the backend no longer needs it (its neighbours, FDB
    /// entries and routes went with it).
    Deleted {
        /// Device name.
        name: String,
    },
}

/// A peer that is not programmed, and why.
#[derive(Debug)]
pub struct PeerFailure {
    /// The peer's name.
    pub peer: String,
    /// Why (names the peer, says what to do).
    pub error: Error,
}

/// What [`super::Node::reconcile_peers`] did. Per-peer failures do not
/// stop the other peers: they are listed here, and the call still returns
/// `Ok`. Check them with [`PeerReport::into_result`] (or
/// [`PeerReport::is_ok`]).
#[must_use = "peers that could not be programmed are listed here, not returned as Err: call into_result()"]
#[derive(Debug, Default)]
pub struct PeerReport {
    /// The backend's name (`vxlan`, …).
    pub backend: &'static str,
    /// Peers that are programmed now, with their path, in the order given.
    pub peers: Vec<(String, PeerPath)>,
    /// Peers refused or rolled back; none of their entries is left.
    pub failed: Vec<PeerFailure>,
    /// Devices created, re-created, updated or deleted.
    pub devices: Vec<DeviceChange>,
    /// Routes (protocol [`crate::route::PROTOCOL`] in the node's table).
    pub routes: Changes,
    /// Permanent neighbours on the VXLAN device.
    pub neighbours: Changes,
    /// Remote (`self`, with `dst`) FDB entries on the VXLAN device.
    pub fdb: Changes,
    /// Peers of the WireGuard device.
    pub wireguard: Changes,
    /// Kernel failures that could not be pinned to one peer.
    pub errors: Vec<Error>,
}

impl PeerReport {
    /// Every peer programmed and nothing failed.
    pub fn is_ok(&self) -> bool {
        self.failed.is_empty() && self.errors.is_empty()
    }

    /// Nothing was written (the node had converged) and nothing failed.
    pub fn is_noop(&self) -> bool {
        self.is_ok()
            && self.devices.is_empty()
            && self.routes.is_noop()
            && self.neighbours.is_noop()
            && self.fdb.is_noop()
            && self.wireguard.is_noop()
    }

    /// How many peers take `path`.
    pub fn count(&self, path: PeerPath) -> usize {
        self.peers.iter().filter(|(_, p)| *p == path).count()
    }

    /// The peers that take `path`, by name, in the order given: with
    /// [`PeerPath::RouteTable`], those a cloud's route table must carry
    /// (the same decision as the node's kernel routes, made once).
    pub fn peers_on(&self, path: PeerPath) -> Vec<&str> {
        self.peers
            .iter()
            .filter(|(_, p)| *p == path)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// The failure of peer `name`, if it failed.
    pub fn failure(&self, name: &str) -> Option<&Error> {
        self.failed
            .iter()
            .find(|f| f.peer == name)
            .map(|f| &f.error)
    }

    /// `Ok(self)` when everything is programmed; otherwise the first
    /// failure (its variant kept: `Conflict` for an off-segment host-gw
    /// peer or overlapping subnets, `InvalidArgument` for a missing VTEP
    /// MAC, …), its context naming how many peers failed, its text listing
    /// every failure.
    pub fn into_result(mut self) -> Result<PeerReport> {
        if self.is_ok() {
            return Ok(self);
        }
        let n = self.failed.len() + self.errors.len();
        let all: Vec<String> = self
            .failed
            .iter()
            .map(|f| format!("peer {}: {}", f.peer, f.error))
            .chain(self.errors.iter().map(|e| e.to_string()))
            .collect();
        let first = if self.failed.is_empty() {
            self.errors.remove(0)
        } else {
            self.failed.remove(0).error
        };
        let outer = if n == 1 {
            format!("{} backend", self.backend)
        } else {
            format!(
                "{} backend: {n} failures ({}); first",
                self.backend,
                all.join("; ")
            )
        };
        Err(first.with_context(outer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorb_adds_every_count_unchanged_too() {
        let mut c = Changes::default();
        let mut errors = Vec::new();
        for (added, replaced, deleted, unchanged) in [(1, 2, 3, 4), (10, 20, 30, 40)] {
            let mut r = ReconcileReport::new("routes");
            r.added = added;
            r.replaced = replaced;
            r.deleted = deleted;
            r.unchanged = unchanged;
            c.absorb(r, &[], &mut errors);
        }
        assert_eq!(
            c,
            Changes {
                added: 11,
                replaced: 22,
                deleted: 33,
                unchanged: 44,
            }
        );
        assert!(errors.is_empty());
    }

    #[test]
    fn absorb_pins_each_error_to_the_peer_of_its_item() {
        let mut r = ReconcileReport::new("routes");
        r.fail(Some(1), Error::invalid("route 110.244.1.0/24", "refused"));
        r.fail(None, Error::invalid("delete stale route", "refused"));
        r.fail(Some(0), Error::invalid("route 10.244.1.0/24", "refused"));
        let mut errors = Vec::new();
        Changes::default().absorb(r, &[7, 9], &mut errors);
        let got: Vec<(Option<usize>, String)> = errors
            .iter()
            .map(|(p, e)| (*p, e.to_string().split(':').next().unwrap().to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(9), "route 110.244.1.0/24".to_string()),
                (None, "delete stale route".to_string()),
                (Some(7), "route 10.244.1.0/24".to_string()),
            ]
        );
    }

    #[test]
    fn into_result_keeps_the_first_variant_and_lists_all() {
        let r = PeerReport {
            backend: "host-gw",
            ..Default::default()
        };
        assert!(r.is_noop());
        assert!(r.into_result().is_ok());
        let r = PeerReport {
            backend: "host-gw",
            failed: vec![
                PeerFailure {
                    peer: "h4".into(),
                    error: Error::Conflict {
                        context: "peer h4".into(),
                        reason: "off segment".into(),
                    },
                },
                PeerFailure {
                    peer: "h5".into(),
                    error: Error::invalid("peer h5", "no MAC"),
                },
            ],
            ..Default::default()
        };
        assert!(!r.is_noop());
        let e = r.into_result().unwrap_err();
        assert!(matches!(e, Error::Conflict { .. }), "{e}");
        let s = e.to_string();
        assert!(
            s.contains("2 failures") && s.contains("h5") && s.contains("off segment"),
            "{s}"
        );
    }
}
