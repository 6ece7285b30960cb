//! `/subscribe` fan-out: how fast one stream of events reaches many WebSocket subscribers at the
//! live tail, with and without zstd. Events are published a hundred at a time, each hundred once
//! every subscriber has the last, so that the subscribers stay at the tail together as they do on
//! a live network. Prints a table: deliveries per second (events × subscribers) and the process's
//! CPU time per delivery. The subscribers run in this process too, over loopback, and only count
//! their messages, so the figures include their share of the work.
//!
//! `cargo bench -p butterfly-serve --bench fanout [-- EVENTS]` (default 40,000 events).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use butterfly_bench::cpu_seconds;
use butterfly_serve::feed::{commit_events, EventFeed};
use butterfly_serve::subscribe::{Subscribe, SubscribeConfig};
use butterfly_store::{EventKind, MemoryStore, StreamEvent};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, Notify};
use tokio_tungstenite::tungstenite::Message;

/// Events published at once, as the engine publishes a committed batch.
const PUBLISH_BATCH: usize = 100;

fn main() {
    let events: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(40_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{:>11}  {:>8}  {:>7}  {:>8}  {:>16}  {:>20}",
        "subscribers", "compress", "events", "seconds", "deliveries/s", "CPU µs per delivery"
    );
    for compress in [false, true] {
        for subscribers in [1, 10, 50] {
            runtime.block_on(run(subscribers, compress, events));
        }
    }
}

async fn run(subscribers: usize, compress: bool, events: usize) {
    let log = Arc::new(Mutex::new(MemoryStore::new()));
    // Room for every event: this measures sending, not the cut-off of slow consumers.
    let (live, _) = broadcast::channel(events + PUBLISH_BATCH);
    let subscribe = Subscribe::new(
        EventFeed::new(&live, log.clone()),
        SubscribeConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "ws://{}/subscribe{}",
        listener.local_addr().unwrap(),
        if compress { "?compress=true" } else { "" }
    );
    let server = tokio::spawn(async move {
        axum::serve(listener, subscribe.router()).await.unwrap();
    });

    let delivered = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let mut clients = Vec::new();
    for _ in 0..subscribers {
        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let (delivered, progress) = (delivered.clone(), progress.clone());
        clients.push(tokio::spawn(async move {
            let mut received = 0;
            while received < events {
                match socket.next().await {
                    Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                        received += 1;
                        delivered.fetch_add(1, Ordering::AcqRel);
                        progress.notify_one();
                    }
                    Some(Ok(_)) => {}
                    other => panic!("the stream ended after {received} events: {other:?}"),
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while live.receiver_count() < subscribers {
        assert!(Instant::now() < deadline, "subscribers did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let start_time_us = butterfly_store::now_micros();
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    for first in (0..events).step_by(PUBLISH_BATCH) {
        let end = events.min(first + PUBLISH_BATCH);
        let batch = (first..end)
            .map(|n| post(start_time_us + n as i64, n))
            .collect();
        commit_events(&log, &live, batch).unwrap();
        while delivered.load(Ordering::Acquire) < end * subscribers {
            progress.notified().await;
        }
    }
    for client in clients {
        client.await.unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    let deliveries = (events * subscribers) as f64;
    let cpu = match (cpu_before, cpu_seconds()) {
        (Some(before), Some(after)) => format!("{:.1}", (after - before) * 1e6 / deliveries),
        _ => "-".to_string(),
    };
    println!(
        "{subscribers:>11}  {compress:>8}  {events:>7}  {seconds:>8.3}  {:>16.0}  {cpu:>20}",
        deliveries / seconds
    );
    server.abort();
}

/// A post of about the size the network's median post is, with its own text so that
/// compression has real work to do.
fn post(time_us: i64, n: usize) -> StreamEvent {
    let did = format!("did:plc:{:024}", n % 1000);
    let json = serde_json::json!({
        "did": did,
        "time_us": time_us,
        "kind": "commit",
        "commit": {
            "rev": "3l3qo2vutsw2b",
            "operation": "create",
            "collection": "app.bsky.feed.post",
            "rkey": format!("3l3qo2vuo{n:04}"),
            "record": {
                "$type": "app.bsky.feed.post",
                "text": format!("post number {n}: the quick brown fox jumps over the lazy dog, \
                                 and then it goes on about its day, as foxes do"),
                "langs": ["en"],
                "createdAt": "2024-09-09T19:46:02.102Z",
            },
            "cid": "bafyreidwaivazkwu67xztlmuobx35hs2lnfh3kolmgfmucldvhd3sgzcqi",
        },
    });
    StreamEvent {
        time_us,
        did,
        kind: EventKind::Commit,
        collection: Some("app.bsky.feed.post".into()),
        json: json.to_string(),
    }
}
