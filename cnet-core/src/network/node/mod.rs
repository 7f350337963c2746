//! A node of a cluster: its pod subnet, and the routes to every peer's
//! subnet (what Flannel and Calico program between hosts).
//!
//! ```text
//!  Node::reconcile_peers(backend, peers)
//!   1. check peers (pure): overlaps with the own subnet or each other,
//!      families, VTEP MACs ─────────────────────────▶ refused per peer
//!      host-gw / cross-subnet: `ip route get UNDERLAY` per peer; a gateway
//!      means another segment ──────────────▶ refused (host-gw) or encapsulated
//!   2. devices: ensure the backend's (vxlan: VNI, port, MTU, derived MAC,
//!      VTEP address; ipip; wireguard: key from the key file), then delete
//!      those it no longer needs
//!   3. wireguard peers (one `wg show`, one `wg set` with what differs) ─▶
//!      neighbours ─▶ FDB entries ─▶ routes: one reconcile each (one dump,
//!      one pipelined batch); nothing is written when converged
//!   4. a peer whose entries did not all take is rolled back (step 3 again
//!      without it) and reported
//! ```
//!
//! Ownership: the node owns the routes of its protocol ([`PROTOCOL`] unless
//! [`NodeConfig::route_protocol`] says otherwise) in its table (main by
//! default), the permanent neighbours and the `self` FDB
//! entries with a `dst` of its VXLAN device, its three devices (by name,
//! [`NodeConfig::vxlan_dev`], [`NodeConfig::ipip_dev`],
//! [`NodeConfig::wireguard_dev`]) and every peer of its WireGuard device. Routes of other
//! protocols (`kernel`, `bird`, `static`, …), learnt neighbours and other
//! devices are never touched.
//!
//! The cloud's route tables (feature `aws`) are a reconciler of their own,
//! [`aws_vpc::AwsVpcRoutes`]: it writes no kernel state (peers are reached
//! through the default route), so a node using it reconciles `Node` with
//! no peers and the VPC's tables with every lease.
//!
//! Switching backend is a reconcile with the new backend: host-gw → vxlan
//! creates the device and its entries and replaces each route in place
//! (same prefix, so no gap); vxlan → host-gw deletes the device (the kernel
//! drops its neighbours, FDB entries and routes with it) and adds the direct
//! routes. A device the new backend needs is made before the old one is
//! deleted, so a kernel without it (`Unsupported`, "Unknown device type")
//! leaves the node as it was.

#[cfg(feature = "aws")]
pub mod aws_vpc;
mod checks;
mod config;
mod one_peer;
mod repair;
mod report;

pub use config::{
    vtep_mac_for, Backend, Encap, IpIpConfig, NodeConfig, Peer, VxlanConfig, WireGuardConfig,
    WIREGUARD_KEY_ATTR,
};
pub use repair::{DriftRepair, Repair};
pub use report::{Changes, DeviceChange, PeerFailure, PeerPath, PeerReport};

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use crate::error::{Error, Result, ResultExt};
use crate::fdb::FdbEntry;
use crate::handle::Handle;
use crate::ipam::{NodeAttrs, NodeLease};
use crate::link::{IpIp, Link, LinkKind, LinkRef, LinkSpec, MacAddr, Vxlan, WireGuard};
use crate::neigh::{NeighState, Neighbour};
#[cfg(doc)]
use crate::route::PROTOCOL;
use crate::route::{Route, RouteFilter, RouteOwner, RouteType};
use crate::wireguard::{PrivateKey, PublicKey, WgPeer, WgSet, WireGuardSocket};

/// VXLAN's overhead over an IPv4 underlay: outer IPv4 20 + UDP 8 + VXLAN 8
/// + inner Ethernet 14.
const VXLAN_OVERHEAD_V4: u32 = 50;
/// Over IPv6: outer header 40 instead of 20.
const VXLAN_OVERHEAD_V6: u32 = 70;
/// IP-in-IP: the outer IPv4 header.
const IPIP_OVERHEAD: u32 = 20;
/// WireGuard over IPv4: outer IPv4 20 + UDP 8 + WireGuard header 16 +
/// authentication tag 16 (Calico's figure; wg-quick's 80 assumes IPv6).
const WIREGUARD_OVERHEAD_V4: u32 = 60;
/// Over IPv6: outer header 40 instead of 20.
const WIREGUARD_OVERHEAD_V6: u32 = 80;

/// A node in one network namespace (the host's). Cheap to make: it holds
/// the configuration and its handle, borrowed ([`Node::new`]) or shared
/// ([`Node::shared`], a `Node<'static>` that can be stored and kept, as the
/// C ABI's `cnet_node` does, with its WireGuard socket).
#[derive(Debug)]
pub struct Node<'h> {
    h: HandleRef<'h>,
    cfg: NodeConfig,
    /// The generic-netlink socket of the wireguard backend, opened in the
    /// node's namespace on first use and kept.
    wg: Mutex<Option<WireGuardSocket>>,
}

/// How a node holds its handle.
#[derive(Debug)]
enum HandleRef<'h> {
    /// The caller keeps it alive ([`Node::new`]).
    Borrowed(&'h Handle),
    /// The node keeps it alive too ([`Node::shared`]).
    Shared(Arc<Handle>),
}

impl std::ops::Deref for HandleRef<'_> {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        match self {
            HandleRef::Borrowed(h) => h,
            HandleRef::Shared(h) => h,
        }
    }
}

/// A peer that passed the checks, and how it is reached.
#[derive(Debug, Clone, Copy)]
pub(super) struct Placed<'p> {
    /// Index in the caller's peer list.
    pub(super) idx: usize,
    pub(super) peer: &'p Peer,
    pub(super) path: PeerPath,
    /// Direct: the device the kernel reaches the peer's underlay through.
    pub(super) oif: Option<u32>,
}

/// What the entries of a set of placed peers are, on given devices.
#[derive(Debug, Default)]
struct Desired {
    neighbours: Vec<Neighbour>,
    fdb: Vec<FdbEntry>,
    routes: Vec<Route>,
    /// The peer ([`Placed::idx`]) of each entry of the list of that name.
    neighbour_peers: Vec<usize>,
    fdb_peers: Vec<usize>,
    route_peers: Vec<usize>,
}

impl Desired {
    /// Route `r` for placed peer `p`.
    fn route(&mut self, p: &Placed<'_>, r: Route) {
        self.routes.push(r);
        self.route_peers.push(p.idx);
    }
}

/// Failures of batch items, each with the peer ([`Placed::idx`]) whose
/// entry it was (`None`: no peer's, e.g. a stale entry's deletion).
type PeerErrors = Vec<(Option<usize>, Error)>;

impl Node<'static> {
    /// A node that keeps `h` alive itself, so it can be stored and kept
    /// (in a struct, across threads, behind the C ABI's `cnet_node`)
    /// instead of being made again for each call: what it caches (the
    /// WireGuard socket) lives as long as it does. `InvalidArgument` if the
    /// configuration is not valid.
    pub fn shared(h: Arc<Handle>, cfg: NodeConfig) -> Result<Node<'static>> {
        Self::with(HandleRef::Shared(h), cfg)
    }
}

impl<'h> Node<'h> {
    /// A node working through `h` (a handle in the host's namespace).
    /// `InvalidArgument` if the configuration is not valid.
    pub fn new(h: &'h Handle, cfg: NodeConfig) -> Result<Node<'h>> {
        Self::with(HandleRef::Borrowed(h), cfg)
    }

    fn with(h: HandleRef<'h>, cfg: NodeConfig) -> Result<Node<'h>> {
        cfg.validate()?;
        Ok(Node {
            h,
            cfg,
            wg: Mutex::new(None),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// What this node publishes in its lease when it runs `backend`
    /// (underlay address, backend name, VTEP MAC for the vxlan backends,
    /// the WireGuard public key under [`WIREGUARD_KEY_ATTR`] for
    /// wireguard, its key file made if missing). `Err` only when the key
    /// file cannot be read or made.
    pub fn lease_attrs(&self, backend: &Backend) -> Result<NodeAttrs> {
        let key = match backend.wireguard_config() {
            Some(c) => Some(self.wireguard_public_key(c)?),
            None => None,
        };
        Ok(config::lease_attrs(&self.cfg, backend, key))
    }

    /// The node's WireGuard public key: of the private key in
    /// `c.key_file`, which is made (0600) if missing.
    pub fn wireguard_public_key(&self, c: &WireGuardConfig) -> Result<PublicKey> {
        Ok(PrivateKey::load_or_generate(&c.key_file)?.public_key())
    }

    /// The MAC of this node's VTEP with `c`: `c.mac`, or [`vtep_mac_for`]
    /// the node's name.
    pub fn vtep_mac(&self, c: &VxlanConfig) -> MacAddr {
        c.mac.unwrap_or_else(|| vtep_mac_for(&self.cfg.name))
    }

    fn ctx(&self) -> String {
        format!(
            "node {} in {}: reconcile peers",
            self.cfg.name,
            self.h.netns().label()
        )
    }

    /// Make the node's routes (and for vxlan its device, neighbours and FDB
    /// entries) exactly those that reach `peers` with `backend`: new peers
    /// are added, changed ones updated, departed ones removed, the previous
    /// backend's objects removed; a converged node is not written to.
    ///
    /// `Err` when nothing could be done (the underlay device is missing, a
    /// device cannot be made: `Unsupported` where the kernel lacks ipip, a
    /// dump failed). A peer that cannot be programmed (off-segment peer on
    /// host-gw, overlapping subnet, missing VTEP MAC, a kernel refusal) is
    /// listed in [`PeerReport::failed`] with none of its entries left, and
    /// the other peers are programmed.
    pub fn reconcile_peers(&self, backend: &Backend, peers: &[Peer]) -> Result<PeerReport> {
        self.reconcile(backend, peers, Vec::new(), None)
    }

    /// [`Node::reconcile_peers`] over the leases of the IPAM
    /// (`LeaseStore::list`): this node's own lease is skipped, a lease that
    /// does not make a peer ([`Peer::from_lease`]) is reported as failed.
    pub fn reconcile_leases(&self, backend: &Backend, leases: &[NodeLease]) -> Result<PeerReport> {
        let (peers, failed) = self.peers_of_leases(leases);
        self.reconcile(backend, &peers, failed, None)
    }

    /// The peers the leases make (this node's own skipped), and the leases
    /// that make none.
    fn peers_of_leases(&self, leases: &[NodeLease]) -> (Vec<Peer>, Vec<PeerFailure>) {
        let mut failed = Vec::new();
        let mut peers = Vec::with_capacity(leases.len());
        for l in leases.iter().filter(|l| l.node != self.cfg.name) {
            match Peer::from_lease(l) {
                Ok(p) => peers.push(p),
                Err(error) => failed.push(PeerFailure {
                    peer: l.node.clone(),
                    error,
                }),
            }
        }
        (peers, failed)
    }

    /// Remove everything the node made: its routes and both devices (with
    /// their neighbours and FDB entries). Fine if already gone.
    pub fn teardown(&self) -> Result<PeerReport> {
        self.reconcile(&Backend::HostGw, &[], Vec::new(), None)
    }

    /// The node's IP-in-IP device as the ipip backend makes it (MTU from
    /// the underlay's, its only address the node's tunnel address) and
    /// nothing else: no route, neighbour, FDB entry or other device is
    /// touched. For BGP's tunnel modes, where BIRD, not the node, programs
    /// the routes through it. Returns what it created or changed.
    pub(crate) fn ensure_ipip_only(&self, c: &IpIpConfig) -> Result<Vec<DeviceChange>> {
        let underlay = self
            .h
            .links()
            .get(&self.cfg.underlay_dev)
            .context(self.ctx())?;
        let mut report = PeerReport::default();
        self.ensure_ipip(c, &underlay, &mut report)?;
        Ok(report.devices)
    }

    /// The full reconcile. With `track`, what it programmed (devices and
    /// each placed peer's entries) is written there for drift repair.
    fn reconcile(
        &self,
        backend: &Backend,
        peers: &[Peer],
        mut failed: Vec<PeerFailure>,
        track: Option<&mut repair::Programmed>,
    ) -> Result<PeerReport> {
        let ctx = self.ctx();
        backend.validate().context(&ctx)?;
        let underlay = self.h.links().get(&self.cfg.underlay_dev).context(&ctx)?;
        let own_mac = backend.vxlan_config().map(|c| self.vtep_mac(c));

        // 1. Which peers, and how each is reached.
        let mut verdicts = checks::check_peers(&self.cfg, backend, peers);
        let placed = self.place(backend, peers, &mut verdicts);
        checks::check_macs(own_mac, &placed, &mut verdicts);
        if let Some(c) = backend.wireguard_config() {
            let own = self.wireguard_public_key(c).context(&ctx)?;
            checks::check_wireguard_keys(Some(own), &placed, &mut verdicts);
        }
        let mut placed: Vec<Placed<'_>> = placed
            .into_iter()
            .filter(|p| verdicts[p.idx].is_none())
            .collect();
        for (p, v) in peers.iter().zip(verdicts) {
            if let Some(error) = v {
                failed.push(PeerFailure {
                    peer: p.name.clone(),
                    error,
                });
            }
        }

        // 2. Devices: the new backend's first, then away with the old's.
        let mut report = PeerReport {
            backend: backend.name(),
            failed,
            ..Default::default()
        };
        let vx = match backend.vxlan_config() {
            Some(c) => Some(self.ensure_vxlan(c, &underlay, &mut report)?),
            None => None,
        };
        let ipip = match backend.ipip_config() {
            Some(c) => Some(self.ensure_ipip(c, &underlay, &mut report)?),
            None => None,
        };
        let wg = match backend.wireguard_config() {
            Some(c) => Some(self.ensure_wireguard(c, &underlay, &mut report)?),
            None => None,
        };
        if vx.is_none() {
            self.delete_device(&self.cfg.vxlan_dev, LinkKind::Vxlan, &mut report)?;
        }
        if ipip.is_none() {
            self.delete_device(&self.cfg.ipip_dev, LinkKind::IpIp, &mut report)?;
        }
        if wg.is_none() {
            self.delete_device(&self.cfg.wireguard_dev, LinkKind::WireGuard, &mut report)?;
        }
        let devs = Devs {
            vx: vx.as_ref().map(|l| l.index),
            ipip: ipip.as_ref().map(|l| l.index),
            wg: wg.map(|(l, setup)| (l.index, setup)),
        };

        // 3. Entries, in Flannel's order.
        let errors = self.apply(&devs, &placed, &mut report)?;
        if !errors.is_empty() {
            // 4. Whoever did not fully take goes out again, whole.
            let broken: HashSet<usize> = self.verify(&devs, &placed)?.into_iter().collect();
            let mut errors = errors;
            if !broken.is_empty() {
                let (out, keep): (Vec<_>, Vec<_>) =
                    placed.into_iter().partition(|p| broken.contains(&p.idx));
                placed = keep;
                errors.extend(self.apply(&devs, &placed, &mut report)?);
                for p in out {
                    let error = take_error_of(&mut errors, &p).unwrap_or_else(|| Error::Protocol {
                        context: format!("program peer {}", p.peer.name),
                        reason: "its neighbour, FDB entry or route did not take (see the \
                                 report's errors); its entries were removed"
                            .into(),
                    });
                    report.failed.push(PeerFailure {
                        peer: p.peer.name.clone(),
                        error,
                    });
                }
            }
            report.errors = errors.into_iter().map(|(_, e)| e).collect();
        }
        report.peers = placed
            .iter()
            .map(|p| (p.peer.name.clone(), p.path))
            .collect();
        if let Some(t) = track {
            t.record(self, backend, peers, &devs, &placed, underlay.index);
        }
        Ok(report)
    }

    /// Classify the peers that passed [`checks::check_peers`]. Host-gw and
    /// cross-subnet ask the kernel how it reaches each peer's underlay
    /// address (`ip route get`, once per distinct address).
    fn place<'p>(
        &self,
        backend: &Backend,
        peers: &'p [Peer],
        verdicts: &mut [Option<Error>],
    ) -> Vec<Placed<'p>> {
        let encap = if backend.vxlan_config().is_some() {
            PeerPath::Vxlan
        } else if matches!(
            backend,
            Backend::CrossSubnet {
                encap: Encap::RouteTable
            }
        ) {
            PeerPath::RouteTable
        } else if backend.wireguard_config().is_some() {
            PeerPath::WireGuard
        } else {
            PeerPath::IpIp
        };
        let mut lookups: HashMap<IpAddr, Result<crate::route::RouteLookup>> = HashMap::new();
        let mut out = Vec::with_capacity(peers.len());
        for (i, p) in peers.iter().enumerate() {
            if verdicts[i].is_some() {
                continue;
            }
            if !backend.direct_on_segment() {
                out.push(Placed {
                    idx: i,
                    peer: p,
                    path: encap,
                    oif: None,
                });
                continue;
            }
            let l = lookups
                .entry(p.underlay)
                .or_insert_with(|| self.h.routes().get_oif(p.underlay));
            let hostgw = matches!(backend, Backend::HostGw);
            match l {
                Ok(l) if l.kind == RouteType::Unicast && l.gateway.is_none() && l.oif.is_some() => {
                    out.push(Placed {
                        idx: i,
                        peer: p,
                        path: PeerPath::Direct,
                        oif: l.oif,
                    })
                }
                Ok(l) if l.kind == RouteType::Local => {
                    verdicts[i] = Some(Error::Conflict {
                        context: format!("peer {}", p.name),
                        reason: format!(
                            "its underlay address {} is an address of this node",
                            p.underlay
                        ),
                    })
                }
                Ok(l) if hostgw => {
                    // Rare: name the device only for the error message.
                    let mut l = l.clone();
                    l.dev = l
                        .oif
                        .and_then(|i| self.h.links().get_by_index(i).ok())
                        .map(|d| d.name);
                    verdicts[i] = Some(off_segment(p, &l))
                }
                Err(e) if hostgw => {
                    verdicts[i] = Some(Error::Conflict {
                        context: format!("host-gw route to peer {} ({})", p.name, p.subnet),
                        reason: format!(
                            "this node has no route to its underlay address {} ({e}); \
                             host-gw needs peers on the node's layer-2 segment",
                            p.underlay
                        ),
                    })
                }
                // Cross-subnet: anything but a direct neighbour is encapsulated.
                _ => out.push(Placed {
                    idx: i,
                    peer: p,
                    path: encap,
                    oif: None,
                }),
            }
        }
        out
    }

    /// The VXLAN device as `c` and the node want it: created if missing,
    /// re-created if it differs (VNI, port, MTU, MAC, …), brought up, its
    /// only address the node's VTEP address.
    fn ensure_vxlan(
        &self,
        c: &VxlanConfig,
        underlay: &Link,
        report: &mut PeerReport,
    ) -> Result<Link> {
        let overhead = if self.cfg.underlay_ip.is_ipv4() {
            VXLAN_OVERHEAD_V4
        } else {
            VXLAN_OVERHEAD_V6
        };
        let mtu = self.encap_mtu(c.mtu, underlay, overhead, "vxlan")?;
        let spec = Vxlan::new(&self.cfg.vxlan_dev, c.vni)
            .port(c.port)
            .local(self.cfg.underlay_ip)
            .dev(underlay.index)
            .learning(false)
            .mac(self.vtep_mac(c))
            .mtu(mtu)
            .up();
        self.ensure_device(&spec, report)
    }

    /// The IP-in-IP device (multi-peer: local address, no remote, on the
    /// underlay device), its only address the node's tunnel address.
    fn ensure_ipip(
        &self,
        c: &IpIpConfig,
        underlay: &Link,
        report: &mut PeerReport,
    ) -> Result<Link> {
        let ctx = || format!("{}: ipip device {}", self.ctx(), self.cfg.ipip_dev);
        if !self.cfg.underlay_ip.is_ipv4() || !self.cfg.subnet.addr().is_ipv4() {
            return Err(Error::invalid(
                ctx(),
                "ipip carries IPv4 over IPv4; this node's subnet or underlay is IPv6",
            ));
        }
        let mtu = self.encap_mtu(c.mtu, underlay, IPIP_OVERHEAD, "ipip")?;
        let spec = IpIp::new(&self.cfg.ipip_dev)
            .local(self.cfg.underlay_ip)
            .dev(underlay.index)
            .mtu(mtu)
            .up();
        self.ensure_device(&spec, report)
    }

    /// The WireGuard device (MTU from the underlay's), its only address the
    /// node's tunnel address, and the node's key. The key file is read (or
    /// made) before the device is, so a bad key file leaves nothing.
    fn ensure_wireguard(
        &self,
        c: &WireGuardConfig,
        underlay: &Link,
        report: &mut PeerReport,
    ) -> Result<(Link, WgSetup)> {
        let ctx = format!(
            "{}: wireguard device {}",
            self.ctx(),
            self.cfg.wireguard_dev
        );
        let key = PrivateKey::load_or_generate(&c.key_file).context(&ctx)?;
        let overhead = if self.cfg.underlay_ip.is_ipv4() {
            WIREGUARD_OVERHEAD_V4
        } else {
            WIREGUARD_OVERHEAD_V6
        };
        let mtu = self.encap_mtu(c.mtu, underlay, overhead, "wireguard")?;
        let spec = WireGuard::new(&self.cfg.wireguard_dev).mtu(mtu).up();
        let made = report.devices.len();
        let link = self.ensure_device(&spec, report)?;
        // Nothing half-made: a device this call created goes again when its
        // generic-netlink side cannot be reached.
        let created = report.devices[made..].iter().any(|d| {
            matches!(
                d,
                DeviceChange::Created { .. } | DeviceChange::Recreated { .. }
            )
        });
        if let Err(e) = self.with_wg(|_| Ok(())) {
            if created {
                let _ = self.h.links().delete_if_exists(&self.cfg.wireguard_dev);
            }
            return Err(e.with_context(ctx));
        }
        Ok((
            link,
            WgSetup {
                key,
                port: c.port,
                keepalive: c.persistent_keepalive,
            },
        ))
    }

    /// Run `f` with the node's generic-netlink socket (opened on first use).
    fn with_wg<T>(&self, f: impl FnOnce(&mut WireGuardSocket) -> Result<T>) -> Result<T> {
        let mut g = self.wg.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(WireGuardSocket::at(self.h.netns())?);
        }
        match g.as_mut() {
            Some(s) => f(s),
            None => unreachable!("set just above"),
        }
    }

    /// Make the WireGuard device's key, port and peers exactly those of
    /// `setup` and `placed`: one `wg show`, then one `wg set` with only
    /// what differs (nothing when converged).
    fn apply_wireguard(
        &self,
        setup: &WgSetup,
        placed: &[Placed<'_>],
        report: &mut PeerReport,
    ) -> Result<()> {
        let dev = &self.cfg.wireguard_dev;
        let want: Vec<WgPeer> = placed
            .iter()
            .filter(|p| p.path == PeerPath::WireGuard)
            .filter_map(|p| {
                Some(WgPeer {
                    public_key: p.peer.wireguard_key?,
                    endpoint: Some(SocketAddr::new(p.peer.underlay, setup.port)),
                    allowed_ips: vec![p.peer.subnet],
                    persistent_keepalive: setup.keepalive,
                })
            })
            .collect();
        self.with_wg(|s| {
            let have = s.device(dev)?;
            let mut set = WgSet::new(dev);
            if have.public_key != Some(setup.key.public_key()) {
                set = set.private_key(setup.key.clone());
            }
            if have.listen_port != setup.port {
                set = set.listen_port(setup.port);
            }
            let c = &mut report.wireguard;
            for w in &want {
                match have.peer(&w.public_key) {
                    Some(h) if same_wg_peer(&h.peer, w) => c.unchanged += 1,
                    Some(_) => {
                        c.replaced += 1;
                        set = set.peer(w.clone());
                    }
                    None => {
                        c.added += 1;
                        set = set.peer(w.clone());
                    }
                }
            }
            for h in &have.peers {
                if !want.iter().any(|w| w.public_key == h.peer.public_key) {
                    c.deleted += 1;
                    set = set.remove_peer(h.peer.public_key);
                }
            }
            if !set.is_empty() {
                s.set(&set)?;
            }
            Ok(())
        })
        .context(format!("{}: wireguard peers of {dev}", self.ctx()))
    }

    fn encap_mtu(
        &self,
        want: Option<u32>,
        underlay: &Link,
        overhead: u32,
        what: &str,
    ) -> Result<u32> {
        let max = underlay.mtu.saturating_sub(overhead);
        let mtu = want.unwrap_or(max);
        if mtu > max || mtu < crate::link::MIN_MTU {
            return Err(Error::invalid(
                format!("{}: {what} device", self.ctx()),
                format!(
                    "MTU {mtu} does not fit: the underlay {} has MTU {}, {what} takes {overhead} \
                     bytes (at most {max}, at least {})",
                    underlay.name,
                    underlay.mtu,
                    crate::link::MIN_MTU
                ),
            ));
        }
        Ok(mtu)
    }

    fn ensure_device(&self, spec: &dyn LinkSpec, report: &mut PeerReport) -> Result<Link> {
        let links = self.h.links();
        let name = spec.name().to_string();
        let ctx = || format!("{}: device {name}", self.ctx());
        let resolve = |r: &LinkRef| links.resolve(r);
        let link = match links.find(&name).context(ctx())? {
            None => {
                links.add(spec).context(ctx())?;
                report
                    .devices
                    .push(DeviceChange::Created { name: name.clone() });
                links.get(&name).context(ctx())?
            }
            Some(l) if l.kind != spec.kind() => {
                return Err(Error::Conflict {
                    context: ctx(),
                    reason: format!(
                        "a {} device has this name; the node's {} device needs it \
                         (set another name in NodeConfig)",
                        l.kind.name_or("physical"),
                        spec.kind().as_str()
                    ),
                })
            }
            Some(l) => {
                let differences = spec.differences(&l, &resolve);
                if differences.is_empty() {
                    if !l.is_up() {
                        links.set_up(&name).context(ctx())?;
                        report.devices.push(DeviceChange::Updated {
                            name: name.clone(),
                            what: "set up".into(),
                        });
                    }
                    l
                } else {
                    // VNI, port, local address… cannot all be changed in
                    // place; like Flannel, make it again.
                    links.delete_if_exists(&name).context(ctx())?;
                    links.add(spec).context(ctx())?;
                    report.devices.push(DeviceChange::Recreated {
                        name: name.clone(),
                        differences,
                    });
                    links.get(&name).context(ctx())?
                }
            }
        };
        self.ensure_address(&link, report)?;
        Ok(link)
    }

    /// The device's only global address is the node's VTEP address (/32 or
    /// /128): the source of the node's own packets into the overlay.
    fn ensure_address(&self, link: &Link, report: &mut PeerReport) -> Result<()> {
        let want = IpNet::from(self.cfg.vtep_ip());
        let ctx = || format!("{}: address of {}", self.ctx(), link.name);
        let addrs = self.h.addrs();
        let have = addrs.list(Some(&link.name)).context(ctx())?;
        let mut present = false;
        for a in have.iter().filter(|a| a.scope != crate::addr::Scope::Link) {
            if a.local == want && a.peer.is_none() {
                present = true;
            } else {
                addrs.delete_if_exists(&link.name, a.local).context(ctx())?;
            }
        }
        if !present {
            addrs.add(&link.name, want).context(ctx())?;
            report.devices.push(DeviceChange::Updated {
                name: link.name.clone(),
                what: format!("address {want}"),
            });
        }
        Ok(())
    }

    fn delete_device(&self, name: &str, kind: LinkKind, report: &mut PeerReport) -> Result<()> {
        let links = self.h.links();
        let ctx = || format!("{}: delete device {name}", self.ctx());
        // Not ours (another kind) or gone: nothing to do.
        let ours = links
            .find(name)
            .context(ctx())?
            .is_some_and(|l| l.kind == kind);
        if ours && links.delete_if_exists(name).context(ctx())? {
            report.devices.push(DeviceChange::Deleted {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    fn desired(&self, devs: &Devs, placed: &[Placed<'_>]) -> Desired {
        let mut d = Desired::default();
        for p in placed {
            let peer = p.peer;
            let route = Route::to(peer.subnet)
                .table(self.cfg.route_table)
                .protocol(self.cfg.route_protocol);
            match (p.path, devs.vx, devs.ipip) {
                (PeerPath::WireGuard, _, _) => {
                    if let Some((wg, _)) = &devs.wg {
                        d.route(p, route.dev(*wg));
                    }
                }
                (PeerPath::Direct, _, _) => {
                    let mut r = route.via(peer.underlay);
                    if let Some(i) = p.oif {
                        r = r.dev(i);
                    }
                    d.route(p, r);
                }
                (PeerPath::Vxlan, Some(vx), _) => {
                    // check_macs placed only peers with a MAC here.
                    let Some(mac) = peer.vtep_mac else { continue };
                    d.neighbours.push(Neighbour::new(vx, peer.vtep_ip(), mac));
                    d.neighbour_peers.push(p.idx);
                    d.fdb
                        .push(FdbEntry::new(mac, vx).dst(peer.underlay).on_self());
                    d.fdb_peers.push(p.idx);
                    d.route(p, route.via(peer.vtep_ip()).dev(vx).onlink());
                }
                (PeerPath::IpIp, _, Some(tun)) => {
                    d.route(p, route.via(peer.underlay).dev(tun).onlink())
                }
                _ => {}
            }
        }
        d
    }

    fn owner(&self) -> RouteOwner {
        RouteOwner::new(self.cfg.route_protocol, self.cfg.route_table)
    }

    /// Neighbours, then FDB entries, then routes (a route never points at
    /// a peer VTEP the kernel cannot resolve yet). Returns the per-item
    /// failures, each with its peer.
    fn apply(
        &self,
        devs: &Devs,
        placed: &[Placed<'_>],
        report: &mut PeerReport,
    ) -> Result<PeerErrors> {
        let ctx = self.ctx();
        let d = self.desired(devs, placed);
        let mut errors = Vec::new();
        if let Some((_, setup)) = &devs.wg {
            self.apply_wireguard(setup, placed, report)?;
        }
        if devs.vx.is_some() {
            let vx = &self.cfg.vxlan_dev;
            let r = self
                .h
                .neighbours()
                .reconcile(vx, &d.neighbours)
                .context(&ctx)?;
            report.neighbours.absorb(r, &d.neighbour_peers, &mut errors);
            let r = self.h.fdb().reconcile(vx, &d.fdb).context(&ctx)?;
            report.fdb.absorb(r, &d.fdb_peers, &mut errors);
        }
        let r = self
            .h
            .routes()
            .reconcile(&self.owner(), &d.routes)
            .context(&ctx)?;
        report.routes.absorb(r, &d.route_peers, &mut errors);
        Ok(errors)
    }

    /// The peers whose entries are not all in the kernel (read back after a
    /// reconcile that reported failures).
    fn verify(&self, devs: &Devs, placed: &[Placed<'_>]) -> Result<Vec<usize>> {
        let ctx = self.ctx();
        let routes = self
            .h
            .routes()
            .list(
                &RouteFilter::new()
                    .protocol(self.cfg.route_protocol)
                    .table(self.cfg.route_table),
            )
            .context(&ctx)?;
        let (neighs, fdb) = match devs.vx {
            Some(_) => (
                self.h
                    .neighbours()
                    .list(Some(&self.cfg.vxlan_dev), None)
                    .context(&ctx)?,
                self.h.fdb().list(&self.cfg.vxlan_dev).context(&ctx)?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        let mut broken = Vec::new();
        for p in placed {
            let peer = p.peer;
            let (gw, oif) = match p.path {
                PeerPath::Direct => (Some(peer.underlay), p.oif),
                PeerPath::Vxlan => (Some(peer.vtep_ip()), devs.vx),
                PeerPath::IpIp => (Some(peer.underlay), devs.ipip),
                PeerPath::WireGuard => (None, devs.wg.as_ref().map(|(i, _)| *i)),
                // Nothing of the kernel's to read back.
                PeerPath::RouteTable => continue,
            };
            let route_ok = routes
                .iter()
                .any(|r| r.dst == peer.subnet && r.gateway == gw && r.oif == oif);
            let vxlan_ok = p.path != PeerPath::Vxlan
                || (neighs.iter().any(|n| {
                    n.ip == peer.vtep_ip()
                        && n.mac == peer.vtep_mac
                        && n.state == NeighState::Permanent
                }) && fdb
                    .iter()
                    .any(|f| Some(f.mac) == peer.vtep_mac && f.dst == Some(peer.underlay)));
            if !(route_ok && vxlan_ok) {
                broken.push(p.idx);
            }
        }
        Ok(broken)
    }
}

/// The node's encapsulation devices that exist for this backend.
#[derive(Debug, Clone)]
struct Devs {
    vx: Option<u32>,
    ipip: Option<u32>,
    /// The WireGuard device and what it is to be set to.
    wg: Option<(u32, WgSetup)>,
}

/// What the WireGuard device is set to besides its peers.
#[derive(Debug, Clone)]
struct WgSetup {
    key: PrivateKey,
    port: u16,
    keepalive: Option<u16>,
}

/// Whether the kernel's peer `have` is configured as `want` (allowed IPs
/// compared as sets).
fn same_wg_peer(have: &WgPeer, want: &WgPeer) -> bool {
    let mut a = have.allowed_ips.clone();
    let mut b = want.allowed_ips.clone();
    a.sort();
    b.sort();
    have.endpoint == want.endpoint
        && a == b
        && have.persistent_keepalive == want.persistent_keepalive
}

/// The first kernel error of a failed batch item of peer `p`'s entries,
/// taken out of `errors` (matched by the peer's index, which each batch
/// item carries: never by the message's text).
fn take_error_of(errors: &mut PeerErrors, p: &Placed<'_>) -> Option<Error> {
    let i = errors.iter().position(|(peer, _)| *peer == Some(p.idx))?;
    Some(errors.remove(i).1)
}

fn off_segment(p: &Peer, l: &crate::route::RouteLookup) -> Error {
    let via = match (l.gateway, &l.dev) {
        (Some(g), Some(d)) => format!("via gateway {g} dev {d}"),
        (Some(g), None) => format!("via gateway {g}"),
        (None, _) => format!("as a {} route", l.kind.as_str()),
    };
    Error::Conflict {
        context: format!("host-gw route to peer {} ({})", p.name, p.subnet),
        reason: format!(
            "its underlay address {} is not on this node's layer-2 segment (the kernel \
             reaches it {via}), so a route via it cannot work; use the vxlan or ipip \
             backend, or cross-subnet (direct routes on the segment, encapsulation beyond it)",
            p.underlay
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, subnet: &str, underlay: &str) -> Peer {
        Peer::new(name, subnet.parse().unwrap(), underlay.parse().unwrap())
    }

    #[test]
    fn batch_errors_go_to_their_peer_by_index_not_by_text() {
        // "10.244.1.0/24 " is inside "110.244.1.0/24 ": only the peer whose
        // entry failed gets the error.
        let a = peer("a", "10.244.1.0/24", "192.0.2.11");
        let b = peer("b", "110.244.1.0/24", "192.0.2.12");
        let placed = |idx, peer| Placed {
            idx,
            peer,
            path: PeerPath::Direct,
            oif: None,
        };
        let (pa, pb) = (placed(0, &a), placed(1, &b));
        let mut errors: PeerErrors = vec![
            (
                Some(1),
                Error::invalid("add route 110.244.1.0/24 in ns1", "File exists"),
            ),
            (
                None,
                Error::invalid("delete route 10.244.1.0/24 metric 5 in ns1", "gone"),
            ),
        ];
        assert!(take_error_of(&mut errors, &pa).is_none());
        let e = take_error_of(&mut errors, &pb).expect("b's error");
        assert!(e.to_string().contains("110.244.1.0/24"), "{e}");
        assert!(take_error_of(&mut errors, &pb).is_none());
        assert_eq!(errors.len(), 1, "the stale entry's error stays");
    }
}
