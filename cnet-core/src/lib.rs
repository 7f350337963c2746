//! cnet-core: the kernel objects of container networking, over netlink,
//! from one synchronous library.
//!
//! ```text
//!  network        container networking: ensure a bridge network, attach / detach /
//!                 check a container; a node's routes to its peers (host-gw, vxlan,
//!                 ipip, cross-subnet)
//!  ─────────────────────────────────────────────────────────────────────────────
//!  ipam           node subnet leases, container addresses (file store; etcd with feature `etcd`)
//!  ─────────────────────────────────────────────────────────────────────────────
//!  link · addr · route · neigh · fdb · sysctl     typed builders and read models,
//!                                                 one `ip` / `bridge` command each;
//!  reconcile                                      ensure with a diff, reconcile by owner
//!  ─────────────────────────────────────────────────────────────────────────────
//!  Handle ── netlink::Socket ── NetNs             one socket per namespace: request/ACK,
//!                                                 dumps (retried when interrupted),
//!                                                 pipelined batches; errno + ext-ACK → Error
//! ```
//!
//! Everything is synchronous. A [`Handle`] owns one rtnetlink socket that a
//! short-lived thread opened inside one network namespace ([`NetNs`]); the
//! calling thread never changes namespace, so the library is safe to call
//! from runtimes that move work between threads (Go through the C ABI).
//! From a handle hang the typed modules: [`Handle::links`] ([`link`]:
//! veth, bridge, VXLAN, IP-in-IP), [`Handle::addrs`] ([`addr`]),
//! [`Handle::routes`] ([`route`]: ECMP, lookups, pipelined batches,
//! reconciliation of the routes one protocol owns), [`Handle::nexthops`]
//! ([`nexthop`]: nexthop objects that routes share by id), [`Handle::rules`]
//! ([`rule`]: policy routing rules, reconciled by protocol and priority), [`Handle::neighbours`]
//! ([`neigh`]), [`Handle::fdb`] ([`fdb`]) and [`Handle::sysctl`]
//! ([`sysctl`]). Reconciles share [`reconcile`]: their report is
//! `#[must_use]`, and [`ReconcileReport::into_result`](reconcile::ReconcileReport::into_result)
//! turns failed items into an error. [`ipam`] allocates subnets and
//! addresses and does no netlink at all.
//!
//! Every fallible call returns [`Error`]: typed variants (`NotFound`,
//! `AlreadyExists`, `Unsupported`, `PermissionDenied`, …) that keep the
//! errno and the kernel's extended-ACK text. The README's tour, compiled
//! as a doc test, shows them together.
//!
//! The message types of `netlink-packet-route` appear in the API
//! (`message_for`, builders' `message`), so that crate is re-exported as
//! [`netlink_packet_route`], with [`netlink_packet_core`] and [`ipnet`].

#![warn(missing_docs)]

pub mod addr;
#[cfg(feature = "aws")]
pub mod aws;
pub mod error;
pub mod fdb;
pub mod handle;
pub mod ipam;
pub mod link;
pub mod nat;
pub mod neigh;
pub mod netlink;
pub mod netns;
pub mod network;
pub mod nexthop;
pub mod reconcile;
pub mod route;
pub mod rule;
pub mod sysctl;
pub mod watch;
pub mod wireguard;

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
