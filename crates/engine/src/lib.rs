//! The sync engine: a selector in, a store kept equal to what it selects.
//!
//! One run goes like this:
//! 1. Load what the store already holds: repo rows, walk edges, the stream cursor.
//! 2. Start the live stream (relay, PDS or Jetstream) first, so that nothing is missed while
//!    backfilling; events of repos still being fetched wait in memory, their cursor tickets held.
//! 3. Resolve the selector's seeds (handles, DIDs, XRPC discovery calls) and evaluate it to a
//!    fixpoint: a repo's tags follow from seeds and from the walk edges of repos already fetched.
//! 4. Backfill every selected repo with `getRepo` (a large repo is spooled to a temporary file, never
//!    held in memory whole), verify its commit and MST, keep what retention says, and record its walk edges.
//! 5. Apply live commits as they are verified; every batch goes to the store in one transaction
//!    together with the cursor, which never runs ahead of the data (see [`writer`]).
//!
//! Modules: [`coordinator`] owns the state and the main loop; [`backfill`] fetches one repo;
//! [`discovery`] resolves seeds; [`live`] turns stream events into changes; [`graph`] holds walk
//! edges and retention; [`writer`] is the store's thread.

mod backfill;
mod control;
mod coordinator;
mod discovery;
mod graph;
mod live;
mod writer;

pub use butterfly_firehose::VerifyMode;
pub use control::{Control, ControlError, RepoStanding, RepoUpdate, SelectorSwap};

use butterfly_identity::Directory;
use butterfly_selector::Selector;
use butterfly_store::{Store, StreamEvent, SyncState};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Where live events come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveSource {
    /// No live stream: backfill only.
    None,
    /// A relay or PDS `subscribeRepos`: an `http(s)://host` base URL (the WebSocket URL is derived)
    /// or a `ws(s)://` URL. Every commit is verified.
    Relay(String),
    /// A Jetstream `/subscribe` URL: trusted JSON events, nothing to verify.
    Jetstream(String),
}

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub live: LiveSource,
    /// How strictly commits are checked, live and in backfill (`off` skips signatures).
    pub verify: VerifyMode,
    /// Backfill to the fixpoint, then stop, without a live stream.
    pub once: bool,
    /// Resume the stream after this seq (Jetstream: µs) instead of the stored cursor.
    pub cursor: Option<i64>,
    /// Repos fetched at the same time.
    pub backfill_concurrency: usize,
    /// `getRepo` calls in flight per PDS host.
    pub per_host_concurrency: usize,
    /// Attempts per repo before it is marked failed (retried again after `retry_failed_after`).
    pub backfill_attempts: u32,
    pub retry_failed_after: Duration,
    /// Largest `getRepo` CAR accepted.
    pub max_repo_bytes: u64,
    /// Where `getRepo` CARs larger than 8 MiB are spooled (the system temp dir when `None`).
    pub spool_dir: Option<PathBuf>,
    /// Allow loopback and private addresses (local test networks).
    pub allow_private_network: bool,
    /// Live events per store transaction at most.
    pub batch_max_events: usize,
    /// How long live events may wait before their batch is written.
    pub batch_interval: Duration,
    /// Records per backfill chunk.
    pub chunk_records: usize,
    /// Keep a log of the served stream's events for this long (see [`Engine::events`]); `None`
    /// writes no log and publishes nothing.
    pub event_log: Option<Duration>,
    /// Events held for subscribers that are behind the live tail; past it they are told they
    /// lagged.
    pub event_buffer: usize,
    /// Names the selector given at start (a hash of its file, say). With it, a selector that
    /// [`Control::replace_selector`] installs is kept in the store and used after a restart,
    /// for as long as the start selector has the same origin.
    pub selector_origin: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            live: LiveSource::None,
            verify: VerifyMode::Strict,
            once: false,
            cursor: None,
            backfill_concurrency: 16,
            per_host_concurrency: 4,
            backfill_attempts: 3,
            retry_failed_after: Duration::from_secs(300),
            max_repo_bytes: 8 << 30,
            spool_dir: None,
            allow_private_network: false,
            batch_max_events: 2000,
            batch_interval: Duration::from_millis(100),
            chunk_records: 5000,
            event_log: None,
            event_buffer: 16_384,
            selector_origin: None,
        }
    }
}

/// Why the engine stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] butterfly_store::Error),
    #[error("the store writer stopped: {0}")]
    Writer(String),
    #[error("live stream: {0}")]
    Stream(#[from] butterfly_stream::Error),
    #[error("{0}")]
    Config(String),
}

/// Counters, shared with whoever shows progress. All monotonic except the gauges noted.
#[derive(Debug, Default)]
pub struct Stats {
    /// Repos the selector holds (gauge).
    pub repos_selected: AtomicU64,
    /// Repos waiting for or in a backfill (gauge).
    pub repos_queued: AtomicU64,
    pub repos_backfilled: AtomicU64,
    pub backfill_failures: AtomicU64,
    pub resyncs: AtomicU64,
    pub records_backfilled: AtomicU64,
    pub live_events: AtomicU64,
    pub live_changes: AtomicU64,
    /// Messages the verifier refused (see `already_applied` for the benign kind).
    pub rejected: AtomicU64,
    /// Commits refused as not newer than the repo's last: replays of what the store already has.
    pub already_applied: AtomicU64,
    /// The last cursor written to the store (gauge; -1 before any).
    pub cursor: AtomicI64,
    /// The stream time (µs since the epoch) of the last live event applied (gauge; 0 before any).
    pub last_event_micros: AtomicI64,
    pub batches_written: AtomicU64,
    /// Live events by kind: commit, identity, account, resync, other.
    pub events_by_kind: [AtomicU64; 5],
    /// Verifier refusals by reason (replays of applied commits included), refreshed each tick.
    pub rejections: std::sync::Mutex<Vec<(String, u64)>>,
    /// Repos by sync state, in the order of [`SyncState::ALL`], refreshed each second (gauges).
    pub repos_by_state: [AtomicU64; SyncState::ALL.len()],
}

/// The kinds counted in [`Stats::events_by_kind`], in order.
pub const EVENT_KINDS: [&str; 5] = ["commit", "identity", "account", "resync", "other"];

impl Stats {
    /// A plain copy, for printing.
    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let cursor = self.cursor.load(Ordering::Relaxed);
        let last = self.last_event_micros.load(Ordering::Relaxed);
        StatsSnapshot {
            repos_selected: load(&self.repos_selected),
            repos_queued: load(&self.repos_queued),
            repos_backfilled: load(&self.repos_backfilled),
            backfill_failures: load(&self.backfill_failures),
            resyncs: load(&self.resyncs),
            records_backfilled: load(&self.records_backfilled),
            live_events: load(&self.live_events),
            live_changes: load(&self.live_changes),
            rejected: load(&self.rejected),
            already_applied: load(&self.already_applied),
            cursor: (cursor >= 0).then_some(cursor),
            lag_seconds: (last > 0).then(|| (now_micros() - last).max(0) as f64 / 1e6),
            batches_written: load(&self.batches_written),
        }
    }
}

/// [`Stats`] at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsSnapshot {
    pub repos_selected: u64,
    pub repos_queued: u64,
    pub repos_backfilled: u64,
    pub backfill_failures: u64,
    pub resyncs: u64,
    pub records_backfilled: u64,
    pub live_events: u64,
    pub live_changes: u64,
    pub rejected: u64,
    pub already_applied: u64,
    pub cursor: Option<i64>,
    /// How far behind the stream's own clock the last applied event was.
    pub lag_seconds: Option<f64>,
    pub batches_written: u64,
}

/// The sync engine. See the crate docs.
pub struct Engine {
    config: EngineConfig,
    selector: Arc<Selector>,
    store: Box<dyn Store>,
    directory: Directory,
    stats: Arc<Stats>,
    events: broadcast::Sender<Arc<StreamEvent>>,
    commands: mpsc::Sender<control::Command>,
    command_queue: mpsc::Receiver<control::Command>,
}

impl Engine {
    /// An engine that will sync `selector` into `store`, resolving identities with `directory`.
    pub fn new(
        config: EngineConfig,
        selector: Selector,
        store: Box<dyn Store>,
        directory: Directory,
    ) -> Engine {
        let stats = Arc::new(Stats::default());
        stats.cursor.store(-1, Ordering::Relaxed);
        let (events, _) = broadcast::channel(config.event_buffer.max(16));
        let (commands, command_queue) = mpsc::channel(16);
        Engine {
            config,
            selector: Arc::new(selector),
            store,
            directory,
            stats,
            events,
            commands,
            command_queue,
        }
    }

    /// The served stream: each event is sent once the batch holding it is durable (so also in
    /// the store's event log). Empty unless [`EngineConfig::event_log`] is set.
    pub fn events(&self) -> broadcast::Sender<Arc<StreamEvent>> {
        self.events.clone()
    }

    /// A handle for changing what the engine syncs while it runs.
    pub fn control(&self) -> Control {
        Control {
            commands: self.commands.clone(),
        }
    }

    /// The counters, live while the engine runs.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` completes (or, with `once`, until the fixpoint is stored). On
    /// shutdown the current batch is written, with its cursor, before this returns. Gives the
    /// store back.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<Box<dyn Store>, Error> {
        coordinator::run(self, shutdown).await
    }
}

pub(crate) use butterfly_store::now_micros;

/// The kv key of the stream cursor, and of the source it belongs to.
pub(crate) const CURSOR_KEY: &str = "live.cursor";
pub(crate) const CURSOR_SOURCE_KEY: &str = "live.source";
