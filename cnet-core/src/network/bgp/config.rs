//! What a node's BIRD is told ([`BgpConfig`], [`BgpPeer`], [`BgpMode`]) and
//! the BIRD 2 configuration written from it ([`BgpConfig::render`]). Plain
//! data, checked before anything is written; the rendering is pure (pinned
//! by snapshots).
//!
//! The configuration follows Calico's `bird.cfg` templates, cut down to
//! what cnet needs:
//!
//! ```text
//!   protocol static cnet_subnet   SUBNET blackhole  ── the anchor: announced whether or not a
//!                                                      container is attached (kept out of the
//!                                                      kernel: the bridge's route serves locally)
//!   filter cnet_to_peers          only cnet_subnet's route ─▶ every BGP session
//!   filter cnet_from_peers        only more-specifics of the cluster CIDR, never our own subnet
//!   filter cnet_to_kernel         only BGP-learned routes ─▶ kernel (`proto bird`, metric 32);
//!                                 ipip / cross-subnet: `via PEER dev TUNNEL onlink`
//!   protocol bgp peer_<name>      one per peer, from template cnet_peer (iBGP AS 64512 by default)
//! ```

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::link::validate_name;

/// Calico's default AS number (a private one): iBGP between all nodes.
pub const DEFAULT_ASN: u32 = 64512;

/// How packets to a peer's subnet travel (Calico's IPIP modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BgpMode {
    /// No encapsulation: learned routes go `via PEER-UNDERLAY dev UNDERLAY`;
    /// every peer must share the node's layer-2 segment.
    #[default]
    NoEncap,
    /// IP-in-IP to every peer: `via PEER-UNDERLAY dev TUNNEL onlink`.
    IpIp,
    /// Direct to peers on the node's segment, IP-in-IP to the others
    /// (Calico's `ipipMode: CrossSubnet`).
    CrossSubnet,
}

impl BgpMode {
    /// Whether this mode needs the IP-in-IP device.
    pub fn needs_tunnel(self) -> bool {
        !matches!(self, BgpMode::NoEncap)
    }
}

/// BGP timers, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BgpTimers {
    /// Hold time: a silent peer is declared down after this long.
    pub hold: u16,
    /// Keepalive interval (at most a third of `hold`).
    pub keepalive: u16,
    /// Delay before the first connection attempt, and between retries.
    pub connect: u16,
}

impl Default for BgpTimers {
    /// BIRD's defaults: hold 240 s, keepalive 80 s, connect delay 5 s.
    fn default() -> Self {
        BgpTimers {
            hold: 240,
            keepalive: 80,
            connect: 5,
        }
    }
}

impl BgpTimers {
    /// Short timers for labs and tests: hold 3 s, keepalive 1 s, connect 1 s.
    /// A killed node's routes leave its peers' tables within 3 s.
    pub fn fast() -> Self {
        BgpTimers {
            hold: 3,
            keepalive: 1,
            connect: 1,
        }
    }
}

/// One BGP neighbour of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpPeer {
    /// Its name (the peer node's name; BIRD's protocol is `peer_<name>`,
    /// the name kept as the protocol's description).
    pub name: String,
    /// Its underlay address (the BGP session's neighbour address).
    pub address: IpAddr,
    /// Its AS; `None`: the node's own (iBGP). Another AS makes an eBGP
    /// session (a top-of-rack router, Calico's `BGPPeer` with `asNumber`).
    pub asn: Option<u32>,
    /// This node reflects routes to the peer (the node is a route reflector
    /// and the peer its client).
    pub rr_client: bool,
}

impl BgpPeer {
    /// An iBGP peer `name` at `address`.
    pub fn new(name: &str, address: IpAddr) -> Self {
        BgpPeer {
            name: name.to_string(),
            address,
            asn: None,
            rr_client: false,
        }
    }

    /// An eBGP peer (a ToR router) in AS `asn`.
    pub fn with_asn(mut self, asn: u32) -> Self {
        self.asn = Some(asn);
        self
    }

    /// Reflect routes to this peer (this node is its route reflector).
    pub fn rr_client(mut self) -> Self {
        self.rr_client = true;
        self
    }

    /// BIRD's protocol name for this peer: `peer_` and the name with every
    /// character outside `[A-Za-z0-9_]` as `_`.
    pub fn protocol_name(&self) -> String {
        protocol_name(&self.name)
    }
}

/// `peer_` + `name` with every character outside `[A-Za-z0-9_]` as `_`.
pub(crate) fn protocol_name(name: &str) -> String {
    let mut s = String::from("peer_");
    s.extend(
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    s
}

/// A node's BGP configuration: who it is, what it announces, its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    /// Node name (for messages and the file's header).
    pub node: String,
    /// The underlay address: BIRD's `router id` and the sessions' source.
    pub underlay_ip: IpAddr,
    /// The node's segment (`192.0.2.0/24`): peers inside it are reached
    /// directly, the others over the tunnel in [`BgpMode::CrossSubnet`].
    pub segment: IpNet,
    /// The underlay device (`eth0`; the tunnel sits on it).
    pub underlay_dev: String,
    /// The node's pod subnet, announced to every peer; `None` for a node
    /// that only reflects or relays (a route reflector in a router).
    pub subnet: Option<IpNet>,
    /// The cluster's pod CIDR (`10.244.0.0/16`): only its more-specifics
    /// are accepted from peers.
    pub cluster: IpNet,
    /// The node's AS (default [`DEFAULT_ASN`]).
    pub asn: u32,
    /// Encapsulation.
    pub mode: BgpMode,
    /// The IP-in-IP device of [`BgpMode::IpIp`] / [`BgpMode::CrossSubnet`]
    /// (default `cnet.ipip`, the node's).
    pub tunnel_dev: String,
    /// Install learned routes in the kernel (default true; a route
    /// reflector that forwards no pod traffic turns it off).
    pub install_routes: bool,
    /// Route-reflector cluster id, when this node reflects (default: none).
    pub rr_cluster_id: Option<IpAddr>,
    /// Timers (default BIRD's).
    pub timers: BgpTimers,
    /// The peers (full mesh: every other node).
    pub peers: Vec<BgpPeer>,
}

impl BgpConfig {
    /// A node `node` at `underlay_ip` in `segment` on `underlay_dev`,
    /// announcing `subnet` out of `cluster`: iBGP AS 64512, no
    /// encapsulation, BIRD's timers, no peers yet.
    pub fn new(
        node: &str,
        underlay_ip: IpAddr,
        segment: IpNet,
        underlay_dev: &str,
        subnet: Option<IpNet>,
        cluster: IpNet,
    ) -> Self {
        BgpConfig {
            node: node.to_string(),
            underlay_ip,
            segment: segment.trunc(),
            underlay_dev: underlay_dev.to_string(),
            subnet,
            cluster,
            asn: DEFAULT_ASN,
            mode: BgpMode::NoEncap,
            tunnel_dev: crate::network::NodeConfig::IPIP_DEV.to_string(),
            install_routes: true,
            rr_cluster_id: None,
            timers: BgpTimers::default(),
            peers: Vec::new(),
        }
    }

    /// With these peers (replacing any).
    pub fn peers(mut self, peers: Vec<BgpPeer>) -> Self {
        self.peers = peers;
        self
    }

    /// With encapsulation `mode`.
    pub fn mode(mut self, mode: BgpMode) -> Self {
        self.mode = mode;
        self
    }

    /// With `timers`.
    pub fn timers(mut self, timers: BgpTimers) -> Self {
        self.timers = timers;
        self
    }

    /// As a route reflector with `cluster_id` (its peers marked
    /// [`BgpPeer::rr_client`] get reflected routes).
    pub fn route_reflector(mut self, cluster_id: IpAddr) -> Self {
        self.rr_cluster_id = Some(cluster_id);
        self
    }

    /// Whether to install learned routes in the kernel.
    pub fn install_routes(mut self, yes: bool) -> Self {
        self.install_routes = yes;
        self
    }

    /// Check every field; nothing is written when this fails.
    pub fn validate(&self) -> Result<()> {
        let ctx = || format!("bgp config of node {:?}", self.node);
        let bad = |r: String| Err(Error::invalid(ctx(), r));
        if self.node.is_empty() {
            return bad("the node name must not be empty".into());
        }
        let v4 = |a: IpAddr| a.is_ipv4();
        if !v4(self.underlay_ip)
            || !v4(self.segment.addr())
            || !v4(self.cluster.addr())
            || self.subnet.is_some_and(|s| !v4(s.addr()))
        {
            return bad("only IPv4 is supported (underlay, segment, cluster and subnet)".into());
        }
        if !self.segment.contains(&self.underlay_ip) {
            return bad(format!(
                "the underlay address {} is not in its segment {}",
                self.underlay_ip, self.segment
            ));
        }
        if let Some(s) = self.subnet {
            if s.addr() != s.network() {
                return bad(format!("subnet {s} has host bits set"));
            }
            if !self.cluster.contains(&s) {
                return bad(format!(
                    "subnet {s} is not inside the cluster CIDR {}",
                    self.cluster
                ));
            }
        }
        if self.asn == 0 {
            return bad("AS 0 is reserved".into());
        }
        let t = self.timers;
        if t.hold < 3 || t.keepalive == 0 || t.keepalive > t.hold / 3 || t.connect == 0 {
            return bad(format!(
                "timers hold {} keepalive {} connect {}: hold must be at least 3 s, keepalive \
                 1 s to hold/3, connect at least 1 s",
                t.hold, t.keepalive, t.connect
            ));
        }
        validate_name(&self.underlay_dev).map_err(|e| e.with_context(ctx()))?;
        if self.mode.needs_tunnel() {
            validate_name(&self.tunnel_dev).map_err(|e| e.with_context(ctx()))?;
        }
        let mut protos = std::collections::HashSet::new();
        let mut addrs = std::collections::HashSet::new();
        for p in &self.peers {
            if p.name.is_empty() {
                return bad("a peer has an empty name".into());
            }
            if !protos.insert(p.protocol_name()) {
                return bad(format!(
                    "peer {:?}: two peers have the BIRD protocol name {} (names differ only \
                     in characters outside [A-Za-z0-9_])",
                    p.name,
                    p.protocol_name()
                ));
            }
            if !v4(p.address) {
                return bad(format!("peer {:?}: only IPv4 is supported", p.name));
            }
            if p.address == self.underlay_ip {
                return bad(format!("peer {:?} has this node's own address", p.name));
            }
            if !addrs.insert(p.address) {
                return bad(format!(
                    "peer {:?}: address {} is another peer's",
                    p.name, p.address
                ));
            }
            if p.asn == Some(0) {
                return bad(format!("peer {:?}: AS 0 is reserved", p.name));
            }
            if p.rr_client && self.rr_cluster_id.is_none() {
                return bad(format!(
                    "peer {:?} is a route-reflector client but this node is no route \
                     reflector (set rr_cluster_id)",
                    p.name
                ));
            }
            if self.mode == BgpMode::NoEncap
                && self.install_routes
                && !self.segment.contains(&p.address)
                && p.asn.is_none()
            {
                return bad(format!(
                    "peer {:?} at {} is outside the segment {}: without encapsulation its \
                     routes would be unreachable (use BgpMode::CrossSubnet or IpIp)",
                    p.name, p.address, self.segment
                ));
            }
        }
        Ok(())
    }

    /// The BIRD 2 configuration file (`bird -c FILE`). Validates first.
    /// One step per section, in the file's order.
    pub fn render(&self) -> Result<String> {
        self.validate()?;
        let mut s = String::new();
        self.write_globals(&mut s);
        self.write_anchor(&mut s);
        self.write_peer_filters(&mut s);
        self.write_kernel_filter(&mut s);
        self.write_kernel(&mut s);
        self.write_template(&mut s);
        for p in &self.peers {
            self.write_peer(&mut s, p);
        }
        Ok(s)
    }

    /// Next hops are resolved through BIRD's own table (recursive
    /// gateways) in the tunnel modes.
    fn recursive(&self) -> bool {
        self.mode.needs_tunnel()
    }

    // Writing to a String cannot fail: the `writeln!` results below are
    // ignored.

    /// The header, router id, logging, and the device (and direct)
    /// protocols.
    fn write_globals(&self, w: &mut String) {
        let _ = writeln!(
            w,
            "# BIRD configuration of node {:?}, written by cnet (cnet_core::network::bgp).\n\
             # Regenerated on every change; edits are lost.",
            self.node
        );
        let _ = writeln!(w, "router id {};", self.underlay_ip);
        let _ = writeln!(w, "log stderr all;");
        let _ = writeln!(w, "timeformat protocol iso long ms;");
        let _ = writeln!(w, "timeformat route iso long ms;");
        let _ = writeln!(w, "timeformat base iso long ms;");
        let _ = writeln!(w);
        let _ = writeln!(w, "protocol device {{ scan time 10; }}");
        // Recursive next hops (tunnel modes) and peers beyond the segment
        // (multihop sessions cannot use direct gateways) are resolved
        // through connected routes.
        let any_multihop = self
            .peers
            .iter()
            .any(|p| !self.segment.contains(&p.address));
        if self.recursive() || any_multihop {
            // Connected routes, to resolve those next hops; never the pod
            // subnets (the bridge's route would shadow the anchor).
            let _ = writeln!(
                w,
                "protocol direct cnet_direct {{ ipv4 {{ import where !(net ~ [ {}+ ]); }}; \
                 interface \"*\"; }}",
                self.cluster
            );
        }
    }

    /// `protocol static cnet_subnet`: the node's subnet, announced whatever
    /// is attached (none for a node without a subnet).
    fn write_anchor(&self, w: &mut String) {
        let Some(subnet) = self.subnet else {
            return;
        };
        let _ = writeln!(w);
        let _ = writeln!(
            w,
            "# The anchor of the announcement: the whole subnet, whatever is attached."
        );
        let _ = writeln!(
            w,
            "protocol static cnet_subnet {{ ipv4; route {subnet} blackhole; }}"
        );
    }

    /// `filter cnet_to_peers` (our subnet; reflected routes) and `filter
    /// cnet_from_peers` (more-specifics of the cluster CIDR, never our own
    /// subnet).
    fn write_peer_filters(&self, w: &mut String) {
        let _ = writeln!(w);
        let _ = writeln!(w, "filter cnet_to_peers {{");
        if self.subnet.is_some() {
            let _ = writeln!(w, "  if proto = \"cnet_subnet\" then accept;");
        }
        if self.rr_cluster_id.is_some() {
            let _ = writeln!(w, "  if source = RTS_BGP then accept;");
        }
        let _ = writeln!(w, "  reject;\n}}");
        let _ = writeln!(w, "filter cnet_from_peers {{");
        match self.subnet {
            Some(own) => {
                let _ = writeln!(
                    w,
                    "  if net ~ [ {}+ ] && net != {own} then accept;",
                    self.cluster
                );
            }
            None => {
                let _ = writeln!(w, "  if net ~ [ {}+ ] then accept;", self.cluster);
            }
        }
        let _ = writeln!(w, "  reject;\n}}");
    }

    /// `filter cnet_to_kernel`: BGP-learned routes only, over the tunnel
    /// as the mode says.
    fn write_kernel_filter(&self, w: &mut String) {
        let _ = writeln!(w, "filter cnet_to_kernel {{");
        let _ = writeln!(w, "  if source != RTS_BGP then reject;");
        // In this order: `ifname` clears the gateway, `onlink` lets `gw`
        // take an address that is no neighbour on the tunnel.
        let tunnel = format!(
            "{{ ifname = \"{}\"; onlink = true; gw = bgp_next_hop; }}",
            self.tunnel_dev
        );
        match self.mode {
            BgpMode::NoEncap => {}
            BgpMode::IpIp => {
                let _ = writeln!(w, "  {tunnel}");
            }
            BgpMode::CrossSubnet => {
                let _ = writeln!(w, "  if !(bgp_next_hop ~ {}) then {tunnel}", self.segment);
            }
        }
        let _ = writeln!(w, "  accept;\n}}");
    }

    /// `protocol kernel cnet_kernel`: what goes into the kernel's table
    /// (and, in the tunnel modes, the underlay routes learned from it).
    fn write_kernel(&self, w: &mut String) {
        let export = if self.install_routes {
            "filter cnet_to_kernel"
        } else {
            "none"
        };
        let _ = writeln!(w);
        let _ = writeln!(w, "protocol kernel cnet_kernel {{");
        if self.recursive() {
            // Learn the underlay's routes set by others (the default route
            // via the router), not the pod subnets.
            let _ = writeln!(w, "  learn;");
            let _ = writeln!(
                w,
                "  ipv4 {{ import filter {{ if net ~ [ {}+ ] then reject; accept; }}; \
                 export {export}; }};",
                self.cluster,
            );
        } else {
            let _ = writeln!(w, "  ipv4 {{ import none; export {export}; }};");
        }
        let _ = writeln!(w, "  scan time 10;\n  graceful restart off;\n}}");
    }

    /// `template bgp cnet_peer`: what every session shares (AS, timers,
    /// filters, route-reflector cluster).
    fn write_template(&self, w: &mut String) {
        let t = self.timers;
        let _ = writeln!(w);
        let _ = writeln!(w, "template bgp cnet_peer {{");
        let _ = writeln!(w, "  local {} as {};", self.underlay_ip, self.asn);
        let _ = writeln!(w, "  hold time {}; keepalive time {};", t.hold, t.keepalive);
        let _ = writeln!(
            w,
            "  connect delay time {0}; connect retry time {0}; error wait time {0}, {1};",
            t.connect,
            t.connect.saturating_mul(5)
        );
        let _ = writeln!(w, "  graceful restart off;");
        if let Some(id) = self.rr_cluster_id {
            let _ = writeln!(w, "  rr cluster id {id};");
        }
        let _ = writeln!(
            w,
            "  ipv4 {{ import filter cnet_from_peers; export filter cnet_to_peers; }};"
        );
        let _ = writeln!(w, "}}");
    }

    /// `protocol bgp peer_NAME from cnet_peer`: one session.
    fn write_peer(&self, w: &mut String, p: &BgpPeer) {
        let _ = writeln!(w);
        let _ = writeln!(w, "protocol bgp {} from cnet_peer {{", p.protocol_name());
        let _ = writeln!(w, "  description \"{}\";", p.name.replace('"', "'"));
        let _ = writeln!(
            w,
            "  neighbor {} as {};",
            p.address,
            p.asn.unwrap_or(self.asn)
        );
        let on_segment = self.segment.contains(&p.address);
        let _ = writeln!(w, "  {};", if on_segment { "direct" } else { "multihop" });
        if p.rr_client {
            let _ = writeln!(w, "  rr client;");
        }
        let gateway = if self.recursive() || !on_segment {
            "recursive"
        } else {
            "direct"
        };
        // eBGP (a ToR): the ToR forwards; it must see us as next hop.
        let ebgp = p.asn.is_some_and(|a| a != self.asn);
        let _ = writeln!(
            w,
            "  ipv4 {{ gateway {gateway};{} }};",
            if ebgp { " next hop self;" } else { "" }
        );
        let _ = writeln!(w, "}}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn h1() -> BgpConfig {
        BgpConfig::new(
            "h1",
            ip("192.0.2.11"),
            "192.0.2.0/24".parse().unwrap(),
            "eth0",
            Some("10.244.1.0/24".parse().unwrap()),
            "10.244.0.0/16".parse().unwrap(),
        )
        .timers(BgpTimers::fast())
        .peers(vec![
            BgpPeer::new("h2", ip("192.0.2.12")),
            BgpPeer::new("h3", ip("192.0.2.13")),
        ])
    }

    /// `bird -p` parses the file (where BIRD is installed; CI installs it).
    fn bird_parses(text: &str) {
        let dir = std::env::temp_dir().join(format!("cnet-bgp-parse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join(format!("{:x}.conf", fastrand::u64(..)));
        std::fs::write(&f, text).unwrap();
        let out = std::process::Command::new(crate::network::bgp::BIRD_BIN)
            .arg("-p")
            .arg("-c")
            .arg(&f)
            .output();
        let _ = std::fs::remove_file(&f);
        let _ = std::fs::remove_dir(&dir); // the last test out removes it
        match out {
            Ok(o) => assert!(
                o.status.success(),
                "bird -p: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("bird not installed ({e}): config not parsed by BIRD"),
        }
    }

    #[test]
    fn bgp_full_mesh_no_encap() {
        let text = h1().render().unwrap();
        bird_parses(&text);
        insta::assert_snapshot!(text);
    }

    #[test]
    fn bgp_cross_subnet_with_route_reflector_peer() {
        let mut c = h1().mode(BgpMode::CrossSubnet);
        c.peers.push(BgpPeer::new("rr", ip("192.0.2.1")));
        let text = c.render().unwrap();
        bird_parses(&text);
        insta::assert_snapshot!(text);
    }

    #[test]
    fn bgp_route_reflector_without_subnet() {
        let c = BgpConfig::new(
            "rt",
            ip("192.0.2.1"),
            "192.0.2.0/24".parse().unwrap(),
            "eth0",
            None,
            "10.244.0.0/16".parse().unwrap(),
        )
        .route_reflector(ip("192.0.2.1"))
        .install_routes(false)
        .peers(vec![
            BgpPeer::new("h1", ip("192.0.2.11")).rr_client(),
            BgpPeer::new("h4", ip("198.51.100.14")).rr_client(),
            BgpPeer::new("tor", ip("192.0.2.254")).with_asn(65000),
        ]);
        let text = c.render().unwrap();
        bird_parses(&text);
        insta::assert_snapshot!(text);
    }

    #[test]
    fn bgp_config_refuses_bad_input() {
        let cases: Vec<(BgpConfig, &str)> = vec![
            (
                h1().peers(vec![BgpPeer::new("far", ip("198.51.100.14"))]),
                "outside the segment",
            ),
            (
                h1().peers(vec![BgpPeer::new("me", ip("192.0.2.11"))]),
                "own address",
            ),
            (
                h1().peers(vec![
                    BgpPeer::new("a-b", ip("192.0.2.12")),
                    BgpPeer::new("a.b", ip("192.0.2.13")),
                ]),
                "protocol name peer_a_b",
            ),
            (
                h1().peers(vec![BgpPeer::new("c", ip("192.0.2.12")).rr_client()]),
                "no route reflector",
            ),
            (
                h1().timers(BgpTimers {
                    hold: 3,
                    keepalive: 2,
                    connect: 1,
                }),
                "keepalive",
            ),
            (
                BgpConfig {
                    subnet: Some("10.245.1.0/24".parse().unwrap()),
                    ..h1()
                },
                "not inside the cluster",
            ),
            (
                BgpConfig {
                    underlay_ip: ip("2001:db8::1"),
                    ..h1()
                },
                "only IPv4",
            ),
        ];
        for (c, want) in cases {
            let e = c.render().unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
            assert!(e.to_string().contains(want), "{e} should say {want:?}");
        }
    }

    #[test]
    fn bgp_protocol_names() {
        assert_eq!(protocol_name("node-1.example"), "peer_node_1_example");
    }
}
