//! Test set-up shared by the integration tests of cnet-core, cnet-debug and
//! cnet-ffi, written once: whether privileged tests can run
//! ([`privileged`]), throwaway namespaces removed by a guard, also on panic
//! ([`TestNs`] for one, [`Namespaces`] for a named set), an independent
//! reader (`ip -j …`, `bridge -j …`: [`json_of`]) and the cluster of hosts
//! and containers the `network` and `trace` tests build ([`cluster`]), and a
//! continuous ping that counts what a fault loses ([`ping`]).
//!
//! Every namespace is named `cn-…`: `scripts/test` checks that none is left
//! behind.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use cnet_core::{Handle, NetNs};
use serde_json::Value;

pub mod cluster;
pub mod moto;
pub mod ping;

/// Whether privileged tests can run. Outside CI a non-root run says so and
/// the test returns early; in CI (CI set) not being root is a failure.
pub fn privileged() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        if std::env::var_os("CI").is_some() {
            panic!("privileged test cannot run: not root (CI requires root)");
        }
        eprintln!("SKIPPED: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)");
    }
    root
}

/// `CMD ARGS…`, which must succeed; its standard output.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `CMD ARGS…` (which must succeed), its output parsed as JSON; no output
/// is an empty array (what `ip -j` prints when nothing matches).
pub fn json_of(cmd: &str, args: &[&str]) -> Value {
    let s = run(cmd, args);
    if s.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{cmd} {args:?}: bad JSON {e}: {s}"))
}

/// `ip netns exec NS CMD…`; whether it succeeded.
pub fn exec_ok(ns: &str, cmd: &[&str]) -> bool {
    let mut full = vec!["netns", "exec", ns];
    full.extend_from_slice(cmd);
    Command::new("ip")
        .args(&full)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// One ping from namespace `ns` to `dst`, 2 s deadline.
pub fn ping_once(ns: &str, dst: &str) -> bool {
    exec_ok(ns, &["ping", "-c", "1", "-W", "2", dst])
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A namespace made for one test, deleted when dropped.
#[derive(Debug)]
pub struct TestNs {
    pub name: String,
    pub ns: NetNs,
}

impl TestNs {
    /// `cn-<tag>-<pid>-<n>`, unique per test and process.
    pub fn new(tag: &str) -> TestNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("cn-{tag}-{}-{n}", std::process::id());
        let ns = NetNs::create(&name).unwrap_or_else(|e| panic!("create {name}: {e}"));
        let t = TestNs { name, ns };
        // Loopback up, like a container runtime would.
        t.handle().links().set_up("lo").expect("lo up");
        t
    }

    pub fn handle(&self) -> Handle {
        Handle::at(&self.ns).expect("handle")
    }

    /// `ip -n NS -j -d ARGS…` parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-n", &self.name, "-j", "-d"];
        full.extend_from_slice(args);
        json_of("ip", &full)
    }

    /// `ip -n NS ARGS…`, must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full);
    }

    /// `bridge -n NS -j ARGS…` parsed.
    pub fn bridge_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-n", &self.name, "-j"];
        full.extend_from_slice(args);
        json_of("bridge", &full)
    }

    /// `bridge -n NS ARGS…`, must succeed.
    pub fn run_bridge(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("bridge", &full);
    }

    /// `ip netns exec NS CMD…`, returns success.
    pub fn exec_ok(&self, cmd: &[&str]) -> bool {
        exec_ok(&self.name, cmd)
    }

    /// One ping from this namespace, 2 s deadline.
    pub fn ping(&self, dst: &str) -> bool {
        ping_once(&self.name, dst)
    }

    /// The single link `ip -j -d link show DEV` returns.
    pub fn link_json(&self, dev: &str) -> Value {
        let v = self.ip_json(&["link", "show", "dev", dev]);
        v.as_array()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_else(|| panic!("no link {dev} in {}: {v}", self.name))
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if let Err(e) = NetNs::delete(&self.name) {
            eprintln!("cleanup of namespace {} failed: {e}", self.name);
        }
    }
}

/// How [`Namespaces`] makes a namespace (loopback up either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maker {
    /// With cnet's own `NetNs::create`.
    Cnet,
    /// With `ip netns add` (for tests of what cnet reads, not of what it
    /// makes), duplicate address detection off.
    Ip,
}

static SETS: AtomicUsize = AtomicUsize::new(0);

/// A set of namespaces by role, named `cn-<tag><k>-<role>-<pid>` (`k`
/// counts the sets of this process), all deleted when the set is dropped,
/// also on panic.
#[derive(Debug)]
pub struct Namespaces {
    /// (role, namespace name), in the order they were made.
    names: Vec<(String, String)>,
    prefix: String,
    maker: Maker,
}

impl Namespaces {
    /// The namespaces `roles`, made with `ip netns add` ([`Maker::Ip`]).
    pub fn new(tag: &str, roles: &[&str]) -> Namespaces {
        let mut set = Namespaces::empty(tag, Maker::Ip);
        for r in roles {
            set.add(r);
        }
        set
    }

    /// A set with no namespace yet; [`Namespaces::add`] makes them with
    /// `maker`.
    pub fn empty(tag: &str, maker: Maker) -> Namespaces {
        let k = SETS.fetch_add(1, Ordering::SeqCst);
        Namespaces {
            names: Vec::new(),
            prefix: format!("cn-{tag}{k}"),
            maker,
        }
    }

    /// Make the namespace of `role`, loopback up; it is deleted with the
    /// set.
    pub fn add(&mut self, role: &str) -> NetNs {
        let name = format!("{}-{role}-{}", self.prefix, std::process::id());
        match self.maker {
            Maker::Cnet => {
                let ns = NetNs::create(&name).unwrap_or_else(|e| panic!("create {name}: {e}"));
                self.names.push((role.to_string(), name));
                Handle::at(&ns).unwrap().links().set_up("lo").unwrap();
                ns
            }
            Maker::Ip => {
                self.names.push((role.to_string(), name.clone()));
                let o = Command::new("ip")
                    .args(["netns", "add", &name])
                    .output()
                    .unwrap();
                assert!(o.status.success());
                Command::new("ip")
                    .args(["-n", &name, "link", "set", "lo", "up"])
                    .output()
                    .unwrap();
                // No duplicate address detection on the devices made here:
                // their link-local addresses would stay tentative for a
                // second or two, and a router sends no neighbour
                // solicitation before they are valid (IPv6 traffic stalls;
                // `nodad` covers only the addresses the tests add).
                let o = Command::new("ip")
                    .args(["netns", "exec", &name, "sysctl", "-qw"])
                    .args([
                        "net.ipv6.conf.all.accept_dad=0",
                        "net.ipv6.conf.default.accept_dad=0",
                    ])
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                NetNs::open(&name).unwrap()
            }
        }
    }

    /// Stop tracking the namespace `name` (deleted by the test itself).
    pub fn forget(&mut self, name: &str) {
        self.names.retain(|(_, n)| n != name);
    }

    /// The namespace name of `role`.
    pub fn ns(&self, role: &str) -> String {
        self.names
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| panic!("no namespace for role {role}"))
    }

    /// (role, namespace name) pairs, in the order they were made.
    pub fn names(&self) -> &[(String, String)] {
        &self.names
    }

    /// `cn-<tag><k>`: every name of the set starts with it and a `-`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Run each command line with `{role}` replaced by its namespace name.
    pub fn sh(&self, lines: &[&str]) {
        for l in lines {
            let mut cmd = l.to_string();
            for (r, n) in &self.names {
                cmd = cmd.replace(&format!("{{{r}}}"), n);
            }
            let parts: Vec<&str> = cmd.split_whitespace().collect();
            let o = Command::new(parts[0]).args(&parts[1..]).output().unwrap();
            assert!(
                o.status.success(),
                "{cmd}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for (_, n) in &self.names {
            if let Err(e) = NetNs::delete(n) {
                eprintln!("cleanup of namespace {n} failed: {e}");
            }
        }
    }
}
