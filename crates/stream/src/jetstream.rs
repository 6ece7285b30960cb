//! The Jetstream (v1) client: atproto events as JSON, filtered by collection and DID, optionally
//! zstd-compressed.
//!
//! Jetstream serves `/subscribe` over WebSocket. Query parameters: `wantedCollections` (repeatable;
//! NSIDs or prefixes such as `app.bsky.feed.*`), `wantedDids` (repeatable), `cursor` (a unix time in
//! microseconds), `compress=true`. Each event is one message: `{did, time_us, kind, commit | identity |
//! account}`. The filters can be changed on the open socket with an `options_update` message
//! ([`JetstreamConnection::update_options`]).
//!
//! **Compression.** With [`JetstreamConfig::compress`], the client asks for zstd (`compress=true` and
//! the `Socket-Encoding: zstd` header). Jetstream compresses each message on its own with a custom
//! dictionary; [`JETSTREAM_ZSTD_DICTIONARY`] is that dictionary, vendored (provenance in
//! `data/README.md`). Binary messages that start with the zstd magic number are decompressed (with the
//! configured dictionary, or none), anything else is read as JSON, so a server that ignores the request
//! still works.
//!
//! **Cursor.** The client keeps the highest `time_us` delivered. On a reconnection it asks for that
//! time minus [`JetstreamConfig::cursor_rewind`] (3 s by default): Jetstream stamps events as it
//! receives them and replays from a time inclusively, so rewinding a little trades a few duplicates
//! for never missing an event stamped slightly out of order. Jetstream's own guidance is that
//! consumers must be idempotent, and this choice relies on it. The cursor never moves backwards.
//!
//! **Filters on reconnection.** The filters in force (the latest given to `update_options`) are sent
//! as query parameters of each new connection, so they survive reconnects.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use url::Url;

use butterfly_syntax::{CidString, Did, Handle, Nsid, RecordKey, Tid};

use crate::config::StreamConfig;
use crate::reconnect::{self, Outcome, Session};
use crate::socket::{Connector, Inbound, Socket};
use crate::{set_query_param, websocket_url, Connection, Cursor, DisconnectReason, Driver, Error};

/// The zstd dictionary Jetstream compresses its messages with (`pkg/models/zstd_dictionary` upstream;
/// see `data/README.md` beside this crate for where this copy comes from).
pub const JETSTREAM_ZSTD_DICTIONARY: &[u8] = include_bytes!("../data/jetstream-zstd-dictionary");

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Which events the server sends. Empty lists mean everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    /// Collection NSIDs, or prefixes ending in `.*` such as `app.bsky.feed.*`. Identity and account
    /// events are sent whatever this says.
    pub wanted_collections: Vec<String>,
    /// Repo DIDs.
    pub wanted_dids: Vec<String>,
}

/// How a Jetstream client subscribes.
#[derive(Clone, Debug)]
pub struct JetstreamConfig {
    /// The initial filters (more can be added as query parameters of the endpoint URL; both are used).
    pub filters: Filters,
    /// Where to start: a unix time in microseconds. `None` starts at the live tail.
    pub cursor: Option<i64>,
    /// Ask for zstd-compressed messages (about half the bandwidth).
    pub compress: bool,
    /// The dictionary for compressed messages: Jetstream's ([`JETSTREAM_ZSTD_DICTIONARY`]) by default;
    /// `None` for servers that compress without one.
    pub zstd_dictionary: Option<Cow<'static, [u8]>>,
    /// How far before the last delivered `time_us` a reconnection resumes (see the module docs).
    pub cursor_rewind: Duration,
    /// `maxMessageSizeBytes` for the server: events larger than this are not sent. 0 means no limit.
    pub max_message_size_bytes: u64,
    /// Network policy, queue bound, liveness and backoff.
    pub stream: StreamConfig,
}

impl Default for JetstreamConfig {
    fn default() -> Self {
        JetstreamConfig {
            filters: Filters::default(),
            cursor: None,
            compress: true,
            zstd_dictionary: Some(Cow::Borrowed(JETSTREAM_ZSTD_DICTIONARY)),
            cursor_rewind: Duration::from_secs(3),
            max_message_size_bytes: 0,
            stream: StreamConfig::default(),
        }
    }
}

/// One item of a Jetstream stream.
#[derive(Debug)]
#[non_exhaustive]
pub enum JetstreamItem {
    /// A message, with its decoding. `raw` is the JSON text (or, if decompression failed, the bytes
    /// received).
    Event {
        /// The message's JSON (decompressed).
        raw: Bytes,
        /// The typed event, or why it could not be decoded (counted by the consumer; the stream goes
        /// on).
        event: Result<Event, DecodeError>,
    },
    /// A connection is open.
    Connected {
        /// The `cursor` sent with the request (`None`: the live tail).
        cursor: Option<i64>,
    },
    /// The connection ended; the client reconnects after `retry_in`.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
        /// The wait before the next attempt.
        retry_in: Duration,
        /// The cursor the next attempt will send.
        cursor: Option<i64>,
    },
}

/// A Jetstream event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The repo (account) the event is about.
    pub did: Did,
    /// When Jetstream received it, in microseconds since the unix epoch; the cursor.
    pub time_us: i64,
    /// What happened.
    pub kind: EventKind,
}

/// The `kind` of an event and its body.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// `commit`: one record was created, updated or deleted.
    Commit(Commit),
    /// `identity`: the handle or DID document may have changed.
    Identity(Identity),
    /// `account`: the account's hosting status changed.
    Account(Account),
    /// A kind this version does not know, delivered so the consumer can count it.
    Unknown {
        /// The `kind` field.
        kind: String,
    },
}

/// A record operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A new record.
    Create,
    /// A record replaced.
    Update,
    /// A record removed.
    Delete,
}

/// The `commit` body of an event.
#[derive(Clone, Debug, PartialEq)]
pub struct Commit {
    /// The repo revision of the commit.
    pub rev: Tid,
    /// What happened to the record.
    pub operation: Operation,
    /// The record's collection.
    pub collection: Nsid,
    /// The record's key.
    pub rkey: RecordKey,
    /// The record as JSON (create and update).
    pub record: Option<serde_json::Value>,
    /// The record's CID (create and update).
    pub cid: Option<CidString>,
}

/// The `identity` body of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The DID.
    pub did: Did,
    /// The current handle, if known.
    pub handle: Option<Handle>,
    /// The upstream firehose `seq`.
    pub seq: i64,
    /// The upstream event time (RFC 3339).
    pub time: String,
}

/// The `account` body of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The DID.
    pub did: Did,
    /// Whether the account's repo is served.
    pub active: bool,
    /// Why it is not active (`takendown`, `suspended`, `deleted`, `deactivated`, ...).
    pub status: Option<String>,
    /// The upstream firehose `seq`.
    pub seq: i64,
    /// The upstream event time (RFC 3339).
    pub time: String,
}

/// Why a Jetstream message could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A zstd message could not be decompressed (corrupt, or another dictionary).
    #[error("zstd: {0}")]
    Decompress(String),
    /// The decompressed message is over the size limit.
    #[error("event over the {limit} byte limit")]
    TooLarge {
        /// The limit in bytes ([`StreamConfig::max_message_bytes`]).
        limit: usize,
    },
    /// Not JSON of the expected shape.
    #[error("json: {0}")]
    Json(String),
    /// A field is invalid.
    #[error("{kind} event: {field}: {message}")]
    Field {
        /// The event kind.
        kind: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Decodes one event's JSON.
pub fn decode_event(json: &[u8]) -> Result<Event, DecodeError> {
    let raw: RawEvent =
        serde_json::from_slice(json).map_err(|error| DecodeError::Json(error.to_string()))?;
    let kind_name = raw.kind.as_str();
    let field = |field: &'static str, message: String| DecodeError::Field {
        kind: kind_name.to_owned(),
        field,
        message,
    };
    let did = Did::parse(&raw.did).map_err(|error| field("did", error.to_string()))?;
    let body = |name: &'static str, value: Option<serde_json::Value>| {
        value.ok_or_else(|| field(name, "missing".to_owned()))
    };
    let kind = match kind_name {
        "commit" => {
            let commit: RawCommit = serde_json::from_value(body("commit", raw.commit)?)
                .map_err(|error| field("commit", error.to_string()))?;
            let operation = match commit.operation.as_str() {
                "create" => Operation::Create,
                "update" => Operation::Update,
                "delete" => Operation::Delete,
                other => return Err(field("commit.operation", format!("unknown {other:?}"))),
            };
            let cid = commit
                .cid
                .map(|cid| CidString::parse(&cid))
                .transpose()
                .map_err(|error| field("commit.cid", error.to_string()))?;
            if operation != Operation::Delete && (cid.is_none() || commit.record.is_none()) {
                return Err(field(
                    "commit",
                    "create and update need a record and a cid".to_owned(),
                ));
            }
            EventKind::Commit(Commit {
                rev: Tid::parse(&commit.rev)
                    .map_err(|error| field("commit.rev", error.to_string()))?,
                operation,
                collection: Nsid::parse(&commit.collection)
                    .map_err(|error| field("commit.collection", error.to_string()))?,
                rkey: RecordKey::parse(&commit.rkey)
                    .map_err(|error| field("commit.rkey", error.to_string()))?,
                record: commit.record,
                cid,
            })
        }
        "identity" => {
            let identity: RawIdentity = serde_json::from_value(body("identity", raw.identity)?)
                .map_err(|error| field("identity", error.to_string()))?;
            EventKind::Identity(Identity {
                did: Did::parse(&identity.did)
                    .map_err(|error| field("identity.did", error.to_string()))?,
                handle: identity
                    .handle
                    .map(|handle| Handle::parse(&handle))
                    .transpose()
                    .map_err(|error| field("identity.handle", error.to_string()))?,
                seq: identity.seq,
                time: identity.time,
            })
        }
        "account" => {
            let account: RawAccount = serde_json::from_value(body("account", raw.account)?)
                .map_err(|error| field("account", error.to_string()))?;
            EventKind::Account(Account {
                did: Did::parse(&account.did)
                    .map_err(|error| field("account.did", error.to_string()))?,
                active: account.active,
                status: account.status,
                seq: account.seq,
                time: account.time,
            })
        }
        other => EventKind::Unknown {
            kind: other.to_owned(),
        },
    };
    Ok(Event {
        did,
        time_us: raw.time_us,
        kind,
    })
}

#[derive(Deserialize)]
struct RawEvent {
    did: String,
    time_us: i64,
    kind: String,
    #[serde(default)]
    commit: Option<serde_json::Value>,
    #[serde(default)]
    identity: Option<serde_json::Value>,
    #[serde(default)]
    account: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawCommit {
    rev: String,
    operation: String,
    collection: String,
    rkey: String,
    #[serde(default)]
    record: Option<serde_json::Value>,
    #[serde(default)]
    cid: Option<String>,
}

#[derive(Deserialize)]
struct RawIdentity {
    did: String,
    #[serde(default)]
    handle: Option<String>,
    seq: i64,
    time: String,
}

#[derive(Deserialize)]
struct RawAccount {
    did: String,
    active: bool,
    #[serde(default)]
    status: Option<String>,
    seq: i64,
    time: String,
}

/// The `options_update` message that sets `filters` on an open socket.
pub fn options_update_message(filters: &Filters, max_message_size_bytes: u64) -> String {
    serde_json::json!({
        "type": "options_update",
        "payload": {
            "wantedCollections": filters.wanted_collections,
            "wantedDids": filters.wanted_dids,
            "maxMessageSizeBytes": max_message_size_bytes,
        }
    })
    .to_string()
}

/// The `/subscribe` URL for `endpoint`: a ws(s) URL is used as given; an http(s) base URL becomes
/// `ws(s)://host/subscribe`.
pub fn jetstream_endpoint(endpoint: &str) -> Result<Url, Error> {
    websocket_url(endpoint, "/subscribe")
}

/// The handle of a running Jetstream client: cursor, filters and shutdown.
///
/// As with [`Connection`], dropping it does not stop the client; dropping the receiver does.
#[derive(Debug)]
pub struct JetstreamConnection {
    connection: Connection,
    filters: watch::Sender<Filters>,
}

impl JetstreamConnection {
    /// Replaces the filters: sent at once as `options_update` on the open socket (or with the next
    /// connection if none is open), and used for every reconnection after.
    pub fn update_options(&self, filters: Filters) {
        self.filters.send_replace(filters);
    }

    /// The filters in force.
    pub fn filters(&self) -> Filters {
        self.filters.borrow().clone()
    }

    /// The highest `time_us` delivered, or the start cursor before any event.
    pub fn cursor(&self) -> Option<i64> {
        self.connection.cursor()
    }

    /// Asks the client to stop (see [`Connection::shutdown`]).
    pub fn shutdown(&self) {
        self.connection.shutdown();
    }

    /// Whether the client has stopped.
    pub fn is_finished(&self) -> bool {
        self.connection.is_finished()
    }

    /// Stops the client and waits until it has closed the socket.
    pub async fn close(self) {
        self.connection.close().await;
    }
}

/// Starts a Jetstream client on the current tokio runtime and returns its handle and the receiving
/// end of its bounded channel (`config.stream.queue_capacity` items).
///
/// `wantedCollections`, `wantedDids` and `cursor` found in the endpoint URL are added to the
/// configuration's (the URL's cursor is used when the configuration has none).
///
/// Fails at once only for an unusable URL, a literal IP address the policy refuses, a dictionary or
/// TLS configuration that cannot be loaded, or a `User-Agent` that cannot be sent; connection failures
/// are delivered and retried.
///
/// # Panics
/// Outside a tokio runtime.
pub fn subscribe(
    endpoint: &str,
    mut config: JetstreamConfig,
) -> Result<(JetstreamConnection, mpsc::Receiver<JetstreamItem>), Error> {
    let mut endpoint = jetstream_endpoint(endpoint)?;
    for (key, value) in endpoint.query_pairs() {
        match key.as_ref() {
            "wantedCollections" => config.filters.wanted_collections.push(value.into_owned()),
            "wantedDids" => config.filters.wanted_dids.push(value.into_owned()),
            "cursor" if config.cursor.is_none() => {
                config.cursor = Some(value.parse().map_err(|_| Error::InvalidUrl {
                    url: endpoint.to_string(),
                    reason: format!("cursor {value:?} is not an integer"),
                })?)
            }
            _ => {}
        }
    }
    for owned in OWNED_PARAMETERS {
        set_query_param(&mut endpoint, owned, None);
    }
    let mut headers = HeaderMap::new();
    if config.compress {
        headers.insert(
            HeaderName::from_static("socket-encoding"),
            HeaderValue::from_static("zstd"),
        );
    }
    let connector = Connector::new(&config.stream, &endpoint, headers)?;
    // One decompressor for every connection; loading the dictionary now also refuses a bad one.
    let decompressor = new_decompressor(config.zstd_dictionary.as_deref())?;
    let (filters_sender, filters) = watch::channel(config.filters.clone());
    let cursor = Cursor::new(config.cursor);
    let stream = config.stream.clone();
    let session = Jetstream {
        endpoint,
        start_cursor: config.cursor,
        config,
        cursor: cursor.clone(),
        delivered: false,
        filters,
        filters_open: true,
        decompressor,
    };
    let (connection, receiver) = reconnect::spawn(session, connector, stream, cursor);
    Ok((
        JetstreamConnection {
            connection,
            filters: filters_sender,
        },
        receiver,
    ))
}

/// Query parameters the client sets itself on every connection.
const OWNED_PARAMETERS: [&str; 5] = [
    "wantedCollections",
    "wantedDids",
    "cursor",
    "compress",
    "maxMessageSizeBytes",
];

fn new_decompressor(dictionary: Option<&[u8]>) -> Result<zstd::bulk::Decompressor<'static>, Error> {
    match dictionary {
        Some(dictionary) => zstd::bulk::Decompressor::with_dictionary(dictionary),
        None => zstd::bulk::Decompressor::new(),
    }
    .map_err(|error| Error::Dictionary(error.to_string()))
}

struct Jetstream {
    endpoint: Url,
    config: JetstreamConfig,
    cursor: Cursor,
    start_cursor: Option<i64>,
    delivered: bool,
    filters: watch::Receiver<Filters>,
    filters_open: bool,
    decompressor: zstd::bulk::Decompressor<'static>,
}

enum Interrupt {
    Stop,
    Filters,
    FiltersDropped,
}

impl Session for Jetstream {
    type Item = JetstreamItem;
    const NAME: &'static str = "jetstream";

    /// The start cursor until an event is delivered, then the highest `time_us` delivered minus the
    /// rewind.
    fn resume_cursor(&self) -> Option<i64> {
        if !self.delivered {
            return self.start_cursor;
        }
        let rewind = i64::try_from(self.config.cursor_rewind.as_micros()).unwrap_or(i64::MAX);
        self.cursor
            .get()
            .map(|time_us| time_us.saturating_sub(rewind).max(0))
    }

    /// The endpoint with the filters in force, `cursor` and the client's options.
    fn url(&mut self, cursor: Option<i64>) -> Url {
        let mut url = self.endpoint.clone();
        {
            let filters = self.filters.borrow_and_update();
            let mut pairs = url.query_pairs_mut();
            for collection in &filters.wanted_collections {
                pairs.append_pair("wantedCollections", collection);
            }
            for did in &filters.wanted_dids {
                pairs.append_pair("wantedDids", did);
            }
            if let Some(cursor) = cursor {
                pairs.append_pair("cursor", &cursor.to_string());
            }
            if self.config.compress {
                pairs.append_pair("compress", "true");
            }
            if self.config.max_message_size_bytes > 0 {
                pairs.append_pair(
                    "maxMessageSizeBytes",
                    &self.config.max_message_size_bytes.to_string(),
                );
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }

    fn connected(cursor: Option<i64>) -> JetstreamItem {
        JetstreamItem::Connected { cursor }
    }

    fn disconnected(
        reason: DisconnectReason,
        retry_in: Duration,
        cursor: Option<i64>,
    ) -> JetstreamItem {
        JetstreamItem::Disconnected {
            reason,
            retry_in,
            cursor,
        }
    }

    /// Delivers every event, and sends `options_update` when the filters change.
    async fn read(&mut self, socket: &mut Socket, driver: &mut Driver<JetstreamItem>) -> Outcome {
        let limit = self.config.stream.max_message_bytes;
        loop {
            let filters_open = self.filters_open;
            let filters = &mut self.filters;
            let interrupt = async {
                if !filters_open {
                    driver.stopped().await;
                    return Interrupt::Stop;
                }
                tokio::select! {
                    () = driver.stopped() => Interrupt::Stop,
                    changed = filters.changed() => match changed {
                        Ok(()) => Interrupt::Filters,
                        Err(_) => Interrupt::FiltersDropped,
                    },
                }
            };
            let (raw, event) = match socket.next(interrupt).await {
                Inbound::Interrupted(Interrupt::Stop) => return Outcome::Stopped,
                Inbound::Interrupted(Interrupt::FiltersDropped) => {
                    self.filters_open = false;
                    continue;
                }
                Inbound::Interrupted(Interrupt::Filters) => {
                    let filters = self.filters.borrow_and_update().clone();
                    let text = options_update_message(&filters, self.config.max_message_size_bytes);
                    tracing::info!(?filters, "jetstream options_update");
                    if let Err(reason) = socket.send(WsMessage::text(text)).await {
                        return Outcome::Ended(reason);
                    }
                    continue;
                }
                Inbound::Ended(reason) => return Outcome::Ended(reason),
                Inbound::Binary(bytes) if bytes.starts_with(&ZSTD_MAGIC) => {
                    match decompress(&mut self.decompressor, &bytes, limit) {
                        Ok(json) => {
                            let event = decode_event(&json);
                            (json, event)
                        }
                        Err(error) => (bytes, Err(error)),
                    }
                }
                Inbound::Binary(raw) | Inbound::Text(raw) => {
                    let event = decode_event(&raw);
                    (raw, event)
                }
            };
            let time_us = event.as_ref().ok().map(|event| event.time_us);
            if driver
                .deliver(JetstreamItem::Event { raw, event })
                .await
                .is_err()
            {
                return Outcome::Stopped;
            }
            if let Some(time_us) = time_us {
                self.cursor.advance(time_us);
                self.delivered = true;
            }
        }
    }
}

/// Decompresses one message, refusing output over `limit` bytes.
fn decompress(
    decompressor: &mut zstd::bulk::Decompressor<'static>,
    bytes: &[u8],
    limit: usize,
) -> Result<Bytes, DecodeError> {
    // `decompress` refuses a frame whose recorded size is over `limit` before allocating, allocates
    // the recorded size, and stops at `limit` for a frame that records none (a zstd bomb).
    decompressor
        .decompress(bytes, limit)
        .map(Bytes::from)
        .map_err(|error| {
            let message = error.to_string();
            if message.contains("too small") {
                DecodeError::TooLarge { limit }
            } else {
                DecodeError::Decompress(message)
            }
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_vendored_dictionary_is_jetstreams() {
        assert_eq!(JETSTREAM_ZSTD_DICTIONARY.len(), 112_640);
        assert_eq!(&JETSTREAM_ZSTD_DICTIONARY[..4], &[0x37, 0xa4, 0x30, 0xec]);
        let id = u32::from_le_bytes(JETSTREAM_ZSTD_DICTIONARY[4..8].try_into().unwrap());
        assert_eq!(id, 0x6015_466d);
        new_decompressor(Some(JETSTREAM_ZSTD_DICTIONARY)).unwrap();
    }

    #[test]
    fn decodes_the_three_kinds_and_keeps_unknown_ones() {
        let commit = br#"{"did":"did:plc:eygmaihciaxprqvxpfvl6flk","time_us":1725911162329308,"kind":"commit","commit":{"rev":"3l3qo2vutsw2b","operation":"create","collection":"app.bsky.feed.like","rkey":"3l3qo2vuowo2b","record":{"$type":"app.bsky.feed.like","createdAt":"2024-09-09T19:46:02.102Z","subject":{"cid":"bafyreidc6sydkkbchcyg62v77wbhzvb2mvytlmsychqgwf2xojjtirmzj4","uri":"at://did:plc:wa7b35aakoll7hugkrjtf3xf/app.bsky.feed.post/3l3pte3p2e325"}},"cid":"bafyreidwaivazkwu67xztlmuobx35hs2lnfh3kolmgfmucldvhd3sgzcqi"}}"#;
        let event = decode_event(commit).unwrap();
        assert_eq!(event.time_us, 1_725_911_162_329_308);
        let EventKind::Commit(commit) = &event.kind else {
            panic!("{event:?}")
        };
        assert_eq!(commit.operation, Operation::Create);
        assert_eq!(commit.collection.as_str(), "app.bsky.feed.like");
        assert_eq!(
            commit.record.as_ref().unwrap()["$type"],
            "app.bsky.feed.like"
        );

        let delete = br#"{"did":"did:plc:rfov6bpyztcnedeyyzgfq42k","time_us":1725516666833633,"kind":"commit","commit":{"rev":"3l3f6nzl3cv2s","operation":"delete","collection":"app.bsky.graph.follow","rkey":"3l3dn7tku762u"}}"#;
        let EventKind::Commit(commit) = decode_event(delete).unwrap().kind else {
            panic!()
        };
        assert_eq!(commit.operation, Operation::Delete);
        assert_eq!(commit.record, None);

        let identity = br#"{"did":"did:plc:ufbl4k27gp6kzas5glhz7fim","time_us":1725516665234703,"kind":"identity","identity":{"did":"did:plc:ufbl4k27gp6kzas5glhz7fim","handle":"yohenrique.bsky.social","seq":1409752997,"time":"2024-09-05T06:11:04.870Z"}}"#;
        let EventKind::Identity(identity) = decode_event(identity).unwrap().kind else {
            panic!()
        };
        assert_eq!(identity.seq, 1_409_752_997);
        assert_eq!(identity.handle.unwrap().as_str(), "yohenrique.bsky.social");

        let account = br#"{"did":"did:plc:ufbl4k27gp6kzas5glhz7fim","time_us":1725516665333808,"kind":"account","account":{"active":false,"did":"did:plc:ufbl4k27gp6kzas5glhz7fim","seq":1409753013,"time":"2024-09-05T06:11:04.870Z","status":"deactivated"}}"#;
        let EventKind::Account(account) = decode_event(account).unwrap().kind else {
            panic!()
        };
        assert!(!account.active);
        assert_eq!(account.status.as_deref(), Some("deactivated"));

        let unknown =
            br#"{"did":"did:plc:ufbl4k27gp6kzas5glhz7fim","time_us":5,"kind":"sync","sync":{}}"#;
        assert_eq!(
            decode_event(unknown).unwrap().kind,
            EventKind::Unknown {
                kind: "sync".to_owned()
            }
        );
    }

    #[test]
    fn bad_events_are_errors() {
        for (json, expect) in [
            (&b"not json"[..], "json"),
            (br#"{"did":"nope","time_us":1,"kind":"commit"}"#, "did"),
            (
                br#"{"did":"did:plc:ufbl4k27gp6kzas5glhz7fim","time_us":1,"kind":"commit"}"#,
                "commit: missing",
            ),
            (
                br#"{"did":"did:plc:ufbl4k27gp6kzas5glhz7fim","time_us":1,"kind":"commit","commit":{"rev":"3l3f6nzl3cv2s","operation":"explode","collection":"a.b.c","rkey":"x"}}"#,
                "unknown \"explode\"",
            ),
            (
                br#"{"did":"did:plc:ufbl4k27gp6kzas5glhz7fim","time_us":1,"kind":"commit","commit":{"rev":"3l3f6nzl3cv2s","operation":"create","collection":"a.b.c","rkey":"x"}}"#,
                "need a record",
            ),
        ] {
            let error = decode_event(json).unwrap_err().to_string();
            assert!(error.contains(expect), "{error} lacks {expect}");
        }
    }

    #[test]
    fn zstd_with_and_without_the_dictionary() {
        let json = br#"{"did":"did:plc:ufbl4k27gp6kzas5glhz7fim","time_us":1,"kind":"identity","identity":{"did":"did:plc:ufbl4k27gp6kzas5glhz7fim","seq":1,"time":"2024-09-05T06:11:04.870Z"}}"#;
        let with_dictionary = {
            let mut compressor =
                zstd::bulk::Compressor::with_dictionary(3, JETSTREAM_ZSTD_DICTIONARY).unwrap();
            compressor.compress(json).unwrap()
        };
        let plain = zstd::bulk::compress(json, 3).unwrap();

        let mut jetstream = new_decompressor(Some(JETSTREAM_ZSTD_DICTIONARY)).unwrap();
        let mut bare = new_decompressor(None).unwrap();
        assert_eq!(
            &decompress(&mut jetstream, &with_dictionary, 1 << 20).unwrap()[..],
            json
        );
        assert_eq!(&decompress(&mut bare, &plain, 1 << 20).unwrap()[..], json);
        assert_eq!(
            &decompress(&mut jetstream, &plain, 1 << 20).unwrap()[..],
            json
        );
        assert!(matches!(
            decompress(&mut bare, &with_dictionary, 1 << 20),
            Err(DecodeError::Decompress(_))
        ));
        assert!(matches!(
            decompress(&mut jetstream, &with_dictionary, 10),
            Err(DecodeError::TooLarge { limit: 10 })
        ));
    }

    #[test]
    fn options_update_shape() {
        let filters = Filters {
            wanted_collections: vec!["app.bsky.feed.*".to_owned()],
            wanted_dids: vec![],
        };
        let value: serde_json::Value =
            serde_json::from_str(&options_update_message(&filters, 0)).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type": "options_update", "payload": {
                "wantedCollections": ["app.bsky.feed.*"], "wantedDids": [], "maxMessageSizeBytes": 0
            }})
        );
    }
}
