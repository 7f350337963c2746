//! Any bytes as a pool file (format 3): no panic, and what decodes (header
//! copies, index buckets, slots) encodes back to itself; see
//! `cnet_core::ipam::fuzz::pool_file`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cnet_core::ipam::fuzz::pool_file(data));
