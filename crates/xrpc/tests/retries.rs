//! Retries, rate limits, limits and failure classes, against small local axum servers whose handlers
//! count (and hold) requests. Everything runs on 127.0.0.1.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::Response;
use axum::routing::{any, get};
use axum::Router;
use butterfly_xrpc::{
    ClientConfig, Error, HostLimits, LimitsConfig, RetryPolicy, XrpcClient, XrpcRequest,
};
use bytes::Bytes;
use local_server::{serve, unix_now};
use tokio::io::AsyncReadExt;
use url::Url;

mod local_server;

const NSID: &str = "com.example.test";
const PATH: &str = "/xrpc/com.example.test";

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_wait: Duration::from_secs(5),
    }
}

fn config() -> ClientConfig {
    ClientConfig {
        retry: fast_retries(),
        ..ClientConfig::with_private_network(true)
    }
}

fn client(base: &Url) -> XrpcClient {
    XrpcClient::new(base.clone(), config()).expect("client builds")
}

fn respond(status: u16, headers: &[(&str, String)], body: impl Into<Body>) -> Response<Body> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    builder.body(body.into()).expect("valid test response")
}

fn json_error(status: u16, error: &str) -> Response<Body> {
    respond(
        status,
        &[("content-type", "application/json".into())],
        format!(r#"{{"error":"{error}","message":"test says {error}"}}"#),
    )
}

fn ok_json() -> Response<Body> {
    respond(
        200,
        &[("content-type", "application/json".into())],
        r#"{"ok":true}"#,
    )
}

/// A server whose `n`th request (from 1) gets `answer(n)`; returns its URL and the request counter.
async fn scripted(
    answer: impl Fn(usize) -> Response<Body> + Clone + Send + Sync + 'static,
) -> (Url, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let router = Router::new().route(
        PATH,
        any(move || {
            let answer = answer.clone();
            let counter = counter.clone();
            async move { answer(counter.fetch_add(1, Ordering::SeqCst) + 1) }
        }),
    );
    (serve(router).await, count)
}

#[tokio::test]
async fn retry_after_then_503_then_success_takes_three_requests() {
    let (base, count) = scripted(|n| match n {
        1 => respond(429, &[("retry-after", "1".into())], "{}"),
        2 => json_error(503, "NotEnoughResources"),
        _ => ok_json(),
    })
    .await;
    let out: serde_json::Value = client(&base)
        .query(NSID, &[])
        .await
        .expect("succeeds after retries");
    assert_eq!(out, serde_json::json!({"ok": true}));
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn procedures_retry_on_429_and_503_but_not_on_other_5xx() {
    let (base, count) = scripted(|n| match n {
        1 => respond(429, &[("retry-after", "0".into())], "{}"),
        2 => json_error(503, "NotEnoughResources"),
        _ => ok_json(),
    })
    .await;
    let out: serde_json::Value = client(&base)
        .procedure(NSID, &serde_json::json!({"x": 1}))
        .await
        .expect("succeeds after retries");
    assert_eq!(out["ok"], true);
    assert_eq!(count.load(Ordering::SeqCst), 3);

    // A 500 on a procedure may have half happened: returned at once.
    let (base, count) = scripted(|_| json_error(500, "InternalServerError")).await;
    let error = client(&base)
        .procedure::<_, serde_json::Value>(NSID, &serde_json::json!({}))
        .await
        .expect_err("500 fails");
    assert!(
        matches!(
            error,
            Error::Xrpc {
                status: 500,
                attempts: 1,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // The same procedure marked idempotent is retried to the limit, like a query.
    let request = XrpcRequest::procedure(NSID)
        .json(&serde_json::json!({}))
        .idempotent();
    let error = client(&base)
        .send(&request)
        .await
        .expect_err("500 keeps failing");
    assert!(
        matches!(
            error,
            Error::Xrpc {
                status: 500,
                attempts: 4,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 1 + 4);
}

#[tokio::test]
async fn retry_after_beyond_the_cap_fails_at_once_and_blocks_the_host() {
    let (base, count) = scripted(|_| respond(429, &[("retry-after", "3600".into())], "{}")).await;
    let client = client(&base);
    let call = client.query::<serde_json::Value>(NSID, &[]);
    let error = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("does not sleep for an hour")
        .expect_err("rate limited");
    match &error {
        Error::RateLimited { nsid, retry_after } => {
            assert_eq!(nsid, NSID);
            assert_eq!(*retry_after, Some(Duration::from_secs(3600)));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(error.is_retryable());
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // The host asked for an hour: the next call does not even reach it.
    let error = client
        .query::<serde_json::Value>(NSID, &[])
        .await
        .expect_err("still blocked");
    assert!(
        matches!(error, Error::RateLimited { retry_after: Some(wait), .. } if wait > Duration::from_secs(3500))
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
    let blocked = client
        .config()
        .limits
        .blocked_for(&base)
        .expect("host is blocked");
    assert!(blocked > Duration::from_secs(3500));
}

#[tokio::test]
async fn absurd_waits_neither_panic_nor_leave_the_host_open() {
    let (base, count) = scripted(|n| match n {
        1 => respond(
            200,
            &[
                ("ratelimit-remaining", "0".into()),
                ("ratelimit-reset", u64::MAX.to_string()),
            ],
            "{}",
        ),
        _ => respond(429, &[("retry-after", "99999999999999999999".into())], "{}"),
    })
    .await;
    let client = client(&base);
    let _: serde_json::Value = client
        .query(NSID, &[])
        .await
        .expect("a reset past the end of time is ignored");
    assert_eq!(client.config().limits.blocked_for(&base), None);
    let error = client
        .query::<serde_json::Value>(NSID, &[])
        .await
        .expect_err("rate limited");
    assert!(
        matches!(error, Error::RateLimited { retry_after: Some(wait), .. } if wait == Duration::from_secs(u64::MAX)),
        "{error:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
    // The wait does not fit the clock, yet the host is blocked (for as long as the cap allows).
    let blocked = client
        .config()
        .limits
        .blocked_for(&base)
        .expect("host is blocked");
    assert!(blocked > Duration::from_secs(300 * 86_400), "{blocked:?}");
}

#[tokio::test]
async fn exhausted_ratelimit_budget_waits_for_the_reset() {
    let reset = unix_now() + 2;
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::<Duration>::new()));
    let seen = arrivals.clone();
    let router = Router::new().route(
        PATH,
        get(move || {
            let seen = seen.clone();
            async move {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("clock after 1970");
                let mut seen = seen.lock().expect("not poisoned");
                seen.push(now);
                let remaining = if seen.len() == 1 { "0" } else { "99" };
                respond(
                    200,
                    &[
                        ("ratelimit-limit", "100".into()),
                        ("ratelimit-remaining", remaining.into()),
                        ("ratelimit-reset", reset.to_string()),
                        ("ratelimit-policy", "100;w=60".into()),
                    ],
                    "{}",
                )
            }
        }),
    );
    let base = serve(router).await;
    let client = client(&base);
    let _: serde_json::Value = client.query(NSID, &[]).await.expect("first call");
    let info = client
        .config()
        .limits
        .rate_limit_info(&base)
        .expect("headers recorded");
    assert_eq!(info.remaining, Some(0));
    assert_eq!(info.policy.as_deref(), Some("100;w=60"));
    let _: serde_json::Value = client.query(NSID, &[]).await.expect("second call");
    let arrivals = arrivals.lock().expect("not poisoned");
    assert_eq!(arrivals.len(), 2);
    // The second request reached the server only once the budget was reset.
    assert!(
        arrivals[1] >= Duration::from_secs(reset) - Duration::from_millis(20),
        "second request at {:?}, reset at {reset}",
        arrivals[1]
    );
}

#[tokio::test]
async fn exhausted_budget_with_a_far_reset_fails_without_a_request() {
    let reset = unix_now() + 3600;
    let (base, count) = scripted(move |_| {
        respond(
            200,
            &[
                ("ratelimit-remaining", "0".into()),
                ("ratelimit-reset", reset.to_string()),
            ],
            "{}",
        )
    })
    .await;
    let client = client(&base);
    let _: serde_json::Value = client.query(NSID, &[]).await.expect("first call");
    let error = client
        .query::<serde_json::Value>(NSID, &[])
        .await
        .expect_err("budget exhausted for an hour");
    assert!(
        matches!(error, Error::RateLimited { retry_after: Some(wait), .. } if wait > Duration::from_secs(3500)),
        "{error:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn client_errors_are_typed_and_not_retried() {
    let (base, count) = scripted(|_| json_error(400, "InvalidRequest")).await;
    let error = client(&base)
        .query::<serde_json::Value>(NSID, &[("a", "b")])
        .await
        .expect_err("400");
    match &error {
        Error::Xrpc {
            nsid,
            status,
            error,
            message,
            attempts,
        } => {
            assert_eq!(nsid, NSID);
            assert_eq!(*status, 400);
            assert_eq!(error.as_deref(), Some("InvalidRequest"));
            assert_eq!(message.as_deref(), Some("test says InvalidRequest"));
            assert_eq!(*attempts, 1);
        }
        other => panic!("expected Xrpc, got {other:?}"),
    }
    assert_eq!(error.xrpc_error(), Some("InvalidRequest"));
    assert!(!error.is_retryable());
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // A 404 from something that is not an XRPC server: no error name.
    let (base, count) = scripted(|_| respond(404, &[], "<html>not found</html>")).await;
    let error = client(&base)
        .query::<serde_json::Value>(NSID, &[])
        .await
        .expect_err("404");
    assert!(
        matches!(
            error,
            Error::Xrpc {
                status: 404,
                error: None,
                message: None,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn invalid_json_is_a_decode_error() {
    let (base, count) = scripted(|_| respond(200, &[], "{not json")).await;
    let error = client(&base)
        .query::<serde_json::Value>(NSID, &[])
        .await
        .expect_err("bad json");
    assert!(
        matches!(error, Error::Decode { ref nsid, .. } if nsid == NSID),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // Valid JSON of the wrong shape is a decode error too.
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Expected {
        repos: Vec<String>,
    }
    let (base, _) = scripted(|_| ok_json()).await;
    let error = client(&base)
        .query::<Expected>(NSID, &[])
        .await
        .expect_err("wrong shape");
    assert!(matches!(error, Error::Decode { .. }), "{error:?}");
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(4096));
    let body = big.clone();
    let (base, count) = scripted(move |_| respond(200, &[], body.clone())).await;
    let client = XrpcClient::new(
        base.clone(),
        ClientConfig {
            max_body_bytes: 1024,
            ..config()
        },
    )
    .expect("client builds");
    let error = client
        .query::<serde_json::Value>(NSID, &[])
        .await
        .expect_err("too large");
    assert!(
        matches!(error, Error::TooLarge { limit: 1024, .. }),
        "{error:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // Streamed, with Content-Length: refused before reading.
    let error = client
        .send_stream(&XrpcRequest::query(NSID), Some(1000))
        .await
        .expect_err("announced length too large");
    assert!(
        matches!(error, Error::TooLarge { limit: 1000, .. }),
        "{error:?}"
    );

    // Streamed and chunked (no Content-Length): the read fails once past the limit.
    let router = Router::new().route(
        PATH,
        get(|| async {
            let chunks = (0..8).map(|_| Ok::<_, io::Error>(Bytes::from(vec![7u8; 512])));
            respond(
                200,
                &[],
                Body::from_stream(futures_util::stream::iter(chunks)),
            )
        }),
    );
    let chunked = serve(router).await;
    let client = XrpcClient::new(chunked, config()).expect("client builds");
    let mut stream = client
        .send_stream(&XrpcRequest::query(NSID), Some(1000))
        .await
        .expect("headers are fine");
    assert_eq!(stream.content_length(), None);
    let mut sink = Vec::new();
    let error = stream
        .read_to_end(&mut sink)
        .await
        .expect_err("past the limit");
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    let inner = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
        .expect("wraps our error");
    assert!(
        matches!(inner, Error::TooLarge { limit: 1000, .. }),
        "{inner:?}"
    );
    assert!(sink.len() <= 1000);

    // Without a limit the same stream reads to the end.
    let mut stream = client
        .send_stream(&XrpcRequest::query(NSID), None)
        .await
        .expect("headers are fine");
    let mut all = Vec::new();
    stream.read_to_end(&mut all).await.expect("reads all");
    assert_eq!(all.len(), 8 * 512);
}

#[tokio::test]
async fn a_stream_broken_mid_body_fails_the_read() {
    // The test feeds the body: a first chunk, then (once the client has read it) an error.
    let (chunk_tx, chunk_rx) = tokio::sync::mpsc::unbounded_channel::<io::Result<Bytes>>();
    let chunk_rx = Arc::new(std::sync::Mutex::new(Some(chunk_rx)));
    let router = Router::new().route(
        PATH,
        get(move || {
            let receiver = chunk_rx.lock().expect("not poisoned").take();
            async move {
                let receiver = receiver.expect("one request only");
                let chunks = futures_util::stream::unfold(receiver, |mut receiver| async move {
                    receiver.recv().await.map(|chunk| (chunk, receiver))
                });
                respond(200, &[], Body::from_stream(chunks))
            }
        }),
    );
    let base = serve(router).await;
    chunk_tx
        .send(Ok(Bytes::from(vec![1u8; 1000])))
        .expect("server holds the receiver");
    let mut stream = client(&base)
        .send_stream(&XrpcRequest::query(NSID), None)
        .await
        .expect("headers arrive");
    let mut first = vec![0u8; 1000];
    stream.read_exact(&mut first).await.expect("first chunk");
    chunk_tx
        .send(Err(io::Error::other("the server gave up")))
        .expect("server holds the receiver");
    let mut sink = Vec::new();
    let error = stream
        .read_to_end(&mut sink)
        .await
        .expect_err("body breaks");
    let inner = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
        .expect("wraps our error");
    assert!(
        matches!(inner, Error::Net { ref nsid, .. } if nsid == NSID),
        "{inner:?}"
    );
    assert!(inner.is_retryable());
}

#[tokio::test]
async fn the_host_concurrency_limit_is_shared_between_clients() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (entered_tx, mut entered_rx) = tokio::sync::watch::channel(0usize);
    let entered_tx = Arc::new(entered_tx);
    let router = {
        let (in_flight, max_in_flight, gate) =
            (in_flight.clone(), max_in_flight.clone(), gate.clone());
        Router::new().route(
            PATH,
            get(move || {
                let (in_flight, max_in_flight, gate, entered_tx) = (
                    in_flight.clone(),
                    max_in_flight.clone(),
                    gate.clone(),
                    entered_tx.clone(),
                );
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    max_in_flight.fetch_max(now, Ordering::SeqCst);
                    entered_tx.send_modify(|entered| *entered += 1);
                    gate.acquire().await.expect("gate open").forget();
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    ok_json()
                }
            }),
        )
    };
    let base = serve(router).await;
    let limits = HostLimits::new(LimitsConfig {
        max_concurrent: 2,
        rate: None,
    });
    let make = || {
        XrpcClient::new(
            base.clone(),
            ClientConfig {
                limits: limits.clone(),
                ..config()
            },
        )
        .expect("client builds")
    };
    let (first, second) = (make(), make());
    let n_calls = 6;
    let calls: Vec<_> = (0..n_calls)
        .map(|index| {
            let client = if index % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tokio::spawn(async move { client.query::<serde_json::Value>(NSID, &[]).await })
        })
        .collect();
    // Let one request finish at a time, each once the server holds as many as the limit allows.
    for released in 0..n_calls {
        let expected = (released + 2).min(n_calls);
        entered_rx
            .wait_for(|entered| *entered >= expected)
            .await
            .expect("server alive");
        gate.add_permits(1);
    }
    for call in calls {
        call.await.expect("task").expect("call succeeds");
    }
    assert_eq!(max_in_flight.load(Ordering::SeqCst), 2);
    assert_eq!(limits.n_hosts(), 1);
}

#[tokio::test]
async fn refused_connections_are_retried_then_reported() {
    // A socket bound but never listening, held for the whole test: connections to its port are
    // refused, and no other test can take the port meanwhile.
    let closed = tokio::net::TcpSocket::new_v4().expect("socket");
    closed
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind loopback");
    let address = closed.local_addr().expect("local address");
    let base = Url::parse(&format!("http://{address}")).expect("valid url");
    let client = client(&base);
    let error = client
        .query::<serde_json::Value>(NSID, &[])
        .await
        .expect_err("nothing listens");
    match &error {
        Error::Net {
            attempts, source, ..
        } => {
            assert_eq!(*attempts, 4);
            assert!(
                matches!(source, butterfly_net::Error::Connect { .. }),
                "{source:?}"
            );
        }
        other => panic!("expected Net, got {other:?}"),
    }
    assert!(error.is_retryable());
    // Nothing was sent, so a procedure is retried too.
    let error = client
        .procedure::<_, serde_json::Value>(NSID, &serde_json::json!({}))
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, Error::Net { attempts: 4, .. }), "{error:?}");
    drop(closed);
}

#[tokio::test]
async fn timeouts_retry_queries_but_not_procedures() {
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    let router = Router::new().route(
        PATH,
        any(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                // Never answers.
                std::future::pending::<Response<Body>>().await
            }
        }),
    );
    let base = serve(router).await;
    // Long enough that each request surely reaches the handler before the client gives up, even on
    // a loaded machine, so that the server's count is exact.
    let client = XrpcClient::new(
        base,
        ClientConfig {
            request_timeout: Duration::from_secs(2),
            retry: RetryPolicy {
                max_attempts: 2,
                ..fast_retries()
            },
            ..config()
        },
    )
    .expect("client builds");
    let timed_out_after = |error: Error| match error {
        Error::Net {
            attempts,
            source: butterfly_net::Error::Timeout { .. },
            ..
        } => attempts,
        other => panic!("expected a timeout, got {other:?}"),
    };
    let error = client
        .query::<serde_json::Value>(NSID, &[])
        .await
        .expect_err("times out");
    assert_eq!(timed_out_after(error), 2);
    assert_eq!(count.load(Ordering::SeqCst), 2);

    // The procedure may have been applied: one attempt only.
    let error = client
        .procedure::<_, serde_json::Value>(NSID, &serde_json::json!({}))
        .await
        .expect_err("times out");
    assert_eq!(timed_out_after(error), 1);
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn bad_requests_are_refused_before_sending() {
    let (base, count) = scripted(|_| ok_json()).await;
    let client = client(&base);
    let error = client
        .query::<serde_json::Value>("not an nsid", &[])
        .await
        .expect_err("invalid nsid");
    assert!(matches!(error, Error::InvalidRequest(_)), "{error:?}");
    let error = client
        .send(&XrpcRequest::query(NSID).header("bad header", "x"))
        .await
        .expect_err("invalid header");
    assert!(matches!(error, Error::InvalidRequest(_)), "{error:?}");
    let error = client
        .send(&XrpcRequest::procedure(NSID).body(vec![1u8], "text/plain\n"))
        .await
        .expect_err("invalid content type");
    assert!(matches!(error, Error::InvalidRequest(_)), "{error:?}");
    assert_eq!(count.load(Ordering::SeqCst), 0);
}
