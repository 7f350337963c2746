//! Drift repair of a bridge network from kernel events ([`crate::watch`]):
//! what someone else changed of the bridge and its ports is put back as
//! soon as the kernel reports it ([`BridgeNetwork::repair`]).
//!
//! ```text
//!   Event ──▶ BridgeNetwork::repair(event)
//!     a port of the bridge set down ─────────────▶ ip link set PORT up
//!     the bridge deleted (on Resync: found gone) ─▶ the bridge as ensure makes it
//!                                                   (MTU, MAC, gateway address, up)
//!                                                   └▶ reattach_ports
//!     anything else ─────────────────────────────▶ nothing
//!
//!   reattach_ports: pool's live allocations (container id, ifname)
//!        → derived host-end name and MAC (names.rs) → one link dump
//!        → ours and on no bridge (or on it but down)
//!        → ip link set PORT master BRIDGE up, all in one pipelined batch
//! ```
//!
//! Deleting a bridge takes its ports off it but leaves them (the containers'
//! host ends) in place; a new bridge of the same name starts with none. The
//! ports to put back are found through the pool, not by scanning links:
//!
//! * the pool is the record of which attachments are this network's,
//!   whichever process made them, so a restarted agent (or any caller of
//!   [`BridgeNetwork::ensure`]) finds them without having watched the
//!   deletion — the kernel's "port left the bridge" events are gone by then;
//! * each `(container id, ifname)` gives the host end's name *and* its MAC
//!   (the owner tag attach sets), and a link is taken only when it has both:
//!   another runtime's veth (Docker's, a hash clash) is never made a port,
//!   which a scan of `veth*` links would do;
//! * nothing is kept in memory, so nothing goes stale.
//!
//! Only host ends on no bridge (what a deletion leaves) or on this bridge
//! but down are changed; one someone put on another bridge is left there
//! ([`BridgeNetwork::check`] reports it). Costs one pool read and one link
//! dump, and only when the bridge had to be made again.

use std::collections::HashMap;

use super::bridge::{ensure_bridge, BridgeNetwork, Key};
use crate::error::{Result, ResultExt};
use crate::link::{Link, LinkKind};
use crate::watch::{Change, Event};

/// One repair [`BridgeNetwork::repair`] made.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeRepair {
    /// A port (a container's host end) set down by someone else was set
    /// up again (`ip link set PORT up`).
    PortUp {
        /// The port's name.
        port: String,
    },
    /// The bridge was deleted: made again as [`BridgeNetwork::ensure`]
    /// makes it, and the containers' host ends put back on it, up.
    Bridge {
        /// The new bridge's index.
        index: u32,
        /// The ports put back, by name, sorted.
        ports: Vec<String>,
    },
}

impl std::fmt::Display for BridgeRepair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BridgeRepair::PortUp { port } => write!(f, "bridge port {port} set up again"),
            BridgeRepair::Bridge { index, ports } => write!(
                f,
                "deleted bridge made again (index {index}), {} container port{} back on it",
                ports.len(),
                if ports.len() == 1 { "" } else { "s" }
            ),
        }
    }
}

impl BridgeNetwork {
    /// Drift repair for [`crate::watch`] users (see the [module
    /// docs](self)): when `ev` says the network's bridge was deleted, make
    /// it again as [`BridgeNetwork::ensure`] does and put the containers'
    /// ports back on it ([`BridgeNetwork::reattach_ports`]); when it says a
    /// port was set down, set it up ([`BridgeNetwork::repair_port`]). On
    /// [`Event::Resync`] (events were lost) the bridge is looked up and made
    /// again if it is gone. `None` for every other event.
    ///
    /// After a repair the network works with the new bridge
    /// ([`BridgeNetwork::bridge_index`]); another process's
    /// `BridgeNetwork` on the same bridge still has the old index, and its
    /// attach says so (`NotFound`, "ensure the network again").
    pub fn repair(&self, ev: &Event) -> Result<Option<BridgeRepair>> {
        match ev {
            Event::Link(Change::Del, l) if l.index == self.bridge_index() => {
                self.remake_bridge().map(Some)
            }
            Event::Resync => match self.host.links().get_by_index(self.bridge_index()) {
                Err(e) if e.is_not_found() => self.remake_bridge().map(Some),
                Err(e) => Err(e.with_context(format!(
                    "bridge network {}: look up the bridge after a resync",
                    self.config.name
                ))),
                Ok(_) => Ok(None),
            },
            _ => Ok(self
                .repair_port(ev)?
                .map(|port| BridgeRepair::PortUp { port })),
        }
    }

    /// When `ev` says a port of this network's bridge (a container's
    /// host-side veth) was set down by someone else, set it up again (`ip
    /// link set PORT up`) and return its name. Other events: `None`. (A
    /// port caught half-way through attach is set up a moment early; attach
    /// does the same next.) [`BridgeNetwork::repair`] does this and more.
    pub fn repair_port(&self, ev: &Event) -> Result<Option<String>> {
        match ev {
            Event::Link(Change::New, l) if l.master == Some(self.bridge_index()) && !l.is_up() => {
                match self.host.links().set_up(&l.name) {
                    Ok(()) => Ok(Some(l.name.clone())),
                    // Deleted in the meantime (detach): nothing to repair.
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e.with_context(format!(
                        "bridge network {}: set port {} up again",
                        self.config.name, l.name
                    ))),
                }
            }
            _ => Ok(None),
        }
    }

    /// Put the containers' host ends back on the bridge: for every live
    /// allocation of the pool whose host end exists, is this attachment's
    /// (its derived name and MAC) and is on no bridge, or on this one but
    /// down, `ip link set PORT master BRIDGE up` (all in one pipelined
    /// batch). Returns the ports changed, sorted; host ends that are gone
    /// (the container with them) are skipped, one on another bridge is
    /// left there. See the [module docs](self) for why the pool, not a
    /// scan of links, says which ports are ours. The pool is read only
    /// when the kernel has a veth off any bridge: a fresh node's ensure
    /// costs one link dump.
    pub fn reattach_ports(&self) -> Result<Vec<String>> {
        let ctx = || {
            format!(
                "bridge network {} in {}: put the containers' ports back",
                self.config.name,
                self.host.netns().label()
            )
        };
        // The kernel first: veths off any bridge (or on this one but down)
        // are the only candidates. A node with none (a fresh one) reads
        // nothing from the pool, however large it is.
        let links = self.host.links().list().with_context(ctx)?;
        let bridge = self.bridge_index();
        let off: HashMap<&str, &Link> = links
            .iter()
            .filter(|l| l.kind == LinkKind::Veth)
            .filter(|l| l.master.is_none() || (l.master == Some(bridge) && !l.is_up()))
            .map(|l| (l.name.as_str(), l))
            .collect();
        if off.is_empty() {
            return Ok(Vec::new());
        }
        let allocations = self.allocations().with_context(ctx)?;
        let mut todo: Vec<(String, u32)> = Vec::new();
        for a in &allocations {
            // An id attach would have refused has no host end.
            let Ok(key) = Key::new(&a.container_id, &a.ifname) else {
                continue;
            };
            match off.get(key.host.as_str()) {
                Some(l) if key.owns(l) => todo.push((key.host, l.index)),
                _ => {}
            }
        }
        if todo.is_empty() {
            return Ok(Vec::new());
        }
        let indices: Vec<u32> = todo.iter().map(|(_, i)| *i).collect();
        let results = self
            .host
            .links()
            .set_master_up_each(&indices, bridge)
            .with_context(ctx)?;
        let mut done = Vec::new();
        let mut first_err = None;
        for ((name, _), r) in todo.into_iter().zip(results) {
            match r {
                Ok(()) => done.push(name),
                // Deleted meanwhile (a detach): nothing to put back.
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    first_err.get_or_insert(e.with_context(format!("port {name}")));
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e.with_context(ctx()));
        }
        done.sort();
        Ok(done)
    }

    /// The bridge as ensure makes it, then its ports back.
    fn remake_bridge(&self) -> Result<BridgeRepair> {
        let ctx = || {
            format!(
                "bridge network {} in {}: make the deleted bridge again",
                self.config.name,
                self.host.netns().label()
            )
        };
        let made = ensure_bridge(&self.host, &self.config, self.gateway).with_context(ctx)?;
        self.set_bridge_index(made.index);
        let ports = self.reattach_ports().with_context(ctx)?;
        Ok(BridgeRepair::Bridge {
            index: made.index,
            ports,
        })
    }
}
