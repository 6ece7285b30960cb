//! Seeds: what a selector's identity and service clauses resolve to.

use butterfly_identity::Directory;
use butterfly_selector::{Clause, Source};
use butterfly_syntax::AtIdentifier;
use butterfly_xrpc::{ClientConfig, XrpcClient, XrpcRequest};
use std::collections::HashSet;

/// Pages a discovery call may take at most (a loop guard: a service repeating a cursor is caught
/// anyway).
const MAX_PAGES: usize = 100_000;

/// The DIDs a clause starts from, or `None` for clauses fed by other tags.
/// `relay`: the http(s) base of the relay the engine follows, for calls that name no service.
pub(crate) async fn seeds(
    clause: &Clause,
    directory: &Directory,
    client_config: &ClientConfig,
    relay: Option<&str>,
) -> Option<Result<Vec<String>, String>> {
    match &clause.source {
        Source::Identity(identifier) => Some(resolve_identity(identifier, directory).await),
        Source::Service(call) => {
            Some(call_service(call, clause.max_repos, client_config, relay).await)
        }
        Source::Tag(_) | Source::Walk { .. } => None,
    }
}

async fn resolve_identity(
    identifier: &AtIdentifier,
    directory: &Directory,
) -> Result<Vec<String>, String> {
    match identifier {
        AtIdentifier::Did(did) => Ok(vec![did.as_str().to_owned()]),
        AtIdentifier::Handle(handle) => {
            let identity = directory
                .resolve_handle(handle)
                .await
                .map_err(|e| format!("resolving {handle}: {e}"))?;
            if !identity.handle_verified {
                return Err(format!(
                    "{handle} points to {}, whose DID document does not claim it",
                    identity.did
                ));
            }
            Ok(vec![identity.did.as_str().to_owned()])
        }
    }
}

async fn call_service(
    call: &butterfly_selector::ServiceCall,
    max_repos: Option<u64>,
    client_config: &ClientConfig,
    relay: Option<&str>,
) -> Result<Vec<String>, String> {
    let service = match (&call.service, relay) {
        (Some(service), _) => service.as_str(),
        (None, Some(relay)) => relay,
        (None, None) => {
            return Err(format!(
                "{} names no service, and there is no relay (--relay) to call instead",
                call.method
            ))
        }
    };
    let base = url::Url::parse(service).map_err(|e| format!("{service}: {e}"))?;
    let client = XrpcClient::new(base, client_config.clone())
        .map_err(|e| format!("client for {service}: {e}"))?;
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut cursors_seen = HashSet::new();
    for _ in 0..MAX_PAGES {
        let mut request = XrpcRequest::query(call.method.as_str());
        for (name, value) in &call.params {
            request = request.param(name, value);
        }
        if let (Some(pagination), Some(cursor)) = (&call.pagination, &cursor) {
            request = request.param(&pagination.param, cursor);
        }
        let page: serde_json::Value = client
            .send_json(&request)
            .await
            .map_err(|e| format!("{service} {}: {e}", call.method))?;
        let on_page = butterfly_selector::dids_at(&call.attr, &page);
        let empty_page = on_page.is_empty();
        for did in on_page {
            if seen.insert(did.clone()) {
                found.push(did);
                if max_repos.is_some_and(|max| found.len() as u64 >= max) {
                    return Ok(found);
                }
            }
        }
        let Some(pagination) = &call.pagination else {
            break;
        };
        // Some servers hand out a cursor with their last, empty page.
        if empty_page {
            break;
        }
        let next = pagination
            .attr
            .strings(&page)
            .first()
            .map(|s| (*s).to_owned());
        match next {
            Some(next) if !next.is_empty() && cursors_seen.insert(next.clone()) => {
                cursor = Some(next)
            }
            _ => break,
        }
    }
    Ok(found)
}

/// The http(s) base URL of a relay given as `http(s)://host` or `ws(s)://host/xrpc/...`.
pub(crate) fn relay_http_base(relay: &str) -> Option<String> {
    let mut url = url::Url::parse(relay).ok()?;
    let scheme = match url.scheme() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        _ => return None,
    };
    url.set_scheme(scheme).ok()?;
    url.set_path("/");
    url.set_query(None);
    Some(url.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn relay_bases() {
        let base = super::relay_http_base;
        assert_eq!(
            base("https://bsky.network").as_deref(),
            Some("https://bsky.network/")
        );
        assert_eq!(
            base("wss://relay.example/xrpc/com.atproto.sync.subscribeRepos?cursor=5").as_deref(),
            Some("https://relay.example/")
        );
        assert_eq!(
            base("ws://127.0.0.1:2470").as_deref(),
            Some("http://127.0.0.1:2470/")
        );
        assert_eq!(base("ftp://x"), None);
    }
}
