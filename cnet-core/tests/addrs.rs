//! Addresses, read back with `ip -j addr show`.

mod common;

use cnet_core::addr::{AddressSpec, Scope};
use cnet_core::link::Bridge;
use cnet_core::Error;
use common::{privileged, TestNs};

fn addr_info(t: &TestNs, dev: &str) -> Vec<serde_json::Value> {
    let v = t.ip_json(&["addr", "show", "dev", dev]);
    v[0]["addr_info"].as_array().cloned().unwrap_or_default()
}

#[test]
fn ipv4_and_ipv6_with_options_read_back() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("addr");
    let h = t.handle();
    h.links().add(Bridge::new("br0").up()).unwrap();
    h.addrs()
        .add_spec(
            &AddressSpec::new("br0", "10.244.1.1/24".parse().unwrap())
                .broadcast_auto()
                .label("br0:gw"),
        )
        .unwrap();
    h.addrs()
        .add_spec(
            &AddressSpec::new("br0", "203.0.113.1/32".parse().unwrap())
                .peer("203.0.113.2".parse().unwrap()),
        )
        .unwrap();
    h.addrs()
        .add_spec(&AddressSpec::new("br0", "2001:db8::1/64".parse().unwrap()).nodad())
        .unwrap();
    h.addrs()
        .add_spec(&AddressSpec::new("br0", "10.244.9.1/24".parse().unwrap()).scope(Scope::Link))
        .unwrap();

    let info = addr_info(&t, "br0");
    let find = |local: &str| {
        info.iter()
            .find(|a| a["local"] == local)
            .unwrap_or_else(|| panic!("{local} missing in {info:?}"))
            .clone()
    };
    let a = find("10.244.1.1");
    assert_eq!(a["prefixlen"], 24);
    assert_eq!(a["broadcast"], "10.244.1.255");
    assert_eq!(a["label"], "br0:gw");
    assert_eq!(a["scope"], "global");
    let p = find("203.0.113.1");
    assert_eq!(p["address"], "203.0.113.2");
    let v6 = find("2001:db8::1");
    assert_eq!(v6["prefixlen"], 64);
    assert_eq!(find("10.244.9.1")["scope"], "link");

    let lib = h.addrs().list(Some("br0")).unwrap();
    let l = lib
        .iter()
        .find(|a| a.local.to_string() == "10.244.1.1/24")
        .unwrap();
    assert_eq!(l.broadcast, Some("10.244.1.255".parse().unwrap()));
    assert_eq!(l.label.as_deref(), Some("br0:gw"));
    let p = lib
        .iter()
        .find(|a| a.local.to_string() == "203.0.113.1/32")
        .unwrap();
    assert_eq!(p.peer, Some("203.0.113.2".parse().unwrap()));
    assert!(lib.iter().any(|a| a.local.to_string() == "2001:db8::1/64"));
    assert_eq!(
        lib.iter()
            .find(|a| a.local.to_string() == "10.244.9.1/24")
            .unwrap()
            .scope,
        Scope::Link
    );
    // Filtered listing: lo's addresses are not in br0's list.
    assert!(lib
        .iter()
        .all(|a| a.index == h.links().index_of("br0").unwrap()));
}

#[test]
fn add_twice_replace_and_delete() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("addr2");
    let h = t.handle();
    h.links().add(Bridge::new("br0")).unwrap();
    let a = "10.244.2.1/24".parse().unwrap();
    h.addrs().add("br0", a).unwrap();
    let e = h.addrs().add("br0", a).unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
    h.addrs().replace("br0", a).unwrap();
    assert_eq!(addr_info(&t, "br0").len(), 1);
    h.addrs().delete("br0", a).unwrap();
    assert!(addr_info(&t, "br0").is_empty());
    let e = h.addrs().delete("br0", a).unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert!(!h.addrs().delete_if_exists("br0", a).unwrap());
}

#[test]
fn bad_address_input() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("addr3");
    let h = t.handle();
    h.links().add(Bridge::new("br0")).unwrap();
    let e = h
        .addrs()
        .add_spec(
            &AddressSpec::new("br0", "10.0.0.1/24".parse().unwrap())
                .peer("2001:db8::1".parse().unwrap()),
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    let e = h
        .addrs()
        .add_spec(&AddressSpec::new("br0", "10.0.0.1/24".parse().unwrap()).label("other:1"))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    assert!(addr_info(&t, "br0").is_empty());
}
