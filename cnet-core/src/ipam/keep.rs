//! Keeping a node's lease through store failures: renew it, or claim its
//! subnet again when the lease is gone (expired while the node was cut off
//! from the store, or lost with the store's data), and tell a lost race
//! from a subnet given to another node. Plus the rule a node agent uses to
//! keep routing peers whose owners have not republished yet.

use std::time::Duration;

use super::subnet::overlaps;
use super::{LeaseStore, NodeAttrs, NodeLease};
use crate::{Error, Result};

/// What [`renew_or_claim`] found.
#[derive(Debug)]
#[non_exhaustive]
pub enum Renewal {
    /// The lease is the node's, as it was (renewed).
    Same,
    /// It was gone from the store and the subnet was free: the node's
    /// again.
    TakenBack,
    /// The store gives the subnet to another node, or this node another
    /// subnet (the reason inside): the node must stop routing it.
    Lost(Error),
}

/// Renew `lease` for `ttl`; when the store no longer has it, claim its
/// subnet again ([`LeaseStore::claim`]). `Lost` only when the store shows
/// the subnet leased to another node (or the node holding another subnet);
/// anything else the store says (a lost race, the store unreachable) is an
/// `Err`, to retry.
pub fn renew_or_claim(
    store: &mut dyn LeaseStore,
    lease: &NodeLease,
    attrs: &NodeAttrs,
    ttl: Duration,
) -> Result<Renewal> {
    let node = lease.node.as_str();
    let now = match store.renew(node, ttl) {
        Ok(now) => now,
        Err(Error::NotFound { .. }) => return claim_again(store, lease, attrs, ttl),
        Err(e) => return Err(e),
    };
    if now.subnet != lease.subnet {
        return Ok(Renewal::Lost(Error::Conflict {
            context: format!("lease of node {node}"),
            reason: format!(
                "the store says it holds {}, not {}",
                now.subnet, lease.subnet
            ),
        }));
    }
    Ok(Renewal::Same)
}

/// Claim `lease`'s subnet again ([`LeaseStore::claim`]): what
/// [`renew_or_claim`] does when the store has no lease of the node, and
/// what a node does when its watch says its lease's key went away (a
/// renewal that only keeps the etcd lease alive would not see that).
/// `TakenBack` when the node holds it (again), `Lost` when the store shows
/// the subnet leased to another node (or the node holding another
/// subnet); anything else is an `Err`, to retry.
pub fn claim_again(
    store: &mut dyn LeaseStore,
    lease: &NodeLease,
    attrs: &NodeAttrs,
    ttl: Duration,
) -> Result<Renewal> {
    let node = lease.node.as_str();
    match store.claim(node, lease.subnet, attrs, ttl) {
        Ok(_) => Ok(Renewal::TakenBack),
        Err(e @ Error::Conflict { .. }) => {
            let taken = store.list()?.iter().any(|o| {
                (o.node != node && overlaps(&o.subnet, &lease.subnet))
                    || (o.node == node && o.subnet != lease.subnet)
            });
            if taken {
                Ok(Renewal::Lost(e))
            } else {
                Err(e)
            }
        }
        Err(e) => Err(e),
    }
}

/// `fresh` (the store's leases) plus the leases of `last` it lacks, unless
/// a lease of `fresh` names the same node or overlaps the subnet; sorted by
/// subnet. What a node routes for a while after the store was away: a peer
/// whose owner has not republished yet stays routed (stale beats empty),
/// and is dropped as soon as the store gives its subnet to someone.
pub fn keep_missing(mut fresh: Vec<NodeLease>, last: &[NodeLease]) -> Vec<NodeLease> {
    let kept: Vec<NodeLease> = last
        .iter()
        .filter(|o| {
            !fresh
                .iter()
                .any(|f| f.node == o.node || overlaps(&f.subnet, &o.subnet))
        })
        .cloned()
        .collect();
    fresh.extend(kept);
    fresh.sort_by_key(|l| {
        (
            super::addr_to_u128(l.subnet.network()),
            l.subnet.prefix_len(),
        )
    });
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::{FileStore, SubnetConfig};

    fn lease(node: &str, subnet: &str) -> NodeLease {
        NodeLease {
            node: node.into(),
            subnet: subnet.parse().unwrap(),
            attrs: Default::default(),
            expires: None,
        }
    }

    #[test]
    fn keep_missing_keeps_absent_peers_unless_their_subnet_or_name_is_taken() {
        let last = [
            lease("a", "10.244.1.0/24"),
            lease("b", "10.244.2.0/24"),
            lease("c", "10.244.3.0/24"),
        ];
        let fresh = vec![lease("a", "10.244.1.0/24"), lease("d", "10.244.3.0/24")];
        let got: Vec<String> = keep_missing(fresh, &last)
            .iter()
            .map(|l| format!("{} {}", l.node, l.subnet))
            .collect();
        assert_eq!(
            got,
            ["a 10.244.1.0/24", "b 10.244.2.0/24", "d 10.244.3.0/24"]
        );
    }

    #[test]
    fn renew_or_claim_takes_back_a_free_subnet_and_reports_a_taken_one() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(tmp.path()).unwrap();
        let mut l = store
            .subnets(SubnetConfig::new("10.244.0.0/16".parse().unwrap()))
            .unwrap();
        let (attrs, ttl) = (NodeAttrs::default(), Duration::from_secs(60));
        let mine = l.acquire("a", &attrs, ttl).unwrap();
        assert!(matches!(
            renew_or_claim(&mut l, &mine, &attrs, ttl).unwrap(),
            Renewal::Same
        ));
        l.release("a").unwrap();
        assert!(matches!(
            renew_or_claim(&mut l, &mine, &attrs, ttl).unwrap(),
            Renewal::TakenBack
        ));
        l.release("a").unwrap();
        l.claim("b", mine.subnet, &attrs, ttl).unwrap();
        match renew_or_claim(&mut l, &mine, &attrs, ttl).unwrap() {
            Renewal::Lost(e) => assert!(e.to_string().contains("leased to node b"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
