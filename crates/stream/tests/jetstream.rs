//! The Jetstream client against a local server speaking Jetstream's JSON protocol: filters and cursor
//! as query parameters, typed events, `options_update`, reconnection, and zstd with and without the
//! dictionary.
#![allow(clippy::unwrap_used)]

mod common;

use std::borrow::Cow;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket};
use butterfly_stream::jetstream::{
    subscribe, Event, EventKind, Filters, JetstreamConfig, JetstreamConnection, JetstreamItem,
    Operation, JETSTREAM_ZSTD_DICTIONARY,
};
use butterfly_stream::DisconnectReason;
use common::{fast_config, idle, next, serve};
use tokio::sync::mpsc;

const PATH: &str = "/subscribe";
const DID: &str = "did:plc:ufbl4k27gp6kzas5glhz7fim";

fn commit_json(time_us: i64, collection: &str) -> String {
    format!(
        r#"{{"did":"{DID}","time_us":{time_us},"kind":"commit","commit":{{"rev":"3l3qo2vutsw2b","operation":"create","collection":"{collection}","rkey":"3l3qo2vuowo2b","record":{{"$type":"{collection}","text":"hello","createdAt":"2024-09-09T19:46:02.102Z"}},"cid":"bafyreidwaivazkwu67xztlmuobx35hs2lnfh3kolmgfmucldvhd3sgzcqi"}}}}"#
    )
}

fn identity_json(time_us: i64) -> String {
    format!(
        r#"{{"did":"{DID}","time_us":{time_us},"kind":"identity","identity":{{"did":"{DID}","handle":"alice.test","seq":42,"time":"2024-09-05T06:11:04.870Z"}}}}"#
    )
}

fn account_json(time_us: i64) -> String {
    format!(
        r#"{{"did":"{DID}","time_us":{time_us},"kind":"account","account":{{"active":false,"did":"{DID}","seq":43,"time":"2024-09-05T06:11:04.870Z","status":"takendown"}}}}"#
    )
}

async fn send_text(socket: &mut WebSocket, json: String) {
    socket.send(WsMessage::Text(json.into())).await.unwrap();
}

fn config() -> JetstreamConfig {
    JetstreamConfig {
        compress: false,
        cursor_rewind: Duration::from_secs(1),
        stream: fast_config(),
        ..JetstreamConfig::default()
    }
}

/// The next item, which must be a decoded event.
async fn next_event(items: &mut mpsc::Receiver<JetstreamItem>) -> Event {
    match next(items).await {
        JetstreamItem::Event {
            event: Ok(event), ..
        } => event,
        other => panic!("{other:?}"),
    }
}

/// The next event's `time_us`, failing on anything else.
async fn next_time(items: &mut mpsc::Receiver<JetstreamItem>) -> i64 {
    next_event(items).await.time_us
}

#[tokio::test]
async fn filters_and_cursor_go_in_the_query_and_events_are_typed() {
    let server = serve(PATH, |mut conn| async move {
        send_text(&mut conn.socket, commit_json(100, "app.bsky.feed.post")).await;
        send_text(&mut conn.socket, identity_json(101)).await;
        send_text(&mut conn.socket, account_json(102)).await;
        send_text(
            &mut conn.socket,
            format!(r#"{{"did":"{DID}","time_us":103,"kind":"label","label":{{}}}}"#),
        )
        .await;
        send_text(&mut conn.socket, "{not json".to_owned()).await;
        send_text(&mut conn.socket, commit_json(104, "app.bsky.graph.follow")).await;
        idle(&mut conn.socket).await;
    })
    .await;
    let config = JetstreamConfig {
        filters: Filters {
            wanted_collections: vec!["app.bsky.feed.*".to_owned()],
            wanted_dids: vec![DID.to_owned(), "did:web:example.com".to_owned()],
        },
        cursor: Some(99),
        ..config()
    };
    // A collection in the URL is added to the configured ones.
    let endpoint = format!(
        "{}?wantedCollections=app.bsky.graph.follow",
        server.ws(PATH)
    );
    let (connection, mut items) = subscribe(&endpoint, config).unwrap();

    assert!(matches!(
        next(&mut items).await,
        JetstreamItem::Connected { cursor: Some(99) }
    ));
    let JetstreamItem::Event {
        event: Ok(event),
        raw,
    } = next(&mut items).await
    else {
        panic!()
    };
    assert_eq!(raw, commit_json(100, "app.bsky.feed.post").as_bytes());
    assert_eq!(event.did.as_str(), DID);
    let EventKind::Commit(commit) = event.kind else {
        panic!("{event:?}")
    };
    assert_eq!(commit.operation, Operation::Create);
    assert_eq!(commit.collection.as_str(), "app.bsky.feed.post");
    assert_eq!(commit.record.unwrap()["text"], "hello");

    let EventKind::Identity(identity) = next_event(&mut items).await.kind else {
        panic!()
    };
    assert_eq!(identity.handle.unwrap().as_str(), "alice.test");
    assert_eq!(identity.seq, 42);

    let EventKind::Account(account) = next_event(&mut items).await.kind else {
        panic!()
    };
    assert_eq!(account.status.as_deref(), Some("takendown"));

    assert_eq!(
        next_event(&mut items).await.kind,
        EventKind::Unknown {
            kind: "label".to_owned()
        }
    );
    assert!(matches!(
        next(&mut items).await,
        JetstreamItem::Event { event: Err(_), .. }
    ));
    assert_eq!(next_time(&mut items).await, 104);
    assert_eq!(connection.cursor(), Some(104));

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].params("wantedCollections"),
        ["app.bsky.feed.*", "app.bsky.graph.follow"]
    );
    assert_eq!(seen[0].params("wantedDids"), [DID, "did:web:example.com"]);
    assert_eq!(seen[0].params("cursor"), ["99"]);
    assert_eq!(seen[0].param("compress"), None);
    assert!(seen[0].headers.get("socket-encoding").is_none());
    connection.close().await;
}

#[tokio::test]
async fn options_update_is_sent_on_the_socket_and_kept_for_reconnects() {
    let (updates_sender, mut updates) = mpsc::channel::<String>(4);
    let server = serve(PATH, move |mut conn| {
        let updates_sender = updates_sender.clone();
        async move {
            if conn.index == 0 {
                // The last stamp is earlier (Jetstream stamps can be slightly out of order): it
                // must not move the cursor back.
                for time_us in [10_000_000, 10_500_000, 10_400_000] {
                    send_text(&mut conn.socket, commit_json(time_us, "app.bsky.feed.post")).await;
                }
                // Wait for the client's options_update, then drop the connection.
                while let Some(Ok(message)) = conn.socket.recv().await {
                    if let WsMessage::Text(text) = message {
                        updates_sender.send(text.to_string()).await.unwrap();
                        return;
                    }
                }
                return;
            }
            idle(&mut conn.socket).await;
        }
    })
    .await;
    let (connection, mut items) = subscribe(&server.ws(PATH), config()).unwrap();
    assert!(matches!(
        next(&mut items).await,
        JetstreamItem::Connected { cursor: None }
    ));
    assert_eq!(next_time(&mut items).await, 10_000_000);
    assert_eq!(next_time(&mut items).await, 10_500_000);
    assert_eq!(next_time(&mut items).await, 10_400_000);
    assert_eq!(connection.cursor(), Some(10_500_000));

    let filters = Filters {
        wanted_collections: vec!["app.bsky.graph.*".to_owned()],
        wanted_dids: vec![DID.to_owned()],
    };
    connection.update_options(filters.clone());
    let update = tokio::time::timeout(common::WAIT, updates.recv())
        .await
        .unwrap()
        .unwrap();
    let update: serde_json::Value = serde_json::from_str(&update).unwrap();
    assert_eq!(
        update,
        serde_json::json!({"type": "options_update", "payload": {
            "wantedCollections": ["app.bsky.graph.*"],
            "wantedDids": [DID],
            "maxMessageSizeBytes": 0,
        }})
    );

    // The server dropped the connection: the client resumes one second (the rewind) before the
    // highest time delivered, with the new filters.
    match next(&mut items).await {
        JetstreamItem::Disconnected {
            cursor,
            reason: DisconnectReason::Closed { .. } | DisconnectReason::Transport(_),
            ..
        } => assert_eq!(cursor, Some(9_500_000)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        next(&mut items).await,
        JetstreamItem::Connected {
            cursor: Some(9_500_000)
        }
    ));
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].params("wantedCollections"), ["app.bsky.graph.*"]);
    assert_eq!(seen[1].params("wantedDids"), [DID]);
    assert_eq!(seen[1].params("cursor"), ["9500000"]);
    assert_eq!(connection.filters(), filters);
    connection.close().await;
}

/// Serves three commits compressed with `dictionary` (or plain zstd without one).
async fn compressed_server(dictionary: Option<&'static [u8]>) -> common::Server {
    serve(PATH, move |mut conn| async move {
        let mut compressor = match dictionary {
            Some(dictionary) => zstd::bulk::Compressor::with_dictionary(3, dictionary).unwrap(),
            None => zstd::bulk::Compressor::new(3).unwrap(),
        };
        for time_us in 1..=3 {
            let json = commit_json(time_us, "app.bsky.feed.post");
            let compressed = compressor.compress(json.as_bytes()).unwrap();
            conn.socket
                .send(WsMessage::Binary(compressed.into()))
                .await
                .unwrap();
        }
        idle(&mut conn.socket).await;
    })
    .await
}

/// Subscribes to `server` asking for compression, with `zstd_dictionary`, and takes the `Connected`
/// item.
async fn subscribe_compressed(
    server: &common::Server,
    zstd_dictionary: Option<Cow<'static, [u8]>>,
) -> (JetstreamConnection, mpsc::Receiver<JetstreamItem>) {
    let config = JetstreamConfig {
        compress: true,
        zstd_dictionary,
        ..config()
    };
    let (connection, mut items) = subscribe(&server.ws(PATH), config).unwrap();
    assert!(matches!(
        next(&mut items).await,
        JetstreamItem::Connected { .. }
    ));
    (connection, items)
}

#[tokio::test]
async fn zstd_with_jetstreams_dictionary() {
    let server = compressed_server(Some(JETSTREAM_ZSTD_DICTIONARY)).await;
    let (connection, mut items) =
        subscribe_compressed(&server, Some(Cow::Borrowed(JETSTREAM_ZSTD_DICTIONARY))).await;
    for time_us in 1..=3 {
        match next(&mut items).await {
            JetstreamItem::Event {
                event: Ok(event),
                raw,
            } => {
                assert_eq!(event.time_us, time_us);
                assert_eq!(raw, commit_json(time_us, "app.bsky.feed.post").as_bytes());
            }
            other => panic!("{other:?}"),
        }
    }
    let seen = server.seen();
    assert_eq!(seen[0].param("compress"), Some("true"));
    assert_eq!(
        seen[0]
            .headers
            .get("socket-encoding")
            .unwrap()
            .to_str()
            .unwrap(),
        "zstd"
    );
    connection.close().await;
}

#[tokio::test]
async fn zstd_without_a_dictionary() {
    let server = compressed_server(None).await;
    let (connection, mut items) = subscribe_compressed(&server, None).await;
    for time_us in 1..=3 {
        assert_eq!(next_time(&mut items).await, time_us);
    }
    connection.close().await;
}

#[tokio::test]
async fn a_message_compressed_with_another_dictionary_is_a_decode_error_and_the_stream_goes_on() {
    let server = compressed_server(Some(JETSTREAM_ZSTD_DICTIONARY)).await;
    let other_dictionary = {
        // A raw-content dictionary: zstd accepts any bytes as one.
        let text: Vec<u8> = (0..4096u32).flat_map(|n| n.to_le_bytes()).collect();
        Cow::Owned(text)
    };
    let (connection, mut items) = subscribe_compressed(&server, Some(other_dictionary)).await;
    for _ in 1..=3 {
        match next(&mut items).await {
            JetstreamItem::Event {
                event: Err(error),
                raw,
            } => {
                assert!(error.to_string().contains("zstd"), "{error}");
                assert!(raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(connection.cursor(), None);
    connection.close().await;
}

#[tokio::test]
async fn jetstream_obeys_the_address_policy() {
    let mut strict = config();
    strict.stream.network.allow_private_network = false;
    let error = subscribe("ws://127.0.0.1:9/subscribe", strict.clone()).unwrap_err();
    assert!(error.is_policy_refusal(), "{error:?}");
    let (connection, mut items) = subscribe("http://localhost:9", strict).unwrap();
    match next(&mut items).await {
        JetstreamItem::Disconnected {
            reason: DisconnectReason::Connect(error),
            ..
        } => assert!(error.is_policy_refusal(), "{error:?}"),
        other => panic!("{other:?}"),
    }
    connection.close().await;
}
