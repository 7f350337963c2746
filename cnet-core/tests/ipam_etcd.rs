//! The IPAM etcd store against a real etcd server (Debian `etcd-server`),
//! started per test on free loopback ports with a temporary data dir.
//! Without the `etcd` binary these tests say so and skip.
#![cfg(feature = "etcd")]

use std::collections::HashSet;
use std::net::{IpAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cnet_core::ipam::{EtcdStore, LeaseStore, NodeAttrs, PoolConfig, PoolStore, SubnetConfig};
use cnet_core::Error;

const TIMEOUT: Duration = Duration::from_secs(2);

/// A running etcd; killed and its data removed on drop.
struct Etcd {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn etcd_binary() -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|p| p.join("etcd"))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// Start etcd, or `None` (after saying why) when the binary is missing.
fn start_etcd(test: &str) -> Option<Etcd> {
    let Some(bin) = etcd_binary() else {
        eprintln!(
            "SKIPPED {test}: no `etcd` binary in PATH (apt-get install etcd-server); CI installs it"
        );
        return None;
    };
    for _ in 0..3 {
        // tmpfs when there is one: etcd fsyncs every write.
        let dir = if Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm").unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let (cp, pp) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{cp}");
        let peer = format!("http://127.0.0.1:{pp}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new(&bin)
            .args([
                "--name",
                "cnet-test",
                "--data-dir",
                &dir.path().join("data").display().to_string(),
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("cnet-test={peer}"),
                // Fast elections: short minimum lease TTL, quick start.
                "--heartbeat-interval",
                "10",
                "--election-timeout",
                "100",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut etcd = Etcd { child, url, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if EtcdStore::connect(&[&etcd.url], "/probe", Duration::from_millis(500)).is_ok() {
                return Some(etcd);
            }
            if let Ok(Some(_)) = etcd.child.try_wait() {
                break; // a port was taken meanwhile: try others
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(etcd.dir.path().join("etcd.log")).unwrap_or_default();
        eprintln!("{test}: etcd did not come up; log tail:\n{}", tail(&log));
    }
    panic!("{test}: could not start etcd");
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn store(etcd: &Etcd, prefix: &str) -> EtcdStore {
    EtcdStore::connect(&[&etcd.url], prefix, TIMEOUT).unwrap()
}

fn net16() -> SubnetConfig {
    SubnetConfig::new("10.244.0.0/16".parse().unwrap())
}

#[test]
fn ipam_etcd_leases_lifecycle_and_restarted_node() {
    let Some(etcd) = start_etcd("ipam_etcd_leases_lifecycle_and_restarted_node") else {
        return;
    };
    let s = store(&etcd, "/cnet");
    let mut l = s.subnets(net16()).unwrap();
    let day = Duration::from_secs(3600);
    let attrs = NodeAttrs {
        underlay_ip: Some("192.0.2.1".parse().unwrap()),
        backend: Some("vxlan".into()),
        vtep_mac: Some("02:00:00:00:00:01".parse().unwrap()),
        ..Default::default()
    };
    let a = l.acquire("node-a", &attrs, day).unwrap();
    assert_eq!(a.subnet, "10.244.1.0/24".parse().unwrap());
    let b = l.acquire("node-b", &NodeAttrs::default(), day).unwrap();
    assert_eq!(b.subnet, "10.244.2.0/24".parse().unwrap());

    // "Restart" node-a: a fresh connection, acquire again → same subnet.
    let s2 = store(&etcd, "/cnet");
    let mut l2 = s2.subnets(net16()).unwrap();
    assert_eq!(l2.acquire("node-a", &attrs, day).unwrap().subnet, a.subnet);
    l2.renew("node-a", day).unwrap();

    let r = l
        .reserve(
            "gw",
            "10.244.100.0/24".parse().unwrap(),
            &NodeAttrs::default(),
        )
        .unwrap();
    assert!(r.is_reservation());
    assert!(matches!(
        l.reserve("x", a.subnet, &NodeAttrs::default()),
        Err(Error::Conflict { .. })
    ));
    let peers = l.list().unwrap();
    let names: Vec<&str> = peers.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(names, ["node-a", "node-b", "gw"]);
    assert_eq!(peers[0].attrs, attrs);

    // Released, then back: the node's previous subnet again.
    l.release("node-b").unwrap();
    l.release("node-b").unwrap();
    assert!(l.get("node-b").unwrap().is_none());
    assert_eq!(
        l.acquire("node-b", &NodeAttrs::default(), day)
            .unwrap()
            .subnet,
        b.subnet
    );

    // Same network, other config, or an overlapping one: refused.
    let e = s.subnets(net16().with_subnet_len(26)).unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    let e = s
        .subnets(SubnetConfig::new("10.0.0.0/8".parse().unwrap()))
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
}

#[test]
fn ipam_etcd_lease_expiry_frees_the_subnet() {
    let Some(etcd) = start_etcd("ipam_etcd_lease_expiry_frees_the_subnet") else {
        return;
    };
    let s = store(&etcd, "/cnet");
    let mut l = s.subnets(net16()).unwrap();
    let x = l
        .acquire("node-x", &NodeAttrs::default(), Duration::from_secs(1))
        .unwrap();
    let started = Instant::now();
    while l.get("node-x").unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "etcd did not expire the lease"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(matches!(
        l.renew("node-x", Duration::from_secs(60)),
        Err(Error::NotFound { .. })
    ));
    // Free again: another node gets it (the lowest free subnet).
    let y = l
        .acquire("node-y", &NodeAttrs::default(), Duration::from_secs(60))
        .unwrap();
    assert_eq!(y.subnet, x.subnet);
    // node-x comes back: its old subnet is taken, so it gets another.
    let x2 = l
        .acquire("node-x", &NodeAttrs::default(), Duration::from_secs(60))
        .unwrap();
    assert_ne!(x2.subnet, x.subnet);
}

#[test]
fn ipam_etcd_pool_semantics() {
    let Some(etcd) = start_etcd("ipam_etcd_pool_semantics") else {
        return;
    };
    let s = store(&etcd, "/cnet");
    let mut p = s
        .pool(PoolConfig::new("10.244.1.0/29".parse().unwrap()))
        .unwrap();
    let a = p.allocate("c1", "eth0").unwrap();
    assert_eq!(a.addr, "10.244.1.2".parse::<IpAddr>().unwrap());
    assert_eq!(p.allocate("c1", "eth0").unwrap(), a, "idempotent");
    let b = p
        .allocate_addr("c2", "eth0", "10.244.1.6".parse().unwrap())
        .unwrap();
    assert!(matches!(
        p.allocate_addr("c3", "eth0", b.addr),
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        p.allocate_addr("c3", "eth0", "10.244.1.1".parse().unwrap()),
        Err(Error::InvalidArgument { .. })
    ));
    for c in ["c3", "c4", "c5"] {
        p.allocate(c, "eth0").unwrap();
    }
    assert!(matches!(
        p.allocate("c6", "eth0"),
        Err(Error::Exhausted { .. })
    ));
    // Late release: c1's address goes to c6; c1's stale release is refused.
    assert_eq!(p.release("c1", "eth0").unwrap(), Some(a.clone()));
    assert_eq!(p.release("c1", "eth0").unwrap(), None);
    let c6 = p.allocate("c6", "eth0").unwrap();
    assert_eq!(c6.addr, a.addr);
    assert!(matches!(
        p.release_generation(a.addr, a.generation),
        Err(Error::Conflict { .. })
    ));
    let alive: HashSet<String> = ["c2".to_string(), "c6".to_string()].into();
    assert_eq!(p.gc(&alive).unwrap().len(), 3);
    let left: Vec<String> = p
        .list()
        .unwrap()
        .into_iter()
        .map(|a| a.container_id)
        .collect();
    assert_eq!(left, ["c6", "c2"]);
}

#[test]
fn ipam_etcd_three_nodes_1000_allocations_each() {
    let Some(etcd) = start_etcd("ipam_etcd_three_nodes_1000_allocations_each") else {
        return;
    };
    let url = etcd.url.clone();
    let started = Instant::now();
    let handles: Vec<_> = (0..3)
        .map(|n| {
            let url = url.clone();
            std::thread::spawn(move || {
                let s = EtcdStore::connect(&[&url], "/cnet", TIMEOUT).unwrap();
                let lease = s
                    .subnets(net16())
                    .unwrap()
                    .acquire(
                        &format!("node-{n}"),
                        &NodeAttrs::default(),
                        Duration::from_secs(600),
                    )
                    .unwrap();
                // All three allocate from one shared pool: every claim races.
                let mut p = s
                    .pool(PoolConfig::new("10.245.0.0/20".parse().unwrap()))
                    .unwrap();
                let got: Vec<_> = (0..1000)
                    .map(|i| p.allocate(&format!("n{n}-c{i}"), "eth0").unwrap())
                    .collect();
                (lease, got)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    eprintln!("3 x 1000 etcd allocations in {:?}", started.elapsed());
    let subnets: HashSet<_> = results.iter().map(|(l, _)| l.subnet).collect();
    assert_eq!(subnets.len(), 3, "two nodes leased one subnet");
    let addrs: HashSet<IpAddr> = results
        .iter()
        .flat_map(|(_, g)| g.iter().map(|a| a.addr))
        .collect();
    assert_eq!(addrs.len(), 3000, "duplicate addresses");
    let mut p = store(&etcd, "/cnet")
        .pool(PoolConfig::new("10.245.0.0/20".parse().unwrap()))
        .unwrap();
    let listed = p.list().unwrap();
    assert_eq!(listed.len(), 3000, "lost or extra allocations");
    assert!(listed.iter().all(|a| addrs.contains(&a.addr)));
}

#[test]
fn ipam_etcd_down_is_a_clear_error_not_a_hang() {
    // A port that accepts connections but never answers: a bounded timeout.
    let blackhole = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", blackhole.local_addr().unwrap());
    let t = Instant::now();
    let e = EtcdStore::connect(&[&url], "/cnet", Duration::from_millis(300)).unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert!(e.to_string().contains(&url), "{e}");

    let Some(etcd) = start_etcd("ipam_etcd_down_is_a_clear_error_not_a_hang") else {
        return;
    };
    let s = store(&etcd, "/cnet");
    let mut p = s
        .pool(PoolConfig::new("10.244.1.0/24".parse().unwrap()))
        .unwrap();
    p.allocate("c1", "eth0").unwrap();
    let url = etcd.url.clone();
    drop(etcd); // stop the server
    let t = Instant::now();
    let e = p.allocate("c2", "eth0").unwrap_err();
    assert!(t.elapsed() < TIMEOUT * 3, "took {:?}", t.elapsed());
    assert!(
        matches!(e, Error::Io { .. } | Error::Timeout { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains(&url), "names the endpoint: {e}");
    eprintln!("etcd down: {e}");
}
