//! A three-host cluster built in namespaces with cnet-core's own calls.
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

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use cnet_core::fdb::FdbEntry;
use cnet_core::link::{Bridge, MacAddr, Veth, Vxlan};
use cnet_core::neigh::Neighbour;
use cnet_core::route::Route;
use cnet_core::{Handle, NetNs};

static N: AtomicUsize = AtomicUsize::new(0);

pub fn privileged() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        if std::env::var_os("CI").is_some() {
            panic!("privileged test cannot run: not root (CI requires root)");
        }
        eprintln!("SKIPPED: needs root");
    }
    root
}

pub struct Cluster {
    /// The namespaces (role → name), deleted when the cluster is dropped.
    pub plain: Plain,
}

pub fn vtep_mac(host: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, host, 0x01])
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

impl Cluster {
    pub fn ns(&self, role: &str) -> String {
        self.plain.ns(role)
    }

    /// (role, namespace name) pairs.
    pub fn names(&self) -> &[(String, String)] {
        &self.plain.names
    }

    pub fn handle(&self, role: &str) -> Handle {
        Handle::named(&self.ns(role)).unwrap()
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

    /// `ip -n ROLE ARGS` must succeed.
    pub fn ip(&self, role: &str, args: &[&str]) {
        let ns = self.ns(role);
        let mut full = vec!["-n", ns.as_str()];
        full.extend_from_slice(args);
        let o = Command::new("ip").args(&full).output().unwrap();
        assert!(
            o.status.success(),
            "ip {full:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    pub fn ping(&self, role: &str, dst: &str) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(role),
                "ping",
                "-c",
                "1",
                "-W",
                "2",
                dst,
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    pub fn build(tag: &str) -> Cluster {
        let roles = ["ul", "h1", "h2", "h3", "c1a", "c1b", "c2", "c3"];
        let c = Cluster {
            plain: Plain::new(tag, &roles),
        };
        let ul = c.handle("ul");
        ul.links().add(Bridge::new("br0").up()).unwrap();
        for host in 1..=3u8 {
            let role = format!("h{host}");
            let h = c.handle(&role);
            let hns = NetNs::open(&c.ns(&role)).unwrap();
            // Underlay: eth0 in the host, its peer a port of ul's br0.
            ul.links()
                .add(
                    Veth::new(&format!("p{host}"), "eth0")
                        .peer_netns(&hns)
                        .master("br0")
                        .up()
                        .peer_up(),
                )
                .unwrap();
            h.addrs()
                .add("eth0", format!("192.0.2.1{host}/24").parse().unwrap())
                .unwrap();
            h.sysctl().set_ip_forward(true).unwrap();
            // The container bridge.
            h.links().add(Bridge::new("cni0").mtu(1450).up()).unwrap();
            h.addrs()
                .add("cni0", format!("10.244.{host}.1/24").parse().unwrap())
                .unwrap();
        }
        for (role, host, last) in [("c1a", 1u8, 2u8), ("c1b", 1, 3), ("c2", 2, 2), ("c3", 3, 2)] {
            let h = c.handle(&format!("h{host}"));
            let cns = NetNs::open(&c.ns(role)).unwrap();
            h.links()
                .add(
                    Veth::new(&format!("veth-{role}"), "eth0")
                        .peer_netns(&cns)
                        .master("cni0")
                        .mtu(1450)
                        .up()
                        .peer_up(),
                )
                .unwrap();
            let ch = Handle::at(&cns).unwrap();
            ch.addrs()
                .add("eth0", format!("10.244.{host}.{last}/24").parse().unwrap())
                .unwrap();
            ch.routes()
                .add(Route::to("0.0.0.0/0".parse().unwrap()).via(ip(&format!("10.244.{host}.1"))))
                .unwrap();
        }
        // host-gw between h1 and h2.
        c.handle("h1")
            .routes()
            .add(Route::to("10.244.2.0/24".parse().unwrap()).via(ip("192.0.2.12")))
            .unwrap();
        c.handle("h2")
            .routes()
            .add(Route::to("10.244.1.0/24".parse().unwrap()).via(ip("192.0.2.11")))
            .unwrap();
        // vxlan between h1 and h3, Flannel style.
        for (me, peer) in [(1u8, 3u8), (3, 1)] {
            let h = c.handle(&format!("h{me}"));
            h.links()
                .add(
                    Vxlan::new("flannel.1", 1)
                        .port(8472)
                        .local(ip(&format!("192.0.2.1{me}")))
                        .dev("eth0")
                        .learning(false)
                        .mac(vtep_mac(me))
                        .mtu(1450)
                        .up(),
                )
                .unwrap();
            h.addrs()
                .add("flannel.1", format!("10.244.{me}.0/32").parse().unwrap())
                .unwrap();
            let peer_vtep = ip(&format!("10.244.{peer}.0"));
            h.neighbours()
                .add(Neighbour::new("flannel.1", peer_vtep, vtep_mac(peer)))
                .unwrap();
            h.fdb()
                .add(
                    FdbEntry::new(vtep_mac(peer), "flannel.1")
                        .dst(ip(&format!("192.0.2.1{peer}")))
                        .on_self(),
                )
                .unwrap();
            h.routes()
                .add(
                    Route::to(format!("10.244.{peer}.0/24").parse().unwrap())
                        .via(peer_vtep)
                        .dev("flannel.1")
                        .onlink(),
                )
                .unwrap();
        }
        c
    }
}

impl Cluster {
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

    /// `sysctl -qw KEY=VALUE` inside ROLE's namespace.
    pub fn sysctl(&self, role: &str, kv: &str) {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.ns(role), "sysctl", "-qw", kv])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "sysctl {kv}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// `bridge -n ROLE ARGS` must succeed.
    pub fn bridge(&self, role: &str, args: &[&str]) {
        let ns = self.ns(role);
        let mut full = vec!["-n", ns.as_str()];
        full.extend_from_slice(args);
        let o = Command::new("bridge").args(&full).output().unwrap();
        assert!(
            o.status.success(),
            "bridge {full:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// Namespaces for a topology built with plain `ip` commands (not by cnet).
pub struct Plain {
    names: Vec<(String, String)>,
}

/// A namespace made with `ip netns add` (cnet's own creation is tested in
/// cnet-core), loopback up.
fn make_ns(name: &str) {
    let o = Command::new("ip")
        .args(["netns", "add", name])
        .output()
        .unwrap();
    assert!(o.status.success(), "ip netns add {name}");
    let o = Command::new("ip")
        .args(["-n", name, "link", "set", "lo", "up"])
        .output()
        .unwrap();
    assert!(o.status.success());
}

impl Plain {
    pub fn new(tag: &str, roles: &[&str]) -> Plain {
        let k = N.fetch_add(1, Ordering::SeqCst);
        let names: Vec<(String, String)> = roles
            .iter()
            .map(|r| {
                (
                    r.to_string(),
                    format!("cn-{tag}{k}-{r}-{}", std::process::id()),
                )
            })
            .collect();
        let p = Plain { names };
        for (_, n) in &p.names {
            let o = Command::new("ip")
                .args(["netns", "add", n])
                .output()
                .unwrap();
            assert!(o.status.success());
            Command::new("ip")
                .args(["-n", n, "link", "set", "lo", "up"])
                .output()
                .unwrap();
            // No duplicate address detection on the devices made here:
            // their link-local addresses would stay tentative for a second
            // or two, and a router sends no neighbour solicitation before
            // they are valid (IPv6 traffic stalls; `nodad` covers only the
            // addresses the tests add).
            let o = Command::new("ip")
                .args(["netns", "exec", n, "sysctl", "-qw"])
                .args([
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        p
    }

    pub fn ns(&self, role: &str) -> String {
        self.names
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, n)| n.clone())
            .unwrap()
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

impl Drop for Plain {
    fn drop(&mut self) {
        for (_, n) in &self.names {
            let _ = NetNs::delete(n);
        }
    }
}
