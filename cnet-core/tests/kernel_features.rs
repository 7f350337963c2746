//! Tests of features this machine's kernel lacks (ipip; dummy, vlan,
//! ipvlan and wireguard links). On the host they
//! assert that the library reports `Unsupported` with the kernel's words; in
//! the VM (`tools/vm/run`, a stock Debian kernel, `CNET_IN_VM=1`) the feature
//! must exist and the tests prove it end to end. `scripts/test` runs this
//! binary in both places.

mod common;

use cnet_core::addr::AddressSpec;
use cnet_core::link::{
    Dummy, IpIp, IpVlan, IpVlanMode, LinkDetails, LinkKind, LinkSpec, Veth, Vlan, VlanProtocol,
    WireGuard,
};
use cnet_core::Error;
use common::{privileged, TestNs};

/// On a kernel without the kind: `Unsupported` with the kernel's words,
/// naming the link, and nothing left behind.
fn assert_unsupported(h: &cnet_core::Handle, name: &str, r: cnet_core::Result<()>) {
    let e = r.unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    assert_eq!(e.kernel_message(), Some("Unknown device type"), "{e}");
    assert!(e.to_string().contains(name), "{e}");
    assert!(h.links().find(name).unwrap().is_none(), "nothing half-made");
}

#[test]
fn ipip_is_created_and_read_back_or_unsupported_with_kernel_text() {
    if !privileged() {
        return;
    }
    let has_ipip = common::kernel_expected("ipip");
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
    let has_ipip = common::kernel_expected("ipip");
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

#[test]
fn dummy_and_wireguard_are_created_and_read_back_or_unsupported() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("dumwg");
    let h = t.handle();
    let cases: [(&str, &dyn LinkSpec, LinkKind); 2] = [
        ("dummy", &Dummy::new("dum0").mtu(9000).up(), LinkKind::Dummy),
        (
            "wireguard",
            &WireGuard::new("wg0").mtu(1420).up(),
            LinkKind::WireGuard,
        ),
    ];
    for (kind, spec, want) in cases {
        let has = common::kernel_expected(kind);
        let r = h.links().add(spec);
        if !has {
            assert_unsupported(&h, spec.name(), r);
            continue;
        }
        r.unwrap();
        let j = t.link_json(spec.name());
        assert_eq!(j["linkinfo"]["info_kind"], kind, "{j}");
        let l = h.links().get(spec.name()).unwrap();
        assert_eq!(l.kind, want);
        assert_eq!(l.mtu, j["mtu"].as_u64().unwrap() as u32);
        assert!(l.is_up());
        h.links().ensure(spec).unwrap();
        if spec.name() == "wg0" {
            let e = h.links().ensure(Dummy::new("wg0")).unwrap_err();
            assert!(
                e.to_string().contains("kind: have wireguard, want dummy"),
                "{e}"
            );
        }
    }
    if common::kernel_expected("dummy") {
        // A dummy takes addresses and routes: the kernel answers for them.
        h.addrs()
            .add("dum0", "203.0.113.1/24".parse().unwrap())
            .unwrap();
        assert!(t.ping("203.0.113.1"), "own address on dum0");
        let got = h.routes().get("203.0.113.9".parse().unwrap()).unwrap();
        assert_eq!(got.dev.as_deref(), Some("dum0"), "{got:?}");
    }
}

/// Two namespaces joined by a veth; VLAN 100 (802.1Q) on each end, and a
/// second VLAN 200 that is 802.1ad: pings over the tagged link.
#[test]
fn vlan_between_two_namespaces_pings_or_unsupported() {
    if !privileged() {
        return;
    }
    let has = common::kernel_expected("vlan");
    let a = TestNs::new("vla");
    let b = TestNs::new("vlb");
    let (ha, hb) = (a.handle(), b.handle());
    ha.links()
        .add(Veth::new("ul0", "ul0").peer_netns(&b.ns).up().peer_up())
        .unwrap();
    let r = ha.links().add(Vlan::new("ul0.100", "ul0", 100).up());
    if !has {
        assert_unsupported(&ha, "ul0.100", r);
        return;
    }
    r.unwrap();
    hb.links()
        .add(Vlan::new("ul0.100", "ul0", 100).up())
        .unwrap();
    ha.links()
        .add(
            Vlan::new("ul0.200", "ul0", 200)
                .protocol(VlanProtocol::Dot1Ad)
                .up(),
        )
        .unwrap();
    let j = a.link_json("ul0.100");
    let d = &j["linkinfo"]["info_data"];
    assert_eq!(j["linkinfo"]["info_kind"], "vlan");
    assert_eq!(d["id"], 100);
    assert_eq!(d["protocol"], "802.1Q");
    assert_eq!(j["link"], "ul0");
    assert_eq!(
        a.link_json("ul0.200")["linkinfo"]["info_data"]["protocol"],
        "802.1ad"
    );
    let l = ha.links().get("ul0.200").unwrap();
    assert_eq!(l.kind, LinkKind::Vlan);
    assert_eq!(l.link, Some(ha.links().index_of("ul0").unwrap()));
    let LinkDetails::Vlan(v) = &l.details else {
        panic!("{l:?}")
    };
    assert_eq!((v.id, v.protocol), (Some(200), Some(VlanProtocol::Dot1Ad)));
    let e = ha
        .links()
        .ensure(Vlan::new("ul0.100", "ul0", 101))
        .unwrap_err();
    assert!(e.to_string().contains("id: have 100, want 101"), "{e}");

    ha.addrs()
        .add("ul0.100", "10.244.1.1/24".parse().unwrap())
        .unwrap();
    hb.addrs()
        .add("ul0.100", "10.244.1.2/24".parse().unwrap())
        .unwrap();
    assert!(a.ping("10.244.1.2"), "ping over VLAN 100");
    let s = ha.links().get("ul0.100").unwrap().stats.unwrap();
    assert!(s.tx_packets >= 1 && s.rx_packets >= 1, "{s:?}");
}

/// Two ipvlans (l2) on one parent in a host namespace, moved into two
/// namespaces: they ping each other.
#[test]
fn ipvlan_pair_pings_or_unsupported() {
    if !privileged() {
        return;
    }
    let has = common::kernel_expected("ipvlan");
    let host = TestNs::new("ivh");
    let a = TestNs::new("iva");
    let b = TestNs::new("ivb");
    let h = host.handle();
    h.links()
        .add(Veth::new("par0", "par0p").up().peer_up())
        .unwrap();
    let r = h
        .links()
        .add(IpVlan::new("ipv-a", "par0").mode(IpVlanMode::L2));
    if !has {
        assert_unsupported(&h, "ipv-a", r);
        return;
    }
    r.unwrap();
    h.links()
        .add(IpVlan::new("ipv-b", "par0").mode(IpVlanMode::L2))
        .unwrap();
    let j = host.link_json("ipv-a");
    assert_eq!(j["linkinfo"]["info_kind"], "ipvlan");
    assert_eq!(j["linkinfo"]["info_data"]["mode"], "l2");
    let l = h.links().get("ipv-a").unwrap();
    let par = h.links().get("par0").unwrap();
    assert_eq!(l.kind, LinkKind::IpVlan);
    assert_eq!(l.mac, par.mac, "an ipvlan has its parent's MAC");
    let LinkDetails::IpVlan(d) = &l.details else {
        panic!("{l:?}")
    };
    assert_eq!(d.mode, Some(IpVlanMode::L2));
    for (dev, t, addr) in [
        ("ipv-a", &a, "10.244.1.2/24"),
        ("ipv-b", &b, "10.244.1.3/24"),
    ] {
        h.links().set_netns(dev, &t.ns).unwrap();
        let th = t.handle();
        th.links().set_up(dev).unwrap();
        th.addrs().add(dev, addr.parse().unwrap()).unwrap();
    }
    assert!(a.ping("10.244.1.3"), "ipvlan a → b");
    assert!(b.ping("10.244.1.2"), "ipvlan b → a");
}
