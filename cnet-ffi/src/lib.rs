//! C ABI over cnet-core (thin for now: the version). The full ABI follows
//! the rules in STYLE.md: result codes, `cnet_error **` out-parameters,
//! a panic boundary around every export.

use std::ffi::c_char;

/// The library version as a NUL-terminated string with static lifetime.
#[no_mangle]
pub extern "C" fn cnet_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_the_crate_version() {
        // SAFETY: cnet_version returns a static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(super::cnet_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
