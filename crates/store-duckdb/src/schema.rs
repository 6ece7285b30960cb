//! The tables, how a connection is set up, and the record locator.
//!
//! SCHEMA.md describes the tables for people who query them; this file is the truth.

use butterfly_store::Error;
use duckdb::Connection;

use crate::backend;

/// The schema this build reads and writes, kept in `meta` under `schema_version`.
pub(crate) const SCHEMA_VERSION: &str = "3";

/// The tables of a new store, created in one transaction.
///
/// DuckDB (1.5) uses an ART index only for a filter on one column, by equality or `IN`: never
/// for a composite key, a range, or a conjunction. So `records` has no composite primary key
/// (it would slow appends by half and serve no lookup); the store keeps `(did, collection,
/// rkey)` unique itself, and finds rows through two single-column indexes: `did`, and `rid`, a
/// 64-bit hash of the whole key (see [`record_id`]). `links` carries the same `rid`, indexed
/// (schema version 3), so that a batch finds the links of the records it replaces by lookups.
const CREATE: &str = "
CREATE TABLE meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
CREATE TABLE records (
    did VARCHAR NOT NULL,
    collection VARCHAR NOT NULL,
    rkey VARCHAR NOT NULL,
    cid VARCHAR NOT NULL,
    rev VARCHAR NOT NULL,
    record JSON NOT NULL,
    indexed_at TIMESTAMPTZ NOT NULL,
    rid BIGINT NOT NULL
);
CREATE INDEX records_did ON records (did);
CREATE INDEX records_rid ON records (rid);
CREATE TABLE links (
    target VARCHAR NOT NULL,
    did VARCHAR NOT NULL,
    collection VARCHAR NOT NULL,
    rkey VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    rid BIGINT NOT NULL
);
{LINKS_RID}
CREATE TABLE edges (
    did VARCHAR NOT NULL,
    collection VARCHAR NOT NULL,
    rkey VARCHAR NOT NULL,
    attr VARCHAR NOT NULL,
    target VARCHAR NOT NULL,
    PRIMARY KEY (did, collection, rkey, attr, target)
);
CREATE TABLE repos (
    did VARCHAR PRIMARY KEY,
    handle VARCHAR,
    pds VARCHAR,
    status VARCHAR NOT NULL,
    state VARCHAR NOT NULL,
    rev VARCHAR,
    data_cid VARCHAR,
    tags VARCHAR[] NOT NULL,
    backfilled_at TIMESTAMPTZ,
    error VARCHAR
);
CREATE TABLE kv (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
{EVENTS}";

/// The stream's event log (schema version 2). Appended in `time_us` order, so DuckDB's zone maps
/// serve `time_us > ?` scans without an index.
const EVENTS: &str = "
CREATE TABLE events (
    time_us BIGINT NOT NULL,
    did VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    collection VARCHAR,
    event JSON NOT NULL
);
";

/// The index on `links (rid)` (schema version 3). Without it, every live batch that replaced or
/// deleted a stored record scanned the whole `links` table to drop the old record's links: about
/// 50 ms per thousand keys at ten million links, growing with the table. With it the cost
/// follows the batch, for about a microsecond more per link written.
const LINKS_RID: &str = "CREATE INDEX links_rid ON links (rid);";

/// Session settings for every connection.
pub(crate) fn configure(conn: &Connection) -> Result<(), Error> {
    // Times go in and out as microseconds since the epoch; with ICU loaded, casts between
    // TIMESTAMP and TIMESTAMPTZ would otherwise use the machine's time zone. Without ICU
    // there is no such setting, and TIMESTAMPTZ is UTC anyway.
    let _ = conn.execute_batch("SET TimeZone = 'UTC'");
    // DuckDB checkpoints (folds the write-ahead log into the file) when the log passes this
    // size, 16 MB by default: about every backfill batch. A checkpoint rewrites the changed
    // parts of the indexes, so fewer of them make backfill about twice as fast, for a longer
    // log to replay after a crash and more memory held until the checkpoint.
    conn.execute_batch("SET checkpoint_threshold = '256MB'")
        .map_err(backend("configure DuckDB"))?;
    Ok(())
}

/// Creates the tables in an empty database, or checks the schema version of an existing one.
pub(crate) fn prepare(conn: &Connection, label: &str, writable: bool) -> Result<(), Error> {
    let n_tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() \
             AND schema_name = 'main'",
            [],
            |row| row.get(0),
        )
        .map_err(backend("count tables"))?;
    let has_meta: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM duckdb_tables() WHERE database_name = current_database() \
             AND schema_name = 'main' AND table_name = 'meta'",
            [],
            |row| row.get(0),
        )
        .map_err(backend("look for the meta table"))?;
    if n_tables == 0 {
        if !writable {
            return Err(Error::Corrupt(format!(
                "{label} holds no Butterfly store (it has no tables)"
            )));
        }
        let create = CREATE
            .replace("{EVENTS}", EVENTS)
            .replace("{LINKS_RID}", LINKS_RID);
        let script = format!(
            "BEGIN TRANSACTION;\n{create}\nINSERT INTO meta VALUES ('schema_version', \
             '{SCHEMA_VERSION}');\nCOMMIT;"
        );
        if let Err(err) = conn.execute_batch(&script) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(backend("create the schema")(err));
        }
        return Ok(());
    }
    if !has_meta {
        return Err(Error::Corrupt(format!(
            "{label} is a DuckDB database but not a Butterfly store (it has no meta table)"
        )));
    }
    let version: Option<String> = conn
        .query_row(
            "SELECT max(value) FROM meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .map_err(backend("read the schema version"))?;
    match version.as_deref() {
        Some(SCHEMA_VERSION) => Ok(()),
        // Version 1 lacks the event log, version 2 the `links (rid)` index: adding what is
        // missing is the whole upgrade. Only writes use that index, so a version-2 file opens
        // read-only as it is.
        Some(old @ ("1" | "2")) if writable => {
            // Indexing every link can take a minute on a large file: say why we wait.
            tracing::info!("upgrading {label} from schema version {old} to {SCHEMA_VERSION}");
            let events = if old == "1" { EVENTS } else { "" };
            let script = format!(
                "BEGIN TRANSACTION;\n{events}\n{LINKS_RID}\nUPDATE meta SET value = \
                 '{SCHEMA_VERSION}' WHERE key = 'schema_version';\nCOMMIT;"
            );
            if let Err(err) = conn.execute_batch(&script) {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(backend("upgrade to schema version 3")(err));
            }
            Ok(())
        }
        Some("2") => Ok(()),
        Some("1") => Err(Error::Corrupt(format!(
            "{label} has schema version 1; open it once for writing (butterfly sync) to \
             upgrade it to version {SCHEMA_VERSION}"
        ))),
        Some(version) => Err(Error::Corrupt(format!(
            "{label} has schema version {version}, this build reads version {SCHEMA_VERSION}"
        ))),
        None => Err(Error::Corrupt(format!(
            "{label} has a meta table without a schema_version"
        ))),
    }
}

/// The record locator, stored as `rid` in `records` and `links`: 64 bits, the high 40 from the
/// DID and the low 24 from the collection and rkey. A repo's records sit together in the index,
/// so a backfill changes the index in one place per repo rather than one per record: with
/// random keys DuckDB's index made appends three times and checkpoints ten times slower.
///
/// Stable across versions and platforms (it is on disk): each part is FNV-1a over its strings,
/// each followed by a zero byte, then MurmurHash3's 64-bit finaliser.
///
/// Different keys may share a locator (often within a large repo, since only 24 bits tell its
/// records apart); every lookup by `rid` also compares the key itself.
pub(crate) fn record_id(did: &str, collection: &str, rkey: &str) -> i64 {
    const LOW_BITS: u64 = (1 << 24) - 1;
    let repo = finalise(fnv1a(&[did]));
    let record = finalise(fnv1a(&[collection, rkey]));
    ((repo & !LOW_BITS) | (record & LOW_BITS)) as i64
}

fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

fn finalise(mut hash: u64) -> u64 {
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::record_id;

    #[test]
    fn record_id_is_stable() {
        // These values are on disk in every store: they must never change.
        assert_eq!(
            record_id(
                "did:plc:4xk3ihlb2mbwvdcxgsdhnqyb",
                "app.bsky.feed.post",
                "3lbq5vmzq7s2k"
            ),
            RECORD_ID_EXAMPLE
        );
        assert_ne!(record_id("a", "bc", "d"), record_id("a", "b", "cd"));
        // One repo's records share the high 40 bits.
        let did = "did:plc:4xk3ihlb2mbwvdcxgsdhnqyb";
        assert_eq!(
            record_id(did, "app.bsky.feed.post", "a") >> 24,
            record_id(did, "app.bsky.feed.like", "b") >> 24
        );
    }

    const RECORD_ID_EXAMPLE: i64 = -4_346_002_079_898_503_572;
}
