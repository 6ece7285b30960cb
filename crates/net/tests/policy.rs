//! The address policy and limits against a real local HTTP server.

use std::time::Duration;

use butterfly_net::{Error, HttpClient, HttpConfig};
use url::Url;

const LOOKUP: Duration = Duration::from_secs(10);

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let port = listener.local_addr().expect("local addr").port();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://localhost:{port}")
}

fn router() -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/small", get(|| async { "did:plc:abc" }))
        .route("/big", get(|| async { "x".repeat(10_000) }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
}

#[tokio::test]
async fn names_that_resolve_to_loopback_are_refused_unless_allowed() {
    let base = serve(router()).await;
    let url = Url::parse(&format!("{base}/small")).expect("url");

    let strict = HttpClient::new(&HttpConfig::default()).expect("client");
    let error = strict
        .get_limited(&url, "text/plain", 100, LOOKUP)
        .await
        .expect_err("localhost is not public");
    assert!(
        matches!(error, Error::NonPublicAddress { ref host } if host == "localhost"),
        "{error:?}"
    );

    let open = HttpClient::new(&HttpConfig::with_private_network(true)).expect("client");
    let response = open
        .get_limited(&url, "text/plain", 100, LOOKUP)
        .await
        .expect("allowed when private networks are");
    assert_eq!(response.status, 200);
    assert_eq!(&response.body[..], b"did:plc:abc");
}

#[tokio::test]
async fn bodies_over_the_limit_fail() {
    let base = serve(router()).await;
    let url = Url::parse(&format!("{base}/big")).expect("url");
    let open = HttpClient::new(&HttpConfig::with_private_network(true)).expect("client");
    let error = open
        .get_limited(&url, "text/plain", 9_999, LOOKUP)
        .await
        .expect_err("over the limit");
    assert!(
        matches!(error, Error::TooLarge { limit: 9_999, .. }),
        "{error:?}"
    );
    let response = open
        .get_limited(&url, "text/plain", 10_000, LOOKUP)
        .await
        .expect("at the limit");
    assert_eq!(response.body.len(), 10_000);
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let base = serve(router()).await;
    let url = Url::parse(&format!("{base}/slow")).expect("url");
    let config = HttpConfig {
        read_timeout: Duration::from_millis(200),
        ..HttpConfig::with_private_network(true)
    };
    let client = HttpClient::new(&config).expect("client");
    let error = client
        .get_limited(&url, "text/plain", 100, LOOKUP)
        .await
        .expect_err("times out");
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    assert!(error.is_transient());
}

#[tokio::test]
async fn a_whole_body_read_has_a_deadline() {
    let base = serve(router()).await;
    let url = Url::parse(&format!("{base}/slow")).expect("url");
    // The read timeout (30 s) alone would wait for the answer; the call's deadline does not.
    let client = HttpClient::new(&HttpConfig::with_private_network(true)).expect("client");
    let error = client
        .get_limited(&url, "text/plain", 100, Duration::from_millis(200))
        .await
        .expect_err("past the deadline");
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
}

#[tokio::test]
async fn refused_connections_are_transient_errors() {
    // A socket bound but never listening, held for the whole test: connections to its port are
    // refused, and no other test can take the port meanwhile.
    let closed = tokio::net::TcpSocket::new_v4().expect("socket");
    closed
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let port = closed.local_addr().expect("addr").port();
    let url = Url::parse(&format!("http://127.0.0.1:{port}/")).expect("url");
    let client = HttpClient::new(&HttpConfig::with_private_network(true)).expect("client");
    let error = client
        .get_limited(&url, "text/plain", 100, LOOKUP)
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    assert!(error.is_transient());
    drop(closed);
}
