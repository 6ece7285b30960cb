//! Dotted paths into JSON values, and the DIDs found at them.

use butterfly_syntax::{AtUri, Did};
use std::collections::HashSet;
use std::fmt;

/// The most segments a path may have; deeper records are not worth walking.
pub const MAX_ATTR_SEGMENTS: usize = 32;

/// One step of an [`AttrPath`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// The value of this key of an object.
    Key(String),
    /// Every element of an array (`*`).
    Each,
}

/// A parsed dotted path such as `subject`, `subject.uri` or `items.*.subject`.
///
/// A key segment reads that key of an object; a `*` segment fans out over every element of an
/// array. A step that meets a value of the wrong shape (a key on an array, `*` on an object)
/// yields nothing rather than failing: records are foreign data. Displays as the dotted text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrPath {
    segments: Vec<Segment>,
}

/// An attribute path did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("attr path {text:?}: {reason}")]
pub struct AttrPathError {
    text: String,
    reason: String,
}

impl AttrPathError {
    /// What was wrong, without the path itself.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl AttrPath {
    /// Parses a dotted path: non-empty segments separated by `.`, each a key or `*`.
    pub fn parse(text: &str) -> Result<AttrPath, AttrPathError> {
        let fail = |reason: String| AttrPathError {
            text: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(fail(
                "expected a dotted path such as \"subject\", found an empty string".into(),
            ));
        }
        let mut segments = Vec::new();
        for part in text.split('.') {
            if segments.len() == MAX_ATTR_SEGMENTS {
                return Err(fail(format!(
                    "expected at most {MAX_ATTR_SEGMENTS} segments"
                )));
            }
            if part.is_empty() {
                return Err(fail(
                    "empty segment (leading, trailing or doubled '.')".into(),
                ));
            }
            if part == "*" {
                segments.push(Segment::Each);
            } else if part.contains('*') {
                return Err(fail(format!(
                    "segment {part:?}: '*' must be a whole segment"
                )));
            } else if part.chars().any(char::is_whitespace) {
                return Err(fail(format!("segment {part:?}: whitespace is not allowed")));
            } else {
                segments.push(Segment::Key(part.to_owned()));
            }
        }
        Ok(AttrPath { segments })
    }

    /// The steps of the path, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether the path has a `*` segment, so can give more than one value.
    pub fn fans_out(&self) -> bool {
        self.segments.contains(&Segment::Each)
    }

    /// Every string at the path in `value`, in document order. Values of other types are skipped.
    pub fn strings<'a>(&self, value: &'a serde_json::Value) -> Vec<&'a str> {
        let mut out = Vec::new();
        collect_strings(&self.segments, value, &mut out);
        out
    }
}

/// Recursion depth is bounded by the path length, at most [`MAX_ATTR_SEGMENTS`].
fn collect_strings<'a>(segments: &[Segment], value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    let Some((first, rest)) = segments.split_first() else {
        if let Some(text) = value.as_str() {
            out.push(text);
        }
        return;
    };
    match (first, value) {
        (Segment::Key(key), serde_json::Value::Object(map)) => {
            if let Some(inner) = map.get(key) {
                collect_strings(rest, inner, out);
            }
        }
        (Segment::Each, serde_json::Value::Array(items)) => {
            for item in items {
                collect_strings(rest, item, out);
            }
        }
        _ => {}
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            match segment {
                Segment::Key(key) => f.write_str(key)?,
                Segment::Each => f.write_str("*")?,
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for AttrPath {
    type Err = AttrPathError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        AttrPath::parse(text)
    }
}

/// The DID a string names: a valid DID is itself; an `at://` URI whose authority is a DID gives
/// that DID. Anything else (a handle, an AT-URI with a handle authority, a malformed string) gives
/// `None`, since following it would need a resolution this crate does not do.
pub fn did_of(text: &str) -> Option<&str> {
    if text.starts_with("did:") {
        return Did::parse(text).ok().map(|_| text);
    }
    let rest = text.strip_prefix("at://")?;
    let uri = AtUri::parse(text).ok()?;
    let did = uri.authority().as_did()?;
    // The authority is the URI's text up to the first '/', so it can be borrowed from the input.
    let authority = rest.split('/').next()?;
    (authority == did.as_str()).then_some(authority)
}

/// The DIDs at `path` in `value` (see [`did_of`]), without duplicates, in document order.
pub fn dids_at(path: &AttrPath, value: &serde_json::Value) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for text in path.strings(value) {
        if let Some(did) = did_of(text) {
            if seen.insert(did) {
                out.push(did.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn check_parse(text: &str, expected: Result<&str, &str>) {
        let got = AttrPath::parse(text)
            .map(|path| path.to_string())
            .map_err(|e| e.to_string());
        assert_eq!(
            got,
            expected.map(str::to_owned).map_err(str::to_owned),
            "{text:?}"
        );
    }

    #[test]
    fn parses_and_displays() {
        check_parse("subject", Ok("subject"));
        check_parse("subject.uri", Ok("subject.uri"));
        check_parse("items.*.subject", Ok("items.*.subject"));
        check_parse("*", Ok("*"));
        check_parse(
            "",
            Err(
                "attr path \"\": expected a dotted path such as \"subject\", found an empty string",
            ),
        );
        check_parse(
            "a..b",
            Err("attr path \"a..b\": empty segment (leading, trailing or doubled '.')"),
        );
        check_parse(
            "a.b*",
            Err("attr path \"a.b*\": segment \"b*\": '*' must be a whole segment"),
        );
        check_parse(
            "a b",
            Err("attr path \"a b\": segment \"a b\": whitespace is not allowed"),
        );
        let deepest = vec!["a"; MAX_ATTR_SEGMENTS].join(".");
        check_parse(&deepest, Ok(&deepest));
        check_parse(
            &format!("{deepest}.a"),
            Err(&format!(
                "attr path \"{deepest}.a\": expected at most 32 segments"
            )),
        );
    }

    fn check_dids(path: &str, value: serde_json::Value, expected: &[&str]) {
        let path = AttrPath::parse(path).unwrap();
        assert_eq!(dids_at(&path, &value), expected, "{path} in {value}");
    }

    #[test]
    fn finds_dids() {
        let alice = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
        let bob = "did:web:bob.example";
        check_dids("subject", json!({"subject": alice}), &[alice]);
        check_dids(
            "subject.uri",
            json!({"subject": {"uri": format!("at://{bob}/app.bsky.feed.post/3jzfcijpj2z2a"), "cid": "bafy"}}),
            &[bob],
        );
        check_dids(
            "items.*.subject",
            json!({"items": [{"subject": alice}, {"subject": bob}, {"subject": alice}, {"other": 1}]}),
            &[alice, bob],
        );
        check_dids(
            "items.*",
            json!({"items": [alice, "alice.example", "at://alice.example/app.bsky.feed.post/x", 7, "did:nope", format!("at://{bob}")]}),
            &[alice, bob],
        );
        // Wrong shapes give nothing.
        check_dids("subject", json!([{"subject": alice}]), &[]);
        check_dids("*.subject", json!({"0": {"subject": alice}}), &[]);
        check_dids("subject", json!({"subject": {"did": alice}}), &[]);
        check_dids(
            "subject",
            json!({"subject": format!("at://{alice}/not a collection")}),
            &[],
        );
    }

    #[test]
    fn strings_keep_document_order() {
        let path = AttrPath::parse("a.*.b.*").unwrap();
        let value = json!({"a": [{"b": ["x", "y"]}, {"b": "z"}, {"b": ["w", 1]}]});
        assert_eq!(path.strings(&value), ["x", "y", "w"]);
        assert!(path.fans_out());
        assert!(!AttrPath::parse("a.b").unwrap().fans_out());
    }
}
