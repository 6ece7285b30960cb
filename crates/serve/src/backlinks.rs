//! Backlinks in the shapes of Constellation (microcosm's link index), so that its users can
//! switch: `blue.microcosm.links.getBacklinks` and `getBacklinksCount`.
//!
//! A `source` is `collection:path`, the path written without its leading dot
//! (`app.bsky.feed.like:subject.uri`), as Constellation writes it; the store keeps paths with the
//! dot. Unlike Constellation, `source` may be left out, to list links from every collection.

use crate::params::Params;
use crate::{AppState, XrpcError};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use butterfly_store::{Backlink, BacklinkQuery};
use serde_json::{json, Value};

const DEFAULT_LIMIT: usize = 16;
const MAX_LIMIT: usize = 100;
/// Most DIDs a `did` filter may name.
const MAX_DIDS: usize = 100;
/// Links looked at per request while filtering by `did`, at most, so that a filter that
/// matches little cannot scan without end; the cursor continues from where it stopped.
const MAX_FILTER_SCAN: usize = 10_000;

/// A subject and source, checked.
struct Subject {
    target: String,
    collection: Option<String>,
    path: Option<String>,
}

fn subject(params: &Params) -> Result<Subject, XrpcError> {
    let target = params.required("subject")?.to_owned();
    if target.len() > 8192 {
        return Err(XrpcError::invalid("subject is too long"));
    }
    let (collection, path) = match params.optional("source") {
        None => (None, None),
        Some(source) => {
            let (collection, path) = source.split_once(':').ok_or_else(|| {
                XrpcError::invalid(format!(
                    "source must be collection:path (e.g. app.bsky.feed.like:subject.uri), not {source:?}"
                ))
            })?;
            butterfly_syntax::Nsid::parse(collection)
                .map_err(|e| XrpcError::invalid(format!("source collection: {e}")))?;
            let path = path.trim_start_matches('.');
            if path.is_empty() {
                return Err(XrpcError::invalid("source path is empty"));
            }
            (Some(collection.to_owned()), Some(format!(".{path}")))
        }
    };
    Ok(Subject {
        target,
        collection,
        path,
    })
}

pub(crate) async fn get_backlinks(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, XrpcError> {
    let params = Params::parse(query.as_deref())?;
    let subject = subject(&params)?;
    let limit = params.limit(DEFAULT_LIMIT, MAX_LIMIT)?;
    let cursor = params.optional("cursor").map(str::to_owned);
    if let Some(cursor) = &cursor {
        Backlink::from_cursor(cursor).map_err(|_| XrpcError::invalid("cursor: not one of ours"))?;
    }
    let dids: Vec<String> = params.all("did").into_iter().map(str::to_owned).collect();
    if dids.len() > MAX_DIDS {
        return Err(XrpcError::invalid(format!(
            "at most {MAX_DIDS} did filters"
        )));
    }
    let (total, links, next) = state
        .readers
        .read(move |store| {
            let total = store.count_backlinks(
                &subject.target,
                subject.collection.as_deref(),
                subject.path.as_deref(),
            )?;
            let mut links = Vec::new();
            let mut cursor = cursor;
            let mut scanned = 0;
            loop {
                let page = store.backlinks(BacklinkQuery {
                    target: &subject.target,
                    collection: subject.collection.as_deref(),
                    path: subject.path.as_deref(),
                    cursor: cursor.as_deref(),
                    limit: if dids.is_empty() { limit } else { MAX_LIMIT },
                })?;
                scanned += page.links.len();
                let mut stopped_early = None;
                for link in page.links {
                    if dids.is_empty() || dids.contains(&link.did) {
                        links.push(link);
                        if links.len() == limit {
                            stopped_early = links.last().map(Backlink::cursor);
                            break;
                        }
                    }
                }
                cursor = match stopped_early {
                    Some(at) => Some(at),
                    None => page.cursor,
                };
                if links.len() == limit || cursor.is_none() || scanned >= MAX_FILTER_SCAN {
                    break;
                }
            }
            Ok((total, links, cursor))
        })
        .await?;
    let records: Vec<Value> = links
        .iter()
        .map(|link| json!({"did": link.did, "collection": link.collection, "rkey": link.rkey}))
        .collect();
    Ok(Json(json!({
        "total": total,
        "records": records,
        "cursor": next,
    }))
    .into_response())
}

pub(crate) async fn get_backlinks_count(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, XrpcError> {
    let params = Params::parse(query.as_deref())?;
    let subject = subject(&params)?;
    let total = state
        .readers
        .read(move |store| {
            store.count_backlinks(
                &subject.target,
                subject.collection.as_deref(),
                subject.path.as_deref(),
            )
        })
        .await?;
    Ok(Json(json!({ "total": total })).into_response())
}
