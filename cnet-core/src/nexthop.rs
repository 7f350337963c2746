//! Nexthop objects: `ip nexthop`.
//!
//! ```text
//!  Nexthop (builder) ──message(resolve)──▶ NexthopMessage ──to_bytes()──▶ RTM_NEWNEXTHOP
//!  Nexthops::delete(id) ─────────────────▶ RTM_DELNEXTHOP  [NHA_ID]
//!  Nexthops::get(id) ────────────────────▶ RTM_GETNEXTHOP  [NHA_ID]        ──▶ NexthopEntry
//!  Nexthops::list(filter) ───────────────▶ RTM_GETNEXTHOP dump [NHA_OIF | NHA_GROUPS | NHA_FDB …]
//!  Route::nexthop_id(id) ────────────────▶ RTM_NEWROUTE    [RTA_NH_ID]
//! ```
//!
//! A nexthop object (Linux 5.3+) is a next hop — a gateway on a device, a
//! device alone, a blackhole, or a weighted group of other nexthops — that
//! lives on its own under a numeric id. Routes point at it by id
//! (`ip route add PREFIX nhid ID`, [`crate::route::Route::nexthop_id`]),
//! so replacing the nexthop ([`Nexthops::replace`]) moves every route that
//! uses it to the new path in one kernel operation, however many routes
//! there are. Deleting a nexthop deletes the routes that use it (and
//! removes it from the groups it is a member of): that is the kernel's
//! rule, not ours.
//!
//! Why this module encodes its own messages: `netlink-packet-route` 0.34
//! (the newest release; the workspace pins it) knows `RTA_NH_ID` on routes
//! but not the `RTM_NEWNEXTHOP` / `RTM_DELNEXTHOP` / `RTM_GETNEXTHOP`
//! messages. The format is small and fixed (`include/uapi/linux/nexthop.h`:
//! an 8-byte `struct nhmsg` followed by `NHA_*` attributes), so
//! [`NexthopMessage`] writes and reads it here, with netlink-packet-core's
//! `NlasIterator` for the attribute walk, and [`crate::netlink::Socket`]'s
//! raw request and dump paths frame it, with the usual sequencing, ext-ack
//! text and interrupted-dump retry. When netlink-packet-route gains these
//! messages, this file should shrink to the builder and the read model.
//!
//! The nexthops cnet writes carry protocol [`crate::route::PROTOCOL`]
//! (119) unless told otherwise, like its routes and rules. Ids are the
//! caller's: id 0 (which asks the kernel to choose one) is refused.

use std::fmt;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::link::{validate_name, LinkRef, Resolver};
use crate::reconcile::NameCache;
use crate::route::{Family, PROTOCOL};

/// `RTM_NEWNEXTHOP` (`include/uapi/linux/rtnetlink.h`).
pub const RTM_NEWNEXTHOP: u16 = 104;
/// `RTM_DELNEXTHOP`.
pub const RTM_DELNEXTHOP: u16 = 105;
/// `RTM_GETNEXTHOP`.
pub const RTM_GETNEXTHOP: u16 = 106;

// `enum { NHA_* }` of include/uapi/linux/nexthop.h.
/// `NHA_ID`: u32, the nexthop's id.
const NHA_ID: u16 = 1;
/// `NHA_GROUP`: array of `struct nexthop_grp`.
const NHA_GROUP: u16 = 2;
/// `NHA_GROUP_TYPE`: u16, `NEXTHOP_GRP_TYPE_*`.
const NHA_GROUP_TYPE: u16 = 3;
/// `NHA_BLACKHOLE`: flag, no payload.
const NHA_BLACKHOLE: u16 = 4;
/// `NHA_OIF`: u32 device index (also a dump filter).
const NHA_OIF: u16 = 5;
/// `NHA_GATEWAY`: 4 or 16 bytes, network order.
const NHA_GATEWAY: u16 = 6;
/// `NHA_GROUPS`: flag, dump filter "only groups".
const NHA_GROUPS: u16 = 9;
/// `NHA_MASTER`: u32, dump filter "devices enslaved to this master".
const NHA_MASTER: u16 = 10;
/// `NHA_FDB`: flag, the nexthop is for the bridge FDB (VXLAN), not routes.
const NHA_FDB: u16 = 11;

/// `NEXTHOP_GRP_TYPE_MPATH`: hash-threshold multipath.
const NEXTHOP_GRP_TYPE_MPATH: u16 = 0;
/// `struct nexthop_grp`: u32 id, u8 weight−1, u8 weight_high, u16 resvd.
const NEXTHOP_GRP_LEN: usize = 8;
/// `struct nhmsg`: family, scope, protocol, resvd (u8 each), flags (u32).
const NHMSG_LEN: usize = 8;
/// `RTNH_F_ONLINK` in `nh_flags`.
const RTNH_F_ONLINK: u32 = 4;
/// `RTNH_F_DEAD` / `RTNH_F_LINKDOWN`: set by the kernel, reported.
const RTNH_F_DEAD: u32 = 1;
const RTNH_F_LINKDOWN: u32 = 16;

const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

/// The header of a nexthop message (`struct nhmsg`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NexthopHeader {
    /// `nh_family`: `AF_INET`, `AF_INET6`, or `AF_UNSPEC` for a group.
    pub family: u8,
    /// `nh_scope`: must be 0 in requests; the kernel reports its own.
    pub scope: u8,
    /// `nh_protocol` (`RTPROT_*`; cnet's is 119).
    pub protocol: u8,
    /// `resvd`: must be 0.
    pub resvd: u8,
    /// `nh_flags` (`RTNH_F_*`: onlink, dead, linkdown, …).
    pub flags: u32,
}

/// One member of a nexthop group: `ID[,WEIGHT]` in `ip nexthop … group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupMember {
    /// The member nexthop's id.
    pub id: u32,
    /// Its weight, 1–256.
    pub weight: u16,
}

/// One attribute of a nexthop message (`NHA_*`).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NexthopAttribute {
    /// `NHA_ID`.
    Id(u32),
    /// `NHA_GROUP`: members with their weights.
    Group(Vec<GroupMember>),
    /// `NHA_GROUP_TYPE`: 0 multipath, 1 resilient.
    GroupType(u16),
    /// `NHA_BLACKHOLE`.
    Blackhole,
    /// `NHA_OIF`: device index.
    Oif(u32),
    /// `NHA_GATEWAY`.
    Gateway(IpAddr),
    /// `NHA_GROUPS` (dump filter: groups only).
    Groups,
    /// `NHA_MASTER` (dump filter: devices of this master).
    Master(u32),
    /// `NHA_FDB`.
    Fdb,
    /// Any other attribute, kept as (kind, payload).
    Other(u16, Vec<u8>),
}

impl NexthopAttribute {
    fn kind(&self) -> u16 {
        match self {
            NexthopAttribute::Id(_) => NHA_ID,
            NexthopAttribute::Group(_) => NHA_GROUP,
            NexthopAttribute::GroupType(_) => NHA_GROUP_TYPE,
            NexthopAttribute::Blackhole => NHA_BLACKHOLE,
            NexthopAttribute::Oif(_) => NHA_OIF,
            NexthopAttribute::Gateway(_) => NHA_GATEWAY,
            NexthopAttribute::Groups => NHA_GROUPS,
            NexthopAttribute::Master(_) => NHA_MASTER,
            NexthopAttribute::Fdb => NHA_FDB,
            NexthopAttribute::Other(k, _) => *k,
        }
    }

    fn emit_value(&self, out: &mut Vec<u8>) {
        match self {
            NexthopAttribute::Id(v) | NexthopAttribute::Oif(v) | NexthopAttribute::Master(v) => {
                out.extend_from_slice(&v.to_ne_bytes())
            }
            NexthopAttribute::GroupType(t) => out.extend_from_slice(&t.to_ne_bytes()),
            NexthopAttribute::Gateway(IpAddr::V4(a)) => out.extend_from_slice(&a.octets()),
            NexthopAttribute::Gateway(IpAddr::V6(a)) => out.extend_from_slice(&a.octets()),
            NexthopAttribute::Group(members) => {
                for m in members {
                    out.extend_from_slice(&m.id.to_ne_bytes());
                    // Weight 1–256 travels as weight−1 in one byte; the
                    // kernel's newer weight_high byte stays 0.
                    out.push((m.weight.clamp(1, 256) - 1) as u8);
                    out.extend_from_slice(&[0, 0, 0]);
                }
            }
            NexthopAttribute::Blackhole | NexthopAttribute::Groups | NexthopAttribute::Fdb => {}
            NexthopAttribute::Other(_, v) => out.extend_from_slice(v),
        }
    }

    /// Decode one attribute; `None` when its payload has the wrong size
    /// for its kind.
    fn parse(kind: u16, v: &[u8], family: u8) -> Option<NexthopAttribute> {
        let u32_exact = || <[u8; 4]>::try_from(v).ok().map(u32::from_ne_bytes);
        Some(match kind {
            NHA_ID => NexthopAttribute::Id(u32_exact()?),
            NHA_OIF => NexthopAttribute::Oif(u32_exact()?),
            NHA_MASTER => NexthopAttribute::Master(u32_exact()?),
            NHA_GROUP_TYPE => {
                NexthopAttribute::GroupType(u16::from_ne_bytes(<[u8; 2]>::try_from(v).ok()?))
            }
            NHA_GATEWAY => NexthopAttribute::Gateway(match (family, v.len()) {
                (AF_INET6, 16) | (AF_UNSPEC, 16) => IpAddr::from(<[u8; 16]>::try_from(v).ok()?),
                (AF_INET, 4) | (AF_UNSPEC, 4) => IpAddr::from(<[u8; 4]>::try_from(v).ok()?),
                _ => return None,
            }),
            NHA_GROUP => {
                if v.len() % NEXTHOP_GRP_LEN != 0 {
                    return None;
                }
                NexthopAttribute::Group(
                    v.chunks_exact(NEXTHOP_GRP_LEN)
                        .map(|c| GroupMember {
                            id: u32::from_ne_bytes([c[0], c[1], c[2], c[3]]),
                            // weight_high (c[5]) extends the weight on
                            // kernels with 16-bit weights; the largest,
                            // 65,536, does not fit and reads as 65,535
                            // (cnet writes 1–256 only). Saturating: the
                            // bytes are the kernel's, never a reason to
                            // panic.
                            weight: u16::from_le_bytes([c[4], c[5]]).saturating_add(1),
                        })
                        .collect(),
                )
            }
            NHA_BLACKHOLE => NexthopAttribute::Blackhole,
            NHA_GROUPS => NexthopAttribute::Groups,
            NHA_FDB => NexthopAttribute::Fdb,
            k => NexthopAttribute::Other(k, v.to_vec()),
        })
    }
}

/// A nexthop message's payload: `struct nhmsg` and its attributes, as
/// `RTM_NEWNEXTHOP` / `RTM_DELNEXTHOP` / `RTM_GETNEXTHOP` carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NexthopMessage {
    /// `struct nhmsg`.
    pub header: NexthopHeader,
    /// `NHA_*` attributes in order.
    pub attributes: Vec<NexthopAttribute>,
}

impl NexthopMessage {
    /// The payload bytes (after the netlink header), attributes padded to
    /// 4 bytes as netlink requires.
    pub fn to_bytes(&self) -> Vec<u8> {
        let h = &self.header;
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&[h.family, h.scope, h.protocol, h.resvd]);
        out.extend_from_slice(&h.flags.to_ne_bytes());
        for a in &self.attributes {
            let start = out.len();
            out.extend_from_slice(&[0; 4]);
            a.emit_value(&mut out);
            let len = (out.len() - start) as u16;
            out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
            out[start + 2..start + 4].copy_from_slice(&a.kind().to_ne_bytes());
            out.resize((out.len() + 3) & !3, 0);
        }
        out
    }

    /// Decode a payload; `None` if it is shorter than `struct nhmsg`, an
    /// attribute overruns it, or a known attribute has the wrong size.
    pub fn parse(body: &[u8]) -> Option<NexthopMessage> {
        use netlink_packet_core::NlasIterator;
        let h = body.get(..NHMSG_LEN)?;
        let header = NexthopHeader {
            family: h[0],
            scope: h[1],
            protocol: h[2],
            resvd: h[3],
            flags: u32::from_ne_bytes([h[4], h[5], h[6], h[7]]),
        };
        let mut attributes = Vec::new();
        for nla in NlasIterator::new(&body[NHMSG_LEN..]) {
            let nla = nla.ok()?;
            attributes.push(NexthopAttribute::parse(
                nla.kind(),
                nla.value(),
                header.family,
            )?);
        }
        Some(NexthopMessage { header, attributes })
    }
}

/// What a nexthop leads to.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NexthopKind {
    /// `via GW [dev DEV]`, or `dev DEV` alone (gateway `None`).
    Path {
        /// The gateway, if any.
        gateway: Option<IpAddr>,
        /// The device (a name resolved in the handle's namespace, or an index).
        dev: Option<LinkRef>,
    },
    /// `blackhole`: drops what is routed to it.
    Blackhole,
    /// `group ID[,WEIGHT]/…`: multipath over other nexthops.
    Group(Vec<GroupMember>),
}

/// A nexthop object to program. Equivalent to `ip [-6] nexthop add id ID
/// (via GW [dev DEV] [onlink] | dev DEV | blackhole | group
/// ID[,WEIGHT]/…) [fdb] [proto P]` (with [`Nexthops::add`];
/// [`Nexthops::replace`] is `ip nexthop replace …`).
///
/// ```
/// use cnet_core::nexthop::Nexthop;
/// // ip nexthop add id 1 via 192.0.2.2 dev eth0 proto 119
/// let a = Nexthop::new(1).via("192.0.2.2".parse().unwrap()).dev("eth0");
/// // ip nexthop add id 10 group 1/2,3 proto 119
/// let g = Nexthop::group(10, &[(1, 1), (2, 3)]);
/// assert_eq!(a.to_string(), "ip nexthop id 1 via 192.0.2.2 dev eth0 proto 119");
/// assert_eq!(g.to_string(), "ip nexthop id 10 group 1/2,3 proto 119");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nexthop {
    /// `id ID` (1 or more).
    pub id: u32,
    /// What it leads to.
    pub kind: NexthopKind,
    /// `onlink` (with a gateway and a device).
    pub onlink: bool,
    /// `fdb`: for VXLAN FDB entries rather than routes.
    pub fdb: bool,
    /// `proto P` ([`PROTOCOL`] unless set).
    pub protocol: u8,
    /// `ip -6 nexthop` for a device-only or blackhole nexthop (one with a
    /// gateway takes the gateway's family; a group has none).
    pub v6: bool,
}

impl Nexthop {
    /// A nexthop `id` with neither gateway nor device yet: set them with
    /// [`Nexthop::via`] / [`Nexthop::dev`] (or use [`Nexthop::blackhole`],
    /// [`Nexthop::group`]).
    pub fn new(id: u32) -> Self {
        Nexthop {
            id,
            kind: NexthopKind::Path {
                gateway: None,
                dev: None,
            },
            onlink: false,
            fdb: false,
            protocol: PROTOCOL,
            v6: false,
        }
    }
    /// `ip nexthop add id ID blackhole`.
    pub fn blackhole(id: u32) -> Self {
        Nexthop {
            kind: NexthopKind::Blackhole,
            ..Self::new(id)
        }
    }
    /// `ip nexthop add id ID group M1,W1/M2,W2/…`: `members` as (id, weight).
    pub fn group(id: u32, members: &[(u32, u16)]) -> Self {
        Nexthop {
            kind: NexthopKind::Group(
                members
                    .iter()
                    .map(|&(id, weight)| GroupMember { id, weight })
                    .collect(),
            ),
            ..Self::new(id)
        }
    }
    /// `via GW`.
    pub fn via(mut self, gw: IpAddr) -> Self {
        match &mut self.kind {
            NexthopKind::Path { gateway, .. } => *gateway = Some(gw),
            _ => {
                self.kind = NexthopKind::Path {
                    gateway: Some(gw),
                    dev: None,
                }
            }
        }
        self
    }
    /// `dev DEV`.
    pub fn dev(mut self, d: impl Into<LinkRef>) -> Self {
        let d = d.into();
        match &mut self.kind {
            NexthopKind::Path { dev, .. } => *dev = Some(d),
            _ => {
                self.kind = NexthopKind::Path {
                    gateway: None,
                    dev: Some(d),
                }
            }
        }
        self
    }
    /// `onlink`: use the gateway without a connected route to it.
    pub fn onlink(mut self) -> Self {
        self.onlink = true;
        self
    }
    /// `fdb`: a nexthop for VXLAN FDB entries.
    pub fn fdb(mut self) -> Self {
        self.fdb = true;
        self
    }
    /// `proto P`.
    pub fn protocol(mut self, p: u8) -> Self {
        self.protocol = p;
        self
    }
    /// `ip -6 nexthop`: an IPv6 device-only or blackhole nexthop.
    pub fn v6(mut self) -> Self {
        self.v6 = true;
        self
    }

    /// Check every parameter; nothing is sent when this fails.
    pub fn validate(&self) -> Result<()> {
        let ctx = || format!("nexthop {self}");
        let bad = |reason: String| Err(Error::invalid(ctx(), reason));
        if self.id == 0 {
            return bad(
                "id 0 asks the kernel to choose an id, which the caller would not learn: \
                 give an id of 1 or more"
                    .into(),
            );
        }
        match &self.kind {
            NexthopKind::Path { gateway, dev } => {
                if gateway.is_none() && dev.is_none() {
                    return bad("needs a gateway (via), a device (dev), or both".into());
                }
                if self.onlink && (dev.is_none() || gateway.is_none()) {
                    return bad("onlink needs both a gateway and a device".into());
                }
                if let (Some(gw), true) = (gateway, self.v6) {
                    if gw.is_ipv4() {
                        return bad(format!("IPv4 gateway {gw} on an IPv6 nexthop"));
                    }
                }
                if let Some(LinkRef::Name(n)) = dev {
                    validate_name(n).map_err(|e| e.with_context(ctx()))?;
                }
            }
            NexthopKind::Blackhole => {
                if self.onlink || self.fdb {
                    return bad("a blackhole nexthop takes no onlink or fdb".into());
                }
            }
            NexthopKind::Group(members) => {
                if members.is_empty() {
                    return bad("a group needs at least one member".into());
                }
                if self.onlink {
                    return bad("a group takes no onlink (its members may)".into());
                }
                for m in members {
                    if m.id == 0 {
                        return bad("group member id 0 is not a nexthop".into());
                    }
                    if m.id == self.id {
                        return bad(format!("group {} cannot contain itself", self.id));
                    }
                    if !(1..=256).contains(&m.weight) {
                        return bad(format!(
                            "weight {} of member {} is not in 1..=256",
                            m.weight, m.id
                        ));
                    }
                }
                let mut ids: Vec<u32> = members.iter().map(|m| m.id).collect();
                ids.sort_unstable();
                if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
                    return bad(format!("member {} is listed twice", w[0]));
                }
            }
        }
        Ok(())
    }

    fn family(&self) -> u8 {
        match &self.kind {
            NexthopKind::Group(_) => AF_UNSPEC,
            NexthopKind::Path {
                gateway: Some(gw), ..
            } => match gw {
                IpAddr::V4(_) => AF_INET,
                IpAddr::V6(_) => AF_INET6,
            },
            _ if self.v6 => AF_INET6,
            _ => AF_INET,
        }
    }

    /// The `RTM_NEWNEXTHOP` payload, resolving device names with
    /// `resolve`. Call [`Nexthop::validate`] first.
    pub fn message(&self, resolve: Resolver<'_>) -> Result<NexthopMessage> {
        let mut a = vec![NexthopAttribute::Id(self.id)];
        match &self.kind {
            NexthopKind::Path { gateway, dev } => {
                if let Some(d) = dev {
                    a.push(NexthopAttribute::Oif(resolve(d)?));
                }
                if let Some(gw) = gateway {
                    a.push(NexthopAttribute::Gateway(*gw));
                }
            }
            NexthopKind::Blackhole => a.push(NexthopAttribute::Blackhole),
            NexthopKind::Group(members) => {
                a.push(NexthopAttribute::Group(members.clone()));
                a.push(NexthopAttribute::GroupType(NEXTHOP_GRP_TYPE_MPATH));
            }
        }
        if self.fdb {
            a.push(NexthopAttribute::Fdb);
        }
        Ok(NexthopMessage {
            header: NexthopHeader {
                family: self.family(),
                scope: 0,
                protocol: self.protocol,
                resvd: 0,
                flags: if self.onlink { RTNH_F_ONLINK } else { 0 },
            },
            attributes: a,
        })
    }
}

impl fmt::Display for Nexthop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let six = if self.family() == AF_INET6 { "-6 " } else { "" };
        write!(f, "ip {six}nexthop id {}", self.id)?;
        match &self.kind {
            NexthopKind::Path { gateway, dev } => {
                if let Some(gw) = gateway {
                    write!(f, " via {gw}")?;
                }
                match dev {
                    Some(LinkRef::Name(n)) => write!(f, " dev {n}")?,
                    Some(LinkRef::Index(i)) => write!(f, " dev #{i}")?,
                    None => {}
                }
                if self.onlink {
                    f.write_str(" onlink")?;
                }
            }
            NexthopKind::Blackhole => f.write_str(" blackhole")?,
            NexthopKind::Group(members) => {
                f.write_str(" group ")?;
                for (i, m) in members.iter().enumerate() {
                    if i > 0 {
                        f.write_str("/")?;
                    }
                    write!(f, "{}", m.id)?;
                    if m.weight != 1 {
                        write!(f, ",{}", m.weight)?;
                    }
                }
            }
        }
        if self.fdb {
            f.write_str(" fdb")?;
        }
        write!(f, " proto {}", self.protocol)
    }
}

/// A nexthop as the kernel lists it (`ip nexthop show`), devices by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NexthopEntry {
    /// Its id.
    pub id: u32,
    /// Address family (`None` for a group, which has none).
    pub family: Option<Family>,
    /// Protocol (`proto`).
    pub protocol: u8,
    /// Scope the kernel gave it (`RT_SCOPE_*`: 0 global, 253 link, 254 host).
    pub scope: u8,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Device index.
    pub oif: Option<u32>,
    /// `blackhole`.
    pub blackhole: bool,
    /// Group members with their weights (empty unless a group).
    pub group: Vec<GroupMember>,
    /// Group type (`NEXTHOP_GRP_TYPE_*`: 0 multipath, 1 resilient), for groups.
    pub group_type: Option<u16>,
    /// `fdb`.
    pub fdb: bool,
    /// `onlink`.
    pub onlink: bool,
    /// `dead` or `linkdown` (the kernel's view of its device).
    pub down: bool,
}

impl NexthopEntry {
    /// Decode an `RTM_NEWNEXTHOP` payload; `None` when it is malformed or
    /// carries no id.
    pub fn from_bytes(body: &[u8]) -> Option<NexthopEntry> {
        Self::from_message(&NexthopMessage::parse(body)?)
    }

    /// Decode a parsed nexthop message; `None` without `NHA_ID`.
    pub fn from_message(m: &NexthopMessage) -> Option<NexthopEntry> {
        let h = &m.header;
        let mut e = NexthopEntry {
            id: 0,
            family: match h.family {
                AF_INET => Some(Family::V4),
                AF_INET6 => Some(Family::V6),
                _ => None,
            },
            protocol: h.protocol,
            scope: h.scope,
            gateway: None,
            oif: None,
            blackhole: false,
            group: Vec::new(),
            group_type: None,
            fdb: false,
            onlink: h.flags & RTNH_F_ONLINK != 0,
            down: h.flags & (RTNH_F_DEAD | RTNH_F_LINKDOWN) != 0,
        };
        for a in &m.attributes {
            match a {
                NexthopAttribute::Id(id) => e.id = *id,
                NexthopAttribute::Gateway(g) => e.gateway = Some(*g),
                NexthopAttribute::Oif(i) => e.oif = Some(*i),
                NexthopAttribute::Blackhole => e.blackhole = true,
                NexthopAttribute::Group(g) => e.group = g.clone(),
                NexthopAttribute::GroupType(t) => e.group_type = Some(*t),
                NexthopAttribute::Fdb => e.fdb = true,
                _ => {}
            }
        }
        (e.id != 0).then_some(e)
    }
}

/// What to list: equivalent to `ip nexthop show [dev DEV] [master DEV]
/// [groups] [fdb]`. The kernel filters (strict checking); with nothing
/// set it is every nexthop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NexthopFilter {
    dev: Option<LinkRef>,
    master: Option<LinkRef>,
    groups: bool,
    fdb: bool,
}

impl NexthopFilter {
    /// Every nexthop.
    pub fn new() -> Self {
        Self::default()
    }
    /// `dev DEV`: nexthops out of this device.
    pub fn dev(mut self, d: impl Into<LinkRef>) -> Self {
        self.dev = Some(d.into());
        self
    }
    /// `master DEV`: nexthops out of devices enslaved to this one.
    pub fn master(mut self, d: impl Into<LinkRef>) -> Self {
        self.master = Some(d.into());
        self
    }
    /// `groups`: groups only.
    pub fn groups(mut self) -> Self {
        self.groups = true;
        self
    }
    /// `fdb`: FDB nexthops only.
    pub fn fdb(mut self) -> Self {
        self.fdb = true;
        self
    }

    /// The `RTM_GETNEXTHOP` dump request with the filter attributes.
    pub fn message(&self, resolve: Resolver<'_>) -> Result<NexthopMessage> {
        let mut a = Vec::new();
        if let Some(d) = &self.dev {
            a.push(NexthopAttribute::Oif(resolve(d)?));
        }
        if let Some(d) = &self.master {
            a.push(NexthopAttribute::Master(resolve(d)?));
        }
        if self.groups {
            a.push(NexthopAttribute::Groups);
        }
        if self.fdb {
            a.push(NexthopAttribute::Fdb);
        }
        Ok(NexthopMessage {
            header: NexthopHeader::default(),
            attributes: a,
        })
    }
}

/// The message that names nexthop `id` alone (`RTM_DELNEXTHOP`,
/// `RTM_GETNEXTHOP` for one).
pub fn id_message(id: u32) -> NexthopMessage {
    NexthopMessage {
        header: NexthopHeader::default(),
        attributes: vec![NexthopAttribute::Id(id)],
    }
}

/// Nexthop objects of one namespace: `ip nexthop`.
#[derive(Debug)]
pub struct Nexthops<'a> {
    h: &'a Handle,
}

impl<'a> Nexthops<'a> {
    pub(crate) fn new(h: &'a Handle) -> Self {
        Nexthops { h }
    }

    /// Build the `RTM_NEWNEXTHOP` payload for `nh` as [`Nexthops::add`]
    /// would send it, resolving device names in this namespace.
    pub fn message_for(&self, nh: &Nexthop) -> Result<NexthopMessage> {
        nh.validate()?;
        let names = NameCache::new(self.h);
        nh.message(&|r| names.resolve(r))
    }

    fn send_new(&self, nh: &Nexthop, verb: &str, flags: u16) -> Result<()> {
        let ns = self.h.netns().label();
        let ctx = || format!("{verb} {nh} in {ns}");
        let msg = self.message_for(nh).map_err(|e| e.with_context(ctx()))?;
        self.h
            .sock()?
            .request_raw(RTM_NEWNEXTHOP, &msg.to_bytes(), flags, &ctx)
            .map(|_| ())
    }

    /// `ip nexthop add …`: `AlreadyExists` if the id is taken; a group
    /// naming a nexthop that does not exist gets the kernel's "Invalid
    /// nexthop id".
    pub fn add(&self, nh: &Nexthop) -> Result<()> {
        self.send_new(nh, "add", NLM_F_CREATE | NLM_F_EXCL)
    }

    /// `ip nexthop replace …`: create, or overwrite in place. Every route
    /// and group using the id follows the new definition at once.
    pub fn replace(&self, nh: &Nexthop) -> Result<()> {
        self.send_new(nh, "replace", NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// `ip nexthop del id ID`: `NotFound` if absent. The kernel also
    /// deletes the routes that use it and drops it from its groups.
    pub fn delete(&self, id: u32) -> Result<()> {
        let ns = self.h.netns().label();
        let ctx = || format!("delete nexthop id {id} in {ns}");
        self.h
            .sock()?
            .request_raw(RTM_DELNEXTHOP, &id_message(id).to_bytes(), 0, &ctx)
            .map(|_| ())
    }

    /// Delete if present; returns whether it was.
    pub fn delete_if_exists(&self, id: u32) -> Result<bool> {
        match self.delete(id) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `ip nexthop get id ID`: `None` if there is no such nexthop.
    pub fn get(&self, id: u32) -> Result<Option<NexthopEntry>> {
        let ns = self.h.netns().label();
        let ctx = || format!("get nexthop id {id} in {ns}");
        let r = self
            .h
            .sock()?
            .request_raw(RTM_GETNEXTHOP, &id_message(id).to_bytes(), 0, &ctx);
        match r {
            Ok(replies) => Ok(replies
                .iter()
                .filter(|(t, _)| *t == RTM_NEWNEXTHOP)
                .find_map(|(_, b)| NexthopEntry::from_bytes(b))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `ip nexthop show …` (see [`NexthopFilter`]): one dump filtered by
    /// the kernel, sorted by id.
    pub fn list(&self, filter: &NexthopFilter) -> Result<Vec<NexthopEntry>> {
        let ns = self.h.netns().label();
        let ctx = || format!("list nexthops in {ns}");
        let names = NameCache::new(self.h);
        let req = filter
            .message(&|r| names.resolve(r))
            .map_err(|e| e.with_context(ctx()))?
            .to_bytes();
        let mut out = Vec::new();
        self.h
            .sock()?
            .dump_raw_each(RTM_GETNEXTHOP, &req, &ctx, &mut |m| {
                match m {
                    None => out.clear(),
                    Some((hdr, body)) if hdr.message_type == RTM_NEWNEXTHOP => out.push(
                        NexthopEntry::from_bytes(body).ok_or_else(|| Error::Protocol {
                            context: ctx(),
                            reason: format!("malformed RTM_NEWNEXTHOP ({} bytes)", body.len()),
                        })?,
                    ),
                    Some(_) => {}
                }
                Ok(())
            })?;
        out.sort_by_key(|e| e.id);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_weights_decode_without_overflow() {
        let mut v = Vec::new();
        for (id, lo, hi) in [(1u32, 0u8, 0u8), (2, 255, 0), (3, 255, 255)] {
            v.extend_from_slice(&id.to_ne_bytes());
            v.extend_from_slice(&[lo, hi, 0, 0]);
        }
        let Some(NexthopAttribute::Group(m)) = NexthopAttribute::parse(NHA_GROUP, &v, AF_INET)
        else {
            panic!("not a group");
        };
        let w: Vec<u16> = m.iter().map(|m| m.weight).collect();
        assert_eq!(w, [1, 256, u16::MAX]);
    }

    fn no_devs(r: &LinkRef) -> Result<u32> {
        match r {
            LinkRef::Index(i) => Ok(*i),
            LinkRef::Name(_) => Ok(7),
        }
    }

    #[test]
    fn messages_round_trip_through_the_decoder() {
        for nh in [
            Nexthop::new(1)
                .via("192.0.2.2".parse().unwrap())
                .dev("eth0"),
            Nexthop::new(2).via("2001:db8::1".parse().unwrap()),
            Nexthop::new(3).dev("eth0").v6(),
            Nexthop::blackhole(4),
            Nexthop::group(5, &[(1, 1), (2, 256)]),
        ] {
            nh.validate().unwrap();
            let m = nh.message(&no_devs).unwrap();
            let back = NexthopMessage::parse(&m.to_bytes()).expect("decodes");
            assert_eq!(back, m, "{nh}");
            let e = NexthopEntry::from_message(&back).unwrap();
            assert_eq!(e.id, nh.id);
            if let NexthopKind::Group(g) = &nh.kind {
                assert_eq!(&e.group, g);
            }
        }
    }

    #[test]
    fn bad_input_is_refused_before_sending() {
        let bad = [
            Nexthop::blackhole(0),
            Nexthop::new(1),
            Nexthop::new(1).via("192.0.2.2".parse().unwrap()).onlink(),
            Nexthop::group(1, &[]),
            Nexthop::group(1, &[(1, 1)]),
            Nexthop::group(1, &[(2, 0)]),
            Nexthop::group(1, &[(2, 257)]),
            Nexthop::group(1, &[(2, 1), (2, 3)]),
            Nexthop::new(1).via("192.0.2.2".parse().unwrap()).v6(),
        ];
        for nh in bad {
            assert!(
                matches!(nh.validate(), Err(Error::InvalidArgument { .. })),
                "{nh} accepted"
            );
        }
    }

    #[test]
    fn truncated_or_missized_payloads_are_refused() {
        let m = Nexthop::new(1)
            .via("192.0.2.2".parse().unwrap())
            .message(&no_devs)
            .unwrap()
            .to_bytes();
        for n in 0..m.len() {
            // Every strict prefix that cuts the header or an attribute.
            let r = NexthopMessage::parse(&m[..n]);
            if n < NHMSG_LEN {
                assert!(r.is_none(), "{n}");
            }
        }
        // A 3-byte gateway.
        let mut bad = m[..NHMSG_LEN].to_vec();
        bad.extend_from_slice(&[7, 0, 6, 0, 1, 2, 3, 0]);
        assert!(NexthopMessage::parse(&bad).is_none());
    }
}
