//! Layer 2: crossing a veth into its peer's namespace, arriving on a
//! bridge port, and the bridge's forwarding decision (FDB, or the port
//! whose far end owns the destination when the frame would be flooded).

use cnet_core::link::{Link, LinkKind};
use cnet_core::Result;
use std::net::IpAddr;

use super::path::{Pkt, Step, Tracer, L2};
use super::{HopKind, Verdict};

/// `BR_STATE_FORWARDING` (linux/if_bridge.h).
const BR_STATE_FORWARDING: u8 = 3;

/// A bridge port's STP state in `bridge link` words.
fn port_state_name(s: u8) -> String {
    match s {
        0 => "disabled".into(),
        1 => "listening".into(),
        2 => "learning".into(),
        3 => "forwarding".into(),
        4 => "blocking".into(),
        n => format!("{n}"),
    }
}

impl Tracer {
    /// Cross device `out` of namespace `ns` (a veth, a bridge, or the edge of the machine).
    pub(super) fn cross(&mut self, ns: usize, out: Link, l2: L2, pkt: &Pkt) -> Result<Step> {
        let label = self.w.label(ns);
        match out.kind {
            LinkKind::Bridge => self.bridge_forward(ns, &out, l2, pkt, None),
            LinkKind::Veth => {
                let Some((pns, peer)) = self.w.veth_peer(ns, &out)? else {
                    self.hop(
                        ns,
                        HopKind::Exit,
                        format!("veth {} has no visible peer", out.name),
                        vec![],
                        Some((&out, ns)),
                        pkt,
                    );
                    return Ok(Step::Done(self.broken(
                        ns,
                        "veth_peer_missing",
                        &format!(
                            "the peer of {} in {label} is in no namespace this trace can see (named in /run/netns, held by a process, or bind-mounted by a runtime)",
                            out.name
                        ),
                    )));
                };
                let plabel = self.w.label(pns);
                self.hop(
                    ns,
                    HopKind::Veth,
                    format!("veth {} → {} in {plabel}", out.name, peer.name),
                    vec![match out.link_netnsid {
                        Some(id) => format!("peer index {} (link-netnsid {id})", peer.index),
                        None => format!("peer index {} (same namespace)", peer.index),
                    }],
                    Some((&peer, pns)),
                    pkt,
                );
                if !peer.is_up() {
                    return Ok(Step::Done(self.broken(
                        pns,
                        "peer_down",
                        &format!("veth peer {} in {plabel} is down", peer.name),
                    )));
                }
                Ok(Step::Arrive {
                    ns: pns,
                    dev: peer,
                    l2,
                })
            }
            _ => {
                let n = self.hop(
                    ns,
                    HopKind::Exit,
                    format!(
                        "leaves this machine by {} ({})",
                        out.name,
                        if out.kind.as_str().is_empty() {
                            "device"
                        } else {
                            out.kind.as_str()
                        }
                    ),
                    vec![],
                    Some((&out, ns)),
                    pkt,
                );
                Ok(Step::Done(Verdict {
                    ok: true,
                    model_ok: true,
                    agreement: None,
                    outcome: "leaves_machine",
                    netns: label.clone(),
                    hop: n,
                    message: format!("the path leaves this machine by {} in {label}", out.name),
                }))
            }
        }
    }

    /// A frame enters namespace `ns` on `dev`.
    pub(super) fn arrive(&mut self, ns: usize, dev: Link, l2: L2, pkt: &Pkt) -> Result<Step> {
        if let Some(m) = dev.master {
            if let Some(br) = self.w.link_by_index(ns, m)? {
                if br.kind == LinkKind::Bridge {
                    // Frames for the bridge's own MAC (or, before ARP, for
                    // an address it holds) go up to its IP stack.
                    let ours = match l2.mac {
                        Some(mac) => Some(mac) == br.mac,
                        None => self.holds(ns, br.index, l2.ip)?,
                    };
                    if ours {
                        let label = self.w.label(ns);
                        if !br.is_up() {
                            return Ok(Step::Done(self.broken(
                                ns,
                                "bridge_down",
                                &format!("bridge {} in {label} is down: frames arriving on its port {} are dropped", br.name, dev.name),
                            )));
                        }
                        if let Some(st) = dev.port_state.filter(|s| *s != BR_STATE_FORWARDING) {
                            return Ok(Step::Done(self.broken(
                                ns,
                                "port_blocked",
                                &format!("bridge port {} of {} in {label} is in STP state {}: frames arriving on it are dropped", dev.name, br.name, port_state_name(st)),
                            )));
                        }
                        return Ok(Step::Route {
                            ns,
                            iif: Some(br.name),
                        });
                    }
                    return self.bridge_forward(ns, &br, l2, pkt, Some(dev.index));
                }
            }
        }
        Ok(Step::Route {
            ns,
            iif: Some(dev.name),
        })
    }

    /// Whether device `index` of namespace `ns` holds address `ip`.
    pub(super) fn holds(&mut self, ns: usize, index: u32, ip: IpAddr) -> Result<bool> {
        Ok(self
            .w
            .addrs(ns)?
            .iter()
            .any(|a| a.index == index && a.local.addr() == ip))
    }

    /// Whether the far end of bridge port `port` (namespace `ns`) is where a
    /// frame for `l2` belongs: the device with that MAC (or, before ARP,
    /// holding that IP), possibly behind another bridge.
    pub(super) fn leads_to(
        &mut self,
        ns: usize,
        port: &Link,
        l2: &L2,
        depth: usize,
    ) -> Result<bool> {
        if port.kind != LinkKind::Veth || depth > 4 {
            return Ok(false);
        }
        let Some((fns, far)) = self.w.veth_peer(ns, port)? else {
            return Ok(false);
        };
        let owns = |t: &mut Self, dev: &Link| -> Result<bool> {
            Ok(match l2.mac {
                Some(m) => dev.mac == Some(m),
                None => t.holds(fns, dev.index, l2.ip)?,
            })
        };
        if owns(self, &far)? {
            return Ok(true);
        }
        let Some(master) = far.master else {
            return Ok(false);
        };
        let Some(br) = self.w.link_by_index(fns, master)? else {
            return Ok(false);
        };
        if owns(self, &br)? {
            return Ok(true);
        }
        let others: Vec<Link> = self
            .w
            .links(fns)?
            .iter()
            .filter(|p| p.master == Some(master) && p.index != far.index)
            .cloned()
            .collect();
        for p in others {
            if self.leads_to(fns, &p, l2, depth + 1)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Bridge `br` forwards a frame for `l2` (from port `in_port`, or sent by the bridge itself).
    pub(super) fn bridge_forward(
        &mut self,
        ns: usize,
        br: &Link,
        l2: L2,
        pkt: &Pkt,
        in_port: Option<u32>,
    ) -> Result<Step> {
        let label = self.w.label(ns);
        let ports: Vec<Link> = self
            .w
            .links(ns)?
            .iter()
            .filter(|l| l.master == Some(br.index) && Some(l.index) != in_port)
            .cloned()
            .collect();
        let mut learnt = None;
        if let Some(mac) = l2.mac {
            let entries = self.w.h(ns)?.fdb().list_bridge(&br.name)?;
            learnt = entries.into_iter().find_map(|e| {
                let port = ports.iter().find(|p| p.index == e.index)?;
                (e.mac == mac).then(|| (port.clone(), e.state))
            });
        }
        let target = match l2.mac {
            Some(m) => m.to_string(),
            None => format!("the owner of {}", l2.ip),
        };
        let (port, how) = match learnt {
            Some((p, state)) => (
                Some(p),
                format!("fdb {target} → port (state {})", state.as_str()),
            ),
            None => {
                // Flooded: the port whose far end is the destination is where it goes.
                let mut found = None;
                for p in &ports {
                    if self.leads_to(ns, p, &l2, 0)? {
                        found = Some(p.clone());
                        break;
                    }
                }
                let why = match l2.mac {
                    Some(_) => format!("{target} not in the FDB: flooded to all ports"),
                    None => format!(
                        "MAC of {} not resolved yet: {} flooded to all ports",
                        l2.ip,
                        if l2.ip.is_ipv4() {
                            "ARP is"
                        } else {
                            "neighbour solicitations are"
                        }
                    ),
                };
                (found, why)
            }
        };
        let Some(port) = port else {
            // Nobody has it, or its owner is behind a port whose far end
            // is in a namespace this trace cannot see.
            let mut unseen = Vec::new();
            for p in &ports {
                if p.kind == LinkKind::Veth && self.w.veth_peer(ns, p)?.is_none() {
                    unseen.push(p.name.clone());
                }
            }
            self.hop(
                ns,
                HopKind::Bridge,
                format!("bridge {}: no port leads to {target}", br.name),
                vec![how],
                None,
                pkt,
            );
            let msg = if unseen.is_empty() {
                format!(
                    "no port of bridge {} in {label} leads to {target}: nothing behind its ports has it",
                    br.name
                )
            } else {
                format!(
                    "no port of bridge {} in {label} that this trace can see leads to {target}; the far ends of {} are in namespaces it cannot see (the owner may be there)",
                    br.name,
                    unseen.join(", ")
                )
            };
            return Ok(Step::Done(self.broken(ns, "bridge_no_port", &msg)));
        };
        self.hop(
            ns,
            HopKind::Bridge,
            format!("bridge {} → port {}", br.name, port.name),
            vec![how],
            Some((&port, ns)),
            pkt,
        );
        if !br.is_up() {
            return Ok(Step::Done(self.broken(
                ns,
                "bridge_down",
                &format!(
                    "bridge {} in {label} is down: it forwards nothing (the kernel disables all its ports)",
                    br.name
                ),
            )));
        }
        if let Some(i) = in_port {
            if let Some(p) = self.w.link_by_index(ns, i)? {
                if let Some(st) = p.port_state.filter(|s| *s != BR_STATE_FORWARDING) {
                    return Ok(Step::Done(self.broken(
                        ns,
                        "port_blocked",
                        &format!(
                            "bridge port {} of {} in {label} is in STP state {}: frames arriving on it are not forwarded",
                            p.name,
                            br.name,
                            port_state_name(st)
                        ),
                    )));
                }
            }
        }
        if !port.is_up() {
            return Ok(Step::Done(self.broken(
                ns,
                "link_down",
                &format!("bridge port {} in {label} is down", port.name),
            )));
        }
        // A port without carrier (its veth peer down) is disabled by the
        // kernel for that reason: the veth hop names the cause.
        let no_carrier = !port.has_carrier();
        if let Some(st) = port
            .port_state
            .filter(|s| *s != BR_STATE_FORWARDING && !(*s == 0 && no_carrier))
        {
            return Ok(Step::Done(self.broken(
                ns,
                "port_blocked",
                &format!(
                    "bridge port {} of {} in {label} is in STP state {}: the bridge sends nothing out of it",
                    port.name,
                    br.name,
                    port_state_name(st)
                ),
            )));
        }
        self.cross(ns, port, l2, pkt)
    }
}
