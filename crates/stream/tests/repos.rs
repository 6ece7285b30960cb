//! The `subscribeRepos` client against scripted local servers: cursor resume, malformed frames,
//! error frames, backpressure, the stall watchdog, the address policy and shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use butterfly_firehose::message::{CommitEvent, ErrorFrame};
use butterfly_firehose::{encode_frame, Frame, Message};
use butterfly_stream::{subscribe_repos, DisconnectReason, Error, StreamConfig, StreamItem};
use butterfly_syntax::{Did, Tid};
use common::{fast_config, idle, next, serve, WAIT};
use tokio::sync::mpsc;

const PATH: &str = "/xrpc/com.atproto.sync.subscribeRepos";

fn commit(seq: i64, blocks: usize) -> Vec<u8> {
    encode_frame(&Frame::Message(Message::Commit(CommitEvent {
        seq,
        repo: Did::parse("did:plc:ewvi7nxzyoun6zhxrhs64oiz").unwrap(),
        commit: butterfly_data::cid_for_raw(&seq.to_be_bytes()),
        rev: Tid::parse("3l3qo2vutsw2b").unwrap(),
        since: None,
        blocks: vec![7; blocks],
        ops: Vec::new(),
        prev_data: None,
        time: "2024-09-09T19:46:02.102Z".to_owned(),
        too_big: false,
        rebase: false,
        blobs: Vec::new(),
    })))
}

fn error_frame(name: &str) -> Vec<u8> {
    encode_frame(&Frame::Error(ErrorFrame {
        error: name.to_owned(),
        message: Some(format!("{name} for the test")),
    }))
}

async fn send(socket: &mut WebSocket, frame: Vec<u8>) {
    socket.send(WsMessage::Binary(frame.into())).await.unwrap();
}

/// Sends the commits after `cursor` up to `last`.
async fn send_after(socket: &mut WebSocket, cursor: Option<i64>, last: i64) {
    for seq in cursor.unwrap_or(0) + 1..=last {
        send(socket, commit(seq, 0)).await;
    }
}

fn cursor_of(conn: &common::Conn) -> Option<i64> {
    conn.param("cursor").map(|cursor| cursor.parse().unwrap())
}

/// The `cursor` each connection asked for.
fn cursors_asked(server: &common::Server) -> Vec<Option<String>> {
    server
        .seen()
        .iter()
        .map(|seen| seen.param("cursor").map(str::to_owned))
        .collect()
}

/// What the consumer saw, reduced to what the tests compare.
#[derive(Debug, PartialEq)]
enum Seen {
    Connected(Option<i64>),
    Commit(i64),
    ErrorFrame(String),
    Malformed,
    Disconnected(Option<i64>),
}

fn reduce(item: StreamItem) -> Seen {
    match item {
        StreamItem::Connected { cursor } => Seen::Connected(cursor),
        StreamItem::Frame {
            frame: Ok(Frame::Message(message)),
            ..
        } => Seen::Commit(message.seq().unwrap()),
        StreamItem::Frame {
            frame: Ok(Frame::Error(error)),
            ..
        } => Seen::ErrorFrame(error.error),
        StreamItem::Frame { frame: Err(_), .. } => Seen::Malformed,
        StreamItem::Disconnected { cursor, .. } => Seen::Disconnected(cursor),
        other => panic!("unexpected {other:?}"),
    }
}

async fn take(items: &mut mpsc::Receiver<StreamItem>, n: usize) -> Vec<Seen> {
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(reduce(next(items).await));
    }
    seen
}

#[tokio::test]
async fn resumes_from_the_cursor_after_the_server_drops_the_connection() {
    let server = serve(PATH, |mut conn| async move {
        let cursor = cursor_of(&conn);
        if conn.index == 0 {
            // Four events, then the connection is dropped without a close frame.
            send_after(&mut conn.socket, cursor, 4).await;
            return;
        }
        send_after(&mut conn.socket, cursor, 10).await;
        idle(&mut conn.socket).await;
    })
    .await;
    let (connection, mut items) = subscribe_repos(&server.http(), None, fast_config()).unwrap();

    let mut seen = take(&mut items, 6).await;
    assert_eq!(seen.remove(0), Seen::Connected(None));
    assert_eq!(
        seen,
        (1..=4)
            .map(Seen::Commit)
            .chain([Seen::Disconnected(Some(4))])
            .collect::<Vec<_>>()
    );
    assert_eq!(take(&mut items, 1).await, [Seen::Connected(Some(4))]);
    assert_eq!(
        take(&mut items, 6).await,
        (5..=10).map(Seen::Commit).collect::<Vec<_>>()
    );
    assert_eq!(connection.cursor(), Some(10));
    assert_eq!(cursors_asked(&server), [None, Some("4".to_owned())]);
    connection.close().await;
}

#[tokio::test]
async fn malformed_frames_are_delivered_as_errors_and_the_stream_goes_on() {
    let server = serve(PATH, |mut conn| async move {
        send(&mut conn.socket, commit(1, 0)).await;
        send(&mut conn.socket, vec![0xff, 0x00, 0x13]).await;
        send(&mut conn.socket, commit(2, 0)).await;
        conn.socket
            .send(WsMessage::Text("{\"not\": \"cbor\"}".into()))
            .await
            .unwrap();
        let mut trailing = commit(3, 0);
        trailing.push(0);
        send(&mut conn.socket, trailing).await;
        send(&mut conn.socket, commit(4, 0)).await;
        idle(&mut conn.socket).await;
    })
    .await;
    let (connection, mut items) = subscribe_repos(&server.ws(PATH), None, fast_config()).unwrap();
    let mut raw_lengths = Vec::new();
    let mut seen = vec![reduce(next(&mut items).await)];
    for _ in 0..6 {
        let item = next(&mut items).await;
        if let StreamItem::Frame { raw, .. } = &item {
            raw_lengths.push(raw.len());
        }
        seen.push(reduce(item));
    }
    assert_eq!(
        seen,
        [
            Seen::Connected(None),
            Seen::Commit(1),
            Seen::Malformed,
            Seen::Commit(2),
            Seen::Malformed,
            Seen::Malformed,
            Seen::Commit(4),
        ]
    );
    assert_eq!(raw_lengths[1], 3, "the raw bytes of a bad frame are kept");
    assert_eq!(connection.cursor(), Some(4));
    connection.close().await;
}

#[tokio::test]
async fn future_cursor_reconnects_from_the_live_head() {
    let server = serve(PATH, |mut conn| async move {
        match cursor_of(&conn) {
            Some(cursor) if cursor > 6 => {
                send(&mut conn.socket, error_frame("FutureCursor")).await;
                let _ = conn.socket.send(WsMessage::Close(None)).await;
            }
            _ => {
                // The live head: events 5 and 6.
                send_after(&mut conn.socket, Some(4), 6).await;
                idle(&mut conn.socket).await;
            }
        }
    })
    .await;
    let (connection, mut items) =
        subscribe_repos(&server.ws(PATH), Some(1000), fast_config()).unwrap();
    assert_eq!(
        take(&mut items, 6).await,
        [
            Seen::Connected(Some(1000)),
            Seen::ErrorFrame("FutureCursor".to_owned()),
            Seen::Disconnected(None),
            Seen::Connected(None),
            Seen::Commit(5),
            Seen::Commit(6),
        ]
    );
    assert_eq!(connection.cursor(), Some(6));
    assert_eq!(cursors_asked(&server), [Some("1000".to_owned()), None]);
    connection.close().await;
}

#[tokio::test]
async fn consumer_too_slow_resumes_from_the_saved_cursor() {
    let server = serve(PATH, |mut conn| async move {
        let cursor = cursor_of(&conn);
        if conn.index == 0 {
            send_after(&mut conn.socket, cursor, 3).await;
            send(&mut conn.socket, error_frame("ConsumerTooSlow")).await;
            // A real relay closes after the error frame; this one leaves it to the client.
            idle(&mut conn.socket).await;
            return;
        }
        send_after(&mut conn.socket, cursor, 5).await;
        idle(&mut conn.socket).await;
    })
    .await;
    let (connection, mut items) = subscribe_repos(&server.ws(PATH), None, fast_config()).unwrap();
    let seen = take(&mut items, 5).await;
    assert_eq!(
        seen,
        [
            Seen::Connected(None),
            Seen::Commit(1),
            Seen::Commit(2),
            Seen::Commit(3),
            Seen::ErrorFrame("ConsumerTooSlow".to_owned()),
        ]
    );
    match next(&mut items).await {
        StreamItem::Disconnected {
            reason: DisconnectReason::ErrorFrame { error, .. },
            cursor,
            ..
        } => {
            assert_eq!(error, "ConsumerTooSlow");
            assert_eq!(cursor, Some(3));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        take(&mut items, 3).await,
        [Seen::Connected(Some(3)), Seen::Commit(4), Seen::Commit(5)]
    );
    connection.close().await;
}

#[tokio::test]
async fn the_servers_close_frame_is_answered_and_the_client_reconnects() {
    let (answered_sender, mut answered) = mpsc::channel(1);
    let server = serve(PATH, move |mut conn| {
        let answered_sender = answered_sender.clone();
        async move {
            if conn.index > 0 {
                return idle(&mut conn.socket).await;
            }
            send(&mut conn.socket, commit(1, 0)).await;
            let close = CloseFrame {
                code: 4000,
                reason: "going away for the test".into(),
            };
            conn.socket
                .send(WsMessage::Close(Some(close)))
                .await
                .unwrap();
            let mut reply = false;
            while let Some(Ok(message)) = conn.socket.recv().await {
                reply |= matches!(message, WsMessage::Close(_));
            }
            let _ = answered_sender.send(reply).await;
        }
    })
    .await;
    let (connection, mut items) = subscribe_repos(&server.ws(PATH), None, fast_config()).unwrap();
    assert_eq!(
        take(&mut items, 2).await,
        [Seen::Connected(None), Seen::Commit(1)]
    );
    match next(&mut items).await {
        StreamItem::Disconnected {
            reason: DisconnectReason::Closed { code, reason },
            cursor,
            ..
        } => {
            assert_eq!(code, Some(4000));
            assert_eq!(reason, "going away for the test");
            assert_eq!(cursor, Some(1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        tokio::time::timeout(WAIT, answered.recv()).await.unwrap(),
        Some(true),
        "the client answered the close frame"
    );
    assert_eq!(take(&mut items, 1).await, [Seen::Connected(Some(1))]);
    connection.close().await;
}

#[tokio::test]
async fn a_seq_that_goes_back_is_delivered_but_does_not_move_the_cursor() {
    let server = serve(PATH, |mut conn| async move {
        if conn.index == 0 {
            for seq in [1, 2, 5, 3] {
                send(&mut conn.socket, commit(seq, 0)).await;
            }
            let _ = conn.socket.send(WsMessage::Close(None)).await;
            return;
        }
        let cursor = cursor_of(&conn);
        send_after(&mut conn.socket, cursor, 6).await;
        idle(&mut conn.socket).await;
    })
    .await;
    let (connection, mut items) = subscribe_repos(&server.ws(PATH), None, fast_config()).unwrap();
    assert_eq!(
        take(&mut items, 8).await,
        [
            Seen::Connected(None),
            Seen::Commit(1),
            Seen::Commit(2),
            Seen::Commit(5),
            Seen::Commit(3),
            Seen::Disconnected(Some(5)),
            Seen::Connected(Some(5)),
            Seen::Commit(6),
        ]
    );
    connection.close().await;
}

#[tokio::test]
async fn a_slow_consumer_holds_the_server_back_instead_of_filling_memory() {
    const FRAMES: usize = 1000;
    const BLOCK: usize = 64 * 1024;
    let sent = Arc::new(AtomicUsize::new(0));
    let server = serve(PATH, {
        let sent = sent.clone();
        move |mut conn| {
            let sent = sent.clone();
            async move {
                for seq in 1..=FRAMES as i64 {
                    send(&mut conn.socket, commit(seq, BLOCK)).await;
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                idle(&mut conn.socket).await;
            }
        }
    })
    .await;
    let mut config = fast_config();
    config.queue_capacity = 4;
    let (connection, mut items) = subscribe_repos(&server.ws(PATH), None, config).unwrap();
    assert!(matches!(
        next(&mut items).await,
        StreamItem::Connected { cursor: None }
    ));

    // Read nothing until the server stops making progress: it is blocked on a full socket.
    let mut last = usize::MAX;
    let mut steady_polls = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sent.load(Ordering::SeqCst);
        steady_polls = if now == last { steady_polls + 1 } else { 0 };
        last = now;
        if steady_polls == 5 {
            break;
        }
    }
    assert_eq!(
        steady_polls, 5,
        "the server never blocked: {last} frames sent"
    );
    // 4 in the queue, one in hand, and what the kernel's socket buffers hold (a few MiB on
    // loopback): far fewer than the server wanted to send.
    assert!(
        last < FRAMES / 2,
        "{last} of {FRAMES} frames left the server"
    );

    // The pause is backpressure, not a stall: everything arrives, in order, on one connection.
    for seq in 1..=FRAMES as i64 {
        match next(&mut items).await {
            StreamItem::Frame {
                frame: Ok(Frame::Message(message)),
                raw,
            } => {
                assert_eq!(message.seq(), Some(seq));
                assert!(raw.len() > BLOCK);
            }
            other => panic!("at seq {seq}: {other:?}"),
        }
    }
    assert_eq!(sent.load(Ordering::SeqCst), FRAMES);
    assert_eq!(server.seen().len(), 1);
    connection.close().await;
}

#[tokio::test]
async fn a_server_that_stops_answering_pings_is_declared_stalled() {
    let server = serve(PATH, |mut conn| async move {
        let cursor = cursor_of(&conn);
        send_after(&mut conn.socket, cursor, 1).await;
        if conn.index == 0 {
            // Hold the socket without reading: pings go unanswered.
            tokio::time::sleep(WAIT * 2).await;
        } else {
            idle(&mut conn.socket).await;
        }
    })
    .await;
    // A short stall timeout: this connection is meant to stall, so a starved test process only
    // makes the stall come sooner.
    let mut config = fast_config();
    config.stall_timeout = Duration::from_secs(2);
    let stall_timeout = config.stall_timeout;
    let (connection, mut items) = subscribe_repos(&server.ws(PATH), None, config).unwrap();
    assert_eq!(
        take(&mut items, 2).await,
        [Seen::Connected(None), Seen::Commit(1)]
    );
    let started = tokio::time::Instant::now();
    match next(&mut items).await {
        StreamItem::Disconnected {
            reason: DisconnectReason::Stalled { silent_for },
            cursor,
            ..
        } => {
            assert!(silent_for >= stall_timeout, "{silent_for:?}");
            assert_eq!(cursor, Some(1));
        }
        other => panic!("{other:?}"),
    }
    // Ping after 100 ms of silence, stall two seconds later: well before the server's long sleep
    // (the bound is generous, for a loaded machine).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(take(&mut items, 1).await, [Seen::Connected(Some(1))]);
    connection.close().await;
}

#[tokio::test]
async fn an_idle_server_that_answers_pings_is_left_alone() {
    let pings = Arc::new(AtomicUsize::new(0));
    let server = serve(PATH, {
        let pings = pings.clone();
        move |mut conn| {
            let pings = pings.clone();
            async move {
                while let Some(Ok(message)) = conn.socket.recv().await {
                    if matches!(message, WsMessage::Ping(_)) {
                        pings.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
    })
    .await;
    // A stall timeout shorter than the default of the other tests, so that the quiet spell below
    // spans several of them, yet long enough that a starved test process is not taken for a stall.
    let mut config = fast_config();
    config.stall_timeout = Duration::from_secs(3);
    let stall_timeout = config.stall_timeout;
    let (connection, mut items) = subscribe_repos(&server.ws(PATH), None, config).unwrap();
    assert_eq!(take(&mut items, 1).await, [Seen::Connected(None)]);
    // Two and a half stall timeouts of silence from the server, apart from pongs: no item may come.
    let quiet = tokio::time::timeout(stall_timeout * 5 / 2, items.recv()).await;
    assert!(quiet.is_err(), "unexpected item: {quiet:?}");
    assert!(pings.load(Ordering::SeqCst) >= 5, "the client pinged");
    assert_eq!(server.seen().len(), 1);
    connection.close().await;
}

#[tokio::test]
async fn loopback_is_refused_without_allow_private_network() {
    let server = serve(PATH, |mut conn| async move { idle(&mut conn.socket).await }).await;
    let mut strict = fast_config();
    strict.network.allow_private_network = false;

    // A literal address is refused before anything starts.
    let error = subscribe_repos(&server.ws(PATH), None, strict.clone()).unwrap_err();
    assert!(error.is_policy_refusal(), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("127.0.0.1 is not a public address"),
        "{error}"
    );

    // A name is refused when it resolves, and the refusal is reported like any failed attempt.
    let by_name = server.ws(PATH).replace("127.0.0.1", "localhost");
    let (connection, mut items) = subscribe_repos(&by_name, None, strict).unwrap();
    match next(&mut items).await {
        StreamItem::Disconnected {
            reason: DisconnectReason::Connect(error),
            ..
        } => {
            assert!(error.is_policy_refusal(), "{error:?}");
            assert!(
                error
                    .to_string()
                    .contains("localhost is not a public address"),
                "{error}"
            );
        }
        other => panic!("{other:?}"),
    }
    connection.close().await;
    assert!(server.seen().is_empty(), "no connection reached the server");

    let error = subscribe_repos("ftp://example.com/", None, StreamConfig::default()).unwrap_err();
    assert!(error.to_string().contains("scheme"), "{error}");
}

#[tokio::test]
async fn an_unusable_user_agent_fails_at_once() {
    let mut config = fast_config();
    config.network.user_agent = "butterfly\r\nx-injected: 1".to_owned();
    let error = subscribe_repos("ws://127.0.0.1:9/", None, config).unwrap_err();
    assert!(matches!(error, Error::Handshake { .. }), "{error:?}");
    assert!(error.to_string().contains("user agent"), "{error}");
}

#[tokio::test]
async fn shutdown_closes_the_socket_and_ends_the_channel() {
    let (closed_sender, mut closed) = mpsc::channel(1);
    let server = serve(PATH, move |mut conn| {
        let closed_sender = closed_sender.clone();
        async move {
            send_after(&mut conn.socket, None, 2).await;
            let mut close_frame = false;
            while let Some(Ok(message)) = conn.socket.recv().await {
                close_frame |= matches!(message, WsMessage::Close(_));
            }
            let _ = closed_sender.send(close_frame).await;
        }
    })
    .await;
    let (connection, mut items) = subscribe_repos(&server.ws(PATH), None, fast_config()).unwrap();
    assert_eq!(
        take(&mut items, 3).await,
        [Seen::Connected(None), Seen::Commit(1), Seen::Commit(2)]
    );
    tokio::time::timeout(WAIT, connection.close())
        .await
        .unwrap();
    assert!(tokio::time::timeout(WAIT, items.recv())
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        tokio::time::timeout(WAIT, closed.recv()).await.unwrap(),
        Some(true),
        "the server got a close frame"
    );
}

#[tokio::test]
async fn dropping_the_receiver_stops_the_client() {
    let server = serve(PATH, |mut conn| async move { idle(&mut conn.socket).await }).await;
    let (connection, mut items) = subscribe_repos(&server.ws(PATH), None, fast_config()).unwrap();
    assert_eq!(take(&mut items, 1).await, [Seen::Connected(None)]);
    drop(items);
    let stopped = async {
        while !connection.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, stopped).await.unwrap();
}
