//! Check: [`BridgeNetwork::check`] reads a container's live state
//! (never changing it) and compares it with what attach makes; attach
//! twice uses the same comparison.

use ipnet::IpNet;

use super::bridge::{family_of, is_link_local, kind_name, mac_or_none, BridgeNetwork, Key};
use super::container::ContainerNs;
use super::drift::Drift;
use crate::addr::Scope;
use crate::error::{Result, ResultExt};
use crate::handle::Handle;
use crate::ipam::Allocation;
use crate::link::{Link, LinkKind};
use crate::netns::NetNs;
use crate::route::{RouteEntry, RouteFilter, RouteType, TABLE_MAIN};

impl BridgeNetwork {
    /// Compare a container's live state with what attach made and list
    /// every difference (empty when all is as attach made it): bridge down
    /// or without its gateway, host end missing / not ours / off the bridge
    /// / down, container end missing / down / not the host end's peer,
    /// MTUs, the address missing or another one present, the default route
    /// missing or elsewhere, the allocation missing from the pool. Reads
    /// only. An unreadable namespace is a [`Drift::NamespaceMissing`].
    pub fn check(&self, ns: &ContainerNs, container_id: &str, ifname: &str) -> Result<Vec<Drift>> {
        let what = || format!("check {container_id}/{ifname} on {}", self.config.name);
        let key = Key::new(container_id, ifname).with_context(what)?;
        let obs = self
            .observe_in(ns.open(), &key.host, ifname)
            .with_context(what)?;
        let alloc = self
            .pool()?
            .list()
            .with_context(what)?
            .into_iter()
            .find(|a| a.container_id == container_id && a.ifname == ifname);
        Ok(self.compare(&obs, alloc.as_ref(), &key, ns))
    }

    /// Read what check compares (reads only).
    pub(super) fn observe_in(
        &self,
        netns: Result<NetNs>,
        host_name: &str,
        ifname: &str,
    ) -> Result<Observed> {
        let links = self.host.links();
        let fam = family_of(&self.gateway);
        let mut obs = Observed {
            bridge: links.find(&self.config.name)?,
            ..Observed::default()
        };
        if obs.bridge.is_some() {
            obs.bridge_addrs = self
                .host
                .addrs()
                .list(Some(&self.config.name))?
                .into_iter()
                .map(|a| a.local)
                .collect();
        }
        obs.host = links.find(host_name)?;
        if let Some(m) = obs.host.as_ref().and_then(|h| h.master) {
            obs.host_master_name = Some(match links.get_by_index(m) {
                Ok(l) => l.name,
                Err(_) => format!("#{m}"),
            });
        }
        let netns = match netns {
            Ok(n) => n,
            Err(e) => {
                obs.ns_error = Some(e.to_string());
                return Ok(obs);
            }
        };
        obs.nsid = self.host.nsid_of(&netns)?;
        let ch = Handle::at(&netns)?;
        obs.container = ch.links().find(ifname)?;
        if obs.container.is_some() {
            obs.addrs = ch
                .addrs()
                .list(Some(ifname))?
                .into_iter()
                .filter(|a| family_of(&a.local) == fam && a.scope == Scope::Global)
                .map(|a| a.local)
                .filter(|a| !is_link_local(a))
                .collect();
        }
        obs.default_route = ch
            .routes()
            .list(&RouteFilter::new().family(fam).table(TABLE_MAIN))?
            .into_iter()
            .find(|r| r.dst.prefix_len() == 0 && r.kind == RouteType::Unicast);
        Ok(obs)
    }

    /// Every difference between the observed state and what attach makes
    /// (empty when none). `ns` names the container's namespace in a
    /// [`Drift::NamespaceMissing`].
    pub(super) fn compare(
        &self,
        obs: &Observed,
        alloc: Option<&Allocation>,
        key: &Key<'_>,
        ns: &ContainerNs,
    ) -> Vec<Drift> {
        let mut d = Vec::new();
        self.bridge_drifts(obs, &mut d);
        let host = self.host_drifts(obs, key, &mut d);
        if let Some(reason) = &obs.ns_error {
            d.push(Drift::NamespaceMissing {
                netns: ns.label(),
                reason: reason.clone(),
            });
        } else {
            if let Some(c) = &obs.container {
                self.container_drifts(obs, c, host, key, &mut d);
                address_drifts(&obs.addrs, alloc, key.ifname, &mut d);
            } else {
                d.push(Drift::ContainerLinkMissing {
                    ifname: key.ifname.to_string(),
                });
            }
            self.default_route_drifts(obs, &mut d);
        }
        if alloc.is_none() {
            d.push(Drift::AllocationMissing {
                container_id: key.container_id.to_string(),
                ifname: key.ifname.to_string(),
            });
        }
        d
    }

    /// The bridge: missing, down, without its gateway address.
    fn bridge_drifts(&self, obs: &Observed, d: &mut Vec<Drift>) {
        let bridge = &self.config.name;
        let Some(b) = &obs.bridge else {
            d.push(Drift::BridgeMissing {
                bridge: bridge.clone(),
            });
            return;
        };
        if !b.is_up() {
            d.push(Drift::BridgeDown {
                bridge: bridge.clone(),
            });
        }
        if !obs.bridge_addrs.contains(&self.gateway) {
            d.push(Drift::GatewayMissing {
                bridge: bridge.clone(),
                want: self.gateway,
            });
        }
    }

    /// The host end: missing, not ours, off the bridge, down, its MTU.
    /// Returns it when it is ours.
    fn host_drifts<'o>(
        &self,
        obs: &'o Observed,
        key: &Key<'_>,
        d: &mut Vec<Drift>,
    ) -> Option<&'o Link> {
        let host_name = key.host.as_str();
        let Some(h) = &obs.host else {
            d.push(Drift::HostLinkMissing {
                name: host_name.to_string(),
            });
            return None;
        };
        if !key.owns(h) {
            d.push(Drift::HostLinkForeign {
                name: host_name.to_string(),
                reason: format!(
                    "kind {}, mac {}; attach makes a veth with mac {}",
                    kind_name(h),
                    mac_or_none(h.mac),
                    key.mac
                ),
            });
            return None;
        }
        let bridge_index = obs.bridge.as_ref().map(|b| b.index);
        if h.master.is_none() || h.master != bridge_index {
            d.push(Drift::HostLinkOffBridge {
                name: host_name.to_string(),
                master: obs.host_master_name.clone(),
                want: self.config.name.clone(),
            });
        }
        if !h.is_up() {
            d.push(Drift::HostLinkDown {
                name: host_name.to_string(),
            });
        }
        if h.mtu != self.config.mtu {
            d.push(Drift::Mtu {
                link: host_name.to_string(),
                have: h.mtu,
                want: self.config.mtu,
            });
        }
        Some(h)
    }

    /// The container end `c`: down, its MTU, not the peer of the host end
    /// `host` (when that is ours).
    fn container_drifts(
        &self,
        obs: &Observed,
        c: &Link,
        host: Option<&Link>,
        key: &Key<'_>,
        d: &mut Vec<Drift>,
    ) {
        let ifname = key.ifname;
        if !c.is_up() {
            d.push(Drift::ContainerLinkDown {
                ifname: ifname.to_string(),
            });
        }
        if c.mtu != self.config.mtu {
            d.push(Drift::Mtu {
                link: ifname.to_string(),
                have: c.mtu,
                want: self.config.mtu,
            });
        }
        if let Some(h) = host {
            let paired = c.kind == LinkKind::Veth
                && h.link == Some(c.index)
                && c.link == Some(h.index)
                && (obs.nsid.is_none() || h.link_netnsid == obs.nsid);
            if !paired {
                d.push(Drift::NotPeers {
                    host: key.host.to_string(),
                    ifname: ifname.to_string(),
                });
            }
        }
    }

    /// The default route in the container: missing, or not via the
    /// gateway on the container end.
    fn default_route_drifts(&self, obs: &Observed, d: &mut Vec<Drift>) {
        let want_via = self.gateway.addr();
        let Some(r) = &obs.default_route else {
            d.push(Drift::DefaultRouteMissing { want_via });
            return;
        };
        let dev_ok = obs
            .container
            .as_ref()
            .is_some_and(|c| r.oif == Some(c.index));
        if r.gateway != Some(want_via) || !dev_ok {
            d.push(Drift::DefaultRouteWrong {
                have_via: r.gateway,
                have_dev: r.oif,
                want_via,
            });
        }
    }
}

/// The container end's addresses `have`: the allocated one missing, any
/// other present.
fn address_drifts(have: &[IpNet], alloc: Option<&Allocation>, ifname: &str, d: &mut Vec<Drift>) {
    let want = alloc.map(Allocation::cidr);
    if let Some(want) = want {
        if !have.contains(&want) {
            d.push(Drift::AddressMissing {
                ifname: ifname.to_string(),
                want,
            });
        }
    }
    for have in have.iter().filter(|a| Some(**a) != want) {
        d.push(Drift::AddressUnexpected {
            ifname: ifname.to_string(),
            have: *have,
        });
    }
}

/// Live state as check reads it.
#[derive(Debug, Default)]
pub(super) struct Observed {
    pub(super) bridge: Option<Link>,
    pub(super) bridge_addrs: Vec<IpNet>,
    pub(super) host: Option<Link>,
    pub(super) host_master_name: Option<String>,
    /// Why the container's namespace could not be opened.
    pub(super) ns_error: Option<String>,
    /// The container namespace's id as the host namespace knows it.
    pub(super) nsid: Option<i32>,
    pub(super) container: Option<Link>,
    /// Global addresses of the network's family on the container end.
    pub(super) addrs: Vec<IpNet>,
    pub(super) default_route: Option<RouteEntry>,
}
