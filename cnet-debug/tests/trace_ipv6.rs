//! `cnet-debug trace` to IPv6 destinations on dual-stack variants of the
//! test topologies: the same namespaces and devices with `ip -6` addresses
//! beside the IPv4 ones (ULA prefixes, fd00:10:244:H::/64 per host).
//! Route lookups, neighbour discovery instead of ARP, ICMPv6 echo probes in
//! capture, and the same findings as for IPv4, one fault at a time.
//!
//! ```text
//!   {host}: docker0 10.244.1.1/24 fd00:10:244:1::1/64
//!             ├─ vethweb ─ {web} eth0 .2 / ::2
//!             └─ vethdb  ─ {db}  eth0 .3 / ::3
//!           eth0 fd00:203:0:113::1/64 ── {ext} eth0 fd00:203:0:113::2/64
//! ```

mod cluster;

use std::time::Duration;

use cluster::cases::case;
use cluster::cases::case_with;
use cluster::{privileged, Cluster, Plain};
use cnet_core::NetNs;
use cnet_debug::probe::Proto;
use cnet_debug::trace::{explain, prove, HopKind, Proof, Request, Trace};
use cnet_debug::wire::Layer;

fn text(t: &Trace, p: Option<&Proof>) -> String {
    let mut v = Vec::new();
    cnet_debug::report::human(t, p, &mut v).unwrap();
    String::from_utf8(v).unwrap()
}

fn trace_and_prove(ns: &str, dst: &str) -> (Trace, Proof) {
    let r = Request {
        from: NetNs::open(ns).unwrap(),
        from_label: ns.to_string(),
        dst: dst.parse().unwrap(),
        src: None,
        proto: Proto::Icmp,
        port: 33434,
    };
    let t = explain(&r).unwrap();
    let p = prove(&r, &t, Duration::from_millis(800)).unwrap();
    eprintln!("{}", text(&t, Some(&p)));
    (t, p)
}

/// Every interface of the path saw the probe and the ICMPv6 reply came back.
fn assert_proven(t: &Trace, p: &Proof) {
    assert!(t.verdict.ok, "{}", text(t, Some(p)));
    assert!(p.replied, "no reply:\n{}", text(t, Some(p)));
    for c in &p.hops {
        assert!(
            c.seen,
            "hop {} ({} in {}) did not see the probe:\n{}",
            c.hop,
            c.ifname,
            c.netns,
            text(t, Some(p))
        );
        assert!(
            c.frame
                .iter()
                .any(|l| matches!(l, Layer::Icmpv6 { icmp_type: 128, .. })),
            "hop {}: {:?}",
            c.hop,
            c.frame
        );
    }
}

#[test]
fn dual_stack_cluster_same_host_host_gw_and_vxlan() {
    if !privileged() {
        return;
    }
    let c = Cluster::build("v6c");
    c.dual_stack();

    // Same host: container → bridge → container; the gateway's MAC is not
    // known yet, so the first hop says neighbour discovery will find it.
    let (t, p) = trace_and_prove(&c.ns("c1a"), "fd00:10:244:1::3");
    assert_eq!(t.verdict.netns, c.ns("c1b"));
    assert_eq!(
        t.hops.iter().map(|h| h.kind).collect::<Vec<_>>(),
        vec![
            HopKind::Route,
            HopKind::Veth,
            HopKind::Bridge,
            HopKind::Veth,
            HopKind::Deliver
        ]
    );
    assert_eq!(t.src, Some("fd00:10:244:1::2".parse().unwrap()));
    assert!(
        t.hops[0]
            .details
            .iter()
            .any(|d| d.contains("neighbour discovery")),
        "{}",
        text(&t, None)
    );
    assert_proven(&t, &p);

    // host-gw: routed by h1 to h2's underlay address.
    let (t, p) = trace_and_prove(&c.ns("c1a"), "fd00:10:244:2::2");
    assert_eq!(t.verdict.netns, c.ns("c2"));
    assert!(
        t.hops
            .iter()
            .any(|h| h.summary == "route to fd00:10:244:2::2 via fd00:192:0:2::12 dev eth0"),
        "{}",
        text(&t, None)
    );
    assert_proven(&t, &p);

    // vxlan: IPv6 inside, IPv4 outside; unwrapped on h3.
    let (t, p) = trace_and_prove(&c.ns("c1a"), "fd00:10:244:3::2");
    assert_eq!(t.verdict.netns, c.ns("c3"));
    let enc = t
        .hops
        .iter()
        .find(|h| h.kind == HopKind::VxlanEncap)
        .expect("encap hop");
    assert_eq!(
        enc.summary,
        "vxlan flannel.1 vni 1 → VTEP 192.0.2.13 udp/8472"
    );
    assert!(t
        .hops
        .iter()
        .any(|h| h.kind == HopKind::Decap && h.netns == c.ns("h3")));
    assert_proven(&t, &p);
    let outer = p
        .hops
        .iter()
        .find(|h| h.netns == c.ns("ul"))
        .expect("capture on the underlay");
    assert!(
        outer.frame.contains(&Layer::Vxlan { vni: 1 }),
        "{:?}",
        outer.frame
    );
    assert!(
        outer
            .frame
            .iter()
            .any(|l| matches!(l, Layer::Ipv6 { dst, .. } if dst.to_string() == "fd00:10:244:3::2")),
        "{:?}",
        outer.frame
    );
    eprintln!(
        "vxlan IPv6 trace: explain {} µs, with capture {} µs",
        t.elapsed_us, p.elapsed_us
    );

    // IPv4 on the same devices is untouched.
    let (t, p) = trace_and_prove(&c.ns("c1a"), "10.244.3.2");
    assert!(t.verdict.ok && p.replied, "{}", text(&t, Some(&p)));
}

fn docker_shaped_dual_stack(tag: &str) -> Plain {
    let t = Plain::new(tag, &["host", "web", "db", "ext"]);
    t.sh(&[
        "ip -n {host} link add docker0 type bridge",
        "ip -n {host} addr add 10.244.1.1/24 dev docker0",
        "ip -n {host} addr add fd00:10:244:1::1/64 dev docker0 nodad",
        "ip -n {host} link set docker0 up",
        "ip -n {host} link add vethweb type veth peer name eth0 netns {web}",
        "ip -n {host} link add vethdb type veth peer name eth0 netns {db}",
        "ip -n {host} link set vethweb master docker0 up",
        "ip -n {host} link set vethdb master docker0 up",
        "ip -n {web} addr add 10.244.1.2/24 dev eth0",
        "ip -n {db} addr add 10.244.1.3/24 dev eth0",
        "ip -n {web} addr add fd00:10:244:1::2/64 dev eth0 nodad",
        "ip -n {db} addr add fd00:10:244:1::3/64 dev eth0 nodad",
        "ip -n {web} link set eth0 up",
        "ip -n {db} link set eth0 up",
        "ip -n {web} route add default via 10.244.1.1",
        "ip -n {db} route add default via 10.244.1.1",
        "ip -n {web} -6 route add default via fd00:10:244:1::1",
        "ip -n {db} -6 route add default via fd00:10:244:1::1",
        "ip -n {host} link add eth0 type veth peer name eth0 netns {ext}",
        "ip -n {host} addr add fd00:203:0:113::1/64 dev eth0 nodad",
        "ip -n {host} link set eth0 up",
        "ip -n {ext} addr add fd00:203:0:113::2/64 dev eth0 nodad",
        "ip -n {ext} link set eth0 up",
        "ip -n {ext} -6 route add fd00:10:244:1::/64 via fd00:203:0:113::1",
        "ip netns exec {host} sysctl -qw net.ipv6.conf.all.forwarding=1",
    ]);
    t
}

#[test]
fn dual_stack_docker_shaped_faults_one_at_a_time() {
    if !privileged() {
        return;
    }
    let t = docker_shaped_dual_stack("v6f");
    let (web, host) = (t.ns("web"), t.ns("host"));
    let (db6, ext6) = ("fd00:10:244:1::3", "fd00:203:0:113::2");

    let c = case("v6 healthy", &web, db6);
    assert_eq!(c.codes, (0, 0), "{c:?}");
    assert_eq!(c.verdict["agreement"], "confirmed", "{c:?}");
    let c = case("v6 healthy, routed", &web, ext6);
    assert_eq!(c.codes, (0, 0), "{c:?}");
    assert_eq!(c.verdict["agreement"], "confirmed", "{c:?}");

    t.sh(&["ip -n {host} link set docker0 down"]);
    let c = case("v6 bridge down", &web, db6);
    assert_eq!(c.codes, (1, 1), "{c:?}");
    assert!(
        c.hop_ns.contains(&("bridge_down".into(), host.clone())),
        "{c:?}"
    );
    assert_eq!(c.verdict["agreement"], "confirmed", "{c:?}");
    t.sh(&["ip -n {host} link set docker0 up"]);

    t.sh(&["ip -n {host} link set vethdb down"]);
    let c = case("v6 port down", &web, db6);
    assert_eq!(c.codes, (1, 1), "{c:?}");
    assert!(
        c.hop_ns.contains(&("link_down".into(), host.clone())),
        "{c:?}"
    );
    t.sh(&["ip -n {host} link set vethdb up"]);

    // A FAILED entry from an earlier attempt: a warning; neighbour
    // discovery runs again and the capture sees the reply.
    let stale = || t.sh(&["ip -n {web} neigh replace fd00:10:244:1::3 dev eth0 nud failed"]);
    let c = case_with("v6 stale neighbour, repaired", &web, db6, &stale);
    assert_eq!(c.codes, (0, 0), "{c:?}");
    assert!(c.findings.0.contains(&"neigh_failed".into()), "{c:?}");
    assert_eq!(c.verdict["agreement"], "confirmed", "{c:?}");

    // IPv6 forwarding off on the host.
    t.sh(&["ip netns exec {host} sysctl -qw net.ipv6.conf.all.forwarding=0"]);
    let c = case("v6 forwarding off", &web, ext6);
    assert_eq!(c.codes, (1, 1), "{c:?}");
    assert!(
        c.hop_ns.contains(&("ip_forward_off".into(), host.clone())),
        "{c:?}"
    );
    t.sh(&["ip netns exec {host} sysctl -qw net.ipv6.conf.all.forwarding=1"]);

    // ip6tables-nft FORWARD policy DROP (Docker's, for IPv6).
    t.sh(&["ip netns exec {host} ip6tables-nft -P FORWARD DROP"]);
    let c = case("v6 forward policy drop", &web, ext6);
    assert_eq!(c.codes, (1, 1), "{c:?}");
    assert!(
        c.hop_ns.contains(&("firewall_drop".into(), host.clone())),
        "{c:?}"
    );
    assert_eq!(c.verdict["agreement"], "confirmed", "{c:?}");
    t.sh(&["ip netns exec {host} ip6tables-nft -P FORWARD ACCEPT"]);

    // A drop the tables do not show: a bridge-family rule that lets
    // neighbour discovery through and nothing else of IPv6.
    t.sh(&[
        "ip netns exec {host} nft add table bridge cnt",
        "ip netns exec {host} nft add chain bridge cnt fw { type filter hook forward priority 0 ; policy drop ; }",
        "ip netns exec {host} nft add rule bridge cnt fw icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept",
    ]);
    let c = case("v6 unseen drop", &web, db6);
    assert_eq!(c.codes.1, 1, "{c:?}");
    assert_eq!(c.verdict["model_ok"], true, "{c:?}");
    assert_eq!(c.verdict["agreement"], "vanished", "{c:?}");
    assert!(
        c.hop_ns.contains(&("vanished".into(), host.clone())),
        "{c:?}"
    );
    t.sh(&["ip netns exec {host} nft delete table bridge cnt"]);

    t.sh(&["ip -n {web} -6 route add blackhole fd00:10:244:1::3/128"]);
    let c = case("v6 blackhole", &web, db6);
    assert_eq!(c.codes, (1, 1), "{c:?}");
    assert!(
        c.hop_ns.contains(&("blackhole".into(), web.clone())),
        "{c:?}"
    );
    t.sh(&["ip -n {web} -6 route del blackhole fd00:10:244:1::3/128"]);

    t.sh(&["ip -n {web} -6 route del default"]);
    let c = case("v6 missing route", &web, ext6);
    assert_eq!(c.codes, (1, 1), "{c:?}");
    assert!(
        c.hop_ns.contains(&("no_route".into(), web.clone())),
        "{c:?}"
    );
    t.sh(&["ip -n {web} -6 route add default via fd00:10:244:1::1"]);

    let c = case("v6 healthy again", &web, db6);
    assert_eq!(c.codes, (0, 0), "{c:?}");
}
