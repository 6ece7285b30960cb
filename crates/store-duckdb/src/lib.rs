//! The DuckDB store: Butterfly's default [`Store`], one file you can query with SQL.
//!
//! [`DuckDbStore`] keeps records, their links (for backlinks), walk edges, repo rows and small
//! values in a DuckDB database; SCHEMA.md describes the tables and has example queries. Each
//! [`Store::apply`] is one transaction: DuckDB writes it to its write-ahead log and syncs it
//! before `apply` returns, so a crash loses nothing that was applied, and never leaves part of
//! a batch. [`DuckDbStore::run_sql`] runs any SQL for `butterfly query`.
//!
//! One process at a time may open a file for writing (DuckDB locks it), and while it does no
//! other process can open it at all; within that process, [`DuckDbStore::try_clone`] gives more
//! connections to the same database.
//!
//! The crate links the prebuilt libduckdb unless built with the `bundled` feature; README.md
//! explains how the build finds it.
//!
//! This crate knows nothing of the engine or the server: it implements the trait and offers SQL.
//!
//! ```
//! use butterfly_store::{Batch, Store};
//! use butterfly_store_duckdb::DuckDbStore;
//!
//! let mut store = DuckDbStore::open_in_memory()?;
//! store.apply(Batch {
//!     kv: vec![("cursor".to_owned(), Some("42".to_owned()))],
//!     ..Batch::default()
//! })?;
//! assert_eq!(store.kv_get("cursor")?, Some("42".to_owned()));
//! let result = store.run_sql("SELECT key, value FROM kv")?;
//! assert_eq!(result.columns, ["key", "value"]);
//! # Ok::<(), butterfly_store::Error>(())
//! ```

mod read;
mod schema;
mod sql;
mod write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use butterfly_store::{
    BacklinkPage, BacklinkQuery, Batch, Edge, Error, Page, Record, RepoRow, Store, StreamEvent,
    Summary,
};
use duckdb::{AccessMode, Config, Connection};

pub use sql::QueryResult;

/// A [`Store`] in a DuckDB database.
pub struct DuckDbStore {
    conn: Connection,
    /// The file, or `None` in memory.
    path: Option<PathBuf>,
    read_only: bool,
    /// Shared by a store and its clones: reads hold it shared, writes alone. DuckDB 1.5 can
    /// hand a query on one connection corrupt strings while another connection commits (the
    /// reader of `tests/concurrent.rs` got bytes that were not UTF-8 about once in fifty runs
    /// on a loaded machine, with plain duckdb-rs queries as well as ours), so no read runs
    /// while a batch is written. A read may wait for the batch being written; never the other
    /// way round for long, as std's lock on Linux lets a waiting writer go before new readers.
    gate: Arc<RwLock<()>>,
}

impl std::fmt::Debug for DuckDbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DuckDbStore")
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl DuckDbStore {
    /// Opens the store in `path` for reading and writing, creating the file and its tables if
    /// there is none.
    ///
    /// Fails if another process has the file open (DuckDB allows one writer process), if the
    /// file is not a Butterfly store, or if its schema version is not this build's.
    pub fn open(path: &Path) -> Result<DuckDbStore, Error> {
        DuckDbStore::open_file(path, false)
    }

    /// Opens an existing store for reading only. [`Store::apply`] then fails with
    /// [`Error::Invalid`], and so does SQL that writes.
    ///
    /// Fails while another process has the file open for writing.
    pub fn open_read_only(path: &Path) -> Result<DuckDbStore, Error> {
        DuckDbStore::open_file(path, true)
    }

    /// A new, empty store in memory, gone when the last connection to it closes.
    pub fn open_in_memory() -> Result<DuckDbStore, Error> {
        let conn = Connection::open_in_memory().map_err(backend("open an in-memory database"))?;
        schema::configure(&conn)?;
        schema::prepare(&conn, "the in-memory database", true)?;
        Ok(DuckDbStore {
            conn,
            path: None,
            read_only: false,
            gate: Arc::default(),
        })
    }

    fn open_file(path: &Path, read_only: bool) -> Result<DuckDbStore, Error> {
        let label = path.display().to_string();
        if read_only && !path.exists() {
            return Err(Error::Invalid(format!("{label}: no such file")));
        }
        let mode = if read_only {
            AccessMode::ReadOnly
        } else {
            AccessMode::ReadWrite
        };
        let config = Config::default()
            .access_mode(mode)
            .map_err(backend("configure DuckDB"))?;
        let conn = Connection::open_with_flags(path, config).map_err(|err| {
            let message = err.to_string();
            if message.contains("Could not set lock") || message.contains("Conflicting lock") {
                Error::Backend(format!(
                    "{label} is in use by another process (DuckDB lets one process open a \
                     database for writing, and none read it meanwhile): {message}"
                ))
            } else {
                Error::Backend(format!("open {label}: {message}"))
            }
        })?;
        schema::configure(&conn)?;
        schema::prepare(&conn, &label, !read_only)?;
        Ok(DuckDbStore {
            conn,
            path: Some(path.to_path_buf()),
            read_only,
            gate: Arc::default(),
        })
    }

    /// Another connection to the same database, for a reader on another thread. It sees what
    /// the last committed `apply` left.
    pub fn try_clone(&self) -> Result<DuckDbStore, Error> {
        let conn = self
            .conn
            .try_clone()
            .map_err(backend("open another connection"))?;
        schema::configure(&conn)?;
        Ok(DuckDbStore {
            conn,
            path: self.path.clone(),
            read_only: self.read_only,
            gate: self.gate.clone(),
        })
    }

    /// Held while reading: see [`DuckDbStore::gate`].
    fn reading(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Held while writing: see [`DuckDbStore::gate`].
    fn writing(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file, or `None` for a store in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Indexes `links` by target, so that backlink queries look up instead of scanning. Not part
    /// of the schema because every backfilled record pays for it (a few links each) and only
    /// `butterfly serve` asks for backlinks; building it over millions of links takes a while,
    /// once. Kept up to date by every later write.
    pub fn ensure_backlink_index(&self) -> Result<(), Error> {
        let _writing = self.writing();
        self.conn
            .execute_batch("CREATE INDEX IF NOT EXISTS links_target ON links (target)")
            .map_err(backend("index links by target"))
    }

    /// Runs one SQL statement (or several, separated by `;`: the last one's rows are returned)
    /// and collects its result. See [`QueryResult`] for how values are converted.
    pub fn run_sql(&self, sql: &str) -> Result<QueryResult, Error> {
        // The SQL may write.
        let _writing = self.writing();
        sql::run(&self.conn, sql)
    }
}

impl Store for DuckDbStore {
    fn apply(&mut self, batch: Batch) -> Result<(), Error> {
        if self.read_only {
            return Err(Error::Invalid(format!(
                "{} was opened read-only",
                self.path
                    .as_deref()
                    .map_or_else(|| "the store".to_owned(), |path| path.display().to_string())
            )));
        }
        if batch.is_empty() {
            return Ok(());
        }
        let _writing = self.writing();
        self.conn
            .execute_batch("BEGIN TRANSACTION")
            .map_err(backend("begin a transaction"))?;
        let result = write::apply(&self.conn, &batch)
            .and_then(|()| self.conn.execute_batch("COMMIT").map_err(backend("commit")));
        if result.is_err() {
            // After a failed COMMIT DuckDB has rolled back already; this ROLLBACK then fails,
            // which is fine.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        result
    }

    fn kv_get(&self, key: &str) -> Result<Option<String>, Error> {
        let _reading = self.reading();
        read::kv_get(&self.conn, key)
    }

    fn repo(&self, did: &str) -> Result<Option<RepoRow>, Error> {
        let _reading = self.reading();
        read::repo(&self.conn, did)
    }

    fn repos(&self) -> Result<Vec<RepoRow>, Error> {
        let _reading = self.reading();
        read::repos(&self.conn)
    }

    fn repos_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<RepoRow>, Error> {
        let _reading = self.reading();
        read::repos_page(&self.conn, after, limit)
    }

    fn repo_by_handle(&self, handle: &str) -> Result<Option<RepoRow>, Error> {
        let _reading = self.reading();
        read::repo_by_handle(&self.conn, handle)
    }

    fn collections(&self, did: &str) -> Result<Vec<String>, Error> {
        let _reading = self.reading();
        read::collections(&self.conn, did)
    }

    fn edges(&self) -> Result<Vec<Edge>, Error> {
        let _reading = self.reading();
        read::edges(&self.conn)
    }

    fn record_keys(&self, did: &str) -> Result<Vec<(String, String, String)>, Error> {
        let _reading = self.reading();
        read::record_keys(&self.conn, did)
    }

    fn newest_rkeys(&self, did: &str, collection: &str, n: usize) -> Result<Vec<String>, Error> {
        let _reading = self.reading();
        read::newest_rkeys(&self.conn, did, collection, n)
    }

    fn get_record(&self, did: &str, collection: &str, rkey: &str) -> Result<Option<Record>, Error> {
        let _reading = self.reading();
        read::get_record(&self.conn, did, collection, rkey)
    }

    fn list_records(
        &self,
        did: &str,
        collection: &str,
        page: Page<'_>,
    ) -> Result<Vec<Record>, Error> {
        let _reading = self.reading();
        read::list_records(&self.conn, did, collection, page)
    }

    fn backlinks(&self, query: BacklinkQuery<'_>) -> Result<BacklinkPage, Error> {
        let _reading = self.reading();
        read::backlinks(&self.conn, query)
    }

    fn count_backlinks(
        &self,
        target: &str,
        collection: Option<&str>,
        path: Option<&str>,
    ) -> Result<u64, Error> {
        let _reading = self.reading();
        read::count_backlinks(&self.conn, target, collection, path)
    }

    fn summary(&self) -> Result<Summary, Error> {
        let _reading = self.reading();
        read::summary(&self.conn)
    }

    fn events_after(&self, after: i64, limit: usize) -> Result<Vec<StreamEvent>, Error> {
        let _reading = self.reading();
        read::events_after(&self.conn, after, limit)
    }
}

/// Wraps a DuckDB error as [`Error::Backend`], saying what was being done.
pub(crate) fn backend(what: &'static str) -> impl Fn(duckdb::Error) -> Error {
    move |err| Error::Backend(format!("{what}: {err}"))
}
