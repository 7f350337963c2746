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

use std::borrow::Borrow;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric, RouteNextHop,
    RouteNextHopFlags,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::addr::Scope;
use crate::error::{Error, Result};
use crate::fxhash::FxHashSet;
use crate::handle::Handle;
use crate::link::{validate_mtu, validate_name, LinkRef, Resolver};
use crate::reconcile::NameCache;
/// Moved to [`crate::reconcile`]; kept here so existing paths compile.
pub use crate::reconcile::ReconcileReport;

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

/// One next hop of a multipath (ECMP) route: `nexthop via GW dev DEV
/// weight W [onlink]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    gateway: Option<IpAddr>,
    dev: Option<LinkRef>,
    weight: u16,
    onlink: bool,
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
/// [proto P] [mtu MTU] [nexthop via GW dev DEV weight W …]`.
///
/// The protocol defaults to [`PROTOCOL`], the table to main, the type to
/// unicast, and the scope as `ip` chooses it (link for a unicast route
/// without gateway, host for local routes, global otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    dst: IpNet,
    gateway: Option<IpAddr>,
    dev: Option<LinkRef>,
    onlink: bool,
    prefsrc: Option<IpAddr>,
    metric: Option<u32>,
    table: u32,
    scope: Option<Scope>,
    kind: RouteType,
    protocol: u8,
    mtu: Option<u32>,
    nexthops: Vec<NextHop>,
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
    fn family(&self) -> Family {
        Family::of(&self.dst.addr())
    }
    fn effective_scope(&self) -> Scope {
        if let Some(s) = self.scope {
            return s;
        }
        match self.kind {
            RouteType::Local => Scope::Host,
            RouteType::Unicast if self.gateway.is_none() && self.nexthops.is_empty() => Scope::Link,
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

    fn header(&self) -> RouteHeader {
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
    fn fill_message(&self, m: &mut RouteMessage, resolve: Resolver<'_>) -> Result<()> {
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
    fn resolve_devs(&self, resolve: Resolver<'_>) -> Result<()> {
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
        Ok(())
    }
}

/// One next hop of a route as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NextHopEntry {
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Output device index (0: none).
    pub oif: u32,
    /// Weight (1–256).
    pub weight: u16,
    /// `onlink` flag.
    pub onlink: bool,
}

/// A route as the kernel lists it (`ip route show`), devices by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination prefix (`default` is /0).
    pub dst: IpNet,
    /// Table.
    pub table: u32,
    /// Protocol number (`proto`).
    pub protocol: u8,
    /// Scope.
    pub scope: Scope,
    /// Type.
    pub kind: RouteType,
    /// Gateway of a single-path route.
    pub gateway: Option<IpAddr>,
    /// Output device index of a single-path route.
    pub oif: Option<u32>,
    /// Preferred source (`src`).
    pub prefsrc: Option<IpAddr>,
    /// Metric (`metric`; 0 when IPv4 has none).
    pub metric: u32,
    /// `onlink` flag of a single-path route.
    pub onlink: bool,
    /// Route MTU metric (`mtu`), if set.
    pub mtu: Option<u32>,
    /// Next hops of a multipath route, sorted.
    pub nexthops: Vec<NextHopEntry>,
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

const RTM_NEWROUTE: u16 = 24;
/// `struct rtmsg`, before the attributes.
const ROUTE_HEADER_LEN: usize = 12;

impl RouteEntry {
    /// Decode an `RTM_NEWROUTE` payload (header + attributes) without
    /// building the full message: the header through netlink-packet-route,
    /// attributes through netlink-packet-core's `NlasIterator`, in one pass
    /// with no allocation.
    ///
    /// It accepts and refuses exactly what the full decoder
    /// ([`RouteMessage`]'s `parse`, then [`RouteEntry::from_message`])
    /// does, with the same fields (checked by [`RouteEntry::check_decoders`]
    /// on mutated real messages and by the `route_decode` fuzz target):
    /// each attribute kind read here gets the full decoder's own size check
    /// (an address exactly 4 or 16 bytes as the family says, a `u32`
    /// exactly 4, cache info at least 32, …), and a message with any other
    /// kind — metrics, multipath, encapsulation, kinds neither knows — is
    /// handed to the full decoder whole.
    pub fn from_bytes(body: &[u8]) -> Option<RouteEntry> {
        use netlink_packet_core::{NlasIterator, Parseable};
        const RTA_DST: u16 = 1;
        const RTA_SRC: u16 = 2;
        const RTA_IIF: u16 = 3;
        const RTA_OIF: u16 = 4;
        const RTA_GATEWAY: u16 = 5;
        const RTA_PRIORITY: u16 = 6;
        const RTA_PREFSRC: u16 = 7;
        const RTA_FLOW: u16 = 11;
        const RTA_CACHEINFO: u16 = 12;
        const RTA_TABLE: u16 = 15;
        const RTA_MARK: u16 = 16;
        const RTA_PREF: u16 = 20;
        const RTA_EXPIRES: u16 = 23;
        const RTA_UID: u16 = 25;
        const RTA_NH_ID: u16 = 30;
        /// `struct rta_cacheinfo`: eight u32 (the full decoder takes a prefix).
        const CACHEINFO_LEN: usize = 32;
        const RTN_MULTICAST: u8 = 5;
        let h = RouteHeader::parse(body).ok()?;
        let mut e = RouteEntry::from_header(&h)?;
        let v6 = h.address_family == AddressFamily::Inet6;
        // An address exactly as long as the family's (the full decoder's
        // `RouteAddress::parse`).
        let addr = |v: &[u8]| -> Option<IpAddr> {
            if v6 {
                <[u8; 16]>::try_from(v).ok().map(IpAddr::from)
            } else {
                <[u8; 4]>::try_from(v).ok().map(IpAddr::from)
            }
        };
        // A u32 of exactly four bytes (`parse_u32`).
        let u32_exact = |v: &[u8]| <[u8; 4]>::try_from(v).ok().map(u32::from_ne_bytes);
        let expires_len = if u8::from(h.kind) == RTN_MULTICAST {
            8
        } else {
            4
        };
        for nla in NlasIterator::new(body.get(ROUTE_HEADER_LEN..)?) {
            let nla = nla.ok()?;
            let v = nla.value();
            match nla.kind() {
                RTA_DST => e.dst = IpNet::new(addr(v)?, h.destination_prefix_length).ok()?,
                RTA_GATEWAY => e.gateway = Some(addr(v)?),
                RTA_PREFSRC => e.prefsrc = Some(addr(v)?),
                RTA_OIF => e.oif = Some(u32_exact(v)?),
                RTA_PRIORITY => e.metric = u32_exact(v)?,
                RTA_TABLE => e.table = u32_exact(v)?,
                // Not part of the entry, but validated as the full decoder does.
                RTA_SRC => {
                    addr(v)?;
                }
                RTA_IIF | RTA_FLOW | RTA_MARK | RTA_UID | RTA_NH_ID => {
                    u32_exact(v)?;
                }
                RTA_PREF if v.len() == 1 => {}
                RTA_CACHEINFO if v.len() >= CACHEINFO_LEN => {}
                RTA_EXPIRES if v.len() == expires_len => {}
                RTA_PREF | RTA_CACHEINFO | RTA_EXPIRES => return None,
                // Nested (metrics, multipath) or rare: the full decoder.
                _ => {
                    let m = RouteMessage::parse(body).ok()?;
                    return RouteEntry::from_message(&m);
                }
            }
        }
        Some(e)
    }

    /// The fields the route header alone gives (destination /0 until
    /// `RTA_DST` says otherwise); `None` for non-IP families.
    fn from_header(h: &RouteHeader) -> Option<RouteEntry> {
        let dst = match h.address_family {
            AddressFamily::Inet => IpNet::V4(Default::default()),
            AddressFamily::Inet6 => IpNet::V6(Default::default()),
            _ => return None,
        };
        Some(RouteEntry {
            dst,
            table: h.table as u32,
            protocol: h.protocol.into(),
            scope: Scope::from_u8(h.scope.into()),
            kind: RouteType::from_u8(h.kind.into()),
            gateway: None,
            oif: None,
            prefsrc: None,
            metric: 0,
            onlink: h.flags.contains(RouteFlags::Onlink),
            mtu: None,
            nexthops: Vec::new(),
        })
    }

    /// Decode `body` (an `RTM_NEWROUTE` payload) with both decoders,
    /// [`RouteEntry::from_bytes`] and the full one (`RouteMessage::parse`
    /// then [`RouteEntry::from_message`]), and say how they disagree: that
    /// one refused what the other accepted, or which fields differ. The
    /// fuzz target (`cnet-core/fuzz`) and the `route_decode` test call this.
    pub fn check_decoders(body: &[u8]) -> std::result::Result<Option<RouteEntry>, String> {
        use netlink_packet_core::Parseable;
        let full = RouteMessage::parse(body)
            .ok()
            .and_then(|m| RouteEntry::from_message(&m));
        let fast = RouteEntry::from_bytes(body);
        match (&full, &fast) {
            (None, None) => Ok(None),
            (Some(f), None) => Err(format!(
                "fast path refused what the full decoder accepts: {f:?}"
            )),
            (None, Some(x)) => Err(format!(
                "fast path accepted what the full decoder refuses: {x:?}"
            )),
            (Some(f), Some(x)) => {
                let mut d = Vec::new();
                macro_rules! cmp {
                    ($($field:ident),*) => {$(
                        if f.$field != x.$field {
                            d.push(format!(
                                "{}: full {:?}, fast {:?}",
                                stringify!($field), f.$field, x.$field
                            ));
                        }
                    )*};
                }
                cmp!(
                    dst, table, protocol, scope, kind, gateway, oif, prefsrc, metric, onlink, mtu,
                    nexthops
                );
                if d.is_empty() {
                    Ok(full)
                } else {
                    Err(d.join("; "))
                }
            }
        }
    }

    /// Decode an `RTM_NEWROUTE` message; `None` for non-IP families.
    pub fn from_message(m: &RouteMessage) -> Option<RouteEntry> {
        let h = &m.header;
        let mut e = RouteEntry::from_header(h)?;
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(d) => {
                    e.dst = IpNet::new(ip_of(d)?, h.destination_prefix_length).ok()?
                }
                RouteAttribute::Gateway(g) => e.gateway = ip_of(g),
                RouteAttribute::Oif(i) => e.oif = Some(*i),
                RouteAttribute::PrefSource(s) => e.prefsrc = ip_of(s),
                RouteAttribute::Priority(p) => e.metric = *p,
                RouteAttribute::Table(t) => e.table = *t,
                RouteAttribute::Metrics(ms) => {
                    for mm in ms {
                        if let RouteMetric::Mtu(v) = mm {
                            e.mtu = Some(*v);
                        }
                    }
                }
                RouteAttribute::MultiPath(hops) => {
                    for nh in hops {
                        e.nexthops.push(NextHopEntry {
                            gateway: nh.attributes.iter().find_map(|a| match a {
                                RouteAttribute::Gateway(g) => ip_of(g),
                                _ => None,
                            }),
                            oif: nh.interface_index,
                            weight: nh.hops as u16 + 1,
                            onlink: nh.flags.contains(RouteNextHopFlags::Onlink),
                        });
                    }
                    e.nexthops.sort();
                }
                _ => {}
            }
        }
        Some(e)
    }

    /// Whether this (kernel) entry is `want` in everything a route owner
    /// controls: [`RouteEntry::differences`] is empty exactly when this is
    /// true, without formatting anything.
    pub fn same_as(&self, want: &RouteEntry) -> bool {
        self.kind == want.kind
            && self.scope == want.scope
            && self.gateway == want.gateway
            && self.prefsrc == want.prefsrc
            && self.onlink == want.onlink
            && self.nexthops == want.nexthops
            // IPv6 reject routes (blackhole, …) are listed on `lo`.
            && (!self.kind.forwards() || self.oif == want.oif)
            && (want.mtu.is_none() || self.mtu == want.mtu)
    }

    /// How this (kernel) entry differs from `want` in what a route owner
    /// controls, as "field: have X, want Y"; empty when the same.
    pub fn differences(&self, want: &RouteEntry) -> Vec<String> {
        let mut d = Vec::new();
        macro_rules! cmp {
            ($f:ident) => {
                if self.$f != want.$f {
                    d.push(format!(
                        "{}: have {:?}, want {:?}",
                        stringify!($f),
                        self.$f,
                        want.$f
                    ));
                }
            };
        }
        cmp!(kind);
        cmp!(scope);
        cmp!(gateway);
        cmp!(prefsrc);
        cmp!(onlink);
        cmp!(nexthops);
        // IPv6 reject routes (blackhole, …) are listed on `lo`.
        if self.kind.forwards() {
            cmp!(oif);
        }
        if want.mtu.is_some() {
            cmp!(mtu);
        }
        d
    }
}

/// What to list: equivalent to `ip [-4|-6] route show [table T] [dev DEV]
/// [proto P] [type TYPE]`. With nothing set it is `ip route show table all`.
/// The kernel filters (strict checking), so only matching routes cross the
/// socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteFilter {
    family: Option<Family>,
    table: Option<u32>,
    dev: Option<LinkRef>,
    protocol: Option<u8>,
    kind: Option<RouteType>,
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

    fn matches(&self, e: &RouteEntry, oif: Option<u32>) -> bool {
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
    dst: IpAddr,
    src: Option<IpAddr>,
    iif: Option<LinkRef>,
    oif: Option<LinkRef>,
    mark: Option<u32>,
    fibmatch: bool,
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

/// The kernel's routing decision (`ip route get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLookup {
    /// The destination looked up.
    pub dst: IpAddr,
    /// Type of the result (unicast, local, broadcast, …).
    pub kind: RouteType,
    /// Table of the route that decided.
    pub table: u32,
    /// Output device index.
    pub oif: Option<u32>,
    /// Output device name.
    pub dev: Option<String>,
    /// Next-hop gateway, if not directly connected.
    pub gateway: Option<IpAddr>,
    /// Preferred source address.
    pub prefsrc: Option<IpAddr>,
    /// Input device index (with `iif`).
    pub iif: Option<u32>,
    /// Path MTU, if cached.
    pub mtu: Option<u32>,
    /// The FIB entry that matched (with [`RouteQuery::fibmatch`]).
    pub matched: Option<RouteEntry>,
}

impl RouteLookup {
    fn from_message(dst: IpAddr, m: &RouteMessage) -> RouteLookup {
        let mut r = RouteLookup {
            dst,
            kind: RouteType::from_u8(m.header.kind.into()),
            table: m.header.table as u32,
            oif: None,
            dev: None,
            gateway: None,
            prefsrc: None,
            iif: None,
            mtu: None,
            matched: None,
        };
        for a in &m.attributes {
            match a {
                RouteAttribute::Oif(i) => r.oif = Some(*i),
                RouteAttribute::Iif(i) => r.iif = Some(*i),
                RouteAttribute::Gateway(g) => r.gateway = ip_of(g),
                RouteAttribute::PrefSource(s) => r.prefsrc = ip_of(s),
                RouteAttribute::Table(t) => r.table = *t,
                RouteAttribute::Metrics(ms) => {
                    for mm in ms {
                        if let RouteMetric::Mtu(v) = mm {
                            r.mtu = Some(*v);
                        }
                    }
                }
                _ => {}
            }
        }
        r
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
    fn route(&self) -> &Route {
        match self {
            RouteOp::Add(r) | RouteOp::Replace(r) | RouteOp::Delete(r) => r,
        }
    }
    fn verb(&self) -> &'static str {
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
    protocol: u8,
    table: u32,
    dev: Option<LinkRef>,
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
        if let Some(i) = out.oif {
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
                    report
                        .errors
                        .push(e.with_context(format!("reconcile route {r} in {ns}")));
                }
            }
        }
        want.sort_unstable();
        // Two desired routes with one key: the later one is meant.
        want.dedup_by(|later, earlier| {
            if later.0 != earlier.0 {
                return false;
            }
            report.errors.push(Error::invalid(
                format!("reconcile routes in {ns}"),
                format!(
                    "two desired routes for {} metric {}",
                    later.0 .0, later.0 .1
                ),
            ));
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
        let mut ops: Vec<RouteOp> = stale.into_iter().map(RouteOp::Delete).collect();
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
        ops.extend(
            missing
                .into_iter()
                .map(|i| RouteOp::Add(owned(&desired[i as usize]))),
        );
        if ops.is_empty() {
            return Ok(report);
        }
        let results = self.batch_with(&ops, &names, true);
        for (op, r) in ops.iter().zip(results) {
            match (op, r) {
                (_, Err(e)) => report.errors.push(e),
                (RouteOp::Add(_), Ok(())) => report.added += 1,
                (RouteOp::Replace(_), Ok(())) => report.replaced += 1,
                (RouteOp::Delete(_), Ok(())) => report.deleted += 1,
            }
        }
        Ok(report)
    }
}
