//! XRPC reads over the store, in a PDS's shapes and with its errors, so that atproto clients read
//! from Butterfly as from a PDS: `com.atproto.repo.{getRecord,listRecords,describeRepo}`,
//! `com.atproto.sync.listRepos` and `com.atproto.identity.resolveHandle`.

use crate::params::Params;
use crate::{AppState, XrpcError};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use butterfly_store::{Page, Record};
use butterfly_syntax::{AtIdentifier, Did, Handle, Nsid, RecordKey};
use serde_json::{json, Value};

/// `listRecords` pages: the lexicon's bounds.
const LIST_RECORDS_DEFAULT: usize = 50;
const LIST_RECORDS_MAX: usize = 100;
/// `listRepos` pages.
const LIST_REPOS_DEFAULT: usize = 500;
const LIST_REPOS_MAX: usize = 1000;

pub(crate) async fn get_record(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, XrpcError> {
    let params = Params::parse(query.as_deref())?;
    let repo = params.required("repo")?;
    let collection = parse_nsid(params.required("collection")?)?;
    let rkey = RecordKey::parse(params.required("rkey")?)
        .map_err(|e| XrpcError::invalid(format!("rkey: {e}")))?;
    let cid = params.optional("cid").map(str::to_owned);
    let did = resolve_repo(&state, repo).await?;
    let (did2, collection2, rkey2) = (
        did.clone(),
        collection.as_str().to_owned(),
        rkey.as_str().to_owned(),
    );
    let record = state
        .readers
        .read(move |store| store.get_record(&did2, &collection2, &rkey2))
        .await?;
    let uri = format!("at://{did}/{collection}/{}", rkey.as_str());
    match record {
        Some(record) if cid.as_deref().is_none_or(|cid| cid == record.cid) => {
            let mut body = String::with_capacity(view_len(&record));
            write_record_view(&mut body, &record);
            Ok(json_response(body))
        }
        _ => Err(XrpcError::new(
            "RecordNotFound",
            format!("Could not locate record: {uri}"),
        )),
    }
}

pub(crate) async fn list_records(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, XrpcError> {
    let params = Params::parse(query.as_deref())?;
    let repo = params.required("repo")?;
    let collection = parse_nsid(params.required("collection")?)?;
    let limit = params.limit(LIST_RECORDS_DEFAULT, LIST_RECORDS_MAX)?;
    let reverse = params.boolean("reverse")?;
    let cursor = params.optional("cursor").map(str::to_owned);
    let did = resolve_repo(&state, repo).await?;
    let did2 = did.clone();
    let collection2 = collection.as_str().to_owned();
    let records = state
        .readers
        .read(move |store| {
            store.list_records(
                &did2,
                &collection2,
                Page {
                    cursor: cursor.as_deref(),
                    limit,
                    reverse,
                },
            )
        })
        .await?;
    // As the reference PDS does: the last rkey whenever the page has records.
    let next = records.last().map(|r| r.rkey.clone());
    let mut body = String::with_capacity(records.iter().map(view_len).sum::<usize>() + 64);
    body.push_str("{\"records\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        write_record_view(&mut body, record);
    }
    body.push(']');
    if let Some(cursor) = next {
        body.push_str(",\"cursor\":");
        butterfly_data::write_json_string(&mut body, &cursor);
    }
    body.push('}');
    Ok(json_response(body))
}

pub(crate) async fn describe_repo(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, XrpcError> {
    let params = Params::parse(query.as_deref())?;
    let repo = params.required("repo")?;
    let did = resolve_repo(&state, repo).await?;
    let did2 = did.clone();
    let (row, collections) = state
        .readers
        .read(move |store| Ok((store.repo(&did2)?, store.collections(&did2)?)))
        .await?;
    let row = row.ok_or_else(|| repo_not_found(repo))?;
    let did_doc = match (&state.directory, Did::parse(&did)) {
        (Some(directory), Ok(parsed)) => match directory.did_document(&parsed).await {
            Ok(doc) => serde_json::to_value(doc.as_ref()).unwrap_or(Value::Null),
            Err(error) => {
                tracing::debug!(did, %error, "describeRepo: no DID document");
                Value::Null
            }
        },
        _ => Value::Null,
    };
    Ok(Json(json!({
        "handle": row.handle.clone().unwrap_or_else(|| "handle.invalid".to_owned()),
        "did": did,
        "didDoc": did_doc,
        "collections": collections,
        "handleIsCorrect": row.handle.is_some(),
    }))
    .into_response())
}

pub(crate) async fn list_repos(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, XrpcError> {
    let params = Params::parse(query.as_deref())?;
    let limit = params.limit(LIST_REPOS_DEFAULT, LIST_REPOS_MAX)?;
    let cursor = params.optional("cursor").map(str::to_owned);
    let rows = state
        .readers
        .read(move |store| store.repos_page(cursor.as_deref(), limit))
        .await?;
    let next = rows.last().map(|r| r.did.clone());
    let repos: Vec<Value> = rows
        .iter()
        .map(|row| {
            let active = row.status == "active";
            let mut repo = json!({
                "did": row.did,
                // The store keeps the MST root of the last commit, not the commit's own CID.
                "head": row.data_cid.clone().unwrap_or_default(),
                "rev": row.rev.clone().unwrap_or_default(),
                "active": active,
            });
            if !active {
                repo["status"] = Value::String(row.status.clone());
            }
            repo
        })
        .collect();
    let mut body = json!({ "repos": repos });
    if let Some(cursor) = next {
        body["cursor"] = Value::String(cursor);
    }
    Ok(Json(body).into_response())
}

pub(crate) async fn resolve_handle(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, XrpcError> {
    let params = Params::parse(query.as_deref())?;
    let handle = Handle::parse(params.required("handle")?)
        .map_err(|e| XrpcError::invalid(format!("handle: {e}")))?;
    if let Some(did) = tracked_did_of_handle(&state, handle.as_str()).await? {
        return Ok(Json(json!({ "did": did })).into_response());
    }
    if let Some(directory) = &state.directory {
        if let Ok(did) = directory.handle_did(&handle).await {
            return Ok(Json(json!({ "did": did.as_str() })).into_response());
        }
    }
    Err(XrpcError::new(
        "HandleNotFound",
        format!("Unable to resolve handle: {}", handle.as_str()),
    ))
}

/// The DID a `repo` parameter names: a DID as given, or a tracked repo's verified handle.
pub(crate) async fn resolve_repo(state: &AppState, repo: &str) -> Result<String, XrpcError> {
    match AtIdentifier::parse(repo) {
        Ok(AtIdentifier::Did(did)) => Ok(did.as_str().to_owned()),
        Ok(AtIdentifier::Handle(handle)) => tracked_did_of_handle(state, handle.as_str())
            .await?
            .ok_or_else(|| repo_not_found(repo)),
        Err(error) => Err(XrpcError::invalid(format!("repo: {error}"))),
    }
}

/// The DID of a tracked repo with this (verified) handle.
pub(crate) async fn tracked_did_of_handle(
    state: &AppState,
    handle: &str,
) -> Result<Option<String>, XrpcError> {
    let handle = handle.to_owned();
    let row = state
        .readers
        .read(move |store| store.repo_by_handle(&handle))
        .await?;
    Ok(row.map(|row| row.did))
}

fn repo_not_found(repo: &str) -> XrpcError {
    XrpcError::new("RepoNotFound", format!("Could not find repo: {repo}"))
}

fn parse_nsid(text: &str) -> Result<Nsid, XrpcError> {
    Nsid::parse(text).map_err(|e| XrpcError::invalid(format!("collection: {e}")))
}

/// Appends `{uri, cid, value}`, as a PDS returns a record. The value is the stored JSON text as
/// it is: the store only holds JSON it made from the record's DAG-CBOR, so it is not parsed again.
fn write_record_view(out: &mut String, record: &Record) {
    let uri = format!("at://{}/{}/{}", record.did, record.collection, record.rkey);
    out.push_str("{\"uri\":");
    butterfly_data::write_json_string(out, &uri);
    out.push_str(",\"cid\":");
    butterfly_data::write_json_string(out, &record.cid);
    out.push_str(",\"value\":");
    out.push_str(&record.json);
    out.push('}');
}

/// The room a record's view takes, near enough to size a body.
fn view_len(record: &Record) -> usize {
    record.json.len() + 160
}

fn json_response(body: String) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
