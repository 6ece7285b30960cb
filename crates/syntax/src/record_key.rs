//! Record keys: the last part of a record's path in a repository.

use crate::error::{char_at, string_traits, Error, ErrorKind};

/// A record key, e.g. `3jzfcijpj2z2a` or `self`.
///
/// Spec: <https://atproto.com/specs/record-key>. Build it with
/// [`RecordKey::parse`].
///
/// Rules checked: 1 to 512 characters from `A-Z a-z 0-9 . - _ : ~`, and not
/// exactly `.` or `..`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey(String);

/// Maximum length of a record key, in bytes.
pub const MAX_RECORD_KEY_LEN: usize = 512;

pub(crate) fn is_rkey_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'~')
}

pub(crate) fn check(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("expected 1 to 512 characters, found an empty string".into());
    }
    if let Some(i) = s.bytes().position(|b| !is_rkey_byte(b)) {
        return Err(format!(
            "{:?} is not allowed (expected letters, digits and .-_:~)",
            char_at(s, i)
        ));
    }
    if s.len() > MAX_RECORD_KEY_LEN {
        return Err(format!(
            "must be at most {MAX_RECORD_KEY_LEN} characters, found {}",
            s.len()
        ));
    }
    if s == "." || s == ".." {
        return Err("\".\" and \"..\" are not allowed".into());
    }
    Ok(())
}

impl RecordKey {
    /// Parses and validates a record key.
    pub fn parse(s: &str) -> Result<Self, Error> {
        check(s)
            .map(|()| RecordKey(s.to_owned()))
            .map_err(|reason| Error::new(ErrorKind::RecordKey, s, reason))
    }

    /// The record key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_traits!(RecordKey);

impl From<crate::Tid> for RecordKey {
    /// Every TID is a valid record key.
    fn from(tid: crate::Tid) -> Self {
        RecordKey(String::from(tid))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(s: &str, ok: bool) {
        assert_eq!(
            RecordKey::parse(s).is_ok(),
            ok,
            "{s:?}: {:?}",
            RecordKey::parse(s)
        );
    }

    #[test]
    fn accepts_and_rejects() {
        check("self", true);
        check("3jzfcijpj2z2a", true);
        check("~1.2-3_", true);
        check("...", true);
        check(&"o".repeat(512), true);
        check("", false);
        check(".", false);
        check("..", false);
        check("a b", false);
        check("ü", false);
        check(&"o".repeat(513), false);
    }

    #[test]
    fn message() {
        let e = RecordKey::parse("a/b").unwrap_err();
        assert_eq!(
            e.to_string(),
            "record key \"a/b\": '/' is not allowed (expected letters, digits and .-_:~)"
        );
    }

    #[test]
    fn from_tid() {
        let tid = crate::Tid::parse("3jzfcijpj2z2a").unwrap();
        assert_eq!(RecordKey::from(tid).as_str(), "3jzfcijpj2z2a");
    }
}
