//! Link builders: one per kind, each producing an `RTM_NEWLINK` message
//! (veth, bridge, vxlan, ipip; macvlan, ipvlan and vlan on a parent;
//! dummy; wireguard).

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use netlink_packet_route::link::{
    BridgeStpState, InfoBridge, InfoData, InfoIpTunnel, InfoIpVlan, InfoKind, InfoMacVlan,
    InfoVeth, InfoVlan, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    VlanProtocol as NlVlanProtocol,
};

use super::model::{IpVlanMode, Link, LinkDetails, LinkKind, MacVlanMode, VlanProtocol};
use super::{validate_mac, validate_mtu, validate_name, MacAddr};
use crate::error::{Error, Result};
use crate::netns::NetNs;

/// A device named or numbered (for underlay devices and masters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRef {
    /// By name, resolved in the handle's namespace when the message is built.
    Name(String),
    /// By index.
    Index(u32),
}

impl From<&str> for LinkRef {
    fn from(s: &str) -> Self {
        LinkRef::Name(s.to_string())
    }
}
impl From<String> for LinkRef {
    fn from(s: String) -> Self {
        LinkRef::Name(s)
    }
}
impl From<u32> for LinkRef {
    fn from(i: u32) -> Self {
        LinkRef::Index(i)
    }
}

/// Resolves a [`LinkRef`] to an index (the handle's namespace; a fixed map in tests).
pub type Resolver<'r> = &'r dyn Fn(&LinkRef) -> Result<u32>;

/// What every link builder provides.
pub trait LinkSpec {
    /// The new link's name.
    fn name(&self) -> &str;
    /// Its kind.
    fn kind(&self) -> LinkKind;
    /// Check every parameter; nothing is sent when this fails.
    fn validate(&self) -> Result<()>;
    /// The `RTM_NEWLINK` payload.
    fn message(&self, resolve: Resolver<'_>) -> Result<LinkMessage>;
    /// How an existing link differs from this spec ("field: have X, want Y"),
    /// empty when compatible.
    fn differences(&self, existing: &Link, resolve: Resolver<'_>) -> Vec<String>;
    /// A veth peer to bring up after creation (the kernel refuses `IFF_UP`
    /// on a peer in the creating request: it has no partner yet, ENOTCONN):
    /// its namespace (None: the same) and name.
    fn peer_to_bring_up(&self) -> Option<(Option<NetNs>, String)> {
        None
    }
    /// The second device a request creates (a veth's peer): its namespace
    /// (None: the same) and name. Used to say which name clashed.
    fn peer(&self) -> Option<(Option<&NetNs>, &str)> {
        None
    }
    /// The bridge the new link is to be a port of (`master NAME`).
    fn master(&self) -> Option<&LinkRef> {
        None
    }
}

impl<T: LinkSpec + ?Sized> LinkSpec for &T {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn kind(&self) -> LinkKind {
        (**self).kind()
    }
    fn validate(&self) -> Result<()> {
        (**self).validate()
    }
    fn message(&self, resolve: Resolver<'_>) -> Result<LinkMessage> {
        (**self).message(resolve)
    }
    fn differences(&self, existing: &Link, resolve: Resolver<'_>) -> Vec<String> {
        (**self).differences(existing, resolve)
    }
    fn peer_to_bring_up(&self) -> Option<(Option<NetNs>, String)> {
        (**self).peer_to_bring_up()
    }
    fn peer(&self) -> Option<(Option<&NetNs>, &str)> {
        (**self).peer()
    }
    fn master(&self) -> Option<&LinkRef> {
        (**self).master()
    }
}

/// Settings every kind shares.
#[derive(Debug, Clone, Default)]
struct Common {
    name: String,
    mtu: Option<u32>,
    mac: Option<MacAddr>,
    up: bool,
    master: Option<LinkRef>,
}

impl Common {
    fn new(name: &str) -> Self {
        Common {
            name: name.to_string(),
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        if let Some(m) = self.mtu {
            validate_mtu(&self.name, m)?;
        }
        if let Some(m) = &self.mac {
            validate_mac(&self.name, m)?;
        }
        if let Some(LinkRef::Name(n)) = &self.master {
            validate_name(n)?;
        }
        Ok(())
    }

    fn message(
        &self,
        kind: InfoKind,
        data: Option<InfoData>,
        resolve: Resolver<'_>,
    ) -> Result<LinkMessage> {
        let mut m = LinkMessage::default();
        if self.up {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        }
        m.attributes.push(LinkAttribute::IfName(self.name.clone()));
        if let Some(mtu) = self.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = &self.mac {
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        if let Some(master) = &self.master {
            m.attributes
                .push(LinkAttribute::Controller(resolve(master)?));
        }
        let mut info = vec![LinkInfo::Kind(kind)];
        if let Some(d) = data {
            info.push(LinkInfo::Data(d));
        }
        m.attributes.push(LinkAttribute::LinkInfo(info));
        Ok(m)
    }

    fn differences(
        &self,
        want_kind: &LinkKind,
        l: &Link,
        resolve: Resolver<'_>,
        out: &mut Vec<String>,
    ) {
        if &l.kind != want_kind {
            out.push(format!(
                "kind: have {}, want {}",
                if l.kind.as_str().is_empty() {
                    "device"
                } else {
                    l.kind.as_str()
                },
                want_kind.as_str()
            ));
            return;
        }
        if let Some(m) = self.mtu {
            if l.mtu != m {
                out.push(format!("mtu: have {}, want {m}", l.mtu));
            }
        }
        if let Some(m) = &self.mac {
            if l.mac.as_ref() != Some(m) {
                out.push(format!("mac: have {}, want {m}", opt(&l.mac)));
            }
        }
        if let Some(master) = &self.master {
            if let Ok(idx) = resolve(master) {
                if l.master != Some(idx) {
                    out.push(format!("master: have {}, want {}", opt(&l.master), idx));
                }
            }
        }
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "none".into(),
    }
}

fn cmp<T: PartialEq + std::fmt::Display>(
    out: &mut Vec<String>,
    field: &str,
    have: Option<T>,
    want: Option<T>,
) {
    if let Some(w) = want {
        if have.as_ref() != Some(&w) {
            out.push(format!("{field}: have {}, want {w}", opt(&have)));
        }
    }
}

macro_rules! common_setters {
    () => {
        /// Set the MTU (`mtu N`).
        pub fn mtu(mut self, mtu: u32) -> Self {
            self.common.mtu = Some(mtu);
            self
        }
        /// Set the MAC address (`address MAC`).
        pub fn mac(mut self, mac: MacAddr) -> Self {
            self.common.mac = Some(mac);
            self
        }
        /// Create the link administratively up (`up`).
        pub fn up(mut self) -> Self {
            self.common.up = true;
            self
        }
        /// Enslave to a bridge at creation (`master NAME`).
        pub fn master(mut self, master: impl Into<LinkRef>) -> Self {
            self.common.master = Some(master.into());
            self
        }
    };
}

// ---------------------------------------------------------------- veth

/// A veth pair. Equivalent to
/// `ip link add NAME type veth peer name PEER [netns NS]`; with
/// [`Veth::peer_netns`] the peer is born inside the other namespace in the
/// same request, so a failure leaves neither end behind.
#[derive(Debug, Clone)]
pub struct Veth {
    common: Common,
    peer: String,
    peer_netns: Option<NetNs>,
    peer_mac: Option<MacAddr>,
    peer_mtu: Option<u32>,
    peer_up: bool,
}

impl Veth {
    /// `NAME` here, `PEER` at the other end.
    pub fn new(name: &str, peer: &str) -> Self {
        Veth {
            common: Common::new(name),
            peer: peer.to_string(),
            peer_netns: None,
            peer_mac: None,
            peer_mtu: None,
            peer_up: false,
        }
    }
    common_setters!();
    /// Create the peer inside `ns` (`peer name PEER netns NS`).
    pub fn peer_netns(mut self, ns: &NetNs) -> Self {
        self.peer_netns = Some(ns.clone());
        self
    }
    /// The peer's MAC address.
    pub fn peer_mac(mut self, mac: MacAddr) -> Self {
        self.peer_mac = Some(mac);
        self
    }
    /// The peer's MTU (defaults to the same as this end's when `mtu` is set).
    pub fn peer_mtu(mut self, mtu: u32) -> Self {
        self.peer_mtu = Some(mtu);
        self
    }
    /// Create the peer administratively up.
    pub fn peer_up(mut self) -> Self {
        self.peer_up = true;
        self
    }
    /// The peer's name.
    pub fn peer_name(&self) -> &str {
        &self.peer
    }
}

impl LinkSpec for Veth {
    fn name(&self) -> &str {
        &self.common.name
    }
    fn master(&self) -> Option<&LinkRef> {
        self.common.master.as_ref()
    }
    fn kind(&self) -> LinkKind {
        LinkKind::Veth
    }
    fn validate(&self) -> Result<()> {
        self.common.validate()?;
        validate_name(&self.peer).map_err(|e| e.with_context("veth peer"))?;
        if self.peer_netns.is_none() && self.peer == self.common.name {
            return Err(Error::invalid(
                format!("veth {}", self.common.name),
                "peer has the same name in the same namespace",
            ));
        }
        if let Some(m) = self.peer_mtu {
            validate_mtu(&self.peer, m)?;
        }
        if let Some(m) = &self.peer_mac {
            validate_mac(&self.peer, m)?;
        }
        Ok(())
    }
    fn message(&self, resolve: Resolver<'_>) -> Result<LinkMessage> {
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(self.peer.clone()));
        if let Some(mtu) = self.peer_mtu.or(self.common.mtu) {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = &self.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        if let Some(ns) = &self.peer_netns {
            peer.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        }
        self.common.message(
            InfoKind::Veth,
            Some(InfoData::Veth(InfoVeth::Peer(peer))),
            resolve,
        )
    }
    fn differences(&self, l: &Link, resolve: Resolver<'_>) -> Vec<String> {
        let mut out = Vec::new();
        self.common
            .differences(&LinkKind::Veth, l, resolve, &mut out);
        out
    }
    fn peer_to_bring_up(&self) -> Option<(Option<NetNs>, String)> {
        self.peer_up
            .then(|| (self.peer_netns.clone(), self.peer.clone()))
    }
    fn peer(&self) -> Option<(Option<&NetNs>, &str)> {
        Some((self.peer_netns.as_ref(), &self.peer))
    }
}

// ---------------------------------------------------------------- bridge

/// A Linux bridge. Equivalent to `ip link add NAME type bridge [stp_state S]
/// [vlan_filtering V] [ageing_time T]`.
///
/// Kernel behaviour worth knowing: an MTU given at creation is not "pinned";
/// the bridge follows the smallest MTU of its ports as they join. Give ports
/// the bridge's MTU (the attach recipe does), or set it afterwards with
/// `Links::set_mtu` to a *different* value, which pins it.
#[derive(Debug, Clone)]
pub struct Bridge {
    common: Common,
    stp: Option<bool>,
    vlan_filtering: Option<bool>,
    ageing_time: Option<u32>,
}

impl Bridge {
    /// A bridge named `name`.
    pub fn new(name: &str) -> Self {
        Bridge {
            common: Common::new(name),
            stp: None,
            vlan_filtering: None,
            ageing_time: None,
        }
    }
    common_setters!();
    /// Spanning tree on or off (`stp_state 1|0`).
    pub fn stp(mut self, on: bool) -> Self {
        self.stp = Some(on);
        self
    }
    /// VLAN filtering (`vlan_filtering 1|0`).
    pub fn vlan_filtering(mut self, on: bool) -> Self {
        self.vlan_filtering = Some(on);
        self
    }
    /// FDB ageing time in centiseconds (`ageing_time`).
    pub fn ageing_time(mut self, centis: u32) -> Self {
        self.ageing_time = Some(centis);
        self
    }
}

impl LinkSpec for Bridge {
    fn name(&self) -> &str {
        &self.common.name
    }
    fn master(&self) -> Option<&LinkRef> {
        self.common.master.as_ref()
    }
    fn kind(&self) -> LinkKind {
        LinkKind::Bridge
    }
    fn validate(&self) -> Result<()> {
        self.common.validate()
    }
    fn message(&self, resolve: Resolver<'_>) -> Result<LinkMessage> {
        let mut data = Vec::new();
        if let Some(on) = self.stp {
            data.push(InfoBridge::StpState(if on {
                BridgeStpState::KernelStp
            } else {
                BridgeStpState::Disabled
            }));
        }
        if let Some(v) = self.vlan_filtering {
            data.push(InfoBridge::VlanFiltering(v));
        }
        if let Some(v) = self.ageing_time {
            data.push(InfoBridge::AgeingTime(v));
        }
        let data = (!data.is_empty()).then_some(InfoData::Bridge(data));
        self.common.message(InfoKind::Bridge, data, resolve)
    }
    fn differences(&self, l: &Link, resolve: Resolver<'_>) -> Vec<String> {
        let mut out = Vec::new();
        self.common
            .differences(&LinkKind::Bridge, l, resolve, &mut out);
        if let LinkDetails::Bridge(b) = &l.details {
            cmp(&mut out, "stp_state", b.stp_state.map(|s| s != 0), self.stp);
            cmp(
                &mut out,
                "vlan_filtering",
                b.vlan_filtering,
                self.vlan_filtering,
            );
            cmp(&mut out, "ageing_time", b.ageing_time, self.ageing_time);
        }
        out
    }
}

// ---------------------------------------------------------------- vxlan

/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// A VXLAN device. Equivalent to `ip link add NAME type vxlan id VNI
/// dstport PORT [local IP] [remote|group IP] [dev DEV] [nolearning] [ttl T]
/// [udpcsum]`. Flannel's default: VNI 1, port 8472, learning off.
#[derive(Debug, Clone)]
pub struct Vxlan {
    common: Common,
    vni: u32,
    port: u16,
    local: Option<IpAddr>,
    remote: Option<IpAddr>,
    dev: Option<LinkRef>,
    learning: Option<bool>,
    ttl: Option<u8>,
    udp_csum: Option<bool>,
    proxy: Option<bool>,
    ageing: Option<u32>,
}

impl Vxlan {
    /// Flannel's port.
    pub const FLANNEL_PORT: u16 = 8472;
    /// The IANA port.
    pub const IANA_PORT: u16 = 4789;

    /// A vxlan device with `vni`, on port 8472 (Flannel's) unless set.
    pub fn new(name: &str, vni: u32) -> Self {
        Vxlan {
            common: Common::new(name),
            vni,
            port: Self::FLANNEL_PORT,
            local: None,
            remote: None,
            dev: None,
            learning: None,
            ttl: None,
            udp_csum: None,
            proxy: None,
            ageing: None,
        }
    }
    common_setters!();
    /// UDP destination port (`dstport`).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    /// Local underlay address (`local`).
    pub fn local(mut self, ip: IpAddr) -> Self {
        self.local = Some(ip);
        self
    }
    /// Single remote VTEP (`remote`) or a multicast group (`group`).
    pub fn remote(mut self, ip: IpAddr) -> Self {
        self.remote = Some(ip);
        self
    }
    /// Underlay device (`dev`).
    pub fn dev(mut self, dev: impl Into<LinkRef>) -> Self {
        self.dev = Some(dev.into());
        self
    }
    /// MAC learning (`[no]learning`).
    pub fn learning(mut self, on: bool) -> Self {
        self.learning = Some(on);
        self
    }
    /// Outer TTL (`ttl`; 0 inherits).
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// Outer UDP checksum for IPv4 (`[no]udpcsum`).
    pub fn udp_csum(mut self, on: bool) -> Self {
        self.udp_csum = Some(on);
        self
    }
    /// ARP proxy (`[no]proxy`).
    pub fn proxy(mut self, on: bool) -> Self {
        self.proxy = Some(on);
        self
    }
    /// FDB ageing in seconds (`ageing`).
    pub fn ageing(mut self, secs: u32) -> Self {
        self.ageing = Some(secs);
        self
    }
}

impl LinkSpec for Vxlan {
    fn name(&self) -> &str {
        &self.common.name
    }
    fn master(&self) -> Option<&LinkRef> {
        self.common.master.as_ref()
    }
    fn kind(&self) -> LinkKind {
        LinkKind::Vxlan
    }
    fn validate(&self) -> Result<()> {
        self.common.validate()?;
        let ctx = || format!("vxlan {}", self.common.name);
        if self.vni > MAX_VNI {
            return Err(Error::invalid(
                ctx(),
                format!("VNI {} is over 2^24-1 ({MAX_VNI})", self.vni),
            ));
        }
        if self.port == 0 {
            return Err(Error::invalid(ctx(), "UDP port 0"));
        }
        if let (Some(l), Some(r)) = (self.local, self.remote) {
            if l.is_ipv4() != r.is_ipv4() {
                return Err(Error::invalid(
                    ctx(),
                    format!("local {l} and remote {r} are of different families"),
                ));
            }
        }
        if let Some(LinkRef::Name(n)) = &self.dev {
            validate_name(n)?;
        }
        Ok(())
    }
    fn message(&self, resolve: Resolver<'_>) -> Result<LinkMessage> {
        let mut d = vec![InfoVxlan::Id(self.vni)];
        if let Some(r) = self.remote {
            d.push(match r {
                IpAddr::V4(a) => InfoVxlan::Group(a),
                IpAddr::V6(a) => InfoVxlan::Group6(a),
            });
        }
        if let Some(l) = self.local {
            d.push(match l {
                IpAddr::V4(a) => InfoVxlan::Local(a),
                IpAddr::V6(a) => InfoVxlan::Local6(a),
            });
        }
        if let Some(dev) = &self.dev {
            d.push(InfoVxlan::Link(resolve(dev)?));
        }
        if let Some(t) = self.ttl {
            d.push(InfoVxlan::Ttl(t));
        }
        if let Some(v) = self.learning {
            d.push(InfoVxlan::Learning(v));
        }
        if let Some(v) = self.proxy {
            d.push(InfoVxlan::Proxy(v));
        }
        if let Some(v) = self.ageing {
            d.push(InfoVxlan::Ageing(v));
        }
        d.push(InfoVxlan::Port(self.port));
        if let Some(v) = self.udp_csum {
            d.push(InfoVxlan::UDPCsum(v));
        }
        self.common
            .message(InfoKind::Vxlan, Some(InfoData::Vxlan(d)), resolve)
    }
    fn differences(&self, l: &Link, resolve: Resolver<'_>) -> Vec<String> {
        let mut out = Vec::new();
        self.common
            .differences(&LinkKind::Vxlan, l, resolve, &mut out);
        if let LinkDetails::Vxlan(v) = &l.details {
            cmp(&mut out, "vni", v.vni, Some(self.vni));
            cmp(&mut out, "port", v.port, Some(self.port));
            cmp(&mut out, "local", v.local, self.local);
            cmp(&mut out, "remote", v.group, self.remote);
            cmp(
                &mut out,
                "dev",
                v.link,
                self.dev.as_ref().and_then(|d| resolve(d).ok()),
            );
            cmp(&mut out, "learning", v.learning, self.learning);
            cmp(&mut out, "ttl", v.ttl, self.ttl);
            cmp(&mut out, "udp_csum", v.udp_csum, self.udp_csum);
            cmp(&mut out, "proxy", v.proxy, self.proxy);
            cmp(&mut out, "ageing", v.ageing, self.ageing);
        }
        out
    }
}

// ---------------------------------------------------------------- ipip

/// An IP-in-IP tunnel. Equivalent to `ip link add NAME type ipip [local IP]
/// [remote IP] [ttl T] [nopmtudisc] [dev DEV]`. Without `remote` it is a
/// multi-peer tunnel (Calico's `tunl0` style: routes say `via PEER onlink`).
#[derive(Debug, Clone)]
pub struct IpIp {
    common: Common,
    local: Option<IpAddr>,
    remote: Option<IpAddr>,
    ttl: Option<u8>,
    pmtudisc: Option<bool>,
    dev: Option<LinkRef>,
}

impl IpIp {
    /// An ipip tunnel named `name`.
    pub fn new(name: &str) -> Self {
        IpIp {
            common: Common::new(name),
            local: None,
            remote: None,
            ttl: None,
            pmtudisc: None,
            dev: None,
        }
    }
    common_setters!();
    /// Local underlay address.
    pub fn local(mut self, ip: IpAddr) -> Self {
        self.local = Some(ip);
        self
    }
    /// Remote underlay address.
    pub fn remote(mut self, ip: IpAddr) -> Self {
        self.remote = Some(ip);
        self
    }
    /// Outer TTL (0 inherits).
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// Path MTU discovery (`[no]pmtudisc`).
    pub fn pmtudisc(mut self, on: bool) -> Self {
        self.pmtudisc = Some(on);
        self
    }
    /// Underlay device.
    pub fn dev(mut self, dev: impl Into<LinkRef>) -> Self {
        self.dev = Some(dev.into());
        self
    }
}

impl LinkSpec for IpIp {
    fn name(&self) -> &str {
        &self.common.name
    }
    fn master(&self) -> Option<&LinkRef> {
        self.common.master.as_ref()
    }
    fn kind(&self) -> LinkKind {
        LinkKind::IpIp
    }
    fn validate(&self) -> Result<()> {
        self.common.validate()?;
        let ctx = || format!("ipip {}", self.common.name);
        for (what, a) in [("local", self.local), ("remote", self.remote)] {
            if let Some(IpAddr::V6(a)) = a {
                return Err(Error::invalid(
                    ctx(),
                    format!("{what} {a} is IPv6; ipip carries IPv4 over IPv4"),
                ));
            }
        }
        if self.pmtudisc == Some(false) && self.ttl.is_some_and(|t| t != 0) {
            return Err(Error::invalid(
                ctx(),
                "a fixed ttl requires pmtudisc (the kernel refuses nopmtudisc with ttl)",
            ));
        }
        if let Some(LinkRef::Name(n)) = &self.dev {
            validate_name(n)?;
        }
        Ok(())
    }
    fn message(&self, resolve: Resolver<'_>) -> Result<LinkMessage> {
        let mut d = Vec::new();
        if let Some(dev) = &self.dev {
            d.push(InfoIpTunnel::Link(resolve(dev)?));
        }
        if let Some(l) = self.local {
            d.push(InfoIpTunnel::Local(l));
        }
        if let Some(r) = self.remote {
            d.push(InfoIpTunnel::Remote(r));
        }
        if let Some(t) = self.ttl {
            d.push(InfoIpTunnel::Ttl(t));
        }
        if let Some(p) = self.pmtudisc {
            d.push(InfoIpTunnel::PMtuDisc(p));
        }
        self.common
            .message(InfoKind::IpIp, Some(InfoData::IpTunnel(d)), resolve)
    }
    fn differences(&self, l: &Link, resolve: Resolver<'_>) -> Vec<String> {
        let mut out = Vec::new();
        self.common
            .differences(&LinkKind::IpIp, l, resolve, &mut out);
        if let LinkDetails::IpIp(v) = &l.details {
            cmp(&mut out, "local", v.local, self.local);
            cmp(&mut out, "remote", v.remote, self.remote);
            cmp(&mut out, "ttl", v.ttl, self.ttl);
            cmp(&mut out, "pmtudisc", v.pmtudisc, self.pmtudisc);
            cmp(
                &mut out,
                "dev",
                v.link,
                self.dev.as_ref().and_then(|d| resolve(d).ok()),
            );
        }
        out
    }
}

// ------------------------------------------------- devices on a parent

/// Check the parent of a macvlan / ipvlan / vlan device.
fn validate_parent(kind: &str, name: &str, parent: &LinkRef) -> Result<()> {
    if let LinkRef::Name(p) = parent {
        validate_name(p)?;
        if p == name {
            return Err(Error::invalid(
                format!("{kind} {name}"),
                "a device cannot be its own parent",
            ));
        }
    }
    Ok(())
}

/// `IFLA_LINK` (the parent) added to a message built by [`Common::message`].
fn with_parent(mut m: LinkMessage, parent: &LinkRef, resolve: Resolver<'_>) -> Result<LinkMessage> {
    m.attributes.push(LinkAttribute::Link(resolve(parent)?));
    Ok(m)
}

fn cmp_parent(out: &mut Vec<String>, l: &Link, parent: &LinkRef, resolve: Resolver<'_>) {
    cmp(out, "parent", l.link, resolve(parent).ok());
}

// ---------------------------------------------------------------- macvlan

/// A macvlan device: a second MAC address on a parent Ethernet device.
/// Equivalent to `ip link add NAME link PARENT type macvlan [mode
/// private|vepa|bridge|passthru|source]`; without a mode the kernel picks
/// `vepa`, where macvlans of one parent cannot reach each other without a
/// hairpinning switch: containers want [`MacVlanMode::Bridge`].
#[derive(Debug, Clone)]
pub struct MacVlan {
    common: Common,
    parent: LinkRef,
    mode: Option<MacVlanMode>,
}

impl MacVlan {
    /// A macvlan named `name` on `parent`.
    pub fn new(name: &str, parent: impl Into<LinkRef>) -> Self {
        MacVlan {
            common: Common::new(name),
            parent: parent.into(),
            mode: None,
        }
    }
    common_setters!();
    /// `mode M`.
    pub fn mode(mut self, mode: MacVlanMode) -> Self {
        self.mode = Some(mode);
        self
    }
}

impl LinkSpec for MacVlan {
    fn name(&self) -> &str {
        &self.common.name
    }
    fn master(&self) -> Option<&LinkRef> {
        self.common.master.as_ref()
    }
    fn kind(&self) -> LinkKind {
        LinkKind::MacVlan
    }
    fn validate(&self) -> Result<()> {
        self.common.validate()?;
        validate_parent("macvlan", &self.common.name, &self.parent)?;
        if let Some(MacVlanMode::Other(v)) = self.mode {
            return Err(Error::invalid(
                format!("macvlan {}", self.common.name),
                format!("unknown mode {v}"),
            ));
        }
        Ok(())
    }
    fn message(&self, resolve: Resolver<'_>) -> Result<LinkMessage> {
        let data = self
            .mode
            .map(|m| InfoData::MacVlan(vec![InfoMacVlan::Mode(m.to_nl())]));
        let m = self.common.message(InfoKind::MacVlan, data, resolve)?;
        with_parent(m, &self.parent, resolve)
    }
    fn differences(&self, l: &Link, resolve: Resolver<'_>) -> Vec<String> {
        let mut out = Vec::new();
        self.common
            .differences(&LinkKind::MacVlan, l, resolve, &mut out);
        if l.kind == LinkKind::MacVlan {
            cmp_parent(&mut out, l, &self.parent, resolve);
            if let LinkDetails::MacVlan(v) = &l.details {
                cmp(&mut out, "mode", v.mode, self.mode);
            }
        }
        out
    }
}

// ---------------------------------------------------------------- ipvlan

/// An ipvlan device: shares its parent's MAC, told apart by IP. Equivalent
/// to `ip link add NAME link PARENT type ipvlan [mode l2|l3|l3s]` (the
/// kernel's default mode is l3).
#[derive(Debug, Clone)]
pub struct IpVlan {
    common: Common,
    parent: LinkRef,
    mode: Option<IpVlanMode>,
}

impl IpVlan {
    /// An ipvlan named `name` on `parent`.
    pub fn new(name: &str, parent: impl Into<LinkRef>) -> Self {
        IpVlan {
            common: Common::new(name),
            parent: parent.into(),
            mode: None,
        }
    }
    common_setters!();
    /// `mode M`.
    pub fn mode(mut self, mode: IpVlanMode) -> Self {
        self.mode = Some(mode);
        self
    }
}

impl LinkSpec for IpVlan {
    fn name(&self) -> &str {
        &self.common.name
    }
    fn master(&self) -> Option<&LinkRef> {
        self.common.master.as_ref()
    }
    fn kind(&self) -> LinkKind {
        LinkKind::IpVlan
    }
    fn validate(&self) -> Result<()> {
        self.common.validate()?;
        validate_parent("ipvlan", &self.common.name, &self.parent)?;
        if self.common.mac.is_some() {
            return Err(Error::invalid(
                format!("ipvlan {}", self.common.name),
                "an ipvlan device has its parent's MAC address; it cannot have its own",
            ));
        }
        if let Some(IpVlanMode::Other(v)) = self.mode {
            return Err(Error::invalid(
                format!("ipvlan {}", self.common.name),
                format!("unknown mode {v}"),
            ));
        }
        Ok(())
    }
    fn message(&self, resolve: Resolver<'_>) -> Result<LinkMessage> {
        let data = self
            .mode
            .map(|m| InfoData::IpVlan(vec![InfoIpVlan::Mode(m.to_nl())]));
        let m = self.common.message(InfoKind::IpVlan, data, resolve)?;
        with_parent(m, &self.parent, resolve)
    }
    fn differences(&self, l: &Link, resolve: Resolver<'_>) -> Vec<String> {
        let mut out = Vec::new();
        self.common
            .differences(&LinkKind::IpVlan, l, resolve, &mut out);
        if l.kind == LinkKind::IpVlan {
            cmp_parent(&mut out, l, &self.parent, resolve);
            if let LinkDetails::IpVlan(v) = &l.details {
                cmp(&mut out, "mode", v.mode, self.mode);
            }
        }
        out
    }
}

// ---------------------------------------------------------------- vlan

/// Largest VLAN id (4095 is reserved).
pub const MAX_VLAN_ID: u16 = 4094;

/// A VLAN device: frames tagged with `id` on its parent. Equivalent to
/// `ip link add NAME link PARENT type vlan id ID [protocol 802.1Q|802.1ad]`.
#[derive(Debug, Clone)]
pub struct Vlan {
    common: Common,
    parent: LinkRef,
    id: u16,
    protocol: Option<VlanProtocol>,
}

impl Vlan {
    /// VLAN `id` on `parent`, named `name` (often `PARENT.ID`).
    pub fn new(name: &str, parent: impl Into<LinkRef>, id: u16) -> Self {
        Vlan {
            common: Common::new(name),
            parent: parent.into(),
            id,
            protocol: None,
        }
    }
    common_setters!();
    /// `protocol 802.1Q|802.1ad`.
    pub fn protocol(mut self, p: VlanProtocol) -> Self {
        self.protocol = Some(p);
        self
    }
}

impl LinkSpec for Vlan {
    fn name(&self) -> &str {
        &self.common.name
    }
    fn master(&self) -> Option<&LinkRef> {
        self.common.master.as_ref()
    }
    fn kind(&self) -> LinkKind {
        LinkKind::Vlan
    }
    fn validate(&self) -> Result<()> {
        self.common.validate()?;
        validate_parent("vlan", &self.common.name, &self.parent)?;
        if self.id > MAX_VLAN_ID {
            return Err(Error::invalid(
                format!("vlan {}", self.common.name),
                format!("id {} is over {MAX_VLAN_ID} (4095 is reserved)", self.id),
            ));
        }
        Ok(())
    }
    fn message(&self, resolve: Resolver<'_>) -> Result<LinkMessage> {
        let mut d = vec![InfoVlan::Id(self.id)];
        if let Some(p) = self.protocol {
            d.push(InfoVlan::Protocol(match p {
                VlanProtocol::Dot1Q => NlVlanProtocol::Ieee8021Q,
                VlanProtocol::Dot1Ad => NlVlanProtocol::Ieee8021Ad,
            }));
        }
        let m = self
            .common
            .message(InfoKind::Vlan, Some(InfoData::Vlan(d)), resolve)?;
        with_parent(m, &self.parent, resolve)
    }
    fn differences(&self, l: &Link, resolve: Resolver<'_>) -> Vec<String> {
        let mut out = Vec::new();
        self.common
            .differences(&LinkKind::Vlan, l, resolve, &mut out);
        if l.kind == LinkKind::Vlan {
            cmp_parent(&mut out, l, &self.parent, resolve);
            if let LinkDetails::Vlan(v) = &l.details {
                cmp(&mut out, "id", v.id, Some(self.id));
                cmp(&mut out, "protocol", v.protocol, self.protocol);
            }
        }
        out
    }
}

// ------------------------------------------------ dummy and wireguard

/// A dummy device: a place for addresses and routes that goes nowhere.
/// Equivalent to `ip link add NAME type dummy`.
#[derive(Debug, Clone)]
pub struct Dummy {
    common: Common,
}

impl Dummy {
    /// A dummy device named `name`.
    pub fn new(name: &str) -> Self {
        Dummy {
            common: Common::new(name),
        }
    }
    common_setters!();
}

impl LinkSpec for Dummy {
    fn name(&self) -> &str {
        &self.common.name
    }
    fn master(&self) -> Option<&LinkRef> {
        self.common.master.as_ref()
    }
    fn kind(&self) -> LinkKind {
        LinkKind::Dummy
    }
    fn validate(&self) -> Result<()> {
        self.common.validate()
    }
    fn message(&self, resolve: Resolver<'_>) -> Result<LinkMessage> {
        self.common.message(InfoKind::Dummy, None, resolve)
    }
    fn differences(&self, l: &Link, resolve: Resolver<'_>) -> Vec<String> {
        let mut out = Vec::new();
        self.common
            .differences(&LinkKind::Dummy, l, resolve, &mut out);
        out
    }
}

/// A WireGuard device. Equivalent to `ip link add NAME type wireguard`.
/// Keys and peers are not link attributes: they are set over the
/// `wireguard` generic-netlink family (`wg set NAME …`), which this
/// builder does not do.
#[derive(Debug, Clone)]
pub struct WireGuard {
    common: Common,
}

impl WireGuard {
    /// A WireGuard device named `name`.
    pub fn new(name: &str) -> Self {
        WireGuard {
            common: Common::new(name),
        }
    }
    /// Set the MTU (`mtu N`; wg-quick uses 1420).
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.common.mtu = Some(mtu);
        self
    }
    /// Create the link administratively up (`up`).
    pub fn up(mut self) -> Self {
        self.common.up = true;
        self
    }
}

impl LinkSpec for WireGuard {
    fn name(&self) -> &str {
        &self.common.name
    }
    fn kind(&self) -> LinkKind {
        LinkKind::WireGuard
    }
    fn validate(&self) -> Result<()> {
        self.common.validate()
    }
    fn message(&self, resolve: Resolver<'_>) -> Result<LinkMessage> {
        self.common.message(InfoKind::Wireguard, None, resolve)
    }
    fn differences(&self, l: &Link, resolve: Resolver<'_>) -> Vec<String> {
        let mut out = Vec::new();
        self.common
            .differences(&LinkKind::WireGuard, l, resolve, &mut out);
        out
    }
}
