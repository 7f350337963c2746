//! Routes between nodes distributed over BGP, the Calico way, with BIRD 2
//! (Debian `bird2`) as the routing daemon: every node announces its pod
//! subnet to its peers and installs what it learns as kernel routes
//! (`proto bird`), so a flat network needs no tunnel and no node needs a
//! shared store of routes. cnet writes BIRD's configuration, runs BIRD in
//! the node's namespace and reads its state over the control socket; it
//! does not speak BGP itself.
//!
//! ```text
//!   BgpConfig (node, underlay, subnet, cluster CIDR, peers, mode, timers)
//!      │ render() ─▶ bird.conf (static blackhole anchor, filters, kernel, one bgp per peer)
//!      ▼
//!   Bird::start(host, DIR, cfg) ─▶ bird -f in the host's namespace, control socket DIR/bird.ctl
//!      ├─ sessions() ─▶ Vec<SessionStatus>  (state, uptime, routes imported)  via Control
//!      ├─ reconfigure(cfg')                   `configure`: unchanged sessions stay up
//!      ├─ stop()  `down`     kill()  SIGKILL    drop: SIGKILL + reap
//!      ▼
//!   kernel: 10.244.2.0/24 via 192.0.2.12 dev eth0 proto bird metric 32
//!           (ipip: via PEER dev cnet.ipip onlink; never touched by Node's reconcile,
//!            which owns protocol 119 only)
//! ```
//!
//! ```no_run
//! use cnet_core::network::bgp::{BgpConfig, BgpPeer, Bird};
//! use cnet_core::Handle;
//!
//! let host = Handle::current()?;
//! let cfg = BgpConfig::new(
//!     "h1",
//!     "192.0.2.11".parse().unwrap(),
//!     "192.0.2.0/24".parse().unwrap(),
//!     "eth0",
//!     Some("10.244.1.0/24".parse().unwrap()),
//!     "10.244.0.0/16".parse().unwrap(),
//! )
//! .peers(vec![BgpPeer::new("h2", "192.0.2.12".parse().unwrap())]);
//! let bird = Bird::start(&host, "/run/cnet/bird", &cfg)?;
//! for s in bird.sessions()? {
//!     println!("{} {} {:?} {} routes", s.protocol, s.state, s.uptime, s.routes_imported);
//! }
//! bird.stop()?;
//! # Ok::<(), cnet_core::Error>(())
//! ```
//!
//! Module map: [`config`] (what BIRD is told, and the file), [`control`]
//! (the control socket's text protocol, typed status), `bird` (the
//! process).

/// The route protocol of the routes BIRD puts in the kernel (`proto bird`,
/// RTPROT_BIRD).
pub const ROUTE_PROTOCOL: u8 = 12;

mod bird;
pub mod config;
pub mod control;

pub use bird::{Bird, BIRD_BIN};
pub use config::{BgpConfig, BgpMode, BgpPeer, BgpTimers, DEFAULT_ASN};
pub use control::{Control, Reply, ReplyLine, SessionState, SessionStatus};
