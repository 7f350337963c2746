//! cnet's node agent: Flannel's design on cnet's library.
//!
//! Every node leases its pod subnet from a shared store (etcd), publishes
//! its underlay address and VTEP MAC with the lease, puts a bridge network
//! on the subnet (the bridge containers are attached to), and programs
//! routes to every other node's subnet with the chosen backend (host-gw,
//! vxlan, ipip, cross-subnet). It follows lease changes one event at a
//! time (`cnet_core::network::Member`: the whole set at start, then each
//! join, change or leave applied to that one peer, within milliseconds),
//! watches the kernel (`cnet_core::watch`) and repairs within milliseconds
//! exactly what someone else changed of its routes, neighbours, FDB
//! entries and devices (`DriftRepair`), its bridge and the bridge's ports
//! (`BridgeNetwork::repair`: a deleted bridge is made again with the
//! containers' ports back on it), renews its lease at a third of its TTL
//! (an etcd lease keep-alive: no other node hears of it), reconciles the
//! kernel with the known set now and then as a safety net (`--resync`,
//! default 10 min; no store traffic), and on SIGTERM/SIGINT releases its
//! lease and removes its routes and tunnel devices (the bridge and
//! containers stay). It waits in one `poll(2)` on the kernel's and the
//! leases' descriptors: a quiet node does nothing until a renewal is due.
//!
//! ```sh
//! node-agent --etcd http://192.0.2.254:2379 --node h1 --underlay-dev eth0 --backend vxlan
//! ```
//!
//! `--backend aws-vpc` (a build with feature `aws`) keeps every lease's
//! route `SUBNET → ENI` in the VPC's route tables instead of kernel routes
//! (`cnet_core::network::node::aws_vpc`): peers are reached through the
//! host's default route. The node publishes its interface id with its
//! lease (`aws-eni`); `--aws-route-table` (repeat; default: the table of
//! the node's subnet, else the VPC's main table), `--aws-route-quota`,
//! `--aws-instance-id` (default: the metadata service) and
//! `--aws-endpoint`; credentials and region from AWS's usual places.
//! `--backend aws-vpc-cross-subnet` routes the peers on the node's segment
//! directly (kernel routes, as host-gw) and puts only the others in the
//! table of the node's subnet, so same-subnet peers use none of its quota.
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
//!   (`HeldSubnet::lease`, over `LeaseStore::claim`); it never takes a
//!   lease that contradicts its kernel. Only a node with no bridge address
//!   takes another free subnet.
//! - **etcd away (restarting, unreachable, slow):** no store error stops
//!   the agent (`EtcdSession` connects again). Calls are retried with a
//!   capped, jittered backoff (from 100 ms to a quarter of the TTL), each
//!   bounded by a fifth of the TTL (0.5–5 s). The kernel keeps what it
//!   has: routes are never removed because the store cannot be read (stale
//!   beats empty), and drift is still repaired. When etcd answers again
//!   the agent renews (or, if its lease is gone meanwhile, claims its
//!   subnet again: `renew_or_claim`) and its new watch gives the whole set;
//!   for one TTL after a reconnection a peer missing from it is kept (its
//!   owner may not have republished yet), unless another lease covers its
//!   subnet (`keep_missing`).
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

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cnet_core::ipam::{
    Backoff, Call, EtcdConfig, EtcdSession, EtcdTls, FileStore, LeaseStore, NodeAttrs, NodeLease,
    PoolConfig, SubnetConfig,
};
use cnet_core::network::{
    held_subnet, vtep_mac_for, Backend, BridgeConfig, BridgeNetwork, DriftRepair, Encap, Happened,
    HeldSubnet, KernelPeers, Member, Node, NodeConfig, PeerReport, PeerSink, Repair,
};
use cnet_core::watch::{Event, Watch};
use cnet_core::{Error, Handle, IpNet};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::{AsFd, BorrowedFd};

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
    /// host-gw, vxlan, ipip, vxlan-cross-subnet, ipip-cross-subnet or
    /// aws-vpc (a build with feature `aws`).
    #[arg(long, default_value = "vxlan")]
    backend: AgentBackend,
    /// aws-vpc: a route table to keep (repeat); default: the table of the
    /// node's subnet, else the VPC's main table.
    #[arg(long)]
    aws_route_table: Vec<String>,
    /// aws-vpc: routes a route table may hold (the account's quota).
    #[arg(long, default_value_t = 500)]
    aws_route_quota: usize,
    /// aws-vpc: this node's instance id (default: from the instance
    /// metadata service, IMDSv2).
    #[arg(long)]
    aws_instance_id: Option<String>,
    /// aws-vpc: the EC2 endpoint (default: AWS_ENDPOINT_URL_EC2,
    /// AWS_ENDPOINT_URL, else the region's).
    #[arg(long)]
    aws_endpoint: Option<String>,
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

/// `--backend`: one of `Node`'s, or `aws-vpc` (the VPC's route tables;
/// the kernel side is then host-gw with no peer: no device, no route), or
/// `aws-vpc-cross-subnet` (direct routes to the peers on the node's
/// segment, the VPC's route table for the others: only those use its
/// quota).
#[derive(Debug, Clone)]
enum AgentBackend {
    Kernel(Backend),
    AwsVpc,
    AwsVpcCrossSubnet,
}

impl std::str::FromStr for AgentBackend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "aws-vpc" if cfg!(feature = "aws") => Ok(AgentBackend::AwsVpc),
            "aws-vpc-cross-subnet" if cfg!(feature = "aws") => Ok(AgentBackend::AwsVpcCrossSubnet),
            "aws-vpc" | "aws-vpc-cross-subnet" => Err(Error::invalid(
                format!("--backend {s}"),
                "this node-agent was built without feature aws",
            )),
            s => s.parse().map(AgentBackend::Kernel),
        }
    }
}

#[cfg(feature = "aws")]
mod vpc {
    use cnet_core::aws::{AwsConfig, Ec2, Imds};
    use cnet_core::network::node::aws_vpc::{AwsVpcConfig, AwsVpcRoutes, RouteTables};
    use cnet_core::Error;
    use std::time::Duration;

    /// The aws-vpc backend of this node, its interface's source/dest
    /// check off.
    pub fn open(a: &super::Args) -> Result<AwsVpcRoutes, Error> {
        let ec2 = Ec2::new(&AwsConfig {
            endpoint: a.aws_endpoint.clone(),
            ..Default::default()
        })?;
        let me = match &a.aws_instance_id {
            Some(id) => AwsVpcRoutes::identity_of_instance(&ec2, id)?,
            None => Imds::from_env(Duration::from_secs(2)).identity()?,
        };
        let mut cfg = AwsVpcConfig::new(a.network).route_quota(a.aws_route_quota);
        if !a.aws_route_table.is_empty() {
            cfg.tables = RouteTables::Ids(a.aws_route_table.clone());
        }
        let routes = AwsVpcRoutes::new(ec2, cfg, me)?;
        routes.prepare()?;
        Ok(routes)
    }
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
    // The kernel backend; aws-vpc routes in the cloud, none in the kernel.
    let (backend, aws_vpc, cross) = match &a.backend {
        AgentBackend::Kernel(b) => (b.clone(), false, false),
        AgentBackend::AwsVpc => (Backend::HostGw, true, false),
        AgentBackend::AwsVpcCrossSubnet => (
            Backend::CrossSubnet {
                encap: Encap::RouteTable,
            },
            true,
            true,
        ),
    };
    #[cfg(feature = "aws")]
    let vpc = aws_vpc.then(|| vpc::open(&a)).transpose()?;
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
    // A store call never blocks the loop (and its drift repair) long;
    // retries from 100 ms to a quarter of the TTL.
    let mut store = EtcdSession::new(
        etcd_config(&a)?
            .timeout((ttl / 5).clamp(Duration::from_millis(500), Duration::from_secs(5))),
        config,
        Backoff::new(Duration::from_millis(100), ttl / 4),
    );
    #[allow(unused_mut)] // only aws-vpc adds to it
    let mut attrs = NodeAttrs {
        underlay_ip: Some(underlay_ip),
        backend: Some(
            match (aws_vpc, cross) {
                (true, false) => "aws-vpc",
                (true, true) => "aws-vpc-cross-subnet",
                _ => backend.name(),
            }
            .to_string(),
        ),
        vtep_mac: Some(vtep_mac_for(&a.node)),
        ..Default::default()
    };
    #[cfg(feature = "aws")]
    if let Some(v) = &vpc {
        attrs.extra.insert(
            cnet_core::network::node::aws_vpc::AWS_ENI_ATTR.into(),
            v.identity().eni_id.clone(),
        );
    }
    // The subnet this node holds first; wait for the store as long as it
    // takes (nothing is routed yet that the store could contradict).
    let lease = loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        match done(&mut store, "lease", |l| held.lease(l, &a.node, &attrs, ttl)) {
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
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    println!(
        "node {}: subnet {} (underlay {underlay_ip}; held: {held:?})",
        a.node, lease.subnet
    );

    // The bridge network on the subnet: containers get their MTU from it.
    // A bridge deleted while the agent was away is made again here, with
    // the containers' ports back on it.
    let underlay_mtu = host.links().get(&a.underlay_dev)?.mtu;
    // Encapsulation overhead: vxlan 50, ipip 20, wireguard 60 (IPv4
    // underlay); cross-subnet takes its encapsulation's.
    let overhead = match &backend {
        Backend::HostGw => 0,
        Backend::IpIp(_) => 20,
        Backend::WireGuard(_) => 60,
        Backend::CrossSubnet {
            encap: Encap::IpIp(_),
        } => 20,
        Backend::CrossSubnet {
            encap: Encap::RouteTable,
        } => 0,
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
    let mut synced = Instant::now();
    // Renewals (an etcd lease keep-alive each), and the peers' leases one
    // event at a time; the first event is the whole set.
    let mut member = Member::new(store, lease.clone(), attrs, ttl);
    // aws-vpc: every lease's route in the VPC's tables (reconciled whole on
    // every change; a refusal (quota, throttling past the retries, IAM) is
    // said and tried again with a capped backoff), no kernel route to any
    // peer (the default route reaches them).
    let vpc_retry = std::cell::RefCell::new((
        None::<Instant>,
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
    ));
    let vpc_sync: Option<Box<VpcSync<'_>>> = {
        #[cfg(feature = "aws")]
        {
            vpc.as_ref().map(|v| {
                let (name, retry) = (a.node.clone(), &vpc_retry);
                Box::new(move |leases: &[NodeLease], placed: Option<&PeerReport>| {
                    let mut retry = retry.borrow_mut();
                    let r = match placed {
                        Some(p) => v.reconcile_beyond(leases, p),
                        None => v.reconcile_leases(leases),
                    };
                    match r {
                        Ok(r) => {
                            if r.writes() > 0 {
                                println!(
                                    "node {name}: aws-vpc: {} route writes in {:?}",
                                    r.writes(),
                                    v.tables()
                                );
                            }
                            retry.1.reset();
                            retry.0 = None;
                        }
                        Err(e) => {
                            let wait = retry.1.failed();
                            retry.0 = Some(Instant::now() + wait);
                            eprintln!(
                                "node-agent: aws-vpc: {e} (retry in {} ms)",
                                wait.as_millis()
                            );
                        }
                    }
                }) as Box<VpcSync<'_>>
            })
        }
        #[cfg(not(feature = "aws"))]
        {
            let _ = aws_vpc;
            None
        }
    };
    let mut vpc_leases = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        let mut sink = AgentPeers {
            kernel: KernelPeers {
                node: &node,
                backend: &backend,
                drift: &mut drift,
            },
            vpc: vpc_sync.as_deref(),
            cross,
            leases: &mut vpc_leases,
        };
        for h in member.step(&mut sink) {
            tell(&a, &node, h);
        }
        // The safety net: a full reconcile of the known set (no store
        // traffic).
        let vpc_due = vpc_retry.borrow().0.is_some_and(|t| t <= Instant::now());
        if synced.elapsed() >= resync_every || vpc_due {
            match sink.all(&member.leases()) {
                Ok(r) if !r.is_noop() => print_report(&a.node, "resync", &r),
                Ok(_) => {}
                Err(e) => eprintln!("node-agent: resync: {e}"),
            }
            synced = Instant::now();
        }
        // One wait for everything: the kernel's events and the leases'
        // (a signal ends it too). A quiet cluster costs one poll(2) per
        // renewal and nothing else.
        let mut wait = member
            .wake_in()
            .min(resync_every.saturating_sub(synced.elapsed()));
        if let Some(t) = vpc_retry.borrow().0 {
            wait = wait.min(t.saturating_duration_since(Instant::now()));
        }
        wait_for(&kernel, member.as_fd(), wait);
        while let Some(ev) = kernel.next(Duration::ZERO)? {
            repair(&a, &node, &net, &mut drift, &ev);
        }
    }
    if let Err(e) = member.leave() {
        eprintln!("node-agent: release: {e}"); // it expires by itself
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

/// aws-vpc: bring the VPC's route tables to these leases (says what it
/// did or why it could not).
/// The VPC's tables to the leases: all of them (aws-vpc), or those the
/// node's kernel reconcile placed beyond its segment (cross-subnet).
type VpcSync<'a> = dyn Fn(&[NodeLease], Option<&PeerReport>) + 'a;

/// What the agent programs for its peers: the kernel (`KernelPeers`: the
/// backend's devices and routes), or with aws-vpc the VPC's route tables
/// (`vpc`, given every lease) and a kernel with no peer route.
struct AgentPeers<'a, 'h> {
    kernel: KernelPeers<'a, 'h>,
    vpc: Option<&'a VpcSync<'a>>,
    /// aws-vpc-cross-subnet: the kernel gets every peer (direct routes on
    /// the segment), the VPC those the kernel placed beyond it.
    cross: bool,
    /// aws-vpc: the lease set, by subnet (the tables are reconciled whole).
    leases: &'a mut BTreeMap<IpNet, NodeLease>,
}

impl AgentPeers<'_, '_> {
    /// The whole known set to the VPC (and, cross-subnet, to the kernel
    /// first: its placement decides what the VPC carries).
    fn sync(&mut self, vpc: &VpcSync<'_>) -> Result<PeerReport, Error> {
        let leases: Vec<NodeLease> = self.leases.values().cloned().collect();
        if self.cross {
            let r = self.kernel.all(&leases)?;
            vpc(&leases, Some(&r));
            Ok(r)
        } else {
            vpc(&leases, None);
            Ok(PeerReport::default())
        }
    }
}

impl PeerSink for AgentPeers<'_, '_> {
    fn all(&mut self, leases: &[NodeLease]) -> Result<PeerReport, Error> {
        let Some(vpc) = self.vpc else {
            return self.kernel.all(leases);
        };
        *self.leases = leases.iter().map(|l| (l.subnet, l.clone())).collect();
        if self.cross {
            return self.sync(vpc);
        }
        vpc(leases, None);
        self.kernel.all(&[])
    }
    fn put(&mut self, lease: &NodeLease) -> Result<PeerReport, Error> {
        let Some(vpc) = self.vpc else {
            return self.kernel.put(lease);
        };
        self.leases.retain(|_, l| l.node != lease.node);
        self.leases.insert(lease.subnet, lease.clone());
        self.sync(vpc)
    }
    fn gone(&mut self, subnet: IpNet) -> Result<PeerReport, Error> {
        let Some(vpc) = self.vpc else {
            return self.kernel.gone(subnet);
        };
        if self.leases.remove(&subnet).is_some() {
            return self.sync(vpc);
        }
        Ok(PeerReport::default())
    }
}

/// Block until the kernel watch or the lease watch has something, or
/// `timeout` passes (or a signal arrives).
fn wait_for(kernel: &Watch, leases: Option<BorrowedFd<'_>>, timeout: Duration) {
    let mut fds = vec![PollFd::new(kernel.as_fd(), PollFlags::POLLIN)];
    if let Some(fd) = leases {
        fds.push(PollFd::new(fd, PollFlags::POLLIN));
    }
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let _ = poll(&mut fds, PollTimeout::from(ms)); // EINTR: a signal, looked at by the loop
}

/// Say what a step of the membership did; a lost subnet ends the agent.
fn tell(a: &Args, node: &Node<'_>, h: Happened) {
    match h {
        Happened::Peers { what, report } => {
            if !report.is_noop() || what == "all" {
                print_report(&a.node, &what, &report);
            }
        }
        Happened::SinkFailed { what, error } => eprintln!("node-agent: {what}: {error}"),
        Happened::StoreBack => println!("node-agent: etcd answers again"),
        Happened::StoreAway {
            what,
            error,
            retry_in,
        } => eprintln!(
            "node-agent: {what}: {error} (retry in {} ms)",
            retry_in.as_millis()
        ),
        Happened::RenewFailed(e) => eprintln!("node-agent: renew: {e}"),
        Happened::TakenBack => println!(
            "node {}: took back {} (its lease was gone from the store)",
            a.node,
            node.config().subnet
        ),
        Happened::Lost(e) => lost(node, &a.node, &a.bridge, node.config().subnet, &e),
        other => println!("node {}: {other:?}", a.node),
    }
}

/// Repair what a kernel event says someone changed: the node's routes,
/// neighbours, FDB entries and devices, and the bridge with its ports.
fn repair(a: &Args, node: &Node<'_>, net: &BridgeNetwork, drift: &mut DriftRepair, ev: &Event) {
    let t = Instant::now();
    match drift.repair(node, ev) {
        Ok(Some(r)) => {
            println!(
                "node {}: repaired {} in {:.2} ms",
                a.node,
                describe(&r),
                t.elapsed().as_secs_f64() * 1e3
            );
            if let Repair::Full { report, .. } = &r {
                if !report.is_ok() {
                    eprintln!("node-agent: repair: failed: {}", report_errors(report));
                }
            }
        }
        Ok(None) => {}
        // The next full reconcile tries again.
        Err(e) => eprintln!("node-agent: repair: {e}"),
    }
    // The bridge and its ports: a deleted bridge is made again with the
    // containers' ports back on it.
    let t = Instant::now();
    match net.repair(ev) {
        Ok(Some(r)) => println!(
            "node {}: repaired bridge {}: {r} in {:.2} ms",
            a.node,
            a.bridge,
            t.elapsed().as_secs_f64() * 1e3
        ),
        Ok(None) => {}
        Err(e) => eprintln!("node-agent: repair: {e}"),
    }
}

/// `store.call(f)`: `None` when not tried or the store was away (said on
/// stderr, with when it is tried again).
fn done<T>(
    store: &mut EtcdSession,
    what: &str,
    f: impl FnOnce(&mut dyn LeaseStore) -> Result<T, Error>,
) -> Option<Result<T, Error>> {
    let connections = store.connections();
    match store.call(|l| f(l)) {
        Call::Done(r) => {
            if store.connections() > connections && connections > 0 {
                println!("node-agent: etcd answers again");
            }
            Some(r)
        }
        Call::Away { error, retry_in } => {
            eprintln!(
                "node-agent: {what}: {error} (retry in {} ms)",
                retry_in.as_millis()
            );
            None
        }
        _ => None,
    }
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

fn print_report(node: &str, what: &str, report: &cnet_core::network::PeerReport) {
    let changed = |c: &cnet_core::network::Changes| c.added + c.replaced + c.deleted;
    println!(
        "node {node}: {what}: {} peers; routes/neighbours/fdb changed {}/{}/{}{}",
        report.peers.len(),
        changed(&report.routes),
        changed(&report.neighbours),
        changed(&report.fdb),
        if report.is_ok() {
            String::new()
        } else {
            format!("; failed: {}", report_errors(report))
        }
    );
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
    let mut config = EtcdConfig::new(&endpoints, &a.prefix);
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
