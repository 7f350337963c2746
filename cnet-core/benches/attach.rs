//! Attach benchmark (not a test): `cargo bench -p cnet-core --bench attach`.
//!
//! Attach, then detach, 200 containers to a bridge network three ways, in
//! one run, each container in a fresh named namespace (`/run/netns/…`) and
//! each tool's "host" a namespace of its own (nothing touches the root
//! namespace):
//!
//! 1. cnet: `BridgeNetwork::attach` / `detach`, addresses from the file
//!    store with fsync on (as in production);
//! 2. the CNI `bridge` plugin with `host-local` IPAM (Debian
//!    `containernetworking-plugins`, /usr/lib/cni), invoked as runtimes
//!    invoke it: one process per call, `CNI_COMMAND` / `CNI_CONTAINERID` /
//!    `CNI_NETNS` / `CNI_IFNAME` / `CNI_PATH` in the environment, the
//!    configuration on stdin, host-local's `dataDir` in a temporary
//!    directory;
//! 3. netavark `setup` / `teardown` (Debian `netavark`,
//!    /usr/lib/podman/netavark), configuration on stdin, static addresses
//!    as podman passes them; skipped with the reason if it cannot run. Its
//!    figures include the iptables rules it adds in its host namespace
//!    (version 1.4 has no firewall driver "none").
//!
//! The plugins are started inside their host namespace the way `nsenter
//! --net` would put them there (a `setns` between fork and exec), without
//! an extra program in between, so their figures carry no cost of ours.
//! The three tools take turns container by container, so load from other
//! processes on the machine falls on all of them alike. One container per
//! tool is attached and detached first, untimed (the CNI plugins create
//! their bridge then; cnet's `ensure` is timed on its own).
//!
//! Prints p50/p99 per attach and per detach and the ratios; the last line
//! is `attach p50: cnet X ms, CNI bridge+host-local Y ms, ratio Z×`.

use std::io::Write;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cnet_core::ipam::{FileOptions, FileStore, PoolConfig};
use cnet_core::network::{BridgeConfig, BridgeNetwork, ContainerNs};
use cnet_core::{Handle, IpNet, NetNs};

const N: usize = 200;
const MTU: u32 = 1450;

/// Named namespaces made for the run, deleted when dropped (also on panic).
struct Namespaces(Vec<String>);

impl Namespaces {
    fn create(&mut self, name: String) -> NetNs {
        let ns = NetNs::create(&name).unwrap_or_else(|e| panic!("create {name}: {e}"));
        self.0.push(name);
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            if let Err(e) = NetNs::delete(n) {
                eprintln!("cleanup of namespace {n} failed: {e}");
            }
        }
    }
}

/// Timings of one tool.
#[derive(Default)]
struct Samples {
    attach: Vec<Duration>,
    detach: Vec<Duration>,
}

fn pct(v: &[Duration], p: f64) -> f64 {
    let mut v: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// A tool under test: attach and detach container `i`.
trait Tool {
    fn name(&self) -> &'static str;
    fn attach(&mut self, i: usize) -> Result<(), String>;
    fn detach(&mut self, i: usize) -> Result<(), String>;
    /// The first container's namespace and the last one's address, to
    /// prove with a ping that what the tool made works.
    fn first_and_last(&self) -> Option<(String, IpAddr)> {
        None
    }
}

// ---------------------------------------------------------------- cnet

struct Cnet {
    net: BridgeNetwork,
    pods: Vec<String>,
    /// The address each container got.
    addrs: Vec<Option<IpAddr>>,
}

impl Tool for Cnet {
    fn name(&self) -> &'static str {
        "cnet (file store, fsync)"
    }
    fn attach(&mut self, i: usize) -> Result<(), String> {
        let a = self
            .net
            .attach(&ContainerNs::name(&self.pods[i]), &format!("c{i}"), "eth0")
            .map_err(|e| e.to_string())?;
        self.addrs[i] = Some(a.address.addr());
        Ok(())
    }
    fn first_and_last(&self) -> Option<(String, IpAddr)> {
        Some((self.pods[0].clone(), self.addrs[N - 1]?))
    }
    fn detach(&mut self, i: usize) -> Result<(), String> {
        self.net
            .detach(
                Some(&ContainerNs::name(&self.pods[i])),
                &format!("c{i}"),
                "eth0",
            )
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

// ---------------------------------------------------------------- plugins

/// Run `bin args…` inside `host`'s namespace with `env` and `stdin`; its
/// stdout, or why it failed.
fn run_in(
    host: &NetNs,
    bin: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &str,
) -> Result<String, String> {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let fd = host.as_raw_fd();
    // SAFETY: runs in the forked child before exec; setns(2) is
    // async-signal-safe and `fd` (the namespace, open in the parent) is
    // inherited by the child until exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes())
            .map_err(|e| format!("write stdin: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("wait: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{} {args:?} exited with {}: {stdout}{}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn cni_dir() -> Option<PathBuf> {
    std::env::var_os("CNI_PATH")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")])
        .find(|d| d.join("bridge").exists() && d.join("host-local").exists())
}

struct Cni {
    host: NetNs,
    dir: PathBuf,
    config: String,
    pods: Vec<String>,
}

impl Cni {
    fn call(&self, command: &str, i: usize) -> Result<(), String> {
        let cid = format!("c{i}");
        let netns = format!("/run/netns/{}", self.pods[i]);
        let path = self.dir.display().to_string();
        run_in(
            &self.host,
            &self.dir.join("bridge"),
            &[],
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", &cid),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", &path),
            ],
            &self.config,
        )
        .map(drop)
    }
}

impl Tool for Cni {
    fn name(&self) -> &'static str {
        "CNI bridge+host-local"
    }
    fn attach(&mut self, i: usize) -> Result<(), String> {
        self.call("ADD", i)
    }
    fn detach(&mut self, i: usize) -> Result<(), String> {
        self.call("DEL", i)
    }
}

const NETAVARK: &str = "/usr/lib/podman/netavark";

struct Netavark {
    host: NetNs,
    config_dir: PathBuf,
    pods: Vec<String>,
}

impl Netavark {
    /// The options podman hands netavark: one bridge network, a static
    /// address per container (podman does its own IPAM).
    fn options(&self, i: usize) -> String {
        format!(
            r#"{{"container_id":"{:064x}","container_name":"c{i}",
 "networks":{{"bench":{{"interface_name":"eth0","static_ips":["10.244.3.{}"]}}}},
 "network_info":{{"bench":{{"name":"bench","id":"{:064x}","driver":"bridge","network_interface":"cni0",
  "subnets":[{{"subnet":"10.244.3.0/24","gateway":"10.244.3.1"}}],"ipv6_enabled":false,"internal":false,
  "dns_enabled":false,"options":{{"mtu":"{MTU}"}},"ipam_options":{{"driver":"host-local"}}}}}}}}"#,
            i + 1,
            i + 2,
            0xbe9c_u32
        )
    }
    fn call(&self, command: &str, i: usize) -> Result<(), String> {
        let netns = format!("/run/netns/{}", self.pods[i]);
        let config = self.config_dir.display().to_string();
        run_in(
            &self.host,
            Path::new(NETAVARK),
            &["--config", &config, command, &netns],
            &[],
            &self.options(i),
        )
        .map(drop)
    }
}

impl Tool for Netavark {
    fn name(&self) -> &'static str {
        "netavark"
    }
    fn attach(&mut self, i: usize) -> Result<(), String> {
        self.call("setup", i)
    }
    fn detach(&mut self, i: usize) -> Result<(), String> {
        self.call("teardown", i)
    }
}

// ---------------------------------------------------------------- main

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Attach,
    Detach,
}

/// Attach (or detach) containers 0..N with every tool, timing each call:
/// container by container, the tools taking turns (`blocks` false), or
/// each tool through all N before the next starts.
fn phase(
    tools: &mut [Box<dyn Tool>],
    samples: &mut [Samples],
    failed: &mut [Option<String>],
    blocks: bool,
    op: Op,
) {
    let order: Vec<(usize, usize)> = if blocks {
        (0..tools.len())
            .flat_map(|k| (0..N).map(move |i| (k, i)))
            .collect()
    } else {
        (0..N)
            .flat_map(|i| (0..tools.len()).map(move |k| (k, i)))
            .collect()
    };
    for (k, i) in order {
        if failed[k].is_some() {
            continue;
        }
        let t = &mut tools[k];
        let s = Instant::now();
        let r = match op {
            Op::Attach => t.attach(i),
            Op::Detach => t.detach(i),
        };
        let took = s.elapsed();
        match (r, op) {
            (Ok(()), Op::Attach) => samples[k].attach.push(took),
            (Ok(()), Op::Detach) => samples[k].detach.push(took),
            (Err(e), Op::Attach) => failed[k] = Some(format!("attach c{i}: {e}")),
            (Err(e), Op::Detach) => failed[k] = Some(format!("detach c{i}: {e}")),
        }
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("attach bench SKIPPED: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)");
        return;
    }
    let pid = std::process::id();
    // CNET_BENCH_ORDER=blocks: each tool through all containers in turn
    // (default: the tools take turns container by container).
    let blocks = std::env::var("CNET_BENCH_ORDER").is_ok_and(|v| v == "blocks");
    let mut nss = Namespaces(Vec::new());
    let tmp = tempfile::tempdir().expect("temp dir");
    // N timed containers per tool, plus one untimed warm-up (index N).
    let mut pods = |tag: &str| -> Vec<String> {
        (0..=N)
            .map(|i| {
                let name = format!("cnb-{tag}-{pid}-{i}");
                nss.create(name.clone());
                name
            })
            .collect()
    };
    let cnet_pods = pods("cn");
    let cni_pods = pods("cni");
    let nv_pods = pods("nv");
    let cnet_host = nss.create(format!("cnb-cn-host-{pid}"));
    let cni_host = nss.create(format!("cnb-cni-host-{pid}"));
    let nv_host = nss.create(format!("cnb-nv-host-{pid}"));

    // cnet: the file store with fsync, as in production.
    let subnet: IpNet = "10.244.1.0/24".parse().expect("subnet");
    let store = FileStore::open_with(tmp.path().join("cnet-ipam"), FileOptions { fsync: true })
        .expect("store");
    let pool = store.pool(PoolConfig::new(subnet)).expect("pool");
    let host_handle = Handle::at(&cnet_host).expect("host handle");
    let t = Instant::now();
    let net = BridgeNetwork::ensure(
        &host_handle,
        pool,
        BridgeConfig::new("cni0", subnet).mtu(MTU),
    )
    .expect("ensure");
    let ensure_time = t.elapsed();
    let mut tools: Vec<Box<dyn Tool>> = vec![Box::new(Cnet {
        net,
        pods: cnet_pods,
        addrs: vec![None; N + 1],
    })];

    match cni_dir() {
        Some(dir) => {
            let data = tmp.path().join("host-local");
            let config = format!(
                r#"{{"cniVersion":"1.0.0","name":"cnetbench","type":"bridge","bridge":"cni0",
 "isDefaultGateway":true,"ipMasq":false,"mtu":{MTU},
 "ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.244.2.0/24"}}]],"dataDir":"{}"}}}}"#,
                data.display()
            );
            tools.push(Box::new(Cni {
                host: cni_host,
                dir,
                config,
                pods: cni_pods,
            }));
        }
        None => println!(
            "CNI bridge+host-local: SKIPPED, plugins not found (apt-get install \
             containernetworking-plugins; looked in CNI_PATH, /usr/lib/cni, /opt/cni/bin)"
        ),
    }
    if Path::new(NETAVARK).exists() {
        tools.push(Box::new(Netavark {
            host: nv_host,
            config_dir: tmp.path().join("netavark"),
            pods: nv_pods,
        }));
    } else {
        println!("netavark: SKIPPED, {NETAVARK} not found (apt-get install netavark)");
    }

    // Warm-up (untimed): the plugins create their bridge; a tool that
    // cannot run here is dropped with its reason.
    tools.retain_mut(|t| {
        let r = t.attach(N).and_then(|()| t.detach(N));
        if let Err(e) = &r {
            println!("{}: SKIPPED, it cannot run here: {e}", t.name());
        }
        r.is_ok()
    });

    let mut samples: Vec<Samples> = tools.iter().map(|_| Samples::default()).collect();
    let mut failed: Vec<Option<String>> = vec![None; tools.len()];
    phase(&mut tools, &mut samples, &mut failed, blocks, Op::Attach);
    // Proof that cnet's containers work (untimed): the first reaches the
    // last through the bridge.
    if let Some((first, last)) = tools[0].first_and_last() {
        let ok = Command::new("ip")
            .args(["netns", "exec", &first, "ping", "-c", "1", "-W", "2"])
            .arg(last.to_string())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        println!(
            "cnet: {N} containers attached; c0 → c{} ({last}) ping: {}",
            N - 1,
            if ok { "ok" } else { "FAILED" }
        );
    }
    phase(&mut tools, &mut samples, &mut failed, blocks, Op::Detach);
    let labels: Vec<&'static str> = tools.iter().map(|t| t.name()).collect();
    drop(tools);
    // Everything cnet made is gone: the store is empty.
    let left = FileStore::open(tmp.path().join("cnet-ipam"))
        .and_then(|s| s.pool(PoolConfig::new(subnet)))
        .and_then(|mut p| cnet_core::ipam::PoolStore::list(&mut p))
        .map(|l| l.len())
        .unwrap_or(usize::MAX);

    println!();
    println!(
        "attach then detach {N} containers, each in a fresh namespace; each tool's host in its own namespace"
    );
    println!(
        "cnet ensure (bridge, gateway, ip_forward): {:.2} ms; cnet allocations left after detach: {left}",
        ensure_time.as_secs_f64() * 1e3
    );
    println!(
        "  {:<26}{:>12}{:>10}{:>12}{:>10}   (ms)",
        "", "attach p50", "p99", "detach p50", "p99"
    );
    for (k, s) in samples.iter().enumerate() {
        let name = labels[k];
        if let Some(f) = &failed[k] {
            println!("  {name:<26} FAILED: {f}");
            continue;
        }
        println!(
            "  {name:<26}{:>12.3}{:>10.3}{:>12.3}{:>10.3}",
            pct(&s.attach, 50.0),
            pct(&s.attach, 99.0),
            pct(&s.detach, 50.0),
            pct(&s.detach, 99.0)
        );
    }
    if labels.contains(&"netavark") {
        println!(
            "  (netavark's figures include the iptables rules it programs in its host namespace)"
        );
    }
    let c = &samples[0];
    for (k, s) in samples.iter().enumerate().skip(1) {
        if failed[k].is_some() {
            continue;
        }
        println!(
            "  {} / cnet: attach p50 {:.1}×, p99 {:.1}×; detach p50 {:.1}×, p99 {:.1}×",
            labels[k],
            pct(&s.attach, 50.0) / pct(&c.attach, 50.0),
            pct(&s.attach, 99.0) / pct(&c.attach, 99.0),
            pct(&s.detach, 50.0) / pct(&c.detach, 50.0),
            pct(&s.detach, 99.0) / pct(&c.detach, 99.0)
        );
    }
    let cnet50 = pct(&c.attach, 50.0);
    match labels.iter().position(|n| *n == "CNI bridge+host-local") {
        Some(k) if failed[k].is_none() => {
            let cni50 = pct(&samples[k].attach, 50.0);
            println!(
                "attach p50: cnet {cnet50:.3} ms, CNI bridge+host-local {cni50:.3} ms, ratio {:.1}×",
                cni50 / cnet50
            );
        }
        _ => println!(
            "attach p50: cnet {cnet50:.3} ms, CNI bridge+host-local n/a ms (not run), ratio n/a×"
        ),
    }
}
