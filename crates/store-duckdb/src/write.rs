//! `apply`: one batch, one transaction.
//!
//! A batch is first reduced in memory to what it changes, in the order [`Batch`] documents:
//!
//! - `wiped`: the repos whose stored records, links and edges go (purged, cleared, or loaded
//!   again by a replacing backfill chunk);
//! - the final state of every record key the batch touches: its last upsert, or a delete
//!   (backfilled records and changes alike; a replacing chunk forgets what earlier chunks of
//!   the same batch loaded for its repo);
//! - the edges to remove and to add, the repo rows and the kv entries, last write winning.
//!
//! Then the database work is set-based: one `DELETE` per table for the wiped repos, one per
//! thousand keys for records that may exist already, and the surviving rows go in through
//! DuckDB's appender. Everything runs inside the caller's transaction.
//!
//! Record JSON is read to find links ([`butterfly_store::links_in`]), every record's, so that
//! one that is not JSON fails the batch even if a later change replaces it. A second thread
//! parses and lays the rows out as Arrow record batches while this one deletes, then hands the
//! batches to DuckDB's appender: DuckDB appends on one thread, and the Rust side of the work
//! then costs it little.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{mpsc, Arc, LazyLock};

use butterfly_store::{record_links, Action, Batch, Edge, Error, Link, Micros, Record, RepoRow};
use duckdb::arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use duckdb::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::{params, params_from_iter, Connection};

use crate::backend;
use crate::read::records_by_rid;
use crate::schema::record_id;

/// Keys per `IN` list: small enough that DuckDB still answers from an index.
const KEYS_PER_STATEMENT: usize = 1000;

/// DIDs per lookup of which repos have records; see [`delete_keys`].
const DIDS_PER_LOOKUP: usize = 16;

/// Batches with fewer records than this are parsed on the calling thread.
const PARSE_THREAD_MIN: usize = 512;

/// Rows per Arrow record batch handed to the appender: DuckDB's vector size.
const ROWS_PER_BATCH: usize = 2048;

type Key<'a> = (&'a str, &'a str, &'a str);

/// The maps of a batch's keys, hashed with foldhash: SipHash over every record key of a
/// backfill batch was a tenth of the store thread's time. Seeded at random per map.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A record the batch writes (a backfilled record, or a create or update), borrowed from it.
struct Source<'a> {
    did: &'a str,
    collection: &'a str,
    rkey: &'a str,
    cid: &'a str,
    rev: &'a str,
    json: &'a str,
    indexed_at: Micros,
}

impl<'a> From<&'a Record> for Source<'a> {
    fn from(record: &'a Record) -> Source<'a> {
        Source {
            did: &record.did,
            collection: &record.collection,
            rkey: &record.rkey,
            cid: &record.cid,
            rev: &record.rev,
            json: &record.json,
            indexed_at: record.indexed_at,
        }
    }
}

/// The final state of every record key a batch touches: `Some(source index)` to write,
/// `None` to delete.
#[derive(Default)]
struct Overlay<'a> {
    ops: Vec<Option<(Key<'a>, Option<usize>)>>,
    by_key: FastMap<Key<'a>, usize>,
    by_did: FastMap<&'a str, Vec<usize>>,
}

impl<'a> Overlay<'a> {
    fn set(&mut self, key: Key<'a>, source: Option<usize>) {
        match self.by_key.entry(key) {
            Entry::Occupied(found) => self.ops[*found.get()] = Some((key, source)),
            Entry::Vacant(slot) => {
                let idx = self.ops.len();
                slot.insert(idx);
                self.ops.push(Some((key, source)));
                self.by_did.entry(key.0).or_default().push(idx);
            }
        }
    }

    /// Forgets everything the batch did so far to one repo's records.
    fn forget_repo(&mut self, did: &str) {
        for idx in self.by_did.remove(did).unwrap_or_default() {
            if let Some((key, _)) = self.ops[idx].take() {
                self.by_key.remove(&key);
            }
        }
    }
}

/// The edges a batch leaves to add, after replacing chunks and `edges_removed`.
#[derive(Default)]
struct EdgeOverlay<'a> {
    pending: Vec<Option<&'a Edge>>,
    by_did: FastMap<&'a str, Vec<usize>>,
}

impl<'a> EdgeOverlay<'a> {
    fn add(&mut self, edge: &'a Edge) {
        self.by_did
            .entry(&edge.did)
            .or_default()
            .push(self.pending.len());
        self.pending.push(Some(edge));
    }

    fn forget_repo(&mut self, did: &str) {
        for idx in self.by_did.remove(did).unwrap_or_default() {
            self.pending[idx] = None;
        }
    }

    fn forget_record(&mut self, did: &str, collection: &str, rkey: &str) {
        for &idx in self.by_did.get(did).map(Vec::as_slice).unwrap_or_default() {
            if self.pending[idx]
                .is_some_and(|edge| edge.collection == collection && edge.rkey == rkey)
            {
                self.pending[idx] = None;
            }
        }
    }
}

/// Applies `batch` inside the open transaction of `conn`. On error the caller rolls back.
pub(crate) fn apply(conn: &Connection, batch: &Batch) -> Result<(), Error> {
    let sources = sources(batch)?;

    let mut wiped: Vec<&str> = Vec::new();
    let mut wiped_set: HashSet<&str> = HashSet::new();
    for did in batch.purged.iter().chain(&batch.cleared) {
        if wiped_set.insert(did) {
            wiped.push(did);
        }
    }
    let mut overlay = Overlay::default();
    let mut edges = EdgeOverlay::default();
    let mut next_source = 0;
    for chunk in &batch.backfill {
        if chunk.replace {
            overlay.forget_repo(&chunk.did);
            edges.forget_repo(&chunk.did);
            if wiped_set.insert(&chunk.did) {
                wiped.push(&chunk.did);
            }
        }
        for record in &chunk.records {
            let key = (
                record.did.as_str(),
                record.collection.as_str(),
                record.rkey.as_str(),
            );
            overlay.set(key, Some(next_source));
            next_source += 1;
        }
        for edge in &chunk.edges {
            edges.add(edge);
        }
    }
    for change in &batch.changes {
        let key = (
            change.did.as_str(),
            change.collection.as_str(),
            change.rkey.as_str(),
        );
        if change.action == Action::Delete {
            overlay.set(key, None);
        } else {
            overlay.set(key, Some(next_source));
            next_source += 1;
        }
    }
    for key in &batch.edges_removed {
        edges.forget_record(&key.did, &key.collection, &key.rkey);
    }
    for edge in &batch.edges_added {
        edges.add(edge);
    }
    let written = overlay
        .ops
        .iter()
        .flatten()
        .filter_map(|(_, source)| *source);

    let mut writes = vec![false; sources.len()];
    for idx in written {
        writes[idx] = true;
    }
    if sources.len() < PARSE_THREAD_MIN {
        let mut rows = Vec::new();
        lay_out(&sources, &writes, |message| {
            rows.push(message);
            true
        });
        write_records(conn, batch, &wiped, &wiped_set, &overlay, rows)?;
    } else {
        std::thread::scope(|scope| {
            let (sender, receiver) = mpsc::sync_channel(16);
            let (sources, writes) = (&sources, &writes);
            scope.spawn(move || {
                // The writer stops listening when it fails; then so do we.
                lay_out(sources, writes, |message| sender.send(message).is_ok());
            });
            write_records(conn, batch, &wiped, &wiped_set, &overlay, receiver)
        })?;
    }

    for key in &batch.edges_removed {
        conn.prepare_cached("DELETE FROM edges WHERE did = ? AND collection = ? AND rkey = ?")
            .and_then(|mut statement| statement.execute(params![key.did, key.collection, key.rkey]))
            .map_err(backend("remove edges"))?;
    }
    let added: BTreeSet<&Edge> = edges.pending.iter().flatten().copied().collect();
    add_edges(conn, &added)?;
    upsert_repos(conn, &batch.repos)?;
    set_kv(conn, &batch.kv)?;
    append_events(conn, &batch.events)?;
    if let Some(before) = batch.events_before {
        conn.prepare_cached("DELETE FROM events WHERE time_us < ?")
            .and_then(|mut statement| statement.execute(params![before]))
            .map_err(backend("trim the event log"))?;
    }
    Ok(())
}

/// Appends to the event log.
fn append_events(conn: &Connection, events: &[butterfly_store::StreamEvent]) -> Result<(), Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut appender = conn.appender("events").map_err(backend("append events"))?;
    for event in events {
        appender
            .append_row(params![
                event.time_us,
                event.did,
                event.kind.as_str(),
                event.collection,
                event.json
            ])
            .map_err(backend("append events"))?;
    }
    appender.flush().map_err(backend("append events"))
}

/// Every record the batch writes, in order, refusing a create or update that lacks its CID or
/// its record.
fn sources(batch: &Batch) -> Result<Vec<Source<'_>>, Error> {
    let mut sources = Vec::new();
    for chunk in &batch.backfill {
        sources.extend(chunk.records.iter().map(Source::from));
    }
    for change in &batch.changes {
        let Some((cid, json)) = change.written()? else {
            continue;
        };
        sources.push(Source {
            did: &change.did,
            collection: &change.collection,
            rkey: &change.rkey,
            cid,
            rev: &change.rev,
            json,
            indexed_at: change.indexed_at,
        });
    }
    Ok(sources)
}

/// Rows for the appenders, from [`lay_out`].
enum Rows {
    Records(RecordBatch),
    Links(RecordBatch),
    /// Every source was parsed.
    Done,
}

/// Parses every source, and lays out the rows of those marked in `writes` (and their links) as
/// record batches, passing each to `emit` until it returns false. Stops at the first record that
/// is not JSON, emitting the error.
fn lay_out(
    sources: &[Source<'_>],
    writes: &[bool],
    mut emit: impl FnMut(Result<Rows, Error>) -> bool,
) {
    let mut records = RecordColumns::default();
    let mut links = LinkColumns::default();
    for (source, &write) in sources.iter().zip(writes) {
        let found = match record_links(source.did, source.collection, source.rkey, source.json) {
            Ok(found) => found,
            Err(err) => {
                emit(Err(err));
                return;
            }
        };
        if !write {
            continue;
        }
        let rid = record_id(source.did, source.collection, source.rkey);
        records.push(source, rid);
        for link in &found {
            links.push(source, link, rid);
        }
        if records.len >= ROWS_PER_BATCH && !emit(records.finish().map(Rows::Records)) {
            return;
        }
        if links.len >= ROWS_PER_BATCH && !emit(links.finish().map(Rows::Links)) {
            return;
        }
    }
    if records.len > 0 && !emit(records.finish().map(Rows::Records)) {
        return;
    }
    if links.len > 0 && !emit(links.finish().map(Rows::Links)) {
        return;
    }
    emit(Ok(Rows::Done));
}

/// `records` as Arrow columns, in table order.
struct RecordColumns {
    len: usize,
    text: [StringBuilder; 6],
    indexed_at: TimestampMicrosecondBuilder,
    rid: Int64Builder,
}

impl Default for RecordColumns {
    fn default() -> RecordColumns {
        RecordColumns {
            len: 0,
            text: std::array::from_fn(|_| StringBuilder::new()),
            indexed_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            rid: Int64Builder::new(),
        }
    }
}

impl RecordColumns {
    /// Appends a record; `rid` is its [`record_id`], worked out once for it and its links.
    fn push(&mut self, row: &Source<'_>, rid: i64) {
        let [did, collection, rkey, cid, rev, record] = &mut self.text;
        did.append_value(row.did);
        collection.append_value(row.collection);
        rkey.append_value(row.rkey);
        cid.append_value(row.cid);
        rev.append_value(row.rev);
        record.append_value(row.json);
        self.indexed_at.append_value(row.indexed_at);
        self.rid.append_value(rid);
        self.len += 1;
    }

    fn finish(&mut self) -> Result<RecordBatch, Error> {
        static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
            let text = |name: &str| Field::new(name, DataType::Utf8, false);
            Arc::new(Schema::new(vec![
                text("did"),
                text("collection"),
                text("rkey"),
                text("cid"),
                text("rev"),
                text("record"),
                Field::new(
                    "indexed_at",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    false,
                ),
                Field::new("rid", DataType::Int64, false),
            ]))
        });
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(8);
        for builder in &mut self.text {
            columns.push(Arc::new(builder.finish()));
        }
        columns.push(Arc::new(self.indexed_at.finish()));
        columns.push(Arc::new(self.rid.finish()));
        self.len = 0;
        RecordBatch::try_new(SCHEMA.clone(), columns)
            .map_err(|err| Error::Backend(format!("lay out records: {err}")))
    }
}

/// `links` as Arrow columns, in table order.
struct LinkColumns {
    len: usize,
    text: [StringBuilder; 5],
    rid: Int64Builder,
}

impl Default for LinkColumns {
    fn default() -> LinkColumns {
        LinkColumns {
            len: 0,
            text: std::array::from_fn(|_| StringBuilder::new()),
            rid: Int64Builder::new(),
        }
    }
}

impl LinkColumns {
    fn push(&mut self, row: &Source<'_>, link: &Link, rid: i64) {
        let [target, did, collection, rkey, path] = &mut self.text;
        target.append_value(&link.target);
        did.append_value(row.did);
        collection.append_value(row.collection);
        rkey.append_value(row.rkey);
        path.append_value(&link.path);
        self.rid.append_value(rid);
        self.len += 1;
    }

    fn finish(&mut self) -> Result<RecordBatch, Error> {
        static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
            let text = |name: &str| Field::new(name, DataType::Utf8, false);
            Arc::new(Schema::new(vec![
                text("target"),
                text("did"),
                text("collection"),
                text("rkey"),
                text("path"),
                Field::new("rid", DataType::Int64, false),
            ]))
        });
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(6);
        for builder in &mut self.text {
            columns.push(Arc::new(builder.finish()));
        }
        columns.push(Arc::new(self.rid.finish()));
        self.len = 0;
        RecordBatch::try_new(SCHEMA.clone(), columns)
            .map_err(|err| Error::Backend(format!("lay out links: {err}")))
    }
}

/// The record half of a batch: deletes, then appends of the rows that arrive from `rows`.
fn write_records(
    conn: &Connection,
    batch: &Batch,
    wiped: &[&str],
    wiped_set: &HashSet<&str>,
    overlay: &Overlay<'_>,
    rows: impl IntoIterator<Item = Result<Rows, Error>>,
) -> Result<(), Error> {
    if !batch.purged.is_empty() {
        let purged: Vec<&str> = batch.purged.iter().map(String::as_str).collect();
        delete_where_did_in(conn, "repos", &purged)?;
    }
    if !wiped.is_empty() {
        for table in ["records", "links", "edges"] {
            delete_where_did_in(conn, table, wiped)?;
        }
    }
    let victims = delete_keys(conn, overlay, wiped_set)?;

    let mut records = conn
        .appender("records")
        .map_err(backend("append records"))?;
    let mut links = conn.appender("links").map_err(backend("append links"))?;
    let mut done = false;
    for message in rows {
        match message? {
            Rows::Records(batch) => records
                .append_record_batch(batch)
                .map_err(backend("append records"))?,
            Rows::Links(batch) => links
                .append_record_batch(batch)
                .map_err(backend("append links"))?,
            Rows::Done => done = true,
        }
    }
    if !done {
        return Err(Error::Backend(
            "laying out records stopped early".to_owned(),
        ));
    }
    if !victims.is_empty() {
        let mut record_columns = RecordColumns::default();
        let mut link_columns = LinkColumns::default();
        for (victim, victim_links) in &victims {
            let source = Source::from(victim);
            let rid = record_id(source.did, source.collection, source.rkey);
            record_columns.push(&source, rid);
            for link in victim_links {
                link_columns.push(&source, link, rid);
            }
        }
        records
            .append_record_batch(record_columns.finish()?)
            .map_err(backend("append records"))?;
        links
            .append_record_batch(link_columns.finish()?)
            .map_err(backend("append links"))?;
    }
    records.flush().map_err(backend("append records"))?;
    links.flush().map_err(backend("append links"))
}

/// `DELETE FROM <table> WHERE did IN (...)`, a thousand DIDs at a time.
fn delete_where_did_in(conn: &Connection, table: &str, dids: &[&str]) -> Result<(), Error> {
    for part in dids.chunks(KEYS_PER_STATEMENT) {
        let sql = format!(
            "DELETE FROM {table} WHERE did IN ({})",
            placeholders(part.len())
        );
        conn.execute(&sql, params_from_iter(part))
            .map_err(backend("delete repos' rows"))?;
    }
    Ok(())
}

/// Deletes the stored records (and their links) of every key in the overlay, except keys of
/// wiped repos, which are gone already. Returns the rows that shared a `rid` with a deleted key
/// without being one of them: they were deleted too and must be written back.
fn delete_keys(
    conn: &Connection,
    overlay: &Overlay<'_>,
    wiped: &HashSet<&str>,
) -> Result<Vec<StoredRecord>, Error> {
    let keys: Vec<Key<'_>> = overlay
        .ops
        .iter()
        .flatten()
        .map(|(key, _)| *key)
        .filter(|key| !wiped.contains(key.0))
        .collect();
    // A backfill writes many keys of few repos, most with nothing stored yet: then it is
    // cheaper to ask first which repos have records, and look up keys only in those. Live
    // changes touch about one key per repo, most of which exist: then look them all up.
    let dids: Vec<&str> = overlay
        .by_did
        .keys()
        .copied()
        .filter(|did| !wiped.contains(did))
        .collect();
    let keys = if keys.len() > KEYS_PER_STATEMENT && keys.len() >= 8 * dids.len() {
        let stored = stored_repos(conn, &dids)?;
        if stored.is_empty() {
            return Ok(Vec::new());
        }
        keys.into_iter()
            .filter(|key| stored.contains(key.0))
            .collect()
    } else {
        keys
    };

    // Rows found under a key's rid but with another key are collisions, unless that key is
    // being deleted too (perhaps in another statement): a key the batch touches. (Keys of wiped
    // repos and of repos with nothing stored are never found.)
    let wanted = &overlay.by_key;
    let mut victims = Vec::new();
    for part in keys.chunks(KEYS_PER_STATEMENT) {
        let rids = part
            .iter()
            .map(|(did, collection, rkey)| record_id(did, collection, rkey).to_string())
            .collect::<Vec<String>>()
            .join(", ");
        let mut statement = conn
            .prepare(&format!(
                "SELECT did, collection, rkey, rid FROM records WHERE rid IN ({rids})"
            ))
            .map_err(backend("find stored records"))?;
        let found = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(backend("find stored records"))?;
        if found.is_empty() {
            continue;
        }
        let collided: Vec<String> = found
            .iter()
            .filter(|(did, collection, rkey, _)| {
                !wanted.contains_key(&(did.as_str(), collection.as_str(), rkey.as_str()))
            })
            .map(|(_, _, _, rid)| rid.to_string())
            .collect();
        if !collided.is_empty() {
            victims.extend(collision_victims(conn, &collided.join(", "), wanted)?);
        }
        // Only the rids found have rows (a link row always has its record's), and each one
        // costs an index lookup in both tables: most keys of a live batch are new records. (A
        // rid repeats only where keys collide; `IN` takes it twice the same.)
        let found_rids = found
            .iter()
            .map(|(_, _, _, rid)| rid.to_string())
            .collect::<Vec<String>>()
            .join(", ");
        conn.execute_batch(&format!(
            "DELETE FROM records WHERE rid IN ({found_rids}); \
             DELETE FROM links WHERE rid IN ({found_rids});"
        ))
        .map_err(backend("delete replaced records"))?;
    }
    Ok(victims)
}

/// Which of `dids` have records.
fn stored_repos(conn: &Connection, dids: &[&str]) -> Result<HashSet<String>, Error> {
    // DuckDB takes a string `IN` list of more than about twenty values to a full scan instead of
    // the index, so the question goes in groups of sixteen (padded with repeats), one `UNION
    // ALL` branch each, in statements of up to a thousand DIDs.
    let mut stored: HashSet<String> = HashSet::new();
    for part in dids.chunks(KEYS_PER_STATEMENT) {
        let n_groups = part.len().div_ceil(DIDS_PER_LOOKUP);
        let branch = format!(
            "SELECT did FROM records WHERE did IN ({})",
            placeholders(DIDS_PER_LOOKUP)
        );
        let sql = format!(
            "SELECT DISTINCT did FROM ({})",
            vec![branch; n_groups].join(" UNION ALL ")
        );
        let padded = part.chunks(DIDS_PER_LOOKUP).flat_map(|group| {
            group
                .iter()
                .chain(std::iter::repeat(&group[0]))
                .take(DIDS_PER_LOOKUP)
        });
        let mut statement = conn
            .prepare_cached(&sql)
            .map_err(backend("find stored repos"))?;
        let found = statement
            .query_map(params_from_iter(padded), |row| row.get::<_, String>(0))
            .and_then(Iterator::collect::<Result<Vec<String>, _>>)
            .map_err(backend("find stored repos"))?;
        stored.extend(found);
    }
    Ok(stored)
}

/// A stored record read back, to be written again, with its links.
type StoredRecord = (Record, Vec<Link>);

/// Rows in `records` with one of `rids` whose key the batch does not touch (`wanted`), with
/// their links.
fn collision_victims(
    conn: &Connection,
    rids: &str,
    wanted: &FastMap<Key<'_>, usize>,
) -> Result<Vec<StoredRecord>, Error> {
    let rows = records_by_rid(conn, rids, "read colliding records")?;
    let mut victims = Vec::new();
    for row in rows {
        if wanted.contains_key(&(row.did.as_str(), row.collection.as_str(), row.rkey.as_str())) {
            continue;
        }
        let links = record_links(&row.did, &row.collection, &row.rkey, &row.json)?;
        victims.push((row, links));
    }
    Ok(victims)
}

/// Moves rows into a table through a temporary one, made on first use: `fill` appends the rows
/// to it, and the table's `merge` moves them on (`INSERT ... SELECT`).
/// Binding one statement per row, or one `VALUES` list of many parameters, costs DuckDB more
/// than the write itself.
fn through_temp_table(
    conn: &Connection,
    table: &TempTable,
    what: &'static str,
    fill: impl FnOnce(&mut duckdb::Appender<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let TempTable {
        name,
        columns,
        merge,
    } = table;
    conn.execute_batch(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS {name} ({columns})"
    ))
    .map_err(backend(what))?;
    {
        let mut appender = conn
            .appender_to_catalog_and_db(name, "temp", "main")
            .map_err(backend(what))?;
        fill(&mut appender)?;
        appender.flush().map_err(backend(what))?;
    }
    conn.execute_batch(&format!(
        "{merge} FROM temp.{name}; DELETE FROM temp.{name};"
    ))
    .map_err(backend(what))
}

/// A temporary table for [`through_temp_table`]: its name, its columns, and the statement (up
/// to its `FROM`) that moves its rows on.
struct TempTable {
    name: &'static str,
    columns: &'static str,
    merge: &'static str,
}

/// Adds edges that are not there yet.
fn add_edges(conn: &Connection, edges: &BTreeSet<&Edge>) -> Result<(), Error> {
    if edges.is_empty() {
        return Ok(());
    }
    let table = TempTable {
        name: "new_edges",
        columns: "did VARCHAR, collection VARCHAR, rkey VARCHAR, attr VARCHAR, target VARCHAR",
        merge: "INSERT OR IGNORE INTO edges SELECT *",
    };
    through_temp_table(conn, &table, "add edges", |appender| {
        for edge in edges {
            appender
                .append_row(params![
                    edge.did,
                    edge.collection,
                    edge.rkey,
                    edge.attr,
                    edge.target
                ])
                .map_err(backend("add edges"))?;
        }
        Ok(())
    })
}

/// Inserts or replaces repo rows, the last of a DID winning.
fn upsert_repos(conn: &Connection, rows: &[RepoRow]) -> Result<(), Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (idx, row) in rows.iter().enumerate() {
        last.insert(&row.did, idx);
    }
    let table = TempTable {
        name: "new_repos",
        columns: "did VARCHAR, handle VARCHAR, pds VARCHAR, status VARCHAR, state VARCHAR, \
                  rev VARCHAR, data_cid VARCHAR, tags VARCHAR, backfilled_at BIGINT, error VARCHAR",
        merge: "INSERT OR REPLACE INTO repos SELECT did, handle, pds, status, state, rev, \
                data_cid, tags::JSON::VARCHAR[], make_timestamp(backfilled_at)::TIMESTAMPTZ, error",
    };
    through_temp_table(conn, &table, "write repo rows", |appender| {
        for (idx, row) in rows.iter().enumerate() {
            if last.get(row.did.as_str()) != Some(&idx) {
                continue;
            }
            let tags = serde_json::to_string(&row.tags)
                .map_err(|e| Error::Backend(format!("write repo rows: {e}")))?;
            appender
                .append_row(params![
                    row.did,
                    row.handle,
                    row.pds,
                    row.status,
                    row.state.as_str(),
                    row.rev,
                    row.data_cid,
                    tags,
                    row.backfilled_at,
                    row.error
                ])
                .map_err(backend("write repo rows"))?;
        }
        Ok(())
    })
}

/// Sets and removes kv entries, the last for a key winning.
fn set_kv(conn: &Connection, entries: &[(String, Option<String>)]) -> Result<(), Error> {
    let mut last: HashMap<&str, Option<&str>> = HashMap::new();
    for (key, value) in entries {
        last.insert(key, value.as_deref());
    }
    for (key, value) in last {
        match value {
            Some(value) => conn
                .prepare_cached("INSERT OR REPLACE INTO kv VALUES (?, ?)")
                .and_then(|mut statement| statement.execute(params![key, value])),
            None => conn
                .prepare_cached("DELETE FROM kv WHERE key = ?")
                .and_then(|mut statement| statement.execute(params![key])),
        }
        .map_err(backend("write kv"))?;
    }
    Ok(())
}

/// `?, ?, ?` for `n` parameters.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}
