//! A Jetstream-compatible `/subscribe` WebSocket over an [`crate::feed::EventFeed`].
//!
//! It speaks Jetstream v1 (bluesky-social/jetstream, `pkg/server`), so that Jetstream clients
//! work unchanged:
//!
//! - Query parameters: `wantedCollections` (repeatable; an NSID, or a prefix ending in `.*`),
//!   `wantedDids` (repeatable), `cursor` (µs since the epoch), `compress=true` (or the
//!   `Socket-Encoding: zstd` header), `requireHello=true` and `maxMessageSizeBytes`. Bad values
//!   are refused with HTTP 400 before the upgrade, as Jetstream does.
//! - Filters: `wantedCollections` applies to commits only (identity and account events always
//!   pass), `wantedDids` to every kind; an empty list wants everything.
//! - A cursor replays from the log *inclusively* (events with `time_us >= cursor`), then follows
//!   the live tail; no cursor, a cursor of 0 or less, or one in the future means the live tail
//!   only.
//! - Each event is sent as the JSON the store keeps, byte for byte: a text message, or with
//!   compression a binary message holding one zstd frame made with Jetstream's dictionary.
//! - The client may send `{"type":"options_update","payload":{...}}` to replace the filters.
//!   A message that is not JSON or whose payload is invalid closes the socket (Jetstream does the
//!   same); other types and binary messages are ignored.
//! - With `requireHello`, nothing is sent until the first `options_update`; the stream (live tail
//!   or replay from the cursor) starts then, so that no events pile up while the client waits.
//!
//! Each connection is one task with its own [`EventReader`]. It holds no queue of its own: memory
//! per connection is one batch of events plus the WebSocket's write buffer, and the broadcast's
//! capacity (shared by all readers) bounds how far behind the live tail a reader may fall. A
//! consumer that falls further behind, or that does not take a message within
//! [`SubscribeConfig::send_timeout`], is cut off with close code 1008; it can reconnect with a
//! cursor and be served from the log.
//!
//! Compression costs one zstd pass per event, not one per compressed connection: the live tail
//! reaches every connection at about the same time, so the frames of the most recent events are
//! kept and shared (Jetstream likewise compresses each event once). The compressors are pooled so
//! that their number follows the worker threads, not the connections.

use crate::feed::{EventFeed, EventReader, ReadError};
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use butterfly_selector::Pattern;
use butterfly_store::StreamEvent;
use futures_util::SinkExt;
use serde::Deserialize;
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The zstd dictionary Jetstream compresses with; the stream crate vendors it (see
/// `crates/stream/data/README.md`) and its client decodes with the same file.
const JETSTREAM_ZSTD_DICTIONARY: &[u8] =
    include_bytes!("../../stream/data/jetstream-zstd-dictionary");

/// Jetstream's encoder runs at zstd's default speed, which is level 3.
const ZSTD_LEVEL: i32 = 3;

/// The largest message a client may send; Jetstream ignores anything larger.
const MAX_CLIENT_MESSAGE: usize = 10 << 20;

/// How often an idle connection is pinged, as Jetstream does, so that proxies keep it open.
const PING_EVERY: Duration = Duration::from_secs(30);

/// How long the closing handshake may take before the socket is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The longest close reason the WebSocket protocol allows, in bytes.
const MAX_CLOSE_REASON: usize = 123;

/// Compressed frames kept for connections to share: the newest this many events...
const SHARED_FRAMES: usize = 4096;

/// ...holding at most this many bytes in all.
const SHARED_FRAME_BYTES: usize = 16 << 20;

/// Limits of the `/subscribe` endpoint.
#[derive(Clone, Debug)]
pub struct SubscribeConfig {
    /// `wantedDids` a connection may ask for (Jetstream: 10,000).
    pub max_wanted_dids: usize,
    /// `wantedCollections` a connection may ask for (Jetstream: 100).
    pub max_wanted_collections: usize,
    /// How long one message may take to go out before the consumer is cut off as too slow.
    pub send_timeout: Duration,
    /// Events taken from the feed at once: one flush per batch.
    pub batch: usize,
    /// Open connections; more are refused with HTTP 503.
    pub max_connections: usize,
}

impl Default for SubscribeConfig {
    fn default() -> Self {
        SubscribeConfig {
            max_wanted_dids: 10_000,
            max_wanted_collections: 100,
            send_timeout: Duration::from_secs(10),
            batch: 256,
            max_connections: 1000,
        }
    }
}

/// The `/subscribe` endpoint: a cheap handle, shared by the router and whoever reads
/// [`Subscribe::connections`].
#[derive(Clone)]
pub struct Subscribe {
    shared: Arc<Shared>,
}

struct Shared {
    feed: EventFeed,
    config: SubscribeConfig,
    connections: AtomicUsize,
    compressed: CompressedEvents,
}

impl Subscribe {
    pub fn new(feed: EventFeed, config: SubscribeConfig) -> Subscribe {
        Subscribe {
            shared: Arc::new(Shared {
                feed,
                config,
                connections: AtomicUsize::new(0),
                compressed: CompressedEvents::new(SHARED_FRAMES, SHARED_FRAME_BYTES),
            }),
        }
    }

    /// Serves `GET /subscribe`; merge it into the server's router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/subscribe", get(subscribe))
            .with_state(self.shared.clone())
    }

    /// Open WebSocket connections (and upgrades under way).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Acquire)
    }
}

async fn subscribe(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let request = match Request::parse(
        query.as_deref().unwrap_or(""),
        &headers,
        &shared.config,
        butterfly_store::now_micros(),
    ) {
        Ok(request) => request,
        Err(message) => return error(StatusCode::BAD_REQUEST, "InvalidRequest", &message),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(slot) = Slot::take(&shared) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "TooManyConnections",
            &format!(
                "this server serves at most {} connections; try again later",
                shared.config.max_connections
            ),
        );
    };
    upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve(shared, socket, request, slot))
}

fn error(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": error, "message": message})),
    )
        .into_response()
}

/// A place among [`SubscribeConfig::max_connections`], given back when dropped.
struct Slot(Arc<Shared>);

impl Slot {
    fn take(shared: &Arc<Shared>) -> Option<Slot> {
        let before = shared.connections.fetch_add(1, Ordering::AcqRel);
        if before >= shared.config.max_connections {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        metrics::gauge!("butterfly_subscribers").increment(1.0);
        Some(Slot(shared.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("butterfly_subscribers").decrement(1.0);
    }
}

/// What a client asked for when it connected.
struct Request {
    filters: Filters,
    /// Where the reader starts (exclusive), already moved back by one to make Jetstream's
    /// inclusive cursor; `None` for the live tail.
    after: Option<i64>,
    compress: bool,
    require_hello: bool,
}

impl Request {
    fn parse(
        query: &str,
        headers: &HeaderMap,
        config: &SubscribeConfig,
        now_us: i64,
    ) -> Result<Request, String> {
        let mut collections = Vec::new();
        let mut dids = Vec::new();
        let mut cursor = None;
        let mut compress = false;
        let mut require_hello = false;
        let mut max_message_size = 0;
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "wantedCollections" => collections.push(value.into_owned()),
                "wantedDids" => dids.push(value.into_owned()),
                "cursor" => {
                    cursor = Some(value.parse::<i64>().map_err(|_| {
                        format!("invalid cursor {value:?}: expected microseconds since the epoch")
                    })?)
                }
                "compress" => compress = value == "true",
                "requireHello" => require_hello = value == "true",
                "maxMessageSizeBytes" => {
                    max_message_size = value.parse::<usize>().map_err(|_| {
                        format!("invalid maxMessageSizeBytes {value:?}: expected a byte count")
                    })?
                }
                _ => {}
            }
        }
        compress |= headers
            .get_all("socket-encoding")
            .iter()
            .any(|value| value.to_str().is_ok_and(|value| value.contains("zstd")));
        Ok(Request {
            filters: Filters::new(collections, dids, max_message_size, config)?,
            after: cursor
                .filter(|&cursor| cursor > 0 && cursor <= now_us)
                .map(|cursor| cursor - 1),
            compress,
            require_hello,
        })
    }
}

/// Which events a connection wants.
#[derive(Debug, Default)]
struct Filters {
    /// `None`: every collection. Exact NSIDs and prefixes (`app.bsky.feed.*`), as the selector's
    /// retention patterns are written.
    collections: Option<Vec<Pattern>>,
    /// Empty: every repo.
    dids: HashSet<String>,
    /// 0: no limit.
    max_message_size: usize,
}

impl Filters {
    fn new(
        collections: Vec<String>,
        dids: Vec<String>,
        max_message_size: usize,
        config: &SubscribeConfig,
    ) -> Result<Filters, String> {
        let collections = if collections.is_empty() {
            None
        } else {
            let mut wanted =
                Vec::with_capacity(collections.len().min(config.max_wanted_collections + 1));
            for collection in collections {
                let what = if collection.ends_with('*') {
                    "invalid collection prefix"
                } else {
                    "invalid collection"
                };
                match Pattern::parse(&collection) {
                    // Jetstream has no "every collection" pattern: that is no filter at all.
                    Ok(Pattern::Any) => {
                        return Err(format!(
                            "{what} {collection:?}: leave it out to get them all"
                        ))
                    }
                    Ok(pattern) if wanted.contains(&pattern) => {}
                    Ok(pattern) => wanted.push(pattern),
                    Err(error) => return Err(format!("{what} {collection:?}: {error}")),
                }
                // Checked as it grows, so that the duplicate check stays linear in the cap.
                if wanted.len() > config.max_wanted_collections {
                    return Err(format!(
                        "too many wanted collections: more than {}",
                        config.max_wanted_collections
                    ));
                }
            }
            Some(wanted)
        };
        let mut wanted_dids = HashSet::with_capacity(dids.len().min(config.max_wanted_dids));
        for did in dids {
            butterfly_syntax::Did::parse(&did)
                .map_err(|error| format!("invalid DID {did:?}: {error}"))?;
            wanted_dids.insert(did);
            if wanted_dids.len() > config.max_wanted_dids {
                return Err(format!(
                    "too many wanted DIDs: more than {}",
                    config.max_wanted_dids
                ));
            }
        }
        Ok(Filters {
            collections,
            dids: wanted_dids,
            max_message_size,
        })
    }

    /// Whether to send `event`, before the size limit.
    fn wants(&self, event: &StreamEvent) -> bool {
        if !self.dids.is_empty() && !self.dids.contains(&event.did) {
            return false;
        }
        match (&self.collections, &event.collection) {
            (Some(wanted), Some(collection)) => {
                wanted.iter().any(|pattern| pattern.matches(collection))
            }
            _ => true,
        }
    }
}

/// A message from the client.
#[derive(Deserialize)]
struct ClientMessage {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OptionsUpdate {
    #[serde(default)]
    wanted_collections: Option<Vec<String>>,
    #[serde(default)]
    wanted_dids: Option<Vec<String>>,
    /// Negative means no limit, as in Jetstream.
    #[serde(default)]
    max_message_size_bytes: Option<i64>,
}

/// The new filters of an `options_update`, `Ok(None)` for a message of another type (ignored),
/// or why the message is refused.
fn parse_options_update(text: &str, config: &SubscribeConfig) -> Result<Option<Filters>, String> {
    let message: ClientMessage =
        serde_json::from_str(text).map_err(|error| format!("invalid message: {error}"))?;
    if message.kind != "options_update" {
        tracing::debug!(kind = %message.kind, "subscribe: ignoring a client message of unknown type");
        return Ok(None);
    }
    let payload = message
        .payload
        .ok_or_else(|| "invalid options_update: no payload".to_owned())?;
    let update: OptionsUpdate = serde_json::from_value(payload)
        .map_err(|error| format!("invalid options_update: {error}"))?;
    let max_message_size = update
        .max_message_size_bytes
        .map_or(0, |max| usize::try_from(max).unwrap_or(0));
    Filters::new(
        update.wanted_collections.unwrap_or_default(),
        update.wanted_dids.unwrap_or_default(),
        max_message_size,
        config,
    )
    .map(Some)
    .map_err(|error| format!("invalid options_update: {error}"))
}

/// zstd compressors loaded with Jetstream's dictionary, shared by all connections. Compressing
/// never awaits, so no more are in use at once than there are threads, however many sockets are
/// open.
#[derive(Default)]
struct Compressors {
    idle: Mutex<Vec<zstd::bulk::Compressor<'static>>>,
}

impl Compressors {
    fn compress(&self, json: &[u8]) -> Result<Vec<u8>, String> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut compressor = match idle {
            Some(compressor) => compressor,
            None => zstd::bulk::Compressor::with_dictionary(ZSTD_LEVEL, JETSTREAM_ZSTD_DICTIONARY)
                .map_err(|error| format!("loading the zstd dictionary: {error}"))?,
        };
        let compressed = compressor
            .compress(json)
            .map_err(|error| format!("zstd: {error}"));
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(compressor);
        compressed
    }
}

/// The zstd frames of the newest events, shared by every compressed connection, so that an
/// event is compressed once however many connections it goes to. Keyed by `time_us`, which is
/// unique and increasing along the one feed a [`Subscribe`] serves.
struct CompressedEvents {
    kept: Mutex<KeptFrames>,
    max_frames: usize,
    max_bytes: usize,
    compressors: Compressors,
}

#[derive(Default)]
struct KeptFrames {
    /// By `time_us`, oldest first: `(time_us, JSON length, frame)`. The length guards against
    /// serving a frame for other JSON, should a feed ever reuse a `time_us`.
    frames: VecDeque<(i64, usize, Bytes)>,
    /// The frames' bytes in all.
    bytes: usize,
}

impl CompressedEvents {
    fn new(max_frames: usize, max_bytes: usize) -> CompressedEvents {
        CompressedEvents {
            kept: Mutex::default(),
            max_frames,
            max_bytes,
            compressors: Compressors::default(),
        }
    }

    /// `event` as one zstd frame: a kept one, or compressed now (outside the lock) and kept.
    fn frame(&self, event: &StreamEvent) -> Result<Bytes, String> {
        let (time_us, length) = (event.time_us, event.json.len());
        if let Some(frame) = self.lock().find(time_us, length) {
            return Ok(frame);
        }
        let frame = Bytes::from(self.compressors.compress(event.json.as_bytes())?);
        self.keep(time_us, length, frame.clone());
        Ok(frame)
    }

    fn keep(&self, time_us: i64, length: usize, frame: Bytes) {
        let mut kept = self.lock();
        let at = match kept.position(time_us) {
            // Another connection compressed it meanwhile (or, for other JSON, keep the first).
            Ok(_) => return,
            // Older than all kept (a replay far behind the tail): not worth a place.
            Err(0) if kept.frames.len() >= self.max_frames => return,
            Err(at) => at,
        };
        kept.bytes += frame.len();
        kept.frames.insert(at, (time_us, length, frame));
        while kept.frames.len() > self.max_frames
            || (kept.bytes > self.max_bytes && kept.frames.len() > 1)
        {
            if let Some((_, _, dropped)) = kept.frames.pop_front() {
                kept.bytes -= dropped.len();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeptFrames> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KeptFrames {
    /// Where the frame of `time_us` is (`Ok`), or would go (`Err`).
    fn position(&self, time_us: i64) -> Result<usize, usize> {
        self.frames.binary_search_by_key(&time_us, |frame| frame.0)
    }

    fn find(&self, time_us: i64, length: usize) -> Option<Bytes> {
        let at = self.position(time_us).ok()?;
        let (_, kept_length, frame) = &self.frames[at];
        (*kept_length == length).then(|| frame.clone())
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The client closed the socket or went away.
    Client,
    /// The client sent something that is refused (Jetstream closes the socket too).
    BadMessage(String),
    /// The consumer fell too far behind, or did not take a message in time.
    Slow(String),
    /// The event stream ended: the server is going away.
    Closed,
    /// The server failed (reading the log, compressing).
    Error(String),
}

impl End {
    /// The `reason` label of `butterfly_subscribe_disconnects_total`.
    fn label(&self) -> &'static str {
        match self {
            End::Client | End::BadMessage(_) => "client",
            End::Slow(_) => "slow",
            End::Closed => "closed",
            End::Error(_) => "error",
        }
    }

    /// What to tell the client; `None` when it has already closed or gone.
    fn close_frame(&self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            End::Client => return None,
            End::BadMessage(reason) | End::Slow(reason) => (close_code::POLICY, reason.as_str()),
            End::Closed => (
                close_code::AWAY,
                "the event stream ended: the server is going away",
            ),
            End::Error(_) => (close_code::ERROR, "server error; reconnect with a cursor"),
        };
        let mut end = reason.len().min(MAX_CLOSE_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason[..end].to_owned()),
        })
    }
}

/// Serves one connection until it ends, then closes it cleanly if the client can still hear.
async fn serve(shared: Arc<Shared>, mut socket: WebSocket, request: Request, slot: Slot) {
    tracing::debug!(
        collections = ?request.filters.collections,
        dids = request.filters.dids.len(),
        after = ?request.after,
        compress = request.compress,
        require_hello = request.require_hello,
        "subscribe: connection open"
    );
    let mut connection = Connection {
        caught_up: request.after.is_none(),
        filters: request.filters,
        after: request.after,
        compress: request.compress,
        reader: None,
        shared,
    };
    if !request.require_hello {
        connection.start();
    }
    let end = connection.run(&mut socket).await;
    // Leave the feed before the closing handshake.
    drop(connection);
    match &end {
        End::Client => tracing::debug!("subscribe: the client left"),
        End::Error(error) => tracing::warn!(%error, "subscribe: connection closed on an error"),
        other => tracing::info!(reason = ?other, "subscribe: connection closed"),
    }
    metrics::counter!("butterfly_subscribe_disconnects_total", "reason" => end.label())
        .increment(1);
    if let Some(frame) = end.close_frame() {
        let sent = tokio::time::timeout(CLOSE_WAIT, socket.send(Message::Close(Some(frame)))).await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
    }
    // Let the closing handshake finish: read until the client's answer to our close, or, when it
    // closed first, let the answer queued for it go out. Dropping the socket earlier could reset
    // the connection under a client still reading.
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
    drop(slot);
}

/// One open connection's state.
struct Connection {
    shared: Arc<Shared>,
    filters: Filters,
    after: Option<i64>,
    compress: bool,
    /// `None` until the stream starts (with `requireHello`, at the first `options_update`).
    reader: Option<EventReader>,
    /// Whether the reader has read from the live tail since it last left the log: a lag before
    /// that is the log replay being overtaken, not the consumer being slow.
    caught_up: bool,
}

impl Connection {
    fn start(&mut self) {
        self.reader = Some(EventReader::new(self.shared.feed.clone(), self.after));
    }

    async fn run(&mut self, socket: &mut WebSocket) -> End {
        let batch = self.shared.config.batch;
        let mut keepalive =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let live = self
                .reader
                .as_ref()
                .is_some_and(|reader| !reader.replaying());
            tokio::select! {
                message = socket.recv() => {
                    if let Some(end) = self.on_message(message) {
                        return end;
                    }
                }
                read = next_events(&mut self.reader, batch) => match read {
                    Ok(events) => {
                        self.caught_up |= live;
                        if let Err(end) = self.send(socket, &events).await {
                            return end;
                        }
                    }
                    Err(ReadError::Lagged(lagged)) => {
                        if self.caught_up {
                            return End::Slow(format!(
                                "consumer too slow: fell {} events behind the live stream; \
                                 reconnect with a cursor",
                                lagged.missed
                            ));
                        }
                        if let Some(reader) = &mut self.reader {
                            reader.resume_from_log();
                        }
                    }
                    Err(ReadError::Closed) => return End::Closed,
                    Err(ReadError::Log(error)) => return End::Error(error),
                },
                _ = keepalive.tick() => {
                    let limit = self.shared.config.send_timeout;
                    if let Err(end) = within(limit, socket.send(Message::Ping(Default::default()))).await {
                        return end;
                    }
                }
            }
        }
    }

    fn on_message(&mut self, message: Option<Result<Message, axum::Error>>) -> Option<End> {
        match message {
            None | Some(Ok(Message::Close(_))) => Some(End::Client),
            // Too large a message, or a protocol violation; the connection may still carry a close.
            Some(Err(error)) => Some(End::BadMessage(format!("unreadable message: {error}"))),
            Some(Ok(Message::Text(text))) => {
                match parse_options_update(text.as_str(), &self.shared.config) {
                    Ok(Some(filters)) => {
                        tracing::debug!(
                            collections = ?filters.collections,
                            dids = filters.dids.len(),
                            max_message_size = filters.max_message_size,
                            "subscribe: options_update"
                        );
                        self.filters = filters;
                        if self.reader.is_none() {
                            self.start();
                        }
                        None
                    }
                    Ok(None) => None,
                    Err(reason) => Some(End::BadMessage(reason)),
                }
            }
            Some(Ok(Message::Binary(_))) => {
                tracing::debug!("subscribe: ignoring a binary message from the client");
                None
            }
            // The WebSocket answers pings itself.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
        }
    }

    /// Sends the wanted ones of `events`, then flushes.
    async fn send(&self, socket: &mut WebSocket, events: &[Arc<StreamEvent>]) -> Result<(), End> {
        let limit = self.shared.config.send_timeout;
        let mut sent = 0u64;
        for event in events {
            if !self.filters.wants(event) {
                continue;
            }
            let (message, size) = if self.compress {
                let frame = self.shared.compressed.frame(event).map_err(End::Error)?;
                let size = frame.len();
                (Message::Binary(frame), size)
            } else {
                (Message::Text(event.json.clone().into()), event.json.len())
            };
            // Jetstream compares what it would send, compressed or not.
            if self.filters.max_message_size > 0 && size > self.filters.max_message_size {
                continue;
            }
            within(limit, socket.feed(message)).await?;
            sent += 1;
        }
        if sent > 0 {
            within(limit, socket.flush()).await?;
            metrics::counter!("butterfly_subscribe_events_sent_total").increment(sent);
        }
        Ok(())
    }
}

/// The reader's next events; never, while the stream has not started.
async fn next_events(
    reader: &mut Option<EventReader>,
    max: usize,
) -> Result<Vec<Arc<StreamEvent>>, ReadError> {
    match reader {
        Some(reader) => reader.next(max).await,
        None => std::future::pending().await,
    }
}

/// Runs a send, cutting the consumer off if it takes longer than `limit`.
async fn within(
    limit: Duration,
    send: impl Future<Output = Result<(), axum::Error>>,
) -> Result<(), End> {
    match tokio::time::timeout(limit, send).await {
        Ok(Ok(())) => Ok(()),
        // The connection is broken: nobody is left to tell.
        Ok(Err(_)) => Err(End::Client),
        Err(_) => Err(End::Slow(format!(
            "consumer too slow: a message took more than {} ms to send; reconnect with a cursor",
            limit.as_millis()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(did: &str, collection: Option<&str>) -> StreamEvent {
        StreamEvent {
            time_us: 1,
            did: did.into(),
            kind: if collection.is_some() {
                butterfly_store::EventKind::Commit
            } else {
                butterfly_store::EventKind::Identity
            },
            collection: collection.map(Into::into),
            json: "{}".into(),
        }
    }

    fn parse(query: &str) -> Result<Request, String> {
        Request::parse(query, &HeaderMap::new(), &SubscribeConfig::default(), 1_000)
    }

    fn event_at(time_us: i64, json: &str) -> StreamEvent {
        StreamEvent {
            time_us,
            json: json.into(),
            ..event("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", None)
        }
    }

    fn decompress(frame: &[u8]) -> String {
        let mut decompressor = zstd::bulk::Decompressor::with_dictionary(JETSTREAM_ZSTD_DICTIONARY)
            .expect("dictionary");
        let json = decompressor
            .decompress(frame, 1 << 20)
            .expect("a zstd frame");
        String::from_utf8(json).expect("UTF-8")
    }

    #[test]
    fn an_event_is_compressed_once_for_every_connection() {
        let compressed = CompressedEvents::new(16, 1 << 20);
        let event = event_at(5, r#"{"kind":"commit","time_us":5}"#);
        let first = compressed.frame(&event).expect("compressed");
        let again = compressed.frame(&event).expect("compressed");
        assert_eq!(first.as_ptr(), again.as_ptr(), "the same frame, shared");
        assert_eq!(decompress(&again), event.json);
    }

    #[test]
    fn only_the_newest_frames_are_kept() {
        let compressed = CompressedEvents::new(2, 1 << 20);
        let events: Vec<StreamEvent> = (1..=3)
            .map(|n| event_at(n, &format!(r#"{{"time_us":{n}}}"#)))
            .collect();
        let frames: Vec<Bytes> = events
            .iter()
            .map(|event| compressed.frame(event).expect("compressed"))
            .collect();
        // The oldest was dropped: compressed again, and not kept in place of a newer one.
        let oldest = compressed.frame(&events[0]).expect("compressed");
        assert_ne!(oldest.as_ptr(), frames[0].as_ptr());
        assert_eq!(decompress(&oldest), events[0].json);
        for n in [1, 2] {
            assert_eq!(
                compressed.frame(&events[n]).expect("compressed").as_ptr(),
                frames[n].as_ptr()
            );
        }

        // Past the byte bound only the newest stays.
        let compressed = CompressedEvents::new(16, 1);
        for event in &events {
            compressed.frame(event).expect("compressed");
        }
        let kept = compressed.lock();
        assert_eq!(kept.frames.len(), 1);
        assert_eq!(kept.frames[0].0, 3);
        assert_eq!(kept.bytes, kept.frames[0].2.len());
    }

    #[test]
    fn a_reused_time_is_not_served_another_events_frame() {
        let compressed = CompressedEvents::new(16, 1 << 20);
        let first = event_at(7, r#"{"time_us":7}"#);
        let other = event_at(7, r#"{"time_us":7,"other":true}"#);
        compressed.frame(&first).expect("compressed");
        assert_eq!(
            decompress(&compressed.frame(&other).expect("compressed")),
            other.json
        );
        assert_eq!(
            decompress(&compressed.frame(&first).expect("compressed")),
            first.json
        );
    }

    #[test]
    fn collections_match_exactly_or_by_prefix_and_only_filter_commits() {
        let request =
            parse("wantedCollections=app.bsky.feed.post&wantedCollections=app.bsky.graph.*")
                .expect("valid");
        let filters = request.filters;
        assert!(filters.wants(&event("did:plc:a", Some("app.bsky.feed.post"))));
        assert!(filters.wants(&event("did:plc:a", Some("app.bsky.graph.follow"))));
        assert!(!filters.wants(&event("did:plc:a", Some("app.bsky.feed.like"))));
        assert!(!filters.wants(&event("did:plc:a", Some("app.bsky.graphx.follow"))));
        assert!(filters.wants(&event("did:plc:a", None)), "identity passes");
    }

    #[test]
    fn dids_filter_every_kind() {
        let filters = parse("wantedDids=did%3Aplc%3Aa").expect("valid").filters;
        assert!(filters.wants(&event("did:plc:a", Some("app.bsky.feed.post"))));
        assert!(!filters.wants(&event("did:plc:b", Some("app.bsky.feed.post"))));
        assert!(!filters.wants(&event("did:plc:b", None)));
    }

    #[test]
    fn bad_parameters_are_refused() {
        for query in [
            "wantedCollections=app",
            "wantedCollections=*",
            "wantedCollections=app..*",
            "wantedCollections=app.bsky.feed.post*",
            "wantedDids=alice",
            "cursor=yesterday",
            "maxMessageSizeBytes=-1",
        ] {
            assert!(parse(query).is_err(), "{query}");
        }
    }

    #[test]
    fn the_cursor_is_inclusive_and_a_future_or_zero_cursor_means_the_live_tail() {
        assert_eq!(parse("cursor=500").expect("valid").after, Some(499));
        assert_eq!(parse("cursor=0").expect("valid").after, None);
        assert_eq!(parse("cursor=2000").expect("valid").after, None);
        assert_eq!(parse("").expect("valid").after, None);
    }

    #[test]
    fn close_reasons_are_cut_to_the_protocol_limit_on_a_char_boundary() {
        let frame = End::Slow("é".repeat(100)).close_frame().expect("a frame");
        assert_eq!(frame.code, close_code::POLICY);
        assert_eq!(frame.reason.as_str().len(), 122);
    }

    #[test]
    fn options_updates_replace_the_filters_and_other_types_are_ignored() {
        let config = SubscribeConfig::default();
        let filters = parse_options_update(
            r#"{"type":"options_update","payload":{"wantedDids":["did:plc:a"],"maxMessageSizeBytes":-5}}"#,
            &config,
        )
        .expect("valid")
        .expect("an update");
        assert_eq!(filters.dids.len(), 1);
        assert!(filters.collections.is_none());
        assert_eq!(filters.max_message_size, 0);
        assert!(matches!(
            parse_options_update(r#"{"type":"hello"}"#, &config),
            Ok(None)
        ));
        assert!(parse_options_update("not json", &config).is_err());
        assert!(parse_options_update(
            r#"{"type":"options_update","payload":{"wantedCollections":["nope"]}}"#,
            &config
        )
        .is_err());
    }
}
