//! libcnet: the C ABI over cnet-core, for Go and C orchestrators. The
//! header is `include/cnet.h`, generated from this crate by cbindgen
//! (tests/header.rs fails when it drifts).
//!
//! ```text
//!  C / Go ──▶ cnet_<object>_<verb>(handle, inputs…, outputs…, cnet_error **err) ─▶ cnet_result
//!               │ boundary: panic guard, NULL / UTF-8 / enum checks, Error → code + cnet_error
//!               ▼
//!  cnet_netns, cnet_handle ── links · addrs · routes · neigh · fdb        (cnet-core objects)
//!                            rules · nexthops
//!  cnet_ipam_store ── cnet_leases (node subnets) · cnet_pool (addresses)  (cnet-core ipam)
//!  cnet_bridge_network ── ensure · attach (CNI JSON) · detach · check     (cnet-core network)
//!  cnet_node ── reconcile peers / leases with a backend                   (cnet-core network)
//!  cnet_trace ── the path a packet takes, as JSON                          (cnet-debug library)
//! ```
//!
//! The rules (rustls-ffi's and wasmtime's, see STYLE.md): every fallible
//! function returns a `cnet_result` (numbered, never renumbered) and takes
//! an optional last `cnet_error **err`; out-parameters are written only on
//! success; every object has a `_free` and `_free(NULL)` is a no-op;
//! strings are NUL-terminated UTF-8; lists are owned arrays with their own
//! `_free`; inputs are plain C structs (start them zeroed); no thread-local
//! state, and no call depends on the calling thread's namespace.

#![allow(non_camel_case_types)]

pub mod addr;
pub mod aws;
pub mod boundary;
pub mod ipam;
pub mod link;
pub mod neigh;
pub mod network;
pub mod nexthop;
pub mod node;
pub mod ns;
mod out;
pub mod route;
pub mod rule;
pub mod trace;

use std::ffi::c_char;

/// Major version of libcnet (the header's `CNET_VERSION_MAJOR`).
pub const CNET_VERSION_MAJOR: u32 = 0;
/// Minor version.
pub const CNET_VERSION_MINOR: u32 = 1;
/// Patch version.
pub const CNET_VERSION_PATCH: u32 = 0;

/// The library version ("0.1.0") as a static NUL-terminated string:
/// compare with the header's `CNET_VERSION_*` to detect a mismatched
/// library at run time.
#[no_mangle]
pub extern "C" fn cnet_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// A string made by libcnet (trace reports, CNI results): free with
/// `cnet_string_free`. `cnet_string_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_string_free(s: *mut c_char) {
    out::free_string(s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_the_crate_version() {
        // SAFETY: cnet_version returns a static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(super::cnet_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
        assert_eq!(
            format!(
                "{}.{}.{}",
                super::CNET_VERSION_MAJOR,
                super::CNET_VERSION_MINOR,
                super::CNET_VERSION_PATCH
            ),
            env!("CARGO_PKG_VERSION")
        );
    }
}
