//! Where the EC2 client takes its credentials, region and endpoint: the
//! places AWS's own tools read, each overridable in [`AwsConfig`].
//!
//! ```text
//! credentials: config ▶ AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN
//!              ▶ shared file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials,
//!                profile AWS_PROFILE or "default") ▶ the instance role (IMDSv2)
//! region:      config ▶ AWS_REGION / AWS_DEFAULT_REGION ▶ IMDSv2 placement/region
//! endpoint:    config ▶ AWS_ENDPOINT_URL_EC2 ▶ AWS_ENDPOINT_URL ▶ https://ec2.REGION.amazonaws.com
//! ```
//!
//! The secret key and session token live only in [`Credentials`], whose
//! `Debug` prints `<redacted>`; no error carries them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Error, Result};

use super::imds::Imds;

/// An access key: id, secret and (temporary credentials) session token.
/// `Debug` shows the key id only: it names the key in CloudTrail and
/// is no secret; the secret key and token print as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `AKIA…` / `ASIA…`.
    pub access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Credentials {
    /// An access key id, its secret, and a session token for temporary
    /// credentials.
    pub fn new(access_key_id: &str, secret_access_key: &str, session_token: Option<&str>) -> Self {
        Credentials {
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
            session_token: session_token.map(str::to_string),
        }
    }

    /// The session token (sent as `X-Amz-Security-Token`), if any.
    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref()
    }

    /// From `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN`; `None` unless both of the first two are set.
    pub fn from_env() -> Option<Self> {
        let id = std::env::var("AWS_ACCESS_KEY_ID")
            .ok()
            .filter(|s| !s.is_empty())?;
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY")
            .ok()
            .filter(|s| !s.is_empty())?;
        let token = std::env::var("AWS_SESSION_TOKEN")
            .ok()
            .filter(|s| !s.is_empty());
        Some(Credentials::new(&id, &secret, token.as_deref()))
    }

    /// The shared credentials file of AWS's tools
    /// (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`).
    pub fn shared_file_path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
            return Some(PathBuf::from(p));
        }
        std::env::var_os("HOME").map(|h| Path::new(&h).join(".aws/credentials"))
    }

    /// Profile `profile` of the shared credentials file at `path`; `Ok(None)`
    /// when the file or the profile is absent. An error names the file and
    /// the line, never a value.
    pub fn from_shared_file(path: &Path, profile: &str) -> Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        Ok(parse_shared_file(&text, profile))
    }

    /// Credentials from the usual places, the instance role last
    /// (see the module's docs).
    pub fn resolve(imds: &Imds) -> Result<Self> {
        if let Some(c) = Credentials::from_env() {
            return Ok(c);
        }
        if let Some(path) = Credentials::shared_file_path() {
            let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
            if let Some(c) = Credentials::from_shared_file(&path, &profile)? {
                return Ok(c);
            }
        }
        imds.role_credentials()
    }
}

/// The `[profile]` section's `aws_access_key_id`, `aws_secret_access_key`
/// and `aws_session_token` of an INI text.
fn parse_shared_file(text: &str, profile: &str) -> Option<Credentials> {
    let (mut id, mut secret, mut token) = (None, None, None);
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == profile;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some(Credentials {
        access_key_id: id?,
        secret_access_key: secret?,
        session_token: token,
    })
}

/// Retries of throttled requests: `attempts` tries in all, waiting
/// `base`·2ⁿ (with jitter, at most `max`) between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all (at least 1).
    pub attempts: u32,
    /// The first wait.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// 8 tries, 100 ms doubling up to 5 s (about AWS SDKs' "standard" mode).
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// How to reach EC2: every field `None` is taken from the environment
/// (see the module's docs) by [`AwsConfig::resolve`].
#[derive(Debug, Clone, Default)]
pub struct AwsConfig {
    /// `us-east-1`, …
    pub region: Option<String>,
    /// The EC2 endpoint URL (`https://ec2.REGION.amazonaws.com`, or an
    /// emulator's `http://127.0.0.1:PORT`).
    pub endpoint: Option<String>,
    /// Credentials (`Debug` redacts the secret).
    pub credentials: Option<Credentials>,
    /// The instance metadata service (default `http://169.254.169.254`,
    /// or `AWS_EC2_METADATA_SERVICE_ENDPOINT`).
    pub imds_endpoint: Option<String>,
    /// Bound of one HTTP request; default 10 s.
    pub timeout: Option<Duration>,
    /// Retries of throttled (and 5xx) answers.
    pub retry: RetryPolicy,
}

/// An [`AwsConfig`] with every field settled.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub(crate) region: String,
    pub(crate) endpoint: String,
    pub(crate) credentials: Credentials,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

impl AwsConfig {
    /// Region, endpoint and credentials given here, the rest from the
    /// environment, the shared credentials file and the metadata service.
    pub fn resolve(&self) -> Result<Resolved> {
        let timeout = self.timeout.unwrap_or(Duration::from_secs(10));
        let imds = Imds::new(
            self.imds_endpoint
                .clone()
                .or_else(|| env("AWS_EC2_METADATA_SERVICE_ENDPOINT"))
                .as_deref()
                .unwrap_or(super::imds::DEFAULT_ENDPOINT),
            timeout.min(Duration::from_secs(2)),
        );
        let region = match self
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
        {
            Some(r) => r,
            None => imds.get("placement/region")?,
        };
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_EC2"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://ec2.{region}.amazonaws.com"));
        let credentials = match &self.credentials {
            Some(c) => c.clone(),
            None => Credentials::resolve(&imds)?,
        };
        Ok(Resolved {
            region,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            credentials,
            timeout,
            retry: self.retry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_credentials_debug_redacts_secret_and_token() {
        let c = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("TOKEN-SECRET-123"),
        );
        let shown = format!(
            "{c:?} {:?}",
            AwsConfig {
                credentials: Some(c.clone()),
                ..Default::default()
            }
        );
        assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert!(!shown.contains("TOKEN-SECRET"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn aws_shared_file_profile() {
        let text = "# comment\n[default]\naws_access_key_id = AKIA1\naws_secret_access_key = s1\n\n\
                    [other]\naws_access_key_id=AKIA2\naws_secret_access_key=s2\naws_session_token=t2\n";
        let d = parse_shared_file(text, "default").unwrap();
        assert_eq!(
            (d.access_key_id.as_str(), d.secret_access_key.as_str()),
            ("AKIA1", "s1")
        );
        assert_eq!(d.session_token, None);
        let o = parse_shared_file(text, "other").unwrap();
        assert_eq!(o.session_token.as_deref(), Some("t2"));
        assert!(parse_shared_file(text, "missing").is_none());
    }
}
