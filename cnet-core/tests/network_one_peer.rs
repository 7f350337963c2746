//! One lease event, one peer's entries: `DriftRepair::put_lease` and
//! `remove_subnet` on a four-host VXLAN cluster write exactly the route,
//! neighbour and FDB entry of the peer a lease event concerns (counted in
//! the report, read back with `ip -j` and `bridge -j`, and proven with
//! pings), nothing when the lease changed nothing the kernel holds, and
//! leave the node where a full reconcile of the same set finds nothing to
//! do.

use std::net::IpAddr;

use cnet_core::ipam::{NodeAttrs, NodeLease};
use cnet_core::network::{vtep_mac_for, Backend, DriftRepair, NodeConfig, PeerReport, VxlanConfig};
use cnet_core::IpNet;
use cnet_test_support::cluster::{Cluster, Spec};
use cnet_test_support::{json_of, privileged};

fn lease(node: &str, subnet: IpNet, underlay: IpAddr) -> NodeLease {
    NodeLease {
        node: node.to_string(),
        subnet,
        attrs: NodeAttrs {
            underlay_ip: Some(underlay),
            backend: Some("vxlan".into()),
            vtep_mac: Some(vtep_mac_for(node)),
            ..Default::default()
        },
        expires: None,
    }
}

/// (routes, neighbours, fdb) written: added + replaced + deleted each.
fn written(r: &PeerReport) -> [(usize, usize, usize); 3] {
    [&r.routes, &r.neighbours, &r.fdb].map(|c| (c.added, c.replaced, c.deleted))
}

/// The FDB entries (mac → dst) on host 0's VXLAN device, read back.
fn fdb(c: &Cluster) -> Vec<(String, String)> {
    let v = json_of(
        "bridge",
        &[
            "-n",
            &c.hosts[0].ns,
            "-j",
            "fdb",
            "show",
            "dev",
            NodeConfig::VXLAN_DEV,
        ],
    );
    let mut out: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["mac"].as_str()?.into(), e["dst"].as_str()?.into())))
        .filter(|(m, _)| m != "00:00:00:00:00:00")
        .collect();
    out.sort();
    out
}

#[test]
fn network_one_peer_events_write_only_their_peer() {
    if !privileged() {
        return;
    }
    let c = Cluster::build(
        "op1",
        Spec {
            near: 4,
            far: 0,
            containers: 1,
        },
    );
    let backend = Backend::Vxlan(VxlanConfig::default());
    c.reconcile_all(&backend);
    let leases: Vec<NodeLease> = c
        .hosts
        .iter()
        .map(|h| lease(&h.role, h.subnet, h.underlay))
        .collect();
    let node = c.node(0);
    let mut drift = DriftRepair::new();

    // Host 0 starts knowing hosts 1 and 2 (and itself): host 3 is not
    // routed.
    let r = drift
        .reconcile_leases(&node, &backend, &leases[..3])
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(written(&r)[0], (0, 0, 1), "host 3's route went: {r:?}");
    assert_eq!(c.cnet_routes(0).len(), 2);
    let (c0, c3) = (&c.containers[0], &c.containers[3]);
    assert!(!Cluster::ping(&c0.ns, c3.ip), "host 3 is not routed yet");

    // Host 3 joins: one route, one neighbour, one FDB entry.
    let r = drift.put_lease(&node, &leases[3]).unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(written(&r), [(1, 0, 0); 3], "{r:?}");
    assert_eq!(r.peers.len(), 1, "only host 3 was looked at: {r:?}");
    let routes = c.cnet_routes(0);
    assert_eq!(routes.len(), 3, "{routes:?}");
    assert!(
        routes
            .iter()
            .any(|l| l.starts_with(&c.hosts[3].subnet.to_string())),
        "{routes:?}"
    );
    assert!(Cluster::ping(&c0.ns, c3.ip), "host 3 routed");

    // The same lease again (a put that changes nothing in the kernel):
    // nothing written.
    let r = drift.put_lease(&node, &leases[3]).unwrap();
    assert!(r.is_noop(), "{r:?}");
    assert_eq!(
        (r.routes.unchanged, r.neighbours.unchanged, r.fdb.unchanged),
        (1, 1, 1)
    );

    // A peer that moves to another underlay address: its FDB entry is
    // replaced, its route and neighbour stay.
    let ghost_net: IpNet = "10.250.0.0/24".parse().unwrap();
    let r = drift
        .put_lease(
            &node,
            &lease("ghost", ghost_net, "192.0.2.77".parse().unwrap()),
        )
        .unwrap();
    assert_eq!(written(&r), [(1, 0, 0); 3], "{r:?}");
    let r = drift
        .put_lease(
            &node,
            &lease("ghost", ghost_net, "192.0.2.78".parse().unwrap()),
        )
        .unwrap();
    assert_eq!(
        written(&r),
        [(0, 0, 0), (0, 0, 0), (0, 1, 0)],
        "only the FDB entry's dst changed: {r:?}"
    );
    let ghost_mac = vtep_mac_for("ghost").to_string();
    assert!(
        fdb(&c).contains(&(ghost_mac.clone(), "192.0.2.78".into())),
        "{:?}",
        fdb(&c)
    );

    // A lease that makes no peer (no underlay address) is refused and
    // leaves nothing of the peer it replaced.
    let mut bad = lease("ghost", ghost_net, "192.0.2.78".parse().unwrap());
    bad.attrs.underlay_ip = None;
    let r = drift.put_lease(&node, &bad).unwrap();
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert_eq!(written(&r), [(0, 0, 1); 3], "{r:?}");
    assert!(!fdb(&c).iter().any(|(m, _)| *m == ghost_mac));

    // A VTEP MAC another peer has: both are refused, as a full reconcile
    // refuses them (neither can be told from the other); when the thief
    // leaves, host 1 is routed again.
    let thief_net: IpNet = "10.251.0.0/24".parse().unwrap();
    let mut thief = lease("thief", thief_net, "192.0.2.79".parse().unwrap());
    thief.attrs.vtep_mac = Some(vtep_mac_for(&c.hosts[1].role));
    let r = drift.put_lease(&node, &thief).unwrap();
    let mut refused: Vec<&str> = r.failed.iter().map(|f| f.peer.as_str()).collect();
    refused.sort();
    assert_eq!(refused, [c.hosts[1].role.as_str(), "thief"], "{r:?}");
    let c1 = &c.containers[1];
    assert!(
        !Cluster::ping(&c0.ns, c1.ip),
        "host 1 refused with the thief"
    );
    let r = drift.remove_subnet(&node, thief_net).unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert!(Cluster::ping(&c0.ns, c1.ip), "host 1 routed again");

    // Host 3 leaves: its three entries go, the others stay.
    let r = drift.remove_subnet(&node, c.hosts[3].subnet).unwrap();
    assert_eq!(written(&r), [(0, 0, 1); 3], "{r:?}");
    assert_eq!(c.cnet_routes(0).len(), 2);
    assert!(!Cluster::ping(&c0.ns, c3.ip), "host 3 unrouted");
    assert!(Cluster::ping(&c0.ns, c1.ip), "host 1 still routed");
    // A subnet of no peer: nothing.
    let r = drift
        .remove_subnet(&node, "10.252.0.0/24".parse().unwrap())
        .unwrap();
    assert!(r.is_noop(), "{r:?}");

    // Where the events left the node, a full reconcile of the same set
    // (hosts 0–2) writes nothing.
    let r = node.reconcile_leases(&backend, &leases[..3]).unwrap();
    assert!(r.is_noop(), "{r:?}");
}
