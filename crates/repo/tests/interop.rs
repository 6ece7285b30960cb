//! The official atproto MST and sync 1.1 proof vectors: `../shared/interop/{mst,firehose}`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use butterfly_data::Cid;
use butterfly_repo::mst::{self, Mst};
use butterfly_repo::proof::{invert_ops, Inversion, RepoOp};
use butterfly_repo::BlockMap;
use std::collections::HashSet;
use std::path::PathBuf;

fn interop_dir() -> PathBuf {
    butterfly_interop::folder("mst");
    butterfly_interop::folder("firehose").join("..")
}

fn load_json(relative: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(interop_dir().join(relative)).expect("read fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn cid(text: &str) -> Cid {
    butterfly_data::parse_cid_str(text).unwrap()
}

#[test]
fn key_heights() {
    let cases = load_json("mst/key_heights.json");
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 9);
    for case in cases {
        let key = case["key"].as_str().unwrap();
        assert_eq!(
            u64::from(mst::key_height(key.as_bytes())),
            case["height"].as_u64().unwrap(),
            "key {key:?}"
        );
    }
}

#[test]
fn common_prefixes() {
    let cases = load_json("mst/common_prefix.json");
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 13);
    for case in cases {
        let (left, right) = (
            case["left"].as_str().unwrap(),
            case["right"].as_str().unwrap(),
        );
        assert_eq!(
            mst::common_prefix_len(left.as_bytes(), right.as_bytes()) as u64,
            case["len"].as_u64().unwrap(),
            "{left:?} {right:?}"
        );
    }
}

#[test]
fn example_keys_have_the_height_their_name_says() {
    let text = std::fs::read_to_string(interop_dir().join("mst/example_keys.txt")).unwrap();
    let keys: Vec<&str> = text.lines().filter(|line| !line.is_empty()).collect();
    assert_eq!(keys.len(), 156);
    for key in keys {
        let digit = key.as_bytes()[1] - b'0';
        assert_eq!(mst::key_height(key.as_bytes()), u32::from(digit), "{key}");
    }
}

/// Each case: build the tree, apply the commit, check both roots, then invert the commit on a CAR slice
/// holding only `blocksInProof` and get the old root back.
#[test]
fn commit_proofs() {
    let cases = load_json("firehose/commit-proof-fixtures.json");
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 6);
    let mut failures = Vec::new();
    for case in cases {
        let name = case["comment"].as_str().unwrap();
        let leaf = cid(case["leafValue"].as_str().unwrap());
        let strings = |field: &str| -> Vec<String> {
            case[field]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        let (keys, adds, dels) = (strings("keys"), strings("adds"), strings("dels"));
        let mut sorted = keys.clone();
        sorted.sort();
        let mut tree = Mst::from_sorted(sorted.iter().map(|k| (k.clone(), leaf))).unwrap();
        let mut all_blocks = BlockMap::new();
        let (before, blocks) = tree.new_blocks();
        all_blocks.extend(blocks);
        if before != cid(case["rootBeforeCommit"].as_str().unwrap()) {
            failures.push(format!("{name}: root before {before}"));
            continue;
        }

        // The same tree built by inserting one key at a time must agree with the bulk build.
        let mut incremental = Mst::new();
        for key in &keys {
            incremental.insert(key, leaf, &mut BlockMap::new()).unwrap();
        }
        if incremental.root_cid() != before {
            failures.push(format!(
                "{name}: incremental build gives {}",
                incremental.root_cid()
            ));
        }

        for key in &adds {
            tree.insert(key, leaf, &mut all_blocks).unwrap();
        }
        for key in &dels {
            tree.remove(key, &mut all_blocks).unwrap();
        }
        let (after, blocks) = tree.new_blocks();
        all_blocks.extend(blocks);
        if after != cid(case["rootAfterCommit"].as_str().unwrap()) {
            failures.push(format!("{name}: root after {after}"));
            continue;
        }

        let proof: HashSet<Cid> = strings("blocksInProof").iter().map(|c| cid(c)).collect();
        let mut slice = all_blocks.clone();
        slice.retain(&proof);
        assert_eq!(
            slice.len(),
            proof.len(),
            "{name}: every proof block was produced"
        );
        let ops: Vec<RepoOp> = adds
            .iter()
            .map(|path| RepoOp::Create {
                path: path.clone(),
                cid: leaf,
            })
            .chain(dels.iter().map(|path| RepoOp::Delete {
                path: path.clone(),
                prev: Some(leaf),
            }))
            .collect();
        match invert_ops(after, &ops, &mut slice) {
            Ok(Inversion::Complete(root)) if root == before => {}
            other => failures.push(format!("{name}: inversion gave {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
