//! `butterfly serve` against the reference PDS (`../shared/peers`): the XRPC reads answer as the
//! PDS itself does, backlinks find bob's like, the Jetstream-compatible stream carries a new post,
//! the admin endpoints change what is synced (and refuse without the token), metrics scrape, and
//! the database then serves read-only, replaying the event log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use butterfly_testnet::TestNetwork;
use butterfly_xrpc::{ClientConfig, CreateRecord, ListRecords, XrpcClient};
use serde_json::{json, Value as Json};
use std::time::{Duration, Instant};
use support::{http, Running};

const TOKEN: &str = "s3cret-admin-token";

fn selector() -> String {
    json!({
        "select": [
            {"where": {"repo": "at://alice.test"}, "tag": "me"},
            {"where": {"repo": "at://bob.test"}, "tag": "friends"},
            // Selects nobody by itself; the admin API pins repos to it.
            {"where": {"repo": "me", "collection": "app.bsky.graph.block", "attr": "subject"}, "tag": "watch"}
        ],
        "retain": {"me": {"*": "*"}, "friends": {"*": "*"}, "watch": {"*": "*"}}
    })
    .to_string()
}

struct Api {
    addr: String,
}

impl Api {
    fn get(&self, path: &str) -> (u16, Json) {
        let (status, body) = http(&self.addr, "GET", path, &[], None);
        (
            status,
            serde_json::from_str(&body).unwrap_or(Json::String(body)),
        )
    }

    fn admin(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Json) {
        let header = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = header
            .as_deref()
            .map(|h| vec![("Authorization", h)])
            .unwrap_or_default();
        let (status, body) = http(&self.addr, method, path, &headers, Some(body));
        (
            status,
            serde_json::from_str(&body).unwrap_or(Json::String(body)),
        )
    }

    /// The DIDs `listRepos` returns.
    fn repos(&self) -> Vec<String> {
        let (status, body) = self.get("/xrpc/com.atproto.sync.listRepos");
        assert_eq!(status, 200, "{body}");
        body["repos"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["rev"] != "")
            .map(|r| r["did"].as_str().unwrap().to_owned())
            .collect()
    }

    fn within(&self, limit: Duration, what: &str, check: impl Fn(&Api) -> bool) {
        let start = Instant::now();
        while !check(self) {
            assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `GET` a path on the PDS itself, for comparison.
fn pds_get(pds: &str, path: &str) -> (u16, Json) {
    let addr = pds.trim_start_matches("http://").trim_end_matches('/');
    let (status, body) = http(addr, "GET", path, &[], None);
    (status, serde_json::from_str(&body).unwrap())
}

/// A Jetstream client allowed onto loopback.
fn local_stream() -> butterfly_stream::jetstream::JetstreamConfig {
    let mut config = butterfly_stream::jetstream::JetstreamConfig::default();
    config.stream.network.allow_private_network = true;
    config
}

/// A webhook receiver on loopback: every body POSTed, answered 200.
fn webhook_receiver() -> (String, std::sync::mpsc::Receiver<Json>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if tx.send(serde_json::from_slice(&body).unwrap()).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

fn start_serve(dir: &std::path::Path, args: &[&str]) -> (Running, Api) {
    let server = Running::start(dir, args);
    let line = server.next();
    let url = line["listening"]
        .as_str()
        .expect("a listening line")
        .to_owned();
    let addr = url.trim_start_matches("http://").to_owned();
    (server, Api { addr })
}

#[test]
fn serve_against_the_reference_pds() {
    let network = TestNetwork::start();
    let alice = network.account("alice").did.clone();
    let bob = network.account("bob").did.clone();
    let carol = network.account("carol").did.clone();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("selector.json"), selector()).unwrap();
    let db = dir.path().join("b.duckdb");
    let db = db.to_str().unwrap();
    let identity = [
        "--plc",
        &network.plc,
        "--handle-resolver",
        &network.pds,
        "--allow-private-network",
    ];
    let (hook, hooked) = webhook_receiver();
    let mut args = vec![
        "serve",
        "selector.json",
        "--webhook",
        &hook,
        "--db",
        db,
        "--listen",
        "127.0.0.1:0",
        "--relay",
        &network.pds,
        "--admin-token",
        TOKEN,
        "-q",
    ];
    args.extend_from_slice(&identity);
    let (server, api) = start_serve(dir.path(), &args);

    api.within(Duration::from_secs(30), "alice and bob backfilled", |api| {
        let repos = api.repos();
        repos.contains(&alice) && repos.contains(&bob)
    });

    // XRPC reads answer exactly as the PDS does.
    for path in [
        format!("/xrpc/com.atproto.repo.listRecords?repo={alice}&collection=app.bsky.feed.post"),
        format!("/xrpc/com.atproto.repo.listRecords?repo={alice}&collection=app.bsky.feed.post&reverse=true"),
        format!("/xrpc/com.atproto.repo.getRecord?repo={bob}&collection=app.bsky.actor.profile&rkey=self"),
        "/xrpc/com.atproto.repo.getRecord?repo=alice.test&collection=app.bsky.actor.profile&rkey=self".to_owned(),
    ] {
        let ours = api.get(&path);
        let theirs = pds_get(&network.pds, &path);
        assert_eq!(ours, theirs, "{path}");
    }
    // Paging one record at a time walks the same records as the PDS's single page.
    let (_, all) = pds_get(
        &network.pds,
        &format!("/xrpc/com.atproto.repo.listRecords?repo={alice}&collection=app.bsky.feed.post"),
    );
    let (_, first) = api.get(&format!(
        "/xrpc/com.atproto.repo.listRecords?repo={alice}&collection=app.bsky.feed.post&limit=1"
    ));
    let cursor = first["cursor"]
        .as_str()
        .expect("a cursor after a full page");
    let (_, second) = api.get(&format!(
        "/xrpc/com.atproto.repo.listRecords?repo={alice}&collection=app.bsky.feed.post&limit=1&cursor={cursor}"
    ));
    assert_eq!(first["records"][0], all["records"][0]);
    assert_eq!(second["records"][0], all["records"][1]);
    // describeRepo: the same identity and collections.
    let path = format!("/xrpc/com.atproto.repo.describeRepo?repo={alice}");
    let (status, ours) = api.get(&path);
    assert_eq!(status, 200, "{ours}");
    let (_, theirs) = pds_get(&network.pds, &path);
    for field in ["did", "handle", "didDoc", "collections", "handleIsCorrect"] {
        assert_eq!(ours[field], theirs[field], "describeRepo {field}");
    }
    // Errors have the PDS's status and name.
    let missing =
        format!("/xrpc/com.atproto.repo.getRecord?repo={alice}&collection=app.bsky.feed.post&rkey=3zzzzzzzzzzzz");
    let (status, body) = api.get(&missing);
    let (pds_status, pds_body) = pds_get(&network.pds, &missing);
    assert_eq!(
        (status, &body["error"]),
        (pds_status, &pds_body["error"]),
        "{body}"
    );
    let (status, body) = api.get(&format!(
        "/xrpc/com.atproto.repo.listRecords?repo={alice}&collection=app.bsky.feed.post&limit=1000"
    ));
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("InvalidRequest"))
    );
    let (status, body) = api.get("/xrpc/com.atproto.repo.getRecord?collection=x.y.z&rkey=self");
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("InvalidRequest"))
    );
    let (status, body) =
        api.get("/xrpc/com.atproto.repo.getRecord?repo=%FF%00&collection=..&rkey=/");
    assert_eq!(status, 400, "{body}");
    let (status, body) = api.get("/xrpc/com.atproto.identity.resolveHandle?handle=alice.test");
    assert_eq!((status, body), (200, json!({"did": alice})));

    // The SDK's XRPC client reads from Butterfly as from a PDS.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    butterfly_net::install_crypto_provider();
    let ours = XrpcClient::new(
        url::Url::parse(&format!("http://{}", api.addr)).unwrap(),
        ClientConfig::with_private_network(true),
    )
    .unwrap();
    let record = runtime
        .block_on(
            ours.repo()
                .get_record(&bob, "app.bsky.actor.profile", "self"),
        )
        .unwrap();
    assert_eq!(
        record.uri,
        format!("at://{bob}/app.bsky.actor.profile/self")
    );
    let page = runtime
        .block_on(
            ours.repo()
                .list_records(&ListRecords::new(&alice, "app.bsky.feed.post")),
        )
        .unwrap();
    assert_eq!(page.records.len(), 2);

    // Backlinks: bob's like of alice's post, in Constellation's shapes.
    let (_, likes) = pds_get(
        &network.pds,
        &format!("/xrpc/com.atproto.repo.listRecords?repo={bob}&collection=app.bsky.feed.like"),
    );
    let like = &likes["records"][0];
    let subject = like["value"]["subject"]["uri"].as_str().unwrap().to_owned();
    let like_rkey = like["uri"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let encoded = url::form_urlencoded::byte_serialize(subject.as_bytes()).collect::<String>();
    let (status, body) = api.get(&format!(
        "/xrpc/blue.microcosm.links.getBacklinks?subject={encoded}&source=app.bsky.feed.like:subject.uri"
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"total": 1, "records": [{"did": bob, "collection": "app.bsky.feed.like", "rkey": like_rkey}], "cursor": null})
    );
    let (_, body) = api.get(&format!(
        "/xrpc/blue.microcosm.links.getBacklinksCount?subject={encoded}&source=app.bsky.feed.like:subject.uri"
    ));
    assert_eq!(body, json!({"total": 1}));
    let (_, body) = api.get(&format!(
        "/xrpc/blue.microcosm.links.getBacklinksCount?subject={alice}&source=app.bsky.graph.follow:subject"
    ));
    assert_eq!(
        body,
        json!({"total": 1}),
        "bob follows alice (carol is not synced)"
    );

    // The stream: a new post arrives on /subscribe, filtered by collection.
    let stream_url = format!(
        "ws://{}/subscribe?wantedCollections=app.bsky.feed.*",
        api.addr
    );
    let (connection, mut events) = {
        let _guard = runtime.enter();
        butterfly_stream::jetstream::subscribe(&stream_url, local_stream()).unwrap()
    };
    // Let the connection open before writing.
    runtime.block_on(async {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Some(butterfly_stream::jetstream::JetstreamItem::Connected { .. })) => break,
                Ok(Some(_)) => continue,
                other => panic!("no connection to /subscribe: {other:?}"),
            }
        }
    });
    let agent = runtime.block_on(async {
        XrpcClient::new(
            url::Url::parse(&network.pds).unwrap(),
            ClientConfig::with_private_network(true),
        )
        .unwrap()
        .login("alice.test", &network.account("alice").password)
        .await
        .unwrap()
    });
    let created = runtime.block_on(async {
        agent
            .repo()
            .create_record(&CreateRecord::new(
                &alice,
                "app.bsky.feed.post",
                json!({"$type": "app.bsky.feed.post", "text": "served live", "createdAt": "2026-11-21T12:00:00.000Z"}),
            ))
            .await
            .unwrap()
    });
    let rkey = created.rkey().unwrap().to_owned();
    let event: Json = runtime.block_on(async {
        loop {
            match tokio::time::timeout(Duration::from_secs(15), events.recv()).await {
                Ok(Some(butterfly_stream::jetstream::JetstreamItem::Event { raw, .. })) => {
                    let event: Json = serde_json::from_slice(&raw).unwrap();
                    if event["kind"] == "commit" {
                        break event;
                    }
                }
                Ok(Some(_)) => continue,
                other => panic!("no event on /subscribe within 5 s: {other:?}"),
            }
        }
    });
    assert_eq!(event["did"], json!(alice));
    assert_eq!(event["commit"]["operation"], "create");
    assert_eq!(event["commit"]["collection"], "app.bsky.feed.post");
    assert_eq!(event["commit"]["rkey"], json!(rkey));
    assert_eq!(event["commit"]["record"]["text"], "served live");
    assert_eq!(event["commit"]["cid"], json!(created.cid));
    let first_time_us = event["time_us"].as_i64().unwrap();
    connection.shutdown();
    // The webhook got the same event, byte for byte the same JSON.
    let deadline = Instant::now() + Duration::from_secs(10);
    let delivered = loop {
        let batch = hooked
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a webhook delivery within 10 s");
        let events = batch["events"].as_array().unwrap().clone();
        if let Some(found) = events
            .into_iter()
            .find(|e| e["time_us"] == json!(first_time_us))
        {
            break found;
        }
    };
    assert_eq!(delivered, event);

    // A second Butterfly follows the first's /subscribe as its Jetstream source (trusted mode):
    // a post written to the PDS reaches it through both.
    std::fs::write(
        dir.path().join("alice.json"),
        json!({"select": [{"where": {"repo": "at://alice.test"}, "tag": "me"}], "retain": {"me": {"*": "*"}}})
            .to_string(),
    )
    .unwrap();
    let downstream_db = dir.path().join("downstream.duckdb");
    let jetstream = format!("ws://{}/subscribe", api.addr);
    let mut downstream_args = vec![
        "serve",
        "alice.json",
        "--db",
        downstream_db.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--jetstream",
        &jetstream,
        "-q",
    ];
    downstream_args.extend_from_slice(&identity);
    let (downstream, downstream_api) = start_serve(dir.path(), &downstream_args);
    downstream_api.within(
        Duration::from_secs(20),
        "alice backfilled downstream",
        |api| api.repos().contains(&alice),
    );
    let relayed = runtime.block_on(async {
        agent
            .repo()
            .create_record(&CreateRecord::new(
                &alice,
                "app.bsky.feed.post",
                json!({"$type": "app.bsky.feed.post", "text": "relayed", "createdAt": "2026-11-21T12:00:01.000Z"}),
            ))
            .await
            .unwrap()
    });
    let relayed_path = format!(
        "/xrpc/com.atproto.repo.getRecord?repo={alice}&collection=app.bsky.feed.post&rkey={}",
        relayed.rkey().unwrap()
    );
    downstream_api.within(
        Duration::from_secs(15),
        "the post through two Butterflies",
        |api| api.get(&relayed_path).1["value"]["text"] == "relayed",
    );
    drop(downstream);

    // Admin: refused without the right token.
    let add_carol = json!({"add": [{"repo": "carol.test", "tags": ["watch"]}]}).to_string();
    assert_eq!(api.admin("POST", "/admin/repos", None, &add_carol).0, 401);
    assert_eq!(
        api.admin("POST", "/admin/repos", Some("wrong"), &add_carol)
            .0,
        401
    );
    assert_eq!(
        api.admin(
            "POST",
            "/admin/repos",
            Some(&format!("{TOKEN}x")),
            &add_carol
        )
        .0,
        401
    );
    assert!(!api.repos().contains(&carol));
    // Unknown tags and bad bodies are refused with a reason.
    let (status, body) = api.admin(
        "POST",
        "/admin/repos",
        Some(TOKEN),
        &json!({"add": [{"repo": carol, "tags": ["nope"]}]}).to_string(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("unknown tag"),
        "{body}"
    );
    assert_eq!(
        api.admin("POST", "/admin/repos", Some(TOKEN), "{not json")
            .0,
        400
    );
    // Adding carol by handle: she is backfilled without a restart.
    let (status, body) = api.admin("POST", "/admin/repos", Some(TOKEN), &add_carol);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["repos"][0]["did"], json!(carol));
    assert_eq!(body["repos"][0]["tags"], json!(["watch"]));
    api.within(Duration::from_secs(10), "carol backfilled", |api| {
        api.repos().contains(&carol)
    });
    let (_, follows) = api.get(&format!(
        "/xrpc/com.atproto.repo.listRecords?repo={carol}&collection=app.bsky.graph.follow"
    ));
    assert_eq!(follows["records"].as_array().unwrap().len(), 1, "{follows}");
    // Resync.
    let (status, body) = api.admin(
        "POST",
        "/admin/resync",
        Some(TOKEN),
        &json!({"repos": [alice]}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    // Removing carol altogether.
    let (status, body) = api.admin(
        "POST",
        "/admin/repos",
        Some(TOKEN),
        &json!({"remove": [{"repo": carol}]}).to_string(),
    );
    assert_eq!(
        (status, &body["repos"][0]["tags"]),
        (200, &json!([])),
        "{body}"
    );
    api.within(Duration::from_secs(15), "carol removed", |api| {
        !api.repos().contains(&carol)
    });
    // A new selector without bob: bob goes.
    let without_bob = json!({
        "select": [{"where": {"repo": "at://alice.test"}, "tag": "me"}],
        "retain": {"me": {"*": "*"}}
    })
    .to_string();
    assert_eq!(
        api.admin("PUT", "/admin/selector", Some(TOKEN), "{\"select\": 3}")
            .0,
        400
    );
    let (status, body) = api.admin("PUT", "/admin/selector", Some(TOKEN), &without_bob);
    assert_eq!(status, 200, "{body}");
    api.within(Duration::from_secs(10), "bob removed", |api| {
        let repos = api.repos();
        repos == vec![alice.clone()]
    });

    // Metrics, health, OpenAPI.
    let (status, text) = http(&api.addr, "GET", "/metrics", &[], None);
    assert_eq!(status, 200);
    for name in [
        "butterfly_firehose_events_total{type=\"commit\"}",
        "butterfly_repos{state=\"synced\"}",
        "butterfly_backfill_queue",
        "butterfly_firehose_lag_seconds",
        "butterfly_store_write_seconds_bucket",
        "butterfly_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    assert!(
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .all(|l| l.starts_with("butterfly_")),
        "every metric is prefixed"
    );
    let (status, health) = api.get("/health");
    assert_eq!((status, &health["status"]), (200, &json!("ok")), "{health}");
    let (status, spec) = api.get("/openapi.json");
    assert_eq!((status, &spec["openapi"]), (200, &json!("3.1.0")));
    assert!(spec["paths"]["/admin/repos"].is_object());

    // Stop, then serve the same database read-only: reads work, admin cannot, and the stream
    // replays the log from a cursor.
    server.interrupt();
    let (reader, api) = start_serve(
        dir.path(),
        &["serve", "--db", db, "--listen", "127.0.0.1:0", "-q"],
    );
    let path = format!(
        "/xrpc/com.atproto.repo.getRecord?repo={alice}&collection=app.bsky.feed.post&rkey={rkey}"
    );
    let (status, body) = api.get(&path);
    assert_eq!(
        (status, &body["value"]["text"]),
        (200, &json!("served live"))
    );
    assert_eq!(
        api.admin("POST", "/admin/resync", Some(TOKEN), "{\"repos\": []}")
            .0,
        403,
        "no token given to the read-only server: admin is off"
    );
    let (connection, mut events) = {
        let _guard = runtime.enter();
        butterfly_stream::jetstream::subscribe(
            &format!("ws://{}/subscribe?cursor={}", api.addr, first_time_us),
            local_stream(),
        )
        .unwrap()
    };
    let replayed: Json = runtime.block_on(async {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Some(butterfly_stream::jetstream::JetstreamItem::Event { raw, .. })) => {
                    break serde_json::from_slice(&raw).unwrap()
                }
                Ok(Some(_)) => continue,
                other => panic!("no replayed event: {other:?}"),
            }
        }
    });
    assert_eq!(replayed["time_us"], json!(first_time_us));
    assert_eq!(replayed["commit"]["rkey"], json!(rkey));
    connection.shutdown();
    drop(reader);
}
