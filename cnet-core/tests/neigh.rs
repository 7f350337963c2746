//! Neighbours and FDB entries, read back with `ip -j neigh` and
//! `bridge -j fdb show`.

mod common;

use std::net::IpAddr;

use cnet_core::fdb::FdbEntry;
use cnet_core::link::{MacAddr, Veth, Vxlan};
use cnet_core::neigh::{NeighState, Neighbour};
use cnet_core::route::Family;
use cnet_core::Error;
use common::{privileged, TestNs};
use serde_json::Value;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn neigh_of(t: &TestNs, dst: &str) -> Option<Value> {
    t.ip_json(&["neigh", "show", "dev", "v0"])
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["dst"] == dst)
        .cloned()
}

#[test]
fn neighbours_add_replace_delete_and_list_states() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("nb");
    let h = t.handle();
    h.links()
        .add(Veth::new("v0", "v0p").up().peer_up())
        .unwrap();
    h.addrs()
        .add("v0", "192.0.2.1/24".parse().unwrap())
        .unwrap();
    let n = h.neighbours();
    n.add(Neighbour::new(
        "v0",
        ip("192.0.2.12"),
        mac("02:00:00:00:00:12"),
    ))
    .unwrap();
    n.add(
        Neighbour::new("v0", ip("192.0.2.13"), mac("02:00:00:00:00:13")).state(NeighState::Stale),
    )
    .unwrap();
    n.add(Neighbour::new("v0", ip("2001:db8::12"), mac("02:00:00:00:00:14")).router())
        .unwrap();
    let e = n
        .add(Neighbour::new(
            "v0",
            ip("192.0.2.12"),
            mac("02:00:00:00:00:99"),
        ))
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");

    let j = neigh_of(&t, "192.0.2.12").unwrap();
    assert_eq!(j["lladdr"], "02:00:00:00:00:12");
    assert_eq!(j["state"][0], "PERMANENT");
    assert_eq!(neigh_of(&t, "192.0.2.13").unwrap()["state"][0], "STALE");
    let j6 = &t.ip_json(&["-6", "neigh", "show", "dev", "v0"])[0];
    assert!(j6.get("router").is_some(), "{j6}");

    let all = n.list(Some("v0"), None).unwrap();
    let get = |a: &str| all.iter().find(|e| e.ip == ip(a)).cloned().unwrap();
    assert_eq!(get("192.0.2.12").state, NeighState::Permanent);
    assert_eq!(get("192.0.2.12").mac, Some(mac("02:00:00:00:00:12")));
    assert_eq!(get("192.0.2.13").state, NeighState::Stale);
    assert!(get("2001:db8::12").router);
    let v6 = n.list(Some("v0"), Some(Family::V6)).unwrap();
    assert!(v6.iter().all(|e| e.ip.is_ipv6()) && v6.iter().any(|e| e.router));
    assert!(n
        .list(Some("v0p"), None)
        .unwrap()
        .iter()
        .all(|e| e.ip != ip("192.0.2.12")));

    // A failed resolution shows as incomplete/failed in the read model.
    let _ = t.exec_ok(&["ping", "-c", "1", "-W", "1", "192.0.2.77"]);
    let states: Vec<_> = n
        .list(Some("v0"), Some(Family::V4))
        .unwrap()
        .into_iter()
        .filter(|e| e.ip == ip("192.0.2.77"))
        .map(|e| e.state)
        .collect();
    assert!(
        states
            .iter()
            .all(|s| matches!(s, NeighState::Incomplete | NeighState::Failed)),
        "{states:?}"
    );

    n.replace(Neighbour::new(
        "v0",
        ip("192.0.2.12"),
        mac("02:00:00:00:00:99"),
    ))
    .unwrap();
    assert_eq!(
        neigh_of(&t, "192.0.2.12").unwrap()["lladdr"],
        "02:00:00:00:00:99"
    );
    n.delete(Neighbour::without_mac("v0", ip("192.0.2.12")))
        .unwrap();
    assert!(neigh_of(&t, "192.0.2.12").is_none());
    assert!(n
        .delete(Neighbour::without_mac("v0", ip("192.0.2.12")))
        .unwrap_err()
        .is_not_found());
    let e = n
        .add(Neighbour::new(
            "nope0",
            ip("192.0.2.12"),
            mac("02:00:00:00:00:12"),
        ))
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[test]
fn neighbour_reconcile_adds_fixes_and_removes_only_permanent_entries() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("nbr");
    let h = t.handle();
    h.links()
        .add(Veth::new("v0", "v0p").up().peer_up())
        .unwrap();
    h.addrs()
        .add("v0", "192.0.2.1/24".parse().unwrap())
        .unwrap();
    let want: Vec<Neighbour> = (10..20)
        .map(|i| {
            Neighbour::new(
                "v0",
                ip(&format!("192.0.2.{i}")),
                mac(&format!("02:00:00:00:00:{i}")),
            )
        })
        .collect();
    let n = h.neighbours();
    let rep = n.reconcile("v0", &want).unwrap();
    assert_eq!(rep.added, 10, "{rep:?}");
    assert!(n.reconcile("v0", &want).unwrap().is_noop());
    // Drift: one edited, one deleted, one extra permanent, one learnt (stale).
    t.ip(&[
        "neigh",
        "replace",
        "192.0.2.10",
        "lladdr",
        "02:00:00:00:00:77",
        "dev",
        "v0",
        "nud",
        "permanent",
    ]);
    t.ip(&["neigh", "del", "192.0.2.11", "dev", "v0"]);
    t.ip(&[
        "neigh",
        "add",
        "192.0.2.99",
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "v0",
        "nud",
        "permanent",
    ]);
    t.ip(&[
        "neigh",
        "add",
        "192.0.2.98",
        "lladdr",
        "02:00:00:00:00:98",
        "dev",
        "v0",
        "nud",
        "stale",
    ]);
    let rep = n.reconcile("v0", &want).unwrap();
    assert_eq!((rep.added, rep.replaced, rep.deleted), (1, 1, 1), "{rep:?}");
    assert_eq!(
        neigh_of(&t, "192.0.2.10").unwrap()["lladdr"],
        "02:00:00:00:00:10"
    );
    assert!(neigh_of(&t, "192.0.2.11").is_some());
    assert!(neigh_of(&t, "192.0.2.99").is_none());
    assert!(
        neigh_of(&t, "192.0.2.98").is_some(),
        "learnt entries are not ours"
    );
    assert!(n.reconcile("v0", &want).unwrap().is_noop());
}

fn vxlan_host(tag: &str) -> TestNs {
    let t = TestNs::new(tag);
    let h = t.handle();
    h.links()
        .add(Veth::new("ul0", "ul0p").up().peer_up())
        .unwrap();
    h.addrs()
        .add("ul0", "192.0.2.11/24".parse().unwrap())
        .unwrap();
    h.links()
        .add(
            Vxlan::new("vx0", 1)
                .port(8472)
                .local(ip("192.0.2.11"))
                .dev("ul0")
                .learning(false)
                .up(),
        )
        .unwrap();
    t
}

fn fdb_json(t: &TestNs) -> Vec<Value> {
    t.bridge_json(&["fdb", "show", "dev", "vx0"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["dst"].is_string())
        .cloned()
        .collect()
}

#[test]
fn fdb_append_replace_delete_on_vxlan() {
    if !privileged() {
        return;
    }
    let t = vxlan_host("fdb");
    let h = t.handle();
    let f = h.fdb();
    let zero = mac("00:00:00:00:00:00");
    f.append(FdbEntry::new(zero, "vx0").dst(ip("192.0.2.12")))
        .unwrap();
    f.append(FdbEntry::new(zero, "vx0").dst(ip("192.0.2.13")))
        .unwrap();
    f.append(
        FdbEntry::new(mac("02:00:00:00:00:12"), "vx0")
            .dst(ip("192.0.2.12"))
            .vni(2)
            .port(4789),
    )
    .unwrap();
    let j = fdb_json(&t);
    assert_eq!(j.len(), 3, "{j:?}");
    let e = j.iter().find(|e| e["mac"] == "02:00:00:00:00:12").unwrap();
    assert_eq!(e["dst"], "192.0.2.12");
    assert_eq!(e["vni"], 2);
    assert_eq!(e["port"], 4789);
    assert!(e["flags"].as_array().unwrap().iter().any(|f| f == "self"));
    assert_eq!(e["state"], "permanent");

    let mine = f.list("vx0").unwrap();
    let m = mine
        .iter()
        .find(|r| r.mac == mac("02:00:00:00:00:12"))
        .unwrap();
    assert_eq!(
        (m.dst, m.vni, m.port, m.on_self),
        (Some(ip("192.0.2.12")), Some(2), Some(4789), true)
    );
    assert_eq!(mine.iter().filter(|r| r.mac == zero).count(), 2);

    f.replace(FdbEntry::new(mac("02:00:00:00:00:12"), "vx0").dst(ip("192.0.2.14")))
        .unwrap();
    let j = fdb_json(&t);
    assert_eq!(
        j.iter().find(|e| e["mac"] == "02:00:00:00:00:12").unwrap()["dst"],
        "192.0.2.14"
    );
    f.delete(FdbEntry::new(zero, "vx0").dst(ip("192.0.2.13")))
        .unwrap();
    assert_eq!(fdb_json(&t).len(), 2);
    let e = f
        .delete(FdbEntry::new(mac("02:00:00:00:00:55"), "vx0").dst(ip("192.0.2.13")))
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let e = f
        .append(FdbEntry::new(zero, "vx0").vni(1 << 24))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
}

#[test]
fn fdb_reconcile_repairs_drift_of_remote_entries() {
    if !privileged() {
        return;
    }
    let t = vxlan_host("fdbr");
    let h = t.handle();
    let zero = mac("00:00:00:00:00:00");
    let want = vec![
        FdbEntry::new(zero, "vx0").dst(ip("192.0.2.12")),
        FdbEntry::new(zero, "vx0").dst(ip("192.0.2.13")),
        FdbEntry::new(mac("02:00:00:00:00:12"), "vx0")
            .dst(ip("192.0.2.12"))
            .vni(1),
    ];
    let rep = h.fdb().reconcile("vx0", &want).unwrap();
    assert_eq!(rep.added, 3, "{rep:?}");
    assert!(h.fdb().reconcile("vx0", &want).unwrap().is_noop());
    t.run_bridge(&[
        "fdb",
        "del",
        "00:00:00:00:00:00",
        "dev",
        "vx0",
        "dst",
        "192.0.2.13",
    ]);
    t.run_bridge(&[
        "fdb",
        "append",
        "00:00:00:00:00:00",
        "dev",
        "vx0",
        "dst",
        "192.0.2.99",
    ]);
    t.run_bridge(&[
        "fdb",
        "replace",
        "02:00:00:00:00:12",
        "dev",
        "vx0",
        "dst",
        "192.0.2.12",
        "vni",
        "7",
    ]);
    let rep = h.fdb().reconcile("vx0", &want).unwrap();
    assert_eq!((rep.added, rep.replaced, rep.deleted), (1, 1, 1), "{rep:?}");
    assert!(rep.is_ok(), "{rep:?}");
    let j = fdb_json(&t);
    assert_eq!(j.len(), 3, "{j:?}");
    assert!(j.iter().all(|e| e["dst"] != "192.0.2.99"));
    // VNI 1 is the device's own, so neither the kernel nor bridge lists it.
    assert!(j.iter().find(|e| e["mac"] == "02:00:00:00:00:12").unwrap()["vni"].is_null());
    assert!(h.fdb().reconcile("vx0", &want).unwrap().is_noop());
}

#[test]
fn bridge_fdb_lists_learnt_entries_of_all_ports_like_bridge_fdb_show_br() {
    if !privileged() {
        return;
    }
    let host = TestNs::new("fdbbr-h");
    let a = TestNs::new("fdbbr-a");
    let b = TestNs::new("fdbbr-b");
    let h = host.handle();
    h.links()
        .add(cnet_core::link::Bridge::new("br0").up())
        .unwrap();
    for (port, t, addr) in [("pa", &a, "203.0.113.1/24"), ("pb", &b, "203.0.113.2/24")] {
        h.links()
            .add(
                Veth::new(port, "eth0")
                    .peer_netns(&t.ns)
                    .master("br0")
                    .up()
                    .peer_up(),
            )
            .unwrap();
        t.handle()
            .addrs()
            .add("eth0", addr.parse().unwrap())
            .unwrap();
    }
    // Traffic makes the bridge learn both containers' MACs.
    assert!(a.ping("203.0.113.2"));
    let mac_a = a.handle().links().get("eth0").unwrap().mac.unwrap();
    let mac_b = b.handle().links().get("eth0").unwrap().mac.unwrap();

    let lib = h.fdb().list_bridge("br0").unwrap();
    let port_of = |m: MacAddr| {
        lib.iter()
            .find(|e| e.mac == m)
            .map(|e| h.links().get_by_index(e.index).unwrap().name)
    };
    assert_eq!(port_of(mac_a).as_deref(), Some("pa"));
    assert_eq!(port_of(mac_b).as_deref(), Some("pb"));
    // Same unicast (MAC, port) set as the independent reader (which also
    // prints the ports' own multicast addresses).
    let mut want: Vec<(String, String)> = host
        .bridge_json(&["fdb", "show", "br", "br0"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ifname"] != "br0")
        .filter(|e| mac(e["mac"].as_str().unwrap()).is_valid_unicast())
        .map(|e| {
            (
                e["mac"].as_str().unwrap().to_string(),
                e["ifname"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut got: Vec<(String, String)> = lib
        .iter()
        .map(|e| {
            (
                e.mac.to_string(),
                h.links().get_by_index(e.index).unwrap().name,
            )
        })
        .filter(|(_, dev)| dev != "br0")
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert!(h.fdb().list_bridge("nope0").unwrap_err().is_not_found());
}

/// Neighbour and FDB reconciles with one bad item each: the good items
/// are applied (read back with `ip neigh` / `bridge fdb`), the bad one is
/// in the report, and the merged report's `into_result` is
/// `Error::Partial` listing both.
#[test]
fn neighbour_and_fdb_reconcile_partial_failures_are_errors() {
    if !privileged() {
        return;
    }
    let t = vxlan_host("nfp");
    let h = t.handle();
    let neigh = vec![
        Neighbour::new("vx0", ip("10.244.2.0"), mac("02:00:00:00:02:01")),
        // No MAC: a permanent entry needs one.
        Neighbour::without_mac("vx0", ip("10.244.3.0")),
    ];
    let mut rep = h.neighbours().reconcile("vx0", &neigh).unwrap();
    assert_eq!((rep.added, rep.errors.len()), (1, 1), "{rep:?}");
    assert_eq!(
        rep.error_items,
        vec![Some(1)],
        "pinned to its entry: {rep:?}"
    );
    let table = t.ip_json(&["neigh", "show", "dev", "vx0"]);
    let dsts: Vec<&str> = table
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["dst"].as_str())
        .collect();
    assert_eq!(dsts, ["10.244.2.0"], "{table}");

    let fdb = vec![
        FdbEntry::new(mac("02:00:00:00:02:01"), "vx0").dst(ip("192.0.2.12")),
        // No dst: not a remote entry, so not something reconcile owns.
        FdbEntry::new(mac("02:00:00:00:03:01"), "vx0"),
    ];
    let f = h.fdb().reconcile("vx0", &fdb).unwrap();
    assert_eq!((f.added, f.errors.len()), (1, 1), "{f:?}");
    assert_eq!(f.error_items, vec![Some(1)], "pinned to its entry: {f:?}");
    let table = t.bridge_json(&["fdb", "show", "dev", "vx0"]);
    let macs: Vec<&str> = table
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["mac"].as_str())
        .collect();
    assert!(macs.contains(&"02:00:00:00:02:01"), "{table}");
    assert!(!macs.contains(&"02:00:00:00:03:01"), "{table}");

    rep.merge(f);
    let e = rep.into_result().unwrap_err();
    let text = e.to_string();
    assert!(text.contains("2 items failed"), "{text}");
    assert!(
        text.contains("10.244.3.0") && text.contains("no dst"),
        "{text}"
    );
    assert!(text.starts_with("reconcile neighbours of vx0"), "{text}");
}
