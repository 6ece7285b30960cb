//! `butterfly firehose` without a subcommand: read a stream, verify it, print what passes.
//!
//! Three tasks: the source (a WebSocket client or a frame-log replay) feeds this loop, which records
//! raw frames and submits decoded ones to the verification pipeline; a printer takes outcomes, writes
//! accepted events to stdout and rejections to their file, and only then finishes each event's
//! ticket, so the low-water mark reported at the end is a cursor that is safe to resume from.

use super::FollowArgs;
use crate::commands::firehose_json;
use anyhow::Context;
use butterfly_firehose::keys::{DirectoryKeys, KeySource, StaticKeys};
use butterfly_firehose::{
    Frame, FrameLogWriter, Outcome, Pipeline, PipelineConfig, Processed, Verifier, VerifierConfig,
};
use butterfly_stream::{StreamConfig, StreamItem};
use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

pub fn run(args: FollowArgs) -> anyhow::Result<bool> {
    let runtime = crate::commands::network::streaming_runtime()?;
    runtime.block_on(follow(args))
}

async fn follow(args: FollowArgs) -> anyhow::Result<bool> {
    if let Some(url) = &args.jetstream {
        return super::jetstream::run(url, &args).await;
    }
    let source = args
        .source
        .clone()
        .context("give --source URL, --source file:PATH or --jetstream URL")?;
    let keys: Arc<dyn KeySource> = match &args.identities {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Arc::new(StaticKeys::from_json_array(&bytes)?)
        }
        None => Arc::new(DirectoryKeys::new(Arc::new(args.identity.directory()?))),
    };
    let verifier = Arc::new(Verifier::new(
        VerifierConfig {
            mode: args.verify,
            ..VerifierConfig::default()
        },
        keys,
    ));
    let (mut pipeline, outcomes) = Pipeline::start(
        verifier.clone(),
        PipelineConfig {
            ordered: true,
            ..PipelineConfig::default()
        },
        args.cursor,
    );
    let mark = pipeline.low_water_mark();

    let (connection, mut items) = match source.strip_prefix("file:") {
        Some(path) => (
            None,
            butterfly_stream::replay_frame_log(std::path::Path::new(path), args.cursor, 256)?,
        ),
        None => {
            let config =
                StreamConfig::with_private_network(args.identity.network.allow_private_network);
            let (connection, items) =
                butterfly_stream::subscribe_repos(&source, args.cursor, config)?;
            (Some(connection), items)
        }
    };
    let mut recorder = match &args.record {
        Some(path) => Some(FrameLogWriter::new(BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ))),
        None => None,
    };
    let dids: Option<HashSet<String>> = args.dids.as_ref().map(|d| d.iter().cloned().collect());

    let (stop_tx, mut stop) = watch::channel(false);
    let printer = tokio::spawn(print_outcomes(
        outcomes,
        mark.clone(),
        Printer::new(&args)?,
        args.limit,
        stop_tx,
    ));
    let quiet = args.quiet;
    let mut failure = None;
    // One listener for the whole run: a new one per item would miss a Ctrl-C that arrives while
    // an item is being handled, and the default handler is already replaced.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let item = tokio::select! {
            item = items.recv() => item,
            _ = stop.changed() => None,
            _ = &mut interrupted => None,
        };
        let Some(item) = item else { break };
        match item {
            StreamItem::Frame { raw, frame } => {
                if let Some(recorder) = &mut recorder {
                    recorder.write_frame(&raw).context("recording a frame")?;
                    if items.is_empty() {
                        recorder.flush().context("recording a frame")?;
                    }
                }
                let submitted = match frame {
                    Ok(Frame::Message(message)) => {
                        let wanted = match (&dids, message.did()) {
                            (Some(dids), Some(did)) => dids.contains(did.as_str()),
                            _ => true,
                        };
                        if !wanted {
                            continue;
                        }
                        pipeline.submit(Ok(message)).await
                    }
                    Ok(Frame::Error(error)) => {
                        if !quiet {
                            eprintln!(
                                "butterfly: error frame {}: {}",
                                error.error,
                                error.message.unwrap_or_default()
                            );
                        }
                        Ok(())
                    }
                    Err(error) => pipeline.submit(Err(error)).await,
                };
                if submitted.is_err() {
                    break;
                }
            }
            StreamItem::Connected { cursor } if !quiet => {
                eprintln!("butterfly: connected to {source} (cursor {cursor:?})");
            }
            StreamItem::Disconnected {
                reason,
                retry_in,
                cursor,
            } if !quiet => {
                eprintln!(
                    "butterfly: disconnected: {reason}; retrying in {:.1} s from cursor {cursor:?}",
                    retry_in.as_secs_f64()
                );
            }
            StreamItem::Failed(error) => {
                failure = Some(error);
                break;
            }
            _ => {}
        }
    }
    if let Some(connection) = connection {
        connection.close().await;
    }
    drop(items);
    drop(pipeline);
    if let Some(recorder) = recorder {
        recorder.into_inner().context("flushing the recording")?;
    }
    let printed = printer.await.context("the printer task")??;
    if !quiet {
        let stats = verifier.stats();
        let mut summary = serde_json::json!({
            "printed": printed,
            "accepted": stats.accepted().into_iter().map(|(k, n)| (k.to_owned(), n.into())).collect::<serde_json::Map<String, serde_json::Value>>(),
            "rejected": stats.rejected().into_iter().map(|(r, n)| (r.as_str().to_owned(), n.into())).collect::<serde_json::Map<String, serde_json::Value>>(),
            "cursor": mark.get(),
        });
        if let Some(error) = &failure {
            summary["error"] = error.to_string().into();
        }
        eprintln!("butterfly: {summary}");
    }
    if let Some(error) = failure {
        return Err(error).context("reading the source");
    }
    Ok(true)
}

/// Where lines go.
struct Printer {
    out: BufWriter<std::io::Stdout>,
    rejections: Option<BufWriter<std::fs::File>>,
    collections: Option<Vec<String>>,
}

impl Printer {
    fn new(args: &FollowArgs) -> anyhow::Result<Printer> {
        let rejections = match &args.rejections {
            Some(path) => Some(BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            )),
            None => None,
        };
        Ok(Printer {
            out: BufWriter::new(std::io::stdout()),
            rejections,
            collections: args.collections.clone(),
        })
    }

    /// Writes the outcome's line; returns whether an event was printed.
    fn write(&mut self, outcome: &Outcome) -> anyhow::Result<bool> {
        match outcome {
            Outcome::Accepted(accepted) => {
                match firehose_json::accepted(accepted, self.collections.as_deref()) {
                    Some(line) => {
                        serde_json::to_writer(&mut self.out, &line)?;
                        self.out.write_all(b"\n")?;
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
            Outcome::Rejected(rejected) => {
                if let Some(file) = &mut self.rejections {
                    serde_json::to_writer(&mut *file, &firehose_json::rejected(rejected))?;
                    file.write_all(b"\n")?;
                }
                Ok(false)
            }
        }
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        if let Some(file) = &mut self.rejections {
            file.flush()?;
        }
        Ok(())
    }
}

/// Prints outcomes until the pipeline ends or `limit` events are printed; returns how many were.
async fn print_outcomes(
    mut outcomes: mpsc::Receiver<Processed>,
    mark: Arc<butterfly_firehose::LowWaterMark>,
    mut printer: Printer,
    limit: Option<u64>,
    stop: watch::Sender<bool>,
) -> anyhow::Result<u64> {
    let mut printed = 0u64;
    // Tickets of events whose lines are written but not yet flushed.
    let mut unflushed = Vec::new();
    while let Some(processed) = outcomes.recv().await {
        if limit.is_some_and(|limit| printed >= limit) {
            // Past the limit nothing more is printed, so nothing more counts as handled.
            continue;
        }
        printed += u64::from(printer.write(&processed.outcome)?);
        unflushed.extend(processed.ticket);
        let at_limit = limit.is_some_and(|limit| printed >= limit);
        if outcomes.is_empty() || unflushed.len() >= 4096 || at_limit {
            printer.flush()?;
            // Only now are these events handled: their lines are out (or their rejections noted).
            for ticket in unflushed.drain(..) {
                mark.finish(ticket);
            }
        }
        if at_limit {
            stop.send_replace(true);
        }
    }
    printer.flush()?;
    for ticket in unflushed {
        mark.finish(ticket);
    }
    Ok(printed)
}
