//! `trace`: why a packet from a namespace does (or does not) reach an
//! address, as one JSON document: the kernel's decision at every hop
//! (explain, no packet sent) and, with capture, the proof by a probe
//! watched on every interface of the path.
//!
//! The path model is cnet-debug's library part (`cnet_debug::trace`);
//! libcnet depends on that crate's library, not on its CLI: `main.rs` is
//! not part of it, and the one clap item the library has (a `ValueEnum`
//! derive on the probe protocol) is compiled but unused here, so the
//! linker drops it from libcnet.

use std::ffi::c_char;
use std::net::IpAddr;
use std::time::Duration;

use cnet_core::Error;
use cnet_debug::probe::Proto;
use cnet_debug::trace::{explain, prove, Request};

use crate::boundary::{
    c_string, cnet_error, cnet_result, cstr, guard, obj, out_ptr, parse, parse_opt,
};
use crate::ns::cnet_netns;

/// Trace the path from namespace `from` to `dst` (source address `src`,
/// NULL: the kernel's choice). With `capture`, also send one ICMP echo
/// and capture on every interface of the predicted path for at most
/// `timeout_ms` (IPv4; needs CAP_NET_RAW). `*json` receives one JSON
/// object: `dst`, `src`, `from`, `hops[]` (each decision: namespace,
/// interface, route, neighbour, FDB, encapsulation), `findings[]`
/// (`code`, `severity`, `message`), `verdict` (`ok`, `outcome`:
/// `delivered` / `leaves_machine` / `broken`, `message`), `elapsed_us`,
/// and `capture` (null, or `replied`, `rtt_us`, `last_seen_hop`, `hops[]`
/// with `seen` per interface). A broken path is `CNET_OK` with
/// `verdict.ok` false; free the string with `cnet_string_free`.
#[no_mangle]
pub extern "C" fn cnet_trace(
    from: *const cnet_netns,
    dst: *const c_char,
    src: *const c_char,
    capture: bool,
    timeout_ms: u32,
    json: *mut *mut c_char,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let ns = obj(from, "from")?;
        let dst: IpAddr = parse(cstr(dst, "dst")?, "dst")?;
        let src = parse_opt::<IpAddr>(src, "src")?;
        let out = out_ptr(json, "json")?;
        if src.is_some_and(|s| s.is_ipv4() != dst.is_ipv4()) {
            return Err(Error::invalid("trace src", "not of the destination's family").into());
        }
        let req = Request {
            from: ns.ns.clone(),
            from_label: ns.ns.label(),
            dst,
            src,
            proto: Proto::Icmp,
            port: 0,
        };
        let t = explain(&req)?;
        let proof = if capture {
            Some(prove(
                &req,
                &t,
                Duration::from_millis(u64::from(timeout_ms)),
            )?)
        } else {
            None
        };
        let mut v =
            serde_json::to_value(&t).map_err(|e| Error::invalid("trace report", e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "capture".into(),
                serde_json::to_value(&proof)
                    .map_err(|e| Error::invalid("trace report", e.to_string()))?,
            );
        }
        out.set(c_string(&v.to_string()).into_raw());
        Ok(())
    })
}
