//! `RouteEntry::from_bytes` (the fast decoder of route dumps) against the
//! full `netlink-packet-route` decoder, on many mutations of real route
//! messages: those the kernel sent for routes made in a test namespace,
//! and those netlink-packet-route encodes for the library's builders.
//! Whenever the full decoder accepts, the fast one gives the same fields;
//! whenever it refuses, the fast one refuses too
//! (`RouteEntry::check_decoders`). The same check runs open-ended under
//! cargo-fuzz: `cnet-core/fuzz`, target `route_decode`.

mod common;

use std::net::IpAddr;

use cnet_core::link::Veth;
use cnet_core::netlink_packet_core::Emitable;
use cnet_core::netlink_packet_route::route::RouteMessage;
use cnet_core::netlink_packet_route::RouteNetlinkMessage;
use cnet_core::route::{NextHop, Route, RouteEntry};
use common::{privileged, TestNs};

/// Mutations tried per run. Fixed, like the seed, so a failure reproduces.
const ITERATIONS: usize = 40_000;
const SEED: u64 = 0x0c0f_fee0_2026;

const RTM_NEWROUTE: u16 = 24;
const HDR: usize = 12;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn encode(m: &RouteMessage) -> Vec<u8> {
    let mut b = vec![0; m.buffer_len()];
    m.emit(&mut b);
    b
}

/// One attribute, padded to 4 bytes.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut b = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(value);
    b.resize((b.len() + 3) & !3, 0);
    b
}

/// Messages as netlink-packet-route encodes them for the library's
/// builders, plus the attributes the kernel adds to dumps (cache info,
/// preference, expiry, mark, …) and one it does not know.
fn built() -> Vec<Vec<u8>> {
    let dev = |_: &cnet_core::link::LinkRef| Ok(3);
    let routes = [
        Route::to("10.244.1.0/24".parse().unwrap())
            .via(ip("192.0.2.11"))
            .dev(3)
            .onlink(),
        Route::to("10.244.2.0/24".parse().unwrap())
            .dev(3)
            .src(ip("192.0.2.1"))
            .metric(100)
            .table(1000)
            .mtu(1400),
        Route::to("10.250.0.0/16".parse().unwrap())
            .nexthop(NextHop::new().via(ip("192.0.2.12")).dev(3).weight(3))
            .nexthop(NextHop::new().via(ip("192.0.2.13")).dev(4)),
        Route::to("203.0.113.0/24".parse().unwrap()).blackhole(),
        Route::default_v4().via(ip("192.0.2.1")),
        Route::to("2001:db8:7::/64".parse().unwrap())
            .via(ip("2001:db8::2"))
            .dev(3)
            .metric(1024),
        Route::default_v6().via(ip("fe80::1")).dev(3),
    ];
    let mut out = Vec::new();
    for r in &routes {
        let b = encode(&r.message(&dev).unwrap());
        out.push(b.clone());
        let mut extra = b;
        extra.extend(nla(12, &[0; 32])); // RTA_CACHEINFO
        extra.extend(nla(20, &[1])); // RTA_PREF
        extra.extend(nla(23, &300u32.to_ne_bytes())); // RTA_EXPIRES
        extra.extend(nla(16, &7u32.to_ne_bytes())); // RTA_MARK
        extra.extend(nla(25, &0u32.to_ne_bytes())); // RTA_UID
        extra.extend(nla(11, &0x0001_0002u32.to_ne_bytes())); // RTA_FLOW
        extra.extend(nla(3, &2u32.to_ne_bytes())); // RTA_IIF
        extra.extend(nla(30, &5u32.to_ne_bytes())); // RTA_NH_ID
        out.push(extra.clone());
        extra.extend(nla(200, b"unknown")); // a kind neither decoder knows
        out.push(extra);
    }
    out
}

/// The `RTM_NEWROUTE` payloads of a real dump (every table, both
/// families) of a namespace with gateway, ECMP, MTU, source, blackhole,
/// expiring IPv6 and other-table routes.
fn dumped() -> Vec<Vec<u8>> {
    let t = TestNs::new("rdec");
    let h = t.handle();
    h.links()
        .add(Veth::new("v0", "v0p").up().peer_up())
        .unwrap();
    h.addrs()
        .add("v0", "192.0.2.1/24".parse().unwrap())
        .unwrap();
    t.ip(&["addr", "add", "2001:db8::1/64", "dev", "v0", "nodad"]);
    let ip_route = |args: &str| t.ip(&args.split(' ').collect::<Vec<_>>());
    ip_route("route add 10.244.1.0/24 via 192.0.2.11 dev v0 proto 119");
    ip_route("route add 10.244.2.0/24 dev v0 src 192.0.2.1 metric 7 mtu 1400");
    ip_route("route add 10.250.0.0/16 nexthop via 192.0.2.12 weight 2 nexthop via 192.0.2.13");
    ip_route("route add blackhole 203.0.113.0/24");
    ip_route("route add 10.9.0.0/16 via 192.0.2.14 table 1000");
    ip_route("-6 route add 2001:db8:7::/64 via 2001:db8::2 dev v0 expires 300");
    ip_route("-6 route add 2001:db8:8::/64 dev v0 pref high");
    let mut out = Vec::new();
    let mut sock = h.raw_socket().unwrap();
    sock.dump_each(
        RouteNetlinkMessage::GetRoute(RouteMessage::default()),
        &|| "dump routes".into(),
        &mut |m| {
            match m {
                None => out.clear(),
                Some((hdr, body)) if hdr.message_type == RTM_NEWROUTE => out.push(body.to_vec()),
                Some(_) => {}
            }
            Ok(())
        },
    )
    .unwrap();
    assert!(out.len() >= 10, "a real dump: {} routes", out.len());
    out
}

/// Whether every attribute of `b` is of a kind `from_bytes` decodes itself
/// (so the message did not go to the full decoder).
fn fast_kinds_only(b: &[u8]) -> bool {
    nla_offsets(b).iter().all(|&o| {
        let kind = u16::from_ne_bytes([b[o + 2], b[o + 3]]) & 0x3fff;
        matches!(kind, 1..=7 | 11 | 12 | 15 | 16 | 20 | 23 | 25 | 30)
    })
}

/// Offsets of the attributes of `b` (a route payload) that are well formed.
fn nla_offsets(b: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut off = HDR;
    while off + 4 <= b.len() {
        let len = u16::from_ne_bytes([b[off], b[off + 1]]) as usize;
        if len < 4 || off + len > b.len() {
            break;
        }
        v.push(off);
        off += (len + 3) & !3;
    }
    v
}

/// Offsets of the nested attributes of `b`'s attributes (metrics,
/// multipath next hops' gateways): mutations there matter too.
fn nested_offsets(b: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    for o in nla_offsets(b) {
        let len = u16::from_ne_bytes([b[o], b[o + 1]]) as usize;
        let kind = u16::from_ne_bytes([b[o + 2], b[o + 3]]) & 0x3fff;
        let (mut p, end) = match kind {
            8 => (o + 4, o + len),     // RTA_METRICS: attributes
            9 => (o + 4 + 8, o + len), // RTA_MULTIPATH: first rtnexthop's attributes
            _ => continue,
        };
        while p + 4 <= end {
            let l = u16::from_ne_bytes([b[p], b[p + 1]]) as usize;
            if l < 4 || p + l > end {
                break;
            }
            v.push(p);
            p += (l + 3) & !3;
        }
    }
    v
}

/// Grow or shrink the value of the attribute at `off` by `delta` bytes,
/// keeping its length field (and the message) consistent: a 17-byte
/// address, a 5-byte u32, an empty one.
fn resize_value(b: &mut Vec<u8>, off: usize, delta: isize, rng: &mut fastrand::Rng) {
    let len = u16::from_ne_bytes([b[off], b[off + 1]]) as usize;
    let new_len = (len as isize + delta).max(4) as usize;
    let end = off + len;
    if new_len > len {
        let extra: Vec<u8> = (0..new_len - len).map(|_| rng.u8(..)).collect();
        b.splice(end..end, extra);
    } else {
        b.drain(off + new_len..end);
    }
    b[off..off + 2].copy_from_slice(&(new_len as u16).to_ne_bytes());
    // Re-pad so the following attributes stay aligned.
    let pad_old = ((len + 3) & !3) - len;
    let pad_new = ((new_len + 3) & !3) - new_len;
    let at = off + new_len;
    b.drain(at..(at + pad_old).min(b.len()));
    b.splice(at..at, std::iter::repeat_n(0, pad_new));
}

fn mutate(seed: &[u8], rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.usize(1..=3) {
        let nlas = nla_offsets(&b);
        match rng.u8(0..10) {
            // Any byte (header fields, lengths, kinds, values).
            0 | 1 if !b.is_empty() => {
                let i = rng.usize(..b.len());
                b[i] = rng.u8(..);
            }
            // Truncate.
            2 if !b.is_empty() => b.truncate(rng.usize(..b.len())),
            // An attribute's value one size off (or a few): the
            // "17-byte address" class.
            3 | 4 if !nlas.is_empty() => {
                let off = nlas[rng.usize(..nlas.len())];
                let delta = [-4, -2, -1, 1, 2, 4, 12][rng.usize(..7)];
                resize_value(&mut b, off, delta, rng);
            }
            // The same inside metrics / multipath.
            5 => {
                let nested = nested_offsets(&b);
                if !nested.is_empty() {
                    let off = nested[rng.usize(..nested.len())];
                    let len = u16::from_ne_bytes([b[off], b[off + 1]]);
                    let l = len.wrapping_add([1, 2, 4, 0xfffc][rng.usize(..4)]);
                    b[off..off + 2].copy_from_slice(&l.to_ne_bytes());
                }
            }
            // Address family and route type.
            6 if b.len() >= HDR => {
                b[0] = [2, 10, 0, 7, 28, 129][rng.usize(..6)];
                if rng.bool() {
                    b[7] = rng.u8(0..12);
                }
            }
            // Prefix length past the family's width.
            7 if b.len() >= HDR => b[1] = rng.u8(..),
            // Duplicate an attribute.
            8 if !nlas.is_empty() => {
                let off = nlas[rng.usize(..nlas.len())];
                let len = u16::from_ne_bytes([b[off], b[off + 1]]) as usize;
                let copy = b[off..off + ((len + 3) & !3).min(b.len() - off)].to_vec();
                b.extend(copy);
            }
            // A new attribute of a kind the decoders know, of a random size.
            _ => {
                let kind = rng.u16(1..=31);
                let value: Vec<u8> = (0..[0, 1, 2, 4, 5, 8, 16, 17, 32][rng.usize(..9)])
                    .map(|_| rng.u8(..))
                    .collect();
                b.extend(nla(kind, &value));
            }
        }
    }
    b
}

#[test]
fn fast_route_decoder_agrees_with_the_full_decoder() {
    let mut seeds = built();
    if privileged() {
        seeds.extend(dumped());
    }
    // The unmutated seeds decode, identically.
    for s in &seeds {
        let e = RouteEntry::check_decoders(s).unwrap_or_else(|e| panic!("{e}\n{s:?}"));
        assert!(e.is_some(), "seed refused: {s:?}");
    }
    let mut rng = fastrand::Rng::with_seed(SEED);
    let (mut accepted, mut refused, mut fast) = (0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    for i in 0..ITERATIONS {
        let seed = &seeds[rng.usize(..seeds.len())];
        let b = mutate(seed, &mut rng);
        match RouteEntry::check_decoders(&b) {
            Ok(Some(_)) => {
                accepted += 1;
                fast += fast_kinds_only(&b) as usize;
            }
            Ok(None) => refused += 1,
            Err(e) => failures.push(format!("#{i}: {e}\n  bytes {b:?}")),
        }
    }
    println!(
        "{ITERATIONS} mutations of {} seeds: {accepted} accepted by both ({fast} on the fast path alone), \
         {refused} refused by both, {} disagreements",
        seeds.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {ITERATIONS} disagree; first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(8)].join("\n")
    );
    // The mutations exercise both outcomes substantially.
    assert!(
        fast > ITERATIONS / 10 && accepted > ITERATIONS / 5 && refused > ITERATIONS / 5,
        "{accepted} ({fast} fast) / {refused}"
    );
}

/// The cases the hardening issue named, by hand: a 17-byte preferred
/// source (was `prefsrc: None`), a 16-byte gateway on an IPv4 route, a
/// 5-byte table. Both decoders refuse each.
#[test]
fn odd_sized_attributes_are_refused_by_both_decoders() {
    let base = encode(
        &Route::to("10.244.1.0/24".parse().unwrap())
            .via(ip("192.0.2.11"))
            .dev(3)
            .message(&|_| Ok(3))
            .unwrap(),
    );
    assert!(RouteEntry::from_bytes(&base).is_some());
    for (kind, value) in [
        (
            7u16,
            vec![192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ), // RTA_PREFSRC, 17 bytes
        (5, ip_v6_bytes("2001:db8::1")), // RTA_GATEWAY of the other family
        (15, vec![0, 1, 0, 0, 0]),       // RTA_TABLE, 5 bytes
        (4, vec![]),                     // RTA_OIF, empty
    ] {
        let mut b = base.clone();
        b.extend(nla(kind, &value));
        assert_eq!(RouteEntry::check_decoders(&b), Ok(None), "kind {kind}");
        assert_eq!(RouteEntry::from_bytes(&b), None, "kind {kind}");
    }
}

fn ip_v6_bytes(s: &str) -> Vec<u8> {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec()
}
