//! Frame-log replay: the same items as a live stream, a cursor that skips, and a truncated tail that
//! ends the channel with an error item.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::time::Duration;

use butterfly_firehose::message::{CommitEvent, InfoEvent};
use butterfly_firehose::{encode_frame, Frame, FrameLogWriter, Message};
use butterfly_stream::{replay_frame_log, Error, StreamItem};
use butterfly_syntax::{Did, Tid};
use tokio::sync::mpsc;

fn commit(seq: i64) -> Vec<u8> {
    encode_frame(&Frame::Message(Message::Commit(CommitEvent {
        seq,
        repo: Did::parse("did:plc:ewvi7nxzyoun6zhxrhs64oiz").unwrap(),
        commit: butterfly_data::cid_for_raw(&seq.to_be_bytes()),
        rev: Tid::parse("3l3qo2vutsw2b").unwrap(),
        since: None,
        blocks: Vec::new(),
        ops: Vec::new(),
        prev_data: None,
        time: "2024-09-09T19:46:02.102Z".to_owned(),
        too_big: false,
        rebase: false,
        blobs: Vec::new(),
    })))
}

fn info() -> Vec<u8> {
    encode_frame(&Frame::Message(Message::Info(InfoEvent {
        name: "OutdatedCursor".to_owned(),
        message: None,
    })))
}

fn write_log(frames: &[Vec<u8>], cut: usize) -> tempfile::NamedTempFile {
    let mut writer = FrameLogWriter::new(Vec::new());
    for frame in frames {
        writer.write_frame(frame).unwrap();
    }
    let mut bytes = writer.into_inner().unwrap();
    bytes.truncate(bytes.len() - cut);
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&bytes).unwrap();
    file.flush().unwrap();
    file
}

/// Everything until the channel ends, within a bound.
async fn drain(mut items: mpsc::Receiver<StreamItem>) -> Vec<StreamItem> {
    let mut all = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), items.recv()).await {
            Ok(Some(item)) => all.push(item),
            Ok(None) => return all,
            Err(_) => panic!("the replay did not end"),
        }
    }
}

fn describe(item: &StreamItem) -> String {
    match item {
        StreamItem::Frame {
            frame: Ok(Frame::Message(message)),
            ..
        } => format!("{}:{:?}", message.kind(), message.seq()),
        StreamItem::Frame { frame: Err(_), .. } => "malformed".to_owned(),
        StreamItem::Failed(Error::FrameLog { .. }) => "failed".to_owned(),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn replays_every_frame_in_order_through_a_small_queue() {
    let frames: Vec<Vec<u8>> = (1..=50).map(commit).collect();
    let log = write_log(&frames, 0);
    let items = drain(replay_frame_log(log.path(), None, 1).unwrap()).await;
    assert_eq!(items.len(), 50);
    for (item, frame) in items.iter().zip(&frames) {
        let StreamItem::Frame { raw, frame: Ok(_) } = item else {
            panic!("{item:?}")
        };
        assert_eq!(&raw[..], &frame[..]);
    }
}

#[tokio::test]
async fn a_cursor_skips_what_was_seen_and_a_truncated_tail_is_an_error_item() {
    let frames = vec![
        commit(1),
        commit(2),
        info(),
        vec![0xff, 0xfe],
        commit(3),
        commit(4),
    ];
    let log = write_log(&frames, 5);
    let items = drain(replay_frame_log(log.path(), Some(2), 4).unwrap()).await;
    let described: Vec<String> = items.iter().map(describe).collect();
    assert_eq!(
        described,
        ["#info:None", "malformed", "#commit:Some(3)", "failed"]
    );
    let StreamItem::Failed(error) = items.last().unwrap() else {
        panic!()
    };
    assert!(error.to_string().contains("truncated"), "{error}");
}

#[test]
fn a_missing_file_fails_at_once() {
    let error =
        replay_frame_log(std::path::Path::new("/nonexistent/frames.log"), None, 4).unwrap_err();
    assert!(matches!(error, Error::OpenLog { .. }), "{error:?}");
    assert!(
        error.to_string().contains("/nonexistent/frames.log"),
        "{error}"
    );
}
