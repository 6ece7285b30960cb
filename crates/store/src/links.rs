//! Links inside records: every AT-URI and DID a record mentions, and where it sits.
//!
//! A like points at a post through `.subject.uri`, a follow at an account through `.subject`, a
//! mention through `.facets[].features[].did`. The backlinks index answers "who links here" from
//! these, in the path style of Constellation: a dot and the key for an object member, `[]` for an
//! array element.
//!
//! Records come from the network, so the walk is bounded: it looks no deeper than [`MAX_LINK_DEPTH`]
//! levels and keeps at most [`MAX_LINKS`] links. It fails only on text that is not JSON; a string
//! that is not a link is simply not one.

use std::fmt;

use indexmap::IndexSet;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The most links kept from one record; the rest are ignored.
pub const MAX_LINKS: usize = 256;

/// How deep into a record links are looked for: a string inside more than this many nested
/// objects and arrays, the record itself included, is not looked at.
pub const MAX_LINK_DEPTH: usize = 32;

/// The longest DID accepted, in bytes (the DID spec's limit).
const MAX_DID_LEN: usize = 2048;

/// The longest AT-URI accepted, in bytes (the AT-URI spec's limit).
const MAX_AT_URI_LEN: usize = 8192;

/// The longest handle in an AT-URI's authority.
const MAX_HANDLE_LEN: usize = 253;

/// A link from a record to a subject.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Link {
    /// Where in the record the link sits, e.g. `.subject.uri` or `.facets[].features[].did`.
    pub path: String,
    /// The AT-URI or DID linked to, exactly as the record spells it.
    pub target: String,
}

/// Every link in a record's JSON text, in document order; an error if the text is not JSON.
///
/// A link is a string value that is an `at://` URI or a DID. Members whose key starts with `$`
/// (`$type`, `$link`, `$bytes`) are skipped, so a blob's CID or a record's type is never a link.
/// A `(path, target)` pair is reported once, at its first occurrence, so a post that mentions the
/// same account twice links to it once. At most [`MAX_LINKS`] links are returned and nothing below
/// [`MAX_LINK_DEPTH`] is looked at, though all of the text is checked to be JSON.
///
/// The text is read once, as a stream, with no tree built: every store runs this on every record
/// it writes, on the one thread that writes. An object that repeats a key (which DAG-CBOR, and so
/// a record from the network, cannot) has the links of every occurrence.
pub fn links_in(json: &str) -> Result<Vec<Link>, serde_json::Error> {
    let mut walk = Walk {
        links: IndexSet::default(),
        path: String::new(),
    };
    let mut reader = serde_json::Deserializer::from_str(json);
    Visit {
        walk: &mut walk,
        depth: 0,
        look: true,
    }
    .deserialize(&mut reader)?;
    reader.end()?;
    Ok(walk.links.into_iter().collect())
}

struct Walk {
    /// In document order, each once.
    links: IndexSet<Link, foldhash::fast::RandomState>,
    /// The path of the value being visited.
    path: String,
}

impl Walk {
    fn full(&self) -> bool {
        self.links.len() >= MAX_LINKS
    }

    /// Keeps `text` as a link at the current path if it is one, and new: a repeat leaves the
    /// set as it was. One hash either way; repeats are rare, so building the `Link` first costs
    /// less than looking it up before building it. (The caller looks only while the walk is not
    /// full.)
    fn string(&mut self, text: &str) {
        if is_link(text) {
            self.links.insert(Link {
                path: self.path.clone(),
                target: text.to_owned(),
            });
        }
    }
}

/// Visits one JSON value `depth` containers down (the record itself is at depth 0). When it
/// `look`s, a string is checked for a link, and a container's members are looked at if it is less
/// than [`MAX_LINK_DEPTH`] down and the walk is not full. Everything else is only read: through
/// `deserialize_any` still, so that serde_json's nesting limit (128) refuses exactly the texts
/// that [`crate::parse_record`] refuses.
struct Visit<'w> {
    walk: &'w mut Walk,
    depth: usize,
    look: bool,
}

impl Visit<'_> {
    /// The visit of a member, given whether that member may hold links.
    fn member(&mut self, may_link: bool) -> Visit<'_> {
        let look = self.look && may_link && self.depth < MAX_LINK_DEPTH && !self.walk.full();
        Visit {
            walk: &mut *self.walk,
            depth: self.depth + 1,
            look,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Visit<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, reader: D) -> Result<(), D::Error> {
        reader.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Visit<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, text: &str) -> Result<(), E> {
        if self.look {
            self.walk.string(text);
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut members: A) -> Result<(), A::Error> {
        let parent_len = self.walk.path.len();
        // The key goes straight onto the path; `true` if it starts with `$`.
        while let Some(dollar) = members.next_key_seed(PathKey(&mut self.walk.path))? {
            members.next_value_seed(self.member(!dollar))?;
            self.walk.path.truncate(parent_len);
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut elements: A) -> Result<(), A::Error> {
        let parent_len = self.walk.path.len();
        self.walk.path.push_str("[]");
        while elements.next_element_seed(self.member(true))?.is_some() {}
        self.walk.path.truncate(parent_len);
        Ok(())
    }
}

/// Reads an object key onto the end of the path as `.key`; says whether it starts with `$`.
struct PathKey<'p>(&'p mut String);

impl<'de> DeserializeSeed<'de> for PathKey<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, reader: D) -> Result<bool, D::Error> {
        reader.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for PathKey<'_> {
    type Value = bool;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        self.0.push('.');
        self.0.push_str(key);
        Ok(key.starts_with('$'))
    }
}

/// True if `text` is an `at://` URI or a DID.
fn is_link(text: &str) -> bool {
    is_at_uri(text) || is_did(text)
}

/// A DID with plausible syntax: `did:`, a lowercase method, `:`, then an identifier of letters,
/// digits, `.`, `_`, `-`, `:` and `%XX` escapes that does not end in `:`.
fn is_did(text: &str) -> bool {
    if text.len() > MAX_DID_LEN {
        return false;
    }
    let Some(rest) = text.strip_prefix("did:") else {
        return false;
    };
    let Some((method, identifier)) = rest.split_once(':') else {
        return false;
    };
    if method.is_empty() || !method.bytes().all(|byte| byte.is_ascii_lowercase()) {
        return false;
    }
    if identifier.is_empty() || identifier.ends_with(':') {
        return false;
    }
    let bytes = identifier.as_bytes();
    let mut idx = 0;
    while idx < bytes.len() {
        match bytes[idx] {
            b'%' => {
                let escaped = bytes.get(idx + 1..idx + 3);
                if !escaped.is_some_and(|pair| pair.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                idx += 3;
            }
            byte if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-' | b':') => {
                idx += 1;
            }
            _ => return false,
        }
    }
    true
}

/// An `at://` URI whose authority is a DID or a handle-like name, with no whitespace or control
/// characters anywhere.
fn is_at_uri(text: &str) -> bool {
    if text.len() > MAX_AT_URI_LEN {
        return false;
    }
    let Some(rest) = text.strip_prefix("at://") else {
        return false;
    };
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    is_did(authority) || is_handle_like(authority)
}

/// Dot-separated labels of letters, digits and hyphens: a handle, without checking the TLD.
fn is_handle_like(text: &str) -> bool {
    text.len() <= MAX_HANDLE_LEN
        && text.contains('.')
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const ALICE: &str = "did:plc:4xk3ihlb2mbwvdcxgsdhnqyb";
    const BOB: &str = "did:plc:r7tbmc5dwl4ajvvc2ubpfhwj";
    const POST: &str = "at://did:plc:r7tbmc5dwl4ajvvc2ubpfhwj/app.bsky.feed.post/3lbq5vmzq7s2k";
    const ROOT: &str = "at://did:plc:r7tbmc5dwl4ajvvc2ubpfhwj/app.bsky.feed.post/3lbq4aaaaaa2k";

    /// Asserts that `record` has exactly `expected` as `(path, target)` pairs, in order.
    fn check(record: Value, expected: &[(&str, &str)]) {
        let found = links_in(&record.to_string()).expect("JSON");
        let found: Vec<(&str, &str)> = found
            .iter()
            .map(|link| (link.path.as_str(), link.target.as_str()))
            .collect();
        assert_eq!(found, expected, "links in {record}");
    }

    #[test]
    fn like_and_repost() {
        let subject = json!({"uri": POST, "cid": "bafyreib2rxk3rh6kzwq7mcuxlpgmiopdcw2ylkcyvnjwghqjkqbuhvfjq4"});
        let like = json!({
            "$type": "app.bsky.feed.like",
            "subject": subject,
            "createdAt": "2024-11-20T10:00:00.000Z",
        });
        check(like, &[(".subject.uri", POST)]);
        let repost = json!({
            "$type": "app.bsky.feed.repost",
            "subject": subject,
            "createdAt": "2024-11-20T10:00:00.000Z",
        });
        check(repost, &[(".subject.uri", POST)]);
    }

    #[test]
    fn follow_block_and_list_item() {
        let follow = json!({"$type": "app.bsky.graph.follow", "subject": BOB, "createdAt": "2024-11-20T10:00:00.000Z"});
        check(follow, &[(".subject", BOB)]);
        let block = json!({"$type": "app.bsky.graph.block", "subject": BOB, "createdAt": "2024-11-20T10:00:00.000Z"});
        check(block, &[(".subject", BOB)]);
        let list = "at://did:plc:4xk3ihlb2mbwvdcxgsdhnqyb/app.bsky.graph.list/3kmmz5ks2c22x";
        let item = json!({
            "$type": "app.bsky.graph.listitem",
            "subject": BOB,
            "list": list,
            "createdAt": "2024-11-20T10:00:00.000Z",
        });
        check(item, &[(".subject", BOB), (".list", list)]);
    }

    #[test]
    fn reply_with_mention_facet() {
        let post = json!({
            "$type": "app.bsky.feed.post",
            "text": "@bob.example.com did:plc:notadid here at://not a uri",
            "reply": {
                "root": {"uri": ROOT, "cid": "bafyreiaaaa"},
                "parent": {"uri": POST, "cid": "bafyreibbbb"},
            },
            "facets": [
                {
                    "index": {"byteStart": 0, "byteEnd": 16},
                    "features": [{"$type": "app.bsky.richtext.facet#mention", "did": BOB}],
                },
                {
                    "index": {"byteStart": 17, "byteEnd": 20},
                    "features": [
                        {"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com"},
                        {"$type": "app.bsky.richtext.facet#mention", "did": ALICE},
                        {"$type": "app.bsky.richtext.facet#mention", "did": BOB},
                    ],
                },
            ],
            "langs": ["en"],
            "createdAt": "2024-11-20T10:00:00.000Z",
        });
        check(
            post,
            &[
                (".reply.root.uri", ROOT),
                (".reply.parent.uri", POST),
                (".facets[].features[].did", BOB),
                (".facets[].features[].did", ALICE),
            ],
        );
    }

    #[test]
    fn quote_posts() {
        let quote = json!({
            "$type": "app.bsky.feed.post",
            "text": "look",
            "embed": {"$type": "app.bsky.embed.record", "record": {"uri": POST, "cid": "bafyreicccc"}},
            "createdAt": "2024-11-20T10:00:00.000Z",
        });
        check(quote, &[(".embed.record.uri", POST)]);
        let with_media = json!({
            "$type": "app.bsky.feed.post",
            "text": "look at this",
            "embed": {
                "$type": "app.bsky.embed.recordWithMedia",
                "record": {
                    "$type": "app.bsky.embed.record",
                    "record": {"uri": POST, "cid": "bafyreicccc"},
                },
                "media": {
                    "$type": "app.bsky.embed.images",
                    "images": [{
                        "alt": "",
                        "image": {
                            "$type": "blob",
                            "ref": {"$link": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"},
                            "mimeType": "image/jpeg",
                            "size": 123456,
                        },
                    }],
                },
            },
            "createdAt": "2024-11-20T10:00:00.000Z",
        });
        check(with_media, &[(".embed.record.record.uri", POST)]);
    }

    #[test]
    fn dollar_keys_are_skipped() {
        let record = json!({"$type": ALICE, "$link": POST, "subject": {"$bytes": BOB}});
        check(record, &[]);
    }

    #[test]
    fn did_syntax() {
        for good in [
            ALICE,
            "did:web:example.com",
            "did:web:localhost%3A8080",
            "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme",
            "did:example:a:b_c-d.e",
        ] {
            assert!(is_did(good), "{good} is a DID");
        }
        let long = format!("did:plc:{}", "a".repeat(MAX_DID_LEN));
        for bad in [
            "did:",
            "did:plc",
            "did:plc:",
            "did:PLC:abc",
            "did:pl2:abc",
            "did::abc",
            "did:plc:abc:",
            "did:web:bad%3",
            "did:web:bad%zz",
            "did:plc:has space",
            "did:plc:ünïcode",
            "DID:plc:abc",
            long.as_str(),
        ] {
            assert!(!is_did(bad), "{bad} is not a DID");
        }
    }

    #[test]
    fn at_uri_syntax() {
        for good in [
            POST,
            "at://did:plc:4xk3ihlb2mbwvdcxgsdhnqyb",
            "at://alice.example.com/app.bsky.feed.post/3lbq5vmzq7s2k",
            "at://alice.example.com",
        ] {
            assert!(is_at_uri(good), "{good} is an AT-URI");
        }
        for bad in [
            "at://",
            "at:///app.bsky.feed.post",
            "at://nodot/app.bsky.feed.post",
            "at://did:plc:abc/app.bsky.feed.post/with space",
            "at://did:plc:abc/app.bsky.feed.post/line\nbreak",
            "https://bsky.app/profile/alice.example.com",
        ] {
            assert!(!is_at_uri(bad), "{bad} is not an AT-URI");
        }
    }

    #[test]
    fn top_level_and_odd_positions() {
        check(json!(BOB), &[("", BOB)]);
        check(json!([[BOB]]), &[("[][]", BOB)]);
        check(
            json!({"a": [{"b": [POST, 1, null, true]}]}),
            &[(".a[].b[]", POST)],
        );
    }

    #[test]
    fn link_count_is_bounded() {
        let many: Vec<String> = (0..1000)
            .map(|n| format!("did:web:host{n}.example"))
            .collect();
        let record = json!({"items": many});
        let links = links_in(&record.to_string()).expect("JSON");
        assert_eq!(links.len(), MAX_LINKS);
        assert_eq!(links[0].target, "did:web:host0.example");
        assert_eq!(
            links[MAX_LINKS - 1].target,
            format!("did:web:host{}.example", MAX_LINKS - 1)
        );
    }

    #[test]
    fn depth_is_bounded() {
        // A string nested exactly MAX_LINK_DEPTH levels down is found, one level more is not.
        let nested =
            |levels: usize| format!("{}\"{BOB}\"{}", "[".repeat(levels), "]".repeat(levels));
        assert_eq!(links_in(&nested(MAX_LINK_DEPTH)).expect("JSON").len(), 1);
        assert!(links_in(&nested(MAX_LINK_DEPTH + 1))
            .expect("JSON")
            .is_empty());
        let object = |levels: usize| {
            format!(
                "{}\"{BOB}\"{}",
                "{\"a\":".repeat(levels),
                "}".repeat(levels)
            )
        };
        assert_eq!(
            links_in(&object(MAX_LINK_DEPTH)).expect("JSON")[0].path,
            ".a".repeat(MAX_LINK_DEPTH)
        );
        assert!(links_in(&object(MAX_LINK_DEPTH + 1))
            .expect("JSON")
            .is_empty());
        // Below the limit the text is still read, and must be JSON.
        let broken = format!("{}\"{BOB}\"{}", "[".repeat(40), "]".repeat(39));
        assert!(links_in(&broken).is_err());

        // Hostile nesting is refused as serde_json refuses it (past 128 levels), without
        // recursing to the bottom.
        assert!(links_in(&nested(100_000)).is_err());
        assert!(links_in(&object(100_000)).is_err());
        for levels in 120..136 {
            for text in [nested(levels), object(levels)] {
                assert_eq!(
                    links_in(&text).is_ok(),
                    serde_json::from_str::<Value>(&text).is_ok(),
                    "{levels} levels"
                );
            }
        }
    }

    #[test]
    fn not_json_is_an_error() {
        for bad in [
            "",
            "{",
            "{\"a\":}",
            "[1,]",
            "\"unterminated",
            "{} {}",
            "nul",
            "{\"a\":1,\"a\"}",
        ] {
            assert!(links_in(bad).is_err(), "{bad:?} is not JSON");
        }
        for good in [
            "null",
            "1",
            "-2.5e3",
            "\"x\"",
            "[]",
            "{}",
            " {\"a\" : [true, false, null]} ",
        ] {
            assert_eq!(links_in(good).expect("JSON"), Vec::new(), "{good}");
        }
    }

    #[test]
    fn escaped_strings_and_keys() {
        let json = format!(
            r#"{{"sub\u006aect":"did:plc:r7tbmc5dwl4ajvvc2ubpfhwj","t\"x":"at:\/\/{}"}}"#,
            &POST[5..]
        );
        let found = links_in(&json).expect("JSON");
        let found: Vec<(&str, &str)> = found
            .iter()
            .map(|link| (link.path.as_str(), link.target.as_str()))
            .collect();
        assert_eq!(found, [(".subject", BOB), (".t\"x", POST)]);
    }
}
