//! What the tests against small fake services share: serving an axum router on loopback, and the
//! clock in the unit the services put in their headers and tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use url::Url;

/// Serves `router` on a free port of 127.0.0.1 for the rest of the test; returns its base URL.
pub async fn serve(router: Router) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("test server runs");
    });
    Url::parse(&format!("http://{address}")).expect("valid url")
}

/// Seconds since 1970, as in JWT `exp` claims and `ratelimit-reset` headers.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
