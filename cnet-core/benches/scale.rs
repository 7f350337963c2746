//! Issue 19's measure: node agents following each other through one etcd,
//! at N real hosts (namespaces, `node-agent` processes, vxlan) and N
//! simulated nodes (a `network::Member` each over its own `EtcdSession`,
//! the kernel replaced by a recorder; many per process, one thread each).
//! Prints figures; asserts nothing about time. Run as root:
//!
//! ```text
//! cargo bench -p cnet-core --all-features --bench scale
//! CNET_SCALE_REAL=10,30,60,100 CNET_SCALE_SIM=100,1000 cargo bench … --bench scale
//! CNET_SCALE_AGENT=/tmp/node-agent-old CNET_SCALE_REAL=10,30,60 CNET_SCALE_SIM=0 …
//! ```
//!
//! Environment: `CNET_SCALE_REAL` (sizes of real runs, default 100; 0
//! none), `CNET_SCALE_SIM` (simulated, default 1000; 0 none),
//! `CNET_SCALE_AGENT` (the agent binary; default the `node-agent` example
//! of this target directory, release then debug: build it with `cargo
//! build -p cnet-core --features etcd --example node-agent`),
//! `CNET_SCALE_IDLE` (seconds of the idle window, default 60),
//! `CNET_SCALE_TTL` (lease TTL in seconds, default 60), `CNET_SCALE_PINGS`
//! (random container pairs pinged on real hosts, default 20).
//!
//! For each size:
//! - **start-up**: all N nodes started together; the time until every node
//!   has exactly the others (real: the last route change seen by the hosts'
//!   route watches; simulated: the recorders' last change), and the lost
//!   compare-and-swap races: etcd's Txn count minus 2N (each node's
//!   network registration and its winning take are one Txn each);
//! - **idle** over the window (renewals at a third of the TTL, so a 60 s
//!   window holds every node's 3 renewals whatever their phase): etcd
//!   requests per second by gRPC method and MB/s etcd sent
//!   (`grpc_server_handled_total`, `etcd_network_client_grpc_sent_bytes_total`
//!   from its /metrics), agents' CPU (real: utime+stime of each agent
//!   process; simulated: this whole process);
//! - **one join, one leave**: propagation to every other node, measured
//!   from the moment etcd published the lease's put or delete (the first
//!   moment a watcher had it: a watch of this benchmark's own, or a node)
//!   to the route event on each host (real) or the recorder's timestamp
//!   (simulated); etcd requests and bytes of the
//!   change (everything etcd did from the joiner's start until all had it,
//!   plus a second).
//!
//! The last line reads `join reaches all N nodes: p50 X ms, p99 Y ms; idle
//! etcd requests/s Z` for the largest simulated size (else the largest
//! real one), named on the line before.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cnet_core::IpNet;
use common::agents::{attach_containers, make_host, underlay_with_etcd, Agent, Host};
use common::etcd::Etcd;
use common::scale::{
    await_started, cpu_secs, etcd_leases, ms_since, raise_nofile, sim_config, EtcdMetrics,
    MetricsDelta, Observer, RouteLog, SimCluster, Spread,
};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn sizes(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect()
}

/// The agent to measure: `CNET_SCALE_AGENT`, else this target directory's
/// `node-agent` example.
fn agent_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CNET_SCALE_AGENT") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?.parent()?;
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("examples").join("node-agent"))
        .find(|p| p.is_file())
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    idle: Duration,
    ttl: Duration,
    pings: usize,
}

/// One size's figures.
#[derive(Debug)]
struct Run {
    what: String,
    n: usize,
    startup: Option<f64>,
    startup_txn: f64,
    idle: MetricsDelta,
    idle_cpu: f64,
    join: Option<Spread>,
    join_etcd: MetricsDelta,
    leave: Option<Spread>,
    leave_etcd: MetricsDelta,
    notes: Vec<String>,
}

impl Run {
    fn lost(&self) -> f64 {
        self.startup_txn - 2.0 * self.n as f64
    }
}

fn main() {
    if !common::privileged() {
        return;
    }
    let nofile = raise_nofile();
    let s = Settings {
        idle: Duration::from_secs(env_num("CNET_SCALE_IDLE", 60)),
        ttl: Duration::from_secs(env_num("CNET_SCALE_TTL", 60)),
        pings: env_num("CNET_SCALE_PINGS", 20) as usize,
    };
    let real_sizes = sizes("CNET_SCALE_REAL", "100");
    let sim_sizes = sizes("CNET_SCALE_SIM", "1000");
    println!(
        "scale: real {real_sizes:?}, simulated {sim_sizes:?}; idle window {:?}, TTL {:?}; \
         open files {nofile}; {} cores",
        s.idle,
        s.ttl,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut runs = Vec::new();
    if !real_sizes.is_empty() {
        match agent_path() {
            Some(bin) => {
                for &n in &real_sizes {
                    runs.push(real(n, &bin, s));
                }
            }
            None => println!(
                "SKIPPED real nodes: no agent binary (CNET_SCALE_AGENT, or cargo build -p \
                 cnet-core --features etcd --example node-agent)"
            ),
        }
    }
    for &n in &sim_sizes {
        runs.push(simulated(n, s));
    }
    table(&runs, s);
    let last = runs
        .iter()
        .filter(|r| r.what.starts_with("simulated"))
        .max_by_key(|r| r.n)
        .or_else(|| runs.iter().max_by_key(|r| r.n));
    if let Some(r) = last {
        let j = r.join.unwrap_or(Spread::of(&[]));
        println!("largest run: {} nodes, {}", r.n, r.what);
        println!(
            "join reaches all {} nodes: p50 {:.0} ms, p99 {:.0} ms; idle etcd requests/s {:.1}",
            r.n,
            j.p50,
            j.p99,
            r.idle.requests / r.idle.secs
        );
    }
}

// ---------------------------------------------------------------------------
// Real hosts

/// Start the agent for `host` (vxlan, TTL `ttl`, every other option its
/// default, as a new user runs it); its stdout lines go to the returned
/// agent's channel, its stderr to ours.
fn spawn_agent(bin: &Path, host: &Host, etcd: &str, ttl: Duration) -> Agent {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", host.ns.name))
        .arg(bin)
        .args([
            "--etcd",
            etcd,
            "--node",
            &host.name,
            "--underlay-dev",
            "eth0",
        ])
        .args(["--backend", "vxlan", "--ttl", &ttl.as_secs().to_string()])
        .arg("--ipam-dir")
        .arg(&host.ipam)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node-agent");
    let (tx, lines) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let (err, name) = (child.stderr.take().unwrap(), host.name.clone());
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("[{name} err] {l}");
        }
    });
    Agent {
        child,
        lines,
        subnet: "0.0.0.0/0".parse().unwrap(),
    }
}

/// The hosts whose routes are not exactly the other hosts' subnets.
fn off_hosts(logs: &[RouteLog], subnets: &[IpNet]) -> usize {
    let all: BTreeSet<IpNet> = subnets.iter().copied().collect();
    logs.iter()
        .zip(subnets)
        .filter(|(log, own)| {
            let r = log.get();
            r.now.len() + 1 != all.len() || r.now.contains(own) || !r.now.is_subset(&all)
        })
        .count()
}

/// Wait (checking every `every`, at most `bound`) for `f`; whether it held.
fn wait(bound: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > bound {
            return false;
        }
        std::thread::sleep(every);
    }
    true
}

fn real(n: usize, bin: &Path, s: Settings) -> Run {
    assert!((2..=200).contains(&n), "real sizes: 2 to 200 hosts");
    let what = format!("real ({})", bin.display());
    println!("\n== {n} real nodes, agent {} ==", bin.display());
    let mut notes = Vec::new();
    let tmp = tempfile::tempdir().unwrap();
    let (ul_ns, etcd) = underlay_with_etcd(&format!("bs{n}"));
    let ul = ul_ns.handle();
    let t = Instant::now();
    let mut hosts: Vec<Host> = (1..=n)
        .map(|i| make_host(&ul, i as u8, tmp.path()))
        .collect();
    let mut logs: Vec<RouteLog> = hosts.iter().map(|h| RouteLog::start(&h.ns)).collect();
    println!("{n} host namespaces in {:.1} s", t.elapsed().as_secs_f64());
    let observer = Observer::start(&etcd.ns.name, &etcd.url, "/cnet");
    let metrics = || EtcdMetrics::read(&etcd.ns.name, &etcd.url);

    // Start-up: every agent at once.
    let m0 = metrics();
    let t0 = Instant::now();
    let mut agents: Vec<Agent> = hosts
        .iter()
        .map(|h| spawn_agent(bin, h, &etcd.url, s.ttl))
        .collect();
    let mut subnets: Vec<IpNet> = agents.iter_mut().map(await_started).collect();
    let every = Duration::from_millis(20 + n as u64);
    let converged = wait(Duration::from_secs(120 + n as u64), every, || {
        off_hosts(&logs, &subnets) == 0
    });
    let startup = converged.then(|| {
        let last = logs
            .iter()
            .filter_map(|l| l.get().changed)
            .max()
            .unwrap_or(t0);
        last.saturating_duration_since(t0).as_secs_f64()
    });
    if !converged {
        notes.push(format!(
            "start-up: {} hosts never converged",
            off_hosts(&logs, &subnets)
        ));
    }
    std::thread::sleep(Duration::from_secs(1));
    let startup_etcd = metrics().since(&m0);
    println!(
        "start-up: all {n} started together, converged in {}; etcd Txn {} (lost races {}); \
         etcd did {}",
        startup.map_or("never".into(), |t| format!("{t:.2} s")),
        startup_etcd.method("Txn"),
        startup_etcd.method("Txn") - 2.0 * n as f64,
        startup_etcd.by_method()
    );

    // Containers, one per host; random pairs ping.
    let t = Instant::now();
    for (h, sub) in hosts.iter_mut().zip(&subnets) {
        attach_containers(h, *sub, 1);
    }
    let mut pairs = Vec::new();
    while pairs.len() < s.pings {
        let (a, b) = (fastrand::usize(..n), fastrand::usize(..n));
        if a != b {
            pairs.push((a, b));
        }
    }
    let failed: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = pairs
            .iter()
            .map(|&(a, b)| {
                let (src, dst) = (&hosts[a].containers[0].0, hosts[b].containers[0].2);
                let what = format!("{} → {}", hosts[a].name, hosts[b].name);
                sc.spawn(move || {
                    let ok = wait(Duration::from_secs(20), Duration::from_millis(200), || {
                        src.ping(&dst.to_string())
                    });
                    (!ok).then_some(what)
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    println!(
        "pings: {}/{} random container pairs answer ({n} containers attached and pinged in \
         {:.1} s){}",
        pairs.len() - failed.len(),
        pairs.len(),
        t.elapsed().as_secs_f64(),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; failing: {failed:?}")
        }
    );
    if !failed.is_empty() {
        notes.push(format!("pings failing: {failed:?}"));
    }

    // Idle.
    std::thread::sleep(Duration::from_secs(2));
    let pids: Vec<String> = agents.iter().map(|a| a.child.id().to_string()).collect();
    let cpu = |pids: &[String]| pids.iter().map(|p| cpu_secs(p)).sum::<f64>();
    let (c0, m0) = (cpu(&pids), metrics());
    std::thread::sleep(s.idle);
    let (c1, m1) = (cpu(&pids), metrics());
    let idle = m1.since(&m0);
    let idle_cpu = c1 - c0;
    print_idle(&idle, idle_cpu, "agents' CPU (utime+stime)");

    // One join.
    let host = make_host(&ul, (n + 1) as u8, tmp.path());
    logs.push(RouteLog::start(&host.ns));
    let m0 = metrics();
    let tj = Instant::now();
    let mut joiner = spawn_agent(bin, &host, &etcd.url, s.ttl);
    let name = host.name.clone();
    hosts.push(host);
    let new = await_started(&mut joiner);
    agents.push(joiner);
    subnets.push(new);
    let published = observer.wait_for(Duration::from_secs(30), |o| o.put_of(&name, tj));
    let all_have = wait(Duration::from_secs(60), every, || {
        logs[..n].iter().all(|l| l.get().now.contains(&new))
    });
    let joined_converged = wait(Duration::from_secs(60), every, || {
        off_hosts(&logs, &subnets) == 0
    });
    std::thread::sleep(Duration::from_secs(1));
    let join_etcd = metrics().since(&m0);
    let join = match (published, all_have) {
        (Some((tp, _)), true) => {
            let at: Vec<Instant> = logs[..n].iter().map(|l| l.get().added[&new]).collect();
            Some(Spread::of(&ms_since(first(tp, &at), &at)))
        }
        _ => {
            notes.push(format!(
                "join: published {}, reached all {all_have}",
                published.is_some()
            ));
            None
        }
    };
    if !joined_converged {
        notes.push("join: the joiner or a host is not exactly converged".into());
    }
    print_change("join", n, join, &join_etcd);

    // One leave: SIGTERM, the agent releases its lease.
    let m0 = metrics();
    let tl = Instant::now();
    let mut leaver = agents.pop().unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(leaver.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let st = leaver.wait_exit(Duration::from_secs(30));
    if !st.is_some_and(|s| s.success()) {
        notes.push(format!("leave: the agent ended with {st:?}"));
    }
    subnets.pop();
    let published = observer.wait_for(Duration::from_secs(30), |o| o.gone_of(new, tl));
    let all_dropped = wait(Duration::from_secs(60), every, || {
        logs[..n].iter().all(|l| !l.get().now.contains(&new))
    });
    std::thread::sleep(Duration::from_secs(1));
    let leave_etcd = metrics().since(&m0);
    let leave = match (published, all_dropped) {
        (Some(tp), true) => {
            let at: Vec<Instant> = logs[..n].iter().map(|l| l.get().removed[&new]).collect();
            Some(Spread::of(&ms_since(first(tp, &at), &at)))
        }
        _ => {
            notes.push(format!(
                "leave: published {}, reached all {all_dropped}",
                published.is_some()
            ));
            None
        }
    };
    print_change("leave", n, leave, &leave_etcd);
    let resyncs: u64 = logs.iter().map(|l| l.get().resyncs).sum();
    if resyncs > 0 {
        notes.push(format!(
            "route watches overflowed {resyncs} times (listed again)"
        ));
    }
    for n in &notes {
        println!("NOTE: {n}");
    }

    // Teardown: agents first, then the namespaces.
    let t = Instant::now();
    drop(agents);
    drop(leaver);
    drop(logs);
    drop(hosts);
    drop(observer);
    drop(etcd);
    drop(ul_ns);
    println!("torn down in {:.1} s", t.elapsed().as_secs_f64());
    Run {
        what,
        n,
        startup,
        startup_txn: startup_etcd.method("Txn"),
        idle,
        idle_cpu,
        join,
        join_etcd,
        leave,
        leave_etcd,
        notes,
    }
}

// ---------------------------------------------------------------------------
// Simulated nodes

fn simulated(n: usize, s: Settings) -> Run {
    let what = "simulated (this build's Member)".to_string();
    println!("\n== {n} simulated nodes ==");
    let mut notes = Vec::new();
    let etcd = Etcd::start(&format!("bsim{n}")).expect("etcd");
    let observer = Observer::start(&etcd.ns.name, &etcd.url, "/cnet");
    let metrics = || EtcdMetrics::read(&etcd.ns.name, &etcd.url);
    // A /12: 4,096 /24s, room for the 1,000 without a full network.
    let cfg = sim_config(&etcd.ns.name, &etcd.url, "10.0.0.0/12", s.ttl);
    let mut sims = SimCluster::new(cfg.clone());
    let every = Duration::from_millis(20 + n as u64 / 5);

    let m0 = metrics();
    let t0 = Instant::now();
    sims.start(n);
    let converged = wait(Duration::from_secs(120 + n as u64 / 2), every, || {
        sims.unconverged().is_empty()
    });
    let startup = converged.then(|| {
        let last = sims.last_change().unwrap_or(t0);
        last.saturating_duration_since(t0).as_secs_f64()
    });
    if !converged {
        let left = sims.unconverged();
        notes.push(format!(
            "start-up: {} nodes never converged (e.g. {:?})",
            left.len(),
            &left[..left.len().min(5)]
        ));
    }
    std::thread::sleep(Duration::from_secs(1));
    let startup_etcd = metrics().since(&m0);
    println!(
        "start-up: all {n} started together, converged in {}; etcd Txn {} (lost races {}); \
         etcd did {}",
        startup.map_or("never".into(), |t| format!("{t:.2} s")),
        startup_etcd.method("Txn"),
        startup_etcd.method("Txn") - 2.0 * n as f64,
        startup_etcd.by_method()
    );
    check_exact(&sims, &cfg, &mut notes);

    // Idle.
    std::thread::sleep(Duration::from_secs(2));
    let counts = sims.counts();
    let (c0, m0) = (cpu_secs("self"), metrics());
    std::thread::sleep(s.idle);
    let (c1, m1) = (cpu_secs("self"), metrics());
    let idle = m1.since(&m0);
    print_idle(&idle, c1 - c0, "this process's CPU (all simulated nodes)");
    if sims.counts() != counts {
        notes.push(format!(
            "idle: lease events fired: {:?} → {:?}",
            counts,
            sims.counts()
        ));
    }

    // One join.
    let m0 = metrics();
    let tj = Instant::now();
    let j = sims.start(1).start;
    let name = sims.nodes[j].name.clone();
    let published = observer.wait_for(Duration::from_secs(60), |o| o.put_of(&name, tj));
    let new = published.map(|p| p.1);
    let all_have = new.is_some_and(|new| {
        wait(Duration::from_secs(60), every, || {
            sims.nodes[..n]
                .iter()
                .all(|x| x.rec().peers.contains_key(&new))
        })
    });
    let joined_converged = wait(Duration::from_secs(60), every, || {
        sims.unconverged().is_empty()
    });
    std::thread::sleep(Duration::from_secs(1));
    let join_etcd = metrics().since(&m0);
    let join = match (published, all_have) {
        (Some((tp, new)), true) => {
            let at: Vec<Instant> = sims.nodes[..n]
                .iter()
                .map(|x| x.rec().added[&new])
                .collect();
            Some(Spread::of(&ms_since(first(tp, &at), &at)))
        }
        _ => {
            notes.push(format!(
                "join: published {}, reached all {all_have}",
                published.is_some()
            ));
            None
        }
    };
    if !joined_converged {
        notes.push("join: not every node exactly converged".into());
    }
    print_change("join", n, join, &join_etcd);

    // One leave: the lease released.
    let m0 = metrics();
    let tl = Instant::now();
    let mut leaver = sims.nodes.pop().unwrap();
    leaver.stop(true);
    let leave = new.and_then(|new| {
        let tp = observer.wait_for(Duration::from_secs(60), |o| o.gone_of(new, tl))?;
        let ok = wait(Duration::from_secs(60), every, || {
            sims.nodes.iter().all(|x| !x.rec().peers.contains_key(&new))
        });
        ok.then(|| {
            let at: Vec<Instant> = sims.nodes.iter().map(|x| x.rec().removed[&new]).collect();
            Spread::of(&ms_since(first(tp, &at), &at))
        })
    });
    std::thread::sleep(Duration::from_secs(1));
    let leave_etcd = metrics().since(&m0);
    if leave.is_none() {
        notes.push("leave: not seen by every node".into());
    }
    print_change("leave", n, leave, &leave_etcd);
    check_exact(&sims, &cfg, &mut notes);
    let c = sims.counts();
    println!(
        "events given to the {n} nodes' sinks in all: {} all, {} put, {} gone \
         (an `all` beyond the first per node is a full list)",
        c.alls, c.puts, c.gones
    );
    let alls_extra = c.alls as i64 - (n as i64 + 1);
    if alls_extra > 0 {
        notes.push(format!("{alls_extra} full lists after the nodes' first"));
    }
    let troubles = sims.troubles();
    if !troubles.is_empty() {
        notes.push(format!(
            "{} troubles, e.g. {:?}",
            troubles.len(),
            &troubles[..troubles.len().min(5)]
        ));
    }
    for n in &notes {
        println!("NOTE: {n}");
    }
    let t = Instant::now();
    drop(leaver);
    drop(sims);
    drop(observer);
    drop(etcd);
    println!("torn down in {:.1} s", t.elapsed().as_secs_f64());
    Run {
        what,
        n,
        startup,
        startup_txn: startup_etcd.method("Txn"),
        idle,
        idle_cpu: c1 - c0,
        join,
        join_etcd,
        leave,
        leave_etcd,
        notes,
    }
}

/// Every node's peers are exactly etcd's leases but its own.
fn check_exact(sims: &SimCluster, cfg: &common::scale::SimConfig, notes: &mut Vec<String>) {
    let truth = etcd_leases(cfg);
    let wrong: Vec<&str> = sims
        .nodes
        .iter()
        .filter(|x| {
            let r = x.rec();
            let want: Vec<(IpNet, &str)> = truth
                .iter()
                .filter(|l| l.node != x.name)
                .map(|l| (l.subnet, l.node.as_str()))
                .collect();
            let got: Vec<(IpNet, &str)> = r.peers.iter().map(|(s, n)| (*s, n.as_str())).collect();
            got != want
        })
        .map(|x| x.name.as_str())
        .collect();
    println!(
        "exact: {}/{} nodes have exactly etcd's {} leases but their own",
        sims.nodes.len() - wrong.len(),
        sims.nodes.len(),
        truth.len()
    );
    if !wrong.is_empty() {
        notes.push(format!(
            "{} nodes differ from etcd's lease set, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        ));
    }
}

/// When etcd published an event: the first moment a watcher had it (the
/// benchmark's own watch at `observed`, or a node, `at`). Every watcher
/// gets it from etcd at about the same moment, and the benchmark's watch
/// thread is as late as any node's under load.
fn first(observed: Instant, at: &[Instant]) -> Instant {
    at.iter()
        .copied()
        .min()
        .map_or(observed, |a| a.min(observed))
}

// ---------------------------------------------------------------------------
// Printing

fn mb(bytes: f64) -> f64 {
    bytes / 1e6
}

fn print_idle(d: &MetricsDelta, cpu: f64, whose: &str) {
    println!(
        "idle {:.0} s: etcd {:.2} requests/s ({}), Range {:.2}/s, {:.4} MB/s sent; {whose} \
         {:.2} s ({:.2} % of a core)",
        d.secs,
        d.requests / d.secs,
        d.by_method(),
        d.method("Range") / d.secs,
        mb(d.sent_bytes) / d.secs,
        cpu,
        100.0 * cpu / d.secs
    );
}

fn print_change(what: &str, n: usize, s: Option<Spread>, d: &MetricsDelta) {
    println!(
        "{what}: reaches all {n} other nodes: {}; etcd {} requests ({}), {:.4} MB sent",
        s.map_or("NOT SEEN BY ALL".into(), |s| s.to_string()),
        d.requests,
        d.by_method(),
        mb(d.sent_bytes)
    );
}

fn table(runs: &[Run], s: Settings) {
    if runs.is_empty() {
        return;
    }
    println!("\n| measured | {} |", {
        let h: Vec<String> = runs
            .iter()
            .map(|r| {
                let kind = if r.what.starts_with("simulated") {
                    "sim"
                } else {
                    "real"
                };
                format!("{kind} N={}", r.n)
            })
            .collect();
        h.join(" | ")
    });
    println!("|---|{}", "---|".repeat(runs.len()));
    let row = |name: &str, f: &dyn Fn(&Run) -> String| {
        let cells: Vec<String> = runs.iter().map(f).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    let secs = s.idle.as_secs();
    row(&format!("idle: agents' CPU over {secs} s"), &|r| {
        format!("{:.2} s", r.idle_cpu)
    });
    row("idle: etcd Range requests/s; MB/s etcd sends", &|r| {
        format!(
            "{:.2}; {:.4}",
            r.idle.method("Range") / r.idle.secs,
            mb(r.idle.sent_bytes) / r.idle.secs
        )
    });
    row("idle: etcd requests/s (all methods)", &|r| {
        format!("{:.2}", r.idle.requests / r.idle.secs)
    });
    row("one join: etcd requests / MB sent", &|r| {
        format!(
            "{:.0} / {:.3}",
            r.join_etcd.requests,
            mb(r.join_etcd.sent_bytes)
        )
    });
    row("one leave: etcd requests / MB sent", &|r| {
        format!(
            "{:.0} / {:.3}",
            r.leave_etcd.requests,
            mb(r.leave_etcd.sent_bytes)
        )
    });
    row(
        "all N started together: converged in (lost races)",
        &|r| match r.startup {
            Some(t) => format!("{t:.2} s ({:.0})", r.lost()),
            None => format!("never ({:.0})", r.lost()),
        },
    );
    let spread = |s: Option<Spread>| {
        s.map_or("not seen by all".into(), |s| {
            format!(
                "{:.0}/{:.0}/{:.0} ms (p99 {:.0})",
                s.min, s.p50, s.max, s.p99
            )
        })
    };
    row("join seen on the others: min/median/max", &|r| {
        spread(r.join)
    });
    row("leave seen on the others: min/median/max", &|r| {
        spread(r.leave)
    });
    row("notes", &|r| {
        if r.notes.is_empty() {
            "-".into()
        } else {
            r.notes.join("; ")
        }
    });
}
