//! A cluster in throwaway namespaces, for the `network` tests: hosts on an
//! underlay, containers on each host's bridge, a [`Node`] per host.
//!
//! ```text
//!   ul: br0 = segment A, 192.0.2.0/24       br1 = segment B, 198.51.100.0/24
//!        │ p1 .11   p2 .12   p3 .13 … │ r0           r1 │ p4 .14 …
//!        h1         h2       h3         rt (.1 ─ router ─ .1)   h4 (far)
//!   each host hN: eth0 (default route via rt), ip_forward, cni0 10.244.N.1/24,
//!   containers cNa, cNb, …: eth0 with an address from the host's pool
//!   (cnet's file IPAM), default route via 10.244.N.1
//! ```
//!
//! Containers are attached with `BridgeNetwork::attach` ([`Cluster::attach`])
//! and detached with `BridgeNetwork::detach`. Everything is removed by a
//! guard when the cluster is dropped, also on panic.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use cnet_core::ipam::{FilePool, FileStore, PoolConfig, PoolStore};
use cnet_core::link::{Bridge, Veth};
use cnet_core::network::{
    vtep_mac_for, Backend, BridgeConfig, BridgeNetwork, ContainerNs, Node, NodeConfig, Peer,
    PeerReport,
};
use cnet_core::route::{Route, PROTOCOL_BOOT};
use cnet_core::{Handle, IpNet, NetNs};
use serde_json::Value;

static N: AtomicUsize = AtomicUsize::new(0);

/// Whether privileged tests can run (root); in CI not being root fails.
pub fn privileged() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        if std::env::var_os("CI").is_some() {
            panic!("privileged test cannot run: not root (CI requires root)");
        }
        eprintln!("SKIPPED: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)");
    }
    root
}

/// The shape of a cluster.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Hosts on segment A (192.0.2.0/24), h1…
    pub near: u8,
    /// Hosts on segment B (198.51.100.0/24), behind the router.
    pub far: u8,
    /// Containers per host.
    pub containers: u8,
}

/// One host namespace.
pub struct Host {
    /// `h1`, `h2`, …
    pub role: String,
    /// Namespace name.
    pub ns: String,
    pub handle: Handle,
    pub underlay: IpAddr,
    pub subnet: IpNet,
    /// On segment B.
    pub far: bool,
}

/// One container namespace, attached to a host's bridge.
pub struct Container {
    /// `c1a`, `c1b`, …
    pub role: String,
    pub ns: String,
    /// Index into [`Cluster::hosts`].
    pub host: usize,
    pub ip: IpAddr,
    /// The host-side veth.
    pub veth: String,
}

/// Deletes the namespaces it lists when dropped.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            if let Err(e) = NetNs::delete(n) {
                eprintln!("cleanup of namespace {n} failed: {e}");
            }
        }
    }
}

pub struct Cluster {
    pub hosts: Vec<Host>,
    pub containers: Vec<Container>,
    pub ul: Handle,
    pub rt: Handle,
    /// Each host's bridge network (cni0 on its subnet, file-store pool).
    nets: Vec<BridgeNetwork>,
    store: FileStore,
    // Dropped last: the namespaces, then the IPAM directory.
    names: Namespaces,
    _dir: tempfile::TempDir,
    prefix: String,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

impl Cluster {
    /// Build the underlay, router, hosts and containers of `spec`.
    /// Namespaces are named `cn-<tag><k>-<role>-<pid>`.
    pub fn build(tag: &str, spec: Spec) -> Cluster {
        let k = N.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("cn-{tag}{k}");
        let dir = tempfile::tempdir().unwrap();
        let mut names = Namespaces(Vec::new());
        let mut make = |role: &str| -> (String, NetNs, Handle) {
            let name = format!("{prefix}-{role}-{}", std::process::id());
            let ns = NetNs::create(&name).unwrap_or_else(|e| panic!("create {name}: {e}"));
            names.0.push(name.clone());
            let h = Handle::at(&ns).unwrap();
            h.links().set_up("lo").unwrap();
            (name, ns, h)
        };
        let (_, _, ul) = make("ul");
        let (_, rt_ns, rt) = make("rt");
        ul.links().add(Bridge::new("br0").up()).unwrap();
        ul.links().add(Bridge::new("br1").up()).unwrap();
        for (leg, br, addr) in [
            ("eth0", "br0", "192.0.2.1/24"),
            ("eth1", "br1", "198.51.100.1/24"),
        ] {
            ul.links()
                .add(
                    Veth::new(&format!("r{}", &br[2..]), leg)
                        .peer_netns(&rt_ns)
                        .master(br)
                        .up()
                        .peer_up(),
                )
                .unwrap();
            rt.addrs().add(leg, addr.parse().unwrap()).unwrap();
        }
        rt.sysctl().set_ip_forward(true).unwrap();
        let mut hosts = Vec::new();
        for n in 1..=spec.near + spec.far {
            let far = n > spec.near;
            let role = format!("h{n}");
            let (name, ns, h) = make(&role);
            let (br, net, gw) = if far {
                ("br1", "198.51.100", "198.51.100.1")
            } else {
                ("br0", "192.0.2", "192.0.2.1")
            };
            let underlay = ip(&format!("{net}.{}", 10 + n));
            ul.links()
                .add(
                    Veth::new(&format!("p{n}"), "eth0")
                        .peer_netns(&ns)
                        .master(br)
                        .up()
                        .peer_up(),
                )
                .unwrap();
            h.addrs()
                .add("eth0", IpNet::new(underlay, 24).unwrap())
                .unwrap();
            // As a host's own default route would be (not cnet's protocol,
            // which the node owns).
            h.routes()
                .add(Route::default_v4().via(ip(gw)).protocol(PROTOCOL_BOOT))
                .unwrap();
            h.sysctl().set_ip_forward(true).unwrap();
            let subnet: IpNet = format!("10.244.{n}.0/24").parse().unwrap();
            hosts.push(Host {
                role,
                ns: name,
                handle: h,
                underlay,
                subnet,
                far,
            });
        }
        let store = FileStore::open(dir.path()).unwrap();
        // Each host's bridge network: cni0 with the pool's gateway.
        let nets = hosts
            .iter()
            .map(|h| {
                let pool = store.pool(PoolConfig::new(h.subnet)).unwrap();
                BridgeNetwork::ensure(
                    &h.handle,
                    pool,
                    BridgeConfig::new("cni0", h.subnet).mtu(1450),
                )
                .unwrap()
            })
            .collect();
        let mut c = Cluster {
            hosts,
            containers: Vec::new(),
            ul,
            rt,
            nets,
            store,
            names,
            _dir: dir,
            prefix,
        };
        for hi in 0..c.hosts.len() {
            for j in 0..spec.containers {
                let role = format!("c{}{}", hi + 1, (b'a' + j) as char);
                c.attach(hi, &role);
            }
        }
        c
    }

    /// Host `host`'s address pool (the file store its bridge network uses).
    pub fn pool(&self, host: usize) -> FilePool {
        self.store
            .pool(PoolConfig::new(self.hosts[host].subnet))
            .unwrap()
    }

    /// Attach a new container namespace `role` to host `host`'s bridge
    /// with [`BridgeNetwork::attach`]: an address from the host's pool, a
    /// veth pair (host end a port of cni0, container end `eth0`), a default
    /// route via the bridge.
    pub fn attach(&mut self, host: usize, role: &str) -> &Container {
        let name = format!("{}-{role}-{}", self.prefix, std::process::id());
        let ns = NetNs::create(&name).unwrap();
        self.names.0.push(name.clone());
        Handle::at(&ns).unwrap().links().set_up("lo").unwrap();
        let att = self.nets[host]
            .attach(&ContainerNs::netns(&ns), &name, "eth0")
            .unwrap_or_else(|e| panic!("attach {role}: {e}"));
        self.containers.push(Container {
            role: role.to_string(),
            ns: name,
            host,
            ip: att.address.addr(),
            veth: att.host.name,
        });
        self.containers.last().unwrap()
    }

    /// Undo [`Cluster::attach`] with [`BridgeNetwork::detach`] (the veth
    /// pair and the allocation), then delete the namespace.
    pub fn detach(&mut self, role: &str) {
        let i = self.containers.iter().position(|c| c.role == role).unwrap();
        let c = self.containers.remove(i);
        self.nets[c.host]
            .detach(Some(&ContainerNs::name(&c.ns)), &c.ns, "eth0")
            .unwrap();
        NetNs::delete(&c.ns).unwrap();
        self.names.0.retain(|n| n != &c.ns);
    }

    /// The allocations left in host `host`'s pool.
    pub fn allocations(&self, host: usize) -> usize {
        self.pool(host).list().unwrap().len()
    }

    /// Every namespace whose name starts with `prefix-` (`ip netns list`).
    pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
        NetNs::list()
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(&format!("{prefix}-")))
            .collect()
    }

    /// The namespace-name prefix of this cluster (`cn-<tag><k>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn host(&self, role: &str) -> usize {
        self.hosts.iter().position(|h| h.role == role).unwrap()
    }

    pub fn node_config(&self, i: usize) -> NodeConfig {
        let h = &self.hosts[i];
        NodeConfig::new(&h.role, h.subnet, "eth0", h.underlay)
    }

    pub fn node(&self, i: usize) -> Node<'_> {
        Node::new(&self.hosts[i].handle, self.node_config(i)).unwrap()
    }

    /// Every other host as a peer of host `i` (VTEP MACs derived from the
    /// names, as each node's device has them).
    pub fn peers_of(&self, i: usize) -> Vec<Peer> {
        self.hosts
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, h)| {
                Peer::new(&h.role, h.subnet, h.underlay).with_vtep_mac(vtep_mac_for(&h.role))
            })
            .collect()
    }

    /// Reconcile every host with `backend` and all its peers; each report
    /// must be Ok.
    pub fn reconcile_all(&self, backend: &Backend) -> Vec<PeerReport> {
        (0..self.hosts.len())
            .map(|i| {
                let r = self
                    .node(i)
                    .reconcile_peers(backend, &self.peers_of(i))
                    .unwrap_or_else(|e| panic!("{}: {e}", self.hosts[i].role));
                r.into_result()
                    .unwrap_or_else(|e| panic!("{}: {e}", self.hosts[i].role))
            })
            .collect()
    }

    /// `ip -n NS -j -d ARGS…`, parsed.
    pub fn ip_json(&self, ns: &str, args: &[&str]) -> Value {
        let mut full = vec!["-n", ns, "-j", "-d"];
        full.extend_from_slice(args);
        json_of("ip", &full)
    }

    /// `bridge -n NS -j ARGS…`, parsed.
    pub fn bridge_json(&self, ns: &str, args: &[&str]) -> Value {
        let mut full = vec!["-n", ns, "-j"];
        full.extend_from_slice(args);
        json_of("bridge", &full)
    }

    /// Host `i`'s routes of protocol 119 as "DST via GW dev DEV[ onlink]",
    /// sorted (read with `ip -j -d route show proto 119`).
    pub fn cnet_routes(&self, i: usize) -> Vec<String> {
        let v = self.ip_json(&self.hosts[i].ns, &["route", "show", "proto", "119"]);
        let mut out: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let onlink = r["flags"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x == "onlink"));
                format!(
                    "{} via {} dev {}{}",
                    r["dst"].as_str().unwrap_or("?"),
                    r["gateway"].as_str().unwrap_or("-"),
                    r["dev"].as_str().unwrap_or("-"),
                    if onlink { " onlink" } else { "" }
                )
            })
            .collect();
        out.sort();
        out
    }

    /// One container pinging an address: `ping -c1 -W1`, up to 4 tries
    /// (the first may wait for ARP along the path).
    pub fn ping(ns: &str, dst: IpAddr) -> bool {
        (0..4).any(|_| {
            Command::new("ip")
                .args(["netns", "exec", ns, "ping", "-c1", "-W1", "-q"])
                .arg(dst.to_string())
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
    }

    /// Every container pings every other (one thread per source); the
    /// pairs that failed, as "c1a → c2b (10.244.2.3)".
    pub fn all_pairs_ping(&self) -> Vec<String> {
        let pairs = self.containers.len() * (self.containers.len() - 1);
        let failed: Vec<String> = std::thread::scope(|s| {
            let threads: Vec<_> = self
                .containers
                .iter()
                .map(|a| {
                    s.spawn(move || {
                        self.containers
                            .iter()
                            .filter(|b| b.role != a.role)
                            .filter(|b| !Cluster::ping(&a.ns, b.ip))
                            .map(|b| format!("{} → {} ({})", a.role, b.role, b.ip))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        eprintln!("all pairs: {} of {pairs} ping", pairs - failed.len());
        failed
    }
}

pub fn json_of(cmd: &str, args: &[&str]) -> Value {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    if s.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{cmd} {args:?}: bad JSON {e}: {s}"))
}

/// What `ip monitor all` sees in namespace `ns` while `f` runs: the
/// notifications of writes (links, addresses, routes, permanent neighbours
/// and FDB entries), as text. What the kernel changes by itself (ARP states
/// ageing, bridge learning, namespace ids) is left out. Fenced by a marker
/// route added before and deleted after `f`, so nothing is missed however
/// slowly the monitor starts.
pub fn writes_during<T>(ns: &str, f: impl FnOnce() -> T) -> (T, Vec<String>) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Duration;
    let mut child = Command::new("ip")
        .args(["-n", ns, "monitor", "all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let marker = |verb: &str| {
        let o = Command::new("ip")
            .args(["-n", ns, "route", verb, "203.0.113.77/32", "dev", "lo"])
            .args(["proto", "static"])
            .output()
            .unwrap();
        assert!(o.status.success(), "marker route {verb}");
    };
    let wait_for = |what: &str, seen: &mut Vec<String>| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains("203.0.113.77") && l.contains(what) => return,
                Ok(l) if l.contains("203.0.113.77") => {}
                Ok(l) => seen.push(l),
                Err(_) => panic!("ip monitor never showed the marker ({what})"),
            }
        }
    };
    // Add the marker until the monitor shows it (it may start late).
    let mut before = Vec::new();
    marker("add");
    let start = std::time::Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.contains("203.0.113.77") && !l.contains("Deleted") => break,
            Ok(l) => before.push(l),
            Err(_) => {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "ip monitor silent"
                );
                marker("del");
                marker("add");
            }
        }
    }
    let out = f();
    marker("del");
    let mut seen = Vec::new();
    wait_for("Deleted", &mut seen);
    let _ = child.kill();
    let _ = child.wait();
    drop(rx);
    let _ = reader.join();
    let learnt = [
        "REACHABLE",
        "STALE",
        "DELAY",
        "PROBE",
        "FAILED",
        "INCOMPLETE",
        " master cni0",
        "nsid",
    ];
    seen.retain(|l| !learnt.iter().any(|w| l.contains(w)));
    (out, seen)
}
