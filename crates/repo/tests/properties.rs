//! Property tests over random trees: build, write, read back, edit, diff and invert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use butterfly_data::Cid;
use butterfly_repo::car::{write_car_to_vec, CarReader};
use butterfly_repo::mst::{self, Mst, WalkItem};
use butterfly_repo::proof::{invert_ops, Incomplete, Inversion, RepoOp};
use butterfly_repo::{BlockMap, CarSlice, RecordingSource};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashSet};

fn leaf(n: u32) -> Cid {
    butterfly_data::cid_for_cbor(&butterfly_data::Value::Integer(i64::from(n)).to_cbor())
}

fn key_strategy() -> impl Strategy<Value = String> {
    (0..3u8, "[a-z2-7]{1,13}").prop_map(|(collection, rkey)| {
        let collection = [
            "app.bsky.feed.post",
            "app.bsky.feed.like",
            "app.bsky.graph.follow",
        ][collection as usize];
        format!("{collection}/{rkey}")
    })
}

fn contents_strategy() -> impl Strategy<Value = BTreeMap<String, Cid>> {
    prop::collection::btree_map(key_strategy(), (0..1000u32).prop_map(leaf), 0..300)
}

fn walk_all(root: Cid, blocks: &mut BlockMap) -> BTreeMap<String, Cid> {
    mst::walk(root, blocks)
        .map(|item| match item.unwrap() {
            WalkItem::Record { key, cid } => (key, cid),
            WalkItem::MissingNode(cid) => panic!("missing {cid}"),
        })
        .collect()
}

fn build(contents: &BTreeMap<String, Cid>) -> (Cid, BlockMap) {
    let mut tree = Mst::from_sorted(contents.iter().map(|(k, v)| (k.clone(), *v))).unwrap();
    let (root, new_blocks) = tree.new_blocks();
    let mut blocks = BlockMap::new();
    blocks.extend(new_blocks);
    (root, blocks)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// build -> write CAR -> read CAR -> walk gives the same root and the same contents.
    #[test]
    fn car_round_trip(contents in contents_strategy()) {
        let (root, blocks) = build(&contents);
        let car = write_car_to_vec(&[root], blocks.iter());
        let (header, mut read_back) = BlockMap::from_car(CarReader::new(car.as_slice()).unwrap()).unwrap();
        prop_assert_eq!(header.roots, vec![root]);
        prop_assert_eq!(walk_all(root, &mut read_back), contents);
    }

    /// The in-place index of a CAR in memory agrees with the streaming reader: the same blocks when
    /// it is whole, and an error for every truncation and for a flipped byte in any block.
    #[test]
    fn car_slice_agrees_with_the_streaming_reader(contents in contents_strategy(), flip in any::<usize>()) {
        let (root, blocks) = build(&contents);
        let car = write_car_to_vec(&[root], blocks.iter());
        let (_, streamed) = BlockMap::from_car(CarReader::new(car.as_slice()).unwrap()).unwrap();
        let slice = CarSlice::parse(car.clone(), Default::default()).unwrap();
        prop_assert_eq!(slice.header().roots.clone(), vec![root]);
        prop_assert_eq!(slice.n_blocks(), streamed.len());
        for (cid, data) in streamed.iter() {
            prop_assert_eq!(slice.get(cid), Some(data));
        }
        // Every cut in small CARs; about 300 spread over big ones.
        for cut in (1..car.len()).step_by((car.len() / 300).max(1)) {
            let streaming = BlockMap::from_car(match CarReader::new(&car[..cut]) {
                Ok(reader) => reader,
                Err(_) => { prop_assert!(CarSlice::parse(car[..cut].to_vec(), Default::default()).is_err()); continue }
            });
            let in_place = CarSlice::parse(car[..cut].to_vec(), Default::default());
            prop_assert_eq!(streaming.is_ok(), in_place.is_ok(), "cut at {}", cut);
        }
        let mut flipped = car.clone();
        let at = flip % flipped.len();
        flipped[at] ^= 0x55;
        let streaming = CarReader::new(flipped.as_slice()).and_then(BlockMap::from_car);
        let in_place = CarSlice::parse(flipped, Default::default());
        prop_assert_eq!(streaming.is_ok(), in_place.is_ok(), "flip at {}", at);
    }

    /// Inserting and removing one key at a time, in any order, gives the bulk-built tree.
    #[test]
    fn edits_match_bulk_build(contents in contents_strategy(), extra in contents_strategy()) {
        let (expected_root, _) = build(&contents);
        let mut tree = Mst::new();
        let mut none = BlockMap::new();
        for (key, value) in extra.iter().chain(contents.iter()).rev() {
            tree.insert(key, *value, &mut none).unwrap();
        }
        for key in extra.keys().filter(|k| !contents.contains_key(*k)) {
            tree.remove(key, &mut none).unwrap();
        }
        for (key, value) in &contents {
            tree.insert(key, *value, &mut none).unwrap();
        }
        prop_assert_eq!(tree.root_cid(), expected_root);
    }

    /// diff(old, new) lists exactly the changed keys.
    #[test]
    fn diff_is_exact(old in contents_strategy(), new in contents_strategy()) {
        let (old_root, mut blocks) = build(&old);
        let (new_root, new_blocks) = build(&new);
        blocks.extend(new_blocks.iter().map(|(c, d)| (*c, d.to_vec())));
        let changes = mst::diff(Some(old_root), new_root, &mut blocks).unwrap();
        let mut expected = Vec::new();
        let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        for key in keys {
            let (a, b) = (old.get(key).copied(), new.get(key).copied());
            if a != b {
                expected.push(mst::DiffEntry { key: key.clone(), old: a, new: b });
            }
        }
        prop_assert_eq!(changes, expected);
    }

    /// A commit's ops inverted on the minimal proof (the nodes the inversion reads) give the old root;
    /// dropping any one of those nodes gives "incomplete", never a wrong root.
    #[test]
    fn inversion_on_minimal_proofs(
        before in contents_strategy(),
        creates in prop::collection::btree_map(key_strategy(), (0..1000u32).prop_map(leaf), 0..6),
        n_updates in 0..4usize,
        n_deletes in 0..4usize,
    ) {
        let (old_root, mut blocks) = build(&before);
        let mut tree = Mst::load(old_root, &mut blocks).unwrap();
        let mut ops = Vec::new();
        for (path, cid) in creates.iter().filter(|(k, _)| !before.contains_key(*k)) {
            tree.insert(path, *cid, &mut blocks).unwrap();
            ops.push(RepoOp::Create { path: path.clone(), cid: *cid });
        }
        for (path, prev) in before.iter().take(n_updates) {
            let cid = leaf(5000);
            tree.insert(path, cid, &mut blocks).unwrap();
            ops.push(RepoOp::Update { path: path.clone(), cid, prev: Some(*prev) });
        }
        for (path, prev) in before.iter().skip(n_updates).take(n_deletes) {
            tree.remove(path, &mut blocks).unwrap();
            ops.push(RepoOp::Delete { path: path.clone(), prev: Some(*prev) });
        }
        let (new_root, new_blocks) = tree.new_blocks();
        blocks.extend(new_blocks);

        let mut recorder = RecordingSource::new(&mut blocks);
        let full = invert_ops(new_root, &ops, &mut recorder).unwrap();
        prop_assert_eq!(&full, &Inversion::Complete(old_root));
        let needed: HashSet<Cid> = recorder.requested.clone();

        let mut slice = blocks.clone();
        slice.retain(&needed);
        prop_assert_eq!(invert_ops(new_root, &ops, &mut slice).unwrap(), Inversion::Complete(old_root));

        for dropped in needed.iter().filter(|cid| blocks.contains(cid)) {
            let mut keep = needed.clone();
            keep.remove(dropped);
            let mut short = blocks.clone();
            short.retain(&keep);
            match invert_ops(new_root, &ops, &mut short).unwrap() {
                Inversion::Incomplete(Incomplete::MissingBlock(_)) => {}
                other => prop_assert!(false, "dropping {} gave {:?}", dropped, other),
            }
        }
    }
}

#[test]
fn ops_that_contradict_the_tree_are_errors() {
    let contents: BTreeMap<String, Cid> = (0..50)
        .map(|n| (format!("app.bsky.feed.post/{n:04}"), leaf(n)))
        .collect();
    let (root, mut blocks) = build(&contents);
    let wrong = [RepoOp::Create {
        path: "app.bsky.feed.post/0001".into(),
        cid: leaf(99),
    }];
    assert!(invert_ops(root, &wrong, &mut blocks).is_err());
    let duplicate = [
        RepoOp::Delete {
            path: "app.bsky.feed.post/9999".into(),
            prev: Some(leaf(1)),
        },
        RepoOp::Delete {
            path: "app.bsky.feed.post/9999".into(),
            prev: Some(leaf(1)),
        },
    ];
    assert!(invert_ops(root, &duplicate, &mut blocks).is_err());
    let legacy = [RepoOp::Delete {
        path: "app.bsky.feed.post/9999".into(),
        prev: None,
    }];
    assert_eq!(
        invert_ops(root, &legacy, &mut blocks).unwrap(),
        Inversion::Incomplete(Incomplete::MissingPrev("app.bsky.feed.post/9999".into()))
    );
}

#[test]
fn partial_trees_report_missing_subtrees() {
    let contents: BTreeMap<String, Cid> = (0..400)
        .map(|n| (format!("app.bsky.feed.post/{n:04}"), leaf(n)))
        .collect();
    let (root, blocks) = build(&contents);
    let root_bytes = blocks.get(&root).unwrap().to_vec();
    let mut only_root = BlockMap::new();
    only_root.insert(root, root_bytes);
    let items: Vec<WalkItem> = mst::walk(root, &mut only_root)
        .map(Result::unwrap)
        .collect();
    let n_missing = items
        .iter()
        .filter(|i| matches!(i, WalkItem::MissingNode(_)))
        .count();
    let n_records = items
        .iter()
        .filter(|i| matches!(i, WalkItem::Record { .. }))
        .count();
    assert!(
        n_missing > 0 && n_records > 0 && n_records < 400,
        "{n_missing} missing, {n_records} records"
    );
}

#[test]
fn hostile_chain_of_entryless_nodes_is_rejected() {
    // Each node points left to the next one and holds no entries: a "deep tree" no real repo has.
    let mut blocks = BlockMap::new();
    let mut below: Option<Cid> = None;
    for _ in 0..10_000 {
        let node = mst::NodeData {
            left: below,
            entries: Vec::new(),
        };
        let bytes = node.encode();
        let cid = butterfly_data::cid_for_cbor(&bytes);
        blocks.insert(cid, bytes);
        below = Some(cid);
    }
    let root = below.unwrap();
    let result: Result<Vec<WalkItem>, _> = mst::walk(root, &mut blocks).collect();
    assert!(result.unwrap_err().to_string().contains("no entries"));
    assert!(Mst::load(root, &mut blocks).is_err());
    assert!(mst::diff(None, root, &mut blocks).is_err());
}
