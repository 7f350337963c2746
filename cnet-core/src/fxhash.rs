//! A small FxHash-style hasher (the multiply-rotate hash rustc uses) for
//! the library's internal maps, whose keys (prefixes, metrics, device
//! names) come from the caller or the kernel, never from the network.
//! SipHash's resistance to chosen keys buys nothing there and costs a
//! large share of a reconcile.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0xf135_7aea_2e62_a9c5;

/// The hasher: one multiply per word written.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = self.hash.wrapping_add(word).wrapping_mul(K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, mut bytes: &[u8]) {
        while bytes.len() >= 8 {
            let (w, rest) = bytes.split_at(8);
            self.add(u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
            bytes = rest;
        }
        if bytes.len() >= 4 {
            let (w, rest) = bytes.split_at(4);
            self.add(u32::from_le_bytes(w.try_into().unwrap_or([0; 4])) as u64);
            bytes = rest;
        }
        for b in bytes {
            self.add(*b as u64);
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // The multiply leaves the entropy in the high bits; the table
        // indexes by the low ones.
        self.hash.rotate_left(26)
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
pub(crate) type FxHashMap<K, V> = HashMap<K, V, FxBuild>;
pub(crate) type FxHashSet<K> = HashSet<K, FxBuild>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn consecutive_prefixes_spread_over_low_bits() {
        let b = FxBuild::default();
        let mut low = HashSet::new();
        for i in 0..1024u32 {
            let net: ipnet::IpNet = ipnet::Ipv4Net::new((0x0a40_0000 + i).into(), 32)
                .unwrap()
                .into();
            low.insert(b.hash_one((net, 0u32)) & 0x3ff);
        }
        // A poor spread would pile keys into few buckets.
        assert!(low.len() > 600, "{} distinct low-bit patterns", low.len());
    }
}
