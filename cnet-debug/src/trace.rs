//! The path to an IP, hop by hop, as the kernel would take it.
//!
//! Starting in the source namespace, every decision is asked of the kernel
//! that makes it (route lookups with `fibmatch`, neighbour and FDB tables,
//! link state, sysctls) and recorded as a [`Hop`] naming the object that
//! decided. Crossing a veth continues in the peer's namespace; a bridge port
//! is followed through the bridge's FDB; a vxlan or ipip device wraps the
//! packet and the outer packet is looked up again, until a namespace that
//! owns the destination delivers it, or the path breaks. What breaks paths
//! in practice is checked where it matters and reported as a [`Finding`].

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Instant;

use cnet_core::addr::Address;
use cnet_core::link::{Link, LinkDetails, LinkKind, MacAddr};
use cnet_core::neigh::{NeighState, NeighbourEntry};
use cnet_core::route::{Family, RouteFilter, RouteLookup, RouteQuery, RouteType};
use cnet_core::{Error, Handle, NetNs, Result};
use serde::Serialize;

use crate::probe::Proto;

/// Encapsulation overhead of VXLAN over IPv4 (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// Encapsulation overhead of IP-in-IP (outer IPv4 header).
pub const IPIP_OVERHEAD: u32 = 20;
const MAX_STEPS: usize = 64;

/// What to trace.
#[derive(Debug, Clone)]
pub struct Request {
    /// Source namespace.
    pub from: NetNs,
    /// Its label for reports.
    pub from_label: String,
    /// Destination.
    pub dst: IpAddr,
    /// Source address (default: the kernel's preferred source).
    pub src: Option<IpAddr>,
    /// Protocol of the probe (informational for the explanation).
    pub proto: Proto,
    /// Destination port (UDP/TCP).
    pub port: u16,
}

/// What kind of decision a hop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HopKind {
    /// A route lookup.
    Route,
    /// Leaving through a veth into its peer's namespace.
    Veth,
    /// Forwarded by a bridge (FDB lookup).
    Bridge,
    /// Wrapped by a vxlan device.
    VxlanEncap,
    /// Wrapped by an ipip device.
    IpipEncap,
    /// Unwrapped by a vxlan or ipip device.
    Decap,
    /// Delivered to a local address.
    Deliver,
    /// Leaves this machine.
    Exit,
}

/// An interface a hop's packet crosses (where capture looks).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Iface {
    /// Namespace label.
    pub netns: String,
    /// Interface name.
    pub ifname: String,
    /// No link-layer header (ipip).
    #[serde(skip)]
    pub l3: bool,
    /// Index into the trace's namespace list.
    #[serde(skip)]
    pub ns_idx: usize,
}

/// One decision along the path.
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    /// 1-based position.
    pub n: usize,
    /// Namespace where it happens.
    pub netns: String,
    /// Kind of decision.
    pub kind: HopKind,
    /// One line: the object that decided and what it said.
    pub summary: String,
    /// Indented detail lines.
    pub details: Vec<String>,
    /// Interface the packet leaves or enters by, if any (capture point).
    pub iface: Option<Iface>,
    /// The packet at this hop (`src > dst`, inner-most first for encap).
    pub packet: String,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Breaks the path here.
    Error,
    /// May break it or degrade it.
    Warning,
    /// Worth knowing.
    Info,
}

/// Something that breaks (or may break) the path, at the hop where it matters.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The hop it concerns.
    pub hop: usize,
    /// Severity.
    pub severity: Severity,
    /// Stable machine-readable code (`no_route`, `fdb_missing`, …).
    pub code: &'static str,
    /// What a person should know.
    pub message: String,
}

/// The outcome of the explanation.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The path works as far as the tables tell.
    pub ok: bool,
    /// `delivered`, `leaves_machine` or `broken`.
    pub outcome: &'static str,
    /// Namespace where it was delivered or broke.
    pub netns: String,
    /// The hop where it ended.
    pub hop: usize,
    /// One line for a person.
    pub message: String,
}

/// A whole explained path.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// Destination.
    pub dst: IpAddr,
    /// Source address used.
    pub src: Option<IpAddr>,
    /// Source namespace label.
    pub from: String,
    /// Hops in order.
    pub hops: Vec<Hop>,
    /// Findings in hop order.
    pub findings: Vec<Finding>,
    /// Verdict.
    pub verdict: Verdict,
    /// Time spent explaining, in microseconds.
    pub elapsed_us: u128,
    /// The namespaces, for capture (not serialised).
    #[serde(skip)]
    pub namespaces: Vec<NetNs>,
}

struct NsCtx {
    label: String,
    ns: NetNs,
    inode: u64,
    h: Option<Handle>,
    links: Option<Vec<Link>>,
    addrs: Option<Vec<Address>>,
}

/// The namespaces this machine has (named ones and the current one), with
/// lazily opened handles and cached link/address tables.
struct World {
    nss: Vec<NsCtx>,
    /// (from, to) → the id `from` uses for `to`.
    nsids: HashMap<(usize, usize), Option<i32>>,
}

impl World {
    fn discover(from: &NetNs, from_label: &str) -> Result<World> {
        let mut nss = Vec::new();
        let mut seen = HashSet::new();
        let mut push = |label: String, ns: NetNs| -> Result<()> {
            let inode = ns.inode()?;
            if seen.insert(inode) {
                nss.push(NsCtx {
                    label,
                    ns,
                    inode,
                    h: None,
                    links: None,
                    addrs: None,
                });
            }
            Ok(())
        };
        push(from_label.to_string(), from.clone())?;
        for n in NetNs::list()? {
            // Checked without blocking: a FIFO or a stray file there is skipped.
            if let Ok(ns) = crate::nsfile::open_name(&n) {
                push(n, ns)?;
            }
        }
        if let Ok(cur) = NetNs::current() {
            push("(root)".to_string(), cur)?;
        }
        Ok(World {
            nss,
            nsids: HashMap::new(),
        })
    }

    fn h(&mut self, i: usize) -> Result<&Handle> {
        if self.nss[i].h.is_none() {
            self.nss[i].h = Some(Handle::at(&self.nss[i].ns)?);
        }
        Ok(self.nss[i].h.as_ref().expect("just set"))
    }

    fn links(&mut self, i: usize) -> Result<&Vec<Link>> {
        if self.nss[i].links.is_none() {
            let l = self.h(i)?.links().list()?;
            self.nss[i].links = Some(l);
        }
        Ok(self.nss[i].links.as_ref().expect("just set"))
    }

    fn addrs(&mut self, i: usize) -> Result<&Vec<Address>> {
        if self.nss[i].addrs.is_none() {
            let a = self.h(i)?.addrs().list(None)?;
            self.nss[i].addrs = Some(a);
        }
        Ok(self.nss[i].addrs.as_ref().expect("just set"))
    }

    fn link_by_index(&mut self, i: usize, idx: u32) -> Result<Option<Link>> {
        Ok(self.links(i)?.iter().find(|l| l.index == idx).cloned())
    }

    fn link_by_name(&mut self, i: usize, name: &str) -> Result<Option<Link>> {
        Ok(self.links(i)?.iter().find(|l| l.name == name).cloned())
    }

    fn label(&self, i: usize) -> String {
        self.nss[i].label.clone()
    }

    /// The namespace and link at the other end of veth `l` in namespace `i`:
    /// `IFLA_LINK_NETNSID` names the peer's namespace by an id local to `i`,
    /// resolved by asking the kernel for each candidate's id.
    fn veth_peer(&mut self, i: usize, l: &Link) -> Result<Option<(usize, Link)>> {
        let Some(peer_idx) = l.link else {
            return Ok(None);
        };
        let candidates: Vec<usize> = match l.link_netnsid {
            None => vec![i],
            Some(id) => {
                let mut c = Vec::new();
                for j in (0..self.nss.len()).filter(|j| *j != i) {
                    let key = (i, j);
                    let got = match self.nsids.get(&key) {
                        Some(v) => *v,
                        None => {
                            let other = self.nss[j].ns.clone();
                            let v = self.h(i)?.nsid_of(&other).unwrap_or(None);
                            self.nsids.insert(key, v);
                            v
                        }
                    };
                    if got == Some(id) {
                        c.push(j);
                    }
                }
                c
            }
        };
        for j in candidates {
            if let Some(p) = self.link_by_index(j, peer_idx)? {
                if p.kind == LinkKind::Veth && p.link == Some(l.index) {
                    return Ok(Some((j, p)));
                }
            }
        }
        Ok(None)
    }

    fn sysctl(&mut self, i: usize, path: &[&str]) -> Option<String> {
        self.h(i).ok()?.sysctl().get_path(path).ok()
    }
}

/// A packet being followed: addresses, and what it is wrapped in.
#[derive(Debug, Clone)]
struct Pkt {
    src: Option<IpAddr>,
    dst: IpAddr,
    /// Inner packets, innermost first (empty when not encapsulated).
    inner: Vec<(Option<IpAddr>, IpAddr, Encap)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encap {
    Vxlan { vni: u32, port: u16 },
    Ipip,
}

impl Pkt {
    fn describe(&self) -> String {
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
struct L2 {
    mac: Option<MacAddr>,
    ip: IpAddr,
}

struct Tracer {
    w: World,
    hops: Vec<Hop>,
    findings: Vec<Finding>,
    first_mtu: Option<u32>,
}

enum Step {
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

/// Explain the path to `req.dst`. No packets are sent.
pub fn explain(req: &Request) -> Result<Trace> {
    let t0 = Instant::now();
    let w = World::discover(&req.from, &req.from_label)?;
    let mut t = Tracer {
        w,
        hops: Vec::new(),
        findings: Vec::new(),
        first_mtu: None,
    };
    let mut pkt = Pkt {
        src: req.src,
        dst: req.dst,
        inner: Vec::new(),
    };
    let mut step = Step::Route { ns: 0, iif: None };
    let mut visited = HashSet::new();
    let verdict = loop {
        if t.hops.len() > MAX_STEPS {
            break t.broken(
                0,
                "loop",
                "the path does not end within 64 hops (a routing loop?)",
            );
        }
        step = match step {
            Step::Done(v) => break v,
            Step::Route { ns, iif } => {
                let key = (t.w.nss[ns].inode, pkt.dst, iif.clone(), pkt.inner.len());
                if !visited.insert(key) {
                    break t.broken(
                        ns,
                        "loop",
                        &format!("routing loop: {} seen twice in {}", pkt.dst, t.w.label(ns)),
                    );
                }
                t.route(ns, iif, &mut pkt)?
            }
            Step::Arrive { ns, dev, l2 } => t.arrive(ns, dev, l2, &pkt)?,
        };
    };
    let src = first_src(&t.hops).or(req.src);
    Ok(Trace {
        dst: req.dst,
        src,
        from: req.from_label.clone(),
        hops: t.hops,
        findings: t.findings,
        verdict,
        elapsed_us: t0.elapsed().as_micros(),
        namespaces: t.w.nss.iter().map(|n| n.ns.clone()).collect(),
    })
}

fn first_src(hops: &[Hop]) -> Option<IpAddr> {
    hops.first()
        .and_then(|h| h.packet.split(" > ").next())
        .and_then(|s| s.parse().ok())
}

fn neigh_ok(n: &NeighbourEntry) -> bool {
    !matches!(
        n.state,
        NeighState::Failed | NeighState::Incomplete | NeighState::None
    )
}

impl Tracer {
    fn hop(
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

    fn find(&mut self, severity: Severity, code: &'static str, message: String) {
        let hop = self.hops.len().max(1);
        self.findings.push(Finding {
            hop,
            severity,
            code,
            message,
        });
    }

    fn broken(&mut self, ns: usize, code: &'static str, message: &str) -> Verdict {
        self.find(Severity::Error, code, message.to_string());
        Verdict {
            ok: false,
            outcome: "broken",
            netns: self.w.label(ns),
            hop: self.hops.len(),
            message: format!("broken at hop {}: {message}", self.hops.len()),
        }
    }

    fn ifname(&mut self, ns: usize, idx: Option<u32>) -> String {
        idx.and_then(|i| self.w.link_by_index(ns, i).ok().flatten())
            .map(|l| l.name)
            .unwrap_or_else(|| "?".into())
    }

    fn rp_filter(&mut self, ns: usize, dev: &str) -> u8 {
        let all = self
            .w
            .sysctl(ns, &["net", "ipv4", "conf", "all", "rp_filter"]);
        let d = self
            .w
            .sysctl(ns, &["net", "ipv4", "conf", dev, "rp_filter"]);
        let p = |s: Option<String>| s.and_then(|v| v.parse::<u8>().ok()).unwrap_or(0);
        p(all).max(p(d))
    }

    fn is_local(&mut self, ns: usize, ip: IpAddr) -> Result<bool> {
        Ok(self.w.addrs(ns)?.iter().any(|a| a.local.addr() == ip) || ip.is_loopback())
    }

    /// The route of a failing lookup, found by longest-prefix match in a dump.
    fn failing_route(&mut self, ns: usize, dst: IpAddr) -> Option<String> {
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

    fn route(&mut self, ns: usize, iif: Option<String>, pkt: &mut Pkt) -> Result<Step> {
        let label = self.w.label(ns);
        let local = self.is_local(ns, pkt.dst)?;
        // Forwarding and reverse-path checks come before the lookup: the
        // kernel's answers for them are ambiguous errnos.
        if let Some(dev) = &iif {
            if !local && pkt.dst.is_ipv4() {
                let fwd = self
                    .w
                    .sysctl(ns, &["net", "ipv4", "ip_forward"])
                    .unwrap_or_default();
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
                        &format!("net.ipv4.ip_forward=0 in {label}: packets arriving on {dev} are not forwarded"),
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
                s + &format!(" (table {}, proto {})", m.table, m.protocol)
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
    fn leave(&mut self, ns: usize, out: Link, nexthop: IpAddr, pkt: &mut Pkt) -> Result<Step> {
        let label = self.w.label(ns);
        match out.kind {
            LinkKind::Vxlan => self.vxlan(ns, out, nexthop, pkt),
            LinkKind::IpIp => self.ipip(ns, out, nexthop, pkt),
            _ => {
                // Ethernet-like: the next hop's MAC comes from the neighbour table.
                let neigh = self.neighbour(ns, &out, nexthop)?;
                let mac = neigh.as_ref().and_then(|n| n.mac);
                match &neigh {
                    Some(n) if !neigh_ok(n) => {
                        return Ok(Step::Done(self.broken(
                            ns,
                            "neigh_failed",
                            &format!("neighbour {nexthop} on {} in {label} is {}: the next hop does not answer ARP", out.name, n.state.as_str()),
                        )))
                    }
                    Some(n) => self.detail(format!(
                        "neighbour {nexthop} lladdr {} {}",
                        n.mac.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
                        n.state.as_str().to_uppercase()
                    )),
                    None => self.detail(format!("neighbour {nexthop}: no entry yet (resolved by ARP on first packet)")),
                }
                self.cross(ns, out, L2 { mac, ip: nexthop }, pkt)
            }
        }
    }

    fn detail(&mut self, s: String) {
        if let Some(h) = self.hops.last_mut() {
            h.details.push(s);
        }
    }

    fn neighbour(&mut self, ns: usize, dev: &Link, ip: IpAddr) -> Result<Option<NeighbourEntry>> {
        let fam = if ip.is_ipv4() { Family::V4 } else { Family::V6 };
        let all = self
            .w
            .h(ns)?
            .neighbours()
            .list(Some(&dev.name), Some(fam))?;
        Ok(all.into_iter().find(|n| n.ip == ip && n.index == dev.index))
    }

    /// Cross device `out` of namespace `ns` (a veth, a bridge, or the edge of the machine).
    fn cross(&mut self, ns: usize, out: Link, l2: L2, pkt: &Pkt) -> Result<Step> {
        let label = self.w.label(ns);
        match out.kind {
            LinkKind::Bridge => self.bridge_forward(ns, &out, l2, pkt, None),
            LinkKind::Veth => {
                let Some((pns, peer)) = self.w.veth_peer(ns, &out)? else {
                    self.hop(
                        ns,
                        HopKind::Exit,
                        format!("veth {} has no visible peer", out.name),
                        vec![],
                        Some((&out, ns)),
                        pkt,
                    );
                    return Ok(Step::Done(self.broken(
                        ns,
                        "veth_peer_missing",
                        &format!(
                            "the peer of {} in {label} is in no namespace this machine names",
                            out.name
                        ),
                    )));
                };
                let plabel = self.w.label(pns);
                self.hop(
                    ns,
                    HopKind::Veth,
                    format!("veth {} → {} in {plabel}", out.name, peer.name),
                    vec![format!(
                        "peer index {} (link-netnsid {:?})",
                        peer.index, out.link_netnsid
                    )],
                    Some((&peer, pns)),
                    pkt,
                );
                if !peer.is_up() {
                    return Ok(Step::Done(self.broken(
                        pns,
                        "peer_down",
                        &format!("veth peer {} in {plabel} is down", peer.name),
                    )));
                }
                Ok(Step::Arrive {
                    ns: pns,
                    dev: peer,
                    l2,
                })
            }
            _ => {
                let n = self.hop(
                    ns,
                    HopKind::Exit,
                    format!(
                        "leaves this machine by {} ({})",
                        out.name,
                        if out.kind.as_str().is_empty() {
                            "device"
                        } else {
                            out.kind.as_str()
                        }
                    ),
                    vec![],
                    Some((&out, ns)),
                    pkt,
                );
                Ok(Step::Done(Verdict {
                    ok: true,
                    outcome: "leaves_machine",
                    netns: label.clone(),
                    hop: n,
                    message: format!("the path leaves this machine by {} in {label}", out.name),
                }))
            }
        }
    }

    /// A frame enters namespace `ns` on `dev`.
    fn arrive(&mut self, ns: usize, dev: Link, l2: L2, pkt: &Pkt) -> Result<Step> {
        if let Some(m) = dev.master {
            if let Some(br) = self.w.link_by_index(ns, m)? {
                if br.kind == LinkKind::Bridge {
                    // Frames for the bridge's own MAC (or, before ARP, for
                    // an address it holds) go up to its IP stack.
                    let ours = match l2.mac {
                        Some(mac) => Some(mac) == br.mac,
                        None => self.holds(ns, br.index, l2.ip)?,
                    };
                    if ours {
                        return Ok(Step::Route {
                            ns,
                            iif: Some(br.name),
                        });
                    }
                    return self.bridge_forward(ns, &br, l2, pkt, Some(dev.index));
                }
            }
        }
        Ok(Step::Route {
            ns,
            iif: Some(dev.name),
        })
    }

    /// Whether device `index` of namespace `ns` holds address `ip`.
    fn holds(&mut self, ns: usize, index: u32, ip: IpAddr) -> Result<bool> {
        Ok(self
            .w
            .addrs(ns)?
            .iter()
            .any(|a| a.index == index && a.local.addr() == ip))
    }

    /// Whether the far end of bridge port `port` (namespace `ns`) is where a
    /// frame for `l2` belongs: the device with that MAC (or, before ARP,
    /// holding that IP), possibly behind another bridge.
    fn leads_to(&mut self, ns: usize, port: &Link, l2: &L2, depth: usize) -> Result<bool> {
        if port.kind != LinkKind::Veth || depth > 4 {
            return Ok(false);
        }
        let Some((fns, far)) = self.w.veth_peer(ns, port)? else {
            return Ok(false);
        };
        let owns = |t: &mut Self, dev: &Link| -> Result<bool> {
            Ok(match l2.mac {
                Some(m) => dev.mac == Some(m),
                None => t.holds(fns, dev.index, l2.ip)?,
            })
        };
        if owns(self, &far)? {
            return Ok(true);
        }
        let Some(master) = far.master else {
            return Ok(false);
        };
        let Some(br) = self.w.link_by_index(fns, master)? else {
            return Ok(false);
        };
        if owns(self, &br)? {
            return Ok(true);
        }
        let others: Vec<Link> = self
            .w
            .links(fns)?
            .iter()
            .filter(|p| p.master == Some(master) && p.index != far.index)
            .cloned()
            .collect();
        for p in others {
            if self.leads_to(fns, &p, l2, depth + 1)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Bridge `br` forwards a frame for `l2` (from port `in_port`, or sent by the bridge itself).
    fn bridge_forward(
        &mut self,
        ns: usize,
        br: &Link,
        l2: L2,
        pkt: &Pkt,
        in_port: Option<u32>,
    ) -> Result<Step> {
        let label = self.w.label(ns);
        let ports: Vec<Link> = self
            .w
            .links(ns)?
            .iter()
            .filter(|l| l.master == Some(br.index) && Some(l.index) != in_port)
            .cloned()
            .collect();
        let mut learnt = None;
        if let Some(mac) = l2.mac {
            let entries = self.w.h(ns)?.fdb().list_bridge(&br.name)?;
            learnt = entries.into_iter().find_map(|e| {
                let port = ports.iter().find(|p| p.index == e.index)?;
                (e.mac == mac).then(|| (port.clone(), e.state))
            });
        }
        let target = match l2.mac {
            Some(m) => m.to_string(),
            None => format!("the owner of {}", l2.ip),
        };
        let (port, how) = match learnt {
            Some((p, state)) => (
                Some(p),
                format!("fdb {target} → port (state {})", state.as_str()),
            ),
            None => {
                // Flooded: the port whose far end is the destination is where it goes.
                let mut found = None;
                for p in &ports {
                    if self.leads_to(ns, p, &l2, 0)? {
                        found = Some(p.clone());
                        break;
                    }
                }
                let why = match l2.mac {
                    Some(_) => format!("{target} not in the FDB: flooded to all ports"),
                    None => format!(
                        "MAC of {} not resolved yet: ARP is flooded to all ports",
                        l2.ip
                    ),
                };
                (found, why)
            }
        };
        let Some(port) = port else {
            self.hop(
                ns,
                HopKind::Bridge,
                format!("bridge {}: no port leads to {target}", br.name),
                vec![how],
                None,
                pkt,
            );
            return Ok(Step::Done(self.broken(
                ns,
                "bridge_no_port",
                &format!("no port of bridge {} in {label} leads to {target}", br.name),
            )));
        };
        self.hop(
            ns,
            HopKind::Bridge,
            format!("bridge {} → port {}", br.name, port.name),
            vec![how],
            Some((&port, ns)),
            pkt,
        );
        if !port.is_up() {
            return Ok(Step::Done(self.broken(
                ns,
                "link_down",
                &format!("bridge port {} in {label} is down", port.name),
            )));
        }
        self.cross(ns, port, l2, pkt)
    }

    fn vxlan(&mut self, ns: usize, out: Link, nexthop: IpAddr, pkt: &mut Pkt) -> Result<Step> {
        let label = self.w.label(ns);
        let LinkDetails::Vxlan(v) = out.details.clone() else {
            return Err(Error::Protocol {
                context: format!("vxlan {}", out.name),
                reason: "no vxlan parameters".into(),
            });
        };
        let neigh = self.neighbour(ns, &out, nexthop)?;
        let mac = match &neigh {
            Some(n) if neigh_ok(n) && n.mac.is_some() => {
                self.detail(format!(
                    "neighbour {nexthop} lladdr {} {}",
                    n.mac.map(|m| m.to_string()).unwrap_or_default(),
                    n.state.as_str().to_uppercase()
                ));
                n.mac
            }
            Some(n) => {
                return Ok(Step::Done(self.broken(
                    ns,
                    "neigh_failed",
                    &format!(
                        "neighbour {nexthop} on {} in {label} is {}",
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
        let fdb = self.w.h(ns)?.fdb().list(&out.name)?;
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

    fn ipip(&mut self, ns: usize, out: Link, nexthop: IpAddr, pkt: &mut Pkt) -> Result<Step> {
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

    fn check_encap_mtu(
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

    fn decap(
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

/// Per-hop capture result.
#[derive(Debug, Clone, Serialize)]
pub struct HopCapture {
    /// Hop number.
    pub hop: usize,
    /// Namespace.
    pub netns: String,
    /// Interface.
    pub ifname: String,
    /// The probe was seen there.
    pub seen: bool,
    /// The reply was seen there.
    pub reply_seen: bool,
    /// Decoded layers of the first probe frame seen.
    pub frame: Vec<crate::wire::Layer>,
}

/// The proof: capture on every interface of the path while a probe is sent.
#[derive(Debug, Clone, Serialize)]
pub struct Proof {
    /// One entry per hop with an interface.
    pub hops: Vec<HopCapture>,
    /// A reply reached the source.
    pub replied: bool,
    /// Round trip in microseconds.
    pub rtt_us: Option<u128>,
    /// Last hop where the probe was seen.
    pub last_seen_hop: Option<usize>,
    /// Time spent, in microseconds.
    pub elapsed_us: u128,
    /// The source refused to send the probe (its kernel's words).
    pub send_error: Option<String>,
}

impl Proof {
    /// The probe was seen on the last interface of the path.
    pub fn reached_end(&self) -> bool {
        self.hops.last().is_some_and(|h| h.seen)
    }
}

/// Send a probe along an explained path and watch every interface on it.
pub fn prove(req: &Request, t: &Trace, timeout: std::time::Duration) -> Result<Proof> {
    let t0 = Instant::now();
    let mut targets = Vec::new();
    let mut by_hop = Vec::new();
    let mut seen_ifaces: HashMap<(usize, String), usize> = HashMap::new();
    for h in &t.hops {
        if let Some(i) = &h.iface {
            let key = (i.ns_idx, i.ifname.clone());
            let ti = *seen_ifaces.entry(key).or_insert_with(|| {
                targets.push(crate::capture::Target {
                    ns: t.namespaces[i.ns_idx].clone(),
                    ns_label: i.netns.clone(),
                    ifname: i.ifname.clone(),
                    l3: i.l3,
                });
                targets.len() - 1
            });
            by_hop.push((h.n, ti, i.clone()));
        }
    }
    let token = crate::probe::token();
    let dst = match req.dst {
        IpAddr::V4(d) => d,
        IpAddr::V6(_) => return Err(Error::invalid("probe", "IPv6 probes are not supported yet")),
    };
    let src = match t.src {
        Some(IpAddr::V4(s)) => Some(s),
        _ => None,
    };
    let cap = crate::capture::Capture::start(
        &targets,
        &token,
        timeout + std::time::Duration::from_millis(200),
    )?;
    let outcome = crate::probe::send(&req.from, src, dst, req.proto, req.port, &token, timeout);
    if req.proto != Proto::Icmp {
        std::thread::sleep(std::time::Duration::from_millis(100));
    } else {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let sightings = cap.finish();
    let outcome = outcome?;
    let mut hops = Vec::new();
    let mut last_seen_hop = None;
    for (n, ti, iface) in by_hop {
        let mine: Vec<&crate::capture::Sighting> =
            sightings.iter().filter(|s| s.target == ti).collect();
        let is_reply = |s: &&crate::capture::Sighting| {
            s.frame
                .layers
                .iter()
                .any(|l| matches!(l, crate::wire::Layer::Icmp { icmp_type: 0, .. }))
        };
        let request: Vec<&&crate::capture::Sighting> =
            mine.iter().filter(|s| !is_reply(s)).collect();
        let seen = !request.is_empty();
        if seen {
            last_seen_hop = Some(n);
        }
        hops.push(HopCapture {
            hop: n,
            netns: iface.netns,
            ifname: iface.ifname,
            seen,
            reply_seen: mine.iter().any(is_reply),
            frame: request
                .first()
                .map(|s| s.frame.layers.clone())
                .unwrap_or_default(),
        });
    }
    Ok(Proof {
        hops,
        replied: outcome.replied,
        rtt_us: outcome.rtt.map(|d| d.as_micros()),
        last_seen_hop,
        elapsed_us: t0.elapsed().as_micros(),
        send_error: outcome.send_error,
    })
}
