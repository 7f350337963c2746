//! Attach: the five steps of [`BridgeNetwork::attach`] (see the
//! [bridge module](super::bridge) for the picture), and attach twice.

use std::net::IpAddr;

use ipnet::IpNet;

use super::bridge::{kind_name, mac_or_none, AttachStep, BridgeNetwork, Key};
use super::container::ContainerNs;
use super::names::mac_for_ip;
use super::result::{AttachedRoute, Attachment, Interface};
use super::undo::Undo;
use crate::addr::AddressSpec;
use crate::error::{Error, Result, ResultExt};
use crate::handle::{BatchOp, Handle};
use crate::ipam::Allocation;
use crate::link::{LinkRef, LinkSpec, MacAddr, Veth};
use crate::netlink::Socket;
use crate::netns::NetNs;
use crate::route::Route;

/// What a caller may ask of an attach beyond the defaults (what a CNI
/// runtime passes as `CNI_ARGS` `IP=` and `runtimeConfig` `ips`/`mac`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttachOptions {
    /// This address from the pool instead of a free one
    /// ([`PoolStore::allocate_addr`](crate::ipam::PoolStore::allocate_addr):
    /// `Conflict` when another container holds it, `InvalidArgument`
    /// outside the pool or on its network, gateway or broadcast address).
    pub ip: Option<IpAddr>,
    /// This MAC on the container's interface instead of the one derived
    /// from its address ([`mac_for_ip`]); a unicast, non-zero address.
    pub mac: Option<MacAddr>,
}

impl AttachOptions {
    /// No request: a free address, the derived MAC.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask for address `ip`.
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// Ask for MAC `mac` on the container's interface.
    pub fn mac(mut self, mac: MacAddr) -> Self {
        self.mac = Some(mac);
        self
    }
}

impl BridgeNetwork {
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
    /// `Mismatch` lists each [`Drift`](super::Drift) and nothing is changed: detach and
    /// attach again. Errors: `AlreadyExists` when the container already has
    /// an interface `ifname` of someone else's; `Conflict` when a foreign
    /// link has the derived host-side name; `Exhausted` when the pool is
    /// full; `NotFound` when the namespace (or the bridge) is gone.
    pub fn attach(&self, ns: &ContainerNs, container_id: &str, ifname: &str) -> Result<Attachment> {
        self.attach_with(ns, container_id, ifname, &AttachOptions::default())
    }

    /// [`BridgeNetwork::attach`] with a requested address and/or MAC
    /// ([`AttachOptions`]). Attaching again is idempotent when the live
    /// attachment has the requested address; one with another address is
    /// `Mismatch` (detach first). A requested address the pair did not hold
    /// is released again when the attach fails.
    pub fn attach_with(
        &self,
        ns: &ContainerNs,
        container_id: &str,
        ifname: &str,
        opts: &AttachOptions,
    ) -> Result<Attachment> {
        let what = || {
            format!(
                "attach {container_id}/{ifname} ({}) to {}",
                ns.label(),
                self.config.name
            )
        };
        let key = Key::new(container_id, ifname).with_context(what)?;
        if self.bridge_index() == 0 {
            // Opened (BridgeNetwork::open) while the bridge was missing: a
            // veth without a master would be half an attachment.
            return Err(Error::NotFound {
                context: what(),
                kernel: Some(crate::error::KernelError::new(
                    libc::ENODEV,
                    Some(format!(
                        "bridge {} is missing: ensure the network before attaching",
                        self.config.name
                    )),
                )),
            });
        }
        if let Some(mac) = opts.mac {
            if !mac.is_valid_unicast() {
                return Err(Error::invalid(
                    what(),
                    format!("{mac} is not a unicast, non-zero MAC address"),
                ));
            }
        }
        let netns = ns.open().with_context(what)?;
        self.fault_after(AttachStep::OpenNamespace)
            .with_context(what)?;
        let Concurrent {
            created,
            socket,
            allocated,
        } = self.create_and_allocate(&netns, &key, opts.ip);

        let mut undo = Undo::new();
        // Recorded first, so it is undone last (after the veth is gone).
        if let Ok((a, _)) = &allocated {
            let (addr, generation) = (a.addr, a.generation);
            undo.push(
                format!("release {addr} (generation {generation})"),
                move || self.pool()?.release_generation(addr, generation).map(drop),
            );
        }
        let (host_index, peer_index) = match created {
            Ok(Some(ix)) => ix,
            Ok(None) => {
                // The host end is this attachment's: attach twice, answered
                // from the live state and the pool's idempotent answer.
                return self.attach_again(ns, &netns, &key, allocated, undo, &what);
            }
            Err(e) => return Err(undo.fail(e, &what())),
        };
        let host_name = &key.host;
        undo.push(format!("delete veth {host_name}"), || {
            self.host.links().delete_if_exists(host_name).map(drop)
        });
        match self.finish(&netns, &key, peer_index, socket, allocated, opts.mac) {
            Ok(alloc) => {
                undo.commit();
                let container_mac = opts.mac.unwrap_or(mac_for_ip(alloc.addr));
                Ok(self.attachment(ns, &key, host_index, (peer_index, container_mac), &alloc))
            }
            Err(e) => Err(undo.fail(e, &what())),
        }
    }

    /// Steps 2, 3 and 4 at once, each where it belongs:
    /// - a short-lived thread enters the container's namespace, opens the
    ///   netlink socket there (the only socket ever opened inside a
    ///   container) and ends;
    /// - another creates the veth over the host's socket (bound to the
    ///   host's namespace: no namespace change);
    /// - this thread, which never changes namespace, allocates the
    ///   address: IPAM is the host's business (as the CNI `bridge` plugin
    ///   runs IPAM in the host's namespace), so a store that (re)connects,
    ///   etcd after a restart, connects from where the caller reaches it.
    ///   The kernel's work and the store's overlap.
    ///
    /// A requested address `ip` is taken with `allocate_addr`; the pool
    /// does not say whether the pair held it already, so it counts as made
    /// by this call (released again if the attach fails).
    fn create_and_allocate(&self, netns: &NetNs, key: &Key<'_>, ip: Option<IpAddr>) -> Concurrent {
        std::thread::scope(|s| {
            let socket = netns.open_within_scoped(s, Socket::open);
            let veth = s.spawn(|| self.create_veth(netns, key));
            // A store that panics (a bug of its own) must not unwind past
            // the other two threads' work: the panic is held until the
            // veth they may have made is deleted again, then goes on.
            let allocated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.pool().and_then(|mut p| match ip {
                    Some(ip) => p
                        .allocate_addr(key.container_id, key.ifname, ip)
                        .map(|a| (a, true)),
                    None => p.allocate_tracked(key.container_id, key.ifname),
                })
            }));
            let joined = |what: &str| Error::Protocol {
                context: format!("attach: the thread that {what}"),
                reason: "panicked".into(),
            };
            let created = veth
                .join()
                .unwrap_or_else(|_| Err(joined("creates the veth")));
            let socket = socket
                .join()
                .unwrap_or_else(|_| Err(joined("opens the container's socket")));
            let allocated = match allocated {
                Ok(a) => a,
                Err(panic) => {
                    if let Ok(Some(_)) = created {
                        let _ = self.host.links().delete_if_exists(&key.host);
                    }
                    std::panic::resume_unwind(panic);
                }
            };
            Concurrent {
                created,
                socket,
                allocated,
            }
        })
    }

    /// Once the veth is made (step 2): the outcomes of steps 3 (the
    /// container's socket) and 4 (the address) in order, then step 5.
    /// Returns the allocation.
    fn finish(
        &self,
        netns: &NetNs,
        key: &Key<'_>,
        peer_index: u32,
        socket: Result<Socket>,
        allocated: Result<(Allocation, bool)>,
        mac: Option<MacAddr>,
    ) -> Result<Allocation> {
        self.fault_after(AttachStep::CreateVeth)?;
        let sock = socket?;
        self.fault_after(AttachStep::ContainerSocket)?;
        let ch = Handle::from_socket(sock, netns.clone());
        let (alloc, _) = allocated?;
        self.fault_after(AttachStep::Allocate)?;
        let container_mac = mac.unwrap_or(mac_for_ip(alloc.addr));
        self.configure_container(&ch, key.ifname, peer_index, container_mac, alloc.cidr())?;
        self.fault_after(AttachStep::ConfigureContainer)?;
        Ok(alloc)
    }

    /// The attachment of `key`: its host end `host_index`, its container
    /// end `(index, mac)`, the address `alloc`.
    fn attachment(
        &self,
        ns: &ContainerNs,
        key: &Key<'_>,
        host_index: u32,
        (container_index, container_mac): (u32, MacAddr),
        alloc: &Allocation,
    ) -> Attachment {
        Attachment {
            container_id: key.container_id.to_string(),
            ifname: key.ifname.to_string(),
            bridge: self.bridge_interface(),
            host: Interface {
                name: key.host.clone(),
                index: host_index,
                mac: key.mac,
                sandbox: None,
            },
            container: Interface {
                name: key.ifname.to_string(),
                index: container_index,
                mac: container_mac,
                sandbox: Some(ns.sandbox()),
            },
            address: alloc.cidr(),
            gateway: self.gateway.addr(),
            routes: vec![self.default_route()],
            mtu: self.config.mtu,
            generation: alloc.generation,
        }
    }

    fn bridge_interface(&self) -> Interface {
        Interface {
            name: self.config.name.clone(),
            index: self.bridge_index(),
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
            .master(LinkRef::Index(self.bridge_index()))
            .up();
        let ctx = || {
            format!(
                "create veth {host_name} on {} with peer {ifname} in {}",
                self.config.name,
                netns.label()
            )
        };
        // Checked first: only the kernel's refusals are explained below.
        spec.validate().with_context(ctx)?;
        // One request: the kernel echoes the new host end with its index
        // and its peer's (IFLA_LINK).
        let link = match self.host.links().add_echo(&spec, &ctx) {
            Ok(l) => l,
            Err(e) => {
                return match self.explain_create_error(e, netns, key) {
                    CreateError::Ours => Ok(None),
                    CreateError::Other(e) => Err(e),
                }
            }
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
                        mac_or_none(l.mac)
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
            e => match links.get_by_index(self.bridge_index()) {
                Ok(l) if l.name == self.config.name => e,
                _ => Error::NotFound {
                    context: format!(
                        "{}: bridge {} (index {}) is gone: ensure the network again ({e})",
                        e.context(),
                        self.config.name,
                        self.bridge_index()
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
        let mut addr = AddressSpec::new(ifname, cidr);
        if cidr.addr().is_ipv6() {
            // The gateway route is added at once; DAD would hold the
            // address tentative meanwhile.
            addr = addr.nodad();
        }
        let r = self.default_route();
        let gw = r.gateway;
        let ops = [
            BatchOp::LinkUp {
                index,
                mac: Some(mac),
            },
            BatchOp::AddAddress { index, addr },
            BatchOp::AddRoute(Route::to(r.dst).via(gw).dev(LinkRef::Index(index))),
        ];
        let results = ch.batch(&ops, &|i| match i {
            0 => format!("set {ifname} address {mac} up in {ns}"),
            1 => format!("add address {cidr} on {ifname} in {ns}"),
            _ => format!("add default route via {gw} dev {ifname} in {ns}"),
        })?;
        results.into_iter().collect::<Result<Vec<()>>>().map(drop)
    }

    /// Attach twice: the host end exists and is ours. `allocated` is the
    /// pool's answer for the pair and whether this call made it. Nothing
    /// changes: an allocation made by this call (the pool had forgotten
    /// the pair) stays only when the live attachment matches it; when the
    /// attachment drifted (`Mismatch`) or cannot be read, it is released
    /// again through `undo`. A store that cannot answer is that error, not
    /// a drift.
    fn attach_again(
        &self,
        ns: &ContainerNs,
        netns: &NetNs,
        key: &Key<'_>,
        allocated: Result<(Allocation, bool)>,
        undo: Undo<'_>,
        what: &dyn Fn() -> String,
    ) -> Result<Attachment> {
        let (alloc, made_now) = match allocated {
            Ok((a, made_now)) => (Some(a), made_now),
            // No address left for a pair the pool does not know: a drift
            // that compare names.
            Err(Error::Exhausted { .. }) => (None, false),
            Err(e) => return Err(undo.fail(e, &what())),
        };
        match self.attach_existing(ns, netns, key, alloc) {
            Err(e) if made_now => Err(undo.fail(e, &what())),
            r => {
                undo.commit();
                r.with_context(what)
            }
        }
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
        let drifts = self.compare(&obs, alloc.as_ref(), key, ns);
        let (Some(alloc), Some(host), Some(container), true) =
            (alloc, &obs.host, &obs.container, drifts.is_empty())
        else {
            let mut differences: Vec<String> = drifts.iter().map(ToString::to_string).collect();
            if differences.is_empty() {
                differences.push("the existing attachment could not be read back".into());
            }
            return Err(Error::Mismatch {
                context: format!(
                    "already attached ({host_name} exists) but not as attach makes it; \
                     nothing changed: detach first"
                ),
                differences,
            });
        };
        let container_mac = container.mac.unwrap_or(mac_for_ip(alloc.addr));
        Ok(self.attachment(
            ns,
            key,
            host.index,
            (container.index, container_mac),
            &alloc,
        ))
    }
}

/// What attach's concurrent steps produced.
struct Concurrent {
    /// Step 2: (host index, peer index), or `None` when the host end is
    /// this attachment's already.
    created: Result<Option<(u32, u32)>>,
    /// Step 3: the container's netlink socket.
    socket: Result<Socket>,
    /// Step 4: the pool's answer for the pair, and whether this call made
    /// it.
    allocated: Result<(Allocation, bool)>,
}

/// A failed veth creation, explained.
enum CreateError {
    /// The host end exists and is this attachment's.
    Ours,
    Other(Error),
}
