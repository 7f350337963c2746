//! Route read models: [`RouteEntry`] (a route as the kernel lists it) with
//! its two decoders — the fast one for dumps and the full one through
//! netlink-packet-route, kept in agreement by
//! [`RouteEntry::check_decoders`] — and [`RouteLookup`] (`ip route get`).

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
    RouteNextHopFlags,
};
use netlink_packet_route::AddressFamily;

use super::RouteType;
use crate::addr::Scope;

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
    /// Next hops of a multipath route, sorted. A route through a
    /// nexthop group lists the group's paths here too (the kernel's
    /// compatibility view), besides [`RouteEntry::nhid`].
    pub nexthops: Vec<NextHopEntry>,
    /// The nexthop object the route uses (`nhid`, `RTA_NH_ID`), if any.
    /// The kernel then also reports that nexthop's gateway and device (or
    /// its group's next hops) in the fields above.
    pub nhid: Option<u32>,
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

pub(super) const RTM_NEWROUTE: u16 = 24;
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
                RTA_NH_ID => e.nhid = Some(u32_exact(v)?),
                RTA_IIF | RTA_FLOW | RTA_MARK | RTA_UID => {
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
    pub(super) fn from_header(h: &RouteHeader) -> Option<RouteEntry> {
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
            nhid: None,
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
                    nexthops, nhid
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
                RouteAttribute::NhId(id) => e.nhid = Some(*id),
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
        if want.nhid.is_some() {
            // Gateway, device, next hops and type are the nexthop
            // object's, which the kernel copies into the entry.
            return self.nhid == want.nhid
                && self.scope == want.scope
                && self.prefsrc == want.prefsrc
                && (want.mtu.is_none() || self.mtu == want.mtu);
        }
        self.nhid.is_none()
            && self.kind == want.kind
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
        cmp!(nhid);
        if want.nhid.is_none() {
            cmp!(kind);
        }
        cmp!(scope);
        if want.nhid.is_none() {
            cmp!(gateway);
        }
        cmp!(prefsrc);
        if want.nhid.is_none() {
            cmp!(onlink);
            cmp!(nexthops);
            // IPv6 reject routes (blackhole, …) are listed on `lo`.
            if self.kind.forwards() {
                cmp!(oif);
            }
        }
        if want.mtu.is_some() {
            cmp!(mtu);
        }
        d
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
    /// The FIB entry that matched (with [`RouteQuery::fibmatch`](super::RouteQuery::fibmatch)).
    pub matched: Option<RouteEntry>,
}

impl RouteLookup {
    pub(super) fn from_message(dst: IpAddr, m: &RouteMessage) -> RouteLookup {
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
