//! `butterfly sync` / `query` / `status` before any network: selector errors, the config file,
//! and databases that are missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn butterfly(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_butterfly"))
        .args(args)
        .current_dir(dir)
        .env_remove("BUTTERFLY_CONFIG")
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn selector_mistakes_are_reported_with_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.json"),
        r#"{"select": [{"where": {"repo": "folowed"}, "tag": "a"}], "retain": {"a": {"app.b*": "latest:0"}}}"#,
    )
    .unwrap();
    let output = butterfly(dir.path(), &["sync", "bad.json", "--once"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("select[0].where.repo"), "{message}");
    assert!(message.contains("retain.a"), "{message}");
}

#[test]
fn butterfly_toml_feeds_the_flags_and_unknown_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sel.json"),
        r#"{"select": [{"where": {"repo": "did:plc:ewvi7nxzyoun6zhxrhs64oiz"}, "tag": "a"}]}"#,
    )
    .unwrap();
    // A value from the file reaches the flag's parser.
    std::fs::write(dir.path().join("butterfly.toml"), "verify = \"sloppy\"\n").unwrap();
    let output = butterfly(dir.path(), &["sync", "sel.json", "--once"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("sloppy"), "{}", stderr(&output));
    // A flag wins over the file.
    std::fs::write(
        dir.path().join("butterfly.toml"),
        "store = \"nowhere:x\"\nverify = \"strict\"\n",
    )
    .unwrap();
    let output = butterfly(
        dir.path(),
        &["sync", "sel.json", "--once", "--store", "duckdb:"],
    );
    assert!(
        stderr(&output).contains("needs a path"),
        "{}",
        stderr(&output)
    );
    // Unknown settings are named.
    std::fs::write(dir.path().join("butterfly.toml"), "relai = \"x\"\n").unwrap();
    let output = butterfly(dir.path(), &["sync", "sel.json", "--once"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("unknown setting `relai`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn live_sync_needs_a_source() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sel.json"),
        r#"{"select": [{"where": {"repo": "did:plc:ewvi7nxzyoun6zhxrhs64oiz"}, "tag": "a"}]}"#,
    )
    .unwrap();
    let output = butterfly(dir.path(), &["sync", "sel.json", "--store", "stdout"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--relay"), "{}", stderr(&output));
}

#[test]
fn query_and_status_need_a_database() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["query", "SELECT 1"][..], &["status"][..]] {
        let output = butterfly(dir.path(), args);
        assert_eq!(output.status.code(), Some(2));
        assert!(
            stderr(&output).contains("butterfly.duckdb does not exist"),
            "{}",
            stderr(&output)
        );
    }
}

#[test]
fn once_gives_up_on_a_seed_that_never_resolves() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sel.json"),
        r#"{"select": [{"where": {"repo": "at://nobody.test"}, "tag": "a"}]}"#,
    )
    .unwrap();
    // Nothing listens on port 1 of loopback: every lookup is refused at once.
    let output = butterfly(
        dir.path(),
        &[
            "sync",
            "sel.json",
            "--once",
            "--store",
            "stdout",
            "--plc",
            "http://127.0.0.1:1",
            "--handle-resolver",
            "http://127.0.0.1:1",
            "--allow-private-network",
            "-q",
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("select[0]") && stderr(&output).contains("gave up"),
        "{}",
        stderr(&output)
    );
}
