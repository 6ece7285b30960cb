//! A mutable MST whose nodes load lazily from a [`BlockSource`].

use super::node::{encode_node, key_height, NodeData};
use super::Error;
use crate::blocks::BlockSource;
use butterfly_data::Cid;

/// A pointer to a subtree: either only its CID (not loaded, perhaps not even available) or the node.
#[derive(Clone, Debug)]
enum Link {
    Stub(Cid),
    Loaded(Box<Node>),
}

#[derive(Clone, Debug)]
struct Node {
    left: Option<Link>,
    entries: Vec<Entry>,
    /// The CID while the node is unchanged since it was loaded or last hashed; `None` once changed.
    cid: Option<Cid>,
}

#[derive(Clone, Debug)]
struct Entry {
    key: String,
    value: Cid,
    right: Option<Link>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.left.is_none()
    }

    /// The subtree slot between entry `index - 1` and entry `index` (`left` when `index` is 0).
    fn gap_mut(&mut self, index: usize) -> &mut Option<Link> {
        if index == 0 {
            &mut self.left
        } else {
            &mut self.entries[index - 1].right
        }
    }

    /// Index of the first entry whose key is not below `key`, and whether it equals `key`.
    fn search(&self, key: &str) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|entry| entry.key.as_str().cmp(key))
    }

    fn into_link(self) -> Option<Link> {
        if self.is_empty() {
            None
        } else {
            Some(Link::Loaded(Box::new(self)))
        }
    }
}

/// A Merkle Search Tree: the sorted map from repo paths to record CIDs that a commit signs.
///
/// Nodes not yet needed stay as bare CIDs, so a tree loaded from a commit slice (a sync 1.1 proof) can
/// be edited as long as the edits only touch the nodes present. An edit that needs an absent node fails
/// with [`Error::MissingBlock`] naming it; nothing is guessed.
#[derive(Clone, Debug)]
pub struct Mst {
    root: Option<Link>,
    /// Layer of the root node; 0 for the empty tree.
    layer: u32,
}

impl Default for Mst {
    fn default() -> Self {
        Mst::new()
    }
}

impl Mst {
    /// The empty tree.
    pub fn new() -> Mst {
        Mst {
            root: None,
            layer: 0,
        }
    }

    /// Opens the tree whose root node is `root`. Only the root is read now.
    pub fn load(root: Cid, source: &mut dyn BlockSource) -> Result<Mst, Error> {
        let data = read_node(&root, source)?;
        if data.entries.is_empty() {
            if data.left.is_some() {
                return Err(Error::Malformed {
                    cid: root,
                    message: "root node has a subtree but no entries".into(),
                });
            }
            return Ok(Mst::new());
        }
        let layer = key_height(data.entries[0].key.as_bytes());
        let node = node_from_data(root, data, layer)?;
        Ok(Mst {
            root: Some(Link::Loaded(node)),
            layer,
        })
    }

    /// Builds a tree from entries in strictly increasing key order, in one pass per layer.
    pub fn from_sorted<I, K>(entries: I) -> Result<Mst, Error>
    where
        I: IntoIterator<Item = (K, Cid)>,
        K: Into<String>,
    {
        let mut items: Vec<(String, Cid, u32)> = Vec::new();
        for (key, value) in entries {
            let key = key.into();
            if !super::node::is_valid_key(key.as_bytes()) {
                return Err(Error::InvalidKey(key));
            }
            if let Some(last) = items.last() {
                if last.0 >= key {
                    return Err(Error::Unsorted {
                        previous: last.0.clone(),
                        key,
                    });
                }
            }
            let height = key_height(key.as_bytes());
            items.push((key, value, height));
        }
        let layer = items.iter().map(|item| item.2).max().unwrap_or(0);
        let root = build(&mut items.into_iter().peekable(), layer);
        Ok(Mst { root, layer })
    }

    /// The CID stored at `key`, if any.
    pub fn get(&mut self, key: &str, source: &mut dyn BlockSource) -> Result<Option<Cid>, Error> {
        let height = key_height(key.as_bytes());
        if height > self.layer {
            return Ok(None);
        }
        let mut layer = self.layer;
        let mut slot = &mut self.root;
        loop {
            let Some(link) = slot.as_mut() else {
                return Ok(None);
            };
            let node = ensure_loaded(link, layer, source)?;
            match node.search(key) {
                Ok(index) => return Ok(Some(node.entries[index].value)),
                Err(_) if height == layer => return Ok(None),
                Err(index) => {
                    slot = node.gap_mut(index);
                    layer -= 1;
                }
            }
        }
    }

    /// Sets `key` to `value`; returns the CID it replaced.
    pub fn insert(
        &mut self,
        key: &str,
        value: Cid,
        source: &mut dyn BlockSource,
    ) -> Result<Option<Cid>, Error> {
        if !super::node::is_valid_key(key.as_bytes()) {
            return Err(Error::InvalidKey(key.to_owned()));
        }
        let height = key_height(key.as_bytes());
        if self.root.is_none() {
            self.root = Some(new_chain(key, value, height, height));
            self.layer = height;
            return Ok(None);
        }
        if height > self.layer {
            // The key belongs above the current root: split the whole tree around it and raise it.
            let (below, above) = split(self.root.take(), self.layer, key, source)?;
            let entry = Entry {
                key: key.to_owned(),
                value,
                right: lift(above, self.layer, height - 1),
            };
            let root = Node {
                left: lift(below, self.layer, height - 1),
                entries: vec![entry],
                cid: None,
            };
            self.root = Some(Link::Loaded(Box::new(root)));
            self.layer = height;
            return Ok(None);
        }
        let (root, previous) = insert(self.root.take(), self.layer, key, height, value, source)?;
        self.root = Some(root);
        Ok(previous)
    }

    /// Removes `key`; returns the CID it held.
    pub fn remove(
        &mut self,
        key: &str,
        source: &mut dyn BlockSource,
    ) -> Result<Option<Cid>, Error> {
        let height = key_height(key.as_bytes());
        let Some(root) = self.root.take() else {
            return Ok(None);
        };
        if height > self.layer {
            self.root = Some(root);
            return Ok(None);
        }
        let (root, removed) = remove(root, self.layer, key, height, source)?;
        self.root = root;
        // A root left with no entries is replaced by its only subtree, as often as needed.
        while let Some(link) = self.root.as_mut() {
            let node = ensure_loaded(link, self.layer, source)?;
            if !node.entries.is_empty() {
                break;
            }
            self.root = node.left.take();
            self.layer = self.layer.saturating_sub(1);
        }
        if self.root.is_none() {
            self.layer = 0;
        }
        Ok(removed)
    }

    /// The root CID, hashing whatever changed since the last call.
    pub fn root_cid(&mut self) -> Cid {
        self.hash_changed_nodes(&mut |_, _| {})
    }

    /// The root CID, and every node block that is new since the tree was loaded or last hashed, in
    /// the order a CAR writer wants them (parents after children).
    pub fn new_blocks(&mut self) -> (Cid, Vec<(Cid, Vec<u8>)>) {
        let mut blocks = Vec::new();
        let root = self.hash_changed_nodes(&mut |cid, bytes| blocks.push((cid, bytes)));
        (root, blocks)
    }

    fn hash_changed_nodes(&mut self, emit: &mut dyn FnMut(Cid, Vec<u8>)) -> Cid {
        match self.root.as_mut() {
            Some(link) => link_cid(link, emit),
            None => {
                let empty = NodeData {
                    left: None,
                    entries: Vec::new(),
                };
                let bytes = empty.encode();
                let cid = butterfly_data::cid_for_cbor(&bytes);
                emit(cid, bytes);
                cid
            }
        }
    }
}

fn read_node(cid: &Cid, source: &mut dyn BlockSource) -> Result<NodeData, Error> {
    let bytes = source.get_block(cid)?.ok_or(Error::MissingBlock(*cid))?;
    NodeData::decode(cid, &bytes)
}

/// Turns a decoded node into a tree node, checking that it sits on the layer its parent implies.
fn node_from_data(cid: Cid, data: NodeData, layer: u32) -> Result<Box<Node>, Error> {
    super::check_node_layer(&cid, &data, Some(layer))?;
    let entries = data
        .entries
        .into_iter()
        .map(|entry| Entry {
            key: entry.key,
            value: entry.value,
            right: entry.right.map(Link::Stub),
        })
        .collect();
    Ok(Box::new(Node {
        left: data.left.map(Link::Stub),
        entries,
        cid: Some(cid),
    }))
}

fn ensure_loaded<'a>(
    link: &'a mut Link,
    layer: u32,
    source: &mut dyn BlockSource,
) -> Result<&'a mut Node, Error> {
    if let Link::Stub(cid) = link {
        let cid = *cid;
        let node = node_from_data(cid, read_node(&cid, source)?, layer)?;
        *link = Link::Loaded(node);
    }
    match link {
        Link::Loaded(node) => Ok(node),
        Link::Stub(cid) => Err(Error::MissingBlock(*cid)),
    }
}

fn take_loaded(link: Link, layer: u32, source: &mut dyn BlockSource) -> Result<Box<Node>, Error> {
    match link {
        Link::Loaded(node) => Ok(node),
        Link::Stub(cid) => node_from_data(cid, read_node(&cid, source)?, layer),
    }
}

/// A path of nodes from `layer` down to the key's own layer, holding only the key.
fn new_chain(key: &str, value: Cid, height: u32, layer: u32) -> Link {
    let mut link = Link::Loaded(Box::new(Node {
        left: None,
        entries: vec![Entry {
            key: key.to_owned(),
            value,
            right: None,
        }],
        cid: None,
    }));
    for _ in height..layer {
        link = Link::Loaded(Box::new(Node {
            left: Some(link),
            entries: Vec::new(),
            cid: None,
        }));
    }
    link
}

/// Wraps a subtree at `from` in entry-less nodes until its top is at layer `to`.
fn lift(link: Option<Link>, from: u32, to: u32) -> Option<Link> {
    let mut link = link?;
    for _ in from..to {
        link = Link::Loaded(Box::new(Node {
            left: Some(link),
            entries: Vec::new(),
            cid: None,
        }));
    }
    Some(link)
}

fn insert(
    link: Option<Link>,
    layer: u32,
    key: &str,
    height: u32,
    value: Cid,
    source: &mut dyn BlockSource,
) -> Result<(Link, Option<Cid>), Error> {
    let Some(link) = link else {
        return Ok((new_chain(key, value, height, layer), None));
    };
    let mut node = take_loaded(link, layer, source)?;
    let previous = match node.search(key) {
        Ok(index) => {
            let old = node.entries[index].value;
            if old == value {
                return Ok((Link::Loaded(node), Some(old)));
            }
            node.entries[index].value = value;
            Some(old)
        }
        Err(index) if height == layer => {
            let gap = node.gap_mut(index).take();
            let (below, above) = split(gap, layer.saturating_sub(1), key, source)?;
            *node.gap_mut(index) = below;
            node.entries.insert(
                index,
                Entry {
                    key: key.to_owned(),
                    value,
                    right: above,
                },
            );
            None
        }
        Err(index) => {
            let gap = node.gap_mut(index).take();
            let (child, previous) = insert(gap, layer - 1, key, height, value, source)?;
            *node.gap_mut(index) = Some(child);
            previous
        }
    };
    node.cid = None;
    Ok((Link::Loaded(node), previous))
}

/// Splits a subtree into the keys below `key` and the keys above it, each still rooted at `layer`.
fn split(
    link: Option<Link>,
    layer: u32,
    key: &str,
    source: &mut dyn BlockSource,
) -> Result<(Option<Link>, Option<Link>), Error> {
    let Some(link) = link else {
        return Ok((None, None));
    };
    let mut node = take_loaded(link, layer, source)?;
    let index = match node.search(key) {
        Ok(_) => {
            return Err(Error::Malformed {
                cid: node.cid.unwrap_or_default(),
                message: format!("key {key:?} found on a layer below its height"),
            })
        }
        Err(index) => index,
    };
    let gap = node.gap_mut(index).take();
    let (gap_below, gap_above) = split(gap, layer.saturating_sub(1), key, source)?;
    let above_entries = node.entries.split_off(index);
    *node.gap_mut(index) = gap_below;
    node.cid = None;
    let above = Node {
        left: gap_above,
        entries: above_entries,
        cid: None,
    };
    Ok((node.into_link(), above.into_link()))
}

fn remove(
    link: Link,
    layer: u32,
    key: &str,
    height: u32,
    source: &mut dyn BlockSource,
) -> Result<(Option<Link>, Option<Cid>), Error> {
    let mut node = take_loaded(link, layer, source)?;
    let removed = match node.search(key) {
        Ok(index) => {
            let entry = node.entries.remove(index);
            let gap = node.gap_mut(index).take();
            *node.gap_mut(index) = merge(gap, entry.right, layer.saturating_sub(1), source)?;
            Some(entry.value)
        }
        Err(_) if height == layer => None,
        Err(index) => match node.gap_mut(index).take() {
            None => None,
            Some(child) => {
                let (child, removed) = remove(child, layer - 1, key, height, source)?;
                *node.gap_mut(index) = child;
                removed
            }
        },
    };
    if removed.is_some() {
        node.cid = None;
    }
    Ok((node.into_link(), removed))
}

/// Joins two subtrees of the same layer whose keys are all ordered `left` before `right`.
fn merge(
    left: Option<Link>,
    right: Option<Link>,
    layer: u32,
    source: &mut dyn BlockSource,
) -> Result<Option<Link>, Error> {
    let (left, right) = match (left, right) {
        (None, other) | (other, None) => return Ok(other),
        (Some(left), Some(right)) => (left, right),
    };
    let mut left = take_loaded(left, layer, source)?;
    let mut right = take_loaded(right, layer, source)?;
    let last_index = left.entries.len();
    let left_edge = left.gap_mut(last_index).take();
    let middle = merge(
        left_edge,
        right.left.take(),
        layer.saturating_sub(1),
        source,
    )?;
    *left.gap_mut(last_index) = middle;
    left.entries.append(&mut right.entries);
    left.cid = None;
    Ok(left.into_link())
}

/// Builds the subtree at `layer` from the sorted items that `items` yields next, stopping before the
/// first item whose height is above `layer` (it belongs to an ancestor).
fn build<I: Iterator<Item = (String, Cid, u32)>>(
    items: &mut std::iter::Peekable<I>,
    layer: u32,
) -> Option<Link> {
    let mut node = Node {
        left: None,
        entries: Vec::new(),
        cid: None,
    };
    loop {
        match items.peek() {
            None => break,
            Some(item) if item.2 > layer => break,
            Some(item) if item.2 == layer => {
                if let Some((key, value, _)) = items.next() {
                    node.entries.push(Entry {
                        key,
                        value,
                        right: None,
                    });
                }
            }
            Some(_) => {
                // A run of lower keys: they form the subtree in the current gap.
                let child = build(items, layer - 1);
                let index = node.entries.len();
                *node.gap_mut(index) = child;
            }
        }
    }
    node.into_link()
}

/// The CID of a subtree, encoding and hashing only the nodes changed since they were last hashed.
fn link_cid(link: &mut Link, emit: &mut dyn FnMut(Cid, Vec<u8>)) -> Cid {
    let node = match link {
        Link::Stub(cid) => return *cid,
        Link::Loaded(node) => node,
    };
    if let Some(cid) = node.cid {
        return cid;
    }
    let left = node.left.as_mut().map(|child| link_cid(child, emit));
    let rights: Vec<Option<Cid>> = node
        .entries
        .iter_mut()
        .map(|entry| entry.right.as_mut().map(|child| link_cid(child, emit)))
        .collect();
    let entries = node
        .entries
        .iter()
        .zip(&rights)
        .map(|(entry, right)| (entry.key.as_str(), &entry.value, right.as_ref()));
    let bytes = encode_node(left.as_ref(), entries);
    let cid = butterfly_data::cid_for_cbor(&bytes);
    emit(cid, bytes);
    node.cid = Some(cid);
    cid
}
