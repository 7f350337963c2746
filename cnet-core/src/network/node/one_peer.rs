//! One peer at a time: a lease event ([`crate::ipam::LeaseEvent`]) programs
//! or removes exactly the entries of the peer it concerns (for vxlan one
//! route, one neighbour and one FDB entry), instead of a full reconcile
//! that reads every entry of the node back.
//!
//! ```text
//!  put_lease(lease) ── checks of the whole remembered list (in memory) ──▶
//!      place this peer (one route lookup for direct paths) ──▶
//!      delete its old entries that changed · replace the new ones that
//!      differ from what was programmed (none when nothing changed) ──▶
//!      remember them (drift repair keys)
//!  remove_subnet(subnet) ──▶ delete the entries of the peer of that subnet
//!  anything unusual (a write refused, a device gone, WireGuard, whose
//!  peers live in one device set) ──▶ the full reconcile, with the new list
//! ```
//!
//! The rules are the full reconcile's: a lease that makes no peer, or a
//! peer that fails a check, is reported in [`PeerReport::failed`] with
//! none of its entries left, and the other peers are not touched.

use std::collections::HashSet;

use ipnet::IpNet;

use super::{checks, Backend, DriftRepair, Node, Peer, PeerFailure, PeerReport};
use crate::error::{Error, Result, ResultExt};
use crate::ipam::NodeLease;

impl DriftRepair {
    /// `lease` was taken or changed: program exactly its peer (replacing
    /// the peer that had its name or its subnet), with the backend of the
    /// last full reconcile. This node's own lease is ignored.
    ///
    /// `Err` only when even the full reconcile that a failed write falls
    /// back to cannot run (see [`Node::reconcile_peers`]); then the new
    /// list is remembered for the next one.
    pub fn put_lease(&mut self, node: &Node<'_>, lease: &NodeLease) -> Result<PeerReport> {
        let backend = self.backend(node)?;
        let mut report = PeerReport {
            backend: backend.name(),
            ..Default::default()
        };
        if lease.node == node.cfg.name {
            return Ok(report);
        }
        let (old, mut peers): (Vec<Peer>, Vec<Peer>) = self
            .p
            .peers
            .iter()
            .cloned()
            .partition(|p| p.name == lease.node || p.subnet == lease.subnet);
        let old: HashSet<String> = old.into_iter().map(|p| p.name).collect();
        let peer = match Peer::from_lease(lease) {
            Ok(p) => p,
            Err(error) => {
                // As the full reconcile: reported, nothing of it left.
                if self.remove_entries(node, &old, &mut report).is_err() {
                    return self.full_with(node, &backend, peers);
                }
                self.p.peers = peers;
                report.failed.push(PeerFailure {
                    peer: lease.node.clone(),
                    error,
                });
                return Ok(report);
            }
        };
        peers.push(peer);
        // WireGuard's peers live in one device set; a replaced peer that
        // was refused may have kept another out (both of two peers with
        // one MAC are refused): the full reconcile decides.
        if backend.wireguard_config().is_some() || old.iter().any(|n| !self.has_entries(n)) {
            return self.full_with(node, &backend, peers);
        }
        match self.program_last(node, &backend, &peers, &old, &mut report) {
            Ok(true) => {
                self.p.peers = peers;
                Ok(report)
            }
            // A write refused, a device gone, a check that concerns other
            // peers: the full reconcile with the new list does it (and
            // reports what it cannot).
            Ok(false) | Err(_) => self.full_with(node, &backend, peers),
        }
    }

    /// The lease of `subnet` ended: delete the entries of its peer. A
    /// subnet of no remembered peer writes nothing.
    pub fn remove_subnet(&mut self, node: &Node<'_>, subnet: IpNet) -> Result<PeerReport> {
        let backend = self.backend(node)?;
        let mut report = PeerReport {
            backend: backend.name(),
            ..Default::default()
        };
        let (gone, keep): (Vec<Peer>, Vec<Peer>) = self
            .p
            .peers
            .iter()
            .cloned()
            .partition(|p| p.subnet == subnet);
        if gone.is_empty() {
            return Ok(report);
        }
        let names: HashSet<String> = gone.into_iter().map(|p| p.name).collect();
        // A peer that was refused may have kept another out: the full
        // reconcile lets that one in again.
        if backend.wireguard_config().is_some() || names.iter().any(|n| !self.has_entries(n)) {
            return self.full_with(node, &backend, keep);
        }
        match self.remove_entries(node, &names, &mut report) {
            Ok(()) => {
                self.p.peers = keep;
                Ok(report)
            }
            Err(_) => self.full_with(node, &backend, keep),
        }
    }

    /// The backend of the last full reconcile; before one there is nothing
    /// to change one peer of.
    fn backend(&self, node: &Node<'_>) -> Result<Backend> {
        self.p.backend.clone().ok_or_else(|| Error::Protocol {
            context: format!("{}: one peer", node.ctx()),
            reason: "no full reconcile yet (DriftRepair::reconcile_leases first)".into(),
        })
    }

    /// Check, place and program the last peer of `peers`, replacing the
    /// entries of the peers named in `old`; `Ok(false)` when its checks
    /// concern other peers too (the full reconcile's business).
    fn program_last(
        &mut self,
        node: &Node<'_>,
        backend: &Backend,
        peers: &[Peer],
        old: &HashSet<String>,
        report: &mut PeerReport,
    ) -> Result<bool> {
        let i = peers.len() - 1;
        let mut all = checks::check_peers(&node.cfg, backend, peers);
        // The new peer refuses a programmed one too (overlapping subnets,
        // one VTEP MAC for two: both are refused), as the full reconcile
        // would: let it do that.
        let blocks = |j: usize, e: &Option<Error>| j != i && e.is_some();
        if all
            .iter()
            .enumerate()
            .any(|(j, e)| blocks(j, e) && self.has_entries(&peers[j].name))
            || self.mac_of_another(&peers[i], old)
        {
            return Ok(false);
        }
        let mut verdict = vec![all.swap_remove(i)];
        let one = std::slice::from_ref(&peers[i]);
        let placed = node.place(backend, one, &mut verdict);
        let own_mac = backend.vxlan_config().map(|c| node.vtep_mac(c));
        checks::check_macs(own_mac, &placed, &mut verdict);
        let placed: Vec<_> = placed
            .into_iter()
            .filter(|_| verdict[0].is_none())
            .collect();
        let devs = self.p.devs.clone().ok_or_else(|| Error::Protocol {
            context: node.ctx(),
            reason: "no devices remembered".into(),
        })?;
        let d = node.desired(&devs, &placed);
        let h = &*node.h;
        let ctx = node.ctx();

        // Away with what the old peer had and the new one does not.
        let keep_routes: HashSet<IpNet> = d.routes.iter().map(|r| r.destination()).collect();
        let keep_neigh: HashSet<_> = d.neighbours.iter().map(|n| n.ip()).collect();
        let keep_fdb: HashSet<_> = d.fdb.iter().map(|f| f.mac()).collect();
        let mut stale = EntriesOf::new(&self.p, old);
        stale.routes.retain(|k| !keep_routes.contains(k));
        stale.neighbours.retain(|k| !keep_neigh.contains(k));
        stale.fdb.retain(|k| !keep_fdb.contains(k));
        stale.delete(node, &mut self.p, report)?;

        // The new entries, where they differ from what was programmed:
        // neighbour, FDB entry, route (Flannel's order).
        let name = &peers[i].name;
        for n in &d.neighbours {
            let have = self.p.neighbours.get(&n.ip());
            if have.is_some_and(|(p, e, _)| p == name && e == n) {
                report.neighbours.unchanged += 1;
                continue;
            }
            h.neighbours().replace(n).context(&ctx)?;
            count(&mut report.neighbours, have.is_some());
        }
        for f in &d.fdb {
            let have = self.p.fdb.get(&f.mac());
            if have.is_some_and(|(p, e, _)| p == name && e == f) {
                report.fdb.unchanged += 1;
                continue;
            }
            h.fdb().replace(f).context(&ctx)?;
            count(&mut report.fdb, have.is_some());
        }
        for r in &d.routes {
            let have = self.p.routes.get(&r.destination());
            if have.is_some_and(|(p, e, _)| p == name && e == r) {
                report.routes.unchanged += 1;
                continue;
            }
            h.routes().replace(r).context(&ctx)?;
            count(&mut report.routes, have.is_some());
        }
        if let Some(p) = placed.first() {
            self.p.record_peer(node, &devs, p);
            report.peers.push((name.clone(), p.path));
        }
        if let Some(error) = verdict.pop().flatten() {
            report.failed.push(PeerFailure {
                peer: name.clone(),
                error,
            });
        }
        Ok(true)
    }

    /// Whether another remembered peer (not one being replaced) has the
    /// VTEP MAC of `peer`.
    fn mac_of_another(&self, peer: &Peer, old: &HashSet<String>) -> bool {
        let Some(mac) = peer.vtep_mac else {
            return false;
        };
        self.p
            .fdb
            .get(&mac)
            .is_some_and(|(other, _, _)| !old.contains(other) && *other != peer.name)
    }

    /// Whether the peer named `name` has entries programmed (a refused
    /// one has none).
    fn has_entries(&self, name: &str) -> bool {
        self.p.routes.values().any(|(n, _, _)| n == name)
    }

    /// Delete every entry of the peers named in `names`.
    fn remove_entries(
        &mut self,
        node: &Node<'_>,
        names: &HashSet<String>,
        report: &mut PeerReport,
    ) -> Result<()> {
        EntriesOf::new(&self.p, names).delete(node, &mut self.p, report)
    }

    /// The full reconcile of `peers`; they are remembered even when it
    /// fails, for the next one.
    fn full_with(
        &mut self,
        node: &Node<'_>,
        backend: &Backend,
        peers: Vec<Peer>,
    ) -> Result<PeerReport> {
        match node.reconcile(backend, &peers, Vec::new(), Some(&mut self.p)) {
            Ok(r) => Ok(r),
            Err(e) => {
                self.p.peers = peers;
                Err(e)
            }
        }
    }
}

/// Added (the key was free) or replaced (another entry had it).
fn count(c: &mut super::Changes, had: bool) {
    if had {
        c.replaced += 1;
    } else {
        c.added += 1;
    }
}

/// The remembered entries (their keys) of some peers.
struct EntriesOf {
    routes: Vec<IpNet>,
    neighbours: Vec<std::net::IpAddr>,
    fdb: Vec<crate::link::MacAddr>,
}

impl EntriesOf {
    fn new(p: &super::repair::Programmed, names: &HashSet<String>) -> EntriesOf {
        EntriesOf {
            routes: p
                .routes
                .iter()
                .filter(|(_, (n, _, _))| names.contains(n))
                .map(|(k, _)| *k)
                .collect(),
            neighbours: p
                .neighbours
                .iter()
                .filter(|(_, (n, _, _))| names.contains(n))
                .map(|(k, _)| *k)
                .collect(),
            fdb: p
                .fdb
                .iter()
                .filter(|(_, (n, _, _))| names.contains(n))
                .map(|(k, _)| *k)
                .collect(),
        }
    }

    /// Delete them (routes first, so none points at a neighbour that is
    /// gone) and forget them. Entries already gone are fine.
    fn delete(
        self,
        node: &Node<'_>,
        p: &mut super::repair::Programmed,
        report: &mut PeerReport,
    ) -> Result<()> {
        let h = &*node.h;
        let ctx = node.ctx();
        let gone_ok = |r: Result<()>| match r {
            Err(e) if e.is_not_found() => Ok(()),
            r => r,
        };
        for dst in self.routes {
            if let Some((_, route, _)) = p.routes.get(&dst) {
                h.routes().delete_if_exists(route).context(&ctx)?;
                p.routes.remove(&dst);
                report.routes.deleted += 1;
            }
        }
        for ip in self.neighbours {
            if let Some((_, n, _)) = p.neighbours.get(&ip) {
                gone_ok(h.neighbours().delete(n)).context(&ctx)?;
                p.neighbours.remove(&ip);
                report.neighbours.deleted += 1;
            }
        }
        for mac in self.fdb {
            if let Some((_, f, _)) = p.fdb.get(&mac) {
                gone_ok(h.fdb().delete(f)).context(&ctx)?;
                p.fdb.remove(&mac);
                report.fdb.deleted += 1;
            }
        }
        Ok(())
    }
}
