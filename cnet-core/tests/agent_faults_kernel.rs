//! The node agent under kernel faults (issue 17, section 3, kernel side):
//! real agents (`examples/rust/node_agent.rs`) on an underlay with a real
//! etcd, containers pinging every 10 ms across hosts all the time, and
//! someone deleting what the agent made.
//!
//! ```text
//!   ul: br0 192.0.2.0/24 ── etcd on 192.0.2.254
//!        │ p1 .11         │ p2 .12        (│ p3 .13)
//!        h1               h2             (h3)        each: node-agent (vxlan), cni0, containers
//!   faults on h1: ip link del cni0 (agent running) · ip link del cni0 with the
//!                 agent down, then the agent restarted · ip link del cnet.vxlan
//! ```
//!
//! Each test reads back with `ip -j -d link` and `bridge -j link` that the
//! bridge is as `BridgeNetwork::ensure` makes it and that every container
//! port is on it, up and forwarding, checks that traffic flows again, and
//! prints the pings lost and the time to repair (no timing assertions).
//! Needs the example built:
//!
//! ```sh
//! cargo build -p cnet-core --all-features --example node-agent
//! cargo test -p cnet-core --all-features --test agent_faults_kernel -- --nocapture
//! ```
#![cfg(feature = "etcd")]

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use cnet_core::network::{host_veth_name, mac_for_ip, vtep_mac_for, NodeConfig};
use cnet_test_support::ping::ContinuousPing;
use common::agents::{agent_binary, attach_containers, make_host, underlay_with_etcd, Agent, Host};
use common::etcd::Etcd;
use common::TestNs;

/// Hosts with their agents and containers. Dropped in field order: the
/// agents are killed first, then the namespaces and etcd go.
struct AgentCluster {
    agents: Vec<Agent>,
    hosts: Vec<Host>,
    _ul: TestNs,
    etcd: Etcd,
    _tmp: tempfile::TempDir,
    bin: std::path::PathBuf,
}

/// `hosts` hosts (h1…), each with its agent and `containers` containers,
/// every container reaching every other one.
fn agent_cluster(tag: &str, hosts: u8, containers: usize) -> Option<AgentCluster> {
    if !common::privileged() {
        return None;
    }
    let bin = agent_binary()?;
    let tmp = tempfile::tempdir().unwrap();
    let (ul_ns, etcd) = underlay_with_etcd(tag);
    let ul = ul_ns.handle();
    let mut hs: Vec<Host> = (1..=hosts).map(|n| make_host(&ul, n, tmp.path())).collect();
    let agents: Vec<Agent> = hs
        .iter()
        .map(|h| Agent::start(&bin, &h.ns, &h.name, &etcd.url, &h.ipam))
        .collect();
    for (h, a) in hs.iter_mut().zip(&agents) {
        attach_containers(h, a.subnet, containers);
    }
    let c = AgentCluster {
        agents,
        hosts: hs,
        _ul: ul_ns,
        etcd,
        _tmp: tmp,
        bin,
    };
    // Converged: every container reaches the first container of every
    // other host (the agents program their peers as the leases appear).
    for (i, a) in c.hosts.iter().enumerate() {
        for (j, b) in c.hosts.iter().enumerate() {
            if i != j {
                wait_ping(
                    &a.containers[0].0,
                    b.containers[0].2,
                    Duration::from_secs(20),
                );
            }
        }
    }
    Some(c)
}

/// Ping (one packet, 1 s deadline) until `dst` answers; panics after
/// `deadline`. Returns how long it took.
fn wait_ping(from: &TestNs, dst: IpAddr, deadline: Duration) -> Duration {
    let t = Instant::now();
    let dst_s = dst.to_string();
    while !from.exec_ok(&["ping", "-c", "1", "-W", "1", &dst_s]) {
        assert!(
            t.elapsed() < deadline,
            "{} does not reach {dst} within {deadline:?}",
            from.name
        );
    }
    t.elapsed()
}

/// A continuous ping (every 10 ms) named `what`.
fn start_ping(from: &TestNs, dst: IpAddr, what: &str) -> ContinuousPing {
    ContinuousPing::start(&from.name, dst).named(what)
}

/// Lines the agent prints until one contains `what` (stdout and, prefixed
/// "stderr: ", stderr). Returns every line read, the matching one last.
fn lines_until(a: &Agent, what: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match a.lines.recv_timeout(left) {
            Ok(l) => {
                let done = l.contains(what);
                seen.push(l);
                if done {
                    return seen;
                }
            }
            Err(_) => panic!("the agent did not say {what:?} within {timeout:?}; it said {seen:?}"),
        }
    }
}

/// Every line the agent prints in the next `d`.
fn lines_for(a: &Agent, d: Duration) -> Vec<String> {
    let deadline = Instant::now() + d;
    let mut seen = Vec::new();
    while let Ok(l) = a
        .lines
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        seen.push(l);
    }
    seen
}

/// The figure "in X ms" an agent's repair line ends with.
fn agent_ms(line: &str) -> f64 {
    line.rsplit(" in ")
        .next()
        .and_then(|s| s.strip_suffix(" ms"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `ip -j -d link show dev DEV`'s flags contain UP.
fn is_up(l: &serde_json::Value) -> bool {
    l["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "UP"))
}

/// Read back, independently, that host `h`'s cni0 is as ensure makes it
/// (a bridge, up, MTU 1450, its MAC derived from the gateway, the gateway
/// address) and that every container's host end is its port, up and
/// forwarding. Returns the ports' names.
fn assert_bridge_with_ports(h: &Host) -> Vec<String> {
    let gw = h.net.as_ref().unwrap().gateway();
    let br = h.ns.link_json("cni0");
    assert_eq!(br["linkinfo"]["info_kind"], "bridge", "{br}");
    assert!(is_up(&br), "cni0 is down: {br}");
    assert_eq!(br["mtu"], 1450, "{br}");
    assert_eq!(br["address"], mac_for_ip(gw.addr()).to_string(), "{br}");
    let addrs = h.ns.ip_json(&["addr", "show", "dev", "cni0"]);
    let has_gw = addrs[0]["addr_info"].as_array().unwrap().iter().any(|a| {
        a["local"] == gw.addr().to_string() && a["prefixlen"] == u64::from(gw.prefix_len())
    });
    assert!(has_gw, "cni0 lacks {gw}: {addrs}");
    let ports = h.ns.bridge_json(&["link", "show"]);
    let mut names = Vec::new();
    for (_, cid, _) in &h.containers {
        let veth = host_veth_name(cid, "eth0").unwrap();
        let l = h.ns.link_json(&veth);
        assert_eq!(
            l["master"], "cni0",
            "{}: {veth} is not on cni0: {l}",
            h.name
        );
        assert!(is_up(&l), "{}: {veth} is down: {l}", h.name);
        let p = ports
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["ifname"] == veth.as_str())
            .unwrap_or_else(|| panic!("{}: bridge link lists no {veth}: {ports}", h.name));
        assert_eq!(p["master"], "cni0", "{p}");
        assert_eq!(p["state"], "forwarding", "{p}");
        names.push(veth);
    }
    names
}

/// The agent's error lines (its stderr).
fn errors(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| l.starts_with("stderr: ")).collect()
}

#[test]
fn agent_faults_bridge_deleted_is_repaired_with_ports() {
    let Some(c) = agent_cluster("afb", 2, 2) else {
        return;
    };
    let (h1, h2) = (&c.hosts[0], &c.hosts[1]);
    let pings = [
        start_ping(&h2.containers[0].0, h1.containers[0].2, "h2c0 → h1c0"),
        start_ping(&h1.containers[1].0, h2.containers[1].2, "h1c1 → h2c1"),
        start_ping(
            &h1.containers[0].0,
            h1.containers[1].2,
            "h1c0 → h1c1 (same bridge)",
        ),
    ];
    std::thread::sleep(Duration::from_millis(300));
    lines_for(&c.agents[0], Duration::ZERO);

    let t = Instant::now();
    h1.ns.ip(&["link", "del", "cni0"]);
    let lines = lines_until(
        &c.agents[0],
        "repaired bridge cni0",
        Duration::from_secs(10),
    );
    let seen_after = t.elapsed();
    let line = lines.last().unwrap().clone();
    let ports = assert_bridge_with_ports(h1);
    assert!(line.contains("2 container ports back"), "{line}");
    let back = wait_ping(
        &h2.containers[0].0,
        h1.containers[0].2,
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(300));
    let lost: Vec<(String, (u64, u64))> = pings
        .into_iter()
        .map(|p| (p.what.clone(), p.stop().sent_lost()))
        .collect();
    let mut all = lines;
    all.extend(lines_for(&c.agents[0], Duration::from_millis(100)));
    assert!(errors(&all).is_empty(), "the agent logged errors: {all:?}");

    println!("agent_faults: cni0 deleted on h1 under a running agent (2 hosts, vxlan):");
    println!(
        "  repaired by the agent in {:.3} ms (its figure); command start → its log line {:.1} ms; \
         ports back on the new cni0: {ports:?}",
        agent_ms(&line),
        seen_after.as_secs_f64() * 1e3
    );
    println!(
        "  a new ping answered {:.1} ms after the read-back",
        back.as_secs_f64() * 1e3
    );
    for (what, (sent, lost)) in &lost {
        println!("  ping -i 0.01 {what}: {lost} of {sent} lost");
    }
}

#[test]
fn agent_faults_bridge_deleted_then_agent_restarted() {
    let Some(mut c) = agent_cluster("afr", 2, 2) else {
        return;
    };
    let pings = {
        let (h1, h2) = (&c.hosts[0], &c.hosts[1]);
        [
            start_ping(&h2.containers[0].0, h1.containers[0].2, "h2c0 → h1c0"),
            start_ping(&h1.containers[1].0, h2.containers[1].2, "h1c1 → h2c1"),
        ]
    };
    std::thread::sleep(Duration::from_millis(300));
    // The agent dies (SIGKILL: its lease, routes and vxlan device stay),
    // then someone deletes the bridge: its ports are left on no bridge.
    drop(c.agents.remove(0));
    let down_at = Instant::now();
    let h1 = &c.hosts[0];
    h1.ns.ip(&["link", "del", "cni0"]);
    for (_, cid, _) in &h1.containers {
        let veth = host_veth_name(cid, "eth0").unwrap();
        let l = h1.ns.link_json(&veth);
        assert!(l.get("master").is_none(), "{veth} still has a master: {l}");
    }
    // Its containers are cut off (100 % loss until the ports are back).
    let dst = c.hosts[1].containers[0].2.to_string();
    assert!(
        !h1.containers[0]
            .0
            .exec_ok(&["ping", "-c", "1", "-W", "1", &dst]),
        "a container reaches {dst} without its bridge?"
    );

    // The agent comes back: its ensure makes the bridge with the ports.
    let t = Instant::now();
    let a = Agent::start(&c.bin, &h1.ns, &h1.name, &c.etcd.url, &h1.ipam);
    let started = t.elapsed();
    let ports = assert_bridge_with_ports(h1);
    let back = wait_ping(
        &c.hosts[1].containers[0].0,
        h1.containers[0].2,
        Duration::from_secs(10),
    );
    let outage = down_at.elapsed();
    c.agents.insert(0, a);
    std::thread::sleep(Duration::from_millis(300));
    let lost: Vec<(String, (u64, u64))> = pings
        .into_iter()
        .map(|p| (p.what.clone(), p.stop().sent_lost()))
        .collect();
    let lines = lines_for(&c.agents[0], Duration::from_millis(100));
    assert!(
        errors(&lines).is_empty(),
        "the agent logged errors: {lines:?}"
    );
    wait_ping(
        &c.hosts[0].containers[1].0,
        c.hosts[1].containers[1].2,
        Duration::from_secs(5),
    );

    println!("agent_faults: cni0 deleted on h1 while its agent was down, agent restarted:");
    println!(
        "  agent start → bridge made with its ports {:.1} ms; then first ping answered after {:.1} ms; \
         ports back: {ports:?}",
        started.as_secs_f64() * 1e3,
        back.as_secs_f64() * 1e3
    );
    println!(
        "  outage from the bridge's deletion (agent down) to traffic back: {:.1} ms",
        outage.as_secs_f64() * 1e3
    );
    for (what, (sent, lost)) in &lost {
        println!("  ping -i 0.01 {what}: {lost} of {sent} lost (agent down included)");
    }
}

#[test]
fn agent_faults_vxlan_deleted_is_repaired_quietly() {
    let Some(c) = agent_cluster("afv", 3, 1) else {
        return;
    };
    let (h1, h2, h3) = (&c.hosts[0], &c.hosts[1], &c.hosts[2]);
    let pings = [
        start_ping(&h2.containers[0].0, h1.containers[0].2, "h2c0 → h1c0"),
        start_ping(&h1.containers[0].0, h3.containers[0].2, "h1c0 → h3c0"),
    ];
    std::thread::sleep(Duration::from_millis(300));
    lines_for(&c.agents[0], Duration::ZERO);

    let vx = NodeConfig::VXLAN_DEV;
    let t = Instant::now();
    h1.ns.ip(&["link", "del", vx]);
    let mut lines = lines_until(&c.agents[0], "repaired everything", Duration::from_secs(10));
    let seen_after = t.elapsed();
    let line = lines.last().unwrap().clone();
    assert!(
        line.contains(&format!("device {vx} deleted")),
        "a deletion is named a deletion: {line}"
    );
    let back = wait_ping(
        &h2.containers[0].0,
        h1.containers[0].2,
        Duration::from_secs(10),
    );
    wait_ping(
        &h1.containers[0].0,
        h3.containers[0].2,
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(300));
    let lost: Vec<(String, (u64, u64))> = pings
        .into_iter()
        .map(|p| (p.what.clone(), p.stop().sent_lost()))
        .collect();
    lines.extend(lines_for(&c.agents[0], Duration::from_millis(100)));
    assert!(
        errors(&lines).is_empty(),
        "the agent logged errors: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("set down")),
        "a deletion called 'set down': {lines:?}"
    );
    let repairs: Vec<&String> = lines.iter().filter(|l| l.contains("repaired")).collect();

    // Read back: the device is there, up, with an FDB entry per peer.
    let link = h1.ns.link_json(vx);
    assert!(is_up(&link), "{link}");
    let fdb = h1.ns.bridge_json(&["fdb", "show", "dev", vx]);
    for (peer, underlay) in [("h2", "192.0.2.12"), ("h3", "192.0.2.13")] {
        let mac = vtep_mac_for(peer).to_string();
        assert!(
            fdb.as_array()
                .unwrap()
                .iter()
                .any(|f| f["mac"] == mac.as_str() && f["dst"] == underlay),
            "no FDB entry {mac} dst {underlay}: {fdb}"
        );
    }

    println!("agent_faults: {vx} deleted on h1 under a running agent (3 hosts):");
    println!(
        "  repaired by the agent in {:.3} ms (its figure); command start → its log line {:.1} ms; \
         first ping answered {:.1} ms after; agent repair lines: {repairs:?}; error lines: 0",
        agent_ms(&line),
        seen_after.as_secs_f64() * 1e3,
        back.as_secs_f64() * 1e3
    );
    for (what, (sent, lost)) in &lost {
        println!("  ping -i 0.01 {what}: {lost} of {sent} lost");
    }
}
