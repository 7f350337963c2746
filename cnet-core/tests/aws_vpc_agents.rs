//! Node agents (`examples/rust/node_agent.rs`) with `--backend aws-vpc`:
//! leases in a real etcd, routes in moto's VPC route table. etcd and moto
//! both run in a test namespace on the underlay (192.0.2.254), which the
//! agents reach from their host namespaces.
//!
//! ```text
//!   ul: br0 192.0.2.0/24 ── e0: etcd :2379, moto :PORT on 192.0.2.254
//!        │ p1 .11     │ p2 .12
//!        h1           h2          each: node-agent --backend aws-vpc
//! ```
//!
//! moto's limits (no blackhole, no quota, no throttling) are listed in
//! `aws_vpc.rs`; this test needs none of them.
#![cfg(all(feature = "etcd", feature = "aws"))]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::agents::{agent_binary, make_host, underlay_with_etcd, Agent};
use common::moto::{cluster_routes, Moto};

/// Wait (30 s at most) until moto's `table` holds exactly `want` cluster
/// routes (the agents converge on lease events, not at once).
fn wait_routes(moto: &Moto, table: &str, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(d, t)| (d.to_string(), t.to_string()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let have: Vec<(String, String)> = cluster_routes(moto, table).into_iter().collect();
        if have == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "table {table}: have {have:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn aws_vpc_node_agents_program_and_remove_routes() {
    if !common::privileged() {
        return;
    }
    let Some(bin) = agent_binary() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (ul_ns, etcd) = underlay_with_etcd("awag");
    let Some(moto) = Moto::start_in(Some(&etcd.ns.name), "192.0.2.254") else {
        return;
    };
    let v = moto.boto(
        "vpc = ec2.create_vpc(CidrBlock='10.0.0.0/16')['Vpc']['VpcId']\n\
         s = ec2.create_subnet(VpcId=vpc, CidrBlock='10.0.1.0/24', AvailabilityZone='us-east-1a')['Subnet']['SubnetId']\n\
         t = ec2.create_route_table(VpcId=vpc)['RouteTable']['RouteTableId']\n\
         ec2.associate_route_table(RouteTableId=t, SubnetId=s)\n\
         ii = ec2.run_instances(ImageId='ami-12c6146b', MinCount=2, MaxCount=2, SubnetId=s)['Instances']\n\
         print(json.dumps(dict(table=t, inst=[i['InstanceId'] for i in ii], enis=[i['NetworkInterfaces'][0]['NetworkInterfaceId'] for i in ii])))",
    );
    let table = v["table"].as_str().unwrap().to_string();
    let inst: Vec<&str> = v["inst"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    let enis: Vec<&str> = v["enis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();

    let ul = ul_ns.handle();
    let hosts: Vec<_> = (1..=2).map(|n| make_host(&ul, n, tmp.path())).collect();
    let mut agents: Vec<Agent> = hosts
        .iter()
        .zip(&inst)
        .map(|(h, i)| {
            let child = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", h.ns.name))
                .arg(&bin)
                .args([
                    "--etcd",
                    &etcd.url,
                    "--node",
                    &h.name,
                    "--underlay-dev",
                    "eth0",
                ])
                .args(["--backend", "aws-vpc", "--aws-endpoint", &moto.url()])
                .args(["--aws-instance-id", i, "--aws-route-table", &table])
                .args(["--ttl", "10", "--resync", "30"])
                .arg("--ipam-dir")
                .arg(&h.ipam)
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_REGION", "us-east-1")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start node-agent");
            Agent::adopt(child, &h.name)
        })
        .collect();
    let subnets: Vec<String> = agents
        .iter_mut()
        .map(|a| {
            let l = a.expect_line(": subnet ");
            l.split(": subnet ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    // Both leases in the table, each to its node's interface.
    let mut want = vec![
        (subnets[0].as_str(), enis[0]),
        (subnets[1].as_str(), enis[1]),
    ];
    want.sort();
    wait_routes(&moto, &table, &want);
    // The source/destination check is off on both interfaces.
    let checks = moto.boto(&format!(
        "print(json.dumps([n['SourceDestCheck'] for n in ec2.describe_network_interfaces(NetworkInterfaceIds={enis:?})['NetworkInterfaces']]))"
    ));
    assert_eq!(checks, serde_json::json!([false, false]));
    // No kernel route to the peer: the default route reaches it.
    for h in &hosts {
        assert!(common::agents::cnet_routes(&h.ns).is_empty(), "{}", h.name);
    }

    // h2 leaves (SIGTERM releases its lease): h1 removes its route.
    agents.pop().unwrap().stop();
    wait_routes(&moto, &table, &[(subnets[0].as_str(), enis[0])]);
}
