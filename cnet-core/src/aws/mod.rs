//! A small synchronous client of the AWS APIs the `aws-vpc` node backend
//! needs (feature `aws`): EC2's route tables, network interfaces and
//! instances over the EC2 Query API, and the instance metadata service.
//!
//! ```text
//! network::node::aws_vpc ──▶ Ec2 (ec2.rs) ──▶ sigv4.rs ──▶ ureq (rustls) ──▶ EC2 endpoint
//!                            │  └─ xml.rs (roxmltree): answers and <Error><Code>
//!                            └─ AwsConfig (config.rs): credentials, region, endpoint
//!                               └─ Imds (imds.rs): IMDSv2 token, identity, role credentials
//! ```
//!
//! Errors keep AWS's own code ([`crate::Error::Cloud`]); throttled requests
//! are retried with exponential backoff ([`RetryPolicy`]). No secret (secret
//! key, session token, metadata token) ever reaches an error, a log line or
//! a `Debug` output.

pub mod config;
pub mod ec2;
pub mod imds;
pub mod sigv4;
pub mod xml;

pub use config::{AwsConfig, Credentials, RetryPolicy};
pub use ec2::Ec2;
pub use imds::{Identity, Imds};
pub use xml::{Instance, NetworkInterface, RouteTable, VpcRoute};
