//! A deterministic firehose: validly signed sync 1.1 traffic from many simulated repos, written as a
//! frame log.
//!
//! Every repo starts empty. Each `#commit` edits the repo's MST, signs a version 3 commit and carries a
//! CAR slice holding the commit, every new MST node, the new records and the nodes needed to undo the
//! operations, so [`butterfly_repo::proof::invert_ops`] over the slice alone gives back `prevData`.
//! A consumer that keeps every slice of a repo holds the whole repo.
//!
//! # Choices
//! - **The first commit of a repo** has `since: null` and `prevData` set to the empty tree's root (the
//!   CID of `{l: null, e: []}`), not null. The sync spec defines `prevData` as the previous commit's
//!   `data`, and a brand-new repo has none; but inverting the first commit's creates on its slice gives
//!   exactly the empty root, so emitting it lets a consumer check every commit with no special case,
//!   while `since: null` still says the repo is new.
//! - **Time** comes from a simulated clock that starts at [`BASE_TIME_MICROS`] and advances 1 to 4 ms
//!   per event; revisions and record keys are TIDs of that clock, so they increase per repo.
//! - **Other messages** come at low rates ([`EventMix`]): `#identity` repeating the current handle,
//!   `#account` deactivating an account (no commits while it is inactive; it is reactivated the next
//!   time it is picked), and `#sync` re-declaring a repo's current commit.
//!
//! Cost: each repo keeps its MST nodes (not its records) and drops unreachable ones whenever their
//! count doubles, so memory follows the live repos, not the history (about 2.5 KiB a repo). Signing
//! dominates the time; it runs on a second thread (`PrivateKey::sign` uses libsecp256k1 for K-256).
//! The output never depends on the thread count.

use crate::records::{format_datetime, record, RecordKind};
use crate::repo::{did_document_json, new_did, new_key, Error};
use crate::rng::Rng;
use butterfly_crypto::{Algorithm, PrivateKey, PublicKey};
use butterfly_data::{cid_for_cbor, Cid};
use butterfly_firehose::message::{
    encode_frame, AccountEvent, CommitEvent, Frame, IdentityEvent, Message, SyncEvent,
};
use butterfly_firehose::FrameLogWriter;
use butterfly_repo::car::write_car_to_vec;
use butterfly_repo::commit::UnsignedCommit;
use butterfly_repo::mst::{self, walk, Mst, NodeData};
use butterfly_repo::proof::{invert_ops, Inversion, RepoOp};
use butterfly_repo::{BlockMap, RecordingSource};
use butterfly_syntax::{Did, Handle, Tid};
use std::collections::HashSet;
use std::io::Write;

/// 2026-01-01T00:00:00Z: where the simulated clock starts.
pub const BASE_TIME_MICROS: u64 = 1_767_225_600_000_000;

/// The PDS endpoint written into generated DID documents. It names no real host (`.invalid`);
/// a simulated network serving the traffic replaces it with its own URL.
pub const PDS_PLACEHOLDER: &str = "https://pds.sim.invalid";

/// How often each kind of non-commit message appears, in events per thousand. Commits fill the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventMix {
    /// `#identity` with the current handle.
    pub identity_per_mille: u32,
    /// `#account`: a deactivation (or a reactivation, if the account picked is inactive).
    pub account_per_mille: u32,
    /// `#sync` re-declaring a repo's current commit.
    pub sync_per_mille: u32,
}

/// Rates in the range the live network shows: almost everything is a commit.
impl Default for EventMix {
    fn default() -> Self {
        EventMix {
            identity_per_mille: 5,
            account_per_mille: 3,
            sync_per_mille: 2,
        }
    }
}

/// What traffic to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirehoseSpec {
    /// Number of repos (all get a DID document; those never picked stay empty and silent). With
    /// none, nothing is written.
    pub repos: u64,
    /// Number of events; `seq` runs from 1 to this.
    pub events: u64,
    /// Seed for everything: DIDs, keys, choices, records.
    pub seed: u64,
    /// Rates of non-commit messages.
    pub mix: EventMix,
}

/// One simulated account: what its DID document says, and its signing key.
#[derive(Clone, Debug)]
pub struct SimIdentity {
    /// The (synthetic) `did:plc`.
    pub did: Did,
    /// Its handle, `user{index}.sim.test`.
    pub handle: Handle,
    /// The public half of the repo signing key, as the DID document lists it.
    pub public_key: PublicKey,
    key: PrivateKey,
}

impl SimIdentity {
    /// The repo signing key (derived from the seed; not a secret), to sign more commits for this repo.
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// The DID document as a PLC directory serves it (Multikey form), with the PDS endpoint set to
    /// [`PDS_PLACEHOLDER`].
    pub fn did_document_json(&self) -> String {
        did_document_json(
            &self.did,
            self.handle.as_str(),
            &self.public_key,
            PDS_PLACEHOLDER,
        )
    }
}

/// Writes the DID documents of `identities` as one JSON array, a document per line.
pub fn identities_json(identities: &[SimIdentity]) -> String {
    let mut out = String::from("[\n");
    for (i, identity) in identities.iter().enumerate() {
        if i > 0 {
            out.push_str(",\n");
        }
        out.push_str(&identity.did_document_json());
    }
    out.push_str("\n]\n");
    out
}

/// Counts of what was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FirehoseSummary {
    /// Repos simulated (all have DID documents).
    pub repos: u64,
    /// Repos that made at least one commit.
    pub repos_with_commits: u64,
    /// Frames written (= events).
    pub events: u64,
    /// `#commit` frames.
    pub commits: u64,
    /// `#sync` frames.
    pub syncs: u64,
    /// `#identity` frames.
    pub identities: u64,
    /// `#account` frames.
    pub accounts: u64,
    /// Record operations over all commits.
    pub ops: u64,
    /// Bytes of the frame log, length prefixes included.
    pub bytes: u64,
}

/// What was generated: the accounts (for DID documents), the counts, and every repo's final state.
#[derive(Clone, Debug)]
pub struct GeneratedFirehose {
    /// Every account, in index order.
    pub identities: Vec<SimIdentity>,
    /// What was written.
    pub summary: FirehoseSummary,
    /// Every repo after the last event, in index order: what a consumer that applied the whole
    /// log should hold.
    pub expected: Vec<ExpectedRepo>,
}

/// One repo's state after the last event: the ground truth a sync engine's output is checked
/// against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedRepo {
    /// The repo's DID.
    pub did: Did,
    /// Whether the account is active, as the last `#account` message about it said (active when
    /// there was none).
    pub active: bool,
    /// The latest commit's revision; `None` for a repo that never committed.
    pub rev: Option<Tid>,
    /// The MST root of the latest commit; the empty tree's root for a repo that never committed.
    pub data: Cid,
    /// Every record, sorted by collection, then record key.
    pub records: Vec<ExpectedRecord>,
}

/// One record of an [`ExpectedRepo`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExpectedRecord {
    /// The collection NSID, such as `app.bsky.feed.post`.
    pub collection: String,
    /// The record key.
    pub rkey: String,
    /// The CID of the record block.
    pub cid: Cid,
}

/// Writes `repos` as JSON lines sorted by DID, one repo a line:
/// `{"did":..,"active":..,"rev":..,"data":..,"records":[[collection,rkey,cid],...]}`, with `rev`
/// null for a repo that never committed and records in the order of [`ExpectedRepo::records`].
pub fn write_expected_state<W: Write>(repos: &[ExpectedRepo], out: W) -> std::io::Result<()> {
    let mut sorted: Vec<&ExpectedRepo> = repos.iter().collect();
    sorted.sort_by(|a, b| a.did.cmp(&b.did));
    let mut out = std::io::BufWriter::new(out);
    for repo in sorted {
        let records: Vec<serde_json::Value> = repo
            .records
            .iter()
            .map(|r| serde_json::json!([r.collection, r.rkey, r.cid.to_string()]))
            .collect();
        let line = serde_json::json!({
            "did": repo.did.as_str(),
            "active": repo.active,
            "rev": repo.rev.as_ref().map(Tid::as_str),
            "data": repo.data.to_string(),
            "records": records,
        });
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// A repo's state between commits: its MST nodes, head and records (kind and key timestamp, enough to
/// rebuild a path for a delete).
struct RepoState {
    clock_id: u16,
    nodes: BlockMap,
    /// Node count after the last clean-up; the next one happens when the map doubles.
    live_nodes: usize,
    data: Cid,
    /// The latest commit's revision; `None` until the first commit (which creates the profile).
    rev: Option<Tid>,
    /// Every record but the profile, which is never deleted.
    records: Vec<(RecordKind, u64)>,
    /// Whether the account is served, as `#account` last said.
    active: bool,
}

fn record_path(kind: RecordKind, micros: u64, clock_id: u16) -> String {
    format!(
        "{}/{}",
        kind.collection(),
        Tid::from_parts(micros, clock_id)
    )
}

/// Derives account `index`: its DID, handle, key (5% P-256, the rest K-256) and TID clock id.
fn make_identity(seed: u64, index: u64) -> (SimIdentity, u16) {
    let mut rng = Rng::for_item(seed, 3, index);
    let algorithm = if rng.chance(5) {
        Algorithm::P256
    } else {
        Algorithm::K256
    };
    let key = new_key(&mut rng, algorithm);
    let did = new_did(&mut rng);
    #[allow(clippy::expect_used)]
    let handle = Handle::parse(&format!("user{index}.sim.test"))
        .expect("user<digits>.sim.test is a valid handle");
    let clock_id = rng.below(1024) as u16;
    (
        SimIdentity {
            did,
            handle,
            public_key: key.public_key().clone(),
            key,
        },
        clock_id,
    )
}

/// Picks a repo, favouring low indices: half the picks are uniform, half are skewed, so a few repos
/// are busy and most are quiet, as on the live network.
fn pick_repo(rng: &mut Rng, n: u64) -> usize {
    let mut pick = rng.below(n);
    if rng.chance(50) {
        pick = rng.below(pick + 1);
        pick = rng.below(pick + 1);
    }
    pick as usize
}

/// Derives every account, on several threads when there are many (each is a pure function of the
/// seed and its index, so the result does not depend on the thread count).
fn derive_identities(seed: u64, n: u64) -> Result<Vec<(SimIdentity, u16)>, Error> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8) as u64;
    if n < 2048 || threads == 1 {
        return Ok((0..n).map(|index| make_identity(seed, index)).collect());
    }
    let chunk = n.div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let range = (t * chunk).min(n)..((t + 1) * chunk).min(n);
                scope.spawn(move || {
                    range
                        .map(|index| make_identity(seed, index))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(n as usize);
        for worker in workers {
            all.extend(
                worker
                    .join()
                    .map_err(|_| Error::Bug("a key thread panicked"))?,
            );
        }
        Ok(all)
    })
}

/// Writes `spec.events` frames of simulated traffic to `out` as a frame log.
///
/// The same spec gives the same bytes on every platform. Frames are streamed: only the repos' MST
/// nodes and latest commits stay in memory. Two threads share the work: one plans events and edits
/// the trees, the other signs commits and writes frames.
pub fn generate_firehose<W: Write + Send>(
    spec: &FirehoseSpec,
    out: W,
) -> Result<GeneratedFirehose, Error> {
    let empty = NodeData {
        left: None,
        entries: Vec::new(),
    };
    let empty_bytes = empty.encode();
    let empty_root = cid_for_cbor(&empty_bytes);
    let mut identities = Vec::with_capacity(spec.repos as usize);
    let mut repos = Vec::with_capacity(spec.repos as usize);
    for (identity, clock_id) in derive_identities(spec.seed, spec.repos)? {
        identities.push(identity);
        repos.push(RepoState {
            clock_id,
            nodes: BlockMap::new(),
            live_nodes: 0,
            data: empty_root,
            rev: None,
            records: Vec::new(),
            active: true,
        });
    }
    let mut summary = FirehoseSummary {
        repos: spec.repos,
        ..FirehoseSummary::default()
    };
    let planner = Planner {
        spec,
        identities: &identities,
        empty_bytes: &empty_bytes,
    };
    let (planned, written) = std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1024);
        let identities = &identities;
        let writer = scope.spawn(move || write_frames(receiver, identities, out));
        let planned = planner.run(&mut repos, &mut summary, sender);
        let written = writer
            .join()
            .unwrap_or(Err(Error::Bug("the writer thread panicked")));
        (planned, written)
    });
    // A failed write stops the planner too; the write error is the one to report.
    summary.bytes = written?;
    planned?;
    summary.repos_with_commits = repos.iter().filter(|r| r.rev.is_some()).count() as u64;
    let expected = identities
        .iter()
        .zip(&mut repos)
        .map(|(identity, repo)| expected_repo(identity, repo))
        .collect::<Result<_, _>>()?;
    Ok(GeneratedFirehose {
        identities,
        summary,
        expected,
    })
}

/// Reads a repo's final state off its tree. The clean-ups keep every node reachable from the
/// root, so a missing node is a bug.
fn expected_repo(identity: &SimIdentity, repo: &mut RepoState) -> Result<ExpectedRepo, Error> {
    let mut records = Vec::new();
    // A repo that never committed holds no nodes, not even the empty root.
    if repo.rev.is_some() {
        for item in walk(repo.data, &mut repo.nodes) {
            match item? {
                mst::WalkItem::Record { key, cid } => {
                    let (collection, rkey) = key
                        .split_once('/')
                        .ok_or(Error::Bug("an MST key without a '/'"))?;
                    records.push(ExpectedRecord {
                        collection: collection.to_owned(),
                        rkey: rkey.to_owned(),
                        cid,
                    });
                }
                mst::WalkItem::MissingNode(cid) => return Err(mst::Error::MissingBlock(cid).into()),
            }
        }
    }
    records.sort_unstable();
    Ok(ExpectedRepo {
        did: identity.did.clone(),
        active: repo.active,
        rev: repo.rev.clone(),
        data: repo.data,
        records,
    })
}

/// An event on its way to the writer thread, which signs commits and encodes frames.
enum Pending {
    /// A message needing nothing more.
    Ready(Box<Message>),
    /// A `#sync` of the repo's latest commit, which only the writer holds.
    Sync {
        repo: usize,
        seq: i64,
        rev: Tid,
        time: String,
    },
    /// A commit to sign.
    Commit(Box<PendingCommit>),
}

struct PendingCommit {
    repo: usize,
    seq: i64,
    unsigned: UnsignedCommit,
    since: Option<Tid>,
    ops: Vec<RepoOp>,
    prev_data: Cid,
    time: String,
    /// The slice's blocks after the commit: new nodes, records, proof nodes.
    blocks: Vec<(Cid, Vec<u8>)>,
}

/// The writer thread: signs, encodes and writes, in order. Returns the bytes written.
fn write_frames<W: Write>(
    receiver: std::sync::mpsc::Receiver<Pending>,
    identities: &[SimIdentity],
    out: W,
) -> Result<u64, Error> {
    let mut writer = FrameLogWriter::new(std::io::BufWriter::with_capacity(1 << 20, out));
    let mut heads: Vec<Option<(Cid, Vec<u8>)>> = vec![None; identities.len()];
    let mut bytes = 0u64;
    for pending in receiver {
        let message = match pending {
            Pending::Ready(message) => *message,
            Pending::Sync {
                repo,
                seq,
                rev,
                time,
            } => {
                let (commit, commit_bytes) = heads[repo]
                    .as_ref()
                    .ok_or(Error::Bug("a sync before the repo's first commit"))?;
                Message::Sync(SyncEvent {
                    seq,
                    did: identities[repo].did.clone(),
                    blocks: write_car_to_vec(&[*commit], [(commit, commit_bytes.as_slice())]),
                    rev,
                    time,
                })
            }
            Pending::Commit(pending) => {
                let PendingCommit {
                    repo,
                    seq,
                    unsigned,
                    since,
                    ops,
                    prev_data,
                    time,
                    blocks,
                } = *pending;
                let (commit, commit_bytes) = unsigned.sign(&identities[repo].key);
                let car = write_car_to_vec(
                    &[commit],
                    std::iter::once((&commit, commit_bytes.as_slice()))
                        .chain(blocks.iter().map(|(cid, data)| (cid, data.as_slice()))),
                );
                heads[repo] = Some((commit, commit_bytes));
                Message::Commit(CommitEvent {
                    seq,
                    repo: unsigned.did,
                    commit,
                    rev: unsigned.rev,
                    since,
                    blocks: car,
                    ops,
                    prev_data: Some(prev_data),
                    time,
                    too_big: false,
                    rebase: false,
                    blobs: Vec::new(),
                })
            }
        };
        let frame = encode_frame(&Frame::Message(message));
        writer.write_frame(&frame).map_err(Error::Io)?;
        bytes += 4 + frame.len() as u64;
    }
    writer.flush().map_err(Error::Io)?;
    Ok(bytes)
}

/// The planning thread: picks each event and edits the trees.
struct Planner<'a> {
    spec: &'a FirehoseSpec,
    identities: &'a [SimIdentity],
    empty_bytes: &'a [u8],
}

impl Planner<'_> {
    fn run(
        &self,
        repos: &mut [RepoState],
        summary: &mut FirehoseSummary,
        sender: std::sync::mpsc::SyncSender<Pending>,
    ) -> Result<(), Error> {
        if repos.is_empty() {
            return Ok(());
        }
        let spec = self.spec;
        let mut rng = Rng::new(spec.seed ^ 0x6669_7265_686f_7365);
        let mut now = BASE_TIME_MICROS;
        let mix = spec.mix;
        let identity_limit = mix.identity_per_mille;
        let account_limit = identity_limit + mix.account_per_mille;
        let sync_limit = account_limit + mix.sync_per_mille;
        for seq in 1..=spec.events as i64 {
            now += 1_000 + rng.below(3_000);
            let time = format_datetime(now);
            let roll = rng.below(1000) as u32;
            let index = pick_repo(&mut rng, spec.repos);
            let identity = &self.identities[index];
            let repo = &mut repos[index];
            let pending = if roll < identity_limit {
                summary.identities += 1;
                Pending::Ready(Box::new(Message::Identity(IdentityEvent {
                    seq,
                    did: identity.did.clone(),
                    time,
                    handle: Some(identity.handle.clone()),
                })))
            } else if roll < account_limit || !repo.active {
                // An inactive account picked for anything else comes back: deactivations are
                // spells.
                repo.active = !repo.active;
                let status = (!repo.active).then(|| {
                    match rng.below(100) {
                        0..=84 => "deactivated",
                        85..=94 => "takendown",
                        _ => "suspended",
                    }
                    .to_owned()
                });
                summary.accounts += 1;
                Pending::Ready(Box::new(Message::Account(AccountEvent {
                    seq,
                    did: identity.did.clone(),
                    time,
                    active: repo.active,
                    status,
                })))
            } else if let (true, Some(rev)) = (roll < sync_limit, &repo.rev) {
                summary.syncs += 1;
                Pending::Sync {
                    repo: index,
                    seq,
                    rev: rev.clone(),
                    time,
                }
            } else {
                let pending = self.commit(index, repo, &mut rng, seq, now, time)?;
                summary.commits += 1;
                summary.ops += pending.ops.len() as u64;
                Pending::Commit(Box::new(pending))
            };
            summary.events += 1;
            if sender.send(pending).is_err() {
                // The writer stopped on an error, which the caller reports.
                return Ok(());
            }
        }
        Ok(())
    }

    /// Makes one commit on `repo`: plans the operations, edits the MST and gathers the slice's
    /// blocks; the writer signs it.
    fn commit(
        &self,
        index: usize,
        repo: &mut RepoState,
        rng: &mut Rng,
        seq: i64,
        now: u64,
        time: String,
    ) -> Result<PendingCommit, Error> {
        // Plan: a new repo creates its profile and perhaps follows a few accounts; later commits mostly
        // create one record, sometimes update the profile or delete an earlier record.
        let mut planned = Vec::new();
        if repo.rev.is_none() {
            // The empty tree the first commit edits.
            repo.nodes.insert(repo.data, self.empty_bytes.to_vec());
            planned.push(PlannedOp::UpdateProfile);
            for _ in 0..rng.below(3) {
                planned.push(PlannedOp::Create(RecordKind::Follow));
            }
        } else {
            let n_ops = match rng.below(100) {
                0..=89 => 1,
                90..=96 => 2,
                _ => 3 + rng.below(3),
            };
            let mut profile_touched = false;
            let mut deleted = HashSet::new();
            for _ in 0..n_ops {
                let roll = rng.below(100);
                if roll < 8 && !profile_touched {
                    profile_touched = true;
                    planned.push(PlannedOp::UpdateProfile);
                } else if roll < 20 && repo.records.len() > deleted.len() {
                    // A record from before this commit, not already deleted by it.
                    let mut position = rng.below(repo.records.len() as u64) as usize;
                    while deleted.contains(&position) {
                        position = (position + 1) % repo.records.len();
                    }
                    deleted.insert(position);
                    let (kind, micros) = repo.records[position];
                    planned.push(PlannedOp::Delete(kind, micros));
                } else {
                    planned.push(PlannedOp::Create(RecordKind::pick_created(rng)));
                }
            }
            let mut positions: Vec<usize> = deleted.into_iter().collect();
            positions.sort_unstable_by(|a, b| b.cmp(a));
            for position in positions {
                repo.records.swap_remove(position);
            }
        }

        // Apply to the tree, collecting the ops and the record blocks.
        let mut tree = Mst::load(repo.data, &mut repo.nodes)?;
        let mut ops = Vec::with_capacity(planned.len());
        let mut record_blocks: Vec<(Cid, Vec<u8>)> = Vec::new();
        for (op_index, op) in planned.into_iter().enumerate() {
            // Keys are TIDs of the clock, a microsecond apart within a commit and below the rev.
            let key_micros = now + op_index as u64;
            match op {
                PlannedOp::Create(kind) => {
                    let path = record_path(kind, key_micros, repo.clock_id);
                    let bytes = record(kind, rng, now).to_cbor();
                    let cid = cid_for_cbor(&bytes);
                    tree.insert(&path, cid, &mut repo.nodes)?;
                    record_blocks.push((cid, bytes));
                    repo.records.push((kind, key_micros));
                    ops.push(RepoOp::Create { path, cid });
                }
                PlannedOp::UpdateProfile => {
                    let path = "app.bsky.actor.profile/self".to_owned();
                    let bytes = record(RecordKind::Profile, rng, now).to_cbor();
                    let cid = cid_for_cbor(&bytes);
                    let prev = tree.insert(&path, cid, &mut repo.nodes)?;
                    record_blocks.push((cid, bytes));
                    ops.push(match prev {
                        Some(prev) => RepoOp::Update {
                            path,
                            cid,
                            prev: Some(prev),
                        },
                        None => RepoOp::Create { path, cid },
                    });
                }
                PlannedOp::Delete(kind, micros) => {
                    let path = record_path(kind, micros, repo.clock_id);
                    let prev = tree
                        .remove(&path, &mut repo.nodes)?
                        .ok_or(Error::Bug("deleted a record the tree does not hold"))?;
                    ops.push(RepoOp::Delete {
                        path,
                        prev: Some(prev),
                    });
                }
            }
        }
        let (data, new_nodes) = tree.new_blocks();
        drop(tree);
        let mut in_slice: HashSet<Cid> = HashSet::with_capacity(new_nodes.len() * 2 + 8);
        for (cid, _) in &new_nodes {
            in_slice.insert(*cid);
        }
        repo.nodes.extend(new_nodes.iter().cloned());

        // The proof: every node that undoing the ops reads from the new tree.
        let mut recorder = RecordingSource::new(&mut repo.nodes);
        let inversion = invert_ops(data, &ops, &mut recorder)?;
        if inversion != Inversion::Complete(repo.data) {
            return Err(Error::Bug(
                "the commit's ops do not invert to the previous root",
            ));
        }
        let mut proof: Vec<Cid> = recorder
            .requested
            .into_iter()
            .filter(|cid| !in_slice.contains(cid))
            .collect();
        proof.sort_unstable();

        // The slice after the commit block: new nodes, new records, then the proof's other nodes.
        let mut blocks = new_nodes;
        for (cid, bytes) in record_blocks {
            // Two ops can write identical records only in theory; a CAR block appears once.
            if in_slice.insert(cid) {
                blocks.push((cid, bytes));
            }
        }
        for cid in proof {
            let bytes = repo.nodes.get(&cid).ok_or(mst::Error::MissingBlock(cid))?;
            blocks.push((cid, bytes.to_vec()));
        }
        let rev = Tid::from_parts(now + 100, repo.clock_id);
        let since = repo.rev.replace(rev.clone());
        let prev_data = std::mem::replace(&mut repo.data, data);
        collect_garbage(repo)?;
        Ok(PendingCommit {
            repo: index,
            seq,
            unsigned: UnsignedCommit {
                did: self.identities[index].did.clone(),
                data,
                rev,
                prev: None,
            },
            since,
            ops,
            prev_data,
            time,
            blocks,
        })
    }
}

/// The record operations a commit will make, before their CIDs are known.
enum PlannedOp {
    Create(RecordKind),
    UpdateProfile,
    Delete(RecordKind, u64),
}

/// Drops nodes no longer reachable from the repo's root, once the map has doubled since the last time:
/// amortised constant work per commit.
fn collect_garbage(repo: &mut RepoState) -> Result<(), Error> {
    if repo.nodes.len() <= 2 * repo.live_nodes + 8 {
        return Ok(());
    }
    let mut recorder = RecordingSource::new(&mut repo.nodes);
    for item in walk(repo.data, &mut recorder) {
        if let mst::WalkItem::MissingNode(cid) = item? {
            return Err(mst::Error::MissingBlock(cid).into());
        }
    }
    let reachable = recorder.requested;
    repo.nodes.retain(&reachable);
    repo.live_nodes = repo.nodes.len();
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use butterfly_firehose::message::decode_frame;
    use butterfly_firehose::FrameLogReader;
    use butterfly_repo::car::CarReader;
    use butterfly_repo::commit::Commit;
    use butterfly_repo::mst::WalkItem;
    use std::collections::{BTreeMap, HashMap};

    fn spec(seed: u64) -> FirehoseSpec {
        FirehoseSpec {
            repos: 12,
            events: 700,
            seed,
            // Higher rates than the live network so that a short run has every kind.
            mix: EventMix {
                identity_per_mille: 30,
                account_per_mille: 30,
                sync_per_mille: 30,
            },
        }
    }

    /// A consumer's view of one repo: what it learnt from the frames.
    #[derive(Default)]
    struct Model {
        blocks: BlockMap,
        records: BTreeMap<String, Cid>,
        data: Option<Cid>,
        rev: Option<Tid>,
        active: bool,
    }

    #[test]
    fn every_commit_verifies_and_inverts_on_its_slice_alone() {
        let spec = spec(11);
        let mut log = Vec::new();
        let generated = generate_firehose(&spec, &mut log).unwrap();
        assert_eq!(generated.summary.events, spec.events);
        assert_eq!(generated.summary.bytes, log.len() as u64);

        // Keys come from the DID documents, as a consumer would get them.
        let docs: Vec<serde_json::Value> =
            serde_json::from_str(&identities_json(&generated.identities)).unwrap();
        assert_eq!(docs.len(), spec.repos as usize);
        let mut keys = HashMap::new();
        for (doc, identity) in docs.iter().zip(&generated.identities) {
            let parsed =
                butterfly_identity::DidDocument::from_json(doc.clone(), &identity.did).unwrap();
            assert_eq!(
                parsed.claimed_handle().as_ref(),
                Some(&identity.handle),
                "{doc}"
            );
            assert_eq!(
                parsed.pds_endpoint().unwrap().as_str(),
                "https://pds.sim.invalid/"
            );
            let key = parsed.signing_key().unwrap().unwrap();
            assert_eq!(&key, identity.private_key().public_key());
            keys.insert(identity.did.clone(), key);
        }

        let empty_root = cid_for_cbor(
            &NodeData {
                left: None,
                entries: Vec::new(),
            }
            .encode(),
        );
        let mut models: HashMap<Did, Model> = HashMap::new();
        let mut last_time = String::new();
        let mut kinds: HashMap<&'static str, u64> = HashMap::new();
        for (position, frame) in FrameLogReader::new(log.as_slice()).enumerate() {
            let Frame::Message(message) = decode_frame(&frame.unwrap()).unwrap() else {
                panic!("error frame in the log")
            };
            assert_eq!(message.seq(), Some(position as i64 + 1));
            let time = message.time().unwrap().to_owned();
            assert!(butterfly_syntax::Datetime::parse(&time).is_ok(), "{time}");
            assert!(time > last_time, "{time} after {last_time}");
            last_time = time;
            let model = models
                .entry(message.did().unwrap().clone())
                .or_insert(Model {
                    active: true,
                    ..Model::default()
                });
            match message {
                Message::Commit(c) => {
                    *kinds.entry("commit").or_default() += 1;
                    assert!(model.active, "commit from an inactive account at {}", c.seq);
                    let (header, slice) =
                        BlockMap::from_car(CarReader::new(c.blocks.as_slice()).unwrap()).unwrap();
                    assert_eq!(header.roots, vec![c.commit]);
                    let commit = Commit::decode(&c.commit, slice.get(&c.commit).unwrap()).unwrap();
                    commit.verify_signature(&keys[&c.repo]).unwrap();
                    assert_eq!(commit.did, c.repo);
                    assert_eq!(commit.rev.as_ref(), Some(&c.rev));
                    assert_eq!(c.since, model.rev);
                    if let Some(since) = &c.since {
                        assert!(c.rev > *since);
                    }
                    assert_eq!(c.prev_data, Some(model.data.unwrap_or(empty_root)));
                    let mut proof = slice.clone();
                    assert_eq!(
                        invert_ops(commit.data, &c.ops, &mut proof).unwrap(),
                        Inversion::Complete(c.prev_data.unwrap())
                    );
                    for op in &c.ops {
                        match op {
                            RepoOp::Create { path, cid } | RepoOp::Update { path, cid, .. } => {
                                let value =
                                    butterfly_data::Value::from_cbor(slice.get(cid).unwrap())
                                        .unwrap();
                                butterfly_data::validate_record(&value).unwrap();
                                let collection = path.split('/').next().unwrap();
                                assert_eq!(value.record_type(), Some(collection));
                                let previous = model.records.insert(path.clone(), *cid);
                                if let RepoOp::Update { prev, .. } = op {
                                    assert_eq!(*prev, previous);
                                } else {
                                    assert_eq!(previous, None);
                                }
                            }
                            RepoOp::Delete { path, prev } => {
                                assert_eq!(model.records.remove(path), *prev);
                            }
                        }
                    }
                    for (cid, bytes) in slice.iter() {
                        model.blocks.insert(*cid, bytes.to_vec());
                    }
                    model.data = Some(commit.data);
                    model.rev = Some(c.rev);
                }
                Message::Sync(s) => {
                    *kinds.entry("sync").or_default() += 1;
                    let (header, slice) =
                        BlockMap::from_car(CarReader::new(s.blocks.as_slice()).unwrap()).unwrap();
                    assert_eq!(slice.len(), 1);
                    let commit =
                        Commit::decode(&header.roots[0], slice.get(&header.roots[0]).unwrap())
                            .unwrap();
                    commit.verify_signature(&keys[&s.did]).unwrap();
                    assert_eq!(Some(commit.data), model.data);
                    assert_eq!(Some(&s.rev), model.rev.as_ref());
                }
                Message::Identity(i) => {
                    *kinds.entry("identity").or_default() += 1;
                    assert!(i.handle.is_some());
                }
                Message::Account(a) => {
                    *kinds
                        .entry(if a.active { "reactivate" } else { "deactivate" })
                        .or_default() += 1;
                    assert_ne!(
                        a.active, model.active,
                        "a status change that changes nothing"
                    );
                    assert_eq!(a.active, a.status.is_none());
                    model.active = a.active;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        for kind in ["commit", "sync", "identity", "deactivate", "reactivate"] {
            assert!(
                kinds.get(kind).copied().unwrap_or(0) > 0,
                "no {kind}: {kinds:?}"
            );
        }
        assert_eq!(kinds["commit"], generated.summary.commits);

        // A consumer that kept every slice holds every repo whole.
        let mut repos_with_commits = 0;
        for model in models.values_mut() {
            let Some(data) = model.data else { continue };
            repos_with_commits += 1;
            let mut found = BTreeMap::new();
            for item in walk(data, &mut model.blocks) {
                match item.unwrap() {
                    WalkItem::Record { key, cid } => {
                        found.insert(key, cid);
                    }
                    WalkItem::MissingNode(cid) => panic!("node {cid} missing"),
                }
            }
            assert_eq!(found, model.records);
            for (key, cid) in &found {
                assert!(model.blocks.contains(cid), "record {key} missing");
            }
        }
        assert_eq!(repos_with_commits, generated.summary.repos_with_commits);
    }

    /// What a consumer that applies every op of every commit, and every account status, ends up
    /// with (without blocks).
    fn replay(log: &[u8]) -> HashMap<Did, Model> {
        let mut models: HashMap<Did, Model> = HashMap::new();
        for frame in FrameLogReader::new(log) {
            let Frame::Message(message) = decode_frame(&frame.unwrap()).unwrap() else {
                panic!("error frame in the log")
            };
            let model = models
                .entry(message.did().unwrap().clone())
                .or_insert(Model {
                    active: true,
                    ..Model::default()
                });
            match message {
                Message::Commit(c) => {
                    for op in c.ops {
                        match op {
                            RepoOp::Create { path, cid } | RepoOp::Update { path, cid, .. } => {
                                model.records.insert(path, cid);
                            }
                            RepoOp::Delete { path, .. } => {
                                model.records.remove(&path);
                            }
                        }
                    }
                    let (_, slice) =
                        BlockMap::from_car(CarReader::new(c.blocks.as_slice()).unwrap()).unwrap();
                    let commit = Commit::decode(&c.commit, slice.get(&c.commit).unwrap()).unwrap();
                    model.data = Some(commit.data);
                    model.rev = Some(c.rev);
                }
                Message::Account(a) => model.active = a.active,
                _ => {}
            }
        }
        models
    }

    #[test]
    fn expected_state_matches_a_replay_of_the_frames() {
        // Many quiet repos and frequent status changes, so that some repos end deactivated.
        let spec = FirehoseSpec {
            repos: 60,
            mix: EventMix {
                account_per_mille: 100,
                ..spec(21).mix
            },
            ..spec(21)
        };
        let mut log = Vec::new();
        let generated = generate_firehose(&spec, &mut log).unwrap();
        let replayed = replay(&log);
        assert_eq!(generated.expected.len(), spec.repos as usize);
        let mut n_records = 0;
        let mut inactive = 0;
        for (repo, identity) in generated.expected.iter().zip(&generated.identities) {
            assert_eq!(repo.did, identity.did);
            let records: BTreeMap<String, Cid> = repo
                .records
                .iter()
                .map(|r| (format!("{}/{}", r.collection, r.rkey), r.cid))
                .collect();
            assert_eq!(records.len(), repo.records.len());
            let mut sorted = repo.records.clone();
            sorted.sort();
            assert_eq!(sorted, repo.records);
            n_records += records.len();
            inactive += usize::from(!repo.active);
            match replayed.get(&repo.did) {
                Some(model) => {
                    assert_eq!(repo.active, model.active, "{}", repo.did);
                    assert_eq!(repo.rev, model.rev, "{}", repo.did);
                    if let Some(data) = model.data {
                        assert_eq!(repo.data, data, "{}", repo.did);
                    }
                    assert_eq!(records, model.records, "{}", repo.did);
                }
                // Never mentioned: active, empty, no commit.
                None => {
                    assert!(repo.active && repo.rev.is_none() && records.is_empty());
                }
            }
        }
        assert!(n_records > 300, "{n_records} records");
        assert!(inactive > 0, "no repo ends inactive");

        // One JSON line a repo, sorted by DID.
        let mut out = Vec::new();
        write_expected_state(&generated.expected, &mut out).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), spec.repos as usize);
        let dids: Vec<&str> = lines.iter().map(|l| l["did"].as_str().unwrap()).collect();
        let mut sorted_dids = dids.clone();
        sorted_dids.sort_unstable();
        assert_eq!(dids, sorted_dids);
        let busiest = generated
            .expected
            .iter()
            .max_by_key(|r| r.records.len())
            .unwrap();
        let line = lines
            .iter()
            .find(|l| l["did"] == busiest.did.as_str())
            .unwrap();
        assert_eq!(line["active"], busiest.active);
        assert_eq!(line["rev"], busiest.rev.as_ref().unwrap().as_str());
        assert_eq!(line["data"], busiest.data.to_string());
        let first = &busiest.records[0];
        assert_eq!(
            line["records"][0],
            serde_json::json!([first.collection, first.rkey, first.cid.to_string()])
        );
        assert_eq!(
            line["records"].as_array().unwrap().len(),
            busiest.records.len()
        );
    }

    #[test]
    fn same_seed_same_bytes() {
        let (mut first, mut second, mut other) = (Vec::new(), Vec::new(), Vec::new());
        let a = generate_firehose(&spec(3), &mut first).unwrap();
        let b = generate_firehose(&spec(3), &mut second).unwrap();
        generate_firehose(&spec(4), &mut other).unwrap();
        assert_eq!(first, second);
        assert_eq!(a.summary, b.summary);
        assert_eq!(
            identities_json(&a.identities),
            identities_json(&b.identities)
        );
        assert_ne!(first, other);
    }

    #[test]
    fn keys_are_mostly_k256() {
        let identities: Vec<_> = (0..400).map(|i| make_identity(1, i).0).collect();
        let k256 = identities
            .iter()
            .filter(|i| i.public_key.algorithm() == Algorithm::K256)
            .count();
        assert!((360..400).contains(&k256), "{k256} of 400 are K-256");
        let dids: HashSet<_> = identities.iter().map(|i| i.did.clone()).collect();
        assert_eq!(dids.len(), 400);
    }
}
