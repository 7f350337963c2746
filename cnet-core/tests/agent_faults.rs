//! The node agent (`examples/rust/node_agent.rs`) when its store fails:
//! etcd restarted, etcd cut off from one node for longer than the lease
//! TTL (its subnet still free, or given to a node that joined meanwhile),
//! etcd losing its data, and the agent itself SIGKILLed and restarted.
//!
//! ```text
//!   ul: br0 192.0.2.0/24 ── etcd 192.0.2.254:2379
//!        │ .11       │ .12       │ .13 …
//!        h1          h2          h3       node-agent (vxlan, TTL 3–6 s), cni0, one container each
//!        c0 ── ping -i 0.01 ──▶ c0       all the time; loss counted from ping's summary
//! ```
//!
//! Each test builds its own cluster in namespaces of its own (so they run
//! in parallel), prints what it measured (pings lost, time to converge)
//! and checks what must hold whatever the timing: agents keep running and
//! keep their routes while etcd is away, leases come back with the subnets
//! the hosts' bridges hold, no subnet is ever leased to a node whose bridge
//! holds another, and a node whose subnet was given away stops routing.
#![cfg(feature = "etcd")]

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cnet_core::ipam::{EtcdStore, LeaseStore, SubnetConfig};
use cnet_core::IpNet;
use cnet_test_support::ping::ContinuousPing;
use common::agents::{
    agent_binary, attach_containers, bridge_subnet, cnet_routes, make_host, underlay_with_etcd,
    Agent, Host,
};
use common::etcd::Etcd;
use common::TestNs;

/// A cluster of node agents; dropped agents first, then hosts, etcd and
/// the underlay.
struct Cluster {
    agents: Vec<Agent>,
    hosts: Vec<Host>,
    etcd: Etcd,
    ul: TestNs,
    bin: PathBuf,
    ttl: u64,
    tmp: tempfile::TempDir,
}

impl Cluster {
    /// `n` hosts with an agent (lease TTL `ttl` s) and one container each.
    fn new(tag: &str, n: u8, ttl: u64) -> Option<Cluster> {
        if !common::privileged() {
            return None;
        }
        let bin = agent_binary()?;
        let (ul, etcd) = underlay_with_etcd(tag);
        let mut c = Cluster {
            agents: Vec::new(),
            hosts: Vec::new(),
            etcd,
            ul,
            bin,
            ttl,
            tmp: tempfile::tempdir().unwrap(),
        };
        for i in 1..=n {
            c.add_host(i);
        }
        for i in 1..c.hosts.len() {
            let (from, to) = (c.container(0), c.container(i).1);
            wait_until(&format!("c0 of h1 pings {to}"), 20, || {
                from.0.ping(&to.to_string())
            });
        }
        Some(c)
    }

    /// Host `hN`, its agent and one container.
    fn add_host(&mut self, n: u8) {
        let mut h = make_host(&self.ul.handle(), n, self.tmp.path());
        let a = self.start_agent(&h);
        attach_containers(&mut h, a.subnet, 1);
        self.agents.push(a);
        self.hosts.push(h);
    }

    fn start_agent(&self, h: &Host) -> Agent {
        Agent::start_ttl(&self.bin, &h.ns, &h.name, &self.etcd.url, &h.ipam, self.ttl)
    }

    /// Host `i`'s container: namespace and address.
    fn container(&self, i: usize) -> (&TestNs, IpAddr) {
        let (ns, _, ip) = &self.hosts[i].containers[0];
        (ns, *ip)
    }

    /// Leases in etcd, node → subnet (and the newest expiry); `None` when
    /// etcd does not answer.
    fn leases(&self) -> Option<BTreeMap<String, (IpNet, Option<SystemTime>)>> {
        let url = self.etcd.url.clone();
        self.etcd.run(move || {
            let store = EtcdStore::connect(&[&url], "/cnet", Duration::from_secs(1)).ok()?;
            let mut l = store
                .subnets(SubnetConfig::new("10.244.0.0/16".parse().unwrap()))
                .ok()?;
            Some(
                l.list()
                    .ok()?
                    .into_iter()
                    .map(|l| (l.node, (l.subnet, l.expires)))
                    .collect(),
            )
        })
    }

    /// Node → subnet, as each host's bridge shows it (`ip -j addr`).
    fn bridges(&self) -> BTreeMap<String, IpNet> {
        self.hosts
            .iter()
            .filter_map(|h| Some((h.name.clone(), bridge_subnet(&h.ns)?)))
            .collect()
    }

    /// Wait until etcd holds exactly the bridges' subnets, and check that
    /// it still does two TTLs after `since`: a lease that was not renewed
    /// after `since` would be gone by then (etcd ends a lease not kept
    /// alive within its TTL, and gives every lease its full TTL again when
    /// it restarts). Renewals are etcd lease keep-alives that write no
    /// key, so the lease's value does not show them. Returns how long
    /// until the leases matched.
    fn wait_leases_match_bridges(&self, since: SystemTime, what: &str) -> Duration {
        let want = self.bridges();
        let ttl = Duration::from_secs(self.ttl);
        let matches = || {
            self.leases().is_some_and(|got| {
                got.len() == want.len() && got.iter().all(|(n, (s, _))| want.get(n) == Some(s))
            })
        };
        let took = wait_until(what, 30, matches);
        let renewed_by = since + 2 * ttl + Duration::from_millis(500);
        if let Ok(left) = renewed_by.duration_since(SystemTime::now()) {
            std::thread::sleep(left);
        }
        wait_until(&format!("{what}, and renewed since"), 5, matches);
        took
    }
}

/// Poll `ok` every 20 ms until it holds; its time. Panics after `secs`.
fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "not within {secs} s: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

/// A ping every 10 ms from a container, until stopped.
fn ping(from: &TestNs, to: IpAddr) -> ContinuousPing {
    ContinuousPing::start(&from.name, to)
}

/// Sample `f` every 20 ms on a thread until the returned guard is stopped;
/// what it returned `false` for is kept (with the time since start).
struct Sampler {
    stop: Arc<AtomicBool>,
    bad: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Sampler {
    fn start(f: impl Fn() -> Result<(), String> + Send + 'static) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let (s, b) = (stop.clone(), bad.clone());
        let thread = std::thread::spawn(move || {
            let (t, mut n) = (Instant::now(), 0);
            while !s.load(Ordering::SeqCst) {
                if let Err(why) = f() {
                    b.lock().unwrap().push(format!("{:?}: {why}", t.elapsed()));
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        });
        Sampler {
            stop,
            bad,
            thread: Some(thread),
        }
    }

    /// Stop; (samples taken, failures).
    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let n = self.thread.take().unwrap().join().unwrap();
        (n, std::mem::take(&mut *self.bad.lock().unwrap()))
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A sampler that fails when `ns` has no cnet route to `subnet`.
fn route_stays(ns: &TestNs, subnet: IpNet) -> Sampler {
    let name = ns.name.clone();
    let prefix = subnet.to_string();
    Sampler::start(move || {
        let out = Command::new("ip")
            .args(["-n", &name, "route", "show", "proto", "119"])
            .output()
            .map_err(|e| e.to_string())?;
        String::from_utf8_lossy(&out.stdout)
            .contains(&prefix)
            .then_some(())
            .ok_or_else(|| format!("no route to {prefix}"))
    })
}

/// Drop this namespace's TCP traffic to etcd (a partition), or stop.
fn cut_from_etcd(ns: &TestNs, cut: bool) {
    let script = if cut {
        "table inet cnfault {\n chain out {\n  type filter hook output priority 0; policy accept;\n  \
         ip daddr 192.0.2.254 tcp dport 2379 drop\n }\n}\n"
    } else {
        "delete table inet cnfault"
    };
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft {script}");
}

#[test]
fn agent_faults_etcd_restart() {
    let Some(mut c) = Cluster::new("afr", 2, 3) else {
        return;
    };
    let ping = ping(c.container(0).0, c.container(1).1);
    let routes = route_stays(&c.hosts[0].ns, c.agents[1].subnet);
    c.etcd.stop();
    std::thread::sleep(Duration::from_secs(3));
    c.etcd.restart();
    let back = SystemTime::now();
    let converged = c.wait_leases_match_bridges(back, "both leases renewed after the restart");
    std::thread::sleep(Duration::from_millis(500));
    for a in &mut c.agents {
        assert!(a.running(), "an agent exited while etcd restarted");
    }
    let (samples, gone) = routes.finish();
    assert!(gone.is_empty(), "h1 lost its route to h2: {gone:?}");
    let (sent, lost) = ping.stop().sent_lost();
    println!(
        "etcd restart (down 3 s, TTL 3 s): agents alive 2/2; leases there {converged:?} after \
         etcd was back, and still there two TTLs later (renewed); h1's route to h2 present in {samples}/{samples} samples; pings lost \
         {lost}/{sent}"
    );
}

#[test]
fn agent_faults_etcd_partition_longer_than_ttl() {
    let Some(mut c) = Cluster::new("afp", 2, 3) else {
        return;
    };
    let (s1, s2) = (c.agents[0].subnet, c.agents[1].subnet);
    let ping = ping(c.container(0).0, c.container(1).1);
    // The cut-off node keeps its routes (stale beats empty).
    let kept = route_stays(&c.hosts[1].ns, s1);
    cut_from_etcd(&c.hosts[1].ns, true);
    let cut = Instant::now();
    let expired = wait_until("h2's lease expires in etcd", 20, || {
        c.leases().is_some_and(|l| !l.contains_key("h2"))
    });
    let h1_dropped = wait_until("h1 drops its route to h2's subnet", 20, || {
        !cnet_routes(&c.hosts[0].ns)
            .iter()
            .any(|r| r.starts_with(&s2.to_string()))
    });
    // Cut off for twice the TTL in all.
    std::thread::sleep((Duration::from_secs(2 * c.ttl)).saturating_sub(cut.elapsed()));
    assert!(c.agents[1].running(), "the cut-off agent exited");
    let cut_for = cut.elapsed();
    cut_from_etcd(&c.hosts[1].ns, false);
    let healed = SystemTime::now();
    let t = Instant::now();
    c.agents[1].expect_line("took back");
    let took_back = t.elapsed();
    wait_until("h1 routes h2's subnet again", 20, || {
        cnet_routes(&c.hosts[0].ns)
            .iter()
            .any(|r| r.starts_with(&s2.to_string()))
    });
    wait_until("c0 of h1 pings c0 of h2", 20, || {
        c.container(0).0.ping(&c.container(1).1.to_string())
    });
    let routed = t.elapsed();
    c.wait_leases_match_bridges(healed, "h2 has its subnet again");
    let (samples, gone) = kept.finish();
    assert!(
        gone.is_empty(),
        "the cut-off h2 lost its route to h1: {gone:?}"
    );
    assert!(c.agents.iter_mut().all(|a| a.running()), "an agent exited");
    let (sent, lost) = ping.stop().sent_lost();
    println!(
        "etcd partition of h2 for {cut_for:?} (TTL 3 s): h2's lease expired after {expired:?}, \
         h1 dropped h2's route {h1_dropped:?} later; h2 kept its route to h1 in \
         {samples}/{samples} samples; after the heal h2 took {s2} back in {took_back:?} (its backoff), \
         routed and pinging in {routed:?}; pings lost {lost}/{sent} (the cut-off node's \
         subnet is unrouted between expiry and heal)"
    );
}

#[test]
fn agent_faults_etcd_partition_subnet_taken_meanwhile() {
    let Some(mut c) = Cluster::new("aft", 2, 3) else {
        return;
    };
    let s2 = c.agents[1].subnet;
    let ping = ping(c.container(0).0, c.container(1).1);
    cut_from_etcd(&c.hosts[1].ns, true);
    wait_until("h2's lease expires in etcd", 20, || {
        c.leases().is_some_and(|l| !l.contains_key("h2"))
    });
    // A node joins meanwhile and is given h2's subnet (nodes start at a
    // random free subnet: the subnet is claimed for it first, and its
    // agent finds that lease its own).
    let url = c.etcd.url.clone();
    c.etcd.run(move || {
        let store = EtcdStore::connect(&[&url], "/cnet", Duration::from_secs(1)).unwrap();
        let mut l = store
            .subnets(SubnetConfig::new("10.244.0.0/16".parse().unwrap()))
            .unwrap();
        l.claim("h3", s2, &Default::default(), Duration::from_secs(30))
            .unwrap();
    });
    c.add_host(3);
    assert_eq!(c.agents[2].subnet, s2, "h3 was meant to get h2's subnet");
    cut_from_etcd(&c.hosts[1].ns, false);
    let t = Instant::now();
    let st = c.agents[1]
        .wait_exit(Duration::from_secs(30))
        .expect("h2's agent did not stop after its subnet was given away");
    let stopped = t.elapsed();
    assert_eq!(st.code(), Some(3), "h2's agent: {st}");
    c.agents[1].expect_line("is not this node's any more");
    // h2 routes nothing any more; its bridge and container stay.
    let left = cnet_routes(&c.hosts[1].ns);
    assert!(left.is_empty(), "h2 still routes: {left:?}");
    assert!(
        c.hosts[1]
            .ns
            .ip_json(&["link", "show", "type", "vxlan"])
            .as_array()
            .unwrap()
            .is_empty(),
        "h2 still has its vxlan device"
    );
    // The store and h1 agree that s2 is h3's.
    let l = c.leases().unwrap();
    assert_eq!(l.get("h3").map(|x| x.0), Some(s2));
    assert!(!l.contains_key("h2"), "{l:?}");
    wait_until("h1 pings h3's container", 20, || {
        c.container(0).0.ping(&c.container(2).1.to_string())
    });
    // Restarted, h2's agent finds its bridge on a subnet that is another
    // node's lease: it stops at once, again with status 3.
    let mut again = Agent::spawn_ttl(
        &c.bin,
        &c.hosts[1].ns,
        "h2",
        &c.etcd.url,
        &c.hosts[1].ipam,
        3,
    );
    let st = again
        .wait_exit(Duration::from_secs(30))
        .expect("restarted h2 agent did not stop");
    assert_eq!(st.code(), Some(3), "restarted h2 agent: {st}");
    assert!(cnet_routes(&c.hosts[1].ns).is_empty());
    assert_eq!(c.leases().unwrap().get("h3").map(|x| x.0), Some(s2));
    let (sent, lost) = ping.stop().sent_lost();
    println!(
        "h2 cut off past its TTL while h3 joined and got {s2}: after the heal h2's agent \
         removed its routes and exited 3 in {stopped:?} (restarted: exits 3 again); h1 routes \
         {s2} to h3; pings h1→h2's old address: {lost}/{sent} lost"
    );
}

#[test]
fn agent_faults_etcd_data_loss() {
    let Some(mut c) = Cluster::new("afd", 3, 3) else {
        return;
    };
    let bridges = c.bridges();
    let pings = [
        ping(c.container(0).0, c.container(1).1),
        ping(c.container(2).0, c.container(0).1),
    ];
    // Every lease seen in etcd, all the time, names the subnet its node's
    // bridge holds (or the node is new and its bridge not made yet).
    let url = c.etcd.url.clone();
    let etcd_ns = c.etcd.ns.name.clone();
    let want = bridges.clone();
    let seen = Sampler::start(move || {
        let leases = common::etcd::in_ns_named(&etcd_ns, || {
            let s = EtcdStore::connect(&[&url], "/cnet", Duration::from_secs(1)).ok()?;
            s.subnets(SubnetConfig::new("10.244.0.0/16".parse().unwrap()))
                .ok()?
                .list()
                .ok()
        });
        let Some(leases) = leases else { return Ok(()) }; // etcd away
        let mut subnets = std::collections::BTreeSet::new();
        for l in &leases {
            if !subnets.insert(l.subnet) {
                return Err(format!("{} leased twice: {leases:?}", l.subnet));
            }
            if let Some(b) = want.get(&l.node) {
                if *b != l.subnet {
                    return Err(format!(
                        "{} leased {} but its bridge holds {b}",
                        l.node, l.subnet
                    ));
                }
            } else if want.values().any(|b| *b == l.subnet) {
                return Err(format!("{} leased {}, a live node's", l.node, l.subnet));
            }
        }
        Ok(())
    });
    c.etcd.replace_with_fresh();
    let fresh = SystemTime::now();
    let republished = c.wait_leases_match_bridges(fresh, "all three leases republished");
    // A node that joins now gets a subnet no live node holds.
    c.add_host(4);
    let s4 = c.agents[3].subnet;
    assert!(
        !bridges.values().any(|b| *b == s4),
        "h4 got {s4}, a live node's"
    );
    wait_until("h1 pings h4's container", 20, || {
        c.container(0).0.ping(&c.container(3).1.to_string())
    });
    std::thread::sleep(Duration::from_millis(500));
    let (samples, bad) = seen.finish();
    assert!(bad.is_empty(), "leases that contradict a bridge: {bad:?}");
    assert_eq!(c.bridges().len(), 4);
    for (n, b) in &bridges {
        assert_eq!(c.bridges().get(n), Some(b), "{n}'s bridge changed");
    }
    assert!(c.agents.iter_mut().all(|a| a.running()), "an agent exited");
    let [p1, p2] = pings;
    let ((s1, l1), (s2, l2)) = (p1.stop().sent_lost(), p2.stop().sent_lost());
    println!(
        "etcd data loss (new empty etcd, TTL 3 s): 3/3 leases republished with their bridges' \
         subnets in {republished:?}; h4 joined with {s4}; {samples} lease samples, none \
         contradicting a bridge or doubled; pings lost h1→h2 {l1}/{s1}, h3→h1 {l2}/{s2}"
    );
}

#[test]
fn agent_faults_agent_sigkill_restart() {
    let Some(mut c) = Cluster::new("afk", 2, 6) else {
        return;
    };
    let s1 = c.agents[0].subnet;
    let ping = ping(c.container(1).0, c.container(0).1);
    let kept = [
        route_stays(&c.hosts[1].ns, s1),
        route_stays(&c.hosts[0].ns, c.agents[1].subnet),
    ];
    let a1 = c.agents.remove(0);
    a1.kill();
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    let a1 = c.start_agent(&c.hosts[0]);
    let up = t.elapsed();
    assert_eq!(a1.subnet, s1, "the restarted agent has another subnet");
    c.agents.insert(0, a1);
    std::thread::sleep(Duration::from_secs(1));
    for (who, s) in ["h2's route to h1", "h1's route to h2"].iter().zip(kept) {
        let (n, gone) = s.finish();
        assert!(gone.is_empty(), "{who} went away: {gone:?} ({n} samples)");
    }
    let (sent, lost) = ping.stop().sent_lost();
    println!(
        "agent SIGKILLed, restarted after 3 s (TTL 6 s): same subnet {s1}, up in {up:?}; \
         routes both ways present in every sample; pings lost {lost}/{sent}"
    );
}
