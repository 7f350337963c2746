//! Attach: the five steps of [`BridgeNetwork::attach`] (see the
//! [bridge module](super::bridge) for the picture), and attach twice.

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;

use super::bridge::{kind_name, mac_or_none, AttachStep, BridgeNetwork, Key};
use super::container::ContainerNs;
use super::names::mac_for_ip;
use super::result::{AttachedRoute, Attachment, Interface};
use super::undo::Undo;
use crate::addr::AddressSpec;
use crate::error::{Error, Result, ResultExt};
use crate::handle::Handle;
use crate::ipam::Allocation;
use crate::link::{Link, LinkRef, MacAddr, Veth};
use crate::netlink::Socket;
use crate::netns::NetNs;
use crate::route::Route;

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

        // Three things at once, each where it belongs:
        // - a short-lived thread enters the container's namespace, opens
        //   the netlink socket there (the only socket ever opened inside a
        //   container) and ends;
        // - another creates the veth over the host's socket (bound to the
        //   host's namespace: no namespace change);
        // - this thread, which never changes namespace, allocates the
        //   address: IPAM is the host's business (as the CNI `bridge`
        //   plugin runs IPAM in the host's namespace), so a store that
        //   (re)connects, etcd after a restart, connects from where the
        //   caller reaches it. The kernel's work and the store's overlap.
        let (created, socket, allocated) = std::thread::scope(|s| {
            let socket = netns.open_within_scoped(s, Socket::open);
            let veth = s.spawn(|| self.create_veth(&netns, &key));
            let allocated = self
                .pool()
                .and_then(|mut p| p.allocate_tracked(container_id, ifname));
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
            (created, socket, allocated)
        });

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
        undo.push(format!("delete veth {host_name}"), || {
            self.host.links().delete_if_exists(host_name).map(drop)
        });
        if let Err(e) = self.fault_after(AttachStep::CreateVeth) {
            return Err(undo.fail(e, &what()));
        }
        let ch = match socket.and_then(|sock| {
            self.fault_after(AttachStep::ContainerSocket)?;
            Ok(Handle::from_socket(sock, netns.clone()))
        }) {
            Ok(h) => h,
            Err(e) => return Err(undo.fail(e, &what())),
        };
        let alloc = match allocated {
            Ok((a, _)) => a,
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
        let msg = self.host.links().message_for(&spec).with_context(ctx)?;
        // NLM_F_ECHO (honoured for links by recent kernels; older ones
        // ignore it and the link is looked up): the kernel sends the new
        // host end back before its ACK, with its index and its peer's
        // (IFLA_LINK), sparing a request.
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
}

/// A failed veth creation, explained.
enum CreateError {
    /// The host end exists and is this attachment's.
    Ours,
    Other(Error),
}
