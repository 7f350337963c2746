//! Policy routing rules: `ip rule add|del|show` and reconcile by protocol,
//! from a plain C struct (`cnet_rule`), read back as `cnet_rule_entry`.

use std::ffi::c_char;

use cnet_core::route::Family;
use cnet_core::rule::{Rule, RuleAction, RuleEntry, RuleOwner};
use cnet_core::IpNet;

use crate::boundary::{
    cnet_error, cnet_result, fill, guard, items, obj, opt_nonempty, out_ptr, parse_opt,
    set_if_asked, Fail, Res, CNET_INVALID_ENUM,
};
use crate::link::{CNET_ADDRSTRLEN, CNET_IFNAMSIZ};
use crate::ns::cnet_handle;
use crate::out::{free_box, list_head, list_out};
use crate::route::{cnet_reconcile_counts, counts_of, CNET_ROUTE_PROTOCOL};

/// What a rule does with the packets it selects.
pub type cnet_rule_action = u32;
/// Only in `cnet_rule_entry`: an action this library does not name (see
/// `action_raw`). In `cnet_rule`, 0 means `CNET_RULE_LOOKUP`.
pub const CNET_RULE_OTHER: cnet_rule_action = 0;
/// `lookup TABLE`: route by that table.
pub const CNET_RULE_LOOKUP: cnet_rule_action = 1;
/// `goto PRIORITY`: continue at the rule with that priority.
pub const CNET_RULE_GOTO: cnet_rule_action = 2;
/// `nop`.
pub const CNET_RULE_NOP: cnet_rule_action = 3;
/// `blackhole`: drop silently.
pub const CNET_RULE_BLACKHOLE: cnet_rule_action = 4;
/// `unreachable`: drop with "network unreachable".
pub const CNET_RULE_UNREACHABLE: cnet_rule_action = 5;
/// `prohibit`: drop with "administratively prohibited".
pub const CNET_RULE_PROHIBIT: cnet_rule_action = 6;

/// A rule to program, `ip [-4|-6] rule add [not] [from PREFIX] [to
/// PREFIX] [iif DEV] [oif DEV] [fwmark MARK[/MASK]] [priority N]
/// [suppress_prefixlength L] [protocol P] (table T | goto N | nop |
/// blackhole | unreachable | prohibit)`. Zero / NULL fields are "not
/// set"; start from a zeroed struct.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_rule {
    /// AF_INET or AF_INET6 (0: the family of `from` / `to`, else AF_INET).
    pub family: u8,
    /// `priority N` (0: the kernel picks one; reconcile needs it set).
    pub priority: u32,
    /// `from PREFIX`, or NULL (all).
    pub from: *const c_char,
    /// `to PREFIX`, or NULL (all).
    pub to: *const c_char,
    /// `iif DEV`, or NULL.
    pub iif: *const c_char,
    /// `oif DEV`, or NULL.
    pub oif: *const c_char,
    /// `fwmark MARK` (0: none).
    pub fwmark: u32,
    /// The fwmark's mask (0: all ones).
    pub fwmask: u32,
    /// `not`: select what the selectors do not match.
    pub invert: bool,
    /// `suppress_prefixlength L` when `has_suppress_prefixlength` (0 is a
    /// valid length: wg-quick's `suppress_prefixlength 0`).
    pub suppress_prefixlength: u32,
    /// `suppress_prefixlength` is set.
    pub has_suppress_prefixlength: bool,
    /// `CNET_RULE_*` (0: `CNET_RULE_LOOKUP`).
    pub action: cnet_rule_action,
    /// `CNET_RULE_LOOKUP`: the table (0: main).
    pub table: u32,
    /// `CNET_RULE_GOTO`: the priority to continue at.
    pub goto_priority: u32,
    /// `protocol P` (0: cnet's, `CNET_ROUTE_PROTOCOL`).
    pub protocol: u8,
}

/// A rule as the kernel lists it (`ip rule show`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cnet_rule_entry {
    /// AF_INET or AF_INET6.
    pub family: u8,
    /// Priority (`pref`).
    pub priority: u32,
    /// `from` prefix, or "" for all.
    pub from: [c_char; CNET_ADDRSTRLEN],
    /// `to` prefix, or "" for all.
    pub to: [c_char; CNET_ADDRSTRLEN],
    /// `iif` device name, or "".
    pub iif: [c_char; CNET_IFNAMSIZ],
    /// `oif` device name, or "".
    pub oif: [c_char; CNET_IFNAMSIZ],
    /// `fwmark` (valid when `has_fwmark`).
    pub fwmark: u32,
    /// The fwmark's mask.
    pub fwmask: u32,
    /// A fwmark selects.
    pub has_fwmark: bool,
    /// `not`.
    pub invert: bool,
    /// `suppress_prefixlength` (valid when `has_suppress_prefixlength`).
    pub suppress_prefixlength: u32,
    /// `suppress_prefixlength` is set.
    pub has_suppress_prefixlength: bool,
    /// `CNET_RULE_*` (`CNET_RULE_OTHER` for an action not named here).
    pub action: cnet_rule_action,
    /// The kernel's `FR_ACT_*` number of the action.
    pub action_raw: u8,
    /// `CNET_RULE_LOOKUP`: the table.
    pub table: u32,
    /// `CNET_RULE_GOTO`: the target priority.
    pub goto_priority: u32,
    /// `protocol` (2 `kernel` for the default rules).
    pub protocol: u8,
}

/// An owned array of rules; free with `cnet_rule_array_free`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_rule_array {
    /// The rules, in the kernel's order (by priority), IPv4 first.
    pub items: *const cnet_rule_entry,
    /// How many.
    pub len: usize,
}
list_head!(cnet_rule_array, cnet_rule_entry);

/// An optional family argument: 0 → None.
pub(crate) fn family_of(f: u8, what: &str) -> Res<Option<Family>> {
    match i32::from(f) {
        0 => Ok(None),
        libc::AF_INET => Ok(Some(Family::V4)),
        libc::AF_INET6 => Ok(Some(Family::V6)),
        x => Err(Fail::new(
            CNET_INVALID_ENUM,
            format!("{what} {x} is neither AF_INET nor AF_INET6"),
        )),
    }
}

fn family_num(f: Family) -> u8 {
    // AF_INET (2) and AF_INET6 (10) fit in a byte.
    match f {
        Family::V4 => libc::AF_INET as u8,
        Family::V6 => libc::AF_INET6 as u8,
    }
}

pub(crate) fn rule_of(c: &cnet_rule) -> Res<Rule> {
    let from = parse_opt::<IpNet>(c.from, "rule.from")?;
    let to = parse_opt::<IpNet>(c.to, "rule.to")?;
    let family = match family_of(c.family, "rule.family")? {
        Some(f) => f,
        None => match from.or(to) {
            Some(IpNet::V6(_)) => Family::V6,
            _ => Family::V4,
        },
    };
    let mut r = Rule::new(family);
    if c.priority != 0 {
        r = r.priority(c.priority);
    }
    if let Some(p) = from {
        r = r.from(p);
    }
    if let Some(p) = to {
        r = r.to(p);
    }
    if let Some(d) = opt_nonempty(c.iif, "rule.iif")? {
        r = r.iif(d);
    }
    if let Some(d) = opt_nonempty(c.oif, "rule.oif")? {
        r = r.oif(d);
    }
    if c.fwmark != 0 {
        r = match c.fwmask {
            0 => r.fwmark(c.fwmark),
            m => r.fwmark_masked(c.fwmark, m),
        };
    }
    if c.invert {
        r = r.invert();
    }
    if c.has_suppress_prefixlength {
        r = r.suppress_prefixlength(c.suppress_prefixlength);
    }
    r = match c.action {
        0 | CNET_RULE_LOOKUP => r.table(if c.table == 0 {
            cnet_core::route::TABLE_MAIN
        } else {
            c.table
        }),
        CNET_RULE_GOTO => r.goto(c.goto_priority),
        CNET_RULE_NOP => r.nop(),
        CNET_RULE_BLACKHOLE => r.blackhole(),
        CNET_RULE_UNREACHABLE => r.unreachable(),
        CNET_RULE_PROHIBIT => r.prohibit(),
        x => {
            return Err(Fail::new(
                CNET_INVALID_ENUM,
                format!("rule.action {x} is not a rule action (1-6)"),
            ))
        }
    };
    r = r.protocol(if c.protocol == 0 {
        CNET_ROUTE_PROTOCOL
    } else {
        c.protocol
    });
    Ok(r)
}

fn entry_of(e: &RuleEntry) -> Res<cnet_rule_entry> {
    let (action, table, goto_priority) = match e.action {
        RuleAction::Lookup(t) => (CNET_RULE_LOOKUP, t, 0),
        RuleAction::Goto(p) => (CNET_RULE_GOTO, 0, p),
        RuleAction::Nop => (CNET_RULE_NOP, 0, 0),
        RuleAction::Blackhole => (CNET_RULE_BLACKHOLE, 0, 0),
        RuleAction::Unreachable => (CNET_RULE_UNREACHABLE, 0, 0),
        RuleAction::Prohibit => (CNET_RULE_PROHIBIT, 0, 0),
        _ => (CNET_RULE_OTHER, 0, 0),
    };
    // FR_ACT_* numbers (linux/fib_rules.h).
    let action_raw = match e.action {
        RuleAction::Lookup(_) => 1,
        RuleAction::Goto(_) => 2,
        RuleAction::Nop => 3,
        RuleAction::Blackhole => 6,
        RuleAction::Unreachable => 7,
        RuleAction::Prohibit => 8,
        RuleAction::Other(x) => x,
        _ => 0,
    };
    let mut c = cnet_rule_entry {
        family: family_num(e.family),
        priority: e.priority,
        from: [0; CNET_ADDRSTRLEN],
        to: [0; CNET_ADDRSTRLEN],
        iif: [0; CNET_IFNAMSIZ],
        oif: [0; CNET_IFNAMSIZ],
        fwmark: e.fwmark.unwrap_or(0),
        fwmask: e.fwmask.unwrap_or(0),
        has_fwmark: e.fwmark.is_some(),
        invert: e.invert,
        suppress_prefixlength: e.suppress_prefixlen.unwrap_or(0),
        has_suppress_prefixlength: e.suppress_prefixlen.is_some(),
        action,
        action_raw,
        table,
        goto_priority,
        protocol: e.protocol,
    };
    if let Some(p) = e.from {
        fill(&mut c.from, &p.to_string())?;
    }
    if let Some(p) = e.to {
        fill(&mut c.to, &p.to_string())?;
    }
    if let Some(d) = &e.iif {
        fill(&mut c.iif, d)?;
    }
    if let Some(d) = &e.oif {
        fill(&mut c.oif, d)?;
    }
    Ok(c)
}

/// `ip rule add …`; `CNET_ALREADY_EXISTS` if an identical rule is there.
#[no_mangle]
pub extern "C" fn cnet_rule_add(
    h: *const cnet_handle,
    rule: *const cnet_rule,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let r = rule_of(obj(rule, "rule")?)?;
        h.h.rules().add(r)?;
        Ok(())
    })
}

/// `ip rule del …`: deletes the first rule matching every field `rule`
/// sets; `CNET_NOT_FOUND` if none does.
#[no_mangle]
pub extern "C" fn cnet_rule_delete(
    h: *const cnet_handle,
    rule: *const cnet_rule,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let r = rule_of(obj(rule, "rule")?)?;
        h.h.rules().delete(r)?;
        Ok(())
    })
}

/// Delete the rule if present; `*deleted` (may be NULL) says whether it was.
#[no_mangle]
pub extern "C" fn cnet_rule_delete_if_exists(
    h: *const cnet_handle,
    rule: *const cnet_rule,
    deleted: *mut bool,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let r = rule_of(obj(rule, "rule")?)?;
        let d = h.h.rules().delete_if_exists(r)?;
        set_if_asked(deleted, || d);
        Ok(())
    })
}

/// The rules of `family` (AF_INET, AF_INET6; 0: both, IPv4 first), in the
/// kernel's order (`ip rule show`).
#[no_mangle]
pub extern "C" fn cnet_rule_list(
    h: *const cnet_handle,
    family: u8,
    out: *mut *mut cnet_rule_array,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let f = family_of(family, "family")?;
        let out = out_ptr(out, "out")?;
        let items =
            h.h.rules()
                .list(f)?
                .iter()
                .map(entry_of)
                .collect::<Res<Vec<_>>>()?;
        list_out(out, items, Vec::new());
        Ok(())
    })
}

/// Free a rule list. `cnet_rule_array_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_rule_array_free(list: *mut cnet_rule_array) {
    free_box(list)
}

/// Make the rules of `protocol` (0: cnet's), of `family` only (AF_INET,
/// AF_INET6; 0: both), exactly `rules`: add the missing, replace the
/// different (make-before-break), delete the stale. Rules are identified
/// by family and priority, so each needs a priority; rules of other
/// protocols are never touched. `counts` (may be NULL) is written on
/// success; `CNET_PARTIAL` names every item that failed.
#[no_mangle]
pub extern "C" fn cnet_rule_reconcile(
    h: *const cnet_handle,
    protocol: u8,
    family: u8,
    rules: *const cnet_rule,
    len: usize,
    counts: *mut cnet_reconcile_counts,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let protocol = if protocol == 0 {
            CNET_ROUTE_PROTOCOL
        } else {
            protocol
        };
        let mut owner = RuleOwner::new(protocol);
        if let Some(f) = family_of(family, "family")? {
            owner = owner.family(f);
        }
        let desired = items(rules, len, "rules", rule_of)?;
        let c = h.h.rules().reconcile(&owner, &desired)?.into_result()?;
        set_if_asked(counts, || counts_of(c));
        Ok(())
    })
}
