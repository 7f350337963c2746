//! The probe: one ICMP or ICMPv6 echo (or UDP datagram, or TCP SYN)
//! carrying a unique token, sent from a thread inside the source namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use cnet_core::{Error, NetNs, Result};
use nix::sched::{setns, CloneFlags};

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

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
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
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::io(ctx.clone(), std::io::Error::from(e)))?;
            match proto {
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
                Proto::Icmp => {
                    icmp(src, dst, token, timeout).map_err(|e| Error::io(ctx.clone(), e))
                }
            }
        })
        .join()
        .map_err(|_| Error::Protocol {
            context: ctx.clone(),
            reason: "probe thread panicked".into(),
        })?
    })
}

/// A raw socket of `dst`'s family for `proto` (checked, owned).
fn raw(dst: IpAddr, proto: libc::c_int) -> std::io::Result<socket2_like::Raw> {
    let fam = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the result is checked before use and owned
    // by an OwnedFd that closes it.
    let fd = unsafe { libc::socket(fam, libc::SOCK_RAW, proto) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    Ok(socket2_like::Raw(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// ICMP echo request type and the reply's, by family (ICMPv6: 128/129).
fn echo_types(dst: IpAddr) -> (u8, u8) {
    if dst.is_ipv4() {
        (8, 0)
    } else {
        (128, 129)
    }
}

fn icmp(
    src: Option<IpAddr>,
    dst: IpAddr,
    token: &[u8],
    timeout: Duration,
) -> std::io::Result<Outcome> {
    let sock = if dst.is_ipv4() {
        raw(dst, libc::IPPROTO_ICMP)?
    } else {
        raw(dst, libc::IPPROTO_ICMPV6)?
    };
    if let Some(s) = src {
        sock.bind(s)?;
    }
    let (request, reply) = echo_types(dst);
    let id = (std::process::id() & 0xffff) as u16;
    let mut pkt = vec![request, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&1u16.to_be_bytes());
    pkt.extend_from_slice(token);
    if dst.is_ipv4() {
        let c = checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    }
    // ICMPv6: the kernel always fills in the checksum of a raw ICMPv6
    // socket's messages (RFC 3542 §3.1), pseudo-header included.
    let t0 = Instant::now();
    if let Err(e) = sock.send_to(&pkt, dst) {
        return Ok(Outcome::refused(e));
    }
    let mut buf = [0u8; 2048];
    while t0.elapsed() < timeout {
        let left = timeout
            .saturating_sub(t0.elapsed())
            .max(Duration::from_millis(1));
        sock.set_timeout(left)?;
        let n = match sock.recv(&mut buf) {
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

/// One TCP SYN with the token as payload, from a raw socket (the kernel
/// adds the IP header). IPv4: the checksum is computed here, over the
/// source address the kernel would pick when `src` is not given (asked
/// with a connected UDP socket). IPv6: the kernel computes it
/// (`IPV6_CHECKSUM`).
fn tcp(src: Option<IpAddr>, dst: IpAddr, port: u16, token: &[u8]) -> std::io::Result<Outcome> {
    let sport: u16 = 40000 + (std::process::id() % 20000) as u16;
    let mut seg = Vec::with_capacity(20 + token.len());
    seg.extend_from_slice(&sport.to_be_bytes());
    seg.extend_from_slice(&port.to_be_bytes());
    seg.extend_from_slice(&0x636e_6574u32.to_be_bytes()); // seq "cnet"
    seg.extend_from_slice(&0u32.to_be_bytes()); // ack
    seg.extend_from_slice(&[0x50, 0x02]); // data offset 5 words, SYN
    seg.extend_from_slice(&64240u16.to_be_bytes()); // window
    seg.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
    seg.extend_from_slice(token);
    let sock = raw(dst, libc::IPPROTO_TCP)?;
    match dst {
        IpAddr::V4(d) => {
            let s = match src {
                Some(IpAddr::V4(s)) => s,
                _ => {
                    let u = UdpSocket::bind("0.0.0.0:0")?;
                    if let Err(e) = u.connect(SocketAddr::new(dst, port)) {
                        return Ok(Outcome::refused(e));
                    }
                    match u.local_addr()? {
                        SocketAddr::V4(a) => *a.ip(),
                        _ => Ipv4Addr::UNSPECIFIED,
                    }
                }
            };
            let mut pseudo = Vec::with_capacity(12 + seg.len());
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 6]);
            pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
            pseudo.extend_from_slice(&seg);
            let c = checksum(&pseudo);
            seg[16..18].copy_from_slice(&c.to_be_bytes());
            if s != Ipv4Addr::UNSPECIFIED {
                sock.bind(IpAddr::V4(s))?;
            }
        }
        IpAddr::V6(_) => {
            sock.checksum_at(16)?;
            if let Some(s) = src {
                sock.bind(s)?;
            }
        }
    }
    if let Err(e) = sock.send_to(&seg, dst) {
        return Ok(Outcome::refused(e));
    }
    Ok(Outcome {
        replied: false,
        rtt: None,
        send_error: None,
    })
}

/// Minimal raw-socket helpers (what the socket2 crate would give). Kept
/// here rather than adding socket2 for five calls on one raw socket type:
/// bind, sendto, a receive timeout, recv and `IPV6_CHECKSUM`.
mod socket2_like {
    use super::*;

    pub struct Raw(pub OwnedFd);

    /// `a` as a sockaddr of its family, in a sockaddr_storage, and its length.
    fn sockaddr(a: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match a {
            IpAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for
                // any sockaddr; the write stays within it.
                unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            IpAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: 0,
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    sin6_scope_id: 0,
                };
                // SAFETY: as above.
                unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        (ss, len as libc::socklen_t)
    }

    fn check(r: libc::c_int) -> std::io::Result<()> {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    impl Raw {
        pub fn bind(&self, a: IpAddr) -> std::io::Result<()> {
            let (sa, len) = sockaddr(a);
            // SAFETY: `sa` holds a valid sockaddr of `len` bytes.
            check(unsafe {
                libc::bind(
                    self.0.as_raw_fd(),
                    (&sa as *const libc::sockaddr_storage).cast(),
                    len,
                )
            })
        }

        pub fn send_to(&self, b: &[u8], a: IpAddr) -> std::io::Result<()> {
            let (sa, len) = sockaddr(a);
            // SAFETY: `b` and `sa` are valid for the call; sizes passed.
            let n = unsafe {
                libc::sendto(
                    self.0.as_raw_fd(),
                    b.as_ptr().cast(),
                    b.len(),
                    0,
                    (&sa as *const libc::sockaddr_storage).cast(),
                    len,
                )
            };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        }

        /// `IPV6_CHECKSUM`: the kernel computes the checksum at `offset`.
        pub fn checksum_at(&self, offset: libc::c_int) -> std::io::Result<()> {
            // SAFETY: `offset` is a valid c_int and its size is passed.
            check(unsafe {
                libc::setsockopt(
                    self.0.as_raw_fd(),
                    libc::IPPROTO_IPV6,
                    libc::IPV6_CHECKSUM,
                    (&offset as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            })
        }

        pub fn set_timeout(&self, d: Duration) -> std::io::Result<()> {
            let tv = libc::timeval {
                tv_sec: d.as_secs() as libc::time_t,
                tv_usec: d.subsec_micros() as libc::suseconds_t,
            };
            // SAFETY: `tv` is a valid timeval and its size is passed.
            check(unsafe {
                libc::setsockopt(
                    self.0.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                )
            })
        }

        pub fn recv(&self, b: &mut [u8]) -> std::io::Result<usize> {
            // SAFETY: `b` is writable for b.len() bytes.
            let n = unsafe { libc::recv(self.0.as_raw_fd(), b.as_mut_ptr().cast(), b.len(), 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(n as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn checksum_of_known_header() {
        // RFC 1071 example words.
        let b = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(super::checksum(&b), !0xddf2);
    }
}
