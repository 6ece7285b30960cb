//! Where the verifier gets each repo's signing key.
//!
//! Live verification asks the identity layer ([`Directory`], cached, with a rate-limited refetch); an
//! offline replay uses a fixed set of DID documents ([`StaticKeys`]). Both sit behind [`KeySource`] so
//! the verifier does not care which.

use butterfly_crypto::PublicKey;
use butterfly_identity::{DidDocument, Directory};
use butterfly_syntax::{AtIdentifier, Did};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

/// A boxed future, so that [`KeySource`] can be used as a trait object.
pub type KeyFuture<'a> = Pin<Box<dyn Future<Output = Result<PublicKey, KeyError>> + Send + 'a>>;

/// Why no key could be had for a DID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The DID does not exist, has no document, or its document has no atproto signing key.
    #[error("no signing key for {did}: {message}")]
    NotFound {
        /// The DID.
        did: String,
        /// What the lookup found.
        message: String,
    },
    /// The lookup failed for a reason that may pass (network, rate limit).
    #[error("signing key for {did} unavailable: {message}")]
    Unavailable {
        /// The DID.
        did: String,
        /// What went wrong.
        message: String,
    },
}

/// Signing keys by DID.
pub trait KeySource: Send + Sync {
    /// The current key, from cache when it can.
    fn signing_key<'a>(&'a self, did: &'a Did) -> KeyFuture<'a>;

    /// Drops what is cached and looks the key up again; used once after a signature fails, since a
    /// key rotation reaches the firehose before caches expire.
    fn refreshed_key<'a>(&'a self, did: &'a Did) -> KeyFuture<'a>;

    /// Forgets what is cached for `did` (on `#identity`).
    fn purge(&self, did: &Did);
}

/// Keys from a fixed list of DID documents: offline replays and tests.
#[derive(Debug, Default, Clone)]
pub struct StaticKeys {
    keys: HashMap<Did, PublicKey>,
}

/// Why a list of DID documents could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("identities: {0}")]
pub struct LoadError(String);

impl StaticKeys {
    /// No keys.
    pub fn new() -> Self {
        StaticKeys::default()
    }

    /// Adds or replaces a key.
    pub fn insert(&mut self, did: Did, key: PublicKey) {
        self.keys.insert(did, key);
    }

    /// Number of DIDs known.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no DID is known.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Reads a JSON array of DID documents, as `sim firehose --identities-out` writes.
    pub fn from_json_array(bytes: &[u8]) -> Result<StaticKeys, LoadError> {
        let docs: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| LoadError(e.to_string()))?;
        let serde_json::Value::Array(docs) = docs else {
            return Err(LoadError("expected a JSON array of DID documents".into()));
        };
        let mut keys = StaticKeys::new();
        for (i, doc) in docs.into_iter().enumerate() {
            let id = doc
                .get("id")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| LoadError(format!("[{i}]: no string id")))?;
            let did = Did::parse(id).map_err(|e| LoadError(format!("[{i}]: {e}")))?;
            let doc = DidDocument::from_json(doc, &did)
                .map_err(|e| LoadError(format!("[{i}] {did}: {e}")))?;
            let key = doc
                .signing_key()
                .map_err(|e| LoadError(format!("[{i}] {did}: {e}")))?
                .ok_or_else(|| LoadError(format!("[{i}] {did}: no atproto signing key")))?;
            keys.insert(did, key);
        }
        Ok(keys)
    }

    fn lookup(&self, did: &Did) -> Result<PublicKey, KeyError> {
        self.keys
            .get(did)
            .cloned()
            .ok_or_else(|| KeyError::NotFound {
                did: did.to_string(),
                message: "not in the identities file".into(),
            })
    }
}

impl KeySource for StaticKeys {
    fn signing_key<'a>(&'a self, did: &'a Did) -> KeyFuture<'a> {
        let key = self.lookup(did);
        Box::pin(async move { key })
    }

    fn refreshed_key<'a>(&'a self, did: &'a Did) -> KeyFuture<'a> {
        self.signing_key(did)
    }

    fn purge(&self, _did: &Did) {}
}

/// Keys from the identity layer: cached DID documents, refetched (rate-limited per DID) on demand.
#[derive(Clone)]
pub struct DirectoryKeys {
    directory: std::sync::Arc<Directory>,
}

impl DirectoryKeys {
    /// Looks keys up through `directory`.
    pub fn new(directory: std::sync::Arc<Directory>) -> Self {
        DirectoryKeys { directory }
    }
}

fn key_error(did: &Did, error: butterfly_identity::Error) -> KeyError {
    if error.is_not_found() {
        KeyError::NotFound {
            did: did.to_string(),
            message: error.to_string(),
        }
    } else {
        KeyError::Unavailable {
            did: did.to_string(),
            message: error.to_string(),
        }
    }
}

impl KeySource for DirectoryKeys {
    fn signing_key<'a>(&'a self, did: &'a Did) -> KeyFuture<'a> {
        Box::pin(async move {
            self.directory
                .signing_key(did)
                .await
                .map_err(|e| key_error(did, e))
        })
    }

    fn refreshed_key<'a>(&'a self, did: &'a Did) -> KeyFuture<'a> {
        Box::pin(async move {
            self.directory
                .refetch_signing_key(did)
                .await
                .map_err(|e| key_error(did, e))
        })
    }

    fn purge(&self, did: &Did) {
        self.directory.purge(&AtIdentifier::Did(did.clone()));
    }
}
