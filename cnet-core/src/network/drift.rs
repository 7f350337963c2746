//! How a container's live state differs from what attach made: the
//! answer of [`BridgeNetwork::check`](super::BridgeNetwork::check), one
//! [`Drift`] per difference.
//!
//! ```text
//!   observe (read only)                       compare with what attach makes
//!   host ns:  bridge, vethXXXX ─────────────▶ BridgeDown, HostLinkOffBridge, HostLinkDown, Mtu …
//!   container ns: eth0, addresses, routes ──▶ ContainerLinkMissing, AddressMissing, DefaultRoute…
//!   pool:     allocation of (id, ifname) ───▶ AllocationMissing
//! ```

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One difference between a container's live network state and what
/// attach made. Serialised with a `"kind"` tag (`{"kind":
/// "host_link_down", "name": "veth…"}`).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Drift {
    /// The network's bridge is gone.
    BridgeMissing {
        /// Bridge name.
        bridge: String,
    },
    /// The bridge is administratively down.
    BridgeDown {
        /// Bridge name.
        bridge: String,
    },
    /// The bridge lacks its gateway address.
    GatewayMissing {
        /// Bridge name.
        bridge: String,
        /// The gateway with prefix.
        want: IpNet,
    },
    /// The container's namespace could not be opened.
    NamespaceMissing {
        /// The namespace as given.
        netns: String,
        /// Why (the error).
        reason: String,
    },
    /// No link has the host-side name.
    HostLinkMissing {
        /// The derived host-side name.
        name: String,
    },
    /// A link has the host-side name but is not this attachment's (another
    /// kind, another MAC).
    HostLinkForeign {
        /// The derived host-side name.
        name: String,
        /// What differs.
        reason: String,
    },
    /// The host end is not a port of the network's bridge.
    HostLinkOffBridge {
        /// The host-side name.
        name: String,
        /// The master it has, by name (or index when unnamed), if any.
        master: Option<String>,
        /// The bridge it should be on.
        want: String,
    },
    /// The host end is administratively down.
    HostLinkDown {
        /// The host-side name.
        name: String,
    },
    /// The container interface is gone.
    ContainerLinkMissing {
        /// Interface name in the container.
        ifname: String,
    },
    /// The container interface is administratively down.
    ContainerLinkDown {
        /// Interface name in the container.
        ifname: String,
    },
    /// The host end and the container interface are not the two ends of
    /// one veth pair.
    NotPeers {
        /// The host-side name.
        host: String,
        /// Interface name in the container.
        ifname: String,
    },
    /// A link's MTU differs from the network's.
    Mtu {
        /// The link (host-side name or container interface).
        link: String,
        /// Its MTU.
        have: u32,
        /// The network's.
        want: u32,
    },
    /// The container interface lacks its address.
    AddressMissing {
        /// Interface name in the container.
        ifname: String,
        /// The allocated address with prefix.
        want: IpNet,
    },
    /// The container interface has an address of the network's family that
    /// attach did not put there.
    AddressUnexpected {
        /// Interface name in the container.
        ifname: String,
        /// The address found.
        have: IpNet,
    },
    /// The container has no default route.
    DefaultRouteMissing {
        /// The gateway it should go through.
        want_via: IpAddr,
    },
    /// The container's default route goes elsewhere.
    DefaultRouteWrong {
        /// Its gateway.
        have_via: Option<IpAddr>,
        /// Its device index in the container (`None`: none).
        have_dev: Option<u32>,
        /// The gateway it should go through.
        want_via: IpAddr,
    },
    /// The pool holds no address for `(container id, ifname)`.
    AllocationMissing {
        /// Container id.
        container_id: String,
        /// Interface name.
        ifname: String,
    },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::BridgeMissing { bridge } => write!(f, "bridge {bridge} is missing"),
            Drift::BridgeDown { bridge } => write!(f, "bridge {bridge} is down"),
            Drift::GatewayMissing { bridge, want } => {
                write!(f, "bridge {bridge} lacks its gateway address {want}")
            }
            Drift::NamespaceMissing { netns, reason } => {
                write!(f, "namespace {netns} cannot be opened: {reason}")
            }
            Drift::HostLinkMissing { name } => write!(f, "host end {name} is missing"),
            Drift::HostLinkForeign { name, reason } => {
                write!(f, "{name} is not this attachment's link: {reason}")
            }
            Drift::HostLinkOffBridge { name, master, want } => match master {
                Some(m) => write!(f, "host end {name} is on {m}, not on bridge {want}"),
                None => write!(f, "host end {name} is on no bridge, not on {want}"),
            },
            Drift::HostLinkDown { name } => write!(f, "host end {name} is down"),
            Drift::ContainerLinkMissing { ifname } => {
                write!(f, "container interface {ifname} is missing")
            }
            Drift::ContainerLinkDown { ifname } => {
                write!(f, "container interface {ifname} is down")
            }
            Drift::NotPeers { host, ifname } => {
                write!(f, "{host} and container {ifname} are not one veth pair")
            }
            Drift::Mtu { link, have, want } => {
                write!(f, "MTU of {link}: have {have}, want {want}")
            }
            Drift::AddressMissing { ifname, want } => {
                write!(f, "container {ifname} lacks address {want}")
            }
            Drift::AddressUnexpected { ifname, have } => {
                write!(f, "container {ifname} has unexpected address {have}")
            }
            Drift::DefaultRouteMissing { want_via } => {
                write!(f, "container has no default route (want via {want_via})")
            }
            Drift::DefaultRouteWrong {
                have_via,
                have_dev,
                want_via,
            } => {
                write!(f, "container's default route goes ")?;
                match have_via {
                    Some(v) => write!(f, "via {v}")?,
                    None => write!(f, "via no gateway")?,
                }
                if let Some(d) = have_dev {
                    write!(f, " dev #{d}")?;
                }
                write!(f, ", want via {want_via}")
            }
            Drift::AllocationMissing {
                container_id,
                ifname,
            } => write!(f, "the pool holds no address for {container_id}/{ifname}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_a_kind_tag_and_reads_as_text() {
        let d = Drift::Mtu {
            link: "eth0".into(),
            have: 1500,
            want: 1450,
        };
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({"kind": "mtu", "link": "eth0", "have": 1500, "want": 1450})
        );
        assert_eq!(d.to_string(), "MTU of eth0: have 1500, want 1450");
        let d = Drift::HostLinkDown {
            name: "vethx".into(),
        };
        assert_eq!(serde_json::to_value(&d).unwrap()["kind"], "host_link_down");
    }
}
