//! `butterfly-bench firehose`: decode and verification throughput on a frame log.
//!
//! Frames are read into memory first, so that only decoding and verification are timed. Three
//! figures: decode-only frames/s (one thread), fully verified commits/s through one verifier on one
//! thread, and through the [`Pipeline`] on a multi-threaded runtime (parallel across repos, in order
//! within each), which is how `butterfly firehose` runs.

use anyhow::Context;
use butterfly_firehose::keys::StaticKeys;
use butterfly_firehose::{
    decode_frame, Frame, FrameLogReader, Outcome, Pipeline, PipelineConfig, Verifier,
    VerifierConfig, VerifyMode,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What one verification run saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub commits: u64,
    pub accepted: u64,
    pub rejected: u64,
}

pub fn load_frames(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    FrameLogReader::new(std::io::BufReader::new(file))
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", path.display()))
}

pub fn load_keys(path: &Path) -> anyhow::Result<Arc<StaticKeys>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Arc::new(StaticKeys::from_json_array(&bytes)?))
}

/// Decodes every frame; returns how many were commits.
pub fn decode_all(frames: &[Vec<u8>]) -> anyhow::Result<u64> {
    let mut commits = 0;
    for frame in frames {
        if let Frame::Message(butterfly_firehose::Message::Commit(_)) = decode_frame(frame)? {
            commits += 1;
        }
    }
    Ok(commits)
}

fn new_verifier(keys: &Arc<StaticKeys>, mode: VerifyMode) -> Arc<Verifier> {
    let config = VerifierConfig {
        mode,
        ..VerifierConfig::default()
    };
    Arc::new(Verifier::new(config, keys.clone()))
}

fn count(tally: &mut Tally, outcome: &Outcome) {
    let is_commit = match outcome {
        Outcome::Accepted(a) => {
            tally.accepted += 1;
            a.message.kind() == "#commit"
        }
        Outcome::Rejected(r) => {
            tally.rejected += 1;
            r.kind == "#commit"
        }
    };
    tally.commits += u64::from(is_commit);
}

/// One verifier, one thread, frames in order.
pub fn verify_serial(
    frames: &[Vec<u8>],
    keys: &Arc<StaticKeys>,
    mode: VerifyMode,
) -> anyhow::Result<Tally> {
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let verifier = new_verifier(keys, mode);
    let mut tally = Tally::default();
    runtime.block_on(async {
        for frame in frames {
            if let Frame::Message(message) = decode_frame(frame)? {
                count(&mut tally, &verifier.verify(message).await);
            }
        }
        anyhow::Ok(())
    })?;
    Ok(tally)
}

/// The pipeline on `threads` runtime threads.
pub fn verify_pipeline(
    frames: &[Vec<u8>],
    keys: &Arc<StaticKeys>,
    mode: VerifyMode,
    threads: usize,
) -> anyhow::Result<Tally> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .build()?;
    let verifier = new_verifier(keys, mode);
    runtime.block_on(async {
        let (mut pipeline, mut outcomes) =
            Pipeline::start(verifier, PipelineConfig::default(), None);
        let mark = pipeline.low_water_mark();
        let consumer = tokio::spawn(async move {
            let mut tally = Tally::default();
            while let Some(processed) = outcomes.recv().await {
                count(&mut tally, &processed.outcome);
                if let Some(ticket) = processed.ticket {
                    mark.finish(ticket);
                }
            }
            tally
        });
        for frame in frames {
            match decode_frame(frame) {
                Ok(Frame::Message(message)) => pipeline.submit(Ok(message)).await?,
                Ok(Frame::Error(_)) => {}
                Err(e) => pipeline.submit(Err(e)).await?,
            }
        }
        drop(pipeline);
        Ok(consumer.await?)
    })
}

pub fn rate(n: u64, time: Duration) -> String {
    format!("{:.0}/s", n as f64 / time.as_secs_f64())
}
