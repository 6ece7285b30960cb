//! A store in memory: for tests, and as the index behind the stdout store.
//!
//! [`MemoryStore`] follows the [`Store`] contract in full (the conformance suite in
//! [`crate::conformance`] checks it) but keeps nothing once dropped. Everything sits in ordered maps,
//! so every listing comes out sorted without extra work.
//!
//! In keys-only mode ([`MemoryStore::keys_only`]) it keeps each record's key, CID and revision but
//! not its body, and builds no backlinks index: enough for a resync's diff and for `latest:N`, at a
//! fraction of the memory. Reads that need bodies or links then fail with [`Error::Invalid`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::links::Link;
use crate::{
    record_links, Action, Backlink, BacklinkPage, BacklinkQuery, Batch, Edge, Error, Micros, Page,
    Record, RecordKey, RepoRow, Store, StreamEvent, Summary,
};

/// A record without its key, as kept.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub(crate) cid: String,
    pub(crate) rev: String,
    /// Empty in keys-only mode.
    json: String,
    indexed_at: Micros,
    /// The record's links, to take them out of the index when the record goes.
    links: Vec<Link>,
}

/// Records by rkey.
type Rkeys = BTreeMap<String, Stored>;
/// Records by collection, then rkey.
type Collections = BTreeMap<String, Rkeys>;

/// Where a backlink sits in the index of one target, in the order [`Store::backlinks`] lists
/// them: the linking record's rkey descending (newest first for TIDs), then DID, collection and
/// path ascending.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct LinkKey {
    rkey: Reverse<String>,
    did: String,
    collection: String,
    path: String,
}

impl LinkKey {
    /// The opaque cursor that continues after this key: a JSON array of its four strings.
    fn cursor(&self) -> String {
        Backlink {
            did: self.did.clone(),
            collection: self.collection.clone(),
            rkey: self.rkey.0.clone(),
            path: self.path.clone(),
        }
        .cursor()
    }

    fn from_cursor(cursor: &str) -> Result<LinkKey, Error> {
        let Backlink {
            did,
            collection,
            rkey,
            path,
        } = Backlink::from_cursor(cursor)?;
        Ok(LinkKey {
            rkey: Reverse(rkey),
            did,
            collection,
            path,
        })
    }
}

/// The links of a batch's records, computed before anything changes so that a record with bad
/// JSON fails the batch while the store is still untouched.
pub(crate) struct Prepared {
    /// One entry per backfill record, chunk by chunk, in order.
    backfill_links: Vec<Vec<Link>>,
    /// One entry per change, in order (empty for deletes).
    change_links: Vec<Vec<Link>>,
}

/// A complete [`Store`] in memory.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    /// False in keys-only mode.
    bodies: bool,
    /// Records by DID, collection and rkey.
    records: BTreeMap<String, Collections>,
    /// Links by target; only with bodies.
    backlinks: BTreeMap<String, BTreeSet<LinkKey>>,
    edges: BTreeSet<Edge>,
    repos: BTreeMap<String, RepoRow>,
    kv: BTreeMap<String, String>,
    events: std::collections::VecDeque<StreamEvent>,
}

impl Default for MemoryStore {
    /// The same as [`MemoryStore::new`].
    fn default() -> MemoryStore {
        MemoryStore::new()
    }
}

const NO_BODIES: &str = "this store keeps no record bodies";

impl MemoryStore {
    /// An empty store that keeps record bodies and indexes their links.
    pub fn new() -> MemoryStore {
        MemoryStore::empty(true)
    }

    /// An empty store that keeps only each record's key, CID and revision.
    ///
    /// [`Store::get_record`], [`Store::list_records`], [`Store::backlinks`] and
    /// [`Store::count_backlinks`] return [`Error::Invalid`]; everything else works as with
    /// [`MemoryStore::new`]. Record JSON is not even parsed.
    pub fn keys_only() -> MemoryStore {
        MemoryStore::empty(false)
    }

    fn empty(bodies: bool) -> MemoryStore {
        MemoryStore {
            bodies,
            records: BTreeMap::new(),
            backlinks: BTreeMap::new(),
            edges: BTreeSet::new(),
            repos: BTreeMap::new(),
            kv: BTreeMap::new(),
            events: std::collections::VecDeque::new(),
        }
    }

    /// True if the store keeps record bodies.
    pub fn keeps_bodies(&self) -> bool {
        self.bodies
    }

    /// The records of one repo by collection and rkey.
    pub(crate) fn repo_records(&self, did: &str) -> Option<&Collections> {
        self.records.get(did)
    }

    /// Checks `batch` and computes its records' links, without changing anything.
    pub(crate) fn prepare(&self, batch: &Batch) -> Result<Prepared, Error> {
        let mut backfill_links = Vec::new();
        for chunk in &batch.backfill {
            for record in &chunk.records {
                backfill_links.push(self.links_of(
                    &record.did,
                    &record.collection,
                    &record.rkey,
                    &record.json,
                )?);
            }
        }
        let mut change_links = Vec::with_capacity(batch.changes.len());
        for change in &batch.changes {
            let links = match change.written()? {
                None => Vec::new(),
                Some((_, json)) => {
                    self.links_of(&change.did, &change.collection, &change.rkey, json)?
                }
            };
            change_links.push(links);
        }
        Ok(Prepared {
            backfill_links,
            change_links,
        })
    }

    fn links_of(
        &self,
        did: &str,
        collection: &str,
        rkey: &str,
        json: &str,
    ) -> Result<Vec<Link>, Error> {
        if !self.bodies {
            return Ok(Vec::new());
        }
        record_links(did, collection, rkey, json)
    }

    /// Applies a batch that [`MemoryStore::prepare`] accepted. Cannot fail.
    pub(crate) fn commit(&mut self, batch: Batch, prepared: Prepared) {
        for did in &batch.purged {
            self.remove_repo_data(did);
            self.repos.remove(did);
        }
        for did in &batch.cleared {
            self.remove_repo_data(did);
        }
        let mut backfill_links = prepared.backfill_links.into_iter();
        for chunk in batch.backfill {
            if chunk.replace {
                self.remove_repo_data(&chunk.did);
            }
            for record in chunk.records {
                let links = backfill_links.next().unwrap_or_default();
                let stored = Stored {
                    cid: record.cid,
                    rev: record.rev,
                    json: if self.bodies {
                        record.json
                    } else {
                        String::new()
                    },
                    indexed_at: record.indexed_at,
                    links,
                };
                self.upsert(record.did, record.collection, record.rkey, stored);
            }
            self.edges.extend(chunk.edges);
        }
        for (change, links) in batch.changes.into_iter().zip(prepared.change_links) {
            match change.action {
                Action::Delete => self.remove_record(&change.did, &change.collection, &change.rkey),
                Action::Create | Action::Update => {
                    let stored = Stored {
                        cid: change.cid.unwrap_or_default(),
                        rev: change.rev,
                        json: match change.json {
                            Some(json) if self.bodies => json,
                            _ => String::new(),
                        },
                        indexed_at: change.indexed_at,
                        links,
                    };
                    self.upsert(change.did, change.collection, change.rkey, stored);
                }
            }
        }
        for key in &batch.edges_removed {
            self.remove_edges(key);
        }
        self.edges.extend(batch.edges_added);
        for row in batch.repos {
            self.repos.insert(row.did.clone(), row);
        }
        for (key, value) in batch.kv {
            match value {
                Some(value) => self.kv.insert(key, value),
                None => self.kv.remove(&key),
            };
        }
        self.events.extend(batch.events);
        if let Some(before) = batch.events_before {
            while self.events.front().is_some_and(|e| e.time_us < before) {
                self.events.pop_front();
            }
        }
    }

    fn upsert(&mut self, did: String, collection: String, rkey: String, stored: Stored) {
        for link in &stored.links {
            self.backlinks
                .entry(link.target.clone())
                .or_default()
                .insert(LinkKey {
                    rkey: Reverse(rkey.clone()),
                    did: did.clone(),
                    collection: collection.clone(),
                    path: link.path.clone(),
                });
        }
        let rkeys = self
            .records
            .entry(did.clone())
            .or_default()
            .entry(collection.clone())
            .or_default();
        if let Some(old) = rkeys.insert(rkey.clone(), stored) {
            // Take out the old version's links, except those the new version has too.
            let kept: BTreeSet<&Link> = rkeys
                .get(&rkey)
                .map(|new| new.links.iter().collect())
                .unwrap_or_default();
            let gone: Vec<&Link> = old
                .links
                .iter()
                .filter(|link| !kept.contains(link))
                .collect();
            unindex(&mut self.backlinks, &did, &collection, &rkey, gone);
        }
    }

    fn remove_record(&mut self, did: &str, collection: &str, rkey: &str) {
        let Some(collections) = self.records.get_mut(did) else {
            return;
        };
        let Some(rkeys) = collections.get_mut(collection) else {
            return;
        };
        let Some(old) = rkeys.remove(rkey) else {
            return;
        };
        if rkeys.is_empty() {
            collections.remove(collection);
            if collections.is_empty() {
                self.records.remove(did);
            }
        }
        unindex(&mut self.backlinks, did, collection, rkey, &old.links);
    }

    /// Removes a repo's records, links and edges, keeping its row.
    fn remove_repo_data(&mut self, did: &str) {
        if let Some(collections) = self.records.remove(did) {
            for (collection, rkeys) in &collections {
                for (rkey, stored) in rkeys {
                    unindex(&mut self.backlinks, did, collection, rkey, &stored.links);
                }
            }
        }
        let first = Edge {
            did: did.to_owned(),
            collection: String::new(),
            rkey: String::new(),
            attr: String::new(),
            target: String::new(),
        };
        let doomed: Vec<Edge> = self
            .edges
            .range(first..)
            .take_while(|edge| edge.did == did)
            .cloned()
            .collect();
        for edge in doomed {
            self.edges.remove(&edge);
        }
    }

    /// Removes every edge of one record.
    fn remove_edges(&mut self, key: &RecordKey) {
        let first = Edge {
            did: key.did.clone(),
            collection: key.collection.clone(),
            rkey: key.rkey.clone(),
            attr: String::new(),
            target: String::new(),
        };
        let doomed: Vec<Edge> = self
            .edges
            .range(first..)
            .take_while(|edge| {
                edge.did == key.did && edge.collection == key.collection && edge.rkey == key.rkey
            })
            .cloned()
            .collect();
        for edge in doomed {
            self.edges.remove(&edge);
        }
    }

    fn require_bodies(&self) -> Result<(), Error> {
        if self.bodies {
            Ok(())
        } else {
            Err(Error::Invalid(NO_BODIES.to_owned()))
        }
    }

    fn rkeys(&self, did: &str, collection: &str) -> Option<&Rkeys> {
        self.records.get(did)?.get(collection)
    }

    /// The links to `target` after `cursor` that pass the filters, in backlinks order.
    fn matching_links<'a>(
        &'a self,
        target: &str,
        collection: Option<&'a str>,
        path: Option<&'a str>,
        after: Option<&LinkKey>,
    ) -> impl Iterator<Item = &'a LinkKey> + 'a {
        let start = match after {
            Some(key) => Bound::Excluded(key.clone()),
            None => Bound::Unbounded,
        };
        self.backlinks
            .get(target)
            .into_iter()
            .flat_map(move |keys| keys.range((start.clone(), Bound::Unbounded)))
            .filter(move |key| collection.is_none_or(|wanted| key.collection == wanted))
            .filter(move |key| path.is_none_or(|wanted| key.path == wanted))
    }
}

/// Takes a record's links out of the backlinks index.
fn unindex<'a>(
    backlinks: &mut BTreeMap<String, BTreeSet<LinkKey>>,
    did: &str,
    collection: &str,
    rkey: &str,
    links: impl IntoIterator<Item = &'a Link>,
) {
    for link in links {
        let Some(keys) = backlinks.get_mut(&link.target) else {
            continue;
        };
        keys.remove(&LinkKey {
            rkey: Reverse(rkey.to_owned()),
            did: did.to_owned(),
            collection: collection.to_owned(),
            path: link.path.clone(),
        });
        if keys.is_empty() {
            backlinks.remove(&link.target);
        }
    }
}

fn record(did: &str, collection: &str, rkey: &str, stored: &Stored) -> Record {
    Record {
        did: did.to_owned(),
        collection: collection.to_owned(),
        rkey: rkey.to_owned(),
        cid: stored.cid.clone(),
        rev: stored.rev.clone(),
        json: stored.json.clone(),
        indexed_at: stored.indexed_at,
    }
}

/// Adds `n` to `name`'s count.
fn tally(counts: &mut BTreeMap<String, u64>, name: &str, n: u64) {
    *counts.entry(name.to_owned()).or_default() += n;
}

impl Store for MemoryStore {
    fn apply(&mut self, batch: Batch) -> Result<(), Error> {
        let prepared = self.prepare(&batch)?;
        self.commit(batch, prepared);
        Ok(())
    }

    fn kv_get(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(self.kv.get(key).cloned())
    }

    fn repo(&self, did: &str) -> Result<Option<RepoRow>, Error> {
        Ok(self.repos.get(did).cloned())
    }

    fn repos(&self) -> Result<Vec<RepoRow>, Error> {
        Ok(self.repos.values().cloned().collect())
    }

    fn repos_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<RepoRow>, Error> {
        let start = after.map_or(Bound::Unbounded, |did| Bound::Excluded(did.to_owned()));
        Ok(self
            .repos
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(_, row)| row.clone())
            .collect())
    }

    fn repo_by_handle(&self, handle: &str) -> Result<Option<RepoRow>, Error> {
        Ok(self
            .repos
            .values()
            .find(|row| {
                row.handle
                    .as_deref()
                    .is_some_and(|h| h.eq_ignore_ascii_case(handle))
            })
            .cloned())
    }

    fn collections(&self, did: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .records
            .get(did)
            .map(|collections| {
                collections
                    .iter()
                    .filter(|(_, rkeys)| !rkeys.is_empty())
                    .map(|(collection, _)| collection.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    fn edges(&self) -> Result<Vec<Edge>, Error> {
        Ok(self.edges.iter().cloned().collect())
    }

    fn record_keys(&self, did: &str) -> Result<Vec<(String, String, String)>, Error> {
        let Some(collections) = self.records.get(did) else {
            return Ok(Vec::new());
        };
        let mut keys = Vec::new();
        for (collection, rkeys) in collections {
            for (rkey, stored) in rkeys {
                keys.push((collection.clone(), rkey.clone(), stored.cid.clone()));
            }
        }
        Ok(keys)
    }

    fn newest_rkeys(&self, did: &str, collection: &str, n: usize) -> Result<Vec<String>, Error> {
        Ok(self
            .rkeys(did, collection)
            .map(|rkeys| rkeys.keys().rev().take(n).cloned().collect())
            .unwrap_or_default())
    }

    fn get_record(&self, did: &str, collection: &str, rkey: &str) -> Result<Option<Record>, Error> {
        self.require_bodies()?;
        Ok(self
            .rkeys(did, collection)
            .and_then(|rkeys| rkeys.get(rkey))
            .map(|stored| record(did, collection, rkey, stored)))
    }

    fn list_records(
        &self,
        did: &str,
        collection: &str,
        page: Page<'_>,
    ) -> Result<Vec<Record>, Error> {
        self.require_bodies()?;
        let Some(rkeys) = self.rkeys(did, collection) else {
            return Ok(Vec::new());
        };
        let to_record = |(rkey, stored): (&String, &Stored)| record(did, collection, rkey, stored);
        let records = if page.reverse {
            let start = page.cursor.map_or(Bound::Unbounded, Bound::Excluded);
            rkeys
                .range::<str, _>((start, Bound::Unbounded))
                .take(page.limit)
                .map(to_record)
                .collect()
        } else {
            let end = page.cursor.map_or(Bound::Unbounded, Bound::Excluded);
            rkeys
                .range::<str, _>((Bound::Unbounded, end))
                .rev()
                .take(page.limit)
                .map(to_record)
                .collect()
        };
        Ok(records)
    }

    fn backlinks(&self, query: BacklinkQuery<'_>) -> Result<BacklinkPage, Error> {
        self.require_bodies()?;
        let after = query.cursor.map(LinkKey::from_cursor).transpose()?;
        let mut matching =
            self.matching_links(query.target, query.collection, query.path, after.as_ref());
        let keys: Vec<&LinkKey> = matching.by_ref().take(query.limit).collect();
        let more = matching.next().is_some();
        let cursor = match keys.last() {
            Some(last) if more => Some(last.cursor()),
            _ => None,
        };
        let links = keys
            .into_iter()
            .map(|key| Backlink {
                did: key.did.clone(),
                collection: key.collection.clone(),
                rkey: key.rkey.0.clone(),
                path: key.path.clone(),
            })
            .collect();
        Ok(BacklinkPage { links, cursor })
    }

    fn count_backlinks(
        &self,
        target: &str,
        collection: Option<&str>,
        path: Option<&str>,
    ) -> Result<u64, Error> {
        self.require_bodies()?;
        Ok(self.matching_links(target, collection, path, None).count() as u64)
    }

    fn events_after(&self, after: Micros, limit: usize) -> Result<Vec<StreamEvent>, Error> {
        let start = self.events.partition_point(|e| e.time_us <= after);
        Ok(self.events.range(start..).take(limit).cloned().collect())
    }

    fn summary(&self) -> Result<Summary, Error> {
        let mut by_state = BTreeMap::new();
        let mut by_status = BTreeMap::new();
        let mut repos_by_tag = BTreeMap::new();
        let mut records_by_tag = BTreeMap::new();
        for row in self.repos.values() {
            tally(&mut by_state, row.state.as_str(), 1);
            tally(&mut by_status, &row.status, 1);
            let n_records: usize = self
                .records
                .get(&row.did)
                .map(|collections| collections.values().map(BTreeMap::len).sum())
                .unwrap_or(0);
            let tags: BTreeSet<&String> = row.tags.iter().collect();
            for tag in tags {
                tally(&mut repos_by_tag, tag, 1);
                tally(&mut records_by_tag, tag, n_records as u64);
            }
        }
        let mut by_collection = BTreeMap::new();
        let mut n_records = 0;
        for collections in self.records.values() {
            for (collection, rkeys) in collections {
                tally(&mut by_collection, collection, rkeys.len() as u64);
                n_records += rkeys.len() as u64;
            }
        }
        Ok(Summary {
            repos: self.repos.len() as u64,
            records: n_records,
            repos_by_state: by_state.into_iter().collect(),
            repos_by_status: by_status.into_iter().collect(),
            repos_by_tag: repos_by_tag.into_iter().collect(),
            records_by_collection: by_collection.into_iter().collect(),
            records_by_tag: records_by_tag.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        crate::conformance::check_store(MemoryStore::new);
    }

    #[test]
    fn conformance_keys_only() {
        crate::conformance::check_keys_only_store(MemoryStore::keys_only);
    }
}
