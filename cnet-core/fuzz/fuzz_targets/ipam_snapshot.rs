//! Any bytes as a pool snapshot file: no panic; what parses loads.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cnet_core::ipam::fuzz::snapshot(data));
