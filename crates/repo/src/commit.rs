//! Signed commits: the block at the root of every repo.

use butterfly_crypto::{PrivateKey, PublicKey, VerifyError};
use butterfly_data::cbor::{Decoder, Encoder, Limits};
use butterfly_data::Cid;
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
    ///
    /// Decoded field by field, without a generic value tree: the block is strict (canonical)
    /// DAG-CBOR, so the bytes the signature covers are the block's own entries minus `sig`, copied
    /// under a map header one entry shorter.
    pub fn decode(cid: &Cid, bytes: &[u8]) -> Result<Commit, Error> {
        let field = |message: String| Error::Field { cid: *cid, message };
        let cbor = |source: butterfly_data::Error| Error::Cbor { cid: *cid, source };
        let mut d = Decoder::new(bytes);
        let n = d.read_map_len().map_err(|e| match e {
            butterfly_data::Error::Cbor { .. } => field("a commit must be a map".into()),
            other => cbor(other),
        })?;
        let (mut did, mut version, mut data, mut rev, mut prev, mut sig) =
            (None, None, None, None, None, None);
        let mut entries = Vec::with_capacity(bytes.len());
        let mut previous = None;
        let limits = Limits::default();
        for _ in 0..n {
            let start = d.position();
            let key = d.read_map_key(previous).map_err(cbor)?;
            previous = Some(key);
            match key {
                "did" => {
                    let text = d
                        .read_str()
                        .map_err(|_| field("needs a string did".into()))?;
                    did = Some(Did::parse(text).map_err(|e| field(e.to_string()))?);
                }
                "version" => {
                    version = Some(
                        d.read_i64()
                            .map_err(|_| field("needs an integer version".into()))?,
                    )
                }
                "data" => {
                    data = Some(
                        d.read_link()
                            .map_err(|_| field("needs a data link".into()))?,
                    )
                }
                "rev" => {
                    if d.peek_null() {
                        d.read_null().map_err(cbor)?;
                    } else {
                        let text = d
                            .read_str()
                            .map_err(|_| field("a version 3 commit needs a rev string".into()))?;
                        rev = Some(Tid::parse(text).map_err(|e| field(format!("rev: {e}")))?);
                    }
                }
                "prev" => {
                    prev = d
                        .read_optional_link()
                        .map_err(|_| field("prev must be a link or null".into()))?
                }
                "sig" => {
                    sig = Some(
                        d.read_bytes()
                            .map_err(|_| field("needs sig bytes".into()))?
                            .to_vec(),
                    );
                    continue;
                }
                _ => d.skip(&limits).map_err(cbor)?,
            }
            entries.extend_from_slice(&bytes[start..d.position()]);
        }
        d.finish().map_err(cbor)?;
        let did = did.ok_or_else(|| field("needs a string did".into()))?;
        let version = match version {
            Some(v @ (2 | 3)) => v as u8,
            Some(v) => {
                return Err(field(format!(
                    "version {v} is not supported (expected 2 or 3)"
                )))
            }
            None => return Err(field("needs an integer version".into())),
        };
        let data = data.ok_or_else(|| field("needs a data link".into()))?;
        if rev.is_none() && version != 2 {
            return Err(field("a version 3 commit needs a rev string".into()));
        }
        let sig = sig.ok_or_else(|| field("needs sig bytes".into()))?;
        let mut header = Encoder::new();
        header.write_map_header(n - 1);
        let mut unsigned_bytes = header.into_bytes();
        unsigned_bytes.extend_from_slice(&entries);
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
    use butterfly_data::Value;

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

    #[test]
    fn unknown_fields_stay_under_the_signature() {
        let mut map = butterfly_data::Map::new();
        map.insert(
            "did".into(),
            Value::String("did:plc:ewvi7nxzyoun6zhxrhs64oiz".into()),
        );
        map.insert("version".into(), Value::Integer(3));
        map.insert("rev".into(), Value::String("3k2a4qwe5xs2a".into()));
        map.insert(
            "data".into(),
            Value::Link(butterfly_data::cid_for_cbor(b"\xa0")),
        );
        map.insert("prev".into(), Value::Null);
        map.insert("a".into(), Value::Integer(1));
        map.insert("zzzzzzzzzzzz".into(), Value::Array(vec![Value::Bool(true)]));
        let unsigned = Value::Map(map.clone()).to_cbor();
        map.insert("sig".into(), Value::Bytes(vec![1; 64]));
        let block = Value::Map(map).to_cbor();
        let commit = Commit::decode(&butterfly_data::cid_for_cbor(&block), &block).unwrap();
        assert_eq!(commit.unsigned_bytes(), unsigned.as_slice());
        assert_eq!(commit.sig, vec![1; 64]);
        // Not a map, trailing bytes, no sig: errors, not panics.
        for bad in [
            &b"\x01"[..],
            &[block.as_slice(), b"\x00"].concat(),
            &unsigned,
        ] {
            assert!(Commit::decode(&butterfly_data::cid_for_cbor(bad), bad).is_err());
        }
    }
}
