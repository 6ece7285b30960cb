//! Outbound HTTP for Butterfly, with the safety rules every network-driven lookup needs.
//!
//! atproto makes a client fetch URLs that come from the network itself: `did:web` hosts, handle domains,
//! PDS endpoints read out of DID documents. Left alone, such a URL can point at `127.0.0.1`, a cloud
//! metadata address or a host on the private network (server-side request forgery). [`HttpClient`]
//! therefore connects only to public addresses unless [`HttpConfig::allow_private_network`] is set (the
//! CLI flag `--allow-private-network`, needed for a local test network). The check happens twice: on
//! literal IP hosts before a request or redirect is made, and in the DNS resolver, which drops every
//! non-public address a name resolves to, so a public name cannot smuggle in a private address.
//!
//! Every client has connect and read timeouts; [`read_body_limited`] caps how much of a body is read.
//!
//! The crate also picks the workspace's one rustls crypto provider, ring (already linked for P-256
//! signatures), and installs it explicitly: [`install_crypto_provider`].
//!
//! Protocols that reqwest does not speak (WebSocket event streams) get their connection from
//! [`connect_tcp`], which applies the same address rules and connect timeout (its checks before
//! resolving are [`check_connect_url`]), and their TLS settings from [`tls_client_config`] (ring and the
//! platform verifier, as [`HttpClient`] uses).
//!
//! It does not know XRPC, DIDs or retries: `butterfly-identity` and `butterfly-xrpc` build on it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), butterfly_net::Error> {
//! let client = butterfly_net::HttpClient::new(&butterfly_net::HttpConfig::default())?;
//! let url = url::Url::parse("https://example.com/.well-known/atproto-did").expect("valid url");
//! let timeout = std::time::Duration::from_secs(10);
//! let response = client.get_limited(&url, "text/plain", 1024, timeout).await?;
//! println!("{} {:?}", response.status, response.body);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use url::Url;

pub use reqwest;
pub use url;

/// Installs ring as the process-wide rustls crypto provider, once. Harmless to call again, and harmless
/// if the embedding program already installed a provider (then that one stays).
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How an [`HttpClient`] behaves. `Default` gives public addresses only and conservative timeouts.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Allow loopback, private, link-local and other non-public addresses. Only for local networks
    /// (tests, a PDS on the same host); never for URLs from an untrusted network in production.
    pub allow_private_network: bool,
    /// Time to establish a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response. There is no total timeout at this level, so that a
    /// large `getRepo` can stream for as long as it keeps moving; callers add one per request.
    pub read_timeout: Duration,
    /// Redirects followed per request (each is checked against the address rules).
    pub max_redirects: usize,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            allow_private_network: false,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            max_redirects: 5,
            user_agent: concat!("butterfly/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl HttpConfig {
    /// The default configuration with non-public addresses allowed or not.
    pub fn with_private_network(allow_private_network: bool) -> Self {
        HttpConfig {
            allow_private_network,
            ..HttpConfig::default()
        }
    }
}

/// Errors from [`HttpClient`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL cannot be fetched: not http(s), no host, or otherwise unusable.
    #[error("url {url}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host is, or resolves only to, loopback, private or otherwise non-public addresses, and the
    /// client does not allow them.
    #[error("{host} is not a public address (allow private networks to reach it)")]
    NonPublicAddress {
        /// The host name or address.
        host: String,
    },
    /// No response, or no further bytes, within the configured time.
    #[error("{url}: timed out")]
    Timeout {
        /// The URL requested.
        url: String,
    },
    /// The body is larger than the caller's limit.
    #[error("{url}: response body exceeds {limit} bytes")]
    TooLarge {
        /// The URL requested.
        url: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// Connecting failed (DNS, refused, reset, TLS).
    #[error("{url}: cannot connect: {message}")]
    Connect {
        /// The URL requested.
        url: String,
        /// The underlying error chain, as text.
        message: String,
    },
    /// Any other transport failure while sending or reading.
    #[error("{url}: {message}")]
    Transport {
        /// The URL requested.
        url: String,
        /// The underlying error chain, as text.
        message: String,
    },
    /// The client could not be built (TLS configuration).
    #[error("cannot build the http client: {0}")]
    Build(String),
}

impl Error {
    /// Whether trying again later may succeed: timeouts, connection failures and broken transfers.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. } | Error::Connect { .. } | Error::Transport { .. }
        )
    }

    /// Converts a reqwest error, recognising our own address-policy refusals inside it.
    pub fn from_reqwest(url: &str, error: reqwest::Error) -> Error {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(current) = source {
            if let Some(blocked) = current.downcast_ref::<BlockedAddress>() {
                return Error::NonPublicAddress {
                    host: blocked.host.clone(),
                };
            }
            source = current.source();
        }
        let message = error_chain(&error);
        if error.is_timeout() {
            Error::Timeout {
                url: url.to_owned(),
            }
        } else if error.is_connect() {
            Error::Connect {
                url: url.to_owned(),
                message,
            }
        } else if error.is_builder() {
            Error::InvalidUrl {
                url: url.to_owned(),
                reason: message,
            }
        } else {
            Error::Transport {
                url: url.to_owned(),
                message,
            }
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(current) = source {
        let text = current.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = current.source();
    }
    message
}

/// Raised inside the resolver and the redirect policy; [`Error::from_reqwest`] finds it again.
#[derive(Debug)]
struct BlockedAddress {
    host: String,
}

impl std::fmt::Display for BlockedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is not a public address", self.host)
    }
}

impl std::error::Error for BlockedAddress {}

/// A body read in full, within a size limit.
#[derive(Clone, Debug)]
pub struct LimitedResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// An HTTP client that enforces [`HttpConfig`]'s address rules and timeouts. Cheap to clone: clones share
/// one connection pool.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    allow_private_network: bool,
}

impl HttpClient {
    /// Builds a client. Installs the crypto provider first (see [`install_crypto_provider`]).
    pub fn new(config: &HttpConfig) -> Result<HttpClient, Error> {
        install_crypto_provider();
        let allow_private = config.allow_private_network;
        let max_redirects = config.max_redirects;
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                return attempt.error(format!("more than {max_redirects} redirects"));
            }
            match check_url_policy(attempt.url(), allow_private) {
                Ok(()) => attempt.follow(),
                Err(CheckFailure::Blocked(host)) => attempt.error(BlockedAddress { host }),
                Err(CheckFailure::Invalid(reason)) => attempt.error(reason),
            }
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .redirect(redirect)
            .user_agent(config.user_agent.clone())
            .dns_resolver(Arc::new(PolicyResolver { allow_private }))
            .build()
            .map_err(|error| Error::Build(error_chain(&error)))?;
        Ok(HttpClient {
            client,
            allow_private_network: allow_private,
        })
    }

    /// The underlying reqwest client. Requests made on it directly still go through the policy resolver
    /// and redirect checks, but skip [`HttpClient::check_url`] for literal IP hosts: call it first.
    pub fn inner(&self) -> &reqwest::Client {
        &self.client
    }

    /// Whether non-public addresses are allowed.
    pub fn allows_private_network(&self) -> bool {
        self.allow_private_network
    }

    /// Checks that `url` is http(s) with a host, and that a literal IP host is public (unless allowed).
    /// Host names are checked when they resolve.
    pub fn check_url(&self, url: &Url) -> Result<(), Error> {
        check_url_policy(url, self.allow_private_network).map_err(|failure| failure.into_error(url))
    }

    /// Starts a request after [`HttpClient::check_url`].
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &Url,
    ) -> Result<reqwest::RequestBuilder, Error> {
        self.check_url(url)?;
        Ok(self.client.request(method, url.clone()))
    }

    /// Sends `request` and reads its body, failing with [`Error::TooLarge`] past `max_bytes`.
    pub async fn send_limited(
        &self,
        request: reqwest::RequestBuilder,
        url: &Url,
        max_bytes: usize,
    ) -> Result<LimitedResponse, Error> {
        let response = request
            .send()
            .await
            .map_err(|error| Error::from_reqwest(url.as_str(), error))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = read_body_limited(response, max_bytes).await?;
        Ok(LimitedResponse {
            status,
            headers,
            body,
        })
    }

    /// GETs `url` with an `Accept` header and reads at most `max_bytes` of body, all within `timeout`
    /// (so a server that trickles bytes cannot hold the call open). Any status is returned; the caller
    /// decides what a 404 means.
    pub async fn get_limited(
        &self,
        url: &Url,
        accept: &str,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<LimitedResponse, Error> {
        let request = self
            .request(reqwest::Method::GET, url)?
            .header(reqwest::header::ACCEPT, accept)
            .timeout(timeout);
        self.send_limited(request, url, max_bytes).await
    }
}

/// Reads a response body, failing as soon as it exceeds `max_bytes` (by `Content-Length` or by counting),
/// so a hostile server cannot make us buffer more than the limit.
pub async fn read_body_limited(
    mut response: reqwest::Response,
    max_bytes: usize,
) -> Result<Bytes, Error> {
    let url = response.url().to_string();
    let too_large = || Error::TooLarge {
        url: url.clone(),
        limit: max_bytes,
    };
    if let Some(length) = response.content_length() {
        if length > max_bytes as u64 {
            return Err(too_large());
        }
    }
    // Content-Length is only a hint (it was checked above), so the buffer still grows if it lies.
    let expected = response.content_length().unwrap_or(0).min(max_bytes as u64) as usize;
    let mut body = BytesMut::with_capacity(expected);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| Error::from_reqwest(&url, error))?
    {
        if body.len() + chunk.len() > max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

enum CheckFailure {
    Blocked(String),
    Invalid(String),
}

impl CheckFailure {
    fn into_error(self, url: &Url) -> Error {
        match self {
            CheckFailure::Blocked(host) => Error::NonPublicAddress { host },
            CheckFailure::Invalid(reason) => Error::InvalidUrl {
                url: url.to_string(),
                reason,
            },
        }
    }
}

fn check_url_policy(url: &Url, allow_private: bool) -> Result<(), CheckFailure> {
    match url.scheme() {
        "http" | "https" => check_host_policy(url, allow_private),
        other => Err(CheckFailure::Invalid(format!(
            "scheme {other:?} is not http or https"
        ))),
    }
}

/// The checks of [`check_url_policy`] that do not depend on the scheme.
fn check_host_policy(url: &Url, allow_private: bool) -> Result<(), CheckFailure> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CheckFailure::Invalid(
            "credentials in the url are not allowed".to_owned(),
        ));
    }
    let ip = match url.host() {
        None => return Err(CheckFailure::Invalid("no host".to_owned())),
        Some(url::Host::Domain(_)) => return Ok(()),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
    };
    if allow_private || is_public_ip(&ip) {
        Ok(())
    } else {
        Err(CheckFailure::Blocked(ip.to_string()))
    }
}

/// Resolves names with the system resolver, then drops non-public addresses unless they are allowed.
struct PolicyResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let allowed = resolve_allowed(name.as_str(), 0, allow_private).await?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Resolves `host` with the system resolver and keeps the addresses the policy allows; fails with
/// [`BlockedAddress`] when none is left. Shared by [`PolicyResolver`] and [`connect_tcp`].
async fn resolve_allowed(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, BoxError> {
    let resolved = tokio::net::lookup_host((host, port)).await?;
    let allowed: Vec<SocketAddr> = resolved
        .filter(|address| allow_private || is_public_ip(&address.ip()))
        .collect();
    if allowed.is_empty() {
        return Err(Box::new(BlockedAddress {
            host: host.to_owned(),
        }));
    }
    Ok(allowed)
}

/// The checks [`connect_tcp`] makes before it resolves anything: `url` is `http`, `https`, `ws` or
/// `wss` with a host and no credentials, and a literal IP host is public unless `config` allows
/// private networks. Host names are checked when they resolve. A client that opens connections later
/// (a stream that reconnects) calls this up front, so that a refusal is reported at once.
pub fn check_connect_url(url: &Url, config: &HttpConfig) -> Result<(), Error> {
    match url.scheme() {
        "http" | "https" | "ws" | "wss" => check_host_policy(url, config.allow_private_network),
        other => Err(CheckFailure::Invalid(format!(
            "scheme {other:?} is not http, https, ws or wss"
        ))),
    }
    .map_err(|failure| failure.into_error(url))
}

/// Opens a TCP connection to the host and port of `url` under `config`'s address policy
/// ([`check_connect_url`]; a name is resolved by the same filtering resolver as [`HttpClient`]'s, so
/// only allowed addresses are dialled). Resolving and connecting together must finish within
/// `config.connect_timeout`; the addresses are tried in the resolver's order.
///
/// This is the way out for protocols that reqwest does not speak (WebSocket event streams), so that
/// they cannot skip the policy. The caller adds TLS (see [`tls_client_config`]).
pub async fn connect_tcp(url: &Url, config: &HttpConfig) -> Result<tokio::net::TcpStream, Error> {
    check_connect_url(url, config)?;
    let allow_private = config.allow_private_network;
    let invalid = |reason: &str| Error::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_owned(),
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| invalid("no port"))?;
    let host = url.host().ok_or_else(|| invalid("no host"))?;
    let connect = async {
        let addresses =
            match host {
                url::Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
                url::Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
                url::Host::Domain(name) => resolve_allowed(name, port, allow_private)
                    .await
                    .map_err(|error| match error.downcast::<BlockedAddress>() {
                        Ok(blocked) => Error::NonPublicAddress { host: blocked.host },
                        Err(error) => Error::Connect {
                            url: url.to_string(),
                            message: error_chain(error.as_ref()),
                        },
                    })?,
            };
        let mut last_error = None;
        for address in addresses {
            match tokio::net::TcpStream::connect(address).await {
                Ok(stream) => {
                    // Event streams send small control frames (pings) that must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(error) => last_error = Some(format!("{address}: {error}")),
            }
        }
        Err(Error::Connect {
            url: url.to_string(),
            message: last_error.unwrap_or_else(|| "no address to connect to".to_owned()),
        })
    };
    tokio::time::timeout(config.connect_timeout, connect)
        .await
        .map_err(|_| Error::Timeout {
            url: url.to_string(),
        })?
}

/// A rustls client configuration for TLS that reqwest does not carry (WebSocket over TLS): the ring
/// provider and the platform certificate verifier, as [`HttpClient`] uses, with rustls' safe default
/// protocol versions. No ALPN is set; the caller adds what its protocol needs.
pub fn tls_client_config() -> Result<rustls::ClientConfig, Error> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::Build(format!("tls: {error}")))?
        .with_platform_verifier()
        .map_err(|error| Error::Build(format!("tls verifier: {error}")))?
        .with_no_client_auth();
    Ok(config)
}

/// Whether `ip` is a globally reachable unicast address: not loopback, private, link-local, shared
/// (CGNAT), documentation, benchmarking, multicast, reserved or unspecified. IPv4 addresses embedded in
/// IPv6 (mapped, NAT64, 6to4) are judged by the IPv4 address.
pub fn is_public_ip(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_ipv4(v4),
        IpAddr::V6(v6) => is_public_ipv6(v6),
    }
}

fn is_public_ipv4(ip: &Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let blocked = a == 0                                  // "this network"
        || a == 10                                        // private
        || a == 127                                       // loopback
        || (a == 100 && (64..128).contains(&b))           // shared address space (CGNAT)
        || (a == 169 && b == 254)                         // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))            // private
        || (a == 192 && b == 0 && c == 0)                 // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)                 // documentation
        || (a == 192 && b == 88 && c == 99)               // 6to4 relay anycast
        || (a == 192 && b == 168)                         // private
        || (a == 198 && (b == 18 || b == 19))             // benchmarking
        || (a == 198 && b == 51 && c == 100)              // documentation
        || (a == 203 && b == 0 && c == 113)               // documentation
        || a >= 224; // multicast, reserved, broadcast
    !blocked
}

fn is_public_ipv6(ip: &Ipv6Addr) -> bool {
    let segments = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_ipv4(&v4);
    }
    let embedded_v4 = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if segments[0] == 0x64 && segments[1] == 0xff9b && segments[2..6] == [0, 0, 0, 0] {
        return is_public_ipv4(&embedded_v4(segments[6], segments[7])); // NAT64
    }
    if segments[0] == 0x2002 {
        return is_public_ipv4(&embedded_v4(segments[1], segments[2])); // 6to4
    }
    let blocked = ip.is_unspecified()
        || ip.is_loopback()
        || segments[..6] == [0, 0, 0, 0, 0, 0]                 // IPv4-compatible (deprecated)
        || (segments[0] & 0xfe00) == 0xfc00                    // unique local
        || (segments[0] & 0xffc0) == 0xfe80                    // link-local
        || (segments[0] & 0xffc0) == 0xfec0                    // site-local (deprecated)
        || (segments[0] & 0xff00) == 0xff00                    // multicast
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)    // documentation
        || (segments[0] == 0x2001 && segments[1] == 0)         // Teredo
        || (segments[0] == 0x0100 && segments[1..4] == [0, 0, 0]); // discard-only
    !blocked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(address: &str, public: bool) {
        let ip: IpAddr = address.parse().expect("test address parses");
        assert_eq!(is_public_ip(&ip), public, "{address}");
    }

    #[test]
    fn classifies_addresses() {
        for address in [
            "8.8.8.8",
            "1.1.1.1",
            "151.101.1.1",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            check(address, true);
        }
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::1",
            "::127.0.0.1",
        ] {
            check(address, false);
        }
        check("172.32.0.1", true);
        check("100.128.0.1", true);
    }

    #[test]
    fn literal_hosts_are_checked_before_connecting() {
        let strict = HttpClient::new(&HttpConfig::default()).expect("client builds");
        let open = HttpClient::new(&HttpConfig::with_private_network(true)).expect("client builds");
        for url in [
            "http://127.0.0.1:1/x",
            "http://[::1]:1/x",
            "http://169.254.169.254/latest",
        ] {
            let url = Url::parse(url).expect("test url parses");
            assert!(matches!(
                strict.check_url(&url),
                Err(Error::NonPublicAddress { .. })
            ));
            assert!(open.check_url(&url).is_ok());
        }
        for url in ["ftp://example.com/x", "https://user:pw@example.com/"] {
            let url = Url::parse(url).expect("test url parses");
            assert!(matches!(
                strict.check_url(&url),
                Err(Error::InvalidUrl { .. })
            ));
        }
    }
}
