//! Frames recorded from the reference PDS decode, and re-encode to the same bytes.
#![allow(clippy::unwrap_used)]

use butterfly_firehose::message::{self, ErrorFrame};
use butterfly_firehose::{decode_frame, encode_frame, Frame, FrameLogReader};

#[test]
fn reference_frames_round_trip_byte_for_byte() {
    let bytes = include_bytes!("data/reference-pds.frames");
    let mut n = 0;
    for frame in FrameLogReader::new(&bytes[..]) {
        let frame = frame.unwrap();
        let decoded = decode_frame(&frame).unwrap();
        assert_eq!(encode_frame(&decoded), frame, "{decoded:?}");
        n += 1;
    }
    assert_eq!(n, 22);
}

#[test]
fn error_frames_and_unknown_types_decode() {
    let error = Frame::Error(ErrorFrame {
        error: "FutureCursor".into(),
        message: Some("Cursor in the future.".into()),
    });
    assert_eq!(decode_frame(&encode_frame(&error)).unwrap(), error);
    let unknown = Frame::Message(message::Message::Unknown {
        kind: "#handle".into(),
        seq: Some(7),
    });
    assert_eq!(decode_frame(&encode_frame(&unknown)).unwrap(), unknown);
}

#[test]
fn malformed_frames_are_errors_not_panics() {
    let bytes = include_bytes!("data/reference-pds.frames");
    let frames: Vec<Vec<u8>> = FrameLogReader::new(&bytes[..])
        .collect::<Result<_, _>>()
        .unwrap();
    for frame in &frames {
        // Every truncation, and a flipped byte at every position, of every frame.
        for cut in 0..frame.len() {
            let _ = decode_frame(&frame[..cut]);
            let mut flipped = frame.clone();
            flipped[cut] ^= 0xff;
            let _ = decode_frame(&flipped);
        }
        assert!(decode_frame(&frame[..frame.len() - 1]).is_err());
        let mut trailing = frame.clone();
        trailing.push(0);
        assert!(decode_frame(&trailing).is_err());
    }
    assert!(matches!(
        decode_frame(&vec![0u8; message::MAX_FRAME_BYTES + 1]),
        Err(message::Error::TooLarge(_))
    ));
}
