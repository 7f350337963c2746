//! What a node is told: its own identity ([`NodeConfig`]), how to reach its
//! peers ([`Backend`]) and who the peers are ([`Peer`]). Plain data, checked
//! before anything is sent.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::ipam::{NodeAttrs, NodeLease};
use crate::link::{validate_mtu, validate_name, MacAddr};
use crate::route::{PROTOCOL, TABLE_MAIN};
use crate::wireguard::PublicKey;

/// The node's own identity and devices.
///
/// The encapsulation devices belong to the node, not to one backend: a
/// reconcile with a backend that does not need them deletes them (that is
/// how a backend is switched in place), so their names are fixed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Node name: the lease's node name, and the seed of the VTEP MAC
    /// ([`vtep_mac_for`]).
    pub name: String,
    /// The node's pod subnet (`10.244.1.0/24`). Never routed to a peer.
    pub subnet: IpNet,
    /// The underlay device (`eth0`): the vxlan and ipip devices sit on it,
    /// their MTUs derive from its MTU.
    pub underlay_dev: String,
    /// The node's underlay address: the VTEP's / tunnel's local address.
    pub underlay_ip: IpAddr,
    /// Name of the VXLAN device (default `cnet.vxlan`).
    pub vxlan_dev: String,
    /// Name of the IP-in-IP device (default `cnet.ipip`).
    pub ipip_dev: String,
    /// Name of the WireGuard device (default `cnet.wg`).
    pub wireguard_dev: String,
    /// Routing table of the peer routes (default main).
    pub route_table: u32,
    /// Protocol of the peer routes (default [`PROTOCOL`], 119). The node
    /// owns every route of this protocol in `route_table`: routes made
    /// with this protocol for other purposes in the same namespace and
    /// table would be deleted, so give those (or the node) another number.
    pub route_protocol: u8,
}

impl NodeConfig {
    /// Default name of the VXLAN device.
    pub const VXLAN_DEV: &'static str = "cnet.vxlan";
    /// Default name of the IP-in-IP device.
    pub const IPIP_DEV: &'static str = "cnet.ipip";
    /// Default name of the WireGuard device.
    pub const WIREGUARD_DEV: &'static str = "cnet.wg";

    /// A node named `name` with pod subnet `subnet`, reached at
    /// `underlay_ip` on `underlay_dev`; devices `cnet.vxlan` / `cnet.ipip`,
    /// routes of protocol [`PROTOCOL`] in the main table.
    pub fn new(name: &str, subnet: IpNet, underlay_dev: &str, underlay_ip: IpAddr) -> Self {
        NodeConfig {
            name: name.to_string(),
            subnet,
            underlay_dev: underlay_dev.to_string(),
            underlay_ip,
            vxlan_dev: Self::VXLAN_DEV.to_string(),
            ipip_dev: Self::IPIP_DEV.to_string(),
            wireguard_dev: Self::WIREGUARD_DEV.to_string(),
            route_table: TABLE_MAIN,
            route_protocol: PROTOCOL,
        }
    }

    /// Check every field; nothing is sent when this fails.
    pub fn validate(&self) -> Result<()> {
        let ctx = || format!("node {:?}", self.name);
        if self.name.is_empty() {
            return Err(Error::invalid(ctx(), "the node name must not be empty"));
        }
        if self.subnet.addr() != self.subnet.network() {
            return Err(Error::invalid(
                ctx(),
                format!(
                    "subnet {} has host bits set (did you mean {}?)",
                    self.subnet,
                    self.subnet.trunc()
                ),
            ));
        }
        let names = [
            &self.underlay_dev,
            &self.vxlan_dev,
            &self.ipip_dev,
            &self.wireguard_dev,
        ];
        for n in names {
            validate_name(n).map_err(|e| e.with_context(ctx()))?;
        }
        let distinct: std::collections::HashSet<_> = names.iter().collect();
        if distinct.len() != names.len() {
            return Err(Error::invalid(
                ctx(),
                "the underlay, vxlan, ipip and wireguard devices need four different names",
            ));
        }
        if self.route_protocol <= crate::route::PROTOCOL_STATIC {
            return Err(Error::invalid(
                ctx(),
                format!(
                    "route protocol {} is the kernel's or the administrator's (0-4); \
                     the node deletes every route of its protocol",
                    self.route_protocol
                ),
            ));
        }
        if self.route_table == 0 {
            return Err(Error::invalid(
                ctx(),
                "table 0 is not a routing table (RT_TABLE_UNSPEC)",
            ));
        }
        Ok(())
    }

    /// The node's VTEP (and tunnel) address: its subnet's network address
    /// (`10.244.1.0` for `10.244.1.0/24`), as Flannel assigns it.
    pub fn vtep_ip(&self) -> IpAddr {
        self.subnet.network()
    }
}

/// VXLAN settings (Flannel's defaults: VNI 1, UDP port 8472).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// VNI (default 1).
    pub vni: u32,
    /// UDP destination port (default 8472).
    pub port: u16,
    /// Device MTU; default: the underlay's MTU − 50 (− 70 over IPv6).
    pub mtu: Option<u32>,
    /// The VTEP's MAC; default [`vtep_mac_for`] the node name.
    pub mac: Option<MacAddr>,
}

impl Default for VxlanConfig {
    fn default() -> Self {
        VxlanConfig {
            vni: 1,
            port: crate::link::Vxlan::FLANNEL_PORT,
            mtu: None,
            mac: None,
        }
    }
}

impl VxlanConfig {
    fn validate(&self) -> Result<()> {
        let ctx = "vxlan backend";
        if self.vni >= 1 << 24 {
            return Err(Error::invalid(
                ctx,
                format!("VNI {} is over 2^24-1", self.vni),
            ));
        }
        if self.port == 0 {
            return Err(Error::invalid(ctx, "UDP port 0"));
        }
        if let Some(m) = self.mtu {
            validate_mtu("vxlan backend", m)?;
        }
        if let Some(m) = self.mac {
            if !m.is_valid_unicast() {
                return Err(Error::invalid(
                    ctx,
                    format!("VTEP MAC {m} is multicast or all-zero"),
                ));
            }
        }
        Ok(())
    }
}

/// IP-in-IP settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpIpConfig {
    /// Device MTU; default: the underlay's MTU − 20.
    pub mtu: Option<u32>,
}

/// WireGuard settings: encrypted tunnels between nodes (Flannel's and
/// Calico's wireguard backends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireGuardConfig {
    /// UDP port the device listens on and peers are sent to (default
    /// 51820); the same on every node.
    pub port: u16,
    /// Device MTU; default: the underlay's MTU − 60 (− 80 over IPv6).
    pub mtu: Option<u32>,
    /// The file holding the node's private key (base64, as `wg genkey`
    /// writes it), made with a new key (mode 0600) if missing, so that the
    /// key, and the public key peers know, survive restarts. Default
    /// [`WireGuardConfig::KEY_FILE`].
    pub key_file: PathBuf,
    /// Keepalive to each peer, in seconds (`persistent-keepalive`); off by
    /// default (peers on an open underlay need none).
    pub persistent_keepalive: Option<u16>,
}

impl WireGuardConfig {
    /// Default key file (Flannel keeps its key in a file of its own too).
    pub const KEY_FILE: &'static str = "/var/lib/cnet/wireguard.key";

    /// Defaults, with the private key in `key_file`.
    pub fn with_key_file(key_file: impl Into<PathBuf>) -> Self {
        WireGuardConfig {
            key_file: key_file.into(),
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let ctx = "wireguard backend";
        if self.port == 0 {
            return Err(Error::invalid(ctx, "UDP port 0"));
        }
        if self.key_file.as_os_str().is_empty() {
            return Err(Error::invalid(ctx, "the key file path is empty"));
        }
        if let Some(m) = self.mtu {
            validate_mtu(ctx, m)?;
        }
        Ok(())
    }
}

impl Default for WireGuardConfig {
    fn default() -> Self {
        WireGuardConfig {
            port: crate::wireguard::DEFAULT_PORT,
            mtu: None,
            key_file: PathBuf::from(Self::KEY_FILE),
            persistent_keepalive: None,
        }
    }
}

/// The key of a node's lease attributes (`NodeAttrs::extra`) that holds its
/// WireGuard public key (base64).
pub const WIREGUARD_KEY_ATTR: &str = "wireguard-public-key";

/// The encapsulation of [`Backend::CrossSubnet`] beyond the node's segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encap {
    /// VXLAN (neighbour + FDB entry + route per peer).
    Vxlan(VxlanConfig),
    /// IP-in-IP (one route per peer).
    IpIp(IpIpConfig),
    /// Nothing in the kernel: the host's default route takes the packets
    /// to a router that knows the peers' subnets, such as a cloud's route
    /// table (with feature `aws`,
    /// `aws_vpc::AwsVpcRoutes::reconcile_beyond` keeps a VPC's with the
    /// peers a reconcile placed on [`super::PeerPath::RouteTable`], so
    /// direct routes on the segment use none of its quota).
    RouteTable,
}

/// How a node reaches its peers' subnets.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// One route per peer subnet via the peer's underlay address (Flannel's
    /// host-gw): peers must share the node's layer-2 segment.
    HostGw,
    /// Flannel's VXLAN: per peer a permanent neighbour (peer VTEP address →
    /// VTEP MAC), an FDB entry (VTEP MAC → underlay address) and
    /// `PEER-SUBNET via PEER-VTEP dev VXLAN onlink`.
    Vxlan(VxlanConfig),
    /// IP-in-IP (Calico's and Flannel's ipip): per peer `PEER-SUBNET via
    /// PEER-UNDERLAY dev TUNNEL onlink`.
    IpIp(IpIpConfig),
    /// Direct (host-gw) routes to peers on the node's segment, `encap` to
    /// the others (Calico's CrossSubnet, Flannel's DirectRouting).
    CrossSubnet {
        /// The encapsulation beyond the segment.
        encap: Encap,
    },
    /// WireGuard: one encrypted device; per peer a WireGuard peer (its
    /// public key, endpoint `UNDERLAY:PORT`, its subnet as allowed IPs)
    /// and `PEER-SUBNET dev WG`.
    WireGuard(WireGuardConfig),
}

impl Backend {
    /// `vxlan` with Flannel's defaults.
    pub fn vxlan() -> Self {
        Backend::Vxlan(VxlanConfig::default())
    }
    /// `ipip` with defaults.
    pub fn ipip() -> Self {
        Backend::IpIp(IpIpConfig::default())
    }

    /// The name a node publishes in its lease (`NodeAttrs::backend`):
    /// `host-gw`, `vxlan`, `ipip`, `vxlan-cross-subnet`, `ipip-cross-subnet`,
    /// `route-table-cross-subnet`, `wireguard`.
    /// [`Backend::from_str`] parses it back (with default settings).
    pub fn name(&self) -> &'static str {
        match self {
            Backend::HostGw => "host-gw",
            Backend::Vxlan(_) => "vxlan",
            Backend::IpIp(_) => "ipip",
            Backend::CrossSubnet {
                encap: Encap::Vxlan(_),
            } => "vxlan-cross-subnet",
            Backend::CrossSubnet {
                encap: Encap::IpIp(_),
            } => "ipip-cross-subnet",
            Backend::CrossSubnet {
                encap: Encap::RouteTable,
            } => "route-table-cross-subnet",
            Backend::WireGuard(_) => "wireguard",
        }
    }

    pub(crate) fn vxlan_config(&self) -> Option<&VxlanConfig> {
        match self {
            Backend::Vxlan(c)
            | Backend::CrossSubnet {
                encap: Encap::Vxlan(c),
            } => Some(c),
            _ => None,
        }
    }

    pub(crate) fn ipip_config(&self) -> Option<&IpIpConfig> {
        match self {
            Backend::IpIp(c)
            | Backend::CrossSubnet {
                encap: Encap::IpIp(c),
            } => Some(c),
            _ => None,
        }
    }

    pub(crate) fn wireguard_config(&self) -> Option<&WireGuardConfig> {
        match self {
            Backend::WireGuard(c) => Some(c),
            _ => None,
        }
    }

    /// Whether peers on the node's segment are routed directly.
    pub(crate) fn direct_on_segment(&self) -> bool {
        matches!(self, Backend::HostGw | Backend::CrossSubnet { .. })
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(c) = self.vxlan_config() {
            c.validate()?;
        }
        if let Some(m) = self.ipip_config().and_then(|c| c.mtu) {
            validate_mtu("ipip backend", m)?;
        }
        if let Some(c) = self.wireguard_config() {
            c.validate()?;
        }
        Ok(())
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = Error;
    /// One of the names [`Backend::name`] gives (`hostgw` and
    /// `cross-subnet`, meaning vxlan beyond the segment, are accepted too;
    /// `wireguard` has its default key file).
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "host-gw" | "hostgw" => Backend::HostGw,
            "vxlan" => Backend::vxlan(),
            "ipip" => Backend::ipip(),
            "vxlan-cross-subnet" | "cross-subnet" => Backend::CrossSubnet {
                encap: Encap::Vxlan(VxlanConfig::default()),
            },
            "ipip-cross-subnet" => Backend::CrossSubnet {
                encap: Encap::IpIp(IpIpConfig::default()),
            },
            "route-table-cross-subnet" => Backend::CrossSubnet {
                encap: Encap::RouteTable,
            },
            "wireguard" => Backend::WireGuard(WireGuardConfig::default()),
            _ => {
                return Err(Error::invalid(
                    format!("backend {s:?}"),
                    "expected host-gw, vxlan, ipip, vxlan-cross-subnet, ipip-cross-subnet, \
                     route-table-cross-subnet or wireguard",
                ))
            }
        })
    }
}

/// Another node, as the node needs it to route to it: the `NodeLease` of
/// the IPAM reduced to what routing uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Node name (for reports).
    pub name: String,
    /// Its pod subnet.
    pub subnet: IpNet,
    /// Its underlay address: next hop (host-gw), VTEP / tunnel endpoint.
    pub underlay: IpAddr,
    /// Its VTEP's MAC (the vxlan backends need it).
    pub vtep_mac: Option<MacAddr>,
    /// Its WireGuard public key (the wireguard backend needs it).
    pub wireguard_key: Option<PublicKey>,
}

impl Peer {
    /// A peer without VTEP MAC (host-gw, ipip).
    pub fn new(name: &str, subnet: IpNet, underlay: IpAddr) -> Self {
        Peer {
            name: name.to_string(),
            subnet,
            underlay,
            vtep_mac: None,
            wireguard_key: None,
        }
    }

    /// With a WireGuard public key (wireguard).
    pub fn with_wireguard_key(mut self, key: PublicKey) -> Self {
        self.wireguard_key = Some(key);
        self
    }

    /// With a VTEP MAC (vxlan).
    pub fn with_vtep_mac(mut self, mac: MacAddr) -> Self {
        self.vtep_mac = Some(mac);
        self
    }

    /// The peer's VTEP address: its subnet's network address.
    pub fn vtep_ip(&self) -> IpAddr {
        self.subnet.network()
    }

    /// The peer a lease describes. `InvalidArgument` when the lease
    /// publishes no underlay address (every backend routes to it), or
    /// publishes a vxlan backend but no VTEP MAC, or wireguard but no valid
    /// public key ([`WIREGUARD_KEY_ATTR`]).
    pub fn from_lease(lease: &NodeLease) -> Result<Peer> {
        let ctx = || format!("peer from the lease of node {:?}", lease.node);
        let underlay = lease.attrs.underlay_ip.ok_or_else(|| {
            Error::invalid(
                ctx(),
                "the lease publishes no underlay_ip; every backend routes to that address",
            )
        })?;
        let backend = lease.attrs.backend.as_deref().unwrap_or("");
        if backend.starts_with("vxlan") && lease.attrs.vtep_mac.is_none() {
            return Err(Error::invalid(
                ctx(),
                format!(
                    "the lease publishes backend {backend:?} but no vtep_mac; \
                     peers cannot reach its VTEP without it"
                ),
            ));
        }
        let wireguard_key = match lease.attrs.extra.get(WIREGUARD_KEY_ATTR) {
            Some(k) => Some(k.parse::<PublicKey>().map_err(|e| e.with_context(ctx()))?),
            None if backend == "wireguard" => {
                return Err(Error::invalid(
                    ctx(),
                    format!(
                        "the lease publishes backend \"wireguard\" but no {WIREGUARD_KEY_ATTR}; \
                         peers cannot encrypt to it without its public key"
                    ),
                ))
            }
            None => None,
        };
        Ok(Peer {
            name: lease.node.clone(),
            subnet: lease.subnet,
            underlay,
            vtep_mac: lease.attrs.vtep_mac,
            wireguard_key,
        })
    }
}

/// What a node publishes in its lease for `backend`: underlay address,
/// backend name, for the vxlan backends the VTEP MAC its device uses, for
/// wireguard its public key (`wg_key`).
pub(crate) fn lease_attrs(
    cfg: &NodeConfig,
    backend: &Backend,
    wg_key: Option<PublicKey>,
) -> NodeAttrs {
    let mut extra = std::collections::BTreeMap::new();
    if let Some(k) = wg_key {
        extra.insert(WIREGUARD_KEY_ATTR.to_string(), k.to_base64());
    }
    NodeAttrs {
        extra,
        underlay_ip: Some(cfg.underlay_ip),
        backend: Some(backend.name().to_string()),
        vtep_mac: backend
            .vxlan_config()
            .map(|c| c.mac.unwrap_or_else(|| vtep_mac_for(&cfg.name))),
    }
}

/// The VTEP MAC of node `name`: stable, locally administered, unicast.
///
/// The 64-bit FNV-1a hash of `"cnet-vtep:" + name`; its six low-order bytes
/// (big-endian) are the MAC, with the first byte's two low bits set to
/// `10` (locally administered, unicast). The same name gives the same MAC
/// on every machine and after the device is re-created, so peers' FDB and
/// neighbour entries stay right. Two names share a MAC with probability
/// about n²/2⁴⁷ (≈ 2·10⁻⁷ for 5,000 nodes); a reconcile refuses peers
/// whose MACs collide.
pub fn vtep_mac_for(name: &str) -> MacAddr {
    // FNV-1a is written out rather than taken from a crate: the MAC is a
    // function nodes must agree on across versions, so its definition (two
    // constants, one loop) belongs here, next to this documentation.
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in b"cnet-vtep:".iter().chain(name.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    let b = h.to_be_bytes();
    MacAddr([(b[2] & 0xfc) | 0x02, b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vtep_mac_is_stable_local_and_unicast() {
        let a = vtep_mac_for("node-a");
        assert_eq!(a, vtep_mac_for("node-a"));
        assert_ne!(a, vtep_mac_for("node-b"));
        assert!(a.is_valid_unicast());
        assert_eq!(a.0[0] & 0x03, 0x02, "locally administered, unicast: {a}");
        // Pinned: nodes of different versions must agree.
        assert_eq!(vtep_mac_for("node-a").to_string(), golden("node-a"));
        let macs: std::collections::HashSet<_> =
            (0..5000).map(|i| vtep_mac_for(&format!("n{i}"))).collect();
        assert_eq!(macs.len(), 5000);
    }

    /// The definition, spelled out independently of the implementation.
    fn golden(name: &str) -> String {
        let mut h: u64 = 14695981039346656037;
        for b in format!("cnet-vtep:{name}").bytes() {
            h = (h ^ b as u64).wrapping_mul(1099511628211);
        }
        let b = h.to_be_bytes();
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            (b[2] & 0xfc) | 2,
            b[3],
            b[4],
            b[5],
            b[6],
            b[7]
        )
    }

    fn lease(node: &str, attrs: NodeAttrs) -> NodeLease {
        NodeLease {
            node: node.into(),
            subnet: "10.244.2.0/24".parse().unwrap(),
            attrs,
            expires: None,
        }
    }

    #[test]
    fn peer_from_lease_needs_underlay_and_vxlan_mac() {
        let e = Peer::from_lease(&lease("b", NodeAttrs::default())).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        assert!(e.to_string().contains("underlay_ip"), "{e}");
        let attrs = NodeAttrs {
            underlay_ip: Some("192.0.2.12".parse().unwrap()),
            backend: Some("vxlan".into()),
            ..Default::default()
        };
        let e = Peer::from_lease(&lease("b", attrs.clone())).unwrap_err();
        assert!(e.to_string().contains("vtep_mac"), "{e}");
        let mac = vtep_mac_for("b");
        let p = Peer::from_lease(&lease(
            "b",
            NodeAttrs {
                vtep_mac: Some(mac),
                ..attrs.clone()
            },
        ))
        .unwrap();
        assert_eq!(p.vtep_mac, Some(mac));
        assert_eq!(p.vtep_ip(), "10.244.2.0".parse::<IpAddr>().unwrap());
        // host-gw needs no MAC.
        let p = Peer::from_lease(&lease(
            "b",
            NodeAttrs {
                backend: Some("host-gw".into()),
                ..attrs
            },
        ))
        .unwrap();
        assert_eq!(p.vtep_mac, None);
    }

    #[test]
    fn backend_names_round_trip() {
        for b in [
            Backend::HostGw,
            Backend::vxlan(),
            Backend::ipip(),
            Backend::CrossSubnet {
                encap: Encap::Vxlan(VxlanConfig::default()),
            },
            Backend::CrossSubnet {
                encap: Encap::IpIp(IpIpConfig::default()),
            },
            Backend::WireGuard(WireGuardConfig::default()),
        ] {
            assert_eq!(b.name().parse::<Backend>().unwrap(), b);
        }
        assert!("wireguard".parse::<Backend>().is_ok());
        assert!("wg".parse::<Backend>().is_err());
    }

    #[test]
    fn node_config_is_checked() {
        let ok = NodeConfig::new(
            "a",
            "10.244.1.0/24".parse().unwrap(),
            "eth0",
            "192.0.2.11".parse().unwrap(),
        );
        ok.validate().unwrap();
        let mut bad = ok.clone();
        bad.subnet = "10.244.1.1/24".parse().unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("10.244.1.0/24"));
        let mut bad = ok.clone();
        bad.vxlan_dev = "a-very-long-name-x".into();
        assert!(bad.validate().is_err());
        let mut bad = ok;
        bad.ipip_dev = bad.vxlan_dev.clone();
        assert!(bad.validate().is_err());
        assert!(VxlanConfig {
            vni: 1 << 24,
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
