//! The file store: IPAM state in a directory, safe between processes and
//! against crashes.
//!
//! # Layout
//!
//! ```text
//! DIR/
//!   lock                          flock'd while a network or pool is created
//!   networks/10.244.0.0_16/
//!     lock                        flock'd for every lease operation
//!     leases                      framed JSON: config, leases, node → last subnet
//!   pools/10.244.1.0_24/
//!     lock                        flock'd for every address operation
//!     table                       format 3, fixed layout, sparse:
//!       0      header copy A (4 KiB)  magic, CRC, seq, next generation, cursor,
//!       4096   header copy B          size, bucket count, highest slot used, the
//!                                     configuration (JSON)
//!       8192   owner index            2^k buckets × 16 B: slot + 1, owner hash (FNV-1a)
//!       …      slots                  one per address (its index in the pool) × 256 B:
//!                                     CRC, state, generation, interface, container id
//! ```
//!
//! A *framed* file (leases) starts with `cnet-ipam <kind> <version>
//! crc32=<hex> len=<n>` and a newline, then the body. Anything that does
//! not parse or whose checksum does not match is reported as
//! [`Error::Corrupt`] and left alone: never silently reset.
//!
//! # Why an address costs O(1), in a process that runs once too
//!
//! CNI host-local keeps one file per address and reads them all to find an
//! owner. A pool file here is laid out so that no operation reads the pool
//! as a whole: the slot of an address sits at the address's index; the
//! owner index (open addressing, linear probing, at most half full) finds
//! the slot of `(container id, interface)` in one or two 16-byte reads;
//! a free address is looked for from a cursor just past the last one handed
//! out (round-robin, like host-local), 16 slots per 4 KiB read, so one read
//! in the common case. An operation opens nothing but the lock (the file
//! stays open in the handle), reads the two header copies (8 KiB), and
//! writes at most a header copy, a bucket (or the few of a removal) and a
//! slot, then one `fdatasync`. A fresh process (a CNI plugin call) pays the
//! same as a long-lived one, with 10 or with 100,000 allocations: nothing
//! is loaded. Only `list` and `gc` read the slots, skipping what was never
//! written (`SEEK_DATA`; where a file system lacks it, up to the highest
//! slot handed out, which the header keeps): an IPv6 /64 pool, a 4.5 GB
//! sparse file, lists what it holds in a few KiB of reads.
//!
//! # Why a crash never gives one address to two holders
//!
//! * An address is held iff its slot says so: the slot is the truth, the
//!   index only finds it. Every index hit is checked against its slot.
//! * Allocating writes the header (generation + 1, cursor), then the
//!   owner's bucket, then the slot, then `fdatasync`; the call returns only
//!   after that. A process killed after any write leaves a skipped
//!   generation, or a bucket whose slot is not its owner's (passed over by
//!   every lookup, harmless), or the whole allocation.
//! * Releasing writes the slot (free, its generation kept, so the address
//!   is handed out again under a later one), then removes the bucket by
//!   shifting its cluster back (each entry copied before its old place is
//!   reused: every entry stays findable).
//! * The header is written alternately to its two copies with a sequence
//!   number: a copy torn by a power loss fails its CRC and the other, older
//!   copy is read. A slot with a bad CRC, both header copies bad, a bucket
//!   pointing past the last slot, a file shorter than its layout: `Corrupt`,
//!   naming the address, and nothing is changed.
//! * A pool file is made aside (`table.tmp`, full size, synced) and renamed
//!   into place: no half-made pool is ever seen.
//! * What a power loss can leave, beyond a process crash: with writes
//!   reordered, a slot without its bucket (the address stays held, its
//!   owner cannot find it: `gc` releases it, as it releases every address
//!   of a container that is gone, which after a power loss is all of
//!   them). Store the pool on tmpfs (`/run`) when, as for a CNI plugin,
//!   its containers cannot outlive a reboot.
//!
//! The crash tests kill processes at each of these steps (cargo feature
//! `failpoints`, see `tests/ipam_file.rs`) while other processes hold the
//! pool open.
//!
//! Leases are few (one per node), so the lease file is simply rewritten
//! atomically on every change.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use super::subnet::overlaps;
use super::{net_key, PoolConfig, SubnetConfig};
use crate::{Error, Result};

mod leases;
mod pool;

#[cfg(feature = "etcd")]
pub(crate) use leases::{check_node, check_ttl};
pub use leases::{FileLeaseWatch, FileLeases};
pub use pool::FilePool;

/// Tuning of a [`FileStore`].
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// `fdatasync` every change of a pool, and lease files and their
    /// directory (default
    /// `true`). Without it, state survives a killed process but not a power
    /// loss.
    pub fsync: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions { fsync: true }
    }
}

/// IPAM state in a directory; hands out [`FileLeases`] and [`FilePool`]s.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    opts: FileOptions,
}

impl FileStore {
    /// Open (creating if needed) the store in `dir`, default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, FileOptions::default())
    }

    /// Open (creating if needed) the store in `dir`.
    pub fn open_with(dir: impl AsRef<Path>, opts: FileOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if dir.as_os_str().is_empty() {
            return Err(Error::invalid(
                "open ipam file store",
                "the directory is an empty path (give one, e.g. /var/lib/cnet/ipam)",
            ));
        }
        for d in [dir.join("networks"), dir.join("pools")] {
            fs::create_dir_all(&d)
                .map_err(|e| Error::io(format!("create ipam store {}", d.display()), e))?;
        }
        Ok(FileStore { dir, opts })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node subnet leases of cluster network `config.network`. The first
    /// call records `config`; later calls must pass the same one
    /// (`Conflict` otherwise), and a network overlapping another one in this
    /// store is refused with `Conflict`.
    pub fn subnets(&self, config: SubnetConfig) -> Result<FileLeases> {
        config.validate()?;
        let ctx = format!("file store: network {}", config.network);
        let dir = self.create_entry("networks", &config.network, &ctx)?;
        FileLeases::new(dir, self.opts.clone(), config, ctx)
    }

    /// The address pool of node subnet `config.subnet`. Same rules as
    /// [`FileStore::subnets`]: one config per pool, no overlapping pools.
    pub fn pool(&self, config: PoolConfig) -> Result<FilePool> {
        config.validate()?;
        let ctx = format!("file store: pool {}", config.subnet);
        let dir = self.create_entry("pools", &config.subnet, &ctx)?;
        FilePool::new(dir, self.opts.clone(), config, ctx)
    }

    /// The subnets this store keeps an address pool for, sorted: on a node,
    /// the subnet it handed container addresses from (what the node agent
    /// claims again when its bridge is gone, see
    /// [`crate::network::held_subnet`]). Equivalent to `ls DIR/pools`.
    pub fn pool_subnets(&self) -> Result<Vec<IpNet>> {
        let parent = self.dir.join("pools");
        let ctx = format!("ipam file store {}: list pools", self.dir.display());
        let rd = fs::read_dir(&parent).map_err(|e| Error::io(&ctx, e))?;
        let mut v = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(&ctx, e))?;
            if let Some(net) = ent.file_name().to_str().and_then(parse_net_key) {
                v.push(net);
            }
        }
        v.sort_by_key(|n| (crate::ipam::addr_to_u128(n.network()), n.prefix_len()));
        Ok(v)
    }

    /// Make `DIR/kind/<net>` after checking no other entry overlaps `net`.
    fn create_entry(&self, kind: &str, net: &IpNet, ctx: &str) -> Result<PathBuf> {
        let _g = lock(&self.dir.join("lock"), ctx)?;
        let parent = self.dir.join(kind);
        let rd = fs::read_dir(&parent)
            .map_err(|e| Error::io(format!("{ctx}: list {}", parent.display()), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(format!("{ctx}: list {}", parent.display()), e))?;
            let name = ent.file_name();
            let Some(other) = name.to_str().and_then(parse_net_key) else {
                continue; // not ours
            };
            if other != *net && overlaps(&other, net) {
                return Err(Error::Conflict {
                    context: ctx.to_string(),
                    reason: format!("overlaps {other}, already in this store"),
                });
            }
        }
        let dir = parent.join(net_key(net));
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("{ctx}: create {}", dir.display()), e))?;
        Ok(dir)
    }
}

/// `Conflict` for a network or pool that the store holds with another
/// configuration, naming each field that differs.
pub(crate) fn config_mismatch<T: Serialize>(ctx: &str, stored: &T, asked: &T) -> Error {
    let (a, b) = (
        serde_json::to_value(stored).unwrap_or_default(),
        serde_json::to_value(asked).unwrap_or_default(),
    );
    let mut diffs = Vec::new();
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (k, va) in a {
            let vb = b.get(k).cloned().unwrap_or_default();
            if *va != vb {
                diffs.push(format!("{k}: the store has {va}, asked for {vb}"));
            }
        }
    }
    if diffs.is_empty() {
        diffs.push("the configurations differ".into());
    }
    Error::Conflict {
        context: ctx.to_string(),
        reason: format!(
            "the store holds this with another configuration: {} (open it with the stored \
             configuration, or release everything and remove it first)",
            diffs.join("; ")
        ),
    }
}

/// A crash hook for the crash tests (cargo feature `failpoints`): when
/// `CNET_IPAM_FAILPOINT=NAME:N` is set, the process kills itself with
/// SIGKILL the N-th time it reaches the point `NAME`. Without the feature it
/// compiles to nothing.
#[cfg(feature = "failpoints")]
pub(crate) fn failpoint(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let spec = SPEC.get_or_init(|| {
        let v = std::env::var("CNET_IPAM_FAILPOINT").ok()?;
        let (n, k) = v.rsplit_once(':')?;
        Some((n.to_string(), k.parse().ok()?))
    });
    if let Some((n, k)) = spec {
        if n == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *k {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn failpoint(_name: &str) {}

fn parse_net_key(s: &str) -> Option<IpNet> {
    s.replace('-', ":").replace('_', "/").parse().ok()
}

/// Hold an exclusive `flock` on `path` until the guard drops.
fn lock(path: &Path, ctx: &str) -> Result<Flock<File>> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(format!("{ctx}: open {}", path.display()), e))?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, errno)| {
        Error::io(
            format!("{ctx}: lock {}", path.display()),
            std::io::Error::from(errno),
        )
    })
}

// ---------------------------------------------------------------------------
// Framing and checksums

/// CRC-32 (IEEE), table driven.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The format version of framed files (lease files; pools are format 3
/// files of their own, see [`pool`]).
fn frame_version(_kind: &str) -> &'static str {
    "v1"
}

fn frame(kind: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "cnet-ipam {kind} {} crc32={:08x} len={}\n",
        frame_version(kind),
        crc32(body),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn unframe<'a>(kind: &str, data: &'a [u8], ctx: &str, path: &Path) -> Result<&'a [u8]> {
    let corrupt = |why: String| Error::Corrupt {
        context: format!("{ctx}: {}", path.display()),
        reason: why,
    };
    let nl = data
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no header line (not a cnet-ipam file?)".into()))?;
    let header = std::str::from_utf8(&data[..nl])
        .map_err(|_| corrupt("header is not text (not a cnet-ipam file?)".into()))?;
    let body = &data[nl + 1..];
    let mut it = header.split(' ');
    if it.next() != Some("cnet-ipam") || it.next() != Some(kind) {
        return Err(corrupt(format!(
            "not a cnet-ipam {kind} file (header {header:?})"
        )));
    }
    let version = it.next();
    if version != Some(frame_version(kind)) {
        return Err(corrupt(format!(
            "unsupported version in {header:?} (this cnet reads {} {}{})",
            kind,
            frame_version(kind),
            if version == Some("v1") {
                ": a file of a development build; remove the pool directory if none of its \
                 containers is alive"
            } else {
                ""
            }
        )));
    }
    let crc = it
        .next()
        .and_then(|s| s.strip_prefix("crc32="))
        .and_then(|s| u32::from_str_radix(s, 16).ok());
    let len = it
        .next()
        .and_then(|s| s.strip_prefix("len="))
        .and_then(|s| s.parse::<usize>().ok());
    let (Some(crc), Some(len)) = (crc, len) else {
        return Err(corrupt(format!("bad header {header:?}")));
    };
    if body.len() != len {
        return Err(corrupt(format!(
            "length {} does not match header ({len})",
            body.len()
        )));
    }
    if crc32(body) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    Ok(body)
}

/// Replace `dir/name` atomically: temp file, fsync, rename, fsync dir.
fn write_atomic(dir: &Path, name: &str, data: &[u8], sync: bool, ctx: &str) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let io = |what: &str, e| Error::io(format!("{ctx}: {what} {}", dst.display()), e);
    let mut f = File::create(&tmp).map_err(|e| io("create temp for", e))?;
    f.write_all(data).map_err(|e| io("write", e))?;
    if sync {
        f.sync_all().map_err(|e| io("fsync", e))?;
    }
    drop(f);
    failpoint("atomic-temp-written");
    fs::rename(&tmp, &dst).map_err(|e| io("rename over", e))?;
    failpoint("atomic-renamed");
    if sync {
        sync_dir(dir, ctx)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path, ctx: &str) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("{ctx}: fsync {}", dir.display()), e))
}

/// Read a whole file; `None` if it does not exist.
fn read_opt(path: &Path, ctx: &str) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("{ctx}: read {}", path.display()), e)),
    }
}

/// See [`crate::ipam::fuzz::pool_file`].
pub(crate) fn fuzz_pool_file(data: &[u8]) {
    pool::fuzz_pool_file(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn frame_round_trip_and_corruption() {
        let p = Path::new("x");
        let f = frame("leases", b"{\"a\":1}");
        assert_eq!(unframe("leases", &f, "t", p).unwrap(), b"{\"a\":1}");
        let mut bad = f.clone();
        let n = bad.len() - 2;
        bad[n] ^= 1;
        assert!(matches!(
            unframe("leases", &bad, "t", p),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            unframe("pool", &f, "t", p),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            unframe("leases", b"hello world", "t", p),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn net_keys_round_trip() {
        for s in ["10.244.0.0/16", "fd00:10:244::/56"] {
            let n: IpNet = s.parse().unwrap();
            assert_eq!(parse_net_key(&net_key(&n)), Some(n));
        }
    }
}
