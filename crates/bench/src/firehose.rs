//! `butterfly-bench firehose`: decode and verification throughput on a frame log.
//!
//! Frames are read into memory first, so that only decoding and verification are timed. Three
//! figures: decode-only frames/s (one thread), fully verified commits/s through one verifier on one
//! thread, and through the [`Pipeline`] on a multi-threaded runtime (parallel across repos, in order
//! within each), which is how `butterfly firehose` runs.

use anyhow::{bail, Context};
use butterfly_firehose::keys::StaticKeys;
use butterfly_firehose::{
    decode_frame, Frame, FrameLogReader, Outcome, Pipeline, PipelineConfig, Verifier,
    VerifierConfig, VerifyMode,
};
use std::path::Path;
use std::process::{Command, Stdio};
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

/// Our figures, for the side-by-side table.
#[derive(Debug, Clone, Copy)]
pub struct Ours {
    pub frames: u64,
    pub decode: Duration,
    pub serial: Duration,
    pub serial_commits: u64,
    pub pipeline: Duration,
    pub pipeline_commits: u64,
    pub threads: usize,
}

/// One measurement of a peer, as `peers-bench` and `sync-bench.mjs` print it (one JSON line).
#[derive(Debug, Clone)]
pub struct PeerFigure {
    pub peer: String,
    pub version: String,
    pub phase: String,
    pub threads: u64,
    pub frames: u64,
    pub commits: u64,
    pub verified: u64,
    pub rejected: u64,
    pub seconds: f64,
    pub iterations: u64,
    pub steps: String,
}

impl PeerFigure {
    fn parse(line: &str) -> anyhow::Result<PeerFigure> {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        let s = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Ok(PeerFigure {
            peer: s("peer"),
            version: s("version"),
            phase: s("phase"),
            threads: v["threads"].as_u64().unwrap_or(1),
            frames: n("frames"),
            commits: n("commits"),
            verified: n("verified"),
            rejected: n("rejected"),
            seconds: v["seconds"].as_f64().unwrap_or(f64::NAN),
            iterations: v["iterations"].as_u64().unwrap_or(1),
            steps: s("steps"),
        })
    }

    /// frames/s for decode, verified commits/s for verify.
    fn rate(&self) -> f64 {
        let n = if self.phase == "verify" {
            self.verified
        } else {
            self.frames
        };
        n as f64 / self.seconds
    }
}

fn run_json_lines(command: &mut Command, what: &str) -> anyhow::Result<Vec<PeerFigure>> {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !output.status.success() {
        bail!("{what} failed ({})", output.status);
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(PeerFigure::parse)
        .collect()
}

/// `@atproto/sync` through `js-sync/sync-bench.mjs`, on the Node 22 of `shared/peers`; installs the
/// script's pinned packages (`npm ci`) the first time.
pub fn run_js(
    frames: &Path,
    identities: &Path,
    shared_peers: &Path,
    iterations: u32,
    threads: usize,
) -> anyhow::Result<Vec<PeerFigure>> {
    let node = crate::peers_node(shared_peers)?;
    let node_bin = node.parent().context("node has a directory")?.to_owned();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("js-sync");
    let path = match std::env::var_os("PATH") {
        Some(p) => {
            let mut dirs = vec![std::fs::canonicalize(&node_bin)?];
            dirs.extend(std::env::split_paths(&p));
            std::env::join_paths(dirs)?
        }
        None => node_bin.clone().into_os_string(),
    };
    if !dir.join("node_modules/@atproto/sync").exists() {
        eprintln!(
            "installing @atproto/sync into {} (npm ci) ...",
            dir.display()
        );
        let status = Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .env("PATH", &path)
            .stdout(Stdio::null())
            .status()
            .context("running npm")?;
        if !status.success() {
            bail!("npm ci in {} failed", dir.display());
        }
    }
    eprintln!("running @atproto/sync (Node) on the same frames ...");
    run_json_lines(
        Command::new(&node)
            .arg(dir.join("sync-bench.mjs"))
            .arg(frames)
            .arg(identities)
            .args(["--iterations", &iterations.to_string()])
            .args(["--threads", &threads.to_string()])
            .env("PATH", &path),
        "sync-bench.mjs",
    )
}

/// jacquard-repo and rsky-repo through `benches/peers` (its own cargo workspace), built in release
/// the first time. Its target directory is `$PEERS_TARGET_DIR`, else `$CARGO_TARGET_DIR`, else
/// `benches/peers/target`.
pub fn run_rust_peers(
    frames: &Path,
    identities: &Path,
    iterations: u32,
    threads: usize,
) -> anyhow::Result<Vec<PeerFigure>> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/peers/Cargo.toml");
    let target = std::env::var_os("PEERS_TARGET_DIR")
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR"))
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/peers/target"),
            std::path::PathBuf::from,
        );
    let binary = target.join("release/peers-bench");
    if !binary.exists() {
        eprintln!(
            "building peers-bench (jacquard-repo, rsky-repo) into {} ...",
            target.display()
        );
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "--manifest-path"])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .context("running cargo")?;
        if !status.success() || !binary.exists() {
            bail!("building {} failed", manifest.display());
        }
    }
    eprintln!("running peers-bench on the same frames ...");
    run_json_lines(
        Command::new(&binary)
            .arg(frames)
            .arg(identities)
            .args(["--iterations", &iterations.to_string()])
            .args(["--threads", &threads.to_string()]),
        "peers-bench",
    )
}

/// The side-by-side table: each peer's rate next to ours, and ours / theirs.
pub fn print_side_by_side(ours: &Ours, figures: &[PeerFigure]) {
    let secs = |d: Duration| d.as_secs_f64();
    let our_rate = |phase: &str, threads: u64| -> Option<f64> {
        match (phase, threads) {
            ("decode", 1) => Some(ours.frames as f64 / secs(ours.decode)),
            ("verify", 1) => Some(ours.serial_commits as f64 / secs(ours.serial)),
            ("verify", t) if t == ours.threads as u64 => {
                Some(ours.pipeline_commits as f64 / secs(ours.pipeline))
            }
            _ => None,
        }
    };
    println!();
    println!(
        "side by side on the same frames (each peer: best of its runs); ratio = butterfly / peer (>1: butterfly is faster)"
    );
    println!(
        "{:<24} {:<30} {:>5} {:>12} {:>12} {:>8}",
        "peer", "measurement", "runs", "peer", "butterfly", "ratio"
    );
    let mut seen: Vec<(String, String)> = Vec::new();
    for f in figures {
        let measurement = match f.phase.as_str() {
            "decode" => format!("decode frames/s ({}t)", f.threads),
            _ => format!("verified commits/s ({}t)", f.threads),
        };
        let theirs = f.rate();
        let name = format!("{} {}", f.peer, f.version);
        let mine = our_rate(&f.phase, f.threads);
        let ratio = mine.map_or_else(|| "-".to_owned(), |m| format!("{:.1}x", m / theirs));
        let mine = mine.map_or_else(|| "-".to_owned(), |m| format!("{m:.0}"));
        let flag = if f.rejected > 0 {
            format!("  ({} rejected)", f.rejected)
        } else if f.phase == "verify" && f.verified < f.commits {
            format!("  ({} of {} commits verified)", f.verified, f.commits)
        } else {
            String::new()
        };
        println!(
            "{name:<24} {measurement:<30} {:>5} {theirs:>12.0} {mine:>12} {ratio:>8}{flag}",
            f.iterations
        );
        if f.phase == "verify" && f.threads == 1 {
            seen.push((name, f.steps.clone()));
        }
    }
    println!();
    println!("what each peer's \"verify\" covers:");
    println!(
        "  butterfly: decode; CAR slice parse with every block hash checked; commit decode, DID + rev match; rev order + clock skew; signature; sync 1.1 inversion of the ops == prevData; prevData chain; #sync signature; #account status"
    );
    for (name, steps) in seen {
        println!("  {name}: {steps}");
    }
}
