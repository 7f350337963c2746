//! Check: [`BridgeNetwork::check`] reads a container's live state
//! (never changing it) and compares it with what attach makes; attach
//! twice uses the same comparison.

use ipnet::IpNet;

use super::bridge::{family_of, is_link_local, kind_name, BridgeNetwork, Key};
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
        let mut drifts = self.compare(&obs, alloc.as_ref(), &key);
        for d in &mut drifts {
            if let Drift::NamespaceMissing { netns, .. } = d {
                *netns = ns.label();
            }
        }
        Ok(drifts)
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

    pub(super) fn compare(
        &self,
        obs: &Observed,
        alloc: Option<&Allocation>,
        key: &Key<'_>,
    ) -> Vec<Drift> {
        let (container_id, ifname, host_name, host_mac) =
            (key.container_id, key.ifname, key.host.as_str(), key.mac);
        let mut d = Vec::new();
        let bridge = &self.config.name;
        let want_mtu = self.config.mtu;
        match &obs.bridge {
            None => d.push(Drift::BridgeMissing {
                bridge: bridge.clone(),
            }),
            Some(b) => {
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
        }
        let bridge_index = obs.bridge.as_ref().map(|b| b.index);
        let host = match &obs.host {
            None => {
                d.push(Drift::HostLinkMissing {
                    name: host_name.to_string(),
                });
                None
            }
            Some(h) if !key.owns(h) => {
                d.push(Drift::HostLinkForeign {
                    name: host_name.to_string(),
                    reason: format!(
                        "kind {}, mac {}; attach makes a veth with mac {host_mac}",
                        kind_name(h),
                        h.mac
                            .map(|m| m.to_string())
                            .unwrap_or_else(|| "none".into())
                    ),
                });
                None
            }
            Some(h) => {
                if h.master.is_none() || h.master != bridge_index {
                    d.push(Drift::HostLinkOffBridge {
                        name: host_name.to_string(),
                        master: obs.host_master_name.clone(),
                        want: bridge.clone(),
                    });
                }
                if !h.is_up() {
                    d.push(Drift::HostLinkDown {
                        name: host_name.to_string(),
                    });
                }
                if h.mtu != want_mtu {
                    d.push(Drift::Mtu {
                        link: host_name.to_string(),
                        have: h.mtu,
                        want: want_mtu,
                    });
                }
                Some(h)
            }
        };
        if let Some(reason) = &obs.ns_error {
            d.push(Drift::NamespaceMissing {
                // Named by the caller, who knows how it was given.
                netns: String::new(),
                reason: reason.clone(),
            });
        } else {
            match &obs.container {
                None => d.push(Drift::ContainerLinkMissing {
                    ifname: ifname.to_string(),
                }),
                Some(c) => {
                    if !c.is_up() {
                        d.push(Drift::ContainerLinkDown {
                            ifname: ifname.to_string(),
                        });
                    }
                    if c.mtu != want_mtu {
                        d.push(Drift::Mtu {
                            link: ifname.to_string(),
                            have: c.mtu,
                            want: want_mtu,
                        });
                    }
                    if let Some(h) = host {
                        let paired = c.kind == LinkKind::Veth
                            && h.link == Some(c.index)
                            && c.link == Some(h.index)
                            && (obs.nsid.is_none() || h.link_netnsid == obs.nsid);
                        if !paired {
                            d.push(Drift::NotPeers {
                                host: host_name.to_string(),
                                ifname: ifname.to_string(),
                            });
                        }
                    }
                    if let Some(a) = alloc {
                        let want = a.cidr();
                        if !obs.addrs.contains(&want) {
                            d.push(Drift::AddressMissing {
                                ifname: ifname.to_string(),
                                want,
                            });
                        }
                    }
                    for have in &obs.addrs {
                        if alloc.is_some_and(|a| a.cidr() == *have) {
                            continue;
                        }
                        d.push(Drift::AddressUnexpected {
                            ifname: ifname.to_string(),
                            have: *have,
                        });
                    }
                }
            }
            let want_via = self.gateway.addr();
            match &obs.default_route {
                None => d.push(Drift::DefaultRouteMissing { want_via }),
                Some(r) => {
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
        }
        if alloc.is_none() {
            d.push(Drift::AllocationMissing {
                container_id: container_id.to_string(),
                ifname: ifname.to_string(),
            });
        }
        d
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
