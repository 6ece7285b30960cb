//! `subscribeRepos` frame decoding of arbitrary bytes, and the offline checks `firehose inspect` runs.
//!
//! Properties: never panics; a frame that decodes re-encodes to bytes that decode to the same frame;
//! reading a commit's CAR slice and inverting its ops never panics.
#![no_main]

use butterfly_firehose::{decode_frame, encode_frame, Frame, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = decode_frame(data) else {
        return;
    };
    let again = decode_frame(&encode_frame(&frame));
    assert_eq!(again.as_ref().ok(), Some(&frame));
    if let Frame::Message(Message::Commit(commit)) = frame {
        let Ok(reader) = butterfly_repo::car::CarReader::new(commit.blocks.as_slice()) else {
            return;
        };
        let Ok((_, mut blocks)) = butterfly_repo::BlockMap::from_car(reader) else {
            return;
        };
        if let Some(bytes) = blocks.get(&commit.commit) {
            if let Ok(decoded) = butterfly_repo::commit::Commit::decode(&commit.commit, bytes) {
                let _ = butterfly_repo::proof::invert_ops(decoded.data, &commit.ops, &mut blocks);
            }
        }
    }
});
