//! `/subscribe` against Jetstream's protocol, over a real socket: the live tail, filters, cursor
//! replay, `options_update`, `requireHello`, zstd, refused requests, and slow consumers.
//!
//! The feed is what the engine will give: a [`MemoryStore`]'s event log, and a broadcast that each
//! event goes to after the batch holding it is applied.
#![allow(clippy::unwrap_used)]

use butterfly_serve::feed::{commit_events, EventFeed, EventLog};
use butterfly_serve::subscribe::{Subscribe, SubscribeConfig};
use butterfly_store::{EventKind, MemoryStore, StreamEvent};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The longest any single expected thing may take.
const WAIT: Duration = Duration::from_secs(10);

const ALICE: &str = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
const BOB: &str = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb";
const POST: &str = "app.bsky.feed.post";
const LIKE: &str = "app.bsky.feed.like";
const FOLLOW: &str = "app.bsky.graph.follow";
const BLOCK: &str = "app.bsky.graph.block";
const PROFILE: &str = "app.bsky.actor.profile";

type StoreLog = Mutex<MemoryStore>;

/// A log that cannot be read.
struct BrokenLog;

impl EventLog for BrokenLog {
    fn events_after(self: Arc<Self>, _: i64, _: usize) -> butterfly_serve::feed::LogRead {
        Box::pin(async { Err("disk on fire".into()) })
    }
}

struct Server {
    log: Arc<StoreLog>,
    live: broadcast::Sender<Arc<StreamEvent>>,
    subscribe: Subscribe,
    address: SocketAddr,
    /// The last `time_us` given out; an hour ago at the start, so that cursors are in the past.
    clock: Mutex<i64>,
}

impl Server {
    async fn start(capacity: usize, config: SubscribeConfig) -> Arc<Server> {
        let log = Arc::new(Mutex::new(MemoryStore::new()));
        Self::start_with(capacity, config, log.clone(), log).await
    }

    async fn start_with(
        capacity: usize,
        config: SubscribeConfig,
        log: Arc<StoreLog>,
        feed_log: Arc<dyn EventLog>,
    ) -> Arc<Server> {
        let (live, _) = broadcast::channel(capacity);
        let subscribe = Subscribe::new(EventFeed::new(&live, feed_log), config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = axum::Router::new().merge(subscribe.router());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Arc::new(Server {
            log,
            live,
            subscribe,
            address,
            clock: Mutex::new(butterfly_store::now_micros() - 3_600_000_000),
        })
    }

    fn tick(&self) -> i64 {
        let mut clock = self.clock.lock().unwrap();
        *clock += 1;
        *clock
    }

    /// Commits an event as the engine does: into the log, then onto the broadcast.
    fn publish(&self, event: StreamEvent) -> StreamEvent {
        commit_events(&self.log, &self.live, vec![event.clone()]).unwrap();
        event
    }

    fn commit(&self, did: &str, collection: &str, rkey: &str, operation: &str) -> StreamEvent {
        let time_us = self.tick();
        self.publish(commit(time_us, did, collection, rkey, operation, ""))
    }

    fn identity(&self, did: &str, handle: &str) -> StreamEvent {
        let time_us = self.tick();
        self.publish(identity(time_us, did, handle))
    }

    fn account(&self, did: &str, status: Option<&str>) -> StreamEvent {
        let time_us = self.tick();
        self.publish(account(time_us, did, status))
    }

    fn url(&self, query: &str) -> String {
        let separator = if query.is_empty() { "" } else { "?" };
        format!("ws://{}/subscribe{separator}{query}", self.address)
    }

    /// Connects and waits until the connection reads the feed, so that every event published
    /// after this returns reaches it.
    async fn connect(&self, query: &str) -> Client {
        let readers = self.live.receiver_count();
        let client = self.connect_only(query).await;
        self.wait_for_readers(readers + 1).await;
        client
    }

    async fn connect_only(&self, query: &str) -> Client {
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(self.url(query)))
            .await
            .expect("connected in time")
            .expect("connected")
            .0
    }

    /// The refusal of a connection: its status and JSON body.
    async fn refused(&self, query: &str) -> (u16, serde_json::Value) {
        let answer = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(self.url(query)))
            .await
            .expect("answered in time");
        match answer {
            Err(tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().unwrap_or_default();
                (
                    response.status().as_u16(),
                    serde_json::from_slice(body).expect("a JSON body"),
                )
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("{query:?} was accepted"),
        }
    }

    async fn wait_for_readers(&self, readers: usize) {
        self.wait_until(|| self.live.receiver_count() == readers, "feed readers")
            .await;
    }

    async fn wait_for_connections(&self, connections: usize) {
        self.wait_until(
            || self.subscribe.connections() == connections,
            "connections",
        )
        .await;
    }

    async fn wait_until(&self, done: impl Fn() -> bool, what: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited too long for the {what} (readers {}, connections {})",
                self.live.receiver_count(),
                self.subscribe.connections()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn commit(
    time_us: i64,
    did: &str,
    collection: &str,
    rkey: &str,
    operation: &str,
    text: &str,
) -> StreamEvent {
    let mut body = serde_json::json!({
        "rev": "3l3qo2vutsw2b",
        "operation": operation,
        "collection": collection,
        "rkey": rkey,
    });
    if operation != "delete" {
        body["record"] = serde_json::json!({
            "$type": collection,
            "text": text,
            "createdAt": "2024-09-09T19:46:02.102Z",
        });
        body["cid"] = "bafyreidwaivazkwu67xztlmuobx35hs2lnfh3kolmgfmucldvhd3sgzcqi".into();
    }
    let json =
        serde_json::json!({"did": did, "time_us": time_us, "kind": "commit", "commit": body});
    StreamEvent {
        time_us,
        did: did.into(),
        kind: EventKind::Commit,
        collection: Some(collection.into()),
        json: json.to_string(),
    }
}

fn identity(time_us: i64, did: &str, handle: &str) -> StreamEvent {
    let json = serde_json::json!({
        "did": did, "time_us": time_us, "kind": "identity",
        "identity": {"did": did, "handle": handle, "seq": 42, "time": "2024-09-05T06:11:04.870Z"},
    });
    StreamEvent {
        time_us,
        did: did.into(),
        kind: EventKind::Identity,
        collection: None,
        json: json.to_string(),
    }
}

fn account(time_us: i64, did: &str, status: Option<&str>) -> StreamEvent {
    let mut body = serde_json::json!({
        "active": status.is_none(), "did": did, "seq": 43, "time": "2024-09-05T06:11:04.870Z",
    });
    if let Some(status) = status {
        body["status"] = status.into();
    }
    let json =
        serde_json::json!({"did": did, "time_us": time_us, "kind": "account", "account": body});
    StreamEvent {
        time_us,
        did: did.into(),
        kind: EventKind::Account,
        collection: None,
        json: json.to_string(),
    }
}

/// The next message, pings and pongs included.
async fn next(client: &mut Client) -> Message {
    tokio::time::timeout(WAIT, client.next())
        .await
        .expect("a message in time")
        .expect("the connection is open")
        .expect("a readable message")
}

/// The next `n` events, which must be text messages.
async fn texts(client: &mut Client, n: usize) -> Vec<String> {
    let mut texts = Vec::with_capacity(n);
    while texts.len() < n {
        match next(client).await {
            Message::Text(text) => texts.push(text.to_string()),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected an event, got {other:?}"),
        }
    }
    texts
}

fn jsons(events: &[&StreamEvent]) -> Vec<String> {
    events.iter().map(|event| event.json.clone()).collect()
}

/// Returns once the server has read everything this client sent before: it answers a ping only
/// after handling the messages ahead of it. No event may arrive in between.
async fn barrier(client: &mut Client) {
    client
        .send(Message::Ping(Vec::from(&b"barrier"[..]).into()))
        .await
        .unwrap();
    loop {
        match next(client).await {
            Message::Pong(payload) if payload.as_ref() == b"barrier" => return,
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected the pong, got {other:?}"),
        }
    }
}

async fn options_update(client: &mut Client, payload: serde_json::Value) {
    let message = serde_json::json!({"type": "options_update", "payload": payload});
    client
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

/// Skips events until the server's close frame, then completes the closing handshake: the
/// frame's code and reason.
async fn close_frame(client: &mut Client) -> (u16, String) {
    let frame = loop {
        match next(client).await {
            Message::Close(Some(frame)) => break (frame.code.into(), frame.reason.to_string()),
            Message::Close(None) => panic!("a close frame without a code"),
            _ => {}
        }
    };
    // Reading on sends the client's answer; the server then ends the connection.
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(Ok(_)) = client.next().await {}
    });
    ended
        .await
        .expect("the connection ends after the handshake");
    frame
}

fn config() -> SubscribeConfig {
    SubscribeConfig::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_tail_sends_new_events_verbatim() {
    let server = Server::start(64, config()).await;
    server.commit(ALICE, POST, "3kold", "create");
    let mut client = server.connect("").await;
    let created = server.commit(ALICE, POST, "3kpost", "create");
    let updated = server.commit(ALICE, POST, "3kpost", "update");
    let deleted = server.commit(ALICE, POST, "3kpost", "delete");
    let identity = server.identity(ALICE, "alice.test");
    let account = server.account(ALICE, Some("takendown"));
    assert_eq!(
        texts(&mut client, 5).await,
        jsons(&[&created, &updated, &deleted, &identity, &account]),
        "the events from the connection on, as the store has them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wanted_collections_filter_commits_exactly_or_by_prefix() {
    let server = Server::start(64, config()).await;
    let mut client = server
        .connect("wantedCollections=app.bsky.feed.post&wantedCollections=app.bsky.graph.*")
        .await;
    let post = server.commit(ALICE, POST, "1", "create");
    server.commit(ALICE, LIKE, "2", "create");
    let follow = server.commit(ALICE, FOLLOW, "3", "create");
    server.commit(ALICE, PROFILE, "self", "update");
    let block = server.commit(BOB, BLOCK, "4", "delete");
    let identity = server.identity(BOB, "bob.test");
    let account = server.account(BOB, None);
    let last = server.commit(BOB, POST, "5", "create");
    assert_eq!(
        texts(&mut client, 6).await,
        jsons(&[&post, &follow, &block, &identity, &account, &last]),
        "identity and account events pass whatever the collections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wanted_dids_filter_every_kind() {
    let server = Server::start(64, config()).await;
    let mut client = server
        .connect(&format!("wantedDids={ALICE}&wantedCollections={POST}"))
        .await;
    let post = server.commit(ALICE, POST, "1", "create");
    server.commit(BOB, POST, "2", "create");
    server.commit(ALICE, LIKE, "3", "create");
    server.identity(BOB, "bob.test");
    let identity = server.identity(ALICE, "alice.test");
    server.account(BOB, Some("deactivated"));
    let account = server.account(ALICE, Some("deactivated"));
    assert_eq!(
        texts(&mut client, 3).await,
        jsons(&[&post, &identity, &account])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_replays_the_log_inclusively_then_follows_the_live_tail() {
    let server = Server::start(4096, config()).await;
    let mut expected = Vec::new();
    for n in 0..600 {
        let did = if n % 2 == 0 { ALICE } else { BOB };
        expected.push(server.commit(did, POST, &format!("r{n}"), "create"));
    }
    let cursor = expected[100].time_us;
    let mut client = server.connect(&format!("cursor={cursor}")).await;
    // Committed while the connection replays the log: it must switch to the live tail without a
    // gap or a repeat.
    let publisher = tokio::spawn({
        let server = server.clone();
        async move {
            let mut published = Vec::new();
            for n in 0..300 {
                published.push(server.commit(BOB, LIKE, &format!("l{n}"), "create"));
                if n % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            published
        }
    });
    let received = texts(&mut client, 800).await;
    expected.extend(publisher.await.unwrap());
    let expected = &expected[100..];
    let times: Vec<i64> = received
        .iter()
        .map(|text| {
            serde_json::from_str::<serde_json::Value>(text).unwrap()["time_us"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(
        times.windows(2).all(|pair| pair[0] < pair[1]),
        "strictly increasing"
    );
    assert_eq!(
        received,
        expected
            .iter()
            .map(|event| event.json.clone())
            .collect::<Vec<_>>()
    );

    drop(client);
    server.wait_for_connections(0).await;

    // A zero cursor or one in the future means the live tail.
    let future = butterfly_store::now_micros() + 60_000_000;
    for query in ["cursor=0".to_owned(), format!("cursor={future}")] {
        let mut client = server.connect(&query).await;
        let fresh = server.identity(ALICE, "alice.test");
        assert_eq!(texts(&mut client, 1).await, vec![fresh.json], "{query}");
        drop(client);
        server.wait_for_connections(0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_update_replaces_the_filters_mid_stream() {
    let server = Server::start(64, config()).await;
    let mut client = server.connect(&format!("wantedCollections={POST}")).await;
    let first = server.commit(ALICE, POST, "1", "create");
    server.commit(ALICE, LIKE, "2", "create");
    let second = server.commit(BOB, POST, "3", "create");
    assert_eq!(texts(&mut client, 2).await, jsons(&[&first, &second]));

    options_update(
        &mut client,
        serde_json::json!({"wantedCollections": [LIKE], "wantedDids": [BOB]}),
    )
    .await;
    barrier(&mut client).await;
    server.commit(ALICE, LIKE, "4", "create");
    server.commit(BOB, POST, "5", "create");
    let like = server.commit(BOB, LIKE, "6", "create");
    server.identity(ALICE, "alice.test");
    let identity = server.identity(BOB, "bob.test");
    assert_eq!(texts(&mut client, 2).await, jsons(&[&like, &identity]));

    // Other message types and binary messages are ignored, as Jetstream does.
    client
        .send(Message::Text(r#"{"type":"hello"}"#.into()))
        .await
        .unwrap();
    client
        .send(Message::Binary(Vec::from(&b"\x00\x01"[..]).into()))
        .await
        .unwrap();
    barrier(&mut client).await;
    let another = server.commit(BOB, LIKE, "7", "create");
    assert_eq!(texts(&mut client, 1).await, jsons(&[&another]));

    // An empty payload wants everything again.
    options_update(&mut client, serde_json::json!({})).await;
    barrier(&mut client).await;
    let any = server.commit(ALICE, PROFILE, "self", "update");
    assert_eq!(texts(&mut client, 1).await, jsons(&[&any]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_client_message_closes_the_socket_with_a_policy_code() {
    let server = Server::start(64, config()).await;
    let cases = [
        ("not json".to_owned(), "invalid message"),
        (
            serde_json::json!({"type": "options_update", "payload": {"wantedDids": ["bob"]}})
                .to_string(),
            "invalid options_update: invalid DID",
        ),
        (
            serde_json::json!({"type": "options_update", "payload": {"wantedCollections": "app.bsky.feed.post"}})
                .to_string(),
            "invalid options_update",
        ),
        (
            serde_json::json!({"type": "options_update"}).to_string(),
            "no payload",
        ),
    ];
    for (message, reason) in cases {
        let mut client = server.connect("").await;
        client.send(Message::Text(message.into())).await.unwrap();
        let (code, text) = close_frame(&mut client).await;
        assert_eq!(code, 1008);
        assert!(text.contains(reason), "{text:?} should say {reason:?}");
        drop(client);
        server.wait_for_connections(0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_hello_holds_the_stream_until_the_first_options_update() {
    let server = Server::start(64, config()).await;
    let mut client = server.connect_only("requireHello=true").await;
    let early = server.commit(ALICE, POST, "1", "create");
    // Not a hello: ignored, and still nothing is sent.
    client
        .send(Message::Text(r#"{"type":"hello"}"#.into()))
        .await
        .unwrap();
    barrier(&mut client).await;
    assert_eq!(
        server.live.receiver_count(),
        0,
        "no stream before the hello"
    );

    options_update(
        &mut client,
        serde_json::json!({"wantedCollections": [POST]}),
    )
    .await;
    server.wait_for_readers(1).await;
    let post = server.commit(ALICE, POST, "2", "create");
    server.commit(ALICE, LIKE, "3", "create");
    let another = server.commit(BOB, POST, "4", "create");
    assert_eq!(texts(&mut client, 2).await, jsons(&[&post, &another]));

    // With a cursor, the replay starts at the hello too.
    let mut client = server
        .connect_only(&format!("requireHello=true&cursor={}", early.time_us))
        .await;
    barrier(&mut client).await;
    options_update(&mut client, serde_json::json!({"wantedDids": [ALICE]})).await;
    assert_eq!(
        texts(&mut client, 2).await,
        jsons(&[&early, &post]),
        "from the cursor on, inclusively, Alice's only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_events_are_zstd_frames_with_jetstreams_dictionary() {
    use butterfly_stream::jetstream::{
        self, JetstreamConfig, JetstreamItem, JETSTREAM_ZSTD_DICTIONARY,
    };

    let server = Server::start(64, config()).await;
    let mut decompressor =
        zstd::bulk::Decompressor::with_dictionary(JETSTREAM_ZSTD_DICTIONARY).unwrap();

    // Asked for by the query, or by the header Jetstream also reads.
    let mut by_query = server.connect("compress=true").await;
    let mut request = server.url("").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Socket-Encoding", "zstd".parse().unwrap());
    let readers = server.live.receiver_count();
    let (mut by_header, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    server.wait_for_readers(readers + 1).await;

    let events = [
        server.commit(ALICE, POST, "1", "create"),
        server.identity(ALICE, "alice.test"),
        server.account(ALICE, None),
        server.commit(ALICE, POST, "1", "delete"),
    ];
    for client in [&mut by_query, &mut by_header] {
        for event in &events {
            let Message::Binary(bytes) = next(client).await else {
                panic!("expected a binary message")
            };
            assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
            let json = decompressor.decompress(&bytes, 1 << 20).unwrap();
            assert_eq!(String::from_utf8(json).unwrap(), event.json);
        }
    }

    // Our own Jetstream client, which asks for compression by default, decodes every kind.
    let stream_config = JetstreamConfig {
        stream: butterfly_stream::StreamConfig::with_private_network(true),
        ..JetstreamConfig::default()
    };
    assert!(stream_config.compress);
    let readers = server.live.receiver_count();
    let (connection, mut items) =
        jetstream::subscribe(&server.url(&format!("wantedDids={BOB}")), stream_config).unwrap();
    server.wait_for_readers(readers + 1).await;
    server.commit(ALICE, POST, "2", "create");
    let wanted = [
        server.commit(BOB, POST, "3", "create"),
        server.identity(BOB, "bob.test"),
        server.account(BOB, Some("takendown")),
    ];
    let mut decoded = Vec::new();
    while decoded.len() < wanted.len() {
        match tokio::time::timeout(WAIT, items.recv())
            .await
            .unwrap()
            .unwrap()
        {
            JetstreamItem::Event { raw, event } => {
                let event = event.unwrap();
                decoded.push((String::from_utf8(raw.to_vec()).unwrap(), event.time_us));
            }
            JetstreamItem::Connected { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    let expected: Vec<(String, i64)> = wanted
        .iter()
        .map(|event| (event.json.clone(), event.time_us))
        .collect();
    assert_eq!(decoded, expected);
    connection.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_message_size_bytes_drops_larger_events() {
    let server = Server::start(64, config()).await;
    let mut client = server.connect("maxMessageSizeBytes=1000").await;
    let small = server.publish(commit(server.tick(), ALICE, POST, "1", "create", "hi"));
    server.publish(commit(
        server.tick(),
        ALICE,
        POST,
        "2",
        "create",
        &"x".repeat(2000),
    ));
    let also_small = server.identity(ALICE, "alice.test");
    assert_eq!(texts(&mut client, 2).await, jsons(&[&small, &also_small]));

    // 0 is no limit, in the query as in an update.
    options_update(&mut client, serde_json::json!({"maxMessageSizeBytes": 0})).await;
    barrier(&mut client).await;
    let large = server.publish(commit(
        server.tick(),
        ALICE,
        POST,
        "3",
        "create",
        &"x".repeat(2000),
    ));
    assert_eq!(texts(&mut client, 1).await, jsons(&[&large]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_refused_with_400_before_the_upgrade() {
    let config = SubscribeConfig {
        max_wanted_dids: 2,
        max_wanted_collections: 2,
        ..config()
    };
    let server = Server::start(64, config).await;
    let cases = [
        ("wantedCollections=feed", "invalid collection"),
        (
            "wantedCollections=app.bsky.feed.post*",
            "invalid collection prefix",
        ),
        (
            "wantedCollections=a.b.c&wantedCollections=d.e.f&wantedCollections=g.*",
            "too many wanted collections",
        ),
        ("wantedDids=bob", "invalid DID"),
        (
            "wantedDids=did:web:a.test&wantedDids=did:web:b.test&wantedDids=did:web:c.test",
            "too many wanted DIDs",
        ),
        ("cursor=yesterday", "invalid cursor"),
        ("maxMessageSizeBytes=lots", "invalid maxMessageSizeBytes"),
    ];
    for (query, reason) in cases {
        let (status, body) = server.refused(query).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"], "InvalidRequest", "{query}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(reason), "{query}: {message:?}");
    }
    assert_eq!(server.subscribe.connections(), 0);
    // At the limits, and percent-encoded, all is well.
    server
        .connect("wantedCollections=app.bsky.feed.%2A&wantedDids=did%3Aweb%3Aa.test&wantedDids=did:web:a.test&wantedDids=did:web:b.test")
        .await;
}

/// The server's task cannot run while the test publishes, so the broadcast overflows for it.
#[tokio::test(flavor = "current_thread")]
async fn a_consumer_that_falls_behind_the_live_tail_is_cut_off() {
    let server = Server::start(4, config()).await;
    let mut client = server.connect("").await;
    for n in 0..100 {
        server.commit(ALICE, POST, &format!("{n}"), "create");
    }
    let (code, reason) = close_frame(&mut client).await;
    assert_eq!(code, 1008);
    assert!(
        reason.starts_with("consumer too slow: fell 96 events behind"),
        "{reason:?}"
    );
    assert!(reason.len() <= 123);
    server.wait_for_connections(0).await;
    assert_eq!(server.live.receiver_count(), 0);
}

/// A client that stops reading: once the kernel's buffers are full, a send waits, and the
/// server gives up after the send timeout instead of holding events for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_is_cut_off_after_the_send_timeout() {
    let config = SubscribeConfig {
        send_timeout: Duration::from_millis(300),
        ..config()
    };
    let server = Server::start(1024, config).await;
    // A small receive buffer, so that a few megabytes fill the path.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.address).await.unwrap();
    let readers = server.live.receiver_count();
    let (client, _) =
        tokio_tungstenite::client_async(server.url(""), MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    server.wait_for_readers(readers + 1).await;
    let text = "x".repeat(64 << 10);
    for n in 0..200 {
        server.publish(commit(
            server.tick(),
            ALICE,
            POST,
            &format!("{n}"),
            "create",
            &text,
        ));
    }
    server.wait_for_connections(0).await;
    assert_eq!(server.live.receiver_count(), 0, "its reader is gone");
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_with_503() {
    let config = SubscribeConfig {
        max_connections: 2,
        ..config()
    };
    let server = Server::start(64, config).await;
    let mut first = server.connect("").await;
    let _second = server.connect("").await;
    let (status, body) = server.refused("").await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "TooManyConnections");
    first.close(None).await.unwrap();
    server.wait_for_connections(1).await;
    server.connect("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_and_a_client_that_leaves_is_let_go() {
    let server = Server::start(64, config()).await;
    let mut client = server.connect("").await;
    barrier(&mut client).await;
    client.close(None).await.unwrap();
    // The server answers the close, then lets the connection go.
    loop {
        match tokio::time::timeout(WAIT, client.next()).await.unwrap() {
            None | Some(Err(_)) => break,
            Some(Ok(Message::Close(_))) => {}
            Some(Ok(other)) => panic!("{other:?}"),
        }
    }
    server.wait_for_connections(0).await;
    assert_eq!(server.live.receiver_count(), 0, "its reader is gone");

    // A client that just drops the TCP connection is let go too.
    let client = server.connect("").await;
    drop(client);
    server.wait_for_connections(0).await;
    assert_eq!(server.live.receiver_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_message_over_10_mb_is_refused() {
    let server = Server::start(64, config()).await;
    let mut client = server.connect("").await;
    let huge = format!(
        r#"{{"type":"options_update","payload":{{"wantedDids":[],"padding":"{}"}}}}"#,
        "x".repeat(11 << 20)
    );
    // The server may stop reading before the whole message is written.
    let _ = client.send(Message::Text(huge.into())).await;
    loop {
        match tokio::time::timeout(WAIT, client.next()).await.unwrap() {
            None | Some(Err(_)) => break,
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1008);
                assert!(frame.reason.contains("unreadable message"), "{frame:?}");
            }
            Some(Ok(other)) => panic!("{other:?}"),
        }
    }
    server.wait_for_connections(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_read_closes_with_an_internal_error() {
    let unused = Arc::new(Mutex::new(MemoryStore::new()));
    let server = Server::start_with(64, config(), unused, Arc::new(BrokenLog)).await;
    let mut client = server.connect_only("cursor=1").await;
    let (code, reason) = close_frame(&mut client).await;
    assert_eq!(code, 1011);
    assert!(
        !reason.contains("disk on fire"),
        "internal details stay in the log"
    );
    server.wait_for_connections(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_told_when_the_stream_ends() {
    let log = Arc::new(Mutex::new(MemoryStore::new()));
    let (live, _) = broadcast::channel(16);
    let feed = EventFeed::new(&live, log.clone());
    let subscribe = Subscribe::new(feed, SubscribeConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = axum::Router::new().merge(subscribe.router());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let url = format!("ws://{address}/subscribe");
    let (mut client, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connected in time")
        .expect("connected");
    let deadline = tokio::time::Instant::now() + WAIT;
    while live.receiver_count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection reads the feed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let event = commit(
        butterfly_store::now_micros(),
        ALICE,
        POST,
        "3k",
        "create",
        "hello",
    );
    commit_events(&log, &live, vec![event.clone()]).unwrap();
    assert_eq!(texts(&mut client, 1).await, jsons(&[&event]));

    // The publisher lets go (the engine stopped): the client hears so, rather than waiting.
    drop(live);
    let (code, _) = close_frame(&mut client).await;
    assert_eq!(code, 1001);
    assert_eq!(subscribe.connections(), 0);
}
