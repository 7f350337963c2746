//! `cnet_aws_vpc_*` against moto (the EC2 emulator of cnet-core's aws
//! tests, from `cnet_test_support::moto`): the backend opened from an
//! instance, the source/destination check turned off, a route per lease
//! (published with `cnet_node_attrs.aws_eni`) read back with boto3, the
//! quota refused as `CNET_ROUTE_QUOTA`, EC2's refusals as `CNET_CLOUD`
//! with AWS's code and no secret, the cross-subnet reconcile from a peer
//! report. One test: the credentials come from the environment, as AWS's
//! tools take them, and are set once before anything runs.
#![cfg(feature = "aws")]

mod common;

use std::ffi::CString;
use std::ptr::{null, null_mut};

use cnet::aws::*;
use cnet::boundary::*;
use cnet::ipam::*;
use cnet::node::*;
use cnet_test_support::moto::{cluster_routes, Moto};
use common::{fails, ok};

const SECRET: &str = "ffi-aws-secret-never-shown";

fn config(cluster: &CString, instance: &CString, endpoint: &CString) -> cnet_aws_vpc_config {
    cnet_aws_vpc_config {
        cluster: cluster.as_ptr(),
        route_tables: null(),
        route_tables_len: 0,
        route_quota: 0,
        instance_id: instance.as_ptr(),
        endpoint: endpoint.as_ptr(),
        region: c"us-east-1".as_ptr(),
        keep_source_dest_check: false,
    }
}

#[test]
fn aws_vpc_through_the_c_abi_against_moto() {
    let Some(moto) = Moto::start() else { return };
    // The only test of this binary: set before any other thread of it
    // reads the environment.
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "AKIDFFITEST"),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        // Never the real metadata service: nothing listens here.
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9"),
    ] {
        std::env::set_var(k, v);
    }
    let v = moto.boto(
        "vpc = ec2.create_vpc(CidrBlock='10.0.0.0/16')['Vpc']['VpcId']\n\
         s = ec2.create_subnet(VpcId=vpc, CidrBlock='10.0.1.0/24', AvailabilityZone='us-east-1a')['Subnet']['SubnetId']\n\
         t = ec2.create_route_table(VpcId=vpc)['RouteTable']['RouteTableId']\n\
         ec2.associate_route_table(RouteTableId=t, SubnetId=s)\n\
         ii = ec2.run_instances(ImageId='ami-12c6146b', MinCount=3, MaxCount=3, SubnetId=s)['Instances']\n\
         print(json.dumps(dict(table=t, inst=[i['InstanceId'] for i in ii], enis=[i['NetworkInterfaces'][0]['NetworkInterfaceId'] for i in ii])))",
    );
    let table = v["table"].as_str().unwrap().to_string();
    let s = |k: &str, i: usize| v[k][i].as_str().unwrap().to_string();
    let (cluster, endpoint) = (
        CString::new("10.244.0.0/16").unwrap(),
        CString::new(moto.url()).unwrap(),
    );
    let inst0 = CString::new(s("inst", 0)).unwrap();

    // Refusals: a bad cluster, an unknown instance (AWS's code, no secret).
    let bad = CString::new("not-a-cidr").unwrap();
    let (rc, m) =
        fails(|e| cnet_aws_vpc_open(&config(&bad, &inst0, &endpoint), &mut null_mut(), e));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{m}");
    let nope = CString::new("i-0123456789abcdef0").unwrap();
    let (rc, m) =
        fails(|e| cnet_aws_vpc_open(&config(&cluster, &nope, &endpoint), &mut null_mut(), e));
    assert_eq!(rc, CNET_CLOUD, "{m}");
    assert!(m.contains("InvalidInstanceID"), "{m}");
    assert!(!m.contains(SECRET), "{m}");

    let mut vpc = null_mut();
    ok(|e| cnet_aws_vpc_open(&config(&cluster, &inst0, &endpoint), &mut vpc, e));
    ok(|e| cnet_aws_vpc_prepare(vpc, e));
    let check = moto.boto(&format!(
        "print(json.dumps(ec2.describe_network_interfaces(NetworkInterfaceIds=['{}'])['NetworkInterfaces'][0]['SourceDestCheck']))",
        s("enis", 0)
    ));
    assert_eq!(check, serde_json::json!(false));

    // Leases with their interfaces, in a file store.
    let dir = tempfile::tempdir().unwrap();
    let d = CString::new(dir.path().to_str().unwrap()).unwrap();
    let mut store = null_mut();
    ok(|e| cnet_ipam_store_open_file(d.as_ptr(), &mut store, e));
    let sc = cnet_subnet_config {
        network: cluster.as_ptr(),
        subnet_len: 24,
    };
    let mut leases = null_mut();
    ok(|e| cnet_ipam_store_leases(store, &sc, &mut leases, e));
    let acquire = |node: &str, eni: &str| {
        let (n, eni) = (CString::new(node).unwrap(), CString::new(eni).unwrap());
        // SAFETY: all-zero is a valid cnet_node_attrs (every field NULL).
        let mut at: cnet_node_attrs = unsafe { std::mem::zeroed() };
        at.aws_eni = eni.as_ptr();
        let mut l = null_mut();
        ok(|e| cnet_leases_acquire(leases, n.as_ptr(), &at, 3600, &mut l, e));
        cnet_lease_free(l);
    };
    acquire("n1", &s("enis", 0));
    acquire("n2", &s("enis", 1));
    let mut c = cnet_vpc_counts::default();
    ok(|e| cnet_aws_vpc_reconcile(vpc, leases, &mut c, e));
    assert_eq!((c.tables, c.created, c.unchanged), (1, 2, 0), "{c:?}");
    assert_eq!(cluster_routes(&moto, &table).len(), 2);
    ok(|e| cnet_aws_vpc_reconcile(vpc, leases, &mut c, e));
    assert_eq!((c.created, c.unchanged), (0, 2), "converged: {c:?}");

    // The quota: the table holds local + 2; a quota of 3 refuses a third.
    let mut cfg = config(&cluster, &inst0, &endpoint);
    cfg.route_quota = 3;
    let mut tight = null_mut();
    ok(|e| cnet_aws_vpc_open(&cfg, &mut tight, e));
    acquire("n3", &s("enis", 2));
    let (rc, m) = fails(|e| cnet_aws_vpc_reconcile(tight, leases, null_mut(), e));
    assert_eq!(rc, CNET_ROUTE_QUOTA, "{m}");
    assert!(m.contains("quota"), "{m}");
    assert_eq!(cluster_routes(&moto, &table).len(), 2, "nothing created");

    // Cross-subnet: only what a node's report placed beyond its segment.
    let names = [c"n1", c"n2", c"n3"];
    let paths = [CNET_PEER_DIRECT, CNET_PEER_ROUTE_TABLE, CNET_PEER_DIRECT];
    let outcomes: Vec<cnet_peer_outcome> = names
        .iter()
        .zip(paths)
        .map(|(n, p)| cnet_peer_outcome {
            name: n.as_ptr(),
            path: p,
            code: CNET_OK,
            message: null(),
        })
        .collect();
    // SAFETY: all-zero is a valid cnet_peer_report (counts, NULL outcomes).
    let mut report: cnet_peer_report = unsafe { std::mem::zeroed() };
    report.outcomes = outcomes.as_ptr();
    report.outcomes_len = outcomes.len();
    ok(|e| cnet_aws_vpc_reconcile_beyond(tight, leases, &report, &mut c, e));
    assert_eq!((c.deleted, c.unchanged), (1, 1), "{c:?}");
    let routes = cluster_routes(&moto, &table);
    assert_eq!(
        routes.values().collect::<Vec<_>>(),
        [&s("enis", 1)],
        "{routes:?}"
    );

    let (rc, _) = fails(|e| cnet_aws_vpc_reconcile(null(), leases, null_mut(), e));
    assert_eq!(rc, CNET_NULL_ARGUMENT);
    cnet_aws_vpc_free(tight);
    cnet_aws_vpc_free(vpc);
    cnet_aws_vpc_free(null_mut());
    cnet_leases_free(leases);
    cnet_ipam_store_free(store);
}
