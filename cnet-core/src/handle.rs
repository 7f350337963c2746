//! [`Handle`]: one netlink socket bound to one namespace; [`BatchOp`]: one
//! typed operation of a pipelined [`Handle::batch`].

use std::sync::{Mutex, MutexGuard, PoisonError};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;

use crate::addr::{AddressSpec, Addrs};
use crate::error::Result;
use crate::fdb::Fdb;
use crate::link::{Links, MacAddr};
use crate::neigh::Neighbours;
use crate::netlink::Socket;
use crate::netns::NetNs;
use crate::nexthop::Nexthops;
use crate::route::{Route, Routes};
use crate::rule::Rules;
use crate::sysctl::Sysctl;

/// One rtnetlink socket bound to one network namespace, plus that
/// namespace. Every typed operation hangs off a handle:
/// [`links`](Handle::links), [`addrs`](Handle::addrs),
/// [`routes`](Handle::routes), [`nexthops`](Handle::nexthops), [`rules`](Handle::rules), [`neighbours`](Handle::neighbours),
/// [`fdb`](Handle::fdb), [`sysctl`](Handle::sysctl), …
///
/// The socket is opened by a short-lived thread that enters the namespace;
/// a socket stays bound to the namespace it was created in, so calls made
/// through the handle never depend on the calling thread's namespace.
/// A handle is `Send + Sync`; calls are serialised on its socket.
#[derive(Debug)]
pub struct Handle {
    sock: Mutex<Socket>,
    netns: NetNs,
}

impl Handle {
    /// A handle for the process's own namespace (`/proc/self/ns/net`).
    /// Needs no privilege when the calling thread is in it (see
    /// [`Handle::at`]): an unprivileged caller can list links, addresses,
    /// routes and neighbours, as with `ip`; changes need CAP_NET_ADMIN.
    pub fn current() -> Result<Handle> {
        Self::at(&NetNs::current()?)
    }

    /// A handle bound to `ns`. When `ns` is the calling thread's own
    /// namespace the socket is opened right here; otherwise a short-lived
    /// thread enters `ns` to open it (`setns`, which needs CAP_SYS_ADMIN).
    pub fn at(ns: &NetNs) -> Result<Handle> {
        let sock = ns.open_within(Socket::open)?;
        Ok(Handle {
            sock: Mutex::new(sock),
            netns: ns.clone(),
        })
    }

    /// A handle over `sock`, which the caller opened inside `ns` (on a
    /// short-lived thread that entered it and does more work there, so
    /// that no second thread is spawned just for the socket).
    pub(crate) fn from_socket(sock: Socket, ns: NetNs) -> Handle {
        Handle {
            sock: Mutex::new(sock),
            netns: ns,
        }
    }

    /// A handle for the named namespace (`/run/netns/NAME`).
    pub fn named(name: &str) -> Result<Handle> {
        Self::at(&NetNs::open(name)?)
    }

    /// The namespace this handle works in.
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// Links: `ip link`.
    pub fn links(&self) -> Links<'_> {
        Links::new(self)
    }

    /// Addresses: `ip addr`.
    pub fn addrs(&self) -> Addrs<'_> {
        Addrs::new(self)
    }

    /// Routes: `ip route`.
    pub fn routes(&self) -> Routes<'_> {
        Routes::new(self)
    }

    /// Nexthop objects: `ip nexthop`.
    pub fn nexthops(&self) -> Nexthops<'_> {
        Nexthops::new(self)
    }

    /// Policy routing rules: `ip rule`.
    pub fn rules(&self) -> Rules<'_> {
        Rules::new(self)
    }

    /// Neighbours (ARP / NDP): `ip neigh`.
    pub fn neighbours(&self) -> Neighbours<'_> {
        Neighbours::new(self)
    }

    /// Bridge forwarding database: `bridge fdb`.
    pub fn fdb(&self) -> Fdb<'_> {
        Fdb::new(self)
    }

    /// Per-namespace sysctls: `ip netns exec NS sysctl`.
    pub fn sysctl(&self) -> Sysctl<'_> {
        Sysctl::new(&self.netns)
    }

    /// The id this handle's namespace uses for `other` (`ip netns list-id`;
    /// what `IFLA_LINK_NETNSID` of a veth refers to), or `None` when none is
    /// assigned. Equivalent to `ip -n THIS netns identify`-style lookups by fd.
    pub fn nsid_of(&self, other: &NetNs) -> Result<Option<i32>> {
        use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
        use netlink_packet_route::RouteNetlinkMessage;
        use std::os::fd::AsRawFd;
        let mut m = NsidMessage::default();
        m.attributes
            .push(NsidAttribute::Fd(other.as_raw_fd() as u32));
        let ctx = || {
            format!(
                "get id of namespace {} in {}",
                other.label(),
                self.netns.label()
            )
        };
        let replies = self
            .sock()?
            .request(RouteNetlinkMessage::GetNsId(m), 0, &ctx)?;
        Ok(replies.iter().find_map(|r| match r {
            RouteNetlinkMessage::NewNsId(n) => n.attributes.iter().find_map(|a| match a {
                NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                _ => None,
            }),
            _ => None,
        }))
    }

    /// Run `ops` as one pipelined batch (written before any ACK is read,
    /// in one datagram when they fit): the kernel applies them in order.
    /// One result per operation, in order; a failed one does not stop
    /// those after it. Every message is built first: an operation that
    /// does not validate, or a device name that does not resolve, fails
    /// the whole call and nothing is sent. `ctx(i)` describes operation
    /// `i` in its error. Equivalent to `ip -batch FILE` with `-force`.
    pub fn batch(&self, ops: &[BatchOp], ctx: &dyn Fn(usize) -> String) -> Result<Vec<Result<()>>> {
        let excl = NLM_F_CREATE | NLM_F_EXCL;
        let items = ops
            .iter()
            .map(|op| {
                Ok(match op {
                    BatchOp::LinkUp { index, mac } => {
                        if let Some(m) = mac {
                            crate::link::validate_mac(&format!("link #{index}"), m)?;
                        }
                        let m = crate::link::up_message(*index, *mac);
                        (RouteNetlinkMessage::SetLink(m), 0)
                    }
                    BatchOp::AddAddress { index, addr } => {
                        addr.validate()?;
                        (RouteNetlinkMessage::NewAddress(addr.message(*index)), excl)
                    }
                    BatchOp::AddRoute(route) => {
                        let m = self.routes().message_for(route)?;
                        (RouteNetlinkMessage::NewRoute(m), excl)
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.sock()?.batch(items, ctx))
    }

    /// The socket, for the typed modules. A lock poisoned by a panic in
    /// another call is taken back: the socket's state is a sequence counter
    /// and a per-request buffer, and the replies of an exchange the panic
    /// abandoned are skipped as stale by the next request, so nothing is
    /// half-updated (libcnet's policy for every lock, cnet-ffi's boundary).
    pub(crate) fn sock(&self) -> Result<MutexGuard<'_, Socket>> {
        Ok(self.sock.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Direct access to the socket (benchmarks' raw loop).
    #[doc(hidden)]
    pub fn raw_socket(&self) -> Result<MutexGuard<'_, Socket>> {
        self.sock()
    }
}

/// One operation of a [`Handle::batch`].
#[non_exhaustive]
#[derive(Debug, Clone)]
pub enum BatchOp {
    /// `ip link set dev #INDEX [address MAC] up`.
    LinkUp {
        /// The link's index.
        index: u32,
        /// A MAC address to set with it.
        mac: Option<MacAddr>,
    },
    /// `ip addr add …` on the link with index `index` (the spec's device
    /// name is not looked up).
    AddAddress {
        /// The link's index.
        index: u32,
        /// The address.
        addr: AddressSpec,
    },
    /// `ip route add ROUTE` (give its devices by index: names are looked
    /// up before anything is sent).
    AddRoute(Route),
}
