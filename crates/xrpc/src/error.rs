//! The one error type of the crate.

use std::time::Duration;

/// Why an XRPC call failed.
///
/// Every variant that comes from a call names the method (`nsid`), so that a log line says which call
/// failed. [`Error::is_retryable`] tells whether the same call may succeed later; the client has
/// already retried it as far as its [`RetryPolicy`](crate::RetryPolicy) allows.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with a status other than 2xx (after any retries): a 4xx other than 429, or
    /// a 5xx that was not retried or kept failing. `error` and `message` come from the XRPC error body
    /// `{"error": "...", "message": "..."}`; both are `None` when the body is not of that shape.
    #[error("{nsid}: http {status}{}{}", fmt_name(.error), fmt_message(.message))]
    Xrpc {
        /// The method called.
        nsid: String,
        /// The HTTP status.
        status: u16,
        /// The XRPC error name, e.g. `RecordNotFound`, `ExpiredToken`, `InvalidRequest`.
        error: Option<String>,
        /// The server's human-readable message.
        message: Option<String>,
        /// Requests sent for this call, retries included.
        attempts: u32,
    },
    /// The server asked us to wait (429 or 503 with `Retry-After`, or `ratelimit-remaining: 0` with a
    /// `ratelimit-reset`), and either the wait is longer than
    /// [`RetryPolicy::max_wait`](crate::RetryPolicy::max_wait) or the retries ran out. Nothing was
    /// slept through: the caller decides whether to wait `retry_after` and call again.
    #[error("{nsid}: rate limited{}", fmt_wait(.retry_after))]
    RateLimited {
        /// The method called.
        nsid: String,
        /// How long the server asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// The request could not be sent or its response could not be read: connection refused or reset,
    /// DNS, TLS, a timeout, or an address refused by the network policy. Retried as the
    /// [`RetryPolicy`](crate::RetryPolicy) allows before it is returned.
    #[error("{nsid}: {source} (attempts: {attempts})")]
    Net {
        /// The method called.
        nsid: String,
        /// Requests sent (or tried) for this call.
        attempts: u32,
        /// The transport error.
        #[source]
        source: butterfly_net::Error,
    },
    /// A 2xx response body is not the JSON the method promises.
    #[error("{nsid}: bad response body: {message}")]
    Decode {
        /// The method called.
        nsid: String,
        /// What the JSON decoder said.
        message: String,
    },
    /// The response body is larger than the limit set for it
    /// ([`ClientConfig::max_body_bytes`](crate::ClientConfig::max_body_bytes), the blob or stream limit).
    #[error("{nsid}: response body exceeds {limit} bytes")]
    TooLarge {
        /// The method called.
        nsid: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// There is no usable session: the call needs one and the client has none, the session's DID is
    /// invalid, or refreshing it was refused (the refresh token expired or was revoked; the
    /// [`SessionStore`](crate::SessionStore) has been cleared). Log in again.
    #[error("authentication: {reason}")]
    Auth {
        /// What went wrong.
        reason: String,
        /// The failed refresh call, when there was one.
        #[source]
        source: Option<Box<Error>>,
    },
    /// The HTTP client could not be built (TLS configuration), in [`XrpcClient::new`](crate::XrpcClient::new).
    #[error("cannot build the http client")]
    HttpClient(#[source] butterfly_net::Error),
    /// The request was not sent because it is malformed: an invalid NSID, a base URL that cannot
    /// carry XRPC, or an input that cannot be serialised.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

fn fmt_name(error: &Option<String>) -> String {
    error
        .as_deref()
        .map(|name| format!(" {name}"))
        .unwrap_or_default()
}

fn fmt_message(message: &Option<String>) -> String {
    message
        .as_deref()
        .map(|message| format!(": {message}"))
        .unwrap_or_default()
}

fn fmt_wait(wait: &Option<Duration>) -> String {
    wait.map(|wait| format!(", retry after {:.1}s", wait.as_secs_f64()))
        .unwrap_or_default()
}

impl Error {
    /// Whether the same call may succeed if made again later: 5xx and 429 responses, rate limits and
    /// transient transport failures. 4xx errors, bad bodies, size limits and auth failures are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Xrpc { status, .. } => *status == 429 || *status >= 500,
            Error::RateLimited { .. } => true,
            Error::Net { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// The XRPC error name (`RecordNotFound`, `RepoNotFound`, `MethodNotImplemented`...), if the server
    /// sent one.
    pub fn xrpc_error(&self) -> Option<&str> {
        match self {
            Error::Xrpc { error, .. } => error.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status of an [`Error::Xrpc`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Xrpc { status, .. } => Some(*status),
            _ => None,
        }
    }
}
