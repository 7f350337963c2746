//! The `cnet` CNI plugin (examples/cni-plugin) as a runtime calls it: the
//! binary built once per test process (or taken from `CNET_CNI_PLUGIN`),
//! executed with the verb and container in the environment and the
//! network configuration on stdin, inside a namespace that plays the host
//! (the child enters `/run/netns/HOST` between fork and exec, as if the
//! runtime ran there), its store in a temporary directory.
//! Shared by tests/cni_plugin.rs, tests/podman.rs and benches/cni.rs.
#![allow(dead_code)] // each test binary uses a different subset

pub mod podman;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use cnet_core::ipam::{FileStore, PoolConfig, PoolStore};
use serde_json::{json, Value};

/// The official plugins (Debian's containernetworking-plugins).
pub const CNI_PATH: &str = "/usr/lib/cni";

/// The target directory this test binary was built in (…/target).
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    // …/target/debug/deps/cni_plugin-HASH
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .expect("target directory above the test binary")
        .to_path_buf()
}

/// The plugin binary: `CNET_CNI_PLUGIN`, or built by
/// examples/cni-plugin/build over the libcnet.a of this test's own build.
pub fn plugin() -> &'static Path {
    static PLUGIN: OnceLock<PathBuf> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("CNET_CNI_PLUGIN") {
            return PathBuf::from(p);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let exe = std::env::current_exe().unwrap();
        let deps = exe.parent().unwrap();
        let out = target_dir()
            .join("cni")
            .join(format!("cnet-{}", std::process::id()));
        let mut cmd = Command::new(root.join("examples/cni-plugin/build"));
        cmd.arg(&out).env("CNET_PROFILE", "dev");
        let lib = deps.join("libcnet.a");
        if lib.exists() {
            cmd.env("CNET_LIBCNET_A", &lib);
        }
        let o = cmd.output().expect("run examples/cni-plugin/build");
        assert!(
            o.status.success(),
            "building the plugin failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        out
    })
}

/// What one plugin call printed and how it exited.
#[derive(Debug, Clone)]
pub struct Reply {
    pub ok: bool,
    pub out: Value,
    pub stderr: String,
}

impl Reply {
    /// The CNI error code (0 on success).
    pub fn code(&self) -> u64 {
        self.out["code"].as_u64().unwrap_or(0)
    }

    /// Success, with the reply in the panic otherwise.
    pub fn expect_ok(self, what: &str) -> Value {
        assert!(self.ok, "{what}: {} {}", self.out, self.stderr);
        self.out
    }

    /// Failure with `code`, the error object complete.
    pub fn expect_code(self, code: u64, what: &str) -> Value {
        assert!(!self.ok, "{what}: succeeded: {}", self.out);
        assert_eq!(self.code(), code, "{what}: {}", self.out);
        assert!(
            self.out["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.out
        );
        assert!(self.out["cniVersion"].is_string(), "{}", self.out);
        self.out
    }
}

/// Run `exe` (a CNI plugin) in namespace `host` as a runtime does.
pub fn exec_plugin(exe: &Path, host: &str, env: &[(&str, &str)], stdin: &str) -> Reply {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    // A runtime runs in the host's namespace and execs the plugin there;
    // entering it between fork and exec costs what that costs, where
    // `nsenter` would add an exec of its own (~0.8 ms here) to every call.
    let ns = std::fs::File::open(format!("/run/netns/{host}"))
        .unwrap_or_else(|e| panic!("open namespace {host}: {e}"));
    let fd = ns.as_raw_fd();
    let mut cmd = Command::new(exe);
    // SAFETY: between fork and exec the child only calls setns(2), which
    // is async-signal-safe, on a descriptor the parent keeps open (`ns`
    // lives until `spawn` returns); nothing is allocated or locked.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_PATH", CNI_PATH)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("exec {}: {e}", exe.display()));
    drop(ns);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let out = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    Reply {
        ok: o.status.success(),
        out,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A cnet network for one test: its file store in a temporary directory
/// (removed when dropped), the host namespace the plugin runs in.
pub struct Net {
    pub host: String,
    pub bridge: String,
    pub subnet: String,
    pub store: tempfile::TempDir,
}

impl Net {
    pub fn new(host: &str, tag: &str) -> Net {
        Net {
            host: host.to_string(),
            bridge: "cnet0".into(),
            subnet: "10.244.1.0/24".into(),
            store: tempfile::Builder::new()
                .prefix(&format!("cn-cni-{tag}-"))
                .tempdir()
                .expect("store directory"),
        }
    }

    /// The plugin's entry of a conflist.
    pub fn conf(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "cnet-test",
            "type": "cnet",
            "bridge": self.bridge,
            "subnet": self.subnet,
            "store": { "dir": self.store.path() },
        })
    }

    /// CNI `cmd` for container `id` (namespace path `netns`, may be "")
    /// with `conf`.
    pub fn call_with(
        &self,
        cmd: &str,
        id: &str,
        netns: &str,
        conf: &Value,
        extra: &[(&str, &str)],
    ) -> Reply {
        let mut env = vec![("CNI_COMMAND", cmd), ("CNI_IFNAME", "eth0")];
        if !id.is_empty() {
            env.push(("CNI_CONTAINERID", id));
        }
        if !netns.is_empty() {
            env.push(("CNI_NETNS", netns));
        }
        env.extend_from_slice(extra);
        exec_plugin(plugin(), &self.host, &env, &conf.to_string())
    }

    pub fn call(&self, cmd: &str, id: &str, netns: &str) -> Reply {
        self.call_with(cmd, id, netns, &self.conf(), &[])
    }

    /// ADD, which must succeed: the CNI result.
    pub fn add(&self, id: &str, netns: &str) -> Value {
        self.call("ADD", id, netns).expect_ok("ADD")
    }

    /// CHECK with `prev` as prevResult.
    pub fn check(&self, id: &str, netns: &str, prev: &Value) -> Reply {
        let mut conf = self.conf();
        conf["prevResult"] = prev.clone();
        self.call_with("CHECK", id, netns, &conf, &[])
    }

    /// The pool's own listing: (container id, address).
    pub fn allocations(&self) -> Vec<(String, String)> {
        let store = FileStore::open(self.store.path()).expect("open store");
        let mut pool = store
            .pool(PoolConfig::new(self.subnet.parse().unwrap()))
            .expect("open pool");
        pool.list()
            .expect("list")
            .into_iter()
            .map(|a| (a.container_id, a.addr.to_string()))
            .collect()
    }
}

/// The address of `dev` in namespace `ns`, read with `ip -j`.
pub fn addr_of(ns: &str, dev: &str) -> Option<String> {
    let v = cnet_test_support::json_of("ip", &["-n", ns, "-j", "addr", "show", "dev", dev]);
    v[0]["addr_info"].as_array()?.iter().find_map(|a| {
        (a["family"] == "inet")
            .then(|| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
    })
}

/// Names of the links of namespace `ns` (`ip -j link`).
pub fn links_of(ns: &str) -> Vec<String> {
    let v = cnet_test_support::json_of("ip", &["-n", ns, "-j", "link", "show"]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}
