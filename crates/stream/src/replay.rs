//! Frame-log replay: a recorded stream fed into the same channel as a live one.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;

use butterfly_firehose::{decode_frame, Frame, FrameLogReader};

use crate::{channel, Error, StreamItem};

/// Replays the frame log at `path` into a bounded channel of `queue_capacity` items, reading on a
/// thread of its own (file reads block).
///
/// Every frame is delivered as [`StreamItem::Frame`] with its decoding, except messages with a `seq`
/// at or below `cursor`, which are skipped (frames without a `seq`, and undecodable ones, are always
/// delivered). The channel ends at the end of the file; a log that cannot be read to its end (a
/// truncated tail, an I/O error, a corrupt length) ends with one [`StreamItem::Failed`]. Reading
/// stops early when the receiver is dropped. No `Connected` or `Disconnected` items are sent.
///
/// Fails at once if the file cannot be opened. Needs no runtime.
pub fn replay_frame_log(
    path: &Path,
    cursor: Option<i64>,
    queue_capacity: usize,
) -> Result<mpsc::Receiver<StreamItem>, Error> {
    let file = std::fs::File::open(path).map_err(|source| Error::OpenLog {
        path: path.to_owned(),
        source,
    })?;
    replay_frames(
        std::io::BufReader::new(file),
        path.to_owned(),
        cursor,
        queue_capacity,
    )
}

/// Like [`replay_frame_log`] for any reader of a frame log; `name` is used in errors.
pub fn replay_frames<R: Read + Send + 'static>(
    reader: R,
    name: PathBuf,
    cursor: Option<i64>,
    queue_capacity: usize,
) -> Result<mpsc::Receiver<StreamItem>, Error> {
    let (sender, receiver) = channel(queue_capacity);
    let thread_error_path = name.clone();
    std::thread::Builder::new()
        .name("frame-log-replay".to_owned())
        .spawn(move || replay(FrameLogReader::new(reader), &name, cursor, &sender))
        .map_err(|source| Error::OpenLog {
            path: thread_error_path,
            source,
        })?;
    Ok(receiver)
}

fn replay<R: Read>(
    mut reader: FrameLogReader<R>,
    name: &Path,
    cursor: Option<i64>,
    sender: &mpsc::Sender<StreamItem>,
) {
    loop {
        let item = match reader.next_frame() {
            Ok(None) => return,
            Ok(Some(raw)) => {
                let frame = decode_frame(&raw);
                let seq = match &frame {
                    Ok(Frame::Message(message)) => message.seq(),
                    _ => None,
                };
                if matches!((seq, cursor), (Some(seq), Some(cursor)) if seq <= cursor) {
                    continue;
                }
                StreamItem::Frame {
                    raw: Bytes::from(raw),
                    frame,
                }
            }
            Err(source) => {
                let _ = sender.blocking_send(StreamItem::Failed(Error::FrameLog {
                    path: name.to_owned(),
                    source,
                }));
                return;
            }
        };
        if sender.blocking_send(item).is_err() {
            return;
        }
    }
}
