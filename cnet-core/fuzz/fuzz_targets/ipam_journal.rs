//! Any bytes as a pool journal: no panic, and the invariants of
//! `cnet_core::ipam::fuzz::journal` (round trip, torn tail only past the
//! acked mark).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cnet_core::ipam::fuzz::journal(data));
