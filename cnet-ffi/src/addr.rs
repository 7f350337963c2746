//! Addresses: `ip addr add|replace|del|show`, prefixes as strings
//! ("10.244.1.2/24").

use std::ffi::c_char;

use cnet_core::addr::Address;
use cnet_core::IpNet;

use crate::boundary::{
    cnet_error, cnet_result, cstr, fill, guard, obj, opt_nonempty, out_ptr, parse, set_if_asked,
    Res,
};
use crate::link::CNET_ADDRSTRLEN;
use crate::ns::cnet_handle;
use crate::out::{free_box, list_head, list_out};

/// An address as the kernel lists it (`ip addr show`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cnet_addr {
    /// Index of its device.
    pub index: u32,
    /// The address with its prefix length ("10.244.1.2/24").
    pub local: [c_char; CNET_ADDRSTRLEN],
    /// The peer address of a point-to-point address, or "".
    pub peer: [c_char; CNET_ADDRSTRLEN],
    /// Scope (RT_SCOPE_*: 0 global, 253 link, 254 host).
    pub scope: u8,
    /// Address family (AF_INET or AF_INET6).
    pub family: u8,
}

/// An owned array of addresses; free with `cnet_addr_array_free`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_addr_array {
    /// The addresses.
    pub items: *const cnet_addr,
    /// How many.
    pub len: usize,
}
list_head!(cnet_addr_array, cnet_addr);

fn args<'a>(
    h: *const cnet_handle,
    dev: *const c_char,
    cidr: *const c_char,
) -> Res<(&'a cnet_handle, &'a str, IpNet)> {
    let h = obj(h, "handle")?;
    let dev = cstr(dev, "dev")?;
    let cidr: IpNet = parse(cstr(cidr, "cidr")?, "cidr")?;
    Ok((h, dev, cidr))
}

/// `ip addr add CIDR dev DEV`; `CNET_ALREADY_EXISTS` if present.
#[no_mangle]
pub extern "C" fn cnet_addr_add(
    h: *const cnet_handle,
    dev: *const c_char,
    cidr: *const c_char,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let (h, dev, cidr) = args(h, dev, cidr)?;
        h.h.addrs().add(dev, cidr)?;
        Ok(())
    })
}

/// `ip addr replace CIDR dev DEV` (adds, or updates an existing one).
#[no_mangle]
pub extern "C" fn cnet_addr_replace(
    h: *const cnet_handle,
    dev: *const c_char,
    cidr: *const c_char,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let (h, dev, cidr) = args(h, dev, cidr)?;
        h.h.addrs().replace(dev, cidr)?;
        Ok(())
    })
}

/// `ip addr del CIDR dev DEV`; `CNET_NOT_FOUND` if absent.
#[no_mangle]
pub extern "C" fn cnet_addr_delete(
    h: *const cnet_handle,
    dev: *const c_char,
    cidr: *const c_char,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let (h, dev, cidr) = args(h, dev, cidr)?;
        h.h.addrs().delete(dev, cidr)?;
        Ok(())
    })
}

/// Delete the address if present; `*deleted` (may be NULL) says whether it was.
#[no_mangle]
pub extern "C" fn cnet_addr_delete_if_exists(
    h: *const cnet_handle,
    dev: *const c_char,
    cidr: *const c_char,
    deleted: *mut bool,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let (h, dev, cidr) = args(h, dev, cidr)?;
        let d = h.h.addrs().delete_if_exists(dev, cidr)?;
        set_if_asked(deleted, || d);
        Ok(())
    })
}

fn addr_of(a: &Address) -> Res<cnet_addr> {
    let mut c = cnet_addr {
        index: a.index,
        local: [0; CNET_ADDRSTRLEN],
        peer: [0; CNET_ADDRSTRLEN],
        scope: a.scope.to_u8(),
        family: if a.local.addr().is_ipv4() {
            libc::AF_INET as u8
        } else {
            libc::AF_INET6 as u8
        },
    };
    fill(&mut c.local, &a.local.to_string())?;
    if let Some(p) = a.peer {
        fill(&mut c.peer, &p.to_string())?;
    }
    Ok(c)
}

/// The addresses of `dev`, or of every device when `dev` is NULL
/// (`ip addr show [dev DEV]`).
#[no_mangle]
pub extern "C" fn cnet_addr_list(
    h: *const cnet_handle,
    dev: *const c_char,
    out: *mut *mut cnet_addr_array,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let dev = opt_nonempty(dev, "dev")?;
        let out = out_ptr(out, "out")?;
        let items =
            h.h.addrs()
                .list(dev)?
                .iter()
                .map(addr_of)
                .collect::<Res<Vec<_>>>()?;
        list_out(out, items, Vec::new());
        Ok(())
    })
}

/// Free an address list. `cnet_addr_array_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_addr_array_free(list: *mut cnet_addr_array) {
    free_box(list)
}
