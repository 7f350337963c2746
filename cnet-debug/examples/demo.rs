//! The demo: a two-host cluster in network namespaces on this machine.
//!
//! ```text
//!   ul: bridge br0 — the "underlay" switch, 192.0.2.0/24
//!   host-1 (192.0.2.11)               host-2 (192.0.2.12)
//!     cni0 + pod-a, pod-b               cni0 + pod-c
//!     flannel.1 ══ VXLAN VNI 1, UDP 8472 ══ flannel.1
//! ```
//! Each host leases a /24 from 10.244.0.0/16 and each pod gets an address
//! from its host's /24 (cnet-core's file IPAM, in the run's own directory);
//! veth pairs attach the pods to their host's bridge; a Flannel-style VXLAN
//! overlay with a neighbour and FDB entry per peer connects the hosts. Then
//! pods ping each other and `cnet-debug trace` explains and proves the
//! cross-host path with live capture.
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

use cnet_core::fdb::FdbEntry;
use cnet_core::ipam::{FileStore, LeaseStore, NodeAttrs, PoolConfig, PoolStore, SubnetConfig};
use cnet_core::link::{Bridge, MacAddr, Veth, Vxlan};
use cnet_core::neigh::Neighbour;
use cnet_core::route::Route;
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
    say!("== 2. IPAM: each host leases a /24 of 10.244.0.0/16");
    let store = FileStore::open(&store_dir)?;
    let mut leases = store.subnets(SubnetConfig::new("10.244.0.0/16".parse()?))?;
    let mut subnets = Vec::new();
    for (i, host) in ["host-1", "host-2"].iter().enumerate() {
        let attrs = NodeAttrs {
            underlay_ip: Some(format!("192.0.2.1{}", i + 1).parse()?),
            backend: Some("vxlan".into()),
            ..Default::default()
        };
        let lease = leases.acquire(host, &attrs, Duration::from_secs(3600))?;
        say!("   {host}: {}", lease.subnet);
        subnets.push(lease.subnet);
    }

    stop.check()?;
    say!("== 3. hosts: underlay eth0, bridge cni0, vxlan flannel.1");
    let vtep_mac = |i: usize| MacAddr([0x02, 0, 0, 0, i as u8 + 1, 0x01]);
    for (i, host) in ["host-1", "host-2"].iter().enumerate() {
        let h = Handle::at(&ns[host])?;
        ul.links().add(
            Veth::new(&format!("p{}", i + 1), "eth0")
                .peer_netns(&ns[host])
                .master("br0")
                .up()
                .peer_up(),
        )?;
        h.addrs()
            .add("eth0", format!("192.0.2.1{}/24", i + 1).parse()?)?;
        h.sysctl().set_ip_forward(true)?;
        let IpNet::V4(sub) = subnets[i] else {
            unreachable!("IPv4 cluster")
        };
        let gw = sub.hosts().next().expect("a /24 has hosts");
        h.links().add(Bridge::new("cni0").mtu(1450).up())?;
        h.addrs()
            .add("cni0", IpNet::new(gw.into(), sub.prefix_len())?)?;
        h.links().add(
            Vxlan::new("flannel.1", 1)
                .local(format!("192.0.2.1{}", i + 1).parse()?)
                .dev("eth0")
                .learning(false)
                .mac(vtep_mac(i))
                .mtu(1450)
                .up(),
        )?;
        h.addrs()
            .add("flannel.1", IpNet::new(sub.network().into(), 32)?)?;
    }
    for (i, host) in ["host-1", "host-2"].iter().enumerate() {
        let (p, h) = (1 - i, Handle::at(&ns[host])?);
        let peer_vtep: IpAddr = subnets[p].network();
        h.neighbours()
            .add(Neighbour::new("flannel.1", peer_vtep, vtep_mac(p)))?;
        h.fdb().add(
            FdbEntry::new(vtep_mac(p), "flannel.1")
                .dst(format!("192.0.2.1{}", p + 1).parse()?)
                .on_self(),
        )?;
        h.routes().add(
            Route::to(subnets[p])
                .via(peer_vtep)
                .dev("flannel.1")
                .onlink(),
        )?;
    }

    stop.check()?;
    say!("== 4. pods: an address from the host's pool, a veth to cni0, a default route");
    let mut pod_ip = std::collections::HashMap::new();
    for (pod, host, hi) in [
        ("pod-a", "host-1", 0),
        ("pod-b", "host-1", 0),
        ("pod-c", "host-2", 1),
    ] {
        let mut pool = store.pool(PoolConfig::new(subnets[hi]))?;
        let a = pool.allocate(&names[pod], "eth0")?;
        let h = Handle::at(&ns[host])?;
        h.links().add(
            Veth::new(&format!("veth-{pod}"), "eth0")
                .peer_netns(&ns[pod])
                .master("cni0")
                .mtu(1450)
                .up()
                .peer_up(),
        )?;
        let p = Handle::at(&ns[pod])?;
        p.addrs()
            .add("eth0", IpNet::new(a.addr, subnets[hi].prefix_len())?)?;
        let IpNet::V4(sub) = subnets[hi] else {
            unreachable!()
        };
        let gw: IpAddr = sub.hosts().next().expect("gateway").into();
        p.routes().add(Route::to("0.0.0.0/0".parse()?).via(gw))?;
        say!("   {pod} on {host}: {}", a.addr);
        pod_ip.insert(pod, a.addr);
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
        "flannel.1",
    ]);

    stop.check()?;
    say!("== 6. traffic");
    let c = pod_ip["pod-c"].to_string();
    let b = pod_ip["pod-b"].to_string();
    sh(&[
        "ip",
        "netns",
        "exec",
        &names["pod-a"],
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        &b,
    ]);
    sh(&[
        "ip",
        "netns",
        "exec",
        &names["pod-a"],
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        &c,
    ]);

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
