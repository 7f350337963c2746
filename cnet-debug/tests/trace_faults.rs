//! `cnet-debug trace` on a Docker-shaped host made with plain `ip`: one
//! fault at a time (bridge down, port down, port not forwarding, stale
//! neighbour then repaired, a stale neighbour hiding nothing, a drop the
//! tables do not show, blackhole, missing route), each traced by the real
//! binary with and without capture. Every case checks the exit code, the
//! finding and that the human and JSON verdicts say the same thing.
//!
//! ```text
//!   {host}: docker0 10.244.1.1/24 ── vethweb ─ {web} eth0 10.244.1.2
//!                                 └─ vethdb  ─ {db}  eth0 10.244.1.3
//! ```

mod cluster;

use std::process::Command;

use cluster::cases::{case, case_with, cnet_debug, lines, Run};
use cluster::{privileged, Plain};

fn docker_shaped(tag: &str) -> Plain {
    let t = Plain::new(tag, &["host", "web", "db"]);
    t.sh(&[
        "ip -n {host} link add docker0 type bridge",
        "ip -n {host} addr add 10.244.1.1/24 dev docker0",
        "ip -n {host} link set docker0 up",
        "ip -n {host} link add vethweb type veth peer name eth0 netns {web}",
        "ip -n {host} link add vethdb type veth peer name eth0 netns {db}",
        "ip -n {host} link set vethweb master docker0 up",
        "ip -n {host} link set vethdb master docker0 up",
        "ip -n {web} addr add 10.244.1.2/24 dev eth0",
        "ip -n {db} addr add 10.244.1.3/24 dev eth0",
        "ip -n {web} link set eth0 up",
        "ip -n {db} link set eth0 up",
        "ip -n {web} route add default via 10.244.1.1",
        "ip -n {db} route add default via 10.244.1.1",
    ]);
    t
}

#[test]
fn docker_shaped_faults_one_at_a_time() {
    if !privileged() {
        return;
    }
    let t = docker_shaped("flt");
    let (web, host) = (t.ns("web"), t.ns("host"));
    let dst = "10.244.1.3";

    let c = case("healthy", &web, dst);
    assert_eq!(c.codes, (0, 0), "{c:?}");
    assert_eq!(c.verdict["agreement"], "confirmed");

    // The bridge down: every port goes to STP state disabled.
    t.sh(&["ip -n {host} link set docker0 down"]);
    let c = case("bridge down", &web, dst);
    assert_eq!(c.codes, (1, 1), "{c:?}");
    assert!(c.findings.0.contains(&"bridge_down".into()), "{c:?}");
    assert!(
        c.hop_ns.contains(&("bridge_down".into(), host.clone())),
        "{c:?}"
    );
    assert_eq!(c.verdict["agreement"], "confirmed");
    t.sh(&["ip -n {host} link set docker0 up"]);

    // The port to db down.
    t.sh(&["ip -n {host} link set vethdb down"]);
    let c = case("port down", &web, dst);
    assert_eq!(c.codes, (1, 1), "{c:?}");
    assert!(
        c.hop_ns.contains(&("link_down".into(), host.clone())),
        "{c:?}"
    );
    t.sh(&["ip -n {host} link set vethdb up"]);

    // The port to db in a non-forwarding STP state: kernel STP on, the port
    // bounced, so it listens for forward_delay (10 s) before forwarding.
    t.sh(&[
        "ip -n {host} link set docker0 type bridge forward_delay 1000 stp_state 1",
        "ip -n {host} link set vethdb down",
        "ip -n {host} link set vethdb up",
    ]);
    let c = case("port blocking", &web, dst);
    assert_eq!(c.codes, (1, 1), "{c:?}");
    assert!(
        c.hop_ns.contains(&("port_blocked".into(), host.clone())),
        "{c:?}"
    );
    t.sh(&[
        "ip -n {host} link set docker0 type bridge stp_state 0",
        "ip -n {host} link set vethdb down",
        "ip -n {host} link set vethdb up",
    ]);

    // A FAILED entry left by an earlier attempt, the path since repaired:
    // a warning, the path followed, the capture decides (reply: OK).
    let stale = || t.sh(&["ip -n {web} neigh replace 10.244.1.3 dev eth0 nud failed"]);
    let c = case_with("stale neighbour, repaired", &web, dst, &stale);
    assert_eq!(c.codes, (0, 0), "{c:?}");
    assert!(c.findings.0.contains(&"neigh_failed".into()), "{c:?}");
    assert!(c.findings.1.contains(&"neigh_failed".into()), "{c:?}");
    assert_eq!(c.verdict["agreement"], "confirmed");

    // The same stale entry does not hide a real fault further on.
    t.sh(&[
        "ip -n {web} neigh replace 10.244.1.3 dev eth0 nud incomplete",
        "ip -n {host} link set vethdb down",
    ]);
    let c = case("stale neighbour, port down", &web, dst);
    assert_eq!(c.codes, (1, 1), "{c:?}");
    assert!(c.findings.0.contains(&"neigh_failed".into()), "{c:?}");
    assert!(
        c.hop_ns.contains(&("link_down".into(), host.clone())),
        "{c:?}"
    );
    assert_eq!(c.verdict["hop"], 3, "{c:?}");
    t.sh(&["ip -n {host} link set vethdb up"]);

    // A drop the tables do not show (a bridge-family nftables rule): the
    // model says OK, the capture loses the probe after hop 2; one verdict.
    t.sh(&[
        "ip netns exec {host} nft add table bridge cnt",
        "ip netns exec {host} nft add chain bridge cnt fw { type filter hook forward priority 0 ; policy drop ; }",
        "ip netns exec {host} nft add rule bridge cnt fw ether type arp accept",
        "ip -n {web} neigh flush dev eth0",
    ]);
    let c = case("unseen drop", &web, dst);
    assert_eq!(c.codes.1, 1, "{c:?}");
    assert_eq!(c.verdict["model_ok"], true, "{c:?}");
    assert_eq!(c.verdict["agreement"], "vanished", "{c:?}");
    assert!(
        c.hop_ns.contains(&("vanished".into(), host.clone())),
        "{c:?}"
    );
    t.sh(&["ip netns exec {host} nft delete table bridge cnt"]);

    // A blackhole in the container.
    t.sh(&["ip -n {web} route add blackhole 10.244.1.3/32"]);
    let c = case("blackhole", &web, dst);
    assert_eq!(c.codes, (1, 1), "{c:?}");
    assert!(
        c.hop_ns.contains(&("blackhole".into(), web.clone())),
        "{c:?}"
    );
    t.sh(&["ip -n {web} route del blackhole 10.244.1.3/32"]);

    // No route: the container's default route gone, a destination off-link.
    t.sh(&["ip -n {web} route del default"]);
    let c = case("missing route", &web, "203.0.113.9");
    assert_eq!(c.codes, (1, 1), "{c:?}");
    assert!(
        c.hop_ns.contains(&("no_route".into(), web.clone())),
        "{c:?}"
    );
    t.sh(&["ip -n {web} route add default via 10.244.1.1"]);

    let c = case("healthy again", &web, dst);
    assert_eq!(c.codes, (0, 0), "{c:?}");
}

/// Processes holding namespaces that have no name (as Docker's containers
/// do), killed and reaped when dropped, even on panic.
struct Holders(Vec<std::process::Child>);

impl Holders {
    /// A process in a new, unnamed network namespace (`unshare --net`).
    fn spawn(&mut self) -> u32 {
        let c = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .spawn()
            .unwrap();
        let pid = c.id();
        self.0.push(c);
        // unshare has switched namespaces once the link differs from ours.
        let mine = std::fs::read_link("/proc/self/ns/net").unwrap();
        for _ in 0..1000 {
            if std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|l| l != mine) {
                return pid;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("unshare --net did not start");
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn in_ns(pid: u32, cmd: &str) {
    let net = format!("--net=/proc/{pid}/ns/net");
    let mut args = vec![net.as_str()];
    args.extend(cmd.split_whitespace());
    let o = Command::new("nsenter").args(&args).output().unwrap();
    assert!(
        o.status.success(),
        "nsenter {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn containers_in_namespaces_without_a_name() {
    if !privileged() {
        return;
    }
    let t = Plain::new("unn", &["host"]);
    let mut holders = Holders(Vec::new());
    let (a, b) = (holders.spawn(), holders.spawn());
    t.sh(&[
        "ip -n {host} link add docker0 type bridge",
        "ip -n {host} addr add 10.244.1.1/24 dev docker0",
        "ip -n {host} link set docker0 up",
    ]);
    for (pid, veth, ip) in [(a, "vethaaa", "10.244.1.2"), (b, "vethbbb", "10.244.1.3")] {
        t.sh(&[
            &format!("ip -n {{host}} link add {veth} type veth peer name eth0 netns {pid}"),
            &format!("ip -n {{host}} link set {veth} master docker0 up"),
        ]);
        in_ns(pid, "ip link set lo up");
        in_ns(pid, &format!("ip addr add {ip}/24 dev eth0"));
        in_ns(pid, "ip link set eth0 up");
        in_ns(pid, "ip route add default via 10.244.1.1");
    }
    let (pa, pb) = (a.to_string(), format!("/proc/{b}/ns/net"));
    let label_a = format!("pid {a} (sleep)");
    let label_b = format!("pid {b} (sleep)");

    // A → B, the source given as a PID; cold ARP cache, then warm.
    for round in ["cold", "warm"] {
        let c = case(&format!("unnamed {round}"), &pa, "10.244.1.3");
        assert_eq!(c.codes, (0, 0), "{round}: {c:?}");
        assert_eq!(c.verdict["from"], label_a.as_str(), "{c:?}");
        assert_eq!(c.verdict["netns"], label_b.as_str(), "{c:?}");
    }
    // B → A, given as /proc/PID/ns/net.
    let c = case("unnamed by path", &pb, "10.244.1.2");
    assert_eq!(c.codes, (0, 0), "{c:?}");
    assert_eq!(c.verdict["netns"], label_a.as_str(), "{c:?}");

    // Nobody has the address: said as such, not "somewhere I cannot see".
    in_ns(a, "ip neigh flush dev eth0");
    let j = cnet_debug(&[
        "trace",
        "10.244.1.9",
        "--from",
        &pa,
        "--no-capture",
        "--json",
    ]);
    assert_eq!(j.code, 1, "{}", j.out);
    assert!(
        j.out.contains("nothing behind its ports has it"),
        "{}",
        j.out
    );

    // A named namespace given by a process inside it keeps its name.
    let mut named = Command::new("ip")
        .args(["netns", "exec", &t.ns("host"), "sleep", "600"])
        .spawn()
        .unwrap();
    let via_pid = format!("/proc/{}/ns/net", named.id());
    let mut j = Run {
        code: -1,
        out: String::new(),
        ms: 0,
    };
    for _ in 0..1000 {
        j = cnet_debug(&[
            "trace",
            "10.244.1.2",
            "--from",
            &via_pid,
            "--no-capture",
            "--json",
        ]);
        if j.out.contains(&format!("\"from\":\"{}\"", t.ns("host"))) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = named.kill();
    let _ = named.wait();
    assert!(
        j.out.contains(&format!("\"from\":\"{}\"", t.ns("host"))),
        "{}",
        j.out
    );

    // show names the peers' namespaces, and the root namespace as trace does.
    let s = cnet_debug(&["show", "--netns", &t.ns("host")]);
    assert!(s.out.contains(&format!(" in {label_a}")), "{}", s.out);
    assert!(s.out.contains(&format!(" in {label_b}")), "{}", s.out);
    let s = cnet_debug(&["show"]);
    let me = cnet_debug::nsnames::current_label();
    assert!(
        s.out.starts_with(&format!("netns {me}\n")),
        "{}",
        &s.out[..s.out.len().min(200)]
    );
    let j = cnet_debug(&["trace", "127.0.0.1", "--no-capture", "--json"]);
    assert!(j.out.contains(&format!("\"from\":\"{me}\"")), "{}", j.out);
}

/// Docker's firewall, written with iptables-nft as dockerd writes it:
/// FORWARD policy DROP, containers may go out, MASQUERADE on the way out.
#[test]
fn docker_firewall_forward_drop_and_masquerade() {
    if !privileged() {
        return;
    }
    let t = Plain::new("fw", &["host", "web", "ext"]);
    t.sh(&[
        "ip -n {host} link add docker0 type bridge",
        "ip -n {host} addr add 10.244.1.1/24 dev docker0",
        "ip -n {host} link set docker0 up",
        "ip -n {host} link add vethweb type veth peer name eth0 netns {web}",
        "ip -n {host} link set vethweb master docker0 up",
        "ip -n {web} addr add 10.244.1.2/24 dev eth0",
        "ip -n {web} link set eth0 up",
        "ip -n {web} route add default via 10.244.1.1",
        "ip -n {host} link add eth0 type veth peer name eth0 netns {ext}",
        "ip -n {host} addr add 203.0.113.1/24 dev eth0",
        "ip -n {host} link set eth0 up",
        "ip -n {ext} addr add 203.0.113.2/24 dev eth0",
        "ip -n {ext} link set eth0 up",
        "ip netns exec {host} sysctl -qw net.ipv4.ip_forward=1",
        "ip netns exec {host} iptables-nft -P FORWARD DROP",
    ]);
    let (web, host) = (t.ns("web"), t.ns("host"));
    let c = case("forward policy drop", &web, "203.0.113.2");
    assert_eq!(c.codes, (1, 1), "{c:?}");
    assert!(
        c.hop_ns.contains(&("firewall_drop".into(), host.clone())),
        "{c:?}"
    );
    assert_eq!(c.verdict["agreement"], "confirmed", "{c:?}");

    t.sh(&[
        "ip netns exec {host} iptables-nft -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "ip netns exec {host} iptables-nft -A FORWARD -i docker0 ! -o docker0 -j ACCEPT",
        "ip netns exec {host} iptables-nft -t nat -A POSTROUTING -s 10.244.1.0/24 ! -o docker0 -j MASQUERADE",
    ]);
    let c = case("accepted, masqueraded", &web, "203.0.113.2");
    assert_eq!(c.codes, (0, 0), "{c:?}");
    assert!(c.hop_ns.contains(&("snat".into(), host.clone())), "{c:?}");
    // The capture on the host's way out sees the rewritten source.
    let j = cnet_debug(&[
        "trace",
        "203.0.113.2",
        "--from",
        &web,
        "--capture",
        "--json",
    ]);
    let out = lines(&j.out);
    assert!(
        out.iter().any(|l| l["type"] == "capture"
            && l["data"]["netns"] == host.as_str()
            && l["data"]["ifname"] == "eth0"
            && l["data"]["frame"]
                .to_string()
                .contains("\"src\":\"203.0.113.1\"")),
        "{}",
        j.out
    );
}
