//! The main loop: owns every repo's state, the walk graph and the batch being built.
//!
//! Everything that changes the store passes through here (or, for backfill chunks, through the
//! writer's queue before the batch that completes them), so the order of effects is the order of
//! this loop.

use crate::backfill::{synced_row, BackfillJob, Backfiller, FetchError, Fetched, JobKind};
use crate::control::{Command, ControlError, RepoStanding, RepoUpdate, SelectorSwap};
use crate::graph::{keeps, Graph, Rules};
use crate::live::{self, LiveBody, LiveEvent, LiveHandle, Tracked};
use crate::writer::{EventLog, Job, Notice, Trim, Writer};
use crate::{Engine, Error, LiveSource, Stats, CURSOR_KEY, CURSOR_SOURCE_KEY};
use butterfly_firehose::keys::DirectoryKeys;
use butterfly_firehose::verify::{AccountStatus, RepoState};
use butterfly_firehose::{LowWaterMark, Ticket, Verifier, VerifierConfig};
use butterfly_selector::Inputs;
use butterfly_selector::Selector;
use butterfly_store::{Action, Batch, Change, EventKind, RecordKey, RepoRow, SyncState};
use butterfly_syntax::Did;
use butterfly_xrpc::{ClientConfig, HostLimits, LimitsConfig};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Where a repo is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Backfilled; live events apply directly.
    Synced,
    /// Waiting for a backfill slot; live events are buffered.
    Queued,
    /// Being fetched; live events are buffered.
    Fetching,
    /// Fetching failed; retried at `retry_at`. Live events are dropped (the retry fetches them).
    Failed,
}

struct Repo {
    row: RepoRow,
    phase: Phase,
    buffered: Vec<LiveEvent>,
    /// The store may hold records from an interrupted first backfill.
    may_have_data: bool,
    attempts: u32,
    retry_at: Option<Instant>,
    /// Tags the running fetch applied retention for.
    fetching_tags: Vec<String>,
    /// Fetch again when the running fetch ends (a `#sync` or a retention change during it).
    refetch: bool,
    /// No tag holds it any more; remove it when the running fetch ends.
    purge_after_fetch: bool,
}

impl Repo {
    fn new(row: RepoRow, phase: Phase, may_have_data: bool) -> Repo {
        Repo {
            row,
            phase,
            buffered: Vec::new(),
            may_have_data,
            attempts: 0,
            retry_at: None,
            fetching_tags: Vec::new(),
            refetch: false,
            purge_after_fetch: false,
        }
    }
}

/// Events buffered per repo at most while it is fetched; past it they are dropped and the repo
/// is fetched again, which covers them.
const MAX_BUFFERED: usize = 10_000;

/// Attempts a seed gets under `--once` before the run fails.
const SEED_ATTEMPTS_ONCE: u32 = 3;

/// Handle checks (DNS and HTTPS lookups) running at once at most.
const IDENTITY_LOOKUPS: usize = 32;

/// kv keys: repos added and removed by hand; a selector installed by hand, and the origin of the
/// start selector it replaced.
const ADMIN_REPOS_KEY: &str = "admin.repos";
const ADMIN_SELECTOR_KEY: &str = "admin.selector";
const ADMIN_SELECTOR_ORIGIN_KEY: &str = "admin.selector.origin";

/// Repos added and removed by hand, as kept under [`ADMIN_REPOS_KEY`].
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct AdminRepos {
    /// Tag to the DIDs pinned to it.
    pinned: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    excluded: std::collections::BTreeSet<String>,
}

struct Coordinator {
    config: crate::EngineConfig,
    rules: Arc<Rules>,
    stats: Arc<Stats>,
    writer: Writer,
    backfiller: Arc<Backfiller>,
    directory: butterfly_identity::Directory,
    client_config: ClientConfig,
    repos: HashMap<String, Repo>,
    tracked: Tracked,
    graph: Graph,
    /// Seeds by clause index, once resolved.
    seeds: HashMap<usize, Vec<String>>,
    /// Bumped when the selector is replaced, so that seeds of the old one are ignored.
    selector_generation: u64,
    admin: AdminRepos,
    /// `admin` in the shape `evaluate` takes.
    pinned: HashMap<String, Vec<String>>,
    excluded: HashSet<String>,
    /// Events for the served stream, sent with the next batch (only with an event log).
    notices: Vec<Notice>,
    log_events: bool,
    seed_clauses: usize,
    /// Failed attempts per seed clause.
    seed_failures: HashMap<usize, u32>,
    /// The graph or the seeds changed since the last evaluation.
    dirty: bool,
    queue: VecDeque<String>,
    in_flight: usize,
    done_tx: mpsc::Sender<(String, Result<Fetched, FetchError>)>,
    seeds_tx: mpsc::Sender<(u64, usize, Result<Vec<String>, String>)>,
    identity_tx: mpsc::Sender<(String, Option<String>, Option<Ticket>)>,
    identities_in_flight: usize,
    identity_lookups: Arc<tokio::sync::Semaphore>,
    /// The batch being built, with its `latest:N` trims and the tickets it completes. Changed
    /// repo rows are noted in `dirty_rows` and copied into the batch when it is sent.
    batch: Batch,
    dirty_rows: HashSet<String>,
    trims: Vec<Trim>,
    tickets: Vec<Ticket>,
    batch_events: usize,
    mark: Option<Arc<LowWaterMark>>,
    verifier: Option<Arc<Verifier>>,
    source_name: Option<String>,
    last_cursor: Option<i64>,
    last_flush: Instant,
    last_retry_scan: Instant,
    /// When the last evaluation ended and how long it took; see [`Coordinator::evaluate_when_due`].
    last_evaluation: Option<(Instant, Duration)>,
}

pub(crate) async fn run(
    engine: Engine,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<Box<dyn butterfly_store::Store>, Error> {
    let Engine {
        config,
        selector,
        store,
        directory,
        stats,
        events,
        commands: _,
        mut command_queue,
    } = engine;
    // A selector installed through the admin API outlives a restart while the start selector is
    // the one it replaced.
    let mut selector = selector;
    if let Some(origin) = &config.selector_origin {
        if store.kv_get(ADMIN_SELECTOR_ORIGIN_KEY)?.as_deref() == Some(origin.as_str()) {
            if let Some(document) = store.kv_get(ADMIN_SELECTOR_KEY)? {
                match Selector::from_json(&document) {
                    Ok(installed) => {
                        tracing::info!("using the selector installed through the admin API");
                        selector = Arc::new(installed);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the stored admin selector is invalid; ignored")
                    }
                }
            }
        }
    }
    let admin: AdminRepos = match store.kv_get(ADMIN_REPOS_KEY)? {
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            Error::Config(format!("the stored {ADMIN_REPOS_KEY} is unreadable: {e}"))
        })?,
        None => AdminRepos::default(),
    };
    let event_log = match config.event_log {
        Some(retention) => Some(EventLog::new(retention, events, store.as_ref())?),
        None => None,
    };
    // What the store holds.
    let rows = store.repos()?;
    let edges = store.edges()?;
    let stored_source = store.kv_get(CURSOR_SOURCE_KEY)?;
    let stored_cursor = store
        .kv_get(CURSOR_KEY)?
        .and_then(|text| text.parse::<i64>().ok());
    let (writer, writer_thread) = Writer::start(store, stats.clone(), event_log)?;

    let source_name = match &config.live {
        LiveSource::None => None,
        LiveSource::Relay(url) => Some(format!("relay:{url}")),
        LiveSource::Jetstream(url) => Some(format!("jetstream:{url}")),
    };
    let cursor = match (&source_name, &stored_source) {
        _ if config.cursor.is_some() => config.cursor,
        (Some(name), Some(stored)) if name == stored => stored_cursor,
        _ => None,
    };
    let client_config = ClientConfig {
        limits: HostLimits::new(LimitsConfig {
            max_concurrent: config.per_host_concurrency.max(1),
            rate: None,
        }),
        max_stream_bytes: Some(config.max_repo_bytes),
        ..ClientConfig::with_private_network(config.allow_private_network)
    };
    let rules = Arc::new(Rules::new(selector.clone()));
    let backfiller = Arc::new(Backfiller::new(
        directory.clone(),
        client_config.clone(),
        writer.clone(),
        &config,
        stats.clone(),
    ));
    let (done_tx, mut done_rx) = mpsc::channel(64);
    let (seeds_tx, mut seeds_rx) = mpsc::channel(64);
    let (identity_tx, mut identity_rx) = mpsc::channel(64);
    let seed_clauses = seed_clauses(&selector);
    let mut coordinator = Coordinator {
        config: config.clone(),
        rules,
        stats: stats.clone(),
        writer: writer.clone(),
        backfiller,
        directory: directory.clone(),
        client_config,
        repos: HashMap::new(),
        tracked: Default::default(),
        graph: Graph::from_edges(edges),
        seeds: HashMap::new(),
        selector_generation: 0,
        admin: AdminRepos::default(),
        pinned: HashMap::new(),
        excluded: HashSet::new(),
        notices: Vec::new(),
        log_events: config.event_log.is_some(),
        seed_clauses,
        seed_failures: HashMap::new(),
        dirty: true,
        queue: VecDeque::new(),
        in_flight: 0,
        done_tx,
        seeds_tx,
        identity_tx,
        identities_in_flight: 0,
        identity_lookups: Arc::new(tokio::sync::Semaphore::new(IDENTITY_LOOKUPS)),
        batch: Batch::default(),
        dirty_rows: HashSet::new(),
        trims: Vec::new(),
        tickets: Vec::new(),
        batch_events: 0,
        mark: None,
        verifier: None,
        source_name,
        last_cursor: cursor,
        last_flush: Instant::now(),
        last_retry_scan: Instant::now(),
        last_evaluation: None,
    };
    coordinator.load(rows);
    coordinator.set_admin(admin);

    // The live stream starts before any backfill, so that nothing falls between a repo's snapshot
    // and its first live event.
    let mut live: Option<LiveHandle> = if config.once {
        None
    } else {
        match &config.live {
            LiveSource::None => None,
            LiveSource::Relay(url) => {
                let verifier = Arc::new(Verifier::new(
                    VerifierConfig {
                        mode: config.verify,
                        ..VerifierConfig::default()
                    },
                    Arc::new(DirectoryKeys::new(Arc::new(directory.clone()))),
                ));
                coordinator.prime_verifier(&verifier);
                Some(live::start_relay(
                    url,
                    cursor,
                    verifier,
                    coordinator.tracked.clone(),
                    config.allow_private_network,
                )?)
            }
            LiveSource::Jetstream(url) => Some(live::start_jetstream(
                url,
                cursor,
                coordinator.tracked.clone(),
                config.allow_private_network,
                stats.clone(),
            )?),
        }
    };
    if let Some(handle) = &live {
        coordinator.mark = Some(handle.mark.clone());
        coordinator.verifier = handle.verifier.clone();
    }
    coordinator.start_seeds(Duration::ZERO);
    coordinator.schedule();

    let mut ticker = tokio::time::interval(config.batch_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(shutdown);
    let mut replay_done = false;
    let result: Result<(), Error> = loop {
        let step = tokio::select! {
            _ = &mut shutdown => break Ok(()),
            event = recv_live(&mut live) => match event {
                Some(event) => {
                    coordinator.on_live(event);
                    Ok(())
                }
                None => {
                    replay_done = live.take().is_some_and(|handle| handle.finite);
                    Ok(())
                }
            },
            Some((did, result)) = done_rx.recv() => {
                coordinator.on_fetched(did, result);
                Ok(())
            }
            Some((generation, index, result)) = seeds_rx.recv() => {
                coordinator.on_seeds(generation, index, result)
            }
            Some(command) = command_queue.recv() => {
                coordinator.on_command(command);
                Ok(())
            }
            Some((did, handle, ticket)) = identity_rx.recv() => {
                coordinator.on_identity(did, handle, ticket);
                Ok(())
            }
            _ = ticker.tick() => coordinator.on_tick().await,
        };
        if let Err(error) = step {
            break Err(error);
        }
        if coordinator.batch_events >= coordinator.config.batch_max_events {
            if let Err(error) = coordinator.flush().await {
                break Err(error);
            }
        }
        if (config.once || replay_done) && coordinator.finished() {
            break Ok(());
        }
    };
    if let Some(handle) = &live {
        handle.stop();
    }
    let closed = if result.is_ok() {
        // The last batch's cursor lags by one batch; one more write records where we are.
        match coordinator.flush_and_wait().await {
            Ok(()) => coordinator.flush_and_wait().await,
            Err(error) => Err(error),
        }
    } else {
        Ok(())
    };
    drop(coordinator);
    drop(writer);
    drop(live);
    let store = tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .map_err(|e| Error::Writer(format!("joining the store thread: {e}")))?
        .map_err(|_| Error::Writer("the store thread panicked".into()))?;
    result.and(closed)?;
    Ok(store)
}

async fn recv_live(live: &mut Option<LiveHandle>) -> Option<LiveEvent> {
    match live {
        Some(handle) => handle.events.recv().await,
        None => std::future::pending().await,
    }
}

impl Coordinator {
    /// Takes in the stored repo rows: synced ones follow the stream, the rest are fetched again.
    fn load(&mut self, rows: Vec<RepoRow>) {
        let mut tracked = HashSet::new();
        for row in rows {
            tracked.insert(row.did.clone());
            let phase = match row.state {
                SyncState::Synced => Phase::Synced,
                _ => Phase::Queued,
            };
            if phase == Phase::Queued {
                self.queue.push_back(row.did.clone());
            }
            self.repos
                .insert(row.did.clone(), Repo::new(row, phase, true));
        }
        *self.tracked.write().unwrap_or_else(|p| p.into_inner()) = tracked;
        self.update_gauges();
    }

    /// Tells the verifier where every synced repo stands, so the next commit must chain from it.
    fn prime_verifier(&self, verifier: &Verifier) {
        for repo in self.repos.values() {
            if repo.phase != Phase::Synced {
                continue;
            }
            if let (Some(rev), Some(data), Ok(did)) =
                (&repo.row.rev, &repo.row.data_cid, Did::parse(&repo.row.did))
            {
                if let Some(state) = live::repo_state(rev, data, &repo.row.status) {
                    verifier.set_repo_state(did, state);
                }
            }
        }
    }

    fn start_seeds(&self, delay: Duration) {
        for (index, clause) in self.rules.selector.clauses().iter().enumerate() {
            if self.seeds.contains_key(&index) {
                continue;
            }
            self.spawn_seed(index, clause.clone(), delay);
        }
    }

    fn spawn_seed(&self, index: usize, clause: butterfly_selector::Clause, delay: Duration) {
        let directory = self.directory.clone();
        let client_config = self.client_config.clone();
        let seeds_tx = self.seeds_tx.clone();
        let generation = self.selector_generation;
        let relay = match &self.config.live {
            LiveSource::Relay(url) => crate::discovery::relay_http_base(url),
            _ => None,
        };
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(result) =
                crate::discovery::seeds(&clause, &directory, &client_config, relay.as_deref()).await
            {
                let _ = seeds_tx.send((generation, index, result)).await;
            }
        });
    }

    fn on_seeds(
        &mut self,
        generation: u64,
        index: usize,
        result: Result<Vec<String>, String>,
    ) -> Result<(), Error> {
        if generation != self.selector_generation {
            return Ok(()); // a seed of a replaced selector
        }
        let message = match result {
            Ok(dids) => {
                self.seeds.insert(index, dids);
                self.dirty = true;
                return Ok(());
            }
            Err(message) => message,
        };
        let failures = self.seed_failures.entry(index).or_default();
        *failures += 1;
        // A run that must end (`--once`) gives up on a seed that keeps failing (a handle that
        // does not resolve, a service that is down) instead of waiting for it forever; a live
        // run keeps trying, backing off.
        if self.config.once && *failures >= SEED_ATTEMPTS_ONCE {
            return Err(Error::Config(format!(
                "select[{index}]: {message} (gave up after {failures} attempts)"
            )));
        }
        let delay = Duration::from_secs(1 << (*failures).min(6));
        tracing::warn!(clause = index, %message, ?delay, "selector seed failed; retrying");
        if let Some(clause) = self.rules.selector.clauses().get(index).cloned() {
            self.spawn_seed(index, clause, delay);
        }
        Ok(())
    }

    /// [`Coordinator::evaluate`] on a tick, unless the last evaluation ended less than four of its
    /// own durations ago: a large selection is evaluated in full, and while every fetch adds
    /// edges that would otherwise take most of the coordinator's time.
    fn evaluate_when_due(&mut self) {
        if let Some((ended, took)) = self.last_evaluation {
            if ended.elapsed() < took * 4 {
                return;
            }
        }
        self.evaluate();
    }

    /// Re-evaluates the selector when something it depends on changed and every seed is known.
    fn evaluate(&mut self) {
        if !self.dirty || self.seeds.len() < self.seed_clauses {
            return;
        }
        let started = Instant::now();
        self.dirty = false;
        let membership = butterfly_selector::evaluate(
            &self.rules.selector,
            &Inputs {
                seeds: &self.seeds,
                edges: &self.graph,
                pinned: &self.pinned,
                excluded: &self.excluded,
            },
        );
        // Repos no tag holds any more.
        let gone: Vec<String> = self
            .repos
            .keys()
            .filter(|did| !membership.contains(did))
            .cloned()
            .collect();
        for did in gone {
            self.unselect(&did);
        }
        // In DID order, so that new repos queue deterministically.
        for (did, tags) in membership.iter() {
            match self.repos.get_mut(did) {
                None => {
                    let row = RepoRow {
                        did: did.to_owned(),
                        handle: None,
                        pds: None,
                        status: "active".into(),
                        state: SyncState::Pending,
                        rev: None,
                        data_cid: None,
                        tags: tags.to_vec(),
                        backfilled_at: None,
                        error: None,
                    };
                    self.dirty_rows.insert(did.to_owned());
                    self.tracked
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(did.to_owned());
                    self.repos
                        .insert(did.to_owned(), Repo::new(row, Phase::Queued, false));
                    self.queue.push_back(did.to_owned());
                }
                Some(repo) if repo.row.tags != tags => {
                    let old = std::mem::replace(&mut repo.row.tags, tags.to_vec());
                    repo.purge_after_fetch = false;
                    let same = self.rules.same_retention(&old, &repo.row.tags);
                    self.dirty_rows.insert(did.to_owned());
                    if !same {
                        self.resync(did);
                    }
                }
                Some(repo) => repo.purge_after_fetch = false,
            }
        }
        self.update_gauges();
        self.last_evaluation = Some((Instant::now(), started.elapsed()));
    }

    /// A repo left the selection: its data goes (after a running fetch).
    fn unselect(&mut self, did: &str) {
        let Some(repo) = self.repos.get_mut(did) else {
            return;
        };
        if repo.phase == Phase::Fetching {
            repo.purge_after_fetch = true;
            return;
        }
        let Some(repo) = self.repos.remove(did) else {
            return;
        };
        for event in repo.buffered {
            self.tickets.extend(event.ticket);
        }
        self.queue.retain(|queued| queued != did);
        self.tracked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(did);
        self.graph.remove_repo(did);
        self.dirty_rows.remove(did);
        self.batch.purged.push(did.to_owned());
        self.dirty = true;
    }

    /// Marks a repo for fetching again.
    fn resync(&mut self, did: &str) {
        let Some(repo) = self.repos.get_mut(did) else {
            return;
        };
        match repo.phase {
            Phase::Fetching => repo.refetch = true,
            Phase::Queued => {}
            Phase::Synced | Phase::Failed => {
                self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                if repo.row.state == SyncState::Synced {
                    repo.row.state = SyncState::Resync;
                }
                repo.phase = Phase::Queued;
                repo.retry_at = None;
                self.dirty_rows.insert(repo.row.did.clone());
                self.queue.push_back(did.to_owned());
            }
        }
    }

    /// Starts fetches while there are free slots.
    fn schedule(&mut self) {
        while self.in_flight < self.config.backfill_concurrency.max(1) {
            let Some(did) = self.queue.pop_front() else {
                break;
            };
            let Some(repo) = self.repos.get_mut(&did) else {
                continue;
            };
            if repo.phase != Phase::Queued {
                continue;
            }
            let kind = if repo.row.state == SyncState::Resync
                || (repo.row.state == SyncState::Failed && repo.row.rev.is_some())
            {
                JobKind::Resync {
                    old_edges: self.graph.record_keys(&did),
                }
            } else {
                JobKind::First {
                    replace: repo.may_have_data,
                }
            };
            repo.phase = Phase::Fetching;
            repo.fetching_tags = repo.row.tags.clone();
            repo.refetch = false;
            // Events from here on chain from the snapshot the fetch will take, not from the state
            // the verifier held.
            if let (Some(verifier), Ok(parsed)) = (&self.verifier, Did::parse(&did)) {
                // The account's status is the stream's word: what the verifier holds, if it has
                // heard any. Else the row's, unless the row failed: then its status may be only
                // the host's refusal (`FetchError::Unavailable`), which this fetch asks again.
                let status = match verifier.repo_state(&parsed) {
                    Some(held) => held.status,
                    None if repo.row.status == "active" || repo.row.state == SyncState::Failed => {
                        AccountStatus::Active
                    }
                    None => AccountStatus::Inactive(repo.row.status.clone()),
                };
                verifier.set_repo_state(
                    parsed,
                    RepoState {
                        status,
                        ..RepoState::default()
                    },
                );
            }
            let job = BackfillJob {
                did: did.clone(),
                tags: repo.row.tags.clone(),
                kind,
                rules: self.rules.clone(),
            };
            self.in_flight += 1;
            let backfiller = self.backfiller.clone();
            let done_tx = self.done_tx.clone();
            tokio::spawn(async move {
                let result = backfiller.run(job).await;
                let _ = done_tx.send((did, result)).await;
            });
        }
        self.update_gauges();
    }

    fn on_fetched(&mut self, did: String, result: Result<Fetched, FetchError>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(repo) = self.repos.get_mut(&did) else {
            self.schedule();
            return;
        };
        repo.phase = Phase::Synced;
        if repo.purge_after_fetch {
            self.unselect(&did);
            self.schedule();
            return;
        }
        match result {
            Ok(fetched) => {
                self.stats.repos_backfilled.fetch_add(1, Ordering::Relaxed);
                repo.attempts = 0;
                repo.may_have_data = true;
                repo.row = synced_row(repo.row.clone(), &fetched);
                let retention_changed = repo.fetching_tags != repo.row.tags
                    && !self
                        .rules
                        .same_retention(&repo.fetching_tags, &repo.row.tags);
                let refetch = repo.refetch || retention_changed;
                let buffered = std::mem::take(&mut repo.buffered);
                self.dirty_rows.insert(repo.row.did.clone());
                // A repo without walk edges, fetched again or for the first time, changes no tag.
                if self.graph.set_repo(&did, fetched.edges) {
                    self.dirty = true;
                }
                for event in buffered {
                    self.apply_live(event);
                }
                // The handle, checked both ways, arrives later through `identity_tx`.
                if self.repos.get(&did).is_some_and(|r| r.row.handle.is_none()) {
                    self.refresh_identity(&did, None, false);
                }
                if refetch {
                    self.resync(&did);
                }
            }
            Err(FetchError::Unavailable { status, message }) => {
                // Asking again soon would get the same answer; an `#account` event saying the
                // account is active again queues it at once, and the retry scan polls slowly.
                tracing::info!(did, status, "the repo's host does not serve it");
                // Unless the account came back while it was fetched: then at the next retry scan.
                let back = repo.buffered.iter().any(|event| {
                    matches!(
                        event.body,
                        LiveBody::Account { active: true, .. } | LiveBody::Commit { .. }
                    )
                });
                let wait = if back {
                    Duration::ZERO
                } else {
                    self.config.retry_failed_after
                };
                repo.attempts = 0;
                repo.phase = Phase::Failed;
                repo.retry_at = Some(Instant::now() + wait);
                repo.row.state = SyncState::Failed;
                repo.row.status = status.to_owned();
                repo.row.error = Some(message);
                for event in std::mem::take(&mut repo.buffered) {
                    self.tickets.extend(event.ticket);
                }
                self.dirty_rows.insert(repo.row.did.clone());
            }
            Err(FetchError::Failed(message)) => {
                self.stats.backfill_failures.fetch_add(1, Ordering::Relaxed);
                repo.attempts += 1;
                tracing::warn!(did, attempt = repo.attempts, %message, "backfill failed");
                let delay = if repo.attempts < self.config.backfill_attempts {
                    Duration::from_secs(1 << repo.attempts.min(6))
                } else {
                    repo.attempts = 0;
                    self.config.retry_failed_after
                };
                repo.phase = Phase::Failed;
                repo.retry_at = Some(Instant::now() + delay);
                repo.row.state = SyncState::Failed;
                repo.row.error = Some(message);
                for event in std::mem::take(&mut repo.buffered) {
                    self.tickets.extend(event.ticket);
                }
                self.dirty_rows.insert(repo.row.did.clone());
            }
        }
        self.schedule();
    }

    fn on_live(&mut self, event: LiveEvent) {
        self.stats.live_events.fetch_add(1, Ordering::Relaxed);
        let kind = match event.body {
            LiveBody::Commit { .. } => 0,
            LiveBody::Identity => 1,
            LiveBody::Account { .. } => 2,
            LiveBody::Resync => 3,
            LiveBody::Nothing => 4,
        };
        self.stats.events_by_kind[kind].fetch_add(1, Ordering::Relaxed);
        self.batch_events += 1;
        let Some(repo) = self.repos.get_mut(&event.did) else {
            self.tickets.extend(event.ticket);
            return;
        };
        match repo.phase {
            Phase::Synced => self.apply_live(event),
            Phase::Queued | Phase::Fetching => {
                if matches!(event.body, LiveBody::Resync) && repo.phase == Phase::Fetching {
                    repo.refetch = true;
                }
                if repo.buffered.len() >= MAX_BUFFERED {
                    repo.refetch = true;
                    self.tickets.extend(event.ticket);
                } else {
                    repo.buffered.push(event);
                }
            }
            Phase::Failed => {
                // An account active again may be served by its host now (a refusal waits for the
                // slow retry scan otherwise); other events wait for the repo's next fetch.
                let back = matches!(event.body, LiveBody::Account { active: true, .. });
                self.tickets.extend(event.ticket);
                if back {
                    self.resync(&event.did);
                }
            }
        }
    }

    /// Applies one event to a synced repo, adding its effects to the batch.
    fn apply_live(&mut self, event: LiveEvent) {
        let LiveEvent {
            did,
            time_micros,
            body,
            ticket,
        } = event;
        let ticket_seq = ticket.as_ref().map(Ticket::seq);
        // An identity event's ticket waits for the lookup, so its handle is durable first.
        let mut ticket = ticket;
        if !matches!(body, LiveBody::Identity) {
            self.tickets.extend(ticket.take());
        }
        if let Some(micros) = time_micros {
            self.stats
                .last_event_micros
                .store(micros, Ordering::Relaxed);
        }
        let Some(repo) = self.repos.get_mut(&did) else {
            self.tickets.extend(ticket);
            return;
        };
        match body {
            LiveBody::Nothing => {}
            LiveBody::Resync => self.resync(&did),
            // The event's handle is only a hint: the DID is looked up again and the handle checked
            // both ways.
            LiveBody::Identity => self.refresh_identity(&did, ticket, true),
            LiveBody::Account { active, status } => {
                let status = if active {
                    "active".to_owned()
                } else {
                    status.unwrap_or_else(|| "inactive".into())
                };
                let was = std::mem::replace(&mut repo.row.status, status.clone());
                if self.log_events {
                    let mut body = serde_json::json!({
                        "active": active,
                        "did": did,
                        "seq": ticket_seq,
                        "time": event_time(time_micros),
                    });
                    if !active {
                        body["status"] = serde_json::Value::String(status.clone());
                    }
                    self.notices.push(Notice {
                        did: did.clone(),
                        kind: EventKind::Account,
                        collection: None,
                        body: body.to_string(),
                    });
                }
                // A deleted account's content goes; the row stays, with the status. Deactivated,
                // taken-down and suspended accounts keep theirs, marked by the status column:
                // those states are often lifted, and what to show is the reader's decision.
                if status == "deleted" && was != "deleted" {
                    repo.row.rev = None;
                    repo.row.data_cid = None;
                    self.batch.changes.retain(|c| c.did != did);
                    self.notices
                        .retain(|n| !(n.did == did && n.kind == EventKind::Commit));
                    self.batch.cleared.push(did.clone());
                    self.batch.edges_added.retain(|e| e.did != did);
                    self.graph.remove_repo(&did);
                    self.dirty = true;
                    self.dirty_rows.insert(repo.row.did.clone());
                } else if status != "deleted" && was == "deleted" {
                    // Back (a mistaken deletion undone): fetch what was cleared.
                    self.dirty_rows.insert(repo.row.did.clone());
                    repo.row.state = SyncState::Resync;
                    self.resync(&did);
                } else {
                    self.dirty_rows.insert(repo.row.did.clone());
                }
            }
            LiveBody::Commit { rev, data, ops } => {
                if repo
                    .row
                    .rev
                    .as_deref()
                    .is_some_and(|held| rev.as_str() <= held)
                {
                    return; // already applied (a replay after a restart)
                }
                if repo.row.status == "deleted" {
                    return;
                }
                let tags = &repo.row.tags;
                for op in ops {
                    let keep = self.rules.keep(tags, &op.collection);
                    if self.rules.walks(&op.collection) {
                        // The graph mirrors the store (plus this batch), so only a record that
                        // held edges needs them removed; a fresh create costs no delete.
                        if self.graph.remove_record(&did, &op.collection, &op.rkey) {
                            self.dirty = true;
                            self.batch.edges_added.retain(|e| {
                                !(e.did == did
                                    && e.collection == op.collection
                                    && e.rkey == op.rkey)
                            });
                            self.batch.edges_removed.push(RecordKey {
                                did: did.clone(),
                                collection: op.collection.clone(),
                                rkey: op.rkey.clone(),
                            });
                        }
                        // The text was made from a decoded record (or a Jetstream event's
                        // JSON), so it parses; were it ever not to, its edges would be missing
                        // from the walk, which must not pass unsaid.
                        let record = op.json.as_deref().and_then(|json| {
                            serde_json::from_str::<serde_json::Value>(json)
                                .inspect_err(|error| {
                                    tracing::warn!(
                                        %did, collection = %op.collection, rkey = %op.rkey, %error,
                                        "a live record's JSON does not parse; its edges are skipped"
                                    );
                                })
                                .ok()
                        });
                        if let Some(record) = &record {
                            for edge in self.rules.edges_of(&did, &op.collection, &op.rkey, record)
                            {
                                self.graph.add(edge.clone());
                                self.batch.edges_added.push(edge);
                                self.dirty = true;
                            }
                        }
                    }
                    if !keeps(&keep, &op.rkey) {
                        continue;
                    }
                    let unlimited = keep.all || (keep.self_rkey && op.rkey == "self");
                    if !unlimited && keep.latest > 0 && op.action != Action::Delete {
                        self.trims.push(Trim {
                            did: did.clone(),
                            collection: op.collection.clone(),
                            keep: keep.latest as usize,
                            rev: rev.clone(),
                        });
                    }
                    self.stats.live_changes.fetch_add(1, Ordering::Relaxed);
                    if self.log_events {
                        self.notices.push(commit_notice(&did, &rev, &op));
                    }
                    self.batch.changes.push(Change {
                        did: did.clone(),
                        collection: op.collection,
                        rkey: op.rkey,
                        action: op.action,
                        cid: op.cid,
                        rev: rev.clone(),
                        json: op.json,
                        live: true,
                        indexed_at: crate::now_micros(),
                    });
                }
                let Some(repo) = self.repos.get_mut(&did) else {
                    return;
                };
                repo.row.rev = Some(rev);
                if data.is_some() {
                    repo.row.data_cid = data;
                }
                self.dirty_rows.insert(repo.row.did.clone());
            }
        }
    }

    /// Looks the DID up (again, with `purge`: its handle may have changed) and checks its handle
    /// both ways; the answer comes back through `identity_tx`. At most `IDENTITY_LOOKUPS` run at
    /// once.
    fn refresh_identity(&mut self, did: &str, ticket: Option<Ticket>, purge: bool) {
        let Ok(parsed) = Did::parse(did) else {
            self.tickets.extend(ticket);
            return;
        };
        self.identities_in_flight += 1;
        let directory = self.directory.clone();
        let identity_tx = self.identity_tx.clone();
        let did = did.to_owned();
        let lookups = self.identity_lookups.clone();
        tokio::spawn(async move {
            let _permit = lookups.acquire().await;
            if purge {
                directory.purge(&butterfly_syntax::AtIdentifier::Did(parsed.clone()));
            }
            let handle = match directory.resolve_did(&parsed).await {
                Ok(identity) if identity.handle_verified => {
                    identity.handle.map(|h| h.as_str().to_owned())
                }
                Ok(_) => None,
                Err(error) => {
                    tracing::warn!(did, %error, "identity refresh failed");
                    None
                }
            };
            let _ = identity_tx.send((did, handle, ticket)).await;
        });
    }

    fn on_identity(&mut self, did: String, handle: Option<String>, ticket: Option<Ticket>) {
        self.identities_in_flight = self.identities_in_flight.saturating_sub(1);
        // A lookup with a ticket answers an identity event: it goes on the served stream, with
        // the handle as checked both ways.
        if self.log_events && self.repos.contains_key(&did) {
            if let Some(ticket) = &ticket {
                let body = serde_json::json!({
                    "did": did,
                    "handle": handle,
                    "seq": ticket.seq(),
                    "time": event_time(Some(crate::now_micros())),
                });
                self.notices.push(Notice {
                    did: did.clone(),
                    kind: EventKind::Identity,
                    collection: None,
                    body: body.to_string(),
                });
            }
        }
        self.tickets.extend(ticket);
        if let Some(repo) = self.repos.get_mut(&did) {
            if repo.row.handle != handle {
                repo.row.handle = handle;
                self.dirty_rows.insert(repo.row.did.clone());
            }
        }
    }

    async fn on_tick(&mut self) -> Result<(), Error> {
        if let Some(verifier) = &self.verifier {
            // A commit older than what a backfill fetched, or replayed from a cursor behind the
            // store after a restart, is refused as `stale_rev`: already applied, not a fault.
            let (stale, refused): (Vec<_>, Vec<_>) = verifier
                .stats()
                .rejected()
                .into_iter()
                .partition(|(reason, _)| *reason == butterfly_firehose::Reason::StaleRev);
            *self
                .stats
                .rejections
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = refused
                .iter()
                .chain(&stale)
                .map(|(reason, n)| (format!("{reason:?}"), *n))
                .collect();
            let sum =
                |list: Vec<(butterfly_firehose::Reason, u64)>| list.iter().map(|(_, n)| n).sum();
            self.stats.rejected.store(sum(refused), Ordering::Relaxed);
            self.stats
                .already_applied
                .store(sum(stale), Ordering::Relaxed);
        }
        self.evaluate_when_due();
        // Repos the evaluation queued start now, not at the next retry scan: at start-up that
        // was a second with nothing fetched, and as much again at every level of a graph walk.
        self.schedule();
        let now = Instant::now();
        // A tick can come right after a flush that waited for the writer; batches written back to
        // back would be tiny, and each costs a commit. So a batch is written at most once per
        // interval (or when full), and the retry scan runs once a second.
        if now.duration_since(self.last_flush) < self.config.batch_interval {
            return Ok(());
        }
        if now.duration_since(self.last_retry_scan) < Duration::from_secs(1) {
            return self.flush().await;
        }
        self.last_retry_scan = now;
        self.count_states();
        let mut due = Vec::new();
        for (did, repo) in &mut self.repos {
            if repo.phase == Phase::Failed && repo.retry_at.is_some_and(|at| at <= now) {
                if self.config.once && repo.row.state == SyncState::Failed && repo.attempts == 0 {
                    continue; // out of attempts in this run
                }
                repo.phase = Phase::Queued;
                repo.retry_at = None;
                due.push(did.clone());
            }
        }
        due.sort();
        self.queue.extend(due);
        self.schedule();
        self.flush().await
    }

    /// Sends the batch being built to the writer.
    async fn flush(&mut self) -> Result<(), Error> {
        self.send_batch(None).await
    }

    async fn flush_and_wait(&mut self) -> Result<(), Error> {
        let (done, written) = oneshot::channel();
        self.send_batch(Some(done)).await?;
        written.await.map_err(|_| self.writer.failure())
    }

    async fn send_batch(&mut self, done: Option<oneshot::Sender<()>>) -> Result<(), Error> {
        self.last_flush = Instant::now();
        let mut batch = std::mem::take(&mut self.batch);
        let mut dirty: Vec<String> = self.dirty_rows.drain().collect();
        dirty.sort();
        batch.repos = dirty
            .iter()
            .filter_map(|did| self.repos.get(did).map(|repo| repo.row.clone()))
            .collect();
        // The cursor covers what earlier batches made durable (tickets finish after commit).
        if let (Some(mark), Some(name)) = (&self.mark, &self.source_name) {
            if let Some(cursor) = mark.get() {
                if self.last_cursor != Some(cursor) || done.is_some() {
                    batch.kv.push((CURSOR_KEY.into(), Some(cursor.to_string())));
                    batch
                        .kv
                        .push((CURSOR_SOURCE_KEY.into(), Some(name.clone())));
                    self.last_cursor = Some(cursor);
                    self.stats.cursor.store(cursor, Ordering::Relaxed);
                }
            }
        }
        let tickets = std::mem::take(&mut self.tickets);
        let trims = std::mem::take(&mut self.trims);
        let notices = std::mem::take(&mut self.notices);
        self.batch_events = 0;
        if batch.is_empty() && tickets.is_empty() && done.is_none() && notices.is_empty() {
            return Ok(());
        }
        self.writer
            .send(Job::Apply {
                batch: Box::new(batch),
                trims,
                notices,
                tickets,
                mark: self.mark.clone(),
                done,
            })
            .await
    }

    /// `--once`: every seed known, the selection stable, nothing queued or running.
    fn finished(&self) -> bool {
        self.seeds.len() >= self.seed_clauses
            && !self.dirty
            && self.queue.is_empty()
            && self.in_flight == 0
            && self.identities_in_flight == 0
            && !self.repos.values().any(|r| {
                r.phase == Phase::Queued
                    || (r.phase == Phase::Failed
                        && !(r.row.state == SyncState::Failed && r.attempts == 0))
            })
    }

    /// Repos by sync state, for metrics.
    fn count_states(&self) {
        let mut counts = [0u64; SyncState::ALL.len()];
        for repo in self.repos.values() {
            if let Some(index) = SyncState::ALL.iter().position(|&s| s == repo.row.state) {
                counts[index] += 1;
            }
        }
        for (gauge, count) in self.stats.repos_by_state.iter().zip(counts) {
            gauge.store(count, Ordering::Relaxed);
        }
    }

    /// Takes in the repos added and removed by hand.
    fn set_admin(&mut self, admin: AdminRepos) {
        self.pinned = admin
            .pinned
            .iter()
            .map(|(tag, dids)| (tag.clone(), dids.iter().cloned().collect()))
            .collect();
        self.excluded = admin.excluded.iter().cloned().collect();
        self.admin = admin;
        self.dirty = true;
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Repos { update, reply } => {
                let _ = reply.send(self.update_repos(update));
            }
            Command::Selector { document, reply } => {
                let _ = reply.send(self.replace_selector(&document));
            }
            Command::Resync { dids, reply } => {
                for did in &dids {
                    self.resync(did);
                }
                self.schedule();
                let _ = reply.send(Ok(self.standings(&dids)));
            }
        }
    }

    fn update_repos(&mut self, update: RepoUpdate) -> Result<Vec<RepoStanding>, ControlError> {
        let known: HashSet<&str> = self.rules.selector.tags().into_iter().collect();
        let mut admin = self.admin.clone();
        let mut mentioned = Vec::new();
        for (did, tags) in &update.add {
            Did::parse(did).map_err(|e| ControlError::Invalid(format!("{did:?}: {e}")))?;
            if tags.is_empty() {
                return Err(ControlError::Invalid(format!(
                    "{did}: no tags to add it to"
                )));
            }
            for tag in tags {
                if !known.contains(tag.as_str()) {
                    let mut names: Vec<&str> = known.iter().copied().collect();
                    names.sort_unstable();
                    return Err(ControlError::Invalid(format!(
                        "unknown tag {tag:?}: the selector's tags are {}",
                        names.join(", ")
                    )));
                }
                admin
                    .pinned
                    .entry(tag.clone())
                    .or_default()
                    .insert(did.clone());
            }
            admin.excluded.remove(did);
            mentioned.push(did.clone());
        }
        for (did, tags) in &update.remove {
            Did::parse(did).map_err(|e| ControlError::Invalid(format!("{did:?}: {e}")))?;
            match tags {
                Some(tags) => {
                    for tag in tags {
                        if let Some(dids) = admin.pinned.get_mut(tag) {
                            dids.remove(did);
                        }
                    }
                }
                None => {
                    for dids in admin.pinned.values_mut() {
                        dids.remove(did);
                    }
                    admin.excluded.insert(did.clone());
                }
            }
            mentioned.push(did.clone());
        }
        admin.pinned.retain(|_, dids| !dids.is_empty());
        let text = serde_json::to_string(&admin)
            .map_err(|e| ControlError::Invalid(format!("encoding the admin repos: {e}")))?;
        self.batch.kv.push((ADMIN_REPOS_KEY.into(), Some(text)));
        self.set_admin(admin);
        self.evaluate();
        self.schedule();
        Ok(self.standings(&mentioned))
    }

    fn replace_selector(&mut self, document: &str) -> Result<SelectorSwap, ControlError> {
        let selector =
            Selector::from_json(document).map_err(|e| ControlError::Invalid(e.to_string()))?;
        let old_rules = self.rules.clone();
        let new_rules = Arc::new(Rules::new(Arc::new(selector)));
        let before: HashSet<String> = self.repos.keys().cloned().collect();
        self.rules = new_rules.clone();
        self.selector_generation += 1;
        self.seeds.clear();
        self.seed_failures.clear();
        self.seed_clauses = seed_clauses(&new_rules.selector);
        // Hand-pinned repos stay only under tags the new selector still has.
        let tags: HashSet<&str> = new_rules.selector.tags().into_iter().collect();
        let mut admin = self.admin.clone();
        admin.pinned.retain(|tag, _| tags.contains(tag.as_str()));
        if let Ok(text) = serde_json::to_string(&admin) {
            self.batch.kv.push((ADMIN_REPOS_KEY.into(), Some(text)));
        }
        self.set_admin(admin);
        if let Some(origin) = &self.config.selector_origin {
            self.batch
                .kv
                .push((ADMIN_SELECTOR_KEY.into(), Some(document.to_owned())));
            self.batch
                .kv
                .push((ADMIN_SELECTOR_ORIGIN_KEY.into(), Some(origin.clone())));
        }
        // Repos keeping their tags but not what those tags keep, or whose records may hold
        // edges the old rules did not record, are fetched again.
        let walks_changed = !old_rules.same_walks(&new_rules);
        let mut resynced = 0;
        let dids: Vec<String> = self.repos.keys().cloned().collect();
        for did in dids {
            let Some(repo) = self.repos.get(&did) else {
                continue;
            };
            let tags = &repo.row.tags;
            let same = crate::graph::same_retention_between((&old_rules, tags), (&new_rules, tags));
            if walks_changed || !same {
                resynced += 1;
                self.resync(&did);
            }
        }
        self.start_seeds(Duration::ZERO);
        self.dirty = true;
        self.evaluate();
        self.schedule();
        let after: HashSet<&String> = self.repos.keys().collect();
        Ok(SelectorSwap {
            added: after.iter().filter(|did| !before.contains(**did)).count() as u64,
            removed: before.iter().filter(|did| !after.contains(did)).count() as u64,
            resynced,
            settled: self.seeds.len() >= self.seed_clauses,
        })
    }

    /// Where each of `dids` stands now.
    fn standings(&self, dids: &[String]) -> Vec<RepoStanding> {
        let mut seen = HashSet::new();
        dids.iter()
            .filter(|did| seen.insert(did.as_str()))
            .map(|did| match self.repos.get(did) {
                Some(repo) => RepoStanding {
                    did: did.clone(),
                    tags: repo.row.tags.clone(),
                    state: Some(repo.row.state.as_str().to_owned()),
                },
                None => RepoStanding {
                    did: did.clone(),
                    tags: Vec::new(),
                    state: None,
                },
            })
            .collect()
    }

    fn update_gauges(&self) {
        self.stats
            .repos_selected
            .store(self.repos.len() as u64, Ordering::Relaxed);
        self.stats.repos_queued.store(
            (self.queue.len() + self.in_flight) as u64,
            Ordering::Relaxed,
        );
    }
}

/// Clauses whose members come from outside the graph (identities, discovery calls): evaluation
/// waits until each has answered once.
fn seed_clauses(selector: &Selector) -> usize {
    selector
        .clauses()
        .iter()
        .filter(|c| {
            matches!(
                c.source,
                butterfly_selector::Source::Identity(_) | butterfly_selector::Source::Service(_)
            )
        })
        .count()
}

/// An event's time as Jetstream gives it (RFC 3339); now when the event carries none.
fn event_time(micros: Option<i64>) -> String {
    let micros = micros.unwrap_or_else(crate::now_micros);
    butterfly_syntax::datetime::format_micros(micros)
}

/// The `commit` object of a Jetstream commit event for one op.
fn commit_notice(did: &str, rev: &str, op: &live::LiveOp) -> Notice {
    let quote = butterfly_data::json_string;
    let mut body = format!(
        "{{\"rev\":{},\"operation\":\"{}\",\"collection\":{},\"rkey\":{}",
        quote(rev),
        op.action.as_str(),
        quote(&op.collection),
        quote(&op.rkey)
    );
    if let Some(json) = &op.json {
        body.push_str(",\"record\":");
        body.push_str(json);
    }
    if let Some(cid) = &op.cid {
        body.push_str(",\"cid\":");
        body.push_str(&quote(cid));
    }
    body.push('}');
    Notice {
        did: did.to_owned(),
        kind: EventKind::Commit,
        collection: Some(op.collection.clone()),
        body,
    }
}
