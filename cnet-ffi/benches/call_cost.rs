//! The cost of a call through the C ABI, Rust side (not a timed test): run
//! by `scripts/bench-ffi`, which makes the test namespace and runs the C
//! and Go halves too. In namespace `$CNET_BENCH_NS`, 10,000 route lookups
//! (`ip route get $CNET_BENCH_DST`) twice:
//!
//! - `rust-direct`: `Handle::routes().lookup()`, what a Rust caller does;
//! - `rust-via-export`: the exported `cnet_route_lookup` called from Rust
//!   (string parsing, the panic guard, the fixed-size C result), so the
//!   boundary's own cost shows without a foreign caller.
//!
//! Prints `RESULT <label> <ns per call>` lines for the script.

use std::ffi::CString;
use std::hint::black_box;
use std::net::IpAddr;
use std::ptr::{null, null_mut};
use std::time::Instant;

use cnet::ns::{cnet_handle, cnet_handle_free, cnet_handle_new, cnet_netns_free, cnet_netns_open};
use cnet::route::{cnet_route_lookup, cnet_route_lookup_result};
use cnet_core::route::RouteQuery;
use cnet_core::{Handle, NetNs};

const N: u32 = 10_000;

fn report(label: &str, t: std::time::Duration) {
    let per = t.as_nanos() as f64 / f64::from(N);
    println!(
        "{label:>16}: {N} lookups in {:.1} ms, {per:.0} ns/call",
        t.as_secs_f64() * 1e3
    );
    println!("RESULT {label} {per:.0}");
}

fn main() {
    let (Ok(ns), Ok(dst)) = (
        std::env::var("CNET_BENCH_NS"),
        std::env::var("CNET_BENCH_DST"),
    ) else {
        eprintln!("call_cost: run by scripts/bench-ffi (it sets CNET_BENCH_NS and CNET_BENCH_DST)");
        return;
    };
    let h = Handle::at(&NetNs::open(&ns).expect("open namespace")).expect("handle");
    let ip: IpAddr = dst.parse().expect("CNET_BENCH_DST");
    let q = RouteQuery::new(ip);
    for _ in 0..1000 {
        black_box(h.routes().lookup(&q).expect("lookup"));
    }
    let t = Instant::now();
    for _ in 0..N {
        black_box(h.routes().lookup(&q).expect("lookup"));
    }
    report("rust-direct", t.elapsed());

    let name = CString::new(ns).unwrap();
    let d = CString::new(dst).unwrap();
    let (mut n, mut ch): (_, *mut cnet_handle) = (null_mut(), null_mut());
    assert_eq!(cnet_netns_open(name.as_ptr(), &mut n, null_mut()), 0);
    assert_eq!(cnet_handle_new(n, &mut ch, null_mut()), 0);
    let mut r = std::mem::MaybeUninit::<cnet_route_lookup_result>::uninit();
    for _ in 0..1000 {
        assert_eq!(
            cnet_route_lookup(ch, d.as_ptr(), null(), r.as_mut_ptr(), null_mut()),
            0
        );
    }
    let t = Instant::now();
    for _ in 0..N {
        let rc = cnet_route_lookup(ch, d.as_ptr(), null(), r.as_mut_ptr(), null_mut());
        assert_eq!(black_box(rc), 0);
    }
    report("rust-via-export", t.elapsed());
    cnet_handle_free(ch);
    cnet_netns_free(n);
}
