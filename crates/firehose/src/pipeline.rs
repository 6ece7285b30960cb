//! Verification in parallel across repos, in order within each repo, with a low-water mark.
//!
//! [`Pipeline::submit`] takes messages in stream order. It drops those whose seq does not increase,
//! then routes each message to a worker chosen by its DID, so one repo's messages are verified in
//! order while different repos proceed in parallel. Outcomes come out of the receiver in completion
//! order, each with a [`Ticket`]. The consumer hands the ticket back to the [`LowWaterMark`] once it
//! has fully handled the outcome (written it durably, say); the mark is then the highest seq at or
//! below which everything is handled: the only cursor that is safe to save.
//!
//! Outcomes come out in completion order, or in stream order with [`PipelineConfig::ordered`].
//!
//! Memory is bounded: at most [`PipelineConfig::max_in_flight`] messages are between `submit` and the
//! consumer. When the consumer is slow, `submit` waits, and the stream reader above it stops reading
//! the socket.

use crate::message::{self, Message};
use crate::verify::{Outcome, Reason, Rejected, Verifier};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Proof that a seq was handed to the workers; give it back with [`LowWaterMark::finish`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a ticket that is never finished holds the low-water mark back"]
pub struct Ticket(i64);

impl Ticket {
    /// The seq this ticket stands for.
    pub fn seq(&self) -> i64 {
        self.0
    }
}

/// The highest seq below which every event has been fully handled.
#[derive(Debug)]
pub struct LowWaterMark {
    state: Mutex<MarkState>,
}

#[derive(Debug)]
struct MarkState {
    in_flight: BTreeSet<i64>,
    highest_begun: Option<i64>,
}

impl LowWaterMark {
    /// A mark starting at `cursor` (where the stream resumes), if any.
    pub fn new(cursor: Option<i64>) -> LowWaterMark {
        LowWaterMark {
            state: Mutex::new(MarkState {
                in_flight: BTreeSet::new(),
                highest_begun: cursor,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MarkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that `seq` is in flight. Seqs must be begun in increasing order.
    pub fn begin(&self, seq: i64) -> Ticket {
        let mut state = self.lock();
        state.in_flight.insert(seq);
        state.highest_begun = Some(state.highest_begun.map_or(seq, |h| h.max(seq)));
        Ticket(seq)
    }

    /// Notes that `seq` was seen and needs no handling (an event the consumer does not want), so
    /// that the mark can move past it. Seqs must be passed in increasing order, as with `begin`.
    pub fn pass(&self, seq: i64) {
        let mut state = self.lock();
        state.highest_begun = Some(state.highest_begun.map_or(seq, |h| h.max(seq)));
    }

    /// Notes that the event behind `ticket` is fully handled.
    pub fn finish(&self, ticket: Ticket) {
        self.lock().in_flight.remove(&ticket.0);
    }

    /// The highest seq such that it and every seq before it are handled: the cursor to save.
    pub fn get(&self) -> Option<i64> {
        let state = self.lock();
        match state.in_flight.first() {
            Some(oldest) => Some(oldest - 1),
            None => state.highest_begun,
        }
    }

    /// How many events are in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }
}

/// One verified (or rejected) message, with the ticket to finish when it is handled.
#[derive(Debug)]
pub struct Processed {
    /// The verdict.
    pub outcome: Outcome,
    /// Present when the message had a seq that passed the seq check.
    pub ticket: Option<Ticket>,
}

/// Sizes and ordering of the pipeline.
#[derive(Clone, Copy, Debug)]
pub struct PipelineConfig {
    /// Parallel workers; each owns a share of the repos.
    pub workers: usize,
    /// Messages queued per worker.
    pub worker_queue: usize,
    /// Outcomes queued for the consumer.
    pub output_queue: usize,
    /// Most messages submitted but not yet taken by the consumer; `submit` waits beyond it. This is
    /// the pipeline's memory bound.
    pub max_in_flight: usize,
    /// Deliver outcomes in submission (stream) order instead of completion order. Within one repo
    /// the order is the stream's either way; this also orders across repos, at the cost of holding
    /// finished outcomes behind a slow one (an identity lookup, say), up to `max_in_flight`.
    pub ordered: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        PipelineConfig {
            // More workers than cores, so that one repo waiting on an identity lookup does not stall
            // a whole core's share of the stream.
            workers: cores * 4,
            worker_queue: 256,
            output_queue: 1024,
            max_in_flight: 8192,
            ordered: false,
        }
    }
}

/// The consumer has gone away.
#[derive(Debug, thiserror::Error)]
#[error("the pipeline's consumer has gone away")]
pub struct Closed;

/// A message on its way to a worker.
struct Job {
    index: u64,
    message: Message,
    ticket: Option<Ticket>,
    permit: OwnedSemaphorePermit,
}

/// A finished message on its way to the collector, which orders (if asked) and delivers it.
struct Done {
    index: u64,
    processed: Processed,
    /// Held until the consumer's channel takes `processed`; dropping it frees a place in flight.
    _permit: OwnedSemaphorePermit,
}

/// The front of the pipeline: see the module docs.
pub struct Pipeline {
    workers: Vec<mpsc::Sender<Job>>,
    done: Sink,
    in_flight: Arc<Semaphore>,
    next_index: u64,
    last_seq: Option<i64>,
    mark: Arc<LowWaterMark>,
    verifier: Arc<Verifier>,
    hasher: std::collections::hash_map::RandomState,
}

impl Pipeline {
    /// Starts the workers on the current tokio runtime. `cursor` is where the stream resumes: seqs at
    /// or below it are dropped as not increasing.
    pub fn start(
        verifier: Arc<Verifier>,
        config: PipelineConfig,
        cursor: Option<i64>,
    ) -> (Pipeline, mpsc::Receiver<Processed>) {
        let (output, outcomes) = mpsc::channel(config.output_queue.max(1));
        let done = if config.ordered {
            // Unbounded, but never holds more than `max_in_flight`: every entry carries a permit.
            let (done, done_rx) = mpsc::unbounded_channel();
            tokio::spawn(reorder(done_rx, output));
            Sink::Reorder(done)
        } else {
            Sink::Direct(output)
        };
        let mut workers = Vec::new();
        for _ in 0..config.workers.max(1) {
            let (tx, mut rx) = mpsc::channel::<Job>(config.worker_queue.max(1));
            let verifier = verifier.clone();
            let done = done.clone();
            tokio::spawn(async move {
                while let Some(job) = rx.recv().await {
                    let outcome = verifier.verify(job.message).await;
                    let finished = Done {
                        index: job.index,
                        processed: Processed {
                            outcome,
                            ticket: job.ticket,
                        },
                        _permit: job.permit,
                    };
                    if done.deliver(finished).await.is_err() {
                        break;
                    }
                }
            });
            workers.push(tx);
        }
        let pipeline = Pipeline {
            workers,
            done,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            next_index: 0,
            last_seq: cursor,
            mark: Arc::new(LowWaterMark::new(cursor)),
            verifier,
            hasher: Default::default(),
        };
        (pipeline, outcomes)
    }

    /// The low-water mark of this pipeline.
    pub fn low_water_mark(&self) -> Arc<LowWaterMark> {
        self.mark.clone()
    }

    /// The verifier (for its counters and repo state).
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// Skips a message the consumer does not want (a repo it does not follow) without verifying it,
    /// so that the low-water mark can still move past its seq. A seq that does not increase is
    /// ignored.
    pub fn skip(&mut self, seq: i64) {
        if self.last_seq.is_some_and(|last| seq <= last) {
            return;
        }
        self.last_seq = Some(seq);
        self.mark.pass(seq);
    }

    /// Takes the next message in stream order, or a frame that failed to decode (counted and
    /// reported as `malformed_frame`). Waits while `max_in_flight` messages are in the pipeline.
    pub async fn submit(&mut self, item: Result<Message, message::Error>) -> Result<(), Closed> {
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Closed)?;
        let index = self.next_index;
        self.next_index += 1;
        let message = match item {
            Ok(message) => message,
            Err(error) => {
                let rejected = rejected_here(
                    None,
                    "frame".into(),
                    None,
                    Reason::MalformedFrame,
                    error.to_string(),
                );
                return self.deliver_here(index, rejected, permit).await;
            }
        };
        let ticket = match message.seq() {
            Some(seq) if self.last_seq.is_some_and(|last| seq <= last) => {
                let detail = format!(
                    "seq {seq} is not greater than {}",
                    self.last_seq.unwrap_or_default()
                );
                let (kind, did) = (message.kind().to_owned(), message.did().cloned());
                let rejected =
                    rejected_here(Some(seq), kind, did, Reason::SeqNotIncreasing, detail);
                return self.deliver_here(index, rejected, permit).await;
            }
            Some(seq) => {
                self.last_seq = Some(seq);
                Some(self.mark.begin(seq))
            }
            None => None,
        };
        let worker = match message.did() {
            Some(did) => (self.hasher.hash_one(did) as usize) % self.workers.len(),
            None => 0,
        };
        let job = Job {
            index,
            message,
            ticket,
            permit,
        };
        self.workers[worker].send(job).await.map_err(|_| Closed)
    }

    async fn deliver_here(
        &self,
        index: u64,
        outcome: Outcome,
        permit: OwnedSemaphorePermit,
    ) -> Result<(), Closed> {
        self.verifier.stats().record(&outcome);
        let done = Done {
            index,
            processed: Processed {
                outcome,
                ticket: None,
            },
            _permit: permit,
        };
        self.done.deliver(done).await
    }
}

fn rejected_here(
    seq: Option<i64>,
    kind: String,
    did: Option<butterfly_syntax::Did>,
    reason: Reason,
    detail: String,
) -> Outcome {
    Outcome::Rejected(Box::new(Rejected {
        seq,
        kind,
        did,
        reason,
        detail,
        inversion: None,
        resync: false,
    }))
}

/// Where workers put finished messages: straight into the consumer's channel, or through the
/// reordering task when outcomes must come out in stream order.
#[derive(Clone)]
enum Sink {
    Direct(mpsc::Sender<Processed>),
    Reorder(mpsc::UnboundedSender<Done>),
}

impl Sink {
    /// Hands `done` on; its permit is released once the consumer's channel has taken it.
    async fn deliver(&self, done: Done) -> Result<(), Closed> {
        match self {
            Sink::Direct(output) => output.send(done.processed).await.map_err(|_| Closed),
            Sink::Reorder(reorder) => reorder.send(done).map_err(|_| Closed),
        }
    }
}

/// Delivers finished messages to the consumer in submission order.
async fn reorder(mut done: mpsc::UnboundedReceiver<Done>, output: mpsc::Sender<Processed>) {
    let mut waiting: BTreeMap<u64, Done> = BTreeMap::new();
    let mut next = 0u64;
    while let Some(finished) = done.recv().await {
        waiting.insert(finished.index, finished);
        while let Some(ready) = waiting.remove(&next) {
            next += 1;
            if output.send(ready.processed).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_waits_for_the_oldest_unfinished_event() {
        let mark = LowWaterMark::new(Some(10));
        assert_eq!(mark.get(), Some(10));
        let a = mark.begin(11);
        let b = mark.begin(12);
        let c = mark.begin(15);
        assert_eq!(mark.get(), Some(10));
        mark.finish(b);
        assert_eq!(mark.get(), Some(10), "12 is done but 11 is not");
        mark.finish(a);
        assert_eq!(mark.get(), Some(14), "everything before 15 is done");
        mark.finish(c);
        assert_eq!(mark.get(), Some(15));
        assert_eq!(mark.in_flight(), 0);
    }

    #[test]
    fn passed_seqs_move_the_mark_only_past_finished_events() {
        let mark = LowWaterMark::new(None);
        mark.pass(3);
        assert_eq!(
            mark.get(),
            Some(3),
            "nothing in flight: the mark is the last seq seen"
        );
        let a = mark.begin(4);
        mark.pass(5);
        mark.pass(6);
        assert_eq!(mark.get(), Some(3), "4 is still being handled");
        mark.finish(a);
        assert_eq!(mark.get(), Some(6));
    }
}
