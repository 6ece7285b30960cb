//! Reading a selector document: shape checks, then the checks that need the whole document
//! (tags that exist, cycles, retain entries), collecting every problem with its path.

use crate::attr::{AttrPath, Segment};
use crate::error::{Problem, SelectorError};
use crate::retain::{Pattern, Policy, Retention};
use crate::{Clause, Pagination, Selector, ServiceCall, Source, WalkKey};
use butterfly_syntax::{AtIdentifier, Did, Handle, Nsid};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// The longest tag name.
pub const MAX_TAG_LEN: usize = 64;

const WHERE_KEYS: &[&str] = &[
    "repo",
    "collection",
    "attr",
    "max_depth",
    "max_repos",
    "service",
    "method",
    "params",
    "pagination",
];

/// Checks a tag name: 1 to 64 of `a-z`, `0-9`, `_` and `-`, starting with a letter or digit. So a
/// tag never looks like a DID (no ':') or a handle (no '.').
pub fn check_tag(text: &str) -> Result<(), String> {
    let valid = !text.is_empty()
        && text.len() <= MAX_TAG_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && text
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "bad tag {text:?}: expected 1 to {MAX_TAG_LEN} of a-z, 0-9, '_' and '-', starting with a letter or digit"
        ))
    }
}

/// What a value is, for "found ..." in messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// `parent.key`, or `parent["key"]` when the key is not a plain word.
fn key_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (plain, parent.is_empty()) {
        (true, true) => key.to_owned(),
        (true, false) => format!("{parent}.{key}"),
        (false, _) => format!("{parent}[{}]", Value::from(key)),
    }
}

/// An optional field that was read: `Some(None)` when absent, `None` when present but bad.
fn settled<T>(field: Option<Option<T>>) -> Option<Option<T>> {
    field.map_or(Some(None), |inner| inner.map(Some))
}

/// What `where.repo` names before we know whether the clause walks from it.
enum RepoRef {
    Identity(AtIdentifier),
    Tag(String),
}

/// Collects problems while reading.
struct Reader {
    problems: Vec<Problem>,
}

impl Reader {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn object<'a>(&mut self, path: &str, value: &'a Value) -> Option<&'a Map<String, Value>> {
        let object = value.as_object();
        if object.is_none() {
            self.problem(
                path,
                format!("expected an object, found {}", describe(value)),
            );
        }
        object
    }

    fn string<'a>(&mut self, path: &str, value: &'a Value) -> Option<&'a str> {
        let text = value.as_str();
        if text.is_none() {
            self.problem(
                path,
                format!("expected a string, found {}", describe(value)),
            );
        }
        text
    }

    fn unknown_keys(&mut self, path: &str, object: &Map<String, Value>, known: &[&str]) {
        for key in object.keys() {
            if !known.contains(&key.as_str()) {
                let expected: Vec<String> = known.iter().map(|k| format!("{k:?}")).collect();
                self.problem(
                    path,
                    format!("unknown key {key:?} (expected {})", expected.join(", ")),
                );
            }
        }
    }

    /// A whole number from 1 to `max`.
    fn count(&mut self, path: &str, value: &Value, max: u64) -> Option<u64> {
        let count = value.as_u64().filter(|n| (1..=max).contains(n));
        if count.is_none() {
            self.problem(
                path,
                format!(
                    "expected a whole number from 1 to {max}, found {}",
                    describe(value)
                ),
            );
        }
        count
    }

    fn nsid(&mut self, path: &str, value: &Value) -> Option<Nsid> {
        let text = self.string(path, value)?;
        Nsid::parse(text)
            .map_err(|e| self.problem(path, e.to_string()))
            .ok()
    }

    fn attr(&mut self, path: &str, value: &Value) -> Option<AttrPath> {
        let text = self.string(path, value)?;
        AttrPath::parse(text)
            .map_err(|e| self.problem(path, e.to_string()))
            .ok()
    }

    fn repo(&mut self, path: &str, value: &Value, tags: &Tags) -> Option<RepoRef> {
        let text = self.string(path, value)?;
        if let Some(rest) = text.strip_prefix("at://") {
            if rest.contains('/') {
                self.problem(
                    path,
                    format!("expected at://HANDLE or at://DID, found a path in {text:?}"),
                );
                return None;
            }
            return match AtIdentifier::parse(rest) {
                Ok(AtIdentifier::Handle(handle)) => {
                    Some(RepoRef::Identity(AtIdentifier::Handle(handle.normalized())))
                }
                Ok(identity) => Some(RepoRef::Identity(identity)),
                Err(e) => {
                    self.problem(path, e.to_string());
                    None
                }
            };
        }
        if text.starts_with("did:") {
            return match Did::parse(text) {
                Ok(did) => Some(RepoRef::Identity(AtIdentifier::Did(did))),
                Err(e) => {
                    self.problem(path, e.to_string());
                    None
                }
            };
        }
        if tags.clauses.contains_key(text) {
            return Some(RepoRef::Tag(text.to_owned()));
        }
        let hint = if check_tag(text).is_ok() {
            String::new()
        } else if Handle::parse(text).is_ok() {
            format!("; to select a handle write \"at://{text}\"")
        } else {
            ": expected \"at://HANDLE\", \"at://DID\", a DID or a tag name".to_owned()
        };
        self.problem(path, format!("unknown tag {text:?}{hint}"));
        None
    }

    fn service(&mut self, path: &str, value: &Value) -> Option<String> {
        let text = self.string(path, value)?;
        let rest = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"));
        let reason = match rest {
            None => Some("expected an http:// or https:// URL"),
            Some(rest) if rest.split(['/', '?', '#']).next().unwrap_or("").is_empty() => {
                Some("expected a host after the scheme")
            }
            Some(_) if text.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                Some("whitespace is not allowed")
            }
            Some(_) => None,
        };
        match reason {
            Some(reason) => {
                self.problem(path, format!("bad service URL {text:?}: {reason}"));
                None
            }
            None => Some(text.to_owned()),
        }
    }

    fn params(&mut self, path: &str, value: &Value) -> Option<Vec<(String, String)>> {
        let object = self.object(path, value)?;
        let mut params = Vec::with_capacity(object.len());
        let mut ok = true;
        for (key, value) in object {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    self.problem(
                        key_path(path, key),
                        format!(
                            "expected a string, number or boolean, found {}",
                            describe(other)
                        ),
                    );
                    ok = false;
                    continue;
                }
            };
            params.push((key.clone(), text));
        }
        ok.then_some(params)
    }

    fn pagination(&mut self, path: &str, value: &Value) -> Option<Pagination> {
        let object = self.object(path, value)?;
        self.unknown_keys(path, object, &["param", "attr"]);
        let param = match object.get("param") {
            None => {
                self.problem(path, "missing \"param\"");
                None
            }
            Some(value) => {
                let param_path = key_path(path, "param");
                match self.string(&param_path, value) {
                    Some("") => {
                        self.problem(param_path, "expected a parameter name, found \"\"");
                        None
                    }
                    other => other,
                }
            }
        };
        let attr = match object.get("attr") {
            None => {
                self.problem(path, "missing \"attr\"");
                None
            }
            Some(value) => {
                let attr_path = key_path(path, "attr");
                let attr = self.attr(&attr_path, value)?;
                if attr.segments().contains(&Segment::Each) {
                    self.problem(
                        attr_path,
                        format!("the cursor path {attr} must not fan out ('*')"),
                    );
                    None
                } else {
                    Some(attr)
                }
            }
        };
        Some(Pagination {
            param: param?.to_owned(),
            attr: attr?,
        })
    }

    fn clause(&mut self, index: usize, value: &Value, tags: &Tags) -> Option<Clause> {
        let path = format!("select[{index}]");
        let Some(object) = value.as_object() else {
            self.problem(
                path,
                format!(
                    "expected an object with \"where\" and \"tag\", found {}",
                    describe(value)
                ),
            );
            return None;
        };
        self.unknown_keys(&path, object, &["where", "tag"]);
        let tag = match object.get("tag") {
            None => {
                self.problem(&path, "missing \"tag\"");
                None
            }
            Some(value) => {
                let tag_path = key_path(&path, "tag");
                let tag = self.string(&tag_path, value);
                tag.and_then(|tag| match check_tag(tag) {
                    Ok(()) => Some(tag),
                    Err(message) => {
                        self.problem(tag_path, message);
                        None
                    }
                })
            }
        };
        let Some(where_value) = object.get("where") else {
            self.problem(&path, "missing \"where\"");
            return None;
        };
        let where_path = key_path(&path, "where");
        let where_object = self.object(&where_path, where_value)?;
        let (source, max_depth, max_repos) =
            self.where_clause(&where_path, where_object, tag, tags)?;
        Some(Clause {
            tag: tag?.to_owned(),
            source,
            max_depth,
            max_repos,
        })
    }

    /// Reads a `where` object into its source and limits. `own_tag` is the clause's tag, if valid.
    fn where_clause(
        &mut self,
        path: &str,
        object: &Map<String, Value>,
        own_tag: Option<&str>,
        tags: &Tags,
    ) -> Option<(Source, Option<u32>, Option<u64>)> {
        self.unknown_keys(path, object, WHERE_KEYS);
        let field = |key: &str| object.get(key).map(|value| (key_path(path, key), value));
        // Outer `None`: absent; inner `None`: reported as bad, checked at the end so that the
        // rest of the clause is still read.
        let max_repos = field("max_repos").map(|(p, v)| self.count(&p, v, u64::MAX));
        let max_depth = field("max_depth").map(|(p, v)| {
            self.count(&p, v, u64::from(u32::MAX))
                .and_then(|n| u32::try_from(n).ok())
        });
        let walk_only = |reader: &mut Reader| {
            if let Some((p, _)) = field("max_depth") {
                reader.problem(
                    p,
                    "applies only to graph walks (\"collection\" with \"attr\")",
                );
            }
        };

        if object.contains_key("service") || object.contains_key("method") {
            for key in ["repo", "collection"] {
                if object.contains_key(key) {
                    self.problem(
                        path,
                        format!("{key:?} cannot be combined with an XRPC call (\"method\")"),
                    );
                }
            }
            walk_only(self);
            // Without "service", the call goes to the relay the engine follows.
            let service = match field("service") {
                Some((service_path, service)) => self.service(&service_path, service).map(Some),
                None => Some(None),
            };
            let method = match field("method") {
                Some((p, v)) => self.nsid(&p, v),
                None => {
                    self.problem(path, "missing \"method\" (the XRPC method to call)");
                    None
                }
            };
            let params = match field("params") {
                Some((p, v)) => self.params(&p, v),
                None => Some(Vec::new()),
            };
            let attr = match field("attr") {
                Some((p, v)) => self.attr(&p, v),
                None => {
                    self.problem(
                        path,
                        "missing \"attr\" (where the DIDs are in the response)",
                    );
                    None
                }
            };
            let pagination = field("pagination").map(|(p, v)| self.pagination(&p, v));
            let call = ServiceCall {
                service: service?,
                method: method?,
                params: params?,
                attr: attr?,
                pagination: settled(pagination)?,
            };
            if object.contains_key("repo") || object.contains_key("collection") {
                return None;
            }
            if max_depth.is_some() {
                return None;
            }
            return Some((Source::Service(call), None, settled(max_repos)?));
        }

        for key in ["params", "pagination"] {
            if object.contains_key(key) {
                self.problem(path, format!("{key:?} needs \"method\""));
            }
        }
        let Some((repo_path, repo)) = field("repo") else {
            self.problem(path, "missing \"repo\" (or \"service\")");
            return None;
        };
        let repo = self.repo(&repo_path, repo, tags);
        let source = match (field("collection"), field("attr")) {
            (Some((collection_path, collection)), Some((attr_path, attr))) => {
                let collection = self.nsid(&collection_path, collection);
                let attr = self.attr(&attr_path, attr);
                let from = match repo? {
                    RepoRef::Tag(tag) => tag,
                    RepoRef::Identity(identity) => {
                        self.problem(
                            repo_path,
                            format!(
                                "a graph walk starts from a tag, found {:?}; give it a clause and tag of its own, and walk from that tag",
                                identity.as_str()
                            ),
                        );
                        return None;
                    }
                };
                Source::Walk {
                    from,
                    key: WalkKey {
                        collection: collection?,
                        attr: attr?,
                    },
                }
            }
            (Some(_), None) => {
                self.problem(path, "\"collection\" needs \"attr\" (the path to follow)");
                return None;
            }
            (None, Some(_)) => {
                self.problem(path, "\"attr\" needs \"collection\" (the records to read)");
                return None;
            }
            (None, None) => {
                walk_only(self);
                match repo? {
                    RepoRef::Identity(identity) => Source::Identity(identity),
                    RepoRef::Tag(tag) if Some(tag.as_str()) == own_tag => {
                        self.problem(
                            repo_path,
                            format!("tag {tag:?} cannot be its own source, except in a graph walk"),
                        );
                        return None;
                    }
                    RepoRef::Tag(tag) => Source::Tag(tag),
                }
            }
        };
        if max_depth.is_some() && !matches!(source, Source::Walk { .. }) {
            return None;
        }
        Some((source, settled(max_depth)?, settled(max_repos)?))
    }
}

/// The tags the document defines: each with the indices of its clauses, in first-appearance
/// order.
struct Tags {
    order: Vec<String>,
    clauses: HashMap<String, Vec<usize>>,
}

impl Tags {
    fn gather(select: &[Value]) -> Tags {
        let mut tags = Tags {
            order: Vec::new(),
            clauses: HashMap::new(),
        };
        for (index, clause) in select.iter().enumerate() {
            let Some(tag) = clause.get("tag").and_then(Value::as_str) else {
                continue;
            };
            if check_tag(tag).is_err() {
                continue;
            }
            tags.clauses
                .entry(tag.to_owned())
                .or_insert_with(|| {
                    tags.order.push(tag.to_owned());
                    Vec::new()
                })
                .push(index);
        }
        tags
    }
}

/// Reads and checks a whole document.
pub(crate) fn read(value: &Value) -> Result<Selector, SelectorError> {
    let mut reader = Reader {
        problems: Vec::new(),
    };
    let Some(top) = value.as_object() else {
        reader.problem(
            "",
            format!(
                "expected a JSON object with \"select\", found {}",
                describe(value)
            ),
        );
        return Err(SelectorError::new(reader.problems));
    };
    reader.unknown_keys("", top, &["select", "retain"]);
    let select = match top.get("select") {
        None => {
            reader.problem("", "missing \"select\"");
            &[][..]
        }
        Some(Value::Array(select)) => {
            if select.is_empty() {
                reader.problem("select", "expected at least one clause, found none");
            }
            select.as_slice()
        }
        Some(other) => {
            reader.problem(
                "select",
                format!("expected an array of clauses, found {}", describe(other)),
            );
            &[][..]
        }
    };
    let tags = Tags::gather(select);
    let clauses: Vec<Option<Clause>> = select
        .iter()
        .enumerate()
        .map(|(index, clause)| reader.clause(index, clause, &tags))
        .collect();
    check_recursion_has_a_start(&mut reader, &tags, &clauses);
    check_cycles(&mut reader, &tags, &clauses);
    let retention = match top.get("retain") {
        None => Some(Retention::keep_all()),
        Some(retain) => read_retain(&mut reader, retain, &tags),
    };
    match (reader.problems.is_empty(), retention) {
        (true, Some(retention)) => Ok(Selector {
            clauses: clauses.into_iter().flatten().collect(),
            retention,
        }),
        _ => Err(SelectorError::new(reader.problems)),
    }
}

/// A tag that walks from itself needs another clause to give the walk its first repos.
fn check_recursion_has_a_start(reader: &mut Reader, tags: &Tags, clauses: &[Option<Clause>]) {
    for tag in &tags.order {
        let indices = &tags.clauses[tag];
        // A clause that did not parse has been reported already and may be the start.
        let recursive = |index: &usize| {
            clauses[*index]
                .as_ref()
                .is_some_and(|clause| clause.is_recursive())
        };
        if indices.iter().all(recursive) {
            reader.problem(
                format!("select[{}].where.repo", indices[0]),
                format!("tag {tag:?} only walks from itself: add a clause that gives it repos to start from"),
            );
        }
    }
}

/// Rejects cycles between different tags, naming each one found.
fn check_cycles(reader: &mut Reader, tags: &Tags, clauses: &[Option<Clause>]) {
    let position: HashMap<&str, usize> = tags
        .order
        .iter()
        .enumerate()
        .map(|(i, tag)| (tag.as_str(), i))
        .collect();
    // For each tag: (source tag, clause index), in clause order.
    let mut sources: Vec<Vec<(usize, usize)>> = vec![Vec::new(); tags.order.len()];
    for (index, clause) in clauses.iter().enumerate() {
        let Some(clause) = clause else { continue };
        let Some(from) = clause.source_tag() else {
            continue;
        };
        if from == clause.tag {
            continue;
        }
        if let (Some(&tag), Some(&from)) = (position.get(clause.tag.as_str()), position.get(from)) {
            sources[tag].push((from, index));
        }
    }
    // Iterative depth-first search; 0 unvisited, 1 on the stack, 2 done.
    let mut state = vec![0u8; tags.order.len()];
    for start in 0..tags.order.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (tag, ref mut next)) = stack.last_mut() {
            let Some(&(from, clause_index)) = sources[tag].get(*next) else {
                state[tag] = 2;
                stack.pop();
                continue;
            };
            *next += 1;
            match state[from] {
                0 => {
                    state[from] = 1;
                    stack.push((from, 0));
                }
                1 => {
                    let first = stack.iter().position(|(t, _)| *t == from).unwrap_or(0);
                    let mut names: Vec<String> = stack[first..]
                        .iter()
                        .map(|(t, _)| format!("{:?}", tags.order[*t]))
                        .collect();
                    names.push(format!("{:?}", tags.order[from]));
                    reader.problem(
                        format!("select[{clause_index}].where.repo"),
                        format!(
                            "tags form a cycle: {} (each takes its repos from the next)",
                            names.join(" -> ")
                        ),
                    );
                }
                _ => {}
            }
        }
    }
}

fn read_retain(reader: &mut Reader, retain: &Value, tags: &Tags) -> Option<Retention> {
    let object = reader.object("retain", retain)?;
    let mut entries = Vec::with_capacity(object.len());
    let mut ok = true;
    for (tag, rules) in object {
        let tag_path = key_path("retain", tag);
        if !tags.clauses.contains_key(tag) {
            reader.problem(&tag_path, format!("no clause defines tag {tag:?}"));
            ok = false;
        }
        let Some(rules) = reader.object(&tag_path, rules) else {
            ok = false;
            continue;
        };
        let mut parsed = Vec::with_capacity(rules.len());
        for (pattern, policy) in rules {
            let rule_path = key_path(&tag_path, pattern);
            let pattern =
                Pattern::parse(pattern).map_err(|message| reader.problem(&rule_path, message));
            let policy = reader.string(&rule_path, policy).and_then(|text| {
                Policy::parse(text)
                    .map_err(|message| reader.problem(&rule_path, message))
                    .ok()
            });
            match (pattern, policy) {
                (Ok(pattern), Some(policy)) => parsed.push((pattern, policy)),
                _ => ok = false,
            }
        }
        entries.push((tag.as_str(), parsed));
    }
    ok.then(|| Retention::from_entries(entries))
}
