//! Bridge forwarding database: `bridge fdb`.
//!
//! What a VXLAN overlay needs per peer: "MAC X lives behind VTEP D"
//! (`bridge fdb append MAC dev vxlan0 dst D [vni N] [port P] self`), and the
//! all-zero MAC entry that floods unknown destinations to each peer.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::link::{validate_name, LinkRef, MacAddr, Resolver};
use crate::neigh::{ip_of_neigh, NeighState};
use crate::reconcile::{NameCache, ReconcileReport};

/// An FDB entry to program: equivalent to `bridge fdb add|append|replace|del
/// MAC dev DEV [dst IP] [vni VNI] [port PORT] [vlan VID] [self] [master]
/// [permanent|static]`. Defaults: `self`, `permanent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    mac: MacAddr,
    dev: LinkRef,
    dst: Option<IpAddr>,
    vni: Option<u32>,
    port: Option<u16>,
    vlan: Option<u16>,
    on_self: bool,
    on_master: bool,
    state: NeighState,
}

impl FdbEntry {
    /// `bridge fdb … MAC dev DEV self permanent`.
    pub fn new(mac: MacAddr, dev: impl Into<LinkRef>) -> Self {
        FdbEntry {
            mac,
            dev: dev.into(),
            dst: None,
            vni: None,
            port: None,
            vlan: None,
            on_self: false,
            on_master: false,
            state: NeighState::Permanent,
        }
    }
    /// `dst IP`: the remote VTEP (VXLAN devices).
    pub fn dst(mut self, ip: IpAddr) -> Self {
        self.dst = Some(ip);
        self
    }
    /// `vni VNI` (24 bits).
    pub fn vni(mut self, vni: u32) -> Self {
        self.vni = Some(vni);
        self
    }
    /// `port PORT`: remote UDP port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
    /// `vlan VID` (bridge ports).
    pub fn vlan(mut self, vid: u16) -> Self {
        self.vlan = Some(vid);
        self
    }
    /// `self`: program the device's own table (the default when neither
    /// `self` nor `master` is given).
    pub fn on_self(mut self) -> Self {
        self.on_self = true;
        self
    }
    /// `master`: program the bridge the device is a port of.
    pub fn on_master(mut self) -> Self {
        self.on_master = true;
        self
    }
    /// `static` (NOARP) instead of `permanent`.
    pub fn static_entry(mut self) -> Self {
        self.state = NeighState::Noarp;
        self
    }
    /// The MAC address.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// Check every parameter.
    pub fn validate(&self) -> Result<()> {
        let ctx = || format!("fdb entry {}", self.mac);
        if let LinkRef::Name(n) = &self.dev {
            validate_name(n).map_err(|e| e.with_context(ctx()))?;
        }
        if let Some(v) = self.vni {
            if v >= 1 << 24 {
                return Err(Error::invalid(ctx(), format!("VNI {v} exceeds 24 bits")));
            }
        }
        if let Some(v) = self.vlan {
            if v == 0 || v >= 4095 {
                return Err(Error::invalid(
                    ctx(),
                    format!("VLAN {v} is not in 1..=4094"),
                ));
            }
        }
        Ok(())
    }

    /// The `RTM_NEWNEIGH` (family `AF_BRIDGE`) payload; `RTM_DELNEIGH`
    /// carries the same.
    pub fn message(&self, resolve: Resolver<'_>) -> Result<NeighbourMessage> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = resolve(&self.dev)?;
        m.header.state = self.state.to_nl();
        let mut flags = NeighbourFlags::empty();
        if self.on_self || !self.on_master {
            flags |= NeighbourFlags::Own;
        }
        if self.on_master {
            flags |= NeighbourFlags::Controller;
        }
        m.header.flags = flags;
        let a = &mut m.attributes;
        a.push(NeighbourAttribute::LinkLayerAddress(self.mac.0.to_vec()));
        if let Some(d) = self.dst {
            a.push(NeighbourAttribute::Destination(d.into()));
        }
        if let Some(v) = self.vlan {
            a.push(NeighbourAttribute::Vlan(v));
        }
        if let Some(p) = self.port {
            a.push(NeighbourAttribute::Port(p));
        }
        if let Some(v) = self.vni {
            a.push(NeighbourAttribute::Vni(v));
        }
        Ok(m)
    }

    fn describe(&self) -> String {
        match self.dst {
            Some(d) => format!("fdb entry {} dst {d}", self.mac),
            None => format!("fdb entry {}", self.mac),
        }
    }
}

/// An FDB entry as the kernel lists it (`bridge fdb show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbRecord {
    /// Device (port) index.
    pub index: u32,
    /// MAC address.
    pub mac: MacAddr,
    /// Remote VTEP.
    pub dst: Option<IpAddr>,
    /// VNI, when it differs from the VXLAN device's own (the kernel omits
    /// it otherwise).
    pub vni: Option<u32>,
    /// Remote UDP port, when it differs from the device's own.
    pub port: Option<u16>,
    /// VLAN.
    pub vlan: Option<u16>,
    /// Bridge (master) index.
    pub master: Option<u32>,
    /// `self` flag: in the device's own table.
    pub on_self: bool,
    /// `master` flag: in the bridge's table.
    pub on_master: bool,
    /// State (`permanent`, `static` = noarp, reachable = learnt).
    pub state: NeighState,
}

impl FdbRecord {
    /// Decode an `RTM_NEWNEIGH` message of family `AF_BRIDGE`.
    pub fn from_message(m: &NeighbourMessage) -> Option<FdbRecord> {
        if m.header.family != AddressFamily::Bridge {
            return None;
        }
        let mut r = FdbRecord {
            index: m.header.ifindex,
            mac: MacAddr([0; 6]),
            dst: None,
            vni: None,
            port: None,
            vlan: None,
            master: None,
            on_self: m.header.flags.contains(NeighbourFlags::Own),
            on_master: m.header.flags.contains(NeighbourFlags::Controller),
            state: NeighState::from_nl(m.header.state),
        };
        let mut mac = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::LinkLayerAddress(l) => mac = MacAddr::from_slice(l),
                NeighbourAttribute::Destination(d) => r.dst = ip_of_neigh(d),
                NeighbourAttribute::Vni(v) => r.vni = Some(*v),
                NeighbourAttribute::Port(p) => r.port = Some(*p),
                NeighbourAttribute::Vlan(v) => r.vlan = Some(*v),
                NeighbourAttribute::Controller(i) => r.master = Some(*i),
                _ => {}
            }
        }
        r.mac = mac?;
        Some(r)
    }
}

/// FDB operations in one namespace. Obtain with [`Handle::fdb`].
#[derive(Debug)]
pub struct Fdb<'a> {
    h: &'a Handle,
}

impl<'a> Fdb<'a> {
    pub(crate) fn new(h: &'a Handle) -> Self {
        Self { h }
    }

    /// Build the message for `e` as [`Fdb::append`] would send it.
    pub fn message_for(&self, e: &FdbEntry) -> Result<NeighbourMessage> {
        e.validate()?;
        let names = NameCache::new(self.h);
        e.message(&|r| names.resolve(r))
    }

    fn send(&self, e: &FdbEntry, verb: &str, del: bool, flags: u16) -> Result<()> {
        let ns = self.h.netns().label();
        let ctx = || format!("{verb} {} in {ns}", e.describe());
        let msg = self.message_for(e).map_err(|x| x.with_context(ctx()))?;
        let msg = if del {
            RouteNetlinkMessage::DelNeighbour(msg)
        } else {
            RouteNetlinkMessage::NewNeighbour(msg)
        };
        self.h.sock()?.ack(msg, flags, &ctx)
    }

    /// `bridge fdb append MAC dev DEV dst IP …`: add another remote for the
    /// MAC (VXLAN keeps several, e.g. the all-zero flooding entry).
    pub fn append(&self, e: impl Borrow<FdbEntry>) -> Result<()> {
        self.send(e.borrow(), "append", false, NLM_F_CREATE | NLM_F_APPEND)
    }

    /// `bridge fdb add MAC dev DEV …`. `AlreadyExists` if the MAC is there.
    pub fn add(&self, e: impl Borrow<FdbEntry>) -> Result<()> {
        self.send(e.borrow(), "add", false, NLM_F_CREATE | NLM_F_EXCL)
    }

    /// `bridge fdb replace MAC dev DEV …`.
    pub fn replace(&self, e: impl Borrow<FdbEntry>) -> Result<()> {
        self.send(e.borrow(), "replace", false, NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// `bridge fdb del MAC dev DEV [dst IP] …`. `NotFound` if absent.
    pub fn delete(&self, e: impl Borrow<FdbEntry>) -> Result<()> {
        self.send(e.borrow(), "delete", true, 0)
    }

    /// `bridge fdb show dev DEV` (the kernel filters by port).
    pub fn list(&self, dev: &str) -> Result<Vec<FdbRecord>> {
        let idx = self.h.links().index_of(dev)?;
        self.list_index(idx)
    }

    /// `bridge fdb show br BRIDGE`: the bridge's forwarding table, the
    /// entries of every port (and the bridge's own), in one dump filtered by
    /// the kernel.
    pub fn list_bridge(&self, bridge: &str) -> Result<Vec<FdbRecord>> {
        let br = self.h.links().index_of(bridge)?;
        let mut req = NeighbourMessage::default();
        req.attributes.push(NeighbourAttribute::Controller(br));
        self.dump(req, &format!("list fdb of bridge {bridge}"), |r| {
            r.master == Some(br) || r.index == br
        })
    }

    fn list_index(&self, idx: u32) -> Result<Vec<FdbRecord>> {
        let mut req = NeighbourMessage::default();
        req.header.ifindex = idx;
        self.dump(req, &format!("list fdb of #{idx}"), |r| r.index == idx)
    }

    fn dump(
        &self,
        mut req: NeighbourMessage,
        what: &str,
        keep: impl Fn(&FdbRecord) -> bool,
    ) -> Result<Vec<FdbRecord>> {
        let ns = self.h.netns().label();
        req.header.family = AddressFamily::Bridge;
        let msgs = self
            .h
            .sock()?
            .dump(RouteNetlinkMessage::GetNeighbour(req), &|| {
                format!("{what} in {ns}")
            })?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => FdbRecord::from_message(n),
                _ => None,
            })
            .filter(|r| keep(r))
            .collect())
    }

    /// Make the remote (VTEP) entries of `dev` exactly `desired`: the
    /// entries with `self` and a `dst` are owned (entries are identified by
    /// MAC and dst); others (the device's own addresses, learnt entries)
    /// are left alone. One dump, then one pipelined batch; a set that is
    /// already right writes nothing. A changed entry (VNI, port) is deleted
    /// and appended again, counted as replaced. Failed items land in
    /// [`ReconcileReport::errors`]; see [`ReconcileReport::into_result`].
    pub fn reconcile(&self, dev: &str, desired: &[FdbEntry]) -> Result<ReconcileReport> {
        let ns = self.h.netns().label();
        let ctx = format!("reconcile fdb of {dev} in {ns}");
        let link = self.h.links().get(dev).map_err(|e| e.with_context(&ctx))?;
        let idx = link.index;
        // The kernel lists VNI and port only where they differ from the
        // device's own; compare against those defaults.
        let (dvni, dport) = match &link.details {
            crate::link::LinkDetails::Vxlan(v) => (v.vni, v.port),
            _ => (None, None),
        };
        let mut report = ReconcileReport::new(&ctx);
        // (mac, dst) → (index in `desired`, entry).
        let mut want: HashMap<(MacAddr, IpAddr), (usize, FdbEntry)> = HashMap::new();
        for (i, e) in desired.iter().enumerate() {
            let mut e = e.clone();
            e.dev = LinkRef::Index(idx);
            e.on_self = true;
            e.on_master = false;
            if let Err(x) = e.validate() {
                report.fail(Some(i), x.with_context(&ctx));
                continue;
            }
            let Some(dst) = e.dst else {
                report.fail(
                    Some(i),
                    Error::invalid(
                        &ctx,
                        format!(
                            "{} has no dst; only remote entries are reconciled",
                            e.describe()
                        ),
                    ),
                );
                continue;
            };
            want.insert((e.mac, dst), (i, e));
        }
        let have = self.list_index(idx)?;
        // (0 delete | 1 re-append after delete | 2 append, entry, counts-as,
        // index in `desired`: none for a stale entry's delete)
        let mut ops: Vec<(u8, FdbEntry, &'static str, Option<usize>)> = Vec::new();
        let mut seen = HashSet::new();
        for r in have.iter().filter(|r| r.on_self && r.dst.is_some()) {
            let Some(dst) = r.dst else { continue };
            let mut old = FdbEntry::new(r.mac, idx).dst(dst);
            old.vni = r.vni;
            old.port = r.port;
            match want.get(&(r.mac, dst)) {
                Some((i, w)) => {
                    seen.insert((r.mac, dst));
                    let same = w.vni.is_none_or(|v| r.vni.or(dvni) == Some(v))
                        && w.port.is_none_or(|p| r.port.or(dport) == Some(p));
                    if same {
                        report.unchanged += 1;
                    } else {
                        ops.push((0, old, "replaced", Some(*i)));
                        ops.push((1, w.clone(), "replaced", Some(*i)));
                    }
                }
                None => ops.push((0, old, "deleted", None)),
            }
        }
        for (k, (i, e)) in &want {
            if !seen.contains(k) {
                ops.push((2, e.clone(), "added", Some(*i)));
            }
        }
        if ops.is_empty() {
            return Ok(report);
        }
        let resolve = |_: &LinkRef| Ok(idx);
        let mut items = Vec::with_capacity(ops.len());
        let mut sent = Vec::with_capacity(ops.len());
        for (kind, e, what, item) in ops {
            let m = match e.message(&resolve) {
                Ok(m) => m,
                Err(x) => {
                    report.fail(item, x);
                    continue;
                }
            };
            items.push(match kind {
                0 => (RouteNetlinkMessage::DelNeighbour(m), 0),
                _ => (
                    RouteNetlinkMessage::NewNeighbour(m),
                    NLM_F_CREATE | NLM_F_APPEND,
                ),
            });
            sent.push((kind, e, what, item));
        }
        let results = self.h.sock()?.batch(items, &|k| {
            let (kind, e, _, _) = &sent[k];
            let verb = if *kind == 0 { "delete" } else { "append" };
            format!("{ctx}: {verb} {}", e.describe())
        });
        for ((kind, _, what, item), r) in sent.iter().zip(results) {
            match (r, *what) {
                (Err(x), _) => report.fail(*item, x),
                (Ok(()), "added") => report.added += 1,
                (Ok(()), "deleted") => report.deleted += 1,
                // A replacement counts once, on its append.
                (Ok(()), _) if *kind == 1 => report.replaced += 1,
                (Ok(()), _) => {}
            }
        }
        Ok(report)
    }
}
