//! Address pools in a [`FileStore`](super::FileStore): snapshot + journal,
//! kept in step by every process that has the pool open (see the
//! [store's docs](super) for the layout and the crash argument).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::net::IpAddr;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::journal::{encode_records, parse_records, Header, Record};
use super::{config_mismatch, failpoint, frame, unframe, write_atomic, FileOptions};
use crate::ipam::{AddressPool, Allocation, PoolConfig, PoolStore};
use crate::{Error, Result};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub epoch: u64,
    /// Sequence number of the first record of `journal.<epoch>`.
    pub next_seq: u64,
    pub config: PoolConfig,
    pub cursor: u32,
    pub next_generation: u64,
    pub allocations: Vec<Allocation>,
}

/// Which file `snapshot` was when we loaded it. Compaction replaces it by
/// `rename`, so a new inode (or, should the inode number be recycled, a new
/// change time) means another process compacted: reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
    size: u64,
}

impl FileId {
    fn of(m: &fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
            size: m.size(),
        }
    }
}

/// An address pool in a [`FileStore`](super::FileStore): an in-memory
/// [`AddressPool`] kept in step with the on-disk snapshot + journal (see
/// the [module docs](super)).
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
    /// The snapshot we loaded.
    snap_id: Option<FileId>,
    epoch: u64,
    /// Journal bytes already applied to `pool` (the header included).
    offset: u64,
    /// Sequence number of the next record.
    next_seq: u64,
    /// Sequence number of the current journal's first record (its header's
    /// `start`): the journal holds `next_seq - journal_start` records.
    journal_start: u64,
    /// After a failed compaction, do not try again before the journal holds
    /// this many records.
    compact_retry_at: u64,
}

impl FilePool {
    pub(super) fn new(
        dir: PathBuf,
        opts: FileOptions,
        config: PoolConfig,
        ctx: String,
    ) -> Result<FilePool> {
        let pool = AddressPool::new(config.clone())?;
        let mut p = FilePool {
            dir,
            opts,
            config,
            ctx,
            pool,
            journal: None,
            snap_id: None,
            epoch: 0,
            offset: 0,
            next_seq: 0,
            journal_start: 0,
            compact_retry_at: 0,
        };
        p.locked(|_| Ok(((), Vec::new())))?;
        Ok(p)
    }

    fn corrupt(&self, what: &Path, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            context: format!("{}: {}", self.ctx, what.display()),
            reason: reason.into(),
        }
    }

    fn journal_path(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("journal.{epoch}"))
    }

    /// Under the lock: bring `pool` up to date, run `op`, append the
    /// records it returns, maybe compact.
    fn locked<T>(
        &mut self,
        op: impl FnOnce(&mut AddressPool) -> Result<(T, Vec<Record>)>,
    ) -> Result<T> {
        let ctx = self.ctx.clone();
        let _g = super::lock(&self.dir.join("lock"), &ctx)?;
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
            // Memory is ahead of disk now: reload before the next operation
            // (which also cuts whatever part of the append reached the disk).
            self.journal = None;
            return Err(e);
        }
        // The records are durable and acknowledged from here on: a failed
        // compaction must not turn this into an error (the caller would
        // think the address was not taken, and it would leak). The state on
        // disk is consistent at every step of a compaction; the next
        // `refresh` sees whichever snapshot is in place.
        let threshold = self.opts.compact_after.max(2 * self.pool.len() as u64);
        let records = self.journal_records();
        if records >= threshold.max(self.compact_retry_at) && self.compact().is_err() {
            self.compact_retry_at = records + threshold;
        }
        Ok(out)
    }

    /// Make `pool` match the disk: a full load when another process
    /// compacted (the snapshot is another file now) or nothing is loaded,
    /// else only the journal bytes appended since we last looked.
    fn refresh(&mut self) -> Result<()> {
        let Some(j) = &self.journal else {
            return self.load();
        };
        let snap = self.dir.join("snapshot");
        let now = match fs::metadata(&snap) {
            Ok(m) => Some(FileId::of(&m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Error::io(
                    format!("{}: stat {}", self.ctx, snap.display()),
                    e,
                ))
            }
        };
        let unlinked = j
            .metadata()
            .map_err(|e| Error::io(format!("{}: stat journal", self.ctx), e))?
            .nlink()
            == 0;
        if now != self.snap_id || unlinked {
            self.load()
        } else {
            self.read_journal()
        }
    }

    /// Load the snapshot and replay its journal from the start.
    fn load(&mut self) -> Result<()> {
        let ctx = self.ctx.clone();
        let snap_path = self.dir.join("snapshot");
        let (data, id) = match open_read(&snap_path, &ctx)? {
            Some(x) => x,
            None => {
                self.create_pool()?;
                open_read(&snap_path, &ctx)?
                    .ok_or_else(|| self.corrupt(&snap_path, "vanished right after it was made"))?
            }
        };
        let body = unframe("pool", &data, &ctx, &snap_path)?;
        let snap: Snapshot =
            serde_json::from_slice(body).map_err(|e| self.corrupt(&snap_path, e.to_string()))?;
        if snap.config != self.config {
            return Err(config_mismatch(&ctx, &snap.config, &self.config));
        }
        if snap.epoch < self.epoch {
            return Err(self.corrupt(
                &snap_path,
                format!(
                    "the snapshot went back from epoch {} to {} (restored from a backup while in use?)",
                    self.epoch, snap.epoch
                ),
            ));
        }
        let mut pool = AddressPool::new(self.config.clone())?;
        for a in snap.allocations {
            pool.restore(a)
                .map_err(|e| self.corrupt(&snap_path, e.to_string()))?;
        }
        pool.set_cursor_state(snap.cursor, snap.next_generation);

        let jpath = self.journal_path(snap.epoch);
        let j = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&jpath)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    self.corrupt(
                        &jpath,
                        format!(
                            "the journal of snapshot epoch {} is missing: its records are lost; \
                             restore it from a backup (or, if no container of this pool is \
                             alive, remove {} to start the pool empty)",
                            snap.epoch,
                            self.dir.display()
                        ),
                    )
                } else {
                    Error::io(format!("{ctx}: open {}", jpath.display()), e)
                }
            })?;
        let header = read_header(&j, &jpath, &ctx)?;
        if header.epoch != snap.epoch || header.start != snap.next_seq {
            return Err(self.corrupt(
                &jpath,
                format!(
                    "journal header (epoch {}, starts at record {}) does not continue the \
                     snapshot (epoch {}, next record {})",
                    header.epoch, header.start, snap.epoch, snap.next_seq
                ),
            ));
        }
        self.pool = pool;
        self.epoch = snap.epoch;
        self.snap_id = Some(id);
        self.journal = Some(j);
        self.offset = Header::LEN as u64;
        self.next_seq = snap.next_seq;
        self.journal_start = snap.next_seq;
        self.read_journal()?;
        self.remove_stray_journals();
        Ok(())
    }

    /// A pool seen for the first time: journal first, then the snapshot
    /// that names it. A crash between the two leaves a journal without
    /// records and no snapshot, which the next open takes for what it is.
    /// A journal *with* records but no snapshot is never reset: `Corrupt`.
    fn create_pool(&mut self) -> Result<()> {
        let rd = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("{}: list {}", self.ctx, self.dir.display()), e))?;
        for ent in rd.flatten() {
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with("journal.") {
                continue;
            }
            let len = ent.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            if len > Header::LEN as u64 {
                return Err(self.corrupt(
                    &ent.path(),
                    format!(
                        "the pool's snapshot is missing but this journal holds records: the pool \
                         cannot be rebuilt from it and is never reset silently. Restore \
                         {}/snapshot from a backup, or, if no container of this pool is alive, \
                         remove {} to start the pool empty",
                        self.dir.display(),
                        self.dir.display()
                    ),
                ));
            }
            // Header only (or less): an interrupted creation.
            let _ = fs::remove_file(ent.path());
        }
        self.create_journal(1, 0)?;
        failpoint("create-journal-written");
        self.write_snapshot(&Snapshot {
            epoch: 1,
            next_seq: 0,
            config: self.config.clone(),
            cursor: 0,
            next_generation: 1,
            allocations: Vec::new(),
        })
    }

    /// Apply journal records from `offset` to the end; cut off a torn tail.
    fn read_journal(&mut self) -> Result<()> {
        let jpath = self.journal_path(self.epoch);
        let ctx = self.ctx.clone();
        let io = |e| Error::io(format!("{ctx}: read {}", jpath.display()), e);
        let Some(j) = self.journal.as_ref() else {
            return Ok(());
        };
        let len = j.metadata().map_err(io)?.len();
        if len == self.offset {
            return Ok(()); // nothing new: the common case, one fstat
        }
        if len < self.offset {
            return Err(self.corrupt(
                &jpath,
                format!(
                    "the journal shrank from {} to {len} bytes while open: records that were \
                     already read (and acknowledged) were removed",
                    self.offset
                ),
            ));
        }
        let header = read_header(j, &jpath, &ctx)?;
        let mut buf = vec![0u8; (len - self.offset) as usize];
        j.read_exact_at(&mut buf, self.offset).map_err(io)?;
        let parsed = parse_records(&buf, self.next_seq, header.acked)
            .map_err(|why| self.corrupt(&jpath, format!("{why} (from byte {})", self.offset)))?;
        let n = parsed.records.len() as u64;
        for (_, rec) in parsed.records {
            self.apply(rec, &jpath)?;
        }
        self.offset += parsed.consumed as u64;
        self.next_seq += n;
        if parsed.torn {
            let j = self
                .journal
                .as_ref()
                .ok_or_else(|| self.corrupt(&jpath, "not open"))?;
            j.set_len(self.offset).map_err(io)?;
            if self.opts.fsync {
                j.sync_data().map_err(io)?;
            }
        }
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

    /// Write `recs` at the end of the journal, make them durable, then
    /// advance the header's `acked` mark past them.
    fn append(&mut self, recs: &[Record]) -> Result<()> {
        let buf = encode_records(self.next_seq, recs).map_err(|why| Error::Corrupt {
            context: self.ctx.clone(),
            reason: why,
        })?;
        let path = self.journal_path(self.epoch);
        let ctx = &self.ctx;
        let j = self.journal.as_ref().ok_or_else(|| Error::Corrupt {
            context: ctx.clone(),
            reason: "journal not open".into(),
        })?;
        let io = |e| Error::io(format!("{ctx}: append to {}", path.display()), e);
        // Under the lock `offset` is the end of the file (`refresh` read or
        // cut everything after it).
        j.write_all_at(&buf, self.offset).map_err(io)?;
        failpoint("append-written");
        if self.opts.fsync {
            j.sync_data().map_err(io)?;
        }
        failpoint("append-synced");
        self.offset += buf.len() as u64;
        self.next_seq += recs.len() as u64;
        // Not synced on its own: it reaches the disk with the next append's
        // fdatasync (or writeback). Lagging is safe, see `journal`; and the
        // records are durable, so a failure here does not fail the call.
        let _ = j.write_all_at(
            Header::acked_field(self.next_seq).as_bytes(),
            Header::ACKED_AT as u64,
        );
        failpoint("append-acked");
        Ok(())
    }

    fn create_journal(&self, epoch: u64, start: u64) -> Result<()> {
        let path = self.journal_path(epoch);
        let ctx = &self.ctx;
        let io = |e| Error::io(format!("{ctx}: create {}", path.display()), e);
        let f = File::create(&path).map_err(io)?;
        let h = Header {
            epoch,
            start,
            acked: start,
        };
        f.write_all_at(h.encode().as_bytes(), 0).map_err(io)?;
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

    /// Fold the journal into a new snapshot (see the store's docs for the
    /// order). A crash at any step leaves a state that `load` reads right,
    /// and every process notices the new snapshot before its next write.
    fn compact(&mut self) -> Result<()> {
        let next = self.epoch + 1;
        self.create_journal(next, self.next_seq)?;
        failpoint("compact-journal-created");
        let (cursor, next_generation) = self.pool.cursor_state();
        self.write_snapshot(&Snapshot {
            epoch: next,
            next_seq: self.next_seq,
            config: self.config.clone(),
            cursor,
            next_generation,
            allocations: self.pool.list(),
        })?;
        failpoint("compact-snapshot-replaced");
        let old = self.journal_path(self.epoch);
        fs::remove_file(&old)
            .map_err(|e| Error::io(format!("{}: remove {}", self.ctx, old.display()), e))?;
        failpoint("compact-old-journal-removed");
        let jpath = self.journal_path(next);
        let j = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&jpath)
            .map_err(|e| Error::io(format!("{}: open {}", self.ctx, jpath.display()), e))?;
        let id = fs::metadata(self.dir.join("snapshot"))
            .map_err(|e| Error::io(format!("{}: stat snapshot", self.ctx), e))?;
        self.snap_id = Some(FileId::of(&id));
        self.journal = Some(j);
        self.epoch = next;
        self.offset = Header::LEN as u64;
        self.journal_start = self.next_seq;
        self.compact_retry_at = 0;
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
        self.next_seq - self.journal_start
    }
}

impl FilePool {
    /// Run an allocating operation under the lock; journal it only when it
    /// handed out something new (asking again is idempotent and writes
    /// nothing).
    fn allocate_with(
        &mut self,
        container_id: &str,
        ifname: &str,
        op: impl FnOnce(&mut AddressPool) -> Result<Allocation>,
    ) -> Result<(Allocation, bool)> {
        self.locked(|p| {
            let had = p.get(container_id, ifname).is_some();
            let a = op(p)?;
            let recs = if had {
                vec![]
            } else {
                vec![Record::Alloc(a.clone())]
            };
            Ok(((a, !had), recs))
        })
    }
}

/// Open and read a whole file, with the identity of what was read; `None`
/// if it does not exist.
fn open_read(path: &Path, ctx: &str) -> Result<Option<(Vec<u8>, FileId)>> {
    use std::io::Read;
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("{ctx}: open {}", path.display()), e)),
    };
    let io = |e| Error::io(format!("{ctx}: read {}", path.display()), e);
    let id = FileId::of(&f.metadata().map_err(io)?);
    let mut data = Vec::new();
    f.read_to_end(&mut data).map_err(io)?;
    Ok(Some((data, id)))
}

fn read_header(j: &File, path: &Path, ctx: &str) -> Result<Header> {
    let mut buf = [0u8; Header::LEN];
    let n = read_up_to(j, &mut buf)
        .map_err(|e| Error::io(format!("{ctx}: read {}", path.display()), e))?;
    Header::parse(&buf[..n]).map_err(|why| Error::Corrupt {
        context: format!("{ctx}: {}", path.display()),
        reason: why,
    })
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

impl PoolStore for FilePool {
    fn config(&self) -> &PoolConfig {
        &self.config
    }

    fn allocate(&mut self, container_id: &str, ifname: &str) -> Result<Allocation> {
        self.allocate_tracked(container_id, ifname).map(|(a, _)| a)
    }

    fn allocate_tracked(&mut self, container_id: &str, ifname: &str) -> Result<(Allocation, bool)> {
        self.allocate_with(container_id, ifname, |p| p.allocate(container_id, ifname))
    }

    fn allocate_addr(
        &mut self,
        container_id: &str,
        ifname: &str,
        addr: IpAddr,
    ) -> Result<Allocation> {
        self.allocate_with(container_id, ifname, |p| {
            p.allocate_addr(container_id, ifname, addr)
        })
        .map(|(a, _)| a)
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
