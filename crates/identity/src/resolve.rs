//! Uncached lookups: DID → document (`did:plc`, `did:web`) and handle → DID (DNS TXT, HTTPS well-known,
//! or an XRPC `resolveHandle` service). Each call goes to the network; `Directory` adds caching and the
//! two-way handle check on top.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use butterfly_net::{HttpClient, LimitedResponse};
use butterfly_syntax::{Did, Handle};
use hickory_resolver::config::{NameServerConfig, ResolverConfig as DnsConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use url::Url;

use crate::did_doc::{DidDocument, MAX_DOCUMENT_BYTES};
use crate::Error;

/// The public PLC directory.
pub const DEFAULT_PLC_URL: &str = "https://plc.directory";

/// The largest `/.well-known/atproto-did` body read. A DID is under 2 KiB by spec.
const MAX_WELL_KNOWN_BYTES: usize = 4 * 1024;

/// The largest `resolveHandle` answer read.
const MAX_RESOLVE_HANDLE_BYTES: usize = 16 * 1024;

/// Top-level domains that never resolve on the public network, so a handle under them is not looked up.
/// (`.test` is allowed: local test networks use it with a handle resolver.)
const UNRESOLVABLE_TLDS: &[&str] = &[
    "alt",
    "arpa",
    "example",
    "internal",
    "invalid",
    "local",
    "localhost",
    "onion",
];

/// Where and how [`Resolver`] looks things up.
#[derive(Clone, Debug)]
pub struct ResolverConfig {
    /// The PLC directory (`https://plc.directory` by default).
    pub plc_url: Url,
    /// Resolve handles by calling `com.atproto.identity.resolveHandle` on this service instead of DNS
    /// and HTTPS. Needed where handles live in no public DNS (a local test network); the answer is
    /// still checked against the DID document, so the service is not trusted blindly.
    pub handle_resolver: Option<Url>,
    /// DNS servers for `_atproto` TXT lookups; `None` uses the system configuration.
    pub dns_servers: Option<Vec<SocketAddr>>,
    /// Send `/.well-known/atproto-did` requests to this base URL, with the handle as the `Host` header,
    /// instead of `https://HANDLE`. For a local PDS that serves many handles without DNS.
    pub well_known_base: Option<Url>,
    /// Total time for one lookup (DNS, HTTP request and body).
    pub lookup_timeout: Duration,
    /// Build `did:plc` documents from the DID's verified audit log (`plc::verify_audit_log`) instead
    /// of taking the directory's document on trust. Costs one larger request and a signature check
    /// per operation.
    pub verify_plc_audit: bool,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            plc_url: Url::parse(DEFAULT_PLC_URL).expect("the default PLC URL is valid"),
            handle_resolver: None,
            dns_servers: None,
            well_known_base: None,
            lookup_timeout: Duration::from_secs(10),
            verify_plc_audit: false,
        }
    }
}

/// Makes uncached identity lookups over the network. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Resolver {
    http: HttpClient,
    config: Arc<ResolverConfig>,
    dns: Arc<TokioResolver>,
}

impl Resolver {
    /// A resolver using `http` (whose address policy applies to every lookup) and `config`.
    pub fn new(http: HttpClient, config: ResolverConfig) -> Result<Resolver, Error> {
        let dns_error = |error: &dyn std::fmt::Display| Error::Network {
            message: format!("cannot set up DNS: {error}"),
            transient: false,
        };
        let provider = TokioConnectionProvider::default();
        let mut builder = match &config.dns_servers {
            Some(servers) => {
                let mut dns_config = DnsConfig::new();
                for server in servers {
                    dns_config.add_name_server(NameServerConfig::new(*server, Protocol::Udp));
                    dns_config.add_name_server(NameServerConfig::new(*server, Protocol::Tcp));
                }
                TokioResolver::builder_with_config(dns_config, provider)
            }
            None => TokioResolver::builder(provider).map_err(|error| dns_error(&error))?,
        };
        let options = builder.options_mut();
        options.timeout = config.lookup_timeout.min(Duration::from_secs(5));
        options.attempts = 2;
        // Our own cache decides freshness; keep hickory's small and short.
        options.cache_size = 256;
        options.positive_max_ttl = Some(Duration::from_secs(60));
        options.negative_max_ttl = Some(Duration::from_secs(60));
        let dns = builder.build();
        Ok(Resolver {
            http,
            config: Arc::new(config),
            dns: Arc::new(dns),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// The HTTP client (and so the address policy) lookups use.
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// Fetches the DID document of `did` (`did:plc` from the directory, `did:web` from its host).
    pub async fn fetch_did_document(&self, did: &Did) -> Result<DidDocument, Error> {
        if did.method() == "plc" && self.config.verify_plc_audit {
            return self.fetch_verified_plc_document(did).await;
        }
        let url = self.did_document_url(did)?;
        let response = self
            .get(
                &url,
                "application/did+json, application/json",
                MAX_DOCUMENT_BYTES,
            )
            .await?;
        match response.status {
            200 => DidDocument::parse(&response.body, did),
            404 => Err(Error::DidNotFound {
                did: did.to_string(),
            }),
            410 => Err(Error::DidDeactivated {
                did: did.to_string(),
            }),
            status => Err(Error::HttpStatus {
                url: url.to_string(),
                status,
            }),
        }
    }

    /// Fetches the PLC audit log of a `did:plc` as raw JSON bytes (see `plc::parse_audit_log`).
    pub async fn fetch_plc_audit_log(&self, did: &Did) -> Result<Vec<u8>, Error> {
        if did.method() != "plc" {
            return Err(Error::UnsupportedDid {
                did: did.to_string(),
                reason: "audit logs exist only for did:plc".to_owned(),
            });
        }
        let url = self.plc_url(&format!("{did}/log/audit"))?;
        let response = self
            .get(&url, "application/json", crate::plc::MAX_AUDIT_LOG_BYTES)
            .await?;
        match response.status {
            // Unshared, so this takes the buffer without copying it.
            200 => Ok(response.body.into()),
            404 => Err(Error::DidNotFound {
                did: did.to_string(),
            }),
            status => Err(Error::HttpStatus {
                url: url.to_string(),
                status,
            }),
        }
    }

    /// Fetches and verifies the audit log of a `did:plc`, and renders the document its current state
    /// gives. A tombstoned DID is [`Error::DidDeactivated`]; a log that fails is
    /// [`Error::InvalidAuditLog`].
    pub async fn fetch_verified_plc_document(&self, did: &Did) -> Result<DidDocument, Error> {
        let log = self.fetch_plc_audit_log(did).await?;
        let invalid = |reason: String| Error::InvalidAuditLog {
            did: did.to_string(),
            reason,
        };
        let entries =
            crate::plc::parse_audit_log(&log).map_err(|error| invalid(error.to_string()))?;
        let state = crate::plc::verify_audit_log(did, &entries)
            .into_state()
            .map_err(|error| invalid(error.to_string()))?;
        let Some(data) = state.data() else {
            return Err(Error::DidDeactivated {
                did: did.to_string(),
            });
        };
        let document = data
            .to_did_document(did)
            .map_err(|error| invalid(error.to_string()))?;
        DidDocument::from_json(document, did)
    }

    fn plc_url(&self, path: &str) -> Result<Url, Error> {
        let base = self.config.plc_url.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/{path}")).map_err(|error| Error::Network {
            message: format!("PLC url {base}: {error}"),
            transient: false,
        })
    }

    /// Where the document of `did` lives.
    pub fn did_document_url(&self, did: &Did) -> Result<Url, Error> {
        match did.method() {
            "plc" => self.plc_url(did.as_str()),
            "web" => did_web_url(did, self.http.allows_private_network()),
            other => Err(Error::UnsupportedDid {
                did: did.to_string(),
                reason: format!("method {other:?} is not plc or web"),
            }),
        }
    }

    /// Finds the DID a handle points to, without checking the other direction.
    pub async fn fetch_handle_did(&self, handle: &Handle) -> Result<Did, Error> {
        let normalized = handle.normalized();
        let tld = normalized.as_str().rsplit('.').next().unwrap_or_default();
        if UNRESOLVABLE_TLDS.contains(&tld) {
            return Err(Error::HandleNotFound {
                handle: normalized.to_string(),
            });
        }
        if let Some(service) = &self.config.handle_resolver {
            return self.resolve_handle_by_xrpc(service, handle).await;
        }
        let (dns, https) = tokio::join!(
            self.resolve_handle_by_dns(handle),
            self.resolve_handle_by_well_known(handle)
        );
        match (dns, https) {
            (Ok(did), Ok(web_did)) => {
                if did != web_did {
                    tracing::debug!(%handle, %did, %web_did, "DNS and HTTPS disagree; DNS wins");
                }
                Ok(did)
            }
            (Ok(did), Err(_)) | (Err(_), Ok(did)) => Ok(did),
            // Prefer the more useful failure: a wrong answer over "not found", and trouble that may
            // pass (which must not be cached as a miss) over "not found".
            (Err(dns_error), Err(https_error)) => Err(
                if matches!(dns_error, Error::InvalidHandleAnswer { .. })
                    || dns_error.is_transient()
                {
                    dns_error
                } else if matches!(https_error, Error::InvalidHandleAnswer { .. })
                    || https_error.is_transient()
                {
                    https_error
                } else {
                    Error::HandleNotFound {
                        handle: normalized.to_string(),
                    }
                },
            ),
        }
    }

    /// Looks up the `_atproto.HANDLE` TXT record: exactly one distinct `did=` value is an answer.
    pub async fn resolve_handle_by_dns(&self, handle: &Handle) -> Result<Did, Error> {
        let normalized = handle.normalized();
        let name = format!("_atproto.{normalized}.");
        let lookup = tokio::time::timeout(self.config.lookup_timeout, self.dns.txt_lookup(name))
            .await
            .map_err(|_| Error::Network {
                message: format!("{normalized}: DNS lookup timed out"),
                transient: true,
            })?;
        let lookup = match lookup {
            Ok(lookup) => lookup,
            Err(error) if error.is_nx_domain() || error.is_no_records_found() => {
                return Err(Error::HandleNotFound {
                    handle: normalized.to_string(),
                })
            }
            Err(error) => {
                return Err(Error::Network {
                    message: format!("{normalized}: DNS lookup failed: {error}"),
                    transient: true,
                })
            }
        };
        let mut found: Option<Did> = None;
        for record in lookup.iter() {
            let text: Vec<u8> = record
                .txt_data()
                .iter()
                .flat_map(|part| part.iter().copied())
                .collect();
            let Some(value) = text.strip_prefix(b"did=") else {
                continue;
            };
            let value = String::from_utf8_lossy(value);
            let did = Did::parse(value.as_ref()).map_err(|error| Error::InvalidHandleAnswer {
                handle: normalized.to_string(),
                reason: format!("TXT record did={value:?}: {error}"),
            })?;
            match &found {
                Some(previous) if *previous != did => {
                    return Err(Error::InvalidHandleAnswer {
                        handle: normalized.to_string(),
                        reason: format!("TXT records name two DIDs, {previous} and {did}"),
                    })
                }
                _ => found = Some(did),
            }
        }
        found.ok_or_else(|| Error::HandleNotFound {
            handle: normalized.to_string(),
        })
    }

    /// Fetches `https://HANDLE/.well-known/atproto-did` (or the configured base with `Host: HANDLE`).
    pub async fn resolve_handle_by_well_known(&self, handle: &Handle) -> Result<Did, Error> {
        let normalized = handle.normalized();
        let not_found = || Error::HandleNotFound {
            handle: normalized.to_string(),
        };
        let (url, host_header) = match &self.config.well_known_base {
            Some(base) => (
                base.join("/.well-known/atproto-did")
                    .map_err(|error| Error::Network {
                        message: format!("well-known base {base}: {error}"),
                        transient: false,
                    })?,
                Some(normalized.to_string()),
            ),
            None => (
                Url::parse(&format!("https://{normalized}/.well-known/atproto-did"))
                    .map_err(|_| not_found())?,
                None,
            ),
        };
        let mut request = self
            .http
            .request(butterfly_net::reqwest::Method::GET, &url)?
            .header("accept", "text/plain")
            .timeout(self.config.lookup_timeout);
        if let Some(host) = host_header {
            request = request.header("host", host);
        }
        let response = match self
            .http
            .send_limited(request, &url, MAX_WELL_KNOWN_BYTES)
            .await
        {
            Ok(response) => response,
            Err(error @ butterfly_net::Error::Timeout { .. }) => return Err(error.into()),
            // No web server, a refused or non-public address: this method has no answer.
            Err(_) => return Err(not_found()),
        };
        match response.status {
            200 => {
                let text = std::str::from_utf8(&response.body).map_err(|_| {
                    Error::InvalidHandleAnswer {
                        handle: normalized.to_string(),
                        reason: "well-known body is not UTF-8".to_owned(),
                    }
                })?;
                let first_line = text.trim().lines().next().unwrap_or_default().trim();
                Did::parse(first_line).map_err(|error| Error::InvalidHandleAnswer {
                    handle: normalized.to_string(),
                    reason: format!("well-known body {first_line:?}: {error}"),
                })
            }
            status if status >= 500 => Err(Error::HttpStatus {
                url: url.to_string(),
                status,
            }),
            _ => Err(not_found()),
        }
    }

    /// Asks an XRPC service: `com.atproto.identity.resolveHandle`.
    pub async fn resolve_handle_by_xrpc(
        &self,
        service: &Url,
        handle: &Handle,
    ) -> Result<Did, Error> {
        let normalized = handle.normalized();
        let mut url = service
            .join("/xrpc/com.atproto.identity.resolveHandle")
            .map_err(|error| Error::Network {
                message: format!("handle resolver {service}: {error}"),
                transient: false,
            })?;
        url.query_pairs_mut()
            .append_pair("handle", normalized.as_str());
        let response = self
            .get(&url, "application/json", MAX_RESOLVE_HANDLE_BYTES)
            .await?;
        let body: serde_json::Value =
            serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null);
        match response.status {
            200 => {
                let text = body["did"]
                    .as_str()
                    .ok_or_else(|| Error::InvalidHandleAnswer {
                        handle: normalized.to_string(),
                        reason: "resolveHandle answer has no did".to_owned(),
                    })?;
                Did::parse(text).map_err(|error| Error::InvalidHandleAnswer {
                    handle: normalized.to_string(),
                    reason: format!("resolveHandle answer {text:?}: {error}"),
                })
            }
            404 => Err(Error::HandleNotFound {
                handle: normalized.to_string(),
            }),
            400 if body["error"] == "HandleNotFound" => Err(Error::HandleNotFound {
                handle: normalized.to_string(),
            }),
            status => Err(Error::HttpStatus {
                url: url.to_string(),
                status,
            }),
        }
    }

    async fn get(
        &self,
        url: &Url,
        accept: &str,
        max_bytes: usize,
    ) -> Result<LimitedResponse, Error> {
        let timeout = self.config.lookup_timeout;
        Ok(self
            .http
            .get_limited(url, accept, max_bytes, timeout)
            .await?)
    }
}

/// `did:web:HOST` → `https://HOST/.well-known/did.json`. atproto allows only hostname-level `did:web`
/// (no paths). A port (`%3A`) and plain `http` are accepted only for loopback hosts when private networks
/// are allowed, as in local testing.
pub fn did_web_url(did: &Did, allow_private_network: bool) -> Result<Url, Error> {
    let unsupported = |reason: &str| Error::UnsupportedDid {
        did: did.to_string(),
        reason: reason.to_owned(),
    };
    let identifier = did
        .as_str()
        .strip_prefix("did:web:")
        .ok_or_else(|| unsupported("not did:web"))?;
    if identifier.contains(':') {
        return Err(unsupported(
            "did:web with a path is not supported by atproto",
        ));
    }
    let host = identifier.replace("%3A", ":").replace("%3a", ":");
    if host.contains('%') {
        return Err(unsupported("only %3A (a port) may be percent-encoded"));
    }
    let hostname = host.split(':').next().unwrap_or_default();
    let local = hostname == "localhost" || hostname.starts_with("127.");
    if host.contains(':') && !(local && allow_private_network) {
        return Err(unsupported(
            "a port is allowed only for localhost in testing",
        ));
    }
    let scheme = if local && allow_private_network {
        "http"
    } else {
        "https"
    };
    Url::parse(&format!("{scheme}://{host}/.well-known/did.json"))
        .map_err(|error| unsupported(&format!("bad host: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_web_urls() {
        let check = |did: &str, allow: bool, expected: Option<&str>| {
            let did = Did::parse(did).expect("test DID parses");
            let found = did_web_url(&did, allow).ok().map(|url| url.to_string());
            assert_eq!(found.as_deref(), expected, "{did}");
        };
        check(
            "did:web:example.com",
            false,
            Some("https://example.com/.well-known/did.json"),
        );
        check(
            "did:web:example.com",
            true,
            Some("https://example.com/.well-known/did.json"),
        );
        check("did:web:example.com:user:alice", false, None);
        check("did:web:localhost%3A8080", false, None);
        check(
            "did:web:localhost%3A8080",
            true,
            Some("http://localhost:8080/.well-known/did.json"),
        );
        check("did:web:example.com%3A8080", true, None);
        check("did:web:example.com%2Fx", true, None);
    }
}
