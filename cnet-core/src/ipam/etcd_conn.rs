//! How the etcd store reaches etcd: endpoints, TLS and user/password auth,
//! the options Flannel calls `--etcd-endpoints`, `--etcd-cafile`,
//! `--etcd-certfile`, `--etcd-keyfile`, `--etcd-username` and
//! `--etcd-password`.
//!
//! ```text
//! EtcdConfig ──build_agent──▶ ureq::Agent (rustls: CA roots, client cert)
//!      └── auth ──▶ Auth: POST /v3/auth/authenticate → token, sent as the
//!                   `Authorization` header; fetched again once when etcd
//!                   says the token is invalid or expired
//! ```
//!
//! Secrets (the password, the token, the private key) stay in this module's
//! types, whose `Debug` prints `<redacted>`; no error or log line carries
//! them: errors name files and users, never their contents.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, KernelError, Result};

/// Where and how to connect to etcd: see [`super::EtcdStore::open`].
///
/// ```no_run
/// # use cnet_core::ipam::{EtcdConfig, EtcdStore, EtcdTls};
/// let config = EtcdConfig::new(&["https://10.0.0.1:2379", "https://10.0.0.2:2379"], "/cnet")
///     .tls(EtcdTls::new()
///         .ca_file("/etc/cnet/etcd-ca.pem")
///         .cert_file("/etc/cnet/etcd-client.pem")
///         .key_file("/etc/cnet/etcd-client-key.pem"))
///     .auth("cnet", "s3cret");
/// let store = EtcdStore::open(config)?;
/// # Ok::<(), cnet_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs (`http://…` or `https://…`), all of the same cluster. A
    /// request goes to the one that answered last and moves on to the next
    /// on a connection error or when that member has no leader.
    pub endpoints: Vec<String>,
    /// Every key lives under this prefix (`/cnet/ipam`).
    pub prefix: String,
    /// Bound of one request (connect and whole request); default 5 s.
    pub timeout: Duration,
    /// TLS settings for `https://` endpoints (default: the webpki roots,
    /// no client certificate).
    pub tls: Option<EtcdTls>,
    /// etcd user and password (etcd's `auth enable`).
    pub auth: Option<EtcdAuth>,
    /// How long a watch stream may stay silent before it is opened again
    /// (from the revision it had: nothing is lost); default 60 s. Watches
    /// ask for etcd's progress notifications, so a server whose
    /// `--experimental-watch-progress-notify-interval` is shorter keeps
    /// every stream open; a shorter bound notices sooner a member that
    /// vanished without closing the connection.
    pub watch_idle: Duration,
}

impl EtcdConfig {
    /// Endpoints and key prefix; a 5 s timeout, no TLS options, no auth.
    pub fn new(endpoints: &[&str], prefix: &str) -> Self {
        EtcdConfig {
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            prefix: prefix.to_string(),
            timeout: Duration::from_secs(5),
            tls: None,
            auth: None,
            watch_idle: Duration::from_secs(60),
        }
    }

    /// Bound every request by `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a silent watch stream stays open (see
    /// [`EtcdConfig::watch_idle`](#structfield.watch_idle)).
    pub fn watch_idle(mut self, idle: Duration) -> Self {
        self.watch_idle = idle;
        self
    }

    /// Verify servers and present a client certificate as `tls` says.
    pub fn tls(mut self, tls: EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Authenticate as etcd user `username` with `password`.
    pub fn auth(mut self, username: &str, password: &str) -> Self {
        self.auth = Some(EtcdAuth::new(username, password));
        self
    }
}

/// TLS files, all PEM: like etcdctl's `--cacert`, `--cert`, `--key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA certificate(s) that signed the etcd servers' certificates
    /// (default: the webpki roots).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (chain) for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl EtcdTls {
    /// No files: verify against the webpki roots, no client certificate.
    pub fn new() -> Self {
        Self::default()
    }
    /// The CA file (`--etcd-cafile`).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }
    /// The client certificate file (`--etcd-certfile`).
    pub fn cert_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(path.into());
        self
    }
    /// The client key file (`--etcd-keyfile`).
    pub fn key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.key_file = Some(path.into());
        self
    }
}

/// An etcd user and password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdAuth {
    /// The etcd user.
    pub username: String,
    password: String,
}

impl EtcdAuth {
    /// User `username` with `password`.
    pub fn new(username: &str, password: &str) -> Self {
        EtcdAuth {
            username: username.to_string(),
            password: password.to_string(),
        }
    }
}

impl std::fmt::Debug for EtcdAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A denied request, with what the server or TLS said and what to do.
pub(super) fn denied(context: String, reason: String) -> Error {
    Error::PermissionDenied {
        context,
        kernel: Some(KernelError::new(libc::EACCES, Some(reason))),
    }
}

/// The rustls client configuration of `tls`.
pub(super) fn client_config(tls: &EtcdTls) -> Result<Arc<rustls::ClientConfig>> {
    let ctx = "etcd TLS settings";
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(ca) => {
            for cert in read_certs(ca, "CA file")? {
                roots
                    .add(cert)
                    .map_err(|e| Error::invalid(ctx, format!("CA file {}: {e}", ca.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // ring, the provider ureq itself builds with (aws-lc-rs would need
    // cmake and a C toolchain of its own); rustls marks it deprecated only
    // because ring has no post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid(ctx, e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "client certificate file")?;
            let key_der = read_key(key)?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                // rustls says why the pair is refused (e.g. a key that does
                // not match); it never prints key material.
                Error::invalid(
                    ctx,
                    format!(
                        "client certificate {} with key {}: {e}",
                        cert.display(),
                        key.display()
                    ),
                )
            })?
        }
        _ => {
            return Err(Error::invalid(
                ctx,
                "a client certificate needs both --etcd-certfile and --etcd-keyfile",
            ))
        }
    };
    Ok(Arc::new(config))
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let ctx = format!("etcd TLS settings: {what} {}", path.display());
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| pem_error(&ctx, e))?;
    let certs = iter
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&ctx, e))?;
    if certs.is_empty() {
        return Err(Error::invalid(ctx, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let ctx = format!("etcd TLS settings: key file {}", path.display());
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::Io(io) => Error::io(ctx, io),
        // Only the kind of fault: a key file's lines are secret.
        _ => Error::invalid(ctx, "no PEM private key (PKCS#8, PKCS#1 or SEC1) in it"),
    })
}

fn pem_error(ctx: &str, e: rustls_pki_types::pem::Error) -> Error {
    match e {
        rustls_pki_types::pem::Error::Io(io) => Error::io(ctx.to_string(), io),
        e => Error::invalid(ctx.to_string(), format!("not PEM: {e}")),
    }
}

/// The HTTP agent of `config`: TLS per its settings, the given timeouts
/// (`None`: no whole-request bound, for watch streams).
pub(super) fn agent(
    tls: Option<&Arc<rustls::ClientConfig>>,
    connect: Duration,
    read: Duration,
    whole: Option<Duration>,
) -> ureq::Agent {
    let mut b = ureq::AgentBuilder::new()
        .timeout_connect(connect)
        .timeout_read(read);
    if let Some(t) = whole {
        b = b.timeout(t);
    }
    if let Some(tls) = tls {
        b = b.tls_config(tls.clone());
    }
    b.build()
}

/// User/password auth and the current token (shared by the clones of one
/// store and its watch threads). `Debug` shows the user only.
pub(super) struct Auth {
    pub(super) user: EtcdAuth,
    token: Mutex<Option<String>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.user.username)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Auth {
    pub(super) fn new(user: EtcdAuth) -> Self {
        Auth {
            user,
            token: Mutex::new(None),
        }
    }

    /// The token in use, if any.
    pub(super) fn token(&self) -> Option<String> {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forget `stale` (if it is still the one in use).
    pub(super) fn invalidate(&self, stale: Option<&str>) {
        let mut t = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if t.as_deref() == stale {
            *t = None;
        }
    }

    pub(super) fn set(&self, token: String) {
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
    }

    /// The body of `/v3/auth/authenticate`.
    pub(super) fn request(&self) -> serde_json::Value {
        serde_json::json!({ "name": self.user.username, "password": self.user.password })
    }
}

/// What went wrong in TLS, when a transport error is a TLS failure: the
/// typed error, with the fix.
pub(super) fn tls_failure(context: &str, t: &ureq::Transport) -> Option<Error> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(t);
    let mut found = None;
    while let Some(s) = src {
        if let Some(e) = s.downcast_ref::<rustls::Error>() {
            found = Some(e.clone());
            break;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if let Some(e) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                found = Some(e.clone());
                break;
            }
        }
        src = s.source();
    }
    let e = found?;
    use rustls::{AlertDescription as A, CertificateError as C};
    let fix = match &e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "the server's certificate is not signed by a CA in the CA file (--etcd-cafile): give \
             the CA that signed etcd's --cert-file"
        }
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => {
            "the server's certificate does not name this endpoint's host: use the host or \
             address its certificate was made for"
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the server's certificate has expired: renew etcd's --cert-file"
        }
        rustls::Error::AlertReceived(
            A::BadCertificate
            | A::UnknownCA
            | A::CertificateRequired
            | A::CertificateUnknown
            | A::AccessDenied
            | A::HandshakeFailure,
        ) => {
            "etcd refused this client's certificate: give a certificate and key \
             (--etcd-certfile, --etcd-keyfile) signed by the CA of etcd's --trusted-ca-file"
        }
        _ => "TLS with etcd failed: check the CA, certificate and key files",
    };
    Some(denied(
        format!("{context}: TLS"),
        format!("{fix} (TLS said: {e})"),
    ))
}
