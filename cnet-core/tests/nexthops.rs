//! Nexthop objects (`ip nexthop`), read back with `ip -j nexthop` and
//! proven with traffic: a group of two gateways carries pings, and
//! replacing a nexthop moves every route that uses it.
//!
//! Topology (all namespaces of the test): `client` with veth `a1` to
//! namespace `gw1` (192.0.2.0/24) and `a2` to namespace `gw2`
//! (198.51.100.0/24); each gateway holds test addresses on its loopback.

mod common;

use std::net::IpAddr;

use cnet_core::link::Veth;
use cnet_core::nexthop::{GroupMember, Nexthop, NexthopFilter};
use cnet_core::route::{Route, RouteFilter, RouteOwner, PROTOCOL, TABLE_MAIN};
use cnet_core::Error;
use common::{privileged, TestNs};
use serde_json::Value;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> cnet_core::IpNet {
    s.parse().unwrap()
}

/// client ── a1 ── gw1 (192.0.2.2, lo: `lo1`…)
///        └─ a2 ── gw2 (198.51.100.2, lo: `lo2`…)
struct Topo {
    client: TestNs,
    gw1: TestNs,
    gw2: TestNs,
}

fn topo(tag: &str, lo1: &[&str], lo2: &[&str]) -> Topo {
    let t = Topo {
        client: TestNs::new(tag),
        gw1: TestNs::new(tag),
        gw2: TestNs::new(tag),
    };
    let h = t.client.handle();
    for (dev, gw, mine, theirs, los) in [
        ("a1", &t.gw1, "192.0.2.1/24", "192.0.2.2/24", lo1),
        ("a2", &t.gw2, "198.51.100.1/24", "198.51.100.2/24", lo2),
    ] {
        h.links()
            .add(Veth::new(dev, "eth0").peer_netns(&gw.ns).up())
            .unwrap();
        h.addrs().add(dev, net(mine)).unwrap();
        let g = gw.handle();
        g.links().set_up("eth0").unwrap();
        g.addrs().add("eth0", net(theirs)).unwrap();
        for a in los {
            g.addrs().add("lo", net(&format!("{a}/32"))).unwrap();
        }
    }
    t
}

/// `ip -j -d nexthop show ARGS…` as a list.
fn ip_nexthops(t: &TestNs, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["nexthop", "show"];
    full.extend_from_slice(args);
    t.ip_json(&full).as_array().unwrap().clone()
}

fn by_id(v: &[Value], id: u64) -> &Value {
    v.iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no nexthop {id} in {v:?}"))
}

/// `ip -j -d route show PREFIX`.
fn ip_route(t: &TestNs, prefix: &str) -> Value {
    let v = t.ip_json(&["route", "show", prefix]);
    v.as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_else(|| panic!("no route {prefix}: {v}"))
}

#[test]
fn nexthops_read_back_like_ip_nexthop_shows_them() {
    if !privileged() {
        return;
    }
    let t = topo("nhread", &[], &[]);
    let h = t.client.handle();
    let n = h.nexthops();
    n.add(&Nexthop::new(1).via(ip("192.0.2.2")).dev("a1"))
        .unwrap();
    n.add(&Nexthop::new(2).dev("a2")).unwrap();
    n.add(&Nexthop::blackhole(3)).unwrap();
    n.add(&Nexthop::new(4).via(ip("198.51.100.2")).dev("a2").onlink())
        .unwrap();
    n.add(&Nexthop::group(10, &[(1, 3), (4, 1)])).unwrap();

    // The independent reader, field by field.
    let j = ip_nexthops(&t.client, &[]);
    assert_eq!(j.len(), 5, "{j:?}");
    let a = by_id(&j, 1);
    assert_eq!(a["gateway"], "192.0.2.2", "{a}");
    assert_eq!(a["dev"], "a1");
    assert_eq!(a["scope"], "link");
    assert_eq!(a["protocol"], PROTOCOL.to_string());
    let b = by_id(&j, 2);
    assert_eq!(b["dev"], "a2", "{b}");
    assert!(b.get("gateway").is_none(), "{b}");
    assert_eq!(b["scope"], "host");
    let c = by_id(&j, 3);
    assert!(c.get("blackhole").is_some(), "{c}");
    let d = by_id(&j, 4);
    assert_eq!(d["gateway"], "198.51.100.2", "{d}");
    assert!(
        d["flags"].as_array().unwrap().contains(&"onlink".into()),
        "{d}"
    );
    let g = by_id(&j, 10);
    let members = g["group"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{g}");
    assert_eq!(members[0]["id"], 1);
    assert_eq!(members[0]["weight"], 3);
    assert_eq!(members[1]["id"], 4);
    // `ip` leaves weight 1 out.
    assert!(members[1].get("weight").is_none() || members[1]["weight"] == 1);

    // Our own reader agrees.
    let a1 = h.links().index_of("a1").unwrap();
    let a2 = h.links().index_of("a2").unwrap();
    let list = n.list(&NexthopFilter::new()).unwrap();
    assert_eq!(
        list.iter().map(|e| e.id).collect::<Vec<_>>(),
        [1, 2, 3, 4, 10]
    );
    assert_eq!(list[0].gateway, Some(ip("192.0.2.2")));
    assert_eq!(list[0].oif, Some(a1));
    assert_eq!(list[0].protocol, PROTOCOL);
    assert_eq!(list[1].gateway, None);
    assert_eq!(list[1].oif, Some(a2));
    assert!(list[2].blackhole);
    assert!(list[3].onlink);
    assert_eq!(
        list[4].group,
        [
            GroupMember { id: 1, weight: 3 },
            GroupMember { id: 4, weight: 1 }
        ]
    );
    assert_eq!(list[4].group_type, Some(0));
    assert_eq!(list[4].family, None);
    assert_eq!(n.get(1).unwrap().as_ref(), Some(&list[0]));
    assert_eq!(n.get(99).unwrap(), None);

    // Kernel-side filters, compared with `ip`'s.
    let on_a2: Vec<u32> = n
        .list(&NexthopFilter::new().dev("a2"))
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(on_a2, [2, 4]);
    assert_eq!(ip_nexthops(&t.client, &["dev", "a2"]).len(), 2);
    let groups: Vec<u32> = n
        .list(&NexthopFilter::new().groups())
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(groups, [10]);
}

#[test]
fn a_group_of_two_gateways_carries_traffic_for_a_route_using_it() {
    if !privileged() {
        return;
    }
    // Both gateways answer for 10.244.7.1, so either path works.
    let t = topo("nhgrp", &["10.244.7.1"], &["10.244.7.1"]);
    let h = t.client.handle();
    let n = h.nexthops();
    n.add(&Nexthop::new(1).via(ip("192.0.2.2")).dev("a1"))
        .unwrap();
    n.add(&Nexthop::new(2).via(ip("198.51.100.2")).dev("a2"))
        .unwrap();
    n.add(&Nexthop::group(10, &[(1, 1), (2, 2)])).unwrap();
    h.routes()
        .add(Route::to(net("10.244.7.0/24")).nexthop_id(10))
        .unwrap();

    let r = ip_route(&t.client, "10.244.7.0/24");
    assert_eq!(r["nhid"], 10, "{r}");
    assert_eq!(r["protocol"], PROTOCOL.to_string());
    let hops = r["nexthops"].as_array().expect("the group's paths");
    assert_eq!(hops.len(), 2, "{r}");
    let e = h
        .routes()
        .list(&RouteFilter::new().protocol(PROTOCOL))
        .unwrap();
    let e = e.iter().find(|e| e.dst == net("10.244.7.0/24")).unwrap();
    assert_eq!(e.nhid, Some(10));
    assert_eq!(e.nexthops.len(), 2);

    assert!(t.client.ping("10.244.7.1"), "ping through the group");

    // The same route reconciles as unchanged (nexthop-derived fields are
    // not taken for drift).
    let want = [Route::to(net("10.244.7.0/24")).nexthop_id(10)];
    let owner = RouteOwner::new(PROTOCOL, TABLE_MAIN);
    let rep = h.routes().reconcile(&owner, &want).unwrap();
    assert!(rep.is_noop(), "{rep:?}");
}

#[test]
fn replacing_a_nexthop_moves_every_route_that_uses_it() {
    if !privileged() {
        return;
    }
    // gw1 answers for .1 addresses, gw2 for .2: which address answers
    // tells which way the packets went.
    let t = topo(
        "nhrepl",
        &["10.244.8.1", "10.244.9.1"],
        &["10.244.8.2", "10.244.9.2"],
    );
    let h = t.client.handle();
    let n = h.nexthops();
    n.add(&Nexthop::new(1).via(ip("192.0.2.2")).dev("a1"))
        .unwrap();
    for p in ["10.244.8.0/24", "10.244.9.0/24"] {
        h.routes().add(Route::to(net(p)).nexthop_id(1)).unwrap();
    }
    assert!(t.client.ping("10.244.8.1"));
    assert!(t.client.ping("10.244.9.1"));
    assert!(!t.client.ping("10.244.9.2"), "gw1 does not have .2");

    n.replace(&Nexthop::new(1).via(ip("198.51.100.2")).dev("a2"))
        .unwrap();
    for p in ["10.244.8.0/24", "10.244.9.0/24"] {
        let r = ip_route(&t.client, p);
        assert_eq!(r["nhid"], 1, "{r}");
        assert_eq!(r["gateway"], "198.51.100.2", "{r}");
        assert_eq!(r["dev"], "a2", "{r}");
    }
    assert!(t.client.ping("10.244.8.2"), "both routes now go via gw2");
    assert!(t.client.ping("10.244.9.2"));
    assert!(!t.client.ping("10.244.9.1"), "and no longer via gw1");
    let j = ip_nexthops(&t.client, &["id", "1"]);
    assert_eq!(j[0]["gateway"], "198.51.100.2");
}

#[test]
fn deleting_a_nexthop_in_use_takes_its_routes_and_group_membership() {
    if !privileged() {
        return;
    }
    let t = topo("nhdel", &[], &[]);
    let h = t.client.handle();
    let n = h.nexthops();
    n.add(&Nexthop::new(1).via(ip("192.0.2.2")).dev("a1"))
        .unwrap();
    n.add(&Nexthop::new(2).via(ip("198.51.100.2")).dev("a2"))
        .unwrap();
    n.add(&Nexthop::group(10, &[(1, 1), (2, 1)])).unwrap();
    h.routes()
        .add(Route::to(net("10.244.5.0/24")).nexthop_id(1))
        .unwrap();
    h.routes()
        .add(Route::to(net("10.244.6.0/24")).nexthop_id(10))
        .unwrap();

    n.delete(1).unwrap();
    // The kernel removed the route through it and shrank the group.
    let routes = t.client.ip_json(&["route", "show", "10.244.5.0/24"]);
    assert_eq!(routes.as_array().unwrap().len(), 0, "{routes}");
    let g = by_id(&ip_nexthops(&t.client, &[]), 10).clone();
    let members = g["group"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{g}");
    assert_eq!(members[0]["id"], 2);
    assert_eq!(ip_route(&t.client, "10.244.6.0/24")["nhid"], 10);

    // Already gone: delete says NotFound, delete_if_exists succeeds.
    assert!(n.delete(1).unwrap_err().is_not_found());
    assert!(!n.delete_if_exists(1).unwrap());
    assert!(n.delete_if_exists(10).unwrap());
    let routes = t.client.ip_json(&["route", "show", "10.244.6.0/24"]);
    assert_eq!(routes.as_array().unwrap().len(), 0, "{routes}");
}

#[test]
fn bad_nexthop_input_gets_typed_errors_with_the_kernels_text() {
    if !privileged() {
        return;
    }
    let t = topo("nhbad", &[], &[]);
    let h = t.client.handle();
    let n = h.nexthops();

    // id 0 would make the kernel choose an id: refused before sending.
    let e = n.add(&Nexthop::blackhole(0)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(e.to_string().contains("id 0"), "{e}");
    // The kernel's own word on id 0 where it judges it.
    let e = n.delete(0).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
    assert_eq!(e.kernel_message(), Some("Invalid nexthop id"), "{e}");

    // A group with a member that does not exist: nothing is made.
    n.add(&Nexthop::new(1).via(ip("192.0.2.2")).dev("a1"))
        .unwrap();
    let e = n.add(&Nexthop::group(10, &[(1, 1), (77, 1)])).unwrap_err();
    assert!(matches!(e, Error::Netlink { .. }), "{e:?}");
    assert_eq!(e.errno(), Some(libc::EINVAL));
    assert_eq!(e.kernel_message(), Some("Invalid nexthop id"), "{e}");
    assert!(e.to_string().contains("group 1/77"), "{e}");
    assert_eq!(ip_nexthops(&t.client, &[]).len(), 1);

    // Id taken.
    let e = n.add(&Nexthop::blackhole(1)).unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");

    // A route through a nexthop that does not exist.
    let e = h
        .routes()
        .add(Route::to(net("10.244.5.0/24")).nexthop_id(42))
        .unwrap_err();
    assert!(e.kernel_message().is_some(), "{e:?}");
    eprintln!("route through a missing nexthop: {e}");

    // A route that gives both nhid and its own gateway.
    let e = h
        .routes()
        .add(
            Route::to(net("10.244.5.0/24"))
                .nexthop_id(1)
                .via(ip("192.0.2.2")),
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");

    // A device that does not exist.
    let e = n.add(&Nexthop::new(5).dev("nope0")).unwrap_err();
    assert!(e.is_not_found(), "{e}");
}
