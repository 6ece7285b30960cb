//! Reads on a cloned connection while the original writes: what `butterfly serve` does.
#![allow(clippy::unwrap_used)]

use butterfly_store::{Batch, RepoRow, Store, SyncState};
use butterfly_store_duckdb::DuckDbStore;

fn row(i: usize) -> RepoRow {
    RepoRow {
        did: format!("did:plc:{i:024}"),
        handle: Some(format!("user{i}.test")),
        pds: Some("https://pds.example".into()),
        status: "active".into(),
        state: SyncState::Synced,
        rev: Some("3lbq2aaaaaa2k".into()),
        data_cid: Some("bafyreib2rxk3rh6kzwq".into()),
        tags: vec!["me".into(), "profiles".into()],
        backfilled_at: Some(1_700_000_000_000_000),
        error: None,
    }
}

#[test]
fn reads_on_a_clone_while_writing() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = DuckDbStore::open(&dir.path().join("c.duckdb")).unwrap();
    let reader = writer.try_clone().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let (first_read, first_read_done) = std::sync::mpsc::channel();
    let reading = std::thread::spawn(move || {
        let mut reads = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let rows = reader.repos().unwrap();
            for row in &rows {
                assert!(row.did.starts_with("did:plc:"), "{row:?}");
            }
            reads += 1;
            if reads == 1 {
                first_read.send(()).unwrap();
            }
        }
        reads
    });
    // Writing starts once the reader has read, so that it is reading by then however the threads
    // are scheduled.
    if first_read_done.recv().is_err() {
        let reader = reading.join();
        panic!("the reader ended before its first read: {reader:?}");
    }
    for round in 0..200 {
        let batch = Batch {
            repos: (0..20).map(|i| row(round * 20 + i)).collect(),
            ..Batch::default()
        };
        writer.apply(batch).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reading.join().unwrap();
    assert!(reads > 0);
}
