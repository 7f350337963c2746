//! Error paths of the exports, called as C would: NULL arguments, invalid
//! UTF-8, out-of-range enums, unknown names (in a throwaway namespace),
//! and `_free(NULL)`. Runs as root (namespaces); says so otherwise.

mod common;

use std::ffi::{c_char, CStr, CString};
use std::ptr::{null, null_mut};

use cnet::addr::*;
use cnet::boundary::*;
use cnet::ipam::*;
use cnet::link::*;
use cnet::neigh::*;
use cnet::nexthop::*;
use cnet::node::*;
use cnet::ns::*;
use cnet::route::*;
use cnet::rule::*;
use cnet::trace::*;
use cnet_test_support::privileged;
use common::{bad, fails};

struct Ns(String, *mut cnet_netns, *mut cnet_handle);
impl Drop for Ns {
    fn drop(&mut self) {
        cnet_handle_free(self.2);
        cnet_netns_free(self.1);
        let n = CString::new(self.0.clone()).unwrap();
        assert_eq!(
            cnet_netns_delete(n.as_ptr(), null_mut(), null_mut()),
            CNET_OK
        );
    }
}

fn netns(tag: &str) -> Ns {
    let name = format!("cn-ffi{tag}-{}", std::process::id());
    let c = CString::new(name.clone()).unwrap();
    let mut ns = null_mut();
    assert_eq!(cnet_netns_create(c.as_ptr(), &mut ns, null_mut()), CNET_OK);
    // The guard exists before the handle, so a failure still deletes it.
    let mut g = Ns(name, ns, null_mut());
    assert_eq!(cnet_handle_new(ns, &mut g.2, null_mut()), CNET_OK);
    g
}

#[test]
fn null_handles_and_arguments_are_a_code_never_a_crash() {
    let h: *const cnet_handle = null();
    let name = c"x".as_ptr();
    let null_codes = [
        fails(|e| cnet_link_delete(h, name, e)).0,
        fails(|e| cnet_link_set_up(h, name, e)).0,
        fails(|e| cnet_link_add(h, null(), e)).0,
        fails(|e| cnet_addr_add(h, name, c"10.0.0.1/24".as_ptr(), e)).0,
        fails(|e| cnet_route_add(h, null(), e)).0,
        fails(|e| cnet_route_lookup(h, c"10.0.0.1".as_ptr(), null(), null_mut(), e)).0,
        fails(|e| cnet_neigh_add(h, null(), e)).0,
        fails(|e| cnet_fdb_append(h, null(), e)).0,
        fails(|e| cnet_netns_open(null(), null_mut(), e)).0,
        fails(|e| cnet_netns_create(name, null_mut(), e)).0,
        fails(|e| cnet_handle_new(null(), null_mut(), e)).0,
        fails(|e| cnet_ipam_store_open_file(null(), null_mut(), e)).0,
        fails(|e| cnet_pool_allocate(null(), name, name, null_mut(), e)).0,
        fails(|e| cnet_leases_acquire(null(), name, null(), 60, null_mut(), e)).0,
        fails(|e| cnet_node_new(h, null(), null_mut(), e)).0,
        fails(|e| cnet_trace(null(), name, null(), false, 0, null_mut(), e)).0,
        fails(|e| cnet_route_batch(h, null(), 3, null_mut(), e)).0,
    ];
    assert!(
        null_codes.iter().all(|&c| c == CNET_NULL_ARGUMENT),
        "{null_codes:?}"
    );
    // Without an error out-parameter, the code alone.
    assert_eq!(cnet_link_delete(h, name, null_mut()), CNET_NULL_ARGUMENT);
    // A NULL out-parameter is refused before any work (nothing created).
    let (rc, m) = fails(|e| cnet_netns_create(c"cn-ffi-never".as_ptr(), null_mut(), e));
    assert_eq!(rc, CNET_NULL_ARGUMENT, "{m}");
    assert!(!cnet_netns_exists(c"cn-ffi-never".as_ptr()));
}

#[test]
fn frees_of_null_do_nothing() {
    cnet_error_free(null_mut());
    cnet_netns_free(null_mut());
    cnet_handle_free(null_mut());
    cnet_link_array_free(null_mut());
    cnet_addr_array_free(null_mut());
    cnet_route_array_free(null_mut());
    cnet_neigh_array_free(null_mut());
    cnet_fdb_array_free(null_mut());
    cnet_ipam_store_free(null_mut());
    cnet_leases_free(null_mut());
    cnet_lease_free(null_mut());
    cnet_lease_array_free(null_mut());
    cnet_pool_free(null_mut());
    cnet_alloc_free(null_mut());
    cnet_alloc_array_free(null_mut());
    cnet_node_free(null_mut());
    cnet_peer_report_free(null_mut());
    cnet::cnet_string_free(null_mut());
}

#[test]
fn invalid_utf8_and_enums_and_unparsable_input() {
    let (rc, m) = fails(|e| cnet_netns_open(bad(), &mut null_mut(), e));
    assert_eq!(rc, CNET_INVALID_UTF8, "{m}");
    assert!(m.contains("name"), "{m}");
    let (rc, _) = fails(|e| cnet_ipam_store_open_file(bad(), &mut null_mut(), e));
    assert_eq!(rc, CNET_INVALID_UTF8);
    let dir = std::env::temp_dir().join(format!("cnet-ffi-ipam-{}", std::process::id()));
    let d = CString::new(dir.to_str().unwrap()).unwrap();
    let mut store = null_mut();
    assert_eq!(
        cnet_ipam_store_open_file(d.as_ptr(), &mut store, null_mut()),
        CNET_OK
    );
    let cfg = cnet_pool_config {
        subnet: c"10.244.1.0/33".as_ptr(),
        range_start: null(),
        range_end: null(),
        gateway: null(),
    };
    let (rc, m) = fails(|e| cnet_ipam_store_pool(store, &cfg, &mut null_mut(), e));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{m}");
    assert!(m.contains("config.subnet"), "{m}");
    let cfg = cnet_pool_config {
        subnet: c"10.244.1.0/24".as_ptr(),
        ..cfg
    };
    let mut pool = null_mut();
    assert_eq!(
        cnet_ipam_store_pool(store, &cfg, &mut pool, null_mut()),
        CNET_OK
    );
    let (rc, _) = fails(|e| cnet_pool_allocate(pool, bad(), c"eth0".as_ptr(), &mut null_mut(), e));
    assert_eq!(rc, CNET_INVALID_UTF8);
    let mut a = null_mut();
    assert_eq!(
        cnet_pool_allocate(pool, c"c1".as_ptr(), c"eth0".as_ptr(), &mut a, null_mut()),
        CNET_OK
    );
    // SAFETY: a live allocation.
    let cidr = unsafe { CStr::from_ptr((*a).cidr.as_ptr()) };
    assert_eq!(cidr.to_str().unwrap(), "10.244.1.2/24");
    cnet_alloc_free(a);
    let etcd = [c"http://127.0.0.1:1".as_ptr()];
    let rc = cnet_ipam_store_open_etcd(
        etcd.as_ptr(),
        1,
        c"/cnet".as_ptr(),
        100,
        &mut null_mut(),
        null_mut(),
    );
    assert!(
        rc == CNET_UNSUPPORTED || rc == CNET_IO || rc == CNET_TIMEOUT || rc == CNET_NETLINK,
        "{rc}"
    );
    cnet_pool_free(pool);
    cnet_ipam_store_free(store);
    std::fs::remove_dir_all(dir).ok();

    let backend = cnet_backend {
        kind: 77,
        vni: 0,
        port: 0,
        mtu: 0,
        key_file: null(),
        keepalive: 0,
    };
    let (rc, m) = fails(|e| cnet_node_reconcile_peers(null(), &backend, null(), 0, null_mut(), e));
    assert_eq!(rc, CNET_NULL_ARGUMENT, "{m}");
    let (rc, m) = fails(|e| cnet_node_wireguard_public_key(null(), &backend, null_mut(), 0, e));
    assert_eq!(rc, CNET_NULL_ARGUMENT, "{m}");
}

/// A node in namespace `ns` (underlay br0 192.0.2.1, subnet 10.244.1.0/24).
fn node_in(ns: &Ns) -> *mut cnet_node {
    // SAFETY: all-zero is a valid cnet_node_config (NULL pointers, 0).
    let mut nc: cnet_node_config = unsafe { std::mem::zeroed() };
    nc.name = c"me".as_ptr();
    nc.subnet = c"10.244.1.0/24".as_ptr();
    nc.underlay_dev = c"br0".as_ptr();
    nc.underlay_ip = c"192.0.2.1".as_ptr();
    nc.wireguard_dev = c"wg-test0".as_ptr();
    let mut node = null_mut();
    assert_eq!(cnet_node_new(ns.2, &nc, &mut node, null_mut()), CNET_OK);
    node
}

#[test]
fn wireguard_backend_keys_enums_and_missing_kernel_support() {
    if !privileged() {
        return;
    }
    let ns = netns("w");
    // SAFETY: all-zero is a valid cnet_link_config.
    let mut br: cnet_link_config = unsafe { std::mem::zeroed() };
    br.kind = CNET_LINK_BRIDGE;
    br.name = c"br0".as_ptr();
    br.up = true;
    assert_eq!(cnet_link_add(ns.2, &br, null_mut()), CNET_OK);
    let node = node_in(&ns);
    let dir = std::env::temp_dir().join(format!("cnet-ffi-wg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keyfile = CString::new(dir.join("wg.key").to_str().unwrap()).unwrap();
    // SAFETY: all-zero is a valid cnet_backend.
    let mut wg: cnet_backend = unsafe { std::mem::zeroed() };
    wg.kind = CNET_BACKEND_WIREGUARD;
    wg.key_file = keyfile.as_ptr();
    wg.keepalive = 25;

    // The public key: base64 of 32 bytes, stable, the private key 0600.
    let mut buf = [0 as c_char; 64];
    assert_eq!(
        cnet_node_wireguard_public_key(node, &wg, buf.as_mut_ptr(), buf.len(), null_mut()),
        CNET_OK
    );
    // SAFETY: NUL-terminated by the call.
    let key = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_owned();
    assert_eq!(key.to_bytes().len(), 44, "{key:?}");
    let mut again = [0 as c_char; 45];
    assert_eq!(
        cnet_node_wireguard_public_key(node, &wg, again.as_mut_ptr(), 45, null_mut()),
        CNET_OK
    );
    // SAFETY: as above.
    assert_eq!(unsafe { CStr::from_ptr(again.as_ptr()) }, key.as_c_str());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("wg.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (rc, m) = fails(|e| cnet_node_wireguard_public_key(node, &wg, again.as_mut_ptr(), 44, e));
    assert_eq!(rc, CNET_BUFFER_TOO_SHORT, "{m}");
    let (rc, m) = fails(|e| cnet_node_wireguard_public_key(node, &wg, null_mut(), 64, e));
    assert_eq!(rc, CNET_NULL_ARGUMENT, "{m}");

    // Bad enums, settings of another backend, bad strings.
    // SAFETY: all-zero is a valid cnet_backend.
    let mut other: cnet_backend = unsafe { std::mem::zeroed() };
    other.kind = 8;
    let (rc, m) = fails(|e| cnet_node_reconcile_peers(node, &other, null(), 0, null_mut(), e));
    assert_eq!(rc, CNET_INVALID_ENUM, "{m}");
    assert!(m.contains("1-7"), "{m}");
    other.kind = CNET_BACKEND_HOST_GW;
    let (rc, m) = fails(|e| cnet_node_wireguard_public_key(node, &other, buf.as_mut_ptr(), 64, e));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{m}");
    assert!(m.contains("CNET_BACKEND_WIREGUARD"), "{m}");
    other.keepalive = 25;
    let (rc, m) = fails(|e| cnet_node_reconcile_peers(node, &other, null(), 0, null_mut(), e));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{m}");
    assert!(m.contains("WireGuard settings"), "{m}");
    // SAFETY: all-zero is a valid cnet_backend.
    let mut badfile: cnet_backend = unsafe { std::mem::zeroed() };
    badfile.kind = CNET_BACKEND_WIREGUARD;
    badfile.key_file = bad();
    let (rc, m) =
        fails(|e| cnet_node_wireguard_public_key(node, &badfile, buf.as_mut_ptr(), 64, e));
    assert_eq!(rc, CNET_INVALID_UTF8, "{m}");
    assert!(m.contains("backend.key_file"), "{m}");

    // SAFETY: all-zero is a valid cnet_peer.
    let mut peer: cnet_peer = unsafe { std::mem::zeroed() };
    peer.name = c"peer-b".as_ptr();
    peer.subnet = c"10.244.2.0/24".as_ptr();
    peer.underlay = c"192.0.2.2".as_ptr();
    peer.wireguard_key = c"not-a-key".as_ptr();
    let (rc, m) = fails(|e| cnet_node_reconcile_peers(node, &wg, &peer, 1, null_mut(), e));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{m}");
    assert!(m.contains("peers[0].wireguard_key"), "{m}");
    peer.wireguard_key = bad();
    let (rc, _) = fails(|e| cnet_node_reconcile_peers(node, &wg, &peer, 1, null_mut(), e));
    assert_eq!(rc, CNET_INVALID_UTF8);

    // With a good key: programmed where the kernel has wireguard, the
    // kernel's words where it has not, and nothing left behind then.
    peer.wireguard_key = key.as_ptr();
    let mut rep: *mut cnet_peer_report = null_mut();
    let mut err = null_mut();
    let rc = cnet_node_reconcile_peers(node, &wg, &peer, 1, &mut rep, &mut err);
    if rc == CNET_OK {
        // SAFETY: a live report, written on success.
        let r = unsafe { &*rep };
        assert_eq!(r.wireguard, 1);
        assert_eq!(r.wireguard_peers.added, 1);
        assert_eq!((r.outcomes_len, r.failed), (1, 0));
    } else {
        // SAFETY: a live error.
        let m = unsafe { CStr::from_ptr(cnet_error_message(err)) }
            .to_string_lossy()
            .into_owned();
        assert_eq!(rc, CNET_UNSUPPORTED, "{m}");
        let mut l = std::mem::MaybeUninit::<cnet_link>::uninit();
        assert_eq!(
            cnet_link_get(ns.2, c"wg-test0".as_ptr(), l.as_mut_ptr(), null_mut()),
            CNET_NOT_FOUND
        );
    }
    cnet_error_free(err);
    cnet_peer_report_free(rep);
    assert_eq!(cnet_node_teardown(node, null_mut(), null_mut()), CNET_OK);
    cnet_node_free(node);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn lease_attrs_carry_the_wireguard_key() {
    let dir = std::env::temp_dir().join(format!("cnet-ffi-wgl-{}", std::process::id()));
    let d = CString::new(dir.to_str().unwrap()).unwrap();
    let mut store = null_mut();
    assert_eq!(
        cnet_ipam_store_open_file(d.as_ptr(), &mut store, null_mut()),
        CNET_OK
    );
    // SAFETY: all-zero is a valid cnet_subnet_config.
    let mut sc: cnet_subnet_config = unsafe { std::mem::zeroed() };
    sc.network = c"10.244.0.0/16".as_ptr();
    let mut leases = null_mut();
    assert_eq!(
        cnet_ipam_store_leases(store, &sc, &mut leases, null_mut()),
        CNET_OK
    );
    // SAFETY: all-zero is a valid cnet_node_attrs.
    let mut at: cnet_node_attrs = unsafe { std::mem::zeroed() };
    at.backend = c"wireguard".as_ptr();
    at.wireguard_public_key = c"short".as_ptr();
    let (rc, m) =
        fails(|e| cnet_leases_acquire(leases, c"n1".as_ptr(), &at, 60, &mut null_mut(), e));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{m}");
    assert!(m.contains("attrs.wireguard_public_key"), "{m}");
    let key = c"HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
    at.wireguard_public_key = key.as_ptr();
    let mut lease = null_mut();
    assert_eq!(
        cnet_leases_acquire(leases, c"n1".as_ptr(), &at, 60, &mut lease, null_mut()),
        CNET_OK
    );
    // SAFETY: a live lease; its key is NUL-terminated.
    let got = unsafe { CStr::from_ptr((*lease).wireguard_public_key) };
    assert_eq!(got, key);
    cnet_lease_free(lease);
    cnet_leases_free(leases);
    cnet_ipam_store_free(store);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unknown_names_and_bad_kinds_in_a_namespace() {
    if !privileged() {
        return;
    }
    let ns = netns("e");
    let h = ns.2;
    let (rc, m) = fails(|e| cnet_link_delete(h, c"nope0".as_ptr(), e));
    assert_eq!(rc, CNET_NOT_FOUND, "{m}");
    let mut l = std::mem::MaybeUninit::<cnet_link>::uninit();
    assert_eq!(
        cnet_link_get(h, c"nope0".as_ptr(), l.as_mut_ptr(), null_mut()),
        CNET_NOT_FOUND
    );
    let mut deleted = true;
    assert_eq!(
        cnet_link_delete_if_exists(h, c"nope0".as_ptr(), &mut deleted, null_mut()),
        CNET_OK
    );
    assert!(!deleted);
    // SAFETY: all-zero is a valid cnet_link_config (NULL pointers, 0, false).
    let mut cfg: cnet_link_config = unsafe { std::mem::zeroed() };
    cfg.kind = 99;
    cfg.name = c"x0".as_ptr();
    let (rc, m) = fails(|e| cnet_link_add(h, &cfg, e));
    assert_eq!(rc, CNET_INVALID_ENUM, "{m}");
    cfg.kind = CNET_LINK_BRIDGE;
    cfg.name = bad();
    assert_eq!(fails(|e| cnet_link_add(h, &cfg, e)).0, CNET_INVALID_UTF8);
    cfg.name = c"this-name-is-far-too-long".as_ptr();
    assert_eq!(
        fails(|e| cnet_link_add(h, &cfg, e)).0,
        CNET_INVALID_ARGUMENT
    );
    cfg.name = c"br0".as_ptr();
    cfg.up = true;
    assert_eq!(cnet_link_add(h, &cfg, null_mut()), CNET_OK);
    let (rc, m) = fails(|e| cnet_link_add(h, &cfg, e));
    assert_eq!(rc, CNET_ALREADY_EXISTS, "{m}");
    let mut err = null_mut();
    assert_eq!(cnet_link_add(h, &cfg, &mut err), CNET_ALREADY_EXISTS);
    assert_eq!(cnet_error_errno(err), libc::EEXIST);
    cnet_error_free(err);
    // The kernel's extended-ACK text comes through.
    // SAFETY: zeroed route: NULL pointers and zeros.
    let mut r: cnet_route = unsafe { std::mem::zeroed() };
    r.dst = c"10.9.0.0/24".as_ptr();
    r.via = c"203.0.113.9".as_ptr();
    let mut err = null_mut();
    let rc = cnet_route_add(h, &r, &mut err);
    assert_ne!(rc, CNET_OK);
    // SAFETY: live error.
    let m = unsafe { CStr::from_ptr(cnet_error_message(err)) }
        .to_string_lossy()
        .into_owned();
    assert!(cnet_error_errno(err) != 0, "{m}");
    cnet_error_free(err);
    let mut res = std::mem::MaybeUninit::<cnet_route_lookup_result>::uninit();
    let rc = cnet_route_lookup(
        h,
        c"not-an-ip".as_ptr(),
        null(),
        res.as_mut_ptr(),
        null_mut(),
    );
    assert_eq!(rc, CNET_INVALID_ARGUMENT);
    // A batch with one bad op sends nothing; one failing item is PARTIAL.
    // SAFETY: zeroed ops.
    let mut ops: [cnet_route_op; 2] = unsafe { std::mem::zeroed() };
    ops[0].op = CNET_ROUTE_ADD;
    ops[0].route.dst = c"10.8.0.0/24".as_ptr();
    ops[0].route.dev = c"br0".as_ptr();
    ops[1].op = 9;
    ops[1].route.dst = c"10.8.1.0/24".as_ptr();
    assert_eq!(
        fails(|e| cnet_route_batch(h, ops.as_ptr(), 2, null_mut(), e)).0,
        CNET_INVALID_ENUM
    );
    ops[1].op = CNET_ROUTE_DELETE;
    let mut codes = [0u32; 2];
    let (rc, m) = fails(|e| cnet_route_batch(h, ops.as_ptr(), 2, codes.as_mut_ptr(), e));
    assert_eq!(rc, CNET_PARTIAL, "{m}");
    assert_eq!(codes, [CNET_OK, CNET_NOT_FOUND]);
    let (rc, _) = fails(|e| cnet_neigh_list(h, c"nope0".as_ptr(), &mut null_mut(), e));
    assert_eq!(rc, CNET_NOT_FOUND);
    let mut json = null_mut();
    assert_eq!(
        cnet_trace(
            ns.1,
            c"10.8.0.9".as_ptr(),
            c"::1".as_ptr(),
            false,
            0,
            &mut json,
            null_mut()
        ),
        CNET_INVALID_ARGUMENT
    );
    assert!(json.is_null(), "outputs are written only on success");
    assert_eq!(
        cnet_trace(
            ns.1,
            c"10.8.0.9".as_ptr(),
            null(),
            false,
            0,
            &mut json,
            null_mut()
        ),
        CNET_OK
    );
    // SAFETY: a string made by libcnet.
    let j = unsafe { CStr::from_ptr(json) }
        .to_string_lossy()
        .into_owned();
    assert!(j.contains("\"verdict\""), "{j}");
    cnet::cnet_string_free(json);
    let (rc, _) = fails(|e| cnet_netns_open(c"cn-ffi-no-such-ns".as_ptr(), &mut null_mut(), e));
    assert_eq!(rc, CNET_NOT_FOUND);
    let mut lbl = [0 as c_char; 4];
    assert_eq!(
        cnet_netns_label(ns.1, lbl.as_mut_ptr(), lbl.len(), null_mut()),
        CNET_BUFFER_TOO_SHORT
    );
}

#[test]
fn rule_errors_null_enums_utf8_and_unknown() {
    // SAFETY: all-zero is a valid cnet_rule.
    let mut r: cnet_rule = unsafe { std::mem::zeroed() };
    r.priority = 100;
    assert_eq!(
        fails(|e| cnet_rule_add(null(), &r, e)).0,
        CNET_NULL_ARGUMENT
    );
    assert_eq!(
        fails(|e| cnet_rule_list(null(), 0, &mut null_mut(), e)).0,
        CNET_NULL_ARGUMENT
    );
    assert_eq!(
        fails(|e| cnet_rule_reconcile(null(), 0, 0, null(), 0, null_mut(), e)).0,
        CNET_NULL_ARGUMENT
    );
    cnet_rule_array_free(null_mut());
    if !privileged() {
        return;
    }
    let ns = netns("r");
    let h = ns.2;
    assert_eq!(fails(|e| cnet_rule_add(h, null(), e)).0, CNET_NULL_ARGUMENT);
    assert_eq!(
        fails(|e| cnet_rule_list(h, 0, null_mut(), e)).0,
        CNET_NULL_ARGUMENT
    );
    let (rc, m) = fails(|e| cnet_rule_list(h, 3, &mut null_mut(), e));
    assert_eq!(rc, CNET_INVALID_ENUM, "{m}");
    r.action = 9;
    let (rc, m) = fails(|e| cnet_rule_add(h, &r, e));
    assert_eq!(rc, CNET_INVALID_ENUM, "{m}");
    assert!(m.contains("rule.action"), "{m}");
    r.action = CNET_RULE_LOOKUP;
    r.family = 99;
    assert_eq!(fails(|e| cnet_rule_add(h, &r, e)).0, CNET_INVALID_ENUM);
    r.family = 0;
    r.from = bad();
    assert_eq!(fails(|e| cnet_rule_add(h, &r, e)).0, CNET_INVALID_UTF8);
    r.from = c"10.244.1.1/24".as_ptr();
    let (rc, m) = fails(|e| cnet_rule_add(h, &r, e));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{m}");
    assert!(m.contains("host bits"), "{m}");
    r.from = c"2001:db8::/32".as_ptr();
    r.family = libc::AF_INET as u8;
    assert_eq!(fails(|e| cnet_rule_add(h, &r, e)).0, CNET_INVALID_ARGUMENT);
    r.family = 0;
    r.from = null();
    r.iif = bad();
    assert_eq!(fails(|e| cnet_rule_delete(h, &r, e)).0, CNET_INVALID_UTF8);
    r.iif = c"this-name-is-far-too-long".as_ptr();
    assert_eq!(fails(|e| cnet_rule_add(h, &r, e)).0, CNET_INVALID_ARGUMENT);
    // An unknown rule: delete is NOT_FOUND, delete_if_exists is fine.
    r.iif = null();
    r.table = 4242;
    let (rc, m) = fails(|e| cnet_rule_delete(h, &r, e));
    assert_eq!(rc, CNET_NOT_FOUND, "{m}");
    let mut deleted = true;
    assert_eq!(
        cnet_rule_delete_if_exists(h, &r, &mut deleted, null_mut()),
        CNET_OK
    );
    assert!(!deleted);
    // Reconcile: a rule without priority is an item failure; the others apply.
    // SAFETY: all-zero is a valid cnet_rule.
    let mut rs: [cnet_rule; 2] = unsafe { std::mem::zeroed() };
    rs[0].priority = 100;
    rs[0].table = 100;
    rs[1].table = 101;
    let (rc, m) = fails(|e| cnet_rule_reconcile(h, 0, 0, rs.as_ptr(), 2, null_mut(), e));
    assert_eq!(rc, CNET_PARTIAL, "{m}");
    assert!(m.contains("priority"), "{m}");
    rs[1].action = 42;
    let (rc, m) = fails(|e| cnet_rule_reconcile(h, 0, 0, rs.as_ptr(), 2, null_mut(), e));
    assert_eq!(rc, CNET_INVALID_ENUM, "{m}");
    assert!(m.starts_with("item 1"), "{m}");
    assert_eq!(
        fails(|e| cnet_rule_reconcile(h, 0, 0, null(), 2, null_mut(), e)).0,
        CNET_NULL_ARGUMENT
    );
}

#[test]
fn nexthop_errors_null_enums_utf8_and_unknown() {
    // SAFETY: all-zero is a valid cnet_nexthop.
    let mut n: cnet_nexthop = unsafe { std::mem::zeroed() };
    n.id = 1;
    assert_eq!(
        fails(|e| cnet_nexthop_add(null(), &n, e)).0,
        CNET_NULL_ARGUMENT
    );
    assert_eq!(
        fails(|e| cnet_nexthop_delete(null(), 1, e)).0,
        CNET_NULL_ARGUMENT
    );
    assert_eq!(
        fails(|e| cnet_nexthop_get(null(), 1, &mut null_mut(), e)).0,
        CNET_NULL_ARGUMENT
    );
    assert_eq!(
        fails(|e| cnet_nexthop_list(null(), null(), &mut null_mut(), e)).0,
        CNET_NULL_ARGUMENT
    );
    cnet_nexthop_entry_free(null_mut());
    cnet_nexthop_array_free(null_mut());
    if !privileged() {
        return;
    }
    let ns = netns("n");
    let h = ns.2;
    assert_eq!(
        fails(|e| cnet_nexthop_add(h, null(), e)).0,
        CNET_NULL_ARGUMENT
    );
    assert_eq!(
        fails(|e| cnet_nexthop_get(h, 1, null_mut(), e)).0,
        CNET_NULL_ARGUMENT
    );
    n.kind = 4;
    let (rc, m) = fails(|e| cnet_nexthop_add(h, &n, e));
    assert_eq!(rc, CNET_INVALID_ENUM, "{m}");
    assert!(m.contains("nexthop.kind"), "{m}");
    n.kind = CNET_NEXTHOP_PATH;
    n.via = bad();
    assert_eq!(fails(|e| cnet_nexthop_add(h, &n, e)).0, CNET_INVALID_UTF8);
    n.via = c"192.0.2.300".as_ptr();
    let (rc, m) = fails(|e| cnet_nexthop_replace(h, &n, e));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{m}");
    assert!(m.contains("nexthop.via"), "{m}");
    n.via = null();
    let (rc, m) = fails(|e| cnet_nexthop_add(h, &n, e));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{m}");
    n.dev = c"nope0".as_ptr();
    let (rc, m) = fails(|e| cnet_nexthop_add(h, &n, e));
    assert_eq!(rc, CNET_NOT_FOUND, "{m}");
    assert!(m.contains("nope0"), "{m}");
    n.dev = bad();
    assert_eq!(fails(|e| cnet_nexthop_add(h, &n, e)).0, CNET_INVALID_UTF8);
    n.dev = null();
    n.id = 0;
    n.kind = CNET_NEXTHOP_BLACKHOLE;
    let (rc, m) = fails(|e| cnet_nexthop_add(h, &n, e));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{m}");
    n.id = 5;
    n.kind = CNET_NEXTHOP_GROUP;
    n.group_len = 2;
    assert_eq!(fails(|e| cnet_nexthop_add(h, &n, e)).0, CNET_NULL_ARGUMENT);
    let members = [cnet_nexthop_group_member { id: 77, weight: 1 }];
    n.group = members.as_ptr();
    n.group_len = 1;
    let (rc, m) = fails(|e| cnet_nexthop_add(h, &n, e));
    assert_ne!(rc, CNET_OK, "{m}");
    let (rc, m) = fails(|e| cnet_nexthop_get(h, 77, &mut null_mut(), e));
    assert_eq!(rc, CNET_NOT_FOUND, "{m}");
    let (rc, m) = fails(|e| cnet_nexthop_delete(h, 77, e));
    assert_eq!(rc, CNET_NOT_FOUND, "{m}");
    let mut deleted = true;
    assert_eq!(
        cnet_nexthop_delete_if_exists(h, 77, &mut deleted, null_mut()),
        CNET_OK
    );
    assert!(!deleted);
    // SAFETY: all-zero is a valid cnet_nexthop_filter.
    let mut f: cnet_nexthop_filter = unsafe { std::mem::zeroed() };
    f.dev = bad();
    assert_eq!(
        fails(|e| cnet_nexthop_list(h, &f, &mut null_mut(), e)).0,
        CNET_INVALID_UTF8
    );
    f.dev = c"nope0".as_ptr();
    assert_eq!(
        fails(|e| cnet_nexthop_list(h, &f, &mut null_mut(), e)).0,
        CNET_NOT_FOUND
    );
    // A route naming a nexthop that does not exist: the kernel's words.
    // SAFETY: all-zero is a valid cnet_route.
    let mut r: cnet_route = unsafe { std::mem::zeroed() };
    r.dst = c"10.244.2.0/24".as_ptr();
    r.nhid = 77;
    let mut err = null_mut();
    assert_ne!(cnet_route_add(h, &r, &mut err), CNET_OK);
    assert!(!cnet_error_kernel_message(err).is_null());
    cnet_error_free(err);
}

#[test]
fn new_link_kinds_enums_parents_and_missing_kernel_support() {
    if !privileged() {
        return;
    }
    let ns = netns("k");
    let h = ns.2;
    // SAFETY: all-zero is a valid cnet_link_config.
    let mut c: cnet_link_config = unsafe { std::mem::zeroed() };
    c.name = c"x0".as_ptr();
    c.kind = 11;
    let (rc, m) = fails(|e| cnet_link_add(h, &c, e));
    assert_eq!(rc, CNET_INVALID_ENUM, "{m}");
    // A parent is required, by name, and must exist.
    for k in [CNET_LINK_MACVLAN, CNET_LINK_IPVLAN, CNET_LINK_VLAN] {
        c.kind = k;
        c.vlan_id = 10;
        c.dev = null();
        let (rc, m) = fails(|e| cnet_link_add(h, &c, e));
        assert_eq!(rc, CNET_NULL_ARGUMENT, "{m}");
        assert!(m.contains("config.dev"), "{m}");
        c.dev = bad();
        assert_eq!(fails(|e| cnet_link_add(h, &c, e)).0, CNET_INVALID_UTF8);
    }
    c.kind = CNET_LINK_MACVLAN;
    c.dev = c"nope0".as_ptr();
    let (rc, m) = fails(|e| cnet_link_add(h, &c, e));
    assert_eq!(rc, CNET_NOT_FOUND, "{m}");
    assert!(m.contains("nope0"), "{m}");
    c.dev = c"lo".as_ptr();
    c.macvlan_mode = 6;
    let (rc, m) = fails(|e| cnet_link_add(h, &c, e));
    assert_eq!(rc, CNET_INVALID_ENUM, "{m}");
    assert!(m.contains("macvlan_mode"), "{m}");
    c.macvlan_mode = 0;
    c.kind = CNET_LINK_IPVLAN;
    c.ipvlan_mode = 4;
    assert_eq!(fails(|e| cnet_link_add(h, &c, e)).0, CNET_INVALID_ENUM);
    c.ipvlan_mode = 0;
    c.kind = CNET_LINK_VLAN;
    c.vlan_protocol = 0x1234;
    let (rc, m) = fails(|e| cnet_link_add(h, &c, e));
    assert_eq!(rc, CNET_INVALID_ENUM, "{m}");
    assert!(m.contains("0x1234"), "{m}");
    c.vlan_protocol = 0;
    c.vlan_id = 5000;
    assert_eq!(fails(|e| cnet_link_add(h, &c, e)).0, CNET_INVALID_ARGUMENT);
    // WireGuard takes no MAC and no master.
    c.kind = CNET_LINK_WIREGUARD;
    c.dev = null();
    c.mac = c"02:00:00:00:00:01".as_ptr();
    let (rc, m) = fails(|e| cnet_link_add(h, &c, e));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{m}");
    // Kinds this kernel may lack: made, or CNET_UNSUPPORTED and nothing left.
    // SAFETY: all-zero is a valid cnet_link_config.
    let mut d: cnet_link_config = unsafe { std::mem::zeroed() };
    d.kind = CNET_LINK_BRIDGE;
    d.name = c"br0".as_ptr();
    assert_eq!(cnet_link_add(h, &d, null_mut()), CNET_OK);
    for (k, name) in [
        (CNET_LINK_WIREGUARD, c"wg0"),
        (CNET_LINK_DUMMY, c"dm0"),
        (CNET_LINK_VLAN, c"vl0"),
        (CNET_LINK_IPVLAN, c"iv0"),
    ] {
        // SAFETY: all-zero is a valid cnet_link_config.
        let mut c: cnet_link_config = unsafe { std::mem::zeroed() };
        c.kind = k;
        c.name = name.as_ptr();
        c.dev = c"br0".as_ptr();
        c.vlan_id = 10;
        let mut err = null_mut();
        let rc = cnet_link_add(h, &c, &mut err);
        let mut l = std::mem::MaybeUninit::<cnet_link>::uninit();
        let got = cnet_link_get(h, name.as_ptr(), l.as_mut_ptr(), null_mut());
        if rc == CNET_OK {
            assert_eq!(got, CNET_OK);
            // SAFETY: written by the successful get.
            assert_eq!(unsafe { l.assume_init() }.kind, k);
        } else {
            // SAFETY: a live error.
            let m = unsafe { CStr::from_ptr(cnet_error_message(err)) }
                .to_string_lossy()
                .into_owned();
            assert_eq!(rc, CNET_UNSUPPORTED, "{m}");
            assert_eq!(got, CNET_NOT_FOUND, "nothing half-made");
        }
        cnet_error_free(err);
    }
}

/// cnet_netns_open_path / _open_pid / _open / _create / _label: each code
/// the header promises, provoked. Opening needs no privilege; creating does.
#[test]
fn netns_codes_as_documented() {
    let dir = std::env::temp_dir().join(format!("cnet-ffi-nspath-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("file"), b"not a namespace").unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
    let path = |p: &std::path::Path| CString::new(p.to_str().unwrap()).unwrap();
    let open_path = |p: &CStr| fails(|e| cnet_netns_open_path(p.as_ptr(), &mut null_mut(), e));

    // Not a network namespace: CNET_INVALID_ARGUMENT saying what it is.
    let (rc, m) = open_path(c"/proc/self/ns/mnt");
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{m}");
    assert!(
        m.contains("a mnt namespace, not a network namespace"),
        "{m}"
    );
    let (rc, m) = open_path(&path(&dir.join("file")));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{m}");
    assert!(m.contains("a regular file"), "{m}");
    let (rc, m) = open_path(&path(&dir));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{m}");
    assert!(m.contains("a directory"), "{m}");
    // Missing, or a mount point with nothing mounted: CNET_NOT_FOUND.
    let (rc, m) = open_path(&path(&dir.join("missing")));
    assert_eq!(rc, CNET_NOT_FOUND, "{m}");
    let (rc, m) = open_path(&path(&dir.join("empty")));
    assert_eq!(rc, CNET_NOT_FOUND, "{m}");
    assert!(m.contains("empty file"), "{m}");
    let mut ns = null_mut();
    assert_eq!(
        cnet_netns_open_path(c"/proc/self/ns/net".as_ptr(), &mut ns, null_mut()),
        CNET_OK
    );
    cnet_netns_free(ns);
    let (rc, m) = fails(|e| cnet_netns_open_pid(u32::MAX - 1, &mut null_mut(), e));
    assert_eq!(rc, CNET_NOT_FOUND, "{m}");
    let (rc, m) = fails(|e| cnet_netns_open(c"cn-ffi-no-such-ns".as_ptr(), &mut null_mut(), e));
    assert_eq!(rc, CNET_NOT_FOUND, "{m}");
    std::fs::remove_dir_all(&dir).unwrap();
    if !privileged() {
        eprintln!("SKIPPED (create, label): needs root (namespaces)");
        return;
    }
    let ns = netns("p");
    let name = CString::new(ns.0.clone()).unwrap();
    let (rc, m) = fails(|e| cnet_netns_create(name.as_ptr(), &mut null_mut(), e));
    assert_eq!(rc, CNET_ALREADY_EXISTS, "{m}");
    let mut lbl = [0 as c_char; 4];
    let (rc, m) = fails(|e| cnet_netns_label(ns.1, lbl.as_mut_ptr(), lbl.len(), e));
    assert_eq!(rc, CNET_BUFFER_TOO_SHORT, "{m}");
}

// ------------------------------------------------------------------
// Every result code cnet.h promises for a condition, provoked once. The
// header's doc comments were read function by function; the promises not
// checked here are checked elsewhere: cnet_link_ensure CNET_MISMATCH
// (objects.rs), cnet_bridge_network_ensure / _attach CNET_MISMATCH and
// cnet_bridge_network_check's namespace_missing drift (network.rs),
// cnet_node_* CNET_PARTIAL (objects.rs), cnet_route_batch,
// cnet_rule_reconcile, cnet_link_add/_delete/_get, cnet_nexthop_delete/_get,
// cnet_rule_delete (the tests above), cnet_result_name (boundary.rs).

/// Run `f` on a thread whose file-system uid is `nobody` (setfsuid is per
/// thread and drops CAP_DAC_OVERRIDE with it), so root meets file rights.
fn as_nobody<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::unistd::setfsuid(nix::unistd::Uid::from_raw(65534));
            f()
        })
        .join()
        .unwrap()
    })
}

/// A directory only root may write (mode 0755), removed on drop.
struct RootDir(std::path::PathBuf);
impl Drop for RootDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}
fn root_dir(tag: &str) -> RootDir {
    use std::os::unix::fs::PermissionsExt;
    let d = std::env::temp_dir().join(format!("cnet-ffi-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    RootDir(d)
}

fn cpath(p: &std::path::Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

#[test]
fn ipam_codes_as_documented() {
    let dir = std::env::temp_dir().join(format!("cnet-ffi-ipamdoc-{}", std::process::id()));
    let d = cpath(&dir);
    let mut store = null_mut();
    assert_eq!(
        cnet_ipam_store_open_file(d.as_ptr(), &mut store, null_mut()),
        CNET_OK
    );
    // A different config for a network the store knows: CNET_CONFLICT.
    // SAFETY: all-zero is a valid cnet_subnet_config.
    let mut sc: cnet_subnet_config = unsafe { std::mem::zeroed() };
    sc.network = c"10.250.0.0/23".as_ptr();
    let mut leases = null_mut();
    assert_eq!(
        cnet_ipam_store_leases(store, &sc, &mut leases, null_mut()),
        CNET_OK
    );
    sc.subnet_len = 25;
    let (rc, m) = fails(|e| cnet_ipam_store_leases(store, &sc, &mut null_mut(), e));
    assert_eq!(rc, CNET_CONFLICT, "{m}");
    // A /23 holds two /24 (the store may keep some back): nodes lease
    // them until the network is full.
    let mut got = Vec::new();
    let mut names = Vec::new();
    while got.last() != Some(&CNET_EXHAUSTED) && got.len() < 8 {
        let n = CString::new(format!("n{}", got.len() + 1)).unwrap();
        let mut l = null_mut();
        let mut err = null_mut();
        got.push(cnet_leases_acquire(
            leases,
            n.as_ptr(),
            null(),
            60,
            &mut l,
            &mut err,
        ));
        cnet_lease_free(l);
        cnet_error_free(err);
        names.push(n);
    }
    println!("acquire codes in a /23: {got:?}");
    assert!(
        got.len() >= 2 && got[..got.len() - 1].iter().all(|&c| c == CNET_OK),
        "{got:?}"
    );
    assert_eq!(got.last(), Some(&CNET_EXHAUSTED));
    let last = names.last().unwrap();
    let (rc, m) = fails(|e| cnet_leases_renew(leases, last.as_ptr(), 60, null_mut(), e));
    assert_eq!(rc, CNET_NOT_FOUND, "{m}");
    assert_eq!(
        cnet_leases_renew(leases, c"n1".as_ptr(), 60, null_mut(), null_mut()),
        CNET_OK
    );
    // A pool of one address (a /30: .1 the gateway, .2 handed out).
    let pc = cnet_pool_config {
        subnet: c"10.250.9.0/30".as_ptr(),
        range_start: null(),
        range_end: null(),
        gateway: null(),
    };
    let mut pool = null_mut();
    assert_eq!(
        cnet_ipam_store_pool(store, &pc, &mut pool, null_mut()),
        CNET_OK
    );
    let mut a = null_mut();
    assert_eq!(
        cnet_pool_allocate(pool, c"c1".as_ptr(), c"eth0".as_ptr(), &mut a, null_mut()),
        CNET_OK
    );
    cnet_alloc_free(a);
    let (rc, m) =
        fails(|e| cnet_pool_allocate(pool, c"c2".as_ptr(), c"eth0".as_ptr(), &mut null_mut(), e));
    assert_eq!(rc, CNET_EXHAUSTED, "{m}");
    cnet_pool_free(pool);
    cnet_leases_free(leases);
    cnet_ipam_store_free(store);
    std::fs::remove_dir_all(&dir).ok();

    // A directory that cannot be written: CNET_PERMISSION_DENIED.
    if !privileged() {
        eprintln!("SKIPPED (permission denied): needs root (setfsuid)");
        return;
    }
    let ro = root_dir("ipamro");
    let d = cpath(&ro.0.join("store"));
    let (rc, m) = as_nobody(|| {
        let mut err = null_mut();
        let rc = cnet_ipam_store_open_file(d.as_ptr(), &mut null_mut(), &mut err);
        // SAFETY: a live error.
        let m = unsafe { CStr::from_ptr(cnet_error_message(err)) }
            .to_string_lossy()
            .into_owned();
        cnet_error_free(err);
        (rc, m)
    });
    assert_eq!(rc, CNET_PERMISSION_DENIED, "{m}");
}

/// cnet_ipam_store_open_etcd in a build without feature `etcd`.
#[cfg(not(feature = "etcd"))]
#[test]
fn etcd_without_the_feature_is_unsupported() {
    let etcd = [c"http://127.0.0.1:1".as_ptr()];
    let (rc, m) = fails(|e| {
        cnet_ipam_store_open_etcd(etcd.as_ptr(), 1, c"/cnet".as_ptr(), 100, &mut null_mut(), e)
    });
    assert_eq!(rc, CNET_UNSUPPORTED, "{m}");
}

#[test]
fn object_codes_as_documented() {
    if !privileged() {
        return;
    }
    let ns = netns("d");
    let h = ns.2;
    // SAFETY: all-zero is a valid cnet_link_config.
    let mut br: cnet_link_config = unsafe { std::mem::zeroed() };
    br.kind = CNET_LINK_BRIDGE;
    br.name = c"br0".as_ptr();
    br.up = true;
    assert_eq!(cnet_link_add(h, &br, null_mut()), CNET_OK);
    assert_eq!(cnet_link_set_up(h, c"lo".as_ptr(), null_mut()), CNET_OK);

    // Addresses.
    let br0 = c"br0".as_ptr();
    assert_eq!(
        cnet_addr_add(h, br0, c"192.0.2.1/24".as_ptr(), null_mut()),
        CNET_OK
    );
    let (rc, m) = fails(|e| cnet_addr_add(h, br0, c"192.0.2.1/24".as_ptr(), e));
    assert_eq!(rc, CNET_ALREADY_EXISTS, "{m}");
    let (rc, m) = fails(|e| cnet_addr_delete(h, br0, c"192.0.2.9/24".as_ptr(), e));
    assert_eq!(rc, CNET_NOT_FOUND, "{m}");

    // Neighbours and FDB entries.
    let n = cnet_neigh {
        dev: br0,
        ip: c"192.0.2.7".as_ptr(),
        mac: c"02:00:00:00:00:07".as_ptr(),
        state: 0,
        router: false,
    };
    assert_eq!(cnet_neigh_add(h, &n, null_mut()), CNET_OK);
    let (rc, m) = fails(|e| cnet_neigh_add(h, &n, e));
    assert_eq!(rc, CNET_ALREADY_EXISTS, "{m}");
    let gone = cnet_neigh {
        ip: c"192.0.2.8".as_ptr(),
        mac: null(),
        ..n
    };
    let (rc, m) = fails(|e| cnet_neigh_delete(h, &gone, e));
    assert_eq!(rc, CNET_NOT_FOUND, "{m}");
    // SAFETY: all-zero is a valid cnet_fdb.
    let mut f: cnet_fdb = unsafe { std::mem::zeroed() };
    f.mac = c"02:00:00:00:00:09".as_ptr();
    f.dev = br0;
    let (rc, m) = fails(|e| cnet_fdb_delete(h, &f, e));
    assert_eq!(rc, CNET_NOT_FOUND, "{m}");

    // Routes: add twice, delete what is not there, reconcile with one item
    // the kernel refuses (a gateway it cannot reach).
    // SAFETY: all-zero is a valid cnet_route.
    let mut r: cnet_route = unsafe { std::mem::zeroed() };
    r.dst = c"10.9.0.0/24".as_ptr();
    r.dev = br0;
    assert_eq!(cnet_route_add(h, &r, null_mut()), CNET_OK);
    let (rc, m) = fails(|e| cnet_route_add(h, &r, e));
    assert_eq!(rc, CNET_ALREADY_EXISTS, "{m}");
    let gone = cnet_route {
        dst: c"10.9.9.0/24".as_ptr(),
        ..r
    };
    let (rc, m) = fails(|e| cnet_route_delete(h, &gone, e));
    assert_eq!(rc, CNET_NOT_FOUND, "{m}");
    // SAFETY: all-zero is a valid cnet_route.
    let mut want: [cnet_route; 2] = unsafe { std::mem::zeroed() };
    want[0].dst = c"10.7.0.0/24".as_ptr();
    want[0].dev = br0;
    want[1].dst = c"10.7.1.0/24".as_ptr();
    want[1].via = c"203.0.113.9".as_ptr();
    let mut counts = cnet_reconcile_counts {
        added: 99,
        ..Default::default()
    };
    let (rc, m) =
        fails(|e| cnet_route_reconcile(h, 0, 0, null(), want.as_ptr(), 2, &mut counts, e));
    assert_eq!(rc, CNET_PARTIAL, "{m}");
    assert!(m.contains("10.7.1.0/24"), "{m}");
    assert_eq!(counts.added, 99, "counts are written on success only");
    let mut res = std::mem::MaybeUninit::<cnet_route_lookup_result>::uninit();
    assert_eq!(
        cnet_route_lookup(
            h,
            c"10.7.0.1".as_ptr(),
            null(),
            res.as_mut_ptr(),
            null_mut()
        ),
        CNET_OK,
        "the other item was applied"
    );

    // Rules and nexthops: identical twice.
    // SAFETY: all-zero is a valid cnet_rule.
    let mut rule: cnet_rule = unsafe { std::mem::zeroed() };
    rule.priority = 100;
    rule.table = 100;
    assert_eq!(cnet_rule_add(h, &rule, null_mut()), CNET_OK);
    let (rc, m) = fails(|e| cnet_rule_add(h, &rule, e));
    assert_eq!(rc, CNET_ALREADY_EXISTS, "{m}");
    // SAFETY: all-zero is a valid cnet_nexthop.
    let mut nh: cnet_nexthop = unsafe { std::mem::zeroed() };
    nh.id = 3;
    nh.kind = CNET_NEXTHOP_BLACKHOLE;
    assert_eq!(cnet_nexthop_add(h, &nh, null_mut()), CNET_OK);
    let (rc, m) = fails(|e| cnet_nexthop_add(h, &nh, e));
    assert_eq!(rc, CNET_ALREADY_EXISTS, "{m}");

    // A broken path is CNET_OK with verdict.ok false.
    let mut json = null_mut();
    assert_eq!(
        cnet_trace(
            ns.1,
            c"10.77.0.1".as_ptr(),
            null(),
            false,
            0,
            &mut json,
            null_mut()
        ),
        CNET_OK
    );
    // SAFETY: a string made by libcnet.
    let j = unsafe { CStr::from_ptr(json) }
        .to_string_lossy()
        .into_owned();
    cnet::cnet_string_free(json);
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["verdict"]["ok"], false, "{j}");
}

#[test]
fn node_codes_as_documented() {
    if !privileged() {
        return;
    }
    let ns = netns("o");
    // A configuration the node refuses: CNET_INVALID_ARGUMENT.
    // SAFETY: all-zero is a valid cnet_node_config.
    let mut nc: cnet_node_config = unsafe { std::mem::zeroed() };
    nc.name = c"".as_ptr();
    nc.subnet = c"10.244.1.0/24".as_ptr();
    nc.underlay_dev = c"br0".as_ptr();
    nc.underlay_ip = c"192.0.2.1".as_ptr();
    let (rc, m) = fails(|e| cnet_node_new(ns.2, &nc, &mut null_mut(), e));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{m}");
    nc.name = c"me".as_ptr();
    nc.subnet = c"10.244.1.1/24".as_ptr();
    let (rc, m) = fails(|e| cnet_node_new(ns.2, &nc, &mut null_mut(), e));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{m}");
    assert!(m.contains("host bits"), "{m}");
    let node = node_in(&ns);

    // The WireGuard key file: a directory is CNET_IO, a file the caller
    // may not make is CNET_PERMISSION_DENIED, a short buffer as documented.
    let ro = root_dir("wgro");
    // SAFETY: all-zero is a valid cnet_backend.
    let mut wg: cnet_backend = unsafe { std::mem::zeroed() };
    wg.kind = CNET_BACKEND_WIREGUARD;
    let dirpath = cpath(&ro.0);
    wg.key_file = dirpath.as_ptr();
    let mut buf = [0 as c_char; 64];
    let (rc, m) = fails(|e| cnet_node_wireguard_public_key(node, &wg, buf.as_mut_ptr(), 64, e));
    assert_eq!(rc, CNET_IO, "{m}");
    let keyfile = cpath(&ro.0.join("wg.key"));
    wg.key_file = keyfile.as_ptr();
    // Raw pointers are not Send: the node crosses as an address (it may
    // be shared between threads), the backend is made on the thread.
    let node_addr = node as usize;
    let (rc, m) = as_nobody(|| {
        let mut buf = [0 as c_char; 64];
        let mut err = null_mut();
        let node = node_addr as *const cnet_node;
        // SAFETY: all-zero is a valid cnet_backend.
        let mut wg: cnet_backend = unsafe { std::mem::zeroed() };
        wg.kind = CNET_BACKEND_WIREGUARD;
        wg.key_file = keyfile.as_ptr();
        let rc = cnet_node_wireguard_public_key(node, &wg, buf.as_mut_ptr(), 64, &mut err);
        // SAFETY: a live error.
        let m = unsafe { CStr::from_ptr(cnet_error_message(err)) }
            .to_string_lossy()
            .into_owned();
        cnet_error_free(err);
        (rc, m)
    });
    assert_eq!(rc, CNET_PERMISSION_DENIED, "{m}");
    let (rc, m) = fails(|e| cnet_node_wireguard_public_key(node, &wg, buf.as_mut_ptr(), 44, e));
    assert_eq!(rc, CNET_BUFFER_TOO_SHORT, "{m}");
    cnet_node_free(node);
}
