//! Route builders: what to program ([`Route`], [`NextHop`]), to list
//! ([`RouteFilter`]), to look up ([`RouteQuery`]), to batch ([`RouteOp`])
//! and to own ([`RouteOwner`]); each builds its netlink message apart from
//! sending it.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::route::{
    RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric, RouteNextHop,
    RouteNextHopFlags,
};

use super::model::{NextHopEntry, RouteEntry};
use super::{Family, RouteType, PROTOCOL, RT_TABLE_COMPAT, TABLE_MAIN};
use crate::addr::Scope;
use crate::error::{Error, Result};
use crate::link::{validate_mtu, validate_name, LinkRef, Resolver};

/// One next hop of a multipath (ECMP) route: `nexthop via GW dev DEV
/// weight W [onlink]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub(super) gateway: Option<IpAddr>,
    pub(super) dev: Option<LinkRef>,
    pub(super) weight: u16,
    pub(super) onlink: bool,
}

impl Default for NextHop {
    fn default() -> Self {
        Self::new()
    }
}

impl NextHop {
    /// An empty next hop (weight 1); set a gateway and/or a device.
    pub fn new() -> Self {
        NextHop {
            gateway: None,
            dev: None,
            weight: 1,
            onlink: false,
        }
    }
    /// `via GW`.
    pub fn via(mut self, gw: IpAddr) -> Self {
        self.gateway = Some(gw);
        self
    }
    /// `dev DEV`.
    pub fn dev(mut self, dev: impl Into<LinkRef>) -> Self {
        self.dev = Some(dev.into());
        self
    }
    /// `weight W` (1–256).
    pub fn weight(mut self, w: u16) -> Self {
        self.weight = w;
        self
    }
    /// `onlink`: the gateway is reachable on the device without a
    /// connected route.
    pub fn onlink(mut self) -> Self {
        self.onlink = true;
        self
    }
}

/// A route to program: equivalent to `ip route add|replace|del [TYPE] PREFIX
/// [via GW] [dev DEV] [onlink] [src SRC] [metric M] [table T] [scope S]
/// [proto P] [mtu MTU] [nexthop via GW dev DEV weight W …] [nhid ID]`.
///
/// The protocol defaults to [`PROTOCOL`], the table to main, the type to
/// unicast, and the scope as `ip` chooses it (link for a unicast route
/// without gateway, host for local routes, global otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub(super) dst: IpNet,
    pub(super) gateway: Option<IpAddr>,
    pub(super) dev: Option<LinkRef>,
    pub(super) onlink: bool,
    pub(super) prefsrc: Option<IpAddr>,
    pub(super) metric: Option<u32>,
    pub(super) table: u32,
    pub(super) scope: Option<Scope>,
    pub(super) kind: RouteType,
    pub(super) protocol: u8,
    pub(super) mtu: Option<u32>,
    pub(super) nexthops: Vec<NextHop>,
    pub(super) nhid: Option<u32>,
}

impl Route {
    /// A unicast route to `dst` (`ip route add DST`).
    pub fn to(dst: IpNet) -> Self {
        Route {
            dst,
            gateway: None,
            dev: None,
            onlink: false,
            prefsrc: None,
            metric: None,
            table: TABLE_MAIN,
            scope: None,
            kind: RouteType::Unicast,
            protocol: PROTOCOL,
            mtu: None,
            nexthops: Vec::new(),
            nhid: None,
        }
    }
    /// The IPv4 default route (`ip route add default`, 0.0.0.0/0).
    pub fn default_v4() -> Self {
        Self::to(IpNet::V4(ipnet::Ipv4Net::default()))
    }
    /// The IPv6 default route (`ip -6 route add default`, ::/0).
    pub fn default_v6() -> Self {
        Self::to(IpNet::V6(ipnet::Ipv6Net::default()))
    }
    /// `via GW`.
    pub fn via(mut self, gw: IpAddr) -> Self {
        self.gateway = Some(gw);
        self
    }
    /// `dev DEV` (a name, resolved in the handle's namespace, or an index).
    pub fn dev(mut self, dev: impl Into<LinkRef>) -> Self {
        self.dev = Some(dev.into());
        self
    }
    /// `onlink`: use the gateway even without a connected route to it.
    pub fn onlink(mut self) -> Self {
        self.onlink = true;
        self
    }
    /// `src ADDR`: preferred source address.
    pub fn src(mut self, src: IpAddr) -> Self {
        self.prefsrc = Some(src);
        self
    }
    /// `metric M` (IPv6 routes without one get 1024 from the kernel).
    pub fn metric(mut self, m: u32) -> Self {
        self.metric = Some(m);
        self
    }
    /// `table T` (not 0).
    pub fn table(mut self, t: u32) -> Self {
        self.table = t;
        self
    }
    /// `scope S`.
    pub fn scope(mut self, s: Scope) -> Self {
        self.scope = Some(s);
        self
    }
    /// The route type (`unicast`, `blackhole`, …).
    pub fn kind(mut self, k: RouteType) -> Self {
        self.kind = k;
        self
    }
    /// `ip route add blackhole PREFIX`.
    pub fn blackhole(self) -> Self {
        self.kind(RouteType::Blackhole)
    }
    /// `ip route add unreachable PREFIX`.
    pub fn unreachable(self) -> Self {
        self.kind(RouteType::Unreachable)
    }
    /// `ip route add prohibit PREFIX`.
    pub fn prohibit(self) -> Self {
        self.kind(RouteType::Prohibit)
    }
    /// `proto P` (default [`PROTOCOL`]).
    pub fn protocol(mut self, p: u8) -> Self {
        self.protocol = p;
        self
    }
    /// `mtu MTU` (route metric).
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }
    /// Add an ECMP next hop (`nexthop via GW dev DEV weight W`).
    pub fn nexthop(mut self, nh: NextHop) -> Self {
        self.nexthops.push(nh);
        self
    }

    /// `nhid ID`: forward through nexthop object `ID` (see
    /// [`crate::nexthop`]) instead of a gateway, device or next hops of
    /// its own; replacing that nexthop moves this route with it.
    /// Equivalent to `ip route add PREFIX nhid ID`.
    pub fn nexthop_id(mut self, id: u32) -> Self {
        self.nhid = Some(id);
        self
    }

    /// The destination prefix.
    pub fn destination(&self) -> IpNet {
        self.dst
    }
    /// The table.
    pub fn table_id(&self) -> u32 {
        self.table
    }
    /// The protocol number.
    pub fn protocol_id(&self) -> u8 {
        self.protocol
    }
    /// The metric as the kernel will report it (0 for IPv4, 1024 for IPv6
    /// when unset).
    pub fn effective_metric(&self) -> u32 {
        self.metric.unwrap_or(match self.dst {
            IpNet::V4(_) => 0,
            IpNet::V6(_) => 1024,
        })
    }
    pub(super) fn family(&self) -> Family {
        Family::of(&self.dst.addr())
    }
    pub(super) fn effective_scope(&self) -> Scope {
        if let Some(s) = self.scope {
            return s;
        }
        match self.kind {
            RouteType::Local => Scope::Host,
            // `ip` leaves a route through a nexthop object at scope global.
            RouteType::Unicast
                if self.gateway.is_none() && self.nexthops.is_empty() && self.nhid.is_none() =>
            {
                Scope::Link
            }
            RouteType::Broadcast | RouteType::Anycast => Scope::Link,
            _ => Scope::Global,
        }
    }

    /// Check what identifies a route (prefix, table, families): enough
    /// for a delete, which may leave out gateway and device.
    pub fn validate_key(&self) -> Result<()> {
        let ctx = || format!("route {self}");
        let bad = |reason: String| Err(Error::invalid(ctx(), reason));
        if self.dst.addr() != self.dst.network() {
            return bad(format!(
                "prefix {} has host bits set (did you mean {}?)",
                self.dst,
                self.dst.trunc()
            ));
        }
        if self.table == 0 {
            return bad("table 0 is not a routing table (RT_TABLE_UNSPEC)".into());
        }
        let fam = self.family();
        for (what, ip) in [("gateway", self.gateway), ("source", self.prefsrc)] {
            if let Some(ip) = ip {
                if Family::of(&ip) != fam {
                    return bad(format!(
                        "{what} {ip} is of another address family than {}",
                        self.dst
                    ));
                }
            }
        }
        if let Some(LinkRef::Name(n)) = &self.dev {
            validate_name(n).map_err(|e| e.with_context(ctx()))?;
        }
        for nh in &self.nexthops {
            if let Some(gw) = nh.gateway {
                if Family::of(&gw) != fam {
                    return bad(format!(
                        "next-hop gateway {gw} is of another address family than {}",
                        self.dst
                    ));
                }
            }
        }
        Ok(())
    }

    /// Check every parameter; nothing is sent when this fails.
    pub fn validate(&self) -> Result<()> {
        self.validate_key()?;
        let ctx = || format!("route {self}");
        let bad = |reason: String| Err(Error::invalid(ctx(), reason));
        if let Some(m) = self.mtu {
            validate_mtu("route", m).map_err(|e| e.with_context(ctx()))?;
        }
        if let Some(id) = self.nhid {
            if id == 0 {
                return bad("nhid 0 is not a nexthop id".into());
            }
            if self.kind != RouteType::Unicast {
                return bad(format!(
                    "a {} route cannot use a nexthop object (use a blackhole nexthop)",
                    self.kind.as_str()
                ));
            }
            if self.gateway.is_some()
                || self.dev.is_some()
                || self.onlink
                || !self.nexthops.is_empty()
            {
                return bad(
                    "a route through a nexthop object (nhid) takes no via, dev, onlink or \
                     next hops of its own: they are the nexthop's"
                        .into(),
                );
            }
            return Ok(());
        }
        if !self.kind.forwards() {
            if self.gateway.is_some() || self.dev.is_some() || !self.nexthops.is_empty() {
                return bad(format!(
                    "a {} route takes no gateway, device or next hops",
                    self.kind.as_str()
                ));
            }
            return Ok(());
        }
        if !self.nexthops.is_empty() {
            if self.gateway.is_some() || self.dev.is_some() || self.onlink {
                return bad(
                    "give either via/dev/onlink or next hops, not both (put them in a NextHop)"
                        .into(),
                );
            }
            for nh in &self.nexthops {
                if nh.gateway.is_none() && nh.dev.is_none() {
                    return bad("a next hop needs a gateway or a device".into());
                }
                if !(1..=256).contains(&nh.weight) {
                    return bad(format!("next-hop weight {} is not in 1..=256", nh.weight));
                }
                if nh.onlink && nh.dev.is_none() {
                    return bad("onlink next hop needs a device".into());
                }
                if let Some(LinkRef::Name(n)) = &nh.dev {
                    validate_name(n).map_err(|e| e.with_context(ctx()))?;
                }
            }
            return Ok(());
        }
        if self.gateway.is_none() && self.dev.is_none() {
            return bad("a unicast route needs a gateway, a device or next hops".into());
        }
        if self.onlink && self.dev.is_none() {
            return bad("onlink needs a device".into());
        }
        Ok(())
    }

    pub(super) fn header(&self) -> RouteHeader {
        RouteHeader {
            address_family: self.family().to_nl(),
            destination_prefix_length: self.dst.prefix_len(),
            table: if self.table < 256 {
                self.table as u8
            } else {
                RT_TABLE_COMPAT
            },
            protocol: self.protocol.into(),
            scope: self.effective_scope().to_u8().into(),
            kind: self.kind.to_u8().into(),
            flags: if self.onlink {
                RouteFlags::Onlink
            } else {
                RouteFlags::empty()
            },
            ..Default::default()
        }
    }

    /// The `RTM_NEWROUTE` payload (also what `RTM_DELROUTE` carries),
    /// resolving device names with `resolve`. Call [`Route::validate`] first.
    pub fn message(&self, resolve: Resolver<'_>) -> Result<RouteMessage> {
        let mut m = RouteMessage::default();
        self.fill_message(&mut m, resolve)?;
        Ok(m)
    }

    /// [`Route::message`] into `m`, reusing its attribute vector (batches
    /// build thousands of messages through one).
    pub(super) fn fill_message(&self, m: &mut RouteMessage, resolve: Resolver<'_>) -> Result<()> {
        m.header = self.header();
        let a = &mut m.attributes;
        a.clear();
        if self.table >= 256 {
            a.push(RouteAttribute::Table(self.table));
        }
        if self.dst.prefix_len() > 0 {
            a.push(RouteAttribute::Destination(self.dst.addr().into()));
        }
        if let Some(gw) = self.gateway {
            a.push(RouteAttribute::Gateway(gw.into()));
        }
        if let Some(d) = &self.dev {
            a.push(RouteAttribute::Oif(resolve(d)?));
        }
        if let Some(s) = self.prefsrc {
            a.push(RouteAttribute::PrefSource(s.into()));
        }
        if let Some(p) = self.metric {
            a.push(RouteAttribute::Priority(p));
        }
        if let Some(mtu) = self.mtu {
            a.push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        }
        if let Some(id) = self.nhid {
            a.push(RouteAttribute::NhId(id));
        }
        if !self.nexthops.is_empty() {
            let mut hops = Vec::with_capacity(self.nexthops.len());
            for nh in &self.nexthops {
                let mut h = RouteNextHop::default();
                if nh.onlink {
                    h.flags = RouteNextHopFlags::Onlink;
                }
                h.hops = (nh.weight.clamp(1, 256) - 1) as u8;
                if let Some(d) = &nh.dev {
                    h.interface_index = resolve(d)?;
                }
                if let Some(gw) = nh.gateway {
                    h.attributes.push(RouteAttribute::Gateway(gw.into()));
                }
                hops.push(h);
            }
            a.push(RouteAttribute::MultiPath(hops));
        }
        Ok(())
    }

    /// Resolve every device this route names (so that a later
    /// [`NameCache::cached`] finds them without asking the kernel).
    pub(super) fn resolve_devs(&self, resolve: Resolver<'_>) -> Result<()> {
        if let Some(d) = &self.dev {
            resolve(d)?;
        }
        for nh in &self.nexthops {
            if let Some(d) = &nh.dev {
                resolve(d)?;
            }
        }
        Ok(())
    }

    /// The entry the kernel should list for this route, with devices
    /// resolved: what reconciliation compares against.
    pub fn expected(&self, resolve: Resolver<'_>) -> Result<RouteEntry> {
        let v6 = self.family() == Family::V6;
        let mut nexthops = Vec::with_capacity(self.nexthops.len());
        for nh in &self.nexthops {
            nexthops.push(NextHopEntry {
                gateway: nh.gateway,
                oif: match &nh.dev {
                    Some(d) => resolve(d)?,
                    None => 0,
                },
                weight: nh.weight,
                onlink: nh.onlink,
            });
        }
        nexthops.sort();
        Ok(RouteEntry {
            dst: self.dst,
            table: self.table,
            protocol: self.protocol,
            // IPv6 routes are always reported with scope universe.
            scope: if v6 {
                Scope::Global
            } else {
                self.effective_scope()
            },
            kind: self.kind,
            gateway: self.gateway,
            oif: match &self.dev {
                Some(d) => Some(resolve(d)?),
                None => None,
            },
            prefsrc: self.prefsrc,
            metric: self.effective_metric(),
            onlink: self.onlink,
            mtu: self.mtu,
            nexthops,
            nhid: self.nhid,
        })
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind != RouteType::Unicast {
            write!(f, "{} ", self.kind.as_str())?;
        }
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        match &self.dev {
            Some(LinkRef::Name(n)) => write!(f, " dev {n}")?,
            Some(LinkRef::Index(i)) => write!(f, " dev #{i}")?,
            None => {}
        }
        if self.onlink {
            write!(f, " onlink")?;
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        if self.table != TABLE_MAIN {
            write!(f, " table {}", self.table)?;
        }
        if !self.nexthops.is_empty() {
            write!(f, " ({} next hops)", self.nexthops.len())?;
        }
        if let Some(id) = self.nhid {
            write!(f, " nhid {id}")?;
        }
        Ok(())
    }
}

/// What to list: equivalent to `ip [-4|-6] route show [table T] [dev DEV]
/// [proto P] [type TYPE]`. With nothing set it is `ip route show table all`.
/// The kernel filters (strict checking), so only matching routes cross the
/// socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteFilter {
    pub(super) family: Option<Family>,
    pub(super) table: Option<u32>,
    pub(super) dev: Option<LinkRef>,
    pub(super) protocol: Option<u8>,
    pub(super) kind: Option<RouteType>,
}

impl RouteFilter {
    /// Every route of every table and family.
    pub fn new() -> Self {
        Self::default()
    }
    /// `-4` / `-6`.
    pub fn family(mut self, f: Family) -> Self {
        self.family = Some(f);
        self
    }
    /// `table T`.
    pub fn table(mut self, t: u32) -> Self {
        self.table = Some(t);
        self
    }
    /// `dev DEV`.
    pub fn dev(mut self, d: impl Into<LinkRef>) -> Self {
        self.dev = Some(d.into());
        self
    }
    /// `proto P`.
    pub fn protocol(mut self, p: u8) -> Self {
        self.protocol = Some(p);
        self
    }
    /// `type TYPE`.
    pub fn kind(mut self, k: RouteType) -> Self {
        self.kind = Some(k);
        self
    }

    /// The `RTM_GETROUTE` dump request, device resolved by `resolve`.
    pub fn message(&self, resolve: Resolver<'_>) -> Result<RouteMessage> {
        let mut m = RouteMessage::default();
        if let Some(f) = self.family {
            m.header.address_family = f.to_nl();
        }
        if let Some(t) = self.table {
            if t == 0 {
                return Err(Error::invalid(
                    "route filter",
                    "table 0 is not a routing table (RT_TABLE_UNSPEC)",
                ));
            }
            if t < 256 {
                m.header.table = t as u8;
            } else {
                m.attributes.push(RouteAttribute::Table(t));
            }
        }
        if let Some(p) = self.protocol {
            m.header.protocol = p.into();
        }
        if let Some(k) = self.kind {
            m.header.kind = k.to_u8().into();
        }
        if let Some(d) = &self.dev {
            m.attributes.push(RouteAttribute::Oif(resolve(d)?));
        }
        Ok(m)
    }

    pub(super) fn matches(&self, e: &RouteEntry, oif: Option<u32>) -> bool {
        self.family.is_none_or(|f| Family::of(&e.dst.addr()) == f)
            && self.table.is_none_or(|t| e.table == t)
            && self.protocol.is_none_or(|p| e.protocol == p)
            && self.kind.is_none_or(|k| e.kind == k)
            && oif.is_none_or(|i| e.oif == Some(i) || e.nexthops.iter().any(|n| n.oif == i))
    }
}

/// A route lookup: equivalent to `ip route get DST [from SRC] [iif DEV]
/// [oif DEV] [mark MARK] [fibmatch]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteQuery {
    pub(super) dst: IpAddr,
    pub(super) src: Option<IpAddr>,
    pub(super) iif: Option<LinkRef>,
    pub(super) oif: Option<LinkRef>,
    pub(super) mark: Option<u32>,
    pub(super) fibmatch: bool,
}

impl RouteQuery {
    /// `ip route get DST`.
    pub fn new(dst: IpAddr) -> Self {
        RouteQuery {
            dst,
            src: None,
            iif: None,
            oif: None,
            mark: None,
            fibmatch: false,
        }
    }
    /// `from SRC`.
    pub fn from(mut self, src: IpAddr) -> Self {
        self.src = Some(src);
        self
    }
    /// `iif DEV`: as if the packet arrived on DEV.
    pub fn iif(mut self, d: impl Into<LinkRef>) -> Self {
        self.iif = Some(d.into());
        self
    }
    /// `oif DEV`.
    pub fn oif(mut self, d: impl Into<LinkRef>) -> Self {
        self.oif = Some(d.into());
        self
    }
    /// `mark MARK`.
    pub fn mark(mut self, m: u32) -> Self {
        self.mark = Some(m);
        self
    }
    /// Also return the FIB entry that matched (`ip route get fibmatch`).
    pub fn fibmatch(mut self) -> Self {
        self.fibmatch = true;
        self
    }

    /// The `RTM_GETROUTE` request; `fib_match` sets `RTM_F_FIB_MATCH`.
    pub fn message(&self, resolve: Resolver<'_>, fib_match: bool) -> Result<RouteMessage> {
        let fam = Family::of(&self.dst);
        if let Some(s) = self.src {
            if Family::of(&s) != fam {
                return Err(Error::invalid(
                    format!("route lookup of {}", self.dst),
                    format!("source {s} is of another address family"),
                ));
            }
        }
        let full = if fam == Family::V4 { 32 } else { 128 };
        let mut m = RouteMessage::default();
        m.header.address_family = fam.to_nl();
        m.header.destination_prefix_length = full;
        if fib_match {
            m.header.flags = RouteFlags::FibMatch;
        }
        m.attributes
            .push(RouteAttribute::Destination(self.dst.into()));
        if let Some(s) = self.src {
            m.header.source_prefix_length = full;
            m.attributes.push(RouteAttribute::Source(s.into()));
        }
        if let Some(d) = &self.iif {
            m.attributes.push(RouteAttribute::Iif(resolve(d)?));
        }
        if let Some(d) = &self.oif {
            m.attributes.push(RouteAttribute::Oif(resolve(d)?));
        }
        if let Some(mk) = self.mark {
            m.attributes.push(RouteAttribute::Mark(mk));
        }
        Ok(m)
    }
}

/// One operation of a route batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOp {
    /// `ip route add` (fails on an existing route).
    Add(Route),
    /// `ip route replace`.
    Replace(Route),
    /// `ip route del`.
    Delete(Route),
}

impl RouteOp {
    pub(super) fn route(&self) -> &Route {
        match self {
            RouteOp::Add(r) | RouteOp::Replace(r) | RouteOp::Delete(r) => r,
        }
    }
    pub(super) fn verb(&self) -> &'static str {
        match self {
            RouteOp::Add(_) => "add",
            RouteOp::Replace(_) => "replace",
            RouteOp::Delete(_) => "delete",
        }
    }
}

/// Who owns a set of routes: a protocol number and a table, optionally one
/// device. Reconciliation only lists, changes and deletes routes matching
/// all three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOwner {
    pub(super) protocol: u8,
    pub(super) table: u32,
    pub(super) dev: Option<LinkRef>,
}

impl Default for RouteOwner {
    fn default() -> Self {
        Self::new(PROTOCOL, TABLE_MAIN)
    }
}

impl RouteOwner {
    /// Routes with protocol `protocol` in table `table`.
    pub fn new(protocol: u8, table: u32) -> Self {
        RouteOwner {
            protocol,
            table,
            dev: None,
        }
    }
    /// Restrict the owner to routes through `dev`.
    pub fn dev(mut self, d: impl Into<LinkRef>) -> Self {
        self.dev = Some(d.into());
        self
    }
}
