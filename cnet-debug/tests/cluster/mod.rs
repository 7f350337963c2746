//! A three-host cluster built in namespaces with cnet-core's own calls (the
//! shared builder of cnet-test-support, made as another tool would:
//! `ip netns add`, plain bridges, routes by hand).
//!
//! ```text
//!            ul (bridge br0, 192.0.2.0/24 underlay)
//!         ┌────────────┼─────────────┐
//!   h1 eth0 .11    h2 eth0 .12    h3 eth0 .13
//!   cni0 10.244.1.1 cni0 10.244.2.1 cni0 10.244.3.1
//!   c1a .1.2, c1b .1.3   c2 .2.2        c3 .3.2
//!   h1 ↔ h2: host-gw (10.244.2.0/24 via 192.0.2.12)
//!   h1 ↔ h3: vxlan flannel.1 (VNI 1, port 8472, neighbour + FDB per peer)
//! ```
#![allow(dead_code)] // each test binary uses a different subset

pub mod cases;

use std::ops::Deref;
use std::process::Command;

pub use cnet_test_support::cluster::vtep_mac;
use cnet_test_support::cluster::{self as shared, Options, Spec};
pub use cnet_test_support::privileged;
/// Namespaces for a topology built with plain `ip` commands (not by cnet).
#[allow(unused_imports)] // each test binary uses a different subset
pub use cnet_test_support::Namespaces as Plain;

/// The shared cluster, with what only the `cnet-debug` tests use.
#[derive(Debug)]
pub struct Cluster(shared::Cluster);

impl Deref for Cluster {
    type Target = shared::Cluster;
    fn deref(&self) -> &shared::Cluster {
        &self.0
    }
}

impl Cluster {
    pub fn build(tag: &str) -> Cluster {
        let spec = Spec {
            near: 3,
            far: 0,
            containers: 0,
        };
        let mut c = shared::Cluster::build_with(tag, spec, Options::plain());
        for (role, host, last) in [("c1a", 0, 2), ("c1b", 0, 3), ("c2", 1, 2), ("c3", 2, 2)] {
            c.plug(host, role, last);
        }
        c.host_gw(0, 1);
        c.flannel_vxlan(0, 2);
        Cluster(c)
    }

    /// Run the cnet-debug binary.
    pub fn cnet_debug(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_cnet-debug"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// One ping from ROLE's namespace, 2 s deadline.
    pub fn ping(&self, role: &str, dst: &str) -> bool {
        cnet_test_support::ping_once(&self.ns(role), dst)
    }

    /// The dual-stack variant: IPv6 beside IPv4 on the same namespaces and
    /// devices, added with plain `ip` (`nodad`: no duplicate address
    /// detection to wait for).
    ///
    /// ```text
    ///   underlay fd00:192:0:2::1H/64 on each host's eth0
    ///   pods fd00:10:244:H::/64 per host: cni0 ::1, c1a ::2, c1b ::3, c2 ::2, c3 ::2
    ///   h1 ↔ h2 host-gw (fd00:10:244:2::/64 via fd00:192:0:2::12)
    ///   h1 ↔ h3 the same flannel.1 carries IPv6 inside (fd00:10:244:H::/128
    ///   on it, neighbour fd00:10:244:P:: → VTEP MAC, onlink route)
    /// ```
    pub fn dual_stack(&self) {
        for h in 1..=3u8 {
            let host = format!("h{h}");
            self.ip(
                &host,
                &[
                    "addr",
                    "add",
                    &format!("fd00:192:0:2::1{h}/64"),
                    "dev",
                    "eth0",
                    "nodad",
                ],
            );
            self.ip(
                &host,
                &[
                    "addr",
                    "add",
                    &format!("fd00:10:244:{h}::1/64"),
                    "dev",
                    "cni0",
                    "nodad",
                ],
            );
            self.sysctl(&host, "net.ipv6.conf.all.forwarding=1");
        }
        for (role, h, last) in [("c1a", 1u8, 2u8), ("c1b", 1, 3), ("c2", 2, 2), ("c3", 3, 2)] {
            self.ip(
                role,
                &[
                    "addr",
                    "add",
                    &format!("fd00:10:244:{h}::{last}/64"),
                    "dev",
                    "eth0",
                    "nodad",
                ],
            );
            self.ip(
                role,
                &[
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("fd00:10:244:{h}::1"),
                ],
            );
        }
        self.ip(
            "h1",
            &[
                "-6",
                "route",
                "add",
                "fd00:10:244:2::/64",
                "via",
                "fd00:192:0:2::12",
            ],
        );
        self.ip(
            "h2",
            &[
                "-6",
                "route",
                "add",
                "fd00:10:244:1::/64",
                "via",
                "fd00:192:0:2::11",
            ],
        );
        for (me, peer) in [(1u8, 3u8), (3, 1)] {
            let host = format!("h{me}");
            let gw = format!("fd00:10:244:{peer}::");
            self.ip(
                &host,
                &[
                    "addr",
                    "add",
                    &format!("fd00:10:244:{me}::/128"),
                    "dev",
                    "flannel.1",
                    "nodad",
                ],
            );
            self.ip(
                &host,
                &[
                    "neigh",
                    "add",
                    &gw,
                    "lladdr",
                    &vtep_mac(peer).to_string(),
                    "dev",
                    "flannel.1",
                    "nud",
                    "permanent",
                ],
            );
            self.ip(
                &host,
                &[
                    "-6",
                    "route",
                    "add",
                    &format!("fd00:10:244:{peer}::/64"),
                    "via",
                    &gw,
                    "dev",
                    "flannel.1",
                    "onlink",
                ],
            );
        }
    }
}
