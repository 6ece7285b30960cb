//! The sync engine against the reference PDS (`../shared/peers`), its firehose as the relay, into
//! DuckDB: the example selector gives exactly the expected repos and records, and live writes,
//! follows, unfollows, a handle change, a deactivation and a takedown show in the database within
//! two seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use butterfly_engine::{Engine, EngineConfig, LiveSource};
use butterfly_identity::{CacheConfig, Directory, Resolver, ResolverConfig};
use butterfly_net::{HttpClient, HttpConfig};
use butterfly_selector::Selector;
use butterfly_store_duckdb::DuckDbStore;
use butterfly_testnet::TestNetwork;
use butterfly_xrpc::{
    Agent, ClientConfig, CreateRecord, DeleteRecord, PutRecord, XrpcClient, XrpcRequest,
};
use serde_json::{json, Value as Json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The issue's example selector, pointed at the local network.
fn selector(pds: &str) -> Selector {
    Selector::from_json(&format!(
        r#"{{
  "select": [
    {{"where": {{"repo": "at://alice.test"}}, "tag": "me"}},
    {{"where": {{"repo": "me", "collection": "app.bsky.graph.follow", "attr": "subject"}}, "tag": "followed"}},
    {{"where": {{"repo": "followed", "collection": "app.bsky.graph.follow", "attr": "subject"}}, "tag": "k2"}},
    {{"where": {{"service": "{pds}", "method": "com.atproto.sync.listRepos", "attr": "repos.*.did",
               "pagination": {{"param": "cursor", "attr": "cursor"}}}}, "tag": "profiles"}}
  ],
  "retain": {{
    "me": {{"*": "*"}},
    "followed": {{"*": "*"}},
    "k2": {{"app.bsky.actor.profile": "self", "app.bsky.feed.post": "latest:10", "app.bsky.*": "latest:1000"}},
    "profiles": {{"app.bsky.actor.profile": "self"}}
  }}
}}"#
    ))
    .unwrap()
}

struct Db(DuckDbStore);

impl Db {
    fn rows(&self, sql: &str) -> Vec<Vec<Json>> {
        self.0.run_sql(sql).unwrap().rows
    }

    /// `collection/rkey` of every record of `did`.
    fn paths(&self, did: &str) -> BTreeSet<String> {
        self.rows(&format!(
            "SELECT collection || '/' || rkey FROM records WHERE did = '{did}'"
        ))
        .into_iter()
        .map(|row| row[0].as_str().unwrap().to_owned())
        .collect()
    }

    fn repo_field(&self, did: &str, field: &str) -> Json {
        self.rows(&format!("SELECT {field} FROM repos WHERE did = '{did}'"))
            .into_iter()
            .next()
            .map_or(Json::Null, |row| row[0].clone())
    }

    /// Polls until `check` holds, failing after `limit`; returns how long it took.
    fn within(&self, limit: Duration, what: &str, check: impl Fn(&Db) -> bool) -> Duration {
        let start = Instant::now();
        loop {
            if check(self) {
                return start.elapsed();
            }
            assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn login(network: &TestNetwork, name: &str) -> Agent {
    let account = network.account(name);
    XrpcClient::new(
        url::Url::parse(&network.pds).unwrap(),
        ClientConfig::with_private_network(true),
    )
    .unwrap()
    .login(&account.handle, &account.password)
    .await
    .unwrap()
}

#[test]
fn example_selector_against_the_reference_pds() {
    let network = TestNetwork::start();
    let alice = network.account("alice").did.clone();
    let bob = network.account("bob").did.clone();
    let carol = network.account("carol").did.clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("butterfly.duckdb");
    let store = DuckDbStore::open(&path).unwrap();
    let db = Db(store.try_clone().unwrap());

    butterfly_net::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let http = HttpClient::new(&HttpConfig::with_private_network(true)).unwrap();
    let resolver = Resolver::new(
        http,
        ResolverConfig {
            plc_url: network.plc.parse().unwrap(),
            handle_resolver: Some(network.pds.parse().unwrap()),
            ..ResolverConfig::default()
        },
    )
    .unwrap();
    let engine = {
        let _guard = runtime.enter();
        Engine::new(
            EngineConfig {
                live: LiveSource::Relay(network.pds.clone()),
                allow_private_network: true,
                batch_interval: Duration::from_millis(50),
                ..EngineConfig::default()
            },
            selector(&network.pds),
            Box::new(store),
            Directory::new(resolver, CacheConfig::default()),
        )
    };
    let stats = engine.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = runtime.spawn(engine.run(async {
        let _ = stopped.await;
    }));

    // The fixpoint: alice under `me` (everything), bob and carol only as `profiles` (a profile,
    // which carol does not have). Nobody is followed by alice yet.
    db.within(Duration::from_secs(30), "the first backfill", |db| {
        db.rows("SELECT count(*) FROM repos WHERE state = 'synced'")[0][0] == 3
    });
    let alice_records = db.paths(&alice);
    assert!(
        alice_records.contains("app.bsky.actor.profile/self"),
        "{alice_records:?}"
    );
    assert_eq!(
        alice_records
            .iter()
            .filter(|p| p.starts_with("app.bsky.feed.post/"))
            .count(),
        2,
        "{alice_records:?}"
    );
    assert_eq!(
        db.paths(&bob),
        ["app.bsky.actor.profile/self".to_owned()].into()
    );
    assert_eq!(db.paths(&carol), BTreeSet::new());
    assert_eq!(db.repo_field(&alice, "tags"), json!(["me", "profiles"]));
    assert_eq!(db.repo_field(&bob, "tags"), json!(["profiles"]));
    // Handles are checked both ways after the backfill, off its path.
    db.within(Duration::from_secs(5), "alice's handle", |db| {
        db.repo_field(&alice, "handle") == json!("alice.test")
    });

    let agent = runtime.block_on(login(&network, "alice"));
    let limit = Duration::from_secs(2);

    // Create, update, delete.
    let post = runtime.block_on(async {
        agent
            .repo()
            .create_record(&CreateRecord::new(
                &alice,
                "app.bsky.feed.post",
                json!({"$type": "app.bsky.feed.post", "text": "live from the engine", "createdAt": "2026-11-21T12:00:00.000Z"}),
            ))
            .await
            .unwrap()
    });
    let rkey = post.rkey().unwrap().to_owned();
    db.within(limit, "the new post", |db| {
        db.rows(&format!(
            "SELECT record->>'text' FROM records WHERE did = '{alice}' AND rkey = '{rkey}'"
        )) == vec![vec![json!("live from the engine")]]
    });
    runtime.block_on(async {
        agent
            .repo()
            .put_record(&PutRecord::new(
                &alice,
                "app.bsky.actor.profile",
                "self",
                json!({"$type": "app.bsky.actor.profile", "displayName": "Alice, updated"}),
            ))
            .await
            .unwrap()
    });
    db.within(limit, "the profile update", |db| {
        db.rows(&format!(
            "SELECT record->>'displayName' FROM records WHERE did = '{alice}' AND rkey = 'self'"
        )) == vec![vec![json!("Alice, updated")]]
    });
    runtime.block_on(async {
        agent
            .repo()
            .delete_record(&DeleteRecord::new(&alice, "app.bsky.feed.post", &rkey))
            .await
            .unwrap()
    });
    db.within(limit, "the delete", |db| {
        !db.paths(&alice)
            .contains(&format!("app.bsky.feed.post/{rkey}"))
    });

    // Alice follows bob: bob becomes `followed` (everything kept), and alice, whom bob follows,
    // becomes `k2` too.
    let follow = runtime.block_on(async {
        agent
            .repo()
            .create_record(&CreateRecord::new(
                &alice,
                "app.bsky.graph.follow",
                json!({"$type": "app.bsky.graph.follow", "subject": bob, "createdAt": "2026-11-21T12:00:01.000Z"}),
            ))
            .await
            .unwrap()
    });
    let took = db.within(
        Duration::from_secs(5),
        "bob followed and backfilled",
        |db| {
            db.repo_field(&bob, "tags") == json!(["followed", "profiles"])
                && db.paths(&bob).len() >= 3
        },
    );
    eprintln!("follow to backfilled: {took:?}");
    let bob_records = db.paths(&bob);
    assert!(
        bob_records
            .iter()
            .any(|p| p.starts_with("app.bsky.feed.like/"))
            && bob_records
                .iter()
                .any(|p| p.starts_with("app.bsky.graph.follow/")),
        "{bob_records:?}"
    );
    db.within(limit, "alice in k2", |db| {
        db.repo_field(&alice, "tags") == json!(["k2", "me", "profiles"])
    });

    // Unfollow: bob is back to `profiles` only, and keeps only his profile.
    runtime.block_on(async {
        agent
            .repo()
            .delete_record(&DeleteRecord::new(
                &alice,
                "app.bsky.graph.follow",
                follow.rkey().unwrap(),
            ))
            .await
            .unwrap()
    });
    db.within(Duration::from_secs(5), "bob unfollowed", |db| {
        db.repo_field(&bob, "tags") == json!(["profiles"])
            && db.paths(&bob) == ["app.bsky.actor.profile/self".to_owned()].into()
    });

    // A handle change.
    runtime.block_on(async {
        let _: Json = agent
            .procedure(
                "com.atproto.identity.updateHandle",
                &json!({"handle": "alice2.test"}),
            )
            .await
            .unwrap();
    });
    db.within(limit, "the new handle", |db| {
        db.repo_field(&alice, "handle") == json!("alice2.test")
    });

    // Carol deactivates.
    runtime.block_on(async {
        let carol_agent = login(&network, "carol").await;
        let _: Json = carol_agent
            .procedure("com.atproto.server.deactivateAccount", &json!({}))
            .await
            .unwrap();
    });
    db.within(limit, "carol deactivated", |db| {
        db.repo_field(&carol, "status") == json!("deactivated")
    });

    // Bob is taken down by the PDS admin: his status shows (his content stays, marked by it).
    runtime.block_on(async {
        let admin = XrpcClient::new(
            url::Url::parse(&network.pds).unwrap(),
            ClientConfig::with_private_network(true),
        )
        .unwrap();
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("admin:{}", network.admin_password));
        let request = XrpcRequest::procedure("com.atproto.admin.updateSubjectStatus")
            .header("authorization", &format!("Basic {basic}"))
            .json(&json!({
                "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": bob},
                "takedown": {"applied": true, "ref": "test"}
            }));
        admin.send(&request).await.unwrap();
    });
    db.within(limit, "bob taken down", |db| {
        db.repo_field(&bob, "status") == json!("takendown")
    });

    let _ = stop.send(());
    runtime.block_on(running).unwrap().unwrap();
    let s = stats.snapshot();
    assert_eq!(s.rejected, 0, "{s:?}");
    assert_eq!(s.backfill_failures, 0, "{s:?}");
}
