//! A bridge network: one Linux bridge per node, containers attached to it
//! by veth pairs with an address from the node's pool (what Docker's bridge
//! driver and the CNI `bridge` plugin do).
//!
//! ```text
//!   host namespace                               container namespace (by name, path or pid)
//!   ┌───────────────────────────────────┐        ┌──────────────────────────────────────┐
//!   │ cni0 (bridge, 10.244.1.1/24, up)  │        │ eth0  10.244.1.2/24, 0a:58:0a:f4:01:02 │
//!   │   └─ veth9c5b6ec2a60 (port, up) ◀─┼─ veth ─┼▶ default via 10.244.1.1               │
//!   │ net.ipv4.ip_forward = 1           │        └──────────────────────────────────────┘
//!   └───────────────────────────────────┘
//!   pool (PoolStore): 10.244.1.2 ← (container id, eth0)
//! ```
//!
//! Attach, in order, each step recorded in an undo list that unwinds on
//! any error (the `undo` module: a failed undo is named in the error,
//! never hides it):
//!
//! 1. open the container's namespace (nothing to undo);
//! 2. one `RTM_NEWLINK`: the veth with its peer born inside the container,
//!    the host end named from the container id, on the bridge, MTU, up,
//!    echoed back (`NLM_F_ECHO`) so its index and the peer's come without
//!    another request — undo: delete the host end (the peer goes with it);
//! 3. a netlink socket in the container (one per attach);
//! 4. the address from the pool — undo: release it (by generation).
//!    Steps 2, 3 and 4 overlap: step 3 on a short-lived thread that
//!    enters the container's namespace, opens the socket and ends (the only
//!    socket ever opened inside a container); step 2 on another thread over
//!    the host's socket; step 4 on the caller's own thread, which never
//!    changes namespace. IPAM is the host's business: a store that
//!    connects (etcd, again after a restart) connects from where the caller
//!    reaches it, and the fsync of an allocation overlaps the kernel's work;
//! 5. one pipelined batch in the container: peer MAC + up, address,
//!    default route via the gateway (one datagram, three ACKs).
//!
//! This file holds the network and `ensure`; the operations are in
//! `attach.rs`, `detach.rs` and `check.rs` ([`BridgeNetwork::attach`],
//! [`BridgeNetwork::detach`], [`BridgeNetwork::check`]), drift repair
//! from kernel events in `bridge_repair.rs` ([`BridgeNetwork::repair`]).
//!
//! Detach needs neither the namespace nor any stored state besides the
//! pool: the host end's name and MAC are derived from the container id
//! (see [`super::names`]), and deleting it deletes the container end with
//! its address and routes.

use std::net::IpAddr;
#[cfg(feature = "failpoints")]
use std::sync::atomic::AtomicU8;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::names::{host_veth_mac, host_veth_name_unchecked, mac_for_ip, validate_container_id};
use super::undo::Undo;
use crate::addr::AddressSpec;
use crate::error::{Error, Result, ResultExt};
use crate::handle::Handle;
use crate::ipam::{Allocation, PoolStore};
use crate::link::{validate_mtu, validate_name, Bridge, Link, LinkKind, MacAddr};
use crate::route::Family;

/// What a bridge network is: the bridge's name, the node subnet it serves
/// and the MTU of the bridge and every veth. Equivalent to
/// `ip link add NAME type bridge; ip link set NAME mtu MTU up;
/// ip addr add GATEWAY/PLEN dev NAME; sysctl net.ipv4.ip_forward=1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeConfig {
    /// The bridge's name (`cni0`).
    pub name: String,
    /// The node subnet (`10.244.1.0/24`); must be the pool's.
    pub subnet: IpNet,
    /// MTU of the bridge and of both ends of every veth.
    pub mtu: u32,
}

impl BridgeConfig {
    /// MTU when none is set.
    pub const DEFAULT_MTU: u32 = 1500;

    /// Bridge `name` for node subnet `subnet`, MTU 1500.
    pub fn new(name: &str, subnet: IpNet) -> Self {
        BridgeConfig {
            name: name.to_string(),
            subnet,
            mtu: Self::DEFAULT_MTU,
        }
    }

    /// Set the MTU (the overlay's: 1450 under VXLAN).
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = mtu;
        self
    }
}

/// The steps of an attach, for fault injection in tests
/// (`BridgeNetwork::inject_fault`, cargo feature `failpoints`; without it
/// the steps are only names and nothing can fail on purpose).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AttachStep {
    /// The container's namespace is open.
    OpenNamespace = 1,
    /// The veth pair exists, host end on the bridge.
    CreateVeth = 2,
    /// A netlink socket in the container is open.
    ContainerSocket = 3,
    /// The address is allocated.
    Allocate = 4,
    /// Address, route and link state are set in the container.
    ConfigureContainer = 5,
}

/// A bridge network on one node; see the [module docs](self).
///
/// `Send + Sync`: attaches from several threads are serialised on the
/// host socket and the pool only for the few microseconds each request
/// takes.
pub struct BridgeNetwork {
    pub(super) host: Handle,
    pool: Mutex<Box<dyn PoolStore + Send>>,
    pub(super) config: BridgeConfig,
    pub(super) gateway: IpNet,
    /// The bridge's index: it changes when drift repair makes the bridge
    /// again ([`BridgeNetwork::repair`]).
    bridge_index: AtomicU32,
    pub(super) bridge_mac: MacAddr,
    /// The step after which attaches fail (feature `failpoints` only).
    #[cfg(feature = "failpoints")]
    fault: AtomicU8,
}

impl std::fmt::Debug for BridgeNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeNetwork")
            .field("netns", &self.host.netns().label())
            .field("config", &self.config)
            .field("gateway", &self.gateway)
            .field("bridge_index", &self.bridge_index())
            .finish_non_exhaustive()
    }
}

/// One attachment's identity and what is derived from it.
pub(super) struct Key<'a> {
    pub(super) container_id: &'a str,
    pub(super) ifname: &'a str,
    /// The host end's name.
    pub(super) host: String,
    /// The host end's MAC (the owner tag).
    pub(super) mac: MacAddr,
}

impl<'a> Key<'a> {
    pub(super) fn new(container_id: &'a str, ifname: &'a str) -> Result<Key<'a>> {
        validate_container_id(container_id)?;
        validate_name(ifname)?;
        Ok(Key {
            container_id,
            ifname,
            host: host_veth_name_unchecked(container_id, ifname),
            mac: host_veth_mac(container_id, ifname),
        })
    }

    /// Whether `l` is this attachment's host end: a veth with its MAC.
    pub(super) fn owns(&self, l: &Link) -> bool {
        l.kind == LinkKind::Veth && l.mac == Some(self.mac)
    }
}

/// A link's kind for messages ("device" for a kind-less one).
pub(super) fn kind_name(l: &Link) -> &str {
    l.kind.name_or("device")
}

/// A link's MAC for messages ("none" when it has none).
pub(super) fn mac_or_none(mac: Option<MacAddr>) -> String {
    mac.map_or_else(|| "none".into(), |m| m.to_string())
}

pub(super) fn family_of(net: &IpNet) -> Family {
    Family::of(&net.addr())
}

pub(super) fn is_link_local(a: &IpNet) -> bool {
    match a.addr() {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => (v.segments()[0] & 0xffc0) == 0xfe80,
    }
}

impl BridgeNetwork {
    /// Make sure the network exists in `host`'s namespace: the bridge
    /// `config.name` (created with `config.mtu`, up, its gateway address =
    /// the pool's gateway with the subnet's prefix, its MAC derived from
    /// that address) and IP forwarding on in that namespace.
    ///
    /// An existing bridge is used as it is when it matches; one that has
    /// another MTU, another address of the family, or is down, is never
    /// changed: `Mismatch` lists each difference ("mtu: have 1500, want
    /// 1450", "gateway: have 10.244.9.1/24, want 10.244.1.1/24", "state:
    /// have down, want up"). A bridge with no address of the family gets
    /// the gateway (finishing what an interrupted ensure began).
    ///
    /// A bridge this call creates (it was missing: deleted while nobody
    /// watched, say, and the agent restarted) gets the ports it had back:
    /// the host ends of the pool's live allocations that still exist are
    /// set as its ports again, and up ([`BridgeNetwork::reattach_ports`]);
    /// when that fails the new bridge is removed again. An existing bridge
    /// costs no such look-up.
    ///
    /// `pool` hands out the containers' addresses; its subnet must be
    /// `config.subnet` (`Conflict` otherwise) and it must have a gateway.
    /// The network opens its own socket in `host`'s namespace.
    pub fn ensure(
        host: &Handle,
        pool: impl PoolStore + Send + 'static,
        config: BridgeConfig,
    ) -> Result<BridgeNetwork> {
        let ctx = format!(
            "ensure bridge network {} in {}",
            config.name,
            host.netns().label()
        );
        let gateway = Self::validate(&pool, &config, &ctx)?;
        let host = Handle::at(host.netns()).context(&ctx)?;
        let made = ensure_bridge(&host, &config, gateway).context(&ctx)?;
        let net = Self::with(host, pool, config, gateway, made.index, made.mac);
        if made.created {
            // The bridge was missing: the containers' host ends that
            // survived it (a bridge deleted while no agent watched) are
            // put back on it, or the new bridge is removed again.
            if let Err(e) = net.reattach_ports() {
                let mut undo = Undo::new();
                let name = net.config.name.as_str();
                undo.push(format!("delete bridge {name}"), || {
                    net.host.links().delete_if_exists(name).map(drop)
                });
                return Err(undo.fail(e, &ctx));
            }
        }
        Ok(net)
    }

    /// The network as it is, for taking containers off it (CNI `DEL`,
    /// `GC`) or checking them: nothing is created or changed, and a
    /// missing or different bridge is fine ([`BridgeNetwork::detach`] finds
    /// the host ends by name; [`BridgeNetwork::check`] reports the
    /// bridge's drift). Attach through such a network fails when the bridge
    /// is missing. Same validation of `pool` and `config` as
    /// [`BridgeNetwork::ensure`].
    pub fn open(
        host: &Handle,
        pool: impl PoolStore + Send + 'static,
        config: BridgeConfig,
    ) -> Result<BridgeNetwork> {
        let ctx = format!(
            "open bridge network {} in {}",
            config.name,
            host.netns().label()
        );
        let gateway = Self::validate(&pool, &config, &ctx)?;
        let host = Handle::at(host.netns()).context(&ctx)?;
        let (index, mac) = match host.links().find(&config.name).context(&ctx)? {
            Some(l) if l.kind == LinkKind::Bridge => {
                (l.index, l.mac.unwrap_or_else(|| mac_for_ip(gateway.addr())))
            }
            _ => (0, mac_for_ip(gateway.addr())),
        };
        Ok(Self::with(host, pool, config, gateway, index, mac))
    }

    fn with(
        host: Handle,
        pool: impl PoolStore + Send + 'static,
        config: BridgeConfig,
        gateway: IpNet,
        index: u32,
        mac: MacAddr,
    ) -> BridgeNetwork {
        BridgeNetwork {
            host,
            pool: Mutex::new(Box::new(pool)),
            config,
            gateway,
            bridge_index: AtomicU32::new(index),
            bridge_mac: mac,
            #[cfg(feature = "failpoints")]
            fault: AtomicU8::new(0),
        }
    }

    /// The checks `ensure` and `open` share; the gateway with its prefix.
    fn validate(pool: &impl PoolStore, config: &BridgeConfig, ctx: &str) -> Result<IpNet> {
        validate_name(&config.name).context(ctx)?;
        validate_mtu(&config.name, config.mtu).context(ctx)?;
        if config.subnet != config.subnet.trunc() {
            return Err(Error::invalid(
                ctx,
                format!(
                    "subnet {} has host bits set (the network is {})",
                    config.subnet,
                    config.subnet.trunc()
                ),
            ));
        }
        let pcfg = pool.config();
        if pcfg.subnet != config.subnet {
            return Err(Error::Conflict {
                context: ctx.to_string(),
                reason: format!(
                    "the pool serves {}, the bridge network {}",
                    pcfg.subnet, config.subnet
                ),
            });
        }
        pcfg.gateway_net().ok_or_else(|| {
            Error::invalid(
                ctx.to_string(),
                format!("the pool of {} has no gateway address", pcfg.subnet),
            )
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BridgeConfig {
        &self.config
    }

    /// The gateway with the subnet's prefix (`10.244.1.1/24`), the bridge's
    /// address.
    pub fn gateway(&self) -> IpNet {
        self.gateway
    }

    /// The bridge's index in the host namespace.
    pub fn bridge_index(&self) -> u32 {
        self.bridge_index.load(Ordering::Relaxed)
    }

    pub(super) fn set_bridge_index(&self, index: u32) {
        self.bridge_index.store(index, Ordering::Relaxed);
    }

    /// The host namespace's handle this network works through.
    pub fn host(&self) -> &Handle {
        &self.host
    }

    /// Masquerade what the containers send beyond `exclude` (default: the
    /// network's own subnet; give the cluster network so that other
    /// hosts' containers see the container's address) and beyond
    /// multicast: CNI's `ipMasq`. One nftables rule in the host
    /// namespace's table `cnet`, tagged `cnet BRIDGE`
    /// ([`crate::nat::ensure_masquerade`]); `Ok(false)` when it was there
    /// as asked.
    pub fn masquerade(&self, exclude: Option<IpNet>) -> Result<bool> {
        crate::nat::ensure_masquerade(
            &self.host,
            &crate::nat::Masquerade {
                tag: self.masquerade_tag(),
                source: self.config.subnet,
                exclude: vec![exclude.unwrap_or(self.config.subnet)],
            },
        )
    }

    /// Remove this network's masquerade rule; `Ok(false)` when there was
    /// none.
    pub fn unmasquerade(&self) -> Result<bool> {
        crate::nat::remove_masquerade(&self.host, &self.masquerade_tag())
    }

    fn masquerade_tag(&self) -> String {
        format!("cnet {}", self.config.name)
    }

    /// Every allocation of the pool (what the store holds).
    pub fn allocations(&self) -> Result<Vec<Allocation>> {
        self.pool()?.list()
    }

    /// Make the next attaches fail right after `step` (`None`: stop), to
    /// test that each step is rolled back. A test hook: only with the
    /// cargo feature `failpoints`, never in a build you ship.
    #[cfg(feature = "failpoints")]
    pub fn inject_fault(&self, after: Option<AttachStep>) {
        self.fault
            .store(after.map_or(0, |s| s as u8), Ordering::Relaxed);
    }

    #[cfg(feature = "failpoints")]
    pub(super) fn fault_after(&self, step: AttachStep) -> Result<()> {
        if self.fault.load(Ordering::Relaxed) == step as u8 {
            return Err(Error::Protocol {
                context: format!("after step {step:?}"),
                reason: "fault injected by the test hook".into(),
            });
        }
        Ok(())
    }

    /// Without `failpoints` no step fails on purpose.
    #[cfg(not(feature = "failpoints"))]
    #[inline(always)]
    pub(super) fn fault_after(&self, _step: AttachStep) -> Result<()> {
        Ok(())
    }

    /// The pool. A lock poisoned by a panic in another call is taken back:
    /// a store keeps its state on disk or in etcd, written to survive a
    /// crash at any point (libcnet's policy for every lock).
    pub(super) fn pool(&self) -> Result<MutexGuard<'_, Box<dyn PoolStore + Send>>> {
        Ok(self.pool.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// What [`ensure_bridge`] found or made.
pub(super) struct EnsuredBridge {
    pub(super) index: u32,
    pub(super) mac: MacAddr,
    /// This call created it (it was missing).
    pub(super) created: bool,
}

/// Ensure's work on the bridge: create or verify.
pub(super) fn ensure_bridge(
    host: &Handle,
    config: &BridgeConfig,
    gateway: IpNet,
) -> Result<EnsuredBridge> {
    let links = host.links();
    let name = &config.name;
    let mut undo = Undo::new();
    let mut created = false;
    let link = match links.find(name)? {
        Some(l) => l,
        None => {
            let spec = Bridge::new(name)
                .mtu(config.mtu)
                .mac(mac_for_ip(gateway.addr()))
                .up();
            match links.add(spec) {
                Ok(()) => {
                    created = true;
                    undo.push(format!("delete bridge {name}"), || {
                        host.links().delete_if_exists(name).map(drop)
                    });
                }
                // Lost a race with another ensure: verify theirs.
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            match links.get(name) {
                Ok(l) => l,
                Err(e) => return Err(undo.fail(e, &format!("bridge {name}"))),
            }
        }
    };
    let mut diffs = Vec::new();
    if link.kind != LinkKind::Bridge {
        diffs.push(format!("kind: have {}, want bridge", kind_name(&link)));
        return Err(Error::Mismatch {
            context: format!("bridge {name}"),
            differences: diffs,
        });
    }
    if link.mtu != config.mtu {
        diffs.push(format!("mtu: have {}, want {}", link.mtu, config.mtu));
    }
    if !link.is_up() {
        diffs.push("state: have down, want up".to_string());
    }
    let fam = family_of(&gateway);
    let addrs: Vec<IpNet> = match host.addrs().list_index(link.index) {
        Ok(a) => a
            .into_iter()
            .map(|a| a.local)
            .filter(|a| family_of(a) == fam && !is_link_local(a))
            .collect(),
        Err(e) => return Err(undo.fail(e, &format!("bridge {name}"))),
    };
    let need_gateway = if addrs.contains(&gateway) {
        false
    } else if addrs.is_empty() {
        true
    } else {
        let have: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        diffs.push(format!("gateway: have {}, want {gateway}", have.join(", ")));
        false
    };
    if !diffs.is_empty() {
        return Err(undo.fail(
            Error::Mismatch {
                context: format!("bridge {name}"),
                differences: diffs,
            },
            "existing bridge left unchanged",
        ));
    }
    if need_gateway {
        let mut spec = AddressSpec::new(name, gateway);
        if gateway.addr().is_ipv6() {
            // Ours by construction (the pool never hands it out): no
            // duplicate to detect, and no second of tentative state.
            spec = spec.nodad();
        }
        match host.addrs().add_spec(&spec) {
            Ok(()) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(undo.fail(e, &format!("bridge {name}"))),
        }
    }
    let sysctl = host.sysctl();
    let forwarding = match fam {
        Family::V4 => sysctl.ip_forward().and_then(|on| {
            if on {
                Ok(())
            } else {
                sysctl.set_ip_forward(true)
            }
        }),
        Family::V6 => sysctl.get("net.ipv6.conf.all.forwarding").and_then(|v| {
            if v == "1" {
                Ok(())
            } else {
                sysctl.set_ipv6_forwarding(true)
            }
        }),
    };
    if let Err(e) = forwarding {
        return Err(undo.fail(e, "turn on forwarding"));
    }
    undo.commit();
    Ok(EnsuredBridge {
        index: link.index,
        mac: link.mac.unwrap_or(mac_for_ip(gateway.addr())),
        created,
    })
}
