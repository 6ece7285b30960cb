//! Signed commits: the block at the root of every repo.

use butterfly_crypto::{PrivateKey, PublicKey, VerifyError};
use butterfly_data::cbor::Encoder;
use butterfly_data::{Cid, Value};
use butterfly_syntax::{Did, Tid};

/// Why a commit block could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The block is not strict DAG-CBOR.
    #[error("commit {cid}: {source}")]
    Cbor {
        /// The commit's CID.
        cid: Cid,
        /// The decoding error.
        #[source]
        source: butterfly_data::Error,
    },
    /// A field is missing, of the wrong type or invalid.
    #[error("commit {cid}: {message}")]
    Field {
        /// The commit's CID.
        cid: Cid,
        /// What is wrong.
        message: String,
    },
}

/// A decoded commit, version 3 or legacy version 2. Its signature is not yet checked: see
/// [`Commit::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The repo's DID.
    pub did: Did,
    /// 3 for current commits, 2 for legacy ones.
    pub version: u8,
    /// Root CID of the MST.
    pub data: Cid,
    /// The revision, a TID; absent only in version 2 commits.
    pub rev: Option<Tid>,
    /// The previous commit; usually null since version 3.
    pub prev: Option<Cid>,
    /// The signature: 64 bytes, compact r||s, over [`Commit::unsigned_bytes`].
    pub sig: Vec<u8>,
    unsigned_bytes: Vec<u8>,
}

impl Commit {
    /// Decodes a commit block. Unknown fields are allowed and stay covered by the signature check.
    pub fn decode(cid: &Cid, bytes: &[u8]) -> Result<Commit, Error> {
        let field = |message: String| Error::Field { cid: *cid, message };
        let value = Value::from_cbor(bytes).map_err(|source| Error::Cbor { cid: *cid, source })?;
        let Value::Map(mut map) = value else {
            return Err(field("a commit must be a map".into()));
        };
        let did = match map.get("did") {
            Some(Value::String(text)) => Did::parse(text).map_err(|e| field(e.to_string()))?,
            _ => return Err(field("needs a string did".into())),
        };
        let version = match map.get("version").and_then(Value::as_i64) {
            Some(v @ (2 | 3)) => v as u8,
            Some(v) => {
                return Err(field(format!(
                    "version {v} is not supported (expected 2 or 3)"
                )))
            }
            None => return Err(field("needs an integer version".into())),
        };
        let data = *map
            .get("data")
            .and_then(Value::as_link)
            .ok_or_else(|| field("needs a data link".into()))?;
        let rev = match map.get("rev") {
            Some(Value::String(text)) => {
                Some(Tid::parse(text).map_err(|e| field(format!("rev: {e}")))?)
            }
            None | Some(Value::Null) if version == 2 => None,
            _ => return Err(field("a version 3 commit needs a rev string".into())),
        };
        let prev = match map.get("prev") {
            None | Some(Value::Null) => None,
            Some(Value::Link(cid)) => Some(*cid),
            Some(_) => return Err(field("prev must be a link or null".into())),
        };
        let sig = match map.remove("sig") {
            Some(Value::Bytes(sig)) => sig,
            _ => return Err(field("needs sig bytes".into())),
        };
        let unsigned_bytes = Value::Map(map).to_cbor();
        Ok(Commit {
            did,
            version,
            data,
            rev,
            prev,
            sig,
            unsigned_bytes,
        })
    }

    /// The canonical encoding of the commit without `sig`: the bytes the signature covers.
    pub fn unsigned_bytes(&self) -> &[u8] {
        &self.unsigned_bytes
    }

    /// Checks the signature against the repo's signing key and, if it holds, vouches for the commit.
    pub fn verify(self, key: &PublicKey) -> Result<VerifiedCommit, VerifyError> {
        key.verify(&self.unsigned_bytes, &self.sig)?;
        Ok(VerifiedCommit(self))
    }

    /// Checks the signature without consuming the commit.
    pub fn verify_signature(&self, key: &PublicKey) -> Result<(), VerifyError> {
        key.verify(&self.unsigned_bytes, &self.sig)
    }
}

/// A commit whose signature has been checked against its repo's key. Only [`Commit::verify`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCommit(Commit);

impl VerifiedCommit {
    /// The commit.
    pub fn commit(&self) -> &Commit {
        &self.0
    }

    /// Gives back the commit.
    pub fn into_commit(self) -> Commit {
        self.0
    }
}

impl std::ops::Deref for VerifiedCommit {
    type Target = Commit;

    fn deref(&self) -> &Commit {
        &self.0
    }
}

/// The fields of a version 3 commit before signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsignedCommit {
    /// The repo's DID.
    pub did: Did,
    /// Root CID of the MST.
    pub data: Cid,
    /// The new revision; must sort after every earlier one.
    pub rev: Tid,
    /// The previous commit, normally `None`.
    pub prev: Option<Cid>,
}

impl UnsignedCommit {
    fn encode(&self, sig: Option<&[u8]>) -> Vec<u8> {
        let mut encoder = Encoder::new();
        // Canonical key order: did, rev, sig, data, prev, version.
        encoder.write_map_header(if sig.is_some() { 6 } else { 5 });
        encoder.write_str("did");
        encoder.write_str(self.did.as_str());
        encoder.write_str("rev");
        encoder.write_str(self.rev.as_str());
        if let Some(sig) = sig {
            encoder.write_str("sig");
            encoder.write_bytes(sig);
        }
        encoder.write_str("data");
        encoder.write_link(&self.data);
        encoder.write_str("prev");
        encoder.write_optional_link(self.prev.as_ref());
        encoder.write_str("version");
        encoder.write_u64(3);
        encoder.into_bytes()
    }

    /// Signs the commit; returns its CID and block bytes.
    pub fn sign(&self, key: &PrivateKey) -> (Cid, Vec<u8>) {
        let sig = key.sign(&self.encode(None));
        let bytes = self.encode(Some(&sig));
        (butterfly_data::cid_for_cbor(&bytes), bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use butterfly_crypto::Algorithm;

    #[test]
    fn sign_decode_verify() {
        for algorithm in [Algorithm::K256, Algorithm::P256] {
            let key = PrivateKey::from_bytes(algorithm, &[7u8; 32]).unwrap();
            let unsigned = UnsignedCommit {
                did: Did::parse("did:plc:ewvi7nxzyoun6zhxrhs64oiz").unwrap(),
                data: butterfly_data::cid_for_cbor(b"\xa0"),
                rev: Tid::from_parts(1_700_000_000_000_000, 3),
                prev: None,
            };
            let (cid, bytes) = unsigned.sign(&key);
            let commit = Commit::decode(&cid, &bytes).unwrap();
            assert_eq!(commit.version, 3);
            assert_eq!(commit.rev.as_ref(), Some(&unsigned.rev));
            // Re-encoding what the decoder saw gives back the exact block.
            assert_eq!(Value::from_cbor(&bytes).unwrap().to_cbor(), bytes);
            let verified = commit.clone().verify(key.public_key()).unwrap();
            assert_eq!(verified.data, unsigned.data);
            let other = PrivateKey::from_bytes(algorithm, &[8u8; 32]).unwrap();
            assert!(commit.verify_signature(other.public_key()).is_err());
        }
    }

    #[test]
    fn version_2_without_rev_is_accepted_and_version_3_is_not() {
        let mut map = butterfly_data::Map::new();
        map.insert(
            "did".into(),
            Value::String("did:plc:ewvi7nxzyoun6zhxrhs64oiz".into()),
        );
        map.insert("version".into(), Value::Integer(2));
        map.insert(
            "data".into(),
            Value::Link(butterfly_data::cid_for_cbor(b"\xa0")),
        );
        map.insert("prev".into(), Value::Null);
        map.insert("sig".into(), Value::Bytes(vec![0; 64]));
        let v2 = Value::Map(map.clone()).to_cbor();
        let commit = Commit::decode(&butterfly_data::cid_for_cbor(&v2), &v2).unwrap();
        assert_eq!((commit.version, commit.rev), (2, None));
        map.insert("version".into(), Value::Integer(3));
        let v3 = Value::Map(map).to_cbor();
        let err = Commit::decode(&butterfly_data::cid_for_cbor(&v3), &v3).unwrap_err();
        assert!(err.to_string().contains("needs a rev"), "{err}");
    }
}
