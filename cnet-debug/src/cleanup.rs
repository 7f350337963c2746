//! Runs that build throwaway namespaces (the demo today, whatever is built on
//! the container-networking layer tomorrow): names unique per run, a stop
//! flag raised by SIGINT/SIGTERM/SIGHUP, teardown on every way out, and a
//! sweep of whatever a run killed with SIGKILL left behind.
//!
//! ```text
//! Run::start("demo-")        /run/cnet/runs/4242/  (lock: flock held while the run lives;
//!                                                   prefix: "demo-"; the run's own files)
//!   run.create_ns("ul")      → namespace "demo-ul-4242", recorded before it is made
//!   stop.check()?            → Err(Stopped) once SIGINT/SIGTERM/SIGHUP arrived
//! drop(run)                  → its namespaces deleted, then its state directory
//!                              (with keep(true): the namespaces stay for a person)
//!
//! sweep("demo-")             = `cnet-debug cleanup --prefix demo-`:
//!   every namespace "demo-ROLE-PID" and state directory runs/PID whose run
//!   no longer holds its lock (killed, or finished with --keep) is removed;
//!   a live run's are left alone, whatever prefix it used.
//! ```
//!
//! Liveness is the state directory's `flock`, not the PID: the kernel drops
//! the lock when the process dies however it dies, and a reused PID holds no
//! lock. The state lives under `/run`, a tmpfs, like `/run/netns`: both go
//! away together at reboot.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cnet_core::{Error, NetNs, Result};
use nix::fcntl::{Flock, FlockArg};

/// Where runs keep their state: `RUNS_DIR/PID/{lock,prefix,…}`.
pub const RUNS_DIR: &str = "/run/cnet/runs";

/// A run's state directory.
fn state_dir(pid: u32) -> PathBuf {
    Path::new(RUNS_DIR).join(pid.to_string())
}

/// Refuse a prefix that would match too much or that no namespace name can
/// carry.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    let ctx = || format!("prefix {prefix:?}");
    if prefix.len() < 2 {
        return Err(Error::invalid(
            ctx(),
            "at least two characters (such as \"demo-\"): a shorter one would match other tools' namespaces",
        ));
    }
    if prefix.contains('/') || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            ctx(),
            "must not contain '/' or whitespace (it starts namespace names)",
        ));
    }
    Ok(())
}

/// One run: the namespaces it made and its state directory, removed when
/// it is dropped (on success, on error, and after a stop signal).
#[derive(Debug)]
pub struct Run {
    prefix: String,
    pid: u32,
    dir: PathBuf,
    created: Vec<String>,
    keep: bool,
    // Held for the run's lifetime; released (by drop, or by the kernel when
    // the process dies) only after the namespaces are gone.
    lock: Option<Flock<File>>,
}

impl Run {
    /// Start a run whose namespaces are named `PREFIX ROLE - PID`: make its
    /// state directory and take its lock.
    pub fn start(prefix: &str) -> Result<Run> {
        validate_prefix(prefix)?;
        let pid = std::process::id();
        let dir = state_dir(pid);
        let ctx = || format!("run state {}", dir.display());
        // A directory left by a killed process that had our PID: its lock
        // is free, so it is stale.
        if dir.exists() {
            if lock_held(&dir) {
                return Err(Error::Conflict {
                    context: ctx(),
                    reason: "another run of this process is active".into(),
                });
            }
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(ctx(), e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(ctx(), e))?;
        let file = File::create(dir.join("lock")).map_err(|e| Error::io(ctx(), e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| Error::io(ctx(), e.into()))?;
        std::fs::write(dir.join("prefix"), prefix).map_err(|e| Error::io(ctx(), e))?;
        Ok(Run {
            prefix: prefix.to_string(),
            pid,
            dir,
            created: Vec::new(),
            keep: false,
            lock: Some(lock),
        })
    }

    /// The namespace name for `role` in this run: `PREFIX ROLE - PID`.
    pub fn name(&self, role: &str) -> String {
        format!("{}{role}-{}", self.prefix, self.pid)
    }

    /// Create the namespace for `role` (like `ip netns add`), recorded
    /// first so that a half-made one is removed too.
    pub fn create_ns(&mut self, role: &str) -> Result<NetNs> {
        if role.is_empty() {
            return Err(Error::invalid("namespace role", "must not be empty"));
        }
        let name = self.name(role);
        self.created.push(name.clone());
        NetNs::create(&name)
    }

    /// The run's own directory, for its files (removed with the run).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The names of the namespaces this run made.
    pub fn namespaces(&self) -> &[String] {
        &self.created
    }

    /// Leave the namespaces in place at the end (for a person to explore;
    /// `cnet-debug cleanup --prefix PREFIX` removes them later).
    pub fn keep(&mut self, keep: bool) {
        self.keep = keep;
    }

    /// Remove what the run made (its namespaces unless kept, then its state
    /// directory); keeps going past failures and returns them.
    pub fn teardown(&mut self) -> Vec<Error> {
        let mut errors = Vec::new();
        if !self.keep {
            for n in self.created.drain(..) {
                if let Err(e) = NetNs::delete(&n) {
                    errors.push(e);
                }
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                errors.push(Error::io(format!("remove {}", self.dir.display()), e));
            }
        }
        self.lock = None;
        errors
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.lock.is_some() {
            for e in self.teardown() {
                let _ = std::io::Write::write_fmt(
                    &mut std::io::stderr(),
                    format_args!("cleanup: {e}\n"),
                );
            }
        }
    }
}

/// Whether the run owning state directory `dir` is alive (holds its lock).
fn lock_held(dir: &Path) -> bool {
    let Ok(f) = File::open(dir.join("lock")) else {
        return false;
    };
    match Flock::lock(f, FlockArg::LockSharedNonblock) {
        Ok(_) => false,
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// A stop signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// The signal number (SIGINT 2, SIGTERM 15, SIGHUP 1).
    pub signal: i32,
}

impl Stopped {
    /// The conventional exit status: 128 + signal.
    pub fn exit_code(self) -> u8 {
        u8::try_from(128 + self.signal).unwrap_or(1)
    }
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.signal {
            libc::SIGINT => "SIGINT".to_string(),
            libc::SIGTERM => "SIGTERM".to_string(),
            libc::SIGHUP => "SIGHUP".to_string(),
            n => format!("signal {n}"),
        };
        write!(f, "stopped by {name}")
    }
}

impl std::error::Error for Stopped {}

/// A flag raised by SIGINT, SIGTERM or SIGHUP, checked by a run between
/// its steps. The handler only stores to an atomic (async-signal-safe, via
/// `signal-hook`); a second signal ends the process at once (128 + signal),
/// leaving the leftovers to [`sweep`].
#[derive(Debug, Clone)]
pub struct Stop {
    signal: Arc<AtomicUsize>,
}

impl Stop {
    /// Install the handlers (once per process is enough; more is harmless).
    pub fn install() -> Result<Stop> {
        let signal = Arc::new(AtomicUsize::new(0));
        let armed = Arc::new(AtomicBool::new(false));
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            let ctx = || format!("install a handler for signal {sig}");
            // Order matters: the exit is checked before this signal arms it.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, armed.clone())
                .map_err(|e| Error::io(ctx(), e))?;
            signal_hook::flag::register(sig, armed.clone()).map_err(|e| Error::io(ctx(), e))?;
            signal_hook::flag::register_usize(sig, signal.clone(), sig as usize)
                .map_err(|e| Error::io(ctx(), e))?;
        }
        Ok(Stop { signal })
    }

    /// The signal that asked us to stop, if any.
    pub fn requested(&self) -> Option<Stopped> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            s => Some(Stopped {
                signal: i32::try_from(s).unwrap_or(libc::SIGTERM),
            }),
        }
    }

    /// `Err(Stopped)` once a stop signal arrived.
    pub fn check(&self) -> std::result::Result<(), Stopped> {
        match self.requested() {
            Some(s) => Err(s),
            None => Ok(()),
        }
    }

    /// Sleep for `d`, or until a stop signal arrives.
    pub fn sleep(&self, d: Duration) -> std::result::Result<(), Stopped> {
        let t0 = Instant::now();
        while t0.elapsed() < d {
            self.check()?;
            std::thread::sleep((d - t0.elapsed()).min(Duration::from_millis(50)));
        }
        self.check()
    }
}

/// What [`sweep`] did.
#[derive(Debug, Default)]
pub struct SweepReport {
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// State directories removed.
    pub dirs: Vec<PathBuf>,
    /// Namespaces left alone because their run is still alive.
    pub live: Vec<String>,
    /// What could not be removed.
    pub errors: Vec<Error>,
}

/// The PID at the end of `PREFIX ROLE - PID`, if `name` has that shape.
fn run_pid(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let (role, pid) = rest.rsplit_once('-')?;
    if role.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Remove what dead runs with this prefix left: every namespace named
/// `PREFIX ROLE - PID` whose run no longer holds its lock, and those runs'
/// state directories. Namespaces of live runs are reported, not touched;
/// names without the `-PID` ending are not ours and are ignored.
pub fn sweep(prefix: &str) -> Result<SweepReport> {
    validate_prefix(prefix)?;
    let mut report = SweepReport::default();
    let mut dead = std::collections::BTreeSet::new();
    for name in NetNs::list()? {
        let Some(pid) = run_pid(&name, prefix) else {
            continue;
        };
        if lock_held(&state_dir(pid)) {
            report.live.push(name);
            continue;
        }
        dead.insert(pid);
        match NetNs::delete(&name) {
            Ok(_) => report.namespaces.push(name),
            Err(e) => report.errors.push(e),
        }
    }
    // State directories of dead runs with this prefix, namespaces or not.
    if let Ok(rd) = std::fs::read_dir(RUNS_DIR) {
        for ent in rd.flatten() {
            let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let dir = ent.path();
            let theirs = std::fs::read_to_string(dir.join("prefix")).unwrap_or_default();
            if !(theirs.starts_with(prefix) || dead.contains(&pid)) || lock_held(&dir) {
                continue;
            }
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => report.dirs.push(dir),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => report
                    .errors
                    .push(Error::io(format!("remove {}", dir.display()), e)),
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_and_their_pid() {
        assert_eq!(run_pid("demo-host-1-4242", "demo-"), Some(4242));
        assert_eq!(run_pid("demo-ul-7", "demo-"), Some(7));
        assert_eq!(run_pid("demo-4242", "demo-"), None, "no role");
        assert_eq!(run_pid("demo-ul-", "demo-"), None);
        assert_eq!(run_pid("demo-ul-12a", "demo-"), None);
        assert_eq!(run_pid("cn-ul-12", "demo-"), None);
        assert_eq!(run_pid("demo-ul-99999999999", "demo-"), None, "not a pid");
    }

    #[test]
    fn prefixes_that_would_match_too_much_are_refused() {
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("d").is_err());
        assert!(validate_prefix("a/b").is_err());
        assert!(validate_prefix("a b").is_err());
        assert!(validate_prefix("demo-").is_ok());
    }

    #[test]
    fn stopped_exit_codes() {
        assert_eq!(Stopped { signal: 15 }.exit_code(), 143);
        assert_eq!(Stopped { signal: 2 }.exit_code(), 130);
        assert_eq!(Stopped { signal: 15 }.to_string(), "stopped by SIGTERM");
    }
}
