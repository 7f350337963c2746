//! Routes: `ip route add|replace|del|show|get`, pipelined batches and
//! reconcile by owner (protocol + table), from a plain C struct
//! (`cnet_route`); a route may use a nexthop object (`nhid`, see
//! nexthop.rs). Multipath routes of their own are not in the C struct yet.

use std::ffi::c_char;
use std::net::IpAddr;

use cnet_core::route::{
    Family, Route, RouteEntry, RouteFilter, RouteLookup, RouteOp, RouteOwner, RouteQuery,
    RouteType, TABLE_MAIN,
};
use cnet_core::{Error, IpNet};

use crate::boundary::{
    cnet_error, cnet_result, code_of, cstr, fill, guard, items, obj, opt_nonempty, out_ptr, parse,
    parse_opt, set_if_asked, slice, Fail, Res, CNET_INVALID_ENUM, CNET_OK,
};
use crate::link::{CNET_ADDRSTRLEN, CNET_IFNAMSIZ};
use crate::ns::cnet_handle;
use crate::out::{free_box, list_head, list_out};

/// The route protocol cnet's routes carry (119): reconcile never touches
/// routes of other protocols.
pub const CNET_ROUTE_PROTOCOL: u8 = 119;
/// The main routing table.
pub const CNET_TABLE_MAIN: u32 = 254;

/// A route to program, `ip route add [TYPE] DST [via GW] [dev DEV]
/// [onlink] [src SRC] [metric M] [table T] [proto P] [mtu MTU]`, or with
/// `nhid` `ip route add DST nhid ID` (a nexthop object). Zero /
/// NULL fields are "not set"; start from a zeroed struct.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_route {
    /// Destination prefix ("10.244.2.0/24", "default" for 0.0.0.0/0,
    /// "default6" for ::/0).
    pub dst: *const c_char,
    /// Gateway (`via`), or NULL.
    pub via: *const c_char,
    /// Output device (`dev`), or NULL.
    pub dev: *const c_char,
    /// Preferred source (`src`), or NULL.
    pub src: *const c_char,
    /// Metric (0: the kernel's default).
    pub metric: u32,
    /// Table (0: main).
    pub table: u32,
    /// Protocol (0: cnet's, `CNET_ROUTE_PROTOCOL`).
    pub protocol: u8,
    /// Type as the kernel numbers it (RTN_*: 1 unicast, 6 blackhole,
    /// 7 unreachable, 8 prohibit; 0: unicast).
    pub type_: u8,
    /// `onlink`.
    pub onlink: bool,
    /// Route MTU (0: none).
    pub mtu: u32,
    /// The nexthop object to use (`nhid ID`, see `cnet_nexthop_add`)
    /// instead of `via` / `dev` (0: none).
    pub nhid: u32,
}

/// A route as the kernel lists it (`ip route show`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cnet_route_entry {
    /// Destination prefix ("0.0.0.0/0" for default).
    pub dst: [c_char; CNET_ADDRSTRLEN],
    /// Table.
    pub table: u32,
    /// Protocol.
    pub protocol: u8,
    /// Type (RTN_*).
    pub type_: u8,
    /// Scope (RT_SCOPE_*).
    pub scope: u8,
    /// Gateway of a single-path route, or "".
    pub gateway: [c_char; CNET_ADDRSTRLEN],
    /// Output device index, 0 if none.
    pub oif: u32,
    /// Preferred source, or "".
    pub prefsrc: [c_char; CNET_ADDRSTRLEN],
    /// Metric.
    pub metric: u32,
    /// `onlink`.
    pub onlink: bool,
    /// Route MTU, 0 if none.
    pub mtu: u32,
    /// Number of next hops of a multipath route (0 for single-path).
    pub nexthops: u32,
    /// The nexthop object the route uses (`nhid`), 0 if none.
    pub nhid: u32,
}

/// An owned array of routes; free with `cnet_route_array_free`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_route_array {
    /// The routes.
    pub items: *const cnet_route_entry,
    /// How many.
    pub len: usize,
}
list_head!(cnet_route_array, cnet_route_entry);

/// What to list (`ip [-4|-6] route show [table T] [dev DEV] [proto P]`);
/// zero / NULL fields do not filter.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_route_filter {
    /// AF_INET or AF_INET6; 0: both.
    pub family: u8,
    /// Table; 0: all tables.
    pub table: u32,
    /// Device, or NULL.
    pub dev: *const c_char,
    /// Protocol; 0: any.
    pub protocol: u8,
}

/// The kernel's routing decision (`ip route get`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cnet_route_lookup_result {
    /// Type of the result (RTN_*: 1 unicast, 2 local, …).
    pub type_: u8,
    /// Table of the route that decided.
    pub table: u32,
    /// Output device index, 0 if none.
    pub oif: u32,
    /// Output device name, or "".
    pub dev: [c_char; CNET_IFNAMSIZ],
    /// Next-hop gateway, or "" when directly connected.
    pub gateway: [c_char; CNET_ADDRSTRLEN],
    /// Preferred source address, or "".
    pub prefsrc: [c_char; CNET_ADDRSTRLEN],
    /// Path MTU if cached, else 0.
    pub mtu: u32,
}

/// A batch operation.
pub type cnet_route_op_kind = u32;
/// `ip route add` (fails on an existing route).
pub const CNET_ROUTE_ADD: cnet_route_op_kind = 1;
/// `ip route replace`.
pub const CNET_ROUTE_REPLACE: cnet_route_op_kind = 2;
/// `ip route del`.
pub const CNET_ROUTE_DELETE: cnet_route_op_kind = 3;

/// One operation of a batch.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_route_op {
    /// `CNET_ROUTE_ADD`, `_REPLACE` or `_DELETE`.
    pub op: cnet_route_op_kind,
    /// The route.
    pub route: cnet_route,
}

/// What a reconcile did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct cnet_reconcile_counts {
    /// Entries that were missing and were added.
    pub added: usize,
    /// Entries that differed and were replaced.
    pub replaced: usize,
    /// Stale entries that were deleted.
    pub deleted: usize,
    /// Entries that were already right.
    pub unchanged: usize,
}

pub(crate) fn route_of(c: &cnet_route) -> Res<Route> {
    let dst = cstr(c.dst, "route.dst")?;
    let mut r = match dst {
        "default" => Route::default_v4(),
        "default6" => Route::default_v6(),
        s => Route::to(parse::<IpNet>(s, "route.dst")?),
    };
    if let Some(gw) = parse_opt::<IpAddr>(c.via, "route.via")? {
        r = r.via(gw);
    }
    if let Some(d) = opt_nonempty(c.dev, "route.dev")? {
        r = r.dev(d);
    }
    if let Some(s) = parse_opt::<IpAddr>(c.src, "route.src")? {
        r = r.src(s);
    }
    if c.metric != 0 {
        r = r.metric(c.metric);
    }
    if c.table != 0 {
        r = r.table(c.table);
    }
    if c.protocol != 0 {
        r = r.protocol(c.protocol);
    }
    if c.type_ != 0 {
        r = r.kind(RouteType::from_u8(c.type_));
    }
    if c.onlink {
        r = r.onlink();
    }
    if c.mtu != 0 {
        r = r.mtu(c.mtu);
    }
    if c.nhid != 0 {
        r = r.nexthop_id(c.nhid);
    }
    Ok(r)
}

fn ip_str(dst: &mut [c_char; CNET_ADDRSTRLEN], ip: Option<IpAddr>) -> Res {
    ip.map_or(Ok(()), |ip| fill(dst, &ip.to_string()))
}

fn entry_of(e: &RouteEntry) -> Res<cnet_route_entry> {
    let mut c = cnet_route_entry {
        dst: [0; CNET_ADDRSTRLEN],
        table: e.table,
        protocol: e.protocol,
        type_: e.kind.to_u8(),
        scope: e.scope.to_u8(),
        gateway: [0; CNET_ADDRSTRLEN],
        oif: e.oif.unwrap_or(0),
        prefsrc: [0; CNET_ADDRSTRLEN],
        metric: e.metric,
        onlink: e.onlink,
        mtu: e.mtu.unwrap_or(0),
        nexthops: u32::try_from(e.nexthops.len()).unwrap_or(u32::MAX),
        nhid: e.nhid.unwrap_or(0),
    };
    fill(&mut c.dst, &e.dst.to_string())?;
    ip_str(&mut c.gateway, e.gateway)?;
    ip_str(&mut c.prefsrc, e.prefsrc)?;
    Ok(c)
}

fn lookup_of(l: &RouteLookup) -> Res<cnet_route_lookup_result> {
    let mut c = cnet_route_lookup_result {
        type_: l.kind.to_u8(),
        table: l.table,
        oif: l.oif.unwrap_or(0),
        dev: [0; CNET_IFNAMSIZ],
        gateway: [0; CNET_ADDRSTRLEN],
        prefsrc: [0; CNET_ADDRSTRLEN],
        mtu: l.mtu.unwrap_or(0),
    };
    if let Some(d) = &l.dev {
        fill(&mut c.dev, d)?;
    }
    ip_str(&mut c.gateway, l.gateway)?;
    ip_str(&mut c.prefsrc, l.prefsrc)?;
    Ok(c)
}

/// `ip route add …`; `CNET_ALREADY_EXISTS` if the route exists, the
/// kernel's text for a refused one ("Nexthop has invalid gateway").
#[no_mangle]
pub extern "C" fn cnet_route_add(
    h: *const cnet_handle,
    route: *const cnet_route,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let r = route_of(obj(route, "route")?)?;
        h.h.routes().add(r)?;
        Ok(())
    })
}
/// `ip route replace …`.
#[no_mangle]
pub extern "C" fn cnet_route_replace(
    h: *const cnet_handle,
    route: *const cnet_route,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let r = route_of(obj(route, "route")?)?;
        h.h.routes().replace(r)?;
        Ok(())
    })
}
/// `ip route del …`; `CNET_NOT_FOUND` if absent.
#[no_mangle]
pub extern "C" fn cnet_route_delete(
    h: *const cnet_handle,
    route: *const cnet_route,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let r = route_of(obj(route, "route")?)?;
        h.h.routes().delete(r)?;
        Ok(())
    })
}

/// Delete the route if present; `*deleted` (may be NULL) says whether it was.
#[no_mangle]
pub extern "C" fn cnet_route_delete_if_exists(
    h: *const cnet_handle,
    route: *const cnet_route,
    deleted: *mut bool,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let r = route_of(obj(route, "route")?)?;
        let d = h.h.routes().delete_if_exists(r)?;
        set_if_asked(deleted, || d);
        Ok(())
    })
}

/// Routes matching `filter` (NULL: every route of every table).
#[no_mangle]
pub extern "C" fn cnet_route_list(
    h: *const cnet_handle,
    filter: *const cnet_route_filter,
    out: *mut *mut cnet_route_array,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let out = out_ptr(out, "out")?;
        let mut f = RouteFilter::new();
        if !filter.is_null() {
            let c = obj(filter, "filter")?;
            f = match i32::from(c.family) {
                0 => f,
                libc::AF_INET => f.family(Family::V4),
                libc::AF_INET6 => f.family(Family::V6),
                x => {
                    return Err(Fail::new(
                        CNET_INVALID_ENUM,
                        format!("filter.family {x} is neither AF_INET nor AF_INET6"),
                    ))
                }
            };
            if c.table != 0 {
                f = f.table(c.table);
            }
            if let Some(d) = opt_nonempty(c.dev, "filter.dev")? {
                f = f.dev(d);
            }
            if c.protocol != 0 {
                f = f.protocol(c.protocol);
            }
        }
        let items =
            h.h.routes()
                .list(&f)?
                .iter()
                .map(entry_of)
                .collect::<Res<Vec<_>>>()?;
        list_out(out, items, Vec::new());
        Ok(())
    })
}

/// Free a route list. `cnet_route_array_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_route_array_free(list: *mut cnet_route_array) {
    free_box(list)
}

/// The kernel's decision for `dst` (`ip route get DST [from SRC]`): no
/// packet is sent. `src` may be NULL.
#[no_mangle]
pub extern "C" fn cnet_route_lookup(
    h: *const cnet_handle,
    dst: *const c_char,
    src: *const c_char,
    out: *mut cnet_route_lookup_result,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let dst: IpAddr = parse(cstr(dst, "dst")?, "dst")?;
        let src = parse_opt::<IpAddr>(src, "src")?;
        let out = out_ptr(out, "out")?;
        let mut q = RouteQuery::new(dst);
        if let Some(s) = src {
            q = q.from(s);
        }
        out.set(lookup_of(&h.h.routes().lookup(&q)?)?);
        Ok(())
    })
}

/// Apply `len` operations in one pipelined batch (all written before the
/// ACKs are read). `results` (may be NULL) receives one code per
/// operation. Returns `CNET_OK` when all succeeded, else `CNET_PARTIAL`
/// with an error naming each failed item; the others were applied. An
/// invalid operation (bad prefix, unknown op) fails the whole call before
/// anything is sent.
#[no_mangle]
pub extern "C" fn cnet_route_batch(
    h: *const cnet_handle,
    ops: *const cnet_route_op,
    len: usize,
    results: *mut cnet_result,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let ops = slice(ops, len, "ops")?;
        let batch = ops
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let r = route_of(&o.route).map_err(|f| f.item(i))?;
                Ok(match o.op {
                    CNET_ROUTE_ADD => RouteOp::Add(r),
                    CNET_ROUTE_REPLACE => RouteOp::Replace(r),
                    CNET_ROUTE_DELETE => RouteOp::Delete(r),
                    x => {
                        return Err(Fail::new(
                            CNET_INVALID_ENUM,
                            format!("ops[{i}].op {x} is not a route operation (1-3)"),
                        ))
                    }
                })
            })
            .collect::<Res<Vec<_>>>()?;
        let out = h.h.routes().apply_batch(&batch);
        if !results.is_null() {
            let codes = out
                .iter()
                .map(|r| r.as_ref().map_or_else(code_of, |()| CNET_OK));
            crate::boundary::write_all(results, len, codes)?;
        }
        let errors: Vec<Error> = out.into_iter().filter_map(Result::err).collect();
        if errors.is_empty() {
            return Ok(());
        }
        Err(Error::Partial {
            context: format!("route batch of {len}"),
            applied: format!("{} succeeded", len - errors.len()),
            errors,
        }
        .into())
    })
}

/// Make the routes of `protocol` (0: cnet's) in `table` (0: main),
/// optionally only through `dev` (may be NULL), exactly `routes`: add the
/// missing, replace the different, delete the stale; routes of other
/// protocols are never touched. `counts` (may be NULL) is written on
/// success; `CNET_PARTIAL` names every item that failed.
#[no_mangle]
pub extern "C" fn cnet_route_reconcile(
    h: *const cnet_handle,
    protocol: u8,
    table: u32,
    dev: *const c_char,
    routes: *const cnet_route,
    len: usize,
    counts: *mut cnet_reconcile_counts,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let h = obj(h, "handle")?;
        let dev = opt_nonempty(dev, "dev")?;
        let protocol = if protocol == 0 {
            CNET_ROUTE_PROTOCOL
        } else {
            protocol
        };
        let table = if table == 0 { TABLE_MAIN } else { table };
        let mut owner = RouteOwner::new(protocol, table);
        if let Some(d) = dev {
            owner = owner.dev(d);
        }
        // Every route belongs to the owner unless it says otherwise.
        let desired = items(routes, len, "routes", |r| {
            Ok(route_of(r)?.protocol(protocol).table(table))
        })?;
        let c = h.h.routes().reconcile(&owner, &desired)?.into_result()?;
        set_if_asked(counts, || counts_of(c));
        Ok(())
    })
}

pub(crate) fn counts_of(c: cnet_core::reconcile::ReconcileCounts) -> cnet_reconcile_counts {
    cnet_reconcile_counts {
        added: c.added,
        replaced: c.replaced,
        deleted: c.deleted,
        unchanged: c.unchanged,
    }
}
