//! `butterfly sync`, `butterfly query` and `butterfly status`.
//!
//! `sync` builds the engine from flags (with `BUTTERFLY_*` variables and `butterfly.toml` below
//! them, see [`load_config_file`]), runs it until Ctrl-C (or, with `--once`, until the fixpoint is
//! stored), and shows progress on stderr.

use super::network::IdentityArgs;
use super::signals::StopSignals;
use anyhow::{bail, Context};
use butterfly_engine::{Engine, EngineConfig, LiveSource, Stats, StatsSnapshot, VerifyMode};
use butterfly_selector::Selector;
use butterfly_store::{StdoutStore, Store};
use butterfly_store_duckdb::DuckDbStore;
use clap::Args;
use sha2::{Digest, Sha256};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default database file.
pub const DEFAULT_DB: &str = "butterfly.duckdb";

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The selector document (JSON): which repos to follow and what to keep.
    #[arg(value_name = "SELECTOR.json", env = "BUTTERFLY_SELECTOR")]
    pub selector: PathBuf,
    /// Where to keep what is synced: `duckdb:PATH` (default `duckdb:butterfly.duckdb`) or `stdout`
    /// (one JSON line per change).
    #[arg(long, value_name = "duckdb:PATH|stdout", env = "BUTTERFLY_STORE")]
    pub store: Option<String>,
    /// Backfill to the fixpoint and exit, without following a stream.
    #[arg(long, env = "BUTTERFLY_ONCE", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::FalseyValueParser::new())]
    pub once: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// What a long-running command says on stderr, and where its settings file is: shared by `sync`
/// and `serve`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// No progress on stderr.
    #[arg(short, long, env = "BUTTERFLY_QUIET", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::FalseyValueParser::new())]
    pub quiet: bool,
    /// Log what the engine does (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// A config file with the same settings as these flags (default: ./butterfly.toml if present).
    #[arg(long, value_name = "FILE", env = "BUTTERFLY_CONFIG")]
    pub config: Option<PathBuf>,
}

impl OutputArgs {
    /// Logs to stderr at the level the flags ask for.
    pub fn init_logging(&self) {
        let level = match (self.quiet, self.verbose) {
            (true, _) => tracing::Level::ERROR,
            (false, 0) => tracing::Level::WARN,
            (false, 1) => tracing::Level::INFO,
            (false, _) => tracing::Level::DEBUG,
        };
        let _ = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
    }
}

/// How the engine follows the network: shared by `sync` and `serve`.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Follow this relay or PDS live: an http(s) base URL or a ws(s) subscribeRepos URL.
    #[arg(
        long,
        value_name = "URL",
        env = "BUTTERFLY_RELAY",
        conflicts_with = "jetstream"
    )]
    pub relay: Option<String>,
    /// Follow this Jetstream /subscribe URL live instead (trusted: nothing to verify).
    #[arg(long, value_name = "URL", env = "BUTTERFLY_JETSTREAM")]
    pub jetstream: Option<String>,
    /// Resume the stream after this seq (Jetstream: a unix time in µs) instead of the stored
    /// cursor. `--relay file:PATH` replays a frame log.
    #[arg(long, value_name = "N")]
    pub cursor: Option<i64>,
    /// How strictly commits are checked, live and in backfill.
    #[arg(long, value_enum, default_value = "strict", env = "BUTTERFLY_VERIFY")]
    pub verify: VerifyArg,
    /// Repos fetched at the same time.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 16,
        env = "BUTTERFLY_CONCURRENCY"
    )]
    pub concurrency: usize,
    /// getRepo calls in flight per PDS.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 4,
        env = "BUTTERFLY_PER_HOST"
    )]
    pub per_host: usize,
    /// Where getRepo CARs over 8 MiB are spooled while read (default: the system temp dir).
    #[arg(long, value_name = "DIR", env = "BUTTERFLY_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    #[command(flatten)]
    pub identity: IdentityArgs,
}

impl EngineArgs {
    /// The live source the flags name.
    pub fn live(&self) -> LiveSource {
        match (&self.relay, &self.jetstream) {
            (Some(url), _) => LiveSource::Relay(url.clone()),
            (None, Some(url)) => LiveSource::Jetstream(url.clone()),
            (None, None) => LiveSource::None,
        }
    }

    /// The engine's configuration from these flags.
    pub fn config(&self, once: bool) -> EngineConfig {
        EngineConfig {
            live: self.live(),
            verify: self.verify.into(),
            once,
            cursor: self.cursor,
            backfill_concurrency: self.concurrency.max(1),
            per_host_concurrency: self.per_host.max(1),
            spool_dir: self.spool_dir.clone(),
            allow_private_network: self.identity.network.allow_private_network,
            ..EngineConfig::default()
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum VerifyArg {
    Strict,
    Lenient,
    Off,
}

impl From<VerifyArg> for VerifyMode {
    fn from(arg: VerifyArg) -> VerifyMode {
        match arg {
            VerifyArg::Strict => VerifyMode::Strict,
            VerifyArg::Lenient => VerifyMode::Lenient,
            VerifyArg::Off => VerifyMode::Off,
        }
    }
}

/// Settings `butterfly.toml` may hold, each the name of a flag (`-` or `_`), and the variable it
/// stands in for.
const CONFIG_KEYS: &[(&str, &str)] = &[
    ("store", "BUTTERFLY_STORE"),
    ("relay", "BUTTERFLY_RELAY"),
    ("jetstream", "BUTTERFLY_JETSTREAM"),
    ("verify", "BUTTERFLY_VERIFY"),
    ("once", "BUTTERFLY_ONCE"),
    ("concurrency", "BUTTERFLY_CONCURRENCY"),
    ("per_host", "BUTTERFLY_PER_HOST"),
    ("spool_dir", "BUTTERFLY_SPOOL_DIR"),
    ("quiet", "BUTTERFLY_QUIET"),
    ("plc", "BUTTERFLY_PLC_URL"),
    ("handle_resolver", "BUTTERFLY_HANDLE_RESOLVER"),
    ("allow_private_network", "BUTTERFLY_ALLOW_PRIVATE_NETWORK"),
    ("selector", "BUTTERFLY_SELECTOR"),
    ("db", "BUTTERFLY_DB"),
    ("listen", "BUTTERFLY_LISTEN"),
    ("admin_token", "BUTTERFLY_ADMIN_TOKEN"),
    ("event_log", "BUTTERFLY_EVENT_LOG"),
    ("webhook", "BUTTERFLY_WEBHOOK"),
    ("webhook_secret", "BUTTERFLY_WEBHOOK_SECRET"),
    ("readers", "BUTTERFLY_READERS"),
];

/// Reads `butterfly.toml` (the file named by `--config` / `BUTTERFLY_CONFIG`, else `./butterfly.toml`
/// if it exists) into `BUTTERFLY_*` variables that are not already set, before the flags are
/// parsed. So the precedence is: flags, then the environment, then the file, then defaults.
pub fn load_config_file(args: &[std::ffi::OsString]) -> anyhow::Result<()> {
    let mut explicit: Option<PathBuf> = std::env::var_os("BUTTERFLY_CONFIG").map(PathBuf::from);
    for (i, arg) in args.iter().enumerate() {
        let text = arg.to_string_lossy();
        if let Some(value) = text.strip_prefix("--config=") {
            explicit = Some(PathBuf::from(value));
        } else if text == "--config" {
            explicit = args.get(i + 1).map(PathBuf::from);
        }
    }
    let path = match explicit {
        Some(path) => path,
        None if Path::new("butterfly.toml").exists() => PathBuf::from("butterfly.toml"),
        None => return Ok(()),
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    for (key, value) in table {
        let normalized = key.replace('-', "_");
        let Some((_, variable)) = CONFIG_KEYS.iter().find(|(name, _)| *name == normalized) else {
            let known: Vec<&str> = CONFIG_KEYS.iter().map(|(name, _)| *name).collect();
            bail!(
                "{}: unknown setting `{key}` (known: {})",
                path.display(),
                known.join(", ")
            );
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!(
                "{}: `{key}` must be a string, number or boolean, not a {}",
                path.display(),
                other.type_str()
            ),
        };
        if std::env::var_os(variable).is_none() {
            // Safe in edition 2021: set before any thread starts.
            std::env::set_var(variable, text);
        }
    }
    Ok(())
}

/// Opens the store a `--store` value names.
fn open_store(spec: Option<&str>) -> anyhow::Result<(Box<dyn Store>, bool)> {
    let spec = spec.unwrap_or("duckdb:butterfly.duckdb");
    if spec == "stdout" {
        return Ok((Box::new(StdoutStore::stdout()), true));
    }
    let path = spec.strip_prefix("duckdb:").unwrap_or(spec);
    if path.is_empty() {
        bail!("--store duckdb:PATH needs a path");
    }
    let store = DuckDbStore::open(Path::new(path))
        .with_context(|| format!("opening the database {path}"))?;
    Ok((Box::new(store), false))
}

/// Reads and checks a selector document. Also returns its origin (the SHA-256 of the text), by
/// which the engine knows whether a selector installed through the admin API replaced this one.
pub fn read_selector(path: &Path) -> anyhow::Result<(Selector, String)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let selector =
        Selector::from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((selector, hex::encode(Sha256::digest(text.as_bytes()))))
}

pub fn run_sync(args: SyncArgs) -> anyhow::Result<()> {
    args.output.init_logging();
    // The summary's `seconds` covers the whole run: opening the store (which may replay its
    // write-ahead log) and closing it (DuckDB's final checkpoint) included.
    let started = Instant::now();
    let (selector, origin) = read_selector(&args.selector)?;
    if !args.once && args.engine.live() == LiveSource::None {
        bail!("give --relay URL or --jetstream URL to follow the network live, or --once to backfill and exit");
    }
    let runtime = super::network::streaming_runtime()?;
    // Before the store opens: Ctrl-C during a long write-ahead-log replay then stops the run
    // cleanly once the store is open, rather than killing the process.
    let mut signals = {
        let _runtime = runtime.enter();
        StopSignals::install()
    };
    let (store, to_stdout) = open_store(args.store.as_deref())?;
    let mut config = args.engine.config(args.once);
    config.selector_origin = Some(origin);
    runtime.block_on(async {
        let directory = args.engine.identity.directory()?;
        let engine = Engine::new(config, selector, store, directory);
        let stats = engine.stats();
        let show = !args.output.quiet;
        let progress = show.then(|| tokio::spawn(show_progress(stats.clone(), to_stdout)));
        // Dropping the store closes it.
        let result = engine.run(signals.received()).await.map(drop);
        if let Some(progress) = progress {
            progress.abort();
        }
        if show {
            let s = stats.snapshot();
            eprintln!(
                "butterfly: {}",
                serde_json::json!({
                    "repos": s.repos_selected,
                    "backfilled": s.repos_backfilled,
                    "backfill_failures": s.backfill_failures,
                    "records_backfilled": s.records_backfilled,
                    "live_events": s.live_events,
                    "live_changes": s.live_changes,
                    "rejected": s.rejected,
                    "resyncs": s.resyncs,
                    "cursor": s.cursor,
                    "seconds": started.elapsed().as_secs_f64(),
                })
            );
        }
        result.map_err(anyhow::Error::from)
    })
}

/// Progress bars on a terminal; otherwise one status line every 10 seconds.
pub(crate) async fn show_progress(stats: Arc<Stats>, stdout_is_data: bool) {
    let terminal = std::io::stderr().is_terminal() && !stdout_is_data;
    let mut last = stats.snapshot();
    let mut last_at = Instant::now();
    if terminal {
        let bars = indicatif::MultiProgress::new();
        let style =
            indicatif::ProgressStyle::with_template("{prefix:>10} {bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        let repos = bars.add(indicatif::ProgressBar::new(0).with_style(style));
        repos.set_prefix("repos");
        let live = bars.add(indicatif::ProgressBar::new_spinner());
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = stats.snapshot();
            let rate = rates(&last, &now, last_at.elapsed());
            repos.set_length(now.repos_selected);
            repos.set_position(now.repos_selected.saturating_sub(now.repos_queued));
            repos.set_message(format!(
                "{} records ({:.0}/s)",
                now.records_backfilled, rate.0
            ));
            live.set_message(live_line(&now, rate.1));
            live.tick();
            last = now;
            last_at = Instant::now();
        }
    } else {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let now = stats.snapshot();
            let rate = rates(&last, &now, last_at.elapsed());
            eprintln!(
                "butterfly: repos {}/{} backfilled, {} queued; records {} ({:.0}/s); {}",
                now.repos_backfilled,
                now.repos_selected,
                now.repos_queued,
                now.records_backfilled,
                rate.0,
                live_line(&now, rate.1)
            );
            last = now;
            last_at = Instant::now();
        }
    }
}

fn rates(before: &StatsSnapshot, now: &StatsSnapshot, elapsed: Duration) -> (f64, f64) {
    let seconds = elapsed.as_secs_f64().max(1e-3);
    (
        (now.records_backfilled - before.records_backfilled) as f64 / seconds,
        (now.live_events - before.live_events) as f64 / seconds,
    )
}

fn live_line(now: &StatsSnapshot, events_per_second: f64) -> String {
    let lag = now
        .lag_seconds
        .map_or("-".to_owned(), |lag| format!("{lag:.1} s"));
    let cursor = now.cursor.map_or("-".to_owned(), |c| c.to_string());
    format!(
        "live {} events ({events_per_second:.0}/s), lag {lag}, cursor {cursor}, {} rejected",
        now.live_events, now.rejected
    )
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The SQL to run (DuckDB's dialect; see crates/store-duckdb/SCHEMA.md for the tables).
    pub sql: String,
    /// The database file.
    #[arg(long, value_name = "PATH", env = "BUTTERFLY_DB", default_value = DEFAULT_DB)]
    pub db: PathBuf,
    /// One JSON object per row instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run_query(args: QueryArgs) -> anyhow::Result<()> {
    let store = open_read_only(&args.db)?;
    let result = store.run_sql(&args.sql).context("running the query")?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    use std::io::Write;
    if args.json {
        for row in &result.rows {
            let object: serde_json::Map<String, serde_json::Value> = result
                .columns
                .iter()
                .cloned()
                .zip(row.iter().cloned())
                .collect();
            writeln!(out, "{}", serde_json::Value::Object(object))?;
        }
    } else {
        let cells: Vec<Vec<String>> = result
            .rows
            .iter()
            .map(|row| row.iter().map(cell_text).collect())
            .collect();
        let mut widths: Vec<usize> = result.columns.iter().map(|c| c.chars().count()).collect();
        for row in &cells {
            for (i, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(i) {
                    *width = (*width).max(cell.chars().count().min(80));
                }
            }
        }
        let line = |out: &mut dyn Write, values: &[String]| -> std::io::Result<()> {
            let padded: Vec<String> = values
                .iter()
                .zip(&widths)
                .map(|(v, w)| {
                    let v: String = v.chars().take(80).collect();
                    format!("{v:<w$}")
                })
                .collect();
            writeln!(out, "{}", padded.join(" | ").trim_end())
        };
        line(&mut out, &result.columns)?;
        writeln!(
            out,
            "{}",
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("-+-")
        )?;
        for row in &cells {
            line(&mut out, row)?;
        }
        writeln!(out, "({} rows)", cells.len())?;
    }
    out.flush()?;
    Ok(())
}

fn cell_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "NULL".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn open_read_only(path: &Path) -> anyhow::Result<DuckDbStore> {
    if !path.exists() {
        bail!(
            "{} does not exist (run `butterfly sync` first, or give --db)",
            path.display()
        );
    }
    DuckDbStore::open_read_only(path).with_context(|| format!("opening {}", path.display()))
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The database file.
    #[arg(long, value_name = "PATH", env = "BUTTERFLY_DB", default_value = DEFAULT_DB)]
    pub db: PathBuf,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run_status(args: StatusArgs) -> anyhow::Result<()> {
    let store = open_read_only(&args.db)?;
    let summary = store.summary()?;
    let cursor = store.kv_get("live.cursor")?;
    let source = store.kv_get("live.source")?;
    let last = store.run_sql("SELECT max(indexed_at) FROM records WHERE indexed_at IS NOT NULL")?;
    let last_indexed = last
        .rows
        .first()
        .and_then(|row| row.first())
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let pairs = |v: &[(String, u64)]| -> serde_json::Value {
        serde_json::Value::Object(
            v.iter()
                .map(|(k, n)| (k.clone(), serde_json::Value::from(*n)))
                .collect(),
        )
    };
    let json = serde_json::json!({
        "db": args.db.display().to_string(),
        "repos": summary.repos,
        "records": summary.records,
        "repos_by_state": pairs(&summary.repos_by_state),
        "repos_by_status": pairs(&summary.repos_by_status),
        "repos_by_tag": pairs(&summary.repos_by_tag),
        "records_by_tag": pairs(&summary.records_by_tag),
        "records_by_collection": pairs(&summary.records_by_collection),
        "cursor": cursor.and_then(|c| c.parse::<i64>().ok()),
        "source": source,
        "last_indexed_at": last_indexed,
    });
    if args.json {
        println!("{json}");
        return Ok(());
    }
    println!("database   {}", args.db.display());
    println!(
        "source     {}",
        source_text(json["source"].as_str(), json["cursor"].as_i64())
    );
    println!("last write {}", cell_text(&json["last_indexed_at"]));
    println!("repos      {}", summary.repos);
    for (name, list) in [
        ("  by state", &summary.repos_by_state),
        ("  by status", &summary.repos_by_status),
        ("  by tag", &summary.repos_by_tag),
    ] {
        println!("{name:<12} {}", list_text(list));
    }
    println!("records    {}", summary.records);
    println!("  by tag       {}", list_text(&summary.records_by_tag));
    println!("  by collection");
    for (collection, n) in &summary.records_by_collection {
        println!("    {n:>10}  {collection}");
    }
    Ok(())
}

fn source_text(source: Option<&str>, cursor: Option<i64>) -> String {
    match (source, cursor) {
        (Some(source), Some(cursor)) => format!("{source} at cursor {cursor}"),
        (Some(source), None) => source.to_owned(),
        _ => "none (backfill only)".to_owned(),
    }
}

fn list_text(list: &[(String, u64)]) -> String {
    if list.is_empty() {
        return "-".into();
    }
    list.iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
