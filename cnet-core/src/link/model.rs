//! The read model of a link, decoded from `RTM_NEWLINK`.

use std::net::IpAddr;

use netlink_packet_route::link::{
    InfoBridge, InfoBridgePort, InfoData, InfoIpTunnel, InfoIpVlan, InfoKind, InfoMacVlan,
    InfoPortData, InfoVlan, InfoVxlan, IpVlanMode as NlIpVlanMode, LinkAttribute, LinkFlags,
    LinkInfo, LinkMessage, MacVlanMode as NlMacVlanMode, State, VlanProtocol as NlVlanProtocol,
};

use super::MacAddr;

/// The kind of a link (`ip -d link` "info_kind").
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// `veth`
    Veth,
    /// `bridge`
    Bridge,
    /// `vxlan`
    Vxlan,
    /// `ipip`
    IpIp,
    /// `macvlan`
    MacVlan,
    /// `ipvlan`
    IpVlan,
    /// `vlan` (802.1Q / 802.1ad)
    Vlan,
    /// `dummy`
    Dummy,
    /// `wireguard`
    WireGuard,
    /// A physical or kind-less device (loopback, NIC).
    Device,
    /// Any other kind, by its kernel name (`tun`, `macvlan`, …).
    Other(String),
}

impl LinkKind {
    /// The kernel's name for the kind ("veth", "vxlan", …; "" for a device).
    pub fn as_str(&self) -> &str {
        match self {
            LinkKind::Veth => "veth",
            LinkKind::Bridge => "bridge",
            LinkKind::Vxlan => "vxlan",
            LinkKind::IpIp => "ipip",
            LinkKind::MacVlan => "macvlan",
            LinkKind::IpVlan => "ipvlan",
            LinkKind::Vlan => "vlan",
            LinkKind::Dummy => "dummy",
            LinkKind::WireGuard => "wireguard",
            LinkKind::Device => "",
            LinkKind::Other(s) => s,
        }
    }

    /// Its name for messages; `kindless` for a device without a kind (a
    /// NIC, `lo`), which [`LinkKind::as_str`] leaves empty.
    pub(crate) fn name_or<'a>(&'a self, kindless: &'a str) -> &'a str {
        match self.as_str() {
            "" => kindless,
            name => name,
        }
    }

    pub(crate) fn from_info(k: &InfoKind) -> LinkKind {
        match k {
            InfoKind::Veth => LinkKind::Veth,
            InfoKind::Bridge => LinkKind::Bridge,
            InfoKind::Vxlan => LinkKind::Vxlan,
            InfoKind::IpIp => LinkKind::IpIp,
            InfoKind::MacVlan => LinkKind::MacVlan,
            InfoKind::IpVlan => LinkKind::IpVlan,
            InfoKind::Vlan => LinkKind::Vlan,
            InfoKind::Dummy => LinkKind::Dummy,
            InfoKind::Wireguard => LinkKind::WireGuard,
            other => LinkKind::Other(other.to_string()),
        }
    }
}

/// Operational state (`operstate`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperState {
    /// UP
    Up,
    /// DOWN
    Down,
    /// LOWERLAYERDOWN (e.g. a veth whose peer is down)
    LowerLayerDown,
    /// UNKNOWN (loopback, tunnels)
    Unknown,
    /// DORMANT
    Dormant,
    /// NOTPRESENT
    NotPresent,
    /// TESTING
    Testing,
    /// A value this library does not know.
    Other(u8),
}

impl OperState {
    fn from_state(s: &State) -> OperState {
        match s {
            State::Up => OperState::Up,
            State::Down => OperState::Down,
            State::LowerLayerDown => OperState::LowerLayerDown,
            State::Unknown => OperState::Unknown,
            State::Dormant => OperState::Dormant,
            State::NotPresent => OperState::NotPresent,
            State::Testing => OperState::Testing,
            State::Other(v) => OperState::Other(*v),
            _ => OperState::Other(255),
        }
    }

    /// As `ip` prints it.
    pub fn as_str(&self) -> &'static str {
        match self {
            OperState::Up => "UP",
            OperState::Down => "DOWN",
            OperState::LowerLayerDown => "LOWERLAYERDOWN",
            OperState::Unknown => "UNKNOWN",
            OperState::Dormant => "DORMANT",
            OperState::NotPresent => "NOTPRESENT",
            OperState::Testing => "TESTING",
            OperState::Other(_) => "OTHER",
        }
    }
}

/// VXLAN parameters (`ip -d link show` of a vxlan device).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanInfo {
    /// VNI.
    pub vni: Option<u32>,
    /// UDP destination port.
    pub port: Option<u16>,
    /// Local (source) underlay address.
    pub local: Option<IpAddr>,
    /// Remote or multicast group address.
    pub group: Option<IpAddr>,
    /// Underlay device index.
    pub link: Option<u32>,
    /// MAC learning.
    pub learning: Option<bool>,
    /// TTL (0 = inherit).
    pub ttl: Option<u8>,
    /// UDP checksum on IPv4 outer packets.
    pub udp_csum: Option<bool>,
    /// ARP/ND proxy.
    pub proxy: Option<bool>,
    /// FDB ageing in seconds.
    pub ageing: Option<u32>,
}

/// IP-in-IP parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpIpInfo {
    /// Local underlay address.
    pub local: Option<IpAddr>,
    /// Remote underlay address (`any` for a collect/multi-peer tunnel).
    pub remote: Option<IpAddr>,
    /// TTL (0 = inherit).
    pub ttl: Option<u8>,
    /// Path MTU discovery.
    pub pmtudisc: Option<bool>,
    /// Underlay device index.
    pub link: Option<u32>,
}

/// Bridge parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeInfo {
    /// STP state (0 off).
    pub stp_state: Option<u32>,
    /// VLAN filtering.
    pub vlan_filtering: Option<bool>,
    /// FDB ageing time in centiseconds.
    pub ageing_time: Option<u32>,
}

/// Traffic counters of a link (`ip -s link`), from `IFLA_STATS64` (or
/// the 32-bit `IFLA_STATS` where a device gives only those). Counters
/// start at 0 when the device is created and wrap only at 2^64.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Received packets with errors (`rx errors`).
    pub rx_errors: u64,
    /// Packets that failed to send (`tx errors`).
    pub tx_errors: u64,
    /// Received packets dropped (no buffer, no handler, …).
    pub rx_dropped: u64,
    /// Packets dropped before sending (e.g. a veth whose peer is down).
    pub tx_dropped: u64,
    /// Multicast packets received.
    pub multicast: u64,
}

/// How a macvlan device shares its parent (`ip link … type macvlan mode M`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacVlanMode {
    /// `private`: no traffic between macvlans of one parent.
    Private,
    /// `vepa`: traffic between them goes out to the switch (the kernel's default).
    Vepa,
    /// `bridge`: macvlans of one parent talk to each other directly.
    Bridge,
    /// `passthru`: one macvlan takes the parent over.
    Passthru,
    /// `source`: only frames from listed source MACs.
    Source,
    /// Another `MACVLAN_MODE_*` value.
    Other(u32),
}

impl MacVlanMode {
    pub(crate) fn to_nl(self) -> NlMacVlanMode {
        match self {
            MacVlanMode::Private => NlMacVlanMode::Private,
            MacVlanMode::Vepa => NlMacVlanMode::Vepa,
            MacVlanMode::Bridge => NlMacVlanMode::Bridge,
            MacVlanMode::Passthru => NlMacVlanMode::Passthrough,
            MacVlanMode::Source => NlMacVlanMode::Source,
            MacVlanMode::Other(v) => NlMacVlanMode::Other(v),
        }
    }
    fn from_nl(m: &NlMacVlanMode) -> Self {
        match m {
            NlMacVlanMode::Private => MacVlanMode::Private,
            NlMacVlanMode::Vepa => MacVlanMode::Vepa,
            NlMacVlanMode::Bridge => MacVlanMode::Bridge,
            NlMacVlanMode::Passthrough => MacVlanMode::Passthru,
            NlMacVlanMode::Source => MacVlanMode::Source,
            other => MacVlanMode::Other(u32::from(*other)),
        }
    }
    /// As `ip -d link` prints it.
    pub fn as_str(&self) -> &'static str {
        match self {
            MacVlanMode::Private => "private",
            MacVlanMode::Vepa => "vepa",
            MacVlanMode::Bridge => "bridge",
            MacVlanMode::Passthru => "passthru",
            MacVlanMode::Source => "source",
            MacVlanMode::Other(_) => "other",
        }
    }
}

impl std::fmt::Display for MacVlanMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an ipvlan device forwards (`ip link … type ipvlan mode M`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVlanMode {
    /// `l2`: switching by MAC on the parent, like a bridge.
    L2,
    /// `l3`: routing by IP on the parent (the kernel's default).
    L3,
    /// `l3s`: like l3, with netfilter hooks in the parent's namespace.
    L3S,
    /// Another `IPVLAN_MODE_*` value.
    Other(u16),
}

impl IpVlanMode {
    pub(crate) fn to_nl(self) -> NlIpVlanMode {
        match self {
            IpVlanMode::L2 => NlIpVlanMode::L2,
            IpVlanMode::L3 => NlIpVlanMode::L3,
            IpVlanMode::L3S => NlIpVlanMode::L3S,
            IpVlanMode::Other(v) => NlIpVlanMode::Other(v),
        }
    }
    fn from_nl(m: &NlIpVlanMode) -> Self {
        match m {
            NlIpVlanMode::L2 => IpVlanMode::L2,
            NlIpVlanMode::L3 => IpVlanMode::L3,
            NlIpVlanMode::L3S => IpVlanMode::L3S,
            other => IpVlanMode::Other(u16::from(*other)),
        }
    }
    /// As `ip -d link` prints it.
    pub fn as_str(&self) -> &'static str {
        match self {
            IpVlanMode::L2 => "l2",
            IpVlanMode::L3 => "l3",
            IpVlanMode::L3S => "l3s",
            IpVlanMode::Other(_) => "other",
        }
    }
}

impl std::fmt::Display for IpVlanMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A VLAN's tag protocol (`ip link … type vlan protocol P`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VlanProtocol {
    /// `802.1Q` (the default).
    #[default]
    Dot1Q,
    /// `802.1ad` (QinQ's outer tag).
    Dot1Ad,
}

impl std::fmt::Display for VlanProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VlanProtocol::Dot1Q => "802.1Q",
            VlanProtocol::Dot1Ad => "802.1ad",
        })
    }
}

/// macvlan parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MacVlanInfo {
    /// Mode.
    pub mode: Option<MacVlanMode>,
}

/// ipvlan parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpVlanInfo {
    /// Mode.
    pub mode: Option<IpVlanMode>,
}

/// VLAN parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VlanInfo {
    /// VLAN id (0–4094).
    pub id: Option<u16>,
    /// Tag protocol.
    pub protocol: Option<VlanProtocol>,
}

/// Kind-specific details.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkDetails {
    /// No kind-specific data decoded.
    None,
    /// A bridge.
    Bridge(BridgeInfo),
    /// A vxlan device.
    Vxlan(VxlanInfo),
    /// An ipip tunnel.
    IpIp(IpIpInfo),
    /// A macvlan device (its parent is [`Link::link`]).
    MacVlan(MacVlanInfo),
    /// An ipvlan device (its parent is [`Link::link`]).
    IpVlan(IpVlanInfo),
    /// A VLAN device (its parent is [`Link::link`]).
    Vlan(VlanInfo),
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Kind (`info_kind`).
    pub kind: LinkKind,
    /// Hardware address, for Ethernet-like devices.
    pub mac: Option<MacAddr>,
    /// MTU.
    pub mtu: u32,
    /// Raw `IFF_*` flags.
    pub flags: u32,
    /// Operational state.
    pub oper_state: OperState,
    /// Index of the master (bridge) this link is a port of.
    pub master: Option<u32>,
    /// `IFLA_LINK`: for a veth the peer's index (in `link_netnsid`'s
    /// namespace if set), for a tunnel the underlay device.
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the namespace id (as seen from this namespace)
    /// in which `link` lives.
    pub link_netnsid: Option<i32>,
    /// Kind-specific parameters.
    pub details: LinkDetails,
    /// For a bridge port, its STP state (`IFLA_BRPORT_STATE`: 0 disabled,
    /// 1 listening, 2 learning, 3 forwarding, 4 blocking), as
    /// `ip -d link` shows it after `bridge_slave state`.
    pub port_state: Option<u8>,
    /// Traffic counters (`ip -s link show`), when the kernel sent them
    /// (it does in dumps and gets).
    pub stats: Option<LinkStats>,
}

impl Link {
    /// `IFF_UP` set (administratively up).
    pub fn is_up(&self) -> bool {
        self.flags & LinkFlags::Up.bits() != 0
    }

    /// `IFF_LOWER_UP` set (carrier).
    pub fn has_carrier(&self) -> bool {
        self.flags & LinkFlags::LowerUp.bits() != 0
    }

    /// Decode a link message.
    pub fn from_message(m: &LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            kind: LinkKind::Device,
            mac: None,
            mtu: 0,
            flags: m.header.flags.bits(),
            oper_state: OperState::Unknown,
            master: None,
            link: None,
            link_netnsid: None,
            details: LinkDetails::None,
            port_state: None,
            stats: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Address(b) => l.mac = MacAddr::from_slice(b),
                LinkAttribute::Mtu(v) => l.mtu = *v,
                LinkAttribute::OperState(s) => l.oper_state = OperState::from_state(s),
                LinkAttribute::Controller(v) => l.master = Some(*v),
                LinkAttribute::Link(v) => l.link = Some(*v),
                LinkAttribute::LinkNetNsId(v) => l.link_netnsid = Some(*v),
                LinkAttribute::Stats64(s) => {
                    l.stats = Some(LinkStats {
                        rx_packets: s.rx_packets,
                        tx_packets: s.tx_packets,
                        rx_bytes: s.rx_bytes,
                        tx_bytes: s.tx_bytes,
                        rx_errors: s.rx_errors,
                        tx_errors: s.tx_errors,
                        rx_dropped: s.rx_dropped,
                        tx_dropped: s.tx_dropped,
                        multicast: s.multicast,
                    })
                }
                // Only when no 64-bit counters came (the kernel sends them first).
                LinkAttribute::Stats(s) if l.stats.is_none() => {
                    l.stats = Some(LinkStats {
                        rx_packets: s.rx_packets.into(),
                        tx_packets: s.tx_packets.into(),
                        rx_bytes: s.rx_bytes.into(),
                        tx_bytes: s.tx_bytes.into(),
                        rx_errors: s.rx_errors.into(),
                        tx_errors: s.tx_errors.into(),
                        rx_dropped: s.rx_dropped.into(),
                        tx_dropped: s.tx_dropped.into(),
                        multicast: s.multicast.into(),
                    })
                }
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => l.kind = LinkKind::from_info(k),
                            LinkInfo::Data(d) => l.details = details(d),
                            LinkInfo::PortData(InfoPortData::BridgePort(p)) => {
                                l.port_state = p.iter().find_map(|a| match a {
                                    InfoBridgePort::State(s) => Some(u8::from(*s)),
                                    _ => None,
                                });
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

fn details(d: &InfoData) -> LinkDetails {
    match d {
        InfoData::Vxlan(v) => {
            let mut x = VxlanInfo::default();
            for a in v {
                match a {
                    InfoVxlan::Id(v) => x.vni = Some(*v),
                    InfoVxlan::Port(v) => x.port = Some(*v),
                    InfoVxlan::Local(v) => x.local = Some((*v).into()),
                    InfoVxlan::Local6(v) => x.local = Some((*v).into()),
                    InfoVxlan::Group(v) => x.group = Some((*v).into()),
                    InfoVxlan::Group6(v) => x.group = Some((*v).into()),
                    InfoVxlan::Link(v) => x.link = Some(*v),
                    InfoVxlan::Learning(v) => x.learning = Some(*v),
                    InfoVxlan::Ttl(v) => x.ttl = Some(*v),
                    InfoVxlan::UDPCsum(v) => x.udp_csum = Some(*v),
                    InfoVxlan::Proxy(v) => x.proxy = Some(*v),
                    InfoVxlan::Ageing(v) => x.ageing = Some(*v),
                    _ => {}
                }
            }
            LinkDetails::Vxlan(x)
        }
        InfoData::IpTunnel(v) => {
            let mut x = IpIpInfo::default();
            for a in v {
                match a {
                    InfoIpTunnel::Local(v) => x.local = Some(*v),
                    InfoIpTunnel::Remote(v) => x.remote = Some(*v),
                    InfoIpTunnel::Ttl(v) => x.ttl = Some(*v),
                    InfoIpTunnel::PMtuDisc(v) => x.pmtudisc = Some(*v),
                    InfoIpTunnel::Link(v) => x.link = Some(*v),
                    _ => {}
                }
            }
            LinkDetails::IpIp(x)
        }
        InfoData::Bridge(v) => {
            let mut x = BridgeInfo::default();
            for a in v {
                match a {
                    InfoBridge::StpState(s) => x.stp_state = Some(u32::from(*s)),
                    InfoBridge::VlanFiltering(v) => x.vlan_filtering = Some(*v),
                    InfoBridge::AgeingTime(v) => x.ageing_time = Some(*v),
                    _ => {}
                }
            }
            LinkDetails::Bridge(x)
        }
        InfoData::MacVlan(v) => LinkDetails::MacVlan(MacVlanInfo {
            mode: v.iter().find_map(|a| match a {
                InfoMacVlan::Mode(m) => Some(MacVlanMode::from_nl(m)),
                _ => None,
            }),
        }),
        InfoData::IpVlan(v) => LinkDetails::IpVlan(IpVlanInfo {
            mode: v.iter().find_map(|a| match a {
                InfoIpVlan::Mode(m) => Some(IpVlanMode::from_nl(m)),
                _ => None,
            }),
        }),
        InfoData::Vlan(v) => {
            let mut x = VlanInfo::default();
            for a in v {
                match a {
                    InfoVlan::Id(id) => x.id = Some(*id),
                    InfoVlan::Protocol(NlVlanProtocol::Ieee8021Q) => {
                        x.protocol = Some(VlanProtocol::Dot1Q)
                    }
                    InfoVlan::Protocol(NlVlanProtocol::Ieee8021Ad) => {
                        x.protocol = Some(VlanProtocol::Dot1Ad)
                    }
                    _ => {}
                }
            }
            LinkDetails::Vlan(x)
        }
        _ => LinkDetails::None,
    }
}
