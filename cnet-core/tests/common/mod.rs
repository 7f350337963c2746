//! Helpers of cnet-core's privileged integration tests: what all the
//! workspace's tests share (throwaway namespaces removed by a guard, also on
//! panic; an independent reader, `ip -j …`, `bridge -j …`) comes from
//! cnet-test-support, re-exported here; the kernel probes, the etcd and
//! agent harnesses are cnet-core's own.
#![allow(dead_code)] // each test binary uses a different subset

use std::process::Command;

#[allow(unused_imports)] // each test binary uses a different subset
pub use cnet_test_support::{json_of, privileged, run, TestNs};

#[cfg(feature = "etcd")]
pub mod agents;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "aws")]
#[allow(unused_imports)] // each test binary uses a different subset
pub use cnet_test_support::moto;
#[cfg(feature = "etcd")]
pub mod scale;

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
