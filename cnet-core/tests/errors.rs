//! Errors that used to mislead, checked against the real kernel: a file
//! the process may not touch is `PermissionDenied` (not a bare `Io`), with
//! the path in its context. (The veth-peer and not-a-bridge cases live
//! with the other link tests in `links.rs`.)

mod common;

use cnet_core::Error;
use common::privileged;

/// Runs `f` on a thread whose user id alone is `nobody` (65534): the raw
/// `setresuid` system call changes the calling thread's credentials only
/// (glibc's wrapper would change every thread of the test process), and
/// dropping root clears its effective capabilities, CAP_DAC_OVERRIDE too.
fn as_nobody<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: a plain system call with integer arguments; it affects
        // only this short-lived thread, which exits right after `f`.
        let r = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
        assert_eq!(r, 0, "setresuid: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("unprivileged thread")
}

#[test]
fn file_store_in_a_forbidden_directory_is_permission_denied() {
    if !privileged() {
        return;
    }
    // Root-owned, mode 0700: nobody may not enter it.
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("ipam");
    let shown = store.display().to_string();
    let e = as_nobody(move || cnet_core::ipam::FileStore::open(&store).unwrap_err());
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    assert_eq!(e.errno(), Some(libc::EACCES));
    assert!(e.context().contains(&shown), "{e}");
    assert!(e.to_string().contains("permission denied"), "{e}");
    // As root the same directory works: the refusal was about rights.
    cnet_core::ipam::FileStore::open(dir.path().join("ipam")).unwrap();
}
