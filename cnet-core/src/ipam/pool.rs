//! Container addresses: a pool over a node subnet. Pure logic, no I/O.
//!
//! The pool numbers its usable addresses 0..size (the ranges laid end to end)
//! and keeps a two-level bitmap over them: one bit per address, and one
//! summary bit per 64-address word that is full. Finding a free address
//! starts at a cursor just past the last allocation (round-robin, like CNI
//! host-local, so a released address is not handed out again at once) and
//! costs one word test in the common case, one summary scan (size/4096 words)
//! in the worst: flat from empty to full, whatever the number allocated.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{addr_from_u128, addr_to_u128, Allocation};
use crate::{Error, Result};

/// The most addresses one pool numbers. A larger range (an IPv6 /64) is cut
/// to its first 2^24 addresses: more containers than any one host runs, and
/// it keeps the bitmap at 2 MiB at most.
pub const MAX_POOL_SIZE: u32 = 1 << 24;

/// An inclusive range of addresses inside a pool's subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRange {
    /// First address of the range.
    pub start: IpAddr,
    /// Last address of the range (inclusive).
    pub end: IpAddr,
}

impl IpRange {
    /// The range `start..=end`.
    pub fn new(start: IpAddr, end: IpAddr) -> Self {
        IpRange { start, end }
    }
}

/// What a pool hands out: a node subnet, optionally narrowed to ranges.
/// The network address, the gateway and (IPv4) the broadcast address are
/// never handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    /// The node subnet, e.g. `10.244.1.0/24`.
    pub subnet: IpNet,
    /// Ranges inside the subnet to allocate from; empty means the whole subnet.
    pub ranges: Vec<IpRange>,
    /// The gateway address, never handed out (default: first host address).
    pub gateway: Option<IpAddr>,
}

impl PoolConfig {
    /// A pool over the whole of `subnet`, gateway at its first host address
    /// (`10.244.1.1` for `10.244.1.0/24`).
    pub fn new(subnet: IpNet) -> Self {
        let subnet = subnet.trunc();
        let host_bits = subnet.max_prefix_len() - subnet.prefix_len();
        let gateway = (host_bits >= 2).then(|| {
            addr_from_u128(
                addr_to_u128(subnet.network()) + 1,
                subnet.network().is_ipv6(),
            )
        });
        PoolConfig {
            subnet,
            ranges: Vec::new(),
            gateway,
        }
    }

    /// Allocate only from `range` (may be called several times).
    pub fn with_range(mut self, range: IpRange) -> Self {
        self.ranges.push(range);
        self
    }

    /// Set (or, with `None`, drop) the gateway address.
    pub fn with_gateway(mut self, gateway: Option<IpAddr>) -> Self {
        self.gateway = gateway;
        self
    }

    /// The gateway with the subnet's prefix (`10.244.1.1/24`): the address a
    /// bridge network puts on its bridge.
    pub fn gateway_net(&self) -> Option<IpNet> {
        self.gateway
            .and_then(|g| IpNet::new(g, self.subnet.prefix_len()).ok())
    }

    pub(crate) fn ctx(&self) -> String {
        format!("address pool {}", self.subnet)
    }

    /// Check ranges and gateway lie inside the subnet and ranges do not
    /// overlap.
    pub fn validate(&self) -> Result<()> {
        Layout::new(self).map(|_| ())
    }
}

/// The numbering of a pool's addresses: segments laid end to end.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// (first address as u128, first index, length)
    segs: Vec<(u128, u32, u32)>,
    size: u32,
    v6: bool,
    /// Indexes never handed out (network, gateway, broadcast).
    excluded: Vec<u32>,
}

impl Layout {
    pub(crate) fn new(cfg: &PoolConfig) -> Result<Self> {
        let ctx = cfg.ctx();
        let v6 = cfg.subnet.network().is_ipv6();
        let fam = |a: &IpAddr| a.is_ipv6() == v6;
        let mut raw: Vec<(u128, u128)> = Vec::new();
        if cfg.ranges.is_empty() {
            raw.push((
                addr_to_u128(cfg.subnet.network()),
                addr_to_u128(cfg.subnet.broadcast()),
            ));
        }
        for r in &cfg.ranges {
            if !fam(&r.start) || !fam(&r.end) {
                return Err(Error::invalid(ctx, "range of the wrong address family"));
            }
            if !cfg.subnet.contains(&r.start) || !cfg.subnet.contains(&r.end) {
                return Err(Error::invalid(
                    ctx,
                    format!("range {}-{} is not inside {}", r.start, r.end, cfg.subnet),
                ));
            }
            let (s, e) = (addr_to_u128(r.start), addr_to_u128(r.end));
            if s > e {
                return Err(Error::invalid(
                    ctx,
                    format!("range {}-{} ends before it starts", r.start, r.end),
                ));
            }
            raw.push((s, e));
        }
        raw.sort();
        for w in raw.windows(2) {
            if w[1].0 <= w[0].1 {
                return Err(Error::invalid(ctx, "ranges overlap"));
            }
        }
        if let Some(g) = cfg.gateway {
            if !fam(&g) || !cfg.subnet.contains(&g) {
                return Err(Error::invalid(
                    ctx,
                    format!("gateway {g} is not inside {}", cfg.subnet),
                ));
            }
        }
        let mut segs = Vec::new();
        let mut size: u32 = 0;
        for (s, e) in raw {
            let room = u128::from(MAX_POOL_SIZE - size);
            let len = (e - s).saturating_add(1).min(room);
            if len == 0 {
                break;
            }
            // len <= MAX_POOL_SIZE, so it fits in u32.
            let len = len as u32;
            segs.push((s, size, len));
            size += len;
        }
        let mut layout = Layout {
            segs,
            size,
            v6,
            excluded: Vec::new(),
        };
        let mut ex = vec![cfg.subnet.network()];
        let host_bits = cfg.subnet.max_prefix_len() - cfg.subnet.prefix_len();
        if !v6 && host_bits >= 2 {
            ex.push(cfg.subnet.broadcast());
        }
        ex.extend(cfg.gateway);
        if host_bits < 2 {
            // /31, /32, /127, /128: every address is a host address.
            ex.retain(|a| Some(*a) == cfg.gateway);
        }
        layout.excluded = ex.iter().filter_map(|a| layout.index_of(*a)).collect();
        Ok(layout)
    }

    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    pub(crate) fn addr_at(&self, idx: u32) -> Option<IpAddr> {
        self.segs
            .iter()
            .find(|(_, first, len)| idx >= *first && idx - first < *len)
            .map(|(s, first, _)| addr_from_u128(s + u128::from(idx - first), self.v6))
    }

    pub(crate) fn index_of(&self, addr: IpAddr) -> Option<u32> {
        if addr.is_ipv6() != self.v6 {
            return None;
        }
        let a = addr_to_u128(addr);
        self.segs
            .iter()
            .find(|(s, _, len)| a >= *s && a - s < u128::from(*len))
            .map(|(s, first, _)| first + (a - s) as u32)
    }

    /// The index of `addr` if it may be handed out: `InvalidArgument`
    /// outside the ranges, or for the network, gateway or broadcast address.
    pub(crate) fn allocatable(&self, addr: IpAddr, ctx: &str) -> Result<u32> {
        let idx = self
            .index_of(addr)
            .ok_or_else(|| Error::invalid(ctx, format!("{addr} is outside the pool's ranges")))?;
        if self.is_excluded(idx) {
            return Err(Error::invalid(
                ctx,
                format!("{addr} is the network, gateway or broadcast address"),
            ));
        }
        Ok(idx)
    }

    /// How many indexes are never handed out.
    pub(crate) fn excluded_count(&self) -> u32 {
        self.excluded.len() as u32
    }

    pub(crate) fn is_excluded(&self, idx: u32) -> bool {
        self.excluded.contains(&idx)
    }
}

/// One bit per address plus one summary bit per full 64-bit word.
#[derive(Debug, Clone)]
struct Bitmap {
    words: Vec<u64>,
    full: Vec<u64>,
}

impl Bitmap {
    fn new(len: u32) -> Self {
        let nw = (len as usize).div_ceil(64).max(1);
        let mut b = Bitmap {
            words: vec![0; nw],
            full: vec![0; nw.div_ceil(64)],
        };
        // Bits past the end look used, summary bits past the last word look full.
        for i in len as usize..nw * 64 {
            b.words[i / 64] |= 1 << (i % 64);
        }
        for w in 0..nw {
            b.update_summary(w);
        }
        for w in nw..b.full.len() * 64 {
            b.full[w / 64] |= 1 << (w % 64);
        }
        b
    }

    fn update_summary(&mut self, w: usize) {
        if self.words[w] == u64::MAX {
            self.full[w / 64] |= 1 << (w % 64);
        } else {
            self.full[w / 64] &= !(1 << (w % 64));
        }
    }

    fn set(&mut self, i: u32, on: bool) {
        let i = i as usize;
        if on {
            self.words[i / 64] |= 1 << (i % 64);
        } else {
            self.words[i / 64] &= !(1 << (i % 64));
        }
        self.update_summary(i / 64);
    }

    /// First word at or after `w` that is not full.
    fn nonfull_from(&self, w: usize) -> Option<usize> {
        let mut s = w / 64;
        let mut mask = u64::MAX.checked_shl((w % 64) as u32).unwrap_or(0);
        while s < self.full.len() {
            let open = !self.full[s] & mask;
            if open != 0 {
                return Some(s * 64 + open.trailing_zeros() as usize);
            }
            mask = u64::MAX;
            s += 1;
        }
        None
    }

    /// First clear bit at or after `start`, wrapping around.
    fn find_free_from(&self, start: u32) -> Option<u32> {
        let start = start as usize;
        let start = if start / 64 >= self.words.len() {
            0
        } else {
            start
        };
        let w = start / 64;
        let open = !self.words[w] & (u64::MAX << (start % 64));
        if open != 0 {
            return Some((w * 64 + open.trailing_zeros() as usize) as u32);
        }
        let w2 = self.nonfull_from(w + 1).or_else(|| self.nonfull_from(0))?;
        Some((w2 * 64 + (!self.words[w2]).trailing_zeros() as usize) as u32)
    }
}

/// The addresses of one node subnet and who holds them. Pure: the stores
/// persist its changes.
#[derive(Debug, Clone)]
pub struct AddressPool {
    config: PoolConfig,
    layout: Layout,
    bits: Bitmap,
    allocs: HashMap<u32, Allocation>,
    owners: HashMap<(String, String), u32>,
    cursor: u32,
    next_generation: u64,
    free: u32,
}

impl AddressPool {
    /// An empty pool; validates `config`.
    pub fn new(config: PoolConfig) -> Result<Self> {
        let layout = Layout::new(&config)?;
        let mut bits = Bitmap::new(layout.size());
        for &i in &layout.excluded {
            bits.set(i, true);
        }
        let free = layout.size() - layout.excluded.len() as u32;
        Ok(AddressPool {
            config,
            layout,
            bits,
            allocs: HashMap::new(),
            owners: HashMap::new(),
            cursor: 0,
            next_generation: 1,
            free,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// How many addresses can be handed out in total.
    pub fn capacity(&self) -> u32 {
        self.layout.size() - self.layout.excluded.len() as u32
    }

    /// How many addresses are free.
    pub fn free_count(&self) -> u32 {
        self.free
    }

    /// How many addresses are allocated.
    pub fn len(&self) -> usize {
        self.allocs.len()
    }

    /// Whether nothing is allocated.
    pub fn is_empty(&self) -> bool {
        self.allocs.is_empty()
    }

    /// The allocation of `(container_id, ifname)`, if any.
    pub fn get(&self, container_id: &str, ifname: &str) -> Option<&Allocation> {
        let i = self
            .owners
            .get(&(container_id.to_string(), ifname.to_string()))?;
        self.allocs.get(i)
    }

    /// The allocation holding `addr`, if any.
    pub fn get_addr(&self, addr: IpAddr) -> Option<&Allocation> {
        self.allocs.get(&self.layout.index_of(addr)?)
    }

    /// All allocations, sorted by address.
    pub fn list(&self) -> Vec<Allocation> {
        let mut v: Vec<(u32, Allocation)> =
            self.allocs.iter().map(|(i, a)| (*i, a.clone())).collect();
        v.sort_by_key(|(i, _)| *i);
        v.into_iter().map(|(_, a)| a).collect()
    }

    /// Allocate an address for `(container_id, ifname)`. Idempotent: asking
    /// again returns the same allocation. `Exhausted` when the pool is full.
    pub fn allocate(&mut self, container_id: &str, ifname: &str) -> Result<Allocation> {
        check_owner(&self.config, container_id, ifname)?;
        if let Some(a) = self.get(container_id, ifname) {
            return Ok(a.clone());
        }
        let idx = self
            .bits
            .find_free_from(self.cursor)
            .ok_or_else(|| Error::Exhausted {
                context: self.config.ctx(),
                reason: format!("all {} addresses are allocated", self.capacity()),
            })?;
        Ok(self.take(idx, container_id, ifname))
    }

    /// Allocate exactly `addr` for `(container_id, ifname)`. Returns the
    /// existing allocation if the owner already holds `addr`; `Conflict` if
    /// someone else holds it or the owner holds another address;
    /// `InvalidArgument` if it is outside the pool or never handed out
    /// (network, gateway, broadcast).
    pub fn allocate_addr(
        &mut self,
        container_id: &str,
        ifname: &str,
        addr: IpAddr,
    ) -> Result<Allocation> {
        check_owner(&self.config, container_id, ifname)?;
        let ctx = self.config.ctx();
        let idx = self.layout.allocatable(addr, &ctx)?;
        if let Some(a) = self.get(container_id, ifname) {
            if a.addr == addr {
                return Ok(a.clone());
            }
            return Err(Error::Conflict {
                context: ctx,
                reason: format!(
                    "{container_id}/{ifname} already holds {}, not {addr}",
                    a.addr
                ),
            });
        }
        if let Some(a) = self.allocs.get(&idx) {
            return Err(Error::Conflict {
                context: ctx,
                reason: format!("{addr} is held by {}/{}", a.container_id, a.ifname),
            });
        }
        Ok(self.take(idx, container_id, ifname))
    }

    fn take(&mut self, idx: u32, container_id: &str, ifname: &str) -> Allocation {
        let a = Allocation {
            addr: self
                .layout
                .addr_at(idx)
                .unwrap_or(self.config.subnet.network()),
            prefix_len: self.config.subnet.prefix_len(),
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            generation: self.next_generation,
        };
        self.next_generation += 1;
        self.insert_at(idx, a.clone());
        a
    }

    fn insert_at(&mut self, idx: u32, a: Allocation) {
        self.bits.set(idx, true);
        self.free -= 1;
        self.cursor = if idx + 1 >= self.layout.size() {
            0
        } else {
            idx + 1
        };
        self.owners
            .insert((a.container_id.clone(), a.ifname.clone()), idx);
        self.allocs.insert(idx, a);
    }

    fn remove_at(&mut self, idx: u32) -> Option<Allocation> {
        let a = self.allocs.remove(&idx)?;
        self.owners
            .remove(&(a.container_id.clone(), a.ifname.clone()));
        self.bits.set(idx, false);
        self.free += 1;
        Some(a)
    }

    /// Release the address of `(container_id, ifname)`; `None` if it holds
    /// none (releasing twice is not an error).
    pub fn release(&mut self, container_id: &str, ifname: &str) -> Option<Allocation> {
        let idx = *self
            .owners
            .get(&(container_id.to_string(), ifname.to_string()))?;
        self.remove_at(idx)
    }

    /// Release `addr` only if it is still held under `generation`: a late
    /// release of an address that has since been handed to someone else is
    /// refused with `Conflict`. `None` if the address is free.
    pub fn release_generation(
        &mut self,
        addr: IpAddr,
        generation: u64,
    ) -> Result<Option<Allocation>> {
        let Some(idx) = self.layout.index_of(addr) else {
            return Ok(None);
        };
        match self.allocs.get(&idx) {
            None => Ok(None),
            Some(a) if a.generation == generation => Ok(self.remove_at(idx)),
            Some(a) => Err(Error::Conflict {
                context: self.config.ctx(),
                reason: format!(
                    "{addr} now belongs to {}/{} (generation {}, not {generation})",
                    a.container_id, a.ifname, a.generation
                ),
            }),
        }
    }

    /// Release every allocation whose container id is not in `alive`;
    /// returns what was released.
    pub fn gc(&mut self, alive: &HashSet<String>) -> Vec<Allocation> {
        let dead: Vec<u32> = self
            .allocs
            .iter()
            .filter(|(_, a)| !alive.contains(&a.container_id))
            .map(|(i, _)| *i)
            .collect();
        let mut out: Vec<Allocation> = dead.into_iter().filter_map(|i| self.remove_at(i)).collect();
        out.sort_by_key(|a| addr_to_u128(a.addr));
        out
    }
}

pub(crate) fn check_owner(cfg: &PoolConfig, container_id: &str, ifname: &str) -> Result<()> {
    if container_id.is_empty() || ifname.is_empty() {
        return Err(Error::invalid(
            cfg.ctx(),
            "container id and interface name must not be empty",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn pool(s: &str) -> AddressPool {
        AddressPool::new(PoolConfig::new(s.parse().unwrap())).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn network_gateway_broadcast_never_handed_out() {
        let mut p = pool("10.244.1.0/29");
        assert_eq!(p.capacity(), 5);
        let got: Vec<IpAddr> = (0..5)
            .map(|i| p.allocate(&format!("c{i}"), "eth0").unwrap().addr)
            .collect();
        assert_eq!(got[0], ip("10.244.1.2"));
        assert_eq!(got[4], ip("10.244.1.6"));
        assert!(matches!(
            p.allocate("c9", "eth0"),
            Err(Error::Exhausted { .. })
        ));
        for bad in ["10.244.1.0", "10.244.1.1", "10.244.1.7"] {
            assert!(matches!(
                p.allocate_addr("x", "eth0", ip(bad)),
                Err(Error::InvalidArgument { .. })
            ));
        }
    }

    #[test]
    fn allocate_is_idempotent() {
        let mut p = pool("10.244.1.0/24");
        let a = p.allocate("c1", "eth0").unwrap();
        assert_eq!(p.allocate("c1", "eth0").unwrap(), a);
        let b = p.allocate("c1", "eth1").unwrap();
        assert_ne!(a.addr, b.addr);
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn specific_address() {
        let mut p = pool("10.244.1.0/24");
        let a = p.allocate_addr("c1", "eth0", ip("10.244.1.50")).unwrap();
        assert_eq!(a.addr, ip("10.244.1.50"));
        assert!(matches!(
            p.allocate_addr("c2", "eth0", ip("10.244.1.50")),
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(
            p.allocate_addr("c1", "eth0", ip("10.244.1.51")),
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(
            p.allocate_addr("c1", "eth0", ip("10.244.2.5")),
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[test]
    fn late_release_does_not_free_new_owner() {
        let mut p = pool("10.244.1.0/30"); // one usable address: .2
        let old = p.allocate("c1", "eth0").unwrap();
        p.release("c1", "eth0").unwrap();
        let new = p.allocate("c2", "eth0").unwrap();
        assert_eq!(old.addr, new.addr);
        assert_ne!(old.generation, new.generation);
        assert!(matches!(
            p.release_generation(old.addr, old.generation),
            Err(Error::Conflict { .. })
        ));
        assert_eq!(p.get("c2", "eth0"), Some(&new));
        assert_eq!(
            p.release_generation(new.addr, new.generation).unwrap(),
            Some(new)
        );
    }

    #[test]
    fn gc_releases_dead_containers() {
        let mut p = pool("10.244.1.0/24");
        for c in ["a", "b", "c"] {
            p.allocate(c, "eth0").unwrap();
        }
        let alive: HashSet<String> = ["b".to_string()].into();
        let gone = p.gc(&alive);
        assert_eq!(gone.len(), 2);
        assert_eq!(p.list().len(), 1);
        assert!(p.get("b", "eth0").is_some());
    }

    #[test]
    fn ranges_and_ipv6() {
        let cfg = PoolConfig::new("10.244.1.0/24".parse().unwrap())
            .with_range(IpRange::new(ip("10.244.1.100"), ip("10.244.1.101")));
        let mut p = AddressPool::new(cfg).unwrap();
        assert_eq!(p.allocate("a", "eth0").unwrap().addr, ip("10.244.1.100"));
        assert_eq!(p.allocate("b", "eth0").unwrap().addr, ip("10.244.1.101"));
        assert!(p.allocate("c", "eth0").is_err());

        let mut p6 = pool("fd00:10:244:1::/64");
        assert_eq!(p6.capacity(), MAX_POOL_SIZE - 2);
        assert_eq!(
            p6.allocate("a", "eth0").unwrap().addr,
            ip("fd00:10:244:1::2")
        );
    }

    #[test]
    fn bad_ranges_are_invalid() {
        let cfg = PoolConfig::new("10.244.1.0/24".parse().unwrap())
            .with_range(IpRange::new(ip("10.244.2.1"), ip("10.244.2.9")));
        assert!(matches!(
            AddressPool::new(cfg),
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[test]
    fn fills_a_slash16_and_round_trips() {
        let mut p = pool("10.244.0.0/16");
        let cap = p.capacity();
        for i in 0..cap {
            p.allocate(&i.to_string(), "eth0").unwrap();
        }
        assert!(p.allocate("x", "eth0").is_err());
        let a = p.release("777", "eth0").unwrap();
        assert_eq!(p.allocate("x", "eth0").unwrap().addr, a.addr);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(u8),
        AllocAt(u8, u8),
        Release(u8),
        Gc(Vec<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..40).prop_map(Op::Alloc),
            1 => (0u8..40, any::<u8>()).prop_map(|(c, a)| Op::AllocAt(c, a)),
            2 => (0u8..40).prop_map(Op::Release),
            1 => proptest::collection::vec(0u8..40, 0..20).prop_map(Op::Gc),
        ]
    }

    proptest! {
        #[test]
        fn model_check(ops in proptest::collection::vec(op(), 1..200), lo in 0u8..50, n in 1u8..40) {
            // A /26 narrowed to a random range, so exhaustion happens too.
            let base = 0x0af4_0100u32;
            let start = std::net::Ipv4Addr::from(base + u32::from(lo));
            let end = std::net::Ipv4Addr::from(base + (u32::from(lo) + u32::from(n)).min(63));
            let cfg = PoolConfig::new("10.244.1.0/26".parse().unwrap())
                .with_range(IpRange::new(start.into(), end.into()));
            let mut p = AddressPool::new(cfg).unwrap();
            let mut model: BTreeMap<String, Allocation> = BTreeMap::new();
            let reserved = [ip("10.244.1.0"), ip("10.244.1.1"), ip("10.244.1.63")];
            for op in ops {
                match op {
                    Op::Alloc(c) => {
                        let c = c.to_string();
                        match p.allocate(&c, "eth0") {
                            Ok(a) => {
                                if let Some(m) = model.get(&c) { prop_assert_eq!(m, &a); }
                                prop_assert!(!reserved.contains(&a.addr));
                                prop_assert!(a.addr >= IpAddr::from(start) && a.addr <= IpAddr::from(end));
                                model.insert(c, a);
                            }
                            Err(Error::Exhausted { .. }) => {
                                prop_assert!(!model.contains_key(&c));
                                prop_assert_eq!(p.free_count(), 0);
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                    Op::AllocAt(c, a) => {
                        let c = c.to_string();
                        let addr = IpAddr::from(std::net::Ipv4Addr::from(base + u32::from(a % 64)));
                        if let Ok(got) = p.allocate_addr(&c, "eth0", addr) {
                            prop_assert_eq!(got.addr, addr);
                            prop_assert!(!reserved.contains(&addr));
                            model.insert(c, got);
                        }
                    }
                    Op::Release(c) => {
                        let c = c.to_string();
                        let r = p.release(&c, "eth0");
                        prop_assert_eq!(r, model.remove(&c));
                    }
                    Op::Gc(alive) => {
                        let alive: HashSet<String> = alive.iter().map(|c| c.to_string()).collect();
                        let gone = p.gc(&alive);
                        for g in gone { let m = model.remove(&g.container_id); prop_assert_eq!(m, Some(g)); }
                        prop_assert!(model.keys().all(|c| alive.contains(c)));
                    }
                }
                // No duplicates; the pool agrees with the model.
                let list = p.list();
                let addrs: HashSet<IpAddr> = list.iter().map(|a| a.addr).collect();
                prop_assert_eq!(addrs.len(), list.len());
                prop_assert_eq!(list.len(), model.len());
                prop_assert_eq!(p.free_count() as usize + list.len(), p.capacity() as usize);
            }
        }

        #[test]
        fn release_then_allocate_round_trips(n in 1u32..250, k in 0u32..250) {
            let mut p = pool("10.244.1.0/24");
            for i in 0..n { p.allocate(&i.to_string(), "eth0").unwrap(); }
            let k = k % n;
            let a = p.release(&k.to_string(), "eth0").unwrap();
            prop_assert!(p.get(&k.to_string(), "eth0").is_none());
            let b = p.allocate_addr(&k.to_string(), "eth0", a.addr).unwrap();
            prop_assert_eq!(a.addr, b.addr);
            prop_assert!(b.generation > a.generation);
        }
    }
}
