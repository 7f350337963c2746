//! The checks of a peer set that need no kernel: subnets that overlap the
//! node's own or each other, families, VTEP MACs. One verdict per peer;
//! `Some(error)` refuses it whole.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;

use ipnet::IpNet;

use super::{Backend, NodeConfig, Peer, PeerPath, Placed};
use crate::error::Error;
use crate::link::MacAddr;
use crate::wireguard::PublicKey;

/// The address range of a prefix, with its family, for overlap checks.
fn span(n: &IpNet) -> (bool, u128, u128) {
    match n {
        IpNet::V4(n) => (
            false,
            u32::from(n.network()).into(),
            u32::from(n.broadcast()).into(),
        ),
        IpNet::V6(n) => (true, n.network().into(), n.broadcast().into()),
    }
}

/// The checks that need no kernel: one verdict per peer (`Some` refuses it).
pub(super) fn check_peers(
    cfg: &NodeConfig,
    backend: &Backend,
    peers: &[Peer],
) -> Vec<Option<Error>> {
    let mut v: Vec<Option<Error>> = (0..peers.len()).map(|_| None).collect();
    let ctx = |p: &Peer| format!("peer {}", p.name);
    let own = span(&cfg.subnet);
    let mut names: HashMap<&str, usize> = HashMap::with_capacity(peers.len());
    for (i, p) in peers.iter().enumerate() {
        let bad = |reason: String| Some(Error::invalid(ctx(p), reason));
        v[i] = if let Some(first) = names.insert(&p.name, i) {
            names.insert(&p.name, first);
            bad(format!("the name is given twice (peers #{first} and #{i})"))
        } else if p.subnet.addr() != p.subnet.network() {
            bad(format!(
                "subnet {} has host bits set (did you mean {}?)",
                p.subnet,
                p.subnet.trunc()
            ))
        } else if p.subnet.addr().is_ipv4() != cfg.subnet.addr().is_ipv4() {
            bad(format!(
                "subnet {} is of another family than this node's {}",
                p.subnet, cfg.subnet
            ))
        } else if p.underlay.is_ipv4() != cfg.underlay_ip.is_ipv4() {
            bad(format!(
                "underlay address {} is of another family than this node's {}",
                p.underlay, cfg.underlay_ip
            ))
        } else if backend.ipip_config().is_some() && !p.subnet.addr().is_ipv4() {
            bad(format!(
                "ipip carries IPv4 only; subnet {} is IPv6",
                p.subnet
            ))
        } else if p.underlay == cfg.underlay_ip {
            Some(Error::Conflict {
                context: ctx(p),
                reason: format!("its underlay address {} is this node's own", p.underlay),
            })
        } else {
            let s = span(&p.subnet);
            (s.0 == own.0 && s.1 <= own.2 && own.1 <= s.2).then(|| Error::Conflict {
                context: ctx(p),
                reason: format!(
                    "its subnet {} overlaps this node's own subnet {}, which is never \
                     routed to a peer (is the lease stale, or the IPAM shared wrongly?)",
                    p.subnet, cfg.subnet
                ),
            })
        };
    }
    // Overlaps between peers: a sweep over the prefixes sorted by start;
    // every peer of an overlapping pair is refused (which one is right
    // cannot be known here).
    let mut order: Vec<(bool, u128, u128, usize)> = peers
        .iter()
        .enumerate()
        .filter(|(i, _)| v[*i].is_none())
        .map(|(i, p)| {
            let (f, a, b) = span(&p.subnet);
            (f, a, b, i)
        })
        .collect();
    order.sort_unstable();
    let mut clash: Vec<(usize, usize)> = Vec::new();
    let mut holder: Option<(bool, u128, usize)> = None;
    for &(f, a, b, i) in &order {
        match holder {
            Some((hf, he, h)) if hf == f && a <= he => {
                clash.push((i, h));
                if b > he {
                    holder = Some((f, b, i));
                }
            }
            _ => holder = Some((f, b, i)),
        }
    }
    for (i, h) in clash {
        for (x, y) in [(i, h), (h, i)] {
            if v[x].is_none() {
                v[x] = Some(Error::Conflict {
                    context: ctx(&peers[x]),
                    reason: format!(
                        "its subnet {} overlaps peer {}'s subnet {}; neither is programmed \
                         until one of them goes",
                        peers[x].subnet, peers[y].name, peers[y].subnet
                    ),
                });
            }
        }
    }
    v
}

/// What a backend needs of every peer it reaches: an identity (a VTEP
/// MAC, a WireGuard key) that each has, that is valid, that is not this
/// node's and that no two peers share.
struct PeerId<K> {
    /// The peers it concerns.
    path: PeerPath,
    /// What the identity is called ("VTEP MAC").
    what: &'static str,
    /// The peer's identity.
    of: fn(&Peer) -> Option<K>,
    /// Why a peer without one is refused.
    missing: String,
    /// Why an identity is unusable, if it is ("multicast or all-zero").
    unusable: fn(&K) -> Option<&'static str>,
    /// Said after "… is this node's own".
    own_hint: &'static str,
}

/// Refuse each peer on `id.path` whose identity is missing, unusable,
/// this node's (`own`) or another peer's (both are refused).
fn check_ids<K: Copy + Eq + Hash + Display>(
    id: &PeerId<K>,
    own: Option<K>,
    placed: &[Placed<'_>],
    v: &mut [Option<Error>],
) {
    let what = id.what;
    let mut seen: HashMap<K, &Placed<'_>> = HashMap::new();
    for p in placed.iter().filter(|p| p.path == id.path) {
        let ctx = format!("peer {}", p.peer.name);
        let Some(k) = (id.of)(p.peer) else {
            v[p.idx] = Some(Error::invalid(ctx, id.missing.clone()));
            continue;
        };
        if let Some(why) = (id.unusable)(&k) {
            v[p.idx] = Some(Error::invalid(ctx, format!("{what} {k} is {why}")));
        } else if Some(k) == own {
            v[p.idx] = Some(Error::Conflict {
                context: ctx,
                reason: format!("its {what} {k} is this node's own{}", id.own_hint),
            });
        } else if let Some(other) = seen.insert(k, p) {
            for (x, y) in [(p, other), (other, p)] {
                v[x.idx] = Some(Error::Conflict {
                    context: format!("peer {}", x.peer.name),
                    reason: format!(
                        "its {what} {k} is also peer {}'s; neither is programmed",
                        y.peer.name
                    ),
                });
            }
        }
    }
}

/// The peers reached over VXLAN need a VTEP MAC: present, unicast, not
/// this node's, not another peer's.
pub(super) fn check_macs(own: Option<MacAddr>, placed: &[Placed<'_>], v: &mut [Option<Error>]) {
    let id = PeerId {
        path: PeerPath::Vxlan,
        what: "VTEP MAC",
        of: |p| p.vtep_mac,
        missing: "it has no VTEP MAC, which vxlan needs (its lease publishes none: does it \
                  run a vxlan backend?)"
            .into(),
        unusable: |m| (!m.is_valid_unicast()).then_some("multicast or all-zero"),
        own_hint: "",
    };
    check_ids(&id, own, placed, v);
}

/// The peers reached over WireGuard need a public key: present, not this
/// node's, not another peer's (WireGuard tells peers apart by key alone).
pub(super) fn check_wireguard_keys(
    own: Option<PublicKey>,
    placed: &[Placed<'_>],
    v: &mut [Option<Error>],
) {
    let id = PeerId {
        path: PeerPath::WireGuard,
        what: "WireGuard public key",
        of: |p| p.wireguard_key,
        missing: format!(
            "it has no WireGuard public key, which the wireguard backend needs (its lease \
             publishes no {}: does it run the wireguard backend?)",
            super::WIREGUARD_KEY_ATTR
        ),
        unusable: |_| None,
        own_hint: " (a copied key file?)",
    };
    check_ids(&id, own, placed, v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::node::vtep_mac_for;

    fn cfg() -> NodeConfig {
        NodeConfig::new(
            "h1",
            "10.244.1.0/24".parse().unwrap(),
            "eth0",
            "192.0.2.11".parse().unwrap(),
        )
    }

    fn peer(name: &str, subnet: &str, underlay: &str) -> Peer {
        Peer::new(name, subnet.parse().unwrap(), underlay.parse().unwrap())
            .with_vtep_mac(vtep_mac_for(name))
    }

    fn refused(v: &[Option<Error>]) -> Vec<usize> {
        v.iter()
            .enumerate()
            .filter(|(_, e)| e.is_some())
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn overlapping_and_own_subnets_are_refused_the_rest_pass() {
        let peers = [
            peer("h2", "10.244.2.0/24", "192.0.2.12"),
            peer("own", "10.244.1.128/25", "192.0.2.99"),
            peer("wide", "10.244.4.0/23", "192.0.2.14"),
            peer("in-wide", "10.244.5.0/24", "192.0.2.15"),
            peer("h6", "10.244.6.0/24", "192.0.2.16"),
            peer("h6", "10.244.7.0/24", "192.0.2.17"),
            peer("bits", "10.244.8.1/24", "192.0.2.18"),
            peer("me", "10.244.9.0/24", "192.0.2.11"),
            peer("v6", "fd00::/64", "192.0.2.19"),
        ];
        let v = check_peers(&cfg(), &Backend::vxlan(), &peers);
        assert_eq!(refused(&v), vec![1, 2, 3, 5, 6, 7, 8], "{v:?}");
        let text = |i: usize| v[i].as_ref().unwrap().to_string();
        assert!(
            text(1).contains("overlaps this node's own subnet 10.244.1.0/24"),
            "{}",
            text(1)
        );
        assert!(text(2).contains("in-wide"), "{}", text(2));
        assert!(text(3).contains("wide"), "{}", text(3));
        assert!(text(5).contains("given twice"), "{}", text(5));
        assert!(text(6).contains("10.244.8.0/24"), "{}", text(6));
        assert!(text(7).contains("this node's own"), "{}", text(7));
        assert!(matches!(v[2], Some(Error::Conflict { .. })));
    }

    #[test]
    fn nested_overlaps_refuse_every_peer_involved() {
        let peers = [
            peer("a", "172.16.0.0/12", "192.0.2.2"),
            peer("b", "172.17.0.0/16", "192.0.2.3"),
            peer("c", "172.18.0.0/16", "192.0.2.4"),
            peer("d", "172.32.0.0/16", "192.0.2.5"),
        ];
        let v = check_peers(&cfg(), &Backend::HostGw, &peers);
        assert_eq!(refused(&v), vec![0, 1, 2]);
    }

    #[test]
    fn vxlan_peers_need_distinct_unicast_macs() {
        let peers = [
            peer("a", "10.244.2.0/24", "192.0.2.2"),
            Peer::new(
                "b",
                "10.244.3.0/24".parse().unwrap(),
                "192.0.2.3".parse().unwrap(),
            ),
            peer("c", "10.244.4.0/24", "192.0.2.4").with_vtep_mac(vtep_mac_for("a")),
            peer("d", "10.244.5.0/24", "192.0.2.5").with_vtep_mac(vtep_mac_for("h1")),
            peer("e", "10.244.6.0/24", "192.0.2.6"),
        ];
        let placed: Vec<Placed<'_>> = peers
            .iter()
            .enumerate()
            .map(|(idx, peer)| Placed {
                idx,
                peer,
                path: PeerPath::Vxlan,
                oif: None,
            })
            .collect();
        let mut v: Vec<Option<Error>> = (0..peers.len()).map(|_| None).collect();
        check_macs(Some(vtep_mac_for("h1")), &placed, &mut v);
        assert_eq!(refused(&v), vec![0, 1, 2, 3]);
        assert!(v[1].as_ref().unwrap().to_string().contains("no VTEP MAC"));
        assert!(v[3]
            .as_ref()
            .unwrap()
            .to_string()
            .contains("this node's own"));
    }
}
