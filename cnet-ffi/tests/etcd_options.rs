//! `cnet_ipam_store_open_etcd_with`: the TLS and auth options through the
//! C ABI. Bad options are refused before any request; against a real etcd
//! (Debian `etcd-server`, in a throwaway namespace cn-ffe-*, auth enabled
//! with curl) the right password opens the store and a wrong one is
//! `CNET_PERMISSION_DENIED` whose message never holds the password. The
//! server part runs as root only, and says so otherwise.
#![cfg(feature = "etcd")]

use std::ffi::{c_char, CStr, CString};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::ptr::{null, null_mut};
use std::time::{Duration, Instant};

use cnet::boundary::*;
use cnet::ipam::*;

const PASSWORD: &str = "ffi-pw-never-shown-7Qx";

fn opts() -> cnet_etcd_options {
    cnet_etcd_options {
        ca_file: null(),
        cert_file: null(),
        key_file: null(),
        username: null(),
        password: null(),
    }
}

/// Open with `o`; the result code and the error message (freed).
fn open(url: &str, o: Option<&cnet_etcd_options>) -> (cnet_result, String) {
    let url = CString::new(url).unwrap();
    let eps = [url.as_ptr()];
    let mut store = null_mut();
    let mut err = null_mut();
    let rc = cnet_ipam_store_open_etcd_with(
        eps.as_ptr(),
        1,
        c"/cnet".as_ptr(),
        1000,
        o.map_or(null(), |o| o as *const _),
        &mut store,
        &mut err,
    );
    let msg = if err.is_null() {
        String::new()
    } else {
        // SAFETY: a live error's message is a NUL-terminated string.
        let m = unsafe { CStr::from_ptr(cnet_error_message(err)) }
            .to_string_lossy()
            .into_owned();
        cnet_error_free(err);
        m
    };
    assert_eq!(
        rc == CNET_OK,
        !store.is_null(),
        "out written only on success"
    );
    cnet_ipam_store_free(store);
    (rc, msg)
}

#[test]
fn etcd_options_are_checked_before_connecting() {
    let url = "http://127.0.0.1:1";
    let pw = CString::new(PASSWORD).unwrap();
    let mut o = opts();
    o.password = pw.as_ptr();
    let (rc, msg) = open(url, Some(&o));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("without options.username"), "{msg}");
    assert!(!msg.contains(PASSWORD));

    let mut o = opts();
    o.cert_file = c"/nonexistent/client.pem".as_ptr();
    let (rc, msg) = open(url, Some(&o));
    assert_eq!(rc, CNET_INVALID_ARGUMENT, "certificate without key: {msg}");

    let mut o = opts();
    o.ca_file = c"/nonexistent/ca.pem".as_ptr();
    let (rc, msg) = open(url, Some(&o));
    assert_ne!(rc, CNET_OK);
    assert!(msg.contains("/nonexistent/ca.pem"), "{msg}");

    let bad: &[u8] = b"\xff\xfe\0";
    let mut o = opts();
    o.username = bad.as_ptr().cast::<c_char>();
    assert_eq!(open(url, Some(&o)).0, CNET_INVALID_UTF8);

    // NULL options and all-NULL options: plain cnet_ipam_store_open_etcd
    // (nothing listens on port 1).
    assert_ne!(open(url, None).0, CNET_OK);
    assert_ne!(open(url, Some(&opts())).0, CNET_OK);
}

/// etcd in a namespace of its own (killed, namespace deleted on drop).
struct Etcd {
    ns: String,
    child: Child,
    _dir: tempfile_dir::Dir,
}

mod tempfile_dir {
    /// A directory removed on drop (no tempfile dev-dependency here).
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

impl Etcd {
    fn start() -> Option<Etcd> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED etcd server part: not root");
            return None;
        }
        if !Command::new("sh")
            .args(["-c", "command -v etcd"])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "no etcd binary; CI installs etcd-server"
            );
            eprintln!("SKIPPED etcd server part: no etcd binary");
            return None;
        }
        let ns = format!("cn-ffe-{}", std::process::id());
        assert!(Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap()
            .success());
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        };
        let dir = tempfile_dir::Dir(format!("{base}/{ns}").into());
        let log = {
            std::fs::create_dir_all(&dir.0).unwrap();
            std::fs::File::create(dir.0.join("etcd.log")).unwrap()
        };
        let url = "http://127.0.0.1:2379";
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(["sh", "-c", "ip link set lo up && exec \"$@\"", "sh", "etcd"])
            .args(["--data-dir", &dir.0.join("data").display().to_string()])
            .args(["--listen-client-urls", url, "--advertise-client-urls", url])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let e = Etcd {
            ns,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !e.curl("/v3/maintenance/status", "{}").contains("header") {
            assert!(Instant::now() < deadline, "etcd did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(e)
    }

    /// curl in the namespace (the independent client): the reply body.
    fn curl(&self, path: &str, body: &str) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .args([
                "curl",
                "-sS",
                "-d",
                body,
                &format!("http://127.0.0.1:2379{path}"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `f` on a thread in the namespace (the caller's stays as it is).
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).unwrap();
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }
}

#[test]
fn etcd_options_user_password_through_the_abi() {
    let Some(etcd) = Etcd::start() else {
        return;
    };
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
        let out = etcd.curl(path, &body);
        assert!(!out.contains("\"error\""), "{path}: {out}");
    }
    let url = "http://127.0.0.1:2379";
    let pw = CString::new(PASSWORD).unwrap();
    etcd.run(|| {
        let mut o = opts();
        o.username = c"root".as_ptr();
        o.password = pw.as_ptr();
        let (rc, msg) = open(url, Some(&o));
        assert_eq!(rc, CNET_OK, "{msg}");

        o.password = c"wrong".as_ptr();
        let (rc, msg) = open(url, Some(&o));
        assert_eq!(rc, CNET_PERMISSION_DENIED, "{msg}");
        assert!(msg.contains("user name or password"), "{msg}");
        assert!(!msg.contains("wrong"), "{msg}");
        assert!(!msg.contains(PASSWORD), "{msg}");
        println!("wrong password: {msg}");

        let (rc, msg) = open(url, None);
        assert_eq!(rc, CNET_PERMISSION_DENIED, "no user: {msg}");
    });
}
