//! The sync boundary: what must hold before a firehose message is believed.
//!
//! For a `#commit` (in [`VerifyMode::Strict`]): the slice fits the size limits and parses as a CAR
//! rooted at the commit; the commit block names the message's repo and rev; the rev is a TID newer
//! than the last one accepted and not more than five minutes ahead of our clock; the signature holds
//! against the repo's current key (refetched once before giving up, since keys rotate); undoing the
//! ops on the slice (sync 1.1 inversion) gives `prevData`; and `prevData` is the data root we last
//! accepted for that repo, so no commit was missed. `#sync` is signature-checked and, when it moves
//! the repo to a new state, marks it for resync. `#account` and `#identity` update status and purge
//! identity caches.
//!
//! The verifier keeps one [`RepoState`] per repo. It does not order messages: callers give it each
//! repo's messages in stream order (see [`crate::pipeline`], which does so in parallel across repos).

use crate::keys::{KeyError, KeySource};
use crate::message::{AccountEvent, CommitEvent, Message, SyncEvent};
use butterfly_data::Cid;
use butterfly_repo::car::CarLimits;
use butterfly_repo::commit::Commit;
use butterfly_repo::proof::{self, Incomplete, Inversion, RepoOp};
use butterfly_repo::CarSlice;
use butterfly_syntax::{Did, Tid};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How much to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VerifyMode {
    /// Everything: signature, rev order, sync 1.1 inversion to `prevData`, and the `prevData` chain.
    Strict,
    /// As strict, except that a legacy commit without `prevData` is accepted when its signature holds.
    Lenient,
    /// Trust the upstream: decode, track account status and seq, check nothing cryptographic.
    Off,
}

impl VerifyMode {
    /// The mode's name, as the CLI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyMode::Strict => "strict",
            VerifyMode::Lenient => "lenient",
            VerifyMode::Off => "off",
        }
    }
}

impl std::str::FromStr for VerifyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" => Ok(VerifyMode::Strict),
            "lenient" => Ok(VerifyMode::Lenient),
            "off" => Ok(VerifyMode::Off),
            other => Err(format!(
                "unknown verify mode {other:?} (expected strict, lenient or off)"
            )),
        }
    }
}

/// Limits and mode.
#[derive(Clone, Debug)]
pub struct VerifierConfig {
    /// How much to check.
    pub mode: VerifyMode,
    /// Largest `blocks` accepted (the relay's limit).
    pub max_blocks_bytes: usize,
    /// Most ops in one commit (the relay's limit).
    pub max_ops: usize,
    /// How far ahead of our clock a rev's timestamp may be.
    pub max_clock_skew: Duration,
    /// The clock revs are compared with; a function so tests can fix it.
    pub clock: fn() -> SystemTime,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig {
            mode: VerifyMode::Strict,
            max_blocks_bytes: 2_000_000,
            max_ops: 200,
            max_clock_skew: Duration::from_secs(300),
            clock: SystemTime::now,
        }
    }
}

/// Why a message was not accepted. Every reason has a counter in [`Stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reason {
    /// The frame could not be decoded.
    MalformedFrame,
    /// Its seq is not greater than the last one accepted.
    SeqNotIncreasing,
    /// A message type this version does not know.
    UnknownMessageType,
    /// `blocks` is over the size limit.
    BlocksTooLarge,
    /// More ops than allowed.
    TooManyOps,
    /// The deprecated `tooBig` flag is set: the change was not sent (the repo needs a resync).
    TooBig,
    /// The CAR slice does not parse, a block does not match its hash, or its root is not the commit.
    BadCar,
    /// The commit block is missing or malformed.
    BadCommit,
    /// The commit block's DID or rev differs from the message's.
    CommitMismatch,
    /// The rev is not newer than the last one accepted for the repo.
    StaleRev,
    /// The rev is too far in the future.
    FutureRev,
    /// The DID has no usable signing key.
    UnknownIdentity,
    /// The signing key could not be fetched right now.
    IdentityUnavailable,
    /// The signature does not verify, even with a refetched key.
    BadSignature,
    /// The ops contradict the tree in the slice, or name a path twice.
    OpMismatch,
    /// A created or updated record's block is not in the slice.
    MissingRecordBlock,
    /// The commit has no `prevData` (strict mode only).
    MissingPrevData,
    /// The slice lacks what is needed to undo the ops.
    IncompleteProof,
    /// Undoing the ops does not give `prevData`.
    InversionMismatch,
    /// `prevData` is not the data root last accepted for the repo: something was missed.
    BrokenChain,
    /// The account is not active.
    InactiveAccount,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 21] = [
        Reason::MalformedFrame,
        Reason::SeqNotIncreasing,
        Reason::UnknownMessageType,
        Reason::BlocksTooLarge,
        Reason::TooManyOps,
        Reason::TooBig,
        Reason::BadCar,
        Reason::BadCommit,
        Reason::CommitMismatch,
        Reason::StaleRev,
        Reason::FutureRev,
        Reason::UnknownIdentity,
        Reason::IdentityUnavailable,
        Reason::BadSignature,
        Reason::OpMismatch,
        Reason::MissingRecordBlock,
        Reason::MissingPrevData,
        Reason::IncompleteProof,
        Reason::InversionMismatch,
        Reason::BrokenChain,
        Reason::InactiveAccount,
    ];

    /// The reason's name in reports and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedFrame => "malformed_frame",
            Reason::SeqNotIncreasing => "seq_not_increasing",
            Reason::UnknownMessageType => "unknown_message_type",
            Reason::BlocksTooLarge => "blocks_too_large",
            Reason::TooManyOps => "too_many_ops",
            Reason::TooBig => "too_big",
            Reason::BadCar => "bad_car",
            Reason::BadCommit => "bad_commit",
            Reason::CommitMismatch => "commit_mismatch",
            Reason::StaleRev => "stale_rev",
            Reason::FutureRev => "future_rev",
            Reason::UnknownIdentity => "unknown_identity",
            Reason::IdentityUnavailable => "identity_unavailable",
            Reason::BadSignature => "bad_signature",
            Reason::OpMismatch => "op_mismatch",
            Reason::MissingRecordBlock => "missing_record_block",
            Reason::MissingPrevData => "missing_prev_data",
            Reason::IncompleteProof => "incomplete_proof",
            Reason::InversionMismatch => "inversion_mismatch",
            Reason::BrokenChain => "broken_chain",
            Reason::InactiveAccount => "inactive_account",
        }
    }

    fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An account's hosting status, from `#account`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum AccountStatus {
    /// Hosted and serving its repo.
    #[default]
    Active,
    /// Not active; the string is the status the server gave (`deactivated`, `deleted`, `takendown`,
    /// `suspended`, `desynchronized`, `throttled`, or a future value), or `inactive` when it gave none.
    Inactive(String),
}

impl AccountStatus {
    /// The status's name: `active` or the inactive status.
    pub fn as_str(&self) -> &str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Inactive(status) => status,
        }
    }

    fn from_event(event: &AccountEvent) -> AccountStatus {
        if event.active {
            AccountStatus::Active
        } else {
            AccountStatus::Inactive(event.status.clone().unwrap_or_else(|| "inactive".into()))
        }
    }
}

/// What the verifier holds about one repo.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoState {
    /// The last rev accepted.
    pub rev: Option<Tid>,
    /// The data (MST root) of the last commit accepted.
    pub data: Option<Cid>,
    /// From the last `#account`.
    pub status: AccountStatus,
    /// Set by a `#sync` that moved the repo, or a broken chain; the engine clears it after resyncing.
    pub needs_resync: bool,
}

/// A checked commit, with its blocks so the consumer can read the records.
#[derive(Clone, Debug)]
pub struct CheckedCommit {
    /// The decoded commit block.
    pub commit: Commit,
    /// Every block of the slice, each hash-checked (a copy of the message's `blocks`, indexed).
    pub blocks: CarSlice,
    /// What undoing the ops gave; `None` when verification is off or for `#sync`.
    pub inversion: Option<Inversion>,
}

/// A message that passed.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// The message.
    pub message: Message,
    /// For `#commit` and `#sync`: the commit and its blocks.
    pub commit: Option<CheckedCommit>,
    /// The repo should be fetched again (a `#sync` to a new state).
    pub resync: bool,
}

/// A message that did not pass.
#[derive(Clone, Debug)]
pub struct Rejected {
    /// Its seq, when known.
    pub seq: Option<i64>,
    /// Its type as on the wire, or `frame` when it did not decode.
    pub kind: String,
    /// Its repo, when known.
    pub did: Option<Did>,
    /// Why.
    pub reason: Reason,
    /// Details for a human.
    pub detail: String,
    /// What inversion computed, when it ran.
    pub inversion: Option<Inversion>,
    /// The repo should be fetched again (a broken chain, or `tooBig`).
    pub resync: bool,
}

/// The verdict on one message.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// It passed.
    Accepted(Box<Accepted>),
    /// It did not.
    Rejected(Box<Rejected>),
}

impl Outcome {
    /// The message's seq, when known.
    pub fn seq(&self) -> Option<i64> {
        match self {
            Outcome::Accepted(a) => a.message.seq(),
            Outcome::Rejected(r) => r.seq,
        }
    }
}

/// Counters of accepted messages by type and rejections by reason.
#[derive(Debug, Default)]
pub struct Stats {
    accepted: [AtomicU64; 6],
    rejected: [AtomicU64; Reason::ALL.len()],
}

const ACCEPTED_KINDS: [&str; 6] = [
    "#commit",
    "#sync",
    "#identity",
    "#account",
    "#info",
    "other",
];

impl Stats {
    /// Counts an outcome.
    pub fn record(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Accepted(a) => {
                let kind = a.message.kind();
                let i = ACCEPTED_KINDS
                    .iter()
                    .position(|k| *k == kind)
                    .unwrap_or(ACCEPTED_KINDS.len() - 1);
                self.accepted[i].fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Rejected(r) => self.record_rejection(r.reason),
        }
    }

    /// Counts a rejection.
    pub fn record_rejection(&self, reason: Reason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Accepted messages by type.
    pub fn accepted(&self) -> Vec<(&'static str, u64)> {
        ACCEPTED_KINDS
            .iter()
            .zip(&self.accepted)
            .map(|(k, n)| (*k, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Rejections by reason.
    pub fn rejected(&self) -> Vec<(Reason, u64)> {
        Reason::ALL
            .iter()
            .zip(&self.rejected)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Total rejections.
    pub fn total_rejected(&self) -> u64 {
        self.rejected
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }
}

const SHARDS: usize = 64;

/// Checks messages against the sync boundary and keeps per-repo state.
pub struct Verifier {
    config: VerifierConfig,
    keys: Arc<dyn KeySource>,
    repos: Vec<Mutex<HashMap<Did, RepoState>>>,
    hasher: std::collections::hash_map::RandomState,
    stats: Stats,
}

/// A rejection under construction.
struct Reject {
    reason: Reason,
    detail: String,
    inversion: Option<Inversion>,
    resync: bool,
}

fn reject(reason: Reason, detail: impl Into<String>) -> Reject {
    Reject {
        reason,
        detail: detail.into(),
        inversion: None,
        resync: false,
    }
}

impl Verifier {
    /// A verifier with no repo state, taking keys from `keys`.
    pub fn new(config: VerifierConfig, keys: Arc<dyn KeySource>) -> Verifier {
        Verifier {
            config,
            keys,
            repos: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            stats: Stats::default(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> VerifyMode {
        self.config.mode
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn shard(&self, did: &Did) -> std::sync::MutexGuard<'_, HashMap<Did, RepoState>> {
        let shard = &self.repos[(self.hasher.hash_one(did) as usize) % SHARDS];
        shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What is held for `did`.
    pub fn repo_state(&self, did: &Did) -> Option<RepoState> {
        self.shard(did).get(did).cloned()
    }

    /// Sets what is held for `did`: the engine calls this after a backfill or resync, so that the
    /// next commit must chain from the state it fetched.
    pub fn set_repo_state(&self, did: Did, state: RepoState) {
        self.shard(&did).insert(did, state);
    }

    fn update_state(&self, did: &Did, update: impl FnOnce(&mut RepoState)) {
        let mut shard = self.shard(did);
        match shard.get_mut(did) {
            Some(state) => update(state),
            None => {
                let mut state = RepoState::default();
                update(&mut state);
                shard.insert(did.clone(), state);
            }
        }
    }

    /// Checks one message, updates the repo's state, and counts the outcome.
    ///
    /// A commit's `blocks` move into the outcome's [`CheckedCommit::blocks`] (see
    /// [`CarSlice::as_bytes`]) rather than being copied: the message comes back with them empty.
    pub async fn verify(&self, mut message: Message) -> Outcome {
        let result = match &mut message {
            Message::Commit(commit) => self.verify_commit(commit).await,
            Message::Sync(sync) => self.verify_sync(sync).await,
            Message::Identity(identity) => {
                self.keys.purge(&identity.did);
                Ok((None, false))
            }
            Message::Account(account) => {
                let status = AccountStatus::from_event(account);
                self.update_state(&account.did, |state| state.status = status);
                Ok((None, false))
            }
            Message::Info(_) => Ok((None, false)),
            Message::Unknown { kind, .. } => Err(reject(
                Reason::UnknownMessageType,
                format!("message type {kind:?} is not known"),
            )),
        };
        let outcome = match result {
            Ok((commit, resync)) => Outcome::Accepted(Box::new(Accepted {
                message,
                commit,
                resync,
            })),
            Err(r) => Outcome::Rejected(Box::new(Rejected {
                seq: message.seq(),
                kind: message.kind().to_owned(),
                did: message.did().cloned(),
                reason: r.reason,
                detail: r.detail,
                inversion: r.inversion,
                resync: r.resync,
            })),
        };
        self.stats.record(&outcome);
        outcome
    }

    async fn verify_commit(
        &self,
        event: &mut CommitEvent,
    ) -> Result<(Option<CheckedCommit>, bool), Reject> {
        let mode = self.config.mode;
        if event.blocks.len() > self.config.max_blocks_bytes {
            return Err(reject(
                Reason::BlocksTooLarge,
                format!(
                    "blocks of {} bytes (limit {})",
                    event.blocks.len(),
                    self.config.max_blocks_bytes
                ),
            ));
        }
        if event.ops.len() > self.config.max_ops {
            return Err(reject(
                Reason::TooManyOps,
                format!("{} ops (limit {})", event.ops.len(), self.config.max_ops),
            ));
        }
        let held = self.repo_state(&event.repo).unwrap_or_default();
        if held.status != AccountStatus::Active {
            return Err(reject(
                Reason::InactiveAccount,
                format!("account is {}", held.status.as_str()),
            ));
        }
        if event.too_big {
            let mut r = reject(Reason::TooBig, "tooBig is set: the change was not sent");
            r.resync = true;
            self.update_state(&event.repo, |s| s.needs_resync = true);
            return Err(r);
        }
        let (commit, blocks) = read_slice(std::mem::take(&mut event.blocks), Some(&event.commit))?;
        if commit.did != event.repo {
            return Err(reject(
                Reason::CommitMismatch,
                format!("commit is for {}, message for {}", commit.did, event.repo),
            ));
        }
        if commit.rev.as_ref() != Some(&event.rev) {
            return Err(reject(
                Reason::CommitMismatch,
                format!(
                    "commit rev {:?}, message rev {}",
                    commit.rev.as_ref().map(Tid::as_str),
                    event.rev
                ),
            ));
        }
        if mode == VerifyMode::Off {
            self.update_state(&event.repo, |s| {
                s.rev = Some(event.rev.clone());
                s.data = Some(commit.data);
            });
            return Ok((
                Some(CheckedCommit {
                    commit,
                    blocks,
                    inversion: None,
                }),
                false,
            ));
        }
        self.check_rev(&event.rev, held.rev.as_ref())?;
        for op in &event.ops {
            if let RepoOp::Create { cid, path } | RepoOp::Update { cid, path, .. } = op {
                if !blocks.contains(cid) {
                    return Err(reject(
                        Reason::MissingRecordBlock,
                        format!("record {path} ({cid}) is not in the slice"),
                    ));
                }
            }
        }
        let mut blocks = blocks;
        let inversion = match proof::invert_ops(commit.data, &event.ops, &mut blocks) {
            Ok(inversion) => inversion,
            Err(e) => return Err(reject(Reason::OpMismatch, e.to_string())),
        };
        let with_inversion = |mut r: Reject| {
            r.inversion = Some(inversion.clone());
            r
        };
        match (event.prev_data, &event.since) {
            (Some(prev_data), _) => match &inversion {
                Inversion::Complete(root) if *root == prev_data => {}
                Inversion::Complete(root) => {
                    return Err(with_inversion(reject(
                        Reason::InversionMismatch,
                        format!("undoing the ops gives {root}, prevData is {prev_data}"),
                    )))
                }
                Inversion::Incomplete(why) => {
                    return Err(with_inversion(reject(
                        Reason::IncompleteProof,
                        describe_incomplete(why),
                    )))
                }
            },
            // A repo's first commit: there is no previous tree to invert to.
            (None, None) => {}
            // A commit from before sync 1.1.
            (None, Some(_)) if mode == VerifyMode::Lenient => {}
            (None, Some(_)) => {
                return Err(with_inversion(reject(
                    Reason::MissingPrevData,
                    "no prevData (a pre-sync-1.1 commit; accepted only in lenient mode)",
                )))
            }
        }
        self.check_signature(&commit)
            .await
            .map_err(with_inversion)?;
        // Only a validly signed commit may mark the repo for resync; a forged one is refused
        // above as such. A first commit (no prevData, no since) for a repo already held is a
        // reset; a lenient legacy commit has nothing to chain with.
        if event.prev_data.is_some() || event.since.is_none() {
            self.check_chain(&event.repo, held.data, event.prev_data)
                .map_err(with_inversion)?;
        }
        self.update_state(&event.repo, |s| {
            s.rev = Some(event.rev.clone());
            s.data = Some(commit.data);
        });
        Ok((
            Some(CheckedCommit {
                commit,
                blocks,
                inversion: Some(inversion),
            }),
            false,
        ))
    }

    async fn verify_sync(
        &self,
        event: &SyncEvent,
    ) -> Result<(Option<CheckedCommit>, bool), Reject> {
        let (commit, blocks) = read_slice(event.blocks.clone(), None)?;
        if commit.did != event.did || commit.rev.as_ref() != Some(&event.rev) {
            return Err(reject(
                Reason::CommitMismatch,
                "the commit block's did or rev differs from the message's",
            ));
        }
        let held = self.repo_state(&event.did).unwrap_or_default();
        if self.config.mode != VerifyMode::Off {
            self.check_rev(&event.rev, None)?;
            self.check_signature(&commit).await?;
        }
        // An older or unchanged state is accepted (it is validly signed) but changes nothing.
        let newer = held.rev.as_ref().is_none_or(|rev| *rev < event.rev);
        let resync = newer && held.data != Some(commit.data);
        if newer {
            self.update_state(&event.did, |s| {
                s.rev = Some(event.rev.clone());
                s.data = Some(commit.data);
                s.needs_resync |= resync;
            });
        }
        Ok((
            Some(CheckedCommit {
                commit,
                blocks,
                inversion: None,
            }),
            resync,
        ))
    }

    /// `prev_data` (None for a repo's first commit) must be the data root last accepted, if any.
    fn check_chain(
        &self,
        did: &Did,
        held: Option<Cid>,
        prev_data: Option<Cid>,
    ) -> Result<(), Reject> {
        let Some(held) = held else {
            return Ok(());
        };
        if prev_data == Some(held) {
            return Ok(());
        }
        self.update_state(did, |s| s.needs_resync = true);
        let mut r = reject(
            Reason::BrokenChain,
            match prev_data {
                Some(prev_data) => {
                    format!("prevData {prev_data} but the last accepted data is {held}")
                }
                None => format!("a first commit (no since) for a repo held at {held}"),
            },
        );
        r.resync = true;
        Err(r)
    }

    fn check_rev(&self, rev: &Tid, held: Option<&Tid>) -> Result<(), Reject> {
        if let Some(held) = held {
            if rev <= held {
                return Err(reject(
                    Reason::StaleRev,
                    format!("rev {rev} is not newer than the last accepted {held}"),
                ));
            }
        }
        let now = (self.config.clock)()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let limit = (now + self.config.max_clock_skew).as_micros() as u64;
        if rev.timestamp_micros() > limit {
            return Err(reject(
                Reason::FutureRev,
                format!(
                    "rev {rev} is more than {:?} ahead",
                    self.config.max_clock_skew
                ),
            ));
        }
        Ok(())
    }

    async fn check_signature(&self, commit: &Commit) -> Result<(), Reject> {
        let key = self
            .keys
            .signing_key(&commit.did)
            .await
            .map_err(key_reject)?;
        if commit.verify_signature(&key).is_ok() {
            return Ok(());
        }
        let fresh = self
            .keys
            .refreshed_key(&commit.did)
            .await
            .map_err(key_reject)?;
        if fresh != key && commit.verify_signature(&fresh).is_ok() {
            return Ok(());
        }
        Err(reject(
            Reason::BadSignature,
            format!("signature does not verify with {}", fresh.to_did_key()),
        ))
    }
}

fn key_reject(error: KeyError) -> Reject {
    match error {
        KeyError::NotFound { .. } => reject(Reason::UnknownIdentity, error.to_string()),
        _ => reject(Reason::IdentityUnavailable, error.to_string()),
    }
}

fn describe_incomplete(why: &Incomplete) -> String {
    match why {
        Incomplete::MissingBlock(cid) => format!("the slice lacks MST node {cid}"),
        Incomplete::MissingPrev(path) => format!("op on {path} has no prev"),
    }
}

/// Reads a commit slice: every block hash-checked, rooted at `commit_cid` (the message's `commit`,
/// or for `#sync`, the CAR's own root), commit decoded.
fn read_slice(bytes: Vec<u8>, commit_cid: Option<&Cid>) -> Result<(Commit, CarSlice), Reject> {
    let blocks = CarSlice::parse(bytes, CarLimits::default())
        .map_err(|e| reject(Reason::BadCar, e.to_string()))?;
    let root = blocks
        .header()
        .roots
        .first()
        .copied()
        .ok_or_else(|| reject(Reason::BadCar, "the CAR has no root"))?;
    let commit_cid = commit_cid.copied().unwrap_or(root);
    if root != commit_cid {
        return Err(reject(
            Reason::BadCar,
            format!("the slice's root is not the commit {commit_cid}"),
        ));
    }
    let block = blocks.get(&commit_cid).ok_or_else(|| {
        reject(
            Reason::BadCommit,
            format!("commit block {commit_cid} is missing"),
        )
    })?;
    let commit =
        Commit::decode(&commit_cid, block).map_err(|e| reject(Reason::BadCommit, e.to_string()))?;
    Ok((commit, blocks))
}
