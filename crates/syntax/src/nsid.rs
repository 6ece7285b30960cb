//! Namespaced identifiers (NSIDs) naming Lexicon schemas.

use crate::error::{char_at, string_traits, Error, ErrorKind};
use crate::handle::{check_label, MAX_LABEL_LEN};

/// An NSID, e.g. `app.bsky.feed.post`: a reversed domain authority
/// (`app.bsky`) and a name (`post`).
///
/// Spec: <https://atproto.com/specs/nsid>. Build it with [`Nsid::parse`].
///
/// Rules checked: ASCII only; at least three segments; at most 317
/// characters; authority segments are DNS labels (1 to 63 of letters, digits
/// and `-`, no `-` at either end) and the first one does not start with a
/// digit; the name is 1 to 63 letters and digits and does not start with a
/// digit. Like the reference implementations (and the interop vectors), the
/// 253-character limit on the authority alone is not enforced, only the
/// overall 317. Case is kept as given.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nsid(String);

/// Maximum length of an NSID, in bytes.
pub const MAX_NSID_LEN: usize = 317;

pub(crate) fn check(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("expected a reversed domain and a name, found an empty string".into());
    }
    if let Some(i) = s
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    {
        return Err(format!(
            "{:?} is not allowed (expected letters, digits, '-' and '.')",
            char_at(s, i)
        ));
    }
    if s.len() > MAX_NSID_LEN {
        return Err(format!(
            "must be at most {MAX_NSID_LEN} characters, found {}",
            s.len()
        ));
    }
    let Some(dot) = s.rfind('.') else {
        return Err("expected at least three segments separated by '.', found one".into());
    };
    let (authority, name) = (&s[..dot], &s[dot + 1..]);
    let mut offset = 0;
    let mut count = 0usize;
    for label in authority.split('.') {
        check_label(s, offset, label)?;
        if count == 0 && label.as_bytes()[0].is_ascii_digit() {
            return Err(format!(
                "first segment {label:?} must not start with a digit"
            ));
        }
        offset += label.len() + 1;
        count += 1;
    }
    if count < 2 {
        return Err("expected at least three segments separated by '.', found two".into());
    }
    let nb = name.as_bytes();
    if nb.is_empty() {
        return Err("expected a name after the last '.', found nothing".into());
    }
    if nb.contains(&b'-') {
        return Err(format!(
            "name {name:?} must be letters and digits only, found '-'"
        ));
    }
    if nb.len() > MAX_LABEL_LEN {
        return Err(format!(
            "name must be at most {MAX_LABEL_LEN} characters, found {}",
            nb.len()
        ));
    }
    if nb[0].is_ascii_digit() {
        return Err(format!("name {name:?} must not start with a digit"));
    }
    Ok(())
}

impl Nsid {
    /// Parses and validates an NSID.
    pub fn parse(s: &str) -> Result<Self, Error> {
        check(s)
            .map(|()| Nsid(s.to_owned()))
            .map_err(|reason| Error::new(ErrorKind::Nsid, s, reason))
    }

    /// The NSID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn last_dot(&self) -> usize {
        self.0.rfind('.').unwrap_or(0)
    }

    /// The domain authority in normal domain order, e.g. `bsky.app` for
    /// `app.bsky.feed.post`.
    pub fn authority(&self) -> String {
        let mut out = String::with_capacity(self.last_dot());
        for (i, label) in self.namespace().rsplit('.').enumerate() {
            if i > 0 {
                out.push('.');
            }
            out.push_str(label);
        }
        out
    }

    /// Everything before the name, as written, e.g. `app.bsky.feed` for
    /// `app.bsky.feed.post`.
    pub fn namespace(&self) -> &str {
        &self.0[..self.last_dot()]
    }

    /// The name (last segment), e.g. `post` for `app.bsky.feed.post`.
    pub fn name(&self) -> &str {
        &self.0[self.last_dot() + 1..]
    }
}

string_traits!(Nsid);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(s: &str, ok: bool) {
        assert_eq!(Nsid::parse(s).is_ok(), ok, "{s:?}: {:?}", Nsid::parse(s));
    }

    #[test]
    fn accepts_and_rejects() {
        check("app.bsky.feed.post", true);
        check("a.0.c", true);
        check("com.example.fooBarV2", true);
        check("", false);
        check("a.b", false);
        check("a.b.", false);
        check(".a.b.c", false);
        check("1.b.c", false);
        check("a.b.c-d", false);
        check("a.b.2c", false);
        check("a.b-.c", false);
        check("a.b.c d", false);
        check("a.é.c", false);
    }

    #[test]
    fn parts() {
        let n = Nsid::parse("app.bsky.feed.post").unwrap();
        assert_eq!(n.authority(), "feed.bsky.app");
        assert_eq!(n.namespace(), "app.bsky.feed");
        assert_eq!(n.name(), "post");
    }
}
