//! The watch (`cnet_core::watch`): changes made by `ip` and `bridge` (an
//! independent writer) arrive as typed events; an overflowing receive
//! buffer arrives as `Resync`, never as silence; listing then watching
//! leaves no gap.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use cnet_core::ipnet::IpNet;
use cnet_core::link::Veth;
use cnet_core::route::{Route, RouteOp};
use cnet_core::watch::{list_then_watch, Change, Event, Groups, Watch, WatchConfig};
use cnet_core::Handle;
use common::{privileged, TestNs};

/// A namespace with `v0` (192.0.2.11/24, up) and its peer `v1`.
fn host(tag: &str) -> (TestNs, Handle) {
    let t = TestNs::new(tag);
    let h = t.handle();
    h.links().add(Veth::new("v0", "v1").up()).unwrap();
    h.links().set_up("v1").unwrap();
    h.addrs()
        .add("v0", "192.0.2.11/24".parse().unwrap())
        .unwrap();
    (t, h)
}

/// Read events until `want` matches one (5 s at most); returns it and
/// everything read before it.
fn wait_for(w: &mut Watch, what: &str, want: impl Fn(&Event) -> bool) -> (Event, Vec<Event>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Some(e) = w.next(Duration::from_millis(100)).expect("watch") {
            if want(&e) {
                return (e, seen);
            }
            seen.push(e);
        }
    }
    panic!("no event {what} within 5 s; saw {seen:#?}");
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn watch_reports_changes_made_by_ip_and_bridge_as_typed_events() {
    if !privileged() {
        return;
    }
    let (t, h) = host("wev");
    let mut w = Watch::all(&h).unwrap();
    assert!(w.rcvbuf() > 0);

    // Links: created, set down, deleted.
    t.ip(&["link", "add", "wa0", "type", "veth", "peer", "name", "wa1"]);
    let (e, _) = wait_for(
        &mut w,
        "new link wa0",
        |e| matches!(e, Event::Link(Change::New, l) if l.name == "wa0"),
    );
    let Event::Link(_, wa0) = e else {
        unreachable!()
    };
    assert_eq!(wa0.index, h.links().index_of("wa0").unwrap());

    // Addresses.
    t.ip(&["addr", "add", "203.0.113.5/24", "dev", "v1"]);
    wait_for(
        &mut w,
        "new address",
        |e| matches!(e, Event::Addr(Change::New, a) if a.local == net("203.0.113.5/24")),
    );
    t.ip(&["addr", "del", "203.0.113.5/24", "dev", "v1"]);
    wait_for(
        &mut w,
        "deleted address",
        |e| matches!(e, Event::Addr(Change::Del, a) if a.local == net("203.0.113.5/24")),
    );

    // Routes, with their protocol and table.
    t.ip(&[
        "route",
        "add",
        "10.9.0.0/16",
        "via",
        "192.0.2.12",
        "proto",
        "119",
        "table",
        "7",
    ]);
    let (e, _) = wait_for(
        &mut w,
        "new route",
        |e| matches!(e, Event::Route(Change::New, r) if r.dst == net("10.9.0.0/16")),
    );
    let Event::Route(_, r) = e else {
        unreachable!()
    };
    assert_eq!((r.protocol, r.table), (119, 7));
    assert_eq!(r.gateway, Some("192.0.2.12".parse::<IpAddr>().unwrap()));
    t.ip(&["route", "del", "10.9.0.0/16", "table", "7"]);
    wait_for(
        &mut w,
        "deleted route",
        |e| matches!(e, Event::Route(Change::Del, r) if r.dst == net("10.9.0.0/16")),
    );

    // Neighbours.
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
    wait_for(
        &mut w,
        "new neighbour",
        |e| matches!(e, Event::Neigh(Change::New, n) if n.ip.to_string() == "192.0.2.99"),
    );
    t.ip(&["neigh", "del", "192.0.2.99", "dev", "v0"]);
    wait_for(
        &mut w,
        "deleted neighbour",
        |e| matches!(e, Event::Neigh(Change::Del, n) if n.ip.to_string() == "192.0.2.99"),
    );

    // FDB entries of a VXLAN device.
    t.ip(&[
        "link",
        "add",
        "wvx",
        "type",
        "vxlan",
        "id",
        "42",
        "dstport",
        "4789",
        "dev",
        "v0",
        "nolearning",
    ]);
    t.run_bridge(&[
        "fdb",
        "append",
        "02:00:00:00:00:42",
        "dev",
        "wvx",
        "dst",
        "192.0.2.12",
        "self",
        "permanent",
    ]);
    let (e, _) = wait_for(
        &mut w,
        "new fdb entry",
        |e| matches!(e, Event::Fdb(Change::New, f) if f.mac.to_string() == "02:00:00:00:00:42"),
    );
    let Event::Fdb(_, f) = e else { unreachable!() };
    assert_eq!(f.dst, Some("192.0.2.12".parse::<IpAddr>().unwrap()));
    assert!(f.on_self);
    t.run_bridge(&[
        "fdb",
        "del",
        "02:00:00:00:00:42",
        "dev",
        "wvx",
        "dst",
        "192.0.2.12",
        "self",
    ]);
    wait_for(
        &mut w,
        "deleted fdb entry",
        |e| matches!(e, Event::Fdb(Change::Del, f) if f.mac.to_string() == "02:00:00:00:00:42"),
    );

    // A link set down, then deleted.
    t.ip(&["link", "set", "wa0", "up"]);
    t.ip(&["link", "set", "wa0", "down"]);
    wait_for(
        &mut w,
        "wa0 down",
        |e| matches!(e, Event::Link(Change::New, l) if l.name == "wa0" && !l.is_up()),
    );
    t.ip(&["link", "del", "wa0"]);
    wait_for(
        &mut w,
        "deleted link",
        |e| matches!(e, Event::Link(Change::Del, l) if l.name == "wa0"),
    );

    // Nothing more: an idle watch times out with None.
    let _ = w.drain().unwrap();
    assert_eq!(w.next(Duration::from_millis(50)).unwrap(), None);
}

#[test]
fn watch_only_joins_the_groups_asked_for() {
    if !privileged() {
        return;
    }
    let (t, h) = host("wgr");
    let mut w = Watch::open(h.netns(), WatchConfig::new(Groups::ROUTES)).unwrap();
    t.ip(&["link", "add", "wg0", "type", "veth", "peer", "name", "wg1"]);
    t.ip(&["addr", "add", "203.0.113.7/24", "dev", "v1"]);
    t.ip(&["route", "add", "10.8.0.0/16", "via", "192.0.2.12"]);
    let (_, before) = wait_for(
        &mut w,
        "new route",
        |e| matches!(e, Event::Route(Change::New, r) if r.dst == net("10.8.0.0/16")),
    );
    // Routes only: the address's own local/prefix routes may come first,
    // links and addresses never.
    assert!(
        before.iter().all(|e| matches!(e, Event::Route(..))),
        "{before:#?}"
    );
}

#[test]
fn watch_overflow_of_a_small_buffer_is_a_resync_never_silence() {
    if !privileged() {
        return;
    }
    let (t, h) = host("wov");
    let mut w = Watch::open(h.netns(), WatchConfig::new(Groups::ROUTES).rcvbuf(4096)).unwrap();
    eprintln!("receive buffer granted: {} bytes", w.rcvbuf());
    // 2,000 routes in one pipelined batch from another socket, while the
    // watch reads nothing: far more notifications than 8 KiB holds.
    let n = 2000u32;
    let routes: Vec<RouteOp> = (0..n)
        .map(|i| {
            RouteOp::Add(
                Route::to(net(&format!("10.60.{}.{}/32", i / 256, i % 256)))
                    .via("192.0.2.12".parse().unwrap())
                    .protocol(77),
            )
        })
        .collect();
    for r in h.routes().apply_batch(&routes) {
        r.unwrap();
    }
    let mut news = 0usize;
    let mut resync = false;
    while let Some(e) = w.next(Duration::from_millis(200)).unwrap() {
        match e {
            Event::Resync => {
                resync = true;
                break;
            }
            Event::Route(Change::New, _) => news += 1,
            _ => {}
        }
    }
    eprintln!("{news} route events before the resync");
    assert!(
        resync,
        "no Resync after {news} of {n} route events: a dropped notification went unreported"
    );
    assert!(news < n as usize);

    // After the Resync: list again, and events flow again.
    let s = w.snapshot(&h).unwrap();
    let ours = s.routes.iter().filter(|r| r.protocol == 77).count();
    assert_eq!(ours, n as usize);
    let ip_count = t
        .ip_json(&["route", "show", "proto", "77"])
        .as_array()
        .unwrap()
        .len();
    assert_eq!(ip_count, n as usize, "the independent reader agrees");
    t.ip(&["route", "del", "10.60.0.7/32"]);
    wait_for(
        &mut w,
        "deleted route after resync",
        |e| matches!(e, Event::Route(Change::Del, r) if r.dst == net("10.60.0.7/32")),
    );
}

#[test]
fn watch_list_then_watch_misses_nothing_added_during_the_listing() {
    if !privileged() {
        return;
    }
    let (t, h) = host("wls");
    // Another writer adds routes while the listing runs.
    let h2 = t.handle();
    let n = 1500u32;
    let (snap, mut w) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..n {
                h2.routes()
                    .add(
                        Route::to(net(&format!("10.61.{}.{}/32", i / 256, i % 256)))
                            .via("192.0.2.12".parse().unwrap())
                            .protocol(78),
                    )
                    .unwrap();
            }
        });
        // Let the writer get going, then list and watch.
        std::thread::sleep(Duration::from_millis(3));
        let r = list_then_watch(&h, WatchConfig::new(Groups::ROUTES)).unwrap();
        writer.join().unwrap();
        r
    });
    let mut have: BTreeSet<IpNet> = snap
        .routes
        .iter()
        .filter(|r| r.protocol == 78)
        .map(|r| r.dst)
        .collect();
    let listed = have.len();
    for e in w.drain().unwrap() {
        match e {
            Event::Route(Change::New, r) if r.protocol == 78 => {
                have.insert(r.dst);
            }
            Event::Route(Change::Del, r) if r.protocol == 78 => {
                have.remove(&r.dst);
            }
            Event::Resync => panic!("unexpected overflow with the default buffer"),
            _ => {}
        }
    }
    eprintln!("{listed} routes listed, {} after the events", have.len());
    let kernel: BTreeSet<IpNet> = t
        .ip_json(&["route", "show", "proto", "78"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| net(&format!("{}/32", r["dst"].as_str().unwrap())))
        .collect();
    assert_eq!(kernel.len(), n as usize);
    assert_eq!(have, kernel, "snapshot + events = what the kernel has");
}

#[test]
fn watch_snapshot_refuses_a_handle_of_another_namespace() {
    if !privileged() {
        return;
    }
    let (_t, h) = host("wns");
    let (_u, other) = host("wns2");
    let mut w = Watch::all(&h).unwrap();
    let e = w.snapshot(&other).unwrap_err();
    assert!(matches!(e, cnet_core::Error::InvalidArgument { .. }), "{e}");
    // The right one lists links, addresses, routes, neighbours.
    let s = w.snapshot(&h).unwrap();
    assert!(s.links.iter().any(|l| l.name == "v0"));
    assert!(s.addrs.iter().any(|a| a.local == net("192.0.2.11/24")));
    assert!(s.routes.iter().any(|r| r.dst == net("192.0.2.0/24")));
}
