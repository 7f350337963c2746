//! BGP with cross-subnet IP-in-IP (Calico's `ipipMode: CrossSubnet`): three
//! hosts on segment A in a full mesh, a fourth on segment B behind the
//! router namespace, which runs BIRD as a route reflector for all four.
//! Direct routes on the segment, `via PEER dev cnet.ipip onlink` across it.
//!
//! This machine's kernel has no ipip: here the test asserts that
//! `Bird::start` in the tunnel modes fails with `Unsupported` and the
//! kernel's "Unknown device type", with no BIRD started and no device or
//! file left. `scripts/test` runs this binary again in the stock-kernel VM
//! (`CNET_IN_VM=1`), where the sessions, the routes and the all-pairs ping
//! are proven.

mod common;

use std::time::{Duration, Instant};

use cnet_core::network::bgp::{BgpConfig, BgpMode, BgpPeer, BgpTimers, Bird};
use cnet_core::network::{Backend, NodeConfig, VxlanConfig};
use cnet_core::{Error, IpNet};
use cnet_test_support::cluster::{Cluster, Spec};
use cnet_test_support::privileged;

const CONVERGE: Duration = Duration::from_secs(60);

fn cidr() -> IpNet {
    "10.244.0.0/16".parse().unwrap()
}

fn seg(far: bool) -> IpNet {
    if far {
        "198.51.100.0/24".parse().unwrap()
    } else {
        "192.0.2.0/24".parse().unwrap()
    }
}

/// The router's BIRD: a route reflector on 192.0.2.1 for every host,
/// installing nothing (it forwards the tunnels' outer packets only).
fn rr_config(c: &Cluster) -> BgpConfig {
    BgpConfig::new(
        "rt",
        "192.0.2.1".parse().unwrap(),
        seg(false),
        "eth0",
        None,
        cidr(),
    )
    .route_reflector("192.0.2.1".parse().unwrap())
    .install_routes(false)
    .timers(BgpTimers::fast())
    .peers(
        c.hosts
            .iter()
            .map(|h| BgpPeer::new(&h.role, h.underlay).rr_client())
            .collect(),
    )
}

/// Host `i`: cross-subnet, the near hosts in a full mesh with each other,
/// every host a client of the reflector at 192.0.2.1.
fn host_config(c: &Cluster, i: usize) -> BgpConfig {
    let h = &c.hosts[i];
    let mut peers: Vec<BgpPeer> = if h.far {
        Vec::new()
    } else {
        c.hosts
            .iter()
            .enumerate()
            .filter(|(j, o)| *j != i && !o.far)
            .map(|(_, o)| BgpPeer::new(&o.role, o.underlay))
            .collect()
    };
    peers.push(BgpPeer::new("rr", "192.0.2.1".parse().unwrap()));
    BgpConfig::new(
        &h.role,
        h.underlay,
        seg(h.far),
        "eth0",
        Some(h.subnet),
        cidr(),
    )
    .mode(BgpMode::CrossSubnet)
    .timers(BgpTimers::fast())
    .peers(peers)
}

fn expected(c: &Cluster, i: usize) -> Vec<String> {
    let me = &c.hosts[i];
    let mut v: Vec<String> = c
        .hosts
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, h)| {
            if h.far == me.far {
                format!("{} via {} dev eth0", h.subnet, h.underlay)
            } else {
                format!("{} via {} dev cnet.ipip onlink", h.subnet, h.underlay)
            }
        })
        .collect();
    v.sort();
    v
}

#[test]
fn bgp_cross_subnet_ipip_with_route_reflector() {
    if !privileged() {
        return;
    }
    let has_ipip = common::kernel_expected("ipip");
    let c = Cluster::build(
        "bgpx",
        Spec {
            near: 3,
            far: 1,
            containers: 1,
        },
    );
    if !has_ipip {
        for (i, mode) in [(0, BgpMode::CrossSubnet), (3, BgpMode::IpIp)] {
            let dir = tempfile::tempdir().unwrap();
            let cfg = host_config(&c, i).mode(mode);
            let e = Bird::start(&c.hosts[i].handle, dir.path(), &cfg).unwrap_err();
            assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
            assert_eq!(e.kernel_message(), Some("Unknown device type"), "{e}");
            assert!(e.to_string().contains("cnet.ipip"), "{e}");
            // Nothing started, nothing written, no device.
            assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
            let links = c.ip_json(&c.hosts[i].ns, &["link", "show"]);
            assert!(
                !links.to_string().contains("cnet.ipip"),
                "nothing half-made"
            );
            assert!(c.routes_of_proto(i, "bird").is_empty());
        }
        return;
    }

    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let t0 = Instant::now();
    let rr = Bird::start(c.rt(), dirs[4].path(), &rr_config(&c)).unwrap();
    let birds: Vec<Bird> = (0..4)
        .map(|i| Bird::start(&c.hosts[i].handle, dirs[i].path(), &host_config(&c, i)).unwrap())
        .collect();
    let deadline = Instant::now() + CONVERGE;
    while !(0..4).all(|i| c.routes_of_proto(i, "bird") == expected(&c, i)) {
        assert!(
            Instant::now() < deadline,
            "not converged: {:?}\nlogs: {:?}",
            (0..4)
                .map(|i| c.routes_of_proto(i, "bird"))
                .collect::<Vec<_>>(),
            birds.iter().map(Bird::log_tail).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("cross-subnet cluster converged in {:?}", t0.elapsed());
    for b in birds.iter().chain(std::iter::once(&rr)) {
        let s = b.wait_established(CONVERGE).unwrap();
        eprintln!(
            "{}: {:?}",
            b.config().node,
            s.iter()
                .map(|x| (&x.protocol, x.routes_imported))
                .collect::<Vec<_>>()
        );
    }
    let failed = c.all_pairs_ping();
    assert!(failed.is_empty(), "failed: {failed:?}");
    let pids: Vec<u32> = birds.iter().chain([&rr]).filter_map(Bird::pid).collect();
    for b in birds {
        b.stop().unwrap();
    }
    rr.stop().unwrap();
    for p in pids {
        assert!(!std::path::Path::new(&format!("/proc/{p}")).exists());
    }
}

/// Host `i`'s VXLAN device's permanent neighbours and remote FDB entries,
/// as `ip -j neigh` and `bridge -j fdb` list them, sorted.
fn vxlan_entries(c: &Cluster, i: usize) -> (Vec<String>, Vec<String>) {
    let ns = &c.hosts[i].ns;
    let vx = NodeConfig::VXLAN_DEV;
    let mut neigh: Vec<String> = c
        .ip_json(ns, &["neigh", "show", "dev", vx, "nud", "permanent"])
        .as_array()
        .unwrap()
        .iter()
        .map(|n| format!("{} lladdr {}", n["dst"], n["lladdr"]))
        .collect();
    neigh.sort();
    let mut fdb: Vec<String> = c
        .bridge_json(ns, &["fdb", "show", "dev", vx])
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["dst"].is_string())
        .map(|f| format!("{} dst {}", f["mac"], f["dst"]))
        .collect();
    fdb.sort();
    (neigh, fdb)
}

/// Host `i`'s links by kind: (name, kind) of the vxlan and ipip ones
/// (not `tunl0`, which the ipip module makes in every namespace).
fn encap_links(c: &Cluster, i: usize) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = c
        .ip_json(&c.hosts[i].ns, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| {
            let kind = l["linkinfo"]["info_kind"].as_str()?;
            (matches!(kind, "vxlan" | "ipip") && l["ifname"] != "tunl0")
                .then(|| (l["ifname"].as_str().unwrap().to_string(), kind.to_string()))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn bgp_ipip_start_touches_nothing_but_the_tunnel_device() {
    if !privileged() {
        return;
    }
    let has_ipip = common::kernel_expected("ipip");
    let c = Cluster::build(
        "bgpt",
        Spec {
            near: 2,
            far: 0,
            containers: 1,
        },
    );
    // The node already runs vxlan: its device, protocol-119 routes,
    // neighbours and FDB entries exist before BIRD is started.
    c.reconcile_all(&Backend::Vxlan(VxlanConfig::default()));
    let routes = c.cnet_routes(0);
    let entries = vxlan_entries(&c, 0);
    assert_eq!((routes.len(), entries.0.len(), entries.1.len()), (1, 1, 1));
    let vx = (NodeConfig::VXLAN_DEV.to_string(), "vxlan".to_string());
    assert_eq!(encap_links(&c, 0), vec![vx.clone()]);

    // Its peer runs no BIRD: the session never comes up, so BIRD learns
    // and installs nothing; whatever changes is Bird::start's doing.
    let dir = tempfile::tempdir().unwrap();
    let cfg = host_config(&c, 0)
        .mode(BgpMode::IpIp)
        .peers(vec![BgpPeer::new("h2", c.hosts[1].underlay)]);
    let started = Bird::start(&c.hosts[0].handle, dir.path(), &cfg);
    let links = encap_links(&c, 0);
    match started {
        Ok(bird) => {
            assert!(has_ipip, "ipip started on a kernel without it");
            let tun = (NodeConfig::IPIP_DEV.to_string(), "ipip".to_string());
            assert_eq!(links, vec![tun, vx], "the tunnel device added, vxlan kept");
            bird.stop().unwrap();
        }
        Err(e) => {
            assert!(!has_ipip, "Bird::start in ipip mode: {e}");
            assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
            println!("no ipip here: {e}");
            assert_eq!(links, vec![vx], "nothing half-made");
        }
    }
    assert_eq!(c.cnet_routes(0), routes, "protocol-119 routes survive");
    assert_eq!(vxlan_entries(&c, 0), entries, "neighbour and FDB survive");
    assert!(c.routes_of_proto(0, "bird").is_empty());
    assert!(c.all_pairs_ping().is_empty(), "vxlan still carries traffic");
}
