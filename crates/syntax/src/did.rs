//! Decentralized identifiers (`did:method:identifier`).

use crate::error::{char_at, string_traits, Error, ErrorKind};

/// A DID in the generic syntax atproto accepts, e.g. `did:plc:ewvi7nxzyoun6zhxrhs64oiz`.
///
/// Spec: <https://atproto.com/specs/did>. Build it with [`Did::parse`].
///
/// Rules checked: lowercase `did:` prefix, a method of one or more lowercase
/// letters, then an identifier of ASCII letters, digits and `._:%-` that does
/// not end with `:` or `%`; at most 2048 characters. As the spec allows,
/// percent-encoding is not decoded or checked further. Only the syntax is
/// checked: the method is not required to be `plc` or `web`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Did(String);

/// Maximum length of a DID, in bytes.
pub const MAX_DID_LEN: usize = 2048;

fn is_base32_lower(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'2'..=b'7')
}

/// Fast accept for the overwhelmingly common `did:plc:` + 24 base32 form.
fn is_plain_plc(s: &[u8]) -> bool {
    s.len() == 32 && s.starts_with(b"did:plc:") && s[8..].iter().all(|&b| is_base32_lower(b))
}

pub(crate) fn check(s: &str) -> Result<(), String> {
    let bytes = s.as_bytes();
    if is_plain_plc(bytes) {
        return Ok(());
    }
    if s.is_empty() {
        return Err("expected \"did:method:identifier\", found an empty string".into());
    }
    if bytes.len() > MAX_DID_LEN {
        return Err(format!(
            "must be at most {MAX_DID_LEN} characters, found {}",
            bytes.len()
        ));
    }
    if !bytes.starts_with(b"did:") {
        return Err("expected lowercase \"did:\" prefix".into());
    }
    let rest = &bytes[4..];
    let method_len = rest
        .iter()
        .position(|&b| !b.is_ascii_lowercase())
        .unwrap_or(rest.len());
    if method_len == 0 {
        return match rest.first() {
            None => Err("expected a method after \"did:\", found nothing".into()),
            Some(_) => Err(format!(
                "method must be lowercase letters a-z, found {:?}",
                char_at(s, 4)
            )),
        };
    }
    match rest.get(method_len) {
        None => return Err("expected ':' after the method, found end of input".into()),
        Some(b':') => {}
        Some(_) => {
            return Err(format!(
                "method must be lowercase letters a-z, found {:?}",
                char_at(s, 4 + method_len)
            ))
        }
    }
    let id_start = 4 + method_len + 1;
    let id = &bytes[id_start..];
    if id.is_empty() {
        return Err("expected an identifier after the method, found nothing".into());
    }
    if let Some(i) = id.iter().position(|&b| {
        !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'%' | b'-'))
    }) {
        return Err(format!(
            "{:?} is not allowed (expected letters, digits and ._:%-)",
            char_at(s, id_start + i)
        ));
    }
    match id.last() {
        Some(b':') => Err("must not end with ':'".into()),
        Some(b'%') => Err("must not end with '%'".into()),
        _ => Ok(()),
    }
}

impl Did {
    /// Parses and validates a DID.
    pub fn parse(s: &str) -> Result<Self, Error> {
        check(s)
            .map(|()| Did(s.to_owned()))
            .map_err(|reason| Error::new(ErrorKind::Did, s, reason))
    }

    /// The DID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The method, e.g. `plc` for `did:plc:…`.
    pub fn method(&self) -> &str {
        let rest = &self.0[4..];
        match rest.find(':') {
            Some(end) => &rest[..end],
            None => rest,
        }
    }

    /// The method-specific identifier, everything after `did:method:`.
    pub fn identifier(&self) -> &str {
        let rest = &self.0[4..];
        match rest.find(':') {
            Some(end) => &rest[end + 1..],
            None => "",
        }
    }

    /// Whether this is a `did:plc:` DID.
    pub fn is_plc(&self) -> bool {
        self.0.starts_with("did:plc:")
    }

    /// Whether this is a `did:web:` DID.
    pub fn is_web(&self) -> bool {
        self.0.starts_with("did:web:")
    }
}

string_traits!(Did);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(s: &str, ok: bool) {
        assert_eq!(Did::parse(s).is_ok(), ok, "{s:?}: {:?}", Did::parse(s));
    }

    #[test]
    fn accepts_and_rejects() {
        check("did:plc:ewvi7nxzyoun6zhxrhs64oiz", true);
        check("did:plc:asdf123", true);
        check("did:web:localhost%3A1234", true);
        check("did:m:v", true);
        check("did:plc:EWVI7NXZYOUN6ZHXRHS64OIZ", true);
        check("", false);
        check("did:", false);
        check("did:plc", false);
        check("did:plc:", false);
        check("did:Plc:x", false);
        check("did:plc:x:", false);
        check("did:plc:x%", false);
        check("did:plc:é", false);
        check(&format!("did:plc:{}", "a".repeat(2048)), false);
    }

    #[test]
    fn parts() {
        let d = Did::parse("did:web:example.com").unwrap();
        assert_eq!(d.method(), "web");
        assert_eq!(d.identifier(), "example.com");
        assert!(d.is_web());
        assert!(!d.is_plc());
        let p: Did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz".parse().unwrap();
        assert!(p.is_plc());
        assert_eq!(p.to_string(), "did:plc:ewvi7nxzyoun6zhxrhs64oiz");
    }

    #[test]
    fn message() {
        let e = Did::parse("did:m123:val").unwrap_err();
        assert_eq!(
            e.to_string(),
            "did \"did:m123:val\": method must be lowercase letters a-z, found '1'"
        );
    }
}
