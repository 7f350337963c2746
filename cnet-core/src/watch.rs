//! Watch a namespace: the kernel's change notifications (rtnetlink
//! multicast groups) as typed events, like `ip monitor`.
//!
//! ```text
//!  Watch::open(ns, groups) ── a thread enters ns, opens a NETLINK_ROUTE
//!                             socket, joins RTNLGRP_LINK, *_IFADDR,
//!                             *_ROUTE, NEIGH; the thread exits
//!  kernel ──RTM_NEWLINK/DELROUTE/…──▶ socket receive buffer ──▶ next(timeout)
//!                                     │ full? the kernel drops and the next
//!                                     │ read fails with ENOBUFS
//!                                     └──────────────────────────▶ Event::Resync
//!  list_then_watch / snapshot: drain what is queued, dump, then stream
//! ```
//!
//! Events carry the read models the dumps return ([`Link`], [`Address`],
//! [`RouteEntry`], [`NeighbourEntry`], [`FdbRecord`]). An overflowing
//! receive buffer is never silent: the kernel drops notifications and says
//! so with `ENOBUFS` on the next read; the watch turns that into
//! [`Event::Resync`], after which the caller must list again (what it saw
//! before may be stale in any way). [`Watch::snapshot`] does that listing.
//!
//! Listing without a gap: the socket is subscribed *before* the dump, so a
//! change that happens during the dump is both (possibly) in the dump and
//! queued as an event. Events are not deduplicated against the snapshot:
//! applying an event that repeats what the snapshot already showed must be
//! harmless to the caller (a "new route X" for a route it has, a "deleted
//! neighbour" it never saw). Events queued *before* the dump started are
//! discarded by [`Watch::snapshot`], since the dump already reflects them.
//!
//! The socket is owned by the watch and is separate from any [`Handle`]'s:
//! requests never mix with notifications.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use netlink_packet_core::NetlinkHeader;
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket as RawSocket};

use crate::addr::Address;
use crate::error::{Error, Result};
use crate::fdb::FdbRecord;
use crate::handle::Handle;
use crate::link::Link;
use crate::neigh::NeighbourEntry;
use crate::netlink;
use crate::netns::NetNs;
use crate::route::RouteEntry;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;

/// Receive buffer a watch asks for unless told otherwise (granted in full
/// with CAP_NET_ADMIN through `SO_RCVBUFFORCE`, else up to `rmem_max`).
pub const DEFAULT_RCVBUF: usize = 8 << 20;

/// Which rtnetlink multicast groups a watch joins. Combine with `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Groups(u32);

impl Groups {
    /// `RTNLGRP_LINK`: links added, changed (up/down, MTU, master, …),
    /// deleted.
    pub const LINKS: Groups = Groups(1 << 0);
    /// `RTNLGRP_IPV4_IFADDR` and `RTNLGRP_IPV6_IFADDR`.
    pub const ADDRS: Groups = Groups(1 << 1);
    /// `RTNLGRP_IPV4_ROUTE` and `RTNLGRP_IPV6_ROUTE`.
    pub const ROUTES: Groups = Groups(1 << 2);
    /// `RTNLGRP_NEIGH`: IP neighbours and bridge / VXLAN FDB entries.
    pub const NEIGHBOURS: Groups = Groups(1 << 3);
    /// Everything above.
    pub const ALL: Groups = Groups(0b1111);

    /// Whether every group of `other` is in `self`.
    pub fn contains(self, other: Groups) -> bool {
        self.0 & other.0 == other.0
    }

    /// The kernel's group numbers (`RTNLGRP_*`) to join.
    fn kernel_groups(self) -> Vec<u32> {
        const RTNLGRP_LINK: u32 = 1;
        const RTNLGRP_NEIGH: u32 = 3;
        const RTNLGRP_IPV4_IFADDR: u32 = 5;
        const RTNLGRP_IPV4_ROUTE: u32 = 7;
        const RTNLGRP_IPV6_IFADDR: u32 = 9;
        const RTNLGRP_IPV6_ROUTE: u32 = 11;
        let mut g = Vec::new();
        if self.contains(Groups::LINKS) {
            g.push(RTNLGRP_LINK);
        }
        if self.contains(Groups::ADDRS) {
            g.extend([RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR]);
        }
        if self.contains(Groups::ROUTES) {
            g.extend([RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE]);
        }
        if self.contains(Groups::NEIGHBOURS) {
            g.push(RTNLGRP_NEIGH);
        }
        g
    }
}

impl std::ops::BitOr for Groups {
    type Output = Groups;
    fn bitor(self, o: Groups) -> Groups {
        Groups(self.0 | o.0)
    }
}

/// Whether an object appeared / changed, or went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// `RTM_NEW*`: added, or changed in place (a link set down, a route
    /// replaced, a neighbour's state moved).
    New,
    /// `RTM_DEL*`: deleted.
    Del,
}

/// One change the kernel reported.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A link (`ip monitor link`).
    Link(Change, Link),
    /// An address (`ip monitor address`).
    Addr(Change, Address),
    /// A route (`ip monitor route`), any table.
    Route(Change, RouteEntry),
    /// An IP neighbour (`ip monitor neigh`).
    Neigh(Change, NeighbourEntry),
    /// A bridge or VXLAN forwarding entry (`bridge monitor fdb`).
    Fdb(Change, FdbRecord),
    /// The kernel dropped notifications because the receive buffer was
    /// full (`ENOBUFS`). Whatever the caller knows may now be stale:
    /// list again ([`Watch::snapshot`]) and carry on with the events that
    /// follow.
    Resync,
}

/// Options of a watch: which groups, how large a receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    groups: Groups,
    rcvbuf: usize,
}

impl WatchConfig {
    /// Watch `groups` with the default receive buffer ([`DEFAULT_RCVBUF`]).
    pub fn new(groups: Groups) -> Self {
        WatchConfig {
            groups,
            rcvbuf: DEFAULT_RCVBUF,
        }
    }

    /// Ask for a receive buffer of `bytes` (the kernel doubles it for its
    /// bookkeeping and enforces a minimum of a few KiB). A small one
    /// overflows sooner ([`Event::Resync`]); tests use it to force that.
    pub fn rcvbuf(mut self, bytes: usize) -> Self {
        self.rcvbuf = bytes;
        self
    }
}

/// What exists, listed by [`Watch::snapshot`] / [`list_then_watch`]
/// (only the kinds of the watch's groups; the others stay empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// `ip link show`.
    pub links: Vec<Link>,
    /// `ip addr show`.
    pub addrs: Vec<Address>,
    /// `ip route show table all` (IPv4 and IPv6).
    pub routes: Vec<RouteEntry>,
    /// `ip neigh show`.
    pub neighbours: Vec<NeighbourEntry>,
    /// `bridge fdb show`.
    pub fdb: Vec<FdbRecord>,
}

/// A subscription to the kernel's change notifications in one namespace.
/// See the [module documentation](self).
#[derive(Debug)]
pub struct Watch {
    sock: RawSocket,
    netns: NetNs,
    groups: Groups,
    rcvbuf: usize,
    buf: Vec<u8>,
    pending: VecDeque<Event>,
}

/// Subscribe in `h`'s namespace, then list what exists, then stream:
/// nothing that changes after the listing starts is missed (see the
/// [module documentation](self) on duplicates).
pub fn list_then_watch(h: &Handle, cfg: WatchConfig) -> Result<(Snapshot, Watch)> {
    let mut w = Watch::open(h.netns(), cfg)?;
    let s = w.snapshot(h)?;
    Ok((s, w))
}

impl std::os::fd::AsFd for Watch {
    /// The netlink socket: readable when an event waits, to `poll(2)` it
    /// with other descriptors (then call [`Watch::next`] with
    /// [`Duration::ZERO`] until it returns `None`).
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Watch {
    /// Subscribe to `cfg`'s groups in `ns`. Equivalent to `ip -n NS monitor`.
    /// The socket is opened by a short-lived thread that entered `ns`, or
    /// directly when `ns` is the caller's own namespace (which needs no
    /// privilege, as for `ip monitor`).
    pub fn open(ns: &NetNs, cfg: WatchConfig) -> Result<Watch> {
        let (sock, rcvbuf) = ns.open_within(|| open_socket(cfg))?;
        Ok(Watch {
            sock,
            netns: ns.clone(),
            groups: cfg.groups,
            rcvbuf,
            buf: vec![0; 64 << 10],
            pending: VecDeque::new(),
        })
    }

    /// Subscribe to every group ([`Groups::ALL`]) in `h`'s namespace.
    pub fn all(h: &Handle) -> Result<Watch> {
        Self::open(h.netns(), WatchConfig::new(Groups::ALL))
    }

    /// The namespace watched.
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// The receive buffer the kernel granted (`SO_RCVBUF` as read back).
    pub fn rcvbuf(&self) -> usize {
        self.rcvbuf
    }

    /// The next event, waiting at most `timeout` for one (`Ok(None)`: none
    /// came). [`Duration::ZERO`] only takes what is already queued.
    ///
    /// `Err` for a notification that cannot be decoded (the events around
    /// it are kept: call again) or a failing socket; an overflow is not an
    /// error but [`Event::Resync`].
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Event>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.poll(left)? {
                return Ok(None);
            }
            self.read_one()?;
        }
    }

    /// Every event already queued, without waiting.
    pub fn drain(&mut self) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        while let Some(e) = self.next(Duration::ZERO)? {
            out.push(e);
        }
        Ok(out)
    }

    /// Forget what is queued (read and dropped), then list what exists
    /// with `h` (a handle in the same namespace). Call it first, and again
    /// after every [`Event::Resync`]. Events that follow may repeat what
    /// the snapshot shows (see the [module documentation](self)).
    pub fn snapshot(&mut self, h: &Handle) -> Result<Snapshot> {
        let label = self.netns.label();
        let ctx = || format!("watch {label}: list what exists");
        if h.netns().inode()? != self.netns.inode()? {
            return Err(Error::invalid(
                ctx(),
                format!(
                    "the handle works in namespace {}, not in the watched one",
                    h.netns().label()
                ),
            ));
        }
        // Drop what is queued: the dump that follows reflects it. A Resync
        // among it is answered by this very snapshot.
        self.pending.clear();
        while self.poll(Duration::ZERO)? {
            match self.read_one() {
                Ok(()) => self.pending.clear(),
                Err(Error::Protocol { .. }) => self.pending.clear(),
                Err(e) => return Err(e),
            }
        }
        self.pending.clear();
        let mut s = Snapshot::default();
        if self.groups.contains(Groups::LINKS) {
            s.links = h.links().list()?;
        }
        if self.groups.contains(Groups::ADDRS) {
            s.addrs = h.addrs().list(None)?;
        }
        if self.groups.contains(Groups::ROUTES) {
            s.routes = h.routes().list(&crate::route::RouteFilter::new())?;
        }
        if self.groups.contains(Groups::NEIGHBOURS) {
            s.neighbours = h.neighbours().list(None, None)?;
            let mut req = NeighbourMessage::default();
            req.header.family = AddressFamily::Bridge;
            let msgs = h
                .sock()?
                .dump(RouteNetlinkMessage::GetNeighbour(req), &ctx)?;
            s.fdb = msgs
                .iter()
                .filter_map(|m| match m {
                    RouteNetlinkMessage::NewNeighbour(n) => FdbRecord::from_message(n),
                    _ => None,
                })
                .collect();
        }
        Ok(s)
    }

    /// Wait until the socket is readable (or has an error pending).
    fn poll(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut p = libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // Round a sub-millisecond rest up so we never spin.
            let ms = if ms == 0 && !left.is_zero() { 1 } else { ms };
            // SAFETY: one valid pollfd for the duration of the call.
            let r = unsafe { libc::poll(&mut p, 1, ms) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io(format!("watch {}: poll", self.netns.label()), e));
            }
            return Ok(r > 0);
        }
    }

    /// Read one datagram (the socket is readable) and queue its events.
    fn read_one(&mut self) -> Result<()> {
        let ctx = || format!("watch {}", self.netns.label());
        let want = match netlink::peek_len(&self.sock) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                self.pending.push_back(Event::Resync);
                return Ok(());
            }
            Err(e) => return Err(Error::io(ctx(), e)),
        };
        if want > self.buf.len() {
            self.buf.resize(want.next_power_of_two(), 0);
        }
        let n = match netlink::recv_into(&self.sock, &mut self.buf, libc::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                self.pending.push_back(Event::Resync);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(Error::io(ctx(), e)),
        };
        let buf = std::mem::take(&mut self.buf);
        let mut failed = None;
        let r = netlink::for_each_message::<()>(&buf[..n.min(buf.len())], |hdr, body| {
            match event_of(hdr, body) {
                Ok(Some(e)) => self.pending.push_back(e),
                Ok(None) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
            Ok(None)
        });
        self.buf = buf;
        r?;
        match failed {
            Some(e) => Err(e.with_context(ctx())),
            None => Ok(()),
        }
    }
}

impl AsRawFd for Watch {
    /// The socket, for callers that poll several sources: readable means
    /// [`Watch::next`] has something (an event or a [`Event::Resync`]).
    /// Events already decoded and queued do not make it readable: call
    /// `next(Duration::ZERO)` until `None` after each wake-up.
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// Open, subscribe and size a notification socket in the calling thread's
/// namespace. Returns the socket and the receive buffer granted.
fn open_socket(cfg: WatchConfig) -> Result<(RawSocket, usize)> {
    let ctx = "open rtnetlink watch socket";
    let mut sock = RawSocket::new(NETLINK_ROUTE).map_err(|e| Error::io(ctx, e))?;
    sock.bind_auto().map_err(|e| Error::io(ctx, e))?;
    let rcvbuf = netlink::set_rcvbuf(&sock, cfg.rcvbuf);
    for g in cfg.groups.kernel_groups() {
        sock.add_membership(g)
            .map_err(|e| Error::io(format!("{ctx}: join group {g}"), e))?;
    }
    Ok((sock, rcvbuf))
}

/// The event a notification carries; `None` for messages of other kinds
/// (or families the read models do not describe, e.g. multicast routes).
fn event_of(hdr: &NetlinkHeader, body: &[u8]) -> Result<Option<Event>> {
    let change = match hdr.message_type {
        RTM_NEWLINK | RTM_NEWADDR | RTM_NEWROUTE | RTM_NEWNEIGH => Change::New,
        RTM_DELLINK | RTM_DELADDR | RTM_DELROUTE | RTM_DELNEIGH => Change::Del,
        _ => return Ok(None),
    };
    if matches!(hdr.message_type, RTM_NEWROUTE | RTM_DELROUTE) {
        // The fast decoder reads the header and the attributes in place.
        return Ok(RouteEntry::from_bytes(body).map(|r| Event::Route(change, r)));
    }
    let ctx = || "decode notification".to_string();
    Ok(match netlink::decode(hdr, body, &ctx)? {
        RouteNetlinkMessage::NewLink(m) | RouteNetlinkMessage::DelLink(m) => {
            Some(Event::Link(change, Link::from_message(&m)))
        }
        RouteNetlinkMessage::NewAddress(m) | RouteNetlinkMessage::DelAddress(m) => {
            Address::from_message(&m).map(|a| Event::Addr(change, a))
        }
        RouteNetlinkMessage::NewNeighbour(m) | RouteNetlinkMessage::DelNeighbour(m) => {
            if m.header.family == AddressFamily::Bridge {
                FdbRecord::from_message(&m).map(|f| Event::Fdb(change, f))
            } else {
                NeighbourEntry::from_message(&m).map(|n| Event::Neigh(change, n))
            }
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_map_to_the_kernels_numbers() {
        assert_eq!(Groups::LINKS.kernel_groups(), vec![1]);
        assert_eq!(
            (Groups::ROUTES | Groups::NEIGHBOURS).kernel_groups(),
            vec![7, 11, 3]
        );
        assert_eq!(Groups::ALL.kernel_groups().len(), 6);
        assert!(Groups::ALL.contains(Groups::ADDRS));
        assert!(!Groups::LINKS.contains(Groups::ALL));
    }
}
