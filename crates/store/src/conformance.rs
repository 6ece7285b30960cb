//! A test kit: the behaviour every [`Store`] must show, as one call from a store's tests.
//!
//! ```
//! butterfly_store::conformance::check_store(butterfly_store::MemoryStore::new);
//! ```
//!
//! [`check_store`] runs each check on a fresh store from the given constructor and panics on the
//! first failure, naming the check and what differed. The checks go through the [`Store`] trait
//! only, so they hold any implementation to the same contract: the order in which a [`Batch`] is
//! applied, upserts, purge against clear, replacing backfills, edges as a set, the key-value
//! table, paging of records and backlinks, the summary, and that a refused batch changes nothing.
//!
//! [`check_keys_only_store`] runs the checks that need no record bodies, for stores that keep only
//! keys (the stdout store), and checks that reads of bodies and backlinks are refused.
//!
//! Fixtures look like the network's: `did:plc` DIDs, TID rkeys and revisions, `bafyrei…` CIDs and
//! Bluesky records. The kit is ordinary code rather than `#[cfg(test)]` so that other crates'
//! tests can call it; it panics by design.

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::json;

use crate::{
    Action, BackfillChunk, BacklinkPage, BacklinkQuery, Batch, Change, Edge, Error, EventKind,
    Page, Record, RecordKey, RepoRow, Store, StreamEvent, Summary, SyncState,
};

/// Runs every check against stores from `make`, one fresh store per check.
///
/// Panics with the failing check's name and the difference found.
pub fn check_store<S: Store>(mut make: impl FnMut() -> S) {
    for (name, check) in keys_checks::<S>().into_iter().chain(body_checks::<S>()) {
        run(name, check, &mut make);
    }
}

/// Runs the checks that need no record bodies against stores from `make`, and checks that the
/// store refuses reads of bodies and backlinks with [`Error::Invalid`].
pub fn check_keys_only_store<S: Store>(mut make: impl FnMut() -> S) {
    let refusal: Check<S> = ("keys_only_refuses_bodies", keys_only_refuses_bodies::<S>);
    for (name, check) in keys_checks::<S>().into_iter().chain([refusal]) {
        run(name, check, &mut make);
    }
}

type Check<S> = (&'static str, fn(&mut S));

/// Checks that hold for every store, with or without bodies.
fn keys_checks<S: Store>() -> Vec<Check<S>> {
    vec![
        ("empty_store", empty_store::<S>),
        ("record_keys_sorted", record_keys_sorted::<S>),
        ("changes_upsert", changes_upsert::<S>),
        ("changes_apply_in_order", changes_apply_in_order::<S>),
        ("delete_of_missing_record", delete_of_missing_record::<S>),
        ("newest_rkeys", newest_rkeys::<S>),
        ("purge_and_clear", purge_and_clear::<S>),
        ("backfill_upserts", backfill_upserts::<S>),
        ("backfill_replace", backfill_replace::<S>),
        ("batch_order", batch_order::<S>),
        ("edges_are_a_set", edges_are_a_set::<S>),
        ("edges_removed_by_record", edges_removed_by_record::<S>),
        ("repo_rows", repo_rows::<S>),
        ("repo_lookups", repo_lookups::<S>),
        ("kv", kv::<S>),
        ("event_log", event_log::<S>),
        ("summary_counts", summary_counts::<S>),
        (
            "refused_batch_changes_nothing",
            refused_batch_changes_nothing::<S>,
        ),
    ]
}

/// Checks of record bodies and backlinks.
fn body_checks<S: Store>() -> Vec<Check<S>> {
    vec![
        ("get_record", get_record::<S>),
        ("list_records_paging", list_records_paging::<S>),
        (
            "backlinks_order_and_paging",
            backlinks_order_and_paging::<S>,
        ),
        (
            "backlinks_filters_and_counts",
            backlinks_filters_and_counts::<S>,
        ),
        ("backlinks_follow_changes", backlinks_follow_changes::<S>),
        ("backlinks_to_dids", backlinks_to_dids::<S>),
        ("bad_json_changes_nothing", bad_json_changes_nothing::<S>),
    ]
}

/// Runs one check on a fresh store, naming it if it panics.
fn run<S: Store>(name: &str, check: fn(&mut S), make: &mut impl FnMut() -> S) {
    let mut store = make();
    let outcome = catch_unwind(AssertUnwindSafe(|| check(&mut store)));
    if let Err(payload) = outcome {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        panic!("store conformance check `{name}` failed: {message}");
    }
}

// Fixtures.

const ALICE: &str = "did:plc:4xk3ihlb2mbwvdcxgsdhnqyb";
const BOB: &str = "did:plc:r7tbmc5dwl4ajvvc2ubpfhwj";
const CAROL: &str = "did:plc:ylm6kqp2rjxv3sdh7gwz5cna";
const DAVE: &str = "did:plc:e2nq5wkzo7fvtjhy4abdmu3s";

const POST: &str = "app.bsky.feed.post";
const LIKE: &str = "app.bsky.feed.like";
const REPOST: &str = "app.bsky.feed.repost";
const FOLLOW: &str = "app.bsky.graph.follow";
const LISTITEM: &str = "app.bsky.graph.listitem";

const CREATED_AT: &str = "2024-11-20T10:00:00.000Z";
const INDEXED_AT: i64 = 1_732_096_800_000_000;

const BASE32_SORT: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";

/// A TID `n` seconds after a fixed time: greater `n`, greater TID.
fn tid(n: u64) -> String {
    let micros = 1_732_000_000_000_000 + n * 1_000_000;
    let value = (micros << 10) | 7;
    (0..13)
        .map(|idx| char::from(BASE32_SORT[((value >> (60 - 5 * idx)) & 31) as usize]))
        .collect()
}

/// A revision: a TID well after every rkey used here.
fn rev(n: u64) -> String {
    tid(100_000 + n)
}

/// A CID-shaped string determined by `seed`.
fn cid(seed: &str) -> String {
    const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    // FNV-1a, then a xorshift stream: only distinctness matters.
    let mut state = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut text = String::from("bafyrei");
    for _ in 0..52 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push(char::from(BASE32[(state >> 59) as usize]));
    }
    text
}

fn post_uri(did: &str, rkey: &str) -> String {
    format!("at://{did}/{POST}/{rkey}")
}

fn strong_ref(uri: &str) -> serde_json::Value {
    json!({"uri": uri, "cid": cid(uri)})
}

fn like_json(uri: &str) -> String {
    json!({"$type": LIKE, "subject": strong_ref(uri), "createdAt": CREATED_AT}).to_string()
}

fn repost_json(uri: &str) -> String {
    json!({"$type": REPOST, "subject": strong_ref(uri), "createdAt": CREATED_AT}).to_string()
}

fn follow_json(did: &str) -> String {
    json!({"$type": FOLLOW, "subject": did, "createdAt": CREATED_AT}).to_string()
}

fn post_json(text: &str) -> String {
    json!({"$type": POST, "text": text, "langs": ["en"], "createdAt": CREATED_AT}).to_string()
}

fn reply_json(text: &str, parent: &str, root: &str) -> String {
    json!({
        "$type": POST,
        "text": text,
        "reply": {"root": strong_ref(root), "parent": strong_ref(parent)},
        "createdAt": CREATED_AT,
    })
    .to_string()
}

fn quote_json(text: &str, uri: &str) -> String {
    json!({
        "$type": POST,
        "text": text,
        "embed": {"$type": "app.bsky.embed.record", "record": strong_ref(uri)},
        "createdAt": CREATED_AT,
    })
    .to_string()
}

fn mention_json(text: &str, did: &str) -> String {
    json!({
        "$type": POST,
        "text": text,
        "facets": [{
            "index": {"byteStart": 0, "byteEnd": 5},
            "features": [{"$type": "app.bsky.richtext.facet#mention", "did": did}],
        }],
        "createdAt": CREATED_AT,
    })
    .to_string()
}

fn listitem_json(did: &str, list: &str) -> String {
    json!({"$type": LISTITEM, "subject": did, "list": list, "createdAt": CREATED_AT}).to_string()
}

/// A create or update, with a CID derived from the key and the record.
fn put(action: Action, did: &str, collection: &str, rkey: &str, json: &str, rev: &str) -> Change {
    Change {
        did: did.to_owned(),
        collection: collection.to_owned(),
        rkey: rkey.to_owned(),
        action,
        cid: Some(cid(&format!("{did}/{collection}/{rkey}/{json}"))),
        rev: rev.to_owned(),
        json: Some(json.to_owned()),
        live: true,
        indexed_at: INDEXED_AT,
    }
}

fn create(did: &str, collection: &str, rkey: &str, json: &str) -> Change {
    put(Action::Create, did, collection, rkey, json, &rev(1))
}

fn update(did: &str, collection: &str, rkey: &str, json: &str) -> Change {
    put(Action::Update, did, collection, rkey, json, &rev(2))
}

fn delete(did: &str, collection: &str, rkey: &str) -> Change {
    Change {
        did: did.to_owned(),
        collection: collection.to_owned(),
        rkey: rkey.to_owned(),
        action: Action::Delete,
        cid: None,
        rev: rev(3),
        json: None,
        live: true,
        indexed_at: INDEXED_AT + 1,
    }
}

/// A backfilled record, with a CID derived from the key and the record.
fn record(did: &str, collection: &str, rkey: &str, json: &str) -> Record {
    Record {
        did: did.to_owned(),
        collection: collection.to_owned(),
        rkey: rkey.to_owned(),
        cid: cid(&format!("{did}/{collection}/{rkey}/{json}")),
        rev: rev(0),
        json: json.to_owned(),
        indexed_at: INDEXED_AT - 1,
    }
}

fn chunk(did: &str, replace: bool, records: Vec<Record>, edges: Vec<Edge>) -> BackfillChunk {
    BackfillChunk {
        did: did.to_owned(),
        replace,
        records,
        edges,
    }
}

fn edge(did: &str, collection: &str, rkey: &str, attr: &str, target: &str) -> Edge {
    Edge {
        did: did.to_owned(),
        collection: collection.to_owned(),
        rkey: rkey.to_owned(),
        attr: attr.to_owned(),
        target: target.to_owned(),
    }
}

fn record_key(did: &str, collection: &str, rkey: &str) -> RecordKey {
    RecordKey {
        did: did.to_owned(),
        collection: collection.to_owned(),
        rkey: rkey.to_owned(),
    }
}

fn row(did: &str, state: SyncState, status: &str, tags: &[&str]) -> RepoRow {
    RepoRow {
        did: did.to_owned(),
        handle: None,
        pds: None,
        status: status.to_owned(),
        state,
        rev: None,
        data_cid: None,
        tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
        backfilled_at: None,
        error: None,
    }
}

fn changes(changes: Vec<Change>) -> Batch {
    Batch {
        changes,
        ..Batch::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

fn counts(items: &[(&str, u64)]) -> Vec<(String, u64)> {
    items
        .iter()
        .map(|(name, count)| ((*name).to_owned(), *count))
        .collect()
}

// Store access that panics with context.

#[track_caller]
fn must<T>(what: &str, result: Result<T, Error>) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("{what} failed: {err}"),
    }
}

#[track_caller]
fn apply<S: Store>(store: &mut S, batch: Batch) {
    must("apply", store.apply(batch));
}

/// A repo's records as `(collection, rkey)`, from `record_keys`.
#[track_caller]
fn keys<S: Store>(store: &S, did: &str) -> Vec<(String, String)> {
    must("record_keys", store.record_keys(did))
        .into_iter()
        .map(|(collection, rkey, _)| (collection, rkey))
        .collect()
}

/// The CID `record_keys` reports for one record.
#[track_caller]
fn cid_of<S: Store>(store: &S, did: &str, collection: &str, rkey: &str) -> Option<String> {
    must("record_keys", store.record_keys(did))
        .into_iter()
        .find(|(c, r, _)| c == collection && r == rkey)
        .map(|(_, _, cid)| cid)
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[track_caller]
fn get<S: Store>(store: &S, did: &str, collection: &str, rkey: &str) -> Option<Record> {
    must("get_record", store.get_record(did, collection, rkey))
}

#[track_caller]
fn backlinks<S: Store>(
    store: &S,
    target: &str,
    collection: Option<&str>,
    path: Option<&str>,
    cursor: Option<&str>,
    limit: usize,
) -> BacklinkPage {
    let query = BacklinkQuery {
        target,
        collection,
        path,
        cursor,
        limit,
    };
    must("backlinks", store.backlinks(query))
}

/// Every backlink to `target` through the filters, as `(rkey, did, collection, path)`, read in
/// pages of `limit`; checks that every page but the last is full and has a cursor.
#[track_caller]
fn all_backlinks<S: Store>(
    store: &S,
    target: &str,
    collection: Option<&str>,
    path: Option<&str>,
    limit: usize,
) -> Vec<(String, String, String, String)> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let page = backlinks(store, target, collection, path, cursor.as_deref(), limit);
        assert!(
            page.links.len() <= limit,
            "a backlinks page of limit {limit} has {} links",
            page.links.len()
        );
        all.extend(
            page.links
                .into_iter()
                .map(|link| (link.rkey, link.did, link.collection, link.path)),
        );
        match page.cursor {
            Some(next) => {
                assert_eq!(
                    all.len() % limit,
                    0,
                    "backlinks to {target}: a page that is not full has a cursor"
                );
                cursor = Some(next);
            }
            None => return all,
        }
    }
    panic!("backlinks to {target} never ended")
}

#[track_caller]
fn count<S: Store>(store: &S, target: &str, collection: Option<&str>, path: Option<&str>) -> u64 {
    must(
        "count_backlinks",
        store.count_backlinks(target, collection, path),
    )
}

/// What a store shows through the trait about the repos and keys a check uses.
#[derive(Debug, PartialEq)]
struct Snapshot {
    repos: Vec<RepoRow>,
    edges: Vec<Edge>,
    /// Each repo's `record_keys`.
    records: Vec<(String, RecordKeys)>,
    kv: Vec<(String, Option<String>)>,
    summary: Summary,
    /// Every record with its body, when the store keeps bodies.
    bodies: Vec<Record>,
    /// Backlink counts per target, when the store keeps bodies.
    backlinks: Vec<(String, u64)>,
}

/// What [`Store::record_keys`] returns.
type RecordKeys = Vec<(String, String, String)>;

const KV_KEYS: [&str; 3] = ["cursor", "identity:alice", "missing"];

#[track_caller]
fn snapshot<S: Store>(store: &S, with_bodies: bool, targets: &[&str]) -> Snapshot {
    let mut snapshot = Snapshot {
        repos: must("repos", store.repos()),
        edges: must("edges", store.edges()),
        records: Vec::new(),
        kv: Vec::new(),
        summary: must("summary", store.summary()),
        bodies: Vec::new(),
        backlinks: Vec::new(),
    };
    for did in [ALICE, BOB, CAROL, DAVE] {
        let keys = must("record_keys", store.record_keys(did));
        if with_bodies {
            for (collection, rkey, _) in &keys {
                if let Some(record) = get(store, did, collection, rkey) {
                    snapshot.bodies.push(record);
                }
            }
        }
        snapshot.records.push((did.to_owned(), keys));
    }
    for key in KV_KEYS {
        snapshot
            .kv
            .push((key.to_owned(), must("kv_get", store.kv_get(key))));
    }
    if with_bodies {
        for target in targets {
            snapshot
                .backlinks
                .push(((*target).to_owned(), count(store, target, None, None)));
        }
    }
    snapshot
}

/// A store with some of everything in it: rows, records (backfilled and live), edges and kv.
fn populate<S: Store>(store: &mut S) {
    let carol_post = post_uri(CAROL, &tid(1));
    apply(
        store,
        Batch {
            backfill: vec![chunk(
                ALICE,
                false,
                vec![
                    record(ALICE, FOLLOW, &tid(2), &follow_json(CAROL)),
                    record(ALICE, LIKE, &tid(3), &like_json(&carol_post)),
                ],
                vec![edge(ALICE, FOLLOW, &tid(2), "subject", CAROL)],
            )],
            changes: vec![
                create(CAROL, POST, &tid(1), &post_json("hello")),
                create(BOB, REPOST, &tid(4), &repost_json(&carol_post)),
            ],
            edges_added: vec![edge(BOB, FOLLOW, &tid(5), "subject", ALICE)],
            repos: vec![
                row(ALICE, SyncState::Synced, "active", &["follows"]),
                row(BOB, SyncState::Synced, "active", &["follows"]),
                row(CAROL, SyncState::Pending, "active", &["seed"]),
            ],
            kv: vec![
                ("cursor".to_owned(), Some("1000".to_owned())),
                ("identity:alice".to_owned(), Some("{}".to_owned())),
            ],
            ..Batch::default()
        },
    );
}

// Checks that need no bodies.

/// A new store is empty, and an empty batch applies.
fn empty_store<S: Store>(store: &mut S) {
    apply(store, Batch::default());
    assert_eq!(
        must("kv_get", store.kv_get("cursor")),
        None,
        "kv of an empty store"
    );
    assert_eq!(
        must("repo", store.repo(ALICE)),
        None,
        "repo row in an empty store"
    );
    assert!(
        must("repos", store.repos()).is_empty(),
        "repos of an empty store"
    );
    assert!(
        must("edges", store.edges()).is_empty(),
        "edges of an empty store"
    );
    assert!(
        keys(store, ALICE).is_empty(),
        "record_keys of an empty store"
    );
    assert!(
        must("newest_rkeys", store.newest_rkeys(ALICE, LIKE, 5)).is_empty(),
        "newest_rkeys of an empty store"
    );
    assert_eq!(
        must("summary", store.summary()),
        Summary::default(),
        "summary of an empty store"
    );
}

/// `record_keys` lists one repo's records sorted by collection, then rkey, with their CIDs.
fn record_keys_sorted<S: Store>(store: &mut S) {
    let post = post_uri(CAROL, &tid(1));
    let made = vec![
        create(ALICE, POST, &tid(9), &post_json("second")),
        create(ALICE, LIKE, &tid(7), &like_json(&post)),
        create(ALICE, FOLLOW, &tid(3), &follow_json(BOB)),
        create(ALICE, POST, &tid(2), &post_json("first")),
        create(ALICE, LIKE, &tid(8), &like_json(&post)),
        create(BOB, LIKE, &tid(5), &like_json(&post)),
    ];
    let mut expected: Vec<(String, String, String)> = made
        .iter()
        .filter(|change| change.did == ALICE)
        .map(|change| {
            (
                change.collection.clone(),
                change.rkey.clone(),
                change.cid.clone().unwrap_or_default(),
            )
        })
        .collect();
    expected.sort();
    apply(store, changes(made));
    assert_eq!(
        must("record_keys", store.record_keys(ALICE)),
        expected,
        "record_keys(alice) after six creates across two repos"
    );
    assert_eq!(
        keys(store, BOB),
        pairs(&[(LIKE, &tid(5))]),
        "record_keys(bob)"
    );
    assert!(
        keys(store, CAROL).is_empty(),
        "record_keys of a repo without records"
    );
}

/// A create of an existing key and an update of a missing one are upserts.
fn changes_upsert<S: Store>(store: &mut S) {
    let first = create(ALICE, POST, &tid(1), &post_json("first version"));
    apply(store, changes(vec![first.clone()]));
    let again = create(ALICE, POST, &tid(1), &post_json("created again"));
    apply(store, changes(vec![again.clone()]));
    assert_eq!(
        keys(store, ALICE),
        pairs(&[(POST, &tid(1))]),
        "a create over a record"
    );
    assert_eq!(
        cid_of(store, ALICE, POST, &tid(1)),
        again.cid,
        "the CID after a create over a record"
    );
    let edited = update(ALICE, POST, &tid(1), &post_json("edited"));
    apply(store, changes(vec![edited.clone()]));
    assert_eq!(
        cid_of(store, ALICE, POST, &tid(1)),
        edited.cid,
        "the CID after an update"
    );
    let orphan = update(
        ALICE,
        POST,
        &tid(2),
        &post_json("update of a missing record"),
    );
    apply(store, changes(vec![orphan.clone()]));
    assert_eq!(
        keys(store, ALICE),
        pairs(&[(POST, &tid(1)), (POST, &tid(2))]),
        "an update of a missing record inserts it"
    );
    assert_eq!(
        cid_of(store, ALICE, POST, &tid(2)),
        orphan.cid,
        "the CID of an upserted update"
    );
    assert_eq!(
        must("summary", store.summary()).records,
        2,
        "summary.records after upserts"
    );
}

/// Changes within one batch apply in order.
fn changes_apply_in_order<S: Store>(store: &mut S) {
    apply(
        store,
        changes(vec![create(ALICE, POST, &tid(3), &post_json("old"))]),
    );
    let edited = update(ALICE, POST, &tid(1), &post_json("edited"));
    let recreated = create(ALICE, POST, &tid(3), &post_json("recreated"));
    apply(
        store,
        changes(vec![
            create(ALICE, POST, &tid(1), &post_json("original")),
            edited.clone(),
            create(ALICE, POST, &tid(2), &post_json("short-lived")),
            delete(ALICE, POST, &tid(2)),
            delete(ALICE, POST, &tid(3)),
            recreated.clone(),
        ]),
    );
    assert_eq!(
        keys(store, ALICE),
        pairs(&[(POST, &tid(1)), (POST, &tid(3))]),
        "create+update, create+delete and delete+create in one batch"
    );
    assert_eq!(
        cid_of(store, ALICE, POST, &tid(1)),
        edited.cid,
        "create then update: the update wins"
    );
    assert_eq!(
        cid_of(store, ALICE, POST, &tid(3)),
        recreated.cid,
        "delete then create: the create wins"
    );
}

/// A delete of a missing record does nothing, and a delete removes only its record.
fn delete_of_missing_record<S: Store>(store: &mut S) {
    apply(
        store,
        changes(vec![
            create(ALICE, POST, &tid(1), &post_json("one")),
            create(ALICE, POST, &tid(2), &post_json("two")),
            create(BOB, POST, &tid(1), &post_json("bob's")),
        ]),
    );
    apply(
        store,
        changes(vec![
            delete(ALICE, POST, &tid(9)),
            delete(ALICE, LIKE, &tid(1)),
            delete(CAROL, POST, &tid(1)),
        ]),
    );
    assert_eq!(
        keys(store, ALICE),
        pairs(&[(POST, &tid(1)), (POST, &tid(2))]),
        "deletes of missing records"
    );
    apply(store, changes(vec![delete(ALICE, POST, &tid(1))]));
    assert_eq!(
        keys(store, ALICE),
        pairs(&[(POST, &tid(2))]),
        "a delete removes its record"
    );
    assert_eq!(
        keys(store, BOB),
        pairs(&[(POST, &tid(1))]),
        "a delete leaves other repos alone"
    );
}

/// `newest_rkeys` gives the greatest rkeys of one collection of one repo, greatest first.
fn newest_rkeys<S: Store>(store: &mut S) {
    let post = post_uri(CAROL, &tid(1));
    let mut made = Vec::new();
    for n in [14, 11, 15, 12, 13] {
        made.push(create(ALICE, LIKE, &tid(n), &like_json(&post)));
    }
    made.push(create(
        ALICE,
        POST,
        &tid(20),
        &post_json("newer, other collection"),
    ));
    made.push(create(BOB, LIKE, &tid(30), &like_json(&post)));
    apply(store, changes(made));
    let newest = |n: usize| must("newest_rkeys", store.newest_rkeys(ALICE, LIKE, n));
    assert_eq!(
        newest(3),
        vec![tid(15), tid(14), tid(13)],
        "newest_rkeys(alice, like, 3)"
    );
    assert_eq!(
        newest(10),
        vec![tid(15), tid(14), tid(13), tid(12), tid(11)],
        "newest_rkeys(alice, like, 10) with five likes"
    );
    assert!(newest(0).is_empty(), "newest_rkeys(.., 0)");
    assert!(
        must("newest_rkeys", store.newest_rkeys(ALICE, REPOST, 3)).is_empty(),
        "newest_rkeys of an empty collection"
    );
    assert_eq!(
        must("newest_rkeys", store.newest_rkeys(BOB, LIKE, 3)),
        vec![tid(30)],
        "newest_rkeys(bob, like, 3)"
    );
}

/// A purge removes a repo's row, records and edges; a clear keeps the row.
fn purge_and_clear<S: Store>(store: &mut S) {
    populate(store);
    let bob_row = must("repo", store.repo(BOB));
    assert!(bob_row.is_some(), "bob's row after populate");
    apply(
        store,
        Batch {
            purged: vec![ALICE.to_owned(), DAVE.to_owned()],
            cleared: vec![BOB.to_owned()],
            ..Batch::default()
        },
    );
    assert_eq!(must("repo", store.repo(ALICE)), None, "a purged repo's row");
    assert!(keys(store, ALICE).is_empty(), "a purged repo's records");
    assert_eq!(
        must("repo", store.repo(BOB)),
        bob_row,
        "a cleared repo keeps its row"
    );
    assert!(keys(store, BOB).is_empty(), "a cleared repo's records");
    assert!(
        must("edges", store.edges()).is_empty(),
        "edges of purged and cleared repos"
    );
    assert_eq!(
        keys(store, CAROL),
        pairs(&[(POST, &tid(1))]),
        "an untouched repo's records"
    );
    assert!(
        must("repo", store.repo(CAROL)).is_some(),
        "an untouched repo's row"
    );
    assert_eq!(
        must("kv_get", store.kv_get("cursor")),
        Some("1000".to_owned()),
        "kv survives purges"
    );
    let summary = must("summary", store.summary());
    assert_eq!(
        (summary.repos, summary.records),
        (2, 1),
        "summary after purge and clear"
    );
}

/// Backfilled records are upserts: existing records stay unless overwritten.
fn backfill_upserts<S: Store>(store: &mut S) {
    apply(
        store,
        changes(vec![
            create(ALICE, POST, &tid(1), &post_json("live before backfill")),
            create(ALICE, POST, &tid(2), &post_json("overwritten by backfill")),
        ]),
    );
    let overwrite = record(ALICE, POST, &tid(2), &post_json("from backfill"));
    apply(
        store,
        Batch {
            backfill: vec![
                chunk(
                    ALICE,
                    false,
                    vec![
                        overwrite.clone(),
                        record(ALICE, FOLLOW, &tid(3), &follow_json(BOB)),
                    ],
                    vec![edge(ALICE, FOLLOW, &tid(3), "subject", BOB)],
                ),
                chunk(
                    ALICE,
                    false,
                    vec![record(ALICE, FOLLOW, &tid(4), &follow_json(CAROL))],
                    vec![edge(ALICE, FOLLOW, &tid(4), "subject", CAROL)],
                ),
            ],
            ..Batch::default()
        },
    );
    assert_eq!(
        keys(store, ALICE),
        pairs(&[
            (POST, &tid(1)),
            (POST, &tid(2)),
            (FOLLOW, &tid(3)),
            (FOLLOW, &tid(4))
        ]),
        "records after two backfill chunks without replace"
    );
    assert_eq!(
        cid_of(store, ALICE, POST, &tid(2)),
        Some(overwrite.cid),
        "a backfilled record over a live one"
    );
    assert_eq!(
        must("edges", store.edges()),
        vec![
            edge(ALICE, FOLLOW, &tid(3), "subject", BOB),
            edge(ALICE, FOLLOW, &tid(4), "subject", CAROL),
        ],
        "edges from backfill chunks"
    );
}

/// A replacing chunk first removes the repo's records and edges, and only that repo's.
fn backfill_replace<S: Store>(store: &mut S) {
    populate(store);
    let kept = record(ALICE, LIKE, &tid(3), &like_json(&post_uri(CAROL, &tid(1))));
    apply(
        store,
        Batch {
            backfill: vec![
                chunk(
                    ALICE,
                    true,
                    vec![
                        kept.clone(),
                        record(ALICE, POST, &tid(6), &post_json("new")),
                    ],
                    vec![edge(ALICE, FOLLOW, &tid(7), "subject", DAVE)],
                ),
                chunk(
                    ALICE,
                    false,
                    vec![record(ALICE, POST, &tid(8), &post_json("more"))],
                    vec![],
                ),
            ],
            ..Batch::default()
        },
    );
    assert_eq!(
        keys(store, ALICE),
        pairs(&[(LIKE, &tid(3)), (POST, &tid(6)), (POST, &tid(8))]),
        "records after a replacing backfill"
    );
    assert_eq!(
        cid_of(store, ALICE, LIKE, &tid(3)),
        Some(kept.cid),
        "a record loaded again"
    );
    assert_eq!(
        must("edges", store.edges()),
        vec![
            edge(ALICE, FOLLOW, &tid(7), "subject", DAVE),
            edge(BOB, FOLLOW, &tid(5), "subject", ALICE),
        ],
        "edges after a replacing backfill: alice's old edge gone, bob's kept"
    );
    assert_eq!(
        keys(store, BOB),
        pairs(&[(REPOST, &tid(4))]),
        "other repos' records"
    );
    assert!(
        must("repo", store.repo(ALICE)).is_some(),
        "a replacing backfill keeps the row"
    );

    // A second replacing chunk in one batch removes what the first loaded.
    apply(
        store,
        Batch {
            backfill: vec![
                chunk(
                    BOB,
                    true,
                    vec![record(BOB, POST, &tid(10), &post_json("a"))],
                    vec![],
                ),
                chunk(
                    BOB,
                    true,
                    vec![record(BOB, POST, &tid(11), &post_json("b"))],
                    vec![],
                ),
            ],
            ..Batch::default()
        },
    );
    assert_eq!(
        keys(store, BOB),
        pairs(&[(POST, &tid(11))]),
        "two replacing chunks in one batch"
    );
}

/// The fields of a batch apply in the documented order.
fn batch_order<S: Store>(store: &mut S) {
    populate(store);
    let alice_row = row(ALICE, SyncState::Resync, "active", &["follows"]);
    apply(
        store,
        Batch {
            // Purged before everything else: the backfill, edges and row below survive it.
            purged: vec![ALICE.to_owned()],
            // Cleared before the backfill and the changes below.
            cleared: vec![BOB.to_owned(), CAROL.to_owned()],
            backfill: vec![
                chunk(
                    ALICE,
                    false,
                    vec![record(ALICE, POST, &tid(20), &post_json("after purge"))],
                    vec![],
                ),
                chunk(
                    BOB,
                    false,
                    vec![record(BOB, POST, &tid(21), &post_json("after clear"))],
                    vec![],
                ),
                // Replaced before the changes below.
                chunk(
                    DAVE,
                    true,
                    vec![record(
                        DAVE,
                        POST,
                        &tid(22),
                        &post_json("deleted by a change"),
                    )],
                    vec![],
                ),
            ],
            changes: vec![
                create(CAROL, POST, &tid(23), &post_json("after clear")),
                delete(DAVE, POST, &tid(22)),
                create(DAVE, POST, &tid(24), &post_json("after replace")),
            ],
            // Removed before added: the record's new edge stays.
            edges_removed: vec![record_key(ALICE, FOLLOW, &tid(2))],
            edges_added: vec![
                edge(ALICE, FOLLOW, &tid(2), "subject", DAVE),
                edge(BOB, FOLLOW, &tid(25), "subject", CAROL),
            ],
            repos: vec![alice_row.clone()],
            kv: vec![
                ("cursor".to_owned(), Some("1001".to_owned())),
                ("cursor".to_owned(), None),
                ("cursor".to_owned(), Some("1002".to_owned())),
            ],
            events: vec![],
            events_before: None,
        },
    );
    assert_eq!(
        keys(store, ALICE),
        pairs(&[(POST, &tid(20))]),
        "purge, then backfill"
    );
    assert_eq!(
        keys(store, BOB),
        pairs(&[(POST, &tid(21))]),
        "clear, then backfill"
    );
    assert_eq!(
        keys(store, CAROL),
        pairs(&[(POST, &tid(23))]),
        "clear, then a change"
    );
    assert_eq!(
        keys(store, DAVE),
        pairs(&[(POST, &tid(24))]),
        "a replacing backfill, then changes"
    );
    assert_eq!(
        must("edges", store.edges()),
        vec![
            edge(ALICE, FOLLOW, &tid(2), "subject", DAVE),
            edge(BOB, FOLLOW, &tid(25), "subject", CAROL),
        ],
        "purge and clear, then edges removed, then edges added"
    );
    assert_eq!(
        must("repo", store.repo(ALICE)),
        Some(alice_row),
        "purge, then repo rows"
    );
    assert_eq!(
        must("kv_get", store.kv_get("cursor")),
        Some("1002".to_owned()),
        "kv entries apply in order"
    );
}

/// Edges are a set, listed sorted, and independent of records.
fn edges_are_a_set<S: Store>(store: &mut S) {
    let follow_bob = edge(ALICE, FOLLOW, &tid(2), "subject", BOB);
    let follow_carol = edge(ALICE, FOLLOW, &tid(1), "subject", CAROL);
    let list_item = edge(DAVE, LISTITEM, &tid(3), "subject", ALICE);
    apply(
        store,
        Batch {
            backfill: vec![chunk(ALICE, false, vec![], vec![follow_bob.clone()])],
            edges_added: vec![
                list_item.clone(),
                follow_bob.clone(),
                follow_carol.clone(),
                follow_bob.clone(),
            ],
            ..Batch::default()
        },
    );
    apply(
        store,
        Batch {
            edges_added: vec![follow_carol.clone()],
            ..Batch::default()
        },
    );
    let mut expected = vec![follow_bob, follow_carol, list_item];
    expected.sort();
    assert_eq!(
        must("edges", store.edges()),
        expected,
        "edges added several times"
    );
    // Records and their changes do not touch edges.
    apply(
        store,
        changes(vec![
            create(ALICE, FOLLOW, &tid(2), &follow_json(BOB)),
            delete(ALICE, FOLLOW, &tid(2)),
            delete(ALICE, FOLLOW, &tid(1)),
        ]),
    );
    assert_eq!(
        must("edges", store.edges()),
        expected,
        "edges after record changes"
    );
    assert!(keys(store, ALICE).is_empty(), "edges are not records");
}

/// `edges_removed` removes every edge of the named records and no other.
fn edges_removed_by_record<S: Store>(store: &mut S) {
    let rkey = tid(1);
    apply(
        store,
        Batch {
            edges_added: vec![
                edge(ALICE, LISTITEM, &rkey, "subject", BOB),
                edge(ALICE, LISTITEM, &rkey, "list", CAROL),
                edge(ALICE, LISTITEM, &tid(2), "subject", BOB),
                edge(ALICE, FOLLOW, &rkey, "subject", BOB),
                edge(BOB, LISTITEM, &rkey, "subject", BOB),
            ],
            ..Batch::default()
        },
    );
    apply(
        store,
        Batch {
            edges_removed: vec![
                record_key(ALICE, LISTITEM, &rkey),
                record_key(CAROL, FOLLOW, &rkey),
            ],
            ..Batch::default()
        },
    );
    assert_eq!(
        must("edges", store.edges()),
        vec![
            edge(ALICE, FOLLOW, &rkey, "subject", BOB),
            edge(ALICE, LISTITEM, &tid(2), "subject", BOB),
            edge(BOB, LISTITEM, &rkey, "subject", BOB),
        ],
        "edges after removing one record's"
    );
}

/// Repo rows by page and by handle, and a repo's collections.
fn repo_lookups<S: Store>(store: &mut S) {
    populate(store);
    let with_handle = |did: &str, handle: &str| RepoRow {
        handle: Some(handle.to_owned()),
        ..row(did, SyncState::Synced, "active", &["follows"])
    };
    apply(
        store,
        Batch {
            repos: vec![
                with_handle(ALICE, "alice.example.com"),
                with_handle(DAVE, "Dave.Example.com"),
            ],
            ..Batch::default()
        },
    );
    let dids = |rows: Vec<RepoRow>| rows.into_iter().map(|r| r.did).collect::<Vec<_>>();
    let mut all = vec![ALICE, BOB, CAROL, DAVE];
    all.sort_unstable();
    assert_eq!(
        dids(must("repos_page", store.repos_page(None, 10))),
        all,
        "every row, by DID"
    );
    assert_eq!(
        dids(must("repos_page", store.repos_page(None, 2))),
        all[..2],
        "the first page"
    );
    assert_eq!(
        dids(must("repos_page", store.repos_page(Some(all[1]), 2))),
        all[2..],
        "the page strictly after a DID"
    );
    assert_eq!(
        dids(must("repos_page", store.repos_page(Some(all[3]), 2))),
        Vec::<String>::new(),
        "past the last row"
    );
    assert_eq!(
        must("repo_by_handle", store.repo_by_handle("dave.example.com")).map(|r| r.did),
        Some(DAVE.to_owned()),
        "a handle, whatever its case"
    );
    assert_eq!(
        must("repo_by_handle", store.repo_by_handle("ALICE.example.com")).map(|r| r.did),
        Some(ALICE.to_owned())
    );
    assert_eq!(
        must("repo_by_handle", store.repo_by_handle("nobody.example.com")),
        None
    );
    let mut alices = strings(&[LIKE, FOLLOW]);
    alices.sort_unstable();
    assert_eq!(
        must("collections", store.collections(ALICE)),
        alices,
        "alice's collections, sorted"
    );
    apply(store, changes(vec![delete(CAROL, POST, &tid(1))]));
    assert_eq!(
        must("collections", store.collections(CAROL)),
        Vec::<String>::new(),
        "a collection whose last record went"
    );
    assert_eq!(
        must("collections", store.collections(DAVE)),
        Vec::<String>::new()
    );
}

/// Repo rows round-trip every field, are replaced whole and are listed by DID.
fn repo_rows<S: Store>(store: &mut S) {
    let full = RepoRow {
        did: CAROL.to_owned(),
        handle: Some("carol.example.com".to_owned()),
        pds: Some("https://pds.example.com".to_owned()),
        status: "active".to_owned(),
        state: SyncState::Synced,
        rev: Some(rev(7)),
        data_cid: Some(cid("carol data")),
        tags: strings(&["follows", "seed"]),
        backfilled_at: Some(INDEXED_AT),
        error: None,
    };
    let failed = RepoRow {
        state: SyncState::Failed,
        error: Some("getRepo: 502 Bad Gateway".to_owned()),
        ..row(ALICE, SyncState::Failed, "active", &[])
    };
    apply(
        store,
        Batch {
            repos: vec![
                full.clone(),
                failed.clone(),
                row(BOB, SyncState::Pending, "active", &["follows"]),
            ],
            ..Batch::default()
        },
    );
    assert_eq!(
        must("repo", store.repo(CAROL)),
        Some(full.clone()),
        "a full repo row"
    );
    assert_eq!(
        must("repo", store.repo(ALICE)),
        Some(failed),
        "a failed repo row"
    );
    assert_eq!(must("repo", store.repo(DAVE)), None, "a missing repo row");
    let replaced = RepoRow {
        handle: None,
        pds: Some("https://other.example.com".to_owned()),
        status: "takendown".to_owned(),
        state: SyncState::Resync,
        rev: None,
        data_cid: None,
        tags: strings(&["seed"]),
        backfilled_at: None,
        error: Some("taken down".to_owned()),
        ..full
    };
    let alice_again = row(ALICE, SyncState::Synced, "deactivated", &["a", "b", "c"]);
    apply(
        store,
        Batch {
            repos: vec![replaced.clone(), alice_again.clone()],
            ..Batch::default()
        },
    );
    assert_eq!(
        must("repo", store.repo(CAROL)),
        Some(replaced.clone()),
        "a replaced repo row"
    );
    let mut expected = vec![
        alice_again,
        row(BOB, SyncState::Pending, "active", &["follows"]),
        replaced,
    ];
    expected.sort_by(|a, b| a.did.cmp(&b.did));
    assert_eq!(
        must("repos", store.repos()),
        expected,
        "repos() sorted by DID"
    );
}

/// The event log keeps events in order, pages by `time_us`, and drops what retention says.
fn event_log<S: Store>(store: &mut S) {
    let event = |time_us: i64, kind: EventKind| StreamEvent {
        time_us,
        did: ALICE.to_owned(),
        kind,
        collection: (kind == EventKind::Commit).then(|| "app.bsky.feed.post".to_owned()),
        json: json!({"did": ALICE, "time_us": time_us, "kind": kind.as_str()}).to_string(),
    };
    assert_eq!(must("events_after", store.events_after(0, 10)), vec![]);
    apply(
        store,
        Batch {
            events: vec![event(10, EventKind::Commit), event(20, EventKind::Identity)],
            ..Batch::default()
        },
    );
    apply(
        store,
        Batch {
            events: vec![event(30, EventKind::Account), event(40, EventKind::Commit)],
            ..Batch::default()
        },
    );
    let all = must("events_after", store.events_after(0, 10));
    assert_eq!(
        all.iter().map(|e| e.time_us).collect::<Vec<_>>(),
        vec![10, 20, 30, 40],
        "every event, oldest first"
    );
    assert_eq!(
        all[0],
        event(10, EventKind::Commit),
        "an event reads back whole"
    );
    assert_eq!(all[2].collection, None);
    let page = must("events_after", store.events_after(20, 1));
    assert_eq!(
        page,
        vec![event(30, EventKind::Account)],
        "strictly after, limited"
    );
    apply(
        store,
        Batch {
            events: vec![event(50, EventKind::Commit)],
            events_before: Some(30),
            ..Batch::default()
        },
    );
    assert_eq!(
        must("events_after", store.events_after(0, 10))
            .iter()
            .map(|e| e.time_us)
            .collect::<Vec<_>>(),
        vec![30, 40, 50],
        "retention drops events older than the bound"
    );
}

/// The kv table: set, overwrite, remove, and remove of a missing key.
fn kv<S: Store>(store: &mut S) {
    let set = |key: &str, value: &str| (key.to_owned(), Some(value.to_owned()));
    let unset = |key: &str| (key.to_owned(), None);
    apply(
        store,
        Batch {
            kv: vec![set("cursor", "1"), set("identity:alice", "{\"did\":\"x\"}")],
            ..Batch::default()
        },
    );
    assert_eq!(
        must("kv_get", store.kv_get("cursor")),
        Some("1".to_owned()),
        "a set value"
    );
    apply(
        store,
        Batch {
            kv: vec![
                set("cursor", "2"),
                unset("identity:alice"),
                unset("missing"),
            ],
            ..Batch::default()
        },
    );
    assert_eq!(
        must("kv_get", store.kv_get("cursor")),
        Some("2".to_owned()),
        "an overwritten value"
    );
    assert_eq!(
        must("kv_get", store.kv_get("identity:alice")),
        None,
        "a removed value"
    );
    assert_eq!(
        must("kv_get", store.kv_get("missing")),
        None,
        "a never-set value"
    );
    apply(
        store,
        Batch {
            kv: vec![set("cursor", "3"), unset("cursor")],
            ..Batch::default()
        },
    );
    assert_eq!(
        must("kv_get", store.kv_get("cursor")),
        None,
        "set then removed in one batch"
    );
    apply(
        store,
        Batch {
            kv: vec![set("cursor", ""), set("Cursor", "upper")],
            ..Batch::default()
        },
    );
    assert_eq!(
        must("kv_get", store.kv_get("cursor")),
        Some(String::new()),
        "an empty value"
    );
    assert_eq!(
        must("kv_get", store.kv_get("Cursor")),
        Some("upper".to_owned()),
        "keys are case-sensitive"
    );
}

/// The summary counts repos and records every way, names sorted.
fn summary_counts<S: Store>(store: &mut S) {
    let post = post_uri(BOB, &tid(1));
    apply(
        store,
        Batch {
            backfill: vec![chunk(
                ALICE,
                false,
                vec![
                    record(ALICE, LIKE, &tid(2), &like_json(&post)),
                    record(ALICE, LIKE, &tid(3), &like_json(&post)),
                ],
                vec![],
            )],
            changes: vec![
                create(ALICE, FOLLOW, &tid(4), &follow_json(BOB)),
                create(BOB, POST, &tid(1), &post_json("hello")),
                create(BOB, LIKE, &tid(5), &like_json(&post)),
                // A repo without a row: counted as records, not under any tag.
                create(DAVE, POST, &tid(6), &post_json("no row")),
            ],
            repos: vec![
                row(ALICE, SyncState::Synced, "active", &["follows", "team"]),
                row(BOB, SyncState::Pending, "active", &["follows"]),
                row(CAROL, SyncState::Failed, "deactivated", &["team", "watch"]),
            ],
            ..Batch::default()
        },
    );
    let expected = Summary {
        repos: 3,
        records: 6,
        repos_by_state: counts(&[("failed", 1), ("pending", 1), ("synced", 1)]),
        repos_by_status: counts(&[("active", 2), ("deactivated", 1)]),
        repos_by_tag: counts(&[("follows", 2), ("team", 2), ("watch", 1)]),
        records_by_collection: counts(&[(LIKE, 3), (POST, 2), (FOLLOW, 1)]),
        records_by_tag: counts(&[("follows", 5), ("team", 3), ("watch", 0)]),
    };
    assert_eq!(must("summary", store.summary()), expected, "summary");
}

/// A batch with an invalid change is refused with `Error::Invalid` and changes nothing.
fn refused_batch_changes_nothing<S: Store>(store: &mut S) {
    populate(store);
    let before = snapshot(store, false, &[]);
    let everything = |bad: Change| Batch {
        purged: vec![ALICE.to_owned()],
        cleared: vec![BOB.to_owned()],
        backfill: vec![chunk(
            CAROL,
            true,
            vec![record(CAROL, POST, &tid(30), &post_json("replaced"))],
            vec![edge(CAROL, FOLLOW, &tid(31), "subject", DAVE)],
        )],
        changes: vec![create(DAVE, POST, &tid(32), &post_json("valid")), bad],
        edges_removed: vec![record_key(BOB, FOLLOW, &tid(5))],
        edges_added: vec![edge(DAVE, FOLLOW, &tid(33), "subject", CAROL)],
        repos: vec![row(DAVE, SyncState::Synced, "active", &["follows"])],
        kv: vec![
            ("cursor".to_owned(), Some("2000".to_owned())),
            ("identity:alice".to_owned(), None),
        ],
        events: vec![StreamEvent {
            time_us: 1,
            did: DAVE.to_owned(),
            kind: EventKind::Account,
            collection: None,
            json: "{}".to_owned(),
        }],
        events_before: None,
    };
    let no_cid = Change {
        cid: None,
        ..create(DAVE, POST, &tid(34), &post_json("no cid"))
    };
    let no_json = Change {
        json: None,
        ..update(CAROL, POST, &tid(1), &post_json("no record"))
    };
    for (what, bad) in [
        ("a create without a cid", no_cid),
        ("an update without a record", no_json),
    ] {
        match store.apply(everything(bad)) {
            Err(Error::Invalid(_)) => {}
            other => panic!("a batch with {what}: expected Error::Invalid, got {other:?}"),
        }
        assert_eq!(
            snapshot(store, false, &[]),
            before,
            "the store after refusing a batch with {what}"
        );
        assert_eq!(
            must("events_after", store.events_after(0, 10)),
            vec![],
            "the event log after refusing a batch with {what}"
        );
    }
}

/// A store without bodies refuses reads that need them.
fn keys_only_refuses_bodies<S: Store>(store: &mut S) {
    populate(store);
    assert_eq!(
        keys(store, CAROL),
        pairs(&[(POST, &tid(1))]),
        "record_keys(carol)"
    );
    let refused = |what: &str, result: Result<(), Error>| match result {
        Err(Error::Invalid(_)) => {}
        other => panic!("{what} on a keys-only store: expected Error::Invalid, got {other:?}"),
    };
    refused(
        "get_record",
        store.get_record(CAROL, POST, &tid(1)).map(drop),
    );
    let page = Page {
        cursor: None,
        limit: 10,
        reverse: false,
    };
    refused(
        "list_records",
        store.list_records(CAROL, POST, page).map(drop),
    );
    let query = BacklinkQuery {
        target: CAROL,
        collection: None,
        path: None,
        cursor: None,
        limit: 10,
    };
    refused("backlinks", store.backlinks(query).map(drop));
    refused(
        "count_backlinks",
        store.count_backlinks(CAROL, None, None).map(drop),
    );
}

// Checks of bodies and backlinks.

/// `get_record` returns what was written, and nothing for missing keys.
fn get_record<S: Store>(store: &mut S) {
    let made = create(ALICE, POST, &tid(1), &post_json("hello"));
    let loaded = record(BOB, POST, &tid(1), &post_json("from backfill"));
    apply(
        store,
        Batch {
            backfill: vec![chunk(BOB, false, vec![loaded.clone()], vec![])],
            changes: vec![made.clone()],
            ..Batch::default()
        },
    );
    let expect_record = |what: &str, found: Option<Record>, expected: &Record| {
        let Some(found) = found else {
            panic!("{what}: no record");
        };
        let parse = |text: &str| -> serde_json::Value {
            serde_json::from_str(text).unwrap_or_else(|err| panic!("{what}: json {text:?}: {err}"))
        };
        assert_eq!(parse(&found.json), parse(&expected.json), "{what}: json");
        assert_eq!(
            Record {
                json: String::new(),
                ..found
            },
            Record {
                json: String::new(),
                ..expected.clone()
            },
            "{what}"
        );
    };
    let as_record = |change: &Change| Record {
        did: change.did.clone(),
        collection: change.collection.clone(),
        rkey: change.rkey.clone(),
        cid: change.cid.clone().unwrap_or_default(),
        rev: change.rev.clone(),
        json: change.json.clone().unwrap_or_default(),
        indexed_at: change.indexed_at,
    };
    expect_record(
        "a created record",
        get(store, ALICE, POST, &tid(1)),
        &as_record(&made),
    );
    expect_record(
        "a backfilled record",
        get(store, BOB, POST, &tid(1)),
        &loaded,
    );
    assert_eq!(get(store, ALICE, POST, &tid(2)), None, "a missing rkey");
    assert_eq!(
        get(store, ALICE, LIKE, &tid(1)),
        None,
        "a missing collection"
    );
    assert_eq!(get(store, CAROL, POST, &tid(1)), None, "a missing repo");
    let edited = Change {
        indexed_at: INDEXED_AT + 5,
        ..update(
            ALICE,
            POST,
            &tid(1),
            &post_json("edited ✏️ with \"quotes\"\nand a newline"),
        )
    };
    apply(store, changes(vec![edited.clone()]));
    expect_record(
        "an updated record",
        get(store, ALICE, POST, &tid(1)),
        &as_record(&edited),
    );
    apply(store, changes(vec![delete(ALICE, POST, &tid(1))]));
    assert_eq!(get(store, ALICE, POST, &tid(1)), None, "a deleted record");
}

/// `list_records` pages through a collection in both directions.
fn list_records_paging<S: Store>(store: &mut S) {
    let rkeys: Vec<String> = (0..25).map(|n| tid(100 + 3 * n)).collect();
    let mut made: Vec<Change> = rkeys
        .iter()
        .rev()
        .map(|rkey| create(ALICE, POST, rkey, &post_json(&format!("post {rkey}"))))
        .collect();
    made.push(create(
        ALICE,
        LIKE,
        &tid(50),
        &like_json(&post_uri(BOB, &tid(1))),
    ));
    made.push(create(
        ALICE,
        LIKE,
        &tid(500),
        &like_json(&post_uri(BOB, &tid(1))),
    ));
    made.push(create(BOB, POST, &tid(101), &post_json("bob's")));
    apply(store, changes(made));

    let list = |cursor: Option<&str>, limit: usize, reverse: bool| -> Vec<String> {
        let page = Page {
            cursor,
            limit,
            reverse,
        };
        let records = must("list_records", store.list_records(ALICE, POST, page));
        for record in &records {
            assert_eq!(
                (record.did.as_str(), record.collection.as_str()),
                (ALICE, POST),
                "list_records(alice, post) returned another collection's record"
            );
        }
        records.into_iter().map(|record| record.rkey).collect()
    };
    let page_through = |reverse: bool| -> Vec<String> {
        let mut all = Vec::new();
        let mut sizes = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = list(cursor.as_deref(), 10, reverse);
            sizes.push(page.len());
            let Some(last) = page.last() else { break };
            cursor = Some(last.clone());
            all.extend(page);
            assert!(sizes.len() < 10, "list_records never ends");
        }
        assert_eq!(
            sizes,
            [10, 10, 5, 0],
            "page sizes of 25 records, limit 10 (reverse: {reverse})"
        );
        all
    };
    let mut ascending = rkeys.clone();
    ascending.sort();
    let mut descending = ascending.clone();
    descending.reverse();
    assert_eq!(page_through(false), descending, "all pages, newest first");
    assert_eq!(
        page_through(true),
        ascending,
        "all pages, oldest first (reverse)"
    );

    // A cursor that is no record's rkey.
    let between = format!("{}a", ascending[12]);
    assert_eq!(
        list(Some(&between), 3, false),
        descending[12..15],
        "newest first after a cursor between rkeys"
    );
    assert_eq!(
        list(Some(&between), 3, true),
        ascending[13..16],
        "oldest first after a cursor between rkeys"
    );
    assert_eq!(
        list(None, 100, false),
        descending,
        "a limit above the count"
    );
    assert!(list(None, 0, false).is_empty(), "limit 0");
    assert!(
        list(Some(&ascending[0]), 10, false).is_empty(),
        "newest first after the oldest"
    );
    assert!(
        list(Some(&descending[0]), 10, true).is_empty(),
        "oldest first after the newest"
    );
    let page = Page {
        cursor: None,
        limit: 10,
        reverse: false,
    };
    assert!(
        must("list_records", store.list_records(CAROL, POST, page)).is_empty(),
        "list_records of a repo without records"
    );
}

/// The records linking to one post, used by the backlinks checks: `(rkey, did, collection,
/// path)` in backlinks order.
fn link_to_post<S: Store>(store: &mut S) -> (String, Vec<(String, String, String, String)>) {
    let target = post_uri(CAROL, &tid(1));
    let other = post_uri(CAROL, &tid(2));
    apply(
        store,
        Batch {
            backfill: vec![chunk(
                ALICE,
                false,
                vec![
                    record(ALICE, LIKE, &tid(10), &like_json(&target)),
                    record(ALICE, LIKE, &tid(16), &like_json(&other)),
                ],
                vec![],
            )],
            changes: vec![
                create(CAROL, POST, &tid(1), &post_json("the subject")),
                create(BOB, LIKE, &tid(12), &like_json(&target)),
                create(DAVE, LIKE, &tid(12), &like_json(&target)),
                create(DAVE, REPOST, &tid(13), &repost_json(&target)),
                create(
                    ALICE,
                    POST,
                    &tid(14),
                    &reply_json("a reply", &target, &target),
                ),
                create(BOB, POST, &tid(15), &quote_json("a quote", &target)),
            ],
            ..Batch::default()
        },
    );
    let link = |rkey: u64, did: &str, collection: &str, path: &str| {
        (
            tid(rkey),
            did.to_owned(),
            collection.to_owned(),
            path.to_owned(),
        )
    };
    let expected = vec![
        link(15, BOB, POST, ".embed.record.uri"),
        link(14, ALICE, POST, ".reply.parent.uri"),
        link(14, ALICE, POST, ".reply.root.uri"),
        link(13, DAVE, REPOST, ".subject.uri"),
        // The same rkey from two repos: by DID.
        link(12, DAVE, LIKE, ".subject.uri"),
        link(12, BOB, LIKE, ".subject.uri"),
        link(10, ALICE, LIKE, ".subject.uri"),
    ];
    (target, expected)
}

/// Backlinks come newest first and page without gaps or repeats.
fn backlinks_order_and_paging<S: Store>(store: &mut S) {
    let (target, expected) = link_to_post(store);
    // DAVE's DID sorts before BOB's; the expected order above relies on it.
    assert!(DAVE < BOB, "fixture DIDs out of order");
    for limit in [1, 2, 3, 7, 100] {
        assert_eq!(
            all_backlinks(store, &target, None, None, limit),
            expected,
            "backlinks to a post in pages of {limit}"
        );
    }
    let first = backlinks(store, &target, None, None, None, 2);
    assert!(
        first.cursor.is_some(),
        "a first page of 2 of 7 backlinks has a cursor"
    );
    let last = backlinks(store, &target, None, None, None, 7);
    assert_eq!(last.links.len(), 7, "a page of exactly all backlinks");
    assert_eq!(last.cursor, None, "a page that ends the list has no cursor");
    let none = backlinks(store, &post_uri(CAROL, &tid(9)), None, None, None, 10);
    assert_eq!(
        none,
        BacklinkPage::default(),
        "backlinks to an unlinked subject"
    );
    assert!(
        backlinks(store, &target, None, None, None, 0)
            .links
            .is_empty(),
        "backlinks with limit 0"
    );
}

/// Backlinks and counts filtered by collection and path.
fn backlinks_filters_and_counts<S: Store>(store: &mut S) {
    let (target, all) = link_to_post(store);
    let only = |collection: Option<&str>, path: Option<&str>| -> Vec<_> {
        all.iter()
            .filter(|(_, _, c, p)| {
                collection.is_none_or(|x| c.as_str() == x) && path.is_none_or(|x| p.as_str() == x)
            })
            .cloned()
            .collect()
    };
    let filters = [
        (None, None),
        (Some(LIKE), None),
        (Some(POST), None),
        (None, Some(".subject.uri")),
        (Some(POST), Some(".reply.root.uri")),
        (Some(LIKE), Some(".subject.uri")),
        (Some(FOLLOW), None),
        (None, Some(".nowhere")),
    ];
    for (collection, path) in filters {
        let expected = only(collection, path);
        for limit in [1, 2, 10] {
            assert_eq!(
                all_backlinks(store, &target, collection, path, limit),
                expected,
                "backlinks filtered by collection {collection:?} and path {path:?}, pages of {limit}"
            );
        }
        assert_eq!(
            count(store, &target, collection, path),
            expected.len() as u64,
            "count_backlinks filtered by collection {collection:?} and path {path:?}"
        );
    }
    assert_eq!(
        count(store, &target, None, None),
        7,
        "count_backlinks to the post"
    );
    assert_eq!(
        count(store, &post_uri(CAROL, &tid(2)), None, None),
        1,
        "count_backlinks to another post"
    );
    assert_eq!(
        count(store, &post_uri(CAROL, &tid(9)), None, None),
        0,
        "count_backlinks to an unlinked subject"
    );
}

/// Links follow record updates, deletes, clears, purges and replacing backfills.
fn backlinks_follow_changes<S: Store>(store: &mut S) {
    let (target, _) = link_to_post(store);
    let other = post_uri(CAROL, &tid(2));
    apply(
        store,
        changes(vec![
            update(ALICE, LIKE, &tid(10), &like_json(&other)),
            delete(BOB, POST, &tid(15)),
        ]),
    );
    assert_eq!(
        count(store, &target, None, None),
        5,
        "after an update away and a delete"
    );
    assert_eq!(
        count(store, &other, None, None),
        2,
        "after an update towards"
    );
    // Re-creating a record with the same links does not count them twice.
    apply(
        store,
        changes(vec![create(DAVE, LIKE, &tid(12), &like_json(&target))]),
    );
    assert_eq!(
        count(store, &target, None, None),
        5,
        "after a create over an identical record"
    );
    apply(
        store,
        Batch {
            cleared: vec![DAVE.to_owned()],
            ..Batch::default()
        },
    );
    assert_eq!(
        count(store, &target, None, None),
        3,
        "after clearing a repo"
    );
    apply(
        store,
        Batch {
            purged: vec![ALICE.to_owned()],
            ..Batch::default()
        },
    );
    assert_eq!(count(store, &target, None, None), 1, "after purging a repo");
    assert_eq!(
        count(store, &other, None, None),
        0,
        "after purging the repo that linked"
    );
    apply(
        store,
        Batch {
            backfill: vec![chunk(
                BOB,
                true,
                vec![record(BOB, REPOST, &tid(20), &repost_json(&target))],
                vec![],
            )],
            ..Batch::default()
        },
    );
    assert_eq!(
        all_backlinks(store, &target, None, None, 10),
        vec![(
            tid(20),
            BOB.to_owned(),
            REPOST.to_owned(),
            ".subject.uri".to_owned()
        )],
        "after a replacing backfill"
    );
}

/// Links to accounts: follows, list items and mentions.
fn backlinks_to_dids<S: Store>(store: &mut S) {
    apply(
        store,
        changes(vec![
            create(ALICE, FOLLOW, &tid(1), &follow_json(CAROL)),
            create(
                BOB,
                LISTITEM,
                &tid(2),
                &listitem_json(CAROL, &format!("at://{BOB}/app.bsky.graph.list/{}", tid(0))),
            ),
            create(DAVE, POST, &tid(3), &mention_json("@carol hi", CAROL)),
            create(DAVE, FOLLOW, &tid(4), &follow_json(BOB)),
        ]),
    );
    let link = |rkey: u64, did: &str, collection: &str, path: &str| {
        (
            tid(rkey),
            did.to_owned(),
            collection.to_owned(),
            path.to_owned(),
        )
    };
    assert_eq!(
        all_backlinks(store, CAROL, None, None, 2),
        vec![
            link(3, DAVE, POST, ".facets[].features[].did"),
            link(2, BOB, LISTITEM, ".subject"),
            link(1, ALICE, FOLLOW, ".subject"),
        ],
        "backlinks to an account"
    );
    assert_eq!(
        count(store, CAROL, Some(FOLLOW), Some(".subject")),
        1,
        "followers of carol"
    );
    assert_eq!(
        count(store, BOB, Some(FOLLOW), Some(".subject")),
        1,
        "followers of bob"
    );
    let list = format!("at://{BOB}/app.bsky.graph.list/{}", tid(0));
    assert_eq!(
        count(store, &list, Some(LISTITEM), Some(".list")),
        1,
        "items of a list"
    );
}

/// A batch with a record that is not JSON is refused and changes nothing, bodies and links
/// included.
fn bad_json_changes_nothing<S: Store>(store: &mut S) {
    populate(store);
    let carol_post = post_uri(CAROL, &tid(1));
    let targets = [carol_post.as_str(), CAROL, ALICE];
    let before = snapshot(store, true, &targets);
    let with_bad_change = Batch {
        purged: vec![ALICE.to_owned()],
        changes: vec![
            create(DAVE, LIKE, &tid(40), &like_json(&carol_post)),
            create(
                DAVE,
                POST,
                &tid(41),
                "{\"$type\": \"app.bsky.feed.post\", \"text\": ",
            ),
        ],
        kv: vec![("cursor".to_owned(), Some("3000".to_owned()))],
        ..Batch::default()
    };
    let with_bad_backfill = Batch {
        cleared: vec![BOB.to_owned()],
        backfill: vec![chunk(
            CAROL,
            true,
            vec![
                record(CAROL, POST, &tid(42), &post_json("fine")),
                record(CAROL, POST, &tid(43), "not json at all"),
            ],
            vec![],
        )],
        ..Batch::default()
    };
    for (what, batch) in [
        ("a change", with_bad_change),
        ("a backfilled record", with_bad_backfill),
    ] {
        let result = store.apply(batch);
        assert!(
            result.is_err(),
            "a batch with {what} that is not JSON was accepted"
        );
        assert_eq!(
            snapshot(store, true, &targets),
            before,
            "the store after refusing a batch with {what} that is not JSON"
        );
    }
}
