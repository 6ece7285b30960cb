//! `butterfly firehose`: follow, verify, record and inspect event streams.

use super::firehose_json;
use super::network::IdentityArgs;
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
    #[command(flatten)]
    follow: FollowArgs,
}

/// Flags for following a stream.
#[derive(Debug, Args)]
pub struct FollowArgs {
    /// A relay or PDS: an http(s) base URL or the ws(s) URL of subscribeRepos; or `file:PATH` to
    /// replay a frame log.
    #[arg(long, value_name = "URL|file:PATH", conflicts_with = "jetstream")]
    source: Option<String>,
    /// A Jetstream `/subscribe` URL instead: trusted JSON events, not verified.
    #[arg(long, value_name = "URL")]
    jetstream: Option<String>,
    /// Resume after this seq (for Jetstream: a unix time in microseconds).
    #[arg(long)]
    cursor: Option<i64>,
    /// Only print ops of these collections (NSIDs, or prefixes like `app.bsky.feed.*`); commits
    /// left with no ops are not printed.
    #[arg(long, value_delimiter = ',', value_name = "NSID,...")]
    collections: Option<Vec<String>>,
    /// Only these repos.
    #[arg(long, value_delimiter = ',', value_name = "DID,...")]
    dids: Option<Vec<String>>,
    /// How much to check: strict (sync 1.1 in full), lenient (also accept pre-1.1 commits without
    /// prevData when signed), off (trust the upstream).
    #[arg(long, default_value = "strict", value_name = "strict|lenient|off")]
    verify: butterfly_firehose::VerifyMode,
    /// A JSON array of DID documents to take signing keys from, instead of resolving DIDs (offline
    /// verification).
    #[arg(long, value_name = "DOCS.json")]
    identities: Option<PathBuf>,
    /// Append every frame received, exactly as received, to this frame log.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Write one JSON line per rejected message here: {"seq","type","did","reason","detail",...}.
    #[arg(long, value_name = "FILE")]
    rejections: Option<PathBuf>,
    /// Stop after printing this many events.
    #[arg(long)]
    limit: Option<u64>,
    /// Print no connection notices or summary on stderr.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    identity: IdentityArgs,
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

#[path = "firehose_follow.rs"]
mod follow;
#[path = "firehose_jetstream.rs"]
mod jetstream;

pub fn run(args: FirehoseArgs) -> anyhow::Result<bool> {
    match args.command {
        Some(FirehoseCommand::Inspect(args)) => inspect(args),
        None => follow::run(args.follow),
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
