//! `cnet-debug trace` across a Calico-style IP-in-IP overlay (the kernel's
//! fallback `tunl0`, routes `via PEER dev tunl0 onlink`). This machine's
//! kernel has no ipip: here the test only checks that, and says so;
//! `scripts/test` runs this binary again in the stock-kernel VM
//! (`CNET_IN_VM=1`), where ipip must exist and the path is explained and
//! proven with capture, outer and inner headers decoded.

use std::time::Duration;

use cnet_core::link::{Bridge, IpIp, Veth};
use cnet_core::route::Route;
use cnet_core::{Error, Handle, NetNs};
use cnet_debug::probe::Proto;
use cnet_debug::trace::{explain, prove, HopKind, Request};
use cnet_debug::wire::Layer;
use cnet_test_support::{privileged, Maker, Namespaces};

#[test]
fn trace_across_an_ipip_overlay() {
    if !privileged() {
        return;
    }
    let roles = ["ul", "h1", "h2", "c1", "c2"];
    // Made by cnet, loopback up; deleted when `set` is dropped.
    let mut set = Namespaces::empty("ipip", Maker::Cnet);
    let ns: Vec<NetNs> = roles.iter().map(|r| set.add(r)).collect();
    let names: Vec<String> = roles.iter().map(|r| set.ns(r)).collect();
    let h: Vec<Handle> = ns.iter().map(|n| Handle::at(n).unwrap()).collect();
    // Does this kernel have ipip? (Loading the module makes tunl0 appear.)
    let probe = h[1]
        .links()
        .add(IpIp::new("probe0").remote("198.51.100.9".parse().unwrap()));
    let in_vm = std::env::var_os("CNET_IN_VM").is_some();
    match probe {
        Ok(()) => h[1].links().delete("probe0").unwrap(),
        Err(Error::Unsupported { .. }) if !in_vm => {
            eprintln!("kernel has no ipip: the end-to-end trace runs in the VM (scripts/test)");
            return;
        }
        Err(e) => panic!("ipip must work here (in VM: {in_vm}): {e}"),
    }
    h[0].links().add(Bridge::new("br0").up()).unwrap();
    for (i, host) in [1usize, 2].into_iter().enumerate() {
        let n = i + 1;
        h[0].links()
            .add(
                Veth::new(&format!("p{n}"), "eth0")
                    .peer_netns(&ns[host])
                    .master("br0")
                    .up()
                    .peer_up(),
            )
            .unwrap();
        h[host]
            .addrs()
            .add("eth0", format!("192.0.2.1{n}/24").parse().unwrap())
            .unwrap();
        h[host].sysctl().set_ip_forward(true).unwrap();
        h[host].links().add(Bridge::new("cni0").up()).unwrap();
        h[host]
            .addrs()
            .add("cni0", format!("10.244.{n}.1/24").parse().unwrap())
            .unwrap();
        h[host].links().set_mtu("tunl0", 1480).unwrap();
        h[host].links().set_up("tunl0").unwrap();
        let c = host + 2;
        h[host]
            .links()
            .add(
                Veth::new("veth-c", "eth0")
                    .peer_netns(&ns[c])
                    .master("cni0")
                    .up()
                    .peer_up(),
            )
            .unwrap();
        h[c].addrs()
            .add("eth0", format!("10.244.{n}.2/24").parse().unwrap())
            .unwrap();
        h[c].routes()
            .add(
                Route::to("0.0.0.0/0".parse().unwrap())
                    .via(format!("10.244.{n}.1").parse().unwrap()),
            )
            .unwrap();
        let peer = 3 - n;
        h[host]
            .routes()
            .add(
                Route::to(format!("10.244.{peer}.0/24").parse().unwrap())
                    .via(format!("192.0.2.1{peer}").parse().unwrap())
                    .dev("tunl0")
                    .onlink(),
            )
            .unwrap();
    }
    let r = Request {
        from: ns[3].clone(),
        from_label: names[3].clone(),
        dst: "10.244.2.2".parse().unwrap(),
        src: None,
        proto: Proto::Icmp,
        port: 0,
    };
    let t = explain(&r).unwrap();
    let p = prove(&r, &t, Duration::from_millis(2000)).unwrap();
    let mut text = Vec::new();
    cnet_debug::report::human(&t, Some(&p), &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    eprintln!("{text}");
    assert!(t.verdict.ok, "{text}");
    assert_eq!(t.verdict.netns, names[4]);
    let enc = t
        .hops
        .iter()
        .find(|h| h.kind == HopKind::IpipEncap)
        .expect("encap hop");
    assert_eq!(enc.summary, "ipip tunl0 → remote 192.0.2.12");
    assert_eq!(enc.netns, names[1]);
    let dec = t
        .hops
        .iter()
        .find(|h| h.kind == HopKind::Decap)
        .expect("decap hop");
    assert_eq!(dec.netns, names[2]);
    assert!(p.replied, "{text}");
    assert!(p.hops.iter().all(|c| c.seen), "{text}");
    // On the underlay: IPv4 in IPv4, outer 192.0.2.11 → .12, inner 10.244.1.2 → 10.244.2.2.
    let under = p
        .hops
        .iter()
        .find(|c| c.netns == names[0])
        .expect("capture in ul");
    let ips: Vec<(String, String)> = under
        .frame
        .iter()
        .filter_map(|l| match l {
            Layer::Ipv4 { src, dst, .. } => Some((src.to_string(), dst.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(
        ips,
        vec![
            ("192.0.2.11".to_string(), "192.0.2.12".to_string()),
            ("10.244.1.2".to_string(), "10.244.2.2".to_string())
        ],
        "{text}"
    );
}
