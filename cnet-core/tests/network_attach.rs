//! The bridge network (`cnet_core::network`): ensure, attach, detach,
//! check, each against real kernel objects in throwaway namespaces, read
//! back with `ip -j -d …` / `bridge -j link`, proven with ping, and the
//! file store read by a second, independent handle.

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cnet_core::ipam::{Allocation, FileStore, PoolConfig, PoolStore};
#[cfg(feature = "failpoints")]
use cnet_core::network::AttachStep;
use cnet_core::network::{
    host_veth_mac, host_veth_name, BridgeConfig, BridgeNetwork, ContainerNs, Drift,
};
use cnet_core::{Error, IpNet};
use common::{privileged, TestNs};
use serde_json::Value;

const SUBNET: &str = "10.244.1.0/24";
const GW: &str = "10.244.1.1";
const MTU: u32 = 1450;

/// A host namespace with a bridge network `cni0` over a file store in a
/// temporary directory. Field order is drop order: the network's socket
/// closes before the namespace is deleted.
struct Fixture {
    net: BridgeNetwork,
    host: TestNs,
    dir: tempfile::TempDir,
    subnet: IpNet,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        Self::with_subnet(tag, SUBNET)
    }

    fn with_subnet(tag: &str, subnet: &str) -> Fixture {
        let host = TestNs::new(tag);
        let dir = tempfile::tempdir().expect("temp dir");
        let subnet: IpNet = subnet.parse().unwrap();
        let pool = FileStore::open(dir.path())
            .unwrap()
            .pool(PoolConfig::new(subnet))
            .unwrap();
        let net = BridgeNetwork::ensure(
            &host.handle(),
            pool,
            BridgeConfig::new("cni0", subnet).mtu(MTU),
        )
        .expect("ensure");
        Fixture {
            net,
            host,
            dir,
            subnet,
        }
    }

    /// The store as another process sees it: a fresh handle on the same
    /// directory.
    fn stored(&self) -> Vec<Allocation> {
        FileStore::open(self.dir.path())
            .unwrap()
            .pool(PoolConfig::new(self.subnet))
            .unwrap()
            .list()
            .unwrap()
    }

    fn held_by(&self, cid: &str) -> Option<Allocation> {
        self.stored().into_iter().find(|a| a.container_id == cid)
    }

    /// Names of the host namespace's links.
    fn host_links(&self) -> Vec<String> {
        link_names(&self.host)
    }

    /// The bridge's ports, as `bridge -j link show` lists them.
    fn ports(&self) -> Vec<Value> {
        self.host
            .bridge_json(&["link", "show"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn link_names(ns: &TestNs) -> Vec<String> {
    ns.ip_json(&["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

fn addrs_of(ns: &TestNs, dev: &str) -> Vec<String> {
    ns.ip_json(&["-4", "addr", "show", "dev", dev])
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// Nothing of `cid`'s attachment is left: no host end, no bridge port, the
/// container's links as they were before, no allocation in the store.
fn assert_nothing_left(f: &Fixture, pod: &TestNs, cid: &str, pod_links_before: &[String]) {
    let name = host_veth_name(cid, "eth0").unwrap();
    assert!(
        !f.host_links().contains(&name),
        "host end {name} left behind: {:?}",
        f.host_links()
    );
    assert!(
        f.ports().iter().all(|p| p["ifname"] != name.as_str()),
        "bridge port left behind: {:?}",
        f.ports()
    );
    if NetworkNsAlive::check(pod) {
        assert_eq!(link_names(pod), pod_links_before, "container links changed");
    }
    assert_eq!(f.held_by(cid), None, "allocation left in the store");
}

struct NetworkNsAlive;
impl NetworkNsAlive {
    fn check(pod: &TestNs) -> bool {
        Path::new("/run/netns").join(&pod.name).exists()
    }
}

fn expect_err<T: std::fmt::Debug>(r: cnet_core::Result<T>) -> Error {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

// ------------------------------------------------------------- ensure

#[test]
fn network_ensure_fresh_makes_bridge_gateway_and_forwarding() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("ens-fresh");
    let br = f.host.link_json("cni0");
    assert_eq!(br["linkinfo"]["info_kind"], "bridge");
    assert_eq!(br["mtu"], MTU);
    assert!(br["flags"].as_array().unwrap().iter().any(|x| x == "UP"));
    // Its MAC is derived from the gateway (0a:58 + 10.244.1.1), so it
    // never follows its ports'.
    assert_eq!(br["address"], "0a:58:0a:f4:01:01");
    assert_eq!(addrs_of(&f.host, "cni0"), vec![format!("{GW}/24")]);
    assert_eq!(f.net.gateway().to_string(), format!("{GW}/24"));
    assert_eq!(br["ifindex"].as_u64().unwrap() as u32, f.net.bridge_index());
    let fwd = common::run(
        "ip",
        &[
            "netns",
            "exec",
            &f.host.name,
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
        ],
    );
    assert_eq!(fwd.trim(), "1");
}

#[test]
fn network_ensure_is_idempotent() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("ens-idem");
    let before = f.host.link_json("cni0");
    let pool = FileStore::open(f.dir.path())
        .unwrap()
        .pool(PoolConfig::new(f.subnet))
        .unwrap();
    let again = BridgeNetwork::ensure(
        &f.host.handle(),
        pool,
        BridgeConfig::new("cni0", f.subnet).mtu(MTU),
    )
    .expect("second ensure");
    assert_eq!(again.bridge_index(), f.net.bridge_index());
    let after = f.host.link_json("cni0");
    assert_eq!(before["ifindex"], after["ifindex"]);
    assert_eq!(addrs_of(&f.host, "cni0"), vec![format!("{GW}/24")]);
}

/// Ensure against a bridge made with `ip` that differs in one way.
fn ensure_against(tag: &str, setup: &[&[&str]]) -> (TestNs, Error) {
    let host = TestNs::new(tag);
    for cmd in setup {
        host.ip(cmd);
    }
    let dir = tempfile::tempdir().unwrap();
    let subnet: IpNet = SUBNET.parse().unwrap();
    let pool = FileStore::open(dir.path())
        .unwrap()
        .pool(PoolConfig::new(subnet))
        .unwrap();
    let e = expect_err(BridgeNetwork::ensure(
        &host.handle(),
        pool,
        BridgeConfig::new("cni0", subnet).mtu(MTU),
    ));
    (host, e)
}

fn differences(e: &Error) -> Vec<String> {
    match e {
        Error::Mismatch { differences, .. } => differences.clone(),
        other => panic!("expected Mismatch, got {other:?}"),
    }
}

#[test]
fn network_ensure_reports_another_gateway_and_changes_nothing() {
    if !privileged() {
        return;
    }
    let (host, e) = ensure_against(
        "ens-gw",
        &[
            &["link", "add", "cni0", "mtu", "1450", "type", "bridge"],
            &["link", "set", "cni0", "up"],
            &["addr", "add", "10.244.9.1/24", "dev", "cni0"],
        ],
    );
    assert_eq!(
        differences(&e),
        vec!["gateway: have 10.244.9.1/24, want 10.244.1.1/24"]
    );
    assert!(e.to_string().contains("cni0"), "{e}");
    assert_eq!(addrs_of(&host, "cni0"), vec!["10.244.9.1/24"]);
}

#[test]
fn network_ensure_reports_another_mtu_and_changes_nothing() {
    if !privileged() {
        return;
    }
    let (host, e) = ensure_against(
        "ens-mtu",
        &[
            &["link", "add", "cni0", "mtu", "1500", "type", "bridge"],
            &["link", "set", "cni0", "up"],
        ],
    );
    assert_eq!(differences(&e), vec!["mtu: have 1500, want 1450"]);
    assert_eq!(host.link_json("cni0")["mtu"], 1500);
    // No address was added to a bridge that does not match.
    assert!(addrs_of(&host, "cni0").is_empty());
}

#[test]
fn network_ensure_reports_bridge_down_and_every_difference_at_once() {
    if !privileged() {
        return;
    }
    let (host, e) = ensure_against(
        "ens-down",
        &[&["link", "add", "cni0", "mtu", "1450", "type", "bridge"]],
    );
    assert_eq!(differences(&e), vec!["state: have down, want up"]);
    assert!(!host.link_json("cni0")["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x == "UP"));

    let (_host, e) = ensure_against(
        "ens-all",
        &[
            &["link", "add", "cni0", "mtu", "9000", "type", "bridge"],
            &["addr", "add", "10.244.9.1/24", "dev", "cni0"],
        ],
    );
    assert_eq!(
        differences(&e),
        vec![
            "mtu: have 9000, want 1450",
            "state: have down, want up",
            "gateway: have 10.244.9.1/24, want 10.244.1.1/24"
        ]
    );

    // Not a bridge at all.
    let (_host, e) = ensure_against(
        "ens-kind",
        &[&["link", "add", "cni0", "type", "veth", "peer", "name", "x0"]],
    );
    assert_eq!(differences(&e), vec!["kind: have veth, want bridge"]);
}

#[test]
fn network_ensure_refuses_a_pool_of_another_subnet() {
    if !privileged() {
        return;
    }
    let host = TestNs::new("ens-pool");
    let dir = tempfile::tempdir().unwrap();
    let pool = FileStore::open(dir.path())
        .unwrap()
        .pool(PoolConfig::new("10.244.2.0/24".parse().unwrap()))
        .unwrap();
    let e = expect_err(BridgeNetwork::ensure(
        &host.handle(),
        pool,
        BridgeConfig::new("cni0", SUBNET.parse().unwrap()),
    ));
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert!(!link_names(&host).contains(&"cni0".to_string()));
}

// ------------------------------------------------------------- attach

/// What `ip -j -d` says about one attachment, checked against what attach
/// returned.
fn assert_reads_back(f: &Fixture, pod: &TestNs, att: &cnet_core::network::Attachment) {
    // Host end: a veth port of cni0, up, MTU, the MAC attach reported.
    let h = f.host.link_json(&att.host.name);
    assert_eq!(h["linkinfo"]["info_kind"], "veth");
    assert_eq!(h["master"], "cni0");
    assert_eq!(h["mtu"], MTU);
    assert_eq!(h["address"], att.host.mac.to_string());
    assert_eq!(h["ifindex"].as_u64().unwrap() as u32, att.host.index);
    assert!(h["flags"].as_array().unwrap().iter().any(|x| x == "UP"));
    assert_eq!(h["linkinfo"]["info_slave_kind"], "bridge");
    // The bridge lists it as a forwarding port.
    let port = f
        .ports()
        .into_iter()
        .find(|p| p["ifname"] == att.host.name.as_str())
        .expect("bridge port");
    assert_eq!(port["master"], "cni0");
    assert_eq!(port["state"], "forwarding");
    // Container end.
    let c = pod.link_json("eth0");
    assert_eq!(c["linkinfo"]["info_kind"], "veth");
    assert_eq!(c["mtu"], MTU);
    assert_eq!(c["operstate"], "UP");
    assert_eq!(c["address"], att.container.mac.to_string());
    assert_eq!(c["ifindex"].as_u64().unwrap() as u32, att.container.index);
    assert_eq!(c["link_index"].as_u64().unwrap() as u32, att.host.index);
    assert_eq!(addrs_of(pod, "eth0"), vec![att.address.to_string()]);
    let routes = pod.ip_json(&["-4", "route", "show", "default"]);
    let routes = routes.as_array().unwrap();
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0]["gateway"], GW);
    assert_eq!(routes[0]["dev"], "eth0");
    // The store holds the address for this container.
    let a = f.held_by(&att.container_id).expect("allocation");
    assert_eq!(a.cidr(), att.address);
    assert_eq!(a.generation, att.generation);
}

#[test]
fn network_attach_two_containers_that_ping_each_other_and_the_gateway() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("att-two");
    let (p1, p2) = (TestNs::new("att-two-a"), TestNs::new("att-two-b"));
    let a1 = f
        .net
        .attach(&ContainerNs::name(&p1.name), "c1", "eth0")
        .expect("attach c1");
    let a2 = f
        .net
        .attach(&ContainerNs::name(&p2.name), "c2", "eth0")
        .expect("attach c2");
    assert_eq!(a1.address.to_string(), "10.244.1.2/24");
    assert_eq!(a2.address.to_string(), "10.244.1.3/24");
    assert_eq!(a1.host.name, host_veth_name("c1", "eth0").unwrap());
    assert_eq!(a1.host.mac, host_veth_mac("c1", "eth0"));
    assert_eq!(a1.gateway.to_string(), GW);
    assert_eq!(a1.mtu, MTU);
    assert_eq!(
        a1.container.sandbox.as_deref(),
        Some(Path::new("/run/netns").join(&p1.name).as_path())
    );
    assert_reads_back(&f, &p1, &a1);
    assert_reads_back(&f, &p2, &a2);
    assert_eq!(f.ports().len(), 2);

    assert!(p1.ping("10.244.1.3"), "c1 → c2");
    assert!(p2.ping("10.244.1.2"), "c2 → c1");
    assert!(p1.ping(GW), "c1 → gateway");
    assert!(f.host.ping("10.244.1.3"), "host → c2");

    assert_eq!(
        f.net
            .check(&ContainerNs::name(&p1.name), "c1", "eth0")
            .unwrap(),
        vec![]
    );
    assert_eq!(
        f.net
            .check(&ContainerNs::name(&p2.name), "c2", "eth0")
            .unwrap(),
        vec![]
    );
}

/// A `sleep` in a fresh network namespace of its own (`unshare --net`),
/// killed by the guard.
struct Sleeper(Child);

impl Sleeper {
    fn spawn() -> Sleeper {
        let child = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare --net sleep");
        let s = Sleeper(child);
        // Wait until it runs `sleep`: unshare has switched namespaces then.
        // Never attach before that, or the root namespace would get eth0.
        let pid = s.pid();
        let t = Instant::now();
        loop {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sleep" {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "sleep did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        let ino = |p: &str| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        assert_ne!(
            ino(&format!("/proc/{pid}/ns/net")).unwrap(),
            ino("/proc/self/ns/net").unwrap(),
            "the sleeper must not be in the root namespace"
        );
        s
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn network_attach_by_name_by_path_and_by_pid() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("att-how");
    let by_name = TestNs::new("att-how-n");
    let by_path = TestNs::new("att-how-p");
    let sleeper = Sleeper::spawn();

    let path = Path::new("/run/netns").join(&by_path.name);
    let a = f
        .net
        .attach(&ContainerNs::name(&by_name.name), "by-name", "eth0")
        .unwrap();
    let b = f
        .net
        .attach(&ContainerNs::path(&path), "by-path", "eth0")
        .unwrap();
    let c = f
        .net
        .attach(&ContainerNs::pid(sleeper.pid()), "by-pid", "eth0")
        .unwrap();
    assert_eq!(b.container.sandbox.as_deref(), Some(path.as_path()));
    let pid_path = format!("/proc/{}/ns/net", sleeper.pid());
    assert_eq!(c.container.sandbox.as_deref(), Some(Path::new(&pid_path)));
    assert_reads_back(&f, &by_name, &a);
    assert_reads_back(&f, &by_path, &b);

    // The pid's namespace, read through nsenter.
    let out = common::run(
        "nsenter",
        &[
            "-t",
            &sleeper.pid().to_string(),
            "-n",
            "ip",
            "-j",
            "-4",
            "addr",
            "show",
            "dev",
            "eth0",
        ],
    );
    assert!(out.contains(&c.address.addr().to_string()), "{out}");
    // Everyone reaches everyone.
    for dst in [b.address.addr(), c.address.addr()] {
        assert!(by_name.ping(&dst.to_string()), "by-name → {dst}");
    }
    assert!(by_path.ping(&c.address.addr().to_string()));
    let ns = ContainerNs::pid(sleeper.pid());
    assert_eq!(f.net.check(&ns, "by-pid", "eth0").unwrap(), vec![]);
    f.net.detach(Some(&ns), "by-pid", "eth0").unwrap();
    assert_eq!(f.held_by("by-pid"), None);
}

#[test]
fn network_attach_from_many_threads_at_once() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("par");
    let pods: Vec<TestNs> = (0..8).map(|i| TestNs::new(&format!("par-{i}"))).collect();
    let net = &f.net;
    let atts: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                s.spawn(move || {
                    net.attach(&ContainerNs::name(&p.name), &format!("c{i}"), "eth0")
                        .expect("attach")
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut addrs: Vec<IpNet> = atts.iter().map(|a| a.address).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), pods.len(), "every container its own address");
    assert_eq!(f.stored().len(), pods.len());
    assert_eq!(f.ports().len(), pods.len());
    for (p, a) in pods.iter().zip(&atts) {
        assert_reads_back(&f, p, a);
    }
    assert!(pods[0].ping(&atts[7].address.addr().to_string()));
    assert!(pods[7].ping(GW));
    std::thread::scope(|s| {
        for (i, p) in pods.iter().enumerate() {
            s.spawn(move || {
                net.detach(Some(&ContainerNs::name(&p.name)), &format!("c{i}"), "eth0")
                    .expect("detach")
            });
        }
    });
    assert_eq!(f.stored(), vec![]);
    assert_eq!(f.ports().len(), 0);
}

#[test]
fn network_attach_ipv6_containers_that_ping_each_other() {
    if !privileged() {
        return;
    }
    let f = Fixture::with_subnet("v6", "fd00:10:244:1::/64");
    let (p1, p2) = (TestNs::new("v6-a"), TestNs::new("v6-b"));
    let a1 = f
        .net
        .attach(&ContainerNs::name(&p1.name), "c1", "eth0")
        .unwrap();
    let a2 = f
        .net
        .attach(&ContainerNs::name(&p2.name), "c2", "eth0")
        .unwrap();
    assert_eq!(a1.address.to_string(), "fd00:10:244:1::2/64");
    assert_eq!(a2.address.to_string(), "fd00:10:244:1::3/64");
    let global = |ns: &TestNs, dev: &str| -> Vec<String> {
        ns.ip_json(&["-6", "addr", "show", "dev", dev, "scope", "global"])
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            // iproute2 prints `{}` for each address its filter dropped.
            .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"])))
            .collect()
    };
    assert_eq!(global(&f.host, "cni0"), vec!["fd00:10:244:1::1/64"]);
    assert_eq!(global(&p1, "eth0"), vec!["fd00:10:244:1::2/64"]);
    let r = p1.ip_json(&["-6", "route", "show", "default"]);
    assert_eq!(r[0]["gateway"], "fd00:10:244:1::1", "{r}");
    assert_eq!(r[0]["dev"], "eth0");
    let fwd = common::run(
        "ip",
        &[
            "netns",
            "exec",
            &f.host.name,
            "cat",
            "/proc/sys/net/ipv6/conf/all/forwarding",
        ],
    );
    assert_eq!(fwd.trim(), "1");
    assert!(p1.ping("fd00:10:244:1::3"), "c1 → c2");
    assert!(p2.ping("fd00:10:244:1::1"), "c2 → gateway");
    let ns = ContainerNs::name(&p1.name);
    assert_eq!(f.net.check(&ns, "c1", "eth0").unwrap(), vec![]);
    let r = f.net.detach(Some(&ns), "c1", "eth0").unwrap();
    assert_eq!(r.released.map(|a| a.addr), Some(a1.address.addr()));
}

// ------------------------------------------------------------- rollback

#[cfg(feature = "failpoints")]
#[test]
fn network_attach_rolls_back_a_fault_after_each_step() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("rb-step");
    let pod = TestNs::new("rb-step-p");
    let before = link_names(&pod);
    for step in [
        AttachStep::OpenNamespace,
        AttachStep::CreateVeth,
        AttachStep::ContainerSocket,
        AttachStep::Allocate,
        AttachStep::ConfigureContainer,
    ] {
        f.net.inject_fault(Some(step));
        let e = expect_err(f.net.attach(&ContainerNs::name(&pod.name), "c1", "eth0"));
        assert!(e.to_string().contains("fault injected"), "{step:?}: {e}");
        assert!(
            !e.to_string().contains("rollback incomplete"),
            "{step:?}: {e}"
        );
        assert_nothing_left(&f, &pod, "c1", &before);
    }
    f.net.inject_fault(None);
    // The same container attaches fine afterwards (the pool hands out the
    // next address, not the one just released: it moves on before reusing).
    let a = f
        .net
        .attach(&ContainerNs::name(&pod.name), "c1", "eth0")
        .unwrap();
    assert_eq!(f.stored().len(), 1);
    assert_reads_back(&f, &pod, &a);
    assert!(pod.ping(GW));
}

#[test]
fn network_attach_to_a_vanished_namespace_leaves_nothing() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("rb-gone");
    let gone = format!("cn-rb-gone-x-{}", std::process::id());
    let e = expect_err(f.net.attach(&ContainerNs::name(&gone), "c1", "eth0"));
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains(&gone), "{e}");
    // A process that has exited.
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let e = expect_err(f.net.attach(&ContainerNs::pid(pid), "c2", "eth0"));
    assert!(e.is_not_found(), "{e}");
    assert_eq!(f.ports().len(), 0);
    assert_eq!(f.stored(), vec![]);
}

#[test]
fn network_attach_when_the_container_has_that_interface_already() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("rb-ifname");
    let pod = TestNs::new("rb-ifname-p");
    pod.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "x0"]);
    let before = link_names(&pod);
    let e = expect_err(f.net.attach(&ContainerNs::name(&pod.name), "c1", "eth0"));
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    assert!(
        e.to_string().contains("interface eth0 already exists"),
        "{e}"
    );
    assert_nothing_left(&f, &pod, "c1", &before);
}

#[test]
fn network_attach_when_a_foreign_link_has_the_host_side_name() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("rb-clash");
    let pod = TestNs::new("rb-clash-p");
    let before = link_names(&pod);
    let name = host_veth_name("c1", "eth0").unwrap();
    f.host
        .ip(&["link", "add", &name, "type", "veth", "peer", "name", "x0"]);
    let e = expect_err(f.net.attach(&ContainerNs::name(&pod.name), "c1", "eth0"));
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert!(e.to_string().contains(&name), "{e}");
    // The foreign link is untouched, and detach leaves it alone too.
    assert!(f.host_links().contains(&name));
    assert_eq!(link_names(&pod), before);
    assert_eq!(f.stored(), vec![]);
    let r = f
        .net
        .detach(Some(&ContainerNs::name(&pod.name)), "c1", "eth0")
        .unwrap();
    assert!(!r.link_removed);
    assert_eq!(r.left_alone.len(), 1, "{r:?}");
    assert!(f.host_links().contains(&name));
}

#[test]
fn network_attach_with_an_exhausted_pool_removes_its_veth() {
    if !privileged() {
        return;
    }
    // A /30: network, gateway, broadcast, and one address to hand out.
    let f = Fixture::with_subnet("rb-full", "10.244.1.0/30");
    let (p1, p2) = (TestNs::new("rb-full-a"), TestNs::new("rb-full-b"));
    f.net
        .attach(&ContainerNs::name(&p1.name), "c1", "eth0")
        .unwrap();
    let before = link_names(&p2);
    let e = expect_err(f.net.attach(&ContainerNs::name(&p2.name), "c2", "eth0"));
    assert!(matches!(e, Error::Exhausted { .. }), "{e}");
    assert_nothing_left(&f, &p2, "c2", &before);
    // c1 is untouched.
    assert_eq!(f.stored().len(), 1);
    assert_eq!(f.ports().len(), 1);
    assert!(p1.ping("10.244.1.1"));
}

#[test]
fn network_attach_when_the_container_has_a_default_route_already() {
    if !privileged() {
        return;
    }
    // The last step (route) fails in the kernel: the address and the veth
    // made before it are taken back.
    let f = Fixture::new("rb-route");
    let pod = TestNs::new("rb-route-p");
    pod.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    pod.ip(&["link", "set", "d0", "up"]);
    pod.ip(&["link", "set", "d1", "up"]);
    pod.ip(&["addr", "add", "203.0.113.2/24", "dev", "d0"]);
    pod.ip(&["route", "add", "default", "via", "203.0.113.1"]);
    let before = link_names(&pod);
    let e = expect_err(f.net.attach(&ContainerNs::name(&pod.name), "c1", "eth0"));
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    assert!(e.to_string().contains("default route"), "{e}");
    assert_nothing_left(&f, &pod, "c1", &before);
    let routes = pod.ip_json(&["-4", "route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], "203.0.113.1", "their route is kept");
}

#[test]
fn network_attach_after_the_bridge_vanished_says_so() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("rb-bridge");
    let pod = TestNs::new("rb-bridge-p");
    let before = link_names(&pod);
    f.host.ip(&["link", "del", "cni0"]);
    let e = expect_err(f.net.attach(&ContainerNs::name(&pod.name), "c1", "eth0"));
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains("ensure the network again"), "{e}");
    assert_nothing_left(&f, &pod, "c1", &before);
}

// ------------------------------------------------------------- twice

#[test]
fn network_attach_twice_is_idempotent_and_refuses_a_drifted_one() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("twice");
    let pod = TestNs::new("twice-p");
    let ns = ContainerNs::name(&pod.name);
    let first = f.net.attach(&ns, "c1", "eth0").unwrap();
    let second = f.net.attach(&ns, "c1", "eth0").unwrap();
    assert_eq!(first, second);
    assert_eq!(f.stored().len(), 1);
    assert_eq!(f.ports().len(), 1);
    assert_reads_back(&f, &pod, &second);

    // Drift: the address is gone. Attach refuses, lists it, changes nothing.
    pod.ip(&["addr", "del", "10.244.1.2/24", "dev", "eth0"]);
    let e = expect_err(f.net.attach(&ns, "c1", "eth0"));
    let d = differences(&e);
    assert!(
        d.iter().any(|x| x.contains("lacks address 10.244.1.2/24")),
        "{d:?}"
    );
    assert!(e.to_string().contains("detach first"), "{e}");
    assert!(addrs_of(&pod, "eth0").is_empty());
    assert_eq!(f.stored().len(), 1);
    // Detach and attach again repairs it.
    f.net.detach(Some(&ns), "c1", "eth0").unwrap();
    let third = f.net.attach(&ns, "c1", "eth0").unwrap();
    assert_reads_back(&f, &pod, &third);
}

#[test]
fn network_attach_twice_on_a_forgotten_allocation_keeps_no_new_one() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("twice-fg");
    let pod = TestNs::new("twice-fg-p");
    let ns = ContainerNs::name(&pod.name);
    let first = f.net.attach(&ns, "c1", "eth0").unwrap();
    // The pool forgets the pair (another process released it), while the
    // container keeps its interface and address: the next attach's
    // allocation is a new one (the pool's cursor has moved on), which the
    // live attachment contradicts.
    let mut other = FileStore::open(f.dir.path())
        .unwrap()
        .pool(PoolConfig::new(f.subnet))
        .unwrap();
    other.release("c1", "eth0").unwrap().unwrap();
    let e = expect_err(f.net.attach(&ns, "c1", "eth0"));
    assert!(matches!(e, Error::Mismatch { .. }), "{e:?}");
    // Nothing changed: the allocation attach made for the check is gone
    // again, the container keeps what it had.
    assert_eq!(f.stored(), vec![], "attach left an allocation behind");
    assert_eq!(
        addrs_of(&pod, "eth0"),
        vec![first.address.to_string()],
        "the container's address changed"
    );
    // A pool that still holds the pair's allocation keeps it on Mismatch.
    let held = other.allocate("c1", "eth0").unwrap();
    pod.ip(&["addr", "flush", "dev", "eth0"]);
    let e = expect_err(f.net.attach(&ns, "c1", "eth0"));
    assert!(matches!(e, Error::Mismatch { .. }), "{e:?}");
    assert_eq!(f.stored(), vec![held]);
}

// ------------------------------------------------------------- detach

#[test]
fn network_detach_removes_everything_and_twice_is_fine() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("det");
    let pod = TestNs::new("det-p");
    let before = link_names(&pod);
    let ns = ContainerNs::name(&pod.name);
    let a = f.net.attach(&ns, "c1", "eth0").unwrap();
    let r = f.net.detach(Some(&ns), "c1", "eth0").unwrap();
    assert!(r.link_removed);
    assert_eq!(r.host_veth, a.host.name);
    assert_eq!(r.released.as_ref().map(|x| x.addr), Some(a.address.addr()));
    assert_nothing_left(&f, &pod, "c1", &before);
    let r = f.net.detach(Some(&ns), "c1", "eth0").unwrap();
    assert!(!r.link_removed);
    assert_eq!(r.released, None);
    // Without a namespace, too.
    let r = f.net.detach(None, "c1", "eth0").unwrap();
    assert!(!r.link_removed && r.released.is_none());
}

#[test]
fn network_detach_when_the_namespace_is_gone_releases_the_address() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("det-ns");
    let pod = TestNs::new("det-ns-p");
    let ns = ContainerNs::name(&pod.name);
    let a = f.net.attach(&ns, "c1", "eth0").unwrap();
    // Its name removed and its last file descriptor closed: the namespace
    // is gone.
    drop(pod);
    let r = f.net.detach(Some(&ns), "c1", "eth0").expect("detach");
    assert_eq!(r.released.map(|x| x.addr), Some(a.address.addr()));
    assert_eq!(f.stored(), vec![]);
    // The kernel destroys the namespace, and the veth pair with it, in the
    // background; detach deleted the host end if it was still there.
    let t = Instant::now();
    while f.host_links().contains(&a.host.name) {
        assert!(t.elapsed() < Duration::from_secs(10), "host end lingers");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn network_detach_when_the_link_is_gone_releases_the_address() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("det-link");
    let pod = TestNs::new("det-link-p");
    let before = link_names(&pod);
    let ns = ContainerNs::name(&pod.name);
    let a = f.net.attach(&ns, "c1", "eth0").unwrap();
    f.host.ip(&["link", "del", &a.host.name]);
    let r = f.net.detach(Some(&ns), "c1", "eth0").unwrap();
    assert!(!r.link_removed);
    assert_eq!(r.released.map(|x| x.addr), Some(a.address.addr()));
    assert_nothing_left(&f, &pod, "c1", &before);
}

#[test]
fn network_detach_when_the_allocation_is_gone_removes_the_link() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("det-alloc");
    let pod = TestNs::new("det-alloc-p");
    let before = link_names(&pod);
    let ns = ContainerNs::name(&pod.name);
    f.net.attach(&ns, "c1", "eth0").unwrap();
    // Another process released it (a GC, an operator).
    FileStore::open(f.dir.path())
        .unwrap()
        .pool(PoolConfig::new(f.subnet))
        .unwrap()
        .release("c1", "eth0")
        .unwrap();
    let r = f.net.detach(None, "c1", "eth0").unwrap();
    assert!(r.link_removed);
    assert_eq!(r.released, None);
    assert_nothing_left(&f, &pod, "c1", &before);
}

#[test]
fn network_detach_finds_a_renamed_host_end_through_the_namespace() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("det-ren");
    let pod = TestNs::new("det-ren-p");
    let before = link_names(&pod);
    let ns = ContainerNs::name(&pod.name);
    let a = f.net.attach(&ns, "c1", "eth0").unwrap();
    f.host.ip(&["link", "set", &a.host.name, "down"]);
    f.host
        .ip(&["link", "set", &a.host.name, "name", "renamed0"]);
    let r = f.net.detach(Some(&ns), "c1", "eth0").unwrap();
    assert!(r.link_removed, "{r:?}");
    assert!(!f.host_links().contains(&"renamed0".to_string()));
    assert_nothing_left(&f, &pod, "c1", &before);
}

// ------------------------------------------------------------- check

#[test]
fn network_check_reports_each_kind_of_drift() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("chk");
    let gw: IpAddr = GW.parse().unwrap();
    // Each case: a fresh container, one change made with `ip` (or the
    // store), and the drift check must report.
    type Case<'a> = (&'a str, Box<dyn Fn(&TestNs, &str) + 'a>, Drift);
    let host = &f.host;
    let name = |cid: &str| host_veth_name(cid, "eth0").unwrap();
    let cases: Vec<Case> = vec![
        (
            "off",
            Box::new(|_, h| host.ip(&["link", "set", h, "nomaster"])),
            Drift::HostLinkOffBridge {
                name: name("off"),
                master: None,
                want: "cni0".into(),
            },
        ),
        (
            "hdown",
            Box::new(|_, h| host.ip(&["link", "set", h, "down"])),
            Drift::HostLinkDown {
                name: name("hdown"),
            },
        ),
        (
            "cdown",
            Box::new(|p, _| p.ip(&["link", "set", "eth0", "down"])),
            Drift::ContainerLinkDown {
                ifname: "eth0".into(),
            },
        ),
        (
            "noaddr",
            Box::new(|p, _| p.ip(&["addr", "flush", "dev", "eth0"])),
            Drift::AddressMissing {
                ifname: "eth0".into(),
                want: "10.244.1.5/24".parse().unwrap(),
            },
        ),
        (
            "extra",
            Box::new(|p, _| p.ip(&["addr", "add", "10.244.1.200/24", "dev", "eth0"])),
            Drift::AddressUnexpected {
                ifname: "eth0".into(),
                have: "10.244.1.200/24".parse().unwrap(),
            },
        ),
        (
            "noroute",
            Box::new(|p, _| p.ip(&["route", "del", "default"])),
            Drift::DefaultRouteMissing { want_via: gw },
        ),
        (
            "wroute",
            Box::new(|p, _| p.ip(&["route", "replace", "default", "via", "10.244.1.9"])),
            Drift::DefaultRouteWrong {
                have_via: Some("10.244.1.9".parse().unwrap()),
                have_dev: None,
                want_via: gw,
            },
        ),
        (
            "mtu",
            Box::new(|p, _| p.ip(&["link", "set", "eth0", "mtu", "1400"])),
            Drift::Mtu {
                link: "eth0".into(),
                have: 1400,
                want: MTU,
            },
        ),
        (
            "nolink",
            Box::new(|_, h| host.ip(&["link", "del", h])),
            Drift::HostLinkMissing {
                name: name("nolink"),
            },
        ),
        (
            "noalloc",
            Box::new(|_, _| {
                FileStore::open(f.dir.path())
                    .unwrap()
                    .pool(PoolConfig::new(f.subnet))
                    .unwrap()
                    .release("noalloc", "eth0")
                    .unwrap();
            }),
            Drift::AllocationMissing {
                container_id: "noalloc".into(),
                ifname: "eth0".into(),
            },
        ),
    ];
    let mut pods = Vec::new();
    for (cid, change, want) in cases {
        let pod = TestNs::new(&format!("chk-{cid}"));
        let ns = ContainerNs::name(&pod.name);
        let a = f.net.attach(&ns, cid, "eth0").unwrap();
        assert_eq!(
            f.net.check(&ns, cid, "eth0").unwrap(),
            vec![],
            "{cid} before"
        );
        change(&pod, &a.host.name);
        let mut want = want;
        // The address case needs the address this container got.
        if let Drift::AddressMissing { want: w, .. } = &mut want {
            *w = a.address;
        }
        if let Drift::DefaultRouteWrong { have_dev, .. } = &mut want {
            *have_dev = Some(a.container.index);
        }
        let got = f.net.check(&ns, cid, "eth0").unwrap();
        assert!(got.contains(&want), "{cid}: want {want:?} in {got:?}");
        // Every drift also reads as a sentence.
        assert!(!want.to_string().is_empty());
        pods.push(pod);
    }

    // The bridge itself: down, and without its gateway.
    let pod = TestNs::new("chk-br");
    let ns = ContainerNs::name(&pod.name);
    f.net.attach(&ns, "br", "eth0").unwrap();
    host.ip(&["addr", "del", &format!("{GW}/24"), "dev", "cni0"]);
    host.ip(&["link", "set", "cni0", "down"]);
    let got = f.net.check(&ns, "br", "eth0").unwrap();
    assert!(got.contains(&Drift::BridgeDown {
        bridge: "cni0".into()
    }));
    assert!(got.contains(&Drift::GatewayMissing {
        bridge: "cni0".into(),
        want: format!("{GW}/24").parse().unwrap()
    }));

    // The namespace is gone.
    let gone = ContainerNs::name("cn-chk-no-such-namespace");
    let got = f.net.check(&gone, "br", "eth0").unwrap();
    assert!(
        got.iter()
            .any(|d| matches!(d, Drift::NamespaceMissing { netns, reason }
            if netns == "cn-chk-no-such-namespace" && reason.contains("not found"))),
        "{got:?}"
    );
}

// ------------------------------------------------------------- CNI JSON

#[test]
fn network_attach_result_as_cni_json() {
    if !privileged() {
        return;
    }
    let f = Fixture::new("cni");
    let pod = TestNs::new("cni-p");
    let ns = ContainerNs::name(&pod.name);
    let a = f.net.attach(&ns, "c1", "eth0").unwrap();
    let json = a.to_cni_json();
    let v: Value = serde_json::from_str(&json).unwrap();
    // The shape CNI 1.0.0 specifies, with the values the kernel has.
    assert_eq!(v["cniVersion"], "1.0.0");
    let ifs = v["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 3);
    for (i, dev, reader) in [(0, "cni0", &f.host), (1, a.host.name.as_str(), &f.host)] {
        assert_eq!(ifs[i]["name"], dev);
        assert_eq!(ifs[i]["mac"], reader.link_json(dev)["address"]);
        assert!(ifs[i].get("sandbox").is_none());
    }
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ifs[2]["mac"], pod.link_json("eth0")["address"]);
    assert_eq!(
        ifs[2]["sandbox"],
        format!("/run/netns/{}", pod.name).as_str()
    );
    let ips = v["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 1);
    assert_eq!(ips[0]["interface"], 2);
    assert_eq!(ips[0]["address"], addrs_of(&pod, "eth0")[0].as_str());
    assert_eq!(ips[0]["gateway"], GW);
    assert!(ips[0].get("version").is_none(), "no `version` in 1.0.0");
    assert_eq!(v["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(v["routes"][0]["gw"], GW);
    assert!(v["dns"].as_object().unwrap().is_empty());

    // Names and MACs are derived from the container id and addresses, so
    // only the namespace path varies between runs.
    let pretty = serde_json::to_string_pretty(&a.to_cni_result()).unwrap();
    insta::with_settings!({filters => vec![(r"/run/netns/cn-cni-p-\d+-\d+", "/run/netns/[POD]")]}, {
        insta::assert_snapshot!(pretty);
    });
}

#[test]
fn network_attach_with_a_requested_address_and_mac() {
    if !privileged() {
        return;
    }
    use cnet_core::link::MacAddr;
    use cnet_core::network::AttachOptions;
    let f = Fixture::new("req");
    let pod = TestNs::new("req-p");
    let other = TestNs::new("req-o");
    let ip: IpAddr = "10.244.1.77".parse().unwrap();
    let mac: MacAddr = "02:42:0a:f4:01:4d".parse().unwrap();
    let opts = AttachOptions::new().ip(ip).mac(mac);
    let a = f
        .net
        .attach_with(&ContainerNs::name(&pod.name), "c1", "eth0", &opts)
        .unwrap();
    assert_eq!(a.address.addr(), ip);
    assert_eq!(a.container.mac, mac);
    // Read back: the address and MAC in the container, the pool's holder.
    assert_eq!(addrs_of(&pod, "eth0"), ["10.244.1.77/24"]);
    assert_eq!(pod.link_json("eth0")["address"], "02:42:0a:f4:01:4d");
    assert_eq!(f.held_by("c1").unwrap().addr, ip);
    assert!(pod.ping(GW));
    // Attach again with the same request: the same attachment; check sees
    // no drift with a MAC of the caller's.
    let again = f
        .net
        .attach_with(&ContainerNs::name(&pod.name), "c1", "eth0", &opts)
        .unwrap();
    assert_eq!(again.address, a.address);
    assert_eq!(
        f.net
            .check(&ContainerNs::name(&pod.name), "c1", "eth0")
            .unwrap(),
        vec![]
    );
    // Someone else asking for it: Conflict, and nothing left behind.
    let before = link_names(&other);
    let e = expect_err(f.net.attach_with(
        &ContainerNs::name(&other.name),
        "c2",
        "eth0",
        &AttachOptions::new().ip(ip),
    ));
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert_nothing_left(&f, &other, "c2", &before);
    // Outside the pool and a multicast MAC: InvalidArgument, nothing made.
    let e = expect_err(f.net.attach_with(
        &ContainerNs::name(&other.name),
        "c2",
        "eth0",
        &AttachOptions::new().ip("10.9.9.9".parse().unwrap()),
    ));
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let e = expect_err(f.net.attach_with(
        &ContainerNs::name(&other.name),
        "c2",
        "eth0",
        &AttachOptions::new().mac("01:00:5e:00:00:01".parse().unwrap()),
    ));
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert_nothing_left(&f, &other, "c2", &before);
    f.net.detach(None, "c1", "eth0").unwrap();
    assert_eq!(f.stored(), vec![]);
}
