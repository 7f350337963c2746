//! Per-namespace sysctls (`/proc/sys/net/...`).
//!
//! `/proc/sys/net` shows the namespace of the thread that opens the file, so
//! reads and writes happen on a short-lived thread inside the handle's
//! namespace (or right here when the calling thread is in it already: the
//! same view without a thread); the caller's thread never moves.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::netns::{io_to_error, NetNs};

/// Sysctls of one namespace. Obtain with [`crate::Handle::sysctl`].
#[derive(Debug)]
pub struct Sysctl<'a> {
    ns: &'a NetNs,
}

fn key_path(segments: &[&str]) -> Result<PathBuf> {
    let ctx = || format!("sysctl {}", segments.join("."));
    if segments.first() != Some(&"net") {
        return Err(Error::invalid(
            ctx(),
            "only net.* sysctls are per namespace",
        ));
    }
    let mut p = PathBuf::from("/proc/sys");
    for s in segments {
        if s.is_empty() || *s == "." || *s == ".." || s.contains('/') {
            return Err(Error::invalid(ctx(), format!("bad key segment {s:?}")));
        }
        p.push(s);
    }
    Ok(p)
}

fn split_key(key: &str) -> Vec<&str> {
    key.split('.').collect()
}

/// The interface part of `net.ipv4.conf.DEV.KEY`: "all", "default" or a link name.
fn dev_segment(dev: &str) -> Result<&str> {
    if dev != "all" && dev != "default" {
        crate::link::validate_name(dev)?;
    }
    Ok(dev)
}

impl<'a> Sysctl<'a> {
    pub(crate) fn new(ns: &'a NetNs) -> Self {
        Self { ns }
    }

    /// Read a sysctl by key segments, e.g. `["net", "ipv4", "conf", "eth0.100", "rp_filter"]`
    /// (segments, so link names with dots stay whole).
    pub fn get_path(&self, segments: &[&str]) -> Result<String> {
        let path = key_path(segments)?;
        let ctx = format!("read sysctl {} in {}", segments.join("."), self.ns.label());
        let r = self
            .ns
            .open_within(move || Ok(std::fs::read_to_string(&path)))?;
        r.map(|s| s.trim_end().to_string())
            .map_err(|e| io_to_error(ctx, e))
    }

    /// Write a sysctl by key segments.
    pub fn set_path(&self, segments: &[&str], value: &str) -> Result<()> {
        let path = key_path(segments)?;
        let ctx = format!(
            "write sysctl {}={value} in {}",
            segments.join("."),
            self.ns.label()
        );
        let v = value.to_string();
        let r = self
            .ns
            .open_within(move || Ok(std::fs::write(&path, v.as_bytes())))?;
        r.map_err(|e| io_to_error(ctx, e))
    }

    /// Read a dotted key: `get("net.ipv4.ip_forward")`.
    pub fn get(&self, key: &str) -> Result<String> {
        self.get_path(&split_key(key))
    }

    /// Write a dotted key: `set("net.ipv4.ip_forward", "1")`.
    pub fn set(&self, key: &str, value: &str) -> Result<()> {
        self.set_path(&split_key(key), value)
    }

    /// `net.ipv4.ip_forward`.
    pub fn ip_forward(&self) -> Result<bool> {
        Ok(self.get("net.ipv4.ip_forward")? == "1")
    }

    /// Set `net.ipv4.ip_forward`.
    pub fn set_ip_forward(&self, on: bool) -> Result<()> {
        self.set("net.ipv4.ip_forward", if on { "1" } else { "0" })
    }

    /// Set `net.ipv6.conf.all.forwarding`.
    pub fn set_ipv6_forwarding(&self, on: bool) -> Result<()> {
        self.set("net.ipv6.conf.all.forwarding", if on { "1" } else { "0" })
    }

    /// `net.ipv4.conf.DEV.rp_filter` (0 off, 1 strict, 2 loose).
    pub fn rp_filter(&self, dev: &str) -> Result<u8> {
        self.get_path(&["net", "ipv4", "conf", dev_segment(dev)?, "rp_filter"])?
            .parse()
            .map_err(|_| Error::Protocol {
                context: format!("read rp_filter of {dev}"),
                reason: "not a number".into(),
            })
    }

    /// Set `net.ipv4.conf.DEV.rp_filter`.
    pub fn set_rp_filter(&self, dev: &str, mode: u8) -> Result<()> {
        if mode > 2 {
            return Err(Error::invalid(
                format!("rp_filter of {dev}"),
                format!("mode {mode} is not 0 (off), 1 (strict) or 2 (loose)"),
            ));
        }
        self.set_path(
            &["net", "ipv4", "conf", dev_segment(dev)?, "rp_filter"],
            &mode.to_string(),
        )
    }

    /// Set `net.ipv4.conf.DEV.proxy_arp`.
    pub fn set_proxy_arp(&self, dev: &str, on: bool) -> Result<()> {
        self.set_path(
            &["net", "ipv4", "conf", dev_segment(dev)?, "proxy_arp"],
            if on { "1" } else { "0" },
        )
    }

    /// `net.ipv4.conf.DEV.forwarding`.
    pub fn forwarding(&self, dev: &str) -> Result<bool> {
        Ok(self.get_path(&["net", "ipv4", "conf", dev_segment(dev)?, "forwarding"])? == "1")
    }

    /// Set `net.ipv6.conf.DEV.accept_dad` (0 off, 1 on, 2 on and disable IPv6 on failure).
    pub fn set_accept_dad(&self, dev: &str, mode: u8) -> Result<()> {
        self.set_path(
            &["net", "ipv6", "conf", dev_segment(dev)?, "accept_dad"],
            &mode.to_string(),
        )
    }
}
