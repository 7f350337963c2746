//! Links: `ip link`.
//!
//! One builder per link kind ([`Veth`], [`Bridge`], [`Vxlan`], [`IpIp`],
//! [`MacVlan`], [`IpVlan`], [`Vlan`], [`Dummy`], [`WireGuard`]),
//! each building its `RTM_NEWLINK` message separately from sending it (so
//! messages can be snapshot-tested without privileges), and a typed read
//! model, [`Link`] (kind-specific [`LinkDetails`], traffic counters in
//! [`LinkStats`]).

mod model;
mod spec;

pub use model::{
    BridgeInfo, IpIpInfo, IpVlanInfo, IpVlanMode, Link, LinkDetails, LinkKind, LinkStats,
    MacVlanInfo, MacVlanMode, OperState, VlanInfo, VlanProtocol, VxlanInfo,
};
pub use spec::{
    Bridge, Dummy, IpIp, IpVlan, LinkRef, LinkSpec, MacVlan, Resolver, Veth, Vlan, Vxlan,
    WireGuard, MAX_VLAN_ID,
};

use std::fmt;
use std::str::FromStr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::netns::NetNs;

/// Largest link name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_NAME_LEN: usize = 15;

/// Check a link name the way the kernel's `dev_valid_name()` does, so bad
/// names fail here with a reason instead of as a bare EINVAL.
pub fn validate_name(name: &str) -> Result<()> {
    let ctx = || format!("link name {name:?}");
    if name.is_empty() {
        return Err(Error::invalid(ctx(), "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            ctx(),
            format!(
                "{} bytes, longer than the kernel's limit of {MAX_NAME_LEN}",
                name.len()
            ),
        ));
    }
    if name == "." || name == ".." {
        return Err(Error::invalid(ctx(), "must not be '.' or '..'"));
    }
    if name.contains('/') || name.contains(':') {
        return Err(Error::invalid(ctx(), "must not contain '/' or ':'"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(ctx(), "must not contain whitespace"));
    }
    Ok(())
}

/// Smallest MTU we accept (the IPv4 minimum).
pub const MIN_MTU: u32 = 68;
/// Largest MTU we accept.
pub const MAX_MTU: u32 = 65535;

/// Check an MTU is within [`MIN_MTU`]..=[`MAX_MTU`].
pub fn validate_mtu(what: &str, mtu: u32) -> Result<()> {
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        return Err(Error::invalid(
            format!("MTU of {what}"),
            format!("{mtu} is out of range {MIN_MTU}..={MAX_MTU}"),
        ));
    }
    Ok(())
}

/// An Ethernet MAC address. Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Whether this is a unicast, non-zero address usable for a device.
    pub fn is_valid_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }

    pub(crate) fn from_slice(b: &[u8]) -> Option<MacAddr> {
        <[u8; 6]>::try_from(b).ok().map(MacAddr)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Serialised as its text form (`"02:42:ac:11:00:02"`), as leases publish it.
impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl FromStr for MacAddr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid(format!("MAC address {s:?}"), why.to_string());
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad("expected six hex octets like 02:42:ac:11:00:02"));
        }
        let mut out = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.is_empty() || p.len() > 2 {
                return Err(bad("each octet is one or two hex digits"));
            }
            out[i] = u8::from_str_radix(p, 16).map_err(|_| bad("not hexadecimal"))?;
        }
        Ok(MacAddr(out))
    }
}

pub(crate) fn validate_mac(what: &str, mac: &MacAddr) -> Result<()> {
    if !mac.is_valid_unicast() {
        return Err(Error::invalid(
            format!("MAC address of {what}"),
            format!("{mac} is multicast or all-zero; a device needs a unicast address"),
        ));
    }
    Ok(())
}

/// Link operations in one namespace. Obtain with [`Handle::links`].
#[derive(Debug)]
pub struct Links<'a> {
    h: &'a Handle,
}

fn named(name: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m
}

/// The `RTM_SETLINK` payload of `ip link set dev #INDEX [address MAC] up`.
pub(crate) fn up_message(index: u32, mac: Option<MacAddr>) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    if let Some(mac) = mac {
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    m
}

impl<'a> Links<'a> {
    pub(crate) fn new(h: &'a Handle) -> Self {
        Self { h }
    }

    /// All links, like `ip link show`.
    pub fn list(&self) -> Result<Vec<Link>> {
        let ns = self.h.netns().label();
        let msgs = self.h.sock()?.dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            &|| format!("list links in {ns}"),
        )?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(&l)),
                _ => None,
            })
            .collect())
    }

    fn get_msg(&self, msg: LinkMessage, what: &str) -> Result<Link> {
        let ns = self.h.netns().label();
        let ctx = || format!("get link {what} in {ns}");
        let replies = self
            .h
            .sock()?
            .request(RouteNetlinkMessage::GetLink(msg), 0, &ctx)?;
        replies
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(&l)),
                _ => None,
            })
            .ok_or_else(|| Error::NotFound {
                context: ctx(),
                kernel: None,
            })
    }

    /// One link by name, like `ip link show NAME`. `NotFound` if missing.
    pub fn get(&self, name: &str) -> Result<Link> {
        validate_name(name)?;
        self.get_msg(named(name), name)
    }

    /// One link by index.
    pub fn get_by_index(&self, index: u32) -> Result<Link> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.get_msg(m, &format!("#{index}"))
    }

    /// `Some(link)` or `None` when there is no such link.
    pub fn find(&self, name: &str) -> Result<Option<Link>> {
        match self.get(name) {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Index of a link by name.
    pub fn index_of(&self, name: &str) -> Result<u32> {
        Ok(self.get(name)?.index)
    }

    pub(crate) fn resolve(&self, r: &LinkRef) -> Result<u32> {
        match r {
            LinkRef::Index(i) => Ok(*i),
            LinkRef::Name(n) => self.index_of(n),
        }
    }

    /// Build the `RTM_NEWLINK` message for `spec` as [`Links::add`] would
    /// send it, resolving device names in this namespace.
    pub fn message_for(&self, spec: &dyn LinkSpec) -> Result<LinkMessage> {
        spec.validate()?;
        spec.message(&|r| self.resolve(r))
    }

    /// Create a link, like `ip link add …`. Fails with `AlreadyExists` if
    /// the name is taken, `Unsupported` (with the kernel's text) if the
    /// kernel lacks the kind.
    pub fn add(&self, spec: impl LinkSpec) -> Result<()> {
        self.add_dyn(&spec)
    }

    fn add_dyn(&self, spec: &dyn LinkSpec) -> Result<()> {
        let ns = self.h.netns().label();
        let ctx = || {
            format!(
                "create {} link {} in {ns}",
                spec.kind().as_str(),
                spec.name()
            )
        };
        let msg = self.message_for(spec).map_err(|e| e.with_context(ctx()))?;
        let r = self.h.sock()?.ack(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            &ctx,
        );
        let r = match r {
            Err(e @ Error::AlreadyExists { .. }) => Err(self.which_exists(spec, e)),
            Err(e @ Error::Unsupported { .. }) => Err(self.bad_master(spec.master(), e)),
            r => r,
        };
        if let Err(Error::AlreadyExists { .. }) = &r {
            if spec.kind() == LinkKind::IpIp && matches!(self.find(spec.name()), Ok(None)) {
                // The name is free: the kernel keys ipip tunnels by their
                // endpoints, and one with these (e.g. any/any: the fallback
                // tunl0) exists already.
                return Err(Error::Conflict {
                    context: ctx(),
                    reason: "an ipip tunnel with the same local/remote endpoints exists \
                             (any/any is the kernel's fallback tunl0): use it, or set local/remote"
                        .into(),
                });
            }
        }
        r?;
        if let Some((ns, peer)) = spec.peer_to_bring_up() {
            let r = match ns {
                Some(ns) => Handle::at(&ns).and_then(|h| h.links().set_up(&peer)),
                None => self.set_up(&peer),
            };
            if let Err(e) = r {
                // Nothing half-made: deleting one end removes both.
                let _ = self.delete(spec.name());
                return Err(e.with_context(ctx()));
            }
        }
        Ok(())
    }

    /// Create a link and read it back in the same request: `ip link add …`
    /// with `NLM_F_ECHO`, which recent kernels honour for links by sending
    /// the new link (its index, and a veth's peer index as [`Link::link`])
    /// before the ACK, sparing a request; older kernels ignore the flag,
    /// and the link is then asked for by name (also when the echo of a
    /// kind that creates a peer does not name it).
    ///
    /// Unlike [`Links::add`], a refusal comes back as the kernel's bare
    /// error, for the caller to explain (it knows what the names mean),
    /// and a veth peer is not brought up. `ctx` describes the request in
    /// errors.
    pub(crate) fn add_echo(&self, spec: &dyn LinkSpec, ctx: &dyn Fn() -> String) -> Result<Link> {
        let msg = self.message_for(spec).map_err(|e| e.with_context(ctx()))?;
        let replies = self.h.sock()?.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO,
            ctx,
        )?;
        let has_peer = spec.peer().is_some();
        let echoed = replies.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => {
                let l = Link::from_message(l);
                (l.name == spec.name()).then_some(l)
            }
            _ => None,
        });
        match echoed {
            Some(l) if l.link.is_some() || !has_peer => Ok(l),
            // An older kernel: ask.
            _ => self.get(spec.name()).map_err(|e| e.with_context(ctx())),
        }
    }

    /// An `AlreadyExists` for a request that creates two devices (a veth
    /// pair) says which name is taken: the kernel answers EEXIST alike for
    /// both. When this end's name is free and the peer's is taken (in the
    /// peer's namespace), the context names the peer and its namespace.
    fn which_exists(&self, spec: &dyn LinkSpec, e: Error) -> Error {
        let Some((peer_ns, peer)) = spec.peer() else {
            return e;
        };
        if !matches!(self.find(spec.name()), Ok(None)) {
            return e; // this end's name is taken (or we cannot tell)
        }
        let (peer_taken, where_) = match peer_ns {
            Some(ns) => (
                Handle::at(ns).and_then(|h| h.links().find(peer)),
                ns.label(),
            ),
            None => (self.find(peer), self.h.netns().label()),
        };
        match peer_taken {
            Ok(Some(_)) => e.with_context(format!(
                "the peer's name {peer} is taken in namespace {where_} ({} is free)",
                spec.name()
            )),
            _ => e,
        }
    }

    /// The kernel answers EOPNOTSUPP, which reads as "not supported by this
    /// kernel", when the master is a device that cannot take ports (`lo`, a
    /// veth): say that instead, as an invalid argument naming its kind.
    fn bad_master(&self, master: Option<&LinkRef>, e: Error) -> Error {
        let Some(m) = master else { return e };
        let link = match m {
            LinkRef::Name(n) => self.find(n),
            LinkRef::Index(i) => self.get_by_index(*i).map(Some),
        };
        let Ok(Some(link)) = link else { return e };
        if matches!(&link.kind, LinkKind::Bridge)
            || matches!(&link.kind, LinkKind::Other(k) if ["bond", "team", "vrf", "openvswitch"].contains(&k.as_str()))
        {
            return e; // a real master: the refusal is about something else
        }
        let kind = match &link.kind {
            LinkKind::Device if link.name == "lo" => "the loopback device".to_string(),
            LinkKind::Device => "a device without a kind".to_string(),
            k => format!("a {} device", k.as_str()),
        };
        Error::invalid(
            e.context(),
            format!(
                "master {} is {kind}, not a bridge: only a bridge (or bond, vrf) takes ports \
                 (kernel: {})",
                link.name,
                e.kernel_message().map(str::to_string).unwrap_or_else(|| {
                    std::io::Error::from_raw_os_error(e.errno().unwrap_or(libc::EOPNOTSUPP))
                        .to_string()
                })
            ),
        )
    }

    /// Create the link if it is missing; if a link of that name exists,
    /// check it is compatible (same kind and every parameter the spec set)
    /// and return it, or fail with `Mismatch` listing each difference.
    pub fn ensure(&self, spec: impl LinkSpec) -> Result<Link> {
        spec.validate()?;
        let existing = self.find(spec.name())?;
        let link = match existing {
            Some(l) => l,
            None => match self.add_dyn(&spec) {
                Ok(()) => self.get(spec.name())?,
                // Lost a race with another creator: compare with theirs.
                Err(Error::AlreadyExists { .. }) => self.get(spec.name())?,
                Err(e) => return Err(e),
            },
        };
        let diffs = spec.differences(&link, &|r| self.resolve(r));
        if diffs.is_empty() {
            Ok(link)
        } else {
            Err(Error::Mismatch {
                context: format!(
                    "ensure {} link {} in {}",
                    spec.kind().as_str(),
                    spec.name(),
                    self.h.netns().label()
                ),
                differences: diffs,
            })
        }
    }

    /// Delete a link, like `ip link del NAME`. `NotFound` if missing.
    pub fn delete(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let ns = self.h.netns().label();
        self.h
            .sock()?
            .ack(RouteNetlinkMessage::DelLink(named(name)), 0, &|| {
                format!("delete link {name} in {ns}")
            })
    }

    /// Delete a link if it exists; a missing link is success. Returns
    /// whether something was deleted.
    pub fn delete_if_exists(&self, name: &str) -> Result<bool> {
        match self.delete(name) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn set(&self, name: &str, what: &str, f: impl FnOnce(&mut LinkMessage)) -> Result<()> {
        validate_name(name)?;
        let ns = self.h.netns().label();
        let mut m = named(name);
        f(&mut m);
        self.h.sock()?.ack(RouteNetlinkMessage::SetLink(m), 0, &|| {
            format!("{what} of link {name} in {ns}")
        })
    }

    fn set_flag(&self, name: &str, up: bool) -> Result<()> {
        self.set(name, if up { "set up" } else { "set down" }, |m| {
            m.header.change_mask = LinkFlags::Up;
            if up {
                m.header.flags = LinkFlags::Up;
            }
        })
    }

    /// `ip link set NAME up`.
    pub fn set_up(&self, name: &str) -> Result<()> {
        self.set_flag(name, true)
    }

    /// `ip link set NAME down`.
    pub fn set_down(&self, name: &str) -> Result<()> {
        self.set_flag(name, false)
    }

    /// `ip link set NAME mtu MTU`.
    pub fn set_mtu(&self, name: &str, mtu: u32) -> Result<()> {
        validate_mtu(name, mtu)?;
        self.set(name, "set MTU", |m| {
            m.attributes.push(LinkAttribute::Mtu(mtu))
        })
    }

    /// `ip link set NAME address MAC`.
    pub fn set_mac(&self, name: &str, mac: MacAddr) -> Result<()> {
        validate_mac(name, &mac)?;
        self.set(name, "set MAC address", |m| {
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()))
        })
    }

    /// `ip link set NAME master MASTER`.
    pub fn set_master(&self, name: &str, master: &str) -> Result<()> {
        validate_name(master)?;
        let idx = self
            .index_of(master)
            .map_err(|e| e.with_context(format!("set master of {name}")))?;
        self.set(name, &format!("set master {master}"), |m| {
            m.attributes.push(LinkAttribute::Controller(idx))
        })
        .map_err(|e| match e {
            Error::Unsupported { .. } => self.bad_master(Some(&LinkRef::Index(idx)), e),
            e => e,
        })
    }

    /// Make each of `ports` (by index) a port of `master` (by index) and
    /// set it up, pipelined in one batch: equivalent to `ip link set PORT
    /// master MASTER up` for each. One result per port, in order; a port
    /// deleted meanwhile answers `NotFound`.
    pub fn set_master_up_each(&self, ports: &[u32], master: u32) -> Result<Vec<Result<()>>> {
        let ns = self.h.netns().label();
        let items = ports
            .iter()
            .map(|&index| {
                let mut m = up_message(index, None);
                m.attributes.push(LinkAttribute::Controller(master));
                (RouteNetlinkMessage::SetLink(m), 0)
            })
            .collect();
        Ok(self.h.sock()?.batch(items, &|i| {
            format!("set link #{} master #{master} up in {ns}", ports[i])
        }))
    }

    /// `ip link set NAME nomaster`.
    pub fn set_nomaster(&self, name: &str) -> Result<()> {
        self.set(name, "set nomaster", |m| {
            m.attributes.push(LinkAttribute::Controller(0))
        })
    }

    /// `ip link set NAME netns NS`: move the link to another namespace.
    pub fn set_netns(&self, name: &str, ns: &NetNs) -> Result<()> {
        use std::os::fd::AsRawFd;
        let target = ns.label();
        self.set(name, &format!("move to namespace {target}"), |m| {
            m.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()))
        })
    }

    /// `ip link set NAME name NEW`.
    pub fn rename(&self, name: &str, new_name: &str) -> Result<()> {
        validate_name(name)?;
        validate_name(new_name)?;
        let idx = self
            .index_of(name)
            .map_err(|e| e.with_context(format!("rename {name} to {new_name}")))?;
        let ns = self.h.netns().label();
        let mut m = named(new_name);
        m.header.index = idx;
        self.h.sock()?.ack(RouteNetlinkMessage::SetLink(m), 0, &|| {
            format!("rename link {name} to {new_name} in {ns}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("eth0").is_ok());
        assert!(validate_name("a23456789012345").is_ok());
        for bad in [
            "",
            "a234567890123456",
            "a/b",
            "a b",
            "a\tb",
            ".",
            "..",
            "a:b",
        ] {
            let e = validate_name(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { .. }), "{bad:?}: {e}");
        }
    }

    #[test]
    fn macs() {
        let m: MacAddr = "02:42:AC:11:00:02".parse().unwrap();
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "zz:42:ac:11:00:02",
            "002:42:ac:11:00:0",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(validate_mac("x", &"01:00:5e:00:00:01".parse().unwrap()).is_err());
        assert!(validate_mac("x", &"00:00:00:00:00:00".parse().unwrap()).is_err());
    }

    #[test]
    fn up_message_sets_up_by_index_with_an_optional_mac() {
        let mac: MacAddr = "0a:58:0a:f4:01:02".parse().unwrap();
        let m = up_message(7, Some(mac));
        assert_eq!(m.header.index, 7);
        assert_eq!(m.header.flags, LinkFlags::Up);
        assert_eq!(m.header.change_mask, LinkFlags::Up);
        assert_eq!(m.attributes, vec![LinkAttribute::Address(mac.0.to_vec())]);
        assert!(up_message(7, None).attributes.is_empty());
    }

    #[test]
    fn mtus() {
        assert!(validate_mtu("x", 1500).is_ok());
        assert!(validate_mtu("x", 67).is_err());
        assert!(validate_mtu("x", 65536).is_err());
    }
}
