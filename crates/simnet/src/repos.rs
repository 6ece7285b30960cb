//! What the network knows at its head: every repo rebuilt from the frames released so far, and the
//! DID documents.
//!
//! A repo is the union of its commits' slices since it was empty (a sync 1.1 slice carries every new
//! node and record), pruned of unreachable blocks whenever the block count doubles.

use crate::Error;
use butterfly_data::Cid;
use butterfly_firehose::message::{decode_frame, Frame, Message};
use butterfly_repo::car::{CarReader, CarWriter};
use butterfly_repo::commit::Commit;
use butterfly_repo::mst::{self, NodeData, WalkItem};
use butterfly_repo::proof::RepoOp;
use butterfly_repo::{BlockMap, RecordingSource};
use butterfly_syntax::Tid;
use std::collections::{BTreeMap, HashMap, HashSet};

/// One account of the DID documents file.
pub(crate) struct Identity {
    pub(crate) handle: Option<String>,
    /// The document, its PDS endpoint pointing at this server.
    pub(crate) doc: serde_json::Value,
}

/// The PLC side: DID documents by DID, and DIDs by (lowercase) handle.
#[derive(Default)]
pub(crate) struct Directory {
    pub(crate) by_did: HashMap<String, Identity>,
    pub(crate) by_handle: HashMap<String, String>,
}

impl Directory {
    /// Reads a JSON array of DID documents, pointing each `#atproto_pds` service at `base_url`.
    pub(crate) fn load(json: &[u8], base_url: &str) -> Result<Directory, Error> {
        let docs: Vec<serde_json::Value> = serde_json::from_slice(json)
            .map_err(|e| Error::Config(format!("DID documents: {e}")))?;
        let mut directory = Directory::default();
        for (i, mut doc) in docs.into_iter().enumerate() {
            let did = doc
                .get("id")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| Error::Config(format!("DID document {i} has no string id")))?
                .to_owned();
            if let Some(services) = doc
                .get_mut("service")
                .and_then(serde_json::Value::as_array_mut)
            {
                for service in services {
                    let is_pds = service.get("id").and_then(serde_json::Value::as_str)
                        == Some("#atproto_pds")
                        || service.get("type").and_then(serde_json::Value::as_str)
                            == Some("AtprotoPersonalDataServer");
                    if is_pds {
                        service["serviceEndpoint"] = serde_json::Value::String(base_url.to_owned());
                    }
                }
            }
            let handle = doc
                .get("alsoKnownAs")
                .and_then(serde_json::Value::as_array)
                .and_then(|aliases| {
                    aliases
                        .iter()
                        .filter_map(serde_json::Value::as_str)
                        .find_map(|alias| alias.strip_prefix("at://"))
                })
                .map(str::to_owned);
            if let Some(handle) = &handle {
                directory
                    .by_handle
                    .insert(handle.to_ascii_lowercase(), did.clone());
            }
            directory.by_did.insert(did, Identity { handle, doc });
        }
        Ok(directory)
    }
}

/// A repo's latest commit.
#[derive(Clone, Debug)]
pub(crate) struct Head {
    pub(crate) commit: Cid,
    pub(crate) rev: String,
    pub(crate) data: Cid,
}

/// One repo at the head.
pub(crate) struct RepoState {
    blocks: BlockMap,
    /// Block count after the last pruning.
    live: usize,
    pub(crate) head: Option<Head>,
    pub(crate) active: bool,
    pub(crate) status: Option<String>,
    /// Records per collection.
    pub(crate) collections: BTreeMap<String, u64>,
}

impl RepoState {
    fn new() -> RepoState {
        RepoState {
            blocks: BlockMap::new(),
            live: 0,
            head: None,
            active: true,
            status: None,
            collections: BTreeMap::new(),
        }
    }

    /// Adds the blocks of a message's CAR; returns the CAR's first root.
    fn add_blocks(&mut self, car: &[u8]) -> Result<Option<Cid>, String> {
        let reader = CarReader::new(car).map_err(|e| e.to_string())?;
        let root = reader.header().roots.first().copied();
        for block in reader {
            let block = block.map_err(|e| e.to_string())?;
            self.blocks.insert(block.cid, block.data);
        }
        Ok(root)
    }

    /// Makes `commit`, a block the repo holds, its head.
    fn set_head(&mut self, commit: Cid, rev: &Tid) -> Result<(), String> {
        let bytes = self
            .blocks
            .get(&commit)
            .ok_or_else(|| format!("commit {commit} is not in its CAR"))?;
        let data = Commit::decode(&commit, bytes)
            .map_err(|e| e.to_string())?
            .data;
        self.head = Some(Head {
            commit,
            rev: rev.as_str().to_owned(),
            data,
        });
        Ok(())
    }
}

/// Why a repo cannot be served.
#[derive(Debug)]
pub(crate) enum Unavailable {
    /// No commit for this DID at the head.
    NotFound,
    /// The account is not active; the status says why.
    Inactive(String),
    /// A block the repo needs is missing (a log that does not start from empty repos).
    Broken(String),
}

/// Every repo seen in the frames released so far, by DID (sorted, for paging).
#[derive(Default)]
pub(crate) struct Repos {
    pub(crate) by_did: BTreeMap<String, RepoState>,
}

impl Repos {
    /// Applies one released frame. A frame that makes no sense is reported and skipped: the log may
    /// be a recording from elsewhere.
    pub(crate) fn apply(&mut self, frame: &[u8]) -> Result<(), String> {
        let Frame::Message(message) = decode_frame(frame).map_err(|e| e.to_string())? else {
            return Ok(());
        };
        match message {
            Message::Commit(event) => {
                let repo = self.entry(event.repo.as_str());
                repo.add_blocks(&event.blocks)?;
                repo.set_head(event.commit, &event.rev)?;
                for op in &event.ops {
                    let collection = op.path().split('/').next().unwrap_or_default();
                    match op {
                        RepoOp::Create { .. } => {
                            *repo.collections.entry(collection.to_owned()).or_default() += 1;
                        }
                        RepoOp::Delete { .. } => {
                            if let Some(count) = repo.collections.get_mut(collection) {
                                *count = count.saturating_sub(1);
                                if *count == 0 {
                                    repo.collections.remove(collection);
                                }
                            }
                        }
                        RepoOp::Update { .. } => {}
                    }
                }
                prune(repo)?;
            }
            Message::Sync(event) => {
                let repo = self.entry(event.did.as_str());
                let root = repo
                    .add_blocks(&event.blocks)?
                    .ok_or("a #sync CAR without a root")?;
                repo.set_head(root, &event.rev)?;
            }
            Message::Account(event) => {
                let repo = self.entry(event.did.as_str());
                repo.active = event.active;
                repo.status = event.status;
            }
            Message::Identity(_) | Message::Info(_) | Message::Unknown { .. } => {}
        }
        Ok(())
    }

    fn entry(&mut self, did: &str) -> &mut RepoState {
        self.by_did
            .entry(did.to_owned())
            .or_insert_with(RepoState::new)
    }

    /// The repo if it can be served: it has a commit and its account is active.
    pub(crate) fn available(&self, did: &str) -> Result<(&RepoState, &Head), Unavailable> {
        let repo = self.by_did.get(did).ok_or(Unavailable::NotFound)?;
        let head = repo.head.as_ref().ok_or(Unavailable::NotFound)?;
        if !repo.active {
            return Err(Unavailable::Inactive(
                repo.status.clone().unwrap_or_else(|| "deactivated".into()),
            ));
        }
        Ok((repo, head))
    }

    /// The repo as a CAR: the commit (the root), then the MST in pre-order with each record after the
    /// node that points to it.
    pub(crate) fn export_car(&self, did: &str) -> Result<Vec<u8>, Unavailable> {
        let (repo, head) = self.available(did)?;
        let broken = |e: String| Unavailable::Broken(e);
        let get = |cid: &Cid| {
            repo.blocks
                .get(cid)
                .ok_or_else(|| Unavailable::Broken(format!("block {cid} is missing")))
        };
        let mut writer =
            CarWriter::new(Vec::new(), &[head.commit]).map_err(|e| broken(e.to_string()))?;
        writer
            .write_block(&head.commit, get(&head.commit)?)
            .map_err(|e| broken(e.to_string()))?;
        enum Next {
            Node(Cid),
            Record(Cid),
        }
        let mut pending = vec![Next::Node(head.data)];
        let mut written = HashSet::new();
        while let Some(next) = pending.pop() {
            match next {
                Next::Node(cid) => {
                    let bytes = get(&cid)?;
                    let node = NodeData::decode(&cid, bytes).map_err(|e| broken(e.to_string()))?;
                    writer
                        .write_block(&cid, bytes)
                        .map_err(|e| broken(e.to_string()))?;
                    let mut children = Vec::new();
                    children.extend(node.left.map(Next::Node));
                    for entry in node.entries {
                        children.push(Next::Record(entry.value));
                        children.extend(entry.right.map(Next::Node));
                    }
                    pending.extend(children.into_iter().rev());
                }
                Next::Record(cid) => {
                    // Identical records share a block; a CAR lists it once.
                    if written.insert(cid) {
                        writer
                            .write_block(&cid, get(&cid)?)
                            .map_err(|e| broken(e.to_string()))?;
                    }
                }
            }
        }
        writer.finish().map_err(|e| broken(e.to_string()))
    }
}

/// Drops blocks unreachable from the head once the count has doubled since the last time.
fn prune(repo: &mut RepoState) -> Result<(), String> {
    if repo.blocks.len() <= 2 * repo.live + 64 {
        return Ok(());
    }
    let Some(Head { commit, data, .. }) = repo.head else {
        return Ok(());
    };
    let mut keep = HashSet::new();
    keep.insert(commit);
    let mut recorder = RecordingSource::new(&mut repo.blocks);
    let mut records = Vec::new();
    for item in mst::walk(data, &mut recorder) {
        match item.map_err(|e| e.to_string())? {
            WalkItem::Record { cid, .. } => records.push(cid),
            // Keep what there is; getRepo reports the gap.
            WalkItem::MissingNode(_) => {}
        }
    }
    keep.extend(recorder.requested);
    keep.extend(records);
    repo.blocks.retain(&keep);
    repo.live = repo.blocks.len();
    Ok(())
}
