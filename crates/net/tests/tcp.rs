//! `connect_tcp` applies the address policy to protocols reqwest does not carry (WebSocket).

use std::time::Duration;

use butterfly_net::{check_connect_url, connect_tcp, tls_client_config, Error, HttpConfig};
use url::Url;

async fn listener() -> (tokio::net::TcpListener, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let port = listener.local_addr().expect("local addr").port();
    (listener, port)
}

#[tokio::test]
async fn loopback_is_refused_unless_private_networks_are_allowed() {
    let (listener, port) = listener().await;
    let strict = HttpConfig::default();
    for url in [
        format!("ws://127.0.0.1:{port}/xrpc/x"),
        format!("wss://127.0.0.1:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("ws://localhost:{port}/"),
    ] {
        let url = Url::parse(&url).expect("test url parses");
        let error = connect_tcp(&url, &strict)
            .await
            .expect_err("loopback is not public");
        assert!(
            matches!(error, Error::NonPublicAddress { .. }),
            "{url}: {error:?}"
        );
        assert!(
            error.to_string().contains("not a public address"),
            "{error}"
        );
    }

    let open = HttpConfig::with_private_network(true);
    for host in ["127.0.0.1", "localhost"] {
        let url = Url::parse(&format!("ws://{host}:{port}/")).expect("test url parses");
        let stream = connect_tcp(&url, &open).await.expect("allowed");
        tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("accepted in time")
            .expect("accept");
        assert_eq!(stream.peer_addr().expect("peer addr").port(), port);
    }
}

#[tokio::test]
async fn other_schemes_and_missing_hosts_are_invalid() {
    let open = HttpConfig::with_private_network(true);
    for url in [
        "ftp://127.0.0.1/x",
        "ws://user:pw@127.0.0.1:1/",
        "unix:/tmp/socket",
    ] {
        let url = Url::parse(url).expect("test url parses");
        let error = connect_tcp(&url, &open).await.expect_err("invalid");
        assert!(
            matches!(error, Error::InvalidUrl { .. }),
            "{url}: {error:?}"
        );
    }
}

#[test]
fn literal_hosts_are_checked_without_connecting() {
    let strict = HttpConfig::default();
    let open = HttpConfig::with_private_network(true);
    for url in [
        "ws://127.0.0.1:1/",
        "wss://[::1]/",
        "http://169.254.169.254/",
    ] {
        let url = Url::parse(url).expect("test url parses");
        let error = check_connect_url(&url, &strict).expect_err("not public");
        assert!(
            matches!(error, Error::NonPublicAddress { .. }),
            "{url}: {error:?}"
        );
        check_connect_url(&url, &open).expect("allowed");
    }
    // A name is judged when it resolves, not before.
    let by_name = Url::parse("ws://localhost:1/").expect("test url parses");
    check_connect_url(&by_name, &strict).expect("names pass");
    let other = Url::parse("ftp://example.com/").expect("test url parses");
    assert!(matches!(
        check_connect_url(&other, &open),
        Err(Error::InvalidUrl { .. })
    ));
}

#[tokio::test]
async fn a_closed_port_is_a_transient_connect_error() {
    // A socket bound but never listening, held for the whole test: connections to its port are
    // refused, and no other test can take the port meanwhile.
    let closed = tokio::net::TcpSocket::new_v4().expect("socket");
    closed
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind a local port");
    let port = closed.local_addr().expect("local addr").port();
    let url = Url::parse(&format!("ws://127.0.0.1:{port}/")).expect("test url parses");
    let error = connect_tcp(&url, &HttpConfig::with_private_network(true))
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    assert!(error.is_transient());
    drop(closed);
}

#[test]
fn the_tls_configuration_builds() {
    let config = tls_client_config().expect("tls config");
    assert!(config.alpn_protocols.is_empty());
}
