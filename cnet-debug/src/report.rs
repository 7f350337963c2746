//! Rendering a trace: human text (a numbered list of hops, ✓ / ✗ from
//! capture, a final verdict; no colour) and JSON Lines.
//!
//! ## JSON Lines schema (stable)
//! One object per line, `{"type": T, "data": D}`:
//! - `"hop"`: `{n, netns, kind, summary, details[], iface: {netns, ifname} | null, packet}`;
//!   `kind` ∈ route, veth, bridge, vxlan_encap, ipip_encap, decap, deliver, exit.
//! - `"finding"`: `{hop, severity: error|warning|info, code, message}`; codes:
//!   no_route, blackhole, unreachable, prohibit, route_type, ip_forward_off,
//!   rp_filter_strict, link_down, peer_down, veth_peer_missing, neigh_missing,
//!   neigh_failed, fdb_missing, bridge_no_port, bridge_down, port_blocked,
//!   no_decap, mtu, mtu_encap, loop; from the capture (see `trace::conclude`):
//!   vanished, no_reply, model_contradicted.
//! - `"capture"`: `{hop, netns, ifname, seen, reply_seen, frame: [layer…]}`, one per
//!   hop with an interface, when capture ran.
//! - `"verdict"`: `{ok, model_ok, agreement, outcome: delivered|leaves_machine|broken,
//!   netns, hop, message, dst, src, from, elapsed_us,
//!   capture: {replied, rtt_us, last_seen_hop, elapsed_us, send_error} | null}`.
//!
//! Changes (all additions; a reader of the earlier schema keeps working):
//! - verdict `model_ok` (what the tables alone said) and `agreement`
//!   (`null` without capture, else confirmed | vanished | no_reply |
//!   contradicted). `ok` is now the one final verdict: the capture overrules
//!   the tables where they disagree, and the exit code follows `ok`.
//! - `neigh_failed` is a warning (it was an error that ended the path): the
//!   kernel resolves a FAILED/INCOMPLETE entry again on the next packet.
//! - new codes bridge_down, port_blocked, vanished, no_reply, model_contradicted.
//! - the root namespace is labelled `(root)` (or `(current)` when the caller
//!   is not in init's namespace), as in `show`; namespaces without a name are
//!   `pid N (comm)` or the runtime's bind-mount path; a Docker or podman
//!   container's namespace is `container NAME (pid N comm)`.
//! - IPv6 destinations: `dst`/`src` and packets are IPv6 addresses, captured
//!   frames carry `ipv6` and `icmpv6` layers (echo request 128, reply 129);
//!   `ip_forward_off` also means `net.ipv6.conf.all.forwarding=0`.

use std::io::Write;

use serde_json::json;

use crate::trace::{Proof, Severity, Trace};

/// Human-readable report.
pub fn human(t: &Trace, proof: Option<&Proof>, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "trace to {} from {} (source {})",
        t.dst,
        t.from,
        t.src.map(|s| s.to_string()).unwrap_or_else(|| "?".into())
    )?;
    for h in &t.hops {
        let mark = match (proof, &h.iface) {
            (Some(p), Some(_)) => match p.hops.iter().find(|c| c.hop == h.n) {
                Some(c) if c.seen => "✓",
                Some(_) => "✗",
                None => " ",
            },
            _ => " ",
        };
        writeln!(out, "{:>3}. {mark} [{}] {}", h.n, h.netns, h.summary)?;
        writeln!(out, "         packet {}", h.packet)?;
        for d in &h.details {
            writeln!(out, "         {d}")?;
        }
        if let (Some(p), Some(i)) = (proof, &h.iface) {
            if let Some(c) = p.hops.iter().find(|c| c.hop == h.n) {
                let what = if c.seen {
                    let layers: Vec<String> = c.frame.iter().map(|l| l.to_string()).collect();
                    format!("seen on {}: {}", i.ifname, layers.join(" | "))
                } else {
                    format!("NOT seen on {}", i.ifname)
                };
                writeln!(out, "         capture: {what}")?;
            }
        }
        for f in t.findings.iter().filter(|f| f.hop == h.n) {
            let sev = match f.severity {
                Severity::Error => "ERROR",
                Severity::Warning => "WARNING",
                Severity::Info => "note",
            };
            writeln!(out, "         {sev} [{}]: {}", f.code, f.message)?;
        }
    }
    let v = &t.verdict;
    writeln!(
        out,
        "verdict: {} — {}",
        if v.ok { "OK" } else { "BROKEN" },
        v.message
    )?;
    if let Some(p) = proof {
        let last = p
            .last_seen_hop
            .map(|h| format!("last seen at hop {h}"))
            .unwrap_or_else(|| "never seen".into());
        let reply = match (p.replied, p.rtt_us) {
            (true, Some(us)) => format!("reply received after {us} µs"),
            (true, None) => "reply received".into(),
            (false, _) => "no reply".into(),
        };
        writeln!(out, "capture: probe {last}; {reply}")?;
        let back = p.hops.iter().filter(|c| c.reply_seen).count();
        if back > 0 {
            writeln!(
                out,
                "capture: the reply was seen on {back} of the {} interfaces on the way",
                p.hops.len()
            )?;
        }
        if let Some(e) = &p.send_error {
            writeln!(out, "capture: the source refused to send the probe: {e}")?;
        }
        if !v.ok || !p.replied {
            if let Some(h) = p.last_seen_hop {
                if let Some(next) = p.hops.iter().find(|c| c.hop > h && !c.seen) {
                    writeln!(
                        out,
                        "capture: the probe vanished between hop {h} and hop {} ({} in {})",
                        next.hop, next.ifname, next.netns
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn line(out: &mut dyn Write, ty: &str, data: serde_json::Value) -> std::io::Result<()> {
    writeln!(out, "{}", json!({"type": ty, "data": data}))
}

/// The JSON Lines report as one string (for library callers such as the C ABI).
pub fn json_string(t: &Trace, proof: Option<&Proof>) -> String {
    let mut v = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = json_lines(t, proof, &mut v);
    String::from_utf8_lossy(&v).into_owned()
}

/// JSON Lines report (see the module docs for the schema).
pub fn json_lines(t: &Trace, proof: Option<&Proof>, out: &mut dyn Write) -> std::io::Result<()> {
    for h in &t.hops {
        line(out, "hop", serde_json::to_value(h).unwrap_or_default())?;
    }
    for f in &t.findings {
        line(out, "finding", serde_json::to_value(f).unwrap_or_default())?;
    }
    if let Some(p) = proof {
        for c in &p.hops {
            line(out, "capture", serde_json::to_value(c).unwrap_or_default())?;
        }
    }
    let mut v = serde_json::to_value(&t.verdict).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("dst".into(), json!(t.dst));
        o.insert("src".into(), json!(t.src));
        o.insert("from".into(), json!(t.from));
        o.insert("elapsed_us".into(), json!(t.elapsed_us));
        o.insert(
            "capture".into(),
            match proof {
                Some(p) => json!({"replied": p.replied, "rtt_us": p.rtt_us, "last_seen_hop": p.last_seen_hop, "elapsed_us": p.elapsed_us, "send_error": p.send_error}),
                None => serde_json::Value::Null,
            },
        );
    }
    line(out, "verdict", v)
}
