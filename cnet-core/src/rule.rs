//! Policy routing rules: `ip rule`.
//!
//! ```text
//!  Rule (builder) ──message()──▶ RTM_NEWRULE / RTM_DELRULE
//!  Rules::list(family) ────────▶ RTM_GETRULE dump ──▶ Vec<RuleEntry>
//!  reconcile(owner, desired) = one dump + one pipelined batch
//!      key: (family, priority); owned: protocol == owner.protocol
//! ```
//!
//! A rule selects packets (`from`, `to`, `iif`, `oif`, `fwmark`, `not`)
//! and says what to do with them (look up a table, `goto` another rule,
//! `blackhole` / `unreachable` / `prohibit`). Like routes, the rules cnet
//! writes carry a protocol (`FRA_PROTOCOL`, [`crate::route::PROTOCOL`] =
//! 119 unless set), so [`Rules::reconcile`] owns exactly its own rules and
//! never touches the kernel's defaults (`local`, `main`, `default`, which
//! carry `proto kernel`) nor anyone else's.
//!
//! The kernel has no "replace" for rules, and several rules may share one
//! priority. A reconcile therefore identifies a rule by family and
//! priority, and changes one make-before-break: the new rule is added
//! (it lands after the old one of equal priority), then the old one is
//! deleted, so matching packets never fall through to a later rule.
//! Messages are encoded by `netlink-packet-route`'s `RuleMessage`.

use std::borrow::Borrow;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::RouteProtocol;
use netlink_packet_route::rule::{
    RuleAction as NlAction, RuleAttribute, RuleFlags, RuleHeader, RuleMessage,
};
use netlink_packet_route::RouteNetlinkMessage;

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::link::validate_name;
use crate::reconcile::ReconcileReport;
pub use crate::route::Family;
use crate::route::PROTOCOL;

/// `RT_TABLE_COMPAT`: what the one-byte table field of the header says
/// when the table id does not fit in it (the real id is in `FRA_TABLE`).
const RT_TABLE_COMPAT: u8 = 252;

/// What a rule does with the packets it selects (`ip rule … ACTION`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleAction {
    /// `lookup TABLE` (`table TABLE`): route by that table.
    Lookup(u32),
    /// `goto PRIORITY`: continue at the rule with that priority.
    Goto(u32),
    /// `nop`: do nothing (a placeholder).
    Nop,
    /// `blackhole`: drop silently.
    Blackhole,
    /// `unreachable`: drop with "network unreachable".
    Unreachable,
    /// `prohibit`: drop with "administratively prohibited".
    Prohibit,
    /// Another `FR_ACT_*` value.
    Other(u8),
}

impl fmt::Display for RuleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleAction::Lookup(t) => write!(f, "lookup {t}"),
            RuleAction::Goto(p) => write!(f, "goto {p}"),
            RuleAction::Nop => f.write_str("nop"),
            RuleAction::Blackhole => f.write_str("blackhole"),
            RuleAction::Unreachable => f.write_str("unreachable"),
            RuleAction::Prohibit => f.write_str("prohibit"),
            RuleAction::Other(v) => write!(f, "action {v}"),
        }
    }
}

/// A policy routing rule. Equivalent to `ip [-6] rule add [not] [from
/// PREFIX] [to PREFIX] [iif DEV] [oif DEV] [fwmark MARK[/MASK]] [priority
/// N] [protocol P] [suppress_prefixlength L] (table T | goto N | nop |
/// blackhole | unreachable | prohibit)`.
///
/// ```
/// use cnet_core::rule::Rule;
/// // ip rule add priority 100 from 10.244.1.0/24 table 100 protocol 119
/// let r = Rule::v4().priority(100).from("10.244.1.0/24".parse().unwrap()).table(100);
/// assert_eq!(r.to_string(), "ip -4 rule priority 100 from 10.244.1.0/24 lookup 100 protocol 119");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Address family (`ip -4` / `ip -6`).
    pub family: Family,
    /// `priority N` (`pref`); `None` lets the kernel pick one below the
    /// previous rule (reconcile needs it set).
    pub priority: Option<u32>,
    /// `from PREFIX`.
    pub from: Option<IpNet>,
    /// `to PREFIX`.
    pub to: Option<IpNet>,
    /// `iif DEV` (by name: the rule waits for a device that does not exist yet).
    pub iif: Option<String>,
    /// `oif DEV`.
    pub oif: Option<String>,
    /// `fwmark MARK`.
    pub fwmark: Option<u32>,
    /// `fwmark MARK/MASK`; `None` is all ones.
    pub fwmask: Option<u32>,
    /// `not`: select what the selectors do not match.
    pub invert: bool,
    /// `suppress_prefixlength L`: ignore lookup results with a prefix of
    /// length L or shorter (wg-quick's `suppress_prefixlength 0`).
    pub suppress_prefixlen: Option<u32>,
    /// What the rule does.
    pub action: RuleAction,
    /// `protocol P` (`FRA_PROTOCOL`): [`crate::route::PROTOCOL`] by default.
    pub protocol: u8,
}

impl Rule {
    /// A rule of `family` that looks up the main table (set the action
    /// with [`Rule::table`], [`Rule::blackhole`], …).
    pub fn new(family: Family) -> Self {
        Rule {
            family,
            priority: None,
            from: None,
            to: None,
            iif: None,
            oif: None,
            fwmark: None,
            fwmask: None,
            invert: false,
            suppress_prefixlen: None,
            action: RuleAction::Lookup(crate::route::TABLE_MAIN),
            protocol: PROTOCOL,
        }
    }
    /// An IPv4 rule (`ip -4 rule`).
    pub fn v4() -> Self {
        Self::new(Family::V4)
    }
    /// An IPv6 rule (`ip -6 rule`).
    pub fn v6() -> Self {
        Self::new(Family::V6)
    }
    /// `priority N`.
    pub fn priority(mut self, p: u32) -> Self {
        self.priority = Some(p);
        self
    }
    /// `from PREFIX`.
    pub fn from(mut self, p: IpNet) -> Self {
        self.from = Some(p);
        self
    }
    /// `to PREFIX`.
    pub fn to(mut self, p: IpNet) -> Self {
        self.to = Some(p);
        self
    }
    /// `iif DEV`.
    pub fn iif(mut self, dev: &str) -> Self {
        self.iif = Some(dev.to_string());
        self
    }
    /// `oif DEV`.
    pub fn oif(mut self, dev: &str) -> Self {
        self.oif = Some(dev.to_string());
        self
    }
    /// `fwmark MARK`.
    pub fn fwmark(mut self, mark: u32) -> Self {
        self.fwmark = Some(mark);
        self
    }
    /// `fwmark MARK/MASK`.
    pub fn fwmark_masked(mut self, mark: u32, mask: u32) -> Self {
        self.fwmark = Some(mark);
        self.fwmask = Some(mask);
        self
    }
    /// `not`: select what the selectors do not match.
    pub fn invert(mut self) -> Self {
        self.invert = true;
        self
    }
    /// `suppress_prefixlength L`.
    pub fn suppress_prefixlength(mut self, len: u32) -> Self {
        self.suppress_prefixlen = Some(len);
        self
    }
    /// `table T` (`lookup T`).
    pub fn table(mut self, t: u32) -> Self {
        self.action = RuleAction::Lookup(t);
        self
    }
    /// `goto PRIORITY`.
    pub fn goto(mut self, priority: u32) -> Self {
        self.action = RuleAction::Goto(priority);
        self
    }
    /// `blackhole`.
    pub fn blackhole(mut self) -> Self {
        self.action = RuleAction::Blackhole;
        self
    }
    /// `unreachable`.
    pub fn unreachable(mut self) -> Self {
        self.action = RuleAction::Unreachable;
        self
    }
    /// `prohibit`.
    pub fn prohibit(mut self) -> Self {
        self.action = RuleAction::Prohibit;
        self
    }
    /// `nop`.
    pub fn nop(mut self) -> Self {
        self.action = RuleAction::Nop;
        self
    }
    /// `protocol P` (default [`crate::route::PROTOCOL`]).
    pub fn protocol(mut self, p: u8) -> Self {
        self.protocol = p;
        self
    }

    /// Check every parameter; nothing is sent when this fails.
    pub fn validate(&self) -> Result<()> {
        let ctx = || format!("rule {self}");
        let bad = |reason: String| Err(Error::invalid(ctx(), reason));
        for (what, p) in [("from", self.from), ("to", self.to)] {
            let Some(p) = p else { continue };
            if Family::of(&p.addr()) != self.family {
                return bad(format!(
                    "{what} {p} is of another address family than the rule ({})",
                    family_flag(self.family)
                ));
            }
            if p.addr() != p.network() {
                return bad(format!(
                    "{what} prefix {p} has host bits set (did you mean {}?)",
                    p.trunc()
                ));
            }
        }
        for d in [&self.iif, &self.oif].into_iter().flatten() {
            validate_name(d).map_err(|e| e.with_context(ctx()))?;
        }
        if self.fwmask.is_some() && self.fwmark.is_none() {
            return bad("a fwmark mask without a fwmark".into());
        }
        match self.action {
            RuleAction::Lookup(0) => {
                return bad("table 0 is not a routing table (RT_TABLE_UNSPEC)".into())
            }
            RuleAction::Goto(p) if self.priority.is_some_and(|own| p <= own) => {
                return bad(format!(
                    "goto {p} must jump forward, past this rule's priority {}",
                    self.priority.unwrap_or(0)
                ))
            }
            RuleAction::Other(_) => return bad("an unknown action cannot be sent".into()),
            _ => {}
        }
        if self.suppress_prefixlen.is_some_and(|l| l > 128) {
            return bad("suppress_prefixlength is over 128".into());
        }
        Ok(())
    }

    /// The `RTM_NEWRULE` / `RTM_DELRULE` payload (not validated: see
    /// [`Rule::validate`]).
    pub fn message(&self) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header = RuleHeader {
            family: self.family.to_nl(),
            dst_len: self.to.map_or(0, |p| p.prefix_len()),
            src_len: self.from.map_or(0, |p| p.prefix_len()),
            ..Default::default()
        };
        if self.invert {
            m.header.flags = RuleFlags::Invert;
        }
        let a = &mut m.attributes;
        if let Some(p) = self.priority {
            a.push(RuleAttribute::Priority(p));
        }
        if let Some(p) = self.from {
            a.push(RuleAttribute::Source(p.addr()));
        }
        if let Some(p) = self.to {
            a.push(RuleAttribute::Destination(p.addr()));
        }
        if let Some(d) = &self.iif {
            a.push(RuleAttribute::Iifname(d.clone()));
        }
        if let Some(d) = &self.oif {
            a.push(RuleAttribute::Oifname(d.clone()));
        }
        if let Some(mark) = self.fwmark {
            a.push(RuleAttribute::FwMark(mark));
            if let Some(mask) = self.fwmask {
                a.push(RuleAttribute::FwMask(mask));
            }
        }
        if let Some(l) = self.suppress_prefixlen {
            a.push(RuleAttribute::SuppressPrefixLen(l));
        }
        m.header.action = match self.action {
            RuleAction::Lookup(t) => {
                // As iproute2 does: the byte when the id fits, else
                // RT_TABLE_COMPAT there and the id in FRA_TABLE.
                m.header.table = u8::try_from(t).unwrap_or(RT_TABLE_COMPAT);
                a.push(RuleAttribute::Table(t));
                NlAction::ToTable
            }
            RuleAction::Goto(p) => {
                a.push(RuleAttribute::Goto(p));
                NlAction::Goto
            }
            RuleAction::Nop => NlAction::Nop,
            RuleAction::Blackhole => NlAction::Blackhole,
            RuleAction::Unreachable => NlAction::Unreachable,
            RuleAction::Prohibit => NlAction::Prohibit,
            RuleAction::Other(v) => NlAction::Other(v),
        };
        a.push(RuleAttribute::Protocol(RouteProtocol::from(self.protocol)));
        m
    }

    /// What the kernel lists for this rule once added (defaults filled in:
    /// a fwmark's mask of all ones).
    pub fn expected(&self) -> RuleEntry {
        RuleEntry {
            family: self.family,
            priority: self.priority.unwrap_or(0),
            from: self.from,
            to: self.to,
            iif: self.iif.clone(),
            oif: self.oif.clone(),
            fwmark: self.fwmark,
            fwmask: self.fwmark.map(|_| self.fwmask.unwrap_or(u32::MAX)),
            invert: self.invert,
            suppress_prefixlen: self.suppress_prefixlen,
            action: self.action,
            protocol: self.protocol,
        }
    }
}

fn family_flag(f: Family) -> &'static str {
    match f {
        Family::V4 => "-4",
        Family::V6 => "-6",
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ip {} rule", family_flag(self.family))?;
        if let Some(p) = self.priority {
            write!(f, " priority {p}")?;
        }
        write_selectors(
            f,
            self.invert,
            self.from,
            self.to,
            &self.iif,
            &self.oif,
            self.fwmark,
            self.fwmask,
        )?;
        write!(f, " {}", self.action)?;
        if let Some(l) = self.suppress_prefixlen {
            write!(f, " suppress_prefixlength {l}")?;
        }
        write!(f, " protocol {}", self.protocol)
    }
}

#[allow(clippy::too_many_arguments)] // the selectors of `ip rule`, in its order
fn write_selectors(
    f: &mut fmt::Formatter<'_>,
    invert: bool,
    from: Option<IpNet>,
    to: Option<IpNet>,
    iif: &Option<String>,
    oif: &Option<String>,
    mark: Option<u32>,
    mask: Option<u32>,
) -> fmt::Result {
    if invert {
        f.write_str(" not")?;
    }
    match from {
        Some(p) => write!(f, " from {p}")?,
        None => f.write_str(" from all")?,
    }
    if let Some(p) = to {
        write!(f, " to {p}")?;
    }
    if let Some(d) = iif {
        write!(f, " iif {d}")?;
    }
    if let Some(d) = oif {
        write!(f, " oif {d}")?;
    }
    if let Some(m) = mark {
        write!(f, " fwmark {m:#x}")?;
        if let Some(k) = mask.filter(|k| *k != u32::MAX) {
            write!(f, "/{k:#x}")?;
        }
    }
    Ok(())
}

/// A rule as the kernel lists it (`ip -j rule show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleEntry {
    /// Address family.
    pub family: Family,
    /// Priority (`pref`).
    pub priority: u32,
    /// `from` prefix; `None` is `all`.
    pub from: Option<IpNet>,
    /// `to` prefix.
    pub to: Option<IpNet>,
    /// `iif` device name.
    pub iif: Option<String>,
    /// `oif` device name.
    pub oif: Option<String>,
    /// `fwmark`.
    pub fwmark: Option<u32>,
    /// The fwmark's mask (all ones unless set), present with `fwmark`.
    pub fwmask: Option<u32>,
    /// `not`: select what the selectors do not match.
    pub invert: bool,
    /// `suppress_prefixlength`.
    pub suppress_prefixlen: Option<u32>,
    /// What the rule does.
    pub action: RuleAction,
    /// `protocol` (`FRA_PROTOCOL`; 2 `kernel` for the default rules).
    pub protocol: u8,
}

impl RuleEntry {
    /// Decode an `RTM_NEWRULE` message; `None` for a family other than
    /// IPv4 / IPv6 (e.g. IP multicast rules).
    pub fn from_message(m: &RuleMessage) -> Option<RuleEntry> {
        let family = match m.header.family {
            netlink_packet_route::AddressFamily::Inet => Family::V4,
            netlink_packet_route::AddressFamily::Inet6 => Family::V6,
            _ => return None,
        };
        let mut e = RuleEntry {
            family,
            priority: 0,
            from: None,
            to: None,
            iif: None,
            oif: None,
            fwmark: None,
            fwmask: None,
            invert: m.header.flags.contains(RuleFlags::Invert),
            suppress_prefixlen: None,
            action: RuleAction::Nop,
            protocol: 0,
        };
        let mut table = u32::from(m.header.table);
        let mut goto = 0;
        let prefix = |ip: &IpAddr, len: u8| IpNet::new(*ip, len).ok();
        for a in &m.attributes {
            match a {
                RuleAttribute::Priority(p) => e.priority = *p,
                RuleAttribute::Source(ip) => e.from = prefix(ip, m.header.src_len),
                RuleAttribute::Destination(ip) => e.to = prefix(ip, m.header.dst_len),
                RuleAttribute::Iifname(d) => e.iif = Some(d.clone()),
                RuleAttribute::Oifname(d) => e.oif = Some(d.clone()),
                RuleAttribute::FwMark(v) => e.fwmark = Some(*v),
                RuleAttribute::FwMask(v) => e.fwmask = Some(*v),
                RuleAttribute::Table(t) => table = *t,
                RuleAttribute::Goto(p) => goto = *p,
                // The kernel sends -1 (no suppression) on some versions.
                RuleAttribute::SuppressPrefixLen(l) if *l != u32::MAX => {
                    e.suppress_prefixlen = Some(*l)
                }
                RuleAttribute::Protocol(p) => e.protocol = u8::from(*p),
                _ => {}
            }
        }
        if e.fwmark.is_some() && e.fwmask.is_none() {
            e.fwmask = Some(u32::MAX);
        }
        e.action = match m.header.action {
            NlAction::ToTable => RuleAction::Lookup(table),
            NlAction::Goto => RuleAction::Goto(goto),
            NlAction::Nop => RuleAction::Nop,
            NlAction::Blackhole => RuleAction::Blackhole,
            NlAction::Unreachable => RuleAction::Unreachable,
            NlAction::Prohibit => RuleAction::Prohibit,
            other => RuleAction::Other(u8::from(other)),
        };
        Some(e)
    }

    /// The builder that deletes exactly this rule (every selector, the
    /// action and the protocol given, so no other rule matches).
    pub fn to_rule(&self) -> Rule {
        Rule {
            family: self.family,
            priority: Some(self.priority),
            from: self.from,
            to: self.to,
            iif: self.iif.clone(),
            oif: self.oif.clone(),
            fwmark: self.fwmark,
            fwmask: self.fwmask,
            invert: self.invert,
            suppress_prefixlen: self.suppress_prefixlen,
            action: self.action,
            protocol: self.protocol,
        }
    }

    /// How this rule differs from `want` ("field: have X, want Y"), empty
    /// when equal.
    pub fn differences(&self, want: &RuleEntry) -> Vec<String> {
        let mut out = Vec::new();
        macro_rules! field {
            ($f:ident) => {
                if self.$f != want.$f {
                    out.push(format!(
                        concat!(stringify!($f), ": have {:?}, want {:?}"),
                        self.$f, want.$f
                    ));
                }
            };
        }
        field!(family);
        field!(priority);
        field!(from);
        field!(to);
        field!(iif);
        field!(oif);
        field!(fwmark);
        field!(fwmask);
        field!(invert);
        field!(suppress_prefixlen);
        field!(action);
        field!(protocol);
        out
    }
}

impl fmt::Display for RuleEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ip {} rule priority {}",
            family_flag(self.family),
            self.priority
        )?;
        write_selectors(
            f,
            self.invert,
            self.from,
            self.to,
            &self.iif,
            &self.oif,
            self.fwmark,
            self.fwmask,
        )?;
        write!(f, " {} protocol {}", self.action, self.protocol)
    }
}

/// Whose rules a reconcile owns: those carrying `protocol`, optionally of
/// one family only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleOwner {
    /// `FRA_PROTOCOL` of the owned rules.
    pub protocol: u8,
    /// Only this family (`None`: IPv4 and IPv6).
    pub family: Option<Family>,
}

impl Default for RuleOwner {
    fn default() -> Self {
        Self::new(PROTOCOL)
    }
}

impl RuleOwner {
    /// The rules of `protocol`, both families.
    pub fn new(protocol: u8) -> Self {
        RuleOwner {
            protocol,
            family: None,
        }
    }
    /// Only the rules of family `f`.
    pub fn family(mut self, f: Family) -> Self {
        self.family = Some(f);
        self
    }
}

/// Rule operations in one namespace. Obtain with [`Handle::rules`].
#[derive(Debug)]
pub struct Rules<'a> {
    h: &'a Handle,
}

impl<'a> Rules<'a> {
    pub(crate) fn new(h: &'a Handle) -> Self {
        Self { h }
    }

    /// Pipelined deletes (kinds 0 and 2) and adds (1 and 3), one result each.
    fn batch(&self, ops: &[(u8, Rule)], ctx: &str) -> Vec<Result<()>> {
        if ops.is_empty() {
            return Vec::new();
        }
        let items = ops
            .iter()
            .map(|(k, r)| match k {
                0 | 2 => (RouteNetlinkMessage::DelRule(r.message()), 0),
                _ => (
                    RouteNetlinkMessage::NewRule(r.message()),
                    NLM_F_CREATE | NLM_F_EXCL,
                ),
            })
            .collect();
        let sock = self.h.sock();
        let mut sock = match sock {
            Ok(s) => s,
            Err(e) => {
                let text = e.to_string();
                return ops
                    .iter()
                    .map(|_| {
                        Err(Error::Protocol {
                            context: ctx.to_string(),
                            reason: text.clone(),
                        })
                    })
                    .collect();
            }
        };
        sock.batch(items, &|i| {
            let (k, r) = &ops[i];
            let verb = ["delete stale", "add replacement", "delete replaced", "add"][*k as usize];
            format!("{ctx}: {verb} {r}")
        })
    }

    fn send(&self, rule: &Rule, verb: &str, del: bool, flags: u16) -> Result<()> {
        let ns = self.h.netns().label();
        let ctx = || format!("{verb} {rule} in {ns}");
        rule.validate().map_err(|e| e.with_context(ctx()))?;
        let m = rule.message();
        let msg = if del {
            RouteNetlinkMessage::DelRule(m)
        } else {
            RouteNetlinkMessage::NewRule(m)
        };
        self.h.sock()?.ack(msg, flags, &ctx)
    }

    /// `ip rule add RULE`. `AlreadyExists` if an identical rule (same
    /// priority, selectors, action and protocol) is there.
    pub fn add(&self, rule: impl Borrow<Rule>) -> Result<()> {
        self.send(rule.borrow(), "add", false, NLM_F_CREATE | NLM_F_EXCL)
    }

    /// `ip rule del RULE`: deletes the first rule matching every field
    /// `rule` sets (priority, selectors, action, protocol). `NotFound` if
    /// none does.
    pub fn delete(&self, rule: impl Borrow<Rule>) -> Result<()> {
        self.send(rule.borrow(), "delete", true, 0)
    }

    /// [`Rules::delete`], where a missing rule is success; returns whether
    /// one was deleted.
    pub fn delete_if_exists(&self, rule: impl Borrow<Rule>) -> Result<bool> {
        match self.delete(rule) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `ip rule show` (`None`: both families, IPv4 first), in the kernel's
    /// order (by priority).
    pub fn list(&self, family: Option<Family>) -> Result<Vec<RuleEntry>> {
        let ns = self.h.netns().label();
        let fams: &[Family] = match family {
            Some(Family::V4) => &[Family::V4],
            Some(Family::V6) => &[Family::V6],
            None => &[Family::V4, Family::V6],
        };
        let mut out = Vec::new();
        for f in fams {
            let mut req = RuleMessage::default();
            req.header.family = f.to_nl();
            let msgs = self
                .h
                .sock()?
                .dump(RouteNetlinkMessage::GetRule(req), &|| {
                    format!("list rules ({}) in {ns}", family_flag(*f))
                })?;
            out.extend(msgs.iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) => RuleEntry::from_message(r),
                _ => None,
            }));
        }
        Ok(out)
    }

    /// Make the rules of `owner` exactly `desired`: one dump per family,
    /// then one pipelined batch. Rules are identified by family and
    /// priority (every desired rule needs one); the owner's protocol is
    /// applied to each. Stale rules are deleted, missing ones added, and a
    /// changed one is replaced make-before-break (the new rule added, then
    /// the old deleted). Rules of other protocols are never touched; a set
    /// that is already right writes nothing. Failed items land in
    /// [`ReconcileReport::errors`]: see [`ReconcileReport::into_result`].
    pub fn reconcile(&self, owner: &RuleOwner, desired: &[Rule]) -> Result<ReconcileReport> {
        let ns = self.h.netns().label();
        let ctx = format!("reconcile rules proto {} in {ns}", owner.protocol);
        let mut report = ReconcileReport::new(&ctx);
        // Desired rules by key, owner's protocol applied; invalid ones are
        // reported and their key kept (its current rule is left alone).
        let mut want: Vec<((Family, u32), Rule)> = Vec::new();
        let mut keep: Vec<(Family, u32)> = Vec::new();
        for r in desired {
            let mut r = r.clone();
            r.protocol = owner.protocol;
            let Some(p) = r.priority else {
                report.errors.push(Error::invalid(
                    format!("{ctx}: {r}"),
                    "a reconciled rule needs a priority (its identity)",
                ));
                continue;
            };
            let key = (r.family, p);
            if owner.family.is_some_and(|f| f != r.family) {
                report.errors.push(Error::invalid(
                    format!("{ctx}: {r}"),
                    format!(
                        "of another family than the owner's ({})",
                        family_flag(r.family)
                    ),
                ));
                continue;
            }
            if let Err(e) = r.validate() {
                keep.push(key);
                report.errors.push(e.with_context(&ctx));
                continue;
            }
            if want.iter().any(|(k, _)| *k == key) {
                report.errors.push(Error::invalid(
                    &ctx,
                    format!(
                        "two desired rules with priority {p} ({})",
                        family_flag(r.family)
                    ),
                ));
                continue;
            }
            want.push((key, r));
        }
        let have: Vec<RuleEntry> = self
            .list(owner.family)?
            .into_iter()
            .filter(|e| e.protocol == owner.protocol)
            .collect();
        let mut seen = vec![false; want.len()];
        let mut stale: Vec<Rule> = Vec::new();
        let mut replace: Vec<(usize, Rule)> = Vec::new();
        for e in &have {
            let key = (e.family, e.priority);
            match want.iter().position(|(k, _)| *k == key) {
                Some(i) if !seen[i] && e.differences(&want[i].1.expected()).is_empty() => {
                    seen[i] = true;
                    report.unchanged += 1;
                }
                Some(i) if !seen[i] => {
                    // Replaced below unless an exact one follows in the dump.
                    if have.iter().any(|o| {
                        (o.family, o.priority) == key
                            && o.differences(&want[i].1.expected()).is_empty()
                    }) {
                        stale.push(e.to_rule());
                    } else {
                        seen[i] = true;
                        replace.push((i, e.to_rule()));
                    }
                }
                Some(_) => stale.push(e.to_rule()),
                None if keep.contains(&key) => {}
                None => stale.push(e.to_rule()),
            }
        }
        // First batch: delete stale (0), add replacements (1), add missing
        // (3). Second batch: delete each rule whose replacement is in (2),
        // so a failed replacement leaves the old rule working.
        let mut ops: Vec<(u8, Rule)> = stale.into_iter().map(|r| (0, r)).collect();
        ops.extend(replace.iter().map(|(i, _)| (1, want[*i].1.clone())));
        ops.extend(
            want.iter()
                .zip(&seen)
                .filter(|(_, s)| !**s)
                .map(|((_, r), _)| (3, r.clone())),
        );
        if ops.is_empty() {
            return Ok(report);
        }
        let results = self.batch(&ops, &ctx);
        let mut olds = replace.into_iter().map(|(_, old)| old);
        let mut second: Vec<(u8, Rule)> = Vec::new();
        for ((k, _), r) in ops.iter().zip(results) {
            let old = if *k == 1 { olds.next() } else { None };
            match (k, r) {
                (_, Err(e)) => report.errors.push(e),
                (0, Ok(())) => report.deleted += 1,
                (1, Ok(())) => second.extend(old.map(|o| (2, o))),
                (_, Ok(())) => report.added += 1,
            }
        }
        for r in self.batch(&second, &ctx) {
            match r {
                Ok(()) => report.replaced += 1,
                Err(e) => report.errors.push(e),
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn bad_rules_are_refused_before_sending() {
        let bad = [
            Rule::v4().from(net("2001:db8::/32")),
            Rule::v6().to(net("10.0.0.0/8")),
            Rule::v4().from(net("10.0.0.1/8")),
            Rule::v4().table(0),
            Rule::v4().iif("a/b"),
            Rule::v4().priority(100).goto(50),
            Rule::v4().suppress_prefixlength(129),
        ];
        for r in bad {
            assert!(
                matches!(r.validate(), Err(Error::InvalidArgument { .. })),
                "{r}"
            );
        }
        let mut r = Rule::v4();
        r.fwmask = Some(1);
        assert!(r.validate().is_err());
    }

    #[test]
    fn a_message_decodes_back_to_what_was_asked() {
        let r = Rule::v6()
            .priority(1000)
            .from(net("2001:db8:1::/48"))
            .to(net("2001:db8:2::/64"))
            .iif("eth0")
            .oif("eth1")
            .fwmark_masked(0x10, 0xff)
            .invert()
            .table(1000);
        r.validate().unwrap();
        let e = RuleEntry::from_message(&r.message()).unwrap();
        assert_eq!(e, r.expected());
        assert_eq!(e.to_rule().expected(), e);
        assert_eq!(
            e.to_string(),
            "ip -6 rule priority 1000 not from 2001:db8:1::/48 to 2001:db8:2::/64 iif eth0 \
             oif eth1 fwmark 0x10/0xff lookup 1000 protocol 119"
        );
        let big = Rule::v4().table(100_000).message();
        assert_eq!(big.header.table, RT_TABLE_COMPAT);
    }
}
