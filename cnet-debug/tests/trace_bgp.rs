//! `cnet-debug` on routes learnt over BGP: two hosts made with plain `ip`,
//! each running a real BIRD through cnet_core::network::bgp. `trace` names
//! the `proto bird` route it follows as learnt over BGP from the peer, and
//! `show --bird SOCKET` prints the sessions read from BIRD's control socket
//! and marks the learnt routes.
//!
//! ```text
//!   {h1} eth0 192.0.2.11 ─── eth0 192.0.2.12 {h2}    h2: cni0 10.244.2.1/24
//!   BIRD h1 (10.244.1.0/24) ◀── iBGP AS 64512 ──▶ BIRD h2 (10.244.2.0/24)
//! ```

mod cluster;

use std::process::Command;
use std::time::{Duration, Instant};

use cluster::{privileged, Plain};
use cnet_core::network::bgp::{BgpConfig, BgpPeer, BgpTimers, Bird};
use cnet_core::{Handle, NetNs};

fn cnet_debug(args: &[&str]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_cnet-debug"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

/// A directory removed when dropped.
struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn bgp_route_traced_and_shown_as_learnt_over_bgp() {
    if !privileged() {
        return;
    }
    let p = Plain::new("tbgp", &["h1", "h2"]);
    p.sh(&[
        "ip -n {h1} link add eth0 type veth peer name eth0 netns {h2}",
        "ip -n {h1} addr add 192.0.2.11/24 dev eth0",
        "ip -n {h2} addr add 192.0.2.12/24 dev eth0",
        "ip -n {h1} link set eth0 up",
        "ip -n {h2} link set eth0 up",
        "ip -n {h2} link add cni0 type bridge",
        "ip -n {h2} addr add 10.244.2.1/24 dev cni0",
        "ip -n {h2} link set cni0 up",
    ]);
    let mut dirs = Vec::new();
    let mut birds = Vec::new();
    for (role, me, peer, sub) in [("h1", 11, 12, 1), ("h2", 12, 11, 2)] {
        let dir = std::env::temp_dir().join(format!("cn-tbgp-{}-{role}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = BgpConfig::new(
            role,
            format!("192.0.2.{me}").parse().unwrap(),
            "192.0.2.0/24".parse().unwrap(),
            "eth0",
            Some(format!("10.244.{sub}.0/24").parse().unwrap()),
            "10.244.0.0/16".parse().unwrap(),
        )
        .timers(BgpTimers::fast())
        .peers(vec![BgpPeer::new(
            if role == "h1" { "h2" } else { "h1" },
            format!("192.0.2.{peer}").parse().unwrap(),
        )]);
        let h = Handle::at(&NetNs::open(&p.ns(role)).unwrap()).unwrap();
        birds.push(Bird::start(&h, &dir, &cfg).unwrap());
        dirs.push(Dir(dir));
    }
    birds[0].wait_established(Duration::from_secs(20)).unwrap();
    let t0 = Instant::now();
    while !cnet_debug(&["show", "--netns", &p.ns("h1")])
        .1
        .contains("10.244.2.0/24")
    {
        assert!(t0.elapsed() < Duration::from_secs(20), "no BGP route");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (code, out) = cnet_debug(&["trace", "10.244.2.1", "--from", &p.ns("h1"), "--no-capture"]);
    eprintln!("{out}");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("10.244.2.0/24 via 192.0.2.12 dev eth0 (table 254, proto 12) learned over BGP from peer 192.0.2.12"),
        "{out}"
    );

    let sock = birds[0].socket().display().to_string();
    let (code, out) = cnet_debug(&["show", "--netns", &p.ns("h1"), "--bird", &sock]);
    eprintln!("{out}");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "10.244.2.0/24 via 192.0.2.12 dev eth0 (proto 12, table 254) learned over BGP"
        ),
        "{out}"
    );
    let session = out.lines().find(|l| l.contains("peer_h2")).unwrap();
    assert!(
        session.contains("Established") && session.contains("192.0.2.12"),
        "{session}"
    );
    assert!(session.contains("1 received, 1 sent"), "{session}");

    let (code, out) = cnet_debug(&["show", "--netns", &p.ns("h1"), "--bird", &sock, "--json"]);
    assert_eq!(code, 0, "{out}");
    let s: serde_json::Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "bgp_session")
        .unwrap();
    assert_eq!(s["data"]["state"], "Established");
    assert_eq!(s["data"]["peer"], "h2");
    assert_eq!(s["data"]["routes_received"], 1);
    for b in birds {
        b.stop().unwrap();
    }
}
