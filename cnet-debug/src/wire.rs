//! Decoding captured frames into a validated summary of what they carry,
//! outer and inner for VXLAN and IP-in-IP, with the bytes each layer covers.
//!
//! ```text
//! Ethernet ─┬─ 802.1Q / 802.1ad tags (stacked, QinQ) ─┐
//!           ├──────────────────────────────────────────┴─┬─ IPv4 ─┬─ [fragment] ─ ICMP (echo id/seq)
//!           │                                            │        ├─ UDP ─┬─ dst 8472/4789 → VXLAN (VNI) → Ethernet …  (inner)
//!           │                                            │        │       └─ payload (probe token)
//!           │                                            │        ├─ TCP
//!           │                                            │        ├─ proto 4 (IPIP) → IPv4 …                        (inner)
//!           │                                            │        └─ proto 41 (6in4) → IPv6 …                       (inner)
//!           │                                            └─ IPv6 ─ extension headers ─ [fragment] ─ ICMPv6 / UDP / TCP / 4 / 41
//!           └─ ARP
//! ```
//!
//! Each header is read by `etherparse`'s zero-copy slices (Ethernet II,
//! VLAN, IPv4 with its options and AH, IPv6 with every extension header,
//! ARP, UDP, TCP, ICMP, ICMPv6): they check lengths before every access and
//! report errors instead of panicking, in the "lax" flavour that decodes a
//! truncated packet as far as it goes and honours the IP length fields
//! (Ethernet padding is not payload). What is ours: the walk between layers,
//! the VXLAN header (etherparse has none), following encapsulations up to
//! [`MAX_DEPTH`], and the fragment rule: a fragment that is not the first
//! carries no transport header, so nothing after the IP layer is decoded
//! from it. No function here indexes a slice unchecked or panics, whatever
//! the input; [`check_decoders`] states the invariants and is what the fuzz
//! targets (`cnet-debug/fuzz`) and the seeded test (`tests/fuzz_wire.rs`) run.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use etherparse::{
    ArpPacketSlice, Ethernet2Slice, Icmpv4Slice, Icmpv6Slice, Ipv6ExtensionSlice, LaxIpv4Slice,
    LaxIpv6Slice, SingleVlanSlice, TcpSlice, UdpSlice,
};

/// UDP ports on which we decode VXLAN.
pub const VXLAN_PORTS: [u16; 2] = [8472, 4789];
/// Encapsulations followed inside one another (VXLAN, IP-in-IP, 6in4) at most.
pub const MAX_DEPTH: usize = 4;
/// VLAN tags decoded in one Ethernet header at most (QinQ is two).
pub const MAX_VLAN_TAGS: usize = 4;

// Ethertypes.
const ETH_IPV4: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;
const ETH_IPV6: u16 = 0x86dd;
const ETH_8021Q: u16 = 0x8100;
const ETH_8021AD: u16 = 0x88a8;
const ETH_QINQ_OLD: u16 = 0x9100;
// IP protocol numbers.
const IP_ICMP: u8 = 1;
const IP_IPIP: u8 = 4;
const IP_TCP: u8 = 6;
const IP_UDP: u8 = 17;
const IP_IPV6: u8 = 41;
const IP_ICMPV6: u8 = 58;

/// One protocol layer, outermost first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "layer", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Layer {
    /// Ethernet II.
    Ethernet {
        /// Source MAC.
        src: String,
        /// Destination MAC.
        dst: String,
        /// Ethertype field of the header (0x8100 / 0x88a8 when tagged).
        ethertype: u16,
    },
    /// An 802.1Q tag (TPID 0x8100) or an 802.1ad service tag (0x88a8, QinQ).
    Vlan {
        /// The tag protocol identifier that announced it.
        tpid: u16,
        /// VLAN id (12 bits).
        id: u16,
        /// Priority code point (3 bits).
        pcp: u8,
        /// Ethertype of what follows the tag.
        ethertype: u16,
    },
    /// IPv4.
    Ipv4 {
        /// Source.
        src: Ipv4Addr,
        /// Destination.
        dst: Ipv4Addr,
        /// Protocol number.
        proto: u8,
        /// TTL.
        ttl: u8,
        /// Total length.
        len: u16,
    },
    /// IPv6.
    Ipv6 {
        /// Source.
        src: Ipv6Addr,
        /// Destination.
        dst: Ipv6Addr,
        /// Protocol of the payload, after any extension headers.
        next_header: u8,
        /// Hop limit.
        hop_limit: u8,
        /// Payload length field.
        payload_len: u16,
    },
    /// The IP packet above is a fragment (IPv4 flags/offset, or an IPv6
    /// fragment header). Only the first (offset 0) starts with the
    /// transport header; nothing is decoded past a later one.
    Fragment {
        /// Identification.
        id: u32,
        /// Offset of this fragment's data, in bytes.
        offset: u16,
        /// More fragments follow.
        more: bool,
    },
    /// UDP.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Checksum (0: none, as Linux VXLAN sends by default).
        checksum: u16,
    },
    /// VXLAN header.
    Vxlan {
        /// VNI.
        vni: u32,
    },
    /// TCP.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Flags (0x02 SYN, 0x12 SYN-ACK, 0x04 RST, …).
        flags: u8,
    },
    /// ICMP.
    Icmp {
        /// Type (8 echo request, 0 echo reply).
        icmp_type: u8,
        /// Code.
        code: u8,
        /// Echo identifier.
        id: u16,
        /// Echo sequence.
        seq: u16,
    },
    /// ICMPv6.
    Icmpv6 {
        /// Type (128 echo request, 129 echo reply, 135/136 neighbour solicitation/advertisement, …).
        icmp_type: u8,
        /// Code.
        code: u8,
        /// Echo identifier (bytes 4–5 of the message).
        id: u16,
        /// Echo sequence (bytes 6–7).
        seq: u16,
    },
    /// ARP.
    Arp {
        /// 1 request, 2 reply.
        op: u16,
        /// Sender protocol address.
        sender: Ipv4Addr,
        /// Target protocol address.
        target: Ipv4Addr,
    },
}

/// A decoded frame: its layers and the innermost payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Layers, outermost first.
    pub layers: Vec<Layer>,
    /// For each layer, the bytes of the input it covers: its header and
    /// everything it carries (IP and UDP length fields honoured). Nested:
    /// each lies within the one before.
    pub spans: Vec<Range<usize>>,
    /// The innermost payload (UDP, TCP, ICMP data; a later fragment's data).
    pub payload: Vec<u8>,
}

impl Decoded {
    /// Whether the innermost payload contains `token`.
    pub fn carries(&self, token: &[u8]) -> bool {
        !token.is_empty() && self.payload.windows(token.len()).any(|w| w == token)
    }

    /// Whether the frame is encapsulated (VXLAN, or IP in IP).
    pub fn encapsulated(&self) -> bool {
        self.layers.iter().any(|l| matches!(l, Layer::Vxlan { .. }))
            || self
                .layers
                .iter()
                .filter(|l| matches!(l, Layer::Ipv4 { .. } | Layer::Ipv6 { .. }))
                .count()
                > 1
    }

    /// The innermost IPv4 layer.
    pub fn inner_ipv4(&self) -> Option<(Ipv4Addr, Ipv4Addr, u8)> {
        self.layers.iter().rev().find_map(|l| match l {
            Layer::Ipv4 {
                src, dst, proto, ..
            } => Some((*src, *dst, *proto)),
            _ => None,
        })
    }

    /// The innermost IP layer, either family: source, destination, protocol.
    pub fn inner_ip(&self) -> Option<(IpAddr, IpAddr, u8)> {
        self.layers.iter().rev().find_map(|l| match l {
            Layer::Ipv4 {
                src, dst, proto, ..
            } => Some(((*src).into(), (*dst).into(), *proto)),
            Layer::Ipv6 {
                src,
                dst,
                next_header,
                ..
            } => Some(((*src).into(), (*dst).into(), *next_header)),
            _ => None,
        })
    }
}

fn mac(b: [u8; 6]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Decode an Ethernet frame (as captured on an Ethernet-like device).
pub fn decode_ethernet(frame: &[u8]) -> Decoded {
    let mut w = Walk::new(frame);
    w.ethernet(frame, 0);
    w.d
}

/// Decode a bare IPv4 packet (as captured on an L3 device such as ipip,
/// or read from a raw socket); anything else decodes to nothing.
pub fn decode_ipv4(packet: &[u8]) -> Decoded {
    let mut w = Walk::new(packet);
    if packet.first().map(|b| b >> 4) == Some(4) {
        w.ipv4(packet, 0);
    }
    w.d
}

/// Decode a bare IP packet of either family (by its version nibble).
pub fn decode_ip(packet: &[u8]) -> Decoded {
    let mut w = Walk::new(packet);
    w.ip(packet, 0);
    w.d
}

/// The walk from layer to layer over one input buffer.
struct Walk<'a> {
    base: &'a [u8],
    d: Decoded,
}

impl<'a> Walk<'a> {
    fn new(base: &'a [u8]) -> Self {
        Walk {
            base,
            d: Decoded::default(),
        }
    }

    /// Where `part` (a sub-slice of the input) starts in the input.
    fn offset(&self, part: &[u8]) -> usize {
        (part.as_ptr() as usize).saturating_sub(self.base.as_ptr() as usize)
    }

    fn push(&mut self, layer: Layer, extent: &[u8]) {
        let start = self.offset(extent);
        self.d.spans.push(start..start + extent.len());
        self.d.layers.push(layer);
    }

    /// `whole[..]` up to the end of `tail` (a sub-slice of `whole`).
    fn up_to_end_of(&self, whole: &'a [u8], tail: &[u8]) -> &'a [u8] {
        let n = (self.offset(tail) + tail.len()).saturating_sub(self.offset(whole));
        whole.get(..n).unwrap_or(whole)
    }

    fn ethernet(&mut self, b: &'a [u8], depth: usize) {
        let Ok(eth) = Ethernet2Slice::from_slice_without_fcs(b) else {
            return;
        };
        let mut ethertype = eth.ether_type().0;
        self.push(
            Layer::Ethernet {
                src: mac(eth.source()),
                dst: mac(eth.destination()),
                ethertype,
            },
            b,
        );
        let mut rest = eth.payload_slice();
        let mut tags = 0;
        while matches!(ethertype, ETH_8021Q | ETH_8021AD | ETH_QINQ_OLD) {
            if tags == MAX_VLAN_TAGS {
                return;
            }
            let Ok(tag) = SingleVlanSlice::from_slice(rest) else {
                return;
            };
            let next = tag.ether_type().0;
            self.push(
                Layer::Vlan {
                    tpid: ethertype,
                    id: tag.vlan_identifier().value(),
                    pcp: tag.priority_code_point().value(),
                    ethertype: next,
                },
                rest,
            );
            ethertype = next;
            rest = tag.payload_slice();
            tags += 1;
        }
        match ethertype {
            ETH_IPV4 => self.ipv4(rest, depth),
            ETH_IPV6 => self.ipv6(rest, depth),
            ETH_ARP => self.arp(rest),
            _ => {}
        }
    }

    fn ip(&mut self, b: &'a [u8], depth: usize) {
        match b.first().map(|v| v >> 4) {
            Some(4) => self.ipv4(b, depth),
            Some(6) => self.ipv6(b, depth),
            _ => {}
        }
    }

    fn arp(&mut self, b: &'a [u8]) {
        let Ok(a) = ArpPacketSlice::from_slice(b) else {
            return;
        };
        // Ethernet/IPv4 ARP only: htype 1, ptype 0x0800, hlen 6, plen 4.
        if a.hw_addr_type().0 != 1 || a.proto_addr_type().0 != ETH_IPV4 {
            return;
        }
        let (Ok(sender), Ok(target)) = (
            <[u8; 4]>::try_from(a.sender_protocol_addr()),
            <[u8; 4]>::try_from(a.target_protocol_addr()),
        ) else {
            return;
        };
        self.push(
            Layer::Arp {
                op: a.operation().0,
                sender: sender.into(),
                target: target.into(),
            },
            a.slice(),
        );
    }

    fn ipv4(&mut self, b: &'a [u8], depth: usize) {
        let Ok((ip, _)) = LaxIpv4Slice::from_slice(b) else {
            return;
        };
        let h = ip.header();
        let p = ip.payload();
        self.push(
            Layer::Ipv4 {
                src: h.source_addr(),
                dst: h.destination_addr(),
                proto: h.protocol().0,
                ttl: h.ttl(),
                len: h.total_len(),
            },
            self.up_to_end_of(b, p.payload),
        );
        // The offset field counts 8-byte units in 13 bits: at most 65528.
        let offset = h.fragments_offset().value().saturating_mul(8);
        if h.more_fragments() || offset > 0 {
            self.push(
                Layer::Fragment {
                    id: u32::from(h.identification()),
                    offset,
                    more: h.more_fragments(),
                },
                p.payload,
            );
        }
        self.transport(p.ip_number.0, p.payload, offset == 0, depth);
    }

    fn ipv6(&mut self, b: &'a [u8], depth: usize) {
        let Ok((ip, stop)) = LaxIpv6Slice::from_slice(b) else {
            return;
        };
        let h = ip.header();
        let p = ip.payload();
        self.push(
            Layer::Ipv6 {
                src: h.source_addr(),
                dst: h.destination_addr(),
                next_header: p.ip_number.0,
                hop_limit: h.hop_limit(),
                payload_len: h.payload_length(),
            },
            self.up_to_end_of(b, p.payload),
        );
        // One fragment layer even if (absurdly) several fragment headers
        // fragment the payload: a later fragment's if any, so that what
        // follows is read as a later fragment's data.
        let mut frag: Option<Layer> = None;
        // etherparse 0.21.0 bug (found by tests/fuzz_wire.rs): after a lax
        // parse stopped in the extension headers (a second hop-by-hop
        // header, a truncated one), the extensions slice ends at the last
        // good header while that header's next-header field still names
        // another extension, and the iterator reads it past the slice's end
        // (`get_unchecked`: undefined behaviour). Iterate only a chain that
        // parsed to its end; after a stop the payload's protocol is the
        // failed extension, so nothing below is decoded either way.
        let exts = if stop.is_none() {
            Some(ip.extensions().clone())
        } else {
            None
        };
        for ext in exts.into_iter().flatten() {
            if let Ipv6ExtensionSlice::Fragment(f) = ext {
                let offset = f.fragment_offset().value().saturating_mul(8);
                let later = matches!(frag, Some(Layer::Fragment { offset: o, .. }) if o > 0);
                if f.is_fragmenting_payload() && !later {
                    frag = Some(Layer::Fragment {
                        id: f.identification(),
                        offset,
                        more: f.more_fragments(),
                    });
                }
            }
        }
        let first = !matches!(frag, Some(Layer::Fragment { offset, .. }) if offset > 0);
        if let Some(l) = frag {
            self.push(l, p.payload);
        }
        self.transport(p.ip_number.0, p.payload, first, depth);
    }

    /// What an IP packet carries; `first`: it is not a later fragment.
    fn transport(&mut self, proto: u8, b: &'a [u8], first: bool, depth: usize) {
        if !first {
            // A later fragment's data continues the transport payload: no
            // header to decode, but the token may be in there.
            self.d.payload = b.to_vec();
            return;
        }
        match proto {
            IP_ICMP => self.icmp(b),
            IP_ICMPV6 => self.icmpv6(b),
            IP_UDP => self.udp(b, depth),
            IP_TCP => self.tcp(b),
            IP_IPIP if depth < MAX_DEPTH => self.ipv4(b, depth + 1),
            IP_IPV6 if depth < MAX_DEPTH => self.ipv6(b, depth + 1),
            _ => {}
        }
    }

    fn icmp(&mut self, b: &'a [u8]) {
        let Ok(i) = Icmpv4Slice::from_slice(b) else {
            return;
        };
        let [a, b2, c, d] = i.bytes5to8();
        self.push(
            Layer::Icmp {
                icmp_type: i.type_u8(),
                code: i.code_u8(),
                id: u16::from_be_bytes([a, b2]),
                seq: u16::from_be_bytes([c, d]),
            },
            i.slice(),
        );
        self.d.payload = i.slice().get(8..).unwrap_or(&[]).to_vec();
    }

    fn icmpv6(&mut self, b: &'a [u8]) {
        let Ok(i) = Icmpv6Slice::from_slice(b) else {
            return;
        };
        let [a, b2, c, d] = i.bytes5to8();
        self.push(
            Layer::Icmpv6 {
                icmp_type: i.type_u8(),
                code: i.code_u8(),
                id: u16::from_be_bytes([a, b2]),
                seq: u16::from_be_bytes([c, d]),
            },
            i.slice(),
        );
        self.d.payload = i.slice().get(8..).unwrap_or(&[]).to_vec();
    }

    fn tcp(&mut self, b: &'a [u8]) {
        let Ok(t) = TcpSlice::from_slice(b) else {
            return;
        };
        self.push(
            Layer::Tcp {
                src_port: t.source_port(),
                dst_port: t.destination_port(),
                flags: t.header_slice().get(13).copied().unwrap_or(0),
            },
            t.slice(),
        );
        self.d.payload = t.payload().to_vec();
    }

    fn udp(&mut self, b: &'a [u8], depth: usize) {
        let Ok(u) = UdpSlice::from_slice_lax(b) else {
            return;
        };
        let dst_port = u.destination_port();
        self.push(
            Layer::Udp {
                src_port: u.source_port(),
                dst_port,
                checksum: u.checksum(),
            },
            u.slice(),
        );
        let body = u.payload();
        if VXLAN_PORTS.contains(&dst_port) && depth < MAX_DEPTH {
            // flags (I bit 0x08), 3 reserved, VNI (24 bits), reserved.
            if let Some(&[flags, _, _, _, v0, v1, v2, _]) = body.get(..8) {
                if flags & 0x08 != 0 {
                    self.push(
                        Layer::Vxlan {
                            vni: u32::from_be_bytes([0, v0, v1, v2]),
                        },
                        body,
                    );
                    self.ethernet(body.get(8..).unwrap_or(&[]), depth + 1);
                    return;
                }
            }
        }
        self.d.payload = body.to_vec();
    }
}

/// Decode `data` every way capture can (as an Ethernet frame, as a bare
/// IPv4 packet, as a bare IP packet) and panic if an invariant is broken.
/// The body of the fuzz targets and of the seeded test; the invariants:
/// - decoding never panics and is deterministic; every layer displays and
///   serialises;
/// - one span per layer, each inside the input and inside the span before
///   it, starting after it (a fragment's and its transport header's start
///   together); the payload is no longer than the last span;
/// - nothing is decoded past a fragment that is not the first;
/// - an encapsulated frame or packet decodes the same as its inner bytes
///   alone: the layers after a VXLAN header are what decoding the inner
///   Ethernet frame gives, those after an outer IP header what decoding the
///   inner IP packet gives (with spans shifted; past the depth limit, the
///   inner bytes alone decode further).
pub fn check_decoders(data: &[u8]) {
    for (how, d) in [
        ("ethernet", decode_ethernet(data)),
        ("ipv4", decode_ipv4(data)),
        ("ip", decode_ip(data)),
    ] {
        check_one(how, data, &d);
        let again = match how {
            "ethernet" => decode_ethernet(data),
            "ipv4" => decode_ipv4(data),
            _ => decode_ip(data),
        };
        assert_eq!(d, again, "{how}: decoding is not deterministic");
    }
}

fn check_one(how: &str, data: &[u8], d: &Decoded) {
    assert_eq!(d.layers.len(), d.spans.len(), "{how}: one span per layer");
    let mut outer = 0..data.len();
    for (i, (l, s)) in d.layers.iter().zip(&d.spans).enumerate() {
        assert!(
            s.start <= s.end && s.end <= data.len(),
            "{how}: layer {i} ({l}) span {s:?} outside the {} bytes",
            data.len()
        );
        // A fragment covers its packet's payload: the transport header
        // starts where the fragment does. Every other layer starts after
        // the header of the one before.
        let after_fragment = i > 0 && matches!(d.layers[i - 1], Layer::Fragment { .. });
        assert!(
            s.start >= outer.start
                && s.end <= outer.end
                && (i == 0 || after_fragment || s.start > outer.start),
            "{how}: layer {i} ({l}) span {s:?} not inside {outer:?}"
        );
        outer = s.clone();
        // Displayed and serialised into the void: any panic shows, no allocation.
        let _ = std::io::Write::write_fmt(&mut std::io::sink(), format_args!("{l}"));
        serde_json::to_writer(std::io::sink(), l).expect("a layer serialises");
        if let Layer::Fragment { offset, .. } = l {
            if *offset > 0 {
                assert_eq!(
                    i + 1,
                    d.layers.len(),
                    "{how}: layers decoded past a later fragment: {:?}",
                    d.layers
                );
            }
        }
    }
    assert!(
        d.payload.len() <= outer.end - outer.start,
        "{how}: payload of {} bytes outside the last span {outer:?}",
        d.payload.len()
    );
    // Encapsulation: the tail decodes as the inner bytes alone.
    for i in 1..d.layers.len() {
        let inner = match (&d.layers[i - 1], &d.layers[i]) {
            (Layer::Vxlan { .. }, Layer::Ethernet { .. }) => decode_ethernet,
            (
                Layer::Ipv4 { .. } | Layer::Ipv6 { .. } | Layer::Fragment { .. },
                Layer::Ipv4 { .. } | Layer::Ipv6 { .. },
            ) => decode_ip,
            _ => continue,
        };
        let s = d.spans[i].clone();
        let alone = inner(data.get(s.clone()).unwrap_or(&[]));
        let tail = &d.layers[i..];
        assert!(
            alone.layers.starts_with(tail),
            "{how}: layers {i}.. {tail:?} differ from the inner bytes alone {:?}",
            alone.layers
        );
        if alone.layers.len() == tail.len() {
            assert_eq!(alone.payload, d.payload, "{how}: inner payload differs");
            let shifted: Vec<Range<usize>> = alone
                .spans
                .iter()
                .map(|r| r.start + s.start..r.end + s.start)
                .collect();
            assert_eq!(shifted, d.spans[i..], "{how}: inner spans differ");
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Ethernet { src, dst, .. } => write!(f, "eth {src} > {dst}"),
            Layer::Vlan { tpid, id, pcp, .. } => {
                let what = match *tpid {
                    ETH_8021Q => "vlan".to_string(),
                    ETH_8021AD => "802.1ad vlan".to_string(),
                    t => format!("vlan (tpid {t:#06x})"),
                };
                write!(f, "{what} {id}")?;
                if *pcp != 0 {
                    write!(f, " pcp {pcp}")?;
                }
                Ok(())
            }
            Layer::Ipv4 {
                src,
                dst,
                proto,
                ttl,
                ..
            } => {
                write!(f, "ip {src} > {dst} proto {proto} ttl {ttl}")
            }
            Layer::Ipv6 {
                src,
                dst,
                next_header,
                hop_limit,
                ..
            } => {
                write!(f, "ip6 {src} > {dst} next {next_header} hlim {hop_limit}")
            }
            Layer::Fragment { id, offset, more } => {
                write!(
                    f,
                    "fragment id {id} offset {offset}{}",
                    if *more { " more" } else { "" }
                )
            }
            Layer::Udp {
                src_port,
                dst_port,
                checksum,
            } => {
                write!(f, "udp {src_port} > {dst_port} csum {checksum:#06x}")
            }
            Layer::Vxlan { vni } => write!(f, "vxlan vni {vni}"),
            Layer::Tcp {
                src_port,
                dst_port,
                flags,
            } => {
                write!(f, "tcp {src_port} > {dst_port} flags {flags:#04x}")
            }
            Layer::Icmp {
                icmp_type, id, seq, ..
            } => {
                let what = match icmp_type {
                    8 => "echo request".to_string(),
                    0 => "echo reply".to_string(),
                    t => format!("type {t}"),
                };
                write!(f, "icmp {what} id {id} seq {seq}")
            }
            Layer::Icmpv6 {
                icmp_type,
                code,
                id,
                seq,
            } => match icmp_type {
                128 => write!(f, "icmp6 echo request id {id} seq {seq}"),
                129 => write!(f, "icmp6 echo reply id {id} seq {seq}"),
                t => write!(f, "icmp6 type {t} code {code}"),
            },
            Layer::Arp { op, sender, target } => {
                let what = if *op == 1 { "who-has" } else { "reply" };
                write!(f, "arp {what} {target} tell {sender}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_hdr(src: [u8; 4], dst: [u8; 4], proto: u8, payload_len: usize) -> Vec<u8> {
        let len = (20 + payload_len) as u16;
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        h[2..4].copy_from_slice(&len.to_be_bytes());
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h
    }

    fn eth(dst: [u8; 6], src: [u8; 6], et: u16, body: &[u8]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&et.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn icmp_echo(id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
        let mut i = vec![8, 0, 0, 0];
        i.extend_from_slice(&id.to_be_bytes());
        i.extend_from_slice(&seq.to_be_bytes());
        i.extend_from_slice(data);
        i
    }

    #[test]
    fn vxlan_outer_and_inner() {
        let icmp = icmp_echo(7, 1, b"cnet-probe-42");
        let mut inner_ip = ipv4_hdr([10, 244, 1, 2], [10, 244, 2, 3], 1, icmp.len());
        inner_ip.extend_from_slice(&icmp);
        let inner = eth([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], ETH_IPV4, &inner_ip);
        let mut vx = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        vx.extend_from_slice(&inner);
        let mut u = Vec::new();
        u.extend_from_slice(&40000u16.to_be_bytes());
        u.extend_from_slice(&8472u16.to_be_bytes());
        u.extend_from_slice(&((8 + vx.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(&vx);
        let mut outer_ip = ipv4_hdr([192, 0, 2, 11], [192, 0, 2, 12], 17, u.len());
        outer_ip.extend_from_slice(&u);
        let frame = eth([2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 1, 1], ETH_IPV4, &outer_ip);

        let d = decode_ethernet(&frame);
        assert!(d.encapsulated());
        assert!(d.carries(b"cnet-probe-42"));
        assert_eq!(
            d.layers.iter().find(|l| matches!(l, Layer::Vxlan { .. })),
            Some(&Layer::Vxlan { vni: 1 })
        );
        assert_eq!(
            d.inner_ipv4(),
            Some(([10, 244, 1, 2].into(), [10, 244, 2, 3].into(), 1))
        );
        let text: Vec<String> = d.layers.iter().map(|l| l.to_string()).collect();
        assert_eq!(text[1], "ip 192.0.2.11 > 192.0.2.12 proto 17 ttl 64");
        assert_eq!(text[2], "udp 40000 > 8472 csum 0x0000");
    }

    #[test]
    fn ipip_inner() {
        let icmp = icmp_echo(9, 2, b"tok");
        let mut inner = ipv4_hdr([10, 244, 1, 2], [10, 244, 2, 3], 1, icmp.len());
        inner.extend_from_slice(&icmp);
        let mut outer = ipv4_hdr([192, 0, 2, 11], [198, 51, 100, 12], 4, inner.len());
        outer.extend_from_slice(&inner);
        let d = decode_ipv4(&outer);
        assert!(d.encapsulated());
        assert!(d.carries(b"tok"));
        assert_eq!(d.layers.len(), 3);
    }

    #[test]
    fn truncated_and_garbage_never_panic() {
        for n in 0..64 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let _ = decode_ethernet(&junk);
            let _ = decode_ipv4(&junk);
        }
        let mut f = eth([0; 6], [0; 6], ETH_IPV4, &[0x45, 0, 0xff, 0xff]);
        f.truncate(18);
        let d = decode_ethernet(&f);
        assert_eq!(d.layers.len(), 1);
    }
}
