//! The identity crate's error type.

/// Why a DID or handle could not be resolved or trusted.
///
/// Errors are `Clone` so that one failed lookup can be handed to every caller that waited on it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The DID method is neither `plc` nor `web`, or the DID is a form atproto does not support (a
    /// `did:web` with a path).
    #[error("{did}: unsupported DID ({reason})")]
    UnsupportedDid {
        /// The DID.
        did: String,
        /// Why.
        reason: String,
    },
    /// The directory or web host answered that the DID does not exist (404).
    #[error("{did}: DID not found")]
    DidNotFound {
        /// The DID.
        did: String,
    },
    /// The DID was tombstoned or deactivated (PLC answers 410 Gone).
    #[error("{did}: DID is deactivated")]
    DidDeactivated {
        /// The DID.
        did: String,
    },
    /// The DID document is malformed, too large, or for another DID.
    #[error("{did}: invalid DID document: {reason}")]
    InvalidDocument {
        /// The DID.
        did: String,
        /// What is wrong.
        reason: String,
    },
    /// No method found a DID for the handle (no `_atproto` TXT record, no well-known file, or the
    /// handle resolver answered that it does not know it).
    #[error("{handle}: handle not found")]
    HandleNotFound {
        /// The handle.
        handle: String,
    },
    /// A handle lookup found something that is not a valid answer: several different DIDs, or text
    /// that is not a DID.
    #[error("{handle}: handle resolution failed: {reason}")]
    InvalidHandleAnswer {
        /// The handle.
        handle: String,
        /// What was found.
        reason: String,
    },
    /// The handle points at a DID whose document does not list the handle back: not trusted.
    #[error("{handle}: resolves to {did}, whose document does not list the handle")]
    HandleMismatch {
        /// The handle.
        handle: String,
        /// The DID it resolved to.
        did: String,
    },
    /// A PLC audit log failed verification.
    #[error("{did}: PLC audit log is not valid: {reason}")]
    InvalidAuditLog {
        /// The DID.
        did: String,
        /// The first failure found.
        reason: String,
    },
    /// A signature did not verify against the identity's key, even after refetching it.
    #[error("{did}: signature does not verify against the current signing key")]
    BadSignature {
        /// The DID.
        did: String,
    },
    /// The identity has no atproto signing key.
    #[error("{did}: the DID document has no atproto signing key")]
    NoSigningKey {
        /// The DID.
        did: String,
    },
    /// The server answered with an unexpected status.
    #[error("{url}: unexpected http status {status}")]
    HttpStatus {
        /// The URL requested.
        url: String,
        /// The status code.
        status: u16,
    },
    /// A network failure: timeout, refused connection, DNS failure, a non-public address, an
    /// oversized body. `transient` tells whether trying again later may help.
    #[error("{message}")]
    Network {
        /// The failure, with the URL or name involved.
        message: String,
        /// Whether retrying later may succeed.
        transient: bool,
    },
}

impl Error {
    /// Whether the lookup may succeed if tried again later (network trouble, server errors), as
    /// opposed to a definite answer (not found, invalid, mismatch).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Network { transient, .. } => *transient,
            Error::HttpStatus { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// Whether this is a definite "does not exist" answer, which may be cached as a miss.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::DidNotFound { .. } | Error::HandleNotFound { .. } | Error::DidDeactivated { .. }
        )
    }
}

impl From<butterfly_net::Error> for Error {
    fn from(error: butterfly_net::Error) -> Error {
        Error::Network {
            transient: error.is_transient(),
            message: error.to_string(),
        }
    }
}
