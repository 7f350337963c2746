//! Node subnet leases in a [`FileStore`](super::FileStore): one small
//! framed file per cluster network, rewritten atomically on every change.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{config_mismatch, frame, lock, read_opt, unframe, write_atomic, FileOptions};
use std::os::fd::AsFd;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::ipam::{
    check_claim, LeaseDiff, LeaseEvent, LeaseStore, LeaseWatch, NodeAttrs, NodeLease,
    SubnetAllocator, SubnetConfig,
};
use crate::{Error, Result};

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
    pub(super) fn new(
        dir: PathBuf,
        opts: FileOptions,
        config: SubnetConfig,
        ctx: String,
    ) -> Result<FileLeases> {
        let leases = FileLeases {
            dir,
            opts,
            config,
            ctx,
        };
        // Create the file, or check the stored config matches.
        leases.locked(|_| Ok(false))?;
        Ok(leases)
    }

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
                    return Err(config_mismatch(ctx, &st.config, &self.config));
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
                .sort_by_key(|l| crate::ipam::addr_to_u128(l.subnet.network()));
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

/// A node's existing lease `l` with new attributes and, unless it is a
/// reservation, a new expiry.
fn refresh(l: &mut NodeLease, attrs: &NodeAttrs, ttl: Duration) -> NodeLease {
    l.attrs = attrs.clone();
    if l.expires.is_some() {
        l.expires = expiry(ttl);
    }
    l.clone()
}

/// A new lease of `subnet` for `node`, remembered as its last subnet.
fn take(
    st: &mut LeaseFile,
    node: &str,
    subnet: IpNet,
    attrs: &NodeAttrs,
    ttl: Duration,
) -> NodeLease {
    let l = NodeLease {
        node: node.to_string(),
        subnet,
        attrs: attrs.clone(),
        expires: expiry(ttl),
    };
    st.leases.push(l.clone());
    st.history.insert(node.to_string(), subnet);
    l
}

impl LeaseStore for FileLeases {
    fn config(&self) -> &SubnetConfig {
        &self.config
    }

    fn acquire(&mut self, node: &str, attrs: &NodeAttrs, ttl: Duration) -> Result<NodeLease> {
        check_node(&self.ctx, node)?;
        check_ttl(&self.ctx, ttl)?;
        let (l, _) = self.locked(|st| {
            if let Some(l) = st.leases.iter_mut().find(|l| l.node == node) {
                return Ok((refresh(l, attrs, ttl), true));
            }
            let a = self.allocator(st)?;
            let subnet = a.next_free(st.history.get(node))?;
            Ok((take(st, node, subnet, attrs, ttl), true))
        })?;
        Ok(l)
    }

    fn claim(
        &mut self,
        node: &str,
        subnet: IpNet,
        attrs: &NodeAttrs,
        ttl: Duration,
    ) -> Result<NodeLease> {
        check_node(&self.ctx, node)?;
        check_ttl(&self.ctx, ttl)?;
        let ctx = self.ctx.clone();
        let (l, _) = self.locked(|st| {
            let live: Vec<&NodeLease> = st.leases.iter().collect();
            let held = check_claim(&ctx, &self.config, &live, node, &subnet)?;
            if let Some(i) = held {
                return Ok((refresh(&mut st.leases[i], attrs, ttl), true));
            }
            Ok((take(st, node, subnet, attrs, ttl), true))
        })?;
        Ok(l)
    }

    fn renew(&mut self, node: &str, ttl: Duration) -> Result<NodeLease> {
        check_ttl(&self.ctx, ttl)?;
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

    fn watch(&mut self) -> Result<Box<dyn LeaseWatch>> {
        let ctx = format!("{}: watch", self.ctx);
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(|e| Error::io(ctx.clone(), e.into()))?;
        // The lease file is replaced by rename (IN_MOVED_TO) on every change.
        inotify
            .add_watch(
                &self.dir,
                AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_DELETE,
            )
            .map_err(|e| Error::io(format!("{ctx}: {}", self.dir.display()), e.into()))?;
        let leases = FileLeases {
            dir: self.dir.clone(),
            opts: self.opts.clone(),
            config: self.config.clone(),
            ctx: self.ctx.clone(),
        };
        let mut w = FileLeaseWatch {
            inotify,
            leases,
            next_expiry: None,
            diff: LeaseDiff::default(),
            pending: std::collections::VecDeque::new(),
            ctx,
        };
        w.learn_expiry()?;
        Ok(Box::new(w))
    }
}

/// [`LeaseWatch`] of the file store: inotify on the network's directory
/// (the lease file is replaced on every change), and a wake-up when the
/// next lease expires (an expiry changes no file).
#[derive(Debug)]
pub struct FileLeaseWatch {
    inotify: Inotify,
    leases: FileLeases,
    next_expiry: Option<SystemTime>,
    /// The file store's watch says only "changed": the events of `next`
    /// are the differences between successive lists.
    diff: LeaseDiff,
    pending: std::collections::VecDeque<LeaseEvent>,
    ctx: String,
}

impl FileLeaseWatch {
    fn learn_expiry(&mut self) -> Result<()> {
        self.next_expiry = self.leases.list()?.iter().filter_map(|l| l.expires).min();
        Ok(())
    }
}

impl LeaseWatch for FileLeaseWatch {
    fn next(&mut self, timeout: Duration) -> Result<Option<LeaseEvent>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            // The first list is the whole set; after it, a change of the
            // file (a renewal included) or an expiry lists again, and only
            // what differs is an event.
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if self.diff.is_fresh() || self.wait(left)? {
                let all = self.leases.list()?;
                self.pending.extend(self.diff.events(all));
                continue;
            }
            return Ok(None);
        }
    }

    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    fn due(&self) -> Option<std::time::Instant> {
        let left = self
            .next_expiry?
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Some(std::time::Instant::now() + left)
    }

    fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            // At least one look, even with no time left (`next(ZERO)` after
            // poll said the descriptor is readable).
            let mut left = deadline.saturating_duration_since(std::time::Instant::now());
            if let Some(exp) = self.next_expiry {
                match exp.duration_since(SystemTime::now()) {
                    Ok(d) => left = left.min(d + Duration::from_millis(1)),
                    Err(_) => {
                        // A lease ran out: the set changed.
                        self.learn_expiry()?;
                        return Ok(true);
                    }
                }
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) if std::time::Instant::now() >= deadline => return Ok(false),
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::io(self.ctx.clone(), e.into())),
            }
            let mut changed = false;
            loop {
                match self.inotify.read_events() {
                    Ok(evs) if evs.is_empty() => break,
                    Ok(evs) => {
                        changed |= evs.iter().any(|e| {
                            e.name.as_deref() == Some(std::ffi::OsStr::new("leases"))
                                || e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)
                        })
                    }
                    Err(nix::errno::Errno::EAGAIN) => break,
                    Err(e) => return Err(Error::io(self.ctx.clone(), e.into())),
                }
            }
            if changed {
                self.learn_expiry()?;
                return Ok(true);
            }
        }
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

/// A lease TTL of zero would expire before the caller could use it: refused.
pub(crate) fn check_ttl(ctx: &str, ttl: Duration) -> Result<()> {
    if ttl.is_zero() {
        return Err(Error::invalid(
            ctx.to_string(),
            "lease TTL is 0 (give how long the lease lives; a reservation, which never \
             expires, is made with reserve)",
        ));
    }
    Ok(())
}
