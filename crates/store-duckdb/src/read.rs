//! The reads of the [`Store`](butterfly_store::Store) trait.
//!
//! DuckDB answers from an index only when the scan has a single filter, an equality (or `IN`)
//! on an indexed column. Queries here are shaped for that: a record by its `rid` alone, then
//! the key compared here; a repo's records by `did` alone, with any further condition kept out
//! of the scan by a `LIMIT` that no row reaches (a filter cannot move below a `LIMIT`).

// Statements here are prepared afresh for each read, never cached: DuckDB 1.5 (through the
// duckdb crate) returned corrupt strings from a cached statement run again on one connection while
// another connection changed the table (`tests/concurrent.rs`). Fresh statements made that rarer,
// not impossible, so reads also wait for writes on the store's gate (`DuckDbStore::gate`).

use butterfly_store::{
    Backlink, BacklinkPage, BacklinkQuery, Edge, Error, EventKind, Page, Record, RepoRow,
    StreamEvent, Summary, SyncState,
};
use duckdb::{params, params_from_iter, Connection, Row};

use crate::backend;
use crate::schema::record_id;

/// A subquery for `columns` of one repo's records (the DID is its parameter), so that further
/// conditions apply above the `did` index scan rather than in it.
fn repo_rows(columns: &str) -> String {
    format!("(SELECT {columns} FROM records WHERE did = ? LIMIT 9223372036854775807)")
}

const RECORD_COLUMNS: &str =
    "did, collection, rkey, cid, rev, record::VARCHAR, epoch_us(indexed_at)";

fn record_from(row: &Row<'_>) -> duckdb::Result<Record> {
    Ok(Record {
        did: row.get(0)?,
        collection: row.get(1)?,
        rkey: row.get(2)?,
        cid: row.get(3)?,
        rev: row.get(4)?,
        json: row.get(5)?,
        indexed_at: row.get(6)?,
    })
}

/// Every stored record whose `rid` is in `rids` (a comma-separated list of integers), keys that
/// share a `rid` included: the caller tells them apart.
pub(crate) fn records_by_rid(
    conn: &Connection,
    rids: &str,
    what: &'static str,
) -> Result<Vec<Record>, Error> {
    let mut statement = conn
        .prepare(&format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE rid IN ({rids})"
        ))
        .map_err(backend(what))?;
    statement
        .query_map([], record_from)
        .and_then(Iterator::collect::<Result<Vec<Record>, _>>)
        .map_err(backend(what))
}

pub(crate) fn events_after(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> Result<Vec<StreamEvent>, Error> {
    let mut statement = conn
        .prepare(
            "SELECT time_us, did, kind, collection, event::VARCHAR FROM events \
             WHERE time_us > ? ORDER BY time_us LIMIT ?",
        )
        .map_err(backend("read the event log"))?;
    let rows = statement
        .query_map(
            params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, String>(4)?,
                ))
            },
        )
        .map_err(backend("read the event log"))?;
    let mut events = Vec::new();
    for row in rows {
        let (time_us, did, kind, collection, json) = row.map_err(backend("read the event log"))?;
        let kind = EventKind::parse(&kind)
            .ok_or_else(|| Error::Corrupt(format!("event log: unknown kind {kind:?}")))?;
        events.push(StreamEvent {
            time_us,
            did,
            kind,
            collection,
            json,
        });
    }
    Ok(events)
}

pub(crate) fn kv_get(conn: &Connection, key: &str) -> Result<Option<String>, Error> {
    let mut statement = conn
        .prepare("SELECT value FROM kv WHERE key = ?")
        .map_err(backend("read kv"))?;
    let mut rows = statement
        .query_map(params![key], |row| row.get::<_, String>(0))
        .map_err(backend("read kv"))?;
    rows.next().transpose().map_err(backend("read kv"))
}

const REPO_COLUMNS: &str = "did, handle, pds, status, state, rev, data_cid, \
     to_json(tags)::VARCHAR, epoch_us(backfilled_at), error";

type RepoColumns = (
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    Option<i64>,
    Option<String>,
);

fn repo_columns(row: &Row<'_>) -> duckdb::Result<RepoColumns> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
    ))
}

fn repo_row(columns: RepoColumns) -> Result<RepoRow, Error> {
    let (did, handle, pds, status, state, rev, data_cid, tags, backfilled_at, error) = columns;
    let state = SyncState::parse(&state)
        .ok_or_else(|| Error::Corrupt(format!("repo {did}: unknown state {state:?}")))?;
    let tags: Vec<String> = serde_json::from_str(&tags)
        .map_err(|err| Error::Corrupt(format!("repo {did}: tags {tags:?}: {err}")))?;
    Ok(RepoRow {
        did,
        handle,
        pds,
        status,
        state,
        rev,
        data_cid,
        tags,
        backfilled_at,
        error,
    })
}

pub(crate) fn repo(conn: &Connection, did: &str) -> Result<Option<RepoRow>, Error> {
    let mut statement = conn
        .prepare(&format!("SELECT {REPO_COLUMNS} FROM repos WHERE did = ?"))
        .map_err(backend("read a repo row"))?;
    let found = statement
        .query_map(params![did], repo_columns)
        .and_then(|mut rows| rows.next().transpose())
        .map_err(backend("read a repo row"))?;
    found.map(repo_row).transpose()
}

pub(crate) fn repos_page(
    conn: &Connection,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<RepoRow>, Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut statement = conn
        .prepare(&format!(
            "SELECT {REPO_COLUMNS} FROM repos WHERE did > ? ORDER BY did LIMIT ?"
        ))
        .map_err(backend("read a page of repo rows"))?;
    let rows = statement
        .query_map(params![after.unwrap_or(""), limit], repo_columns)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(backend("read a page of repo rows"))?;
    rows.into_iter().map(repo_row).collect()
}

pub(crate) fn repo_by_handle(conn: &Connection, handle: &str) -> Result<Option<RepoRow>, Error> {
    let mut statement = conn
        .prepare(&format!(
            "SELECT {REPO_COLUMNS} FROM repos WHERE lower(handle) = lower(?) ORDER BY did LIMIT 1"
        ))
        .map_err(backend("find a repo by handle"))?;
    let found = statement
        .query_map(params![handle], repo_columns)
        .and_then(|mut rows| rows.next().transpose())
        .map_err(backend("find a repo by handle"))?;
    found.map(repo_row).transpose()
}

pub(crate) fn collections(conn: &Connection, did: &str) -> Result<Vec<String>, Error> {
    let mut statement = conn
        .prepare("SELECT DISTINCT collection FROM records WHERE did = ? ORDER BY collection")
        .map_err(backend("list a repo's collections"))?;
    statement
        .query_map(params![did], |row| row.get(0))
        .and_then(Iterator::collect)
        .map_err(backend("list a repo's collections"))
}

pub(crate) fn repos(conn: &Connection) -> Result<Vec<RepoRow>, Error> {
    let mut statement = conn
        .prepare(&format!("SELECT {REPO_COLUMNS} FROM repos ORDER BY did"))
        .map_err(backend("read repo rows"))?;
    let rows = statement
        .query_map([], repo_columns)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(backend("read repo rows"))?;
    rows.into_iter().map(repo_row).collect()
}

pub(crate) fn edges(conn: &Connection) -> Result<Vec<Edge>, Error> {
    let mut statement = conn
        .prepare(
            "SELECT did, collection, rkey, attr, target FROM edges \
             ORDER BY did, collection, rkey, attr, target",
        )
        .map_err(backend("read edges"))?;
    statement
        .query_map([], |row| {
            Ok(Edge {
                did: row.get(0)?,
                collection: row.get(1)?,
                rkey: row.get(2)?,
                attr: row.get(3)?,
                target: row.get(4)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(backend("read edges"))
}

pub(crate) fn record_keys(
    conn: &Connection,
    did: &str,
) -> Result<Vec<(String, String, String)>, Error> {
    let mut statement = conn
        .prepare(
            "SELECT collection, rkey, cid FROM records WHERE did = ? ORDER BY collection, rkey",
        )
        .map_err(backend("read record keys"))?;
    statement
        .query_map(params![did], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .and_then(Iterator::collect)
        .map_err(backend("read record keys"))
}

pub(crate) fn newest_rkeys(
    conn: &Connection,
    did: &str,
    collection: &str,
    n: usize,
) -> Result<Vec<String>, Error> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut statement = conn
        .prepare(&format!(
            "SELECT rkey FROM {} WHERE collection = ? ORDER BY rkey DESC",
            repo_rows("collection, rkey")
        ))
        .map_err(backend("read newest rkeys"))?;
    statement
        .query_map(params![did, collection], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.take(n).collect())
        .map_err(backend("read newest rkeys"))
}

pub(crate) fn get_record(
    conn: &Connection,
    did: &str,
    collection: &str,
    rkey: &str,
) -> Result<Option<Record>, Error> {
    let mut statement = conn
        .prepare(&format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE rid = ?"
        ))
        .map_err(backend("read a record"))?;
    let rid = record_id(did, collection, rkey);
    let records = statement
        .query_map(params![rid], record_from)
        .and_then(Iterator::collect::<Result<Vec<Record>, _>>)
        .map_err(backend("read a record"))?;
    Ok(records
        .into_iter()
        .find(|record| record.did == did && record.collection == collection && record.rkey == rkey))
}

pub(crate) fn list_records(
    conn: &Connection,
    did: &str,
    collection: &str,
    page: Page<'_>,
) -> Result<Vec<Record>, Error> {
    if page.limit == 0 {
        return Ok(Vec::new());
    }
    // The page is read in two statements (below); one snapshot keeps a delete between them from
    // emptying the page, which would end the client's paging early. Dropped, it rolls back.
    let snapshot = conn
        .unchecked_transaction()
        .map_err(backend("list records"))?;
    let conn: &Connection = &snapshot;
    let (after, order) = if page.reverse {
        ("rkey > ?", "ASC")
    } else {
        ("rkey < ?", "DESC")
    };
    let condition = if page.cursor.is_some() {
        format!("collection = ? AND {after}")
    } else {
        "collection = ?".to_owned()
    };
    // First the page's rkeys, sorting only keys (a collection may hold millions of records);
    // then the page's records by rid. No LIMIT: DuckDB plans ORDER BY with LIMIT as a top-N that
    // scans the whole table instead of the index; rows past the page are not read.
    let sql = format!(
        "SELECT rkey FROM {} WHERE {condition} ORDER BY rkey {order}",
        repo_rows("collection, rkey")
    );
    let mut statement = conn.prepare(&sql).map_err(backend("list records"))?;
    let rkeys: Vec<String> = match page.cursor {
        Some(cursor) => statement
            .query_map(params![did, collection, cursor], |row| row.get(0))
            .and_then(|rows| rows.take(page.limit).collect()),
        None => statement
            .query_map(params![did, collection], |row| row.get(0))
            .and_then(|rows| rows.take(page.limit).collect()),
    }
    .map_err(backend("list records"))?;
    if rkeys.is_empty() {
        return Ok(Vec::new());
    }
    let rids: Vec<String> = rkeys
        .iter()
        .map(|rkey| record_id(did, collection, rkey).to_string())
        .collect();
    let mut by_rkey: std::collections::HashMap<String, Record> =
        records_by_rid(conn, &rids.join(", "), "list records")?
            .into_iter()
            // Another key may share a rid.
            .filter(|record| record.did == did && record.collection == collection)
            .map(|record| (record.rkey.clone(), record))
            .collect();
    Ok(rkeys
        .iter()
        .filter_map(|rkey| by_rkey.remove(rkey))
        .collect())
}

/// A query over the links to `target` (optionally of one collection and path): a `WITH` that
/// takes them by target alone, then the rest as a filter on `matched`. The target is the scan's
/// only filter, so the `links_target` index answers it when present (see
/// [`crate::DuckDbStore::ensure_backlink_index`]); `MATERIALIZED` keeps the optimiser from
/// merging the other conditions, or the sort, into that scan, which would turn the lookup back
/// into a full scan (measured: 2 ms against 20-40 ms on a million links).
fn backlink_source<'a>(
    target: &'a str,
    collection: Option<&'a str>,
    path: Option<&'a str>,
) -> (String, Vec<String>) {
    let mut sql = "WITH matched AS MATERIALIZED (SELECT rkey, did, collection, path FROM links \
                   WHERE target = ?) SELECT {columns} FROM matched WHERE true"
        .to_owned();
    let mut params = vec![target.to_owned()];
    if let Some(collection) = collection {
        sql.push_str(" AND collection = ?");
        params.push(collection.to_owned());
    }
    if let Some(path) = path {
        sql.push_str(" AND path = ?");
        params.push(path.to_owned());
    }
    (sql, params)
}

pub(crate) fn backlinks(
    conn: &Connection,
    query: BacklinkQuery<'_>,
) -> Result<BacklinkPage, Error> {
    if query.limit == 0 {
        return Ok(BacklinkPage::default());
    }
    let (mut filter, mut params) = backlink_source(query.target, query.collection, query.path);
    if let Some(cursor) = query.cursor {
        // The cursor is the last link of the previous page.
        let Backlink {
            did,
            collection,
            rkey,
            path,
        } = Backlink::from_cursor(cursor)?;
        filter.push_str(
            " AND (rkey < ? OR (rkey = ? AND (did > ? OR (did = ? AND (collection > ? \
             OR (collection = ? AND path > ?))))))",
        );
        params.extend([
            rkey.clone(),
            rkey,
            did.clone(),
            did,
            collection.clone(),
            collection,
            path,
        ]);
    }
    let limit = i64::try_from(query.limit.saturating_add(1)).unwrap_or(i64::MAX);
    let sql = format!(
        "{} ORDER BY rkey DESC, did, collection, path LIMIT {limit}",
        filter.replace("{columns}", "rkey, did, collection, path")
    );
    let mut statement = conn.prepare(&sql).map_err(backend("list backlinks"))?;
    let mut links: Vec<Backlink> = statement
        .query_map(params_from_iter(&params), |row| {
            Ok(Backlink {
                rkey: row.get(0)?,
                did: row.get(1)?,
                collection: row.get(2)?,
                path: row.get(3)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(backend("list backlinks"))?;
    let cursor = if links.len() > query.limit {
        links.truncate(query.limit);
        links.last().map(Backlink::cursor)
    } else {
        None
    };
    Ok(BacklinkPage { links, cursor })
}

pub(crate) fn count_backlinks(
    conn: &Connection,
    target: &str,
    collection: Option<&str>,
    path: Option<&str>,
) -> Result<u64, Error> {
    let (filter, params) = backlink_source(target, collection, path);
    let mut statement = conn
        .prepare(&filter.replace("{columns}", "count(*)"))
        .map_err(backend("count backlinks"))?;
    let count: i64 = statement
        .query_row(params_from_iter(&params), |row| row.get(0))
        .map_err(backend("count backlinks"))?;
    Ok(count.unsigned_abs())
}

/// Names and counts from a `SELECT name, count ... ORDER BY name`.
fn counts(conn: &Connection, sql: &str) -> Result<Vec<(String, u64)>, Error> {
    let mut statement = conn.prepare(sql).map_err(backend("summarise"))?;
    statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?.unsigned_abs(),
            ))
        })
        .and_then(Iterator::collect)
        .map_err(backend("summarise"))
}

fn count(conn: &Connection, sql: &str) -> Result<u64, Error> {
    let n: i64 = conn
        .query_row(sql, [], |row| row.get(0))
        .map_err(backend("summarise"))?;
    Ok(n.unsigned_abs())
}

pub(crate) fn summary(conn: &Connection) -> Result<Summary, Error> {
    // Tags per repo, each once; records per repo are counted before they meet the tags, so the
    // join is over repos, not records.
    const REPO_TAGS: &str = "(SELECT DISTINCT did, tag FROM \
         (SELECT did, unnest(tags) AS tag FROM repos))";
    Ok(Summary {
        repos: count(conn, "SELECT count(*) FROM repos")?,
        records: count(conn, "SELECT count(*) FROM records")?,
        repos_by_state: counts(
            conn,
            "SELECT state, count(*) FROM repos GROUP BY state ORDER BY state",
        )?,
        repos_by_status: counts(
            conn,
            "SELECT status, count(*) FROM repos GROUP BY status ORDER BY status",
        )?,
        repos_by_tag: counts(
            conn,
            &format!("SELECT tag, count(*) FROM {REPO_TAGS} GROUP BY tag ORDER BY tag"),
        )?,
        records_by_collection: counts(
            conn,
            "SELECT collection, count(*) FROM records GROUP BY collection ORDER BY collection",
        )?,
        records_by_tag: counts(
            conn,
            &format!(
                "SELECT tag, coalesce(sum(n), 0)::BIGINT FROM {REPO_TAGS} \
                 LEFT JOIN (SELECT did, count(*) AS n FROM records GROUP BY did) USING (did) \
                 GROUP BY tag ORDER BY tag"
            ),
        )?,
    })
}
