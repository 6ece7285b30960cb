//! Deterministic synthetic atproto data for tests and benchmarks.
//!
//! [`generate_repo`] writes a validly signed repo CAR with realistic records (posts with facets,
//! embeds and replies, likes, reposts, follows, blocks, a profile) and real-looking TIDs. The same seed
//! gives the same bytes, always; record `i` can be regenerated alone, so a repo of millions of records
//! is written without holding the records in memory.
//!
//! [`firehose::generate_firehose`] writes a frame log of sync 1.1 traffic from many repos that start
//! empty: signed commits whose slices prove their previous root, with occasional `#identity`,
//! `#account` and `#sync` messages, plus the DID documents of every account. `butterfly-simnet`
//! serves such a log as a network.
//!
//! The DIDs and keys are synthetic: the DID is registered nowhere and the key comes from the seed, so
//! nothing here is a secret. What this crate does not do: it opens no sockets, and reads no clock
//! (timestamps derive from the seed or from a simulated clock).
//!
//! ```
//! let mut car = Vec::new();
//! let repo = butterfly_sim::generate_repo(&butterfly_sim::RepoSpec { records: 50, seed: 7 }, &mut car)?;
//! assert_eq!(repo.n_records, 50);
//! # Ok::<(), butterfly_sim::Error>(())
//! ```
#![warn(missing_docs)]

pub mod firehose;
mod records;
mod repo;
mod rng;

pub use records::{format_datetime, record, RecordKind};
pub use repo::{generate_repo, Error, GeneratedRepo, RepoSpec};
pub use rng::Rng;
