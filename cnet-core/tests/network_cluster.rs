//! The node layer proven on clusters in throwaway namespaces: what
//! `Node::reconcile_peers` programs, read back with `ip -j -d` / `bridge
//! -j`, and all-pairs ping between containers on different hosts.
//! `cargo test -p cnet-core cluster` runs the cluster proofs.

use std::collections::BTreeSet;
use std::time::Duration;

use cnet_core::ipam::{FileStore, LeaseStore, NodeAttrs, SubnetConfig};
use cnet_core::link::MacAddr;
use cnet_core::network::{
    vtep_mac_for, Backend, DeviceChange, Encap, Node, Peer, PeerPath, VxlanConfig,
};
use cnet_core::Error;
use cnet_test_support::cluster::{writes_during, Cluster, Spec};
use cnet_test_support::privileged;
use serde_json::Value;

fn hostgw_routes(c: &Cluster, i: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..c.hosts.len())
        .filter(|j| *j != i)
        .map(|j| {
            let h = &c.hosts[j];
            format!("{} via {} dev eth0", h.subnet, h.underlay)
        })
        .collect();
    v.sort();
    v
}

fn vxlan_routes(c: &Cluster, i: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..c.hosts.len())
        .filter(|j| *j != i)
        .map(|j| {
            let h = &c.hosts[j];
            format!(
                "{} via {} dev cnet.vxlan onlink",
                h.subnet,
                h.subnet.network()
            )
        })
        .collect();
    v.sort();
    v
}

/// `ip -j neigh show dev cnet.vxlan` as "IP MAC STATE", sorted.
fn neighbours(c: &Cluster, ns: &str) -> Vec<String> {
    let v = c.ip_json(ns, &["neigh", "show", "dev", "cnet.vxlan"]);
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            format!(
                "{} {} {}",
                n["dst"].as_str().unwrap(),
                n["lladdr"].as_str().unwrap_or("-"),
                n["state"][0].as_str().unwrap_or("-")
            )
        })
        .collect();
    out.sort();
    out
}

/// `bridge -j fdb show dev cnet.vxlan` as "MAC dst DST FLAGS STATE", sorted.
fn fdb(c: &Cluster, ns: &str) -> Vec<String> {
    let v = c.bridge_json(ns, &["fdb", "show", "dev", "cnet.vxlan"]);
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let flags: Vec<&str> = f["flags"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!(
                "{} dst {} {} {}",
                f["mac"].as_str().unwrap(),
                f["dst"].as_str().unwrap_or("-"),
                flags.join(","),
                f["state"].as_str().unwrap_or("-")
            )
        })
        .collect();
    out.sort();
    out
}

fn expected_neighbours(c: &Cluster, i: usize, peers: &[usize]) -> Vec<String> {
    let _ = i;
    let mut v: Vec<String> = peers
        .iter()
        .map(|&j| {
            let h = &c.hosts[j];
            format!("{} {} PERMANENT", h.subnet.network(), vtep_mac_for(&h.role))
        })
        .collect();
    v.sort();
    v
}

fn expected_fdb(c: &Cluster, peers: &[usize]) -> Vec<String> {
    let mut v: Vec<String> = peers
        .iter()
        .map(|&j| {
            let h = &c.hosts[j];
            format!(
                "{} dst {} self permanent",
                vtep_mac_for(&h.role),
                h.underlay
            )
        })
        .collect();
    v.sort();
    v
}

fn link_names(c: &Cluster, ns: &str) -> BTreeSet<String> {
    c.ip_json(ns, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

fn others(c: &Cluster, i: usize) -> Vec<usize> {
    (0..c.hosts.len()).filter(|j| *j != i).collect()
}

/// Check host `i`'s VXLAN device with `ip -j -d link` and `ip -j addr`.
fn assert_vxlan_device(c: &Cluster, i: usize) {
    let h = &c.hosts[i];
    let l = &c.ip_json(&h.ns, &["link", "show", "dev", "cnet.vxlan"])[0];
    let d = &l["linkinfo"]["info_data"];
    assert_eq!(l["linkinfo"]["info_kind"], "vxlan", "{l}");
    assert_eq!(d["id"], 1, "{l}");
    assert_eq!(d["port"], 8472, "{l}");
    assert_eq!(d["learning"], false, "{l}");
    assert_eq!(d["local"], h.underlay.to_string(), "{l}");
    assert_eq!(d["link"], "eth0", "{l}");
    assert_eq!(l["mtu"], 1450, "underlay 1500 − 50: {l}");
    assert_eq!(l["address"], vtep_mac_for(&h.role).to_string(), "{l}");
    assert!(
        l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{l}"
    );
    let a = c.ip_json(&h.ns, &["-4", "addr", "show", "dev", "cnet.vxlan"]);
    let addrs: Vec<String> = a[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| format!("{}/{}", x["local"].as_str().unwrap(), x["prefixlen"]))
        .collect();
    assert_eq!(addrs, vec![format!("{}/32", h.subnet.network())]);
}

#[test]
fn cluster_host_gw_then_vxlan_in_place_all_pairs_ping() {
    if !privileged() {
        return;
    }
    let c = Cluster::build(
        "hgv",
        Spec {
            near: 3,
            far: 0,
            containers: 2,
        },
    );

    // host-gw: one route per peer subnet via the peer's underlay address.
    for r in c.reconcile_all(&Backend::HostGw) {
        assert_eq!(r.routes.added, 2, "{r:?}");
        assert_eq!(r.count(PeerPath::Direct), 2, "{r:?}");
        assert!(r.devices.is_empty(), "{r:?}");
    }
    for i in 0..3 {
        assert_eq!(c.cnet_routes(i), hostgw_routes(&c, i));
    }
    assert_eq!(c.all_pairs_ping(), Vec::<String>::new(), "host-gw");
    for r in c.reconcile_all(&Backend::HostGw) {
        assert!(r.is_noop(), "converged: {r:?}");
    }

    // Switch to vxlan in place: device, neighbours, FDB, each route replaced.
    for r in c.reconcile_all(&Backend::vxlan()) {
        assert_eq!(
            r.devices.first(),
            Some(&DeviceChange::Created {
                name: "cnet.vxlan".into()
            }),
            "{r:?}"
        );
        assert_eq!((r.neighbours.added, r.fdb.added), (2, 2), "{r:?}");
        assert_eq!((r.routes.replaced, r.routes.added), (2, 0), "{r:?}");
        assert_eq!(r.count(PeerPath::Vxlan), 2);
    }
    for i in 0..3 {
        let ns = &c.hosts[i].ns;
        assert_vxlan_device(&c, i);
        assert_eq!(
            c.cnet_routes(i),
            vxlan_routes(&c, i),
            "no host-gw route left"
        );
        assert_eq!(
            neighbours(&c, ns),
            expected_neighbours(&c, i, &others(&c, i))
        );
        assert_eq!(fdb(&c, ns), expected_fdb(&c, &others(&c, i)));
    }
    assert_eq!(c.all_pairs_ping(), Vec::<String>::new(), "vxlan");
    // Converged: nothing written, as `ip monitor` sees it.
    let (r, writes) = writes_during(&c.hosts[0].ns, || {
        c.node(0)
            .reconcile_peers(&Backend::vxlan(), &c.peers_of(0))
            .unwrap()
    });
    assert!(r.is_noop(), "{r:?}");
    assert_eq!(
        writes,
        Vec::<String>::new(),
        "a converged reconcile writes nothing"
    );

    // And back: the device goes (with its neighbours and FDB), routes are direct.
    for r in c.reconcile_all(&Backend::HostGw) {
        assert!(
            r.devices.contains(&DeviceChange::Deleted {
                name: "cnet.vxlan".into()
            }),
            "{r:?}"
        );
    }
    for i in 0..3 {
        let ns = &c.hosts[i].ns;
        assert!(!link_names(&c, ns).contains("cnet.vxlan"));
        assert_eq!(c.cnet_routes(i), hostgw_routes(&c, i));
        let fdb_all = c.bridge_json(ns, &["fdb", "show"]);
        assert!(
            !fdb_all.to_string().contains("\"dst\""),
            "no remote FDB entry left: {fdb_all}"
        );
    }
    assert_eq!(c.all_pairs_ping(), Vec::<String>::new(), "host-gw again");
}

#[test]
fn cluster_far_host_refused_by_host_gw_reached_by_cross_subnet() {
    if !privileged() {
        return;
    }
    let c = Cluster::build(
        "far",
        Spec {
            near: 3,
            far: 1,
            containers: 2,
        },
    );
    let h4 = c.host("h4");

    // host-gw on h1: h4 is behind the router; refused, the others programmed.
    let r = c
        .node(0)
        .reconcile_peers(&Backend::HostGw, &c.peers_of(0))
        .unwrap();
    assert_eq!(r.count(PeerPath::Direct), 2, "{r:?}");
    let e = r.failure("h4").expect("h4 refused");
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
    let text = e.to_string();
    for needle in [
        "198.51.100.14",
        "not on this node's layer-2 segment",
        "via gateway 192.0.2.1 dev eth0",
        "vxlan",
        "ipip",
        "cross-subnet",
    ] {
        assert!(text.contains(needle), "{needle:?} in {text}");
    }
    assert_eq!(
        c.cnet_routes(0),
        vec![
            "10.244.2.0/24 via 192.0.2.12 dev eth0".to_string(),
            "10.244.3.0/24 via 192.0.2.13 dev eth0".to_string(),
        ],
        "nothing for h4"
    );
    let e = r.into_result().unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    // h4's own view: every peer is behind its gateway.
    let r = c
        .node(h4)
        .reconcile_peers(&Backend::HostGw, &c.peers_of(h4))
        .unwrap();
    assert_eq!((r.count(PeerPath::Direct), r.failed.len()), (0, 3), "{r:?}");

    // cross-subnet: direct on the segment, vxlan to the far host.
    let cross = Backend::CrossSubnet {
        encap: Encap::Vxlan(VxlanConfig::default()),
    };
    let reports = c.reconcile_all(&cross);
    for (i, r) in reports.iter().enumerate() {
        let (direct, vx) = if i == h4 { (0, 3) } else { (2, 1) };
        assert_eq!(
            (r.count(PeerPath::Direct), r.count(PeerPath::Vxlan)),
            (direct, vx),
            "{r:?}"
        );
    }
    for i in 0..3 {
        let mut want: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| format!("{} via {} dev eth0", c.hosts[j].subnet, c.hosts[j].underlay))
            .collect();
        want.push("10.244.4.0/24 via 10.244.4.0 dev cnet.vxlan onlink".into());
        want.sort();
        assert_eq!(c.cnet_routes(i), want);
        let ns = &c.hosts[i].ns;
        assert_eq!(neighbours(&c, ns), expected_neighbours(&c, i, &[h4]));
        assert_eq!(fdb(&c, ns), expected_fdb(&c, &[h4]));
    }
    assert_eq!(c.cnet_routes(h4), vxlan_routes(&c, h4));
    assert_eq!(c.all_pairs_ping(), Vec::<String>::new(), "cross-subnet");
}

#[test]
fn network_reconcile_adds_updates_removes_and_touches_nothing_else() {
    if !privileged() {
        return;
    }
    let c = Cluster::build(
        "rec",
        Spec {
            near: 1,
            far: 0,
            containers: 0,
        },
    );
    let ns = c.hosts[0].ns.clone();
    let node = c.node(0);
    let vx = Backend::vxlan();
    let peer = |n: u8, underlay: &str, mac: &str| {
        Peer::new(
            &format!("p{n}"),
            format!("10.244.{n}.0/24").parse().unwrap(),
            underlay.parse().unwrap(),
        )
        .with_vtep_mac(mac.parse().unwrap())
    };
    let a = peer(2, "192.0.2.12", "02:00:00:00:02:01");
    let b = peer(3, "192.0.2.13", "02:00:00:00:03:01");
    let d = peer(4, "203.0.113.14", "02:00:00:00:04:01");
    let r = node
        .reconcile_peers(&vx, &[a.clone(), b.clone(), d.clone()])
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!((r.neighbours.added, r.fdb.added, r.routes.added), (3, 3, 3));

    // Others' objects: routes of other protocols, a learnt neighbour.
    c.hosts[0].handle.links().get("eth0").expect("underlay");
    for cmd in [
        "route add 10.244.99.0/24 via 192.0.2.1 proto static",
        "route add 203.0.113.0/24 dev eth0",
        "route add 10.244.98.0/24 via 192.0.2.1 proto bird",
        "neigh add 10.244.97.9 lladdr 02:00:00:00:97:09 dev cnet.vxlan nud reachable",
    ] {
        let mut args = vec!["-n", ns.as_str()];
        args.extend(cmd.split(' '));
        let o = std::process::Command::new("ip")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let foreign = |c: &Cluster| -> Vec<String> {
        let v = c.ip_json(&ns, &["route", "show", "table", "main"]);
        let mut out: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["protocol"] != "119")
            .map(|r| format!("{} {}", r["dst"], r["protocol"]))
            .collect();
        out.sort();
        out
    };
    let before = foreign(&c);
    assert_eq!(before.len(), 6, "{before:?}"); // default, 192.0.2.0/24, cni0's /24, + 3

    // p3 moves (new underlay, new MAC), p4 departs, p5 arrives.
    let b2 = peer(3, "192.0.2.23", "02:00:00:00:03:02");
    let e = peer(5, "192.0.2.15", "02:00:00:00:05:01");
    let (r, writes) = writes_during(&ns, || {
        node.reconcile_peers(&vx, &[a.clone(), b2.clone(), e.clone()])
            .unwrap()
            .into_result()
            .unwrap()
    });
    assert!(writes.len() >= 7, "ip monitor saw the changes: {writes:#?}");
    assert_eq!(
        (
            r.neighbours.added,
            r.neighbours.replaced,
            r.neighbours.deleted
        ),
        (1, 1, 1),
        "{r:?}"
    );
    // FDB entries are keyed by (MAC, dst): p3's old one goes, its new one comes.
    assert_eq!((r.fdb.added, r.fdb.deleted), (2, 2), "{r:?}");
    assert_eq!(
        (r.routes.added, r.routes.deleted, r.routes.unchanged),
        (1, 1, 2),
        "{r:?}"
    );
    assert_eq!(
        neighbours(&c, &ns),
        vec![
            "10.244.2.0 02:00:00:00:02:01 PERMANENT",
            "10.244.3.0 02:00:00:00:03:02 PERMANENT",
            "10.244.5.0 02:00:00:00:05:01 PERMANENT",
            "10.244.97.9 02:00:00:00:97:09 REACHABLE",
        ]
    );
    assert_eq!(
        fdb(&c, &ns),
        vec![
            "02:00:00:00:02:01 dst 192.0.2.12 self permanent",
            "02:00:00:00:03:02 dst 192.0.2.23 self permanent",
            "02:00:00:00:05:01 dst 192.0.2.15 self permanent",
        ]
    );
    assert_eq!(
        c.cnet_routes(0),
        vec![
            "10.244.2.0/24 via 10.244.2.0 dev cnet.vxlan onlink",
            "10.244.3.0/24 via 10.244.3.0 dev cnet.vxlan onlink",
            "10.244.5.0/24 via 10.244.5.0 dev cnet.vxlan onlink",
        ]
    );
    assert_eq!(foreign(&c), before, "others' routes untouched");

    // Converged: no write at all.
    let (r, writes) = writes_during(&ns, || {
        node.reconcile_peers(&vx, &[a.clone(), b2.clone(), e.clone()])
            .unwrap()
    });
    assert!(r.is_noop(), "{r:?}");
    assert_eq!(writes, Vec::<String>::new());

    // The empty set removes all of ours and nothing else.
    let r = node
        .reconcile_peers(&vx, &[])
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(
        (r.routes.deleted, r.fdb.deleted, r.neighbours.deleted),
        (3, 3, 3)
    );
    assert_eq!(
        neighbours(&c, &ns),
        vec!["10.244.97.9 02:00:00:00:97:09 REACHABLE"]
    );
    assert_eq!(foreign(&c), before);
    // Teardown: the device goes too; twice is fine.
    let r = node.teardown().unwrap().into_result().unwrap();
    assert!(r.devices.contains(&DeviceChange::Deleted {
        name: "cnet.vxlan".into()
    }));
    assert!(node.teardown().unwrap().is_noop());
    assert!(!link_names(&c, &ns).contains("cnet.vxlan"));
    assert_eq!(foreign(&c), before);
}

#[test]
fn network_bad_peers_are_refused_whole_and_the_rest_programmed() {
    if !privileged() {
        return;
    }
    let c = Cluster::build(
        "bad",
        Spec {
            near: 1,
            far: 0,
            containers: 0,
        },
    );
    let ns = c.hosts[0].ns.clone();
    let node = c.node(0);
    let p = |name: &str, subnet: &str, underlay: &str| {
        Peer::new(name, subnet.parse().unwrap(), underlay.parse().unwrap())
            .with_vtep_mac(vtep_mac_for(name))
    };
    let peers = vec![
        p("good", "10.244.2.0/24", "192.0.2.12"),
        p("mine", "10.244.1.0/24", "192.0.2.13"), // the node's own subnet
        p("wide", "10.244.4.0/22", "192.0.2.14"),
        p("inside", "10.244.6.0/24", "192.0.2.16"), // inside wide
        Peer::new(
            "nomac",
            "10.244.9.0/24".parse().unwrap(),
            "192.0.2.19".parse().unwrap(),
        ),
        p("good2", "10.244.10.0/24", "192.0.2.20"),
    ];
    let r = node.reconcile_peers(&Backend::vxlan(), &peers).unwrap();
    let names: Vec<&str> = r.peers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["good", "good2"]);
    for (name, needle) in [
        ("mine", "overlaps this node's own subnet 10.244.1.0/24"),
        ("wide", "overlaps peer inside's subnet 10.244.6.0/24"),
        ("inside", "overlaps peer wide's subnet 10.244.4.0/22"),
        ("nomac", "no VTEP MAC"),
    ] {
        let e = r.failure(name).unwrap_or_else(|| panic!("{name} refused"));
        assert!(e.to_string().contains(needle), "{name}: {e}");
    }
    // Nothing of the refused peers is in the kernel; the node's own subnet
    // is not routed anywhere but its bridge.
    assert_eq!(
        c.cnet_routes(0),
        vec![
            "10.244.10.0/24 via 10.244.10.0 dev cnet.vxlan onlink",
            "10.244.2.0/24 via 10.244.2.0 dev cnet.vxlan onlink",
        ]
    );
    assert_eq!(neighbours(&c, &ns).len(), 2);
    assert_eq!(fdb(&c, &ns).len(), 2);
    let own = c.ip_json(&ns, &["route", "show", "10.244.1.0/24"]);
    assert_eq!(own[0]["dev"], "cni0", "{own}");
    assert_eq!(own.as_array().unwrap().len(), 1, "{own}");
    let e = r.into_result().unwrap_err();
    assert!(e.to_string().contains("4 failures"), "{e}");

    // A bad node configuration or backend is refused before anything is sent.
    let mut cfg = c.node_config(0);
    cfg.subnet = "10.244.1.1/24".parse().unwrap();
    assert!(matches!(
        Node::new(&c.hosts[0].handle, cfg),
        Err(Error::InvalidArgument { .. })
    ));
    let e = node
        .reconcile_peers(
            &Backend::Vxlan(VxlanConfig {
                mtu: Some(1480),
                ..Default::default()
            }),
            &[],
        )
        .unwrap_err();
    assert!(e.to_string().contains("at most 1450"), "{e}");
    let mut cfg = c.node_config(0);
    cfg.underlay_dev = "nosuch0".into();
    let e = Node::new(&c.hosts[0].handle, cfg)
        .unwrap()
        .reconcile_peers(&Backend::HostGw, &[])
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[test]
fn network_vtep_mac_survives_recreation_and_drift_is_repaired() {
    if !privileged() {
        return;
    }
    let c = Cluster::build(
        "mac",
        Spec {
            near: 2,
            far: 0,
            containers: 1,
        },
    );
    c.reconcile_all(&Backend::vxlan());
    let ns = c.hosts[0].ns.clone();
    let mac = |c: &Cluster| -> MacAddr {
        c.ip_json(&ns, &["link", "show", "dev", "cnet.vxlan"])[0]["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(mac(&c), vtep_mac_for("h1"));
    let node = c.node(0);
    let peers = c.peers_of(0);

    // Someone deletes the device: it comes back with the same MAC.
    let o = std::process::Command::new("ip")
        .args(["-n", &ns, "link", "del", "cnet.vxlan"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let r = node.reconcile_peers(&Backend::vxlan(), &peers).unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(
        r.devices[0],
        DeviceChange::Created {
            name: "cnet.vxlan".into()
        }
    );
    assert_eq!((r.neighbours.added, r.fdb.added, r.routes.added), (1, 1, 1));
    assert_eq!(mac(&c), vtep_mac_for("h1"));

    // Someone changes its MTU: re-created as configured.
    let o = std::process::Command::new("ip")
        .args(["-n", &ns, "link", "set", "cnet.vxlan", "mtu", "1400"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let r = node.reconcile_peers(&Backend::vxlan(), &peers).unwrap();
    match &r.devices[0] {
        DeviceChange::Recreated { differences, .. } => {
            assert!(
                differences.iter().any(|d| d.contains("mtu")),
                "{differences:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_vxlan_device(&c, 0);

    // Someone deletes a neighbour: only it is put back.
    let o = std::process::Command::new("ip")
        .args(["-n", &ns, "neigh", "del", "10.244.2.0", "dev", "cnet.vxlan"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let r = node.reconcile_peers(&Backend::vxlan(), &peers).unwrap();
    assert!(r.devices.is_empty(), "{r:?}");
    assert_eq!(r.neighbours.added, 1);
    assert!(r.fdb.is_noop() && r.routes.is_noop(), "{r:?}");
    assert_eq!(c.all_pairs_ping(), Vec::<String>::new());

    // A device of another kind under the node's name is not taken over.
    let mut cfg = c.node_config(0);
    cfg.vxlan_dev = "cni0".into();
    let e = Node::new(&c.hosts[0].handle, cfg)
        .unwrap()
        .reconcile_peers(&Backend::vxlan(), &peers)
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert!(
        e.to_string().contains("a bridge device has this name"),
        "{e}"
    );
}

#[test]
fn network_reconcile_leases_skips_itself_and_reports_bad_leases() {
    if !privileged() {
        return;
    }
    let c = Cluster::build(
        "lea",
        Spec {
            near: 3,
            far: 0,
            containers: 1,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let mut leases = store
        .subnets(SubnetConfig::new("10.244.0.0/16".parse().unwrap()))
        .unwrap();
    let vx = Backend::vxlan();
    let ttl = Duration::from_secs(600);
    for i in 0..3 {
        let h = &c.hosts[i];
        let attrs = c.node(i).lease_attrs(&vx).unwrap();
        assert_eq!(attrs.vtep_mac, Some(vtep_mac_for(&h.role)));
        leases.reserve(&h.role, h.subnet, &attrs).unwrap();
    }
    // A node that published nothing useful.
    leases.acquire("ghost", &NodeAttrs::default(), ttl).unwrap();
    let all = leases.list().unwrap();
    assert_eq!(all.len(), 4);
    for i in 0..3 {
        let r = c.node(i).reconcile_leases(&vx, &all).unwrap();
        assert_eq!(r.count(PeerPath::Vxlan), 2, "{r:?}");
        let e = r.failure("ghost").expect("ghost reported");
        assert!(e.to_string().contains("underlay_ip"), "{e}");
        assert!(r.into_result().is_err());
    }
    assert_eq!(c.all_pairs_ping(), Vec::<String>::new());
}

#[test]
fn cluster_detach_every_container_leaves_nothing() {
    if !privileged() {
        return;
    }
    let mut c = Cluster::build(
        "det",
        Spec {
            near: 3,
            far: 0,
            containers: 2,
        },
    );
    c.reconcile_all(&Backend::vxlan());
    assert_eq!(c.all_pairs_ping(), Vec::<String>::new());
    let roles: Vec<String> = c.containers.iter().map(|x| x.role.clone()).collect();
    for role in &roles {
        c.detach(role);
    }
    for i in 0..3 {
        let ns = c.hosts[i].ns.clone();
        let links = link_names(&c, &ns);
        assert_eq!(
            links,
            ["cni0", "cnet.vxlan", "eth0", "lo"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            "no veth left on {ns}"
        );
        let ports = c.ip_json(&ns, &["link", "show", "master", "cni0"]);
        assert_eq!(ports, Value::Array(vec![]), "cni0 has no ports");
        assert_eq!(c.allocations(i), 0, "no allocation left");
        let r = c.node(i).teardown().unwrap().into_result().unwrap();
        // The device takes its routes, neighbours and FDB entries with it.
        assert_eq!(
            r.devices,
            vec![DeviceChange::Deleted {
                name: "cnet.vxlan".into()
            }]
        );
        assert_eq!(c.cnet_routes(i), Vec::<String>::new());
        assert!(!link_names(&c, &ns).contains("cnet.vxlan"));
    }
    let prefix = c.prefix().to_string();
    assert_eq!(
        Cluster::namespaces_with_prefix(&prefix).len(),
        5,
        "ul, rt and three hosts are left"
    );
    drop(c);
    assert_eq!(
        Cluster::namespaces_with_prefix(&prefix),
        Vec::<String>::new(),
        "no namespace leaks"
    );
}

#[test]
fn network_peer_the_kernel_refuses_is_rolled_back_whole() {
    if !privileged() {
        return;
    }
    let c = Cluster::build(
        "rbk",
        Spec {
            near: 2,
            far: 0,
            containers: 1,
        },
    );
    let ns = c.hosts[0].ns.clone();
    let mut peers = c.peers_of(0);
    // Passes every check of ours, but the kernel refuses its route: its
    // gateway 127.0.0.0 is not a unicast address ("Nexthop has invalid
    // gateway"). Its neighbour and FDB entry must not stay behind.
    peers.push(
        Peer::new(
            "lo",
            "127.0.0.0/24".parse().unwrap(),
            "192.0.2.77".parse().unwrap(),
        )
        .with_vtep_mac(vtep_mac_for("lo")),
    );
    let r = c
        .node(0)
        .reconcile_peers(&Backend::vxlan(), &peers)
        .unwrap();
    let e = r.failure("lo").expect("lo failed");
    assert!(e.to_string().contains("127.0.0.0/24"), "{e}");
    assert!(e.kernel_message().is_some(), "the kernel's words: {e}");
    assert_eq!(r.count(PeerPath::Vxlan), 1, "{r:?}");
    assert_eq!(neighbours(&c, &ns), expected_neighbours(&c, 0, &[1]));
    assert_eq!(fdb(&c, &ns), expected_fdb(&c, &[1]));
    assert_eq!(c.cnet_routes(0), vxlan_routes(&c, 0));
    assert!(r.into_result().is_err());
    let r = c
        .node(1)
        .reconcile_peers(&Backend::vxlan(), &c.peers_of(1))
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r.count(PeerPath::Vxlan), 1);
    assert_eq!(
        c.all_pairs_ping(),
        Vec::<String>::new(),
        "h2 works regardless"
    );
}
