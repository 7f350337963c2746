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
//! any error (see [`super::undo`]):
//!
//! 1. open the container's namespace (nothing to undo);
//! 2. one `RTM_NEWLINK`: the veth with its peer born inside the container,
//!    the host end named from the container id, on the bridge, MTU, up,
//!    echoed back (`NLM_F_ECHO`) so its index and the peer's come without
//!    another request — undo: delete the host end (the peer goes with it);
//! 3. a netlink socket in the container (one per attach);
//! 4. the address from the pool — undo: release it (by generation). It
//!    runs on a helper thread during steps 2 and 3, so its fsync overlaps
//!    the kernel's work;
//! 5. one pipelined batch in the container: peer MAC + up, address,
//!    default route via the gateway (one datagram, three ACKs).
//!
//! Detach needs neither the namespace nor any stored state besides the
//! pool: the host end's name and MAC are derived from the container id
//! (see [`super::names`]), and deleting it deletes the container end with
//! its address and routes.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use serde::{Deserialize, Serialize};

use super::container::ContainerNs;
use super::drift::Drift;
use super::names::{host_veth_mac, host_veth_name_unchecked, mac_for_ip, validate_container_id};
use super::result::{AttachedRoute, Attachment, Interface};
use super::undo::Undo;
use crate::addr::{AddressSpec, Scope};
use crate::error::{Error, Result, ResultExt};
use crate::handle::Handle;
use crate::ipam::{Allocation, PoolStore};
use crate::link::{validate_mtu, validate_name, Bridge, Link, LinkKind, LinkRef, MacAddr, Veth};
use crate::netns::NetNs;
use crate::route::{Family, Route, RouteEntry, RouteFilter, RouteType, TABLE_MAIN};

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
/// ([`BridgeNetwork::inject_fault`]).
#[doc(hidden)]
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

/// What [`BridgeNetwork::detach`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachReport {
    /// The host-side veth name derived from the container id.
    pub host_veth: String,
    /// Whether a veth pair was deleted (false: it was already gone).
    pub link_removed: bool,
    /// The allocation released, if the pool held one.
    pub released: Option<Allocation>,
    /// What was found but left alone, and why (a link with the host-side
    /// name that is not this attachment's).
    pub left_alone: Vec<String>,
}

/// A bridge network on one node; see the [module docs](self).
///
/// `Send + Sync`: attaches from several threads are serialised on the
/// host socket and the pool only for the few microseconds each request
/// takes.
pub struct BridgeNetwork {
    host: Handle,
    pool: Mutex<Box<dyn PoolStore + Send>>,
    config: BridgeConfig,
    gateway: IpNet,
    bridge_index: u32,
    bridge_mac: MacAddr,
    fault: AtomicU8,
}

impl std::fmt::Debug for BridgeNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeNetwork")
            .field("netns", &self.host.netns().label())
            .field("config", &self.config)
            .field("gateway", &self.gateway)
            .field("bridge_index", &self.bridge_index)
            .finish_non_exhaustive()
    }
}

/// One attachment's identity and what is derived from it.
struct Key<'a> {
    container_id: &'a str,
    ifname: &'a str,
    /// The host end's name.
    host: String,
    /// The host end's MAC (the owner tag).
    mac: MacAddr,
}

impl<'a> Key<'a> {
    fn new(container_id: &'a str, ifname: &'a str) -> Result<Key<'a>> {
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
    fn owns(&self, l: &Link) -> bool {
        l.kind == LinkKind::Veth && l.mac == Some(self.mac)
    }
}

fn kind_name(l: &Link) -> &str {
    if l.kind.as_str().is_empty() {
        "device"
    } else {
        l.kind.as_str()
    }
}

fn family_of(net: &IpNet) -> Family {
    Family::of(&net.addr())
}

fn is_link_local(a: &IpNet) -> bool {
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
        validate_name(&config.name).context(&ctx)?;
        validate_mtu(&config.name, config.mtu).context(&ctx)?;
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
                context: ctx,
                reason: format!(
                    "the pool serves {}, the bridge network {}",
                    pcfg.subnet, config.subnet
                ),
            });
        }
        let gateway = pcfg.gateway_net().ok_or_else(|| {
            Error::invalid(
                ctx.clone(),
                format!("the pool of {} has no gateway address", pcfg.subnet),
            )
        })?;
        let host = Handle::at(host.netns()).context(&ctx)?;
        let (bridge_index, bridge_mac) = ensure_bridge(&host, &config, gateway).context(&ctx)?;
        Ok(BridgeNetwork {
            host,
            pool: Mutex::new(Box::new(pool)),
            config,
            gateway,
            bridge_index,
            bridge_mac,
            fault: AtomicU8::new(0),
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
        self.bridge_index
    }

    /// The host namespace's handle this network works through.
    pub fn host(&self) -> &Handle {
        &self.host
    }

    /// Every allocation of the pool (what the store holds).
    pub fn allocations(&self) -> Result<Vec<Allocation>> {
        self.pool()?.list()
    }

    /// Make the next attaches fail right after `step` (`None`: stop), to
    /// test that each step is rolled back. Not for production use.
    #[doc(hidden)]
    pub fn inject_fault(&self, after: Option<AttachStep>) {
        self.fault
            .store(after.map_or(0, |s| s as u8), Ordering::Relaxed);
    }

    fn fault_after(&self, step: AttachStep) -> Result<()> {
        if self.fault.load(Ordering::Relaxed) == step as u8 {
            return Err(Error::Protocol {
                context: format!("after step {step:?}"),
                reason: "fault injected by the test hook".into(),
            });
        }
        Ok(())
    }

    fn pool(&self) -> Result<MutexGuard<'_, Box<dyn PoolStore + Send>>> {
        self.pool.lock().map_err(|_| Error::Protocol {
            context: format!("address pool of {}", self.config.subnet),
            reason: "pool mutex poisoned by a panic in another thread".into(),
        })
    }

    /// Attach a container: a veth pair whose host end (named from
    /// `container_id` and `ifname`, see [`super::host_veth_name`]) is a
    /// port of the bridge and whose other end, `ifname`, is born in the
    /// container's namespace with an address from the pool and a default
    /// route via the gateway; both ends up, both with the network's MTU.
    ///
    /// Any failure undoes every step done so far, the address included;
    /// the error keeps its variant and kernel text, and names any undo that
    /// failed too.
    ///
    /// Attaching `(container_id, ifname)` again is **idempotent** when
    /// everything is as attach made it: the same [`Attachment`] is returned
    /// and nothing is changed (as the pool's `allocate` is). When the
    /// earlier attachment has drifted (say its address was removed, or the
    /// pool holds another address for the pair than the container has),
    /// `Mismatch` lists each [`Drift`] and nothing is changed: detach and
    /// attach again. Errors: `AlreadyExists` when the container already has
    /// an interface `ifname` of someone else's; `Conflict` when a foreign
    /// link has the derived host-side name; `Exhausted` when the pool is
    /// full; `NotFound` when the namespace (or the bridge) is gone.
    pub fn attach(&self, ns: &ContainerNs, container_id: &str, ifname: &str) -> Result<Attachment> {
        let what = || {
            format!(
                "attach {container_id}/{ifname} ({}) to {}",
                ns.label(),
                self.config.name
            )
        };
        let key = Key::new(container_id, ifname).with_context(what)?;
        let (host_name, host_mac) = (&key.host, key.mac);

        let netns = ns.open().with_context(what)?;
        self.fault_after(AttachStep::OpenNamespace)
            .with_context(what)?;

        // The allocation (a journal append and its fsync: disk) runs on a
        // helper thread while this one creates the veth and opens the
        // container's socket (kernel work): the two waits overlap.
        let (created, socket, allocated) = std::thread::scope(|s| {
            let allocating = s.spawn(|| self.pool()?.allocate(container_id, ifname));
            let created = self.create_veth(&netns, &key);
            let socket = match &created {
                Ok(Some(_)) => Some(Handle::at(&netns)),
                _ => None,
            };
            let allocated = allocating.join().unwrap_or_else(|_| {
                Err(Error::Protocol {
                    context: "allocate".into(),
                    reason: "allocating thread panicked".into(),
                })
            });
            (created, socket, allocated)
        });

        let mut undo = Undo::new();
        // Recorded first, so it is undone last (after the veth is gone).
        if let Ok(a) = &allocated {
            let (addr, generation) = (a.addr, a.generation);
            undo.push(
                format!("release {addr} (generation {generation})"),
                move || self.pool()?.release_generation(addr, generation).map(drop),
            );
        }
        let (host_index, peer_index) = match created {
            Ok(Some(ix)) => ix,
            Ok(None) => {
                // The host end is this attachment's: attach twice. The
                // allocation above was `allocate`'s idempotent answer.
                undo.commit();
                return self
                    .attach_existing(ns, &netns, &key, allocated.ok())
                    .with_context(what);
            }
            Err(e) => return Err(undo.fail(e, &what())),
        };
        undo.push(format!("delete veth {host_name}"), || {
            self.host.links().delete_if_exists(host_name).map(drop)
        });
        if let Err(e) = self.fault_after(AttachStep::CreateVeth) {
            return Err(undo.fail(e, &what()));
        }
        let ch = match socket
            .unwrap_or_else(|| Err(Error::invalid("container socket", "not opened")))
            .and_then(|h| {
                self.fault_after(AttachStep::ContainerSocket)?;
                Ok(h)
            }) {
            Ok(h) => h,
            Err(e) => return Err(undo.fail(e, &what())),
        };
        let alloc = match allocated {
            Ok(a) => a,
            Err(e) => return Err(undo.fail(e, &what())),
        };
        let (addr, generation) = (alloc.addr, alloc.generation);
        if let Err(e) = self.fault_after(AttachStep::Allocate) {
            return Err(undo.fail(e, &what()));
        }

        let cidr = alloc.cidr();
        let container_mac = mac_for_ip(addr);
        if let Err(e) = self
            .configure_container(&ch, ifname, peer_index, container_mac, cidr)
            .and_then(|()| self.fault_after(AttachStep::ConfigureContainer))
        {
            return Err(undo.fail(e, &what()));
        }
        undo.commit();

        Ok(Attachment {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            bridge: self.bridge_interface(),
            host: Interface {
                name: host_name.clone(),
                index: host_index,
                mac: host_mac,
                sandbox: None,
            },
            container: Interface {
                name: ifname.to_string(),
                index: peer_index,
                mac: container_mac,
                sandbox: Some(ns.sandbox()),
            },
            address: cidr,
            gateway: self.gateway.addr(),
            routes: vec![self.default_route()],
            mtu: self.config.mtu,
            generation,
        })
    }

    fn bridge_interface(&self) -> Interface {
        Interface {
            name: self.config.name.clone(),
            index: self.bridge_index,
            mac: self.bridge_mac,
            sandbox: None,
        }
    }

    fn default_route(&self) -> AttachedRoute {
        let dst = match self.gateway {
            IpNet::V4(_) => IpNet::V4(Default::default()),
            IpNet::V6(_) => IpNet::V6(Default::default()),
        };
        AttachedRoute {
            dst,
            gateway: self.gateway.addr(),
        }
    }

    /// Step 2: the veth pair in one request. Returns (host index, peer
    /// index in the container), or `None` when this attachment's host end
    /// exists already (attach twice).
    fn create_veth(&self, netns: &NetNs, key: &Key<'_>) -> Result<Option<(u32, u32)>> {
        let (host_name, ifname) = (key.host.as_str(), key.ifname);
        let spec = Veth::new(host_name, ifname)
            .peer_netns(netns)
            .mtu(self.config.mtu)
            .mac(key.mac)
            .master(LinkRef::Index(self.bridge_index))
            .up();
        let ctx = || {
            format!(
                "create veth {host_name} on {} with peer {ifname} in {}",
                self.config.name,
                netns.label()
            )
        };
        let msg = self.host.links().message_for(&spec).with_context(ctx)?;
        // NLM_F_ECHO (honoured for links since Linux 6.3): the kernel sends
        // the new host end back before its ACK, with its index and its
        // peer's (IFLA_LINK), sparing a lookup.
        let sent = self.host.sock()?.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO,
            &ctx,
        );
        let replies = match sent {
            Ok(r) => r,
            Err(e) => {
                return match self.explain_create_error(e, netns, key) {
                    CreateError::Ours => Ok(None),
                    CreateError::Other(e) => Err(e),
                }
            }
        };
        let echoed = replies.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => {
                let l = Link::from_message(l);
                (l.name == host_name).then_some(l)
            }
            _ => None,
        });
        let link = match echoed {
            Some(l) if l.link.is_some() => l,
            // An older kernel: ask.
            _ => self.host.links().get(host_name).with_context(ctx)?,
        };
        let peer = link.link.ok_or_else(|| Error::Protocol {
            context: ctx(),
            reason: "the new veth does not name its peer (IFLA_LINK)".into(),
        })?;
        Ok(Some((link.index, peer)))
    }

    /// Turn the kernel's bare answer to a failed veth creation into what
    /// the caller can act on.
    fn explain_create_error(&self, e: Error, netns: &NetNs, key: &Key<'_>) -> CreateError {
        let (host_name, ifname) = (key.host.as_str(), key.ifname);
        let links = self.host.links();
        CreateError::Other(match e {
            Error::AlreadyExists { .. } => match links.find(host_name) {
                // Ours (attach twice): the caller handles it.
                Ok(Some(l)) if key.owns(&l) => return CreateError::Ours,
                Ok(Some(l)) => Error::Conflict {
                    context: e.context().to_string(),
                    reason: format!(
                        "the host-side name {host_name} (derived from the container id and \
                         interface) is taken by another link ({} {}, mac {}): a hash clash or \
                         a foreign device; nothing was changed",
                        kind_name(&l),
                        l.name,
                        l.mac
                            .map(|m| m.to_string())
                            .unwrap_or_else(|| "none".into())
                    ),
                },
                // The host name is free: the name clash is in the container.
                Ok(None) => Error::AlreadyExists {
                    context: format!(
                        "{}: interface {ifname} already exists in namespace {}",
                        e.context(),
                        netns.label()
                    ),
                    kernel: None,
                },
                Err(_) => e,
            },
            // A bridge removed since ensure: its index no longer resolves.
            e => match links.get_by_index(self.bridge_index) {
                Ok(l) if l.name == self.config.name => e,
                _ => Error::NotFound {
                    context: format!(
                        "{}: bridge {} (index {}) is gone: ensure the network again ({e})",
                        e.context(),
                        self.config.name,
                        self.bridge_index
                    ),
                    kernel: None,
                },
            },
        })
    }

    /// Step 5: the container end's MAC and up, its address, the default
    /// route, pipelined in one datagram (the kernel runs them in order).
    fn configure_container(
        &self,
        ch: &Handle,
        ifname: &str,
        index: u32,
        mac: MacAddr,
        cidr: IpNet,
    ) -> Result<()> {
        let ns = ch.netns().label();
        let mut up = LinkMessage::default();
        up.header.index = index;
        up.header.flags = LinkFlags::Up;
        up.header.change_mask = LinkFlags::Up;
        up.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        let mut addr = AddressSpec::new(ifname, cidr);
        if cidr.addr().is_ipv6() {
            // The gateway route is added at once; DAD would hold the
            // address tentative meanwhile.
            addr = addr.nodad();
        }
        let r = self.default_route();
        let route = Route::to(r.dst).via(r.gateway).dev(LinkRef::Index(index));
        route.validate()?;
        let route_msg = route.message(&|l| match l {
            LinkRef::Index(i) => Ok(*i),
            LinkRef::Name(n) => Err(Error::invalid(n.clone(), "unresolved device")),
        })?;
        let gw = r.gateway;
        let items = vec![
            (RouteNetlinkMessage::SetLink(up), 0),
            (
                RouteNetlinkMessage::NewAddress(addr.message(index)),
                NLM_F_CREATE | NLM_F_EXCL,
            ),
            (
                RouteNetlinkMessage::NewRoute(route_msg),
                NLM_F_CREATE | NLM_F_EXCL,
            ),
        ];
        let results = ch.sock()?.batch(items, &|i| match i {
            0 => format!("set {ifname} address {mac} up in {ns}"),
            1 => format!("add address {cidr} on {ifname} in {ns}"),
            _ => format!("add default route via {gw} dev {ifname} in {ns}"),
        });
        results.into_iter().collect::<Result<Vec<()>>>().map(drop)
    }

    /// Attach found the host end already there and it is ours: return the
    /// live attachment if nothing drifted, else `Mismatch`. `alloc` is the
    /// pool's (idempotent) answer for the pair: what the live state is
    /// compared with.
    fn attach_existing(
        &self,
        ns: &ContainerNs,
        netns: &NetNs,
        key: &Key<'_>,
        alloc: Option<Allocation>,
    ) -> Result<Attachment> {
        let (host_name, ifname) = (key.host.as_str(), key.ifname);
        let obs = self.observe_in(Ok(netns.clone()), host_name, ifname)?;
        let drifts = self.compare(&obs, alloc.as_ref(), key);
        let (Some(alloc), Some(host), Some(container), true) =
            (alloc, &obs.host, &obs.container, drifts.is_empty())
        else {
            let mut differences: Vec<String> = drifts.iter().map(ToString::to_string).collect();
            if differences.is_empty() {
                differences.push(format!("container {ifname} has no address"));
            }
            return Err(Error::Mismatch {
                context: format!(
                    "already attached ({host_name} exists) but not as attach makes it; \
                     nothing changed: detach first"
                ),
                differences,
            });
        };
        Ok(Attachment {
            container_id: key.container_id.to_string(),
            ifname: ifname.to_string(),
            bridge: self.bridge_interface(),
            host: Interface {
                name: host_name.to_string(),
                index: host.index,
                mac: key.mac,
                sandbox: None,
            },
            container: Interface {
                name: ifname.to_string(),
                index: container.index,
                mac: container.mac.unwrap_or(mac_for_ip(alloc.addr)),
                sandbox: Some(ns.sandbox()),
            },
            address: alloc.cidr(),
            gateway: self.gateway.addr(),
            routes: vec![self.default_route()],
            mtu: self.config.mtu,
            generation: alloc.generation,
        })
    }

    /// Detach a container: delete the veth pair (its container end, address
    /// and routes go with it) and release the address. CNI `DEL` semantics:
    /// succeeds when the namespace, the link or the allocation is already
    /// gone, and releases the address even then.
    ///
    /// The namespace is not needed: the host end is found by its derived
    /// name and recognised by its derived MAC; a link with that name that is
    /// not this attachment's is left alone and named in
    /// [`DetachReport::left_alone`]. When `ns` is given and the host end is
    /// missing (renamed), the container's `ifname` is removed if it is a
    /// veth whose peer is a port of this network's bridge.
    ///
    /// Errors (a kernel or store failure, not "already gone") are returned
    /// after every step has been tried.
    pub fn detach(
        &self,
        ns: Option<&ContainerNs>,
        container_id: &str,
        ifname: &str,
    ) -> Result<DetachReport> {
        let what = || format!("detach {container_id}/{ifname} from {}", self.config.name);
        let key = Key::new(container_id, ifname).with_context(what)?;
        let (host_name, host_mac) = (key.host.clone(), key.mac);
        let mut report = DetachReport {
            host_veth: host_name.clone(),
            link_removed: false,
            released: None,
            left_alone: Vec::new(),
        };
        let mut errors = Vec::new();
        let links = self.host.links();
        match links.find(&host_name) {
            Ok(Some(l)) if key.owns(&l) => match links.delete_if_exists(&host_name) {
                Ok(removed) => report.link_removed = removed,
                Err(e) => errors.push(e),
            },
            Ok(Some(l)) => report.left_alone.push(format!(
                "{host_name} exists but is not this attachment's ({} with mac {}, want veth \
                 with mac {host_mac})",
                kind_name(&l),
                l.mac
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "none".into())
            )),
            Ok(None) => {
                if let Some(ns) = ns {
                    match self.detach_container_side(ns, ifname) {
                        Ok(ContainerSide::Removed) => report.link_removed = true,
                        Ok(ContainerSide::Absent) => {}
                        Ok(ContainerSide::LeftAlone(note)) => report.left_alone.push(note),
                        Err(e) => errors.push(e),
                    }
                }
            }
            Err(e) => errors.push(e),
        }
        match self
            .pool()
            .and_then(|mut p| p.release(container_id, ifname))
        {
            Ok(a) => report.released = a,
            Err(e) => errors.push(e),
        }
        let mut errors = errors.into_iter();
        match errors.next() {
            None => Ok(report),
            Some(first) => {
                let rest: Vec<String> = errors.map(|e| e.to_string()).collect();
                Err(if rest.is_empty() {
                    first.with_context(what())
                } else {
                    first.with_context(format!("{} [also: {}]", what(), rest.join("; ")))
                })
            }
        }
    }

    /// The host end is missing: remove the container end if it is a veth
    /// whose peer is a port of our bridge.
    fn detach_container_side(&self, ns: &ContainerNs, ifname: &str) -> Result<ContainerSide> {
        let netns = match ns.open() {
            Ok(n) => n,
            // The namespace is gone, and its veths with it.
            Err(e) if e.is_not_found() => return Ok(ContainerSide::Absent),
            Err(e) => return Err(e),
        };
        let ch = Handle::at(&netns)?;
        let Some(l) = ch.links().find(ifname)? else {
            return Ok(ContainerSide::Absent);
        };
        let peer_on_bridge = l.kind == LinkKind::Veth
            && l.link_netnsid.is_some()
            && l.link.is_some_and(|p| {
                self.host
                    .links()
                    .get_by_index(p)
                    .is_ok_and(|h| h.master == Some(self.bridge_index) && h.link == Some(l.index))
            });
        if peer_on_bridge {
            Ok(if ch.links().delete_if_exists(ifname)? {
                ContainerSide::Removed
            } else {
                ContainerSide::Absent
            })
        } else {
            Ok(ContainerSide::LeftAlone(format!(
                "{ifname} in {} is not a veth whose peer is on {}: left alone",
                netns.label(),
                self.config.name
            )))
        }
    }

    /// Compare a container's live state with what attach made and list
    /// every difference (empty when all is as attach made it): bridge down
    /// or without its gateway, host end missing / not ours / off the bridge
    /// / down, container end missing / down / not the host end's peer,
    /// MTUs, the address missing or another one present, the default route
    /// missing or elsewhere, the allocation missing from the pool. Reads
    /// only. An unreadable namespace is a [`Drift::NamespaceMissing`].
    pub fn check(&self, ns: &ContainerNs, container_id: &str, ifname: &str) -> Result<Vec<Drift>> {
        let what = || format!("check {container_id}/{ifname} on {}", self.config.name);
        let key = Key::new(container_id, ifname).with_context(what)?;
        let mut obs = self
            .observe_in(ns.open(), &key.host, ifname)
            .with_context(what)?;
        if let Some(r) = obs.ns_error.as_mut() {
            *r = format!("{} ({r})", ns.label());
        }
        let alloc = self
            .pool()?
            .list()
            .with_context(what)?
            .into_iter()
            .find(|a| a.container_id == container_id && a.ifname == ifname);
        Ok(self.compare(&obs, alloc.as_ref(), &key))
    }

    /// Read what check compares (reads only).
    fn observe_in(&self, netns: Result<NetNs>, host_name: &str, ifname: &str) -> Result<Observed> {
        let links = self.host.links();
        let fam = family_of(&self.gateway);
        let mut obs = Observed {
            bridge: links.find(&self.config.name)?,
            ..Observed::default()
        };
        if obs.bridge.is_some() {
            obs.bridge_addrs = self
                .host
                .addrs()
                .list(Some(&self.config.name))?
                .into_iter()
                .map(|a| a.local)
                .collect();
        }
        obs.host = links.find(host_name)?;
        if let Some(m) = obs.host.as_ref().and_then(|h| h.master) {
            obs.host_master_name = Some(match links.get_by_index(m) {
                Ok(l) => l.name,
                Err(_) => format!("#{m}"),
            });
        }
        let netns = match netns {
            Ok(n) => n,
            Err(e) => {
                obs.ns_error = Some(e.to_string());
                return Ok(obs);
            }
        };
        obs.nsid = self.host.nsid_of(&netns)?;
        let ch = Handle::at(&netns)?;
        obs.container = ch.links().find(ifname)?;
        if obs.container.is_some() {
            obs.addrs = ch
                .addrs()
                .list(Some(ifname))?
                .into_iter()
                .filter(|a| family_of(&a.local) == fam && a.scope == Scope::Global)
                .map(|a| a.local)
                .filter(|a| !is_link_local(a))
                .collect();
        }
        obs.default_route = ch
            .routes()
            .list(&RouteFilter::new().family(fam).table(TABLE_MAIN))?
            .into_iter()
            .find(|r| r.dst.prefix_len() == 0 && r.kind == RouteType::Unicast);
        Ok(obs)
    }

    fn compare(&self, obs: &Observed, alloc: Option<&Allocation>, key: &Key<'_>) -> Vec<Drift> {
        let (container_id, ifname, host_name, host_mac) =
            (key.container_id, key.ifname, key.host.as_str(), key.mac);
        let mut d = Vec::new();
        let bridge = &self.config.name;
        let want_mtu = self.config.mtu;
        match &obs.bridge {
            None => d.push(Drift::BridgeMissing {
                bridge: bridge.clone(),
            }),
            Some(b) => {
                if !b.is_up() {
                    d.push(Drift::BridgeDown {
                        bridge: bridge.clone(),
                    });
                }
                if !obs.bridge_addrs.contains(&self.gateway) {
                    d.push(Drift::GatewayMissing {
                        bridge: bridge.clone(),
                        want: self.gateway,
                    });
                }
            }
        }
        let bridge_index = obs.bridge.as_ref().map(|b| b.index);
        let host = match &obs.host {
            None => {
                d.push(Drift::HostLinkMissing {
                    name: host_name.to_string(),
                });
                None
            }
            Some(h) if !key.owns(h) => {
                d.push(Drift::HostLinkForeign {
                    name: host_name.to_string(),
                    reason: format!(
                        "kind {}, mac {}; attach makes a veth with mac {host_mac}",
                        kind_name(h),
                        h.mac
                            .map(|m| m.to_string())
                            .unwrap_or_else(|| "none".into())
                    ),
                });
                None
            }
            Some(h) => {
                if h.master.is_none() || h.master != bridge_index {
                    d.push(Drift::HostLinkOffBridge {
                        name: host_name.to_string(),
                        master: obs.host_master_name.clone(),
                        want: bridge.clone(),
                    });
                }
                if !h.is_up() {
                    d.push(Drift::HostLinkDown {
                        name: host_name.to_string(),
                    });
                }
                if h.mtu != want_mtu {
                    d.push(Drift::Mtu {
                        link: host_name.to_string(),
                        have: h.mtu,
                        want: want_mtu,
                    });
                }
                Some(h)
            }
        };
        if let Some(reason) = &obs.ns_error {
            d.push(Drift::NamespaceMissing {
                netns: String::new(),
                reason: reason.clone(),
            });
        } else {
            match &obs.container {
                None => d.push(Drift::ContainerLinkMissing {
                    ifname: ifname.to_string(),
                }),
                Some(c) => {
                    if !c.is_up() {
                        d.push(Drift::ContainerLinkDown {
                            ifname: ifname.to_string(),
                        });
                    }
                    if c.mtu != want_mtu {
                        d.push(Drift::Mtu {
                            link: ifname.to_string(),
                            have: c.mtu,
                            want: want_mtu,
                        });
                    }
                    if let Some(h) = host {
                        let paired = c.kind == LinkKind::Veth
                            && h.link == Some(c.index)
                            && c.link == Some(h.index)
                            && (obs.nsid.is_none() || h.link_netnsid == obs.nsid);
                        if !paired {
                            d.push(Drift::NotPeers {
                                host: host_name.to_string(),
                                ifname: ifname.to_string(),
                            });
                        }
                    }
                    if let Some(a) = alloc {
                        let want = a.cidr();
                        if !obs.addrs.contains(&want) {
                            d.push(Drift::AddressMissing {
                                ifname: ifname.to_string(),
                                want,
                            });
                        }
                    }
                    for have in &obs.addrs {
                        if alloc.is_some_and(|a| a.cidr() == *have) {
                            continue;
                        }
                        d.push(Drift::AddressUnexpected {
                            ifname: ifname.to_string(),
                            have: *have,
                        });
                    }
                }
            }
            let want_via = self.gateway.addr();
            match &obs.default_route {
                None => d.push(Drift::DefaultRouteMissing { want_via }),
                Some(r) => {
                    let dev_ok = obs
                        .container
                        .as_ref()
                        .is_some_and(|c| r.oif == Some(c.index));
                    if r.gateway != Some(want_via) || !dev_ok {
                        d.push(Drift::DefaultRouteWrong {
                            have_via: r.gateway,
                            have_dev: r.oif,
                            want_via,
                        });
                    }
                }
            }
        }
        if alloc.is_none() {
            d.push(Drift::AllocationMissing {
                container_id: container_id.to_string(),
                ifname: ifname.to_string(),
            });
        }
        d
    }
}

/// A failed veth creation, explained.
enum CreateError {
    /// The host end exists and is this attachment's.
    Ours,
    Other(Error),
}

/// What detach found on the container side when the host end was missing.
enum ContainerSide {
    Removed,
    Absent,
    LeftAlone(String),
}

/// Live state as check reads it.
#[derive(Debug, Default)]
struct Observed {
    bridge: Option<Link>,
    bridge_addrs: Vec<IpNet>,
    host: Option<Link>,
    host_master_name: Option<String>,
    /// Why the container's namespace could not be opened.
    ns_error: Option<String>,
    /// The container namespace's id as the host namespace knows it.
    nsid: Option<i32>,
    container: Option<Link>,
    /// Global addresses of the network's family on the container end.
    addrs: Vec<IpNet>,
    default_route: Option<RouteEntry>,
}

/// Ensure's work on the bridge: create or verify; returns its index and MAC.
fn ensure_bridge(host: &Handle, config: &BridgeConfig, gateway: IpNet) -> Result<(u32, MacAddr)> {
    let links = host.links();
    let name = &config.name;
    let mut undo = Undo::new();
    let link = match links.find(name)? {
        Some(l) => l,
        None => {
            let spec = Bridge::new(name)
                .mtu(config.mtu)
                .mac(mac_for_ip(gateway.addr()))
                .up();
            match links.add(spec) {
                Ok(()) => {
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
    let addrs: Vec<IpNet> = match host.addrs().list(Some(name)) {
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
        match host.addrs().add(name, gateway) {
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
    let mac = link.mac.unwrap_or(mac_for_ip(gateway.addr()));
    Ok((link.index, mac))
}
