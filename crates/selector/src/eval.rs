//! Evaluation: which repos carry which tags, given what the engine learnt from the network.

use crate::{Clause, Selector, Source, WalkKey};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The graph edges the engine has extracted from records so far.
pub trait EdgeSource {
    /// The DIDs that `did`'s records of `key.collection` point to via `key.attr`; empty when
    /// unknown. Order and duplicates do not matter.
    fn targets(&self, did: &str, key: &WalkKey) -> Vec<String>;
}

/// Edges held in memory: for each walk key, each DID's targets.
#[derive(Clone, Debug, Default)]
pub struct EdgeMap {
    edges: HashMap<WalkKey, HashMap<String, Vec<String>>>,
}

impl EdgeMap {
    /// An empty map.
    pub fn new() -> EdgeMap {
        EdgeMap::default()
    }

    /// Adds targets of `did` under `key`, after any already there.
    pub fn add(&mut self, did: &str, key: &WalkKey, targets: impl IntoIterator<Item = String>) {
        let by_did = self.edges.entry(key.clone()).or_default();
        by_did.entry(did.to_owned()).or_default().extend(targets);
    }

    /// Replaces the targets of `did` under `key`, as when a repo is re-read.
    pub fn set(&mut self, did: &str, key: &WalkKey, targets: Vec<String>) {
        let by_did = self.edges.entry(key.clone()).or_default();
        by_did.insert(did.to_owned(), targets);
    }
}

impl EdgeSource for EdgeMap {
    fn targets(&self, did: &str, key: &WalkKey) -> Vec<String> {
        self.edges
            .get(key)
            .and_then(|by_did| by_did.get(did))
            .cloned()
            .unwrap_or_default()
    }
}

/// What evaluation starts from.
pub struct Inputs<'a> {
    /// For each clause index (its position in `select`): the DIDs an identity clause resolved to,
    /// or a service clause returned. A clause with no entry is not known yet and gives nothing.
    pub seeds: &'a HashMap<usize, Vec<String>>,
    /// The graph edges known so far.
    pub edges: &'a dyn EdgeSource,
    /// Repos added by hand (the admin API), by tag: members of that tag as seeds are, and walked
    /// from like any member.
    pub pinned: &'a HashMap<String, Vec<String>>,
    /// Repos removed by hand: members of no tag, and never walked through.
    pub excluded: &'a HashSet<String>,
}

/// The result of [`evaluate`]: each selected repo's tags, and each tag's repos.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// DID to its tags, sorted.
    by_did: BTreeMap<String, Vec<String>>,
    /// Tag to its DIDs, sorted.
    by_tag: HashMap<String, Vec<String>>,
}

impl Membership {
    /// The tags of `did`, sorted; empty if it is not selected.
    pub fn tags_of(&self, did: &str) -> &[String] {
        self.by_did.get(did).map_or(&[], Vec::as_slice)
    }

    /// The DIDs carrying `tag`, sorted.
    pub fn members_of(&self, tag: &str) -> &[String] {
        self.by_tag.get(tag).map_or(&[], Vec::as_slice)
    }

    /// Whether `did` carries any tag.
    pub fn contains(&self, did: &str) -> bool {
        self.by_did.contains_key(did)
    }

    /// Every selected DID with its tags, in DID order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.by_did
            .iter()
            .map(|(did, tags)| (did.as_str(), tags.as_slice()))
    }

    /// The number of selected DIDs.
    pub fn len(&self) -> usize {
        self.by_did.len()
    }

    /// Whether no DID is selected.
    pub fn is_empty(&self) -> bool {
        self.by_did.is_empty()
    }
}

fn cap(limit: Option<u64>) -> usize {
    limit.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// `dids` sorted and without duplicates, at most `limit` of them (the first in sorted order).
fn sorted_capped(dids: HashSet<String>, limit: Option<u64>) -> Vec<String> {
    let mut dids: Vec<String> = dids.into_iter().collect();
    dids.sort_unstable();
    dids.truncate(cap(limit));
    dids
}

/// Computes every tag's repos from the seeds and edges known so far.
///
/// Tags are computed in dependency order. A tag's repos are the union of its clauses: seeds as
/// given (first `max_repos` in their order); another tag's repos; or one hop of a walk from
/// another tag's repos (sorted, first `max_repos`). Then the tag's recursive walks run breadth
/// first from what the other clauses gave, level by level: each level's new DIDs are sorted, a walk
/// stops after `max_depth` hops or once it has added `max_repos` DIDs, and several recursive walks
/// of one tag expand the same frontier together, so without limits the result is the closure under
/// all of them. The result depends only on the inputs, never on hash order.
///
/// Cost: linear in the members and edges visited (one [`EdgeSource::targets`] call per member of a
/// walk's source tag, and per repo reached by a recursive walk), plus sorting.
pub fn evaluate(selector: &Selector, inputs: &Inputs<'_>) -> Membership {
    let order = selector.tags();
    let mut clauses_of: HashMap<&str, Vec<(usize, &Clause)>> = HashMap::new();
    for (index, clause) in selector.clauses().iter().enumerate() {
        clauses_of
            .entry(clause.tag.as_str())
            .or_default()
            .push((index, clause));
    }
    let mut by_tag: HashMap<String, Vec<String>> = HashMap::with_capacity(order.len());
    for tag in order {
        let clauses = clauses_of.remove(tag).unwrap_or_default();
        let members = evaluate_tag(tag, &clauses, &by_tag, inputs);
        by_tag.insert(tag.to_owned(), members);
    }
    let mut by_did: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (tag, members) in &by_tag {
        for did in members {
            by_did.entry(did.clone()).or_default().push(tag.clone());
        }
    }
    for tags in by_did.values_mut() {
        tags.sort_unstable();
    }
    Membership { by_did, by_tag }
}

/// One tag's members, sorted; `done` holds the tags it depends on.
fn evaluate_tag(
    tag: &str,
    clauses: &[(usize, &Clause)],
    done: &HashMap<String, Vec<String>>,
    inputs: &Inputs<'_>,
) -> Vec<String> {
    let no_members = Vec::new();
    let members_of = |tag: &str| done.get(tag).unwrap_or(&no_members);
    let mut members: HashSet<String> = HashSet::new();
    let mut recursive = Vec::new();
    for &(index, clause) in clauses {
        match &clause.source {
            Source::Identity(_) | Source::Service(_) => {
                let seeds = inputs.seeds.get(&index).map_or(&[][..], Vec::as_slice);
                let mut seen = HashSet::new();
                let firsts = seeds
                    .iter()
                    .filter(|did| seen.insert(did.as_str()))
                    .take(cap(clause.max_repos));
                members.extend(firsts.cloned());
            }
            Source::Tag(other) => {
                let others = members_of(other);
                members.extend(others.iter().take(cap(clause.max_repos)).cloned());
            }
            Source::Walk { from, .. } if *from == clause.tag => recursive.push(clause),
            Source::Walk { from, key } => {
                let mut targets = HashSet::new();
                for did in members_of(from) {
                    targets.extend(inputs.edges.targets(did, key));
                }
                members.extend(sorted_capped(targets, clause.max_repos));
            }
        }
    }
    if let Some(pinned) = inputs.pinned.get(tag) {
        members.extend(pinned.iter().cloned());
    }
    members.retain(|did| !inputs.excluded.contains(did));
    if !recursive.is_empty() {
        crawl(&mut members, &recursive, inputs.edges, inputs.excluded);
    }
    let mut members: Vec<String> = members.into_iter().collect();
    members.sort_unstable();
    members
}

/// Runs a tag's recursive walks together, breadth first from its current members.
fn crawl(
    members: &mut HashSet<String>,
    walks: &[&Clause],
    edges: &dyn EdgeSource,
    excluded: &HashSet<String>,
) {
    let mut added = vec![0usize; walks.len()];
    let mut frontier: Vec<String> = members.iter().cloned().collect();
    frontier.sort_unstable();
    let mut hops = 0u32;
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for (walk_idx, walk) in walks.iter().enumerate() {
            let Source::Walk { key, .. } = &walk.source else {
                continue;
            };
            let limit = cap(walk.max_repos);
            if walk.max_depth.is_some_and(|depth| hops >= depth) || added[walk_idx] >= limit {
                continue;
            }
            let mut found = HashSet::new();
            for did in &frontier {
                for target in edges.targets(did, key) {
                    if !members.contains(&target) && !excluded.contains(&target) {
                        found.insert(target);
                    }
                }
            }
            for did in sorted_capped(found, Some((limit - added[walk_idx]) as u64)) {
                members.insert(did.clone());
                next.push(did);
                added[walk_idx] += 1;
            }
        }
        next.sort_unstable();
        frontier = next;
        hops = hops.saturating_add(1);
    }
}
