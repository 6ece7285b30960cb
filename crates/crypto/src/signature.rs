//! Signature verification with atproto's rules, behind one trait with two implementations.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::algorithm::{is_zero, less_than, Algorithm};
use crate::public_key::{Inner, PublicKey};

/// The length of an atproto signature: compact `r || s`, 32 bytes each.
pub const SIGNATURE_LEN: usize = 64;

/// Why a signature was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The signature is not 64 bytes; DER-encoded signatures (70 to 72 bytes) land here.
    #[error("signature must be 64 bytes (compact r||s), found {found}")]
    Length {
        /// The length found.
        found: usize,
    },
    /// `r` or `s` is zero or not below the curve order, so it is no ECDSA signature at all.
    #[error("{algorithm} signature r and s must be in 1..n-1, found {part} out of range")]
    OutOfRange {
        /// The curve of the key.
        algorithm: Algorithm,
        /// Which half was out of range: `"r"` or `"s"`.
        part: &'static str,
    },
    /// `s` is above half the curve order. ECDSA would accept it, but atproto requires low-S so
    /// that each signature has one valid form.
    #[error("{algorithm} signature must be low-S (s <= n/2), found high-S")]
    HighS {
        /// The curve of the key.
        algorithm: Algorithm,
    },
    /// The signature is well formed but was not made by this key over this message.
    #[error("{algorithm} signature does not match the key and message")]
    Mismatch {
        /// The curve of the key.
        algorithm: Algorithm,
    },
}

/// Verifies atproto signatures: SHA-256 of the message, 64-byte compact `r || s`, low-S only.
///
/// Both implementations apply the same checks, in the same order, before any curve arithmetic
/// (length, then `r` and `s` in range, then low-S), so they return the same [`VerifyError`] for
/// the same input.
pub trait SignatureVerifier {
    /// Verifies `signature` over `message`, which is hashed with SHA-256 first.
    fn verify(&self, key: &PublicKey, message: &[u8], signature: &[u8]) -> Result<(), VerifyError>;

    /// Verifies `signature` over a message already hashed with SHA-256.
    fn verify_digest(
        &self,
        key: &PublicKey,
        sha256_digest: &[u8; 32],
        signature: &[u8],
    ) -> Result<(), VerifyError>;
}

/// The default verifier: libsecp256k1 (the `secp256k1` crate) for K-256 and ring for P-256.
///
/// ring hashes the message itself and has no prehashed entry point, so
/// [`SignatureVerifier::verify_digest`] on a P-256 key falls back to [`RustCryptoVerifier`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FastVerifier;

/// A pure-Rust verifier built on RustCrypto's `k256` and `p256`, kept as a reference and for
/// platforms where the native code of the fast path is unwanted.
#[derive(Debug, Clone, Copy, Default)]
pub struct RustCryptoVerifier;

impl SignatureVerifier for FastVerifier {
    fn verify(&self, key: &PublicKey, message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        let signature = check_compact(key.algorithm(), signature)?;
        match key.inner() {
            Inner::K256 { fast, .. } => verify_libsecp256k1(fast, &sha256(message), signature),
            Inner::P256 { uncompressed, .. } => verify_ring(uncompressed, message, signature),
        }
    }

    fn verify_digest(
        &self,
        key: &PublicKey,
        sha256_digest: &[u8; 32],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        let signature = check_compact(key.algorithm(), signature)?;
        match key.inner() {
            Inner::K256 { fast, .. } => verify_libsecp256k1(fast, sha256_digest, signature),
            p256 @ Inner::P256 { .. } => verify_rust_crypto(p256, sha256_digest, signature),
        }
    }
}

impl SignatureVerifier for RustCryptoVerifier {
    fn verify(&self, key: &PublicKey, message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        self.verify_digest(key, &sha256(message), signature)
    }

    fn verify_digest(
        &self,
        key: &PublicKey,
        sha256_digest: &[u8; 32],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        let signature = check_compact(key.algorithm(), signature)?;
        verify_rust_crypto(key.inner(), sha256_digest, signature)
    }
}

/// The atproto checks shared by every verifier: exactly 64 bytes, `r` and `s` in `1..n`, and
/// `s <= n/2`. Returns the signature as an array on success.
fn check_compact(algorithm: Algorithm, signature: &[u8]) -> Result<&[u8; 64], VerifyError> {
    let signature: &[u8; SIGNATURE_LEN] =
        signature.try_into().map_err(|_| VerifyError::Length {
            found: signature.len(),
        })?;
    let (r, s) = split_scalars(signature);
    let order = algorithm.order();
    for (part, scalar) in [("r", &r), ("s", &s)] {
        if is_zero(scalar) || !less_than(scalar, order) {
            return Err(VerifyError::OutOfRange { algorithm, part });
        }
    }
    if less_than(algorithm.half_order(), &s) {
        return Err(VerifyError::HighS { algorithm });
    }
    Ok(signature)
}

/// Splits a compact signature into `r` and `s`.
pub(crate) fn split_scalars(signature: &[u8; 64]) -> ([u8; 32], [u8; 32]) {
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&signature[..32]);
    s.copy_from_slice(&signature[32..]);
    (r, s)
}

/// Verifies a signature that passed [`check_compact`] with RustCrypto's prehash entry point.
fn verify_rust_crypto(
    key: &Inner,
    digest: &[u8; 32],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), VerifyError> {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let (algorithm, verified) = match key {
        Inner::K256 { rust_crypto, .. } => (
            Algorithm::K256,
            k256::ecdsa::Signature::from_slice(signature)
                .and_then(|signature| rust_crypto.verify_prehash(digest, &signature)),
        ),
        Inner::P256 { rust_crypto, .. } => (
            Algorithm::P256,
            p256::ecdsa::Signature::from_slice(signature)
                .and_then(|signature| rust_crypto.verify_prehash(digest, &signature)),
        ),
    };
    verified.map_err(|_| VerifyError::Mismatch { algorithm })
}

fn verify_libsecp256k1(
    key: &secp256k1::PublicKey,
    digest: &[u8; 32],
    signature: &[u8; 64],
) -> Result<(), VerifyError> {
    let algorithm = Algorithm::K256;
    let signature = secp256k1::ecdsa::Signature::from_compact(signature)
        .map_err(|_| VerifyError::Mismatch { algorithm })?;
    let message = secp256k1::Message::from_digest(*digest);
    secp256k1_context()
        .verify_ecdsa(&message, &signature, key)
        .map_err(|_| VerifyError::Mismatch { algorithm })
}

/// Verifies a P-256 signature that passed [`check_compact`] with ring, which hashes `message`.
fn verify_ring(
    uncompressed: &[u8; 65],
    message: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), VerifyError> {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, uncompressed)
        .verify(message, signature)
        .map_err(|_| VerifyError::Mismatch {
            algorithm: Algorithm::P256,
        })
}

/// One libsecp256k1 context for the process (signing and verification), built on first use.
pub(crate) fn secp256k1_context() -> &'static secp256k1::Secp256k1<secp256k1::All> {
    static CONTEXT: OnceLock<secp256k1::Secp256k1<secp256k1::All>> = OnceLock::new();
    CONTEXT.get_or_init(secp256k1::Secp256k1::new)
}

pub(crate) fn sha256(message: &[u8]) -> [u8; 32] {
    Sha256::digest(message).into()
}
