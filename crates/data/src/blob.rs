//! Blob references inside records.

use crate::{parse_cid_str, Value};
use cid::Cid;

/// A reference to a blob (an image, a video) stored beside a repo, as a record holds it.
///
/// Two shapes exist on the network: the current one, `{"$type": "blob", "ref": <link>, "mimeType",
/// "size"}`, and the legacy one from before 2023, `{"cid": "<cid string>", "mimeType"}`, which has no
/// size. Both are read; [`Blob::to_value`] always writes the current shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// The CID of the blob's bytes (raw codec, sha-256).
    pub cid: Cid,
    /// The MIME type the uploader declared.
    pub mime_type: String,
    /// Size in bytes; `None` for legacy blobs.
    pub size: Option<u64>,
}

impl Blob {
    /// Reads a blob object in either shape. Returns an error saying what is wrong with it.
    pub fn from_value(value: &Value) -> Result<Blob, String> {
        let map = value.as_map().ok_or("a blob must be an object")?;
        let mime_type = map
            .get("mimeType")
            .and_then(Value::as_str)
            .ok_or("a blob needs a string mimeType")?
            .to_owned();
        if let Some(type_value) = map.get("$type") {
            if type_value.as_str() != Some("blob") {
                return Err("a blob's $type must be \"blob\"".into());
            }
            if map.len() != 4 {
                return Err("a blob has exactly the keys $type, ref, mimeType and size".into());
            }
            let cid = *map
                .get("ref")
                .and_then(Value::as_link)
                .ok_or("a blob needs a ref link")?;
            let size = map
                .get("size")
                .and_then(Value::as_i64)
                .ok_or("a blob needs an integer size")?;
            let size = u64::try_from(size).map_err(|_| "a blob size cannot be negative")?;
            Ok(Blob {
                cid,
                mime_type,
                size: Some(size),
            })
        } else {
            if map.len() != 2 {
                return Err("a legacy blob has exactly the keys cid and mimeType".into());
            }
            let text = map
                .get("cid")
                .and_then(Value::as_str)
                .ok_or("a legacy blob needs a cid string")?;
            Ok(Blob {
                cid: parse_cid_str(text)?,
                mime_type,
                size: None,
            })
        }
    }

    /// The blob in the current shape.
    pub fn to_value(&self) -> Value {
        let mut map = crate::Map::new();
        map.insert("$type".into(), Value::String("blob".into()));
        map.insert("ref".into(), Value::Link(self.cid));
        map.insert("mimeType".into(), Value::String(self.mime_type.clone()));
        map.insert("size".into(), Value::Integer(self.size.unwrap_or(0) as i64));
        Value::Map(map)
    }
}

impl Value {
    /// Every blob referenced anywhere in this value, in either shape, in document order.
    pub fn blobs(&self) -> Vec<Blob> {
        let mut found = Vec::new();
        collect_blobs(self, &mut found);
        found
    }
}

fn collect_blobs(value: &Value, found: &mut Vec<Blob>) {
    match value {
        Value::Map(map) => {
            let looks_like_blob = value.record_type() == Some("blob")
                || (map.len() == 2 && map.contains_key("cid") && map.contains_key("mimeType"));
            if looks_like_blob {
                if let Ok(blob) = Blob::from_value(value) {
                    found.push(blob);
                    return;
                }
            }
            map.values().for_each(|item| collect_blobs(item, found));
        }
        Value::Array(items) => items.iter().for_each(|item| collect_blobs(item, found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_current_and_legacy_shapes() {
        let json = serde_json::json!({
            "a": {"$type": "blob", "ref": {"$link": "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity"}, "mimeType": "image/jpeg", "size": 10000},
            "b": [{"cid": "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity", "mimeType": "image/png"}]
        });
        let blobs = Value::from_json(&json).unwrap().blobs();
        assert_eq!(blobs.len(), 2);
        assert_eq!(blobs[0].size, Some(10000));
        assert_eq!(blobs[1].size, None);
        assert_eq!(blobs[1].mime_type, "image/png");
    }

    #[test]
    fn another_type_is_not_a_blob() {
        let json = serde_json::json!({"$type": "app.bsky.embed.images", "ref": {"$link": "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity"}, "mimeType": "image/jpeg", "size": 1});
        let value = Value::from_json(&json).unwrap();
        assert_eq!(
            Blob::from_value(&value),
            Err("a blob's $type must be \"blob\"".to_owned())
        );
        assert!(value.blobs().is_empty());
    }
}
