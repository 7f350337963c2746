//! IPAM benchmark (not a test): `cargo bench -p cnet-core --bench ipam`.
//!
//! 1. Fill a /16 pool in the file store (fsync on, as in production) and
//!    print the cost per allocation at 0%, 50% and 99% full: it should stay
//!    flat. Then release everything.
//! 2. The cost a one-shot process pays (open the store, allocate once), as a
//!    CNI plugin would, at 1,000 and 5,000 existing allocations.
//! 3. The CNI `host-local` plugin allocating one more address from the same
//!    range at 1,000 and 5,000 existing allocations (its data dir filled
//!    with its own per-address files), and the ratios. Skipped with a
//!    message if the plugin is not installed.
//!
//! `CNET_BENCH_DIR` chooses where the stores live (default: the temp dir).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cnet_core::ipam::{FileOptions, FileStore, PoolConfig, PoolStore};

const WINDOW: u32 = 1000;

fn tmpdir(tag: &str) -> tempfile::TempDir {
    let base = std::env::var_os("CNET_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).expect("bench dir");
    tempfile::Builder::new()
        .prefix(tag)
        .tempdir_in(base)
        .expect("temp dir")
}

fn us(d: Duration, n: u32) -> f64 {
    d.as_secs_f64() * 1e6 / f64::from(n)
}

fn subnet() -> ipnet::IpNet {
    "10.244.0.0/16".parse().expect("prefix")
}

/// Fill a /16 and release it; returns µs/allocation at 0%, 50%, 99%.
fn fill_slash16(fsync: bool) -> [f64; 3] {
    let dir = tmpdir("cnet-ipam-fill");
    let opts = FileOptions { fsync };
    let store = FileStore::open_with(dir.path(), opts).expect("open store");
    let mut pool = store.pool(PoolConfig::new(subnet())).expect("pool");
    let cap = 65536 - 3; // network, gateway, broadcast
    let marks = [0, cap / 2 - WINDOW / 2, cap * 99 / 100 - WINDOW];
    let mut out = [0.0; 3];
    let total = Instant::now();
    let mut i = 0;
    for (k, &m) in marks.iter().enumerate() {
        while i < m {
            pool.allocate(&format!("c{i}"), "eth0").expect("allocate");
            i += 1;
        }
        let t = Instant::now();
        for _ in 0..WINDOW {
            pool.allocate(&format!("c{i}"), "eth0").expect("allocate");
            i += 1;
        }
        out[k] = us(t.elapsed(), WINDOW);
    }
    while i < cap {
        pool.allocate(&format!("c{i}"), "eth0").expect("allocate");
        i += 1;
    }
    let fill = total.elapsed();
    assert!(pool.allocate("one-too-many", "eth0").is_err(), "pool full");
    let t = Instant::now();
    for i in 0..cap {
        pool.release(&format!("c{i}"), "eth0").expect("release");
    }
    let rel = t.elapsed();
    println!(
        "file store, /16 pool, fsync {}: filled {cap} addresses in {:.1} s, released in {:.1} s ({:.1} µs/release)",
        if fsync { "on" } else { "off" },
        fill.as_secs_f64(),
        rel.as_secs_f64(),
        us(rel, cap)
    );
    out
}

/// A fresh process's cost: open the store, allocate one address; median of 5.
fn one_shot(existing: u32) -> f64 {
    let dir = tmpdir("cnet-ipam-oneshot");
    {
        let store = FileStore::open(dir.path()).expect("open store");
        let mut pool = store.pool(PoolConfig::new(subnet())).expect("pool");
        for i in 0..existing {
            pool.allocate(&format!("c{i}"), "eth0").expect("allocate");
        }
    }
    let mut times: Vec<f64> = (0..5)
        .map(|k| {
            let t = Instant::now();
            let store = FileStore::open(dir.path()).expect("open store");
            let mut pool = store.pool(PoolConfig::new(subnet())).expect("pool");
            pool.allocate(&format!("new{k}"), "eth0").expect("allocate");
            us(t.elapsed(), 1)
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[2]
}

fn host_local_binary() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("CNI_PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/lib/cni", "/opt/cni/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("host-local"))
        .find(|p| p.is_file())
}

/// One host-local ADD with `existing` addresses already reserved in its
/// data dir (written as host-local writes them); median of 5, µs.
fn host_local_add(bin: &Path, existing: u32) -> Option<f64> {
    let dir = tmpdir("cnet-hostlocal");
    let net_dir = dir.path().join("cnetbench");
    std::fs::create_dir_all(&net_dir).ok()?;
    let base = u32::from(Ipv4Addr::new(10, 244, 0, 2));
    for i in 0..existing {
        let ip = Ipv4Addr::from(base + i);
        std::fs::write(net_dir.join(ip.to_string()), format!("c{i}\r\neth0")).ok()?;
    }
    if existing > 0 {
        let last = Ipv4Addr::from(base + existing - 1);
        std::fs::write(net_dir.join("last_reserved_ip.0"), last.to_string()).ok()?;
    }
    let conf = format!(
        r#"{{"cniVersion":"0.4.0","name":"cnetbench","ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.244.0.0/16"}}]],"dataDir":"{}"}}}}"#,
        dir.path().display()
    );
    let cni_path = bin.parent()?.display().to_string();
    let mut times = Vec::new();
    for k in 0..5 {
        let t = Instant::now();
        let mut child = Command::new(bin)
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", format!("new{k}"))
            .env("CNI_NETNS", "/var/run/netns/cnet-bench-unused")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(conf.as_bytes()).ok()?;
        let out = child.wait_with_output().ok()?;
        times.push(us(t.elapsed(), 1));
        let text = String::from_utf8_lossy(&out.stdout);
        let want = Ipv4Addr::from(base + existing + k).to_string();
        if !out.status.success() || !text.contains(&want) {
            eprintln!(
                "host-local ADD did not return {want}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
    }
    times.sort_by(f64::total_cmp);
    Some(times[2])
}

fn main() {
    println!("== cnet IPAM benchmark ==");
    let mut p99s = Vec::new();
    for fsync in [false, true] {
        let [p0, p50, p99] = fill_slash16(fsync);
        if fsync {
            println!("allocation cost, file store, fsync on (a header, a bucket and a slot written + fdatasync: mostly the disk):");
        } else {
            println!("allocation cost, file store, fsync off (the store's own work: bitmap, record, write):");
        }
        println!("  at  0% full: {p0:8.1} µs/allocation");
        println!(
            "  at 50% full: {p50:8.1} µs/allocation  ({:.2}x the 0% cost)",
            p50 / p0
        );
        println!(
            "  at 99% full: {p99:8.1} µs/allocation  ({:.2}x the 0% cost)",
            p99 / p0
        );
        p99s.push(p99);
    }
    let p99 = p99s[1];

    let levels = [1000u32, 5000];
    let ours: Vec<f64> = levels.iter().map(|&n| one_shot(n)).collect();
    println!("one-shot process cost, file store (open + allocate once, nothing loaded):");
    for (n, t) in levels.iter().zip(&ours) {
        println!("  {n:5} existing: {t:8.1} µs");
    }

    let Some(bin) = host_local_binary() else {
        println!(
            "host-local: SKIPPED, plugin not found (apt-get install containernetworking-plugins; \
             looked in CNI_PATH, /usr/lib/cni, /opt/cni/bin)"
        );
        return;
    };
    println!(
        "CNI host-local ({}), one ADD (process spawn included):",
        bin.display()
    );
    for (n, mine) in levels.iter().zip(&ours) {
        let Some(hl) = host_local_add(&bin, *n) else {
            println!("  {n:5} existing: host-local failed, see above");
            continue;
        };
        println!(
            "  {n:5} existing: {hl:8.1} µs  = {:.1}x our long-lived allocation at 99% ({p99:.1} µs), \
             {:.1}x our one-shot process ({mine:.1} µs)",
            hl / p99,
            hl / mine
        );
    }
    if let Some(hl0) = host_local_add(&bin, 0) {
        println!("      0 existing: {hl0:8.1} µs  (host-local's fixed cost: process start, config parse)");
    }
}
