//! The `cnet` CNI plugin (examples/cni-plugin, Go over libcnet) executed as
//! a runtime executes it: a new process per call, the verb and container
//! in the environment, the configuration on stdin, inside a namespace that
//! plays the host. Each spec behaviour in a named test, verified with
//! `ip -j`, the pool's own listing and pings.
//!
//! ```text
//!   {host}: cnet0 10.244.1.1/24 ── veth… ─ {a} eth0 10.244.1.x (plugin ADD)
//!                               └─ veth… ─ {b} eth0
//! ```

mod cni;
mod common;

use cnet_test_support::{privileged, Namespaces};
use cni::{addr_of, links_of, Net};
use serde_json::{json, Value};

fn netns(set: &Namespaces, role: &str) -> String {
    format!("/run/netns/{}", set.ns(role))
}

/// The container interface's address in the CNI result.
fn result_ip(r: &Value) -> String {
    r["ips"][0]["address"].as_str().unwrap().to_string()
}

#[test]
fn cni_plugin_add_check_del_verified_by_ip_and_ping() {
    if !privileged() {
        return;
    }
    let set = Namespaces::new("cpa", &["host", "a", "b"]);
    let net = Net::new(&set.ns("host"), "add");
    let v = net.call("VERSION", "", "").expect_ok("VERSION");
    assert_eq!(v["supportedVersions"], json!(["1.0.0", "1.1.0"]));

    let ra = net.add("ctr-a", &netns(&set, "a"));
    let rb = net.add("ctr-b", &netns(&set, "b"));
    assert_eq!(ra["cniVersion"], "1.0.0");
    // The result says what the kernel has (an independent reader).
    assert_eq!(
        addr_of(&set.ns("a"), "eth0").as_deref(),
        Some(result_ip(&ra).as_str())
    );
    assert_eq!(
        addr_of(&set.ns("b"), "eth0").as_deref(),
        Some(result_ip(&rb).as_str())
    );
    assert_eq!(ra["interfaces"][2]["sandbox"], netns(&set, "a"));
    let ip_b = result_ip(&rb);
    let ip_b = ip_b.split('/').next().unwrap();
    assert!(
        cnet_test_support::ping_once(&set.ns("a"), ip_b),
        "a cannot ping b"
    );
    // The pool's own listing holds both.
    let mut held: Vec<String> = net.allocations().into_iter().map(|(id, _)| id).collect();
    held.sort();
    assert_eq!(held, ["ctr-a", "ctr-b"]);

    net.check("ctr-a", &netns(&set, "a"), &ra)
        .expect_ok("CHECK a");
    // ADD twice (the runtime retried): the same result, nothing changed.
    let again = net.add("ctr-a", &netns(&set, "a"));
    assert_eq!(result_ip(&again), result_ip(&ra));

    net.call("DEL", "ctr-a", &netns(&set, "a"))
        .expect_ok("DEL a");
    net.call("DEL", "ctr-b", &netns(&set, "b"))
        .expect_ok("DEL b");
    assert!(net.allocations().is_empty(), "{:?}", net.allocations());
    assert_eq!(links_of(&set.ns("a")), ["lo"]);
    assert_eq!(links_of(&set.ns("host")), ["lo", "cnet0"]);
}

#[test]
fn cni_plugin_del_succeeds_when_namespace_link_or_allocation_gone_and_twice() {
    if !privileged() {
        return;
    }
    let mut set = Namespaces::new("cpd", &["host", "a", "b"]);
    let net = Net::new(&set.ns("host"), "del");
    let host = set.ns("host");

    // The link gone (deleted behind the plugin's back).
    net.add("ctr-a", &netns(&set, "a"));
    let veth = links_of(&host)
        .into_iter()
        .find(|l| l.starts_with("veth"))
        .unwrap();
    cnet_test_support::run("ip", &["-n", &host, "link", "del", &veth]);
    net.call("DEL", "ctr-a", &netns(&set, "a"))
        .expect_ok("DEL, link gone");
    assert!(net.allocations().is_empty());

    // The namespace gone: CNI_NETNS names a path that no longer exists.
    let b = netns(&set, "b");
    net.add("ctr-b", &b);
    let name_b = set.ns("b");
    cnet_test_support::run("ip", &["netns", "del", &name_b]);
    set.forget(&name_b);
    net.call("DEL", "ctr-b", &b)
        .expect_ok("DEL, namespace gone");
    assert!(net.allocations().is_empty());
    assert_eq!(
        links_of(&host),
        ["lo", "cnet0"],
        "the host end went with the namespace"
    );

    // Twice in a row, and without CNI_NETNS (allowed for DEL).
    net.call("DEL", "ctr-b", &b).expect_ok("DEL twice");
    net.call("DEL", "ctr-b", "")
        .expect_ok("DEL without CNI_NETNS");

    // The allocation gone (released behind the plugin's back): the link
    // is still removed.
    net.add("ctr-a", &netns(&set, "a"));
    let store = cnet_core::ipam::FileStore::open(net.store.path()).unwrap();
    let mut pool = store
        .pool(cnet_core::ipam::PoolConfig::new(
            net.subnet.parse().unwrap(),
        ))
        .unwrap();
    use cnet_core::ipam::PoolStore;
    pool.release("ctr-a", "eth0").unwrap();
    net.call("DEL", "ctr-a", &netns(&set, "a"))
        .expect_ok("DEL, allocation gone");
    assert_eq!(links_of(&set.ns("a")), ["lo"]);
    assert_eq!(links_of(&host), ["lo", "cnet0"]);

    // Never added at all.
    net.call("DEL", "never", "")
        .expect_ok("DEL of an unknown container");
}

#[test]
fn cni_plugin_add_after_a_failed_add_leaves_nothing() {
    if !privileged() {
        return;
    }
    let set = Namespaces::new("cpf", &["host", "a"]);
    let net = Net::new(&set.ns("host"), "fail");
    let host = set.ns("host");
    let a = set.ns("a");
    // The container has an eth0 already: the veth's peer cannot be born
    // there; the attach is rolled back.
    cnet_test_support::run(
        "ip",
        &[
            "-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "other",
        ],
    );
    let r = net.call("ADD", "ctr-a", &netns(&set, "a"));
    assert!(!r.ok, "{}", r.out);
    assert!(r.code() >= 100, "{}", r.out);
    assert!(
        links_of(&host).iter().all(|l| !l.starts_with("veth")),
        "{:?}",
        links_of(&host)
    );
    assert!(net.allocations().is_empty(), "{:?}", net.allocations());

    // A namespace that does not exist: spec code 3, nothing made.
    net.call("ADD", "ctr-x", "/run/netns/cn-no-such-ns")
        .expect_code(3, "ADD into a missing namespace");
    assert!(net.allocations().is_empty());

    // The cause removed, the same ADD works and holds one address.
    cnet_test_support::run("ip", &["-n", &a, "link", "del", "eth0"]);
    let ok = net.add("ctr-a", &netns(&set, "a"));
    assert_eq!(
        addr_of(&a, "eth0").as_deref(),
        Some(result_ip(&ok).as_str())
    );
    assert_eq!(net.allocations().len(), 1);
    net.call("DEL", "ctr-a", &netns(&set, "a")).expect_ok("DEL");
}

#[test]
fn cni_plugin_check_fails_when_a_prevresult_object_is_missing_or_differs() {
    if !privileged() {
        return;
    }
    let set = Namespaces::new("cpc", &["host", "a"]);
    let net = Net::new(&set.ns("host"), "check");
    let a = netns(&set, "a");
    let prev = net.add("ctr-a", &a);
    net.check("ctr-a", &a, &prev).expect_ok("CHECK as made");

    // prevResult names another address, another MAC, a route that is not
    // there, an interface that is not there.
    let mut other_ip = prev.clone();
    other_ip["ips"][0]["address"] = json!("10.244.1.99/24");
    net.check("ctr-a", &a, &other_ip)
        .expect_code(101, "CHECK, other address");
    let mut other_mac = prev.clone();
    other_mac["interfaces"][2]["mac"] = json!("02:00:00:00:00:99");
    net.check("ctr-a", &a, &other_mac)
        .expect_code(101, "CHECK, other mac");
    let mut other_route = prev.clone();
    other_route["routes"] = json!([{ "dst": "192.0.2.0/24", "gw": "10.244.1.1" }]);
    net.check("ctr-a", &a, &other_route)
        .expect_code(101, "CHECK, route missing");
    let mut extra_if = prev.clone();
    extra_if["interfaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "eth9", "mac": "02:00:00:00:00:09", "sandbox": a }));
    net.check("ctr-a", &a, &extra_if)
        .expect_code(101, "CHECK, interface missing");
    // No prevResult at all.
    net.call("CHECK", "ctr-a", &a)
        .expect_code(7, "CHECK without prevResult");

    // The live state changed: address removed in the container.
    let ip = result_ip(&prev);
    cnet_test_support::run(
        "ip",
        &["-n", &set.ns("a"), "addr", "del", &ip, "dev", "eth0"],
    );
    let e = net
        .check("ctr-a", &a, &prev)
        .expect_code(101, "CHECK, address removed");
    assert!(e["details"].as_str().unwrap().contains("address"), "{e}");
    net.call("DEL", "ctr-a", &a).expect_ok("DEL");
}

#[test]
fn cni_plugin_gc_releases_attachments_not_in_valid_attachments() {
    if !privileged() {
        return;
    }
    let set = Namespaces::new("cpg", &["host", "a", "b"]);
    let net = Net::new(&set.ns("host"), "gc");
    net.add("ctr-a", &netns(&set, "a"));
    net.add("ctr-b", &netns(&set, "b"));
    let mut conf = net.conf();
    conf["cniVersion"] = json!("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([{ "containerID": "ctr-a", "ifname": "eth0" }]);
    net.call_with("GC", "", "", &conf, &[]).expect_ok("GC");
    let held: Vec<String> = net.allocations().into_iter().map(|(id, _)| id).collect();
    assert_eq!(held, ["ctr-a"]);
    // b's veth pair went with its address; a is untouched.
    assert_eq!(links_of(&set.ns("b")), ["lo"]);
    assert!(addr_of(&set.ns("a"), "eth0").is_some());
    // An empty list releases everything.
    conf["cni.dev/valid-attachments"] = json!([]);
    net.call_with("GC", "", "", &conf, &[])
        .expect_ok("GC, none valid");
    assert!(net.allocations().is_empty());
    assert_eq!(links_of(&set.ns("host")), ["lo", "cnet0"]);
}

#[test]
fn cni_plugin_status_reports_an_unusable_store() {
    if !privileged() {
        return;
    }
    let set = Namespaces::new("cps", &["host"]);
    let net = Net::new(&set.ns("host"), "status");
    let mut conf = net.conf();
    conf["cniVersion"] = json!("1.1.0");
    net.call_with("STATUS", "", "", &conf, &[])
        .expect_ok("STATUS");
    // The store's directory is a regular file: unusable.
    let file = net.store.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    conf["store"]["dir"] = json!(file);
    let e = net
        .call_with("STATUS", "", "", &conf, &[])
        .expect_code(50, "STATUS, store unusable");
    assert!(e["msg"].as_str().unwrap().contains("store"), "{e}");
}

#[test]
fn cni_plugin_add_honours_requested_ip_and_mac() {
    if !privileged() {
        return;
    }
    let set = Namespaces::new("cpr", &["host", "a", "b", "c"]);
    let net = Net::new(&set.ns("host"), "req");
    // CNI_ARGS IP= (with IgnoreUnknown, as podman sends extra keys).
    let args = [("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.244.1.50")];
    let r = net
        .call_with("ADD", "ctr-a", &netns(&set, "a"), &net.conf(), &args)
        .expect_ok("ADD with IP=");
    assert_eq!(result_ip(&r), "10.244.1.50/24");
    assert_eq!(
        addr_of(&set.ns("a"), "eth0").as_deref(),
        Some("10.244.1.50/24")
    );

    // runtimeConfig ips and mac (podman's static IP and MAC).
    let mut conf = net.conf();
    conf["runtimeConfig"] = json!({ "ips": ["10.244.1.60/24"], "mac": "02:42:0a:f4:01:3c" });
    let r = net
        .call_with("ADD", "ctr-b", &netns(&set, "b"), &conf, &[])
        .expect_ok("ADD with runtimeConfig");
    assert_eq!(result_ip(&r), "10.244.1.60/24");
    let link =
        cnet_test_support::json_of("ip", &["-n", &set.ns("b"), "-j", "link", "show", "eth0"]);
    assert_eq!(link[0]["address"], "02:42:0a:f4:01:3c");
    assert_eq!(r["interfaces"][2]["mac"], "02:42:0a:f4:01:3c");
    net.check("ctr-b", &netns(&set, "b"), &r)
        .expect_ok("CHECK with a requested MAC");

    // An address someone holds: plugin code 104, the library's CNET_CONFLICT.
    let e = net
        .call_with("ADD", "ctr-c", &netns(&set, "c"), &net.conf(), &args)
        .expect_code(104, "ADD of a held address");
    assert_eq!(e["details"], "CNET_CONFLICT");
    assert_eq!(links_of(&set.ns("c")), ["lo"]);
    // Unknown CNI_ARGS without IgnoreUnknown: spec code 2.
    net.call_with(
        "ADD",
        "ctr-c",
        &netns(&set, "c"),
        &net.conf(),
        &[("CNI_ARGS", "FOO=1")],
    )
    .expect_code(2, "unknown CNI_ARGS");
    assert_eq!(net.allocations().len(), 2);
    for (id, ns) in [("ctr-a", "a"), ("ctr-b", "b")] {
        net.call("DEL", id, &netns(&set, ns)).expect_ok("DEL");
    }
    assert!(net.allocations().is_empty());
}

#[test]
fn cni_plugin_errors_are_spec_json_with_codes() {
    if !privileged() {
        return;
    }
    let set = Namespaces::new("cpe", &["host", "a"]);
    let net = Net::new(&set.ns("host"), "err");
    let a = netns(&set, "a");
    let host = set.ns("host");
    let raw =
        |env: &[(&str, &str)], stdin: &str| cni::exec_plugin(cni::plugin(), &host, env, stdin);
    raw(&[("CNI_COMMAND", "ADD")], "{not json").expect_code(6, "undecodable config");
    let mut old = net.conf();
    old["cniVersion"] = json!("0.3.1");
    net.call_with("ADD", "ctr-a", &a, &old, &[])
        .expect_code(1, "unsupported cniVersion");
    raw(&[("CNI_COMMAND", "ADD")], &net.conf().to_string()).expect_code(4, "no CNI_CONTAINERID");
    raw(&[("CNI_COMMAND", "FROB")], &net.conf().to_string()).expect_code(4, "unknown verb");
    let mut masq = net.conf();
    masq["ipMasq"] = json!("yes");
    net.call_with("ADD", "ctr-a", &a, &masq, &[])
        .expect_code(6, "ipMasq not a boolean");
    let mut no_subnet = net.conf();
    no_subnet.as_object_mut().unwrap().remove("subnet");
    net.call_with("ADD", "ctr-a", &a, &no_subnet, &[])
        .expect_code(7, "no subnet");
    // cnet after another interface-making plugin: refused, by design.
    let mut chained = net.conf();
    chained["prevResult"] =
        json!({ "cniVersion": "1.0.0", "interfaces": [{ "name": "eth0" }], "ips": [] });
    let e = net
        .call_with("ADD", "ctr-a", &a, &chained, &[])
        .expect_code(102, "cnet after bridge");
    assert!(e["msg"].as_str().unwrap().contains("first plugin"), "{e}");
    assert!(net.allocations().is_empty());
    assert_eq!(links_of(&set.ns("a")), ["lo"]);
    // A plugin before cnet that made no interface nor address: what it
    // said (DNS) passes through into cnet's result.
    let mut dns_only = net.conf();
    dns_only["prevResult"] =
        json!({ "cniVersion": "1.0.0", "dns": { "nameservers": ["192.0.2.53"] } });
    let r = net
        .call_with("ADD", "ctr-a", &a, &dns_only, &[])
        .expect_ok("ADD after a DNS-only plugin");
    assert_eq!(r["dns"]["nameservers"], json!(["192.0.2.53"]));
    assert_eq!(r["interfaces"][2]["name"], "eth0");
    net.call("DEL", "ctr-a", &a).expect_ok("DEL");
}

#[test]
fn cni_plugin_binary_needs_only_libc() {
    // ldd lists the loader, the vDSO and libc: libcnet is linked in.
    let out = cnet_test_support::run("ldd", &[cni::plugin().to_str().unwrap()]);
    let libs: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|l| !l.starts_with("linux-vdso") && !l.contains("ld-linux"))
        .collect();
    assert_eq!(libs, ["libc.so.6"], "{out}");
}

#[test]
fn cni_plugin_leases_its_node_subnet_from_the_cluster_network() {
    if !privileged() {
        return;
    }
    let set = Namespaces::new("cpl", &["host", "a", "b"]);
    let net = Net::new(&set.ns("host"), "lease");
    let mut conf = net.conf();
    let o = conf.as_object_mut().unwrap();
    o.remove("subnet");
    o.insert("clusterNetwork".into(), json!("10.244.0.0/16"));
    o.insert("node".into(), json!("node-a"));
    let ra = net
        .call_with("ADD", "ctr-a", &netns(&set, "a"), &conf, &[])
        .expect_ok("ADD a");
    let rb = net
        .call_with("ADD", "ctr-b", &netns(&set, "b"), &conf, &[])
        .expect_ok("ADD b");
    // Both from the one /24 the node leased (the same lease on every call).
    let net_of = |r: &Value| {
        let ip = result_ip(r);
        let p: cnet_core::IpNet = ip.parse().unwrap();
        assert_eq!(p.prefix_len(), 24, "{ip}");
        p.trunc()
    };
    assert_eq!(net_of(&ra), net_of(&rb));
    use cnet_core::ipam::LeaseStore;
    let leases = cnet_core::ipam::FileStore::open(net.store.path())
        .unwrap()
        .subnets(cnet_core::ipam::SubnetConfig::new(
            "10.244.0.0/16".parse().unwrap(),
        ))
        .unwrap()
        .list()
        .unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].node, "node-a");
    assert_eq!(leases[0].subnet, net_of(&ra));
    let ip_b = result_ip(&rb);
    assert!(cnet_test_support::ping_once(
        &set.ns("a"),
        ip_b.split('/').next().unwrap()
    ));
    for (id, ns) in [("ctr-a", "a"), ("ctr-b", "b")] {
        net.call_with("DEL", id, &netns(&set, ns), &conf, &[])
            .expect_ok("DEL");
    }
}

#[test]
fn cni_plugin_parallel_adds_on_a_fresh_node_all_succeed() {
    if !privileged() {
        return;
    }
    // A runtime starts containers at once: 8 processes race to make the
    // bridge and to allocate.
    let roles: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    let mut all: Vec<&str> = vec!["host"];
    all.extend(roles.iter().map(String::as_str));
    let set = Namespaces::new("cpp", &all);
    let net = Net::new(&set.ns("host"), "par");
    let results: Vec<Value> = std::thread::scope(|s| {
        let hs: Vec<_> = roles
            .iter()
            .map(|r| {
                let (net, ns) = (&net, netns(&set, r));
                s.spawn(move || net.add(&format!("ctr-{r}"), &ns))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<String> = results.iter().map(result_ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 8, "{ips:?}");
    assert_eq!(net.allocations().len(), 8);
    for r in &roles {
        assert!(addr_of(&set.ns(r), "eth0").is_some());
        net.call("DEL", &format!("ctr-{r}"), &netns(&set, r))
            .expect_ok("DEL");
    }
    assert!(net.allocations().is_empty());
}

/// `ipMasq: true`: a container reaches an "outside" namespace that has no
/// route back to the containers' subnet (a reply comes back only to a
/// masqueraded request); the rule is the network's, read back with
/// `nft -j`, and kept by DEL. Without `ipMasq` nothing is written.
#[test]
fn cni_plugin_ip_masq_lets_a_container_reach_the_outside_and_del_keeps_it() {
    if !privileged() {
        return;
    }
    let set = Namespaces::new("cpm", &["host", "a", "out"]);
    set.sh(&[
        "ip -n {host} link add mq-up type veth peer name mq-out netns {out}",
        "ip -n {host} addr add 203.0.113.1/24 dev mq-up",
        "ip -n {host} link set mq-up up",
        "ip -n {out} addr add 203.0.113.2/24 dev mq-out",
        "ip -n {out} link set mq-out up",
    ]);
    let net = Net::new(&set.ns("host"), "masq");
    let nat_rules = || -> Vec<String> {
        let v = cnet_test_support::json_of(
            "ip",
            &[
                "netns",
                "exec",
                &set.ns("host"),
                "nft",
                "-j",
                "list",
                "ruleset",
            ],
        );
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.get("rule"))
            .filter(|r| r["table"] == "cnet")
            .map(|r| r["comment"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    net.add("ctr-a", &netns(&set, "a"));
    assert!(nat_rules().is_empty(), "no ipMasq: nothing written");
    assert!(!cnet_test_support::ping_once(&set.ns("a"), "203.0.113.2"));
    net.call("DEL", "ctr-a", &netns(&set, "a")).expect_ok("DEL");

    let mut conf = net.conf();
    conf["ipMasq"] = json!(true);
    net.call_with("ADD", "ctr-a", &netns(&set, "a"), &conf, &[])
        .expect_ok("ADD with ipMasq");
    assert_eq!(
        nat_rules(),
        ["cnet cnet0: 10.244.1.0/24 -> not 10.244.1.0/24"]
    );
    assert!(
        cnet_test_support::ping_once(&set.ns("a"), "203.0.113.2"),
        "the outside answers the masqueraded ping"
    );
    net.call_with("DEL", "ctr-a", &netns(&set, "a"), &conf, &[])
        .expect_ok("DEL");
    assert_eq!(nat_rules().len(), 1, "the network's rule outlives a DEL");
}

/// DEL, GC and CHECK take the network as it is: after the bridge was
/// deleted (by hand, or a reboot's runtime cleaning up), DEL takes the
/// container off and releases its address without making the bridge
/// again, and CHECK reports the difference rather than repairing it.
#[test]
fn cni_plugin_del_gc_check_never_make_a_missing_bridge_again() {
    if !privileged() {
        return;
    }
    let set = Namespaces::new("cpb", &["host", "a", "b"]);
    let net = Net::new(&set.ns("host"), "nobr");
    let ra = net.add("ctr-a", &netns(&set, "a"));
    net.add("ctr-b", &netns(&set, "b"));
    set.sh(&["ip -n {host} link del cnet0"]);
    let check = net.check("ctr-a", &netns(&set, "a"), &ra);
    assert!(!check.ok, "CHECK must see the bridge gone");
    assert!(!links_of(&set.ns("host")).contains(&"cnet0".to_string()));
    net.call("DEL", "ctr-a", &netns(&set, "a"))
        .expect_ok("DEL a");
    let mut gc = net.conf();
    gc["cni.dev/valid-attachments"] = json!([]);
    net.call_with("GC", "", "", &gc, &[]).expect_ok("GC");
    assert!(net.allocations().is_empty(), "{:?}", net.allocations());
    assert_eq!(links_of(&set.ns("host")), ["lo"], "no bridge made again");
    assert_eq!(links_of(&set.ns("a")), ["lo"]);
}

/// The etcd store through the plugin: the node subnet leased from the
/// cluster network in etcd, containers' addresses in etcd (read back with
/// etcd's own API), etcd killed and restarted between two ADDs, the two
/// containers ping, DEL leaves no address key behind.
#[cfg(feature = "etcd")]
#[test]
fn cni_plugin_etcd_store_leases_the_subnet_and_survives_an_etcd_restart() {
    if !privileged() {
        return;
    }
    let set = Namespaces::new("cpe", &["host", "a", "b"]);
    // etcd in the namespace that plays the host, where the plugin runs.
    let Some(mut etcd) = common::etcd::Etcd::start_in(Some(&set.ns("host"))) else {
        return;
    };
    let net = Net::new(&set.ns("host"), "etcd");
    let mut conf = net.conf();
    let o = conf.as_object_mut().unwrap();
    o.remove("subnet");
    o.insert("clusterNetwork".into(), json!("10.244.0.0/16"));
    o.insert("node".into(), json!("node-e"));
    o.insert(
        "store".into(),
        json!({ "etcd": { "endpoints": ["http://127.0.0.1:2379"], "prefix": "/cnet" } }),
    );
    // The address keys under /cnet, as etcd lists them.
    let addr_keys = |etcd: &common::etcd::Etcd| -> Vec<String> {
        let b64 = |s: &str| {
            let o = std::process::Command::new("sh")
                .args(["-c", "printf %s \"$1\" | base64 -w0", "sh", s])
                .output()
                .unwrap();
            String::from_utf8(o.stdout).unwrap()
        };
        let body = json!({ "key": b64("/cnet/"), "range_end": b64("/cnet0"), "keys_only": true });
        let v: Value = serde_json::from_str(&etcd.curl("/v3/kv/range", &body.to_string())).unwrap();
        v["kvs"]
            .as_array()
            .map(|a| a.to_vec())
            .unwrap_or_default()
            .iter()
            .map(|kv| {
                let o = std::process::Command::new("sh")
                    .args([
                        "-c",
                        "printf %s \"$1\" | base64 -d",
                        "sh",
                        kv["key"].as_str().unwrap(),
                    ])
                    .output()
                    .unwrap();
                String::from_utf8(o.stdout).unwrap()
            })
            .filter(|k| k.contains("/ips/"))
            .collect()
    };
    let ra = net
        .call_with("ADD", "ctr-a", &netns(&set, "a"), &conf, &[])
        .expect_ok("ADD a");
    let ip_a = result_ip(&ra);
    assert!(ip_a.starts_with("10.244."), "{ip_a}");
    assert_eq!(addr_keys(&etcd).len(), 1, "{:?}", addr_keys(&etcd));
    etcd.restart();
    let rb = net
        .call_with("ADD", "ctr-b", &netns(&set, "b"), &conf, &[])
        .expect_ok("ADD b after an etcd restart");
    let ip_b = result_ip(&rb);
    let (net_a, net_b) = (
        ip_a.rsplit_once('.').unwrap().0.to_string(),
        ip_b.rsplit_once('.').unwrap().0.to_string(),
    );
    assert_eq!(net_a, net_b, "one node subnet for both: {ip_a} {ip_b}");
    assert!(cnet_test_support::ping_once(
        &set.ns("a"),
        ip_b.split('/').next().unwrap()
    ));
    assert_eq!(addr_keys(&etcd).len(), 2);
    for (id, ns) in [("ctr-a", "a"), ("ctr-b", "b")] {
        net.call_with("DEL", id, &netns(&set, ns), &conf, &[])
            .expect_ok("DEL");
    }
    assert!(addr_keys(&etcd).is_empty(), "{:?}", addr_keys(&etcd));
}
