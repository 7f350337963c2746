//! Tests of features this machine's kernel lacks (ipip). On the host they
//! assert that the library reports `Unsupported` with the kernel's words; in
//! the VM (`tools/vm/run`, a stock Debian kernel, `CNET_IN_VM=1`) the feature
//! must exist and the tests prove it end to end. `scripts/test` runs this
//! binary in both places.

mod common;

use cnet_core::addr::AddressSpec;
use cnet_core::link::{IpIp, LinkKind, Veth};
use cnet_core::Error;
use common::{privileged, TestNs};

/// Whether this kernel must have ipip: in the VM it must, else we probe.
fn expect_ipip() -> bool {
    let has = common::kernel_has("ipip");
    if std::env::var_os("CNET_IN_VM").is_some() {
        assert!(has, "the VM's kernel must provide ipip");
    }
    eprintln!("kernel has ipip: {has}");
    has
}

#[test]
fn ipip_is_created_and_read_back_or_unsupported_with_kernel_text() {
    if !privileged() {
        return;
    }
    let has_ipip = expect_ipip();
    let t = TestNs::new("ipip");
    let h = t.handle();
    h.links().add(Veth::new("under0", "under0p")).unwrap();
    let r = h.links().add(
        IpIp::new("tun0")
            .local("192.0.2.1".parse().unwrap())
            .remote("192.0.2.2".parse().unwrap())
            .ttl(64)
            .pmtudisc(true)
            .dev("under0")
            .mtu(1480),
    );
    if has_ipip {
        r.unwrap();
        let j = t.link_json("tun0");
        let d = &j["linkinfo"]["info_data"];
        assert_eq!(j["linkinfo"]["info_kind"], "ipip");
        assert_eq!(d["local"], "192.0.2.1");
        assert_eq!(d["remote"], "192.0.2.2");
        assert_eq!(d["ttl"], 64);
        assert_eq!(d["pmtudisc"], true);
        assert_eq!(d["link"], "under0");
        assert_eq!(j["mtu"], 1480);
        let l = h.links().get("tun0").unwrap();
        assert_eq!(l.kind, LinkKind::IpIp);
        let cnet_core::link::LinkDetails::IpIp(i) = &l.details else {
            panic!("{l:?}")
        };
        assert_eq!(i.local, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(i.remote, Some("192.0.2.2".parse().unwrap()));
        assert_eq!(i.ttl, Some(64));
        // ensure: compatible passes, a different remote is named.
        h.links()
            .ensure(IpIp::new("tun0").remote("192.0.2.2".parse().unwrap()))
            .unwrap();
        let e = h
            .links()
            .ensure(IpIp::new("tun0").remote("192.0.2.9".parse().unwrap()))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("remote: have 192.0.2.2, want 192.0.2.9"),
            "{e}"
        );
        // A second any/any tunnel clashes with the fallback tunl0: said plainly.
        let e = h.links().add(IpIp::new("tun9")).unwrap_err();
        assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
        assert!(e.to_string().contains("tunl0"), "{e}");
    } else {
        let e = r.unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
        assert_eq!(e.kernel_message(), Some("Unknown device type"), "{e}");
        assert!(e.to_string().contains("tun0"), "{e}");
        assert!(
            h.links().find("tun0").unwrap().is_none(),
            "nothing half-made"
        );
    }
}

#[test]
fn ipip_overlay_between_two_namespaces_pings() {
    if !privileged() {
        return;
    }
    let has_ipip = expect_ipip();
    let a = TestNs::new("ipa");
    let b = TestNs::new("ipb");
    let (ha, hb) = (a.handle(), b.handle());
    ha.links()
        .add(Veth::new("ul0", "ul0").peer_netns(&b.ns).up().peer_up())
        .unwrap();
    ha.addrs()
        .add("ul0", "192.0.2.1/24".parse().unwrap())
        .unwrap();
    hb.addrs()
        .add("ul0", "192.0.2.2/24".parse().unwrap())
        .unwrap();
    let mut made = Vec::new();
    for (h, local, remote) in [
        (&ha, "192.0.2.1", "192.0.2.2"),
        (&hb, "192.0.2.2", "192.0.2.1"),
    ] {
        made.push(
            h.links().add(
                IpIp::new("tun0")
                    .local(local.parse().unwrap())
                    .remote(remote.parse().unwrap())
                    .dev("ul0")
                    .up(),
            ),
        );
    }
    if !has_ipip {
        for r in made {
            assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
        }
        return;
    }
    for r in made {
        r.unwrap();
    }
    // Point-to-point overlay addresses: the peer address installs the route.
    ha.addrs()
        .add_spec(
            &AddressSpec::new("tun0", "10.244.1.1/32".parse().unwrap())
                .peer("10.244.2.1".parse().unwrap()),
        )
        .unwrap();
    hb.addrs()
        .add_spec(
            &AddressSpec::new("tun0", "10.244.2.1/32".parse().unwrap())
                .peer("10.244.1.1".parse().unwrap()),
        )
        .unwrap();
    assert!(a.ping("10.244.2.1"), "ping across the ipip overlay");
    assert!(b.ping("10.244.1.1"), "and back");
    let j = a.ip_json(&["-s", "link", "show", "dev", "tun0"]);
    let tx = j[0]["stats64"]["tx"]["packets"].as_u64().unwrap_or(0);
    assert!(tx >= 1, "packets went through tun0: {j}");
}
