//! Finds the official atproto interop vectors for conformance tests, in one place.
//!
//! The vectors live in `shared/interop` beside the workspace (`../shared/interop` from its root). The
//! environment variable `BUTTERFLY_INTEROP_DIR` overrides that. A missing folder fails the test with a
//! message saying how to fix it: conformance tests are never skipped.

use std::path::PathBuf;

/// The folder `sub` of the interop vectors (`"syntax"`, `"crypto"`, `"mst"`, ...). Panics with a clear
/// message if it does not exist.
pub fn folder(sub: &str) -> PathBuf {
    let base = match std::env::var_os("BUTTERFLY_INTEROP_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/interop"
        )),
    };
    let dir = base.join(sub);
    assert!(
        dir.is_dir(),
        "interop vectors not found at {}: put shared/ beside the workspace or set BUTTERFLY_INTEROP_DIR \
         to the interop folder",
        dir.display()
    );
    dir
}
