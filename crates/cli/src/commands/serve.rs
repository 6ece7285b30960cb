//! `butterfly serve`: the sync engine and the HTTP API in one process, or, without a selector,
//! the HTTP API over an existing database, read-only.

use super::sync::{show_progress, EngineArgs, OutputArgs, DEFAULT_DB};
use anyhow::{bail, Context};
use butterfly_engine::{Engine, LiveSource};
use butterfly_selector::Selector;
use butterfly_serve::subscribe::SubscribeConfig;
use butterfly_serve::webhook::{FileCursor, Webhook, WebhookConfig};
use butterfly_serve::{EngineLink, EventFeed, ReadPool, ServeConfig};
use butterfly_store::Store;
use butterfly_store_duckdb::DuckDbStore;
use clap::Args;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The selector document. Without one, the database is served read-only and nothing syncs.
    #[arg(value_name = "SELECTOR.json", env = "BUTTERFLY_SELECTOR")]
    pub selector: Option<PathBuf>,
    /// The DuckDB database.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_DB, env = "BUTTERFLY_DB")]
    pub db: PathBuf,
    /// Where to listen. Loopback by default: put a proxy in front to serve others.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:2470",
        env = "BUTTERFLY_LISTEN"
    )]
    pub listen: SocketAddr,
    /// The bearer token the /admin endpoints require (prefer the variable: flags show in `ps`).
    /// Without it, admin is off.
    #[arg(long, value_name = "TOKEN", env = "BUTTERFLY_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// How long the stream's event log keeps events for /subscribe replay and webhooks, e.g.
    /// `24h`, `30m`, `90s`; `0` keeps none (and turns /subscribe and webhooks off).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "24h",
        env = "BUTTERFLY_EVENT_LOG"
    )]
    pub event_log: String,
    /// POST the stream's events to this URL, in batches, at least once and in order.
    #[arg(long, value_name = "URL", env = "BUTTERFLY_WEBHOOK")]
    pub webhook: Option<url::Url>,
    /// Sign webhook bodies with HMAC-SHA256 under this secret (`X-Butterfly-Signature`).
    #[arg(long, value_name = "SECRET", env = "BUTTERFLY_WEBHOOK_SECRET")]
    pub webhook_secret: Option<String>,
    /// Read connections to the database, for concurrent requests.
    #[arg(long, value_name = "N", default_value_t = 4, env = "BUTTERFLY_READERS")]
    pub readers: usize,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Parses `24h`, `30m`, `90s`, `2d` or a plain number of seconds.
fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a duration like 24h, 30m or 90s"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => bail!("{text:?}: unknown unit {other:?} (use s, m, h or d)"),
    };
    Ok(Duration::from_secs(n.saturating_mul(seconds)))
}

pub fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    args.output.init_logging();
    let retention = parse_duration(&args.event_log)?;
    let event_log = (!retention.is_zero()).then_some(retention);
    if !args.listen.ip().is_loopback() && args.admin_token.is_none() {
        tracing::warn!(listen = %args.listen, "serving beyond loopback; admin is off without --admin-token");
    }
    let selector = match &args.selector {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let selector = Selector::from_json(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            if args.engine.live() == LiveSource::None {
                bail!("give --relay URL or --jetstream URL for the engine to follow");
            }
            Some((selector, hex::encode(Sha256::digest(text.as_bytes()))))
        }
        None => None,
    };
    if selector.is_none() && args.webhook.is_some() {
        bail!("--webhook needs a selector: a read-only server has no new events to send");
    }
    let readers = args.readers.max(1);
    let (writer, read_connections): (Option<DuckDbStore>, Vec<Box<dyn Store>>) =
        if selector.is_some() {
            let store = DuckDbStore::open(&args.db)
                .with_context(|| format!("opening the database {}", args.db.display()))?;
            let started = std::time::Instant::now();
            store.ensure_backlink_index()?;
            if started.elapsed() > Duration::from_secs(1) {
                tracing::info!(
                    seconds = started.elapsed().as_secs_f64(),
                    "indexed links by target for backlinks"
                );
            }
            let mut connections: Vec<Box<dyn Store>> = Vec::new();
            for _ in 0..readers {
                connections.push(Box::new(store.try_clone()?));
            }
            (Some(store), connections)
        } else {
            let store = DuckDbStore::open_read_only(&args.db)
                .with_context(|| format!("opening the database {} read-only", args.db.display()))?;
            let mut connections: Vec<Box<dyn Store>> = Vec::new();
            for _ in 1..readers {
                connections.push(Box::new(store.try_clone()?));
            }
            connections.push(Box::new(store));
            (None, connections)
        };
    let pool = ReadPool::new(read_connections);

    let runtime = super::network::streaming_runtime()?;
    butterfly_serve::metrics::handle();
    runtime.block_on(async move {
        let directory = args.engine.identity.directory()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let mut engine_task: Option<tokio::task::JoinHandle<Result<Box<dyn Store>, butterfly_engine::Error>>> = None;
        let mut link = None;
        let mut feed = None;
        let mut progress = None;
        if let (Some((selector, origin)), Some(store)) = (selector, writer) {
            let mut config = args.engine.config(false);
            config.event_log = event_log;
            config.selector_origin = Some(origin);
            let engine = Engine::new(config, selector, Box::new(store), directory.clone());
            link = Some(EngineLink {
                control: engine.control(),
                stats: engine.stats(),
            });
            if event_log.is_some() {
                feed = Some(EventFeed {
                    live: engine.events(),
                    log: Arc::new(pool.clone()),
                });
            }
            if !args.output.quiet {
                progress = Some(tokio::spawn(show_progress(engine.stats(), false)));
            }
            let shutdown = stopped(stop_rx.clone());
            engine_task = Some(tokio::spawn(engine.run(shutdown)));
        } else if event_log.is_some() {
            // Read-only: the stream replays what the log holds; nothing new arrives.
            let (live, _) = tokio::sync::broadcast::channel(16);
            feed = Some(EventFeed {
                live,
                log: Arc::new(pool.clone()),
            });
        }
        let mut webhook_task = None;
        if let (Some(url), Some(feed)) = (&args.webhook, &feed) {
            let mut config = WebhookConfig::new(url.clone());
            config.secret = args.webhook_secret.clone();
            config.allow_private_network = args.engine.identity.network.allow_private_network;
            let mut cursor_path = args.db.clone().into_os_string();
            cursor_path.push(".webhook-cursor");
            let webhook = Webhook::new(
                config,
                feed.clone(),
                Arc::new(FileCursor::new(PathBuf::from(cursor_path))),
            )?;
            webhook_task = Some(tokio::spawn(webhook.run(stopped(stop_rx.clone()))));
        } else if args.webhook.is_some() {
            bail!("--webhook needs the event log: give --event-log a duration above 0");
        }
        let app = butterfly_serve::router(ServeConfig {
            readers: pool,
            admin_token: args.admin_token.clone(),
            directory: Some(directory),
            engine: link,
            events: feed,
            subscribe: SubscribeConfig::default(),
            request_timeout: Duration::from_secs(30),
        });
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let address = listener.local_addr()?;
        // One line on stdout, for scripts and tests: where the server listens.
        println!(
            "{}",
            serde_json::json!({"listening": format!("http://{address}"), "read_only": engine_task.is_none()})
        );
        let server = tokio::spawn(butterfly_serve::serve(
            listener,
            app,
            stopped(stop_rx.clone()),
        ));
        // Stop on Ctrl-C or SIGTERM, or when the engine fails. An engine that ends cleanly (a
        // replayed frame log ran out) leaves the API serving what it wrote.
        let interrupted = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = async {
                    match term.as_mut() {
                        Some(term) => { term.recv().await; }
                        None => std::future::pending().await,
                    }
                } => {},
            }
        };
        tokio::pin!(interrupted);
        let engine_result = match engine_task {
            Some(mut task) => tokio::select! {
                _ = &mut interrupted => {
                    let _ = stop_tx.send(true);
                    Some(task.await)
                }
                result = &mut task => {
                    if matches!(result, Ok(Ok(_))) {
                        tracing::warn!("the live source ended; serving what was written until interrupted");
                        (&mut interrupted).await;
                    }
                    let _ = stop_tx.send(true);
                    Some(result)
                }
            },
            None => {
                interrupted.await;
                let _ = stop_tx.send(true);
                None
            }
        };
        if let Some(progress) = progress {
            progress.abort();
        }
        if let Some(task) = webhook_task {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "webhook"),
                Err(error) => tracing::error!(%error, "webhook task"),
            }
        }
        // Open WebSockets hold a graceful shutdown up; they get a few seconds.
        if tokio::time::timeout(Duration::from_secs(5), server).await.is_err() {
            tracing::warn!("connections still open after 5 s; closing them");
        }
        match engine_result {
            Some(Ok(Ok(_))) | None => Ok(()),
            Some(Ok(Err(error))) => Err(anyhow::Error::from(error)),
            Some(Err(error)) => Err(anyhow::anyhow!("the engine task failed: {error}")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("24h").ok(),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_duration("30m").ok(), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("90").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("0").ok(), Some(Duration::ZERO));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
