//! `butterfly firehose inspect` on frames recorded from the reference PDS, and on the same frames made
//! to look like pre-sync-1.1 ones: the previous root is either computed right or reported
//! "incomplete", never wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use butterfly_firehose::message::Message;
use butterfly_firehose::{decode_frame, encode_frame, Frame, FrameLogReader, FrameLogWriter};
use butterfly_repo::proof::RepoOp;
use serde_json::Value as Json;
use std::path::Path;

const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../firehose/tests/data/reference-pds.frames"
);

fn inspect(path: &Path) -> (bool, Vec<Json>) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_butterfly"))
        .args(["firehose", "inspect"])
        .arg(path)
        .output()
        .unwrap();
    let lines = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (output.status.success(), lines)
}

/// Rewrites every frame of the reference log with `edit`.
fn rewrite(out: &Path, edit: impl Fn(&mut Message)) {
    let bytes = std::fs::read(REFERENCE).unwrap();
    let mut writer = FrameLogWriter::new(std::fs::File::create(out).unwrap());
    for frame in FrameLogReader::new(bytes.as_slice()) {
        let Frame::Message(mut message) = decode_frame(&frame.unwrap()).unwrap() else {
            panic!("error frame")
        };
        edit(&mut message);
        writer
            .write_frame(&encode_frame(&Frame::Message(message)))
            .unwrap();
    }
    writer.into_inner().unwrap();
}

#[test]
fn recorded_frames_invert_to_their_prev_data() {
    let (ok, lines) = inspect(Path::new(REFERENCE));
    assert!(ok);
    assert_eq!(lines.len(), 22);
    let commits: Vec<&Json> = lines.iter().filter(|l| l["type"] == "#commit").collect();
    assert_eq!(commits.len(), 13);
    for commit in commits {
        assert_eq!(commit["proof"], "complete", "{commit}");
        assert!(commit["blocks"].as_u64().unwrap() >= 2);
        if commit["prevData"].is_null() {
            // A repo's first commit: an empty tree, nothing undone.
            assert_eq!(commit["inverted_root"], commit["data"]);
        } else {
            assert_eq!(commit["inverted_root"], commit["prevData"], "{commit}");
        }
    }
}

#[test]
fn legacy_frames_give_the_right_root_or_incomplete_never_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("legacy.frames");
    // Before sync 1.1: no prevData, no prev on ops.
    rewrite(&legacy, |message| {
        if let Message::Commit(commit) = message {
            commit.prev_data = None;
            for op in &mut commit.ops {
                if let RepoOp::Update { prev, .. } | RepoOp::Delete { prev, .. } = op {
                    *prev = None;
                }
            }
        }
    });
    let (ok, legacy_lines) = inspect(&legacy);
    assert!(ok);
    let (_, real_lines) = inspect(Path::new(REFERENCE));
    let mut incomplete = 0;
    for (legacy, real) in legacy_lines.iter().zip(&real_lines) {
        if legacy["type"] != "#commit" {
            continue;
        }
        assert!(legacy["prevData"].is_null());
        match legacy["proof"].as_str().unwrap() {
            "complete" => {
                // Creates need no prev: the root must be exactly what the real frame proves.
                assert_eq!(legacy["inverted_root"], real["inverted_root"], "{legacy}");
            }
            "incomplete" => {
                incomplete += 1;
                assert!(legacy["inverted_root"].is_null());
                assert!(legacy["proof_detail"]
                    .as_str()
                    .unwrap()
                    .starts_with("no prev for"));
            }
            other => panic!("{other}: {legacy}"),
        }
    }
    assert_eq!(incomplete, 2, "the update and the delete");

    // A slice missing a node the inversion needs is incomplete too.
    let trimmed = dir.path().join("trimmed.frames");
    rewrite(&trimmed, |message| {
        if let Message::Commit(commit) = message {
            if commit.seq == 22 {
                // Keep the CAR header and the first block only (the commit).
                let reader = butterfly_repo::car::CarReader::new(commit.blocks.as_slice()).unwrap();
                let roots = reader.header().roots.clone();
                let blocks: Vec<_> = reader.map(Result::unwrap).collect();
                let kept: Vec<(butterfly_data::Cid, Vec<u8>)> = blocks
                    .into_iter()
                    .filter(|b| b.cid == commit.commit)
                    .map(|b| (b.cid, b.data))
                    .collect();
                commit.blocks = butterfly_repo::car::write_car_to_vec(
                    &roots,
                    kept.iter().map(|(c, d)| (c, d.as_slice())),
                );
            }
        }
    });
    let (_, trimmed_lines) = inspect(&trimmed);
    let last = trimmed_lines.last().unwrap();
    assert_eq!(last["proof"], "incomplete", "{last}");
    assert!(last["inverted_root"].is_null());
}
