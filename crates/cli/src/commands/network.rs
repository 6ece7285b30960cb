//! Flags shared by every command that goes to the network, and the clients built from them.

use anyhow::Context;
use butterfly_identity::{CacheConfig, Directory, Resolver, ResolverConfig};
use butterfly_net::{HttpClient, HttpConfig};
use clap::Args;
use url::Url;

/// How to reach the network.
#[derive(Debug, Args)]
pub struct NetworkArgs {
    /// Allow loopback, private and link-local addresses (for a local test network). By default,
    /// lookups driven by network data (did:web hosts, handle domains, PDS endpoints) go only to public
    /// addresses.
    #[arg(long, env = "BUTTERFLY_ALLOW_PRIVATE_NETWORK", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::FalseyValueParser::new())]
    pub allow_private_network: bool,
}

impl NetworkArgs {
    pub fn http_client(&self) -> anyhow::Result<HttpClient> {
        HttpClient::new(&HttpConfig::with_private_network(
            self.allow_private_network,
        ))
        .context("setting up the http client")
    }
}

/// Where identities are looked up.
#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// The PLC directory.
    #[arg(long = "plc", value_name = "URL", env = "BUTTERFLY_PLC_URL", default_value = butterfly_identity::DEFAULT_PLC_URL)]
    pub plc_url: Url,
    /// Resolve handles with this service's com.atproto.identity.resolveHandle instead of DNS and
    /// HTTPS (needed for handles that exist in no DNS, as on a local test network). The answer is
    /// still checked against the DID document.
    #[arg(long, value_name = "URL", env = "BUTTERFLY_HANDLE_RESOLVER")]
    pub handle_resolver: Option<Url>,
    /// Build did:plc documents from each DID's verified audit log instead of trusting the directory's
    /// document.
    #[arg(long)]
    pub verify_plc_audit: bool,
    #[command(flatten)]
    pub network: NetworkArgs,
}

impl IdentityArgs {
    pub fn resolver(&self) -> anyhow::Result<Resolver> {
        let config = ResolverConfig {
            plc_url: self.plc_url.clone(),
            handle_resolver: self.handle_resolver.clone(),
            verify_plc_audit: self.verify_plc_audit,
            ..ResolverConfig::default()
        };
        Ok(Resolver::new(self.network.http_client()?, config)?)
    }

    pub fn directory(&self) -> anyhow::Result<Directory> {
        Ok(Directory::new(self.resolver()?, CacheConfig::default()))
    }
}

/// A runtime on every core, with the TLS crypto provider installed: for commands that verify a
/// stream while they read it (`firehose`, `sync`).
pub fn streaming_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    butterfly_net::install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A runtime for one command's async work.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
