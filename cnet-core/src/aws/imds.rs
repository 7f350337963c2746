//! The instance metadata service, IMDSv2: `PUT /latest/api/token` for a
//! session token, then `GET /latest/meta-data/…` with it.
//!
//! The token and the role's credentials never appear in an error.

use std::time::Duration;

use super::Credentials;
use crate::{Error, Result};

/// The link-local address of the metadata service.
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";

/// A client of the instance metadata service.
#[derive(Debug, Clone)]
pub struct Imds {
    endpoint: String,
    agent: ureq::Agent,
}

impl Imds {
    /// A client of the service at `endpoint` (`http://169.254.169.254`).
    pub fn new(endpoint: &str, timeout: Duration) -> Self {
        Imds {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            agent: ureq::AgentBuilder::new().timeout(timeout).build(),
        }
    }

    /// The service at `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else at
    /// [`DEFAULT_ENDPOINT`].
    pub fn from_env(timeout: Duration) -> Self {
        let endpoint = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .ok()
            .filter(|s| !s.is_empty());
        Imds::new(endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT), timeout)
    }

    fn token(&self) -> Result<String> {
        let url = format!("{}/latest/api/token", self.endpoint);
        self.agent
            .put(&url)
            .set("X-aws-ec2-metadata-token-ttl-seconds", "300")
            .call()
            .map_err(|e| imds_error("IMDSv2 token", e))?
            .into_string()
            .map_err(|e| Error::io("IMDSv2 token: read", e))
    }

    /// `GET /latest/meta-data/PATH` (`instance-id`, `placement/region`, …).
    pub fn get(&self, path: &str) -> Result<String> {
        let token = self.token()?;
        let url = format!("{}/latest/meta-data/{path}", self.endpoint);
        let context = format!("IMDSv2 meta-data/{path}");
        let body = self
            .agent
            .get(&url)
            .set("X-aws-ec2-metadata-token", &token)
            .call()
            .map_err(|e| imds_error(&context, e))?
            .into_string()
            .map_err(|e| Error::io(context, e))?;
        Ok(body.trim().to_string())
    }

    /// The instance role's temporary credentials
    /// (`iam/security-credentials/ROLE`).
    pub fn role_credentials(&self) -> Result<Credentials> {
        let role = self.get("iam/security-credentials/")?;
        let role = role.lines().next().unwrap_or("").trim().to_string();
        let body = self.get(&format!("iam/security-credentials/{role}"))?;
        let context = format!("IMDSv2 credentials of role {role}");
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|_| Error::Protocol {
            context: context.clone(),
            reason: "not JSON".into(),
        })?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        match (field("AccessKeyId"), field("SecretAccessKey")) {
            (Some(id), Some(secret)) => Ok(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: field("Token"),
            }),
            _ => Err(Error::Protocol {
                context,
                reason: "no AccessKeyId/SecretAccessKey".into(),
            }),
        }
    }

    /// This instance as the backend needs it: instance id, and its
    /// primary interface's id, subnet and VPC.
    pub fn identity(&self) -> Result<Identity> {
        let mac = self.get("mac")?;
        let macs = format!("network/interfaces/macs/{mac}");
        Ok(Identity {
            instance_id: self.get("instance-id")?,
            eni_id: self.get(&format!("{macs}/interface-id"))?,
            subnet_id: self.get(&format!("{macs}/subnet-id"))?,
            vpc_id: self.get(&format!("{macs}/vpc-id"))?,
        })
    }
}

/// Who this node is in the VPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `i-…`.
    pub instance_id: String,
    /// The primary network interface, `eni-…`: the target of this node's route.
    pub eni_id: String,
    /// `subnet-…` of that interface.
    pub subnet_id: String,
    /// `vpc-…`.
    pub vpc_id: String,
}

fn imds_error(context: &str, e: ureq::Error) -> Error {
    match e {
        ureq::Error::Status(status, _) => Error::Cloud {
            context: context.to_string(),
            code: "IMDS".into(),
            message: format!("the metadata service answered HTTP {status}"),
            status,
        },
        ureq::Error::Transport(t) => Error::Protocol {
            context: context.to_string(),
            reason: format!("metadata service unreachable: {t}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    /// A metadata service on 127.0.0.1 that wants a PUT token before any
    /// GET, as IMDSv2 does; serves `n` requests.
    fn fake_imds(n: usize) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().take(n) {
                let mut s = s.unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let mut token_ok = false;
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    let h = h.trim().to_ascii_lowercase();
                    if h.is_empty() {
                        break;
                    }
                    token_ok |= h == "x-aws-ec2-metadata-token: tok-123";
                    if let Some(v) = h.strip_prefix("content-length: ") {
                        len = v.parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let path = line.split(' ').nth(1).unwrap().to_string();
                let (status, body) = if line.starts_with("PUT /latest/api/token") {
                    (200, "tok-123".to_string())
                } else if !token_ok {
                    (401, String::new())
                } else {
                    match path.trim_start_matches("/latest/meta-data/") {
                        "instance-id" => (200, "i-0abc".into()),
                        "mac" => (200, "0e:00:00:00:00:01".into()),
                        "network/interfaces/macs/0e:00:00:00:00:01/interface-id" => {
                            (200, "eni-1".into())
                        }
                        "network/interfaces/macs/0e:00:00:00:00:01/subnet-id" => {
                            (200, "subnet-1".into())
                        }
                        "network/interfaces/macs/0e:00:00:00:00:01/vpc-id" => (200, "vpc-1".into()),
                        _ => (404, String::new()),
                    }
                };
                write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        format!("http://{addr}")
    }

    #[test]
    fn aws_imdsv2_token_then_identity() {
        let imds = Imds::new(&fake_imds(10), Duration::from_secs(5));
        let id = imds.identity().unwrap();
        assert_eq!(
            id,
            Identity {
                instance_id: "i-0abc".into(),
                eni_id: "eni-1".into(),
                subnet_id: "subnet-1".into(),
                vpc_id: "vpc-1".into(),
            }
        );
    }

    #[test]
    fn aws_imds_missing_path_is_typed() {
        let imds = Imds::new(&fake_imds(2), Duration::from_secs(5));
        let e = imds.get("nope").unwrap_err();
        assert!(matches!(e, Error::Cloud { status: 404, .. }), "{e}");
        assert!(!e.to_string().contains("tok-123"), "{e}");
    }
}
