//! Shared helpers for the privileged integration tests: throwaway
//! namespaces removed by a guard (also on panic), and an independent reader
//! (`ip -j …`, `bridge -j …`) to compare what the library made.
#![allow(dead_code)] // each test binary uses a different subset

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use cnet_core::{Handle, NetNs};
use serde_json::Value;

#[cfg(feature = "etcd")]
pub mod agents;
#[cfg(feature = "etcd")]
pub mod etcd;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

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

/// A namespace made for one test, deleted when dropped.
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
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(cmd);
        Command::new("ip")
            .args(&full)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// One ping from this namespace, 2 s deadline.
    pub fn ping(&self, dst: &str) -> bool {
        self.exec_ok(&["ping", "-c", "1", "-W", "2", dst])
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

pub fn json_of(cmd: &str, args: &[&str]) -> Value {
    let s = run(cmd, args);
    if s.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{cmd} {args:?}: bad JSON {e}: {s}"))
}

/// Whether the running kernel can make `kind` links (probed in a throwaway
/// namespace with `ip`, independent of the library). Kinds that need a
/// parent device (vlan, ipvlan) are probed on a veth.
pub fn kernel_has(kind: &str) -> bool {
    let t = TestNs::new("probe");
    let mut cmd = Command::new("ip");
    cmd.args(["-n", &t.name, "link", "add", "probe0"]);
    match kind {
        // Tunnels need distinct endpoints: a second any/any ipip would clash
        // with the kernel's fallback tunl0 ("File exists").
        "ipip" => {
            cmd.args([
                "type",
                "ipip",
                "remote",
                "198.51.100.254",
                "local",
                "198.51.100.253",
            ]);
        }
        "vlan" | "ipvlan" => {
            t.ip(&["link", "add", "p0", "type", "veth", "peer", "name", "p1"]);
            cmd.args(["link", "p0", "type", kind]);
            if kind == "vlan" {
                cmd.args(["id", "1"]);
            }
        }
        _ => {
            cmd.args(["type", kind]);
        }
    }
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

/// `has`, checked against where we run: in the stock-kernel VM
/// (`tools/vm/run` sets `CNET_IN_VM`) the feature must exist.
pub fn expect_in_vm(what: &str, has: bool) -> bool {
    let in_vm = std::env::var_os("CNET_IN_VM").is_some();
    if in_vm {
        assert!(has, "the VM's kernel must provide {what}");
    }
    eprintln!("kernel has {what}: {has} (in VM: {in_vm})");
    has
}

/// Whether this kernel has link kind `kind` ([`kernel_has`]); in the VM it
/// must ([`expect_in_vm`]).
pub fn kernel_expected(kind: &str) -> bool {
    expect_in_vm(kind, kernel_has(kind))
}
