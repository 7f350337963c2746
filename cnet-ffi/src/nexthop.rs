//! Nexthop objects: `ip nexthop add|replace|del|get|show`, from a plain C
//! struct (`cnet_nexthop`), read back as `cnet_nexthop_entry`. Routes use
//! one through `cnet_route.nhid`.

use std::ffi::c_char;
use std::net::IpAddr;

use cnet_core::nexthop::{GroupMember, Nexthop, NexthopEntry, NexthopFilter};
use cnet_core::route::Family;

use crate::boundary::{
    cnet_error, cnet_result, fill, guard, obj, opt_nonempty, out_ptr, parse_opt, set_if_asked,
    slice, Fail, Res, CNET_INVALID_ENUM,
};
use crate::link::CNET_ADDRSTRLEN;
use crate::ns::cnet_handle;
use crate::out::{castable, free_box, list_head, list_out_keep, one_out_keep};
use crate::route::CNET_ROUTE_PROTOCOL;

/// What a nexthop leads to.
pub type cnet_nexthop_kind = u32;
/// `via GW [dev DEV]` or `dev DEV` (0 in `cnet_nexthop` means this too).
pub const CNET_NEXTHOP_PATH: cnet_nexthop_kind = 1;
/// `blackhole`.
pub const CNET_NEXTHOP_BLACKHOLE: cnet_nexthop_kind = 2;
/// `group ID[,WEIGHT]/…`: multipath over other nexthops.
pub const CNET_NEXTHOP_GROUP: cnet_nexthop_kind = 3;

/// A member of a nexthop group.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cnet_nexthop_group_member {
    /// The member nexthop's id.
    pub id: u32,
    /// Its weight, 1-256 (0 in `cnet_nexthop`: 1).
    pub weight: u16,
}

/// A nexthop object to program, `ip [-6] nexthop add id ID (via GW [dev
/// DEV] [onlink] | dev DEV | blackhole | group ID[,WEIGHT]/…) [fdb] [proto
/// P]`. Zero / NULL fields are "not set"; start from a zeroed struct.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_nexthop {
    /// `id ID` (1 or more).
    pub id: u32,
    /// `CNET_NEXTHOP_*` (0: `CNET_NEXTHOP_PATH`).
    pub kind: cnet_nexthop_kind,
    /// Path: the gateway (`via`), or NULL.
    pub via: *const c_char,
    /// Path: the device (`dev`), or NULL.
    pub dev: *const c_char,
    /// Path: `onlink` (with `via` and `dev`).
    pub onlink: bool,
    /// `fdb`: a nexthop for VXLAN FDB entries rather than routes.
    pub fdb: bool,
    /// `proto P` (0: cnet's, `CNET_ROUTE_PROTOCOL`).
    pub protocol: u8,
    /// `ip -6 nexthop` for a device-only or blackhole nexthop.
    pub v6: bool,
    /// Group: the `group_len` members.
    pub group: *const cnet_nexthop_group_member,
    /// Number of members.
    pub group_len: usize,
}

/// A nexthop as the kernel lists it (`ip nexthop show`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cnet_nexthop_entry {
    /// Its id.
    pub id: u32,
    /// `CNET_NEXTHOP_PATH`, `_BLACKHOLE` or `_GROUP`.
    pub kind: cnet_nexthop_kind,
    /// AF_INET or AF_INET6; 0 for a group.
    pub family: u8,
    /// Protocol (`proto`).
    pub protocol: u8,
    /// Scope (RT_SCOPE_*).
    pub scope: u8,
    /// Gateway, or "".
    pub gateway: [c_char; CNET_ADDRSTRLEN],
    /// Device index, 0 if none.
    pub oif: u32,
    /// `fdb`.
    pub fdb: bool,
    /// `onlink`.
    pub onlink: bool,
    /// `dead` or `linkdown`.
    pub down: bool,
    /// Group members (owned by the entry or its list), NULL if not a group.
    pub group: *const cnet_nexthop_group_member,
    /// Number of members.
    pub group_len: usize,
    /// Group type (`NEXTHOP_GRP_TYPE_*`: 0 multipath, 1 resilient).
    pub group_type: u16,
}
castable!(one cnet_nexthop_entry);

/// An owned array of nexthops; free with `cnet_nexthop_array_free`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_nexthop_array {
    /// The nexthops, by id.
    pub items: *const cnet_nexthop_entry,
    /// How many.
    pub len: usize,
}
list_head!(cnet_nexthop_array, cnet_nexthop_entry);

/// What to list (`ip nexthop show [dev DEV] [master DEV] [groups] [fdb]`);
/// zero / NULL fields do not filter.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_nexthop_filter {
    /// Nexthops out of this device, or NULL.
    pub dev: *const c_char,
    /// Nexthops out of devices enslaved to this one, or NULL.
    pub master: *const c_char,
    /// Groups only.
    pub groups: bool,
    /// FDB nexthops only.
    pub fdb: bool,
}

fn nexthop_of(c: &cnet_nexthop) -> Res<Nexthop> {
    let mut n = match c.kind {
        0 | CNET_NEXTHOP_PATH => {
            let mut n = Nexthop::new(c.id);
            if let Some(gw) = parse_opt::<IpAddr>(c.via, "nexthop.via")? {
                n = n.via(gw);
            }
            if let Some(d) = opt_nonempty(c.dev, "nexthop.dev")? {
                n = n.dev(d);
            }
            if c.onlink {
                n = n.onlink();
            }
            n
        }
        CNET_NEXTHOP_BLACKHOLE => Nexthop::blackhole(c.id),
        CNET_NEXTHOP_GROUP => {
            let members: Vec<(u32, u16)> = slice(c.group, c.group_len, "nexthop.group")?
                .iter()
                .map(|m| (m.id, m.weight.max(1)))
                .collect();
            Nexthop::group(c.id, &members)
        }
        k => {
            return Err(Fail::new(
                CNET_INVALID_ENUM,
                format!("nexthop.kind {k} is not a nexthop kind (1-3)"),
            ))
        }
    };
    if c.fdb {
        n = n.fdb();
    }
    if c.v6 {
        n = n.v6();
    }
    Ok(n.protocol(if c.protocol == 0 {
        CNET_ROUTE_PROTOCOL
    } else {
        c.protocol
    }))
}

/// The C entry and its group members (which it points into: keep them).
fn entry_of(e: &NexthopEntry) -> Res<(cnet_nexthop_entry, Vec<cnet_nexthop_group_member>)> {
    let members: Vec<cnet_nexthop_group_member> = e
        .group
        .iter()
        .map(|m: &GroupMember| cnet_nexthop_group_member {
            id: m.id,
            weight: m.weight,
        })
        .collect();
    let mut c = cnet_nexthop_entry {
        id: e.id,
        kind: if e.blackhole {
            CNET_NEXTHOP_BLACKHOLE
        } else if !e.group.is_empty() {
            CNET_NEXTHOP_GROUP
        } else {
            CNET_NEXTHOP_PATH
        },
        // AF_INET (2) and AF_INET6 (10) fit in a byte.
        family: match e.family {
            Some(Family::V4) => libc::AF_INET as u8,
            Some(Family::V6) => libc::AF_INET6 as u8,
            None => 0,
        },
        protocol: e.protocol,
        scope: e.scope,
        gateway: [0; CNET_ADDRSTRLEN],
        oif: e.oif.unwrap_or(0),
        fdb: e.fdb,
        onlink: e.onlink,
        down: e.down,
        // The Vec's heap buffer does not move when the Vec is moved into
        // the list's storage.
        group: if members.is_empty() {
            std::ptr::null()
        } else {
            members.as_ptr()
        },
        group_len: members.len(),
        group_type: e.group_type.unwrap_or(0),
    };
    if let Some(gw) = e.gateway {
        fill(&mut c.gateway, &gw.to_string())?;
    }
    Ok((c, members))
}

/// `ip nexthop add …`; `CNET_ALREADY_EXISTS` if the id is taken, the
/// kernel's text for a refused one ("Invalid nexthop id").
#[no_mangle]
pub extern "C" fn cnet_nexthop_add(
    h: *const cnet_handle,
    nexthop: *const cnet_nexthop,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let n = nexthop_of(obj(nexthop, "nexthop")?)?;
        h.h.nexthops().add(&n)?;
        Ok(())
    })
}

/// `ip nexthop replace …`: create, or overwrite in place (every route and
/// group using the id follows at once).
#[no_mangle]
pub extern "C" fn cnet_nexthop_replace(
    h: *const cnet_handle,
    nexthop: *const cnet_nexthop,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let n = nexthop_of(obj(nexthop, "nexthop")?)?;
        h.h.nexthops().replace(&n)?;
        Ok(())
    })
}

/// `ip nexthop del id ID`; `CNET_NOT_FOUND` if absent. The kernel also
/// deletes the routes using it and drops it from its groups.
#[no_mangle]
pub extern "C" fn cnet_nexthop_delete(
    h: *const cnet_handle,
    id: u32,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        obj(h, "handle")?.h.nexthops().delete(id)?;
        Ok(())
    })
}

/// Delete the nexthop if present; `*deleted` (may be NULL) says whether it was.
#[no_mangle]
pub extern "C" fn cnet_nexthop_delete_if_exists(
    h: *const cnet_handle,
    id: u32,
    deleted: *mut bool,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let d = obj(h, "handle")?.h.nexthops().delete_if_exists(id)?;
        set_if_asked(deleted, || d);
        Ok(())
    })
}

/// The nexthop `id` (`ip nexthop get id ID`), freed with
/// `cnet_nexthop_entry_free`; `CNET_NOT_FOUND` if absent.
#[no_mangle]
pub extern "C" fn cnet_nexthop_get(
    h: *const cnet_handle,
    id: u32,
    out: *mut *mut cnet_nexthop_entry,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let out = out_ptr(out, "out")?;
        let Some(e) = h.h.nexthops().get(id)? else {
            return Err(cnet_core::Error::NotFound {
                context: format!("get nexthop id {id} in {}", h.h.netns().label()),
                kernel: None,
            }
            .into());
        };
        let (c, members) = entry_of(&e)?;
        one_out_keep(out, c, Vec::new(), Some(Box::new(members)));
        Ok(())
    })
}

/// Free a nexthop from `cnet_nexthop_get`. `cnet_nexthop_entry_free(NULL)`
/// does nothing.
#[no_mangle]
pub extern "C" fn cnet_nexthop_entry_free(e: *mut cnet_nexthop_entry) {
    free_box(e)
}

/// Nexthops matching `filter` (NULL: all), by id.
#[no_mangle]
pub extern "C" fn cnet_nexthop_list(
    h: *const cnet_handle,
    filter: *const cnet_nexthop_filter,
    out: *mut *mut cnet_nexthop_array,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let out = out_ptr(out, "out")?;
        let mut f = NexthopFilter::new();
        if !filter.is_null() {
            let c = obj(filter, "filter")?;
            if let Some(d) = opt_nonempty(c.dev, "filter.dev")? {
                f = f.dev(d);
            }
            if let Some(d) = opt_nonempty(c.master, "filter.master")? {
                f = f.master(d);
            }
            if c.groups {
                f = f.groups();
            }
            if c.fdb {
                f = f.fdb();
            }
        }
        let mut items = Vec::new();
        let mut keep = Vec::new();
        for e in h.h.nexthops().list(&f)? {
            let (c, members) = entry_of(&e)?;
            items.push(c);
            keep.push(members);
        }
        list_out_keep(out, items, Vec::new(), Some(Box::new(keep)));
        Ok(())
    })
}

/// Free a nexthop list. `cnet_nexthop_array_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_nexthop_array_free(list: *mut cnet_nexthop_array) {
    free_box(list)
}
