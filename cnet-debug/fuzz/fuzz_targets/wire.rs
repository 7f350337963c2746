//! libFuzzer target: every input goes through the frame decoder as an
//! Ethernet frame and as a bare IP packet, and the decoder's invariants are
//! checked (`cnet_debug::wire::check_decoders`, the same function the
//! stable test `cnet-debug/tests/fuzz_wire.rs` runs on seeded mutations).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cnet_debug::wire::check_decoders(data);
});
