//! The `cnet-debug` binary at its edges: a reader that goes away (no output
//! path may panic), namespace files that are not namespaces (refused at
//! once, never a blocking open), and destinations the kernel treats
//! specially (0.0.0.0, loopback, the namespace's own address, broadcast,
//! multicast), each checked against `ip -j route get` in a test namespace.

mod cluster;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster::{privileged, Plain};

const BIN: &str = env!("CARGO_BIN_EXE_cnet-debug");

/// Run the binary with stdout (and, if asked, stderr) connected to a pipe
/// whose reading end is already closed: every write fails with EPIPE.
/// Returns the exit code (128 + signal if killed) and what stderr said.
fn closed_pipe(args: &[&str], close_stderr: bool) -> (i32, String) {
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdout(Stdio::from(w.try_clone().unwrap()));
    if close_stderr {
        cmd.stderr(Stdio::from(w));
    } else {
        cmd.stderr(Stdio::piped());
        drop(w);
    }
    let o = cmd.output().unwrap();
    (
        o.status
            .code()
            .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0)),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Run the binary, bounded: a command still running after 30 s is killed
/// and reported as hung (this is what a blocking open of a FIFO did).
fn bounded(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(_st) = child.try_wait().unwrap() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cnet-debug {args:?} hung (killed after 30 s)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = child.wait_with_output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn no_panic(what: &str, code: i32, err: &str) {
    assert_ne!(code, 101, "{what} panicked: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    // Without privileges: the current namespace can be read by anyone.
    for args in [
        &["show", "--json"][..],
        &["show"],
        &["show", "--netns", "/proc/self/ns/net", "--json"],
        &["--help"],
        &["--version"],
        &["trace", "--help"],
        &["cleanup", "--prefix", "cn-nothing-here-"],
    ] {
        let (code, err) = closed_pipe(args, false);
        no_panic(&format!("{args:?}"), code, &err);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert_eq!(err, "", "{args:?}");
    }
    // An error with stderr closed too: exit 2, not a panic.
    let (code, err) = closed_pipe(&["trace", "192.0.2.1", "--from", "cn-no-such-ns"], true);
    no_panic("trace error", code, &err);
    assert_eq!(code, 2);
    let (code, err) = closed_pipe(&["trace", "not-an-ip"], true);
    no_panic("bad argument", code, &err);
    assert_eq!(code, 2);
}

#[test]
fn a_closed_stdout_ends_trace_and_probe_quietly() {
    if !privileged() {
        return;
    }
    let p = Plain::new("pipe", &["a"]);
    let a = p.ns("a");
    for (args, want) in [
        (vec!["trace", "127.0.0.1", "--from", &a, "--no-capture"], 0),
        (
            vec!["trace", "127.0.0.1", "--from", &a, "--no-capture", "--json"],
            0,
        ),
        (vec!["trace", "127.0.0.1", "--from", &a, "--capture"], 0),
        (vec!["trace", "10.9.9.9", "--from", &a, "--no-capture"], 1),
        (vec!["show", "--netns", &a], 0),
        (vec!["show", "--netns", &a, "--json"], 0),
        (
            vec![
                "probe",
                "127.0.0.1",
                "--from",
                &a,
                "--on",
                &format!("{a}:lo"),
            ],
            0,
        ),
    ] {
        let (code, err) = closed_pipe(&args, false);
        no_panic(&format!("{args:?}"), code, &err);
        assert_eq!(code, want, "{args:?}: {err}");
    }
}

#[test]
fn namespace_files_that_are_not_namespaces_are_refused_at_once() {
    let dir = std::env::temp_dir().join(format!("cn-nsfile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(dir.clone());
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let file = dir.join("file");
    std::fs::write(&file, b"not a namespace").unwrap();
    let s = |p: &std::path::Path| p.display().to_string();
    let cases = [
        (s(&fifo), "a FIFO"),
        (s(&file), "a regular file"),
        (s(&dir), "a directory"),
        (s(&dir.join("missing")), "not found"),
        ("/proc/self/ns/mnt".to_string(), "a mnt namespace"),
        ("/dev/null".to_string(), "a device"),
        ("cn-no-such-namespace".to_string(), "not found"),
        ("4294967295".to_string(), "not found"),
    ];
    for (spec, want) in &cases {
        for args in [
            vec!["trace", "192.0.2.1", "--from", spec, "--no-capture"],
            vec!["show", "--netns", spec],
            vec!["probe", "192.0.2.1", "--from", spec, "--timeout", "100"],
            vec![
                "probe",
                "192.0.2.1",
                "--on",
                &format!("{spec}:eth0"),
                "--timeout",
                "100",
            ],
        ] {
            let (code, out, err) = bounded(&args);
            assert_eq!(code, 2, "{args:?}: {out}{err}");
            assert!(err.starts_with("cnet-debug: "), "{args:?}: {err}");
            assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
            if *want != "not found" {
                assert!(err.contains("not a network namespace"), "{err}");
            }
        }
    }
}

#[test]
fn a_fifo_among_the_named_namespaces_hangs_nothing() {
    if !privileged() {
        return;
    }
    // In a mount namespace of its own, /run/netns is a fresh tmpfs holding a
    // FIFO: nothing outside sees it (other tests list /run/netns too).
    let script = format!(
        "set -e; mkdir -p /run/netns; mount -t tmpfs cn-fifo-test /run/netns; \
         mkfifo /run/netns/cn-fifo; \
         {BIN} show --json >/dev/null; echo show=$?; \
         {BIN} trace 127.0.0.1 --no-capture >/dev/null; echo trace=$?; \
         {BIN} show --netns cn-fifo 2>&1 || echo named=$?"
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hung on a FIFO in /run/netns");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("show=0"), "{out}{err}");
    assert!(out.contains("trace=0"), "{out}{err}");
    assert!(
        out.contains("a FIFO (named pipe), not a network namespace"),
        "{out}"
    );
    assert!(out.contains("named=2"), "{out}");
}

/// `ip -n NS -j route get DST`: Ok(the route object) or Err(the kernel's words).
fn kernel_route(ns: &str, dst: &str) -> Result<serde_json::Value, String> {
    let o = Command::new("ip")
        .args(["-n", ns, "-j", "route", "get", dst])
        .output()
        .unwrap();
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    Ok(v[0].clone())
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn special_destinations_agree_with_ip_route_get() {
    if !privileged() {
        return;
    }
    let p = Plain::new("spec", &["a", "b"]);
    p.sh(&[
        "ip -n {a} link add eth0 type veth peer name eth0 netns {b}",
        "ip -n {a} addr add 192.0.2.11/24 dev eth0",
        "ip -n {b} addr add 192.0.2.12/24 dev eth0",
        "ip -n {a} link set eth0 up",
        "ip -n {b} link set eth0 up",
    ]);
    let a = p.ns("a");
    let dsts = [
        "0.0.0.0",
        "127.0.0.1",
        "127.5.6.7",
        "192.0.2.11",
        "192.0.2.255",
        "255.255.255.255",
        "224.0.0.1",
        "239.1.2.3",
        "192.0.2.12",
        "10.9.9.9",
        "::1",
        "::",
        "ff02::1",
    ];
    let mut kinds_seen = std::collections::BTreeSet::new();
    for with_default in [false, true] {
        if with_default {
            p.sh(&["ip -n {a} route add default via 192.0.2.12"]);
        }
        for dst in dsts {
            let kernel = kernel_route(&a, dst);
            let (code, out, err) = bounded(&["trace", dst, "--from", &a, "--no-capture", "--json"]);
            let ctx = format!(
                "trace {dst} (default route: {with_default}): kernel {kernel:?}\n{out}{err}"
            );
            match &kernel {
                Err(words) => {
                    kinds_seen.insert("error".to_string());
                    assert_eq!(code, 1, "{ctx}");
                    let lines = json_lines(&out);
                    let finding = lines
                        .iter()
                        .find(|l| l["type"] == "finding")
                        .unwrap_or_else(|| panic!("{ctx}"));
                    let want = if words.contains("No route to host") {
                        "unreachable"
                    } else {
                        assert!(words.contains("Network is unreachable"), "{ctx}");
                        "no_route"
                    };
                    assert_eq!(finding["data"]["code"], want, "{ctx}");
                }
                Ok(r) => {
                    let kind = r["type"].as_str().unwrap_or("unicast");
                    let dev = r["dev"].as_str().unwrap();
                    kinds_seen.insert(kind.to_string());
                    match kind {
                        "local" => {
                            assert_eq!(code, 0, "{ctx}");
                            let lines = json_lines(&out);
                            let v = &lines.last().unwrap()["data"];
                            assert_eq!(v["outcome"], "delivered", "{ctx}");
                            assert_eq!(v["netns"], a.as_str(), "{ctx}");
                            assert_eq!(lines[0]["data"]["kind"], "deliver", "{ctx}");
                        }
                        "broadcast" | "multicast" => {
                            assert_eq!(code, 2, "{ctx}");
                            assert!(err.contains(&format!("as {kind} out {dev}")), "{ctx}");
                        }
                        _ => {
                            let lines = json_lines(&out);
                            let hop = &lines[0]["data"];
                            assert_eq!(hop["kind"], "route", "{ctx}");
                            let summary = hop["summary"].as_str().unwrap();
                            let want = match r["gateway"].as_str() {
                                Some(g) => format!("route to {dst} via {g} dev {dev}"),
                                None => format!("route to {dst} dev {dev}"),
                            };
                            assert!(summary.starts_with(&want), "{ctx}");
                        }
                    }
                }
            }
        }
    }
    // The cases above met every kind of answer.
    for k in ["error", "local", "broadcast", "multicast", "unicast"] {
        assert!(kinds_seen.contains(k), "no {k} answer among {kinds_seen:?}");
    }
}
