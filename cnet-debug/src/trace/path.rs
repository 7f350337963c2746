//! Routing decisions in one namespace: route lookup (with forwarding and
//! reverse-path checks), the next hop's neighbour entry, leaving by a device.

use std::net::IpAddr;

use cnet_core::link::{Link, LinkKind, MacAddr};
use cnet_core::neigh::{NeighState, NeighbourEntry};
use cnet_core::route::{Family, RouteFilter, RouteLookup, RouteQuery, RouteType};
use cnet_core::{Error, Result};

use super::{Finding, Hop, HopKind, Iface, Severity, Verdict, World};

#[derive(Debug, Clone)]
pub(super) struct Pkt {
    pub(super) src: Option<IpAddr>,
    pub(super) dst: IpAddr,
    /// Inner packets, innermost first (empty when not encapsulated).
    pub(super) inner: Vec<(Option<IpAddr>, IpAddr, Encap)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encap {
    Vxlan { vni: u32, port: u16 },
    Ipip,
}

impl Pkt {
    pub(super) fn describe(&self) -> String {
        let one = |s: Option<IpAddr>, d: IpAddr| {
            format!(
                "{} > {d}",
                s.map(|s| s.to_string()).unwrap_or_else(|| "?".into())
            )
        };
        let mut parts = vec![one(self.src, self.dst)];
        for (s, d, e) in self.inner.iter().rev() {
            parts.push(match e {
                Encap::Vxlan { vni, .. } => format!("[vxlan {vni}] {}", one(*s, *d)),
                Encap::Ipip => format!("[ipip] {}", one(*s, *d)),
            });
        }
        parts.join(" ")
    }
}

/// Where a frame is going on a segment: the next hop's MAC if the
/// neighbour table knows it, and its IP (to find it before ARP has run).
#[derive(Debug, Clone, Copy)]
pub(super) struct L2 {
    pub(super) mac: Option<MacAddr>,
    pub(super) ip: IpAddr,
}

pub(super) struct Tracer {
    pub(super) w: World,
    pub(super) hops: Vec<Hop>,
    pub(super) findings: Vec<Finding>,
    pub(super) first_mtu: Option<u32>,
    /// Each namespace's netfilter ruleset, read when a packet is forwarded there.
    pub(super) fw: std::collections::HashMap<usize, Option<super::firewall::Ruleset>>,
    /// The probe's protocol and port, for firewall matches.
    pub(super) proto: crate::probe::Proto,
    pub(super) port: u16,
}

pub(super) enum Step {
    /// Continue routing in namespace `ns` with the packet arriving on `iif`
    /// (None: locally generated).
    Route {
        ns: usize,
        iif: Option<String>,
    },
    /// A frame for `l2` arrives in namespace `ns` on device `dev`.
    Arrive {
        ns: usize,
        dev: Link,
        l2: L2,
    },
    Done(Verdict),
}

pub(super) fn neigh_ok(n: &NeighbourEntry) -> bool {
    !matches!(
        n.state,
        NeighState::Failed | NeighState::Incomplete | NeighState::None
    )
}

impl Tracer {
    pub(super) fn hop(
        &mut self,
        ns: usize,
        kind: HopKind,
        summary: String,
        details: Vec<String>,
        iface: Option<(&Link, usize)>,
        pkt: &Pkt,
    ) -> usize {
        let n = self.hops.len() + 1;
        let iface = iface.map(|(l, i)| Iface {
            netns: self.w.label(i),
            ifname: l.name.clone(),
            l3: l.kind == LinkKind::IpIp,
            ns_idx: i,
        });
        self.hops.push(Hop {
            n,
            netns: self.w.label(ns),
            kind,
            summary,
            details,
            iface,
            packet: pkt.describe(),
        });
        n
    }

    pub(super) fn find(&mut self, severity: Severity, code: &'static str, message: String) {
        let hop = self.hops.len().max(1);
        self.findings.push(Finding {
            hop,
            severity,
            code,
            message,
        });
    }

    pub(super) fn broken(&mut self, ns: usize, code: &'static str, message: &str) -> Verdict {
        self.find(Severity::Error, code, message.to_string());
        Verdict {
            ok: false,
            model_ok: false,
            agreement: None,
            outcome: "broken",
            netns: self.w.label(ns),
            hop: self.hops.len(),
            message: format!("broken at hop {}: {message}", self.hops.len()),
        }
    }

    pub(super) fn ifname(&mut self, ns: usize, idx: Option<u32>) -> String {
        idx.and_then(|i| self.w.link_by_index(ns, i).ok().flatten())
            .map(|l| l.name)
            .unwrap_or_else(|| "?".into())
    }

    pub(super) fn rp_filter(&mut self, ns: usize, dev: &str) -> u8 {
        let all = self
            .w
            .sysctl(ns, &["net", "ipv4", "conf", "all", "rp_filter"]);
        let d = self
            .w
            .sysctl(ns, &["net", "ipv4", "conf", dev, "rp_filter"]);
        let p = |s: Option<String>| s.and_then(|v| v.parse::<u8>().ok()).unwrap_or(0);
        p(all).max(p(d))
    }

    pub(super) fn is_local(&mut self, ns: usize, ip: IpAddr) -> Result<bool> {
        Ok(self.w.addrs(ns)?.iter().any(|a| a.local.addr() == ip) || ip.is_loopback())
    }

    /// The route of a failing lookup, found by longest-prefix match in a dump.
    pub(super) fn failing_route(&mut self, ns: usize, dst: IpAddr) -> Option<String> {
        let h = self.w.h(ns).ok()?;
        let fam = if dst.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        let all = h.routes().list(&RouteFilter::new().family(fam)).ok()?;
        all.into_iter()
            .filter(|r| r.dst.contains(&dst))
            .max_by_key(|r| r.dst.prefix_len())
            .map(|r| {
                format!(
                    "{} {} (table {}, proto {})",
                    r.kind.as_str(),
                    r.dst,
                    r.table,
                    r.protocol
                )
            })
    }

    pub(super) fn route(&mut self, ns: usize, iif: Option<String>, pkt: &mut Pkt) -> Result<Step> {
        let label = self.w.label(ns);
        let local = self.is_local(ns, pkt.dst)?;
        // Forwarding and reverse-path checks come before the lookup: the
        // kernel's answers for them are ambiguous errnos.
        if let Some(dev) = &iif {
            if !local {
                // IPv6 forwarding is `conf.all.forwarding` (per-device
                // values follow it when it is set).
                let (key, path): (&str, &[&str]) = if pkt.dst.is_ipv4() {
                    ("net.ipv4.ip_forward", &["net", "ipv4", "ip_forward"])
                } else {
                    (
                        "net.ipv6.conf.all.forwarding",
                        &["net", "ipv6", "conf", "all", "forwarding"],
                    )
                };
                let fwd = self.w.sysctl(ns, path).unwrap_or_default();
                if fwd.trim() != "1" {
                    self.hop(
                        ns,
                        HopKind::Route,
                        format!("forward {} arriving on {dev}", pkt.dst),
                        vec![],
                        None,
                        pkt,
                    );
                    return Ok(Step::Done(self.broken(
                        ns,
                        "ip_forward_off",
                        &format!("{key}=0 in {label}: packets arriving on {dev} are not forwarded"),
                    )));
                }
            }
            if let Some(src) = pkt.src {
                if pkt.dst.is_ipv4() && self.rp_filter(ns, dev) == 1 {
                    let back = self.w.h(ns)?.routes().lookup(&RouteQuery::new(src));
                    let back_dev = back.ok().and_then(|b| b.dev);
                    if back_dev.as_deref() != Some(dev.as_str()) {
                        self.hop(
                            ns,
                            HopKind::Route,
                            format!("receive {} on {dev}", pkt.dst),
                            vec![],
                            None,
                            pkt,
                        );
                        return Ok(Step::Done(self.broken(
                            ns,
                            "rp_filter_strict",
                            &format!(
                                "strict rp_filter on {dev} in {label}: the way back to {src} leaves by {}, not {dev} (asymmetric path)",
                                back_dev.unwrap_or_else(|| "no route".into())
                            ),
                        )));
                    }
                }
            }
        }
        let mut plain = RouteQuery::new(pkt.dst);
        if let (Some(dev), Some(src)) = (&iif, pkt.src) {
            plain = plain.iif(dev.as_str()).from(src);
        } else if let (None, Some(src)) = (&iif, pkt.src) {
            if self.is_local(ns, src)? {
                plain = plain.from(src);
            }
        }
        let lookup = match self.w.h(ns)?.routes().lookup(&plain.clone().fibmatch()) {
            // `fibmatch` can fail where the kernel's own decision does not:
            // 0.0.0.0 is sent to lo (`ip route get 0.0.0.0` → local dev lo),
            // yet no FIB entry matches it. The decision is what `ip route
            // get` says; the failure stands only if the kernel agrees.
            Err(e) if e.errno().is_some() => self.w.h(ns)?.routes().lookup(&plain).map_err(|_| e),
            other => other,
        };
        let r: RouteLookup = match lookup {
            Ok(r) => r,
            Err(e) => {
                let (code, what) = match e.errno() {
                    Some(libc::EINVAL) => ("blackhole", "a blackhole route drops it"),
                    Some(libc::EHOSTUNREACH) => ("unreachable", "an unreachable route rejects it"),
                    Some(libc::EACCES) => ("prohibit", "a prohibit route rejects it"),
                    Some(libc::ENETUNREACH) => ("no_route", "no route matches"),
                    _ => return Err(e),
                };
                let matched = if code == "no_route" {
                    None
                } else {
                    self.failing_route(ns, pkt.dst)
                };
                let details = matched.iter().map(|m| format!("matched: {m}")).collect();
                self.hop(
                    ns,
                    HopKind::Route,
                    format!("route lookup for {}: {what}", pkt.dst),
                    details,
                    None,
                    pkt,
                );
                let msg = match &matched {
                    Some(m) => format!("{what} in {label}: {m}"),
                    None => format!("{what} for {} in {label}", pkt.dst),
                };
                let verdict = self.broken(ns, code, &msg);
                if code == "no_route" {
                    // Setting a device down removes the routes through it:
                    // a missing route is often a device that is down.
                    let down: Vec<String> = self
                        .w
                        .links(ns)?
                        .iter()
                        .filter(|l| !l.is_up() && l.kind != LinkKind::Device)
                        .map(|l| l.name.clone())
                        .collect();
                    for d in down {
                        self.find(
                            Severity::Warning,
                            "link_down",
                            format!("{d} in {label} is down; the kernel removes routes through a down device, so a route via {d} may be missing for that reason"),
                        );
                    }
                }
                return Ok(Step::Done(verdict));
            }
        };
        if pkt.src.is_none() {
            pkt.src = r.prefsrc;
        }
        let dev = r.dev.clone().unwrap_or_else(|| self.ifname(ns, r.oif));
        // The kernel's answer in `ip route get` words.
        let kernel = {
            let mut s = format!("{} {}", r.kind.as_str(), pkt.dst);
            if let Some(g) = r.gateway {
                s += &format!(" via {g}");
            }
            s += &format!(" dev {dev}");
            if let Some(p) = r.prefsrc {
                s += &format!(" src {p}");
            }
            s
        };
        if matches!(r.kind, RouteType::Broadcast | RouteType::Multicast)
            && iif.is_none()
            && pkt.inner.is_empty()
            && self.hops.is_empty()
        {
            let whom = if r.kind == RouteType::Broadcast {
                "every host on that segment"
            } else {
                "every member of the group"
            };
            return Err(Error::invalid(
                format!("trace {} from {label}", pkt.dst),
                format!(
                    "the kernel sends it as {} out {dev} (ip route get: {kernel}), to {whom}, not along one path; trace follows unicast paths",
                    r.kind.as_str()
                ),
            ));
        }
        let matched = r
            .matched
            .as_ref()
            .map(|m| {
                let mut s = format!("{} {}", m.kind.as_str(), m.dst);
                if let Some(g) = m.gateway {
                    s += &format!(" via {g}");
                }
                if let Some(o) = m.oif {
                    s += &format!(" dev {}", self.ifname(ns, Some(o)));
                }
                if m.onlink {
                    s += " onlink";
                }
                s += &format!(" (table {}, proto {})", m.table, m.protocol);
                if m.protocol == cnet_core::network::bgp::ROUTE_PROTOCOL {
                    // BIRD installs iBGP routes with the announcing peer as next hop.
                    s += " learned over BGP";
                    if let Some(g) = m.gateway {
                        s += &format!(" from peer {g}");
                    }
                }
                s
            })
            .map(|m| format!("matched: {m}"))
            .unwrap_or_else(|| format!("no FIB entry matches; the kernel says: {kernel}"));
        let mut details = vec![matched];
        if let Some(s) = r.prefsrc {
            details.push(format!("preferred source {s}"));
        }
        if let Some(m) = r.mtu {
            details.push(format!("cached path MTU {m}"));
        }

        if r.kind == RouteType::Local || local {
            // Delivered here, unless it is an outer packet to unwrap.
            if let Some((inner_src, inner_dst, encap)) = pkt.inner.last().cloned() {
                self.hop(
                    ns,
                    HopKind::Route,
                    format!("{} is local in {label}", pkt.dst),
                    details,
                    None,
                    pkt,
                );
                return self.decap(ns, pkt, inner_src, inner_dst, encap);
            }
            let summary = if local {
                format!("{} is a local address in {label}: delivered", pkt.dst)
            } else {
                format!(
                    "{} is local in {label} (the kernel sends it to {dev}): delivered",
                    pkt.dst
                )
            };
            let n = self.hop(ns, HopKind::Deliver, summary, details, None, pkt);
            return Ok(Step::Done(Verdict {
                ok: true,
                model_ok: true,
                agreement: None,
                outcome: "delivered",
                netns: label.clone(),
                hop: n,
                message: format!("{} reached in {label} after {n} hops", pkt.dst),
            }));
        }
        if !matches!(r.kind, RouteType::Unicast) {
            self.hop(
                ns,
                HopKind::Route,
                format!("route lookup for {}: {}", pkt.dst, r.kind.as_str()),
                details,
                None,
                pkt,
            );
            return Ok(Step::Done(self.broken(
                ns,
                "route_type",
                &format!(
                    "the kernel sends {} as {} in {label} ({kernel}), not along one unicast path",
                    pkt.dst,
                    r.kind.as_str()
                ),
            )));
        }
        let Some(out) = self.w.link_by_name(ns, &dev)? else {
            return Err(Error::NotFound {
                context: format!("output device {dev} in {label}"),
                kernel: None,
            });
        };
        let nexthop = r.gateway.unwrap_or(pkt.dst);
        let summary = match r.gateway {
            Some(g) => format!("route to {} via {g} dev {dev}", pkt.dst),
            None => format!("route to {} dev {dev} (directly connected)", pkt.dst),
        };
        self.hop(ns, HopKind::Route, summary, details, Some((&out, ns)), pkt);
        if !out.is_up() {
            return Ok(Step::Done(self.broken(
                ns,
                "link_down",
                &format!("{dev} in {label} is down"),
            )));
        }
        if let Some(inn) = &iif {
            if let Some(v) = self.firewall(ns, inn, &dev, pkt) {
                return Ok(Step::Done(v));
            }
        }
        // MTU: the source interface's MTU is what the sender will use.
        match self.first_mtu {
            None => self.first_mtu = Some(out.mtu),
            Some(m) if out.mtu < m && pkt.inner.is_empty() => self.find(
                Severity::Warning,
                "mtu",
                format!("{dev} in {label} has MTU {} < {m} of the source interface: large packets need fragmentation or are dropped (DF)", out.mtu),
            ),
            _ => {}
        }
        self.leave(ns, out, nexthop, pkt)
    }

    /// The packet leaves namespace `ns` by `out` towards `nexthop`.
    pub(super) fn leave(
        &mut self,
        ns: usize,
        out: Link,
        nexthop: IpAddr,
        pkt: &mut Pkt,
    ) -> Result<Step> {
        let label = self.w.label(ns);
        match out.kind {
            LinkKind::Vxlan => self.vxlan(ns, out, nexthop, pkt),
            LinkKind::IpIp => self.ipip(ns, out, nexthop, pkt),
            _ => {
                // Ethernet-like: the next hop's MAC comes from the neighbour table.
                let neigh = self.neighbour(ns, &out, nexthop)?;
                let mac = neigh.as_ref().filter(|n| neigh_ok(n)).and_then(|n| n.mac);
                match &neigh {
                    // A FAILED or INCOMPLETE entry is what an earlier
                    // attempt left: the kernel resolves again when the next
                    // packet goes out, so it is no break by itself. The
                    // path is followed by IP and the capture decides.
                    Some(n) if !neigh_ok(n) => {
                        self.detail(format!(
                            "neighbour {nexthop}: {} (left by an earlier attempt; resolved again by {} on the next packet)",
                            n.state.as_str().to_uppercase(),
                            if nexthop.is_ipv4() { "ARP" } else { "neighbour discovery" }
                        ));
                        self.find(
                            Severity::Warning,
                            "neigh_failed",
                            format!("neighbour {nexthop} on {} in {label} is {}: an earlier resolution failed; the kernel tries again with the next packet", out.name, n.state.as_str()),
                        );
                    }
                    Some(n) => self.detail(format!(
                        "neighbour {nexthop} lladdr {} {}",
                        n.mac.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
                        n.state.as_str().to_uppercase()
                    )),
                    None => self.detail(format!(
                        "neighbour {nexthop}: no entry yet (resolved by {} on the first packet)",
                        if nexthop.is_ipv4() {
                            "ARP"
                        } else {
                            "neighbour discovery"
                        }
                    )),
                }
                self.cross(ns, out, L2 { mac, ip: nexthop }, pkt)
            }
        }
    }

    pub(super) fn detail(&mut self, s: String) {
        if let Some(h) = self.hops.last_mut() {
            h.details.push(s);
        }
    }

    pub(super) fn neighbour(
        &mut self,
        ns: usize,
        dev: &Link,
        ip: IpAddr,
    ) -> Result<Option<NeighbourEntry>> {
        let fam = if ip.is_ipv4() { Family::V4 } else { Family::V6 };
        let all = self
            .w
            .h(ns)?
            .neighbours()
            .list(Some(&dev.name), Some(fam))?;
        Ok(all.into_iter().find(|n| n.ip == ip && n.index == dev.index))
    }

    /// Netfilter where `pkt` is forwarded from `iif` to `oif` in `ns`: a drop
    /// breaks the path here; rewrites are noted.
    fn firewall(&mut self, ns: usize, iif: &str, oif: &str, pkt: &Pkt) -> Option<Verdict> {
        if !self.fw.contains_key(&ns) {
            let rs = super::firewall::load(&self.w.nss[ns].ns);
            self.fw.insert(ns, rs);
        }
        let rs = self.fw.get(&ns)?.as_ref()?;
        let e = rs.forward(&super::firewall::Probe {
            iif: Some(iif),
            oif: Some(oif),
            src: pkt.src,
            dst: pkt.dst,
            proto: self.proto,
            dport: self.port,
        });
        let label = self.w.label(ns);
        for r in &e.rewrites {
            let code = if r.starts_with("dnat") {
                "dnat"
            } else {
                "snat"
            };
            self.find(
                Severity::Info,
                code,
                format!("{r} (in {label}, from {iif} to {oif})"),
            );
        }
        for m in &e.maybe_drop {
            self.find(
                Severity::Warning,
                "firewall_maybe_drop",
                format!("{m} in {label} may drop it: some of its matches are not evaluated here"),
            );
        }
        let why = e.drop?;
        Some(self.broken(
            ns,
            "firewall_drop",
            &format!("netfilter in {label} drops it when forwarding from {iif} to {oif}: {why}"),
        ))
    }
}
