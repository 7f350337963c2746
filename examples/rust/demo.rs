//! The demo: a two-host cluster in network namespaces on this machine.
//!
//! ```text
//!   ul: bridge br0 — the "underlay" switch, 192.0.2.0/24
//!   host-1 (192.0.2.11)               host-2 (192.0.2.12)
//!     cni0 + pod-a, pod-b               cni0 + pod-c
//!     cnet.vxlan ══ VXLAN VNI 1, UDP 8472 ══ cnet.vxlan
//! ```
//! Built on cnet's container-networking layer: each host leases a /24 of
//! 10.244.0.0/16 (cnet-core's file IPAM, in the run's own directory) and
//! publishes its underlay address and VTEP MAC; a `BridgeNetwork` on each
//! host attaches pods in one call each (address from the host's pool, veth,
//! default route); a `Node` per host reconciles Flannel-style VXLAN routes
//! to its peers from the lease list. Then every pod pings every other, and
//! `cnet-debug trace` explains and proves the cross-host path with live
//! capture.
//!
//! Run as root: `scripts/demo [--keep | --hold] [--prefix P]`.
//! - Namespaces are `PREFIX ROLE - PID` (default prefix `demo-`), unique to
//!   the run; nothing is made in, or changed in, the root namespace.
//! - `--keep` leaves them for you to explore (`ip netns list`);
//!   `--hold` keeps the cluster up until Ctrl-C or SIGTERM, then removes it.
//! - SIGINT, SIGTERM or SIGHUP stop the demo between two steps and remove
//!   everything it made (exit status 128 + signal; a second signal exits at
//!   once). What a SIGKILL leaves, `scripts/demo --cleanup` (= `cnet-debug
//!   cleanup --prefix demo-`) removes. The run/stop/sweep machinery is
//!   `cnet_debug::cleanup`, for whatever replaces this demo.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use cnet_core::ipam::{FileStore, LeaseStore, NodeAttrs, PoolConfig, SubnetConfig};
use cnet_core::link::{Bridge, Veth};
use cnet_core::network::{
    vtep_mac_for, Backend, BridgeConfig, BridgeNetwork, ContainerNs, Node, NodeConfig, VxlanConfig,
};
use cnet_core::{Handle, IpNet};
use cnet_debug::cleanup::{Run, Stop, Stopped};
use cnet_debug::probe::Proto;
use cnet_debug::{report, trace};

/// Print a line; a closed stdout is not worth a panic (nor a leak).
macro_rules! say {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Why the demo ended early.
#[derive(Debug)]
enum Failed {
    Core(cnet_core::Error),
    Stopped(Stopped),
}

impl From<cnet_core::Error> for Failed {
    fn from(e: cnet_core::Error) -> Self {
        Failed::Core(e)
    }
}

impl From<Stopped> for Failed {
    fn from(s: Stopped) -> Self {
        Failed::Stopped(s)
    }
}

// Parse errors, as cnet-core words them.
impl From<std::net::AddrParseError> for Failed {
    fn from(e: std::net::AddrParseError) -> Self {
        Failed::Core(e.into())
    }
}

impl From<ipnet::AddrParseError> for Failed {
    fn from(e: ipnet::AddrParseError) -> Self {
        Failed::Core(e.into())
    }
}

impl From<ipnet::PrefixLenError> for Failed {
    fn from(e: ipnet::PrefixLenError) -> Self {
        Failed::Core(e.into())
    }
}

fn sh(args: &[&str]) {
    say!("$ {}", args.join(" "));
    match Command::new(args[0]).args(&args[1..]).output() {
        Ok(o) => {
            let _ = std::io::stdout().write_all(&o.stdout);
            let _ = std::io::stderr().write_all(&o.stderr);
        }
        Err(e) => say!("({}: {e})", args[0]),
    }
}

struct Options {
    keep: bool,
    hold: bool,
    prefix: String,
}

const USAGE: &str = "usage: demo [--keep | --hold] [--prefix PREFIX]";

fn options() -> Result<Options, String> {
    let mut o = Options {
        keep: false,
        hold: false,
        prefix: "demo-".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--keep" => o.keep = true,
            "--hold" => o.hold = true,
            "--prefix" => o.prefix = args.next().ok_or("--prefix needs a value")?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.keep && o.hold {
        return Err("--keep and --hold exclude each other".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "{e}{}{USAGE}",
                if e.is_empty() { "" } else { "\n" }
            );
            return ExitCode::from(2);
        }
    };
    let stop = match Stop::install() {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "demo: {e}");
            return ExitCode::from(2);
        }
    };
    let mut run = match Run::start(&o.prefix) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "demo: {e}");
            return ExitCode::from(2);
        }
    };
    let code = match demo(&mut run, &stop, o.hold) {
        Ok(()) => {
            if o.keep {
                run.keep(true);
                say!(
                    "\n(--keep: namespaces left in place: {}\n remove them with: scripts/demo --cleanup  or  cnet-debug cleanup --prefix {})",
                    run.namespaces().join(" "),
                    o.prefix
                );
            }
            0
        }
        Err(Failed::Stopped(s)) => {
            let _ = writeln!(
                std::io::stderr(),
                "demo: {s}: removing the {} namespaces it made",
                run.namespaces().len()
            );
            s.exit_code()
        }
        Err(Failed::Core(e)) => {
            let _ = writeln!(std::io::stderr(), "demo: {e}");
            1
        }
    };
    // Teardown: the namespaces (unless kept), then the run's state.
    let errors = run.teardown();
    for e in &errors {
        let _ = writeln!(std::io::stderr(), "demo: cleanup: {e}");
    }
    ExitCode::from(if code == 0 && !errors.is_empty() {
        1
    } else {
        code
    })
}

const HOSTS: [&str; 2] = ["host-1", "host-2"];
/// Each pod and the index of its host.
const PODS: [(&str, usize); 3] = [("pod-a", 0), ("pod-b", 0), ("pod-c", 1)];

fn demo(run: &mut Run, stop: &Stop, hold: bool) -> Result<(), Failed> {
    let roles = ["ul", "host-1", "host-2", "pod-a", "pod-b", "pod-c"];
    let name = |r: &str| run.name(r);
    let names: std::collections::HashMap<&str, String> =
        roles.iter().map(|r| (*r, name(r))).collect();
    let store_dir = run.dir().join("ipam");

    say!("== 1. namespaces: an underlay switch, two hosts, three pods");
    let mut ns = std::collections::HashMap::new();
    for r in roles {
        stop.check()?;
        let n = run.create_ns(r)?;
        Handle::at(&n)?.links().set_up("lo")?;
        ns.insert(r, n);
    }
    let ul = Handle::at(&ns["ul"])?;
    ul.links().add(Bridge::new("br0").up())?;

    stop.check()?;
    say!("== 2. hosts: an underlay port each; each leases a /24 of 10.244.0.0/16");
    let store = FileStore::open(&store_dir)?;
    let mut leases = store.subnets(SubnetConfig::new("10.244.0.0/16".parse()?))?;
    let backend = Backend::Vxlan(VxlanConfig::default());
    let mut subnets = Vec::new();
    for (i, host) in HOSTS.iter().enumerate() {
        let underlay: IpAddr = format!("192.0.2.1{}", i + 1).parse()?;
        ul.links().add(
            Veth::new(&format!("p{}", i + 1), "eth0")
                .peer_netns(&ns[host])
                .master("br0")
                .up()
                .peer_up(),
        )?;
        Handle::at(&ns[host])?
            .addrs()
            .add("eth0", IpNet::new(underlay, 24)?)?;
        let attrs = NodeAttrs {
            underlay_ip: Some(underlay),
            backend: Some(backend.name().into()),
            vtep_mac: Some(vtep_mac_for(host)),
            ..Default::default()
        };
        let lease = leases.acquire(host, &attrs, Duration::from_secs(3600))?;
        say!("   {host}: underlay {underlay}, pods {}", lease.subnet);
        subnets.push(lease.subnet);
    }

    stop.check()?;
    say!("== 3. on each host: a bridge network (cni0) and vxlan routes to every peer");
    let all = leases.list()?;
    let mut nets = Vec::new();
    for (i, host) in HOSTS.iter().enumerate() {
        let h = Handle::at(&ns[host])?;
        let pool = store.pool(PoolConfig::new(subnets[i]))?;
        let net = BridgeNetwork::ensure(&h, pool, BridgeConfig::new("cni0", subnets[i]).mtu(1450))?;
        let underlay = all[i].attrs.underlay_ip.expect("published above");
        let node = Node::new(&h, NodeConfig::new(host, subnets[i], "eth0", underlay))?;
        let r = node.reconcile_leases(&backend, &all)?.into_result()?;
        say!(
            "   {host}: cni0 {}; {} peer(s) over vxlan ({} routes, {} neighbours, {} FDB entries added)",
            net.gateway(),
            r.peers.len(),
            r.routes.added,
            r.neighbours.added,
            r.fdb.added
        );
        nets.push(net);
    }

    stop.check()?;
    say!("== 4. pods: attached in one call each (address, veth, route; rolled back on failure)");
    let mut pod_ip = std::collections::HashMap::new();
    for (pod, hi) in PODS {
        let att = nets[hi].attach(&ContainerNs::netns(&ns[pod]), &names[pod], "eth0")?;
        say!(
            "   {pod} on {}: {} (host end {}, gateway {})",
            HOSTS[hi],
            att.address,
            att.host.name,
            att.gateway
        );
        pod_ip.insert(pod, att.address.addr());
    }

    stop.check()?;
    say!("== 5. what the kernel has (read with iproute2)");
    sh(&["ip", "-n", &names["host-1"], "-br", "addr"]);
    sh(&["ip", "-n", &names["host-1"], "route"]);
    sh(&[
        "bridge",
        "-n",
        &names["host-1"],
        "fdb",
        "show",
        "dev",
        NodeConfig::VXLAN_DEV,
    ]);

    stop.check()?;
    say!("== 6. traffic: every pod pings every other (ping -c1 from the row's pod)");
    let pods: Vec<&str> = PODS.iter().map(|(p, _)| *p).collect();
    say!(
        "   {:>6} {}",
        "",
        pods.iter().map(|p| format!("{p:>6}")).collect::<String>()
    );
    let mut all_ok = true;
    for from in &pods {
        let mut row = format!("   {from:>6} ");
        for to in &pods {
            let cell = if from == to {
                "-".to_string()
            } else {
                stop.check()?;
                let ok = Command::new("ip")
                    .args(["netns", "exec", &names[from], "ping", "-c", "1", "-W", "2"])
                    .arg(pod_ip[to].to_string())
                    .output()
                    .is_ok_and(|o| o.status.success());
                all_ok &= ok;
                if ok { "ok" } else { "FAIL" }.to_string()
            };
            row.push_str(&format!("{cell:>6}"));
        }
        say!("{row}");
    }
    let c = pod_ip["pod-c"].to_string();
    if !all_ok {
        return Err(Failed::Core(cnet_core::Error::Protocol {
            context: "demo".into(),
            reason: "some pods cannot reach others".into(),
        }));
    }

    stop.check()?;
    say!(
        "== 7. cnet-debug trace {c} --from {} (explained, then proven by capture)",
        names["pod-a"].clone()
    );
    let req = trace::Request {
        from: ns["pod-a"].clone(),
        from_label: names["pod-a"].clone(),
        dst: pod_ip["pod-c"],
        src: None,
        proto: Proto::Icmp,
        port: 33434,
    };
    let t0 = Instant::now();
    let t = trace::explain(&req)?;
    let explain_time = t0.elapsed();
    let proof = trace::prove(&req, &t, Duration::from_millis(1000))?;
    let _ = report::human(&t, Some(&proof), &mut std::io::stdout());
    say!(
        "(explained in {:.1} ms, proven with capture in {:.1} ms)",
        explain_time.as_secs_f64() * 1e3,
        proof.elapsed_us as f64 / 1e3
    );
    if !t.verdict.ok || !proof.replied {
        return Err(Failed::Core(cnet_core::Error::Protocol {
            context: "demo".into(),
            reason: "the cross-host path does not work".into(),
        }));
    }
    if hold {
        say!(
            "== 8. holding: the cluster stays up until Ctrl-C or SIGTERM\n   namespaces: {}",
            run.namespaces().join(" ")
        );
        loop {
            stop.sleep(Duration::from_secs(3600))?;
        }
    }
    Ok(())
}
