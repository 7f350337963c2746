//! Rules, nexthops and the newer link kinds through the C ABI, called as C
//! would, each in its own throwaway namespace (`cn-ffo-TAG-PID`) and each
//! checked against an independent reader (`ip -j …`) and, for link stats,
//! traffic. Runs as root (namespaces); says so otherwise.

mod common;

use std::ffi::{c_char, CStr, CString};
use std::process::Command;
use std::ptr::{null, null_mut};

use cnet::boundary::*;
use cnet::ipam::*;
use cnet::link::*;
use cnet::nexthop::*;
use cnet::node::*;
use cnet::ns::*;
use cnet::route::*;
use cnet::rule::*;
use cnet_test_support::privileged;
use common::{ok, s};

/// A namespace with a handle, deleted on drop (panics included).
struct Ns {
    name: String,
    ns: *mut cnet_netns,
    h: *mut cnet_handle,
}

impl Drop for Ns {
    fn drop(&mut self) {
        cnet_handle_free(self.h);
        cnet_netns_free(self.ns);
        let n = CString::new(self.name.clone()).unwrap();
        cnet_netns_delete(n.as_ptr(), null_mut(), null_mut());
    }
}

impl Ns {
    fn new(tag: &str) -> Ns {
        let name = format!("cn-ffo-{tag}-{}", std::process::id());
        let c = CString::new(name.clone()).unwrap();
        let mut g = Ns {
            name,
            ns: null_mut(),
            h: null_mut(),
        };
        ok(|e| cnet_netns_create(c.as_ptr(), &mut g.ns, e));
        ok(|e| cnet_handle_new(g.ns, &mut g.h, e));
        g
    }

    /// `ip -n NS -j ARGS…` parsed.
    fn ip(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-j"])
            .args(args)
            .output()
            .expect("run ip");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Array(vec![]))
    }

    /// `ip -n NS ARGS…`, which must succeed.
    fn run(&self, args: &[&str]) {
        let st = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .status()
            .expect("run ip");
        assert!(st.success(), "ip {args:?}");
    }
}

// ------------------------------------------------------------------ rules

/// A rule reduced to what both readers show:
/// (family, priority, from, to, iif, fwmark/mask, suppress, action, protocol).
type RuleKey = (u8, u32, String, String, String, String, String, String, u8);

fn table_num(v: &serde_json::Value) -> u32 {
    match v.as_str().unwrap_or("") {
        "local" => 255,
        "main" => 254,
        "default" => 253,
        t => t.parse().unwrap_or(0),
    }
}

fn proto_num(v: Option<&serde_json::Value>) -> u8 {
    match v.and_then(|v| v.as_str()).unwrap_or("unspec") {
        "unspec" => 0,
        "redirect" => 1,
        "kernel" => 2,
        "boot" => 3,
        "static" => 4,
        p => p.parse().unwrap_or(255),
    }
}

fn prefix(j: &serde_json::Value, addr: &str, len: &str) -> String {
    match j.get(addr).and_then(|v| v.as_str()) {
        None | Some("all") => String::new(),
        Some(a) => format!("{a}/{}", j[len].as_u64().unwrap_or(0)),
    }
}

fn key_of_ip(j: &serde_json::Value, family: u8) -> RuleKey {
    let action = if let Some(a) = j.get("action").and_then(|v| v.as_str()) {
        a.to_string()
    } else if let Some(g) = j.get("goto") {
        format!("goto {g}")
    } else {
        format!("lookup {}", table_num(&j["table"]))
    };
    let mark = match j.get("fwmark").and_then(|v| v.as_str()) {
        Some(m) => {
            let n = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
            let mask = j.get("fwmask").and_then(|v| v.as_str()).map_or(u32::MAX, n);
            format!("{}/{mask}", n(m))
        }
        None => String::new(),
    };
    (
        family,
        j["priority"].as_u64().unwrap() as u32,
        prefix(j, "src", "srclen"),
        prefix(j, "dst", "dstlen"),
        j.get("iif")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
        mark,
        j.get("suppress_prefixlen")
            .map_or(String::new(), |v| v.to_string()),
        action,
        proto_num(j.get("protocol")),
    )
}

fn key_of_entry(e: &cnet_rule_entry) -> RuleKey {
    let action = match e.action {
        CNET_RULE_LOOKUP => format!("lookup {}", e.table),
        CNET_RULE_GOTO => format!("goto {}", e.goto_priority),
        CNET_RULE_BLACKHOLE => "blackhole".into(),
        CNET_RULE_UNREACHABLE => "unreachable".into(),
        CNET_RULE_PROHIBIT => "prohibit".into(),
        CNET_RULE_NOP => "nop".into(),
        x => format!("other {x}/{}", e.action_raw),
    };
    (
        e.family,
        e.priority,
        s(&e.from),
        s(&e.to),
        s(&e.iif),
        if e.has_fwmark {
            format!("{}/{}", e.fwmark, e.fwmask)
        } else {
            String::new()
        },
        if e.has_suppress_prefixlength {
            e.suppress_prefixlength.to_string()
        } else {
            String::new()
        },
        action,
        e.protocol,
    )
}

/// Both readers' rules of the namespace, sorted.
fn rules_both(ns: &Ns) -> (Vec<RuleKey>, Vec<RuleKey>) {
    let mut list = null_mut();
    ok(|e| cnet_rule_list(ns.h, 0, &mut list, e));
    // SAFETY: a live list of `len` items.
    let items = unsafe { std::slice::from_raw_parts((*list).items, (*list).len) };
    let mut ours: Vec<RuleKey> = items.iter().map(key_of_entry).collect();
    cnet_rule_array_free(list);
    let mut theirs = Vec::new();
    for (flag, fam) in [("-4", libc::AF_INET as u8), ("-6", libc::AF_INET6 as u8)] {
        let j = ns.ip(&[flag, "-d", "rule", "show"]);
        theirs.extend(j.as_array().unwrap().iter().map(|r| key_of_ip(r, fam)));
    }
    ours.sort();
    theirs.sort();
    (ours, theirs)
}

fn zero_rule() -> cnet_rule {
    // SAFETY: all-zero is a valid cnet_rule (NULL pointers, 0, false).
    unsafe { std::mem::zeroed() }
}

#[test]
fn rules_round_trip_against_ip_rule_and_reconcile() {
    if !privileged() {
        return;
    }
    let ns = Ns::new("rule");
    let h = ns.h;
    let mut a = zero_rule();
    a.priority = 100;
    a.from = c"10.244.1.0/24".as_ptr();
    a.table = 100;
    let mut b = zero_rule();
    b.priority = 150;
    b.has_suppress_prefixlength = true;
    b.suppress_prefixlength = 0;
    let mut c = zero_rule();
    c.priority = 200;
    c.fwmark = 0x10;
    c.fwmask = 0xff;
    c.action = CNET_RULE_BLACKHOLE;
    let mut d = zero_rule();
    d.priority = 300;
    d.to = c"198.51.100.0/24".as_ptr();
    d.iif = c"lo".as_ptr();
    d.action = CNET_RULE_GOTO;
    d.goto_priority = 400;
    let mut v6 = zero_rule();
    v6.priority = 100;
    v6.from = c"2001:db8::/32".as_ptr();
    v6.action = CNET_RULE_UNREACHABLE;
    for r in [&a, &b, &c, &d, &v6] {
        ok(|e| cnet_rule_add(h, r, e));
    }
    // A rule of someone else's protocol, which reconcile must leave alone.
    ns.run(&[
        "rule",
        "add",
        "priority",
        "500",
        "to",
        "203.0.113.0/24",
        "table",
        "7",
        "protocol",
        "static",
    ]);
    let (ours, theirs) = rules_both(&ns);
    assert_eq!(ours, theirs);
    // 3 kernel rules for IPv4, 2 for IPv6, our 5 and the static one.
    assert_eq!(ours.len(), 11, "{ours:#?}");
    assert!(ours.iter().any(|k| k.1 == 150 && k.6 == "0" && k.8 == 119));

    // Reconcile IPv4 protocol 119 to: 100 changed, 400 new (150, 200, 300 stale).
    a.table = 101;
    let mut e = zero_rule();
    e.priority = 400;
    e.from = c"10.244.2.0/24".as_ptr();
    e.table = 100;
    let want = [a, e];
    let mut counts = cnet_route_counts();
    ok(|er| {
        cnet_rule_reconcile(
            h,
            0,
            libc::AF_INET as u8,
            want.as_ptr(),
            want.len(),
            &mut counts,
            er,
        )
    });
    assert_eq!(
        (
            counts.added,
            counts.replaced,
            counts.deleted,
            counts.unchanged
        ),
        (1, 1, 3, 0)
    );
    let (ours, theirs) = rules_both(&ns);
    assert_eq!(ours, theirs);
    let prios: Vec<(u8, u32)> = ours
        .iter()
        .filter(|k| k.8 != 2)
        .map(|k| (k.0, k.1))
        .collect();
    assert_eq!(
        prios,
        vec![(2, 100), (2, 400), (2, 500), (10, 100)],
        "IPv6 and the static rule untouched"
    );
    // Again: nothing to do.
    ok(|er| {
        cnet_rule_reconcile(
            h,
            0,
            libc::AF_INET as u8,
            want.as_ptr(),
            want.len(),
            &mut counts,
            er,
        )
    });
    assert_eq!((counts.unchanged, counts.added, counts.deleted), (2, 0, 0));

    // Delete, then delete again: gone is fine.
    ok(|er| cnet_rule_delete(h, &want[1], er));
    let mut deleted = true;
    ok(|er| cnet_rule_delete_if_exists(h, &want[1], &mut deleted, er));
    assert!(!deleted);
    ok(|er| cnet_rule_delete_if_exists(h, &v6, &mut deleted, er));
    assert!(deleted);
    let (ours, theirs) = rules_both(&ns);
    assert_eq!(ours, theirs);
    assert!(!ours.iter().any(|k| k.1 == 400));
}

fn cnet_route_counts() -> cnet_reconcile_counts {
    cnet_reconcile_counts::default()
}

// --------------------------------------------------------------- nexthops

/// A veth pair a0 (192.0.2.1/24) – b0, both up, and lo up (a blackhole
/// nexthop needs it).
fn veth_underlay(ns: &Ns) {
    // SAFETY: all-zero is a valid cnet_link_config.
    let mut v: cnet_link_config = unsafe { std::mem::zeroed() };
    v.kind = CNET_LINK_VETH;
    v.name = c"a0".as_ptr();
    v.peer_name = c"b0".as_ptr();
    v.up = true;
    v.peer_up = true;
    ok(|e| cnet_link_add(ns.h, &v, e));
    ok(|e| cnet_link_set_up(ns.h, c"lo".as_ptr(), e));
    ok(|e| cnet::addr::cnet_addr_add(ns.h, c"a0".as_ptr(), c"192.0.2.1/24".as_ptr(), e));
}

fn zero_nexthop() -> cnet_nexthop {
    // SAFETY: all-zero is a valid cnet_nexthop (NULL pointers, 0, false).
    unsafe { std::mem::zeroed() }
}

/// A nexthop reduced to what both readers show: (id, gateway, dev index,
/// blackhole, group as id/weight, protocol).
type NhKey = (u32, String, u32, bool, Vec<(u32, u16)>, u8);

fn nexthops_both(ns: &Ns) -> (Vec<NhKey>, Vec<NhKey>) {
    let mut list = null_mut();
    ok(|e| cnet_nexthop_list(ns.h, std::ptr::null(), &mut list, e));
    // SAFETY: a live list of `len` items; each group of `group_len` members.
    let items = unsafe { std::slice::from_raw_parts((*list).items, (*list).len) };
    let ours: Vec<NhKey> = items
        .iter()
        .map(|e| {
            let group = if e.group_len == 0 {
                vec![]
            } else {
                // SAFETY: as above.
                unsafe { std::slice::from_raw_parts(e.group, e.group_len) }
                    .iter()
                    .map(|m| (m.id, m.weight))
                    .collect()
            };
            (
                e.id,
                s(&e.gateway),
                e.oif,
                e.kind == CNET_NEXTHOP_BLACKHOLE,
                group,
                e.protocol,
            )
        })
        .collect();
    cnet_nexthop_array_free(list);
    let links = ns.ip(&["link", "show"]);
    let index = |name: &str| {
        links
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["ifname"] == name)
            .map_or(0, |l| l["ifindex"].as_u64().unwrap() as u32)
    };
    let theirs: Vec<NhKey> = ns
        .ip(&["nexthop", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["id"].as_u64().unwrap() as u32,
                j.get("gateway")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string(),
                j.get("dev").and_then(|v| v.as_str()).map_or(0, index),
                j.get("blackhole").is_some(),
                j.get("group")
                    .and_then(|g| g.as_array())
                    .map_or(vec![], |g| {
                        g.iter()
                            .map(|m| {
                                (
                                    m["id"].as_u64().unwrap() as u32,
                                    m.get("weight").map_or(1, |w| w.as_u64().unwrap() as u16),
                                )
                            })
                            .collect()
                    }),
                proto_num(j.get("protocol")),
            )
        })
        .collect();
    (ours, theirs)
}

#[test]
fn nexthops_and_a_route_using_them_against_ip_nexthop_and_ip_route() {
    if !privileged() {
        return;
    }
    let ns = Ns::new("nh");
    let h = ns.h;
    veth_underlay(&ns);
    let mut a = zero_nexthop();
    a.id = 1;
    a.via = c"192.0.2.2".as_ptr();
    a.dev = c"a0".as_ptr();
    let mut b = zero_nexthop();
    b.id = 3;
    b.kind = CNET_NEXTHOP_PATH;
    b.via = c"192.0.2.3".as_ptr();
    b.dev = c"a0".as_ptr();
    let mut bh = zero_nexthop();
    bh.id = 2;
    bh.kind = CNET_NEXTHOP_BLACKHOLE;
    let members = [
        cnet_nexthop_group_member { id: 1, weight: 0 },
        cnet_nexthop_group_member { id: 3, weight: 2 },
    ];
    let mut g = zero_nexthop();
    g.id = 10;
    g.kind = CNET_NEXTHOP_GROUP;
    g.group = members.as_ptr();
    g.group_len = 2;
    for n in [&a, &b, &bh, &g] {
        ok(|e| cnet_nexthop_add(h, n, e));
    }
    let (ours, theirs) = nexthops_both(&ns);
    assert_eq!(ours, theirs);
    assert_eq!(ours.len(), 4);
    assert_eq!(ours[3].4, vec![(1, 1), (3, 2)]);

    // A route through the group, listed with its nhid by both readers.
    // SAFETY: all-zero is a valid cnet_route.
    let mut r: cnet_route = unsafe { std::mem::zeroed() };
    r.dst = c"10.244.2.0/24".as_ptr();
    r.nhid = 10;
    ok(|e| cnet_route_add(h, &r, e));
    let mut routes = null_mut();
    // SAFETY: all-zero is a valid filter (no filtering) before the protocol.
    let mut f: cnet_route_filter = unsafe { std::mem::zeroed() };
    f.protocol = CNET_ROUTE_PROTOCOL;
    ok(|e| cnet_route_list(h, &f, &mut routes, e));
    // SAFETY: a live list.
    let items = unsafe { std::slice::from_raw_parts((*routes).items, (*routes).len) };
    assert_eq!(items.len(), 1);
    assert_eq!(s(&items[0].dst), "10.244.2.0/24");
    assert_eq!(items[0].nhid, 10);
    assert_eq!(items[0].nexthops, 2, "the kernel expands the group");
    cnet_route_array_free(routes);
    let j = ns.ip(&["route", "show", "10.244.2.0/24"]);
    assert_eq!(j[0]["nhid"], 10, "{j}");
    assert_eq!(j[0]["nexthops"].as_array().unwrap().len(), 2, "{j}");

    // Replace a member in place: the route follows it.
    a.via = c"192.0.2.4".as_ptr();
    ok(|e| cnet_nexthop_replace(h, &a, e));
    let mut one = null_mut();
    ok(|e| cnet_nexthop_get(h, 1, &mut one, e));
    // SAFETY: a live entry.
    let got = unsafe { &*one };
    assert_eq!(
        (got.kind, s(&got.gateway), got.family),
        (
            CNET_NEXTHOP_PATH,
            "192.0.2.4".to_string(),
            libc::AF_INET as u8
        )
    );
    cnet_nexthop_entry_free(one);
    let mut one = null_mut();
    ok(|e| cnet_nexthop_get(h, 10, &mut one, e));
    // SAFETY: a live entry and its members.
    let got = unsafe { &*one };
    assert_eq!(
        (got.kind, got.group_len, got.family),
        (CNET_NEXTHOP_GROUP, 2, 0)
    );
    // SAFETY: as above.
    assert_eq!(unsafe { (*got.group.add(1)).weight }, 2);
    cnet_nexthop_entry_free(one);
    let j = ns.ip(&["route", "show", "10.244.2.0/24"]);
    assert_eq!(j[0]["nexthops"][0]["gateway"], "192.0.2.4", "{j}");
    let (ours, theirs) = nexthops_both(&ns);
    assert_eq!(ours, theirs);

    // Deleting the group deletes the route; deleting again is fine.
    ok(|e| cnet_nexthop_delete(h, 10, e));
    let mut deleted = true;
    ok(|e| cnet_nexthop_delete_if_exists(h, 10, &mut deleted, e));
    assert!(!deleted);
    assert_eq!(
        ns.ip(&["route", "show", "10.244.2.0/24"]),
        serde_json::json!([])
    );
    let (ours, theirs) = nexthops_both(&ns);
    assert_eq!(ours, theirs);
    assert_eq!(ours.len(), 3);
}

// ------------------------------------------------------------ link kinds

fn zero_link() -> cnet_link_config {
    // SAFETY: all-zero is a valid cnet_link_config (NULL pointers, 0, false).
    unsafe { std::mem::zeroed() }
}

fn link_get(ns: &Ns, name: &CStr) -> cnet_link {
    let mut l = std::mem::MaybeUninit::<cnet_link>::uninit();
    ok(|e| cnet_link_get(ns.h, name.as_ptr(), l.as_mut_ptr(), e));
    // SAFETY: written by the successful call.
    unsafe { l.assume_init() }
}

#[test]
fn macvlan_add_and_stats_against_ip_link_and_ping() {
    if !privileged() {
        return;
    }
    let ns = Ns::new("mv");
    let peer = Ns::new("mvp");
    // a0 here, b0 in the peer namespace; the macvlan mv0 on a0.
    let mut v = zero_link();
    v.kind = CNET_LINK_VETH;
    v.name = c"a0".as_ptr();
    v.peer_name = c"b0".as_ptr();
    v.peer_netns = peer.ns;
    v.up = true;
    v.peer_up = true;
    ok(|e| cnet_link_add(ns.h, &v, e));
    let mut m = zero_link();
    m.kind = CNET_LINK_MACVLAN;
    m.name = c"mv0".as_ptr();
    m.dev = c"a0".as_ptr();
    m.macvlan_mode = CNET_MACVLAN_BRIDGE;
    m.mac = c"02:00:00:00:0a:01".as_ptr();
    m.mtu = 1400;
    m.up = true;
    ok(|e| cnet_link_add(ns.h, &m, e));
    let j = ns.ip(&["-d", "link", "show", "mv0"]);
    let info = &j[0]["linkinfo"];
    assert_eq!(info["info_kind"], "macvlan", "{j}");
    assert_eq!(info["info_data"]["mode"], "bridge", "{j}");
    assert_eq!(j[0]["link"], "a0", "{j}");
    assert_eq!(j[0]["address"], "02:00:00:00:0a:01", "{j}");
    assert_eq!(j[0]["mtu"], 1400, "{j}");
    let l = link_get(&ns, c"mv0");
    assert_eq!(
        (l.kind, s(&l.kind_name), l.mtu, l.up),
        (CNET_LINK_MACVLAN, "macvlan".into(), 1400, true)
    );
    assert_eq!(l.mac, [2, 0, 0, 0, 0x0a, 1]);
    // ensure accepts the same, says what differs otherwise.
    ok(|e| cnet_link_ensure(ns.h, &m, null_mut(), e));
    m.macvlan_mode = CNET_MACVLAN_PRIVATE;
    let mut err = null_mut();
    assert_eq!(
        cnet_link_ensure(ns.h, &m, null_mut(), &mut err),
        CNET_MISMATCH
    );
    cnet_error_free(err);

    // Traffic through the macvlan: its counters as ip reads them.
    ok(|e| cnet::addr::cnet_addr_add(ns.h, c"mv0".as_ptr(), c"192.0.2.1/24".as_ptr(), e));
    ok(|e| cnet::addr::cnet_addr_add(peer.h, c"b0".as_ptr(), c"192.0.2.2/24".as_ptr(), e));
    let st = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "5",
            "192.0.2.2",
        ])
        .output()
        .expect("ping");
    assert!(st.status.success(), "ping over the macvlan: {st:?}");
    let read_ip = || {
        let j = ns.ip(&["-s", "link", "show", "mv0"]);
        let t = &j[0]["stats64"];
        (
            t["tx"]["packets"].as_u64().unwrap(),
            t["rx"]["packets"].as_u64().unwrap(),
            t["tx"]["bytes"].as_u64().unwrap(),
        )
    };
    let before = read_ip();
    let l = link_get(&ns, c"mv0");
    let after = read_ip();
    assert!(l.has_stats);
    let ours = (l.stats.tx_packets, l.stats.rx_packets, l.stats.tx_bytes);
    assert!(
        before.0 <= ours.0 && ours.0 <= after.0,
        "{before:?} {ours:?} {after:?}"
    );
    assert!(
        before.1 <= ours.1 && ours.1 <= after.1,
        "{before:?} {ours:?} {after:?}"
    );
    assert!(
        before.2 <= ours.2 && ours.2 <= after.2,
        "{before:?} {ours:?} {after:?}"
    );
    assert!(
        ours.0 >= 3 && ours.1 >= 3,
        "3 echo requests out, 3 replies in: {ours:?}"
    );
    // The listed links carry the same counters.
    let mut list = null_mut();
    ok(|e| cnet_link_list(ns.h, &mut list, e));
    // SAFETY: a live list.
    let items = unsafe { std::slice::from_raw_parts((*list).items, (*list).len) };
    let mv = items.iter().find(|l| s(&l.name) == "mv0").unwrap();
    assert!(mv.has_stats && mv.stats.tx_packets >= ours.0);
    cnet_link_array_free(list);
    ok(|e| cnet_link_delete(ns.h, c"mv0".as_ptr(), e));
    assert_eq!(
        ns.ip(&["link", "show", "a0"])[0]["ifname"],
        "a0",
        "the parent stays"
    );
}

// ------------------------------------------------------------------ nodes

/// `f` fails with `CNET_PARTIAL`; its message.
fn partial(f: impl FnOnce(*mut *mut cnet_error) -> cnet_result) -> String {
    let mut err = null_mut();
    let rc = f(&mut err);
    // SAFETY: a failing call leaves a live error.
    let m = unsafe { CStr::from_ptr(cnet_error_message(err)) }
        .to_string_lossy()
        .into_owned();
    assert_eq!(rc, CNET_PARTIAL, "{m}");
    assert_eq!(cnet_error_code(err), CNET_PARTIAL);
    cnet_error_free(err);
    m
}

/// A report's outcomes as (name, path, code, message).
fn outcomes(r: *const cnet_peer_report) -> Vec<(String, cnet_peer_path, cnet_result, String)> {
    let opt = |p: *const c_char| {
        // SAFETY: report strings are NULL or NUL-terminated while it lives.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    };
    // SAFETY: a live report; `outcomes` has `outcomes_len` entries.
    let r = unsafe { &*r };
    let all = unsafe { std::slice::from_raw_parts(r.outcomes, r.outcomes_len) };
    assert_eq!(
        all.iter().filter(|o| o.path == CNET_PEER_FAILED).count(),
        r.failed
    );
    all.iter()
        .map(|o| {
            assert_eq!(o.code == CNET_OK, o.message.is_null());
            (
                opt(o.name).unwrap_or_default(),
                o.path,
                o.code,
                opt(o.message).unwrap_or_default(),
            )
        })
        .collect()
}

/// The node's routes (protocol 119) as `ip -j route` lists them: (dst, gateway).
fn node_routes(ns: &Ns) -> Vec<(String, String)> {
    let j = ns.ip(&["route", "show", "proto", "119"]);
    let mut v: Vec<(String, String)> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dst"].as_str().unwrap().to_string(),
                r["gateway"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn peer(name: &CStr, subnet: &CStr, underlay: &CStr) -> cnet_peer {
    cnet_peer {
        name: name.as_ptr(),
        subnet: subnet.as_ptr(),
        underlay: underlay.as_ptr(),
        vtep_mac: null(),
        wireguard_key: null(),
    }
}

#[test]
fn node_reconcile_with_a_failing_peer_is_partial_and_programs_the_others() {
    if !privileged() {
        return;
    }
    let ns = Ns::new("node");
    veth_underlay(&ns);
    // 198.51.100.0/24 is another segment, behind a router.
    ns.run(&["route", "add", "198.51.100.0/24", "via", "192.0.2.254"]);

    // The node's own lease, and three peers' leases in a file store.
    let dir = std::env::temp_dir().join(format!("cnet-ffo-node-{}", std::process::id()));
    let d = CString::new(dir.to_str().unwrap()).unwrap();
    let mut store = null_mut();
    ok(|e| cnet_ipam_store_open_file(d.as_ptr(), &mut store, e));
    // SAFETY: all-zero is a valid cnet_subnet_config / cnet_node_attrs.
    let mut sc: cnet_subnet_config = unsafe { std::mem::zeroed() };
    sc.network = c"10.244.0.0/16".as_ptr();
    let mut leases = null_mut();
    ok(|e| cnet_ipam_store_leases(store, &sc, &mut leases, e));
    let mut subnets = Vec::new();
    for (node, underlay) in [
        (c"me", Some(c"192.0.2.1")),
        (c"l-near", Some(c"192.0.2.2")),
        (c"l-far", Some(c"198.51.100.5")),
        (c"l-bare", None),
    ] {
        // SAFETY: as above.
        let mut at: cnet_node_attrs = unsafe { std::mem::zeroed() };
        at.underlay_ip = underlay.map_or(null(), |u| u.as_ptr());
        at.backend = c"host-gw".as_ptr();
        let mut l = null_mut();
        ok(|e| cnet_leases_acquire(leases, node.as_ptr(), &at, 600, &mut l, e));
        // SAFETY: a live lease.
        subnets.push(s(unsafe { &(*l).subnet }));
        cnet_lease_free(l);
    }

    // The node is made through a handle freed at once: it keeps its own.
    let mut h = null_mut();
    ok(|e| cnet_handle_new(ns.ns, &mut h, e));
    let own = CString::new(subnets[0].as_str()).unwrap();
    // SAFETY: all-zero is a valid cnet_node_config.
    let mut nc: cnet_node_config = unsafe { std::mem::zeroed() };
    nc.name = c"me".as_ptr();
    nc.subnet = own.as_ptr();
    nc.underlay_dev = c"a0".as_ptr();
    nc.underlay_ip = c"192.0.2.1".as_ptr();
    let mut node = null_mut();
    ok(|e| cnet_node_new(h, &nc, &mut node, e));
    cnet_handle_free(h);
    // SAFETY: all-zero is a valid cnet_backend; kind host-gw.
    let mut be: cnet_backend = unsafe { std::mem::zeroed() };
    be.kind = CNET_BACKEND_HOST_GW;

    // Peers: two on the segment, one off it (host-gw cannot reach it).
    let peers = [
        peer(c"near-a", c"10.245.2.0/24", c"192.0.2.2"),
        peer(c"far", c"10.245.4.0/24", c"198.51.100.5"),
        peer(c"near-b", c"10.245.3.0/24", c"192.0.2.3"),
    ];
    let mut rep = null_mut();
    let m = partial(|e| cnet_node_reconcile_peers(node, &be, peers.as_ptr(), 3, &mut rep, e));
    assert!(m.contains("far") && m.contains("2 peers programmed"), "{m}");
    let got = outcomes(rep);
    println!("reconcile_peers outcomes: {got:?}");
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[..2]
            .iter()
            .map(|o| (o.0.as_str(), o.1, o.2))
            .collect::<Vec<_>>(),
        [
            ("near-a", CNET_PEER_DIRECT, CNET_OK),
            ("near-b", CNET_PEER_DIRECT, CNET_OK)
        ]
    );
    let (name, path, code, msg) = &got[2];
    assert_eq!(
        (name.as_str(), *path, *code),
        ("far", CNET_PEER_FAILED, CNET_CONFLICT),
        "{msg}"
    );
    assert!(msg.contains("198.51.100.5"), "{msg}");
    // SAFETY: a live report.
    let r = unsafe { &*rep };
    assert_eq!((r.direct, r.failed, r.routes.added), (2, 1, 2));
    cnet_peer_report_free(rep);
    let want = vec![
        ("10.245.2.0/24".to_string(), "192.0.2.2".to_string()),
        ("10.245.3.0/24".to_string(), "192.0.2.3".to_string()),
    ];
    assert_eq!(node_routes(&ns), want);
    // Again without a report: still PARTIAL, nothing written.
    partial(|e| cnet_node_reconcile_peers(node, &be, peers.as_ptr(), 3, null_mut(), e));
    assert_eq!(node_routes(&ns), want);

    // From the leases: its own skipped, l-near programmed (the peers of the
    // previous call removed), l-far off its segment, l-bare without an
    // underlay address.
    let mut rep = null_mut();
    let m = partial(|e| cnet_node_reconcile_leases(node, &be, leases, &mut rep, e));
    assert!(m.contains("l-far") && m.contains("l-bare"), "{m}");
    let got = outcomes(rep);
    println!("reconcile_leases outcomes: {got:?}");
    assert_eq!(got.len(), 3);
    assert_eq!((got[0].0.as_str(), got[0].1), ("l-near", CNET_PEER_DIRECT));
    let failed: Vec<(&str, cnet_result)> = got[1..].iter().map(|o| (o.0.as_str(), o.2)).collect();
    assert!(failed.contains(&("l-far", CNET_CONFLICT)), "{got:?}");
    assert!(
        failed.iter().any(|f| f.0 == "l-bare" && f.1 != CNET_OK),
        "{got:?}"
    );
    cnet_peer_report_free(rep);
    assert_eq!(
        node_routes(&ns),
        vec![(subnets[1].clone(), "192.0.2.2".to_string())]
    );

    let mut rep = null_mut();
    ok(|e| cnet_node_teardown(node, &mut rep, e));
    // SAFETY: a live report.
    assert_eq!(unsafe { (*rep).failed }, 0);
    cnet_peer_report_free(rep);
    assert!(node_routes(&ns).is_empty());
    cnet_node_free(node);
    cnet_leases_free(leases);
    cnet_ipam_store_free(store);
    std::fs::remove_dir_all(dir).ok();
}
