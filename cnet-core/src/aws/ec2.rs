//! A small synchronous EC2 Query API client: a form-encoded POST per
//! action, signed with SigV4, answered in XML.
//!
//! ```text
//! Ec2::call(action, params) ─sigv4─▶ POST endpoint/ ─▶ 200: XML body
//!                                                 └─▶ 4xx/5xx: <Error><Code> → Error::Cloud
//!   throttled (RequestLimitExceeded, Throttling, 5xx) → wait base·2ⁿ + jitter, again
//! ```

use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use super::config::{AwsConfig, Resolved, RetryPolicy};
use super::sigv4::{self, uri_encode};
use super::xml::{self, Instance, NetworkInterface, RouteTable};
use crate::{Error, Result};

/// The Query API version these calls are written for.
const VERSION: &str = "2016-11-15";

/// Error codes that mean "slow down and try again".
const THROTTLED: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "ServiceUnavailable",
    "Unavailable",
    "InternalError",
];

/// An EC2 client (cheap to clone: one connection pool).
#[derive(Debug, Clone)]
pub struct Ec2 {
    cfg: Resolved,
    host: String,
    agent: ureq::Agent,
}

/// A filter of a `Describe*` call: name and values.
pub type Filter<'a> = (&'a str, &'a [&'a str]);

impl Ec2 {
    /// A client configured by `config`, the environment, the shared
    /// credentials file and the metadata service (see
    /// [`super::config`]).
    pub fn new(config: &AwsConfig) -> Result<Self> {
        let cfg = config.resolve()?;
        let host = cfg
            .endpoint
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(&cfg.endpoint)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        if host.is_empty() {
            return Err(Error::invalid(
                "EC2 endpoint",
                format!("no host in {:?}", cfg.endpoint),
            ));
        }
        let agent = ureq::AgentBuilder::new().timeout(cfg.timeout).build();
        Ok(Ec2 { cfg, host, agent })
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.cfg.region
    }

    /// The retry policy.
    pub fn retry(&self) -> RetryPolicy {
        self.cfg.retry
    }

    /// `ACTION` with `params`: the answer's XML, or the service's error as
    /// [`Error::Cloud`] (after the retries of a throttled request).
    pub fn call(&self, action: &str, params: &[(String, String)], context: &str) -> Result<String> {
        let mut body = format!("Action={action}&Version={VERSION}");
        for (k, v) in params {
            body.push('&');
            body.push_str(&uri_encode(k));
            body.push('=');
            body.push_str(&uri_encode(v));
        }
        let policy = self.cfg.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send(&body, context) {
                Err(Error::Cloud { code, .. })
                    if attempt < policy.attempts.max(1) && THROTTLED.contains(&code.as_str()) =>
                {
                    std::thread::sleep(backoff(&policy, attempt));
                }
                other => return other,
            }
        }
    }

    fn send(&self, body: &str, context: &str) -> Result<String> {
        let date = sigv4::amz_date(SystemTime::now());
        let ct = "application/x-www-form-urlencoded; charset=utf-8";
        let token = self.cfg.credentials.session_token();
        let mut headers = vec![
            ("content-type", ct),
            ("host", self.host.as_str()),
            ("x-amz-date", date.as_str()),
        ];
        if let Some(t) = token {
            headers.push(("x-amz-security-token", t));
        }
        let req = sigv4::Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            payload: body.as_bytes(),
        };
        let auth =
            sigv4::authorization(&req, &self.cfg.credentials, &self.cfg.region, "ec2", &date);
        let mut r = self
            .agent
            .post(&format!("{}/", self.cfg.endpoint))
            .set("Content-Type", ct)
            .set("X-Amz-Date", &date)
            .set("Authorization", &auth);
        if let Some(t) = token {
            r = r.set("X-Amz-Security-Token", t);
        }
        match r.send_string(body) {
            Ok(resp) => resp.into_string().map_err(|e| Error::io(context, e)),
            Err(ureq::Error::Status(status, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let e = xml::parse_error(&text).unwrap_or(xml::ApiError {
                    code: format!("HTTP{status}"),
                    message: text.chars().take(200).collect(),
                });
                Err(Error::Cloud {
                    context: context.to_string(),
                    code: e.code,
                    message: e.message,
                    status,
                })
            }
            // ureq's transport error names the URL (no secret: the
            // credentials travel in headers it does not print).
            Err(ureq::Error::Transport(t)) => Err(Error::Protocol {
                context: context.to_string(),
                reason: format!("EC2 endpoint unreachable: {t}"),
            }),
        }
    }

    /// `DescribeRouteTables` of `ids` (all if empty) matching `filters`,
    /// every page.
    pub fn describe_route_tables(
        &self,
        ids: &[&str],
        filters: &[Filter<'_>],
    ) -> Result<Vec<RouteTable>> {
        let context = "DescribeRouteTables";
        let mut params = id_params("RouteTableId", ids);
        params.extend(filter_params(filters));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut p = params.clone();
            if let Some(t) = &token {
                p.push(("NextToken".into(), t.clone()));
            }
            let body = self.call("DescribeRouteTables", &p, context)?;
            out.extend(xml::route_tables(context, &body)?);
            token = xml::next_token(context, &body)?;
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// `CreateRoute DEST → ENI` in `table` (AWS refuses one that exists:
    /// `RouteAlreadyExists`).
    pub fn create_route(&self, table: &str, dest: IpNet, eni: &str) -> Result<()> {
        let context = format!("CreateRoute {dest} → {eni} in {table}");
        self.call(
            "CreateRoute",
            &route_params(table, dest, Some(eni)),
            &context,
        )
        .map(drop)
    }

    /// `ReplaceRoute DEST → ENI` in `table`.
    pub fn replace_route(&self, table: &str, dest: IpNet, eni: &str) -> Result<()> {
        let context = format!("ReplaceRoute {dest} → {eni} in {table}");
        self.call(
            "ReplaceRoute",
            &route_params(table, dest, Some(eni)),
            &context,
        )
        .map(drop)
    }

    /// `DeleteRoute DEST` in `table`; a route already gone
    /// (`InvalidRoute.NotFound`) is success.
    pub fn delete_route(&self, table: &str, dest: IpNet) -> Result<()> {
        let context = format!("DeleteRoute {dest} in {table}");
        match self.call("DeleteRoute", &route_params(table, dest, None), &context) {
            Err(e) if e.cloud_code() == Some("InvalidRoute.NotFound") => Ok(()),
            r => r.map(drop),
        }
    }

    /// `DescribeNetworkInterfaces` of `ids`.
    pub fn describe_network_interfaces(&self, ids: &[&str]) -> Result<Vec<NetworkInterface>> {
        let context = "DescribeNetworkInterfaces";
        let body = self.call(context, &id_params("NetworkInterfaceId", ids), context)?;
        xml::network_interfaces(context, &body)
    }

    /// `DescribeInstances` of `ids`.
    pub fn describe_instances(&self, ids: &[&str]) -> Result<Vec<Instance>> {
        let context = "DescribeInstances";
        let body = self.call(context, &id_params("InstanceId", ids), context)?;
        xml::instances(context, &body)
    }

    /// `ModifyNetworkInterfaceAttribute SourceDestCheck=VALUE` of `eni`.
    pub fn set_source_dest_check(&self, eni: &str, value: bool) -> Result<()> {
        let context = format!("ModifyNetworkInterfaceAttribute {eni} SourceDestCheck={value}");
        let params = vec![
            ("NetworkInterfaceId".to_string(), eni.to_string()),
            ("SourceDestCheck.Value".to_string(), value.to_string()),
        ];
        self.call("ModifyNetworkInterfaceAttribute", &params, &context)
            .map(drop)
    }
}

/// The wait before try `attempt + 1`: `base`·2^(attempt−1), at most `max`,
/// with full jitter in its upper half.
fn backoff(p: &RetryPolicy, attempt: u32) -> Duration {
    let exp = p
        .base
        .saturating_mul(1u32 << (attempt - 1).min(16))
        .min(p.max);
    let half = exp / 2;
    half + Duration::from_nanos(fastrand::u64(0..=half.as_nanos() as u64))
}

fn id_params(name: &str, ids: &[&str]) -> Vec<(String, String)> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| (format!("{name}.{}", i + 1), id.to_string()))
        .collect()
}

fn filter_params(filters: &[Filter<'_>]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, (name, values)) in filters.iter().enumerate() {
        out.push((format!("Filter.{}.Name", i + 1), name.to_string()));
        for (j, v) in values.iter().enumerate() {
            out.push((format!("Filter.{}.Value.{}", i + 1, j + 1), v.to_string()));
        }
    }
    out
}

fn route_params(table: &str, dest: IpNet, eni: Option<&str>) -> Vec<(String, String)> {
    let key = match dest {
        IpNet::V4(_) => "DestinationCidrBlock",
        IpNet::V6(_) => "DestinationIpv6CidrBlock",
    };
    let mut p = vec![
        ("RouteTableId".to_string(), table.to_string()),
        (key.to_string(), dest.to_string()),
    ];
    if let Some(eni) = eni {
        p.push(("NetworkInterfaceId".into(), eni.into()));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_backoff_doubles_within_bounds() {
        let p = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for (attempt, full) in [(1, 100), (2, 200), (3, 400), (5, 1000), (9, 1000)] {
            let w = backoff(&p, attempt);
            let full = Duration::from_millis(full);
            assert!(w >= full / 2 && w <= full, "attempt {attempt}: {w:?}");
        }
    }

    #[test]
    fn aws_filter_and_route_params() {
        let f = filter_params(&[("vpc-id", &["vpc-1"]), ("association.main", &["true"])]);
        assert_eq!(f[0], ("Filter.1.Name".into(), "vpc-id".into()));
        assert_eq!(f[3], ("Filter.2.Value.1".into(), "true".into()));
        let r = route_params("rtb-1", "10.244.1.0/24".parse().unwrap(), Some("eni-1"));
        assert_eq!(
            r[1],
            ("DestinationCidrBlock".into(), "10.244.1.0/24".into())
        );
    }
}
