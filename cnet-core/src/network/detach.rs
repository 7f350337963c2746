//! Detach: [`BridgeNetwork::detach`], CNI `DEL` semantics (what is
//! already gone is fine, the address is released in any case).

use serde::{Deserialize, Serialize};

use super::bridge::{kind_name, mac_or_none, BridgeNetwork, Key};
use super::container::ContainerNs;
use crate::error::{Result, ResultExt};
use crate::handle::Handle;
use crate::ipam::Allocation;
use crate::link::LinkKind;

/// What [`BridgeNetwork::detach`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachReport {
    /// The host-side veth name derived from the container id.
    pub host_veth: String,
    /// Whether a veth pair was deleted (false: it was already gone).
    pub link_removed: bool,
    /// The allocation released, if the pool held one.
    pub released: Option<Allocation>,
    /// What was found but left alone, and why (a link with the host-side
    /// name that is not this attachment's).
    pub left_alone: Vec<String>,
}

impl BridgeNetwork {
    /// Detach a container: delete the veth pair (its container end, address
    /// and routes go with it) and release the address. CNI `DEL` semantics:
    /// succeeds when the namespace, the link or the allocation is already
    /// gone, and releases the address even then.
    ///
    /// The namespace is not needed: the host end is found by its derived
    /// name and recognised by its derived MAC; a link with that name that is
    /// not this attachment's is left alone and named in
    /// [`DetachReport::left_alone`]. When `ns` is given and the host end is
    /// missing (renamed), the container's `ifname` is removed if it is a
    /// veth whose peer is a port of this network's bridge.
    ///
    /// Errors (a kernel or store failure, not "already gone") are returned
    /// after every step has been tried.
    pub fn detach(
        &self,
        ns: Option<&ContainerNs>,
        container_id: &str,
        ifname: &str,
    ) -> Result<DetachReport> {
        let what = || format!("detach {container_id}/{ifname} from {}", self.config.name);
        let key = Key::new(container_id, ifname).with_context(what)?;
        let (host_name, host_mac) = (key.host.clone(), key.mac);
        let mut report = DetachReport {
            host_veth: host_name.clone(),
            link_removed: false,
            released: None,
            left_alone: Vec::new(),
        };
        let mut errors = Vec::new();
        let links = self.host.links();
        match links.find(&host_name) {
            Ok(Some(l)) if key.owns(&l) => match links.delete_if_exists(&host_name) {
                Ok(removed) => report.link_removed = removed,
                Err(e) => errors.push(e),
            },
            Ok(Some(l)) => report.left_alone.push(format!(
                "{host_name} exists but is not this attachment's ({} with mac {}, want veth \
                 with mac {host_mac})",
                kind_name(&l),
                mac_or_none(l.mac)
            )),
            Ok(None) => {
                if let Some(ns) = ns {
                    match self.detach_container_side(ns, ifname) {
                        Ok(ContainerSide::Removed) => report.link_removed = true,
                        Ok(ContainerSide::Absent) => {}
                        Ok(ContainerSide::LeftAlone(note)) => report.left_alone.push(note),
                        Err(e) => errors.push(e),
                    }
                }
            }
            Err(e) => errors.push(e),
        }
        match self
            .pool()
            .and_then(|mut p| p.release(container_id, ifname))
        {
            Ok(a) => report.released = a,
            Err(e) => errors.push(e),
        }
        let mut errors = errors.into_iter();
        match errors.next() {
            None => Ok(report),
            Some(first) => {
                let rest: Vec<String> = errors.map(|e| e.to_string()).collect();
                Err(if rest.is_empty() {
                    first.with_context(what())
                } else {
                    first.with_context(format!("{} [also: {}]", what(), rest.join("; ")))
                })
            }
        }
    }

    /// The host end is missing: remove the container end if it is a veth
    /// whose peer is a port of our bridge.
    fn detach_container_side(&self, ns: &ContainerNs, ifname: &str) -> Result<ContainerSide> {
        let netns = match ns.open() {
            Ok(n) => n,
            // The namespace is gone, and its veths with it.
            Err(e) if e.is_not_found() => return Ok(ContainerSide::Absent),
            Err(e) => return Err(e),
        };
        let ch = Handle::at(&netns)?;
        let Some(l) = ch.links().find(ifname)? else {
            return Ok(ContainerSide::Absent);
        };
        let peer_on_bridge = l.kind == LinkKind::Veth
            && l.link_netnsid.is_some()
            && l.link.is_some_and(|p| {
                self.host
                    .links()
                    .get_by_index(p)
                    .is_ok_and(|h| h.master == Some(self.bridge_index()) && h.link == Some(l.index))
            });
        if peer_on_bridge {
            Ok(if ch.links().delete_if_exists(ifname)? {
                ContainerSide::Removed
            } else {
                ContainerSide::Absent
            })
        } else {
            Ok(ContainerSide::LeftAlone(format!(
                "{ifname} in {} is not a veth whose peer is on {}: left alone",
                netns.label(),
                self.config.name
            )))
        }
    }
}

/// What detach found on the container side when the host end was missing.
enum ContainerSide {
    Removed,
    Absent,
    LeftAlone(String),
}
