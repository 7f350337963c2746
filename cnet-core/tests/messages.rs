//! Snapshots of the exact netlink messages each builder produces. No
//! privileges needed: messages are built, not sent. Device names resolve
//! through a fixed map, so the snapshots are stable; this is how the ipip
//! encoding is pinned on kernels that cannot create ipip.

use cnet_core::fdb::FdbEntry;
use cnet_core::link::{
    Bridge, Dummy, IpIp, IpVlan, IpVlanMode, LinkRef, LinkSpec, MacVlan, MacVlanMode, Veth, Vlan,
    VlanProtocol, Vxlan, WireGuard,
};
use cnet_core::neigh::Neighbour;
use cnet_core::nexthop::{id_message, Nexthop, NexthopFilter, NexthopMessage};
use cnet_core::route::{NextHop, Route};
use cnet_core::{Error, Result};
use netlink_packet_core::Emitable;

fn resolve(r: &LinkRef) -> Result<u32> {
    match r {
        LinkRef::Index(i) => Ok(*i),
        LinkRef::Name(n) if n == "eth0" => Ok(2),
        LinkRef::Name(n) if n == "cni0" => Ok(3),
        LinkRef::Name(n) => Err(Error::NotFound {
            context: format!("link {n}"),
            kernel: None,
        }),
    }
}

fn render(spec: &dyn LinkSpec) -> String {
    spec.validate().unwrap();
    render_msg(&spec.message(&resolve).unwrap())
}

fn render_route(r: &Route) -> String {
    r.validate().unwrap();
    render_msg(&r.message(&resolve).unwrap())
}

fn render_msg<M: Emitable + std::fmt::Debug>(msg: &M) -> String {
    let mut bytes = vec![0u8; msg.buffer_len()];
    msg.emit(&mut bytes);
    let hex: Vec<String> = bytes
        .chunks(16)
        .map(|c| {
            c.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    format!(
        "{msg:#?}\n--- {} bytes ---\n{}\n",
        bytes.len(),
        hex.join("\n")
    )
}

#[test]
fn veth_message() {
    insta::assert_snapshot!(render(
        &Veth::new("veth-a", "eth0")
            .mtu(1450)
            .mac("02:00:00:00:00:01".parse().unwrap())
            .master("cni0")
    ));
}

#[test]
fn bridge_message() {
    insta::assert_snapshot!(render(&Bridge::new("cni0").mtu(1450).stp(false).up()));
}

#[test]
fn vxlan_message() {
    insta::assert_snapshot!(render(
        &Vxlan::new("flannel.1", 1)
            .local("192.0.2.11".parse().unwrap())
            .dev("eth0")
            .learning(false)
            .ttl(64)
            .udp_csum(false)
            .mtu(1450)
    ));
}

#[test]
fn ipip_message() {
    insta::assert_snapshot!(render(
        &IpIp::new("tunl0")
            .local("192.0.2.11".parse().unwrap())
            .remote("192.0.2.12".parse().unwrap())
            .ttl(64)
            .pmtudisc(true)
            .dev("eth0")
            .mtu(1480)
    ));
}

#[test]
fn macvlan_message() {
    insta::assert_snapshot!(render(
        &MacVlan::new("mv0", "eth0")
            .mode(MacVlanMode::Bridge)
            .mac("02:00:00:00:00:21".parse().unwrap())
            .up()
    ));
}

#[test]
fn ipvlan_message() {
    insta::assert_snapshot!(render(
        &IpVlan::new("ipvl0", "eth0").mode(IpVlanMode::L2).mtu(1400)
    ));
}

#[test]
fn vlan_message() {
    insta::assert_snapshot!(render(
        &Vlan::new("eth0.100", "eth0", 100)
            .protocol(VlanProtocol::Dot1Ad)
            .master("cni0")
    ));
}

#[test]
fn dummy_message() {
    insta::assert_snapshot!(render(&Dummy::new("dummy0").mtu(9000).up()));
}

#[test]
fn wireguard_message() {
    insta::assert_snapshot!(render(&WireGuard::new("wg0").mtu(1420).up()));
}

#[test]
fn parented_kinds_refuse_bad_input_without_privileges() {
    let bad: [&dyn LinkSpec; 5] = [
        &Vlan::new("v0", "eth0", 4095),
        &Vlan::new("eth0", "eth0", 1),
        &MacVlan::new("mv0", "bad/name"),
        &IpVlan::new("ipvl0", "eth0").mac("02:00:00:00:00:01".parse().unwrap()),
        &Dummy::new("a-name-too-long-0"),
    ];
    for s in bad {
        assert!(
            matches!(s.validate(), Err(Error::InvalidArgument { .. })),
            "{}",
            s.name()
        );
    }
    let e = MacVlan::new("mv0", "missing0")
        .message(&resolve)
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[test]
fn unresolvable_device_is_not_found() {
    let e = Vxlan::new("vx0", 1)
        .dev("missing0")
        .message(&resolve)
        .unwrap_err();
    assert!(e.is_not_found());
}

#[test]
fn route_gateway_dev_onlink_message() {
    insta::assert_snapshot!(render_route(
        &Route::to("10.244.2.0/24".parse().unwrap())
            .via("192.0.2.12".parse().unwrap())
            .dev("eth0")
            .onlink()
            .metric(100)
    ));
}

#[test]
fn route_multipath_message() {
    insta::assert_snapshot!(render_route(
        &Route::to("10.244.0.0/16".parse().unwrap())
            .nexthop(
                NextHop::new()
                    .via("192.0.2.12".parse().unwrap())
                    .dev("eth0")
                    .weight(2)
            )
            .nexthop(
                NextHop::new()
                    .via("192.0.2.13".parse().unwrap())
                    .dev("cni0")
            )
            .table(100)
    ));
}

#[test]
fn route_blackhole_message() {
    insta::assert_snapshot!(render_route(
        &Route::to("10.244.9.0/24".parse().unwrap()).blackhole()
    ));
}

#[test]
fn neighbour_message() {
    let n = Neighbour::new(
        "eth0",
        "10.244.2.0".parse().unwrap(),
        "02:00:00:00:00:12".parse().unwrap(),
    );
    n.validate().unwrap();
    insta::assert_snapshot!(render_msg(&n.message(&resolve).unwrap()));
}

#[test]
fn fdb_entry_message() {
    let e = FdbEntry::new("02:00:00:00:00:12".parse().unwrap(), "eth0")
        .dst("192.0.2.12".parse().unwrap())
        .vni(1);
    e.validate().unwrap();
    insta::assert_snapshot!(render_msg(&e.message(&resolve).unwrap()));
}

#[test]
fn route_validation_refuses_bad_input_without_privileges() {
    let bad = [
        Route::to("10.0.0.1/24".parse().unwrap()).dev("eth0"),
        Route::to("10.0.0.0/24".parse().unwrap()).via("2001:db8::1".parse().unwrap()),
        Route::to("10.0.0.0/24".parse().unwrap())
            .dev("eth0")
            .table(0),
        Route::to("10.0.0.0/24".parse().unwrap())
            .via("192.0.2.1".parse().unwrap())
            .onlink(),
    ];
    for r in bad {
        assert!(
            matches!(r.validate(), Err(Error::InvalidArgument { .. })),
            "{r}"
        );
    }
}

#[test]
fn rule_message() {
    let r = cnet_core::rule::Rule::v4()
        .priority(100)
        .from("10.244.1.0/24".parse().unwrap())
        .iif("eth0")
        .fwmark_masked(0x10, 0xff)
        .table(100);
    r.validate().unwrap();
    insta::assert_snapshot!(render_msg(&r.message()));
}

/// A nexthop payload (hand-encoded by `cnet_core::nexthop`, which
/// netlink-packet-route lacks): the parsed form and the bytes.
fn render_nexthop(nh: &Nexthop) -> String {
    nh.validate().unwrap();
    let msg = nh.message(&resolve).unwrap();
    let bytes = msg.to_bytes();
    assert_eq!(NexthopMessage::parse(&bytes).as_ref(), Some(&msg));
    let hex: Vec<String> = bytes
        .chunks(16)
        .map(|c| {
            c.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    format!(
        "{nh}\n{msg:#?}\n--- {} bytes ---\n{}\n",
        bytes.len(),
        hex.join("\n")
    )
}

#[test]
fn nexthop_gateway_message() {
    insta::assert_snapshot!(render_nexthop(
        &Nexthop::new(1)
            .via("192.0.2.2".parse().unwrap())
            .dev("eth0")
            .onlink()
    ));
}

#[test]
fn nexthop_v6_gateway_message() {
    insta::assert_snapshot!(render_nexthop(
        &Nexthop::new(2).via("2001:db8::2".parse().unwrap())
    ));
}

#[test]
fn nexthop_dev_and_blackhole_messages() {
    insta::assert_snapshot!(format!(
        "{}{}",
        render_nexthop(&Nexthop::new(3).dev("cni0")),
        render_nexthop(&Nexthop::blackhole(4))
    ));
}

#[test]
fn nexthop_group_message() {
    insta::assert_snapshot!(render_nexthop(&Nexthop::group(
        10,
        &[(1, 1), (2, 3), (3, 256)]
    )));
}

#[test]
fn nexthop_delete_and_filtered_dump_messages() {
    let filter = NexthopFilter::new().dev("eth0").groups();
    insta::assert_snapshot!(format!(
        "{:#?}\n{:02x?}\n{:#?}\n{:02x?}\n",
        id_message(7),
        id_message(7).to_bytes(),
        filter.message(&resolve).unwrap(),
        filter.message(&resolve).unwrap().to_bytes()
    ));
}

#[test]
fn route_via_nexthop_object_message() {
    insta::assert_snapshot!(render_route(
        &Route::to("10.244.2.0/24".parse().unwrap()).nexthop_id(10)
    ));
}
