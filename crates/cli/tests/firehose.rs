//! `butterfly firehose` against the reference PDS (`../shared/peers`): the replay from cursor 0
//! verifies cleanly in strict mode, and writes made through the XRPC client appear live, verified.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use butterfly_testnet::TestNetwork;
use butterfly_xrpc::{ClientConfig, CreateRecord, DeleteRecord, XrpcClient};
use serde_json::{json, Value as Json};
use std::process::Command;
use support::Running;

#[test]
fn replay_verifies_strictly_and_live_writes_appear() {
    let network = TestNetwork::start();
    let dir = tempfile::tempdir().unwrap();
    let rejections = dir.path().join("rejections.jsonl");
    let record = dir.path().join("frames.log");
    let follower = Running::start(
        dir.path(),
        &[
            "firehose",
            "--source",
            &network.firehose,
            "--cursor",
            "0",
            "--verify",
            "strict",
            "--plc",
            &network.plc,
            "--allow-private-network",
            "--rejections",
            rejections.to_str().unwrap(),
            "--record",
            record.to_str().unwrap(),
        ],
    );

    // The seed: each account's creation (#identity, #account, an empty first commit, #sync), then
    // records, an update and a delete with `prev`.
    let seed = follower.until(|line| {
        line["type"] == "#commit"
            && line["ops"]
                .as_array()
                .unwrap()
                .iter()
                .any(|op| op["action"] == "delete")
    });
    let types: std::collections::BTreeSet<_> =
        seed.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["#account", "#commit", "#identity", "#sync"].into());
    let seqs: Vec<i64> = seed.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    for commit in seed.iter().filter(|l| l["type"] == "#commit") {
        assert_eq!(commit["proof"], "complete", "{commit}");
        if !commit["prevData"].is_null() {
            assert_eq!(commit["inverted_root"], commit["prevData"], "{commit}");
        }
    }
    let delete = seed.last().unwrap();
    assert!(
        !delete["ops"][0]["prev"].is_null(),
        "deletes carry prev: {delete}"
    );

    // Live: alice posts and deletes the post through the XRPC client.
    let alice = network.account("alice").clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (created, rkey) = runtime.block_on(async {
        let client = XrpcClient::new(
            url::Url::parse(&network.pds).unwrap(),
            ClientConfig::with_private_network(true),
        )
        .unwrap();
        let agent = client.login(&alice.handle, &alice.password).await.unwrap();
        let post = json!({"$type": "app.bsky.feed.post", "text": "hello firehose", "createdAt": "2026-11-21T12:00:00.000Z"});
        let created = agent
            .repo()
            .create_record(&CreateRecord::new(&alice.did, "app.bsky.feed.post", post))
            .await
            .unwrap();
        let rkey = created.uri.rsplit('/').next().unwrap().to_owned();
        agent
            .repo()
            .delete_record(&DeleteRecord::new(&alice.did, "app.bsky.feed.post", &rkey))
            .await
            .unwrap();
        (created, rkey)
    });
    let path = format!("app.bsky.feed.post/{rkey}");
    let live = follower.until(|line| {
        line["ops"][0]["action"] == "delete" && line["ops"][0]["path"] == path.as_str()
    });
    let create = live
        .iter()
        .find(|l| l["ops"][0]["path"] == path.as_str() && l["ops"][0]["action"] == "create")
        .expect("the create appears");
    assert_eq!(create["did"], alice.did.as_str());
    assert_eq!(create["ops"][0]["cid"], created.cid.as_str());
    assert_eq!(create["ops"][0]["record"]["text"], "hello firehose");
    assert_eq!(create["proof"], "complete");
    let delete = live.last().unwrap();
    assert_eq!(delete["ops"][0]["prev"], created.cid.as_str());
    assert_eq!(delete["inverted_root"], delete["prevData"]);
    let stderr = follower.interrupt();
    let summary: Json = serde_json::from_str(
        stderr
            .lines()
            .last()
            .unwrap()
            .strip_prefix("butterfly: ")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(summary["rejected"], json!({}), "{stderr}");
    let last_seq = live.last().unwrap()["seq"].as_i64().unwrap();
    assert!(summary["cursor"].as_i64().unwrap() >= last_seq, "{summary}");

    assert_eq!(
        std::fs::read_to_string(&rejections).unwrap(),
        "",
        "nothing rejected"
    );

    // The recording replays offline, with the same verdicts, through `firehose inspect`.
    let output = Command::new(env!("CARGO_BIN_EXE_butterfly"))
        .args(["firehose", "inspect"])
        .arg(&record)
        .output()
        .unwrap();
    assert!(output.status.success());
    let inspected: Vec<Json> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(inspected.len() >= seed.len() + 2);
    for line in inspected.iter().filter(|l| l["type"] == "#commit") {
        assert_eq!(line["proof"], "complete", "{line}");
    }
}
