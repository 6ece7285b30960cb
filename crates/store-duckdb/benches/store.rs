//! Throughput and latency of the DuckDB store, printed as a table.
//!
//! `cargo bench -p butterfly-store-duckdb` loads 10,000 repos of 100 posts each (replies with a
//! mention, so every record has three links) as the engine sends a backfill: one chunk per repo,
//! about 245,760 records per batch (two DuckDB row groups, as the engine merges them). Then it
//! applies live batches of 1,000 changes (70% creates, 20% deletes, 10% updates) and times reads. Only `apply` and the reads are timed; making the batches is not.
//!
//! `BENCH_REPOS`, `BENCH_RECORDS` (per repo), `BENCH_LIVE_BATCHES` and `BENCH_DIR` (where the
//! temporary database goes) change the defaults.

use std::time::{Duration, Instant};

use butterfly_bench::{cpu_seconds, peak_rss};
use butterfly_store::{Action, BackfillChunk, Batch, Change, Page, Record, Store};
use butterfly_store_duckdb::DuckDbStore;

const BASE32_SORT: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";
const POST: &str = "app.bsky.feed.post";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (xorshift*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn base32(mut value: u64, len: usize, alphabet: &[u8; 32]) -> String {
    let mut out = vec![b'2'; len];
    for slot in out.iter_mut().rev() {
        *slot = alphabet[(value & 31) as usize];
        value >>= 5;
    }
    String::from_utf8(out).expect("base32 is ASCII")
}

fn did(repo: usize) -> String {
    let mut rng = Rng((repo as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let high = rng.next();
    let low = rng.next();
    format!(
        "did:plc:{}{}",
        base32(high, 12, b"abcdefghijklmnopqrstuvwxyz234567"),
        base32(low, 12, b"abcdefghijklmnopqrstuvwxyz234567")
    )
}

/// A TID: microseconds since the epoch and a clock id, sortable.
fn tid(micros: u64) -> String {
    base32((micros << 10) | 7, 13, BASE32_SORT)
}

fn cid(rng: &mut Rng) -> String {
    let mut text = String::from("bafyrei");
    for _ in 0..4 {
        text.push_str(&base32(rng.next(), 13, b"abcdefghijklmnopqrstuvwxyz234567"));
    }
    text
}

const WORDS: [&str; 16] = [
    "the", "sync", "engine", "follows", "every", "repo", "and", "keeps", "what", "matters",
    "posts", "likes", "today", "bluesky", "atproto", "data",
];

/// A reply with a mention facet: about 450 bytes of JSON with three links.
fn post_json(rng: &mut Rng, parent: &str, root: &str, mention: &str) -> String {
    let words: Vec<&str> = (0..12).map(|_| WORDS[rng.below(WORDS.len())]).collect();
    let text = format!("@friend {}", words.join(" "));
    let parent_cid = cid(rng);
    let root_cid = cid(rng);
    let langs = ["en", "ja", "pt", "de"][rng.below(4)];
    format!(
        r#"{{"$type":"app.bsky.feed.post","text":"{text}","reply":{{"root":{{"uri":"{root}","cid":"{root_cid}"}},"parent":{{"uri":"{parent}","cid":"{parent_cid}"}}}},"facets":[{{"index":{{"byteStart":0,"byteEnd":7}},"features":[{{"$type":"app.bsky.richtext.facet#mention","did":"{mention}"}}]}}],"langs":["{langs}"],"createdAt":"2024-11-20T10:00:00.000Z"}}"#
    )
}

struct World {
    dids: Vec<String>,
    rng: Rng,
    clock: u64,
}

impl World {
    fn post(&mut self, repo: usize) -> (String, String, String) {
        self.clock += 1;
        let rkey = tid(1_732_000_000_000_000 + self.clock);
        let other = self.rng.below(self.dids.len());
        let parent = format!("at://{}/{POST}/{}", self.dids[other], tid(self.clock / 2));
        let root = format!("at://{}/{POST}/{}", self.dids[other], tid(self.clock / 4));
        let mention = self.dids[self.rng.below(self.dids.len())].clone();
        let json = post_json(&mut self.rng, &parent, &root, &mention);
        let _ = repo;
        (rkey, cid(&mut self.rng), json)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

fn ms(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1e3)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, with little work.
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let n_repos = env_number("BENCH_REPOS", if quick { 200 } else { 10_000 });
    let per_repo = env_number("BENCH_RECORDS", 100);
    let n_live = env_number("BENCH_LIVE_BATCHES", if quick { 3 } else { 100 });
    // About 245,760 records per batch (the engine's merged transaction), one chunk per repo.
    let repos_per_batch = (245_760 / per_repo.max(1)).max(1);

    let dir = match std::env::var_os("BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let path = dir.path().join("bench.duckdb");
    let mut store = DuckDbStore::open(&path)?;
    let mut world = World {
        dids: (0..n_repos).map(did).collect(),
        rng: Rng(42),
        clock: 0,
    };
    let mut keys: Vec<(usize, String)> = Vec::with_capacity(n_repos * per_repo);

    // Backfill.
    let mut apply_time = Duration::ZERO;
    let mut n_records = 0usize;
    let mut batch_times = Vec::new();
    let wall = Instant::now();
    let mut cpu = 0.0;
    for first in (0..n_repos).step_by(repos_per_batch) {
        let mut backfill = Vec::new();
        for repo in first..(first + repos_per_batch).min(n_repos) {
            let mut records = Vec::with_capacity(per_repo);
            for _ in 0..per_repo {
                let (rkey, cid, json) = world.post(repo);
                keys.push((repo, rkey.clone()));
                records.push(Record {
                    did: world.dids[repo].clone(),
                    collection: POST.to_owned(),
                    rkey,
                    cid,
                    rev: tid(1_732_100_000_000_000),
                    json,
                    indexed_at: 1_732_100_000_000_000,
                });
            }
            n_records += records.len();
            backfill.push(BackfillChunk {
                did: world.dids[repo].clone(),
                replace: false,
                records,
                edges: Vec::new(),
            });
        }
        let batch = Batch {
            backfill,
            kv: vec![("cursor".to_owned(), Some(first.to_string()))],
            ..Batch::default()
        };
        let cpu_before = cpu_seconds().unwrap_or(0.0);
        let start = Instant::now();
        store.apply(batch)?;
        let took = start.elapsed();
        cpu += cpu_seconds().unwrap_or(0.0) - cpu_before;
        apply_time += took;
        batch_times.push(took);
    }
    let wall = wall.elapsed();
    batch_times.sort();
    println!(
        "backfill: {n_records} records in {n_repos} repos, batches of {repos_per_batch} repos"
    );
    println!(
        "  {:.0} records/s in apply ({:.2} s), {:.0} records/s with batch making ({:.2} s)",
        n_records as f64 / apply_time.as_secs_f64(),
        apply_time.as_secs_f64(),
        n_records as f64 / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!("  {cpu:.1} CPU seconds in apply (all threads)");
    println!(
        "  batch p50 {} p99 {} max {}",
        ms(percentile(&batch_times, 0.5)),
        ms(percentile(&batch_times, 0.99)),
        ms(percentile(&batch_times, 1.0))
    );
    println!(
        "  peak RSS so far {}",
        peak_rss().unwrap_or_else(|| "unknown".to_owned())
    );

    // Live.
    let mut latencies = Vec::new();
    let mut n_changes = 0usize;
    let mut live_time = Duration::ZERO;
    for _ in 0..n_live {
        let mut changes = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let roll = world.rng.below(100);
            let action = if roll < 70 || keys.is_empty() {
                Action::Create
            } else if roll < 90 {
                Action::Delete
            } else {
                Action::Update
            };
            let (repo, rkey, json, cid) = match action {
                Action::Create => {
                    let repo = world.rng.below(n_repos);
                    let (rkey, cid, json) = world.post(repo);
                    keys.push((repo, rkey.clone()));
                    (repo, rkey, Some(json), Some(cid))
                }
                Action::Delete => {
                    let idx = world.rng.below(keys.len());
                    let (repo, rkey) = keys.swap_remove(idx);
                    (repo, rkey, None, None)
                }
                Action::Update => {
                    let (repo, rkey) = keys[world.rng.below(keys.len())].clone();
                    let (_, cid, json) = world.post(repo);
                    (repo, rkey, Some(json), Some(cid))
                }
            };
            changes.push(Change {
                did: world.dids[repo].clone(),
                collection: POST.to_owned(),
                rkey,
                action,
                cid,
                rev: tid(1_732_200_000_000_000 + world.clock),
                json,
                live: true,
                indexed_at: 1_732_200_000_000_000,
            });
        }
        n_changes += changes.len();
        let batch = Batch {
            changes,
            kv: vec![("cursor".to_owned(), Some(world.clock.to_string()))],
            ..Batch::default()
        };
        let start = Instant::now();
        store.apply(batch)?;
        let took = start.elapsed();
        live_time += took;
        latencies.push(took);
    }
    latencies.sort();
    println!("live: {n_live} batches of 1,000 changes (70% create, 20% delete, 10% update)");
    println!(
        "  {:.0} changes/s; batch p50 {} p99 {}",
        n_changes as f64 / live_time.as_secs_f64(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99))
    );

    // Reads.
    let mut gets = Vec::new();
    for _ in 0..2000 {
        let (repo, rkey) = &keys[world.rng.below(keys.len())];
        let start = Instant::now();
        let found = store.get_record(&world.dids[*repo], POST, rkey)?;
        gets.push(start.elapsed());
        anyhow::ensure!(found.is_some(), "get_record found nothing");
    }
    gets.sort();
    let mut lists = Vec::new();
    for _ in 0..500 {
        let (repo, _) = &keys[world.rng.below(keys.len())];
        let page = Page {
            cursor: None,
            limit: 50,
            reverse: false,
        };
        let start = Instant::now();
        let found = store.list_records(&world.dids[*repo], POST, page)?;
        lists.push(start.elapsed());
        anyhow::ensure!(!found.is_empty(), "list_records found nothing");
    }
    lists.sort();
    let mut newest = Vec::new();
    for _ in 0..500 {
        let (repo, _) = &keys[world.rng.below(keys.len())];
        let start = Instant::now();
        store.newest_rkeys(&world.dids[*repo], POST, 10)?;
        newest.push(start.elapsed());
    }
    newest.sort();
    let mut backlinks = Vec::new();
    for _ in 0..50 {
        let target = &world.dids[world.rng.below(n_repos)];
        let start = Instant::now();
        store.count_backlinks(target, None, None)?;
        backlinks.push(start.elapsed());
    }
    backlinks.sort();
    let start = Instant::now();
    let summary = store.summary()?;
    let summary_time = start.elapsed();
    println!("reads on {} records:", summary.records);
    for (what, times) in [
        ("get_record", &gets),
        ("list_records (50)", &lists),
        ("newest_rkeys (10)", &newest),
        ("count_backlinks (a DID)", &backlinks),
    ] {
        println!(
            "  {what}: p50 {} p99 {}",
            ms(percentile(times, 0.5)),
            ms(percentile(times, 0.99))
        );
    }
    println!("  summary: {}", ms(summary_time));
    drop(store);
    let size: u64 = std::fs::read_dir(dir.path())?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.metadata().ok())
        .map(|meta| meta.len())
        .sum();
    println!("file size {:.0} MiB", size as f64 / (1 << 20) as f64);
    println!(
        "peak RSS {}",
        peak_rss().unwrap_or_else(|| "unknown".to_owned())
    );
    Ok(())
}
