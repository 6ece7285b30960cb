//! Butterfly's HTTP face over a store: XRPC reads, backlinks, a Jetstream-compatible stream,
//! webhooks, admin and metrics.
//!
//! The server never writes to the store itself: reads go through a pool of read connections
//! ([`readers::ReadPool`]), and everything that changes what is synced goes to the engine as a
//! command ([`butterfly_engine::Control`]). Events come from a [`feed::EventFeed`]: the engine's
//! committed events as they happen, and the store's event log for replay. Without an engine (a
//! database served read-only) the admin endpoints answer 503 and the stream replays the log.
//!
//! Routes:
//! - `/xrpc/com.atproto.repo.{getRecord,listRecords,describeRepo}`,
//!   `/xrpc/com.atproto.sync.listRepos`, `/xrpc/com.atproto.identity.resolveHandle` ([`xrpc`]);
//! - `/xrpc/blue.microcosm.links.{getBacklinks,getBacklinksCount}` ([`backlinks`]);
//! - `/subscribe`, Jetstream's WebSocket ([`subscribe`]);
//! - `/admin/repos`, `/admin/selector`, `/admin/resync` (bearer token; [`admin`]);
//! - `/metrics`, `/health`, `/openapi.json`.

mod admin;
mod backlinks;
pub mod feed;
pub mod metrics;
mod params;
pub mod readers;
pub mod subscribe;
pub mod webhook;
mod xrpc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use butterfly_engine::{Control, Stats};
use butterfly_identity::Directory;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use feed::{EventFeed, EventLog};
pub use readers::ReadPool;

/// The running engine, when there is one.
#[derive(Clone)]
pub struct EngineLink {
    pub control: Control,
    pub stats: Arc<Stats>,
}

/// What the server serves.
pub struct ServeConfig {
    pub readers: ReadPool,
    /// Required for `/admin/*`; without one, admin is off (403).
    pub admin_token: Option<String>,
    /// For DID documents (`describeRepo`) and handles of repos not tracked.
    pub directory: Option<Directory>,
    pub engine: Option<EngineLink>,
    /// The stream for `/subscribe`; without it `/subscribe` is not served.
    pub events: Option<EventFeed>,
    pub subscribe: subscribe::SubscribeConfig,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: Duration,
}

#[derive(Clone)]
pub(crate) struct AppState {
    readers: ReadPool,
    admin_token: Option<String>,
    directory: Option<Directory>,
    engine: Option<EngineLink>,
}

impl AppState {
    fn engine(&self) -> Result<&EngineLink, XrpcError> {
        self.engine.as_ref().ok_or_else(|| {
            XrpcError::unavailable("no sync engine runs here (the database is served read-only)")
        })
    }
}

/// Largest request body accepted (the admin endpoints are the only ones with bodies).
const MAX_BODY_BYTES: usize = 1 << 20;

/// The whole HTTP API.
pub fn router(config: ServeConfig) -> Router {
    // The recorder must be in place before anything records (see [`metrics::handle`]).
    metrics::handle();
    let state = AppState {
        readers: config.readers,
        admin_token: config.admin_token,
        directory: config.directory,
        engine: config.engine,
    };
    let admin = Router::new()
        .route("/admin/repos", post(admin::post_repos))
        .route("/admin/selector", put(admin::put_selector))
        .route("/admin/resync", post(admin::post_resync))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_token,
        ));
    let timeout = config.request_timeout;
    let mut app = Router::new()
        .route("/xrpc/com.atproto.repo.getRecord", get(xrpc::get_record))
        .route(
            "/xrpc/com.atproto.repo.listRecords",
            get(xrpc::list_records),
        )
        .route(
            "/xrpc/com.atproto.repo.describeRepo",
            get(xrpc::describe_repo),
        )
        .route("/xrpc/com.atproto.sync.listRepos", get(xrpc::list_repos))
        .route(
            "/xrpc/com.atproto.identity.resolveHandle",
            get(xrpc::resolve_handle),
        )
        .route(
            "/xrpc/blue.microcosm.links.getBacklinks",
            get(backlinks::get_backlinks),
        )
        .route(
            "/xrpc/blue.microcosm.links.getBacklinksCount",
            get(backlinks::get_backlinks_count),
        )
        .route("/xrpc/{method}", get(unknown_method).post(unknown_method))
        .route("/health", get(health))
        .route("/metrics", get(metrics::scrape))
        .route("/openapi.json", get(openapi))
        .merge(admin)
        .layer(axum::middleware::from_fn(move |request, next| {
            with_timeout(timeout, request, next)
        }))
        .with_state(state);
    if let Some(feed) = config.events {
        // The WebSocket lives as long as its client, so it is outside the request timeout.
        app = app.merge(subscribe::Subscribe::new(feed, config.subscribe).router());
    }
    app.layer(axum::middleware::from_fn(metrics::track))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn with_timeout(
    timeout: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => XrpcError::unavailable(format!(
            "the request took longer than {} ms",
            timeout.as_millis()
        ))
        .into_response(),
    }
}

async fn unknown_method() -> Response {
    (
        StatusCode::NOT_IMPLEMENTED,
        Json(json!({"error": "MethodNotImplemented", "message": "Method Not Implemented"})),
    )
        .into_response()
}

async fn health(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let store = state
        .readers
        .read(|store| store.kv_get("live.cursor"))
        .await;
    let mut body = json!({ "status": "ok" });
    if let Some(engine) = &state.engine {
        let snapshot = engine.stats.snapshot();
        body["cursor"] = json!(snapshot.cursor);
        body["lag_seconds"] = json!(snapshot.lag_seconds);
        body["repos"] = json!(snapshot.repos_selected);
        body["engine"] = json!("running");
    } else {
        body["engine"] = json!("none (read-only)");
    }
    match store {
        Ok(_) => Json(body).into_response(),
        Err(error) => {
            body["status"] = json!("unavailable");
            body["error"] = json!(error.to_string());
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

/// An XRPC error: `{"error": Name, "message": ...}` with its HTTP status, as a PDS sends them.
#[derive(Debug)]
pub struct XrpcError {
    status: StatusCode,
    name: &'static str,
    message: String,
}

impl XrpcError {
    fn new(name: &'static str, message: impl Into<String>) -> XrpcError {
        XrpcError {
            status: StatusCode::BAD_REQUEST,
            name,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> XrpcError {
        XrpcError::new("InvalidRequest", message)
    }

    fn internal(message: impl Into<String>) -> XrpcError {
        XrpcError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            name: "InternalServerError",
            message: message.into(),
        }
    }

    fn unavailable(message: impl Into<String>) -> XrpcError {
        XrpcError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            name: "NotAvailable",
            message: message.into(),
        }
    }
}

impl From<readers::ReadError> for XrpcError {
    fn from(error: readers::ReadError) -> XrpcError {
        match error {
            readers::ReadError::Store(butterfly_store::Error::Invalid(message)) => {
                XrpcError::invalid(message)
            }
            other => {
                tracing::error!(error = %other, "a store read failed");
                XrpcError::internal(format!("the store could not be read: {other}"))
            }
        }
    }
}

impl IntoResponse for XrpcError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.name, "message": self.message})),
        )
            .into_response()
    }
}
