//! Directory caching against a local PLC-like server that counts its requests: TTLs for hits and
//! misses, stale-while-revalidate, coalescing, purge, and the refetch-once rule for signatures.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use butterfly_crypto::{Algorithm, PrivateKey};
use butterfly_identity::{CacheConfig, Directory, Error, Resolver, ResolverConfig};
use butterfly_net::{HttpClient, HttpConfig};
use butterfly_syntax::{AtIdentifier, Did};
use url::Url;

const DID: &str = "did:plc:cachetestcachetestcachet";

#[derive(Clone)]
struct Plc {
    requests: Arc<AtomicUsize>,
    /// The multikey served as `#atproto`; `None` answers 404, `Some("500")` answers 500.
    key: Arc<Mutex<Option<String>>>,
    /// Answer only after 300 ms, with the key read when the request arrived.
    slow: Arc<std::sync::atomic::AtomicBool>,
}

async fn serve_document(
    State(plc): State<Plc>,
    Path(did): Path<String>,
) -> axum::response::Response {
    // The key first, then the count: once a test sees the request counted, it may swap the key,
    // and that must not change this answer.
    let key = plc.key.lock().expect("lock").clone();
    plc.requests.fetch_add(1, Ordering::SeqCst);
    if plc.slow.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    match key.as_deref() {
        None => (StatusCode::NOT_FOUND, "{\"message\":\"DID not registered\"}").into_response(),
        Some("500") => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        Some(key) => axum::Json(serde_json::json!({
            "id": did,
            "alsoKnownAs": ["at://cache.example.com"],
            "verificationMethod": [{"id": "#atproto", "type": "Multikey", "controller": did, "publicKeyMultibase": key}],
            "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://pds.example.com"}],
        }))
        .into_response(),
    }
}

fn key(seed: u8) -> PrivateKey {
    PrivateKey::from_bytes(Algorithm::K256, &[seed; 32]).expect("test key")
}

async fn start(initial_key: Option<String>) -> (Plc, Url) {
    let plc = Plc {
        requests: Arc::new(AtomicUsize::new(0)),
        key: Arc::new(Mutex::new(initial_key)),
        slow: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let router = axum::Router::new()
        .route("/{did}", axum::routing::get(serve_document))
        .with_state(plc.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (
        plc,
        Url::parse(&format!("http://127.0.0.1:{port}")).expect("url"),
    )
}

fn directory(plc_url: Url, cache: CacheConfig) -> Directory {
    let http = HttpClient::new(&HttpConfig::with_private_network(true)).expect("client");
    let config = ResolverConfig {
        plc_url,
        ..ResolverConfig::default()
    };
    Directory::new(Resolver::new(http, config).expect("resolver"), cache)
}

fn did() -> Did {
    Did::parse(DID).expect("did")
}

fn no_cache() -> CacheConfig {
    CacheConfig {
        hit_ttl: Duration::ZERO,
        miss_ttl: Duration::ZERO,
        stale_ttl: Duration::ZERO,
        ..CacheConfig::default()
    }
}

/// Waits (bounded) until the server has seen `count` requests; background refetches are asynchronous.
async fn wait_for_requests(plc: &Plc, count: usize) {
    for _ in 0..500 {
        if plc.requests.load(Ordering::SeqCst) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the server saw {} requests, not {count}",
        plc.requests.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn concurrent_lookups_share_one_request_and_hits_are_cached() {
    let (plc, url) = start(Some(key(1).public_key().to_multikey())).await;
    let directory = directory(url, CacheConfig::default());
    let did = did();
    let lookups = (0..16).map(|_| directory.did_document(&did));
    let documents = futures_util::future::join_all(lookups).await;
    assert!(documents.iter().all(|document| document.is_ok()));
    assert_eq!(plc.requests.load(Ordering::SeqCst), 1);
    directory.did_document(&did).await.expect("cached");
    assert_eq!(plc.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn hits_and_misses_expire() {
    let (plc, url) = start(Some(key(1).public_key().to_multikey())).await;
    let directory = directory(url, no_cache());
    directory.did_document(&did()).await.expect("first");
    directory.did_document(&did()).await.expect("second");
    assert_eq!(
        plc.requests.load(Ordering::SeqCst),
        2,
        "successful lookups expire too"
    );

    *plc.key.lock().expect("lock") = None;
    for _ in 0..2 {
        let error = directory.did_document(&did()).await.expect_err("gone");
        assert!(matches!(error, Error::DidNotFound { .. }), "{error:?}");
    }
    assert_eq!(plc.requests.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn misses_are_cached_for_their_ttl_and_transient_failures_are_not_cached() {
    let (plc, url) = start(None).await;
    let directory = directory(url, CacheConfig::default());
    for _ in 0..3 {
        assert!(matches!(
            directory.did_document(&did()).await,
            Err(Error::DidNotFound { .. })
        ));
    }
    assert_eq!(plc.requests.load(Ordering::SeqCst), 1);

    let other = Did::parse("did:plc:othertestothertestothert").expect("did");
    *plc.key.lock().expect("lock") = Some("500".to_owned());
    for _ in 0..2 {
        let error = directory
            .did_document(&other)
            .await
            .expect_err("server error");
        assert!(error.is_transient(), "{error:?}");
    }
    assert_eq!(plc.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn stale_entries_are_served_while_a_refetch_runs() {
    let first = key(1).public_key().to_multikey();
    let (plc, url) = start(Some(first.clone())).await;
    let directory = directory(
        url,
        CacheConfig {
            hit_ttl: Duration::ZERO,
            stale_ttl: Duration::from_secs(3600),
            ..CacheConfig::default()
        },
    );
    let served = |document: &butterfly_identity::DidDocument| {
        document.verification_methods()[0]
            .public_key_multibase
            .clone()
    };
    let document = directory.did_document(&did()).await.expect("first");
    assert_eq!(served(&document), Some(first.clone()));

    let second = key(2).public_key().to_multikey();
    *plc.key.lock().expect("lock") = Some(second.clone());
    let stale = directory.did_document(&did()).await.expect("stale");
    assert_eq!(
        served(&stale),
        Some(first),
        "the stale entry is served at once"
    );
    wait_for_requests(&plc, 2).await;
    // The background refetch stores its answer before leaving the in-flight map; wait for that too.
    for _ in 0..500 {
        let document = directory.did_document(&did()).await.expect("refreshed");
        if served(&document) == Some(second.clone()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the refetched document never replaced the stale one");
}

#[tokio::test]
async fn a_rotated_key_is_refetched_once_and_forgeries_do_not_cause_requests() {
    let (plc, url) = start(Some(key(1).public_key().to_multikey())).await;
    let directory = directory(url, CacheConfig::default());
    let message = b"commit bytes";
    directory
        .verify_signature(&did(), message, &key(1).sign(message))
        .await
        .expect("current key");
    assert_eq!(plc.requests.load(Ordering::SeqCst), 1);

    // The account rotates its key; the cache still holds the old one.
    *plc.key.lock().expect("lock") = Some(key(2).public_key().to_multikey());
    directory
        .verify_signature(&did(), message, &key(2).sign(message))
        .await
        .expect("verifies after one refetch");
    assert_eq!(plc.requests.load(Ordering::SeqCst), 2);

    // A forged signature right after: rejected without another request (refetches are rate limited).
    let error = directory
        .verify_signature(&did(), message, &key(3).sign(message))
        .await
        .expect_err("forged");
    assert!(matches!(error, Error::BadSignature { .. }), "{error:?}");
    assert_eq!(plc.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn purge_forces_the_next_lookup_to_fetch() {
    let (plc, url) = start(Some(key(1).public_key().to_multikey())).await;
    let directory = directory(url, CacheConfig::default());
    directory.did_document(&did()).await.expect("first");
    directory.did_document(&did()).await.expect("cached");
    assert_eq!(plc.requests.load(Ordering::SeqCst), 1);
    directory.purge(&AtIdentifier::Did(did()));
    directory.did_document(&did()).await.expect("refetched");
    assert_eq!(plc.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_overtaken_by_purge_is_not_cached() {
    let (plc, url) = start(Some(key(1).public_key().to_multikey())).await;
    let directory = directory(url, CacheConfig::default());
    plc.slow.store(true, Ordering::SeqCst);
    let early = {
        let directory = directory.clone();
        tokio::spawn(async move { directory.did_document(&did()).await })
    };
    wait_for_requests(&plc, 1).await;
    // The identity changes while that lookup is under way, and an #identity event purges it.
    let rotated = key(2).public_key().to_multikey();
    *plc.key.lock().expect("lock") = Some(rotated.clone());
    directory.purge(&AtIdentifier::Did(did()));
    let early = early.await.expect("task").expect("early answer");
    assert_ne!(
        early.verification_methods()[0].public_key_multibase,
        Some(rotated.clone())
    );

    plc.slow.store(false, Ordering::SeqCst);
    let fresh = directory.did_document(&did()).await.expect("fresh");
    assert_eq!(
        fresh.verification_methods()[0].public_key_multibase,
        Some(rotated)
    );
    assert_eq!(plc.requests.load(Ordering::SeqCst), 2);
}
