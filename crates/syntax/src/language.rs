//! BCP 47 language tags.

use crate::error::{char_at, string_traits, Error, ErrorKind};

/// A BCP 47 language tag, e.g. `en`, `pt-BR` or `zh-Hant`.
///
/// Spec: <https://atproto.com/specs/lexicon#language> and
/// [RFC 5646](https://www.rfc-editor.org/rfc/rfc5646). Build it with
/// [`Language::parse`].
///
/// Syntax (see [`Language::is_valid_syntax`]): the RFC 5646 structure
/// `language[-extlang][-script][-region]*(-variant)*(-extension)[-privateuse]`,
/// a private-use tag (`x-…`), or one of the irregular grandfathered tags
/// (`i-default`, `sgn-BE-NL`, …). As in the atproto reference
/// implementations, the primary language subtag must be 2 or 3 lowercase
/// letters (`JA` and `jaja` are refused). [`Language::parse`] also refuses
/// a variant or an extension singleton that appears twice (case-insensitive),
/// per RFC 5646 section 2.2.9. Registry contents are not checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Language(String);

const IRREGULAR: &[&str] = &[
    "en-GB-oed",
    "i-ami",
    "i-bnn",
    "i-default",
    "i-enochian",
    "i-hak",
    "i-klingon",
    "i-lux",
    "i-mingo",
    "i-navajo",
    "i-pwn",
    "i-tao",
    "i-tay",
    "i-tsu",
    "sgn-BE-FR",
    "sgn-BE-NL",
    "sgn-CH-DE",
];

enum Problem {
    Syntax(String),
    Repeated(String),
}

fn all(sub: &str, f: fn(&u8) -> bool) -> bool {
    sub.as_bytes().iter().all(f)
}

fn is_variant(sub: &str) -> bool {
    let b = sub.as_bytes();
    all(sub, u8::is_ascii_alphanumeric)
        && ((5..=8).contains(&b.len()) || (b.len() == 4 && b[0].is_ascii_digit()))
}

fn check(s: &str) -> Result<(), Problem> {
    let syntax = |m: String| Err(Problem::Syntax(m));
    if s.is_empty() {
        return syntax(
            "expected a language tag such as \"en\" or \"pt-BR\", found an empty string".into(),
        );
    }
    if let Some(i) = s
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'-'))
    {
        return syntax(format!(
            "{:?} is not allowed (expected letters, digits and '-')",
            char_at(s, i)
        ));
    }
    if IRREGULAR.iter().any(|g| g.eq_ignore_ascii_case(s)) {
        return Ok(());
    }
    let mut subtags = s.split('-');
    for sub in s.split('-') {
        if sub.is_empty() {
            return syntax("empty subtag (leading, trailing or doubled '-')".into());
        }
        if sub.len() > 8 {
            return syntax(format!(
                "subtags must be at most 8 characters, found {sub:?}"
            ));
        }
    }
    let primary = subtags.next().unwrap_or("");
    if primary.eq_ignore_ascii_case("x") {
        return if subtags.next().is_some() {
            Ok(())
        } else {
            syntax("expected subtags after the private-use 'x'".into())
        };
    }
    if !(2..=3).contains(&primary.len()) || !all(primary, u8::is_ascii_lowercase) {
        return syntax(format!(
            "primary language subtag must be 2 or 3 lowercase letters, found {primary:?}"
        ));
    }

    // 0: after language, 1: after extlang, 2: after script, 3: after
    // region or variants, 4: in extensions.
    let mut stage = 0u8;
    let mut extlangs = 0;
    let mut variants: Vec<String> = Vec::new();
    let mut singletons = [false; 36];
    let mut repeated: Option<String> = None;
    let mut rest = subtags.peekable();
    while let Some(sub) = rest.next() {
        let len = sub.len();
        if stage <= 1 && extlangs < 3 && len == 3 && all(sub, u8::is_ascii_alphabetic) {
            extlangs += 1;
            stage = 1;
        } else if stage <= 1 && len == 4 && all(sub, u8::is_ascii_alphabetic) {
            stage = 2;
        } else if stage <= 2
            && ((len == 2 && all(sub, u8::is_ascii_alphabetic))
                || (len == 3 && all(sub, u8::is_ascii_digit)))
        {
            stage = 3;
        } else if stage <= 3 && is_variant(sub) {
            stage = 3;
            variants.push(sub.to_ascii_lowercase());
        } else if len == 1 && !sub.eq_ignore_ascii_case("x") {
            stage = 4;
            let c = sub.as_bytes()[0].to_ascii_lowercase();
            let slot = if c.is_ascii_digit() {
                usize::from(c - b'0')
            } else {
                usize::from(c - b'a') + 10
            };
            if singletons[slot] && repeated.is_none() {
                repeated = Some(format!(
                    "extension singleton {:?} appears more than once",
                    char::from(c)
                ));
            }
            singletons[slot] = true;
            let mut n = 0;
            while rest.peek().is_some_and(|next| next.len() >= 2) {
                n += 1;
                rest.next();
            }
            if n == 0 {
                return syntax(format!(
                    "expected subtags of 2 to 8 characters after extension {sub:?}"
                ));
            }
        } else if sub.eq_ignore_ascii_case("x") {
            return if rest.next().is_some() {
                done(repeated, variants)
            } else {
                syntax("expected subtags after the private-use 'x'".into())
            };
        } else {
            return syntax(format!("unexpected subtag {sub:?} at this position"));
        }
    }
    done(repeated, variants)
}

fn done(repeated: Option<String>, mut variants: Vec<String>) -> Result<(), Problem> {
    variants.sort_unstable();
    if let Some(pair) = variants.windows(2).find(|w| w[0] == w[1]) {
        return Err(Problem::Repeated(format!(
            "variant {:?} appears more than once",
            pair[0]
        )));
    }
    match repeated {
        Some(m) => Err(Problem::Repeated(m)),
        None => Ok(()),
    }
}

impl Language {
    /// Parses a language tag, checking the syntax and that no variant or
    /// extension singleton is repeated.
    pub fn parse(s: &str) -> Result<Self, Error> {
        match check(s) {
            Ok(()) => Ok(Language(s.to_owned())),
            Err(Problem::Syntax(m) | Problem::Repeated(m)) => {
                Err(Error::new(ErrorKind::Language, s, m))
            }
        }
    }

    /// Whether `s` is a well-formed tag, ignoring repeated variants and
    /// extension singletons (which [`Language::parse`] refuses).
    pub fn is_valid_syntax(s: &str) -> bool {
        !matches!(check(s), Err(Problem::Syntax(_)))
    }

    /// The tag as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The primary language subtag, e.g. `pt` for `pt-BR`.
    pub fn primary(&self) -> &str {
        self.0.split('-').next().unwrap_or("")
    }
}

string_traits!(Language);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(s: &str, ok: bool) {
        let r = Language::parse(s);
        assert_eq!(r.is_ok(), ok, "{s:?}: {r:?}");
    }

    #[test]
    fn accepts_and_rejects() {
        check("en", true);
        check("pt-BR", true);
        check("zh-yue-HK", true);
        check("sr-Latn-RS", true);
        check("de-CH-1901", true);
        check("x-whatever", true);
        check("en-a-bbb-x-a-ccc", true);
        check("i-klingon", true);
        check("EN", false);
        check("english", false);
        check("en-", false);
        check("en--US", false);
        check("en-US-US", false);
        check("en-a", false);
        check("en-x", false);
        check("en-abcdefghi", false);
        check("", false);
        check("fr-é", false);
    }

    #[test]
    fn repeats() {
        for s in ["de-DE-1901-1901", "en-rozaj-ROZAJ", "en-a-foo-a-bar"] {
            assert!(Language::is_valid_syntax(s), "{s}");
            assert!(Language::parse(s).is_err(), "{s}");
        }
        assert!(Language::parse("en-x-foo-foo").is_ok());
        let e = Language::parse("en-u-co-phonebk-U-ca-buddhist").unwrap_err();
        assert_eq!(e.reason(), "extension singleton 'u' appears more than once");
    }

    #[test]
    fn primary() {
        assert_eq!(Language::parse("pt-BR").unwrap().primary(), "pt");
    }
}
