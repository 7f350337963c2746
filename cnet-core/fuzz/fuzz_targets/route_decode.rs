//! Any byte string as an `RTM_NEWROUTE` payload: the fast route decoder
//! and the full one must agree (both refuse, or both accept with the same
//! fields). See `RouteEntry::check_decoders`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(why) = cnet_core::route::RouteEntry::check_decoders(data) {
        panic!("decoders disagree: {why}\ninput: {data:?}");
    }
});
