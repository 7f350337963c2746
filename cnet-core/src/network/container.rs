//! Which network namespace a container lives in: by `ip netns` name, by
//! path (`/proc/PID/ns/net`, a runtime's bind mount) or by process id.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::netns::{NetNs, NETNS_RUN_DIR};

/// A container's network namespace, as a runtime names it. Plain data: it
/// is opened by each operation that needs it (an open [`NetNs`] can be
/// given too, with [`ContainerNs::netns`]).
#[derive(Debug, Clone)]
pub struct ContainerNs {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Name(String),
    Path(PathBuf),
    Pid(u32),
    Open(NetNs),
}

impl ContainerNs {
    /// A namespace made with `ip netns add NAME` (`/run/netns/NAME`).
    pub fn name(name: &str) -> Self {
        ContainerNs {
            kind: Kind::Name(name.to_string()),
        }
    }

    /// A namespace by path: `/proc/PID/ns/net`, `/var/run/netns/cni-…`,
    /// what a runtime passes as `CNI_NETNS`.
    pub fn path(path: impl AsRef<Path>) -> Self {
        ContainerNs {
            kind: Kind::Path(path.as_ref().to_path_buf()),
        }
    }

    /// The namespace of process `pid` (`/proc/PID/ns/net`).
    pub fn pid(pid: u32) -> Self {
        ContainerNs {
            kind: Kind::Pid(pid),
        }
    }

    /// A namespace already open.
    pub fn netns(ns: &NetNs) -> Self {
        ContainerNs {
            kind: Kind::Open(ns.clone()),
        }
    }

    /// Open it. `NotFound` when the name, path or process is gone.
    pub fn open(&self) -> Result<NetNs> {
        match &self.kind {
            Kind::Name(n) => NetNs::open(n),
            Kind::Path(p) => NetNs::open_path(p),
            Kind::Pid(pid) => NetNs::open_pid(*pid),
            Kind::Open(ns) => Ok(ns.clone()),
        }
    }

    /// The path a CNI result reports as the interface's `sandbox`.
    pub fn sandbox(&self) -> PathBuf {
        match &self.kind {
            Kind::Name(n) => Path::new(NETNS_RUN_DIR).join(n),
            Kind::Path(p) => p.clone(),
            Kind::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            Kind::Open(ns) => ns.path().to_path_buf(),
        }
    }

    /// A label for messages: the name, the path, or `pid N`.
    pub fn label(&self) -> String {
        match &self.kind {
            Kind::Name(n) => n.clone(),
            Kind::Path(p) => p.display().to_string(),
            Kind::Pid(pid) => format!("pid {pid}"),
            Kind::Open(ns) => ns.label(),
        }
    }
}

impl From<&NetNs> for ContainerNs {
    fn from(ns: &NetNs) -> Self {
        ContainerNs::netns(ns)
    }
}
