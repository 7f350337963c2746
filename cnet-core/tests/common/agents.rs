//! Node agents (`examples/rust/node_agent.rs`) on an underlay with a real
//! etcd, for the tests that run whole agents (`cluster_agents.rs`,
//! `agent_faults*.rs`).
//!
//! ```text
//!   ul: br0 192.0.2.0/24 ── etcd ns: etcd on 192.0.2.254
//!        │ p1 .11     │ p2 .12     │ p3 .13
//!        h1           h2           h3          each: node-agent, cni0, containers
//! ```
//!
//! An [`Agent`] is SIGKILLed on drop; namespaces go with their [`TestNs`]
//! guards, etcd with its [`Etcd`] guard, also on panic.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cnet_core::ipam::{FileStore, PoolConfig};
use cnet_core::link::{Bridge, Veth};
use cnet_core::network::{BridgeConfig, BridgeNetwork, ContainerNs};
use cnet_core::{Handle, IpNet};

use super::etcd::Etcd;
use super::TestNs;

/// The underlay namespace (bridge `br0`) and an etcd on 192.0.2.254 in
/// its own namespace, plugged into it; namespaces `cn-<tag>-ul`, `…-etcd`.
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

/// The node-agent example next to this test binary.
pub fn agent_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("examples").join("node-agent");
    p.is_file().then_some(p)
}

/// [`agent_binary`], or `None` after saying why the test is skipped (in
/// CI a missing binary fails).
pub fn agent_binary_or_skip() -> Option<PathBuf> {
    let bin = agent_binary();
    if bin.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("the node-agent example is not built (cargo build --all-features --examples)");
        }
        eprintln!("SKIPPED: the node-agent example is not built (cargo build -p cnet-core --all-features --examples)");
    }
    bin
}

/// A node agent process; SIGKILLed on drop if still running.
pub struct Agent {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub subnet: IpNet,
}

impl Agent {
    pub fn start(bin: &Path, host: &TestNs, node: &str, etcd: &str, ipam: &Path) -> Agent {
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", host.name))
            .arg(bin)
            .args(["--etcd", etcd, "--node", node, "--underlay-dev", "eth0"])
            .args(["--backend", "vxlan", "--ttl", "10", "--resync", "30"])
            .arg("--ipam-dir")
            .arg(ipam)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start node-agent");
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let tx_err = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                eprintln!("[agent] {l}");
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        // Its stderr too, each line prefixed "stderr: " (errors are there).
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[agent stderr] {l}");
                if tx_err.send(format!("stderr: {l}")).is_err() {
                    break;
                }
            }
        });
        let mut a = Agent {
            child,
            lines,
            subnet: "0.0.0.0/0".parse().unwrap(),
        };
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
