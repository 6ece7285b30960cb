//! The generic atproto value: what a record, or any DAG-CBOR block, holds.

use crate::cbor::{canonical_key_order, Decoder, Encoder, Limits, Major};
use crate::Error;
use cid::Cid;
use std::collections::BTreeMap;

/// A map of an atproto value. Keys are kept in plain string order; the encoder writes them in DAG-CBOR's
/// length-first order.
pub type Map = BTreeMap<String, Value>;

/// One value of the atproto data model.
///
/// There are no floats: atproto forbids them. Blobs are maps with `$type: "blob"`; see [`crate::Blob`]
/// to read one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A 64-bit signed integer.
    Integer(i64),
    /// A UTF-8 string.
    String(String),
    /// Raw bytes (`{"$bytes": ...}` in JSON).
    Bytes(Vec<u8>),
    /// A CID link (`{"$link": ...}` in JSON).
    Link(Cid),
    /// An array.
    Array(Vec<Value>),
    /// A map with string keys.
    Map(Map),
}

impl Value {
    /// Decodes one strict DAG-CBOR value that fills `bytes` exactly, with default [`Limits`].
    pub fn from_cbor(bytes: &[u8]) -> Result<Value, Error> {
        Value::from_cbor_with_limits(bytes, &Limits::default())
    }

    /// Decodes one strict DAG-CBOR value that fills `bytes` exactly.
    pub fn from_cbor_with_limits(bytes: &[u8], limits: &Limits) -> Result<Value, Error> {
        let mut decoder = Decoder::new(bytes);
        let value = decode_value(&mut decoder, limits, 0)?;
        decoder.finish()?;
        Ok(value)
    }

    /// Encodes this value as canonical DAG-CBOR.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut encoder = Encoder::new();
        encode_value(&mut encoder, self);
        encoder.into_bytes()
    }

    /// The CIDv1 (dag-cbor, sha-256) of this value's canonical encoding.
    pub fn cid(&self) -> Cid {
        crate::cid_for_cbor(&self.to_cbor())
    }

    /// The map inside, if this is a map.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(map) => Some(map),
            _ => None,
        }
    }

    /// The string inside, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    /// The integer inside, if this is an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The link inside, if this is a link.
    pub fn as_link(&self) -> Option<&Cid> {
        match self {
            Value::Link(cid) => Some(cid),
            _ => None,
        }
    }

    /// Looks up `key` if this is a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_map().and_then(|map| map.get(key))
    }

    /// The record type: the `$type` string of a map, if present.
    pub fn record_type(&self) -> Option<&str> {
        self.get("$type").and_then(Value::as_str)
    }
}

pub(crate) fn decode_value(
    decoder: &mut Decoder<'_>,
    limits: &Limits,
    depth: usize,
) -> Result<Value, Error> {
    if depth > limits.max_depth {
        return Err(Error::Cbor {
            offset: decoder.position(),
            message: format!("nesting deeper than {} levels", limits.max_depth),
        });
    }
    Ok(match decoder.peek_major()? {
        Major::Unsigned | Major::Negative => Value::Integer(decoder.read_i64()?),
        Major::Bytes => Value::Bytes(decoder.read_bytes()?.to_vec()),
        Major::Text => Value::String(decoder.read_str()?.to_owned()),
        Major::Array => {
            let len = decoder.read_array_len()?;
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(decode_value(decoder, limits, depth + 1)?);
            }
            Value::Array(items)
        }
        Major::Map => {
            let len = decoder.read_map_len()?;
            let mut map = Map::new();
            let mut previous: Option<&str> = None;
            for _ in 0..len {
                let key = decoder.read_map_key(previous)?;
                let value = decode_value(decoder, limits, depth + 1)?;
                map.insert(key.to_owned(), value);
                previous = Some(key);
            }
            Value::Map(map)
        }
        Major::Tag => Value::Link(decoder.read_link()?),
        Major::Simple => {
            if decoder.peek_null() {
                decoder.read_null()?;
                Value::Null
            } else {
                Value::Bool(decoder.read_bool()?)
            }
        }
    })
}

fn encode_value(encoder: &mut Encoder, value: &Value) {
    match value {
        Value::Null => encoder.write_null(),
        Value::Bool(b) => encoder.write_bool(*b),
        Value::Integer(n) => encoder.write_i64(*n),
        Value::String(s) => encoder.write_str(s),
        Value::Bytes(b) => encoder.write_bytes(b),
        Value::Link(cid) => encoder.write_link(cid),
        Value::Array(items) => {
            encoder.write_array_header(items.len());
            for item in items {
                encode_value(encoder, item);
            }
        }
        Value::Map(map) => {
            encoder.write_map_header(map.len());
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // Keys are unique, so an unstable sort gives the one canonical order.
            entries.sort_unstable_by(|a, b| canonical_key_order(a.0, b.0));
            for (key, item) in entries {
                encoder.write_str(key);
                encode_value(encoder, item);
            }
        }
    }
}
