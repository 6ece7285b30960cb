//! Sync 1.1 commit proofs: recovering a commit's previous MST root from the commit alone.
//!
//! A sync 1.1 `#commit` carries its operations, each with the record CID before (`prev`) and after,
//! and a CAR slice holding every MST node that the change touched plus the neighbours needed to undo
//! it. Undoing each operation on the new tree (a create becomes a delete, an update puts `prev` back, a
//! delete re-creates `prev`) must give `prevData`, the root the previous commit signed. That proves the
//! operations are the whole change without fetching the repo.
//!
//! [`invert_ops`] either computes that root or says exactly why it cannot: a node the slice lacks, or
//! an operation without `prev` (frames from before sync 1.1). It never returns a root it did not
//! compute from complete information.

use crate::blocks::BlockSource;
use crate::mst::{self, Mst};
use butterfly_data::Cid;

/// One record operation of a commit, as the firehose lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepoOp {
    /// A new record.
    Create {
        /// `collection/record-key`.
        path: String,
        /// The new record's CID.
        cid: Cid,
    },
    /// A changed record.
    Update {
        /// `collection/record-key`.
        path: String,
        /// The new record's CID.
        cid: Cid,
        /// The CID it replaced; absent in frames from before sync 1.1.
        prev: Option<Cid>,
    },
    /// A removed record.
    Delete {
        /// `collection/record-key`.
        path: String,
        /// The CID it had; absent in frames from before sync 1.1.
        prev: Option<Cid>,
    },
}

impl RepoOp {
    /// The record's path.
    pub fn path(&self) -> &str {
        match self {
            RepoOp::Create { path, .. }
            | RepoOp::Update { path, .. }
            | RepoOp::Delete { path, .. } => path,
        }
    }
}

/// The outcome of inverting a commit's operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inversion {
    /// Every operation was undone; this is the root before the commit.
    Complete(Cid),
    /// The proof does not hold enough to undo the commit.
    Incomplete(Incomplete),
}

/// Why a proof is incomplete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incomplete {
    /// This MST node was needed and is not in the slice.
    MissingBlock(Cid),
    /// This update or delete has no `prev`, so the old value is unknown.
    MissingPrev(String),
}

/// Why a commit's operations contradict its own tree.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The new tree does not hold what the operation says it wrote.
    #[error("op on {path}: the tree holds {found:?}, the op says {expected:?}")]
    Mismatch {
        /// The record's path.
        path: String,
        /// What the op implies the new tree holds at that path.
        expected: Option<Cid>,
        /// What it holds.
        found: Option<Cid>,
    },
    /// Two operations name the same path.
    #[error("two ops on {0}")]
    DuplicatePath(String),
    /// A node in the slice is malformed, or a path is not a valid key.
    #[error(transparent)]
    Mst(mst::Error),
}

/// Undoes `ops` on the tree rooted at `new_root`, reading nodes from `blocks` (the commit's slice).
pub fn invert_ops(
    new_root: Cid,
    ops: &[RepoOp],
    blocks: &mut dyn BlockSource,
) -> Result<Inversion, Error> {
    let mut seen = std::collections::HashSet::new();
    for op in ops {
        if !seen.insert(op.path()) {
            return Err(Error::DuplicatePath(op.path().to_owned()));
        }
    }
    for op in ops {
        if let RepoOp::Update {
            path, prev: None, ..
        }
        | RepoOp::Delete { path, prev: None } = op
        {
            return Ok(Inversion::Incomplete(Incomplete::MissingPrev(path.clone())));
        }
    }
    match invert_inner(new_root, ops, blocks) {
        Ok(root) => Ok(Inversion::Complete(root)),
        Err(Error::Mst(mst::Error::MissingBlock(cid))) => {
            Ok(Inversion::Incomplete(Incomplete::MissingBlock(cid)))
        }
        Err(e) => Err(e),
    }
}

fn invert_inner(new_root: Cid, ops: &[RepoOp], blocks: &mut dyn BlockSource) -> Result<Cid, Error> {
    let mut tree = Mst::load(new_root, blocks).map_err(Error::Mst)?;
    for op in ops {
        let (path, expected_now, restore) = match op {
            RepoOp::Create { path, cid } => (path, Some(*cid), None),
            RepoOp::Update { path, cid, prev } => (path, Some(*cid), *prev),
            RepoOp::Delete { path, prev } => (path, None, *prev),
        };
        let found = tree.get(path, blocks).map_err(Error::Mst)?;
        if found != expected_now {
            return Err(Error::Mismatch {
                path: path.clone(),
                expected: expected_now,
                found,
            });
        }
        match restore {
            Some(prev) => tree.insert(path, prev, blocks),
            None => tree.remove(path, blocks),
        }
        .map_err(Error::Mst)?;
    }
    Ok(tree.root_cid())
}
