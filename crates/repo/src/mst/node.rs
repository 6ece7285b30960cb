//! The wire form of one MST node, with prefix-compressed keys.

use super::Error;
use butterfly_data::cbor::{Decoder, Encoder};
use butterfly_data::Cid;
use sha2::{Digest, Sha256};

/// Largest MST key accepted, in bytes: an NSID (at most 317) plus `/` plus a record key (at most 512).
pub const MAX_KEY_LEN: usize = 1024;

/// Most entries accepted in one node. Fanout is 4 on average; a node a thousand times fuller is hostile.
pub const MAX_ENTRIES: usize = 4096;

/// The MST layer of a key: leading zero bits of SHA-256(key), counted in pairs (fanout 4).
pub fn key_height(key: &[u8]) -> u32 {
    let digest = Sha256::digest(key);
    let mut zeros = 0;
    for byte in digest {
        if byte == 0 {
            zeros += 8;
        } else {
            zeros += byte.leading_zeros();
            break;
        }
    }
    zeros / 2
}

/// Length in bytes of the prefix two keys share.
pub fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// True if `key` is a valid MST key: `collection/record-key`, each part non-empty and made of
/// `A-Za-z0-9._:~-`, at most [`MAX_KEY_LEN`] bytes.
pub fn is_valid_key(key: &[u8]) -> bool {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return false;
    }
    let mut n_slashes = 0;
    for &byte in key {
        match byte {
            b'/' => n_slashes += 1,
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b':' | b'~' | b'-' => {}
            _ => return false,
        }
    }
    n_slashes == 1 && key[0] != b'/' && key[key.len() - 1] != b'/'
}

/// One decoded node: full keys, already expanded from their prefix compression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeData {
    /// Subtree with the keys before the first entry.
    pub left: Option<Cid>,
    /// Entries in key order.
    pub entries: Vec<EntryData>,
}

/// One entry of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryData {
    /// The full key, a repo path such as `app.bsky.feed.post/3k2…`.
    pub key: String,
    /// The CID of the record.
    pub value: Cid,
    /// Subtree with the keys between this entry and the next.
    pub right: Option<Cid>,
}

impl NodeData {
    /// Decodes a node block, checking the schema, key validity, prefix compression and key order.
    pub fn decode(cid: &Cid, bytes: &[u8]) -> Result<NodeData, Error> {
        let malformed = |message: String| Error::Malformed { cid: *cid, message };
        let cbor = |e: butterfly_data::Error| malformed(e.to_string());
        let mut decoder = Decoder::new(bytes);
        let n_fields = decoder.read_map_len().map_err(cbor)?;
        let mut left = None;
        let mut entries = None;
        let mut previous = None;
        for _ in 0..n_fields {
            let field = decoder.read_map_key(previous).map_err(cbor)?;
            match field {
                "e" => entries = Some(decode_entries(&mut decoder).map_err(malformed)?),
                "l" => left = decoder.read_optional_link().map_err(cbor)?,
                other => return Err(malformed(format!("unexpected node field {other:?}"))),
            }
            previous = Some(field);
        }
        decoder.finish().map_err(cbor)?;
        let entries = entries.ok_or_else(|| malformed("node has no \"e\" field".into()))?;
        Ok(NodeData { left, entries })
    }

    /// Encodes the node canonically, compressing each key against the previous one.
    pub fn encode(&self) -> Vec<u8> {
        let entries = self
            .entries
            .iter()
            .map(|entry| (entry.key.as_str(), &entry.value, entry.right.as_ref()));
        encode_node(self.left.as_ref(), entries)
    }

    /// The node's CID.
    pub fn cid(&self) -> Cid {
        butterfly_data::cid_for_cbor(&self.encode())
    }
}

/// Encodes a node from borrowed parts (key, value, right subtree per entry): what
/// [`NodeData::encode`] and the tree's hashing share, so that hashing a changed node copies no keys.
pub(super) fn encode_node<'a>(
    left: Option<&Cid>,
    entries: impl ExactSizeIterator<Item = (&'a str, &'a Cid, Option<&'a Cid>)>,
) -> Vec<u8> {
    let mut encoder = Encoder::with_buffer(Vec::with_capacity(16 + entries.len() * 100));
    encoder.write_map_header(2);
    encoder.write_str("e");
    encoder.write_array_header(entries.len());
    let mut previous_key: &[u8] = &[];
    for (key, value, right) in entries {
        let key = key.as_bytes();
        let prefix_len = common_prefix_len(previous_key, key);
        encoder.write_map_header(4);
        encoder.write_str("k");
        encoder.write_bytes(&key[prefix_len..]);
        encoder.write_str("p");
        encoder.write_u64(prefix_len as u64);
        encoder.write_str("t");
        encoder.write_optional_link(right);
        encoder.write_str("v");
        encoder.write_link(value);
        previous_key = key;
    }
    encoder.write_str("l");
    encoder.write_optional_link(left);
    encoder.into_bytes()
}

fn decode_entries(decoder: &mut Decoder<'_>) -> Result<Vec<EntryData>, String> {
    let cbor = |e: butterfly_data::Error| e.to_string();
    let n_entries = decoder.read_array_len().map_err(cbor)?;
    if n_entries > MAX_ENTRIES {
        return Err(format!(
            "{n_entries} entries exceed the limit of {MAX_ENTRIES}"
        ));
    }
    let mut entries: Vec<EntryData> = Vec::with_capacity(n_entries);
    let mut key_buf: Vec<u8> = Vec::new();
    for index in 0..n_entries {
        let n_fields = decoder.read_map_len().map_err(cbor)?;
        let (mut suffix, mut prefix_len, mut value, mut right) = (None, None, None, None);
        let mut previous = None;
        for _ in 0..n_fields {
            let field = decoder.read_map_key(previous).map_err(cbor)?;
            match field {
                "k" => suffix = Some(decoder.read_bytes().map_err(cbor)?),
                "p" => prefix_len = Some(decoder.read_u64().map_err(cbor)?),
                "t" => right = decoder.read_optional_link().map_err(cbor)?,
                "v" => value = Some(decoder.read_link().map_err(cbor)?),
                other => return Err(format!("entry {index} has an unexpected field {other:?}")),
            }
            previous = Some(field);
        }
        let suffix = suffix.ok_or_else(|| format!("entry {index} has no key (\"k\")"))?;
        let prefix_len =
            prefix_len.ok_or_else(|| format!("entry {index} has no prefix length (\"p\")"))?;
        let value = value.ok_or_else(|| format!("entry {index} has no value (\"v\")"))?;
        if prefix_len as usize > key_buf.len() || (index == 0 && prefix_len != 0) {
            return Err(format!(
                "entry {index} claims a prefix of {prefix_len} bytes of a {}-byte key",
                key_buf.len()
            ));
        }
        key_buf.truncate(prefix_len as usize);
        key_buf.extend_from_slice(suffix);
        if !is_valid_key(&key_buf) {
            return Err(format!(
                "entry {index} has an invalid key {:?}",
                String::from_utf8_lossy(&key_buf)
            ));
        }
        if let Some(last) = entries.last() {
            if last.key.as_bytes() >= key_buf.as_slice() {
                return Err(format!(
                    "entry {index} key {:?} is not after {:?}",
                    String::from_utf8_lossy(&key_buf),
                    last.key
                ));
            }
        }
        // is_valid_key admits ASCII only, so this never fails.
        let key = String::from_utf8(key_buf.clone()).map_err(|_| "key is not UTF-8".to_string())?;
        entries.push(EntryData { key, value, right });
    }
    Ok(entries)
}
