//! `butterfly firehose` against the simulator (`butterfly sim serve`) with injected faults: a stream
//! cut every few dozen frames resumes from the right cursor with no gap and no duplicate; malformed
//! frames and forged signatures are rejected, counted, and the stream goes on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use support::{serve, Running};

const EVENTS: i64 = 600;

/// Generates a log of `EVENTS` events over 40 repos into `dir`: `net.log` and `net.json`.
fn generate(dir: &Path) {
    let events = EVENTS.to_string();
    support::run(
        dir,
        &[
            "sim",
            "firehose",
            "--repos",
            "40",
            "--events",
            &events,
            "--seed",
            "11",
            "--out",
            "net.log",
            "--identities-out",
            "net.json",
        ],
    );
}

fn follow(dir: &Path, ready: &Json, extra: &[&str]) -> Running {
    let mut args = vec![
        "firehose",
        "--source",
        ready["firehose"].as_str().unwrap(),
        "--cursor",
        "0",
        "--identities",
        "net.json",
        "--allow-private-network",
        "--rejections",
        "rejections.jsonl",
    ];
    args.extend_from_slice(extra);
    Running::start(dir, &args)
}

/// The rejections written so far; only complete lines while the follower is still writing.
fn rejections(dir: &Path) -> Vec<Json> {
    let text = std::fs::read_to_string(dir.join("rejections.jsonl")).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_cut_stream_resumes_with_no_gap_and_no_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let (server, ready) = serve(dir.path(), &["--disconnect-every", "97"]);
    let follower = follow(dir.path(), &ready, &["--limit", &EVENTS.to_string()]);
    let lines: Vec<Json> = (0..EVENTS).map(|_| follower.next()).collect();
    let stderr = follower.wait();

    let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=EVENTS).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert!(rejections(dir.path()).is_empty());
    let reconnects = stderr.matches("butterfly: disconnected").count();
    assert!(reconnects >= 5, "the server cut the stream: {stderr}");
    // Each reconnection resumed right after the last seq handled.
    let cursors: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("butterfly: connected to "))
        .collect();
    assert_eq!(cursors.len(), reconnects + 1, "{stderr}");
    for line in &cursors[1..] {
        let n: i64 = line
            .rsplit("(cursor Some(")
            .next()
            .unwrap()
            .trim_end_matches("))")
            .parse()
            .unwrap();
        assert_eq!(
            n % 97,
            0,
            "cut after every 97 frames of a connection: {line}"
        );
    }
    let summary = support::summary(&stderr);
    assert_eq!(summary["cursor"], EVENTS);
    assert_eq!(summary["rejected"], serde_json::json!({}));
    drop(server);
}

#[test]
fn malformed_and_forged_frames_are_counted_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let (server, ready) = serve(
        dir.path(),
        &["--malformed-every", "45", "--forge-every", "35"],
    );
    let addr = ready["url"]
        .as_str()
        .unwrap()
        .strip_prefix("http://")
        .unwrap()
        .to_owned();
    let follower = follow(dir.path(), &ready, &[]);

    // Read until the last seq has been accounted for, printed or rejected.
    let mut printed = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(line) = follower.next_within(Duration::from_millis(200)) {
            printed.push(line);
        }
        let seen_last = printed.iter().any(|l| l["seq"] == EVENTS)
            || rejections(dir.path()).iter().any(|r| r["seq"] == EVENTS);
        if seen_last {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the stream stopped");
    }
    let (stderr, rest) = follower.interrupt_and_drain();
    printed.extend(rest);
    let summary = support::summary(&stderr);
    let rejected = rejections(dir.path());
    let (_, stats) = support::http_get(&addr, "/_sim/stats");
    drop(server);

    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for r in &rejected {
        *by_reason
            .entry(r["reason"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(stats["malformed_sent"].as_u64().unwrap() >= 10, "{stats}");
    assert!(stats["forged_sent"].as_u64().unwrap() >= 10, "{stats}");
    assert_eq!(
        by_reason["malformed_frame"],
        stats["malformed_sent"].as_u64().unwrap()
    );
    // A forged commit is not accepted, so that repo's next commits no longer chain from what is
    // held: they are refused too, and the repo is marked for resync. Nothing else is refused.
    let bad_signatures = by_reason["bad_signature"];
    assert!(bad_signatures >= 1 && bad_signatures <= stats["forged_sent"].as_u64().unwrap());
    for reason in by_reason.keys() {
        assert!(
            ["malformed_frame", "bad_signature", "broken_chain"].contains(&reason.as_str()),
            "{by_reason:?}"
        );
    }
    for r in rejected.iter().filter(|r| r["reason"] == "broken_chain") {
        assert_eq!(r["resync"], true);
    }
    for r in rejected.iter().filter(|r| r["reason"] == "bad_signature") {
        assert_eq!(r["type"], "#commit");
        assert_eq!(r["proof"], "complete", "a forged commit still inverts: {r}");
    }
    // Every seq is accounted for exactly once, printed or rejected.
    let mut seqs: Vec<i64> = printed.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    seqs.extend(rejected.iter().filter_map(|r| r["seq"].as_i64()));
    seqs.sort();
    assert_eq!(seqs, (1..=EVENTS).collect::<Vec<_>>());
    assert_eq!(
        summary["rejected"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        rejected.len() as u64
    );
}
