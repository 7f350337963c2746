//! The frame decoder (`cnet_debug::wire`) fuzzed on stable, inside
//! `cargo test`: a fixed number of mutations of real frames, each run
//! through [`check_decoders`] — the very function the libFuzzer target in
//! `cnet-debug/fuzz` calls — plus property tests that decoding gives back
//! exactly what a packet builder put in.
//!
//! Seeds: the frames this kernel sent, captured by `cnet-debug/fuzz/capture-seeds`
//! into `cnet-debug/fuzz/corpus/wire/` (ARP, ICMP, ICMPv6 and neighbour
//! discovery, UDP and TCP over both families, IPv4 and IPv6 fragments, VXLAN
//! carrying ARP, ICMP and ICMPv6), and frames built here for what this
//! kernel cannot make (802.1Q, QinQ 0x88a8 and stacked tags, IP-in-IP,
//! 6in4, IPv6 extension headers), and the inputs in
//! `cnet-debug/fuzz/regressions/wire/` that once broke an invariant.
//!
//! `CNET_FUZZ_ITERS` (default 200000) and `CNET_FUZZ_SEED` change the run;
//! a failing input is printed in hex and written to
//! `target/fuzz-wire-failure.bin` (replay it with `cargo fuzz run wire FILE`,
//! or by adding it to the corpus).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use cnet_debug::wire::{check_decoders, decode_ethernet, decode_ip, Layer};
use etherparse::PacketBuilder;
use proptest::prelude::*;

// ---------------------------------------------------------------- builders

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn icmp_echo_v4(src: [u8; 4], dst: [u8; 4], id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .icmpv4_echo_request(id, seq)
        .write(&mut v, data)
        .unwrap();
    v
}

fn udp_v4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, data)
        .unwrap();
    v
}

/// An IP packet without the Ethernet header.
fn strip_eth(frame: &[u8]) -> Vec<u8> {
    frame[14..].to_vec()
}

/// `inner` (an Ethernet frame) in VXLAN VNI `vni` to udp/`port`.
fn vxlan(inner: &[u8], vni: u32, port: u16) -> Vec<u8> {
    let mut body = vec![0x08, 0, 0, 0];
    body.extend_from_slice(&(vni << 8).to_be_bytes());
    body.extend_from_slice(inner);
    udp_v4([192, 0, 2, 11], [192, 0, 2, 12], 40000, port, &body)
}

/// `inner` (an IP packet) in IPv4 with protocol `proto` (4 IPIP, 41 6in4).
fn ip_in_ipv4(inner: &[u8], proto: u8) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4([192, 0, 2, 11], [198, 51, 100, 12], 64)
        .write(&mut v, etherparse::IpNumber(proto), inner)
        .unwrap();
    v
}

/// Insert a VLAN tag (TPID `tpid`, id `vid`) right after the MACs.
fn tag(frame: &[u8], tpid: u16, vid: u16) -> Vec<u8> {
    let mut v = frame[..12].to_vec();
    v.extend_from_slice(&tpid.to_be_bytes());
    v.extend_from_slice(&(0x2000 | vid).to_be_bytes()); // pcp 1
    v.extend_from_slice(&frame[12..]);
    v
}

fn v6(last: u16) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    a[14..].copy_from_slice(&last.to_be_bytes());
    a
}

fn udp_v6(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(v6(0x11), v6(0x12), 64)
        .udp(sport, dport)
        .write(&mut v, data)
        .unwrap();
    v
}

fn icmp_echo_v6(id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(v6(0x11), v6(0x12), 64)
        .icmpv6_echo_request(id, seq)
        .write(&mut v, data)
        .unwrap();
    v
}

/// Split an IPv4-in-Ethernet frame into two fragments at byte `at` (a
/// multiple of 8) of its payload: (first, second).
fn fragment_v4(frame: &[u8], at: usize) -> (Vec<u8>, Vec<u8>) {
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let (hdr, payload) = ip.split_at(ihl);
    let part = |data: &[u8], off: usize, more: bool| {
        let mut h = hdr.to_vec();
        h[2..4].copy_from_slice(&((ihl + data.len()) as u16).to_be_bytes());
        let flags = (off / 8) as u16 | if more { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&flags.to_be_bytes());
        let mut f = frame[..14].to_vec();
        f.extend_from_slice(&h);
        f.extend_from_slice(data);
        f
    };
    (
        part(&payload[..at], 0, true),
        part(&payload[at..], at, false),
    )
}

/// Put an IPv6 fragment header (offset `off` bytes, M flag `more`) in front
/// of the payload of an IPv6-in-Ethernet frame, keeping only `data`.
fn fragment_v6(frame: &[u8], off: usize, more: bool, data: &[u8]) -> Vec<u8> {
    let ip = &frame[14..];
    let mut h = ip[..40].to_vec();
    let next = h[6];
    h[6] = 44;
    h[4..6].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    let mut f = frame[..14].to_vec();
    f.extend_from_slice(&h);
    let fo = ((off / 8) as u16) << 3 | u16::from(more);
    f.extend_from_slice(&[next, 0]);
    f.extend_from_slice(&fo.to_be_bytes());
    f.extend_from_slice(&0xc0ffee_u32.to_be_bytes());
    f.extend_from_slice(data);
    f
}

/// IPv6 with a hop-by-hop options header (PadN) before UDP.
fn v6_hop_by_hop(frame: &[u8]) -> Vec<u8> {
    let ip = &frame[14..];
    let mut h = ip[..40].to_vec();
    let next = h[6];
    h[6] = 0;
    let plen = u16::from_be_bytes([h[4], h[5]]) + 8;
    h[4..6].copy_from_slice(&plen.to_be_bytes());
    let mut f = frame[..14].to_vec();
    f.extend_from_slice(&h);
    f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    f.extend_from_slice(&ip[40..]);
    f
}

fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&[192, 0, 2, 11]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[192, 0, 2, 12]);
    f
}

fn built_seeds() -> Vec<Vec<u8>> {
    let icmp = icmp_echo_v4([10, 244, 1, 2], [10, 244, 2, 3], 7, 1, b"cnet-probe-42");
    let udp = udp_v4(
        [10, 244, 1, 2],
        [10, 244, 2, 3],
        5000,
        33434,
        b"cnet-probe-udp",
    );
    let tcp = {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4([10, 244, 1, 2], [10, 244, 2, 3], 64)
            .tcp(40000, 80, 0x636e_6574, 64240)
            .syn()
            .write(&mut v, b"cnet-probe-tcp")
            .unwrap();
        v
    };
    let u6 = udp_v6(5000, 33434, b"cnet-probe-udp6");
    let i6 = icmp_echo_v6(9, 3, b"cnet-probe-icmp6");
    let big = icmp_echo_v4([192, 0, 2, 11], [192, 0, 2, 12], 1, 1, &[0x5a; 64]);
    let (f1, f2) = fragment_v4(&big, 32);
    let big6 = udp_v6(5000, 33434, &[0x6b; 64]);
    let f6a = fragment_v6(&big6, 0, true, &big6[54..54 + 40]);
    let f6b = fragment_v6(&big6, 40, false, &big6[54 + 40..]);
    vec![
        icmp.clone(),
        udp.clone(),
        tcp.clone(),
        arp_request(),
        vxlan(&icmp, 1, 8472),
        vxlan(&udp, 0xabcdef, 4789),
        vxlan(&tag(&i6, 0x8100, 100), 2, 8472),
        vxlan(&vxlan(&icmp, 3, 8472), 4, 8472),
        ip_in_ipv4(&strip_eth(&icmp), 4),
        ip_in_ipv4(&strip_eth(&ip_in_ipv4(&strip_eth(&udp), 4)), 4),
        ip_in_ipv4(&strip_eth(&u6), 41),
        tag(&icmp, 0x8100, 100),
        tag(&tag(&udp, 0x8100, 100), 0x88a8, 200),
        tag(&tag(&tag(&tcp, 0x8100, 3), 0x8100, 2), 0x88a8, 1),
        tag(&u6, 0x9100, 7),
        u6.clone(),
        i6,
        v6_hop_by_hop(&u6),
        f1,
        f2,
        f6a,
        f6b,
    ]
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/wire")
}

/// Inputs that once broke an invariant (found by libFuzzer), kept as seeds.
fn regressions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/wire")
}

fn captured_seeds() -> Vec<Vec<u8>> {
    files_in(corpus_dir())
}

fn files_in(dir: PathBuf) -> Vec<Vec<u8>> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).ok()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.into_iter().map(|(_, b)| b).collect()
}

// ------------------------------------------------------- seeded mutations

/// splitmix64: a fixed, dependency-free stream, so a failure reproduces
/// from `CNET_FUZZ_SEED` alone whatever crate versions the build has.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Values that steer a decoder into its branches.
const BYTES: [u8; 12] = [
    0, 1, 0x06, 0x08, 0x11, 0x2c, 0x3a, 0x45, 0x60, 0x7f, 0x80, 0xff,
];
const WORDS: [u16; 14] = [
    0, 1, 0xffff, 8472, 4789, 0x0800, 0x86dd, 0x0806, 0x8100, 0x88a8, 0x9100, 0x2000, 0x1fff,
    0x0014,
];

fn mutate(rng: &mut Rng, b: &mut Vec<u8>, donor: &[u8]) {
    for _ in 0..1 + rng.below(4) {
        let n = b.len();
        match rng.below(9) {
            0 if n > 0 => {
                let i = rng.below(n);
                b[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                b[i] = BYTES[rng.below(BYTES.len())];
            }
            2 if n > 1 => {
                let i = rng.below(n - 1);
                b[i..i + 2].copy_from_slice(&WORDS[rng.below(WORDS.len())].to_be_bytes());
            }
            3 => b.truncate(rng.below(n + 1)),
            4 => {
                for _ in 0..rng.below(16) {
                    b.push(rng.next() as u8);
                }
            }
            5 if n > 0 => {
                let i = rng.below(n);
                let len = rng.below(n - i + 1).min(16);
                b.drain(i..i + len);
            }
            6 if n > 0 => {
                // Insert bytes (shifts every later header).
                let i = rng.below(n);
                for _ in 0..1 + rng.below(8) {
                    b.insert(i, rng.next() as u8);
                }
            }
            7 if !donor.is_empty() => {
                // Splice: our head, another seed's tail.
                let i = rng.below(n + 1);
                let j = rng.below(donor.len());
                b.truncate(i);
                b.extend_from_slice(&donor[j..]);
            }
            _ if n > 0 => {
                let i = rng.below(n);
                b[i] = rng.next() as u8;
            }
            _ => b.push(rng.next() as u8),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn failure_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-wire-failure.bin")
}

/// Run `check_decoders`; on a failure, show and keep the input. With
/// `CNET_FUZZ_KEEP=1` every input is written first, so that one which
/// aborts the process (a failed unsafe precondition in a dependency, a
/// stack overflow) is still there afterwards.
fn checked(input: &[u8], what: &str) {
    if std::env::var_os("CNET_FUZZ_KEEP").is_some() {
        let _ = std::fs::write(failure_path(), input);
    }
    let r = std::panic::catch_unwind(|| check_decoders(input));
    if let Err(e) = r {
        let path = failure_path();
        let _ = std::fs::write(&path, input);
        eprintln!(
            "wire decoder invariant broken by {what}\ninput ({} bytes, kept in {}): {}",
            input.len(),
            path.display(),
            hex(input)
        );
        std::panic::resume_unwind(e);
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn seeds_decode_to_what_they_are() {
    let captured = captured_seeds();
    assert!(
        captured.len() >= 40,
        "the captured corpus is missing: {}",
        corpus_dir().display()
    );
    // Every captured frame decodes to something, and together they hold
    // every kind the capture script made.
    let mut kinds = std::collections::BTreeSet::new();
    for f in &captured {
        checked(f, "a captured seed");
        let d = decode_ethernet(f);
        assert!(d.layers.len() >= 2, "{}: {:?}", hex(f), d.layers);
        for l in &d.layers {
            kinds.insert(match l {
                Layer::Fragment { offset: 0, .. } => "fragment (first)",
                Layer::Fragment { .. } => "fragment (later)",
                Layer::Vxlan { .. } => "vxlan",
                Layer::Ipv6 { .. } => "ipv6",
                Layer::Icmpv6 { .. } => "icmpv6",
                Layer::Arp { .. } => "arp",
                Layer::Tcp { .. } => "tcp",
                Layer::Udp { .. } => "udp",
                Layer::Icmp { .. } => "icmp",
                _ => "other",
            });
        }
        if d.layers.iter().any(|l| matches!(l, Layer::Vxlan { .. })) {
            assert!(d.encapsulated());
        }
    }
    for k in [
        "fragment (first)",
        "fragment (later)",
        "vxlan",
        "ipv6",
        "icmpv6",
        "arp",
        "tcp",
        "udp",
        "icmp",
    ] {
        assert!(
            kinds.contains(k),
            "no {k} among the captured seeds: {kinds:?}"
        );
    }
    for f in built_seeds() {
        checked(&f, "a built seed");
    }
    let regressions = files_in(regressions_dir());
    assert!(!regressions.is_empty(), "{}", regressions_dir().display());
    for f in &regressions {
        checked(f, "a regression input");
    }
}

#[test]
fn built_frames_decode_layer_by_layer() {
    let s = built_seeds();
    let names = |f: &[u8]| -> Vec<String> {
        decode_ethernet(f)
            .layers
            .iter()
            .map(|l| l.to_string().split(' ').next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        names(&s[4]),
        ["eth", "ip", "udp", "vxlan", "eth", "ip", "icmp"]
    );
    assert_eq!(
        names(&s[6]),
        ["eth", "ip", "udp", "vxlan", "eth", "vlan", "ip6", "icmp6"]
    );
    assert_eq!(names(&s[8]), ["eth", "ip", "ip", "icmp"]);
    assert_eq!(names(&s[9]), ["eth", "ip", "ip", "ip", "udp"]);
    assert_eq!(names(&s[10]), ["eth", "ip", "ip6", "udp"]);
    assert_eq!(names(&s[12]), ["eth", "802.1ad", "vlan", "ip", "udp"]);
    assert_eq!(
        names(&s[13]),
        ["eth", "802.1ad", "vlan", "vlan", "ip", "tcp"]
    );
    assert_eq!(names(&s[17]), ["eth", "ip6", "udp"]);
    // QinQ: the service tag, then the customer tag, then IPv4.
    let d = decode_ethernet(&s[12]);
    assert_eq!(
        d.layers[1..3],
        [
            Layer::Vlan {
                tpid: 0x88a8,
                id: 200,
                pcp: 1,
                ethertype: 0x8100
            },
            Layer::Vlan {
                tpid: 0x8100,
                id: 100,
                pcp: 1,
                ethertype: 0x0800
            }
        ]
    );
    assert!(d.carries(b"cnet-probe-udp"));
    // Fragments: the first has its UDP/ICMP header, the later one has none.
    let first = decode_ethernet(&s[18]);
    assert_eq!(names(&s[18]), ["eth", "ip", "fragment", "icmp"]);
    assert!(matches!(
        first.layers[2],
        Layer::Fragment {
            offset: 0,
            more: true,
            ..
        }
    ));
    let later = decode_ethernet(&s[19]);
    assert_eq!(names(&s[19]), ["eth", "ip", "fragment"]);
    assert!(matches!(
        later.layers[2],
        Layer::Fragment {
            offset: 32,
            more: false,
            ..
        }
    ));
    assert_eq!(later.payload.len(), 64 + 8 - 32);
    assert_eq!(names(&s[20]), ["eth", "ip6", "fragment", "udp"]);
    assert_eq!(names(&s[21]), ["eth", "ip6", "fragment"]);
}

#[test]
fn mutated_frames_never_break_the_decoder() {
    let iters = env_u64("CNET_FUZZ_ITERS", 200_000);
    let seed = env_u64("CNET_FUZZ_SEED", 0x636e_6574);
    let mut seeds = captured_seeds();
    seeds.extend(built_seeds());
    seeds.extend(files_in(regressions_dir()));
    // Bare IP packets too (what an L3 device or a raw socket gives).
    let bare: Vec<Vec<u8>> = seeds
        .iter()
        .filter(|f| f.len() > 14)
        .map(|f| f[14..].to_vec())
        .collect();
    seeds.extend(bare);
    let mut rng = Rng(seed);
    let t0 = std::time::Instant::now();
    let mut buf = Vec::new();
    let mut layers = 0usize;
    for i in 0..iters {
        let k = rng.below(seeds.len());
        let donor = &seeds[rng.below(seeds.len())];
        buf.clear();
        buf.extend_from_slice(&seeds[k]);
        mutate(&mut rng, &mut buf, donor);
        checked(
            &buf,
            &format!("mutation {i} of seed {k} (CNET_FUZZ_SEED={seed})"),
        );
        layers += decode_ethernet(&buf).layers.len();
    }
    // Figures, not assertions.
    eprintln!(
        "{iters} mutated frames from {} seeds checked in {:.2} s ({:.1} layers each on average)",
        seeds.len(),
        t0.elapsed().as_secs_f64(),
        layers as f64 / iters.max(1) as f64
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Shrunk failures are printed; nothing is written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Whatever goes into a VXLAN frame comes back out, and the inner frame
    /// decodes the same inside and alone.
    #[test]
    fn vxlan_round_trip(
        outer_src: [u8; 4], outer_dst: [u8; 4], inner_src: [u8; 4], inner_dst: [u8; 4],
        sport: u16, vni in 0u32..(1 << 24), port in prop::sample::select(vec![8472u16, 4789]),
        vid in proptest::option::of(1u16..4095),
        data in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut inner = udp_v4(inner_src, inner_dst, sport, 33434, &data);
        if let Some(v) = vid {
            inner = tag(&inner, 0x8100, v);
        }
        let mut body = vec![0x08, 0, 0, 0];
        body.extend_from_slice(&(vni << 8).to_be_bytes());
        body.extend_from_slice(&inner);
        let frame = udp_v4(outer_src, outer_dst, sport, port, &body);
        check_decoders(&frame);
        let d = decode_ethernet(&frame);
        prop_assert_eq!(&d.layers[1], &Layer::Ipv4 {
            src: Ipv4Addr::from(outer_src), dst: Ipv4Addr::from(outer_dst), proto: 17, ttl: 64,
            len: (20 + 8 + body.len()) as u16,
        });
        prop_assert_eq!(&d.layers[3], &Layer::Vxlan { vni });
        prop_assert_eq!(d.inner_ipv4(), Some((inner_src.into(), inner_dst.into(), 17)));
        prop_assert_eq!(&d.payload, &data);
        let alone = decode_ethernet(&inner);
        prop_assert_eq!(&d.layers[4..], &alone.layers[..]);
        prop_assert_eq!(d.spans[4].clone(), frame.len() - inner.len()..frame.len());
    }

    /// IPv6, bare or in 6in4, with or without a hop-by-hop header.
    #[test]
    fn ipv6_round_trip(
        sport: u16, dport: u16, hbh: bool, in4: bool,
        data in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut f = udp_v6(sport, dport, &data);
        if hbh {
            f = v6_hop_by_hop(&f);
        }
        if in4 {
            f = ip_in_ipv4(&f[14..], 41);
        }
        check_decoders(&f);
        let d = decode_ethernet(&f);
        let ip6 = d.layers.iter().find(|l| matches!(l, Layer::Ipv6 { .. })).cloned();
        prop_assert_eq!(ip6, Some(Layer::Ipv6 {
            src: Ipv6Addr::from(v6(0x11)), dst: Ipv6Addr::from(v6(0x12)), next_header: 17,
            hop_limit: 64, payload_len: (8 + data.len() + if hbh { 8 } else { 0 }) as u16,
        }));
        let udp_ok = matches!(
            d.layers.last(),
            Some(Layer::Udp { src_port, dst_port, .. }) if *src_port == sport && *dst_port == dport
        );
        prop_assert!(udp_ok, "{:?}", d.layers);
        prop_assert_eq!(&d.payload, &data);
        prop_assert_eq!(d.encapsulated(), in4);
        // The same packet without its Ethernet header.
        let bare = decode_ip(&f[14..]);
        prop_assert_eq!(&bare.layers[..], &d.layers[1..]);
    }

    /// A later IPv4 fragment whose data happens to look like a UDP header
    /// to a VXLAN port is never decoded as one.
    #[test]
    fn later_fragments_carry_no_transport_header(at in 1usize..8, dport in prop::sample::select(vec![8472u16, 4789, 53])) {
        let body = [dport.to_be_bytes(), dport.to_be_bytes(), [0, 16], [0, 0], [0x08, 0], [0, 0], [0, 1], [0, 0]].concat();
        let mut payload = vec![0u8; at * 8];
        payload.extend_from_slice(&body);
        let full = udp_v4([192, 0, 2, 11], [192, 0, 2, 12], 1, 2, &payload);
        let (first, later) = fragment_v4(&full, at * 8);
        check_decoders(&first);
        check_decoders(&later);
        let d = decode_ethernet(&later);
        prop_assert!(matches!(d.layers.last(), Some(Layer::Fragment { .. })), "{:?}", d.layers);
        let later_udp = d.layers.iter().any(|l| matches!(l, Layer::Udp { .. } | Layer::Vxlan { .. }));
        prop_assert!(!later_udp, "{:?}", d.layers);
        let first_udp = decode_ethernet(&first).layers.iter().any(|l| matches!(l, Layer::Udp { .. }));
        prop_assert!(first_udp);
    }
}
