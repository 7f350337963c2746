//! Neighbours (`ip neigh`) and bridge / VXLAN forwarding entries
//! (`bridge fdb`), from plain C structs; reconcile owns permanent
//! neighbours and `self` FDB entries with a `dst`.

use std::ffi::c_char;
use std::net::IpAddr;

use cnet_core::fdb::{FdbEntry, FdbRecord};
use cnet_core::link::MacAddr;
use cnet_core::neigh::{NeighState, Neighbour, NeighbourEntry};

use crate::boundary::{
    cnet_error, cnet_result, cstr, fill, guard, items, obj, opt_nonempty, out_ptr, parse,
    parse_opt, set_if_asked, Res,
};
use crate::link::CNET_ADDRSTRLEN;
use crate::ns::cnet_handle;
use crate::out::{free_box, list_head, list_out};
use crate::route::{cnet_reconcile_counts, counts_of};

/// A neighbour to program: `ip neigh add|replace|del IP [lladdr MAC] dev
/// DEV nud STATE [router]`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_neigh {
    /// Device.
    pub dev: *const c_char,
    /// Neighbour address.
    pub ip: *const c_char,
    /// Link-layer address ("aa:bb:cc:dd:ee:ff"); NULL for a delete.
    pub mac: *const c_char,
    /// NUD state as the kernel numbers it (0x80 permanent, 0x40 noarp, …;
    /// 0: permanent).
    pub state: u16,
    /// `router` flag.
    pub router: bool,
}

/// A neighbour as the kernel lists it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cnet_neigh_entry {
    /// Device index.
    pub index: u32,
    /// Neighbour address.
    pub ip: [c_char; CNET_ADDRSTRLEN],
    /// Link-layer address (valid when `has_mac`).
    pub mac: [u8; 6],
    /// Resolved.
    pub has_mac: bool,
    /// NUD state.
    pub state: u16,
    /// `router` flag.
    pub router: bool,
}

/// An owned array of neighbours; free with `cnet_neigh_array_free`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_neigh_array {
    /// The entries.
    pub items: *const cnet_neigh_entry,
    /// How many.
    pub len: usize,
}
list_head!(cnet_neigh_array, cnet_neigh_entry);

/// An FDB entry to program: `bridge fdb add|append|replace|del MAC dev DEV
/// [dst IP] [vni VNI] [port PORT] [vlan VID] self|master permanent|static`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_fdb {
    /// MAC address.
    pub mac: *const c_char,
    /// Device (a VXLAN device or a bridge port).
    pub dev: *const c_char,
    /// Remote VTEP (`dst`), or NULL.
    pub dst: *const c_char,
    /// VNI (0: the device's).
    pub vni: u32,
    /// UDP port (0: the device's).
    pub port: u16,
    /// VLAN (0: none).
    pub vlan: u16,
    /// In the bridge's table (`master`) instead of the device's (`self`).
    pub master: bool,
    /// `static` instead of `permanent`.
    pub static_: bool,
}

/// An FDB entry as the kernel lists it (`bridge fdb show`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cnet_fdb_entry {
    /// Device (port) index.
    pub index: u32,
    /// MAC address.
    pub mac: [u8; 6],
    /// Remote VTEP, or "".
    pub dst: [c_char; CNET_ADDRSTRLEN],
    /// VNI when it differs from the device's, else 0.
    pub vni: u32,
    /// Port when it differs from the device's, else 0.
    pub port: u16,
    /// VLAN, 0 if none.
    pub vlan: u16,
    /// Bridge (master) index, 0 if none.
    pub master: u32,
    /// In the device's own table.
    pub on_self: bool,
    /// In the bridge's table.
    pub on_master: bool,
    /// NUD state (0x80 permanent, 0x40 static/noarp, 0x02 learnt).
    pub state: u16,
}

/// An owned array of FDB entries; free with `cnet_fdb_array_free`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_fdb_array {
    /// The entries.
    pub items: *const cnet_fdb_entry,
    /// How many.
    pub len: usize,
}
list_head!(cnet_fdb_array, cnet_fdb_entry);

fn neigh_of(c: &cnet_neigh) -> Res<Neighbour> {
    let dev = cstr(c.dev, "neigh.dev")?;
    let ip: IpAddr = parse(cstr(c.ip, "neigh.ip")?, "neigh.ip")?;
    let mut n = match parse_opt::<MacAddr>(c.mac, "neigh.mac")? {
        Some(m) => Neighbour::new(dev, ip, m),
        None => Neighbour::without_mac(dev, ip),
    };
    if c.state != 0 {
        n = n.state(NeighState::from_u16(c.state));
    }
    if c.router {
        n = n.router();
    }
    Ok(n)
}

fn fdb_of(c: &cnet_fdb) -> Res<FdbEntry> {
    let mac: MacAddr = parse(cstr(c.mac, "fdb.mac")?, "fdb.mac")?;
    let mut e = FdbEntry::new(mac, cstr(c.dev, "fdb.dev")?);
    if let Some(d) = parse_opt::<IpAddr>(c.dst, "fdb.dst")? {
        e = e.dst(d);
    }
    if c.vni != 0 {
        e = e.vni(c.vni);
    }
    if c.port != 0 {
        e = e.port(c.port);
    }
    if c.vlan != 0 {
        e = e.vlan(c.vlan);
    }
    if c.master {
        e = e.on_master();
    }
    if c.static_ {
        e = e.static_entry();
    }
    Ok(e)
}

fn neigh_entry_of(n: &NeighbourEntry) -> Res<cnet_neigh_entry> {
    let mut c = cnet_neigh_entry {
        index: n.index,
        ip: [0; CNET_ADDRSTRLEN],
        mac: n.mac.map_or([0; 6], |m| m.0),
        has_mac: n.mac.is_some(),
        state: n.state.to_u16(),
        router: n.router,
    };
    fill(&mut c.ip, &n.ip.to_string())?;
    Ok(c)
}

fn fdb_entry_of(r: &FdbRecord) -> Res<cnet_fdb_entry> {
    let mut c = cnet_fdb_entry {
        index: r.index,
        mac: r.mac.0,
        dst: [0; CNET_ADDRSTRLEN],
        vni: r.vni.unwrap_or(0),
        port: r.port.unwrap_or(0),
        vlan: r.vlan.unwrap_or(0),
        master: r.master.unwrap_or(0),
        on_self: r.on_self,
        on_master: r.on_master,
        state: r.state.to_u16(),
    };
    if let Some(d) = r.dst {
        fill(&mut c.dst, &d.to_string())?;
    }
    Ok(c)
}

/// `ip neigh add …`; `CNET_ALREADY_EXISTS` if present.
#[no_mangle]
pub extern "C" fn cnet_neigh_add(
    h: *const cnet_handle,
    entry: *const cnet_neigh,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let e = neigh_of(obj(entry, "entry")?)?;
        h.h.neighbours().add(e)?;
        Ok(())
    })
}
/// `ip neigh replace …`.
#[no_mangle]
pub extern "C" fn cnet_neigh_replace(
    h: *const cnet_handle,
    entry: *const cnet_neigh,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let e = neigh_of(obj(entry, "entry")?)?;
        h.h.neighbours().replace(e)?;
        Ok(())
    })
}
/// `ip neigh del IP dev DEV`; `CNET_NOT_FOUND` if absent.
#[no_mangle]
pub extern "C" fn cnet_neigh_delete(
    h: *const cnet_handle,
    entry: *const cnet_neigh,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let e = neigh_of(obj(entry, "entry")?)?;
        h.h.neighbours().delete(e)?;
        Ok(())
    })
}
/// `bridge fdb add …` (fails on an existing MAC).
#[no_mangle]
pub extern "C" fn cnet_fdb_add(
    h: *const cnet_handle,
    entry: *const cnet_fdb,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let e = fdb_of(obj(entry, "entry")?)?;
        h.h.fdb().add(e)?;
        Ok(())
    })
}
/// `bridge fdb append …` (one more `dst` for the same MAC: VXLAN flooding).
#[no_mangle]
pub extern "C" fn cnet_fdb_append(
    h: *const cnet_handle,
    entry: *const cnet_fdb,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let e = fdb_of(obj(entry, "entry")?)?;
        h.h.fdb().append(e)?;
        Ok(())
    })
}
/// `bridge fdb replace …`.
#[no_mangle]
pub extern "C" fn cnet_fdb_replace(
    h: *const cnet_handle,
    entry: *const cnet_fdb,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let e = fdb_of(obj(entry, "entry")?)?;
        h.h.fdb().replace(e)?;
        Ok(())
    })
}
/// `bridge fdb del …`; `CNET_NOT_FOUND` if absent.
#[no_mangle]
pub extern "C" fn cnet_fdb_delete(
    h: *const cnet_handle,
    entry: *const cnet_fdb,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let e = fdb_of(obj(entry, "entry")?)?;
        h.h.fdb().delete(e)?;
        Ok(())
    })
}

/// Neighbours of `dev`, or of every device when NULL (`ip neigh show`).
#[no_mangle]
pub extern "C" fn cnet_neigh_list(
    h: *const cnet_handle,
    dev: *const c_char,
    out: *mut *mut cnet_neigh_array,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let dev = opt_nonempty(dev, "dev")?;
        let out = out_ptr(out, "out")?;
        let items =
            h.h.neighbours()
                .list(dev, None)?
                .iter()
                .map(neigh_entry_of)
                .collect::<Res<Vec<_>>>()?;
        list_out(out, items, Vec::new());
        Ok(())
    })
}

/// Free a neighbour list. `cnet_neigh_array_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_neigh_array_free(list: *mut cnet_neigh_array) {
    free_box(list)
}

/// Make the permanent neighbours of `dev` exactly `entries` (others'
/// dynamic entries are left alone). `counts` (may be NULL) on success.
#[no_mangle]
pub extern "C" fn cnet_neigh_reconcile(
    h: *const cnet_handle,
    dev: *const c_char,
    entries: *const cnet_neigh,
    len: usize,
    counts: *mut cnet_reconcile_counts,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let dev = cstr(dev, "dev")?;
        let want = items(entries, len, "entries", neigh_of)?;
        let c = h.h.neighbours().reconcile(dev, &want)?.into_result()?;
        set_if_asked(counts, || counts_of(c));
        Ok(())
    })
}

/// FDB entries of `dev` (`bridge fdb show dev DEV`).
#[no_mangle]
pub extern "C" fn cnet_fdb_list(
    h: *const cnet_handle,
    dev: *const c_char,
    out: *mut *mut cnet_fdb_array,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let dev = cstr(dev, "dev")?;
        let out = out_ptr(out, "out")?;
        let items =
            h.h.fdb()
                .list(dev)?
                .iter()
                .map(fdb_entry_of)
                .collect::<Res<Vec<_>>>()?;
        list_out(out, items, Vec::new());
        Ok(())
    })
}

/// Free an FDB list. `cnet_fdb_array_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_fdb_array_free(list: *mut cnet_fdb_array) {
    free_box(list)
}

/// Make the `self` FDB entries with a `dst` on `dev` exactly `entries`.
#[no_mangle]
pub extern "C" fn cnet_fdb_reconcile(
    h: *const cnet_handle,
    dev: *const c_char,
    entries: *const cnet_fdb,
    len: usize,
    counts: *mut cnet_reconcile_counts,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let dev = cstr(dev, "dev")?;
        let want = items(entries, len, "entries", fdb_of)?;
        let c = h.h.fdb().reconcile(dev, &want)?.into_result()?;
        set_if_asked(counts, || counts_of(c));
        Ok(())
    })
}
