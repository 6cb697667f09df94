//! The checked-in `include/oxccl.h` is what cbindgen makes from the sources: this fails when it
//! is stale. `OXCCL_BLESS=1 cargo test -p oxccl-capi --test header` rewrites it.

// Every unsafe block here calls a C entry point with buffers of the sizes the call reads and
// writes (NULL only where the call reads nothing), which is all those functions require.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::path::Path;

#[test]
fn header_is_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut fresh = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen runs on capi/src")
        .write(&mut fresh);
    let fresh = String::from_utf8(fresh).expect("UTF-8 header");
    let path = dir.join("include/oxccl.h");
    if std::env::var_os("OXCCL_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("writing include/oxccl.h");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "capi/include/oxccl.h is stale: regenerate it with \
         `OXCCL_BLESS=1 cargo test -p oxccl-capi --test header` and commit it"
    );
}

#[test]
fn version_constants_match_the_crate() {
    let v = |k: &str| -> i32 { k.parse().expect("numeric version") };
    let code = v(env!("CARGO_PKG_VERSION_MAJOR")) * 10000
        + v(env!("CARGO_PKG_VERSION_MINOR")) * 100
        + v(env!("CARGO_PKG_VERSION_PATCH"));
    assert_eq!(oxccl::OXCCL_VERSION_CODE, code);
    assert_eq!(
        oxccl::OXCCL_VERSION_CODE,
        oxccl::OXCCL_MAJOR * 10000 + oxccl::OXCCL_MINOR * 100 + oxccl::OXCCL_PATCH
    );
    let mut got = 0;
    // SAFETY: a valid int to write to.
    assert_eq!(
        unsafe { oxccl::oxcclGetVersion(&mut got) },
        oxccl::oxcclResult_t::oxcclSuccess
    );
    assert_eq!(got, code);
}

#[test]
fn pkg_config_file_has_the_crate_version() {
    let pc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("oxccl.pc"))
        .expect("capi/oxccl.pc");
    let want = format!("Version: {}", env!("CARGO_PKG_VERSION"));
    assert!(pc.lines().any(|l| l == want), "oxccl.pc lacks {want:?}");
}
