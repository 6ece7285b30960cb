//! Whole signed repos, written as CAR files in the stream-friendly order.

use crate::records::{fake_did, record, RecordKind};
use crate::rng::Rng;
use butterfly_crypto::{Algorithm, PrivateKey, PublicKey};
use butterfly_data::{cid_for_cbor, Cid};
use butterfly_repo::car::CarWriter;
use butterfly_repo::commit::UnsignedCommit;
use butterfly_repo::mst::{Mst, NodeData};
use butterfly_repo::BlockMap;
use butterfly_syntax::{Did, Tid};
use std::io::Write;

/// 2024-01-01T00:00:00Z: where simulated histories start.
const EPOCH_MICROS: u64 = 1_704_067_200_000_000;
/// Records are this far apart on average (with jitter below it, so TIDs stay increasing).
const STEP_MICROS: u64 = 1_000_000;

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepoSpec {
    /// Number of records, the profile included.
    pub records: u64,
    /// Seed for everything: DID, key, record contents and timestamps.
    pub seed: u64,
}

/// What was generated.
#[derive(Clone, Debug)]
pub struct GeneratedRepo {
    /// The repo's (synthetic) DID.
    pub did: Did,
    /// Its signing key (derived from the seed; not a secret).
    pub key: PrivateKey,
    /// CID of the signed commit, the CAR's root.
    pub commit: Cid,
    /// The commit's revision.
    pub rev: Tid,
    /// The MST root.
    pub data: Cid,
    /// Records written.
    pub n_records: u64,
    /// Blocks written: commit, MST nodes and records.
    pub n_blocks: u64,
}

impl GeneratedRepo {
    /// A DID document for the repo, as a PLC directory would serve it, so that the CAR can be checked
    /// offline (`butterfly car inspect --did-doc`).
    pub fn did_document_json(&self) -> String {
        let handle = format!("sim-{}.test", &self.did.as_str()[8..16]);
        did_document_json(
            &self.did,
            &handle,
            self.key.public_key(),
            "https://pds.invalid",
        )
    }
}

/// A DID document as a PLC directory serves it: one `Multikey` verification method, `@context`
/// naming the key's curve suite, one PDS service.
pub(crate) fn did_document_json(did: &Did, handle: &str, key: &PublicKey, pds: &str) -> String {
    let suite = match key.algorithm() {
        Algorithm::K256 => "secp256k1-2019",
        Algorithm::P256 => "ecdsa-2019",
    };
    format!(
        r##"{{"@context":["https://www.w3.org/ns/did/v1","https://w3id.org/security/multikey/v1","https://w3id.org/security/suites/{suite}/v1"],"id":"{did}","alsoKnownAs":["at://{handle}"],"verificationMethod":[{{"id":"{did}#atproto","type":"Multikey","controller":"{did}","publicKeyMultibase":"{key}"}}],"service":[{{"id":"#atproto_pds","type":"AtprotoPersonalDataServer","serviceEndpoint":"{pds}"}}]}}"##,
        key = key.to_multikey(),
    )
}

/// A signing key on `algorithm`, drawing 32 bytes from `rng` until they make a valid scalar.
pub(crate) fn new_key(rng: &mut Rng, algorithm: Algorithm) -> PrivateKey {
    loop {
        if let Ok(key) = PrivateKey::from_bytes(algorithm, &rng.bytes::<32>()) {
            return key;
        }
    }
}

/// A synthetic `did:plc`, registered nowhere.
pub(crate) fn new_did(rng: &mut Rng) -> Did {
    #[allow(clippy::expect_used)]
    Did::parse(&fake_did(rng)).expect("24 base32 characters make a did:plc")
}

/// Why a repo could not be generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Writing the CAR failed.
    #[error(transparent)]
    Car(#[from] butterfly_repo::car::Error),
    /// Building the MST failed (a bug: generated keys are valid and unique).
    #[error(transparent)]
    Mst(#[from] butterfly_repo::mst::Error),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Io(#[source] std::io::Error),
    /// A commit's proof could not be built (a bug: the generator's own ops contradict its tree).
    #[error(transparent)]
    Proof(#[from] butterfly_repo::proof::Error),
    /// The generator broke one of its own invariants (a bug, reported rather than panicking).
    #[error("simulator bug: {0}")]
    Bug(&'static str),
}

/// The kind, key and timestamp of record `index`.
fn record_slot(seed: u64, clock_id: u16, index: u64) -> (RecordKind, String, u64) {
    let mut rng = Rng::for_item(seed, 1, index);
    let micros = EPOCH_MICROS + index * STEP_MICROS + rng.below(STEP_MICROS);
    if index == 0 {
        return (
            RecordKind::Profile,
            "app.bsky.actor.profile/self".into(),
            micros,
        );
    }
    let kind = RecordKind::pick_created(&mut rng);
    let tid = Tid::from_parts(micros, clock_id);
    (kind, format!("{}/{tid}", kind.collection()), micros)
}

fn record_bytes(seed: u64, clock_id: u16, index: u64) -> (String, Vec<u8>) {
    let (kind, key, micros) = record_slot(seed, clock_id, index);
    let mut rng = Rng::for_item(seed, 2, index);
    (key, record(kind, &mut rng, micros).to_cbor())
}

/// Writes a signed repo of `spec.records` records to `out` as a CAR: the commit, then the MST in
/// pre-order with each record right after the node that points to it, the order that lets a reader
/// check a repo as it streams.
pub fn generate_repo<W: Write>(spec: &RepoSpec, out: W) -> Result<GeneratedRepo, Error> {
    let mut rng = Rng::new(spec.seed);
    let key = new_key(&mut rng, Algorithm::K256);
    let did = new_did(&mut rng);
    let clock_id = rng.below(1024) as u16;

    // Keys and CIDs only; record bytes are regenerated while writing.
    let mut entries: Vec<(String, Cid, u64)> = (0..spec.records)
        .map(|index| {
            let (key, bytes) = record_bytes(spec.seed, clock_id, index);
            (key, cid_for_cbor(&bytes), index)
        })
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut tree = Mst::from_sorted(entries.iter().map(|(key, cid, _)| (key.clone(), *cid)))?;
    let (data, node_blocks) = tree.new_blocks();
    drop(tree);
    let mut nodes = BlockMap::new();
    nodes.extend(node_blocks);

    let last_micros = EPOCH_MICROS + spec.records * STEP_MICROS;
    let rev = Tid::from_parts(last_micros, clock_id);
    let (commit, commit_bytes) = UnsignedCommit {
        did: did.clone(),
        data,
        rev: rev.clone(),
        prev: None,
    }
    .sign(&key);

    let mut writer = CarWriter::new(std::io::BufWriter::with_capacity(1 << 20, out), &[commit])?;
    writer.write_block(&commit, &commit_bytes)?;
    let mut n_blocks = 1;
    // Pre-order: a node, then for each gap and entry in order, the subtree or the record.
    enum Next {
        Node(Cid),
        Record(String),
    }
    let mut pending = vec![Next::Node(data)];
    while let Some(next) = pending.pop() {
        match next {
            Next::Node(cid) => {
                // Every node of the tree was just built, so a miss is a bug worth an error, not a skip.
                let bytes = nodes
                    .get(&cid)
                    .ok_or(butterfly_repo::mst::Error::MissingBlock(cid))?;
                writer.write_block(&cid, bytes)?;
                n_blocks += 1;
                let node = NodeData::decode(&cid, bytes)?;
                let mut children = Vec::new();
                children.extend(node.left.map(Next::Node));
                for entry in node.entries {
                    children.push(Next::Record(entry.key));
                    children.extend(entry.right.map(Next::Node));
                }
                pending.extend(children.into_iter().rev());
            }
            Next::Record(key) => {
                let position = entries
                    .binary_search_by(|e| e.0.as_str().cmp(&key))
                    .map_err(|_| butterfly_repo::mst::Error::InvalidKey(key.clone()))?;
                let (_, cid, index) = &entries[position];
                let (_, bytes) = record_bytes(spec.seed, clock_id, *index);
                writer.write_block(cid, &bytes)?;
                n_blocks += 1;
            }
        }
    }
    writer.finish()?;
    Ok(GeneratedRepo {
        did,
        key,
        commit,
        rev,
        data,
        n_records: spec.records,
        n_blocks,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use butterfly_repo::car::CarReader;
    use butterfly_repo::commit::Commit;
    use butterfly_repo::mst::{walk, WalkItem};

    #[test]
    fn same_seed_same_bytes_and_the_repo_verifies() {
        let spec = RepoSpec {
            records: 500,
            seed: 42,
        };
        let (mut first, mut second) = (Vec::new(), Vec::new());
        let repo = generate_repo(&spec, &mut first).unwrap();
        generate_repo(&spec, &mut second).unwrap();
        assert_eq!(first, second);
        let mut other_seed = Vec::new();
        generate_repo(&RepoSpec { seed: 43, ..spec }, &mut other_seed).unwrap();
        assert_ne!(first, other_seed);

        let (header, blocks) =
            BlockMap::from_car(CarReader::new(first.as_slice()).unwrap()).unwrap();
        assert_eq!(header.roots, vec![repo.commit]);
        let commit = Commit::decode(&repo.commit, blocks.get(&repo.commit).unwrap()).unwrap();
        commit.verify_signature(repo.key.public_key()).unwrap();
        let mut lookup = blocks.clone();
        let keys: Vec<String> = walk(commit.data, &mut lookup)
            .map(|item| match item.unwrap() {
                WalkItem::Record { key, cid } => {
                    assert!(blocks.contains(&cid));
                    key
                }
                WalkItem::MissingNode(cid) => panic!("missing {cid}"),
            })
            .collect();
        assert_eq!(keys.len(), 500);
        assert!(keys.contains(&"app.bsky.actor.profile/self".to_string()));
        assert_eq!(repo.n_blocks as usize, blocks.len());
    }
}
