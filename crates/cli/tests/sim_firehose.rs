//! End-to-end tests of `butterfly sim firehose` and `butterfly sim serve`, run in a temporary folder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use butterfly_firehose::message::{decode_frame, Frame, Message};
use butterfly_firehose::FrameLogReader;
use butterfly_repo::car::CarReader;
use butterfly_repo::commit::Commit;
use butterfly_repo::proof::{invert_ops, Inversion};
use butterfly_repo::BlockMap;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::Path;
use support::http_get;

fn butterfly(dir: &Path, args: &[&str]) -> String {
    String::from_utf8(support::run(dir, args).stdout).unwrap()
}

fn sim_firehose(dir: &Path, name: &str, seed: u64) -> Json {
    let out = butterfly(
        dir,
        &[
            "sim",
            "firehose",
            "--repos",
            "20",
            "--events",
            "400",
            "--seed",
            &seed.to_string(),
            "--out",
            &format!("{name}.log"),
            "--identities-out",
            &format!("{name}.json"),
        ],
    );
    serde_json::from_str(&out).unwrap()
}

#[test]
fn sim_firehose_writes_verifiable_deterministic_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let summary = sim_firehose(dir.path(), "a", 3);
    assert_eq!(summary["events"], 400);
    assert_eq!(summary["repos"], 20);
    let frames = &summary["frames"];
    let total: u64 = ["#commit", "#sync", "#identity", "#account"]
        .iter()
        .map(|kind| frames[*kind].as_u64().unwrap())
        .sum();
    assert_eq!(total, 400);
    assert!(frames["#commit"].as_u64().unwrap() > 350);
    let log = std::fs::read(dir.path().join("a.log")).unwrap();
    assert_eq!(summary["bytes"], log.len() as u64);

    // Same seed, same bytes; another seed, other bytes.
    sim_firehose(dir.path(), "b", 3);
    sim_firehose(dir.path(), "c", 4);
    assert_eq!(std::fs::read(dir.path().join("b.log")).unwrap(), log);
    assert_eq!(
        std::fs::read(dir.path().join("b.json")).unwrap(),
        std::fs::read(dir.path().join("a.json")).unwrap()
    );
    assert_ne!(std::fs::read(dir.path().join("c.log")).unwrap(), log);

    // Every commit verifies against its DID document and inverts on its slice.
    let docs: Vec<Json> =
        serde_json::from_slice(&std::fs::read(dir.path().join("a.json")).unwrap()).unwrap();
    assert_eq!(docs.len(), 20);
    let mut keys = HashMap::new();
    for doc in docs {
        let did = butterfly_syntax::Did::parse(doc["id"].as_str().unwrap()).unwrap();
        let parsed = butterfly_identity::DidDocument::from_json(doc, &did).unwrap();
        assert!(parsed
            .claimed_handle()
            .unwrap()
            .as_str()
            .ends_with(".sim.test"));
        keys.insert(did, parsed.signing_key().unwrap().unwrap());
    }
    let mut n_commits = 0;
    for (i, frame) in FrameLogReader::new(log.as_slice()).enumerate() {
        let Frame::Message(message) = decode_frame(&frame.unwrap()).unwrap() else {
            panic!("error frame")
        };
        assert_eq!(message.seq(), Some(i as i64 + 1));
        if let Message::Commit(commit) = message {
            n_commits += 1;
            let (_, slice) =
                BlockMap::from_car(CarReader::new(commit.blocks.as_slice()).unwrap()).unwrap();
            let block = Commit::decode(&commit.commit, slice.get(&commit.commit).unwrap()).unwrap();
            block.verify_signature(&keys[&commit.repo]).unwrap();
            let mut proof = slice.clone();
            assert_eq!(
                invert_ops(block.data, &commit.ops, &mut proof).unwrap(),
                Inversion::Complete(commit.prev_data.unwrap())
            );
        }
    }
    assert_eq!(frames["#commit"], n_commits);
}

#[test]
fn sim_firehose_writes_the_expected_state() {
    let dir = tempfile::tempdir().unwrap();
    let out = butterfly(
        dir.path(),
        &[
            "sim",
            "firehose",
            "--repos",
            "20",
            "--events",
            "300",
            "--seed",
            "9",
            "--out",
            "e.log",
            "--identities-out",
            "e.json",
            "--expected",
            "expected.jsonl",
        ],
    );
    let summary: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["expected"], "expected.jsonl");
    let text = std::fs::read_to_string(dir.path().join("expected.jsonl")).unwrap();
    let lines: Vec<Json> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 20);
    let dids: Vec<&str> = lines.iter().map(|l| l["did"].as_str().unwrap()).collect();
    let mut sorted = dids.clone();
    sorted.sort_unstable();
    assert_eq!(dids, sorted);
    let with_commits = lines.iter().filter(|l| l["rev"].is_string()).count();
    assert_eq!(
        with_commits as u64,
        summary["repos_with_commits"].as_u64().unwrap()
    );
    // Every repo that committed has its profile; every record is [collection, rkey, cid].
    for line in lines.iter().filter(|l| l["rev"].is_string()) {
        let records = line["records"].as_array().unwrap();
        assert!(
            records
                .iter()
                .any(|r| r[0] == "app.bsky.actor.profile" && r[1] == "self"),
            "{line}"
        );
        for record in records {
            assert_eq!(record.as_array().unwrap().len(), 3, "{record}");
            assert!(
                record[2].as_str().unwrap().starts_with("bafyrei"),
                "{record}"
            );
        }
        assert!(line["data"].as_str().unwrap().starts_with("bafyrei"));
        assert!(line["active"].is_boolean());
    }
}

#[test]
fn sim_serve_prints_its_urls_and_serves_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let summary = sim_firehose(dir.path(), "net", 5);
    // Killed when dropped, on every path out of the test; a hung server fails the wait for its
    // ready line instead of hanging the test.
    let (_serve, ready) = support::serve(dir.path(), &["--rate-limit-every", "2"]);
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["events"], 400);
    assert_eq!(ready["repos"], 20);
    let url = ready["url"].as_str().unwrap();
    let addr = url.strip_prefix("http://").unwrap();
    assert_eq!(
        ready["firehose"],
        format!("ws://{addr}/xrpc/com.atproto.sync.subscribeRepos")
    );
    assert_eq!(ready["plc"], url);

    let (status, first) = http_get(addr, "/xrpc/com.atproto.sync.listRepos?limit=1000");
    assert_eq!(status, 200);
    let listed = first["repos"].as_array().unwrap().len() as u64;
    assert_eq!(listed, summary["repos_with_commits"].as_u64().unwrap());
    let (status, limited) = http_get(addr, "/xrpc/com.atproto.sync.listRepos");
    assert_eq!(
        (status, &limited["error"]),
        (429, &Json::from("RateLimitExceeded"))
    );
    let did = first["repos"][0]["did"].as_str().unwrap();
    let (status, doc) = http_get(addr, &format!("/{did}"));
    assert_eq!(status, 200);
    assert_eq!(doc["service"][0]["serviceEndpoint"], url);
    let (_, stats) = http_get(addr, "/_sim/stats");
    assert_eq!(stats["head_seq"], 400);
    assert_eq!(stats["rate_limited"], 1);
}
