//! Prometheus metrics: `GET /metrics`, every name prefixed `butterfly_`.
//!
//! Components record through the `metrics` facade (the engine's store writes, the stream's
//! subscribers, webhooks, HTTP requests here). The engine's own counters live in its `Stats` and
//! are copied in at each scrape, so the engine needs no recorder to run.

use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use butterfly_engine::EVENT_KINDS;
use butterfly_store::SyncState;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Instant;

/// Latency buckets, in seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's recorder: installed by the first call, shared by every server in the process.
/// Call it before starting anything that records (the engine), or its first figures are lost.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only ours");
        }
        handle
    })
}

/// Times every request, by route.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("butterfly_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("butterfly_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}

pub(crate) async fn scrape(State(state): State<AppState>) -> Response {
    let handle = handle();
    if let Some(engine) = &state.engine {
        let stats = &engine.stats;
        let snapshot = stats.snapshot();
        for (kind, counter) in EVENT_KINDS.iter().zip(&stats.events_by_kind) {
            metrics::counter!("butterfly_firehose_events_total", "type" => *kind)
                .absolute(counter.load(Ordering::Relaxed));
        }
        for (reason, n) in stats
            .rejections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            metrics::counter!("butterfly_verify_rejections_total", "reason" => reason.clone())
                .absolute(*n);
        }
        for (state, gauge) in SyncState::ALL.iter().zip(&stats.repos_by_state) {
            metrics::gauge!("butterfly_repos", "state" => state.as_str())
                .set(gauge.load(Ordering::Relaxed) as f64);
        }
        metrics::gauge!("butterfly_repos_selected").set(snapshot.repos_selected as f64);
        metrics::gauge!("butterfly_backfill_queue").set(snapshot.repos_queued as f64);
        metrics::counter!("butterfly_repos_backfilled_total").absolute(snapshot.repos_backfilled);
        metrics::counter!("butterfly_backfill_failures_total").absolute(snapshot.backfill_failures);
        metrics::counter!("butterfly_resyncs_total").absolute(snapshot.resyncs);
        metrics::counter!("butterfly_records_backfilled_total")
            .absolute(snapshot.records_backfilled);
        metrics::counter!("butterfly_live_changes_total").absolute(snapshot.live_changes);
        metrics::counter!("butterfly_store_batches_total").absolute(snapshot.batches_written);
        if let Some(cursor) = snapshot.cursor {
            metrics::gauge!("butterfly_firehose_cursor").set(cursor as f64);
        }
        if let Some(lag) = snapshot.lag_seconds {
            metrics::gauge!("butterfly_firehose_lag_seconds").set(lag);
        }
    }
    metrics::gauge!("butterfly_up").set(1.0);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
