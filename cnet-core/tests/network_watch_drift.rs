//! Drift repaired from the watch: on a three-host VXLAN cluster, someone
//! else deletes host 1's peer route, neighbour and FDB entry, sets its
//! VXLAN device down and a container's bridge port down, while containers
//! ping across hosts; `DriftRepair` (and `BridgeNetwork::repair_port`)
//! put each back. The times from the event to the repair, and from the
//! start of the deleting command to the repair, are printed (no timing
//! assertions). Run with `--nocapture` to see them:
//!
//! ```sh
//! cargo test -p cnet-core --test network_watch_drift -- --nocapture
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cnet_core::ipam::{FileStore, PoolConfig};
use cnet_core::network::{
    vtep_mac_for, Backend, BridgeConfig, BridgeNetwork, DriftRepair, Node, NodeConfig, Repair,
    VxlanConfig,
};
use cnet_core::watch::{Event, Watch};
use cnet_core::Handle;
use cnet_test_support::cluster::{Cluster, Spec};
use cnet_test_support::ping::ContinuousPing;
use cnet_test_support::{privileged, run};

/// What the repair thread reports: a one-line description, when the
/// event was read, when the repair was written.
struct Repaired {
    what: String,
    event_at: Instant,
    done_at: Instant,
}

fn describe(r: &Repair) -> String {
    match r {
        Repair::Route { peer, dst } => format!("route {dst} of {peer}"),
        Repair::StrayRoute { dst } => format!("stray route {dst}"),
        Repair::Neighbour { peer, ip } => format!("neighbour {ip} of {peer}"),
        Repair::Fdb { peer, mac } => format!("fdb {mac} of {peer}"),
        Repair::Full { reason, .. } => format!("full reconcile: {reason}"),
        _ => format!("{r:?}"),
    }
}

#[test]
fn network_watch_drift_is_repaired_from_events_while_containers_ping() {
    if !privileged() {
        return;
    }
    let c = Cluster::build(
        "wdr",
        Spec {
            near: 3,
            far: 0,
            containers: 1,
        },
    );
    let backend = Backend::Vxlan(VxlanConfig::default());
    c.reconcile_all(&backend);
    assert!(c.all_pairs_ping().is_empty());

    let h1 = &c.hosts[0];
    let h2 = &c.hosts[1];
    let vx = NodeConfig::VXLAN_DEV;
    let routes_before = c.cnet_routes(0);
    let cfg = c.node_config(0);
    let peers = c.peers_of(0);
    let ns = h1.ns.clone();
    let subnet = h1.subnet;
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<Repaired>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();

    std::thread::scope(|s| {
        let repairer = s.spawn(|| {
            let h = Handle::named(&ns).unwrap();
            // Subscribe before the reconcile: nothing can slip between.
            let mut watch = Watch::all(&h).unwrap();
            let node = Node::new(&h, cfg.clone()).unwrap();
            let mut drift = DriftRepair::new();
            let r = drift.reconcile_peers(&node, &backend, &peers).unwrap();
            assert!(r.is_noop(), "converged cluster: {r:?}");
            // The bridge network, for its port repair (a throwaway pool:
            // only the bridge matters here).
            let dir = tempfile::tempdir().unwrap();
            let pool = FileStore::open(dir.path())
                .unwrap()
                .pool(PoolConfig::new(subnet))
                .unwrap();
            let net = BridgeNetwork::ensure(&h, pool, BridgeConfig::new("cni0", subnet).mtu(1450))
                .unwrap();
            ready_tx.send(()).unwrap();
            while !stop.load(Ordering::SeqCst) {
                let Some(ev) = watch.next(Duration::from_millis(50)).unwrap() else {
                    continue;
                };
                let event_at = Instant::now();
                if let Some(r) = drift.repair(&node, &ev).unwrap() {
                    let what = describe(&r);
                    if let Repair::Full { report, .. } = &r {
                        assert!(report.is_ok(), "{report:?}");
                    }
                    let _ = tx.send(Repaired {
                        what,
                        event_at,
                        done_at: Instant::now(),
                    });
                }
                if let Some(port) = net.repair_port(&ev).unwrap() {
                    let _ = tx.send(Repaired {
                        what: format!("bridge port {port} up"),
                        event_at,
                        done_at: Instant::now(),
                    });
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("repair thread ready");

        let c1 = &c.containers[0];
        let c2 = &c.containers[1];
        let ping = ContinuousPing::start(&c1.ns, c2.ip);
        std::thread::sleep(Duration::from_millis(300));

        let h2_subnet = h2.subnet.to_string();
        let h2_vtep = h2.subnet.network().to_string();
        let h2_mac = vtep_mac_for(&h2.role).to_string();
        let h2_underlay = h2.underlay.to_string();
        let drifts: Vec<(&str, &str, Vec<&str>, &str)> = vec![
            (
                "ip route del (peer route)",
                "ip",
                vec!["-n", &h1.ns, "route", "del", &h2_subnet, "proto", "119"],
                "route",
            ),
            (
                "ip neigh del (peer VTEP neighbour)",
                "ip",
                vec!["-n", &h1.ns, "neigh", "del", &h2_vtep, "dev", vx],
                "neighbour",
            ),
            (
                "bridge fdb del (peer VTEP entry)",
                "bridge",
                vec![
                    "-n",
                    &h1.ns,
                    "fdb",
                    "del",
                    &h2_mac,
                    "dev",
                    vx,
                    "dst",
                    &h2_underlay,
                    "self",
                ],
                "fdb",
            ),
            (
                "ip link set vxlan down",
                "ip",
                vec!["-n", &h1.ns, "link", "set", vx, "down"],
                "full reconcile",
            ),
            (
                "ip link set (container's bridge port) down",
                "ip",
                vec!["-n", &h1.ns, "link", "set", &c1.veth, "down"],
                "bridge port",
            ),
        ];
        let mut table = Vec::new();
        for (label, cmd, args, expect) in &drifts {
            // Let the previous repair's own events pass.
            std::thread::sleep(Duration::from_millis(200));
            while rx.try_recv().is_ok() {}
            let start = Instant::now();
            run(cmd, args);
            let r = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{label}: not repaired within 10 s"));
            assert!(r.what.starts_with(expect), "{label}: repaired {}", r.what);
            table.push(format!(
                "{label:<44} event→repair {:>7.3} ms   command start→repair {:>7.3} ms   ({})",
                (r.done_at - r.event_at).as_secs_f64() * 1e3,
                (r.done_at - start).as_secs_f64() * 1e3,
                r.what
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
        let summary = ping.stop().line;
        stop.store(true, Ordering::SeqCst);
        repairer.join().unwrap();
        eprintln!("drift repair on host h1 (vxlan, 3 hosts):");
        for l in &table {
            eprintln!("  {l}");
        }
        eprintln!("  ping c1a → c2a every 10 ms throughout: {summary}");
    });

    // Everything is back, read independently, and traffic flows.
    assert_eq!(c.cnet_routes(0), routes_before);
    let link = &c.ip_json(&h1.ns, &["link", "show", "dev", vx])[0];
    assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    let port = &c.ip_json(&h1.ns, &["link", "show", "dev", &c.containers[0].veth])[0];
    assert!(port["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    let neigh = c.ip_json(&h1.ns, &["neigh", "show", "dev", vx]);
    assert!(
        neigh.as_array().unwrap().iter().any(|n| {
            n["dst"] == h2.subnet.network().to_string()
                && n["state"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|x| x == "PERMANENT"))
        }),
        "{neigh}"
    );
    let fdb = c.bridge_json(&h1.ns, &["fdb", "show", "dev", vx]);
    assert!(
        fdb.as_array()
            .unwrap()
            .iter()
            .any(|f| f["mac"] == vtep_mac_for(&h2.role).to_string()
                && f["dst"] == h2.underlay.to_string()),
        "{fdb}"
    );
    assert!(c.all_pairs_ping().is_empty());
}

/// Host `i`'s peer entries as an independent reader sees them: protocol-119
/// routes (`ip -j -d route show proto 119`), permanent neighbours of the
/// VXLAN device (`ip -j neigh show dev vxlan… nud permanent`), and its
/// remote FDB entries (`bridge -j fdb show dev vxlan…`, those with a dst).
fn peer_entries(c: &Cluster, i: usize) -> (Vec<String>, Vec<String>, Vec<String>) {
    let ns = &c.hosts[i].ns;
    let vx = NodeConfig::VXLAN_DEV;
    let neigh = c.ip_json(ns, &["neigh", "show", "dev", vx, "nud", "permanent"]);
    let mut neigh: Vec<String> = neigh
        .as_array()
        .unwrap()
        .iter()
        .map(|n| format!("{} lladdr {}", n["dst"], n["lladdr"]))
        .collect();
    neigh.sort();
    let fdb = c.bridge_json(ns, &["fdb", "show", "dev", vx]);
    let mut fdb: Vec<String> = fdb
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["dst"].is_string())
        .map(|f| format!("{} dst {}", f["mac"], f["dst"]))
        .collect();
    fdb.sort();
    (c.cnet_routes(i), neigh, fdb)
}

#[test]
fn network_watch_drift_failed_full_reconcile_keeps_every_peer() {
    if !privileged() {
        return;
    }
    let c = Cluster::build(
        "wdf",
        Spec {
            near: 3,
            far: 0,
            containers: 1,
        },
    );
    let backend = Backend::Vxlan(VxlanConfig::default());
    c.reconcile_all(&backend);
    assert!(c.all_pairs_ping().is_empty());
    let ns = &c.hosts[0].ns;
    let node = c.node(0);
    let mut drift = DriftRepair::new();
    let r = drift
        .reconcile_peers(&node, &backend, &c.peers_of(0))
        .unwrap();
    assert!(r.is_noop(), "converged cluster: {r:?}");
    let before = peer_entries(&c, 0);
    assert_eq!(
        (before.0.len(), before.1.len(), before.2.len()),
        (2, 2, 2),
        "{before:?}"
    );

    // The underlay is gone for a moment (renamed; a link is renamed only
    // while down): the full reconcile a resync asks for fails.
    run("ip", &["-n", ns, "link", "set", "eth0", "down"]);
    run(
        "ip",
        &["-n", ns, "link", "set", "eth0", "name", "eth0-away"],
    );
    let failed = drift.repair(&node, &Event::Resync);
    run(
        "ip",
        &["-n", ns, "link", "set", "eth0-away", "name", "eth0"],
    );
    run("ip", &["-n", ns, "link", "set", "eth0", "up"]);
    // Down took the host's default route with it: put it back as it was.
    run(
        "ip",
        &[
            "-n",
            ns,
            "route",
            "replace",
            "default",
            "via",
            "192.0.2.1",
            "proto",
            "boot",
        ],
    );
    let e = failed.expect_err("full reconcile without the underlay device");
    println!("full reconcile while the underlay was away: {e}");
    assert!(e.to_string().contains("eth0"), "{e}");

    // The underlay is back: the next full reconcile programs every peer
    // again (before the fix it ran with no peers and deleted them all).
    let r = drift.repair(&node, &Event::Resync).unwrap();
    let Some(Repair::Full { report, .. }) = r else {
        panic!("a resync makes a full reconcile: {r:?}");
    };
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.peers.len(), 2, "{report:?}");
    assert_eq!(
        (
            report.routes.deleted,
            report.neighbours.deleted,
            report.fdb.deleted
        ),
        (0, 0, 0),
        "{report:?}"
    );
    assert_eq!(peer_entries(&c, 0), before);
    assert!(c.all_pairs_ping().is_empty());
}
