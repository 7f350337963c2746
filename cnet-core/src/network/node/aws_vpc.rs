//! The `aws-vpc` backend (feature `aws`): routes in the VPC's own route
//! tables, `PEER-SUBNET → PEER'S NETWORK INTERFACE`, so the VPC router
//! carries pod traffic between hosts with no encapsulation (Flannel's
//! `aws-vpc`, removed in 2022, done again with its known faults fixed).
//!
//! ```text
//! AwsVpcRoutes::reconcile_leases(leases)
//!   1. desired = { lease.subnet → lease's ENI (attrs.extra["aws-eni"]) } for
//!      every lease, this node's own included (the VPC needs it too)
//!   2. per table: DescribeRouteTables (one call), then plan (pure, [`plan`]):
//!      owned = routes whose destination lies inside the cluster network;
//!      unchanged / ReplaceRoute (target differs or blackhole) / DeleteRoute
//!      (no lease: a departed node, an expired lease, a blackhole) /
//!      CreateRoute (new peer)
//!   3. quota: held − deleted + created > quota → nothing created, the
//!      rest applied, Error::RouteQuota (held, wanted, quota, what to do)
//!   4. DeleteRoute ▶ ReplaceRoute ▶ CreateRoute; nothing written when converged
//! ```
//!
//! Ownership: every route of the configured tables whose destination lies
//! inside [`AwsVpcConfig::cluster`], whatever its target; every other route
//! (the `local` route, an internet or NAT gateway, another tool's routes
//! outside the cluster network) is never touched. Several nodes may write
//! the same table: they compute the same desired set from the same leases,
//! and the races between them end in `RouteAlreadyExists` (then replaced)
//! or `InvalidRoute.NotFound` (a delete of what is gone succeeds).
//!
//! On the host, peers are reached through the default route: the backend
//! makes no device and no kernel route. It disables the source/destination
//! check of the node's own interface, or the VPC drops packets to pod
//! addresses ([`AwsVpcRoutes::prepare`]).

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::aws::{Ec2, Identity, RouteTable};
use crate::ipam::NodeLease;
use crate::network::node::{PeerPath, PeerReport};
use crate::{Error, Result};

/// The lease attribute (`NodeAttrs::extra`) that carries a node's network
/// interface id (`eni-…`), the target of its route.
pub const AWS_ENI_ATTR: &str = "aws-eni";

/// The route table quota AWS applies by default since 2025 (it was 50;
/// adjustable to 1,000).
pub const DEFAULT_ROUTE_QUOTA: usize = 500;

/// Which route tables the backend keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTables {
    /// These tables (`rtb-…`), e.g. one per availability zone.
    Ids(Vec<String>),
    /// The table associated with the node's subnet, else the VPC's main
    /// table (what Flannel did).
    OfSubnet,
}

/// Configuration of the `aws-vpc` backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsVpcConfig {
    /// The cluster (pod) network: the backend owns every route inside it.
    pub cluster: IpNet,
    /// The tables kept.
    pub tables: RouteTables,
    /// Routes a table may hold (all routes, other tools' and `local`
    /// included); default [`DEFAULT_ROUTE_QUOTA`].
    pub route_quota: usize,
    /// Disable the source/destination check of the node's own interface
    /// in [`AwsVpcRoutes::prepare`] (default true).
    pub disable_source_dest_check: bool,
}

impl AwsVpcConfig {
    /// Keep the routes of `cluster` in the table of the node's subnet, the
    /// default quota, source/destination check disabled.
    pub fn new(cluster: IpNet) -> Self {
        AwsVpcConfig {
            cluster,
            tables: RouteTables::OfSubnet,
            route_quota: DEFAULT_ROUTE_QUOTA,
            disable_source_dest_check: true,
        }
    }

    /// Keep these tables.
    pub fn tables(mut self, ids: &[&str]) -> Self {
        self.tables = RouteTables::Ids(ids.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Refuse to grow a table beyond `quota` routes.
    pub fn route_quota(mut self, quota: usize) -> Self {
        self.route_quota = quota;
        self
    }
}

/// A route the backend wants: a node's subnet through its interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VpcPeer {
    /// Node name (for errors).
    pub name: String,
    /// Its pod subnet.
    pub subnet: IpNet,
    /// Its network interface, `eni-…`.
    pub eni: String,
}

impl VpcPeer {
    /// The peer a lease describes: its subnet and `attrs.extra["aws-eni"]`.
    pub fn from_lease(lease: &NodeLease) -> Result<Self> {
        let eni = lease.attrs.extra.get(AWS_ENI_ATTR).ok_or_else(|| {
            Error::invalid(
                format!("aws-vpc peer {}", lease.node),
                format!("its lease has no {AWS_ENI_ATTR} attribute"),
            )
        })?;
        Ok(VpcPeer {
            name: lease.node.clone(),
            subnet: lease.subnet,
            eni: eni.clone(),
        })
    }
}

/// What a reconcile did to one table (or would do: [`plan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TablePlan {
    /// The table.
    pub table: String,
    /// Routes held before (all of them).
    pub held: usize,
    /// Routes to create: destination → interface.
    pub create: Vec<(IpNet, String)>,
    /// Routes to point at another interface (or revive from blackhole).
    pub replace: Vec<(IpNet, String)>,
    /// Routes to delete (departed, expired, blackhole, foreign target).
    pub delete: Vec<IpNet>,
    /// Routes already right.
    pub unchanged: usize,
}

impl TablePlan {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.replace.is_empty() && self.delete.is_empty()
    }
}

/// The changes that bring `table` to `desired` (destination → interface),
/// touching only routes inside `cluster`. Pure.
pub fn plan(table: &RouteTable, cluster: IpNet, desired: &BTreeMap<IpNet, String>) -> TablePlan {
    let mut p = TablePlan {
        table: table.id.clone(),
        held: table.routes.len(),
        ..Default::default()
    };
    let mut seen = std::collections::BTreeSet::new();
    for r in &table.routes {
        let Some(dest) = r.destination else { continue };
        // The table's own `local` route is never ours, even if the cluster
        // network were inside the VPC's.
        if !cluster.contains(&dest) || r.gateway_id.as_deref() == Some("local") {
            continue;
        }
        seen.insert(dest);
        match desired.get(&dest) {
            Some(eni) if r.network_interface_id.as_deref() == Some(eni) && !r.is_blackhole() => {
                p.unchanged += 1
            }
            Some(eni) => p.replace.push((dest, eni.clone())),
            None => p.delete.push(dest),
        }
    }
    for (dest, eni) in desired {
        if !seen.contains(dest) {
            p.create.push((*dest, eni.clone()));
        }
    }
    p
}

/// The report of a reconcile: one plan per table, as applied.
#[derive(Debug, Clone, Default)]
pub struct VpcReport {
    /// Per table.
    pub tables: Vec<TablePlan>,
    /// Leases that make no route (no `aws-eni`, outside the cluster
    /// network), with why.
    pub skipped: Vec<Error>,
}

impl VpcReport {
    /// Routes created, replaced and deleted in all tables.
    pub fn writes(&self) -> usize {
        self.tables
            .iter()
            .map(|t| t.create.len() + t.replace.len() + t.delete.len())
            .sum()
    }
}

/// The `aws-vpc` backend of one node.
#[derive(Debug)]
pub struct AwsVpcRoutes {
    ec2: Ec2,
    cfg: AwsVpcConfig,
    me: Identity,
    tables: Vec<String>,
}

impl AwsVpcRoutes {
    /// The backend of the node `me` (from [`crate::aws::Imds::identity`] or
    /// [`AwsVpcRoutes::identity_of_instance`]); finds its tables.
    pub fn new(ec2: Ec2, cfg: AwsVpcConfig, me: Identity) -> Result<Self> {
        let tables = match &cfg.tables {
            RouteTables::Ids(ids) if ids.is_empty() => {
                return Err(Error::invalid("aws-vpc route tables", "no table given"))
            }
            RouteTables::Ids(ids) => ids.clone(),
            RouteTables::OfSubnet => find_tables(&ec2, &me)?,
        };
        Ok(AwsVpcRoutes {
            ec2,
            cfg,
            me,
            tables,
        })
    }

    /// The identity of instance `id` through `DescribeInstances` (its
    /// primary interface), for nodes without a metadata service.
    pub fn identity_of_instance(ec2: &Ec2, id: &str) -> Result<Identity> {
        let inst = ec2.describe_instances(&[id])?;
        let context = format!("aws-vpc identity of {id}");
        let i = inst
            .into_iter()
            .find(|i| i.id == id)
            .ok_or_else(|| Error::NotFound {
                context: context.clone(),
                kernel: None,
            })?;
        let eni = i.network_interface_ids.first().cloned().ok_or_else(|| {
            Error::invalid(context.clone(), "the instance has no network interface")
        })?;
        Ok(Identity {
            instance_id: i.id,
            eni_id: eni,
            subnet_id: i.subnet_id.unwrap_or_default(),
            vpc_id: i.vpc_id.unwrap_or_default(),
        })
    }

    /// The tables kept.
    pub fn tables(&self) -> &[String] {
        &self.tables
    }

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        &self.me
    }

    /// Disable the source/destination check of the node's interface
    /// (once: nothing is written when it is already off).
    pub fn prepare(&self) -> Result<()> {
        if !self.cfg.disable_source_dest_check {
            return Ok(());
        }
        let eni = &self.me.eni_id;
        let now = self.ec2.describe_network_interfaces(&[eni])?;
        if now
            .iter()
            .any(|n| &n.id == eni && n.source_dest_check == Some(false))
        {
            return Ok(());
        }
        self.ec2.set_source_dest_check(eni, false)
    }

    /// Converge every table to one route per lease (see the module's docs).
    pub fn reconcile_leases(&self, leases: &[NodeLease]) -> Result<VpcReport> {
        let mut skipped = Vec::new();
        let mut peers = Vec::new();
        for l in leases {
            match VpcPeer::from_lease(l) {
                Ok(p) => peers.push(p),
                Err(e) => skipped.push(e),
            }
        }
        let mut report = self.reconcile(&peers)?;
        report.skipped.extend(skipped);
        Ok(report)
    }

    /// Cross-subnet with the route table ([`crate::network::node::Encap::RouteTable`]):
    /// converge every table to one route per lease whose node `report` (the
    /// node's own kernel reconcile with that backend) placed beyond the
    /// segment ([`PeerPath::RouteTable`]). Peers on the segment get the
    /// node's direct routes and nothing in the table (no quota used), and
    /// neither does this node (its segment reaches it directly). Each
    /// table must serve one segment: the table of the node's subnet, the
    /// default [`RouteTables::OfSubnet`].
    pub fn reconcile_beyond(&self, leases: &[NodeLease], report: &PeerReport) -> Result<VpcReport> {
        let beyond: std::collections::HashSet<&str> =
            report.peers_on(PeerPath::RouteTable).into_iter().collect();
        let chosen: Vec<NodeLease> = leases
            .iter()
            .filter(|l| beyond.contains(l.node.as_str()))
            .cloned()
            .collect();
        self.reconcile_leases(&chosen)
    }

    /// Converge every table to one route per peer (this node included).
    /// A peer outside the cluster network is skipped (reported). A table
    /// that fails does not stop the others: one failure is returned as it
    /// is (a quota refusal comes after that table's deletes and replaces
    /// were applied), several as [`Error::Partial`].
    pub fn reconcile(&self, peers: &[VpcPeer]) -> Result<VpcReport> {
        let mut report = VpcReport::default();
        let mut desired = BTreeMap::new();
        for p in peers {
            if self.cfg.cluster.contains(&p.subnet) {
                desired.insert(p.subnet, p.eni.clone());
            } else {
                report.skipped.push(Error::invalid(
                    format!("aws-vpc peer {}", p.name),
                    format!(
                        "subnet {} is outside the cluster network {}",
                        p.subnet, self.cfg.cluster
                    ),
                ));
            }
        }
        let mut errors = Vec::new();
        for id in &self.tables {
            // One table per call: a table deleted meanwhile is that
            // table's error (InvalidRouteTableID.NotFound), not the others'.
            let table = match self.ec2.describe_route_tables(&[id], &[]) {
                Ok(t) => t.into_iter().find(|t| &t.id == id),
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let Some(table) = table else {
                errors.push(Error::NotFound {
                    context: format!("aws-vpc route table {id}"),
                    kernel: None,
                });
                continue;
            };
            let p = plan(&table, self.cfg.cluster, &desired);
            match self.apply(&p) {
                Ok(()) => report.tables.push(p),
                Err(e) => errors.push(e),
            }
        }
        match errors.len() {
            0 => Ok(report),
            1 => Err(errors.remove(0)),
            n => Err(Error::Partial {
                context: "aws-vpc reconcile".into(),
                applied: format!(
                    "{} of {} tables converged",
                    self.tables.len() - n,
                    self.tables.len()
                ),
                errors,
            }),
        }
    }

    fn apply(&self, p: &TablePlan) -> Result<()> {
        let t = &p.table;
        for dest in &p.delete {
            self.ec2.delete_route(t, *dest)?;
        }
        for (dest, eni) in &p.replace {
            match self.ec2.replace_route(t, *dest, eni) {
                // Deleted by another node meanwhile: make it again.
                Err(e) if e.cloud_code() == Some("InvalidRoute.NotFound") => {
                    self.ec2.create_route(t, *dest, eni)?
                }
                r => r?,
            }
        }
        let after = p.held - p.delete.len();
        if !p.create.is_empty() && after + p.create.len() > self.cfg.route_quota {
            return Err(Error::RouteQuota {
                context: "aws-vpc reconcile".into(),
                table: t.clone(),
                held: after,
                wanted: p.create.len(),
                quota: self.cfg.route_quota,
            });
        }
        for (dest, eni) in &p.create {
            match self.ec2.create_route(t, *dest, eni) {
                // Made by another node meanwhile: point it where we want.
                Err(e) if e.cloud_code() == Some("RouteAlreadyExists") => {
                    self.ec2.replace_route(t, *dest, eni)?
                }
                r => r?,
            }
        }
        Ok(())
    }
}

/// The table associated with the node's subnet, else the VPC's main one.
fn find_tables(ec2: &Ec2, me: &Identity) -> Result<Vec<String>> {
    let by_subnet =
        ec2.describe_route_tables(&[], &[("association.subnet-id", &[&me.subnet_id])])?;
    if let Some(t) = by_subnet.first() {
        return Ok(vec![t.id.clone()]);
    }
    let main = ec2.describe_route_tables(
        &[],
        &[("vpc-id", &[&me.vpc_id]), ("association.main", &["true"])],
    )?;
    match main.first() {
        Some(t) => Ok(vec![t.id.clone()]),
        None => Err(Error::NotFound {
            context: format!(
                "aws-vpc: route table of subnet {} (or main table of {})",
                me.subnet_id, me.vpc_id
            ),
            kernel: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::VpcRoute;

    fn route(dest: &str, eni: Option<&str>, state: &str) -> VpcRoute {
        VpcRoute {
            destination: Some(dest.parse().unwrap()),
            network_interface_id: eni.map(str::to_string),
            state: Some(state.into()),
            ..Default::default()
        }
    }

    #[test]
    fn aws_plan_owns_only_the_cluster_network() {
        let mut local = route("10.0.0.0/16", None, "active");
        local.gateway_id = Some("local".into());
        let table = RouteTable {
            id: "rtb-1".into(),
            routes: vec![
                local,
                route("0.0.0.0/0", None, "active"),
                route("192.168.7.0/24", Some("eni-other"), "active"), // another tool's
                route("10.244.1.0/24", Some("eni-1"), "active"),      // right
                route("10.244.2.0/24", Some("eni-old"), "active"),    // target changed
                route("10.244.3.0/24", Some("eni-3"), "blackhole"),   // target gone, lease kept
                route("10.244.9.0/24", Some("eni-9"), "blackhole"),   // departed
                route("10.244.8.0/24", Some("eni-8"), "active"),      // lease expired
            ],
            ..Default::default()
        };
        let desired: BTreeMap<IpNet, String> = [
            ("10.244.1.0/24", "eni-1"),
            ("10.244.2.0/24", "eni-2"),
            ("10.244.3.0/24", "eni-3"),
            ("10.244.4.0/24", "eni-4"),
        ]
        .iter()
        .map(|(d, e)| (d.parse().unwrap(), e.to_string()))
        .collect();
        let p = plan(&table, "10.244.0.0/16".parse().unwrap(), &desired);
        let n = |s: &str| -> IpNet { s.parse().unwrap() };
        assert_eq!(p.held, 8);
        assert_eq!(p.unchanged, 1);
        assert_eq!(
            p.replace,
            [
                (n("10.244.2.0/24"), "eni-2".into()),
                (n("10.244.3.0/24"), "eni-3".into())
            ]
        );
        assert_eq!(p.delete, [n("10.244.9.0/24"), n("10.244.8.0/24")]);
        assert_eq!(p.create, [(n("10.244.4.0/24"), "eni-4".into())]);
    }

    #[test]
    fn aws_plan_converged_writes_nothing() {
        let table = RouteTable {
            id: "rtb-1".into(),
            routes: vec![route("10.244.1.0/24", Some("eni-1"), "active")],
            ..Default::default()
        };
        let desired = [("10.244.1.0/24".parse().unwrap(), "eni-1".to_string())].into();
        assert!(plan(&table, "10.244.0.0/16".parse().unwrap(), &desired).is_empty());
    }
}
