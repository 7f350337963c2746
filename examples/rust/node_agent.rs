//! cnet's node agent: Flannel's design on cnet's library.
//!
//! Every node leases its pod subnet from a shared store (etcd), publishes
//! its underlay address and VTEP MAC with the lease, puts a bridge network
//! on the subnet (the bridge containers are attached to), and programs
//! routes to every other node's subnet with the chosen backend (host-gw,
//! vxlan, ipip, cross-subnet). It follows lease changes with a watch (no
//! polling: a peer that joins or leaves is programmed within milliseconds),
//! renews its lease at a third of its TTL, resyncs everything now and then
//! as a safety net, and on SIGTERM/SIGINT releases its lease and removes
//! its routes and tunnel devices (the bridge and containers stay).
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
use cnet_core::ipam::{EtcdStore, FileStore, LeaseStore, NodeAttrs, PoolConfig, SubnetConfig};
use cnet_core::network::{vtep_mac_for, Backend, BridgeConfig, BridgeNetwork, Node, NodeConfig};
use cnet_core::{Error, Handle, IpNet};

/// Run one node of a cnet cluster (leases in etcd, routes to every peer).
#[derive(Parser, Debug)]
struct Args {
    /// etcd client URL (repeat for several endpoints).
    #[arg(long, required = true)]
    etcd: Vec<String>,
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
    /// Full resync interval in seconds (the watch does the real work).
    #[arg(long, default_value_t = 60)]
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
    let endpoints: Vec<&str> = a.etcd.iter().map(String::as_str).collect();
    let store = EtcdStore::connect(&endpoints, &a.prefix, Duration::from_secs(5))?;
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
    let overhead = match &a.backend {
        Backend::HostGw => 0,
        Backend::IpIp(_) => 20,
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
    let renew_every = ttl / 3;
    let resync_every = Duration::from_secs(a.resync);
    let (mut renewed, mut synced) = (Instant::now(), None::<Instant>);
    let mut dirty = true;
    while !stop.load(Ordering::SeqCst) {
        if dirty || synced.is_none_or(|t| t.elapsed() >= resync_every) {
            let all = leases.list()?;
            let report = node.reconcile_leases(&a.backend, &all)?;
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
        // Short waits so a signal is acted on at once; a quiet cluster
        // costs a poll(2) per wait and nothing else.
        dirty |= watch.wait(Duration::from_millis(250))?;
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

fn report_errors(r: &cnet_core::network::PeerReport) -> String {
    r.failed
        .iter()
        .map(|f| format!("{}: {}", f.peer, f.error))
        .collect::<Vec<_>>()
        .join("; ")
}
