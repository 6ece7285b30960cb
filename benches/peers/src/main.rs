//! `peers-bench FRAMES.log DOCS.json [--iterations N] [--threads N] [--peer NAME]`
//!
//! Decode-only frames/s and verified commits/s of other Rust atproto crates on a Butterfly frame log
//! (each frame preceded by its length as 4 big-endian bytes), for side-by-side figures with
//! `butterfly-bench firehose --peers`. One JSON line per measurement on stdout; progress and the
//! first few rejections on stderr.
//!
//! Each peer runs on the same frames, all in memory before timing starts. Both peers' APIs work on
//! one commit per call with no parallelism of their own, so the multi-threaded figure splits the
//! frames by a hash of the repo DID over N OS threads (each with its own single-threaded tokio
//! runtime and its own per-repo state), which keeps each repo's commits in order. Splitting is done
//! before the clock starts.

mod jacquard;
mod rsky;

use anyhow::{bail, Context};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::Path;
use std::time::{Duration, Instant};

/// What a run saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub frames: u64,
    pub commits: u64,
    /// Commits that passed every check.
    pub verified: u64,
    /// Messages that failed a check (any type).
    pub rejected: u64,
    /// The first few reasons, for stderr.
    pub errors: Vec<String>,
}

impl Tally {
    pub fn reject(&mut self, what: impl FnOnce() -> String) {
        self.rejected += 1;
        if self.errors.len() < 5 {
            self.errors.push(what());
        }
    }

    fn merge(&mut self, other: Tally) {
        self.frames += other.frames;
        self.commits += other.commits;
        self.verified += other.verified;
        self.rejected += other.rejected;
        for e in other.errors {
            if self.errors.len() < 5 {
                self.errors.push(e);
            }
        }
    }
}

/// What the harness keeps per repo for the checks the crates leave to their callers: the last
/// accepted rev and data root (the `prevData` chain).
#[derive(Debug, Default, Clone)]
pub struct Held {
    pub rev: String,
    pub data: Option<cid::Cid>,
}

/// The rev-order and `prevData` chain checks, done the same way for every peer.
pub fn check_chain(
    held: Option<&Held>,
    rev: &str,
    prev_data: Option<cid::Cid>,
) -> Result<(), String> {
    let Some(held) = held else { return Ok(()) };
    if rev <= held.rev.as_str() {
        return Err(format!("rev {rev} is not newer than {}", held.rev));
    }
    match (held.data, prev_data) {
        (Some(h), Some(p)) if h != p => Err(format!("prevData {p} but the held data is {h}")),
        (Some(h), None) => Err(format!(
            "a first commit (no prevData) for a repo held at {h}"
        )),
        _ => Ok(()),
    }
}

/// One peer crate: how it decodes and verifies.
pub trait Peer: Sync {
    const NAME: &'static str;
    const VERSION: &'static str;
    const DECODE_STEPS: &'static str;
    const VERIFY_STEPS: &'static str;
    /// Decodes every frame, in order.
    fn decode_all(&self, frames: &[&[u8]]) -> Tally;
    /// Decodes and verifies every frame, in order, with fresh per-repo state.
    fn verify_all(&self, frames: &[&[u8]], keys: &Keys) -> Tally;
}

/// Signing keys as `did:key` strings, by DID.
pub type Keys = HashMap<String, String>;

fn load_frames(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut frames = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            bail!("{}: truncated length prefix", path.display());
        };
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            bail!("{}: truncated frame", path.display());
        }
        frames.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    Ok(frames)
}

/// DID documents (a JSON array) to `did:key` strings, with Butterfly's key parser (Multikey and the
/// legacy `EcdsaSecp256k1VerificationKey2019` forms). Not timed.
fn load_keys(path: &Path) -> anyhow::Result<Keys> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let docs: Vec<serde_json::Value> = serde_json::from_slice(&bytes)?;
    let mut keys = Keys::new();
    for doc in docs {
        let id = doc["id"].as_str().context("a DID document without id")?;
        let methods = doc["verificationMethod"].as_array();
        let method = methods
            .into_iter()
            .flatten()
            .find(|m| {
                m["id"]
                    .as_str()
                    .is_some_and(|mid| mid == "#atproto" || mid == format!("{id}#atproto"))
            })
            .with_context(|| format!("{id}: no #atproto verification method"))?;
        let kind = method["type"].as_str().unwrap_or("Multikey");
        let multibase = method["publicKeyMultibase"]
            .as_str()
            .with_context(|| format!("{id}: no publicKeyMultibase"))?;
        let key = butterfly_crypto::PublicKey::from_did_doc_method(kind, multibase)
            .map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
        keys.insert(id.to_owned(), key.to_did_key());
    }
    Ok(keys)
}

/// The repo DID a frame is about, for splitting across threads (not timed; a neutral decoder).
fn frame_did(frame: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Body {
        repo: Option<String>,
        did: Option<String>,
    }
    let mut cursor = std::io::Cursor::new(frame);
    let _header: rsky::Header = serde_ipld_dagcbor::de::from_reader_once(&mut cursor).ok()?;
    let body: Body = serde_ipld_dagcbor::from_slice(&frame[cursor.position() as usize..]).ok()?;
    body.repo.or(body.did)
}

fn split_by_did<'a>(frames: &[&'a [u8]], threads: usize) -> Vec<Vec<&'a [u8]>> {
    let hasher = std::collections::hash_map::RandomState::new();
    let mut shards = vec![Vec::new(); threads];
    for frame in frames {
        let shard = frame_did(frame).map_or(0, |did| hasher.hash_one(did) as usize % threads);
        shards[shard].push(*frame);
    }
    shards
}

fn best(iterations: u32, mut run: impl FnMut() -> Tally) -> (Duration, Tally) {
    let mut best: Option<(Duration, Tally)> = None;
    for _ in 0..iterations.max(1) {
        let start = Instant::now();
        let tally = run();
        let elapsed = start.elapsed();
        if best.as_ref().is_none_or(|(t, _)| elapsed < *t) {
            best = Some((elapsed, tally));
        }
    }
    best.unwrap_or_default()
}

fn report<P: Peer>(phase: &str, threads: usize, time: Duration, tally: &Tally, iterations: u32) {
    let secs = time.as_secs_f64();
    let line = serde_json::json!({
        "peer": P::NAME,
        "version": P::VERSION,
        "phase": phase,
        "threads": threads,
        "frames": tally.frames,
        "commits": tally.commits,
        "verified": tally.verified,
        "rejected": tally.rejected,
        "seconds": secs,
        "frames_per_s": tally.frames as f64 / secs,
        "commits_per_s": if phase == "verify" { tally.verified as f64 / secs } else { tally.commits as f64 / secs },
        "iterations": iterations,
        "steps": if phase == "decode" { P::DECODE_STEPS } else { P::VERIFY_STEPS },
    });
    println!("{line}");
    for e in &tally.errors {
        eprintln!("  {} {phase} ({threads} threads) rejected: {e}", P::NAME);
    }
}

fn run_peer<P: Peer>(peer: &P, frames: &[&[u8]], keys: &Keys, iterations: u32, threads: usize) {
    eprintln!("{} {}: decode ...", P::NAME, P::VERSION);
    let (time, tally) = best(iterations, || peer.decode_all(frames));
    report::<P>("decode", 1, time, &tally, iterations);

    eprintln!("{} {}: verify, 1 thread ...", P::NAME, P::VERSION);
    let (time, tally) = best(iterations, || peer.verify_all(frames, keys));
    report::<P>("verify", 1, time, &tally, iterations);

    if threads > 1 {
        eprintln!("{} {}: verify, {threads} threads ...", P::NAME, P::VERSION);
        let shards = split_by_did(frames, threads);
        let (time, tally) = best(iterations, || {
            std::thread::scope(|scope| {
                let handles: Vec<_> = shards
                    .iter()
                    .map(|shard| scope.spawn(|| peer.verify_all(shard, keys)))
                    .collect();
                let mut total = Tally::default();
                for h in handles {
                    match h.join() {
                        Ok(t) => total.merge(t),
                        Err(_) => total.reject(|| "a verifier thread panicked".into()),
                    }
                }
                total
            })
        });
        report::<P>("verify", threads, time, &tally, iterations);
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    let mut iterations = 3u32;
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut only: Option<String> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--iterations" | "-n" => iterations = args.next().context("--iterations N")?.parse()?,
            "--threads" => threads = args.next().context("--threads N")?.parse()?,
            "--peer" => only = Some(args.next().context("--peer NAME")?),
            "-h" | "--help" => {
                println!("usage: peers-bench FRAMES.log DOCS.json [--iterations N] [--threads N] [--peer jacquard-repo|rsky-repo]");
                return Ok(());
            }
            other if other.starts_with('-') => bail!("unknown option {other}"),
            _ => positional.push(arg),
        }
    }
    let [frames_path, docs_path] = positional.as_slice() else {
        bail!(
            "usage: peers-bench FRAMES.log DOCS.json [--iterations N] [--threads N] [--peer NAME]"
        );
    };
    let frames = load_frames(Path::new(frames_path))?;
    let keys = load_keys(Path::new(docs_path))?;
    let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    eprintln!(
        "peers-bench: {} frames, {} identities, best of {iterations}, {threads} threads",
        frames.len(),
        keys.len()
    );
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if wanted(jacquard::Jacquard::NAME) {
        run_peer(&jacquard::Jacquard, &frames, &keys, iterations, threads);
    }
    if wanted(rsky::Rsky::NAME) {
        run_peer(&rsky::Rsky, &frames, &keys, iterations, threads);
    }
    Ok(())
}
