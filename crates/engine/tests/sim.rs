//! The engine against the simulated network: backfill while the firehose runs, then follow it to
//! the end; the store must equal the simulator's ground truth for every selected repo.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use butterfly_engine::{Engine, EngineConfig, LiveSource};
use butterfly_identity::{CacheConfig, Directory, Resolver, ResolverConfig};
use butterfly_net::{HttpClient, HttpConfig};
use butterfly_selector::Selector;
use butterfly_sim::firehose::{
    generate_firehose, identities_json, FirehoseSpec, GeneratedFirehose,
};
use butterfly_simnet::{SimConfig, SimNetwork};
use butterfly_store::{MemoryStore, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn generate(repos: u64, events: u64, seed: u64) -> (Vec<u8>, GeneratedFirehose) {
    let mut frames = Vec::new();
    let spec = FirehoseSpec {
        repos,
        events,
        seed,
        mix: Default::default(),
    };
    let generated = generate_firehose(&spec, &mut frames).expect("generate");
    (frames, generated)
}

/// Identities from the simulator: DID documents from its PLC, and handles through its
/// `resolveHandle` (the simulated handles are in no DNS, and tests stay on loopback).
fn directory(sim: &SimNetwork) -> Directory {
    let http = HttpClient::new(&HttpConfig::with_private_network(true)).expect("http");
    let resolver = Resolver::new(
        http,
        ResolverConfig {
            plc_url: sim.plc_url().parse().expect("plc url"),
            handle_resolver: Some(sim.url().parse().expect("sim url")),
            ..ResolverConfig::default()
        },
    )
    .expect("resolver");
    Directory::new(resolver, CacheConfig::default())
}

/// Records per repo as `(collection, rkey) -> cid`.
type Held = BTreeMap<String, BTreeMap<(String, String), String>>;

fn store_contents(store: &dyn Store) -> Held {
    let mut held = Held::new();
    for row in store.repos().expect("repos") {
        let keys = store.record_keys(&row.did).expect("keys");
        held.insert(
            row.did.clone(),
            keys.into_iter().map(|(c, r, cid)| ((c, r), cid)).collect(),
        );
    }
    held
}

fn expected_contents(generated: &GeneratedFirehose, dids: &BTreeSet<String>) -> Held {
    generated
        .expected
        .iter()
        .filter(|repo| dids.contains(repo.did.as_str()))
        .map(|repo| {
            (
                repo.did.as_str().to_owned(),
                repo.records
                    .iter()
                    .map(|r| ((r.collection.clone(), r.rkey.clone()), r.cid.to_string()))
                    .collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_then_live_equals_ground_truth() {
    butterfly_net::install_crypto_provider();
    let (frames, generated) = generate(40, 3000, 7);
    let total = generated.summary.events as i64;
    let mut config = SimConfig::new(frames, identities_json(&generated.identities));
    config.rate = 600.0;
    let sim = SimNetwork::start(config).await.expect("sim");
    // Let a third of the log out, so repos exist to list and most traffic is still to come.
    sim.wait_for_seq(total / 3).await;

    let selector = Selector::from_json(&format!(
        r#"{{"select": [{{"where": {{"service": "{}", "method": "com.atproto.sync.listRepos",
             "params": {{"limit": 7}}, "attr": "repos.*.did",
             "pagination": {{"param": "cursor", "attr": "cursor"}}}}, "tag": "all"}}]}}"#,
        sim.url()
    ))
    .expect("selector");
    let engine = Engine::new(
        EngineConfig {
            live: LiveSource::Relay(sim.url().to_owned()),
            allow_private_network: true,
            backfill_concurrency: 4,
            event_log: Some(Duration::from_secs(3600)),
            event_buffer: 100_000,
            ..EngineConfig::default()
        },
        selector,
        Box::new(MemoryStore::new()),
        directory(&sim),
    );
    let stats = engine.stats();
    // The served stream, as a subscriber sees it.
    let mut events = engine.events().subscribe();
    let published = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(event) = events.recv().await {
            seen.push(event);
        }
        seen
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(engine.run(async {
        let _ = stop_rx.await;
    }));
    // Wait until the whole log is out and the engine's cursor has reached its end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = stats.snapshot();
        if s.cursor == Some(total) && s.repos_queued == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the engine did not catch up: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    let store = run.await.expect("join").expect("engine");
    let held = store_contents(store.as_ref());
    assert!(held.len() > 10, "only {} repos selected", held.len());
    let dids: BTreeSet<String> = held.keys().cloned().collect();
    let expected = expected_contents(&generated, &dids);
    let mut wrong = Vec::new();
    for (did, records) in &expected {
        let got = held.get(did);
        if got != Some(records) {
            let missing = records
                .keys()
                .filter(|k| !got.is_some_and(|g| g.contains_key(*k)))
                .count();
            let extra = got.map_or(0, |g| {
                g.keys().filter(|k| !records.contains_key(*k)).count()
            });
            wrong.push(format!(
                "{did}: {missing} missing, {extra} extra, row {:?}",
                store.repo(did).expect("row")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} repos differ from the ground truth ({:?}):\n{}",
        wrong.len(),
        expected.len(),
        stats.snapshot(),
        wrong.join("\n")
    );
    let s = stats.snapshot();
    assert_eq!(s.rejected, 0, "{s:?}");
    assert!(s.live_changes > 0, "{s:?}");
    // The simulator fails no request; a repo its host refused as inactive is not a failure to
    // retry, and its row says why.
    assert_eq!(s.backfill_failures, 0, "{s:?}");
    for row in store.repos().expect("repos") {
        if row.state == butterfly_store::SyncState::Failed {
            assert_ne!(row.status, "active", "{row:?}");
            assert!(
                row.error.as_deref().is_some_and(|e| e.contains("getRepo")),
                "{row:?}"
            );
        }
    }

    // The stream: what was published is exactly the store's event log, in strictly increasing
    // time, one commit event per live change kept.
    let logged = store.events_after(0, usize::MAX).expect("event log");
    let published: Vec<butterfly_store::StreamEvent> = published
        .await
        .expect("join")
        .into_iter()
        .map(|e| (*e).clone())
        .collect();
    assert_eq!(published.len(), logged.len());
    assert!(published == logged, "the broadcast and the log differ");
    assert!(logged.windows(2).all(|w| w[0].time_us < w[1].time_us));
    let commits = logged
        .iter()
        .filter(|e| e.kind == butterfly_store::EventKind::Commit)
        .count() as u64;
    assert!(
        commits > 0 && commits <= s.live_changes,
        "{commits} commit events, {s:?}"
    );
    for event in &logged {
        let json: serde_json::Value = serde_json::from_str(&event.json).expect("event JSON");
        assert_eq!(json["did"], event.did.as_str());
        assert_eq!(json["time_us"], event.time_us);
        assert_eq!(json["kind"], event.kind.as_str());
        if event.kind == butterfly_store::EventKind::Commit {
            let op = json["commit"]["operation"].as_str().expect("operation");
            assert_eq!(
                json["commit"]["collection"],
                event.collection.as_deref().expect("collection")
            );
            assert_eq!(op == "delete", json["commit"]["record"].is_null(), "{json}");
        }
    }
}

/// A `Write` whose bytes can be read after the store that owns it is gone.
#[derive(Clone, Default)]
struct SharedBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A repo the store holds wrongly (records the repo no longer has, one it lacks, a changed CID)
/// and marks for resync is reconciled with creates, updates and deletes; `--once` then stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_reconciles_with_deletes() {
    use butterfly_store::{Action, BackfillChunk, Batch, Record, RepoRow, StdoutStore, SyncState};
    butterfly_net::install_crypto_provider();
    let (frames, generated) = generate(12, 600, 9);
    let sim = SimNetwork::start(SimConfig::new(
        frames,
        identities_json(&generated.identities),
    ))
    .await
    .expect("sim");
    let target = generated
        .expected
        .iter()
        .find(|repo| repo.records.len() >= 3)
        .expect("a repo with records");
    let did = target.did.as_str().to_owned();
    let record = |collection: &str, rkey: &str, cid: &str| Record {
        did: did.clone(),
        collection: collection.into(),
        rkey: rkey.into(),
        cid: cid.into(),
        rev: "2222222222222".into(),
        json: r#"{"$type":"app.bsky.feed.like"}"#.into(),
        indexed_at: 0,
    };
    let kept = &target.records[0];
    let changed = &target.records[1];
    let stale = vec![
        // Still in the repo, same CID: no change expected.
        record(&kept.collection, &kept.rkey, &kept.cid.to_string()),
        // Still in the repo, another CID: an update.
        record(&changed.collection, &changed.rkey, "bafyreiaaaa"),
        // Gone from the repo: deletes.
        record("app.bsky.feed.like", "2222222222223", "bafyreibbbb"),
        record("app.bsky.feed.like", "2222222222224", "bafyreicccc"),
    ];
    let row = RepoRow {
        did: did.clone(),
        handle: None,
        pds: None,
        status: "active".into(),
        state: SyncState::Resync,
        rev: Some("2222222222222".into()),
        data_cid: None,
        tags: vec!["all".into()],
        backfilled_at: None,
        error: None,
    };
    let output = SharedBuffer::default();
    let mut store = StdoutStore::new(output.clone());
    store
        .apply(Batch {
            backfill: vec![BackfillChunk {
                did: did.clone(),
                replace: false,
                records: stale,
                edges: Vec::new(),
            }],
            repos: vec![row],
            ..Batch::default()
        })
        .expect("seed the store");
    output.0.lock().unwrap().clear();

    let selector = Selector::from_json(&format!(
        r#"{{"select": [{{"where": {{"service": "{}", "method": "com.atproto.sync.listRepos",
             "attr": "repos.*.did"}}, "tag": "all"}}]}}"#,
        sim.url()
    ))
    .expect("selector");
    let engine = Engine::new(
        EngineConfig {
            once: true,
            allow_private_network: true,
            ..EngineConfig::default()
        },
        selector,
        Box::new(store),
        directory(&sim),
    );
    let stats = engine.stats();
    let store = tokio::time::timeout(Duration::from_secs(60), engine.run(std::future::pending()))
        .await
        .expect("--once finishes")
        .expect("engine");
    let held = store_contents(store.as_ref());
    let dids: BTreeSet<String> = generated
        .expected
        .iter()
        .filter(|r| r.rev.is_some())
        .map(|r| r.did.as_str().to_owned())
        .collect();
    assert_eq!(
        held,
        expected_contents(&generated, &dids),
        "{:?}",
        stats.snapshot()
    );

    let lines: Vec<serde_json::Value> = String::from_utf8(output.0.lock().unwrap().clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let about = |action: Action, rkey: &str| {
        lines
            .iter()
            .filter(|l| {
                l["did"] == did.as_str() && l["action"] == action.as_str() && l["rkey"] == rkey
            })
            .count()
    };
    assert_eq!(about(Action::Delete, "2222222222223"), 1);
    assert_eq!(about(Action::Delete, "2222222222224"), 1);
    assert_eq!(about(Action::Update, &changed.rkey), 1);
    assert_eq!(
        about(Action::Create, &kept.rkey) + about(Action::Update, &kept.rkey),
        0
    );
    let creates = lines
        .iter()
        .filter(|l| l["did"] == did.as_str() && l["action"] == "create")
        .count();
    assert_eq!(creates, target.records.len() - 2, "the rest are creates");
}
