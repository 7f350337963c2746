//! Any bytes as an etcd JSON-gateway reply: no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cnet_core::ipam::fuzz::etcd_reply(data));
