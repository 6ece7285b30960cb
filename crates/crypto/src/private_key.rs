//! Private keys: deterministic, low-S signing.

use std::fmt;

use crate::algorithm::Algorithm;
use crate::public_key::PublicKey;
use crate::signature::{secp256k1_context, sha256, SIGNATURE_LEN};

/// Why private key bytes were rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateKeyError {
    /// The input is not 32 bytes.
    #[error("private key must be 32 bytes, found {found}")]
    Length {
        /// The length found.
        found: usize,
    },
    /// The 32 bytes, read big-endian, are zero or not below the curve order.
    #[error("{algorithm} private key must be a scalar in 1..n-1, found zero or a value not below the curve order")]
    OutOfRange {
        /// The curve the key was meant for.
        algorithm: Algorithm,
    },
}

/// A P-256 or K-256 private key that makes atproto signatures.
///
/// Signing is deterministic (RFC 6979, with SHA-256) and always yields low-S compact signatures,
/// so the same key and message give the same 64 bytes. K-256 keys sign with libsecp256k1, more than
/// twice as fast as the pure Rust signer and byte for byte the same; P-256 keys sign with
/// RustCrypto. `Debug` never shows the secret, and it is overwritten when the key is dropped.
#[derive(Clone)]
pub struct PrivateKey {
    inner: PrivateInner,
    public_key: PublicKey,
}

#[derive(Clone)]
enum PrivateInner {
    K256(K256Secret),
    P256(p256::ecdsa::SigningKey),
}

/// A libsecp256k1 secret key, overwritten on drop (the type itself is `Copy`, so it cannot be).
#[derive(Clone)]
struct K256Secret(secp256k1::SecretKey);

impl Drop for K256Secret {
    fn drop(&mut self) {
        self.0.non_secure_erase();
    }
}

impl PrivateKey {
    /// Builds a key from 32 big-endian scalar bytes on the given curve.
    ///
    /// This crate has no random number generator: to make a new key, pass 32 bytes from a
    /// cryptographic RNG. Bytes that are zero or not below the curve order are rejected (for
    /// random bytes that chance is negligible on K-256 and about 2^-32 on P-256; draw again).
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Result<PrivateKey, PrivateKeyError> {
        let bytes: &[u8; 32] = bytes
            .try_into()
            .map_err(|_| PrivateKeyError::Length { found: bytes.len() })?;
        let out_of_range = PrivateKeyError::OutOfRange { algorithm };
        let (inner, sec1) = match algorithm {
            Algorithm::K256 => {
                let key = secp256k1::SecretKey::from_byte_array(bytes).map_err(|_| out_of_range)?;
                // The uncompressed form spares the parser below a square root.
                let sec1 = secp256k1::PublicKey::from_secret_key(secp256k1_context(), &key)
                    .serialize_uncompressed();
                (PrivateInner::K256(K256Secret(key)), sec1.to_vec())
            }
            Algorithm::P256 => {
                let key =
                    p256::ecdsa::SigningKey::from_bytes(bytes.into()).map_err(|_| out_of_range)?;
                let sec1 = key.verifying_key().to_encoded_point(true);
                (PrivateInner::P256(key), sec1.as_bytes().to_vec())
            }
        };
        // The point comes from a valid scalar, so parsing it succeeds; should it ever fail, the
        // key is reported as out of range rather than panicking.
        let public_key = PublicKey::from_sec1_bytes(algorithm, &sec1).map_err(|_| out_of_range)?;
        Ok(PrivateKey { inner, public_key })
    }

    /// The curve of this key.
    pub fn algorithm(&self) -> Algorithm {
        self.public_key.algorithm()
    }

    /// The matching public key, computed once when the key was built.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The 32 big-endian scalar bytes, for storing the key. Handle them as a secret.
    pub fn to_bytes(&self) -> [u8; 32] {
        match &self.inner {
            PrivateInner::K256(key) => key.0.secret_bytes(),
            PrivateInner::P256(key) => key.to_bytes().into(),
        }
    }

    /// Signs `message` (hashed with SHA-256) and returns the compact `r || s` signature, with
    /// `s` normalised to the low half of the curve order as atproto requires.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        use p256::ecdsa::signature::Signer;
        match &self.inner {
            // libsecp256k1 uses RFC 6979 nonces and always returns low-S.
            PrivateInner::K256(key) => secp256k1_context()
                .sign_ecdsa(&secp256k1::Message::from_digest(sha256(message)), &key.0)
                .serialize_compact(),
            PrivateInner::P256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(message);
                signature
                    .normalize_s()
                    .unwrap_or(signature)
                    .to_bytes()
                    .into()
            }
        }
    }
}

/// Shows the algorithm and public key, never the secret.
impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm())
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{split_scalars, FastVerifier, RustCryptoVerifier, SignatureVerifier};
    use crate::VerifyError;

    const ALGORITHMS: [Algorithm; 2] = [Algorithm::K256, Algorithm::P256];

    fn key(algorithm: Algorithm) -> PrivateKey {
        PrivateKey::from_bytes(algorithm, &[0x42; 32]).expect("0x42.. is a valid scalar")
    }

    /// Both verifiers, so every check below runs against each.
    fn verifiers() -> [(&'static str, &'static dyn SignatureVerifier); 2] {
        [
            ("fast", &FastVerifier),
            ("rust-crypto", &RustCryptoVerifier),
        ]
    }

    /// Computes n - s, big-endian.
    fn negate(order: &[u8; 32], s: &[u8; 32]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let mut value = i16::from(order[i]) - i16::from(s[i]) - borrow;
            borrow = i16::from(value < 0);
            if value < 0 {
                value += 256;
            }
            out[i] = value as u8;
        }
        out
    }

    #[test]
    fn sign_then_verify_on_both_curves() {
        for algorithm in ALGORITHMS {
            let key = key(algorithm);
            let message = b"butterfly commit";
            let signature = key.sign(message);
            assert_eq!(signature, key.sign(message), "RFC 6979 is deterministic");
            let digest = crate::signature::sha256(message);
            for (name, verifier) in verifiers() {
                let public = key.public_key();
                assert_eq!(
                    verifier.verify(public, message, &signature),
                    Ok(()),
                    "{algorithm} {name}"
                );
                assert_eq!(
                    verifier.verify_digest(public, &digest, &signature),
                    Ok(()),
                    "{algorithm} {name}"
                );
                assert_eq!(
                    verifier.verify(public, b"another message", &signature),
                    Err(VerifyError::Mismatch { algorithm }),
                    "{algorithm} {name}"
                );
                let other = PrivateKey::from_bytes(algorithm, &[0x43; 32]).expect("valid scalar");
                assert_eq!(
                    verifier.verify(other.public_key(), message, &signature),
                    Err(VerifyError::Mismatch { algorithm }),
                    "{algorithm} {name}"
                );
            }
            assert_eq!(key.public_key().verify(message, &signature), Ok(()));
            assert_eq!(key.public_key().verify_digest(&digest, &signature), Ok(()));
        }
    }

    #[test]
    fn k256_signatures_match_the_rust_crypto_signer() {
        use k256::ecdsa::signature::Signer;
        for seed in 1u8..=40 {
            let bytes = [seed; 32];
            let key = PrivateKey::from_bytes(Algorithm::K256, &bytes).expect("valid scalar");
            let reference = k256::ecdsa::SigningKey::from_bytes(&bytes.into()).expect("valid");
            let reference_public = reference.verifying_key().to_encoded_point(true);
            assert_eq!(
                key.public_key(),
                &PublicKey::from_sec1_bytes(Algorithm::K256, reference_public.as_bytes())
                    .expect("valid point")
            );
            assert_eq!(key.to_bytes(), bytes);
            for message in [&b""[..], b"butterfly commit", &[seed; 300]] {
                let expected: k256::ecdsa::Signature = reference.sign(message);
                let expected: [u8; SIGNATURE_LEN] =
                    expected.normalize_s().unwrap_or(expected).to_bytes().into();
                assert_eq!(key.sign(message), expected, "seed {seed}");
            }
        }
    }

    #[test]
    fn signatures_are_low_s() {
        for algorithm in ALGORITHMS {
            let key = key(algorithm);
            // About half of raw ECDSA signatures are high-S, so 32 messages all coming out low
            // shows that normalisation happens.
            for idx in 0u8..32 {
                let signature = key.sign(&[idx]);
                let (_, s) = split_scalars(&signature);
                assert!(
                    !crate::algorithm::less_than(algorithm.half_order(), &s),
                    "{algorithm} {idx}"
                );
            }
        }
    }

    #[test]
    fn high_s_variant_is_rejected() {
        for algorithm in ALGORITHMS {
            let key = key(algorithm);
            let message = b"malleable";
            let signature = key.sign(message);
            let (r, s) = split_scalars(&signature);
            let mut high = [0u8; 64];
            high[..32].copy_from_slice(&r);
            high[32..].copy_from_slice(&negate(algorithm.order(), &s));
            for (name, verifier) in verifiers() {
                assert_eq!(
                    verifier.verify(key.public_key(), message, &high),
                    Err(VerifyError::HighS { algorithm }),
                    "{algorithm} {name}"
                );
            }
        }
    }

    #[test]
    fn malformed_signatures_are_rejected_alike() {
        for algorithm in ALGORITHMS {
            let key = key(algorithm);
            let message = b"shape";
            let signature = key.sign(message);
            let mut zero_r = signature;
            zero_r[..32].fill(0);
            let mut big_r = signature;
            big_r[..32].copy_from_slice(algorithm.order());
            let mut zero_s = signature;
            zero_s[32..].fill(0);
            let mut max_s = signature;
            max_s[32..].fill(0xff);
            let cases: [(&[u8], VerifyError); 7] = [
                (&[], VerifyError::Length { found: 0 }),
                (&signature[..63], VerifyError::Length { found: 63 }),
                (
                    &[signature.as_slice(), &[0]].concat(),
                    VerifyError::Length { found: 65 },
                ),
                (
                    &zero_r,
                    VerifyError::OutOfRange {
                        algorithm,
                        part: "r",
                    },
                ),
                (
                    &big_r,
                    VerifyError::OutOfRange {
                        algorithm,
                        part: "r",
                    },
                ),
                (
                    &zero_s,
                    VerifyError::OutOfRange {
                        algorithm,
                        part: "s",
                    },
                ),
                (
                    &max_s,
                    VerifyError::OutOfRange {
                        algorithm,
                        part: "s",
                    },
                ),
            ];
            for (input, expected) in cases {
                for (name, verifier) in verifiers() {
                    assert_eq!(
                        verifier.verify(key.public_key(), message, input),
                        Err(expected),
                        "{algorithm} {name}"
                    );
                }
            }
        }
        assert_eq!(
            VerifyError::Length { found: 71 }.to_string(),
            "signature must be 64 bytes (compact r||s), found 71"
        );
    }

    #[test]
    fn bad_private_keys_are_rejected() {
        for algorithm in ALGORITHMS {
            assert_eq!(
                PrivateKey::from_bytes(algorithm, &[0; 32]).map(|_| ()),
                Err(PrivateKeyError::OutOfRange { algorithm })
            );
            assert_eq!(
                PrivateKey::from_bytes(algorithm, algorithm.order()).map(|_| ()),
                Err(PrivateKeyError::OutOfRange { algorithm })
            );
            assert_eq!(
                PrivateKey::from_bytes(algorithm, &[0xff; 32]).map(|_| ()),
                Err(PrivateKeyError::OutOfRange { algorithm })
            );
            assert_eq!(
                PrivateKey::from_bytes(algorithm, &[1; 31]).map(|_| ()),
                Err(PrivateKeyError::Length { found: 31 })
            );
            let key = key(algorithm);
            assert_eq!(
                PrivateKey::from_bytes(algorithm, &key.to_bytes()).map(|k| k.public_key().clone()),
                Ok(key.public_key().clone())
            );
            let debug = format!("{key:?}");
            assert!(
                !debug.contains("4242") && !debug.contains("66, 66"),
                "{debug}"
            );
            assert!(debug.starts_with("PrivateKey { algorithm"), "{debug}");
        }
    }
}
