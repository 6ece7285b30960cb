//! What the sync engine keeps, behind one trait.
//!
//! The engine turns verified repo data into [`Batch`]es and hands each to [`Store::apply`], which
//! makes it durable in one transaction: record changes, backfilled records, walk edges, repo rows
//! and the stream cursor together. That is the crash-safety contract: a cursor stored by a batch
//! never runs ahead of the data it covers.
//!
//! Implementations: [`MemoryStore`] (tests, and the index behind the stdout store), [`StdoutStore`]
//! (one JSON line per change), and `butterfly-store-duckdb` (the default, in its own crate so that
//! nothing else links DuckDB).
//!
//! This crate knows nothing of CBOR, CIDs or the network: records arrive as atproto JSON text and
//! identifiers as strings already checked by the engine.

pub mod conformance;
mod links;
mod memory;
mod stdout;

pub use links::{links_in, Link, MAX_LINKS, MAX_LINK_DEPTH};
pub use memory::MemoryStore;
pub use stdout::StdoutStore;

use serde::Serialize;

/// A time in microseconds since the Unix epoch.
pub type Micros = i64;

/// Now, in µs since the Unix epoch (0 before it, `i64::MAX` past 292,000 AD).
pub fn now_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            Micros::try_from(since.as_micros()).unwrap_or(Micros::MAX)
        })
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file or stream failed.
    #[error("store i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The database refused an operation.
    #[error("store backend: {0}")]
    Backend(String),
    /// Stored data does not have the shape this version expects.
    #[error("store data: {0}")]
    Corrupt(String),
    /// The caller asked for something the store cannot do (an unknown option, say).
    #[error("{0}")]
    Invalid(String),
}

/// What happened to a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    /// `create`, `update` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// A record as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub did: String,
    pub collection: String,
    pub rkey: String,
    /// The record's CID, as a string.
    pub cid: String,
    /// The repo revision (a TID) that wrote this version of the record.
    pub rev: String,
    /// The record in atproto JSON (`$link`, `$bytes`), as text.
    pub json: String,
    pub indexed_at: Micros,
}

/// One change to one record, applied in order within a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub did: String,
    pub collection: String,
    pub rkey: String,
    pub action: Action,
    /// Absent for deletes.
    pub cid: Option<String>,
    /// The revision of the commit (or backfill) that made the change.
    pub rev: String,
    /// The record in atproto JSON; absent for deletes.
    pub json: Option<String>,
    /// True for changes from the live stream, false for backfill and resync.
    pub live: bool,
    pub indexed_at: Micros,
}

impl Change {
    /// What a create or update writes, `(cid, json)`; `None` for a delete. A create or update
    /// lacking either is `Error::Invalid`: every store refuses the batch the same way.
    pub fn written(&self) -> Result<Option<(&str, &str)>, Error> {
        if self.action == Action::Delete {
            return Ok(None);
        }
        let missing = |what: &str| {
            Error::Invalid(format!(
                "{} of {}/{}/{} without {what}",
                self.action.as_str(),
                self.did,
                self.collection,
                self.rkey
            ))
        };
        let cid = self.cid.as_deref().ok_or_else(|| missing("a cid"))?;
        let json = self.json.as_deref().ok_or_else(|| missing("a record"))?;
        Ok(Some((cid, json)))
    }
}

/// The links in a record's JSON text ([`links_in`]); a record that is not JSON fails its batch in
/// every store alike.
pub fn record_links(
    did: &str,
    collection: &str,
    rkey: &str,
    json: &str,
) -> Result<Vec<Link>, Error> {
    links_in(json).map_err(|err| not_json(did, collection, rkey, &err))
}

fn not_json(did: &str, collection: &str, rkey: &str, err: &serde_json::Error) -> Error {
    Error::Invalid(format!(
        "record {did}/{collection}/{rkey} is not JSON: {err}"
    ))
}

/// Parses a record's JSON text; one that is not JSON fails its batch in every store alike.
pub fn parse_record(
    did: &str,
    collection: &str,
    rkey: &str,
    json: &str,
) -> Result<serde_json::Value, Error> {
    serde_json::from_str(json).map_err(|err| not_json(did, collection, rkey, &err))
}

/// Where a repo stands in the sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    /// Selected, not yet backfilled.
    Pending,
    /// Backfilled and following the stream.
    Synced,
    /// Must be fetched again and reconciled (a broken chain, a `#sync`, a retention change).
    Resync,
    /// The last backfill failed; `RepoRow::error` says why. Retried later.
    Failed,
}

impl SyncState {
    /// Every state, in the order of their declaration.
    pub const ALL: [SyncState; 4] = [
        SyncState::Pending,
        SyncState::Synced,
        SyncState::Resync,
        SyncState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Pending => "pending",
            SyncState::Synced => "synced",
            SyncState::Resync => "resync",
            SyncState::Failed => "failed",
        }
    }

    /// The inverse of [`SyncState::as_str`].
    pub fn parse(text: &str) -> Option<SyncState> {
        SyncState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

/// A tracked repo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoRow {
    pub did: String,
    /// The handle, only when verified both ways.
    pub handle: Option<String>,
    /// The PDS endpoint from the DID document.
    pub pds: Option<String>,
    /// The account status as the network last said: `active`, `deactivated`, `takendown`,
    /// `suspended`, `deleted`, ...
    pub status: String,
    pub state: SyncState,
    /// The revision the stored records reflect.
    pub rev: Option<String>,
    /// The MST root (`data`) of that revision, as a CID string.
    pub data_cid: Option<String>,
    /// The selector tags that hold this repo, sorted.
    pub tags: Vec<String>,
    pub backfilled_at: Option<Micros>,
    /// Why the last backfill failed, for `SyncState::Failed`.
    pub error: Option<String>,
}

/// A walk edge: the record `did/collection/rkey` points at `target` (a DID) through `attr`.
///
/// Edges are kept whether or not the record itself is retained, so that a graph walk can follow a
/// repo without storing its follows, and an unfollow (a delete, which carries no record) can be
/// traced back to the DID it unfollowed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Edge {
    pub did: String,
    pub collection: String,
    pub rkey: String,
    /// The selector's dotted path, e.g. `subject` or `subject.uri`.
    pub attr: String,
    pub target: String,
}

/// A record's identity in a repo.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    pub did: String,
    pub collection: String,
    pub rkey: String,
}

/// Records of one repo from a backfill, in chunks so that a large repo never sits in memory whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackfillChunk {
    pub did: String,
    /// Remove every record, link and edge the repo has before adding these (a repo backfilled
    /// again after a crash). The engine sets it only where data may exist, because it costs a scan.
    pub replace: bool,
    pub records: Vec<Record>,
    pub edges: Vec<Edge>,
}

/// Everything one transaction makes durable. Applied in this order: `purged`, `cleared`,
/// `backfill`, `changes`, `edges_removed`, `edges_added`, `repos`, `kv`, `events`, `events_before`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Repos no tag holds any more: their rows, records, links and edges are removed.
    pub purged: Vec<String>,
    /// Repos whose records, links and edges are removed but whose row stays (a takedown).
    pub cleared: Vec<String>,
    /// Bulk loads from `getRepo`.
    pub backfill: Vec<BackfillChunk>,
    /// Record changes, in order. A create of an existing key or an update of a missing one is
    /// applied as an upsert; a delete of a missing key does nothing.
    pub changes: Vec<Change>,
    /// Records whose edges are all removed (deleted or updated follows).
    pub edges_removed: Vec<RecordKey>,
    pub edges_added: Vec<Edge>,
    /// Repo rows to insert or replace.
    pub repos: Vec<RepoRow>,
    /// Small values to set (`Some`) or remove (`None`): cursors, the identity cache.
    pub kv: Vec<(String, Option<String>)>,
    /// Events appended to the stream log, after the data they describe.
    pub events: Vec<StreamEvent>,
    /// Log events older than this (µs) are dropped: the log's retention.
    pub events_before: Option<Micros>,
}

impl Batch {
    /// True if applying the batch would change nothing.
    pub fn is_empty(&self) -> bool {
        self.purged.is_empty()
            && self.cleared.is_empty()
            && self.backfill.is_empty()
            && self.changes.is_empty()
            && self.edges_removed.is_empty()
            && self.edges_added.is_empty()
            && self.repos.is_empty()
            && self.kv.is_empty()
            && self.events.is_empty()
            && self.events_before.is_none()
    }
}

/// What a [`StreamEvent`] tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Commit,
    Identity,
    Account,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Commit => "commit",
            EventKind::Identity => "identity",
            EventKind::Account => "account",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        match text {
            "commit" => Some(EventKind::Commit),
            "identity" => Some(EventKind::Identity),
            "account" => Some(EventKind::Account),
            _ => None,
        }
    }
}

/// One event of the verified stream Butterfly serves, kept in the store's event log so that
/// consumers can replay from a cursor. The JSON is Jetstream's event shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEvent {
    /// When the event was committed, in µs since the epoch: strictly increasing along the log,
    /// and the cursor a consumer resumes from.
    pub time_us: Micros,
    pub did: String,
    pub kind: EventKind,
    /// A commit's collection (for `wantedCollections`), `None` for other kinds.
    pub collection: Option<String>,
    /// The whole event as Jetstream sends it, `time_us` included.
    pub json: String,
}

/// A page request: records after `cursor` (an rkey) in rkey order, newest first unless `reverse`,
/// as `com.atproto.repo.listRecords` pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<'a> {
    pub cursor: Option<&'a str>,
    pub limit: usize,
    pub reverse: bool,
}

/// A record that links to a subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backlink {
    pub did: String,
    pub collection: String,
    pub rkey: String,
    /// Where in the record the link sits, e.g. `.subject.uri`.
    pub path: String,
}

impl Backlink {
    /// The opaque cursor that continues a listing after this backlink: a JSON array of its
    /// rkey, DID, collection and path (the listing's sort key).
    pub fn cursor(&self) -> String {
        serde_json::json!([self.rkey, self.did, self.collection, self.path]).to_string()
    }

    /// Reads a cursor made by [`Backlink::cursor`].
    pub fn from_cursor(cursor: &str) -> Result<Backlink, Error> {
        let (rkey, did, collection, path): (String, String, String, String) =
            serde_json::from_str(cursor)
                .map_err(|err| Error::Invalid(format!("backlinks cursor {cursor:?}: {err}")))?;
        Ok(Backlink {
            did,
            collection,
            rkey,
            path,
        })
    }
}

/// Which backlinks to list: those to `target` (an AT-URI or DID), optionally only from one
/// collection and path, after `cursor` (an opaque string from the previous page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BacklinkQuery<'a> {
    pub target: &'a str,
    pub collection: Option<&'a str>,
    pub path: Option<&'a str>,
    pub cursor: Option<&'a str>,
    pub limit: usize,
}

/// A page of backlinks and the cursor for the next one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BacklinkPage {
    pub links: Vec<Backlink>,
    /// Where the next page starts; `None` when this page ends the list. Opaque: it encodes the
    /// sort key of the page's last link, and only the store that made it can read it.
    pub cursor: Option<String>,
}

/// Counts for `butterfly status`.
///
/// Every list is sorted by name and names only what exists: the states, statuses and collections
/// with at least one repo or record, and every tag some repo row holds (in `records_by_tag` too,
/// with 0 when its repos have no records). Records of a repo without a row count in `records`
/// and `records_by_collection` only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub repos: u64,
    pub records: u64,
    /// Repos per sync state.
    pub repos_by_state: Vec<(String, u64)>,
    /// Repos per account status.
    pub repos_by_status: Vec<(String, u64)>,
    /// Repos per tag.
    pub repos_by_tag: Vec<(String, u64)>,
    /// Records per collection.
    pub records_by_collection: Vec<(String, u64)>,
    /// Records per tag (a record counts once for every tag of its repo).
    pub records_by_tag: Vec<(String, u64)>,
}

/// A place the engine keeps what it syncs.
///
/// `apply` is the only way to write, and it is all-or-nothing. Reads see what the last successful
/// `apply` left.
pub trait Store: Send {
    /// Makes `batch` durable in one transaction.
    fn apply(&mut self, batch: Batch) -> Result<(), Error>;

    /// A small value, or `None`.
    fn kv_get(&self, key: &str) -> Result<Option<String>, Error>;

    /// One repo's row.
    fn repo(&self, did: &str) -> Result<Option<RepoRow>, Error>;

    /// Every repo row, by DID.
    fn repos(&self) -> Result<Vec<RepoRow>, Error>;

    /// Up to `limit` repo rows with DIDs after `after`, by DID: a page of `listRepos`.
    fn repos_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<RepoRow>, Error>;

    /// The repo whose (verified) handle is `handle`, compared without regard to ASCII case.
    fn repo_by_handle(&self, handle: &str) -> Result<Option<RepoRow>, Error>;

    /// The collections a repo holds records of, sorted.
    fn collections(&self, did: &str) -> Result<Vec<String>, Error>;

    /// Every walk edge, to rebuild the selector graph at start.
    fn edges(&self) -> Result<Vec<Edge>, Error>;

    /// Every record of a repo as `(collection, rkey, cid)`, sorted, for a resync's diff.
    fn record_keys(&self, did: &str) -> Result<Vec<(String, String, String)>, Error>;

    /// The `n` greatest rkeys of one collection of a repo, greatest first: the newest records
    /// when rkeys are TIDs. For keeping `latest:N` exact.
    fn newest_rkeys(&self, did: &str, collection: &str, n: usize) -> Result<Vec<String>, Error>;

    /// One record.
    fn get_record(&self, did: &str, collection: &str, rkey: &str) -> Result<Option<Record>, Error>;

    /// A page of one collection of a repo.
    fn list_records(
        &self,
        did: &str,
        collection: &str,
        page: Page<'_>,
    ) -> Result<Vec<Record>, Error>;

    /// Records that link to a subject, newest first: by the linking record's rkey descending (so
    /// TID rkeys come newest first), then by DID, collection and path ascending. A record links
    /// once per path, as [`links_in`] reports it. The page holds at most `query.limit` links and
    /// its cursor continues strictly after the last of them.
    fn backlinks(&self, query: BacklinkQuery<'_>) -> Result<BacklinkPage, Error>;

    /// How many records link to `target`, optionally only from one collection and path: the
    /// number of links [`Store::backlinks`] would list, over all pages.
    fn count_backlinks(
        &self,
        target: &str,
        collection: Option<&str>,
        path: Option<&str>,
    ) -> Result<u64, Error>;

    /// Counts for `butterfly status`.
    fn summary(&self) -> Result<Summary, Error>;

    /// Up to `limit` logged events with `time_us` greater than `after`, oldest first.
    fn events_after(&self, after: Micros, limit: usize) -> Result<Vec<StreamEvent>, Error>;
}
