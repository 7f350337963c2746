//! IPAM: a store (file; etcd when built with feature `etcd`), node subnet
//! leases from a cluster network (`cnet_leases`) and container addresses
//! from a node subnet (`cnet_pool`).
//!
//! ```text
//!  cnet_ipam_store ──leases(10.244.0.0/16)──▶ cnet_leases: acquire / renew / release / list
//!                  └─pool(10.244.1.0/24)────▶ cnet_pool:   allocate / release / list / gc
//! ```

use std::collections::HashSet;
use std::ffi::c_char;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use cnet_core::ipam::{
    Allocation, FileStore, IpRange, LeaseEvent, LeaseStore, LeaseWatch, NodeAttrs, NodeLease,
    PoolConfig, PoolStore, SubnetConfig,
};
use cnet_core::link::MacAddr;
use cnet_core::network::WIREGUARD_KEY_ATTR;
use cnet_core::wireguard::PublicKey;
use cnet_core::{Error, IpNet};

use crate::boundary::{
    cnet_error, cnet_result, cstr, fill, guard, lock, obj, opt_nonempty, out_ptr, parse, parse_opt,
    set_if_asked, slice, Res,
};
use crate::link::CNET_ADDRSTRLEN;
use crate::out::{boxed, castable, free_box, list_head, list_out, one_out, Strings};

enum Store {
    File(FileStore),
    #[cfg(feature = "etcd")]
    Etcd(cnet_core::ipam::EtcdStore),
}

/// An IPAM store. May be shared between threads; the lease and pool
/// objects made from it are independent of it.
pub struct cnet_ipam_store {
    store: Store,
}
castable!(box cnet_ipam_store);

impl std::fmt::Debug for cnet_ipam_store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cnet_ipam_store")
    }
}

/// Node subnet leases over one cluster network. May be shared between
/// threads (calls are serialised); several processes may use the same
/// store at once.
pub struct cnet_leases {
    inner: Mutex<Box<dyn LeaseStore + Send>>,
}
castable!(box cnet_leases);

/// Container addresses of one node subnet. May be shared between threads
/// (calls are serialised); several processes may use the same store. A
/// bridge network made from it (`cnet_bridge_network_ensure`) shares it:
/// either may be freed first.
pub struct cnet_pool {
    inner: Arc<Mutex<Box<dyn PoolStore + Send>>>,
    config: PoolConfig,
}
castable!(box cnet_pool);

impl cnet_pool {
    /// A pool object over any store (tests give one that fails or panics).
    #[doc(hidden)]
    pub fn from_store(store: Box<dyn PoolStore + Send>) -> cnet_pool {
        cnet_pool {
            config: store.config().clone(),
            inner: Arc::new(Mutex::new(store)),
        }
    }

    /// Another owner of the same pool, for a bridge network.
    pub(crate) fn share(&self) -> SharedPool {
        SharedPool {
            config: self.config.clone(),
            inner: Arc::clone(&self.inner),
        }
    }
}

/// A pool shared between a `cnet_pool` and the bridge networks made from
/// it: `BridgeNetwork::ensure` takes its pool by value, and the C caller
/// keeps its `cnet_pool` (to list or gc) and may free the two in any
/// order. Each call locks the pool's mutex, as `cnet_pool_*` calls do.
pub(crate) struct SharedPool {
    config: PoolConfig,
    inner: Arc<Mutex<Box<dyn PoolStore + Send>>>,
}

impl SharedPool {
    /// The pool; a lock poisoned by a panic is taken back (see
    /// [`crate::boundary`]: one policy for every lock).
    fn lock(&self) -> MutexGuard<'_, Box<dyn PoolStore + Send>> {
        lock(&self.inner)
    }
}

impl PoolStore for SharedPool {
    fn config(&self) -> &PoolConfig {
        &self.config
    }
    fn allocate(&mut self, container_id: &str, ifname: &str) -> cnet_core::Result<Allocation> {
        self.lock().allocate(container_id, ifname)
    }
    fn allocate_tracked(
        &mut self,
        container_id: &str,
        ifname: &str,
    ) -> cnet_core::Result<(Allocation, bool)> {
        self.lock().allocate_tracked(container_id, ifname)
    }
    fn allocate_addr(
        &mut self,
        container_id: &str,
        ifname: &str,
        addr: IpAddr,
    ) -> cnet_core::Result<Allocation> {
        self.lock().allocate_addr(container_id, ifname, addr)
    }
    fn release(
        &mut self,
        container_id: &str,
        ifname: &str,
    ) -> cnet_core::Result<Option<Allocation>> {
        self.lock().release(container_id, ifname)
    }
    fn release_generation(
        &mut self,
        addr: IpAddr,
        generation: u64,
    ) -> cnet_core::Result<Option<Allocation>> {
        self.lock().release_generation(addr, generation)
    }
    fn list(&mut self) -> cnet_core::Result<Vec<Allocation>> {
        self.lock().list()
    }
    fn gc(&mut self, alive: &HashSet<String>) -> cnet_core::Result<Vec<Allocation>> {
        self.lock().gc(alive)
    }
}

impl std::fmt::Debug for cnet_leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cnet_leases")
    }
}

impl std::fmt::Debug for cnet_pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cnet_pool")
    }
}

/// The cluster network to lease node subnets from.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_subnet_config {
    /// The cluster network ("10.244.0.0/16").
    pub network: *const c_char,
    /// Prefix length of each node subnet (0: 24 for IPv4, 64 for IPv6).
    pub subnet_len: u8,
}

/// What a node publishes with its lease; NULL fields are not published.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_node_attrs {
    /// The node's underlay address.
    pub underlay_ip: *const c_char,
    /// Backend name ("host-gw", "vxlan", …).
    pub backend: *const c_char,
    /// The node's VTEP MAC ("aa:bb:cc:dd:ee:ff").
    pub vtep_mac: *const c_char,
    /// The node's WireGuard public key in base64
    /// (`cnet_node_wireguard_public_key`), published under the lease
    /// attribute "wireguard-public-key".
    pub wireguard_public_key: *const c_char,
    /// The node's network interface in a VPC ("eni-…"), published under
    /// the lease attribute "aws-eni": the target of its routes in the
    /// aws-vpc backend (`cnet_aws_vpc_reconcile`).
    pub aws_eni: *const c_char,
}

/// The lease attribute of a node's VPC network interface (the aws-vpc
/// backend's `AWS_ENI_ATTR`).
const AWS_ENI_ATTR: &str = "aws-eni";

/// A node's subnet lease.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_lease {
    /// Node name (owned by the lease or list).
    pub node: *const c_char,
    /// The node's subnet ("10.244.1.0/24").
    pub subnet: [c_char; CNET_ADDRSTRLEN],
    /// Published underlay address, or "".
    pub underlay_ip: [c_char; CNET_ADDRSTRLEN],
    /// Published backend name, or NULL.
    pub backend: *const c_char,
    /// Published VTEP MAC (valid when `has_vtep_mac`).
    pub vtep_mac: [u8; 6],
    /// A VTEP MAC was published.
    pub has_vtep_mac: bool,
    /// Expiry in seconds since the Unix epoch; 0 for a reservation.
    pub expires_unix: i64,
    /// Published WireGuard public key (base64), or NULL.
    pub wireguard_public_key: *const c_char,
}
castable!(one cnet_lease);

/// An owned array of leases; free with `cnet_lease_array_free`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_lease_array {
    /// The leases.
    pub items: *const cnet_lease,
    /// How many.
    pub len: usize,
}
list_head!(cnet_lease_array, cnet_lease);

/// The node subnet to hand container addresses from.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_pool_config {
    /// The subnet ("10.244.1.0/24").
    pub subnet: *const c_char,
    /// First address to hand out, or NULL (then the whole subnet).
    pub range_start: *const c_char,
    /// Last address to hand out (with `range_start`).
    pub range_end: *const c_char,
    /// Gateway (never handed out), or NULL for the subnet's first address.
    pub gateway: *const c_char,
}

/// One container address.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_alloc {
    /// The address ("10.244.1.2").
    pub addr: [c_char; CNET_ADDRSTRLEN],
    /// With the pool's prefix ("10.244.1.2/24"), as `cnet_addr_add` takes it.
    pub cidr: [c_char; CNET_ADDRSTRLEN],
    /// The container holding it (owned by the allocation or list).
    pub container_id: *const c_char,
    /// Its interface (owned by the allocation or list).
    pub ifname: *const c_char,
    /// Unique within the pool, never reused.
    pub generation: u64,
}
castable!(one cnet_alloc);

/// An owned array of allocations; free with `cnet_alloc_array_free`.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_alloc_array {
    /// The allocations.
    pub items: *const cnet_alloc,
    /// How many.
    pub len: usize,
}
list_head!(cnet_alloc_array, cnet_alloc);

fn lease_of(l: &NodeLease, s: &mut Strings) -> Res<cnet_lease> {
    let mut c = cnet_lease {
        node: s.add(&l.node),
        subnet: [0; CNET_ADDRSTRLEN],
        underlay_ip: [0; CNET_ADDRSTRLEN],
        backend: l
            .attrs
            .backend
            .as_deref()
            .map_or(std::ptr::null(), |b| s.add(b)),
        vtep_mac: l.attrs.vtep_mac.map_or([0; 6], |m| m.0),
        has_vtep_mac: l.attrs.vtep_mac.is_some(),
        expires_unix: l.expires.map_or(0, |t| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        }),
        wireguard_public_key: l
            .attrs
            .extra
            .get(WIREGUARD_KEY_ATTR)
            .map_or(std::ptr::null(), |k| s.add(k)),
    };
    fill(&mut c.subnet, &l.subnet.to_string())?;
    if let Some(u) = l.attrs.underlay_ip {
        fill(&mut c.underlay_ip, &u.to_string())?;
    }
    Ok(c)
}

fn alloc_of(a: &Allocation, s: &mut Strings) -> Res<cnet_alloc> {
    let mut c = cnet_alloc {
        addr: [0; CNET_ADDRSTRLEN],
        cidr: [0; CNET_ADDRSTRLEN],
        container_id: s.add(&a.container_id),
        ifname: s.add(&a.ifname),
        generation: a.generation,
    };
    fill(&mut c.addr, &a.addr.to_string())?;
    fill(&mut c.cidr, &a.cidr().to_string())?;
    Ok(c)
}

/// Open (creating if needed) a file store in directory `dir`: safe between
/// processes and against crashes. `CNET_PERMISSION_DENIED` if the
/// directory cannot be written.
#[no_mangle]
pub extern "C" fn cnet_ipam_store_open_file(
    dir: *const c_char,
    out: *mut *mut cnet_ipam_store,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let dir = cstr(dir, "dir")?;
        let out = out_ptr(out, "out")?;
        boxed(
            out,
            cnet_ipam_store {
                store: Store::File(FileStore::open(dir)?),
            },
        );
        Ok(())
    })
}

/// Connect to an etcd v3 cluster (`endpoints`: `len` URLs such as
/// "http://127.0.0.1:2379", members of one cluster: requests fail over
/// between them), keys under `prefix`, every request bounded by
/// `timeout_ms`. `CNET_UNSUPPORTED` when libcnet was built without feature
/// `etcd`. For TLS and user/password auth see
/// `cnet_ipam_store_open_etcd_with`.
#[no_mangle]
pub extern "C" fn cnet_ipam_store_open_etcd(
    endpoints: *const *const c_char,
    len: usize,
    prefix: *const c_char,
    timeout_ms: u64,
    out: *mut *mut cnet_ipam_store,
    err: *mut *mut cnet_error,
) -> cnet_result {
    cnet_ipam_store_open_etcd_with(
        endpoints,
        len,
        prefix,
        timeout_ms,
        std::ptr::null(),
        out,
        err,
    )
}

/// TLS files and etcd user of `cnet_ipam_store_open_etcd_with`, like
/// Flannel's `--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`,
/// `--etcd-username`, `--etcd-password`. Every field may be NULL (or ""):
/// not set. The strings are read during the call only.
#[repr(C)]
#[derive(Debug)]
pub struct cnet_etcd_options {
    /// PEM file of the CA that signed the etcd servers' certificates
    /// (NULL: the webpki roots, for `https://` endpoints).
    pub ca_file: *const c_char,
    /// PEM client certificate, for etcd's `--client-cert-auth` (with
    /// `key_file`).
    pub cert_file: *const c_char,
    /// PEM private key of `cert_file`.
    pub key_file: *const c_char,
    /// etcd user (with `password`; NULL: no auth).
    pub username: *const c_char,
    /// The user's password. Never shown in an error.
    pub password: *const c_char,
}

/// `cnet_ipam_store_open_etcd` with TLS and auth `options` (NULL: none).
/// A server certificate the CA did not sign, a client certificate etcd
/// refuses and a wrong password are `CNET_PERMISSION_DENIED`, the error
/// message saying which (never the password); unreadable or non-PEM files
/// are `CNET_INVALID_ARGUMENT` (or the I/O error).
#[no_mangle]
pub extern "C" fn cnet_ipam_store_open_etcd_with(
    endpoints: *const *const c_char,
    len: usize,
    prefix: *const c_char,
    timeout_ms: u64,
    options: *const cnet_etcd_options,
    out: *mut *mut cnet_ipam_store,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let eps = slice(endpoints, len, "endpoints")?
            .iter()
            .enumerate()
            .map(|(i, p)| cstr(*p, &format!("endpoints[{i}]")))
            .collect::<Res<Vec<&str>>>()?;
        let prefix = cstr(prefix, "prefix")?;
        let opts = if options.is_null() {
            None
        } else {
            Some(obj(options, "options")?)
        };
        let field = |p: Option<*const c_char>, what: &str| match p {
            Some(p) => opt_nonempty(p, what),
            None => Ok(None),
        };
        let ca = field(opts.map(|o| o.ca_file), "options.ca_file")?;
        let cert = field(opts.map(|o| o.cert_file), "options.cert_file")?;
        let key = field(opts.map(|o| o.key_file), "options.key_file")?;
        let user = field(opts.map(|o| o.username), "options.username")?;
        let password = field(opts.map(|o| o.password), "options.password")?;
        let out = out_ptr(out, "out")?;
        #[cfg(feature = "etcd")]
        {
            use cnet_core::ipam::{EtcdConfig, EtcdTls};
            let mut config =
                EtcdConfig::new(&eps, prefix).timeout(Duration::from_millis(timeout_ms));
            if ca.is_some() || cert.is_some() || key.is_some() {
                let mut t = EtcdTls::new();
                t.ca_file = ca.map(Into::into);
                t.cert_file = cert.map(Into::into);
                t.key_file = key.map(Into::into);
                config = config.tls(t);
            }
            match (user, password) {
                (Some(u), p) => config = config.auth(u, p.unwrap_or("")),
                (None, Some(_)) => {
                    return Err(Error::invalid(
                        "open etcd IPAM store",
                        "options.password without options.username",
                    )
                    .into())
                }
                (None, None) => {}
            }
            let s = cnet_core::ipam::EtcdStore::open(config)?;
            boxed(
                out,
                cnet_ipam_store {
                    store: Store::Etcd(s),
                },
            );
            Ok(())
        }
        #[cfg(not(feature = "etcd"))]
        {
            let _ = (eps, prefix, timeout_ms, out, ca, cert, key, user, password);
            Err(Error::Unsupported {
                context: "open etcd IPAM store".into(),
                kernel: None,
            }
            .with_context("libcnet was built without feature etcd")
            .into())
        }
    })
}

/// Free a store. `cnet_ipam_store_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_ipam_store_free(s: *mut cnet_ipam_store) {
    free_box(s)
}

/// The node subnet leases of the cluster network `config` (made known to
/// the store on first use; a different config for the same network is
/// `CNET_CONFLICT`).
#[no_mangle]
pub extern "C" fn cnet_ipam_store_leases(
    store: *const cnet_ipam_store,
    config: *const cnet_subnet_config,
    out: *mut *mut cnet_leases,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let s = obj(store, "store")?;
        let c = obj(config, "config")?;
        let net: IpNet = parse(cstr(c.network, "config.network")?, "config.network")?;
        let mut sc = SubnetConfig::new(net);
        if c.subnet_len != 0 {
            sc = sc.with_subnet_len(c.subnet_len);
        }
        let out = out_ptr(out, "out")?;
        let inner: Box<dyn LeaseStore + Send> = match &s.store {
            Store::File(f) => Box::new(f.subnets(sc)?),
            #[cfg(feature = "etcd")]
            Store::Etcd(e) => Box::new(e.subnets(sc)?),
        };
        boxed(
            out,
            cnet_leases {
                inner: Mutex::new(inner),
            },
        );
        Ok(())
    })
}

/// Container addresses of the node subnet `config`.
#[no_mangle]
pub extern "C" fn cnet_ipam_store_pool(
    store: *const cnet_ipam_store,
    config: *const cnet_pool_config,
    out: *mut *mut cnet_pool,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let s = obj(store, "store")?;
        let c = obj(config, "config")?;
        let net: IpNet = parse(cstr(c.subnet, "config.subnet")?, "config.subnet")?;
        let mut pc = PoolConfig::new(net);
        let start = parse_opt::<IpAddr>(c.range_start, "config.range_start")?;
        let end = parse_opt::<IpAddr>(c.range_end, "config.range_end")?;
        match (start, end) {
            (Some(a), Some(b)) => pc = pc.with_range(IpRange::new(a, b)),
            (None, None) => {}
            _ => {
                return Err(
                    Error::invalid("pool config", "range_start and range_end go together").into(),
                )
            }
        }
        if let Some(g) = parse_opt::<IpAddr>(c.gateway, "config.gateway")? {
            pc = pc.with_gateway(Some(g));
        }
        let out = out_ptr(out, "out")?;
        let inner: Box<dyn PoolStore + Send> = match &s.store {
            Store::File(f) => Box::new(f.pool(pc)?),
            #[cfg(feature = "etcd")]
            Store::Etcd(e) => Box::new(e.pool(pc)?),
        };
        boxed(out, cnet_pool::from_store(inner));
        Ok(())
    })
}

fn attrs_of(a: *const cnet_node_attrs) -> Res<NodeAttrs> {
    let mut n = NodeAttrs::default();
    if a.is_null() {
        return Ok(n);
    }
    let a = obj(a, "attrs")?;
    n.underlay_ip = parse_opt(a.underlay_ip, "attrs.underlay_ip")?;
    n.backend = opt_nonempty(a.backend, "attrs.backend")?.map(str::to_string);
    n.vtep_mac = parse_opt::<MacAddr>(a.vtep_mac, "attrs.vtep_mac")?;
    if let Some(k) = parse_opt::<PublicKey>(a.wireguard_public_key, "attrs.wireguard_public_key")? {
        n.extra
            .insert(WIREGUARD_KEY_ATTR.to_string(), k.to_base64());
    }
    if let Some(eni) = opt_nonempty(a.aws_eni, "attrs.aws_eni")? {
        n.extra.insert(AWS_ENI_ATTR.to_string(), eni.to_string());
    }
    Ok(n)
}

fn ttl(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// Lease a subnet to `node` for `ttl_secs` (the same one again if it
/// holds one), publishing `attrs` (may be NULL). `CNET_EXHAUSTED` when the
/// network is full. Free `*out` with `cnet_lease_free`.
#[no_mangle]
pub extern "C" fn cnet_leases_acquire(
    leases: *const cnet_leases,
    node: *const c_char,
    attrs: *const cnet_node_attrs,
    ttl_secs: u64,
    out: *mut *mut cnet_lease,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let l = obj(leases, "leases")?;
        let node = cstr(node, "node")?;
        let attrs = attrs_of(attrs)?;
        let out = out_ptr(out, "out")?;
        let lease = lock(&l.inner).acquire(node, &attrs, ttl(ttl_secs))?;
        let mut s = Strings::default();
        let c = lease_of(&lease, &mut s)?;
        one_out(out, c, s.0);
        Ok(())
    })
}

/// Extend `node`'s lease by `ttl_secs` from now; `CNET_NOT_FOUND` if it
/// holds none. `out` may be NULL.
#[no_mangle]
pub extern "C" fn cnet_leases_renew(
    leases: *const cnet_leases,
    node: *const c_char,
    ttl_secs: u64,
    out: *mut *mut cnet_lease,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let l = obj(leases, "leases")?;
        let node = cstr(node, "node")?;
        let lease = lock(&l.inner).renew(node, ttl(ttl_secs))?;
        if !out.is_null() {
            let mut s = Strings::default();
            let c = lease_of(&lease, &mut s)?;
            one_out(out_ptr(out, "out")?, c, s.0);
        }
        Ok(())
    })
}

/// Give back `node`'s lease (succeeds when it holds none).
#[no_mangle]
pub extern "C" fn cnet_leases_release(
    leases: *const cnet_leases,
    node: *const c_char,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let l = obj(leases, "leases")?;
        lock(&l.inner).release(cstr(node, "node")?)?;
        Ok(())
    })
}

/// Every live lease and reservation.
#[no_mangle]
pub extern "C" fn cnet_leases_list(
    leases: *const cnet_leases,
    out: *mut *mut cnet_lease_array,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let l = obj(leases, "leases")?;
        let out = out_ptr(out, "out")?;
        let all = lock(&l.inner).list()?;
        let mut s = Strings::default();
        let items = all
            .iter()
            .map(|x| lease_of(x, &mut s))
            .collect::<Res<Vec<_>>>()?;
        list_out(out, items, s.0);
        Ok(())
    })
}

/// A watch of the leases: their changes one by one
/// (`cnet_lease_watch_next`), with a descriptor to `poll(2)` beside the
/// caller's others.
#[derive(Debug)]
pub struct cnet_lease_watch {
    inner: Mutex<Box<dyn LeaseWatch>>,
}
castable!(box cnet_lease_watch);

/// What a lease watch event is (`cnet_lease_event.kind`).
pub type cnet_lease_event_kind = u32;
/// No event came within the timeout.
pub const CNET_LEASE_EVENT_NONE: cnet_lease_event_kind = 0;
/// Every lease (`leases`), replacing what the caller knew: the first event,
/// and again when the watch lost track.
pub const CNET_LEASE_EVENT_ALL: cnet_lease_event_kind = 1;
/// A lease was taken or changed (`leases`, one item).
pub const CNET_LEASE_EVENT_PUT: cnet_lease_event_kind = 2;
/// The lease of `subnet` ended (released or expired).
pub const CNET_LEASE_EVENT_GONE: cnet_lease_event_kind = 3;

/// One event of a lease watch; the caller owns `leases` (free it with
/// `cnet_lease_array_free`; NULL for NONE and GONE).
#[repr(C)]
#[derive(Debug)]
pub struct cnet_lease_event {
    /// `CNET_LEASE_EVENT_*`.
    pub kind: cnet_lease_event_kind,
    /// ALL: every lease; PUT: the lease; NULL otherwise.
    pub leases: *mut cnet_lease_array,
    /// GONE: the subnet whose lease ended; "" otherwise.
    pub subnet: [c_char; CNET_ADDRSTRLEN],
}

/// Watch the leases. The first event of `cnet_lease_watch_next` is
/// `CNET_LEASE_EVENT_ALL` (the set the watch started from); then each
/// lease taken, changed or ended is one event (a renewal is none: etcd
/// renews with a lease keep-alive, which writes nothing). Free with
/// `cnet_lease_watch_free`.
#[no_mangle]
pub extern "C" fn cnet_leases_watch(
    leases: *const cnet_leases,
    out: *mut *mut cnet_lease_watch,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let l = obj(leases, "leases")?;
        let out = out_ptr(out, "out")?;
        let inner = lock(&l.inner).watch()?;
        boxed(
            out,
            cnet_lease_watch {
                inner: Mutex::new(inner),
            },
        );
        Ok(())
    })
}

/// The watch's descriptor: readable when an event may wait. After `poll`
/// says so, call `cnet_lease_watch_next` with timeout 0 until it gives
/// `CNET_LEASE_EVENT_NONE`. -1 for NULL. The file store's expiries change
/// no file: with it, also call at least once a second.
#[no_mangle]
pub extern "C" fn cnet_lease_watch_fd(watch: *const cnet_lease_watch) -> i32 {
    crate::boundary::guard_value(-1, || {
        let Ok(w) = obj(watch, "watch") else {
            return -1;
        };
        std::os::fd::AsRawFd::as_raw_fd(&lock(&w.inner).as_fd())
    })
}

/// The next change of the leases into `*event`, waiting at most
/// `timeout_ms` (0: only what waits); `event->kind` is
/// `CNET_LEASE_EVENT_NONE` when none came. `*event` is written on success
/// only.
#[no_mangle]
pub extern "C" fn cnet_lease_watch_next(
    watch: *const cnet_lease_watch,
    timeout_ms: u32,
    event: *mut cnet_lease_event,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let w = obj(watch, "watch")?;
        let out = out_ptr(event, "event")?;
        let ev = lock(&w.inner).next(Duration::from_millis(u64::from(timeout_ms)))?;
        let mut c = cnet_lease_event {
            kind: CNET_LEASE_EVENT_NONE,
            leases: std::ptr::null_mut(),
            subnet: [0; CNET_ADDRSTRLEN],
        };
        let list = |ls: &[NodeLease], c: &mut cnet_lease_event| -> Res {
            let mut s = Strings::default();
            let items = ls
                .iter()
                .map(|x| lease_of(x, &mut s))
                .collect::<Res<Vec<_>>>()?;
            list_out(out_ptr(&mut c.leases, "leases")?, items, s.0);
            Ok(())
        };
        match ev {
            None => {}
            Some(LeaseEvent::All(all)) => {
                c.kind = CNET_LEASE_EVENT_ALL;
                list(&all, &mut c)?;
            }
            Some(LeaseEvent::Put(l)) => {
                c.kind = CNET_LEASE_EVENT_PUT;
                list(std::slice::from_ref(&l), &mut c)?;
            }
            Some(LeaseEvent::Gone(net)) => {
                c.kind = CNET_LEASE_EVENT_GONE;
                fill(&mut c.subnet, &net.to_string())?;
            }
            Some(other) => {
                return Err(Error::Protocol {
                    context: "lease watch".into(),
                    reason: format!("an event this libcnet does not know: {other:?}"),
                }
                .into())
            }
        }
        out.set(c);
        Ok(())
    })
}

/// Free a lease watch. `cnet_lease_watch_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_lease_watch_free(w: *mut cnet_lease_watch) {
    free_box(w)
}

/// The lease a C caller gives (`cnet_node_put_lease`), as cnet-core has it.
pub(crate) fn node_lease_of(c: &cnet_lease) -> Res<NodeLease> {
    let arr = |a: &[c_char; CNET_ADDRSTRLEN], what: &str| -> Res<String> {
        // SAFETY: c_char and u8 have the same size and alignment.
        let b: &[u8; CNET_ADDRSTRLEN] = unsafe { &*(a as *const [c_char; CNET_ADDRSTRLEN]).cast() };
        std::ffi::CStr::from_bytes_until_nul(b)
            .map(|s| s.to_string_lossy().into_owned())
            .map_err(|_| Error::invalid(what.to_string(), "not NUL-terminated").into())
    };
    let subnet = arr(&c.subnet, "lease.subnet")?;
    let underlay = arr(&c.underlay_ip, "lease.underlay_ip")?;
    let mut attrs = NodeAttrs {
        underlay_ip: if underlay.is_empty() {
            None
        } else {
            Some(parse(&underlay, "lease.underlay_ip")?)
        },
        backend: opt_nonempty(c.backend, "lease.backend")?.map(str::to_string),
        vtep_mac: c.has_vtep_mac.then_some(MacAddr(c.vtep_mac)),
        ..Default::default()
    };
    if let Some(k) = parse_opt::<PublicKey>(c.wireguard_public_key, "lease.wireguard_public_key")? {
        attrs
            .extra
            .insert(WIREGUARD_KEY_ATTR.to_string(), k.to_base64());
    }
    Ok(NodeLease {
        node: cstr(c.node, "lease.node")?.to_string(),
        subnet: parse(&subnet, "lease.subnet")?,
        attrs,
        expires: (c.expires_unix > 0)
            .then(|| UNIX_EPOCH + Duration::from_secs(c.expires_unix.unsigned_abs())),
    })
}

/// The leases as cnet-core has them (for `cnet_node_reconcile_leases`).
pub(crate) fn list_leases(l: &cnet_leases) -> Res<Vec<NodeLease>> {
    Ok(lock(&l.inner).list()?)
}

/// Free a lease object. `cnet_leases_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_leases_free(l: *mut cnet_leases) {
    free_box(l)
}

/// Free one lease. `cnet_lease_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_lease_free(l: *mut cnet_lease) {
    free_box(l)
}

/// Free a lease list. `cnet_lease_array_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_lease_array_free(l: *mut cnet_lease_array) {
    free_box(l)
}

/// An address for (`container_id`, `ifname`): the one it holds already,
/// or a free one. `CNET_EXHAUSTED` when the pool is full. Free `*out`
/// with `cnet_alloc_free`.
#[no_mangle]
pub extern "C" fn cnet_pool_allocate(
    pool: *const cnet_pool,
    container_id: *const c_char,
    ifname: *const c_char,
    out: *mut *mut cnet_alloc,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let p = obj(pool, "pool")?;
        let cid = cstr(container_id, "container_id")?;
        let ifname = cstr(ifname, "ifname")?;
        let out = out_ptr(out, "out")?;
        let a = lock(&*p.inner).allocate(cid, ifname)?;
        let mut s = Strings::default();
        let c = alloc_of(&a, &mut s)?;
        one_out(out, c, s.0);
        Ok(())
    })
}

/// Release the address of (`container_id`, `ifname`); succeeds when it
/// holds none. `*released` (may be NULL) says whether one was freed.
#[no_mangle]
pub extern "C" fn cnet_pool_release(
    pool: *const cnet_pool,
    container_id: *const c_char,
    ifname: *const c_char,
    released: *mut bool,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let p = obj(pool, "pool")?;
        let cid = cstr(container_id, "container_id")?;
        let ifname = cstr(ifname, "ifname")?;
        let r = lock(&*p.inner).release(cid, ifname)?;
        set_if_asked(released, || r.is_some());
        Ok(())
    })
}

/// Every allocation of the pool.
#[no_mangle]
pub extern "C" fn cnet_pool_list(
    pool: *const cnet_pool,
    out: *mut *mut cnet_alloc_array,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let p = obj(pool, "pool")?;
        let out = out_ptr(out, "out")?;
        let all = lock(&*p.inner).list()?;
        let mut s = Strings::default();
        let items = all
            .iter()
            .map(|a| alloc_of(a, &mut s))
            .collect::<Res<Vec<_>>>()?;
        list_out(out, items, s.0);
        Ok(())
    })
}

/// Release every allocation whose container is not among the `len` ids of
/// `alive`; `released` (may be NULL) receives what was freed.
#[no_mangle]
pub extern "C" fn cnet_pool_gc(
    pool: *const cnet_pool,
    alive: *const *const c_char,
    len: usize,
    released: *mut *mut cnet_alloc_array,
    err: *mut *mut cnet_error,
) -> cnet_result {
    guard(err, || {
        let p = obj(pool, "pool")?;
        let alive = slice(alive, len, "alive")?
            .iter()
            .enumerate()
            .map(|(i, s)| cstr(*s, &format!("alive[{i}]")).map(str::to_string))
            .collect::<Res<HashSet<String>>>()?;
        let gone = lock(&*p.inner).gc(&alive)?;
        if !released.is_null() {
            let mut s = Strings::default();
            let items = gone
                .iter()
                .map(|a| alloc_of(a, &mut s))
                .collect::<Res<Vec<_>>>()?;
            list_out(out_ptr(released, "released")?, items, s.0);
        }
        Ok(())
    })
}

/// Free a pool object. `cnet_pool_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_pool_free(p: *mut cnet_pool) {
    free_box(p)
}

/// Free one allocation. `cnet_alloc_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_alloc_free(a: *mut cnet_alloc) {
    free_box(a)
}

/// Free an allocation list. `cnet_alloc_array_free(NULL)` does nothing.
#[no_mangle]
pub extern "C" fn cnet_alloc_array_free(l: *mut cnet_alloc_array) {
    free_box(l)
}

#[cfg(all(test, feature = "aws"))]
mod aws_attr_tests {
    #[test]
    fn the_eni_attribute_is_the_backends() {
        assert_eq!(
            super::AWS_ENI_ATTR,
            cnet_core::network::node::aws_vpc::AWS_ENI_ATTR
        );
    }
}
