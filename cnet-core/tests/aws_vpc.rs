//! The `aws-vpc` backend against moto, an EC2 emulator (PyPI
//! `moto[server]`, installed by `scripts/deps --all` into its own virtual
//! environment, `/opt/cnet/moto`; `CNET_MOTO_VENV` names another). Each test
//! starts its own `moto_server` on 127.0.0.1 on a free port (a clean state,
//! so no `/moto-api/reset` is needed between tests), and a guard kills it,
//! also on panic.
//!
//! The set-up and every check go through moto's own client (boto3 in the
//! same virtual environment), not through the client under test: a VPC,
//! two subnets in two availability zones, one route table per zone, three
//! instances standing for three nodes.
//!
//! What moto does not imitate, and these tests therefore cannot reach (none
//! of them depends on it):
//! - routes never turn `blackhole` when their target goes: a terminated
//!   instance's route stays `active`. The stale-route test removes such a
//!   route because no lease names it, which also covers a real blackhole
//!   (the backend's unit tests, `aws_plan_*`, cover the `blackhole` state);
//! - no `route.state` filter (the backend does not filter on it);
//! - an instance's source/destination check is not tied to its primary
//!   interface's (the test reads the interface's);
//! - `CreateRoute` to a network interface silently overwrites an existing
//!   route, where AWS answers `RouteAlreadyExists` (the backend replaces
//!   existing routes with `ReplaceRoute` and handles `RouteAlreadyExists`
//!   anyway);
//! - no route quota (`RouteLimitExceeded`): the quota is the backend's own
//!   configuration, checked before any create;
//! - no throttling: a fault-injecting proxy on 127.0.0.1 answers
//!   `RequestLimitExceeded` before passing requests on;
//! - no signature check, no IAM (`UnauthorizedOperation`), no real
//!   forwarding of packets by the VPC router.
//!
//! The last test, `aws_vpc_fabric_*`, adds that forwarding: host namespaces
//! on two segments ("subnets") behind a router namespace standing for the
//! VPC router. The harness (not the library) copies moto's route tables
//! into the router's kernel tables, one per zone, chosen by the interface
//! a packet came in on, as the VPC applies a subnet's table to what leaves
//! that subnet: `DEST via UNDERLAY-OF-ENI`. The hosts themselves have only
//! their default route via the router: no tunnel, no per-peer route.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cnet_core::aws::{AwsConfig, Credentials, Ec2, RetryPolicy};
use cnet_core::ipam::{NodeAttrs, NodeLease};
use cnet_core::network::node::aws_vpc::{AwsVpcConfig, AwsVpcRoutes, AWS_ENI_ATTR};
use cnet_core::Error;
use cnet_test_support::cluster::{Cluster, Spec};
use cnet_test_support::privileged;
use common::moto::{cluster_routes, free_port, Moto};
use serde_json::Value;

const SECRET: &str = "moto-secret-never-printed";

/// The VPC of every test: two subnets in two zones, one table each,
/// instances a and b in zone a, c in zone b, and another tool's route.
#[derive(Debug)]
struct Vpc {
    vpc: String,
    subnets: [String; 2],
    tables: [String; 2],
    instances: [String; 3],
    enis: [String; 3],
}

const SETUP: &str = r#"
vpc = ec2.create_vpc(CidrBlock='10.0.0.0/16')['Vpc']['VpcId']
subnets, tables, inst, enis = [], [], [], []
for cidr, az in (('10.0.1.0/24', 'us-east-1a'), ('10.0.2.0/24', 'us-east-1b')):
    s = ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=az)['Subnet']['SubnetId']
    t = ec2.create_route_table(VpcId=vpc)['RouteTable']['RouteTableId']
    ec2.associate_route_table(RouteTableId=t, SubnetId=s)
    subnets.append(s); tables.append(t)
for s in (subnets[0], subnets[0], subnets[1]):
    i = ec2.run_instances(ImageId='ami-12c6146b', MinCount=1, MaxCount=1, SubnetId=s)['Instances'][0]
    inst.append(i['InstanceId']); enis.append(i['NetworkInterfaces'][0]['NetworkInterfaceId'])
# Another tool's route in zone a's table, outside the cluster network.
ec2.create_route(RouteTableId=tables[0], DestinationCidrBlock='192.168.50.0/24', NetworkInterfaceId=enis[2])
print(json.dumps(dict(vpc=vpc, subnets=subnets, tables=tables, instances=inst, enis=enis)))
"#;

impl Vpc {
    fn make(moto: &Moto) -> Vpc {
        let v = moto.boto(SETUP);
        let list = |k: &str| -> Vec<String> {
            v[k].as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        Vpc {
            vpc: v["vpc"].as_str().unwrap().to_string(),
            subnets: list("subnets").try_into().unwrap(),
            tables: list("tables").try_into().unwrap(),
            instances: list("instances").try_into().unwrap(),
            enis: list("enis").try_into().unwrap(),
        }
    }
}

fn config(endpoint: &str, retry: RetryPolicy) -> AwsConfig {
    AwsConfig {
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.into()),
        credentials: Some(Credentials::new(
            "AKIDTESTING",
            SECRET,
            Some("token-never-printed"),
        )),
        imds_endpoint: Some("http://127.0.0.1:9".into()),
        timeout: Some(Duration::from_secs(10)),
        retry,
    }
}

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        base: Duration::from_millis(1),
        max: Duration::from_millis(10),
    }
}

fn lease(node: &str, subnet: &str, eni: &str) -> NodeLease {
    let mut attrs = NodeAttrs::default();
    attrs.extra.insert(AWS_ENI_ATTR.into(), eni.into());
    NodeLease {
        node: node.into(),
        subnet: subnet.parse().unwrap(),
        attrs,
        expires: None,
    }
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(d, t)| (d.to_string(), t.to_string()))
        .collect()
}

#[test]
fn aws_vpc_join_leave_target_change_stale_on_moto() {
    let Some(moto) = Moto::start() else { return };
    let vpc = Vpc::make(&moto);
    let ec2 = Ec2::new(&config(&moto.url(), fast_retry(3))).unwrap();
    let me = AwsVpcRoutes::identity_of_instance(&ec2, &vpc.instances[0]).unwrap();
    assert_eq!(
        (me.eni_id.as_str(), me.subnet_id.as_str()),
        (vpc.enis[0].as_str(), vpc.subnets[0].as_str())
    );
    let cfg = AwsVpcConfig::new("10.244.0.0/16".parse().unwrap())
        .tables(&[&vpc.tables[0], &vpc.tables[1]]);
    let node = AwsVpcRoutes::new(ec2.clone(), cfg, me).unwrap();
    let [a, b, c] = &vpc.enis;

    // The node's own interface forwards pod traffic.
    node.prepare().unwrap();
    let check = moto.boto(&format!(
        "print(json.dumps(ec2.describe_network_interfaces(NetworkInterfaceIds=['{a}'])['NetworkInterfaces'][0]['SourceDestCheck']))"
    ));
    assert_eq!(check, Value::Bool(false));

    // Join: a and b, then c.
    let two = [
        lease("a", "10.244.1.0/24", a),
        lease("b", "10.244.2.0/24", b),
    ];
    let r = node.reconcile_leases(&two).unwrap();
    assert_eq!(r.writes(), 4);
    for t in &vpc.tables {
        assert_eq!(
            cluster_routes(&moto, t),
            expect(&[("10.244.1.0/24", a), ("10.244.2.0/24", b)])
        );
    }
    assert_eq!(
        node.reconcile_leases(&two).unwrap().writes(),
        0,
        "converged: nothing written"
    );
    let mut three = two.to_vec();
    three.push(lease("c", "10.244.3.0/24", c));
    assert_eq!(node.reconcile_leases(&three).unwrap().writes(), 2);
    for t in &vpc.tables {
        assert_eq!(
            cluster_routes(&moto, t),
            expect(&[
                ("10.244.1.0/24", a),
                ("10.244.2.0/24", b),
                ("10.244.3.0/24", c)
            ])
        );
    }

    // Target change: b's subnet moves to c's interface (a node replaced).
    three[1] = lease("b", "10.244.2.0/24", c);
    let r = node.reconcile_leases(&three).unwrap();
    assert_eq!(r.tables[0].replace.len(), 1);
    assert_eq!(cluster_routes(&moto, &vpc.tables[1])["10.244.2.0/24"], *c);

    // Leave: b's lease is gone.
    three.remove(1);
    node.reconcile_leases(&three).unwrap();
    for t in &vpc.tables {
        assert_eq!(
            cluster_routes(&moto, t),
            expect(&[("10.244.1.0/24", a), ("10.244.3.0/24", c)])
        );
    }

    // A stale route: a terminated instance's, with no lease (AWS would call
    // it blackhole; moto keeps it active).
    let ghost = moto.boto(&format!(
        "i = ec2.run_instances(ImageId='ami-12c6146b', MinCount=1, MaxCount=1, SubnetId='{}')['Instances'][0]\n\
         eni = i['NetworkInterfaces'][0]['NetworkInterfaceId']\n\
         ec2.create_route(RouteTableId='{}', DestinationCidrBlock='10.244.9.0/24', NetworkInterfaceId=eni)\n\
         ec2.terminate_instances(InstanceIds=[i['InstanceId']])\n\
         print(json.dumps(eni))",
        vpc.subnets[0], vpc.tables[0]
    ));
    assert_eq!(
        cluster_routes(&moto, &vpc.tables[0])["10.244.9.0/24"],
        ghost.as_str().unwrap()
    );
    let r = node.reconcile_leases(&three).unwrap();
    assert_eq!(r.tables[0].delete, ["10.244.9.0/24".parse().unwrap()]);
    assert_eq!(
        cluster_routes(&moto, &vpc.tables[0]),
        expect(&[("10.244.1.0/24", a), ("10.244.3.0/24", c)])
    );

    // Another tool's route and the local route were left alone throughout.
    let all = moto.routes(&vpc.tables[0]);
    assert_eq!(all["192.168.50.0/24"], *c);
    assert_eq!(all["10.0.0.0/16"], "local");
}

#[test]
fn aws_vpc_tables_found_from_subnet_then_main() {
    let Some(moto) = Moto::start() else { return };
    let vpc = Vpc::make(&moto);
    let ec2 = Ec2::new(&config(&moto.url(), fast_retry(3))).unwrap();
    let cluster = "10.244.0.0/16".parse().unwrap();
    let me = AwsVpcRoutes::identity_of_instance(&ec2, &vpc.instances[2]).unwrap();
    let node = AwsVpcRoutes::new(ec2.clone(), AwsVpcConfig::new(cluster), me).unwrap();
    assert_eq!(node.tables(), [vpc.tables[1].clone()]);

    // A subnet without a table of its own: the VPC's main table.
    let v = moto.boto(&format!(
        "s = ec2.create_subnet(VpcId='{0}', CidrBlock='10.0.3.0/24', AvailabilityZone='us-east-1a')['Subnet']['SubnetId']\n\
         i = ec2.run_instances(ImageId='ami-12c6146b', MinCount=1, MaxCount=1, SubnetId=s)['Instances'][0]['InstanceId']\n\
         main = ec2.describe_route_tables(Filters=[{{'Name': 'vpc-id', 'Values': ['{0}']}}, {{'Name': 'association.main', 'Values': ['true']}}])['RouteTables'][0]['RouteTableId']\n\
         print(json.dumps([i, main]))",
        vpc.vpc
    ));
    let me = AwsVpcRoutes::identity_of_instance(&ec2, v[0].as_str().unwrap()).unwrap();
    let node = AwsVpcRoutes::new(ec2, AwsVpcConfig::new(cluster), me).unwrap();
    assert_eq!(node.tables(), [v[1].as_str().unwrap().to_string()]);
}

#[test]
fn aws_vpc_quota_refused_with_typed_error() {
    let Some(moto) = Moto::start() else { return };
    let vpc = Vpc::make(&moto);
    let ec2 = Ec2::new(&config(&moto.url(), fast_retry(3))).unwrap();
    let me = AwsVpcRoutes::identity_of_instance(&ec2, &vpc.instances[0]).unwrap();
    // Zone a's table holds 2 routes (local, another tool's); quota 4.
    let cfg = AwsVpcConfig::new("10.244.0.0/16".parse().unwrap())
        .tables(&[&vpc.tables[0]])
        .route_quota(4);
    let node = AwsVpcRoutes::new(ec2, cfg, me).unwrap();
    let [a, b, c] = &vpc.enis;
    let leases = [
        lease("a", "10.244.1.0/24", a),
        lease("b", "10.244.2.0/24", b),
        lease("c", "10.244.3.0/24", c),
    ];
    let e = node.reconcile_leases(&leases).unwrap_err();
    match &e {
        Error::RouteQuota {
            table,
            held,
            wanted,
            quota,
            ..
        } => {
            assert_eq!(
                (table.as_str(), *held, *wanted, *quota),
                (vpc.tables[0].as_str(), 2, 3, 4)
            )
        }
        other => panic!("want RouteQuota, got {other}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("holds 2 routes") && text.contains("quota 4"),
        "{text}"
    );
    assert!(text.contains("raise") && text.contains("vxlan"), "{text}");
    // None of the extra peers was programmed.
    assert!(cluster_routes(&moto, &vpc.tables[0]).is_empty());
    // Two fit.
    node.reconcile_leases(&leases[..2]).unwrap();
    assert_eq!(cluster_routes(&moto, &vpc.tables[0]).len(), 2);
}

/// A proxy on 127.0.0.1 in front of moto: the first `throttle` requests
/// are answered `RequestLimitExceeded` (HTTP 503), the others passed on.
struct Throttler {
    url: String,
    throttled: Arc<AtomicUsize>,
}

fn throttler(upstream: String, throttle: usize) -> Throttler {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let throttled = Arc::new(AtomicUsize::new(0));
    let count = throttled.clone();
    // The thread ends with the test process; it holds no namespace or device.
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut len = 0;
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                let h = h.trim_end().to_string();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(": ") {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.parse().unwrap();
                    }
                    headers.push((k.to_string(), v.to_string()));
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let (status, answer) = if count.load(Ordering::SeqCst) < throttle {
                count.fetch_add(1, Ordering::SeqCst);
                (
                    503,
                    "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>x</RequestID></Response>".to_string(),
                )
            } else {
                let mut req = ureq::post(&format!("{upstream}/"));
                for (k, v) in &headers {
                    if ["authorization", "x-amz-date", "content-type"]
                        .contains(&k.to_ascii_lowercase().as_str())
                    {
                        req = req.set(k, v);
                    }
                }
                match req.send_bytes(&body) {
                    Ok(resp) => (200, resp.into_string().unwrap()),
                    Err(ureq::Error::Status(st, resp)) => (st, resp.into_string().unwrap()),
                    Err(e) => (502, e.to_string()),
                }
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    Throttler { url, throttled }
}

#[test]
fn aws_vpc_throttling_retried_with_backoff() {
    let Some(moto) = Moto::start() else { return };
    let vpc = Vpc::make(&moto);
    let [a, b, _] = &vpc.enis;
    let leases = [
        lease("a", "10.244.1.0/24", a),
        lease("b", "10.244.2.0/24", b),
    ];
    let cfg = AwsVpcConfig::new("10.244.0.0/16".parse().unwrap()).tables(&[&vpc.tables[0]]);
    let me = cnet_core::aws::Identity {
        instance_id: vpc.instances[0].clone(),
        eni_id: a.clone(),
        subnet_id: vpc.subnets[0].clone(),
        vpc_id: vpc.vpc.clone(),
    };

    // Throttled three times, five tries allowed: it gets through.
    let proxy = throttler(moto.url(), 3);
    let node = AwsVpcRoutes::new(
        Ec2::new(&config(&proxy.url, fast_retry(5))).unwrap(),
        cfg.clone(),
        me.clone(),
    )
    .unwrap();
    node.reconcile_leases(&leases).unwrap();
    assert_eq!(proxy.throttled.load(Ordering::SeqCst), 3);
    assert_eq!(cluster_routes(&moto, &vpc.tables[0]).len(), 2);

    // Throttled more often than it may try: AWS's code comes back.
    let proxy = throttler(moto.url(), 100);
    let node = AwsVpcRoutes::new(
        Ec2::new(&config(&proxy.url, fast_retry(2))).unwrap(),
        cfg,
        me,
    )
    .unwrap();
    let e = node.reconcile_leases(&leases).unwrap_err();
    assert_eq!(e.cloud_code(), Some("RequestLimitExceeded"), "{e}");
    assert_eq!(proxy.throttled.load(Ordering::SeqCst), 2);
}

#[test]
fn aws_ec2_errors_keep_code_and_hide_secrets() {
    let Some(moto) = Moto::start() else { return };
    let vpc = Vpc::make(&moto);
    let ec2 = Ec2::new(&config(&moto.url(), fast_retry(3))).unwrap();
    let dest = "10.244.7.0/24".parse().unwrap();
    // Deleting what is gone succeeds.
    ec2.delete_route(&vpc.tables[0], dest).unwrap();
    // A missing table: the service's own code and words.
    let e = ec2
        .create_route("rtb-0000000000000dead", dest, &vpc.enis[0])
        .unwrap_err();
    let code = e.cloud_code().expect("a Cloud error").to_string();
    assert!(code.starts_with("InvalidRouteTableID"), "{e}");
    // An unreachable endpoint: typed, no secret.
    let down = Ec2::new(&config(
        &format!("http://127.0.0.1:{}", free_port()),
        fast_retry(1),
    ))
    .unwrap();
    let e2 = down.describe_route_tables(&[], &[]).unwrap_err();
    for shown in [
        e.to_string(),
        format!("{e:?}"),
        e2.to_string(),
        format!("{e2:?} {ec2:?}"),
    ] {
        assert!(
            !shown.contains(SECRET) && !shown.contains("token-never-printed"),
            "{shown}"
        );
    }
}

/// A process killed (and reaped) when dropped, also on panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The harness's VPC router: each zone's table (moto's) into the router
/// namespace's kernel table 100 + zone, `DEST via` the underlay address
/// of the host that owns the target interface. Returns what it installed.
fn sync_fabric(c: &Cluster, moto: &Moto, vpc: &Vpc) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (zone, table) in vpc.tables.iter().enumerate() {
        let kt = (100 + zone).to_string();
        // A table not made yet has nothing to flush ("FIB table does not exist").
        let _ = Command::new("ip")
            .args(["-n", &c.ns("rt"), "route", "flush", "table", &kt])
            .output();
        let mut installed = Vec::new();
        for (dest, target) in cluster_routes(moto, table) {
            let Some(h) = vpc.enis.iter().position(|e| *e == target) else {
                continue;
            };
            let via = c.hosts[h].underlay.to_string();
            c.ip(
                "rt",
                &["route", "replace", &dest, "via", &via, "table", &kt],
            );
            installed.push(format!("{dest} via {via}"));
        }
        out.push(installed);
    }
    out
}

/// h1, h2 on segment A (zone a), h3 on segment B (zone b) behind `rt`,
/// one container each; the router, standing for the VPC router, routes a
/// packet by the table of the zone it came from (100 + zone).
fn fabric(tag: &str) -> Cluster {
    let c = Cluster::build(
        tag,
        Spec {
            near: 2,
            far: 1,
            containers: 1,
        },
    );
    for (dev, table) in [("eth0", "100"), ("eth1", "101")] {
        c.ip(
            "rt",
            &["rule", "add", "iif", dev, "table", table, "pref", table],
        );
    }
    c
}

/// One lease per host of the fabric, its subnet through its instance's
/// interface.
fn fabric_leases(c: &Cluster, vpc: &Vpc) -> Vec<NodeLease> {
    (0..3)
        .map(|h| {
            lease(
                &c.hosts[h].role,
                &c.hosts[h].subnet.to_string(),
                &vpc.enis[h],
            )
        })
        .collect()
}

/// The routes of the router's table `kt`, read back with `ip -j`.
fn fabric_routes(c: &Cluster, kt: &str) -> Vec<String> {
    let v = c.ip_json(&c.ns("rt"), &["route", "show", "table", kt]);
    let mut r: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} via {}",
                r["dst"].as_str().unwrap(),
                r["gateway"].as_str().unwrap()
            )
        })
        .collect();
    r.sort();
    r
}

#[test]
fn aws_vpc_fabric_all_pairs_ping_unencapsulated_then_leave() {
    if !privileged() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let vpc = Vpc::make(&moto);
    // h1, h2 on segment A (zone a), h3 on segment B (zone b) behind `rt`;
    // one container each.
    let c = fabric("aws");
    let rt = c.ns("rt");

    let ec2 = Ec2::new(&config(&moto.url(), fast_retry(3))).unwrap();
    let mut leases = fabric_leases(&c, &vpc);
    // Each node keeps the table of its own subnet (found from it).
    let nodes: Vec<AwsVpcRoutes> = (0..3)
        .map(|h| {
            let me = AwsVpcRoutes::identity_of_instance(&ec2, &vpc.instances[h]).unwrap();
            let node = AwsVpcRoutes::new(
                ec2.clone(),
                AwsVpcConfig::new("10.244.0.0/16".parse().unwrap()),
                me,
            )
            .unwrap();
            node.prepare().unwrap();
            node
        })
        .collect();
    for n in &nodes {
        n.reconcile_leases(&leases).unwrap();
    }
    let installed = sync_fabric(&c, &moto, &vpc);
    for (zone, want) in installed.iter().enumerate() {
        assert_eq!(want.len(), 3, "zone {zone}: {want:?}");
        assert_eq!(fabric_routes(&c, &(100 + zone).to_string()), *want);
    }
    // The hosts have no route to a peer subnet of their own (no tunnel,
    // no per-peer route): only the default route, the underlay and cni0.
    for h in &c.hosts {
        let v = c.ip_json(&h.ns, &["route", "show"]);
        let peers: Vec<&Value> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["dst"].as_str().is_some_and(|d| {
                    d.starts_with("10.244.") && !d.starts_with(&h.subnet.to_string())
                })
            })
            .collect();
        assert!(peers.is_empty(), "{}: {peers:?}", h.role);
    }

    // All pairs ping, and the underlay carries the container addresses in
    // clear (no encapsulation): a capture on the router's legs.
    let c1 = c.containers.iter().find(|x| x.host == 0).unwrap();
    let c3 = c.containers.iter().find(|x| x.host == 2).unwrap();
    // nsenter execs tcpdump itself (no child left behind when it is
    // killed); the guard kills it also on panic.
    let mut dump = KillOnDrop(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{rt}"))
            .args(["tcpdump", "-nn", "-l", "-i", "any", "-c", "2"])
            .arg(format!(
                "icmp and src host {} and dst host {}",
                c1.ip, c3.ip
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let dump = &mut dump.0;
    // Wait until tcpdump listens (it says so on stderr).
    let mut err = BufReader::new(dump.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("listening") {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "tcpdump ended: {said}"
        );
        said.push_str(&line);
    }
    let failed = c.all_pairs_ping();
    assert!(failed.is_empty(), "failed: {failed:?}");
    assert!(Cluster::ping(&c1.ns, c3.ip));
    // tcpdump ends after its two packets (in on eth0, out on eth1); a
    // bounded wait, then it is stopped whatever it saw.
    for _ in 0..100 {
        if dump.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = dump.kill();
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    let mut seen = String::new();
    dump.stdout
        .take()
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    let _ = dump.wait();
    assert!(
        seen.contains(&format!("{} > {}: ICMP echo", c1.ip, c3.ip)),
        "capture on the router: {seen} (tcpdump said: {said}{rest})"
    );

    // h3 leaves: its lease is gone; the nodes converge, its route goes from
    // both tables and, through the harness, from the fabric.
    leases.pop();
    for n in &nodes[..2] {
        n.reconcile_leases(&leases).unwrap();
    }
    for t in &vpc.tables[..1] {
        assert!(!cluster_routes(&moto, t).contains_key("10.244.3.0/24"));
    }
    // Zone b's table was kept by h3 only: the remaining nodes of zone a do
    // not keep it, so it still holds the route until a node of zone b (or
    // one configured with both tables) converges it.
    let both = AwsVpcRoutes::new(
        ec2.clone(),
        AwsVpcConfig::new("10.244.0.0/16".parse().unwrap())
            .tables(&[&vpc.tables[0], &vpc.tables[1]]),
        nodes[0].identity().clone(),
    )
    .unwrap();
    both.reconcile_leases(&leases).unwrap();
    for t in &vpc.tables {
        assert!(
            !cluster_routes(&moto, t).contains_key("10.244.3.0/24"),
            "{t}"
        );
    }
    sync_fabric(&c, &moto, &vpc);
    for kt in ["100", "101"] {
        let r = fabric_routes(&c, kt);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(!r.iter().any(|x| x.starts_with("10.244.3.0/24")), "{r:?}");
    }
    assert!(
        !Cluster::ping(&c1.ns, c3.ip),
        "h3's container still reachable"
    );
    let c2 = c.containers.iter().find(|x| x.host == 1).unwrap();
    assert!(Cluster::ping(&c1.ns, c2.ip));
}

#[test]
fn aws_vpc_missing_table_does_not_stop_the_others() {
    let Some(moto) = Moto::start() else { return };
    let vpc = Vpc::make(&moto);
    let ec2 = Ec2::new(&config(&moto.url(), fast_retry(3))).unwrap();
    let me = AwsVpcRoutes::identity_of_instance(&ec2, &vpc.instances[0]).unwrap();
    let cfg = AwsVpcConfig::new("10.244.0.0/16".parse().unwrap())
        .tables(&["rtb-0000000000000dead", &vpc.tables[1]]);
    let node = AwsVpcRoutes::new(ec2, cfg, me).unwrap();
    let a = &vpc.enis[0];
    let e = node
        .reconcile_leases(&[lease("a", "10.244.1.0/24", a)])
        .unwrap_err();
    assert!(
        e.cloud_code()
            .is_some_and(|c| c.starts_with("InvalidRouteTableID")),
        "{e}"
    );
    assert_eq!(
        cluster_routes(&moto, &vpc.tables[1]),
        expect(&[("10.244.1.0/24", a)])
    );
}

/// Cross-subnet with the route table (`Encap::RouteTable`): each node
/// routes the peers on its own segment directly (kernel routes, as
/// host-gw) and nothing else in the kernel; the VPC's table of its subnet
/// holds only the peers beyond it (`reconcile_beyond`, from the kernel
/// reconcile's own placement), so a quota that a plain aws-vpc cluster
/// overflows is enough. All pairs ping through the simulated fabric, the
/// same-segment pair without the router's table.
#[test]
fn aws_vpc_cross_subnet_direct_on_the_segment_route_table_beyond() {
    use cnet_core::network::node::{Backend, Encap, PeerPath};
    if !privileged() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let vpc = Vpc::make(&moto);
    let c = fabric("awx");
    let ec2 = Ec2::new(&config(&moto.url(), fast_retry(3))).unwrap();
    let leases = fabric_leases(&c, &vpc);
    // Zone a's table holds `local` and another tool's route: a quota of 3
    // leaves room for one cluster route.
    let cluster: cnet_core::IpNet = "10.244.0.0/16".parse().unwrap();
    let vpcs: Vec<AwsVpcRoutes> = (0..3)
        .map(|h| {
            let me = AwsVpcRoutes::identity_of_instance(&ec2, &vpc.instances[h]).unwrap();
            AwsVpcRoutes::new(ec2.clone(), AwsVpcConfig::new(cluster).route_quota(3), me).unwrap()
        })
        .collect();
    // Plain aws-vpc would need all three subnets in zone a's table: refused.
    let e = vpcs[0].reconcile_leases(&leases).unwrap_err();
    assert!(matches!(e, Error::RouteQuota { .. }), "{e}");
    assert!(cluster_routes(&moto, &vpc.tables[0]).is_empty());

    let backend = Backend::CrossSubnet {
        encap: Encap::RouteTable,
    };
    assert_eq!(backend.name(), "route-table-cross-subnet");
    assert_eq!(backend.name().parse::<Backend>().unwrap(), backend);
    for (h, aws) in vpcs.iter().enumerate() {
        let node = c.node(h);
        let r = node.reconcile_peers(&backend, &c.peers_of(h)).unwrap();
        assert!(r.is_ok(), "{r:?}");
        let (direct, beyond) = if h < 2 { (1, 1) } else { (0, 2) };
        assert_eq!(
            (r.count(PeerPath::Direct), r.count(PeerPath::RouteTable)),
            (direct, beyond),
            "{}: {r:?}",
            c.hosts[h].role
        );
        assert!(r.devices.is_empty(), "no tunnel device: {r:?}");
        let v = aws.reconcile_beyond(&leases, &r).unwrap();
        assert!(v.skipped.is_empty(), "{:?}", v.skipped);
        // Converged: a second kernel reconcile and VPC pass write nothing.
        let again = node.reconcile_peers(&backend, &c.peers_of(h)).unwrap();
        assert!(again.is_noop(), "{again:?}");
        assert_eq!(
            vpcs[h].reconcile_beyond(&leases, &again).unwrap().writes(),
            0
        );
    }
    // The tables (moto's API): zone a holds h3's subnet only, zone b h1's
    // and h2's; the kernels (ip -j): h1 and h2 a direct route to each
    // other, none to h3 (and h3 none at all).
    let sub = |h: usize| c.hosts[h].subnet.to_string();
    assert_eq!(
        cluster_routes(&moto, &vpc.tables[0]),
        expect(&[(&sub(2), &vpc.enis[2])])
    );
    assert_eq!(
        cluster_routes(&moto, &vpc.tables[1]),
        expect(&[(&sub(0), &vpc.enis[0]), (&sub(1), &vpc.enis[1])])
    );
    assert_eq!(
        c.cnet_routes(0),
        [format!("{} via {} dev eth0", sub(1), c.hosts[1].underlay)]
    );
    assert_eq!(
        c.cnet_routes(1),
        [format!("{} via {} dev eth0", sub(0), c.hosts[0].underlay)]
    );
    assert!(c.cnet_routes(2).is_empty(), "{:?}", c.cnet_routes(2));

    let installed = sync_fabric(&c, &moto, &vpc);
    assert_eq!(installed[0].len(), 1, "{installed:?}");
    assert_eq!(installed[1].len(), 2, "{installed:?}");
    let failed = c.all_pairs_ping();
    assert!(failed.is_empty(), "failed: {failed:?}");
}
