//! The live stream, turned into [`LiveEvent`]s for the coordinator.
//!
//! Relay (or PDS) frames are filtered to the repos the engine tracks before anything is verified,
//! so a whole-network relay costs only a frame decode per foreign event; their seqs still move the
//! low-water mark. Tracked repos' messages go through the verification pipeline; a converter task
//! reads the outcomes and decodes record blocks to JSON, off the coordinator's task.
//!
//! Jetstream events are trusted JSON; their `time_us` is the cursor.

use butterfly_data::Value;
use butterfly_firehose::message::Message;
use butterfly_firehose::verify::{AccountStatus, RepoState};
use butterfly_firehose::{
    Frame, LowWaterMark, Outcome, Pipeline, PipelineConfig, Ticket, Verifier,
};
use butterfly_repo::proof::RepoOp;
use butterfly_store::Action;
use butterfly_stream::jetstream::{self, EventKind, JetstreamConfig, JetstreamItem, Operation};
use butterfly_stream::{StreamConfig, StreamItem};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

/// The DIDs whose events are wanted; shared with the feeder, which drops the rest.
pub(crate) type Tracked = Arc<RwLock<HashSet<String>>>;

/// One event of a tracked repo, with the ticket that holds the cursor back until it is handled.
pub(crate) struct LiveEvent {
    pub(crate) did: String,
    /// The event's time in µs since the epoch (for the lag), if known.
    pub(crate) time_micros: Option<i64>,
    pub(crate) body: LiveBody,
    pub(crate) ticket: Option<Ticket>,
}

pub(crate) enum LiveBody {
    Commit {
        rev: String,
        /// The MST root after the commit (absent from Jetstream).
        data: Option<String>,
        ops: Vec<LiveOp>,
    },
    /// The repo must be fetched again (a `#sync` that moved it, a broken chain, `tooBig`).
    Resync,
    /// The identity may have changed; the DID is looked up again (the handle the event carries
    /// is not trusted until checked both ways).
    Identity,
    Account {
        active: bool,
        status: Option<String>,
    },
    /// Nothing to do (an `#info`, a rejection that needs no resync); only the ticket matters.
    Nothing,
}

pub(crate) struct LiveOp {
    pub(crate) collection: String,
    pub(crate) rkey: String,
    pub(crate) action: Action,
    pub(crate) cid: Option<String>,
    /// The record as JSON text, made here (on the stream's tasks) rather than on the
    /// coordinator. Only records of walked collections are parsed again, for their edges.
    pub(crate) json: Option<String>,
}

/// What the coordinator holds of a running stream.
pub(crate) struct LiveHandle {
    pub(crate) events: mpsc::Receiver<LiveEvent>,
    pub(crate) mark: Arc<LowWaterMark>,
    /// For the relay: the verifier, whose per-repo state the coordinator primes and resets.
    pub(crate) verifier: Option<Arc<Verifier>>,
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The source ends by itself (a frame-log replay); network clients reconnect forever.
    pub(crate) finite: bool,
}

impl LiveHandle {
    pub(crate) fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts following a relay or PDS from `cursor`; `file:PATH` replays a frame log instead (for
/// benchmarks and offline runs).
pub(crate) fn start_relay(
    url: &str,
    cursor: Option<i64>,
    verifier: Arc<Verifier>,
    tracked: Tracked,
    allow_private_network: bool,
) -> Result<LiveHandle, butterfly_stream::Error> {
    let finite = url.starts_with("file:");
    let (connection, mut items) = match url.strip_prefix("file:") {
        Some(path) => (
            None,
            butterfly_stream::replay_frame_log(std::path::Path::new(path), cursor, 256)?,
        ),
        None => {
            let (connection, items) = butterfly_stream::subscribe_repos(
                url,
                cursor,
                StreamConfig::with_private_network(allow_private_network),
            )?;
            (Some(connection), items)
        }
    };
    let (mut pipeline, mut outcomes) = Pipeline::start(
        verifier.clone(),
        PipelineConfig {
            ordered: true,
            ..PipelineConfig::default()
        },
        cursor,
    );
    let mark = pipeline.low_water_mark();
    let source = url.to_owned();
    let feeder = tokio::spawn(async move {
        let _connection = connection;
        while let Some(item) = items.recv().await {
            match item {
                StreamItem::Frame { frame, .. } => {
                    let submitted = match frame {
                        Ok(Frame::Message(message)) => {
                            let wanted = match message.did() {
                                Some(did) => tracked
                                    .read()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .contains(did.as_str()),
                                None => true,
                            };
                            if wanted {
                                pipeline.submit(Ok(message)).await
                            } else {
                                if let Some(seq) = message.seq() {
                                    pipeline.skip(seq);
                                }
                                Ok(())
                            }
                        }
                        Ok(Frame::Error(error)) => {
                            tracing::warn!(source, error = %error.error, "error frame");
                            Ok(())
                        }
                        Err(error) => pipeline.submit(Err(error)).await,
                    };
                    if submitted.is_err() {
                        break;
                    }
                }
                StreamItem::Connected { cursor } => {
                    tracing::info!(source, ?cursor, "connected");
                }
                StreamItem::Disconnected {
                    reason, retry_in, ..
                } => {
                    tracing::warn!(source, %reason, ?retry_in, "disconnected");
                }
                StreamItem::Failed(error) => {
                    tracing::error!(source, %error, "stream failed");
                    break;
                }
                _ => {}
            }
        }
    });
    let (events_tx, events) = mpsc::channel(4096);
    let converter_mark = mark.clone();
    let converter = tokio::spawn(async move {
        while let Some(processed) = outcomes.recv().await {
            let event = convert(processed.outcome, processed.ticket);
            if let Some(event) = event {
                if events_tx.send(event).await.is_err() {
                    break;
                }
            }
        }
        drop(converter_mark);
    });
    Ok(LiveHandle {
        events,
        mark,
        verifier: Some(verifier),
        tasks: vec![feeder, converter],
        finite,
    })
}

/// An outcome as the coordinator needs it; `None` for messages with no repo and no ticket.
fn convert(outcome: Outcome, ticket: Option<Ticket>) -> Option<LiveEvent> {
    match outcome {
        Outcome::Accepted(accepted) => {
            let accepted = *accepted;
            let did = accepted.message.did()?.as_str().to_owned();
            let time_micros = accepted.message.time().and_then(parse_time);
            let body = if accepted.resync {
                LiveBody::Resync
            } else {
                match accepted.message {
                    Message::Commit(event) => {
                        let data = accepted
                            .commit
                            .as_ref()
                            .map(|checked| checked.commit.data.to_string());
                        let blocks = accepted.commit.map(|checked| checked.blocks);
                        let ops: Option<Vec<LiveOp>> = event
                            .ops
                            .iter()
                            .map(|op| live_op(op, blocks.as_ref()))
                            .collect();
                        match ops {
                            Some(ops) => LiveBody::Commit {
                                rev: event.rev.as_str().to_owned(),
                                data,
                                ops,
                            },
                            // A record the commit does not carry (only `off` mode lets such a
                            // commit through), or one that does not decode: the repo is fetched
                            // again rather than the op dropped.
                            None => LiveBody::Resync,
                        }
                    }
                    Message::Identity(_) => LiveBody::Identity,
                    Message::Account(account) => LiveBody::Account {
                        active: account.active,
                        status: account.status,
                    },
                    _ => LiveBody::Nothing,
                }
            };
            Some(LiveEvent {
                did,
                time_micros,
                body,
                ticket,
            })
        }
        Outcome::Rejected(rejected) => {
            let did = rejected.did.as_ref().map(|d| d.as_str().to_owned());
            match did {
                Some(did) => Some(LiveEvent {
                    did,
                    time_micros: None,
                    body: if rejected.resync {
                        LiveBody::Resync
                    } else {
                        LiveBody::Nothing
                    },
                    ticket,
                }),
                None => ticket.map(|ticket| LiveEvent {
                    did: String::new(),
                    time_micros: None,
                    body: LiveBody::Nothing,
                    ticket: Some(ticket),
                }),
            }
        }
    }
}

/// One op with its record as JSON; `None` when a create or update's record is missing from the
/// slice or is not valid DAG-CBOR, or the path has no collection.
fn live_op(op: &RepoOp, blocks: Option<&butterfly_repo::CarSlice>) -> Option<LiveOp> {
    let (collection, rkey) = op.path().split_once('/')?;
    let (action, cid) = match op {
        RepoOp::Create { cid, .. } => (Action::Create, Some(cid)),
        RepoOp::Update { cid, .. } => (Action::Update, Some(cid)),
        RepoOp::Delete { .. } => (Action::Delete, None),
    };
    let value = cid
        .and_then(|cid| blocks?.get(cid))
        .and_then(|bytes| Value::from_cbor(bytes).ok());
    if action != Action::Delete && value.is_none() {
        return None;
    }
    Some(LiveOp {
        collection: collection.to_owned(),
        rkey: rkey.to_owned(),
        action,
        cid: cid.map(|c| c.to_string()),
        json: value.as_ref().map(Value::to_json_string),
    })
}

/// RFC 3339 to µs since the epoch.
fn parse_time(text: &str) -> Option<i64> {
    let datetime = butterfly_syntax::Datetime::parse(text).ok()?;
    Some(datetime.timestamp_micros())
}

/// The verifier's state for a repo whose data the store holds at `rev` / `data`.
pub(crate) fn repo_state(rev: &str, data: &str, status: &str) -> Option<RepoState> {
    Some(RepoState {
        rev: Some(butterfly_syntax::Tid::parse(rev).ok()?),
        data: Some(butterfly_data::parse_cid_str(data).ok()?),
        status: if status == "active" {
            AccountStatus::Active
        } else {
            AccountStatus::Inactive(status.to_owned())
        },
        needs_resync: false,
    })
}

/// Starts following a Jetstream `/subscribe` URL from `cursor` (µs).
pub(crate) fn start_jetstream(
    url: &str,
    cursor: Option<i64>,
    tracked: Tracked,
    allow_private_network: bool,
    stats: Arc<crate::Stats>,
) -> Result<LiveHandle, butterfly_stream::Error> {
    let config = JetstreamConfig {
        cursor,
        stream: StreamConfig::with_private_network(allow_private_network),
        ..JetstreamConfig::default()
    };
    let (connection, mut items) = jetstream::subscribe(url, config)?;
    let mark = Arc::new(LowWaterMark::new(cursor));
    let feeder_mark = mark.clone();
    let (events_tx, events) = mpsc::channel(4096);
    let feeder = tokio::spawn(async move {
        let _connection = connection;
        let mut last = cursor;
        while let Some(item) = items.recv().await {
            let JetstreamItem::Event { event, .. } = item else {
                continue;
            };
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    // Counted where the relay path counts verifier rejections.
                    stats
                        .rejected
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(%error, "undecodable Jetstream event");
                    continue;
                }
            };
            // A reconnection rewinds a little; what was seen is skipped.
            if last.is_some_and(|last| event.time_us <= last) {
                continue;
            }
            last = Some(event.time_us);
            let did = event.did.as_str().to_owned();
            let wanted = tracked
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&did);
            if !wanted {
                feeder_mark.pass(event.time_us);
                continue;
            }
            let ticket = Some(feeder_mark.begin(event.time_us));
            let body = match event.kind {
                EventKind::Commit(commit) => {
                    let action = match commit.operation {
                        Operation::Create => Action::Create,
                        Operation::Update => Action::Update,
                        Operation::Delete => Action::Delete,
                    };
                    LiveBody::Commit {
                        rev: commit.rev.as_str().to_owned(),
                        data: None,
                        ops: vec![LiveOp {
                            collection: commit.collection.as_str().to_owned(),
                            rkey: commit.rkey.as_str().to_owned(),
                            action,
                            cid: commit.cid.map(|c| c.as_str().to_owned()),
                            json: commit.record.as_ref().map(|r| r.to_string()),
                        }],
                    }
                }
                EventKind::Identity(_) => LiveBody::Identity,
                EventKind::Account(account) => LiveBody::Account {
                    active: account.active,
                    status: account.status,
                },
                _ => LiveBody::Nothing,
            };
            let event = LiveEvent {
                did,
                time_micros: Some(event.time_us),
                body,
                ticket,
            };
            if events_tx.send(event).await.is_err() {
                break;
            }
        }
    });
    Ok(LiveHandle {
        events,
        mark,
        verifier: None,
        tasks: vec![feeder],
        finite: false,
    })
}
