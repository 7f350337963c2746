//! Devices deleted under the library, without the agent: on a VXLAN
//! cluster whose containers ping across hosts, someone deletes host 1's
//! bridge or VXLAN device.
//!
//! * `BridgeNetwork::repair`, fed from a kernel watch, makes a deleted
//!   bridge again as ensure makes it and puts the containers' ports back;
//! * `BridgeNetwork::ensure` does the same when it finds the bridge
//!   missing (deleted while nobody watched), and takes only this network's
//!   host ends: a foreign veth, and one with a container's derived name but
//!   not its MAC, stay off the bridge;
//! * `DriftRepair` repairs a deleted VXLAN device with no error and names
//!   the deletion a deletion (and a device set down "set down").
//!
//! Read back with `ip -j -d link` and `bridge -j link`; the times and the
//! pings lost are printed (no timing assertions):
//!
//! ```sh
//! cargo test -p cnet-core --test network_drift_deleted -- --nocapture
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cnet_core::ipam::PoolStore;
use cnet_core::network::{
    host_veth_name, mac_for_ip, vtep_mac_for, Backend, BridgeConfig, BridgeNetwork, BridgeRepair,
    DriftRepair, Node, NodeConfig, Repair, VxlanConfig,
};
use cnet_core::watch::Watch;
use cnet_core::Handle;
use cnet_test_support::cluster::{Cluster, Spec};
use cnet_test_support::ping::ContinuousPing;
use cnet_test_support::{privileged, run};

fn cluster(tag: &str, hosts: u8, containers: u8) -> Cluster {
    let c = Cluster::build(
        tag,
        Spec {
            near: hosts,
            far: 0,
            containers,
        },
    );
    c.reconcile_all(&Backend::Vxlan(VxlanConfig::default()));
    assert!(c.all_pairs_ping().is_empty());
    c
}

fn bridge_config(c: &Cluster, host: usize) -> BridgeConfig {
    BridgeConfig::new("cni0", c.hosts[host].subnet).mtu(1450)
}

/// Read back host `host`'s cni0 (a bridge, up, MTU 1450, MAC derived from
/// the gateway, the gateway address) and its ports: returns the sorted
/// names of the links whose master is cni0, each checked up and
/// forwarding. Also returns cni0's index.
fn bridge_and_ports(c: &Cluster, host: usize) -> (u32, Vec<String>) {
    let ns = &c.hosts[host].ns;
    let gw = c.hosts[host].subnet.hosts().next().unwrap();
    let br = &c.ip_json(ns, &["link", "show", "dev", "cni0"])[0];
    assert_eq!(br["linkinfo"]["info_kind"], "bridge", "{br}");
    assert!(br["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert_eq!(br["mtu"], 1450, "{br}");
    assert_eq!(br["address"], mac_for_ip(gw).to_string(), "{br}");
    let addrs = c.ip_json(ns, &["addr", "show", "dev", "cni0"]);
    assert!(
        addrs[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["local"] == gw.to_string() && a["prefixlen"] == 24),
        "cni0 lacks {gw}/24: {addrs}"
    );
    let on = c.ip_json(ns, &["link", "show", "master", "cni0"]);
    let mut names: Vec<String> = on
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert!(
                l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
                "{l}"
            );
            l["ifname"].as_str().unwrap().to_string()
        })
        .collect();
    names.sort();
    let ports = c.bridge_json(ns, &["link", "show"]);
    for n in &names {
        let p = ports
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["ifname"] == n.as_str())
            .unwrap_or_else(|| panic!("bridge link lists no {n}: {ports}"));
        assert_eq!(p["state"], "forwarding", "{p}");
    }
    (br["ifindex"].as_u64().unwrap() as u32, names)
}

/// The host ends of host `host`'s containers, sorted.
fn container_ports(c: &Cluster, host: usize) -> Vec<String> {
    let mut v: Vec<String> = c
        .containers
        .iter()
        .filter(|x| x.host == host)
        .map(|x| x.veth.clone())
        .collect();
    v.sort();
    v
}

#[test]
fn network_drift_deleted_bridge_is_made_again_with_its_ports() {
    if !privileged() {
        return;
    }
    let c = cluster("ddb", 2, 2);
    let (ns, cfg) = (c.hosts[0].ns.clone(), bridge_config(&c, 0));
    let pool = c.pool(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(BridgeRepair, Instant, Instant, u32)>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let want = container_ports(&c, 0);
    std::thread::scope(|s| {
        let repairer = s.spawn(|| {
            let h = Handle::named(&ns).unwrap();
            let mut watch = Watch::all(&h).unwrap();
            let net = BridgeNetwork::ensure(&h, pool, cfg).unwrap();
            ready_tx.send(()).unwrap();
            while !stop.load(Ordering::SeqCst) {
                let Some(ev) = watch.next(Duration::from_millis(50)).unwrap() else {
                    continue;
                };
                let event_at = Instant::now();
                if let Some(r) = net.repair(&ev).unwrap() {
                    let _ = tx.send((r, event_at, Instant::now(), net.bridge_index()));
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let (c1a, c1b, c2a) = (&c.containers[0], &c.containers[1], &c.containers[2]);
        let cross = ContinuousPing::start(&c2a.ns, c1a.ip);
        let local = ContinuousPing::start(&c1b.ns, c1a.ip);
        std::thread::sleep(Duration::from_millis(300));

        let start = Instant::now();
        run("ip", &["-n", &c.hosts[0].ns, "link", "del", "cni0"]);
        let (r, event_at, done_at, index) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("bridge not repaired within 10 s");
        let BridgeRepair::Bridge { ports, .. } = &r else {
            panic!("unexpected repair {r:?}");
        };
        assert_eq!(ports, &want, "the ports put back");
        let (read_index, on_bridge) = bridge_and_ports(&c, 0);
        assert_eq!(on_bridge, want, "ports on cni0, read back");
        assert_eq!(read_index, index, "the network follows the new bridge");
        assert!(c.all_pairs_ping().is_empty());
        std::thread::sleep(Duration::from_millis(200));
        let (cross, local) = (cross.stop().line, local.stop().line);
        stop.store(true, Ordering::SeqCst);
        repairer.join().unwrap();
        println!("network_drift: cni0 deleted on h1, BridgeRepair from the watch: {r}");
        println!(
            "  event → repaired {:.3} ms; command start → repaired {:.3} ms",
            (done_at - event_at).as_secs_f64() * 1e3,
            (done_at - start).as_secs_f64() * 1e3
        );
        println!("  ping c2a → c1a every 10 ms: {cross}");
        println!("  ping c1b → c1a (same bridge) every 10 ms: {local}");
    });
}

#[test]
fn network_drift_ensure_puts_ports_back_on_a_bridge_it_makes() {
    if !privileged() {
        return;
    }
    let c = cluster("dde", 2, 2);
    let h1 = &c.hosts[0];
    // Two veths that must stay off the bridge: another runtime's, and
    // one with the derived name of a live allocation but not its MAC.
    run(
        "ip",
        &[
            "-n",
            &h1.ns,
            "link",
            "add",
            "vethforeign0",
            "up",
            "type",
            "veth",
            "peer",
            "name",
            "vethforeign1",
        ],
    );
    let mut pool = c.pool(0);
    pool.allocate("ghost", "eth0").unwrap();
    let ghost = host_veth_name("ghost", "eth0").unwrap();
    run(
        "ip",
        &[
            "-n",
            &h1.ns,
            "link",
            "add",
            &ghost,
            "address",
            "02:00:00:00:00:99",
            "up",
            "type",
            "veth",
            "peer",
            "name",
            "ghostpeer",
        ],
    );
    // The bridge goes while nobody watches: its ports are left on none.
    run("ip", &["-n", &h1.ns, "link", "del", "cni0"]);
    let want = container_ports(&c, 0);
    for p in &want {
        let l = &c.ip_json(&h1.ns, &["link", "show", "dev", p])[0];
        assert!(l.get("master").is_none(), "{p} has a master: {l}");
    }
    let t = Instant::now();
    let net = BridgeNetwork::ensure(&h1.handle, pool, bridge_config(&c, 0)).unwrap();
    let took = t.elapsed();
    let (index, on_bridge) = bridge_and_ports(&c, 0);
    assert_eq!(on_bridge, want, "exactly the containers' ports, read back");
    assert_eq!(index, net.bridge_index());
    for other in ["vethforeign0", ghost.as_str()] {
        let l = &c.ip_json(&h1.ns, &["link", "show", "dev", other])[0];
        assert!(l.get("master").is_none(), "{other} was taken: {l}");
    }
    // Nothing left to put back: a second call changes nothing.
    assert!(net.reattach_ports().unwrap().is_empty());
    assert!(c.all_pairs_ping().is_empty());
    println!(
        "network_drift: ensure found cni0 missing and made it with {} ports in {:.3} ms \
         (foreign veth and name-only match left off)",
        want.len(),
        took.as_secs_f64() * 1e3
    );
}

#[test]
fn network_drift_deleted_vxlan_is_repaired_without_errors() {
    if !privileged() {
        return;
    }
    let c = cluster("ddv", 3, 1);
    let (ns, cfg, peers) = (c.hosts[0].ns.clone(), c.node_config(0), c.peers_of(0));
    let backend = Backend::Vxlan(VxlanConfig::default());
    let stop = AtomicBool::new(false);
    // Every result of DriftRepair::repair that is not Ok(None).
    let (tx, rx) = mpsc::channel::<(Result<String, String>, Instant, Instant)>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let vx = NodeConfig::VXLAN_DEV;
    let routes_before = c.cnet_routes(0);
    std::thread::scope(|s| {
        let repairer = s.spawn(|| {
            let h = Handle::named(&ns).unwrap();
            let mut watch = Watch::all(&h).unwrap();
            let node = Node::new(&h, cfg.clone()).unwrap();
            let mut drift = DriftRepair::new();
            assert!(drift
                .reconcile_peers(&node, &backend, &peers)
                .unwrap()
                .is_noop());
            ready_tx.send(()).unwrap();
            while !stop.load(Ordering::SeqCst) {
                let Some(ev) = watch.next(Duration::from_millis(50)).unwrap() else {
                    continue;
                };
                let event_at = Instant::now();
                let r = match drift.repair(&node, &ev) {
                    Ok(None) => continue,
                    Ok(Some(Repair::Full { reason, report })) if report.is_ok() => Ok(reason),
                    Ok(Some(r)) => Ok(format!("{r:?}")),
                    Err(e) => Err(e.to_string()),
                };
                let _ = tx.send((r, event_at, Instant::now()));
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let (c1, c2) = (&c.containers[0], &c.containers[1]);
        let ping = ContinuousPing::start(&c2.ns, c1.ip);
        std::thread::sleep(Duration::from_millis(300));

        let mut table = Vec::new();
        for (cmd, named) in [("del", "deleted"), ("set", "set down")] {
            let args: Vec<&str> = match cmd {
                "del" => vec!["-n", &c.hosts[0].ns, "link", "del", vx],
                _ => vec!["-n", &c.hosts[0].ns, "link", "set", vx, "down"],
            };
            let start = Instant::now();
            run("ip", &args);
            let (first, event_at, done_at) = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{vx} {named}: not repaired within 10 s"));
            // What else the same fault brings (its own and old events).
            std::thread::sleep(Duration::from_millis(300));
            let more: Vec<Result<String, String>> = rx.try_iter().map(|(r, _, _)| r).collect();
            let first = first.unwrap_or_else(|e| panic!("{vx} {named}: repair failed: {e}"));
            assert_eq!(first, format!("device {vx} {named}"));
            let errs: Vec<&String> = more.iter().filter_map(|r| r.as_ref().err()).collect();
            assert!(errs.is_empty(), "{vx} {named}: repair errors {errs:?}");
            table.push(format!(
                "{vx} {named:<8}: event → repaired {:.3} ms, command start → repaired {:.3} ms, \
                 repairs after it: {}",
                (done_at - event_at).as_secs_f64() * 1e3,
                (done_at - start).as_secs_f64() * 1e3,
                more.len()
            ));
        }
        assert!(c.all_pairs_ping().is_empty());
        let summary = ping.stop().line;
        stop.store(true, Ordering::SeqCst);
        repairer.join().unwrap();
        println!("network_drift: DriftRepair on h1 (vxlan, 3 hosts), no errors:");
        for l in &table {
            println!("  {l}");
        }
        println!("  ping c2a → c1a every 10 ms throughout: {summary}");
    });
    assert_eq!(c.cnet_routes(0), routes_before);
    let fdb = c.bridge_json(&c.hosts[0].ns, &["fdb", "show", "dev", vx]);
    for h in &c.hosts[1..] {
        let mac = vtep_mac_for(&h.role).to_string();
        assert!(
            fdb.as_array()
                .unwrap()
                .iter()
                .any(|f| f["mac"] == mac.as_str() && f["dst"] == h.underlay.to_string()),
            "no FDB entry for {}: {fdb}",
            h.role
        );
    }
}
