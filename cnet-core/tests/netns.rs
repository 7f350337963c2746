//! Namespaces and per-namespace sysctls, checked against `ip netns` and
//! `sysctl` run inside the namespace.

mod common;

use cnet_core::{Error, Handle, NetNs};
use common::{privileged, run, TestNs};

#[test]
fn create_is_visible_to_ip_netns_and_delete_is_idempotent() {
    if !privileged() {
        return;
    }
    let name = format!("cn-nscreate-{}", std::process::id());
    let ns = NetNs::create(&name).unwrap();
    assert!(run("ip", &["netns", "list"])
        .lines()
        .any(|l| l.split_whitespace().next() == Some(&name)));
    assert!(NetNs::list().unwrap().contains(&name));
    // `ip -n NAME` works in it.
    run("ip", &["-n", &name, "link", "set", "lo", "up"]);
    let again = NetNs::create(&name).unwrap_err();
    assert!(matches!(again, Error::AlreadyExists { .. }), "{again:?}");
    assert_eq!(
        ns.inode().unwrap(),
        NetNs::open(&name).unwrap().inode().unwrap()
    );
    assert_ne!(
        ns.inode().unwrap(),
        NetNs::current().unwrap().inode().unwrap()
    );
    drop(ns);
    assert!(NetNs::delete(&name).unwrap());
    assert!(
        !NetNs::delete(&name).unwrap(),
        "deleting a gone namespace succeeds"
    );
    assert!(!run("ip", &["netns", "list"]).contains(&name));
    assert!(NetNs::open(&name).unwrap_err().is_not_found());
}

#[test]
fn namespaces_made_by_ip_are_opened_by_name_and_by_path() {
    if !privileged() {
        return;
    }
    let name = format!("cn-byip-{}", std::process::id());
    run("ip", &["netns", "add", &name]);
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = NetNs::delete(&self.0);
        }
    }
    let _g = Gone(name.clone());
    run(
        "ip",
        &["-n", &name, "link", "add", "seen0", "type", "bridge"],
    );
    let h = Handle::named(&name).unwrap();
    assert!(h.links().find("seen0").unwrap().is_some());
    let by_path = Handle::at(&NetNs::open_path(format!("/run/netns/{name}")).unwrap()).unwrap();
    assert!(by_path.links().find("seen0").unwrap().is_some());
}

#[test]
fn open_by_pid_sees_that_process_namespace() {
    if !privileged() {
        return;
    }
    let t = TestNs::new("pid");
    t.ip(&["link", "add", "pidbr0", "type", "bridge"]);
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &t.name, "sleep", "5"])
        .spawn()
        .unwrap();
    // `ip netns exec` execs sleep in the namespace; wait until it has.
    let pid = child.id();
    let want = t.ns.inode().unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(ns) = NetNs::open_pid(pid) {
            if ns.inode().unwrap() == want {
                ok = Handle::at(&ns)
                    .unwrap()
                    .links()
                    .find("pidbr0")
                    .unwrap()
                    .is_some();
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "namespace of pid {pid} not seen");
}

#[test]
fn bad_namespace_names() {
    for bad in ["", "a/b", "..", "a b"] {
        let e = NetNs::create(bad).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{bad:?}: {e:?}");
    }
}

#[test]
fn sysctls_are_per_namespace() {
    if !privileged() {
        return;
    }
    let root_fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let t = TestNs::new("sysctl");
    let h = t.handle();
    h.sysctl().set_ip_forward(true).unwrap();
    assert!(h.sysctl().ip_forward().unwrap());
    let seen = run(
        "ip",
        &[
            "netns",
            "exec",
            &t.name,
            "sysctl",
            "-n",
            "net.ipv4.ip_forward",
        ],
    );
    assert_eq!(seen.trim(), "1");
    h.links().add(cnet_core::link::Bridge::new("br.0")).unwrap();
    h.sysctl().set_rp_filter("br.0", 2).unwrap();
    h.sysctl().set_proxy_arp("br.0", true).unwrap();
    h.sysctl().set_accept_dad("br.0", 0).unwrap();
    assert_eq!(h.sysctl().rp_filter("br.0").unwrap(), 2);
    let seen = run(
        "ip",
        &[
            "netns",
            "exec",
            &t.name,
            "cat",
            "/proc/sys/net/ipv4/conf/br.0/proxy_arp",
        ],
    );
    assert_eq!(seen.trim(), "1");
    h.sysctl().set_ip_forward(false).unwrap();
    assert!(!h.sysctl().ip_forward().unwrap());
    // The root namespace is untouched.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        root_fwd
    );
    let e = h.sysctl().set_rp_filter("br.0", 7).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }));
    let e = h.sysctl().get("kernel.hostname").unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }));
    let e = h.sysctl().rp_filter("nope0").unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
}

/// A sysctl of the namespace the calling thread is in is read in place
/// (no thread), of another one through a thread that enters it: a thread
/// standing in namespace A sees A's value for A and B's for B, and its own
/// namespace stays A.
#[test]
fn sysctls_read_the_asked_namespace_from_a_thread_in_another_or_the_same() {
    if !privileged() {
        return;
    }
    let (a, b) = (TestNs::new("sysa"), TestNs::new("sysb"));
    a.handle().sysctl().set_ip_forward(true).unwrap();
    b.handle().sysctl().set_ip_forward(false).unwrap();
    let path = format!("/run/netns/{}", a.name);
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let (ha, hb) = (a.handle(), b.handle());
            assert!(ha.sysctl().ip_forward().unwrap(), "A, read in place");
            assert!(!hb.sysctl().ip_forward().unwrap(), "B, through a thread");
            hb.sysctl().set_ip_forward(true).unwrap();
            let own = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
            assert_eq!(own.trim(), "1", "still in A");
        })
        .join()
        .unwrap();
    });
    assert!(b.handle().sysctl().ip_forward().unwrap(), "written in B");
}
