//! `did:plc` operations and audit-log verification: trust a DID's current state because its whole
//! history checks out, not because a directory says so.
//!
//! Spec: <https://web.plc.directory/spec/v0.1/did-plc> (the `did-method-plc` repository's README).
//!
//! # Main types
//!
//! - [`Operation`] is an unsigned operation of one of three types: [`PlcOperation`]
//!   (`plc_operation`, carrying [`PlcData`]), [`Tombstone`] (`plc_tombstone`) and the legacy
//!   genesis [`LegacyCreate`] (`create`). [`Operation::sign`] makes a [`SignedOperation`], which
//!   also comes from a log through [`SignedOperation::from_json`]. A signed operation knows its
//!   CID ([`SignedOperation::cid`]), the DID it creates if it is a genesis operation
//!   ([`SignedOperation::genesis_did`]), and which rotation key signed it
//!   ([`SignedOperation::verify_signature`]).
//! - [`parse_audit_log`] reads `/{did}/log/audit` into [`AuditEntry`] values;
//!   [`verify_audit_log`] replays them and returns an [`AuditReport`]: valid or the first
//!   [`AuditError`], and the resulting [`PlcState`] (active [`PlcData`], or tombstoned).
//! - [`PlcData::to_did_document`] renders the DID document the directory would serve, so a
//!   verified log can stand in for the directory's `/{did}`.
//!
//! # Glossary
//!
//! - **Genesis operation**: the first operation, with `prev` null. The DID is `did:plc:` and the
//!   first 24 characters of the lowercase base32 SHA-256 of its signed DAG-CBOR.
//! - **Signing bytes**: the DAG-CBOR of an operation without its `sig` field. `sig` is the
//!   unpadded base64url of a 64-byte low-S ECDSA signature (SHA-256) over them.
//! - **CID of an operation**: CIDv1, dag-cbor, sha-256 of the signed DAG-CBOR. In `prev` it is
//!   written as a string, not as a DAG-CBOR link.
//! - **Rotation keys**: the did:keys that may sign the next operation, highest priority first. A
//!   legacy `create` has `[recoveryKey, signingKey]`; a tombstone has none.
//! - **Head**: the newest operation that is not nullified.
//! - **Recovery, nullification**: an operation whose `prev` is older than the head forks the
//!   history and nullifies every operation after `prev`. It must be signed by a rotation key of
//!   `prev` with higher priority (a lower index) than the key that signed the first operation it
//!   nullifies, within 72 hours of that operation.
//!
//! # Hard cases
//!
//! - Repeated recoveries from the same `prev`: each must outrank the signer of the last one,
//!   because the keys allowed to sign after an operation shrink to those before the signer of
//!   its newest child.
//! - A tombstone ends a history, but it can itself be nullified by a recovery from an earlier
//!   operation, and the DID lives on.
//! - Timestamps are the directory's, not signed: they are checked only for order (each
//!   operation strictly after the head it follows) and against the recovery window.
//! - The 72 hours run from the first nullified operation, as in the reference implementations;
//!   a recovery exactly 72 hours later is valid.
//! - A legacy `create` is signed and hashed in its own form, and only normalized afterwards, so
//!   old DIDs keep the identifier their legacy genesis operation hashes to.
//!
//! # Design notes
//!
//! Parsing is strict: an operation must have exactly the fields of its type, each of the right
//! JSON type, `prev` a canonical CID string and `sig` canonical base64url. The types then hold
//! everything that is hashed, so the DAG-CBOR they encode is the DAG-CBOR the directory hashed,
//! and no field can be signed but ignored. Values are encoded from the typed form rather than
//! through the generic JSON conversion, whose `$link` and `$bytes` objects would change the bytes.
//!
//! Verification does not enforce the directory's rules for *new* operations (1 to 5 distinct
//! rotation keys, parseable keys everywhere, 7500 bytes): the reference verifiers accept
//! historical logs that break some of them (duplicated or empty rotation key lists), and a log
//! is judged by its signatures and hashes. [`Operation::validate`] checks those rules before
//! submitting. Rotation keys are parsed when a signature check reaches them, and parsing caps
//! them at [`MAX_PARSED_ROTATION_KEYS`] per operation, since each costs a signature check.
//!
//! Not here: fetching logs (the resolver does that), or the handle check that makes an
//! `alsoKnownAs` entry trustworthy.
//!
//! # Example
//!
//! ```
//! use butterfly_crypto::{Algorithm, PrivateKey};
//! use butterfly_identity::plc::{self, AuditEntry, Operation, PlcData};
//! use butterfly_syntax::{Datetime, Handle};
//!
//! // In real use the key bytes come from a cryptographic RNG.
//! let rotation_key = PrivateKey::from_bytes(Algorithm::K256, &[1; 32])?;
//! let signing_key = PrivateKey::from_bytes(Algorithm::K256, &[2; 32])?;
//! let data = PlcData::atproto(
//!     vec![rotation_key.public_key().to_did_key()],
//!     &signing_key.public_key().to_did_key(),
//!     &Handle::parse("alice.test")?,
//!     "https://pds.example.com",
//! );
//! let genesis = Operation::genesis(data);
//! genesis.validate()?;
//! let genesis = genesis.sign(&rotation_key);
//! let did = genesis.genesis_did().expect("a genesis operation");
//!
//! let entry = AuditEntry::new(
//!     did.clone(),
//!     genesis.clone(),
//!     genesis.cid(),
//!     false,
//!     Datetime::parse("2024-01-01T00:00:00.000Z")?,
//! );
//! let report = plc::verify_audit_log(&did, &[entry]);
//! assert!(report.is_valid(), "{:?}", report.error());
//! let state = report.state().expect("valid");
//! assert_eq!(state.handle(), Some("alice.test"));
//! assert_eq!(state.pds_endpoint(), Some("https://pds.example.com"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod audit;
mod operation;
mod state;

pub use audit::{
    parse_audit_log, parse_audit_log_json, verify_audit_log, AuditEntry, AuditEntryError,
    AuditError, AuditReport, MAX_AUDIT_ENTRIES, MAX_AUDIT_LOG_BYTES, RECOVERY_WINDOW_SECONDS,
};
pub use operation::{
    LegacyCreate, Operation, OperationError, PlcData, PlcOperation, Service, SignatureError,
    SignedOperation, Tombstone, ATPROTO_PDS_SERVICE, ATPROTO_PDS_TYPE, ATPROTO_VERIFICATION_METHOD,
    MAX_OPERATION_CBOR_LEN, MAX_PARSED_ROTATION_KEYS,
};
pub use state::PlcState;
