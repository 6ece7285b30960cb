//! PLC audit-log verification through the public API: logs served by the reference directory and
//! written by the reference library (`tests/data/plc`), logs built here with the signing helpers,
//! and a live round trip through a local reference directory.

use butterfly_crypto::{Algorithm, PrivateKey, PublicKey};
use butterfly_identity::plc::{
    self, AuditEntry, AuditError, AuditReport, LegacyCreate, Operation, PlcData, PlcState,
    SignedOperation,
};
use butterfly_syntax::{Datetime, Did, Handle};
use cid::Cid;
use serde_json::{json, Value as Json};

const HOUR_MS: i64 = 3_600_000;
const WINDOW_MS: i64 = 72 * HOUR_MS;

// ---- Helpers ----

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/plc/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
}

/// A fixture log and the DID it is filed under (read from the file: fixtures can be regenerated).
fn fixture_log(name: &str) -> (Did, Vec<AuditEntry>) {
    let entries = plc::parse_audit_log(&fixture(name))
        .unwrap_or_else(|error| panic!("{name} does not parse: {error}"));
    let did = entries.first().expect("non-empty fixture").did().clone();
    (did, entries)
}

fn fixture_json(name: &str) -> Json {
    serde_json::from_slice(&fixture(name)).expect("fixture is json")
}

/// Verifies a log that must be valid.
fn check_valid(did: &Did, entries: &[AuditEntry]) -> AuditReport {
    let report = plc::verify_audit_log(did, entries);
    assert!(report.is_valid(), "expected valid: {:?}", report.error());
    assert!(report.state().is_some() && report.head().is_some());
    assert_eq!(report.ops(), entries.len());
    report
}

/// Verifies a log that must be rejected, with an error whose message contains `needle`.
fn check_invalid(did: &Did, entries: &[AuditEntry], needle: &str) -> AuditError {
    let report = plc::verify_audit_log(did, entries);
    let error = report
        .error()
        .unwrap_or_else(|| panic!("expected an error containing {needle:?}, got a valid log"));
    assert!(
        error.to_string().contains(needle),
        "error {:?} lacks {needle:?}",
        error.to_string()
    );
    assert!(!report.is_valid() && report.state().is_none() && report.head().is_none());
    error.clone()
}

fn key(algorithm: Algorithm, seed: u8) -> PrivateKey {
    PrivateKey::from_bytes(algorithm, &[seed; 32]).expect("a valid scalar")
}

fn did_key(key: &PrivateKey) -> String {
    key.public_key().to_did_key()
}

/// `2024-01-01T00:00:00.000Z` plus `ms` milliseconds (less than 28 days).
fn at(ms: i64) -> Datetime {
    let (seconds, millis) = (ms / 1000, ms % 1000);
    let text = format!(
        "2024-01-{:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        1 + seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60
    );
    Datetime::parse(&text).expect("valid datetime")
}

/// The keys of the constructed logs: three rotation keys in priority order (the strongest a
/// P-256 key) and an atproto signing key that is not a rotation key.
struct Keys {
    r0: PrivateKey,
    r1: PrivateKey,
    r2: PrivateKey,
    signing: PrivateKey,
}

fn keys() -> Keys {
    Keys {
        r0: key(Algorithm::P256, 1),
        r1: key(Algorithm::K256, 2),
        r2: key(Algorithm::K256, 3),
        signing: key(Algorithm::K256, 9),
    }
}

fn data(keys: &Keys, handle: &str) -> PlcData {
    PlcData::atproto(
        vec![did_key(&keys.r0), did_key(&keys.r1), did_key(&keys.r2)],
        &did_key(&keys.signing),
        &Handle::parse(handle).expect("valid handle"),
        "https://pds.example.com",
    )
}

/// A log under construction: entries are appended as the directory would record them.
struct Chain {
    did: Did,
    entries: Vec<AuditEntry>,
}

impl Chain {
    /// Starts a log with `genesis` signed by `signer`, at time 0.
    fn new(genesis: Operation, signer: &PrivateKey) -> Chain {
        let signed = genesis.sign(signer);
        let did = signed.genesis_did().expect("a genesis operation");
        let mut chain = Chain {
            did,
            entries: Vec::new(),
        };
        chain.push_signed(signed, 0);
        chain
    }

    /// The usual start: [`data`] signed by the weakest rotation key.
    fn standard(keys: &Keys) -> Chain {
        Chain::new(Operation::genesis(data(keys, "alice.test")), &keys.r2)
    }

    fn cid(&self, index: usize) -> Cid {
        *self.entries[index].cid()
    }

    fn push(&mut self, operation: Operation, signer: &PrivateKey, at_ms: i64) -> Cid {
        self.push_signed(operation.sign(signer), at_ms)
    }

    fn push_signed(&mut self, signed: SignedOperation, at_ms: i64) -> Cid {
        let cid = signed.cid();
        self.entries.push(AuditEntry::new(
            self.did.clone(),
            signed,
            cid,
            false,
            at(at_ms),
        ));
        cid
    }

    /// The entries with exactly the entries at `indices` marked nullified.
    fn flagged(&self, indices: &[usize]) -> Vec<AuditEntry> {
        with_nullified(&self.entries, indices)
    }
}

fn with_nullified(entries: &[AuditEntry], indices: &[usize]) -> Vec<AuditEntry> {
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            AuditEntry::new(
                entry.did().clone(),
                entry.operation().clone(),
                *entry.cid(),
                indices.contains(&index),
                entry.created_at().clone(),
            )
        })
        .collect()
}

/// The audit-log JSON of `entries`, as the directory serves it.
fn to_json(entries: &[AuditEntry]) -> Json {
    Json::Array(
        entries
            .iter()
            .map(|entry| {
                json!({
                    "did": entry.did().as_str(),
                    "operation": entry.operation_json(),
                    "cid": entry.cid().to_string(),
                    "nullified": entry.nullified(),
                    "createdAt": entry.created_at().as_str(),
                })
            })
            .collect(),
    )
}

fn parse(json: &Json) -> Result<Vec<AuditEntry>, AuditError> {
    plc::parse_audit_log(json.to_string().as_bytes())
}

/// `n - s` for the signature's `s`, turning a low-S signature into its high-S twin.
fn flip_s(signature: &[u8; 64], algorithm: Algorithm) -> [u8; 64] {
    let order: [u8; 32] = match algorithm {
        Algorithm::K256 => {
            hex32("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141")
        }
        Algorithm::P256 => {
            hex32("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551")
        }
    };
    let mut flipped = *signature;
    let mut borrow = 0i16;
    for index in (0..32).rev() {
        let mut digit = i16::from(order[index]) - i16::from(signature[32 + index]) - borrow;
        borrow = i16::from(digit < 0);
        if digit < 0 {
            digit += 256;
        }
        flipped[32 + index] = u8::try_from(digit).expect("a byte");
    }
    flipped
}

fn hex32(text: &str) -> [u8; 32] {
    let mut bytes = [0; 32];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * index..2 * index + 2], 16).expect("hex");
    }
    bytes
}

// ---- Logs from the reference implementations ----

/// Checks a verified account against the DID document the reference directory served for it,
/// which is in the legacy form (`EcdsaSecp256k1VerificationKey2019`, uncompressed key).
fn check_against_served_document(did: &Did, state: &PlcState, served: &Json) {
    let data = state.data().expect("active");
    let document = data.to_did_document(did).expect("renders");
    for field in ["id", "alsoKnownAs", "service"] {
        assert_eq!(document[field], served[field], "{field}");
    }
    let served_method = &served["verificationMethod"][0];
    let served_key = PublicKey::from_did_doc_method(
        served_method["type"].as_str().expect("type"),
        served_method["publicKeyMultibase"].as_str().expect("key"),
    )
    .expect("served key parses");
    let method = &document["verificationMethod"][0];
    assert_eq!(method["id"], format!("{did}#atproto"));
    assert_eq!(method["type"], "Multikey");
    assert_eq!(method["controller"], did.as_str());
    let key = PublicKey::parse_multikey(method["publicKeyMultibase"].as_str().expect("key"))
        .expect("parses");
    assert_eq!(key, served_key);
    assert_eq!(state.signing_key(), Some(served_key.to_did_key().as_str()));
}

#[test]
fn reference_directory_logs_verify() {
    let (did, entries) = fixture_log("alice_audit.json");
    let report = check_valid(&did, &entries);
    let state = report.state().expect("valid");
    assert_eq!(state.handle(), Some("alice.test"));
    assert_eq!(state.pds_endpoint(), Some("http://localhost:42113"));
    assert_eq!(report.head(), Some(entries[0].cid()));
    check_against_served_document(&did, state, &fixture_json("alice_did_doc.json"));

    let (did, entries) = fixture_log("carol_handle_change_audit.json");
    let report = check_valid(&did, &entries);
    assert_eq!((report.ops(), report.nullified()), (2, 0));
    let state = report.state().expect("valid");
    assert_eq!(state.handle(), Some("carol2.test"));
    assert_eq!(state.pds_endpoint(), Some("http://localhost:42113"));
    assert_eq!(report.head(), Some(entries[1].cid()));
    check_against_served_document(&did, state, &fixture_json("carol_did_doc.json"));
    // Before the change, the first operation alone is the whole valid history.
    let report = check_valid(&did, &entries[..1]);
    assert_eq!(
        report.state().and_then(PlcState::handle),
        Some("carol.test")
    );
}

#[test]
fn reference_library_recovery_log_verifies() {
    let (did, entries) = fixture_log("reference_recovery_audit.json");
    let report = check_valid(&did, &entries);
    assert_eq!(report.nullified(), 3);
    let state = report.state().expect("valid");
    assert_eq!(state.handle(), Some("recovered.test"));
    assert_eq!(state.pds_endpoint(), Some("https://new.example.com"));
    assert_eq!(report.head(), Some(entries[5].cid()));

    // Without the last recovery, the tombstone stands.
    let report = check_valid(&did, &with_nullified(&entries[..5], &[1, 2]));
    assert_eq!(report.state(), Some(&PlcState::Tombstoned));
    // Before the first recovery, the hijack stands.
    let report = check_valid(&did, &with_nullified(&entries[..3], &[]));
    assert_eq!(
        report.state().and_then(PlcState::handle),
        Some("hijacked.test")
    );
    assert_eq!(
        report.state().and_then(PlcState::pds_endpoint),
        Some("https://evil.example.com")
    );

    // The recovery came exactly 72h after the first hijack; one millisecond more is too late.
    let mut json = fixture_json("reference_recovery_audit.json");
    json[3]["createdAt"] = json!("2024-01-04T01:00:00.001Z");
    let late = parse(&json).expect("parses");
    check_invalid(&did, &late, "more than 72h after");

    // The flags are the reference's; any other set is wrong.
    check_invalid(&did, &with_nullified(&entries, &[1, 4]), "entry 2 (");
    check_invalid(
        &did,
        &with_nullified(&entries, &[1, 2, 3, 4]),
        "marked nullified=true, but the rules give nullified=false",
    );
}

#[test]
fn reference_library_legacy_create_log_verifies() {
    let (did, entries) = fixture_log("reference_legacy_create_audit.json");
    let genesis = entries[0].operation();
    let Operation::LegacyCreate(create) = genesis.operation() else {
        panic!("the fixture starts with a legacy create operation");
    };
    // The DID the reference computed is the one we derive from the legacy form.
    assert_eq!(genesis.genesis_did().as_ref(), Some(&did));

    let report = check_valid(&did, &entries[..1]);
    let state = report.state().expect("valid");
    assert_eq!(state.handle(), Some("legacy.test"));
    assert_eq!(state.pds_endpoint(), Some("https://pds.legacy.test"));
    assert_eq!(state.signing_key(), Some(create.signing_key.as_str()));
    let data = state.data().expect("active");
    assert_eq!(
        data.rotation_keys,
        [create.recovery_key.clone(), create.signing_key.clone()]
    );

    // The update is signed by the recovery key, the first of the equivalent rotation keys.
    let report = check_valid(&did, &entries);
    assert_eq!(
        report.state().and_then(PlcState::handle),
        Some("moved.test")
    );
    assert_eq!(
        report.state().and_then(PlcState::pds_endpoint),
        Some("https://pds.legacy.test")
    );
}

// ---- Constructed logs ----

#[test]
fn multi_op_chain_is_valid() {
    let keys = keys();
    let mut chain = Chain::standard(&keys);
    let mut next = data(&keys, "alice2.test");
    chain.push(
        Operation::update(chain.cid(0), next.clone()),
        &keys.r2,
        HOUR_MS,
    );
    next.set_pds_endpoint("https://pds2.example.com");
    chain.push(
        Operation::update(chain.cid(1), next.clone()),
        &keys.r0,
        2 * HOUR_MS,
    );
    // Rotate to a single new rotation key, which then signs the next operation.
    let new_rotation = key(Algorithm::P256, 7);
    next.rotation_keys = vec![did_key(&new_rotation)];
    chain.push(
        Operation::update(chain.cid(2), next.clone()),
        &keys.r1,
        3 * HOUR_MS,
    );
    let new_signing = key(Algorithm::P256, 8);
    next.verification_methods
        .insert("atproto".into(), did_key(&new_signing));
    chain.push(
        Operation::update(chain.cid(3), next),
        &new_rotation,
        4 * HOUR_MS,
    );

    let report = check_valid(&chain.did, &chain.entries);
    assert_eq!((report.ops(), report.nullified()), (5, 0));
    assert_eq!(report.head(), Some(&chain.cid(4)));
    let state = report.into_state().expect("valid");
    assert_eq!(state.handle(), Some("alice2.test"));
    assert_eq!(state.pds_endpoint(), Some("https://pds2.example.com"));
    assert_eq!(state.signing_key(), Some(did_key(&new_signing).as_str()));

    // The same log survives the trip through JSON.
    let reparsed = parse(&to_json(&chain.entries)).expect("parses");
    assert_eq!(reparsed, chain.entries);
}

#[test]
fn tampered_operation_is_rejected() {
    let keys = keys();
    let mut chain = Chain::standard(&keys);
    chain.push(
        Operation::update(chain.cid(0), data(&keys, "bob.test")),
        &keys.r2,
        HOUR_MS,
    );
    // A changed field no longer hashes to the recorded CID...
    let mut json = to_json(&chain.entries);
    json[1]["operation"]["alsoKnownAs"][0] = json!("at://mallory.test");
    let tampered = parse(&json).expect("parses");
    check_invalid(&chain.did, &tampered, "entry 1: cid is");

    // ...and with the CID recomputed, the signature no longer covers it.
    let tampered = tampered[1].operation().clone();
    let recomputed = AuditEntry::new(
        chain.did.clone(),
        tampered.clone(),
        tampered.cid(),
        false,
        at(HOUR_MS),
    );
    let entries = [chain.entries[0].clone(), recomputed];
    check_invalid(
        &chain.did,
        &entries,
        "signed by none of the 3 allowed rotation keys",
    );

    // A changed genesis operation creates another DID.
    let mut json = to_json(&chain.entries[..1]);
    json[0]["operation"]["alsoKnownAs"][0] = json!("at://mallory.test");
    let mut entries = parse(&json).expect("parses");
    let operation = entries[0].operation().clone();
    entries[0] = AuditEntry::new(
        chain.did.clone(),
        operation.clone(),
        operation.cid(),
        false,
        at(0),
    );
    check_invalid(
        &chain.did,
        &entries,
        "the genesis operation creates did:plc:",
    );
}

#[test]
fn wrong_did_is_rejected() {
    let keys = keys();
    let chain = Chain::standard(&keys);
    let other = Chain::new(Operation::genesis(data(&keys, "bob.test")), &keys.r2).did;
    assert_ne!(other, chain.did);
    let error = check_invalid(&other, &chain.entries, "expected did:plc:");
    assert!(matches!(error, AuditError::WrongDid { index: 0, .. }));
    // Filed under the other DID too, the genesis operation still hashes to its own DID.
    let refiled: Vec<AuditEntry> = chain
        .entries
        .iter()
        .map(|entry| {
            AuditEntry::new(
                other.clone(),
                entry.operation().clone(),
                *entry.cid(),
                false,
                entry.created_at().clone(),
            )
        })
        .collect();
    let error = check_invalid(&other, &refiled, "the genesis operation creates");
    assert!(matches!(error, AuditError::GenesisDidMismatch { .. }));
}

#[test]
fn signature_by_a_key_not_in_effect_is_rejected() {
    let keys = keys();
    // The atproto signing key is no rotation key.
    let mut chain = Chain::standard(&keys);
    chain.push(
        Operation::update(chain.cid(0), data(&keys, "bob.test")),
        &keys.signing,
        HOUR_MS,
    );
    let error = check_invalid(&chain.did, &chain.entries, "entry 1 (");
    assert!(
        matches!(error, AuditError::Signature { index: 1, .. }),
        "{error}"
    );

    // A genesis operation must be signed by one of its own rotation keys.
    let chain = Chain::new(Operation::genesis(data(&keys, "bob.test")), &keys.signing);
    check_invalid(&chain.did, &chain.entries, "entry 0 (");

    // An update is checked against the keys of prev, not its own.
    let mut chain = Chain::standard(&keys);
    let stranger = key(Algorithm::K256, 42);
    let mut next = data(&keys, "alice.test");
    next.rotation_keys = vec![did_key(&stranger)];
    chain.push(Operation::update(chain.cid(0), next), &stranger, HOUR_MS);
    check_invalid(&chain.did, &chain.entries, "signed by none of the 3");
}

#[test]
fn high_s_signatures_are_rejected() {
    let keys = keys();
    for (signer, algorithm) in [(&keys.r1, Algorithm::K256), (&keys.r0, Algorithm::P256)] {
        let mut chain = Chain::standard(&keys);
        let update = Operation::update(chain.cid(0), data(&keys, "bob.test"));
        let low = update.clone().sign(signer);
        let high = SignedOperation::from_parts(update, flip_s(low.signature(), algorithm));
        let mut valid = Chain::standard(&keys);
        valid.push_signed(low, HOUR_MS);
        check_valid(&valid.did, &valid.entries);
        chain.push_signed(high, HOUR_MS);
        check_invalid(&chain.did, &chain.entries, "must be low-S");
    }
}

#[test]
fn non_canonical_signature_encodings_are_rejected() {
    let keys = keys();
    let mut chain = Chain::standard(&keys);
    chain.push(
        Operation::update(chain.cid(0), data(&keys, "bob.test")),
        &keys.r2,
        HOUR_MS,
    );
    let json = to_json(&chain.entries);
    let sig = json[1]["operation"]["sig"]
        .as_str()
        .expect("sig")
        .to_owned();
    for bad in [
        format!("{sig}=="),
        format!("+{}", &sig[1..]),
        format!("/{}", &sig[1..]),
        format!("{sig} "),
        sig[..sig.len() - 1].to_owned(),
    ] {
        let mut json = json.clone();
        json[1]["operation"]["sig"] = json!(bad);
        let error = parse(&json).expect_err("rejected");
        assert!(
            error.to_string().starts_with("entry 1: operation sig:"),
            "{bad}: {error}"
        );
    }
}

/// A log where the weakest key (r2) makes two updates and r1 forks from the genesis operation
/// `recovery_ms` after the first of them.
fn hijack_and_recover(keys: &Keys, recovery_ms: i64, recovery_signer: &PrivateKey) -> Chain {
    let mut chain = Chain::standard(keys);
    chain.push(
        Operation::update(chain.cid(0), data(keys, "mallory.test")),
        &keys.r2,
        HOUR_MS,
    );
    chain.push(
        Operation::update(chain.cid(1), data(keys, "mallory2.test")),
        &keys.r2,
        2 * HOUR_MS,
    );
    chain.push(
        Operation::update(chain.cid(0), data(keys, "alice.test")),
        recovery_signer,
        HOUR_MS + recovery_ms,
    );
    chain
}

#[test]
fn recovery_by_a_stronger_key_within_72h_is_valid() {
    let keys = keys();
    let chain = hijack_and_recover(&keys, 3 * HOUR_MS, &keys.r1);
    let report = check_valid(&chain.did, &chain.flagged(&[1, 2]));
    assert_eq!(report.nullified(), 2);
    assert_eq!(report.head(), Some(&chain.cid(3)));
    assert_eq!(
        report.state().and_then(PlcState::handle),
        Some("alice.test")
    );

    // The strongest key may in turn undo that recovery, from the same prev.
    let mut chain = chain;
    chain.push(
        Operation::update(chain.cid(0), data(&keys, "alice3.test")),
        &keys.r0,
        5 * HOUR_MS,
    );
    let report = check_valid(&chain.did, &chain.flagged(&[1, 2, 3]));
    assert_eq!(
        report.state().and_then(PlcState::handle),
        Some("alice3.test")
    );

    // A recovery may fork from the middle of the chain too.
    let mut chain = hijack_and_recover(&keys, 3 * HOUR_MS, &keys.r1);
    chain.entries.truncate(3);
    chain.push(
        Operation::update(chain.cid(1), data(&keys, "alice.test")),
        &keys.r0,
        3 * HOUR_MS,
    );
    check_valid(&chain.did, &chain.flagged(&[2]));
}

#[test]
fn recovery_after_72h_is_invalid() {
    let keys = keys();
    let exactly = hijack_and_recover(&keys, WINDOW_MS, &keys.r1);
    check_valid(&exactly.did, &exactly.flagged(&[1, 2]));
    let late = hijack_and_recover(&keys, WINDOW_MS + 1, &keys.r1);
    let error = check_invalid(&late.did, &late.flagged(&[1, 2]), "more than 72h after");
    assert!(
        matches!(error, AuditError::LateRecovery { index: 3, first_nullified, .. } if first_nullified == late.cid(1))
    );
}

#[test]
fn recovery_by_an_equal_or_weaker_key_is_invalid() {
    let keys = keys();
    // r2 signed the first nullified operation; r2 itself does not outrank it.
    let chain = hijack_and_recover(&keys, 2 * HOUR_MS, &keys.r2);
    let error = check_invalid(
        &chain.did,
        &chain.flagged(&[1, 2]),
        "signed by rotation key 2, which does not outrank it",
    );
    assert!(matches!(
        error,
        AuditError::RecoveryKeyTooWeak {
            index: 3,
            disputed_key: 2,
            signer_key: 2,
            ..
        }
    ));

    // r1 signed the first nullified operation; r2 is weaker.
    let mut chain = Chain::standard(&keys);
    chain.push(
        Operation::update(chain.cid(0), data(&keys, "mallory.test")),
        &keys.r1,
        HOUR_MS,
    );
    chain.push(
        Operation::update(chain.cid(0), data(&keys, "alice.test")),
        &keys.r2,
        2 * HOUR_MS,
    );
    check_invalid(&chain.did, &chain.flagged(&[1]), "does not outrank it");

    // A second recovery from the same prev must outrank the first one's signer (r1).
    let mut chain = hijack_and_recover(&keys, 2 * HOUR_MS, &keys.r1);
    chain.push(
        Operation::update(chain.cid(0), data(&keys, "alice4.test")),
        &keys.r1,
        4 * HOUR_MS,
    );
    let error = check_invalid(&chain.did, &chain.flagged(&[1, 2, 3]), "does not outrank");
    assert!(matches!(
        error,
        AuditError::RecoveryKeyTooWeak {
            index: 4,
            disputed_key: 1,
            signer_key: 1,
            ..
        }
    ));
}

#[test]
fn nullified_flags_must_match_the_rules() {
    let keys = keys();
    let chain = hijack_and_recover(&keys, 2 * HOUR_MS, &keys.r1);
    for flags in [&[][..], &[1], &[2], &[1, 2, 3], &[0, 1, 2]] {
        check_invalid(&chain.did, &chain.flagged(flags), "marked nullified=");
    }
    let mut linear = Chain::standard(&keys);
    linear.push(
        Operation::update(linear.cid(0), data(&keys, "bob.test")),
        &keys.r2,
        HOUR_MS,
    );
    let error = check_invalid(&linear.did, &linear.flagged(&[1]), "marked nullified=true");
    assert!(matches!(
        error,
        AuditError::NullifiedMismatch {
            index: 1,
            expected: false,
            found: true,
            ..
        }
    ));
}

#[test]
fn nothing_may_follow_a_tombstone() {
    let keys = keys();
    let mut chain = Chain::standard(&keys);
    chain.push(Operation::tombstone(chain.cid(0)), &keys.r1, HOUR_MS);
    let report = check_valid(&chain.did, &chain.entries);
    assert_eq!(report.state(), Some(&PlcState::Tombstoned));
    assert!(report.state().is_some_and(PlcState::is_tombstoned));

    let mut after = Chain::standard(&keys);
    after.push(Operation::tombstone(after.cid(0)), &keys.r1, HOUR_MS);
    after.push(
        Operation::update(after.cid(1), data(&keys, "alice.test")),
        &keys.r0,
        2 * HOUR_MS,
    );
    let error = check_invalid(&after.did, &after.entries, "is a tombstone");
    assert!(matches!(
        error,
        AuditError::AfterTombstone {
            index: 2,
            prev_index: 1,
            ..
        }
    ));

    // A tombstone is nullified like any operation, by a stronger key within 72h.
    chain.push(
        Operation::update(chain.cid(0), data(&keys, "alice.test")),
        &keys.r0,
        2 * HOUR_MS,
    );
    let report = check_valid(&chain.did, &chain.flagged(&[1]));
    assert_eq!(
        report.state().and_then(PlcState::handle),
        Some("alice.test")
    );
}

#[test]
fn legacy_create_genesis_is_valid() {
    let keys = keys();
    let create = LegacyCreate {
        signing_key: did_key(&keys.signing),
        recovery_key: did_key(&keys.r0),
        handle: "legacy.test".into(),
        service: "https://pds.example.com".into(),
    };
    let mut chain = Chain::new(Operation::LegacyCreate(create.clone()), &keys.signing);
    let report = check_valid(&chain.did, &chain.entries);
    let data_after_genesis = report.state().and_then(PlcState::data).expect("active");
    assert_eq!(data_after_genesis, &create.normalize());
    assert_eq!(data_after_genesis.handle(), Some("legacy.test"));

    // The DID hashes the legacy form: the equivalent plc_operation gives another one.
    let normalized = Operation::genesis(create.normalize()).sign(&keys.signing);
    assert_ne!(normalized.genesis_did(), Some(chain.did.clone()));

    // The recovery key (first) outranks the signing key (second).
    let mut next = create.normalize();
    next.set_pds_endpoint("https://pds2.example.com");
    chain.push(Operation::update(chain.cid(0), next), &keys.r0, HOUR_MS);
    let report = check_valid(&chain.did, &chain.entries);
    assert_eq!(
        report.state().and_then(PlcState::pds_endpoint),
        Some("https://pds2.example.com")
    );

    // A legacy operation is a genesis operation only.
    let mut second = chain;
    let late_create = LegacyCreate {
        handle: "again.test".into(),
        ..create
    };
    second.push(Operation::LegacyCreate(late_create), &keys.r0, 2 * HOUR_MS);
    check_invalid(&second.did, &second.entries, "may only be the first entry");
}

#[test]
fn chain_structure_errors() {
    let keys = keys();
    let mut chain = Chain::standard(&keys);
    chain.push(
        Operation::update(chain.cid(0), data(&keys, "bob.test")),
        &keys.r2,
        HOUR_MS,
    );
    chain.push(
        Operation::update(chain.cid(1), data(&keys, "carol.test")),
        &keys.r2,
        2 * HOUR_MS,
    );
    let did = &chain.did;
    let entries = &chain.entries;

    check_invalid(did, &[], "audit log is empty");
    check_invalid(
        did,
        &entries[1..],
        "the first operation must be a genesis operation",
    );
    check_invalid(
        did,
        &[entries[0].clone(), entries[2].clone()],
        "is not an earlier entry of the log",
    );
    check_invalid(
        did,
        &[entries[0].clone(), entries[1].clone(), entries[1].clone()],
        "already appears at entry 1",
    );
    let reversed: Vec<AuditEntry> = entries.iter().rev().cloned().collect();
    check_invalid(did, &reversed, "must be a genesis operation");
    let second_genesis = Chain::new(Operation::genesis(data(&keys, "x.test")), &keys.r2);
    let mut two = entries[..1].to_vec();
    two.push(AuditEntry::new(
        did.clone(),
        second_genesis.entries[0].operation().clone(),
        second_genesis.cid(0),
        false,
        at(HOUR_MS),
    ));
    check_invalid(did, &two, "may only be the first entry");

    // Each operation must come strictly after the head it follows.
    let mut same_time = Chain::standard(&keys);
    same_time.push(
        Operation::update(same_time.cid(0), data(&keys, "bob.test")),
        &keys.r2,
        0,
    );
    let error = check_invalid(&same_time.did, &same_time.entries, "not after");
    assert!(matches!(
        error,
        AuditError::TimestampOrder {
            index: 1,
            previous_index: 0,
            ..
        }
    ));
    let mut recovery_before_head = hijack_and_recover(&keys, 0, &keys.r1);
    recovery_before_head.entries.truncate(3);
    recovery_before_head.push(
        Operation::update(recovery_before_head.cid(0), data(&keys, "alice.test")),
        &keys.r1,
        HOUR_MS + HOUR_MS / 2,
    );
    check_invalid(
        &recovery_before_head.did,
        &recovery_before_head.flagged(&[1, 2]),
        "not after 2024-01-01T02:00:00.000Z of entry 2",
    );

    // An operation may not follow one that a recovery nullified.
    let mut on_nullified = hijack_and_recover(&keys, 2 * HOUR_MS, &keys.r1);
    on_nullified.push(
        Operation::update(on_nullified.cid(2), data(&keys, "mallory3.test")),
        &keys.r2,
        4 * HOUR_MS,
    );
    let error = check_invalid(
        &on_nullified.did,
        &on_nullified.flagged(&[1, 2]),
        "was nullified",
    );
    assert!(matches!(
        error,
        AuditError::PrevNullified {
            index: 4,
            prev_index: 2,
            ..
        }
    ));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "audit log is not json"),
        (b"{", "audit log is not json"),
        (b"null", "must be a json array"),
        (b"{}", "must be a json array"),
        (b"[1]", "entry 0: expected an object"),
        (b"[{}]", "entry 0: missing field \"did\""),
        (br#"[{"did": 5}]"#, "entry 0: did must be a string"),
        (br#"[{"did": "not a did"}]"#, "entry 0: did:"),
    ];
    for (input, needle) in cases {
        let error = plc::parse_audit_log(input).expect_err("rejected");
        assert!(
            error.to_string().contains(needle),
            "{error} lacks {needle:?}"
        );
    }

    let valid = to_json(&Chain::standard(&keys()).entries);
    let entry_cases = [
        ("nullified", json!("false"), "nullified must be a boolean"),
        ("createdAt", json!("yesterday"), "entry 0: createdAt:"),
        (
            "createdAt",
            json!(1_700_000_000),
            "createdAt must be a string",
        ),
        ("cid", json!("bafy"), "entry 0: cid:"),
        (
            "operation",
            json!([]),
            "entry 0: operation at $: expected an object",
        ),
        (
            "operation",
            json!({"type": "plc_identity"}),
            "operation type \"plc_identity\"",
        ),
    ];
    for (field, value, needle) in entry_cases {
        let mut json = valid.clone();
        json[0][field] = value;
        let error = parse(&json).expect_err("rejected");
        assert!(
            error.to_string().contains(needle),
            "{error} lacks {needle:?}"
        );
    }
    // A CID in another base is not the canonical form.
    let mut json = valid.clone();
    let cid: Cid = json[0]["cid"]
        .as_str()
        .expect("cid")
        .parse()
        .expect("valid");
    json[0]["cid"] = json!(cid
        .to_string_of_base(multibase::Base::Base58Btc)
        .expect("encodes"));
    let error = parse(&json).expect_err("rejected");
    assert!(
        error.to_string().contains("not in canonical form"),
        "{error}"
    );

    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(
        plc::parse_audit_log(deep.as_bytes()),
        Err(AuditError::Json { .. })
    ));
    let huge = vec![b' '; plc::MAX_AUDIT_LOG_BYTES + 1];
    assert!(matches!(
        plc::parse_audit_log(&huge),
        Err(AuditError::TooLarge { .. })
    ));
    let many = format!("[{}0]", "0,".repeat(plc::MAX_AUDIT_ENTRIES));
    assert!(matches!(
        plc::parse_audit_log(many.as_bytes()),
        Err(AuditError::TooManyEntries { .. })
    ));

    // Every single-byte corruption of a real log is an error or a valid log, never a panic.
    let (did, _) = fixture_log("reference_recovery_audit.json");
    let original = fixture("reference_recovery_audit.json");
    for position in (0..original.len()).step_by(7) {
        for replacement in [b'0', b'"'] {
            let mut corrupted = original.clone();
            corrupted[position] = replacement;
            if let Ok(entries) = plc::parse_audit_log(&corrupted) {
                let _ = plc::verify_audit_log(&did, &entries);
            }
        }
    }
}

// ---- The live reference directory ----

struct Http {
    client: butterfly_net::HttpClient,
}

impl Http {
    fn new() -> Http {
        let config = butterfly_net::HttpConfig::with_private_network(true);
        Http {
            client: butterfly_net::HttpClient::new(&config).expect("http client"),
        }
    }

    async fn send(
        &self,
        method: butterfly_net::reqwest::Method,
        url: &str,
        body: Option<&Json>,
        bearer: Option<&str>,
    ) -> (u16, Vec<u8>) {
        let url = butterfly_net::url::Url::parse(url).expect("valid url");
        let mut request = self.client.request(method, &url).expect("allowed url");
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        if let Some(token) = bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = self
            .client
            .send_limited(request, &url, plc::MAX_AUDIT_LOG_BYTES)
            .await
            .unwrap_or_else(|error| panic!("{url}: {error}"));
        (response.status, response.body.to_vec())
    }

    async fn get(&self, url: &str) -> Vec<u8> {
        let (status, body) = self
            .send(butterfly_net::reqwest::Method::GET, url, None, None)
            .await;
        assert_eq!(status, 200, "GET {url}: {}", String::from_utf8_lossy(&body));
        body
    }

    async fn post(&self, url: &str, body: &Json, bearer: Option<&str>) -> (u16, String) {
        let (status, body) = self
            .send(
                butterfly_net::reqwest::Method::POST,
                url,
                Some(body),
                bearer,
            )
            .await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// Fetches and verifies a DID's audit log from the live directory.
async fn live_audit(http: &Http, plc_url: &str, did: &Did) -> (Vec<AuditEntry>, AuditReport) {
    let body = http.get(&format!("{plc_url}/{did}/log/audit")).await;
    let entries = plc::parse_audit_log(&body).expect("the directory's log parses");
    let report = plc::verify_audit_log(did, &entries);
    (entries, report)
}

#[tokio::test(flavor = "multi_thread")]
async fn live_reference_directory_round_trip() {
    let network = butterfly_testnet::TestNetwork::start();
    let http = Http::new();

    // Every seeded account's log verifies and agrees with the document the directory serves.
    for account in &network.accounts {
        let did = Did::parse(&account.did).expect("valid did");
        let (_, report) = live_audit(&http, &network.plc, &did).await;
        assert!(
            report.is_valid(),
            "{}: {:?}",
            account.handle,
            report.error()
        );
        let state = report.state().expect("valid");
        assert_eq!(state.handle(), Some(account.handle.as_str()));
        assert_eq!(state.pds_endpoint(), Some(network.pds.as_str()));
        let served: Json =
            serde_json::from_slice(&http.get(&format!("{}/{did}", network.plc)).await)
                .expect("json document");
        check_against_served_document(&did, state, &served);
    }

    // A handle change made through the PDS adds a second operation, signed by the PDS's key.
    let carol = network.account("carol");
    let (status, session) = http
        .post(
            &format!("{}/xrpc/com.atproto.server.createSession", network.pds),
            &json!({"identifier": carol.handle, "password": carol.password}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let session: Json = serde_json::from_str(&session).expect("json");
    let token = session["accessJwt"].as_str().expect("accessJwt");
    let (status, body) = http
        .post(
            &format!("{}/xrpc/com.atproto.identity.updateHandle", network.pds),
            &json!({"handle": "carol2.test"}),
            Some(token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let carol_did = Did::parse(&carol.did).expect("valid did");
    let (entries, report) = live_audit(&http, &network.plc, &carol_did).await;
    assert!(report.is_valid(), "{:?}", report.error());
    assert_eq!(entries.len(), 2);
    assert_eq!(
        report.state().and_then(PlcState::handle),
        Some("carol2.test")
    );

    // An identity managed here: every operation our signing helpers make is one the directory
    // accepts, and its log, recovery and tombstone included, verifies.
    let keys = keys();
    let genesis = Operation::genesis(data(&keys, "self.test"));
    genesis.validate().expect("acceptable");
    let genesis = genesis.sign(&keys.r2);
    let did = genesis.genesis_did().expect("genesis");
    let submit = |operation: SignedOperation| {
        let url = format!("{}/{did}", network.plc);
        let http = &http;
        async move { http.post(&url, &operation.to_json(), None).await }
    };
    let (status, body) = submit(genesis.clone()).await;
    assert_eq!(status, 200, "genesis: {body}");
    let hijack = Operation::update(genesis.cid(), data(&keys, "mallory.test")).sign(&keys.r2);
    let (status, body) = submit(hijack.clone()).await;
    assert_eq!(status, 200, "update: {body}");
    let recovery = Operation::update(genesis.cid(), data(&keys, "self.test")).sign(&keys.r1);
    let (status, body) = submit(recovery.clone()).await;
    assert_eq!(status, 200, "recovery: {body}");

    // A second recovery by a key that does not outrank r1 is refused, here and there.
    let weak = Operation::update(genesis.cid(), data(&keys, "mallory2.test")).sign(&keys.r2);
    let (status, body) = submit(weak.clone()).await;
    assert!(
        status >= 400,
        "the directory accepted a weak recovery: {body}"
    );
    assert!(body.contains("Invalid signature"), "{body}");
    let (mut entries, report) = live_audit(&http, &network.plc, &did).await;
    assert!(report.is_valid(), "{:?}", report.error());
    let later = Datetime::parse("9999-01-01T00:00:00Z").expect("valid");
    entries.push(AuditEntry::new(
        did.clone(),
        weak.clone(),
        weak.cid(),
        false,
        later,
    ));
    check_invalid(&did, &entries, "does not outrank it");

    let tombstone = Operation::tombstone(recovery.cid()).sign(&keys.r1);
    let (status, body) = submit(tombstone.clone()).await;
    assert_eq!(status, 200, "tombstone: {body}");
    let (entries, report) = live_audit(&http, &network.plc, &did).await;
    assert!(report.is_valid(), "{:?}", report.error());
    let flags: Vec<bool> = entries.iter().map(AuditEntry::nullified).collect();
    assert_eq!(flags, [false, true, false, false]);
    assert_eq!(report.state(), Some(&PlcState::Tombstoned));
    assert_eq!(report.head(), Some(&tombstone.cid()));
}
