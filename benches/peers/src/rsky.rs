//! rsky-repo 0.1.4 (with rsky-lexicon 0.12.1's `subscribeRepos` types).
//!
//! rsky-repo has no firehose frame decoder and no sync 1.1 verification function. Decode: the frame
//! header, then serde_ipld_dagcbor (the CBOR library rsky-repo uses) into rsky-lexicon's
//! `SubscribeRepos*` structs, as rsky's own firehose consumers do.
//!
//! Verify a `#commit` with rsky-repo's own building blocks: `car::read_car_with_root` (iroh-car; block
//! hashes are not checked), `sync::consumer::verify_repo_root` (loads and decodes the commit, checks
//! its DID, verifies the signature through rsky-crypto with the `did:key`), then the sync 1.1
//! inversion composed from rsky-repo's `MST` operations (as rsky-repo's own tests invert a commit):
//! for each op in reverse, check the key's current value and undo it (`delete` / `update` / `add`),
//! then compare `get_pointer()` with `prevData`. The harness adds: commit CID is the CAR root, record
//! blocks of creates/updates are present, rev order and the `prevData` chain per repo. A `#sync`:
//! CAR parse + `verify_repo_root`, and the chain is reset.

use crate::{check_chain, Held, Keys, Peer, Tally};
use rsky_lexicon::com::atproto::sync::{
    SubscribeReposAccount, SubscribeReposCommit, SubscribeReposIdentity, SubscribeReposSync,
};
use rsky_repo::car::read_car_with_root;
use rsky_repo::storage::memory_blockstore::MemoryBlockstore;
use rsky_repo::storage::types::RepoStorage;
use rsky_repo::sync::consumer::verify_repo_root;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::RwLock;

/// A frame's header.
#[derive(serde::Deserialize)]
pub struct Header {
    #[allow(dead_code)]
    pub op: i64,
    pub t: Option<String>,
}

pub enum Message {
    Commit(Box<SubscribeReposCommit>),
    Sync(SubscribeReposSync),
    #[allow(dead_code)]
    Identity(SubscribeReposIdentity),
    #[allow(dead_code)]
    Account(SubscribeReposAccount),
    Other,
}

pub fn decode(frame: &[u8]) -> Result<Message, String> {
    let mut cursor = std::io::Cursor::new(frame);
    let header: Header =
        serde_ipld_dagcbor::de::from_reader_once(&mut cursor).map_err(|e| e.to_string())?;
    let body = &frame[cursor.position() as usize..];
    let e = |e: serde_ipld_dagcbor::DecodeError<std::convert::Infallible>| e.to_string();
    Ok(match header.t.as_deref() {
        Some("#commit") => {
            Message::Commit(Box::new(serde_ipld_dagcbor::from_slice(body).map_err(e)?))
        }
        Some("#sync") => Message::Sync(serde_ipld_dagcbor::from_slice(body).map_err(e)?),
        Some("#identity") => Message::Identity(serde_ipld_dagcbor::from_slice(body).map_err(e)?),
        Some("#account") => Message::Account(serde_ipld_dagcbor::from_slice(body).map_err(e)?),
        _ => Message::Other,
    })
}

pub struct Rsky;

async fn verify_commit(
    commit: SubscribeReposCommit,
    did_key: &String,
    held: Option<&Held>,
) -> anyhow::Result<Held> {
    // A repo's first commit (no `since`, no `prevData`) has no previous tree to invert to.
    let first = commit.prev_data.is_none() && commit.since.is_none();
    check_chain(held, &commit.rev, commit.prev_data).map_err(anyhow::Error::msg)?;
    let prev_data = match commit.prev_data {
        Some(p) => Some(p),
        None if first => None,
        None => anyhow::bail!("no prevData"),
    };
    let car = read_car_with_root(commit.blocks).await?;
    if car.root != commit.commit {
        anyhow::bail!("the CAR root is not the commit");
    }
    for op in &commit.ops {
        if op.action == "create" || op.action == "update" {
            let cid = op
                .cid
                .ok_or_else(|| anyhow::anyhow!("{}: no cid", op.path))?;
            if !car.blocks.has(cid) {
                anyhow::bail!("record block {cid} missing");
            }
        }
    }
    let storage: Arc<RwLock<dyn RepoStorage>> =
        Arc::new(RwLock::new(MemoryBlockstore::new(Some(car.blocks)).await?));
    let repo = verify_repo_root(storage, commit.commit, Some(&commit.repo), Some(did_key)).await?;
    if repo.commit.rev != commit.rev {
        anyhow::bail!("rev mismatch");
    }
    let data = repo.commit.data;
    let Some(prev_data) = prev_data else {
        return Ok(Held {
            rev: commit.rev,
            data: Some(data),
        });
    };
    let mut mst = repo.data;
    for op in commit.ops.iter().rev() {
        let current = mst.get(&op.path).await?;
        mst = match op.action.as_str() {
            "create" => {
                if current != op.cid {
                    anyhow::bail!("create {}: tree has {current:?}", op.path);
                }
                mst.delete(&op.path).await?
            }
            "update" => {
                let prev = op
                    .prev
                    .ok_or_else(|| anyhow::anyhow!("update without prev"))?;
                if current != op.cid {
                    anyhow::bail!("update {}: tree has {current:?}", op.path);
                }
                mst.update(&op.path, prev).await?
            }
            "delete" => {
                let prev = op
                    .prev
                    .ok_or_else(|| anyhow::anyhow!("delete without prev"))?;
                if current.is_some() {
                    anyhow::bail!("delete {}: still in the tree", op.path);
                }
                mst.add(&op.path, prev, None).await?
            }
            other => anyhow::bail!("unknown action {other}"),
        };
    }
    let root = mst.get_pointer().await?;
    if root != prev_data {
        anyhow::bail!("inversion gives {root}, prevData is {prev_data}");
    }
    Ok(Held {
        rev: commit.rev,
        data: Some(data),
    })
}

async fn verify_sync(sync: SubscribeReposSync, did_key: &String) -> anyhow::Result<Held> {
    let car = read_car_with_root(sync.blocks).await?;
    let storage: Arc<RwLock<dyn RepoStorage>> =
        Arc::new(RwLock::new(MemoryBlockstore::new(Some(car.blocks)).await?));
    let repo = verify_repo_root(storage, car.root, Some(&sync.did), Some(did_key)).await?;
    Ok(Held {
        rev: sync.rev,
        data: Some(repo.commit.data),
    })
}

impl Peer for Rsky {
    const NAME: &'static str = "rsky-repo";
    const VERSION: &'static str = "0.1.4";
    const DECODE_STEPS: &'static str =
        "header + serde_ipld_dagcbor body into rsky-lexicon SubscribeRepos* structs (rsky-repo has no frame decoder)";
    const VERIFY_STEPS: &'static str = "decode; car::read_car_with_root (iroh-car, no block hash check); sync::consumer::verify_repo_root: commit decode, DID match, signature (rsky-crypto, secp256k1 C library, did:key parsed per call); sync 1.1 inversion composed from rsky-repo MST get/delete/update/add + get_pointer == prevData (rsky-repo has no inversion function; skipped for a repo's first commit with no since and no prevData); harness: CAR root == commit, record blocks present, rev order + prevData chain per repo; #sync: CAR parse, verify_repo_root, chain reset";

    fn decode_all(&self, frames: &[&[u8]]) -> Tally {
        let mut tally = Tally::default();
        for frame in frames {
            tally.frames += 1;
            match decode(frame) {
                Ok(Message::Commit(_)) => tally.commits += 1,
                Ok(_) => {}
                Err(e) => tally.reject(|| format!("decode: {e}")),
            }
        }
        tally
    }

    fn verify_all(&self, frames: &[&[u8]], keys: &Keys) -> Tally {
        let mut tally = Tally::default();
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
            tally.reject(|| "no tokio runtime".into());
            return tally;
        };
        let mut held: HashMap<String, Held> = HashMap::new();
        runtime.block_on(async {
            for frame in frames {
                tally.frames += 1;
                match decode(frame) {
                    Err(e) => tally.reject(|| format!("decode: {e}")),
                    Ok(Message::Commit(commit)) => {
                        tally.commits += 1;
                        let did = commit.repo.clone();
                        let Some(did_key) = keys.get(&did) else {
                            tally.reject(|| format!("{did}: no key"));
                            continue;
                        };
                        match verify_commit(*commit, did_key, held.get(&did)).await {
                            Ok(state) => {
                                tally.verified += 1;
                                held.insert(did, state);
                            }
                            Err(e) => tally.reject(|| format!("{did} commit: {e:#}")),
                        }
                    }
                    Ok(Message::Sync(sync)) => {
                        let did = sync.did.clone();
                        let Some(did_key) = keys.get(&did) else {
                            tally.reject(|| format!("{did}: no key"));
                            continue;
                        };
                        match verify_sync(sync, did_key).await {
                            Ok(state) => {
                                held.insert(did, state);
                            }
                            Err(e) => tally.reject(|| format!("{did} sync: {e:#}")),
                        }
                    }
                    Ok(_) => {}
                }
            }
        });
        tally
    }
}
