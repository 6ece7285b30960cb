//! Generic URIs (the Lexicon `uri` string format).

use crate::error::{char_at, string_traits, Error, ErrorKind};

/// A URI with a scheme, e.g. `https://example.com/path` or `dns:example.com`.
///
/// Spec: <https://atproto.com/specs/lexicon#uri>. Build it with
/// [`Uri::parse`].
///
/// Rules checked: an RFC 3986 scheme (a letter, then letters, digits,
/// `+`, `-` or `.`), a `:`, then at least one more character; every
/// character is printable ASCII (no whitespace, no control characters, no
/// non-ASCII); at most 8 KiB. The rest of the URI is not parsed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uri(String);

/// Maximum length of a URI, in bytes.
pub const MAX_URI_LEN: usize = 8 * 1024;

fn check(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("expected scheme:rest, found an empty string".into());
    }
    if s.len() > MAX_URI_LEN {
        return Err(format!(
            "must be at most {MAX_URI_LEN} bytes, found {}",
            s.len()
        ));
    }
    if let Some(i) = s.bytes().position(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "{:?} is not allowed (expected printable ASCII, no whitespace)",
            char_at(s, i)
        ));
    }
    let bytes = s.as_bytes();
    if !bytes[0].is_ascii_alphabetic() {
        return Err(format!(
            "scheme must start with a letter, found {:?}",
            char_at(s, 0)
        ));
    }
    let scheme_len = bytes
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
        .unwrap_or(bytes.len());
    match bytes.get(scheme_len) {
        Some(b':') => {}
        None => return Err("expected ':' after the scheme, found end of input".into()),
        Some(_) => {
            return Err(format!(
                "expected ':' after the scheme, found {:?}",
                char_at(s, scheme_len)
            ))
        }
    }
    if scheme_len + 1 == bytes.len() {
        return Err("expected something after the scheme, found nothing".into());
    }
    Ok(())
}

impl Uri {
    /// Parses and validates a URI.
    pub fn parse(s: &str) -> Result<Self, Error> {
        check(s)
            .map(|()| Uri(s.to_owned()))
            .map_err(|reason| Error::new(ErrorKind::Uri, s, reason))
    }

    /// The URI as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The scheme, e.g. `https`, as written.
    pub fn scheme(&self) -> &str {
        match self.0.find(':') {
            Some(i) => &self.0[..i],
            None => "",
        }
    }
}

string_traits!(Uri);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(s: &str, ok: bool) {
        assert_eq!(Uri::parse(s).is_ok(), ok, "{s:?}: {:?}", Uri::parse(s));
    }

    #[test]
    fn accepts_and_rejects() {
        check("https://example.com", true);
        check("dns:example.com", true);
        check("microsoft.windows.camera:thing", true);
        check("at://alice.test/app.bsky.feed.post/x", true);
        check("", false);
        check("http:", false);
        check("://example.com", false);
        check("1http://x", false);
        check("example.com", false);
        check("https://exa mple.com", false);
        check("https://exämple.com", false);
        check(&format!("https://example.com/{}", "x".repeat(8200)), false);
    }

    #[test]
    fn scheme() {
        assert_eq!(Uri::parse("https://a").unwrap().scheme(), "https");
    }
}
