//! podman with its CNI backend, all of it the test's own: a
//! containers.conf (`network_backend = "cni"`, the plugin directories, the
//! conflist directory, runc, cgroupfs, file events), `--root`/`--runroot`
//! (vfs storage) under a temporary directory, a busybox image imported
//! from a rootfs made of busybox-static's binary, and podman itself run
//! inside a namespace that plays the host (`nsenter --net=…`), so its
//! bridge, iptables rules and sysctls land there. Dropping a [`Podman`]
//! removes every container (`rm -af`), unmounts what is left under its
//! root, kills any conmon it started and removes the directory, also on
//! panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The ulimits containers need on these machines (no CAP_SYS_RESOURCE).
pub const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// The image every test runs.
pub const IMAGE: &str = "localhost/cnet-busybox";

/// podman and busybox are installed (CI: always; elsewhere the test says so).
pub fn available() -> bool {
    let ok = Command::new("podman").arg("--version").output().is_ok()
        && Path::new("/bin/busybox").exists();
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("podman or /bin/busybox is missing (scripts/deps --all installs them)");
        }
        eprintln!("SKIPPED: podman or busybox-static is missing (scripts/deps --all)");
    }
    ok
}

/// A private podman in host namespace `host`.
pub struct Podman {
    pub host: String,
    pub dir: tempfile::TempDir,
}

impl Podman {
    /// Set up podman's files, the plugin (`plugin`, as `cnet`) in a plugin
    /// directory before /usr/lib/cni, and the busybox image.
    pub fn new(host: &str, tag: &str, plugin: &Path) -> Podman {
        let dir = tempfile::Builder::new()
            .prefix(&format!("cn-podman-{tag}-"))
            .tempdir()
            .expect("podman directory");
        let p = Podman {
            host: host.to_string(),
            dir,
        };
        let d = p.path().to_path_buf();
        for sub in [
            "plugins",
            "net.d",
            "tmp",
            "rootfs/bin",
            "rootfs/www",
            "rootfs/tmp",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::copy(plugin, d.join("plugins/cnet")).expect("copy the plugin");
        let conf = format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{plugins}\", \"{official}\"]\n\
             network_config_dir = \"{netd}\"\n[engine]\nruntime = \"runc\"\ntmp_dir = \"{tmp}\"\n\
             events_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n",
            plugins = d.join("plugins").display(),
            official = super::CNI_PATH,
            netd = d.join("net.d").display(),
            tmp = d.join("tmp").display(),
        );
        std::fs::write(d.join("containers.conf"), conf).unwrap();
        // The rootfs: busybox-static and its applets, a page for httpd.
        std::fs::copy("/bin/busybox", d.join("rootfs/bin/busybox")).unwrap();
        for applet in [
            "sh", "ping", "httpd", "nc", "sleep", "ip", "cat", "ifconfig",
        ] {
            std::os::unix::fs::symlink("busybox", d.join("rootfs/bin").join(applet)).unwrap();
        }
        std::fs::write(d.join("rootfs/www/index.html"), "hello from cnet\n").unwrap();
        let tar = d.join("rootfs.tar");
        cnet_test_support::run(
            "tar",
            &[
                "-C",
                d.join("rootfs").to_str().unwrap(),
                "-cf",
                tar.to_str().unwrap(),
                ".",
            ],
        );
        p.import(&tar);
        p
    }

    /// `podman import TAR IMAGE`, in a mount namespace of its own with a
    /// tmpfs on /var/lib: containers/image keeps a blob-info cache in
    /// /var/lib/containers/cache whatever `--root` says, and nothing of
    /// this test may land outside its directory.
    fn import(&self, tar: &Path) {
        let d = self.path();
        let script = "mount -t tmpfs cnet-test /var/lib && exec \"$@\"";
        let o = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host))
            .arg("podman")
            .args(["--root", d.join("root").to_str().unwrap()])
            .args(["--runroot", d.join("runroot").to_str().unwrap()])
            .args(["--storage-driver", "vfs", "import"])
            .arg(tar)
            .arg(IMAGE)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .output()
            .expect("run podman import");
        assert!(
            o.status.success(),
            "podman import failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A conflist of this test's own (`name` is the network's name).
    pub fn conflist(&self, name: &str, plugins: Vec<Value>) {
        let v = serde_json::json!({ "cniVersion": "1.0.0", "name": name, "plugins": plugins });
        std::fs::write(
            self.path().join("net.d").join(format!("{name}.conflist")),
            v.to_string(),
        )
        .unwrap();
    }

    /// `podman ARGS…` in the host namespace, with this test's root and
    /// configuration.
    pub fn cmd(&self, args: &[&str]) -> Output {
        let d = self.path();
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host))
            .arg("podman")
            .args(["--root", d.join("root").to_str().unwrap()])
            .args(["--runroot", d.join("runroot").to_str().unwrap()])
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .output()
            .expect("run podman")
    }

    /// `podman ARGS…`, which must succeed: its standard output, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "podman {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `podman run -d` on `network`; the container's id.
    pub fn run(&self, name: &str, network: &str, extra: &[&str], cmd: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--name", name, "--network", network];
        args.extend_from_slice(&ULIMITS);
        args.extend_from_slice(extra);
        args.push(IMAGE);
        args.extend_from_slice(cmd);
        self.ok(&args)
    }

    /// `podman inspect NAME` as JSON (the first object).
    pub fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", name])).unwrap();
        v[0].clone()
    }

    /// The address podman recorded for `name` on `network`.
    pub fn ip_of(&self, name: &str, network: &str) -> String {
        self.inspect(name)["NetworkSettings"]["Networks"][network]["IPAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// `podman exec NAME CMD…` succeeded.
    pub fn exec_ok(&self, name: &str, cmd: &[&str]) -> bool {
        let mut args = vec!["exec", name];
        args.extend_from_slice(cmd);
        self.cmd(&args).status.success()
    }

    /// Wait (up to 20 s) until `f` holds; whether it did. Not a timing
    /// assertion: podman tears networks down from conmon's cleanup.
    pub fn eventually(&self, mut f: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        f()
    }

    /// Processes whose command line names this podman's directory (conmon,
    /// the containers' runtimes): their pids.
    fn own_processes(&self) -> Vec<i32> {
        let me = self.path().to_string_lossy().into_owned();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
                if String::from_utf8_lossy(&c).contains(&me) && pid != std::process::id() as i32 {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// Mount points under this podman's directory, deepest first.
    fn own_mounts(&self) -> Vec<PathBuf> {
        let me = self.path().to_string_lossy().into_owned();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut m: Vec<PathBuf> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&me))
            .map(PathBuf::from)
            .collect();
        m.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        m
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let o = self.cmd(&["rm", "-af", "-t", "0"]);
        if !o.status.success() {
            eprintln!("podman rm -af: {}", String::from_utf8_lossy(&o.stderr));
        }
        for pid in self.own_processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for m in self.own_mounts() {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        // The TempDir removes the rest (vfs layers included).
    }
}
