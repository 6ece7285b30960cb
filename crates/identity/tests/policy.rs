//! Lookups driven by network data stay on public addresses unless private networks are allowed.

use butterfly_identity::{CacheConfig, Directory, Error, Resolver, ResolverConfig};
use butterfly_net::{HttpClient, HttpConfig};
use butterfly_syntax::{Did, Handle};
use url::Url;

fn strict_directory() -> Directory {
    let config = ResolverConfig {
        plc_url: Url::parse("http://localhost:1").expect("url"),
        well_known_base: Some(Url::parse("http://127.0.0.1:1").expect("url")),
        dns_servers: Some(vec!["127.0.0.1:9".parse().expect("addr")]),
        lookup_timeout: std::time::Duration::from_secs(2),
        ..ResolverConfig::default()
    };
    let http = HttpClient::new(&HttpConfig::default()).expect("client");
    Directory::new(
        Resolver::new(http, config).expect("resolver"),
        CacheConfig::default(),
    )
}

#[tokio::test]
async fn a_directory_on_localhost_is_refused() {
    let error = strict_directory()
        .resolve_did(&Did::parse("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa").expect("did"))
        .await
        .expect_err("localhost is not public");
    assert!(
        error.to_string().contains("not a public address"),
        "{error}"
    );
    assert!(
        !error.is_not_found(),
        "a refusal must not be cached as a miss"
    );
}

#[tokio::test]
async fn did_web_may_not_name_a_port_or_path() {
    for did in ["did:web:localhost%3A8080", "did:web:example.com:user:alice"] {
        let error = strict_directory()
            .resolve_did(&Did::parse(did).expect("did"))
            .await
            .expect_err("refused");
        assert!(
            matches!(error, Error::UnsupportedDid { .. }),
            "{did}: {error:?}"
        );
    }
}

#[tokio::test]
async fn handles_under_reserved_tlds_are_not_looked_up() {
    for handle in ["alice.localhost", "printer.local", "x.invalid", "a.onion"] {
        let error = strict_directory()
            .resolve_handle(&Handle::parse(handle).expect("handle"))
            .await
            .expect_err("not resolvable");
        assert!(
            matches!(error, Error::HandleNotFound { .. }),
            "{handle}: {error:?}"
        );
    }
}
