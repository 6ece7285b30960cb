//! Selector documents: which repos to follow, and which of their records to keep.
//!
//! A selector is a JSON document with two parts. `select` is a list of clauses, each giving repos
//! a *tag*: a DID or handle (`at://alice.example`), all repos of another tag, a *graph walk* from
//! another tag's repos along a record field (`app.bsky.graph.follow` records' `subject`), or the
//! DIDs an XRPC service lists. A walk from its own tag is a recursive crawl. `retain` says, per tag
//! and collection, which records to keep: all, only `self`, the newest N, or none.
//!
//! [`Selector::from_json`] reads and checks a document; a rejected one gives a [`SelectorError`]
//! listing every problem with its path in the document. [`evaluate`] then computes a
//! [`Membership`] (each repo's tags) from what the engine has learnt: the DIDs seeds resolved to
//! ([`Inputs::seeds`]) and the edges found in records ([`EdgeSource`]). [`Retention::keep`]
//! says what a repo with a given set of tags keeps of a collection.
//!
//! What this crate does **not** do: no I/O, no network, no async, no handle resolution, no
//! record fetching. The engine does those and feeds the results back into [`evaluate`], which it
//! can rerun as more is learnt; the result is deterministic.
//!
//! ```
//! use butterfly_selector::{evaluate, EdgeMap, Inputs, Selector};
//! use std::collections::HashMap;
//!
//! let selector = Selector::from_json(r#"{
//!     "select": [
//!         {"where": {"repo": "at://alice.example"}, "tag": "me"},
//!         {"where": {"repo": "me", "collection": "app.bsky.graph.follow", "attr": "subject"},
//!          "tag": "followed"}
//!     ],
//!     "retain": {"me": {"*": "*"}, "followed": {"app.bsky.actor.profile": "self"}}
//! }"#)?;
//! assert_eq!(selector.tags(), ["me", "followed"]);
//!
//! // The engine resolved the handle and read alice's follows.
//! let seeds = HashMap::from([(0, vec!["did:plc:alice".to_owned()])]);
//! let mut edges = EdgeMap::new();
//! edges.add("did:plc:alice", &selector.walk_keys()[0], ["did:plc:bob".to_owned()]);
//! let inputs = Inputs {
//!     seeds: &seeds,
//!     edges: &edges,
//!     pinned: &Default::default(),
//!     excluded: &Default::default(),
//! };
//! let membership = evaluate(&selector, &inputs);
//! assert_eq!(membership.tags_of("did:plc:bob"), ["followed"]);
//!
//! let keep = selector.retention().keep(["followed"], "app.bsky.feed.post");
//! assert!(keep.nothing());
//! # Ok::<(), butterfly_selector::SelectorError>(())
//! ```

#![warn(missing_docs)]

mod attr;
mod document;
mod error;
mod eval;
mod retain;

pub use attr::{did_of, dids_at, AttrPath, AttrPathError, Segment, MAX_ATTR_SEGMENTS};
pub use document::{check_tag, MAX_TAG_LEN};
pub use error::{Problem, SelectorError};
pub use eval::{evaluate, EdgeMap, EdgeSource, Inputs, Membership};
pub use retain::{Keep, Pattern, Policy, Retention};

use butterfly_syntax::{AtIdentifier, Nsid};
use std::collections::{BTreeSet, HashMap};

/// A checked selector document.
///
/// Only [`Selector::from_json`] and [`Selector::from_value`] build one, so every tag a clause
/// names exists, tags form no cycle (other than a tag walking from itself), and every recursive
/// tag has a clause to start from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    clauses: Vec<Clause>,
    retention: Retention,
}

/// One entry of `select`: where its repos come from, and the tag they get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clause {
    /// The tag the clause's repos get.
    pub tag: String,
    /// Where the repos come from.
    pub source: Source,
    /// For a walk: how many hops from the source's repos (a recursive walk counts from the tag's
    /// other clauses); `None` for unbounded. Always `None` on other clauses.
    pub max_depth: Option<u32>,
    /// At most this many repos come from this clause.
    pub max_repos: Option<u64>,
}

impl Clause {
    /// Whether the clause walks from its own tag: a crawl.
    pub fn is_recursive(&self) -> bool {
        self.source_tag() == Some(self.tag.as_str())
    }

    /// The tag the clause takes repos from, if any.
    pub fn source_tag(&self) -> Option<&str> {
        match &self.source {
            Source::Tag(tag) | Source::Walk { from: tag, .. } => Some(tag),
            Source::Identity(_) | Source::Service(_) => None,
        }
    }
}

/// Where a clause's repos come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// One repo, by DID or handle (handles lowercased); the engine resolves it.
    Identity(AtIdentifier),
    /// Every repo of another tag.
    Tag(String),
    /// The DIDs that records of the repos of tag `from` point to. When `from` is the clause's own
    /// tag, the walk is recursive.
    Walk {
        /// The tag whose repos' records are read.
        from: String,
        /// Which records, and which field of them.
        key: WalkKey,
    },
    /// The DIDs an XRPC service lists.
    Service(ServiceCall),
}

/// A kind of graph edge: the records of one collection, and the path in them to the DIDs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WalkKey {
    /// The collection whose records are read.
    pub collection: Nsid,
    /// Where the DIDs (or AT-URIs with DID authorities) are in each record.
    pub attr: AttrPath,
}

/// An XRPC query whose response lists DIDs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceCall {
    /// The service's base URL (`http` or `https`), as written; `None` for the relay the engine
    /// follows (`--relay`).
    pub service: Option<String>,
    /// The XRPC method.
    pub method: Nsid,
    /// Query parameters, in document order; numbers and booleans are written as text.
    pub params: Vec<(String, String)>,
    /// Where the DIDs are in each response.
    pub attr: AttrPath,
    /// How to ask for the next page, if the method pages.
    pub pagination: Option<Pagination>,
}

/// How a paged method is followed: the response's cursor goes into the next request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pagination {
    /// The query parameter that takes the cursor.
    pub param: String,
    /// Where the next cursor is in the response; absent or empty means the last page.
    pub attr: AttrPath,
}

impl Selector {
    /// Reads and checks a selector document.
    pub fn from_json(text: &str) -> Result<Selector, SelectorError> {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) => Selector::from_value(&value),
            Err(e) => Err(SelectorError::new(vec![Problem {
                path: String::new(),
                message: format!("invalid JSON: {e}"),
            }])),
        }
    }

    /// Checks a selector document already parsed as JSON.
    pub fn from_value(value: &serde_json::Value) -> Result<Selector, SelectorError> {
        document::read(value)
    }

    /// The clauses, in document order: clause `i` is `select[i]`.
    pub fn clauses(&self) -> &[Clause] {
        &self.clauses
    }

    /// What each tag keeps.
    pub fn retention(&self) -> &Retention {
        &self.retention
    }

    /// Every tag once, each after the tags it takes repos from; otherwise in order of first
    /// appearance.
    pub fn tags(&self) -> Vec<&str> {
        let mut first_seen: Vec<&str> = Vec::new();
        let mut position: HashMap<&str, usize> = HashMap::new();
        for clause in &self.clauses {
            position.entry(&clause.tag).or_insert_with(|| {
                first_seen.push(&clause.tag);
                first_seen.len() - 1
            });
        }
        // Kahn's algorithm, taking the earliest-seen ready tag each time.
        let mut waiting_on = vec![0usize; first_seen.len()];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); first_seen.len()];
        let mut edges = BTreeSet::new();
        for clause in &self.clauses {
            let Some(from) = clause.source_tag() else {
                continue;
            };
            if let (Some(&tag), Some(&from)) =
                (position.get(clause.tag.as_str()), position.get(from))
            {
                if tag != from && edges.insert((from, tag)) {
                    waiting_on[tag] += 1;
                    dependents[from].push(tag);
                }
            }
        }
        let mut ready: BTreeSet<usize> = (0..first_seen.len())
            .filter(|tag| waiting_on[*tag] == 0)
            .collect();
        let mut order = Vec::with_capacity(first_seen.len());
        while let Some(tag) = ready.pop_first() {
            order.push(first_seen[tag]);
            for &dependent in &dependents[tag] {
                waiting_on[dependent] -= 1;
                if waiting_on[dependent] == 0 {
                    ready.insert(dependent);
                }
            }
        }
        order
    }

    /// The distinct edge kinds the walks follow, sorted: what the engine must extract from the
    /// records of the repos it reads.
    pub fn walk_keys(&self) -> Vec<WalkKey> {
        let keys: BTreeSet<&WalkKey> = self
            .clauses
            .iter()
            .filter_map(|clause| match &clause.source {
                Source::Walk { key, .. } => Some(key),
                _ => None,
            })
            .collect();
        keys.into_iter().cloned().collect()
    }
}
