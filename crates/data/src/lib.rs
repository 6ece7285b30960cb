//! The atproto data model: strict DAG-CBOR, CID links, bytes and blobs, and atproto JSON.
//!
//! Every record, commit and MST node in atproto is a DAG-CBOR block named by its CID. This crate turns
//! those bytes into a [`Value`] and back, converts values to and from atproto JSON (`$link`, `$bytes`,
//! blob objects), and computes CIDs. The [`cbor`] module also exposes the low-level [`cbor::Decoder`]
//! and [`cbor::Encoder`] that typed decoders in other crates (commits, MST nodes, firehose frames) use
//! directly, so that hot paths never build a generic value tree.
//!
//! Decoding is strict: only the canonical encoding of a value is accepted (see [`cbor`]), so that a
//! block's CID is a function of its meaning. Input from the network is bounded: lengths are checked
//! against the bytes actually present before anything is allocated, and nesting is limited by
//! [`cbor::Limits`].
//!
//! What this crate does not do: it validates no Lexicon schema, reads no files and opens no sockets.
//!
//! Specs: <https://atproto.com/specs/data-model>, <https://ipld.io/specs/codecs/dag-cbor/spec/>.
//!
//! ```
//! use butterfly_data::Value;
//!
//! let json = serde_json::json!({"$type": "app.bsky.feed.post", "text": "hello", "createdAt": "2024-01-01T00:00:00Z"});
//! let record = Value::record_from_json(&json)?;
//! let bytes = record.to_cbor();
//! assert_eq!(Value::from_cbor(&bytes)?, record);
//! println!("{}", record.cid());
//! # Ok::<(), butterfly_data::Error>(())
//! ```
#![warn(missing_docs)]

mod blob;
pub mod cbor;
mod json;
mod value;

pub use blob::Blob;
pub use cid::Cid;
pub use json::{json_string, write_json_string};
pub use value::{Map, Value};

use sha2::{Digest, Sha256};
use std::fmt::Write;

/// The multicodec of DAG-CBOR blocks.
pub const DAG_CBOR: u64 = 0x71;
/// The multicodec of raw blocks (blobs).
pub const RAW: u64 = 0x55;
/// The multihash code of SHA-256.
pub const SHA2_256: u64 = 0x12;

/// Why data could not be decoded or converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not strict DAG-CBOR, or exceed a limit.
    #[error("dag-cbor at byte {offset}: {message}")]
    Cbor {
        /// Where in the input the problem was found.
        offset: usize,
        /// What was expected and what was found.
        message: String,
    },
    /// The JSON does not follow the atproto data model.
    #[error("atproto json at {path}: {message}")]
    Json {
        /// JSON path of the offending value, such as `$.embed.images[0]`.
        path: String,
        /// What was expected and what was found.
        message: String,
    },
}

/// The CIDv1 of a DAG-CBOR block: codec dag-cbor, hash sha-256.
pub fn cid_for_cbor(bytes: &[u8]) -> Cid {
    cid_from_sha256(DAG_CBOR, Sha256::digest(bytes).into())
}

/// The CIDv1 of raw bytes such as a blob: codec raw, hash sha-256.
pub fn cid_for_raw(bytes: &[u8]) -> Cid {
    cid_from_sha256(RAW, Sha256::digest(bytes).into())
}

/// Builds a CIDv1 from a codec and a SHA-256 digest.
pub fn cid_from_sha256(codec: u64, digest: [u8; 32]) -> Cid {
    // A 32-byte digest always fits the 64-byte multihash; the expect documents that invariant.
    #[allow(clippy::expect_used)]
    let hash = multihash::Multihash::<64>::wrap(SHA2_256, &digest)
        .expect("32 bytes fit in a 64-byte multihash");
    Cid::new_v1(codec, hash)
}

/// Parses a CID in its string form (multibase; atproto writes base32 CIDv1).
pub fn parse_cid_str(text: &str) -> Result<Cid, String> {
    Cid::try_from(text).map_err(|e| format!("{text:?} is not a valid CID: {e}"))
}

/// Checks the record-level rules of the data model that DAG-CBOR alone does not: the top level is a
/// map, and every `$type` is a non-empty string (with blob objects well formed).
pub fn validate_record(value: &Value) -> Result<(), Error> {
    if value.as_map().is_none() {
        return Err(Error::Json {
            path: "$".into(),
            message: "a record must be a map".into(),
        });
    }
    validate_types(value, &mut String::from("$"))
}

fn validate_types(value: &Value, path: &mut String) -> Result<(), Error> {
    match value {
        Value::Map(map) => {
            json::check_type_field(value).map_err(|message| Error::Json {
                path: path.clone(),
                message,
            })?;
            for (key, item) in map {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                validate_types(item, path)?;
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let len = path.len();
                let _ = write!(path, "[{index}]");
                validate_types(item, path)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}
