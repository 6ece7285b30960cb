//! A simulated atproto network on loopback: a relay's firehose, a PDS's sync endpoints and a PLC
//! directory, all serving one frame log, with faults on demand.
//!
//! Input is a frame log and the DID documents of its accounts, as written by
//! `butterfly_sim::firehose` (`butterfly sim firehose`). [`SimNetwork::start`] serves them over HTTP:
//!
//! - `com.atproto.sync.subscribeRepos`: the log's frames over a WebSocket. A *head* advances through
//!   the log at [`SimConfig::rate`] events per second from startup; a client without a cursor starts
//!   at the head, a client with one first gets every frame with a `seq` above it. A cursor beyond the
//!   head gets a `FutureCursor` error frame, as from the reference relay.
//! - `com.atproto.sync.getRepo`, `getLatestCommit`, `getRepoStatus`, `listRepos`,
//!   `listReposByCollection`, `com.atproto.repo.describeRepo` and `com.atproto.identity.resolveHandle`,
//!   answering from the repos as they stand at the head (each rebuilt from its commits' slices).
//! - `GET /{did}`: the DID document, PLC style, its PDS endpoint pointing at this server.
//! - `GET /_sim/stats`: counts of what was sent and which faults fired ([`SimStats`]).
//!
//! [`Faults`] injects what a real network does on a bad day: dropped connections, stalls, garbage
//! frames (sent *before* the real frame, so no `seq` is lost), commits re-signed with the wrong key,
//! and 429s on XRPC calls.
//!
//! What this crate does not do: no TLS, no auth, no writes, no `getRecord`/`getBlocks`, no PLC audit
//! log, no `since` diffs (`getRepo` always sends the whole repo, built in memory); it listens wherever
//! it is told but is meant for loopback only. The log is held in memory and sent without copying.
//!
//! ```no_run
//! # async fn example(frames: Vec<u8>, docs: Vec<u8>) -> Result<(), butterfly_simnet::Error> {
//! let sim = butterfly_simnet::SimNetwork::start(butterfly_simnet::SimConfig::new(frames, docs)).await?;
//! println!("firehose at {}", sim.firehose_url());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod http;
mod log;
mod repos;
mod stream;

use bytes::Bytes;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading an input file or binding the listener failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The frame log is cut short or has an oversized frame.
    #[error(transparent)]
    FrameLog(#[from] butterfly_firehose::frame_log::Error),
    /// A frame of the log does not decode, or its `seq` does not increase.
    #[error("frame {index} of the log: {message}")]
    BadFrame {
        /// Position of the frame in the log, from 0.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// The DID documents or a setting are unusable.
    #[error("{0}")]
    Config(String),
}

/// A stall: after `after` frames on a connection, nothing more is sent for `duration` (the connection
/// stays open), once per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    /// Frames sent on the connection before it stalls.
    pub after: u64,
    /// How long it stays silent.
    pub duration: Duration,
}

/// Faults to inject. A count of 0 turns that fault off; counts are per connection for the firehose
/// faults, over the whole log for forgeries, and over all XRPC requests for rate limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Close the WebSocket after every this many frames sent on it.
    pub disconnect_every: u64,
    /// Go silent once per connection.
    pub stall: Option<Stall>,
    /// Before every this-many-th frame on a connection, send a garbage frame (random bytes, a
    /// truncated copy of the frame, or an unknown op); the real frame follows, so no `seq` is lost.
    pub malformed_every: u64,
    /// Every this-many-th `#commit` of the log is re-signed with a wrong key (the frame decodes and
    /// its proof holds; the signature does not verify). Sent instead of the real frame.
    pub forge_every: u64,
    /// Every this-many-th XRPC HTTP request (not `subscribeRepos`) answers 429 with `Retry-After: 1`.
    pub rate_limit_every: u64,
}

/// What to serve, where, how fast and how badly.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The frame log's bytes (length-prefixed frames).
    pub frames: Bytes,
    /// The DID documents: a JSON array.
    pub identities: Bytes,
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Events per second the head advances; 0 releases the whole log at startup.
    pub rate: f64,
    /// Faults to inject.
    pub faults: Faults,
    /// Stamp each frame's `time` with the moment it is sent, as a relay stamps the events it
    /// emits, instead of the simulated time it was generated with. Consumers' lag then reads
    /// how far behind the stream they are, not how old the generated log is.
    pub retime: bool,
}

impl SimConfig {
    /// Serves `frames` and `identities` on a free loopback port, the whole log at once, no faults.
    pub fn new(frames: impl Into<Bytes>, identities: impl Into<Bytes>) -> SimConfig {
        SimConfig {
            frames: frames.into(),
            identities: identities.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            rate: 0.0,
            faults: Faults::default(),
            retime: false,
        }
    }

    /// As [`SimConfig::new`], reading the two files.
    pub fn from_files(frames: &Path, identities: &Path) -> Result<SimConfig, Error> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| Error::Io {
                what: format!("reading {}", path.display()),
                source,
            })
        };
        Ok(SimConfig::new(read(frames)?, read(identities)?))
    }
}

/// Counts since startup, as served at `/_sim/stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Frames in the log.
    pub frames_total: u64,
    /// Frames released so far.
    pub head_frames: u64,
    /// `seq` of the last released frame (0 before the first).
    pub head_seq: i64,
    /// WebSocket connections accepted.
    pub connections: u64,
    /// Log frames sent, over all connections (forged ones included).
    pub frames_sent: u64,
    /// Garbage frames sent.
    pub malformed_sent: u64,
    /// Forged commits sent.
    pub forged_sent: u64,
    /// Connections closed by `disconnect_every`.
    pub disconnects: u64,
    /// Stalls begun.
    pub stalls: u64,
    /// `FutureCursor` errors sent.
    pub future_cursors: u64,
    /// XRPC HTTP requests received.
    pub xrpc_requests: u64,
    /// Of those, answered 429 by `rate_limit_every`.
    pub rate_limited: u64,
    /// Released frames the repo state could not apply.
    pub apply_errors: u64,
}

/// Counters shared by the tasks.
#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    frames_sent: AtomicU64,
    malformed_sent: AtomicU64,
    forged_sent: AtomicU64,
    disconnects: AtomicU64,
    stalls: AtomicU64,
    future_cursors: AtomicU64,
    xrpc_requests: AtomicU64,
    rate_limited: AtomicU64,
    apply_errors: AtomicU64,
}

fn bump(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed) + 1
}

/// Everything the handlers share.
struct Shared {
    log: log::LoadedLog,
    repos: Mutex<repos::Repos>,
    directory: repos::Directory,
    /// Frames released; the WebSocket tasks wait on it.
    head: watch::Sender<usize>,
    shutdown: watch::Receiver<bool>,
    faults: Faults,
    retime: bool,
    counters: Counters,
}

impl Shared {
    fn repos(&self) -> MutexGuard<'_, repos::Repos> {
        // A panic while holding the lock leaves the state as it was between frames: still usable.
        self.repos
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies frames up to `target` to the repo state, then releases them.
    fn advance_to(&self, target: usize) {
        let current = *self.head.borrow();
        if target <= current {
            return;
        }
        {
            let mut repos = self.repos();
            for index in current..target {
                if let Err(message) = repos.apply(&self.log.frame(index)) {
                    bump(&self.counters.apply_errors);
                    tracing::warn!(index, seq = self.log.entries[index].seq, %message, "frame not applied");
                }
            }
        }
        self.head.send_replace(target);
    }

    fn stats(&self) -> SimStats {
        let c = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let head = *self.head.borrow();
        SimStats {
            frames_total: self.log.len() as u64,
            head_frames: head as u64,
            head_seq: self.log.seq_before(head),
            connections: load(&c.connections),
            frames_sent: load(&c.frames_sent),
            malformed_sent: load(&c.malformed_sent),
            forged_sent: load(&c.forged_sent),
            disconnects: load(&c.disconnects),
            stalls: load(&c.stalls),
            future_cursors: load(&c.future_cursors),
            xrpc_requests: load(&c.xrpc_requests),
            rate_limited: load(&c.rate_limited),
            apply_errors: load(&c.apply_errors),
        }
    }
}

/// A running simulated network. Dropping it stops the server and closes every connection.
pub struct SimNetwork {
    shared: Arc<Shared>,
    url: String,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    clock: Option<JoinHandle<()>>,
}

impl SimNetwork {
    /// Loads the log and documents, binds, and starts serving. With `rate` 0 the whole log is applied
    /// before this returns; otherwise the head starts at 0 and advances in the background.
    ///
    /// Must be called within a tokio runtime.
    pub async fn start(config: SimConfig) -> Result<SimNetwork, Error> {
        if !config.rate.is_finite() || config.rate < 0.0 {
            return Err(Error::Config(format!(
                "rate must be 0 or a positive number of events per second, found {}",
                config.rate
            )));
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Io {
                what: format!("binding {}", config.listen),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            what: "reading the bound address".into(),
            source,
        })?;
        let url = format!("http://{addr}");
        let log = log::LoadedLog::load(config.frames, config.faults.forge_every)?;
        let directory = repos::Directory::load(&config.identities, &url)?;
        let (stop, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            log,
            repos: Mutex::new(repos::Repos::default()),
            directory,
            head: watch::Sender::new(0),
            shutdown: shutdown.clone(),
            faults: config.faults,
            retime: config.retime,
            counters: Counters::default(),
        });
        let clock = if config.rate == 0.0 {
            shared.advance_to(shared.log.len());
            None
        } else {
            Some(tokio::spawn(advance(shared.clone(), config.rate)))
        };
        let router = http::router(shared.clone());
        let mut server_shutdown = shutdown;
        let server = tokio::spawn(async move {
            let stopped = async move {
                let _ = server_shutdown.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::error!(%error, "simulated network stopped");
            }
        });
        Ok(SimNetwork {
            shared,
            url,
            addr,
            stop,
            server: Some(server),
            clock,
        })
    }

    /// The HTTP base URL, `http://127.0.0.1:PORT`: the PDS of every account.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The firehose: `ws://127.0.0.1:PORT/xrpc/com.atproto.sync.subscribeRepos`.
    pub fn firehose_url(&self) -> String {
        format!("ws://{}/xrpc/com.atproto.sync.subscribeRepos", self.addr)
    }

    /// The PLC directory (same server): `GET {plc_url}/{did}`.
    pub fn plc_url(&self) -> &str {
        &self.url
    }

    /// Counts so far.
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// Waits until the head has released the frame with `seq` (or the whole log, if it has none that
    /// high).
    pub async fn wait_for_seq(&self, seq: i64) {
        let log = &self.shared.log;
        let target = (log.entries.partition_point(|e| e.seq < seq) + 1).min(log.len());
        let mut head = self.shared.head.subscribe();
        let _ = head.wait_for(|released| *released >= target).await;
    }

    /// The line the CLI prints when ready: URLs and sizes, as JSON.
    pub fn ready_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ready": true,
            "url": self.url,
            "firehose": self.firehose_url(),
            "plc": self.url,
            "repos": self.shared.directory.by_did.len(),
            "events": self.shared.log.len(),
        })
    }

    /// Stops serving and waits for the server to finish (open WebSockets are closed).
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(clock) = self.clock.take() {
            clock.abort();
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }
}

impl Drop for SimNetwork {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(clock) = self.clock.take() {
            clock.abort();
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Advances the head at `rate` events per second from now.
async fn advance(shared: Arc<Shared>, rate: f64) {
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let total = shared.log.len();
    while *shared.head.borrow() < total {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate).floor();
        let target = if due >= total as f64 {
            total
        } else {
            due as usize
        };
        shared.advance_to(target);
    }
}
