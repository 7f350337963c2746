//! Finding and naming namespaces the way a person recognises them.
//!
//! ```text
//! named        /run/netns/NAME                      → "NAME"
//! current      the caller's own namespace           → "(root)" if it is init's, else "(current)"
//! processes    /proc/PID/ns/net, one per inode      → "pid PID (COMM)"   (lowest PID holding it)
//!              a Docker or podman container's        → "container NAME (pid PID COMM)"
//! bind mounts  nsfs mounts in /proc/self/mountinfo  → the mount path     (Docker's /run/docker/netns/ID, …)
//! ```
//!
//! Docker and most runtimes keep their containers' namespaces out of
//! `/run/netns`: such a namespace is found through a process inside it or
//! the bind mount the runtime keeps, and labelled by whichever a person can
//! act on (`nsenter -t PID -n`). Nothing here opens a namespace that is not
//! asked for; the scan of `/proc` is a few `stat(2)` calls per process.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cnet_core::{NetNs, Result};

/// Label of the caller's own namespace, the same in `show` and `trace`:
/// `(root)` when it is the namespace of PID 1, else `(current)`.
pub fn current_label() -> String {
    let me = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).ok();
    let init = std::fs::metadata("/proc/1/ns/net").map(|m| m.ino()).ok();
    if me.is_some() && me == init {
        "(root)".into()
    } else {
        "(current)".into()
    }
}

/// The label for a namespace given as `spec` (`--from`, `--netns`): its name
/// under `/run/netns` if it has one (whatever way it was given), the
/// caller's own label if it is the caller's, else `pid N (comm)` for a PID or
/// `/proc/N/ns/net`, else the spec itself.
pub fn label_for(spec: &str, ns: &NetNs) -> String {
    let Ok(ino) = ns.inode() else {
        return spec.to_string();
    };
    for n in NetNs::list().unwrap_or_default() {
        let p = Path::new(cnet_core::netns::NETNS_RUN_DIR).join(&n);
        if std::fs::metadata(&p).is_ok_and(|m| m.ino() == ino) {
            return n;
        }
    }
    if std::fs::metadata("/proc/self/ns/net").is_ok_and(|m| m.ino() == ino) {
        return current_label();
    }
    let pid = spec
        .strip_prefix("/proc/")
        .and_then(|r| r.strip_suffix("/ns/net"))
        .unwrap_or(spec);
    match pid.parse::<u32>() {
        Ok(pid) => process_label(pid),
        Err(_) => spec.to_string(),
    }
}

/// `pid N (comm)`, or `container NAME (pid N comm)` when the process is a
/// container's whose name its runtime's state gives cheaply (see
/// [`container_name`]).
pub fn process_label(pid: u32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"));
    match (container_name(pid), comm) {
        (Some(name), Ok(c)) => format!("container {name} (pid {pid} {})", c.trim()),
        (Some(name), Err(_)) => format!("container {name} (pid {pid})"),
        (None, Ok(c)) => format!("pid {pid} ({})", c.trim()),
        (None, Err(_)) => format!("pid {pid}"),
    }
}

/// The name of the container whose process `pid` is, from its parent:
/// - Docker: a `containerd-shim… -namespace moby -id ID`, and the `Name` in
///   `DATA_ROOT/containers/ID/config.v2.json` of a running dockerd
///   (`--data-root`, default /var/lib/docker);
/// - podman: `conmon … -n NAME` (or `--name NAME`).
///
/// A few small reads under /proc and one file; `None` when any is missing.
pub fn container_name(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the last ')' (comm may hold spaces): state ppid …
    let ppid: u32 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let args = cmdline(ppid)?;
    let arg = |flags: &[&str]| {
        args.iter()
            .position(|a| flags.contains(&a.as_str()))
            .and_then(|i| args.get(i + 1).cloned())
    };
    let prog = args.first()?.rsplit('/').next()?.to_string();
    if prog == "conmon" {
        return arg(&["-n", "--name"]);
    }
    if !prog.starts_with("containerd-shim") || arg(&["-namespace"]).as_deref() != Some("moby") {
        return None;
    }
    let id = arg(&["-id"])?;
    if id.is_empty() || id.contains('/') || id.contains("..") {
        return None;
    }
    dockerd_data_roots().into_iter().find_map(|root| {
        let f = std::fs::read(root.join("containers").join(&id).join("config.v2.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&f).ok()?;
        Some(v.get("Name")?.as_str()?.trim_start_matches('/').to_string())
    })
}

/// A process's arguments.
fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// The data roots of the running dockerd processes (and the default).
fn dockerd_data_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "dockerd")
        {
            continue;
        }
        let Some(args) = cmdline(pid) else { continue };
        for (i, a) in args.iter().enumerate() {
            if let Some(v) = a.strip_prefix("--data-root=") {
                roots.push(PathBuf::from(v));
            } else if a == "--data-root" {
                if let Some(v) = args.get(i + 1) {
                    roots.push(PathBuf::from(v));
                }
            }
        }
    }
    roots.push(PathBuf::from("/var/lib/docker"));
    roots
}

/// A namespace found without a name.
#[derive(Debug, Clone)]
pub struct Unnamed {
    /// How to call it (see the module docs).
    pub label: String,
    /// Its inode.
    pub inode: u64,
    /// Where it can be opened (`/proc/PID/ns/net` or a bind mount).
    pub path: PathBuf,
}

/// Every network namespace held by a running process or an nsfs bind mount,
/// except those whose inode is in `known`; one entry per namespace.
pub fn unnamed(known: &HashSet<u64>) -> Vec<Unnamed> {
    let mut found: HashMap<u64, Unnamed> = HashMap::new();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    for pid in pids {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let Ok(m) = std::fs::metadata(&path) else {
            continue; // gone, or a kernel thread we may not look at
        };
        if known.contains(&m.ino()) || found.contains_key(&m.ino()) {
            continue;
        }
        found.insert(
            m.ino(),
            Unnamed {
                label: process_label(pid),
                inode: m.ino(),
                path,
            },
        );
    }
    for mount in nsfs_mounts() {
        let Ok(m) = std::fs::metadata(&mount) else {
            continue;
        };
        if known.contains(&m.ino()) {
            continue;
        }
        match found.get_mut(&m.ino()) {
            // Held by a process too: say both, the mount tells the runtime.
            Some(u) => {
                if !u.label.contains(" at ") && !u.label.starts_with("container ") {
                    u.label = format!("{} at {}", u.label, mount.display());
                }
            }
            None => {
                found.insert(
                    m.ino(),
                    Unnamed {
                        label: mount.display().to_string(),
                        inode: m.ino(),
                        path: mount,
                    },
                );
            }
        }
    }
    let mut v: Vec<Unnamed> = found.into_values().collect();
    v.sort_by(|a, b| a.label.cmp(&b.label));
    v
}

/// Mount points of network namespace bind mounts outside `/run/netns`
/// (which [`NetNs::list`] already covers), from `/proc/self/mountinfo`.
fn nsfs_mounts() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    parse_nsfs_mounts(&info)
        .into_iter()
        .filter(|p| {
            !p.starts_with(cnet_core::netns::NETNS_RUN_DIR) && !p.starts_with("/var/run/netns")
        })
        .collect()
}

/// The mount points of `net:[…]` nsfs entries in mountinfo text (fields:
/// id parent major:minor root mountpoint options… - fstype source …).
fn parse_nsfs_mounts(info: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.get(sep + 1) != Some(&"nsfs") || f.len() < 5 || !f[3].starts_with("net:[") {
            continue;
        }
        // Octal escapes for space, tab, newline and backslash.
        let p = f[4]
            .replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\");
        out.push(PathBuf::from(p));
    }
    out.sort();
    out.dedup();
    out
}

/// Open an unnamed namespace found by [`unnamed`].
pub fn open(u: &Unnamed) -> Result<NetNs> {
    crate::nsfile::open_path(&u.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsfs_mounts_from_mountinfo() {
        let info = "\
36 25 0:4 net:[4026532281] /run/docker/netns/1a2b3c rw shared:5 - nsfs nsfs rw
37 25 0:4 net:[4026532300] /run/netns/pod\\040a rw shared:5 - nsfs nsfs rw
38 25 0:4 mnt:[4026532301] /run/x rw - nsfs nsfs rw
39 25 0:22 / /proc rw,nosuid - proc proc rw
";
        assert_eq!(
            parse_nsfs_mounts(info),
            vec![
                PathBuf::from("/run/docker/netns/1a2b3c"),
                PathBuf::from("/run/netns/pod a")
            ]
        );
    }

    #[test]
    fn the_callers_own_namespace_has_one_label() {
        let me = NetNs::current().unwrap();
        assert_eq!(label_for("/proc/self/ns/net", &me), current_label());
        assert_eq!(
            label_for(&std::process::id().to_string(), &me),
            current_label()
        );
    }
}
