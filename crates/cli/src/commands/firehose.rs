//! `butterfly firehose`: follow, verify, record and inspect event streams.

use super::firehose_json;
use anyhow::Context;
use butterfly_firehose::{decode_frame, Frame, FrameLogReader};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FirehoseArgs {
    #[command(subcommand)]
    command: Option<FirehoseCommand>,
}

#[derive(Debug, Subcommand)]
pub enum FirehoseCommand {
    /// Decode a frame log offline, with no identity lookups: one JSON line per frame, with what sync
    /// 1.1 inversion computes for each commit.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A frame log (each frame preceded by its length as a 4-byte big-endian integer).
    frames: PathBuf,
}

pub fn run(args: FirehoseArgs) -> anyhow::Result<bool> {
    match args.command {
        Some(FirehoseCommand::Inspect(args)) => inspect(args),
        None => anyhow::bail!("not yet"),
    }
}

/// Prints one line per frame; returns false if any frame failed to decode.
fn inspect(args: InspectArgs) -> anyhow::Result<bool> {
    let file = std::fs::File::open(&args.frames)
        .with_context(|| format!("opening {}", args.frames.display()))?;
    let reader = FrameLogReader::new(std::io::BufReader::new(file));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut all_decoded = true;
    for (index, frame) in reader.enumerate() {
        let frame = frame.with_context(|| format!("reading {}", args.frames.display()))?;
        let line = match decode_frame(&frame) {
            Ok(Frame::Message(message)) => firehose_json::inspected(&message),
            Ok(Frame::Error(error)) => serde_json::json!({
                "type": "error",
                "error": error.error,
                "message": error.message,
            }),
            Err(error) => {
                all_decoded = false;
                serde_json::json!({"frame": index, "type": "malformed", "error": error.to_string()})
            }
        };
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(all_decoded)
}
