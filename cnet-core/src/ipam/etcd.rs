//! The etcd store (cargo feature `etcd`): the same [`LeaseStore`] and
//! [`PoolStore`] against an etcd v3 cluster, so many hosts allocate at once
//! with no duplicates.
//!
//! It speaks etcd's v3 JSON gateway (`/v3/kv/range`, `/v3/kv/txn`,
//! `/v3/lease/grant`, base64 keys and values) over a blocking HTTP client
//! with bounded connect and request timeouts, so the API stays synchronous
//! and a dead etcd gives [`Error::Timeout`] or an I/O error naming the
//! endpoint, never a hang. Every change is one compare-and-swap transaction;
//! a lost race is retried a bounded number of times.
//!
//! # Clusters, TLS, auth
//!
//! ```text
//! EtcdStore::open(EtcdConfig) ── Client::post ──▶ endpoint that answered last
//!                                   │ connection error, timeout, "no leader",
//!                                   │ "leader changed", unavailable
//!                                   ▼
//!                                next endpoint … a round, a pause (50→400 ms),
//!                                again, for at most the request timeout
//! ```
//!
//! `https://` endpoints are verified against the CA file, with a client
//! certificate when given; with a user, a token from `/v3/auth/authenticate`
//! goes in the `Authorization` header and is fetched again once when etcd
//! says it is invalid or expired (see `etcd_conn`). A request is sent again
//! only where a repeat is harmless: reads, and transactions whose compares
//! make a second run fail (an allocation that committed before its reply was
//! lost is then found through its owner key). [`EtcdWatch`] resumes after the
//! last event it passed on, on another member if need be, and passes on a
//! full list ([`WatchEvent::Resync`]) when etcd compacted that history away.
//!
//! # Keys (under the caller's prefix)
//!
//! ```text
//! networks/<net>/config           SubnetConfig (JSON)
//! networks/<net>/leases/<subnet>  NodeLease (JSON), attached to an etcd lease
//!                                 with the TTL; no etcd lease = reservation
//! networks/<net>/nodes/<node>     the node's subnet, same etcd lease: one
//!                                 subnet per node even when it races itself
//! networks/<net>/history/<node>   the node's last subnet (no TTL): a node
//!                                 whose lease expired gets it back if free
//! pools/<subnet>/config           PoolConfig (JSON)
//! pools/<subnet>/ips/<index>      {addr, container_id, ifname}; index as 8
//!                                 hex digits so keys sort like addresses;
//!                                 the key's create revision is the generation
//! pools/<subnet>/owners/<cid>/<if> the index held by (container, interface)
//! pools/<subnet>/cursor           where the last allocation ended (a hint)
//! ```
//!
//! Finding a free address reads one page of `ips/` keys from the cursor
//! (`keys_only`, 256 per page) and picks the first gap, then one
//! transaction claims it (`create_revision == 0` on the address and the
//! owner key): two round trips per allocation, whatever the pool holds.
//! Lease expiry is etcd's own: when the TTL runs out etcd deletes the lease
//! keys, and the subnet is free. `NodeLease::expires` is the wall-clock
//! estimate written at grant or renewal.
//!
//! When etcd loses its data (a new empty server, or one restored from an
//! old backup, at the same endpoint) this client refuses to go on (its
//! revision went back: `Error::Corrupt`). A node that holds a subnet
//! connects again and puts its lease back with [`LeaseStore::claim`]: a
//! compare-and-swap on the subnet's and the node's keys, so two nodes never
//! both get one subnet, and a node is never given one its kernel does not
//! hold.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::etcd_client::{check_revision, Client};
use super::etcd_conn::client_config;
pub use super::etcd_watch::{EtcdLeaseWatch, EtcdWatch, WatchEvent};
use super::file::{check_node, check_ttl};
use super::pool::{check_owner, Layout};
use super::subnet::overlaps;
use super::{
    net_key, Allocation, EtcdConfig, LeaseStore, LeaseWatch, NodeAttrs, NodeLease, PoolConfig,
    PoolStore, SubnetAllocator, SubnetConfig,
};
use crate::{Error, Result};

/// How often a transaction that lost a race is retried before `Conflict`.
const MAX_ATTEMPTS: usize = 200;
/// Keys read per page when looking for a free address.
const PAGE: u64 = 256;

/// A key-value pair as etcd returns it.
#[derive(Debug, Clone)]
pub(super) struct Kv {
    pub(super) key: String,
    pub(super) value: Vec<u8>,
    create_revision: u64,
    pub(super) mod_revision: u64,
    lease: i64,
}

/// An etcd number (the JSON gateway sends int64s as strings). etcd leaves
/// out fields that are zero, so a missing field is 0; anything else that is
/// not a number is a protocol error, never read as 0 (a revision of 0 in a
/// compare means "the key does not exist").
pub(super) fn num(v: &Value, what: &str) -> std::result::Result<u64, String> {
    match v {
        Value::Null => Ok(0),
        Value::String(s) => s
            .parse()
            .map_err(|_| format!("{what} {s:?} is not a number")),
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("{what} {n} is not a u64")),
        other => Err(format!("{what} {other} is not a number")),
    }
}

fn inum(v: &Value, what: &str) -> std::result::Result<i64, String> {
    match v {
        Value::Null => Ok(0),
        Value::String(s) => s
            .parse()
            .map_err(|_| format!("{what} {s:?} is not a number")),
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("{what} {n} is not an i64")),
        other => Err(format!("{what} {other} is not a number")),
    }
}

pub(super) fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

/// The key just past every key starting with `prefix` (etcd's prefix end).
pub(super) fn prefix_end(prefix: &str) -> String {
    let mut b = prefix.as_bytes().to_vec();
    while let Some(last) = b.pop() {
        if last < 0xff {
            b.push(last + 1);
            return B64.encode(&b);
        }
    }
    B64.encode([0u8])
}

/// Escape a container id or interface name for use as one key segment.
fn esc(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

impl Client {
    fn range(
        &self,
        key: &str,
        end: Option<String>,
        limit: u64,
        keys_only: bool,
        ctx: &str,
    ) -> Result<(Vec<Kv>, bool)> {
        let mut body = json!({ "key": b64(key) });
        if let Some(end) = end {
            body["range_end"] = json!(end);
        }
        if limit > 0 {
            body["limit"] = json!(limit);
        }
        if keys_only {
            body["keys_only"] = json!(true);
        }
        let v = self.post("/v3/kv/range", &body, ctx)?;
        Ok((
            parse_kvs(&v["kvs"], ctx)?,
            v["more"].as_bool().unwrap_or(false),
        ))
    }

    fn get(&self, key: &str, ctx: &str) -> Result<Option<Kv>> {
        Ok(self.range(key, None, 1, false, ctx)?.0.into_iter().next())
    }

    fn list(&self, prefix: &str, ctx: &str) -> Result<Vec<Kv>> {
        Ok(self
            .range(prefix, Some(prefix_end(prefix)), 0, false, ctx)?
            .0)
    }

    /// One transaction; returns (succeeded, revision, responses).
    fn txn(
        &self,
        compare: Vec<Value>,
        success: Vec<Value>,
        failure: Vec<Value>,
        ctx: &str,
    ) -> Result<(bool, u64, Value)> {
        let body = json!({ "compare": compare, "success": success, "failure": failure });
        let v = self.post("/v3/kv/txn", &body, ctx)?;
        parse_txn(&v, ctx)
    }

    fn grant(&self, ttl: Duration, ctx: &str) -> Result<i64> {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let v = self.post(
            "/v3/lease/grant",
            &json!({ "TTL": secs.max(1), "ID": 0 }),
            ctx,
        )?;
        let id = inum(&v["ID"], "lease ID").map_err(|why| protocol(ctx, why))?;
        if id == 0 {
            return Err(Error::Protocol {
                context: ctx.to_string(),
                reason: format!("etcd lease grant returned no ID: {v}"),
            });
        }
        Ok(id)
    }

    /// Keep etcd lease `id` alive for another TTL: its granted TTL in
    /// seconds, `None` when etcd no longer has it (expired, revoked).
    fn keep_alive(&self, id: i64, ctx: &str) -> Result<Option<u64>> {
        // The gateway answers a one-request keep-alive stream with one
        // `{"result": …}` object; a lease etcd no longer has has no TTL.
        let v = self.post("/v3/lease/keepalive", &json!({ "ID": id.to_string() }), ctx)?;
        let r = if v["result"].is_null() {
            &v
        } else {
            &v["result"]
        };
        Ok(inum(&r["TTL"], "lease TTL")
            .ok()
            .filter(|t| *t > 0)
            .map(|t| t as u64))
    }

    /// Revoke an etcd lease, best effort (it expires anyway).
    fn revoke(&self, id: i64, ctx: &str) {
        if id != 0 {
            let _ = self.post("/v3/lease/revoke", &json!({ "ID": id.to_string() }), ctx);
        }
    }
}

pub(super) fn protocol(ctx: &str, reason: String) -> Error {
    Error::Protocol {
        context: format!("{ctx}: etcd reply"),
        reason,
    }
}

/// The `kvs` of a range reply (or of a range inside a transaction). A
/// missing list is empty (etcd omits empty fields); a key that is missing
/// or not base64 is a protocol error.
pub(super) fn parse_kvs(v: &Value, ctx: &str) -> Result<Vec<Kv>> {
    let arr = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        other => return Err(protocol(ctx, format!("kvs is not a list: {other}"))),
    };
    arr.iter()
        .map(|kv| {
            if !kv.is_object() {
                return Err(protocol(ctx, format!("a kv is not an object: {kv}")));
            }
            let dec = |f: &str| -> Result<Vec<u8>> {
                let s = match &kv[f] {
                    Value::Null => "",
                    Value::String(s) => s.as_str(),
                    other => return Err(protocol(ctx, format!("{f} is not a string: {other}"))),
                };
                B64.decode(s)
                    .map_err(|e| protocol(ctx, format!("etcd {f} is not base64: {e}")))
            };
            let key = dec("key")?;
            if key.is_empty() {
                return Err(protocol(ctx, format!("a kv without a key: {kv}")));
            }
            let n = |f: &str| num(&kv[f], f).map_err(|why| protocol(ctx, why));
            Ok(Kv {
                key: String::from_utf8(key)
                    .map_err(|_| protocol(ctx, "a key that is not UTF-8".into()))?,
                value: dec("value")?,
                create_revision: n("create_revision")?,
                mod_revision: n("mod_revision")?,
                lease: inum(&kv["lease"], "lease").map_err(|why| protocol(ctx, why))?,
            })
        })
        .collect()
}

/// The result of a transaction: whether its compares held, its revision
/// and the responses of the branch that ran.
fn parse_txn(v: &Value, ctx: &str) -> Result<(bool, u64, Value)> {
    let succeeded = match &v["succeeded"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        other => return Err(protocol(ctx, format!("succeeded is not a bool: {other}"))),
    };
    let rev = num(&v["header"]["revision"], "header revision").map_err(|why| protocol(ctx, why))?;
    let responses = match &v["responses"] {
        Value::Null => Value::Array(Vec::new()),
        r @ Value::Array(_) => r.clone(),
        other => return Err(protocol(ctx, format!("responses is not a list: {other}"))),
    };
    Ok((succeeded, rev, responses))
}

/// Everything this store reads from an etcd reply, for the fuzz tests: a
/// range reply, a transaction reply, a lease grant.
#[doc(hidden)]
pub fn fuzz_reply(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = parse_kvs(&v["kvs"], "fuzz");
    let _ = parse_txn(&v, "fuzz");
    let _ = check_revision(&AtomicU64::new(0), 0, &v, "fuzz");
    let _ = inum(&v["ID"], "ID");
    if let Some(rs) = v["responses"].as_array() {
        for r in rs {
            let _ = parse_kvs(&r["response_range"]["kvs"], "fuzz");
        }
    }
}

/// A transaction that named an etcd lease which expired or was revoked
/// after its grant did nothing: report it as a lost race (`Ok` with
/// `succeeded == false`) so the caller's loop retries with a fresh lease.
fn lease_gone_is_retry(r: Result<(bool, u64, Value)>) -> Result<(bool, u64, Value)> {
    match r {
        Err(Error::NotFound { .. }) => Ok((false, 0, Value::Null)),
        r => r,
    }
}

fn cmp_create(key: &str, rev: u64) -> Value {
    json!({ "key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": rev.to_string() })
}

fn cmp_mod(key: &str, rev: u64) -> Value {
    json!({ "key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string() })
}

fn put(key: &str, value: &[u8], lease: i64) -> Value {
    let mut p = json!({ "key": b64(key), "value": B64.encode(value) });
    if lease != 0 {
        p["lease"] = json!(lease.to_string());
    }
    json!({ "request_put": p })
}

fn del(key: &str) -> Value {
    json!({ "request_delete_range": { "key": b64(key) } })
}

fn get_op(key: &str) -> Value {
    json!({ "request_range": { "key": b64(key) } })
}

fn to_json<T: Serialize>(v: &T, ctx: &str) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Protocol {
        context: ctx.to_string(),
        reason: format!("encode: {e}"),
    })
}

fn from_json<T: for<'de> Deserialize<'de>>(kv: &Kv, ctx: &str) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|e| Error::Corrupt {
        context: format!("{ctx}: etcd key {}", kv.key),
        reason: e.to_string(),
    })
}

/// A connection to etcd under a key prefix; hands out [`EtcdLeases`] and
/// [`EtcdPool`]s.
#[derive(Debug, Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
}

impl EtcdStore {
    /// Connect to etcd at `endpoints` (`http://127.0.0.1:2379`, one
    /// cluster's members), keeping keys under `prefix` (`/cnet/ipam`).
    /// Every request is bounded by `timeout` (connect and whole request).
    /// Checks etcd answers. [`EtcdStore::open`] takes TLS and auth too.
    pub fn connect(endpoints: &[&str], prefix: &str, timeout: Duration) -> Result<Self> {
        Self::open(EtcdConfig::new(endpoints, prefix).timeout(timeout))
    }

    /// Connect as `config` says: its endpoints (failover between them on
    /// connection errors and when a member has no leader), TLS files, user
    /// and password. Checks etcd answers (and, with a user, that the
    /// password is right). A CA that did not sign the server's certificate,
    /// a client certificate etcd refuses and a wrong password are each an
    /// [`Error::PermissionDenied`] saying which, never showing a secret.
    pub fn open(config: EtcdConfig) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(Error::invalid("etcd connect", "no endpoints"));
        }
        let tls = config.tls.as_ref().map(client_config).transpose()?;
        let store = EtcdStore {
            client: Client::new(&config, tls),
            prefix: config.prefix.trim_end_matches('/').to_string(),
        };
        // A read (status alone needs no auth), so a missing or wrong
        // password and a user without rights show now.
        store
            .client
            .range(&format!("{}/", store.prefix), None, 1, true, "etcd connect")?;
        Ok(store)
    }

    /// Watch every key under `prefix` (below the store's prefix) from now
    /// on: see [`EtcdWatch`].
    pub fn watch_prefix(&self, prefix: &str) -> Result<EtcdWatch> {
        EtcdWatch::start(
            &self.client,
            &format!("{}/{}", self.prefix, prefix.trim_start_matches('/')),
            "etcd watch",
        )
    }

    /// Create `kind/<net>/config` or check it holds `config`; refuse a
    /// network overlapping one already registered.
    fn register<T>(&self, kind: &str, net: &IpNet, config: &T, ctx: &str) -> Result<String>
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let base = format!("{}/{kind}/{}", self.prefix, net_key(net));
        let cfg_key = format!("{base}/config");
        let index = format!("{}/index/{kind}/", self.prefix);
        for kv in self.client.list(&index, ctx)? {
            let other = kv.key.trim_start_matches(&index);
            let other: Option<IpNet> = other.replace('-', ":").replace('_', "/").parse().ok();
            if let Some(other) = other {
                if other != *net && overlaps(&other, net) {
                    return Err(Error::Conflict {
                        context: ctx.to_string(),
                        reason: format!("overlaps {other}, already in this etcd prefix"),
                    });
                }
            }
        }
        let value = to_json(config, ctx)?;
        let (ok, _, resp) = self.client.txn(
            vec![cmp_create(&cfg_key, 0)],
            vec![
                put(&cfg_key, &value, 0),
                put(&format!("{index}{}", net_key(net)), b"", 0),
            ],
            vec![get_op(&cfg_key)],
            ctx,
        )?;
        if !ok {
            let kvs = parse_kvs(&resp[0]["response_range"]["kvs"], ctx)?;
            let stored: T = match kvs.first() {
                Some(kv) => from_json(kv, ctx)?,
                None => {
                    return Err(Error::Conflict {
                        context: ctx.to_string(),
                        reason: "config key vanished while registering".into(),
                    })
                }
            };
            if stored != *config {
                return Err(super::file::config_mismatch(ctx, &stored, config));
            }
        }
        Ok(base)
    }

    /// The node subnet leases of `config.network` (registered on first use;
    /// later users must pass the same config).
    pub fn subnets(&self, config: SubnetConfig) -> Result<EtcdLeases> {
        config.validate()?;
        let ctx = format!("etcd store: network {}", config.network);
        let base = self.register("networks", &config.network, &config, &ctx)?;
        Ok(EtcdLeases {
            client: self.client.clone(),
            alloc: SubnetAllocator::new(config.clone())?,
            config,
            base,
            ctx,
            renewing: Default::default(),
        })
    }

    /// The address pool of `config.subnet` (registered on first use).
    pub fn pool(&self, config: PoolConfig) -> Result<EtcdPool> {
        let layout = Layout::new(&config)?;
        let ctx = format!("etcd store: pool {}", config.subnet);
        let base = self.register("pools", &config.subnet, &config, &ctx)?;
        let cursor = match self.client.get(&format!("{base}/cursor"), &ctx)? {
            Some(kv) => u32::from_str_radix(&String::from_utf8_lossy(&kv.value), 16).unwrap_or(0),
            None => 0,
        };
        Ok(EtcdPool {
            client: self.client.clone(),
            config,
            layout,
            base,
            ctx,
            cursor,
        })
    }
}

// ---------------------------------------------------------------------------
// Leases

/// Node subnet leases in etcd; TTLs are etcd leases.
#[derive(Debug)]
pub struct EtcdLeases {
    client: Client,
    config: SubnetConfig,
    alloc: SubnetAllocator,
    base: String,
    ctx: String,
    /// The etcd lease of each node lease this handle took or renewed:
    /// the next renewal is one keep-alive of it, nothing else.
    renewing: std::sync::Mutex<std::collections::HashMap<String, (i64, NodeLease)>>,
}

impl EtcdLeases {
    fn lease_key(&self, subnet: &IpNet) -> String {
        format!("{}/leases/{}", self.base, net_key(subnet))
    }
    fn node_key(&self, node: &str) -> String {
        format!("{}/nodes/{node}", self.base)
    }
    fn history_key(&self, node: &str) -> String {
        format!("{}/history/{node}", self.base)
    }

    fn all(&self) -> Result<Vec<(NodeLease, Kv)>> {
        let kvs = self
            .client
            .list(&format!("{}/leases/", self.base), &self.ctx)?;
        kvs.into_iter()
            .map(|kv| Ok((from_json::<NodeLease>(&kv, &self.ctx)?, kv)))
            .collect()
    }

    fn conflict(&self, reason: String) -> Error {
        Error::Conflict {
            context: self.ctx.clone(),
            reason,
        }
    }

    fn contention(&self) -> Error {
        self.conflict(format!("gave up after {MAX_ATTEMPTS} lost races"))
    }

    /// Rewrite an existing lease in place (new attrs and/or etcd lease).
    fn rewrite(&self, old: &Kv, lease: &NodeLease, etcd_lease: i64) -> Result<bool> {
        let value = to_json(lease, &self.ctx)?;
        let (ok, _, _) = lease_gone_is_retry(self.client.txn(
            vec![cmp_mod(&old.key, old.mod_revision)],
            vec![
                put(&old.key, &value, etcd_lease),
                put(
                    &self.node_key(&lease.node),
                    lease.subnet.to_string().as_bytes(),
                    etcd_lease,
                ),
            ],
            vec![],
            &self.ctx,
        ))?;
        if ok {
            if old.lease != etcd_lease {
                self.client.revoke(old.lease, &self.ctx);
            }
        } else {
            self.client.revoke(etcd_lease, &self.ctx);
        }
        Ok(ok)
    }
}

impl EtcdLeases {
    /// The remembered etcd leases (a lock poisoned by a panic is taken
    /// back: the map holds no invariant a panic could break).
    fn renewing(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (i64, NodeLease)>> {
        self.renewing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remember the etcd lease `id` of `l` for its next renewal.
    fn remember(&self, id: i64, l: &NodeLease) {
        if !l.is_reservation() {
            self.renewing().insert(l.node.clone(), (id, l.clone()));
        }
    }

    /// Forget what [`EtcdLeases::remember`] kept of `node`.
    fn forget(&self, node: &str) {
        self.renewing().remove(node);
    }

    /// Renew `node`'s lease with one keep-alive of the etcd lease this
    /// handle took or renewed it with; `None` when there is none, or etcd
    /// no longer has it, or its TTL is not `secs` (then the caller reads).
    /// A key deleted while its etcd lease lives is not seen here: a node
    /// agent's watch sees it go ([`crate::network::Member`] then claims
    /// its subnet again).
    fn keep_alive_remembered(&self, node: &str, secs: u64) -> Result<Option<NodeLease>> {
        let Some((id, mut l)) = self.renewing().get(node).cloned() else {
            return Ok(None);
        };
        if self.client.keep_alive(id, &self.ctx)? == Some(secs) {
            l.expires = Some(SystemTime::now() + Duration::from_secs(secs));
            return Ok(Some(l));
        }
        self.forget(node);
        Ok(None)
    }

    /// Renew `node`'s lease without writing it: two key reads and an etcd
    /// lease keep-alive, so no watch fires (a rewrite of the lease's value
    /// woke every node of the cluster at every renewal). `None` when the
    /// keep-alive cannot do it (no lease, a TTL other than the one granted,
    /// the etcd lease gone): the caller rewrites the lease as before. The
    /// returned lease's `expires` is the new one; the stored value keeps
    /// the one it was written with (etcd's lease, not the value, decides).
    fn keep_alive(&self, node: &str, ttl: Duration) -> Result<Option<NodeLease>> {
        let Some(nk) = self.client.get(&self.node_key(node), &self.ctx)? else {
            return Ok(None);
        };
        let Ok(subnet) = String::from_utf8_lossy(&nk.value).parse::<IpNet>() else {
            return Ok(None);
        };
        let Some(kv) = self.client.get(&self.lease_key(&subnet), &self.ctx)? else {
            return Ok(None);
        };
        let mut l: NodeLease = from_json(&kv, &self.ctx)?;
        if l.node != node || kv.lease != nk.lease {
            return Ok(None);
        }
        if l.is_reservation() {
            return Ok(Some(l));
        }
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        match self.client.keep_alive(kv.lease, &self.ctx)? {
            Some(granted) if granted == secs.max(1) => {
                l.expires = Some(SystemTime::now() + ttl);
                self.remember(kv.lease, &l);
                Ok(Some(l))
            }
            _ => Ok(None),
        }
    }

    /// `node`'s existing lease `l` (stored in `kv`) with new attributes and
    /// a new etcd lease of `ttl` (a reservation stays one); `None` when a
    /// concurrent change won (the caller reads again).
    fn refresh(
        &self,
        l: &NodeLease,
        kv: &Kv,
        attrs: &NodeAttrs,
        ttl: Duration,
    ) -> Result<Option<NodeLease>> {
        let mut l = l.clone();
        l.attrs = attrs.clone();
        let id = if l.is_reservation() {
            0
        } else {
            l.expires = Some(SystemTime::now() + ttl);
            self.client.grant(ttl, &self.ctx)?
        };
        let ok = self.rewrite(kv, &l, id)?;
        if ok {
            self.remember(id, &l);
        }
        Ok(ok.then_some(l))
    }

    /// Create `node`'s lease of the free `subnet` in one transaction that
    /// holds only while neither the subnet's nor the node's key exists:
    /// two nodes (or one node racing itself) never both win. `None` when
    /// the race was lost (the caller reads again).
    fn take(
        &self,
        node: &str,
        subnet: IpNet,
        attrs: &NodeAttrs,
        ttl: Duration,
    ) -> Result<Option<NodeLease>> {
        let l = NodeLease {
            node: node.to_string(),
            subnet,
            attrs: attrs.clone(),
            expires: Some(SystemTime::now() + ttl),
        };
        let id = self.client.grant(ttl, &self.ctx)?;
        let lk = self.lease_key(&subnet);
        let nk = self.node_key(node);
        let (ok, _, _) = lease_gone_is_retry(self.client.txn(
            vec![cmp_create(&lk, 0), cmp_create(&nk, 0)],
            vec![
                put(&lk, &to_json(&l, &self.ctx)?, id),
                put(&nk, subnet.to_string().as_bytes(), id),
                put(&self.history_key(node), subnet.to_string().as_bytes(), 0),
            ],
            vec![],
            &self.ctx,
        ))?;
        if ok {
            self.remember(id, &l);
        } else {
            self.client.revoke(id, &self.ctx);
        }
        Ok(ok.then_some(l))
    }
}

impl LeaseStore for EtcdLeases {
    fn config(&self) -> &SubnetConfig {
        &self.config
    }

    fn acquire(&mut self, node: &str, attrs: &NodeAttrs, ttl: Duration) -> Result<NodeLease> {
        check_node(&self.ctx, node)?;
        check_ttl(&self.ctx, ttl)?;
        for _ in 0..MAX_ATTEMPTS {
            let all = self.all()?;
            if let Some((l, kv)) = all.iter().find(|(l, _)| l.node == node) {
                match self.refresh(l, kv, attrs, ttl)? {
                    Some(l) => return Ok(l),
                    None => continue,
                }
            }
            let mut a = self.alloc.clone();
            for (l, _) in &all {
                a.mark_taken(&l.subnet).map_err(|e| Error::Corrupt {
                    context: self.ctx.clone(),
                    reason: format!("lease of {}: {e}", l.node),
                })?;
            }
            let previous = self
                .client
                .get(&self.history_key(node), &self.ctx)?
                .and_then(|kv| String::from_utf8_lossy(&kv.value).parse::<IpNet>().ok());
            // A random start: nodes that start together rarely try the
            // same subnet (the lowest free one, for all of them, made the
            // lost races grow with the square of the cluster).
            let seed = std::hash::BuildHasher::hash_one(
                &std::collections::hash_map::RandomState::new(),
                node,
            );
            let subnet = a.next_free_spread(previous.as_ref(), seed)?;
            if let Some(l) = self.take(node, subnet, attrs, ttl)? {
                return Ok(l);
            }
        }
        Err(self.contention())
    }

    fn claim(
        &mut self,
        node: &str,
        subnet: IpNet,
        attrs: &NodeAttrs,
        ttl: Duration,
    ) -> Result<NodeLease> {
        check_node(&self.ctx, node)?;
        check_ttl(&self.ctx, ttl)?;
        for _ in 0..MAX_ATTEMPTS {
            let all = self.all()?;
            let live: Vec<&NodeLease> = all.iter().map(|(l, _)| l).collect();
            let got = match super::check_claim(&self.ctx, &self.config, &live, node, &subnet)? {
                Some(i) => self.refresh(&all[i].0, &all[i].1, attrs, ttl)?,
                None => self.take(node, subnet, attrs, ttl)?,
            };
            if let Some(l) = got {
                return Ok(l);
            }
        }
        Err(self.contention())
    }

    fn renew(&mut self, node: &str, ttl: Duration) -> Result<NodeLease> {
        check_ttl(&self.ctx, ttl)?;
        // One keep-alive (this handle's own lease), else two reads and a
        // keep-alive (a lease taken by another handle), else a rewrite.
        let secs = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1);
        if let Some(l) = self.keep_alive_remembered(node, secs)? {
            return Ok(l);
        }
        if let Some(l) = self.keep_alive(node, ttl)? {
            return Ok(l);
        }
        for _ in 0..MAX_ATTEMPTS {
            let all = self.all()?;
            let Some((l, kv)) = all.iter().find(|(l, _)| l.node == node) else {
                return Err(Error::NotFound {
                    context: format!("{}: lease of node {node}", self.ctx),
                    kernel: None,
                });
            };
            if l.is_reservation() {
                return Ok(l.clone());
            }
            let mut l = l.clone();
            l.expires = Some(SystemTime::now() + ttl);
            let id = self.client.grant(ttl, &self.ctx)?;
            if self.rewrite(kv, &l, id)? {
                self.remember(id, &l);
                return Ok(l);
            }
        }
        Err(self.contention())
    }

    fn release(&mut self, node: &str) -> Result<()> {
        self.forget(node);
        for _ in 0..MAX_ATTEMPTS {
            let all = self.all()?;
            let Some((l, kv)) = all.iter().find(|(l, _)| l.node == node) else {
                return Ok(());
            };
            let (ok, _, _) = self.client.txn(
                vec![cmp_mod(&kv.key, kv.mod_revision)],
                vec![del(&kv.key), del(&self.node_key(&l.node))],
                vec![],
                &self.ctx,
            )?;
            if ok {
                self.client.revoke(kv.lease, &self.ctx);
                return Ok(());
            }
        }
        Err(self.contention())
    }

    fn reserve(&mut self, node: &str, subnet: IpNet, attrs: &NodeAttrs) -> Result<NodeLease> {
        check_node(&self.ctx, node)?;
        if self.config.index_of(&subnet).is_none() {
            return Err(Error::invalid(
                self.ctx.clone(),
                format!(
                    "{subnet} is not a /{} subnet of {}",
                    self.config.subnet_len, self.config.network
                ),
            ));
        }
        let l = NodeLease {
            node: node.to_string(),
            subnet,
            attrs: attrs.clone(),
            expires: None,
        };
        for _ in 0..MAX_ATTEMPTS {
            let all = self.all()?;
            if let Some((other, _)) = all
                .iter()
                .find(|(o, _)| (o.subnet == subnet) != (o.node == node))
            {
                return Err(self.conflict(format!("node {} holds {}", other.node, other.subnet)));
            }
            if let Some((_, kv)) = all.iter().find(|(o, _)| o.node == node) {
                if self.rewrite(kv, &l, 0)? {
                    return Ok(l);
                }
                continue;
            }
            let lk = self.lease_key(&subnet);
            let nk = self.node_key(node);
            let (ok, _, _) = self.client.txn(
                vec![cmp_create(&lk, 0), cmp_create(&nk, 0)],
                vec![
                    put(&lk, &to_json(&l, &self.ctx)?, 0),
                    put(&nk, subnet.to_string().as_bytes(), 0),
                    put(&self.history_key(node), subnet.to_string().as_bytes(), 0),
                ],
                vec![],
                &self.ctx,
            )?;
            if ok {
                return Ok(l);
            }
        }
        Err(self.contention())
    }

    fn get(&mut self, node: &str) -> Result<Option<NodeLease>> {
        Ok(self
            .all()?
            .into_iter()
            .map(|(l, _)| l)
            .find(|l| l.node == node))
    }

    fn list(&mut self) -> Result<Vec<NodeLease>> {
        let mut v: Vec<NodeLease> = self.all()?.into_iter().map(|(l, _)| l).collect();
        v.sort_by_key(|l| super::addr_to_u128(l.subnet.network()));
        Ok(v)
    }

    fn watch(&mut self) -> Result<Box<dyn LeaseWatch>> {
        EtcdLeaseWatch::start(&self.client, &format!("{}/leases/", self.base), &self.ctx)
            .map(|w| Box::new(w) as Box<dyn LeaseWatch>)
    }
}

// ---------------------------------------------------------------------------
// Pools

/// What an `ips/<index>` key holds (the generation is its create revision).
#[derive(Debug, Serialize, Deserialize)]
struct IpValue {
    addr: IpAddr,
    container_id: String,
    ifname: String,
}

/// An address pool in etcd.
#[derive(Debug)]
pub struct EtcdPool {
    client: Client,
    config: PoolConfig,
    layout: Layout,
    base: String,
    ctx: String,
    /// Where to start looking (shared as a hint through `cursor`).
    cursor: u32,
}

impl EtcdPool {
    fn ip_key(&self, idx: u32) -> String {
        format!("{}/ips/{idx:08x}", self.base)
    }
    fn owner_key(&self, cid: &str, ifname: &str) -> String {
        format!("{}/owners/{}/{}", self.base, esc(cid), esc(ifname))
    }

    fn alloc_of(&self, kv: &Kv) -> Result<Allocation> {
        let v: IpValue = from_json(kv, &self.ctx)?;
        Ok(Allocation {
            addr: v.addr,
            prefix_len: self.config.subnet.prefix_len(),
            container_id: v.container_id,
            ifname: v.ifname,
            generation: kv.create_revision,
        })
    }

    fn idx_of_key(&self, key: &str) -> Option<u32> {
        let hex = key.rsplit('/').next()?;
        u32::from_str_radix(hex, 16).ok()
    }

    /// The first free index at or after `from` (wrapping), reading the
    /// taken ones a page at a time.
    fn find_free(&self) -> Result<u32> {
        let size = self.layout.size();
        let start = if self.cursor >= size { 0 } else { self.cursor };
        for (lo, hi) in [(start, size), (0, start)] {
            let mut i = lo;
            while i < hi {
                let (kvs, more) = self.client.range(
                    &self.ip_key(i),
                    Some(b64(&self.ip_key(hi))),
                    PAGE,
                    true,
                    &self.ctx,
                )?;
                for kv in &kvs {
                    let Some(k) = self.idx_of_key(&kv.key) else {
                        continue;
                    };
                    while i < k {
                        if !self.layout.is_excluded(i) {
                            return Ok(i);
                        }
                        i += 1;
                    }
                    i = k + 1;
                }
                if !more {
                    while i < hi {
                        if !self.layout.is_excluded(i) {
                            return Ok(i);
                        }
                        i += 1;
                    }
                }
            }
        }
        Err(Error::Exhausted {
            context: self.ctx.clone(),
            reason: "every address is allocated".into(),
        })
    }

    /// Claim `idx` for the owner in one transaction. `Ok(Err(existing))` if
    /// the owner already holds an address, `Ok(Ok(None))` if `idx` was taken.
    #[allow(clippy::type_complexity)]
    fn claim(
        &mut self,
        idx: u32,
        cid: &str,
        ifname: &str,
    ) -> Result<std::result::Result<Option<Allocation>, Allocation>> {
        let addr = self
            .layout
            .addr_at(idx)
            .ok_or_else(|| Error::invalid(self.ctx.clone(), "index out of range"))?;
        let ik = self.ip_key(idx);
        let ok_key = self.owner_key(cid, ifname);
        let value = to_json(
            &IpValue {
                addr,
                container_id: cid.to_string(),
                ifname: ifname.to_string(),
            },
            &self.ctx,
        )?;
        let next = if idx + 1 >= self.layout.size() {
            0
        } else {
            idx + 1
        };
        let (ok, rev, resp) = self.client.txn(
            vec![cmp_create(&ok_key, 0), cmp_create(&ik, 0)],
            vec![
                put(&ik, &value, 0),
                put(&ok_key, format!("{idx:08x}").as_bytes(), 0),
                put(
                    &format!("{}/cursor", self.base),
                    format!("{next:08x}").as_bytes(),
                    0,
                ),
            ],
            vec![get_op(&ok_key)],
            &self.ctx,
        )?;
        if ok {
            self.cursor = next;
            return Ok(Ok(Some(Allocation {
                addr,
                prefix_len: self.config.subnet.prefix_len(),
                container_id: cid.to_string(),
                ifname: ifname.to_string(),
                generation: rev,
            })));
        }
        let owner = parse_kvs(&resp[0]["response_range"]["kvs"], &self.ctx)?;
        if let Some(o) = owner.first() {
            if let Some(a) = self.owned(o, cid, ifname)? {
                return Ok(Err(a));
            }
            // An owner key without its address: a release in flight; retry.
            return Ok(Ok(None));
        }
        self.cursor = next;
        Ok(Ok(None))
    }

    /// The allocation an owner key points to, if it really is the owner's.
    fn owned(&self, owner: &Kv, cid: &str, ifname: &str) -> Result<Option<Allocation>> {
        let Some(idx) = u32::from_str_radix(&String::from_utf8_lossy(&owner.value), 16).ok() else {
            return Err(Error::Corrupt {
                context: format!("{}: etcd key {}", self.ctx, owner.key),
                reason: "not an address index".into(),
            });
        };
        let Some(kv) = self.client.get(&self.ip_key(idx), &self.ctx)? else {
            return Ok(None);
        };
        let a = self.alloc_of(&kv)?;
        Ok((a.container_id == cid && a.ifname == ifname).then_some(a))
    }

    /// Delete an allocation if its key still has `generation`.
    fn delete(&self, a: &Allocation, generation: u64) -> Result<bool> {
        let idx = self
            .layout
            .index_of(a.addr)
            .ok_or_else(|| Error::invalid(self.ctx.clone(), "address outside pool"))?;
        let ik = self.ip_key(idx);
        let (ok, _, _) = self.client.txn(
            vec![cmp_create(&ik, generation)],
            vec![del(&ik), del(&self.owner_key(&a.container_id, &a.ifname))],
            vec![],
            &self.ctx,
        )?;
        Ok(ok)
    }
}

impl PoolStore for EtcdPool {
    fn config(&self) -> &PoolConfig {
        &self.config
    }

    fn allocate(&mut self, container_id: &str, ifname: &str) -> Result<Allocation> {
        self.allocate_tracked(container_id, ifname).map(|(a, _)| a)
    }

    fn allocate_tracked(&mut self, container_id: &str, ifname: &str) -> Result<(Allocation, bool)> {
        check_owner(&self.config, container_id, ifname)?;
        for _ in 0..MAX_ATTEMPTS {
            let idx = match self.find_free() {
                Ok(i) => i,
                Err(e @ Error::Exhausted { .. }) => {
                    // Full, unless the owner already holds one.
                    if let Some(o) = self
                        .client
                        .get(&self.owner_key(container_id, ifname), &self.ctx)?
                    {
                        if let Some(a) = self.owned(&o, container_id, ifname)? {
                            return Ok((a, false));
                        }
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            match self.claim(idx, container_id, ifname)? {
                Ok(Some(a)) => return Ok((a, true)),
                Err(a) => return Ok((a, false)),
                Ok(None) => continue,
            }
        }
        Err(Error::Conflict {
            context: self.ctx.clone(),
            reason: format!("gave up after {MAX_ATTEMPTS} lost races"),
        })
    }

    fn allocate_addr(
        &mut self,
        container_id: &str,
        ifname: &str,
        addr: IpAddr,
    ) -> Result<Allocation> {
        check_owner(&self.config, container_id, ifname)?;
        let idx = self.layout.index_of(addr).ok_or_else(|| {
            Error::invalid(
                self.ctx.clone(),
                format!("{addr} is outside the pool's ranges"),
            )
        })?;
        if self.layout.is_excluded(idx) {
            return Err(Error::invalid(
                self.ctx.clone(),
                format!("{addr} is the network, gateway or broadcast address"),
            ));
        }
        let cursor = self.cursor;
        let r = self.claim(idx, container_id, ifname);
        self.cursor = cursor;
        match r? {
            Ok(Some(a)) => Ok(a),
            Err(a) if a.addr == addr => Ok(a),
            Err(a) => Err(Error::Conflict {
                context: self.ctx.clone(),
                reason: format!(
                    "{container_id}/{ifname} already holds {}, not {addr}",
                    a.addr
                ),
            }),
            Ok(None) => {
                let holder = self.client.get(&self.ip_key(idx), &self.ctx)?;
                let who = match holder {
                    Some(kv) => {
                        let a = self.alloc_of(&kv)?;
                        format!("{}/{}", a.container_id, a.ifname)
                    }
                    None => "a release in flight".into(),
                };
                Err(Error::Conflict {
                    context: self.ctx.clone(),
                    reason: format!("{addr} is held by {who}"),
                })
            }
        }
    }

    fn release(&mut self, container_id: &str, ifname: &str) -> Result<Option<Allocation>> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(o) = self
                .client
                .get(&self.owner_key(container_id, ifname), &self.ctx)?
            else {
                return Ok(None);
            };
            match self.owned(&o, container_id, ifname)? {
                Some(a) => {
                    if self.delete(&a, a.generation)? {
                        return Ok(Some(a));
                    }
                }
                None => {
                    // A dangling owner key: remove it if unchanged.
                    let (ok, _, _) = self.client.txn(
                        vec![cmp_mod(&o.key, o.mod_revision)],
                        vec![del(&o.key)],
                        vec![],
                        &self.ctx,
                    )?;
                    if ok {
                        return Ok(None);
                    }
                }
            }
        }
        Err(Error::Conflict {
            context: self.ctx.clone(),
            reason: format!("gave up after {MAX_ATTEMPTS} lost races"),
        })
    }

    fn release_generation(&mut self, addr: IpAddr, generation: u64) -> Result<Option<Allocation>> {
        let Some(idx) = self.layout.index_of(addr) else {
            return Ok(None);
        };
        let Some(kv) = self.client.get(&self.ip_key(idx), &self.ctx)? else {
            return Ok(None);
        };
        let a = self.alloc_of(&kv)?;
        let stale = || Error::Conflict {
            context: self.ctx.clone(),
            reason: format!(
                "{addr} now belongs to a later allocation (generation {}, not {generation})",
                kv.create_revision
            ),
        };
        if a.generation != generation {
            return Err(stale());
        }
        if self.delete(&a, generation)? {
            Ok(Some(a))
        } else {
            // Released (and perhaps re-allocated) meanwhile.
            match self.client.get(&self.ip_key(idx), &self.ctx)? {
                None => Ok(None),
                Some(_) => Err(stale()),
            }
        }
    }

    fn list(&mut self) -> Result<Vec<Allocation>> {
        let kvs = self
            .client
            .list(&format!("{}/ips/", self.base), &self.ctx)?;
        kvs.iter().map(|kv| self.alloc_of(kv)).collect()
    }

    fn gc(&mut self, alive: &HashSet<String>) -> Result<Vec<Allocation>> {
        let mut gone = Vec::new();
        for a in self.list()? {
            if !alive.contains(&a.container_id) && self.delete(&a, a.generation)? {
                gone.push(a);
            }
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("a/"), B64.encode("a0"));
        assert_eq!(esc("a/b%c"), "a%2Fb%25c");
    }
}
