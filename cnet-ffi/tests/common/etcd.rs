//! etcd for the tests that need a real one (Debian `etcd-server`).

use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// etcd in a namespace (killed on drop; a namespace it made deleted).
pub struct Etcd {
    pub ns: String,
    own_ns: bool,
    child: Child,
    _dir: tempfile_dir::Dir,
}

mod tempfile_dir {
    /// A directory removed on drop (no tempfile dev-dependency here).
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.own_ns {
            let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        }
    }
}

impl Etcd {
    /// etcd on 127.0.0.1:2379 in a namespace of its own, `cn-ffe-PID`.
    pub fn start() -> Option<Etcd> {
        Self::start_in(None)
    }

    /// etcd on 127.0.0.1:2379 in namespace `ns` (one the caller made and
    /// deletes), or in one of its own; `None` (the test skipped) when not
    /// root or without an etcd binary outside CI.
    pub fn start_in(ns: Option<&str>) -> Option<Etcd> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED etcd server part: not root");
            return None;
        }
        if !Command::new("sh")
            .args(["-c", "command -v etcd"])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "no etcd binary; CI installs etcd-server"
            );
            eprintln!("SKIPPED etcd server part: no etcd binary");
            return None;
        }
        let own_ns = ns.is_none();
        let ns = ns.map_or_else(|| format!("cn-ffe-{}", std::process::id()), str::to_string);
        if own_ns {
            assert!(Command::new("ip")
                .args(["netns", "add", &ns])
                .status()
                .unwrap()
                .success());
        }
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        };
        let dir = tempfile_dir::Dir(format!("{base}/{ns}").into());
        std::fs::create_dir_all(&dir.0).unwrap();
        let child = spawn(&ns, &dir.0);
        let e = Etcd {
            ns,
            own_ns,
            child,
            _dir: dir,
        };
        e.wait_up();
        Some(e)
    }

    /// Kill etcd (SIGKILL) and start it again on the same data: what an
    /// etcd restart looks like to its clients.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.ns, &self._dir.0);
        self.wait_up();
    }

    fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.curl("/v3/maintenance/status", "{}").contains("header") {
            assert!(Instant::now() < deadline, "etcd did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// curl in the namespace (the independent client): the reply body.
    pub fn curl(&self, path: &str, body: &str) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .args([
                "curl",
                "-sS",
                "-d",
                body,
                &format!("http://127.0.0.1:2379{path}"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `f` on a thread in the namespace (the caller's stays as it is).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).unwrap();
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }
}

fn spawn(ns: &str, dir: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("etcd.log"))
        .unwrap();
    let url = "http://127.0.0.1:2379";
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["sh", "-c", "ip link set lo up && exec \"$@\"", "sh", "etcd"])
        .args(["--data-dir", &dir.join("data").display().to_string()])
        .args(["--listen-client-urls", url, "--advertise-client-urls", url])
        .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
        .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}
