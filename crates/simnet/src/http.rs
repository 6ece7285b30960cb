//! The HTTP side: XRPC queries answered from the repos at the head, the PLC directory, stats, and the
//! rate-limit fault.

use crate::repos::Unavailable;
use crate::{bump, Shared};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

const SUBSCRIBE_REPOS: &str = "/xrpc/com.atproto.sync.subscribeRepos";

type Params = Query<HashMap<String, String>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(SUBSCRIBE_REPOS, get(subscribe_repos))
        .route("/xrpc/{method}", any(xrpc))
        .route("/_sim/stats", get(stats))
        .route("/{did}", get(did_document))
        .layer(middleware::from_fn_with_state(shared.clone(), rate_limit))
        .with_state(shared)
}

/// An XRPC error: `{"error", "message"}` with its status.
fn error(status: StatusCode, name: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": name, "message": message.into()})),
    )
        .into_response()
}

fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "InvalidRequest", message)
}

/// The error a PDS gives for a repo it cannot serve.
fn unavailable(did: &str, why: Unavailable) -> Response {
    match why {
        Unavailable::NotFound => error(
            StatusCode::BAD_REQUEST,
            "RepoNotFound",
            format!("Could not find repo for DID: {did}"),
        ),
        Unavailable::Inactive(status) => {
            let name = match status.as_str() {
                "takendown" => "RepoTakendown",
                "suspended" => "RepoSuspended",
                _ => "RepoDeactivated",
            };
            error(
                StatusCode::BAD_REQUEST,
                name,
                format!("Repo is {status}: {did}"),
            )
        }
        Unavailable::Broken(message) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            message,
        ),
    }
}

/// Answers every `rate_limit_every`th XRPC request (the firehose excepted) with a 429.
async fn rate_limit(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path.starts_with("/xrpc/") && path != SUBSCRIBE_REPOS {
        let n = bump(&shared.counters.xrpc_requests);
        let every = shared.faults.rate_limit_every;
        if every > 0 && n % every == 0 {
            bump(&shared.counters.rate_limited);
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "RateLimitExceeded",
                "Rate Limit Exceeded",
            );
            let reset = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                + 1;
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            headers.insert("ratelimit-limit", HeaderValue::from_static("3000"));
            headers.insert("ratelimit-remaining", HeaderValue::from_static("0"));
            headers.insert("ratelimit-policy", HeaderValue::from_static("3000;w=300"));
            if let Ok(value) = HeaderValue::from_str(&reset.to_string()) {
                headers.insert("ratelimit-reset", value);
            }
            return response;
        }
    }
    next.run(request).await
}

async fn subscribe_repos(
    State(shared): State<Arc<Shared>>,
    Query(params): Params,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let cursor = match params.get("cursor").map(|text| text.parse::<i64>()) {
        None => None,
        Some(Ok(cursor)) => Some(cursor),
        Some(Err(_)) => return invalid("cursor must be an integer"),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return invalid(format!("a WebSocket upgrade is required: {rejection}")),
    };
    upgrade.on_upgrade(move |socket| crate::stream::connection(shared, socket, cursor))
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.stats()).into_response()
}

async fn did_document(State(shared): State<Arc<Shared>>, Path(did): Path<String>) -> Response {
    match shared.directory.by_did.get(&did) {
        Some(identity) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/did+ld+json"),
            )],
            identity.doc.to_string(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": format!("DID not registered: {did}")})),
        )
            .into_response(),
    }
}

async fn xrpc(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    Query(params): Params,
) -> Response {
    match method.as_str() {
        "com.atproto.sync.getRepo" => get_repo(&shared, &params),
        "com.atproto.sync.getLatestCommit" => get_latest_commit(&shared, &params),
        "com.atproto.sync.getRepoStatus" => get_repo_status(&shared, &params),
        "com.atproto.sync.listRepos" => list_repos(&shared, &params),
        "com.atproto.sync.listReposByCollection" => list_repos_by_collection(&shared, &params),
        "com.atproto.repo.describeRepo" => describe_repo(&shared, &params),
        "com.atproto.identity.resolveHandle" => resolve_handle(&shared, &params),
        _ => error(
            StatusCode::NOT_IMPLEMENTED,
            "MethodNotImplemented",
            "Method Not Implemented",
        ),
    }
}

/// A required `did` parameter, checked.
fn did_param<'a>(params: &'a HashMap<String, String>, name: &str) -> Result<&'a str, Response> {
    let text = params
        .get(name)
        .ok_or_else(|| invalid(format!("Error: Params must have the property \"{name}\"")))?;
    butterfly_syntax::Did::parse(text)
        .map_err(|e| invalid(format!("Error: {name} must be a valid did: {e}")))?;
    Ok(text)
}

/// `limit` within `1..=max`, `default` when absent.
fn limit_param(
    params: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, Response> {
    match params.get("limit") {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=max).contains(&limit) => Ok(limit),
            _ => Err(invalid(format!(
                "Error: limit must be an integer from 1 to {max}, found {text:?}"
            ))),
        },
    }
}

fn get_repo(shared: &Shared, params: &HashMap<String, String>) -> Response {
    let did = match did_param(params, "did") {
        Ok(did) => did,
        Err(response) => return response,
    };
    match shared.repos().export_car(did) {
        Ok(car) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/vnd.ipld.car"),
            )],
            car,
        )
            .into_response(),
        Err(why) => unavailable(did, why),
    }
}

fn get_latest_commit(shared: &Shared, params: &HashMap<String, String>) -> Response {
    let did = match did_param(params, "did") {
        Ok(did) => did,
        Err(response) => return response,
    };
    let repos = shared.repos();
    match repos.available(did) {
        Ok((_, head)) => {
            Json(json!({"cid": head.commit.to_string(), "rev": head.rev})).into_response()
        }
        Err(why) => unavailable(did, why),
    }
}

fn get_repo_status(shared: &Shared, params: &HashMap<String, String>) -> Response {
    let did = match did_param(params, "did") {
        Ok(did) => did,
        Err(response) => return response,
    };
    let repos = shared.repos();
    let Some(repo) = repos.by_did.get(did).filter(|repo| repo.head.is_some()) else {
        return unavailable(did, Unavailable::NotFound);
    };
    let mut body = json!({"did": did, "active": repo.active});
    if let Some(status) = &repo.status {
        body["status"] = json!(status);
    }
    if let (true, Some(head)) = (repo.active, &repo.head) {
        body["rev"] = json!(head.rev);
    }
    Json(body).into_response()
}

fn list_repos(shared: &Shared, params: &HashMap<String, String>) -> Response {
    let limit = match limit_param(params, 500, 1000) {
        Ok(limit) => limit,
        Err(response) => return response,
    };
    let start = params
        .get("cursor")
        .map_or(Bound::Unbounded, |cursor| Bound::Excluded(cursor.as_str()));
    let repos = shared.repos();
    let mut listed = Vec::new();
    let mut last = None;
    for (did, repo) in repos.by_did.range::<str, _>((start, Bound::Unbounded)) {
        let Some(head) = &repo.head else { continue };
        if listed.len() == limit {
            break;
        }
        let mut entry = json!({
            "did": did,
            "head": head.commit.to_string(),
            "rev": head.rev,
            "active": repo.active,
        });
        if let Some(status) = &repo.status {
            entry["status"] = json!(status);
        }
        listed.push(entry);
        last = Some(did.clone());
    }
    page(listed, limit, last)
}

/// A page of results: a cursor only when the page is full (there may be more).
fn page(listed: Vec<serde_json::Value>, limit: usize, last: Option<String>) -> Response {
    let mut body = json!({});
    if listed.len() == limit {
        if let Some(last) = last {
            body["cursor"] = json!(last);
        }
    }
    body["repos"] = json!(listed);
    Json(body).into_response()
}

fn list_repos_by_collection(shared: &Shared, params: &HashMap<String, String>) -> Response {
    let Some(collection) = params.get("collection") else {
        return invalid("Error: Params must have the property \"collection\"");
    };
    if let Err(e) = butterfly_syntax::Nsid::parse(collection) {
        return invalid(format!("Error: collection must be a valid nsid: {e}"));
    }
    let limit = match limit_param(params, 500, 2000) {
        Ok(limit) => limit,
        Err(response) => return response,
    };
    let start = params
        .get("cursor")
        .map_or(Bound::Unbounded, |cursor| Bound::Excluded(cursor.as_str()));
    let repos = shared.repos();
    let mut listed = Vec::new();
    let mut last = None;
    for (did, repo) in repos.by_did.range::<str, _>((start, Bound::Unbounded)) {
        if !repo.collections.contains_key(collection.as_str()) {
            continue;
        }
        if listed.len() == limit {
            break;
        }
        listed.push(json!({"did": did}));
        last = Some(did.clone());
    }
    page(listed, limit, last)
}

fn describe_repo(shared: &Shared, params: &HashMap<String, String>) -> Response {
    let Some(repo_param) = params.get("repo") else {
        return invalid("Error: Params must have the property \"repo\"");
    };
    let did = if repo_param.starts_with("did:") {
        repo_param.clone()
    } else {
        match shared
            .directory
            .by_handle
            .get(&repo_param.to_ascii_lowercase())
        {
            Some(did) => did.clone(),
            None => return unavailable(repo_param, Unavailable::NotFound),
        }
    };
    let repos = shared.repos();
    let repo = match repos.available(&did) {
        Ok((repo, _)) => repo,
        Err(why) => return unavailable(&did, why),
    };
    let identity = shared.directory.by_did.get(&did);
    let handle = identity
        .and_then(|identity| identity.handle.clone())
        .unwrap_or_else(|| "handle.invalid".into());
    Json(json!({
        "handle": handle,
        "did": did,
        "didDoc": identity.map_or(serde_json::Value::Null, |identity| identity.doc.clone()),
        "collections": repo.collections.keys().collect::<Vec<_>>(),
        "handleIsCorrect": identity.is_some_and(|identity| identity.handle.is_some()),
    }))
    .into_response()
}

fn resolve_handle(shared: &Shared, params: &HashMap<String, String>) -> Response {
    let Some(handle) = params.get("handle") else {
        return invalid("Error: Params must have the property \"handle\"");
    };
    match shared.directory.by_handle.get(&handle.to_ascii_lowercase()) {
        Some(did) => Json(json!({"did": did})).into_response(),
        None => invalid("Unable to resolve handle"),
    }
}
