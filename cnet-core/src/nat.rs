//! Source NAT for container traffic leaving the cluster (CNI's `ipMasq`),
//! in nftables over netlink:
//!
//! ```text
//! table ip cnet {                    (ip6 cnet for an IPv6 source)
//!   chain postrouting {
//!     type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr 10.244.1.0/24 ip daddr != 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade comment "cnet cnb0: …"
//!   }
//! }
//! ```
//!
//! One rule per tag (a bridge network's is `cnet BRIDGE`), found again by
//! its comment, which also spells what it matches: [`ensure_masquerade`]
//! writes nothing when the rule is there as asked and replaces it in one
//! transaction when it differs; [`remove_masquerade`] of a rule already
//! gone succeeds. Nothing outside table `cnet` is read or touched, so other
//! tools' tables (Docker's, podman's, firewalld's) stay as they are.
//!
//! The messages are hand-encoded: `netlink-packet-route` speaks rtnetlink
//! only, and the Rust nftables crates either build libnftnl/clang bindings
//! or run the `nft` program; the few attributes a masquerade rule needs
//! (`payload`, `bitwise`, `cmp`, `masq`, the comment as nft writes it) are
//! below, each named as in `linux/netfilter/nf_tables.h`.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use netlink_sys::protocols::NETLINK_NETFILTER;

use crate::error::KernelError;
use crate::handle::Handle;
use crate::netlink::Socket;
use crate::{Error, Result};

/// The table (in family `ip` or `ip6`) and chain cnet keeps its rules in.
pub const TABLE: &str = "cnet";
/// The chain: `type nat hook postrouting priority srcnat`.
pub const CHAIN: &str = "postrouting";

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NF_INET_POST_ROUTING: u32 = 4;
/// `srcnat`.
const NF_IP_PRI_NAT_SRC: i32 = 100;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_REG_1: u32 = 1;
/// nft's comment in a rule's user data (`NFTNL_UDATA_RULE_COMMENT`).
const UDATA_RULE_COMMENT: u8 = 0;

/// How long a transaction's answers may take before the call fails.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A masquerade rule: traffic from `source` to anywhere but `exclude` (and
/// multicast) leaves with the address of the interface it leaves by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    /// What finds the rule again (its comment starts with `TAG:`); a
    /// bridge network's is `cnet BRIDGE`.
    pub tag: String,
    /// The containers' subnet.
    pub source: IpNet,
    /// Destinations reached without translation: the cluster network
    /// (other hosts' containers see the container's own address), or the
    /// subnet itself.
    pub exclude: Vec<IpNet>,
}

impl Masquerade {
    /// What the rule's comment says: the tag, then what it matches. Two
    /// rules with one comment match the same packets.
    pub fn comment(&self) -> String {
        let ex: Vec<String> = self.exclude.iter().map(|n| n.trunc().to_string()).collect();
        format!(
            "{}: {} -> not {}",
            self.tag,
            self.source.trunc(),
            ex.join(", ")
        )
    }

    fn validate(&self) -> Result<()> {
        let ctx = format!("masquerade {}", self.tag);
        if self.tag.is_empty() || self.tag.contains(':') || self.tag.len() > 64 {
            return Err(Error::invalid(
                ctx,
                "the tag must be 1 to 64 characters, without ':'",
            ));
        }
        let v6 = self.source.addr().is_ipv6();
        if let Some(n) = self.exclude.iter().find(|n| n.addr().is_ipv6() != v6) {
            return Err(Error::invalid(
                ctx,
                format!("{n} is not of the source's family ({})", self.source),
            ));
        }
        if self.exclude.len() > 8 {
            return Err(Error::invalid(ctx, "at most 8 excluded destinations"));
        }
        Ok(())
    }
}

/// A rule of table `cnet` as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatRule {
    /// The kernel's handle of the rule.
    pub handle: u64,
    /// Its comment (`TAG: …`), if any.
    pub comment: Option<String>,
    /// `true` for table `ip6 cnet`.
    pub ipv6: bool,
}

/// Make sure `m` is in place in `host`'s namespace: table, chain and rule
/// made in one transaction, an older rule of the same tag replaced in the
/// same transaction. `Ok(false)` when it was already there as asked.
pub fn ensure_masquerade(host: &Handle, m: &Masquerade) -> Result<bool> {
    m.validate()?;
    let v6 = m.source.addr().is_ipv6();
    let ctx = format!(
        "masquerade {} in {} (nftables table {} {TABLE})",
        m.source,
        host.netns().label(),
        if v6 { "ip6" } else { "ip" }
    );
    let mut sock = open(host, &ctx)?;
    let comment = m.comment();
    let ours: Vec<NatRule> = rules(&mut sock, v6, &ctx)?
        .into_iter()
        .filter(|r| tagged(r, &m.tag))
        .collect();
    if ours.len() == 1 && ours[0].comment.as_deref() == Some(comment.as_str()) {
        return Ok(false);
    }
    let fam = family(v6);
    let mut msgs = vec![
        (
            nft(NFT_MSG_NEWTABLE),
            msg(fam, |b| str_attr(b, NFTA_TABLE_NAME, TABLE)),
            NLM_F_CREATE,
        ),
        (nft(NFT_MSG_NEWCHAIN), msg(fam, chain_attrs), NLM_F_CREATE),
    ];
    for r in &ours {
        msgs.push((nft(NFT_MSG_DELRULE), msg(fam, |b| rule_ref(b, r.handle)), 0));
    }
    msgs.push((
        nft(NFT_MSG_NEWRULE),
        msg(fam, |b| rule_attrs(b, m, &comment)),
        NLM_F_CREATE | NLM_F_APPEND,
    ));
    transaction(&mut sock, &msgs, &ctx)?;
    Ok(true)
}

/// Remove the rule of `tag` (from both families' tables); `Ok(false)` when
/// there was none (also when table `cnet` does not exist).
pub fn remove_masquerade(host: &Handle, tag: &str) -> Result<bool> {
    let ctx = format!(
        "remove masquerade {tag} in {} (nftables table {TABLE})",
        host.netns().label()
    );
    let mut sock = open(host, &ctx)?;
    let mut removed = false;
    for v6 in [false, true] {
        let ours: Vec<NatRule> = rules(&mut sock, v6, &ctx)?
            .into_iter()
            .filter(|r| tagged(r, tag))
            .collect();
        if ours.is_empty() {
            continue;
        }
        let msgs: Vec<_> = ours
            .iter()
            .map(|r| {
                (
                    nft(NFT_MSG_DELRULE),
                    msg(family(v6), |b| rule_ref(b, r.handle)),
                    0,
                )
            })
            .collect();
        match transaction(&mut sock, &msgs, &ctx) {
            Ok(()) => removed = true,
            Err(Error::NotFound { .. }) => {} // removed meanwhile
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// The rules of table `cnet` (`ip` and `ip6`), ours or not.
pub fn list_nat_rules(host: &Handle) -> Result<Vec<NatRule>> {
    let ctx = format!("list nftables table {TABLE} in {}", host.netns().label());
    let mut sock = open(host, &ctx)?;
    let mut all = rules(&mut sock, false, &ctx)?;
    all.extend(rules(&mut sock, true, &ctx)?);
    Ok(all)
}

fn tagged(r: &NatRule, tag: &str) -> bool {
    r.comment
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .is_some_and(|(t, _)| t == tag)
}

fn open(host: &Handle, ctx: &str) -> Result<Socket> {
    host.netns()
        .open_within(|| Socket::open_protocol(NETLINK_NETFILTER, "open netfilter netlink socket"))
        .map_err(|e| match e {
            // No netfilter netlink in this kernel.
            Error::Io { source, .. } if source.raw_os_error() == Some(libc::EPROTONOSUPPORT) => {
                Error::Unsupported {
                    context: ctx.to_string(),
                    kernel: Some(KernelError::new(
                        libc::EPROTONOSUPPORT,
                        Some(format!("nftables: {source}")),
                    )),
                }
            }
            e => e.with_context(ctx),
        })
}

fn family(v6: bool) -> u8 {
    if v6 {
        NFPROTO_IPV6
    } else {
        NFPROTO_IPV4
    }
}

fn nft(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// The rules of `family cnet postrouting`; none when the table or chain
/// does not exist.
fn rules(sock: &mut Socket, v6: bool, ctx: &str) -> Result<Vec<NatRule>> {
    let req = msg(family(v6), |b| {
        str_attr(b, NFTA_RULE_TABLE, TABLE);
        str_attr(b, NFTA_RULE_CHAIN, CHAIN);
    });
    let mut out = Vec::new();
    let c = || ctx.to_string();
    let r = sock.dump_raw_each(nft(NFT_MSG_GETRULE), &req, &c, &mut |m| {
        match m {
            None => out.clear(),
            Some((_, body)) => {
                if let Some(r) = parse_rule(body, v6) {
                    out.push(r);
                }
            }
        }
        Ok(())
    });
    match r {
        Ok(()) => Ok(out),
        Err(Error::NotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn parse_rule(body: &[u8], v6: bool) -> Option<NatRule> {
    let (mut table, mut chain, mut handle, mut comment) = (None, None, None, None);
    for (ty, data) in attrs(body.get(4..)?) {
        match ty {
            NFTA_RULE_TABLE => table = Some(cstr(data)),
            NFTA_RULE_CHAIN => chain = Some(cstr(data)),
            NFTA_RULE_HANDLE => handle = Some(u64::from_be_bytes(data.get(..8)?.try_into().ok()?)),
            NFTA_RULE_USERDATA => comment = udata_comment(data),
            _ => {}
        }
    }
    if table.as_deref() != Some(TABLE) || chain.as_deref() != Some(CHAIN) {
        return None;
    }
    Some(NatRule {
        handle: handle?,
        comment,
        ipv6: v6,
    })
}

/// nft's user data: (type, length, value) records; the comment's value
/// ends with a NUL.
fn udata_comment(mut d: &[u8]) -> Option<String> {
    while d.len() >= 2 {
        let (ty, len) = (d[0], d[1] as usize);
        let v = d.get(2..2 + len)?;
        if ty == UDATA_RULE_COMMENT {
            return Some(cstr(v));
        }
        d = &d[2 + len..];
    }
    None
}

fn cstr(d: &[u8]) -> String {
    let end = d.iter().position(|&b| b == 0).unwrap_or(d.len());
    String::from_utf8_lossy(&d[..end]).into_owned()
}

/// The attributes of `d` as (type without flags, value): the walk
/// `netlink-packet-core` does for every other message of this crate; it
/// stops at the first malformed one.
fn attrs(d: &[u8]) -> Vec<(u16, &[u8])> {
    netlink_packet_core::NlasIterator::new(d)
        .map_while(|n| n.ok())
        .filter_map(|n| {
            let (kind, len) = (n.kind(), usize::from(n.length()));
            n.into_inner().get(4..len).map(|v| (kind, v))
        })
        .collect()
}

fn transaction(sock: &mut Socket, msgs: &[(u16, Vec<u8>, u16)], ctx: &str) -> Result<()> {
    // The batch messages are addressed to the nftables subsystem.
    let mut batch = vec![0u8, 0];
    batch.extend_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
    let what = |i: usize| match msgs.get(i).map(|m| m.0 & 0xff) {
        Some(NFT_MSG_NEWTABLE) => format!("{ctx}: create table"),
        Some(NFT_MSG_NEWCHAIN) => format!("{ctx}: create chain {CHAIN}"),
        Some(NFT_MSG_NEWRULE) => format!("{ctx}: add rule"),
        Some(NFT_MSG_DELRULE) => format!("{ctx}: delete rule"),
        _ => ctx.to_string(),
    };
    sock.transaction_raw(
        (NFNL_MSG_BATCH_BEGIN, &batch),
        msgs,
        (NFNL_MSG_BATCH_END, &batch),
        TIMEOUT,
        &what,
    )
}

// ---------------------------------------------------------------------------
// Encoding

/// An nfnetlink message: `nfgenmsg` (family, version 0, resource 0), then
/// the attributes `f` writes.
fn msg(family: u8, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = vec![family, 0, 0, 0];
    f(&mut b);
    b
}

fn attr(b: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    b.extend_from_slice(&(len as u16).to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(data);
    b.resize((b.len() + 3) & !3, 0);
}

fn str_attr(b: &mut Vec<u8>, ty: u16, s: &str) {
    let mut d = s.as_bytes().to_vec();
    d.push(0);
    attr(b, ty, &d);
}

fn u32_attr(b: &mut Vec<u8>, ty: u16, v: u32) {
    attr(b, ty, &v.to_be_bytes());
}

fn nest(b: &mut Vec<u8>, ty: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    f(&mut inner);
    attr(b, ty | NLA_F_NESTED, &inner);
}

fn chain_attrs(b: &mut Vec<u8>) {
    str_attr(b, NFTA_CHAIN_TABLE, TABLE);
    str_attr(b, NFTA_CHAIN_NAME, CHAIN);
    nest(b, NFTA_CHAIN_HOOK, |h| {
        u32_attr(h, NFTA_HOOK_HOOKNUM, NF_INET_POST_ROUTING);
        attr(h, NFTA_HOOK_PRIORITY, &NF_IP_PRI_NAT_SRC.to_be_bytes());
    });
    str_attr(b, NFTA_CHAIN_TYPE, "nat");
}

fn rule_ref(b: &mut Vec<u8>, handle: u64) {
    str_attr(b, NFTA_RULE_TABLE, TABLE);
    str_attr(b, NFTA_RULE_CHAIN, CHAIN);
    attr(b, NFTA_RULE_HANDLE, &handle.to_be_bytes());
}

fn rule_attrs(b: &mut Vec<u8>, m: &Masquerade, comment: &str) {
    str_attr(b, NFTA_RULE_TABLE, TABLE);
    str_attr(b, NFTA_RULE_CHAIN, CHAIN);
    let v6 = m.source.addr().is_ipv6();
    // Source and destination address: offset and length in the IP header.
    let (src_at, dst_at, len) = if v6 { (8, 24, 16) } else { (12, 16, 4) };
    let multicast: IpNet = if v6 {
        "ff00::/8".parse().unwrap_or(m.source)
    } else {
        "224.0.0.0/4".parse().unwrap_or(m.source)
    };
    nest(b, NFTA_RULE_EXPRESSIONS, |l| {
        match_net(l, src_at, len, &m.source, NFT_CMP_EQ);
        for n in m.exclude.iter().chain([&multicast]) {
            match_net(l, dst_at, len, n, NFT_CMP_NEQ);
        }
        nest(l, NFTA_LIST_ELEM, |e| str_attr(e, NFTA_EXPR_NAME, "masq"));
    });
    let mut text = comment.as_bytes().to_vec();
    text.truncate(250);
    text.push(0);
    let mut udata = vec![UDATA_RULE_COMMENT, text.len() as u8];
    udata.extend_from_slice(&text);
    attr(b, NFTA_RULE_USERDATA, &udata);
}

/// `payload load` of the address at `at`, `bitwise` with the prefix's
/// mask, `cmp op` with the network: `ip saddr NET` / `ip daddr != NET`.
fn match_net(l: &mut Vec<u8>, at: u32, len: u32, net: &IpNet, op: u32) {
    let (addr, mask) = (octets(net.trunc().addr()), octets(net.netmask()));
    expr(l, "payload", |d| {
        u32_attr(d, NFTA_PAYLOAD_DREG, NFT_REG_1);
        u32_attr(d, NFTA_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
        u32_attr(d, NFTA_PAYLOAD_OFFSET, at);
        u32_attr(d, NFTA_PAYLOAD_LEN, len);
    });
    expr(l, "bitwise", |d| {
        u32_attr(d, NFTA_BITWISE_SREG, NFT_REG_1);
        u32_attr(d, NFTA_BITWISE_DREG, NFT_REG_1);
        u32_attr(d, NFTA_BITWISE_LEN, len);
        nest(d, NFTA_BITWISE_MASK, |v| attr(v, NFTA_DATA_VALUE, &mask));
        nest(d, NFTA_BITWISE_XOR, |v| {
            attr(v, NFTA_DATA_VALUE, &vec![0; mask.len()])
        });
    });
    expr(l, "cmp", |d| {
        u32_attr(d, NFTA_CMP_SREG, NFT_REG_1);
        u32_attr(d, NFTA_CMP_OP, op);
        nest(d, NFTA_CMP_DATA, |v| attr(v, NFTA_DATA_VALUE, &addr));
    });
}

fn expr(l: &mut Vec<u8>, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
    nest(l, NFTA_LIST_ELEM, |e| {
        str_attr(e, NFTA_EXPR_NAME, name);
        nest(e, NFTA_EXPR_DATA, data);
    });
}

fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_spell_the_match_and_tags_are_found_again() {
        let m = Masquerade {
            tag: "cnet cnb0".into(),
            source: "10.244.1.0/24".parse().unwrap(),
            exclude: vec!["10.244.0.0/16".parse().unwrap()],
        };
        assert_eq!(m.comment(), "cnet cnb0: 10.244.1.0/24 -> not 10.244.0.0/16");
        let r = NatRule {
            handle: 4,
            comment: Some(m.comment()),
            ipv6: false,
        };
        assert!(tagged(&r, "cnet cnb0"));
        assert!(!tagged(&r, "cnet cnb"));
        let bad = Masquerade {
            exclude: vec!["fd00::/8".parse().unwrap()],
            ..m
        };
        assert!(matches!(bad.validate(), Err(Error::InvalidArgument { .. })));
    }

    #[test]
    fn user_data_comment_round_trips_as_nft_writes_it() {
        let m = Masquerade {
            tag: "t".into(),
            source: "10.0.0.0/8".parse().unwrap(),
            exclude: vec![],
        };
        let mut b = Vec::new();
        rule_attrs(&mut b, &m, "t: hello");
        let ud = attrs(&b)
            .into_iter()
            .find(|(t, _)| *t == NFTA_RULE_USERDATA)
            .unwrap()
            .1;
        assert_eq!(ud[0], UDATA_RULE_COMMENT);
        assert_eq!(udata_comment(ud).as_deref(), Some("t: hello"));
    }
}
