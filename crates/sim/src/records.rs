//! Realistic Bluesky records: posts with facets, embeds and replies, likes, reposts, follows, blocks
//! and a profile, generated from a seed and an index so that any one can be regenerated on demand.

use crate::rng::Rng;
use butterfly_data::{cid_for_cbor, cid_for_raw, Map, Value};
use butterfly_syntax::Tid;

const WORDS: &[&str] = &[
    "the",
    "a",
    "sync",
    "firehose",
    "relay",
    "repo",
    "bluesky",
    "atproto",
    "today",
    "just",
    "shipped",
    "coffee",
    "morning",
    "thread",
    "new",
    "release",
    "rust",
    "garden",
    "music",
    "cat",
    "dog",
    "weather",
    "train",
    "book",
    "reading",
    "photo",
    "walk",
    "city",
    "night",
    "friends",
    "open",
    "source",
    "protocol",
    "moderation",
    "feed",
    "custom",
    "labeler",
    "server",
    "data",
    "backup",
    "build",
    "test",
    "fast",
    "slow",
    "love",
    "this",
    "what",
    "why",
    "how",
    "is",
    "are",
    "we",
    "you",
    "they",
    "and",
    "or",
    "not",
    "very",
    "really",
    "so",
    "much",
    "🦋",
    "✨",
    "é",
    "naïve",
    "日本語",
    "über",
];
const TAGS: &[&str] = &[
    "rust",
    "atproto",
    "photography",
    "art",
    "bookclub",
    "science",
];
const LANGS: &[&str] = &["en", "en", "en", "ja", "pt-BR", "de", "es"];

/// The kinds of record the simulator writes, with their collection NSIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// `app.bsky.actor.profile`, record key `self`.
    Profile,
    /// `app.bsky.feed.post`.
    Post,
    /// `app.bsky.feed.like`.
    Like,
    /// `app.bsky.feed.repost`.
    Repost,
    /// `app.bsky.graph.follow`.
    Follow,
    /// `app.bsky.graph.block`.
    Block,
}

impl RecordKind {
    /// The collection NSID.
    pub fn collection(self) -> &'static str {
        match self {
            RecordKind::Profile => "app.bsky.actor.profile",
            RecordKind::Post => "app.bsky.feed.post",
            RecordKind::Like => "app.bsky.feed.like",
            RecordKind::Repost => "app.bsky.feed.repost",
            RecordKind::Follow => "app.bsky.graph.follow",
            RecordKind::Block => "app.bsky.graph.block",
        }
    }

    /// The kind of a newly created record, in the proportions of the live network: mostly likes,
    /// then posts, follows, reposts and a few blocks.
    pub(crate) fn pick_created(rng: &mut Rng) -> RecordKind {
        match rng.below(100) {
            0..=44 => RecordKind::Like,
            45..=69 => RecordKind::Post,
            70..=79 => RecordKind::Repost,
            80..=98 => RecordKind::Follow,
            _ => RecordKind::Block,
        }
    }
}

/// A simulated time (µs since the epoch; the simulator counts in `u64`) as an atproto datetime.
pub fn format_datetime(micros: u64) -> String {
    butterfly_syntax::datetime::format_micros(i64::try_from(micros).unwrap_or(i64::MAX))
}

fn object(fields: Vec<(&str, Value)>) -> Value {
    Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<Map>(),
    )
}

fn text(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

/// A `did:plc` with 24 random base32 characters, registered nowhere.
pub(crate) fn fake_did(rng: &mut Rng) -> String {
    const BASE32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let suffix: String = (0..24)
        .map(|_| BASE32[rng.below(32) as usize] as char)
        .collect();
    format!("did:plc:{suffix}")
}

fn strong_ref(rng: &mut Rng, now_micros: u64) -> Value {
    let did = fake_did(rng);
    let tid = Tid::from_parts(
        now_micros.saturating_sub(rng.below(86_400_000_000)),
        rng.below(1024) as u16,
    );
    let cid = cid_for_cbor(&rng.bytes::<16>());
    object(vec![
        ("uri", text(format!("at://{did}/app.bsky.feed.post/{tid}"))),
        ("cid", Value::Link(cid)),
    ])
}

fn blob(rng: &mut Rng, mime_type: &str) -> Value {
    butterfly_data::Blob {
        cid: cid_for_raw(&rng.bytes::<16>()),
        mime_type: mime_type.to_owned(),
        size: Some(10_000 + rng.below(900_000)),
    }
    .to_value()
}

fn sentence(rng: &mut Rng, n_words: u64) -> String {
    let mut out = String::new();
    for i in 0..n_words {
        if i > 0 {
            out.push(' ');
        }
        let word: &&str = rng.pick(WORDS);
        out.push_str(word);
    }
    out
}

/// Builds one record of `kind` created at `now_micros`.
pub fn record(kind: RecordKind, rng: &mut Rng, now_micros: u64) -> Value {
    let created_at = ("createdAt", text(format_datetime(now_micros)));
    let type_field = ("$type", text(kind.collection()));
    match kind {
        RecordKind::Profile => object(vec![
            type_field,
            ("displayName", text("Simulated Butterfly 🦋")),
            ("description", text(sentence(rng, 20))),
            ("avatar", blob(rng, "image/jpeg")),
            ("banner", blob(rng, "image/jpeg")),
            created_at,
        ]),
        RecordKind::Post => post(rng, type_field, created_at, now_micros),
        RecordKind::Like | RecordKind::Repost => object(vec![
            type_field,
            ("subject", strong_ref(rng, now_micros)),
            created_at,
        ]),
        RecordKind::Follow | RecordKind::Block => object(vec![
            type_field,
            ("subject", text(fake_did(rng))),
            created_at,
        ]),
    }
}

fn post(
    rng: &mut Rng,
    type_field: (&str, Value),
    created_at: (&str, Value),
    now_micros: u64,
) -> Value {
    let n_words = 3 + rng.below(40);
    let mut body = sentence(rng, n_words);
    let mut facets = Vec::new();
    if rng.chance(20) {
        let tag = rng.pick(TAGS);
        let start = body.len() + 1;
        body.push_str(&format!(" #{tag}"));
        facets.push(facet(
            start,
            body.len(),
            "app.bsky.richtext.facet#tag",
            ("tag", text(*tag)),
        ));
    }
    if rng.chance(15) {
        let url = format!("https://example.com/{}", rng.below(1_000_000));
        let start = body.len() + 1;
        body.push_str(&format!(" {url}"));
        facets.push(facet(
            start,
            body.len(),
            "app.bsky.richtext.facet#link",
            ("uri", text(url)),
        ));
    }
    if rng.chance(10) {
        let did = fake_did(rng);
        let start = body.len() + 1;
        body.push_str(" @someone.bsky.social");
        facets.push(facet(
            start,
            body.len(),
            "app.bsky.richtext.facet#mention",
            ("did", text(did)),
        ));
    }
    let mut fields = vec![
        type_field,
        ("text", text(body)),
        ("langs", Value::Array(vec![text(*rng.pick(LANGS))])),
    ];
    if !facets.is_empty() {
        fields.push(("facets", Value::Array(facets)));
    }
    if rng.chance(30) {
        let parent = strong_ref(rng, now_micros);
        let root = if rng.chance(50) {
            parent.clone()
        } else {
            strong_ref(rng, now_micros)
        };
        fields.push(("reply", object(vec![("root", root), ("parent", parent)])));
    }
    match rng.below(10) {
        0 | 1 => {
            let n_images = 1 + rng.below(4);
            let images = (0..n_images)
                .map(|_| {
                    let ratio = object(vec![
                        ("width", Value::Integer(800 + rng.below(1200) as i64)),
                        ("height", Value::Integer(600 + rng.below(1200) as i64)),
                    ]);
                    let n_alt_words = rng.below(8);
                    object(vec![
                        ("alt", text(sentence(rng, n_alt_words))),
                        ("image", blob(rng, "image/jpeg")),
                        ("aspectRatio", ratio),
                    ])
                })
                .collect();
            fields.push((
                "embed",
                object(vec![
                    ("$type", text("app.bsky.embed.images")),
                    ("images", Value::Array(images)),
                ]),
            ));
        }
        2 => {
            let external = object(vec![
                (
                    "uri",
                    text(format!(
                        "https://news.example.org/story/{}",
                        rng.below(1_000_000)
                    )),
                ),
                ("title", text(sentence(rng, 6))),
                ("description", text(sentence(rng, 18))),
            ]);
            fields.push((
                "embed",
                object(vec![
                    ("$type", text("app.bsky.embed.external")),
                    ("external", external),
                ]),
            ));
        }
        3 => {
            let quoted = strong_ref(rng, now_micros);
            fields.push((
                "embed",
                object(vec![
                    ("$type", text("app.bsky.embed.record")),
                    ("record", quoted),
                ]),
            ));
        }
        _ => {}
    }
    fields.push(created_at);
    object(fields)
}

fn facet(
    byte_start: usize,
    byte_end: usize,
    feature_type: &str,
    feature_field: (&str, Value),
) -> Value {
    let index = object(vec![
        ("byteStart", Value::Integer(byte_start as i64)),
        ("byteEnd", Value::Integer(byte_end as i64)),
    ]);
    let feature = object(vec![("$type", text(feature_type)), feature_field]);
    object(vec![
        ("index", index),
        ("features", Value::Array(vec![feature])),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_format_like_the_spec() {
        assert_eq!(format_datetime(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_datetime(951_782_400_123_000),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            format_datetime(1_704_067_199_999_999),
            "2023-12-31T23:59:59.999Z"
        );
        for micros in [
            0,
            951_782_400_123_000,
            1_704_067_199_999_999,
            4_102_444_800_000_000,
        ] {
            assert!(butterfly_syntax::Datetime::parse(&format_datetime(micros)).is_ok());
        }
    }

    #[test]
    fn every_kind_is_a_valid_record() {
        let mut rng = Rng::new(1);
        for kind in [
            RecordKind::Profile,
            RecordKind::Post,
            RecordKind::Like,
            RecordKind::Repost,
            RecordKind::Follow,
            RecordKind::Block,
        ] {
            for _ in 0..50 {
                let value = record(kind, &mut rng, 1_700_000_000_000_000);
                assert!(butterfly_data::validate_record(&value).is_ok(), "{value:?}");
                assert_eq!(value.record_type(), Some(kind.collection()));
            }
        }
    }
}
