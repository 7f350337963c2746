//! cnet-core: container networking over netlink.
//!
//! ```text
//!  recipes (attach a container, program a node)              ── later layers
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
pub mod reconcile;
pub mod route;
pub mod sysctl;

pub use error::{Error, KernelError, Result, ResultExt};
pub use handle::Handle;
pub use netns::NetNs;

pub use ipnet::IpNet;

/// The message types of `netlink-packet-route` (`RouteMessage`,
/// `LinkMessage`, `NeighbourMessage`, …) appear in the public API
/// (`message_for`, `message`): re-exported so callers use the exact
/// version cnet-core was built with.
pub use netlink_packet_route;

/// Netlink framing (`NetlinkHeader`, `NLM_F_*` flags) as used by
/// [`netlink::Socket`]; re-exported for the same reason.
pub use netlink_packet_core;

/// Prefix types (`IpNet`, `Ipv4Net`, `Ipv6Net`) used throughout the API.
pub use ipnet;

/// The README's examples are compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
