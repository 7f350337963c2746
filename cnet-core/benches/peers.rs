//! Peer reconcile benchmark (not a timed test):
//! `cargo bench -p cnet-core --bench peers`.
//!
//! In one fresh namespace playing a node (underlay `eth0`, a veth, with
//! 198.18.0.1/15, RFC 2544's benchmarking range), `Node::reconcile_peers`
//! with 5,000 vxlan peers: from empty (device + 5,000 neighbours, FDB
//! entries and routes), converged (a no-op), after 1 % churn, and the same
//! 15,000 entries added one request at a time as Flannel does (neighbour,
//! FDB entry, route per peer, each waiting for its ACK) for comparison.
//! `ip -batch` of the 5,000 routes alone is a peer for the route part.
//! Then host-gw: switching 5,000 peers in place and a no-op, whose cost is
//! one `ip route get` per peer (the same-segment check).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use cnet_core::fdb::FdbEntry;
use cnet_core::link::Veth;
use cnet_core::neigh::Neighbour;
use cnet_core::network::{vtep_mac_for, Backend, Node, NodeConfig, Peer, PeerReport};
use cnet_core::route::Route;
use cnet_core::{Handle, IpNet, NetNs};

const N: u32 = 5_000;

struct Ns(String);
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = NetNs::delete(&self.0);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Peer `i`: subnet 10.(i/256).(i%256).0/24, underlay 198.18.0.2 + i.
fn peer(i: u32, tag: &str) -> Peer {
    let subnet: IpNet = format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap();
    let underlay = IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 2)) + i));
    let name = format!("{tag}{i}");
    Peer::new(&name, subnet, underlay).with_vtep_mac(vtep_mac_for(&name))
}

fn timed(what: &str, f: impl FnOnce() -> PeerReport) -> (Duration, PeerReport) {
    let t = Instant::now();
    let r = f();
    let d = t.elapsed();
    assert!(r.is_ok(), "{what}: {:?}", r.failed.first());
    println!(
        "{what:<44} {:>8.1} ms   routes +{} ~{} -{} ={}  neigh +{} ~{} -{}  fdb +{} -{}",
        ms(d),
        r.routes.added,
        r.routes.replaced,
        r.routes.deleted,
        r.routes.unchanged,
        r.neighbours.added,
        r.neighbours.replaced,
        r.neighbours.deleted,
        r.fdb.added,
        r.fdb.deleted
    );
    (d, r)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the peers benchmark needs root (it builds a namespace)");
        return;
    }
    let name = format!("cn-bench-peers-{}", std::process::id());
    let ns = NetNs::create(&name).unwrap();
    let _guard = Ns(name.clone());
    let h = Handle::at(&ns).unwrap();
    h.links().set_up("lo").unwrap();
    h.links()
        .add(Veth::new("eth0", "eth0p").up().peer_up())
        .unwrap();
    h.addrs()
        .add("eth0", "198.18.0.1/15".parse().unwrap())
        .unwrap();
    let cfg = NodeConfig::new(
        "bench",
        "10.244.1.0/24".parse().unwrap(),
        "eth0",
        "198.18.0.1".parse().unwrap(),
    );
    let node = Node::new(&h, cfg).unwrap();
    let vx = Backend::vxlan();
    let peers: Vec<Peer> = (0..N).map(|i| peer(i, "n")).collect();
    println!("{N} vxlan peers, kernel entries read back by the reconciles themselves\n");

    let (empty, r) = timed("vxlan: from empty (device + 3 × 5,000)", || {
        node.reconcile_peers(&vx, &peers).unwrap()
    });
    assert_eq!(r.routes.added, N as usize);
    let noops: Vec<Duration> = (0..5)
        .map(|k| {
            let (d, r) = timed(&format!("vxlan: converged, no-op (run {})", k + 1), || {
                node.reconcile_peers(&vx, &peers).unwrap()
            });
            assert!(r.is_noop());
            d
        })
        .collect();
    let noop = median(noops);
    // 1 % churn: 50 peers leave, 50 others arrive.
    let mut churned: Vec<Peer> = peers[50..].to_vec();
    churned.extend((0..50).map(|i| peer(N + i, "n")));
    let (churn, _) = timed("vxlan: 1 % churn (50 leave, 50 arrive)", || {
        node.reconcile_peers(&vx, &churned).unwrap()
    });
    let (gone, _) = timed("vxlan: all 5,000 depart", || {
        node.reconcile_peers(&vx, &[]).unwrap()
    });

    // A peer for the routes alone: `ip -batch` of the same 5,000 routes
    // (each with its own gateway, which costs the kernel several times
    // more than routes sharing one), then removed again.
    let batch = std::env::temp_dir().join(format!("cnet-bench-peers-{}", std::process::id()));
    let lines: String = peers
        .iter()
        .map(|p| {
            format!(
                "route add {} via {} dev cnet.vxlan onlink proto 119\n",
                p.subnet,
                p.vtep_ip()
            )
        })
        .collect();
    std::fs::write(&batch, lines).unwrap();
    let t = Instant::now();
    let ok = std::process::Command::new("ip")
        .args(["-n", &name, "-batch"])
        .arg(&batch)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let ip_batch = t.elapsed();
    let _ = std::fs::remove_file(&batch);
    assert!(ok, "ip -batch");
    println!(
        "{:<44} {:>8.1} ms",
        "ip -batch: the 5,000 routes alone",
        ms(ip_batch)
    );
    let (_, r) = timed("vxlan: remove them (no peers)", || {
        node.reconcile_peers(&vx, &[]).unwrap()
    });
    assert_eq!(r.routes.deleted, N as usize);

    // Flannel's way: per peer a neighbour, an FDB entry and a route, each
    // one request answered by its ACK before the next.
    let dev = "cnet.vxlan";
    let t = Instant::now();
    for p in &peers {
        let mac = p.vtep_mac.unwrap();
        h.neighbours()
            .add(Neighbour::new(dev, p.vtep_ip(), mac))
            .unwrap();
        h.fdb()
            .append(FdbEntry::new(mac, dev).dst(p.underlay).on_self())
            .unwrap();
        h.routes()
            .add(Route::to(p.subnet).via(p.vtep_ip()).dev(dev).onlink())
            .unwrap();
    }
    let one_by_one = t.elapsed();
    println!(
        "{:<44} {:>8.1} ms",
        "one request per entry (Flannel's way)",
        ms(one_by_one)
    );
    let (_, r) = timed("vxlan: converge over those (no-op)", || {
        node.reconcile_peers(&vx, &peers).unwrap()
    });
    assert!(r.is_noop(), "the same entries as the reconcile makes");

    // host-gw: switch in place, then converged.
    let (switch, r) = timed("host-gw: switch 5,000 in place (device goes)", || {
        node.reconcile_peers(&Backend::HostGw, &peers).unwrap()
    });
    assert_eq!(r.routes.added, N as usize);
    let (hg_noop, r) = timed("host-gw: converged, no-op (5,000 lookups)", || {
        node.reconcile_peers(&Backend::HostGw, &peers).unwrap()
    });
    assert!(r.is_noop());

    println!();
    println!(
        "vxlan from empty: {:.1} ms ({:.1} µs per peer, 3 entries each); one request per entry: {:.1} ms ({:.2}× slower)",
        ms(empty),
        empty.as_secs_f64() * 1e6 / f64::from(N),
        ms(one_by_one),
        one_by_one.as_secs_f64() / empty.as_secs_f64()
    );
    println!(
        "ip -batch of the 5,000 routes alone: {:.1} ms ({:.2}× the whole reconcile from empty)",
        ms(ip_batch),
        ip_batch.as_secs_f64() / empty.as_secs_f64()
    );
    println!(
        "vxlan no-op over {N}: {:.1} ms (median of 5; {:.0}× cheaper than from empty); 1 % churn {:.1} ms; all depart {:.1} ms",
        ms(noop),
        empty.as_secs_f64() / noop.as_secs_f64(),
        ms(churn),
        ms(gone)
    );
    println!(
        "host-gw: switch in place {:.1} ms, no-op {:.1} ms",
        ms(switch),
        ms(hg_noop)
    );
}
