//! Fast commit signing for the firehose generator.
//!
//! Signing is most of the cost of generating traffic (one signature per commit). K-256 commits are
//! signed with libsecp256k1, several times faster than the pure Rust signer behind
//! `UnsignedCommit::sign`; both use RFC 6979 nonces and low-S signatures, so the bytes are the same
//! (a test checks it). P-256 keys go through `UnsignedCommit::sign`.

use butterfly_crypto::{Algorithm, PrivateKey, PrivateKeyError, PublicKey};
use butterfly_data::{cid_for_cbor, Cid, Map, Value};
use butterfly_repo::commit::UnsignedCommit;
use sha2::{Digest, Sha256};

/// A repo's signing key in the form that signs fastest.
#[derive(Clone, Debug)]
pub(crate) enum Signer {
    K256(secp256k1::SecretKey),
    P256(PrivateKey),
}

/// Signs commits; holds the libsecp256k1 context, built once.
pub(crate) struct CommitSigner {
    secp: secp256k1::Secp256k1<secp256k1::SignOnly>,
}

impl CommitSigner {
    pub(crate) fn new() -> Self {
        CommitSigner {
            secp: secp256k1::Secp256k1::signing_only(),
        }
    }

    /// A key from 32 bytes, with its public half; `None` if the bytes are not a valid scalar.
    pub(crate) fn key(
        &self,
        algorithm: Algorithm,
        bytes: &[u8; 32],
    ) -> Option<(Signer, PublicKey)> {
        match algorithm {
            Algorithm::K256 => {
                let secret = secp256k1::SecretKey::from_byte_array(bytes).ok()?;
                let point = secp256k1::PublicKey::from_secret_key(&self.secp, &secret);
                // The uncompressed form spares the parser a square root.
                let public =
                    PublicKey::from_sec1_bytes(algorithm, &point.serialize_uncompressed()).ok()?;
                Some((Signer::K256(secret), public))
            }
            Algorithm::P256 => {
                let key = PrivateKey::from_bytes(algorithm, bytes).ok()?;
                let public = key.public_key().clone();
                Some((Signer::P256(key), public))
            }
        }
    }

    /// Signs `commit`; returns its CID and block bytes, as `UnsignedCommit::sign` would.
    pub(crate) fn sign(&self, signer: &Signer, commit: &UnsignedCommit) -> (Cid, Vec<u8>) {
        match signer {
            Signer::P256(key) => commit.sign(key),
            Signer::K256(secret) => {
                let mut fields = Map::new();
                fields.insert("did".into(), Value::String(commit.did.as_str().to_owned()));
                fields.insert("rev".into(), Value::String(commit.rev.as_str().to_owned()));
                fields.insert("data".into(), Value::Link(commit.data));
                fields.insert("prev".into(), commit.prev.map_or(Value::Null, Value::Link));
                fields.insert("version".into(), Value::Integer(3));
                let mut value = Value::Map(fields);
                let digest: [u8; 32] = Sha256::digest(value.to_cbor()).into();
                let signature = self
                    .secp
                    .sign_ecdsa(&secp256k1::Message::from_digest(digest), secret)
                    .serialize_compact();
                if let Value::Map(fields) = &mut value {
                    fields.insert("sig".into(), Value::Bytes(signature.to_vec()));
                }
                let bytes = value.to_cbor();
                (cid_for_cbor(&bytes), bytes)
            }
        }
    }
}

/// The same key as a [`PrivateKey`], for callers outside the generator.
pub(crate) fn private_key(signer: &Signer) -> Result<PrivateKey, PrivateKeyError> {
    match signer {
        Signer::K256(secret) => PrivateKey::from_bytes(Algorithm::K256, &secret.secret_bytes()),
        Signer::P256(key) => Ok(key.clone()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use butterfly_syntax::{Did, Tid};

    #[test]
    fn same_bytes_as_the_reference_signer() {
        let signer = CommitSigner::new();
        for (i, algorithm) in [Algorithm::K256, Algorithm::P256]
            .into_iter()
            .cycle()
            .take(40)
            .enumerate()
        {
            let bytes = [i as u8 + 1; 32];
            let (fast, public) = signer.key(algorithm, &bytes).unwrap();
            let reference = PrivateKey::from_bytes(algorithm, &bytes).unwrap();
            assert_eq!(&public, reference.public_key());
            let commit = UnsignedCommit {
                did: Did::parse("did:plc:ewvi7nxzyoun6zhxrhs64oiz").unwrap(),
                data: cid_for_cbor(&[i as u8]),
                rev: Tid::from_parts(1_767_225_600_000_000 + i as u64, 7),
                prev: None,
            };
            assert_eq!(signer.sign(&fast, &commit), commit.sign(&reference));
            assert_eq!(private_key(&fast).unwrap().to_bytes(), reference.to_bytes());
        }
    }
}
