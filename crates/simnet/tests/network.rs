//! The simulated network end to end, on loopback: a generated log served in-process, read back with a
//! WebSocket client and a minimal HTTP client, and checked against a model computed from the frames.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use butterfly_crypto::PublicKey;
use butterfly_data::Cid;
use butterfly_firehose::message::{decode_frame, Frame, Message};
use butterfly_firehose::FrameLogReader;
use butterfly_repo::car::CarReader;
use butterfly_repo::commit::Commit;
use butterfly_repo::mst::{walk, WalkItem};
use butterfly_repo::proof::{invert_ops, Inversion, RepoOp};
use butterfly_repo::{BlockMap, RecordingSource};
use butterfly_sim::firehose::{generate_firehose, identities_json, EventMix, FirehoseSpec};
use butterfly_simnet::{Faults, SimConfig, SimNetwork, Stall};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Every wait in these tests is bounded by this.
const PATIENCE: Duration = Duration::from_secs(20);

struct Generated {
    frames: Vec<u8>,
    docs: String,
    /// Each frame as logged, with its decoded message.
    messages: Vec<(Vec<u8>, Message)>,
}

fn generate(repos: u64, events: u64, seed: u64) -> Generated {
    let spec = FirehoseSpec {
        repos,
        events,
        seed,
        mix: EventMix {
            identity_per_mille: 20,
            account_per_mille: 40,
            sync_per_mille: 20,
        },
    };
    let mut frames = Vec::new();
    let generated = generate_firehose(&spec, &mut frames).unwrap();
    let messages = FrameLogReader::new(frames.as_slice())
        .map(|frame| {
            let frame = frame.unwrap();
            let Frame::Message(message) = decode_frame(&frame).unwrap() else {
                panic!("error frame in a generated log")
            };
            (frame, message)
        })
        .collect();
    Generated {
        frames,
        docs: identities_json(&generated.identities),
        messages,
    }
}

async fn start(generated: &Generated, rate: f64, faults: Faults) -> SimNetwork {
    let mut config = SimConfig::new(
        generated.frames.clone(),
        generated.docs.clone().into_bytes(),
    );
    config.rate = rate;
    config.faults = faults;
    SimNetwork::start(config).await.unwrap()
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribe(sim: &SimNetwork, cursor: Option<i64>) -> Socket {
    let url = match cursor {
        Some(cursor) => format!("{}?cursor={cursor}", sim.firehose_url()),
        None => sim.firehose_url(),
    };
    let (socket, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
        .await
        .expect("connecting timed out")
        .unwrap();
    socket
}

/// What the next WebSocket message is.
#[derive(Debug)]
enum Received {
    Frame(Vec<u8>),
    Pong(Vec<u8>),
    Closed,
}

async fn receive(socket: &mut Socket) -> Received {
    loop {
        match tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("no message in time")
        {
            Some(Ok(WsMessage::Binary(bytes))) => return Received::Frame(bytes.to_vec()),
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return Received::Closed,
            Some(Ok(WsMessage::Pong(payload))) => return Received::Pong(payload.to_vec()),
            Some(Ok(_)) => {}
        }
    }
}

/// Reads frames until one with `last_seq` (or the connection closes); returns every binary frame.
async fn read_until(socket: &mut Socket, last_seq: i64) -> Vec<Vec<u8>> {
    read_frames_and_pongs(socket, last_seq).await.0
}

/// As [`read_until`], also counting pongs.
async fn read_frames_and_pongs(socket: &mut Socket, last_seq: i64) -> (Vec<Vec<u8>>, usize) {
    let mut frames = Vec::new();
    let mut pongs = 0;
    loop {
        match receive(socket).await {
            Received::Pong(payload) => {
                assert_eq!(payload, b"still there?");
                pongs += 1;
            }
            Received::Frame(bytes) => {
                let done = matches!(decode_frame(&bytes), Ok(Frame::Message(m)) if m.seq() == Some(last_seq));
                frames.push(bytes);
                if done {
                    return (frames, pongs);
                }
            }
            Received::Closed => return (frames, pongs),
        }
    }
}

fn seqs(frames: &[Vec<u8>]) -> Vec<i64> {
    frames
        .iter()
        .filter_map(|bytes| match decode_frame(bytes) {
            Ok(Frame::Message(m)) => m.seq(),
            _ => None,
        })
        .collect()
}

/// A response from the minimal HTTP client.
struct HttpResponse {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn json(&self) -> Json {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// `GET path` on the sim, one connection per request, so the test needs no HTTP client crate.
async fn get(sim: &SimNetwork, path: &str) -> HttpResponse {
    let request = async {
        let mut stream = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            sim.addr()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(PATIENCE, request)
        .await
        .expect("HTTP timed out");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
        .collect::<HashMap<_, _>>();
    assert!(
        !headers
            .get("transfer-encoding")
            .is_some_and(|v| v.contains("chunked")),
        "the minimal client reads only sized bodies"
    );
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// Signing keys by DID, from the DID documents as a consumer would read them.
fn keys(generated: &Generated) -> HashMap<String, PublicKey> {
    let docs: Vec<Json> = serde_json::from_str(&generated.docs).unwrap();
    docs.into_iter()
        .map(|doc| {
            let did = butterfly_syntax::Did::parse(doc["id"].as_str().unwrap()).unwrap();
            let parsed = butterfly_identity::DidDocument::from_json(doc, &did).unwrap();
            (did.to_string(), parsed.signing_key().unwrap().unwrap())
        })
        .collect()
}

/// What a consumer knows of each repo after every frame: records, head and status.
#[derive(Default)]
struct RepoModel {
    records: BTreeMap<String, Cid>,
    commit: Option<Cid>,
    rev: Option<String>,
    status: Option<String>,
}

fn model(generated: &Generated) -> BTreeMap<String, RepoModel> {
    let mut repos: BTreeMap<String, RepoModel> = BTreeMap::new();
    for (_, message) in &generated.messages {
        let repo = repos.entry(message.did().unwrap().to_string()).or_default();
        match message {
            Message::Commit(c) => {
                for op in &c.ops {
                    match op {
                        RepoOp::Create { path, cid } | RepoOp::Update { path, cid, .. } => {
                            repo.records.insert(path.clone(), *cid);
                        }
                        RepoOp::Delete { path, .. } => {
                            repo.records.remove(path);
                        }
                    }
                }
                repo.commit = Some(c.commit);
                repo.rev = Some(c.rev.to_string());
            }
            Message::Account(a) => repo.status = a.status.clone(),
            _ => {}
        }
    }
    repos
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_replay_gives_exactly_the_frames_after_it_then_future_cursor_fails() {
    let generated = generate(15, 250, 1);
    let sim = start(&generated, 0.0, Faults::default()).await;
    let last = generated.messages.len() as i64;

    let mut socket = subscribe(&sim, Some(100)).await;
    let frames = read_until(&mut socket, last).await;
    let expected: Vec<Vec<u8>> = generated.messages[100..]
        .iter()
        .map(|(bytes, _)| bytes.clone())
        .collect();
    assert_eq!(frames, expected, "frames after cursor 100, byte for byte");

    // The whole log is released; a cursor at the head replays nothing, one past it is in the future.
    let mut at_head = subscribe(&sim, Some(last)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), at_head.next())
            .await
            .is_err(),
        "nothing after the head"
    );
    let mut future = subscribe(&sim, Some(last + 1)).await;
    let Received::Frame(bytes) = receive(&mut future).await else {
        panic!("expected an error frame")
    };
    let Frame::Error(error) = decode_frame(&bytes).unwrap() else {
        panic!("expected an error frame")
    };
    assert_eq!(error.error, "FutureCursor");
    assert!(matches!(receive(&mut future).await, Received::Closed));
    assert_eq!(sim.stats().future_cursors, 1);

    let bad = get(&sim, "/xrpc/com.atproto.sync.subscribeRepos?cursor=abc").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"], "InvalidRequest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_head_replays_then_streams_and_new_clients_start_at_the_head() {
    let generated = generate(10, 120, 2);
    let sim = start(&generated, 400.0, Faults::default()).await;
    let last = generated.messages.len() as i64;

    // Subscribed from the start: replay, then live, with nothing missed or repeated.
    let mut from_start = subscribe(&sim, Some(0)).await;
    sim.wait_for_seq(30).await;
    // The server takes the head as the new client's start once the upgraded connection runs, some
    // time after `connect_async` returns: the head before connecting is a lower bound for it, and the
    // head once the first live frame has come is an upper bound.
    let head_before_connect = sim.stats().head_seq;
    let mut live = subscribe(&sim, None).await;
    let Received::Frame(first_live) = receive(&mut live).await else {
        panic!("the live connection closed before its first frame")
    };
    let head_after_first_frame = sim.stats().head_seq;
    // The server answers pings while it streams.
    from_start
        .send(WsMessage::Ping(b"still there?".to_vec().into()))
        .await
        .unwrap();
    let (all, pongs) = read_frames_and_pongs(&mut from_start, last).await;
    assert_eq!(seqs(&all), (1..=last).collect::<Vec<_>>());
    assert_eq!(pongs, 1);
    let mut live_frames = vec![first_live];
    if seqs(&live_frames) != [last] {
        live_frames.extend(read_until(&mut live, last).await);
    }
    let live_seqs = seqs(&live_frames);
    assert_eq!(live_seqs.last(), Some(&last));
    let first = live_seqs[0];
    assert!(
        first > 30 && first > head_before_connect && first <= head_after_first_frame,
        "live start {first}, head {head_before_connect} before connecting, \
         {head_after_first_frame} after the first frame"
    );
    assert_eq!(live_seqs, (first..=last).collect::<Vec<_>>());
    assert_eq!(sim.stats().head_frames, generated.messages.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_every_closes_and_a_cursor_resumes() {
    let generated = generate(10, 60, 3);
    let faults = Faults {
        disconnect_every: 7,
        ..Faults::default()
    };
    let sim = start(&generated, 0.0, faults).await;
    let mut socket = subscribe(&sim, Some(0)).await;
    let first = read_until(&mut socket, i64::MAX).await;
    assert_eq!(seqs(&first), (1..=7).collect::<Vec<_>>());
    let mut socket = subscribe(&sim, Some(7)).await;
    let second = read_until(&mut socket, i64::MAX).await;
    assert_eq!(seqs(&second), (8..=14).collect::<Vec<_>>());
    assert_eq!(sim.stats().disconnects, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_come_before_real_ones_and_lose_no_seq() {
    let generated = generate(10, 100, 4);
    let faults = Faults {
        malformed_every: 5,
        ..Faults::default()
    };
    let sim = start(&generated, 0.0, faults).await;
    let last = generated.messages.len() as i64;
    let mut socket = subscribe(&sim, Some(0)).await;
    let frames = read_until(&mut socket, last).await;
    let bad = frames.iter().filter(|f| decode_frame(f).is_err()).count();
    assert_eq!(bad, 20, "one garbage frame before every 5th");
    assert_eq!(seqs(&frames), (1..=last).collect::<Vec<_>>());
    // Each garbage frame sits right before a real frame whose position is a multiple of 5.
    let mut real = 0;
    for (i, frame) in frames.iter().enumerate() {
        if decode_frame(frame).is_err() {
            assert!(decode_frame(&frames[i + 1]).is_ok());
            assert_eq!((real + 1) % 5, 0);
        } else {
            real += 1;
        }
    }
    assert_eq!(sim.stats().malformed_sent, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_commits_decode_and_invert_but_fail_verification() {
    let generated = generate(10, 120, 5);
    let faults = Faults {
        forge_every: 4,
        ..Faults::default()
    };
    let sim = start(&generated, 0.0, faults).await;
    let keys = keys(&generated);
    let last = generated.messages.len() as i64;
    let mut socket = subscribe(&sim, Some(0)).await;
    let frames = read_until(&mut socket, last).await;
    let (mut n_commits, mut n_forged) = (0, 0);
    for (received, (logged, _)) in frames.iter().zip(&generated.messages) {
        let Frame::Message(Message::Commit(commit)) = decode_frame(received).unwrap() else {
            assert_eq!(received, logged);
            continue;
        };
        n_commits += 1;
        let (header, slice) =
            BlockMap::from_car(CarReader::new(commit.blocks.as_slice()).unwrap()).unwrap();
        assert_eq!(header.roots, vec![commit.commit]);
        let block = Commit::decode(&commit.commit, slice.get(&commit.commit).unwrap()).unwrap();
        let mut proof = slice.clone();
        assert_eq!(
            invert_ops(block.data, &commit.ops, &mut proof).unwrap(),
            Inversion::Complete(commit.prev_data.unwrap())
        );
        let verified = block.verify_signature(&keys[commit.repo.as_str()]).is_ok();
        if n_commits % 4 == 0 {
            assert!(!verified, "commit {n_commits} should be forged");
            assert_ne!(received, logged);
            n_forged += 1;
        } else {
            assert!(verified, "commit {n_commits} should verify");
            assert_eq!(received, logged);
        }
    }
    assert!(n_forged > 5);
    assert_eq!(sim.stats().forged_sent, n_forged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_keeps_the_connection_open_then_resumes() {
    let generated = generate(5, 20, 6);
    let faults = Faults {
        // Long, so that the check for silence below surely falls inside it.
        stall: Some(Stall {
            after: 3,
            duration: Duration::from_secs(10),
        }),
        ..Faults::default()
    };
    let sim = start(&generated, 0.0, faults).await;
    let mut socket = subscribe(&sim, Some(0)).await;
    for expected in 1..=3 {
        let Received::Frame(bytes) = receive(&mut socket).await else {
            panic!("closed early")
        };
        assert_eq!(seqs(&[bytes]), vec![expected]);
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), socket.next())
            .await
            .is_err(),
        "silent while stalled"
    );
    let rest = read_until(&mut socket, 20).await;
    assert_eq!(seqs(&rest), (4..=20).collect::<Vec<_>>());
    assert_eq!(sim.stats().stalls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_endpoints_serve_the_repos_at_the_head() {
    let generated = generate(12, 300, 7);
    let sim = start(&generated, 0.0, Faults::default()).await;
    let keys = keys(&generated);
    let model = model(&generated);
    let with_commits: BTreeSet<&String> = model
        .iter()
        .filter(|(_, repo)| repo.commit.is_some())
        .map(|(did, _)| did)
        .collect();
    let mut checked_active = 0;
    let mut checked_inactive = 0;
    for did in &with_commits {
        let repo = &model[*did];
        let response = get(&sim, &format!("/xrpc/com.atproto.sync.getRepo?did={did}")).await;
        if let Some(status) = &repo.status {
            assert_eq!(response.status, 400);
            let expected = match status.as_str() {
                "takendown" => "RepoTakendown",
                "suspended" => "RepoSuspended",
                _ => "RepoDeactivated",
            };
            assert_eq!(response.json()["error"], expected);
            checked_inactive += 1;
            continue;
        }
        assert_eq!(response.status, 200);
        assert_eq!(response.headers["content-type"], "application/vnd.ipld.car");
        let (header, mut blocks) =
            BlockMap::from_car(CarReader::new(response.body.as_slice()).unwrap()).unwrap();
        assert_eq!(header.roots, vec![repo.commit.unwrap()]);
        let commit =
            Commit::decode(&header.roots[0], blocks.get(&header.roots[0]).unwrap()).unwrap();
        commit.verify_signature(&keys[did.as_str()]).unwrap();
        let mut records = BTreeMap::new();
        let mut recorder = RecordingSource::new(&mut blocks);
        for item in walk(commit.data, &mut recorder) {
            match item.unwrap() {
                WalkItem::Record { key, cid } => {
                    records.insert(key, cid);
                }
                WalkItem::MissingNode(cid) => panic!("getRepo lacks node {cid}"),
            }
        }
        let n_nodes = recorder.requested.len();
        assert_eq!(records, repo.records, "{did}");
        for cid in records.values() {
            assert!(blocks.contains(cid), "getRepo lacks record {cid}");
        }
        // Only reachable blocks: the commit, the nodes and the records.
        let distinct_records: BTreeSet<&Cid> = records.values().collect();
        assert_eq!(blocks.len(), 1 + n_nodes + distinct_records.len());
        let latest = get(
            &sim,
            &format!("/xrpc/com.atproto.sync.getLatestCommit?did={did}"),
        )
        .await
        .json();
        assert_eq!(latest["cid"], repo.commit.unwrap().to_string());
        assert_eq!(latest["rev"], repo.rev.clone().unwrap());
        checked_active += 1;
    }
    assert!(
        checked_active > 3 && checked_inactive > 0,
        "{checked_active} {checked_inactive}"
    );

    // Errors.
    let unknown = get(
        &sim,
        "/xrpc/com.atproto.sync.getRepo?did=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa",
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.json()["error"].clone()),
        (400, "RepoNotFound".into())
    );
    let missing = get(&sim, "/xrpc/com.atproto.sync.getRepo").await;
    assert_eq!(
        (missing.status, missing.json()["error"].clone()),
        (400, "InvalidRequest".into())
    );
    let unknown_method = get(&sim, "/xrpc/com.atproto.sync.getBlob?did=x").await;
    assert_eq!(unknown_method.status, 501);

    // listRepos pages through every repo with a commit, with heads and statuses.
    let mut listed = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/xrpc/com.atproto.sync.listRepos?limit=5&cursor={cursor}"),
            None => "/xrpc/com.atproto.sync.listRepos?limit=5".to_owned(),
        };
        let page = get(&sim, &path).await.json();
        for repo in page["repos"].as_array().unwrap() {
            listed.insert(repo["did"].as_str().unwrap().to_owned(), repo.clone());
        }
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed.keys().collect::<BTreeSet<_>>(), with_commits);
    for (did, entry) in &listed {
        let repo = &model[did];
        assert_eq!(entry["head"], repo.commit.unwrap().to_string());
        assert_eq!(entry["rev"], repo.rev.clone().unwrap());
        assert_eq!(entry["active"], repo.status.is_none());
        assert_eq!(entry["status"].as_str(), repo.status.as_deref());
    }
    let too_big = get(&sim, "/xrpc/com.atproto.sync.listRepos?limit=5000").await;
    assert_eq!(too_big.status, 400);

    // listReposByCollection: the repos holding a post.
    let posting: BTreeSet<&String> = model
        .iter()
        .filter(|(_, repo)| {
            repo.records
                .keys()
                .any(|k| k.starts_with("app.bsky.feed.post/"))
        })
        .map(|(did, _)| did)
        .collect();
    let page = get(
        &sim,
        "/xrpc/com.atproto.sync.listReposByCollection?collection=app.bsky.feed.post&limit=2000",
    )
    .await
    .json();
    let by_collection: BTreeSet<String> = page["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["did"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(by_collection.iter().collect::<BTreeSet<_>>(), posting);

    // describeRepo and the PLC directory.
    let (did, repo) = model
        .iter()
        .find(|(_, repo)| repo.commit.is_some() && repo.status.is_none())
        .unwrap();
    let described = get(
        &sim,
        &format!("/xrpc/com.atproto.repo.describeRepo?repo={did}"),
    )
    .await
    .json();
    assert_eq!(described["did"], did.as_str());
    let handle = described["handle"].as_str().unwrap().to_owned();
    assert!(handle.ends_with(".sim.test"));
    assert_eq!(described["handleIsCorrect"], true);
    let collections: BTreeSet<String> = repo
        .records
        .keys()
        .map(|k| k.split('/').next().unwrap().to_owned())
        .collect();
    let described_collections: BTreeSet<String> = described["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(described_collections, collections);
    let by_handle = get(
        &sim,
        &format!("/xrpc/com.atproto.repo.describeRepo?repo={handle}"),
    )
    .await
    .json();
    assert_eq!(by_handle["did"], did.as_str());
    let resolved = get(
        &sim,
        &format!("/xrpc/com.atproto.identity.resolveHandle?handle={handle}"),
    )
    .await
    .json();
    assert_eq!(resolved["did"], did.as_str());

    let doc = get(&sim, &format!("/{did}")).await;
    assert_eq!(doc.status, 200);
    let parsed = butterfly_identity::DidDocument::from_json(
        doc.json(),
        &butterfly_syntax::Did::parse(did).unwrap(),
    )
    .unwrap();
    assert_eq!(
        parsed
            .pds_endpoint()
            .unwrap()
            .as_str()
            .trim_end_matches('/'),
        sim.url()
    );
    assert_eq!(parsed.claimed_handle().unwrap().as_str(), handle);
    let missing_doc = get(&sim, "/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa").await;
    assert_eq!(missing_doc.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nth_xrpc_request_is_rate_limited() {
    let generated = generate(5, 30, 8);
    let faults = Faults {
        rate_limit_every: 3,
        ..Faults::default()
    };
    let sim = start(&generated, 0.0, faults).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let response = get(&sim, "/xrpc/com.atproto.sync.listRepos").await;
        if response.status == 429 {
            assert_eq!(response.headers["retry-after"], "1");
            assert_eq!(response.headers["ratelimit-remaining"], "0");
            assert!(response.headers.contains_key("ratelimit-limit"));
            assert!(response.headers.contains_key("ratelimit-reset"));
            assert_eq!(response.json()["error"], "RateLimitExceeded");
        }
        statuses.push(response.status);
    }
    assert_eq!(statuses, vec![200, 200, 429, 200, 200, 429]);
    // The PLC directory and the stats page are not XRPC, so not limited.
    let stats = get(&sim, "/_sim/stats").await.json();
    assert_eq!(stats["rate_limited"], 2);
    assert_eq!(stats["xrpc_requests"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retime_stamps_each_event_with_the_time_it_is_sent_and_changes_nothing_else() {
    let generated = generate(10, 150, 3);
    let mut config = SimConfig::new(
        generated.frames.clone(),
        generated.docs.clone().into_bytes(),
    );
    config.retime = true;
    let sim = SimNetwork::start(config).await.unwrap();
    let last = generated.messages.len() as i64;
    let micros = |time: &str| {
        butterfly_syntax::datetime::Datetime::parse(time)
            .unwrap()
            .timestamp_micros()
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64
    };

    // Millisecond precision: the window opens at the millisecond before.
    let before = now() / 1000 * 1000;
    let mut socket = subscribe(&sim, Some(0)).await;
    let frames = read_until(&mut socket, last).await;
    let after = now();
    assert_eq!(frames.len(), generated.messages.len());
    for (frame, (logged, logged_message)) in frames.iter().zip(&generated.messages) {
        let Ok(Frame::Message(message)) = decode_frame(frame) else {
            panic!("a frame that does not decode");
        };
        let (Some(sent), Some(generated_time)) = (message.time(), logged_message.time()) else {
            panic!("an event without a time: {message:?}");
        };
        let sent_at = micros(sent);
        assert!(
            (before..=after).contains(&sent_at),
            "{sent} is not between the subscription and the last frame"
        );
        assert_ne!(
            micros(generated_time),
            sent_at,
            "the generated time was kept"
        );
        // Put the generated time back: the frame is then the logged one, byte for byte.
        let at = frame
            .windows(sent.len())
            .position(|window| window == sent.as_bytes())
            .unwrap();
        let mut restored = frame.clone();
        restored[at..at + sent.len()].copy_from_slice(generated_time.as_bytes());
        assert_eq!(
            &restored,
            logged,
            "seq {:?} changed beyond its time",
            message.seq()
        );
    }
}
