//! Strict DAG-CBOR: a zero-copy decoder and a canonical encoder.
//!
//! atproto stores every record, commit and MST node as DAG-CBOR, and requires the canonical form: one
//! encoding per value. The decoder here enforces it, so that re-encoding a decoded value gives the same
//! bytes and therefore the same CID:
//!
//! - integers and lengths use the shortest header;
//! - no indefinite lengths, no tags other than 42 (CID links), no `undefined`, no floats (atproto's data
//!   model has none);
//! - map keys are text strings, sorted length-first then bytewise, with no duplicates;
//! - text is valid UTF-8.
//!
//! Nothing here allocates for a length that the remaining input could not hold, so a hostile length
//! prefix costs nothing. Nesting depth is bounded by [`Limits::max_depth`].

use crate::Error;
use cid::Cid;
use std::cmp::Ordering;

/// The CBOR tag that marks a CID link in DAG-CBOR.
pub const CID_TAG: u64 = 42;

/// Bounds applied while decoding input that came from the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of arrays and maps accepted.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Records on the network are shallow; 64 levels is far beyond any lexicon in use and keeps the
        // recursive decoder's stack use small.
        Limits { max_depth: 64 }
    }
}

/// CBOR major types, as they appear in the top three bits of a header byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Major {
    /// Unsigned integer.
    Unsigned,
    /// Negative integer.
    Negative,
    /// Byte string.
    Bytes,
    /// UTF-8 text string.
    Text,
    /// Array.
    Array,
    /// Map.
    Map,
    /// Tagged value.
    Tag,
    /// Simple values and floats.
    Simple,
}

impl Major {
    fn from_bits(bits: u8) -> Major {
        match bits {
            0 => Major::Unsigned,
            1 => Major::Negative,
            2 => Major::Bytes,
            3 => Major::Text,
            4 => Major::Array,
            5 => Major::Map,
            6 => Major::Tag,
            _ => Major::Simple,
        }
    }
}

/// Orders two map keys the way DAG-CBOR requires: shorter first, then bytewise.
pub fn canonical_key_order(a: &str, b: &str) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// A cursor over one buffer of strict DAG-CBOR.
///
/// Typed decoders (commits, MST nodes, firehose frames) drive it item by item, so that they never build a
/// generic [`crate::Value`] tree on the hot path. Every method returns an error at the byte offset where
/// the input stopped being strict DAG-CBOR.
#[derive(Clone, Debug)]
pub struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// Starts decoding at the beginning of `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Decoder { input, pos: 0 }
    }

    /// The byte offset of the next item.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    /// Fails unless every byte has been consumed; a block holds exactly one value.
    pub fn finish(&self) -> Result<(), Error> {
        if self.pos == self.input.len() {
            Ok(())
        } else {
            Err(self.err(format!(
                "{} trailing bytes after the value",
                self.remaining()
            )))
        }
    }

    fn err(&self, message: String) -> Error {
        Error::Cbor {
            offset: self.pos,
            message,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "needs {n} bytes but only {} remain",
                self.remaining()
            )));
        }
        let slice = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    /// The major type of the next item, without consuming it.
    pub fn peek_major(&self) -> Result<Major, Error> {
        match self.input.get(self.pos) {
            Some(byte) => Ok(Major::from_bits(byte >> 5)),
            None => Err(self.err("unexpected end of input".into())),
        }
    }

    /// True if the next item is `null`.
    pub fn peek_null(&self) -> bool {
        self.input.get(self.pos) == Some(&0xf6)
    }

    /// Reads a header: its major type and its argument, checking that the argument is minimally encoded.
    ///
    /// For [`Major::Simple`] the argument is the raw additional information (20 false, 21 true,
    /// 22 null, 25..=27 floats, ...) and nothing after the first byte is read: DAG-CBOR allows only
    /// the one-byte `false`, `true` and `null`, so [`Decoder::read_simple`] rejects everything else.
    fn read_header(&mut self) -> Result<(Major, u64), Error> {
        /// The smallest argument that needs 1, 2, 4 or 8 bytes; anything smaller has a shorter form.
        const SMALLEST: [u64; 4] = [24, 0x100, 0x1_0000, 0x1_0000_0000];
        let start = self.pos;
        let first = self.take(1)?[0];
        let major = Major::from_bits(first >> 5);
        let info = first & 0x1f;
        if major == Major::Simple {
            return Ok((major, u64::from(info)));
        }
        match info {
            0..=23 => Ok((major, u64::from(info))),
            24..=27 => {
                let width_idx = usize::from(info - 24);
                let bytes = self.take(1 << width_idx)?;
                let value = bytes
                    .iter()
                    .fold(0u64, |value, &byte| value << 8 | u64::from(byte));
                if value < SMALLEST[width_idx] {
                    return Err(self.err_at(start, "integer not minimally encoded"));
                }
                Ok((major, value))
            }
            31 => Err(self.err_at(start, "indefinite lengths are not allowed in DAG-CBOR")),
            _ => Err(self.err_at(start, "reserved additional information value")),
        }
    }

    fn err_at(&self, offset: usize, message: &str) -> Error {
        Error::Cbor {
            offset,
            message: message.to_string(),
        }
    }

    fn expect_major(&mut self, want: Major, what: &str) -> Result<u64, Error> {
        let start = self.pos;
        let (major, value) = self.read_header()?;
        if major != want {
            return Err(Error::Cbor {
                offset: start,
                message: format!("expected {what}, found {}", describe(major, value)),
            });
        }
        Ok(value)
    }

    /// Reads an array header and returns its length, bounded by the bytes left.
    pub fn read_array_len(&mut self) -> Result<usize, Error> {
        let len = self.expect_major(Major::Array, "an array")?;
        self.bounded_len(len, 1)
    }

    /// Reads a map header and returns its number of entries, bounded by the bytes left.
    pub fn read_map_len(&mut self) -> Result<usize, Error> {
        let len = self.expect_major(Major::Map, "a map")?;
        self.bounded_len(len, 2)
    }

    /// A length claimed by a header is only believed if each item could take at least
    /// `min_bytes_per_item` of what is left; this stops hostile lengths from driving allocation.
    fn bounded_len(&self, len: u64, min_bytes_per_item: u64) -> Result<usize, Error> {
        let remaining = self.remaining() as u64;
        match len.checked_mul(min_bytes_per_item) {
            Some(need) if need <= remaining => Ok(len as usize),
            _ => Err(self.err(format!(
                "length {len} cannot fit in the {remaining} bytes that remain"
            ))),
        }
    }

    /// Reads a text string, borrowed from the input.
    pub fn read_str(&mut self) -> Result<&'a str, Error> {
        let start = self.pos;
        let len = self.expect_major(Major::Text, "a text string")?;
        let len = self.bounded_len(len, 1)?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| self.err_at(start, "text string is not valid UTF-8"))
    }

    /// Reads a map key and checks that it sorts strictly after `previous` in DAG-CBOR order.
    pub fn read_map_key(&mut self, previous: Option<&str>) -> Result<&'a str, Error> {
        let start = self.pos;
        if self.peek_major()? != Major::Text {
            return Err(self.err("map keys must be text strings".into()));
        }
        let key = self.read_str()?;
        if let Some(previous) = previous {
            match canonical_key_order(previous, key) {
                Ordering::Less => {}
                Ordering::Equal => {
                    return Err(Error::Cbor {
                        offset: start,
                        message: format!("duplicate map key {key:?}"),
                    })
                }
                Ordering::Greater => {
                    return Err(Error::Cbor {
                        offset: start,
                        message: format!(
                            "map key {key:?} is out of canonical order after {previous:?}"
                        ),
                    })
                }
            }
        }
        Ok(key)
    }

    /// Reads a byte string, borrowed from the input.
    pub fn read_bytes(&mut self) -> Result<&'a [u8], Error> {
        let len = self.expect_major(Major::Bytes, "a byte string")?;
        let len = self.bounded_len(len, 1)?;
        self.take(len)
    }

    /// Reads a non-negative integer.
    pub fn read_u64(&mut self) -> Result<u64, Error> {
        self.expect_major(Major::Unsigned, "an unsigned integer")
    }

    /// Reads any integer that fits an `i64`.
    pub fn read_i64(&mut self) -> Result<i64, Error> {
        let start = self.pos;
        let (major, value) = self.read_header()?;
        match major {
            Major::Unsigned => i64::try_from(value)
                .map_err(|_| self.err_at(start, "integer does not fit in 64 signed bits")),
            Major::Negative => i64::try_from(value)
                .map(|v| -1 - v)
                .map_err(|_| self.err_at(start, "integer does not fit in 64 signed bits")),
            other => Err(Error::Cbor {
                offset: start,
                message: format!("expected an integer, found {}", describe(other, value)),
            }),
        }
    }

    /// Reads `true` or `false`.
    pub fn read_bool(&mut self) -> Result<bool, Error> {
        match self.read_simple()? {
            Simple::False => Ok(false),
            Simple::True => Ok(true),
            Simple::Null => Err(self.err("expected a boolean, found null".into())),
        }
    }

    /// Reads `null`.
    pub fn read_null(&mut self) -> Result<(), Error> {
        match self.read_simple()? {
            Simple::Null => Ok(()),
            _ => Err(self.err("expected null, found a boolean".into())),
        }
    }

    fn read_simple(&mut self) -> Result<Simple, Error> {
        let start = self.pos;
        let (major, value) = self.read_header()?;
        if major != Major::Simple {
            return Err(Error::Cbor {
                offset: start,
                message: format!("expected a simple value, found {}", describe(major, value)),
            });
        }
        match value {
            20 => Ok(Simple::False),
            21 => Ok(Simple::True),
            22 => Ok(Simple::Null),
            23 => Err(self.err_at(start, "undefined is not allowed in DAG-CBOR")),
            25..=27 => Err(self.err_at(start, "floats are not allowed in the atproto data model")),
            _ => Err(self.err_at(start, "unsupported simple value")),
        }
    }

    /// Reads a CID link (tag 42 over a byte string holding `0x00` and the binary CID).
    pub fn read_link(&mut self) -> Result<Cid, Error> {
        let start = self.pos;
        let tag = self.expect_major(Major::Tag, "a CID link")?;
        if tag != CID_TAG {
            return Err(Error::Cbor {
                offset: start,
                message: format!("tag {tag} is not allowed; only 42 (CID)"),
            });
        }
        let bytes = self.read_bytes()?;
        match bytes.split_first() {
            Some((0, cid_bytes)) => parse_cid_bytes(cid_bytes).map_err(|message| Error::Cbor {
                offset: start,
                message,
            }),
            _ => Err(self.err_at(
                start,
                "CID link must start with the identity multibase prefix 0x00",
            )),
        }
    }

    /// Reads either `null` or a CID link.
    pub fn read_optional_link(&mut self) -> Result<Option<Cid>, Error> {
        if self.peek_null() {
            self.pos += 1;
            Ok(None)
        } else {
            self.read_link().map(Some)
        }
    }

    /// Skips one whole item, checking it as strictly as if it were decoded.
    pub fn skip(&mut self, limits: &Limits) -> Result<(), Error> {
        crate::value::decode_value(self, limits, 0).map(|_| ())
    }
}

enum Simple {
    False,
    True,
    Null,
}

fn describe(major: Major, value: u64) -> String {
    match major {
        Major::Unsigned => "an unsigned integer".into(),
        Major::Negative => "a negative integer".into(),
        Major::Bytes => "a byte string".into(),
        Major::Text => "a text string".into(),
        Major::Array => "an array".into(),
        Major::Map => "a map".into(),
        Major::Tag => format!("tag {value}"),
        Major::Simple => match value {
            20 | 21 => "a boolean".into(),
            22 => "null".into(),
            25..=27 => "a float".into(),
            _ => "a simple value".into(),
        },
    }
}

/// Parses a binary CID and requires it to use every byte.
pub fn parse_cid_bytes(bytes: &[u8]) -> Result<Cid, String> {
    let mut reader = bytes;
    let cid = Cid::read_bytes(&mut reader).map_err(|e| format!("invalid CID: {e}"))?;
    if !reader.is_empty() {
        return Err(format!("{} bytes after the CID", reader.len()));
    }
    Ok(cid)
}

/// Writes canonical DAG-CBOR. Callers are responsible for giving map keys in canonical order; the
/// generic [`crate::Value`] encoder sorts them.
#[derive(Debug, Default)]
pub struct Encoder {
    out: Vec<u8>,
}

impl Encoder {
    /// An encoder with an empty buffer.
    pub fn new() -> Self {
        Encoder::default()
    }

    /// An encoder that appends to `out`.
    pub fn with_buffer(out: Vec<u8>) -> Self {
        Encoder { out }
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    fn header(&mut self, major: u8, value: u64) {
        let m = major << 5;
        if value < 24 {
            self.out.push(m | value as u8);
        } else if value <= 0xff {
            self.out.push(m | 24);
            self.out.push(value as u8);
        } else if value <= 0xffff {
            self.out.push(m | 25);
            self.out.extend_from_slice(&(value as u16).to_be_bytes());
        } else if value <= 0xffff_ffff {
            self.out.push(m | 26);
            self.out.extend_from_slice(&(value as u32).to_be_bytes());
        } else {
            self.out.push(m | 27);
            self.out.extend_from_slice(&value.to_be_bytes());
        }
    }

    /// Writes a non-negative integer.
    pub fn write_u64(&mut self, value: u64) {
        self.header(0, value);
    }

    /// Writes a signed integer.
    pub fn write_i64(&mut self, value: i64) {
        if value >= 0 {
            self.header(0, value as u64);
        } else {
            self.header(1, (-1 - value) as u64);
        }
    }

    /// Writes a byte string.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        self.header(2, bytes.len() as u64);
        self.out.extend_from_slice(bytes);
    }

    /// Writes a text string.
    pub fn write_str(&mut self, text: &str) {
        self.header(3, text.len() as u64);
        self.out.extend_from_slice(text.as_bytes());
    }

    /// Writes an array header; the caller then writes `len` items.
    pub fn write_array_header(&mut self, len: usize) {
        self.header(4, len as u64);
    }

    /// Writes a map header; the caller then writes `len` key/value pairs in canonical key order.
    pub fn write_map_header(&mut self, len: usize) {
        self.header(5, len as u64);
    }

    /// Writes a boolean.
    pub fn write_bool(&mut self, value: bool) {
        self.out.push(if value { 0xf5 } else { 0xf4 });
    }

    /// Writes `null`.
    pub fn write_null(&mut self) {
        self.out.push(0xf6);
    }

    /// Writes a CID link.
    pub fn write_link(&mut self, cid: &Cid) {
        self.header(6, CID_TAG);
        self.header(2, cid.encoded_len() as u64 + 1);
        self.out.push(0);
        // Straight into the buffer, with no temporary Vec per link.
        cid.write_bytes(&mut self.out)
            .expect("writing to a Vec cannot fail");
    }

    /// Writes `null` or a CID link.
    pub fn write_optional_link(&mut self, cid: Option<&Cid>) {
        match cid {
            Some(cid) => self.write_link(cid),
            None => self.write_null(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check_rejected(bytes: &[u8], expected_message_part: &str) {
        let err = crate::Value::from_cbor(bytes).unwrap_err().to_string();
        assert!(
            err.contains(expected_message_part),
            "{err:?} should mention {expected_message_part:?}"
        );
    }

    #[test]
    fn rejects_non_canonical_forms() {
        check_rejected(&[0x18, 0x05], "minimally");
        check_rejected(&[0x19, 0x00, 0x10], "minimally");
        check_rejected(&[0x9f, 0xff], "indefinite");
        check_rejected(&[0xfb, 0, 0, 0, 0, 0, 0, 0, 0], "floats");
        check_rejected(&[0xf7], "undefined");
        check_rejected(&[0xc1, 0x00], "tag 1");
        // {"b": 1, "a": 2}: out of order.
        check_rejected(
            &[0xa2, 0x61, b'b', 0x01, 0x61, b'a', 0x02],
            "canonical order",
        );
        // {"a": 1, "a": 2}: duplicate.
        check_rejected(&[0xa2, 0x61, b'a', 0x01, 0x61, b'a', 0x02], "duplicate");
        // {"aa": 1, "b": 2}: longer key first.
        check_rejected(
            &[0xa2, 0x62, b'a', b'a', 0x01, 0x61, b'b', 0x02],
            "canonical order",
        );
        check_rejected(&[0x01, 0x02], "trailing");
        check_rejected(&[0x62, 0xff, 0xfe], "UTF-8");
        check_rejected(&[0xa1, 0x01, 0x02], "text strings");
    }

    #[test]
    fn rejects_every_long_form_that_has_a_shorter_one() {
        check_rejected(&[0x1a, 0x00, 0x00, 0xff, 0xff], "minimally");
        check_rejected(&[0x1b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], "minimally");
        check_rejected(&[0x78, 0x17], "minimally");
        // Simple values: only the one-byte false, true and null exist in DAG-CBOR.
        check_rejected(&[0xf8, 0x14], "unsupported simple value");
        check_rejected(&[0xf9, 0x00, 0x00], "floats");
        check_rejected(&[0xfb], "floats");
        check_rejected(&[0xff], "unsupported simple value");
        check_rejected(&[0x1c], "reserved");
        check_rejected(&[0x1b, 0x01], "needs 8 bytes");
    }

    #[test]
    fn hostile_lengths_fail_without_allocating() {
        // An array claiming 2^64-1 items, a byte string claiming 4 GiB.
        check_rejected(
            &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            "cannot fit",
        );
        check_rejected(&[0x5a, 0xff, 0xff, 0xff, 0xff], "cannot fit");
    }

    #[test]
    fn depth_is_limited() {
        let deep = vec![0x81; 10_000];
        check_rejected(&deep, "nesting");
    }

    #[test]
    fn integers_round_trip_at_the_edges() {
        for value in [
            0i64,
            23,
            24,
            255,
            256,
            65535,
            65536,
            0xffff_ffff,
            0x1_0000_0000,
            -1,
            -24,
            -25,
            -256,
            -257,
            -0x1_0000_0001,
            i64::MIN,
            i64::MAX,
        ] {
            let mut encoder = Encoder::new();
            encoder.write_i64(value);
            let bytes = encoder.into_bytes();
            let mut decoder = Decoder::new(&bytes);
            assert_eq!(decoder.read_i64().unwrap(), value);
            decoder.finish().unwrap();
        }
    }
}
