//! The `aws-vpc` node backend through the C ABI (feature `aws`): routes
//! `PEER-SUBNET → PEER'S NETWORK INTERFACE` in VPC route tables
//! (`cnet_core::network::node::aws_vpc`). Credentials, region and
//! endpoint come from where AWS's own tools take them (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL_EC2`/`AWS_ENDPOINT_URL`, the shared credentials file,
//! the instance's role), never through the ABI, so no secret crosses it.
//! The calls speak HTTP to the EC2 API from the caller's own namespace.

use std::ffi::c_char;

use crate::boundary::*;
use crate::ipam::{cnet_leases, list_leases};
use crate::node::{cnet_peer_report, CNET_PEER_ROUTE_TABLE};
#[cfg(feature = "aws")]
use crate::out::boxed;
use crate::out::{castable, free_box};

/// The aws-vpc backend of one node. May be shared between threads.
#[derive(Debug)]
pub struct cnet_aws_vpc {
    #[cfg(feature = "aws")]
    routes: cnet_core::network::node::aws_vpc::AwsVpcRoutes,
}
castable!(box cnet_aws_vpc);

/// How the backend is set up. Strings are read during the call only;
/// NULL (or "") means the default.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_aws_vpc_config {
    /// The cluster (pod) network ("10.244.0.0/16"): the backend owns every
    /// route of the tables inside it, and no other. Required.
    pub cluster: *const c_char,
    /// Route tables to keep ("rtb-…"), `route_tables_len` of them; none:
    /// the table of the node's subnet, else the VPC's main table.
    pub route_tables: *const *const c_char,
    /// How many `route_tables`.
    pub route_tables_len: usize,
    /// Routes a table may hold, all of them counted (0: 500, AWS's
    /// default since 2025).
    pub route_quota: usize,
    /// This node's instance ("i-…"); NULL: the instance metadata service.
    pub instance_id: *const c_char,
    /// The EC2 endpoint URL; NULL: the environment, else the region's.
    pub endpoint: *const c_char,
    /// The region; NULL: `AWS_REGION`, else the metadata service.
    pub region: *const c_char,
    /// Leave the source/destination check of the node's interface as it
    /// is in `cnet_aws_vpc_prepare` (false: turn it off, which the VPC
    /// needs to deliver packets for pod addresses).
    pub keep_source_dest_check: bool,
}

/// What a reconcile wrote, summed over the tables.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct cnet_vpc_counts {
    /// Tables converged.
    pub tables: usize,
    /// Routes created, replaced (another target, or revived from
    /// blackhole), deleted (departed, expired, blackhole), already right.
    pub created: usize,
    /// See `created`.
    pub replaced: usize,
    /// See `created`.
    pub deleted: usize,
    /// See `created`.
    pub unchanged: usize,
    /// Leases that make no route (no "aws-eni" attribute, outside the
    /// cluster network).
    pub skipped: usize,
}

/// Open the backend of this node: its identity (instance, interface,
/// subnet) and its route tables. The EC2 API's refusals (an unknown
/// instance, `UnauthorizedOperation`, throttling past the retries) are
/// `CNET_CLOUD`, their message keeping AWS's error code; a bad
/// configuration is `CNET_INVALID_ARGUMENT`. A libcnet built without the
/// aws feature says it is not supported. Free `*out` with
/// `cnet_aws_vpc_free`.
#[no_mangle]
pub extern "C" fn cnet_aws_vpc_open(
    config: *const cnet_aws_vpc_config,
    out: *mut *mut cnet_aws_vpc,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let c = obj(config, "config")?;
        let cluster: cnet_core::IpNet =
            parse(cstr(c.cluster, "config.cluster")?, "config.cluster")?;
        let tables = slice(c.route_tables, c.route_tables_len, "config.route_tables")?
            .iter()
            .enumerate()
            .map(|(i, p)| cstr(*p, &format!("config.route_tables[{i}]")).map(str::to_string))
            .collect::<Res<Vec<String>>>()?;
        let instance = opt_nonempty(c.instance_id, "config.instance_id")?;
        let endpoint = opt_nonempty(c.endpoint, "config.endpoint")?;
        let region = opt_nonempty(c.region, "config.region")?;
        let out = out_ptr(out, "out")?;
        #[cfg(feature = "aws")]
        {
            use cnet_core::aws::{AwsConfig, Ec2, Imds};
            use cnet_core::network::node::aws_vpc::{AwsVpcConfig, AwsVpcRoutes, RouteTables};
            let ec2 = Ec2::new(&AwsConfig {
                endpoint: endpoint.map(str::to_string),
                region: region.map(str::to_string),
                ..Default::default()
            })?;
            let me = match instance {
                Some(id) => AwsVpcRoutes::identity_of_instance(&ec2, id)?,
                None => Imds::from_env(std::time::Duration::from_secs(2)).identity()?,
            };
            let mut cfg = AwsVpcConfig::new(cluster);
            if !tables.is_empty() {
                cfg.tables = RouteTables::Ids(tables);
            }
            if c.route_quota != 0 {
                cfg.route_quota = c.route_quota;
            }
            cfg.disable_source_dest_check = !c.keep_source_dest_check;
            let routes = AwsVpcRoutes::new(ec2, cfg, me)?;
            boxed(out, cnet_aws_vpc { routes });
            Ok(())
        }
        #[cfg(not(feature = "aws"))]
        {
            let _ = (cluster, tables, instance, endpoint, region, out);
            Err(unsupported())
        }
    })
}

#[cfg(not(feature = "aws"))]
fn unsupported() -> Fail {
    cnet_core::Error::Unsupported {
        context: "aws-vpc backend: this libcnet was built without the aws feature".into(),
        kernel: None,
    }
    .into()
}

/// Turn off the source/destination check of the node's interface (once:
/// nothing is written when it is off), unless the configuration keeps it.
#[no_mangle]
pub extern "C" fn cnet_aws_vpc_prepare(
    vpc: *const cnet_aws_vpc,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let _v = obj(vpc, "vpc")?;
        #[cfg(feature = "aws")]
        _v.routes.prepare()?;
        Ok(())
    })
}

/// Converge every table to one route per lease of `leases` (this node's
/// included; a lease publishes its interface with the attribute "aws-eni",
/// `cnet_node_attrs.aws_eni`), touching only routes inside the cluster
/// network. Nothing is written when converged. When a table would hold
/// more routes than the quota, none of the extra peers is programmed and
/// the call is `CNET_ROUTE_QUOTA`, its message saying how many routes the
/// table holds, the quota, and what to do. `*counts` (may be NULL) says
/// what was written.
#[no_mangle]
pub extern "C" fn cnet_aws_vpc_reconcile(
    vpc: *const cnet_aws_vpc,
    leases: *const cnet_leases,
    counts: *mut cnet_vpc_counts,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || run(vpc, leases, None, counts))
}

/// Cross-subnet with the route table (`CNET_BACKEND_ROUTE_TABLE_CROSS_SUBNET`):
/// like `cnet_aws_vpc_reconcile` with only the leases whose node `report`
/// (this node's own `cnet_node_reconcile_leases` with that backend) placed
/// beyond its segment (`CNET_PEER_ROUTE_TABLE`): peers on the segment get
/// direct kernel routes and use none of the table's quota.
#[no_mangle]
pub extern "C" fn cnet_aws_vpc_reconcile_beyond(
    vpc: *const cnet_aws_vpc,
    leases: *const cnet_leases,
    report: *const cnet_peer_report,
    counts: *mut cnet_vpc_counts,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let r = obj(report, "report")?;
        let outcomes = slice(r.outcomes, r.outcomes_len, "report.outcomes")?;
        let mut beyond = Vec::new();
        for (i, o) in outcomes.iter().enumerate() {
            if o.path == CNET_PEER_ROUTE_TABLE {
                beyond.push(cstr(o.name, &format!("report.outcomes[{i}].name"))?.to_string());
            }
        }
        run(vpc, leases, Some(beyond), counts)
    })
}

fn run(
    vpc: *const cnet_aws_vpc,
    leases: *const cnet_leases,
    only: Option<Vec<String>>,
    counts: *mut cnet_vpc_counts,
) -> Res {
    let _v = obj(vpc, "vpc")?;
    let mut all = list_leases(obj(leases, "leases")?)?;
    if let Some(names) = &only {
        all.retain(|l| names.contains(&l.node));
    }
    #[cfg(feature = "aws")]
    {
        let r = _v.routes.reconcile_leases(&all)?;
        set_if_asked(counts, || {
            let mut c = cnet_vpc_counts {
                tables: r.tables.len(),
                skipped: r.skipped.len(),
                ..Default::default()
            };
            for t in &r.tables {
                c.created += t.create.len();
                c.replaced += t.replace.len();
                c.deleted += t.delete.len();
                c.unchanged += t.unchanged;
            }
            c
        });
        Ok(())
    }
    #[cfg(not(feature = "aws"))]
    {
        let _ = (all, counts);
        Err(unsupported())
    }
}

/// Free the backend object (the routes stay). `cnet_aws_vpc_free(NULL)`
/// does nothing.
#[no_mangle]
pub extern "C" fn cnet_aws_vpc_free(vpc: *mut cnet_aws_vpc) {
    free_box(vpc)
}
