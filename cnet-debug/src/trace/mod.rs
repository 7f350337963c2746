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
//! IPv4 and IPv6 destinations take the same way (IPv6: the forwarding
//! sysctl is `net.ipv6.conf.all.forwarding`, neighbours are found by
//! neighbour discovery, the probe is an ICMPv6 echo, and no rp_filter).
//!
//! Files, by concern:
//! - `world.rs`: which namespaces exist and how to reach them (handles,
//!   cached tables, veth peers by netnsid);
//! - `path.rs`: routing in one namespace (lookup, forwarding, rp_filter,
//!   neighbour) and leaving by a device;
//! - `bridge.rs`: veth crossings, bridge ports and the bridge's decision;
//! - `encap.rs`: vxlan/ipip wrapping and unwrapping;
//! - `prove.rs`: the capture that proves (or disproves) the path.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Instant;

use cnet_core::{NetNs, Result};
use serde::Serialize;

use crate::probe::Proto;

mod bridge;
mod encap;
mod firewall;
mod path;
mod prove;
mod world;

use path::{Pkt, Step, Tracer};
pub use prove::{conclude, prove, run, HopCapture, Proof};
use world::World;

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
    /// The path works: what the tables say, overruled by the capture when
    /// one ran (see [`conclude`]). The exit code follows this.
    pub ok: bool,
    /// What the tables alone said.
    pub model_ok: bool,
    /// How the capture relates to the model, when one ran: `confirmed`,
    /// `vanished` (the model found no reason, the probe was lost),
    /// `no_reply` (the probe reached the end, nothing came back) or
    /// `contradicted` (the model predicted a break, the reply came back).
    pub agreement: Option<&'static str>,
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

/// Explain the path to `req.dst`. No packets are sent.
pub fn explain(req: &Request) -> Result<Trace> {
    let t0 = Instant::now();
    let w = World::discover(&req.from, &req.from_label)?;
    let mut t = Tracer {
        w,
        hops: Vec::new(),
        findings: Vec::new(),
        first_mtu: None,
        fw: std::collections::HashMap::new(),
        proto: req.proto,
        port: req.port,
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
