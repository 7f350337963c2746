//! The proof: capture on every interface of the explained path while one
//! probe is sent from the source namespace.

use std::collections::HashMap;
use std::time::Instant;

use cnet_core::Result;
use serde::Serialize;

use super::{Request, Trace};
use crate::probe::Proto;

/// Per-hop capture result.
#[derive(Debug, Clone, Serialize)]
pub struct HopCapture {
    /// Hop number.
    pub hop: usize,
    /// Namespace.
    pub netns: String,
    /// Interface.
    pub ifname: String,
    /// The probe was seen there.
    pub seen: bool,
    /// The reply was seen there.
    pub reply_seen: bool,
    /// Decoded layers of the first probe frame seen.
    pub frame: Vec<crate::wire::Layer>,
}

/// The proof: capture on every interface of the path while a probe is sent.
#[derive(Debug, Clone, Serialize)]
pub struct Proof {
    /// One entry per hop with an interface.
    pub hops: Vec<HopCapture>,
    /// A reply reached the source.
    pub replied: bool,
    /// Round trip in microseconds.
    pub rtt_us: Option<u128>,
    /// Last hop where the probe was seen.
    pub last_seen_hop: Option<usize>,
    /// Time spent, in microseconds.
    pub elapsed_us: u128,
    /// The source refused to send the probe (its kernel's words).
    pub send_error: Option<String>,
}

impl Proof {
    /// The probe was seen on the last interface of the path.
    pub fn reached_end(&self) -> bool {
        self.hops.last().is_some_and(|h| h.seen)
    }
}

/// Send a probe along an explained path and watch every interface on it.
pub fn prove(req: &Request, t: &Trace, timeout: std::time::Duration) -> Result<Proof> {
    let t0 = Instant::now();
    let mut targets = Vec::new();
    let mut by_hop = Vec::new();
    let mut seen_ifaces: HashMap<(usize, String), usize> = HashMap::new();
    for h in &t.hops {
        if let Some(i) = &h.iface {
            let key = (i.ns_idx, i.ifname.clone());
            let ti = *seen_ifaces.entry(key).or_insert_with(|| {
                targets.push(crate::capture::Target {
                    ns: t.namespaces[i.ns_idx].clone(),
                    ns_label: i.netns.clone(),
                    ifname: i.ifname.clone(),
                    l3: i.l3,
                });
                targets.len() - 1
            });
            by_hop.push((h.n, ti, i.clone()));
        }
    }
    let token = crate::probe::token();
    // The source the model found, if it is of the destination's family.
    let src = t.src.filter(|s| s.is_ipv4() == req.dst.is_ipv4());
    let cap = crate::capture::Capture::start(
        &targets,
        &token,
        timeout + std::time::Duration::from_millis(200),
    )?;
    let outcome = crate::probe::send(
        &req.from, src, req.dst, req.proto, req.port, &token, timeout,
    );
    if req.proto != Proto::Icmp {
        std::thread::sleep(std::time::Duration::from_millis(100));
    } else {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let sightings = cap.finish();
    let outcome = outcome?;
    let mut hops = Vec::new();
    let mut last_seen_hop = None;
    for (n, ti, iface) in by_hop {
        let mine: Vec<&crate::capture::Sighting> =
            sightings.iter().filter(|s| s.target == ti).collect();
        let is_reply = |s: &&crate::capture::Sighting| {
            s.frame.layers.iter().any(|l| {
                matches!(
                    l,
                    crate::wire::Layer::Icmp { icmp_type: 0, .. }
                        | crate::wire::Layer::Icmpv6 { icmp_type: 129, .. }
                )
            })
        };
        let request: Vec<&&crate::capture::Sighting> =
            mine.iter().filter(|s| !is_reply(s)).collect();
        let seen = !request.is_empty();
        if seen {
            last_seen_hop = Some(n);
        }
        hops.push(HopCapture {
            hop: n,
            netns: iface.netns,
            ifname: iface.ifname,
            seen,
            reply_seen: mine.iter().any(is_reply),
            frame: request
                .first()
                .map(|s| s.frame.layers.clone())
                .unwrap_or_default(),
        });
    }
    Ok(Proof {
        hops,
        replied: outcome.replied,
        rtt_us: outcome.rtt.map(|d| d.as_micros()),
        last_seen_hop,
        elapsed_us: t0.elapsed().as_micros(),
        send_error: outcome.send_error,
    })
}

/// Combine the model and the proof into one verdict, in place: the capture
/// overrules the tables where they disagree, and the disagreement is itself
/// a finding.
///
/// | model  | capture                          | verdict                                   |
/// |--------|----------------------------------|-------------------------------------------|
/// | ok     | reply (ICMP) / seen at the end   | ok, `confirmed`                           |
/// | ok     | lost between hops N and M        | broken at M, `vanished` (finding)         |
/// | ok     | seen at the end, no reply        | broken, `no_reply` (finding)              |
/// | broken | reply came back                  | ok, `contradicted` (finding, warning)     |
/// | broken | no reply                         | broken, `confirmed`                       |
pub fn conclude(t: &mut Trace, p: &Proof, proto: Proto) {
    let worked = p.replied || (proto != Proto::Icmp && p.reached_end() && p.send_error.is_none());
    let v = &mut t.verdict;
    match (v.model_ok, worked) {
        (true, true) | (false, false) => v.agreement = Some("confirmed"),
        (false, true) => {
            let was = v.message.clone();
            v.ok = true;
            v.agreement = Some("contradicted");
            v.outcome = "delivered";
            v.message = format!(
                "the reply came back, although the tables predicted a break ({was}): the model is wrong here, or the fault comes and goes"
            );
            let hop = v.hop.max(1);
            t.findings.push(super::Finding {
                hop,
                severity: super::Severity::Warning,
                code: "model_contradicted",
                message: v.message.clone(),
            });
        }
        (true, false) => {
            let first_unseen = p
                .hops
                .iter()
                .find(|c| !c.seen && p.last_seen_hop.is_none_or(|l| c.hop > l));
            let (code, hop, message) = match (first_unseen, p.last_seen_hop) {
                _ if p.send_error.is_some() => (
                    "vanished",
                    1,
                    format!(
                        "the source refused to send the probe ({}) although the tables show a path",
                        p.send_error.clone().unwrap_or_default()
                    ),
                ),
                (Some(c), Some(l)) => {
                    let last = p.hops.iter().find(|h| h.hop == l);
                    (
                        "vanished",
                        c.hop,
                        format!(
                            "the probe was last seen at hop {l}{} and not at hop {} ({} in {}); the tables show no reason: look at what the model does not see (firewall rules, qdiscs, eBPF, a NIC)",
                            last.map(|h| format!(" ({} in {})", h.ifname, h.netns)).unwrap_or_default(),
                            c.hop,
                            c.ifname,
                            c.netns
                        ),
                    )
                }
                (Some(c), None) => (
                    "vanished",
                    c.hop,
                    format!(
                        "the probe was not seen even at hop {} ({} in {}); the tables show no reason",
                        c.hop, c.ifname, c.netns
                    ),
                ),
                (None, _) => {
                    let back = p.hops.iter().rev().find(|h| h.reply_seen);
                    (
                        "no_reply",
                        t.hops.len().max(1),
                        match (&v.outcome, back) {
                            (&"leaves_machine", _) => "the probe left this machine and no reply came back".to_string(),
                            (_, Some(b)) => format!(
                                "the probe reached the end of the path and a reply was seen on its way back as far as hop {} ({} in {}), but never reached the source",
                                b.hop, b.ifname, b.netns
                            ),
                            (_, None) => "the probe reached the end of the path but no reply came back (the destination did not answer, or the reply took another way)".to_string(),
                        },
                    )
                }
            };
            v.ok = false;
            v.agreement = Some(code);
            v.outcome = "broken";
            v.hop = hop;
            if let Some(h) = t.hops.get(hop - 1) {
                v.netns = h.netns.clone();
            }
            v.message = format!("broken at hop {hop}: {message}");
            t.findings.push(super::Finding {
                hop,
                severity: super::Severity::Error,
                code,
                message,
            });
            t.findings.sort_by_key(|f| f.hop);
        }
    }
}

/// Explain the path and, with `capture` (the probe's timeout), prove it and
/// [`conclude`]: the whole `cnet-debug trace` as a library call, for the C
/// ABI and other front ends. Render the result with [`crate::report`].
pub fn run(req: &Request, capture: Option<std::time::Duration>) -> Result<(Trace, Option<Proof>)> {
    let mut t = super::explain(req)?;
    let proof = match capture {
        Some(timeout) => {
            let p = prove(req, &t, timeout)?;
            conclude(&mut t, &p, req.proto);
            Some(p)
        }
        _ => None,
    };
    Ok((t, proof))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Hop, HopKind, Iface, Verdict};

    fn trace(model_ok: bool) -> Trace {
        let hop = |n: usize| Hop {
            n,
            netns: format!("ns{n}"),
            kind: HopKind::Veth,
            summary: String::new(),
            details: vec![],
            iface: Some(Iface {
                netns: format!("ns{n}"),
                ifname: format!("if{n}"),
                l3: false,
                ns_idx: 0,
            }),
            packet: String::new(),
        };
        Trace {
            dst: "10.244.1.3".parse().unwrap(),
            src: None,
            from: "a".into(),
            hops: vec![hop(1), hop(2), hop(3)],
            findings: vec![],
            verdict: Verdict {
                ok: model_ok,
                model_ok,
                agreement: None,
                outcome: if model_ok { "delivered" } else { "broken" },
                netns: "ns3".into(),
                hop: 3,
                message: "m".into(),
            },
            elapsed_us: 0,
            namespaces: vec![],
        }
    }

    fn proof(seen: &[bool], replied: bool) -> Proof {
        let hops: Vec<HopCapture> = seen
            .iter()
            .enumerate()
            .map(|(i, s)| HopCapture {
                hop: i + 1,
                netns: format!("ns{}", i + 1),
                ifname: format!("if{}", i + 1),
                seen: *s,
                reply_seen: false,
                frame: vec![],
            })
            .collect();
        Proof {
            last_seen_hop: hops.iter().rev().find(|h| h.seen).map(|h| h.hop),
            hops,
            replied,
            rtt_us: None,
            elapsed_us: 0,
            send_error: None,
        }
    }

    #[test]
    fn capture_and_model_make_one_verdict() {
        let mut t = trace(true);
        conclude(&mut t, &proof(&[true, true, true], true), Proto::Icmp);
        assert!(t.verdict.ok);
        assert_eq!(t.verdict.agreement, Some("confirmed"));

        let mut t = trace(true);
        conclude(&mut t, &proof(&[true, true, false], false), Proto::Icmp);
        assert!(!t.verdict.ok && t.verdict.model_ok);
        assert_eq!(t.verdict.agreement, Some("vanished"));
        assert_eq!(t.verdict.hop, 3);
        assert_eq!(t.verdict.netns, "ns3");
        let f = &t.findings[0];
        assert_eq!((f.code, f.hop), ("vanished", 3));
        assert!(
            f.message.contains("last seen at hop 2 (if2 in ns2)"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("the tables show no reason"),
            "{}",
            f.message
        );

        let mut t = trace(true);
        conclude(&mut t, &proof(&[true, true, true], false), Proto::Icmp);
        assert_eq!(t.verdict.agreement, Some("no_reply"));
        assert!(!t.verdict.ok);

        let mut t = trace(false);
        conclude(&mut t, &proof(&[true, true, true], true), Proto::Icmp);
        assert!(t.verdict.ok && !t.verdict.model_ok);
        assert_eq!(t.verdict.agreement, Some("contradicted"));
        assert!(t.verdict.message.contains("the reply came back"));
        assert_eq!(t.findings[0].code, "model_contradicted");

        let mut t = trace(false);
        conclude(&mut t, &proof(&[true, false, false], false), Proto::Icmp);
        assert!(!t.verdict.ok);
        assert_eq!(t.verdict.agreement, Some("confirmed"));
        assert_eq!(t.verdict.message, "m");

        // UDP: no reply expected; reaching the end is the proof.
        let mut t = trace(true);
        conclude(&mut t, &proof(&[true, true, true], false), Proto::Udp);
        assert!(t.verdict.ok);
    }
}
