//! podman (Debian's, CNI backend) drives the `cnet` plugin: containers
//! on a cnet network ping each other, `podman inspect` shows the address
//! cnet gave, stop/rm/SIGKILL release it, and cnet chains with the
//! official plugins (portmap, bandwidth, tuning). podman runs inside a
//! namespace that plays the host; everything is removed by guards.
//!
//! ```text
//!   {client} 203.0.113.2 ── veth ── {host} 203.0.113.1   (podman, iptables: portmap)
//!     curl http://203.0.113.1:8080/ ─▶ DNAT ─▶ web 10.244.1.x:80 (busybox httpd)
//!                                    cnet0 10.244.1.1/24 ── c1 eth0, c2 eth0 (busybox)
//! ```

mod cni;
mod common;

use cnet_test_support::{privileged, Namespaces};
use cni::podman::{available, Podman};
use cni::{links_of, Net};
use serde_json::{json, Value};

/// The cnet plugin's entry of a conflist, its store that of `net`.
fn cnet_entry(net: &Net) -> Value {
    json!({
        "type": "cnet",
        "bridge": net.bridge,
        "subnet": net.subnet,
        "store": { "dir": net.store.path() },
        "capabilities": { "ips": true, "mac": true },
    })
}

/// Namespaces, the cnet network's store and a podman of the test's own.
fn setup(tag: &str, roles: &[&str]) -> Option<(Namespaces, Net, Podman)> {
    if !privileged() || !available() {
        return None;
    }
    let set = Namespaces::new(tag, roles);
    let net = Net::new(&set.ns("host"), tag);
    let podman = Podman::new(&set.ns("host"), tag, cni::plugin());
    podman.conflist("cnet-test", vec![cnet_entry(&net)]);
    Some((set, net, podman))
}

fn held_ids(net: &Net) -> Vec<String> {
    let mut v: Vec<String> = net.allocations().into_iter().map(|(id, _)| id).collect();
    v.sort();
    v
}

#[test]
fn podman_two_containers_ping_inspect_shows_cnet_address_and_rm_releases() {
    let Some((set, net, podman)) = setup("pmr", &["host"]) else {
        return;
    };
    let id1 = podman.run("c1", "cnet-test", &[], &["sleep", "1000"]);
    let id2 = podman.run("c2", "cnet-test", &[], &["sleep", "1000"]);
    let mut ids = vec![id1.clone(), id2.clone()];
    ids.sort();
    assert_eq!(held_ids(&net), ids, "the pool holds both containers");
    // podman inspect shows what cnet allocated, for each container.
    for (name, id) in [("c1", &id1), ("c2", &id2)] {
        let ip = podman.ip_of(name, "cnet-test");
        let held = net
            .allocations()
            .into_iter()
            .find(|(i, _)| i == id)
            .unwrap()
            .1;
        assert_eq!(ip, held, "{name}");
    }
    let ip2 = podman.ip_of("c2", "cnet-test");
    assert!(
        podman.exec_ok("c1", &["ping", "-c", "1", "-W", "2", &ip2]),
        "c1 cannot ping c2"
    );
    assert!(podman.exec_ok(
        "c2",
        &[
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &podman.ip_of("c1", "cnet-test")
        ]
    ));

    // stop releases c1's address; rm of the stopped container is fine.
    podman.ok(&["stop", "-t", "0", "c1"]);
    assert!(
        podman.eventually(|| held_ids(&net) == [id2.clone()]),
        "{:?}",
        held_ids(&net)
    );
    podman.ok(&["rm", "c1"]);
    podman.ok(&["rm", "-f", "-t", "0", "c2"]);
    assert!(
        podman.eventually(|| net.allocations().is_empty()),
        "{:?}",
        net.allocations()
    );
    assert_eq!(links_of(&set.ns("host")), ["lo", "cnet0"]);

    // SIGKILL of the container's process, then rm: nothing left.
    let id3 = podman.run("c3", "cnet-test", &[], &["sleep", "1000"]);
    assert_eq!(held_ids(&net), [id3]);
    let pid = podman.inspect("c3")["State"]["Pid"].as_i64().unwrap();
    cnet_test_support::run("kill", &["-KILL", &pid.to_string()]);
    podman.ok(&["rm", "-f", "-t", "0", "c3"]);
    assert!(
        podman.eventually(|| net.allocations().is_empty()),
        "{:?}",
        net.allocations()
    );
    assert_eq!(links_of(&set.ns("host")), ["lo", "cnet0"]);
}

#[test]
fn podman_static_ip_and_mac_reach_the_plugin() {
    let Some((_set, net, podman)) = setup("pms", &["host"]) else {
        return;
    };
    podman.run(
        "c1",
        "cnet-test",
        &["--ip", "10.244.1.42", "--mac-address", "02:42:0a:f4:01:2a"],
        &["sleep", "1000"],
    );
    assert_eq!(podman.ip_of("c1", "cnet-test"), "10.244.1.42");
    let mac =
        podman.inspect("c1")["NetworkSettings"]["Networks"]["cnet-test"]["MacAddress"].clone();
    assert_eq!(mac, "02:42:0a:f4:01:2a");
    assert_eq!(net.allocations()[0].1, "10.244.1.42");
    podman.ok(&["rm", "-f", "-t", "0", "c1"]);
    assert!(podman.eventually(|| net.allocations().is_empty()));
}

#[test]
fn podman_chain_cnet_portmap_reaches_httpd_from_another_namespace() {
    let Some((set, net, podman)) = setup("pmp", &["host", "client"]) else {
        return;
    };
    set.sh(&[
        "ip link add pmh netns {host} type veth peer name pmc netns {client}",
        "ip -n {host} addr add 203.0.113.1/24 dev pmh",
        "ip -n {host} link set pmh up",
        "ip -n {client} addr add 203.0.113.2/24 dev pmc",
        "ip -n {client} link set pmc up",
    ]);
    podman.conflist(
        "cnet-pm",
        vec![
            cnet_entry(&net),
            json!({ "type": "portmap", "capabilities": { "portMappings": true } }),
        ],
    );
    podman.run(
        "web",
        "cnet-pm",
        &["-p", "8080:80"],
        &["httpd", "-f", "-p", "80", "-h", "/www"],
    );
    let client = set.ns("client");
    // curl (busybox-static's wget crashes on these machines).
    let got = podman.eventually(|| {
        std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{client}"))
            .args([
                "curl",
                "-s",
                "-m",
                "2",
                "http://203.0.113.1:8080/index.html",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("hello from cnet"))
            .unwrap_or(false)
    });
    assert!(got, "the host port does not reach httpd in the container");
    // portmap's rules are in the host namespace (and only there).
    let rules = cnet_test_support::run(
        "ip",
        &[
            "netns",
            "exec",
            &set.ns("host"),
            "iptables-save",
            "-t",
            "nat",
        ],
    );
    assert!(rules.contains("CNI-HOSTPORT-DNAT"), "{rules}");
    podman.ok(&["rm", "-f", "-t", "0", "web"]);
    assert!(podman.eventually(|| net.allocations().is_empty()));
}

#[test]
fn podman_chain_cnet_bandwidth_tuning_accept_cnet_prevresult() {
    let Some((set, net, podman)) = setup("pmb", &["host"]) else {
        return;
    };
    podman.conflist(
        "cnet-bt",
        vec![
            cnet_entry(&net),
            json!({ "type": "bandwidth", "ingressRate": 1_000_000, "ingressBurst": 100_000 }),
            json!({ "type": "tuning", "sysctl": { "net.ipv4.conf.eth0.rp_filter": "2" } }),
        ],
    );
    podman.run("c1", "cnet-bt", &[], &["sleep", "1000"]);
    let ip = podman.ip_of("c1", "cnet-bt");
    assert!(ip.starts_with("10.244.1."), "{ip}");
    // bandwidth shaped the host end cnet made (read with tc in the host).
    let host = set.ns("host");
    let veth = links_of(&host)
        .into_iter()
        .find(|l| l.starts_with("veth"))
        .unwrap();
    let qdisc = cnet_test_support::run("tc", &["-n", &host, "qdisc", "show", "dev", &veth]);
    assert!(qdisc.contains("tbf"), "{qdisc}");
    // tuning set the sysctl inside the container.
    let mut args = vec![
        "exec",
        "c1",
        "cat",
        "/proc/sys/net/ipv4/conf/eth0/rp_filter",
    ];
    args.truncate(5);
    assert_eq!(podman.ok(&args), "2");
    podman.ok(&["rm", "-f", "-t", "0", "c1"]);
    assert!(podman.eventually(|| net.allocations().is_empty()));
}

#[test]
fn podman_chain_bridge_then_cnet_is_refused_with_a_clear_error() {
    let Some((_set, net, podman)) = setup("pmx", &["host"]) else {
        return;
    };
    podman.conflist(
        "bridge-cnet",
        vec![
            json!({
                "type": "bridge", "bridge": "cni9", "isGateway": true,
                "ipam": { "type": "host-local", "subnet": "10.244.9.0/24",
                          "dataDir": podman.path().join("host-local") }
            }),
            cnet_entry(&net),
        ],
    );
    let mut args = vec!["run", "-d", "--name", "c1", "--network", "bridge-cnet"];
    args.extend_from_slice(&cni::podman::ULIMITS);
    args.extend_from_slice(&[cni::podman::IMAGE, "sleep", "1000"]);
    let o = podman.cmd(&args);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("must be the first plugin of a chain"), "{err}");
    assert!(net.allocations().is_empty());
}

/// `cnet-debug trace` (libcnet's `cnet_trace`, the same path model) from
/// the namespace at `path` to `dst`: the JSON report.
fn trace(path: &str, dst: &str, capture: bool) -> Value {
    use std::ffi::{CStr, CString};
    use std::ptr::{null, null_mut};
    let p = CString::new(path).unwrap();
    let d = CString::new(dst).unwrap();
    let mut ns = null_mut();
    common::ok(|e| cnet::ns::cnet_netns_open_path(p.as_ptr(), &mut ns, e));
    let mut json = null_mut();
    common::ok(|e| cnet::trace::cnet_trace(ns, d.as_ptr(), null(), capture, 2000, &mut json, e));
    // SAFETY: a string made by libcnet, freed right after.
    let s = unsafe { CStr::from_ptr(json) }
        .to_string_lossy()
        .into_owned();
    cnet::cnet_string_free(json);
    cnet::ns::cnet_netns_free(ns);
    serde_json::from_str(&s).unwrap()
}

#[test]
fn podman_trace_between_two_containers_ok_with_capture_and_names_a_downed_host_end() {
    let Some((set, _net, podman)) = setup("pmt", &["host"]) else {
        return;
    };
    podman.run("c1", "cnet-test", &[], &["sleep", "1000"]);
    let id2 = podman.run("c2", "cnet-test", &[], &["sleep", "1000"]);
    // podman's CNI backend names each container's namespace (SandboxKey).
    let sandbox = podman.inspect("c1")["NetworkSettings"]["SandboxKey"]
        .as_str()
        .unwrap()
        .to_string();
    let ip2 = podman.ip_of("c2", "cnet-test");
    let t = trace(&sandbox, &ip2, true);
    assert_eq!(t["verdict"]["ok"], true, "{t}");
    assert_eq!(t["capture"]["replied"], true, "{t}");

    // c2's host end set down: the trace names it.
    let veth = cnet_core::network::host_veth_name(&id2, "eth0").unwrap();
    cnet_test_support::run("ip", &["-n", &set.ns("host"), "link", "set", &veth, "down"]);
    let t = trace(&sandbox, &ip2, false);
    assert_eq!(t["verdict"]["ok"], false, "{t}");
    let findings = t["findings"].to_string() + &t["verdict"].to_string();
    assert!(
        findings.contains(&veth),
        "the trace does not name {veth}: {t}"
    );
}
