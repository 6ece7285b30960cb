//! atproto event-stream clients: `com.atproto.sync.subscribeRepos` and Jetstream over WebSocket, and
//! frame-log replay, each feeding a bounded channel.
//!
//! - [`subscribe_repos`] reads a relay's or PDS's firehose. Each binary message is decoded with
//!   [`butterfly_firehose::decode_frame`] and delivered with its raw bytes as a [`StreamItem::Frame`];
//!   a malformed one is delivered as a decode error and the stream goes on. The client keeps the highest
//!   `seq` it delivered and resumes from it after any disconnect, so nothing is missed or repeated
//!   (see [`repos`] for error frames: `FutureCursor` restarts from the live head).
//! - [`replay_frame_log`] feeds the same [`StreamItem`]s from a recorded frame log, for replays and
//!   tests.
//! - [`jetstream::subscribe`] reads Jetstream's JSON events (optionally zstd-compressed with Jetstream's
//!   dictionary), with filters that can be changed on the open socket.
//!
//! All three deliver through a **bounded** `tokio::sync::mpsc` channel. When it is full, the client
//! stops reading the socket (or the file): memory stays bounded and the server sees a slow reader. The
//! WebSocket clients reconnect forever with exponential backoff and jitter ([`BackoffConfig`]), report
//! each connection and disconnection as an item, and stop when the receiver is dropped or
//! [`Connection::shutdown`] is called.
//!
//! **Liveness.** A quiet PDS may send nothing for hours, which is normal. So silence alone never ends
//! a connection: after [`StreamConfig::ping_interval`] of silence the client pings, and only if nothing
//! at all comes back within [`StreamConfig::stall_timeout`] does it declare a stall and reconnect.
//!
//! **Address policy.** Every connection is opened by [`butterfly_net::connect_tcp`]: public addresses
//! only unless `allow_private_network` is set in [`StreamConfig::network`].
//!
//! This crate decodes but does not verify: commit signatures, proofs and the `seq`/`rev` order
//! belong to the consumer (the verifier downstream), which also counts rejections.
//!
//! Specs: <https://atproto.com/specs/event-stream>, <https://atproto.com/specs/sync>; Jetstream:
//! <https://github.com/bluesky-social/jetstream>.
//!
//! ```no_run
//! # async fn demo() -> Result<(), butterfly_stream::Error> {
//! use butterfly_stream::{subscribe_repos, StreamConfig, StreamItem};
//!
//! let (connection, mut items) =
//!     subscribe_repos("https://bsky.network", None, StreamConfig::default())?;
//! while let Some(item) = items.recv().await {
//!     match item {
//!         StreamItem::Frame { frame: Ok(frame), .. } => println!("{frame:?}"),
//!         StreamItem::Frame { frame: Err(error), .. } => eprintln!("bad frame: {error}"),
//!         other => eprintln!("{other:?}"),
//!     }
//! #   break;
//! }
//! connection.close().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use butterfly_firehose::message;
use butterfly_firehose::Frame;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

mod backoff;
mod config;
mod error;
pub mod jetstream;
mod reconnect;
mod replay;
pub mod repos;
mod socket;

pub use config::{BackoffConfig, StreamConfig};
pub use error::Error;
pub use replay::{replay_frame_log, replay_frames};
pub use repos::{repos_endpoint, subscribe_repos};

/// One item of a `subscribeRepos` stream or a frame-log replay.
// Nearly every item is a `Frame`, so boxing it to shrink the rare variants would only add an
// allocation per frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
#[non_exhaustive]
pub enum StreamItem {
    /// A binary WebSocket message (or a recorded one), with its decoding. Error frames (`op: -1`)
    /// decode to [`Frame::Error`]; after one the server closes, and the client reconnects.
    Frame {
        /// The message exactly as received, for recording and for verification.
        raw: Bytes,
        /// The decoded frame, or why it could not be decoded (counted by the consumer; the stream
        /// goes on).
        frame: Result<Frame, message::Error>,
    },
    /// A connection is open. Items that follow come from it.
    Connected {
        /// The cursor sent with the request (`None`: from the live head).
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
    /// The source cannot go on (a frame log that cannot be read to its end). Nothing follows it.
    Failed(Error),
}

/// Why a WebSocket connection ended or could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// Connecting failed: DNS, refused, address policy, TLS, or the handshake (an HTTP error).
    Connect(Error),
    /// The server closed the connection, with a close frame or without one.
    Closed {
        /// The close code, if a close frame came.
        code: Option<u16>,
        /// The close reason, if any.
        reason: String,
    },
    /// The server sent an error frame (`FutureCursor`, `ConsumerTooSlow`, ...). The frame itself was
    /// delivered just before.
    ErrorFrame {
        /// The error name.
        error: String,
        /// Its message, if any.
        message: Option<String>,
    },
    /// Nothing came back within the stall timeout after a ping.
    Stalled {
        /// How long nothing had been received.
        silent_for: Duration,
    },
    /// Reading or writing failed: a reset, a TLS or WebSocket protocol error, or a message over the
    /// size limit.
    Transport(String),
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisconnectReason::Connect(error) => write!(f, "cannot connect: {error}"),
            DisconnectReason::Closed { code, reason } => {
                write!(f, "closed by the server")?;
                if let Some(code) = code {
                    write!(f, " (code {code})")?;
                }
                if !reason.is_empty() {
                    write!(f, ": {reason}")?;
                }
                Ok(())
            }
            DisconnectReason::ErrorFrame { error, message } => {
                write!(f, "error frame {error}")?;
                if let Some(message) = message {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            DisconnectReason::Stalled { silent_for } => write!(
                f,
                "stalled: nothing received for {:.1} s, ping unanswered",
                silent_for.as_secs_f64()
            ),
            DisconnectReason::Transport(message) => write!(f, "transport: {message}"),
        }
    }
}

/// The handle of a running client: its cursor, and shutdown.
///
/// Dropping the handle does not stop the client (dropping the receiver does); call
/// [`Connection::shutdown`] or [`Connection::close`] to stop it while keeping the receiver, which
/// then yields what was already queued and ends.
#[derive(Debug)]
pub struct Connection {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    cursor: Cursor,
}

impl Connection {
    fn spawn(
        cursor: Cursor,
        run: impl FnOnce(watch::Receiver<bool>) -> JoinHandle<()>,
    ) -> Connection {
        let (shutdown, stop) = watch::channel(false);
        let task = run(stop);
        Connection {
            shutdown,
            task,
            cursor,
        }
    }

    /// The cursor a reconnection would resume from now: the highest `seq` delivered for
    /// `subscribeRepos`, the highest `time_us` for Jetstream (before its rewind). `None` before the
    /// first event (and for `subscribeRepos` after a `FutureCursor` reset) unless a start cursor was
    /// given.
    pub fn cursor(&self) -> Option<i64> {
        self.cursor.get()
    }

    /// Asks the client to stop: it closes the socket and drops its sender, so the receiver ends after
    /// the items already queued. Returns at once.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Whether the client has stopped.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the client and waits until it has closed the socket.
    pub async fn close(self) {
        self.shutdown();
        let _ = self.task.await;
    }
}

/// The shared cursor: the highest position delivered, readable from the handle.
#[derive(Clone, Debug)]
pub(crate) struct Cursor(Arc<AtomicI64>);

impl Cursor {
    const NONE: i64 = i64::MIN;

    pub(crate) fn new(start: Option<i64>) -> Cursor {
        Cursor(Arc::new(AtomicI64::new(start.unwrap_or(Self::NONE))))
    }

    pub(crate) fn get(&self) -> Option<i64> {
        match self.0.load(Ordering::Acquire) {
            Self::NONE => None,
            position => Some(position),
        }
    }

    /// Moves forward to `position`; never backwards.
    pub(crate) fn advance(&self, position: i64) {
        self.0.fetch_max(position, Ordering::AcqRel);
    }

    /// Forgets the position (the server's numbering no longer matches ours).
    pub(crate) fn reset(&self) {
        self.0.store(Self::NONE, Ordering::Release);
    }
}

/// The client task's side of the channel and the shutdown signal.
pub(crate) struct Driver<T> {
    sender: mpsc::Sender<T>,
    shutdown: watch::Receiver<bool>,
}

/// The consumer is gone or asked to stop.
pub(crate) struct Stopped;

impl<T> Driver<T> {
    pub(crate) fn new(sender: mpsc::Sender<T>, shutdown: watch::Receiver<bool>) -> Driver<T> {
        Driver { sender, shutdown }
    }

    /// Delivers `item`, waiting while the channel is full (this is the backpressure).
    pub(crate) async fn deliver(&mut self, item: T) -> Result<(), Stopped> {
        tokio::select! {
            biased;
            () = shutdown_requested(&mut self.shutdown) => Err(Stopped),
            sent = self.sender.send(item) => sent.map_err(|_| Stopped),
        }
    }

    /// Finishes when shutdown is requested or the receiver is dropped. Cancel-safe.
    pub(crate) async fn stopped(&mut self) {
        tokio::select! {
            () = shutdown_requested(&mut self.shutdown) => {}
            () = self.sender.closed() => {}
        }
    }

    /// Waits `duration` unless stopped first.
    pub(crate) async fn sleep(&mut self, duration: Duration) -> Result<(), Stopped> {
        tokio::select! {
            () = self.stopped() => Err(Stopped),
            () = tokio::time::sleep(duration) => Ok(()),
        }
    }
}

/// Finishes once shutdown is requested; never if the handle was dropped without asking.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// `mpsc::channel` panics on zero; a queue of one is the smallest that works.
pub(crate) fn channel<T>(capacity: usize) -> (mpsc::Sender<T>, mpsc::Receiver<T>) {
    mpsc::channel(capacity.max(1))
}

/// Parses an endpoint, accepting ws(s) as given and turning http(s) into ws(s) with `path`.
pub(crate) fn websocket_url(endpoint: &str, path: &str) -> Result<url::Url, Error> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let mut url = url::Url::parse(endpoint.trim()).map_err(|error| invalid(&error.to_string()))?;
    let scheme = match url.scheme() {
        "ws" | "wss" => None,
        "http" => Some("ws"),
        "https" => Some("wss"),
        _ => return Err(invalid("scheme is not ws, wss, http or https")),
    };
    if let Some(scheme) = scheme {
        url.set_scheme(scheme)
            .map_err(|()| invalid("cannot change the scheme"))?;
        url.set_path(path);
        url.set_query(None);
    } else if url.path() == "/" || url.path().is_empty() {
        // `wss://relay.example` names the host, not a stream: give it the endpoint's path.
        url.set_path(path);
    }
    url.set_fragment(None);
    if url.host().is_none() {
        return Err(invalid("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the url are not allowed"));
    }
    Ok(url)
}

/// Sets `name=value` in the query, replacing any earlier value, or removes it.
pub(crate) fn set_query_param(url: &mut url::Url, name: &str, value: Option<&str>) {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| key != name)
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    if kept.is_empty() && value.is_none() {
        url.set_query(None);
        return;
    }
    let mut pairs = url.query_pairs_mut();
    pairs.clear();
    for (key, value) in &kept {
        pairs.append_pair(key, value);
    }
    if let Some(value) = value {
        pairs.append_pair(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_websocket_urls() {
        let path = "/xrpc/com.atproto.sync.subscribeRepos";
        for (given, expected) in [
            (
                "https://bsky.network",
                "wss://bsky.network/xrpc/com.atproto.sync.subscribeRepos",
            ),
            (
                "http://localhost:2583/",
                "ws://localhost:2583/xrpc/com.atproto.sync.subscribeRepos",
            ),
            (
                "wss://relay.example/xrpc/com.atproto.sync.subscribeRepos?cursor=5",
                "wss://relay.example/xrpc/com.atproto.sync.subscribeRepos?cursor=5",
            ),
            (
                "ws://127.0.0.1:2600",
                "ws://127.0.0.1:2600/xrpc/com.atproto.sync.subscribeRepos",
            ),
            ("wss://host/custom/path", "wss://host/custom/path"),
        ] {
            assert_eq!(
                websocket_url(given, path).expect("valid").as_str(),
                expected
            );
        }
        for bad in ["ftp://x/", "not a url", "wss://user:pw@relay.example/"] {
            assert!(matches!(
                websocket_url(bad, path),
                Err(Error::InvalidUrl { .. })
            ));
        }
    }

    #[test]
    fn query_parameters_are_replaced() {
        let mut url = url::Url::parse("ws://h/x?cursor=1&a=b").expect("valid");
        set_query_param(&mut url, "cursor", Some("7"));
        assert_eq!(url.as_str(), "ws://h/x?a=b&cursor=7");
        set_query_param(&mut url, "cursor", None);
        assert_eq!(url.as_str(), "ws://h/x?a=b");
        set_query_param(&mut url, "a", None);
        assert_eq!(url.as_str(), "ws://h/x");
    }

    #[test]
    fn the_cursor_never_moves_back_but_can_be_reset() {
        let cursor = Cursor::new(None);
        assert_eq!(cursor.get(), None);
        cursor.advance(5);
        cursor.advance(3);
        assert_eq!(cursor.get(), Some(5));
        cursor.reset();
        assert_eq!(cursor.get(), None);
        cursor.advance(0);
        assert_eq!(cursor.get(), Some(0));
    }
}
