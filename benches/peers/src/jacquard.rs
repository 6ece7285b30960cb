//! jacquard-repo 0.12.2 (with jacquard-api's `subscribeRepos` types).
//!
//! Decode: `SubscribeReposMessage::decode_framed` (header with ciborium, body with
//! serde_ipld_dagcbor into the generated lexicon types).
//!
//! Verify a `#commit`: `jacquard_repo::commit::firehose::validate_v1_1`, the crate's sync 1.1
//! ("inductive") check: parse the CAR slice (iroh-car; block hashes are not checked), load and decode
//! the commit block, check its DID against the message, verify the signature with the repo's key,
//! then undo every op on the partial MST (`Mst::invert_op`) and compare the resulting root with
//! `prevData`. A repo's first commit (no `since`, no `prevData`) goes through the crate's
//! non-inductive `validate_v1_0` against an empty tree instead. The harness adds what the crate leaves to its caller: rev order and the `prevData`
//! chain per repo. A `#sync` is checked the same way the crate checks a commit block (CAR parse,
//! decode, DID, signature) and resets the repo's chain.

use crate::{check_chain, Held, Keys, Peer, Tally};
use jacquard_api::com_atproto::sync::subscribe_repos::SubscribeReposMessage;
use jacquard_common::types::crypto::PublicKey;
use jacquard_repo::car::parse_car_bytes;
use jacquard_repo::commit::firehose::{validate_v1_0, validate_v1_1};
use jacquard_repo::commit::Commit;
use jacquard_repo::MemoryBlockStore;
use smol_str::SmolStr;
use std::collections::HashMap;
use std::sync::Arc;

type Message = SubscribeReposMessage<SmolStr>;

pub struct Jacquard;

impl Peer for Jacquard {
    const NAME: &'static str = "jacquard-repo";
    const VERSION: &'static str = "0.12.2";
    const DECODE_STEPS: &'static str =
        "SubscribeReposMessage::decode_framed (ciborium header, serde_ipld_dagcbor body into jacquard-api types)";
    const VERIFY_STEPS: &'static str = "decode_framed; validate_v1_1: CAR parse (iroh-car, no block hash check), commit decode, DID match, signature (k256/p256 RustCrypto), MST inversion of every op (Mst::invert_op) == prevData (a repo's first commit, with no since and no prevData: validate_v1_0 against an empty tree); harness: rev order + prevData chain per repo; #sync: CAR parse, commit decode, DID, signature, chain reset";

    fn decode_all(&self, frames: &[&[u8]]) -> Tally {
        let mut tally = Tally::default();
        for frame in frames {
            tally.frames += 1;
            match Message::decode_framed(frame) {
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
        // Keys parsed into the crate's type once, as a consumer's key cache would hold them.
        let mut parsed: HashMap<&str, PublicKey<'static>> = HashMap::new();
        for (did, did_key) in keys {
            if let Some(Ok(key)) = did_key.strip_prefix("did:key:").map(PublicKey::decode) {
                parsed.insert(did.as_str(), key);
            }
        }
        let mut held: HashMap<String, Held> = HashMap::new();
        runtime.block_on(async {
            for frame in frames {
                tally.frames += 1;
                let message = match Message::decode_framed(frame) {
                    Ok(m) => m,
                    Err(e) => {
                        tally.reject(|| format!("decode: {e}"));
                        continue;
                    }
                };
                match message {
                    Message::Commit(commit) => {
                        tally.commits += 1;
                        let did = commit.repo.as_str();
                        let Some(key) = parsed.get(did) else {
                            tally.reject(|| format!("{did}: no key"));
                            continue;
                        };
                        let prev_data = commit.prev_data.as_ref().and_then(|c| c.to_ipld().ok());
                        if let Err(e) = check_chain(held.get(did), commit.rev.as_str(), prev_data) {
                            tally.reject(|| format!("{did}: {e}"));
                            continue;
                        }
                        // A repo's first commit (no `since`, no `prevData`) has no previous tree
                        // to invert to: the crate's non-inductive check against an empty tree.
                        let result = if prev_data.is_none() && commit.since.is_none() {
                            let empty = Arc::new(MemoryBlockStore::new());
                            validate_v1_0(&commit, None, empty, key).await
                        } else {
                            validate_v1_1(&commit, key).await
                        };
                        match result {
                            Ok(data) => {
                                tally.verified += 1;
                                let state = held.entry(did.to_owned()).or_default();
                                state.rev = commit.rev.as_str().to_owned();
                                state.data = Some(data);
                            }
                            Err(e) => tally.reject(|| format!("{did} commit: {e}")),
                        }
                    }
                    Message::Sync(sync) => {
                        let did = sync.did.as_str();
                        let Some(key) = parsed.get(did) else {
                            tally.reject(|| format!("{did}: no key"));
                            continue;
                        };
                        let checked = async {
                            let car = parse_car_bytes(&sync.blocks)
                                .await
                                .map_err(|e| e.to_string())?;
                            let bytes = car.blocks.get(&car.root).ok_or("no commit block")?;
                            let commit =
                                Commit::<SmolStr>::from_cbor(bytes).map_err(|e| e.to_string())?;
                            if commit.did().as_str() != did {
                                return Err("DID mismatch".to_string());
                            }
                            commit.verify(key).map_err(|e| e.to_string())?;
                            Ok::<_, String>(*commit.data())
                        };
                        match checked.await {
                            Ok(data) => {
                                let state = held.entry(did.to_owned()).or_default();
                                state.rev = sync.rev.to_string();
                                state.data = Some(data);
                            }
                            Err(e) => tally.reject(|| format!("{did} sync: {e}")),
                        }
                    }
                    _ => {}
                }
            }
        });
        tally
    }
}
