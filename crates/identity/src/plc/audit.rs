//! Audit logs: parsing `/{did}/log/audit` and verifying it from the genesis operation on.

use std::collections::HashMap;

use butterfly_syntax::{Datetime, Did};
use cid::Cid;
use serde_json::Value as Json;

use super::operation::{excerpt, OperationError, SignatureError, SignedOperation};
use super::state::PlcState;

/// The largest audit log [`parse_audit_log`] reads, in bytes of JSON. An entry takes about 1 KiB,
/// and real logs hold a handful; the limit leaves room for thousands.
pub const MAX_AUDIT_LOG_BYTES: usize = 8 * 1024 * 1024;

/// The most entries an audit log may hold, for [`parse_audit_log`] and [`verify_audit_log`].
pub const MAX_AUDIT_ENTRIES: usize = 10_000;

/// How long after an operation a higher-priority rotation key may still nullify it: 72 hours
/// (inclusive: a recovery exactly 72 hours later is accepted, as the reference implementations
/// do).
pub const RECOVERY_WINDOW_SECONDS: i64 = 72 * 60 * 60;

/// One entry of an audit log: an operation with what the directory recorded about it.
///
/// Build it with [`parse_audit_log`] or [`AuditEntry::new`]. The JSON of the operation is kept
/// beside its parsed form, which it always matches: it is what the entry was parsed from, or the
/// JSON form of the operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    did: Did,
    operation: SignedOperation,
    operation_json: Json,
    cid: Cid,
    nullified: bool,
    created_at: Datetime,
}

impl AuditEntry {
    /// An entry for `operation`, as the directory would record it. `cid` is taken as given, so
    /// that a log with a wrong one can be built and rejected.
    pub fn new(
        did: Did,
        operation: SignedOperation,
        cid: Cid,
        nullified: bool,
        created_at: Datetime,
    ) -> AuditEntry {
        AuditEntry {
            did,
            operation_json: operation.to_json(),
            operation,
            cid,
            nullified,
            created_at,
        }
    }

    /// Parses one entry: an object with `did`, `operation`, `cid`, `nullified` and `createdAt`.
    /// Other fields are ignored: they are not signed, and the directory may add some.
    pub fn from_json(json: &Json) -> Result<AuditEntry, AuditEntryError> {
        let object = json.as_object().ok_or(AuditEntryError::NotObject)?;
        let field = |name: &'static str| {
            object
                .get(name)
                .ok_or(AuditEntryError::Missing { field: name })
        };
        let text = |name: &'static str| {
            field(name)?.as_str().ok_or(AuditEntryError::WrongType {
                field: name,
                expected: "a string",
            })
        };
        let did = text("did")?;
        let did = Did::parse(did).map_err(|error| AuditEntryError::Invalid {
            field: "did",
            reason: error.to_string(),
        })?;
        let cid_text = text("cid")?;
        let cid =
            butterfly_data::parse_cid_str(cid_text).map_err(|reason| AuditEntryError::Invalid {
                field: "cid",
                reason,
            })?;
        if cid.to_string() != cid_text {
            return Err(AuditEntryError::Invalid {
                field: "cid",
                reason: format!("{:?} is not in canonical form", excerpt(cid_text)),
            });
        }
        let nullified = field("nullified")?
            .as_bool()
            .ok_or(AuditEntryError::WrongType {
                field: "nullified",
                expected: "a boolean",
            })?;
        let created_at =
            Datetime::parse(text("createdAt")?).map_err(|error| AuditEntryError::Invalid {
                field: "createdAt",
                reason: error.to_string(),
            })?;
        let operation_json = field("operation")?;
        let operation =
            SignedOperation::from_json(operation_json).map_err(AuditEntryError::Operation)?;
        Ok(AuditEntry {
            did,
            operation,
            operation_json: operation_json.clone(),
            cid,
            nullified,
            created_at,
        })
    }

    /// The DID the entry is filed under.
    pub fn did(&self) -> &Did {
        &self.did
    }

    /// The operation.
    pub fn operation(&self) -> &SignedOperation {
        &self.operation
    }

    /// The operation's JSON, as served.
    pub fn operation_json(&self) -> &Json {
        &self.operation_json
    }

    /// The CID the directory gives for the operation (verification recomputes it).
    pub fn cid(&self) -> &Cid {
        &self.cid
    }

    /// Whether the directory marks the operation as nullified by a recovery.
    pub fn nullified(&self) -> bool {
        self.nullified
    }

    /// When the directory accepted the operation.
    pub fn created_at(&self) -> &Datetime {
        &self.created_at
    }
}

/// Why one audit-log entry could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditEntryError {
    /// The entry is not a JSON object.
    #[error("expected an object")]
    NotObject,
    /// A field is missing.
    #[error("missing field {field:?}")]
    Missing {
        /// The field.
        field: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("{field} must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// The JSON type it must have.
        expected: &'static str,
    },
    /// A field does not parse: `did`, `cid` (which must be in canonical form) or `createdAt`.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The operation does not parse.
    #[error(transparent)]
    Operation(OperationError),
}

/// Parses an audit log, the JSON array `/{did}/log/audit` returns, oldest entry first.
///
/// At most [`MAX_AUDIT_LOG_BYTES`] bytes and [`MAX_AUDIT_ENTRIES`] entries; every entry must
/// parse ([`AuditEntry::from_json`]). Nothing is verified yet: see [`verify_audit_log`].
pub fn parse_audit_log(json: &[u8]) -> Result<Vec<AuditEntry>, AuditError> {
    if json.len() > MAX_AUDIT_LOG_BYTES {
        return Err(AuditError::TooLarge {
            len: json.len(),
            max: MAX_AUDIT_LOG_BYTES,
        });
    }
    let value: Json = serde_json::from_slice(json).map_err(|error| AuditError::Json {
        message: error.to_string(),
    })?;
    parse_audit_log_json(&value)
}

/// Like [`parse_audit_log`], for JSON already parsed (the byte limit is then the caller's).
pub fn parse_audit_log_json(json: &Json) -> Result<Vec<AuditEntry>, AuditError> {
    let items = json.as_array().ok_or(AuditError::NotArray)?;
    if items.len() > MAX_AUDIT_ENTRIES {
        return Err(AuditError::TooManyEntries {
            count: items.len(),
            max: MAX_AUDIT_ENTRIES,
        });
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            AuditEntry::from_json(item).map_err(|source| AuditError::Entry { index, source })
        })
        .collect()
}

/// Why an audit log was rejected. Each variant past parsing names the entry, by index in the log
/// and by CID, where the rule broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The JSON is larger than [`MAX_AUDIT_LOG_BYTES`].
    #[error("audit log is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not JSON.
    #[error("audit log is not json: {message}")]
    Json {
        /// The parser's message.
        message: String,
    },
    /// The JSON is not an array.
    #[error("audit log must be a json array")]
    NotArray,
    /// More entries than [`MAX_AUDIT_ENTRIES`].
    #[error("audit log has {count} entries, more than the limit of {max}")]
    TooManyEntries {
        /// The number of entries.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An entry does not parse.
    #[error("entry {index}: {source}")]
    Entry {
        /// Its index.
        index: usize,
        /// Why.
        source: AuditEntryError,
    },
    /// The log has no entries, so no genesis operation.
    #[error("audit log is empty")]
    Empty,
    /// An entry is filed under another DID.
    #[error("entry {index} ({cid}): did is {found}, expected {expected}")]
    WrongDid {
        /// The entry's index.
        index: usize,
        /// The entry's CID.
        cid: Cid,
        /// The DID being verified.
        expected: Did,
        /// The entry's DID.
        found: Did,
    },
    /// The entry's `cid` is not the CID of its operation.
    #[error("entry {index}: cid is {found}, but the operation hashes to {computed}")]
    CidMismatch {
        /// The entry's index.
        index: usize,
        /// The CID the entry gives.
        found: Cid,
        /// The CID of the operation.
        computed: Cid,
    },
    /// The same operation appears twice.
    #[error("entry {index} ({cid}): the operation already appears at entry {first}")]
    DuplicateOperation {
        /// The entry's index.
        index: usize,
        /// The entry's CID.
        cid: Cid,
        /// The index of its first appearance.
        first: usize,
    },
    /// The first entry is not a genesis operation.
    #[error("entry 0 ({cid}): the first operation must be a genesis operation, found prev {prev}")]
    FirstNotGenesis {
        /// The entry's CID.
        cid: Cid,
        /// Its `prev`.
        prev: Cid,
    },
    /// A genesis operation (prev null) after the first entry.
    #[error("entry {index} ({cid}): a genesis operation may only be the first entry")]
    UnexpectedGenesis {
        /// The entry's index.
        index: usize,
        /// The entry's CID.
        cid: Cid,
    },
    /// The genesis operation hashes to another DID.
    #[error("entry 0 ({cid}): the genesis operation creates {derived}, not {expected}")]
    GenesisDidMismatch {
        /// The genesis operation's CID.
        cid: Cid,
        /// The DID it creates.
        derived: Did,
        /// The DID being verified.
        expected: Did,
    },
    /// `prev` names no earlier entry.
    #[error("entry {index} ({cid}): prev {prev} is not an earlier entry of the log")]
    UnknownPrev {
        /// The entry's index.
        index: usize,
        /// The entry's CID.
        cid: Cid,
        /// Its `prev`.
        prev: Cid,
    },
    /// `prev` names an operation that a recovery had already nullified.
    #[error("entry {index} ({cid}): prev {prev} (entry {prev_index}) was nullified")]
    PrevNullified {
        /// The entry's index.
        index: usize,
        /// The entry's CID.
        cid: Cid,
        /// Its `prev`.
        prev: Cid,
        /// The index of `prev`.
        prev_index: usize,
    },
    /// `prev` names a tombstone: nothing may follow one (it can only be nullified, by an
    /// operation whose `prev` is earlier).
    #[error("entry {index} ({cid}): prev {prev} (entry {prev_index}) is a tombstone")]
    AfterTombstone {
        /// The entry's index.
        index: usize,
        /// The entry's CID.
        cid: Cid,
        /// Its `prev`.
        prev: Cid,
        /// The index of `prev`.
        prev_index: usize,
    },
    /// The signature is by none of the rotation keys in effect (those of the genesis operation
    /// itself, or of the operation `prev` names), or a key could not be parsed.
    #[error("entry {index} ({cid}): {source}")]
    Signature {
        /// The entry's index.
        index: usize,
        /// The entry's CID.
        cid: Cid,
        /// What the check found.
        source: SignatureError,
    },
    /// A recovery (an operation whose `prev` is not the head, nullifying the operations after
    /// `prev`) signed by a rotation key that does not outrank the key that signed the first
    /// operation it would nullify.
    #[error(
        "entry {index} ({cid}): would nullify {first_nullified} (signed by rotation key \
         {disputed_key}) but is signed by rotation key {signer_key}, which does not outrank it"
    )]
    RecoveryKeyTooWeak {
        /// The entry's index.
        index: usize,
        /// The entry's CID.
        cid: Cid,
        /// The first operation it would nullify.
        first_nullified: Cid,
        /// Index in `prev`'s rotation keys of the key that signed `first_nullified` (or of the
        /// weakest key that signed a later recovery from the same `prev`).
        disputed_key: usize,
        /// Index of the key that signed this entry.
        signer_key: usize,
    },
    /// A recovery more than [`RECOVERY_WINDOW_SECONDS`] after the first operation it nullifies.
    #[error(
        "entry {index} ({cid}): created at {created_at}, more than 72h after {first_nullified} \
         (created at {nullified_at}), which it would nullify"
    )]
    LateRecovery {
        /// The entry's index.
        index: usize,
        /// The entry's CID.
        cid: Cid,
        /// When the entry was created.
        created_at: String,
        /// The first operation it would nullify.
        first_nullified: Cid,
        /// When that operation was created.
        nullified_at: String,
    },
    /// An entry is not later than the operation accepted before it.
    #[error(
        "entry {index} ({cid}): created at {created_at}, not after {previous_created_at} of \
         entry {previous_index}"
    )]
    TimestampOrder {
        /// The entry's index.
        index: usize,
        /// The entry's CID.
        cid: Cid,
        /// When the entry was created.
        created_at: String,
        /// The index of the last accepted operation before it.
        previous_index: usize,
        /// When that operation was created.
        previous_created_at: String,
    },
    /// The log's `nullified` flag of an entry disagrees with the recovery rules.
    #[error(
        "entry {index} ({cid}): marked nullified={found}, but the rules give nullified={expected}"
    )]
    NullifiedMismatch {
        /// The entry's index.
        index: usize,
        /// The entry's CID.
        cid: Cid,
        /// The computed flag.
        expected: bool,
        /// The log's flag.
        found: bool,
    },
}

/// What [`verify_audit_log`] found.
///
/// Valid exactly when [`AuditReport::error`] is `None`; then [`AuditReport::state`] is the
/// DID's current state and [`AuditReport::head`] the CID of its last valid operation (the `prev`
/// of the next one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    did: Did,
    ops: usize,
    nullified: usize,
    outcome: Result<Verified, AuditError>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Verified {
    state: PlcState,
    head: Cid,
}

impl AuditReport {
    /// The DID verified.
    pub fn did(&self) -> &Did {
        &self.did
    }

    /// Whether the log is valid.
    pub fn is_valid(&self) -> bool {
        self.outcome.is_ok()
    }

    /// Why the log is not valid, if it is not.
    pub fn error(&self) -> Option<&AuditError> {
        self.outcome.as_ref().err()
    }

    /// The number of entries in the log.
    pub fn ops(&self) -> usize {
        self.ops
    }

    /// The number of entries the log marks as nullified (when the log is valid, these are exactly
    /// the ones the recovery rules nullify).
    pub fn nullified(&self) -> usize {
        self.nullified
    }

    /// The DID's state after its last valid operation, if the log is valid.
    pub fn state(&self) -> Option<&PlcState> {
        self.outcome.as_ref().ok().map(|verified| &verified.state)
    }

    /// The CID of the last valid operation, if the log is valid.
    pub fn head(&self) -> Option<&Cid> {
        self.outcome.as_ref().ok().map(|verified| &verified.head)
    }

    /// The state, or why the log is not valid.
    pub fn into_state(self) -> Result<PlcState, AuditError> {
        self.outcome.map(|verified| verified.state)
    }
}

/// Verifies the audit log of `did`, entries oldest first, replaying the directory's rules:
///
/// - every entry is filed under `did`, and its `cid` is the CID of its operation;
/// - the first entry is the only genesis operation, and hashes to `did`;
/// - every other operation's `prev` is an earlier operation that was neither nullified nor a
///   tombstone when this one arrived;
/// - each operation is signed by a rotation key in effect: its own for the genesis operation,
///   else those of `prev`;
/// - if `prev` is not the head (the newest valid operation), the operation is a recovery: it
///   nullifies every operation after `prev` on the valid chain, and must be signed by a key
///   listed before (with higher priority than) the key that signed the first of them, at most
///   72 hours after that one was created. Repeated recoveries from the same `prev` must each
///   outrank the last;
/// - each operation is created strictly after the head it replaces;
/// - the `nullified` flags of the log are exactly the ones these rules give.
///
/// Never panics, whatever the entries hold.
pub fn verify_audit_log(did: &Did, entries: &[AuditEntry]) -> AuditReport {
    AuditReport {
        did: did.clone(),
        ops: entries.len(),
        nullified: entries.iter().filter(|entry| entry.nullified).count(),
        outcome: verify_entries(did, entries),
    }
}

/// What verification tracks per accepted operation.
struct OpStatus {
    cid: Cid,
    created_at: i64,
    /// The rotation keys the operation leaves in effect (none for a tombstone).
    rotation_keys: Vec<String>,
    /// Only `rotation_keys[..allowed]` may sign the next child. Each accepted child lowers it to
    /// the index of its signer, so that a recovery must come from a stronger key.
    allowed: usize,
    /// The newest accepted operation whose `prev` is this one.
    last_child: Option<usize>,
    nullified: bool,
    tombstone: bool,
}

fn verify_entries(did: &Did, entries: &[AuditEntry]) -> Result<Verified, AuditError> {
    if entries.is_empty() {
        return Err(AuditError::Empty);
    }
    if entries.len() > MAX_AUDIT_ENTRIES {
        return Err(AuditError::TooManyEntries {
            count: entries.len(),
            max: MAX_AUDIT_ENTRIES,
        });
    }
    let mut statuses: Vec<OpStatus> = Vec::with_capacity(entries.len());
    let mut by_cid: HashMap<Cid, usize> = HashMap::with_capacity(entries.len());
    let window_micros = RECOVERY_WINDOW_SECONDS * 1_000_000;

    for (index, entry) in entries.iter().enumerate() {
        let operation = &entry.operation;
        let cid = operation.cid();
        if entry.cid != cid {
            return Err(AuditError::CidMismatch {
                index,
                found: entry.cid,
                computed: cid,
            });
        }
        if entry.did != *did {
            return Err(AuditError::WrongDid {
                index,
                cid,
                expected: did.clone(),
                found: entry.did.clone(),
            });
        }
        if let Some(&first) = by_cid.get(&cid) {
            return Err(AuditError::DuplicateOperation { index, cid, first });
        }
        let created_at = entry.created_at.timestamp_micros();
        let signature_error = |source| AuditError::Signature { index, cid, source };

        match operation.operation().prev() {
            None => {
                if index > 0 {
                    return Err(AuditError::UnexpectedGenesis { index, cid });
                }
                let Some(derived) = operation.genesis_did() else {
                    return Err(AuditError::UnexpectedGenesis { index, cid });
                };
                if derived != *did {
                    return Err(AuditError::GenesisDidMismatch {
                        cid,
                        derived,
                        expected: did.clone(),
                    });
                }
                operation
                    .verify_signature(&operation.operation().rotation_keys())
                    .map_err(signature_error)?;
            }
            Some(prev) => {
                // The head is the newest accepted operation: the last one pushed.
                let Some(head) = statuses.len().checked_sub(1) else {
                    return Err(AuditError::FirstNotGenesis { cid, prev: *prev });
                };
                let Some(&prev_index) = by_cid.get(prev) else {
                    return Err(AuditError::UnknownPrev {
                        index,
                        cid,
                        prev: *prev,
                    });
                };
                let parent = &statuses[prev_index];
                if parent.nullified {
                    return Err(AuditError::PrevNullified {
                        index,
                        cid,
                        prev: *prev,
                        prev_index,
                    });
                }
                if parent.tombstone {
                    return Err(AuditError::AfterTombstone {
                        index,
                        cid,
                        prev: *prev,
                        prev_index,
                    });
                }
                let allowed = &parent.rotation_keys[..parent.allowed];
                let signer = match (operation.verify_signature(allowed), parent.last_child) {
                    (Ok(signer), _) => signer,
                    // A recovery that a weaker (but valid) rotation key signed.
                    (Err(SignatureError::NoMatch { .. } | SignatureError::NoKeys), Some(child))
                        if parent.allowed < parent.rotation_keys.len() =>
                    {
                        let signer = operation
                            .verify_signature(&parent.rotation_keys)
                            .map_err(signature_error)?;
                        return Err(AuditError::RecoveryKeyTooWeak {
                            index,
                            cid,
                            first_nullified: statuses[child].cid,
                            disputed_key: parent.allowed,
                            signer_key: signer,
                        });
                    }
                    (Err(error), _) => return Err(signature_error(error)),
                };
                if created_at <= statuses[head].created_at {
                    return Err(AuditError::TimestampOrder {
                        index,
                        cid,
                        created_at: entry.created_at.as_str().to_owned(),
                        previous_index: head,
                        previous_created_at: entries[head].created_at.as_str().to_owned(),
                    });
                }
                if let Some(first_nullified) = parent.last_child {
                    let nullified_at = statuses[first_nullified].created_at;
                    if created_at.saturating_sub(nullified_at) > window_micros {
                        return Err(AuditError::LateRecovery {
                            index,
                            cid,
                            created_at: entry.created_at.as_str().to_owned(),
                            first_nullified: statuses[first_nullified].cid,
                            nullified_at: entries[first_nullified].created_at.as_str().to_owned(),
                        });
                    }
                    // Everything after prev on the valid chain: follow the newest children. Ops
                    // already nullified are never on it, so each is visited once in all.
                    let mut next = Some(first_nullified);
                    while let Some(nullified_index) = next {
                        let status = &mut statuses[nullified_index];
                        status.nullified = true;
                        next = status.last_child;
                    }
                }
                let parent = &mut statuses[prev_index];
                parent.allowed = signer;
                parent.last_child = Some(index);
            }
        }

        let rotation_keys = operation.operation().rotation_keys();
        statuses.push(OpStatus {
            cid,
            created_at,
            allowed: rotation_keys.len(),
            rotation_keys,
            last_child: None,
            nullified: false,
            tombstone: operation.operation().is_tombstone(),
        });
        by_cid.insert(cid, index);
    }

    for (index, (entry, status)) in entries.iter().zip(&statuses).enumerate() {
        if entry.nullified != status.nullified {
            return Err(AuditError::NullifiedMismatch {
                index,
                cid: status.cid,
                expected: status.nullified,
                found: entry.nullified,
            });
        }
    }

    // The head is the last entry accepted; every entry was accepted, so it is the last one.
    let head = entries.len() - 1;
    let state = match entries[head].operation.operation().data() {
        Some(data) => PlcState::Active(data),
        None => PlcState::Tombstoned,
    };
    Ok(Verified {
        state,
        head: statuses[head].cid,
    })
}
