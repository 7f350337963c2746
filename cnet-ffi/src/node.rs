//! Node backends: a node's routes (and VXLAN neighbours and FDB entries)
//! to its peers' pod subnets, reconciled to exactly a peer set or to the
//! leases of an IPAM store (`cnet_node`), with the host-gw, vxlan, ipip,
//! cross-subnet and wireguard backends.

use std::ffi::c_char;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use cnet_core::link::MacAddr;
use cnet_core::network::{
    Backend, Changes, DriftRepair, Encap, IpIpConfig, Node, NodeConfig, Peer, PeerPath, PeerReport,
    VxlanConfig, WireGuardConfig,
};
use cnet_core::wireguard::PublicKey;
use cnet_core::{Error, IpNet};

use crate::boundary::{
    cnet_error, cnet_result, code_of, cstr, guard, lock, obj, opt_nonempty, out_ptr, parse,
    parse_opt, slice, write_str, Fail, Res, CNET_INVALID_ENUM, CNET_OK,
};
use crate::ipam::{cnet_lease, cnet_leases, list_leases, node_lease_of};
use crate::ns::cnet_handle;
use crate::out::{boxed, castable, free_box, one_out_keep, Strings};
use crate::route::cnet_reconcile_counts;

/// A node: the host namespace (through a handle it keeps alive), its
/// configuration, and what it keeps between calls (the WireGuard socket).
/// May be shared between threads.
#[derive(Debug)]
pub struct cnet_node {
    node: Node<'static>,
    /// What the reconciles programmed, for the one-peer calls
    /// (`cnet_node_put_lease`, `cnet_node_remove_subnet`).
    drift: Mutex<DriftRepair>,
}
castable!(box cnet_node);

impl cnet_node {
    fn name(&self) -> &str {
        &self.node.config().name
    }
}

// "May be shared between threads": a node holds no thread-bound state.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<cnet_node>();
};

/// A node's configuration. NULL / zero fields take the defaults.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_node_config {
    /// Node name (the lease's node name; seeds the VTEP MAC).
    pub name: *const c_char,
    /// The node's pod subnet ("10.244.1.0/24"), never routed to a peer.
    pub subnet: *const c_char,
    /// The underlay device ("eth0").
    pub underlay_dev: *const c_char,
    /// The node's underlay address.
    pub underlay_ip: *const c_char,
    /// VXLAN device name (NULL: "cnet.vxlan").
    pub vxlan_dev: *const c_char,
    /// IP-in-IP device name (NULL: "cnet.ipip").
    pub ipip_dev: *const c_char,
    /// Table of the peer routes (0: main).
    pub route_table: u32,
    /// Protocol of the peer routes (0: 119). The node owns every route of
    /// this protocol in that table.
    pub route_protocol: u8,
    /// WireGuard device name (NULL: "cnet.wg").
    pub wireguard_dev: *const c_char,
}

/// A backend kind.
pub type cnet_backend_kind = u32;
/// A route per peer via its underlay address (peers on one L2 segment).
pub const CNET_BACKEND_HOST_GW: cnet_backend_kind = 1;
/// Flannel's VXLAN.
pub const CNET_BACKEND_VXLAN: cnet_backend_kind = 2;
/// IP-in-IP.
pub const CNET_BACKEND_IPIP: cnet_backend_kind = 3;
/// host-gw on the node's segment, VXLAN beyond it.
pub const CNET_BACKEND_VXLAN_CROSS_SUBNET: cnet_backend_kind = 4;
/// host-gw on the node's segment, IP-in-IP beyond it.
pub const CNET_BACKEND_IPIP_CROSS_SUBNET: cnet_backend_kind = 5;
/// WireGuard: one encrypted device, a WireGuard peer and a route per peer
/// (each peer needs its `wireguard_key`).
pub const CNET_BACKEND_WIREGUARD: cnet_backend_kind = 6;
/// host-gw on the node's segment, nothing in the kernel beyond it: the
/// default route takes those packets to a router whose route table holds
/// the peers' subnets (a cloud's; `cnet_aws_vpc_reconcile_beyond` keeps a
/// VPC's with exactly the peers this backend placed beyond the segment).
pub const CNET_BACKEND_ROUTE_TABLE_CROSS_SUBNET: cnet_backend_kind = 7;

/// How the node reaches its peers. Zero fields take Flannel's defaults.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_backend {
    /// `CNET_BACKEND_*`.
    pub kind: cnet_backend_kind,
    /// VXLAN: the VNI (0: 1).
    pub vni: u32,
    /// VXLAN, WireGuard: UDP port (0: 8472 for VXLAN, 51820 for WireGuard).
    pub port: u16,
    /// Tunnel device MTU (0: the underlay's minus the overhead).
    pub mtu: u32,
    /// WireGuard: the file holding the node's private key (base64, as
    /// `wg genkey` writes it), made (mode 0600) with a new key if missing;
    /// NULL: "/var/lib/cnet/wireguard.key".
    pub key_file: *const c_char,
    /// WireGuard: `persistent-keepalive` to each peer, in seconds (0: off).
    pub keepalive: u16,
}

/// A peer node.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_peer {
    /// Its name.
    pub name: *const c_char,
    /// Its pod subnet.
    pub subnet: *const c_char,
    /// Its underlay address.
    pub underlay: *const c_char,
    /// Its VTEP MAC (VXLAN), or NULL.
    pub vtep_mac: *const c_char,
    /// Its WireGuard public key in base64 (44 characters, as `wg pubkey`
    /// prints it), or NULL; the WireGuard backend needs it.
    pub wireguard_key: *const c_char,
}

/// How a peer is reached, or that it is not (`cnet_peer_outcome.path`).
pub type cnet_peer_path = u32;
/// Not programmed: `code` and `message` say why; none of its entries is left.
pub const CNET_PEER_FAILED: cnet_peer_path = 0;
/// A direct route via its underlay address.
pub const CNET_PEER_DIRECT: cnet_peer_path = 1;
/// Through the VXLAN device.
pub const CNET_PEER_VXLAN: cnet_peer_path = 2;
/// Through the IP-in-IP device.
pub const CNET_PEER_IPIP: cnet_peer_path = 3;
/// Through the WireGuard device.
pub const CNET_PEER_WIREGUARD: cnet_peer_path = 4;
/// Beyond the node's segment through the default route: a router's route
/// table (a cloud's) carries it; no kernel entry.
pub const CNET_PEER_ROUTE_TABLE: cnet_peer_path = 5;

/// One peer's outcome in a `cnet_peer_report`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_peer_outcome {
    /// The peer's name (for a lease, its node's name); NULL for a failure
    /// that concerns no one peer (a device, a dump).
    pub name: *const c_char,
    /// How it is reached now, or `CNET_PEER_FAILED`.
    pub path: cnet_peer_path,
    /// `CNET_OK` when programmed; else the failure's own code
    /// (`CNET_CONFLICT` for an off-segment host-gw peer or an overlapping
    /// subnet, `CNET_INVALID_ARGUMENT` for a missing VTEP MAC, …).
    pub code: cnet_result,
    /// Why it failed, for people (names the peer, says what to do); NULL
    /// when programmed.
    pub message: *const c_char,
}

/// What a peer reconcile (or teardown) did: counts, and every peer's
/// outcome. Owned by libcnet: free with `cnet_peer_report_free`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_peer_report {
    /// Peers reached by a direct route.
    pub direct: usize,
    /// Peers reached through the VXLAN device.
    pub vxlan: usize,
    /// Peers reached through the IP-in-IP device.
    pub ipip: usize,
    /// Devices created, re-created, updated or deleted.
    pub devices_changed: usize,
    /// Peer routes.
    pub routes: cnet_reconcile_counts,
    /// Permanent neighbours on the VXLAN device.
    pub neighbours: cnet_reconcile_counts,
    /// FDB entries on the VXLAN device.
    pub fdb: cnet_reconcile_counts,
    /// Peers reached through the WireGuard device.
    pub wireguard: usize,
    /// WireGuard peers on the WireGuard device.
    pub wireguard_peers: cnet_reconcile_counts,
    /// Every outcome: the peers programmed (in the order given), then the
    /// failures.
    pub outcomes: *const cnet_peer_outcome,
    /// How many entries `outcomes` has.
    pub outcomes_len: usize,
    /// How many of them failed (`path` is `CNET_PEER_FAILED`).
    pub failed: usize,
}
castable!(one cnet_peer_report);

fn changes(c: Changes) -> cnet_reconcile_counts {
    cnet_reconcile_counts {
        added: c.added,
        replaced: c.replaced,
        deleted: c.deleted,
        unchanged: c.unchanged,
    }
}

fn path_of(p: PeerPath) -> cnet_peer_path {
    match p {
        PeerPath::Direct => CNET_PEER_DIRECT,
        PeerPath::Vxlan => CNET_PEER_VXLAN,
        PeerPath::IpIp => CNET_PEER_IPIP,
        PeerPath::WireGuard => CNET_PEER_WIREGUARD,
        PeerPath::RouteTable => CNET_PEER_ROUTE_TABLE,
    }
}

/// The end of a reconcile or teardown: `r` handed out through `out` (when
/// asked) on success and on `CNET_PARTIAL`, whose error (context `what`)
/// carries every failure.
fn finish(out: *mut *mut cnet_peer_report, what: String, r: PeerReport) -> Res {
    let mut strings = Strings::default();
    let mut outcomes: Vec<cnet_peer_outcome> = r
        .peers
        .iter()
        .map(|(name, path)| cnet_peer_outcome {
            name: strings.add(name),
            path: path_of(*path),
            code: CNET_OK,
            message: std::ptr::null(),
        })
        .collect();
    let failures = r
        .failed
        .into_iter()
        .map(|f| (Some(f.peer), f.error))
        .chain(r.errors.into_iter().map(|e| (None, e)));
    let mut errors = Vec::new();
    for (peer, e) in failures {
        outcomes.push(cnet_peer_outcome {
            name: peer.as_deref().map_or(std::ptr::null(), |n| strings.add(n)),
            path: CNET_PEER_FAILED,
            code: code_of(&e),
            message: strings.add(&e.to_string()),
        });
        errors.push(e);
    }
    if !out.is_null() {
        let head = cnet_peer_report {
            direct: r.peers.iter().filter(|p| p.1 == PeerPath::Direct).count(),
            vxlan: r.peers.iter().filter(|p| p.1 == PeerPath::Vxlan).count(),
            ipip: r.peers.iter().filter(|p| p.1 == PeerPath::IpIp).count(),
            devices_changed: r.devices.len(),
            routes: changes(r.routes),
            neighbours: changes(r.neighbours),
            fdb: changes(r.fdb),
            wireguard: r
                .peers
                .iter()
                .filter(|p| p.1 == PeerPath::WireGuard)
                .count(),
            wireguard_peers: changes(r.wireguard),
            // The Vec's heap buffer does not move when the Vec is boxed.
            outcomes: outcomes.as_ptr(),
            outcomes_len: outcomes.len(),
            failed: errors.len(),
        };
        one_out_keep(
            out_ptr(out, "report")?,
            head,
            strings.0,
            Some(Box::new(outcomes)),
        );
    }
    if errors.is_empty() {
        return Ok(());
    }
    Err(Error::Partial {
        context: format!("{what} ({} backend)", r.backend),
        applied: format!("{} peers programmed", r.peers.len()),
        errors,
    }
    .into())
}

fn backend_of(b: *const cnet_backend) -> Res<Backend> {
    let b = obj(b, "backend")?;
    let mut v = VxlanConfig::default();
    if b.vni != 0 {
        v.vni = b.vni;
    }
    if b.port != 0 {
        v.port = b.port;
    }
    let mtu = (b.mtu != 0).then_some(b.mtu);
    v.mtu = mtu;
    let i = IpIpConfig { mtu };
    if b.kind != CNET_BACKEND_WIREGUARD && (!b.key_file.is_null() || b.keepalive != 0) {
        return Err(Error::invalid(
            "backend",
            "key_file and keepalive are WireGuard settings: set them only with CNET_BACKEND_WIREGUARD",
        )
        .into());
    }
    Ok(match b.kind {
        CNET_BACKEND_HOST_GW => Backend::HostGw,
        CNET_BACKEND_VXLAN => Backend::Vxlan(v),
        CNET_BACKEND_IPIP => Backend::IpIp(i),
        CNET_BACKEND_VXLAN_CROSS_SUBNET => Backend::CrossSubnet {
            encap: Encap::Vxlan(v),
        },
        CNET_BACKEND_IPIP_CROSS_SUBNET => Backend::CrossSubnet {
            encap: Encap::IpIp(i),
        },
        CNET_BACKEND_WIREGUARD => Backend::WireGuard(wireguard_of(b)?),
        CNET_BACKEND_ROUTE_TABLE_CROSS_SUBNET => Backend::CrossSubnet {
            encap: Encap::RouteTable,
        },
        k => {
            return Err(Fail::new(
                CNET_INVALID_ENUM,
                format!("backend.kind {k} is not a backend (1-7)"),
            ))
        }
    })
}

fn wireguard_of(b: &cnet_backend) -> Res<WireGuardConfig> {
    let mut w = WireGuardConfig::default();
    if b.port != 0 {
        w.port = b.port;
    }
    w.mtu = (b.mtu != 0).then_some(b.mtu);
    if let Some(f) = opt_nonempty(b.key_file, "backend.key_file")? {
        w.key_file = f.into();
    }
    w.persistent_keepalive = (b.keepalive != 0).then_some(b.keepalive);
    Ok(w)
}

/// A node working in `h`'s namespace (the host's). `CNET_INVALID_ARGUMENT`
/// for a bad configuration.
#[no_mangle]
pub extern "C" fn cnet_node_new(
    h: *const cnet_handle,
    config: *const cnet_node_config,
    out: *mut *mut cnet_node,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let c = obj(config, "config")?;
        let subnet: IpNet = parse(cstr(c.subnet, "config.subnet")?, "config.subnet")?;
        let uip: IpAddr = parse(
            cstr(c.underlay_ip, "config.underlay_ip")?,
            "config.underlay_ip",
        )?;
        let mut cfg = NodeConfig::new(
            cstr(c.name, "config.name")?,
            subnet,
            cstr(c.underlay_dev, "config.underlay_dev")?,
            uip,
        );
        if let Some(d) = opt_nonempty(c.vxlan_dev, "config.vxlan_dev")? {
            cfg.vxlan_dev = d.to_string();
        }
        if let Some(d) = opt_nonempty(c.ipip_dev, "config.ipip_dev")? {
            cfg.ipip_dev = d.to_string();
        }
        if let Some(d) = opt_nonempty(c.wireguard_dev, "config.wireguard_dev")? {
            cfg.wireguard_dev = d.to_string();
        }
        if c.route_table != 0 {
            cfg.route_table = c.route_table;
        }
        if c.route_protocol != 0 {
            cfg.route_protocol = c.route_protocol;
        }
        let out = out_ptr(out, "out")?;
        let node = Node::shared(Arc::clone(&h.h), cfg)?;
        boxed(
            out,
            cnet_node {
                node,
                drift: Mutex::new(DriftRepair::new()),
            },
        );
        Ok(())
    })
}

/// Program exactly the `len` `peers` with `backend` (devices, routes,
/// neighbours, FDB entries), removing what belonged to peers no longer
/// listed; switching backend in place is allowed. A peer that cannot be
/// programmed (off its segment for host-gw, an overlapping subnet, a
/// kernel refusal) is rolled back while the others are programmed: the
/// call returns `CNET_PARTIAL`, its error listing every failure. `*report`
/// (may be NULL; free with `cnet_peer_report_free`) is written on
/// `CNET_OK` and on `CNET_PARTIAL`: which peers are programmed and how,
/// which failed with their own code and message. An invalid argument
/// (a peer's subnet, key, …) fails the whole call before anything changes.
#[no_mangle]
pub extern "C" fn cnet_node_reconcile_peers(
    node: *const cnet_node,
    backend: *const cnet_backend,
    peers: *const cnet_peer,
    len: usize,
    report: *mut *mut cnet_peer_report,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let n = obj(node, "node")?;
        let b = backend_of(backend)?;
        let peers = slice(peers, len, "peers")?
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let f = |what: &str| format!("peers[{i}].{what}");
                let mut peer = Peer::new(
                    cstr(p.name, &f("name"))?,
                    parse(cstr(p.subnet, &f("subnet"))?, &f("subnet"))?,
                    parse(cstr(p.underlay, &f("underlay"))?, &f("underlay"))?,
                );
                if let Some(m) = parse_opt::<MacAddr>(p.vtep_mac, &f("vtep_mac"))? {
                    peer = peer.with_vtep_mac(m);
                }
                if let Some(k) = parse_opt::<PublicKey>(p.wireguard_key, &f("wireguard_key"))? {
                    peer = peer.with_wireguard_key(k);
                }
                Ok(peer)
            })
            .collect::<Res<Vec<_>>>()?;
        let r = lock(&n.drift).reconcile_peers(&n.node, &b, &peers)?;
        finish(report, format!("node {}: reconcile peers", n.name()), r)
    })
}

/// Like `cnet_node_reconcile_peers` with every other node's lease in
/// `leases` as the peer set (the node agent's loop: list, reconcile); a
/// lease that makes no peer (no underlay address, a bad key) is one more
/// failure of the `CNET_PARTIAL` report, under its node's name.
#[no_mangle]
pub extern "C" fn cnet_node_reconcile_leases(
    node: *const cnet_node,
    backend: *const cnet_backend,
    leases: *const cnet_leases,
    report: *mut *mut cnet_peer_report,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let n = obj(node, "node")?;
        let b = backend_of(backend)?;
        let all = list_leases(obj(leases, "leases")?)?;
        let r = lock(&n.drift).reconcile_leases(&n.node, &b, &all)?;
        finish(report, format!("node {}: reconcile leases", n.name()), r)
    })
}

/// One lease was taken or changed (a `CNET_LEASE_EVENT_PUT` of
/// `cnet_lease_watch_next`): program exactly its peer (for vxlan one
/// route, neighbour and FDB entry), with the backend of the node's last
/// reconcile; nothing is written when the kernel already has it. The
/// node's own lease is ignored. The report and result codes are those of
/// `cnet_node_reconcile_peers`. Call a reconcile first (the node must know
/// its backend and peers); before one the call fails.
#[no_mangle]
pub extern "C" fn cnet_node_put_lease(
    node: *const cnet_node,
    lease: *const cnet_lease,
    report: *mut *mut cnet_peer_report,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let n = obj(node, "node")?;
        let l = node_lease_of(obj(lease, "lease")?)?;
        let r = lock(&n.drift).put_lease(&n.node, &l)?;
        finish(
            report,
            format!("node {}: put lease of {}", n.name(), l.node),
            r,
        )
    })
}

/// The lease of `subnet` ended (a `CNET_LEASE_EVENT_GONE`): remove the
/// entries of its peer; a subnet of no peer writes nothing. Report and
/// codes as `cnet_node_put_lease`.
#[no_mangle]
pub extern "C" fn cnet_node_remove_subnet(
    node: *const cnet_node,
    subnet: *const c_char,
    report: *mut *mut cnet_peer_report,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let n = obj(node, "node")?;
        let net: IpNet = parse(cstr(subnet, "subnet")?, "subnet")?;
        let r = lock(&n.drift).remove_subnet(&n.node, net)?;
        finish(report, format!("node {}: remove {net}", n.name()), r)
    })
}

/// Remove everything the node programmed (peer routes, VXLAN, IP-in-IP and
/// WireGuard devices); what is already gone is fine. What could not be
/// removed is `CNET_PARTIAL`; `*report` (may be NULL; free with
/// `cnet_peer_report_free`) is written on `CNET_OK` and on `CNET_PARTIAL`.
#[no_mangle]
pub extern "C" fn cnet_node_teardown(
    node: *const cnet_node,
    report: *mut *mut cnet_peer_report,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let n = obj(node, "node")?;
        // Nothing programmed is remembered any more: a one-peer call
        // needs a reconcile first again.
        *lock(&n.drift) = DriftRepair::new();
        let r = n.node.teardown()?;
        finish(report, format!("node {}: teardown", n.name()), r)
    })
}

/// The node's WireGuard public key for `backend` (which must be
/// `CNET_BACKEND_WIREGUARD`), in base64 (44 characters and a NUL) into
/// `buf` of `len` bytes: the key of the private key in `backend.key_file`,
/// which is made (mode 0600) if missing. Publish it in the node's lease
/// (`cnet_node_attrs.wireguard_public_key`) so peers can reach the node.
/// `CNET_BUFFER_TOO_SHORT` when `len` < 45; `CNET_IO` or
/// `CNET_PERMISSION_DENIED` when the key file cannot be read or made.
#[no_mangle]
pub extern "C" fn cnet_node_wireguard_public_key(
    node: *const cnet_node,
    backend: *const cnet_backend,
    buf: *mut c_char,
    len: usize,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let n = obj(node, "node")?;
        let b = obj(backend, "backend")?;
        if buf.is_null() {
            return Err(Fail::new(
                crate::boundary::CNET_NULL_ARGUMENT,
                "buf is NULL",
            ));
        }
        let Backend::WireGuard(c) = backend_of(b)? else {
            return Err(Error::invalid(
                "node WireGuard public key",
                format!("backend.kind {} is not CNET_BACKEND_WIREGUARD (6)", b.kind),
            )
            .into());
        };
        write_str(buf, len, &n.node.wireguard_public_key(&c)?.to_base64())
    })
}

/// Free a peer report. `cnet_peer_report_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_peer_report_free(r: *mut cnet_peer_report) {
    free_box(r)
}

/// Free a node (what it programmed stays). `cnet_node_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_node_free(n: *mut cnet_node) {
    free_box(n)
}
