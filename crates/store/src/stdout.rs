//! One JSON line per record change, for piping into other tools.
//!
//! [`StdoutStore`] writes every record change of a batch as a line of JSON:
//!
//! ```text
//! {"did":"did:plc:…","collection":"app.bsky.feed.like","rkey":"3lbq5vmzq7s2k","action":"create","cid":"bafyrei…","rev":"3lbq5vn2aaa2k","record":{"$type":"app.bsky.feed.like",…},"live":true}
//! ```
//!
//! `action` is `create`, `update` or `delete`; `cid` and `record` (the record itself, not a string)
//! are `null` for deletes. `live` is true for changes from the stream and false for everything
//! else: backfilled records print as `create` lines, and records that a batch removes wholesale (a
//! purged or cleared repo, a backfill that replaces a repo) print as `delete` lines carrying the
//! removed record's revision. So a consumer that applies the lines in order holds the same records
//! as the store.
//!
//! Behind the output sits a keys-only [`MemoryStore`], so that within one run a resync can diff
//! against what was printed, `latest:N` can trim, and repo rows and the cursor can be read back.
//! Nothing of it survives the process: **the stdout store keeps no state across runs.** The cursor
//! and the repo rows live only in memory, so a restarted stdout sync starts over from the
//! beginning.
//!
//! Each batch's lines are written with one `write_all` and one flush. If writing fails the batch
//! is not applied to the index and [`Store::apply`] returns [`Error::Io`], though part of the
//! batch's lines may already have gone out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Stdout, Write};

use serde::Serialize;

use crate::memory::MemoryStore;
use crate::{
    parse_record, Action, BacklinkPage, BacklinkQuery, Batch, Edge, Error, Micros, Page, Record,
    RepoRow, Store, StreamEvent, Summary,
};

/// A store that prints record changes as JSON lines to a writer.
///
/// Reads of record bodies and backlinks ([`Store::get_record`], [`Store::list_records`],
/// [`Store::backlinks`], [`Store::count_backlinks`]) return [`Error::Invalid`]: the bodies went to
/// the writer.
#[derive(Debug)]
pub struct StdoutStore<W: Write + Send> {
    index: MemoryStore,
    out: W,
    /// The lines of the batch being applied; kept to reuse its allocation.
    buffer: Vec<u8>,
}

impl<W: Write + Send> StdoutStore<W> {
    /// A store that writes to `writer`, with an empty index.
    pub fn new(writer: W) -> StdoutStore<W> {
        StdoutStore {
            index: MemoryStore::keys_only(),
            out: writer,
            buffer: Vec::new(),
        }
    }

    /// The writer back, with everything applied so far written and flushed.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl StdoutStore<Stdout> {
    /// A store that writes to the process's standard output.
    ///
    /// Each batch goes out in one `write_all` on a buffer of its lines, which takes the stdout
    /// lock once, so lines from other threads never interleave with a batch's. The store does not
    /// hold the lock between batches: the guard cannot move between threads, and a [`Store`] must.
    pub fn stdout() -> StdoutStore<Stdout> {
        StdoutStore::new(std::io::stdout())
    }
}

/// One output line; fields in this order.
#[derive(Serialize)]
struct Line<'a> {
    did: &'a str,
    collection: &'a str,
    rkey: &'a str,
    action: Action,
    cid: Option<&'a str>,
    rev: &'a str,
    record: Option<serde_json::Value>,
    live: bool,
}

/// Records by `(collection, rkey)`, with their revisions.
type Revs<'a> = BTreeMap<(&'a str, &'a str), &'a str>;

/// Writes the lines of `batch`, as applied to `index`, into `buffer`. Changes nothing else.
fn write_lines(index: &MemoryStore, batch: &Batch, buffer: &mut Vec<u8>) -> Result<(), Error> {
    // Repos already emptied by this batch: their stored records are gone and must not be printed
    // as deleted a second time.
    let mut emptied: HashSet<&str> = HashSet::new();
    // Records that this batch's backfill chunks loaded, by DID.
    let mut loaded: HashMap<&str, Revs<'_>> = HashMap::new();
    let stored = |did: &str| stored_revs(index, did);

    for did in batch.purged.iter().chain(&batch.cleared) {
        let did = did.as_str();
        if emptied.insert(did) {
            write_removals(did, &stored(did), buffer)?;
        }
    }
    for chunk in &batch.backfill {
        let did = chunk.did.as_str();
        if chunk.replace {
            let mut gone = if emptied.insert(did) {
                stored(did)
            } else {
                Revs::new()
            };
            gone.extend(loaded.remove(did).unwrap_or_default());
            write_removals(did, &gone, buffer)?;
        }
        for record in &chunk.records {
            let line = Line {
                did: &record.did,
                collection: &record.collection,
                rkey: &record.rkey,
                action: Action::Create,
                cid: Some(&record.cid),
                rev: &record.rev,
                record: Some(parse_record(
                    &record.did,
                    &record.collection,
                    &record.rkey,
                    &record.json,
                )?),
                live: false,
            };
            write_line(&line, buffer)?;
            loaded.entry(record.did.as_str()).or_default().insert(
                (record.collection.as_str(), record.rkey.as_str()),
                record.rev.as_str(),
            );
        }
    }
    for change in &batch.changes {
        let record = match (&change.action, &change.json) {
            (Action::Delete, _) | (_, None) => None,
            (_, Some(json)) => Some(parse_record(
                &change.did,
                &change.collection,
                &change.rkey,
                json,
            )?),
        };
        let line = Line {
            did: &change.did,
            collection: &change.collection,
            rkey: &change.rkey,
            action: change.action,
            cid: change.cid.as_deref(),
            rev: &change.rev,
            record,
            live: change.live,
        };
        write_line(&line, buffer)?;
    }
    Ok(())
}

/// The records `index` holds for a repo.
fn stored_revs<'a>(index: &'a MemoryStore, did: &str) -> Revs<'a> {
    let mut revs = Revs::new();
    for (collection, rkeys) in index.repo_records(did).into_iter().flatten() {
        for (rkey, record) in rkeys {
            revs.insert((collection.as_str(), rkey.as_str()), record.rev.as_str());
        }
    }
    revs
}

/// Writes a `delete` line for each of a repo's removed records.
fn write_removals(did: &str, gone: &Revs<'_>, buffer: &mut Vec<u8>) -> Result<(), Error> {
    for (&(collection, rkey), &rev) in gone {
        let line = Line {
            did,
            collection,
            rkey,
            action: Action::Delete,
            cid: None,
            rev,
            record: None,
            live: false,
        };
        write_line(&line, buffer)?;
    }
    Ok(())
}

fn write_line(line: &Line<'_>, buffer: &mut Vec<u8>) -> Result<(), Error> {
    serde_json::to_writer(&mut *buffer, line).map_err(|err| {
        Error::Invalid(format!(
            "record {}/{}/{}: {err}",
            line.did, line.collection, line.rkey
        ))
    })?;
    buffer.push(b'\n');
    Ok(())
}

impl<W: Write + Send> Store for StdoutStore<W> {
    fn apply(&mut self, batch: Batch) -> Result<(), Error> {
        let prepared = self.index.prepare(&batch)?;
        self.buffer.clear();
        write_lines(&self.index, &batch, &mut self.buffer)?;
        self.out.write_all(&self.buffer)?;
        self.out.flush()?;
        self.index.commit(batch, prepared);
        Ok(())
    }

    fn kv_get(&self, key: &str) -> Result<Option<String>, Error> {
        self.index.kv_get(key)
    }

    fn repo(&self, did: &str) -> Result<Option<RepoRow>, Error> {
        self.index.repo(did)
    }

    fn repos(&self) -> Result<Vec<RepoRow>, Error> {
        self.index.repos()
    }

    fn repos_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<RepoRow>, Error> {
        self.index.repos_page(after, limit)
    }

    fn repo_by_handle(&self, handle: &str) -> Result<Option<RepoRow>, Error> {
        self.index.repo_by_handle(handle)
    }

    fn collections(&self, did: &str) -> Result<Vec<String>, Error> {
        self.index.collections(did)
    }

    fn edges(&self) -> Result<Vec<Edge>, Error> {
        self.index.edges()
    }

    fn record_keys(&self, did: &str) -> Result<Vec<(String, String, String)>, Error> {
        self.index.record_keys(did)
    }

    fn newest_rkeys(&self, did: &str, collection: &str, n: usize) -> Result<Vec<String>, Error> {
        self.index.newest_rkeys(did, collection, n)
    }

    fn get_record(&self, did: &str, collection: &str, rkey: &str) -> Result<Option<Record>, Error> {
        self.index.get_record(did, collection, rkey)
    }

    fn list_records(
        &self,
        did: &str,
        collection: &str,
        page: Page<'_>,
    ) -> Result<Vec<Record>, Error> {
        self.index.list_records(did, collection, page)
    }

    fn backlinks(&self, query: BacklinkQuery<'_>) -> Result<BacklinkPage, Error> {
        self.index.backlinks(query)
    }

    fn count_backlinks(
        &self,
        target: &str,
        collection: Option<&str>,
        path: Option<&str>,
    ) -> Result<u64, Error> {
        self.index.count_backlinks(target, collection, path)
    }

    fn summary(&self) -> Result<Summary, Error> {
        self.index.summary()
    }

    fn events_after(&self, after: Micros, limit: usize) -> Result<Vec<StreamEvent>, Error> {
        self.index.events_after(after, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackfillChunk, Change, RecordKey};

    const ALICE: &str = "did:plc:4xk3ihlb2mbwvdcxgsdhnqyb";
    const BOB: &str = "did:plc:r7tbmc5dwl4ajvvc2ubpfhwj";
    const CAROL: &str = "did:plc:ylm6kqp2rjxv3sdh7gwz5cna";
    const LIKE: &str = "app.bsky.feed.like";
    const FOLLOW: &str = "app.bsky.graph.follow";

    fn record(did: &str, collection: &str, rkey: &str, json: &str) -> Record {
        Record {
            did: did.to_owned(),
            collection: collection.to_owned(),
            rkey: rkey.to_owned(),
            cid: format!("bafyrei{rkey}"),
            rev: "3lbq2aaaaaa2k".to_owned(),
            json: json.to_owned(),
            indexed_at: 1_732_000_000_000_000,
        }
    }

    fn follow(did: &str, rkey: &str, subject: &str) -> Record {
        record(
            did,
            FOLLOW,
            rkey,
            &format!(
                r#"{{"$type":"{FOLLOW}","subject":"{subject}","createdAt":"2024-11-20T10:00:00.000Z"}}"#
            ),
        )
    }

    fn change(action: Action, did: &str, rkey: &str, json: Option<&str>, live: bool) -> Change {
        Change {
            did: did.to_owned(),
            collection: LIKE.to_owned(),
            rkey: rkey.to_owned(),
            action,
            cid: json.map(|_| format!("bafyrei{rkey}")),
            rev: "3lbq5aaaaaa2k".to_owned(),
            json: json.map(str::to_owned),
            live,
            indexed_at: 1_732_000_000_000_001,
        }
    }

    fn lines(store: StdoutStore<Vec<u8>>) -> Vec<String> {
        let out = String::from_utf8(store.into_inner()).expect("output is UTF-8");
        out.lines().map(str::to_owned).collect()
    }

    #[test]
    fn batch_lines() {
        let mut store = StdoutStore::new(Vec::new());
        // First batch: Alice and Bob are backfilled.
        store
            .apply(Batch {
                backfill: vec![
                    BackfillChunk {
                        did: ALICE.to_owned(),
                        replace: false,
                        records: vec![follow(ALICE, "3kzaaaaaaaa2k", BOB)],
                        edges: vec![],
                    },
                    BackfillChunk {
                        did: BOB.to_owned(),
                        replace: false,
                        records: vec![
                            follow(BOB, "3kzbbbbbbbb2k", ALICE),
                            follow(BOB, "3kzcccccccc2k", CAROL),
                        ],
                        edges: vec![],
                    },
                ],
                ..Batch::default()
            })
            .expect("first batch applies");
        // Second batch: Bob is purged, Alice backfilled again with replace, then live changes.
        let like = r#"{"$type":"app.bsky.feed.like","subject":{"uri":"at://did:plc:ylm6kqp2rjxv3sdh7gwz5cna/app.bsky.feed.post/3lbq5vmzq7s2k","cid":"bafyreipost"},"createdAt":"2024-11-20T10:00:00.000Z"}"#;
        store
            .apply(Batch {
                purged: vec![BOB.to_owned()],
                backfill: vec![BackfillChunk {
                    did: ALICE.to_owned(),
                    replace: true,
                    records: vec![follow(ALICE, "3kzdddddddd2k", CAROL)],
                    edges: vec![],
                }],
                changes: vec![
                    change(Action::Create, ALICE, "3lbq5aaaaaa2k", Some(like), true),
                    change(Action::Delete, ALICE, "3lbq5aaaaaa2k", None, true),
                ],
                ..Batch::default()
            })
            .expect("second batch applies");
        assert_eq!(
            store.record_keys(BOB).expect("record_keys"),
            Vec::<(String, String, String)>::new()
        );
        assert_eq!(
            store.record_keys(ALICE).expect("record_keys"),
            vec![(
                FOLLOW.to_owned(),
                "3kzdddddddd2k".to_owned(),
                "bafyrei3kzdddddddd2k".to_owned()
            )]
        );
        let expected = [
            r#"{"did":"did:plc:4xk3ihlb2mbwvdcxgsdhnqyb","collection":"app.bsky.graph.follow","rkey":"3kzaaaaaaaa2k","action":"create","cid":"bafyrei3kzaaaaaaaa2k","rev":"3lbq2aaaaaa2k","record":{"$type":"app.bsky.graph.follow","subject":"did:plc:r7tbmc5dwl4ajvvc2ubpfhwj","createdAt":"2024-11-20T10:00:00.000Z"},"live":false}"#,
            r#"{"did":"did:plc:r7tbmc5dwl4ajvvc2ubpfhwj","collection":"app.bsky.graph.follow","rkey":"3kzbbbbbbbb2k","action":"create","cid":"bafyrei3kzbbbbbbbb2k","rev":"3lbq2aaaaaa2k","record":{"$type":"app.bsky.graph.follow","subject":"did:plc:4xk3ihlb2mbwvdcxgsdhnqyb","createdAt":"2024-11-20T10:00:00.000Z"},"live":false}"#,
            r#"{"did":"did:plc:r7tbmc5dwl4ajvvc2ubpfhwj","collection":"app.bsky.graph.follow","rkey":"3kzcccccccc2k","action":"create","cid":"bafyrei3kzcccccccc2k","rev":"3lbq2aaaaaa2k","record":{"$type":"app.bsky.graph.follow","subject":"did:plc:ylm6kqp2rjxv3sdh7gwz5cna","createdAt":"2024-11-20T10:00:00.000Z"},"live":false}"#,
            // The purge of Bob.
            r#"{"did":"did:plc:r7tbmc5dwl4ajvvc2ubpfhwj","collection":"app.bsky.graph.follow","rkey":"3kzbbbbbbbb2k","action":"delete","cid":null,"rev":"3lbq2aaaaaa2k","record":null,"live":false}"#,
            r#"{"did":"did:plc:r7tbmc5dwl4ajvvc2ubpfhwj","collection":"app.bsky.graph.follow","rkey":"3kzcccccccc2k","action":"delete","cid":null,"rev":"3lbq2aaaaaa2k","record":null,"live":false}"#,
            // Alice's replacing backfill.
            r#"{"did":"did:plc:4xk3ihlb2mbwvdcxgsdhnqyb","collection":"app.bsky.graph.follow","rkey":"3kzaaaaaaaa2k","action":"delete","cid":null,"rev":"3lbq2aaaaaa2k","record":null,"live":false}"#,
            r#"{"did":"did:plc:4xk3ihlb2mbwvdcxgsdhnqyb","collection":"app.bsky.graph.follow","rkey":"3kzdddddddd2k","action":"create","cid":"bafyrei3kzdddddddd2k","rev":"3lbq2aaaaaa2k","record":{"$type":"app.bsky.graph.follow","subject":"did:plc:ylm6kqp2rjxv3sdh7gwz5cna","createdAt":"2024-11-20T10:00:00.000Z"},"live":false}"#,
            // Live changes.
            r#"{"did":"did:plc:4xk3ihlb2mbwvdcxgsdhnqyb","collection":"app.bsky.feed.like","rkey":"3lbq5aaaaaa2k","action":"create","cid":"bafyrei3lbq5aaaaaa2k","rev":"3lbq5aaaaaa2k","record":{"$type":"app.bsky.feed.like","subject":{"uri":"at://did:plc:ylm6kqp2rjxv3sdh7gwz5cna/app.bsky.feed.post/3lbq5vmzq7s2k","cid":"bafyreipost"},"createdAt":"2024-11-20T10:00:00.000Z"},"live":true}"#,
            r#"{"did":"did:plc:4xk3ihlb2mbwvdcxgsdhnqyb","collection":"app.bsky.feed.like","rkey":"3lbq5aaaaaa2k","action":"delete","cid":null,"rev":"3lbq5aaaaaa2k","record":null,"live":true}"#,
        ];
        assert_eq!(lines(store), expected);
    }

    #[test]
    fn removals_within_one_batch_print_once() {
        let mut store = StdoutStore::new(Vec::new());
        store
            .apply(Batch {
                backfill: vec![BackfillChunk {
                    did: ALICE.to_owned(),
                    replace: false,
                    records: vec![follow(ALICE, "3kzaaaaaaaa2k", BOB)],
                    edges: vec![],
                }],
                ..Batch::default()
            })
            .expect("first batch applies");
        // Purged and cleared in one batch, then loaded twice with replace: the stored record is
        // deleted once, and the first chunk's record is deleted by the second chunk.
        store
            .apply(Batch {
                purged: vec![ALICE.to_owned()],
                cleared: vec![ALICE.to_owned()],
                backfill: vec![
                    BackfillChunk {
                        did: ALICE.to_owned(),
                        replace: true,
                        records: vec![follow(ALICE, "3kzbbbbbbbb2k", BOB)],
                        edges: vec![],
                    },
                    BackfillChunk {
                        did: ALICE.to_owned(),
                        replace: true,
                        records: vec![follow(ALICE, "3kzcccccccc2k", BOB)],
                        edges: vec![],
                    },
                ],
                ..Batch::default()
            })
            .expect("second batch applies");
        let summary: Vec<String> = lines(store)
            .iter()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                format!(
                    "{} {}",
                    value["action"].as_str().unwrap_or("?"),
                    value["rkey"].as_str().unwrap_or("?")
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "create 3kzaaaaaaaa2k",
                "delete 3kzaaaaaaaa2k",
                "create 3kzbbbbbbbb2k",
                "delete 3kzbbbbbbbb2k",
                "create 3kzcccccccc2k",
            ]
        );
    }

    #[test]
    fn edges_and_repo_state_stay_in_memory() {
        let mut store = StdoutStore::new(Vec::new());
        let edge = Edge {
            did: ALICE.to_owned(),
            collection: FOLLOW.to_owned(),
            rkey: "3kzaaaaaaaa2k".to_owned(),
            attr: "subject".to_owned(),
            target: BOB.to_owned(),
        };
        store
            .apply(Batch {
                edges_added: vec![edge.clone()],
                kv: vec![("cursor".to_owned(), Some("42".to_owned()))],
                ..Batch::default()
            })
            .expect("batch applies");
        assert_eq!(store.edges().expect("edges"), vec![edge.clone()]);
        assert_eq!(store.kv_get("cursor").expect("kv"), Some("42".to_owned()));
        store
            .apply(Batch {
                edges_removed: vec![RecordKey {
                    did: edge.did,
                    collection: edge.collection,
                    rkey: edge.rkey,
                }],
                ..Batch::default()
            })
            .expect("batch applies");
        assert!(store.edges().expect("edges").is_empty());
        assert!(lines(store).is_empty());
    }

    #[test]
    fn bodies_are_not_kept() {
        let store = StdoutStore::new(Vec::new());
        assert!(matches!(
            store.get_record(ALICE, LIKE, "3lbq5aaaaaa2k"),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn bad_json_is_refused_before_writing() {
        let mut store = StdoutStore::new(Vec::new());
        let result = store.apply(Batch {
            changes: vec![
                change(Action::Create, ALICE, "3lbq5aaaaaa2k", Some("{}"), true),
                change(
                    Action::Create,
                    ALICE,
                    "3lbq5bbbbbb2k",
                    Some("{not json"),
                    true,
                ),
            ],
            ..Batch::default()
        });
        assert!(matches!(result, Err(Error::Invalid(_))), "{result:?}");
        assert!(store.record_keys(ALICE).expect("record_keys").is_empty());
        assert!(lines(store).is_empty());
    }

    /// A writer that fails as a closed pipe does.
    struct BrokenPipe;

    impl Write for BrokenPipe {
        fn write(&mut self, _buf: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_are_io_errors() {
        let mut store = StdoutStore::new(BrokenPipe);
        let result = store.apply(Batch {
            changes: vec![change(
                Action::Create,
                ALICE,
                "3lbq5aaaaaa2k",
                Some("{}"),
                true,
            )],
            kv: vec![("cursor".to_owned(), Some("7".to_owned()))],
            ..Batch::default()
        });
        match result {
            Err(Error::Io(err)) => assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe),
            other => panic!("expected an i/o error, got {other:?}"),
        }
        // The batch did not reach the index either.
        assert!(store.record_keys(ALICE).expect("record_keys").is_empty());
        assert_eq!(store.kv_get("cursor").expect("kv"), None);
    }

    #[test]
    fn conformance_keys_only() {
        crate::conformance::check_keys_only_store(|| StdoutStore::new(std::io::sink()));
    }
}
