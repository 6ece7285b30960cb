//! Crash safety: `butterfly sync` into DuckDB, following the simulator, is killed with SIGKILL at
//! 20 random moments and restarted each time; once it has caught up, the database equals the
//! simulator's ground truth exactly: nothing lost, nothing applied twice, nothing left over.
//!
//! The default scale suits CI. Environment variables make it larger, for a release run:
//! `BUTTERFLY_KILL_REPOS`, `BUTTERFLY_KILL_EVENTS`, `BUTTERFLY_KILL_RATE` (events/s the simulator
//! serves), `BUTTERFLY_KILL_MAX_MS` (the longest run before a kill) and
//! `BUTTERFLY_KILL_DEADLINE` (seconds to catch up afterwards); see `scripts/kill-at-scale.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};
use support::Running;

const KILLS: usize = 20;

/// A scale setting from the environment, or its CI default.
fn setting(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {text:?}")),
        Err(_) => default,
    }
}

fn query(dir: &Path, sql: &str) -> Vec<Json> {
    let output = support::run(dir, &["query", "--db", "db.duckdb", "--json", sql]);
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn killed_twenty_times_the_store_still_equals_the_ground_truth() {
    let repos = setting("BUTTERFLY_KILL_REPOS", 60);
    let events = setting("BUTTERFLY_KILL_EVENTS", 6000);
    let rate = setting("BUTTERFLY_KILL_RATE", 600);
    let max_run_ms = setting("BUTTERFLY_KILL_MAX_MS", 850).max(151);
    let catch_up = Duration::from_secs(setting("BUTTERFLY_KILL_DEADLINE", 120));
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    support::run(
        dir,
        &[
            "sim",
            "firehose",
            "--repos",
            &repos.to_string(),
            "--events",
            &events.to_string(),
            "--seed",
            "5",
            "--out",
            "net.log",
            "--identities-out",
            "net.json",
            "--expected",
            "expected.jsonl",
        ],
    );
    let (server, ready) = support::serve(dir, &["--rate", &rate.to_string()]);
    let url = ready["url"].as_str().unwrap().to_owned();
    std::fs::write(
        dir.join("selector.json"),
        serde_json::json!({
            "select": [{"where": {"service": url, "method": "com.atproto.sync.listRepos",
                "attr": "repos.*.did", "pagination": {"param": "cursor", "attr": "cursor"}},
                "tag": "all"}]
        })
        .to_string(),
    )
    .unwrap();
    let sync_args = [
        "sync",
        "selector.json",
        "--store",
        "duckdb:db.duckdb",
        "--relay",
        &url,
        "--plc",
        &url,
        "--handle-resolver",
        &url,
        "--allow-private-network",
        "-q",
    ];

    // Kill it at random moments: during the first backfill, during later ones, while live.
    let mut random = Lcg(0x5eed);
    for _ in 0..KILLS {
        let sync = Running::start(dir, &sync_args);
        std::thread::sleep(Duration::from_millis(150 + random.below(max_run_ms - 150)));
        drop(sync); // SIGKILL
    }

    // Then let it catch up, stopping it cleanly now and then, until the stored cursor is the last
    // event's seq.
    let window = (catch_up / 20).max(Duration::from_secs(3));
    let deadline = Instant::now() + catch_up;
    loop {
        let sync = Running::start(dir, &sync_args);
        std::thread::sleep(window);
        sync.interrupt();
        let cursor = query(dir, "SELECT value FROM kv WHERE key = 'live.cursor'");
        // Repos the simulator left inactive may never have been fetchable: `failed` is allowed.
        let unsynced = query(
            dir,
            "SELECT count(*) AS n FROM repos WHERE state NOT IN ('synced', 'failed')",
        );
        let caught_up =
            cursor.first().and_then(|row| row["value"].as_str()) == Some(&events.to_string());
        if caught_up && unsynced[0]["n"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not catch up: cursor {cursor:?}, {unsynced:?} repos not synced"
        );
    }

    // Every stored repo equals the ground truth; every repo the simulator lists is stored.
    let mut held: BTreeMap<String, BTreeSet<(String, String, String)>> = BTreeMap::new();
    for row in query(dir, "SELECT did FROM repos WHERE state = 'synced'") {
        held.entry(row["did"].as_str().unwrap().to_owned())
            .or_default();
    }
    for row in query(dir, "SELECT did, collection, rkey, cid FROM records") {
        let field = |name: &str| row[name].as_str().unwrap().to_owned();
        held.entry(field("did")).or_default().insert((
            field("collection"),
            field("rkey"),
            field("cid"),
        ));
    }
    let not_synced = query(
        dir,
        "SELECT did, state, error FROM repos WHERE state <> 'synced'",
    );
    let inactive: BTreeSet<String> = std::fs::read_to_string(dir.join("expected.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Json>(line).unwrap())
        .filter(|repo| repo["active"] == false)
        .map(|repo| repo["did"].as_str().unwrap().to_owned())
        .collect();
    for row in &not_synced {
        let did = row["did"].as_str().unwrap();
        assert!(
            inactive.contains(did),
            "an active repo is not synced: {row}"
        );
        held.remove(did);
    }
    let expected: BTreeMap<String, BTreeSet<(String, String, String)>> =
        std::fs::read_to_string(dir.join("expected.jsonl"))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<Json>(line).unwrap())
            .filter(|repo| !repo["rev"].is_null())
            .map(|repo| {
                let records = repo["records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        (
                            r[0].as_str().unwrap().to_owned(),
                            r[1].as_str().unwrap().to_owned(),
                            r[2].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect();
                (repo["did"].as_str().unwrap().to_owned(), records)
            })
            .collect();
    let active_expected: Vec<&String> = expected
        .keys()
        .filter(|did| !inactive.contains(*did))
        .collect();
    let active_held: Vec<&String> = held.keys().filter(|did| !inactive.contains(*did)).collect();
    assert_eq!(
        active_held, active_expected,
        "every active repo that committed is selected (listRepos) and stored"
    );
    let mut differ = Vec::new();
    for (did, records) in &held {
        let truth = expected
            .get(did)
            .expect("a stored repo the simulator knows");
        if truth != records {
            differ.push(format!(
                "{did}: {} missing, {} extra",
                truth.difference(records).count(),
                records.difference(truth).count()
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "differ from the ground truth:\n{}",
        differ.join("\n")
    );
    drop(server);
}
