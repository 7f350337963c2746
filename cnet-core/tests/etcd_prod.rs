//! The etcd store as clusters run etcd: TLS with a CA and client
//! certificates, user/password auth (`etcd_tls_*`), and a three-member
//! cluster on an underlay whose leader dies, or which restarts whole,
//! while clients allocate, renew and watch (`etcd_cluster_*`). Certificates
//! are made here (rcgen); etcd is Debian's `etcd-server`, run in test
//! namespaces (see `common/etcd.rs`). `curl` is the independent reader.
#![cfg(feature = "etcd")]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cnet_core::ipam::{
    EtcdConfig, EtcdStore, EtcdTls, LeaseStore, NodeAttrs, PoolConfig, PoolStore, SubnetConfig,
    WatchEvent,
};
use cnet_core::Error;
use common::etcd::{Etcd, EtcdCluster};

const PASSWORD: &str = "pw-Zq8-not-in-any-output";

/// PEM files of a test PKI: `ca`, a server cert for 127.0.0.1 and a client
/// cert signed by it, and `other-ca` with a client cert of its own.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        let ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, name);
            let cert = p.self_signed(&key).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            (cert, key)
        };
        let leaf = |name: &str,
                    sans: Vec<String>,
                    usage: Vec<ExtendedKeyUsagePurpose>,
                    issuer: &(rcgen::Certificate, KeyPair)| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(sans).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            p.extended_key_usages = usage;
            let cert = p.signed_by(&key, &issuer.0, &issuer.1).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        };
        let main = ca("ca");
        let other = ca("other-ca");
        let ip = vec!["127.0.0.1".to_string()];
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        // etcd's gateway dials etcd with the server certificate: it is a
        // client certificate too.
        leaf("server", ip, vec![ServerAuth, ClientAuth], &main);
        leaf("client", vec![], vec![ClientAuth], &main);
        leaf("stranger", vec![], vec![ClientAuth], &other);
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.pem"))
    }

    /// The client settings: trust `ca`, present `cert` (if any).
    fn tls(&self, ca: &str, cert: Option<&str>) -> EtcdTls {
        let t = EtcdTls::new().ca_file(self.path(ca));
        match cert {
            Some(c) => t
                .cert_file(self.path(c))
                .key_file(self.path(&format!("{c}-key"))),
            None => t,
        }
    }

    /// etcd's flags: https with the server cert, client certs required when
    /// `client_auth`.
    fn server_flags(&self, client_auth: bool) -> Vec<String> {
        let mut v = vec![
            "--cert-file".into(),
            self.path("server").display().to_string(),
            "--key-file".into(),
            self.path("server-key").display().to_string(),
        ];
        if client_auth {
            v.push("--trusted-ca-file".into());
            v.push(self.path("ca").display().to_string());
            v.push("--client-cert-auth".into());
        }
        v
    }

    /// `curl` in etcd's namespace against its JSON gateway (the
    /// independent reader): the reply body.
    fn curl(&self, etcd: &Etcd, cert: bool, path: &str, body: &str, token: Option<&str>) -> String {
        let mut args = vec![
            format!("--net=/run/netns/{}", etcd.ns.name),
            "curl".into(),
            "-sS".into(),
            "--cacert".into(),
            self.path("ca").display().to_string(),
        ];
        if cert {
            args.extend([
                "--cert".into(),
                self.path("client").display().to_string(),
                "--key".into(),
                self.path("client-key").display().to_string(),
            ]);
        }
        if let Some(t) = token {
            args.extend(["-H".into(), format!("Authorization: {t}")]);
        }
        args.extend(["-d".into(), body.into(), format!("{}{path}", etcd.url)]);
        let out = std::process::Command::new("nsenter")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn start_tls(tag: &str, pki: &Pki, client_auth: bool) -> Option<Etcd> {
    if !common::privileged() {
        return None;
    }
    let tls = pki.tls("ca", client_auth.then_some("client"));
    Etcd::start_with(tag, "https", pki.server_flags(client_auth), move |url| {
        EtcdConfig::new(&[url], "/probe").tls(tls.clone())
    })
}

fn net16() -> SubnetConfig {
    SubnetConfig::new("10.244.0.0/16".parse().unwrap())
}

/// Assert `e` is a PermissionDenied whose message says `hint`.
fn assert_denied(r: Result<EtcdStore, Error>, hint: &str) -> Error {
    let e = r.expect_err("must be refused");
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(hint), "{text:?} lacks {hint:?}");
    println!("typed error: {text}");
    e
}

/// A verified TLS connection with a client certificate: the store works,
/// and curl with the same files reads what it wrote.
#[test]
fn etcd_tls_verified_with_ca_and_client_cert() {
    let pki = Pki::new();
    let Some(etcd) = start_tls("tlsok", &pki, true) else {
        return;
    };
    etcd.run(|| {
        let config = EtcdConfig::new(&[&etcd.url], "/cnet").tls(pki.tls("ca", Some("client")));
        let s = EtcdStore::open(config.clone()).unwrap();
        let mut l = s.subnets(net16()).unwrap();
        let mut watch = l.watch().unwrap();
        let lease = l
            .acquire("node-a", &NodeAttrs::default(), Duration::from_secs(60))
            .unwrap();
        assert!(
            watch.wait(Duration::from_secs(5)).unwrap(),
            "watch over TLS"
        );
        let mut p = s
            .pool(PoolConfig::new("10.244.1.0/24".parse().unwrap()))
            .unwrap();
        let a = p.allocate("c1", "eth0").unwrap();
        assert_eq!(p.list().unwrap(), vec![a]);
        // The key the store wrote, read by curl with the same files.
        let key = base64_of("/cnet/networks/10.244.0.0_16/nodes/node-a");
        let out = pki.curl(
            &etcd,
            true,
            "/v3/kv/range",
            &format!(r#"{{"key":"{key}"}}"#),
            None,
        );
        assert!(out.contains(&base64_of(&lease.subnet.to_string())), "{out}");
        // Nothing secret in Debug: the key file's contents never show.
        let key_pem = std::fs::read_to_string(pki.path("client-key")).unwrap();
        let secret_line = key_pem.lines().nth(1).unwrap();
        for dbg in [format!("{config:?}"), format!("{s:?}"), format!("{l:?}")] {
            assert!(!dbg.contains(secret_line), "key material in {dbg}");
        }
    });
}

/// A server certificate from a CA the client does not trust.
#[test]
fn etcd_tls_unknown_ca_is_typed_error() {
    let pki = Pki::new();
    let Some(etcd) = start_tls("tlsca", &pki, true) else {
        return;
    };
    etcd.run(|| {
        let config =
            EtcdConfig::new(&[&etcd.url], "/cnet").tls(pki.tls("other-ca", Some("client")));
        assert_denied(EtcdStore::open(config), "not signed by a CA in the CA file");
        // No CA file: the webpki roots do not know a private CA either.
        let config = EtcdConfig::new(&[&etcd.url], "/cnet").tls(EtcdTls::new());
        assert_denied(EtcdStore::open(config), "--etcd-cafile");
        // A CA file that is not PEM is bad input, not a TLS failure.
        let bogus = pki.dir.path().join("bogus.pem");
        std::fs::write(&bogus, "not a certificate").unwrap();
        let config = EtcdConfig::new(&[&etcd.url], "/cnet").tls(EtcdTls::new().ca_file(&bogus));
        let e = EtcdStore::open(config).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    });
}

/// etcd's `--client-cert-auth` refuses a certificate from another CA, and
/// a client with none.
#[test]
fn etcd_tls_wrong_client_cert_is_typed_error() {
    let pki = Pki::new();
    let Some(etcd) = start_tls("tlscl", &pki, true) else {
        return;
    };
    etcd.run(|| {
        let hint = "refused this client's certificate";
        let stranger = EtcdConfig::new(&[&etcd.url], "/cnet").tls(pki.tls("ca", Some("stranger")));
        let e = assert_denied(EtcdStore::open(stranger), hint);
        let key_pem = std::fs::read_to_string(pki.path("stranger-key")).unwrap();
        assert!(!format!("{e:?}").contains(key_pem.lines().nth(1).unwrap()));
        let none = EtcdConfig::new(&[&etcd.url], "/cnet").tls(pki.tls("ca", None));
        assert_denied(EtcdStore::open(none), hint);
        // A key that does not belong to the certificate: refused before
        // anything is sent.
        let mismatched = EtcdConfig::new(&[&etcd.url], "/cnet").tls(
            pki.tls("ca", None)
                .cert_file(pki.path("client"))
                .key_file(pki.path("stranger-key")),
        );
        match EtcdStore::open(mismatched) {
            Err(Error::InvalidArgument { .. }) => {}
            // rustls may only notice at the handshake.
            Err(e @ Error::PermissionDenied { .. }) => println!("mismatched key: {e}"),
            other => panic!("{other:?}"),
        }
    });
}

/// etcd's user/password auth over TLS: the token is fetched, sent, fetched
/// again when it expires (`--auth-token-ttl 1`); a wrong password and a
/// missing user are typed errors; the password and token never show.
#[test]
fn etcd_tls_user_password_auth_and_wrong_password() {
    let pki = Pki::new();
    if !common::privileged() {
        return;
    }
    let tls = pki.tls("ca", None);
    let mut flags = pki.server_flags(false);
    flags.extend(["--auth-token-ttl".into(), "1".into()]);
    let Some(etcd) = Etcd::start_with("tlsau", "https", flags, move |url| {
        EtcdConfig::new(&[url], "/probe").tls(tls.clone())
    }) else {
        return;
    };
    // Users and auth on, through the JSON gateway with curl.
    for (path, body) in [
        (
            "/v3/auth/user/add",
            format!(r#"{{"name":"root","password":"{PASSWORD}"}}"#),
        ),
        ("/v3/auth/role/add", r#"{"name":"root"}"#.to_string()),
        (
            "/v3/auth/user/grant",
            r#"{"user":"root","role":"root"}"#.to_string(),
        ),
        ("/v3/auth/enable", "{}".to_string()),
    ] {
        let out = pki.curl(&etcd, false, path, &body, None);
        assert!(
            !out.contains("\"error\"") || out.contains("already exists"),
            "{path}: {out}"
        );
    }
    etcd.run(|| {
        let base = EtcdConfig::new(&[&etcd.url], "/cnet").tls(pki.tls("ca", None));
        let good = base.clone().auth("root", PASSWORD);
        let s = EtcdStore::open(good.clone()).unwrap();
        let mut p = s
            .pool(PoolConfig::new("10.244.1.0/24".parse().unwrap()))
            .unwrap();
        let mut l = s.subnets(net16()).unwrap();
        let mut watch = l.watch().unwrap();
        p.allocate("c1", "eth0").unwrap();
        l.acquire("node-a", &NodeAttrs::default(), Duration::from_secs(60))
            .unwrap();
        assert!(
            watch.wait(Duration::from_secs(5)).unwrap(),
            "watch with a token"
        );
        // The simple token lives 1 s: the next calls authenticate again.
        std::thread::sleep(Duration::from_millis(2500));
        let t = Instant::now();
        p.allocate("c2", "eth0").unwrap();
        println!(
            "allocation after the token expired (re-authenticated): {:?}",
            t.elapsed()
        );
        l.renew("node-a", Duration::from_secs(60)).unwrap();
        // A renewal writes no key (an etcd lease keep-alive): a new lease
        // is what the watch sees.
        l.acquire("node-b", &NodeAttrs::default(), Duration::from_secs(60))
            .unwrap();
        assert!(
            watch.wait(Duration::from_secs(8)).unwrap(),
            "watch after token expiry"
        );
        assert_eq!(p.list().unwrap().len(), 2);

        let wrong = base.clone().auth("root", "not-the-password");
        let e1 = assert_denied(EtcdStore::open(wrong), "user name or password");
        let e2 = assert_denied(EtcdStore::open(base.clone()), "--etcd-username");
        for dbg in [
            format!("{good:?}"),
            format!("{s:?}"),
            format!("{p:?}"),
            format!("{l:?}"),
            format!("{e1:?} {e1}"),
            format!("{e2:?} {e2}"),
        ] {
            assert!(!dbg.contains(PASSWORD), "password in {dbg}");
            assert!(!dbg.contains("not-the-password"), "password in {dbg}");
        }
        assert!(format!("{good:?}").contains("<redacted>"));
        // A token (etcd's simple tokens are `<random>.<n>`) never shows.
        let dbg = format!("{s:?}");
        assert!(dbg.contains("token: \"<redacted>\""), "{dbg}");
    });
}

fn base64_of(s: &str) -> String {
    use std::io::Write;
    // Tiny base64 (tests only): no extra dev-dependency.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = Vec::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.write_all(&[T[(n >> (18 - 6 * i) & 63) as usize]])
                    .unwrap();
            } else {
                out.push(b'=');
            }
        }
    }
    String::from_utf8(out).unwrap()
}

// ---------------------------------------------------------------------------
// Three members

fn start_cluster(tag: &str) -> Option<EtcdCluster> {
    if !common::privileged() {
        return None;
    }
    EtcdCluster::start(tag)
}

/// Connect to all members (call inside `cluster.run`), the leader's
/// endpoint first: the store's requests and watches start there.
fn cluster_store(c: &EtcdCluster) -> EtcdStore {
    let mut urls = c.urls();
    if let Some(l) = c.leader() {
        urls.swap(0, l);
    }
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    // A silent stream is reopened after 5 s (default 60 s): a client cut
    // off for longer reconnects from its revision.
    EtcdStore::open(
        EtcdConfig::new(&urls, "/cnet")
            .timeout(Duration::from_secs(2))
            .watch_idle(Duration::from_secs(5)),
    )
    .unwrap()
}

/// What a watch's events add up to, checking as they come that none is
/// repeated: revisions never go back, and a key changes at most once per
/// revision (one transaction puts several keys at one revision).
#[derive(Default)]
struct Watched {
    state: BTreeMap<String, Vec<u8>>,
    rev: u64,
    keys_at_rev: HashSet<String>,
    resyncs: usize,
}

impl Watched {
    fn step(&mut self, key: &str, revision: u64) {
        assert!(
            revision >= self.rev,
            "revision {revision} after {}: repeated",
            self.rev
        );
        if revision > self.rev {
            self.rev = revision;
            self.keys_at_rev.clear();
        }
        assert!(
            self.keys_at_rev.insert(key.to_string()),
            "{key} at {revision} twice"
        );
    }

    fn apply(&mut self, e: &WatchEvent) {
        match e {
            WatchEvent::Put {
                key,
                value,
                revision,
            } => {
                self.step(key, *revision);
                self.state.insert(key.clone(), value.clone());
            }
            WatchEvent::Delete { key, revision } => {
                self.step(key, *revision);
                assert!(self.state.remove(key).is_some(), "delete of unseen {key}");
            }
            WatchEvent::Resync { kvs, revision } => {
                self.rev = *revision;
                self.keys_at_rev.clear();
                self.resyncs += 1;
                self.state = kvs.iter().cloned().collect();
            }
            other => panic!("{other:?}"),
        }
    }

    /// Addresses held, as the watch saw it.
    fn ips(&self) -> usize {
        self.state.keys().filter(|k| k.contains("/ips/")).count()
    }
}

/// Kill the leader while four threads allocate, a lease renews and a watch
/// runs: all carry on after the election; no allocation is lost or given
/// twice; the watch misses and repeats no event.
#[test]
fn etcd_cluster_leader_killed_during_allocations_renewals_and_watch() {
    let Some(c) = start_cluster("clld") else {
        return;
    };
    const THREADS: usize = 4;
    const EACH: usize = 40;
    let pool_cfg = PoolConfig::new("10.244.8.0/22".parse().unwrap());
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let killed_at: Mutex<Option<Instant>> = Mutex::new(None);
    let renewed_after_kill = AtomicUsize::new(0);
    let cref = &c;
    let (got, events, lease) = c.run(|| {
        let s = cluster_store(cref);
        let mut pool = s.pool(pool_cfg.clone()).unwrap();
        let mut watch = s.watch_prefix("pools/").unwrap();
        let mut leases = s.subnets(net16()).unwrap();
        let lease = leases
            .acquire("node-r", &NodeAttrs::default(), Duration::from_secs(3))
            .unwrap();
        let got = std::thread::scope(|sc| {
            // The renewer stops however this scope ends (a panic here must
            // not leave the scope waiting for it, and the cluster running).
            struct StopOnDrop<'a>(&'a AtomicBool);
            impl Drop for StopOnDrop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _stop = StopOnDrop(&stop);
            // The renewer.
            sc.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let l = leases.renew("node-r", Duration::from_secs(3)).unwrap();
                    assert_eq!(l.subnet, lease.subnet);
                    if killed_at.lock().unwrap().is_some() {
                        renewed_after_kill.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
            let workers: Vec<_> = (0..THREADS)
                .map(|t| {
                    let s = s.clone();
                    let (cfg, done) = (pool_cfg.clone(), &done);
                    sc.spawn(move || {
                        let mut p = s.pool(cfg).unwrap();
                        let mut mine = Vec::new();
                        for i in 0..EACH {
                            let cid = format!("t{t}-{i}");
                            // A call that failed may have taken the address
                            // anyway: asking again with the same owner gives
                            // it back, never a second one.
                            let mut tries = 0;
                            let a = loop {
                                match p.allocate(&cid, "eth0") {
                                    Ok(a) => break a,
                                    Err(e) if tries < 10 => {
                                        eprintln!("{cid}: {e} (retrying)");
                                        tries += 1;
                                    }
                                    Err(e) => panic!("{cid}: {e}"),
                                }
                            };
                            done.fetch_add(1, Ordering::SeqCst);
                            mine.push(a);
                        }
                        mine
                    })
                })
                .collect();
            // Kill the leader a quarter of the way in, then time the first
            // write that succeeds.
            let t0 = Instant::now();
            while done.load(Ordering::SeqCst) < THREADS * EACH / 4 {
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "allocations stalled"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            let leader = cref.leader().expect("a leader");
            let t = Instant::now();
            cref.kill(leader);
            *killed_at.lock().unwrap() = Some(t);
            let mut probe = s.pool(pool_cfg.clone()).unwrap();
            let first = loop {
                match probe.allocate("probe", "eth0") {
                    Ok(_) => break t.elapsed(),
                    Err(e) if t.elapsed() < Duration::from_secs(20) => eprintln!("probe: {e}"),
                    Err(e) => panic!("no write for 20 s after the kill: {e}"),
                }
            };
            println!(
                "killed leader m{leader}; failover (kill → first successful write): {first:?}"
            );
            let mut got: Vec<_> = workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect();
            got.push(probe.allocate("probe", "eth0").unwrap());
            println!(
                "{} allocations from {THREADS} threads in {:?} after the kill",
                got.len(),
                t.elapsed()
            );
            stop.store(true, Ordering::SeqCst);
            got
        });
        // The watch: every change, in order, each once.
        let mut events = Vec::new();
        let mut w = Watched::default();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && w.ips() < got.len() {
            if let Some(e) = watch.next(Duration::from_millis(500)).unwrap() {
                w.apply(&e);
                events.push(e);
            }
        }
        assert_eq!(pool.list().unwrap().len(), got.len());
        (got, (events, w), lease)
    });
    let (events, w) = events;
    // No allocation lost or duplicated: the pool is what the threads got.
    let addrs: HashSet<_> = got.iter().map(|a| a.addr).collect();
    assert_eq!(addrs.len(), got.len(), "an address given twice");
    assert_eq!(w.ips(), got.len(), "the watch saw every allocation");
    assert!(
        renewed_after_kill.load(Ordering::SeqCst) > 0,
        "renewals after the election"
    );
    println!(
        "watch: {} events, none repeated or lost; lease {} renewed {} times after the kill",
        events.len(),
        lease.subnet,
        renewed_after_kill.load(Ordering::SeqCst)
    );
    drop(c);
}

/// A watch cut off from etcd while the history it needs is compacted gets
/// a Resync with the full list; then the whole cluster restarts (all three
/// killed, started with their data) and every client goes on.
#[test]
fn etcd_cluster_watch_resync_after_compaction_and_whole_restart() {
    let Some(c) = start_cluster("clrs") else {
        return;
    };
    let cfg = PoolConfig::new("10.244.12.0/24".parse().unwrap());
    let cref = &c;
    let (s, mut pool, mut watch, mut leases) = c.run(|| {
        let s = cluster_store(cref);
        let mut pool = s.pool(cfg.clone()).unwrap();
        let watch = s.watch_prefix("pools/").unwrap();
        pool.allocate("c0", "eth0").unwrap();
        let mut leases = s.subnets(net16()).unwrap();
        leases
            .acquire("node-r", &NodeAttrs::default(), Duration::from_secs(30))
            .unwrap();
        (s, pool, watch, leases)
    });
    let mut w = Watched::default();
    let first = watch
        .next(Duration::from_secs(5))
        .unwrap()
        .expect("c0 seen");
    w.apply(&first);
    while let Some(e) = watch.next(Duration::from_millis(300)).unwrap() {
        w.apply(&e);
    }
    // Cut the client off; change and compact from a member's namespace.
    c.client.ip(&["link", "set", "eth0", "down"]);
    let urls = c.urls();
    let (cfg2, urls2) = (cfg.clone(), urls.clone());
    let compacted = common::etcd::in_ns(&c.members[0].ns, move || {
        let u: Vec<&str> = urls2.iter().map(String::as_str).collect();
        let s2 = EtcdStore::open(EtcdConfig::new(&u, "/cnet")).unwrap();
        let mut p2 = s2.pool(cfg2).unwrap();
        for i in 1..=5 {
            p2.allocate(&format!("c{i}"), "eth0").unwrap();
        }
        p2.release("c0", "eth0").unwrap();
        let agent = ureq::AgentBuilder::new().build();
        let v: serde_json::Value = agent
            .post(&format!("{}/v3/maintenance/status", urls2[0]))
            .send_json(serde_json::json!({}))
            .unwrap()
            .into_json()
            .unwrap();
        let rev: u64 = v["header"]["revision"].as_str().unwrap().parse().unwrap();
        agent
            .post(&format!("{}/v3/kv/compaction", urls2[0]))
            .send_json(serde_json::json!({ "revision": rev.to_string(), "physical": true }))
            .unwrap();
        rev
    });
    // Past the stream's idle bound (5 s here), so the watch has to
    // reconnect.
    std::thread::sleep(Duration::from_millis(5500));
    c.client.ip(&["link", "set", "eth0", "up"]);
    let t = Instant::now();
    let e = watch
        .next(Duration::from_secs(10))
        .unwrap()
        .expect("resync");
    println!(
        "watch resynced {:?} after the link came back (compacted at {compacted})",
        t.elapsed()
    );
    assert!(
        matches!(e, WatchEvent::Resync { revision, .. } if revision >= compacted),
        "{e:?}"
    );
    w.apply(&e);
    let now: HashSet<_> = c
        .run(|| pool.list().unwrap())
        .into_iter()
        .map(|a| a.addr)
        .collect();
    assert_eq!(w.ips(), now.len());
    assert_eq!(now.len(), 5);

    // The whole cluster down and up again with its data.
    for i in 0..3 {
        c.kill(i);
    }
    let t = Instant::now();
    for i in 0..3 {
        c.restart(i);
    }
    c.wait_leader("restart");
    let cref = &c;
    let (a, reconnect) = c.run(|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let a = loop {
            match pool.allocate("after", "eth0") {
                Ok(a) => break a,
                Err(e) if Instant::now() < deadline => eprintln!("after restart: {e}"),
                Err(e) => panic!("{e}"),
            }
        };
        let reconnect = t.elapsed();
        leases.renew("node-r", Duration::from_secs(30)).unwrap();
        let _ = cref;
        (a, reconnect)
    });
    println!("whole-cluster restart: first allocation {reconnect:?} after the members were started again");
    let mut seen = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen && Instant::now() < deadline {
        if let Some(e) = watch.next(Duration::from_millis(500)).unwrap() {
            w.apply(&e);
            seen = matches!(&e, WatchEvent::Put { value, .. } if String::from_utf8_lossy(value).contains(&a.addr.to_string()));
        }
    }
    assert!(seen, "the watch went on after the restart");
    drop(s);
}

/// A member cut off from its peers (nftables in its namespace drops the
/// peer port) while it still answers clients: the store and a watch that
/// started on it move to the others (etcd ends the watch stream through
/// require-leader; requests time out there or say "no leader").
#[test]
fn etcd_cluster_member_cut_off_from_peers_is_left_for_the_others() {
    let Some(c) = start_cluster("clcut") else {
        return;
    };
    let leader = c.leader().expect("a leader");
    let cut = (leader + 1) % 3;
    let mut urls = c.urls();
    urls.swap(0, cut); // the store and its watch start on the member to cut
    let cfg = PoolConfig::new("10.244.16.0/24".parse().unwrap());
    let cref = &c;
    c.run(|| {
        let u: Vec<&str> = urls.iter().map(String::as_str).collect();
        let s =
            EtcdStore::open(EtcdConfig::new(&u, "/cnet").timeout(Duration::from_secs(2))).unwrap();
        let mut pool = s.pool(cfg.clone()).unwrap();
        let mut watch = s.watch_prefix("pools/").unwrap();
        pool.allocate("c0", "eth0").unwrap();
        assert!(
            watch.next(Duration::from_secs(5)).unwrap().is_some(),
            "c0 seen"
        );
        while watch.next(Duration::from_millis(200)).unwrap().is_some() {}

        let ns = &cref.members[cut].ns;
        for rule in [
            "add table inet cut",
            "add chain inet cut in { type filter hook input priority 0 ; }",
            "add rule inet cut in tcp dport 2380 drop",
            "add rule inet cut in tcp sport 2380 drop",
        ] {
            let mut cmd = vec!["nft"];
            cmd.extend(rule.split(' '));
            assert!(ns.exec_ok(&cmd), "nft {rule}");
        }
        let t = Instant::now();
        let a = loop {
            match pool.allocate("c1", "eth0") {
                Ok(a) => break a,
                Err(e) if t.elapsed() < Duration::from_secs(20) => eprintln!("c1: {e}"),
                Err(e) => panic!("{e}"),
            }
        };
        println!("member m{cut} cut off: first write after {:?}", t.elapsed());
        let want = a.addr.to_string();
        let seen = loop {
            match watch.next(Duration::from_secs(1)).unwrap() {
                Some(WatchEvent::Put { value, .. })
                    if String::from_utf8_lossy(&value).contains(&want) =>
                {
                    break t.elapsed()
                }
                Some(_) => {}
                None => assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "watch stuck on m{cut}"
                ),
            }
        };
        println!("member m{cut} cut off: the watch saw the write after {seen:?}");
    });
}
