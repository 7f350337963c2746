//! Opening the namespace a person names on the command line (`--from`,
//! `--netns`, `--on`): a name under `/run/netns`, a path, or a PID, checked
//! *before* anything opens it for real.
//!
//! ```text
//! spec ─┬─ "4242"          → /proc/4242/ns/net
//!       ├─ contains '/'    → that path
//!       └─ otherwise       → /run/netns/NAME
//!            │
//!            ▼
//! stat(2): FIFO, socket, device, directory → refused, nothing opened
//!            ▼
//! open(O_RDONLY|O_NONBLOCK|O_NOCTTY|O_CLOEXEC) + fstatfs(2): not nsfs → refused
//!            ▼
//! ioctl(NS_GET_NSTYPE) = CLONE_NEWNET? (else "a mnt namespace, not …")
//!            ▼
//! cnet_core::NetNs::open / open_path
//! ```
//!
//! Why: a plain `open(2)` of a FIFO blocks until a writer appears, so
//! `--from /tmp/fifo` (or a FIFO someone left in `/run/netns`) used to hang
//! forever. `NetNs::open_path` in cnet-core still opens without
//! `O_NONBLOCK`; until it checks for itself, everything in cnet-debug that
//! opens a namespace goes through here. The check and the real open are two
//! opens of the same path: a file swapped for a FIFO between them is the
//! one case left to cnet-core.

use std::fs::OpenOptions;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use cnet_core::{Error, NetNs, Result};

/// What a person may give: a PID, a path, or a name under `/run/netns`.
const EXPECTED: &str =
    "give a name under /run/netns, a path such as /proc/PID/ns/net (or a bind mount of one), or a PID";

/// Open the namespace `spec` names: all digits → that process's namespace,
/// containing `/` → a path, otherwise a name under `/run/netns`. Whatever
/// is not a network namespace file is refused with
/// [`Error::InvalidArgument`] (a missing one with [`Error::NotFound`])
/// without blocking.
pub fn open(spec: &str) -> Result<NetNs> {
    if spec.is_empty() {
        return Err(Error::invalid("namespace \"\"", EXPECTED));
    }
    if spec.chars().all(|c| c.is_ascii_digit()) {
        let pid: u32 = spec
            .parse()
            .map_err(|_| Error::invalid(format!("pid {spec}"), "not a process id"))?;
        let path = format!("/proc/{pid}/ns/net");
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(Error::NotFound {
                context: format!("process {pid}"),
                kernel: None,
            });
        }
        check(Path::new(&path))?;
        NetNs::open_pid(pid)
    } else if spec.contains('/') {
        open_path(Path::new(spec))
    } else {
        open_name(spec)
    }
}

/// Open `/run/netns/NAME` after checking it is a network namespace.
pub fn open_name(name: &str) -> Result<NetNs> {
    cnet_core::netns::validate_name(name)?;
    check(&Path::new(cnet_core::netns::NETNS_RUN_DIR).join(name)).map_err(|e| match e {
        Error::NotFound { .. } => Error::NotFound {
            context: format!(
                "namespace {name} (no {}/{name})",
                cnet_core::netns::NETNS_RUN_DIR
            ),
            kernel: None,
        },
        e => e,
    })?;
    NetNs::open(name)
}

/// Open a namespace by path after checking it is a network namespace file.
pub fn open_path(path: &Path) -> Result<NetNs> {
    check(path)?;
    NetNs::open_path(path)
}

/// Check, without blocking, that `path` is a network namespace file (an
/// nsfs inode of type `net`): what it is otherwise is named in the error.
pub fn check(path: &Path) -> Result<()> {
    let ctx = || format!("namespace file {}", path.display());
    let refuse = |what: &str| {
        Error::invalid(
            ctx(),
            format!("{what}, not a network namespace: {EXPECTED}"),
        )
    };
    // stat(2) opens nothing: FIFOs, sockets and devices are refused
    // before an open could block or act on them.
    let meta = std::fs::metadata(path).map_err(|e| io_error(ctx(), e))?;
    let ft = meta.file_type();
    if ft.is_fifo() {
        return Err(refuse("a FIFO (named pipe)"));
    }
    if ft.is_socket() {
        return Err(refuse("a socket"));
    }
    if ft.is_char_device() || ft.is_block_device() {
        return Err(refuse("a device"));
    }
    if ft.is_dir() {
        return Err(refuse("a directory"));
    }
    // O_NONBLOCK: should the path have become a FIFO since, the open does
    // not wait for a writer; std adds O_CLOEXEC.
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| io_error(ctx(), e))?;
    let fmeta = f.metadata().map_err(|e| Error::io(ctx(), e))?;
    if !fmeta.file_type().is_file() {
        return Err(refuse("not a regular file"));
    }
    let fs = nix::sys::statfs::fstatfs(&f).map_err(|e| Error::io(ctx(), e.into()))?;
    if fs.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        let what = if fmeta.len() == 0 && path.starts_with(cnet_core::netns::NETNS_RUN_DIR) {
            "an empty file (a namespace whose creation did not finish, or was killed)"
        } else {
            "a regular file"
        };
        return Err(refuse(what));
    }
    match cnet_core::netns::ns_type(f.as_fd()) {
        libc::CLONE_NEWNET => Ok(()),
        t => Err(refuse(&format!("a {} namespace", ns_kind(t)))),
    }
}

fn ns_kind(t: libc::c_int) -> String {
    match t {
        libc::CLONE_NEWNS => "mnt".into(),
        libc::CLONE_NEWUTS => "uts".into(),
        libc::CLONE_NEWIPC => "ipc".into(),
        libc::CLONE_NEWUSER => "user".into(),
        libc::CLONE_NEWPID => "pid".into(),
        libc::CLONE_NEWCGROUP => "cgroup".into(),
        0x80 => "time".into(), // CLONE_NEWTIME
        t => format!("other (type {t:#x})"),
    }
}

fn io_error(context: String, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            context,
            kernel: None,
        },
        std::io::ErrorKind::PermissionDenied => Error::PermissionDenied {
            context,
            kernel: None,
        },
        _ => Error::io(context, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(r: Result<()>) -> String {
        match r {
            Err(Error::InvalidArgument { reason, .. }) => reason,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn refuses_what_is_not_a_network_namespace() {
        let dir = std::env::temp_dir().join(format!("cnet-nsfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, b"x").unwrap();

        assert!(reason(check(&fifo)).starts_with("a FIFO"));
        assert!(reason(check(&file)).starts_with("a regular file"));
        assert!(reason(check(&dir)).starts_with("a directory"));
        assert!(reason(check(Path::new("/dev/null"))).starts_with("a device"));
        assert!(matches!(
            check(&dir.join("missing")),
            Err(Error::NotFound { .. })
        ));
        // Another kind of namespace: nsfs, but not net.
        assert!(reason(check(Path::new("/proc/self/ns/mnt"))).starts_with("a mnt namespace"));
        // The real thing.
        check(Path::new("/proc/self/ns/net")).unwrap();
        assert!(open("/proc/self/ns/net").is_ok());
        assert!(open(&std::process::id().to_string()).is_ok());
        assert!(matches!(open("4294967295"), Err(Error::NotFound { .. })));
        assert!(matches!(open(""), Err(Error::InvalidArgument { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
