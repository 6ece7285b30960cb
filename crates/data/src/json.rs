//! atproto JSON: the JSON form of the data model, with `$link`, `$bytes` and blob objects.

use crate::{parse_cid_str, Error, Map, Value};
use base64::Engine;
use serde_json::Value as Json;
use std::fmt::Write;

const BASE64_NO_PAD: base64::engine::GeneralPurpose =
    base64::engine::general_purpose::STANDARD_NO_PAD;
/// Accepts `$bytes` with or without padding; atproto writes it without.
const BASE64_LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

impl Value {
    /// Converts atproto JSON to a value, applying the data model's rules: integers only (an integral
    /// float such as `123.0` is an integer), `{"$link"}` and `{"$bytes"}` objects with no other keys,
    /// `$type` a non-empty string, and blob objects with exactly their four fields.
    pub fn from_json(json: &Json) -> Result<Value, Error> {
        from_json_at(json, &mut String::from("$"))
    }

    /// Parses a JSON document as a record: it must be an object, and obey [`Value::from_json`].
    pub fn record_from_json(json: &Json) -> Result<Value, Error> {
        if !json.is_object() {
            return Err(Error::Json {
                path: "$".into(),
                message: "a record must be a JSON object".into(),
            });
        }
        Value::from_json(json)
    }

    /// Converts to atproto JSON: links become `{"$link": cid}`, bytes `{"$bytes": base64}`.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Integer(n) => Json::from(*n),
            Value::String(s) => Json::String(s.clone()),
            Value::Bytes(bytes) => {
                let mut object = serde_json::Map::with_capacity(1);
                object.insert("$bytes".into(), Json::String(BASE64_NO_PAD.encode(bytes)));
                Json::Object(object)
            }
            Value::Link(cid) => {
                let mut object = serde_json::Map::with_capacity(1);
                object.insert("$link".into(), Json::String(cid.to_string()));
                Json::Object(object)
            }
            Value::Array(items) => Json::Array(items.iter().map(Value::to_json).collect()),
            Value::Map(map) => {
                Json::Object(map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// The text of [`Value::to_json`], byte for byte what `serde_json` prints for it, written
    /// straight from the value: a backfill turns every record into JSON text, and building the
    /// `serde_json` tree first costs more than the writing.
    pub fn to_json_string(&self) -> String {
        let mut out = String::with_capacity(256);
        self.write_json(&mut out);
        out
    }

    /// Appends the text of [`Value::to_json_string`] to `out`.
    pub fn write_json(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(true) => out.push_str("true"),
            Value::Bool(false) => out.push_str("false"),
            Value::Integer(n) => {
                let _ = write!(out, "{n}");
            }
            Value::String(s) => write_json_string(out, s),
            Value::Bytes(bytes) => {
                out.push_str("{\"$bytes\":\"");
                BASE64_NO_PAD.encode_string(bytes, out);
                out.push_str("\"}");
            }
            Value::Link(cid) => {
                out.push_str("{\"$link\":\"");
                let _ = write!(out, "{cid}");
                out.push_str("\"}");
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
            Value::Map(map) => {
                out.push('{');
                for (i, (key, value)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(out, key);
                    out.push(':');
                    value.write_json(out);
                }
                out.push('}');
            }
        }
    }
}

/// `text` as a JSON string literal.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    write_json_string(&mut out, text);
    out
}

/// Appends `text` as a JSON string literal, escaped as `serde_json` escapes: `"`, `\\`, and
/// control characters (the usual short forms, else `\u00XX`); everything else as it is.
pub fn write_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut plain = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escape: &str = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[plain..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        plain = i + 1;
    }
    out.push_str(&text[plain..]);
    out.push('"');
}

fn json_error(path: &str, message: impl Into<String>) -> Error {
    Error::Json {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn from_json_at(json: &Json, path: &mut String) -> Result<Value, Error> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(number) => {
            if let Some(n) = number.as_i64() {
                Value::Integer(n)
            } else if number.is_u64() {
                return Err(json_error(
                    path,
                    format!("{number} does not fit in 64 signed bits"),
                ));
            } else if let Some(f) = number.as_f64() {
                // Integral floats in i64 range are integers that a JSON writer printed with ".0".
                if f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63) {
                    Value::Integer(f as i64)
                } else {
                    return Err(json_error(
                        path,
                        format!("{number} is not an integer; floats are not allowed"),
                    ));
                }
            } else {
                return Err(json_error(
                    path,
                    format!("{number} does not fit in 64 signed bits"),
                ));
            }
        }
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => {
            let mut values = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                let len = path.len();
                let _ = write!(path, "[{index}]");
                values.push(from_json_at(item, path)?);
                path.truncate(len);
            }
            Value::Array(values)
        }
        Json::Object(object) => return object_from_json(object, path),
    })
}

fn object_from_json(
    object: &serde_json::Map<String, Json>,
    path: &mut String,
) -> Result<Value, Error> {
    if let Some(link) = object.get("$link") {
        if object.len() != 1 {
            return Err(json_error(path, "a $link object must have no other keys"));
        }
        let text = link
            .as_str()
            .ok_or_else(|| json_error(path, "$link must be a string"))?;
        return parse_cid_str(text)
            .map(Value::Link)
            .map_err(|message| json_error(path, message));
    }
    if let Some(bytes) = object.get("$bytes") {
        if object.len() != 1 {
            return Err(json_error(path, "a $bytes object must have no other keys"));
        }
        let text = bytes
            .as_str()
            .ok_or_else(|| json_error(path, "$bytes must be a base64 string"))?;
        return BASE64_LENIENT
            .decode(text)
            .map(Value::Bytes)
            .map_err(|e| json_error(path, format!("$bytes is not valid base64: {e}")));
    }
    let mut map = Map::new();
    for (key, item) in object {
        let len = path.len();
        path.push('.');
        path.push_str(key);
        map.insert(key.clone(), from_json_at(item, path)?);
        path.truncate(len);
    }
    let value = Value::Map(map);
    check_type_field(&value).map_err(|message| json_error(path, message))?;
    Ok(value)
}

/// Checks the rules that hang on `$type`: a non-empty string, and a well-formed blob when it is `"blob"`.
pub(crate) fn check_type_field(value: &Value) -> Result<(), String> {
    let Some(type_value) = value.get("$type") else {
        return Ok(());
    };
    match type_value {
        Value::String(s) if s.is_empty() => Err("$type must not be empty".into()),
        Value::String(s) if s == "blob" => crate::Blob::from_value(value).map(|_| ()),
        Value::String(_) => Ok(()),
        _ => Err("$type must be a string".into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(json: &str, expected_error: Option<&str>) {
        let parsed: Json = serde_json::from_str(json).unwrap();
        match (Value::from_json(&parsed), expected_error) {
            (Ok(value), None) => {
                let back = Value::from_cbor(&value.to_cbor()).unwrap();
                assert_eq!(back, value);
            }
            (Err(e), Some(part)) => {
                assert!(e.to_string().contains(part), "{e} should mention {part}")
            }
            (result, expected) => panic!("{json}: got {result:?}, expected error {expected:?}"),
        }
    }

    #[test]
    fn json_text_is_what_serde_json_prints() {
        let texts = [
            r#"{"$type":"app.bsky.feed.post","text":"quote \" slash \\ nl \n tab \t cr \r bell \u0007 del \u007f é 🦋 </script>","createdAt":"2024-01-01T00:00:00.000Z"}"#,
            r#"{"a":[1,-2,9223372036854775807,-9223372036854775808,true,false,null,[],{}],"b":{"$bytes":"aGVsbG8"},"c":{"$link":"bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"}}"#,
            r#"{"blob":{"$type":"blob","ref":{"$link":"bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"},"mimeType":"image/png","size":12345},"\u0000key\u001f":"\b\f"}"#,
        ];
        for text in texts {
            let json: Json = serde_json::from_str(text).unwrap();
            let value = Value::from_json(&json).unwrap();
            // Through CBOR, so that map keys come in the data model's order.
            let value = Value::from_cbor(&value.to_cbor()).unwrap();
            assert_eq!(
                value.to_json_string(),
                value.to_json().to_string(),
                "{text}"
            );
        }
    }

    #[test]
    fn json_rules() {
        check(r#"{"a": 1.5}"#, Some("floats"));
        check(r#"{"a": 2.0}"#, None);
        check(r#"{"a": {"$bytes": "aGk="}}"#, None);
        check(
            r#"{"a": {"$link": "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a", "x": 1}}"#,
            Some("no other keys"),
        );
        check(r#"{"a": {"b": [{"$type": ""}]}}"#, Some("$.a.b[0]"));
        check(r#"{"a": 18446744073709551615}"#, Some("64 signed bits"));
    }
}
