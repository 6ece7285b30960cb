//! An account reference that is either a DID or a handle.

use crate::error::{string_traits, Error, ErrorKind};
use crate::{Did, Handle};

/// A DID or a handle, as accepted in the authority of an AT-URI and in
/// many XRPC parameters.
///
/// Spec: <https://atproto.com/specs/lexicon#at-identifier>. Build it with
/// [`AtIdentifier::parse`]: input starting with `did:` is parsed as a
/// [`Did`], anything else as a [`Handle`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AtIdentifier {
    /// A DID.
    Did(Did),
    /// A handle.
    Handle(Handle),
}

impl AtIdentifier {
    /// Parses a DID (if the input starts with `did:`) or else a handle.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let result = if s.starts_with("did:") {
            Did::parse(s).map(AtIdentifier::Did)
        } else {
            Handle::parse(s).map(AtIdentifier::Handle)
        };
        result.map_err(|inner| Error::new(ErrorKind::AtIdentifier, s, inner.reason()))
    }

    /// The identifier as a string.
    pub fn as_str(&self) -> &str {
        match self {
            AtIdentifier::Did(d) => d.as_str(),
            AtIdentifier::Handle(h) => h.as_str(),
        }
    }

    /// The DID, if this is one.
    pub fn as_did(&self) -> Option<&Did> {
        match self {
            AtIdentifier::Did(d) => Some(d),
            AtIdentifier::Handle(_) => None,
        }
    }

    /// The handle, if this is one.
    pub fn as_handle(&self) -> Option<&Handle> {
        match self {
            AtIdentifier::Did(_) => None,
            AtIdentifier::Handle(h) => Some(h),
        }
    }

    /// Whether this is a DID.
    pub fn is_did(&self) -> bool {
        matches!(self, AtIdentifier::Did(_))
    }

    /// Whether this is a handle.
    pub fn is_handle(&self) -> bool {
        matches!(self, AtIdentifier::Handle(_))
    }
}

impl From<Did> for AtIdentifier {
    fn from(d: Did) -> Self {
        AtIdentifier::Did(d)
    }
}

impl From<Handle> for AtIdentifier {
    fn from(h: Handle) -> Self {
        AtIdentifier::Handle(h)
    }
}

string_traits!(AtIdentifier);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(s: &str, ok: bool) {
        let r = AtIdentifier::parse(s);
        assert_eq!(r.is_ok(), ok, "{s:?}: {r:?}");
        if let Ok(v) = r {
            assert_eq!(v.as_str(), s);
        }
    }

    #[test]
    fn accepts_and_rejects() {
        check("did:plc:ewvi7nxzyoun6zhxrhs64oiz", true);
        check("alice.test", true);
        check("did:thing.test", false);
        check("@alice.test", false);
        check("", false);
    }

    #[test]
    fn variants() {
        assert!(AtIdentifier::parse("did:web:a.b").unwrap().is_did());
        let h = AtIdentifier::parse("a.b").unwrap();
        assert!(h.is_handle());
        assert_eq!(h.as_handle().unwrap().as_str(), "a.b");
        assert!(h.as_did().is_none());
        let e = AtIdentifier::parse("did:x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AtIdentifier);
    }
}
