//! A scriptable WebSocket server on loopback, and helpers shared by the client tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use butterfly_stream::{BackoffConfig, StreamConfig};
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

/// Every test is bounded: no single wait is longer than this.
pub const WAIT: Duration = Duration::from_secs(10);

/// One accepted connection, handed to the script.
pub struct Conn {
    /// 0 for the first connection, 1 for the next, ...
    pub index: usize,
    /// The request's query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The request's headers.
    pub headers: HeaderMap,
    /// The socket.
    pub socket: WebSocket,
}

impl Conn {
    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        param(&self.query, name)
    }
}

/// What a connection asked for, kept for the test to check afterwards.
#[derive(Clone, Debug)]
pub struct Seen {
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
}

impl Seen {
    pub fn param(&self, name: &str) -> Option<&str> {
        param(&self.query, name)
    }

    pub fn params(&self, name: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

type Script = Arc<dyn Fn(Conn) -> BoxFuture<'static, ()> + Send + Sync>;

#[derive(Clone)]
struct AppState {
    script: Script,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A running test server.
pub struct Server {
    /// `127.0.0.1:port`.
    pub authority: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// `ws://127.0.0.1:port{path}`.
    pub fn ws(&self, path: &str) -> String {
        format!("ws://{}{path}", self.authority)
    }

    /// `http://127.0.0.1:port`.
    pub fn http(&self) -> String {
        format!("http://{}", self.authority)
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Serves WebSocket upgrades at `path` on 127.0.0.1, running `script` for each connection.
pub async fn serve<F, Fut>(path: &str, script: F) -> Server
where
    F: Fn(Conn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let script: Script = Arc::new(move |conn| Box::pin(script(conn)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = AppState {
        script,
        seen: seen.clone(),
    };
    let router = axum::Router::new()
        .route(path, axum::routing::get(upgrade))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Server { authority, seen }
}

async fn upgrade(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
    let index = {
        let mut seen = state.seen.lock().unwrap();
        seen.push(Seen {
            query: query.clone(),
            headers: headers.clone(),
        });
        seen.len() - 1
    };
    upgrade.on_upgrade(move |socket| {
        (state.script)(Conn {
            index,
            query,
            headers,
            socket,
        })
    })
}

/// Short intervals so that reconnects happen within a test's time. The stall timeout stays long
/// enough that a test process starved of CPU (a single-threaded runtime, a loaded machine) is not
/// taken for a stalled server; tests of the stall watchdog set their own.
pub fn fast_config() -> StreamConfig {
    let mut config = StreamConfig::with_private_network(true);
    config.queue_capacity = 16;
    config.ping_interval = Duration::from_millis(100);
    config.stall_timeout = Duration::from_secs(5);
    config.backoff = BackoffConfig {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(100),
        reset_after: Duration::from_secs(60),
    };
    config.network.connect_timeout = Duration::from_secs(5);
    config
}

/// The next item, failing the test if none comes within [`WAIT`] or the channel ends.
pub async fn next<T>(items: &mut mpsc::Receiver<T>) -> T {
    tokio::time::timeout(WAIT, items.recv())
        .await
        .expect("an item within the wait")
        .expect("the channel is still open")
}

/// Keeps a connection open and answering pings until the client goes away.
pub async fn idle(socket: &mut WebSocket) {
    while let Some(Ok(_)) = socket.recv().await {}
}
