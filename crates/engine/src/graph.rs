//! Walk edges in memory, and what retention keeps of each collection.

use butterfly_selector::{EdgeSource, Keep, Selector, WalkKey};
use butterfly_store::{Edge, RecordKey};
use std::collections::HashMap;
use std::sync::Arc;

/// Every walk edge, by the repo whose record holds it.
#[derive(Default)]
pub(crate) struct Graph {
    by_did: HashMap<String, Vec<Edge>>,
}

impl Graph {
    pub(crate) fn from_edges(edges: Vec<Edge>) -> Graph {
        let mut graph = Graph::default();
        for edge in edges {
            graph.by_did.entry(edge.did.clone()).or_default().push(edge);
        }
        graph
    }

    /// Replaces a repo's edges (after a backfill); true if they changed, and with them perhaps
    /// the selection.
    pub(crate) fn set_repo(&mut self, did: &str, edges: Vec<Edge>) -> bool {
        let old = if edges.is_empty() {
            self.by_did.remove(did)
        } else {
            self.by_did.insert(did.to_owned(), edges)
        };
        old.as_deref().unwrap_or_default() != self.by_did.get(did).map_or(&[][..], Vec::as_slice)
    }

    pub(crate) fn remove_repo(&mut self, did: &str) {
        self.by_did.remove(did);
    }

    /// Removes the edges of one record; true if there were any.
    pub(crate) fn remove_record(&mut self, did: &str, collection: &str, rkey: &str) -> bool {
        let Some(edges) = self.by_did.get_mut(did) else {
            return false;
        };
        let before = edges.len();
        edges.retain(|e| !(e.collection == collection && e.rkey == rkey));
        before != edges.len()
    }

    pub(crate) fn add(&mut self, edge: Edge) {
        self.by_did.entry(edge.did.clone()).or_default().push(edge);
    }

    /// The records of a repo that hold edges.
    pub(crate) fn record_keys(&self, did: &str) -> Vec<RecordKey> {
        let mut keys: Vec<RecordKey> = self
            .by_did
            .get(did)
            .map(|edges| {
                edges
                    .iter()
                    .map(|e| RecordKey {
                        did: e.did.clone(),
                        collection: e.collection.clone(),
                        rkey: e.rkey.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys.dedup();
        keys
    }
}

impl EdgeSource for Graph {
    fn targets(&self, did: &str, key: &WalkKey) -> Vec<String> {
        let attr = key.attr.to_string();
        self.by_did
            .get(did)
            .map(|edges| {
                edges
                    .iter()
                    .filter(|e| e.collection == key.collection.as_str() && e.attr == attr)
                    .map(|e| e.target.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What the engine needs from the selector while reading records: retention per tag set and
/// collection, and which collections hold walk edges.
#[derive(Debug)]
pub(crate) struct Rules {
    pub(crate) selector: Arc<Selector>,
    walks_by_collection: HashMap<String, Vec<WalkKey>>,
}

impl Rules {
    pub(crate) fn new(selector: Arc<Selector>) -> Rules {
        let mut walks_by_collection: HashMap<String, Vec<WalkKey>> = HashMap::new();
        for key in selector.walk_keys() {
            walks_by_collection
                .entry(key.collection.as_str().to_owned())
                .or_default()
                .push(key);
        }
        Rules {
            selector,
            walks_by_collection,
        }
    }

    /// What a repo with `tags` keeps of `collection`: a few map lookups per tag, cheaper than
    /// any memo keyed by the tags.
    pub(crate) fn keep(&self, tags: &[String], collection: &str) -> Keep {
        self.selector
            .retention()
            .keep(tags.iter().map(String::as_str), collection)
    }

    /// True if a collection's records can hold walk edges.
    pub(crate) fn walks(&self, collection: &str) -> bool {
        self.walks_by_collection.contains_key(collection)
    }

    /// The walk edges in one record.
    pub(crate) fn edges_of(
        &self,
        did: &str,
        collection: &str,
        rkey: &str,
        record: &serde_json::Value,
    ) -> Vec<Edge> {
        let Some(keys) = self.walks_by_collection.get(collection) else {
            return Vec::new();
        };
        let mut edges = Vec::new();
        for key in keys {
            for target in butterfly_selector::dids_at(&key.attr, record) {
                edges.push(Edge {
                    did: did.to_owned(),
                    collection: collection.to_owned(),
                    rkey: rkey.to_owned(),
                    attr: key.attr.to_string(),
                    target,
                });
            }
        }
        edges
    }

    /// True if repos with tags `a` and with tags `b` keep the same things.
    pub(crate) fn same_retention(&self, a: &[String], b: &[String]) -> bool {
        a == b || same_retention_between((self, a), (self, b))
    }

    /// True if these rules walk the same record attributes as `other`.
    pub(crate) fn same_walks(&self, other: &Rules) -> bool {
        self.selector.walk_keys() == other.selector.walk_keys()
    }
}

/// True if a repo with tags `a.1` under rules `a.0` keeps the same things as one with tags `b.1`
/// under rules `b.0`. Checked at one collection per region the patterns of either side carve
/// out (each pattern, and a name only a prefix wildcard or `*` matches).
pub(crate) fn same_retention_between(a: (&Rules, &[String]), b: (&Rules, &[String])) -> bool {
    let mut probes = vec!["zz.butterfly.probe".to_owned()];
    for (rules, tags) in [a, b] {
        for tag in tags {
            for pattern in rules.selector.retention().patterns(tag) {
                match pattern.strip_suffix('*') {
                    Some(prefix) => probes.push(format!("{prefix}zzbutterflyprobe")),
                    None => probes.push(pattern.to_owned()),
                }
            }
        }
    }
    probes
        .iter()
        .all(|collection| a.0.keep(a.1, collection) == b.0.keep(b.1, collection))
}

/// Whether a record is kept under `keep`: `latest:N` records are kept here and trimmed to N by the
/// writer.
pub(crate) fn keeps(keep: &Keep, rkey: &str) -> bool {
    keep.all || keep.latest > 0 || (keep.self_rkey && rkey == "self")
}
