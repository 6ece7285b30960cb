//! The one error type of this crate.

use std::fmt;

/// Which kind of identifier failed to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A [`Did`](crate::Did).
    Did,
    /// A [`Handle`](crate::Handle).
    Handle,
    /// An [`Nsid`](crate::Nsid).
    Nsid,
    /// An [`AtIdentifier`](crate::AtIdentifier).
    AtIdentifier,
    /// A [`RecordKey`](crate::RecordKey).
    RecordKey,
    /// A [`Tid`](crate::Tid).
    Tid,
    /// An [`AtUri`](crate::AtUri).
    AtUri,
    /// A [`Datetime`](crate::Datetime).
    Datetime,
    /// A [`Language`](crate::Language).
    Language,
    /// A [`CidString`](crate::CidString).
    CidString,
    /// A [`Uri`](crate::Uri).
    Uri,
}

impl ErrorKind {
    /// The lowercase noun used in error messages, e.g. `"record key"`.
    pub fn noun(self) -> &'static str {
        match self {
            ErrorKind::Did => "did",
            ErrorKind::Handle => "handle",
            ErrorKind::Nsid => "nsid",
            ErrorKind::AtIdentifier => "at-identifier",
            ErrorKind::RecordKey => "record key",
            ErrorKind::Tid => "tid",
            ErrorKind::AtUri => "at-uri",
            ErrorKind::Datetime => "datetime",
            ErrorKind::Language => "language tag",
            ErrorKind::CidString => "cid string",
            ErrorKind::Uri => "uri",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noun())
    }
}

/// Longest input (in characters) kept in an [`Error`]; longer input is cut
/// and ends with `…`.
const MAX_INPUT_CHARS: usize = 100;

/// An identifier string did not have the expected syntax.
///
/// Displays as `<kind> "<input>": <reason>`, for example
/// `record key "a/b": '/' is not allowed`. The input is truncated to about
/// 100 characters so hostile input cannot blow up logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {input:?}: {reason}")]
pub struct Error {
    kind: ErrorKind,
    input: String,
    reason: String,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, input: &str, reason: impl Into<String>) -> Self {
        let input = match input.char_indices().nth(MAX_INPUT_CHARS) {
            Some((cut, _)) => format!("{}…", &input[..cut]),
            None => input.to_owned(),
        };
        Error {
            kind,
            input,
            reason: reason.into(),
        }
    }

    /// Which kind of identifier was expected.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The rejected input, cut to about 100 characters.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What was wrong, without the kind and the input.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// The character starting at byte `i` of `s`, for messages.
pub(crate) fn char_at(s: &str, i: usize) -> char {
    s.get(i..)
        .and_then(|rest| rest.chars().next())
        .unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// Implements `FromStr`, `TryFrom<&str>`, `Display`, `AsRef<str>` and
/// `From<T> for String` for a type that has `parse` and `as_str`.
macro_rules! string_traits {
    ($ty:ty) => {
        impl ::std::str::FromStr for $ty {
            type Err = $crate::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$ty>::parse(s)
            }
        }

        impl ::std::convert::TryFrom<&str> for $ty {
            type Error = $crate::Error;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                <$ty>::parse(s)
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::convert::AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl ::std::convert::From<$ty> for String {
            fn from(value: $ty) -> String {
                value.as_str().to_owned()
            }
        }
    };
}

pub(crate) use string_traits;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_format() {
        let e = Error::new(ErrorKind::RecordKey, "a/b", "'/' is not allowed");
        assert_eq!(e.to_string(), r#"record key "a/b": '/' is not allowed"#);
    }

    #[test]
    fn long_input_is_cut() {
        let long = "é".repeat(500);
        let e = Error::new(ErrorKind::Uri, &long, "too long");
        assert_eq!(e.input().chars().count(), MAX_INPUT_CHARS + 1);
        assert!(e.input().ends_with('…'));
    }
}
