//! Attach on a bridge network whose pool is in etcd, through etcd
//! restarts: IPAM is the host's business, so every allocation (and every
//! reconnection the store makes) happens in the caller's namespace, never
//! inside the container's. Before that was so, the first attach after an
//! etcd restart and every later one failed with "Network is unreachable":
//! the store's new connection was opened inside the container.
//!
//! etcd runs in the namespace that plays the host (`common/etcd.rs`), on
//! its loopback; the bridge is made there too, and the test's calls run
//! on threads inside it, as a host agent's would.
#![cfg(feature = "etcd")]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use cnet_core::ipam::{EtcdStore, PoolConfig};
use cnet_core::network::{BridgeConfig, BridgeNetwork, ContainerNs};
use cnet_core::IpNet;
use common::etcd::Etcd;
use common::TestNs;

const SUBNET: &str = "10.244.7.0/24";

/// etcd (its namespace is the host) and a bridge network there whose pool
/// is in etcd; `None` when the test cannot run here.
fn setup(tag: &str) -> Option<(Etcd, BridgeNetwork)> {
    if !common::privileged() {
        return None;
    }
    let etcd = Etcd::start(tag)?;
    let url = etcd.url.clone();
    // A handle bound to the host's namespace (not Handle::current(), which
    // is the process's namespace whatever thread asks).
    let host = etcd.ns.handle();
    let net = etcd.run(move || {
        let store = EtcdStore::connect(&[&url], "/cnet-attach", Duration::from_secs(2)).unwrap();
        let subnet: IpNet = SUBNET.parse().unwrap();
        let pool = store.pool(PoolConfig::new(subnet)).unwrap();
        BridgeNetwork::ensure(&host, pool, BridgeConfig::new("cnbr0", subnet)).unwrap()
    });
    Some((etcd, net))
}

/// Attach `c` as `id`/eth0 from a thread in the host's namespace.
fn attach(etcd: &Etcd, net: &BridgeNetwork, c: &TestNs, id: &str) -> IpNet {
    let path = format!("/run/netns/{}", c.name);
    etcd.run(|| net.attach(&ContainerNs::path(&path), id, "eth0"))
        .unwrap_or_else(|e| panic!("attach {id}: {e}"))
        .address
}

/// The IPv4 address `ip` reads on eth0 in `c`.
fn live_addr(c: &TestNs) -> String {
    let v = c.ip_json(&["-4", "addr", "show", "dev", "eth0"]);
    let a = &v[0]["addr_info"][0];
    format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"])
}

/// Every container has the address the pool holds for it, no address is
/// held twice, and each pings the first one through the bridge.
fn check_all(etcd: &Etcd, net: &BridgeNetwork, pods: &[(TestNs, String, IpNet)]) {
    let allocs = etcd.run(|| net.allocations()).unwrap();
    assert_eq!(allocs.len(), pods.len(), "pool: {allocs:?}");
    let distinct: HashSet<_> = allocs.iter().map(|a| a.addr).collect();
    assert_eq!(
        distinct.len(),
        allocs.len(),
        "an address held twice: {allocs:?}"
    );
    let first = pods[0].2.addr().to_string();
    for (ns, id, addr) in pods {
        let a = allocs.iter().find(|a| &a.container_id == id).unwrap();
        assert_eq!(a.cidr(), *addr, "{id}");
        assert_eq!(live_addr(ns), addr.to_string(), "{id}");
        if addr.addr().to_string() != first {
            assert!(ns.ping(&first), "{id} ({addr}) cannot ping {first}");
        }
    }
}

#[test]
fn network_attach_etcd_pool_attaches_after_etcd_restarts() {
    let Some((mut etcd, net)) = setup("at-rst") else {
        return;
    };
    let mut pods = Vec::new();
    for round in 0..3 {
        let c = TestNs::new(&format!("at-rst{round}"));
        let id = format!("c{round}");
        let addr = attach(&etcd, &net, &c, &id);
        pods.push((c, id, addr));
        // Every connection the store holds dies; the next attach must
        // reconnect from the host's namespace.
        etcd.restart();
    }
    check_all(&etcd, &net, &pods);
    // Detach after a restart too: the release reaches etcd.
    let (_, id, _) = &pods[2];
    etcd.run(|| net.detach(None, id, "eth0")).unwrap();
    pods.pop();
    check_all(&etcd, &net, &pods);
}

#[test]
fn network_attach_etcd_pool_concurrent_attaches_across_restarts() {
    let Some((mut etcd, net)) = setup("at-par") else {
        return;
    };
    const THREADS: usize = 4;
    let mut pods: Vec<(TestNs, String, IpNet)> = Vec::new();
    for round in 0..2 {
        let batch: Vec<(TestNs, String)> = (0..THREADS)
            .map(|i| {
                (
                    TestNs::new(&format!("at-p{round}{i}")),
                    format!("r{round}-c{i}"),
                )
            })
            .collect();
        // Several threads of the host attach at once, right after etcd
        // restarted: each may be the one that reconnects.
        let addrs: Vec<IpNet> = etcd.run(|| {
            std::thread::scope(|s| {
                let hs: Vec<_> = batch
                    .iter()
                    .map(|(c, id)| {
                        let path = format!("/run/netns/{}", c.name);
                        let net = &net;
                        s.spawn(move || net.attach(&ContainerNs::path(&path), id, "eth0"))
                    })
                    .collect();
                hs.into_iter()
                    .zip(&batch)
                    .map(|(h, (_, id))| {
                        h.join()
                            .unwrap()
                            .unwrap_or_else(|e| panic!("attach {id}: {e}"))
                            .address
                    })
                    .collect()
            })
        });
        pods.extend(batch.into_iter().zip(addrs).map(|((c, id), a)| (c, id, a)));
        etcd.restart();
    }
    check_all(&etcd, &net, &pods);
}
