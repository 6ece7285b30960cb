//! End-to-end tests of the `butterfly` binary, run in a temporary folder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use butterfly_data::Cid;
use butterfly_repo::car::{CarReader, CarWriter};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    fn new() -> Run {
        Run {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn butterfly(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_butterfly"))
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.butterfly(args);
        assert!(
            output.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn sim_repo(&self, name: &str, records: u64, seed: u64) -> Json {
        let out = self.ok(&[
            "sim",
            "repo",
            "--records",
            &records.to_string(),
            "--seed",
            &seed.to_string(),
            "--out",
            &format!("{name}.car"),
            "--did-doc-out",
            &format!("{name}.json"),
            "--did-key-out",
            &format!("{name}.key"),
        ]);
        serde_json::from_str(&out).unwrap()
    }

    fn inspect(&self, args: &[&str]) -> Json {
        let mut all = vec!["car", "inspect", "--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
}

#[test]
fn sim_then_inspect_a_complete_signed_repo() {
    let run = Run::new();
    let summary = run.sim_repo("a", 2000, 9);
    let report = run.inspect(&["a.car", "--did-doc", "a.json"]);
    assert_eq!(report["root"], summary["root"]);
    assert_eq!(report["did"], summary["did"]);
    assert_eq!(report["rev"], summary["rev"]);
    assert_eq!(report["data"], summary["data"]);
    assert_eq!(report["version"], 3);
    assert_eq!(report["records"], 2000);
    assert_eq!(report["blocks"], summary["blocks"]);
    assert_eq!(report["missing_blocks"], 0);
    assert_eq!(report["complete"], true);
    assert_eq!(report["signature"], "valid");
    let collections = report["collections"].as_object().unwrap();
    assert_eq!(collections["app.bsky.actor.profile"], 1);
    assert_eq!(
        collections
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        2000
    );
    assert!(collections.len() >= 5, "{collections:?}");
    assert_eq!(run.inspect(&["a.car"])["signature"], "unchecked");
    let key = std::fs::read_to_string(run.path("a.key")).unwrap();
    assert_eq!(key.trim(), summary["did_key"].as_str().unwrap());
}

#[test]
fn signature_verdicts() {
    let run = Run::new();
    let a = run.sim_repo("a", 50, 1);
    run.sim_repo("b", 50, 2);
    // Another repo's document: another DID.
    assert_eq!(
        run.inspect(&["a.car", "--did-doc", "b.json"])["signature"],
        "did-mismatch"
    );
    // The right DID with someone else's key.
    let b_doc: Json =
        serde_json::from_str(&std::fs::read_to_string(run.path("b.json")).unwrap()).unwrap();
    let forged = b_doc
        .to_string()
        .replace(b_doc["id"].as_str().unwrap(), a["did"].as_str().unwrap());
    std::fs::write(run.path("forged.json"), forged).unwrap();
    assert_eq!(
        run.inspect(&["a.car", "--did-doc", "forged.json"])["signature"],
        "invalid"
    );
}

#[test]
fn sim_is_deterministic() {
    let run = Run::new();
    run.sim_repo("x", 300, 5);
    run.sim_repo("y", 300, 5);
    run.sim_repo("z", 300, 6);
    let read = |name: &str| std::fs::read(run.path(name)).unwrap();
    assert_eq!(read("x.car"), read("y.car"));
    assert_ne!(read("x.car"), read("z.car"));
}

#[test]
fn records_lists_every_record_in_key_order() {
    let run = Run::new();
    let summary = run.sim_repo("a", 500, 3);
    let out = run.ok(&["car", "records", "a.car"]);
    let lines: Vec<Json> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 500);
    let did = summary["did"].as_str().unwrap();
    let mut previous = String::new();
    for line in &lines {
        let uri = line["uri"].as_str().unwrap();
        let parsed = butterfly_syntax::AtUri::parse(uri).unwrap();
        assert_eq!(parsed.authority().to_string(), did);
        let path = uri.trim_start_matches(&format!("at://{did}/")).to_owned();
        assert!(path > previous, "{path} after {previous}");
        previous = path;
        let value = butterfly_data::Value::record_from_json(&line["value"]).unwrap();
        assert_eq!(
            value.cid().to_string(),
            line["cid"].as_str().unwrap(),
            "{uri}"
        );
        assert_eq!(
            value.record_type(),
            Some(parsed.collection().unwrap().as_str())
        );
    }
}

/// Rewrites a CAR without the blocks `drop` selects; returns how many were dropped.
fn drop_blocks(from: &Path, to: &Path, drop: impl Fn(usize, &Cid, &[u8]) -> bool) -> usize {
    let bytes = std::fs::read(from).unwrap();
    let reader = CarReader::new(bytes.as_slice()).unwrap();
    let roots = reader.header().roots.clone();
    let mut writer = CarWriter::new(std::fs::File::create(to).unwrap(), &roots).unwrap();
    let mut n_dropped = 0;
    for (index, block) in reader.enumerate() {
        let block = block.unwrap();
        if drop(index, &block.cid, &block.data) {
            n_dropped += 1;
        } else {
            writer.write_block(&block.cid, &block.data).unwrap();
        }
    }
    writer.finish().unwrap();
    n_dropped
}

#[test]
fn partial_repo_is_inspected_and_missing_records_are_null() {
    let run = Run::new();
    run.sim_repo("a", 1000, 4);
    // Drop every 10th record block (records are the blocks that are not MST nodes or the commit).
    let is_node = |data: &[u8]| data.starts_with(&[0xa2, 0x61, b'e']);
    let n_dropped = drop_blocks(
        &run.path("a.car"),
        &run.path("partial.car"),
        |index, _, data| index > 0 && !is_node(data) && index % 10 == 0,
    );
    assert!(n_dropped > 10);
    let report = run.inspect(&["partial.car", "--did-doc", "a.json"]);
    assert_eq!(report["missing_blocks"], n_dropped);
    assert_eq!(report["complete"], false);
    assert_eq!(report["records"], 1000);
    assert_eq!(report["signature"], "valid");
    let out = run.ok(&["car", "records", "partial.car"]);
    let n_null = out
        .lines()
        .filter(|line| line.ends_with("\"value\":null}"))
        .count();
    assert_eq!(n_null, n_dropped);

    // Without one MST node the walk reports a missing subtree and skips its records.
    drop_blocks(
        &run.path("a.car"),
        &run.path("no-node.car"),
        |index, _, data| index == 2 && is_node(data),
    );
    let report = run.inspect(&["no-node.car"]);
    assert_eq!(report["complete"], false);
    assert!(report["missing_blocks"].as_u64().unwrap() >= 1);
    assert!(report["records"].as_u64().unwrap() < 1000);
}

#[test]
fn broken_files_fail_with_one_line() {
    let run = Run::new();
    run.sim_repo("a", 200, 8);
    let car = std::fs::read(run.path("a.car")).unwrap();
    std::fs::write(run.path("truncated.car"), &car[..car.len() - 7]).unwrap();
    std::fs::write(run.path("text.car"), "this is not a car file\n").unwrap();
    std::fs::write(run.path("empty.car"), "").unwrap();
    let mut corrupt = car.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0x40;
    std::fs::write(run.path("corrupt.car"), corrupt).unwrap();
    for name in [
        "truncated.car",
        "text.car",
        "empty.car",
        "corrupt.car",
        "does-not-exist.car",
    ] {
        for command in ["inspect", "records"] {
            let output = run.butterfly(&["car", command, name]);
            assert_eq!(output.status.code(), Some(2), "{command} {name}");
            let stderr = String::from_utf8(output.stderr).unwrap();
            assert_eq!(stderr.lines().count(), 1, "{command} {name}: {stderr}");
            assert!(stderr.starts_with("butterfly: "), "{stderr}");
        }
    }
}

#[test]
fn serve_reports_a_busy_port_before_opening_the_database() {
    let run = Run::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    // The database does not exist either: the port is checked first, before any slow start-up.
    let output = run.butterfly(&["serve", "--db", "missing.duckdb", "--listen", &address]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("listening on {address}")),
        "{stderr}"
    );
    assert!(!run.path("missing.duckdb").exists());
}

#[test]
fn help_is_everywhere() {
    let run = Run::new();
    for args in [
        &["--help"][..],
        &["car", "--help"],
        &["car", "inspect", "--help"],
        &["car", "records", "--help"],
        &["sim", "repo", "--help"],
    ] {
        let out = run.ok(args);
        assert!(out.contains("Usage: butterfly"), "{args:?}: {out}");
    }
}
