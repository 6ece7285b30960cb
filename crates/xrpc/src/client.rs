//! The core: building XRPC requests, sending them under the host's limits, retrying, and reading the
//! answer as JSON, bytes or a stream.

use std::fmt::Display;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use butterfly_net::{HttpClient, HttpConfig};
use bytes::Bytes;
use futures_util::Stream;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::io::StreamReader;
use url::Url;

use crate::error::Error;
use crate::limits::{Host, HostLimits};
use crate::retry::{self, RateLimitInfo, RetryPolicy};
use crate::session::SessionState;

/// At most this much of an error response is read, to find `{error, message}` in it.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Where a client's HTTP connections come from.
#[derive(Clone, Debug)]
pub enum Http {
    /// Build a new [`HttpClient`] (and connection pool) from this configuration.
    Config(HttpConfig),
    /// Share an existing client and its connection pool, e.g. one for all PDS clients of an engine.
    Client(HttpClient),
}

impl Default for Http {
    fn default() -> Self {
        Http::Config(HttpConfig::default())
    }
}

/// How an [`XrpcClient`] behaves. `Default`: public addresses only, [`RetryPolicy::default`], a fresh
/// [`HostLimits`] registry, 60 s per request, JSON bodies up to 16 MiB, blobs up to 64 MiB, streamed
/// bodies unbounded.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The HTTP client, or the configuration to build one (address policy, connect and read timeouts,
    /// `User-Agent`).
    pub http: Http,
    /// When and how often to retry.
    pub retry: RetryPolicy,
    /// The per-host limiter registry. Give every client of a program the same one (clones share).
    pub limits: HostLimits,
    /// Total time for one attempt of a buffered call: connect, send and read the whole body. Streamed
    /// calls have no total timeout (a `getRepo` may run for minutes); they rely on the HTTP read timeout
    /// between chunks.
    pub request_timeout: Duration,
    /// Largest JSON (or other buffered) response body; larger ones fail with [`Error::TooLarge`].
    pub max_body_bytes: usize,
    /// Largest blob [`SyncApi::get_blob`](crate::SyncApi::get_blob) reads into memory.
    pub max_blob_bytes: usize,
    /// Largest streamed body (`getRepo`); `None` for no limit. Past it, the stream fails with an I/O
    /// error wrapping [`Error::TooLarge`].
    pub max_stream_bytes: Option<u64>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            http: Http::default(),
            retry: RetryPolicy::default(),
            limits: HostLimits::default(),
            request_timeout: Duration::from_secs(60),
            max_body_bytes: 16 * 1024 * 1024,
            max_blob_bytes: 64 * 1024 * 1024,
            max_stream_bytes: None,
        }
    }
}

impl ClientConfig {
    /// The default configuration, with non-public addresses allowed or not (see
    /// [`HttpConfig::allow_private_network`]); `true` is for local test networks.
    pub fn with_private_network(allow_private_network: bool) -> ClientConfig {
        ClientConfig {
            http: Http::Config(HttpConfig::with_private_network(allow_private_network)),
            ..ClientConfig::default()
        }
    }
}

/// Whether a method is a query (HTTP GET) or a procedure (HTTP POST).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodKind {
    /// Reads; sent as GET; always safe to retry.
    Query,
    /// Writes or actions; sent as POST; retried only where nothing can have happened, unless marked
    /// [`XrpcRequest::idempotent`].
    Procedure,
}

/// One XRPC call to make: method, parameters, body and headers. Building never fails; problems (an
/// invalid NSID, an input that does not serialise, a bad header or content type) are reported by the
/// send as [`Error::InvalidRequest`].
///
/// ```
/// use butterfly_xrpc::XrpcRequest;
/// let request = XrpcRequest::query("com.atproto.repo.listRecords")
///     .param("repo", "did:plc:ewvi7nxzyoun6zhxrhs64oiz")
///     .param("collection", "app.bsky.feed.post")
///     .param("limit", 50);
/// assert_eq!(request.nsid(), "com.atproto.repo.listRecords");
/// ```
#[derive(Clone, Debug)]
pub struct XrpcRequest {
    kind: MethodKind,
    nsid: String,
    params: Vec<(String, String)>,
    headers: HeaderMap,
    body: Option<(Bytes, HeaderValue)>,
    /// The first problem met while building; the send reports it.
    problem: Option<String>,
    idempotent: bool,
}

impl XrpcRequest {
    /// A query (GET) of `nsid`.
    pub fn query(nsid: &str) -> XrpcRequest {
        XrpcRequest::new(MethodKind::Query, nsid)
    }

    /// A procedure (POST) of `nsid`.
    pub fn procedure(nsid: &str) -> XrpcRequest {
        XrpcRequest::new(MethodKind::Procedure, nsid)
    }

    fn new(kind: MethodKind, nsid: &str) -> XrpcRequest {
        XrpcRequest {
            kind,
            nsid: nsid.to_owned(),
            params: Vec::new(),
            headers: HeaderMap::new(),
            body: None,
            problem: None,
            idempotent: kind == MethodKind::Query,
        }
    }

    /// Adds a query parameter. Repeat a name for an array parameter.
    pub fn param(mut self, name: &str, value: impl Display) -> XrpcRequest {
        self.params.push((name.to_owned(), value.to_string()));
        self
    }

    /// Adds a query parameter if `value` is `Some`.
    pub fn param_opt(self, name: &str, value: Option<impl Display>) -> XrpcRequest {
        match value {
            Some(value) => self.param(name, value),
            None => self,
        }
    }

    /// Adds a request header, e.g. `atproto-proxy`.
    pub fn header(mut self, name: &str, value: &str) -> XrpcRequest {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            _ => self.fail(format!("header {name:?} is not valid")),
        }
        self
    }

    /// Sets a JSON body (`application/json`).
    pub fn json(mut self, input: &impl Serialize) -> XrpcRequest {
        match serde_json::to_vec(input) {
            Ok(bytes) => {
                let content_type = HeaderValue::from_static("application/json");
                self.body = Some((Bytes::from(bytes), content_type));
            }
            Err(error) => self.fail(format!("input does not serialise: {error}")),
        }
        self
    }

    /// Sets a binary body (a blob, a CAR) and its content type.
    pub fn body(mut self, bytes: impl Into<Bytes>, content_type: &str) -> XrpcRequest {
        match HeaderValue::from_str(content_type) {
            Ok(content_type) => self.body = Some((bytes.into(), content_type)),
            Err(_) => self.fail(format!("content type {content_type:?} is not valid")),
        }
        self
    }

    /// Keeps the first problem: later ones are often its consequences.
    fn fail(&mut self, problem: String) {
        self.problem.get_or_insert(problem);
    }

    /// Marks a procedure as safe to repeat (`putRecord`, `deleteRecord`, `uploadBlob`), so that it is
    /// retried on ambiguous failures too. Queries always are.
    pub fn idempotent(mut self) -> XrpcRequest {
        self.idempotent = true;
        self
    }

    /// The method's NSID, as given.
    pub fn nsid(&self) -> &str {
        &self.nsid
    }

    /// Query or procedure.
    pub fn kind(&self) -> MethodKind {
        self.kind
    }
}

/// A buffered 2xx response.
#[derive(Clone, Debug)]
pub struct XrpcResponse {
    /// The HTTP status (2xx).
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// A streamed 2xx response body, e.g. a `getRepo` CAR. Implements [`AsyncRead`], so it can be handed to
/// `butterfly_repo::car::AsyncCarReader`.
///
/// A failure while reading surfaces as an [`io::Error`] whose inner error (see
/// [`io::Error::get_ref`]) is this crate's [`Error`]: [`Error::Net`] when the transfer broke (kind
/// `TimedOut` for a read timeout), [`Error::TooLarge`] past the size limit (kind `InvalidData`).
/// Interrupted streams are not resumed; call again. The host's concurrency permit is held until the
/// stream is dropped.
pub struct ResponseStream {
    reader: StreamReader<LimitedBody, Bytes>,
    status: u16,
    headers: HeaderMap,
    content_length: Option<u64>,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for ResponseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream")
            .field("status", &self.status)
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

impl ResponseStream {
    /// The HTTP status (2xx).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The `Content-Length` the server announced, if any.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }
}

impl AsyncRead for ResponseStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().reader).poll_read(cx, buf)
    }
}

type ReqwestBody = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The response's chunks, with transport errors and the size limit turned into I/O errors.
struct LimitedBody {
    chunks: ReqwestBody,
    nsid: String,
    url: String,
    attempts: u32,
    limit: Option<u64>,
    seen: u64,
    finished: bool,
}

impl Stream for LimitedBody {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        match this.chunks.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.seen = this.seen.saturating_add(chunk.len() as u64);
                match this.limit {
                    Some(limit) if this.seen > limit => {
                        this.finished = true;
                        let error = Error::TooLarge {
                            nsid: this.nsid.clone(),
                            limit,
                        };
                        Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::InvalidData, error))))
                    }
                    _ => Poll::Ready(Some(Ok(chunk))),
                }
            }
            Poll::Ready(Some(Err(error))) => {
                this.finished = true;
                let source = butterfly_net::Error::from_reqwest(&this.url, error);
                let kind = match source {
                    butterfly_net::Error::Timeout { .. } => io::ErrorKind::TimedOut,
                    _ => io::ErrorKind::Other,
                };
                let error = Error::Net {
                    nsid: this.nsid.clone(),
                    attempts: this.attempts,
                    source,
                };
                Poll::Ready(Some(Err(io::Error::new(kind, error))))
            }
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// An atproto XRPC client for one service (a PDS, a relay, an AppView). Cheap to clone: clones share
/// the HTTP connection pool, the host limiter and, for a logged-in client, the session.
///
/// Calls are cancel-safe in the sense that dropping a call's future abandons the request and gives
/// back the host permit; whether a dropped procedure reached the server is unknown.
#[derive(Clone, Debug)]
pub struct XrpcClient {
    inner: Arc<Inner>,
    pub(crate) session: Option<Arc<SessionState>>,
}

#[derive(Debug)]
struct Inner {
    base: Url,
    http: HttpClient,
    config: ClientConfig,
    host: Arc<Host>,
}

/// What the caller wants from a 2xx response.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Want {
    Buffered { limit: usize },
    Stream { limit: Option<u64> },
}

pub(crate) enum Received {
    Buffered(XrpcResponse),
    Stream(ResponseStream),
}

impl XrpcClient {
    /// A client for the service at `base` (e.g. `https://bsky.social`; any path is ignored, XRPC lives
    /// at `/xrpc/`). Fails if the URL is not http(s) with a host, or the HTTP client cannot be built.
    pub fn new(base: Url, config: ClientConfig) -> Result<XrpcClient, Error> {
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(Error::InvalidRequest(format!(
                "base url {base} is not http(s) with a host"
            )));
        }
        let http = match &config.http {
            Http::Config(http_config) => HttpClient::new(http_config).map_err(Error::HttpClient)?,
            Http::Client(client) => client.clone(),
        };
        let host = config.limits.host(&base);
        Ok(XrpcClient {
            inner: Arc::new(Inner {
                base,
                http,
                config,
                host,
            }),
            session: None,
        })
    }

    /// The same service, HTTP client and limits, without a session.
    pub fn without_session(&self) -> XrpcClient {
        XrpcClient {
            inner: self.inner.clone(),
            session: None,
        }
    }

    pub(crate) fn with_session_state(&self, session: Arc<SessionState>) -> XrpcClient {
        XrpcClient {
            inner: self.inner.clone(),
            session: Some(session),
        }
    }

    /// The service's base URL.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The HTTP client underneath (for non-XRPC requests to the same host, e.g. the PLC directory).
    pub fn http(&self) -> &HttpClient {
        &self.inner.http
    }

    /// Whether calls carry a session's access token.
    pub fn is_authenticated(&self) -> bool {
        self.session.is_some()
    }

    /// Calls a query with string parameters and decodes its JSON output.
    pub async fn query<T: DeserializeOwned>(
        &self,
        nsid: &str,
        params: &[(&str, &str)],
    ) -> Result<T, Error> {
        let mut request = XrpcRequest::query(nsid);
        for (name, value) in params {
            request = request.param(name, value);
        }
        self.send_json(&request).await
    }

    /// Calls a procedure with a JSON input and decodes its JSON output (use `()` or
    /// `serde_json::Value` for methods without output). Not retried on ambiguous failures; see
    /// [`RetryPolicy`].
    pub async fn procedure<I: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        nsid: &str,
        input: &I,
    ) -> Result<T, Error> {
        self.send_json(&XrpcRequest::procedure(nsid).json(&input))
            .await
    }

    /// Sends a request and decodes its JSON output. An empty body decodes as JSON `null`.
    pub async fn send_json<T: DeserializeOwned>(&self, request: &XrpcRequest) -> Result<T, Error> {
        let response = self.send(request).await?;
        decode_json(&request.nsid, &response.body)
    }

    /// Sends a request and reads the whole body, up to [`ClientConfig::max_body_bytes`].
    pub async fn send(&self, request: &XrpcRequest) -> Result<XrpcResponse, Error> {
        self.send_limited(request, self.inner.config.max_body_bytes)
            .await
    }

    /// Sends a request and reads the whole body, up to `max_bytes`.
    pub async fn send_limited(
        &self,
        request: &XrpcRequest,
        max_bytes: usize,
    ) -> Result<XrpcResponse, Error> {
        match self
            .execute(request, Want::Buffered { limit: max_bytes }, None)
            .await?
        {
            Received::Buffered(response) => Ok(response),
            Received::Stream(_) => unreachable!("a buffered call returns a buffered response"),
        }
    }

    /// Sends a request and returns its body as a stream, failing with [`Error::TooLarge`] at once if the
    /// announced length exceeds `max_bytes`, and from the stream once more than that has arrived.
    /// Retries happen only until the response headers arrive.
    pub async fn send_stream(
        &self,
        request: &XrpcRequest,
        max_bytes: Option<u64>,
    ) -> Result<ResponseStream, Error> {
        match self
            .execute(request, Want::Stream { limit: max_bytes }, None)
            .await?
        {
            Received::Stream(stream) => Ok(stream),
            Received::Buffered(_) => unreachable!("a streamed call returns a stream"),
        }
    }

    fn url_for(&self, request: &XrpcRequest) -> Result<Url, Error> {
        let mut url = self
            .inner
            .base
            .join(&format!("/xrpc/{}", request.nsid))
            .map_err(|error| Error::InvalidRequest(format!("{}: {error}", request.nsid)))?;
        if !request.params.is_empty() {
            url.query_pairs_mut().extend_pairs(&request.params);
        }
        Ok(url)
    }

    /// The one request path: limits, auth, retries, refresh on `ExpiredToken`.
    ///
    /// `bearer` overrides the session's access token (the refresh and logout calls send the refresh
    /// token) and turns off the session handling.
    pub(crate) async fn execute(
        &self,
        request: &XrpcRequest,
        want: Want,
        bearer: Option<&str>,
    ) -> Result<Received, Error> {
        let nsid = request.nsid.as_str();
        butterfly_syntax::Nsid::parse(nsid)
            .map_err(|error| Error::InvalidRequest(error.to_string()))?;
        if let Some(problem) = &request.problem {
            return Err(Error::InvalidRequest(format!("{nsid}: {problem}")));
        }
        let url = self.url_for(request)?;
        let method = match request.kind {
            MethodKind::Query => reqwest::Method::GET,
            MethodKind::Procedure => reqwest::Method::POST,
        };
        // What every attempt sends; only the bearer token can change between attempts.
        let mut request_headers = request.headers.clone();
        let accept = match want {
            Want::Buffered { .. } => "application/json, */*;q=0.8",
            Want::Stream { .. } => "*/*",
        };
        request_headers
            .entry(ACCEPT)
            .or_insert(HeaderValue::from_static(accept));
        match &request.body {
            Some((_, content_type)) => {
                request_headers.insert(CONTENT_TYPE, content_type.clone());
            }
            None if request.kind == MethodKind::Procedure => {
                request_headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
            }
            None => {}
        }
        let policy = &self.inner.config.retry;
        let host = &self.inner.host;
        let session = if bearer.is_none() {
            self.session.as_ref()
        } else {
            None
        };
        let mut attempts: u32 = 0;
        // A refresh after `ExpiredToken` earns the call one extra attempt.
        let mut max_attempts = policy.max_attempts.max(1);
        let mut refreshed = false;
        loop {
            // The token to send and, for a session's token, its generation. Taken before the host
            // permit: a refresh is a request to the same host and needs a permit of its own.
            let (token, generation) = match (bearer, session) {
                (Some(token), _) => (Some(token.to_owned()), None),
                (None, Some(session)) => {
                    let access = session.fresh_access_token(self).await?;
                    (Some(access.token), Some(access.generation))
                }
                (None, None) => (None, None),
            };
            let permit = host
                .admit(policy.max_wait)
                .await
                .map_err(|wait| Error::RateLimited {
                    nsid: nsid.to_owned(),
                    retry_after: Some(wait),
                })?;
            attempts += 1;
            let may_retry = attempts < max_attempts;
            let mut builder = self
                .inner
                .http
                .request(method.clone(), &url)
                .map_err(|source| Error::Net {
                    nsid: nsid.to_owned(),
                    attempts,
                    source,
                })?
                .headers(request_headers.clone());
            if let Some(token) = &token {
                builder = builder.bearer_auth(token);
            }
            if let Some((bytes, _)) = &request.body {
                builder = builder.body(bytes.clone());
            }
            if let Want::Buffered { .. } = want {
                builder = builder.timeout(self.inner.config.request_timeout);
            }

            let response = match builder.send().await {
                Ok(response) => response,
                Err(error) => {
                    drop(permit);
                    let source = butterfly_net::Error::from_reqwest(url.as_str(), error);
                    // A failed connection sent nothing; anything else may have reached the server.
                    let unsent = matches!(source, butterfly_net::Error::Connect { .. });
                    let retry = may_retry && (request.idempotent || unsent);
                    back_off_or_fail(policy, nsid, attempts, retry, source).await?;
                    continue;
                }
            };

            let status = response.status().as_u16();
            let now = SystemTime::now();
            let exhausted = host.observe(RateLimitInfo::from_headers(response.headers(), now), now);
            if (200..300).contains(&status) {
                let limit = match want {
                    Want::Stream { limit } => {
                        return stream_response(response, permit, nsid, attempts, limit)
                            .map(Received::Stream);
                    }
                    Want::Buffered { limit } => limit,
                };
                let headers = response.headers().clone();
                match butterfly_net::read_body_limited(response, limit).await {
                    Ok(body) => {
                        let response = XrpcResponse {
                            status,
                            headers,
                            body,
                        };
                        return Ok(Received::Buffered(response));
                    }
                    Err(butterfly_net::Error::TooLarge { .. }) => {
                        return Err(Error::TooLarge {
                            nsid: nsid.to_owned(),
                            limit: limit as u64,
                        });
                    }
                    Err(source) => {
                        drop(permit);
                        // The server answered 2xx, so a procedure has taken effect: only idempotent
                        // calls are worth repeating for their output.
                        let retry = may_retry && request.idempotent;
                        back_off_or_fail(policy, nsid, attempts, retry, source).await?;
                        continue;
                    }
                }
            }

            let retry_after = retry::retry_after(response.headers(), now);
            // The error body is only for the message; if it cannot be read, the status still stands.
            let body = butterfly_net::read_body_limited(response, MAX_ERROR_BODY_BYTES)
                .await
                .unwrap_or_default();
            drop(permit);
            let (error_name, message) = parse_error_body(&body);

            if let (Some(session), Some(generation)) = (session, generation) {
                if matches!(status, 400 | 401)
                    && error_name.as_deref() == Some("ExpiredToken")
                    && !refreshed
                {
                    refreshed = true;
                    max_attempts += 1;
                    tracing::debug!(nsid, "access token expired; refreshing the session");
                    session.refresh_if_current(self, generation).await?;
                    continue;
                }
            }

            if status == 429 || status >= 500 {
                // 429 and 503 say the request was not processed; other 5xx may have been half done.
                let retryable = request.idempotent || status == 429 || status == 503;
                let wait = retry_after.or(if status == 429 { exhausted } else { None });
                if let Some(wait) = wait.filter(|wait| *wait > policy.max_wait) {
                    // Any other call to the host would get the same answer.
                    host.block_for(wait);
                    return Err(Error::RateLimited {
                        nsid: nsid.to_owned(),
                        retry_after: Some(wait),
                    });
                }
                if retryable && may_retry {
                    match wait {
                        // Every request to the host waits, in `admit`.
                        Some(wait) => host.block_for(wait),
                        None => {
                            let wait = policy.backoff(attempts, retry::jitter_seed());
                            tokio::time::sleep(wait).await;
                        }
                    }
                    tracing::debug!(
                        nsid,
                        attempts,
                        status,
                        ?wait,
                        "retrying after a server error"
                    );
                    continue;
                }
                if status == 429 {
                    return Err(Error::RateLimited {
                        nsid: nsid.to_owned(),
                        retry_after: wait,
                    });
                }
            }
            return Err(Error::Xrpc {
                nsid: nsid.to_owned(),
                status,
                error: error_name,
                message,
                attempts,
            });
        }
    }
}

/// After a transport error (sending, or reading a 2xx body): sleeps the backoff and returns `Ok` when
/// the call is to be tried again, else the error. Only transient errors are retried, whatever `retry`
/// says.
async fn back_off_or_fail(
    policy: &RetryPolicy,
    nsid: &str,
    attempts: u32,
    retry: bool,
    source: butterfly_net::Error,
) -> Result<(), Error> {
    if !(retry && source.is_transient()) {
        return Err(Error::Net {
            nsid: nsid.to_owned(),
            attempts,
            source,
        });
    }
    let wait = policy.backoff(attempts, retry::jitter_seed());
    tracing::debug!(nsid, attempts, ?wait, error = %source, "retrying after a transport error");
    tokio::time::sleep(wait).await;
    Ok(())
}

fn stream_response(
    response: reqwest::Response,
    permit: OwnedSemaphorePermit,
    nsid: &str,
    attempts: u32,
    limit: Option<u64>,
) -> Result<ResponseStream, Error> {
    let content_length = response.content_length();
    if let (Some(limit), Some(length)) = (limit, content_length) {
        if length > limit {
            return Err(Error::TooLarge {
                nsid: nsid.to_owned(),
                limit,
            });
        }
    }
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let url = response.url().to_string();
    let body = LimitedBody {
        chunks: Box::pin(response.bytes_stream()),
        nsid: nsid.to_owned(),
        url,
        attempts,
        limit,
        seen: 0,
        finished: false,
    };
    Ok(ResponseStream {
        reader: StreamReader::new(body),
        status,
        headers,
        content_length,
        _permit: permit,
    })
}

/// Decodes a JSON output; an empty body is read as `null` (for methods without output).
pub(crate) fn decode_json<T: DeserializeOwned>(nsid: &str, body: &[u8]) -> Result<T, Error> {
    let result = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::from_value(serde_json::Value::Null)
    } else {
        serde_json::from_slice(body)
    };
    result.map_err(|error| Error::Decode {
        nsid: nsid.to_owned(),
        message: error.to_string(),
    })
}

/// The `{error, message}` of an XRPC error body, each `None` if absent or not a string.
fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: Option<serde_json::Value>,
        message: Option<serde_json::Value>,
    }
    let text = |value: Option<serde_json::Value>| match value {
        Some(serde_json::Value::String(text)) => Some(text),
        _ => None,
    };
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => (text(parsed.error), text(parsed.message)),
        Err(_) => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        let check = |body: &str, error: Option<&str>, message: Option<&str>| {
            let (found_error, found_message) = parse_error_body(body.as_bytes());
            assert_eq!(found_error.as_deref(), error, "{body}");
            assert_eq!(found_message.as_deref(), message, "{body}");
        };
        check(
            r#"{"error":"RecordNotFound","message":"Could not locate record"}"#,
            Some("RecordNotFound"),
            Some("Could not locate record"),
        );
        check(r#"{"error":"ExpiredToken"}"#, Some("ExpiredToken"), None);
        check(r#"{"error":42,"message":"odd"}"#, None, Some("odd"));
        check("<html>bad gateway</html>", None, None);
        check("", None, None);
    }

    #[test]
    fn empty_bodies_decode_as_null() {
        let unit: () = decode_json("a.b.c", b"").expect("empty is null");
        assert_eq!(unit, ());
        let value: Option<u32> = decode_json("a.b.c", b" \n").expect("empty is null");
        assert_eq!(value, None);
        let error = decode_json::<Vec<u32>>("a.b.c", b"{").expect_err("bad json");
        assert!(matches!(error, Error::Decode { ref nsid, .. } if nsid == "a.b.c"));
    }

    #[test]
    fn urls_put_xrpc_at_the_root() {
        let client = XrpcClient::new(
            Url::parse("https://pds.example.com/some/path").expect("valid url"),
            ClientConfig::default(),
        )
        .expect("client builds");
        let request = XrpcRequest::query("com.atproto.repo.getRecord")
            .param("repo", "did:plc:abc")
            .param("rkey", "a b&c");
        assert_eq!(
            client.url_for(&request).expect("url").as_str(),
            "https://pds.example.com/xrpc/com.atproto.repo.getRecord?repo=did%3Aplc%3Aabc&rkey=a+b%26c"
        );
        let bare = XrpcRequest::procedure("com.atproto.server.refreshSession");
        assert_eq!(
            client.url_for(&bare).expect("url").as_str(),
            "https://pds.example.com/xrpc/com.atproto.server.refreshSession"
        );
        assert!(XrpcClient::new(
            Url::parse("ftp://pds.example.com/").expect("valid url"),
            ClientConfig::default()
        )
        .is_err());
    }
}
