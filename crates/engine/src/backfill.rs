//! Fetching one repo: `getRepo` read into memory if small (up to 8 MiB), else spooled to a
//! temporary file; the commit's signature checked, the
//! MST walked in key order, retention applied, and the kept records sent to the store in chunks.
//!
//! A first backfill writes records as bulk chunks. A resync diffs against what the store holds and
//! writes creates, updates and deletes, so that the store ends up equal to the repo.

use crate::graph::{keeps, Rules};
use crate::writer::{Job, Writer};
use crate::{Stats, VerifyMode};
use butterfly_data::Value;
use butterfly_identity::Directory;
use butterfly_repo::car::CarLimits;
use butterfly_repo::commit::Commit;
use butterfly_repo::mst::{self, WalkItem};
use butterfly_repo::{BlockSource, CarSlice, IndexedCar, SharedSource};
use butterfly_store::{Action, BackfillChunk, Batch, Change, Edge, Record, RecordKey, SyncState};
use butterfly_syntax::Did;
use butterfly_xrpc::{ClientConfig, XrpcClient};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// What to fetch.
#[derive(Clone, Debug)]
pub(crate) struct BackfillJob {
    pub(crate) did: String,
    pub(crate) tags: Vec<String>,
    pub(crate) kind: JobKind,
    /// The selector's rules when the job started (the admin API may replace them meanwhile).
    pub(crate) rules: Arc<Rules>,
}

#[derive(Clone, Debug)]
pub(crate) enum JobKind {
    /// The store holds nothing of the repo, or only what an interrupted first backfill left
    /// (`replace`).
    First { replace: bool },
    /// The store holds the repo; reconcile. `old_edges`: records that hold edges now.
    Resync { old_edges: Vec<RecordKey> },
}

/// A fetched repo.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) rev: String,
    pub(crate) data: String,
    pub(crate) pds: Option<String>,
    /// Every walk edge the repo holds now.
    pub(crate) edges: Vec<Edge>,
}

/// Why a fetch stored nothing.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// The repo's host refuses to serve it because of the account's status
    /// (`RepoDeactivated`, `RepoTakendown`, `RepoSuspended`): a definite answer, not retried soon.
    /// `status` is the account status it implies, as `#account` events spell it.
    Unavailable {
        status: &'static str,
        message: String,
    },
    /// Anything else, retried with backoff: a message for the repo row.
    Failed(String),
}

impl From<String> for FetchError {
    fn from(message: String) -> FetchError {
        FetchError::Failed(message)
    }
}

impl From<&str> for FetchError {
    fn from(message: &str) -> FetchError {
        FetchError::Failed(message.to_owned())
    }
}

/// The account status a `getRepo` error names, if it names one.
fn unavailable_status(error: &butterfly_xrpc::Error) -> Option<&'static str> {
    match error.xrpc_error()? {
        "RepoDeactivated" => Some("deactivated"),
        "RepoTakendown" => Some("takendown"),
        "RepoSuspended" => Some("suspended"),
        _ => None,
    }
}

/// Repos up to this size are held in memory while they are read; larger ones go to a temporary
/// file. With the default sixteen fetches at once, that is at most 128 MiB of bodies (and up to
/// twice that in buffers grown while reading).
const SPOOL_IN_MEMORY: usize = 8 << 20;

/// A fetched CAR, in memory or in a temporary file, to be indexed and walked.
enum Spool {
    Memory(Vec<u8>),
    File(std::fs::File),
}

/// A spooled CAR, indexed: one in memory lends its blocks in place ([`CarSlice`]); one in a
/// file is read back block by block ([`IndexedCar`]).
enum SpooledCar {
    Memory(CarSlice),
    File(IndexedCar<std::fs::File>),
}

impl SpooledCar {
    /// Indexes the spool, checking every block's hash.
    fn index(spool: Spool) -> Result<SpooledCar, butterfly_repo::car::Error> {
        Ok(match spool {
            Spool::Memory(bytes) => {
                SpooledCar::Memory(CarSlice::parse(bytes, CarLimits::default())?)
            }
            Spool::File(file) => SpooledCar::File(IndexedCar::build(file, CarLimits::default())?),
        })
    }

    fn header(&self) -> &butterfly_repo::car::CarHeader {
        match self {
            SpooledCar::Memory(car) => car.header(),
            SpooledCar::File(car) => car.header(),
        }
    }
}

impl BlockSource for SpooledCar {
    fn get_block(
        &mut self,
        cid: &butterfly_data::Cid,
    ) -> Result<Option<std::borrow::Cow<'_, [u8]>>, butterfly_repo::car::Error> {
        match self {
            SpooledCar::Memory(car) => car.get_block(cid),
            SpooledCar::File(car) => car.get_block(cid),
        }
    }
}

/// Shared by all backfills of a run.
pub(crate) struct Backfiller {
    pub(crate) directory: Directory,
    pub(crate) client_config: ClientConfig,
    clients: Mutex<HashMap<String, XrpcClient>>,
    pub(crate) writer: Writer,
    pub(crate) verify: VerifyMode,
    pub(crate) spool_dir: Option<PathBuf>,
    pub(crate) chunk_records: usize,
    pub(crate) stats: Arc<Stats>,
}

impl Backfiller {
    pub(crate) fn new(
        directory: Directory,
        client_config: ClientConfig,
        writer: Writer,
        config: &crate::EngineConfig,
        stats: Arc<Stats>,
    ) -> Backfiller {
        Backfiller {
            directory,
            client_config,
            clients: Mutex::new(HashMap::new()),
            writer,
            verify: config.verify,
            spool_dir: config.spool_dir.clone(),
            chunk_records: config.chunk_records.max(1),
            stats,
        }
    }

    fn client_for(&self, pds: &url::Url) -> Result<XrpcClient, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(pds.as_str()) {
            return Ok(client.clone());
        }
        let client = XrpcClient::new(pds.clone(), self.client_config.clone())
            .map_err(|e| format!("client for {pds}: {e}"))?;
        clients.insert(pds.to_string(), client.clone());
        Ok(client)
    }

    /// Fetches and stores one repo.
    pub(crate) async fn run(self: Arc<Self>, job: BackfillJob) -> Result<Fetched, FetchError> {
        let did = Did::parse(&job.did).map_err(|e| format!("bad DID: {e}"))?;
        // Only the DID document is needed here (PDS and key); the handle is checked afterwards,
        // off the backfill's path, because checking it costs DNS and HTTPS lookups.
        let document = self
            .directory
            .did_document(&did)
            .await
            .map_err(|e| format!("resolving {did}: {e}"))?;
        let pds = document
            .pds_endpoint()
            .ok_or_else(|| format!("{did} has no PDS in its DID document"))?;
        let key = match self.verify {
            VerifyMode::Off => None,
            _ => Some(
                document
                    .signing_key()
                    .map_err(|e| format!("{did}: {e}"))?
                    .ok_or_else(|| format!("{did} has no atproto signing key"))?,
            ),
        };

        let client = self.client_for(&pds)?;
        let mut body = client.sync().get_repo(&did, None).await.map_err(|e| {
            let message = format!("getRepo from {pds}: {e}");
            match unavailable_status(&e) {
                Some(status) => FetchError::Unavailable { status, message },
                None => FetchError::Failed(message),
            }
        })?;
        let spool = self
            .spool(&mut body)
            .await
            .map_err(|e| format!("reading getRepo from {pds}: {e}"))?;
        drop(body);

        let old_keys = match &job.kind {
            JobKind::Resync { .. } => Some(
                self.writer
                    .record_keys(&job.did)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            JobKind::First { .. } => None,
        };
        let this = self.clone();
        let (rev, data, edges) =
            tokio::task::spawn_blocking(move || this.read_repo(spool, &job, key, old_keys))
                .await
                .map_err(|e| format!("backfill task: {e}"))??;
        Ok(Fetched {
            rev,
            data,
            pds: Some(pds.to_string()),
            edges,
        })
    }

    /// Reads a `getRepo` body: into memory while it is small, else into a temporary file.
    async fn spool(
        &self,
        body: &mut (impl tokio::io::AsyncRead + Unpin),
    ) -> std::io::Result<Spool> {
        use tokio::io::AsyncReadExt;
        let mut head = Vec::new();
        (&mut *body)
            .take(SPOOL_IN_MEMORY as u64 + 1)
            .read_to_end(&mut head)
            .await?;
        if head.len() <= SPOOL_IN_MEMORY {
            return Ok(Spool::Memory(head));
        }
        let file = match &self.spool_dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        }?;
        let mut writer = tokio::fs::File::from_std(file.try_clone()?);
        tokio::io::AsyncWriteExt::write_all(&mut writer, &head).await?;
        drop(head);
        tokio::io::copy(body, &mut writer).await?;
        tokio::io::AsyncWriteExt::flush(&mut writer).await?;
        Ok(Spool::File(file))
    }

    /// The blocking half: index the spooled CAR, check the commit, walk, write.
    fn read_repo(
        &self,
        file: Spool,
        job: &BackfillJob,
        key: Option<butterfly_crypto::PublicKey>,
        old_keys: Option<Vec<(String, String, String)>>,
    ) -> Result<(String, String, Vec<Edge>), String> {
        let mut car = SpooledCar::index(file).map_err(|e| format!("reading the repo CAR: {e}"))?;
        let root = match car.header().roots.as_slice() {
            [root] => *root,
            roots => return Err(format!("a repo CAR has one root, this has {}", roots.len())),
        };
        let commit_bytes = car
            .get_block(&root)
            .map_err(|e| format!("reading the commit: {e}"))?
            .ok_or("the commit block is missing")?
            .into_owned();
        let commit = Commit::decode(&root, &commit_bytes).map_err(|e| e.to_string())?;
        if commit.did.as_str() != job.did {
            return Err(format!("the commit is for {}, not {}", commit.did, job.did));
        }
        if let Some(key) = &key {
            commit
                .verify_signature(key)
                .map_err(|e| format!("commit signature: {e}"))?;
        }
        let rev = commit
            .rev
            .as_ref()
            .ok_or("the commit has no rev")?
            .as_str()
            .to_owned();
        let data = commit.data.to_string();
        let car = RefCell::new(car);
        let read_record = |path: &str, cid: &butterfly_data::Cid| -> Result<Value, String> {
            let mut car = car.borrow_mut();
            let bytes = car
                .get_block(cid)
                .map_err(|e| format!("reading record {path}: {e}"))?
                .ok_or_else(|| format!("record {path} ({cid}) is missing from the CAR"))?;
            Value::from_cbor(&bytes)
                .map_err(|e| format!("record {path} is not valid DAG-CBOR: {e}"))
        };
        let mut sink = Sink::new(self, job, &rev, old_keys);
        let mut source = SharedSource(&car);
        // Records come grouped by collection; one retention lookup per collection.
        let mut keep_cache: HashMap<String, butterfly_selector::Keep> = HashMap::new();
        for item in mst::walk(commit.data, &mut source) {
            match item.map_err(|e| format!("walking the MST: {e}"))? {
                WalkItem::Record { key: path, cid } => {
                    let Some((collection, rkey)) = path.split_once('/') else {
                        return Err(format!("a record path without a collection: {path}"));
                    };
                    let keep = match keep_cache.get(collection) {
                        Some(keep) => *keep,
                        None => {
                            let keep = job.rules.keep(&job.tags, collection);
                            keep_cache.insert(collection.to_owned(), keep);
                            keep
                        }
                    };
                    let kept = keeps(&keep, rkey);
                    let walks = job.rules.walks(collection);
                    if !kept && !walks {
                        continue;
                    }
                    let unlimited = keep.all || (keep.self_rkey && rkey == "self");
                    if kept && !unlimited {
                        // `latest:N`: only the newest N survive the walk; read them at the end.
                        sink.window(collection, rkey, cid, keep.latest as usize);
                        if !walks {
                            continue;
                        }
                    }
                    let cid_text = cid.to_string();
                    // A resync skips records it already holds unchanged, unless they hold edges.
                    let unchanged =
                        kept && unlimited && sink.take_unchanged(collection, rkey, &cid_text);
                    if unchanged && !walks {
                        continue;
                    }
                    let record = read_record(&path, &cid)?;
                    if walks {
                        let json = record.to_json();
                        sink.edges
                            .extend(job.rules.edges_of(&job.did, collection, rkey, &json));
                    }
                    if kept && unlimited && !unchanged {
                        sink.emit_new(collection, rkey, cid_text, record.to_json_string())?;
                    }
                }
                WalkItem::MissingNode(cid) => {
                    return Err(format!("the CAR lacks MST node {cid}"));
                }
            }
        }
        let windows = sink.take_windows();
        for (collection, rkey, cid) in windows {
            let cid_text = cid.to_string();
            if sink.take_unchanged(&collection, &rkey, &cid_text) {
                continue;
            }
            let record = read_record(&format!("{collection}/{rkey}"), &cid)?;
            sink.emit_new(&collection, &rkey, cid_text, record.to_json_string())?;
        }
        let edges = sink.finish()?;
        Ok((rev, data, edges))
    }
}

/// Where walked records go: chunks for a first backfill, a diff for a resync. `latest:N`
/// collections keep a window of their newest N (the walk is in key order, so the newest come last).
struct Sink<'a> {
    backfiller: &'a Backfiller,
    job: &'a BackfillJob,
    rev: &'a str,
    /// For a resync: what the store holds, by (collection, rkey); entries left at the end are deletes.
    old: Option<HashMap<(String, String), String>>,
    records: Vec<Record>,
    changes: Vec<Change>,
    /// `latest:N` windows, by collection: the newest N (rkey, CID) seen so far.
    windows: HashMap<String, std::collections::VecDeque<(String, butterfly_data::Cid)>>,
    edges: Vec<Edge>,
    first_chunk: bool,
}

impl<'a> Sink<'a> {
    fn new(
        backfiller: &'a Backfiller,
        job: &'a BackfillJob,
        rev: &'a str,
        old_keys: Option<Vec<(String, String, String)>>,
    ) -> Sink<'a> {
        Sink {
            backfiller,
            job,
            rev,
            old: old_keys.map(|keys| {
                keys.into_iter()
                    .map(|(collection, rkey, cid)| ((collection, rkey), cid))
                    .collect()
            }),
            records: Vec::new(),
            changes: Vec::new(),
            windows: HashMap::new(),
            edges: Vec::new(),
            first_chunk: true,
        }
    }

    /// True for a resync whose store already holds this exact record, which then is no delete.
    fn take_unchanged(&mut self, collection: &str, rkey: &str, cid: &str) -> bool {
        let Some(old) = &mut self.old else {
            return false;
        };
        let key = (collection.to_owned(), rkey.to_owned());
        if old.get(&key).is_some_and(|held| held == cid) {
            old.remove(&key);
            return true;
        }
        false
    }

    fn window(&mut self, collection: &str, rkey: &str, cid: butterfly_data::Cid, n: usize) {
        let window = self.windows.entry(collection.to_owned()).or_default();
        window.push_back((rkey.to_owned(), cid));
        if window.len() > n {
            window.pop_front();
        }
    }

    fn take_windows(&mut self) -> Vec<(String, String, butterfly_data::Cid)> {
        let mut out: Vec<_> = std::mem::take(&mut self.windows)
            .into_iter()
            .flat_map(|(collection, window)| {
                window
                    .into_iter()
                    .map(move |(rkey, cid)| (collection.clone(), rkey, cid))
            })
            .collect();
        out.sort();
        out
    }

    fn emit_new(
        &mut self,
        collection: &str,
        rkey: &str,
        cid: String,
        json: String,
    ) -> Result<(), String> {
        let record = Record {
            did: self.job.did.clone(),
            collection: collection.to_owned(),
            rkey: rkey.to_owned(),
            cid,
            rev: self.rev.to_owned(),
            json,
            indexed_at: crate::now_micros(),
        };
        self.emit(record)
    }

    fn emit(&mut self, record: Record) -> Result<(), String> {
        match &mut self.old {
            Some(old) => {
                let action = match old.remove(&(record.collection.clone(), record.rkey.clone())) {
                    Some(_) => Action::Update,
                    None => Action::Create,
                };
                self.changes.push(Change {
                    did: record.did,
                    collection: record.collection,
                    rkey: record.rkey,
                    action,
                    cid: Some(record.cid),
                    rev: record.rev,
                    json: Some(record.json),
                    live: false,
                    indexed_at: record.indexed_at,
                });
                if self.changes.len() >= self.backfiller.chunk_records {
                    self.flush()?;
                }
            }
            None => {
                self.records.push(record);
                if self.records.len() >= self.backfiller.chunk_records {
                    self.flush()?;
                }
            }
        }
        Ok(())
    }

    /// The next chunk of a first backfill: the records gathered so far, plus `edges` (which
    /// ride with the last chunk). The first chunk carries `replace`, even with nothing in it,
    /// so that an earlier attempt's leftovers go.
    fn take_chunk(&mut self, edges: Vec<Edge>) -> Option<BackfillChunk> {
        let replace = matches!(self.job.kind, JobKind::First { replace: true }) && self.first_chunk;
        if self.records.is_empty() && edges.is_empty() && !replace {
            return None;
        }
        self.first_chunk = false;
        let records = std::mem::take(&mut self.records);
        self.backfiller
            .stats
            .records_backfilled
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Some(BackfillChunk {
            did: self.job.did.clone(),
            replace,
            records,
            edges,
        })
    }

    fn flush(&mut self) -> Result<(), String> {
        let mut batch = Batch::default();
        batch.backfill.extend(self.take_chunk(Vec::new()));
        if !self.changes.is_empty() {
            self.backfiller
                .stats
                .records_backfilled
                .fetch_add(self.changes.len() as u64, Ordering::Relaxed);
            batch.changes = std::mem::take(&mut self.changes);
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.send(batch)
    }

    /// Writes what is left, the resync's deletes and the repo's edges. Returns the edges.
    fn finish(mut self) -> Result<Vec<Edge>, String> {
        let edges = std::mem::take(&mut self.edges);
        match &self.job.kind {
            JobKind::First { .. } => {
                // The last chunk carries the edges, so that a first backfill is nothing but
                // chunks, which the writer merges across repos into few transactions.
                if let Some(chunk) = self.take_chunk(edges.clone()) {
                    self.send(Batch {
                        backfill: vec![chunk],
                        ..Batch::default()
                    })?;
                }
            }
            JobKind::Resync { old_edges } => {
                // What is left was not seen unchanged, nor rewritten: gone from the repo, or no
                // longer kept. (Rewritten records were taken out by `emit`.)
                let old = self.old.take().unwrap_or_default();
                let mut deletes: Vec<Change> = old
                    .into_keys()
                    .map(|(collection, rkey)| Change {
                        did: self.job.did.clone(),
                        collection,
                        rkey,
                        action: Action::Delete,
                        cid: None,
                        rev: self.rev.to_owned(),
                        json: None,
                        live: false,
                        indexed_at: crate::now_micros(),
                    })
                    .collect();
                deletes.sort_by(|a, b| (&a.collection, &a.rkey).cmp(&(&b.collection, &b.rkey)));
                self.changes.extend(deletes);
                let old_edges = old_edges.clone();
                self.flush()?;
                // The old edges go and the new come, in one batch.
                let batch = Batch {
                    edges_removed: old_edges,
                    edges_added: edges.clone(),
                    ..Batch::default()
                };
                if !batch.is_empty() {
                    self.send(batch)?;
                }
            }
        }
        Ok(edges)
    }

    fn send(&self, batch: Batch) -> Result<(), String> {
        self.backfiller
            .writer
            .blocking_send(Job::apply(batch))
            .map_err(|e| e.to_string())
    }
}

/// The repo row after a successful fetch.
pub(crate) fn synced_row(
    mut row: butterfly_store::RepoRow,
    fetched: &Fetched,
) -> butterfly_store::RepoRow {
    row.state = SyncState::Synced;
    // The host served it, so it no longer holds the account back (see `FetchError::Unavailable`).
    if matches!(
        row.status.as_str(),
        "deactivated" | "takendown" | "suspended"
    ) {
        row.status = "active".into();
    }
    row.rev = Some(fetched.rev.clone());
    row.data_cid = Some(fetched.data.clone());
    row.pds = fetched.pds.clone();
    row.backfilled_at = Some(crate::now_micros());
    row.error = None;
    row
}
