//! Route programming benchmark (not a timed test):
//! `cargo bench -p cnet-core --bench routes`.
//!
//! In one fresh namespace, 10,000 /32 routes via a gateway on a veth are
//! programmed and deleted three ways: a raw netlink loop (prebuilt bytes
//! written to the socket, ACKs counted: the kernel's own cost), the
//! library's typed batch (`Routes::apply_batch`, every result checked) and
//! `ip -n NS -batch FILE`. Then a no-op reconcile of 10,000 routes that are
//! already right, and 100,000 routes through the batch (no ENOBUFS).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use cnet_core::link::Veth;
use cnet_core::route::{Route, RouteFilter, RouteOp, RouteOwner, PROTOCOL};
use cnet_core::{Handle, NetNs};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;

const N: u32 = 10_000;
const BIG: u32 = 100_000;
const GW: &str = "192.0.2.12";

struct Ns(String);
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = NetNs::delete(&self.0);
    }
}

fn dst(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a40_0000u32 + i) // 10.64.0.0 + i
}

fn routes(n: u32) -> Vec<Route> {
    let gw: IpAddr = GW.parse().unwrap();
    (0..n)
        .map(|i| {
            Route::to(format!("{}/32", dst(i)).parse().unwrap())
                .via(gw)
                .dev("v0")
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn count(h: &Handle) -> usize {
    h.routes()
        .list(&RouteFilter::new().protocol(PROTOCOL).table(254))
        .unwrap()
        .len()
}

/// Prebuilt datagrams (≤ 64 KiB each) and their message counts.
fn raw_datagrams(h: &Handle, rs: &[Route], delete: bool) -> Vec<(Vec<u8>, usize)> {
    let v0 = h.links().index_of("v0").unwrap();
    let mut sock = h.raw_socket().unwrap();
    let mut out = Vec::new();
    let mut cur = Vec::with_capacity(64 << 10);
    let mut n = 0;
    for r in rs {
        let m = r.message(&|_| Ok(v0)).unwrap();
        let payload = if delete {
            RouteNetlinkMessage::DelRoute(m)
        } else {
            RouteNetlinkMessage::NewRoute(m)
        };
        let mut nl = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(payload));
        nl.header.flags =
            NLM_F_REQUEST | NLM_F_ACK | if delete { 0 } else { NLM_F_CREATE | NLM_F_EXCL };
        nl.header.sequence_number = sock.take_seq();
        nl.finalize();
        let mut b = vec![0; nl.buffer_len()];
        nl.serialize(&mut b);
        if cur.len() + b.len() > (64 << 10) {
            out.push((std::mem::take(&mut cur), n));
            n = 0;
        }
        cur.extend_from_slice(&b);
        n += 1;
    }
    if n > 0 {
        out.push((cur, n));
    }
    out
}

fn raw_run(h: &Handle, grams: &[(Vec<u8>, usize)]) -> Duration {
    let mut sock = h.raw_socket().unwrap();
    let t = Instant::now();
    let mut errors = 0;
    for (g, n) in grams {
        errors += sock.raw_send_recv(g, *n).unwrap();
    }
    let d = t.elapsed();
    assert_eq!(errors, 0, "raw loop saw kernel errors");
    d
}

fn lib_run(h: &Handle, ops: &[RouteOp]) -> Duration {
    let t = Instant::now();
    let res = h.routes().apply_batch(ops);
    let d = t.elapsed();
    let bad: Vec<_> = res.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(bad.is_empty(), "{} failures, first: {}", bad.len(), bad[0]);
    d
}

fn ip_batch(ns: &str, rs: &[Route], verb: &str) -> Duration {
    let path = std::env::temp_dir().join(format!("cnet-bench-{}-{verb}", std::process::id()));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for r in rs {
            writeln!(
                f,
                "route {verb} {}/32 via {GW} dev v0 proto {PROTOCOL}",
                r.destination().addr()
            )
            .unwrap();
        }
    }
    let t = Instant::now();
    let out = Command::new("ip")
        .args(["-n", ns, "-batch"])
        .arg(&path)
        .output()
        .unwrap();
    let d = t.elapsed();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "ip -batch {verb}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn best(times: &mut [Duration]) -> Duration {
    times.sort();
    times[0]
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("routes bench SKIPPED: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)");
        return;
    }
    let name = format!("cnbench-{}", std::process::id());
    let ns = NetNs::create(&name).expect("create namespace");
    let _guard = Ns(name.clone());
    let h = Handle::at(&ns).unwrap();
    h.links().set_up("lo").unwrap();
    h.links()
        .add(Veth::new("v0", "v0p").up().peer_up())
        .unwrap();
    h.addrs()
        .add("v0", "192.0.2.1/24".parse().unwrap())
        .unwrap();
    println!(
        "namespace {name}, {N} /32 routes via {GW} dev v0, socket rcvbuf {} KiB",
        h.raw_socket().unwrap().rcvbuf() >> 10
    );

    let rs = routes(N);
    let adds: Vec<RouteOp> = rs.iter().cloned().map(RouteOp::Add).collect();
    let dels: Vec<RouteOp> = rs.iter().cloned().map(RouteOp::Delete).collect();
    const ROUNDS: usize = 5;
    let (mut raw_a, mut raw_d, mut lib_a, mut lib_d, mut ip_a, mut ip_d) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let g = raw_datagrams(&h, &rs, false);
        raw_a.push(raw_run(&h, &g));
        assert_eq!(count(&h), N as usize);
        let g = raw_datagrams(&h, &rs, true);
        raw_d.push(raw_run(&h, &g));
        assert_eq!(count(&h), 0);

        lib_a.push(lib_run(&h, &adds));
        assert_eq!(count(&h), N as usize);
        lib_d.push(lib_run(&h, &dels));
        assert_eq!(count(&h), 0);

        ip_a.push(ip_batch(&name, &rs, "add"));
        assert_eq!(count(&h), N as usize);
        ip_d.push(ip_batch(&name, &rs, "del"));
        assert_eq!(count(&h), 0);
    }
    let (raw_a, raw_d) = (best(&mut raw_a), best(&mut raw_d));
    let (lib_a, lib_d) = (best(&mut lib_a), best(&mut lib_d));
    let (ip_a, ip_d) = (best(&mut ip_a), best(&mut ip_d));
    println!("best of {ROUNDS} rounds, {N} routes:");
    println!("  {:<28}{:>10}{:>10}", "", "add ms", "del ms");
    for (what, a, d) in [
        ("raw netlink loop", raw_a, raw_d),
        ("cnet apply_batch (typed)", lib_a, lib_d),
        ("ip -batch", ip_a, ip_d),
    ] {
        println!("  {what:<28}{:>10.2}{:>10.2}", ms(a), ms(d));
    }
    println!(
        "  per route: raw {:.2} µs, cnet {:.2} µs, ip {:.2} µs",
        raw_a.as_secs_f64() * 1e6 / N as f64,
        lib_a.as_secs_f64() * 1e6 / N as f64,
        ip_a.as_secs_f64() * 1e6 / N as f64
    );
    println!(
        "  ratios: cnet/raw add {:.3} del {:.3} (target ≤ 1.15); ip/cnet add {:.2}× del {:.2}× (target ≥ 2.3×)",
        lib_a.as_secs_f64() / raw_a.as_secs_f64(),
        lib_d.as_secs_f64() / raw_d.as_secs_f64(),
        ip_a.as_secs_f64() / lib_a.as_secs_f64(),
        ip_d.as_secs_f64() / lib_d.as_secs_f64(),
    );

    // Reconcile 10,000 routes that are already right: no writes.
    let owner = RouteOwner::default();
    let rep = h.routes().reconcile(&owner, &rs).unwrap();
    assert_eq!(rep.added, N as usize, "{rep:?}");
    let mut rec = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let rep = h.routes().reconcile(&owner, &rs).unwrap();
        rec.push(t.elapsed());
        assert!(rep.is_noop() && rep.unchanged == N as usize, "{rep:?}");
    }
    let rec = best(&mut rec);
    let mut lt = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let n = count(&h);
        lt.push(t.elapsed());
        assert_eq!(n, N as usize);
    }
    println!(
        "  of which one filtered dump (list): {:.2} ms",
        ms(best(&mut lt))
    );
    println!(
        "no-op reconcile of {N} routes: {:.2} ms (target < 10 ms)",
        ms(rec)
    );
    let rep = h.routes().reconcile(&owner, &[]).unwrap();
    assert_eq!(rep.deleted, N as usize);

    // 100,000 routes: the window keeps the receive buffer from overflowing.
    let big = routes(BIG);
    let adds: Vec<RouteOp> = big.iter().cloned().map(RouteOp::Add).collect();
    let dels: Vec<RouteOp> = big.into_iter().map(RouteOp::Delete).collect();
    let a = lib_run(&h, &adds);
    assert_eq!(count(&h), BIG as usize);
    let d = lib_run(&h, &dels);
    assert_eq!(count(&h), 0);
    println!(
        "{BIG} routes through apply_batch: add {:.1} ms, delete {:.1} ms, every result checked, no ENOBUFS",
        ms(a),
        ms(d)
    );
}
