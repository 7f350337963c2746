//! Decoding captured frames: zero-copy views whose accessors never panic
//! (smoltcp's `wire` style), and a validated summary of what a frame
//! carries, outer and inner for VXLAN and IP-in-IP.
//!
//! ```text
//! Ethernet ─┬─ IPv4 ─┬─ ICMP (echo id/seq)
//!           │        ├─ UDP ─┬─ dst 8472/4789 → VXLAN (VNI) → Ethernet …  (inner)
//!           │        │       └─ payload (probe token)
//!           │        └─ proto 4 (IPIP) → IPv4 …                            (inner)
//!           └─ ARP
//! ```

use std::fmt;
use std::net::Ipv4Addr;

/// Read `N` bytes at `off`, or `None` past the end.
fn get<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    get::<2>(b, off).map(u16::from_be_bytes)
}

/// UDP ports on which we decode VXLAN.
pub const VXLAN_PORTS: [u16; 2] = [8472, 4789];
/// Ethertypes.
const ETH_IPV4: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;
const ETH_8021Q: u16 = 0x8100;

/// One protocol layer, outermost first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "layer", rename_all = "lowercase")]
pub enum Layer {
    /// Ethernet II.
    Ethernet {
        /// Source MAC.
        src: String,
        /// Destination MAC.
        dst: String,
        /// Ethertype.
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
    /// The innermost payload (UDP or ICMP data).
    pub payload: Vec<u8>,
}

impl Decoded {
    /// Whether the innermost payload contains `token`.
    pub fn carries(&self, token: &[u8]) -> bool {
        !token.is_empty() && self.payload.windows(token.len()).any(|w| w == token)
    }

    /// Whether the frame is encapsulated (VXLAN or IP-in-IP).
    pub fn encapsulated(&self) -> bool {
        self.layers.iter().any(|l| matches!(l, Layer::Vxlan { .. }))
            || self
                .layers
                .iter()
                .filter(|l| matches!(l, Layer::Ipv4 { .. }))
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
}

fn mac(b: [u8; 6]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Decode an Ethernet frame (as captured on an Ethernet-like device).
pub fn decode_ethernet(frame: &[u8]) -> Decoded {
    let mut d = Decoded::default();
    ethernet(frame, &mut d, 0);
    d
}

/// Decode a bare IPv4 packet (as captured on an L3 device such as ipip,
/// which has no link-layer header).
pub fn decode_ipv4(packet: &[u8]) -> Decoded {
    let mut d = Decoded::default();
    ipv4(packet, &mut d, 0);
    d
}

const MAX_DEPTH: usize = 4;

fn ethernet(b: &[u8], d: &mut Decoded, depth: usize) {
    let (Some(dst), Some(src), Some(mut et)) = (get::<6>(b, 0), get::<6>(b, 6), u16_at(b, 12))
    else {
        return;
    };
    let mut off = 14;
    if et == ETH_8021Q {
        let Some(inner) = u16_at(b, 16) else { return };
        et = inner;
        off = 18;
    }
    d.layers.push(Layer::Ethernet {
        src: mac(src),
        dst: mac(dst),
        ethertype: et,
    });
    let rest = b.get(off..).unwrap_or(&[]);
    match et {
        ETH_IPV4 => ipv4(rest, d, depth),
        ETH_ARP => arp(rest, d),
        _ => {}
    }
}

fn arp(b: &[u8], d: &mut Decoded) {
    // Ethernet/IPv4 ARP only: htype 1, ptype 0x0800, hlen 6, plen 4.
    if u16_at(b, 0) != Some(1) || u16_at(b, 2) != Some(ETH_IPV4) {
        return;
    }
    let (Some(op), Some(s), Some(t)) = (u16_at(b, 6), get::<4>(b, 14), get::<4>(b, 24)) else {
        return;
    };
    d.layers.push(Layer::Arp {
        op,
        sender: s.into(),
        target: t.into(),
    });
}

fn ipv4(b: &[u8], d: &mut Decoded, depth: usize) {
    let Some([vihl]) = get::<1>(b, 0) else { return };
    if vihl >> 4 != 4 {
        return;
    }
    let ihl = usize::from(vihl & 0xf) * 4;
    let (Some(len), Some([ttl]), Some([proto]), Some(src), Some(dst)) = (
        u16_at(b, 2),
        get::<1>(b, 8),
        get::<1>(b, 9),
        get::<4>(b, 12),
        get::<4>(b, 16),
    ) else {
        return;
    };
    if ihl < 20 {
        return;
    }
    d.layers.push(Layer::Ipv4 {
        src: src.into(),
        dst: dst.into(),
        proto,
        ttl,
        len,
    });
    let end = usize::from(len).clamp(ihl, b.len().max(ihl));
    let body = b.get(ihl..end).unwrap_or(&[]);
    match proto {
        1 => icmp(body, d),
        17 => udp(body, d, depth),
        6 => tcp(body, d),
        4 if depth < MAX_DEPTH => ipv4(body, d, depth + 1),
        _ => {}
    }
}

fn icmp(b: &[u8], d: &mut Decoded) {
    let (Some([t]), Some([c]), Some(id), Some(seq)) =
        (get::<1>(b, 0), get::<1>(b, 1), u16_at(b, 4), u16_at(b, 6))
    else {
        return;
    };
    d.layers.push(Layer::Icmp {
        icmp_type: t,
        code: c,
        id,
        seq,
    });
    d.payload = b.get(8..).unwrap_or(&[]).to_vec();
}

fn tcp(b: &[u8], d: &mut Decoded) {
    let (Some(sp), Some(dp), Some([off]), Some([flags])) =
        (u16_at(b, 0), u16_at(b, 2), get::<1>(b, 12), get::<1>(b, 13))
    else {
        return;
    };
    d.layers.push(Layer::Tcp {
        src_port: sp,
        dst_port: dp,
        flags,
    });
    let hlen = usize::from(off >> 4) * 4;
    d.payload = b.get(hlen.max(20)..).unwrap_or(&[]).to_vec();
}

fn udp(b: &[u8], d: &mut Decoded, depth: usize) {
    let (Some(sp), Some(dp), Some(ck)) = (u16_at(b, 0), u16_at(b, 2), u16_at(b, 6)) else {
        return;
    };
    d.layers.push(Layer::Udp {
        src_port: sp,
        dst_port: dp,
        checksum: ck,
    });
    let body = b.get(8..).unwrap_or(&[]);
    if VXLAN_PORTS.contains(&dp) && depth < MAX_DEPTH {
        // flags (I bit 0x08), 3 reserved, VNI (24 bits), reserved.
        if let Some(h) = get::<8>(body, 0) {
            if h[0] & 0x08 != 0 {
                let vni = u32::from_be_bytes([0, h[4], h[5], h[6]]);
                d.layers.push(Layer::Vxlan { vni });
                ethernet(body.get(8..).unwrap_or(&[]), d, depth + 1);
                return;
            }
        }
    }
    d.payload = body.to_vec();
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Ethernet { src, dst, .. } => write!(f, "eth {src} > {dst}"),
            Layer::Ipv4 {
                src,
                dst,
                proto,
                ttl,
                ..
            } => {
                write!(f, "ip {src} > {dst} proto {proto} ttl {ttl}")
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
