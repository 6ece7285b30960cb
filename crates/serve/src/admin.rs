//! Admin endpoints: change what the running engine syncs. Every request needs
//! `Authorization: Bearer TOKEN`; the token is compared in constant time.

use crate::{AppState, XrpcError};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use butterfly_engine::{ControlError, RepoUpdate};
use butterfly_syntax::{AtIdentifier, Did};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Most repos one request may name.
const MAX_REPOS: usize = 10_000;

/// Refuses requests without the right bearer token (401), or every request when the server
/// has no token (403: admin is off).
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = &state.admin_token else {
        return error(
            StatusCode::FORBIDDEN,
            "AdminDisabled",
            "admin endpoints are off: start the server with --admin-token",
        );
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match given {
        Some(given) if same_secret(given, expected) => next.run(request).await,
        _ => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "AuthenticationRequired",
                "a valid Authorization: Bearer token is required",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

/// Compares two secrets in time that depends on neither: both are hashed to 32 bytes first (so
/// the length does not leak either), then every byte is compared.
pub(crate) fn same_secret(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    let difference = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

fn error(status: StatusCode, name: &str, message: &str) -> Response {
    (status, Json(json!({"error": name, "message": message}))).into_response()
}

/// `POST /admin/repos` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReposBody {
    #[serde(default)]
    add: Vec<RepoEntry>,
    #[serde(default)]
    remove: Vec<RemoveEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepoEntry {
    /// A DID or a handle.
    repo: String,
    tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveEntry {
    repo: String,
    /// Only these hand-added tags; without, the repo altogether.
    tags: Option<Vec<String>>,
}

pub(crate) async fn post_repos(
    State(state): State<AppState>,
    body: Result<Json<ReposBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, XrpcError> {
    let Json(body) = body.map_err(|e| XrpcError::invalid(e.body_text()))?;
    let engine = state.engine()?;
    if body.add.len() + body.remove.len() > MAX_REPOS {
        return Err(XrpcError::invalid(format!(
            "at most {MAX_REPOS} repos per request"
        )));
    }
    let mut update = RepoUpdate::default();
    for entry in body.add {
        let did = did_of(&state, &entry.repo).await?;
        update.add.push((did, entry.tags));
    }
    for entry in body.remove {
        let did = did_of(&state, &entry.repo).await?;
        update.remove.push((did, entry.tags));
    }
    let standing = engine
        .control
        .update_repos(update)
        .await
        .map_err(control_error)?;
    Ok(Json(json!({ "repos": standing })).into_response())
}

pub(crate) async fn put_selector(
    State(state): State<AppState>,
    body: String,
) -> Result<Response, XrpcError> {
    let engine = state.engine()?;
    let swap = engine
        .control
        .replace_selector(body)
        .await
        .map_err(control_error)?;
    Ok(Json(swap).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResyncBody {
    repos: Vec<String>,
}

pub(crate) async fn post_resync(
    State(state): State<AppState>,
    body: Result<Json<ResyncBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, XrpcError> {
    let Json(body) = body.map_err(|e| XrpcError::invalid(e.body_text()))?;
    let engine = state.engine()?;
    if body.repos.len() > MAX_REPOS {
        return Err(XrpcError::invalid(format!(
            "at most {MAX_REPOS} repos per request"
        )));
    }
    let mut dids = Vec::new();
    for repo in &body.repos {
        dids.push(did_of(&state, repo).await?);
    }
    let standing = engine.control.resync(dids).await.map_err(control_error)?;
    Ok(Json(json!({ "repos": standing })).into_response())
}

/// A DID as given, or the DID a handle resolves to (tracked repos first, then the network).
async fn did_of(state: &AppState, repo: &str) -> Result<String, XrpcError> {
    match AtIdentifier::parse(repo.strip_prefix("at://").unwrap_or(repo)) {
        Ok(AtIdentifier::Did(did)) => Ok(did.as_str().to_owned()),
        Ok(AtIdentifier::Handle(handle)) => {
            // A store that fails to answer is an error, not a reason to ask the network.
            if let Some(did) = crate::xrpc::tracked_did_of_handle(state, handle.as_str()).await? {
                return Ok(did);
            }
            let directory = state.directory.as_ref().ok_or_else(|| {
                XrpcError::invalid(format!("{repo}: cannot resolve handles here; give a DID"))
            })?;
            directory
                .handle_did(&handle)
                .await
                .map(|did: Did| did.as_str().to_owned())
                .map_err(|e| XrpcError::invalid(format!("{repo}: {e}")))
        }
        Err(e) => Err(XrpcError::invalid(format!("{repo:?}: {e}"))),
    }
}

fn control_error(error: ControlError) -> XrpcError {
    match error {
        ControlError::Invalid(message) => XrpcError::invalid(message),
        ControlError::Stopped => XrpcError::unavailable("the sync engine has stopped"),
    }
}
