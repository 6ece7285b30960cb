//! Public keys: parsing from did:key, Multikey, legacy DID document forms and raw SEC1 bytes.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use crate::algorithm::Algorithm;
use crate::signature::{FastVerifier, SignatureVerifier, VerifyError};

/// The prefix of every `did:key` identifier.
const DID_KEY_PREFIX: &str = "did:key:";

/// The longest multibase key string accepted, in characters.
///
/// An uncompressed SEC1 point with a two-byte multicodec prefix is 67 bytes, about 92 base58
/// characters. The limit keeps base58 decoding, which is quadratic, cheap on hostile input.
pub const MAX_MULTIBASE_LEN: usize = 128;

/// How much of a rejected input an error message quotes.
const EXCERPT_LEN: usize = 64;

/// Multicodec varint prefixes of compressed public keys (0xe7 and 0x1200).
const K256_MULTICODEC_PREFIX: [u8; 2] = [0xe7, 0x01];
const P256_MULTICODEC_PREFIX: [u8; 2] = [0x80, 0x24];

/// Verification method types a DID document may use for an atproto signing key.
const MULTIKEY: &str = "Multikey";
const LEGACY_P256: &str = "EcdsaSecp256r1VerificationKey2019";
const LEGACY_K256: &str = "EcdsaSecp256k1VerificationKey2019";

/// Why a public key could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseKeyError {
    /// A did:key string does not start with `did:key:`.
    #[error("expected a did:key starting with \"did:key:\", found {found:?}")]
    NotDidKey {
        /// The start of the rejected input.
        found: String,
    },
    /// The multibase string is longer than [`MAX_MULTIBASE_LEN`].
    #[error("multibase key must be at most {max} characters, found {found}")]
    TooLong {
        /// The limit.
        max: usize,
        /// The length of the input.
        found: usize,
    },
    /// The multibase string does not start with `z` (base58btc), the only base atproto uses.
    #[error("expected base58btc multibase starting with 'z', found {found:?}")]
    NotBase58Btc {
        /// The start of the rejected input.
        found: String,
    },
    /// The text after the `z` is not valid base58 (Bitcoin alphabet).
    #[error("invalid base58btc in multibase key: {reason}")]
    Base58 {
        /// What the decoder reported.
        reason: String,
    },
    /// The decoded bytes do not start with a complete multicodec varint.
    #[error("expected a multicodec varint prefix, found a truncated or overlong one")]
    Multicodec,
    /// The multicodec names a key type atproto does not use.
    #[error(
        "unsupported key multicodec: expected 0xe7 (secp256k1-pub) or 0x1200 (p256-pub), found {found:#x}"
    )]
    UnsupportedMulticodec {
        /// The multicodec code found.
        found: u64,
    },
    /// The key bytes have the wrong length or SEC1 tag for the form being parsed.
    #[error("{algorithm} key must be {expected}, found {found} bytes starting with {tag}")]
    KeyEncoding {
        /// The curve the key was parsed for.
        algorithm: Algorithm,
        /// The encodings accepted here.
        expected: &'static str,
        /// The number of key bytes found.
        found: usize,
        /// The first byte, in hex, or "nothing" when empty.
        tag: String,
    },
    /// The key bytes are well formed but are not a point on the curve.
    #[error("{algorithm} key bytes are not a valid point on the curve")]
    InvalidPoint {
        /// The curve the key was parsed for.
        algorithm: Algorithm,
    },
    /// The DID document verification method has a type this crate does not know.
    #[error(
        "unsupported verification method type: expected Multikey, EcdsaSecp256r1VerificationKey2019 or EcdsaSecp256k1VerificationKey2019, found {found:?}"
    )]
    UnsupportedMethodType {
        /// The start of the rejected type.
        found: String,
    },
}

/// An atproto public key on P-256 or K-256, checked to be a valid curve point.
///
/// Build one with [`PublicKey::parse_did_key`], [`PublicKey::parse_multikey`],
/// [`PublicKey::from_did_doc_method`] or [`PublicKey::from_sec1_bytes`]. Parsing does all the
/// work a verification needs (point decompression, the libsecp256k1 and RustCrypto key forms), so
/// [`PublicKey::verify`] parses nothing. Cloning is a reference-count increment. Equality and
/// hashing use the algorithm and the compressed point.
#[derive(Clone)]
pub struct PublicKey {
    inner: Arc<Inner>,
}

/// The parsed forms of one key, prepared for each verifier.
pub(crate) enum Inner {
    K256 {
        compressed: [u8; 33],
        /// The libsecp256k1 form, for [`FastVerifier`].
        fast: secp256k1::PublicKey,
        /// The RustCrypto form.
        rust_crypto: k256::ecdsa::VerifyingKey,
    },
    P256 {
        compressed: [u8; 33],
        /// The uncompressed SEC1 point, the only form ring accepts, for [`FastVerifier`].
        uncompressed: [u8; 65],
        /// The RustCrypto form, also used by [`FastVerifier`] for prehashed input.
        rust_crypto: p256::ecdsa::VerifyingKey,
    },
}

impl PublicKey {
    /// Parses a `did:key:z…` identifier holding a compressed P-256 or K-256 key.
    ///
    /// The key must carry its multicodec prefix (0x1200 or 0xe7) and be in compressed form, as
    /// atproto requires.
    pub fn parse_did_key(did_key: &str) -> Result<PublicKey, ParseKeyError> {
        let Some(multibase) = did_key.strip_prefix(DID_KEY_PREFIX) else {
            return Err(ParseKeyError::NotDidKey {
                found: excerpt(did_key),
            });
        };
        PublicKey::parse_multikey(multibase)
    }

    /// Parses a Multikey `publicKeyMultibase` value: `z`, then base58btc of the multicodec prefix
    /// and the compressed SEC1 point. This is the did:key form without `did:key:`.
    pub fn parse_multikey(public_key_multibase: &str) -> Result<PublicKey, ParseKeyError> {
        let bytes = decode_base58btc(public_key_multibase)?;
        let (code, key_bytes) = split_multicodec(&bytes)?;
        let algorithm = match code {
            0xe7 => Algorithm::K256,
            0x1200 => Algorithm::P256,
            found => return Err(ParseKeyError::UnsupportedMulticodec { found }),
        };
        if key_bytes.len() != 33 {
            return Err(encoding_error(
                algorithm,
                "33 bytes (compressed SEC1) in did:key and Multikey",
                key_bytes,
            ));
        }
        PublicKey::from_sec1_bytes(algorithm, key_bytes)
    }

    /// Parses the key of a DID document verification method from its `type` and
    /// `publicKeyMultibase`.
    ///
    /// `Multikey` is the current form (see [`PublicKey::parse_multikey`]). The legacy types
    /// `EcdsaSecp256r1VerificationKey2019` (P-256) and `EcdsaSecp256k1VerificationKey2019` (K-256)
    /// carry base58btc of the raw SEC1 point with no multicodec prefix, compressed or
    /// uncompressed.
    pub fn from_did_doc_method(
        type_: &str,
        public_key_multibase: &str,
    ) -> Result<PublicKey, ParseKeyError> {
        let algorithm = match type_ {
            MULTIKEY => return PublicKey::parse_multikey(public_key_multibase),
            LEGACY_P256 => Algorithm::P256,
            LEGACY_K256 => Algorithm::K256,
            other => {
                return Err(ParseKeyError::UnsupportedMethodType {
                    found: excerpt(other),
                })
            }
        };
        let bytes = decode_base58btc(public_key_multibase)?;
        PublicKey::from_sec1_bytes(algorithm, &bytes)
    }

    /// Parses a raw SEC1 point on the given curve: 33 bytes compressed (tag 0x02 or 0x03) or
    /// 65 bytes uncompressed (tag 0x04).
    pub fn from_sec1_bytes(algorithm: Algorithm, sec1: &[u8]) -> Result<PublicKey, ParseKeyError> {
        let well_formed = matches!(
            (sec1.len(), sec1.first()),
            (33, Some(0x02 | 0x03)) | (65, Some(0x04))
        );
        if !well_formed {
            return Err(encoding_error(
                algorithm,
                "33 bytes (compressed SEC1, tag 0x02 or 0x03) or 65 bytes (uncompressed, tag 0x04)",
                sec1,
            ));
        }
        let invalid_point = ParseKeyError::InvalidPoint { algorithm };
        let inner = match algorithm {
            Algorithm::K256 => {
                let rust_crypto = k256::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
                    .map_err(|_| invalid_point.clone())?;
                let compressed = to_array::<33>(rust_crypto.to_encoded_point(true).as_bytes())
                    .ok_or_else(|| invalid_point.clone())?;
                // From the uncompressed point: libsecp256k1 then only checks the curve equation
                // instead of decompressing the point a second time.
                let fast = secp256k1::PublicKey::from_slice(
                    rust_crypto.to_encoded_point(false).as_bytes(),
                )
                .map_err(|_| invalid_point)?;
                Inner::K256 {
                    compressed,
                    fast,
                    rust_crypto,
                }
            }
            Algorithm::P256 => {
                let rust_crypto = p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
                    .map_err(|_| invalid_point.clone())?;
                let compressed = to_array::<33>(rust_crypto.to_encoded_point(true).as_bytes())
                    .ok_or_else(|| invalid_point.clone())?;
                let uncompressed = to_array::<65>(rust_crypto.to_encoded_point(false).as_bytes())
                    .ok_or(invalid_point)?;
                Inner::P256 {
                    compressed,
                    uncompressed,
                    rust_crypto,
                }
            }
        };
        Ok(PublicKey {
            inner: Arc::new(inner),
        })
    }

    /// The curve of this key.
    pub fn algorithm(&self) -> Algorithm {
        match &*self.inner {
            Inner::K256 { .. } => Algorithm::K256,
            Inner::P256 { .. } => Algorithm::P256,
        }
    }

    /// The compressed SEC1 point: 33 bytes, tag 0x02 or 0x03.
    pub fn to_sec1_compressed(&self) -> [u8; 33] {
        match &*self.inner {
            Inner::K256 { compressed, .. } | Inner::P256 { compressed, .. } => *compressed,
        }
    }

    /// The Multikey `publicKeyMultibase` form: `z` and base58btc of the multicodec prefix and the
    /// compressed point.
    pub fn to_multikey(&self) -> String {
        let prefix = match self.algorithm() {
            Algorithm::K256 => K256_MULTICODEC_PREFIX,
            Algorithm::P256 => P256_MULTICODEC_PREFIX,
        };
        let mut bytes = Vec::with_capacity(35);
        bytes.extend_from_slice(&prefix);
        bytes.extend_from_slice(&self.to_sec1_compressed());
        multibase::encode(multibase::Base::Base58Btc, bytes)
    }

    /// The `did:key:z…` form, always with the compressed point.
    pub fn to_did_key(&self) -> String {
        format!("{DID_KEY_PREFIX}{}", self.to_multikey())
    }

    /// Verifies an atproto signature over `message` with the [`FastVerifier`].
    ///
    /// The message is hashed with SHA-256. The signature must be 64 bytes of compact `r || s`
    /// with a low `s` (at most half the curve order); DER and high-S signatures are rejected.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        FastVerifier.verify(self, message, signature)
    }

    /// Verifies an atproto signature over a message the caller has already hashed with SHA-256,
    /// with the same rules as [`PublicKey::verify`].
    ///
    /// On P-256 this takes the RustCrypto path, because ring only verifies whole messages, so
    /// prefer [`PublicKey::verify`] when the message is at hand.
    pub fn verify_digest(
        &self,
        sha256_digest: &[u8; 32],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        FastVerifier.verify_digest(self, sha256_digest, signature)
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &PublicKey) -> bool {
        self.algorithm() == other.algorithm()
            && self.to_sec1_compressed() == other.to_sec1_compressed()
    }
}

impl Eq for PublicKey {}

impl Hash for PublicKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.algorithm().hash(state);
        self.to_sec1_compressed().hash(state);
    }
}

/// Shows the did:key form.
impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PublicKey")
            .field(&self.to_did_key())
            .finish()
    }
}

/// Prints the did:key form.
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_did_key())
    }
}

/// Parses the did:key form, as [`PublicKey::parse_did_key`] does.
impl FromStr for PublicKey {
    type Err = ParseKeyError;

    fn from_str(did_key: &str) -> Result<PublicKey, ParseKeyError> {
        PublicKey::parse_did_key(did_key)
    }
}

/// Decodes `z` + base58btc, with the length limit.
fn decode_base58btc(multibase: &str) -> Result<Vec<u8>, ParseKeyError> {
    if multibase.len() > MAX_MULTIBASE_LEN {
        return Err(ParseKeyError::TooLong {
            max: MAX_MULTIBASE_LEN,
            found: multibase.len(),
        });
    }
    let Some(base58) = multibase.strip_prefix('z') else {
        return Err(ParseKeyError::NotBase58Btc {
            found: excerpt(multibase),
        });
    };
    multibase::Base::Base58Btc
        .decode(base58)
        .map_err(|error| ParseKeyError::Base58 {
            reason: error.to_string(),
        })
}

/// Splits an unsigned-varint multicodec code off the front of `bytes`.
fn split_multicodec(bytes: &[u8]) -> Result<(u64, &[u8]), ParseKeyError> {
    let mut code: u64 = 0;
    // Multicodec codes are at most 9 varint bytes (63 bits).
    for (idx, byte) in bytes.iter().enumerate().take(9) {
        code |= u64::from(byte & 0x7f) << (7 * idx);
        if byte & 0x80 == 0 {
            return Ok((code, &bytes[idx + 1..]));
        }
    }
    Err(ParseKeyError::Multicodec)
}

fn encoding_error(algorithm: Algorithm, expected: &'static str, found: &[u8]) -> ParseKeyError {
    ParseKeyError::KeyEncoding {
        algorithm,
        expected,
        found: found.len(),
        tag: found
            .first()
            .map_or_else(|| "nothing".to_owned(), |tag| format!("{tag:#04x}")),
    }
}

fn to_array<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    bytes.try_into().ok()
}

/// The start of an untrusted string, so error messages stay short.
fn excerpt(input: &str) -> String {
    match input.char_indices().nth(EXCERPT_LEN) {
        Some((end, _)) => format!("{}…", &input[..end]),
        None => input.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K256_DID: &str = "did:key:zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc";
    const P256_DID: &str = "did:key:zDnaembgSGUhZULN2Caob4HLJPaxBh92N7rtH21TErzqf8HQo";

    fn parse(did_key: &str) -> PublicKey {
        PublicKey::parse_did_key(did_key).expect("test did:key is valid")
    }

    #[test]
    fn did_key_round_trips() {
        for (did_key, algorithm) in [(K256_DID, Algorithm::K256), (P256_DID, Algorithm::P256)] {
            let key = parse(did_key);
            assert_eq!(key.algorithm(), algorithm);
            assert_eq!(key.to_did_key(), did_key);
            assert_eq!(key.to_string(), did_key);
            assert_eq!(key.to_multikey(), did_key.trim_start_matches("did:key:"));
            assert_eq!(did_key.parse::<PublicKey>(), Ok(key.clone()));
            let multikey = PublicKey::from_did_doc_method("Multikey", &key.to_multikey());
            assert_eq!(multikey, Ok(key.clone()));
            let sec1 = PublicKey::from_sec1_bytes(algorithm, &key.to_sec1_compressed());
            assert_eq!(sec1, Ok(key));
        }
    }

    #[test]
    fn legacy_uncompressed_key_gives_the_same_did_key() {
        for did_key in [K256_DID, P256_DID] {
            let key = parse(did_key);
            let (method_type, uncompressed) = match key.inner() {
                Inner::K256 { fast, .. } => (LEGACY_K256, fast.serialize_uncompressed()),
                Inner::P256 { uncompressed, .. } => (LEGACY_P256, *uncompressed),
            };
            let legacy = multibase::encode(multibase::Base::Base58Btc, uncompressed);
            let parsed = PublicKey::from_did_doc_method(method_type, &legacy);
            assert_eq!(parsed.map(|key| key.to_did_key()).as_deref(), Ok(did_key));
            let compressed =
                multibase::encode(multibase::Base::Base58Btc, key.to_sec1_compressed());
            assert_eq!(
                PublicKey::from_did_doc_method(method_type, &compressed),
                Ok(key)
            );
        }
    }

    #[test]
    fn equal_keys_hash_alike_and_differ_across_keys() {
        use std::collections::HashSet;
        let set: HashSet<PublicKey> = [parse(K256_DID), parse(K256_DID), parse(P256_DID)]
            .into_iter()
            .collect();
        assert_eq!(set.len(), 2);
        assert_ne!(parse(K256_DID), parse(P256_DID));
    }

    #[test]
    fn public_key_is_cheap_and_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PublicKey>();
        assert_eq!(
            std::mem::size_of::<PublicKey>(),
            std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn garbage_is_rejected_with_the_reason() {
        let k256 = parse(K256_DID);
        let uncompressed_multikey = {
            let mut bytes = K256_MULTICODEC_PREFIX.to_vec();
            if let Inner::K256 { fast, .. } = k256.inner() {
                bytes.extend_from_slice(&fast.serialize_uncompressed());
            }
            multibase::encode(multibase::Base::Base58Btc, bytes)
        };
        let ed25519 = multibase::encode(multibase::Base::Base58Btc, [0xed, 0x01, 1, 2, 3]);
        let not_on_curve = {
            let mut bytes = K256_MULTICODEC_PREFIX.to_vec();
            bytes.push(0x02);
            bytes.extend_from_slice(&[0xff; 32]);
            multibase::encode(multibase::Base::Base58Btc, bytes)
        };
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "expected a did:key starting with \"did:key:\", found \"\""),
            ("did:plc:abc".into(), "expected a did:key starting"),
            ("did:key:".into(), "expected base58btc multibase starting with 'z', found \"\""),
            ("did:key:f00".into(), "expected base58btc multibase starting with 'z'"),
            ("did:key:z0OIl".into(), "invalid base58btc"),
            ("did:key:z".into(), "expected a multicodec varint prefix"),
            (format!("did:key:z{}", "2".repeat(200)), "must be at most 128 characters, found 201"),
            (format!("did:key:{ed25519}"), "found 0xed"),
            (format!("did:key:{uncompressed_multikey}"), "K-256 key must be 33 bytes (compressed SEC1) in did:key and Multikey, found 65 bytes starting with 0x04"),
            (format!("did:key:{not_on_curve}"), "K-256 key bytes are not a valid point on the curve"),
        ];
        for (input, expected) in cases {
            let error = PublicKey::parse_did_key(&input)
                .expect_err(&input)
                .to_string();
            assert!(
                error.contains(expected),
                "{input:?}: got {error:?}, expected {expected:?}"
            );
        }

        let error =
            PublicKey::from_did_doc_method("JsonWebKey2020", "zabc").expect_err("unknown type");
        assert!(
            error.to_string().contains("found \"JsonWebKey2020\""),
            "{error}"
        );
        for bytes in [&[][..], &[0x04; 33][..], &[0x02; 65][..], &[0x00][..]] {
            for algorithm in [Algorithm::K256, Algorithm::P256] {
                let error = PublicKey::from_sec1_bytes(algorithm, bytes).expect_err("bad SEC1");
                assert!(
                    matches!(error, ParseKeyError::KeyEncoding { .. }),
                    "{error}"
                );
            }
        }
    }

    #[test]
    fn excerpt_truncates_on_a_char_boundary() {
        let long = "é".repeat(100);
        let short = excerpt(&long);
        assert_eq!(short.chars().count(), EXCERPT_LEN + 1);
        assert_eq!(excerpt("abc"), "abc");
    }
}
