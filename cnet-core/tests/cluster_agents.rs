//! Flannel's design end to end: a real etcd and three node agents
//! (`examples/rust/node_agent.rs`, one process per host namespace), two
//! containers attached to each host's bridge with `BridgeNetwork::attach`.
//!
//! ```text
//!   ul: br0 192.0.2.0/24 ── e0: etcd on 192.0.2.254
//!        │ p1 .11     │ p2 .12     │ p3 .13
//!        h1           h2           h3          each: node-agent (vxlan), cni0, 2 containers
//! ```
//!
//! All 6×5 container pairs ping; an agent stopped with SIGTERM releases its
//! lease and the others remove its routes, neighbour and FDB entry; the host
//! "reboots" (namespaces deleted and rebuilt, agent restarted) and gets its
//! subnet back; every container detached leaves no link, address or
//! allocation. Everything runs in namespaces this test made; a guard kills
//! the agents and etcd and deletes the namespaces, also on panic.
#![cfg(feature = "etcd")]

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use cnet_core::ipam::{FileStore, PoolConfig, PoolStore};
use cnet_core::network::{vtep_mac_for, ContainerNs};
use common::agents::{
    agent_binary, attach_containers, cnet_routes, make_host, underlay_with_etcd, Agent, Host,
};
use common::TestNs;

fn all_pairs_ping(hosts: &[Host], deadline: Duration) -> Vec<String> {
    let all: Vec<(&TestNs, IpAddr)> = hosts
        .iter()
        .flat_map(|h| h.containers.iter().map(|(ns, _, ip)| (ns, *ip)))
        .collect();
    let started = Instant::now();
    let mut failing: Vec<String>;
    loop {
        failing = std::thread::scope(|s| {
            let hs: Vec<_> = all
                .iter()
                .flat_map(|(a, _)| all.iter().map(move |(b_ns, b)| (*a, *b_ns, *b)))
                .filter(|(a, b_ns, _)| a.name != b_ns.name)
                .map(|(a, _, b)| {
                    s.spawn(move || (a.ping(&b.to_string()), format!("{} → {b}", a.name)))
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap())
                .filter(|(ok, _)| !ok)
                .map(|(_, what)| what)
                .collect()
        });
        if failing.is_empty() || started.elapsed() > deadline {
            return failing;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn cluster_node_agents_with_etcd_all_pairs_ping_leave_and_reboot() {
    if !common::privileged() {
        return;
    }
    let Some(bin) = agent_binary() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (ul_ns, etcd) = underlay_with_etcd("ag");
    let ul = ul_ns.handle();

    let mut hosts: Vec<Host> = (1..=3).map(|n| make_host(&ul, n, tmp.path())).collect();
    let started = Instant::now();
    let mut agents: Vec<Agent> = hosts
        .iter()
        .map(|h| Agent::start(&bin, &h.ns, &h.name, &etcd.url, &h.ipam))
        .collect();
    eprintln!("3 agents up in {:?}", started.elapsed());
    for (h, a) in hosts.iter_mut().zip(&agents) {
        attach_containers(h, a.subnet, 2);
    }
    let failing = all_pairs_ping(&hosts, Duration::from_secs(15));
    assert!(failing.is_empty(), "pairs that do not ping: {failing:?}");
    eprintln!("30/30 pairs ping after {:?}", started.elapsed());

    // Every host has a route, a neighbour and an FDB entry per peer.
    for (i, h) in hosts.iter().enumerate() {
        let routes = cnet_routes(&h.ns);
        for (j, a) in agents.iter().enumerate() {
            if i != j {
                assert!(
                    routes.iter().any(|r| r.starts_with(&a.subnet.to_string())),
                    "{}: no route to {} in {routes:?}",
                    h.name,
                    a.subnet
                );
            }
        }
        let fdb = h.ns.bridge_json(&["fdb", "show", "dev", "cnet.vxlan"]);
        let macs: Vec<&str> = fdb
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["mac"].as_str())
            .collect();
        for (j, other) in hosts.iter().enumerate() {
            if i != j {
                let mac = vtep_mac_for(&other.name).to_string();
                assert!(
                    macs.contains(&mac.as_str()),
                    "{}: no FDB entry for {mac}: {macs:?}",
                    h.name
                );
            }
        }
    }

    // Drift: someone deletes a peer route, neighbour and FDB entry on h1;
    // h1's agent puts each back (it watches the kernel), timed from the
    // command's start.
    let h2_subnet = agents[1].subnet.to_string();
    let h2_mac = vtep_mac_for("h2").to_string();
    let vtep2 = agents[1].subnet.network().to_string();
    for (what, cmd, is_back) in [
        (
            "peer route",
            vec!["ip", "-n", &hosts[0].ns.name, "route", "del", &h2_subnet],
            Box::new(|h: &TestNs| cnet_routes(h).iter().any(|r| r.starts_with(&h2_subnet)))
                as Box<dyn Fn(&TestNs) -> bool>,
        ),
        (
            "neighbour",
            vec![
                "ip",
                "-n",
                &hosts[0].ns.name,
                "neigh",
                "del",
                &vtep2,
                "dev",
                "cnet.vxlan",
            ],
            Box::new(|h: &TestNs| {
                let v = h.ip_json(&["neigh", "show", "dev", "cnet.vxlan"]);
                v.as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["lladdr"].as_str() == Some(&h2_mac))
            }),
        ),
        (
            "FDB entry",
            vec![
                "bridge",
                "-n",
                &hosts[0].ns.name,
                "fdb",
                "del",
                &h2_mac,
                "dev",
                "cnet.vxlan",
                "dst",
                "192.0.2.12",
            ],
            Box::new(|h: &TestNs| {
                let v = h.bridge_json(&["fdb", "show", "dev", "cnet.vxlan"]);
                v.as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["mac"].as_str() == Some(&h2_mac))
            }),
        ),
    ] {
        let t = Instant::now();
        common::run(cmd[0], &cmd[1..]);
        while !is_back(&hosts[0].ns) {
            assert!(t.elapsed() < Duration::from_secs(20), "{what} not repaired");
            std::thread::sleep(Duration::from_millis(1));
        }
        eprintln!(
            "h1's agent repaired the deleted {what} within {:?} of the command",
            t.elapsed()
        );
    }
    let failing = all_pairs_ping(&hosts, Duration::from_secs(15));
    assert!(
        failing.is_empty(),
        "after the repairs, pairs that do not ping: {failing:?}"
    );

    // h3's agent stops: it releases its lease; the others drop its subnet.
    let gone = agents.pop().unwrap();
    let gone_subnet = gone.subnet;
    let t = Instant::now();
    gone.stop();
    let h3_mac = vtep_mac_for("h3").to_string();
    loop {
        let left: Vec<String> = hosts[..2]
            .iter()
            .flat_map(|h| {
                let mut v: Vec<String> = cnet_routes(&h.ns)
                    .into_iter()
                    .filter(|r| r.starts_with(&gone_subnet.to_string()))
                    .collect();
                let fdb = h.ns.bridge_json(&["fdb", "show", "dev", "cnet.vxlan"]);
                if fdb
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["mac"].as_str() == Some(&h3_mac))
                {
                    v.push(format!("{}: fdb {h3_mac}", h.name));
                }
                let neigh = h.ns.ip_json(&["neigh", "show", "dev", "cnet.vxlan"]);
                if neigh
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["lladdr"].as_str() == Some(&h3_mac))
                {
                    v.push(format!("{}: neighbour {h3_mac}", h.name));
                }
                v
            })
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "still there after h3 left: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "h3's departure programmed on h1 and h2 in {:?}",
        t.elapsed()
    );

    // h3 "reboots": its containers' and its own namespace are deleted and
    // rebuilt, the agent restarted: same subnet (the store's history).
    let h3 = hosts.pop().unwrap();
    drop(h3);
    let mut h3 = make_host(&ul, 3, tmp.path());
    let t = Instant::now();
    let a3 = Agent::start(&bin, &h3.ns, "h3", &etcd.url, &h3.ipam);
    assert_eq!(
        a3.subnet, gone_subnet,
        "a returning node gets its subnet back"
    );
    // The rebuilt host's old allocations died with its containers: gc.
    FileStore::open(&h3.ipam)
        .unwrap()
        .pool(PoolConfig::new(a3.subnet))
        .unwrap()
        .gc(&Default::default())
        .unwrap();
    attach_containers(&mut h3, a3.subnet, 2);
    agents.push(a3);
    hosts.push(h3);
    let failing = all_pairs_ping(&hosts, Duration::from_secs(15));
    assert!(
        failing.is_empty(),
        "after the reboot, pairs that do not ping: {failing:?}"
    );
    eprintln!(
        "after h3's reboot all pairs ping again in {:?}",
        t.elapsed()
    );

    // Detach every container: no link, address or allocation left.
    for h in &mut hosts {
        let net = h.net.take().unwrap();
        for (c, cid, _) in h.containers.drain(..) {
            net.detach(Some(&ContainerNs::name(&c.name)), cid.as_str(), "eth0")
                .unwrap();
            drop(c);
        }
        assert!(
            net.allocations().unwrap().is_empty(),
            "{}: allocations left",
            h.name
        );
        let ports = h.ns.ip_json(&["link", "show", "master", "cni0"]);
        assert_eq!(
            ports.as_array().unwrap().len(),
            0,
            "{}: ports left: {ports}",
            h.name
        );
    }
    for a in agents {
        a.stop();
    }
    for h in &hosts {
        assert!(
            cnet_routes(&h.ns).is_empty(),
            "{}: routes left after its agent stopped",
            h.name
        );
    }
}
