//! IP address management: node subnets from a cluster network, container
//! addresses from a node subnet.
//!
//! ```text
//!   cluster network 10.244.0.0/16 ── SubnetConfig / SubnetAllocator (pure)
//!        │  one /24 per node, leased with a TTL: LeaseStore
//!        ▼
//!   node subnet 10.244.1.0/24 ──── PoolConfig / AddressPool (pure)
//!        │  one address per (container id, interface): PoolStore
//!        ▼
//!   10.244.1.2  container c1, eth0, generation 7
//! ```
//!
//! Two layers:
//!
//! * **Pure allocation logic** ([`SubnetAllocator`], [`AddressPool`]): no
//!   I/O, unit- and property-tested beside the code.
//! * **Stores** persist it. [`FileStore`] (the default) needs nothing but a
//!   directory and is safe between processes and against crashes (see
//!   [the `file` module](self::file) for the on-disk layout and why each allocation is O(1)).
//!   `EtcdStore` (cargo feature `etcd`) runs the same traits against an etcd
//!   v3 cluster, so many hosts allocate at once with no duplicates.
//!
//! ```no_run
//! use cnet_core::ipam::{FileStore, LeaseStore, NodeAttrs, PoolConfig, PoolStore, SubnetConfig};
//! use std::time::Duration;
//!
//! let store = FileStore::open("/var/lib/cnet/ipam")?;
//! let mut leases = store.subnets(SubnetConfig::new("10.244.0.0/16".parse().unwrap()))?;
//! let lease = leases.acquire("node-a", &NodeAttrs::default(), Duration::from_secs(86400))?;
//! let mut pool = store.pool(PoolConfig::new(lease.subnet))?;
//! let a = pool.allocate("c1", "eth0")?;          // 10.244.1.2
//! pool.release("c1", "eth0")?;
//! # Ok::<(), cnet_core::Error>(())
//! ```
//!
//! Every allocation carries a `generation`, unique within its pool and never
//! reused: [`PoolStore::release_generation`] frees an address only if it is
//! still held under that generation, so a late release cannot free an
//! address that has since been handed to another container.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::link::MacAddr;
use crate::Result;

mod backoff;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "etcd")]
mod etcd_client;
#[cfg(feature = "etcd")]
mod etcd_conn;
#[cfg(feature = "etcd")]
mod etcd_session;
#[cfg(feature = "etcd")]
mod etcd_watch;
pub mod file;
mod keep;
mod pool;
mod subnet;

pub use backoff::Backoff;
#[cfg(feature = "etcd")]
pub use etcd::{EtcdLeaseWatch, EtcdLeases, EtcdPool, EtcdStore, EtcdWatch, WatchEvent};
#[cfg(feature = "etcd")]
pub use etcd_conn::{EtcdAuth, EtcdConfig, EtcdTls};
#[cfg(feature = "etcd")]
pub use etcd_session::{Call, EtcdSession};
pub use file::{FileLeaseWatch, FileLeases, FileOptions, FilePool, FileStore};
pub use keep::{claim_again, keep_missing, renew_or_claim, Renewal};
pub use pool::{AddressPool, IpRange, PoolConfig, MAX_POOL_SIZE};
pub(crate) use subnet::check_claim;
pub use subnet::{SubnetAllocator, SubnetConfig};

/// One container address: who holds it and under which generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Allocation {
    /// The address handed out.
    pub addr: IpAddr,
    /// The prefix length of the pool's subnet (`24` for `10.244.1.0/24`):
    /// what the container's interface is configured with; see
    /// [`Allocation::cidr`].
    #[serde(default)]
    pub prefix_len: u8,
    /// The container that holds it.
    pub container_id: String,
    /// The interface inside the container (`eth0`).
    pub ifname: String,
    /// Unique per allocation within a pool, never reused; see
    /// [`PoolStore::release_generation`].
    pub generation: u64,
}

impl Allocation {
    /// The address with the pool's prefix (`10.244.1.2/24`), as
    /// [`crate::addr::Addrs::add`] takes it.
    pub fn cidr(&self) -> IpNet {
        // `prefix_len` is set by the pool that made or restored this
        // allocation, so it fits the family; clamp defensively all the same.
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        IpNet::new(self.addr, self.prefix_len.min(max)).unwrap_or_else(|_| IpNet::from(self.addr))
    }
}

/// What a node publishes with its lease: what its peers need to route to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAttrs {
    /// The node's underlay (public) address, the next hop or VTEP endpoint.
    pub underlay_ip: Option<IpAddr>,
    /// Backend type: `host-gw`, `vxlan`, `ipip`, …
    pub backend: Option<String>,
    /// MAC address of the node's VTEP device (vxlan).
    pub vtep_mac: Option<MacAddr>,
    /// Anything else the caller adds.
    pub extra: BTreeMap<String, String>,
}

/// A node's subnet lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLease {
    /// Node name.
    pub node: String,
    /// The node's subnet.
    pub subnet: IpNet,
    /// What the node published.
    pub attrs: NodeAttrs,
    /// When the lease runs out unless renewed; `None` for a reservation,
    /// which never expires.
    pub expires: Option<SystemTime>,
}

impl NodeLease {
    /// Whether this is a reservation (never expires).
    pub fn is_reservation(&self) -> bool {
        self.expires.is_none()
    }

    /// Whether the lease has run out at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// Node subnet leases over one cluster network ([`SubnetConfig`]).
pub trait LeaseStore {
    /// The network this store leases from.
    fn config(&self) -> &SubnetConfig;

    /// Lease a subnet for `node` for `ttl`. A node that holds a lease or a
    /// reservation gets it back (attributes updated, TTL renewed); a node
    /// whose lease expired gets its previous subnet back if it is still
    /// free; otherwise the lowest free subnet. `Exhausted` when none is free.
    fn acquire(&mut self, node: &str, attrs: &NodeAttrs, ttl: Duration) -> Result<NodeLease>;

    /// Lease exactly `subnet` for `node` for `ttl`: what a node that already
    /// holds a subnet (its bridge's gateway address, its address pool) calls
    /// first, so the store never contradicts what its kernel shows. `node`'s
    /// own lease of `subnet` is renewed (attributes updated); a free subnet
    /// is taken (and recorded as the node's last subnet). `Conflict` naming
    /// the holder when another node holds `subnet`, or when `node` holds
    /// another subnet; nothing is changed then. `InvalidArgument` when the
    /// network does not hand `subnet` out.
    ///
    /// This is also how leases come back after the store lost them (an etcd
    /// restored from an old backup, or empty): every node claims what it
    /// holds, and the store's compare-and-swap makes sure no subnet is
    /// given twice. What to do on `Conflict` is the caller's decision; the
    /// node agent (`examples/rust/node_agent.rs`) stops routing and exits.
    fn claim(
        &mut self,
        node: &str,
        subnet: IpNet,
        attrs: &NodeAttrs,
        ttl: Duration,
    ) -> Result<NodeLease>;

    /// Extend `node`'s lease to `ttl` from now. `NotFound` if it has none
    /// (it expired or was released: call [`LeaseStore::acquire`]).
    fn renew(&mut self, node: &str, ttl: Duration) -> Result<NodeLease>;

    /// Give up `node`'s lease or reservation. Releasing what is gone succeeds.
    fn release(&mut self, node: &str) -> Result<()>;

    /// Reserve `subnet` for `node`, forever. `Conflict` if another node
    /// holds it (or `node` holds another subnet), `InvalidArgument` if it is
    /// not a subnet of the network.
    fn reserve(&mut self, node: &str, subnet: IpNet, attrs: &NodeAttrs) -> Result<NodeLease>;

    /// `node`'s current lease, if any.
    fn get(&mut self, node: &str) -> Result<Option<NodeLease>>;

    /// Every live lease and reservation, sorted by subnet: the peer list that
    /// routing needs.
    fn list(&mut self) -> Result<Vec<NodeLease>>;

    /// Learn when the leases change without listing them all the time:
    /// the returned [`LeaseWatch`] wakes its caller when a node acquires,
    /// renews, releases or loses a lease (the file store: inotify on the
    /// lease file, and the next expiry; etcd: a v3 watch on the lease keys).
    fn watch(&mut self) -> Result<Box<dyn LeaseWatch>>;
}

/// Wakes a node agent when the lease set may have changed, so it lists and
/// reconciles then, and otherwise costs nothing.
///
/// ```no_run
/// # use cnet_core::ipam::{FileStore, LeaseStore, SubnetConfig};
/// # use std::time::Duration;
/// # let store = FileStore::open("/var/lib/cnet/ipam")?;
/// let mut leases = store.subnets(SubnetConfig::new("10.244.0.0/16".parse().unwrap()))?;
/// let mut watch = leases.watch()?;
/// loop {
///     let peers = leases.list()?;          // then: node.reconcile_leases(&backend, &peers)
///     # let _ = peers;
///     watch.wait(Duration::from_secs(30))?; // a change, or time for a safety-net resync
/// }
/// # Ok::<(), cnet_core::Error>(())
/// ```
pub trait LeaseWatch: Send + std::fmt::Debug {
    /// Block until the leases may have changed (`Ok(true)`) or `timeout`
    /// passed (`Ok(false)`). A `true` may be spurious; a change is never
    /// missed: when the watch itself lost track (a dropped connection, a
    /// compacted etcd history) it says `true` so the caller lists again.
    ///
    /// Use either `wait` (and list) or [`LeaseWatch::next`] (and apply each
    /// change) on one watch, not both: `wait` consumes the events.
    fn wait(&mut self, timeout: Duration) -> Result<bool>;

    /// The next change of the lease set, waiting at most `timeout`
    /// (`Ok(None)`: none came). The first event is [`LeaseEvent::All`]
    /// (the set when the watch started); after it, each lease taken,
    /// changed or ended is one event, and the whole set comes again only
    /// when the watch lost track of it. A renewal that changes nothing but
    /// the lease's expiry is no event.
    fn next(&mut self, timeout: Duration) -> Result<Option<LeaseEvent>>;

    /// A descriptor that becomes readable when [`LeaseWatch::next`] may have
    /// an event, to wait on it with others in one `poll(2)`. After it is
    /// readable, call `next(Duration::ZERO)` until it returns `None`.
    fn as_fd(&self) -> BorrowedFd<'_>;

    /// When to call [`LeaseWatch::next`] even if the descriptor stays quiet
    /// (the file store's next expiry, which changes no file); `None`: only
    /// when it is readable.
    fn due(&self) -> Option<Instant> {
        None
    }
}

/// One change of the lease set ([`LeaseWatch::next`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseEvent {
    /// Every lease and reservation, replacing what the caller knew: the
    /// first event of a watch, and again when the watch lost track (a
    /// compacted etcd history, an etcd whose history went back, an inotify
    /// overflow).
    All(Vec<NodeLease>),
    /// A lease was taken, or its node, subnet or attributes changed.
    Put(NodeLease),
    /// The lease of this subnet ended: released, or expired.
    Gone(IpNet),
}

/// Turns successive lease lists into [`LeaseEvent`]s: the first list is
/// [`LeaseEvent::All`], every later one the puts and ends that differ
/// from the list before it (expiry times aside). For stores whose watch
/// says only "changed" (the file store).
#[derive(Debug, Default)]
pub(crate) struct LeaseDiff {
    last: Option<BTreeMap<IpNet, NodeLease>>,
}

impl LeaseDiff {
    /// The events that take the caller from the last list to `now`.
    pub(crate) fn events(&mut self, now: Vec<NodeLease>) -> Vec<LeaseEvent> {
        let now: BTreeMap<IpNet, NodeLease> = now.into_iter().map(|l| (l.subnet, l)).collect();
        let Some(last) = self.last.replace(now.clone()) else {
            return vec![LeaseEvent::All(now.into_values().collect())];
        };
        let same = |a: &NodeLease, b: &NodeLease| {
            a.node == b.node && a.attrs == b.attrs && a.is_reservation() == b.is_reservation()
        };
        let mut out: Vec<LeaseEvent> = last
            .keys()
            .filter(|s| !now.contains_key(s))
            .map(|s| LeaseEvent::Gone(*s))
            .collect();
        out.extend(
            now.into_values()
                .filter(|l| !last.get(&l.subnet).is_some_and(|o| same(o, l)))
                .map(LeaseEvent::Put),
        );
        out
    }

    /// Whether no list was seen yet (the next one is [`LeaseEvent::All`]).
    pub(crate) fn is_fresh(&self) -> bool {
        self.last.is_none()
    }
}

/// Container addresses from one node subnet ([`PoolConfig`]).
pub trait PoolStore {
    /// The pool's configuration.
    fn config(&self) -> &PoolConfig;

    /// Allocate an address for `(container_id, ifname)`; asking twice returns
    /// the same allocation. `Exhausted` when the pool is full.
    fn allocate(&mut self, container_id: &str, ifname: &str) -> Result<Allocation>;

    /// Like [`PoolStore::allocate`], and says whether this call made the
    /// allocation (`true`) or the pair held it already (`false`), so that a
    /// caller that rolls back releases only what it made itself.
    ///
    /// The stores of this crate answer from the allocation itself (one
    /// step); this default looks the pair up first, which another process
    /// could race.
    fn allocate_tracked(&mut self, container_id: &str, ifname: &str) -> Result<(Allocation, bool)> {
        let held = self
            .list()?
            .into_iter()
            .any(|a| a.container_id == container_id && a.ifname == ifname);
        Ok((self.allocate(container_id, ifname)?, !held))
    }

    /// Allocate exactly `addr`; see [`AddressPool::allocate_addr`].
    fn allocate_addr(
        &mut self,
        container_id: &str,
        ifname: &str,
        addr: IpAddr,
    ) -> Result<Allocation>;

    /// Release the address of `(container_id, ifname)`; `Ok(None)` if it
    /// held none.
    fn release(&mut self, container_id: &str, ifname: &str) -> Result<Option<Allocation>>;

    /// Release `addr` only if it is still held under `generation`;
    /// `Conflict` if it now belongs to a later allocation, `Ok(None)` if free.
    fn release_generation(&mut self, addr: IpAddr, generation: u64) -> Result<Option<Allocation>>;

    /// All allocations, sorted by address.
    fn list(&mut self) -> Result<Vec<Allocation>>;

    /// Release every allocation whose container id is not in `alive`;
    /// returns what was released.
    fn gc(&mut self, alive: &HashSet<String>) -> Result<Vec<Allocation>>;
}

/// An address as a number (IPv4 in the low 32 bits).
pub(crate) fn addr_to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

/// The inverse of [`addr_to_u128`].
pub(crate) fn addr_from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

/// A name safe for a file or key: `10.244.0.0_16`, `fd00-10-244--_56`.
pub(crate) fn net_key(net: &IpNet) -> String {
    net.to_string().replace(':', "-").replace('/', "_")
}

/// Entry points for the fuzz targets (`cnet-core/fuzz`) and the stable
/// fuzz test (`tests/ipam_fuzz.rs`): every reader of on-disk or network
/// bytes in the IPAM, each checking its own invariants. Not an API.
#[doc(hidden)]
pub mod fuzz {
    /// A pool file (format 3): header copies, index buckets and slots
    /// decode without panicking, and what decodes encodes back to itself.
    pub fn pool_file(data: &[u8]) {
        super::file::fuzz_pool_file(data);
    }

    /// An etcd reply (range, transaction, lease grant): never panics.
    #[cfg(feature = "etcd")]
    pub fn etcd_reply(data: &[u8]) {
        super::etcd::fuzz_reply(data);
    }
}

#[cfg(test)]
mod lease_diff_tests {
    use super::*;

    fn lease(node: &str, subnet: &str, ip: &str, expires_in: u64) -> NodeLease {
        NodeLease {
            node: node.into(),
            subnet: subnet.parse().unwrap(),
            attrs: NodeAttrs {
                underlay_ip: Some(ip.parse().unwrap()),
                ..Default::default()
            },
            expires: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(expires_in)),
        }
    }

    #[test]
    fn first_list_is_all_then_only_differences_expiry_aside() {
        let mut d = LeaseDiff::default();
        let a = lease("a", "10.244.1.0/24", "192.0.2.1", 10);
        let b = lease("b", "10.244.2.0/24", "192.0.2.2", 10);
        assert_eq!(
            d.events(vec![a.clone(), b.clone()]),
            vec![LeaseEvent::All(vec![a.clone(), b.clone()])]
        );
        // A renewal (expiry only): nothing.
        let a_renewed = lease("a", "10.244.1.0/24", "192.0.2.1", 99);
        assert!(d.events(vec![a_renewed.clone(), b.clone()]).is_empty());
        // b gone, c new, a moved to another underlay address.
        let a_moved = lease("a", "10.244.1.0/24", "192.0.2.9", 99);
        let c = lease("c", "10.244.3.0/24", "192.0.2.3", 10);
        assert_eq!(
            d.events(vec![a_moved.clone(), c.clone()]),
            vec![
                LeaseEvent::Gone(b.subnet),
                LeaseEvent::Put(a_moved),
                LeaseEvent::Put(c)
            ]
        );
        // The same subnet, another node: a put.
        let d2 = lease("d", "10.244.3.0/24", "192.0.2.4", 10);
        let events = d.events(vec![a_renewed.clone(), d2.clone()]);
        assert!(events.contains(&LeaseEvent::Put(d2)), "{events:?}");
    }
}
