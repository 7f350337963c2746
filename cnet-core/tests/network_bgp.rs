//! Routes learnt over BGP with real BIRD 2 processes, one per host
//! namespace (cnet_core::network::bgp): full-mesh iBGP between three hosts
//! on one segment, no encapsulation; the sessions read over BIRD's control
//! socket; cnet's own reconcile leaves `proto bird` routes alone; a node
//! stopped gracefully or killed leaves its peers' tables and comes back.
//! Every BIRD is killed by its guard (also on panic), and each test checks
//! that no process, socket or namespace is left.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cnet_core::network::bgp::{BgpConfig, BgpPeer, BgpTimers, Bird, SessionState};
use cnet_core::network::Backend;
use cnet_core::IpNet;
use cnet_test_support::cluster::{writes_during, Cluster, Spec};
use cnet_test_support::privileged;

/// How long sessions may take to come up (connect delay 1 s, retries 1 s).
const CONVERGE: Duration = Duration::from_secs(20);

/// One host's BIRD and its directory (config, socket, pid file, log).
struct Speaker {
    bird: Option<Bird>,
    dir: tempfile::TempDir,
}

impl Speaker {
    fn bird(&self) -> &Bird {
        self.bird.as_ref().expect("bird running")
    }
}

fn segment() -> IpNet {
    "192.0.2.0/24".parse().unwrap()
}

fn cluster_cidr() -> IpNet {
    "10.244.0.0/16".parse().unwrap()
}

/// Host `i`'s BGP configuration with the hosts `peers` as its peers.
fn config(c: &Cluster, i: usize, peers: &[usize]) -> BgpConfig {
    let h = &c.hosts[i];
    BgpConfig::new(
        &h.role,
        h.underlay,
        segment(),
        "eth0",
        Some(h.subnet),
        cluster_cidr(),
    )
    .timers(BgpTimers::fast())
    .peers(
        peers
            .iter()
            .filter(|&&j| j != i)
            .map(|&j| BgpPeer::new(&c.hosts[j].role, c.hosts[j].underlay))
            .collect(),
    )
}

fn all(c: &Cluster) -> Vec<usize> {
    (0..c.hosts.len()).collect()
}

fn start(c: &Cluster, i: usize, cfg: &BgpConfig) -> Speaker {
    let dir = tempfile::tempdir().unwrap();
    let bird = Bird::start(&c.hosts[i].handle, dir.path(), cfg)
        .unwrap_or_else(|e| panic!("{}: {e}", c.hosts[i].role));
    Speaker {
        bird: Some(bird),
        dir,
    }
}

/// Host `i`'s `proto bird` routes as "DST via GW dev DEV", sorted (read
/// with `ip -j -d route show proto bird`).
fn bird_routes(c: &Cluster, i: usize) -> Vec<String> {
    let v = c.ip_json(&c.hosts[i].ns, &["route", "show", "proto", "bird"]);
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} via {} dev {}",
                r["dst"].as_str().unwrap_or("?"),
                r["gateway"].as_str().unwrap_or("-"),
                r["dev"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    out.sort();
    out
}

/// What host `i` should have learnt from the hosts `from`.
fn expected_routes(c: &Cluster, from: &[usize]) -> Vec<String> {
    let mut v: Vec<String> = from
        .iter()
        .map(|&j| {
            let h = &c.hosts[j];
            format!("{} via {} dev eth0", h.subnet, h.underlay)
        })
        .collect();
    v.sort();
    v
}

/// Poll until `f` holds; the time it took, or a panic naming `what`
/// after `within` (a bound that fails a broken system, not a timing
/// assertion: the figures are printed).
fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

/// Every host's table holds exactly the other hosts' subnets in `alive`.
fn wait_converged(c: &Cluster, alive: &[usize]) -> Duration {
    wait_until("routes converge", CONVERGE, || {
        alive.iter().all(|&i| {
            let others: Vec<usize> = alive.iter().copied().filter(|&j| j != i).collect();
            bird_routes(c, i) == expected_routes(c, &others)
        })
    })
}

/// Link kinds in host `i` (`ip -d link`): no vxlan, no ipip.
fn encap_devices(c: &Cluster, i: usize) -> Vec<String> {
    c.ip_json(&c.hosts[i].ns, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            matches!(
                l["linkinfo"]["info_kind"].as_str(),
                Some("vxlan" | "ipip" | "gre" | "sit")
            ) || l["ifname"] == "tunl0"
        })
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

/// Whether a process with this pid still exists (not a zombie: the guard
/// reaps).
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// After the cluster and the speakers are gone: no BIRD process of ours, no
/// socket, no namespace.
fn assert_all_gone(prefix: &str, pids: &[u32], sockets: &[PathBuf]) {
    for p in pids {
        assert!(!alive(*p), "bird {p} left running");
    }
    for s in sockets {
        assert!(!s.exists(), "control socket {} left", s.display());
    }
    assert!(
        Cluster::namespaces_with_prefix(prefix).is_empty(),
        "namespaces left"
    );
}

#[test]
fn bgp_full_mesh_three_hosts_no_encap() {
    if !privileged() {
        return;
    }
    let c = Cluster::build(
        "bgpm",
        Spec {
            near: 3,
            far: 0,
            containers: 2,
        },
    );
    let prefix = c.prefix().to_string();
    // h1 and h2 first, peering with each other only; then h3 with both,
    // and h1/h2 reconfigured to add it.
    let mut sp: Vec<Speaker> = vec![
        start(&c, 0, &config(&c, 0, &[1])),
        start(&c, 1, &config(&c, 1, &[0])),
    ];
    sp[0].bird().wait_established(CONVERGE).unwrap();
    wait_converged(&c, &[0, 1]);
    let since_before = sp[0].bird().sessions().unwrap()[0].since.clone();
    sp.push(start(&c, 2, &config(&c, 2, &all(&c))));
    for (i, s) in sp.iter_mut().enumerate().take(2) {
        s.bird
            .as_mut()
            .unwrap()
            .reconfigure(&config(&c, i, &all(&c)))
            .unwrap();
    }
    let t = wait_converged(&c, &all(&c));
    eprintln!("h3 joined, converged after reconfigure in {t:?}");

    // Every session Established, one route received on each, read over
    // the control socket.
    for (i, s) in sp.iter().enumerate() {
        let st = s.bird().wait_established(CONVERGE).unwrap();
        assert_eq!(st.len(), 2, "{}: {st:?}", c.hosts[i].role);
        for x in &st {
            assert_eq!(x.state, SessionState::Established);
            assert_eq!(x.routes_imported, 1, "{x:?}");
            assert_eq!(x.routes_exported, 1, "{x:?}");
            assert!(x.uptime.is_some(), "{x:?}");
            let peer = c.host(x.peer.as_deref().unwrap());
            assert_eq!(x.neighbor, Some(c.hosts[peer].underlay));
            assert_eq!(x.neighbor_as, Some(64512));
        }
    }
    // Adding h3 did not drop the h1–h2 session.
    let h1 = sp[0].bird().sessions().unwrap();
    let to_h2 = h1.iter().find(|x| x.protocol == "peer_h2").unwrap();
    assert_eq!(to_h2.since, since_before, "the h1–h2 session was reset");

    // Kernel routes: via each peer's underlay on eth0, no tunnel device.
    for i in 0..3 {
        let others: Vec<usize> = (0..3).filter(|&j| j != i).collect();
        assert_eq!(bird_routes(&c, i), expected_routes(&c, &others));
        assert!(
            encap_devices(&c, i).is_empty(),
            "{:?}",
            encap_devices(&c, i)
        );
        assert!(c.cnet_routes(i).is_empty(), "no protocol-119 route");
    }
    // All 6×5 container pairs.
    let failed = c.all_pairs_ping();
    assert!(failed.is_empty(), "failed: {failed:?}");

    // cnet's node reconcile (host-gw with no peers, then teardown) never
    // touches BIRD's routes: not one route write, and the table is as it was.
    let before = bird_routes(&c, 0);
    let (_, writes) = writes_during(&c.hosts[0].ns, || {
        let node = c.node(0);
        let r = node.reconcile_peers(&Backend::HostGw, &[]).unwrap();
        assert!(r.is_noop(), "{r:?}");
        let _ = node.teardown().unwrap().into_result().unwrap();
    });
    assert!(writes.is_empty(), "reconcile wrote: {writes:?}");
    assert_eq!(bird_routes(&c, 0), before);

    // Stop every BIRD gracefully: each removes its own kernel routes.
    let pids: Vec<u32> = sp.iter().filter_map(|s| s.bird().pid()).collect();
    let sockets: Vec<PathBuf> = sp.iter().map(|s| s.bird().socket()).collect();
    for s in &mut sp {
        s.bird.take().unwrap().stop().unwrap();
    }
    for i in 0..3 {
        assert!(bird_routes(&c, i).is_empty(), "{:?}", bird_routes(&c, i));
    }
    drop(sp);
    drop(c);
    assert_all_gone(&prefix, &pids, &sockets);
}

/// Stop (or kill) h3's BIRD: its subnet leaves h1's and h2's tables, pings
/// to its container fail; start it again: all converge and ping.
fn node_leaves_and_returns(tag: &str, kill: bool) {
    let c = Cluster::build(
        tag,
        Spec {
            near: 3,
            far: 0,
            containers: 1,
        },
    );
    let prefix = c.prefix().to_string();
    let mut sp: Vec<Speaker> = (0..3)
        .map(|i| start(&c, i, &config(&c, i, &all(&c))))
        .collect();
    wait_converged(&c, &all(&c));
    let mut pids: Vec<u32> = sp.iter().filter_map(|s| s.bird().pid()).collect();
    let mut sockets: Vec<PathBuf> = sp.iter().map(|s| s.bird().socket()).collect();
    let h3_subnet = c.hosts[2].subnet.to_string();

    let b = sp[2].bird.take().unwrap();
    let t0 = Instant::now();
    if kill {
        // As a crashed machine: off the wire first (so no FIN or RST
        // reaches the peers; a killed process alone has its kernel close
        // the sessions at once), then killed. The peers notice by their
        // hold timer.
        c.ul.links().set_down("p3").unwrap();
        b.kill();
    } else {
        b.stop().unwrap();
    }
    let _ = wait_until("h3's subnet leaves h1 and h2", CONVERGE, || {
        (0..2).all(|i| !bird_routes(&c, i).iter().any(|r| r.starts_with(&h3_subnet)))
    });
    eprintln!(
        "h3 {}: its subnet left the peers' tables after {:?} (hold time 3 s)",
        if kill { "killed" } else { "stopped" },
        t0.elapsed()
    );
    // The sessions to h3 are down on both peers.
    for s in &sp[..2] {
        let st = s.bird().sessions().unwrap();
        let h3 = st.iter().find(|x| x.protocol == "peer_h3").unwrap();
        assert_ne!(h3.state, SessionState::Established, "{h3:?}");
    }
    if kill {
        // A killed BIRD says goodbye to no one: its kernel routes stay in
        // its own table (BIRD removes them when it starts again) — unless
        // it saw its link go down in the moment before the SIGKILL landed
        // and withdrew them itself. Either is right; nothing else is.
        let left = bird_routes(&c, 2);
        assert!(
            left.is_empty() || left == expected_routes(&c, &[0, 1]),
            "{left:?}"
        );
    } else {
        assert!(bird_routes(&c, 2).is_empty(), "{:?}", bird_routes(&c, 2));
    }
    let c1 = c.containers.iter().find(|x| x.role == "c1a").unwrap();
    let c3 = c.containers.iter().find(|x| x.role == "c3a").unwrap();
    assert!(!Cluster::ping(&c1.ns, c3.ip), "h3's subnet is unreachable");
    if kill {
        c.ul.links().set_up("p3").unwrap();
    }

    // Back again, in the same directory.
    let t0 = Instant::now();
    let bird = Bird::start(
        &c.hosts[2].handle,
        sp[2].dir.path(),
        &config(&c, 2, &all(&c)),
    )
    .unwrap();
    pids.extend(bird.pid());
    sockets.push(bird.socket());
    sp[2].bird = Some(bird);
    let t = wait_converged(&c, &all(&c));
    eprintln!(
        "h3 back: converged {t:?} after its BIRD started ({:?} with the start)",
        t0.elapsed()
    );
    for s in &sp {
        s.bird().wait_established(CONVERGE).unwrap();
    }
    let failed = c.all_pairs_ping();
    assert!(failed.is_empty(), "failed: {failed:?}");
    drop(sp);
    drop(c);
    assert_all_gone(&prefix, &pids, &sockets);
}

#[test]
fn bgp_node_stopped_gracefully_leaves_and_returns() {
    if !privileged() {
        return;
    }
    node_leaves_and_returns("bgps", false);
}

#[test]
fn bgp_node_killed_leaves_within_hold_time_and_returns() {
    if !privileged() {
        return;
    }
    node_leaves_and_returns("bgpk", true);
}

#[test]
fn bgp_guard_kills_bird_on_panic() {
    if !privileged() {
        return;
    }
    let c = Cluster::build(
        "bgpg",
        Spec {
            near: 2,
            far: 0,
            containers: 0,
        },
    );
    let prefix = c.prefix().to_string();
    let seen: std::sync::Mutex<BTreeMap<&str, (u32, PathBuf)>> = Default::default();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let s = start(&c, 0, &config(&c, 0, &all(&c)));
        seen.lock()
            .unwrap()
            .insert("h1", (s.bird().pid().unwrap(), s.bird().socket()));
        panic!("a test failing with BIRD running");
    }));
    assert!(r.is_err());
    let (pid, sock) = seen.lock().unwrap()["h1"].clone();
    assert!(!alive(pid), "bird {pid} survived the panic");
    assert!(!sock.exists());
    drop(c);
    assert_all_gone(&prefix, &[pid], &[sock]);
}

#[test]
fn bgp_bad_config_starts_nothing() {
    if !privileged() {
        return;
    }
    let c = Cluster::build(
        "bgpb",
        Spec {
            near: 1,
            far: 0,
            containers: 0,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    // A peer beyond the segment without encapsulation: refused before
    // anything is written or started.
    let cfg = config(&c, 0, &[]).peers(vec![BgpPeer::new("far", "198.51.100.14".parse().unwrap())]);
    let e = Bird::start(&c.hosts[0].handle, dir.path(), &cfg).unwrap_err();
    assert!(
        matches!(e, cnet_core::Error::InvalidArgument { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("outside the segment"), "{e}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn bgp_start_makes_a_missing_nested_directory() {
    if !privileged() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::build(
        "bgpd",
        Spec {
            near: 1,
            far: 0,
            containers: 0,
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    // As the documentation's /run/cnet/bird on a fresh machine: neither
    // the directory nor its parents exist yet.
    let dir = tmp.path().join("run/cnet/bird");
    let bird = Bird::start(&c.hosts[0].handle, &dir, &config(&c, 0, &[]))
        .unwrap_or_else(|e| panic!("start with a missing directory: {e}"));
    for d in [
        tmp.path().join("run"),
        tmp.path().join("run/cnet"),
        dir.clone(),
    ] {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        println!("{}: mode {mode:o}", d.display());
        // 0755 before the umask: the owner's rwx, no one else writes.
        assert_eq!((mode & 0o700, mode & 0o022), (0o700, 0), "{}", d.display());
    }
    assert!(dir.join("bird.conf").is_file());
    bird.control()
        .unwrap_or_else(|e| panic!("control socket: {e}: {}", bird.log_tail()));
    let pid = bird.pid().unwrap();
    let sock = bird.socket();
    bird.stop().unwrap();
    let prefix = c.prefix().to_string();
    drop(c);
    assert_all_gone(&prefix, &[pid], &[sock]);
}
