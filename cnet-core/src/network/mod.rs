//! Container networking: the recipes built on the typed objects.
//!
//! A node of a cluster holds one pod subnet and routes to every other node's
//! subnet ([`node`]: host-gw, vxlan, ipip and cross-subnet backends, peer
//! reconciliation). Each recipe is a few coarse calls over plain data, so the
//! C ABI can mirror it one to one.

pub mod node;

pub use node::{
    vtep_mac_for, Backend, Changes, DeviceChange, Encap, IpIpConfig, Node, NodeConfig, Peer,
    PeerFailure, PeerPath, PeerReport, VxlanConfig,
};
