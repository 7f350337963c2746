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
//!     snapshot                    framed JSON: config, epoch E, cursor, allocations
//!     journal.E                   header line, then one checksummed record per line
//! ```
//!
//! A *framed* file starts with `cnet-ipam <kind> v1 crc32=<hex> len=<n>` and
//! a newline, then the body; a journal record is `<crc32 hex> <json>` and a
//! newline. Anything that does not parse, or whose checksum or length does
//! not match, is reported as [`Error::Corrupt`] and left alone: never
//! silently reset.
//!
//! # Why an address costs O(1)
//!
//! CNI host-local keeps one file per address and reads them all to find a
//! free one. Here each process keeps the pool in memory (an [`AddressPool`]:
//! a bitmap with a cursor, O(1) amortized to find a free address) and an
//! allocation *appends one record* to the journal (one `write` + one
//! `fdatasync`). Before each operation, under the lock, a process reads only
//! the journal bytes it has not seen yet (what other processes appended
//! since), so a long-lived process pays for others' records once, and a
//! fresh process pays one load. When the journal holds more than
//! max([`FileOptions::compact_after`], 2 × live allocations) records, it is
//! folded into a new snapshot: the O(n) rewrite happens once per Θ(n)
//! operations, O(1) amortized.
//!
//! # Why a crash leaves the old or the new state
//!
//! * A record is acknowledged only after its `write` and `fdatasync`
//!   returned. A crash mid-append leaves at most one incomplete or
//!   mis-checksummed line *at the end* of the journal: it was never
//!   acknowledged and is cut off by the next writer (under the lock). A bad
//!   line followed by good ones is not a torn append: that is `Corrupt`.
//! * Snapshots (and lease files) are replaced atomically: write `NAME.tmp`,
//!   `fsync`, `rename` over `NAME`, `fsync` the directory.
//! * Compaction from epoch E to E+1: create `journal.E+1` (header only) and
//!   fsync it; atomically replace `snapshot` with one saying epoch E+1; then
//!   unlink `journal.E`. A crash before the rename leaves snapshot E with
//!   `journal.E` intact (the stray `journal.E+1` is removed later); after it,
//!   snapshot E+1 already holds everything `journal.E` said. A snapshot never
//!   gets a journal applied twice.
//! * Other processes notice a compaction because their open `journal.E` has
//!   been unlinked (`st_nlink == 0`) and reload.
//!
//! Leases are few (one per node), so the lease file is simply rewritten
//! atomically on every change.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::subnet::overlaps;
use super::{
    net_key, AddressPool, Allocation, LeaseStore, NodeAttrs, NodeLease, PoolConfig, PoolStore,
    SubnetAllocator, SubnetConfig,
};
use crate::{Error, Result};

/// Tuning of a [`FileStore`].
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// `fsync` journal appends, snapshots and their directory (default
    /// `true`). Without it, state survives a killed process but not a power
    /// loss.
    pub fsync: bool,
    /// Compact the journal once it holds this many records (or twice the
    /// live allocations, whichever is more). Default 4096.
    pub compact_after: u64,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            fsync: true,
            compact_after: 4096,
        }
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
        let leases = FileLeases {
            dir,
            opts: self.opts.clone(),
            config,
            ctx,
        };
        // Create the file, or check the stored config matches.
        leases.locked(|_| Ok(false))?;
        Ok(leases)
    }

    /// The address pool of node subnet `config.subnet`. Same rules as
    /// [`FileStore::subnets`]: one config per pool, no overlapping pools.
    pub fn pool(&self, config: PoolConfig) -> Result<FilePool> {
        config.validate()?;
        let ctx = format!("file store: pool {}", config.subnet);
        let dir = self.create_entry("pools", &config.subnet, &ctx)?;
        let pool = AddressPool::new(config.clone())?;
        let mut p = FilePool {
            dir,
            opts: self.opts.clone(),
            config,
            ctx,
            pool,
            journal: None,
            epoch: 0,
            offset: 0,
            records: 0,
        };
        p.locked(|_| Ok(((), Vec::new())))?;
        Ok(p)
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

fn frame(kind: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "cnet-ipam {kind} v1 crc32={:08x} len={}\n",
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
    if it.next() != Some("v1") {
        return Err(corrupt(format!("unsupported version in {header:?}")));
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
    fs::rename(&tmp, &dst).map_err(|e| io("rename over", e))?;
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

// ---------------------------------------------------------------------------
// Leases

#[derive(Debug, Serialize, Deserialize)]
struct LeaseFile {
    config: SubnetConfig,
    leases: Vec<NodeLease>,
    /// Each node's last subnet, kept after its lease expires so a restarted
    /// node gets it back.
    history: BTreeMap<String, IpNet>,
}

/// Node subnet leases in a [`FileStore`]. Every call takes the network's
/// file lock, reads the lease file and, if anything changed, rewrites it
/// atomically.
#[derive(Debug)]
pub struct FileLeases {
    dir: PathBuf,
    opts: FileOptions,
    config: SubnetConfig,
    ctx: String,
}

impl FileLeases {
    /// Run `f` on the current state under the lock; save if it returns true.
    fn locked<T>(&self, f: impl FnOnce(&mut LeaseFile) -> Result<T>) -> Result<T>
    where
        T: ChangedFlag,
    {
        let ctx = &self.ctx;
        let _g = lock(&self.dir.join("lock"), ctx)?;
        let path = self.dir.join("leases");
        let (mut st, fresh) = match read_opt(&path, ctx)? {
            None => (
                LeaseFile {
                    config: self.config.clone(),
                    leases: Vec::new(),
                    history: BTreeMap::new(),
                },
                true,
            ),
            Some(data) => {
                let body = unframe("leases", &data, ctx, &path)?;
                let st: LeaseFile = serde_json::from_slice(body).map_err(|e| Error::Corrupt {
                    context: format!("{ctx}: {}", path.display()),
                    reason: e.to_string(),
                })?;
                if st.config != self.config {
                    return Err(Error::Conflict {
                        context: ctx.clone(),
                        reason: format!(
                            "the store holds this network with another config: {:?}",
                            st.config
                        ),
                    });
                }
                (st, false)
            }
        };
        let now = SystemTime::now();
        let before = st.leases.len();
        st.leases.retain(|l| !l.is_expired(now));
        let pruned = st.leases.len() != before;
        let out = f(&mut st)?;
        if fresh || pruned || out.changed() {
            st.leases
                .sort_by_key(|l| super::addr_to_u128(l.subnet.network()));
            let body = serde_json::to_vec(&st).map_err(|e| Error::Corrupt {
                context: ctx.clone(),
                reason: format!("encode leases: {e}"),
            })?;
            write_atomic(
                &self.dir,
                "leases",
                &frame("leases", &body),
                self.opts.fsync,
                ctx,
            )?;
        }
        Ok(out)
    }

    fn allocator(&self, st: &LeaseFile) -> Result<SubnetAllocator> {
        let mut a = SubnetAllocator::new(self.config.clone())?;
        for l in &st.leases {
            a.mark_taken(&l.subnet).map_err(|e| Error::Corrupt {
                context: self.ctx.clone(),
                reason: format!("lease of {}: {e}", l.node),
            })?;
        }
        Ok(a)
    }
}

/// Whether a locked operation changed the state (and must be saved).
trait ChangedFlag {
    fn changed(&self) -> bool;
}
impl ChangedFlag for bool {
    fn changed(&self) -> bool {
        *self
    }
}
impl<T> ChangedFlag for (T, bool) {
    fn changed(&self) -> bool {
        self.1
    }
}

fn expiry(ttl: Duration) -> Option<SystemTime> {
    Some(SystemTime::now() + ttl)
}

impl LeaseStore for FileLeases {
    fn config(&self) -> &SubnetConfig {
        &self.config
    }

    fn acquire(&mut self, node: &str, attrs: &NodeAttrs, ttl: Duration) -> Result<NodeLease> {
        check_node(&self.ctx, node)?;
        let (l, _) = self.locked(|st| {
            if let Some(l) = st.leases.iter_mut().find(|l| l.node == node) {
                l.attrs = attrs.clone();
                if l.expires.is_some() {
                    l.expires = expiry(ttl);
                }
                return Ok((l.clone(), true));
            }
            let a = self.allocator(st)?;
            let subnet = a.next_free(st.history.get(node))?;
            let l = NodeLease {
                node: node.to_string(),
                subnet,
                attrs: attrs.clone(),
                expires: expiry(ttl),
            };
            st.leases.push(l.clone());
            st.history.insert(node.to_string(), subnet);
            Ok((l, true))
        })?;
        Ok(l)
    }

    fn renew(&mut self, node: &str, ttl: Duration) -> Result<NodeLease> {
        let ctx = self.ctx.clone();
        let (l, _) = self.locked(|st| {
            let l = st
                .leases
                .iter_mut()
                .find(|l| l.node == node)
                .ok_or_else(|| Error::NotFound {
                    context: format!("{ctx}: lease of node {node}"),
                    kernel: None,
                })?;
            if l.expires.is_some() {
                l.expires = expiry(ttl);
            }
            Ok((l.clone(), true))
        })?;
        Ok(l)
    }

    fn release(&mut self, node: &str) -> Result<()> {
        self.locked(|st| {
            let before = st.leases.len();
            st.leases.retain(|l| l.node != node);
            Ok(st.leases.len() != before)
        })?;
        Ok(())
    }

    fn reserve(&mut self, node: &str, subnet: IpNet, attrs: &NodeAttrs) -> Result<NodeLease> {
        check_node(&self.ctx, node)?;
        if self.config.index_of(&subnet).is_none() {
            return Err(Error::invalid(
                self.ctx.clone(),
                format!(
                    "{subnet} is not a /{} subnet of {}",
                    self.config.subnet_len, self.config.network
                ),
            ));
        }
        let ctx = self.ctx.clone();
        let (l, _) = self.locked(|st| {
            if let Some(other) = st
                .leases
                .iter()
                .find(|l| (l.subnet == subnet) != (l.node == node))
            {
                return Err(Error::Conflict {
                    context: ctx,
                    reason: format!("node {} holds {}", other.node, other.subnet),
                });
            }
            st.leases.retain(|l| l.node != node);
            let l = NodeLease {
                node: node.to_string(),
                subnet,
                attrs: attrs.clone(),
                expires: None,
            };
            st.leases.push(l.clone());
            st.history.insert(node.to_string(), subnet);
            Ok((l, true))
        })?;
        Ok(l)
    }

    fn get(&mut self, node: &str) -> Result<Option<NodeLease>> {
        let (l, _) =
            self.locked(|st| Ok((st.leases.iter().find(|l| l.node == node).cloned(), false)))?;
        Ok(l)
    }

    fn list(&mut self) -> Result<Vec<NodeLease>> {
        let (l, _) = self.locked(|st| Ok((st.leases.clone(), false)))?;
        Ok(l)
    }
}

pub(crate) fn check_node(ctx: &str, node: &str) -> Result<()> {
    if node.is_empty() || node.contains('/') {
        return Err(Error::invalid(
            ctx.to_string(),
            format!("bad node name {node:?} (empty or contains '/')"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Pools

#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    epoch: u64,
    config: PoolConfig,
    cursor: u32,
    next_generation: u64,
    allocations: Vec<Allocation>,
}

/// One journal record.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op")]
enum Record {
    /// An address was handed out.
    #[serde(rename = "alloc")]
    Alloc(Allocation),
    /// An address was released.
    #[serde(rename = "release")]
    Release { addr: IpAddr, generation: u64 },
}

/// An address pool in a [`FileStore`]: an in-memory [`AddressPool`] kept in
/// step with the on-disk snapshot + journal (see the [module docs](self)).
#[derive(Debug)]
pub struct FilePool {
    dir: PathBuf,
    opts: FileOptions,
    config: PoolConfig,
    ctx: String,
    pool: AddressPool,
    /// The open journal of `epoch`, `None` until loaded (or after a failed
    /// write, which forces a reload).
    journal: Option<File>,
    epoch: u64,
    /// Journal bytes already applied to `pool`.
    offset: u64,
    /// Records in the journal.
    records: u64,
}

impl FilePool {
    fn corrupt(&self, what: &Path, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            context: format!("{}: {}", self.ctx, what.display()),
            reason: reason.into(),
        }
    }

    fn journal_path(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("journal.{epoch}"))
    }

    fn journal_header(&self, epoch: u64) -> String {
        format!("cnet-ipam journal v1 epoch={epoch}\n")
    }

    /// Under the lock: bring `pool` up to date, run `op`, append the
    /// records it returns, maybe compact.
    fn locked<T>(
        &mut self,
        op: impl FnOnce(&mut AddressPool) -> Result<(T, Vec<Record>)>,
    ) -> Result<T> {
        let ctx = self.ctx.clone();
        let _g = lock(&self.dir.join("lock"), &ctx)?;
        if let Err(e) = self.refresh() {
            self.journal = None;
            return Err(e);
        }
        // The pure operations either fail without changing the pool or
        // succeed, so they run in place.
        let (out, recs) = op(&mut self.pool)?;
        if recs.is_empty() {
            return Ok(out);
        }
        if let Err(e) = self.append(&recs) {
            // Memory is ahead of disk now: reload before the next operation.
            self.journal = None;
            return Err(e);
        }
        let threshold = self.opts.compact_after.max(2 * self.pool.len() as u64);
        if self.records >= threshold {
            if let Err(e) = self.compact() {
                self.journal = None;
                return Err(e);
            }
        }
        Ok(out)
    }

    fn append(&mut self, recs: &[Record]) -> Result<()> {
        let mut buf = Vec::new();
        for r in recs {
            let json = serde_json::to_string(r).map_err(|e| Error::Corrupt {
                context: self.ctx.clone(),
                reason: format!("encode record: {e}"),
            })?;
            buf.extend_from_slice(format!("{:08x} {json}\n", crc32(json.as_bytes())).as_bytes());
        }
        let path = self.journal_path(self.epoch);
        let ctx = &self.ctx;
        let j = self.journal.as_mut().ok_or_else(|| Error::Corrupt {
            context: ctx.clone(),
            reason: "journal not open".into(),
        })?;
        let io = |e| Error::io(format!("{ctx}: append to {}", path.display()), e);
        j.write_all(&buf).map_err(io)?;
        if self.opts.fsync {
            j.sync_data().map_err(io)?;
        }
        self.offset += buf.len() as u64;
        self.records += recs.len() as u64;
        Ok(())
    }

    /// Make `pool` match the disk: a full load when needed, else only the
    /// journal bytes appended since we last looked.
    fn refresh(&mut self) -> Result<()> {
        let stale = match &self.journal {
            None => true,
            Some(j) => {
                let m = j
                    .metadata()
                    .map_err(|e| Error::io(format!("{}: stat journal", self.ctx), e))?;
                m.nlink() == 0 // compacted away by another process
            }
        };
        if stale {
            self.load()
        } else {
            self.read_journal()
        }
    }

    fn load(&mut self) -> Result<()> {
        let ctx = self.ctx.clone();
        let snap_path = self.dir.join("snapshot");
        let snap = match read_opt(&snap_path, &ctx)? {
            Some(data) => {
                let body = unframe("pool", &data, &ctx, &snap_path)?;
                let s: Snapshot = serde_json::from_slice(body)
                    .map_err(|e| self.corrupt(&snap_path, e.to_string()))?;
                if s.config != self.config {
                    return Err(Error::Conflict {
                        context: ctx,
                        reason: format!(
                            "the store holds this pool with another config: {:?}",
                            s.config
                        ),
                    });
                }
                s
            }
            None => {
                // A new pool (or a crash before its first snapshot: nothing
                // was ever acknowledged then).
                let s = Snapshot {
                    epoch: 1,
                    config: self.config.clone(),
                    cursor: 0,
                    next_generation: 1,
                    allocations: Vec::new(),
                };
                self.create_journal(1)?;
                self.write_snapshot(&s)?;
                s
            }
        };
        let mut pool = AddressPool::new(self.config.clone())?;
        for a in snap.allocations {
            pool.restore(a)
                .map_err(|e| self.corrupt(&snap_path, e.to_string()))?;
        }
        pool.set_cursor_state(snap.cursor, snap.next_generation);
        self.pool = pool;
        self.epoch = snap.epoch;
        let jpath = self.journal_path(snap.epoch);
        let j = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&jpath)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    self.corrupt(&jpath, "the snapshot's journal is missing")
                } else {
                    Error::io(format!("{ctx}: open {}", jpath.display()), e)
                }
            })?;
        self.journal = Some(j);
        self.offset = 0;
        self.records = 0;
        self.read_journal()?;
        self.remove_stray_journals();
        Ok(())
    }

    /// Apply journal records from `offset` to the end; cut off a torn tail.
    fn read_journal(&mut self) -> Result<()> {
        let jpath = self.journal_path(self.epoch);
        let ctx = self.ctx.clone();
        let io = |e| Error::io(format!("{ctx}: read {}", jpath.display()), e);
        let Some(j) = self.journal.as_mut() else {
            return Ok(());
        };
        let len = j.metadata().map_err(io)?.len();
        if len == self.offset {
            return Ok(()); // nothing new: the common case, one fstat
        }
        let mut buf = Vec::with_capacity((len - self.offset) as usize);
        j.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        j.read_to_end(&mut buf).map_err(io)?;
        let mut pos = 0usize;
        if self.offset == 0 {
            let header = self.journal_header(self.epoch);
            if !buf.starts_with(header.as_bytes()) {
                return Err(self.corrupt(&jpath, format!("bad journal header (want {header:?})")));
            }
            pos = header.len();
        }
        while pos < buf.len() {
            let rest = &buf[pos..];
            let line_end = rest.iter().position(|&b| b == b'\n');
            let parsed = line_end.and_then(|n| parse_record(&rest[..n]));
            match (line_end, parsed) {
                (Some(n), Some(rec)) => {
                    self.apply(rec, &jpath)?;
                    pos += n + 1;
                    self.records += 1;
                }
                (end, _) => {
                    // A bad line: a torn append only if nothing follows it.
                    let after = end.map_or(rest.len(), |n| n + 1);
                    if rest[after..].iter().any(|&b| b != 0) {
                        return Err(self.corrupt(
                            &jpath,
                            format!("bad record at byte {}", self.offset as usize + pos),
                        ));
                    }
                    let at = self.offset + pos as u64;
                    let j = self.journal.as_mut().ok_or_else(|| Error::Corrupt {
                        context: ctx.clone(),
                        reason: "journal not open".into(),
                    })?;
                    j.set_len(at).map_err(io)?;
                    if self.opts.fsync {
                        j.sync_data().map_err(io)?;
                    }
                    self.offset = at;
                    return Ok(());
                }
            }
        }
        self.offset += pos as u64;
        Ok(())
    }

    fn apply(&mut self, rec: Record, jpath: &Path) -> Result<()> {
        match rec {
            Record::Alloc(a) => self
                .pool
                .restore(a)
                .map_err(|e| self.corrupt(jpath, format!("replay: {e}"))),
            Record::Release { addr, generation } => {
                match self.pool.release_generation(addr, generation) {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(self.corrupt(
                        jpath,
                        format!("replay: release of {addr}, which is not allocated"),
                    )),
                    Err(e) => Err(self.corrupt(jpath, format!("replay: {e}"))),
                }
            }
        }
    }

    fn create_journal(&self, epoch: u64) -> Result<()> {
        let path = self.journal_path(epoch);
        let ctx = &self.ctx;
        let io = |e| Error::io(format!("{ctx}: create {}", path.display()), e);
        let mut f = File::create(&path).map_err(io)?;
        f.write_all(self.journal_header(epoch).as_bytes())
            .map_err(io)?;
        if self.opts.fsync {
            f.sync_all().map_err(io)?;
        }
        Ok(())
    }

    fn write_snapshot(&self, s: &Snapshot) -> Result<()> {
        let body = serde_json::to_vec(s).map_err(|e| Error::Corrupt {
            context: self.ctx.clone(),
            reason: format!("encode snapshot: {e}"),
        })?;
        write_atomic(
            &self.dir,
            "snapshot",
            &frame("pool", &body),
            self.opts.fsync,
            &self.ctx,
        )
    }

    /// Fold the journal into a new snapshot (see the module docs for the order).
    fn compact(&mut self) -> Result<()> {
        let next = self.epoch + 1;
        self.create_journal(next)?;
        let (cursor, next_generation) = self.pool.cursor_state();
        self.write_snapshot(&Snapshot {
            epoch: next,
            config: self.config.clone(),
            cursor,
            next_generation,
            allocations: self.pool.list(),
        })?;
        let old = self.journal_path(self.epoch);
        fs::remove_file(&old)
            .map_err(|e| Error::io(format!("{}: remove {}", self.ctx, old.display()), e))?;
        let jpath = self.journal_path(next);
        let j = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&jpath)
            .map_err(|e| Error::io(format!("{}: open {}", self.ctx, jpath.display()), e))?;
        self.journal = Some(j);
        self.epoch = next;
        self.offset = self.journal_header(next).len() as u64;
        self.records = 0;
        Ok(())
    }

    /// Journals of other epochs are leftovers of an interrupted compaction.
    fn remove_stray_journals(&self) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        for ent in rd.flatten() {
            let name = ent.file_name();
            let Some(e) = name
                .to_str()
                .and_then(|n| n.strip_prefix("journal."))
                .and_then(|e| e.parse::<u64>().ok())
            else {
                continue;
            };
            if e != self.epoch {
                // Best effort: a leftover that stays does no harm.
                let _ = fs::remove_file(ent.path());
            }
        }
    }

    /// How many records the current journal holds (for tests and tuning).
    pub fn journal_records(&self) -> u64 {
        self.records
    }
}

fn parse_record(line: &[u8]) -> Option<Record> {
    let s = std::str::from_utf8(line).ok()?;
    let (crc, json) = s.split_once(' ')?;
    let crc = u32::from_str_radix(crc, 16).ok()?;
    if crc32(json.as_bytes()) != crc {
        return None;
    }
    serde_json::from_str(json).ok()
}

impl PoolStore for FilePool {
    fn config(&self) -> &PoolConfig {
        &self.config
    }

    fn allocate(&mut self, container_id: &str, ifname: &str) -> Result<Allocation> {
        self.locked(|p| {
            let had = p.get(container_id, ifname).is_some();
            let a = p.allocate(container_id, ifname)?;
            let recs = if had {
                vec![]
            } else {
                vec![Record::Alloc(a.clone())]
            };
            Ok((Some(a), recs))
        })
        .and_then(|a| a.ok_or_else(|| unreachable_none(&self.ctx)))
    }

    fn allocate_addr(
        &mut self,
        container_id: &str,
        ifname: &str,
        addr: IpAddr,
    ) -> Result<Allocation> {
        self.locked(|p| {
            let had = p.get(container_id, ifname).is_some();
            let a = p.allocate_addr(container_id, ifname, addr)?;
            let recs = if had {
                vec![]
            } else {
                vec![Record::Alloc(a.clone())]
            };
            Ok((Some(a), recs))
        })
        .and_then(|a| a.ok_or_else(|| unreachable_none(&self.ctx)))
    }

    fn release(&mut self, container_id: &str, ifname: &str) -> Result<Option<Allocation>> {
        self.locked(|p| {
            let a = p.release(container_id, ifname);
            let recs = a
                .iter()
                .map(|a| Record::Release {
                    addr: a.addr,
                    generation: a.generation,
                })
                .collect();
            Ok((a, recs))
        })
    }

    fn release_generation(&mut self, addr: IpAddr, generation: u64) -> Result<Option<Allocation>> {
        self.locked(|p| {
            let a = p.release_generation(addr, generation)?;
            let recs = a
                .iter()
                .map(|a| Record::Release {
                    addr: a.addr,
                    generation: a.generation,
                })
                .collect();
            Ok((a, recs))
        })
    }

    fn list(&mut self) -> Result<Vec<Allocation>> {
        self.locked(|p| Ok((p.list(), vec![])))
    }

    fn gc(&mut self, alive: &HashSet<String>) -> Result<Vec<Allocation>> {
        self.locked(|p| {
            let gone = p.gc(alive);
            let recs = gone
                .iter()
                .map(|a| Record::Release {
                    addr: a.addr,
                    generation: a.generation,
                })
                .collect();
            Ok((gone, recs))
        })
    }
}

fn unreachable_none(ctx: &str) -> Error {
    Error::Corrupt {
        context: ctx.to_string(),
        reason: "internal: operation returned no allocation".into(),
    }
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
        let f = frame("pool", b"{\"a\":1}");
        assert_eq!(unframe("pool", &f, "t", p).unwrap(), b"{\"a\":1}");
        let mut bad = f.clone();
        let n = bad.len() - 2;
        bad[n] ^= 1;
        assert!(matches!(
            unframe("pool", &bad, "t", p),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            unframe("leases", &f, "t", p),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            unframe("pool", b"hello world", "t", p),
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
