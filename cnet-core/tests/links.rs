//! Links, read back with `ip -j -d link show` and compared field by field.

mod common;

use std::net::IpAddr;

use cnet_core::link::{Bridge, LinkDetails, LinkKind, MacAddr, MacVlan, MacVlanMode, Veth, Vxlan};
use cnet_core::{Error, NetNs};
use common::{privileged, TestNs};

#[test]
fn veth_peer_is_born_in_other_namespace_and_reads_back() {
    if !privileged() {
        return;
    }
    let host = TestNs::new("veth-h");
    let pod = TestNs::new("veth-p");
    let h = host.handle();
    let mac: MacAddr = "02:00:00:00:01:01".parse().unwrap();
    let pmac: MacAddr = "02:00:00:00:01:02".parse().unwrap();
    h.links()
        .add(
            Veth::new("veth-a", "eth0")
                .peer_netns(&pod.ns)
                .mtu(1450)
                .mac(mac)
                .peer_mac(pmac),
        )
        .unwrap();

    let mine = h.links().get("veth-a").unwrap();
    let j = host.link_json("veth-a");
    assert_eq!(j["ifname"], "veth-a");
    assert_eq!(j["ifindex"].as_u64().unwrap() as u32, mine.index);
    assert_eq!(j["mtu"], 1450);
    assert_eq!(j["address"], "02:00:00:00:01:01");
    assert_eq!(j["linkinfo"]["info_kind"], "veth");
    assert_eq!(mine.kind, LinkKind::Veth);
    assert_eq!(mine.mac, Some(mac));
    assert_eq!(mine.mtu, 1450);
    assert!(
        mine.link_netnsid.is_some(),
        "peer lives in another namespace"
    );

    // The peer exists only in the pod namespace, and its index is our link.
    assert!(host
        .ip_json(&["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["ifname"] != "eth0"));
    let peer = pod.link_json("eth0");
    assert_eq!(peer["mtu"], 1450);
    assert_eq!(peer["address"], "02:00:00:00:01:02");
    let peer_lib = pod.handle().links().get("eth0").unwrap();
    assert_eq!(mine.link, Some(peer_lib.index));
    assert_eq!(peer_lib.link, Some(mine.index));
}

#[test]
fn bridge_reads_back_and_veth_becomes_its_port() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("br");
    let h = t.handle();
    h.links()
        .add(
            Bridge::new("br0")
                .mtu(1400)
                .stp(false)
                .ageing_time(20000)
                .up(),
        )
        .unwrap();
    h.links().add(Veth::new("v0", "v0p").mtu(1400)).unwrap();
    h.links().set_master("v0", "br0").unwrap();
    let j = t.link_json("br0");
    assert_eq!(j["linkinfo"]["info_kind"], "bridge");
    assert_eq!(j["mtu"], 1400);
    assert_eq!(j["linkinfo"]["info_data"]["stp_state"], 0);
    assert_eq!(j["linkinfo"]["info_data"]["ageing_time"], 20000);
    let cnet_core::link::LinkDetails::Bridge(b) = h.links().get("br0").unwrap().details else {
        panic!()
    };
    assert_eq!((b.stp_state, b.ageing_time), (Some(0), Some(20000)));
    assert!(j["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    let port = t.link_json("v0");
    assert_eq!(port["master"], "br0");
    let lib = h.links().get("v0").unwrap();
    assert_eq!(lib.master, Some(h.links().index_of("br0").unwrap()));

    h.links().set_nomaster("v0").unwrap();
    assert!(t.link_json("v0").get("master").is_none());
    assert_eq!(h.links().get("v0").unwrap().master, None);
}

#[test]
fn vxlan_parameters_read_back() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("vx");
    let h = t.handle();
    h.links().add(Veth::new("under0", "under0p")).unwrap();
    h.addrs()
        .add("under0", "192.0.2.1/24".parse().unwrap())
        .unwrap();
    let local: IpAddr = "192.0.2.1".parse().unwrap();
    h.links()
        .add(
            Vxlan::new("vx0", 4242)
                .port(8472)
                .local(local)
                .dev("under0")
                .learning(false)
                .ttl(17)
                .udp_csum(true)
                .mtu(1450),
        )
        .unwrap();
    let j = t.link_json("vx0");
    let d = &j["linkinfo"]["info_data"];
    assert_eq!(j["linkinfo"]["info_kind"], "vxlan");
    assert_eq!(d["id"], 4242);
    assert_eq!(d["port"], 8472);
    assert_eq!(d["local"], "192.0.2.1");
    assert_eq!(d["link"], "under0");
    assert_eq!(d["learning"], false);
    assert_eq!(d["ttl"], 17);
    assert_eq!(d["udp_csum"], true);
    assert_eq!(j["mtu"], 1450);

    let l = h.links().get("vx0").unwrap();
    let cnet_core::link::LinkDetails::Vxlan(v) = &l.details else {
        panic!("{l:?}")
    };
    assert_eq!(v.vni, Some(4242));
    assert_eq!(v.port, Some(8472));
    assert_eq!(v.local, Some(local));
    assert_eq!(v.link, Some(h.links().index_of("under0").unwrap()));
    assert_eq!(v.learning, Some(false));
    assert_eq!(v.ttl, Some(17));
    assert_eq!(v.udp_csum, Some(true));
}

#[test]
fn change_up_down_mtu_mac_rename_and_move() {
    if !privileged() {
        return;
    }
    let a = TestNs::new("chg-a");
    let b = TestNs::new("chg-b");
    let h = a.handle();
    h.links().add(Veth::new("c0", "c0p")).unwrap();
    h.links().set_up("c0").unwrap();
    h.links().set_up("c0p").unwrap();
    assert!(h.links().get("c0").unwrap().is_up());
    assert!(a.link_json("c0")["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "UP"));
    h.links().set_down("c0").unwrap();
    assert!(!h.links().get("c0").unwrap().is_up());
    assert_eq!(a.link_json("c0")["operstate"], "DOWN");

    h.links().set_mtu("c0", 9000).unwrap();
    assert_eq!(a.link_json("c0")["mtu"], 9000);
    let mac: MacAddr = "02:aa:bb:cc:dd:ee".parse().unwrap();
    h.links().set_mac("c0", mac).unwrap();
    assert_eq!(a.link_json("c0")["address"], "02:aa:bb:cc:dd:ee");

    h.links().rename("c0", "renamed0").unwrap();
    assert!(h.links().find("c0").unwrap().is_none());
    assert_eq!(a.link_json("renamed0")["mtu"], 9000);

    h.links().set_netns("renamed0", &b.ns).unwrap();
    assert!(h.links().find("renamed0").unwrap().is_none());
    assert_eq!(b.link_json("renamed0")["address"], "02:aa:bb:cc:dd:ee");
}

#[test]
fn delete_and_delete_if_exists() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("del");
    let h = t.handle();
    h.links().add(Bridge::new("brd")).unwrap();
    h.links().delete("brd").unwrap();
    assert!(t
        .ip_json(&["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["ifname"] != "brd"));
    let e = h.links().delete("brd").unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert!(!h.links().delete_if_exists("brd").unwrap());
    h.links().add(Bridge::new("brd")).unwrap();
    assert!(h.links().delete_if_exists("brd").unwrap());
}

#[test]
fn ensure_creates_accepts_compatible_and_names_differences() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("ens");
    let h = t.handle();
    h.links().add(Veth::new("u0", "u0p")).unwrap();
    let spec = Vxlan::new("vx1", 7)
        .port(8472)
        .dev("u0")
        .learning(false)
        .mtu(1450);
    let first = h.links().ensure(&spec).unwrap();
    let again = h.links().ensure(&spec).unwrap();
    assert_eq!(first.index, again.index, "ensure is idempotent");
    assert_eq!(t.link_json("vx1")["linkinfo"]["info_data"]["id"], 7);

    let e = h
        .links()
        .ensure(Vxlan::new("vx1", 8).port(4789).mtu(1450))
        .unwrap_err();
    let Error::Mismatch { differences, .. } = &e else {
        panic!("{e:?}")
    };
    assert!(
        differences.contains(&"vni: have 7, want 8".to_string()),
        "{differences:?}"
    );
    assert!(
        differences.contains(&"port: have 8472, want 4789".to_string()),
        "{differences:?}"
    );
    assert_eq!(differences.len(), 2, "{differences:?}");

    let e = h.links().ensure(Bridge::new("vx1")).unwrap_err();
    assert!(
        e.to_string().contains("kind: have vxlan, want bridge"),
        "{e}"
    );
}

#[test]
fn add_existing_is_already_exists() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("exist");
    let h = t.handle();
    h.links().add(Bridge::new("b1")).unwrap();
    let e = h.links().add(Bridge::new("b1")).unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
    assert!(e.to_string().contains("b1"), "{e}");
}

#[test]
fn failed_veth_leaves_nothing_behind() {
    if !privileged() {
        return;
    }
    let host = TestNs::new("vfail-h");
    let pod = TestNs::new("vfail-p");
    // The peer name is taken inside the pod: the request must fail whole.
    pod.ip(&["link", "add", "eth0", "type", "bridge"]);
    let h = host.handle();
    let e = h
        .links()
        .add(Veth::new("vf0", "eth0").peer_netns(&pod.ns))
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
    // The message names the peer and its namespace, not the free host end.
    let text = e.to_string();
    assert!(
        text.contains("peer's name eth0 is taken in namespace")
            && text.contains(&pod.name)
            && text.contains("vf0 is free"),
        "{text}"
    );
    assert!(
        h.links().find("vf0").unwrap().is_none(),
        "host end must not exist"
    );
    // A taken host-end name stays reported as such.
    host.ip(&["link", "add", "vf1", "type", "bridge"]);
    let e = h
        .links()
        .add(Veth::new("vf1", "eth1").peer_netns(&pod.ns))
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
    assert!(!e.to_string().contains("peer"), "{e}");
    assert!(pod.handle().links().find("eth1").unwrap().is_none());
    assert_eq!(pod.link_json("eth0")["linkinfo"]["info_kind"], "bridge");
}

#[test]
fn bad_input_is_refused_before_sending() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("bad");
    let h = t.handle();
    let cases: Vec<(&str, Error)> = vec![
        ("empty name", h.links().add(Bridge::new("")).unwrap_err()),
        (
            "16 bytes",
            h.links().add(Bridge::new("abcdefghijklmnop")).unwrap_err(),
        ),
        ("slash", h.links().add(Bridge::new("a/b")).unwrap_err()),
        ("space", h.links().add(Bridge::new("a b")).unwrap_err()),
        (
            "mtu low",
            h.links().add(Bridge::new("b").mtu(10)).unwrap_err(),
        ),
        (
            "mtu high",
            h.links().add(Bridge::new("b").mtu(70000)).unwrap_err(),
        ),
        ("vni", h.links().add(Vxlan::new("vx", 1 << 24)).unwrap_err()),
        (
            "bad peer",
            h.links().add(Veth::new("ok0", "bad peer")).unwrap_err(),
        ),
        (
            "multicast mac",
            h.links()
                .add(Bridge::new("b").mac(MacAddr([1, 0, 0x5e, 0, 0, 1])))
                .unwrap_err(),
        ),
        ("mtu set", h.links().set_mtu("lo", 1).unwrap_err()),
    ];
    for (what, e) in cases {
        assert!(matches!(e, Error::InvalidArgument { .. }), "{what}: {e:?}");
    }
    assert!("02:00:00:00:00".parse::<MacAddr>().is_err());
    // Nothing was created by any of them.
    let links = t.ip_json(&["link", "show"]);
    assert_eq!(links.as_array().unwrap().len(), 1, "only lo: {links}");
}

#[test]
fn missing_links_and_namespaces_are_not_found() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("miss");
    let h = t.handle();
    for e in [
        h.links().get("nope0").unwrap_err(),
        h.links().set_up("nope0").unwrap_err(),
        h.links().set_master("lo", "nope0").unwrap_err(),
        h.addrs()
            .add("nope0", "10.244.1.2/24".parse().unwrap())
            .unwrap_err(),
        h.links()
            .add(Vxlan::new("vx2", 1).dev("nope0"))
            .unwrap_err(),
        NetNs::open("cn-does-not-exist").unwrap_err(),
        NetNs::open_path("/proc/999999999/ns/net").unwrap_err(),
    ] {
        assert!(e.is_not_found(), "{e:?}");
        assert!(!e.to_string().is_empty());
    }
    assert!(h.links().find("nope0").unwrap().is_none());
}

/// A link dump while two other threads add and delete links as fast as
/// they can: the kernel marks many attempts interrupted
/// (`NLM_F_DUMP_INTR`); the dump waits with jittered backoff, tries again,
/// and returns every stable link. (Before: 8 immediate retries, `Busy`.)
#[test]
fn link_dump_succeeds_under_steady_churn() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    if !privileged() {
        return;
    }
    const STABLE: usize = 400;
    let t = TestNs::new("churn");
    let h = t.handle();
    // Enough links that a dump spans many datagrams (one ~32 KiB chunk
    // holds about twenty veths), so concurrent changes often interrupt it.
    for i in 0..STABLE {
        h.links()
            .add(Veth::new(&format!("st{i}a"), &format!("st{i}b")))
            .unwrap();
    }
    // Stops the churn threads on every exit path (a failed assertion too).
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop = Stop(Arc::new(AtomicBool::new(false)));
    let changes = Arc::new(AtomicUsize::new(0));
    let churners: Vec<_> = (0..2)
        .map(|k| {
            let (stop, changes, ns) = (stop.0.clone(), changes.clone(), t.ns.clone());
            std::thread::spawn(move || {
                let h = cnet_core::Handle::at(&ns).expect("churn handle");
                let (a, b) = (format!("churn{k}a"), format!("churn{k}b"));
                while !stop.load(Ordering::Relaxed) {
                    h.links().add(Veth::new(&a, &b)).expect("churn add");
                    h.links().delete(&a).expect("churn delete");
                    changes.fetch_add(2, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut dumps = 0;
    while dumps < 20 {
        assert!(
            churners.iter().all(|c| !c.is_finished()),
            "a churn thread stopped"
        );
        let before = changes.load(Ordering::Relaxed);
        let links = h
            .links()
            .list()
            .unwrap_or_else(|e| panic!("dump {dumps}: {e}"));
        let stable = links.iter().filter(|l| l.name.starts_with("st")).count();
        assert_eq!(stable, 2 * STABLE, "dump {dumps} lost stable links");
        // Count only dumps during which the churn threads changed links.
        if changes.load(Ordering::Relaxed) != before {
            dumps += 1;
        }
    }
    drop(stop);
    for c in churners {
        c.join().expect("churn thread");
    }
}

/// `master("lo")`, or a veth as master: the kernel's EOPNOTSUPP would read
/// "not supported by this kernel"; the error says the master is not a
/// bridge, and the failed create leaves nothing.
#[test]
fn master_that_is_not_a_bridge_is_an_invalid_argument() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("nomaster");
    let h = t.handle();
    let e = h
        .links()
        .add(Veth::new("vm0", "vm0p").master("lo"))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("master lo is the loopback device, not a bridge"),
        "{text}"
    );
    assert!(!text.contains("not supported by this kernel"), "{text}");
    assert!(
        h.links().find("vm0").unwrap().is_none(),
        "nothing half-made"
    );
    assert!(t
        .ip_json(&["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["ifname"] != "vm0p"));

    // The same through `ip link set DEV master`, with a veth as master.
    h.links().add(Veth::new("vm1", "vm1p")).unwrap();
    h.links().add(Veth::new("vm2", "vm2p")).unwrap();
    let e = h.links().set_master("vm1", "vm2").unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("master vm2 is a veth device, not a bridge"),
        "{e}"
    );
    assert!(t.link_json("vm1").get("master").is_none());
    // A bridge still works.
    h.links().add(Bridge::new("br0")).unwrap();
    h.links().set_master("vm1", "br0").unwrap();
    assert_eq!(t.link_json("vm1")["master"], "br0");
}

/// `ip -j -s link show dev DEV`'s counters: (rx, tx) of packets, bytes,
/// dropped, errors.
fn ip_stats(t: &TestNs, dev: &str) -> [u64; 8] {
    let j = t.ip_json(&["-s", "link", "show", "dev", dev]);
    let s = &j[0]["stats64"];
    let n = |dir: &str, k: &str| {
        s[dir][k]
            .as_u64()
            .unwrap_or_else(|| panic!("no {dir}.{k} in {j}"))
    };
    [
        n("rx", "packets"),
        n("tx", "packets"),
        n("rx", "bytes"),
        n("tx", "bytes"),
        n("rx", "dropped"),
        n("tx", "dropped"),
        n("rx", "errors"),
        n("tx", "errors"),
    ]
}

#[test]
fn link_stats_match_ip_after_real_traffic() {
    if !privileged() {
        return;
    }
    let a = TestNs::new("sta");
    let b = TestNs::new("stb");
    // No IPv6: no router solicitations or MLD reports moving the counters.
    for t in [&a, &b] {
        t.handle()
            .sysctl()
            .set("net.ipv6.conf.all.disable_ipv6", "1")
            .unwrap();
    }
    let ha = a.handle();
    ha.links()
        .add(Veth::new("v0", "v0").peer_netns(&b.ns).up().peer_up())
        .unwrap();
    ha.addrs()
        .add("v0", "192.0.2.1/24".parse().unwrap())
        .unwrap();
    b.handle()
        .addrs()
        .add("v0", "192.0.2.2/24".parse().unwrap())
        .unwrap();
    let zero = ha.links().get("v0").unwrap().stats.expect("stats");
    assert!(
        a.exec_ok(&["ping", "-c", "5", "-i", "0.01", "-s", "1000", "192.0.2.2"]),
        "ping"
    );
    // Counters only grow: what the library read lies between two `ip`
    // readings taken around it.
    let before = ip_stats(&a, "v0");
    let l = ha.links().get("v0").unwrap();
    let listed = ha.links().list().unwrap();
    let after = ip_stats(&a, "v0");
    let s = l.stats.expect("stats in a get");
    let got = [
        s.rx_packets,
        s.tx_packets,
        s.rx_bytes,
        s.tx_bytes,
        s.rx_dropped,
        s.tx_dropped,
        s.rx_errors,
        s.tx_errors,
    ];
    for i in 0..8 {
        assert!(
            before[i] <= got[i] && got[i] <= after[i],
            "counter {i}: ip {} ≤ cnet {} ≤ ip {}",
            before[i],
            got[i],
            after[i]
        );
    }
    assert!(s.tx_packets >= zero.tx_packets + 5, "{zero:?} → {s:?}");
    assert!(s.rx_packets >= 5, "{s:?}");
    assert!(s.tx_bytes >= 5 * 1028, "five 1000-byte echoes: {s:?}");
    let in_list = listed.iter().find(|x| x.name == "v0").unwrap();
    assert!(in_list.stats.is_some_and(|x| x.tx_packets >= 5));

    // Drops: with the peer down, what v0 sends is dropped by the veth.
    let dropped = s.tx_dropped;
    b.handle().links().set_down("v0").unwrap();
    a.exec_ok(&["ping", "-c", "3", "-i", "0.01", "-W", "1", "192.0.2.2"]);
    let before = ip_stats(&a, "v0");
    let s = ha.links().get("v0").unwrap().stats.unwrap();
    let after = ip_stats(&a, "v0");
    assert!(before[5] <= s.tx_dropped && s.tx_dropped <= after[5]);
    assert!(s.tx_dropped > dropped, "{dropped} → {s:?}");
}

/// Two macvlans in bridge mode on one parent (a veth in a "host"
/// namespace), moved into two namespaces: they ping each other.
#[test]
fn macvlan_bridge_mode_pair_reads_back_and_pings() {
    if !privileged() {
        return;
    }
    let host = TestNs::new("mvh");
    let a = TestNs::new("mva");
    let b = TestNs::new("mvb");
    let h = host.handle();
    h.links()
        .add(Veth::new("par0", "par0p").up().peer_up())
        .unwrap();
    let mac: MacAddr = "02:00:00:00:0a:01".parse().unwrap();
    h.links()
        .add(
            MacVlan::new("mv-a", "par0")
                .mode(MacVlanMode::Bridge)
                .mac(mac)
                .mtu(1400),
        )
        .unwrap();
    h.links()
        .add(MacVlan::new("mv-b", "par0").mode(MacVlanMode::Bridge))
        .unwrap();
    let j = host.link_json("mv-a");
    assert_eq!(j["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(j["linkinfo"]["info_data"]["mode"], "bridge");
    assert_eq!(j["link"], "par0");
    assert_eq!(j["address"], "02:00:00:00:0a:01");
    assert_eq!(j["mtu"], 1400);
    let l = h.links().get("mv-a").unwrap();
    let par = h.links().get("par0").unwrap();
    assert_eq!(l.kind, LinkKind::MacVlan);
    assert_eq!(l.link, Some(par.index));
    assert_eq!(l.mac, Some(mac));
    let LinkDetails::MacVlan(d) = &l.details else {
        panic!("{l:?}")
    };
    assert_eq!(d.mode, Some(MacVlanMode::Bridge));
    // ensure: compatible passes; another mode or parent is named.
    h.links()
        .ensure(MacVlan::new("mv-a", "par0").mode(MacVlanMode::Bridge))
        .unwrap();
    let e = h
        .links()
        .ensure(MacVlan::new("mv-a", "par0p").mode(MacVlanMode::Vepa))
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("mode: have bridge, want vepa"), "{text}");
    assert!(text.contains("parent: have"), "{text}");
    // A parent that does not exist: NotFound naming it, nothing made.
    let e = h.links().add(MacVlan::new("mv-c", "nope0")).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(h.links().find("mv-c").unwrap().is_none());

    for (dev, t, addr) in [("mv-a", &a, "10.244.1.2/24"), ("mv-b", &b, "10.244.1.3/24")] {
        h.links().set_netns(dev, &t.ns).unwrap();
        let th = t.handle();
        th.links().set_up(dev).unwrap();
        th.addrs().add(dev, addr.parse().unwrap()).unwrap();
    }
    assert!(a.ping("10.244.1.3"), "macvlan a → b");
    assert!(b.ping("10.244.1.2"), "macvlan b → a");
    let s = a.handle().links().get("mv-a").unwrap().stats.unwrap();
    assert!(s.tx_packets >= 2 && s.rx_packets >= 2, "{s:?}");
}
