//! The one error type of cnet-core.
//!
//! Every variant names the operation and object it concerns (`context`), and
//! kernel failures keep the errno and the kernel's extended-ACK text
//! ([`KernelError`]). Exit codes and JSON belong to the front ends, not here.

use std::fmt;

/// What the kernel said when it refused a request: the errno and, when the
/// kernel attached one, its extended-ACK message ("Unknown device type").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    /// Positive errno value (`libc::ENOENT`, …).
    pub errno: i32,
    /// The kernel's extended-ACK message, if any.
    pub message: Option<String>,
}

impl KernelError {
    /// A kernel error from a positive errno and an optional ext-ack text.
    pub fn new(errno: i32, message: Option<String>) -> Self {
        Self { errno, message }
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = std::io::Error::from_raw_os_error(self.errno);
        match &self.message {
            Some(m) => write!(f, "{m} ({os})"),
            None => write!(f, "{os}"),
        }
    }
}

impl std::error::Error for KernelError {}

/// Renders an optional kernel error as ": <kernel text>" or nothing.
struct Opt<'a>(&'a Option<KernelError>);

impl fmt::Display for Opt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(k) => write!(f, ": {k}"),
            None => Ok(()),
        }
    }
}

/// "1 item" / "N items".
struct Items(usize);

impl fmt::Display for Items {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            1 => write!(f, "1 item"),
            n => write!(f, "{n} items"),
        }
    }
}

/// The first few errors of a list, "; "-separated, then how many more.
struct Joined<'a>(&'a [Error]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 3;
        for (i, e) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{e}")?;
        }
        if self.0.len() > SHOWN {
            write!(f, "; and {} more", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// The `context` field of any variant (every variant has one).
macro_rules! context_of {
    ($e:expr) => {
        match $e {
            Error::InvalidArgument { context, .. }
            | Error::NotFound { context, .. }
            | Error::AlreadyExists { context, .. }
            | Error::PermissionDenied { context, .. }
            | Error::Unsupported { context, .. }
            | Error::Busy { context, .. }
            | Error::Netlink { context, .. }
            | Error::Mismatch { context, .. }
            | Error::Exhausted { context, .. }
            | Error::Conflict { context, .. }
            | Error::Corrupt { context, .. }
            | Error::Timeout { context, .. }
            | Error::Protocol { context, .. }
            | Error::Partial { context, .. }
            | Error::Io { context, .. }
            | Error::Cloud { context, .. }
            | Error::RouteQuota { context, .. } => context,
        }
    };
}

/// The error type of every fallible cnet-core call.
///
/// `Clone`, so reports can be merged and errors kept in several places; a
/// cloned [`Error::Io`] keeps the errno, kind and text of its source (see
/// the `Clone` impl).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Our own validation refused the input before anything was sent.
    #[error("{context}: invalid argument: {reason}")]
    InvalidArgument {
        /// The operation and object concerned ("create veth link veth-a in pod-a").
        context: String,
        /// Why, in words.
        reason: String,
    },

    /// The object (link, namespace, route, lease, …) does not exist.
    #[error("{context}: not found{}", Opt(.kernel))]
    NotFound {
        /// The operation and object concerned ("create veth link veth-a in pod-a").
        context: String,
        /// The kernel's errno and extended-ACK text, when the kernel refused.
        kernel: Option<KernelError>,
    },

    /// The object exists already.
    #[error("{context}: already exists{}", Opt(.kernel))]
    AlreadyExists {
        /// The operation and object concerned ("create veth link veth-a in pod-a").
        context: String,
        /// The kernel's errno and extended-ACK text, when the kernel refused.
        kernel: Option<KernelError>,
    },

    /// The caller lacks a capability (usually CAP_NET_ADMIN / CAP_SYS_ADMIN).
    #[error("{context}: permission denied{}", Opt(.kernel))]
    PermissionDenied {
        /// The operation and object concerned ("create veth link veth-a in pod-a").
        context: String,
        /// The kernel's errno and extended-ACK text, when the kernel refused.
        kernel: Option<KernelError>,
    },

    /// The kernel (or this build) lacks the feature, e.g. "Unknown device type".
    #[error("{context}: not supported by this kernel{}", Opt(.kernel))]
    Unsupported {
        /// The operation and object concerned ("create veth link veth-a in pod-a").
        context: String,
        /// The kernel's errno and extended-ACK text, when the kernel refused.
        kernel: Option<KernelError>,
    },

    /// The object is busy (EBUSY), e.g. a device still in use.
    #[error("{context}: busy{}", Opt(.kernel))]
    Busy {
        /// The operation and object concerned ("create veth link veth-a in pod-a").
        context: String,
        /// The kernel's errno and extended-ACK text, when the kernel refused.
        kernel: Option<KernelError>,
    },

    /// Any other kernel refusal.
    #[error("{context}: {kernel}")]
    Netlink {
        /// The operation and object concerned ("create veth link veth-a in pod-a").
        context: String,
        /// The kernel's errno and extended-ACK text.
        kernel: KernelError,
    },

    /// An existing object is not compatible with what `ensure` asked for;
    /// `differences` lists each field as "field: have X, want Y".
    #[error("{context}: exists but differs: {}", .differences.join("; "))]
    Mismatch {
        /// The operation and object concerned ("create veth link veth-a in pod-a").
        context: String,
        /// One "field: have X, want Y" per difference.
        differences: Vec<String>,
    },

    /// A pool or network has no free address or subnet left.
    #[error("{context}: exhausted: {reason}")]
    Exhausted {
        /// The operation and object concerned ("create veth link veth-a in pod-a").
        context: String,
        /// Why, in words.
        reason: String,
    },

    /// The request conflicts with existing state (overlapping networks, an
    /// address held by another owner, a stale generation, …).
    #[error("{context}: conflict: {reason}")]
    Conflict {
        /// The operation and object concerned ("create veth link veth-a in pod-a").
        context: String,
        /// Why, in words.
        reason: String,
    },

    /// Stored state could not be understood (corrupt or foreign file/key);
    /// it is never silently reset.
    #[error("{context}: corrupt state: {reason}")]
    Corrupt {
        /// The operation and object concerned ("create veth link veth-a in pod-a").
        context: String,
        /// Why, in words.
        reason: String,
    },

    /// An operation did not finish in its time bound.
    #[error("{context}: timed out{}", if .reason.is_empty() { String::new() } else { format!(": {}", .reason) })]
    Timeout {
        /// The operation and object concerned ("create veth link veth-a in pod-a").
        context: String,
        /// Why, in words.
        reason: String,
    },

    /// The kernel (or a peer) answered something we could not make sense of.
    #[error("{context}: protocol error: {reason}")]
    Protocol {
        /// The operation and object concerned ("create veth link veth-a in pod-a").
        context: String,
        /// Why, in words.
        reason: String,
    },

    /// Some items of a multi-item operation (a reconcile) failed while
    /// the others were applied: `errors` has one error per failed item,
    /// `applied` says what was done ("3 added, 0 replaced, …").
    #[error("{context}: {} failed ({applied}): {}", Items(.errors.len()), Joined(.errors))]
    Partial {
        /// The operation and object concerned ("create veth link veth-a in pod-a").
        context: String,
        /// What the operation did apply ("3 added, 0 replaced, …").
        applied: String,
        /// One error per failed item, each naming its item.
        errors: Vec<Error>,
    },

    /// An I/O error from a file, socket or thread.
    #[error("{context}: {source}")]
    Io {
        /// The operation and object concerned ("create veth link veth-a in pod-a").
        context: String,
        #[source]
        /// The I/O error.
        source: std::io::Error,
    },

    /// A cloud API (the EC2 Query API of the `aws` feature) refused the
    /// request: its own error code (`RouteLimitExceeded`,
    /// `InvalidRoute.NotFound`, `UnauthorizedOperation`, …) and message,
    /// never a credential.
    #[error("{context}: {code}: {message} (HTTP {status})")]
    Cloud {
        /// The operation and object concerned ("CreateRoute 10.244.2.0/24 in rtb-1").
        context: String,
        /// The service's error code, as it sent it.
        code: String,
        /// The service's message, as it sent it.
        message: String,
        /// The HTTP status of the answer (0 when none came).
        status: u16,
    },

    /// A route table would hold more routes than its quota allows: nothing
    /// beyond the quota was programmed.
    #[error(
        "{context}: route table {table} holds {held} routes, {wanted} more needed, quota {quota}: \
         raise the route table quota (and the backend's `route_quota`), or use the vxlan or \
         cross-subnet backend"
    )]
    RouteQuota {
        /// The operation concerned.
        context: String,
        /// The route table's id (`rtb-…`).
        table: String,
        /// Routes the table holds now (all of them, other tools' included).
        held: usize,
        /// Routes the cluster would add.
        wanted: usize,
        /// The configured quota.
        quota: usize,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Our own validation error.
    pub fn invalid(context: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            context: context.into(),
            reason: reason.into(),
        }
    }

    /// An I/O error with context. A refusal for lack of rights (EACCES,
    /// EPERM, or an error of kind `PermissionDenied`) becomes
    /// [`Error::PermissionDenied`] with that context and errno, so a caller
    /// tells "run as root / fix the directory's mode" from other I/O
    /// failures the same way for files as for netlink.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let denied = matches!(source.raw_os_error(), Some(libc::EACCES | libc::EPERM))
            || (source.raw_os_error().is_none()
                && source.kind() == std::io::ErrorKind::PermissionDenied);
        if denied {
            let errno = source.raw_os_error().unwrap_or(libc::EACCES);
            // The text of a custom error (not just the errno's) is kept.
            let message = source.raw_os_error().is_none().then(|| source.to_string());
            return Error::PermissionDenied {
                context: context.into(),
                kernel: Some(KernelError::new(errno, message)),
            };
        }
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Map a kernel errno (+ ext-ack text) to the matching variant.
    pub fn from_kernel(context: impl Into<String>, kernel: KernelError) -> Self {
        let context = context.into();
        let k = Some(kernel.clone());
        match kernel.errno {
            libc::ENOENT | libc::ENODEV | libc::ESRCH | libc::EADDRNOTAVAIL => {
                Error::NotFound { context, kernel: k }
            }
            libc::EEXIST => Error::AlreadyExists { context, kernel: k },
            libc::EPERM | libc::EACCES => Error::PermissionDenied { context, kernel: k },
            libc::EOPNOTSUPP | libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT => {
                Error::Unsupported { context, kernel: k }
            }
            libc::EBUSY => Error::Busy { context, kernel: k },
            // "Unknown device type" comes back as EINVAL with that ext-ack.
            libc::EINVAL
                if kernel
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains("Unknown device type")) =>
            {
                Error::Unsupported { context, kernel: k }
            }
            _ => Error::Netlink { context, kernel },
        }
    }

    /// The kernel's errno, if this error came from the kernel (or from I/O).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::NotFound { kernel, .. }
            | Error::AlreadyExists { kernel, .. }
            | Error::PermissionDenied { kernel, .. }
            | Error::Unsupported { kernel, .. }
            | Error::Busy { kernel, .. } => kernel.as_ref().map(|k| k.errno),
            Error::Netlink { kernel, .. } => Some(kernel.errno),
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The kernel's extended-ACK text, if any.
    pub fn kernel_message(&self) -> Option<&str> {
        match self {
            Error::NotFound { kernel, .. }
            | Error::AlreadyExists { kernel, .. }
            | Error::PermissionDenied { kernel, .. }
            | Error::Unsupported { kernel, .. }
            | Error::Busy { kernel, .. } => kernel.as_ref().and_then(|k| k.message.as_deref()),
            Error::Netlink { kernel, .. } => kernel.message.as_deref(),
            _ => None,
        }
    }

    /// The operation/object description this error carries.
    pub fn context(&self) -> &str {
        context_of!(self)
    }

    fn context_mut(&mut self) -> &mut String {
        context_of!(self)
    }

    /// Prefix the context with an outer operation ("attach pod-a: create veth").
    pub fn with_context(mut self, outer: impl AsRef<str>) -> Self {
        let c = self.context_mut();
        *c = if c.is_empty() {
            outer.as_ref().to_string()
        } else {
            format!("{}: {}", outer.as_ref(), c)
        };
        self
    }

    /// The cloud API's error code (`RouteLimitExceeded`, …) of an
    /// [`Error::Cloud`].
    pub fn cloud_code(&self) -> Option<&str> {
        match self {
            Error::Cloud { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True for `NotFound` (what CNI DEL treats as success).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

/// A copy of an I/O error: `std::io::Error` is not `Clone`. An OS error is
/// rebuilt from its errno (exact); any other keeps its kind and its text,
/// but not the type of a custom inner error (`get_ref` downcasts of a clone
/// fail). The field stays a plain `std::io::Error`, so code that builds
/// `Error::Io { .. }` directly keeps compiling.
fn clone_io(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None if e.get_ref().is_none() => std::io::Error::from(e.kind()),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

impl Clone for Error {
    fn clone(&self) -> Self {
        match self {
            Error::InvalidArgument { context, reason } => Error::InvalidArgument {
                context: context.clone(),
                reason: reason.clone(),
            },
            Error::NotFound { context, kernel } => Error::NotFound {
                context: context.clone(),
                kernel: kernel.clone(),
            },
            Error::AlreadyExists { context, kernel } => Error::AlreadyExists {
                context: context.clone(),
                kernel: kernel.clone(),
            },
            Error::PermissionDenied { context, kernel } => Error::PermissionDenied {
                context: context.clone(),
                kernel: kernel.clone(),
            },
            Error::Unsupported { context, kernel } => Error::Unsupported {
                context: context.clone(),
                kernel: kernel.clone(),
            },
            Error::Busy { context, kernel } => Error::Busy {
                context: context.clone(),
                kernel: kernel.clone(),
            },
            Error::Netlink { context, kernel } => Error::Netlink {
                context: context.clone(),
                kernel: kernel.clone(),
            },
            Error::Mismatch {
                context,
                differences,
            } => Error::Mismatch {
                context: context.clone(),
                differences: differences.clone(),
            },
            Error::Exhausted { context, reason } => Error::Exhausted {
                context: context.clone(),
                reason: reason.clone(),
            },
            Error::Conflict { context, reason } => Error::Conflict {
                context: context.clone(),
                reason: reason.clone(),
            },
            Error::Corrupt { context, reason } => Error::Corrupt {
                context: context.clone(),
                reason: reason.clone(),
            },
            Error::Timeout { context, reason } => Error::Timeout {
                context: context.clone(),
                reason: reason.clone(),
            },
            Error::Protocol { context, reason } => Error::Protocol {
                context: context.clone(),
                reason: reason.clone(),
            },
            Error::Partial {
                context,
                applied,
                errors,
            } => Error::Partial {
                context: context.clone(),
                applied: applied.clone(),
                errors: errors.clone(),
            },
            Error::Io { context, source } => Error::Io {
                context: context.clone(),
                source: clone_io(source),
            },
            Error::Cloud {
                context,
                code,
                message,
                status,
            } => Error::Cloud {
                context: context.clone(),
                code: code.clone(),
                message: message.clone(),
                status: *status,
            },
            Error::RouteQuota {
                context,
                table,
                held,
                wanted,
                quota,
            } => Error::RouteQuota {
                context: context.clone(),
                table: table.clone(),
                held: *held,
                wanted: *wanted,
                quota: *quota,
            },
        }
    }
}

impl From<ipnet::AddrParseError> for Error {
    fn from(e: ipnet::AddrParseError) -> Self {
        Error::invalid("parse IP prefix", e.to_string())
    }
}

impl From<ipnet::PrefixLenError> for Error {
    fn from(e: ipnet::PrefixLenError) -> Self {
        Error::invalid("IP prefix length", e.to_string())
    }
}

impl From<std::net::AddrParseError> for Error {
    fn from(e: std::net::AddrParseError) -> Self {
        Error::invalid("parse IP address", e.to_string())
    }
}

/// `.context("create veth pair")` on any `Result<_, Error>`.
pub trait ResultExt<T> {
    /// Prefix the error's context with `outer`.
    fn context(self, outer: impl AsRef<str>) -> Result<T>;
    /// Like [`ResultExt::context`] but builds the text only on error.
    fn with_context<S: AsRef<str>>(self, f: impl FnOnce() -> S) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, outer: impl AsRef<str>) -> Result<T> {
        self.map_err(|e| e.with_context(outer))
    }
    fn with_context<S: AsRef<str>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| e.with_context(f()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_device_type_is_unsupported() {
        let e = Error::from_kernel(
            "create link tun0 (ipip)",
            KernelError::new(libc::EOPNOTSUPP, Some("Unknown device type".into())),
        );
        assert!(matches!(e, Error::Unsupported { .. }));
        assert_eq!(e.kernel_message(), Some("Unknown device type"));
        assert!(e.to_string().contains("Unknown device type"), "{e}");
    }

    #[test]
    fn io_permission_errors_are_permission_denied() {
        for errno in [libc::EACCES, libc::EPERM] {
            let e = Error::io(
                "open /var/lib/cnet/ipam",
                std::io::Error::from_raw_os_error(errno),
            );
            assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
            assert_eq!(e.errno(), Some(errno));
            assert_eq!(e.context(), "open /var/lib/cnet/ipam");
        }
        let e = Error::io("x", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(e, Error::Io { .. }));
        assert_eq!(e.errno(), Some(libc::ENOSPC));
    }

    #[test]
    fn clones_keep_kernel_text_and_io_source() {
        use std::error::Error as _;
        let k = Error::from_kernel(
            "add route",
            KernelError::new(libc::EINVAL, Some("Nexthop has invalid gateway".into())),
        );
        let c = k.clone();
        assert_eq!(c.to_string(), k.to_string());
        assert_eq!(c.kernel_message(), Some("Nexthop has invalid gateway"));

        let os = Error::io("read", std::io::Error::from_raw_os_error(libc::EIO));
        let c = os.clone();
        assert_eq!(c.errno(), Some(libc::EIO));
        assert_eq!(c.to_string(), os.to_string());
        assert!(c.source().is_some(), "source() survives the clone");

        let custom = Error::io(
            "etcd",
            std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "refused by 127.0.0.1",
            ),
        );
        let c = custom.clone();
        assert_eq!(c.to_string(), custom.to_string());
        match c {
            Error::Io { source, .. } => {
                assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn context_prefixes() {
        let r: Result<()> = Err(Error::invalid("link name", "empty"));
        let e = r.context("attach pod-a").unwrap_err();
        assert_eq!(e.context(), "attach pod-a: link name");
        assert_eq!(
            e.to_string(),
            "attach pod-a: link name: invalid argument: empty"
        );
    }
}
