//! `cnet-debug trace` on a network made by the real CNI `bridge` plugin
//! (Debian's containernetworking-plugins, /usr/lib/cni) with `host-local`
//! IPAM in a temporary data directory. The plugin runs inside a namespace
//! that plays the host (`ip netns exec HOST bridge`), so its bridge,
//! sysctls and addresses never touch the root namespace; a guard runs
//! CNI DEL for every container and removes the IPAM directory, even on
//! panic.
//!
//! ```text
//!   {host}: cni0 10.244.1.1/24 (isGateway) ── veth… ─ {a} eth0 (host-local)
//!                                          └─ veth… ─ {b} eth0 (host-local)
//! ```

mod cluster;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cluster::cases::case;
use cluster::{privileged, Plain};
use serde_json::Value;

const CNI_PATH: &str = "/usr/lib/cni";

/// The CNI plugins are installed (CI: always; elsewhere the test says so).
fn cni_available() -> bool {
    let ok = Path::new(CNI_PATH).join("bridge").exists();
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{CNI_PATH}/bridge is missing (CI installs containernetworking-plugins)");
        }
        eprintln!(
            "SKIPPED: {CNI_PATH}/bridge is missing (apt-get install containernetworking-plugins)"
        );
    }
    ok
}

/// The containers added through the plugin, deleted (CNI DEL) when
/// dropped, then the IPAM data directory removed.
struct CniNet {
    host: String,
    conf: String,
    data_dir: PathBuf,
    added: Vec<(String, String)>,
}

impl CniNet {
    fn new(host: &str, tag: &str) -> CniNet {
        let data_dir = std::env::temp_dir().join(format!("cn-cni-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&data_dir).unwrap();
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("cn-{tag}"),
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "subnet": "10.244.1.0/24",
                "dataDir": data_dir,
                "routes": [{ "dst": "0.0.0.0/0" }]
            }
        })
        .to_string();
        CniNet {
            host: host.to_string(),
            conf,
            data_dir,
            added: Vec::new(),
        }
    }

    /// Run the plugin in the host namespace: `CNI_COMMAND=cmd`.
    fn plugin(&self, cmd: &str, id: &str, netns: &str) -> std::io::Result<std::process::Output> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.host, &format!("{CNI_PATH}/bridge")])
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", format!("/run/netns/{netns}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_PATH)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(self.conf.as_bytes())?;
        child.wait_with_output()
    }

    /// CNI ADD; returns the container's IPv4 address.
    fn add(&mut self, id: &str, netns: &str) -> String {
        let o = self.plugin("ADD", id, netns).unwrap();
        self.added.push((id.to_string(), netns.to_string()));
        assert!(
            o.status.success(),
            "CNI ADD {id}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        let a = r["ips"][0]["address"].as_str().unwrap();
        a.split('/').next().unwrap().to_string()
    }
}

impl Drop for CniNet {
    fn drop(&mut self) {
        for (id, netns) in std::mem::take(&mut self.added).into_iter().rev() {
            let _ = self.plugin("DEL", &id, &netns);
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

#[test]
fn cni_bridge_plugin_healthy_then_bridge_down() {
    if !privileged() || !cni_available() {
        return;
    }
    let t = Plain::new("cni", &["host", "a", "b"]);
    let mut net = CniNet::new(&t.ns("host"), "br");
    let _ip_a = net.add("cnet-test-a", &t.ns("a"));
    let ip_b = net.add("cnet-test-b", &t.ns("b"));
    let (a, host) = (t.ns("a"), t.ns("host"));

    // An independent reader: the plugin's bridge, with both ports.
    let o = Command::new("ip")
        .args(["-n", &host, "-j", "link", "show", "master", "cni0"])
        .output()
        .unwrap();
    let ports: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ports.as_array().map(Vec::len), Some(2), "{ports}");
    let ping = |ns: &str, dst: &str| {
        Command::new("ip")
            .args(["netns", "exec", ns, "ping", "-c", "1", "-W", "1", dst])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(ping(&a, &ip_b));

    let c = case("cni healthy", &a, &ip_b);
    assert_eq!(c.codes, (0, 0), "{c:?}");
    assert_eq!(c.verdict["agreement"], "confirmed", "{c:?}");
    assert_eq!(c.verdict["netns"], t.ns("b").as_str(), "{c:?}");

    t.sh(&["ip -n {host} link set cni0 down"]);
    assert!(!ping(&a, &ip_b));
    let c = case("cni bridge down", &a, &ip_b);
    assert_eq!(c.codes, (1, 1), "{c:?}");
    assert!(c.findings.0.contains(&"bridge_down".into()), "{c:?}");
    assert!(
        c.hop_ns.contains(&("bridge_down".into(), host.clone())),
        "{c:?}"
    );
    assert_eq!(c.verdict["agreement"], "confirmed", "{c:?}");
    t.sh(&["ip -n {host} link set cni0 up"]);

    let c = case("cni healthy again", &a, &ip_b);
    assert_eq!(c.codes, (0, 0), "{c:?}");
}
