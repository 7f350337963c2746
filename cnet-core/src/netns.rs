//! Network namespaces, compatible with `ip netns`.
//!
//! Named namespaces live as bind mounts under `/run/netns/NAME`, exactly
//! where `ip netns add` puts them, so `ip netns list` and `ip -n NAME` see
//! ours and we see theirs.
//!
//! The calling thread never changes namespace: work that must happen inside
//! one (opening a netlink socket, creating the namespace, touching its
//! `/proc/sys/net`) runs on a short-lived thread that enters it with
//! `setns(2)` and exits. That is what makes the library safe to call from Go,
//! whose goroutines hop between OS threads.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{Error, Result};

/// Where `ip netns` keeps named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

static RUN_DIR_LOCK: Mutex<()> = Mutex::new(());

/// An open network namespace (a file descriptor to it), cheap to clone.
#[derive(Debug, Clone)]
pub struct NetNs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    fd: OwnedFd,
    name: Option<String>,
    path: PathBuf,
}

/// Check a namespace name the way `ip netns` would accept it.
pub fn validate_name(name: &str) -> Result<()> {
    let ctx = || format!("namespace name {name:?}");
    if name.is_empty() {
        return Err(Error::invalid(ctx(), "must not be empty"));
    }
    if name.len() > 255 {
        return Err(Error::invalid(ctx(), "longer than 255 bytes"));
    }
    if name == "." || name == ".." || name.contains('/') {
        return Err(Error::invalid(
            ctx(),
            "must not contain '/' or be '.' or '..'",
        ));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(ctx(), "must not contain whitespace"));
    }
    Ok(())
}

impl NetNs {
    /// Create a named namespace, like `ip netns add NAME`. Fails with
    /// `AlreadyExists` if the name is taken.
    pub fn create(name: &str) -> Result<NetNs> {
        validate_name(name)?;
        let ctx = || format!("create namespace {name}");
        let path = Path::new(NETNS_RUN_DIR).join(name);
        prepare_run_dir().map_err(|e| e.with_context(ctx()))?;
        // O_EXCL: the name is ours or it is someone else's.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists {
                    context: ctx(),
                    kernel: None,
                })
            }
            Err(e) => return Err(Error::io(ctx(), e)),
        }
        let target = path.clone();
        let made = std::thread::spawn(move || -> std::io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(
                Some(Path::new("/proc/thread-self/ns/net")),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        })
        .join()
        .map_err(|_| Error::Protocol {
            context: ctx(),
            reason: "namespace thread panicked".into(),
        })?;
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(io_to_error(ctx(), e));
        }
        Self::open_path_named(&path, Some(name.to_string())).inspect_err(|_| {
            let _ = umount2(&path, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&path);
        })
    }

    /// Open a named namespace (`/run/netns/NAME`).
    pub fn open(name: &str) -> Result<NetNs> {
        validate_name(name)?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        Self::open_path_named(&path, Some(name.to_string()))
    }

    /// Open a namespace by path: `/proc/PID/ns/net`, a bind mount, …
    pub fn open_path(path: impl AsRef<Path>) -> Result<NetNs> {
        Self::open_path_named(path.as_ref(), None)
    }

    /// Open the namespace of process `pid`.
    pub fn open_pid(pid: u32) -> Result<NetNs> {
        Self::open_path(format!("/proc/{pid}/ns/net"))
    }

    /// The process's namespace (`/proc/self/ns/net`): the same answer on
    /// every thread, so a caller whose threads move (Go) gets a stable one.
    pub fn current() -> Result<NetNs> {
        Self::open_path("/proc/self/ns/net")
    }

    fn open_path_named(path: &Path, name: Option<String>) -> Result<NetNs> {
        let ctx = match &name {
            Some(n) => format!("open namespace {n} ({})", path.display()),
            None => format!("open namespace {}", path.display()),
        };
        let fd = open_netns_file(path).map_err(|e| e.with_context(ctx))?;
        Ok(NetNs {
            inner: Arc::new(Inner {
                fd,
                name,
                path: path.to_path_buf(),
            }),
        })
    }

    /// Delete a named namespace, like `ip netns delete NAME`. Deleting one
    /// that does not exist succeeds (CNI DEL semantics); returns whether it
    /// existed.
    pub fn delete(name: &str) -> Result<bool> {
        validate_name(name)?;
        let ctx = || format!("delete namespace {name}");
        let path = Path::new(NETNS_RUN_DIR).join(name);
        if !path.exists() {
            return Ok(false);
        }
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(io_to_error(ctx(), e.into())),
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(ctx(), e)),
        }
    }

    /// Whether a named namespace exists.
    pub fn exists(name: &str) -> bool {
        validate_name(name).is_ok() && Self::open(name).is_ok()
    }

    /// Names under `/run/netns`, like `ip netns list`.
    pub fn list() -> Result<Vec<String>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(NETNS_RUN_DIR) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("list namespaces", e)),
        };
        for ent in rd.flatten() {
            if let Some(n) = ent.file_name().to_str() {
                out.push(n.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// The name, for namespaces opened by name.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A label for messages: the name, else the path.
    pub fn label(&self) -> String {
        match &self.inner.name {
            Some(n) => n.clone(),
            None => self.inner.path.display().to_string(),
        }
    }

    /// The namespace's inode number (its identity: equal inodes, same namespace).
    pub fn inode(&self) -> Result<u64> {
        let f = File::from(
            self.inner
                .fd
                .try_clone()
                .map_err(|e| Error::io("dup namespace fd", e))?,
        );
        Ok(f.metadata()
            .map_err(|e| Error::io("stat namespace", e))?
            .ino())
    }

    /// Run `f` on a short-lived thread inside this namespace and return its
    /// result. The calling thread does not change namespace.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let label = self.label();
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter_this_thread()?;
                Ok(f())
            })
            .join()
            .map_err(|_| Error::Protocol {
                context: format!("run in namespace {label}"),
                reason: "worker thread panicked".into(),
            })?
        })
    }

    /// Move the calling thread into this namespace. Only for threads that
    /// this module starts and that end after their one job.
    fn enter_this_thread(&self) -> Result<()> {
        setns(self.inner.fd.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| io_to_error(format!("enter namespace {}", self.label()), e.into()))
    }
}

impl NetNs {
    /// Open something bound to this namespace (a netlink socket): right
    /// here when it is the calling thread's own namespace — which needs no
    /// privilege, as `ip` needs none to read — else on a short-lived
    /// thread that entered it ([`NetNs::run`]). Errors name the namespace.
    pub(crate) fn open_within<T: Send>(
        &self,
        open: impl FnOnce() -> Result<T> + Send,
    ) -> Result<T> {
        if is_current(self) {
            open()
        } else {
            self.run(open)?
        }
        .map_err(|e| e.with_context(format!("namespace {}", self.label())))
    }

    /// [`NetNs::open_within`] on a thread of `scope` started now, so that
    /// the caller goes on meanwhile (attach creates the veth while the
    /// container's socket opens). The thread enters this namespace only
    /// when it is not the caller's own, opens, and ends.
    pub(crate) fn open_within_scoped<'scope, 'env, T: Send + 'scope>(
        &'env self,
        scope: &'scope std::thread::Scope<'scope, 'env>,
        open: impl FnOnce() -> Result<T> + Send + 'scope,
    ) -> std::thread::ScopedJoinHandle<'scope, Result<T>> {
        let here = is_current(self);
        scope.spawn(move || {
            if !here {
                self.enter_this_thread()?;
            }
            open().map_err(|e| e.with_context(format!("namespace {}", self.label())))
        })
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

impl AsRawFd for NetNs {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.inner.fd.as_raw_fd()
    }
}

/// Open `path` if it is a network namespace file (an nsfs inode of type
/// `net`), without blocking and without opening devices:
/// - missing, or an empty file with nothing mounted on it (the mount point
///   of a namespace that was deleted, or whose creation did not finish):
///   `NotFound` — the namespace is gone, which CNI `DEL` must accept;
/// - anything else that is not a network namespace (another kind of
///   namespace, a file with content, a directory, a FIFO, a socket, a
///   device): `InvalidArgument` saying what it is.
fn open_netns_file(path: &Path) -> Result<OwnedFd> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let not_netns = |what: &str| {
        Error::invalid(
            "",
            format!(
                "{what}, not a network namespace \
                 (give /proc/PID/ns/net, /run/netns/NAME or another bind mount of one)"
            ),
        )
    };
    // stat(2) opens nothing: a FIFO (whose open would wait for a writer),
    // a socket or a device is refused before anything acts on it.
    let meta = std::fs::metadata(path).map_err(|e| io_to_error("", e))?;
    let ft = meta.file_type();
    for (is, what) in [
        (ft.is_dir(), "a directory"),
        (ft.is_fifo(), "a FIFO (named pipe)"),
        (ft.is_socket(), "a socket"),
        (ft.is_char_device() || ft.is_block_device(), "a device"),
    ] {
        if is {
            return Err(not_netns(what));
        }
    }
    // O_NONBLOCK and O_NOCTTY: should the path have become a FIFO or a
    // terminal since the stat, the open neither waits nor adopts it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| io_to_error("", e))?;
    let meta = file.metadata().map_err(|e| Error::io("fstat", e))?;
    if !meta.file_type().is_file() {
        return Err(not_netns("not a regular file"));
    }
    let fs = nix::sys::statfs::fstatfs(&file).map_err(|e| Error::io("fstatfs", e.into()))?;
    if fs.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        if meta.len() == 0 {
            return Err(Error::NotFound {
                context: "an empty file with no namespace mounted on it \
                          (the namespace was deleted, or its creation did not finish)"
                    .into(),
                kernel: None,
            });
        }
        return Err(not_netns("a regular file"));
    }
    match ns_type(file.as_fd()) {
        libc::CLONE_NEWNET => Ok(file.into()),
        t => Err(not_netns(&format!("a {} namespace", ns_kind(t)))),
    }
}

/// The kind of namespace behind an nsfs file descriptor (`CLONE_NEW*`:
/// `CLONE_NEWNET` for a network namespace), or -1 when `fd` is no
/// namespace (`ioctl(fd, NS_GET_NSTYPE)`).
pub fn ns_type(fd: BorrowedFd<'_>) -> libc::c_int {
    // NS_GET_NSTYPE = _IO(0xb7, 0x3)
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: `fd` is open for the whole call; the ioctl takes no argument
    // and only reports the type of the namespace behind the fd.
    unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) }
}

/// A namespace type as `lsns` names it.
fn ns_kind(t: libc::c_int) -> String {
    match t {
        libc::CLONE_NEWNS => "mnt".into(),
        libc::CLONE_NEWUTS => "uts".into(),
        libc::CLONE_NEWIPC => "ipc".into(),
        libc::CLONE_NEWUSER => "user".into(),
        libc::CLONE_NEWPID => "pid".into(),
        libc::CLONE_NEWCGROUP => "cgroup".into(),
        0x80 => "time".into(), // CLONE_NEWTIME
        t => format!("unknown (type {t:#x})"),
    }
}

/// Make `/run/netns` a shared mount point, as `ip netns add` does, so that
/// namespaces mounted there propagate to other mount namespaces.
fn prepare_run_dir() -> Result<()> {
    let _g = RUN_DIR_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = Path::new(NETNS_RUN_DIR);
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create /run/netns", e))?;
    let mut bound = false;
    loop {
        match mount(
            Some("none"),
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EINVAL) if !bound => {
                mount(
                    Some(dir),
                    dir,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| io_to_error("bind-mount /run/netns", e.into()))?;
                bound = true;
            }
            Err(e) => return Err(io_to_error("make /run/netns shared", e.into())),
        }
    }
}

/// Whether `ns` is the calling thread's own network namespace (same
/// device and inode as `/proc/thread-self/ns/net`): a socket for it can be
/// opened right here, without `setns` and so without privilege.
pub(crate) fn is_current(ns: &NetNs) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(own) = std::fs::metadata("/proc/thread-self/ns/net") else {
        return false;
    };
    let Ok(f) = ns.inner.fd.try_clone().map(File::from) else {
        return false;
    };
    f.metadata()
        .is_ok_and(|m| m.ino() == own.ino() && m.dev() == own.dev())
}

pub(crate) fn io_to_error(context: impl Into<String>, e: std::io::Error) -> Error {
    use crate::error::KernelError;
    match e.raw_os_error() {
        Some(code @ (libc::ENOENT | libc::EPERM | libc::EACCES | libc::EEXIST | libc::EBUSY)) => {
            Error::from_kernel(context, KernelError::new(code, None))
        }
        _ => Error::io(context, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(r: Result<NetNs>) -> String {
        match r {
            Err(Error::InvalidArgument { reason, .. }) => reason,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    /// Needs no privilege: every path is opened, none entered.
    #[test]
    fn open_path_says_what_a_path_is_when_it_is_no_network_namespace() {
        let dir = std::env::temp_dir().join(format!("cnet-netns-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, b"x").unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();

        let r = reason(NetNs::open_path("/proc/self/ns/mnt"));
        assert!(
            r.starts_with("a mnt namespace, not a network namespace"),
            "{r}"
        );
        assert!(reason(NetNs::open_path(&file)).starts_with("a regular file"));
        assert!(reason(NetNs::open_path(&dir)).starts_with("a directory"));
        // A FIFO is refused, not opened (an open would wait for a writer).
        assert!(reason(NetNs::open_path(&fifo)).starts_with("a FIFO"));
        assert!(reason(NetNs::open_path("/dev/null")).starts_with("a device"));
        let e = NetNs::open_path(&file).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("open namespace {}: ", file.display())),
            "{e}"
        );
        // Gone: missing, or a mount point with nothing mounted on it.
        let e = NetNs::open_path(dir.join("missing")).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        let e = NetNs::open_path(&empty).unwrap_err();
        assert!(
            e.is_not_found() && e.to_string().contains("empty file"),
            "{e}"
        );
        NetNs::open_path("/proc/self/ns/net").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
