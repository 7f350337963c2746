//! A real etcd (Debian `etcd-server`) for a test, inside a namespace the
//! test made (rule: daemons run in a namespace that plays the host), on that
//! namespace's loopback. The test talks to it from threads that entered the
//! namespace ([`Etcd::run`]); etcd is killed and the namespace deleted on
//! drop, also on panic.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cnet_core::ipam::EtcdStore;

use super::TestNs;

/// A running etcd in its own namespace.
pub struct Etcd {
    child: Child,
    /// `http://127.0.0.1:2379` inside [`Etcd::ns`].
    pub url: String,
    pub dir: tempfile::TempDir,
    ip: String,
    /// Declared last: dropped after the process is gone.
    pub ns: TestNs,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start an etcd with a new data dir in namespace `ns`, on `ip` (the
/// namespace is the test's alone, so fixed ports are free).
fn spawn(bin: &str, ns: &str, ip: &str) -> (Child, tempfile::TempDir) {
    // tmpfs when there is one: etcd fsyncs every write.
    let dir = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    (spawn_in(bin, ns, ip, dir.path()), dir)
}

/// Start an etcd on the data directory `dir` (new or kept from before).
fn spawn_in(bin: &str, ns: &str, ip: &str, dir: &Path) -> Child {
    let url = format!("http://{ip}:2379");
    let peer = format!("http://{ip}:2380");
    let (url, peer) = (url.as_str(), peer.as_str());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("etcd.log"))
        .unwrap();
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(bin)
        .args([
            "--name",
            "cnet-test",
            "--data-dir",
            &dir.join("data").display().to_string(),
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            &format!("cnet-test={peer}"),
            // Fast elections and start.
            "--heartbeat-interval",
            "10",
            "--election-timeout",
            "100",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn etcd_binary() -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|p| p.join("etcd"))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// Run `f` on a thread that entered `ns`'s network namespace (the calling
/// thread never changes namespace); threads `f` spawns are in it too.
pub fn in_ns<T: Send>(ns: &TestNs, f: impl FnOnce() -> T + Send) -> T {
    in_ns_named(&ns.name, f)
}

/// [`in_ns`] by the namespace's name (for threads that do not own it).
pub fn in_ns_named<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

impl Etcd {
    /// Start etcd in a new namespace `cn-<tag>-…`, or `None` (after saying
    /// why) when the binary is missing. In CI a missing binary fails.
    pub fn start(tag: &str) -> Option<Etcd> {
        if etcd_binary().is_none() {
            if std::env::var_os("CI").is_some() {
                panic!("{tag}: no `etcd` binary in PATH; CI installs etcd-server");
            }
            eprintln!(
                "SKIPPED {tag}: no `etcd` binary in PATH (apt-get install etcd-server); CI installs it"
            );
            return None;
        }
        Some(Etcd::start_at(TestNs::new(tag), "127.0.0.1", tag))
    }

    /// Start etcd in `ns` (which it then owns) listening on `ip`, an
    /// address the test gave that namespace (so hosts on an underlay reach
    /// it). Panics when etcd is missing.
    pub fn start_at(ns: TestNs, ip: &str, tag: &str) -> Etcd {
        let bin = etcd_binary().expect("no `etcd` binary in PATH (apt-get install etcd-server)");
        let (child, dir) = spawn(&bin, &ns.name, ip);
        let mut etcd = Etcd {
            child,
            url: format!("http://{ip}:2379"),
            dir,
            ns,
            ip: ip.to_string(),
        };
        etcd.wait_up(tag);
        etcd
    }

    /// Replace the server by a new one with an empty data directory at the
    /// same address: what a client sees when its endpoint is restored from
    /// an old backup or now serves another cluster.
    pub fn replace_with_fresh(&mut self) {
        self.stop();
        let (child, dir) = spawn(&etcd_binary().unwrap(), &self.ns.name, &self.ip);
        self.child = child;
        self.dir = dir;
        self.wait_up("replaced etcd");
    }

    /// Kill the server and start it again on the same data and address:
    /// what clients see when etcd restarts (every connection drops).
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_in(
            &etcd_binary().unwrap(),
            &self.ns.name,
            &self.ip,
            self.dir.path(),
        );
        self.wait_up("restarted etcd");
    }

    fn wait_up(&mut self, tag: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let url = self.url.clone();
            if self.run(move || {
                EtcdStore::connect(&[&url], "/probe", Duration::from_millis(500)).is_ok()
            }) {
                return;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        panic!(
            "{tag}: etcd did not come up; log tail:\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n")
        );
    }

    /// Run `f` inside etcd's namespace (see [`in_ns`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_ns(&self.ns, f)
    }

    /// Kill etcd (its namespace stays until drop).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
