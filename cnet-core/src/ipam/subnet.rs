//! Node subnets: carving a cluster network into one subnet per host.
//!
//! Pure logic, no I/O: [`SubnetConfig`] describes the cluster network and
//! [`SubnetAllocator`] picks free subnets given the ones already leased.
//! The stores ([`super::FileLeases`], the etcd store) persist leases and call
//! into this module to choose.

use std::collections::BTreeSet;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{addr_from_u128, addr_to_u128, NodeLease};
use crate::{Error, Result};

/// A cluster network carved into equal subnets, one per node.
///
/// Like Flannel's network config: `Network`, `SubnetLen`, `SubnetMin`,
/// `SubnetMax`, plus subnets that are never handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetConfig {
    /// The cluster network, e.g. `10.244.0.0/16` or `fd00:10:244::/56`.
    pub network: IpNet,
    /// Prefix length of each node subnet (default /24 for IPv4, /64 for IPv6).
    pub subnet_len: u8,
    /// Lowest subnet handed out. Default: like Flannel, the second subnet
    /// (`10.244.1.0/24`), so the first one, which is easily confused with
    /// the network itself, is skipped; when the network holds a single
    /// subnet, that one.
    pub min_subnet: Option<IpNet>,
    /// Highest subnet handed out (default: the last one).
    pub max_subnet: Option<IpNet>,
    /// Address ranges that are never handed out: any subnet overlapping one
    /// of these is skipped.
    pub reserved: Vec<IpNet>,
}

impl SubnetConfig {
    /// A network with the default subnet length (/24 for IPv4, /64 for IPv6)
    /// and no bounds or reservations.
    pub fn new(network: IpNet) -> Self {
        let subnet_len = match network {
            IpNet::V4(_) => 24,
            IpNet::V6(_) => 64,
        };
        SubnetConfig {
            network: network.trunc(),
            subnet_len,
            min_subnet: None,
            max_subnet: None,
            reserved: Vec::new(),
        }
    }

    /// Set the node subnet prefix length.
    pub fn with_subnet_len(mut self, len: u8) -> Self {
        self.subnet_len = len;
        self
    }

    /// Set the lowest subnet handed out.
    pub fn with_min(mut self, min: IpNet) -> Self {
        self.min_subnet = Some(min);
        self
    }

    /// Set the highest subnet handed out.
    pub fn with_max(mut self, max: IpNet) -> Self {
        self.max_subnet = Some(max);
        self
    }

    /// Add a range that is never handed out.
    pub fn with_reserved(mut self, net: IpNet) -> Self {
        self.reserved.push(net);
        self
    }

    fn ctx(&self) -> String {
        format!("subnet config {}", self.network)
    }

    fn host_bits(&self) -> u32 {
        u32::from(self.network.max_prefix_len() - self.subnet_len)
    }

    /// Check the configuration: the subnet length fits the network, bounds
    /// are subnets of the network, families agree.
    pub fn validate(&self) -> Result<()> {
        let ctx = self.ctx();
        let plen = self.network.prefix_len();
        let max = self.network.max_prefix_len();
        if self.subnet_len < plen || self.subnet_len > max {
            return Err(Error::invalid(
                ctx,
                format!(
                    "subnet length /{} does not fit in network /{plen} (must be /{plen}../{max})",
                    self.subnet_len
                ),
            ));
        }
        if self.subnet_len - plen >= 127 {
            return Err(Error::invalid(
                ctx,
                format!(
                    "network /{plen} split into /{} subnets is too many",
                    self.subnet_len
                ),
            ));
        }
        for (what, b) in [
            ("min_subnet", self.min_subnet),
            ("max_subnet", self.max_subnet),
        ] {
            if let Some(b) = b {
                if self.index_of(&b).is_none() {
                    return Err(Error::invalid(
                        ctx,
                        format!(
                            "{what} {b} is not a /{} subnet of {}",
                            self.subnet_len, self.network
                        ),
                    ));
                }
            }
        }
        let (lo, hi) = self.bounds_unchecked();
        if lo > hi {
            return Err(Error::invalid(ctx, "min_subnet is above max_subnet"));
        }
        for r in &self.reserved {
            if same_family(r, &self.network).is_none() {
                return Err(Error::invalid(
                    ctx,
                    format!("reserved range {r} is not of the network's address family"),
                ));
            }
        }
        Ok(())
    }

    /// Number of subnets in the network (ignoring bounds and reservations).
    pub fn subnet_count(&self) -> u128 {
        1u128 << (self.subnet_len - self.network.prefix_len())
    }

    /// The subnet at `index` (0 = the first subnet of the network).
    pub fn subnet_at(&self, index: u128) -> IpNet {
        let base = addr_to_u128(self.network.network());
        let off = index.checked_shl(self.host_bits()).unwrap_or(0);
        let addr = addr_from_u128(base + off, self.network.network().is_ipv6());
        // The prefix length is valid (checked by validate), so this cannot fail.
        IpNet::new(addr, self.subnet_len).unwrap_or(self.network)
    }

    /// The index of `subnet` if it is an aligned `/subnet_len` inside the network.
    pub fn index_of(&self, subnet: &IpNet) -> Option<u128> {
        same_family(subnet, &self.network)?;
        if subnet.prefix_len() != self.subnet_len
            || subnet.trunc() != *subnet
            || !self.network.contains(subnet)
        {
            return None;
        }
        let off = addr_to_u128(subnet.network()) - addr_to_u128(self.network.network());
        Some(off.checked_shr(self.host_bits()).unwrap_or(0))
    }

    fn bounds_unchecked(&self) -> (u128, u128) {
        let count = self.subnet_count();
        let lo = match self.min_subnet.and_then(|m| self.index_of(&m)) {
            Some(i) => i,
            None if count > 1 => 1,
            None => 0,
        };
        let hi = self
            .max_subnet
            .and_then(|m| self.index_of(&m))
            .unwrap_or(count - 1);
        (lo, hi)
    }

    /// Whether `subnet` may be handed out: aligned, inside the bounds, and
    /// overlapping no reserved range.
    pub fn is_assignable(&self, subnet: &IpNet) -> bool {
        let Some(i) = self.index_of(subnet) else {
            return false;
        };
        let (lo, hi) = self.bounds_unchecked();
        i >= lo && i <= hi && !self.reserved.iter().any(|r| overlaps(r, subnet))
    }
}

/// Whether `node` may lease exactly `subnet`, given the live `leases` (the
/// rule behind `LeaseStore::claim`, pure): `Ok(Some(i))` when `leases[i]`
/// is already `node`'s lease of `subnet` (renew it), `Ok(None)` when the
/// subnet is free and `node` holds nothing (take it). `Conflict` when
/// another node holds the subnet, or `node` holds another one;
/// `InvalidArgument` when `subnet` is not one this network hands out.
/// Errors carry `ctx` (the store's context).
pub(crate) fn check_claim(
    ctx: &str,
    config: &SubnetConfig,
    leases: &[&NodeLease],
    node: &str,
    subnet: &IpNet,
) -> Result<Option<usize>> {
    if !config.is_assignable(subnet) {
        return Err(Error::invalid(
            ctx.to_string(),
            format!(
                "cannot claim {subnet}: not a /{} subnet of {} that is handed out \
                 (bounds or reserved ranges)",
                config.subnet_len, config.network
            ),
        ));
    }
    for (i, l) in leases.iter().enumerate() {
        let same_subnet = overlaps(&l.subnet, subnet);
        match (l.node == node, same_subnet) {
            (true, true) if l.subnet == *subnet => return Ok(Some(i)),
            (true, _) => {
                return Err(Error::Conflict {
                    context: ctx.to_string(),
                    reason: format!(
                        "cannot claim {subnet} for node {node}: the store says it holds {}",
                        l.subnet
                    ),
                })
            }
            (false, true) => {
                return Err(Error::Conflict {
                    context: ctx.to_string(),
                    reason: format!(
                        "cannot claim {subnet} for node {node}: it is leased to node {}",
                        l.node
                    ),
                })
            }
            (false, false) => {}
        }
    }
    Ok(None)
}

/// Whether two prefixes share an address.
pub(crate) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    same_family(a, b).is_some() && (a.contains(&b.network()) || b.contains(&a.network()))
}

fn same_family(a: &IpNet, b: &IpNet) -> Option<()> {
    match (a, b) {
        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_)) => Some(()),
        _ => None,
    }
}

/// Picks free node subnets, given the subnets already in use. Pure.
#[derive(Debug, Clone)]
pub struct SubnetAllocator {
    config: SubnetConfig,
    taken: BTreeSet<u128>,
}

impl SubnetAllocator {
    /// An allocator with nothing taken yet; validates `config`.
    pub fn new(config: SubnetConfig) -> Result<Self> {
        config.validate()?;
        Ok(SubnetAllocator {
            config,
            taken: BTreeSet::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SubnetConfig {
        &self.config
    }

    /// Record `subnet` as in use (a lease or reservation read from a store).
    /// `Conflict` if it is already taken, `InvalidArgument` if it is not a
    /// subnet of the network.
    pub fn mark_taken(&mut self, subnet: &IpNet) -> Result<()> {
        let i = self.config.index_of(subnet).ok_or_else(|| {
            Error::invalid(
                self.config.ctx(),
                format!(
                    "{subnet} is not a /{} subnet of the network",
                    self.config.subnet_len
                ),
            )
        })?;
        if !self.taken.insert(i) {
            return Err(Error::Conflict {
                context: self.config.ctx(),
                reason: format!("subnet {subnet} is already taken"),
            });
        }
        Ok(())
    }

    /// Forget that `subnet` is in use; returns whether it was.
    pub fn release(&mut self, subnet: &IpNet) -> bool {
        self.config
            .index_of(subnet)
            .is_some_and(|i| self.taken.remove(&i))
    }

    /// Whether `subnet` is assignable and not taken.
    pub fn is_free(&self, subnet: &IpNet) -> bool {
        self.config.is_assignable(subnet)
            && self
                .config
                .index_of(subnet)
                .is_some_and(|i| !self.taken.contains(&i))
    }

    /// The subnet to hand out next: `preferred` if it is free (a node's
    /// previous subnet), else the lowest free one; `Exhausted` when none is.
    pub fn next_free(&self, preferred: Option<&IpNet>) -> Result<IpNet> {
        if let Some(p) = preferred {
            if self.is_free(p) {
                return Ok(*p);
            }
        }
        let (lo, hi) = self.config.bounds_unchecked();
        self.first_free_in(lo, hi).ok_or_else(|| self.exhausted())
    }

    /// Like [`SubnetAllocator::next_free`], but when `preferred` is not
    /// free the search starts at a subnet picked by `seed` (wrapping
    /// around), not at the lowest: nodes that start together and pick
    /// with different seeds (random ones) rarely try the same subnet, so
    /// the compare-and-swap races they lose stay few (Flannel picks at
    /// random too).
    pub fn next_free_spread(&self, preferred: Option<&IpNet>, seed: u64) -> Result<IpNet> {
        if let Some(p) = preferred {
            if self.is_free(p) {
                return Ok(*p);
            }
        }
        let (lo, hi) = self.config.bounds_unchecked();
        let start = lo + u128::from(seed) % (hi - lo + 1);
        self.first_free_in(start, hi)
            .or_else(|| self.first_free_in(lo, start.checked_sub(1)?))
            .ok_or_else(|| self.exhausted())
    }

    fn exhausted(&self) -> Error {
        Error::Exhausted {
            context: self.config.ctx(),
            reason: format!(
                "no free /{} subnet left ({} in use)",
                self.config.subnet_len,
                self.taken.len()
            ),
        }
    }

    /// The first free, unreserved subnet with an index in `lo..=hi`.
    fn first_free_in(&self, lo: u128, hi: u128) -> Option<IpNet> {
        let mut i = lo;
        while i <= hi {
            if self.taken.contains(&i) {
                // Skip the run of taken subnets in one walk of the set.
                for t in self.taken.range(i..) {
                    if *t != i {
                        break;
                    }
                    i += 1;
                }
                continue;
            }
            let cand = self.config.subnet_at(i);
            if let Some(r) = self.config.reserved.iter().find(|r| overlaps(r, &cand)) {
                // Jump past the reserved range (it may cover many subnets).
                let end = addr_to_u128(r.broadcast()).max(addr_to_u128(cand.broadcast()));
                let base = addr_to_u128(self.config.network.network());
                let next = (end - base)
                    .checked_shr(self.config.host_bits())
                    .unwrap_or(0)
                    + 1;
                i = next.max(i + 1);
                continue;
            }
            return Some(cand);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::IpAddr;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn default_skips_first_subnet_like_flannel() {
        let a = SubnetAllocator::new(SubnetConfig::new(net("10.244.0.0/16"))).unwrap();
        assert_eq!(a.next_free(None).unwrap(), net("10.244.1.0/24"));
    }

    #[test]
    fn subnet_len_that_does_not_fit_is_invalid() {
        let e = SubnetConfig::new(net("10.244.0.0/16"))
            .with_subnet_len(12)
            .validate()
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        let e = SubnetConfig::new(net("10.244.0.0/16"))
            .with_subnet_len(33)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
    }

    #[test]
    fn bounds_must_be_subnets() {
        let e = SubnetConfig::new(net("10.244.0.0/16"))
            .with_min(net("10.245.0.0/24"))
            .validate()
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }

    #[test]
    fn exhaustion_is_typed() {
        let cfg = SubnetConfig::new(net("10.0.0.0/30")).with_subnet_len(31);
        let mut a = SubnetAllocator::new(cfg).unwrap();
        let s = a.next_free(None).unwrap();
        assert_eq!(s, net("10.0.0.2/31"));
        a.mark_taken(&s).unwrap();
        assert!(matches!(a.next_free(None), Err(Error::Exhausted { .. })));
        assert!(matches!(a.mark_taken(&s), Err(Error::Conflict { .. })));
    }

    #[test]
    fn spread_starts_at_the_seed_and_wraps_around() {
        let mut a = SubnetAllocator::new(SubnetConfig::new(net("10.244.0.0/16"))).unwrap();
        // Indices 1..=255 are assignable (the first subnet is skipped).
        assert_eq!(a.next_free_spread(None, 9).unwrap(), net("10.244.10.0/24"));
        a.mark_taken(&net("10.244.10.0/24")).unwrap();
        assert_eq!(a.next_free_spread(None, 9).unwrap(), net("10.244.11.0/24"));
        for i in 1..255 {
            let _ = a.mark_taken(&net(&format!("10.244.{i}.0/24")));
        }
        // Only .255 is left; a seed past it wraps around to find it, and
        // a preferred free subnet still wins.
        assert_eq!(a.next_free_spread(None, 0).unwrap(), net("10.244.255.0/24"));
        a.release(&net("10.244.3.0/24"));
        assert_eq!(
            a.next_free_spread(None, 254).unwrap(),
            net("10.244.255.0/24")
        );
        assert_eq!(
            a.next_free_spread(Some(&net("10.244.3.0/24")), 254)
                .unwrap(),
            net("10.244.3.0/24")
        );
        a.mark_taken(&net("10.244.3.0/24")).unwrap();
        a.mark_taken(&net("10.244.255.0/24")).unwrap();
        assert!(matches!(
            a.next_free_spread(None, 77),
            Err(Error::Exhausted { .. })
        ));
    }

    #[test]
    fn reserved_ranges_are_skipped() {
        let cfg = SubnetConfig::new(net("10.244.0.0/16")).with_reserved(net("10.244.0.0/20"));
        let a = SubnetAllocator::new(cfg).unwrap();
        assert_eq!(a.next_free(None).unwrap(), net("10.244.16.0/24"));
    }

    #[test]
    fn preferred_subnet_is_returned_when_free() {
        let mut a = SubnetAllocator::new(SubnetConfig::new(net("10.244.0.0/16"))).unwrap();
        let p = net("10.244.7.0/24");
        assert_eq!(a.next_free(Some(&p)).unwrap(), p);
        a.mark_taken(&p).unwrap();
        assert_eq!(a.next_free(Some(&p)).unwrap(), net("10.244.1.0/24"));
    }

    #[test]
    fn ipv6() {
        let cfg = SubnetConfig::new(net("fd00:10:244::/56"));
        let mut a = SubnetAllocator::new(cfg).unwrap();
        let s = a.next_free(None).unwrap();
        assert_eq!(s, net("fd00:10:244:1::/64"));
        a.mark_taken(&s).unwrap();
        assert_eq!(a.next_free(None).unwrap(), net("fd00:10:244:2::/64"));
        assert_eq!(a.config().subnet_count(), 256);
    }

    fn lease(node: &str, subnet: &str) -> NodeLease {
        NodeLease {
            node: node.into(),
            subnet: net(subnet),
            attrs: Default::default(),
            expires: None,
        }
    }

    #[test]
    fn claim_takes_a_free_subnet_or_renews_its_own() {
        let cfg = SubnetConfig::new(net("10.244.0.0/16"));
        let a = lease("a", "10.244.1.0/24");
        let b = lease("b", "10.244.2.0/24");
        let all = [&a, &b];
        assert_eq!(
            check_claim("t", &cfg, &all, "c", &net("10.244.3.0/24")).unwrap(),
            None
        );
        assert_eq!(
            check_claim("t", &cfg, &all, "b", &net("10.244.2.0/24")).unwrap(),
            Some(1)
        );
    }

    #[test]
    fn claim_never_takes_another_nodes_subnet_or_a_second_one() {
        let cfg = SubnetConfig::new(net("10.244.0.0/16"));
        let a = lease("a", "10.244.1.0/24");
        let all = [&a];
        let e = check_claim("t", &cfg, &all, "b", &net("10.244.1.0/24")).unwrap_err();
        assert!(matches!(e, Error::Conflict { .. }), "{e}");
        assert!(e.to_string().contains("leased to node a"), "{e}");
        let e = check_claim("t", &cfg, &all, "a", &net("10.244.5.0/24")).unwrap_err();
        assert!(e.to_string().contains("holds 10.244.1.0/24"), "{e}");
        let e = check_claim("t", &cfg, &all, "b", &net("10.245.1.0/24")).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }

    proptest! {
        #[test]
        fn never_hands_out_taken_or_reserved(
            len in 20u8..=28,
            reserved in proptest::collection::vec((0u32..256, 22u8..=28), 0..4),
            n in 0usize..64,
        ) {
            let mut cfg = SubnetConfig::new(net("10.244.0.0/16")).with_subnet_len(len);
            for (i, l) in &reserved {
                let a = std::net::Ipv4Addr::from(0x0af4_0000u32 + (i << 8));
                cfg = cfg.with_reserved(IpNet::new(IpAddr::V4(a), *l).unwrap().trunc());
            }
            let mut a = SubnetAllocator::new(cfg.clone()).unwrap();
            let mut seen = BTreeSet::new();
            for _ in 0..n {
                match a.next_free(None) {
                    Ok(s) => {
                        prop_assert!(cfg.is_assignable(&s));
                        prop_assert!(!cfg.reserved.iter().any(|r| overlaps(r, &s)));
                        prop_assert!(seen.insert(s));
                        a.mark_taken(&s).unwrap();
                    }
                    Err(Error::Exhausted { .. }) => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
}
