//! The container-networking layer's bridge network (`cnet_bridge_network`):
//! ensure it on a node, attach a container (a CNI 1.0.0 result as JSON and
//! as a plain struct), detach it with CNI `DEL` semantics, and check it
//! for drift. One export per `cnet_core::network::BridgeNetwork` method.
//!
//! ```text
//!  cnet_bridge_network_ensure(host, pool, {name, subnet, mtu}) ─▶ cnet_bridge_network
//!     │   (shares the cnet_pool: either may be freed first)
//!     ├─ _attach(ns {name|path|pid|netns}, id, ifname) ─▶ cnet_attachment + CNI JSON
//!     ├─ _check(ns, id, ifname) ────────────────────────▶ cnet_drift_array (empty: as made)
//!     └─ _detach(ns or NULL, id, ifname) ───────────────▶ cnet_detach_report (gone already: OK)
//! ```

use std::ffi::c_char;

use cnet_core::network::{
    AttachOptions, Attachment, BridgeConfig, BridgeNetwork, ContainerNs, Drift,
};
use cnet_core::IpNet;

use crate::boundary::{
    c_string, cnet_error, cnet_result, cstr, fill, guard, obj, opt_nonempty, out_ptr, parse,
    parse_opt, set_if_asked, Fail, Res, CNET_INVALID_ENUM,
};
use crate::ipam::cnet_pool;
use crate::link::{CNET_ADDRSTRLEN, CNET_IFNAMSIZ};
use crate::ns::{cnet_handle, cnet_netns};
use crate::out::{boxed, castable, free_box, list_head, list_out, one_out, Strings};

/// A bridge network on one node: the bridge in the host namespace, the
/// pool its containers' addresses come from, its own netlink socket in
/// the host namespace. May be shared between threads: attaches, detaches
/// and checks of different containers may run at once.
pub struct cnet_bridge_network {
    net: BridgeNetwork,
}
castable!(box cnet_bridge_network);

impl std::fmt::Debug for cnet_bridge_network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.net.fmt(f)
    }
}

impl cnet_bridge_network {
    /// The network itself, for tests that inject faults through it
    /// (cargo feature `failpoints` only, never in a build you ship).
    #[cfg(feature = "failpoints")]
    pub fn inner(&self) -> &BridgeNetwork {
        &self.net
    }
}

/// What a bridge network is. Equivalent to `ip link add NAME type bridge;
/// ip link set NAME mtu MTU up; ip addr add GATEWAY/PLEN dev NAME; sysctl
/// net.ipv4.ip_forward=1`, the gateway being the pool's.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_bridge_config {
    /// The bridge's name ("cni0").
    pub name: *const c_char,
    /// The node subnet ("10.244.1.0/24"), or NULL for the pool's. It must
    /// be the pool's (`CNET_CONFLICT` otherwise).
    pub subnet: *const c_char,
    /// MTU of the bridge and of both ends of every veth (0: 1500).
    pub mtu: u32,
}

/// How a container's namespace is given.
pub type cnet_container_ns_kind = u32;
/// By `ip netns` name (`/run/netns/NAME`): the `name` field.
pub const CNET_CONTAINER_NS_NAME: cnet_container_ns_kind = 1;
/// By path (`/proc/PID/ns/net`, a runtime's bind mount, CNI_NETNS): the
/// `path` field.
pub const CNET_CONTAINER_NS_PATH: cnet_container_ns_kind = 2;
/// By process id (`/proc/PID/ns/net`): the `pid` field.
pub const CNET_CONTAINER_NS_PID: cnet_container_ns_kind = 3;
/// A namespace already open: the `netns` field.
pub const CNET_CONTAINER_NS_NETNS: cnet_container_ns_kind = 4;

/// A container's network namespace: `kind` says which one field is used.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_container_ns {
    /// `CNET_CONTAINER_NS_*`.
    pub kind: cnet_container_ns_kind,
    /// The name, for `CNET_CONTAINER_NS_NAME`.
    pub name: *const c_char,
    /// The path, for `CNET_CONTAINER_NS_PATH`.
    pub path: *const c_char,
    /// The process id, for `CNET_CONTAINER_NS_PID`.
    pub pid: u32,
    /// The open namespace, for `CNET_CONTAINER_NS_NETNS` (only read
    /// during the call).
    pub netns: *const cnet_netns,
}

fn container_ns(p: *const cnet_container_ns) -> Res<ContainerNs> {
    let c = obj(p, "ns")?;
    Ok(match c.kind {
        CNET_CONTAINER_NS_NAME => ContainerNs::name(cstr(c.name, "ns.name")?),
        CNET_CONTAINER_NS_PATH => ContainerNs::path(cstr(c.path, "ns.path")?),
        CNET_CONTAINER_NS_PID => ContainerNs::pid(c.pid),
        CNET_CONTAINER_NS_NETNS => ContainerNs::netns(&obj(c.netns, "ns.netns")?.ns),
        k => {
            return Err(Fail::new(
                CNET_INVALID_ENUM,
                format!("ns.kind {k} is not a CNET_CONTAINER_NS_* value"),
            ))
        }
    })
}

/// One interface of an attachment.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cnet_attached_link {
    /// Its name (in its namespace).
    pub name: [c_char; CNET_IFNAMSIZ],
    /// Its index (in its namespace).
    pub index: u32,
    /// Its MAC address.
    pub mac: [u8; 6],
}

/// A container attached to a bridge network (what attach made). Free with
/// `cnet_attachment_free`. The same data as the CNI result, plus indexes,
/// MTU and the allocation's generation.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_attachment {
    /// The container id (owned by the attachment).
    pub container_id: *const c_char,
    /// The interface name inside the container.
    pub ifname: [c_char; CNET_IFNAMSIZ],
    /// The bridge (host namespace).
    pub bridge: cnet_attached_link,
    /// The host end of the veth pair, a port of the bridge.
    pub host: cnet_attached_link,
    /// The container end, in the container's namespace.
    pub container: cnet_attached_link,
    /// The container's namespace path, the CNI `sandbox` (owned by the
    /// attachment).
    pub sandbox: *const c_char,
    /// The container's address with the subnet's prefix ("10.244.1.2/24").
    pub address: [c_char; CNET_ADDRSTRLEN],
    /// The address alone ("10.244.1.2").
    pub ip: [c_char; CNET_ADDRSTRLEN],
    /// The gateway, the bridge's address ("10.244.1.1"); the container's
    /// default route goes through it.
    pub gateway: [c_char; CNET_ADDRSTRLEN],
    /// MTU of both veth ends.
    pub mtu: u32,
    /// The IPAM allocation's generation.
    pub generation: u64,
}
castable!(one cnet_attachment);

fn link_of(i: &cnet_core::network::Interface) -> Res<cnet_attached_link> {
    let mut l = cnet_attached_link {
        name: [0; CNET_IFNAMSIZ],
        index: i.index,
        mac: i.mac.0,
    };
    fill(&mut l.name, &i.name)?;
    Ok(l)
}

fn attachment_of(a: &Attachment, s: &mut Strings) -> Res<cnet_attachment> {
    let mut c = cnet_attachment {
        container_id: s.add(&a.container_id),
        ifname: [0; CNET_IFNAMSIZ],
        bridge: link_of(&a.bridge)?,
        host: link_of(&a.host)?,
        container: link_of(&a.container)?,
        sandbox: s.add(
            &a.container
                .sandbox
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ),
        address: [0; CNET_ADDRSTRLEN],
        ip: [0; CNET_ADDRSTRLEN],
        gateway: [0; CNET_ADDRSTRLEN],
        mtu: a.mtu,
        generation: a.generation,
    };
    fill(&mut c.ifname, &a.ifname)?;
    fill(&mut c.address, &a.address.to_string())?;
    fill(&mut c.ip, &a.address.addr().to_string())?;
    fill(&mut c.gateway, &a.gateway.to_string())?;
    Ok(c)
}

/// What a detach did. Free with `cnet_detach_report_free`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_detach_report {
    /// The host-side veth name derived from the container id.
    pub host_veth: [c_char; CNET_IFNAMSIZ],
    /// A veth pair was deleted (false: it was already gone).
    pub link_removed: bool,
    /// The pool held an address for the container and released it.
    pub released: bool,
    /// The address released ("10.244.1.2"), or "".
    pub released_ip: [c_char; CNET_ADDRSTRLEN],
    /// What was found but left alone and why ("; "-separated), or NULL
    /// (owned by the report).
    pub left_alone: *const c_char,
}
castable!(one cnet_detach_report);

/// A drift kind: how a container's live state differs from what attach
/// made. Numbers are never reused.
pub type cnet_drift_kind = u32;
/// The network's bridge is gone.
pub const CNET_DRIFT_BRIDGE_MISSING: cnet_drift_kind = 1;
/// The bridge is down.
pub const CNET_DRIFT_BRIDGE_DOWN: cnet_drift_kind = 2;
/// The bridge lacks its gateway address.
pub const CNET_DRIFT_GATEWAY_MISSING: cnet_drift_kind = 3;
/// The container's namespace could not be opened.
pub const CNET_DRIFT_NAMESPACE_MISSING: cnet_drift_kind = 4;
/// No link has the host-side name.
pub const CNET_DRIFT_HOST_LINK_MISSING: cnet_drift_kind = 5;
/// A link has the host-side name but is not this attachment's.
pub const CNET_DRIFT_HOST_LINK_FOREIGN: cnet_drift_kind = 6;
/// The host end is not a port of the network's bridge.
pub const CNET_DRIFT_HOST_LINK_OFF_BRIDGE: cnet_drift_kind = 7;
/// The host end is down.
pub const CNET_DRIFT_HOST_LINK_DOWN: cnet_drift_kind = 8;
/// The container interface is gone.
pub const CNET_DRIFT_CONTAINER_LINK_MISSING: cnet_drift_kind = 9;
/// The container interface is down.
pub const CNET_DRIFT_CONTAINER_LINK_DOWN: cnet_drift_kind = 10;
/// The host end and the container interface are not one veth pair.
pub const CNET_DRIFT_NOT_PEERS: cnet_drift_kind = 11;
/// A link's MTU differs from the network's.
pub const CNET_DRIFT_MTU: cnet_drift_kind = 12;
/// The container interface lacks its address.
pub const CNET_DRIFT_ADDRESS_MISSING: cnet_drift_kind = 13;
/// The container interface has an address attach did not put there.
pub const CNET_DRIFT_ADDRESS_UNEXPECTED: cnet_drift_kind = 14;
/// The container has no default route.
pub const CNET_DRIFT_DEFAULT_ROUTE_MISSING: cnet_drift_kind = 15;
/// The container's default route goes elsewhere.
pub const CNET_DRIFT_DEFAULT_ROUTE_WRONG: cnet_drift_kind = 16;
/// The pool holds no address for the container.
pub const CNET_DRIFT_ALLOCATION_MISSING: cnet_drift_kind = 17;
/// A kind newer than this header (see `kind_name` and `json`).
pub const CNET_DRIFT_OTHER: cnet_drift_kind = 99;

fn drift_kind(d: &Drift) -> cnet_drift_kind {
    match d {
        Drift::BridgeMissing { .. } => CNET_DRIFT_BRIDGE_MISSING,
        Drift::BridgeDown { .. } => CNET_DRIFT_BRIDGE_DOWN,
        Drift::GatewayMissing { .. } => CNET_DRIFT_GATEWAY_MISSING,
        Drift::NamespaceMissing { .. } => CNET_DRIFT_NAMESPACE_MISSING,
        Drift::HostLinkMissing { .. } => CNET_DRIFT_HOST_LINK_MISSING,
        Drift::HostLinkForeign { .. } => CNET_DRIFT_HOST_LINK_FOREIGN,
        Drift::HostLinkOffBridge { .. } => CNET_DRIFT_HOST_LINK_OFF_BRIDGE,
        Drift::HostLinkDown { .. } => CNET_DRIFT_HOST_LINK_DOWN,
        Drift::ContainerLinkMissing { .. } => CNET_DRIFT_CONTAINER_LINK_MISSING,
        Drift::ContainerLinkDown { .. } => CNET_DRIFT_CONTAINER_LINK_DOWN,
        Drift::NotPeers { .. } => CNET_DRIFT_NOT_PEERS,
        Drift::Mtu { .. } => CNET_DRIFT_MTU,
        Drift::AddressMissing { .. } => CNET_DRIFT_ADDRESS_MISSING,
        Drift::AddressUnexpected { .. } => CNET_DRIFT_ADDRESS_UNEXPECTED,
        Drift::DefaultRouteMissing { .. } => CNET_DRIFT_DEFAULT_ROUTE_MISSING,
        Drift::DefaultRouteWrong { .. } => CNET_DRIFT_DEFAULT_ROUTE_WRONG,
        Drift::AllocationMissing { .. } => CNET_DRIFT_ALLOCATION_MISSING,
        _ => CNET_DRIFT_OTHER,
    }
}

/// One difference found by `cnet_bridge_network_check`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_drift {
    /// `CNET_DRIFT_*`.
    pub kind: cnet_drift_kind,
    /// The kind's name ("host_link_down"), as in `json`.
    pub kind_name: *const c_char,
    /// For people ("host end veth1a2b is down").
    pub message: *const c_char,
    /// The drift with its details as a JSON object (`{"kind":
    /// "mtu","link":"eth0","have":1500,"want":1450}`).
    pub json: *const c_char,
}

/// An owned array of drifts; free with `cnet_drift_array_free`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_drift_array {
    /// The drifts.
    pub items: *const cnet_drift,
    /// How many (0: the container is as attach made it).
    pub len: usize,
}
list_head!(cnet_drift_array, cnet_drift);

fn drift_of(d: &Drift, s: &mut Strings) -> cnet_drift {
    let v = serde_json::to_value(d).unwrap_or_default();
    cnet_drift {
        kind: drift_kind(d),
        kind_name: s.add(v["kind"].as_str().unwrap_or("")),
        message: s.add(&d.to_string()),
        json: s.add(&v.to_string()),
    }
}

/// Make sure the bridge network exists in `host`'s namespace: the bridge
/// `config->name` (created with the MTU, up, its address the pool's
/// gateway with the subnet's prefix) and IP forwarding on in that
/// namespace. An existing bridge that matches is used as it is; one that
/// differs (MTU, address, down) is never changed: `CNET_MISMATCH` lists
/// each difference. The network shares `pool` (its addresses come from
/// it); `pool` and `host` may be freed before the network. Free `*out`
/// with `cnet_bridge_network_free`.
#[no_mangle]
pub extern "C" fn cnet_bridge_network_ensure(
    host: *const cnet_handle,
    pool: *const cnet_pool,
    config: *const cnet_bridge_config,
    out: *mut *mut cnet_bridge_network,
    err: *mut *mut cnet_error,
) -> cnet_result {
    network_with(host, pool, config, out, err, BridgeNetwork::ensure)
}

/// The bridge network as it is, for CNI `DEL`, `GC` and `CHECK`: nothing
/// is created or changed, and a missing or different bridge is fine
/// (detach finds the host ends by name; check reports the bridge's
/// drift). Attaching through it fails with `CNET_NOT_FOUND` while the
/// bridge is missing. Arguments as for `cnet_bridge_network_ensure`.
#[no_mangle]
pub extern "C" fn cnet_bridge_network_open(
    host: *const cnet_handle,
    pool: *const cnet_pool,
    config: *const cnet_bridge_config,
    out: *mut *mut cnet_bridge_network,
    err: *mut *mut cnet_error,
) -> cnet_result {
    network_with(host, pool, config, out, err, BridgeNetwork::open)
}

type Make = fn(
    &cnet_core::handle::Handle,
    crate::ipam::SharedPool,
    BridgeConfig,
) -> cnet_core::Result<BridgeNetwork>;

fn network_with(
    host: *const cnet_handle,
    pool: *const cnet_pool,
    config: *const cnet_bridge_config,
    out: *mut *mut cnet_bridge_network,
    err: *mut *mut cnet_error,
    make: Make,
) -> cnet_result {
    guard(err, || {
        let h = obj(host, "host")?;
        let pool = obj(pool, "pool")?.share();
        let c = obj(config, "config")?;
        let name = cstr(c.name, "config.name")?;
        let subnet: IpNet = match opt_nonempty(c.subnet, "config.subnet")? {
            Some(s) => parse(s, "config.subnet")?,
            None => cnet_core::ipam::PoolStore::config(&pool).subnet,
        };
        let mut bc = BridgeConfig::new(name, subnet);
        if c.mtu != 0 {
            bc = bc.mtu(c.mtu);
        }
        let out = out_ptr(out, "out")?;
        let net = make(&h.h, pool, bc)?;
        boxed(out, cnet_bridge_network { net });
        Ok(())
    })
}

/// Free a bridge network object (closes its socket; the bridge and the
/// attached containers stay). `cnet_bridge_network_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_bridge_network_free(net: *mut cnet_bridge_network) {
    free_box(net)
}

/// Attach a container (CNI `ADD`): a veth pair whose host end, named from
/// `container_id` and `ifname`, is a port of the bridge, and whose other
/// end `ifname` is born in the container's namespace with an address from
/// the pool and a default route via the gateway. Any failure undoes every
/// step done so far, the address included. Attaching the same pair again
/// returns the same attachment when nothing drifted (`CNET_MISMATCH`
/// listing the drifts otherwise).
///
/// Outputs, each optional (NULL: not wanted): `*out` the attachment (free
/// with `cnet_attachment_free`), `*cni_json` the CNI 1.0.0 result a CNI
/// plugin prints for `ADD` (free with `cnet_string_free`).
#[no_mangle]
pub extern "C" fn cnet_bridge_network_attach(
    net: *const cnet_bridge_network,
    ns: *const cnet_container_ns,
    container_id: *const c_char,
    ifname: *const c_char,
    out: *mut *mut cnet_attachment,
    cni_json: *mut *mut c_char,
    err: *mut *mut cnet_error,
) -> cnet_result {
    cnet_bridge_network_attach_with(
        net,
        ns,
        container_id,
        ifname,
        std::ptr::null(),
        out,
        cni_json,
        err,
    )
}

/// What a caller asks of an attach beyond the defaults (a CNI runtime's
/// `CNI_ARGS` `IP=`, `runtimeConfig` `ips` and `mac`). NULL or "" fields
/// ask for nothing. The strings are read during the call only.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_attach_options {
    /// This address from the pool ("10.244.1.9") instead of a free one:
    /// `CNET_CONFLICT` when another container holds it,
    /// `CNET_INVALID_ARGUMENT` outside the pool or on its network,
    /// gateway or broadcast address.
    pub ip: *const c_char,
    /// This MAC on the container's interface ("02:42:ac:11:00:05")
    /// instead of the one derived from the address; unicast, non-zero.
    pub mac: *const c_char,
}

fn attach_options(p: *const cnet_attach_options) -> Res<AttachOptions> {
    let mut o = AttachOptions::new();
    if p.is_null() {
        return Ok(o);
    }
    let c = obj(p, "options")?;
    if let Some(ip) = parse_opt(c.ip, "options.ip")? {
        o = o.ip(ip);
    }
    if let Some(mac) = parse_opt(c.mac, "options.mac")? {
        o = o.mac(mac);
    }
    Ok(o)
}

/// `cnet_bridge_network_attach` with `options` (NULL: none): a requested
/// address and/or container MAC. Attaching the same pair again with the
/// address it holds returns the same attachment; another address is
/// `CNET_CONFLICT` (detach first). A requested address is released again
/// when the attach fails.
#[no_mangle]
pub extern "C" fn cnet_bridge_network_attach_with(
    net: *const cnet_bridge_network,
    ns: *const cnet_container_ns,
    container_id: *const c_char,
    ifname: *const c_char,
    options: *const cnet_attach_options,
    out: *mut *mut cnet_attachment,
    cni_json: *mut *mut c_char,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let n = obj(net, "net")?;
        let ns = container_ns(ns)?;
        let cid = cstr(container_id, "container_id")?;
        let ifname = cstr(ifname, "ifname")?;
        let opts = attach_options(options)?;
        let a = n.net.attach_with(&ns, cid, ifname, &opts)?;
        // Build both outputs before writing either: written only on success.
        let mut s = Strings::default();
        let head = if out.is_null() {
            None
        } else {
            Some(attachment_of(&a, &mut s)?)
        };
        if let Some(head) = head {
            one_out(out_ptr(out, "out")?, head, s.0);
        }
        set_if_asked(cni_json, || c_string(&a.to_cni_json()).into_raw());
        Ok(())
    })
}

/// Free an attachment. `cnet_attachment_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_attachment_free(a: *mut cnet_attachment) {
    free_box(a)
}

/// Detach a container (CNI `DEL`): delete the veth pair (its container
/// end, address and routes go with it) and release the address. Succeeds
/// when the namespace, the link or the allocation is already gone. `ns`
/// may be NULL (the host end is found by its derived name). `*out` (may
/// be NULL) receives what was done; free it with `cnet_detach_report_free`.
#[no_mangle]
pub extern "C" fn cnet_bridge_network_detach(
    net: *const cnet_bridge_network,
    ns: *const cnet_container_ns,
    container_id: *const c_char,
    ifname: *const c_char,
    out: *mut *mut cnet_detach_report,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let n = obj(net, "net")?;
        let ns = if ns.is_null() {
            None
        } else {
            Some(container_ns(ns)?)
        };
        let cid = cstr(container_id, "container_id")?;
        let ifname = cstr(ifname, "ifname")?;
        let r = n.net.detach(ns.as_ref(), cid, ifname)?;
        if !out.is_null() {
            let mut s = Strings::default();
            let mut c = cnet_detach_report {
                host_veth: [0; CNET_IFNAMSIZ],
                link_removed: r.link_removed,
                released: r.released.is_some(),
                released_ip: [0; CNET_ADDRSTRLEN],
                left_alone: if r.left_alone.is_empty() {
                    std::ptr::null()
                } else {
                    s.add(&r.left_alone.join("; "))
                },
            };
            fill(&mut c.host_veth, &r.host_veth)?;
            if let Some(a) = &r.released {
                fill(&mut c.released_ip, &a.addr.to_string())?;
            }
            one_out(out_ptr(out, "out")?, c, s.0);
        }
        Ok(())
    })
}

/// Free a detach report. `cnet_detach_report_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_detach_report_free(r: *mut cnet_detach_report) {
    free_box(r)
}

/// CNI's `ipMasq`: with `on`, masquerade what the network's containers
/// send to anywhere but `exclude` (a CIDR; NULL or "" means the network's
/// own subnet; give the cluster network so other hosts' containers see the
/// container's address) and multicast: one nftables rule in the host
/// namespace's table `cnet`, tagged with the bridge's name. Without `on`,
/// remove that rule (fine when there is none). `*changed` (may be NULL)
/// says whether anything was written.
#[no_mangle]
pub extern "C" fn cnet_bridge_network_masquerade(
    net: *const cnet_bridge_network,
    exclude: *const c_char,
    on: bool,
    changed: *mut bool,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let n = obj(net, "net")?;
        let exclude: Option<IpNet> = parse_opt(exclude, "exclude")?;
        let c = if on {
            n.net.masquerade(exclude)?
        } else {
            n.net.unmasquerade()?
        };
        set_if_asked(changed, || c);
        Ok(())
    })
}

/// Compare a container's live state with what attach made (reads only):
/// `*out` lists every difference, empty when all is as attach made it. An
/// unreadable namespace is a `CNET_DRIFT_NAMESPACE_MISSING` drift, not an
/// error. Free `*out` with `cnet_drift_array_free`.
#[no_mangle]
pub extern "C" fn cnet_bridge_network_check(
    net: *const cnet_bridge_network,
    ns: *const cnet_container_ns,
    container_id: *const c_char,
    ifname: *const c_char,
    out: *mut *mut cnet_drift_array,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let n = obj(net, "net")?;
        let ns = container_ns(ns)?;
        let cid = cstr(container_id, "container_id")?;
        let ifname = cstr(ifname, "ifname")?;
        let out = out_ptr(out, "out")?;
        let drifts = n.net.check(&ns, cid, ifname)?;
        let mut s = Strings::default();
        let items = drifts.iter().map(|d| drift_of(d, &mut s)).collect();
        list_out(out, items, s.0);
        Ok(())
    })
}

/// Free a drift list. `cnet_drift_array_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_drift_array_free(l: *mut cnet_drift_array) {
    free_box(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drift_kind_has_its_number_and_name() {
        let d = Drift::Mtu {
            link: "eth0".into(),
            have: 1500,
            want: 1450,
        };
        let mut s = Strings::default();
        let c = drift_of(&d, &mut s);
        assert_eq!(c.kind, CNET_DRIFT_MTU);
        // SAFETY: strings owned by `s`, alive here.
        let name = unsafe { std::ffi::CStr::from_ptr(c.kind_name) };
        assert_eq!(name.to_str().unwrap(), "mtu");
        // SAFETY: as above.
        let json = unsafe { std::ffi::CStr::from_ptr(c.json) };
        let v: serde_json::Value = serde_json::from_str(json.to_str().unwrap()).unwrap();
        assert_eq!(v["want"], 1450);
    }
}
