//! Webhook delivery: POSTs batches of events from an [`EventFeed`] to a URL.
//!
//! Delivery is at-least-once and in order. One batch is in flight at a time, and a batch that
//! fails (any status but 2xx, a timeout, a connection error) is sent again, byte for byte, after
//! an exponential backoff with jitter; it is never dropped. The position is saved through a
//! [`CursorStore`] only after a 2xx, so a restart resends at most the batch that was in flight.
//! Receivers dedupe with the `X-Butterfly-Batch-First` / `X-Butterfly-Batch-Last` headers (each
//! event's `time_us` is unique and increasing).
//!
//! Events come through an [`EventReader`]: the store's log from the saved cursor, then the live
//! tail. When the live tail drops events for a slow webhook, the reader goes back to the log, so
//! nothing still in the log is skipped. Events the log's retention dropped before they were
//! delivered are lost; that is detected, logged and counted (`butterfly_webhook_gaps_total`).
//!
//! Requests go through [`butterfly_net::HttpClient`], so the address policy applies: public
//! addresses only unless [`WebhookConfig::allow_private_network`]. Redirects are not followed: a
//! POST redirected with 301/302/303 turns into a GET, whose 200 would look like a delivery.
//!
//! Metrics: `butterfly_webhook_events_delivered_total`, `butterfly_webhook_requests_total{result}`
//! (`ok`, `http_error`, `network_error`), `butterfly_webhook_delivery_seconds` (each request),
//! `butterfly_webhook_lag_seconds` (now minus the last delivered `time_us`) and
//! `butterfly_webhook_gaps_total`.

use crate::feed::{EventFeed, EventLog, EventReader, ReadError};
use butterfly_net::{HttpClient, HttpConfig};
use butterfly_store::StreamEvent;
use butterfly_xrpc::{retry, RetryPolicy};
use ring::hmac;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use url::Url;

/// Where and how to deliver.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// The `http` or `https` URL batches are POSTed to.
    pub url: Url,
    /// Signs each body (`X-Butterfly-Signature: sha256=<hex HMAC-SHA256>`) when set.
    pub secret: Option<String>,
    /// Most events per request.
    pub batch_max: usize,
    /// After the first event of a batch, how long to wait for more before sending.
    pub batch_wait: Duration,
    /// Longest time for one request, response included.
    pub timeout: Duration,
    /// First wait after a failure; it doubles per failure in a row, up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest wait between attempts, also the cap on a receiver's `Retry-After`.
    pub backoff_max: Duration,
    /// Allow loopback and private addresses (local receivers, tests).
    pub allow_private_network: bool,
}

impl WebhookConfig {
    /// The defaults: batches of up to 100 events gathered for up to 200 ms, 10 s per request,
    /// backoff from 500 ms to 60 s, public addresses only, no signature.
    pub fn new(url: Url) -> WebhookConfig {
        WebhookConfig {
            url,
            secret: None,
            batch_max: 100,
            batch_wait: Duration::from_millis(200),
            timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            allow_private_network: false,
        }
    }
}

/// Where the webhook keeps the `time_us` of the last event it delivered.
pub trait CursorStore: Send + Sync {
    /// The saved position, `None` if nothing was ever saved.
    fn load(&self) -> Result<Option<i64>, String>;
    /// Saves a position durably: after a crash, `load` returns it or a later one. Blocking.
    fn save(&self, time_us: i64) -> Result<(), String>;
}

/// A cursor in a small text file, replaced atomically so that a crash leaves the old or the new
/// value, never a torn one.
#[derive(Clone, Debug)]
pub struct FileCursor {
    path: PathBuf,
}

impl FileCursor {
    pub fn new(path: PathBuf) -> FileCursor {
        FileCursor { path }
    }

    fn temp_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        self.path.with_file_name(name)
    }
}

impl CursorStore for FileCursor {
    fn load(&self) -> Result<Option<i64>, String> {
        let path = self.path.display();
        match std::fs::read_to_string(&self.path) {
            Ok(text) => text
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|e| format!("{path}: not a cursor ({e})")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{path}: {e}")),
        }
    }

    fn save(&self, time_us: i64) -> Result<(), String> {
        let temp = self.temp_path();
        let failed = |e: std::io::Error| format!("{}: {e}", self.path.display());
        let mut file = std::fs::File::create(&temp).map_err(failed)?;
        file.write_all(format!("{time_us}\n").as_bytes())
            .map_err(failed)?;
        file.sync_all().map_err(failed)?;
        drop(file);
        std::fs::rename(&temp, &self.path).map_err(failed)?;
        // The rename is only durable once the directory entry is.
        #[cfg(unix)]
        {
            let dir = match self.path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => std::path::Path::new("."),
            };
            std::fs::File::open(dir)
                .and_then(|dir| dir.sync_all())
                .map_err(failed)?;
        }
        Ok(())
    }
}

/// Counters for status pages and tests; the same numbers go to `metrics`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub delivered_events: AtomicU64,
    pub delivered_batches: AtomicU64,
    /// Requests that did not get a 2xx.
    pub failed_attempts: AtomicU64,
    /// The `time_us` of the last event delivered, 0 before the first delivery.
    pub last_delivered_time_us: AtomicI64,
    /// Times events may have been lost because the log dropped them before delivery.
    pub gaps: AtomicU64,
}

/// Why a webhook cannot start. Delivery failures are not errors: they are retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("webhook url {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("webhook http client: {0}")]
    Client(String),
    #[error("loading the webhook cursor: {0}")]
    Cursor(String),
}

/// Delivers the events of a feed to one URL. Build with [`Webhook::new`], then [`Webhook::run`].
pub struct Webhook {
    config: WebhookConfig,
    client: HttpClient,
    log: Arc<dyn EventLog>,
    reader: EventReader,
    cursor: Arc<dyn CursorStore>,
    /// The saved cursor the reader started from.
    start: Option<i64>,
    key: Option<hmac::Key>,
    stats: Arc<WebhookStats>,
    /// The position a gap was last reported at, so one gap is counted once.
    gap_reported_at: Option<i64>,
}

impl Webhook {
    /// Checks the URL, builds the client and loads the cursor (a blocking read). Without a saved
    /// cursor, delivery starts with the events committed after this call.
    pub fn new(
        config: WebhookConfig,
        feed: EventFeed,
        cursor: Arc<dyn CursorStore>,
    ) -> Result<Webhook, Error> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: config.url.to_string(),
            reason,
        };
        if !matches!(config.url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "scheme {:?} is not http or https",
                config.url.scheme()
            )));
        }
        let client = HttpClient::new(&HttpConfig {
            allow_private_network: config.allow_private_network,
            connect_timeout: config.timeout.min(Duration::from_secs(10)),
            read_timeout: config.timeout,
            max_redirects: 0,
            ..HttpConfig::default()
        })
        .map_err(|e| Error::Client(e.to_string()))?;
        client
            .check_url(&config.url)
            .map_err(|e| invalid(e.to_string()))?;
        let start = cursor.load().map_err(Error::Cursor)?;
        let key = config
            .secret
            .as_ref()
            .map(|secret| hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()));
        Ok(Webhook {
            client,
            log: feed.log.clone(),
            reader: EventReader::new(feed, start),
            cursor,
            start,
            key,
            stats: Arc::new(WebhookStats::default()),
            gap_reported_at: None,
            config,
        })
    }

    /// The live counters; take them before [`Webhook::run`] consumes the webhook.
    pub fn stats(&self) -> Arc<WebhookStats> {
        self.stats.clone()
    }

    /// Delivers until `shutdown` completes or the feed ends. Shutdown interrupts a wait, a backoff
    /// or a request in flight at once; an undelivered batch is not saved, so the next run sends
    /// it again.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let mut shutdown = std::pin::pin!(shutdown);
        tracing::info!(
            host = self.config.url.host_str().unwrap_or_default(),
            cursor = ?self.start,
            "webhook starting"
        );
        if let Some(start) = self.start {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = self.check_continuity(start) => {}
            }
        }
        let mut read_failures = 0;
        loop {
            let collected = tokio::select! {
                () = &mut shutdown => return Ok(()),
                collected = self.collect() => collected,
            };
            let (events, closed) = match collected {
                Collected::Batch(events) => (events, false),
                Collected::Closed(events) => (events, true),
                Collected::LogFailed(message) => {
                    tracing::warn!(error = %message, "webhook cannot read the event log, retrying");
                    let delay = self.backoff(read_failures, None);
                    read_failures = read_failures.saturating_add(1);
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            read_failures = 0;
            if !events.is_empty() && !self.deliver(&events, &mut shutdown).await {
                return Ok(());
            }
            if closed {
                tracing::info!("webhook stopping: the event stream ended");
                return Ok(());
            }
        }
    }

    /// Gathers the next batch: waits for a first event, then up to `batch_wait` for more.
    /// Cancelled only by shutdown, when the events taken need not be kept.
    async fn collect(&mut self) -> Collected {
        let max = self.config.batch_max.max(1);
        let mut events = Vec::new();
        let mut deadline = None;
        while events.len() < max {
            let before = self.reader.position();
            let from_log = self.reader.replaying();
            let next = self.reader.next(max - events.len());
            let read = match deadline {
                None => next.await,
                Some(deadline) => match tokio::time::timeout_at(deadline, next).await {
                    Ok(read) => read,
                    Err(_elapsed) => break,
                },
            };
            match read {
                Ok(more) => {
                    if let (true, Some(before)) = (from_log, before) {
                        self.check_continuity(before).await;
                    }
                    if events.is_empty() {
                        deadline = Some(Instant::now() + self.config.batch_wait);
                    }
                    events.extend(more);
                }
                Err(ReadError::Lagged(lagged)) => {
                    match self.reader.position() {
                        Some(position) => tracing::debug!(
                            missed = lagged.missed,
                            position,
                            "webhook fell behind the live tail, reading the log"
                        ),
                        // Nothing was read yet, so there is no position to replay from.
                        None => self.report_gap(None, None),
                    }
                    self.reader.resume_from_log();
                }
                Err(ReadError::Log(message)) if events.is_empty() => {
                    return Collected::LogFailed(message)
                }
                // Deliver what we have; the next read tries the log again.
                Err(ReadError::Log(_)) => break,
                Err(ReadError::Closed) => return Collected::Closed(events),
            }
        }
        Collected::Batch(events)
    }

    /// Sends one batch until a 2xx, then saves its position. False if shutdown came first.
    async fn deliver(
        &self,
        events: &[Arc<StreamEvent>],
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> bool {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return true;
        };
        let (first, last) = (first.time_us, last.time_us);
        let body = batch_body(events);
        let signature = self.key.as_ref().map(|key| {
            format!(
                "sha256={}",
                to_hex(hmac::sign(key, body.as_bytes()).as_ref())
            )
        });
        let mut failures = 0;
        loop {
            let started = Instant::now();
            let outcome = tokio::select! {
                () = &mut *shutdown => return false,
                outcome = self.post(&body, first, last, signature.as_deref()) => outcome,
            };
            metrics::histogram!("butterfly_webhook_delivery_seconds")
                .record(started.elapsed().as_secs_f64());
            let retry_after = match outcome {
                Outcome::Delivered => {
                    metrics::counter!("butterfly_webhook_requests_total", "result" => "ok")
                        .increment(1);
                    break;
                }
                Outcome::Rejected {
                    reason,
                    retry_after,
                } => {
                    metrics::counter!("butterfly_webhook_requests_total", "result" => "http_error")
                        .increment(1);
                    tracing::warn!(first, last, failures, %reason, "webhook delivery refused, retrying");
                    retry_after
                }
                Outcome::Unreachable(reason) => {
                    metrics::counter!("butterfly_webhook_requests_total", "result" => "network_error")
                        .increment(1);
                    tracing::warn!(first, last, failures, %reason, "webhook delivery failed, retrying");
                    None
                }
            };
            self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
            self.update_lag();
            let delay = self.backoff(failures, retry_after);
            failures = failures.saturating_add(1);
            tokio::select! {
                () = &mut *shutdown => return false,
                () = tokio::time::sleep(delay) => {}
            }
        }
        self.save(last).await;
        let count = events.len() as u64;
        self.stats
            .delivered_events
            .fetch_add(count, Ordering::Relaxed);
        self.stats.delivered_batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_delivered_time_us
            .store(last, Ordering::Relaxed);
        metrics::counter!("butterfly_webhook_events_delivered_total").increment(count);
        self.update_lag();
        true
    }

    /// One POST of a batch.
    async fn post(&self, body: &str, first: i64, last: i64, signature: Option<&str>) -> Outcome {
        use butterfly_net::reqwest::{header, Method, StatusCode};
        let url = &self.config.url;
        let request = match self.client.request(Method::POST, url) {
            Ok(request) => request,
            Err(e) => return Outcome::Unreachable(e.to_string()),
        };
        let mut request = request
            .timeout(self.config.timeout)
            .header(header::CONTENT_TYPE, "application/json")
            .header("X-Butterfly-Batch-First", first.to_string())
            .header("X-Butterfly-Batch-Last", last.to_string())
            .body(body.to_owned());
        if let Some(signature) = signature {
            request = request.header("X-Butterfly-Signature", signature);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_redirect() => {
                return Outcome::Rejected {
                    reason: "the url redirects; configure the final url".to_owned(),
                    retry_after: None,
                }
            }
            Err(e) => {
                return Outcome::Unreachable(
                    butterfly_net::Error::from_reqwest(url.as_str(), e).to_string(),
                )
            }
        };
        let status = response.status();
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                retry::retry_after(response.headers(), SystemTime::now())
            }
            _ => None,
        };
        // Read the body so the connection can be reused; on a 2xx its content does not matter.
        let body = butterfly_net::read_body_limited(response, 4096)
            .await
            .unwrap_or_default();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let excerpt: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        Outcome::Rejected {
            reason: format!("status {status}: {}", excerpt.trim()),
            retry_after,
        }
    }

    /// The wait after `failures` failures in a row: the XRPC client's backoff (doubling from
    /// `backoff_min` up to `backoff_max`, jittered into the upper half so that webhooks failing
    /// together do not retry together). A receiver's `Retry-After` replaces it, within the same
    /// bounds.
    fn backoff(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let min = self.config.backoff_min;
        let max = self.config.backoff_max.max(min);
        if let Some(retry_after) = retry_after {
            return retry_after.clamp(min, max);
        }
        let policy = RetryPolicy {
            initial_backoff: min,
            max_backoff: max,
            ..RetryPolicy::default()
        };
        policy
            .backoff(failures.saturating_add(1), retry::jitter_seed())
            .clamp(min, max)
    }

    /// Saves a delivered position. A failure is logged, not retried: the next delivery saves a
    /// later position, and until then a restart only resends (at least once still holds).
    async fn save(&self, time_us: i64) {
        let cursor = self.cursor.clone();
        let saved = tokio::task::spawn_blocking(move || cursor.save(time_us))
            .await
            .unwrap_or_else(|e| Err(format!("the cursor writer failed: {e}")));
        if let Err(error) = saved {
            tracing::warn!(time_us, %error, "webhook cannot save its cursor");
        }
    }

    /// Reports a gap if the log's retention passed `position` (see [`continuity`]).
    async fn check_continuity(&mut self, position: i64) {
        if self.gap_reported_at == Some(position) {
            return;
        }
        let checked = continuity(&self.log, position).await;
        match checked {
            Ok(Continuity::Intact) => {}
            Ok(Continuity::Passed { oldest }) => self.report_gap(Some(position), oldest),
            Err(error) => {
                tracing::warn!(position, %error, "webhook cannot check the event log for a gap")
            }
        }
    }

    fn report_gap(&mut self, position: Option<i64>, oldest: Option<i64>) {
        self.gap_reported_at = position;
        self.stats.gaps.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("butterfly_webhook_gaps_total").increment(1);
        match position {
            Some(position) => tracing::warn!(
                position,
                oldest_retained = ?oldest,
                "webhook: the event log's retention dropped events after the webhook's position \
                 before they were delivered; they are lost, continuing from the oldest retained event"
            ),
            None => tracing::warn!(
                "webhook: fell behind the live tail before delivering anything, so events \
                 committed meanwhile are lost; continuing with new events"
            ),
        }
    }

    fn update_lag(&self) {
        let last = self.stats.last_delivered_time_us.load(Ordering::Relaxed);
        if last == 0 {
            return;
        }
        let lag_us = butterfly_store::now_micros().saturating_sub(last).max(0);
        metrics::gauge!("butterfly_webhook_lag_seconds").set(lag_us as f64 / 1e6);
    }
}

enum Collected {
    Batch(Vec<Arc<StreamEvent>>),
    /// The feed ended; these are its last events.
    Closed(Vec<Arc<StreamEvent>>),
    LogFailed(String),
}

enum Outcome {
    Delivered,
    /// The receiver answered, but not with a 2xx.
    Rejected {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// No answer: connection, timeout or transfer failure.
    Unreachable(String),
}

enum Continuity {
    Intact,
    /// The event at the position is gone and nothing older is left: retention passed it, and
    /// events after it, up to `oldest` (the oldest retained, if any), may have gone too.
    Passed {
        oldest: Option<i64>,
    },
}

/// Whether events after `position` may have been dropped. Retention drops the oldest events
/// first, so while the event at `position` is still in the log, everything after it is too.
async fn continuity(log: &Arc<dyn EventLog>, position: i64) -> Result<Continuity, String> {
    let at = log
        .clone()
        .events_after(position.saturating_sub(1), 1)
        .await?;
    if at.first().is_some_and(|event| event.time_us == position) {
        return Ok(Continuity::Intact);
    }
    let oldest = log.clone().events_after(i64::MIN, 1).await?;
    match oldest.first() {
        // Older events remain, so retention has not reached the position (which then was never
        // an event of this log); nothing after it was dropped.
        Some(event) if event.time_us < position => Ok(Continuity::Intact),
        other => Ok(Continuity::Passed {
            oldest: other.map(|event| event.time_us),
        }),
    }
}

/// `{"events":[...]}` with each event's JSON as stored, not re-serialized.
fn batch_body(events: &[Arc<StreamEvent>]) -> String {
    let size = events
        .iter()
        .map(|event| event.json.len() + 1)
        .sum::<usize>();
    let mut body = String::with_capacity(size + 16);
    body.push_str("{\"events\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&event.json);
    }
    body.push_str("]}");
    body
}

fn to_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn a_batch_body_embeds_the_events_verbatim() {
        let event = |time_us: i64, json: &str| {
            Arc::new(StreamEvent {
                time_us,
                did: "did:plc:alice".into(),
                kind: butterfly_store::EventKind::Commit,
                collection: None,
                json: json.into(),
            })
        };
        let body = batch_body(&[event(1, r#"{"a":"\u00e9"}"#), event(2, r#"{"b": 2}"#)]);
        assert_eq!(body, r#"{"events":[{"a":"\u00e9"},{"b": 2}]}"#);
    }
}
