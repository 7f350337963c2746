//! Policy routing rules, read back with `ip -j rule show` and proven with
//! traffic (a source-based rule sends a ping out another uplink).

mod common;

use cnet_core::link::Veth;
use cnet_core::route::{Family, Route, PROTOCOL};
use cnet_core::rule::{Rule, RuleAction, RuleOwner};
use cnet_core::Error;
use common::{privileged, TestNs};
use serde_json::Value;

fn net(s: &str) -> cnet_core::IpNet {
    s.parse().unwrap()
}

/// `ip -j [-6] rule show`, as a list.
fn ip_rules(t: &TestNs, v6: bool) -> Vec<Value> {
    let args: &[&str] = if v6 {
        &["-6", "rule", "show"]
    } else {
        &["-4", "rule", "show"]
    };
    t.ip_json(args).as_array().unwrap().clone()
}

fn at(v: &[Value], prio: u64) -> Vec<&Value> {
    v.iter().filter(|r| r["priority"] == prio).collect()
}

#[test]
fn rules_of_both_families_read_back_like_ip_shows_them() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("rule");
    let h = t.handle();
    let r = h.rules();
    let v4 = Rule::v4()
        .priority(100)
        .from(net("10.244.1.0/24"))
        .to(net("198.51.100.0/24"))
        .iif("lo")
        .fwmark_masked(0x10, 0xff)
        .table(100);
    let v4b = Rule::v4().priority(101).invert().oif("eth9").table(100_000);
    let v4c = Rule::v4()
        .priority(102)
        .from(net("10.244.9.0/24"))
        .blackhole();
    let v6 = Rule::v6()
        .priority(100)
        .from(net("2001:db8:1::/48"))
        .fwmark(7)
        .table(200);
    for x in [&v4, &v4b, &v4c, &v6] {
        r.add(x).unwrap();
    }

    // The independent reader.
    let j4 = ip_rules(&t, false);
    let a = at(&j4, 100)[0];
    assert_eq!(a["src"], "10.244.1.0", "{a}");
    assert_eq!(a["srclen"], 24);
    assert_eq!(a["dst"], "198.51.100.0");
    assert_eq!(a["dstlen"], 24);
    assert_eq!(a["iif"], "lo");
    assert_eq!(a["fwmark"], "0x10");
    assert_eq!(a["fwmask"], "0xff");
    assert_eq!(a["table"], "100");
    assert_eq!(a["protocol"], PROTOCOL.to_string());
    let b = at(&j4, 101)[0];
    assert!(b.get("not").is_some(), "{b}");
    assert_eq!(b["oif"], "eth9");
    assert_eq!(b["table"], "100000");
    assert_eq!(at(&j4, 102)[0]["action"], "blackhole");
    let j6 = ip_rules(&t, true);
    let c = at(&j6, 100)[0];
    assert_eq!(c["src"], "2001:db8:1::");
    assert_eq!(c["srclen"], 48);
    assert_eq!(c["fwmark"], "0x7");
    assert_eq!(c["table"], "200");

    // The library's own listing agrees, and keeps the kernel's defaults.
    let all = r.list(None).unwrap();
    for x in [&v4, &v4b, &v4c, &v6] {
        assert!(all.contains(&x.expected()), "{x} not in {all:#?}");
    }
    let main = all
        .iter()
        .find(|e| e.family == Family::V4 && e.priority == 32766)
        .unwrap();
    assert_eq!(main.action, RuleAction::Lookup(254));
    assert_eq!(main.protocol, 2, "kernel's own rule: proto kernel");
    assert_eq!(r.list(Some(Family::V6)).unwrap().len(), j6.len());

    // add twice: AlreadyExists; delete; delete again: NotFound, or fine.
    let e = r.add(&v4).unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
    assert!(e.to_string().contains("priority 100"), "{e}");
    r.delete(&v4).unwrap();
    assert!(at(&ip_rules(&t, false), 100).is_empty());
    assert!(r.delete(&v4).unwrap_err().is_not_found());
    assert!(!r.delete_if_exists(&v4).unwrap());
    assert!(r.delete_if_exists(&v6).unwrap());
    assert!(at(&ip_rules(&t, true), 100).is_empty());
    // Bad input is refused before anything is sent, naming the rule.
    let e = r
        .add(Rule::v4().priority(5).from(net("2001:db8::/32")))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    assert!(e.to_string().contains("another address family"), "{e}");
}

#[test]
fn rules_reconcile_owns_only_its_protocol_by_priority() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("rulerc");
    let h = t.handle();
    let r = h.rules();
    // Someone else's rule at a priority we also use, and the defaults.
    t.ip(&[
        "rule",
        "add",
        "priority",
        "200",
        "from",
        "10.9.0.0/16",
        "table",
        "9",
        "protocol",
        "static",
    ]);
    let before = ip_rules(&t, false).len() + ip_rules(&t, true).len();
    let owner = RuleOwner::default();
    let mut want = vec![
        Rule::v4()
            .priority(200)
            .from(net("10.244.1.0/24"))
            .table(100),
        Rule::v4().priority(201).fwmark(1).table(101),
        Rule::v6()
            .priority(200)
            .from(net("2001:db8:1::/64"))
            .table(100),
    ];
    let rep = r.reconcile(&owner, &want).unwrap().into_result().unwrap();
    assert_eq!((rep.added, rep.unchanged), (3, 0));
    let rep = r.reconcile(&owner, &want).unwrap();
    assert!(rep.is_noop(), "{rep:?}");
    assert_eq!(rep.unchanged, 3);

    // A change at priority 201 is replaced; 200 (v6) dropped is deleted.
    want[1] = Rule::v4().priority(201).fwmark(2).table(101);
    want.pop();
    let rep = r.reconcile(&owner, &want).unwrap().into_result().unwrap();
    assert_eq!((rep.replaced, rep.deleted, rep.unchanged), (1, 1, 1));
    let j4 = ip_rules(&t, false);
    let p201 = at(&j4, 201);
    assert_eq!(p201.len(), 1, "old rule gone after its replacement: {j4:?}");
    assert_eq!(p201[0]["fwmark"], "0x2");
    let p200 = at(&j4, 200);
    assert_eq!(p200.len(), 2, "ours and the foreign one: {j4:?}");
    assert!(p200.iter().any(|x| x["protocol"] == "static"));
    assert!(at(&ip_rules(&t, true), 200).is_empty());
    assert_eq!(
        ip_rules(&t, false).len() + ip_rules(&t, true).len(),
        before + 2
    );

    // Someone deletes ours: the next reconcile puts it back.
    t.ip(&["rule", "del", "priority", "201", "protocol", "119"]);
    let rep = r.reconcile(&owner, &want).unwrap().into_result().unwrap();
    assert_eq!(rep.added, 1);

    // A rule without priority has no identity: reported, rest applied.
    let rep = r
        .reconcile(&owner, &[want[0].clone(), Rule::v4().table(5)])
        .unwrap();
    assert_eq!(rep.deleted, 1, "priority 201 no longer wanted");
    let e = rep.into_result().unwrap_err();
    assert!(matches!(&e, Error::Partial { errors, .. } if errors.len() == 1));
    assert!(e.to_string().contains("needs a priority"), "{e}");

    // Empty set: ours gone, the foreign rule and defaults stay.
    let rep = r.reconcile(&owner, &[]).unwrap().into_result().unwrap();
    assert_eq!(rep.deleted, 1);
    assert!(r.list(None).unwrap().iter().all(|e| e.protocol != PROTOCOL));
    assert_eq!(ip_rules(&t, false).len() + ip_rules(&t, true).len(), before);
}

/// host ── up1 (192.0.2.1) ──── x: 192.0.2.2, no 203.0.113.1
///      ── up2 (198.51.100.1) ─ y: 198.51.100.2, 203.0.113.1 on lo
/// Main table sends 203.0.113.0/24 to x (which drops it); a rule `from
/// 198.51.100.1 table 100` sends pings from up2's address to y.
#[test]
fn rules_source_based_routing_carries_traffic() {
    if !privileged() {
        return;
    }
    let host = TestNs::new("rsh");
    let x = TestNs::new("rsx");
    let y = TestNs::new("rsy");
    let h = host.handle();
    h.links()
        .add(Veth::new("up1", "dn").peer_netns(&x.ns).up().peer_up())
        .unwrap();
    h.links()
        .add(Veth::new("up2", "dn").peer_netns(&y.ns).up().peer_up())
        .unwrap();
    h.addrs().add("up1", net("192.0.2.1/24")).unwrap();
    h.addrs().add("up2", net("198.51.100.1/24")).unwrap();
    x.handle().addrs().add("dn", net("192.0.2.2/24")).unwrap();
    let hy = y.handle();
    hy.addrs().add("dn", net("198.51.100.2/24")).unwrap();
    hy.addrs().add("lo", net("203.0.113.1/32")).unwrap();
    h.routes()
        .add(Route::to(net("203.0.113.0/24")).via("192.0.2.2".parse().unwrap()))
        .unwrap();
    h.routes()
        .add(
            Route::to(net("203.0.113.0/24"))
                .via("198.51.100.2".parse().unwrap())
                .table(100),
        )
        .unwrap();
    let ping_from =
        |src: &str| host.exec_ok(&["ping", "-c", "1", "-W", "1", "-I", src, "203.0.113.1"]);
    assert!(
        !ping_from("198.51.100.1"),
        "no rule yet: main table, x drops"
    );
    let rule = Rule::v4()
        .priority(1000)
        .from(net("198.51.100.1/32"))
        .table(100);
    let rep = h
        .rules()
        .reconcile(&RuleOwner::default(), std::slice::from_ref(&rule))
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(rep.added, 1);
    assert!(ping_from("198.51.100.1"), "the rule sends it via y");
    assert!(!ping_from("192.0.2.1"), "other sources still use main");
    let got = h
        .routes()
        .lookup(
            &cnet_core::route::RouteQuery::new("203.0.113.1".parse().unwrap())
                .from("198.51.100.1".parse().unwrap()),
        )
        .unwrap();
    assert_eq!(got.dev.as_deref(), Some("up2"), "{got:?}");
    h.rules().delete(&rule).unwrap();
    assert!(!ping_from("198.51.100.1"), "rule gone: back to main");
}
