//! Finds a prebuilt libduckdb to link and run against, so that a plain `cargo build` takes
//! seconds instead of compiling DuckDB for half an hour. See README.md.
//!
//! - With the `bundled` feature, duckdb-rs compiles DuckDB itself and this script does nothing.
//! - With `DUCKDB_LIB_DIR` set, libduckdb-sys links from there; this script only copies the
//!   library next to the test binaries.
//! - Otherwise, on Linux x86-64, it fetches DuckDB's own build from the npm package
//!   `@duckdb/node-bindings-linux-x64` (once, into `<target>/butterfly-duckdb/<version>/` or
//!   `BUTTERFLY_DUCKDB_CACHE`), checks the package's sha512, and links against it.
//!
//! In the last two cases the library is also copied into `target/<profile>/deps/`: cargo puts
//! that folder on the library path of `cargo test` and `cargo run`, and a binary in
//! `target/<profile>/` finds it through an rpath of `$ORIGIN/deps`.

use std::env;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use sha2::{Digest, Sha512};

/// The npm package that carries DuckDB's release build of libduckdb for Linux x86-64. Its
/// version is DuckDB's, plus a packaging revision.
const PACKAGE: &str = "@duckdb/node-bindings-linux-x64";
const PACKAGE_VERSION: &str = "1.5.6-r.1";
const TARBALL_URL: &str =
    "https://registry.npmjs.org/@duckdb/node-bindings-linux-x64/-/node-bindings-linux-x64-1.5.6-r.1.tgz";
/// The registry's `dist.integrity` for that tarball.
const INTEGRITY: &str =
    "sha512-IXcrZJE6kEqM0Z4wwdVnGBHX/frOS33VPNAwDXQ/Q+Fs84b058Qe94chrCCIcNJlG8Y3UHIUU4eBeCQxW5mN1Q==";
const LIBRARY: &str = "libduckdb.so";
const LIBRARY_IN_TARBALL: &str = "package/libduckdb.so";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    println!("cargo:rerun-if-env-changed=BUTTERFLY_DUCKDB_CACHE");
    // docs.rs builds documentation without network access, and needs no library for it.
    if env::var_os("CARGO_FEATURE_BUNDLED").is_some() || env::var_os("DOCS_RS").is_some() {
        return;
    }
    if let Err(message) = run() {
        eprintln!("error: butterfly-store-duckdb: {message}");
        eprintln!(
            "help: point DUCKDB_LIB_DIR at a folder holding {LIBRARY} (DuckDB 1.5.x), or build \
             DuckDB from source with `--features butterfly-store-duckdb/bundled` (slow)"
        );
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    // OUT_DIR is <target>/[<triple>/]<profile>/build/<package>-<hash>/out.
    let profile_dir = profile_dir(&out_dir).ok_or_else(|| {
        format!(
            "cannot find the target folder from OUT_DIR {}",
            out_dir.display()
        )
    })?;

    let library = match env::var_os("DUCKDB_LIB_DIR") {
        // libduckdb-sys emits the link flags for this folder itself.
        Some(dir) => {
            let library = Path::new(&dir).join(LIBRARY);
            if !library.is_file() {
                return Err(format!(
                    "DUCKDB_LIB_DIR is {}, which has no {LIBRARY}",
                    Path::new(&dir).display()
                ));
            }
            library
        }
        None => {
            check_platform()?;
            let cache = match env::var_os("BUTTERFLY_DUCKDB_CACHE") {
                Some(dir) => PathBuf::from(dir),
                None => profile_dir
                    .parent()
                    .ok_or("the profile folder has no parent")?
                    .join("butterfly-duckdb")
                    .join(PACKAGE_VERSION),
            };
            let library = fetch(&cache)?;
            println!("cargo:rustc-link-search=native={}", cache.display());
            library
        }
    };

    let deps = profile_dir.join("deps");
    copy_if_changed(&library, &deps.join(LIBRARY))?;

    // This package's tests and benches are built into deps/, next to the copy, and can then run
    // without cargo. A binary crate that depends on us adds `-Wl,-rpath,$ORIGIN/deps` for itself
    // (see README.md): build scripts cannot set link arguments for other packages.
    println!("cargo:rustc-link-arg-tests=-Wl,-rpath,$ORIGIN");
    println!("cargo:rustc-link-arg-benches=-Wl,-rpath,$ORIGIN");
    Ok(())
}

/// `<target>/[<triple>/]<profile>` from `<that>/build/<package>-<hash>/out`.
fn profile_dir(out_dir: &Path) -> Option<PathBuf> {
    if out_dir.file_name()? != "out" {
        return None;
    }
    let build_dir = out_dir.parent()?.parent()?;
    if build_dir.file_name()? != "build" {
        return None;
    }
    Some(build_dir.parent()?.to_path_buf())
}

fn check_platform() -> Result<(), String> {
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let abi = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if (os.as_str(), arch.as_str(), abi.as_str()) == ("linux", "x86_64", "gnu") {
        Ok(())
    } else {
        Err(format!(
            "no prebuilt libduckdb is fetched for this target ({arch}-{os}-{abi}); only \
             x86_64-linux-gnu is"
        ))
    }
}

/// The library in `cache`, downloading and unpacking it first if it is not there.
fn fetch(cache: &Path) -> Result<PathBuf, String> {
    let library = cache.join(LIBRARY);
    if library.is_file() {
        return Ok(library);
    }
    fs::create_dir_all(cache)
        .map_err(|err| format!("cannot create the cache folder {}: {err}", cache.display()))?;

    // Another build (debug and release at once, say) may be fetching into the same folder:
    // work under names of our own and rename into place, which is atomic.
    let unique = format!("{}", std::process::id());
    let tarball = download(cache, &unique)?;
    let result = check_integrity(&tarball).and_then(|()| unpack(&tarball, &library, &unique));
    let _ = fs::remove_file(&tarball);
    result?;
    Ok(library)
}

/// Downloads the tarball into `cache` with curl, or with `npm pack` if curl is missing.
fn download(cache: &Path, unique: &str) -> Result<PathBuf, String> {
    let tarball = cache.join(format!("package-{unique}.tgz"));
    let curl = Command::new("curl")
        .args(["--fail", "--silent", "--show-error", "--location"])
        .args(["--retry", "3", "--connect-timeout", "30", "--output"])
        .arg(&tarball)
        .arg(TARBALL_URL)
        .status();
    match curl {
        Ok(status) if status.success() => return Ok(tarball),
        Ok(status) => return Err(format!("curl could not download {TARBALL_URL} ({status})")),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(format!("cannot run curl: {err}")),
    }

    // No curl: npm writes the tarball into a folder of our own, under its own name.
    let npm_dir = cache.join(format!("npm-{unique}"));
    fs::create_dir_all(&npm_dir)
        .map_err(|err| format!("cannot create {}: {err}", npm_dir.display()))?;
    let spec = format!("{PACKAGE}@{PACKAGE_VERSION}");
    let npm = Command::new("npm")
        .args(["pack", "--silent", &spec, "--pack-destination"])
        .arg(&npm_dir)
        .status();
    let found = match npm {
        Ok(status) if status.success() => fs::read_dir(&npm_dir)
            .ok()
            .and_then(|mut entries| entries.next())
            .and_then(|entry| entry.ok())
            .map(|entry| entry.path()),
        Ok(status) => {
            let _ = fs::remove_dir_all(&npm_dir);
            return Err(format!("`npm pack {spec}` failed ({status})"));
        }
        Err(err) => {
            let _ = fs::remove_dir_all(&npm_dir);
            return Err(format!(
                "cannot download {TARBALL_URL}: neither curl nor npm can be run ({err})"
            ));
        }
    };
    let result = match found {
        Some(path) => fs::rename(&path, &tarball).map_err(|err| err.to_string()),
        None => Err(format!("`npm pack {spec}` wrote no tarball")),
    };
    let _ = fs::remove_dir_all(&npm_dir);
    result.map(|()| tarball)
}

fn check_integrity(tarball: &Path) -> Result<(), String> {
    let bytes =
        fs::read(tarball).map_err(|err| format!("cannot read {}: {err}", tarball.display()))?;
    let digest = Sha512::digest(&bytes);
    let found = format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    );
    if found == INTEGRITY {
        Ok(())
    } else {
        Err(format!(
            "{TARBALL_URL} has integrity {found}, expected {INTEGRITY}"
        ))
    }
}

/// Extracts the library from the tarball to `library`.
fn unpack(tarball: &Path, library: &Path, unique: &str) -> Result<(), String> {
    let file = fs::File::open(tarball)
        .map_err(|err| format!("cannot open {}: {err}", tarball.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = archive
        .entries()
        .map_err(|err| format!("cannot read {}: {err}", tarball.display()))?;
    for entry in entries {
        let mut entry = entry.map_err(|err| format!("cannot read {}: {err}", tarball.display()))?;
        let is_library = entry
            .path()
            .map(|path| path == Path::new(LIBRARY_IN_TARBALL))
            .unwrap_or(false);
        if !is_library {
            continue;
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|err| format!("cannot unpack {LIBRARY_IN_TARBALL}: {err}"))?;
        let partial = library.with_extension(format!("so.{unique}"));
        fs::write(&partial, &bytes)
            .and_then(|()| fs::rename(&partial, library))
            .map_err(|err| format!("cannot write {}: {err}", library.display()))?;
        return Ok(());
    }
    Err(format!("{TARBALL_URL} holds no {LIBRARY_IN_TARBALL}"))
}

/// Copies `from` to `to` unless `to` already has the same bytes. The copy goes to a temporary
/// name first, so that a test binary running from the old file is not disturbed.
fn copy_if_changed(from: &Path, to: &Path) -> Result<(), String> {
    let source = fs::read(from).map_err(|err| format!("cannot read {}: {err}", from.display()))?;
    if fs::read(to).is_ok_and(|existing| existing == source) {
        return Ok(());
    }
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    }
    let partial = to.with_extension(format!("so.{}", std::process::id()));
    fs::write(&partial, &source)
        .and_then(|()| fs::rename(&partial, to))
        .map_err(|err| format!("cannot copy {} to {}: {err}", from.display(), to.display()))
}
