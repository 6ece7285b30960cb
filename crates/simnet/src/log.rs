//! The frame log being served: the raw bytes, one index entry per frame, and the forged variants the
//! fault settings ask for.

use crate::Error;
use butterfly_crypto::{Algorithm, PrivateKey};
use butterfly_data::Cid;
use butterfly_firehose::message::{decode_frame, encode_frame, Frame, Message};
use butterfly_firehose::FrameLogReader;
use butterfly_repo::car::{write_car_to_vec, CarReader};
use butterfly_repo::commit::{Commit, UnsignedCommit};
use bytes::Bytes;
use std::collections::HashMap;

/// One frame of the log.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) seq: i64,
    pub(crate) start: usize,
    pub(crate) len: usize,
}

/// A frame log held in memory, sent without copying (`Bytes` slices share the buffer).
pub(crate) struct LoadedLog {
    bytes: Bytes,
    pub(crate) entries: Vec<Entry>,
    /// Replacement bytes for the commits `forge_every` picks, by frame index.
    forged: HashMap<usize, Bytes>,
}

impl LoadedLog {
    /// Indexes `bytes`, checking every frame decodes to a message with a `seq` above the previous one.
    /// Every `forge_every`th `#commit` (0: none) gets a forged variant.
    pub(crate) fn load(bytes: Bytes, forge_every: u64) -> Result<LoadedLog, Error> {
        let mut entries = Vec::new();
        let mut forged = HashMap::new();
        let mut reader = FrameLogReader::new(bytes.as_ref());
        let mut n_commits = 0u64;
        let forger = (forge_every > 0).then(forging_key).transpose()?;
        loop {
            let start = reader.offset() as usize + 4;
            let Some(frame) = reader.next_frame()? else {
                break;
            };
            let index = entries.len();
            let bad = |message: String| Error::BadFrame { index, message };
            let message = match decode_frame(&frame).map_err(|e| bad(e.to_string()))? {
                Frame::Message(message) => message,
                Frame::Error(e) => return Err(bad(format!("an error frame ({})", e.error))),
            };
            let seq = message
                .seq()
                .ok_or_else(|| bad(format!("{} has no seq", message.kind())))?;
            if let Some(last) = entries.last().map(|e: &Entry| e.seq) {
                if seq <= last {
                    return Err(bad(format!("seq {seq} after {last}")));
                }
            }
            if let (Message::Commit(commit), Some(key)) = (&message, &forger) {
                n_commits += 1;
                if n_commits.is_multiple_of(forge_every) {
                    let forged_frame = forge(commit.clone(), key).map_err(bad)?;
                    forged.insert(index, Bytes::from(forged_frame));
                }
            }
            entries.push(Entry {
                seq,
                start,
                len: frame.len(),
            });
        }
        Ok(LoadedLog {
            bytes,
            entries,
            forged,
        })
    }

    /// Frame `index` as logged.
    pub(crate) fn frame(&self, index: usize) -> Bytes {
        let entry = &self.entries[index];
        self.bytes.slice(entry.start..entry.start + entry.len)
    }

    /// The forged variant of frame `index`, if the fault settings picked it.
    pub(crate) fn forged(&self, index: usize) -> Option<Bytes> {
        self.forged.get(&index).cloned()
    }

    /// Number of frames.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The `seq` of the last of the first `head` frames (0 when there are none).
    pub(crate) fn seq_before(&self, head: usize) -> i64 {
        head.checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .map_or(0, |e| e.seq)
    }

    /// Index of the first frame with a `seq` above `cursor`.
    pub(crate) fn first_after(&self, cursor: i64) -> usize {
        self.entries.partition_point(|e| e.seq <= cursor)
    }
}

/// The key forged commits are signed with: fixed, and nobody's.
fn forging_key() -> Result<PrivateKey, Error> {
    PrivateKey::from_bytes(Algorithm::K256, &[0x5a; 32])
        .map_err(|e| Error::Config(format!("forging key: {e}")))
}

/// Re-signs a commit with `key`: same fields, wrong signature. The slice gets the new commit block
/// (and loses the old one), the CAR root and the frame's `commit` field follow, so the frame decodes
/// and its proof still inverts; only signature verification fails.
fn forge(
    mut event: butterfly_firehose::message::CommitEvent,
    key: &PrivateKey,
) -> Result<Vec<u8>, String> {
    let reader = CarReader::new(event.blocks.as_slice()).map_err(|e| e.to_string())?;
    let mut blocks: Vec<(Cid, Vec<u8>)> = Vec::new();
    for block in reader {
        let block = block.map_err(|e| e.to_string())?;
        blocks.push((block.cid, block.data));
    }
    let original = blocks
        .iter()
        .find(|(cid, _)| *cid == event.commit)
        .ok_or_else(|| format!("commit block {} is not in the slice", event.commit))?;
    let commit = Commit::decode(&original.0, &original.1).map_err(|e| e.to_string())?;
    let rev = commit
        .rev
        .clone()
        .ok_or_else(|| "a commit without rev cannot be forged".to_owned())?;
    let (forged_cid, forged_bytes) = UnsignedCommit {
        did: commit.did.clone(),
        data: commit.data,
        rev,
        prev: commit.prev,
    }
    .sign(key);
    let old = event.commit;
    let mut out: Vec<(Cid, Vec<u8>)> = vec![(forged_cid, forged_bytes)];
    out.extend(blocks.into_iter().filter(|(cid, _)| *cid != old));
    event.blocks = write_car_to_vec(
        &[forged_cid],
        out.iter().map(|(cid, data)| (cid, data.as_slice())),
    );
    event.commit = forged_cid;
    Ok(encode_frame(&Frame::Message(Message::Commit(event))))
}
