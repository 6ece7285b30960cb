//! Lets the `butterfly` binary find `libduckdb.so` next to it at run time: the store crate's build
//! script copies the prebuilt library into `target/<profile>/deps/` (see
//! `crates/store-duckdb/README.md`). Tests and `cargo run` find it there anyway; a binary started
//! directly needs the run path.
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN/deps:$ORIGIN");
    println!("cargo:rerun-if-changed=build.rs");
}
