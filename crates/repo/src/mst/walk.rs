//! Ordered walks over a stored MST, and the diff of two trees.

use super::node::NodeData;
use super::{check_node_layer, Error};
use crate::blocks::BlockSource;
use butterfly_data::Cid;

/// What a walk yields, in key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalkItem {
    /// A record: its repo path and CID.
    Record {
        /// `collection/record-key`.
        key: String,
        /// The record's CID.
        cid: Cid,
    },
    /// A subtree the source does not hold; its keys are unknown and skipped.
    MissingNode(Cid),
}

enum Pending {
    Subtree { cid: Cid, layer: Option<u32> },
    Leaf { key: String, cid: Cid },
}

/// An in-order walk of the tree under a root, reading one node at a time from a [`BlockSource`].
///
/// Memory is bounded by the tree's depth times its widest node. Every node is checked as it is read
/// (schema, layering, key order across the whole walk); the first broken node ends the walk with an
/// error.
pub struct Walk<'s> {
    source: &'s mut dyn BlockSource,
    stack: Vec<Pending>,
    /// The previous record's key, reused as a buffer. It starts empty, which sorts before every
    /// valid key (none is empty), so the first record needs no special case.
    last_key: String,
}

/// Walks the tree whose root node is `root`.
pub fn walk(root: Cid, source: &mut dyn BlockSource) -> Walk<'_> {
    Walk {
        source,
        stack: vec![Pending::Subtree {
            cid: root,
            layer: None,
        }],
        last_key: String::new(),
    }
}

/// Reads a node and pushes its contents, last first, so that the stack pops them in key order.
/// Returns false if the node is absent.
fn expand(
    stack: &mut Vec<Pending>,
    source: &mut dyn BlockSource,
    cid: Cid,
    layer: Option<u32>,
) -> Result<bool, Error> {
    // Only the root is pushed without a layer: every node below it gets its parent's layer minus one.
    let is_root = layer.is_none();
    let Some(bytes) = source.get_block(&cid)? else {
        return Ok(false);
    };
    let data = NodeData::decode(&cid, &bytes)?;
    if is_root && data.entries.is_empty() {
        if data.left.is_some() {
            // A canonical root always has entries; refusing entry-less roots also means every node
            // below has a known layer, which bounds the depth of any tree we walk.
            return Err(Error::Malformed {
                cid,
                message: "root node has a subtree but no entries".into(),
            });
        }
        return Ok(true); // the empty tree
    }
    let layer = check_node_layer(&cid, &data, layer)?;
    let child_layer = layer.map(|l| l.saturating_sub(1));
    for entry in data.entries.into_iter().rev() {
        if let Some(right) = entry.right {
            stack.push(Pending::Subtree {
                cid: right,
                layer: child_layer,
            });
        }
        stack.push(Pending::Leaf {
            key: entry.key,
            cid: entry.value,
        });
    }
    if let Some(left) = data.left {
        stack.push(Pending::Subtree {
            cid: left,
            layer: child_layer,
        });
    }
    Ok(true)
}

impl Walk<'_> {
    fn step(&mut self) -> Result<Option<WalkItem>, Error> {
        while let Some(pending) = self.stack.pop() {
            match pending {
                Pending::Subtree { cid, layer } => {
                    if !expand(&mut self.stack, self.source, cid, layer)? {
                        return Ok(Some(WalkItem::MissingNode(cid)));
                    }
                }
                Pending::Leaf { key, cid } => {
                    if self.last_key >= key {
                        let message = format!("key {key:?} comes after {:?}", self.last_key);
                        return Err(Error::Malformed { cid, message });
                    }
                    self.last_key.clear();
                    self.last_key.push_str(&key);
                    return Ok(Some(WalkItem::Record { key, cid }));
                }
            }
        }
        Ok(None)
    }
}

impl Iterator for Walk<'_> {
    type Item = Result<WalkItem, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(item) => item.map(Ok),
            Err(e) => {
                self.stack.clear();
                Some(Err(e))
            }
        }
    }
}

/// One key that differs between two trees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffEntry {
    /// The repo path.
    pub key: String,
    /// Its CID in the old tree; `None` if created.
    pub old: Option<Cid>,
    /// Its CID in the new tree; `None` if deleted.
    pub new: Option<Cid>,
}

/// The keys that differ between two trees (`old` is `None` for "no previous tree"), in key order.
///
/// Subtrees with equal CIDs are skipped without being read, so the cost follows the size of the change,
/// not of the repo. Every node that has to be read must be in `source`.
pub fn diff(
    old: Option<Cid>,
    new: Cid,
    source: &mut dyn BlockSource,
) -> Result<Vec<DiffEntry>, Error> {
    let mut old_stack: Vec<Pending> = old
        .map(|cid| Pending::Subtree { cid, layer: None })
        .into_iter()
        .collect();
    let mut new_stack = vec![Pending::Subtree {
        cid: new,
        layer: None,
    }];
    let mut changes = Vec::new();
    loop {
        match (old_stack.last(), new_stack.last()) {
            (None, None) => break,
            (Some(Pending::Subtree { cid: a, .. }), Some(Pending::Subtree { cid: b, .. }))
                if a == b =>
            {
                old_stack.pop();
                new_stack.pop();
            }
            (Some(Pending::Subtree { layer: a, .. }), Some(Pending::Subtree { layer: b, .. }))
                if b > a =>
            {
                expand_top(&mut new_stack, source)?;
            }
            (Some(Pending::Subtree { .. }), _) => expand_top(&mut old_stack, source)?,
            (_, Some(Pending::Subtree { .. })) => expand_top(&mut new_stack, source)?,
            (
                Some(Pending::Leaf {
                    key: a,
                    cid: old_cid,
                }),
                Some(Pending::Leaf {
                    key: b,
                    cid: new_cid,
                }),
            ) => match a.cmp(b) {
                std::cmp::Ordering::Less => {
                    changes.push(DiffEntry {
                        key: a.clone(),
                        old: Some(*old_cid),
                        new: None,
                    });
                    old_stack.pop();
                }
                std::cmp::Ordering::Greater => {
                    changes.push(DiffEntry {
                        key: b.clone(),
                        old: None,
                        new: Some(*new_cid),
                    });
                    new_stack.pop();
                }
                std::cmp::Ordering::Equal => {
                    if old_cid != new_cid {
                        changes.push(DiffEntry {
                            key: a.clone(),
                            old: Some(*old_cid),
                            new: Some(*new_cid),
                        });
                    }
                    old_stack.pop();
                    new_stack.pop();
                }
            },
            (Some(Pending::Leaf { key, cid }), None) => {
                changes.push(DiffEntry {
                    key: key.clone(),
                    old: Some(*cid),
                    new: None,
                });
                old_stack.pop();
            }
            (None, Some(Pending::Leaf { key, cid })) => {
                changes.push(DiffEntry {
                    key: key.clone(),
                    old: None,
                    new: Some(*cid),
                });
                new_stack.pop();
            }
        }
    }
    Ok(changes)
}

fn expand_top(stack: &mut Vec<Pending>, source: &mut dyn BlockSource) -> Result<(), Error> {
    if let Some(Pending::Subtree { cid, layer }) = stack.pop() {
        if !expand(stack, source, cid, layer)? {
            return Err(Error::MissingBlock(cid));
        }
    }
    Ok(())
}
