//! atproto repositories: CAR files, the Merkle Search Tree, signed commits and sync 1.1 proofs.
//!
//! A repo is a signed [`commit::Commit`] whose `data` field is the root of an [`mst::Mst`] mapping
//! `collection/record-key` paths to record CIDs. Repos travel as CAR files ([`car`]): whole from
//! `getRepo`, or as the slice of changed blocks in a firehose `#commit`, whose operations can be undone
//! on that slice alone to prove the previous root ([`proof`]).
//!
//! - [`car::CarReader`] / [`car::AsyncCarReader`] stream blocks from any reader and check each hash;
//!   [`car::CarWriter`] writes them.
//! - [`BlockSource`] is how the MST and commits find blocks: [`BlockMap`] in memory, [`IndexedCar`] over
//!   a seekable file for repos too big to hold.
//! - [`mst::Mst`] edits a tree lazily loaded from a source; [`mst::walk`] and [`mst::diff`] read one.
//! - [`commit::Commit::verify`] checks a signature with a key from `butterfly-crypto` and yields a
//!   [`commit::VerifiedCommit`].
//!
//! What this crate does not do: it opens no files or sockets, reads no clock and resolves no DIDs; the
//! caller hands it readers, blocks and keys.
//!
//! Specs: <https://atproto.com/specs/repository>, <https://atproto.com/specs/sync>.
//!
//! ```
//! use butterfly_repo::{mst::{self, Mst, WalkItem}, BlockMap};
//!
//! let leaf = butterfly_data::cid_for_cbor(b"\xa0");
//! let mut tree = Mst::from_sorted([("app.bsky.feed.post/3k2a", leaf), ("app.bsky.feed.post/3k2b", leaf)])?;
//! let (root, new_blocks) = tree.new_blocks();
//! let mut blocks = BlockMap::new();
//! blocks.extend(new_blocks);
//! let keys: Vec<_> = mst::walk(root, &mut blocks)
//!     .map(|item| match item? { WalkItem::Record { key, .. } => Ok(key), WalkItem::MissingNode(cid) => Err(mst::Error::MissingBlock(cid)) })
//!     .collect::<Result<_, mst::Error>>()?;
//! assert_eq!(keys, ["app.bsky.feed.post/3k2a", "app.bsky.feed.post/3k2b"]);
//! # Ok::<(), mst::Error>(())
//! ```
#![warn(missing_docs)]

mod blocks;
pub mod car;
pub mod commit;
pub mod mst;
pub mod proof;

pub use blocks::{BlockMap, BlockSource, CarSlice, IndexedCar, RecordingSource, SharedSource};
