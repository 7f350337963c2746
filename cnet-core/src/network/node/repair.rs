//! Drift repair: put back exactly what someone else changed of what the
//! node owns, as the kernel reports it ([`crate::watch`]), instead of
//! finding it at the next periodic full reconcile.
//!
//! ```text
//!  DriftRepair::reconcile_peers ── full reconcile, and remember what it
//!                                  programmed, by the keys events carry:
//!                                  route dst · neighbour ip · FDB mac · devices
//!  Event ──▶ repair(node, event)
//!    route of ours deleted / changed (proto, table) ──▶ replace that route
//!    route of ours nobody asked for ─────────────────▶ delete it
//!    permanent neighbour of a peer deleted / changed ▶ replace it
//!    self FDB entry of a peer deleted ───────────────▶ replace it
//!    our device deleted, down, renamed, address lost;
//!    underlay back up; Resync ───────────────────────▶ full reconcile
//!    a replace above finds our device gone ──────────▶ full reconcile ("deleted")
//!    anything else (our own writes included) ────────▶ nothing
//! ```
//!
//! A device's deletion reaches us first as the deletions of its FDB entries
//! and neighbours, then as the device going down, then as the device
//! deleted. The replace written for the first of these waits for the
//! deletion to end (both take the kernel's rtnl lock) and answers "No such
//! device": that is the device's deletion, repaired by the full reconcile,
//! not an error; the events of the old device that follow are stale once
//! the new one is up under our name.
//!
//! A write is one netlink request; repairing writes that the node itself
//! caused is avoided by comparing each event with what was programmed (an
//! event equal to it is the node's own write, or harmless). Repairs use
//! `replace`, so an event that arrives late (after a newer full
//! reconcile) costs at worst one idempotent write.
//!
//! The kernel does not notify the IPv4 routes it flushes when a device
//! goes down; those are restored by the full reconcile that the device
//! event triggers (our device) or the underlay coming back up.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::{Backend, Devs, Node, NodeConfig, Peer, PeerReport, Placed};
use crate::addr::Address;
use crate::error::{Result, ResultExt};
use crate::fdb::{FdbEntry, FdbRecord};
use crate::ipam::NodeLease;
use crate::link::{Link, MacAddr};
use crate::neigh::{NeighState, Neighbour, NeighbourEntry};
use crate::route::{Route, RouteEntry};
use crate::watch::{Change, Event, Watch};

/// What a full reconcile programmed, indexed by the keys of events.
#[derive(Debug, Default)]
pub(super) struct Programmed {
    pub(super) backend: Option<Backend>,
    pub(super) peers: Vec<Peer>,
    pub(super) devs: Option<Devs>,
    underlay: u32,
    underlay_up: bool,
    /// dst → (peer, route, the entry the kernel lists for it).
    pub(super) routes: HashMap<IpNet, (String, Route, RouteEntry)>,
    /// VTEP ip → (peer, entry, its MAC).
    pub(super) neighbours: HashMap<IpAddr, (String, Neighbour, Option<MacAddr>)>,
    /// VTEP mac → (peer, entry, its dst).
    pub(super) fdb: HashMap<MacAddr, (String, FdbEntry, Option<IpAddr>)>,
}

impl Programmed {
    pub(super) fn record(
        &mut self,
        node: &Node<'_>,
        backend: &Backend,
        peers: &[Peer],
        devs: &Devs,
        placed: &[Placed<'_>],
        underlay: u32,
    ) {
        self.backend = Some(backend.clone());
        self.peers = peers.to_vec();
        self.devs = Some(devs.clone());
        self.underlay = underlay;
        self.underlay_up = true;
        self.routes.clear();
        self.neighbours.clear();
        self.fdb.clear();
        for p in placed {
            self.record_peer(node, devs, p);
        }
    }

    /// Remember the entries of one placed peer.
    pub(super) fn record_peer(&mut self, node: &Node<'_>, devs: &Devs, p: &Placed<'_>) {
        // Devices in our routes are indices: nothing to look up.
        let links = node.h.links();
        let resolve = |r: &crate::link::LinkRef| links.resolve(r);
        let d = node.desired(devs, std::slice::from_ref(p));
        let name = &p.peer.name;
        for r in d.routes {
            if let Ok(e) = r.expected(&resolve) {
                self.routes.insert(e.dst, (name.clone(), r, e));
            }
        }
        for n in d.neighbours {
            self.neighbours
                .insert(n.ip(), (name.clone(), n, p.peer.vtep_mac));
        }
        for f in d.fdb {
            self.fdb
                .insert(f.mac(), (name.clone(), f, Some(p.peer.underlay)));
        }
    }
}

/// One repair [`DriftRepair::repair`] made.
#[non_exhaustive]
#[derive(Debug)]
pub enum Repair {
    /// A peer's route was deleted or changed: put back (`ip route replace`).
    Route {
        /// The peer.
        peer: String,
        /// Its subnet.
        dst: IpNet,
    },
    /// A route of the node's protocol and table that no peer needs was
    /// added by someone else: deleted, as a full reconcile would.
    StrayRoute {
        /// Its destination.
        dst: IpNet,
    },
    /// A peer's VTEP neighbour was deleted or changed: put back
    /// (`ip neigh replace … nud permanent`).
    Neighbour {
        /// The peer.
        peer: String,
        /// The peer's VTEP address.
        ip: IpAddr,
    },
    /// A peer's FDB entry was deleted: put back (`bridge fdb replace … self`).
    Fdb {
        /// The peer.
        peer: String,
        /// The peer's VTEP MAC.
        mac: MacAddr,
    },
    /// A device of the node (or the underlay, or the event stream) changed
    /// so that only a full reconcile repairs it.
    Full {
        /// What was seen.
        reason: String,
        /// The reconcile's report (boxed: it is large).
        report: Box<PeerReport>,
    },
}

/// A node's peers, kept as programmed: full reconciles remember what they
/// programmed, and [`DriftRepair::repair`] puts back exactly the entry an
/// event says someone else changed. See the [module documentation](self).
///
/// ```no_run
/// # use cnet_core::{Handle, watch::Watch};
/// # use cnet_core::network::{Backend, DriftRepair, Node, NodeConfig, Peer};
/// # use std::time::Duration;
/// # fn f(h: &Handle, node: &Node<'_>, peers: &[Peer]) -> cnet_core::Result<()> {
/// let mut watch = Watch::all(h)?;             // subscribe first: no gap
/// let mut drift = DriftRepair::new();
/// drift.reconcile_peers(node, &Backend::HostGw, peers)?;
/// loop {
///     for r in drift.run(node, &mut watch, Duration::from_secs(1))? {
///         println!("repaired {r:?}");
///     }
/// }
/// # }
/// ```
#[derive(Debug, Default)]
pub struct DriftRepair {
    pub(super) p: Programmed,
}

impl DriftRepair {
    /// Nothing programmed yet: events are ignored until the first full
    /// reconcile.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`Node::reconcile_peers`], remembering what it programmed.
    pub fn reconcile_peers(
        &mut self,
        node: &Node<'_>,
        backend: &Backend,
        peers: &[Peer],
    ) -> Result<PeerReport> {
        node.reconcile(backend, peers, Vec::new(), Some(&mut self.p))
    }

    /// [`Node::reconcile_leases`], remembering what it programmed.
    pub fn reconcile_leases(
        &mut self,
        node: &Node<'_>,
        backend: &Backend,
        leases: &[NodeLease],
    ) -> Result<PeerReport> {
        let (peers, failed) = node.peers_of_leases(leases);
        node.reconcile(backend, &peers, failed, Some(&mut self.p))
    }

    /// Full reconcile with the last backend and peers. The peers stay
    /// remembered when it fails (the underlay gone for a moment, a dump
    /// refused): the next full reconcile programs them again instead of
    /// running with none, which would delete every peer's entries.
    fn full(&mut self, node: &Node<'_>, reason: String) -> Result<Option<Repair>> {
        let Some(backend) = self.p.backend.clone() else {
            return Ok(None);
        };
        // Moved out for the call (which records into `self.p`), put back
        // on failure; on success `record` has stored them again.
        let peers = std::mem::take(&mut self.p.peers);
        let report = match node.reconcile(&backend, &peers, Vec::new(), Some(&mut self.p)) {
            Ok(r) => r,
            Err(e) => {
                self.p.peers = peers;
                return Err(e);
            }
        };
        Ok(Some(Repair::Full {
            reason,
            report: Box::new(report),
        }))
    }

    /// Repair what `ev` says someone changed of what the node owns; `None`
    /// when it concerns nothing of the node's (or repeats what the node
    /// programmed). `Err` when the repair write fails (the next full
    /// reconcile tries again).
    pub fn repair(&mut self, node: &Node<'_>, ev: &Event) -> Result<Option<Repair>> {
        if self.p.devs.is_none() {
            return Ok(None);
        }
        match ev {
            Event::Resync => self.full(node, "watch overflowed (resync)".into()),
            Event::Route(change, r) => self.repair_route(node, *change, r),
            Event::Neigh(change, n) => self.repair_neighbour(node, *change, n),
            Event::Fdb(Change::Del, f) => self.repair_fdb(node, f),
            Event::Link(change, l) => self.repair_link(node, *change, l),
            Event::Addr(Change::Del, a) => self.repair_address(node, a),
            _ => Ok(None),
        }
    }

    /// A route of the node's protocol and table: ours deleted or changed
    /// is replaced, one nobody asked for (new) is deleted.
    fn repair_route(
        &mut self,
        node: &Node<'_>,
        change: Change,
        r: &RouteEntry,
    ) -> Result<Option<Repair>> {
        let cfg = &node.cfg;
        if r.protocol != cfg.route_protocol || r.table != cfg.route_table {
            return Ok(None);
        }
        let h = &*node.h;
        let ctx = || repair_ctx(node);
        match self.p.routes.get(&r.dst) {
            Some((peer, route, want)) if change == Change::Del || !r.same_as(want) => {
                if let Err(e) = h.routes().replace(route) {
                    return self.device_gone(node, e.with_context(ctx()));
                }
                Ok(Some(Repair::Route {
                    peer: peer.clone(),
                    dst: r.dst,
                }))
            }
            None if change == Change::New => {
                let stray = Route::to(r.dst)
                    .table(r.table)
                    .protocol(r.protocol)
                    .metric(r.metric);
                if h.routes().delete_if_exists(&stray).context(ctx())? {
                    Ok(Some(Repair::StrayRoute { dst: r.dst }))
                } else {
                    Ok(None)
                }
            }
            _ => Ok(None),
        }
    }

    /// A peer's VTEP neighbour on our VXLAN device deleted, or changed
    /// from what was programmed: replaced.
    fn repair_neighbour(
        &mut self,
        node: &Node<'_>,
        change: Change,
        n: &NeighbourEntry,
    ) -> Result<Option<Repair>> {
        if Some(n.index) != self.p.devs.as_ref().and_then(|d| d.vx) {
            return Ok(None);
        }
        let Some((peer, want, mac)) = self.p.neighbours.get(&n.ip) else {
            return Ok(None);
        };
        let intact = change == Change::New && n.state == NeighState::Permanent && n.mac == *mac;
        if intact {
            return Ok(None);
        }
        if let Err(e) = node.h.neighbours().replace(want) {
            return self.device_gone(node, e.with_context(repair_ctx(node)));
        }
        Ok(Some(Repair::Neighbour {
            peer: peer.clone(),
            ip: n.ip,
        }))
    }

    /// A peer's self FDB entry on our VXLAN device deleted: replaced.
    fn repair_fdb(&mut self, node: &Node<'_>, f: &FdbRecord) -> Result<Option<Repair>> {
        if Some(f.index) != self.p.devs.as_ref().and_then(|d| d.vx) || !f.on_self {
            return Ok(None);
        }
        match self.p.fdb.get(&f.mac) {
            Some((peer, want, dst)) if f.dst == *dst => {
                if let Err(e) = node.h.fdb().replace(want) {
                    return self.device_gone(node, e.with_context(repair_ctx(node)));
                }
                Ok(Some(Repair::Fdb {
                    peer: peer.clone(),
                    mac: f.mac,
                }))
            }
            _ => Ok(None),
        }
    }

    /// A link event: one of our devices deleted, down, renamed or made
    /// anew by someone, or the underlay back up, is repaired by a full
    /// reconcile.
    fn repair_link(&mut self, node: &Node<'_>, change: Change, l: &Link) -> Result<Option<Repair>> {
        if let Some(reason) = self.our_device_broken(node, change, l) {
            return self.full(node, reason);
        }
        if l.index == self.p.underlay {
            let was = self.p.underlay_up;
            self.p.underlay_up = change == Change::New && l.is_up();
            if !was && self.p.underlay_up {
                return self.full(node, format!("underlay {} up again", l.name));
            }
        }
        Ok(None)
    }

    /// What `l`'s event did to one of our devices ("device NAME deleted"),
    /// or `None` when none of them is broken by it.
    fn our_device_broken(&self, node: &Node<'_>, change: Change, l: &Link) -> Option<String> {
        let devs = self.p.devs.as_ref()?;
        for (idx, name) in our_devices(devs, &node.cfg) {
            let Some(idx) = idx else { continue };
            let broken = if l.index == idx {
                change == Change::Del || !l.is_up() || l.name != name
            } else {
                // Someone made a device with our name anew.
                l.name == name && change == Change::New
            };
            if !broken {
                continue;
            }
            // A stale event is not drift: the device was set down and up
            // again before the last reconcile, or the event is an old
            // device's (deleted, and the device made again since, by a
            // repair): while our device is up under our name, no other
            // device can have that name. Ask the kernel how the device is
            // now.
            let stale = change == Change::New
                && node
                    .h
                    .links()
                    .get_by_index(idx)
                    .is_ok_and(|now| now.is_up() && now.name == name);
            if !stale {
                let what = match change {
                    Change::Del => "deleted",
                    Change::New if l.index != idx => "re-created",
                    Change::New if l.name != name => "renamed",
                    Change::New => deleted_or_down(node, name),
                };
                return Some(format!("device {name} {what}"));
            }
        }
        None
    }

    /// An address deleted: the VTEP address of one of our devices is put
    /// back by a full reconcile.
    fn repair_address(&mut self, node: &Node<'_>, a: &Address) -> Result<Option<Repair>> {
        let Some(devs) = &self.p.devs else {
            return Ok(None);
        };
        let dev = [devs.vx, devs.ipip, devs.wg.as_ref().map(|w| w.0)];
        if dev.contains(&Some(a.index)) && a.local.addr() == node.cfg.vtep_ip() {
            return self.full(node, format!("address {} deleted", a.local));
        }
        Ok(None)
    }

    /// A repair write failed. `NotFound` (ENODEV) with one of the node's
    /// devices gone means the device was deleted: the kernel reports the
    /// neighbours and FDB entries it flushes with a device *before* the
    /// device's own events, and the write waited for the deletion to end.
    /// Then the repair is the device's (a full reconcile makes it again
    /// with everything on it), not an error. Any other failure is returned.
    fn device_gone(&mut self, node: &Node<'_>, e: crate::Error) -> Result<Option<Repair>> {
        if !e.is_not_found() {
            return Err(e);
        }
        let Some(devs) = &self.p.devs else {
            return Err(e);
        };
        let gone = our_devices(devs, &node.cfg)
            .into_iter()
            .find_map(|(idx, name)| {
                let idx = idx?;
                let missing =
                    matches!(node.h.links().get_by_index(idx), Err(e) if e.is_not_found());
                missing.then(|| name.to_string())
            });
        match gone {
            Some(name) => self.full(node, format!("device {name} deleted")),
            None => Err(e),
        }
    }

    /// The driver: wait up to `timeout` for an event, then repair it and
    /// everything else already queued. Returns the repairs made (empty
    /// when nothing of the node's changed). A repair that fails does not
    /// stop the others; the first error is returned after all were tried.
    pub fn run(
        &mut self,
        node: &Node<'_>,
        watch: &mut Watch,
        timeout: Duration,
    ) -> Result<Vec<Repair>> {
        let mut out = Vec::new();
        let mut first_err = None;
        let mut wait = timeout;
        while let Some(ev) = watch.next(wait)? {
            wait = Duration::ZERO;
            match self.repair(node, &ev) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }
}

/// The context of a repair's error.
fn repair_ctx(node: &Node<'_>) -> String {
    format!("{}: repair drift", node.ctx())
}

/// The node's devices: (index if it has one, name).
fn our_devices<'a>(devs: &Devs, cfg: &'a NodeConfig) -> [(Option<u32>, &'a str); 3] {
    [
        (devs.vx, cfg.vxlan_dev.as_str()),
        (devs.ipip, cfg.ipip_dev.as_str()),
        (devs.wg.as_ref().map(|w| w.0), cfg.wireguard_dev.as_str()),
    ]
}

/// Our device `name` was reported down: set down by someone, or on its
/// way out (a deletion sets the device down first). `ip link set NAME up`
/// tells them apart: it waits for a deletion in progress to end (both
/// take the kernel's rtnl lock) and then finds no device; otherwise it
/// is the start of the repair (the full reconcile that follows restores
/// the routes the kernel flushed with the device down).
fn deleted_or_down(node: &Node<'_>, name: &str) -> &'static str {
    match node.h.links().set_up(name) {
        Err(e) if e.is_not_found() => "deleted",
        _ => "set down",
    }
}
