//! `cnet_ipam_store_open_etcd_with`: the TLS and auth options through the
//! C ABI. Bad options are refused before any request; against a real etcd
//! (Debian `etcd-server`, in a throwaway namespace cn-ffe-*, auth enabled
//! with curl) the right password opens the store and a wrong one is
//! `CNET_PERMISSION_DENIED` whose message never holds the password. The
//! server part runs as root only, and says so otherwise.
#![cfg(feature = "etcd")]

mod common;

use std::ffi::{c_char, CStr, CString};
use std::ptr::{null, null_mut};

use cnet::boundary::*;
use cnet::ipam::*;
use common::etcd::Etcd;

const PASSWORD: &str = "ffi-pw-never-shown-7Qx";

fn opts() -> cnet_etcd_options {
    cnet_etcd_options {
        ca_file: null(),
        cert_file: null(),
        key_file: null(),
        username: null(),
        password: null(),
    }
}

/// Open with `o`; the result code and the error message (freed).
fn open(url: &str, o: Option<&cnet_etcd_options>) -> (cnet_result, String) {
    let url = CString::new(url).unwrap();
    let eps = [url.as_ptr()];
    let mut store = null_mut();
    let mut err = null_mut();
    let rc = cnet_ipam_store_open_etcd_with(
        eps.as_ptr(),
        1,
        c"/cnet".as_ptr(),
        1000,
        o.map_or(null(), |o| o as *const _),
        &mut store,
        &mut err,
    );
    let msg = if err.is_null() {
        String::new()
    } else {
        // SAFETY: a live error's message is a NUL-terminated string.
        let m = unsafe { CStr::from_ptr(cnet_error_message(err)) }
            .to_string_lossy()
            .into_owned();
        cnet_error_free(err);
        m
    };
    assert_eq!(
        rc == CNET_OK,
        !store.is_null(),
        "out written only on success"
    );
    cnet_ipam_store_free(store);
    (rc, msg)
}

#[test]
fn etcd_options_are_checked_before_connecting() {
    let url = "http://127.0.0.1:1";
    let pw = CString::new(PASSWORD).unwrap();
    let mut o = opts();
    o.password = pw.as_ptr();
    let (rc, msg) = open(url, Some(&o));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("without options.username"), "{msg}");
    assert!(!msg.contains(PASSWORD));

    let mut o = opts();
    o.cert_file = c"/nonexistent/client.pem".as_ptr();
    let (rc, msg) = open(url, Some(&o));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "certificate without key: {msg}");

    let mut o = opts();
    o.ca_file = c"/nonexistent/ca.pem".as_ptr();
    let (rc, msg) = open(url, Some(&o));
    assert_ne!(rc, CNET_OK);
    assert!(msg.contains("/nonexistent/ca.pem"), "{msg}");

    let bad: &[u8] = b"\xff\xfe\0";
    let mut o = opts();
    o.username = bad.as_ptr().cast::<c_char>();
    assert_eq!(open(url, Some(&o)).0, CNET_INVALID_UTF8);

    // NULL options and all-NULL options: plain cnet_ipam_store_open_etcd
    // (nothing listens on port 1).
    assert_ne!(open(url, None).0, CNET_OK);
    assert_ne!(open(url, Some(&opts())).0, CNET_OK);
}

#[test]
fn etcd_options_user_password_through_the_abi() {
    let Some(etcd) = Etcd::start() else {
        return;
    };
    for (path, body) in [
        (
            "/v3/auth/user/add",
            format!(r#"{{"name":"root","password":"{PASSWORD}"}}"#),
        ),
        ("/v3/auth/role/add", r#"{"name":"root"}"#.to_string()),
        (
            "/v3/auth/user/grant",
            r#"{"user":"root","role":"root"}"#.to_string(),
        ),
        ("/v3/auth/enable", "{}".to_string()),
    ] {
        let out = etcd.curl(path, &body);
        assert!(!out.contains("\"error\""), "{path}: {out}");
    }
    let url = "http://127.0.0.1:2379";
    let pw = CString::new(PASSWORD).unwrap();
    etcd.run(|| {
        let mut o = opts();
        o.username = c"root".as_ptr();
        o.password = pw.as_ptr();
        let (rc, msg) = open(url, Some(&o));
        assert_eq!(rc, CNET_OK, "{msg}");

        o.password = c"wrong".as_ptr();
        let (rc, msg) = open(url, Some(&o));
        assert_eq!(rc, CNET_PERMISSION_DENIED, "{msg}");
        assert!(msg.contains("user name or password"), "{msg}");
        assert!(!msg.contains("wrong"), "{msg}");
        assert!(!msg.contains(PASSWORD), "{msg}");
        println!("wrong password: {msg}");

        let (rc, msg) = open(url, None);
        assert_eq!(rc, CNET_PERMISSION_DENIED, "no user: {msg}");
    });
}
