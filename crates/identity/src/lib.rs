//! atproto identity: who a DID or handle is, checked both ways, and whether its history can be trusted.
//!
//! - [`DidDocument`] reads the parts of a DID document atproto uses (signing key, PDS endpoint, handle),
//!   in current (Multikey) and legacy forms.
//! - [`Resolver`] makes uncached lookups: `did:plc` from a PLC directory, `did:web` from its host, and
//!   handles by DNS TXT `_atproto.HANDLE`, HTTPS `/.well-known/atproto-did`, or an XRPC
//!   `resolveHandle` service.
//! - [`Directory`] wraps a resolver with a cache ([`CacheStore`]; TTLs for hits and misses,
//!   stale-while-revalidate, coalesced concurrent lookups, purge) and checks handles in both
//!   directions: a handle counts only if it resolves to the DID *and* the DID's document lists it.
//! - [`plc`] verifies a DID's whole PLC operation log (signatures, CIDs, the DID derived from the
//!   genesis operation, nullification), so an identity can be trusted without trusting the directory.
//!
//! Every lookup goes through a `butterfly_net::HttpClient`, whose address policy keeps URLs that come
//! from the network (did:web hosts, handle domains) away from private addresses unless allowed.
//!
//! Not here: repo or commit verification (`butterfly-repo`), XRPC beyond `resolveHandle`
//! (`butterfly-xrpc`), persistence of the cache (the engine supplies a [`CacheStore`]).
//!
//! Specs: <https://atproto.com/specs/did>, <https://atproto.com/specs/handle>,
//! <https://web.plc.directory/spec/v0.1/did-plc>.
//!
//! ```no_run
//! use butterfly_identity::{CacheConfig, Directory, Resolver, ResolverConfig};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let http = butterfly_net::HttpClient::new(&butterfly_net::HttpConfig::default())?;
//! let directory = Directory::new(Resolver::new(http, ResolverConfig::default())?, CacheConfig::default());
//! let identity = directory.resolve(&"atproto.com".parse()?).await?;
//! println!("{} {:?} verified={} pds={:?}", identity.did, identity.handle, identity.handle_verified, identity.pds);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod cache;
mod did_doc;
mod directory;
mod error;
pub mod plc;
mod resolve;

pub use cache::{CacheEntry, CacheKey, CacheStore, CachedValue, MemoryCache};
pub use did_doc::{DidDocument, Service, VerificationMethod, MAX_DOCUMENT_BYTES};
pub use directory::{CacheConfig, Directory, ResolvedIdentity};
pub use error::Error;
pub use resolve::{did_web_url, Resolver, ResolverConfig, DEFAULT_PLC_URL};
