//! A real etcd (Debian `etcd-server`) for a test, inside a namespace the
//! test made (rule: daemons run in a namespace that plays the host), on that
//! namespace's loopback. The test talks to it from threads that entered the
//! namespace ([`Etcd::run`]); etcd is killed and the namespace deleted on
//! drop, also on panic.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cnet_core::ipam::{EtcdConfig, EtcdStore};

use super::TestNs;

/// A running etcd in its own namespace.
pub struct Etcd {
    child: Child,
    /// `http://127.0.0.1:2379` inside [`Etcd::ns`].
    pub url: String,
    pub dir: tempfile::TempDir,
    ip: String,
    /// The client settings `wait_up` probes with (TLS files, scheme).
    probe: EtcdConfig,
    /// Extra etcd flags (TLS) and the client URL scheme.
    extra: Vec<String>,
    scheme: String,
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
    spawn_with(bin, ns, ip, "http", &[])
}

/// A new data dir, on tmpfs when there is one: etcd fsyncs every write.
pub fn data_dir() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// [`spawn`] with client URLs of `scheme` and `extra` flags (TLS).
fn spawn_with(
    bin: &str,
    ns: &str,
    ip: &str,
    scheme: &str,
    extra: &[String],
) -> (Child, tempfile::TempDir) {
    let dir = data_dir();
    (spawn_in(bin, ns, ip, scheme, extra, dir.path()), dir)
}

/// Start an etcd on the data directory `dir` (new or kept from before).
fn spawn_in(bin: &str, ns: &str, ip: &str, scheme: &str, extra: &[String], dir: &Path) -> Child {
    let url = format!("{scheme}://{ip}:2379");
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
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

pub fn etcd_binary() -> Option<String> {
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
        Self::start_with(tag, "http", Vec::new(), |url| {
            EtcdConfig::new(&[url], "/probe")
        })
    }

    /// [`Etcd::start`] with client URLs of `scheme`, `extra` etcd flags
    /// (TLS files) and the client settings to probe it with.
    pub fn start_with(
        tag: &str,
        scheme: &str,
        extra: Vec<String>,
        probe: impl Fn(&str) -> EtcdConfig,
    ) -> Option<Etcd> {
        if !have_etcd(tag) {
            return None;
        }
        let ns = TestNs::new(tag);
        let bin = etcd_binary().unwrap();
        let ip = "127.0.0.1";
        let (child, dir) = spawn_with(&bin, &ns.name, ip, scheme, &extra);
        let url = format!("{scheme}://{ip}:2379");
        let mut etcd = Etcd {
            child,
            probe: probe(&url).timeout(Duration::from_millis(500)),
            url,
            dir,
            ns,
            ip: ip.to_string(),
            extra,
            scheme: scheme.to_string(),
        };
        etcd.wait_up(tag);
        Some(etcd)
    }

    /// Start etcd in `ns` (which it then owns) listening on `ip`, an
    /// address the test gave that namespace (so hosts on an underlay reach
    /// it). Panics when etcd is missing.
    pub fn start_at(ns: TestNs, ip: &str, tag: &str) -> Etcd {
        let bin = etcd_binary().expect("no `etcd` binary in PATH (apt-get install etcd-server)");
        let (child, dir) = spawn(&bin, &ns.name, ip);
        let url = format!("http://{ip}:2379");
        let mut etcd = Etcd {
            child,
            probe: EtcdConfig::new(&[&url], "/probe").timeout(Duration::from_millis(500)),
            url,
            dir,
            ns,
            ip: ip.to_string(),
            extra: Vec::new(),
            scheme: "http".into(),
        };
        etcd.wait_up(tag);
        etcd
    }

    /// Replace the server by a new one with an empty data directory at the
    /// same address: what a client sees when its endpoint is restored from
    /// an old backup or now serves another cluster.
    pub fn replace_with_fresh(&mut self) {
        self.stop();
        let (child, dir) = spawn_with(
            &etcd_binary().unwrap(),
            &self.ns.name,
            &self.ip,
            &self.scheme,
            &self.extra,
        );
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
            &self.scheme,
            &self.extra,
            self.dir.path(),
        );
        self.wait_up("restarted etcd");
    }

    fn wait_up(&mut self, tag: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let probe = self.probe.clone();
            if self.run(move || EtcdStore::open(probe).is_ok()) {
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

/// Whether the `etcd` binary is there; says why not (in CI: panics).
pub fn have_etcd(tag: &str) -> bool {
    if etcd_binary().is_some() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{tag}: no `etcd` binary in PATH; CI installs etcd-server");
    }
    eprintln!(
        "SKIPPED {tag}: no `etcd` binary in PATH (apt-get install etcd-server); CI installs it"
    );
    false
}

/// One member of an [`EtcdCluster`]: its own namespace on the underlay.
pub struct Member {
    pub name: String,
    /// `http://192.0.2.1N:2379`.
    pub url: String,
    ip: String,
    child: std::sync::Mutex<Option<Child>>,
    /// Kept across restarts (tmpfs).
    pub dir: tempfile::TempDir,
    pub ns: TestNs,
}

/// Three etcd members, each in its own namespace, on an underlay bridge
/// (192.0.2.0/24 in a namespace of its own), and a client namespace on the
/// same bridge (192.0.2.100) where the test's clients run
/// ([`EtcdCluster::run`]). Fast elections (heartbeat 50 ms, election
/// 500 ms). Everything is killed and deleted on drop, also on panic.
pub struct EtcdCluster {
    pub members: Vec<Member>,
    pub client: TestNs,
    /// Declared last: the bridge goes after the members.
    pub underlay: TestNs,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

impl EtcdCluster {
    /// Build the underlay and start three members, or `None` (after saying
    /// why) when the binary is missing.
    pub fn start(tag: &str) -> Option<EtcdCluster> {
        if !have_etcd(tag) {
            return None;
        }
        let underlay = TestNs::new(tag);
        underlay.ip(&["link", "add", "br0", "type", "bridge"]);
        underlay.ip(&["link", "set", "br0", "up"]);
        let attach = |ns: &TestNs, port: &str, ip: &str| {
            underlay.ip(&[
                "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
            ]);
            underlay.ip(&["link", "set", port, "master", "br0", "up"]);
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            ns.ip(&["link", "set", "eth0", "up"]);
        };
        let client = TestNs::new(tag);
        attach(&client, "pc", "192.0.2.100");
        let members: Vec<Member> = (0..3)
            .map(|i| {
                let ns = TestNs::new(tag);
                let ip = format!("192.0.2.{}", 11 + i);
                attach(&ns, &format!("p{i}"), &ip);
                Member {
                    name: format!("m{i}"),
                    url: format!("http://{ip}:2379"),
                    ip,
                    child: std::sync::Mutex::new(None),
                    dir: data_dir(),
                    ns,
                }
            })
            .collect();
        let c = EtcdCluster {
            members,
            client,
            underlay,
        };
        for i in 0..3 {
            c.spawn(i);
        }
        c.wait_leader(tag);
        Some(c)
    }

    /// The client URLs of all members.
    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.url.clone()).collect()
    }

    fn spawn(&self, i: usize) {
        let cluster: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://{}:2380", m.name, m.ip))
            .collect();
        let m = &self.members[i];
        let url = m.url.clone();
        let peer = format!("http://{}:2380", m.ip);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.dir.path().join("etcd.log"))
            .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", m.ns.name))
            .arg(etcd_binary().unwrap())
            .args(["--name", &m.name])
            .args([
                "--data-dir",
                &m.dir.path().join("data").display().to_string(),
            ])
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-token", "cnet-test"])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        *m.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
    }

    /// Kill member `i` (SIGKILL; its data stays).
    pub fn kill(&self, i: usize) {
        let child = self.members[i]
            .child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start member `i` again with its data.
    pub fn restart(&self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// `/v3/maintenance/status` of member `i`: (its id, the leader's id,
    /// its revision), asked from the client namespace.
    pub fn status(&self, i: usize) -> Option<(u64, u64, u64)> {
        let url = format!("{}/v3/maintenance/status", self.members[i].url);
        self.run(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_millis(500))
                .build();
            let v: serde_json::Value = agent
                .post(&url)
                .send_json(serde_json::json!({}))
                .ok()?
                .into_json()
                .ok()?;
            let n = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse().ok()).or(v.as_u64());
            Some((
                n(&v["header"]["member_id"])?,
                n(&v["leader"]).unwrap_or(0),
                n(&v["header"]["revision"]).unwrap_or(0),
            ))
        })
    }

    /// The index of the leader, when the live members agree on one.
    pub fn leader(&self) -> Option<usize> {
        let st: Vec<_> = (0..self.members.len()).map(|i| self.status(i)).collect();
        let leader = st.iter().flatten().map(|s| s.1).find(|&l| l != 0)?;
        st.iter().position(|s| s.map(|s| s.0) == Some(leader))
    }

    /// Wait (bounded) until a leader is elected.
    pub fn wait_leader(&self, tag: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(l) = self.leader() {
                return l;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let logs: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                let log =
                    std::fs::read_to_string(m.dir.path().join("etcd.log")).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                format!(
                    "{}:\n{}",
                    m.name,
                    lines[lines.len().saturating_sub(8)..].join("\n")
                )
            })
            .collect();
        panic!(
            "{tag}: the etcd cluster elected no leader; logs:\n{}",
            logs.join("\n")
        );
    }

    /// Run `f` in the client namespace (see [`in_ns`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_ns(&self.client, f)
    }
}
