//! What attach returns ([`Attachment`], plain data) and its CNI form
//! ([`CniResult`], the JSON a CNI plugin prints for `ADD`, `cniVersion`
//! 1.0.0).
//!
//! ```text
//!   Attachment ──to_cni_result()──▶ CniResult ──serde──▶ {"cniVersion":"1.0.0",
//!     bridge, host, container            "interfaces":[bridge, host veth, container end],
//!     address, gateway, routes           "ips":[{"address","gateway","interface":2}],
//!                                         "routes":[{"dst":"0.0.0.0/0","gw"}], "dns":{}}
//! ```
//!
//! The interface order is the CNI `bridge` plugin's: the bridge, the host
//! end, the container end (with its `sandbox`); `ips[].interface` indexes
//! that list.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::link::MacAddr;

/// The CNI specification version of [`CniResult`].
pub const CNI_VERSION: &str = "1.0.0";

/// One interface an attachment made or uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Its name (in its namespace).
    pub name: String,
    /// Its index (in its namespace).
    pub index: u32,
    /// Its MAC address.
    pub mac: MacAddr,
    /// The namespace path, for the container end (`None`: the host).
    pub sandbox: Option<PathBuf>,
}

/// A route attach put in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedRoute {
    /// Destination (`0.0.0.0/0`).
    pub dst: IpNet,
    /// Next hop (the bridge's gateway address).
    pub gateway: IpAddr,
}

/// A container attached to a bridge network: what
/// [`BridgeNetwork::attach`](super::BridgeNetwork::attach) made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The container id it was made for.
    pub container_id: String,
    /// The interface name inside the container.
    pub ifname: String,
    /// The bridge (host namespace).
    pub bridge: Interface,
    /// The host end of the veth pair, a port of the bridge.
    pub host: Interface,
    /// The container end, in the container's namespace.
    pub container: Interface,
    /// The container's address with the subnet's prefix (`10.244.1.2/24`).
    pub address: IpNet,
    /// The gateway (the bridge's address).
    pub gateway: IpAddr,
    /// Routes in the container (the default route via the gateway).
    pub routes: Vec<AttachedRoute>,
    /// MTU of both veth ends.
    pub mtu: u32,
    /// The IPAM allocation's generation (see
    /// [`PoolStore::release_generation`](crate::ipam::PoolStore::release_generation)).
    pub generation: u64,
}

impl Attachment {
    /// The CNI result of this attachment (`cniVersion` 1.0.0).
    pub fn to_cni_result(&self) -> CniResult {
        let iface = |i: &Interface| CniInterface {
            name: i.name.clone(),
            mac: i.mac,
            sandbox: i.sandbox.as_ref().map(|p| p.display().to_string()),
        };
        CniResult {
            cni_version: CNI_VERSION.to_string(),
            interfaces: vec![
                iface(&self.bridge),
                iface(&self.host),
                iface(&self.container),
            ],
            ips: vec![CniIp {
                address: self.address,
                gateway: Some(self.gateway),
                interface: Some(2),
            }],
            routes: self
                .routes
                .iter()
                .map(|r| CniRoute {
                    dst: r.dst,
                    gw: Some(r.gateway),
                })
                .collect(),
            dns: CniDns::default(),
        }
    }

    /// [`Attachment::to_cni_result`] as JSON, what a CNI plugin prints on
    /// stdout for `ADD`.
    pub fn to_cni_json(&self) -> String {
        // Serialising these types cannot fail: no maps with non-string
        // keys, no custom serialisers that error.
        serde_json::to_string(&self.to_cni_result()).unwrap_or_default()
    }
}

/// A CNI result (specification 1.0.0, "Success").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    /// `"1.0.0"`.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Interfaces made or used.
    pub interfaces: Vec<CniInterface>,
    /// Addresses assigned.
    pub ips: Vec<CniIp>,
    /// Routes added in the container.
    pub routes: Vec<CniRoute>,
    /// DNS settings (none: an empty object).
    pub dns: CniDns,
}

/// `interfaces[]` of a CNI result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniInterface {
    /// Interface name.
    pub name: String,
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: MacAddr,
    /// The namespace path, for interfaces inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// `ips[]` of a CNI result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniIp {
    /// Address with prefix, `10.244.1.2/24`.
    pub address: IpNet,
    /// Default gateway of the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces` of the interface that has the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// `routes[]` of a CNI result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniRoute {
    /// Destination prefix.
    pub dst: IpNet,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// `dns` of a CNI result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniDns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Attachment {
        let i = |name: &str, index, mac: &str, sandbox: Option<&str>| Interface {
            name: name.into(),
            index,
            mac: mac.parse().unwrap(),
            sandbox: sandbox.map(PathBuf::from),
        };
        Attachment {
            container_id: "c1".into(),
            ifname: "eth0".into(),
            bridge: i("cni0", 3, "0a:58:0a:f4:01:01", None),
            host: i("vethec43057c07a", 4, "02:01:02:03:04:05", None),
            container: i("eth0", 2, "0a:58:0a:f4:01:02", Some("/run/netns/pod-a")),
            address: "10.244.1.2/24".parse().unwrap(),
            gateway: "10.244.1.1".parse().unwrap(),
            routes: vec![AttachedRoute {
                dst: "0.0.0.0/0".parse().unwrap(),
                gateway: "10.244.1.1".parse().unwrap(),
            }],
            mtu: 1450,
            generation: 1,
        }
    }

    #[test]
    fn cni_json_has_the_specified_shape() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_cni_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "cni0", "mac": "0a:58:0a:f4:01:01"},
                    {"name": "vethec43057c07a", "mac": "02:01:02:03:04:05"},
                    {"name": "eth0", "mac": "0a:58:0a:f4:01:02", "sandbox": "/run/netns/pod-a"}
                ],
                "ips": [{"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 2}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
                "dns": {}
            })
        );
        // And it reads back.
        let back: CniResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample().to_cni_result());
    }
}
