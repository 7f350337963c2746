//! Node agents (`examples/rust/node_agent.rs`, one process per host
//! namespace) on an underlay with a real etcd, for the cluster tests
//! (`cluster_agents.rs`, `agent_faults.rs`).
//!
//! ```text
//!   ul: br0 192.0.2.0/24 ── e0: etcd on 192.0.2.254
//!        │ p1 .11     │ p2 .12     │ p3 .13 …
//!        h1           h2           h3          each: node-agent, cni0, containers
//! ```
//!
//! Agents are SIGKILLed on drop if still running; namespaces and etcd go
//! with their guards, also on panic.

use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cnet_core::ipam::{FileStore, PoolConfig};
use cnet_core::link::{Bridge, Veth};
use cnet_core::network::{BridgeConfig, BridgeNetwork, ContainerNs};
use cnet_core::{Handle, IpNet};

use cnet_test_support::TestNs;

use super::etcd::Etcd;

/// The node-agent example next to this test binary; `None` (after saying
/// so) when it is not built, a failure in CI.
pub fn agent_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("examples").join("node-agent");
    if p.is_file() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("the node-agent example is not built (cargo build --all-features --examples)");
    }
    eprintln!("SKIPPED: the node-agent example is not built (cargo build -p cnet-core --all-features --examples)");
    None
}

/// An underlay bridge `br0` in a namespace of its own, and etcd on
/// 192.0.2.254 in another namespace on it.
pub fn underlay_with_etcd(tag: &str) -> (TestNs, Etcd) {
    let ul_ns = TestNs::new(&format!("{tag}-ul"));
    let ul = ul_ns.handle();
    ul.links().add(Bridge::new("br0").up()).unwrap();
    let etcd_ns = TestNs::new(&format!("{tag}-etcd"));
    ul.links()
        .add(
            Veth::new("pe", "eth0")
                .peer_netns(&etcd_ns.ns)
                .master("br0")
                .up()
                .peer_up(),
        )
        .unwrap();
    etcd_ns
        .handle()
        .addrs()
        .add("eth0", "192.0.2.254/24".parse().unwrap())
        .unwrap();
    let etcd = Etcd::start_at(etcd_ns, "192.0.2.254", tag);
    (ul_ns, etcd)
}

/// A node agent process; SIGKILLed on drop if still running.
pub struct Agent {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub subnet: IpNet,
}

/// Forward a pipe's lines to `tx`, each after `prefix` (and to stderr,
/// tagged).
fn forward(
    r: impl Read + Send + 'static,
    tag: String,
    prefix: &'static str,
    tx: mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            eprintln!("[{tag}] {l}");
            if tx.send(format!("{prefix}{l}")).is_err() {
                break;
            }
        }
    });
}

impl Agent {
    /// Start an agent for `node` in `host` (vxlan, lease TTL 10 s) and
    /// wait until it says its subnet and bridge.
    pub fn start(bin: &Path, host: &TestNs, node: &str, etcd: &str, ipam: &Path) -> Agent {
        Agent::start_ttl(bin, host, node, etcd, ipam, 10)
    }

    /// [`Agent::start`] with a lease TTL of `ttl` seconds.
    pub fn start_ttl(
        bin: &Path,
        host: &TestNs,
        node: &str,
        etcd: &str,
        ipam: &Path,
        ttl: u64,
    ) -> Agent {
        let mut a = Agent::spawn_ttl(bin, host, node, etcd, ipam, ttl);
        let l = a.expect_line(": subnet ");
        a.subnet = l
            .split(": subnet ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        a.expect_line(": bridge ");
        a
    }

    /// Start an agent and return at once (its subnet not known yet).
    pub fn spawn_ttl(
        bin: &Path,
        host: &TestNs,
        node: &str,
        etcd: &str,
        ipam: &Path,
        ttl: u64,
    ) -> Agent {
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", host.name))
            .arg(bin)
            .args(["--etcd", etcd, "--node", node, "--underlay-dev", "eth0"])
            .args(["--backend", "vxlan", "--resync", "30"])
            .args(["--ttl", &ttl.to_string()])
            .arg("--ipam-dir")
            .arg(ipam)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start node-agent");
        Agent::adopt(child, node)
    }

    /// An agent started by the caller (other flags), its output piped.
    pub fn adopt(mut child: Child, node: &str) -> Agent {
        let (tx, lines) = mpsc::channel();
        forward(
            child.stdout.take().unwrap(),
            node.to_string(),
            "",
            tx.clone(),
        );
        // Its stderr too, each line prefixed "stderr: " (errors are there).
        forward(
            child.stderr.take().unwrap(),
            format!("{node} err"),
            "stderr: ",
            tx,
        );
        Agent {
            child,
            lines,
            subnet: "0.0.0.0/0".parse().unwrap(),
        }
    }

    /// Wait (30 s at most) for a line containing `what`.
    pub fn expect_line(&mut self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(what) => return l,
                Ok(_) => {}
                Err(_) => panic!("node-agent did not say {what:?} within 30 s"),
            }
        }
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let st = self.child.wait().unwrap();
        assert!(st.success(), "node-agent exited with {st}");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One host: its namespace, its underlay port, its containers.
pub struct Host {
    pub ns: TestNs,
    pub name: String,
    pub ipam: PathBuf,
    pub containers: Vec<(TestNs, String, IpAddr)>,
    pub net: Option<BridgeNetwork>,
}

/// Host `hN` on the underlay (`eth0` 192.0.2.(10+N)/24, port `pN` on br0),
/// its IPAM directory under `ipam_root`.
pub fn make_host(ul: &Handle, n: u8, ipam_root: &Path) -> Host {
    let ns = TestNs::new(&format!("ag-h{n}"));
    let underlay: IpAddr = format!("192.0.2.{}", 10 + n).parse().unwrap();
    // The underlay port keeps its name across a reboot: delete what a
    // previous incarnation left (its namespace going takes the peer along).
    ul.links().delete_if_exists(&format!("p{n}")).unwrap();
    ul.links()
        .add(
            Veth::new(&format!("p{n}"), "eth0")
                .peer_netns(&ns.ns)
                .master("br0")
                .up()
                .peer_up(),
        )
        .unwrap();
    ns.handle()
        .addrs()
        .add("eth0", IpNet::new(underlay, 24).unwrap())
        .unwrap();
    Host {
        ns,
        name: format!("h{n}"),
        ipam: ipam_root.join(format!("h{n}")),
        containers: Vec::new(),
        net: None,
    }
}

/// Attach `count` containers to the host's bridge (which its agent made).
pub fn attach_containers(h: &mut Host, subnet: IpNet, count: usize) {
    let pool = FileStore::open(&h.ipam)
        .unwrap()
        .pool(PoolConfig::new(subnet))
        .unwrap();
    let net = BridgeNetwork::ensure(
        &h.ns.handle(),
        pool,
        BridgeConfig::new("cni0", subnet).mtu(1450),
    )
    .unwrap();
    for i in 0..count {
        let c = TestNs::new(&format!("ag-{}c{i}", h.name));
        let cid = format!("{}-c{i}", h.name);
        let att = net
            .attach(&ContainerNs::name(&c.name), &cid, "eth0")
            .unwrap();
        h.containers.push((c, cid, att.address.addr()));
    }
    h.net = Some(net);
}

/// Routes of protocol 119 (cnet's) in `ns`, as `dst via gw`.
pub fn cnet_routes(ns: &TestNs) -> Vec<String> {
    ns.ip_json(&["route", "show", "proto", "119"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} via {}",
                r["dst"].as_str().unwrap_or("?"),
                r["gateway"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

/// The subnet of the bridge `cni0`'s IPv4 address in `ns` (read with
/// `ip -j addr`), if it has one.
pub fn bridge_subnet(ns: &TestNs) -> Option<IpNet> {
    let v = ns.ip_json(&["-4", "addr", "show", "dev", "cni0"]);
    let a = v.as_array()?.first()?["addr_info"]
        .as_array()?
        .first()?
        .clone();
    let ip: IpAddr = a["local"].as_str()?.parse().ok()?;
    let plen = a["prefixlen"].as_u64()? as u8;
    Some(IpNet::new(ip, plen).ok()?.trunc())
}
