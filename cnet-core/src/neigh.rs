//! Neighbours (ARP / NDP entries): `ip neigh`.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::link::{validate_name, LinkRef, MacAddr, Resolver};
use crate::reconcile::{NameCache, ReconcileReport};
use crate::route::Family;

/// Neighbour entry state (`nud STATE`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NeighState {
    /// `permanent`: static, never expires (what the library adds by default).
    Permanent,
    /// `noarp`: valid, never resolved.
    Noarp,
    /// `reachable`: confirmed recently.
    Reachable,
    /// `stale`: usable, to be re-confirmed.
    Stale,
    /// `delay`
    Delay,
    /// `probe`
    Probe,
    /// `failed`: resolution failed.
    Failed,
    /// `incomplete`: resolution in progress.
    Incomplete,
    /// `none`
    None,
    /// Another (or combined) `NUD_*` value.
    Other(u16),
}

impl NeighState {
    /// The kernel's `NUD_*` bits.
    pub fn to_u16(self) -> u16 {
        match self {
            NeighState::Incomplete => 0x01,
            NeighState::Reachable => 0x02,
            NeighState::Stale => 0x04,
            NeighState::Delay => 0x08,
            NeighState::Probe => 0x10,
            NeighState::Failed => 0x20,
            NeighState::Noarp => 0x40,
            NeighState::Permanent => 0x80,
            NeighState::None => 0,
            NeighState::Other(v) => v,
        }
    }
    /// From the kernel's `NUD_*` bits.
    pub fn from_u16(v: u16) -> Self {
        match v {
            0x01 => NeighState::Incomplete,
            0x02 => NeighState::Reachable,
            0x04 => NeighState::Stale,
            0x08 => NeighState::Delay,
            0x10 => NeighState::Probe,
            0x20 => NeighState::Failed,
            0x40 => NeighState::Noarp,
            0x80 => NeighState::Permanent,
            0 => NeighState::None,
            v => NeighState::Other(v),
        }
    }
    pub(crate) fn to_nl(self) -> NeighbourState {
        NeighbourState::from(self.to_u16())
    }
    pub(crate) fn from_nl(s: NeighbourState) -> Self {
        Self::from_u16(u16::from(s))
    }
    /// As `ip neigh` prints it.
    pub fn as_str(&self) -> &'static str {
        match self {
            NeighState::Permanent => "PERMANENT",
            NeighState::Noarp => "NOARP",
            NeighState::Reachable => "REACHABLE",
            NeighState::Stale => "STALE",
            NeighState::Delay => "DELAY",
            NeighState::Probe => "PROBE",
            NeighState::Failed => "FAILED",
            NeighState::Incomplete => "INCOMPLETE",
            NeighState::None => "NONE",
            NeighState::Other(_) => "OTHER",
        }
    }
}

/// A neighbour entry to program: equivalent to `ip neigh add|replace|del
/// ADDR lladdr MAC dev DEV nud STATE [router]`. The state defaults to
/// `permanent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    dev: LinkRef,
    ip: IpAddr,
    mac: Option<MacAddr>,
    state: NeighState,
    router: bool,
}

impl Neighbour {
    /// `ip neigh add IP lladdr MAC dev DEV nud permanent`.
    pub fn new(dev: impl Into<LinkRef>, ip: IpAddr, mac: MacAddr) -> Self {
        Neighbour {
            dev: dev.into(),
            ip,
            mac: Some(mac),
            state: NeighState::Permanent,
            router: false,
        }
    }
    /// An entry without link-layer address (for deletes, or `nud failed`).
    pub fn without_mac(dev: impl Into<LinkRef>, ip: IpAddr) -> Self {
        Neighbour {
            dev: dev.into(),
            ip,
            mac: None,
            state: NeighState::Permanent,
            router: false,
        }
    }
    /// `nud STATE`.
    pub fn state(mut self, s: NeighState) -> Self {
        self.state = s;
        self
    }
    /// `router` (IPv6: the neighbour is a router).
    pub fn router(mut self) -> Self {
        self.router = true;
        self
    }
    /// The neighbour's address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Check every parameter.
    pub fn validate(&self) -> Result<()> {
        let ctx = || format!("neighbour {}", self.ip);
        if let LinkRef::Name(n) = &self.dev {
            validate_name(n).map_err(|e| e.with_context(ctx()))?;
        }
        if self.router && self.ip.is_ipv4() {
            return Err(Error::invalid(ctx(), "the router flag is IPv6 only"));
        }
        Ok(())
    }

    /// The `RTM_NEWNEIGH` payload (also what `RTM_DELNEIGH` carries).
    pub fn message(&self, resolve: Resolver<'_>) -> Result<NeighbourMessage> {
        let mut m = NeighbourMessage::default();
        m.header.family = Family::of(&self.ip).to_nl();
        m.header.ifindex = resolve(&self.dev)?;
        m.header.state = self.state.to_nl();
        if self.router {
            m.header.flags = NeighbourFlags::Router;
        }
        m.attributes
            .push(NeighbourAttribute::Destination(self.ip.into()));
        if let Some(mac) = self.mac {
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        }
        Ok(m)
    }
}

/// A neighbour entry as the kernel lists it (`ip neigh show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourEntry {
    /// Device index.
    pub index: u32,
    /// Neighbour address.
    pub ip: IpAddr,
    /// Link-layer address, when resolved.
    pub mac: Option<MacAddr>,
    /// State.
    pub state: NeighState,
    /// `router` flag.
    pub router: bool,
}

pub(crate) fn ip_of_neigh(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(v) => Some(IpAddr::V4(*v)),
        NeighbourAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        NeighbourAddress::Other(b) => match b.len() {
            4 => <[u8; 4]>::try_from(&b[..]).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(&b[..]).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

impl NeighbourEntry {
    /// Decode an `RTM_NEWNEIGH` message of an IP family.
    pub fn from_message(m: &NeighbourMessage) -> Option<NeighbourEntry> {
        if !matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6) {
            return None;
        }
        let mut ip = None;
        let mut mac = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(d) => ip = ip_of_neigh(d),
                NeighbourAttribute::LinkLayerAddress(l) => mac = MacAddr::from_slice(l),
                _ => {}
            }
        }
        Some(NeighbourEntry {
            index: m.header.ifindex,
            ip: ip?,
            mac,
            state: NeighState::from_nl(m.header.state),
            router: m.header.flags.contains(NeighbourFlags::Router),
        })
    }
}

/// Neighbour operations in one namespace. Obtain with
/// [`Handle::neighbours`].
#[derive(Debug)]
pub struct Neighbours<'a> {
    h: &'a Handle,
}

impl<'a> Neighbours<'a> {
    pub(crate) fn new(h: &'a Handle) -> Self {
        Self { h }
    }

    /// Build the message for `n` as [`Neighbours::add`] would send it.
    pub fn message_for(&self, n: &Neighbour) -> Result<NeighbourMessage> {
        n.validate()?;
        let names = NameCache::new(self.h);
        n.message(&|r| names.resolve(r))
    }

    fn send(&self, n: &Neighbour, verb: &str, del: bool, flags: u16) -> Result<()> {
        let ns = self.h.netns().label();
        let ctx = || format!("{verb} neighbour {} in {ns}", n.ip);
        let msg = self.message_for(n).map_err(|e| e.with_context(ctx()))?;
        let msg = if del {
            RouteNetlinkMessage::DelNeighbour(msg)
        } else {
            RouteNetlinkMessage::NewNeighbour(msg)
        };
        self.h.sock()?.ack(msg, flags, &ctx)
    }

    /// `ip neigh add IP lladdr MAC dev DEV nud STATE`. `AlreadyExists` if
    /// an entry for IP is on DEV.
    pub fn add(&self, n: impl Borrow<Neighbour>) -> Result<()> {
        self.send(n.borrow(), "add", false, NLM_F_CREATE | NLM_F_EXCL)
    }

    /// `ip neigh replace IP lladdr MAC dev DEV nud STATE`.
    pub fn replace(&self, n: impl Borrow<Neighbour>) -> Result<()> {
        self.send(n.borrow(), "replace", false, NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// `ip neigh del IP dev DEV`. `NotFound` if absent.
    pub fn delete(&self, n: impl Borrow<Neighbour>) -> Result<()> {
        self.send(n.borrow(), "delete", true, 0)
    }

    /// `ip [-4|-6] neigh show [dev DEV]`, filtered by the kernel.
    pub fn list(&self, dev: Option<&str>, family: Option<Family>) -> Result<Vec<NeighbourEntry>> {
        let idx = match dev {
            Some(d) => Some(self.h.links().index_of(d)?),
            None => None,
        };
        self.list_index(idx, family)
    }

    fn list_index(&self, idx: Option<u32>, family: Option<Family>) -> Result<Vec<NeighbourEntry>> {
        let ns = self.h.netns().label();
        let mut req = NeighbourMessage::default();
        if let Some(f) = family {
            req.header.family = f.to_nl();
        }
        if let Some(i) = idx {
            // The kernel takes the device filter as NDA_IFINDEX; a non-zero
            // ndm_ifindex in a dump request is refused under strict checking.
            req.attributes.push(NeighbourAttribute::IfIndex(i));
        }
        let msgs = self
            .h
            .sock()?
            .dump(RouteNetlinkMessage::GetNeighbour(req), &|| {
                format!("list neighbours in {ns}")
            })?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => NeighbourEntry::from_message(n),
                _ => None,
            })
            .filter(|n| idx.is_none_or(|i| n.index == i))
            .filter(|n| family.is_none_or(|f| Family::of(&n.ip) == f))
            .collect())
    }

    /// Make the permanent neighbour entries of `dev` exactly `desired`
    /// (each forced to `nud permanent` on `dev`): one filtered dump, then
    /// one pipelined batch. Entries in other states (learnt by the kernel)
    /// are left alone; a set that is already right writes nothing. Failed
    /// items land in [`ReconcileReport::errors`]; see
    /// [`ReconcileReport::into_result`].
    pub fn reconcile(&self, dev: &str, desired: &[Neighbour]) -> Result<ReconcileReport> {
        let ns = self.h.netns().label();
        let ctx = format!("reconcile neighbours of {dev} in {ns}");
        let idx = self
            .h
            .links()
            .index_of(dev)
            .map_err(|e| e.with_context(&ctx))?;
        let mut report = ReconcileReport::new(&ctx);
        // ip → (index in `desired`, entry).
        let mut want: HashMap<IpAddr, (usize, Neighbour)> = HashMap::with_capacity(desired.len());
        for (i, n) in desired.iter().enumerate() {
            let mut n = n.clone();
            n.dev = LinkRef::Index(idx);
            n.state = NeighState::Permanent;
            if let Err(e) = n.validate() {
                report.fail(Some(i), e.with_context(&ctx));
                continue;
            }
            if n.mac.is_none() {
                report.fail(
                    Some(i),
                    Error::invalid(&ctx, format!("neighbour {} has no MAC", n.ip)),
                );
                continue;
            }
            want.insert(n.ip, (i, n));
        }
        let have = self.list_index(Some(idx), None)?;
        let resolve = |_: &LinkRef| Ok(idx);
        // (0 delete | 1 replace | 2 add, index in `desired`, entry)
        let mut ops: Vec<(u8, Option<usize>, Neighbour)> = Vec::new();
        let mut seen = HashSet::new();
        for e in have.iter().filter(|e| e.state == NeighState::Permanent) {
            match want.get(&e.ip) {
                Some((i, n)) => {
                    seen.insert(e.ip);
                    if n.mac == e.mac && n.router == e.router {
                        report.unchanged += 1;
                    } else {
                        ops.push((1, Some(*i), n.clone()));
                    }
                }
                None => ops.push((0, None, Neighbour::without_mac(idx, e.ip))),
            }
        }
        for (ip, (i, n)) in &want {
            if !seen.contains(ip) {
                // Replace, not add: a learnt (reachable/stale) entry for the
                // same address is turned into ours.
                ops.push((2, Some(*i), n.clone()));
            }
        }
        if ops.is_empty() {
            return Ok(report);
        }
        ops.sort_by_key(|o| o.0);
        let mut items = Vec::with_capacity(ops.len());
        let mut sent = Vec::with_capacity(ops.len());
        for (kind, item, n) in ops {
            let m = match n.message(&resolve) {
                Ok(m) => m,
                Err(e) => {
                    report.fail(item, e);
                    continue;
                }
            };
            items.push(match kind {
                0 => (RouteNetlinkMessage::DelNeighbour(m), 0),
                _ => (
                    RouteNetlinkMessage::NewNeighbour(m),
                    NLM_F_CREATE | NLM_F_REPLACE,
                ),
            });
            sent.push((kind, item, n));
        }
        let results = self.h.sock()?.batch(items, &|k| {
            let (kind, _, n) = &sent[k];
            let verb = ["delete", "replace", "add"][*kind as usize];
            format!("{ctx}: {verb} neighbour {}", n.ip)
        });
        for ((kind, item, _), r) in sent.iter().zip(results) {
            match (kind, r) {
                (_, Err(e)) => report.fail(*item, e),
                (0, Ok(())) => report.deleted += 1,
                (1, Ok(())) => report.replaced += 1,
                (_, Ok(())) => report.added += 1,
            }
        }
        Ok(report)
    }
}
