//! Container networking in a few coarse calls: ensure a network on a
//! node, attach / detach / check a container ([`BridgeNetwork`]), and
//! route a node to its peers ([`node`]: host-gw, vxlan, ipip and
//! cross-subnet backends, peer reconciliation). A layer above the typed
//! objects and IPAM; it only calls the layers below, and nothing below
//! calls it. The C ABI exposes exactly these operations, so inputs and
//! results are plain data.
//!
//! ```text
//!   BridgeNetwork::ensure(host, pool, BridgeConfig)     bridge + gateway + ip_forward (verified, never changed)
//!        │
//!        ├─ attach(ContainerNs, id, ifname) ─▶ Attachment ──to_cni_json()──▶ CNI 1.0.0 result
//!        │     open ns ─▶ veth (1 request) ─▶ socket in ns ─▶ allocate ─▶ MAC+up, addr, route (1 batch)
//!        │     └──────────── each step pushed on an undo list, unwound on any error ─────────────┘
//!        ├─ check(ContainerNs, id, ifname) ──▶ Vec<Drift>      (empty: as attach made it)
//!        ├─ repair(watch::Event) ─▶ Option<BridgeRepair>   (bridge deleted: made again, ports put back)
//!        └─ detach(Option<ContainerNs>, id, ifname) ─▶ DetachReport   (gone already is fine)
//!
//!   uses:  link · addr · route (typed objects)   ipam::PoolStore (addresses)   Handle / NetNs (transport)
//! ```
//!
//! ```no_run
//! use cnet_core::ipam::{FileStore, PoolConfig};
//! use cnet_core::network::{BridgeConfig, BridgeNetwork, ContainerNs};
//! use cnet_core::Handle;
//!
//! let subnet = "10.244.1.0/24".parse().unwrap();
//! let pool = FileStore::open("/var/lib/cnet/ipam")?.pool(PoolConfig::new(subnet))?;
//! let host = Handle::current()?;
//! let net = BridgeNetwork::ensure(&host, pool, BridgeConfig::new("cni0", subnet).mtu(1450))?;
//! let ns = ContainerNs::path("/proc/4242/ns/net");
//! let att = net.attach(&ns, "c1", "eth0")?;        // rolled back on failure
//! println!("{}", att.to_cni_json());                // a CNI 1.0.0 result
//! assert!(net.check(&ns, "c1", "eth0")?.is_empty()); // as attach made it
//! net.detach(Some(&ns), "c1", "eth0")?;             // fine if already gone
//! # Ok::<(), cnet_core::Error>(())
//! ```
//!
//! Module map: [`bridge`] (the network and `ensure`), `attach`, `detach`,
//! `check` (the operations, methods of [`BridgeNetwork`]), `bridge_repair`
//! (the bridge and its ports put back from kernel events), [`names`]
//! (derived host-side names and MACs), [`result`] (the attachment and its
//! CNI form), [`drift`] (what check reports), `container` (which
//! namespace), `undo` (the rollback stack), [`node`] (a node's routes to
//! its peers), [`bgp`] (the same routes learnt over BGP from BIRD).

mod attach;
pub mod bgp;
pub mod bridge;
mod bridge_repair;
mod check;
mod container;
mod detach;
pub mod drift;
mod held;
#[cfg(feature = "etcd")]
pub mod member;
pub mod names;
pub mod node;
pub mod result;
mod undo;

pub use attach::AttachOptions;
pub use bgp::{BgpConfig, BgpMode, BgpPeer, Bird, SessionState, SessionStatus};
#[cfg(feature = "failpoints")]
pub use bridge::AttachStep;
pub use bridge::{BridgeConfig, BridgeNetwork};
pub use bridge_repair::BridgeRepair;
pub use container::ContainerNs;
pub use detach::DetachReport;
pub use drift::Drift;
pub use held::{held_subnet, HeldSubnet};
#[cfg(feature = "etcd")]
pub use member::{Happened, KernelPeers, Member, PeerSink};
pub use names::{host_veth_mac, host_veth_name, mac_for_ip, DEFAULT_IFNAME};
pub use node::{
    vtep_mac_for, Backend, Changes, DeviceChange, DriftRepair, Encap, IpIpConfig, Node, NodeConfig,
    Peer, PeerFailure, PeerPath, PeerReport, Repair, VxlanConfig, WireGuardConfig,
    WIREGUARD_KEY_ATTR,
};
pub use result::{
    AttachedRoute, Attachment, CniDns, CniInterface, CniIp, CniResult, CniRoute, Interface,
    CNI_VERSION,
};
