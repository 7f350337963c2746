//! A CNI ADD and DEL as a runtime calls them (a new process each time:
//! exec, environment, configuration on stdin), the `cnet` plugin
//! (examples/cni-plugin, Go over libcnet) against the official `bridge` +
//! `host-local` (/usr/lib/cni), with 10 and with 1,000 existing
//! allocations in the pool (cnet's file store, host-local's data
//! directory, filled before the runs); then `podman run -d` until the
//! container runs, on a cnet network and on a bridge network. One run, on
//! fresh namespaces (removed at the end), as root; prints p50/p99 and the
//! ratios, and last `cni ADD p50: cnet X ms, bridge+host-local Y ms,
//! ratio Z×`. A benchmark, never a test: nothing here asserts a time.
//!
//! Both stores live on one tmpfs (/dev/shm here; the plugin's default is
//! /run/cni/cnet, a tmpfs on real hosts, because container addresses do not
//! outlive a reboot): the two plugins are compared on the same file
//! system. One more line gives cnet with its store on disk (a directory in
//! /tmp), where every allocation waits for its `fdatasync`; host-local
//! never syncs. Plugins are exec'd as a runtime does it, from the host's
//! namespace (entered between fork and exec), not through `nsenter`.

#[path = "../tests/cni/mod.rs"]
mod cni;

use std::path::Path;
use std::time::{Duration, Instant};

use cnet_core::ipam::{FileStore, PoolConfig, PoolStore};
use cnet_test_support::Namespaces;
use serde_json::{json, Value};

const SAMPLES: usize = 40;
const SUBNET: &str = "10.244.0.0/16";

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

/// (ADD times, DEL times) of `SAMPLES` containers, each in a namespace of
/// its own made (untimed) before its ADD.
fn measure(
    set: &mut Namespaces,
    tag: &str,
    exe: &Path,
    conf: &Value,
) -> (Vec<Duration>, Vec<Duration>) {
    let host = set.ns("host");
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for i in 0..SAMPLES {
        let role = format!("{tag}{i}");
        set.add(&role);
        let netns = format!("/run/netns/{}", set.ns(&role));
        let id = format!("bench-{tag}-{i}");
        let env = |cmd| {
            vec![
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", id.clone()),
                ("CNI_NETNS", netns.clone()),
                ("CNI_IFNAME", "eth0".into()),
            ]
        };
        let run = |cmd: &str| {
            let e = env(cmd.to_string());
            let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let t = Instant::now();
            let r = cni::exec_plugin(exe, &host, &e, &conf.to_string());
            let dt = t.elapsed();
            assert!(r.ok, "{tag} {cmd}: {} {}", r.out, r.stderr);
            dt
        };
        adds.push(run("ADD"));
        dels.push(run("DEL"));
    }
    (adds, dels)
}

fn cnet_conf(store: &Path, bridge: &str) -> Value {
    json!({ "cniVersion": "1.0.0", "name": "bench-cnet", "type": "cnet", "bridge": bridge,
            "subnet": SUBNET, "store": { "dir": store } })
}

fn bridge_conf(data: &Path, bridge: &str) -> Value {
    json!({ "cniVersion": "1.0.0", "name": "bench-bridge", "type": "bridge", "bridge": bridge,
            "isGateway": true, "ipMasq": false,
            "ipam": { "type": "host-local", "ranges": [[{ "subnet": SUBNET }]],
                      "routes": [{ "dst": "0.0.0.0/0" }], "dataDir": data } })
}

/// `n` existing allocations in both stores (the "existing containers").
fn prefill(store: &Path, data: &Path, n: usize) {
    let mut pool = FileStore::open(store)
        .unwrap()
        .pool(PoolConfig::new(SUBNET.parse().unwrap()))
        .unwrap();
    let dir = data.join("bench-bridge");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        let a = pool.allocate(&format!("existing-{i}"), "eth0").unwrap();
        // host-local's own layout: one file per address, "ID\r\nIFNAME".
        let ip = cnet_core::ipnet::Ipv4Net::new(
            std::net::Ipv4Addr::new(10, 244, 100 + (i / 250) as u8, (i % 250) as u8 + 2),
            16,
        )
        .unwrap();
        std::fs::write(
            dir.join(ip.addr().to_string()),
            format!("existing-{i}\r\neth0"),
        )
        .unwrap();
        let _ = a;
    }
}

/// A temporary directory on tmpfs when there is one (`/dev/shm`).
fn tmpfs_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn podman_runs(set: &Namespaces, exe: &Path) -> (f64, f64) {
    let store = tmpfs_dir();
    let podman = cni::podman::Podman::new(&set.ns("host"), "bench", exe);
    let mut entry = cnet_conf(store.path(), "cnetp0");
    entry.as_object_mut().unwrap().remove("cniVersion");
    entry.as_object_mut().unwrap().remove("name");
    podman.conflist("bench-cnet", vec![entry]);
    let mut b = bridge_conf(&podman.path().join("host-local"), "cnip0");
    b.as_object_mut().unwrap().remove("cniVersion");
    b.as_object_mut().unwrap().remove("name");
    b["ipam"]["ranges"] = json!([[{ "subnet": "10.245.0.0/16" }]]);
    podman.conflist("bench-bridge", vec![b]);
    let mut p50 = Vec::new();
    for net in ["bench-cnet", "bench-bridge"] {
        let mut t = Vec::new();
        for i in 0..8 {
            let name = format!("{net}-{i}");
            let s = Instant::now();
            podman.run(&name, net, &[], &["sleep", "1000"]);
            t.push(s.elapsed());
            podman.ok(&["rm", "-f", "-t", "0", &name]);
        }
        p50.push(pct(&mut t, 0.5));
    }
    (p50[0], p50[1])
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("cni bench: needs root (it makes namespaces); skipped");
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let official = Path::new(cni::CNI_PATH).join("bridge");
    if !official.exists() {
        eprintln!(
            "cni bench: {} is missing (containernetworking-plugins); skipped",
            official.display()
        );
        return;
    }
    let exe = cni::plugin();
    // The official plugins find host-local through CNI_PATH (set by exec_plugin).
    let mut add_p50 = Vec::new();
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9}",
        "", "ADD p50", "ADD p99", "DEL p50", "DEL p99"
    );
    // CNET_BENCH_EXISTING="10,1000,5000" adds sizes (10 and 1000 always).
    let mut sizes = vec![10usize, 1000];
    if let Ok(v) = std::env::var("CNET_BENCH_EXISTING") {
        sizes.extend(v.split(',').filter_map(|x| x.trim().parse::<usize>().ok()));
        sizes.sort();
        sizes.dedup();
    }
    for &existing in &sizes {
        let mut set = Namespaces::new("bcn", &["host"]);
        let store = tmpfs_dir();
        let data = tmpfs_dir();
        prefill(store.path(), data.path(), existing);
        let runs = [
            ("cnet", exe.to_path_buf(), cnet_conf(store.path(), "cnb0")),
            (
                "bridge+host-local",
                official.clone(),
                bridge_conf(data.path(), "cni0"),
            ),
        ];
        for (label, bin, conf) in runs {
            let tag = if label == "cnet" { "c" } else { "b" };
            let (mut a, mut d) = measure(&mut set, tag, &bin, &conf);
            let (a50, a99, d50, d99) = (
                pct(&mut a, 0.5),
                pct(&mut a, 0.99),
                pct(&mut d, 0.5),
                pct(&mut d, 0.99),
            );
            println!(
                "{:<34} {a50:>7.2}ms {a99:>7.2}ms {d50:>7.2}ms {d99:>7.2}ms",
                format!("{label}, {existing} existing")
            );
            add_p50.push(((label, existing), a50));
        }
    }
    {
        // cnet with its store on disk: every ADD waits for its fdatasync.
        let mut set = Namespaces::new("bcd", &["host"]);
        let store = tempfile::tempdir().unwrap();
        let (mut a, mut d) = measure(&mut set, "d", exe, &cnet_conf(store.path(), "cnb0"));
        println!(
            "{:<34} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2}ms",
            "cnet, 0 existing, store on disk",
            pct(&mut a, 0.5),
            pct(&mut a, 0.99),
            pct(&mut d, 0.5),
            pct(&mut d, 0.99)
        );
    }
    let get = |l: &str, n: usize| add_p50.iter().find(|(k, _)| *k == (l, n)).unwrap().1;
    // The floor of any call: exec of the plugin (the Go runtime, the
    // loader, libcnet's static initialisers) answering VERSION.
    let set = Namespaces::new("bcv", &["host"]);
    let mut v: Vec<Duration> = (0..SAMPLES)
        .map(|_| {
            let t = Instant::now();
            let r = cni::exec_plugin(exe, &set.ns("host"), &[("CNI_COMMAND", "VERSION")], "{}");
            assert!(r.ok);
            t.elapsed()
        })
        .collect();
    println!("cnet VERSION (exec floor) p50: {:.2} ms", pct(&mut v, 0.5));
    drop(set);
    for &n in &sizes {
        println!(
            "ADD p50 ratio at {n} existing: bridge+host-local / cnet = {:.2}×",
            get("bridge+host-local", n) / get("cnet", n)
        );
    }
    for &n in sizes.iter().filter(|&&n| n > 10) {
        let r = get("cnet", n) / get("cnet", 10);
        println!("cnet ADD p50 at {n} / at 10 existing: {r:.2}×");
    }
    if cni::podman::available() {
        let set = Namespaces::new("bpm", &["host"]);
        let (c, b) = podman_runs(&set, exe);
        println!(
            "podman run -d to running, p50 of 8: cnet {c:.1} ms, bridge {b:.1} ms, ratio {:.2}×",
            b / c
        );
    }
    let (c, b) = (get("cnet", 10), get("bridge+host-local", 10));
    println!(
        "cni ADD p50: cnet {c:.2} ms, bridge+host-local {b:.2} ms, ratio {:.2}×",
        b / c
    );
}
