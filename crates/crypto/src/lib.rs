//! atproto keys and signatures: P-256 and K-256 public keys in their did:key, Multikey and
//! legacy DID document forms, deterministic low-S signing, and fast verification under the
//! atproto rules.
//!
//! # Main types
//!
//! - [`Algorithm`]: the two curves atproto allows, P-256 (`ES256`) and K-256 (`ES256K`).
//! - [`PublicKey`]: a checked curve point. Parse it once from a `did:key`
//!   ([`PublicKey::parse_did_key`]), a Multikey `publicKeyMultibase`
//!   ([`PublicKey::parse_multikey`]), a DID document verification method, current or legacy
//!   ([`PublicKey::from_did_doc_method`]), or raw SEC1 bytes ([`PublicKey::from_sec1_bytes`]),
//!   then verify with [`PublicKey::verify`] as often as needed: all decoding is done up front.
//! - [`PrivateKey`]: 32 scalar bytes the caller supplies; signs with [`PrivateKey::sign`].
//! - [`SignatureVerifier`]: the one trait verification goes through. [`FastVerifier`]
//!   (libsecp256k1 for K-256, ring for P-256) is the default; [`RustCryptoVerifier`] is the
//!   pure-Rust reference. Both apply the same atproto checks and return the same errors.
//! - Errors, one per concern: [`ParseKeyError`], [`PrivateKeyError`], [`VerifyError`].
//!
//! # The atproto rules enforced
//!
//! Messages are hashed with SHA-256. A signature is exactly 64 bytes of compact `r || s`; DER is
//! rejected. `s` must be in the low half of the curve order on both curves; a high-S signature
//! is rejected with [`VerifyError::HighS`] even though plain ECDSA would accept it. did:key and
//! Multikey hold compressed points behind the multicodec prefix `0xe7` (secp256k1-pub) or
//! `0x1200` (p256-pub), in base58btc.
//!
//! # What this crate does not do
//!
//! No I/O, no async, no clock and no random numbers: key generation takes 32 bytes from the
//! caller's RNG. It does not resolve DIDs or fetch DID documents (the caller passes the
//! verification method's `type` and `publicKeyMultibase`), export private keys as multibase, or
//! handle any curve but these two.
//!
//! Spec: <https://atproto.com/specs/cryptography>.
//!
//! # Example
//!
//! ```
//! use butterfly_crypto::{Algorithm, PrivateKey, PublicKey, VerifyError};
//!
//! // In real use the 32 bytes come from a cryptographic RNG.
//! let private_key = PrivateKey::from_bytes(Algorithm::K256, &[7u8; 32])?;
//! let did_key = private_key.public_key().to_did_key();
//! assert!(did_key.starts_with("did:key:zQ3s"));
//!
//! let signature = private_key.sign(b"hello atproto");
//!
//! let public_key = PublicKey::parse_did_key(&did_key)?;
//! public_key.verify(b"hello atproto", &signature)?;
//! assert!(matches!(
//!     public_key.verify(b"something else", &signature),
//!     Err(VerifyError::Mismatch { .. })
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod algorithm;
mod private_key;
mod public_key;
mod signature;

pub use algorithm::Algorithm;
pub use private_key::{PrivateKey, PrivateKeyError};
pub use public_key::{ParseKeyError, PublicKey, MAX_MULTIBASE_LEN};
pub use signature::{
    FastVerifier, RustCryptoVerifier, SignatureVerifier, VerifyError, SIGNATURE_LEN,
};
