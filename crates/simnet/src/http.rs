//! The HTTP side: XRPC queries answered from the repos at the head, the PLC directory, stats, and the
//! rate-limit fault.

use crate::repos::{RepoState, Repos, Unavailable};
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
        if every > 0 && n.is_multiple_of(every) {
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
    let answer = match method.as_str() {
        "com.atproto.sync.getRepo" => get_repo(&shared, &params),
        "com.atproto.sync.getLatestCommit" => get_latest_commit(&shared, &params),
        "com.atproto.sync.getRepoStatus" => get_repo_status(&shared, &params),
        "com.atproto.sync.listRepos" => list_repos(&shared, &params),
        "com.atproto.sync.listReposByCollection" => list_repos_by_collection(&shared, &params),
        "com.atproto.repo.describeRepo" => describe_repo(&shared, &params),
        "com.atproto.identity.resolveHandle" => resolve_handle(&shared, &params),
        _ => Err(error(
            StatusCode::NOT_IMPLEMENTED,
            "MethodNotImplemented",
            "Method Not Implemented",
        )),
    };
    answer.unwrap_or_else(|response| response)
}

/// What a query handler gives: the answer, or the XRPC error to send instead.
type Answer = Result<Response, Response>;

/// A required string parameter.
fn required<'a>(params: &'a HashMap<String, String>, name: &str) -> Result<&'a str, Response> {
    params
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| invalid(format!("Error: Params must have the property \"{name}\"")))
}

/// A required `did` parameter, checked.
fn did_param<'a>(params: &'a HashMap<String, String>, name: &str) -> Result<&'a str, Response> {
    let text = required(params, name)?;
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

fn get_repo(shared: &Shared, params: &HashMap<String, String>) -> Answer {
    let did = did_param(params, "did")?;
    let car = shared
        .repos()
        .export_car(did)
        .map_err(|why| unavailable(did, why))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.ipld.car"),
        )],
        car,
    )
        .into_response())
}

fn get_latest_commit(shared: &Shared, params: &HashMap<String, String>) -> Answer {
    let did = did_param(params, "did")?;
    let repos = shared.repos();
    let (_, head) = repos.available(did).map_err(|why| unavailable(did, why))?;
    Ok(Json(json!({"cid": head.commit.to_string(), "rev": head.rev})).into_response())
}

fn get_repo_status(shared: &Shared, params: &HashMap<String, String>) -> Answer {
    let did = did_param(params, "did")?;
    let repos = shared.repos();
    let Some((repo, head)) = repos
        .by_did
        .get(did)
        .and_then(|repo| Some((repo, repo.head.as_ref()?)))
    else {
        return Err(unavailable(did, Unavailable::NotFound));
    };
    let mut body = json!({"did": did, "active": repo.active});
    if let Some(status) = &repo.status {
        body["status"] = json!(status);
    }
    if repo.active {
        body["rev"] = json!(head.rev);
    }
    Ok(Json(body).into_response())
}

/// One page of `repos` in DID order, after the `cursor` parameter: at most `limit` entries made by
/// `entry`, which skips a repo by returning `None`. Only a full page carries a cursor (its last
/// DID): there may be more.
fn page(
    repos: &Repos,
    params: &HashMap<String, String>,
    limit: usize,
    mut entry: impl FnMut(&str, &RepoState) -> Option<serde_json::Value>,
) -> Response {
    let start = params
        .get("cursor")
        .map_or(Bound::Unbounded, |cursor| Bound::Excluded(cursor.as_str()));
    let mut listed = Vec::new();
    let mut body = json!({});
    for (did, repo) in repos.by_did.range::<str, _>((start, Bound::Unbounded)) {
        listed.extend(entry(did, repo));
        if listed.len() == limit {
            body["cursor"] = json!(did);
            break;
        }
    }
    body["repos"] = json!(listed);
    Json(body).into_response()
}

fn list_repos(shared: &Shared, params: &HashMap<String, String>) -> Answer {
    let limit = limit_param(params, 500, 1000)?;
    Ok(page(&shared.repos(), params, limit, |did, repo| {
        let head = repo.head.as_ref()?;
        let mut entry = json!({
            "did": did,
            "head": head.commit.to_string(),
            "rev": head.rev,
            "active": repo.active,
        });
        if let Some(status) = &repo.status {
            entry["status"] = json!(status);
        }
        Some(entry)
    }))
}

fn list_repos_by_collection(shared: &Shared, params: &HashMap<String, String>) -> Answer {
    let collection = required(params, "collection")?;
    butterfly_syntax::Nsid::parse(collection)
        .map_err(|e| invalid(format!("Error: collection must be a valid nsid: {e}")))?;
    let limit = limit_param(params, 500, 2000)?;
    Ok(page(&shared.repos(), params, limit, |did, repo| {
        repo.collections
            .contains_key(collection)
            .then(|| json!({"did": did}))
    }))
}

fn describe_repo(shared: &Shared, params: &HashMap<String, String>) -> Answer {
    let repo_param = required(params, "repo")?;
    let did = if repo_param.starts_with("did:") {
        repo_param
    } else {
        shared
            .directory
            .by_handle
            .get(&repo_param.to_ascii_lowercase())
            .ok_or_else(|| unavailable(repo_param, Unavailable::NotFound))?
    };
    let repos = shared.repos();
    let (repo, _) = repos.available(did).map_err(|why| unavailable(did, why))?;
    let identity = shared.directory.by_did.get(did);
    let handle = identity
        .and_then(|identity| identity.handle.as_deref())
        .unwrap_or("handle.invalid");
    Ok(Json(json!({
        "handle": handle,
        "did": did,
        "didDoc": identity.map_or(&serde_json::Value::Null, |identity| &identity.doc),
        "collections": repo.collections.keys().collect::<Vec<_>>(),
        "handleIsCorrect": identity.is_some_and(|identity| identity.handle.is_some()),
    }))
    .into_response())
}

fn resolve_handle(shared: &Shared, params: &HashMap<String, String>) -> Answer {
    let handle = required(params, "handle")?;
    let did = shared
        .directory
        .by_handle
        .get(&handle.to_ascii_lowercase())
        .ok_or_else(|| invalid("Unable to resolve handle"))?;
    Ok(Json(json!({"did": did})).into_response())
}
