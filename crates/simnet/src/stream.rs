//! `com.atproto.sync.subscribeRepos`: the log's frames over a WebSocket, with the firehose faults.

use crate::{bump, Shared};
use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket};
use butterfly_data::{Map, Value};
use butterfly_firehose::message::{decode_frame, encode_frame, ErrorFrame, Frame, InfoEvent};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;

/// Frames written before a flush during a replay.
const BATCH: usize = 128;

/// Serves one connection until the client leaves, the server stops, or a fault closes it.
pub(crate) async fn connection(shared: Arc<Shared>, socket: WebSocket, cursor: Option<i64>) {
    bump(&shared.counters.connections);
    let (mut sink, mut incoming) = socket.split();
    let mut head = shared.head.subscribe();
    let mut shutdown = shared.shutdown.clone();
    let released = *head.borrow_and_update();
    let mut next = match cursor {
        None => released,
        Some(cursor) => {
            let head_seq = shared.log.seq_before(released);
            if cursor > head_seq {
                bump(&shared.counters.future_cursors);
                let frame = encode_frame(&Frame::Error(ErrorFrame {
                    error: "FutureCursor".into(),
                    message: Some("Cursor in the future.".into()),
                }));
                let _ = sink.send(Message::Binary(frame.into())).await;
                let _ = sink.send(Message::Close(None)).await;
                return;
            }
            let first_seq = shared.log.entries.first().map_or(1, |e| e.seq);
            if cursor < first_seq.saturating_sub(1) {
                // As the reference relay does when the cursor is older than what it keeps.
                let info = encode_frame(&Frame::Message(butterfly_firehose::Message::Info(
                    InfoEvent {
                        name: "OutdatedCursor".into(),
                        message: Some(
                            "Requested cursor exceeded limit. Possibly missing events".into(),
                        ),
                    },
                )));
                if sink.send(Message::Binary(info.into())).await.is_err() {
                    return;
                }
            }
            shared.log.first_after(cursor)
        }
    };

    // The reader answers pings (the WebSocket replies while reading) and notices the client leaving.
    let (gone_sender, mut gone) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = incoming.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
        let _ = gone_sender.send(());
    });

    let faults = shared.faults;
    let counters = &shared.counters;
    let mut sent = 0u64;
    let mut stalled = false;
    let mut n_garbage = 0u64;
    'serve: loop {
        let released = *head.borrow_and_update();
        if next >= released {
            tokio::select! {
                changed = head.changed() => if changed.is_err() { break },
                _ = &mut gone => break,
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            continue;
        }
        let mut batch = 0;
        while next < released && batch < BATCH {
            if let Some(stall) = faults.stall {
                if !stalled && sent >= stall.after {
                    stalled = true;
                    bump(&counters.stalls);
                    if sink.flush().await.is_err() {
                        break 'serve;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(stall.duration) => {}
                        _ = &mut gone => break 'serve,
                        _ = shutdown.wait_for(|stop| *stop) => break 'serve,
                    }
                }
            }
            if faults.malformed_every > 0 && (sent + 1).is_multiple_of(faults.malformed_every) {
                let garbage = malformed(&shared.log.frame(next), n_garbage);
                n_garbage += 1;
                if sink.feed(Message::Binary(garbage)).await.is_err() {
                    break 'serve;
                }
                bump(&counters.malformed_sent);
            }
            let frame = match shared.log.forged(next) {
                Some(forged) => {
                    bump(&counters.forged_sent);
                    forged
                }
                None => shared.log.frame(next),
            };
            let frame = if shared.retime {
                retimed(frame, unix_micros_now())
            } else {
                frame
            };
            if sink.feed(Message::Binary(frame)).await.is_err() {
                break 'serve;
            }
            bump(&counters.frames_sent);
            sent += 1;
            next += 1;
            batch += 1;
            if faults.disconnect_every > 0 && sent.is_multiple_of(faults.disconnect_every) {
                bump(&counters.disconnects);
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: close_code::AWAY,
                        reason: Utf8Bytes::from_static("simulated disconnect"),
                    })))
                    .await;
                break 'serve;
            }
        }
        if sink.flush().await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
    reader.abort();
}

fn unix_micros_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
        })
}

/// `frame` with its event's `time` set to `now_micros`; unchanged if it has none (or does not
/// decode, which the log's frames do).
fn retimed(frame: Bytes, now_micros: i64) -> Bytes {
    let Ok(Frame::Message(mut message)) = decode_frame(&frame) else {
        return frame;
    };
    let Some(time) = message.time_mut() else {
        return frame;
    };
    *time = butterfly_syntax::datetime::format_micros(now_micros);
    Bytes::from(encode_frame(&Frame::Message(message)))
}

/// Garbage in three shapes, in turn: the first half of the real frame, bytes that are not CBOR, and a
/// well-formed header with an unknown op.
fn malformed(real: &Bytes, n: u64) -> Bytes {
    match n % 3 {
        0 => real.slice(..real.len() / 2),
        1 => Bytes::from_static(&[0xff, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x1f, 0xff]),
        _ => {
            let mut header = Map::new();
            header.insert("op".into(), Value::Integer(7));
            header.insert("t".into(), Value::String("#commit".into()));
            let mut bytes = Value::Map(header).to_cbor();
            bytes.extend_from_slice(&Value::Map(Map::new()).to_cbor());
            Bytes::from(bytes)
        }
    }
}
