//! Snapshots of the exact netlink messages each builder produces. No
//! privileges needed: messages are built, not sent. Device names resolve
//! through a fixed map, so the snapshots are stable; this is how the ipip
//! encoding is pinned on kernels that cannot create ipip.

use cnet_core::link::{Bridge, IpIp, LinkRef, LinkSpec, Veth, Vxlan};
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
    let msg = spec.message(&resolve).unwrap();
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
fn unresolvable_device_is_not_found() {
    let e = Vxlan::new("vx0", 1)
        .dev("missing0")
        .message(&resolve)
        .unwrap_err();
    assert!(e.is_not_found());
}
