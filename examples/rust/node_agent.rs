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
//!
//! # When the store fails
//!
//! - **The subnet it holds comes first.** At start the agent reads the
//!   subnet it already holds (`held_subnet`: its bridge's gateway address,
//!   else its IPAM directory's pool) and claims exactly that
//!   (`LeaseStore::claim`); it never takes a lease that contradicts its
//!   kernel. Only a node with no bridge address takes another free subnet.
//! - **etcd away (restarting, unreachable, slow):** no store error stops
//!   the agent. Calls are retried with a capped, jittered backoff (from
//!   100 ms to a quarter of the TTL), each bounded by a fifth of the TTL
//!   (0.5–5 s). The kernel keeps what it has: routes are never removed
//!   because the store cannot be read (stale beats empty), and drift is
//!   still repaired. When etcd answers again the agent reconnects, renews
//!   (or, if its lease expired meanwhile, claims its subnet again) and
//!   lists the peers; for one TTL after a reconnection a peer missing from
//!   the list is kept (its owner may not have republished yet), unless
//!   another lease covers its subnet.
//! - **etcd lost its data** (an empty or older etcd at the same endpoint:
//!   the store's revision went back): the same, every agent claims its own
//!   subnet again; the claims are compare-and-swap transactions, so no
//!   subnet is ever given twice.
//! - **Its subnet is someone else's now** (the lease expired while the node
//!   was cut off, and another node was given the subnet): the agent removes
//!   its routes to peers and its tunnel devices, says so on stderr and
//!   exits with status 3. It does not take a new subnet: its containers
//!   hold addresses in the old one, and only the operator can move them;
//!   keeping the routes would send their traffic as if it were the new
//!   owner's. Drain the node, delete its bridge, restart the agent (it then
//!   takes a free subnet). At start, a bridge whose subnet is another
//!   node's lease ends the same way.
//! - **The agent itself is killed:** a restarted agent finds its lease (or
//!   claims its subnet) and the kernel state as it was: nothing is lost.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cnet_core::ipam::{
    Backoff, EtcdLeases, EtcdStore, FileStore, LeaseStore, LeaseWatch, NodeAttrs, NodeLease,
    PoolConfig, SubnetConfig,
};
use cnet_core::network::{
    held_subnet, vtep_mac_for, Backend, BridgeConfig, BridgeNetwork, DriftRepair, Encap,
    HeldSubnet, Node, NodeConfig, Repair,
};
use cnet_core::watch::Watch;
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
    let ttl = Duration::from_secs(a.ttl);
    let config = SubnetConfig::new(a.network);
    let ipam = FileStore::open(&a.ipam_dir)?;
    let held = held_subnet(
        &host,
        &a.bridge,
        Some(&ipam),
        &config.network,
        config.subnet_len,
    )?;
    let mut store = Store::new(&a.etcd, &a.prefix, config, ttl);
    let attrs = NodeAttrs {
        underlay_ip: Some(underlay_ip),
        backend: Some(a.backend.name().to_string()),
        vtep_mac: Some(vtep_mac_for(&a.node)),
        ..Default::default()
    };
    // The subnet this node holds first; wait for the store as long as it
    // takes (nothing is routed yet that the store could contradict).
    let lease = loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        match store.call("lease", |l| lease_held(l, &a.node, held, &attrs, ttl)) {
            Some(Ok(l)) => break l,
            Some(Err(e @ Error::Conflict { .. })) if matches!(held, HeldSubnet::Bridge(_)) => {
                let subnet = held.subnet().unwrap_or(a.network);
                let node = Node::new(
                    &host,
                    NodeConfig::new(&a.node, subnet, &a.underlay_dev, underlay_ip),
                )?;
                lost(&node, &a.node, &a.bridge, subnet, &e);
            }
            Some(Err(e)) => return Err(e),
            None => store.wait(&stop),
        }
    };
    println!(
        "node {}: subnet {} (underlay {underlay_ip}; held: {held:?})",
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
    let pool = ipam.pool(PoolConfig::new(lease.subnet))?;
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
    // The kernel watch is opened before the first reconcile, so a change
    // made while it runs is seen afterwards.
    let mut kernel = Watch::all(&host)?;
    let mut drift = DriftRepair::new();
    let resync_every = Duration::from_secs(a.resync);
    let mut renew_at = Instant::now() + ttl / 3;
    let mut synced = None::<Instant>;
    // Peers as last programmed, and until when a peer missing from the
    // store is kept (after a reconnection: its owner may not be back yet).
    let (mut peers, mut keep_missing_until) = (Vec::<NodeLease>::new(), None::<Instant>);
    let mut dirty = true;
    while !stop.load(Ordering::SeqCst) {
        if store.reconnected() {
            dirty = true;
            keep_missing_until = Some(Instant::now() + ttl);
        }
        if keep_missing_until.is_some_and(|t| Instant::now() >= t) {
            keep_missing_until = None;
            dirty = true;
        }
        if renew_at <= Instant::now() {
            match store.call("renew", |l| renew(l, &a.node, &lease, &attrs, ttl)) {
                Some(Ok(taken_back)) => {
                    if taken_back {
                        println!(
                            "node {}: took back {} (its lease was gone from the store)",
                            a.node, lease.subnet
                        );
                        dirty = true;
                    }
                    renew_at = Instant::now() + ttl / 3;
                }
                Some(Err(e)) => lost(&node, &a.node, &a.bridge, lease.subnet, &e),
                None => {} // retried when the backoff allows
            }
        }
        if dirty || synced.is_none_or(|t| t.elapsed() >= resync_every) {
            let listed = match store.call("list leases", |l| l.list()) {
                Some(Ok(all)) => Some(all),
                Some(Err(e)) => {
                    eprintln!("node-agent: list leases: {e}");
                    None
                }
                None => None,
            };
            if let Some(all) = listed {
                if store.reconnected() {
                    keep_missing_until = Some(Instant::now() + ttl);
                }
                peers = match keep_missing_until {
                    Some(_) => with_missing(all, &peers),
                    None => all,
                };
                let report = drift.reconcile_leases(&node, &a.backend, &peers)?;
                if !report.is_noop() || synced.is_none() {
                    let changed =
                        |c: &cnet_core::network::Changes| c.added + c.replaced + c.deleted;
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
        dirty |= store.changed();
    }
    store.backoff.reset(); // one try, now
    match store.call("release", |l| l.release(&a.node)) {
        Some(Ok(())) => {}
        // It expires by itself.
        Some(Err(e)) => eprintln!("node-agent: release: {e}"),
        None => {}
    }
    let r = node.teardown()?.into_result()?;
    println!(
        "node {}: released {}; routes and tunnel devices removed ({} devices)",
        a.node,
        lease.subnet,
        r.devices.len()
    );
    Ok(())
}

/// The agent's side of the lease store. No store error is fatal here: a
/// call that fails for want of a working etcd (timeout, refused, an HTTP
/// error, a store whose history went back) drops the connection and backs
/// off; the next call, once the backoff allows, reconnects (a new client,
/// the network registered again, a new lease watch). What the store
/// answers (`NotFound`, `Conflict`, …) goes to the caller.
struct Store {
    endpoints: Vec<String>,
    prefix: String,
    config: SubnetConfig,
    timeout: Duration,
    conn: Option<(EtcdLeases, Box<dyn LeaseWatch>)>,
    backoff: Backoff,
    connections: u32,
    reconnected: bool,
}

impl Store {
    fn new(endpoints: &[String], prefix: &str, config: SubnetConfig, ttl: Duration) -> Store {
        Store {
            endpoints: endpoints.to_vec(),
            prefix: prefix.to_string(),
            config,
            // A call never blocks the loop (and its drift repair) long.
            timeout: (ttl / 5).clamp(Duration::from_millis(500), Duration::from_secs(5)),
            conn: None,
            backoff: Backoff::new(
                Duration::from_millis(100),
                (ttl / 4).max(Duration::from_millis(200)),
            ),
            connections: 0,
            reconnected: false,
        }
    }

    /// Run `f` against the store if the backoff allows: `None` when it
    /// does not, or when the store could not be reached (said on stderr).
    fn call<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut EtcdLeases) -> Result<T, Error>,
    ) -> Option<Result<T, Error>> {
        if !self.backoff.ready() {
            return None;
        }
        // Any failure to connect (a network registered with another
        // configuration included) is the store's trouble, not the call's.
        let (connected, r) = match self.connect() {
            Ok((leases, _)) => (true, f(leases)),
            Err(e) => (false, Err(e)),
        };
        match r {
            Err(e)
                if !connected
                    || matches!(
                        e,
                        Error::Timeout { .. }
                            | Error::Io { .. }
                            | Error::Protocol { .. }
                            | Error::Corrupt { .. }
                    ) =>
            {
                self.conn = None;
                let wait = self.backoff.failed();
                eprintln!("node-agent: {what}: {e} (retry in {} ms)", wait.as_millis());
                None
            }
            r => {
                self.backoff.reset();
                Some(r)
            }
        }
    }

    fn connect(&mut self) -> Result<&mut (EtcdLeases, Box<dyn LeaseWatch>), Error> {
        if self.conn.is_none() {
            let endpoints: Vec<&str> = self.endpoints.iter().map(String::as_str).collect();
            let store = EtcdStore::connect(&endpoints, &self.prefix, self.timeout)?;
            let mut leases = store.subnets(self.config.clone())?;
            let watch = leases.watch()?;
            self.connections += 1;
            self.reconnected |= self.connections > 1;
            if self.connections > 1 {
                println!(
                    "node-agent: etcd answers again (connection {})",
                    self.connections
                );
            }
            self.conn = Some((leases, watch));
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Whether a connection was made again since the last call (the agent
    /// then lists the leases and keeps missing peers for a while).
    fn reconnected(&mut self) -> bool {
        std::mem::take(&mut self.reconnected)
    }

    /// Whether the lease watch says the leases changed; a watch that
    /// failed drops the connection (made again on the next call).
    fn changed(&mut self) -> bool {
        let Some((_, watch)) = self.conn.as_mut() else {
            return false;
        };
        match watch.wait(Duration::ZERO) {
            Ok(changed) => changed,
            Err(e) => {
                eprintln!("node-agent: lease watch: {e} (reconnecting)");
                self.conn = None;
                true
            }
        }
    }

    /// Sleep until the backoff allows the next call, or a signal came.
    fn wait(&self, stop: &AtomicBool) {
        while !self.backoff.ready() && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The first lease: exactly the subnet the bridge holds; the pool's
/// subnet if free (else any); any free subnet when nothing is held.
fn lease_held(
    l: &mut EtcdLeases,
    node: &str,
    held: HeldSubnet,
    attrs: &NodeAttrs,
    ttl: Duration,
) -> Result<NodeLease, Error> {
    match held {
        HeldSubnet::Bridge(s) => l.claim(node, s, attrs, ttl),
        HeldSubnet::Pool(s) => match l.claim(node, s, attrs, ttl) {
            Err(Error::Conflict { .. }) => l.acquire(node, attrs, ttl),
            r => r,
        },
        _ => l.acquire(node, attrs, ttl),
    }
}

/// Renew `lease`; if it is gone from the store (expired while the node was
/// cut off, or the store lost it), claim its subnet again: `Ok(true)` then.
/// `Conflict` when the subnet is another node's now.
fn renew(
    l: &mut EtcdLeases,
    node: &str,
    lease: &NodeLease,
    attrs: &NodeAttrs,
    ttl: Duration,
) -> Result<bool, Error> {
    let now = match l.renew(node, ttl) {
        Ok(now) => now,
        Err(Error::NotFound { .. }) => {
            l.claim(node, lease.subnet, attrs, ttl)?;
            return Ok(true);
        }
        Err(e) => return Err(e),
    };
    if now.subnet != lease.subnet {
        return Err(Error::Conflict {
            context: format!("node {node}"),
            reason: format!(
                "the store says it holds {}, not {}",
                now.subnet, lease.subnet
            ),
        });
    }
    Ok(false)
}

/// This node's subnet is another node's lease now: stop routing (remove
/// the routes to peers and the tunnel devices; the bridge and the
/// containers stay, for the operator to move) and exit with status 3.
fn lost(node: &Node, name: &str, bridge: &str, subnet: IpNet, why: &Error) -> ! {
    eprintln!(
        "node-agent: node {name}: subnet {subnet} is not this node's any more ({why}); \
         removing its routes to peers and its tunnel devices so it stops routing it. Its \
         containers keep addresses in {subnet}: move them off this node, delete bridge \
         {bridge}, then restart the agent (it takes a free subnet)"
    );
    match node.teardown().and_then(|r| r.into_result()) {
        Ok(r) => eprintln!(
            "node-agent: node {name}: routes and {} tunnel devices removed",
            r.devices.len()
        ),
        Err(e) => eprintln!("node-agent: node {name}: teardown: {e}"),
    }
    std::process::exit(3);
}

/// `fresh` plus the peers of `last` it lacks, unless a lease of `fresh`
/// names the same node or covers the same subnet (stale beats empty: a
/// peer whose owner has not republished yet stays routed).
fn with_missing(mut fresh: Vec<NodeLease>, last: &[NodeLease]) -> Vec<NodeLease> {
    let kept: Vec<NodeLease> = last
        .iter()
        .filter(|o| {
            !fresh.iter().any(|f| {
                f.node == o.node
                    || f.subnet.contains(&o.subnet.network())
                    || o.subnet.contains(&f.subnet.network())
            })
        })
        .cloned()
        .collect();
    fresh.extend(kept);
    fresh.sort_by_key(|l| l.subnet);
    fresh
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
