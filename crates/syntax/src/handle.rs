//! Handles: DNS names used as human-friendly account names.

use crate::error::{char_at, string_traits, Error, ErrorKind};

/// A handle, e.g. `alice.bsky.social`.
///
/// Spec: <https://atproto.com/specs/handle>. Build it with [`Handle::parse`].
///
/// Rules checked: ASCII letters, digits, `-` and `.` only; at most 253
/// characters; at least two segments of 1 to 63 characters that neither start
/// nor end with `-`; the last segment (top-level domain) does not start with a
/// digit. TLDs such as `.local` or `.invalid` are syntactically fine and are
/// accepted here; whether they may be used is policy, not syntax.
///
/// Case: the string is **stored exactly as given**, so `as_str` and `Display`
/// round-trip and `Eq` is byte equality. Handles are case-insensitive: call
/// [`Handle::normalized`] to get the lowercase form before comparing or using
/// one as a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(String);

/// Maximum length of a handle, in bytes.
pub const MAX_HANDLE_LEN: usize = 253;

/// Maximum length of one segment (DNS label) of a handle or NSID.
pub(crate) const MAX_LABEL_LEN: usize = 63;

/// Checks one DNS label: 1..=63 of `[A-Za-z0-9-]`, no `-` at either end.
/// `offset` is the label's byte position in `whole`, for messages.
pub(crate) fn check_label(whole: &str, offset: usize, label: &str) -> Result<(), String> {
    let bytes = label.as_bytes();
    if bytes.is_empty() {
        return Err("empty segment (leading, trailing or doubled '.')".into());
    }
    if let Some(i) = bytes
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'-'))
    {
        return Err(format!(
            "{:?} is not allowed (expected letters, digits, '-' and '.')",
            char_at(whole, offset + i)
        ));
    }
    if bytes.len() > MAX_LABEL_LEN {
        return Err(format!(
            "segments must be at most {MAX_LABEL_LEN} characters, found one of {}",
            bytes.len()
        ));
    }
    if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
        return Err(format!("segment {label:?} must not start or end with '-'"));
    }
    Ok(())
}

pub(crate) fn check(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("expected a domain name, found an empty string".into());
    }
    let mut offset = 0;
    let mut count = 0usize;
    let mut last = "";
    for label in s.split('.') {
        check_label(s, offset, label)?;
        offset += label.len() + 1;
        count += 1;
        last = label;
    }
    if s.len() > MAX_HANDLE_LEN {
        return Err(format!(
            "must be at most {MAX_HANDLE_LEN} characters, found {}",
            s.len()
        ));
    }
    if count < 2 {
        return Err("expected at least two segments separated by '.'".into());
    }
    if last.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return Err(format!(
            "top-level domain {last:?} must not start with a digit"
        ));
    }
    Ok(())
}

impl Handle {
    /// The special handle shown for accounts whose handle failed
    /// verification: `handle.invalid`.
    pub const INVALID: &'static str = "handle.invalid";

    /// Parses and validates a handle (case is kept as given).
    pub fn parse(s: &str) -> Result<Self, Error> {
        check(s)
            .map(|()| Handle(s.to_owned()))
            .map_err(|reason| Error::new(ErrorKind::Handle, s, reason))
    }

    /// The handle as given to `parse`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same handle in lowercase, the canonical form.
    pub fn normalized(&self) -> Handle {
        Handle(self.0.to_ascii_lowercase())
    }

    /// Whether this is the [`Handle::INVALID`] marker (any case).
    pub fn is_invalid_marker(&self) -> bool {
        self.0.eq_ignore_ascii_case(Self::INVALID)
    }
}

string_traits!(Handle);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(s: &str, ok: bool) {
        assert_eq!(
            Handle::parse(s).is_ok(),
            ok,
            "{s:?}: {:?}",
            Handle::parse(s)
        );
    }

    #[test]
    fn accepts_and_rejects() {
        check("alice.bsky.social", true);
        check("XX.LCS.MIT.EDU", true);
        check("john.t--t", true);
        check("8.cn", true);
        check("handle.invalid", true);
        check("", false);
        check(".", false);
        check("john", false);
        check("john.0", false);
        check("john.test.", false);
        check("-john.test", false);
        check("jo_hn.test", false);
        check("büch.test", false);
        check(&format!("a.{}", "b".repeat(64)), false);
        check(&format!("{}.test", "a.".repeat(130)), false);
    }

    #[test]
    fn normalization_and_marker() {
        let h = Handle::parse("Alice.Bsky.Social").unwrap();
        assert_eq!(h.as_str(), "Alice.Bsky.Social");
        assert_eq!(h.normalized().as_str(), "alice.bsky.social");
        assert!(Handle::parse("Handle.Invalid").unwrap().is_invalid_marker());
        assert!(!h.is_invalid_marker());
    }

    #[test]
    fn message() {
        let e = Handle::parse("jo/hn.test").unwrap_err();
        assert_eq!(
            e.to_string(),
            "handle \"jo/hn.test\": '/' is not allowed (expected letters, digits, '-' and '.')"
        );
    }
}
