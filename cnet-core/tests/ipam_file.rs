//! The IPAM file store: persistence, leases, corruption, many processes at
//! once, and SIGKILL at random points.
//!
//! The multi-process tests re-run this test binary as children: the ignored
//! test `ipam_file_child` does the child's work when `CNET_IPAM_CHILD` is set.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cnet_core::ipam::{
    FileOptions, FilePool, FileStore, LeaseStore, NodeAttrs, PoolConfig, PoolStore, SubnetConfig,
};
use cnet_core::Error;

fn pool_cfg(s: &str) -> PoolConfig {
    PoolConfig::new(s.parse().unwrap())
}

fn open_pool(dir: &Path, subnet: &str, compact_after: u64) -> FilePool {
    let store = FileStore::open_with(
        dir,
        FileOptions {
            compact_after,
            ..FileOptions::default()
        },
    )
    .unwrap();
    store.pool(pool_cfg(subnet)).unwrap()
}

#[test]
fn ipam_file_pool_persists_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = open_pool(tmp.path(), "10.244.1.0/24", 4096);
    let a = p.allocate("c1", "eth0").unwrap();
    assert_eq!(a.addr, "10.244.1.2".parse::<IpAddr>().unwrap());
    let b = p.allocate("c2", "eth0").unwrap();
    drop(p);

    let mut p = open_pool(tmp.path(), "10.244.1.0/24", 4096);
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
    let mut p1 = open_pool(tmp.path(), "10.244.1.0/24", 8);
    let mut p2 = open_pool(tmp.path(), "10.244.1.0/24", 8);
    let mut seen = HashSet::new();
    for i in 0..50 {
        let (p, q) = if i % 2 == 0 {
            (&mut p1, &mut p2)
        } else {
            (&mut p2, &mut p1)
        };
        let a = p.allocate(&format!("c{i}"), "eth0").unwrap();
        assert!(seen.insert(a.addr), "duplicate {}", a.addr);
        // The other handle sees it at once (also across compactions), and
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
    let mut p = open_pool(tmp.path(), "10.244.1.0/30", 4096); // only .2 usable
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

#[test]
fn ipam_file_pool_compaction_keeps_state() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = open_pool(tmp.path(), "10.244.0.0/22", 16);
    let mut live = BTreeMap::new();
    for i in 0..300 {
        let a = p.allocate(&format!("c{i}"), "eth0").unwrap();
        live.insert(a.addr, a);
        if i % 3 == 0 {
            let r = p.release(&format!("c{}", i / 2), "eth0").unwrap();
            if let Some(r) = r {
                live.remove(&r.addr);
            }
        }
    }
    assert!(p.journal_records() < 1000, "journal was compacted");
    let journals: Vec<_> = fs::read_dir(tmp.path().join("pools/10.244.0.0_22"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("journal."))
        .collect();
    assert_eq!(journals.len(), 1, "old journals are removed");
    let mut q = open_pool(tmp.path(), "10.244.0.0/22", 16);
    let got: Vec<_> = q.list().unwrap();
    assert_eq!(got, live.into_values().collect::<Vec<_>>());
}

#[test]
fn ipam_file_pool_torn_tail_is_cut_but_bad_middle_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = open_pool(tmp.path(), "10.244.1.0/24", 4096);
    p.allocate("c1", "eth0").unwrap();
    p.allocate("c2", "eth0").unwrap();
    drop(p);
    let jpath = tmp.path().join("pools/10.244.1.0_24/journal.1");
    let good = fs::read(&jpath).unwrap();

    // A half-written record at the end: never acknowledged, cut off.
    let mut f = OpenOptions::new().append(true).open(&jpath).unwrap();
    f.write_all(b"1234abcd {\"op\":\"al").unwrap();
    drop(f);
    let mut p = open_pool(tmp.path(), "10.244.1.0/24", 4096);
    assert_eq!(p.list().unwrap().len(), 2);
    assert_eq!(fs::read(&jpath).unwrap(), good, "torn tail truncated");
    p.allocate("c3", "eth0").unwrap();
    drop(p);

    // A damaged record followed by good ones is corruption, and stays on disk.
    let mut data = fs::read(&jpath).unwrap();
    let first_nl = data.iter().position(|&b| b == b'\n').unwrap();
    data[first_nl + 12] ^= 0x20;
    fs::write(&jpath, &data).unwrap();
    let store = FileStore::open(tmp.path()).unwrap();
    let e = store.pool(pool_cfg("10.244.1.0/24")).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("damaged"), "{e}");
    assert_eq!(fs::read(&jpath).unwrap(), data, "never reset");
}

/// The journal of a pool with `n` allocations, and the pool's directory.
fn journal_with(tmp: &Path, n: usize) -> (PathBuf, Vec<u8>) {
    let mut p = open_pool(tmp, "10.244.1.0/24", 4096);
    for i in 0..n {
        p.allocate(&format!("c{i}"), "eth0").unwrap();
    }
    drop(p);
    let jpath = tmp.join("pools/10.244.1.0_24/journal.1");
    let data = fs::read(&jpath).unwrap();
    (jpath, data)
}

fn assert_corrupt_and_untouched(tmp: &Path, jpath: &Path, data: &[u8], want: &str) {
    fs::write(jpath, data).unwrap();
    let store = FileStore::open(tmp).unwrap();
    let e = store.pool(pool_cfg("10.244.1.0/24")).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains(want), "{want:?} not in: {e}");
    assert_eq!(
        fs::read(jpath).unwrap(),
        data,
        "left alone for a person to look at"
    );
}

#[test]
fn ipam_file_pool_lost_or_damaged_acknowledged_records_are_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let (jpath, good) = journal_with(tmp.path(), 4);
    let header_len = good.iter().position(|&b| b == b'\n').unwrap() + 1;
    let lines: Vec<&[u8]> = good[header_len..]
        .split_inclusive(|&b| b == b'\n')
        .collect();
    assert_eq!(lines.len(), 4);
    let header = &good[..header_len];

    // A deleted line in the middle: a gap in the numbering.
    let deleted = [header, lines[0], lines[2], lines[3]].concat();
    assert_corrupt_and_untouched(tmp.path(), &jpath, &deleted, "sequence number");
    // Cut at a record boundary: the acked mark says 4 records were acknowledged.
    let truncated = [header, lines[0], lines[1]].concat();
    assert_corrupt_and_untouched(tmp.path(), &jpath, &truncated, "were acknowledged");
    // Cut in the middle of an acknowledged record (not a torn append).
    let cut = [header, lines[0], lines[1], &lines[2][..10]].concat();
    assert_corrupt_and_untouched(tmp.path(), &jpath, &cut, "acknowledged");
    // The last line damaged (it was acknowledged).
    let mut last = good.clone();
    let n = last.len() - 4;
    last[n] ^= 0x01;
    assert_corrupt_and_untouched(tmp.path(), &jpath, &last, "damaged");
    // A line repeated.
    let dup = [header, lines[0], lines[1], lines[1], lines[2], lines[3]].concat();
    assert_corrupt_and_untouched(tmp.path(), &jpath, &dup, "sequence number");

    // The intact journal still loads, with all four.
    fs::write(&jpath, &good).unwrap();
    assert_eq!(
        open_pool(tmp.path(), "10.244.1.0/24", 4096)
            .list()
            .unwrap()
            .len(),
        4
    );
}

#[test]
fn ipam_file_pool_missing_snapshot_with_a_journal_is_corrupt_not_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let (jpath, good) = journal_with(tmp.path(), 2);
    let dir = jpath.parent().unwrap().to_path_buf();
    let snap = fs::read(dir.join("snapshot")).unwrap();
    fs::remove_file(dir.join("snapshot")).unwrap();
    let store = FileStore::open(tmp.path()).unwrap();
    let e = store.pool(pool_cfg("10.244.1.0/24")).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("snapshot is missing"), "{msg}");
    assert!(
        msg.contains("Restore") && msg.contains("remove"),
        "says what to do: {msg}"
    );
    assert_eq!(fs::read(&jpath).unwrap(), good, "journal untouched");
    assert!(!dir.join("snapshot").exists(), "no empty snapshot made");

    // The snapshot is back: everything is there.
    fs::write(dir.join("snapshot"), &snap).unwrap();
    assert_eq!(
        open_pool(tmp.path(), "10.244.1.0/24", 4096)
            .list()
            .unwrap()
            .len(),
        2
    );

    // A snapshot without its journal is corrupt too.
    fs::rename(&jpath, dir.join("journal.1.away")).unwrap();
    let e = store.pool(pool_cfg("10.244.1.0/24")).unwrap_err();
    assert!(
        e.to_string()
            .contains("journal of snapshot epoch 1 is missing"),
        "{e}"
    );
    fs::rename(dir.join("journal.1.away"), &jpath).unwrap();

    // A creation interrupted after the journal header (no record, no
    // snapshot) is not corruption: the pool starts empty.
    let tmp2 = tempfile::tempdir().unwrap();
    let (jpath2, _) = journal_with(tmp2.path(), 0);
    fs::remove_file(jpath2.parent().unwrap().join("snapshot")).unwrap();
    let mut p = open_pool(tmp2.path(), "10.244.1.0/24", 4096);
    assert!(p.list().unwrap().is_empty());
}

/// The issue's reproduction, made deterministic: a compaction whose process
/// died after replacing the snapshot and before unlinking the old journal
/// (kept alive here by a second link, which is what the crash leaves).
#[test]
fn ipam_file_pool_holder_notices_a_compaction_whose_process_died_before_unlink() {
    let tmp = tempfile::tempdir().unwrap();
    // The holder never compacts by itself here.
    let mut holder = open_pool(tmp.path(), "10.244.1.0/24", 4096);
    holder.allocate("h0", "eth0").unwrap();
    let dir = tmp.path().join("pools/10.244.1.0_24");
    fs::hard_link(dir.join("journal.1"), dir.join("keep")).unwrap();

    let mut churn = open_pool(tmp.path(), "10.244.1.0/24", 8);
    for i in 0..6 {
        churn.allocate(&format!("c{i}"), "eth0").unwrap();
        churn.release(&format!("c{i}"), "eth0").unwrap();
    }
    assert!(!dir.join("journal.1").exists(), "compacted");
    drop(churn);
    // The crash state: snapshot epoch 2 in place, journal.1 still linked.
    fs::rename(dir.join("keep"), dir.join("journal.1")).unwrap();

    let h1 = holder.allocate("h1", "eth0").unwrap();
    let mut fresh = open_pool(tmp.path(), "10.244.1.0/24", 4096);
    let x1 = fresh.allocate("x1", "eth0").unwrap();
    assert_ne!(h1.addr, x1.addr, "one address handed to two holders");
    let list = fresh.list().unwrap();
    assert!(
        list.iter().any(|a| a.container_id == "h1"),
        "h1 lost: {list:?}"
    );
    assert_eq!(
        holder.list().unwrap(),
        list,
        "holder and fresh process agree"
    );
}

#[test]
fn ipam_file_pool_failed_compaction_does_not_fail_the_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = open_pool(tmp.path(), "10.244.1.0/24", 4);
    let dir = tmp.path().join("pools/10.244.1.0_24");
    // Make every compaction fail: a directory where its next journal goes.
    fs::create_dir(dir.join("journal.2")).unwrap();
    let mut got = Vec::new();
    for i in 0..12 {
        got.push(
            p.allocate(&format!("c{i}"), "eth0")
                .expect("allocation must not fail"),
        );
    }
    assert!(dir.join("journal.1").exists(), "still on epoch 1");
    // Everything acknowledged is there for a fresh process.
    let list = open_pool(tmp.path(), "10.244.1.0/24", 4).list().unwrap();
    assert_eq!(list, got);
    // The obstacle goes: compaction resumes, nothing lost.
    fs::remove_dir(dir.join("journal.2")).unwrap();
    for _ in 0..60 {
        p.allocate("churn", "eth0").unwrap();
        p.release("churn", "eth0").unwrap();
    }
    assert!(!dir.join("journal.1").exists(), "compacted at last");
    assert_eq!(
        open_pool(tmp.path(), "10.244.1.0/24", 4).list().unwrap(),
        got
    );
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
    fs::write(dir.join("snapshot"), b"{\"hello\": \"world\"}\n").unwrap();
    let e = store.pool(pool_cfg("10.244.1.0/24")).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("not a cnet-ipam pool file"), "{e}");
    assert_eq!(
        fs::read(dir.join("snapshot")).unwrap(),
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
    let compact: u64 = env("CNET_COMPACT").parse().unwrap();
    let mut pool = open_pool(&dir, &env("CNET_SUBNET"), compact);
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
            // Allocate and release at once: the pool stays small, so the
            // journal is compacted every few records.
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
    let mut pool = open_pool(dir, subnet, 4096);
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
                // Compact often so kills land inside compactions too.
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
        // Keep the pool small so compaction stays frequent: every 10 runs,
        // release everything and start a new acknowledgement file.
        if run % 10 == 9 {
            let mut pool = open_pool(&dir, subnet, 16);
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

/// Every step of an append and a compaction at which a process can die, by
/// name (see `failpoint` in the file store).
#[cfg(feature = "failpoints")]
const CRASH_STEPS: &[&str] = &[
    "append-written",
    "append-synced",
    "append-acked",
    "compact-journal-created",
    "atomic-temp-written",
    "atomic-renamed",
    "compact-snapshot-replaced",
    "compact-old-journal-removed",
];

/// Long-lived holders keep the pool open while a churning process is killed
/// at each step of append and compaction (the N-th time it gets there, for
/// several N). After each kill: the holders and a fresh process each
/// allocate, no address has two holders, and nothing acknowledged is lost.
#[cfg(feature = "failpoints")]
#[test]
fn ipam_file_pool_crash_at_every_step_with_long_lived_holders() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let subnet = "10.244.0.0/22";
    // The holders never compact by themselves: only the killed process does.
    let mut holders: Vec<FilePool> = (0..2).map(|_| open_pool(&dir, subnet, 1 << 20)).collect();
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
            let mut fresh = open_pool(&dir, subnet, 1 << 20);
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
            // Keep the pool small (so compactions stay frequent): release
            // everything before the next round.
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
