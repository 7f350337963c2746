//! `cnet-debug trace` on a network made by a real Docker daemon.
//!
//! dockerd runs inside a namespace that plays the host (`nsenter
//! --net=/run/netns/HOST dockerd`, not `ip netns exec`, which remounts /sys
//! and hides the cgroup mounts), with the vfs storage driver and its own
//! socket, data root, exec root and pidfile in a temporary directory, so
//! docker0 and Docker's iptables-nft rules (FORWARD policy DROP, MASQUERADE)
//! stay in that namespace. The image is a busybox rootfs made here and
//! loaded with `docker import` (nothing is pulled). Containers keep their
//! namespaces out of /run/netns: trace finds them by the processes inside
//! them and names them by Docker's state. A guard removes the containers,
//! stops the daemon (and anything still running from its directory), and
//! removes the directory, even on panic.
//!
//! ```text
//!   {host}: docker0 10.244.1.1/24 ─ web .2, db .3 (Docker's veths)
//!           eth0 203.0.113.1/24 ── {ext} eth0 203.0.113.2/24
//! ```

mod cluster;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster::cases::case;
use cluster::{privileged, Plain};

/// dockerd and busybox are installed (CI: always; elsewhere the test says so).
fn tools_available() -> bool {
    let have = |p: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).exists()))
    };
    let missing: Vec<&str> = ["dockerd", "docker", "busybox", "nsenter"]
        .into_iter()
        .filter(|p| !have(p))
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("missing {missing:?} (CI installs docker.io and busybox-static)");
    }
    eprintln!("SKIPPED: missing {missing:?}");
    false
}

/// A private dockerd in namespace `host`, stopped and cleaned when dropped.
struct Dockerd {
    dir: PathBuf,
    daemon: Option<Child>,
}

impl Dockerd {
    fn start(host: &str, tag: &str) -> Dockerd {
        let dir = std::env::temp_dir().join(format!("cn-dk{tag}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("cli")).unwrap();
        std::fs::write(dir.join("daemon.json"), "{}").unwrap();
        let mut d = Dockerd { dir, daemon: None };
        let p = |f: &str| d.dir.join(f).display().to_string();
        let log = std::fs::File::create(d.dir.join("dockerd.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{host}"))
            .args([
                "dockerd",
                "--storage-driver",
                "vfs",
                "--bip",
                "10.244.1.1/24",
            ])
            .args(["--host", &format!("unix://{}", p("docker.sock"))])
            .args(["--data-root", &p("data"), "--exec-root", &p("exec")])
            .args([
                "--pidfile",
                &p("docker.pid"),
                "--config-file",
                &p("daemon.json"),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        d.daemon = Some(child);
        // Up to two minutes, then give up with the daemon's own words.
        let t0 = Instant::now();
        while !d.docker(&["version"]).status.success() {
            if t0.elapsed() > Duration::from_secs(120) {
                let log = std::fs::read_to_string(d.dir.join("dockerd.log")).unwrap_or_default();
                panic!("dockerd did not answer within 2 minutes:\n{log}");
            }
            if let Some(Ok(Some(st))) = d.daemon.as_mut().map(|c| c.try_wait()) {
                let log = std::fs::read_to_string(d.dir.join("dockerd.log")).unwrap_or_default();
                panic!("dockerd exited ({st}):\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("dockerd ready after {} ms", t0.elapsed().as_millis());
        d
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .arg("-H")
            .arg(format!("unix://{}", self.dir.join("docker.sock").display()))
            .args(args)
            .output()
            .unwrap()
    }

    /// `docker ARGS` must succeed; its trimmed stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// A busybox rootfs (the static binary and a few applet links) as an image.
    fn import_busybox(&self) {
        let root = self.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        let bb = Command::new("sh")
            .args(["-c", "command -v busybox"])
            .output()
            .unwrap();
        let bb = String::from_utf8_lossy(&bb.stdout).trim().to_string();
        std::fs::copy(&bb, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "ping"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let tar = self.dir.join("rootfs.tar");
        let o = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()
            .unwrap();
        assert!(o.status.success());
        self.ok(&["import", &tar.display().to_string(), "cnet-busybox:test"]);
    }

    /// Run a container that sleeps; its PID and IPv4 address.
    fn run(&self, name: &str) -> (u32, String) {
        self.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "cnet-busybox:test",
            "/bin/sleep",
            "600",
        ]);
        let out = self.ok(&[
            "inspect",
            "-f",
            "{{.State.Pid}} {{.NetworkSettings.IPAddress}}",
            name,
        ]);
        let (pid, ip) = out.split_once(' ').unwrap();
        (pid.parse().unwrap(), ip.to_string())
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let ids = String::from_utf8_lossy(&self.docker(&["ps", "-aq"]).stdout).into_owned();
            let mut rm = vec!["rm", "-f"];
            rm.extend(ids.split_whitespace());
            if rm.len() > 2 {
                let _ = self.docker(&rm);
            }
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(20) {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Anything still running from our directory (containerd, a shim),
        // by its PID.
        kill_leftovers(&self.dir);
        // Mounts Docker may have left under the directory (netns bind mounts).
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.dir.display().to_string();
        let mut mounts: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGKILL every process whose command line names `dir`.
fn kill_leftovers(dir: &Path) {
    let needle = dir.display().to_string();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(&needle) && pid != std::process::id() as i32 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn docker_containers_traced_by_pid_and_named_by_docker() {
    if !privileged() || !tools_available() {
        return;
    }
    let t = Plain::new("dk", &["host", "ext"]);
    t.sh(&[
        "ip -n {host} link add eth0 type veth peer name eth0 netns {ext}",
        "ip -n {host} addr add 203.0.113.1/24 dev eth0",
        "ip -n {host} link set eth0 up",
        "ip -n {ext} addr add 203.0.113.2/24 dev eth0",
        "ip -n {ext} link set eth0 up",
        "ip -n {ext} route add 10.244.1.0/24 via 203.0.113.1",
    ]);
    let d = Dockerd::start(&t.ns("host"), "t");
    d.import_busybox();
    let (web, _web_ip) = d.run("web");
    let (db, db_ip) = d.run("db");
    let (host, ext) = (t.ns("host"), t.ns("ext"));
    let web_s = web.to_string();

    // Container to container on docker0, the source given as a PID.
    let c = case("docker healthy", &web_s, &db_ip);
    assert_eq!(c.codes, (0, 0), "{c:?}");
    assert_eq!(c.verdict["agreement"], "confirmed", "{c:?}");
    assert_eq!(
        c.verdict["from"],
        format!("container web (pid {web} sleep)").as_str(),
        "{c:?}"
    );
    assert_eq!(
        c.verdict["netns"],
        format!("container db (pid {db} sleep)").as_str(),
        "{c:?}"
    );

    // Out of the host: Docker's rules accept it and masquerade it.
    let c = case("docker to outside", &web_s, "203.0.113.2");
    assert_eq!(c.codes, (0, 0), "{c:?}");
    assert!(c.hop_ns.contains(&("snat".into(), host.clone())), "{c:?}");

    // Into a container from outside, nothing published: FORWARD policy DROP.
    let c = case("docker from outside", &ext, &db_ip);
    assert_eq!(c.codes, (1, 1), "{c:?}");
    assert!(
        c.hop_ns.contains(&("firewall_drop".into(), host.clone())),
        "{c:?}"
    );
    assert_eq!(c.verdict["agreement"], "confirmed", "{c:?}");

    // docker0 down.
    t.sh(&["ip -n {host} link set docker0 down"]);
    let c = case("docker bridge down", &web_s, &db_ip);
    assert_eq!(c.codes, (1, 1), "{c:?}");
    assert!(
        c.hop_ns.contains(&("bridge_down".into(), host.clone())),
        "{c:?}"
    );
    t.sh(&["ip -n {host} link set docker0 up"]);
}
