//! moto, an EC2 emulator (PyPI `moto[server]`, installed by `scripts/deps
//! --all` into its own virtual environment, `/opt/cnet/moto`, or
//! `CNET_MOTO_VENV`), for the aws-vpc tests: one server per test, on
//! 127.0.0.1 or on an address inside a test namespace, killed by its guard
//! (also on panic). Read and set up through boto3 from the same virtual
//! environment: a client independent of the one under test.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A moto server of this test; killed on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    /// Its address (`127.0.0.1`, or one inside [`Moto::netns`]).
    pub ip: String,
    pub port: u16,
    python: PathBuf,
    /// The namespace it runs in (`None`: the test's own).
    netns: Option<String>,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv() -> PathBuf {
    std::env::var_os("CNET_MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/cnet/moto"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Moto {
    /// A running moto, or `None` (and a SKIPPED line) when it is not
    /// installed; in CI its absence fails the test.
    pub fn start() -> Option<Moto> {
        Moto::start_in(None, "127.0.0.1")
    }

    /// [`Moto::start`] inside namespace `netns`, listening on `ip` there.
    pub fn start_in(netns: Option<&str>, ip: &str) -> Option<Moto> {
        let bin = venv().join("bin/moto_server");
        if !bin.exists() {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "moto is not installed at {}: run scripts/deps --all",
                    bin.display()
                );
            }
            eprintln!(
                "SKIPPED: moto not installed at {} (scripts/deps --all)",
                bin.display()
            );
            return None;
        }
        if let Some(ns) = netns {
            // boto3 reaches the server through the namespace's own address,
            // which goes over `lo`: a new namespace has it down.
            let ok = Command::new("ip")
                .args(["-n", ns, "link", "set", "lo", "up"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip -n {ns} link set lo up");
        }
        let port = free_port();
        let child = Moto::command(netns, &bin)
            .args(["-H", ip, "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto {
            child,
            ip: ip.to_string(),
            port,
            python: venv().join("bin/python"),
            netns: netns.map(str::to_string),
        };
        // Wait until it answers (a readiness wait, not a timing assertion).
        let probe = format!("import socket; socket.create_connection(('{ip}', {port}), 1)");
        for _ in 0..300 {
            let up = match netns {
                None => TcpStream::connect((ip, port)).is_ok(),
                Some(_) => Moto::command(netns, &moto.python)
                    .args(["-c", &probe])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
            };
            if up {
                return Some(moto);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("moto_server did not listen on {ip}:{port}");
    }

    /// `bin`, run inside `netns` when one is given.
    fn command(netns: Option<&str>, bin: &std::path::Path) -> Command {
        match netns {
            None => Command::new(bin),
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(bin);
                c
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    /// Run `code` with `ec2`, a boto3 client of this moto; its stdout as JSON.
    pub fn boto(&self, code: &str) -> Value {
        let script = format!(
            "import boto3, json\nec2 = boto3.client('ec2', endpoint_url='{}', region_name='us-east-1', \
             aws_access_key_id='testing', aws_secret_access_key='testing')\n{code}\n",
            self.url()
        );
        let out = Moto::command(self.netns.as_deref(), &self.python)
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boto3 script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The routes of `table` as moto lists them: destination → target.
    pub fn routes(&self, table: &str) -> BTreeMap<String, String> {
        let v = self.boto(&format!(
            "print(json.dumps(ec2.describe_route_tables(RouteTableIds=['{table}'])['RouteTables'][0]['Routes']))"
        ));
        v.as_array()
            .unwrap()
            .iter()
            .filter_map(|r| {
                let dest = r.get("DestinationCidrBlock")?.as_str()?.to_string();
                let target = ["NetworkInterfaceId", "GatewayId", "InstanceId"]
                    .iter()
                    .find_map(|k| r.get(*k).and_then(|t| t.as_str()))
                    .unwrap_or("?")
                    .to_string();
                Some((dest, target))
            })
            .collect()
    }
}

/// The routes of `table` inside the cluster network 10.244.0.0/16.
pub fn cluster_routes(moto: &Moto, table: &str) -> BTreeMap<String, String> {
    moto.routes(table)
        .into_iter()
        .filter(|(d, _)| d.starts_with("10.244."))
        .collect()
}
