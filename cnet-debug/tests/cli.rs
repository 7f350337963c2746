//! The `cnet-debug` binary, run for real on a cluster the test builds:
//! exit codes, and `insta` snapshots of human and JSON output with what
//! varies between runs (namespace names, MACs, indexes, timings, ids,
//! checksums, UDP source ports) filtered out.

mod cluster;

use cluster::{privileged, Cluster};

fn filters(c: &Cluster) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = c
        .names()
        .iter()
        .map(|(role, name)| (regex_escape(name), format!("<{role}>")))
        .collect();
    f.extend(
        [
            (r"([0-9a-f]{2}:){5}[0-9a-f]{2}", "<mac>"),
            (r"peer index \d+", "peer index <n>"),
            (r"link-netnsid \d+", "link-netnsid <id>"),
            (r"\d+ µs", "<t> µs"),
            (r"id \d+ seq", "id <id> seq"),
            (r"csum 0x[0-9a-f]{4}", "csum <csum>"),
            (r"udp \d+ > 8472", "udp <sport> > 8472"),
            (
                r#""(elapsed_us|rtt_us|id|checksum|src_port|ethertype)":\d+"#,
                r#""$1":"<n>""#,
            ),
            (r"REACHABLE|STALE|DELAY|PROBE", "<state>"),
            // Whether a bridge has learnt a MAC yet depends on timing.
            (r"fdb <mac> → port \(state [^)]*\)", "<bridge fdb>"),
            (
                r"<mac> not in the FDB: flooded to all ports",
                "<bridge fdb>",
            ),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string())),
    );
    f
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

fn snapshot(c: &Cluster, name: &str, out: &str) {
    let mut settings = insta::Settings::clone_current();
    for (a, b) in filters(c) {
        settings.add_filter(&a, b);
    }
    settings.bind(|| insta::assert_snapshot!(name, out));
}

#[test]
fn trace_cli_human_json_and_exit_codes() {
    if !privileged() {
        return;
    }
    let c = Cluster::build("cli");
    let from = c.ns("c1a");
    // Traffic first, so neighbour and FDB tables are settled for the snapshots.
    assert!(c.ping("c1a", "10.244.3.2"));
    assert!(c.ping("c1a", "10.244.2.2"));

    // Explanation only, across the vxlan overlay: exit 0.
    let (code, out, err) = c.cnet_debug(&["trace", "10.244.3.2", "--from", &from, "--no-capture"]);
    assert_eq!(code, 0, "{out}{err}");
    snapshot(&c, "trace_vxlan_human", &out);

    // With capture: every hop seen, exit 0.
    let (code, out, err) = c.cnet_debug(&["trace", "10.244.3.2", "--from", &from, "--capture"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains('✗'), "{out}");
    assert!(out.contains("vxlan vni 1"), "{out}");
    snapshot(&c, "trace_vxlan_capture_human", &out);

    // JSON Lines: hop* finding* capture* verdict, each {"type", "data"}.
    let (code, out, _) = c.cnet_debug(&[
        "trace",
        "10.244.2.2",
        "--from",
        &from,
        "--capture",
        "--json",
    ]);
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["type"].is_string() && l["data"].is_object()));
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "verdict");
    assert_eq!(last["data"]["ok"], true);
    assert_eq!(last["data"]["outcome"], "delivered");
    assert!(lines
        .iter()
        .any(|l| l["type"] == "capture" && l["data"]["seen"] == true));
    snapshot(&c, "trace_hostgw_json", &out);

    // A broken path: exit 1, the verdict names the hop.
    let (code, out, _) = c.cnet_debug(&["trace", "10.244.9.9", "--from", &from, "--no-capture"]);
    assert_eq!(code, 1, "{out}");
    snapshot(&c, "trace_no_route_human", &out);

    // Errors: exit 2, message prefixed with the program name.
    let (code, _, err) = c.cnet_debug(&["trace", "10.244.1.3", "--from", "cn-no-such-namespace"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("cnet-debug: "), "{err}");
    assert!(err.contains("not found"), "{err}");
    let (code, _, _) = c.cnet_debug(&["trace", "not-an-ip"]);
    assert_eq!(code, 2);

    // show: the topology at a glance.
    let (code, out, _) = c.cnet_debug(&["show", "--netns", &c.ns("h1")]);
    assert_eq!(code, 0);
    assert!(
        out.contains("flannel.1") && out.contains("vni 1") && out.contains("master cni0"),
        "{out}"
    );
}
