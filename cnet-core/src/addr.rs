//! Addresses: `ip addr`.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::link::validate_name;

/// Address scope (`scope global|link|host|…`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `global` (universe)
    Global,
    /// `site`
    Site,
    /// `link`
    Link,
    /// `host`
    Host,
    /// `nowhere`
    Nowhere,
    /// Another numeric value.
    Other(u8),
}

impl Scope {
    fn to_nl(self) -> AddressScope {
        match self {
            Scope::Global => AddressScope::Universe,
            Scope::Site => AddressScope::Site,
            Scope::Link => AddressScope::Link,
            Scope::Host => AddressScope::Host,
            Scope::Nowhere => AddressScope::Nowhere,
            Scope::Other(v) => AddressScope::Other(v),
        }
    }
    fn from_nl(s: AddressScope) -> Scope {
        match s {
            AddressScope::Universe => Scope::Global,
            AddressScope::Site => Scope::Site,
            AddressScope::Link => Scope::Link,
            AddressScope::Host => Scope::Host,
            AddressScope::Nowhere => Scope::Nowhere,
            AddressScope::Other(v) => Scope::Other(v),
            _ => Scope::Other(255),
        }
    }
    /// The kernel's number (`RT_SCOPE_*`).
    pub fn to_u8(self) -> u8 {
        match self {
            Scope::Global => 0,
            Scope::Site => 200,
            Scope::Link => 253,
            Scope::Host => 254,
            Scope::Nowhere => 255,
            Scope::Other(v) => v,
        }
    }
    /// From the kernel's number (`RT_SCOPE_*`).
    pub fn from_u8(v: u8) -> Scope {
        match v {
            0 => Scope::Global,
            200 => Scope::Site,
            253 => Scope::Link,
            254 => Scope::Host,
            255 => Scope::Nowhere,
            v => Scope::Other(v),
        }
    }
    /// As `ip` prints it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Site => "site",
            Scope::Link => "link",
            Scope::Host => "host",
            Scope::Nowhere => "nowhere",
            Scope::Other(_) => "other",
        }
    }
}

/// An address to add: equivalent to `ip addr add LOCAL/PLEN [peer PEER]
/// [broadcast BRD] [label LABEL] [scope SCOPE] dev DEV`.
#[derive(Debug, Clone)]
pub struct AddressSpec {
    dev: String,
    local: IpNet,
    peer: Option<IpAddr>,
    broadcast: Option<Ipv4Addr>,
    label: Option<String>,
    scope: Option<Scope>,
    nodad: bool,
}

impl AddressSpec {
    /// `local` (with its prefix length) on `dev`.
    pub fn new(dev: &str, local: IpNet) -> Self {
        AddressSpec {
            dev: dev.to_string(),
            local,
            peer: None,
            broadcast: None,
            label: None,
            scope: None,
            nodad: false,
        }
    }
    /// Point-to-point peer address (`peer`).
    pub fn peer(mut self, p: IpAddr) -> Self {
        self.peer = Some(p);
        self
    }
    /// IPv4 broadcast (`broadcast`).
    pub fn broadcast(mut self, b: Ipv4Addr) -> Self {
        self.broadcast = Some(b);
        self
    }
    /// IPv4 broadcast computed from the prefix (`broadcast +`).
    pub fn broadcast_auto(mut self) -> Self {
        if let IpNet::V4(n) = self.local {
            if n.prefix_len() < 31 {
                self.broadcast = Some(n.broadcast());
            }
        }
        self
    }
    /// Label (`label`; must be the device name or start with `DEV:`).
    pub fn label(mut self, l: &str) -> Self {
        self.label = Some(l.to_string());
        self
    }
    /// Scope.
    pub fn scope(mut self, s: Scope) -> Self {
        self.scope = Some(s);
        self
    }
    /// Skip IPv6 duplicate address detection (`nodad`).
    pub fn nodad(mut self) -> Self {
        self.nodad = true;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        validate_name(&self.dev)?;
        let ctx = || format!("address {} on {}", self.local, self.dev);
        if let Some(p) = self.peer {
            if p.is_ipv4() != self.local.addr().is_ipv4() {
                return Err(Error::invalid(
                    ctx(),
                    format!("peer {p} is of another family"),
                ));
            }
        }
        if self.broadcast.is_some() && !self.local.addr().is_ipv4() {
            return Err(Error::invalid(ctx(), "broadcast is IPv4 only"));
        }
        if let Some(l) = &self.label {
            if !self.local.addr().is_ipv4() {
                return Err(Error::invalid(ctx(), "labels are IPv4 only"));
            }
            if l.len() > 15 || !(l == &self.dev || l.starts_with(&format!("{}:", self.dev))) {
                return Err(Error::invalid(
                    ctx(),
                    format!("label {l:?} must be the device name or start with \"{}:\", at most 15 bytes", self.dev),
                ));
            }
        }
        Ok(())
    }

    /// The `RTM_NEWADDR` payload for device index `index`.
    pub fn message(&self, index: u32) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = match self.local {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        m.header.prefix_len = self.local.prefix_len();
        m.header.index = index;
        m.header.scope = self.scope.unwrap_or(Scope::Global).to_nl();
        let local = self.local.addr();
        m.attributes.push(AddressAttribute::Local(local));
        m.attributes
            .push(AddressAttribute::Address(self.peer.unwrap_or(local)));
        if let Some(b) = self.broadcast {
            m.attributes.push(AddressAttribute::Broadcast(b));
        }
        if let Some(l) = &self.label {
            m.attributes.push(AddressAttribute::Label(l.clone()));
        }
        if self.nodad {
            use netlink_packet_route::address::AddressFlags;
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        m
    }
}

/// An address as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Device index.
    pub index: u32,
    /// Local address with prefix length (`ip`'s "local/prefixlen").
    pub local: IpNet,
    /// Peer address, when it differs from `local`.
    pub peer: Option<IpAddr>,
    /// IPv4 broadcast.
    pub broadcast: Option<Ipv4Addr>,
    /// Label (IPv4).
    pub label: Option<String>,
    /// Scope.
    pub scope: Scope,
}

impl Address {
    pub(crate) fn from_message(m: &AddressMessage) -> Option<Address> {
        let mut local = None;
        let mut address = None;
        let mut broadcast = None;
        let mut label = None;
        for a in &m.attributes {
            match a {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                AddressAttribute::Broadcast(b) => broadcast = Some(*b),
                AddressAttribute::Label(l) => label = Some(l.clone()),
                _ => {}
            }
        }
        let l = local.or(address)?;
        let peer = match (local, address) {
            (Some(l), Some(a)) if l != a => Some(a),
            _ => None,
        };
        Some(Address {
            index: m.header.index,
            local: IpNet::new(l, m.header.prefix_len).ok()?,
            peer,
            broadcast,
            label,
            scope: Scope::from_nl(m.header.scope),
        })
    }
}

/// Address operations in one namespace. Obtain with [`Handle::addrs`].
#[derive(Debug)]
pub struct Addrs<'a> {
    h: &'a Handle,
}

impl<'a> Addrs<'a> {
    pub(crate) fn new(h: &'a Handle) -> Self {
        Self { h }
    }

    fn send(
        &self,
        spec: &AddressSpec,
        verb: &str,
        msg: impl FnOnce(AddressMessage) -> RouteNetlinkMessage,
        flags: u16,
    ) -> Result<()> {
        let ns = self.h.netns().label();
        let ctx = || format!("{verb} address {} on {} in {ns}", spec.local, spec.dev);
        spec.validate().map_err(|e| e.with_context(ctx()))?;
        let idx = self
            .h
            .links()
            .index_of(&spec.dev)
            .map_err(|e| e.with_context(ctx()))?;
        self.h.sock()?.ack(msg(spec.message(idx)), flags, &ctx)
    }

    /// `ip addr add ADDR/PLEN dev DEV`. `AlreadyExists` if present.
    pub fn add(&self, dev: &str, addr: IpNet) -> Result<()> {
        self.add_spec(&AddressSpec::new(dev, addr))
    }

    /// `ip addr add` with peer, broadcast, label, scope.
    pub fn add_spec(&self, spec: &AddressSpec) -> Result<()> {
        self.send(
            spec,
            "add",
            RouteNetlinkMessage::NewAddress,
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// `ip addr replace ADDR/PLEN dev DEV`.
    pub fn replace(&self, dev: &str, addr: IpNet) -> Result<()> {
        self.replace_spec(&AddressSpec::new(dev, addr))
    }

    /// `ip addr replace` with options.
    pub fn replace_spec(&self, spec: &AddressSpec) -> Result<()> {
        self.send(
            spec,
            "replace",
            RouteNetlinkMessage::NewAddress,
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// `ip addr del ADDR/PLEN dev DEV`. `NotFound` if absent.
    pub fn delete(&self, dev: &str, addr: IpNet) -> Result<()> {
        self.send(
            &AddressSpec::new(dev, addr),
            "delete",
            RouteNetlinkMessage::DelAddress,
            0,
        )
    }

    /// Delete if present; returns whether it was.
    pub fn delete_if_exists(&self, dev: &str, addr: IpNet) -> Result<bool> {
        match self.delete(dev, addr) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `ip addr show [dev DEV]`, both families.
    pub fn list(&self, dev: Option<&str>) -> Result<Vec<Address>> {
        let idx = match dev {
            Some(d) => Some(self.h.links().index_of(d)?),
            None => None,
        };
        self.list_at(idx, dev)
    }

    /// The addresses of the link with index `index` (one request fewer
    /// than [`Addrs::list`] by name when the caller knows the index).
    pub fn list_index(&self, index: u32) -> Result<Vec<Address>> {
        self.list_at(Some(index), None)
    }

    fn list_at(&self, idx: Option<u32>, dev: Option<&str>) -> Result<Vec<Address>> {
        let ns = self.h.netns().label();
        let mut req = AddressMessage::default();
        if let Some(i) = idx {
            // Strict checking lets the kernel filter by index.
            req.header.index = i;
        }
        let msgs = self
            .h
            .sock()?
            .dump(RouteNetlinkMessage::GetAddress(req), &|| {
                let of = match (dev, idx) {
                    (Some(d), _) => format!(" of {d}"),
                    (None, Some(i)) => format!(" of link #{i}"),
                    (None, None) => String::new(),
                };
                format!("list addresses{of} in {ns}")
            })?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => Address::from_message(a),
                _ => None,
            })
            .filter(|a| idx.is_none_or(|i| a.index == i))
            .collect())
    }
}
