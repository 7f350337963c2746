//! The IPAM etcd store against a real etcd server (Debian `etcd-server`),
//! started per test in its own namespace (see `common/etcd.rs`); the test
//! bodies run on threads inside that namespace. Without the `etcd` binary
//! these tests say so and skip (in CI they fail).
#![cfg(feature = "etcd")]

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, TcpListener};
use std::time::{Duration, Instant};

use cnet_core::ipam::{EtcdStore, LeaseStore, NodeAttrs, PoolConfig, PoolStore, SubnetConfig};
use cnet_core::Error;
use common::etcd::Etcd;

const TIMEOUT: Duration = Duration::from_secs(2);

/// Start etcd for `test`, or skip when that cannot be (not root, no etcd).
fn start_etcd(test: &str) -> Option<Etcd> {
    if !common::privileged() {
        return None;
    }
    Etcd::start(
        &test
            .replace("ipam_etcd_", "")
            .chars()
            .take(8)
            .collect::<String>(),
    )
}

/// Connect (call inside `etcd.run`).
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
    etcd.run(|| {
        let s = store(&etcd, "/cnet");
        let mut l = s.subnets(net16()).unwrap();
        let day = Duration::from_secs(3600);
        let attrs = NodeAttrs {
            underlay_ip: Some("192.0.2.1".parse().unwrap()),
            backend: Some("vxlan".into()),
            vtep_mac: Some("02:00:00:00:00:01".parse().unwrap()),
            ..Default::default()
        };
        // Each search starts at a random free subnet (no start-up herd).
        let a = l.acquire("node-a", &attrs, day).unwrap();
        let b = l.acquire("node-b", &NodeAttrs::default(), day).unwrap();
        for x in [&a, &b] {
            assert!(net16().is_assignable(&x.subnet), "{x:?}");
        }
        assert_ne!(a.subnet, b.subnet);

        // "Restart" node-a: a fresh connection, acquire again → same subnet.
        let s2 = store(&etcd, "/cnet");
        let mut l2 = s2.subnets(net16()).unwrap();
        assert_eq!(l2.acquire("node-a", &attrs, day).unwrap().subnet, a.subnet);
        l2.renew("node-a", day).unwrap();

        let gw = (1..255)
            .map(|i| format!("10.244.{i}.0/24").parse().unwrap())
            .find(|s| *s != a.subnet && *s != b.subnet)
            .unwrap();
        let r = l.reserve("gw", gw, &NodeAttrs::default()).unwrap();
        assert!(r.is_reservation());
        assert!(matches!(
            l.reserve("x", a.subnet, &NodeAttrs::default()),
            Err(Error::Conflict { .. })
        ));
        let peers = l.list().unwrap();
        let mut names: Vec<&str> = peers.iter().map(|p| p.node.as_str()).collect();
        assert!(
            peers.windows(2).all(|w| w[0].subnet < w[1].subnet),
            "sorted by subnet"
        );
        names.sort();
        assert_eq!(names, ["gw", "node-a", "node-b"]);
        let pa = peers.iter().find(|p| p.node == "node-a").unwrap();
        assert_eq!(pa.attrs, attrs);

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
    })
}

#[test]
fn ipam_etcd_lease_expiry_frees_the_subnet() {
    let Some(etcd) = start_etcd("ipam_etcd_lease_expiry_frees_the_subnet") else {
        return;
    };
    etcd.run(|| {
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
        // Free again: another node may take it.
        let y = l
            .claim(
                "node-y",
                x.subnet,
                &NodeAttrs::default(),
                Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(y.subnet, x.subnet);
        // node-x comes back: its old subnet is taken, so it gets another.
        let x2 = l
            .acquire("node-x", &NodeAttrs::default(), Duration::from_secs(60))
            .unwrap();
        assert_ne!(x2.subnet, x.subnet);
    })
}

#[test]
fn ipam_etcd_pool_semantics() {
    let Some(etcd) = start_etcd("ipam_etcd_pool_semantics") else {
        return;
    };
    etcd.run(|| {
        let s = store(&etcd, "/cnet");
        let mut p = s
            .pool(PoolConfig::new("10.244.1.0/29".parse().unwrap()))
            .unwrap();
        let a = p.allocate("c1", "eth0").unwrap();
        assert_eq!(a.addr, "10.244.1.2".parse::<IpAddr>().unwrap());
        assert_eq!(p.allocate("c1", "eth0").unwrap(), a, "idempotent");
        assert_eq!(
            p.allocate_tracked("c1", "eth0").unwrap(),
            (a.clone(), false)
        );
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
    })
}

#[test]
fn ipam_etcd_three_nodes_1000_allocations_each() {
    let Some(etcd) = start_etcd("ipam_etcd_three_nodes_1000_allocations_each") else {
        return;
    };
    etcd.run(|| {
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
    })
}

#[test]
fn ipam_etcd_down_is_a_clear_error_not_a_hang() {
    let Some(mut etcd) = start_etcd("ipam_etcd_down_is_a_clear_error_not_a_hang") else {
        return;
    };
    let ns = etcd.run(|| {
        // A port that accepts connections but never answers: the bounded
        // timeout, typed (a hang would never get to the assertion).
        let blackhole = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", blackhole.local_addr().unwrap());
        let e = EtcdStore::connect(&[&url], "/cnet", Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert!(e.to_string().contains(&url), "{e}");
        let s = store(&etcd, "/cnet");
        let mut p = s
            .pool(PoolConfig::new("10.244.1.0/24".parse().unwrap()))
            .unwrap();
        p.allocate("c1", "eth0").unwrap();
        p
    });
    let url = etcd.url.clone();
    etcd.stop(); // the server is gone
    let mut p = ns;
    let e = etcd.run(move || p.allocate("c2", "eth0").unwrap_err());
    assert!(
        matches!(e, Error::Io { .. } | Error::Timeout { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains(&url), "names the endpoint: {e}");
    eprintln!("etcd down: {e}");
}

/// The endpoint now serves an etcd whose revision is behind what the store
/// saw (restored from an old backup, or another cluster): generations could
/// repeat, so the store refuses to go on, with a message that says why.
#[test]
fn ipam_etcd_revision_going_back_is_refused() {
    let Some(mut etcd) = start_etcd("ipam_etcd_revision_going_back_is_refused") else {
        return;
    };
    let mut p = etcd.run(|| {
        let mut p = store(&etcd, "/cnet")
            .pool(PoolConfig::new("10.244.1.0/24".parse().unwrap()))
            .unwrap();
        for i in 0..20 {
            p.allocate(&format!("c{i}"), "eth0").unwrap();
        }
        p
    });
    etcd.replace_with_fresh();
    let e = etcd.run(move || p.allocate("late", "eth0").unwrap_err());
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().contains("revision went back"), "{e}");
}

/// etcd leases revoked by someone else while nodes acquire and renew (the
/// window in which a lease expires during a transaction): every call ends in
/// a lease or a typed error, never a lease that etcd does not hold.
#[test]
fn ipam_etcd_leases_revoked_underfoot() {
    let Some(etcd) = start_etcd("ipam_etcd_leases_revoked_underfoot") else {
        return;
    };
    etcd.run(|| {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let url = etcd.url.clone();
        /// Stops the vandal however the test ends (a panic included).
        struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        std::thread::scope(|sc| {
            // The vandal: revokes every etcd lease it sees, over and over.
            sc.spawn(|| {
                let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(2));
                    let Ok(r) = agent
                        .post(&format!("{url}/v3/lease/leases"))
                        .send_json(serde_json::json!({}))
                    else {
                        continue;
                    };
                    let v: serde_json::Value = r.into_json().unwrap_or_default();
                    for l in v["leases"].as_array().into_iter().flatten() {
                        let _ = agent
                            .post(&format!("{url}/v3/lease/revoke"))
                            .send_json(serde_json::json!({ "ID": l["ID"] }));
                    }
                }
            });
            let _stop = StopOnDrop(&stop);
            let s = store(&etcd, "/cnet");
            let mut l = s.subnets(net16()).unwrap();
            let ttl = Duration::from_secs(60);
            let (mut ok, mut typed) = (0, 0);
            for i in 0..40 {
                let node = format!("node-{}", i % 5);
                let r = if i % 2 == 0 {
                    l.acquire(&node, &NodeAttrs::default(), ttl)
                } else {
                    l.renew(&node, ttl)
                };
                match r {
                    Ok(_) => ok += 1,
                    Err(Error::NotFound { .. } | Error::Conflict { .. }) => typed += 1,
                    Err(e) => panic!("untyped failure under lease revocation: {e:?}"),
                }
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            eprintln!("{ok} succeeded, {typed} typed errors");
            assert!(ok > 0, "some calls succeed");
            // Whatever is listed is consistent: one subnet per node.
            let list = l.list().unwrap();
            let subnets: HashSet<_> = list.iter().map(|x| x.subnet).collect();
            let nodes: HashSet<_> = list.iter().map(|x| x.node.clone()).collect();
            assert_eq!(subnets.len(), list.len());
            assert_eq!(nodes.len(), list.len());
        });
    });
}

/// etcd's lease watch: a change by another client wakes it, a quiet store
/// does not, and an expiry (etcd deletes the keys) wakes it too.
#[test]
fn ipam_etcd_lease_watch_wakes_on_changes_and_expiry() {
    let Some(etcd) = start_etcd("ipam_etcd_lease_watch_wakes_on_changes_and_expiry") else {
        return;
    };
    etcd.run(|| {
        let mut mine = store(&etcd, "/cnet").subnets(net16()).unwrap();
        let mut watch = mine.watch().unwrap();
        assert!(!watch.wait(Duration::from_millis(200)).unwrap(), "quiet");
        let mut other = store(&etcd, "/cnet").subnets(net16()).unwrap();
        other
            .acquire("node-b", &NodeAttrs::default(), Duration::from_secs(60))
            .unwrap();
        let t = Instant::now();
        assert!(watch.wait(Duration::from_secs(5)).unwrap(), "acquire seen");
        eprintln!("acquire seen after {:?}", t.elapsed());
        while watch.wait(Duration::from_millis(100)).unwrap() {}
        other.release("node-b").unwrap();
        assert!(watch.wait(Duration::from_secs(5)).unwrap(), "release seen");
        while watch.wait(Duration::from_millis(100)).unwrap() {}
        other
            .acquire("node-c", &NodeAttrs::default(), Duration::from_secs(1))
            .unwrap();
        assert!(watch.wait(Duration::from_secs(5)).unwrap(), "acquire seen");
        while watch.wait(Duration::from_millis(100)).unwrap() {}
        assert!(watch.wait(Duration::from_secs(10)).unwrap(), "expiry seen");
        assert!(mine.get("node-c").unwrap().is_none());
    });
}

/// The lease watch's events one by one: the set it started from, then a
/// put per lease taken, none for a renewal (an etcd lease keep-alive that
/// writes no key: before, every renewal rewrote the lease and woke every
/// node of the cluster), a put for changed attributes, a gone per release
/// and per expiry. The descriptor is readable exactly while events wait.
#[test]
fn ipam_etcd_lease_events_one_by_one_and_renewals_are_silent() {
    let Some(etcd) = start_etcd("ipam_etcd_lease_events_one_by_one_and_renewals_are_silent") else {
        return;
    };
    etcd.run(|| {
        use cnet_core::ipam::LeaseEvent;
        let readable = |w: &dyn cnet_core::ipam::LeaseWatch, ms: u16| {
            let mut fds = [nix::poll::PollFd::new(
                w.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)).unwrap() > 0
        };
        let ttl = Duration::from_secs(30);
        let mut other = store(&etcd, "/cnet").subnets(net16()).unwrap();
        let a = other.acquire("node-a", &NodeAttrs::default(), ttl).unwrap();
        let mut mine = store(&etcd, "/cnet").subnets(net16()).unwrap();
        let mut watch = mine.watch().unwrap();
        let next = |w: &mut Box<dyn cnet_core::ipam::LeaseWatch>| {
            w.next(Duration::from_secs(5)).unwrap().expect("an event")
        };
        assert_eq!(next(&mut watch), LeaseEvent::All(vec![a.clone()]));
        assert_eq!(watch.next(Duration::from_millis(300)).unwrap(), None);

        let b = other.acquire("node-b", &NodeAttrs::default(), ttl).unwrap();
        assert!(
            readable(&*watch, 5000),
            "a put makes the descriptor readable"
        );
        assert_eq!(
            watch.next(Duration::ZERO).unwrap(),
            Some(LeaseEvent::Put(b.clone()))
        );
        assert_eq!(watch.next(Duration::ZERO).unwrap(), None);
        assert!(!readable(&*watch, 0), "drained: not readable");

        // Renewals: no key is written, so nothing comes.
        for _ in 0..5 {
            let r = other.renew("node-a", ttl).unwrap();
            assert_eq!(r.subnet, a.subnet);
            assert!(
                r.expires > a.expires,
                "the renewed lease says its new expiry"
            );
        }
        assert!(!readable(&*watch, 500), "renewals fire no watch");
        assert_eq!(watch.next(Duration::from_millis(100)).unwrap(), None);

        // New attributes are a put; a release and an expiry are gone.
        let attrs = NodeAttrs {
            underlay_ip: Some("192.0.2.7".parse().unwrap()),
            ..Default::default()
        };
        let b2 = other.claim("node-b", b.subnet, &attrs, ttl).unwrap();
        match next(&mut watch) {
            LeaseEvent::Put(l) => assert_eq!(
                (l.node, l.subnet, l.attrs),
                ("node-b".into(), b.subnet, attrs)
            ),
            e => panic!("expected the put of node-b's new attributes, got {e:?}"),
        }
        let _ = b2;
        other.release("node-b").unwrap();
        assert_eq!(next(&mut watch), LeaseEvent::Gone(b.subnet));
        let c = other
            .acquire("node-c", &NodeAttrs::default(), Duration::from_secs(2))
            .unwrap();
        assert_eq!(next(&mut watch), LeaseEvent::Put(c.clone()));
        let t = Instant::now();
        let gone = watch.next(Duration::from_secs(15)).unwrap();
        assert_eq!(
            gone,
            Some(LeaseEvent::Gone(c.subnet)),
            "expiry is etcd's delete"
        );
        eprintln!("expiry of a 2 s lease seen after {:?}", t.elapsed());
    });
}

/// A renewal is one keep-alive of the etcd lease the handle holds, which
/// does not see a lease key deleted under a live etcd lease (by hand, or
/// a release whose revoke was lost): `network::Member` sees the key go in
/// its watch and claims the subnet again at once.
#[test]
fn ipam_etcd_member_claims_its_subnet_again_when_its_key_is_deleted() {
    let Some(etcd) = start_etcd("ipam_etcd_member_claims_its_subnet_again_when_its_key_is_deleted")
    else {
        return;
    };
    etcd.run(|| {
        use cnet_core::ipam::{Backoff, Call, EtcdConfig, EtcdSession};
        use cnet_core::network::{Happened, Member, PeerReport, PeerSink};
        struct Nothing;
        impl PeerSink for Nothing {
            fn all(&mut self, _: &[cnet_core::ipam::NodeLease]) -> cnet_core::Result<PeerReport> {
                Ok(PeerReport::default())
            }
            fn put(&mut self, _: &cnet_core::ipam::NodeLease) -> cnet_core::Result<PeerReport> {
                Ok(PeerReport::default())
            }
            fn gone(&mut self, _: cnet_core::IpNet) -> cnet_core::Result<PeerReport> {
                Ok(PeerReport::default())
            }
        }
        let ttl = Duration::from_secs(30);
        let mut session = EtcdSession::new(
            EtcdConfig::new(&[&etcd.url], "/cnet"),
            net16(),
            Backoff::new(Duration::from_millis(50), Duration::from_secs(1)),
        );
        let attrs = NodeAttrs::default();
        let Call::Done(Ok(lease)) = session.call(|l| l.acquire("me", &attrs, ttl)) else {
            panic!("acquire");
        };
        let mut m = Member::new(session, lease.clone(), attrs, ttl);
        let _ = m.step(&mut Nothing);
        // The lease deleted behind the node's back (its etcd lease lives
        // on, so a keep-alive alone would still succeed).
        let mut other = store(&etcd, "/cnet").subnets(net16()).unwrap();
        let key = format!(
            "/cnet/networks/{}/leases/{}",
            "10.244.0.0_16",
            lease.subnet.to_string().replace('/', "_")
        );
        let b64 = |s: &str| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(s)
        };
        // Both of the node's keys, as a release does, its etcd lease left
        // alive (a revoke that was lost).
        for key in [key, "/cnet/networks/10.244.0.0_16/nodes/me".to_string()] {
            let v: serde_json::Value = ureq::post(&format!("{}/v3/kv/deleterange", etcd.url))
                .send_json(serde_json::json!({ "key": b64(&key) }))
                .unwrap()
                .into_json()
                .unwrap();
            assert_eq!(v["deleted"].as_str(), Some("1"), "deleted {key}: {v}");
        }
        assert!(other.get("me").unwrap().is_none());
        let t = Instant::now();
        let mut took_back = false;
        while !took_back {
            assert!(t.elapsed() < Duration::from_secs(10), "not claimed again");
            let mut fds = [nix::poll::PollFd::new(
                m.as_fd().unwrap(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16));
            took_back = m
                .step(&mut Nothing)
                .iter()
                .any(|h| matches!(h, Happened::TakenBack));
        }
        println!("lease key deleted: claimed again after {:?}", t.elapsed());
        assert_eq!(
            other.get("me").unwrap().map(|l| l.subnet),
            Some(lease.subnet)
        );
    });
}

/// Nodes that acquire together start their search at random subnets:
/// 40 threads, each a node, against one etcd, all get distinct subnets
/// and lose few compare-and-swap races (lowest-free-first made every node
/// try the same subnet: about N²/4 lost races).
#[test]
fn ipam_etcd_nodes_acquiring_together_rarely_collide() {
    let Some(etcd) = start_etcd("ipam_etcd_nodes_acquiring_together_rarely_collide") else {
        return;
    };
    etcd.run(|| {
        let before = etcd_txn_count(&etcd);
        let got: Vec<cnet_core::IpNet> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..40)
                .map(|i| {
                    let etcd = &etcd;
                    // A thread starts in the namespace of the thread
                    // that made it (etcd's, here).
                    s.spawn(move || {
                        let mut l = store(etcd, "/cnet").subnets(net16()).unwrap();
                        l.acquire(&format!("n{i}"), &NodeAttrs::default(), TIMEOUT * 30)
                            .unwrap()
                            .subnet
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let distinct: HashSet<_> = got.iter().collect();
        assert_eq!(distinct.len(), 40, "every node its own subnet: {got:?}");
        // 40 winning transactions and at most one registration each; the
        // rest are lost races (lowest-free-first lost about 40²/4 = 400).
        let txns = etcd_txn_count(&etcd) - before;
        eprintln!("40 nodes acquiring together: {txns} transactions");
        assert!(txns < 160, "{txns} transactions: too many lost races");
    });
}

/// etcd's count of transactions served (its /metrics).
fn etcd_txn_count(etcd: &Etcd) -> u64 {
    let text = ureq::get(&format!("{}/metrics", etcd.url))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("grpc_server_handled_total") && l.contains("grpc_method=\"Txn\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `claim` leases exactly the subnet a node holds, never another node's
/// and never a second one; after the store lost its data (a new empty
/// etcd at the endpoint) the same claims put the leases back, and a lease
/// watch made before the loss still wakes on changes made after it.
#[test]
fn ipam_etcd_claim_held_subnet_and_after_data_loss() {
    let Some(mut etcd) = start_etcd("ipam_etcd_claim_held_subnet_and_after_data_loss") else {
        return;
    };
    let (s7, s8): (cnet_core::IpNet, cnet_core::IpNet) = (
        "10.244.7.0/24".parse().unwrap(),
        "10.244.8.0/24".parse().unwrap(),
    );
    let ttl = Duration::from_secs(60);
    let attrs = NodeAttrs::default();
    let mut watch = etcd.run(|| {
        let mut l = store(&etcd, "/cnet").subnets(net16()).unwrap();
        assert_eq!(l.claim("a", s7, &attrs, ttl).unwrap().subnet, s7);
        assert_eq!(
            l.claim("a", s7, &attrs, ttl).unwrap().subnet,
            s7,
            "own lease renewed"
        );
        let e = l.claim("b", s7, &attrs, ttl).unwrap_err();
        assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
        assert!(e.to_string().contains("leased to node a"), "{e}");
        let e = l.claim("a", s8, &attrs, ttl).unwrap_err();
        assert!(e.to_string().contains("holds 10.244.7.0/24"), "{e}");
        let e = l
            .claim("b", "10.245.0.0/24".parse().unwrap(), &attrs, ttl)
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
        let b = l.acquire("b", &attrs, ttl).unwrap();
        assert!(b.subnet != s7 && net16().is_assignable(&b.subnet), "{b:?}");
        // History well past what the new etcd will have (renewals write
        // nothing: claims with new attributes do).
        for i in 0..20 {
            let mut a2 = attrs.clone();
            a2.extra.insert("i".into(), i.to_string());
            l.claim("a", s7, &a2, ttl).unwrap();
        }
        l.watch().unwrap()
    });
    etcd.replace_with_fresh();
    etcd.run(|| {
        while watch.wait(Duration::from_millis(300)).unwrap() {}
        let mut l = store(&etcd, "/cnet").subnets(net16()).unwrap();
        assert!(l.list().unwrap().is_empty(), "the new etcd is empty");
        assert_eq!(l.claim("a", s7, &attrs, ttl).unwrap().subnet, s7);
        while watch.wait(Duration::from_millis(500)).unwrap() {}
        l.claim("b", "10.244.1.0/24".parse().unwrap(), &attrs, ttl)
            .unwrap();
        let t = Instant::now();
        assert!(
            watch.wait(Duration::from_secs(10)).unwrap(),
            "the watch made before the loss sees a claim after it"
        );
        eprintln!("watch woke {:?} after a claim on the new etcd", t.elapsed());
        let c = l.acquire("c", &attrs, ttl).unwrap();
        assert!(
            c.subnet != s7 && c.subnet.to_string() != "10.244.1.0/24",
            "{c:?}"
        );
    });
}
