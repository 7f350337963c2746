//! The IPAM file store: persistence, leases, corruption, many processes at
//! once, and SIGKILL at random points.
//!
//! The multi-process tests re-run this test binary as children: the ignored
//! test `ipam_file_child` does the child's work when `CNET_IPAM_CHILD` is set.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cnet_core::ipam::{
    FilePool, FileStore, LeaseStore, NodeAttrs, PoolConfig, PoolStore, SubnetConfig,
};
use cnet_core::Error;

fn pool_cfg(s: &str) -> PoolConfig {
    PoolConfig::new(s.parse().unwrap())
}

fn open_pool(dir: &Path, subnet: &str) -> FilePool {
    FileStore::open(dir)
        .unwrap()
        .pool(pool_cfg(subnet))
        .unwrap()
}

#[test]
fn ipam_file_pool_persists_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = open_pool(tmp.path(), "10.244.1.0/24");
    let a = p.allocate("c1", "eth0").unwrap();
    assert_eq!(a.addr, "10.244.1.2".parse::<IpAddr>().unwrap());
    let b = p.allocate("c2", "eth0").unwrap();
    drop(p);

    let mut p = open_pool(tmp.path(), "10.244.1.0/24");
    assert_eq!(
        p.allocate("c1", "eth0").unwrap(),
        a,
        "idempotent across processes"
    );
    assert_eq!(p.list().unwrap(), vec![a.clone(), b.clone()]);
    assert_eq!(p.release("c1", "eth0").unwrap(), Some(a.clone()));
    assert_eq!(
        p.release("c1", "eth0").unwrap(),
        None,
        "second release is a no-op"
    );
    // The cursor survives: the next address is .4, not the just-released .2.
    let c = p.allocate("c3", "eth0").unwrap();
    assert_eq!(c.addr, "10.244.1.4".parse::<IpAddr>().unwrap());
    assert!(c.generation > b.generation);
}

#[test]
fn ipam_file_pool_two_handles_see_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p1 = open_pool(tmp.path(), "10.244.1.0/24");
    let mut p2 = open_pool(tmp.path(), "10.244.1.0/24");
    let mut seen = HashSet::new();
    for i in 0..50 {
        let (p, q) = if i % 2 == 0 {
            (&mut p1, &mut p2)
        } else {
            (&mut p2, &mut p1)
        };
        let a = p.allocate(&format!("c{i}"), "eth0").unwrap();
        assert!(seen.insert(a.addr), "duplicate {}", a.addr);
        // The other handle sees it at once, and
        // says it did not make it.
        assert_eq!(q.allocate(&format!("c{i}"), "eth0").unwrap(), a);
        assert_eq!(
            q.allocate_tracked(&format!("c{i}"), "eth0").unwrap(),
            (a, false)
        );
    }
    let (made, new) = p1.allocate_tracked("fresh", "eth0").unwrap();
    assert!(new && seen.insert(made.addr), "{made:?}");
    assert_eq!(p1.list().unwrap().len(), 51);
}

#[test]
fn ipam_file_pool_late_release_and_gc() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = open_pool(tmp.path(), "10.244.1.0/30"); // only .2 usable
    let old = p.allocate("c1", "eth0").unwrap();
    p.release("c1", "eth0").unwrap();
    let new = p.allocate("c2", "eth0").unwrap();
    assert_eq!(old.addr, new.addr);
    assert!(matches!(
        p.release_generation(old.addr, old.generation),
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        p.allocate("c3", "eth0"),
        Err(Error::Exhausted { .. })
    ));
    let gone = p.gc(&HashSet::new()).unwrap();
    assert_eq!(gone, vec![new]);
    assert!(p.list().unwrap().is_empty());
}

/// A small pool (64 addresses, 128 index buckets: clusters, wrap-around
/// and removals that shift) driven by random operations, compared after
/// each one with the in-memory `AddressPool`, the model: the same
/// addresses, generations and errors; reopened now and then.
#[test]
fn ipam_file_pool_matches_the_in_memory_model_over_random_operations() {
    use cnet_core::ipam::AddressPool;
    let tmp = tempfile::tempdir().unwrap();
    let subnet = "10.244.1.0/26";
    let mut model = AddressPool::new(pool_cfg(subnet)).unwrap();
    let mut p = open_pool(tmp.path(), subnet);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let kind = |e: &Error| std::mem::discriminant(e);
    for step in 0..4000 {
        let who = format!("c{}", rng.next() % 90);
        let ifname = if rng.next() % 5 == 0 { "eth1" } else { "eth0" };
        match rng.next() % 10 {
            0..=3 => match (model.allocate(&who, ifname), p.allocate(&who, ifname)) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "step {step}"),
                (Err(a), Err(b)) => assert_eq!(kind(&a), kind(&b), "step {step}: {a} / {b}"),
                (a, b) => panic!("step {step}: model {a:?}, file {b:?}"),
            },
            4..=6 => assert_eq!(
                model.release(&who, ifname),
                p.release(&who, ifname).unwrap(),
                "step {step}"
            ),
            7 => {
                let addr: IpAddr = format!("10.244.1.{}", rng.next() % 64).parse().unwrap();
                match (
                    model.allocate_addr(&who, ifname, addr),
                    p.allocate_addr(&who, ifname, addr),
                ) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "step {step}"),
                    (Err(a), Err(b)) => assert_eq!(kind(&a), kind(&b), "step {step}: {a} / {b}"),
                    (a, b) => panic!("step {step}: model {a:?}, file {b:?}"),
                }
            }
            8 => {
                let all = model.list();
                if let Some(a) = all.get(rng.next() as usize % all.len().max(1)) {
                    let gen = if rng.next() % 2 == 0 {
                        a.generation
                    } else {
                        a.generation + 1
                    };
                    let (m, f) = (
                        model.release_generation(a.addr, gen),
                        p.release_generation(a.addr, gen),
                    );
                    match (m, f) {
                        (Ok(m), Ok(f)) => assert_eq!(m, f, "step {step}"),
                        (Err(m), Err(f)) => assert_eq!(kind(&m), kind(&f)),
                        (m, f) => panic!("step {step}: model {m:?}, file {f:?}"),
                    }
                }
            }
            _ => {
                if rng.next() % 4 == 0 {
                    let alive: HashSet<String> = (0..90)
                        .filter(|i| i % 3 != 0)
                        .map(|i| format!("c{i}"))
                        .collect();
                    assert_eq!(model.gc(&alive), p.gc(&alive).unwrap(), "step {step}");
                } else {
                    p = open_pool(tmp.path(), subnet);
                }
            }
        }
        assert_eq!(model.list(), p.list().unwrap(), "step {step}");
    }
}

/// Bytes this process has read through system calls (`rchar` of
/// /proc/self/io).
fn rchar() -> u64 {
    let io = fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// What a CNI plugin call does, in a process of its own: open the store
/// and the pool, allocate, release; the bytes it read, for a pool holding
/// 10 and one holding 5,000 allocations. The same few pages either way
/// (the earlier journal store read the whole pool: ~0.5 MB at 5,000).
#[test]
fn ipam_file_pool_a_fresh_process_reads_the_same_few_pages_with_10_or_5000_allocations() {
    let tmp = tempfile::tempdir().unwrap();
    let subnet = "10.244.0.0/16";
    let mut read = Vec::new();
    for n in [10usize, 5000] {
        let dir = tmp.path().join(format!("s{n}"));
        let mut p = open_pool(&dir, subnet);
        for i in 0..n {
            p.allocate(&format!("existing-{i}"), "eth0").unwrap();
        }
        drop(p);
        let out = tmp.path().join(format!("read{n}"));
        let st = spawn_child(
            "one-shot",
            &[
                ("CNET_DIR", dir.display().to_string()),
                ("CNET_SUBNET", subnet.into()),
                ("CNET_ACK", out.display().to_string()),
                ("CNET_TAG", "x".into()),
                ("CNET_COUNT", "1".into()),
            ],
        )
        .wait()
        .unwrap();
        assert!(st.success());
        read.push(
            fs::read_to_string(&out)
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap(),
        );
    }
    println!(
        "one-shot open + allocate + release read {} B at 10, {} B at 5000",
        read[0], read[1]
    );
    assert_eq!(read[0], read[1], "the same reads whatever the pool holds");
    assert!(
        read[1] < 64 * 1024,
        "a few pages, not the pool: {} B",
        read[1]
    );
}

#[test]
fn ipam_file_pool_damage_is_corrupt_names_the_address_and_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = open_pool(tmp.path(), "10.244.1.0/24");
    for i in 0..4 {
        p.allocate(&format!("c{i}"), "eth0").unwrap();
    }
    drop(p);
    let path = tmp.path().join("pools/10.244.1.0_24/table");
    let good = fs::read(&path).unwrap();
    let slots_at = good.len() - 256 * 256; // 256 addresses, 256 B each, at the end
    let check = |data: &[u8], want: &str| {
        fs::write(&path, data).unwrap();
        let e = FileStore::open(tmp.path())
            .unwrap()
            .pool(pool_cfg("10.244.1.0/24"))
            .and_then(|mut p| {
                p.list()?;
                // Asking again for what is held only reads (every bucket
                // of the owners' probe sequences).
                for i in 0..4 {
                    p.allocate(&format!("c{i}"), "eth0")?;
                }
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(want), "{want:?} not in: {e}");
        assert_eq!(fs::read(&path).unwrap(), data, "left alone");
    };
    // The slot of 10.244.1.3 (index 3), one bit flipped.
    let mut slot = good.clone();
    slot[slots_at + 3 * 256 + 40] ^= 0x10;
    check(&slot, "the slot of 10.244.1.3 (index 3) is damaged");
    // Both header copies damaged.
    let mut headers = good.clone();
    headers[30] ^= 1;
    headers[4096 + 30] ^= 1;
    check(&headers, "both header copies are bad");
    // Cut short.
    check(&good[..good.len() - 100], "shorter than its layout");
    // An index bucket pointing past the last slot.
    let mut bucket = good.clone();
    let used = (8192..16384)
        .step_by(16)
        .find(|&at| good[at..at + 16] != [0; 16])
        .unwrap();
    bucket[used..used + 4].copy_from_slice(&10_000u32.to_le_bytes());
    check(&bucket, "points past the last slot");

    // One header copy torn (a power loss while it was written): the other
    // copy is used and nothing is lost.
    let mut torn = good.clone();
    for b in &mut torn[100..600] {
        *b = 0xff;
    }
    fs::write(&path, &torn).unwrap();
    let mut p = open_pool(tmp.path(), "10.244.1.0/24");
    assert_eq!(p.list().unwrap().len(), 4);
    let a = p.allocate("c9", "eth0").unwrap();
    assert_eq!(a.addr, "10.244.1.6".parse::<IpAddr>().unwrap());
}

#[test]
fn ipam_file_pool_refuses_what_a_slot_cannot_hold_and_the_earlier_format() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = open_pool(tmp.path(), "10.244.1.0/24");
    let long = "c".repeat(225);
    let e = p.allocate(&long, "eth0").unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(e.to_string().contains("at most 224 bytes"), "{e}");
    assert!(p.allocate(&"c".repeat(224), "eth0").is_ok());
    assert!(matches!(
        p.allocate("c", "a-very-long-ifname"),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(p.release(&long, "eth0").unwrap(), None);

    // A pool directory of the snapshot + journal format: refused, untouched.
    let dir = tmp.path().join("pools/10.244.2.0_24");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("snapshot"), b"cnet-ipam pool v2 crc32=0 len=0\n").unwrap();
    let e = FileStore::open(tmp.path())
        .unwrap()
        .pool(pool_cfg("10.244.2.0/24"))
        .unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("format of an earlier cnet"), "{e}");
    assert!(!dir.join("table").exists());
}

/// A holder keeps the pool open while the pool directory is removed and a
/// fresh process makes the pool again: the holder sees the new pool (it
/// reopens the file), so no address goes to two holders.
#[test]
fn ipam_file_pool_holder_notices_the_pool_file_removed_and_made_again() {
    let tmp = tempfile::tempdir().unwrap();
    let mut holder = open_pool(tmp.path(), "10.244.1.0/24");
    holder.allocate("h0", "eth0").unwrap();
    let dir = tmp.path().join("pools/10.244.1.0_24");
    fs::remove_file(dir.join("table")).unwrap();
    let mut fresh = open_pool(tmp.path(), "10.244.1.0/24");
    let x1 = fresh.allocate("x1", "eth0").unwrap();
    let h1 = holder.allocate("h1", "eth0").unwrap();
    assert_ne!(h1.addr, x1.addr, "one address handed to two holders");
    assert_eq!(holder.list().unwrap(), fresh.list().unwrap());
}

#[test]
fn ipam_file_store_refuses_empty_path_zero_ttl_and_names_config_differences() {
    assert!(matches!(
        FileStore::open(""),
        Err(Error::InvalidArgument { .. })
    ));
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path()).unwrap();
    let mut l = store
        .subnets(SubnetConfig::new("10.244.0.0/16".parse().unwrap()))
        .unwrap();
    let e = l
        .acquire("n1", &NodeAttrs::default(), Duration::ZERO)
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(l.get("n1").unwrap().is_none(), "nothing leased");

    store.pool(pool_cfg("10.244.1.0/24")).unwrap();
    let e = store
        .pool(pool_cfg("10.244.1.0/24").with_gateway(Some("10.244.1.254".parse().unwrap())))
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Conflict { .. }), "{msg}");
    assert!(
        msg.contains("gateway: the store has \"10.244.1.1\", asked for \"10.244.1.254\""),
        "{msg}"
    );
    assert!(!msg.contains("PoolConfig {"), "no debug dump: {msg}");
}

#[test]
fn ipam_file_store_foreign_files_are_corrupt_not_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path()).unwrap();
    let dir = tmp.path().join("pools/10.244.1.0_24");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("table"), b"{\"hello\": \"world\"}\n").unwrap();
    let e = store.pool(pool_cfg("10.244.1.0/24")).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("not a cnet-ipam pool file"), "{e}");
    assert_eq!(
        fs::read(dir.join("table")).unwrap(),
        b"{\"hello\": \"world\"}\n"
    );

    let cfg = SubnetConfig::new("10.244.0.0/16".parse().unwrap());
    store.subnets(cfg.clone()).unwrap();
    let lf = tmp.path().join("networks/10.244.0.0_16/leases");
    let mut data = fs::read(&lf).unwrap();
    let n = data.len() - 3;
    data[n] ^= 0x01;
    fs::write(&lf, &data).unwrap();
    let e = store.subnets(cfg).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}

#[test]
fn ipam_file_store_refuses_overlaps_and_changed_config() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path()).unwrap();
    store.pool(pool_cfg("10.244.1.0/24")).unwrap();
    let e = store.pool(pool_cfg("10.244.0.0/16")).unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    let changed = pool_cfg("10.244.1.0/24").with_gateway(None);
    let e = store.pool(changed).unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");

    store
        .subnets(SubnetConfig::new("10.244.0.0/16".parse().unwrap()))
        .unwrap();
    let e = store
        .subnets(SubnetConfig::new("10.0.0.0/8".parse().unwrap()))
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    let e = store
        .subnets(SubnetConfig::new("10.244.0.0/16".parse().unwrap()).with_subnet_len(25))
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
}

#[test]
fn ipam_file_leases_lifecycle() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path()).unwrap();
    let cfg = SubnetConfig::new("10.244.0.0/16".parse().unwrap());
    let mut l = store.subnets(cfg).unwrap();
    let attrs = NodeAttrs {
        underlay_ip: Some("192.0.2.1".parse().unwrap()),
        backend: Some("vxlan".into()),
        vtep_mac: Some("02:00:00:00:00:01".parse().unwrap()),
        ..Default::default()
    };
    let day = Duration::from_secs(86400);
    let a = l.acquire("node-a", &attrs, day).unwrap();
    assert_eq!(a.subnet, "10.244.1.0/24".parse().unwrap());
    let b = l.acquire("node-b", &NodeAttrs::default(), day).unwrap();
    assert_eq!(b.subnet, "10.244.2.0/24".parse().unwrap());
    assert_eq!(l.acquire("node-a", &attrs, day).unwrap().subnet, a.subnet);
    let r = l
        .reserve(
            "node-r",
            "10.244.9.0/24".parse().unwrap(),
            &NodeAttrs::default(),
        )
        .unwrap();
    assert!(r.is_reservation());

    // Expiry: a short lease runs out, its subnet is free, but the node gets
    // it back when it comes again (unless someone took it meanwhile).
    l.renew("node-b", Duration::from_millis(1)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(l.get("node-b").unwrap().is_none());
    assert!(matches!(
        l.renew("node-b", day),
        Err(Error::NotFound { .. })
    ));
    let peers: Vec<String> = l.list().unwrap().into_iter().map(|l| l.node).collect();
    assert_eq!(peers, ["node-a", "node-r"]);
    assert_eq!(
        l.acquire("node-b", &NodeAttrs::default(), day)
            .unwrap()
            .subnet,
        b.subnet
    );
    l.release("node-b").unwrap();
    l.release("node-b").unwrap();
    let c = l.acquire("node-c", &NodeAttrs::default(), day).unwrap();
    assert_eq!(c.subnet, b.subnet, "lowest free subnet");

    // A reservation of a held subnet conflicts.
    assert!(matches!(
        l.reserve("node-x", a.subnet, &NodeAttrs::default()),
        Err(Error::Conflict { .. })
    ));
    // The attributes survive a reopen.
    let mut l2 = store
        .subnets(SubnetConfig::new("10.244.0.0/16".parse().unwrap()))
        .unwrap();
    assert_eq!(l2.get("node-a").unwrap().unwrap().attrs, attrs);
}

#[test]
fn ipam_file_leases_exhaustion_is_typed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path()).unwrap();
    let cfg = SubnetConfig::new("10.244.0.0/22".parse().unwrap());
    let mut l = store.subnets(cfg).unwrap();
    let day = Duration::from_secs(86400);
    for n in ["a", "b", "c"] {
        l.acquire(n, &NodeAttrs::default(), day).unwrap();
    }
    let e = l.acquire("d", &NodeAttrs::default(), day).unwrap_err();
    assert!(matches!(e, Error::Exhausted { .. }), "{e}");
}

// ---------------------------------------------------------------------------
// Child processes

const CHILD_ENV: &str = "CNET_IPAM_CHILD";

fn spawn_child(mode: &str, envs: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "ipam_file_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, mode)
    .stdout(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("child needs {k}"))
}

/// The child side of the multi-process tests (run only as a child).
#[test]
#[ignore = "run by the multi-process tests as a child process"]
fn ipam_file_child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(env("CNET_DIR"));
    if mode == "one-shot" {
        // A CNI plugin's call: open, allocate, release; report the bytes read.
        let before = rchar();
        let mut pool = open_pool(&dir, &env("CNET_SUBNET"));
        pool.allocate("one-shot", "eth0").unwrap();
        pool.release("one-shot", "eth0").unwrap();
        let read = rchar() - before;
        fs::write(env("CNET_ACK"), read.to_string()).unwrap();
        return;
    }
    let mut pool = open_pool(&dir, &env("CNET_SUBNET"));
    let mut ack = OpenOptions::new()
        .create(true)
        .append(true)
        .open(env("CNET_ACK"))
        .unwrap();
    let tag = env("CNET_TAG");
    let count: usize = env("CNET_COUNT").parse().unwrap();
    for i in 0..count {
        let cid = format!("{tag}-{i}");
        let a = pool.allocate(&cid, "eth0").unwrap();
        // Acknowledged: written (one write call) only after allocate returned.
        ack.write_all(format!("A {cid} {} {}\n", a.addr, a.generation).as_bytes())
            .unwrap();
        if mode == "churn" {
            // Allocate and release at once: every step of both, over and
            // over, in a pool that stays small.
            ack.write_all(format!("RS {cid}\n").as_bytes()).unwrap();
            pool.release(&cid, "eth0").unwrap();
            ack.write_all(format!("RD {cid}\n").as_bytes()).unwrap();
        } else if mode == "crash" && i % 3 == 2 {
            let victim = format!("{tag}-{}", i - 1);
            ack.write_all(format!("RS {victim}\n").as_bytes()).unwrap();
            pool.release(&victim, "eth0").unwrap();
            ack.write_all(format!("RD {victim}\n").as_bytes()).unwrap();
        }
    }
}

#[derive(Default)]
struct Acks {
    allocs: HashMap<String, (IpAddr, u64)>,
    release_started: HashSet<String>,
    released: HashSet<String>,
}

fn read_acks(path: &Path) -> Acks {
    let mut acks = Acks::default();
    let text = fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["A", cid, addr, gen] => {
                acks.allocs.insert(
                    cid.to_string(),
                    (addr.parse().unwrap(), gen.parse().unwrap()),
                );
            }
            ["RS", cid] => {
                acks.release_started.insert(cid.to_string());
            }
            ["RD", cid] => {
                acks.released.insert(cid.to_string());
            }
            _ => {} // the last line may be torn by the kill
        }
    }
    acks
}

/// Open the store afresh; check no duplicates and that it agrees with acks.
fn verify(dir: &Path, subnet: &str, acks: &Acks) -> Vec<cnet_core::ipam::Allocation> {
    let mut pool = open_pool(dir, subnet);
    let list = pool.list().unwrap();
    let addrs: HashSet<IpAddr> = list.iter().map(|a| a.addr).collect();
    assert_eq!(addrs.len(), list.len(), "duplicate addresses");
    let owners: HashSet<&str> = list.iter().map(|a| a.container_id.as_str()).collect();
    assert_eq!(owners.len(), list.len(), "an owner holds two addresses");
    let by_cid: HashMap<&str, &cnet_core::ipam::Allocation> =
        list.iter().map(|a| (a.container_id.as_str(), a)).collect();
    for (cid, (addr, gen)) in &acks.allocs {
        let got = by_cid.get(cid.as_str());
        if acks.released.contains(cid) {
            assert!(got.is_none(), "{cid} was released but is still there");
        } else if !acks.release_started.contains(cid) {
            let got = got.unwrap_or_else(|| panic!("acknowledged {cid} {addr} was lost"));
            assert_eq!((got.addr, got.generation), (*addr, *gen), "{cid} changed");
        }
    }
    list
}

#[test]
fn ipam_file_pool_eight_processes_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let subnet = "10.244.0.0/20";
    let per_child = 150;
    let children: Vec<(Child, PathBuf)> = (0..8)
        .map(|k| {
            let ack = tmp.path().join(format!("ack{k}"));
            let c = spawn_child(
                "concurrent",
                &[
                    ("CNET_DIR", dir.display().to_string()),
                    ("CNET_SUBNET", subnet.into()),
                    ("CNET_COMPACT", "64".into()),
                    ("CNET_ACK", ack.display().to_string()),
                    ("CNET_TAG", format!("p{k}")),
                    ("CNET_COUNT", per_child.to_string()),
                ],
            );
            (c, ack)
        })
        .collect();
    let mut all = Acks::default();
    for (mut c, ack) in children {
        assert!(c.wait().unwrap().success(), "a child failed");
        all.allocs.extend(read_acks(&ack).allocs);
    }
    assert_eq!(all.allocs.len(), 8 * per_child);
    let ack_addrs: HashSet<IpAddr> = all.allocs.values().map(|(a, _)| *a).collect();
    assert_eq!(
        ack_addrs.len(),
        8 * per_child,
        "two processes got one address"
    );
    let list = verify(&dir, subnet, &all);
    assert_eq!(list.len(), 8 * per_child, "nothing lost, nothing extra");
}

/// A small xorshift: random kill points without a rand dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn ipam_file_pool_survives_sigkill_200_times() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let ack = tmp.path().join("ack");
    let subnet = "10.244.0.0/16";
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut killed_mid_run = 0;
    let mut acked = 0;
    for run in 0..200 {
        let mut child = spawn_child(
            "crash",
            &[
                ("CNET_DIR", dir.display().to_string()),
                ("CNET_SUBNET", subnet.into()),
                ("CNET_COMPACT", "16".into()),
                ("CNET_ACK", ack.display().to_string()),
                ("CNET_TAG", format!("r{run}")),
                ("CNET_COUNT", "100000".into()),
            ],
        );
        // The kill lands at a random moment after the child has started
        // working (its first acknowledgement since it was spawned), not
        // after a fixed time: on a loaded machine a child may need far
        // longer than usual to start, and a kill before any work tests
        // nothing.
        let before = fs::metadata(&ack).map(|m| m.len()).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(20);
        while fs::metadata(&ack).map(|m| m.len()).unwrap_or(0) == before
            && Instant::now() < deadline
            && child.try_wait().unwrap().is_none()
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(rng.next() % 25_000));
        child.kill().unwrap(); // SIGKILL
        let st = child.wait().unwrap();
        if st.code().is_none() {
            killed_mid_run += 1;
        }
        let acks = read_acks(&ack);
        let list = verify(&dir, subnet, &acks);
        if run % 10 == 9 {
            acked += acks.allocs.len();
        }
        // Keep the pool small: every 10 runs, release everything and start
        // a new acknowledgement file.
        if run % 10 == 9 {
            let mut pool = open_pool(&dir, subnet);
            let gone = pool.gc(&HashSet::new()).unwrap();
            assert_eq!(gone.len(), list.len());
            fs::remove_file(&ack).ok();
        }
    }
    println!(
        "200 SIGKILLs ({killed_mid_run} mid-run, {acked} acknowledged allocations) in {:?}",
        started.elapsed()
    );
    assert!(
        killed_mid_run > 150,
        "children should be killed while working"
    );
    assert!(
        acked > 400,
        "children should acknowledge allocations before the kill"
    );
}

/// Every step of an allocation and a release at which a process can die,
/// by name (see `failpoint` in the file store's pool).
#[cfg(feature = "failpoints")]
const CRASH_STEPS: &[&str] = &[
    "table-header-written",
    "table-bucket-written",
    "table-slot-written",
    "table-synced",
    "table-slot-released",
    "table-bucket-removed",
];

/// Long-lived holders keep the pool open while a churning process is killed
/// at each step of an allocation and a release (the N-th time it gets there, for
/// several N). After each kill: the holders and a fresh process each
/// allocate, no address has two holders, and nothing acknowledged is lost.
#[cfg(feature = "failpoints")]
#[test]
fn ipam_file_pool_crash_at_every_step_with_long_lived_holders() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let subnet = "10.244.0.0/22";
    let mut holders: Vec<FilePool> = (0..2).map(|_| open_pool(&dir, subnet)).collect();
    let mut rounds = 0;
    let mut killed = 0;
    for step in CRASH_STEPS {
        for nth in [1u32, 2, 5] {
            rounds += 1;
            let ack = tmp.path().join(format!("ack-{step}-{nth}"));
            let mut child = spawn_child(
                "churn",
                &[
                    ("CNET_DIR", dir.display().to_string()),
                    ("CNET_SUBNET", subnet.into()),
                    ("CNET_COMPACT", "8".into()),
                    ("CNET_ACK", ack.display().to_string()),
                    ("CNET_TAG", format!("k{rounds}")),
                    ("CNET_COUNT", "60".into()),
                    ("CNET_IPAM_FAILPOINT", format!("{step}:{nth}")),
                ],
            );
            let st = child.wait().unwrap();
            if st.code().is_none() {
                killed += 1;
            }
            let mut acks = read_acks(&ack);
            let mut own = Acks::default();
            // Each holder, then a fresh process, allocates after the crash.
            let mut got = Vec::new();
            for (k, h) in holders.iter_mut().enumerate() {
                let cid = format!("h{k}-{rounds}");
                let a = h.allocate(&cid, "eth0").unwrap();
                own.allocs.insert(cid, (a.addr, a.generation));
                got.push(a.addr);
            }
            let mut fresh = open_pool(&dir, subnet);
            let cid = format!("x-{rounds}");
            let a = fresh.allocate(&cid, "eth0").unwrap();
            own.allocs.insert(cid, (a.addr, a.generation));
            got.push(a.addr);
            let distinct: HashSet<_> = got.iter().collect();
            assert_eq!(
                distinct.len(),
                got.len(),
                "after a kill at {step}:{nth}: {got:?}"
            );
            acks.allocs.extend(own.allocs);
            let list = verify(&dir, subnet, &acks);
            for h in holders.iter_mut() {
                assert_eq!(
                    h.list().unwrap(),
                    list,
                    "a holder disagrees after {step}:{nth}"
                );
            }
            // Keep the pool small: release everything before the next round.
            assert_eq!(fresh.gc(&HashSet::new()).unwrap().len(), list.len());
        }
    }
    println!("{rounds} rounds, {killed} children killed at their failpoint");
    assert!(
        killed >= rounds * 2 / 3,
        "most children must reach their failpoint"
    );
}

/// The file store's lease watch wakes on every change another handle makes
/// (acquire, release) and when a lease expires, and stays quiet otherwise.
#[test]
fn ipam_file_lease_watch_wakes_on_changes_and_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path()).unwrap();
    let cfg = SubnetConfig::new("10.244.0.0/16".parse().unwrap());
    let mut mine = store.subnets(cfg.clone()).unwrap();
    let mut watch = mine.watch().unwrap();
    assert!(!watch.wait(Duration::from_millis(100)).unwrap(), "quiet");

    let other = std::thread::spawn({
        let store = store.clone();
        let cfg = cfg.clone();
        move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut l = store.subnets(cfg).unwrap();
            l.acquire("node-b", &NodeAttrs::default(), Duration::from_secs(60))
                .unwrap();
        }
    });
    let t = Instant::now();
    assert!(watch.wait(Duration::from_secs(5)).unwrap(), "acquire seen");
    println!("acquire seen after {:?}", t.elapsed());
    other.join().unwrap();
    assert_eq!(mine.list().unwrap().len(), 1);

    store
        .subnets(cfg.clone())
        .unwrap()
        .release("node-b")
        .unwrap();
    assert!(watch.wait(Duration::from_secs(5)).unwrap(), "release seen");
    while watch.wait(Duration::from_millis(50)).unwrap() {}

    // An expiry changes no file; the watch wakes for it all the same.
    mine.acquire("node-c", &NodeAttrs::default(), Duration::from_millis(300))
        .unwrap();
    assert!(watch.wait(Duration::from_secs(5)).unwrap(), "acquire seen");
    // A wake-up may be spurious (the contract allows it); the expiry must
    // come as one of the next few.
    let t = Instant::now();
    for _ in 0..10 {
        assert!(watch.wait(Duration::from_secs(5)).unwrap(), "expiry seen");
        if mine.list().unwrap().is_empty() {
            println!("expiry seen after {:?}", t.elapsed());
            return;
        }
    }
    panic!("the lease did not expire");
}

/// The file store's lease events are the same as etcd's: the set the
/// watch started from, a put per lease taken or changed, none for a
/// renewal (the file is rewritten, but only the expiry changed), a gone
/// per release and per expiry; `due` says when the next expiry is.
#[test]
fn ipam_file_lease_events_one_by_one() {
    use cnet_core::ipam::LeaseEvent;
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path()).unwrap();
    let cfg = SubnetConfig::new("10.244.0.0/16".parse().unwrap());
    let mut other = store.subnets(cfg.clone()).unwrap();
    let ttl = Duration::from_secs(60);
    let a = other.acquire("node-a", &NodeAttrs::default(), ttl).unwrap();
    let mut watch = store.subnets(cfg).unwrap().watch().unwrap();
    let mut next = || watch.next(Duration::from_secs(5)).unwrap();
    assert_eq!(next(), Some(LeaseEvent::All(vec![a.clone()])));

    let b = other.acquire("node-b", &NodeAttrs::default(), ttl).unwrap();
    assert_eq!(next(), Some(LeaseEvent::Put(b.clone())));
    for _ in 0..3 {
        other.renew("node-a", ttl).unwrap();
    }
    assert_eq!(
        watch.next(Duration::from_millis(300)).unwrap(),
        None,
        "renewals are no event"
    );
    let attrs = NodeAttrs {
        underlay_ip: Some("192.0.2.9".parse().unwrap()),
        ..Default::default()
    };
    let b2 = other.claim("node-b", b.subnet, &attrs, ttl).unwrap();
    assert_eq!(
        watch.next(Duration::from_secs(5)).unwrap(),
        Some(LeaseEvent::Put(b2))
    );
    other.release("node-b").unwrap();
    assert_eq!(
        watch.next(Duration::from_secs(5)).unwrap(),
        Some(LeaseEvent::Gone(b.subnet))
    );
    let c = other
        .acquire("node-c", &NodeAttrs::default(), Duration::from_millis(300))
        .unwrap();
    assert_eq!(
        watch.next(Duration::from_secs(5)).unwrap(),
        Some(LeaseEvent::Put(c.clone()))
    );
    assert!(watch.due().is_some(), "the next expiry is due");
    assert_eq!(
        watch.next(Duration::from_secs(5)).unwrap(),
        Some(LeaseEvent::Gone(c.subnet)),
        "an expiry is gone"
    );
}

/// `claim` leases exactly a held subnet (never another node's, never a
/// second one for the node), and the store lists the pools it keeps (what
/// a node agent claims again when its bridge is gone).
#[test]
fn ipam_file_claim_held_subnet_and_pool_subnets() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path()).unwrap();
    let mut l = store
        .subnets(SubnetConfig::new("10.244.0.0/16".parse().unwrap()))
        .unwrap();
    let (attrs, ttl) = (NodeAttrs::default(), Duration::from_secs(60));
    let s7 = "10.244.7.0/24".parse().unwrap();
    assert_eq!(l.claim("a", s7, &attrs, ttl).unwrap().subnet, s7);
    assert_eq!(l.claim("a", s7, &attrs, ttl).unwrap().subnet, s7);
    let e = l.claim("b", s7, &attrs, ttl).unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert!(e.to_string().contains("leased to node a"), "{e}");
    let e = l
        .claim("a", "10.244.8.0/24".parse().unwrap(), &attrs, ttl)
        .unwrap_err();
    assert!(e.to_string().contains("holds 10.244.7.0/24"), "{e}");
    assert_eq!(l.list().unwrap().len(), 1, "nothing else leased");

    assert!(store.pool_subnets().unwrap().is_empty());
    store.pool(pool_cfg("10.244.7.0/24")).unwrap();
    store.pool(pool_cfg("10.244.2.0/24")).unwrap();
    let pools: Vec<String> = store
        .pool_subnets()
        .unwrap()
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(pools, ["10.244.2.0/24", "10.244.7.0/24"]);
}

/// An IPv6 /64 pool numbers 2^24 addresses: its file is sparse (a few
/// pages on disk for a few allocations) and listing reads only what was
/// written.
#[test]
fn ipam_file_pool_ipv6_slash_64_is_a_sparse_file() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let mut p = open_pool(tmp.path(), "fd00:10:244:1::/64");
    let mut got = Vec::new();
    for i in 0..5 {
        got.push(p.allocate(&format!("c{i}"), "eth0").unwrap());
    }
    assert_eq!(got[0].addr, "fd00:10:244:1::2".parse::<IpAddr>().unwrap());
    p.release("c1", "eth0").unwrap();
    got.remove(1);
    let before = rchar();
    assert_eq!(p.list().unwrap(), got);
    let read = rchar() - before;
    let m = fs::metadata(tmp.path().join("pools/fd00-10-244-1--_64/table")).unwrap();
    println!(
        "file {} B, {} B on disk, list read {read} B",
        m.len(),
        m.blocks() * 512
    );
    assert!(m.len() > 4 << 30, "2^24 slots of 256 B");
    assert!(
        m.blocks() * 512 < 1 << 20,
        "sparse: {} B on disk",
        m.blocks() * 512
    );
    assert!(read < 1 << 20, "list read {read} B");
}
