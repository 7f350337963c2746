//! Names and MAC addresses a bridge network derives instead of storing.
//!
//! ```text
//!   sha256(container id ‖ 0 ‖ ifname) ─┬─ bytes 0..6  → "veth" + 11 hex    host-side name (15 bytes)
//!                                      └─ bytes 8..13 → 02:xx:xx:xx:xx:xx  host-side MAC (owner tag)
//!   container address 10.244.1.2 ─────────────────────→ 0a:58:0a:f4:01:02  container-side MAC
//!   gateway 10.244.1.1 ───────────────────────────────→ 0a:58:0a:f4:01:01  bridge MAC
//! ```
//!
//! * The host-side veth name is a pure function of `(container id,
//!   interface)`, so detach and check find it without entering the
//!   container's namespace and without any stored state (Calico names its
//!   `cali…` interfaces the same way). 44 bits of hash make a clash between
//!   two containers of one host improbable, not impossible: attach checks.
//! * The host-side MAC comes from other bits of the same hash. The kernel
//!   keeps it from the creating request, so it costs nothing, and it tags
//!   the link as this attachment's: a link that merely has the right name
//!   (a hash clash, someone else's device) is never taken for ours, never
//!   deleted by our detach.
//! * Container and bridge MACs are derived from their IP addresses (as
//!   OVN-Kubernetes does, `0a:58` + the IPv4 address): unique on the bridge
//!   because the addresses are, and stable when an address is reused, so
//!   the neighbours' ARP caches stay right. A bridge given its own MAC also
//!   stops following its ports' (the kernel otherwise takes the lowest port
//!   MAC, and the gateway's MAC would change as containers come and go).

use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::link::{validate_name, MacAddr};

/// Prefix of host-side veth names.
pub const HOST_VETH_PREFIX: &str = "veth";

/// The interface name used inside the container when the caller has no
/// preference (what CNI runtimes pass as `CNI_IFNAME`).
pub const DEFAULT_IFNAME: &str = "eth0";

/// Longest container id accepted (CNI sets no limit; runtimes use 64 hex
/// characters).
pub const MAX_CONTAINER_ID_LEN: usize = 255;

/// Check a container id as the CNI specification words it: not empty,
/// letters, digits, `_`, `.` and `-` only.
pub fn validate_container_id(id: &str) -> Result<()> {
    let ctx = || format!("container id {id:?}");
    if id.is_empty() {
        return Err(Error::invalid(ctx(), "must not be empty"));
    }
    if id.len() > MAX_CONTAINER_ID_LEN {
        return Err(Error::invalid(
            ctx(),
            format!("{} bytes, longer than {MAX_CONTAINER_ID_LEN}", id.len()),
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(Error::invalid(
            ctx(),
            "only letters, digits, '_', '.' and '-' are allowed (CNI_CONTAINERID)",
        ));
    }
    Ok(())
}

fn digest(container_id: &str, ifname: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(container_id.as_bytes());
    h.update([0u8]);
    h.update(ifname.as_bytes());
    h.finalize().into()
}

/// The host-side veth name of `(container_id, ifname)`: `veth` and 11 hex
/// digits of a SHA-256 of both, 15 bytes, the same on every call and every
/// machine. Refuses an invalid container id or interface name.
pub fn host_veth_name(container_id: &str, ifname: &str) -> Result<String> {
    validate_container_id(container_id)?;
    validate_name(ifname)?;
    Ok(host_veth_name_unchecked(container_id, ifname))
}

pub(crate) fn host_veth_name_unchecked(container_id: &str, ifname: &str) -> String {
    use std::fmt::Write;
    let d = digest(container_id, ifname);
    let mut s = String::with_capacity(15);
    s.push_str(HOST_VETH_PREFIX);
    for b in &d[..6] {
        let _ = write!(s, "{b:02x}");
    }
    s.truncate(15);
    s
}

/// The MAC address attach gives the host end of `(container_id, ifname)`:
/// locally administered unicast (`02:…`), 40 bits of the same hash as the
/// name (other bits).
pub fn host_veth_mac(container_id: &str, ifname: &str) -> MacAddr {
    let d = digest(container_id, ifname);
    MacAddr([0x02, d[8], d[9], d[10], d[11], d[12]])
}

/// The MAC address derived from an IP address: `0a:58` and the IPv4
/// address (the last four bytes of an IPv6 one). Locally administered,
/// unicast.
pub fn mac_for_ip(ip: IpAddr) -> MacAddr {
    let b = match ip {
        IpAddr::V4(v) => v.octets(),
        IpAddr::V6(v) => {
            let o = v.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    MacAddr([0x0a, 0x58, b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_stable_short_and_distinct() {
        let a = host_veth_name("c1", "eth0").unwrap();
        assert_eq!(a, host_veth_name("c1", "eth0").unwrap());
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("veth"));
        assert!(validate_name(&a).is_ok());
        assert_ne!(a, host_veth_name("c1", "eth1").unwrap());
        assert_ne!(a, host_veth_name("c2", "eth0").unwrap());
        // The separator keeps ("ab", "c…") and ("a", "bc…") apart.
        assert_ne!(
            host_veth_name("ab", "cd").unwrap(),
            host_veth_name("a", "bcd").unwrap()
        );
        // Pinned: a name must not change between versions, or detach after
        // an upgrade would not find what attach made before it. Same as
        // `printf 'c1\0eth0' | sha256sum | cut -c1-11`.
        assert_eq!(a, "vethec43057c07a");
    }

    #[test]
    fn host_macs_are_unicast_and_local() {
        let m = host_veth_mac("c1", "eth0");
        assert!(m.is_valid_unicast());
        assert_eq!(m.0[0], 0x02);
        assert_ne!(m, host_veth_mac("c2", "eth0"));
    }

    #[test]
    fn ip_macs() {
        assert_eq!(
            mac_for_ip("10.244.1.2".parse().unwrap()).to_string(),
            "0a:58:0a:f4:01:02"
        );
        assert_eq!(
            mac_for_ip("fd00::a:b".parse().unwrap()).to_string(),
            "0a:58:00:0a:00:0b"
        );
    }

    #[test]
    fn container_ids() {
        for ok in ["c1", "a_b.c-d", &"f".repeat(64)] {
            assert!(validate_container_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "ä", &"f".repeat(256)] {
            let e = validate_container_id(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { .. }), "{bad:?}");
        }
        assert!(host_veth_name("c1", "a234567890123456").is_err());
    }
}
