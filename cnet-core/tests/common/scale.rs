//! Many nodes against one etcd, for the scale tests (`tests/scale.rs`) and
//! the scale benchmark (`benches/scale.rs`, which includes this module).
//!
//! ```text
//!   simulated node (one thread each, in etcd's namespace)
//!     EtcdSession ─ acquire ─▶ Member::step(Recorder) ◀─ poll(lease fd, stop fd)
//!                                   │ all / put / gone
//!                                   ▼
//!                              Recorder: peers by subnet, counters, when each
//!                              subnet came and went (what a node would program)
//!
//!   real host (tests/common/agents.rs: namespace, node-agent process)
//!     RouteLog: a cnet_core::watch::Watch on the host's routes, in a thread;
//!     the protocol-119 routes now, when each came and went
//!
//!   Observer: a watch on etcd's lease keys, the moment etcd publishes a
//!   lease (put) or its end (delete): where propagation is measured from.
//!   EtcdMetrics: etcd's /metrics, requests by gRPC method and bytes sent.
//! ```
//!
//! Everything stops on drop (threads told, nodes' leases left to expire or
//! released), also on panic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cnet_core::ipam::{
    Backoff, Call, EtcdConfig, EtcdSession, EtcdStore, LeaseStore, NodeAttrs, NodeLease,
    SubnetConfig, WatchEvent,
};
use cnet_core::network::{vtep_mac_for, Happened, Member, PeerReport, PeerSink};
use cnet_core::route::PROTOCOL;
use cnet_core::watch::{Change, Event, Groups, Watch, WatchConfig};
use cnet_core::IpNet;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use cnet_test_support::TestNs;

/// Raise this process's open-file limit to its hard limit (each simulated
/// node holds a few descriptors; etcd, started after, inherits it).
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit for the kernel to fill and read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
    r.rlim_cur
}

/// Enter the network namespace `ns` (by name) on the calling thread: only
/// for threads this module spawns for that purpose.
fn enter(ns: &str) {
    let path = format!("/run/netns/{ns}");
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------
// The recorder: what a node would program

/// How many events of each kind a node's sink was given.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub alls: u64,
    pub puts: u64,
    pub gones: u64,
}

/// A [`PeerSink`] that records what the node would program: its peers by
/// subnet (its own lease skipped, as the kernel sink does), counters, and
/// when each subnet last came and went.
#[derive(Debug)]
pub struct Recorder {
    pub node: String,
    pub peers: BTreeMap<IpNet, String>,
    pub counts: Counts,
    pub added: HashMap<IpNet, Instant>,
    pub removed: HashMap<IpNet, Instant>,
    /// When the peer set last changed.
    pub changed: Option<Instant>,
    /// What went wrong (store away, a failed renewal, a lost lease).
    pub troubles: Vec<String>,
}

impl Recorder {
    pub fn new(node: &str) -> Recorder {
        Recorder {
            node: node.to_string(),
            peers: BTreeMap::new(),
            counts: Counts::default(),
            added: HashMap::new(),
            removed: HashMap::new(),
            changed: None,
            troubles: Vec::new(),
        }
    }

    fn add(&mut self, l: &NodeLease, now: Instant) {
        // A node moved to another subnet: its old one goes.
        let old: Vec<IpNet> = self
            .peers
            .iter()
            .filter(|(s, n)| **n == l.node && **s != l.subnet)
            .map(|(s, _)| *s)
            .collect();
        for s in old {
            self.remove(s, now);
        }
        if self.peers.insert(l.subnet, l.node.clone()).as_ref() != Some(&l.node) {
            self.added.insert(l.subnet, now);
            self.changed = Some(now);
        }
    }

    fn remove(&mut self, s: IpNet, now: Instant) {
        if self.peers.remove(&s).is_some() {
            self.removed.insert(s, now);
            self.changed = Some(now);
        }
    }
}

impl PeerSink for Recorder {
    fn all(&mut self, leases: &[NodeLease]) -> cnet_core::Result<PeerReport> {
        let now = Instant::now();
        self.counts.alls += 1;
        let fresh: BTreeSet<IpNet> = leases
            .iter()
            .filter(|l| l.node != self.node)
            .map(|l| l.subnet)
            .collect();
        let stale: Vec<IpNet> = self
            .peers
            .keys()
            .filter(|s| !fresh.contains(s))
            .copied()
            .collect();
        for s in stale {
            self.remove(s, now);
        }
        let me = self.node.clone();
        for l in leases.iter().filter(|l| l.node != me) {
            self.add(l, now);
        }
        Ok(PeerReport::default())
    }

    fn put(&mut self, lease: &NodeLease) -> cnet_core::Result<PeerReport> {
        self.counts.puts += 1;
        if lease.node != self.node {
            self.add(lease, Instant::now());
        }
        Ok(PeerReport::default())
    }

    fn gone(&mut self, subnet: IpNet) -> cnet_core::Result<PeerReport> {
        self.counts.gones += 1;
        self.remove(subnet, Instant::now());
        Ok(PeerReport::default())
    }
}

// ---------------------------------------------------------------------------
// Simulated nodes

/// What simulated nodes share: etcd (its namespace and client settings),
/// the network, the TTL.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The namespace etcd is reachable from (by name).
    pub ns: String,
    pub etcd: EtcdConfig,
    pub subnets: SubnetConfig,
    pub ttl: Duration,
}

/// One simulated node: a thread with a [`Member`] over its own
/// [`EtcdSession`], applying lease events to a [`Recorder`].
#[derive(Debug)]
pub struct SimNode {
    pub name: String,
    pub rec: Arc<Mutex<Recorder>>,
    subnet: Arc<Mutex<Option<IpNet>>>,
    stop: Arc<AtomicBool>,
    leave: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl SimNode {
    /// Start node `name`: it acquires a lease (with the attributes a vxlan
    /// node publishes), then follows the others until stopped.
    pub fn start(cfg: &SimConfig, name: &str, underlay: IpAddr) -> SimNode {
        let rec = Arc::new(Mutex::new(Recorder::new(name)));
        let subnet = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let leave = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).unwrap());
        let attrs = NodeAttrs {
            underlay_ip: Some(underlay),
            backend: Some("vxlan".into()),
            vtep_mac: Some(vtep_mac_for(name)),
            ..Default::default()
        };
        let t = SimThread {
            cfg: cfg.clone(),
            name: name.to_string(),
            attrs,
            rec: rec.clone(),
            subnet: subnet.clone(),
            stop: stop.clone(),
            leave: leave.clone(),
            wake: wake.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("sim-{name}"))
            .stack_size(256 << 10)
            .spawn(move || t.run())
            .unwrap();
        SimNode {
            name: name.to_string(),
            rec,
            subnet,
            stop,
            leave,
            wake,
            thread: Some(thread),
        }
    }

    /// Its subnet, once acquired.
    pub fn subnet(&self) -> Option<IpNet> {
        *lock(&self.subnet)
    }

    pub fn rec(&self) -> MutexGuard<'_, Recorder> {
        lock(&self.rec)
    }

    /// Stop the node; with `leave`, it releases its lease first (else the
    /// lease expires by itself).
    pub fn stop(&mut self, leave: bool) {
        self.leave.store(leave, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        self.stop(false);
    }
}

struct SimThread {
    cfg: SimConfig,
    name: String,
    attrs: NodeAttrs,
    rec: Arc<Mutex<Recorder>>,
    subnet: Arc<Mutex<Option<IpNet>>>,
    stop: Arc<AtomicBool>,
    leave: Arc<AtomicBool>,
    wake: Arc<EventFd>,
}

impl SimThread {
    fn run(self) {
        enter(&self.cfg.ns);
        let ttl = self.cfg.ttl;
        let mut session = EtcdSession::new(
            self.cfg.etcd.clone(),
            self.cfg.subnets.clone(),
            Backoff::new(Duration::from_millis(100), ttl / 4),
        );
        let lease = loop {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let (name, attrs) = (&self.name, &self.attrs);
            match session.call(|l| l.acquire(name, attrs, ttl)) {
                Call::Done(Ok(l)) => break l,
                Call::Done(Err(e)) => lock(&self.rec).troubles.push(format!("acquire: {e}")),
                Call::Away { error, .. } => {
                    lock(&self.rec).troubles.push(format!("acquire: {error}"))
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        *lock(&self.subnet) = Some(lease.subnet);
        let mut m = Member::new(session, lease, self.attrs.clone(), ttl);
        while !self.stop.load(Ordering::SeqCst) {
            let happened = {
                let mut rec = lock(&self.rec);
                m.step(&mut *rec)
            };
            for h in happened {
                let what = match h {
                    Happened::Peers { .. } => continue,
                    other => format!("{other:?}"),
                };
                lock(&self.rec).troubles.push(what);
            }
            let timeout = m.wake_in();
            wait(m.as_fd(), self.wake.as_fd(), timeout);
        }
        if self.leave.load(Ordering::SeqCst) {
            if let Err(e) = m.leave() {
                lock(&self.rec).troubles.push(format!("leave: {e}"));
            }
        }
    }
}

/// Wait for the lease watch or the stop descriptor, at most `timeout`.
fn wait(leases: Option<BorrowedFd<'_>>, stop: BorrowedFd<'_>, timeout: Duration) {
    let mut fds = vec![PollFd::new(stop, PollFlags::POLLIN)];
    if let Some(fd) = leases {
        fds.push(PollFd::new(fd, PollFlags::POLLIN));
    }
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let _ = poll(&mut fds, PollTimeout::from(ms));
}

/// Simulated nodes `sim-<first>` … started together; see [`SimNode`].
#[derive(Debug)]
pub struct SimCluster {
    pub cfg: SimConfig,
    pub nodes: Vec<SimNode>,
}

impl SimCluster {
    pub fn new(cfg: SimConfig) -> SimCluster {
        SimCluster {
            cfg,
            nodes: Vec::new(),
        }
    }

    /// Start `count` more nodes (all at once); returns their indices.
    pub fn start(&mut self, count: usize) -> std::ops::Range<usize> {
        let first = self.nodes.len();
        for i in first..first + count {
            let ip: IpAddr = format!("198.18.{}.{}", i / 250, 1 + i % 250)
                .parse()
                .unwrap();
            let node = SimNode::start(&self.cfg, &format!("sim-{i}"), ip);
            self.nodes.push(node);
        }
        first..first + count
    }

    /// The subnets of the running nodes (`None` while one has none yet).
    pub fn subnets(&self) -> Option<BTreeMap<IpNet, String>> {
        self.nodes
            .iter()
            .map(|n| n.subnet().map(|s| (s, n.name.clone())))
            .collect()
    }

    /// The nodes whose peers are not exactly every other node's subnet
    /// (all of them while a node has no subnet yet).
    pub fn unconverged(&self) -> Vec<String> {
        let Some(all) = self.subnets() else {
            return self.nodes.iter().map(|n| n.name.clone()).collect();
        };
        self.nodes
            .iter()
            .filter(|n| {
                let r = n.rec();
                r.peers.len() + 1 != all.len()
                    || r.peers.iter().any(|(s, name)| all.get(s) != Some(name))
                    || all.values().filter(|v| **v != n.name).count() != r.peers.len()
            })
            .map(|n| n.name.clone())
            .collect()
    }

    /// Wait (checking every 20 ms, at most `bound`) until every node has
    /// exactly the others as peers; the nodes still not there otherwise.
    pub fn wait_converged(&self, bound: Duration) -> Result<(), Vec<String>> {
        let t = Instant::now();
        loop {
            let left = self.unconverged();
            if left.is_empty() {
                return Ok(());
            }
            if t.elapsed() > bound {
                return Err(left);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The latest moment a node's peer set changed.
    pub fn last_change(&self) -> Option<Instant> {
        self.nodes.iter().filter_map(|n| n.rec().changed).max()
    }

    /// The sum of the nodes' event counters.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for n in &self.nodes {
            let r = n.rec();
            c.alls += r.counts.alls;
            c.puts += r.counts.puts;
            c.gones += r.counts.gones;
        }
        c
    }

    /// Every trouble the nodes had, tagged with the node.
    pub fn troubles(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|n| {
                let r = n.rec();
                r.troubles
                    .iter()
                    .map(|t| format!("{}: {t}", n.name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        // Tell every node first, then join them (faster than one by one).
        for n in &self.nodes {
            n.stop.store(true, Ordering::SeqCst);
            let _ = n.wake.write(1);
        }
        self.nodes.clear();
    }
}

// ---------------------------------------------------------------------------
// Real hosts' routes

/// The protocol-119 routes of one host's main table, kept from a route
/// watch in a thread of its own: what they are now, when each subnet last
/// came and went.
#[derive(Debug, Default)]
pub struct Routes {
    pub now: BTreeSet<IpNet>,
    pub added: HashMap<IpNet, Instant>,
    pub removed: HashMap<IpNet, Instant>,
    pub changed: Option<Instant>,
    /// The watch overflowed this many times (the set was listed again).
    pub resyncs: u64,
}

/// A [`Routes`] kept up to date until drop.
#[derive(Debug)]
pub struct RouteLog {
    pub routes: Arc<Mutex<Routes>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RouteLog {
    /// Watch `host`'s routes from now on (open before its agent starts).
    pub fn start(host: &TestNs) -> RouteLog {
        let mut w = Watch::open(&host.ns, WatchConfig::new(Groups::ROUTES)).unwrap();
        let handle = host.handle();
        let routes = Arc::new(Mutex::new(Routes::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (routes.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("route-log".into())
            .stack_size(256 << 10)
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    let ev = match w.next(Duration::from_millis(200)) {
                        Ok(Some(ev)) => ev,
                        Ok(None) | Err(_) => continue,
                    };
                    let now = Instant::now();
                    let mut r = lock(&r);
                    match ev {
                        Event::Route(change, e) if e.protocol == PROTOCOL && e.table == 254 => {
                            let present = change == Change::New;
                            if present && r.now.insert(e.dst) {
                                r.added.insert(e.dst, now);
                                r.changed = Some(now);
                            } else if !present && r.now.remove(&e.dst) {
                                r.removed.insert(e.dst, now);
                                r.changed = Some(now);
                            }
                        }
                        Event::Resync => {
                            r.resyncs += 1;
                            let listed: BTreeSet<IpNet> = handle
                                .routes()
                                .list(&cnet_core::route::RouteFilter::new().protocol(PROTOCOL))
                                .map(|v| v.into_iter().map(|e| e.dst).collect())
                                .unwrap_or_default();
                            for d in listed.difference(&r.now.clone()) {
                                r.added.insert(*d, now);
                            }
                            for d in r.now.clone().difference(&listed) {
                                r.removed.insert(*d, now);
                            }
                            r.now = listed;
                            r.changed = Some(now);
                        }
                        _ => {}
                    }
                }
            })
            .unwrap();
        RouteLog {
            routes,
            stop,
            thread: Some(thread),
        }
    }

    pub fn get(&self) -> MutexGuard<'_, Routes> {
        lock(&self.routes)
    }
}

impl Drop for RouteLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// etcd's side

/// What etcd published, when: a lease put (node, subnet) or its end.
#[derive(Debug, Clone)]
pub enum Published {
    Put { node: String, subnet: IpNet },
    Gone { subnet: IpNet },
}

/// A watch on every lease key under `prefix` (`/cnet`), timestamped as it
/// arrives, until drop.
#[derive(Debug)]
pub struct Observer {
    pub seen: Arc<Mutex<Vec<(Instant, Published)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Observer {
    /// Watch from a thread in namespace `ns` (where `url` answers).
    pub fn start(ns: &str, url: &str, prefix: &str) -> Observer {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let (ns, url, prefix) = (ns.to_string(), url.to_string(), prefix.to_string());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let store = EtcdStore::open(EtcdConfig::new(&[&url], &prefix)).unwrap();
            let mut w = store.watch_prefix("networks/").unwrap();
            let _ = tx.send(());
            while !st.load(Ordering::SeqCst) {
                let ev = match w.next(Duration::from_millis(200)) {
                    Ok(Some(ev)) => ev,
                    _ => continue,
                };
                let now = Instant::now();
                let p = match ev {
                    WatchEvent::Put { key, value, .. } if key.contains("/leases/") => {
                        match serde_json::from_slice::<NodeLease>(&value) {
                            Ok(l) => Published::Put {
                                node: l.node,
                                subnet: l.subnet,
                            },
                            Err(_) => continue,
                        }
                    }
                    WatchEvent::Delete { key, .. } if key.contains("/leases/") => {
                        let tail = key.rsplit('/').next().unwrap_or_default();
                        match tail.replace('_', "/").replace('-', ":").parse() {
                            Ok(subnet) => Published::Gone { subnet },
                            Err(_) => continue,
                        }
                    }
                    _ => continue,
                };
                lock(&s).push((now, p));
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the lease observer's watch did not start");
        Observer {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// When etcd published `node`'s lease (the first put after `since`).
    pub fn put_of(&self, node: &str, since: Instant) -> Option<(Instant, IpNet)> {
        lock(&self.seen).iter().find_map(|(t, p)| match p {
            Published::Put { node: n, subnet } if n == node && *t >= since => Some((*t, *subnet)),
            _ => None,
        })
    }

    /// When etcd published the end of `subnet`'s lease (first after `since`).
    pub fn gone_of(&self, subnet: IpNet, since: Instant) -> Option<Instant> {
        lock(&self.seen).iter().find_map(|(t, p)| match p {
            Published::Gone { subnet: s } if *s == subnet && *t >= since => Some(*t),
            _ => None,
        })
    }

    /// Wait (at most `bound`) for `f` to find something.
    pub fn wait_for<T>(&self, bound: Duration, f: impl Fn(&Observer) -> Option<T>) -> Option<T> {
        let t = Instant::now();
        loop {
            if let Some(x) = f(self) {
                return Some(x);
            }
            if t.elapsed() > bound {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// etcd's counters at one moment (`/metrics`): gRPC requests handled by
/// method (the JSON gateway's requests are gRPC calls inside etcd), bytes
/// sent to clients.
#[derive(Debug, Clone, Default)]
pub struct EtcdMetrics {
    pub handled: BTreeMap<String, f64>,
    pub sent_bytes: f64,
    pub at: Option<Instant>,
}

impl EtcdMetrics {
    /// Read `url/metrics` from a thread in namespace `ns`.
    pub fn read(ns: &str, url: &str) -> EtcdMetrics {
        let (ns, url) = (ns.to_string(), format!("{url}/metrics"));
        let text = std::thread::spawn(move || {
            enter(&ns);
            ureq::get(&url)
                .timeout(Duration::from_secs(10))
                .call()
                .unwrap()
                .into_string()
                .unwrap()
        })
        .join()
        .unwrap();
        Self::parse(&text)
    }

    /// The counters of a `/metrics` text.
    pub fn parse(text: &str) -> EtcdMetrics {
        let mut m = EtcdMetrics {
            at: Some(Instant::now()),
            ..Default::default()
        };
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if name.starts_with("grpc_server_handled_total{") {
                if let Some(method) = label(name, "grpc_method") {
                    *m.handled.entry(method.to_string()).or_default() += value;
                }
            } else if name.starts_with("etcd_network_client_grpc_sent_bytes_total") {
                m.sent_bytes += value;
            }
        }
        m
    }

    /// `self − before`: requests by method (those that changed), bytes,
    /// seconds between.
    pub fn since(&self, before: &EtcdMetrics) -> MetricsDelta {
        let handled: BTreeMap<String, f64> = self
            .handled
            .iter()
            .map(|(k, v)| (k.clone(), v - before.handled.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v > 0.0)
            .collect();
        MetricsDelta {
            // (a sum from 0.0: an empty f64 sum is -0.0)
            requests: handled.values().fold(0.0, |a, b| a + b),
            handled,
            sent_bytes: self.sent_bytes - before.sent_bytes,
            secs: match (self.at, before.at) {
                (Some(a), Some(b)) => a.duration_since(b).as_secs_f64(),
                _ => 0.0,
            },
        }
    }
}

fn label<'a>(name: &'a str, key: &str) -> Option<&'a str> {
    let start = name.find(&format!("{key}=\""))? + key.len() + 2;
    let end = name[start..].find('"')? + start;
    Some(&name[start..end])
}

/// What etcd did between two [`EtcdMetrics`].
#[derive(Debug, Clone, Default)]
pub struct MetricsDelta {
    pub handled: BTreeMap<String, f64>,
    pub requests: f64,
    pub sent_bytes: f64,
    pub secs: f64,
}

impl MetricsDelta {
    pub fn method(&self, m: &str) -> f64 {
        self.handled.get(m).copied().unwrap_or(0.0)
    }

    /// `Range 12, Txn 3, …`.
    pub fn by_method(&self) -> String {
        self.handled
            .iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

// ---------------------------------------------------------------------------
// CPU time

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of process `pid` in seconds (`/proc/PID/stat`; `self`
/// for this process).
pub fn cpu_secs(pid: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15.
    let n = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (n(14) + n(15)) / clock_ticks()
}

// ---------------------------------------------------------------------------
// Figures

/// Milliseconds from `from` to each of `at` (negative when earlier: a
/// node that applied an event before the observer's own watch had it).
pub fn ms_since(from: Instant, at: &[Instant]) -> Vec<f64> {
    at.iter()
        .map(|t| match t.checked_duration_since(from) {
            Some(d) => d.as_secs_f64() * 1e3,
            None => -(from.duration_since(*t).as_secs_f64() * 1e3),
        })
        .collect()
}

/// The `q` quantile (nearest rank) of `v`.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// min / p50 / p99 / max of `v` in ms.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(v: &[f64]) -> Spread {
        Spread {
            min: quantile(v, 0.0),
            p50: quantile(v, 0.5),
            p99: quantile(v, 0.99),
            max: quantile(v, 1.0),
        }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "min {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.min, self.p50, self.p99, self.max
        )
    }
}

/// Settings for simulated nodes against the etcd at `url` in `ns`, keys
/// under `/cnet`, one /24 per node of `network`.
pub fn sim_config(ns: &str, url: &str, network: &str, ttl: Duration) -> SimConfig {
    SimConfig {
        ns: ns.to_string(),
        etcd: EtcdConfig::new(&[url], "/cnet").timeout(Duration::from_secs(10)),
        subnets: SubnetConfig::new(network.parse().unwrap()),
        ttl,
    }
}

/// The leases etcd holds now (the truth the nodes must converge to).
pub fn etcd_leases(cfg: &SimConfig) -> Vec<NodeLease> {
    let (ns, cfg) = (cfg.ns.clone(), cfg.clone());
    std::thread::spawn(move || {
        enter(&ns);
        EtcdStore::open(cfg.etcd)
            .unwrap()
            .subnets(cfg.subnets)
            .unwrap()
            .list()
            .unwrap()
    })
    .join()
    .unwrap()
}

/// Wait until a spawned agent says its subnet and its bridge; its subnet.
pub fn await_started(a: &mut super::agents::Agent) -> IpNet {
    let l = a.expect_line(": subnet ");
    a.subnet = l
        .split(": subnet ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no subnet in {l:?}"));
    a.expect_line(": bridge ");
    a.subnet
}
