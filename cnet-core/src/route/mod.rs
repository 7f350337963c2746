//! Routes: `ip route`.
//!
//! ```text
//!  Route (builder) ──message(resolve)──▶ RTM_NEWROUTE / RTM_DELROUTE
//!  RouteFilter ──────────────────────▶ RTM_GETROUTE dump, filtered by the kernel
//!  RouteQuery ───────────────────────▶ RTM_GETROUTE request (`ip route get`)
//!  reconcile(owner, desired) = one filtered dump + one pipelined batch
//! ```
//!
//! Routes the library writes carry [`PROTOCOL`] unless the caller sets
//! another number, so a reconcile owns exactly its own routes (protocol +
//! table, optionally device) and never touches anyone else's.
//!
//! Split by concern like `link/`: `spec.rs` holds the builders ([`Route`],
//! [`NextHop`], [`RouteFilter`], [`RouteQuery`], [`RouteOp`],
//! [`RouteOwner`]), `model.rs` the read models and their decoding
//! ([`RouteEntry`], [`RouteLookup`]), this file the vocabulary and the
//! operations ([`Routes`]: add, list, lookup, batch, reconcile).

use std::borrow::Borrow;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::addr::Scope;
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::link::LinkRef;
use crate::reconcile::NameCache;
/// Moved to [`crate::reconcile`]; kept here so existing paths compile.
pub use crate::reconcile::ReconcileReport;
use rustc_hash::FxHashSet;

mod model;
mod spec;

use model::RTM_NEWROUTE;
pub use model::{NextHopEntry, RouteEntry, RouteLookup};
pub use spec::{NextHop, Route, RouteFilter, RouteOp, RouteOwner, RouteQuery};

/// The route protocol number cnet stamps on its routes (`ip route … proto
/// 119`). Not listed in iproute2's `/etc/iproute2/rt_protos` nor used by
/// FRR (186–198), BIRD (12), Calico (80) or OpenR (99). To see it named in
/// `ip route`, add `119 cnet` to `/etc/iproute2/rt_protos.d/cnet.conf`.
/// Override per route with [`Route::protocol`] and per owner with
/// [`RouteOwner::new`].
pub const PROTOCOL: u8 = 119;

/// `RTPROT_KERNEL`: routes the kernel made (connected prefixes).
pub const PROTOCOL_KERNEL: u8 = 2;
/// `RTPROT_BOOT`: `ip route add` without `proto`.
pub const PROTOCOL_BOOT: u8 = 3;
/// `RTPROT_STATIC`: `ip route add … proto static`.
pub const PROTOCOL_STATIC: u8 = 4;

/// The main routing table (`table main`).
pub const TABLE_MAIN: u32 = 254;
/// The local routing table (`table local`).
pub const TABLE_LOCAL: u32 = 255;

const RT_TABLE_COMPAT: u8 = 252;

/// An address family, for filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (`ip -4`).
    V4,
    /// IPv6 (`ip -6`).
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
    pub(crate) fn to_nl(self) -> AddressFamily {
        match self {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        }
    }
}

/// Route type (`ip route add TYPE PREFIX`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteType {
    /// `unicast` (the default).
    Unicast,
    /// `local`
    Local,
    /// `broadcast`
    Broadcast,
    /// `anycast`
    Anycast,
    /// `multicast`
    Multicast,
    /// `blackhole`: drop silently.
    Blackhole,
    /// `unreachable`: drop with ICMP host unreachable.
    Unreachable,
    /// `prohibit`: drop with ICMP administratively prohibited.
    Prohibit,
    /// `throw`: continue the lookup in the next rule's table.
    Throw,
    /// Another numeric value (`RTN_*`).
    Other(u8),
}

impl RouteType {
    /// The kernel's number (`RTN_*`).
    pub fn to_u8(self) -> u8 {
        match self {
            RouteType::Unicast => 1,
            RouteType::Local => 2,
            RouteType::Broadcast => 3,
            RouteType::Anycast => 4,
            RouteType::Multicast => 5,
            RouteType::Blackhole => 6,
            RouteType::Unreachable => 7,
            RouteType::Prohibit => 8,
            RouteType::Throw => 9,
            RouteType::Other(v) => v,
        }
    }
    /// From the kernel's number (`RTN_*`).
    pub fn from_u8(v: u8) -> RouteType {
        match v {
            1 => RouteType::Unicast,
            2 => RouteType::Local,
            3 => RouteType::Broadcast,
            4 => RouteType::Anycast,
            5 => RouteType::Multicast,
            6 => RouteType::Blackhole,
            7 => RouteType::Unreachable,
            8 => RouteType::Prohibit,
            9 => RouteType::Throw,
            v => RouteType::Other(v),
        }
    }
    /// As `ip` prints it.
    pub fn as_str(&self) -> &'static str {
        match self {
            RouteType::Unicast => "unicast",
            RouteType::Local => "local",
            RouteType::Broadcast => "broadcast",
            RouteType::Anycast => "anycast",
            RouteType::Multicast => "multicast",
            RouteType::Blackhole => "blackhole",
            RouteType::Unreachable => "unreachable",
            RouteType::Prohibit => "prohibit",
            RouteType::Throw => "throw",
            RouteType::Other(_) => "other",
        }
    }
    /// Types that forward packets (and so take gateways and devices).
    fn forwards(&self) -> bool {
        matches!(
            self,
            RouteType::Unicast
                | RouteType::Local
                | RouteType::Broadcast
                | RouteType::Anycast
                | RouteType::Multicast
        )
    }
}

/// Route operations in one namespace. Obtain with [`Handle::routes`].
#[derive(Debug)]
pub struct Routes<'a> {
    h: &'a Handle,
}

impl<'a> Routes<'a> {
    pub(crate) fn new(h: &'a Handle) -> Self {
        Self { h }
    }

    /// Build the `RTM_NEWROUTE` message for `route` as [`Routes::add`]
    /// would send it, resolving device names in this namespace.
    pub fn message_for(&self, route: &Route) -> Result<RouteMessage> {
        route.validate()?;
        let names = NameCache::new(self.h);
        route.message(&|r| names.resolve(r))
    }

    fn send(&self, route: &Route, verb: &str, del: bool, flags: u16) -> Result<()> {
        let ns = self.h.netns().label();
        let ctx = || format!("{verb} route {route} in {ns}");
        let built = if del {
            route.validate_key().and_then(|()| {
                let names = NameCache::new(self.h);
                route.message(&|r| names.resolve(r))
            })
        } else {
            self.message_for(route)
        };
        let mut msg = built.map_err(|e| e.with_context(ctx()))?;
        let msg = if del {
            msg.header.scope = Scope::Nowhere.to_u8().into();
            RouteNetlinkMessage::DelRoute(msg)
        } else {
            RouteNetlinkMessage::NewRoute(msg)
        };
        self.h.sock()?.ack(msg, flags, &ctx)
    }

    /// `ip route add ROUTE`. `AlreadyExists` if a route with the same
    /// prefix and metric is in the table.
    pub fn add(&self, route: impl Borrow<Route>) -> Result<()> {
        self.send(route.borrow(), "add", false, NLM_F_CREATE | NLM_F_EXCL)
    }

    /// `ip route replace ROUTE`: create or overwrite.
    pub fn replace(&self, route: impl Borrow<Route>) -> Result<()> {
        self.send(
            route.borrow(),
            "replace",
            false,
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// `ip route del ROUTE`. `NotFound` if absent. Gateway, device and
    /// protocol, when given, must match too.
    pub fn delete(&self, route: impl Borrow<Route>) -> Result<()> {
        self.send(route.borrow(), "delete", true, 0)
    }

    /// Delete if present; returns whether it was.
    pub fn delete_if_exists(&self, route: impl Borrow<Route>) -> Result<bool> {
        match self.delete(route) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `ip route show …` (see [`RouteFilter`]): one dump filtered by the
    /// kernel. A table that does not exist yet lists as empty.
    pub fn list(&self, filter: &RouteFilter) -> Result<Vec<RouteEntry>> {
        let names = NameCache::new(self.h);
        self.list_with(filter, &names)
    }

    fn list_with(&self, filter: &RouteFilter, names: &NameCache<'_>) -> Result<Vec<RouteEntry>> {
        let mut out = Vec::new();
        self.list_each(filter, names, &mut |e| {
            match e {
                None => out.clear(),
                Some(e) => out.push(e),
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The routes `filter` selects, each handed to `f` as it is decoded
    /// (straight from the dump's payload: no per-route attribute vectors,
    /// no list). `f(None)`: the dump restarted, forget what was seen. `f`
    /// runs while the socket is held, so it must not use the handle.
    fn list_each(
        &self,
        filter: &RouteFilter,
        names: &NameCache<'_>,
        f: &mut dyn FnMut(Option<RouteEntry>) -> Result<()>,
    ) -> Result<()> {
        let ns = self.h.netns().label();
        let ctx = || format!("list routes in {ns}");
        let req = filter
            .message(&|r| names.resolve(r))
            .map_err(|e| e.with_context(ctx()))?;
        let oif = req.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        let r =
            self.h
                .sock()?
                .dump_each(RouteNetlinkMessage::GetRoute(req), &ctx, &mut |m| match m {
                    None => f(None),
                    Some((hdr, body)) if hdr.message_type == RTM_NEWROUTE => {
                        match RouteEntry::from_bytes(body) {
                            Some(e) if filter.matches(&e, oif) => f(Some(e)),
                            _ => Ok(()),
                        }
                    }
                    Some(_) => Ok(()),
                });
        match r {
            Ok(()) => Ok(()),
            // "ipv4: FIB table does not exist": nothing in it yet.
            Err(e) if e.is_not_found() && filter.table.is_some() => f(None),
            Err(e) => Err(e),
        }
    }

    /// `ip route get DST`: the kernel's decision for `dst`.
    pub fn get(&self, dst: IpAddr) -> Result<RouteLookup> {
        self.lookup(&RouteQuery::new(dst))
    }

    /// `ip route get DST [from SRC] [iif DEV] [oif DEV] [mark M]
    /// [fibmatch]`. With `fibmatch` the matching FIB entry is returned in
    /// [`RouteLookup::matched`] too. A destination covered by a blackhole,
    /// unreachable or prohibit route fails with the kernel's errno (EINVAL,
    /// EHOSTUNREACH, EACCES), as `ip route get` does.
    pub fn lookup(&self, q: &RouteQuery) -> Result<RouteLookup> {
        self.lookup_with(q, true)
    }

    /// `ip route get DST` for callers that need only the output device's
    /// index ([`RouteLookup::oif`]): one request, without the second that
    /// names the device (a node places thousands of peers this way).
    pub(crate) fn get_oif(&self, dst: IpAddr) -> Result<RouteLookup> {
        self.lookup_with(&RouteQuery::new(dst), false)
    }

    fn lookup_with(&self, q: &RouteQuery, name_dev: bool) -> Result<RouteLookup> {
        let ns = self.h.netns().label();
        let ctx = || format!("route get {} in {ns}", q.dst);
        let names = NameCache::new(self.h);
        let resolve = |r: &LinkRef| names.resolve(r);
        let ask = |fib: bool| -> Result<RouteMessage> {
            let m = q
                .message(&resolve, fib)
                .map_err(|e| e.with_context(ctx()))?;
            let replies = self
                .h
                .sock()?
                .request(RouteNetlinkMessage::GetRoute(m), 0, &ctx)?;
            replies
                .into_iter()
                .find_map(|m| match m {
                    RouteNetlinkMessage::NewRoute(r) => Some(r),
                    _ => None,
                })
                .ok_or_else(|| Error::Protocol {
                    context: ctx(),
                    reason: "no route in the kernel's answer".into(),
                })
        };
        let mut out = RouteLookup::from_message(q.dst, &ask(false)?);
        if q.fibmatch {
            out.matched = RouteEntry::from_message(&ask(true)?);
        }
        if let Some(i) = out.oif.filter(|_| name_dev) {
            out.dev = self.h.links().get_by_index(i).ok().map(|l| l.name);
        }
        Ok(out)
    }

    /// Apply many operations pipelined on the socket (written before the
    /// ACKs are read, matched back by sequence number). Returns one result
    /// per operation, in order; a failing item does not stop the others.
    /// Equivalent to `ip -batch FILE` with `-force`.
    #[must_use = "each operation has its own result; a failed one is only reported there"]
    pub fn apply_batch(&self, ops: &[RouteOp]) -> Vec<Result<()>> {
        let names = NameCache::new(self.h);
        self.batch_with(ops, &names, false)
    }

    /// `validated`: the adds and replaces in `ops` passed
    /// [`Route::validate`] already (a reconcile's desired routes).
    fn batch_with(
        &self,
        ops: &[RouteOp],
        names: &NameCache<'_>,
        validated: bool,
    ) -> Vec<Result<()>> {
        let ns = self.h.netns().label();
        // Pass 1, before the socket is taken: validate each operation and
        // resolve its device names (which may ask the kernel). Failures are
        // few; they are kept by index, not as one result per item.
        let mut failed: Vec<(usize, Error)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let route = op.route();
            let valid = match op {
                RouteOp::Delete(_) => route.validate_key(),
                _ if validated => Ok(()),
                _ => route.validate(),
            };
            if let Err(e) = valid.and_then(|()| route.resolve_devs(&|r| names.resolve(r))) {
                failed.push((
                    i,
                    e.with_context(format!("{} route {route} in {ns}", op.verb())),
                ));
            }
        }
        let mut sock = match self.h.sock() {
            Ok(s) => s,
            Err(e) => {
                let text = e.to_string();
                let mut failed = failed.into_iter().peekable();
                return (0..ops.len())
                    .map(|i| match failed.next_if(|(j, _)| *j == i) {
                        Some((_, e)) => Err(e),
                        None => Err(Error::Protocol {
                            context: format!("route batch in {ns}"),
                            reason: text.clone(),
                        }),
                    })
                    .collect();
            }
        };
        // Pass 2: each message built in one reused `RouteMessage` and
        // serialised straight into the socket's send buffer.
        let mut failed = failed.into_iter().peekable();
        let mut scratch = RouteMessage::default();
        sock.batch_encoded(
            ops.len(),
            &mut |i, enc| {
                if let Some((_, e)) = failed.next_if(|(j, _)| *j == i) {
                    return Err(e);
                }
                let op = &ops[i];
                op.route()
                    .fill_message(&mut scratch, &|r| names.cached(r))
                    .map_err(|e| {
                        e.with_context(format!("{} route {} in {ns}", op.verb(), op.route()))
                    })?;
                let m = std::mem::take(&mut scratch);
                let (msg, flags) = match op {
                    RouteOp::Add(_) => {
                        (RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
                    }
                    RouteOp::Replace(_) => (
                        RouteNetlinkMessage::NewRoute(m),
                        NLM_F_CREATE | NLM_F_REPLACE,
                    ),
                    RouteOp::Delete(_) => {
                        let mut m = m;
                        m.header.scope = Scope::Nowhere.to_u8().into();
                        (RouteNetlinkMessage::DelRoute(m), 0)
                    }
                };
                enc.emit(&msg, flags);
                if let RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m) = msg {
                    scratch = m;
                }
                Ok(())
            },
            &|i| {
                let op = &ops[i];
                format!("{} route {} in {ns}", op.verb(), op.route())
            },
        )
    }

    /// Make the routes of `owner` exactly `desired`: one filtered dump, then
    /// one pipelined batch that deletes stale routes, replaces changed ones
    /// and adds missing ones. A set that is already right writes nothing.
    /// Routes of other protocols, tables (or devices, when the owner names
    /// one) are never touched. The owner's protocol and table are applied
    /// to every desired route. Routes are identified by prefix and metric.
    /// Items that fail (a desired route the kernel refuses, an unknown
    /// device) land in [`ReconcileReport::errors`] while the rest is
    /// applied: call [`ReconcileReport::into_result`] to treat them as an
    /// error.
    pub fn reconcile(&self, owner: &RouteOwner, desired: &[Route]) -> Result<ReconcileReport> {
        let ns = self.h.netns().label();
        let names = NameCache::new(self.h);
        let mut report = ReconcileReport::new(format!(
            "reconcile routes proto {} table {} in {ns}",
            owner.protocol, owner.table
        ));
        if owner.table == 0 {
            return Err(Error::invalid(
                format!("reconcile routes in {ns}"),
                "table 0 is not a routing table (RT_TABLE_UNSPEC)",
            ));
        }
        // The owner's protocol and table, applied to a desired route.
        let owned = |r: &Route| {
            let mut r = r.clone();
            r.protocol = owner.protocol;
            r.table = owner.table;
            r
        };
        // Desired routes as ((prefix, metric), index), sorted by key: the
        // kernel dumps a table in key order, so matching it is mostly a
        // walk with a cursor (a binary search where the orders differ), not
        // a random probe per route. What the kernel should list for a route
        // is computed only when the dump shows one with its key.
        let mut want: Vec<((IpNet, u32), u32)> = Vec::with_capacity(desired.len());
        // Keys of desired routes we could not understand: their current
        // routes are left alone rather than deleted as stale.
        let mut keep = FxHashSet::default();
        for (i, r) in desired.iter().enumerate() {
            let key = (r.dst, r.effective_metric());
            // Device names are resolved now: the dump below holds the socket.
            match r
                .validate()
                .and_then(|()| r.resolve_devs(&|x| names.resolve(x)))
            {
                Ok(()) => want.push((key, i as u32)),
                Err(e) => {
                    keep.insert(key);
                    report.fail(
                        Some(i),
                        e.with_context(format!("reconcile route {r} in {ns}")),
                    );
                }
            }
        }
        want.sort_unstable();
        // Two desired routes with one key: the later one is meant.
        want.dedup_by(|later, earlier| {
            if later.0 != earlier.0 {
                return false;
            }
            // About the earlier one, which is dropped.
            report.fail(
                Some(earlier.1 as usize),
                Error::invalid(
                    format!("reconcile routes in {ns}"),
                    format!(
                        "two desired routes for {} metric {}",
                        later.0 .0, later.0 .1
                    ),
                ),
            );
            earlier.1 = later.1;
            true
        });
        let mut cursor = 0usize;
        let mut find = |key: &(IpNet, u32)| -> Option<u32> {
            let p = match want.get(cursor) {
                Some((k, _)) if k == key => cursor,
                _ => want.binary_search_by(|(k, _)| k.cmp(key)).ok()?,
            };
            cursor = p + 1;
            Some(want[p].1)
        };
        let mut filter = RouteFilter::new()
            .protocol(owner.protocol)
            .table(owner.table);
        filter.dev = owner.dev.clone();
        // Compared as the dump is decoded: no list of current routes.
        let mut seen = vec![false; desired.len()];
        let mut unchanged = 0;
        let mut replace: Vec<u32> = Vec::new();
        let mut stale: Vec<Route> = Vec::new();
        self.list_each(&filter, &names, &mut |e| {
            let Some(e) = e else {
                // The dump restarted.
                seen.iter_mut().for_each(|s| *s = false);
                unchanged = 0;
                replace.clear();
                stale.clear();
                return Ok(());
            };
            let key = (e.dst, e.metric);
            match find(&key) {
                Some(i) => {
                    seen[i as usize] = true;
                    let r = &desired[i as usize];
                    let mut exp = r.expected(&|x| names.cached(x))?;
                    exp.protocol = owner.protocol;
                    exp.table = owner.table;
                    if e.same_as(&exp) {
                        unchanged += 1;
                    } else {
                        replace.push(i);
                    }
                }
                None if keep.contains(&key) => {}
                None => {
                    let mut r = Route::to(e.dst)
                        .protocol(e.protocol)
                        .table(e.table)
                        .metric(e.metric)
                        .kind(e.kind);
                    if e.kind.forwards() {
                        if let Some(i) = e.oif {
                            r = r.dev(i);
                        }
                    }
                    r.gateway = e.gateway;
                    r.onlink = e.onlink;
                    // Metric 0 is what IPv4 lists when none was given.
                    if e.metric == 0 {
                        r.metric = None;
                    }
                    // Multipath: prefix, metric, protocol and table identify it.
                    stale.push(r);
                }
            }
            Ok(())
        })?;
        report.unchanged = unchanged;
        // Deletes first, so a moved route never collides with its old self;
        // then replacements; then the missing ones, in the order asked for.
        // `items[k]`: the desired index of `ops[k]` (none for a delete).
        let mut items: Vec<Option<usize>> = vec![None; stale.len()];
        let mut ops: Vec<RouteOp> = stale.into_iter().map(RouteOp::Delete).collect();
        items.extend(replace.iter().map(|&i| Some(i as usize)));
        ops.extend(
            replace
                .into_iter()
                .map(|i| RouteOp::Replace(owned(&desired[i as usize]))),
        );
        let mut missing: Vec<u32> = want
            .iter()
            .map(|&(_, i)| i)
            .filter(|&i| !seen[i as usize])
            .collect();
        missing.sort_unstable();
        items.extend(missing.iter().map(|&i| Some(i as usize)));
        ops.extend(
            missing
                .into_iter()
                .map(|i| RouteOp::Add(owned(&desired[i as usize]))),
        );
        if ops.is_empty() {
            return Ok(report);
        }
        let results = self.batch_with(&ops, &names, true);
        for ((op, item), r) in ops.iter().zip(items).zip(results) {
            match (op, r) {
                (_, Err(e)) => report.fail(item, e),
                (RouteOp::Add(_), Ok(())) => report.added += 1,
                (RouteOp::Replace(_), Ok(())) => report.replaced += 1,
                (RouteOp::Delete(_), Ok(())) => report.deleted += 1,
            }
        }
        Ok(report)
    }
}
