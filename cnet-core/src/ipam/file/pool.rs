//! Address pools in a [`FileStore`](super::FileStore): one fixed-layout
//! file per pool, read and written in place under the pool's lock, so that
//! every operation, in a long-lived process or in a process that runs once
//! (a CNI plugin), touches a few pages whatever the number of allocations
//! (see the [store's docs](super) for the layout and the crash argument).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::net::IpAddr;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;

use super::{config_mismatch, crc32, failpoint, sync_dir, FileOptions};
use crate::ipam::pool::{check_owner, Layout};
use crate::ipam::{Allocation, PoolConfig, PoolStore};
use crate::{Error, Result};

/// The file's first bytes (either header copy).
const MAGIC: &[u8; 16] = b"cnet-ipam pool3\n";
/// A header copy: two of them, at 0 and at `HEADER`.
const HEADER: u64 = 4096;
/// Where a header copy's fields start (after magic and CRC).
const FIELDS_AT: usize = 20;
/// Where the configuration (JSON) starts in a header copy.
const CONFIG_AT: usize = 64;
/// An owner-index bucket: slot + 1 (0: empty), reserved, owner hash.
const BUCKET: u64 = 16;
/// A slot: one per address of the pool, at the address's index.
const SLOT: u64 = 256;
const SLOT_ID_AT: usize = 32;
/// The longest container id a slot holds.
pub(crate) const MAX_CONTAINER_ID: usize = SLOT as usize - SLOT_ID_AT;
/// The longest interface name (Linux: IFNAMSIZ − 1).
pub(crate) const MAX_IFNAME: usize = 15;
const STATE_USED: u8 = 1;
const STATE_RELEASED: u8 = 2;

/// The fields of a header copy that change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Which copy is newer: the higher `seq` of the two valid ones.
    pub seq: u64,
    pub next_generation: u64,
    /// The index the next search for a free address starts from.
    pub cursor: u32,
    /// The pool's size (addresses numbered) and the index's bucket count:
    /// fixed at creation, checked against the configuration.
    pub size: u32,
    pub buckets: u32,
    /// One past the highest slot ever handed out: the slots from here on
    /// are empty, so `list` stops here where `SEEK_DATA` is missing.
    pub high: u32,
}

impl Header {
    pub(crate) fn encode(&self, config_json: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER as usize];
        b[..16].copy_from_slice(MAGIC);
        b[20..28].copy_from_slice(&self.seq.to_le_bytes());
        b[28..36].copy_from_slice(&self.next_generation.to_le_bytes());
        b[36..40].copy_from_slice(&self.cursor.to_le_bytes());
        b[40..44].copy_from_slice(&self.size.to_le_bytes());
        b[44..48].copy_from_slice(&self.buckets.to_le_bytes());
        b[48..52].copy_from_slice(&(config_json.len() as u32).to_le_bytes());
        b[52..56].copy_from_slice(&self.high.to_le_bytes());
        b[CONFIG_AT..CONFIG_AT + config_json.len()].copy_from_slice(config_json);
        let crc = crc32(&b[FIELDS_AT..]);
        b[16..20].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// A header copy and its configuration bytes; `Err` says why not.
    pub(crate) fn decode(b: &[u8]) -> std::result::Result<(Header, &[u8]), String> {
        if b.get(..16) != Some(&MAGIC[..]) {
            return Err("not a cnet-ipam pool file (format 3)".into());
        }
        if b.len() < HEADER as usize {
            return Err(format!("{} bytes, a header copy is {HEADER}", b.len()));
        }
        let b = &b[..HEADER as usize];
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        if u32_at(16) != crc32(&b[FIELDS_AT..]) {
            return Err("checksum mismatch".into());
        }
        let len = u32_at(48) as usize;
        if len > b.len() - CONFIG_AT {
            return Err(format!("configuration length {len} does not fit"));
        }
        let h = Header {
            seq: u64_at(20),
            next_generation: u64_at(28),
            cursor: u32_at(36),
            size: u32_at(40),
            buckets: u32_at(44),
            high: u32_at(52),
        };
        if h.buckets == 0 || !h.buckets.is_power_of_two() {
            return Err(format!("bucket count {} is not a power of two", h.buckets));
        }
        Ok((h, &b[CONFIG_AT..CONFIG_AT + len]))
    }
}

/// One slot as read: never used, held, or released (keeping its last
/// generation, so an address taken again gets a later one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Slot {
    Empty,
    Used {
        generation: u64,
        container_id: String,
        ifname: String,
    },
    Released {
        generation: u64,
    },
}

impl Slot {
    pub(crate) fn encode(&self) -> [u8; SLOT as usize] {
        let mut b = [0u8; SLOT as usize];
        match self {
            Slot::Empty => return b,
            Slot::Released { generation } => {
                b[4] = STATE_RELEASED;
                b[8..16].copy_from_slice(&generation.to_le_bytes());
            }
            Slot::Used {
                generation,
                container_id,
                ifname,
            } => {
                // Lengths are checked by `check_lengths` before any write.
                let (id, ifn) = (container_id.as_bytes(), ifname.as_bytes());
                let (id, ifn) = (
                    &id[..id.len().min(MAX_CONTAINER_ID)],
                    &ifn[..ifn.len().min(MAX_IFNAME)],
                );
                b[4] = STATE_USED;
                b[5] = id.len() as u8;
                b[6] = ifn.len() as u8;
                b[8..16].copy_from_slice(&generation.to_le_bytes());
                b[16..16 + ifn.len()].copy_from_slice(ifn);
                b[SLOT_ID_AT..SLOT_ID_AT + id.len()].copy_from_slice(id);
            }
        }
        let crc = crc32(&b[4..]);
        b[..4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> std::result::Result<Slot, String> {
        if b.len() != SLOT as usize {
            return Err(format!("a slot is {SLOT} bytes, not {}", b.len()));
        }
        if b.iter().all(|&x| x == 0) {
            return Ok(Slot::Empty);
        }
        let crc = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if crc != crc32(&b[4..]) {
            return Err("checksum mismatch".into());
        }
        let generation = u64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
        match b[4] {
            STATE_RELEASED => Ok(Slot::Released { generation }),
            STATE_USED => {
                let (il, fl) = (b[5] as usize, b[6] as usize);
                if il == 0 || il > MAX_CONTAINER_ID || fl == 0 || fl > MAX_IFNAME {
                    return Err(format!("bad owner lengths {il}/{fl}"));
                }
                let text = |r: &[u8]| String::from_utf8(r.to_vec()).map_err(|e| e.to_string());
                Ok(Slot::Used {
                    generation,
                    container_id: text(&b[SLOT_ID_AT..SLOT_ID_AT + il])?,
                    ifname: text(&b[16..16 + fl])?,
                })
            }
            s => Err(format!("unknown slot state {s}")),
        }
    }

    fn generation(&self) -> u64 {
        match self {
            Slot::Empty => 0,
            Slot::Used { generation, .. } | Slot::Released { generation } => *generation,
        }
    }

    fn holds(&self, container_id: &str, ifname: &str) -> bool {
        matches!(self, Slot::Used { container_id: c, ifname: i, .. } if c == container_id && i == ifname)
    }
}

/// The owner index's hash: FNV-1a, 64 bits. Written to disk, so it must
/// never change between versions, which rules out the std and Fx hashers
/// (neither promises a stable output).
pub(crate) fn owner_hash(container_id: &str, ifname: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in container_id
        .as_bytes()
        .iter()
        .chain(&[0u8])
        .chain(ifname.as_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// An index bucket: the slot it points at (`None`: empty) and the hash of
/// that slot's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    slot: Option<u32>,
    hash: u64,
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        slot: None,
        hash: 0,
    };
    fn encode(&self) -> [u8; BUCKET as usize] {
        let mut b = [0u8; BUCKET as usize];
        if let Some(s) = self.slot {
            b[..4].copy_from_slice(&(s + 1).to_le_bytes());
            b[8..16].copy_from_slice(&self.hash.to_le_bytes());
        }
        b
    }
    fn decode(b: &[u8; BUCKET as usize]) -> Bucket {
        let s = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        Bucket {
            slot: s.checked_sub(1),
            hash: u64::from_le_bytes(b[8..16].try_into().unwrap_or_default()),
        }
    }
}

/// Where things are in a pool file of `buckets` index buckets.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    size: u32,
    buckets: u32,
}

impl Geometry {
    fn for_size(size: u32) -> Geometry {
        // At most half full: linear probing stays short.
        let buckets = (u64::from(size) * 2).next_power_of_two().max(64) as u32;
        Geometry { size, buckets }
    }
    fn bucket_at(&self, i: u32) -> u64 {
        2 * HEADER + u64::from(i) * BUCKET
    }
    fn slots_at(&self) -> u64 {
        (self.bucket_at(self.buckets)).div_ceil(HEADER) * HEADER
    }
    fn slot_at(&self, i: u32) -> u64 {
        self.slots_at() + u64::from(i) * SLOT
    }
    fn file_len(&self) -> u64 {
        self.slot_at(self.size)
    }
    fn home(&self, hash: u64) -> u32 {
        (hash & u64::from(self.buckets - 1)) as u32
    }
    fn next(&self, i: u32) -> u32 {
        (i + 1) & (self.buckets - 1)
    }
}

/// An address pool in a [`FileStore`](super::FileStore): the file
/// `DIR/pools/<subnet>/table`, read and written in place under the pool's
/// lock (see the [module docs](super)). Nothing is cached between
/// operations but the open file and the configuration.
#[derive(Debug)]
pub struct FilePool {
    dir: PathBuf,
    opts: FileOptions,
    config: PoolConfig,
    config_json: Vec<u8>,
    layout: Layout,
    geo: Geometry,
    ctx: String,
    file: Option<File>,
}

/// What an operation holds while it runs: the lock, the file, the newest
/// header copy and which copy that is.
struct Locked<'a> {
    pool: &'a FilePool,
    file: &'a File,
    header: Header,
    /// The offset of the copy to write next (the older one).
    write_at: u64,
    _lock: nix::fcntl::Flock<File>,
}

impl FilePool {
    pub(super) fn new(
        dir: PathBuf,
        opts: FileOptions,
        config: PoolConfig,
        ctx: String,
    ) -> Result<FilePool> {
        let layout = Layout::new(&config)?;
        let config_json = serde_json::to_vec(&config).map_err(|e| Error::Corrupt {
            context: ctx.clone(),
            reason: format!("encode the configuration: {e}"),
        })?;
        if config_json.len() > HEADER as usize - CONFIG_AT {
            return Err(Error::invalid(
                ctx,
                format!(
                    "the configuration is {} bytes as JSON, a pool file holds {} (fewer ranges?)",
                    config_json.len(),
                    HEADER as usize - CONFIG_AT
                ),
            ));
        }
        let geo = Geometry::for_size(layout.size());
        let mut p = FilePool {
            dir,
            opts,
            config,
            config_json,
            layout,
            geo,
            ctx,
            file: None,
        };
        p.with_lock(|_| Ok(()))?;
        Ok(p)
    }

    fn path(&self) -> PathBuf {
        self.dir.join("table")
    }

    fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            context: format!("{}: {}", self.ctx, self.path().display()),
            reason: reason.into(),
        }
    }

    fn io(&self, what: &str, e: std::io::Error) -> Error {
        Error::io(format!("{}: {what} {}", self.ctx, self.path().display()), e)
    }

    /// Run `op` under the pool's lock with the file open (made on first
    /// use) and its newest header read.
    fn with_lock<T>(&mut self, op: impl FnOnce(&mut Locked<'_>) -> Result<T>) -> Result<T> {
        let lock = super::lock(&self.dir.join("lock"), &self.ctx)?;
        // A file removed behind our back (the pool directory deleted) is
        // made again, as a first open would.
        let gone = match &self.file {
            None => true,
            Some(f) => f.metadata().map_err(|e| self.io("stat", e))?.nlink() == 0,
        };
        if gone {
            self.file = Some(self.open_or_create()?);
        }
        let this = &*self;
        let file = this.file.as_ref().ok_or_else(|| this.corrupt("not open"))?;
        let (header, write_at) = this.read_header(file)?;
        op(&mut Locked {
            pool: this,
            file,
            header,
            write_at,
            _lock: lock,
        })
    }

    fn open_or_create(&self) -> Result<File> {
        let path = self.path();
        match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io("open", e)),
        }
        for old in ["snapshot", "journal.1"] {
            if self.dir.join(old).exists() {
                return Err(self.corrupt(format!(
                    "this pool directory holds {old}, the format of an earlier cnet (snapshot \
                     + journal), which this version does not read: if none of its containers \
                     is alive, remove {} to start the pool empty",
                    self.dir.display()
                )));
            }
        }
        // Made aside, complete and synced, then renamed into place: a crash
        // leaves no pool or a whole one.
        let tmp = self.dir.join("table.tmp");
        let io = |e| Error::io(format!("{}: create {}", self.ctx, tmp.display()), e);
        let f = File::create(&tmp).map_err(io)?;
        let h = Header {
            seq: 1,
            next_generation: 1,
            cursor: 0,
            size: self.geo.size,
            buckets: self.geo.buckets,
            high: 0,
        };
        f.write_all_at(&h.encode(&self.config_json), 0)
            .map_err(io)?;
        // Sparse: the index and the slots read as zeros (empty) until written.
        f.set_len(self.geo.file_len()).map_err(io)?;
        if self.opts.fsync {
            f.sync_all().map_err(io)?;
        }
        drop(f);
        failpoint("table-created");
        fs::rename(&tmp, &path).map_err(|e| self.io("rename into place", e))?;
        if self.opts.fsync {
            sync_dir(&self.dir, &self.ctx)?;
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| self.io("open", e))
    }

    /// The newer valid header copy and the offset of the other one. A copy
    /// torn by a power loss fails its checksum and the other one is used;
    /// both bad is `Corrupt`.
    fn read_header(&self, f: &File) -> Result<(Header, u64)> {
        let mut buf = vec![0u8; 2 * HEADER as usize];
        let n = read_up_to(f, &mut buf).map_err(|e| self.io("read", e))?;
        let len = f.metadata().map_err(|e| self.io("stat", e))?.len();
        let a = Header::decode(&buf[..n.min(HEADER as usize)]);
        let b = Header::decode(buf.get(HEADER as usize..n).unwrap_or_default());
        let (h, cfg, at) = match (a, b) {
            (Ok((a, _)), Ok((b, cb))) if b.seq > a.seq => (b, cb, 0),
            (Ok((a, ca)), _) => (a, ca, HEADER),
            (Err(_), Ok((b, cb))) => (b, cb, 0),
            (Err(e), Err(_)) => {
                return Err(self.corrupt(format!("both header copies are bad: {e}")))
            }
        };
        let stored: PoolConfig = serde_json::from_slice(cfg)
            .map_err(|e| self.corrupt(format!("the stored configuration does not parse: {e}")))?;
        if stored != self.config {
            return Err(config_mismatch(&self.ctx, &stored, &self.config));
        }
        if h.size != self.geo.size || h.buckets != self.geo.buckets || h.high > h.size {
            return Err(self.corrupt(format!(
                "the header says {} addresses ({} used so far) and {} buckets, the \
                 configuration {} and {}",
                h.size, h.high, h.buckets, self.geo.size, self.geo.buckets
            )));
        }
        if len < self.geo.file_len() {
            return Err(self.corrupt(format!(
                "the file is {len} bytes, shorter than its layout ({})",
                self.geo.file_len()
            )));
        }
        Ok((h, at))
    }
}

impl Locked<'_> {
    fn slot(&self, i: u32) -> Result<Slot> {
        let mut b = [0u8; SLOT as usize];
        self.file
            .read_exact_at(&mut b, self.pool.geo.slot_at(i))
            .map_err(|e| self.pool.io("read", e))?;
        self.decode_slot(i, &b)
    }

    fn decode_slot(&self, i: u32, b: &[u8]) -> Result<Slot> {
        Slot::decode(b).map_err(|why| {
            let addr = self.pool.layout.addr_at(i);
            self.pool.corrupt(format!(
                "the slot of {} (index {i}) is damaged ({why}); it is left as it is: restore \
                 the file from a backup, or, if none of the pool's containers is alive, remove \
                 the pool directory",
                addr.map(|a| a.to_string()).unwrap_or_default()
            ))
        })
    }

    fn write_slot(&self, i: u32, s: &Slot) -> Result<()> {
        self.file
            .write_all_at(&s.encode(), self.pool.geo.slot_at(i))
            .map_err(|e| self.pool.io("write", e))
    }

    fn bucket(&self, i: u32) -> Result<Bucket> {
        let mut b = [0u8; BUCKET as usize];
        self.file
            .read_exact_at(&mut b, self.pool.geo.bucket_at(i))
            .map_err(|e| self.pool.io("read", e))?;
        let k = Bucket::decode(&b);
        if k.slot.is_some_and(|s| s >= self.pool.geo.size) {
            return Err(self.pool.corrupt(format!(
                "index bucket {i} points past the last slot: the index is damaged; remove the \
                 pool directory if none of its containers is alive"
            )));
        }
        Ok(k)
    }

    fn write_bucket(&self, i: u32, b: Bucket) -> Result<()> {
        self.file
            .write_all_at(&b.encode(), self.pool.geo.bucket_at(i))
            .map_err(|e| self.pool.io("write", e))
    }

    /// The slot `(container_id, ifname)` holds and its bucket, if any;
    /// else the first empty bucket of its probe sequence (`Err`).
    /// Buckets whose slot does not hold their owner (left by a crash
    /// between writing the bucket and the slot) are passed over.
    fn find_owner(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<std::result::Result<(u32, u32, Slot), u32>> {
        let hash = owner_hash(container_id, ifname);
        let mut i = self.pool.geo.home(hash);
        for _ in 0..self.pool.geo.buckets {
            let b = self.bucket(i)?;
            let Some(s) = b.slot else { return Ok(Err(i)) };
            if b.hash == hash {
                let slot = self.slot(s)?;
                if slot.holds(container_id, ifname) {
                    return Ok(Ok((i, s, slot)));
                }
            }
            i = self.pool.geo.next(i);
        }
        Err(self.pool.corrupt(
            "the owner index has no empty bucket (it is never more than half full): damaged",
        ))
    }

    /// Remove bucket `i` by shifting later entries of its cluster back
    /// (no tombstones). Each step writes the entry's copy before its old
    /// place is reused, so a crash anywhere leaves every entry findable
    /// (at worst twice).
    fn remove_bucket(&self, mut i: u32) -> Result<()> {
        let geo = self.pool.geo;
        let mut j = i;
        loop {
            j = geo.next(j);
            let b = self.bucket(j)?;
            if b.slot.is_none() {
                break;
            }
            let k = geo.home(b.hash);
            // Can the entry at j move to i? Only if its home is not
            // cyclically within (i, j].
            let stays = if i <= j {
                i < k && k <= j
            } else {
                i < k || k <= j
            };
            if !stays {
                self.write_bucket(i, b)?;
                i = j;
            }
        }
        self.write_bucket(i, Bucket::EMPTY)
    }

    /// The first index at or after `from` (wrapping) whose slot is free:
    /// reads 16 slots (4 KiB) at a time, so a pool handed out round-robin
    /// costs one read.
    fn free_from(&self, from: u32) -> Result<Option<(u32, Slot)>> {
        let geo = self.pool.geo;
        let size = geo.size;
        let from = if from >= size { 0 } else { from };
        const CHUNK: u32 = (HEADER / SLOT) as u32;
        let mut buf = vec![0u8; (CHUNK as u64 * SLOT) as usize];
        let mut i = from;
        let mut seen = 0u32;
        while seen < size {
            let n = CHUNK.min(size - i).min(size - seen);
            let bytes = &mut buf[..(u64::from(n) * SLOT) as usize];
            self.file
                .read_exact_at(bytes, geo.slot_at(i))
                .map_err(|e| self.pool.io("read", e))?;
            for k in 0..n {
                let idx = i + k;
                if self.pool.layout.is_excluded(idx) {
                    continue;
                }
                let at = (u64::from(k) * SLOT) as usize;
                let s = self.decode_slot(idx, &bytes[at..at + SLOT as usize])?;
                if !matches!(s, Slot::Used { .. }) {
                    return Ok(Some((idx, s)));
                }
            }
            seen += n;
            i = if i + n >= size { 0 } else { i + n };
        }
        Ok(None)
    }

    /// Hand slot `idx` to the owner: header (generation and cursor), index
    /// bucket `bucket`, slot, in this order, then one `fdatasync`. A crash
    /// after any of these writes leaves a state every reader takes right:
    /// a generation skipped, a bucket whose slot is not its owner's
    /// (passed over), or the whole allocation.
    fn take(
        &mut self,
        idx: u32,
        prev: &Slot,
        bucket: u32,
        container_id: &str,
        ifname: &str,
    ) -> Result<Allocation> {
        let generation = self.header.next_generation.max(prev.generation() + 1);
        let size = self.pool.geo.size;
        self.write_header(Header {
            next_generation: generation + 1,
            cursor: if idx + 1 >= size { 0 } else { idx + 1 },
            high: self.header.high.max(idx + 1),
            ..self.header
        })?;
        failpoint("table-header-written");
        self.write_bucket(
            bucket,
            Bucket {
                slot: Some(idx),
                hash: owner_hash(container_id, ifname),
            },
        )?;
        failpoint("table-bucket-written");
        self.write_slot(
            idx,
            &Slot::Used {
                generation,
                container_id: container_id.into(),
                ifname: ifname.into(),
            },
        )?;
        failpoint("table-slot-written");
        self.sync()?;
        failpoint("table-synced");
        Ok(self.pool.allocation(idx, container_id, ifname, generation))
    }

    /// Free slot `idx` (keeping its generation), then drop its bucket,
    /// then `fdatasync`. A crash in between leaves a bucket whose slot is
    /// no longer its owner's: passed over.
    fn free(&self, idx: u32, generation: u64, bucket: Option<u32>) -> Result<()> {
        self.write_slot(idx, &Slot::Released { generation })?;
        failpoint("table-slot-released");
        if let Some(b) = bucket {
            self.remove_bucket(b)?;
        }
        failpoint("table-bucket-removed");
        self.sync()
    }

    fn write_header(&mut self, h: Header) -> Result<()> {
        let h = Header {
            seq: self.header.seq + 1,
            ..h
        };
        self.file
            .write_all_at(&h.encode(&self.pool.config_json), self.write_at)
            .map_err(|e| self.pool.io("write", e))?;
        self.header = h;
        self.write_at = if self.write_at == 0 { HEADER } else { 0 };
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        if self.pool.opts.fsync {
            self.file
                .sync_data()
                .map_err(|e| self.pool.io("fdatasync", e))?;
        }
        Ok(())
    }

    /// Every held slot, in index order. Reads only the parts of the file
    /// that were ever written (`SEEK_DATA`), so a large, sparse pool lists
    /// in the time of what it holds.
    fn all(&self) -> Result<Vec<(u32, Slot)>> {
        let geo = self.pool.geo;
        let (start, mut end) = (geo.slots_at(), geo.file_len());
        let mut out = Vec::new();
        let mut pos = start;
        let mut buf = vec![0u8; 64 * 1024];
        while pos < end {
            let data = match seek(self.file, pos, nix::unistd::Whence::SeekData) {
                Ok(d) if d >= end => break,
                Ok(d) => d.max(pos),
                // Nothing written past `pos`.
                Err(nix::errno::Errno::ENXIO) => break,
                // A file system without SEEK_DATA: read up to the highest
                // slot handed out. (A header copy rolled back by a power
                // loss may hide the one slot written in its last step;
                // where SEEK_DATA works, the whole file is looked at.)
                Err(_) => {
                    end = end.min(geo.slot_at(self.header.high));
                    if pos >= end {
                        break;
                    }
                    pos
                }
            };
            let hole = seek(self.file, data, nix::unistd::Whence::SeekHole)
                .unwrap_or(end)
                .min(end)
                .max(data + 1);
            // Whole slots covering [data, hole).
            let first = ((data - start) / SLOT) as u32;
            let last = (hole - start).div_ceil(SLOT).min(u64::from(geo.size)) as u32;
            let mut i = first;
            while i < last {
                let n = (last - i).min((buf.len() as u64 / SLOT) as u32);
                let bytes = &mut buf[..(u64::from(n) * SLOT) as usize];
                self.file
                    .read_exact_at(bytes, geo.slot_at(i))
                    .map_err(|e| self.pool.io("read", e))?;
                for k in 0..n {
                    let at = (u64::from(k) * SLOT) as usize;
                    let s = self.decode_slot(i + k, &bytes[at..at + SLOT as usize])?;
                    if matches!(s, Slot::Used { .. }) {
                        out.push((i + k, s));
                    }
                }
                i += n;
            }
            pos = geo.slot_at(last);
        }
        Ok(out)
    }

    fn release_owner(&self, container_id: &str, ifname: &str) -> Result<Option<Allocation>> {
        let Ok((b, idx, slot)) = self.find_owner(container_id, ifname)? else {
            return Ok(None);
        };
        let generation = slot.generation();
        self.free(idx, generation, Some(b))?;
        Ok(Some(self.pool.allocation(
            idx,
            container_id,
            ifname,
            generation,
        )))
    }
}

/// `lseek` with `SEEK_DATA`/`SEEK_HOLE`: `ENXIO` when there is no data
/// past `pos`, another error where the file system does not support it.
fn seek(f: &File, pos: u64, whence: nix::unistd::Whence) -> nix::Result<u64> {
    use std::os::fd::AsRawFd;
    let off = i64::try_from(pos).map_err(|_| nix::errno::Errno::EINVAL)?;
    let o = nix::unistd::lseek(f.as_raw_fd(), off, whence)?;
    u64::try_from(o).map_err(|_| nix::errno::Errno::EINVAL)
}

fn read_up_to(f: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl FilePool {
    fn allocation(
        &self,
        idx: u32,
        container_id: &str,
        ifname: &str,
        generation: u64,
    ) -> Allocation {
        Allocation {
            addr: self
                .layout
                .addr_at(idx)
                .unwrap_or(self.config.subnet.network()),
            prefix_len: self.config.subnet.prefix_len(),
            container_id: container_id.into(),
            ifname: ifname.into(),
            generation,
        }
    }

    fn check_lengths(&self, container_id: &str, ifname: &str) -> Result<()> {
        check_owner(&self.config, container_id, ifname)?;
        if container_id.len() > MAX_CONTAINER_ID || ifname.len() > MAX_IFNAME {
            return Err(Error::invalid(
                self.config.ctx(),
                format!(
                    "the file store keeps container ids of at most {MAX_CONTAINER_ID} bytes and \
                     interface names of at most {MAX_IFNAME} (got {} and {})",
                    container_id.len(),
                    ifname.len()
                ),
            ));
        }
        Ok(())
    }
}

impl PoolStore for FilePool {
    fn config(&self) -> &PoolConfig {
        &self.config
    }

    fn allocate(&mut self, container_id: &str, ifname: &str) -> Result<Allocation> {
        self.allocate_tracked(container_id, ifname).map(|(a, _)| a)
    }

    fn allocate_tracked(&mut self, container_id: &str, ifname: &str) -> Result<(Allocation, bool)> {
        self.check_lengths(container_id, ifname)?;
        self.with_lock(|l| {
            let bucket = match l.find_owner(container_id, ifname)? {
                Ok((_, idx, slot)) => {
                    let a = l
                        .pool
                        .allocation(idx, container_id, ifname, slot.generation());
                    return Ok((a, false));
                }
                Err(b) => b,
            };
            let Some((idx, prev)) = l.free_from(l.header.cursor)? else {
                return Err(Error::Exhausted {
                    context: l.pool.config.ctx(),
                    reason: format!(
                        "all {} addresses are allocated",
                        l.pool.layout.size() - l.pool.layout.excluded_count()
                    ),
                });
            };
            Ok((l.take(idx, &prev, bucket, container_id, ifname)?, true))
        })
    }

    fn allocate_addr(
        &mut self,
        container_id: &str,
        ifname: &str,
        addr: IpAddr,
    ) -> Result<Allocation> {
        self.check_lengths(container_id, ifname)?;
        let ctx = self.config.ctx();
        let idx = self.layout.allocatable(addr, &ctx)?;
        self.with_lock(|l| {
            let bucket = match l.find_owner(container_id, ifname)? {
                Ok((_, i, slot)) if i == idx => {
                    return Ok(l
                        .pool
                        .allocation(idx, container_id, ifname, slot.generation()))
                }
                Ok((_, i, _)) => {
                    let held = l.pool.layout.addr_at(i).map(|a| a.to_string());
                    return Err(Error::Conflict {
                        context: ctx,
                        reason: format!(
                            "{container_id}/{ifname} already holds {}, not {addr}",
                            held.unwrap_or_default()
                        ),
                    });
                }
                Err(b) => b,
            };
            let prev = l.slot(idx)?;
            if let Slot::Used {
                container_id: c,
                ifname: i,
                ..
            } = &prev
            {
                return Err(Error::Conflict {
                    context: ctx,
                    reason: format!("{addr} is held by {c}/{i}"),
                });
            }
            l.take(idx, &prev, bucket, container_id, ifname)
        })
    }

    fn release(&mut self, container_id: &str, ifname: &str) -> Result<Option<Allocation>> {
        if container_id.len() > MAX_CONTAINER_ID || ifname.len() > MAX_IFNAME {
            return Ok(None); // could never have been allocated here
        }
        self.with_lock(|l| l.release_owner(container_id, ifname))
    }

    fn release_generation(&mut self, addr: IpAddr, generation: u64) -> Result<Option<Allocation>> {
        let Some(idx) = self.layout.index_of(addr) else {
            return Ok(None);
        };
        self.with_lock(|l| {
            let Slot::Used {
                generation: g,
                container_id,
                ifname,
            } = l.slot(idx)?
            else {
                return Ok(None);
            };
            if g != generation {
                return Err(Error::Conflict {
                    context: l.pool.config.ctx(),
                    reason: format!(
                        "{addr} now belongs to {container_id}/{ifname} (generation {g}, not {generation})"
                    ),
                });
            }
            let bucket = match l.find_owner(&container_id, &ifname)? {
                Ok((b, i, _)) if i == idx => Some(b),
                _ => None,
            };
            l.free(idx, g, bucket)?;
            Ok(Some(l.pool.allocation(idx, &container_id, &ifname, g)))
        })
    }

    fn list(&mut self) -> Result<Vec<Allocation>> {
        self.with_lock(|l| {
            Ok(l.all()?
                .into_iter()
                .filter_map(|(i, s)| match s {
                    Slot::Used {
                        generation,
                        container_id,
                        ifname,
                    } => Some(l.pool.allocation(i, &container_id, &ifname, generation)),
                    _ => None,
                })
                .collect())
        })
    }

    fn gc(&mut self, alive: &HashSet<String>) -> Result<Vec<Allocation>> {
        self.with_lock(|l| {
            let mut out = Vec::new();
            for (_, s) in l.all()? {
                if let Slot::Used {
                    container_id,
                    ifname,
                    ..
                } = s
                {
                    if !alive.contains(&container_id) {
                        out.extend(l.release_owner(&container_id, &ifname)?);
                    }
                }
            }
            out.sort_by_key(|a| crate::ipam::addr_to_u128(a.addr));
            Ok(out)
        })
    }
}

/// See [`crate::ipam::fuzz::pool_file`]: header copies, buckets and slots
/// decode without panicking, and what decodes encodes back to itself.
pub(crate) fn fuzz_pool_file(data: &[u8]) {
    for at in [0usize, HEADER as usize] {
        if let Some(b) = data.get(at..) {
            if let Ok((h, cfg)) = Header::decode(b) {
                let again = h.encode(cfg);
                assert_eq!(
                    Header::decode(&again).map(|(h2, c2)| (h2, c2.to_vec())),
                    Ok((h, cfg.to_vec()))
                );
            }
        }
    }
    for chunk in data.chunks_exact(SLOT as usize) {
        if let Ok(s) = Slot::decode(chunk) {
            assert_eq!(Slot::decode(&s.encode()), Ok(s));
        }
    }
    for chunk in data.chunks_exact(BUCKET as usize) {
        let b = Bucket::decode(chunk.try_into().unwrap_or(&[0; BUCKET as usize]));
        if b.slot.is_some_and(|s| s < u32::MAX - 1) {
            assert_eq!(Bucket::decode(&b.encode()), b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_damage_is_seen() {
        let s = Slot::Used {
            generation: 7,
            container_id: "c".repeat(MAX_CONTAINER_ID),
            ifname: "eth0".into(),
        };
        let mut b = s.encode();
        assert_eq!(Slot::decode(&b), Ok(s));
        assert_eq!(Slot::decode(&[0; SLOT as usize]), Ok(Slot::Empty));
        b[100] ^= 1;
        assert!(Slot::decode(&b).is_err());
        let r = Slot::Released { generation: 9 };
        assert_eq!(Slot::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn header_copies_round_trip_and_damage_is_seen() {
        let h = Header {
            seq: 3,
            next_generation: 10,
            cursor: 5,
            size: 256,
            buckets: 512,
            high: 7,
        };
        let mut b = h.encode(b"{\"x\":1}");
        assert_eq!(Header::decode(&b).unwrap(), (h, &b"{\"x\":1}"[..]));
        b[30] ^= 4;
        assert!(Header::decode(&b).is_err());
    }

    #[test]
    fn the_owner_hash_is_fixed() {
        // On disk: this value must never change.
        // FNV-1a 64 of the single byte 0 (the separator).
        assert_eq!(owner_hash("", ""), 0xaf63_bd4c_8601_b7df);
        assert_ne!(owner_hash("c1", "eth0"), owner_hash("c1e", "th0"));
    }
}
