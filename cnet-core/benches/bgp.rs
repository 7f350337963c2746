//! BGP convergence with real BIRD processes (cnet_core::network::bgp), for
//! 3 and 20 hosts in namespaces on one segment, full-mesh iBGP, fast
//! timers: N−1 hosts converge first, then the last host's BIRD starts and
//! the time until every other host has its subnet in the kernel is
//! measured (polled over netlink every millisecond). Also: the kernel's
//! route count per host against the number of hosts. Prints figures; no
//! assertion on time. Run as root:
//!
//! ```text
//! cargo bench -p cnet-core --bench bgp            # 3 and 20 hosts
//! cargo bench -p cnet-core --bench bgp -- 3 10 40 # other sizes (at most 200)
//! ```

use std::time::{Duration, Instant};

use cnet_core::network::bgp::{BgpConfig, BgpPeer, BgpTimers, Bird};
use cnet_core::route::RouteFilter;
use cnet_core::IpNet;
use cnet_test_support::cluster::{Cluster, Spec};

/// BIRD's route protocol number in the kernel (`proto bird`).
const PROTO_BIRD: u8 = 12;

fn config(c: &Cluster, i: usize) -> BgpConfig {
    let h = &c.hosts[i];
    BgpConfig::new(
        &h.role,
        h.underlay,
        "192.0.2.0/24".parse().unwrap(),
        "eth0",
        Some(h.subnet),
        "10.244.0.0/16".parse().unwrap(),
    )
    .timers(BgpTimers::fast())
    .peers(
        c.hosts
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, o)| BgpPeer::new(&o.role, o.underlay))
            .collect(),
    )
}

fn bird_dsts(c: &Cluster, i: usize) -> Vec<IpNet> {
    c.hosts[i]
        .handle
        .routes()
        .list(&RouteFilter::new().protocol(PROTO_BIRD))
        .unwrap()
        .into_iter()
        .map(|r| r.dst)
        .collect()
}

fn wait(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{what}: no convergence in 120 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    t0.elapsed()
}

fn run(n: u8) {
    let c = Cluster::build(
        "bgpbench",
        Spec {
            near: n,
            far: 0,
            containers: 0,
        },
    );
    let n = n as usize;
    let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let t_all = Instant::now();
    let mut birds: Vec<Bird> = (0..n - 1)
        .map(|i| Bird::start(&c.hosts[i].handle, dirs[i].path(), &config(&c, i)).unwrap())
        .collect();
    let first = wait("N-1 hosts", || {
        (0..n - 1).all(|i| bird_dsts(&c, i).len() == n - 2)
    });
    let last = n - 1;
    let subnet = c.hosts[last].subnet;
    let t0 = Instant::now();
    birds.push(Bird::start(&c.hosts[last].handle, dirs[last].path(), &config(&c, last)).unwrap());
    let started = t0.elapsed();
    let mut per_host: Vec<Duration> = vec![Duration::ZERO; n - 1];
    let mut done = vec![false; n - 1];
    while done.iter().any(|d| !d) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no convergence in 120 s"
        );
        for i in 0..n - 1 {
            if !done[i] && bird_dsts(&c, i).contains(&subnet) {
                done[i] = true;
                per_host[i] = t0.elapsed();
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let all_have = per_host.iter().max().copied().unwrap_or_default();
    let min = per_host.iter().min().copied().unwrap_or_default();
    let back = wait("the new host learns everyone", || {
        bird_dsts(&c, last).len() == n - 1
    });
    let routes: Vec<usize> = (0..n)
        .map(|i| {
            c.hosts[i]
                .handle
                .routes()
                .list(&RouteFilter::new().table(cnet_core::route::TABLE_MAIN))
                .unwrap()
                .len()
        })
        .collect();
    let bird_routes: Vec<usize> = (0..n).map(|i| bird_dsts(&c, i).len()).collect();
    println!(
        "{n:>3} hosts: {} of {n} started and converged in {:.2?}; host {n}'s BIRD started (socket \
         answering) in {started:.2?}; every other host had its route after {all_have:.2?} \
         (first {min:.2?}); it had all {} others' after {:.2?}",
        n - 1,
        first,
        n - 1,
        back + all_have
    );
    println!(
        "{n:>3} hosts: kernel routes per host (main table): {}..{} of which proto bird {}..{} \
         (= hosts − 1); whole run {:.2?}",
        routes.iter().min().unwrap(),
        routes.iter().max().unwrap(),
        bird_routes.iter().min().unwrap(),
        bird_routes.iter().max().unwrap(),
        t_all.elapsed()
    );
    for b in birds {
        b.stop().unwrap();
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bgp bench: needs root; skipped");
        return;
    }
    let sizes: Vec<u8> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .filter(|n| (2..=200).contains(n))
        .collect();
    let sizes = if sizes.is_empty() { vec![3, 20] } else { sizes };
    for n in sizes {
        run(n);
    }
}
