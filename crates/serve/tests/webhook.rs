//! Webhook delivery against an in-process receiver on loopback.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use butterfly_serve::feed::{commit_events, EventFeed};
use butterfly_serve::webhook::{
    CursorStore, Error, FileCursor, Webhook, WebhookConfig, WebhookStats,
};
use butterfly_store::{Batch, EventKind, MemoryStore, Store, StreamEvent};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Generous bound on anything a test waits for; tests normally finish far sooner.
const PATIENCE: Duration = Duration::from_secs(20);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---- the engine side: a store's log and the broadcast ----

type StoreLog = Mutex<MemoryStore>;

struct Engine {
    store: Arc<StoreLog>,
    /// The publisher's end of the broadcast: the feed holds it weakly.
    live: broadcast::Sender<Arc<StreamEvent>>,
    feed: EventFeed,
}

impl Engine {
    fn new(capacity: usize) -> Engine {
        let store = Arc::new(Mutex::new(MemoryStore::new()));
        let (live, _) = broadcast::channel(capacity);
        let feed = EventFeed::new(&live, store.clone());
        Engine { store, live, feed }
    }

    /// Commits events the way the engine does: into the log, then onto the broadcast.
    fn commit(&self, times: impl IntoIterator<Item = i64>) {
        let events = times.into_iter().map(event).collect();
        commit_events(&self.store, &self.live, events).expect("apply");
    }

    /// Applies the log's retention: events older than `before` go.
    fn drop_before(&self, before: i64) {
        lock(&self.store)
            .apply(Batch {
                events_before: Some(before),
                ..Default::default()
            })
            .expect("apply");
    }
}

/// A Jetstream-shaped event, with an escape that must reach the receiver as written.
fn json(time_us: i64) -> String {
    format!(
        r#"{{"did":"did:plc:alice","time_us":{time_us},"kind":"commit","commit":{{"rev":"3l","operation":"create","collection":"app.bsky.feed.post","rkey":"r{time_us}","record":{{"text":"caf\u00e9"}}}}}}"#
    )
}

fn event(time_us: i64) -> StreamEvent {
    StreamEvent {
        time_us,
        did: "did:plc:alice".into(),
        kind: EventKind::Commit,
        collection: Some("app.bsky.feed.post".into()),
        json: json(time_us),
    }
}

// ---- the receiver ----

#[derive(Clone, Debug)]
struct Request {
    /// The URL's query: tells apart the webhooks that post to one receiver.
    query: String,
    first: i64,
    last: i64,
    content_type: String,
    signature: Option<String>,
    body: Bytes,
    status: u16,
    at: Instant,
}

impl Request {
    fn times(&self) -> Vec<i64> {
        let body: serde_json::Value = serde_json::from_slice(&self.body).expect("json body");
        body["events"]
            .as_array()
            .expect("events array")
            .iter()
            .map(|event| event["time_us"].as_i64().expect("time_us"))
            .collect()
    }
}

#[derive(Clone, Copy, Debug)]
enum Reply {
    Status(u16),
    /// A status with `Retry-After` in seconds.
    RetryAfter(u16, u64),
    /// A status with `Retry-After` as an HTTP date this far ahead of the reply.
    RetryAt(u16, Duration),
}

#[derive(Default)]
struct ReceiverState {
    requests: Vec<Request>,
    /// Replies to the next requests; 200 once empty.
    script: VecDeque<Reply>,
    delay: Duration,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<ReceiverState>>);

impl Receiver {
    fn with_script(script: impl IntoIterator<Item = Reply>, delay: Duration) -> Receiver {
        let receiver = Receiver::default();
        {
            let mut state = lock(&receiver.0);
            state.script = script.into_iter().collect();
            state.delay = delay;
        }
        receiver
    }

    fn requests(&self) -> Vec<Request> {
        lock(&self.0).requests.clone()
    }

    /// Events of the requests answered with 2xx, in arrival order.
    fn delivered(&self) -> Vec<i64> {
        self.requests()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(Request::times)
            .collect()
    }

    async fn serve(&self, listener: TcpListener) -> JoinHandle<()> {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
    }

    /// Binds a loopback port and serves on it.
    async fn start(&self) -> (url::Url, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        (hook_url(address), self.serve(listener).await)
    }
}

fn hook_url(address: SocketAddr) -> url::Url {
    url::Url::parse(&format!("http://{address}/hook")).expect("url")
}

async fn hook(
    State(receiver): State<Receiver>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let time = |name: &str| {
        header(name)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(-1)
    };
    let (reply, delay) = {
        let mut state = lock(&receiver.0);
        let reply = state.script.pop_front().unwrap_or(Reply::Status(200));
        let status = match reply {
            Reply::Status(status) | Reply::RetryAfter(status, _) | Reply::RetryAt(status, _) => {
                status
            }
        };
        state.requests.push(Request {
            query: uri.query().unwrap_or_default().to_owned(),
            first: time("x-butterfly-batch-first"),
            last: time("x-butterfly-batch-last"),
            content_type: header("content-type").unwrap_or_default(),
            signature: header("x-butterfly-signature"),
            body,
            status,
            at: Instant::now(),
        });
        (reply, state.delay)
    };
    tokio::time::sleep(delay).await;
    match reply {
        Reply::Status(status) => StatusCode::from_u16(status)
            .expect("status")
            .into_response(),
        Reply::RetryAfter(status, seconds) => (
            StatusCode::from_u16(status).expect("status"),
            [("retry-after", seconds.to_string())],
            "slow down",
        )
            .into_response(),
        Reply::RetryAt(status, ahead) => (
            StatusCode::from_u16(status).expect("status"),
            [(
                "retry-after",
                http_date(std::time::SystemTime::now() + ahead),
            )],
            "slow down",
        )
            .into_response(),
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), as servers send in `Retry-After`.
fn http_date(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = butterfly_syntax::datetime::civil_from_days(days as i64);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let month_name = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "{weekday}, {day:02} {month_name} {year} {:02}:{:02}:{:02} GMT",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[test]
fn http_dates_are_formatted_as_servers_send_them() {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777);
    assert_eq!(http_date(at), "Sun, 06 Nov 1994 08:49:37 GMT");
    let leap = std::time::UNIX_EPOCH + Duration::from_secs(951_782_400);
    assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
}

// ---- cursors, configuration, running ----

/// A cursor in memory that remembers every save.
#[derive(Default)]
struct MemoryCursor {
    saved: Mutex<Option<i64>>,
    saves: Mutex<Vec<i64>>,
}

impl MemoryCursor {
    fn at(time_us: i64) -> Arc<MemoryCursor> {
        let cursor = MemoryCursor::default();
        *lock(&cursor.saved) = Some(time_us);
        Arc::new(cursor)
    }

    fn saves(&self) -> Vec<i64> {
        lock(&self.saves).clone()
    }
}

impl CursorStore for MemoryCursor {
    fn load(&self) -> Result<Option<i64>, String> {
        Ok(*lock(&self.saved))
    }

    fn save(&self, time_us: i64) -> Result<(), String> {
        *lock(&self.saved) = Some(time_us);
        lock(&self.saves).push(time_us);
        Ok(())
    }
}

fn config(url: url::Url) -> WebhookConfig {
    WebhookConfig {
        url,
        secret: None,
        batch_max: 10,
        batch_wait: Duration::from_millis(20),
        timeout: Duration::from_secs(5),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        allow_private_network: true,
    }
}

struct Running {
    stats: Arc<WebhookStats>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), Error>>,
}

impl Running {
    fn start(webhook: Webhook) -> Running {
        let stats = webhook.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(webhook.run(async move {
            let _ = stopped.await;
        }));
        Running { stats, stop, task }
    }

    /// Signals shutdown and returns how long `run` took to return.
    async fn stop(self) -> Duration {
        let asked = Instant::now();
        let _ = self.stop.send(());
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("run returns")
            .expect("run task")
            .expect("run succeeds");
        asked.elapsed()
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Events delivered and saved so far.
fn delivered(stats: &WebhookStats) -> usize {
    stats.delivered_events.load(Ordering::Relaxed) as usize
}

fn range(from: i64, to: i64) -> Vec<i64> {
    (from..=to).collect()
}

// ---- tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_everything_in_order_in_bounded_batches() {
    let engine = Engine::new(1024);
    engine.commit(1..=45);
    let receiver = Receiver::default();
    let (url, _server) = receiver.start().await;
    let cursor = MemoryCursor::at(0);
    let webhook = Webhook::new(config(url), engine.feed.clone(), cursor.clone()).expect("webhook");
    let running = Running::start(webhook);
    for t in 46..=95 {
        engine.commit([t]);
        if t % 7 == 0 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    let stats = running.stats.clone();
    wait_until("95 events are delivered", || delivered(&stats) >= 95).await;
    running.stop().await;

    assert_eq!(receiver.delivered(), range(1, 95));
    let requests = receiver.requests();
    for request in &requests {
        let times = request.times();
        assert!(
            !times.is_empty() && times.len() <= 10,
            "batch of {}",
            times.len()
        );
        assert_eq!(request.first, times[0]);
        assert_eq!(request.last, *times.last().expect("last"));
        assert_eq!(request.content_type, "application/json");
        assert_eq!(request.signature, None, "no secret, no signature");
        let expected = format!(
            "{{\"events\":[{}]}}",
            times.iter().map(|t| json(*t)).collect::<Vec<_>>().join(",")
        );
        assert_eq!(
            request.body,
            expected.as_bytes(),
            "events embedded verbatim"
        );
    }
    let lasts: Vec<i64> = requests.iter().map(|r| r.last).collect();
    assert_eq!(cursor.saves(), lasts, "one save per delivered batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cursor_starts_from_now_and_saves_the_first_delivery() {
    let engine = Engine::new(1024);
    engine.commit(1..=5);
    let receiver = Receiver::default();
    let (url, _server) = receiver.start().await;
    let cursor = Arc::new(MemoryCursor::default());
    let webhook = Webhook::new(config(url), engine.feed.clone(), cursor.clone()).expect("webhook");
    engine.commit(6..=8);
    let running = Running::start(webhook);
    let stats = running.stats.clone();
    wait_until("3 events are delivered", || delivered(&stats) >= 3).await;
    running.stop().await;
    assert_eq!(receiver.delivered(), range(6, 8));
    assert_eq!(cursor.saves().last(), Some(&8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_is_retried_identically_until_accepted() {
    let engine = Engine::new(1024);
    engine.commit(1..=5);
    let failures = [
        Reply::Status(500),
        Reply::Status(500),
        Reply::Status(500),
        Reply::RetryAfter(429, 1),
    ];
    let receiver = Receiver::with_script(failures, Duration::ZERO);
    let (url, _server) = receiver.start().await;
    let cursor = MemoryCursor::at(0);
    let mut config = config(url);
    config.backoff_max = Duration::from_secs(2);
    let webhook = Webhook::new(config, engine.feed.clone(), cursor.clone()).expect("webhook");
    let running = Running::start(webhook);
    let stats = running.stats.clone();

    wait_until("two failures", || receiver.requests().len() >= 2).await;
    assert_eq!(
        cursor.saves(),
        Vec::<i64>::new(),
        "nothing saved before a 2xx"
    );
    wait_until("the batch is accepted", || delivered(&stats) >= 5).await;
    assert_eq!(cursor.saves(), [5]);
    engine.commit(6..=8);
    wait_until("the next events", || delivered(&stats) >= 8).await;
    running.stop().await;

    let requests = receiver.requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses[..5], [500, 500, 500, 429, 200]);
    assert!(statuses[5..].iter().all(|status| *status == 200));
    for retry in &requests[1..5] {
        assert_eq!((retry.first, retry.last), (1, 5));
        assert_eq!(
            retry.body, requests[0].body,
            "the same batch, byte for byte"
        );
    }
    assert!(
        requests[4].at - requests[3].at >= Duration::from_millis(950),
        "Retry-After: 1 was honoured"
    );
    assert_eq!(receiver.delivered(), range(1, 8));
    assert_eq!(cursor.saves().last(), Some(&8));
    assert_eq!(stats.failed_attempts.load(Ordering::Relaxed), 4);
    assert_eq!(
        stats.delivered_batches.load(Ordering::Relaxed) as usize,
        requests.len() - 4
    );
    assert_eq!(stats.delivered_events.load(Ordering::Relaxed), 8);
    assert_eq!(stats.last_delivered_time_us.load(Ordering::Relaxed), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_date_is_honoured() {
    let engine = Engine::new(1024);
    engine.commit(1..=3);
    let receiver = Receiver::with_script(
        [Reply::RetryAt(503, Duration::from_secs(3))],
        Duration::ZERO,
    );
    let (url, _server) = receiver.start().await;
    let mut config = config(url);
    config.backoff_max = Duration::from_secs(10);
    let webhook = Webhook::new(config, engine.feed.clone(), MemoryCursor::at(0)).expect("webhook");
    let running = Running::start(webhook);
    let stats = running.stats.clone();
    wait_until("the batch is accepted", || delivered(&stats) >= 3).await;
    running.stop().await;

    let requests = receiver.requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 200]);
    // The date has whole seconds, so it lies 2 to 3 s ahead; the backoff alone is 10 ms.
    assert!(
        requests[1].at - requests[0].at >= Duration::from_millis(1900),
        "waited {:?}",
        requests[1].at - requests[0].at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_continues_after_the_saved_cursor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("webhook.cursor");
    FileCursor::new(path.clone()).save(0).expect("save");
    let engine = Engine::new(1024);
    engine.commit(1..=100);
    let receiver = Receiver::with_script([], Duration::from_millis(10));
    let (url, _server) = receiver.start().await;
    // Each run posts to its own query, so that a request of the first run that the receiver
    // records late is not taken for the second run's.
    let run_url = |run: &str| {
        let mut url = url.clone();
        url.set_query(Some(run));
        url
    };
    let mut first_config = config(run_url("run=1"));
    first_config.batch_max = 5;
    let mut second_config = first_config.clone();
    second_config.url = run_url("run=2");

    let first = Webhook::new(
        first_config,
        engine.feed.clone(),
        Arc::new(FileCursor::new(path.clone())),
    )
    .expect("webhook");
    let running = Running::start(first);
    wait_until("30 events arrive", || receiver.delivered().len() >= 30).await;
    running.stop().await;
    let saved = FileCursor::new(path.clone())
        .load()
        .expect("load")
        .expect("a saved cursor");
    let delivered = receiver.delivered();
    assert_eq!(delivered[..saved as usize], range(1, saved)[..]);
    assert!(
        delivered.len() - saved as usize <= 5,
        "only the batch in flight at shutdown went unsaved"
    );

    let second = Webhook::new(
        second_config,
        engine.feed.clone(),
        Arc::new(FileCursor::new(path.clone())),
    )
    .expect("webhook");
    let running = Running::start(second);
    wait_until("the last event is delivered and saved", || {
        FileCursor::new(path.clone()).load() == Ok(Some(100))
    })
    .await;
    running.stop().await;
    let after: Vec<i64> = receiver
        .requests()
        .iter()
        .filter(|request| request.query == "run=2")
        .flat_map(Request::times)
        .collect();
    assert_eq!(
        after,
        range(saved + 1, 100),
        "continues right after the cursor"
    );
    assert_eq!(FileCursor::new(path).load().expect("load"), Some(100));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["webhook.cursor"], "no temporary file left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signature_verifies() {
    let engine = Engine::new(1024);
    engine.commit(1..=25);
    let receiver = Receiver::default();
    let (url, _server) = receiver.start().await;
    let mut config = config(url);
    config.secret = Some("topsecret".into());
    let webhook = Webhook::new(config, engine.feed.clone(), MemoryCursor::at(0)).expect("webhook");
    let running = Running::start(webhook);
    wait_until("25 events arrive", || receiver.delivered().len() >= 25).await;
    running.stop().await;

    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"topsecret");
    let wrong = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"other");
    for request in receiver.requests() {
        let signature = request.signature.expect("signed");
        let hex = signature.strip_prefix("sha256=").expect("sha256= prefix");
        let tag = decode_hex(hex);
        assert!(ring::hmac::verify(&key, &request.body, &tag).is_ok());
        assert!(ring::hmac::verify(&wrong, &request.body, &tag).is_err());
    }
}

fn decode_hex(text: &str) -> Vec<u8> {
    assert_eq!(text.len() % 2, 0);
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_broadcast_is_caught_up_from_the_log() {
    let engine = Engine::new(4);
    let receiver = Receiver::with_script([], Duration::from_millis(5));
    let (url, _server) = receiver.start().await;
    let webhook = Webhook::new(
        config(url),
        engine.feed.clone(),
        Arc::new(MemoryCursor::default()),
    )
    .expect("webhook");
    let running = Running::start(webhook);
    engine.commit([1]);
    wait_until("the first event arrives", || receiver.delivered() == [1]).await;
    for t in 2..=1000 {
        engine.commit([t]);
    }
    wait_until("1000 events arrive", || receiver.delivered().len() >= 1000).await;
    let stats = running.stats.clone();
    running.stop().await;
    assert_eq!(receiver.delivered(), range(1, 1000), "all, in order, once");
    assert_eq!(stats.gaps.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_once_a_refusing_receiver_comes_up() {
    // Bound but not listening: connections are refused, and no other socket can take the port
    // before the receiver comes up on it.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let address = socket.local_addr().expect("address");
    let engine = Engine::new(1024);
    engine.commit(1..=20);
    let webhook = Webhook::new(
        config(hook_url(address)),
        engine.feed.clone(),
        MemoryCursor::at(0),
    )
    .expect("webhook");
    let running = Running::start(webhook);
    let stats = running.stats.clone();
    wait_until("a few refused attempts", || {
        stats.failed_attempts.load(Ordering::Relaxed) >= 3
    })
    .await;
    let receiver = Receiver::default();
    let _server = receiver.serve(socket.listen(1024).expect("listen")).await;
    wait_until("20 events arrive", || receiver.delivered().len() >= 20).await;
    running.stop().await;
    assert_eq!(receiver.delivered(), range(1, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_interrupts_a_backoff_without_saving() {
    let engine = Engine::new(1024);
    engine.commit([1]);
    let receiver = Receiver::with_script([Reply::Status(500); 100], Duration::ZERO);
    let (url, _server) = receiver.start().await;
    let cursor = MemoryCursor::at(0);
    let mut config = config(url);
    config.backoff_min = Duration::from_secs(30);
    config.backoff_max = Duration::from_secs(60);
    let webhook = Webhook::new(config, engine.feed.clone(), cursor.clone()).expect("webhook");
    let running = Running::start(webhook);
    let stats = running.stats.clone();
    wait_until("the first failure", || {
        stats.failed_attempts.load(Ordering::Relaxed) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let took = running.stop().await;
    // Far below the 30 s it would otherwise wait; generous for a loaded machine.
    assert!(
        took < Duration::from_secs(10),
        "run returned after {took:?}"
    );
    assert_eq!(cursor.saves(), Vec::<i64>::new());
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_interrupts_a_request_in_flight() {
    let engine = Engine::new(1024);
    engine.commit([1]);
    let receiver = Receiver::with_script([], Duration::from_secs(30));
    let (url, _server) = receiver.start().await;
    let cursor = MemoryCursor::at(0);
    let mut config = config(url);
    config.timeout = Duration::from_secs(60);
    let webhook = Webhook::new(config, engine.feed.clone(), cursor.clone()).expect("webhook");
    let running = Running::start(webhook);
    wait_until("the request arrives", || receiver.requests().len() == 1).await;
    let took = running.stop().await;
    // Far below the 30 s it would otherwise wait; generous for a loaded machine.
    assert!(
        took < Duration::from_secs(10),
        "run returned after {took:?}"
    );
    assert_eq!(cursor.saves(), Vec::<i64>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_dropped_by_retention_are_reported_as_a_gap() {
    let engine = Engine::new(1024);
    engine.commit(1..=10);
    engine.drop_before(6);
    let receiver = Receiver::default();
    let (url, _server) = receiver.start().await;

    // The cursor's event (3) is gone and nothing older remains: 4 and 5 were lost.
    let webhook = Webhook::new(
        config(url.clone()),
        engine.feed.clone(),
        MemoryCursor::at(3),
    )
    .expect("webhook");
    let running = Running::start(webhook);
    wait_until("the retained events arrive", || {
        receiver.delivered().len() >= 5
    })
    .await;
    let stats = running.stats.clone();
    running.stop().await;
    assert_eq!(receiver.delivered(), range(6, 10));
    assert_eq!(stats.gaps.load(Ordering::Relaxed), 1);

    // The cursor's event (7) is still there: nothing after it can have gone.
    let webhook =
        Webhook::new(config(url), engine.feed.clone(), MemoryCursor::at(7)).expect("webhook");
    let running = Running::start(webhook);
    wait_until("the rest arrives", || receiver.delivered().len() >= 8).await;
    let stats = running.stats.clone();
    running.stop().await;
    assert_eq!(receiver.delivered()[5..], range(8, 10)[..]);
    assert_eq!(stats.gaps.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_taken_for_a_delivery() {
    // A 302 would turn the POST into a GET, which this receiver would answer with 200.
    let gets = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = gets.clone();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(|| async {
                (StatusCode::FOUND, [("location", "/elsewhere")]).into_response()
            }),
        )
        .route(
            "/elsewhere",
            axum::routing::any(move || async move {
                counted.fetch_add(1, Ordering::Relaxed);
                StatusCode::OK
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = hook_url(listener.local_addr().expect("address"));
    let _server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let engine = Engine::new(16);
    engine.commit([1]);
    let cursor = MemoryCursor::at(0);
    let webhook = Webhook::new(config(url), engine.feed.clone(), cursor.clone()).expect("webhook");
    let running = Running::start(webhook);
    let stats = running.stats.clone();
    wait_until("a few attempts", || {
        stats.failed_attempts.load(Ordering::Relaxed) >= 3
    })
    .await;
    running.stop().await;
    assert_eq!(
        gets.load(Ordering::Relaxed),
        0,
        "the redirect was not followed"
    );
    assert_eq!(delivered(&stats), 0);
    assert_eq!(cursor.saves(), Vec::<i64>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_setups_are_refused() {
    let engine = Engine::new(16);
    let url = |text: &str| url::Url::parse(text).expect("url");
    let refused = |config: WebhookConfig, cursor: Arc<dyn CursorStore>| {
        Webhook::new(config, engine.feed.clone(), cursor).err()
    };
    let at_zero = || -> Arc<dyn CursorStore> { MemoryCursor::at(0) };
    assert!(matches!(
        refused(config(url("ftp://example.com/hook")), at_zero()),
        Some(Error::InvalidUrl { .. })
    ));
    let mut private = config(url("http://127.0.0.1:9/hook"));
    private.allow_private_network = false;
    assert!(matches!(
        refused(private, at_zero()),
        Some(Error::InvalidUrl { .. })
    ));

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cursor");
    std::fs::write(&path, "not a number").expect("write");
    assert!(matches!(
        refused(
            config(url("http://127.0.0.1:9/hook")),
            Arc::new(FileCursor::new(path))
        ),
        Some(Error::Cursor(_))
    ));
    let missing = FileCursor::new(dir.path().join("missing"));
    assert_eq!(missing.load(), Ok(None));
}
