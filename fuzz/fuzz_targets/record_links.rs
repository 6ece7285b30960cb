//! Record JSON as the stores read it for links (`butterfly_store::links_in`), from arbitrary bytes.
//!
//! Properties: never panics; accepts exactly the texts `serde_json` parses to a `Value` (the stores
//! promise that a record which is not JSON fails its batch alike everywhere); at most `MAX_LINKS`
//! links, no `(path, target)` pair twice, every path starting with a `.key` or `[]` step (or empty,
//! for a bare string), and every target a string value of the text. (A repeated key keeps its last
//! value in a `Value` but has the links of every occurrence, as `links_in` documents, so the strings
//! are collected by a reader of their own.)
#![no_main]

use std::collections::HashSet;
use std::fmt;

use butterfly_store::{links_in, MAX_LINKS};
use libfuzzer_sys::fuzz_target;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let links = links_in(text);
    let is_json = serde_json::from_str::<Value>(text).is_ok();
    assert_eq!(links.is_ok(), is_json, "links_in and serde_json disagree on {text:?}");
    let Ok(links) = links else {
        return;
    };
    assert!(links.len() <= MAX_LINKS);
    let mut strings = HashSet::new();
    let mut reader = serde_json::Deserializer::from_str(text);
    if let Err(e) = Strings(&mut strings).deserialize(&mut reader) {
        panic!("serde_json parsed {text:?} to a Value but not to strings: {e}");
    }
    let mut seen = HashSet::new();
    for link in &links {
        assert!(seen.insert((&link.path, &link.target)), "{link:?} twice");
        assert!(strings.contains(&link.target), "{link:?} is not a string of the text");
        assert!(
            link.path.is_empty() || link.path.starts_with('.') || link.path.starts_with("[]"),
            "{link:?}"
        );
    }
});

/// Collects every string value (not keys) of a JSON text, repeated keys included.
struct Strings<'s>(&'s mut HashSet<String>);

impl<'de> DeserializeSeed<'de> for Strings<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, reader: D) -> Result<(), D::Error> {
        reader.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strings<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("JSON")
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
        self.0.insert(text.to_owned());
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut elements: A) -> Result<(), A::Error> {
        while elements.next_element_seed(Strings(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<(), A::Error> {
        while members.next_key::<IgnoredAny>()?.is_some() {
            members.next_value_seed(Strings(&mut *self.0))?;
        }
        Ok(())
    }
}
