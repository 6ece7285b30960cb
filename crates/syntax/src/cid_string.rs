//! CID strings, checked for shape only.

use crate::error::{char_at, string_traits, Error, ErrorKind};

/// A CID in string form, e.g.
/// `bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm`.
///
/// Spec: <https://atproto.com/specs/lexicon#cid> and
/// <https://atproto.com/specs/data-model#link-and-cid-formats>. Build it
/// with [`CidString::parse`].
///
/// This is a **syntax-only** check, like the atproto reference
/// implementations: 8 to 256 characters of ASCII letters, digits, `+` and
/// `=`, not starting with `Qm` (CIDv0 is not supported). The multibase
/// string is not decoded, so a string that passes may still not be a real
/// CID; decoding belongs to the data-model crate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CidString(String);

/// Minimum length of a CID string.
pub const MIN_CID_STRING_LEN: usize = 8;
/// Maximum length of a CID string.
pub const MAX_CID_STRING_LEN: usize = 256;

fn check(s: &str) -> Result<(), String> {
    if let Some(i) = s
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'+' || b == b'='))
    {
        return Err(format!(
            "{:?} is not allowed (expected letters, digits, '+' and '=')",
            char_at(s, i)
        ));
    }
    if !(MIN_CID_STRING_LEN..=MAX_CID_STRING_LEN).contains(&s.len()) {
        return Err(format!(
            "expected {MIN_CID_STRING_LEN} to {MAX_CID_STRING_LEN} characters, found {}",
            s.len()
        ));
    }
    if s.starts_with("Qm") {
        return Err("CIDv0 (\"Qm…\") is not supported, expected a multibase CIDv1".into());
    }
    Ok(())
}

impl CidString {
    /// Checks the shape of a CID string.
    pub fn parse(s: &str) -> Result<Self, Error> {
        check(s)
            .map(|()| CidString(s.to_owned()))
            .map_err(|reason| Error::new(ErrorKind::CidString, s, reason))
    }

    /// The CID string as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_traits!(CidString);

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str, ok: bool) {
        assert_eq!(
            CidString::parse(s).is_ok(),
            ok,
            "{s:?}: {:?}",
            CidString::parse(s)
        );
    }

    #[test]
    fn accepts_and_rejects() {
        check(
            "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
            true,
        );
        check("mBcDxtdWx0aWhhc2g+", true);
        check("QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR", false);
        check("short", false);
        check("bafy rei", false);
        check("", false);
        check(&"b".repeat(257), false);
        check("bafyreié5737gdxlw", false);
    }
}
