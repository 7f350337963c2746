//! Real packets across what the library built.

mod common;

use cnet_core::link::{Veth, Vxlan};
use common::{privileged, TestNs};

#[test]
fn veth_between_two_namespaces_pings() {
    if !privileged() {
        return;
    }
    let a = TestNs::new("pa");
    let b = TestNs::new("pb");
    let ha = a.handle();
    ha.links()
        .add(Veth::new("eth0", "eth0").peer_netns(&b.ns).up().peer_up())
        .unwrap();
    ha.addrs()
        .add("eth0", "192.0.2.1/24".parse().unwrap())
        .unwrap();
    b.handle()
        .addrs()
        .add("eth0", "192.0.2.2/24".parse().unwrap())
        .unwrap();
    assert!(a.ping("192.0.2.2"), "ping a → b over veth");
    assert!(b.ping("192.0.2.1"), "ping b → a over veth");
}

#[test]
fn vxlan_overlay_with_static_fdb_pings() {
    if !privileged() {
        return;
    }
    let a = TestNs::new("vxa");
    let b = TestNs::new("vxb");
    let (ha, hb) = (a.handle(), b.handle());
    // Underlay: one veth between the two "hosts".
    ha.links()
        .add(Veth::new("ul0", "ul0").peer_netns(&b.ns).up().peer_up())
        .unwrap();
    ha.addrs()
        .add("ul0", "192.0.2.1/24".parse().unwrap())
        .unwrap();
    hb.addrs()
        .add("ul0", "192.0.2.2/24".parse().unwrap())
        .unwrap();
    // Overlay: Flannel-style vxlan (VNI 1, port 8472, no learning).
    for (h, t, local, peer, addr) in [
        (&ha, &a, "192.0.2.1", "192.0.2.2", "10.244.1.0/16"),
        (&hb, &b, "192.0.2.2", "192.0.2.1", "10.244.2.0/16"),
    ] {
        h.links()
            .add(
                Vxlan::new("flannel.1", 1)
                    .port(8472)
                    .local(local.parse().unwrap())
                    .dev("ul0")
                    .learning(false)
                    .mtu(1450)
                    .up(),
            )
            .unwrap();
        h.addrs().add("flannel.1", addr.parse().unwrap()).unwrap();
        // Flood unknown destinations (ARP) to the peer VTEP.
        common::run(
            "bridge",
            &[
                "-n",
                &t.name,
                "fdb",
                "append",
                "00:00:00:00:00:00",
                "dev",
                "flannel.1",
                "dst",
                peer,
            ],
        );
    }
    let fdb = a.bridge_json(&["fdb", "show", "dev", "flannel.1"]);
    assert!(
        fdb.as_array()
            .unwrap()
            .iter()
            .any(|e| e["dst"] == "192.0.2.2"),
        "fdb: {fdb}"
    );
    assert!(a.ping("10.244.2.0"), "ping across the vxlan overlay");
    assert!(b.ping("10.244.1.0"), "and back");
}
