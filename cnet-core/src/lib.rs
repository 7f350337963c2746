//! cnet-core: container networking over netlink.
//!
//! ```text
//!  network: ensure a bridge network, attach/detach/check      ── container networking
//!  typed objects: link · addr · route · neigh · fdb · sysctl  ── builders + read models
//!  Handle: one rtnetlink socket bound to one NetNs            ── netlink, netns
//! ```
//!
//! Everything is synchronous. A [`Handle`] owns one netlink socket that was
//! opened inside one network namespace by a short-lived thread; the calling
//! thread never changes namespace.

pub mod addr;
pub mod error;
pub mod fdb;
mod fxhash;
pub mod handle;
pub mod ipam;
pub mod link;
pub mod neigh;
pub mod netlink;
pub mod netns;
pub mod network;
pub mod route;
pub mod sysctl;

pub use error::{Error, KernelError, Result, ResultExt};
pub use handle::Handle;
pub use netns::NetNs;

pub use ipnet::IpNet;

/// The README's examples are compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
