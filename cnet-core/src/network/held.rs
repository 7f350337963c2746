//! The subnet a node already holds, read from what it has made: its
//! bridge's gateway address (the kernel) or its address pool (the IPAM
//! directory). A node agent claims this subnet before anything else
//! (`LeaseStore::claim`), so the lease store never hands a node a subnet
//! that contradicts its kernel, also after the store lost its data.
//!
//! ```text
//!   ip addr show dev cni0      10.244.2.1/24   ──▶ HeldSubnet::Bridge(10.244.2.0/24)
//!   ls /var/lib/cnet/ipam/pools  10.244.2.0_24 ──▶ HeldSubnet::Pool(10.244.2.0/24)
//! ```

use std::time::Duration;

use ipnet::IpNet;

use crate::error::{Error, Result, ResultExt};
use crate::handle::Handle;
use crate::ipam::{FileStore, LeaseStore, NodeAttrs, NodeLease};

/// Where a node's subnet is already held; see [`held_subnet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeldSubnet {
    /// The bridge has its gateway address in this subnet: containers may be
    /// using it right now. The node must lease exactly this subnet or
    /// nothing.
    Bridge(IpNet),
    /// No bridge address, but the node's address pool is of this subnet
    /// (the host rebooted, the bridge was deleted): the subnet to ask for
    /// first; another one is safe when it is taken.
    Pool(IpNet),
    /// Nothing held: any free subnet.
    None,
}

impl HeldSubnet {
    /// The subnet, if one is held.
    pub fn subnet(&self) -> Option<IpNet> {
        match self {
            HeldSubnet::Bridge(s) | HeldSubnet::Pool(s) => Some(*s),
            HeldSubnet::None => None,
        }
    }

    /// Lease `node` a subnet for `ttl` that agrees with what it holds: for
    /// [`HeldSubnet::Bridge`] exactly that subnet ([`LeaseStore::claim`];
    /// `Conflict` naming the holder when it is another node's: the node
    /// must not take another one while its containers use this one); for
    /// [`HeldSubnet::Pool`] that subnet if it is free, else any
    /// ([`LeaseStore::acquire`]); for [`HeldSubnet::None`] any.
    pub fn lease(
        &self,
        store: &mut dyn LeaseStore,
        node: &str,
        attrs: &NodeAttrs,
        ttl: Duration,
    ) -> Result<NodeLease> {
        match *self {
            HeldSubnet::Bridge(s) => store.claim(node, s, attrs, ttl),
            HeldSubnet::Pool(s) => match store.claim(node, s, attrs, ttl) {
                Err(Error::Conflict { .. }) => store.acquire(node, attrs, ttl),
                r => r,
            },
            HeldSubnet::None => store.acquire(node, attrs, ttl),
        }
    }
}

/// The subnet of `network` (the cluster network, node subnets of
/// `subnet_len`) that this node holds: the bridge `bridge`'s address in
/// `network` (in `host`'s namespace) first, else the only pool of `network`
/// in `ipam` (several pools: [`HeldSubnet::None`], the store decides). A
/// missing bridge is not an error. Equivalent to `ip -4 addr show dev
/// BRIDGE` and `ls DIR/pools`.
pub fn held_subnet(
    host: &Handle,
    bridge: &str,
    ipam: Option<&FileStore>,
    network: &IpNet,
    subnet_len: u8,
) -> Result<HeldSubnet> {
    let ctx = format!("held subnet of {network} (bridge {bridge})");
    let in_network = |n: &IpNet| {
        IpNet::new(n.addr(), subnet_len)
            .ok()
            .map(|s| s.trunc())
            .filter(|s| network.contains(s))
    };
    let addrs = match host.addrs().list(Some(bridge)) {
        Ok(a) => a,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(e).context(&ctx),
    };
    if let Some(s) = addrs.iter().find_map(|a| in_network(&a.local)) {
        return Ok(HeldSubnet::Bridge(s));
    }
    let Some(ipam) = ipam else {
        return Ok(HeldSubnet::None);
    };
    let pools: Vec<IpNet> = ipam
        .pool_subnets()
        .context(&ctx)?
        .into_iter()
        .filter(|p| p.prefix_len() == subnet_len && network.contains(p))
        .collect();
    Ok(match pools[..] {
        [one] => HeldSubnet::Pool(one),
        _ => HeldSubnet::None,
    })
}
