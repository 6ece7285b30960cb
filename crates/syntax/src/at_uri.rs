//! AT-URIs pointing at a repository, a collection or a record.

use crate::error::{char_at, string_traits, Error, ErrorKind};
use crate::{AtIdentifier, Nsid, RecordKey};

/// An AT-URI in the restricted syntax used for references in Lexicon:
/// `at://AUTHORITY[/COLLECTION[/RKEY]]`, e.g.
/// `at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.feed.post/3jzfcijpj2z2a`.
///
/// Spec: <https://atproto.com/specs/at-uri-scheme>. Build it with
/// [`AtUri::parse`] or [`AtUri::from_parts`].
///
/// Rules checked: lowercase `at://` prefix; the authority is an
/// [`AtIdentifier`]; the optional collection is an [`Nsid`]; the optional
/// record key is a [`RecordKey`]; no further path segments, no empty
/// segments (so no trailing `/`), no query (`?`) and no fragment (`#`);
/// at most 8 KiB. The string is kept exactly as given.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AtUri {
    text: String,
    authority: AtIdentifier,
    collection: Option<Nsid>,
    record_key: Option<RecordKey>,
}

/// Maximum length of an AT-URI, in bytes.
pub const MAX_AT_URI_LEN: usize = 8 * 1024;

const PREFIX: &str = "at://";

fn parse_parts(s: &str) -> Result<(AtIdentifier, Option<Nsid>, Option<RecordKey>), String> {
    if s.len() > MAX_AT_URI_LEN {
        return Err(format!(
            "must be at most {MAX_AT_URI_LEN} bytes, found {}",
            s.len()
        ));
    }
    let Some(rest) = s.strip_prefix(PREFIX) else {
        return Err("expected \"at://\" prefix".into());
    };
    if let Some(i) = rest.bytes().position(|b| b == b'?' || b == b'#') {
        return Err(format!(
            "{:?} is not allowed: query and fragment are not part of the restricted syntax",
            char_at(rest, i)
        ));
    }
    let mut segments = rest.split('/');
    let authority = segments.next().unwrap_or("");
    let authority =
        AtIdentifier::parse(authority).map_err(|e| format!("invalid authority: {}", e.reason()))?;
    let collection = match segments.next() {
        None => None,
        Some("") => return Err("empty path segment (trailing or doubled '/')".into()),
        Some(c) => Some(Nsid::parse(c).map_err(|e| format!("invalid collection: {e}"))?),
    };
    let record_key = match segments.next() {
        None => None,
        Some("") => return Err("empty path segment (trailing or doubled '/')".into()),
        Some(k) => Some(RecordKey::parse(k).map_err(|e| format!("invalid record key: {e}"))?),
    };
    if segments.next().is_some() {
        return Err(
            "expected at most authority, collection and record key, found more path segments"
                .into(),
        );
    }
    Ok((authority, collection, record_key))
}

impl AtUri {
    /// Parses and validates an AT-URI.
    pub fn parse(s: &str) -> Result<Self, Error> {
        match parse_parts(s) {
            Ok((authority, collection, record_key)) => Ok(AtUri {
                text: s.to_owned(),
                authority,
                collection,
                record_key,
            }),
            Err(reason) => Err(Error::new(ErrorKind::AtUri, s, reason)),
        }
    }

    /// Builds an AT-URI from its parts. Fails if a record key is given
    /// without a collection.
    pub fn from_parts(
        authority: AtIdentifier,
        collection: Option<Nsid>,
        record_key: Option<RecordKey>,
    ) -> Result<Self, Error> {
        let mut text = String::from(PREFIX);
        text.push_str(authority.as_str());
        if let Some(c) = &collection {
            text.push('/');
            text.push_str(c.as_str());
        }
        if let Some(k) = &record_key {
            if collection.is_none() {
                text.push_str("/?/");
                text.push_str(k.as_str());
                return Err(Error::new(
                    ErrorKind::AtUri,
                    &text,
                    "a record key needs a collection",
                ));
            }
            text.push('/');
            text.push_str(k.as_str());
        }
        Ok(AtUri {
            text,
            authority,
            collection,
            record_key,
        })
    }

    /// The AT-URI as a string.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The repository: a DID or a handle.
    pub fn authority(&self) -> &AtIdentifier {
        &self.authority
    }

    /// The collection, if the URI has one.
    pub fn collection(&self) -> Option<&Nsid> {
        self.collection.as_ref()
    }

    /// The record key, if the URI points at a record.
    pub fn record_key(&self) -> Option<&RecordKey> {
        self.record_key.as_ref()
    }
}

string_traits!(AtUri);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(s: &str, ok: bool) {
        let r = AtUri::parse(s);
        assert_eq!(r.is_ok(), ok, "{s:?}: {r:?}");
        if let Ok(u) = r {
            assert_eq!(u.to_string(), s);
        }
    }

    #[test]
    fn accepts_and_rejects() {
        check("at://did:plc:asdf123", true);
        check("at://alice.test/app.bsky.feed.post/3jzfcijpj2z2a", true);
        check("at://alice.test/app.bsky.feed.post", true);
        check("at://alice.test/", false);
        check("at://alice.test/app.bsky.feed.post/", false);
        check("at://alice.test/app.bsky.feed.post/a/b", false);
        check("at://alice.test#frag", false);
        check("at://alice.test?q", false);
        check("AT://alice.test", false);
        check("at://", false);
        check("", false);
        check("at://alice.test/not_nsid", false);
        check("at://ü.test", false);
    }

    #[test]
    fn parts() {
        let u =
            AtUri::parse("at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.feed.post/3jzfcijpj2z2a")
                .unwrap();
        assert_eq!(u.authority().as_str(), "did:plc:ewvi7nxzyoun6zhxrhs64oiz");
        assert!(u.authority().is_did());
        assert_eq!(u.collection().unwrap().as_str(), "app.bsky.feed.post");
        assert_eq!(u.record_key().unwrap().as_str(), "3jzfcijpj2z2a");

        let bare = AtUri::parse("at://alice.test").unwrap();
        assert!(bare.authority().is_handle());
        assert!(bare.collection().is_none());
        assert!(bare.record_key().is_none());
    }

    #[test]
    fn from_parts_round_trip() {
        let u = AtUri::from_parts(
            AtIdentifier::parse("alice.test").unwrap(),
            Some(Nsid::parse("app.bsky.feed.post").unwrap()),
            Some(RecordKey::parse("self").unwrap()),
        )
        .unwrap();
        assert_eq!(u.as_str(), "at://alice.test/app.bsky.feed.post/self");
        assert_eq!(AtUri::parse(u.as_str()).unwrap(), u);

        let err = AtUri::from_parts(
            AtIdentifier::parse("alice.test").unwrap(),
            None,
            Some(RecordKey::parse("self").unwrap()),
        );
        assert!(err.is_err());
    }

    #[test]
    fn message_names_the_part() {
        let e = AtUri::parse("at://alice.test/short").unwrap_err();
        assert!(
            e.reason().starts_with("invalid collection: nsid \"short\""),
            "{e}"
        );
    }
}
