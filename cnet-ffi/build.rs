//! Sets the soname of libcnet.so the way cargo-c does: `libcnet.so.MAJOR`,
//! or `libcnet.so.0.MINOR` while the version is 0.x (every 0.x minor may
//! break the ABI). scripts/install-ffi installs the library under that name.

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    let minor = std::env::var("CARGO_PKG_VERSION_MINOR").unwrap_or_else(|_| "0".into());
    let soname = if major == "0" {
        format!("libcnet.so.0.{minor}")
    } else {
        format!("libcnet.so.{major}")
    };
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    println!("cargo:rerun-if-changed=build.rs");
}
