//! Hostile input: every parser must return (not panic) on odd strings, and
//! whatever parses must print back unchanged.

#![allow(clippy::unwrap_used)]

use butterfly_syntax::{
    AtIdentifier, AtUri, CidString, Datetime, Did, Handle, Language, Nsid, RecordKey, Tid, Uri,
};

fn all_parsers(s: &str) -> usize {
    fn one<T: std::fmt::Display, E>(s: &str, r: Result<T, E>) -> usize {
        match r {
            Ok(v) => {
                assert_eq!(v.to_string(), s);
                1
            }
            Err(_) => 0,
        }
    }
    let _ = Datetime::is_valid_syntax(s);
    let _ = Language::is_valid_syntax(s);
    one(s, AtIdentifier::parse(s))
        + one(s, AtUri::parse(s))
        + one(s, CidString::parse(s))
        + one(s, Datetime::parse(s))
        + one(s, Did::parse(s))
        + one(s, Handle::parse(s))
        + one(s, Language::parse(s))
        + one(s, Nsid::parse(s))
        + one(s, RecordKey::parse(s))
        + one(s, Tid::parse(s))
        + one(s, Uri::parse(s))
}

const SEEDS: &[&str] = &[
    "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
    "did:web:example.com",
    "alice.bsky.social",
    "app.bsky.feed.post",
    "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.feed.post/3jzfcijpj2z2a",
    "3jzfcijpj2z2a",
    "1985-04-12T23:20:50.123456789+05:30",
    "en-GB-boont-r-extended-sequence-x-private",
    "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
    "https://example.com/path?q=1#frag",
];

const NOISE: &[char] = &[
    '\0', ' ', '\t', '\n', '-', '.', ':', '/', '#', '?', '%', '@', 'A', 'z', '0', '9', 'é', 'ß',
    '€', '😀', '\u{200b}', '\u{feff}',
];

#[test]
fn prefixes_suffixes_and_mutations_do_not_panic() {
    let mut accepted = 0;
    for seed in SEEDS {
        assert!(
            all_parsers(seed) > 0,
            "seed {seed:?} should parse as something"
        );
        let boundaries: Vec<usize> = seed
            .char_indices()
            .map(|(i, _)| i)
            .chain([seed.len()])
            .collect();
        for &i in &boundaries {
            accepted += all_parsers(&seed[..i]);
            accepted += all_parsers(&seed[i..]);
            for &c in NOISE {
                let mut inserted = String::from(&seed[..i]);
                inserted.push(c);
                inserted.push_str(&seed[i..]);
                accepted += all_parsers(&inserted);
                if i < seed.len() {
                    let mut replaced = String::from(&seed[..i]);
                    replaced.push(c);
                    let next = seed[i..].chars().next().map_or(0, char::len_utf8);
                    replaced.push_str(&seed[i + next..]);
                    accepted += all_parsers(&replaced);
                }
            }
        }
    }
    assert!(accepted > 0);
}

#[test]
fn huge_inputs_are_rejected_quickly() {
    for unit in ["a", "a.", "a-", "é", "x-aaaaa-", "did:a:", "0"] {
        let big = unit.repeat(1 << 20);
        all_parsers(&big);
    }
    let variants = format!("en{}", "-abcde".repeat(200_000));
    assert!(Language::is_valid_syntax(&variants));
    assert!(Language::parse(&variants).is_err());
}

#[test]
fn error_messages_stay_short() {
    let big = "é".repeat(100_000);
    let e = Handle::parse(&big).unwrap_err();
    assert!(e.to_string().len() < 400, "{}", e.to_string().len());
}
