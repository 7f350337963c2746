//! The demo: a "host" namespace with a bridge, two "containers" attached
//! to it by veth pairs, addresses from 10.244.1.0/24, a ping between the
//! containers, and everything shown as the kernel sees it.
//!
//! Run as root: `cargo run -p cnet-core --example demo` (`--keep` leaves the
//! namespaces for you to explore; remove them with `ip netns del`).

use std::process::Command;

use cnet_core::link::{Bridge, Veth};
use cnet_core::{Handle, NetNs, Result};

struct Cleanup(Vec<String>, bool);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.1 {
            println!("\n(--keep: namespaces {} left in place)", self.0.join(", "));
            return;
        }
        for n in &self.0 {
            let _ = NetNs::delete(n);
        }
    }
}

fn sh(args: &[&str]) {
    println!("$ {}", args.join(" "));
    let out = Command::new(args[0]).args(&args[1..]).output();
    match out {
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
    let names: Vec<String> = ["host", "pod-a", "pod-b"]
        .iter()
        .map(|n| format!("demo-{n}-{pid}"))
        .collect();
    let _cleanup = Cleanup(names.clone(), keep);

    println!("== 1. namespaces: a host and two containers");
    let host_ns = NetNs::create(&names[0])?;
    let pods = [NetNs::create(&names[1])?, NetNs::create(&names[2])?];
    let host = Handle::at(&host_ns)?;
    host.links().set_up("lo")?;

    println!("== 2. bridge cni0 (10.244.1.1/24) in the host");
    host.links().add(Bridge::new("cni0").mtu(1500).up())?;
    host.addrs().add("cni0", "10.244.1.1/24".parse()?)?;

    println!("== 3. a veth pair per container, the peer born inside it as eth0");
    for (i, pod) in pods.iter().enumerate() {
        let host_end = format!("veth-{}", ["a", "b"][i]);
        host.links().add(
            Veth::new(&host_end, "eth0")
                .peer_netns(pod)
                .master("cni0")
                .up()
                .peer_up(),
        )?;
        let p = Handle::at(pod)?;
        p.links().set_up("lo")?;
        p.addrs()
            .add("eth0", format!("10.244.1.{}/24", i + 2).parse()?)?;
    }

    println!("== 4. what the kernel has now (read with iproute2)");
    sh(&["ip", "-n", &names[0], "-br", "link"]);
    sh(&["ip", "-n", &names[0], "-br", "addr"]);
    sh(&["bridge", "-n", &names[0], "link"]);
    sh(&["ip", "-n", &names[1], "-br", "addr"]);
    sh(&["ip", "-n", &names[2], "-br", "addr"]);

    println!("== 5. traffic: pod-a → pod-b across the bridge");
    sh(&[
        "ip",
        "netns",
        "exec",
        &names[1],
        "ping",
        "-c",
        "2",
        "-W",
        "2",
        "10.244.1.3",
    ]);

    println!("== 6. the library's own view");
    for l in host.links().list()? {
        println!(
            "  {:>2} {:<8} kind={:<6} mtu={} up={} master={:?}",
            l.index,
            l.name,
            l.kind.as_str(),
            l.mtu,
            l.is_up(),
            l.master
        );
    }
    Ok(())
}
