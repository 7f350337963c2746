//! A cluster in throwaway namespaces, for the `network` tests of cnet-core
//! and the `trace` tests of cnet-debug: hosts on an underlay, containers on
//! each host's bridge.
//!
//! ```text
//!   ul: br0 = segment A, 192.0.2.0/24       br1 = segment B, 198.51.100.0/24
//!        │ p1 .11   p2 .12   p3 .13 … │ r0           r1 │ p4 .14 …
//!        h1         h2       h3         rt (.1 ─ router ─ .1)   h4 (far)
//!   each host hN: eth0, ip_forward, cni0 10.244.N.1/24 (MTU 1450),
//!   containers: eth0 with an address of the host's subnet, default route
//!   via 10.244.N.1
//! ```
//!
//! Where the two callers differ, [`Options`] says how:
//! - cnet-core ([`Options::default`]): namespaces made by cnet, the router
//!   `rt` (hosts' default route via it, far hosts behind it), cni0 made by
//!   `BridgeNetwork::ensure` with cnet's file IPAM, containers attached
//!   with `BridgeNetwork::attach` ([`Cluster::attach`]);
//! - cnet-debug ([`Options::plain`]): namespaces made with `ip netns add`,
//!   no router, cni0 a plain bridge, containers plugged with a veth
//!   `veth-ROLE` and a fixed address ([`Cluster::plug`]), routes between
//!   hosts added by hand ([`Cluster::host_gw`], [`Cluster::flannel_vxlan`]).
//!
//! Namespaces are named `cn-<tag><k>-<role>-<pid>`; everything is removed
//! by a guard when the cluster is dropped, also on panic.

use std::net::IpAddr;
use std::process::Command;

use cnet_core::fdb::FdbEntry;
use cnet_core::ipam::{FilePool, FileStore, PoolConfig, PoolStore};
use cnet_core::link::{Bridge, MacAddr, Veth, Vxlan};
use cnet_core::neigh::Neighbour;
use cnet_core::network::{
    vtep_mac_for, Backend, BridgeConfig, BridgeNetwork, ContainerNs, Node, NodeConfig, Peer,
    PeerReport,
};
use cnet_core::route::{Route, PROTOCOL_BOOT};
use cnet_core::{Handle, IpNet, NetNs};
use serde_json::Value;

use crate::{json_of, Maker, Namespaces};

/// The shape of a cluster.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Hosts on segment A (192.0.2.0/24), h1…
    pub near: u8,
    /// Hosts on segment B (198.51.100.0/24), behind the router.
    pub far: u8,
    /// Containers per host, attached with [`Cluster::attach`] (needs
    /// [`Bridges::Network`]).
    pub containers: u8,
}

/// What makes each host's cni0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bridges {
    /// cnet's `BridgeNetwork::ensure` on a file-store pool of the host's
    /// subnet; containers come with [`Cluster::attach`].
    Network,
    /// A plain bridge with the subnet's first address; containers come
    /// with [`Cluster::plug`].
    Plain,
}

/// How a cluster is built where its callers differ.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How the namespaces are made.
    pub maker: Maker,
    /// The router `rt` between segments A and B (br1), each host's default
    /// route via it (protocol boot). Far hosts need it.
    pub router: bool,
    /// What makes each host's cni0.
    pub bridges: Bridges,
}

impl Default for Options {
    /// cnet-core's cluster: namespaces, bridges and containers made by
    /// cnet, with the router.
    fn default() -> Options {
        Options {
            maker: Maker::Cnet,
            router: true,
            bridges: Bridges::Network,
        }
    }
}

impl Options {
    /// A cluster made as another tool would (the one cnet-debug traces):
    /// `ip netns add`, no router, plain bridges.
    pub fn plain() -> Options {
        Options {
            maker: Maker::Ip,
            router: false,
            bridges: Bridges::Plain,
        }
    }
}

/// One host namespace.
#[derive(Debug)]
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
#[derive(Debug)]
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

/// The VTEP MAC of host number `host` (1, 2, …) in [`Cluster::flannel_vxlan`].
pub fn vtep_mac(host: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, host, 0x01])
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[derive(Debug)]
pub struct Cluster {
    pub hosts: Vec<Host>,
    pub containers: Vec<Container>,
    pub ul: Handle,
    /// The router (with [`Options::router`]).
    rt: Option<Handle>,
    /// Each host's bridge network (with [`Bridges::Network`]).
    nets: Vec<BridgeNetwork>,
    store: FileStore,
    // Dropped last: the namespaces, then the IPAM directory.
    names: Namespaces,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Build the underlay, router, hosts and containers of `spec`, as
    /// cnet-core's tests want ([`Options::default`]).
    pub fn build(tag: &str, spec: Spec) -> Cluster {
        Cluster::build_with(tag, spec, Options::default())
    }

    /// Build the underlay, hosts (and, with [`Options::router`], the
    /// router) and containers of `spec` the way `opts` says.
    pub fn build_with(tag: &str, spec: Spec, opts: Options) -> Cluster {
        assert!(opts.router || spec.far == 0, "far hosts need the router");
        assert!(
            opts.bridges == Bridges::Network || spec.containers == 0,
            "containers of a plain bridge are plugged one by one"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut names = Namespaces::empty(tag, opts.maker);
        let ul = Handle::at(&names.add("ul")).unwrap();
        let rt_ns = opts.router.then(|| names.add("rt"));
        let rt = rt_ns.as_ref().map(|ns| Handle::at(ns).unwrap());
        ul.links().add(Bridge::new("br0").up()).unwrap();
        if let (Some(rt_ns), Some(rt)) = (&rt_ns, &rt) {
            ul.links().add(Bridge::new("br1").up()).unwrap();
            for (leg, br, addr) in [
                ("eth0", "br0", "192.0.2.1/24"),
                ("eth1", "br1", "198.51.100.1/24"),
            ] {
                ul.links()
                    .add(
                        Veth::new(&format!("r{}", &br[2..]), leg)
                            .peer_netns(rt_ns)
                            .master(br)
                            .up()
                            .peer_up(),
                    )
                    .unwrap();
                rt.addrs().add(leg, addr.parse().unwrap()).unwrap();
            }
            rt.sysctl().set_ip_forward(true).unwrap();
        }
        let mut hosts = Vec::new();
        for n in 1..=spec.near + spec.far {
            let far = n > spec.near;
            let role = format!("h{n}");
            let ns = names.add(&role);
            let h = Handle::at(&ns).unwrap();
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
            if opts.router {
                // As a host's own default route would be (not cnet's
                // protocol, which the node owns).
                h.routes()
                    .add(Route::default_v4().via(ip(gw)).protocol(PROTOCOL_BOOT))
                    .unwrap();
            }
            h.sysctl().set_ip_forward(true).unwrap();
            let subnet: IpNet = format!("10.244.{n}.0/24").parse().unwrap();
            if opts.bridges == Bridges::Plain {
                h.links().add(Bridge::new("cni0").mtu(1450).up()).unwrap();
                h.addrs()
                    .add("cni0", format!("10.244.{n}.1/24").parse().unwrap())
                    .unwrap();
            }
            hosts.push(Host {
                role,
                ns: names.ns(&format!("h{n}")),
                handle: h,
                underlay,
                subnet,
                far,
            });
        }
        let store = FileStore::open(dir.path()).unwrap();
        // Each host's bridge network: cni0 with the pool's gateway.
        let nets = match opts.bridges {
            Bridges::Plain => Vec::new(),
            Bridges::Network => hosts
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
                .collect(),
        };
        let mut c = Cluster {
            hosts,
            containers: Vec::new(),
            ul,
            rt,
            nets,
            store,
            names,
            _dir: dir,
        };
        for hi in 0..c.hosts.len() {
            for j in 0..spec.containers {
                let role = format!("c{}{}", hi + 1, (b'a' + j) as char);
                c.attach(hi, &role);
            }
        }
        c
    }

    /// The router's handle (a cluster built with [`Options::router`]).
    pub fn rt(&self) -> &Handle {
        self.rt.as_ref().expect("a cluster without the router")
    }

    /// Attach a new container namespace `role` to host `host`'s bridge
    /// with [`BridgeNetwork::attach`]: an address from the host's pool, a
    /// veth pair (host end a port of cni0, container end `eth0`), a default
    /// route via the bridge.
    pub fn attach(&mut self, host: usize, role: &str) -> &Container {
        let ns = self.names.add(role);
        let name = self.names.ns(role);
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

    /// Plug a new container namespace `role` into host `host`'s plain
    /// bridge by hand: a veth pair `veth-ROLE` (a port of cni0, MTU 1450) /
    /// `eth0`, the address `.last` of the host's subnet, a default route
    /// via the bridge's `.1`.
    pub fn plug(&mut self, host: usize, role: &str, last: u8) -> &Container {
        let n = host + 1;
        let cns = self.names.add(role);
        let veth = format!("veth-{role}");
        self.hosts[host]
            .handle
            .links()
            .add(
                Veth::new(&veth, "eth0")
                    .peer_netns(&cns)
                    .master("cni0")
                    .mtu(1450)
                    .up()
                    .peer_up(),
            )
            .unwrap();
        let ch = Handle::at(&cns).unwrap();
        let addr = ip(&format!("10.244.{n}.{last}"));
        ch.addrs()
            .add("eth0", IpNet::new(addr, 24).unwrap())
            .unwrap();
        ch.routes()
            .add(Route::to("0.0.0.0/0".parse().unwrap()).via(ip(&format!("10.244.{n}.1"))))
            .unwrap();
        self.containers.push(Container {
            role: role.to_string(),
            ns: self.names.ns(role),
            host,
            ip: addr,
            veth,
        });
        self.containers.last().unwrap()
    }

    /// host-gw by hand between hosts `a` and `b`: each routes the other's
    /// subnet via the other's underlay address.
    pub fn host_gw(&self, a: usize, b: usize) {
        for (me, peer) in [(a, b), (b, a)] {
            let p = &self.hosts[peer];
            self.hosts[me]
                .handle
                .routes()
                .add(Route::to(p.subnet).via(p.underlay))
                .unwrap();
        }
    }

    /// VXLAN by hand between hosts `a` and `b`, Flannel style: on each,
    /// `flannel.1` (VNI 1, port 8472, no learning, MAC [`vtep_mac`], MTU
    /// 1450) with `10.244.N.0/32`, and for the peer a neighbour, an FDB
    /// entry and an onlink route via its VTEP address. A host has one
    /// `flannel.1`: each host in one pair at most.
    pub fn flannel_vxlan(&self, a: usize, b: usize) {
        for (me, peer) in [(a, b), (b, a)] {
            let (m, p) = (me as u8 + 1, peer as u8 + 1);
            let h = &self.hosts[me].handle;
            h.links()
                .add(
                    Vxlan::new("flannel.1", 1)
                        .port(8472)
                        .local(self.hosts[me].underlay)
                        .dev("eth0")
                        .learning(false)
                        .mac(vtep_mac(m))
                        .mtu(1450)
                        .up(),
                )
                .unwrap();
            h.addrs()
                .add("flannel.1", format!("10.244.{m}.0/32").parse().unwrap())
                .unwrap();
            let peer_vtep = ip(&format!("10.244.{p}.0"));
            h.neighbours()
                .add(Neighbour::new("flannel.1", peer_vtep, vtep_mac(p)))
                .unwrap();
            h.fdb()
                .add(
                    FdbEntry::new(vtep_mac(p), "flannel.1")
                        .dst(self.hosts[peer].underlay)
                        .on_self(),
                )
                .unwrap();
            h.routes()
                .add(
                    Route::to(self.hosts[peer].subnet)
                        .via(peer_vtep)
                        .dev("flannel.1")
                        .onlink(),
                )
                .unwrap();
        }
    }

    /// The namespace name of `role` (`ul`, `rt`, `h1`, `c1a`, …).
    pub fn ns(&self, role: &str) -> String {
        self.names.ns(role)
    }

    /// (role, namespace name) pairs, in the order they were made.
    pub fn names(&self) -> &[(String, String)] {
        self.names.names()
    }

    /// A new handle in `role`'s namespace, opened by name.
    pub fn handle(&self, role: &str) -> Handle {
        Handle::named(&self.ns(role)).unwrap()
    }

    /// `ip -n ROLE ARGS`, which must succeed.
    pub fn ip(&self, role: &str, args: &[&str]) {
        let ns = self.ns(role);
        let mut full = vec!["-n", ns.as_str()];
        full.extend_from_slice(args);
        let o = Command::new("ip").args(&full).output().unwrap();
        assert!(
            o.status.success(),
            "ip {full:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// `bridge -n ROLE ARGS`, which must succeed.
    pub fn bridge(&self, role: &str, args: &[&str]) {
        let ns = self.ns(role);
        let mut full = vec!["-n", ns.as_str()];
        full.extend_from_slice(args);
        let o = Command::new("bridge").args(&full).output().unwrap();
        assert!(
            o.status.success(),
            "bridge {full:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// `sysctl -qw KEY=VALUE` inside ROLE's namespace.
    pub fn sysctl(&self, role: &str, kv: &str) {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.ns(role), "sysctl", "-qw", kv])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "sysctl {kv}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Host `host`'s address pool (the file store its bridge network uses).
    pub fn pool(&self, host: usize) -> FilePool {
        self.store
            .pool(PoolConfig::new(self.hosts[host].subnet))
            .unwrap()
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
        self.names.forget(&c.ns);
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
        self.names.prefix()
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
        self.routes_of_proto(i, "119")
    }

    /// Host `i`'s routes of protocol `proto` (a number, or a name `ip`
    /// knows: `bird`) as "DST via GW dev DEV[ onlink]", sorted (read with
    /// `ip -j -d route show proto PROTO`).
    pub fn routes_of_proto(&self, i: usize, proto: &str) -> Vec<String> {
        let v = self.ip_json(&self.hosts[i].ns, &["route", "show", "proto", proto]);
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
