//! Helpers of the cnet-ffi tests, called as C would: a code and message of
//! a failing call, success checked, strings read back from libcnet. (What
//! the whole workspace's tests share comes from cnet-test-support.)
#![allow(dead_code)] // each test binary uses a different subset

pub mod etcd;

use std::ffi::{c_char, CStr};
use std::ptr::null_mut;

use cnet::boundary::*;

/// Invalid UTF-8, NUL-terminated.
pub const BAD: &[u8] = b"\xff\xfe\0";

/// [`BAD`] as a C string.
pub fn bad() -> *const c_char {
    BAD.as_ptr().cast()
}

/// Code and message of a failing call, the error freed.
pub fn fails(f: impl FnOnce(*mut *mut cnet_error) -> cnet_result) -> (cnet_result, String) {
    let mut err = null_mut();
    let rc = f(&mut err);
    assert_ne!(rc, CNET_OK);
    assert!(!err.is_null(), "a failing call sets *err");
    assert_eq!(cnet_error_code(err), rc);
    // SAFETY: a live error's message is a NUL-terminated string.
    let m = unsafe { CStr::from_ptr(cnet_error_message(err)) }
        .to_string_lossy()
        .into_owned();
    cnet_error_free(err);
    (rc, m)
}

/// `f` succeeds (the message in the panic otherwise).
pub fn ok(f: impl FnOnce(*mut *mut cnet_error) -> cnet_result) {
    let mut err = null_mut();
    let rc = f(&mut err);
    if rc != CNET_OK {
        // SAFETY: a live error.
        let m = unsafe { CStr::from_ptr(cnet_error_message(err)) }.to_string_lossy();
        panic!("{}: {m}", result_name(rc));
    }
    assert!(err.is_null(), "success sets *err to NULL");
}

/// The name of a result code (`CNET_…`).
pub fn result_name(rc: cnet_result) -> String {
    // SAFETY: static NUL-terminated string.
    unsafe { CStr::from_ptr(cnet_result_name(rc)) }
        .to_string_lossy()
        .into_owned()
}

/// A fixed-size string field of a libcnet struct.
pub fn s(p: &[c_char]) -> String {
    // SAFETY: fixed-size fields written by libcnet are NUL-terminated.
    unsafe { CStr::from_ptr(p.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// A string a live libcnet object owns (not NULL).
pub fn ps(p: *const c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: a string owned by a live libcnet object.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
