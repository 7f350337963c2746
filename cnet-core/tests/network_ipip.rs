//! The node's IP-in-IP backend on a cluster in namespaces. This machine's
//! kernel has no ipip: here the tests assert that switching a working
//! host-gw cluster to ipip fails with `Unsupported` and the kernel's
//! "Unknown device type", and leaves the node as it was. `scripts/test`
//! runs this binary again in the stock-kernel VM (`CNET_IN_VM=1`), where
//! ipip must exist and the all-pairs ping is proven through the tunnels.

mod common;

use cnet_core::network::{Backend, DeviceChange, Encap, IpIpConfig, PeerPath};
use cnet_core::Error;
use cnet_test_support::cluster::{Cluster, Spec};
use cnet_test_support::privileged;

fn links(c: &Cluster, i: usize) -> Vec<String> {
    c.ip_json(&c.hosts[i].ns, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

/// Where ipip is missing: `Unsupported` with the kernel's words, no device,
/// the routes as they were.
fn assert_unsupported_and_untouched(c: &Cluster, backend: &Backend) {
    for i in 0..c.hosts.len() {
        let before = c.cnet_routes(i);
        let e = c
            .node(i)
            .reconcile_peers(backend, &c.peers_of(i))
            .unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
        assert_eq!(e.kernel_message(), Some("Unknown device type"), "{e}");
        assert!(e.to_string().contains("cnet.ipip"), "{e}");
        assert!(
            !links(c, i).contains(&"cnet.ipip".to_string()),
            "nothing half-made"
        );
        assert_eq!(c.cnet_routes(i), before, "the node is as it was");
    }
}

#[test]
fn cluster_ipip_all_pairs_ping_or_unsupported() {
    if !privileged() {
        return;
    }
    let has_ipip = common::kernel_expected("ipip");
    let c = Cluster::build(
        "ipip",
        Spec {
            near: 3,
            far: 0,
            containers: 2,
        },
    );
    c.reconcile_all(&Backend::HostGw);
    if !has_ipip {
        assert_unsupported_and_untouched(&c, &Backend::ipip());
        let (a, b) = (&c.containers[0], &c.containers[5]);
        assert!(Cluster::ping(&a.ns, b.ip), "host-gw still carries traffic");
        return;
    }
    // Switch in place: the tunnel, and each route replaced by one through it.
    for r in c.reconcile_all(&Backend::ipip()) {
        assert!(
            r.devices.contains(&DeviceChange::Created {
                name: "cnet.ipip".into()
            }),
            "{r:?}"
        );
        assert_eq!(
            (r.routes.replaced, r.count(PeerPath::IpIp)),
            (2, 2),
            "{r:?}"
        );
    }
    for i in 0..3 {
        let h = &c.hosts[i];
        let l = &c.ip_json(&h.ns, &["link", "show", "dev", "cnet.ipip"])[0];
        assert_eq!(l["linkinfo"]["info_kind"], "ipip", "{l}");
        assert_eq!(
            l["linkinfo"]["info_data"]["local"],
            h.underlay.to_string(),
            "{l}"
        );
        assert_eq!(l["linkinfo"]["info_data"]["link"], "eth0", "{l}");
        assert_eq!(l["mtu"], 1480, "underlay 1500 − 20: {l}");
        let a = c.ip_json(&h.ns, &["-4", "addr", "show", "dev", "cnet.ipip"]);
        assert_eq!(
            a[0]["addr_info"][0]["local"],
            h.subnet.network().to_string()
        );
        let mut want: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| {
                format!(
                    "{} via {} dev cnet.ipip onlink",
                    c.hosts[j].subnet, c.hosts[j].underlay
                )
            })
            .collect();
        want.sort();
        assert_eq!(c.cnet_routes(i), want);
    }
    assert_eq!(c.all_pairs_ping(), Vec::<String>::new(), "ipip");
    for r in c.reconcile_all(&Backend::ipip()) {
        assert!(r.is_noop(), "converged: {r:?}");
    }
    // And on to vxlan: the tunnel goes, the VTEP comes.
    for r in c.reconcile_all(&Backend::vxlan()) {
        assert!(
            r.devices.contains(&DeviceChange::Deleted {
                name: "cnet.ipip".into()
            }),
            "{r:?}"
        );
    }
    for i in 0..3 {
        let names = links(&c, i);
        assert!(!names.contains(&"cnet.ipip".to_string()), "{names:?}");
        assert!(names.contains(&"cnet.vxlan".to_string()), "{names:?}");
    }
    assert_eq!(c.all_pairs_ping(), Vec::<String>::new(), "vxlan after ipip");
}

#[test]
fn cluster_ipip_cross_subnet_reaches_the_far_host() {
    if !privileged() {
        return;
    }
    let has_ipip = common::kernel_expected("ipip");
    let c = Cluster::build(
        "ipx",
        Spec {
            near: 2,
            far: 1,
            containers: 1,
        },
    );
    let cross = Backend::CrossSubnet {
        encap: Encap::IpIp(IpIpConfig::default()),
    };
    if !has_ipip {
        assert_unsupported_and_untouched(&c, &cross);
        return;
    }
    let reports = c.reconcile_all(&cross);
    assert_eq!(
        (
            reports[0].count(PeerPath::Direct),
            reports[0].count(PeerPath::IpIp)
        ),
        (1, 1)
    );
    assert_eq!(
        reports[2].count(PeerPath::IpIp),
        2,
        "the far host encapsulates all"
    );
    assert_eq!(
        c.cnet_routes(0),
        vec![
            "10.244.2.0/24 via 192.0.2.12 dev eth0".to_string(),
            "10.244.3.0/24 via 198.51.100.13 dev cnet.ipip onlink".to_string(),
        ]
    );
    assert_eq!(
        c.all_pairs_ping(),
        Vec::<String>::new(),
        "ipip cross-subnet"
    );
}
