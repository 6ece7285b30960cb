//! `butterfly serve`: the sync engine and the HTTP API in one process, or, without a selector,
//! the HTTP API over an existing database, read-only.

use super::signals::{or_pending, StopSignals};
use super::sync::{read_selector, show_progress, EngineArgs, OutputArgs, DEFAULT_DB};
use anyhow::{bail, Context};
use butterfly_engine::{Engine, LiveSource};
use butterfly_serve::subscribe::SubscribeConfig;
use butterfly_serve::webhook::{FileCursor, Webhook, WebhookConfig};
use butterfly_serve::{EngineLink, EventFeed, ReadPool, ServeConfig};
use butterfly_store::Store;
use butterfly_store_duckdb::DuckDbStore;
use clap::Args;
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
            let selector = read_selector(path)?;
            if args.engine.live() == LiveSource::None {
                bail!("give --relay URL or --jetstream URL for the engine to follow");
            }
            Some(selector)
        }
        None => None,
    };
    if args.webhook.is_some() {
        if selector.is_none() {
            bail!("--webhook needs a selector: a read-only server has no new events to send");
        }
        if event_log.is_none() {
            bail!("--webhook needs the event log: give --event-log a duration above 0");
        }
    }
    // Bound before the store opens, which can take long (a write-ahead log to replay, the
    // backlink index to build), so that a busy port fails at once and before anything syncs.
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("listening on {}", args.listen))?;
    listener.set_nonblocking(true)?;
    let runtime = super::network::streaming_runtime()?;
    // Before the store opens, too: a Ctrl-C or SIGTERM meanwhile is kept and stops the server
    // cleanly once it is up, rather than killing the process mid-start.
    let mut signals = {
        let _runtime = runtime.enter();
        StopSignals::install()
    };
    let store = if selector.is_some() {
        let store = DuckDbStore::open(&args.db)
            .with_context(|| format!("opening the database {}", args.db.display()))?;
        let started = std::time::Instant::now();
        store.ensure_backlink_index()?;
        let seconds = started.elapsed().as_secs_f64();
        if seconds > 1.0 {
            tracing::info!(seconds, "indexed links by target for backlinks");
        }
        store
    } else {
        DuckDbStore::open_read_only(&args.db)
            .with_context(|| format!("opening the database {} read-only", args.db.display()))?
    };
    // Read connections share the database; a read-only server reads on the store itself too.
    let mut read_connections: Vec<Box<dyn Store>> = Vec::new();
    for _ in 1..args.readers.max(1) {
        read_connections.push(Box::new(store.try_clone()?));
    }
    let writer = match selector {
        Some(selector) => {
            read_connections.push(Box::new(store.try_clone()?));
            Some((selector, store))
        }
        None => {
            read_connections.push(Box::new(store));
            None
        }
    };
    let pool = ReadPool::new(read_connections);

    butterfly_serve::metrics::handle();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let address = listener.local_addr()?;
        let directory = args.engine.identity.directory()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let mut engine = None;
        let mut link = None;
        let mut feed = None;
        // The feed holds the broadcast weakly; this keeps the stream open until shutdown, also
        // after an engine that ended cleanly. Once it and the engine let go, subscribers get
        // their close and the graceful shutdown does not wait on them.
        let mut publisher = None;
        if let Some(((selector, origin), store)) = writer {
            let mut config = args.engine.config(false);
            config.event_log = event_log;
            config.selector_origin = Some(origin);
            let new = Engine::new(config, selector, Box::new(store), directory.clone());
            link = Some(EngineLink {
                control: new.control(),
                stats: new.stats(),
            });
            if event_log.is_some() {
                let live = new.events();
                feed = Some(EventFeed::new(&live, Arc::new(pool.clone())));
                publisher = Some(live);
            }
            engine = Some(new);
        } else if event_log.is_some() {
            // Read-only: the stream replays what the log holds; nothing new arrives.
            let (live, _) = tokio::sync::broadcast::channel(16);
            feed = Some(EventFeed::new(&live, Arc::new(pool.clone())));
            publisher = Some(live);
        }
        let webhook = match (&args.webhook, &feed) {
            (Some(url), Some(feed)) => {
                let mut config = WebhookConfig::new(url.clone());
                config.secret = args.webhook_secret.clone();
                config.allow_private_network = args.engine.identity.network.allow_private_network;
                let mut cursor_path = args.db.clone().into_os_string();
                cursor_path.push(".webhook-cursor");
                Some(Webhook::new(
                    config,
                    feed.clone(),
                    Arc::new(FileCursor::new(PathBuf::from(cursor_path))),
                )?)
            }
            _ => None,
        };
        let app = butterfly_serve::router(ServeConfig {
            readers: pool,
            admin_token: args.admin_token.clone(),
            directory: Some(directory),
            engine: link,
            events: feed,
            subscribe: SubscribeConfig::default(),
            request_timeout: Duration::from_secs(30),
        });

        let read_only = engine.is_none();
        let progress = match &engine {
            Some(engine) if !args.output.quiet => {
                Some(tokio::spawn(show_progress(engine.stats(), false)))
            }
            _ => None,
        };
        let mut engine_task =
            engine.map(|engine| tokio::spawn(engine.run(stopped(stop_rx.clone()))));
        let mut webhook_task =
            webhook.map(|webhook| tokio::spawn(webhook.run(stopped(stop_rx.clone()))));
        let mut server = Some(tokio::spawn(butterfly_serve::serve(
            listener,
            app,
            stopped(stop_rx.clone()),
        )));
        // One line on stdout, for scripts and tests: where the server listens.
        println!(
            "{}",
            serde_json::json!({"listening": format!("http://{address}"), "read_only": read_only})
        );

        // Run until Ctrl-C or SIGTERM, or until a part fails. An engine that ends cleanly (a
        // replayed frame log ran out) leaves the API serving what it wrote.
        let interrupted = signals.received();
        tokio::pin!(interrupted);
        let mut engine_result = None;
        let mut failure: Option<anyhow::Error> = None;
        loop {
            tokio::select! {
                _ = &mut interrupted => break,
                result = or_pending(engine_task.as_mut()) => {
                    engine_task = None;
                    let clean = matches!(result, Ok(Ok(_)));
                    engine_result = Some(result);
                    if !clean {
                        break;
                    }
                    tracing::warn!("the live source ended; serving what was written until interrupted");
                }
                result = or_pending(server.as_mut()) => {
                    server = None;
                    failure = Some(stopped_early("the HTTP server", result));
                    break;
                }
                result = or_pending(webhook_task.as_mut()) => {
                    webhook_task = None;
                    failure = Some(stopped_early("webhook delivery", result));
                    break;
                }
            }
        }
        let _ = stop_tx.send(true);
        drop(publisher);
        if let Some(task) = engine_task {
            // The engine finishes the batch it is writing; that is not cut short.
            engine_result = Some(task.await);
        }
        if let Some(progress) = progress {
            progress.abort();
        }
        if let Some(task) = webhook_task {
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => tracing::error!(%error, "webhook"),
                Ok(Err(error)) => tracing::error!(%error, "webhook task"),
                Err(_) => tracing::warn!("webhook delivery still busy after 5 s; left"),
            }
        }
        // Open WebSockets hold a graceful shutdown up; they get a few seconds.
        if let Some(server) = server {
            match tokio::time::timeout(Duration::from_secs(5), server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => tracing::error!(%error, "the HTTP server"),
                Ok(Err(error)) => tracing::error!(%error, "the HTTP server task"),
                Err(_) => tracing::warn!("connections still open after 5 s; closing them"),
            }
        }
        let engine_failure = match engine_result {
            Some(Ok(Err(error))) => Some(anyhow::Error::from(error)),
            Some(Err(error)) => Some(anyhow::anyhow!("the engine task failed: {error}")),
            Some(Ok(Ok(_))) | None => None,
        };
        match (engine_failure, failure) {
            (Some(engine), Some(first)) => {
                // The engine's error is the one returned; what stopped the server first is not
                // lost.
                tracing::error!(error = format!("{first:#}"), "stopped by");
                Err(engine)
            }
            (Some(error), None) | (None, Some(error)) => Err(error),
            (None, None) => Ok(()),
        }
    })
}

/// Why a task that should run until shutdown ended before it: `what` stopped, failed, or its task
/// failed (panicked or was cancelled).
fn stopped_early<E>(
    what: &str,
    result: Result<Result<(), E>, tokio::task::JoinError>,
) -> anyhow::Error
where
    anyhow::Error: From<E>,
{
    match result {
        Ok(Ok(())) => anyhow::anyhow!("{what} stopped"),
        Ok(Err(error)) => anyhow::Error::from(error).context(format!("{what} failed")),
        Err(error) => anyhow::anyhow!("the task of {what} failed: {error}"),
    }
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
