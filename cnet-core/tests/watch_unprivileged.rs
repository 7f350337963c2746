//! Reads without privilege: a thread that gave up root (uid 65534, no
//! capabilities) lists links, addresses, routes and neighbours of its own
//! namespace and watches it, as `ip` and `ip monitor` do; a change is
//! refused with a typed `PermissionDenied`.

mod common;

use std::time::{Duration, Instant};

use cnet_core::link::Veth;
use cnet_core::watch::{Change, Event, Groups, Watch, WatchConfig};
use cnet_core::{Error, Handle, NetNs};
use common::{privileged, TestNs};

/// Drop this thread (only) to uid/gid 65534: the raw syscalls change the
/// calling thread's credentials, unlike glibc's wrappers, which change
/// every thread of the process. Leaving uid 0 clears the capabilities.
fn drop_privileges_of_this_thread() {
    // SAFETY: plain syscalls with integer arguments; they affect only the
    // calling thread's credentials.
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534), 0);
        assert_eq!(libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534), 0);
    }
}

#[test]
fn watch_unprivileged_thread_reads_and_watches_its_own_namespace() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("wup");
    let root = t.handle();
    root.links().add(Veth::new("v0", "v1").up()).unwrap();
    root.links().set_up("v1").unwrap();
    root.addrs()
        .add("v0", "192.0.2.11/24".parse().unwrap())
        .unwrap();
    root.neighbours()
        .add(cnet_core::neigh::Neighbour::new(
            "v0",
            "192.0.2.12".parse().unwrap(),
            "02:00:00:00:00:12".parse().unwrap(),
        ))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let target = t.ns.clone();
    let worker = std::thread::spawn(move || {
        // Enter the test namespace while still root, then give root up.
        nix::sched::setns(&target, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        drop_privileges_of_this_thread();
        let own = NetNs::open_path("/proc/thread-self/ns/net").unwrap();
        // Entering a namespace is no longer allowed…
        let e = own.run(|| ()).unwrap_err();
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e}");
        // …but its own needs no entering.
        let h = Handle::at(&own).unwrap();
        let links = h.links().list().unwrap();
        assert!(links.iter().any(|l| l.name == "v0"), "{links:?}");
        let addrs = h.addrs().list(Some("v0")).unwrap();
        assert_eq!(addrs[0].local.to_string(), "192.0.2.11/24");
        let routes = h.routes().list(&Default::default()).unwrap();
        assert!(routes.iter().any(|r| r.dst.to_string() == "192.0.2.0/24"));
        let neigh = h.neighbours().list(Some("v0"), None).unwrap();
        assert!(neigh.iter().any(|n| n.ip.to_string() == "192.0.2.12"));
        // Changes are refused, with a typed error.
        let e = h.links().set_down("v0").unwrap_err();
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e}");
        // Watching works too (rtnetlink lets anyone join its groups).
        let mut w = Watch::open(&own, WatchConfig::new(Groups::ROUTES)).unwrap();
        tx.send(()).unwrap();
        go_rx.recv().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(Event::Route(Change::New, r)) = w.next(Duration::from_millis(100)).unwrap()
            {
                if r.dst.to_string() == "10.7.0.0/16" {
                    return;
                }
            }
        }
        panic!("the unprivileged watch saw no route event");
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("worker ready");
    t.ip(&["route", "add", "10.7.0.0/16", "via", "192.0.2.12"]);
    go_tx.send(()).unwrap();
    worker.join().unwrap();
}
