//! Routes, read back with `ip -j route show` / `ip -j route get`, and proven
//! with traffic.

mod common;

use std::net::IpAddr;

use cnet_core::link::Veth;
use cnet_core::route::{
    Family, NextHop, Route, RouteFilter, RouteOp, RouteOwner, RouteQuery, RouteType, PROTOCOL,
};
use cnet_core::{Error, Handle};
use common::{privileged, TestNs};
use serde_json::Value;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A namespace with `v0` (192.0.2.1/24, 2001:db8::1/64) and its peer `v0p`
/// (192.0.2.2/24), both up.
fn host(tag: &str) -> (TestNs, Handle) {
    let t = TestNs::new(tag);
    let h = t.handle();
    h.links()
        .add(Veth::new("v0", "v0p").up().peer_up())
        .unwrap();
    h.addrs()
        .add("v0", "192.0.2.1/24".parse().unwrap())
        .unwrap();
    h.addrs()
        .add("v0p", "192.0.2.2/24".parse().unwrap())
        .unwrap();
    t.ip(&["addr", "add", "2001:db8::1/64", "dev", "v0", "nodad"]);
    (t, h)
}

/// `ip -j -d route show table all proto 119`: both families.
fn ours(t: &TestNs) -> Vec<Value> {
    let p = PROTOCOL.to_string();
    t.ip_json(&["route", "show", "table", "all", "proto", &p])
        .as_array()
        .unwrap()
        .clone()
}

fn find<'a>(v: &'a [Value], dst: &str) -> &'a Value {
    v.iter()
        .find(|r| r["dst"] == dst)
        .unwrap_or_else(|| panic!("no route {dst} in {v:?}"))
}

#[test]
fn routes_of_every_kind_read_back_like_ip_shows_them() {
    if !privileged() {
        return;
    }
    let (t, h) = host("rt");
    let r = h.routes();
    r.add(
        Route::to("10.1.0.0/24".parse().unwrap())
            .via(ip("192.0.2.12"))
            .dev("v0")
            .metric(5),
    )
    .unwrap();
    r.add(
        Route::to("10.1.1.1/32".parse().unwrap())
            .via(ip("203.0.113.9"))
            .dev("v0")
            .onlink()
            .table(100),
    )
    .unwrap();
    r.add(
        Route::to("10.1.2.0/24".parse().unwrap())
            .dev("v0")
            .src(ip("192.0.2.1")),
    )
    .unwrap();
    r.add(Route::to("10.9.0.0/16".parse().unwrap()).blackhole())
        .unwrap();
    r.add(Route::to("10.9.1.0/24".parse().unwrap()).unreachable())
        .unwrap();
    r.add(Route::to("10.9.2.0/24".parse().unwrap()).prohibit())
        .unwrap();
    r.add(
        Route::to("10.2.0.0/24".parse().unwrap())
            .nexthop(NextHop::new().via(ip("192.0.2.12")).dev("v0").weight(2))
            .nexthop(NextHop::new().via(ip("192.0.2.13")).dev("v0")),
    )
    .unwrap();
    r.add(Route::default_v4().via(ip("192.0.2.254")).table(200))
        .unwrap();
    r.add(
        Route::to("2001:db8:5::/64".parse().unwrap())
            .via(ip("2001:db8::2"))
            .dev("v0"),
    )
    .unwrap();
    r.add(Route::to("2001:db8:6::/64".parse().unwrap()).blackhole())
        .unwrap();

    let v = ours(&t);
    assert_eq!(v.len(), 10, "{v:?}");
    let a = find(&v, "10.1.0.0/24");
    assert_eq!(
        (&a["gateway"], &a["dev"], &a["metric"]),
        (&"192.0.2.12".into(), &"v0".into(), &5.into())
    );
    let b = find(&v, "10.1.1.1");
    assert_eq!(b["table"], "100");
    assert_eq!(b["flags"][0], "onlink");
    let c = find(&v, "10.1.2.0/24");
    assert_eq!(
        (&c["prefsrc"], &c["scope"]),
        (&"192.0.2.1".into(), &"link".into())
    );
    assert_eq!(find(&v, "10.9.0.0/16")["type"], "blackhole");
    assert_eq!(find(&v, "10.9.1.0/24")["type"], "unreachable");
    assert_eq!(find(&v, "10.9.2.0/24")["type"], "prohibit");
    let m = find(&v, "10.2.0.0/24")["nexthops"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(m.len(), 2);
    assert_eq!(
        (&m[0]["gateway"], &m[0]["weight"]),
        (&"192.0.2.12".into(), &2.into())
    );
    assert_eq!(find(&v, "default")["gateway"], "192.0.2.254");
    assert_eq!(find(&v, "2001:db8:5::/64")["gateway"], "2001:db8::2");
    assert_eq!(find(&v, "2001:db8:6::/64")["type"], "blackhole");

    // The library's own listing, filtered by the kernel.
    let all = r.list(&RouteFilter::new().protocol(PROTOCOL)).unwrap();
    assert_eq!(all.len(), 10, "{all:#?}");
    let main4 = r
        .list(
            &RouteFilter::new()
                .protocol(PROTOCOL)
                .table(254)
                .family(Family::V4),
        )
        .unwrap();
    assert_eq!(main4.len(), 6, "{main4:#?}");
    let t100 = r.list(&RouteFilter::new().table(100)).unwrap();
    assert_eq!(t100.len(), 1);
    assert!(t100[0].onlink && t100[0].gateway == Some(ip("203.0.113.9")));
    let black = r
        .list(
            &RouteFilter::new()
                .kind(RouteType::Blackhole)
                .family(Family::V4),
        )
        .unwrap();
    assert_eq!(black.len(), 1);
    let v0 = h.links().index_of("v0").unwrap();
    let on_v0 = r
        .list(&RouteFilter::new().dev("v0").table(254).family(Family::V4))
        .unwrap();
    // 10.1.0.0/24, 10.1.2.0/24, multipath, and the kernel's 192.0.2.0/24.
    assert_eq!(on_v0.len(), 4, "{on_v0:#?}");
    assert!(on_v0
        .iter()
        .all(|e| e.oif == Some(v0) || e.nexthops.iter().any(|n| n.oif == v0)));
    let kernel = r.list(&RouteFilter::new().protocol(2).table(254)).unwrap();
    assert!(kernel
        .iter()
        .any(|e| e.dst == "192.0.2.0/24".parse().unwrap()));
    // A table that never existed lists as empty.
    assert!(r.list(&RouteFilter::new().table(4242)).unwrap().is_empty());

    // Replace changes the gateway; add of the same route fails.
    let a2 = Route::to("10.1.0.0/24".parse().unwrap())
        .via(ip("192.0.2.13"))
        .dev("v0")
        .metric(5);
    assert!(matches!(r.add(&a2), Err(Error::AlreadyExists { .. })));
    r.replace(&a2).unwrap();
    assert_eq!(find(&ours(&t), "10.1.0.0/24")["gateway"], "192.0.2.13");

    // Delete; deleting again is NotFound, delete_if_exists is fine.
    r.delete(&a2).unwrap();
    assert!(r.delete(&a2).unwrap_err().is_not_found());
    assert!(!r.delete_if_exists(&a2).unwrap());
    r.delete(Route::to("2001:db8:6::/64".parse().unwrap()).blackhole())
        .unwrap();
    r.delete(Route::to("10.2.0.0/24".parse().unwrap())).unwrap();
    assert_eq!(ours(&t).len(), 7);
}

#[test]
fn route_get_agrees_with_ip_route_get() {
    if !privileged() {
        return;
    }
    let (t, h) = host("get");
    t.ip(&["link", "set", "lo", "up"]);
    let r = h.routes();
    r.add(
        Route::to("10.1.0.0/24".parse().unwrap())
            .via(ip("192.0.2.12"))
            .dev("v0"),
    )
    .unwrap();
    r.add(Route::default_v4().via(ip("192.0.2.254"))).unwrap();
    r.add(Route::to("10.9.0.0/16".parse().unwrap()).blackhole())
        .unwrap();
    r.add(Route::to("10.9.1.0/24".parse().unwrap()).unreachable())
        .unwrap();
    r.add(
        Route::to("2001:db8:5::/64".parse().unwrap())
            .via(ip("2001:db8::2"))
            .dev("v0"),
    )
    .unwrap();
    assert!(t.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]));

    let cases: Vec<(&str, RouteQuery, Vec<&str>)> = vec![
        (
            "connected",
            RouteQuery::new(ip("192.0.2.7")),
            vec!["192.0.2.7"],
        ),
        (
            "via gateway",
            RouteQuery::new(ip("10.1.0.5")),
            vec!["10.1.0.5"],
        ),
        (
            "default",
            RouteQuery::new(ip("198.51.100.1")),
            vec!["198.51.100.1"],
        ),
        (
            "v6 via gateway",
            RouteQuery::new(ip("2001:db8:5::1")),
            vec!["2001:db8:5::1"],
        ),
        (
            "with source",
            RouteQuery::new(ip("10.1.0.5")).from(ip("192.0.2.1")),
            vec!["10.1.0.5", "from", "192.0.2.1"],
        ),
        (
            "with iif",
            RouteQuery::new(ip("10.1.0.5"))
                .from(ip("192.0.2.50"))
                .iif("v0p"),
            vec!["10.1.0.5", "from", "192.0.2.50", "iif", "v0p"],
        ),
        (
            "with oif and mark",
            RouteQuery::new(ip("198.51.100.1")).oif("v0").mark(7),
            vec!["198.51.100.1", "oif", "v0", "mark", "7"],
        ),
        ("local", RouteQuery::new(ip("192.0.2.1")), vec!["192.0.2.1"]),
    ];
    for (name, q, args) in cases {
        let mut full = vec!["route", "get"];
        full.extend_from_slice(&args);
        let want = &t.ip_json(&full)[0];
        let got = r.lookup(&q).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            got.dev.as_deref(),
            want["dev"].as_str(),
            "{name}: {got:?} vs {want}"
        );
        assert_eq!(
            got.gateway.map(|g| g.to_string()).as_deref(),
            want["gateway"].as_str(),
            "{name}"
        );
        assert_eq!(
            got.prefsrc.map(|g| g.to_string()).as_deref(),
            want["prefsrc"].as_str(),
            "{name}"
        );
        let kind = want["type"].as_str().unwrap_or("unicast");
        assert_eq!(got.kind.as_str(), kind, "{name}");
    }

    // Blackhole and unreachable: the kernel refuses the lookup, as for ip.
    for (dst, errno) in [("10.9.0.1", libc::EINVAL), ("10.9.1.1", libc::EHOSTUNREACH)] {
        let e = r.get(ip(dst)).unwrap_err();
        assert_eq!(e.errno(), Some(errno), "{dst}: {e}");
        assert!(e.to_string().contains(dst), "{e}");
        let out = std::process::Command::new("ip")
            .args(["-n", &t.name, "route", "get", dst])
            .output()
            .unwrap();
        assert!(!out.status.success());
    }

    // fibmatch also returns the route that matched.
    let got = r
        .lookup(&RouteQuery::new(ip("10.1.0.5")).fibmatch())
        .unwrap();
    let m = got.matched.expect("matched route");
    assert_eq!(m.dst, "10.1.0.0/24".parse().unwrap());
    assert_eq!(m.protocol, PROTOCOL);
    let want = &t.ip_json(&["route", "get", "fibmatch", "10.1.0.5"])[0];
    assert_eq!(want["dst"], "10.1.0.0/24");
}

#[test]
fn bad_routes_are_typed_errors() {
    if !privileged() {
        return;
    }
    let (_t, h) = host("bad");
    let r = h.routes();
    // Gateway not on any connected prefix, without onlink: the kernel says why.
    let e = r
        .add(
            Route::to("10.1.0.0/24".parse().unwrap())
                .via(ip("203.0.113.9"))
                .dev("v0"),
        )
        .unwrap_err();
    assert!(
        e.kernel_message()
            .is_some_and(|m| m.contains("Nexthop has invalid gateway")),
        "{e}"
    );
    assert!(e.to_string().contains("Nexthop has invalid gateway"), "{e}");
    assert!(e.context().contains("add route 10.1.0.0/24"), "{e}");
    // The same with onlink works.
    r.add(
        Route::to("10.1.0.0/24".parse().unwrap())
            .via(ip("203.0.113.9"))
            .dev("v0")
            .onlink(),
    )
    .unwrap();

    let invalid = [
        Route::to("10.1.0.1/24".parse().unwrap()).dev("v0"),
        Route::to("10.1.0.0/24".parse().unwrap()).via(ip("2001:db8::2")),
        Route::to("2001:db8::/64".parse().unwrap())
            .dev("v0")
            .src(ip("192.0.2.1")),
        Route::to("10.1.0.0/24".parse().unwrap()).dev("v0").table(0),
        Route::to("10.1.0.0/24".parse().unwrap())
            .blackhole()
            .dev("v0"),
        Route::to("10.1.0.0/24".parse().unwrap()),
    ];
    for route in invalid {
        let e = r.add(&route).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{route}: {e}");
    }
    let e = r
        .add(Route::to("10.1.0.1/24".parse().unwrap()).dev("v0"))
        .unwrap_err();
    assert!(e.to_string().contains("host bits"), "{e}");
    let e = r
        .add(Route::to("10.3.0.0/24".parse().unwrap()).dev("missing0"))
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains("missing0"), "{e}");
}

#[test]
fn batch_reports_each_item() {
    if !privileged() {
        return;
    }
    let (t, h) = host("bat");
    let mut ops: Vec<RouteOp> = (0..300u32)
        .map(|i| {
            RouteOp::Add(
                Route::to(format!("10.50.{}.{}/32", i / 256, i % 256).parse().unwrap())
                    .via(ip("192.0.2.12"))
                    .dev("v0"),
            )
        })
        .collect();
    // Item 100: a duplicate of item 0 (EEXIST); item 200: invalid.
    ops[100] = ops[0].clone();
    ops[200] = RouteOp::Add(Route::to("10.50.0.1/24".parse().unwrap()).dev("v0"));
    let res = h.routes().apply_batch(&ops);
    assert_eq!(res.len(), 300);
    for (i, r) in res.iter().enumerate() {
        match i {
            100 => assert!(matches!(r, Err(Error::AlreadyExists { .. })), "{r:?}"),
            200 => assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}"),
            _ => assert!(r.is_ok(), "{i}: {r:?}"),
        }
    }
    assert_eq!(ours(&t).len(), 298);
    let dels: Vec<RouteOp> = ops
        .iter()
        .map(|o| match o {
            RouteOp::Add(r) => RouteOp::Delete(r.clone()),
            o => o.clone(),
        })
        .collect();
    let res = h.routes().apply_batch(&dels);
    assert_eq!(res.iter().filter(|r| r.is_ok()).count(), 298);
    assert!(res[100].as_ref().unwrap_err().is_not_found());
    assert!(ours(&t).is_empty());
}

/// A — router — B: A and B are on different /24s; only the routes the
/// library adds let A reach B.
#[test]
fn three_namespace_line_pings_through_library_routes() {
    if !privileged() {
        return;
    }
    let a = TestNs::new("la");
    let rt = TestNs::new("lr");
    let b = TestNs::new("lb");
    let (ha, hr, hb) = (a.handle(), rt.handle(), b.handle());
    hr.links()
        .add(Veth::new("ra", "eth0").peer_netns(&a.ns).up().peer_up())
        .unwrap();
    hr.links()
        .add(Veth::new("rb", "eth0").peer_netns(&b.ns).up().peer_up())
        .unwrap();
    hr.addrs()
        .add("ra", "192.0.2.1/24".parse().unwrap())
        .unwrap();
    hr.addrs()
        .add("rb", "198.51.100.1/24".parse().unwrap())
        .unwrap();
    ha.addrs()
        .add("eth0", "192.0.2.10/24".parse().unwrap())
        .unwrap();
    hb.addrs()
        .add("eth0", "198.51.100.10/24".parse().unwrap())
        .unwrap();
    assert!(rt.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]));
    assert!(!a.ping("198.51.100.10"), "no route yet");
    ha.routes()
        .add(
            Route::to("198.51.100.0/24".parse().unwrap())
                .via(ip("192.0.2.1"))
                .dev("eth0"),
        )
        .unwrap();
    hb.routes()
        .add(Route::default_v4().via(ip("198.51.100.1")).dev("eth0"))
        .unwrap();
    assert!(a.ping("198.51.100.10"), "A reaches B through the router");
    assert!(b.ping("192.0.2.10"), "and back");
    let hop = ha.routes().get(ip("198.51.100.10")).unwrap();
    assert_eq!(hop.gateway, Some(ip("192.0.2.1")));
    assert_eq!(hop.dev.as_deref(), Some("eth0"));
}

fn pod_routes(n: u32) -> Vec<Route> {
    (0..n)
        .map(|i| {
            Route::to(format!("10.244.{i}.0/24").parse().unwrap())
                .via(ip(&format!("192.0.2.{}", 10 + i)))
                .dev("v0")
        })
        .collect()
}

#[test]
fn reconcile_from_empty_then_already_right_writes_nothing() {
    if !privileged() {
        return;
    }
    let (t, h) = host("rce");
    let owner = RouteOwner::default();
    let want = pod_routes(20);
    let rep = h.routes().reconcile(&owner, &want).unwrap();
    assert_eq!(
        (rep.added, rep.replaced, rep.deleted),
        (20, 0, 0),
        "{rep:?}"
    );
    assert!(rep.is_ok());
    assert_eq!(ours(&t).len(), 20);
    let rep = h.routes().reconcile(&owner, &want).unwrap();
    assert!(rep.is_noop(), "{rep:?}");
    assert_eq!(rep.unchanged, 20);
    // Emptying the set deletes them all.
    let rep = h.routes().reconcile(&owner, &[]).unwrap();
    assert_eq!(rep.deleted, 20);
    assert!(ours(&t).is_empty());
}

#[test]
fn reconcile_from_half_right() {
    if !privileged() {
        return;
    }
    let (t, h) = host("rch");
    let owner = RouteOwner::default();
    let want = pod_routes(10);
    // Five right, two with the wrong gateway, one stale extra.
    h.routes()
        .reconcile(&owner, &want[..5])
        .unwrap()
        .into_result()
        .unwrap();
    h.routes()
        .add(
            Route::to("10.244.5.0/24".parse().unwrap())
                .via(ip("192.0.2.99"))
                .dev("v0"),
        )
        .unwrap();
    h.routes()
        .add(
            Route::to("10.244.6.0/24".parse().unwrap())
                .via(ip("192.0.2.98"))
                .dev("v0"),
        )
        .unwrap();
    h.routes()
        .add(
            Route::to("10.244.99.0/24".parse().unwrap())
                .via(ip("192.0.2.97"))
                .dev("v0"),
        )
        .unwrap();
    let rep = h.routes().reconcile(&owner, &want).unwrap();
    assert_eq!(
        (rep.added, rep.replaced, rep.deleted, rep.unchanged),
        (3, 2, 1, 5),
        "{rep:?}"
    );
    let v = ours(&t);
    assert_eq!(v.len(), 10);
    assert_eq!(find(&v, "10.244.5.0/24")["gateway"], "192.0.2.15");
    assert!(h.routes().reconcile(&owner, &want).unwrap().is_noop());
}

#[test]
fn reconcile_repairs_drift_and_spares_foreign_routes() {
    if !privileged() {
        return;
    }
    let (t, h) = host("rcd");
    let owner = RouteOwner::default();
    let mut want = pod_routes(6);
    want.push(Route::to("10.250.0.0/16".parse().unwrap()).blackhole());
    want.push(
        Route::to("10.251.0.0/24".parse().unwrap())
            .nexthop(NextHop::new().via(ip("192.0.2.12")).dev("v0"))
            .nexthop(NextHop::new().via(ip("192.0.2.13")).dev("v0")),
    );
    want.push(
        Route::to("2001:db8:7::/64".parse().unwrap())
            .via(ip("2001:db8::2"))
            .dev("v0"),
    );
    h.routes()
        .reconcile(&owner, &want)
        .unwrap()
        .into_result()
        .unwrap();
    // Foreign routes: another protocol in the same table, and ours in another table.
    t.ip(&[
        "route",
        "add",
        "10.244.200.0/24",
        "via",
        "192.0.2.200",
        "proto",
        "static",
    ]);
    t.ip(&[
        "route",
        "add",
        "10.244.201.0/24",
        "via",
        "192.0.2.201",
        "proto",
        "bird",
    ]);
    t.ip(&[
        "route",
        "add",
        "10.244.202.0/24",
        "via",
        "192.0.2.202",
        "table",
        "7",
        "proto",
        "119",
    ]);
    // Drift behind the library's back.
    t.ip(&[
        "route",
        "change",
        "10.244.1.0/24",
        "via",
        "192.0.2.77",
        "dev",
        "v0",
        "proto",
        "119",
    ]);
    t.ip(&["route", "del", "10.244.2.0/24"]);
    t.ip(&["route", "del", "10.250.0.0/16"]);
    t.ip(&[
        "-6",
        "route",
        "change",
        "2001:db8:7::/64",
        "via",
        "2001:db8::3",
        "dev",
        "v0",
        "proto",
        "119",
    ]);

    let rep = h.routes().reconcile(&owner, &want).unwrap();
    assert_eq!((rep.added, rep.replaced, rep.deleted), (2, 2, 0), "{rep:?}");
    assert!(rep.is_ok(), "{rep:?}");
    let v = ours(&t);
    assert_eq!(find(&v, "10.244.1.0/24")["gateway"], "192.0.2.11");
    assert_eq!(find(&v, "2001:db8:7::/64")["gateway"], "2001:db8::2");
    find(&v, "10.244.2.0/24");
    find(&v, "10.250.0.0/16");
    // Foreign routes survived, untouched.
    let all = t.ip_json(&["route", "show", "table", "all"]);
    let all = all.as_array().unwrap();
    for (dst, gw) in [
        ("10.244.200.0/24", "192.0.2.200"),
        ("10.244.201.0/24", "192.0.2.201"),
        ("10.244.202.0/24", "192.0.2.202"),
    ] {
        assert_eq!(find(all, dst)["gateway"], gw);
    }
    assert!(h.routes().reconcile(&owner, &want).unwrap().is_noop());
    // A route another protocol holds at the same prefix is not taken over.
    let clash = vec![Route::to("10.244.200.0/24".parse().unwrap())
        .via(ip("192.0.2.1"))
        .dev("v0")];
    let rep = h.routes().reconcile(&owner, &clash).unwrap();
    assert_eq!(rep.errors.len(), 1, "{rep:?}");
    assert!(matches!(rep.errors[0], Error::AlreadyExists { .. }));
    assert_eq!(
        find(
            &t.ip_json(&["route", "show"]).as_array().unwrap().clone(),
            "10.244.200.0/24"
        )["gateway"],
        "192.0.2.200"
    );
}

#[test]
fn reconcile_scoped_to_a_device() {
    if !privileged() {
        return;
    }
    let (t, h) = host("rcv");
    let owner = RouteOwner::default().dev("v0p");
    // Ours on v0 (another device) must survive a reconcile of v0p.
    h.routes()
        .add(
            Route::to("10.7.0.0/24".parse().unwrap())
                .via(ip("192.0.2.12"))
                .dev("v0"),
        )
        .unwrap();
    let want = vec![Route::to("10.8.0.0/24".parse().unwrap())
        .via(ip("192.0.2.12"))
        .dev("v0p")];
    let rep = h.routes().reconcile(&owner, &want).unwrap();
    assert_eq!((rep.added, rep.deleted), (1, 0), "{rep:?}");
    let rep = h.routes().reconcile(&owner, &[]).unwrap();
    assert_eq!(rep.deleted, 1);
    let v = ours(&t);
    assert_eq!(v.len(), 1);
    find(&v, "10.7.0.0/24");
}

/// One desired route the kernel refuses (its gateway is on no connected
/// network): the others are applied, the report holds the failure, and
/// `into_result` turns it into `Error::Partial` naming the route and the
/// kernel's words.
#[test]
fn reconcile_partial_failure_cannot_pass_as_success() {
    if !privileged() {
        return;
    }
    let (t, h) = host("rcp");
    let owner = RouteOwner::default();
    let mut want = pod_routes(3);
    want.push(
        Route::to("10.99.0.0/24".parse().unwrap())
            .via(ip("203.0.113.1"))
            .dev("v0"),
    );
    let rep = h.routes().reconcile(&owner, &want).unwrap();
    assert_eq!((rep.added, rep.errors.len()), (3, 1), "{rep:?}");
    // The failure is pinned to its desired entry by index, not by text.
    assert_eq!(rep.error_items, vec![Some(3)], "{rep:?}");
    let e = rep.into_result().unwrap_err();
    let Error::Partial {
        errors, applied, ..
    } = &e
    else {
        panic!("not Partial: {e:?}");
    };
    assert_eq!(errors.len(), 1);
    assert!(applied.contains("3 added"), "{applied}");
    let text = e.to_string();
    assert!(text.contains("1 item failed"), "{text}");
    assert!(text.contains("10.99.0.0/24"), "{text}");
    assert!(
        errors[0].kernel_message().is_some(),
        "the kernel's extended ack is kept: {:?}",
        errors[0]
    );
    // The three good routes are in the kernel, the refused one is not.
    let v = ours(&t);
    assert_eq!(v.len(), 3, "{v:?}");
    assert!(v.iter().all(|r| r["dst"] != "10.99.0.0/24"));
    // A complete set is Ok through into_result.
    h.routes()
        .reconcile(&owner, &want[..3])
        .unwrap()
        .into_result()
        .unwrap();
}
