//! The boundary every export goes through: result codes, the `cnet_error`
//! object, the panic guard, and the few helpers that turn C pointers into
//! Rust references.
//!
//! ```text
//!  C caller ── cnet_link_add(h, &cfg, &err) ──▶ guard(err, || { … })
//!                                                │ catch_unwind: a panic → CNET_PANIC
//!                                                │ obj/cstr/slice: NULL, bad UTF-8 → CNET_NULL_ARGUMENT, CNET_INVALID_UTF8
//!                                                │ cnet_core::Error → its code + a cnet_error (message, errno, ext-ack)
//!  C caller ◀── cnet_result, *err = NULL or a cnet_error the caller frees
//! ```
//!
//! Safety model (rustls-ffi's): exports are `extern "C" fn` taking raw
//! pointers; the ABI contract written in cnet.h is that every non-NULL
//! pointer points to a live object of its type (or a NUL-terminated
//! string, or `len` elements). All dereferences happen in the helpers of
//! this module, each behind a NULL check; nothing else in the crate uses
//! `unsafe` except the ownership code in [`crate::out`], where each C type
//! handed out is tied to its Rust type and to the one free that fits it.
//!
//! # Panics and locks: one policy, recover
//!
//! A panic inside an export is a libcnet bug. [`guard`] turns it into
//! `CNET_PANIC` with the panic's message for the call that hit it, and
//! that is the whole penalty: a lock the panic poisoned is taken back with
//! `PoisonError::into_inner` ([`lock`]) by every later call, on every
//! object (`cnet_leases`, `cnet_pool` and the bridge networks sharing it,
//! and, in cnet-core, a handle's netlink socket, a bridge network's pool
//! and a node's WireGuard socket). Recovering is sound because no lock in
//! libcnet guards state a panic can leave half-updated:
//!
//! - the IPAM stores keep nothing in memory but their location and a
//!   client: their state is on disk (rewritten atomically under a file
//!   lock) or in etcd (changed by transactions), built to survive a
//!   process killed at any point, which a panic cannot be worse than;
//! - a netlink socket keeps a sequence counter and a scratch buffer that
//!   each request rebuilds; the replies of an exchange a panic abandoned
//!   carry older sequence numbers and are skipped by the next request.
//!
//! Failing for good instead would turn one bug into an outage: the C
//! caller would have to free and rebuild the object and everything sharing
//! it (a pool and its bridge networks) to go on, and would learn nothing
//! more than the first `CNET_PANIC` already said. What the panicking call
//! itself changed in the kernel is a different matter: multi-step
//! operations roll back on panic too (cnet-core's `undo`), and the header
//! warns that after `CNET_PANIC` "the objects involved may be in any
//! state".

use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard, PoisonError};

use cnet_core::Error;

use crate::out::{castable, to_boxed_mut_ptr};

/// A result code. Every fallible function returns one; `CNET_OK` (0) is
/// success. Codes are grouped in ranges and never renumbered: 1xx the
/// caller broke the ABI contract (NULL, bad UTF-8, out-of-range value, short
/// buffer), 2xx cnet's typed errors (`cnet_core::Error`'s variants), 299 a
/// library bug caught at the boundary (a panic).
pub type cnet_result = u32;

/// Success.
pub const CNET_OK: cnet_result = 0;
/// A required pointer argument was NULL.
pub const CNET_NULL_ARGUMENT: cnet_result = 100;
/// A string argument was not valid UTF-8.
pub const CNET_INVALID_UTF8: cnet_result = 101;
/// An enumerated value (kind, type, backend) out of range.
pub const CNET_INVALID_ENUM: cnet_result = 102;
/// A caller-supplied buffer was too short for the answer.
pub const CNET_BUFFER_TOO_SHORT: cnet_result = 103;
/// Invalid input refused before anything was changed (`InvalidArgument`).
pub const CNET_INVALID_ARGUMENT: cnet_result = 200;
/// The object does not exist.
pub const CNET_NOT_FOUND: cnet_result = 201;
/// The object exists already.
pub const CNET_ALREADY_EXISTS: cnet_result = 202;
/// The caller lacks a capability (CAP_NET_ADMIN, CAP_SYS_ADMIN) or file rights.
pub const CNET_PERMISSION_DENIED: cnet_result = 203;
/// The kernel (or this build) lacks the feature ("Unknown device type").
pub const CNET_UNSUPPORTED: cnet_result = 204;
/// The object is busy (EBUSY).
pub const CNET_BUSY: cnet_result = 205;
/// Any other kernel refusal (see the errno and the kernel's text).
pub const CNET_NETLINK: cnet_result = 206;
/// An existing object differs from what `ensure` asked for.
pub const CNET_MISMATCH: cnet_result = 207;
/// A pool or network has nothing left to allocate.
pub const CNET_EXHAUSTED: cnet_result = 208;
/// The request conflicts with existing state.
pub const CNET_CONFLICT: cnet_result = 209;
/// Stored state could not be understood (never silently reset).
pub const CNET_CORRUPT: cnet_result = 210;
/// An operation did not finish in time.
pub const CNET_TIMEOUT: cnet_result = 211;
/// The kernel or a peer answered something not understood.
pub const CNET_PROTOCOL: cnet_result = 212;
/// Some items of a multi-item call failed; the others were applied.
pub const CNET_PARTIAL: cnet_result = 213;
/// An I/O error (file, socket, thread).
pub const CNET_IO: cnet_result = 214;
/// A cloud API refused the request: the message keeps its own error code
/// (`UnauthorizedOperation`, `InvalidInstanceID.NotFound`,
/// `RequestLimitExceeded` after the retries, …), never a credential.
pub const CNET_CLOUD: cnet_result = 215;
/// A cloud route table would hold more routes than its quota: nothing
/// beyond it was created; the message says how many it holds, the quota
/// and what to do.
pub const CNET_ROUTE_QUOTA: cnet_result = 216;
/// An error kind newer than this header knows.
pub const CNET_OTHER: cnet_result = 298;
/// A bug inside libcnet was caught at the boundary (a Rust panic); the
/// message says where. The objects involved may be in any state.
pub const CNET_PANIC: cnet_result = 299;

/// The name of a result code (`"CNET_NOT_FOUND"`), a static string;
/// `"CNET_UNKNOWN"` for a number this library does not define.
#[no_mangle]
pub extern "C" fn cnet_result_name(code: cnet_result) -> *const c_char {
    let s: &'static CStr = match code {
        CNET_OK => c"CNET_OK",
        CNET_NULL_ARGUMENT => c"CNET_NULL_ARGUMENT",
        CNET_INVALID_UTF8 => c"CNET_INVALID_UTF8",
        CNET_INVALID_ENUM => c"CNET_INVALID_ENUM",
        CNET_BUFFER_TOO_SHORT => c"CNET_BUFFER_TOO_SHORT",
        CNET_INVALID_ARGUMENT => c"CNET_INVALID_ARGUMENT",
        CNET_NOT_FOUND => c"CNET_NOT_FOUND",
        CNET_ALREADY_EXISTS => c"CNET_ALREADY_EXISTS",
        CNET_PERMISSION_DENIED => c"CNET_PERMISSION_DENIED",
        CNET_UNSUPPORTED => c"CNET_UNSUPPORTED",
        CNET_BUSY => c"CNET_BUSY",
        CNET_NETLINK => c"CNET_NETLINK",
        CNET_MISMATCH => c"CNET_MISMATCH",
        CNET_EXHAUSTED => c"CNET_EXHAUSTED",
        CNET_CONFLICT => c"CNET_CONFLICT",
        CNET_CORRUPT => c"CNET_CORRUPT",
        CNET_TIMEOUT => c"CNET_TIMEOUT",
        CNET_PROTOCOL => c"CNET_PROTOCOL",
        CNET_PARTIAL => c"CNET_PARTIAL",
        CNET_IO => c"CNET_IO",
        CNET_CLOUD => c"CNET_CLOUD",
        CNET_ROUTE_QUOTA => c"CNET_ROUTE_QUOTA",
        CNET_OTHER => c"CNET_OTHER",
        CNET_PANIC => c"CNET_PANIC",
        _ => c"CNET_UNKNOWN",
    };
    s.as_ptr()
}

/// The code of a cnet-core error.
pub(crate) fn code_of(e: &Error) -> cnet_result {
    match e {
        Error::InvalidArgument { .. } => CNET_INVALID_ARGUMENT,
        Error::NotFound { .. } => CNET_NOT_FOUND,
        Error::AlreadyExists { .. } => CNET_ALREADY_EXISTS,
        Error::PermissionDenied { .. } => CNET_PERMISSION_DENIED,
        Error::Unsupported { .. } => CNET_UNSUPPORTED,
        Error::Busy { .. } => CNET_BUSY,
        Error::Netlink { .. } => CNET_NETLINK,
        Error::Mismatch { .. } => CNET_MISMATCH,
        Error::Exhausted { .. } => CNET_EXHAUSTED,
        Error::Conflict { .. } => CNET_CONFLICT,
        Error::Corrupt { .. } => CNET_CORRUPT,
        Error::Timeout { .. } => CNET_TIMEOUT,
        Error::Protocol { .. } => CNET_PROTOCOL,
        Error::Partial { .. } => CNET_PARTIAL,
        Error::Io { .. } => CNET_IO,
        Error::Cloud { .. } => CNET_CLOUD,
        Error::RouteQuota { .. } => CNET_ROUTE_QUOTA,
        _ => CNET_OTHER,
    }
}

/// An error: its result code, a message for people (the operation, the
/// object, and the kernel's words), the errno and the kernel's
/// extended-ACK text when the kernel refused. Made by a failing call
/// through its `cnet_error **err` argument; freed with
/// `cnet_error_free`. Immutable: may be read from any thread.
#[derive(Debug)]
pub struct cnet_error {
    code: cnet_result,
    message: CString,
    errno: c_int,
    kernel: Option<CString>,
}
castable!(box cnet_error);

/// Why a call failed, before it becomes a `cnet_error`.
#[derive(Debug)]
pub(crate) struct Fail {
    code: cnet_result,
    message: String,
    errno: c_int,
    kernel: Option<String>,
}

impl Fail {
    /// A boundary error (NULL, UTF-8, enum, buffer) with its text.
    pub(crate) fn new(code: cnet_result, message: impl Into<String>) -> Fail {
        Fail {
            code,
            message: message.into(),
            errno: 0,
            kernel: None,
        }
    }
}

impl Fail {
    /// Name the item of a list the failure is about.
    pub(crate) fn item(mut self, i: usize) -> Fail {
        self.message = format!("item {i}: {}", self.message);
        self
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail {
            code: code_of(&e),
            message: e.to_string(),
            errno: e.errno().unwrap_or(0),
            kernel: e.kernel_message().map(str::to_string),
        }
    }
}

/// The outcome of an export's body.
pub(crate) type Res<T = ()> = Result<T, Fail>;

/// A CString from any text: interior NULs (impossible in our messages, but
/// not worth a panic) become U+FFFD.
pub(crate) fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{fffd}")).unwrap_or_default()
}

fn store_error(err: *mut *mut cnet_error, f: Fail) -> cnet_result {
    let code = f.code;
    if !err.is_null() {
        let e = to_boxed_mut_ptr::<cnet_error>(cnet_error {
            code,
            message: c_string(&f.message),
            errno: f.errno,
            kernel: f.kernel.as_deref().map(c_string),
        });
        // SAFETY: `err` is non-NULL and, by the ABI contract, points to a
        // writable `cnet_error *`.
        unsafe { err.write(e) };
    }
    code
}

/// Run an export's body: catch panics, turn failures into a code and an
/// optional `cnet_error`, set `*err` to NULL on success.
pub(crate) fn guard(err: *mut *mut cnet_error, f: impl FnOnce() -> Res) -> cnet_result {
    let r = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic payload".into());
        Err(Fail::new(
            CNET_PANIC,
            format!("libcnet bug: panic caught at the C boundary: {what}"),
        ))
    });
    match r {
        Ok(()) => {
            if !err.is_null() {
                // SAFETY: as in store_error.
                unsafe { err.write(std::ptr::null_mut()) };
            }
            CNET_OK
        }
        Err(f) => store_error(err, f),
    }
}

/// Lock `m`; a lock poisoned by an earlier call's panic is taken back, as
/// the module doc explains (the panic was reported as `CNET_PANIC` then).
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Like [`guard`] for the infallible-by-contract functions that return a
/// value (accessors, `_free`): a panic yields `default`.
pub(crate) fn guard_value<T>(default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}

/// `&T` from a handle pointer; NULL → `CNET_NULL_ARGUMENT` naming `what`.
pub(crate) fn obj<'a, T>(p: *const T, what: &str) -> Res<&'a T> {
    // SAFETY: non-NULL pointers to handles point to live objects made by
    // this library (ABI contract); handles are only read through `&`.
    unsafe { p.as_ref() }.ok_or_else(|| Fail::new(CNET_NULL_ARGUMENT, format!("{what} is NULL")))
}

/// A required NUL-terminated UTF-8 string.
pub(crate) fn cstr<'a>(p: *const c_char, what: &str) -> Res<&'a str> {
    opt_cstr(p, what)?.ok_or_else(|| Fail::new(CNET_NULL_ARGUMENT, format!("{what} is NULL")))
}

/// An optional string: NULL → None (an empty string is Some("")).
pub(crate) fn opt_cstr<'a>(p: *const c_char, what: &str) -> Res<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL string arguments are NUL-terminated (ABI contract)
    // and outlive the call.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str()
        .map(Some)
        .map_err(|e| Fail::new(CNET_INVALID_UTF8, format!("{what} is not valid UTF-8: {e}")))
}

/// An optional string where NULL and "" both mean "not set".
pub(crate) fn opt_nonempty<'a>(p: *const c_char, what: &str) -> Res<Option<&'a str>> {
    Ok(opt_cstr(p, what)?.filter(|s| !s.is_empty()))
}

/// `len` elements at `p` (NULL allowed when `len` is 0).
pub(crate) fn slice<'a, T>(p: *const T, len: usize, what: &str) -> Res<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Fail::new(
            CNET_NULL_ARGUMENT,
            format!("{what} is NULL with length {len}"),
        ));
    }
    // SAFETY: `p` is non-NULL and points to `len` initialised elements
    // (ABI contract); they are only read during the call.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Convert the `len` C values at `p` with `conv`; a failure names the item
/// (`entries[3]: …`).
pub(crate) fn items<T, U>(
    p: *const T,
    len: usize,
    what: &str,
    conv: impl Fn(&T) -> Res<U>,
) -> Res<Vec<U>> {
    slice(p, len, what)?
        .iter()
        .enumerate()
        .map(|(i, e)| conv(e).map_err(|f| f.item(i)))
        .collect()
}

/// Write `v()` to an optional out-parameter (NULL: the caller did not
/// ask). `v` runs only when asked: a value that owns memory (a string
/// handed to C) is never made, and leaked, for a NULL out-parameter.
pub(crate) fn set_if_asked<T>(p: *mut T, v: impl FnOnce() -> T) {
    if !p.is_null() {
        Out(p).set(v());
    }
}

/// Check an out-parameter before doing any work, so a NULL `out` never
/// leaves a half-done operation behind.
pub(crate) fn out_ptr<T>(p: *mut T, what: &str) -> Res<Out<T>> {
    if p.is_null() {
        return Err(Fail::new(CNET_NULL_ARGUMENT, format!("{what} is NULL")));
    }
    Ok(Out(p))
}

/// A checked, non-NULL out-parameter.
#[derive(Debug)]
pub(crate) struct Out<T>(*mut T);

impl<T> Out<T> {
    /// Write the result (only on success, as the ABI promises).
    pub(crate) fn set(self, v: T) {
        // SAFETY: non-NULL (checked in out_ptr) and writable by the ABI
        // contract; `write` does not drop what was there (maybe garbage).
        unsafe { self.0.write(v) }
    }
}

/// Write `len` values into the caller's array `p` (checked non-NULL).
pub(crate) fn write_all<T>(p: *mut T, len: usize, vals: impl Iterator<Item = T>) -> Res {
    if p.is_null() {
        return Err(Fail::new(CNET_NULL_ARGUMENT, "output array is NULL"));
    }
    for (i, v) in vals.take(len).enumerate() {
        // SAFETY: `p` is non-NULL and has room for `len` elements (ABI
        // contract); `i < len`.
        unsafe { p.add(i).write(v) };
    }
    Ok(())
}

/// Copy `s` NUL-terminated into the caller's buffer `buf` of `len` bytes.
pub(crate) fn write_str(buf: *mut c_char, len: usize, s: &str) -> Res {
    if buf.is_null() {
        return Err(Fail::new(CNET_NULL_ARGUMENT, "buf is NULL"));
    }
    let b = s.as_bytes();
    if b.len() >= len {
        return Err(Fail::new(
            CNET_BUFFER_TOO_SHORT,
            format!("{} bytes needed, the buffer has {len}", b.len() + 1),
        ));
    }
    // SAFETY: `buf` is non-NULL with `len` > b.len() writable bytes (ABI
    // contract); `s` is our own string, so the regions do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(b.as_ptr().cast::<c_char>(), buf, b.len());
        buf.add(b.len()).write(0);
    }
    Ok(())
}

/// Parse with a clear InvalidArgument naming the argument.
pub(crate) fn parse<T: std::str::FromStr>(s: &str, what: &str) -> Res<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| Error::invalid(format!("{what} {s:?}"), format!("{e}")).into())
}

/// Parse an optional argument.
pub(crate) fn parse_opt<T: std::str::FromStr>(p: *const c_char, what: &str) -> Res<Option<T>>
where
    T::Err: std::fmt::Display,
{
    opt_nonempty(p, what)?.map(|s| parse(s, what)).transpose()
}

/// Copy `s` into a fixed `char[N]` field, NUL-terminated; a longer string
/// is `CNET_BUFFER_TOO_SHORT` (never silently cut).
pub(crate) fn fill<const N: usize>(dst: &mut [c_char; N], s: &str) -> Res {
    let b = s.as_bytes();
    if b.len() >= N || b.contains(&0) {
        return Err(Fail::new(
            CNET_BUFFER_TOO_SHORT,
            format!("{s:?} does not fit in {N} bytes"),
        ));
    }
    for (d, &c) in dst.iter_mut().zip(b) {
        *d = c as c_char;
    }
    dst[b.len()] = 0;
    Ok(())
}

/// The result code of an error.
#[no_mangle]
pub extern "C" fn cnet_error_code(e: *const cnet_error) -> cnet_result {
    guard_value(CNET_NULL_ARGUMENT, || {
        obj(e, "error").map_or(CNET_NULL_ARGUMENT, |e| e.code)
    })
}

/// The message for people: the operation, the object and the kernel's
/// words ("create link br0 (bridge) in ns1: already exists: File
/// exists"). Valid until `cnet_error_free`; never NULL for a non-NULL error.
#[no_mangle]
pub extern "C" fn cnet_error_message(e: *const cnet_error) -> *const c_char {
    guard_value(std::ptr::null(), || {
        obj(e, "error").map_or(std::ptr::null(), |e| e.message.as_ptr())
    })
}

/// The errno the kernel (or the OS) answered, positive; 0 when the error
/// did not come from the kernel.
#[no_mangle]
pub extern "C" fn cnet_error_errno(e: *const cnet_error) -> c_int {
    guard_value(0, || obj(e, "error").map_or(0, |e| e.errno))
}

/// The kernel's extended-ACK text ("Unknown device type"), or NULL when the
/// kernel gave none. Valid until `cnet_error_free`.
#[no_mangle]
pub extern "C" fn cnet_error_kernel_message(e: *const cnet_error) -> *const c_char {
    guard_value(std::ptr::null(), || {
        obj(e, "error")
            .ok()
            .and_then(|e| e.kernel.as_ref())
            .map_or(std::ptr::null(), |k| k.as_ptr())
    })
}

/// Free an error. `cnet_error_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_error_free(e: *mut cnet_error) {
    crate::out::free_box(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_the_boundary_is_a_code_and_a_message() {
        let mut err: *mut cnet_error = std::ptr::null_mut();
        let rc = guard(&mut err, || panic!("injected"));
        assert_eq!(rc, CNET_PANIC);
        assert_eq!(cnet_error_code(err), CNET_PANIC);
        // SAFETY: a message of a live error is a NUL-terminated string.
        let m = unsafe { CStr::from_ptr(cnet_error_message(err)) };
        assert!(m.to_str().unwrap().contains("injected"), "{m:?}");
        cnet_error_free(err);
        // With no error out-parameter the code alone comes back.
        assert_eq!(guard(std::ptr::null_mut(), || panic!("again")), CNET_PANIC);
        assert_eq!(guard_value(7, || panic!("in an accessor")), 7);
    }

    #[test]
    fn every_code_has_a_name_and_unknown_ones_say_so() {
        for c in [
            CNET_OK,
            CNET_NULL_ARGUMENT,
            CNET_INVALID_UTF8,
            CNET_INVALID_ENUM,
            CNET_BUFFER_TOO_SHORT,
            CNET_INVALID_ARGUMENT,
            CNET_NOT_FOUND,
            CNET_ALREADY_EXISTS,
            CNET_PERMISSION_DENIED,
            CNET_UNSUPPORTED,
            CNET_BUSY,
            CNET_NETLINK,
            CNET_MISMATCH,
            CNET_EXHAUSTED,
            CNET_CONFLICT,
            CNET_CORRUPT,
            CNET_TIMEOUT,
            CNET_PROTOCOL,
            CNET_PARTIAL,
            CNET_IO,
            CNET_OTHER,
            CNET_PANIC,
        ] {
            // SAFETY: static NUL-terminated strings.
            let n = unsafe { CStr::from_ptr(cnet_result_name(c)) };
            assert_ne!(n.to_str().unwrap(), "CNET_UNKNOWN", "{c}");
        }
        // SAFETY: as above.
        let n = unsafe { CStr::from_ptr(cnet_result_name(12345)) };
        assert_eq!(n.to_str().unwrap(), "CNET_UNKNOWN");
    }

    #[test]
    fn accessors_of_null_are_safe() {
        assert_eq!(cnet_error_code(std::ptr::null()), CNET_NULL_ARGUMENT);
        assert!(cnet_error_message(std::ptr::null()).is_null());
        assert!(cnet_error_kernel_message(std::ptr::null()).is_null());
        assert_eq!(cnet_error_errno(std::ptr::null()), 0);
        cnet_error_free(std::ptr::null_mut());
    }

    #[test]
    fn strings_null_and_bad_utf8() {
        assert_eq!(
            cstr(std::ptr::null(), "name").unwrap_err().code,
            CNET_NULL_ARGUMENT
        );
        let bad = [0xffu8 as c_char, 0xfe_u8 as c_char, 0];
        let f = cstr(bad.as_ptr(), "name").unwrap_err();
        assert_eq!(f.code, CNET_INVALID_UTF8);
        assert!(f.message.contains("name"));
        let mut buf = [0 as c_char; 4];
        assert_eq!(
            fill(&mut buf, "abcd").unwrap_err().code,
            CNET_BUFFER_TOO_SHORT
        );
        fill(&mut buf, "abc").unwrap();
        assert_eq!(buf[3], 0);
    }

    #[test]
    fn kernel_errors_keep_errno_and_ext_ack() {
        let e = Error::from_kernel(
            "create link x",
            cnet_core::KernelError::new(libc::EINVAL, Some("Unknown device type".into())),
        );
        let mut err = std::ptr::null_mut();
        let rc = guard(&mut err, || Err(e.into()));
        assert_eq!(rc, CNET_UNSUPPORTED);
        assert_eq!(cnet_error_errno(err), libc::EINVAL);
        // SAFETY: present, NUL-terminated.
        let k = unsafe { CStr::from_ptr(cnet_error_kernel_message(err)) };
        assert_eq!(k.to_str().unwrap(), "Unknown device type");
        cnet_error_free(err);
    }
}
