//! `/subscribe` against a Jetstream client we did not write: `@skyware/jetstream` from npm, run
//! by Node from `tests/jetstream-js/` (see `client.mjs` there).
//!
//! Needs Node 18 or later and npm: `node` and `npm` on `PATH`, or the programs named by
//! `BUTTERFLY_NODE` and `BUTTERFLY_NPM`. The first run installs the pinned packages (`npm ci`, the
//! only network use beyond loopback). Without them the test fails and says so; it is never
//! skipped quietly.
#![allow(clippy::unwrap_used)]

use butterfly_serve::feed::{commit_events, EventFeed};
use butterfly_serve::subscribe::{Subscribe, SubscribeConfig};
use butterfly_store::{EventKind, MemoryStore, StreamEvent};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc};

const ALICE: &str = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
const BOB: &str = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb";
const CAROL: &str = "did:plc:cccccccccccccccccccccccc";
const POST: &str = "app.bsky.feed.post";
const LIKE: &str = "app.bsky.feed.like";
const FOLLOW: &str = "app.bsky.graph.follow";
const CID: &str = "bafyreidwaivazkwu67xztlmuobx35hs2lnfh3kolmgfmucldvhd3sgzcqi";

/// How long the Node client may run, and how long the test waits for it beyond that.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(45);

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jetstream-js")
}

fn program(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.to_owned())
}

/// Node's major version, failing the test with what to do when there is no usable Node.
fn node_major(node: &str) -> u32 {
    let output = Command::new(node).arg("--version").output();
    let version = match output {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }
        other => panic!(
            "this test runs a Jetstream client on Node 18 or later, and `{node} --version` failed \
             ({other:?}): install Node and npm, or set BUTTERFLY_NODE and BUTTERFLY_NPM"
        ),
    };
    let major = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or_else(|| panic!("cannot read Node's version from {version:?}"));
    assert!(
        major >= 18,
        "Node {version} is too old: this test needs 18 or later"
    );
    major
}

/// Runs `npm ci` unless the installed tree matches `package-lock.json`, as a stamp in
/// `node_modules` records. Test binaries may run at once, so the check and install hold a lock.
fn ensure_installed(dir: &Path, npm: &str) {
    const SCRIPT: &str = r#"
        want=$(sha256sum package-lock.json | cut -d' ' -f1) || exit 1
        if [ "$(cat node_modules/.butterfly-installed 2>/dev/null)" != "$want" ]; then
          echo "jetstream_npm: installing the Jetstream client (npm ci)" >&2
          timeout 600 "$NPM" ci --no-audit --no-fund --loglevel=error >&2 || exit 1
          echo "$want" > node_modules/.butterfly-installed
        fi
    "#;
    let status = Command::new("flock")
        .args(["-w", "900"])
        .arg(dir.join(".butterfly-install.lock"))
        .args(["sh", "-c", SCRIPT])
        .current_dir(dir)
        .env("NPM", npm)
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => {}
        other => panic!(
            "cannot install the Jetstream client in {} ({other:?}): run `npm ci` there by hand \
             (needs npm, sha256sum and util-linux flock)",
            dir.display()
        ),
    }
}

type StoreLog = Mutex<MemoryStore>;

struct Server {
    log: Arc<StoreLog>,
    live: broadcast::Sender<Arc<StreamEvent>>,
    address: SocketAddr,
    clock: Mutex<i64>,
}

impl Server {
    async fn start() -> Server {
        let log = Arc::new(Mutex::new(MemoryStore::new()));
        let (live, _) = broadcast::channel(1024);
        let subscribe = Subscribe::new(
            EventFeed::new(&live, log.clone()),
            SubscribeConfig::default(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = subscribe.router();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        Server {
            log,
            live,
            address,
            clock: Mutex::new(i64::try_from(now.as_micros()).unwrap() - 3_600_000_000),
        }
    }

    /// Commits an event as the engine does: into the log, then onto the broadcast.
    fn publish(
        &self,
        did: &str,
        kind: EventKind,
        collection: Option<&str>,
        body: Value,
    ) -> StreamEvent {
        let time_us = {
            let mut clock = self.clock.lock().unwrap();
            *clock += 1;
            *clock
        };
        let mut json = json!({"did": did, "time_us": time_us, "kind": kind.as_str()});
        json[kind.as_str()] = body;
        let event = StreamEvent {
            time_us,
            did: did.into(),
            kind,
            collection: collection.map(Into::into),
            json: json.to_string(),
        };
        commit_events(&self.log, &self.live, vec![event.clone()]).unwrap();
        event
    }

    fn commit(&self, did: &str, collection: &str, rkey: &str, operation: &str) -> StreamEvent {
        let mut body = json!({"rev": "3l3qo2vutsw2b", "operation": operation, "collection": collection, "rkey": rkey});
        if operation != "delete" {
            body["record"] = json!({"$type": collection, "text": format!("{operation} {rkey}"), "createdAt": "2024-09-09T19:46:02.102Z"});
            body["cid"] = CID.into();
        }
        self.publish(did, EventKind::Commit, Some(collection), body)
    }

    fn identity(&self, did: &str, handle: &str) -> StreamEvent {
        let body =
            json!({"did": did, "handle": handle, "seq": 42, "time": "2024-09-05T06:11:04.870Z"});
        self.publish(did, EventKind::Identity, None, body)
    }

    fn account(&self, did: &str, status: &str) -> StreamEvent {
        let body = json!({"active": false, "did": did, "seq": 43, "time": "2024-09-05T06:11:04.870Z", "status": status});
        self.publish(did, EventKind::Account, None, body)
    }

    async fn wait_for_readers(&self, readers: usize, client: &mut NodeClient) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.live.receiver_count() != readers {
            if let Some(status) = client.child.try_wait().unwrap() {
                panic!(
                    "the Node client ended ({status}) before connecting: {}",
                    client.stderr()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the Node client did not connect: {}",
                client.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The Node client, killed if the test ends first.
struct NodeClient {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl NodeClient {
    fn spawn(node: &str, args: &[String]) -> NodeClient {
        let mut child = Command::new(node)
            .arg("client.mjs")
            .args(args)
            .current_dir(js_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {node}: {error}"));
        let (sender, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        std::thread::spawn({
            let stderr = stderr.clone();
            move || {
                let mut buffer = [0; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                    stderr
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            }
        });
        NodeClient {
            child,
            lines,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        format!("stderr:\n{}", self.stderr.lock().unwrap())
    }

    /// Every line up to and including `{"on":"done"}`, then the client's exit.
    async fn lines_until_done(&mut self) -> Vec<Value> {
        let mut lines = Vec::new();
        loop {
            let line = match tokio::time::timeout(WAIT, self.lines.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => panic!(
                    "the Node client stopped after {} lines: {lines:#?}\n{}",
                    lines.len(),
                    self.stderr()
                ),
                Err(_) => panic!("the Node client is stuck: {lines:#?}\n{}", self.stderr()),
            };
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|error| panic!("not JSON: {line:?}: {error}"));
            let done = value["on"] == "done";
            lines.push(value);
            if done {
                break;
            }
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "the Node client failed: {status}\n{}",
                    self.stderr()
                );
                return lines;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the Node client did not exit"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for NodeClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `client.mjs` prints for an event: its line, then the typed collection callbacks'.
fn expected_lines(event: &StreamEvent) -> Vec<Value> {
    let json: Value = serde_json::from_str(&event.json).unwrap();
    let did = event.did.as_str();
    match event.kind {
        EventKind::Commit => {
            let commit = &json["commit"];
            let operation = commit["operation"].as_str().unwrap();
            vec![
                json!({
                    "on": "commit", "did": did, "time_us": event.time_us,
                    "collection": commit["collection"], "operation": operation, "rkey": commit["rkey"],
                    "record": commit.get("record").cloned().unwrap_or(Value::Null),
                    "cid": commit.get("cid").cloned().unwrap_or(Value::Null),
                    "event": json,
                }),
                json!({"on": operation, "collection": commit["collection"], "rkey": commit["rkey"], "did": did}),
            ]
        }
        EventKind::Identity => vec![json!({
            "on": "identity", "did": did, "time_us": event.time_us,
            "handle": json["identity"]["handle"], "event": json,
        })],
        EventKind::Account => vec![json!({
            "on": "account", "did": did, "time_us": event.time_us,
            "active": json["account"]["active"], "status": json["account"]["status"], "event": json,
        })],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skyware_jetstream_receives_what_it_asked_for_from_the_cursor_on() {
    let node = program("BUTTERFLY_NODE", "node");
    let npm = program("BUTTERFLY_NPM", "npm");
    node_major(&node);
    tokio::task::spawn_blocking(move || ensure_installed(&js_dir(), &npm))
        .await
        .unwrap();

    let server = Server::start().await;
    // Before the client connects: served from the log, from the cursor on (inclusively).
    server.commit(ALICE, POST, "3kpost0", "create");
    let from_cursor = server.commit(ALICE, POST, "3kpost1", "create");
    server.commit(ALICE, LIKE, "3klike1", "create");
    let follow = server.commit(BOB, FOLLOW, "3kfollow1", "create");
    let renamed = server.identity(ALICE, "alice.test");

    let args: Vec<String> = [
        format!("ws://{}/subscribe", server.address),
        "8".into(),
        "--collection".into(),
        POST.into(),
        "--collection".into(),
        "app.bsky.graph.*".into(),
        "--did".into(),
        ALICE.into(),
        "--did".into(),
        BOB.into(),
        "--cursor".into(),
        from_cursor.time_us.to_string(),
        "--typed".into(),
        POST.into(),
        "--typed".into(),
        FOLLOW.into(),
        "--timeout-ms".into(),
        CLIENT_TIMEOUT.as_millis().to_string(),
    ]
    .into();
    let mut client = NodeClient::spawn(&node, &args);
    server.wait_for_readers(1, &mut client).await;

    // After: the live tail.
    let updated = server.commit(ALICE, POST, "3kpost1", "update");
    server.commit(CAROL, POST, "3kpost9", "create");
    let unfollowed = server.commit(BOB, FOLLOW, "3kfollow1", "delete");
    let taken_down = server.account(BOB, "takendown");
    let deleted = server.commit(ALICE, POST, "3kpost1", "delete");
    let bob = server.identity(BOB, "bob.test");

    let received = client.lines_until_done().await;
    let wanted = [
        &from_cursor,
        &follow,
        &renamed,
        &updated,
        &unfollowed,
        &taken_down,
        &deleted,
        &bob,
    ];
    let mut expected: Vec<Value> = wanted
        .iter()
        .flat_map(|event| expected_lines(event))
        .collect();
    expected.push(json!({"on": "done", "received": 8, "cursor": bob.time_us}));
    assert_eq!(received.len(), expected.len(), "{received:#?}");
    for (got, want) in received.iter().zip(&expected) {
        assert_eq!(got, want);
    }
}
