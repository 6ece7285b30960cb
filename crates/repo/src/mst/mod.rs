//! The Merkle Search Tree: the sorted map from repo paths to record CIDs that each commit signs.
//!
//! # Glossary
//! - **key**: a repo path, `collection/record-key`, compared as bytes.
//! - **height** of a key: leading zero bits of SHA-256(key) divided by 2 ([`key_height`]); a fanout of 4.
//! - **layer** of a node: the height shared by all its entries. A node's subtrees sit exactly one layer
//!   below it, so a key deep in the tree under a high root passes through *entry-less* nodes that hold
//!   only a left subtree. The root is the layer of the highest key; the empty tree is one empty node.
//! - **node** (wire form, [`NodeData`]): `{l: subtree|null, e: [{p, k, v, t}]}` where `k` is the key's
//!   suffix after the `p` bytes it shares with the previous entry's key, `v` the record CID and `t` the
//!   subtree right of the entry.
//!
//! Because the shape depends only on the set of keys, two trees with the same contents have the same
//! root CID. That is what lets a sync 1.1 commit prove its previous root: see [`crate::proof`].
//!
//! # Hard cases
//! - Inserting a key above the root splits the whole tree around the key and adds entry-less nodes so
//!   that both halves hang one layer below the new root.
//! - Inserting into a gap splits the subtree in that gap at every layer down to the leaves.
//! - Removing a key merges the subtrees on either side of it, recursively along the seam; a root left
//!   with no entries is replaced by its subtree until the root has entries again.
//!
//! # Partial trees
//! [`Mst`] loads nodes lazily; a node that the [`crate::BlockSource`] lacks makes an operation fail with
//! [`Error::MissingBlock`], never guess. [`walk`] reports an absent subtree as
//! [`WalkItem::MissingNode`] and carries on with the rest.
//!
//! Spec: <https://atproto.com/specs/repository#mst-structure>.

mod node;
mod tree;
mod walk;

pub use node::{
    common_prefix_len, is_valid_key, key_height, EntryData, NodeData, MAX_ENTRIES, MAX_KEY_LEN,
};
pub use tree::Mst;
pub use walk::{diff, walk, DiffEntry, Walk, WalkItem};

use butterfly_data::Cid;

/// Why an MST could not be read or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A node needed for the operation is not in the block source.
    #[error("mst node {0} is missing")]
    MissingBlock(Cid),
    /// A node breaks the MST rules: schema, key order, prefix compression or layering.
    #[error("mst node {cid}: {message}")]
    Malformed {
        /// The node.
        cid: Cid,
        /// What rule it breaks.
        message: String,
    },
    /// A key is not a valid repo path.
    #[error("mst key {0:?} is not a valid repo path (collection/record-key)")]
    InvalidKey(String),
    /// Keys handed to [`Mst::from_sorted`] are not strictly increasing.
    #[error("mst keys out of order: {key:?} after {previous:?}")]
    Unsorted {
        /// The earlier key.
        previous: String,
        /// The key that should have come after it.
        key: String,
    },
    /// The block source failed.
    #[error(transparent)]
    Source(#[from] crate::car::Error),
}

/// Checks that a node's entries all sit on one layer, `expected` if the parent implies one, and that
/// layer-0 nodes have no subtrees. Returns the node's layer, if it has entries or an expected layer.
pub(crate) fn check_node_layer(
    cid: &Cid,
    data: &NodeData,
    expected: Option<u32>,
) -> Result<Option<u32>, Error> {
    let malformed = |message: String| Error::Malformed { cid: *cid, message };
    let mut layer = expected;
    for entry in &data.entries {
        let height = key_height(entry.key.as_bytes());
        match layer {
            Some(layer) if layer != height => {
                return Err(malformed(format!(
                    "key {:?} has height {height} on layer {layer}",
                    entry.key
                )))
            }
            _ => layer = Some(height),
        }
    }
    if data.entries.is_empty() && data.left.is_none() {
        return Err(malformed("empty node inside the tree".into()));
    }
    if layer == Some(0) && (data.left.is_some() || data.entries.iter().any(|e| e.right.is_some())) {
        return Err(malformed("a layer-0 node has subtrees".into()));
    }
    Ok(layer)
}
