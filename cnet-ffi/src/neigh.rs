//! Neighbours (`ip neigh`) and bridge / VXLAN forwarding entries
//! (`bridge fdb`), from plain C structs; reconcile owns permanent
//! neighbours and `self` FDB entries with a `dst`.

use std::ffi::c_char;
use std::net::IpAddr;

use cnet_core::fdb::{FdbEntry, FdbRecord};
use cnet_core::link::MacAddr;
use cnet_core::neigh::{NeighState, Neighbour, NeighbourEntry};

use crate::boundary::{
    cnet_error, cnet_result, cstr, fill, guard, obj, opt_nonempty, out_ptr, parse, parse_opt,
    slice, Res,
};
use crate::link::CNET_ADDRSTRLEN;
use crate::ns::cnet_handle;
use crate::out::{free_list, list_head, list_out};
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

/// An owned array of neighbours; free with `cnet_neigh_list_free`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_neigh_list {
    /// The entries.
    pub items: *const cnet_neigh_entry,
    /// How many.
    pub len: usize,
}
list_head!(cnet_neigh_list, cnet_neigh_entry);

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

/// An owned array of FDB entries; free with `cnet_fdb_list_free`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_fdb_list {
    /// The entries.
    pub items: *const cnet_fdb_entry,
    /// How many.
    pub len: usize,
}
list_head!(cnet_fdb_list, cnet_fdb_entry);

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

macro_rules! one {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $conv:ident, $acc:ident, $method:ident) => {
        $(#[$doc])*
        #[no_mangle]
        pub extern "C" fn $name(
            h: *const cnet_handle,
            entry: *const $ty,
            err: *mut *mut cnet_error,
        ) -> cnet_result {
            guard(err, || {
                let h = obj(h, "handle")?;
                let e = $conv(obj(entry, "entry")?)?;
                h.h.$acc().$method(e)?;
                Ok(())
            })
        }
    };
}

one!(
    /// `ip neigh add …`; `CNET_ALREADY_EXISTS` if present.
    cnet_neigh_add, cnet_neigh, neigh_of, neighbours, add
);
one!(
    /// `ip neigh replace …`.
    cnet_neigh_replace, cnet_neigh, neigh_of, neighbours, replace
);
one!(
    /// `ip neigh del IP dev DEV`; `CNET_NOT_FOUND` if absent.
    cnet_neigh_delete, cnet_neigh, neigh_of, neighbours, delete
);
one!(
    /// `bridge fdb add …` (fails on an existing MAC).
    cnet_fdb_add, cnet_fdb, fdb_of, fdb, add
);
one!(
    /// `bridge fdb append …` (one more `dst` for the same MAC: VXLAN flooding).
    cnet_fdb_append, cnet_fdb, fdb_of, fdb, append
);
one!(
    /// `bridge fdb replace …`.
    cnet_fdb_replace, cnet_fdb, fdb_of, fdb, replace
);
one!(
    /// `bridge fdb del …`; `CNET_NOT_FOUND` if absent.
    cnet_fdb_delete, cnet_fdb, fdb_of, fdb, delete
);

/// Neighbours of `dev`, or of every device when NULL (`ip neigh show`).
#[no_mangle]
pub extern "C" fn cnet_neigh_list(
    h: *const cnet_handle,
    dev: *const c_char,
    out: *mut *mut cnet_neigh_list,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let dev = opt_nonempty(dev, "dev")?;
        let out = out_ptr(out, "out")?;
        let items = h
            .h
            .neighbours()
            .list(dev, None)?
            .iter()
            .map(neigh_entry_of)
            .collect::<Res<Vec<_>>>()?;
        list_out(out, items, Vec::new());
        Ok(())
    })
}

/// Free a neighbour list. `cnet_neigh_list_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_neigh_list_free(list: *mut cnet_neigh_list) {
    free_list(list)
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
        let want = slice(entries, len, "entries")?
            .iter()
            .enumerate()
            .map(|(i, e)| neigh_of(e).map_err(|f| f.item(i)))
            .collect::<Res<Vec<_>>>()?;
        let c = h.h.neighbours().reconcile(dev, &want)?.into_result()?;
        if !counts.is_null() {
            out_ptr(counts, "counts")?.set(counts_of(c));
        }
        Ok(())
    })
}

/// FDB entries of `dev` (`bridge fdb show dev DEV`).
#[no_mangle]
pub extern "C" fn cnet_fdb_list(
    h: *const cnet_handle,
    dev: *const c_char,
    out: *mut *mut cnet_fdb_list,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let dev = cstr(dev, "dev")?;
        let out = out_ptr(out, "out")?;
        let items = h
            .h
            .fdb()
            .list(dev)?
            .iter()
            .map(fdb_entry_of)
            .collect::<Res<Vec<_>>>()?;
        list_out(out, items, Vec::new());
        Ok(())
    })
}

/// Free an FDB list. `cnet_fdb_list_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_fdb_list_free(list: *mut cnet_fdb_list) {
    free_list(list)
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
        let want = slice(entries, len, "entries")?
            .iter()
            .enumerate()
            .map(|(i, e)| fdb_of(e).map_err(|f| f.item(i)))
            .collect::<Res<Vec<_>>>()?;
        let c = h.h.fdb().reconcile(dev, &want)?.into_result()?;
        if !counts.is_null() {
            out_ptr(counts, "counts")?.set(counts_of(c));
        }
        Ok(())
    })
}
