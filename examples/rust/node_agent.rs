//! cnet's node agent: Flannel's design on cnet's library.
//!
//! Every node leases its pod subnet from a shared store (etcd), publishes
//! its underlay address and VTEP MAC with the lease, puts a bridge network
//! on the subnet (the bridge containers are attached to), and programs
//! routes to every other node's subnet with the chosen backend (host-gw,
//! vxlan, ipip, cross-subnet). It follows lease changes with a watch (no
//! polling: a peer that joins or leaves is programmed within milliseconds),
//! watches the kernel (`cnet_core::watch`) and repairs within milliseconds
//! exactly what someone else changed of its routes, neighbours, FDB
//! entries, devices and bridge ports (`DriftRepair`), renews its lease at
//! a third of its TTL, resyncs everything now and then as a safety net
//! (`--resync`, default 10 min), and on SIGTERM/SIGINT releases its lease
//! and removes its routes and tunnel devices (the bridge and containers
//! stay).
//!
//! ```sh
//! node-agent --etcd http://192.0.2.254:2379 --node h1 --underlay-dev eth0 --backend vxlan
//! ```
//!
//! Container addresses come from a file pool on this node (`--ipam-dir`):
//! attach containers with `cnet_core::network::BridgeNetwork` and the same
//! directory (the file store is safe between processes).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cnet_core::ipam::{
    EtcdConfig, EtcdStore, EtcdTls, FileStore, LeaseStore, NodeAttrs, PoolConfig, SubnetConfig,
};
use cnet_core::network::{
    vtep_mac_for, Backend, BridgeConfig, BridgeNetwork, DriftRepair, Encap, Node, NodeConfig,
    Repair,
};
use cnet_core::watch::Watch;
use cnet_core::{Error, Handle, IpNet};

/// Run one node of a cnet cluster (leases in etcd, routes to every peer).
#[derive(Parser, Debug)]
struct Args {
    /// etcd client URL (repeat for several endpoints).
    #[arg(long, required = true)]
    etcd: Vec<String>,
    /// PEM file of the CA that signed etcd's server certificates (https
    /// endpoints).
    #[arg(long)]
    etcd_cafile: Option<std::path::PathBuf>,
    /// PEM client certificate, for etcd's --client-cert-auth.
    #[arg(long, requires = "etcd_keyfile")]
    etcd_certfile: Option<std::path::PathBuf>,
    /// PEM private key of --etcd-certfile.
    #[arg(long, requires = "etcd_certfile")]
    etcd_keyfile: Option<std::path::PathBuf>,
    /// etcd user; the password comes from --etcd-password-file or the
    /// environment variable CNET_ETCD_PASSWORD, never the command line.
    #[arg(long)]
    etcd_username: Option<String>,
    /// File holding the etcd user's password (one line).
    #[arg(long, requires = "etcd_username")]
    etcd_password_file: Option<std::path::PathBuf>,
    /// Key prefix in etcd.
    #[arg(long, default_value = "/cnet")]
    prefix: String,
    /// The cluster's pod network, one /24 per node.
    #[arg(long, default_value = "10.244.0.0/16")]
    network: IpNet,
    /// This node's name (unique in the cluster).
    #[arg(long)]
    node: String,
    /// The underlay device the tunnels ride on.
    #[arg(long, default_value = "eth0")]
    underlay_dev: String,
    /// The node's underlay address (default: the first IPv4 address of --underlay-dev).
    #[arg(long)]
    underlay_ip: Option<IpAddr>,
    /// host-gw, vxlan, ipip, vxlan-cross-subnet or ipip-cross-subnet.
    #[arg(long, default_value = "vxlan")]
    backend: Backend,
    /// The bridge containers are attached to.
    #[arg(long, default_value = "cni0")]
    bridge: String,
    /// Directory of this node's container address pool (file store).
    #[arg(long, default_value = "/var/lib/cnet/ipam")]
    ipam_dir: String,
    /// Lease TTL in seconds.
    #[arg(long, default_value_t = 60)]
    ttl: u64,
    /// Full resync interval in seconds: a safety net only (lease changes
    /// and drift are both acted on as they are seen).
    #[arg(long, default_value_t = 600)]
    resync: u64,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("node-agent: {e}");
        std::process::exit(1);
    }
}

fn run(a: Args) -> Result<(), Error> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| Error::io("install signal handler", e))?;
    }
    let host = Handle::current()?;
    let underlay_ip = match a.underlay_ip {
        Some(ip) => ip,
        None => host
            .addrs()
            .list(Some(&a.underlay_dev))?
            .into_iter()
            .map(|x| x.local.addr())
            .find(|ip| ip.is_ipv4())
            .ok_or_else(|| {
                Error::invalid(
                    format!("underlay device {}", a.underlay_dev),
                    "has no IPv4 address (give --underlay-ip)",
                )
            })?,
    };
    let store = EtcdStore::open(etcd_config(&a)?)?;
    let mut leases = store.subnets(SubnetConfig::new(a.network))?;
    let ttl = Duration::from_secs(a.ttl);
    let attrs = NodeAttrs {
        underlay_ip: Some(underlay_ip),
        backend: Some(a.backend.name().to_string()),
        vtep_mac: Some(vtep_mac_for(&a.node)),
        ..Default::default()
    };
    let lease = leases.acquire(&a.node, &attrs, ttl)?;
    println!(
        "node {}: subnet {} (underlay {underlay_ip})",
        a.node, lease.subnet
    );

    // The bridge network on the subnet: containers get their MTU from it.
    let underlay_mtu = host.links().get(&a.underlay_dev)?.mtu;
    // Encapsulation overhead: vxlan 50, ipip 20, wireguard 60 (IPv4
    // underlay); cross-subnet takes its encapsulation's.
    let overhead = match &a.backend {
        Backend::HostGw => 0,
        Backend::IpIp(_) => 20,
        Backend::WireGuard(_) => 60,
        Backend::CrossSubnet {
            encap: Encap::IpIp(_),
        } => 20,
        _ => 50,
    };
    let pool = FileStore::open(&a.ipam_dir)?.pool(PoolConfig::new(lease.subnet))?;
    let net = BridgeNetwork::ensure(
        &host,
        pool,
        BridgeConfig::new(&a.bridge, lease.subnet).mtu(underlay_mtu - overhead),
    )?;
    println!("node {}: bridge {} {}", a.node, a.bridge, net.gateway());

    let node = Node::new(
        &host,
        NodeConfig::new(&a.node, lease.subnet, &a.underlay_dev, underlay_ip),
    )?;
    let mut watch = leases.watch()?;
    // The kernel watch is opened before the first reconcile, so a change
    // made while it runs is seen afterwards.
    let mut kernel = Watch::all(&host)?;
    let mut drift = DriftRepair::new();
    let renew_every = ttl / 3;
    let resync_every = Duration::from_secs(a.resync);
    let (mut renewed, mut synced) = (Instant::now(), None::<Instant>);
    let mut dirty = true;
    while !stop.load(Ordering::SeqCst) {
        if dirty || synced.is_none_or(|t| t.elapsed() >= resync_every) {
            let all = leases.list()?;
            let report = drift.reconcile_leases(&node, &a.backend, &all)?;
            if !report.is_noop() || synced.is_none() {
                let changed = |c: &cnet_core::network::Changes| c.added + c.replaced + c.deleted;
                println!(
                    "node {}: {} peers; routes/neighbours/fdb changed {}/{}/{}{}",
                    a.node,
                    report.peers.len(),
                    changed(&report.routes),
                    changed(&report.neighbours),
                    changed(&report.fdb),
                    if report.is_ok() {
                        String::new()
                    } else {
                        format!("; failed: {}", report_errors(&report))
                    }
                );
            }
            synced = Some(Instant::now());
            dirty = false;
        }
        if renewed.elapsed() >= renew_every {
            match leases.renew(&a.node, ttl) {
                Ok(_) => {}
                Err(Error::NotFound { .. }) => {
                    // Expired while we were away: take it again (the store
                    // gives a returning node its previous subnet if free).
                    let l = leases.acquire(&a.node, &attrs, ttl)?;
                    if l.subnet != lease.subnet {
                        return Err(Error::Conflict {
                            context: format!("node {}", a.node),
                            reason: format!(
                                "lost subnet {} while the lease was expired (now {}); restart the agent",
                                lease.subnet, l.subnet
                            ),
                        });
                    }
                }
                Err(e) => eprintln!("node-agent: renew: {e} (will retry)"),
            }
            renewed = Instant::now();
        }
        // Wait on the kernel (drift is repaired as it is seen), then look
        // at the leases without waiting. Short waits so a signal is acted
        // on at once; a quiet cluster costs a poll(2) per wait and nothing
        // else.
        let started = Instant::now();
        while let Some(ev) = kernel.next(if started.elapsed() < Duration::from_millis(100) {
            Duration::from_millis(100) - started.elapsed()
        } else {
            Duration::ZERO
        })? {
            let t = Instant::now();
            match drift.repair(&node, &ev) {
                Ok(Some(r)) => println!(
                    "node {}: repaired {} in {:.2} ms",
                    a.node,
                    describe(&r),
                    t.elapsed().as_secs_f64() * 1e3
                ),
                Ok(None) => {}
                // The next full reconcile tries again.
                Err(e) => eprintln!("node-agent: repair: {e}"),
            }
            match net.repair_port(&ev) {
                Ok(Some(port)) => println!("node {}: bridge port {port} set up again", a.node),
                Ok(None) => {}
                Err(e) => eprintln!("node-agent: repair: {e}"),
            }
        }
        dirty |= watch.wait(Duration::ZERO)?;
    }
    leases.release(&a.node)?;
    let r = node.teardown()?.into_result()?;
    println!(
        "node {}: released {}; routes and tunnel devices removed ({} devices)",
        a.node,
        lease.subnet,
        r.devices.len()
    );
    Ok(())
}

fn describe(r: &Repair) -> String {
    match r {
        Repair::Route { peer, dst } => format!("route {dst} to {peer}"),
        Repair::StrayRoute { dst } => format!("(deleted) stray route {dst}"),
        Repair::Neighbour { peer, ip } => format!("neighbour {ip} of {peer}"),
        Repair::Fdb { peer, mac } => format!("fdb entry {mac} of {peer}"),
        Repair::Full { reason, .. } => format!("everything ({reason})"),
        other => format!("{other:?}"),
    }
}

fn report_errors(r: &cnet_core::network::PeerReport) -> String {
    r.failed
        .iter()
        .map(|f| format!("{}: {}", f.peer, f.error))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The etcd settings of the command line: endpoints, TLS files, user and
/// password (from --etcd-password-file, else CNET_ETCD_PASSWORD).
fn etcd_config(a: &Args) -> Result<EtcdConfig, Error> {
    let endpoints: Vec<&str> = a.etcd.iter().map(String::as_str).collect();
    let mut config = EtcdConfig::new(&endpoints, &a.prefix).timeout(Duration::from_secs(5));
    if a.etcd_cafile.is_some() || a.etcd_certfile.is_some() {
        config = config.tls(EtcdTls {
            ca_file: a.etcd_cafile.clone(),
            cert_file: a.etcd_certfile.clone(),
            key_file: a.etcd_keyfile.clone(),
        });
    }
    if let Some(user) = &a.etcd_username {
        let password = match &a.etcd_password_file {
            Some(f) => std::fs::read_to_string(f)
                .map_err(|e| Error::io(format!("etcd password file {}", f.display()), e))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            None => std::env::var("CNET_ETCD_PASSWORD").map_err(|_| {
                Error::invalid(
                    "--etcd-username",
                    "needs a password: --etcd-password-file or CNET_ETCD_PASSWORD",
                )
            })?,
        };
        config = config.auth(user, &password);
    }
    Ok(config)
}
