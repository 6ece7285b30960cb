//! Retention: which records of a selected repo are kept, per tag and collection.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// What one tag keeps of one collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Every record (`*`).
    All,
    /// Only the record with key `self` (`self`), as profiles use.
    SelfOnly,
    /// The N records with the greatest keys (`latest:N`): for TID keys, the newest.
    Latest(u32),
    /// No record (`none`).
    None,
}

impl Policy {
    /// Parses the policy text of a retain entry; the error says what was expected.
    pub fn parse(text: &str) -> Result<Policy, String> {
        match text {
            "*" => Ok(Policy::All),
            "self" => Ok(Policy::SelfOnly),
            "none" => Ok(Policy::None),
            _ => {
                let expected = "expected \"*\", \"self\", \"none\" or \"latest:N\"";
                let Some(count) = text.strip_prefix("latest:") else {
                    return Err(format!("bad policy {text:?}: {expected}"));
                };
                match count.parse::<u32>() {
                    Ok(0) => Err(format!("bad policy {text:?}: N must be at least 1")),
                    Ok(n) if !count.starts_with('+') => Ok(Policy::Latest(n)),
                    _ => Err(format!(
                        "bad policy {text:?}: N must be a whole number from 1 to {}",
                        u32::MAX
                    )),
                }
            }
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::All => f.write_str("*"),
            Policy::SelfOnly => f.write_str("self"),
            Policy::Latest(n) => write!(f, "latest:{n}"),
            Policy::None => f.write_str("none"),
        }
    }
}

/// Which collections a retain entry applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// Every collection (`*`).
    Any,
    /// Collections whose NSID starts with these segments (`app.bsky.*`); stored with the trailing
    /// dot (`app.bsky.`).
    Prefix(String),
    /// One collection.
    Exact(String),
}

impl Pattern {
    /// Parses a collection pattern: `*`, an NSID, or NSID segments followed by `.*`.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let bad = |why: String| {
            format!(
                "bad collection pattern {text:?}: {why}; expected \"*\", an NSID or an NSID prefix such as \"app.bsky.*\""
            )
        };
        if text == "*" {
            return Ok(Pattern::Any);
        }
        if let Some(prefix) = text.strip_suffix(".*") {
            check_prefix(prefix).map_err(bad)?;
            return Ok(Pattern::Prefix(format!("{prefix}.")));
        }
        if text.contains('*') {
            return Err(bad("'*' may only stand alone or as the last segment".into()));
        }
        butterfly_syntax::Nsid::parse(text)
            .map(|_| Pattern::Exact(text.to_owned()))
            .map_err(|e| bad(e.reason().to_owned()))
    }

    /// Whether this pattern covers `collection`.
    pub fn matches(&self, collection: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Prefix(prefix) => collection.starts_with(prefix.as_str()),
            Pattern::Exact(nsid) => collection == nsid,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Any => f.write_str("*"),
            Pattern::Prefix(prefix) => write!(f, "{prefix}*"),
            Pattern::Exact(nsid) => f.write_str(nsid),
        }
    }
}

/// Checks the segments before `.*`: the leading segments of an NSID (letters, digits and inner
/// '-', at most 63 characters each, the first not starting with a digit).
fn check_prefix(prefix: &str) -> Result<(), String> {
    for (i, segment) in prefix.split('.').enumerate() {
        if segment.is_empty() {
            return Err("empty segment (leading or doubled '.')".into());
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!("{c:?} is not allowed in segment {segment:?}"));
        }
        if segment.len() > 63 {
            return Err(format!("segment {segment:?} is longer than 63 characters"));
        }
        if segment.starts_with('-') || segment.ends_with('-') {
            return Err(format!(
                "segment {segment:?} must not start or end with '-'"
            ));
        }
        if i == 0 && segment.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!(
                "first segment {segment:?} must not start with a digit"
            ));
        }
    }
    Ok(())
}

/// One tag's retain entries, arranged for the most-specific lookup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct TagRules {
    exact: HashMap<String, Policy>,
    /// Longest prefix first, so the first match is the most specific.
    prefixes: Vec<(String, Policy)>,
    any: Option<Policy>,
}

impl TagRules {
    fn policy(&self, collection: &str) -> Policy {
        if let Some(policy) = self.exact.get(collection) {
            return *policy;
        }
        for (prefix, policy) in &self.prefixes {
            if collection.starts_with(prefix.as_str()) {
                return *policy;
            }
        }
        self.any.unwrap_or(Policy::None)
    }

    fn keeps_anything(&self) -> bool {
        let policies = self
            .exact
            .values()
            .chain(self.prefixes.iter().map(|(_, p)| p));
        policies.chain(self.any.iter()).any(|p| *p != Policy::None)
    }
}

/// The `retain` section: for each tag, what it keeps of each collection.
///
/// Within a tag the most specific pattern wins: an exact NSID, then the longest prefix, then `*`;
/// a collection no pattern covers keeps nothing, and so does a tag with no entry. When the whole
/// section is absent, every tag keeps everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// `None` when the document had no `retain` section.
    tags: Option<HashMap<String, TagRules>>,
}

impl Retention {
    /// Every tag keeps every record: the meaning of a document without `retain`.
    pub fn keep_all() -> Retention {
        Retention { tags: None }
    }

    /// Builds the rules from each tag's (pattern, policy) entries. A later entry with the same
    /// pattern replaces an earlier one.
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a str, Vec<(Pattern, Policy)>)>,
    ) -> Retention {
        let mut tags = HashMap::new();
        for (tag, rules) in entries {
            let mut exact = HashMap::new();
            let mut prefixes = BTreeMap::new();
            let mut any = None;
            for (pattern, policy) in rules {
                match pattern {
                    Pattern::Any => any = Some(policy),
                    Pattern::Prefix(prefix) => {
                        prefixes.insert(prefix, policy);
                    }
                    Pattern::Exact(nsid) => {
                        exact.insert(nsid, policy);
                    }
                }
            }
            let mut prefixes: Vec<(String, Policy)> = prefixes.into_iter().collect();
            prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
            tags.insert(
                tag.to_owned(),
                TagRules {
                    exact,
                    prefixes,
                    any,
                },
            );
        }
        Retention { tags: Some(tags) }
    }

    /// What `tag` keeps of `collection`: its most specific matching entry.
    pub fn policy(&self, tag: &str, collection: &str) -> Policy {
        match &self.tags {
            None => Policy::All,
            Some(tags) => tags
                .get(tag)
                .map_or(Policy::None, |rules| rules.policy(collection)),
        }
    }

    /// The patterns of a tag's entries, as written (`*`, `app.bsky.*`, exact NSIDs); empty for a
    /// tag with no entry or a document without `retain`. Lets a caller compare what two tag sets
    /// keep, one collection per region the patterns carve out.
    pub fn patterns(&self, tag: &str) -> Vec<String> {
        let Some(rules) = self.tags.as_ref().and_then(|tags| tags.get(tag)) else {
            return Vec::new();
        };
        let mut patterns: Vec<String> = rules.exact.keys().cloned().collect();
        patterns.extend(
            rules
                .prefixes
                .iter()
                .map(|(prefix, _)| format!("{prefix}*")),
        );
        if rules.any.is_some() {
            patterns.push("*".into());
        }
        patterns.sort();
        patterns
    }

    /// What a repo with these tags keeps of `collection`: a record is kept if any tag keeps it.
    pub fn keep<'a>(&self, tags: impl IntoIterator<Item = &'a str>, collection: &str) -> Keep {
        let mut keep = Keep::default();
        for tag in tags {
            keep.add(self.policy(tag, collection));
            if keep.all {
                break;
            }
        }
        keep
    }

    /// Whether a repo with these tags keeps any record at all, so is worth fetching for its
    /// records rather than only for its graph edges.
    pub fn keeps_anything<'a>(&self, tags: impl IntoIterator<Item = &'a str>) -> bool {
        let Some(rules) = &self.tags else {
            return tags.into_iter().next().is_some();
        };
        tags.into_iter()
            .any(|tag| rules.get(tag).is_some_and(TagRules::keeps_anything))
    }
}

/// What a set of tags keeps of one collection: the union of each tag's most specific policy.
///
/// When `all` is set the other fields are `false` and 0, so equal unions compare equal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Keep {
    /// Every record.
    pub all: bool,
    /// The record with key `self`.
    pub self_rkey: bool,
    /// The records with the greatest keys, this many; 0 for none.
    pub latest: u32,
}

impl Keep {
    /// Every record.
    pub fn everything() -> Keep {
        Keep {
            all: true,
            self_rkey: false,
            latest: 0,
        }
    }

    /// Adds one tag's policy to the union.
    pub fn add(&mut self, policy: Policy) {
        if self.all {
            return;
        }
        match policy {
            Policy::All => *self = Keep::everything(),
            Policy::SelfOnly => self.self_rkey = true,
            Policy::Latest(n) => self.latest = self.latest.max(n),
            Policy::None => {}
        }
    }

    /// Whether no record of the collection is kept.
    pub fn nothing(&self) -> bool {
        !self.all && !self.self_rkey && self.latest == 0
    }

    /// Whether every record of the collection is kept.
    pub fn keeps_everything(&self) -> bool {
        self.all
    }

    /// Whether the record with key `rkey` is kept, given `rank`: how many records of the
    /// collection have a greater key (0 for the newest).
    pub fn keeps(&self, rkey: &str, rank: u64) -> bool {
        self.all || (self.self_rkey && rkey == "self") || rank < u64::from(self.latest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_policy(text: &str, expected: Result<Policy, &str>) {
        assert_eq!(
            Policy::parse(text),
            expected.map_err(str::to_owned),
            "{text:?}"
        );
    }

    #[test]
    fn policies() {
        check_policy("*", Ok(Policy::All));
        check_policy("self", Ok(Policy::SelfOnly));
        check_policy("none", Ok(Policy::None));
        check_policy("latest:10", Ok(Policy::Latest(10)));
        check_policy(
            "latest:0",
            Err("bad policy \"latest:0\": N must be at least 1"),
        );
        check_policy(
            "latest:+3",
            Err("bad policy \"latest:+3\": N must be a whole number from 1 to 4294967295"),
        );
        check_policy(
            "latest:",
            Err("bad policy \"latest:\": N must be a whole number from 1 to 4294967295"),
        );
        check_policy(
            "all",
            Err("bad policy \"all\": expected \"*\", \"self\", \"none\" or \"latest:N\""),
        );
        for policy in [
            Policy::All,
            Policy::SelfOnly,
            Policy::Latest(3),
            Policy::None,
        ] {
            assert_eq!(Policy::parse(&policy.to_string()), Ok(policy));
        }
    }

    fn check_pattern(text: &str, expected: Result<Pattern, &str>) {
        let got = Pattern::parse(text);
        match expected {
            Ok(pattern) => assert_eq!(got, Ok(pattern), "{text:?}"),
            Err(start) => {
                let message = got.expect_err(text);
                assert!(message.starts_with(start), "{text:?}: {message}");
            }
        }
    }

    #[test]
    fn patterns() {
        check_pattern("*", Ok(Pattern::Any));
        check_pattern("app.*", Ok(Pattern::Prefix("app.".into())));
        check_pattern(
            "app.bsky.feed.*",
            Ok(Pattern::Prefix("app.bsky.feed.".into())),
        );
        check_pattern(
            "app.bsky.feed.post",
            Ok(Pattern::Exact("app.bsky.feed.post".into())),
        );
        check_pattern(
            "*.bsky",
            Err("bad collection pattern \"*.bsky\": '*' may only"),
        );
        check_pattern(
            "app.b*",
            Err("bad collection pattern \"app.b*\": '*' may only"),
        );
        check_pattern(
            "app..*",
            Err("bad collection pattern \"app..*\": empty segment"),
        );
        check_pattern(".*", Err("bad collection pattern \".*\": empty segment"));
        check_pattern(
            "1app.*",
            Err("bad collection pattern \"1app.*\": first segment"),
        );
        check_pattern(
            "app.bsky",
            Err("bad collection pattern \"app.bsky\": expected at least three"),
        );
        for text in ["*", "app.*", "app.bsky.feed.post"] {
            assert_eq!(
                Pattern::parse(text).map(|p| p.to_string()),
                Ok(text.to_owned())
            );
        }
        assert!(Pattern::parse("app.bsky.*").is_ok_and(|p| p.matches("app.bsky.feed.post")));
        assert!(Pattern::parse("app.bsky.*").is_ok_and(|p| !p.matches("app.bskyx.feed.post")));
    }
}
