//! The demo: a two-host cluster in network namespaces on this machine.
//!
//! ```text
//!   ul: bridge br0 — the "underlay" switch, 192.0.2.0/24
//!   host-1 (192.0.2.11)               host-2 (192.0.2.12)
//!     cni0 + pod-a, pod-b               cni0 + pod-c
//!     flannel.1 ══ VXLAN VNI 1, UDP 8472 ══ flannel.1
//! ```
//! Each host leases a /24 from 10.244.0.0/16 and each pod gets an address
//! from its host's /24 (cnet-core's file IPAM, in a temporary directory);
//! veth pairs attach the pods to their host's bridge; a Flannel-style VXLAN
//! overlay with a neighbour and FDB entry per peer connects the hosts. Then
//! pods ping each other and `cnet-debug trace` explains and proves the
//! cross-host path with live capture.
//!
//! Run as root: `scripts/demo` (or `cargo run -p cnet-debug --example demo`);
//! `--keep` leaves the namespaces for you to explore (`ip netns list`).

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use cnet_core::fdb::FdbEntry;
use cnet_core::ipam::{FileStore, LeaseStore, NodeAttrs, PoolConfig, PoolStore, SubnetConfig};
use cnet_core::link::{Bridge, MacAddr, Veth, Vxlan};
use cnet_core::neigh::Neighbour;
use cnet_core::route::Route;
use cnet_core::{Handle, IpNet, NetNs, Result};
use cnet_debug::probe::Proto;
use cnet_debug::{report, trace};

struct Cleanup(Vec<String>, bool, std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.2);
        if self.1 {
            println!("\n(--keep: namespaces left in place: {})", self.0.join(" "));
            return;
        }
        for n in &self.0 {
            let _ = NetNs::delete(n);
        }
    }
}

fn sh(args: &[&str]) {
    println!("$ {}", args.join(" "));
    match Command::new(args[0]).args(&args[1..]).output() {
        Ok(o) => {
            print!("{}", String::from_utf8_lossy(&o.stdout));
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
        }
        Err(e) => println!("({}: {e})", args[0]),
    }
}

fn main() -> Result<()> {
    let keep = std::env::args().any(|a| a == "--keep");
    let pid = std::process::id();
    let name = |r: &str| format!("demo-{r}-{pid}");
    let roles = ["ul", "host-1", "host-2", "pod-a", "pod-b", "pod-c"];
    let store_dir = std::env::temp_dir().join(format!("cnet-demo-ipam-{pid}"));
    let _cleanup = Cleanup(
        roles.iter().map(|r| name(r)).collect(),
        keep,
        store_dir.clone(),
    );

    println!("== 1. namespaces: an underlay switch, two hosts, three pods");
    let mut ns = std::collections::HashMap::new();
    for r in roles {
        let n = NetNs::create(&name(r))?;
        Handle::at(&n)?.links().set_up("lo")?;
        ns.insert(r, n);
    }
    let ul = Handle::at(&ns["ul"])?;
    ul.links().add(Bridge::new("br0").up())?;

    println!("== 2. IPAM: each host leases a /24 of 10.244.0.0/16");
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
        println!("   {host}: {}", lease.subnet);
        subnets.push(lease.subnet);
    }

    println!("== 3. hosts: underlay eth0, bridge cni0, vxlan flannel.1");
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

    println!("== 4. pods: an address from the host's pool, a veth to cni0, a default route");
    let mut pod_ip = std::collections::HashMap::new();
    for (pod, host, hi) in [
        ("pod-a", "host-1", 0),
        ("pod-b", "host-1", 0),
        ("pod-c", "host-2", 1),
    ] {
        let mut pool = store.pool(PoolConfig::new(subnets[hi]))?;
        let a = pool.allocate(&name(pod), "eth0")?;
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
        println!("   {pod} on {host}: {}", a.addr);
        pod_ip.insert(pod, a.addr);
    }

    println!("== 5. what the kernel has (read with iproute2)");
    sh(&["ip", "-n", &name("host-1"), "-br", "addr"]);
    sh(&["ip", "-n", &name("host-1"), "route"]);
    sh(&[
        "bridge",
        "-n",
        &name("host-1"),
        "fdb",
        "show",
        "dev",
        "flannel.1",
    ]);

    println!("== 6. traffic");
    let c = pod_ip["pod-c"].to_string();
    let b = pod_ip["pod-b"].to_string();
    sh(&[
        "ip",
        "netns",
        "exec",
        &name("pod-a"),
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
        &name("pod-a"),
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        &c,
    ]);

    println!(
        "== 7. cnet-debug trace {c} --from {} (explained, then proven by capture)",
        name("pod-a")
    );
    let req = trace::Request {
        from: ns["pod-a"].clone(),
        from_label: name("pod-a"),
        dst: pod_ip["pod-c"],
        src: None,
        proto: Proto::Icmp,
        port: 33434,
    };
    let t0 = Instant::now();
    let t = trace::explain(&req)?;
    let explain_time = t0.elapsed();
    let proof = trace::prove(&req, &t, Duration::from_millis(1000))?;
    report::human(&t, Some(&proof), &mut std::io::stdout())
        .map_err(|e| cnet_core::Error::io("print", e))?;
    println!(
        "(explained in {:.1} ms, proven with capture in {:.1} ms)",
        explain_time.as_secs_f64() * 1e3,
        proof.elapsed_us as f64 / 1e3
    );
    if !t.verdict.ok || !proof.replied {
        return Err(cnet_core::Error::Protocol {
            context: "demo".into(),
            reason: "the cross-host path does not work".into(),
        });
    }
    Ok(())
}
