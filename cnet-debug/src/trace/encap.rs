//! Encapsulation: vxlan (neighbour + FDB → remote VTEP) and ipip wrap the
//! packet and the outer packet is routed again; decapsulation where the
//! outer packet is delivered; MTU left after the overhead.

use std::net::IpAddr;

use cnet_core::link::{Link, LinkDetails};
use cnet_core::{Error, Result};

use super::path::{neigh_ok, Encap, Pkt, Step, Tracer};
use super::{HopKind, Severity, IPIP_OVERHEAD, VXLAN_OVERHEAD};

impl Tracer {
    pub(super) fn vxlan(
        &mut self,
        ns: usize,
        out: Link,
        nexthop: IpAddr,
        pkt: &mut Pkt,
    ) -> Result<Step> {
        let label = self.w.label(ns);
        let LinkDetails::Vxlan(v) = out.details.clone() else {
            return Err(Error::Protocol {
                context: format!("vxlan {}", out.name),
                reason: "no vxlan parameters".into(),
            });
        };
        let neigh = self.neighbour(ns, &out, nexthop)?;
        let fdb = self.w.h(ns)?.fdb().list(&out.name)?;
        // Flood entries (all-zeros MAC with a destination) carry ARP to the
        // peers, so the kernel can resolve a VTEP's MAC itself.
        let can_resolve = fdb.iter().any(|e| e.mac.0 == [0; 6] && e.dst.is_some());
        let mac = match &neigh {
            Some(n) if neigh_ok(n) && n.mac.is_some() => {
                self.detail(format!(
                    "neighbour {nexthop} lladdr {} {}",
                    n.mac.map(|m| m.to_string()).unwrap_or_default(),
                    n.state.as_str().to_uppercase()
                ));
                n.mac
            }
            // A FAILED or INCOMPLETE entry left by an earlier attempt: with
            // flood entries the kernel resolves it again on the next packet
            // (a warning; the capture decides), without them nothing can.
            Some(n) if can_resolve => {
                self.detail(format!(
                    "neighbour {nexthop}: {} (left by an earlier attempt; ARP goes again through the flood entries on the next packet)",
                    n.state.as_str().to_uppercase()
                ));
                self.find(
                    Severity::Warning,
                    "neigh_failed",
                    format!(
                        "neighbour {nexthop} on {} in {label} is {}: an earlier resolution failed; the kernel tries again with the next packet",
                        out.name,
                        n.state.as_str()
                    ),
                );
                None
            }
            Some(n) => {
                return Ok(Step::Done(self.broken(
                    ns,
                    "neigh_failed",
                    &format!(
                        "neighbour {nexthop} on {} in {label} is {}, and the device has no flood entry (00:00:00:00:00:00 dst …) through which ARP could resolve it: a vxlan overlay without learning needs the peer VTEP's MAC as a permanent neighbour (Flannel adds it per peer)",
                        out.name,
                        n.state.as_str()
                    ),
                )));
            }
            None => {
                return Ok(Step::Done(self.broken(
                    ns,
                    "neigh_missing",
                    &format!("no neighbour entry for {nexthop} on {} in {label}: a vxlan overlay needs the peer VTEP's MAC (Flannel adds it per peer)", out.name),
                )));
            }
        };
        let entry = fdb
            .iter()
            .find(|e| Some(e.mac) == mac && e.dst.is_some())
            .or_else(|| fdb.iter().find(|e| e.mac.0 == [0; 6] && e.dst.is_some()));
        let Some(entry) = entry.cloned() else {
            self.hop(
                ns,
                HopKind::VxlanEncap,
                format!(
                    "vxlan {} vni {}: no FDB entry for {}",
                    out.name,
                    v.vni.unwrap_or(0),
                    mac.map(|m| m.to_string()).unwrap_or_default()
                ),
                vec![],
                None,
                pkt,
            );
            return Ok(Step::Done(self.broken(
                ns,
                "fdb_missing",
                &format!(
                    "no FDB entry on {} in {label} maps {} to a remote VTEP",
                    out.name,
                    mac.map(|m| m.to_string()).unwrap_or_default()
                ),
            )));
        };
        let vtep = entry.dst.expect("filtered on dst");
        let vni = entry.vni.or(v.vni).unwrap_or(0);
        let port = entry.port.or(v.port).unwrap_or(8472);
        let how = if entry.mac.0 == [0; 6] {
            "default (00:00:00:00:00:00) entry, flooded".to_string()
        } else {
            format!("fdb {} dst {vtep}", entry.mac)
        };
        // Inner packet wrapped: outer source is the vxlan's local address.
        pkt.inner
            .push((pkt.src, pkt.dst, Encap::Vxlan { vni, port }));
        pkt.src = v.local;
        pkt.dst = vtep;
        let mtu = out.mtu;
        self.hop(
            ns,
            HopKind::VxlanEncap,
            format!("vxlan {} vni {vni} → VTEP {vtep} udp/{port}", out.name),
            vec![
                how,
                format!(
                    "outer source {}",
                    v.local
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "(by route)".into())
                ),
            ],
            Some((&out, ns)),
            pkt,
        );
        self.check_encap_mtu(ns, &out, mtu, VXLAN_OVERHEAD, v.link, vtep);
        Ok(Step::Route { ns, iif: None })
    }

    pub(super) fn ipip(
        &mut self,
        ns: usize,
        out: Link,
        nexthop: IpAddr,
        pkt: &mut Pkt,
    ) -> Result<Step> {
        let LinkDetails::IpIp(i) = out.details.clone() else {
            return Err(Error::Protocol {
                context: format!("ipip {}", out.name),
                reason: "no ipip parameters".into(),
            });
        };
        let remote = i.remote.filter(|r| !r.is_unspecified()).unwrap_or(nexthop);
        pkt.inner.push((pkt.src, pkt.dst, Encap::Ipip));
        pkt.src = i.local.filter(|l| !l.is_unspecified());
        pkt.dst = remote;
        self.hop(
            ns,
            HopKind::IpipEncap,
            format!("ipip {} → remote {remote}", out.name),
            vec![],
            Some((&out, ns)),
            pkt,
        );
        self.check_encap_mtu(ns, &out, out.mtu, IPIP_OVERHEAD, i.link, remote);
        Ok(Step::Route { ns, iif: None })
    }

    pub(super) fn check_encap_mtu(
        &mut self,
        ns: usize,
        tun: &Link,
        mtu: u32,
        overhead: u32,
        underlay: Option<u32>,
        remote: IpAddr,
    ) {
        let label = self.w.label(ns);
        let under = match underlay.filter(|i| *i != 0) {
            Some(i) => self.w.link_by_index(ns, i).ok().flatten(),
            None => {
                let dev = self
                    .w
                    .h(ns)
                    .ok()
                    .and_then(|h| h.routes().get(remote).ok())
                    .and_then(|r| r.dev);
                dev.and_then(|d| self.w.link_by_name(ns, &d).ok().flatten())
            }
        };
        if let Some(u) = under {
            if mtu.saturating_add(overhead) > u.mtu {
                self.find(
                    Severity::Error,
                    "mtu_encap",
                    format!(
                        "{} in {label} has MTU {mtu}: with {overhead} bytes of encapsulation that is {} > {} of underlay {}; full-size packets are dropped (set the MTU to {} or less)",
                        tun.name,
                        mtu.saturating_add(overhead),
                        u.mtu,
                        u.name,
                        u.mtu.saturating_sub(overhead)
                    ),
                );
            }
        }
    }

    pub(super) fn decap(
        &mut self,
        ns: usize,
        pkt: &mut Pkt,
        inner_src: Option<IpAddr>,
        inner_dst: IpAddr,
        encap: Encap,
    ) -> Result<Step> {
        let label = self.w.label(ns);
        let links = self.w.links(ns)?.clone();
        let dev = links.into_iter().find(|l| match (&l.details, encap) {
            (LinkDetails::Vxlan(v), Encap::Vxlan { vni, port }) => {
                v.vni == Some(vni) && v.port.unwrap_or(8472) == port
            }
            (LinkDetails::IpIp(_), Encap::Ipip) => true,
            _ => false,
        });
        let Some(dev) = dev else {
            let what = match encap {
                Encap::Vxlan { vni, port } => {
                    format!("no vxlan device with vni {vni} on port {port}")
                }
                Encap::Ipip => "no ipip device".to_string(),
            };
            self.hop(
                ns,
                HopKind::Decap,
                format!("outer packet reaches {label}: {what}"),
                vec![],
                None,
                pkt,
            );
            return Ok(Step::Done(self.broken(
                ns,
                "no_decap",
                &format!("{what} in {label}: the encapsulated packet is dropped"),
            )));
        };
        pkt.inner.pop();
        pkt.src = inner_src;
        pkt.dst = inner_dst;
        self.hop(
            ns,
            HopKind::Decap,
            format!(
                "{} {} unwraps: {}",
                dev.kind.as_str(),
                dev.name,
                pkt.describe()
            ),
            vec![],
            Some((&dev, ns)),
            pkt,
        );
        if !dev.is_up() {
            return Ok(Step::Done(self.broken(
                ns,
                "link_down",
                &format!("{} in {label} is down", dev.name),
            )));
        }
        Ok(Step::Route {
            ns,
            iif: Some(dev.name),
        })
    }
}
