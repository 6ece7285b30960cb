//! Verification in parallel across repos, in order within each repo, with a low-water mark.
//!
//! [`Pipeline::submit`] takes messages in stream order. It drops those whose seq does not increase,
//! then routes each message to a worker chosen by its DID, so one repo's messages are verified in
//! order while different repos proceed in parallel. Outcomes come out of the receiver in completion
//! order, each with a [`Ticket`]. The consumer hands the ticket back to the [`LowWaterMark`] once it
//! has fully handled the outcome (written it durably, say); the mark is then the highest seq at or
//! below which everything is handled: the only cursor that is safe to save.
//!
//! Queues are bounded: when the consumer is slow, workers wait, then `submit` waits, and the stream
//! reader above it stops reading the socket. Memory does not grow.

use crate::message::{self, Message};
use crate::verify::{Outcome, Reason, Rejected, Verifier};
use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

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

/// Sizes of the pipeline.
#[derive(Clone, Copy, Debug)]
pub struct PipelineConfig {
    /// Parallel workers; each owns a share of the repos.
    pub workers: usize,
    /// Messages queued per worker before `submit` waits.
    pub worker_queue: usize,
    /// Outcomes queued for the consumer before workers wait.
    pub output_queue: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        PipelineConfig {
            // More workers than cores, so that one repo waiting on an identity lookup does not stall
            // a whole core's share of the stream.
            workers: cores * 4,
            worker_queue: 256,
            output_queue: 4096,
        }
    }
}

/// The consumer has gone away.
#[derive(Debug, thiserror::Error)]
#[error("the pipeline's consumer has gone away")]
pub struct Closed;

/// The front of the pipeline: see the module docs.
pub struct Pipeline {
    workers: Vec<mpsc::Sender<(Message, Option<Ticket>)>>,
    output: mpsc::Sender<Processed>,
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
        let mut workers = Vec::new();
        for _ in 0..config.workers.max(1) {
            let (tx, mut rx) =
                mpsc::channel::<(Message, Option<Ticket>)>(config.worker_queue.max(1));
            let verifier = verifier.clone();
            let output = output.clone();
            tokio::spawn(async move {
                while let Some((message, ticket)) = rx.recv().await {
                    let outcome = verifier.verify(message).await;
                    if output.send(Processed { outcome, ticket }).await.is_err() {
                        break;
                    }
                }
            });
            workers.push(tx);
        }
        let pipeline = Pipeline {
            workers,
            output,
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

    /// Takes the next message in stream order, or a frame that failed to decode (counted and
    /// reported as `malformed_frame`). Waits while the workers' queues are full.
    pub async fn submit(&mut self, item: Result<Message, message::Error>) -> Result<(), Closed> {
        let message = match item {
            Ok(message) => message,
            Err(error) => {
                return self
                    .reject_here(
                        None,
                        "frame".into(),
                        None,
                        Reason::MalformedFrame,
                        error.to_string(),
                    )
                    .await
            }
        };
        let ticket = match message.seq() {
            Some(seq) if self.last_seq.is_some_and(|last| seq <= last) => {
                let detail = format!(
                    "seq {seq} is not greater than {}",
                    self.last_seq.unwrap_or_default()
                );
                let (kind, did) = (message.kind().to_owned(), message.did().cloned());
                return self
                    .reject_here(Some(seq), kind, did, Reason::SeqNotIncreasing, detail)
                    .await;
            }
            Some(seq) => {
                self.last_seq = Some(seq);
                Some(self.mark.begin(seq))
            }
            None => None,
        };
        let worker = match message.did() {
            Some(did) => {
                let mut h = self.hasher.build_hasher();
                did.hash(&mut h);
                (h.finish() as usize) % self.workers.len()
            }
            None => 0,
        };
        self.workers[worker]
            .send((message, ticket))
            .await
            .map_err(|_| Closed)
    }

    async fn reject_here(
        &self,
        seq: Option<i64>,
        kind: String,
        did: Option<butterfly_syntax::Did>,
        reason: Reason,
        detail: String,
    ) -> Result<(), Closed> {
        let outcome = Outcome::Rejected(Box::new(Rejected {
            seq,
            kind,
            did,
            reason,
            detail,
            inversion: None,
            resync: false,
        }));
        self.verifier.stats().record(&outcome);
        self.output
            .send(Processed {
                outcome,
                ticket: None,
            })
            .await
            .map_err(|_| Closed)
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
}
