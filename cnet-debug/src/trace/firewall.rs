//! Netfilter at a forwarding hop: what the ruleset of a namespace does to
//! the probe (a FORWARD chain that drops it, Docker's well-known `policy
//! drop` included; a MASQUERADE/SNAT that rewrites its source on the way
//! out; a DNAT that rewrites its destination on the way in).
//!
//! ```text
//! NFT_MSG_GETTABLE dump (NETLINK_NETFILTER, in the namespace) ─▶ no table: nothing to evaluate
//! nft -j list ruleset (run in the namespace) ─▶ base chains by hook and priority
//!   forward  (filter): rules in order, jump/goto followed ─▶ accept | drop (rule or policy)
//!   postrouting (nat): masquerade / snat                  ─▶ source rewritten
//!   prerouting  (nat): dnat                               ─▶ destination rewritten
//! ```
//!
//! iptables-nft rules are nftables underneath and appear here too; legacy
//! iptables (x_tables) rules do not. A match this evaluator does not know
//! (an `xt` match, a set lookup, marks…) makes its rule *uncertain*: it is
//! not applied, and a drop that depends on it is reported as a warning.
//!
//! Why `nft -j` and serde_json rather than a crate: the crates that speak
//! nftables over netlink (rustables, nftnl/mnl) are built to write rules and
//! decode none or few of the expressions back, or need libnftnl's headers;
//! the `nftables` crate is itself a typed wrapper over `nft -j`. The few
//! fields read here are read from `nft`'s JSON (a stable, documented
//! schema, libnftables-json(5)) with serde_json, already a dependency.

use std::net::IpAddr;
use std::process::Command;

use cnet_core::NetNs;
use serde_json::Value;

use crate::probe::Proto;

/// A namespace's ruleset: its chains, each with its rules' expressions.
#[derive(Debug, Clone, Default)]
pub(super) struct Ruleset {
    chains: Vec<Chain>,
}

#[derive(Debug, Clone)]
struct Chain {
    family: String,
    table: String,
    name: String,
    hook: Option<String>,
    kind: Option<String>,
    prio: i64,
    policy: Option<String>,
    rules: Vec<Vec<Value>>,
}

/// The probe as netfilter sees it at one hop.
#[derive(Debug, Clone)]
pub(super) struct Probe<'a> {
    pub(super) iif: Option<&'a str>,
    pub(super) oif: Option<&'a str>,
    pub(super) src: Option<IpAddr>,
    pub(super) dst: IpAddr,
    pub(super) proto: Proto,
    pub(super) dport: u16,
}

/// What the ruleset does to the probe at one hop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Effect {
    /// Dropped or rejected: by which chain and rule (or policy).
    pub(super) drop: Option<String>,
    /// A drop by a rule whose matches could not all be evaluated.
    pub(super) maybe_drop: Vec<String>,
    /// Address rewrites (masquerade, snat, dnat), in words.
    pub(super) rewrites: Vec<String>,
}

/// Read the ruleset of `ns` (`nft -j list ruleset` from a thread inside
/// it). `None` when `nft` is not installed or fails. A namespace without a
/// single nftables table (most of a trace's namespaces) is answered by one
/// netlink dump (see [`has_tables`]) instead: running `nft` costs a process
/// and several milliseconds per namespace.
pub(super) fn load(ns: &NetNs) -> Option<Ruleset> {
    if ns.run(has_tables).ok().flatten() == Some(false) {
        return Some(Ruleset::default());
    }
    let out = ns
        .run(|| {
            Command::new("nft")
                .args(["-j", "list", "ruleset"])
                .output()
                .ok()
        })
        .ok()
        .flatten()?;
    if !out.status.success() {
        return None;
    }
    parse(&out.stdout)
}

/// Whether the calling thread's namespace has any nftables table (of any
/// family): `nft list tables` as one netlink dump, NFT_MSG_GETTABLE over
/// NETLINK_NETFILTER, through cnet-core's socket (its sequence checks and
/// interrupted-dump retry). `None` when the kernel cannot be asked (no
/// nftables, no permission): the caller then runs `nft`, which knows better.
///
/// The request is a 4-byte `nfgenmsg` (family AF_UNSPEC, NFNETLINK_V0,
/// res_id 0); no crate encodes nftables messages that fits (see the
/// module's note), and only the presence of a reply is read, never its
/// attributes.
fn has_tables() -> Option<bool> {
    use netlink_sys::protocols::NETLINK_NETFILTER;
    let ctx = || "nft list tables".to_string();
    let mut sock =
        cnet_core::netlink::Socket::open_protocol(NETLINK_NETFILTER, "open netfilter socket")
            .ok()?;
    let mut tables = 0usize;
    sock.dump_raw_each(NFT_GETTABLE, &[0u8; 4], &ctx, &mut |m| {
        // `None`: the dump was interrupted and starts over.
        tables = if m.is_some() { tables + 1 } else { 0 };
        Ok(())
    })
    .ok()?;
    Some(tables > 0)
}

/// `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE` (linux/netfilter/nf_tables.h).
const NFT_GETTABLE: u16 = (10 << 8) | 1;

fn parse(json: &[u8]) -> Option<Ruleset> {
    let v: Value = serde_json::from_slice(json).ok()?;
    let mut rs = Ruleset::default();
    for o in v.get("nftables")?.as_array()? {
        if let Some(c) = o.get("chain") {
            let s = |k: &str| c.get(k).and_then(|x| x.as_str()).map(str::to_string);
            rs.chains.push(Chain {
                family: s("family").unwrap_or_default(),
                table: s("table").unwrap_or_default(),
                name: s("name").unwrap_or_default(),
                hook: s("hook"),
                kind: s("type"),
                prio: c.get("prio").and_then(|p| p.as_i64()).unwrap_or(0),
                policy: s("policy"),
                rules: Vec::new(),
            });
        } else if let Some(r) = o.get("rule") {
            let (f, t, ch) = (r.get("family"), r.get("table"), r.get("chain"));
            let expr = r
                .get("expr")
                .and_then(|e| e.as_array())
                .cloned()
                .unwrap_or_default();
            if let Some(c) = rs.chains.iter_mut().find(|c| {
                Some(c.family.as_str()) == f.and_then(|x| x.as_str())
                    && Some(c.table.as_str()) == t.and_then(|x| x.as_str())
                    && Some(c.name.as_str()) == ch.and_then(|x| x.as_str())
            }) {
                c.rules.push(expr);
            }
        }
    }
    Some(rs)
}

enum Flow {
    Continue,
    Accept,
    Drop(String),
    Return,
}

impl Ruleset {
    /// The base chains of `hook` and `kind` for the probe's family, by priority.
    fn base(&self, hook: &str, kind: &str, v4: bool) -> Vec<&Chain> {
        let fam = if v4 { "ip" } else { "ip6" };
        let mut v: Vec<&Chain> = self
            .chains
            .iter()
            .filter(|c| c.hook.as_deref() == Some(hook) && c.kind.as_deref() == Some(kind))
            .filter(|c| c.family == fam || c.family == "inet")
            .collect();
        v.sort_by_key(|c| c.prio);
        v
    }

    /// What the ruleset does to `p` when it is forwarded (prerouting nat,
    /// forward filter, postrouting nat).
    pub(super) fn forward(&self, p: &Probe) -> Effect {
        let mut e = Effect::default();
        let v4 = p.dst.is_ipv4();
        for c in self.base("prerouting", "nat", v4) {
            self.run(c, p, &mut e, 0);
        }
        for c in self.base("forward", "filter", v4) {
            match self.run(c, p, &mut e, 0) {
                Flow::Drop(why) => {
                    e.drop = Some(why);
                    return e;
                }
                Flow::Accept => continue,
                Flow::Continue | Flow::Return => {
                    if c.policy.as_deref() == Some("drop") {
                        e.drop = Some(format!(
                            "policy drop of chain {} (table {} {}): no rule accepted it",
                            c.name, c.family, c.table
                        ));
                        return e;
                    }
                }
            }
        }
        for c in self.base("postrouting", "nat", v4) {
            self.run(c, p, &mut e, 0);
        }
        e
    }

    fn run(&self, c: &Chain, p: &Probe, e: &mut Effect, depth: usize) -> Flow {
        if depth > 16 {
            return Flow::Continue;
        }
        let at = |i: usize| {
            format!(
                "rule {} of chain {} (table {} {})",
                i + 1,
                c.name,
                c.family,
                c.table
            )
        };
        for (i, rule) in c.rules.iter().enumerate() {
            let mut certain = true;
            for x in rule {
                if let Some(m) = x.get("match") {
                    match eval(m, p) {
                        Some(true) => {}
                        // The rule does not apply: its statements are not reached.
                        Some(false) => break,
                        None => certain = false,
                    }
                    continue;
                }
                // iptables-nft keeps what nft cannot express as `xt`
                // objects: an unknown match, or a target (MASQUERADE…).
                let xt_target = match x.get("xt") {
                    Some(xt) if xt.get("type").and_then(|t| t.as_str()) == Some("target") => xt
                        .get("name")
                        .and_then(|n| n.as_str())
                        .map(|n| n.to_ascii_lowercase()),
                    Some(_) => {
                        certain = false;
                        continue;
                    }
                    None => None,
                };
                let verdict =
                    xt_target.or_else(|| x.as_object().and_then(|o| o.keys().next().cloned()));
                match verdict.as_deref() {
                    Some("accept") if certain => return Flow::Accept,
                    Some("drop") | Some("reject") => {
                        if certain {
                            return Flow::Drop(at(i));
                        }
                        e.maybe_drop.push(at(i));
                    }
                    Some("masquerade") if certain => e.rewrites.push(format!(
                        "masquerade ({}): the source becomes the address of {}",
                        at(i),
                        p.oif.unwrap_or("the output device")
                    )),
                    Some(k @ ("snat" | "dnat")) if certain => {
                        let to = x[k]
                            .get("addr")
                            .map(|a| {
                                a.as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| a.to_string())
                            })
                            .unwrap_or_else(|| "?".into());
                        let port = x[k]
                            .get("port")
                            .map(|p| format!(" port {p}"))
                            .unwrap_or_default();
                        let what = if k == "snat" { "source" } else { "destination" };
                        e.rewrites
                            .push(format!("{k} ({}): the {what} becomes {to}{port}", at(i)));
                    }
                    Some(j @ ("jump" | "goto")) if certain => {
                        let target = x[j].get("target").and_then(|t| t.as_str()).unwrap_or("");
                        if let Some(next) = self.chains.iter().find(|n| {
                            n.family == c.family && n.table == c.table && n.name == target
                        }) {
                            match self.run(next, p, e, depth + 1) {
                                Flow::Continue | Flow::Return if j == "jump" => {}
                                Flow::Continue | Flow::Return => return Flow::Continue,
                                f => return f,
                            }
                        }
                    }
                    Some("return") if certain => return Flow::Return,
                    _ => {}
                }
            }
        }
        Flow::Continue
    }
}

/// Whether one `match` expression holds for the probe; `None` if unknown.
fn eval(m: &Value, p: &Probe) -> Option<bool> {
    let op = m.get("op").and_then(|o| o.as_str()).unwrap_or("==");
    let left = m.get("left")?;
    let right = m.get("right")?;
    let hit = if let Some(meta) = left.get("meta") {
        match meta.get("key")?.as_str()? {
            "iifname" => ifname_match(p.iif?, right)?,
            "oifname" => ifname_match(p.oif?, right)?,
            "l4proto" => proto_match(p.proto, right)?,
            _ => return None,
        }
    } else if let Some(pl) = left.get("payload") {
        let proto = pl.get("protocol")?.as_str()?;
        // `ip …` applies to IPv4 packets only and `ip6 …` to IPv6 (nft adds
        // the family as an implicit match): the other family never matches,
        // whatever the operator.
        if (proto == "ip" && !p.dst.is_ipv4()) || (proto == "ip6" && p.dst.is_ipv4()) {
            return Some(false);
        }
        match (proto, pl.get("field")?.as_str()?) {
            ("ip" | "ip6", "saddr") => addr_match(p.src?, right)?,
            ("ip" | "ip6", "daddr") => addr_match(p.dst, right)?,
            ("ip", "protocol") | ("ip6", "nexthdr") => proto_match(p.proto, right)?,
            ("tcp" | "udp", "dport") => {
                let want = match p.proto {
                    Proto::Tcp => "tcp",
                    Proto::Udp => "udp",
                    Proto::Icmp => return Some(op == "!="),
                };
                proto == want && right.as_u64() == Some(u64::from(p.dport))
            }
            _ => return None,
        }
    } else if let Some(ct) = left.get("ct") {
        // The probe opens a new flow.
        match ct.get("key")?.as_str()? {
            "state" => match right {
                Value::String(s) => s == "new",
                Value::Array(a) => a.iter().any(|s| s == "new"),
                _ => return None,
            },
            _ => return None,
        }
    } else {
        return None;
    };
    Some(if op == "!=" { !hit } else { hit })
}

fn ifname_match(name: &str, right: &Value) -> Option<bool> {
    let pat = right.as_str()?;
    Some(match pat.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pat,
    })
}

fn proto_match(proto: Proto, right: &Value) -> Option<bool> {
    let name = match proto {
        Proto::Icmp => "icmp",
        Proto::Udp => "udp",
        Proto::Tcp => "tcp",
    };
    Some(match right {
        Value::String(s) => s == name || (s == "ipv6-icmp" && proto == Proto::Icmp),
        Value::Object(o) if o.contains_key("set") => o["set"].as_array()?.iter().any(|s| s == name),
        _ => return None,
    })
}

fn addr_match(a: IpAddr, right: &Value) -> Option<bool> {
    match right {
        Value::String(s) => Some(s.parse::<IpAddr>().ok()? == a),
        Value::Object(o) => {
            let pf = o.get("prefix")?;
            let net: cnet_core::ipnet::IpNet =
                format!("{}/{}", pf.get("addr")?.as_str()?, pf.get("len")?.as_u64()?)
                    .parse()
                    .ok()?;
            Some(net.contains(&a))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The netlink question agrees with `nft`: no table in a fresh
    /// namespace, one after `nft add table` (root only; skipped otherwise).
    #[test]
    fn has_tables_agrees_with_nft_in_a_fresh_namespace() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root");
            return;
        }
        let name = format!("cn-fwtab-{}", std::process::id());
        let ns = NetNs::create(&name).unwrap();
        let ok = std::panic::catch_unwind(|| {
            assert_eq!(ns.run(has_tables).unwrap(), Some(false));
            let added = Command::new("ip")
                .args(["netns", "exec", &name, "nft", "add", "table", "inet", "t"])
                .status()
                .is_ok_and(|s| s.success());
            if added {
                assert_eq!(ns.run(has_tables).unwrap(), Some(true));
            } else {
                eprintln!("no nft here: only the empty case checked");
            }
        });
        NetNs::delete(&name).unwrap();
        if let Err(p) = ok {
            std::panic::resume_unwind(p);
        }
    }

    const DOCKER: &str = r#"{"nftables":[
      {"chain":{"family":"ip","table":"filter","name":"FORWARD","type":"filter","hook":"forward","prio":0,"policy":"drop"}},
      {"chain":{"family":"ip","table":"filter","name":"DOCKER"}},
      {"rule":{"family":"ip","table":"filter","chain":"FORWARD","expr":[{"match":{"op":"in","left":{"ct":{"key":"state"}},"right":["established","related"]}},{"accept":null}]}},
      {"rule":{"family":"ip","table":"filter","chain":"FORWARD","expr":[{"jump":{"target":"DOCKER"}}]}},
      {"rule":{"family":"ip","table":"filter","chain":"DOCKER","expr":[{"match":{"op":"==","left":{"meta":{"key":"iifname"}},"right":"docker0"}},{"match":{"op":"!=","left":{"meta":{"key":"oifname"}},"right":"docker0"}},{"accept":null}]}},
      {"chain":{"family":"ip","table":"nat","name":"POSTROUTING","type":"nat","hook":"postrouting","prio":100,"policy":"accept"}},
      {"rule":{"family":"ip","table":"nat","chain":"POSTROUTING","expr":[{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":{"prefix":{"addr":"10.244.1.0","len":24}}}},{"match":{"op":"!=","left":{"meta":{"key":"oifname"}},"right":"docker0"}},{"masquerade":null}]}}
    ]}"#;

    fn probe<'a>(iif: &'a str, oif: &'a str, dst: &str) -> Probe<'a> {
        Probe {
            iif: Some(iif),
            oif: Some(oif),
            src: Some("10.244.1.2".parse().unwrap()),
            dst: dst.parse().unwrap(),
            proto: Proto::Icmp,
            dport: 0,
        }
    }

    #[test]
    fn docker_forward_policy_and_masquerade() {
        let rs = parse(DOCKER.as_bytes()).unwrap();
        // Out of docker0: accepted by DOCKER, masqueraded.
        let e = rs.forward(&probe("docker0", "eth0", "203.0.113.2"));
        assert_eq!(e.drop, None);
        assert_eq!(e.rewrites.len(), 1, "{e:?}");
        assert!(e.rewrites[0].starts_with("masquerade"), "{e:?}");
        // Into docker0 from outside, a new flow: nothing accepts it.
        let mut p = probe("eth0", "docker0", "10.244.1.2");
        p.src = Some("203.0.113.2".parse().unwrap());
        let e = rs.forward(&p);
        assert!(e.drop.unwrap().starts_with("policy drop of chain FORWARD"));
        assert!(e.rewrites.is_empty());
    }
}
