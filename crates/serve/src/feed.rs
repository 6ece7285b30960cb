//! The served event stream: replay from the store's log, then the live tail.
//!
//! The engine publishes each event on a broadcast channel after the batch holding it commits,
//! and the same events sit in the store's log. A reader ([`EventReader`]) starting from a cursor
//! pages through the log, then follows the broadcast; the broadcast is subscribed to *before*
//! the log is read, so no event falls between the two, and events already read from the log are
//! skipped by `time_us`. The broadcast's capacity bounds memory whatever the number of readers: a
//! reader that falls further behind than that is told so ([`Lagged`]) and decides what to do
//! (a WebSocket consumer is cut off; a webhook goes back to the log).

use butterfly_store::{Batch, Store, StreamEvent};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// A read of the log: it owns what it needs, so a reader can leave it running when cancelled.
pub type LogRead = Pin<Box<dyn Future<Output = Result<Vec<StreamEvent>, String>> + Send>>;

/// The retained log of served events.
pub trait EventLog: Send + Sync {
    /// Up to `limit` events with `time_us > after`, oldest first. Asynchronous, so that a
    /// reader waiting for a connection holds no thread: a server may have a thousand replaying
    /// subscribers and a handful of connections.
    fn events_after(self: Arc<Self>, after: i64, limit: usize) -> LogRead;
}

/// A single store connection as the log, read on a blocking thread (a server's reads go through
/// a [`crate::readers::ReadPool`] instead; this suits embedding and tests).
impl<S: Store + 'static> EventLog for Mutex<S> {
    fn events_after(self: Arc<Self>, after: i64, limit: usize) -> LogRead {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                self.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .events_after(after, limit)
                    .map_err(|error| error.to_string())
            })
            .await
            .map_err(|e| format!("the log reader failed: {e}"))?
        })
    }
}

/// Appends `events` to a store's log and then publishes them, as the engine's writer does: for a
/// feed fed by something other than the engine, and for tests.
pub fn commit_events<S: Store>(
    log: &Mutex<S>,
    live: &broadcast::Sender<Arc<StreamEvent>>,
    events: Vec<StreamEvent>,
) -> Result<(), butterfly_store::Error> {
    let published: Vec<Arc<StreamEvent>> = events.iter().cloned().map(Arc::new).collect();
    log.lock().unwrap_or_else(|p| p.into_inner()).apply(Batch {
        events,
        ..Batch::default()
    })?;
    for event in published {
        // No subscriber is no error.
        let _ = live.send(event);
    }
    Ok(())
}

/// Where served events come from.
#[derive(Clone)]
pub struct EventFeed {
    /// Committed events as they happen. Weak, so that a feed and the readers made from it do
    /// not keep the stream open: when its publisher (the engine, or whoever holds the sender)
    /// lets go, readers end with [`ReadError::Closed`] and a `/subscribe` client gets its 1001
    /// close, instead of everyone waiting for events that cannot come and holding a shutdown up.
    live: broadcast::WeakSender<Arc<StreamEvent>>,
    /// The retained log, for replay.
    pub log: Arc<dyn EventLog>,
}

impl EventFeed {
    /// A feed of what `live` publishes, replayed from `log`. It holds `live` weakly: the stream
    /// stays open while the caller (the publisher) keeps its sender.
    pub fn new(live: &broadcast::Sender<Arc<StreamEvent>>, log: Arc<dyn EventLog>) -> EventFeed {
        EventFeed {
            live: live.downgrade(),
            log,
        }
    }

    /// A receiver of the live tail; one already closed when the publisher has gone.
    fn subscribe(&self) -> broadcast::Receiver<Arc<StreamEvent>> {
        match self.live.upgrade() {
            Some(sender) => sender.subscribe(),
            None => broadcast::channel(1).1,
        }
    }
}

/// A reader fell so far behind the live tail that events were dropped for it; the log may still
/// hold them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("fell more than the live buffer behind the stream ({missed} events missed)")]
pub struct Lagged {
    pub missed: u64,
}

/// Why [`EventReader::next`] returned no events.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Lagged(#[from] Lagged),
    #[error("reading the event log: {0}")]
    Log(String),
    /// The engine is gone: no more events will come.
    #[error("the event stream ended")]
    Closed,
}

/// Events per log page while replaying.
const REPLAY_PAGE: usize = 1000;

/// A page being read from the log, in a task of its own.
type PageRead = tokio::task::JoinHandle<Result<Vec<StreamEvent>, String>>;

/// Reads events after a cursor: from the log while behind, then from the live tail.
pub struct EventReader {
    feed: EventFeed,
    live: broadcast::Receiver<Arc<StreamEvent>>,
    /// The `time_us` of the last event returned (or the starting cursor).
    after: i64,
    replaying: bool,
    /// Set when the live tail dropped events for this reader; until [`EventReader::resume_from_log`]
    /// every call reports it, so that no caller skips the gap unawares.
    lagged: Option<u64>,
    /// A page read from the log (of events after `after`) that a cancelled call left running:
    /// the next call takes its result instead of reading the page again.
    /// Also the page's size limit.
    pending: Option<(usize, PageRead)>,
}

impl Drop for EventReader {
    /// A page read that a cancelled call left running is stopped: nobody will take it, and it
    /// would hold one of the read pool's permits for nothing.
    fn drop(&mut self) {
        if let Some((_, read)) = &self.pending {
            read.abort();
        }
    }
}

impl EventReader {
    /// A reader that returns events with `time_us > cursor`, or, without a cursor, only events
    /// committed from now on.
    pub fn new(feed: EventFeed, cursor: Option<i64>) -> EventReader {
        let live = feed.subscribe();
        EventReader {
            feed,
            live,
            after: cursor.unwrap_or(i64::MAX),
            replaying: cursor.is_some(),
            lagged: None,
            pending: None,
        }
    }

    /// The `time_us` of the last event returned, if any was.
    pub fn position(&self) -> Option<i64> {
        (self.after != i64::MAX).then_some(self.after)
    }

    /// True while the reader is still reading from the log.
    pub fn replaying(&self) -> bool {
        self.replaying
    }

    /// Goes back to the log from the last event returned: what a reader that [`Lagged`] and
    /// wants to continue does.
    pub fn resume_from_log(&mut self) {
        self.live = self.feed.subscribe();
        self.lagged = None;
        if self.after != i64::MAX {
            self.replaying = true;
        }
    }

    /// The next events, at most `max`, in `time_us` order; waits for the live tail when caught
    /// up. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self, max: usize) -> Result<Vec<Arc<StreamEvent>>, ReadError> {
        let max = max.max(1);
        if let Some(missed) = self.lagged {
            return Err(Lagged { missed }.into());
        }
        while self.replaying {
            let (limit, read) = self.pending.get_or_insert_with(|| {
                let log = self.feed.log.clone();
                let after = self.after;
                let limit = max.min(REPLAY_PAGE);
                (limit, tokio::spawn(log.events_after(after, limit)))
            });
            let limit = *limit;
            let page = read.await;
            self.pending = None;
            let mut page = page
                .map_err(|e| ReadError::Log(format!("the log reader failed: {e}")))?
                .map_err(ReadError::Log)?;
            // A page a cancelled call asked for may be longer than this call wants; the rest is
            // read again next time, so the log is done only if this call takes all of a short page.
            if page.len() < limit && page.len() <= max {
                self.replaying = false;
            }
            page.truncate(max);
            if let Some(last) = page.last() {
                self.after = last.time_us;
                return Ok(page.into_iter().map(Arc::new).collect());
            }
        }
        loop {
            let first = match self.live.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.lagged = Some(missed);
                    return Err(Lagged { missed }.into());
                }
                Err(broadcast::error::RecvError::Closed) => return Err(ReadError::Closed),
            };
            let mut events = Vec::new();
            self.take(first, &mut events);
            while events.len() < max {
                match self.live.try_recv() {
                    Ok(event) => self.take(event, &mut events),
                    Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                        // Hand over what we have; the next call reports the lag.
                        self.lagged = Some(missed);
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }

    /// Keeps `event` unless the log replay already returned it.
    fn take(&mut self, event: Arc<StreamEvent>, events: &mut Vec<Arc<StreamEvent>>) {
        if self.after == i64::MAX || event.time_us > self.after {
            self.after = event.time_us;
            events.push(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use butterfly_store::{EventKind, MemoryStore};

    type VecLog = Mutex<MemoryStore>;

    fn event(time_us: i64) -> StreamEvent {
        StreamEvent {
            time_us,
            did: "did:plc:alice".into(),
            kind: EventKind::Commit,
            collection: Some("app.bsky.feed.post".into()),
            json: format!("{{\"time_us\":{time_us}}}"),
        }
    }

    /// Commits an event the way the engine does: into the log, then onto the broadcast.
    fn commit(log: &VecLog, live: &broadcast::Sender<Arc<StreamEvent>>, time_us: i64) {
        commit_events(log, live, vec![event(time_us)]).expect("apply");
    }

    fn times(events: &[Arc<StreamEvent>]) -> Vec<i64> {
        events.iter().map(|e| e.time_us).collect()
    }

    #[tokio::test]
    async fn replays_the_log_then_follows_the_tail_without_gaps_or_repeats() {
        let log = Arc::new(VecLog::new(MemoryStore::new()));
        let (live, _) = broadcast::channel(16);
        let feed = EventFeed::new(&live, log.clone());
        for t in 1..=5 {
            commit(&log, &live, t);
        }
        let mut reader = EventReader::new(feed.clone(), Some(2));
        // Committed after the reader subscribed: both in the log and on the broadcast.
        commit(&log, &live, 6);
        let mut seen = Vec::new();
        while seen.len() < 4 {
            seen.extend(times(&reader.next(2).await.expect("events")));
        }
        assert_eq!(seen, vec![3, 4, 5, 6]);
        commit(&log, &live, 7);
        assert_eq!(times(&reader.next(10).await.expect("events")), vec![7]);
        assert_eq!(reader.position(), Some(7));
    }

    #[tokio::test]
    async fn without_a_cursor_only_new_events_come() {
        let log = Arc::new(VecLog::new(MemoryStore::new()));
        let (live, _) = broadcast::channel(16);
        let feed = EventFeed::new(&live, log.clone());
        commit(&log, &live, 1);
        let mut reader = EventReader::new(feed.clone(), None);
        commit(&log, &live, 2);
        assert_eq!(times(&reader.next(10).await.expect("events")), vec![2]);
    }

    #[tokio::test]
    async fn a_lag_is_reported_until_the_reader_goes_back_to_the_log() {
        let log = Arc::new(VecLog::new(MemoryStore::new()));
        let (live, _) = broadcast::channel(4);
        let feed = EventFeed::new(&live, log.clone());
        let mut reader = EventReader::new(feed.clone(), None);
        commit(&log, &live, 1);
        assert_eq!(times(&reader.next(10).await.expect("events")), vec![1]);
        for t in 2..=20 {
            commit(&log, &live, t);
        }
        assert!(matches!(reader.next(10).await, Err(ReadError::Lagged(_))));
        assert!(
            matches!(reader.next(10).await, Err(ReadError::Lagged(_))),
            "the lag stays reported"
        );
        reader.resume_from_log();
        let mut seen = Vec::new();
        while seen.len() < 19 {
            seen.extend(times(&reader.next(7).await.expect("events")));
        }
        assert_eq!(
            seen,
            (2..=20).collect::<Vec<_>>(),
            "nothing lost after a lag"
        );
    }
}
