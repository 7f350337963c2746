//! Issue 19 at a size CI can run: 10 host namespaces with real node agents
//! (vxlan, one etcd), and 100 simulated nodes (a `Member` each, the kernel
//! replaced by a recorder) against a real etcd. The benchmark
//! (`benches/scale.rs`) runs the same at 100 real and 1,000 simulated
//! nodes and times it; these tests assert only what must hold at any
//! size, never a time:
//!
//! - every node converges to exactly the lease set (every other node's
//!   subnet, nothing else), a join and a leave reach every node;
//! - real nodes: containers on random pairs of hosts ping each other;
//! - simulated nodes: renewals fire no lease event (no key is written, so
//!   no node's watch wakes).
//!
//! Everything runs in namespaces the tests made; guards stop the agents,
//! the simulated nodes and etcd and delete the namespaces, also on panic.
#![cfg(feature = "etcd")]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cnet_core::IpNet;
use common::agents::{
    agent_binary, attach_containers, cnet_routes, make_host, underlay_with_etcd, Agent, Host,
};
use common::etcd::Etcd;
use common::scale::{
    await_started, etcd_leases, raise_nofile, sim_config, EtcdMetrics, RouteLog, SimCluster,
};

/// Wait (at most `bound`, a liveness bound, not a measure) for `f`; what
/// it last said is in the panic otherwise.
fn wait_until(what: &str, bound: Duration, mut f: impl FnMut() -> Result<(), String>) {
    let t = Instant::now();
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if t.elapsed() > bound => panic!("{what}: not after {bound:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Hosts whose protocol-119 routes (as their route watch saw them) are not
/// exactly the other hosts' subnets.
fn routes_off(logs: &[RouteLog], subnets: &[IpNet]) -> Result<(), String> {
    let off: Vec<String> = logs
        .iter()
        .enumerate()
        .filter_map(|(i, log)| {
            let want: BTreeSet<IpNet> = subnets
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, s)| *s)
                .collect();
            let now = log.get().now.clone();
            (now != want).then(|| format!("host {i}: has {now:?}, wants {want:?}"))
        })
        .collect();
    if off.is_empty() {
        Ok(())
    } else {
        Err(off.join("; "))
    }
}

#[test]
fn scale_10_real_nodes_converge_ping_and_see_a_join_and_a_leave() {
    if !common::privileged() {
        return;
    }
    let Some(bin) = agent_binary() else {
        return;
    };
    let n = 10u8;
    let tmp = tempfile::tempdir().unwrap();
    let (ul_ns, etcd) = underlay_with_etcd("sc10");
    let ul = ul_ns.handle();
    let mut hosts: Vec<Host> = (1..=n).map(|i| make_host(&ul, i, tmp.path())).collect();
    let mut logs: Vec<RouteLog> = hosts.iter().map(|h| RouteLog::start(&h.ns)).collect();

    // All agents started together (lease TTL 10 s).
    let mut agents: Vec<Agent> = hosts
        .iter()
        .map(|h| Agent::spawn_ttl(&bin, &h.ns, &h.name, &etcd.url, &h.ipam, 10))
        .collect();
    let mut subnets: Vec<IpNet> = agents.iter_mut().map(await_started).collect();
    let distinct: BTreeSet<IpNet> = subnets.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        subnets.len(),
        "a subnet given twice: {subnets:?}"
    );
    wait_until(
        "every host routes exactly the others",
        Duration::from_secs(60),
        || routes_off(&logs, &subnets),
    );

    // One container per host; a few random pairs ping.
    for (h, s) in hosts.iter_mut().zip(&subnets) {
        attach_containers(h, *s, 1);
    }
    let mut pairs = Vec::new();
    while pairs.len() < 4 {
        let (a, b) = (
            fastrand::usize(..hosts.len()),
            fastrand::usize(..hosts.len()),
        );
        if a != b {
            pairs.push((a, b));
        }
    }
    for (a, b) in pairs {
        let (src, dst) = (&hosts[a].containers[0].0, hosts[b].containers[0].2);
        wait_until(
            &format!("{} pings {dst}", hosts[a].name),
            Duration::from_secs(20),
            || {
                src.ping(&dst.to_string())
                    .then_some(())
                    .ok_or_else(|| "no reply".into())
            },
        );
    }

    // A join: every host routes the new one, which routes them all.
    let host = make_host(&ul, n + 1, tmp.path());
    logs.push(RouteLog::start(&host.ns));
    let mut joiner = Agent::spawn_ttl(&bin, &host.ns, &host.name, &etcd.url, &host.ipam, 10);
    let new = await_started(&mut joiner);
    hosts.push(host);
    agents.push(joiner);
    subnets.push(new);
    wait_until(
        "every host routes the joiner",
        Duration::from_secs(60),
        || routes_off(&logs, &subnets),
    );

    // A leave (SIGTERM: the lease is released): every host drops it.
    agents.pop().unwrap().stop();
    subnets.pop();
    logs.pop();
    wait_until(
        "every host dropped the leaver",
        Duration::from_secs(60),
        || routes_off(&logs, &subnets),
    );
    // An independent reader agrees with the route watches.
    for (i, h) in hosts.iter().take(n as usize).enumerate() {
        let got: BTreeSet<String> = cnet_routes(&h.ns)
            .into_iter()
            .map(|r| r.split(' ').next().unwrap().to_string())
            .collect();
        let want: BTreeSet<String> = subnets
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| s.to_string())
            .collect();
        assert_eq!(got, want, "{}: ip route show proto 119", h.name);
    }
}

#[test]
fn scale_100_simulated_nodes_converge_exactly_see_a_join_and_a_leave_and_renew_quietly() {
    if !common::privileged() {
        return;
    }
    raise_nofile();
    let Some(etcd) = Etcd::start("sc100") else {
        return;
    };
    // TTL 6 s: renewals every 2 s, so the quiet part sees several.
    let cfg = sim_config(
        &etcd.ns.name,
        &etcd.url,
        "10.244.0.0/16",
        Duration::from_secs(6),
    );
    let mut sims = SimCluster::new(cfg.clone());
    sims.start(100);
    if let Err(left) = sims.wait_converged(Duration::from_secs(120)) {
        panic!(
            "{} nodes never converged: {left:?}; troubles: {:?}",
            left.len(),
            sims.troubles()
        );
    }

    // Exactly etcd's lease set: every other node's subnet, nothing else.
    let truth = etcd_leases(&cfg);
    assert_eq!(truth.len(), 100, "etcd holds {} leases", truth.len());
    for node in &sims.nodes {
        let want: Vec<(IpNet, String)> = truth
            .iter()
            .filter(|l| l.node != node.name)
            .map(|l| (l.subnet, l.node.clone()))
            .collect();
        let got: Vec<(IpNet, String)> = node
            .rec()
            .peers
            .iter()
            .map(|(s, n)| (*s, n.clone()))
            .collect();
        assert_eq!(got, want, "{}: its peers against etcd's leases", node.name);
    }

    // A join reaches all; a leave (the lease released) too.
    let joined = sims.start(1).start;
    if let Err(left) = sims.wait_converged(Duration::from_secs(60)) {
        panic!("the join did not reach {left:?}");
    }
    let subnet = sims.nodes[joined].subnet().unwrap();
    let mut leaver = sims.nodes.pop().unwrap();
    leaver.stop(true);
    if let Err(left) = sims.wait_converged(Duration::from_secs(60)) {
        panic!("the leave of {subnet} did not reach {left:?}");
    }
    for node in &sims.nodes {
        let r = node.rec();
        assert!(
            r.added.contains_key(&subnet),
            "{} never had {subnet}",
            node.name
        );
        assert!(
            r.removed.contains_key(&subnet),
            "{} never dropped {subnet}",
            node.name
        );
    }

    // Quiet: while every node renews (at least twice, counted by etcd), no
    // node is given a lease event and no key is written.
    let counts = sims.counts();
    let before = EtcdMetrics::read(&etcd.ns.name, &etcd.url);
    wait_until("200 keep-alives", Duration::from_secs(120), || {
        let d = EtcdMetrics::read(&etcd.ns.name, &etcd.url).since(&before);
        let k = d.method("LeaseKeepAlive");
        (k >= 200.0)
            .then_some(())
            .ok_or_else(|| format!("{k} keep-alives"))
    });
    let d = EtcdMetrics::read(&etcd.ns.name, &etcd.url).since(&before);
    assert_eq!(
        sims.counts(),
        counts,
        "lease events during renewals ({})",
        d.by_method()
    );
    assert_eq!(
        d.method("Txn") + d.method("Put"),
        0.0,
        "keys written: {}",
        d.by_method()
    );
    let troubles = sims.troubles();
    assert!(troubles.is_empty(), "troubles: {troubles:?}");
}
