//! The DuckDB store through its public API: the conformance suite, files that outlive the
//! process (closed, killed, locked, read-only), SQL, and the stock DuckDB tools.
//!
//! Tests that need a second process run this test binary again with `BUTTERFLY_DUCKDB_CHILD`
//! set, which makes the same test play the child's part.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use butterfly_store::{
    Action, BackfillChunk, Batch, Change, Edge, Error, Record, RepoRow, Store, SyncState,
};
use butterfly_store_duckdb::DuckDbStore;
use serde_json::json;

const ALICE: &str = "did:plc:4xk3ihlb2mbwvdcxgsdhnqyb";
const BOB: &str = "did:plc:r7tbmc5dwl4ajvvc2ubpfhwj";
const POST: &str = "app.bsky.feed.post";
const INDEXED_AT: i64 = 1_732_096_800_123_456;

fn post(text: &str, reply_to: &str) -> String {
    json!({
        "$type": POST,
        "text": text,
        "reply": {
            "root": {"uri": reply_to, "cid": "bafyreiroot"},
            "parent": {"uri": reply_to, "cid": "bafyreiparent"},
        },
        "langs": ["en"],
        "createdAt": "2024-11-20T10:00:00.000Z",
    })
    .to_string()
}

fn record(did: &str, rkey: &str, json: String) -> Record {
    Record {
        did: did.to_owned(),
        collection: POST.to_owned(),
        rkey: rkey.to_owned(),
        cid: format!("bafyrei{rkey}"),
        rev: "3lbqaaaaaaa22".to_owned(),
        json,
        indexed_at: INDEXED_AT,
    }
}

/// A backfill of `n` posts by `did`, each replying to a post of BOB's.
fn backfill(did: &str, first: usize, n: usize) -> Batch {
    let records = (first..first + n)
        .map(|idx| {
            let rkey = format!("3l{idx:011}");
            record(
                did,
                &rkey,
                post(&format!("post {idx}"), &format!("at://{BOB}/{POST}/3lroot")),
            )
        })
        .collect();
    Batch {
        backfill: vec![BackfillChunk {
            did: did.to_owned(),
            replace: false,
            records,
            edges: Vec::new(),
        }],
        ..Batch::default()
    }
}

fn repo_row(did: &str) -> RepoRow {
    RepoRow {
        did: did.to_owned(),
        handle: Some("alice.example.com".to_owned()),
        pds: Some("https://pds.example.com".to_owned()),
        status: "active".to_owned(),
        state: SyncState::Synced,
        rev: Some("3lbqaaaaaaa22".to_owned()),
        data_cid: Some("bafyreidata".to_owned()),
        tags: vec!["follows".to_owned(), "seed".to_owned()],
        backfilled_at: Some(INDEXED_AT),
        error: None,
    }
}

fn count(store: &DuckDbStore, sql: &str) -> i64 {
    let result = store.run_sql(sql).expect("the count query runs");
    result.rows[0][0].as_i64().expect("a count is an integer")
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary folder")
}

#[test]
fn conformance_in_memory() {
    butterfly_store::conformance::check_store(|| {
        DuckDbStore::open_in_memory().expect("an in-memory store opens")
    });
}

#[test]
fn conformance_with_the_backlink_index() {
    butterfly_store::conformance::check_store(|| {
        let store = DuckDbStore::open_in_memory().expect("an in-memory store opens");
        store.ensure_backlink_index().expect("the index builds");
        store
    });
}

#[test]
fn conformance_in_a_file() {
    let dir = temp_dir();
    let n = AtomicUsize::new(0);
    butterfly_store::conformance::check_store(|| {
        let path = dir
            .path()
            .join(format!("{}.duckdb", n.fetch_add(1, Ordering::Relaxed)));
        DuckDbStore::open(&path).expect("a new store file opens")
    });
}

#[test]
fn everything_survives_close_and_reopen() {
    let dir = temp_dir();
    let path = dir.path().join("store.duckdb");
    let edge = Edge {
        did: ALICE.to_owned(),
        collection: "app.bsky.graph.follow".to_owned(),
        rkey: "3lfollow".to_owned(),
        attr: "subject".to_owned(),
        target: BOB.to_owned(),
    };
    {
        let mut store = DuckDbStore::open(&path).expect("a new store opens");
        let mut batch = backfill(ALICE, 0, 10);
        batch.repos = vec![repo_row(ALICE)];
        batch.kv = vec![("cursor".to_owned(), Some("1234".to_owned()))];
        batch.edges_added = vec![edge.clone()];
        store.apply(batch).expect("the batch applies");
    }
    let store = DuckDbStore::open(&path).expect("the store opens again");
    assert_eq!(store.record_keys(ALICE).expect("record_keys").len(), 10);
    let found = store
        .get_record(ALICE, POST, "3l00000000003")
        .expect("get_record")
        .expect("a record after reopening");
    assert_eq!(found.indexed_at, INDEXED_AT);
    assert_eq!(store.repo(ALICE).expect("repo"), Some(repo_row(ALICE)));
    assert_eq!(
        store.kv_get("cursor").expect("kv_get"),
        Some("1234".to_owned())
    );
    assert_eq!(store.edges().expect("edges"), vec![edge]);
    let root = format!("at://{BOB}/{POST}/3lroot");
    assert_eq!(store.count_backlinks(&root, None, None).expect("count"), 20);
}

#[test]
fn a_failed_batch_leaves_nothing_behind() {
    let mut store = DuckDbStore::open_in_memory().expect("a store");
    store.apply(backfill(ALICE, 0, 3)).expect("the first batch");
    // Enough records that the appender has taken several thousand rows before the parser
    // reaches the bad one at the end: the rows it took must go with the transaction.
    for n in [10, 20_000] {
        let mut batch = backfill(BOB, 0, n);
        batch.backfill[0].records[n - 1].json = "{\"text\": ".to_owned();
        batch.kv = vec![("cursor".to_owned(), Some("9".to_owned()))];
        batch.purged = vec![ALICE.to_owned()];
        match store.apply(batch) {
            Err(Error::Invalid(message)) => assert!(message.contains("not JSON"), "{message}"),
            other => panic!("a batch with a bad record: expected Error::Invalid, got {other:?}"),
        }
        assert_eq!(count(&store, "SELECT count(*) FROM records"), 3, "records");
        assert_eq!(count(&store, "SELECT count(*) FROM links"), 6, "links");
        assert_eq!(store.kv_get("cursor").expect("kv_get"), None);
    }
    // The store still works.
    store
        .apply(backfill(BOB, 0, 5))
        .expect("a good batch after bad ones");
    assert_eq!(count(&store, "SELECT count(*) FROM records"), 8);
}

#[test]
fn records_sharing_a_locator_are_kept_apart() {
    // Keys whose rid collide are rare by chance; make one by copying a row's rid under another
    // key, with a link of its own.
    let mut store = DuckDbStore::open_in_memory().expect("a store");
    store.apply(backfill(ALICE, 0, 2)).expect("a backfill");
    store
        .run_sql(&format!(
            "INSERT INTO records SELECT '{BOB}', collection, rkey, cid, rev, record, indexed_at, \
             rid FROM records WHERE did = '{ALICE}' AND rkey = '3l00000000000'; \
             INSERT INTO links SELECT target, '{BOB}', collection, rkey, path, rid FROM links \
             WHERE did = '{ALICE}' AND rkey = '3l00000000000'"
        ))
        .expect("the colliding copy goes in");
    let update = Change {
        did: ALICE.to_owned(),
        collection: POST.to_owned(),
        rkey: "3l00000000000".to_owned(),
        action: Action::Update,
        cid: Some("bafyreiedited".to_owned()),
        rev: "3lbqbbbbbbb22".to_owned(),
        json: Some(post(
            "edited",
            "at://did:plc:somebodyelse/app.bsky.feed.post/3lx",
        )),
        live: true,
        indexed_at: INDEXED_AT + 1,
    };
    store
        .apply(Batch {
            changes: vec![update],
            ..Batch::default()
        })
        .expect("an update of one of the colliding keys");
    let edited = store
        .get_record(ALICE, POST, "3l00000000000")
        .expect("get_record")
        .expect("the updated record");
    assert_eq!(edited.cid, "bafyreiedited");
    let copy = store
        .get_record(BOB, POST, "3l00000000000")
        .expect("get_record")
        .expect("the colliding copy survives");
    assert_eq!(copy.cid, "bafyrei3l00000000000");
    let root = format!("at://{BOB}/{POST}/3lroot");
    assert_eq!(
        count(
            &store,
            &format!("SELECT count(*) FROM links WHERE did = '{BOB}' AND target = '{root}'")
        ),
        2,
        "the copy's links survive"
    );
    assert_eq!(count(&store, "SELECT count(*) FROM records"), 3);
}

#[test]
fn run_sql_converts_values() {
    let mut store = DuckDbStore::open_in_memory().expect("a store");
    let mut batch = backfill(ALICE, 0, 2);
    batch.repos = vec![repo_row(ALICE)];
    store.apply(batch).expect("a batch");
    let result = store
        .run_sql(
            "SELECT 1::TINYINT AS i8, 2::INTEGER AS i32, 3::BIGINT AS i64, 4::UBIGINT AS u64, \
             170141183460469231731687303715884105727::HUGEINT AS huge, 1.5::DOUBLE AS f, \
             'nan'::DOUBLE AS nan, 'text' AS t, true AS b, NULL AS n, [1, 2] AS list, \
             {'a': 1, 'b': 'x'} AS st, DATE '2024-02-29' AS d, \
             TIMESTAMP '2024-11-20 10:00:00.5' AS ts, '\\x01\\xff'::BLOB AS blob, \
             '{\"k\": [1, null]}'::JSON AS j",
        )
        .expect("the query runs");
    assert_eq!(
        result.columns,
        [
            "i8", "i32", "i64", "u64", "huge", "f", "nan", "t", "b", "n", "list", "st", "d", "ts",
            "blob", "j"
        ]
    );
    assert_eq!(
        result.rows,
        vec![vec![
            json!(1),
            json!(2),
            json!(3),
            json!(4),
            json!("170141183460469231731687303715884105727"),
            json!(1.5),
            json!("NaN"),
            json!("text"),
            json!(true),
            json!(null),
            json!([1, 2]),
            json!({"a": 1, "b": "x"}),
            json!("2024-02-29"),
            json!("2024-11-20T10:00:00.500000"),
            json!("01ff"),
            json!({"k": [1, null]}),
        ]]
    );

    let records = store
        .run_sql(
            "SELECT rkey, record, record->>'$.text' AS text, indexed_at FROM records \
             ORDER BY rkey LIMIT 1",
        )
        .expect("a query over records");
    assert_eq!(records.columns, ["rkey", "record", "text", "indexed_at"]);
    let row = &records.rows[0];
    assert_eq!(row[0], json!("3l00000000000"));
    assert_eq!(
        row[1]["reply"]["root"]["cid"],
        json!("bafyreiroot"),
        "JSON is parsed"
    );
    assert_eq!(row[2], json!("post 0"));
    assert_eq!(row[3], json!("2024-11-20T10:00:00.123456Z"));

    let repos = store
        .run_sql("SELECT tags, backfilled_at, error FROM repos")
        .expect("a query over repos");
    assert_eq!(
        repos.rows,
        vec![vec![
            json!(["follows", "seed"]),
            json!("2024-11-20T10:00:00.123456Z"),
            json!(null)
        ]]
    );

    let langs = store
        .run_sql(
            "SELECT lang, count(*) AS n FROM records, \
             unnest(from_json(record->'$.langs', '[\"VARCHAR\"]')) AS l(lang) \
             WHERE collection = 'app.bsky.feed.post' GROUP BY lang",
        )
        .expect("posts by language");
    assert_eq!(langs.rows, vec![vec![json!("en"), json!(2)]]);

    assert!(matches!(
        store.run_sql("SELECT * FROM no_such_table"),
        Err(Error::Backend(_))
    ));
}

#[test]
fn read_only_refuses_writes() {
    let dir = temp_dir();
    let path = dir.path().join("store.duckdb");
    DuckDbStore::open(&path)
        .expect("a new store")
        .apply(backfill(ALICE, 0, 4))
        .expect("a batch");
    let mut store = DuckDbStore::open_read_only(&path).expect("a read-only open");
    assert_eq!(store.record_keys(ALICE).expect("reads work").len(), 4);
    match store.apply(backfill(BOB, 0, 1)) {
        Err(Error::Invalid(message)) => assert!(message.contains("read-only"), "{message}"),
        other => panic!("apply on a read-only store: expected Error::Invalid, got {other:?}"),
    }
    assert!(store.run_sql("DELETE FROM records").is_err());
    assert_eq!(count(&store, "SELECT count(*) FROM records"), 4);
    let clone = store.try_clone().expect("a second connection");
    assert_eq!(count(&clone, "SELECT count(*) FROM records"), 4);

    let missing = DuckDbStore::open_read_only(&dir.path().join("missing.duckdb"));
    assert!(missing.is_err(), "a read-only open of a missing file");
}

#[test]
fn a_file_that_is_not_a_store_is_refused() {
    let dir = temp_dir();
    let path = dir.path().join("other.duckdb");
    DuckDbStore::open(&path)
        .expect("a new store")
        .run_sql("DROP TABLE meta")
        .expect("drop meta");
    match DuckDbStore::open(&path) {
        Err(Error::Corrupt(message)) => assert!(message.contains("not a Butterfly store")),
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
    let path = dir.path().join("future.duckdb");
    DuckDbStore::open(&path)
        .expect("a new store")
        .run_sql("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        .expect("bump the version");
    match DuckDbStore::open(&path) {
        Err(Error::Corrupt(message)) => assert!(message.contains("schema version 99"), "{message}"),
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
}

#[test]
fn clones_share_the_database() {
    let mut store = DuckDbStore::open_in_memory().expect("a store");
    let reader = store.try_clone().expect("a second connection");
    store.apply(backfill(ALICE, 0, 3)).expect("a batch");
    assert_eq!(reader.record_keys(ALICE).expect("record_keys").len(), 3);
    let reader_thread =
        std::thread::spawn(move || reader.record_keys(ALICE).map(|keys| keys.len()));
    assert_eq!(
        reader_thread
            .join()
            .expect("the reader thread")
            .expect("reads"),
        3
    );
}

// Two processes.

const CHILD_ENV: &str = "BUTTERFLY_DUCKDB_CHILD";
const PATH_ENV: &str = "BUTTERFLY_DUCKDB_PATH";

/// Which part this process plays, when it is a child started by [`spawn_child`].
fn child_role() -> Option<(String, PathBuf)> {
    let role = std::env::var(CHILD_ENV).ok()?;
    let path = std::env::var_os(PATH_ENV)?;
    Some((role, PathBuf::from(path)))
}

/// Runs `test` of this binary in a child process playing `role` on the store at `path`.
fn spawn_child(test: &str, role: &str, path: &Path) -> Child {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, role)
        .env(PATH_ENV, path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the child starts")
}

/// Reads the child's output until a line that ends with `<marker>`.
fn wait_for(child: &mut Child, marker: &str) {
    let stdout = child.stdout.as_mut().expect("the child's stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            // libtest writes the test's name before it, on the same line.
            Some(Ok(line)) if line.ends_with(&format!("<{marker}>")) => return,
            Some(Ok(_)) => continue,
            other => panic!("the child ended before saying {marker:?}: {other:?}"),
        }
    }
}

/// Tells the parent `marker`, as `<marker>`.
fn say(marker: &str) {
    let mut stdout = std::io::stdout();
    writeln!(stdout, "<{marker}>").expect("write to the parent");
    stdout.flush().expect("flush to the parent");
}

/// Blocks until the parent closes our stdin (or kills us).
fn wait_for_parent() {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn a_locked_file_is_refused_with_a_clear_message() {
    if let Some((_, path)) = child_role() {
        let _store = DuckDbStore::open(&path).expect("the child opens the store");
        say("open");
        wait_for_parent();
        return;
    }
    let dir = temp_dir();
    let path = dir.path().join("store.duckdb");
    drop(DuckDbStore::open(&path).expect("a new store"));
    let mut child = spawn_child(
        "a_locked_file_is_refused_with_a_clear_message",
        "hold",
        &path,
    );
    wait_for(&mut child, "open");
    let refused = DuckDbStore::open(&path).expect_err("a second writer is refused");
    let message = refused.to_string();
    assert!(
        message.contains("in use by another process"),
        "the message says why: {message}"
    );
    assert!(
        DuckDbStore::open_read_only(&path).is_err(),
        "a reader is refused while a writer has the file"
    );
    drop(child.stdin.take());
    assert!(child.wait().expect("the child ends").success());
    DuckDbStore::open(&path).expect("the file opens once the child is gone");
}

#[test]
fn an_applied_batch_survives_a_kill() {
    if let Some((_, path)) = child_role() {
        let mut store = DuckDbStore::open(&path).expect("the child opens the store");
        let mut batch = backfill(ALICE, 0, 500);
        batch.kv = vec![("cursor".to_owned(), Some("500".to_owned()))];
        batch.repos = vec![repo_row(ALICE)];
        store.apply(batch).expect("the child applies a batch");
        say("applied");
        wait_for_parent();
        return;
    }
    let dir = temp_dir();
    let path = dir.path().join("store.duckdb");
    let mut child = spawn_child("an_applied_batch_survives_a_kill", "apply", &path);
    wait_for(&mut child, "applied");
    child.kill().expect("kill the child");
    let _ = child.wait();
    let store = DuckDbStore::open(&path).expect("the store opens after the kill");
    assert_eq!(store.record_keys(ALICE).expect("record_keys").len(), 500);
    assert_eq!(
        store.kv_get("cursor").expect("kv_get"),
        Some("500".to_owned())
    );
    assert_eq!(store.repo(ALICE).expect("repo"), Some(repo_row(ALICE)));
}

#[test]
fn a_kill_during_a_batch_keeps_the_previous_state() {
    if let Some((_, path)) = child_role() {
        let mut store = DuckDbStore::open(&path).expect("the child opens the store");
        let mut first = backfill(ALICE, 0, 100);
        first.kv = vec![("cursor".to_owned(), Some("first".to_owned()))];
        store.apply(first).expect("the first batch");
        // Made before saying so, so that the kill lands in `apply`.
        let mut second = backfill(BOB, 0, 100_000);
        second.kv = vec![("cursor".to_owned(), Some("second".to_owned()))];
        second.purged = vec![ALICE.to_owned()];
        say("applying");
        store.apply(second).expect("the second batch");
        say("applied");
        wait_for_parent();
        return;
    }
    let dir = temp_dir();
    let path = dir.path().join("store.duckdb");
    let mut child = spawn_child(
        "a_kill_during_a_batch_keeps_the_previous_state",
        "apply",
        &path,
    );
    wait_for(&mut child, "applying");
    child.kill().expect("kill the child");
    let _ = child.wait();
    let store = DuckDbStore::open(&path).expect("the store opens after the kill");
    let cursor = store.kv_get("cursor").expect("kv_get");
    let (alice, bob) = (
        store.record_keys(ALICE).expect("record_keys").len(),
        store.record_keys(BOB).expect("record_keys").len(),
    );
    // The second batch is all or nothing (a 100,000-record batch takes seconds: in practice,
    // nothing).
    match cursor.as_deref() {
        Some("first") => assert_eq!((alice, bob), (100, 0), "the first batch, whole"),
        Some("second") => assert_eq!((alice, bob), (0, 100_000), "the second batch, whole"),
        other => panic!("cursor {other:?} after the kill"),
    }
}

// The stock tools.

/// Python's `duckdb` package reads the file. If the package is missing the test says so and
/// passes, unless `CI=true`: there it must be installed (`pip install duckdb==1.5.6`).
#[test]
fn python_duckdb_reads_the_file() {
    let probe = Command::new("python3")
        .args(["-c", "import duckdb; print(duckdb.__version__)"])
        .output();
    let available = matches!(&probe, Ok(output) if output.status.success());
    if !available {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("python3 cannot import duckdb; install it with `pip install duckdb==1.5.6`");
        }
        eprintln!(
            "SKIPPED python_duckdb_reads_the_file: python3 cannot import duckdb \
             (`pip install duckdb==1.5.6`; with CI=true this test fails instead)"
        );
        return;
    }
    let dir = temp_dir();
    let path = dir.path().join("store.duckdb");
    {
        let mut store = DuckDbStore::open(&path).expect("a new store");
        let mut batch = backfill(ALICE, 0, 3);
        batch.repos = vec![repo_row(ALICE)];
        store.apply(batch).expect("a batch");
        // A second batch stays in the write-ahead log until DuckDB checkpoints on close.
        store.apply(backfill(BOB, 0, 2)).expect("another batch");
    }
    let script = r#"
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
print(con.sql("SELECT count(*) FROM records").fetchone()[0])
print(con.sql("SELECT record->>'$.text' FROM records WHERE did = $1 ORDER BY rkey LIMIT 1",
              params=[sys.argv[2]]).fetchone()[0])
print(con.sql("SELECT handle, list_sort(tags) FROM repos").fetchone())
print(con.sql("SELECT count(*) FROM links WHERE path = '.reply.parent.uri'").fetchone()[0])
"#;
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .arg(ALICE)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "5",
            "post 0",
            "('alice.example.com', ['follows', 'seed'])",
            "5"
        ]
    );
}

#[test]
fn older_schema_versions_are_upgraded_when_opened_for_writing() {
    let dir = temp_dir();
    let version = |store: &DuckDbStore| {
        store
            .run_sql("SELECT value FROM meta WHERE key = 'schema_version'")
            .expect("read the version")
            .rows[0][0]
            .clone()
    };
    let has_links_index = |store: &DuckDbStore| {
        count(
            store,
            "SELECT count(*) FROM duckdb_indexes() WHERE index_name = 'links_rid'",
        ) == 1
    };
    // Version 2 is version 3 without the index on `links (rid)`; version 1 also lacks `events`.
    for (old, downgrade) in [
        ("2", "DROP INDEX links_rid"),
        ("1", "DROP INDEX links_rid; DROP TABLE events"),
    ] {
        let path = dir.path().join(format!("version-{old}.duckdb"));
        let mut store = DuckDbStore::open(&path).expect("a new store");
        assert_eq!(version(&store), json!("3"));
        assert!(has_links_index(&store));
        store.apply(backfill(ALICE, 0, 3)).expect("backfill");
        let links = count(&store, "SELECT count(*) FROM links");
        assert!(links >= 3, "each post links to the post it replies to");
        store
            .run_sql(&format!(
                "{downgrade}; UPDATE meta SET value = '{old}' WHERE key = 'schema_version'"
            ))
            .expect("make it an older file");
        drop(store);

        // Read-only, a version-2 file opens as it is; a version-1 file must be upgraded first.
        match (old, DuckDbStore::open_read_only(&path)) {
            ("2", Ok(reader)) => {
                assert_eq!(version(&reader), json!("2"));
                assert_eq!(count(&reader, "SELECT count(*) FROM links"), links);
            }
            ("1", Err(Error::Corrupt(message))) => {
                assert!(message.contains("open it once for writing"), "{message}");
            }
            (_, other) => panic!("version {old} read-only: {other:?}"),
        }

        let mut store = DuckDbStore::open(&path).expect("upgraded");
        assert_eq!(version(&store), json!("3"));
        assert!(has_links_index(&store), "version {old} got the index");
        assert_eq!(count(&store, "SELECT count(*) FROM events"), 0);
        assert_eq!(count(&store, "SELECT count(*) FROM records"), 3);
        // The upgraded file replaces records as a new one does: the old links go with them.
        store
            .apply(backfill(ALICE, 0, 3))
            .expect("write again after the upgrade");
        assert_eq!(count(&store, "SELECT count(*) FROM records"), 3);
        assert_eq!(count(&store, "SELECT count(*) FROM links"), links);
    }
}
