//! The store's own thread: every write goes through one queue, in order.
//!
//! One queue gives the ordering the engine relies on: a backfill's chunks are durable before the
//! batch that marks the repo synced, and a query (a resync's old keys) sees every write queued
//! before it. Cursor tickets ride with the batch holding their events' effects and are finished
//! only after that batch commits, so the low-water mark, and thus any cursor written later, never
//! passes data that is not durable.
//!
//! Consecutive jobs that nothing waits on (backfill chunks, repo rows, kv entries) are merged into
//! one transaction of up to two DuckDB row groups, waiting up to 250 ms for more, so that many
//! small repos do not cost one commit each and DuckDB writes whole row groups straight to its file.

use crate::{Error, Stats};
use butterfly_firehose::{LowWaterMark, Ticket};
use butterfly_store::{Action, Batch, Change, EventKind, Store, StreamEvent};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// An event for the served stream, before the writer gives it its time: the JSON object that
/// goes under the event's `kind` key (Jetstream's shape).
#[derive(Clone, Debug)]
pub(crate) struct Notice {
    pub(crate) did: String,
    pub(crate) kind: EventKind,
    pub(crate) collection: Option<String>,
    pub(crate) body: String,
}

/// The kv key holding the newest logged event's time, so times stay increasing across restarts
/// even if the clock steps back.
const EVENTS_LAST_KEY: &str = "events.last_time_us";

/// How often the log is trimmed to its retention.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// The served stream's log: stamps events with increasing times, appends them with their
/// batch, and publishes them once the batch is durable.
pub(crate) struct EventLog {
    pub(crate) retention: Duration,
    pub(crate) live: broadcast::Sender<Arc<StreamEvent>>,
    last_time_us: i64,
    last_trim: Option<Instant>,
}

impl EventLog {
    pub(crate) fn new(
        retention: Duration,
        live: broadcast::Sender<Arc<StreamEvent>>,
        store: &dyn Store,
    ) -> Result<EventLog, butterfly_store::Error> {
        let last_time_us = store
            .kv_get(EVENTS_LAST_KEY)?
            .and_then(|text| text.parse().ok())
            .unwrap_or(0);
        Ok(EventLog {
            retention,
            live,
            last_time_us,
            last_trim: None,
        })
    }

    /// Turns notices into logged events in `batch`; returns what to publish after the commit.
    fn stamp(&mut self, batch: &mut Batch, notices: Vec<Notice>) -> Vec<Arc<StreamEvent>> {
        let now = crate::now_micros();
        if self.last_trim.is_none_or(|at| at.elapsed() >= TRIM_EVERY) {
            self.last_trim = Some(Instant::now());
            batch.events_before = Some(now - self.retention.as_micros() as i64);
        }
        if notices.is_empty() {
            return Vec::new();
        }
        let mut published = Vec::with_capacity(notices.len());
        for notice in notices {
            let time_us = now.max(self.last_time_us + 1);
            self.last_time_us = time_us;
            let kind = notice.kind.as_str();
            let json = format!(
                "{{\"did\":{},\"time_us\":{time_us},\"kind\":\"{kind}\",\"{kind}\":{}}}",
                butterfly_data::json_string(&notice.did),
                notice.body
            );
            let event = StreamEvent {
                time_us,
                did: notice.did,
                kind: notice.kind,
                collection: notice.collection,
                json,
            };
            published.push(Arc::new(event.clone()));
            batch.events.push(event);
        }
        batch
            .kv
            .push((EVENTS_LAST_KEY.into(), Some(self.last_time_us.to_string())));
        published
    }
}

/// Keep only the `keep` newest records of one collection of a repo (`latest:N`). Worked out on the
/// writer thread, against the store as it is when the batch is applied.
#[derive(Clone, Debug)]
pub(crate) struct Trim {
    pub(crate) did: String,
    pub(crate) collection: String,
    pub(crate) keep: usize,
    /// The rev the deletes are attributed to.
    pub(crate) rev: String,
}

/// A repo's records as `(collection, rkey, cid)`.
pub(crate) type RecordKeys = Vec<(String, String, String)>;

/// What a batch does to one trimmed collection: rkeys upserted, rkeys deleted.
type Touched = (BTreeSet<String>, BTreeSet<String>);

pub(crate) enum Job {
    Apply {
        batch: Box<Batch>,
        trims: Vec<Trim>,
        /// Events for the served stream, logged with the batch.
        notices: Vec<Notice>,
        tickets: Vec<Ticket>,
        /// The mark the tickets belong to.
        mark: Option<Arc<LowWaterMark>>,
        /// Told once the batch is durable.
        done: Option<oneshot::Sender<()>>,
    },
    RecordKeys {
        did: String,
        reply: oneshot::Sender<Result<RecordKeys, butterfly_store::Error>>,
    },
}

impl Job {
    /// A batch with no trims, tickets or acknowledgement: what backfills send.
    pub(crate) fn apply(batch: Batch) -> Job {
        Job::Apply {
            batch: Box::new(batch),
            trims: Vec::new(),
            notices: Vec::new(),
            tickets: Vec::new(),
            mark: None,
            done: None,
        }
    }

    /// A job that can merge with its neighbours: backfill chunks, repo rows and kv entries, with
    /// nothing waiting on it. Merged in order, such jobs leave the store as they would one by
    /// one: chunks only add records and edges, and rows and kv entries keep the last write.
    fn mergeable(&self) -> bool {
        match self {
            Job::Apply {
                batch,
                trims,
                notices,
                tickets,
                done,
                ..
            } => {
                trims.is_empty()
                    && notices.is_empty()
                    && tickets.is_empty()
                    && done.is_none()
                    && batch.purged.is_empty()
                    && batch.cleared.is_empty()
                    && batch.changes.is_empty()
                    && batch.edges_removed.is_empty()
                    && batch.edges_added.is_empty()
                    && batch.events.is_empty()
                    && batch.events_before.is_none()
            }
            Job::RecordKeys { .. } => false,
        }
    }

    /// The records the job writes: backfilled ones and changes (a resync sends its changes in
    /// chunks as large as a backfill's).
    fn records(&self) -> usize {
        match self {
            Job::Apply { batch, .. } => {
                batch
                    .backfill
                    .iter()
                    .map(|c| c.records.len())
                    .sum::<usize>()
                    + batch.changes.len()
            }
            Job::RecordKeys { .. } => 0,
        }
    }
}

/// The sending side, with the error that stopped the thread, if any.
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Queued>,
    /// Room in the queue, in records: see [`QUEUE_RECORDS`].
    room: Arc<Semaphore>,
    failure: Arc<Mutex<Option<String>>>,
}

/// A job in the queue, holding its share of the queue's room until the thread takes it.
struct Queued {
    job: Job,
    _room: OwnedSemaphorePermit,
}

/// How many records may wait in the queue. The queue is bounded by records, not jobs, so that
/// fetches go on while the thread writes a merged transaction: with a bound of a few dozen
/// jobs, a backfill of small repos filled it within moments, and fetching and writing took
/// turns instead of overlapping. A quarter of a merged transaction keeps fetches busy through a
/// commit; more bought no speed here.
const QUEUE_RECORDS: usize = MERGE_RECORDS / 4;

/// How many jobs may wait in the queue, whatever their size (repo rows, kv entries, queries).
const QUEUE_JOBS: usize = 4096;

/// Merged backfill transactions stop growing past this many records: two of DuckDB's row groups
/// (122,880 rows each). A transaction that appends whole row groups has them written straight
/// to the database file, where smaller ones go through the write-ahead log first and are
/// written again at the checkpoint.
const MERGE_RECORDS: usize = 245_760;

/// How long a merged backfill transaction waits for more jobs before it is written anyway.
/// Only jobs nothing waits on are held back, and a job that cannot merge ends the wait.
const MERGE_LINGER: Duration = Duration::from_millis(250);

impl Writer {
    /// Starts the thread. It ends when every sender is gone, or at the first failed write.
    pub(crate) fn start(
        mut store: Box<dyn Store>,
        stats: Arc<Stats>,
        mut event_log: Option<EventLog>,
    ) -> Result<(Writer, std::thread::JoinHandle<Box<dyn Store>>), Error> {
        let (jobs, mut queue) = mpsc::channel::<Queued>(QUEUE_JOBS);
        let room = Arc::new(Semaphore::new(QUEUE_RECORDS));
        let failure = Arc::new(Mutex::new(None));
        let failure_slot = failure.clone();
        let handle = std::thread::Builder::new()
            .name("butterfly-store".into())
            .spawn(move || {
                let mut next: Option<Job> = None;
                // Only for timed waits on the queue while merging.
                let timer = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(timer) => timer,
                    Err(error) => {
                        *failure_slot.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(format!("cannot start the store thread's timer: {error}"));
                        return store;
                    }
                };
                loop {
                    let job = match next.take() {
                        Some(job) => job,
                        None => match queue.blocking_recv() {
                            Some(queued) => queued.job,
                            None => break,
                        },
                    };
                    let job = if job.mergeable() {
                        let mut records = job.records();
                        let mut merged = job;
                        let deadline = Instant::now() + MERGE_LINGER;
                        while records < MERGE_RECORDS {
                            let more = match queue.try_recv() {
                                Ok(more) => Some(more.job),
                                Err(mpsc::error::TryRecvError::Empty) => {
                                    let left = deadline.saturating_duration_since(Instant::now());
                                    if left.is_zero() || records == 0 {
                                        break;
                                    }
                                    // The timeout's timer must be made inside the runtime.
                                    timer
                                        .block_on(async {
                                            tokio::time::timeout(left, queue.recv()).await
                                        })
                                        .ok()
                                        .flatten()
                                        .map(|queued| queued.job)
                                }
                                Err(mpsc::error::TryRecvError::Disconnected) => None,
                            };
                            match more {
                                Some(more) if more.mergeable() => {
                                    records += more.records();
                                    merge(&mut merged, more);
                                }
                                Some(other) => {
                                    next = Some(other);
                                    break;
                                }
                                None => break,
                            }
                        }
                        merged
                    } else {
                        job
                    };
                    if let Err(error) = run_job(store.as_mut(), job, &stats, event_log.as_mut()) {
                        tracing::error!(%error, "store write failed; stopping");
                        *failure_slot.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(error.to_string());
                        break;
                    }
                }
                store
            })
            .map_err(|e| Error::Writer(format!("cannot start the store thread: {e}")))?;
        Ok((
            Writer {
                jobs,
                room,
                failure,
            },
            handle,
        ))
    }

    /// Queues a job, waiting for room; fails if the thread has stopped.
    pub(crate) async fn send(&self, job: Job) -> Result<(), Error> {
        let room = self
            .room
            .clone()
            .acquire_many_owned(room_for(&job))
            .await
            .map_err(|_| self.failure())?;
        let queued = Queued { job, _room: room };
        if self.jobs.send(queued).await.is_err() {
            return Err(self.failure());
        }
        Ok(())
    }

    /// The same from a blocking thread (not from within the runtime's own workers).
    pub(crate) fn blocking_send(&self, job: Job) -> Result<(), Error> {
        let permits = room_for(&job);
        let room = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Writer("blocking_send outside the runtime".into()))?
            .block_on(self.room.clone().acquire_many_owned(permits))
            .map_err(|_| self.failure())?;
        let queued = Queued { job, _room: room };
        if self.jobs.blocking_send(queued).is_err() {
            return Err(self.failure());
        }
        Ok(())
    }

    /// Why the thread stopped.
    pub(crate) fn failure(&self) -> Error {
        let message = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "the store thread is gone".into());
        Error::Writer(message)
    }

    /// Every record key of a repo, after every write queued so far.
    pub(crate) async fn record_keys(&self, did: &str) -> Result<RecordKeys, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::RecordKeys {
            did: did.to_owned(),
            reply,
        })
        .await?;
        match answer.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(self.failure()),
        }
    }
}

/// The queue room a job takes: its records, at least one, at most the whole queue.
fn room_for(job: &Job) -> u32 {
    job.records().clamp(1, QUEUE_RECORDS) as u32
}

fn merge(into: &mut Job, more: Job) {
    if let (Job::Apply { batch, .. }, Job::Apply { batch: extra, .. }) = (into, more) {
        let extra = *extra;
        batch.backfill.extend(extra.backfill);
        batch.repos.extend(extra.repos);
        batch.kv.extend(extra.kv);
    }
}

fn run_job(
    store: &mut dyn Store,
    job: Job,
    stats: &Stats,
    event_log: Option<&mut EventLog>,
) -> Result<(), butterfly_store::Error> {
    match job {
        Job::RecordKeys { did, reply } => {
            let _ = reply.send(store.record_keys(&did));
            Ok(())
        }
        Job::Apply {
            mut batch,
            trims,
            notices,
            tickets,
            mark,
            done,
        } => {
            apply_trims(store, &mut batch, &trims)?;
            let (published, live) = match event_log {
                Some(log) => (log.stamp(&mut batch, notices), Some(&log.live)),
                None => (Vec::new(), None),
            };
            if !batch.is_empty() {
                let started = Instant::now();
                store.apply(*batch)?;
                metrics::histogram!("butterfly_store_write_seconds")
                    .record(started.elapsed().as_secs_f64());
                stats.batches_written.fetch_add(1, Ordering::Relaxed);
            }
            // Published only now that the batch is durable: a consumer never sees an event the
            // store could lose. Without subscribers the send fails, which is fine.
            if let Some(live) = live {
                for event in published {
                    let _ = live.send(event);
                }
            }
            if let Some(mark) = mark {
                for ticket in tickets {
                    mark.finish(ticket);
                }
            }
            if let Some(done) = done {
                let _ = done.send(());
            }
            Ok(())
        }
    }
}

/// Adds the deletes that keep each trimmed collection at its newest `keep` records, counting the
/// batch's own creates and deletes.
fn apply_trims(
    store: &mut dyn Store,
    batch: &mut Batch,
    trims: &[Trim],
) -> Result<(), butterfly_store::Error> {
    if trims.is_empty() {
        return Ok(());
    }
    // What the batch itself does to each trimmed collection.
    let mut touched: HashMap<(&str, &str), Touched> = HashMap::new();
    for trim in trims {
        touched.entry((&trim.did, &trim.collection)).or_default();
    }
    for change in &batch.changes {
        if let Some((upserted, deleted)) =
            touched.get_mut(&(change.did.as_str(), change.collection.as_str()))
        {
            match change.action {
                Action::Delete => {
                    upserted.remove(&change.rkey);
                    deleted.insert(change.rkey.clone());
                }
                Action::Create | Action::Update => {
                    deleted.remove(&change.rkey);
                    upserted.insert(change.rkey.clone());
                }
            }
        }
    }
    let mut deletes = Vec::new();
    for trim in trims {
        let Some((upserted, deleted)) = touched.remove(&(&trim.did, &trim.collection)) else {
            continue; // a second trim of the same collection
        };
        let stored = store.newest_rkeys(&trim.did, &trim.collection, trim.keep + upserted.len())?;
        let mut all: BTreeSet<String> = stored
            .into_iter()
            .filter(|rkey| !deleted.contains(rkey))
            .collect();
        all.extend(upserted);
        let surplus = all.len().saturating_sub(trim.keep);
        for rkey in all.into_iter().take(surplus) {
            deletes.push(Change {
                did: trim.did.clone(),
                collection: trim.collection.clone(),
                rkey,
                action: Action::Delete,
                cid: None,
                rev: trim.rev.clone(),
                json: None,
                live: true,
                indexed_at: crate::now_micros(),
            });
        }
    }
    batch.changes.extend(deletes);
    Ok(())
}
