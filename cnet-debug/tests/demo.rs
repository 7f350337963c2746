//! The demo (`examples/rust/demo.rs`, run by `scripts/demo`) on every
//! way out: stopped by SIGTERM or SIGINT it removes what it made; killed by
//! SIGKILL, or finished with `--keep`, it leaves its namespaces and
//! `cnet-debug cleanup --prefix P` removes them; a run that is still alive
//! is never touched by a cleanup. Checked with `ip netns list` and the run's
//! state directory.
//!
//! Each run gets a prefix of its own (`cn-dm<test pid><n>-`), so nothing here
//! can match another test's or another person's namespaces. The example
//! binary is built by `cargo test` (all targets) and by `scripts/test`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cnet_test_support::privileged;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

static N: AtomicUsize = AtomicUsize::new(0);

/// The demo example next to this test binary (target/PROFILE/examples/demo).
fn demo_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("examples").join("demo");
    p.exists().then_some(p)
}

fn ns_with(prefix: &str) -> Vec<String> {
    let o = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

fn state_dir(pid: u32) -> PathBuf {
    PathBuf::from(cnet_debug::cleanup::RUNS_DIR).join(pid.to_string())
}

fn cleanup_cmd(prefix: &str) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_cnet-debug"))
        .args(["cleanup", "--prefix", prefix])
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// One demo run with a prefix of its own; on drop (also on panic) the
/// process is killed and whatever it left is swept.
struct DemoRun {
    prefix: String,
    child: Option<Child>,
    out: String,
}

impl DemoRun {
    fn prefix() -> String {
        format!(
            "cn-dm{}{}-",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// Start `demo --hold` and wait (bounded) until its cluster is up.
    fn hold(bin: &PathBuf) -> DemoRun {
        let prefix = Self::prefix();
        let mut child = Command::new(bin)
            .args(["--hold", "--prefix", &prefix])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = String::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                seen.push_str(&line);
                seen.push('\n');
                if line.starts_with("== 8. holding") {
                    let _ = tx.send(Ok(seen.clone()));
                }
            }
            let _ = tx.send(Err(seen));
        });
        let mut run = DemoRun {
            prefix,
            child: Some(child),
            out: String::new(),
        };
        // A bound so that a hung demo fails the test instead of hanging it.
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(out)) => run.out = out,
            Ok(Err(out)) => panic!("the demo ended before holding:\n{out}{}", run.stderr()),
            Err(_) => panic!("the demo did not reach its holding step within 120 s"),
        }
        run
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn signal(&self, s: Signal) {
        kill(Pid::from_raw(self.pid() as i32), s).unwrap();
    }

    /// Wait for the process; its exit code, or 128 + the signal that killed it.
    fn wait(&mut self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        let st = self.child.as_mut().unwrap().wait().unwrap();
        st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(e) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
            let _ = std::io::Read::read_to_string(e, &mut s);
        }
        s
    }
}

impl Drop for DemoRun {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        let _ = cnet_debug::cleanup::sweep(&self.prefix);
    }
}

fn setup() -> Option<PathBuf> {
    if !privileged() {
        return None;
    }
    let bin = demo_bin();
    if bin.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("the demo example is not built (cargo build --examples)");
        }
        eprintln!("SKIPPED: the demo example is not built (cargo build -p cnet-debug --examples)");
    }
    bin
}

#[test]
fn demo_stopped_by_sigterm_or_sigint_removes_everything_it_made() {
    let Some(bin) = setup() else { return };
    for (sig, code) in [(Signal::SIGTERM, 143), (Signal::SIGINT, 130)] {
        let mut run = DemoRun::hold(&bin);
        let pid = run.pid();
        let made = ns_with(&run.prefix);
        assert_eq!(made.len(), 6, "{made:?}\n{}", run.out);
        assert!(
            made.iter().all(|n| n.ends_with(&format!("-{pid}"))),
            "{made:?}"
        );
        assert!(state_dir(pid).join("lock").exists());

        // A cleanup while the run is alive leaves it alone.
        let (rc, out, err) = cleanup_cmd(&run.prefix);
        assert_eq!(rc, 0, "{out}{err}");
        assert_eq!(out.matches("its run is still alive").count(), 6, "{out}");
        assert_eq!(ns_with(&run.prefix).len(), 6);
        assert!(state_dir(pid).exists());

        run.signal(sig);
        assert_eq!(run.wait(), code, "{}", run.stderr());
        assert_eq!(ns_with(&run.prefix), Vec::<String>::new());
        assert!(!state_dir(pid).exists());
    }
}

#[test]
fn demo_killed_by_sigkill_leaves_what_cleanup_removes() {
    let Some(bin) = setup() else { return };
    let mut run = DemoRun::hold(&bin);
    let pid = run.pid();
    run.signal(Signal::SIGKILL);
    assert_eq!(run.wait(), 137);
    // What a killed run leaves: its 6 namespaces and its state (IPAM store).
    assert_eq!(ns_with(&run.prefix).len(), 6);
    assert!(state_dir(pid).join("ipam").exists());

    let (rc, out, err) = cleanup_cmd(&run.prefix);
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(out.matches("deleted namespace").count(), 6, "{out}");
    assert!(
        out.contains(&format!("removed {}", state_dir(pid).display())),
        "{out}"
    );
    assert_eq!(ns_with(&run.prefix), Vec::<String>::new());
    assert!(!state_dir(pid).exists());

    // Twice is fine.
    let (rc, out, _) = cleanup_cmd(&run.prefix);
    assert_eq!(rc, 0);
    assert!(out.contains("nothing left"), "{out}");
}

#[test]
fn demo_with_keep_leaves_its_namespaces_until_cleanup() {
    let Some(bin) = setup() else { return };
    let prefix = DemoRun::prefix();
    let guard = DemoRun {
        prefix: prefix.clone(),
        child: None,
        out: String::new(),
    };
    let o = Command::new(&bin)
        .args(["--keep", "--prefix", &prefix])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("verdict: OK"), "{out}");
    assert!(out.contains("cnet-debug cleanup --prefix"), "{out}");
    assert_eq!(ns_with(&prefix).len(), 6);

    let (rc, out, err) = cleanup_cmd(&prefix);
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(out.matches("deleted namespace").count(), 6, "{out}");
    assert_eq!(ns_with(&prefix), Vec::<String>::new());
    drop(guard);
}

#[test]
fn cleanup_refuses_a_prefix_that_would_match_too_much() {
    let (rc, _, err) = cleanup_cmd("d");
    assert_eq!(rc, 2);
    assert!(err.starts_with("cnet-debug: prefix \"d\""), "{err}");
    let (rc, _, _) = cleanup_cmd("");
    assert_eq!(rc, 2);
}
