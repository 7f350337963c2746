//! The probe: one ICMP or ICMPv6 echo (or UDP datagram, or TCP SYN)
//! carrying a unique token, sent from a thread inside the source namespace.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use cnet_core::{Error, NetNs, Result};
use etherparse::{IcmpEchoHeader, Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type, TcpHeader};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Probe protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// ICMP echo request.
    Icmp,
    /// UDP datagram (no reply expected unless something listens).
    Udp,
    /// TCP SYN carrying the token as data (answered by SYN-ACK or RST).
    Tcp,
}

/// What happened to the probe at the source.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// An echo reply carrying the token came back.
    pub replied: bool,
    /// Round trip, if replied.
    pub rtt: Option<Duration>,
    /// The source's kernel refused to send it (e.g. "Network is unreachable").
    pub send_error: Option<String>,
}

impl Outcome {
    fn refused(e: std::io::Error) -> Outcome {
        Outcome {
            replied: false,
            rtt: None,
            send_error: Some(e.to_string()),
        }
    }
}

/// A token unique to this run.
pub fn token() -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // Fixed length, so captured packet lengths do not vary between runs.
    format!(
        "cnet-probe-{:08x}-{:016x}",
        std::process::id(),
        nanos as u64
    )
    .into_bytes()
}

/// Send one probe from `ns` to `dst` (IPv4 or IPv6) and wait up to
/// `timeout` for the echo reply (ICMP / ICMPv6).
pub fn send(
    ns: &NetNs,
    src: Option<IpAddr>,
    dst: IpAddr,
    proto: Proto,
    port: u16,
    token: &[u8],
    timeout: Duration,
) -> Result<Outcome> {
    let ctx = format!("send probe to {dst}");
    if src.is_some_and(|s| s.is_ipv4() != dst.is_ipv4()) {
        return Err(Error::invalid(
            ctx,
            "source and destination of different families",
        ));
    }
    // On a short-lived thread inside the source namespace: the probe's
    // sockets are the source's.
    ns.run(|| match proto {
        Proto::Udp => {
            let any = if dst.is_ipv4() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            };
            let bind = SocketAddr::new(src.unwrap_or(any), 0);
            let sock = UdpSocket::bind(bind).map_err(|e| Error::io(ctx.clone(), e))?;
            if let Err(e) = sock.send_to(token, SocketAddr::new(dst, port)) {
                return Ok(Outcome::refused(e));
            }
            Ok(Outcome {
                replied: false,
                rtt: None,
                send_error: None,
            })
        }
        Proto::Tcp => tcp(src, dst, port, token).map_err(|e| Error::io(ctx.clone(), e)),
        Proto::Icmp => icmp(src, dst, token, timeout).map_err(|e| Error::io(ctx.clone(), e)),
    })
    .map_err(|e| e.with_context(&ctx))?
}

/// A raw socket of `dst`'s family for `proto`; the kernel adds the IP
/// header.
fn raw(dst: IpAddr, proto: Protocol) -> std::io::Result<Socket> {
    Socket::new(
        Domain::for_address(SocketAddr::new(dst, 0)),
        Type::RAW,
        Some(proto),
    )
}

/// `a` as a socket address for raw sockets (port 0).
fn sockaddr(a: IpAddr) -> SockAddr {
    SockAddr::from(SocketAddr::new(a, 0))
}

/// ICMP echo request type and the reply's, by family (ICMPv6: 128/129).
fn echo_types(dst: IpAddr) -> (u8, u8) {
    if dst.is_ipv4() {
        (8, 0)
    } else {
        (128, 129)
    }
}

/// The echo request carrying `token`: ICMP with its checksum, or ICMPv6
/// without one (the kernel always fills in the checksum of a raw ICMPv6
/// socket's messages, RFC 3542 §3.1, pseudo-header included).
fn echo_request(dst: IpAddr, id: u16, token: &[u8]) -> Vec<u8> {
    let echo = IcmpEchoHeader { id, seq: 1 };
    let mut pkt = if dst.is_ipv4() {
        Icmpv4Header::with_checksum(Icmpv4Type::EchoRequest(echo), token)
            .to_bytes()
            .to_vec()
    } else {
        Icmpv6Header::new(Icmpv6Type::EchoRequest(echo))
            .to_bytes()
            .to_vec()
    };
    pkt.extend_from_slice(token);
    pkt
}

fn icmp(
    src: Option<IpAddr>,
    dst: IpAddr,
    token: &[u8],
    timeout: Duration,
) -> std::io::Result<Outcome> {
    let sock = raw(
        dst,
        if dst.is_ipv4() {
            Protocol::ICMPV4
        } else {
            Protocol::ICMPV6
        },
    )?;
    if let Some(s) = src {
        sock.bind(&sockaddr(s))?;
    }
    let (_, reply) = echo_types(dst);
    let pkt = echo_request(dst, (std::process::id() & 0xffff) as u16, token);
    let t0 = Instant::now();
    if let Err(e) = sock.send_to(&pkt, &sockaddr(dst)) {
        return Ok(Outcome::refused(e));
    }
    let mut buf = [0u8; 2048];
    while t0.elapsed() < timeout {
        let left = timeout
            .saturating_sub(t0.elapsed())
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(left))?;
        let n = match (&sock).read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(e),
        };
        // An IPv4 raw socket reads the IP header too; an ICMPv6 one reads
        // the ICMPv6 message alone.
        let is_reply = if dst.is_ipv4() {
            let d = crate::wire::decode_ipv4(&buf[..n]);
            d.layers
                .iter()
                .any(|l| matches!(l, crate::wire::Layer::Icmp { icmp_type: 0, .. }))
                && d.carries(token)
        } else {
            n > 8 && buf[0] == reply && buf[8..n].windows(token.len()).any(|w| w == token)
        };
        if is_reply {
            return Ok(Outcome {
                replied: true,
                rtt: Some(t0.elapsed()),
                send_error: None,
            });
        }
    }
    Ok(Outcome {
        replied: false,
        rtt: None,
        send_error: None,
    })
}

/// The source address the kernel would pick for `dst` (asked with a
/// connected UDP socket, which sends nothing).
fn source_for(dst: IpAddr, port: u16) -> std::io::Result<IpAddr> {
    let any: SocketAddr = if dst.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let u = UdpSocket::bind(any)?;
    u.connect(SocketAddr::new(dst, port))?;
    Ok(u.local_addr()?.ip())
}

/// One TCP SYN with the token as payload, from a raw socket (the kernel
/// adds the IP header); the checksum is computed here over the source
/// address given, or the one the kernel would pick.
fn tcp(src: Option<IpAddr>, dst: IpAddr, port: u16, token: &[u8]) -> std::io::Result<Outcome> {
    let sport: u16 = 40000 + (std::process::id() % 20000) as u16;
    let mut syn = TcpHeader::new(sport, port, 0x636e_6574, 64240); // seq "cnet"
    syn.syn = true;
    let src = match src {
        Some(s) => s,
        None => match source_for(dst, port) {
            Ok(s) => s,
            Err(e) => return Ok(Outcome::refused(e)),
        },
    };
    let too_big = |e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}"));
    syn.checksum = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => syn.calc_checksum_ipv4_raw(s.octets(), d.octets(), token),
        (IpAddr::V6(s), IpAddr::V6(d)) => syn.calc_checksum_ipv6_raw(s.octets(), d.octets(), token),
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "source and destination of different families",
            ))
        }
    }
    .map_err(too_big)?;
    let mut seg = syn.to_bytes().to_vec();
    seg.extend_from_slice(token);
    let sock = raw(dst, Protocol::TCP)?;
    if !src.is_unspecified() {
        sock.bind(&sockaddr(src))?;
    }
    if let Err(e) = sock.send_to(&seg, &sockaddr(dst)) {
        return Ok(Outcome::refused(e));
    }
    Ok(Outcome {
        replied: false,
        rtt: None,
        send_error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksum_verifies() {
        let pkt = echo_request("10.0.0.1".parse().unwrap(), 0x1234, b"token");
        // A correct ICMP checksum makes the one's-complement sum all ones.
        let mut sum: u32 = pkt
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
        assert_eq!(&pkt[..2], &[8, 0]);
        assert_eq!(&pkt[4..8], &[0x12, 0x34, 0, 1]);
        assert_eq!(&pkt[8..], b"token");
        let v6 = echo_request("fd00::1".parse().unwrap(), 7, b"t");
        assert_eq!(&v6[..2], &[128, 0]);
    }
}
