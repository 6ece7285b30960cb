//! Sessions against a small local server that issues (fake, unsigned) JWTs and can revoke them: login,
//! refresh on `ExpiredToken` (coalesced), proactive refresh by `exp`, refused refresh, the store hook,
//! restore and logout.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use butterfly_xrpc::{
    Agent, AgentConfig, ClientConfig, CreateRecord, CreateSession, Error, HostLimits, LimitsConfig,
    MemorySessionStore, SessionStore, XrpcClient,
};
use local_server::{serve, unix_now};
use serde_json::{json, Value};
use url::Url;

mod local_server;

#[derive(Default)]
struct Server {
    generation: u64,
    access: String,
    refresh: String,
    /// Lifetime of new access tokens, in seconds.
    access_ttl: u64,
    refreshes: u64,
    expired_answers: u64,
    requests: u64,
}

type Shared = Arc<Mutex<Server>>;

fn fake_jwt(exp: u64, generation: u64, kind: &str) -> String {
    let encode = |value: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string().as_bytes())
    };
    format!(
        "{}.{}.c2ln",
        encode(&json!({"alg": "ES256K", "typ": "at+jwt"})),
        encode(&json!({"scope": kind, "sub": "did:plc:alice", "exp": exp, "jti": generation}))
    )
}

/// Issues the next pair of tokens and returns the session JSON.
fn issue(server: &mut Server) -> Value {
    server.generation += 1;
    let now = unix_now();
    server.access = fake_jwt(now + server.access_ttl, server.generation, "access");
    server.refresh = fake_jwt(now + 90 * 86_400, server.generation, "refresh");
    json!({
        "accessJwt": server.access, "refreshJwt": server.refresh,
        "handle": "alice.test", "did": "did:plc:alice",
        "email": "alice@example.com", "emailConfirmed": true, "active": true,
    })
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned()
}

fn json_response(status: u16, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("valid response")
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Server> {
    shared.lock().expect("not poisoned")
}

async fn create_session(State(shared): State<Shared>, Json(input): Json<Value>) -> Response<Body> {
    let mut server = lock(&shared);
    server.requests += 1;
    if input["identifier"] != "alice.test" || input["password"] != "app-pass" {
        return json_response(
            401,
            json!({"error": "AuthenticationRequired", "message": "Invalid identifier or password"}),
        );
    }
    let session = issue(&mut server);
    json_response(200, session)
}

async fn refresh_session(State(shared): State<Shared>, headers: HeaderMap) -> Response<Body> {
    let mut server = lock(&shared);
    server.requests += 1;
    if bearer(&headers) != server.refresh {
        return json_response(
            400,
            json!({"error": "ExpiredToken", "message": "Token has been revoked"}),
        );
    }
    server.refreshes += 1;
    let mut session = issue(&mut server);
    // Like the reference PDS, refreshSession does not repeat the email fields.
    session
        .as_object_mut()
        .expect("object")
        .retain(|key, _| !key.starts_with("email"));
    json_response(200, session)
}

async fn delete_session(State(shared): State<Shared>, headers: HeaderMap) -> Response<Body> {
    let mut server = lock(&shared);
    server.requests += 1;
    if bearer(&headers) != server.refresh {
        return json_response(401, json!({"error": "InvalidToken"}));
    }
    server.refresh = "revoked".into();
    server.access = "revoked".into();
    Response::new(Body::empty())
}

async fn whoami(State(shared): State<Shared>, headers: HeaderMap) -> Response<Body> {
    let mut server = lock(&shared);
    server.requests += 1;
    if bearer(&headers) != server.access {
        server.expired_answers += 1;
        return json_response(
            400,
            json!({"error": "ExpiredToken", "message": "Token has expired"}),
        );
    }
    json_response(200, json!({"generation": server.generation}))
}

async fn start(access_ttl: Duration) -> (Url, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Server {
        access_ttl: access_ttl.as_secs(),
        ..Server::default()
    }));
    let router = Router::new()
        .route(
            "/xrpc/com.atproto.server.createSession",
            post(create_session),
        )
        .route(
            "/xrpc/com.atproto.server.refreshSession",
            post(refresh_session),
        )
        .route(
            "/xrpc/com.atproto.server.deleteSession",
            post(delete_session),
        )
        .route("/xrpc/com.example.whoami", get(whoami))
        .with_state(shared.clone());
    (serve(router).await, shared)
}

fn client(base: &Url) -> XrpcClient {
    XrpcClient::new(base.clone(), ClientConfig::with_private_network(true)).expect("client builds")
}

async fn login(client: &XrpcClient, store: &MemorySessionStore) -> Agent {
    let config = AgentConfig {
        store: Some(Arc::new(store.clone())),
        ..AgentConfig::default()
    };
    client
        .login_with(&CreateSession::new("alice.test", "app-pass"), config)
        .await
        .expect("login")
}

async fn whoami_generation(agent: &Agent) -> Result<u64, Error> {
    let out: Value = agent.query("com.example.whoami", &[]).await?;
    Ok(out["generation"].as_u64().expect("generation is a number"))
}

#[tokio::test]
async fn expired_tokens_are_refreshed_once_for_concurrent_calls() {
    let (base, shared) = start(Duration::from_secs(7200)).await;
    let store = MemorySessionStore::new();
    let agent = login(&client(&base), &store).await;
    assert_eq!(agent.did().as_str(), "did:plc:alice");
    let first = store.load().expect("login saved the session");
    assert_eq!(first, agent.session());
    assert_eq!(
        whoami_generation(&agent).await.expect("fresh token works"),
        1
    );

    // The server expires the access token (its exp claim still looks fine to the client).
    lock(&shared).access = "expired".into();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let agent = agent.clone();
            tokio::spawn(async move { whoami_generation(&agent).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.expect("task").expect("call succeeds"), 2);
    }
    let server = lock(&shared);
    assert_eq!(server.refreshes, 1, "concurrent refreshes are coalesced");
    assert!(server.expired_answers >= 1 && server.expired_answers <= 8);
    let saved = store.load().expect("refreshed session saved");
    assert_ne!(saved.access_jwt, first.access_jwt);
    assert_ne!(saved.refresh_jwt, first.refresh_jwt);
    assert_eq!(saved.access_jwt, server.access);
    // Fields refreshSession leaves out are kept from the login.
    assert_eq!(saved.email.as_deref(), Some("alice@example.com"));
    assert_eq!(agent.session(), saved);
}

#[tokio::test]
async fn tokens_near_expiry_are_refreshed_before_the_call() {
    // Tokens live 30 s; the default margin is 2 minutes, so every call refreshes first.
    let (base, shared) = start(Duration::from_secs(30)).await;
    let store = MemorySessionStore::new();
    let agent = login(&client(&base), &store).await;
    let before = agent.session();
    let expires = before.access_expires_at().expect("exp is readable");
    assert!(expires > SystemTime::now() && expires < SystemTime::now() + Duration::from_secs(31));

    assert_eq!(whoami_generation(&agent).await.expect("call succeeds"), 2);
    let server = lock(&shared);
    assert_eq!(server.refreshes, 1);
    assert_eq!(server.expired_answers, 0, "the old token was never sent");
    assert_ne!(store.load().expect("saved").access_jwt, before.access_jwt);
}

#[tokio::test]
async fn explicit_refresh_and_a_long_lived_token() {
    let (base, shared) = start(Duration::from_secs(7200)).await;
    let store = MemorySessionStore::new();
    let agent = login(&client(&base), &store).await;
    assert_eq!(whoami_generation(&agent).await.expect("call"), 1);
    assert_eq!(lock(&shared).refreshes, 0, "a fresh token is not refreshed");
    let refreshed = agent.refresh_session().await.expect("refresh");
    assert_eq!(lock(&shared).refreshes, 1);
    assert_eq!(store.load(), Some(refreshed.clone()));
    assert_eq!(whoami_generation(&agent).await.expect("call"), 2);
}

#[tokio::test]
async fn a_refused_refresh_is_an_auth_error_and_clears_the_store() {
    let (base, shared) = start(Duration::from_secs(7200)).await;
    let store = MemorySessionStore::new();
    let agent = login(&client(&base), &store).await;
    {
        let mut server = lock(&shared);
        server.access = "revoked".into();
        server.refresh = "revoked".into();
    }
    let error = whoami_generation(&agent).await.expect_err("cannot refresh");
    match &error {
        Error::Auth {
            source: Some(source),
            ..
        } => assert_eq!(source.xrpc_error(), Some("ExpiredToken")),
        other => panic!("expected Auth, got {other:?}"),
    }
    assert!(!error.is_retryable());
    assert_eq!(store.load(), None);
}

#[tokio::test]
async fn restore_logout_and_calls_without_a_session() {
    let (base, shared) = start(Duration::from_secs(7200)).await;
    let client = client(&base);
    let store = MemorySessionStore::new();
    let config = AgentConfig {
        store: Some(Arc::new(store.clone())),
        ..AgentConfig::default()
    };
    assert!(Agent::restore(&client, config.clone())
        .expect("empty store is fine")
        .is_none());

    // Wrong password: the server's typed error.
    let error = client
        .login("alice.test", "wrong")
        .await
        .expect_err("bad password");
    assert_eq!(error.xrpc_error(), Some("AuthenticationRequired"));
    assert_eq!(error.status(), Some(401));

    let agent = login(&client, &store).await;
    drop(agent);
    let restored = Agent::restore(&client, config)
        .expect("valid session")
        .expect("store holds a session");
    assert_eq!(whoami_generation(&restored).await.expect("call"), 1);

    // Writes need a session, and fail before any request.
    let requests = lock(&shared).requests;
    let error = client
        .repo()
        .create_record(&CreateRecord::new(
            "did:plc:alice",
            "app.bsky.feed.post",
            json!({}),
        ))
        .await
        .expect_err("no session");
    assert!(
        matches!(error, Error::Auth { source: None, .. }),
        "{error:?}"
    );
    assert!(!client.is_authenticated());
    assert!(restored.client().is_authenticated());
    assert_eq!(lock(&shared).requests, requests);

    restored.logout().await.expect("logout");
    assert_eq!(store.load(), None);
    assert_eq!(lock(&shared).refresh, "revoked");
}

#[tokio::test]
async fn refreshes_do_not_wait_for_the_permits_of_the_calls_they_serve() {
    // One request in flight per host, and every call refreshes first: if a call held the host's only
    // permit while refreshing, the refresh (a request to the same host) could never start.
    let (base, shared) = start(Duration::from_secs(30)).await;
    let client = XrpcClient::new(
        base,
        ClientConfig {
            limits: HostLimits::new(LimitsConfig {
                max_concurrent: 1,
                rate: None,
            }),
            ..ClientConfig::with_private_network(true)
        },
    )
    .expect("client builds");
    let agent = login(&client, &MemorySessionStore::new()).await;
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let agent = agent.clone();
            tokio::spawn(async move { whoami_generation(&agent).await })
        })
        .collect();
    let all = futures_util::future::join_all(calls);
    let results = tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("no deadlock between refreshes and host permits");
    for result in results {
        result.expect("task").expect("call succeeds");
    }
    assert!(lock(&shared).refreshes >= 1);
}
