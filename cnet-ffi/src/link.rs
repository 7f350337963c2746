//! Links: `ip link add|del|set|show` for veth, bridge, vxlan, ipip,
//! macvlan, ipvlan, vlan, dummy and wireguard devices, from a plain C
//! struct (`cnet_link_config`), read back as `cnet_link` (with counters).

use std::ffi::c_char;
use std::net::IpAddr;

use cnet_core::link::{
    Bridge, Dummy, IpIp, IpVlan, IpVlanMode, Link, LinkKind, LinkSpec, LinkStats, MacAddr, MacVlan,
    MacVlanMode, Veth, Vlan, VlanProtocol, Vxlan, WireGuard,
};
use cnet_core::Error;

use crate::boundary::{
    cnet_error, cnet_result, cstr, fill, guard, obj, opt_nonempty, out_ptr, parse_opt,
    set_if_asked, Fail, Res, CNET_INVALID_ENUM,
};
use crate::ns::{cnet_handle, cnet_netns};
use crate::out::{free_box, list_head, list_out};

/// Bytes of a link name field, NUL included (the kernel's IFNAMSIZ).
pub const CNET_IFNAMSIZ: usize = 16;
/// Bytes of an address or prefix field ("ffff:…:ffff/128"), NUL included.
pub const CNET_ADDRSTRLEN: usize = 64;

/// A link kind.
pub type cnet_link_kind = u32;
/// Any other kind (`tun`, `gre`, …; see `kind_name`).
pub const CNET_LINK_OTHER: cnet_link_kind = 0;
/// A veth pair.
pub const CNET_LINK_VETH: cnet_link_kind = 1;
/// A bridge.
pub const CNET_LINK_BRIDGE: cnet_link_kind = 2;
/// A VXLAN device.
pub const CNET_LINK_VXLAN: cnet_link_kind = 3;
/// An IP-in-IP tunnel.
pub const CNET_LINK_IPIP: cnet_link_kind = 4;
/// A device without kind (loopback, NIC); only in `cnet_link`.
pub const CNET_LINK_DEVICE: cnet_link_kind = 5;
/// A macvlan device (a second MAC address on a parent).
pub const CNET_LINK_MACVLAN: cnet_link_kind = 6;
/// An ipvlan device (a parent's MAC, its own IP addresses).
pub const CNET_LINK_IPVLAN: cnet_link_kind = 7;
/// A VLAN device (802.1Q / 802.1ad tagged frames on a parent).
pub const CNET_LINK_VLAN: cnet_link_kind = 8;
/// A dummy device.
pub const CNET_LINK_DUMMY: cnet_link_kind = 9;
/// A WireGuard device (keys and peers are not link attributes: see the
/// WireGuard node backend).
pub const CNET_LINK_WIREGUARD: cnet_link_kind = 10;

/// How a macvlan shares its parent (`mode M`).
pub type cnet_macvlan_mode = u32;
/// `private`: no traffic between macvlans of one parent.
pub const CNET_MACVLAN_PRIVATE: cnet_macvlan_mode = 1;
/// `vepa`: traffic between them goes out to the switch (the kernel's default).
pub const CNET_MACVLAN_VEPA: cnet_macvlan_mode = 2;
/// `bridge`: macvlans of one parent talk to each other directly.
pub const CNET_MACVLAN_BRIDGE: cnet_macvlan_mode = 3;
/// `passthru`: one macvlan takes the parent over.
pub const CNET_MACVLAN_PASSTHRU: cnet_macvlan_mode = 4;
/// `source`: only frames from listed source MACs.
pub const CNET_MACVLAN_SOURCE: cnet_macvlan_mode = 5;

/// How an ipvlan uses its parent (`mode M`).
pub type cnet_ipvlan_mode = u32;
/// `l2`: switching by MAC on the parent.
pub const CNET_IPVLAN_L2: cnet_ipvlan_mode = 1;
/// `l3`: routing by IP on the parent (the kernel's default).
pub const CNET_IPVLAN_L3: cnet_ipvlan_mode = 2;
/// `l3s`: like l3, with netfilter hooks in the parent's namespace.
pub const CNET_IPVLAN_L3S: cnet_ipvlan_mode = 3;

/// The EtherType of 802.1Q VLAN tags (`protocol 802.1Q`).
pub const CNET_VLAN_8021Q: u16 = 0x8100;
/// The EtherType of 802.1ad tags (`protocol 802.1ad`, QinQ's outer tag).
pub const CNET_VLAN_8021AD: u16 = 0x88a8;

/// What to create (`cnet_link_add`, `cnet_link_ensure`). Zero / NULL
/// fields mean "not set"; set `kind` and `name`, then the fields of that
/// kind. Start from a zeroed struct (`= {0}`) so fields added later stay
/// unset. A wireguard device takes only `name`, `mtu` and `up`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_link_config {
    /// `CNET_LINK_VETH`, `_BRIDGE`, `_VXLAN`, `_IPIP`, `_MACVLAN`,
    /// `_IPVLAN`, `_VLAN`, `_DUMMY` or `_WIREGUARD`.
    pub kind: cnet_link_kind,
    /// The link's name (at most 15 bytes).
    pub name: *const c_char,
    /// MTU (0: the kernel's default).
    pub mtu: u32,
    /// Bring the link up once created.
    pub up: bool,
    /// Bridge to enslave it to (`master BR`), or NULL.
    pub master: *const c_char,
    /// MAC address ("02:00:00:00:00:01"), or NULL for the kernel's choice.
    pub mac: *const c_char,
    /// veth: the peer's name.
    pub peer_name: *const c_char,
    /// veth: the namespace the peer goes to (`peer netns NS`), or NULL.
    pub peer_netns: *const cnet_netns,
    /// veth: bring the peer up (after creation; the kernel refuses it in
    /// the creating request).
    pub peer_up: bool,
    /// veth: the peer's MTU (0: same as the link).
    pub peer_mtu: u32,
    /// vxlan: the VNI.
    pub vni: u32,
    /// vxlan: UDP port (0: 8472, Flannel's).
    pub port: u16,
    /// vxlan, ipip: local address, or NULL.
    pub local: *const c_char,
    /// vxlan, ipip: remote address, or NULL.
    pub remote: *const c_char,
    /// vxlan, ipip: the underlay device (`dev DEV`), or NULL; macvlan,
    /// ipvlan, vlan: the parent device (`link DEV`), required.
    pub dev: *const c_char,
    /// vxlan, ipip: TTL (0: inherit / kernel default).
    pub ttl: u8,
    /// vxlan: turn off MAC learning (`nolearning`), as overlays with a
    /// programmed FDB want.
    pub nolearning: bool,
    /// macvlan: `CNET_MACVLAN_*` (0: the kernel's default, vepa;
    /// containers want `CNET_MACVLAN_BRIDGE`).
    pub macvlan_mode: cnet_macvlan_mode,
    /// ipvlan: `CNET_IPVLAN_*` (0: the kernel's default, l3).
    pub ipvlan_mode: cnet_ipvlan_mode,
    /// vlan: the VLAN id (1-4094).
    pub vlan_id: u16,
    /// vlan: the tag protocol, `CNET_VLAN_8021Q` or `CNET_VLAN_8021AD`
    /// (0: 802.1Q).
    pub vlan_protocol: u16,
}

/// A link's counters (`ip -s link show`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct cnet_link_stats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Received packets with errors.
    pub rx_errors: u64,
    /// Packets that failed to send.
    pub tx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Packets dropped before sending.
    pub tx_dropped: u64,
    /// Multicast packets received.
    pub multicast: u64,
}

/// A link as the kernel lists it (`ip -d link show`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cnet_link {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: [c_char; CNET_IFNAMSIZ],
    /// Kind (`CNET_LINK_*`).
    pub kind: cnet_link_kind,
    /// The kernel's kind name ("veth", "tun", "" for a plain device).
    pub kind_name: [c_char; CNET_IFNAMSIZ],
    /// MTU.
    pub mtu: u32,
    /// Raw IFF_* flags.
    pub flags: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Index of its master (bridge), 0 if none.
    pub master: u32,
    /// Hardware address (valid when `has_mac`).
    pub mac: [u8; 6],
    /// The link has an Ethernet-like hardware address.
    pub has_mac: bool,
    /// Counters (valid when `has_stats`).
    pub stats: cnet_link_stats,
    /// The kernel sent counters.
    pub has_stats: bool,
}

/// An owned array of links; free with `cnet_link_array_free`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_link_array {
    /// The links.
    pub items: *const cnet_link,
    /// How many.
    pub len: usize,
}
list_head!(cnet_link_array, cnet_link);

fn ip(p: *const c_char, what: &str) -> Res<Option<IpAddr>> {
    parse_opt(p, what)
}

/// The Rust builder for a C config.
pub(crate) fn spec_of(c: &cnet_link_config) -> Res<Box<dyn LinkSpec>> {
    let name = cstr(c.name, "config.name")?;
    let master = opt_nonempty(c.master, "config.master")?;
    let mac: Option<MacAddr> = parse_opt(c.mac, "config.mac")?;
    macro_rules! common {
        ($b:expr) => {{
            let mut b = $b;
            if c.mtu != 0 {
                b = b.mtu(c.mtu);
            }
            if c.up {
                b = b.up();
            }
            if let Some(m) = master {
                b = b.master(m);
            }
            if let Some(m) = mac {
                b = b.mac(m);
            }
            b
        }};
    }
    Ok(match c.kind {
        CNET_LINK_VETH => {
            let peer = cstr(c.peer_name, "config.peer_name")?;
            let mut v = common!(Veth::new(name, peer));
            if !c.peer_netns.is_null() {
                v = v.peer_netns(&obj(c.peer_netns, "config.peer_netns")?.ns);
            }
            if c.peer_up {
                v = v.peer_up();
            }
            if c.peer_mtu != 0 {
                v = v.peer_mtu(c.peer_mtu);
            }
            Box::new(v)
        }
        CNET_LINK_BRIDGE => Box::new(common!(Bridge::new(name))),
        CNET_LINK_VXLAN => {
            let mut v = common!(Vxlan::new(name, c.vni));
            if c.port != 0 {
                v = v.port(c.port);
            }
            if let Some(a) = ip(c.local, "config.local")? {
                v = v.local(a);
            }
            if let Some(a) = ip(c.remote, "config.remote")? {
                v = v.remote(a);
            }
            if let Some(d) = opt_nonempty(c.dev, "config.dev")? {
                v = v.dev(d);
            }
            if c.ttl != 0 {
                v = v.ttl(c.ttl);
            }
            if c.nolearning {
                v = v.learning(false);
            }
            Box::new(v)
        }
        CNET_LINK_IPIP => {
            let mut v = common!(IpIp::new(name));
            if let Some(a) = ip(c.local, "config.local")? {
                v = v.local(a);
            }
            if let Some(a) = ip(c.remote, "config.remote")? {
                v = v.remote(a);
            }
            if let Some(d) = opt_nonempty(c.dev, "config.dev")? {
                v = v.dev(d);
            }
            if c.ttl != 0 {
                v = v.ttl(c.ttl);
            }
            Box::new(v)
        }
        CNET_LINK_MACVLAN => {
            let mut v = common!(MacVlan::new(name, cstr(c.dev, "config.dev")?));
            if let Some(m) = macvlan_mode(c.macvlan_mode)? {
                v = v.mode(m);
            }
            Box::new(v)
        }
        CNET_LINK_IPVLAN => {
            let mut v = common!(IpVlan::new(name, cstr(c.dev, "config.dev")?));
            if let Some(m) = ipvlan_mode(c.ipvlan_mode)? {
                v = v.mode(m);
            }
            Box::new(v)
        }
        CNET_LINK_VLAN => {
            let mut v = common!(Vlan::new(name, cstr(c.dev, "config.dev")?, c.vlan_id));
            match c.vlan_protocol {
                0 => {}
                CNET_VLAN_8021Q => v = v.protocol(VlanProtocol::Dot1Q),
                CNET_VLAN_8021AD => v = v.protocol(VlanProtocol::Dot1Ad),
                x => {
                    return Err(Fail::new(
                        CNET_INVALID_ENUM,
                        format!("config.vlan_protocol {x:#06x} is neither 0x8100 (802.1Q) nor 0x88a8 (802.1ad)"),
                    ))
                }
            }
            Box::new(v)
        }
        CNET_LINK_DUMMY => Box::new(common!(Dummy::new(name))),
        CNET_LINK_WIREGUARD => {
            if master.is_some() || mac.is_some() {
                return Err(Error::invalid(
                    format!("wireguard link {name}"),
                    "a WireGuard device has no MAC address and no master here: leave mac and master unset",
                )
                .into());
            }
            let mut v = WireGuard::new(name);
            if c.mtu != 0 {
                v = v.mtu(c.mtu);
            }
            if c.up {
                v = v.up();
            }
            Box::new(v)
        }
        k => {
            return Err(Fail::new(
                CNET_INVALID_ENUM,
                format!("config.kind {k} is not a link kind this library creates (1-4, 6-10)"),
            ))
        }
    })
}

fn macvlan_mode(m: cnet_macvlan_mode) -> Res<Option<MacVlanMode>> {
    Ok(Some(match m {
        0 => return Ok(None),
        CNET_MACVLAN_PRIVATE => MacVlanMode::Private,
        CNET_MACVLAN_VEPA => MacVlanMode::Vepa,
        CNET_MACVLAN_BRIDGE => MacVlanMode::Bridge,
        CNET_MACVLAN_PASSTHRU => MacVlanMode::Passthru,
        CNET_MACVLAN_SOURCE => MacVlanMode::Source,
        x => {
            return Err(Fail::new(
                CNET_INVALID_ENUM,
                format!("config.macvlan_mode {x} is not a macvlan mode (1-5)"),
            ))
        }
    }))
}

fn ipvlan_mode(m: cnet_ipvlan_mode) -> Res<Option<IpVlanMode>> {
    Ok(Some(match m {
        0 => return Ok(None),
        CNET_IPVLAN_L2 => IpVlanMode::L2,
        CNET_IPVLAN_L3 => IpVlanMode::L3,
        CNET_IPVLAN_L3S => IpVlanMode::L3S,
        x => {
            return Err(Fail::new(
                CNET_INVALID_ENUM,
                format!("config.ipvlan_mode {x} is not an ipvlan mode (1-3)"),
            ))
        }
    }))
}

fn stats_of(s: &LinkStats) -> cnet_link_stats {
    cnet_link_stats {
        rx_packets: s.rx_packets,
        tx_packets: s.tx_packets,
        rx_bytes: s.rx_bytes,
        tx_bytes: s.tx_bytes,
        rx_errors: s.rx_errors,
        tx_errors: s.tx_errors,
        rx_dropped: s.rx_dropped,
        tx_dropped: s.tx_dropped,
        multicast: s.multicast,
    }
}

pub(crate) fn link_of(l: &Link) -> Res<cnet_link> {
    let mut c = cnet_link {
        index: l.index,
        name: [0; CNET_IFNAMSIZ],
        kind: match &l.kind {
            LinkKind::Veth => CNET_LINK_VETH,
            LinkKind::Bridge => CNET_LINK_BRIDGE,
            LinkKind::Vxlan => CNET_LINK_VXLAN,
            LinkKind::IpIp => CNET_LINK_IPIP,
            LinkKind::Device => CNET_LINK_DEVICE,
            LinkKind::MacVlan => CNET_LINK_MACVLAN,
            LinkKind::IpVlan => CNET_LINK_IPVLAN,
            LinkKind::Vlan => CNET_LINK_VLAN,
            LinkKind::Dummy => CNET_LINK_DUMMY,
            LinkKind::WireGuard => CNET_LINK_WIREGUARD,
            _ => CNET_LINK_OTHER,
        },
        kind_name: [0; CNET_IFNAMSIZ],
        mtu: l.mtu,
        flags: l.flags,
        up: l.is_up(),
        master: l.master.unwrap_or(0),
        mac: l.mac.map_or([0; 6], |m| m.0),
        has_mac: l.mac.is_some(),
        stats: l.stats.as_ref().map(stats_of).unwrap_or_default(),
        has_stats: l.stats.is_some(),
    };
    fill(&mut c.name, &l.name)?;
    let kn = match &l.kind {
        LinkKind::Device => "",
        k => k.as_str(),
    };
    // A kind name longer than a link name is cut: it is informational.
    let kn: String = kn.chars().take(CNET_IFNAMSIZ - 1).collect();
    fill(&mut c.kind_name, &kn)?;
    Ok(c)
}

/// Create a link (`ip link add …`). `CNET_ALREADY_EXISTS` if the name is
/// taken; a veth whose peer could not be moved or brought up is removed
/// again.
#[no_mangle]
pub extern "C" fn cnet_link_add(
    h: *const cnet_handle,
    config: *const cnet_link_config,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let spec = spec_of(obj(config, "config")?)?;
        h.h.links().add(&*spec)?;
        Ok(())
    })
}

/// Create the link, or accept an existing one of the same kind and
/// parameters (`CNET_MISMATCH` naming each difference otherwise); brings
/// it up and sets its master as asked. `out` (may be NULL) receives the
/// link as it now is.
#[no_mangle]
pub extern "C" fn cnet_link_ensure(
    h: *const cnet_handle,
    config: *const cnet_link_config,
    out: *mut cnet_link,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let spec = spec_of(obj(config, "config")?)?;
        let l = h.h.links().ensure(&*spec)?;
        if !out.is_null() {
            let c = link_of(&l)?;
            out_ptr(out, "out")?.set(c);
        }
        Ok(())
    })
}

/// Delete a link (`ip link del NAME`); `CNET_NOT_FOUND` if absent.
#[no_mangle]
pub extern "C" fn cnet_link_delete(
    h: *const cnet_handle,
    name: *const c_char,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        h.h.links().delete(cstr(name, "name")?)?;
        Ok(())
    })
}

/// Delete a link if it exists; `*deleted` (may be NULL) says whether it did.
#[no_mangle]
pub extern "C" fn cnet_link_delete_if_exists(
    h: *const cnet_handle,
    name: *const c_char,
    deleted: *mut bool,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let d = h.h.links().delete_if_exists(cstr(name, "name")?)?;
        set_if_asked(deleted, || d);
        Ok(())
    })
}

/// `ip link set NAME up`.
#[no_mangle]
pub extern "C" fn cnet_link_set_up(
    h: *const cnet_handle,
    name: *const c_char,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        obj(h, "handle")?.h.links().set_up(cstr(name, "name")?)?;
        Ok(())
    })
}

/// `ip link set NAME down` (the kernel deletes the routes through it).
#[no_mangle]
pub extern "C" fn cnet_link_set_down(
    h: *const cnet_handle,
    name: *const c_char,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        obj(h, "handle")?.h.links().set_down(cstr(name, "name")?)?;
        Ok(())
    })
}

/// `ip link set NAME mtu MTU`.
#[no_mangle]
pub extern "C" fn cnet_link_set_mtu(
    h: *const cnet_handle,
    name: *const c_char,
    mtu: u32,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        obj(h, "handle")?
            .h
            .links()
            .set_mtu(cstr(name, "name")?, mtu)?;
        Ok(())
    })
}

/// `ip link set NAME master MASTER`, or `nomaster` when `master` is NULL.
#[no_mangle]
pub extern "C" fn cnet_link_set_master(
    h: *const cnet_handle,
    name: *const c_char,
    master: *const c_char,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let links = obj(h, "handle")?.h.links();
        let name = cstr(name, "name")?;
        match opt_nonempty(master, "master")? {
            Some(m) => links.set_master(name, m)?,
            None => links.set_nomaster(name)?,
        }
        Ok(())
    })
}

/// The link named `name` (`ip -d link show NAME`); `CNET_NOT_FOUND` if absent.
#[no_mangle]
pub extern "C" fn cnet_link_get(
    h: *const cnet_handle,
    name: *const c_char,
    out: *mut cnet_link,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let name = cstr(name, "name")?;
        let out = out_ptr(out, "out")?;
        out.set(link_of(&h.h.links().get(name)?)?);
        Ok(())
    })
}

/// Every link of the handle's namespace (`ip -d link show`).
#[no_mangle]
pub extern "C" fn cnet_link_list(
    h: *const cnet_handle,
    out: *mut *mut cnet_link_array,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let out = out_ptr(out, "out")?;
        let items =
            h.h.links()
                .list()?
                .iter()
                .map(link_of)
                .collect::<Res<Vec<_>>>()?;
        list_out(out, items, Vec::new());
        Ok(())
    })
}

/// Free a link list. `cnet_link_array_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_link_array_free(list: *mut cnet_link_array) {
    free_box(list)
}
