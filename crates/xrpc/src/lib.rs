//! An atproto XRPC client: queries and procedures with typed errors, sessions, retries that obey the
//! server, per-host limits, and streamed bodies.
//!
//! [`XrpcClient`] talks to one service (a PDS, a relay). Its generic calls are [`XrpcClient::query`],
//! [`XrpcClient::procedure`] and, for full control (binary bodies, headers, streaming), an
//! [`XrpcRequest`] sent with [`XrpcClient::send_json`], [`XrpcClient::send`] or
//! [`XrpcClient::send_stream`]. Typed wrappers cover `com.atproto.repo.*` ([`RepoApi`]) and
//! `com.atproto.sync.*` ([`SyncApi`]); list calls have a [`Pager`]. [`XrpcClient::login`] turns a client
//! into an [`Agent`], whose calls carry a session that refreshes itself and can be persisted through a
//! [`SessionStore`].
//!
//! All requests go through `butterfly_net::HttpClient`, so the public-address policy, connect and read
//! timeouts apply; bodies are read within size limits ([`ClientConfig`]).
//!
//! # Failures
//!
//! Every call returns one [`Error`]. What the client does before it gives up:
//!
//! | failure | what happens | returned |
//! |---|---|---|
//! | connection refused, DNS, TLS | retried with backoff (nothing was sent, so procedures too) | [`Error::Net`] |
//! | timeout, reset after sending | queries and idempotent procedures retried; other procedures not (the write may have happened) | [`Error::Net`] |
//! | 5xx | queries and idempotent procedures retried with backoff (or after `Retry-After`); other procedures only on 503 | [`Error::Xrpc`] |
//! | 429 with `Retry-After` (seconds or date) or `ratelimit-reset` | the host is blocked for that long and the call retried; longer than [`RetryPolicy::max_wait`]: fails at once | [`Error::RateLimited`] with the wait |
//! | 429 without either | retried with backoff | [`Error::RateLimited`] |
//! | `ratelimit-remaining: 0` on any response | every request to that host waits until `ratelimit-reset` (or fails at once if longer than `max_wait`) | [`Error::RateLimited`] |
//! | other 4xx | not retried | [`Error::Xrpc`] with `error` and `message` |
//! | 400/401 `ExpiredToken` (agents) | session refreshed (once, coalesced), call repeated once | [`Error::Auth`] if the refresh is refused |
//! | 2xx with invalid JSON | not retried | [`Error::Decode`] |
//! | body over the limit | not retried; checked on `Content-Length` and while reading | [`Error::TooLarge`] |
//! | stream broken mid-body | the [`ResponseStream`] read fails; not resumed | `io::Error` wrapping [`Error::Net`] |
//!
//! Retries and waits happen under the host's limits ([`HostLimits`]): a concurrency cap and an optional
//! token bucket per origin, shared by every client built with the same registry.
//!
//! What this crate does not do: resolve handles or DIDs to find a PDS (that is `butterfly-identity`;
//! hand the PDS URL in), validate records against Lexicons, speak OAuth (app passwords only), or
//! subscribe to event streams (`butterfly-firehose`).
//!
//! Specs: <https://atproto.com/specs/xrpc>, <https://atproto.com/specs/sync>,
//! <https://docs.bsky.app/docs/advanced-guides/rate-limits>.
//!
//! ```no_run
//! use butterfly_xrpc::{ClientConfig, CreateRecord, XrpcClient};
//! use tokio::io::AsyncReadExt;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = XrpcClient::new(url::Url::parse("https://bsky.social")?, ClientConfig::default())?;
//!
//! // A query with string parameters, decoded into any serde type.
//! let described: serde_json::Value = client
//!     .query("com.atproto.repo.describeRepo", &[("repo", "bsky.app")])
//!     .await?;
//! println!("{}", described["did"]);
//!
//! // Log in with an app password and write a record.
//! let agent = client.login("alice.bsky.social", "app-password").await?;
//! let record = serde_json::json!({
//!     "$type": "app.bsky.feed.post",
//!     "text": "hello",
//!     "createdAt": "2024-01-01T00:00:00Z",
//! });
//! let created = agent
//!     .repo()
//!     .create_record(&CreateRecord::new(agent.did().as_str(), "app.bsky.feed.post", record))
//!     .await?;
//! println!("created {}", created.uri);
//!
//! // Stream the whole repo as a CAR (any AsyncRead consumer works).
//! let mut car = client.sync().get_repo(agent.did(), None).await?;
//! let mut bytes = Vec::new();
//! car.read_to_end(&mut bytes).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod client;
mod error;
pub mod limits;
mod pager;
pub mod repo;
pub mod retry;
pub mod session;
pub mod sync;

pub use client::{
    ClientConfig, Http, MethodKind, ResponseStream, XrpcClient, XrpcRequest, XrpcResponse,
};
pub use error::Error;
pub use limits::{HostLimits, LimitsConfig, RateLimit};
pub use pager::{Page, Pager};
pub use repo::{
    ApplyWrites, CreateRecord, DeleteRecord, ListRecords, PutRecord, RepoApi, WriteOp, WriteResult,
};
pub use retry::{RateLimitInfo, RetryPolicy};
pub use session::{Agent, AgentConfig, CreateSession, MemorySessionStore, Session, SessionStore};
pub use sync::SyncApi;

pub use butterfly_net::{HttpClient, HttpConfig};
pub use url;
