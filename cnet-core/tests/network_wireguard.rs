//! The node's WireGuard backend. The generic-netlink messages are pinned
//! by snapshots (no kernel needed). On a cluster in namespaces: this
//! machine's kernel has no wireguard, so here switching a working host-gw
//! cluster to wireguard fails with `Unsupported` and the kernel's "Unknown
//! device type" and leaves the nodes as they were. `scripts/test` runs this
//! binary again in the stock-kernel VM (`CNET_IN_VM=1`), where every
//! container pair pings through the encrypted tunnels and a capture on the
//! underlay sees only UDP to port 51820 between the hosts.

// Host indices address several parallel lists (hosts, backends, leases).
#![allow(clippy::needless_range_loop)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use cnet_core::ipam::NodeLease;
use cnet_core::link::WireGuard;
use cnet_core::netlink_packet_core::Emitable;
use cnet_core::network::{Backend, DeviceChange, PeerPath, WireGuardConfig, WIREGUARD_KEY_ATTR};
use cnet_core::wireguard::{get_device_message, PrivateKey, WgPeer, WgSet, WireGuardSocket};
use cnet_core::Error;
use cnet_test_support::cluster::{Cluster, Spec};
use cnet_test_support::privileged;

fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| {
            c.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn render(m: &cnet_core::wireguard::WgSet) -> String {
    let msg = m.message();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.emit(&mut buf);
    format!(
        "{msg:#?}\n--- attributes, {} bytes ---\n{}",
        buf.len(),
        hex(&buf)
    )
}

#[test]
fn network_wireguard_set_device_message_is_pinned() {
    let key = PrivateKey::from_bytes([7; 32]);
    let peer_key = PrivateKey::from_bytes([9; 32]).public_key();
    let gone = PrivateKey::from_bytes([11; 32]).public_key();
    let set = WgSet::new("cnet.wg")
        .private_key(key)
        .listen_port(51820)
        .peer(WgPeer {
            public_key: peer_key,
            endpoint: Some("192.0.2.12:51820".parse::<SocketAddr>().unwrap()),
            allowed_ips: vec!["10.244.2.0/24".parse().unwrap()],
            persistent_keepalive: Some(25),
        })
        .remove_peer(gone);
    insta::assert_snapshot!(render(&set));
    let get = get_device_message("cnet.wg");
    let mut buf = vec![0u8; get.buffer_len()];
    get.emit(&mut buf);
    insta::assert_snapshot!(format!("{get:?}\n{}", hex(&buf)));
}

/// Whether this kernel has wireguard; in the VM it must.
fn wireguard_expected() -> bool {
    let has = match cnet_core::NetNs::current().and_then(|ns| WireGuardSocket::at(&ns)) {
        Ok(_) => true,
        Err(Error::Unsupported { .. }) => false,
        Err(e) => panic!("probe the wireguard family: {e}"),
    };
    common::expect_in_vm("wireguard", has)
}

/// Each host's backend: defaults, its key in a file of the test's own.
fn backends(dir: &std::path::Path, c: &Cluster) -> Vec<Backend> {
    c.hosts
        .iter()
        .map(|h| {
            Backend::WireGuard(WireGuardConfig::with_key_file(
                dir.join(format!("{}.key", h.role)),
            ))
        })
        .collect()
}

/// Every host's lease as it publishes it for its backend.
fn leases(c: &Cluster, b: &[Backend]) -> Vec<NodeLease> {
    (0..c.hosts.len())
        .map(|i| NodeLease {
            node: c.hosts[i].role.clone(),
            subnet: c.hosts[i].subnet,
            attrs: c.node(i).lease_attrs(&b[i]).unwrap(),
            expires: None,
        })
        .collect()
}

fn links(c: &Cluster, i: usize) -> Vec<String> {
    c.ip_json(&c.hosts[i].ns, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

/// `tcpdump -i any` in a namespace, killed (by its pid) when dropped.
struct Capture {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Capture {
    fn start(ns: &str) -> Capture {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-i", "any", "-nn", "-l"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(|l| l.ok()) {
                let _ = tx.send(l);
            }
        });
        // Wait until it listens ("listening on any, …" on stderr).
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        while !said.contains("listening") {
            let n = err.read_line(&mut said).unwrap();
            assert!(n > 0, "tcpdump ended: {said}");
        }
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Capture { child, lines }
    }

    /// Stop (SIGINT, so it flushes) and return what it printed.
    fn stop(mut self) -> Vec<String> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.child.wait();
        self.lines.try_iter().collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn cluster_wireguard_all_pairs_ping_encrypted_or_unsupported() {
    if !privileged() {
        return;
    }
    let has_wg = wireguard_expected();
    let c = Cluster::build(
        "wg",
        Spec {
            near: 3,
            far: 0,
            containers: 2,
        },
    );
    c.reconcile_all(&Backend::HostGw);
    let dir = tempfile::tempdir().unwrap();
    let b = backends(dir.path(), &c);
    let leases = leases(&c, &b);
    for l in &leases {
        let k = &l.attrs.extra[WIREGUARD_KEY_ATTR];
        assert_eq!(k.len(), 44, "base64 of 32 bytes: {k}");
        assert_eq!(l.attrs.backend.as_deref(), Some("wireguard"));
    }
    if !has_wg {
        for i in 0..c.hosts.len() {
            let before = c.cnet_routes(i);
            let e = c.node(i).reconcile_leases(&b[i], &leases).unwrap_err();
            assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
            assert_eq!(e.kernel_message(), Some("Unknown device type"), "{e}");
            assert!(e.to_string().contains("cnet.wg"), "{e}");
            assert!(
                !links(&c, i).contains(&"cnet.wg".to_string()),
                "nothing half-made"
            );
            assert_eq!(c.cnet_routes(i), before, "the node is as it was");
        }
        let (a, z) = (&c.containers[0], &c.containers[5]);
        assert!(Cluster::ping(&a.ns, z.ip), "host-gw still carries traffic");
        return;
    }

    // Switch in place: the device, its peers, each route replaced by one
    // through it.
    for i in 0..3 {
        let r = c
            .node(i)
            .reconcile_leases(&b[i], &leases)
            .unwrap()
            .into_result()
            .unwrap();
        assert!(
            r.devices.contains(&DeviceChange::Created {
                name: "cnet.wg".into()
            }),
            "{r:?}"
        );
        assert_eq!(
            (
                r.routes.replaced,
                r.count(PeerPath::WireGuard),
                r.wireguard.added
            ),
            (2, 2, 2),
            "{r:?}"
        );
    }
    for i in 0..3 {
        let h = &c.hosts[i];
        let l = &c.ip_json(&h.ns, &["link", "show", "dev", "cnet.wg"])[0];
        assert_eq!(l["linkinfo"]["info_kind"], "wireguard", "{l}");
        assert_eq!(l["mtu"], 1440, "underlay 1500 − 60: {l}");
        let mut want: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| format!("{} via - dev cnet.wg", c.hosts[j].subnet))
            .collect();
        want.sort();
        assert_eq!(c.cnet_routes(i), want);
        // The kernel's view of the device (read back over generic netlink).
        let ns = cnet_core::NetNs::open(&h.ns).unwrap();
        let d = WireGuardSocket::at(&ns).unwrap().device("cnet.wg").unwrap();
        assert_eq!(d.listen_port, 51820);
        assert_eq!(
            d.public_key.unwrap().to_string(),
            leases[i].attrs.extra[WIREGUARD_KEY_ATTR]
        );
        assert_eq!(d.peers.len(), 2, "{d:?}");
        for j in (0..3).filter(|j| *j != i) {
            let k = leases[j].attrs.extra[WIREGUARD_KEY_ATTR].parse().unwrap();
            let p = d.peer(&k).unwrap_or_else(|| panic!("peer {j} in {d:?}"));
            assert_eq!(p.peer.allowed_ips, vec![c.hosts[j].subnet]);
            assert_eq!(
                p.peer.endpoint,
                Some(SocketAddr::new(c.hosts[j].underlay, 51820))
            );
        }
    }

    // All pairs, with the underlay captured meanwhile.
    let ul_ns = format!("{}-ul-{}", c.prefix(), std::process::id());
    let cap = Capture::start(&ul_ns);
    let failed = c.all_pairs_ping();
    let lines = cap.stop();
    assert!(failed.is_empty(), "pairs that do not ping: {failed:?}");
    let ip_lines: Vec<&String> = lines.iter().filter(|l| l.contains(" IP ")).collect();
    let clear: Vec<&&String> = ip_lines
        .iter()
        .filter(|l| {
            // "… IP 192.0.2.11.51820 > 192.0.2.12.51820: UDP, length 128"
            let Some(rest) = l.split(" IP ").nth(1) else {
                return true;
            };
            let mut w = rest.split_whitespace();
            let (src, _, dst) = (w.next(), w.next(), w.next());
            let udp = rest.contains(": UDP");
            let wg_port =
                |s: Option<&str>| s.is_some_and(|s| s.trim_end_matches(':').ends_with(".51820"));
            !(udp && wg_port(src) && wg_port(dst))
                || rest.contains("10.244.")
                || rest.contains("ICMP")
        })
        .collect();
    eprintln!(
        "underlay capture: {} lines, {} IPv4, {} not UDP 51820 between hosts",
        lines.len(),
        ip_lines.len(),
        clear.len()
    );
    assert!(
        ip_lines.len() >= 30,
        "the pings crossed the underlay: {lines:?}"
    );
    assert!(
        clear.is_empty(),
        "traffic in clear on the underlay: {clear:?}"
    );

    // Converged: nothing written.
    for i in 0..3 {
        let r = c.node(i).reconcile_leases(&b[i], &leases).unwrap();
        assert!(r.is_noop(), "{r:?}");
    }
    // A peer departs: its WireGuard peer and route go.
    let r = c.node(0).reconcile_leases(&b[0], &leases[..2]).unwrap();
    assert_eq!((r.wireguard.deleted, r.routes.deleted), (1, 1), "{r:?}");
    // Back to host-gw: the device goes, direct routes replace the tunnel's.
    for r in c.reconcile_all(&Backend::HostGw) {
        assert!(
            r.devices.contains(&DeviceChange::Deleted {
                name: "cnet.wg".into()
            }),
            "{r:?}"
        );
    }
    assert!(c.all_pairs_ping().is_empty());
}

#[test]
fn network_wireguard_700_peers_are_all_set_and_read_back() {
    if !privileged() {
        return;
    }
    let has_wg = wireguard_expected();
    let t = common::TestNs::new("wgm");
    let h = t.handle();
    // Down: no handshake is started, nothing is sent.
    let made = h.links().add(WireGuard::new("wg0"));
    if !has_wg {
        let e = made.unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
        let e = WireGuardSocket::at(&t.ns).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
        return;
    }
    made.unwrap();
    const N: usize = 700;
    let peers: Vec<WgPeer> = (0..N)
        .map(|i| {
            // Not in byte 0, whose low 3 bits clamping clears.
            let mut seed = [1u8; 32];
            seed[1..9].copy_from_slice(&(i as u64).to_le_bytes());
            WgPeer {
                public_key: PrivateKey::from_bytes(seed).public_key(),
                endpoint: Some(SocketAddr::from(([192, 0, 2, (i % 250) as u8 + 1], 51820))),
                allowed_ips: vec![format!("10.244.{}.{}/32", i / 256, i % 256)
                    .parse()
                    .unwrap()],
                persistent_keepalive: None,
            }
        })
        .collect();
    let set = |peers: &[WgPeer]| {
        peers.iter().fold(
            WgSet::new("wg0")
                .private_key(PrivateKey::from_bytes([3; 32]))
                .listen_port(51820)
                .replace_peers(),
            |s, p| s.peer(p.clone()),
        )
    };
    let mut sock = WireGuardSocket::at(&t.ns).unwrap();
    let check = |sock: &mut WireGuardSocket, want: &[WgPeer]| {
        let d = sock.device("wg0").unwrap();
        assert_eq!(d.peers.len(), want.len(), "peers read back");
        for p in want {
            let got = d
                .peer(&p.public_key)
                .unwrap_or_else(|| panic!("peer {} missing", p.public_key));
            assert_eq!(got.peer, *p);
        }
        d.peers.len()
    };
    let all = set(&peers);
    let t0 = std::time::Instant::now();
    sock.set(&all).unwrap();
    let took = t0.elapsed();
    let n = check(&mut sock, &peers);
    println!(
        "{n} peers set in {} messages ({took:?}) and read back",
        all.messages().len()
    );
    // Again with replace-peers and fewer peers: still several messages,
    // and only the first replaces (a later one that did would leave only
    // its own peers).
    let fewer = set(&peers[50..]);
    assert!(fewer.messages().len() > 1);
    sock.set(&fewer).unwrap();
    let n = check(&mut sock, &peers[50..]);
    println!(
        "replaced by {n} peers in {} messages",
        fewer.messages().len()
    );
}
