//! Identity resolution against the reference PLC directory and PDS (`../shared/peers`).

use butterfly_identity::{CacheConfig, Directory, Error, Resolver, ResolverConfig};
use butterfly_net::{HttpClient, HttpConfig};
use butterfly_syntax::{AtIdentifier, Did, Handle};
use butterfly_testnet::TestNetwork;
use url::Url;

fn http() -> HttpClient {
    HttpClient::new(&HttpConfig::with_private_network(true)).expect("http client")
}

fn url(text: &str) -> Url {
    Url::parse(text).expect("test url")
}

fn new_directory(config: ResolverConfig) -> Directory {
    Directory::new(
        Resolver::new(http(), config).expect("resolver"),
        CacheConfig::default(),
    )
}

fn via_handle_resolver(network: &TestNetwork) -> Directory {
    new_directory(ResolverConfig {
        plc_url: url(&network.plc),
        handle_resolver: Some(url(&network.pds)),
        ..ResolverConfig::default()
    })
}

async fn plc_signing_key(network: &TestNetwork, did: &str) -> String {
    let data = http()
        .get_limited(
            &url(&format!("{}/{did}/data", network.plc)),
            "application/json",
            65536,
            std::time::Duration::from_secs(10),
        )
        .await
        .expect("PLC data");
    let data: serde_json::Value = serde_json::from_slice(&data.body).expect("PLC data is JSON");
    data["verificationMethods"]["atproto"]
        .as_str()
        .expect("atproto key")
        .to_owned()
}

async fn xrpc_post(
    pds: &str,
    nsid: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> serde_json::Value {
    let target = url(&format!("{pds}/xrpc/{nsid}"));
    let client = http();
    let mut request = client
        .request(butterfly_net::reqwest::Method::POST, &target)
        .expect("request")
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = client
        .send_limited(request, &target, 1 << 20)
        .await
        .expect("xrpc call");
    assert_eq!(response.status, 200, "{nsid}: {:?}", response.body);
    serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolves_the_seeded_accounts_both_ways_and_follows_a_handle_change() {
    let network = TestNetwork::start();
    let directory = via_handle_resolver(&network);

    // Every seeded account, from either end.
    for account in &network.accounts {
        let did = Did::parse(&account.did).expect("seeded DID");
        let handle = Handle::parse(&account.handle).expect("seeded handle");
        let expected_key = plc_signing_key(&network, &account.did).await;

        let by_did = directory.resolve_did(&did).await.expect("resolve DID");
        assert_eq!(by_did.handle.as_ref(), Some(&handle));
        assert!(by_did.handle_verified, "{}", account.handle);
        assert_eq!(by_did.pds, Some(url(&network.pds)));
        assert_eq!(
            by_did.signing_key.as_ref().map(|key| key.to_did_key()),
            Some(expected_key.clone())
        );

        let by_handle = directory
            .resolve_handle(&handle)
            .await
            .expect("resolve handle");
        assert_eq!(by_handle.did, did);
        assert!(by_handle.handle_verified);
    }

    // Trusting the verified audit log instead of the directory's document gives the same identity.
    let audited = new_directory(ResolverConfig {
        plc_url: url(&network.plc),
        handle_resolver: Some(url(&network.pds)),
        verify_plc_audit: true,
        ..ResolverConfig::default()
    });
    for account in &network.accounts {
        let did = Did::parse(&account.did).expect("seeded DID");
        let from_log = audited.resolve_did(&did).await.expect("audited");
        let from_directory = directory.resolve_did(&did).await.expect("directory");
        assert!(from_log.handle_verified);
        assert_eq!(from_log.handle, from_directory.handle);
        assert_eq!(from_log.pds, from_directory.pds);
        assert_eq!(from_log.signing_key, from_directory.signing_key);
    }

    // The same through HTTPS well-known (sent to the PDS with the handle as Host): no DNS exists here.
    let well_known = new_directory(ResolverConfig {
        plc_url: url(&network.plc),
        well_known_base: Some(url(&network.pds)),
        dns_servers: Some(vec!["127.0.0.1:9".parse().expect("addr")]),
        // The DNS server never answers, so each lookup waits this out; it also bounds the HTTP
        // call to the PDS, which a loaded machine may need more than a couple of seconds to answer.
        lookup_timeout: std::time::Duration::from_secs(5),
        ..ResolverConfig::default()
    });
    let alice = network.account("alice");
    let found = well_known
        .resolve_handle(&Handle::parse(&alice.handle).expect("handle"))
        .await
        .expect("well-known lookup");
    assert_eq!(found.did.as_str(), alice.did);
    assert!(found.handle_verified);

    // Unknown handles are definite misses, not errors to retry.
    let unknown = directory
        .resolve_handle(&Handle::parse("nobody.test").expect("handle"))
        .await
        .expect_err("unknown handle");
    assert!(
        matches!(unknown, Error::HandleNotFound { .. }),
        "{unknown:?}"
    );
    let unknown_did = directory
        .resolve_did(&Did::parse("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa").expect("did"))
        .await
        .expect_err("unknown DID");
    assert!(
        matches!(unknown_did, Error::DidNotFound { .. }),
        "{unknown_did:?}"
    );

    // Carol changes her handle. The cache keeps the old answer until purged, as a firehose
    // #identity event would purge it; then the new handle checks out and the old one is gone.
    let carol = network.account("carol");
    let carol_did = Did::parse(&carol.did).expect("did");
    let before = directory
        .resolve_did(&carol_did)
        .await
        .expect("resolve carol");
    assert_eq!(
        before.handle.as_ref().map(Handle::as_str),
        Some("carol.test")
    );

    let session = xrpc_post(
        &network.pds,
        "com.atproto.server.createSession",
        None,
        serde_json::json!({"identifier": carol.handle, "password": carol.password}),
    )
    .await;
    let token = session["accessJwt"].as_str().expect("access token");
    xrpc_post(
        &network.pds,
        "com.atproto.identity.updateHandle",
        Some(token),
        serde_json::json!({"handle": "carol2.test"}),
    )
    .await;

    let cached = directory
        .resolve_did(&carol_did)
        .await
        .expect("cached carol");
    assert_eq!(
        cached.handle.as_ref().map(Handle::as_str),
        Some("carol.test")
    );

    directory.purge(&AtIdentifier::Did(carol_did.clone()));
    let after = directory
        .resolve_did(&carol_did)
        .await
        .expect("fresh carol");
    assert_eq!(
        after.handle.as_ref().map(Handle::as_str),
        Some("carol2.test")
    );
    assert!(after.handle_verified);

    // The old handle was purged along with the DID (it was the document's handle), so it is looked
    // up again and no longer resolves.
    let old = directory
        .resolve_handle(&Handle::parse("carol.test").expect("handle"))
        .await
        .expect_err("old handle");
    assert!(matches!(old, Error::HandleNotFound { .. }), "{old:?}");

    // A fresh directory agrees: nothing depended on the cache.
    let fresh = via_handle_resolver(&network)
        .resolve_handle(&Handle::parse("carol2.test").expect("handle"))
        .await
        .expect("new handle");
    assert_eq!(fresh.did, carol_did);
    assert!(fresh.handle_verified);
}
