//! Namespaces (`cnet_netns`) and the per-namespace netlink handle
//! (`cnet_handle`): `ip netns add|del`, opening by name, path or pid.

use std::ffi::c_char;
use std::sync::Arc;

use cnet_core::{Handle, NetNs};

use crate::boundary::{
    cnet_error, cnet_result, cstr, guard, guard_value, obj, out_ptr, set_if_asked,
};
use crate::out::{boxed, castable, free_box};

/// A network namespace, held open by a file descriptor (so it stays
/// valid while held, even if its name is deleted). Immutable: may be
/// shared between threads.
#[derive(Debug)]
pub struct cnet_netns {
    pub(crate) ns: NetNs,
}
castable!(box cnet_netns);

/// A netlink handle bound to one namespace: every call made through it
/// acts in that namespace, whatever thread calls it and whatever namespace
/// that thread is in. May be shared between threads: calls on one handle
/// are serialised on its socket (use one handle per thread for
/// parallelism).
#[derive(Debug)]
pub struct cnet_handle {
    pub(crate) h: Arc<Handle>,
}
castable!(box cnet_handle);

/// The string-argument constructors' shared body: `arg` checked (NULL,
/// UTF-8), `open` run, the namespace boxed into `*out` on success only.
fn open_by(
    arg: *const c_char,
    what: &str,
    out: *mut *mut cnet_netns,
    err: *mut *mut cnet_error,
    open: impl FnOnce(&str) -> cnet_core::Result<NetNs>,
) -> cnet_result {
    guard(err, || {
        let arg = cstr(arg, what)?;
        let out = out_ptr(out, "out")?;
        boxed(out, cnet_netns { ns: open(arg)? });
        Ok(())
    })
}

/// Create the named namespace (`ip netns add NAME`, bind-mounted at
/// /run/netns/NAME) and open it. `CNET_ALREADY_EXISTS` if the name is taken.
#[no_mangle]
pub extern "C" fn cnet_netns_create(
    name: *const c_char,
    out: *mut *mut cnet_netns,
    err: *mut *mut cnet_error,
) -> cnet_result {
    open_by(name, "name", out, err, NetNs::create)
}

/// Open the named namespace (/run/netns/NAME). `CNET_NOT_FOUND` if absent.
#[no_mangle]
pub extern "C" fn cnet_netns_open(
    name: *const c_char,
    out: *mut *mut cnet_netns,
    err: *mut *mut cnet_error,
) -> cnet_result {
    open_by(name, "name", out, err, NetNs::open)
}

/// Open a namespace by path (`/proc/4242/ns/net`, `/var/run/netns/x`):
/// what CNI passes as CNI_NETNS. `CNET_NOT_FOUND` if the path is missing,
/// or is an empty file with no namespace mounted on it (the mount point of
/// a deleted namespace); `CNET_INVALID_ARGUMENT`, the message saying what
/// it is, for anything else that is not a network namespace (another kind
/// of namespace such as /proc/self/ns/mnt, a regular file, a directory, a
/// FIFO, a device). Never blocks on a FIFO.
#[no_mangle]
pub extern "C" fn cnet_netns_open_path(
    path: *const c_char,
    out: *mut *mut cnet_netns,
    err: *mut *mut cnet_error,
) -> cnet_result {
    open_by(path, "path", out, err, |a| NetNs::open_path(a))
}

/// Open the namespace of process `pid` (`/proc/PID/ns/net`).
/// `CNET_NOT_FOUND` if there is no such process.
#[no_mangle]
pub extern "C" fn cnet_netns_open_pid(
    pid: u32,
    out: *mut *mut cnet_netns,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let out = out_ptr(out, "out")?;
        boxed(
            out,
            cnet_netns {
                ns: NetNs::open_pid(pid)?,
            },
        );
        Ok(())
    })
}

/// Delete the named namespace (`ip netns del NAME`). Succeeds when it is
/// already gone; `*deleted` (if not NULL) says whether it existed.
/// Processes and open handles keep the namespace itself alive.
#[no_mangle]
pub extern "C" fn cnet_netns_delete(
    name: *const c_char,
    deleted: *mut bool,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let name = cstr(name, "name")?;
        let d = NetNs::delete(name)?;
        set_if_asked(deleted, || d);
        Ok(())
    })
}

/// Copy the namespace's label (its name, or its path when opened by path)
/// into `buf` of `len` bytes, NUL-terminated. `CNET_BUFFER_TOO_SHORT` if it
/// does not fit (4096 always does).
#[no_mangle]
pub extern "C" fn cnet_netns_label(
    ns: *const cnet_netns,
    buf: *mut c_char,
    len: usize,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let ns = obj(ns, "netns")?;
        crate::boundary::write_str(buf, len, &ns.ns.label())?;
        Ok(())
    })
}

/// Free a namespace object (closes its descriptor; the namespace itself
/// lives on while named or used). `cnet_netns_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_netns_free(ns: *mut cnet_netns) {
    free_box(ns)
}

/// A handle working in `ns` (its socket is opened inside `ns` by a
/// short-lived thread; the caller's thread never changes namespace).
#[no_mangle]
pub extern "C" fn cnet_handle_new(
    ns: *const cnet_netns,
    out: *mut *mut cnet_handle,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let ns = obj(ns, "netns")?;
        let out = out_ptr(out, "out")?;
        boxed(
            out,
            cnet_handle {
                h: Arc::new(Handle::at(&ns.ns)?),
            },
        );
        Ok(())
    })
}

/// A new namespace object for the namespace `h` works in (free it with
/// `cnet_netns_free`).
#[no_mangle]
pub extern "C" fn cnet_handle_netns(
    h: *const cnet_handle,
    out: *mut *mut cnet_netns,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let out = out_ptr(out, "out")?;
        boxed(
            out,
            cnet_netns {
                ns: h.h.netns().clone(),
            },
        );
        Ok(())
    })
}

/// Free a handle (closes its socket). `cnet_handle_free(NULL)` does nothing.
/// Objects made from it (`cnet_node`) keep what they need alive.
#[no_mangle]
pub extern "C" fn cnet_handle_free(h: *mut cnet_handle) {
    free_box(h)
}

/// Whether a namespace of that name exists in /run/netns (false for an
/// invalid or NULL name).
#[no_mangle]
pub extern "C" fn cnet_netns_exists(name: *const c_char) -> bool {
    guard_value(false, || cstr(name, "name").is_ok_and(NetNs::exists))
}
