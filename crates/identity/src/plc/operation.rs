//! PLC operations: their JSON and DAG-CBOR forms, signing, signature checks, CIDs and the DID of a
//! genesis operation.

use std::collections::BTreeMap;

use base64::Engine;
use butterfly_crypto::{PrivateKey, PublicKey, VerifyError, SIGNATURE_LEN};
use butterfly_data::{Map, Value};
use butterfly_syntax::{Did, Handle};
use cid::Cid;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

/// The largest signed operation the PLC directory accepts, in bytes of DAG-CBOR (spec: "the
/// current limit is 7500 bytes"). Checked by [`Operation::validate`], for operations about to be
/// submitted; not by audit-log verification, which judges history by the rules of signatures and
/// hashes only.
pub const MAX_OPERATION_CBOR_LEN: usize = 7500;

/// The most rotation keys an operation may list when it is parsed. The spec allows 1 to 5 for new
/// operations ([`Operation::validate`] checks that); parsing is looser so that old logs with
/// duplicated keys still verify, but bounded, because every key tried costs a signature check.
pub const MAX_PARSED_ROTATION_KEYS: usize = 16;

/// The rotation keys the directory allows in a new operation (spec: "at least 1 key and at most
/// 5 keys, with no duplication").
const MAX_NEW_ROTATION_KEYS: usize = 5;

/// The `verificationMethods` entry that holds the atproto signing key.
pub const ATPROTO_VERIFICATION_METHOD: &str = "atproto";
/// The `services` entry that names the account's PDS.
pub const ATPROTO_PDS_SERVICE: &str = "atproto_pds";
/// The `type` of the [`ATPROTO_PDS_SERVICE`] entry.
pub const ATPROTO_PDS_TYPE: &str = "AtprotoPersonalDataServer";

const TYPE_OPERATION: &str = "plc_operation";
const TYPE_TOMBSTONE: &str = "plc_tombstone";
const TYPE_LEGACY_CREATE: &str = "create";

/// Strict base64url: the URL-safe alphabet, no padding, and zero trailing bits (the base64 crate
/// rejects non-canonical trailing bits unless told otherwise).
const SIG_BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why an operation could not be parsed, built or validated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OperationError {
    /// A field is missing or has the wrong JSON type.
    #[error("operation at {path}: {message}")]
    Shape {
        /// JSON path of the offending value, such as `$.rotationKeys[1]`.
        path: String,
        /// What was expected and what was found.
        message: String,
    },
    /// The `type` is none of `plc_operation`, `plc_tombstone` and `create`.
    #[error(
        "operation type {found:?} is unknown, expected plc_operation, plc_tombstone or create"
    )]
    UnknownType {
        /// The type found (shortened if long).
        found: String,
    },
    /// An object holds a field its operation type does not have. Operations are hashed and signed
    /// as a whole, so an extra field is never harmless.
    #[error("operation at {path}: unknown field {field:?}")]
    UnknownField {
        /// JSON path of the object.
        path: String,
        /// The field name (shortened if long).
        field: String,
    },
    /// `sig` is not strict unpadded base64url of 64 bytes.
    #[error("operation sig: {reason}")]
    Signature {
        /// What was wrong.
        reason: String,
    },
    /// `prev` is not a CID in its canonical string form, or is null where it may not be.
    #[error("operation prev {found:?}: {reason}")]
    Prev {
        /// The value found (shortened if long).
        found: String,
        /// What was wrong.
        reason: String,
    },
    /// Too many or too few rotation keys: at most [`MAX_PARSED_ROTATION_KEYS`] when parsing, 1 to
    /// 5 in a new operation.
    #[error("operation lists {count} rotation keys, expected {min} to {max}")]
    RotationKeyCount {
        /// The number of keys.
        count: usize,
        /// The fewest allowed.
        min: usize,
        /// The most allowed.
        max: usize,
    },
    /// A new operation lists the same rotation key twice.
    #[error("rotation key {key} is listed twice")]
    DuplicateRotationKey {
        /// The key.
        key: String,
    },
    /// A key is not a did:key of a supported curve.
    #[error("{field} {key:?} is not a supported did:key: {reason}")]
    InvalidKey {
        /// Where the key is, such as `rotationKeys[0]` or `verificationMethods.atproto`.
        field: String,
        /// The key (shortened if long).
        key: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A new operation would be larger than [`MAX_OPERATION_CBOR_LEN`] once signed.
    #[error("signed operation would be {len} bytes of dag-cbor, more than the limit of {max}")]
    TooLarge {
        /// The size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// One service of a DID: its `type` and `endpoint`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// The service type, such as [`ATPROTO_PDS_TYPE`].
    pub service_type: String,
    /// The endpoint URL, such as `https://pds.example.com`.
    pub endpoint: String,
}

/// The identity data a `plc_operation` sets: everything but `type`, `prev` and `sig`.
///
/// This is also the state of an active DID (the directory's `/{did}/data`). Keys are `did:key`
/// strings, kept as written so that the operation hashes to the same bytes; they are parsed when a
/// signature is checked ([`SignedOperation::verify_signature`]) or a DID document is rendered.
///
/// The maps are ordered by key. The directory renders DID documents in the order the operation's
/// JSON lists them, so with several verification methods or services, their order in
/// [`PlcData::to_did_document`] may differ from the directory's; the content does not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlcData {
    /// `rotationKeys`: the did:keys that may sign the next operation, highest priority first.
    pub rotation_keys: Vec<String>,
    /// `verificationMethods`: id (without `#`) to did:key; `atproto` is the repo signing key.
    pub verification_methods: BTreeMap<String, String>,
    /// `alsoKnownAs`: URIs, the first `at://` one being the handle.
    pub also_known_as: Vec<String>,
    /// `services`: id (without `#`) to service; `atproto_pds` is the PDS.
    pub services: BTreeMap<String, Service>,
}

impl PlcData {
    /// The data of a typical atproto account: one signing key, one handle and one PDS, as the
    /// reference implementation's `formatAtprotoOp` builds it.
    pub fn atproto(
        rotation_keys: Vec<String>,
        signing_key: &str,
        handle: &Handle,
        pds_endpoint: &str,
    ) -> PlcData {
        let mut data = PlcData {
            rotation_keys,
            ..PlcData::default()
        };
        data.verification_methods.insert(
            ATPROTO_VERIFICATION_METHOD.to_owned(),
            signing_key.to_owned(),
        );
        data.set_handle(handle);
        data.set_pds_endpoint(pds_endpoint);
        data
    }

    /// Replaces the first `at://` entry of `alsoKnownAs` with `at://HANDLE`, or puts one first if
    /// there is none (what the reference implementation's `updateHandleOp` does).
    pub fn set_handle(&mut self, handle: &Handle) {
        let uri = format!("at://{}", handle.as_str());
        match self
            .also_known_as
            .iter()
            .position(|entry| entry.starts_with("at://"))
        {
            Some(position) => self.also_known_as[position] = uri,
            None => self.also_known_as.insert(0, uri),
        }
    }

    /// Sets the `atproto_pds` service to this endpoint.
    pub fn set_pds_endpoint(&mut self, endpoint: &str) {
        self.services.insert(
            ATPROTO_PDS_SERVICE.to_owned(),
            Service {
                service_type: ATPROTO_PDS_TYPE.to_owned(),
                endpoint: endpoint.to_owned(),
            },
        );
    }

    /// Checks the rules the directory applies to a new operation's data: 1 to 5 distinct rotation
    /// keys, and every rotation key and verification method a did:key on P-256 or K-256.
    pub fn validate(&self) -> Result<(), OperationError> {
        let count = self.rotation_keys.len();
        if !(1..=MAX_NEW_ROTATION_KEYS).contains(&count) {
            return Err(OperationError::RotationKeyCount {
                count,
                min: 1,
                max: MAX_NEW_ROTATION_KEYS,
            });
        }
        for (index, key) in self.rotation_keys.iter().enumerate() {
            if self.rotation_keys[..index].contains(key) {
                return Err(OperationError::DuplicateRotationKey { key: excerpt(key) });
            }
            check_did_key(&format!("rotationKeys[{index}]"), key)?;
        }
        for (id, key) in &self.verification_methods {
            check_did_key(&format!("verificationMethods.{id}"), key)?;
        }
        Ok(())
    }
}

fn check_did_key(field: &str, key: &str) -> Result<PublicKey, OperationError> {
    PublicKey::parse_did_key(key).map_err(|error| OperationError::InvalidKey {
        field: field.to_owned(),
        key: excerpt(key),
        reason: error.to_string(),
    })
}

/// A `plc_operation`: a genesis operation (`prev` is `None`) or an update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlcOperation {
    /// The identity data it sets.
    pub data: PlcData,
    /// The CID of the operation it follows; `None` for a genesis operation.
    pub prev: Option<Cid>,
}

/// A `plc_tombstone`: deactivates the DID for good (unless a higher-priority rotation key
/// nullifies it within the recovery window).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// The CID of the operation it follows.
    pub prev: Cid,
}

/// The deprecated genesis format, type `create`, still found at the start of old logs.
///
/// It is signed and hashed in this form; for everything else it stands for the `plc_operation`
/// given by [`LegacyCreate::normalize`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyCreate {
    /// `signingKey`: the atproto signing key, also the second rotation key.
    pub signing_key: String,
    /// `recoveryKey`: the first rotation key.
    pub recovery_key: String,
    /// `handle`: a bare handle, without `at://`.
    pub handle: String,
    /// `service`: the PDS URL.
    pub service: String,
}

impl LegacyCreate {
    /// The equivalent `plc_operation` data, as the reference implementation's `normalizeOp`
    /// computes it: rotation keys `[recoveryKey, signingKey]`, verification method `atproto` =
    /// `signingKey`, `alsoKnownAs` = the handle with `at://` added (after removing one `http://`
    /// and one `https://`, as the reference does) unless it already starts with `at://`, and
    /// `atproto_pds` = the service with `https://` added unless it starts with `http://` or
    /// `https://`.
    pub fn normalize(&self) -> PlcData {
        let handle = if self.handle.starts_with("at://") {
            self.handle.clone()
        } else {
            let stripped = self.handle.replacen("http://", "", 1);
            format!("at://{}", stripped.replacen("https://", "", 1))
        };
        let endpoint =
            if self.service.starts_with("http://") || self.service.starts_with("https://") {
                self.service.clone()
            } else {
                format!("https://{}", self.service)
            };
        let mut data = PlcData {
            rotation_keys: vec![self.recovery_key.clone(), self.signing_key.clone()],
            also_known_as: vec![handle],
            ..PlcData::default()
        };
        data.verification_methods.insert(
            ATPROTO_VERIFICATION_METHOD.to_owned(),
            self.signing_key.clone(),
        );
        data.set_pds_endpoint(&endpoint);
        data
    }
}

/// An unsigned PLC operation of any of the three types.
///
/// Build one with [`Operation::genesis`], [`Operation::update`] or [`Operation::tombstone`] (or
/// the variants directly), then [`Operation::sign`] it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A `plc_operation`.
    Plc(PlcOperation),
    /// A `plc_tombstone`.
    Tombstone(Tombstone),
    /// A legacy `create`, genesis only.
    LegacyCreate(LegacyCreate),
}

impl Operation {
    /// A genesis `plc_operation`: `prev` is null. Sign it with one of `data.rotation_keys`.
    pub fn genesis(data: PlcData) -> Operation {
        Operation::Plc(PlcOperation { data, prev: None })
    }

    /// An update that follows `prev`. Sign it with a rotation key of the operation `prev` names.
    pub fn update(prev: Cid, data: PlcData) -> Operation {
        Operation::Plc(PlcOperation {
            data,
            prev: Some(prev),
        })
    }

    /// A tombstone that follows `prev`. Sign it with a rotation key of the operation `prev` names.
    pub fn tombstone(prev: Cid) -> Operation {
        Operation::Tombstone(Tombstone { prev })
    }

    /// The operation's `type` field.
    pub fn type_name(&self) -> &'static str {
        match self {
            Operation::Plc(_) => TYPE_OPERATION,
            Operation::Tombstone(_) => TYPE_TOMBSTONE,
            Operation::LegacyCreate(_) => TYPE_LEGACY_CREATE,
        }
    }

    /// The CID of the operation this one follows; `None` for a genesis operation.
    pub fn prev(&self) -> Option<&Cid> {
        match self {
            Operation::Plc(operation) => operation.prev.as_ref(),
            Operation::Tombstone(tombstone) => Some(&tombstone.prev),
            Operation::LegacyCreate(_) => None,
        }
    }

    /// Whether this is a genesis operation (its `prev` is null).
    pub fn is_genesis(&self) -> bool {
        self.prev().is_none()
    }

    /// Whether this is a tombstone.
    pub fn is_tombstone(&self) -> bool {
        matches!(self, Operation::Tombstone(_))
    }

    /// The identity data this operation leaves in place: `None` for a tombstone, the normalized
    /// form for a legacy `create`.
    pub fn data(&self) -> Option<PlcData> {
        match self {
            Operation::Plc(operation) => Some(operation.data.clone()),
            Operation::Tombstone(_) => None,
            Operation::LegacyCreate(create) => Some(create.normalize()),
        }
    }

    /// The rotation keys that may sign the operation after this one, highest priority first:
    /// `rotationKeys`, `[recoveryKey, signingKey]` for a legacy `create`, none for a tombstone.
    pub fn rotation_keys(&self) -> Vec<String> {
        match self {
            Operation::Plc(operation) => operation.data.rotation_keys.clone(),
            Operation::Tombstone(_) => Vec::new(),
            Operation::LegacyCreate(create) => {
                vec![create.recovery_key.clone(), create.signing_key.clone()]
            }
        }
    }

    /// Checks the rules the directory applies before it accepts an operation: those of
    /// [`PlcData::validate`] (for a legacy `create`, on its normalized data), and a signed size of
    /// at most [`MAX_OPERATION_CBOR_LEN`] bytes.
    pub fn validate(&self) -> Result<(), OperationError> {
        if let Some(data) = self.data() {
            data.validate()?;
        }
        // Every signature encodes to the same length, so a zero signature gives the signed size.
        let len = to_value(self, Some(&[0; SIGNATURE_LEN])).to_cbor().len();
        if len > MAX_OPERATION_CBOR_LEN {
            return Err(OperationError::TooLarge {
                len,
                max: MAX_OPERATION_CBOR_LEN,
            });
        }
        Ok(())
    }

    /// The bytes a signature covers: the DAG-CBOR of the operation without `sig`.
    pub fn unsigned_cbor(&self) -> Vec<u8> {
        to_value(self, None).to_cbor()
    }

    /// Signs the operation with `key` (deterministic, low-S).
    ///
    /// Nothing is checked here: call [`Operation::validate`] first for an operation you will
    /// submit, and make sure `key` is a rotation key of the right operation (its own for a genesis
    /// operation, the one `prev` names otherwise).
    pub fn sign(self, key: &PrivateKey) -> SignedOperation {
        let signature = key.sign(&self.unsigned_cbor());
        SignedOperation {
            operation: self,
            signature,
        }
    }
}

/// An operation with its signature, as it appears in a log.
///
/// Parse one with [`SignedOperation::from_json`] or make one with [`Operation::sign`]. Parsing is
/// strict: the exact fields of the operation's type and no others, each of the right JSON type;
/// `prev` a CID in canonical form; `sig` strict base64url (no padding, URL-safe alphabet, zero
/// trailing bits) of exactly 64 bytes. So [`SignedOperation::to_json`] gives back the same
/// fields and values, and the DAG-CBOR this type encodes is the DAG-CBOR the directory hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedOperation {
    operation: Operation,
    signature: [u8; SIGNATURE_LEN],
}

impl SignedOperation {
    /// Puts an operation and a signature together, without checking the signature: for a
    /// signature made elsewhere (a hardware key, a remote signer) over
    /// [`Operation::unsigned_cbor`].
    pub fn from_parts(operation: Operation, signature: [u8; SIGNATURE_LEN]) -> SignedOperation {
        SignedOperation {
            operation,
            signature,
        }
    }

    /// Parses an operation as the directory serves it (an entry's `operation` in an audit log).
    pub fn from_json(json: &Json) -> Result<SignedOperation, OperationError> {
        parse_signed(json)
    }

    /// The operation.
    pub fn operation(&self) -> &Operation {
        &self.operation
    }

    /// The signature: compact `r || s`.
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }

    /// The JSON form, as submitted to and served by the directory.
    pub fn to_json(&self) -> Json {
        to_value(&self.operation, Some(&self.signature)).to_json()
    }

    /// The DAG-CBOR of the signed operation: what its CID and, for a genesis operation, its DID
    /// are computed from.
    pub fn to_cbor(&self) -> Vec<u8> {
        to_value(&self.operation, Some(&self.signature)).to_cbor()
    }

    /// The operation's CID: CIDv1, dag-cbor, sha-256 of [`SignedOperation::to_cbor`]. The next
    /// operation names it as `prev`.
    pub fn cid(&self) -> Cid {
        butterfly_data::cid_for_cbor(&self.to_cbor())
    }

    /// The DID a genesis operation creates: `did:plc:` and the first 24 characters of the
    /// lowercase, unpadded base32 (RFC 4648) of the SHA-256 of [`SignedOperation::to_cbor`].
    /// `None` if this is not a genesis operation.
    pub fn genesis_did(&self) -> Option<Did> {
        if !self.operation.is_genesis() {
            return None;
        }
        let digest = Sha256::digest(self.to_cbor());
        // Base32Lower prints "b" and then the unpadded lowercase base32 of the digest.
        let encoded = multibase::encode(multibase::Base::Base32Lower, digest);
        let identifier = encoded.get(1..25).unwrap_or_default();
        #[allow(clippy::expect_used)]
        let did = Did::parse(&format!("did:plc:{identifier}"))
            .expect("24 lowercase base32 characters make a valid did:plc");
        Some(did)
    }

    /// Checks the signature against `rotation_keys` in order and returns the index of the first
    /// key that made it.
    ///
    /// A key that is not a supported did:key is an error as soon as it is reached (the reference
    /// implementation does the same); keys after the one that matches are not parsed.
    pub fn verify_signature(&self, rotation_keys: &[String]) -> Result<usize, SignatureError> {
        if rotation_keys.is_empty() {
            return Err(SignatureError::NoKeys);
        }
        let message = self.operation.unsigned_cbor();
        let mut reason = None;
        for (index, did_key) in rotation_keys.iter().enumerate() {
            let key =
                PublicKey::parse_did_key(did_key).map_err(|error| SignatureError::InvalidKey {
                    index,
                    key: excerpt(did_key),
                    reason: error.to_string(),
                })?;
            match key.verify(&message, &self.signature) {
                Ok(()) => return Ok(index),
                // A malformed signature (high-S, out of range) says more than a plain mismatch.
                Err(VerifyError::Mismatch { .. }) => {}
                Err(error) => reason = Some(error),
            }
        }
        Err(SignatureError::NoMatch {
            n_keys: rotation_keys.len(),
            reason,
        })
    }
}

/// Why [`SignedOperation::verify_signature`] found no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The list of allowed keys is empty.
    #[error("no rotation key may sign it")]
    NoKeys,
    /// An allowed key is not a supported did:key.
    #[error("rotation key {index} ({key:?}) is not a supported did:key: {reason}")]
    InvalidKey {
        /// Its index in the list.
        index: usize,
        /// The key (shortened if long).
        key: String,
        /// Why it does not parse.
        reason: String,
    },
    /// No allowed key made the signature.
    #[error("{}", no_match_message(*n_keys, reason))]
    NoMatch {
        /// How many keys were tried.
        n_keys: usize,
        /// A reason more specific than a mismatch, if a key gave one (such as high-S).
        reason: Option<VerifyError>,
    },
}

fn no_match_message(n_keys: usize, reason: &Option<VerifyError>) -> String {
    let keys = if n_keys == 1 { "key" } else { "keys" };
    match reason {
        Some(reason) => {
            format!("signed by none of the {n_keys} allowed rotation {keys} ({reason})")
        }
        None => format!("signed by none of the {n_keys} allowed rotation {keys}"),
    }
}

/// Shortens untrusted text for an error message.
pub(crate) fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    if text.chars().count() <= MAX_CHARS {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(MAX_CHARS).collect();
        short.push('…');
        short
    }
}

// ---- Encoding ----
//
// Values are built by hand rather than through `Value::from_json`, which would read a map such as
// `{"$link": "..."}` in `verificationMethods` as a CID link and so hash different bytes than the
// directory did.

fn to_value(operation: &Operation, signature: Option<&[u8; SIGNATURE_LEN]>) -> Value {
    let mut map = Map::new();
    map.insert("type".into(), text(operation.type_name()));
    match operation {
        Operation::Plc(operation) => {
            let data = &operation.data;
            map.insert("rotationKeys".into(), text_array(&data.rotation_keys));
            map.insert(
                "verificationMethods".into(),
                Value::Map(
                    data.verification_methods
                        .iter()
                        .map(|(id, key)| (id.clone(), text(key)))
                        .collect(),
                ),
            );
            map.insert("alsoKnownAs".into(), text_array(&data.also_known_as));
            map.insert(
                "services".into(),
                Value::Map(
                    data.services
                        .iter()
                        .map(|(id, service)| {
                            let mut entry = Map::new();
                            entry.insert("type".into(), text(&service.service_type));
                            entry.insert("endpoint".into(), text(&service.endpoint));
                            (id.clone(), Value::Map(entry))
                        })
                        .collect(),
                ),
            );
            map.insert("prev".into(), prev_value(operation.prev.as_ref()));
        }
        Operation::Tombstone(tombstone) => {
            map.insert("prev".into(), prev_value(Some(&tombstone.prev)));
        }
        Operation::LegacyCreate(create) => {
            map.insert("signingKey".into(), text(&create.signing_key));
            map.insert("recoveryKey".into(), text(&create.recovery_key));
            map.insert("handle".into(), text(&create.handle));
            map.insert("service".into(), text(&create.service));
            map.insert("prev".into(), Value::Null);
        }
    }
    if let Some(signature) = signature {
        map.insert("sig".into(), Value::String(SIG_BASE64.encode(signature)));
    }
    Value::Map(map)
}

fn text(value: &str) -> Value {
    Value::String(value.to_owned())
}

fn text_array(values: &[String]) -> Value {
    Value::Array(values.iter().map(|value| text(value)).collect())
}

/// In PLC operations `prev` is the CID's string form, not a DAG-CBOR link.
fn prev_value(prev: Option<&Cid>) -> Value {
    match prev {
        Some(cid) => Value::String(cid.to_string()),
        None => Value::Null,
    }
}

// ---- Parsing ----

fn parse_signed(json: &Json) -> Result<SignedOperation, OperationError> {
    let object = object_at(json, "$")?;
    let type_name = string_at(field(object, "type", "$")?, "$.type")?;
    let (allowed, operation): (&[&str], Operation) = match type_name {
        TYPE_OPERATION => (
            &[
                "type",
                "rotationKeys",
                "verificationMethods",
                "alsoKnownAs",
                "services",
                "prev",
                "sig",
            ],
            Operation::Plc(parse_plc_operation(object)?),
        ),
        TYPE_TOMBSTONE => (
            &["type", "prev", "sig"],
            Operation::Tombstone(Tombstone {
                prev: parse_prev(field(object, "prev", "$")?)?
                    .ok_or_else(|| prev_error("null", "a tombstone must name its prev"))?,
            }),
        ),
        TYPE_LEGACY_CREATE => (
            &[
                "type",
                "signingKey",
                "recoveryKey",
                "handle",
                "service",
                "prev",
                "sig",
            ],
            Operation::LegacyCreate(parse_legacy_create(object)?),
        ),
        other => {
            return Err(OperationError::UnknownType {
                found: excerpt(other),
            })
        }
    };
    check_fields(object, allowed, "$")?;
    let signature = parse_signature(field(object, "sig", "$")?)?;
    Ok(SignedOperation {
        operation,
        signature,
    })
}

fn parse_plc_operation(
    object: &serde_json::Map<String, Json>,
) -> Result<PlcOperation, OperationError> {
    let rotation_keys = string_array_at(field(object, "rotationKeys", "$")?, "$.rotationKeys")?;
    if rotation_keys.len() > MAX_PARSED_ROTATION_KEYS {
        return Err(OperationError::RotationKeyCount {
            count: rotation_keys.len(),
            min: 0,
            max: MAX_PARSED_ROTATION_KEYS,
        });
    }
    let verification_methods = object_at(
        field(object, "verificationMethods", "$")?,
        "$.verificationMethods",
    )?
    .iter()
    .map(|(id, key)| {
        let key = string_at(key, &format!("$.verificationMethods.{id}"))?;
        Ok((id.clone(), key.to_owned()))
    })
    .collect::<Result<_, OperationError>>()?;
    let also_known_as = string_array_at(field(object, "alsoKnownAs", "$")?, "$.alsoKnownAs")?;
    let services = object_at(field(object, "services", "$")?, "$.services")?
        .iter()
        .map(|(id, service)| {
            let path = format!("$.services.{id}");
            let entry = object_at(service, &path)?;
            check_fields(entry, &["type", "endpoint"], &path)?;
            let service_type = string_at(field(entry, "type", &path)?, &format!("{path}.type"))?;
            let endpoint = string_at(
                field(entry, "endpoint", &path)?,
                &format!("{path}.endpoint"),
            )?;
            Ok((
                id.clone(),
                Service {
                    service_type: service_type.to_owned(),
                    endpoint: endpoint.to_owned(),
                },
            ))
        })
        .collect::<Result<_, OperationError>>()?;
    Ok(PlcOperation {
        data: PlcData {
            rotation_keys,
            verification_methods,
            also_known_as,
            services,
        },
        prev: parse_prev(field(object, "prev", "$")?)?,
    })
}

fn parse_legacy_create(
    object: &serde_json::Map<String, Json>,
) -> Result<LegacyCreate, OperationError> {
    let string_field = |name: &str| -> Result<String, OperationError> {
        Ok(string_at(field(object, name, "$")?, &format!("$.{name}"))?.to_owned())
    };
    if let Some(prev) = parse_prev(field(object, "prev", "$")?)? {
        return Err(prev_error(
            &prev.to_string(),
            "a legacy create operation must have prev null",
        ));
    }
    Ok(LegacyCreate {
        signing_key: string_field("signingKey")?,
        recovery_key: string_field("recoveryKey")?,
        handle: string_field("handle")?,
        service: string_field("service")?,
    })
}

fn parse_prev(json: &Json) -> Result<Option<Cid>, OperationError> {
    let text = match json {
        Json::Null => return Ok(None),
        Json::String(text) => text,
        other => {
            return Err(shape_error(
                "$.prev",
                format!("expected a CID string or null, found {}", kind(other)),
            ))
        }
    };
    let cid = butterfly_data::parse_cid_str(text).map_err(|reason| prev_error(text, &reason))?;
    if cid.to_string() != *text {
        return Err(prev_error(
            text,
            &format!("not in canonical form, which is {cid}"),
        ));
    }
    if cid.codec() != butterfly_data::DAG_CBOR || cid.hash().code() != butterfly_data::SHA2_256 {
        return Err(prev_error(text, "expected a dag-cbor sha-256 CID"));
    }
    Ok(Some(cid))
}

fn prev_error(found: &str, reason: &str) -> OperationError {
    OperationError::Prev {
        found: excerpt(found),
        reason: reason.to_owned(),
    }
}

fn parse_signature(json: &Json) -> Result<[u8; SIGNATURE_LEN], OperationError> {
    let text = match json {
        Json::String(text) => text,
        other => {
            return Err(shape_error(
                "$.sig",
                format!("expected a string, found {}", kind(other)),
            ))
        }
    };
    let bytes = SIG_BASE64
        .decode(text)
        .map_err(|error| OperationError::Signature {
            reason: format!("not strict unpadded base64url: {error}"),
        })?;
    <[u8; SIGNATURE_LEN]>::try_from(bytes.as_slice()).map_err(|_| OperationError::Signature {
        reason: format!(
            "expected {SIGNATURE_LEN} bytes (compact r||s), found {}",
            bytes.len()
        ),
    })
}

fn shape_error(path: &str, message: String) -> OperationError {
    OperationError::Shape {
        path: path.to_owned(),
        message,
    }
}

fn kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn object_at<'a>(
    json: &'a Json,
    path: &str,
) -> Result<&'a serde_json::Map<String, Json>, OperationError> {
    json.as_object()
        .ok_or_else(|| shape_error(path, format!("expected an object, found {}", kind(json))))
}

fn string_at<'a>(json: &'a Json, path: &str) -> Result<&'a str, OperationError> {
    json.as_str()
        .ok_or_else(|| shape_error(path, format!("expected a string, found {}", kind(json))))
}

fn string_array_at(json: &Json, path: &str) -> Result<Vec<String>, OperationError> {
    let items = json
        .as_array()
        .ok_or_else(|| shape_error(path, format!("expected an array, found {}", kind(json))))?;
    items
        .iter()
        .enumerate()
        .map(|(index, item)| Ok(string_at(item, &format!("{path}[{index}]"))?.to_owned()))
        .collect()
}

fn field<'a>(
    object: &'a serde_json::Map<String, Json>,
    name: &str,
    path: &str,
) -> Result<&'a Json, OperationError> {
    object
        .get(name)
        .ok_or_else(|| shape_error(path, format!("missing field {name:?}")))
}

fn check_fields(
    object: &serde_json::Map<String, Json>,
    allowed: &[&str],
    path: &str,
) -> Result<(), OperationError> {
    match object.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(OperationError::UnknownField {
            path: path.to_owned(),
            field: excerpt(key),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use butterfly_crypto::Algorithm;
    use serde_json::json;

    fn key(seed: u8) -> PrivateKey {
        PrivateKey::from_bytes(Algorithm::K256, &[seed; 32]).expect("a valid scalar")
    }

    fn sample_data() -> PlcData {
        PlcData::atproto(
            vec![key(1).public_key().to_did_key()],
            &key(2).public_key().to_did_key(),
            &Handle::parse("alice.test").expect("valid handle"),
            "https://pds.example.com",
        )
    }

    /// Parses `json` as a signed operation and returns the error, if any.
    fn check(json: Json, expected: Result<(), &str>) {
        let result = SignedOperation::from_json(&json);
        match (result, expected) {
            (Ok(_), Ok(())) => {}
            (Err(error), Err(needle)) => {
                let message = error.to_string();
                assert!(message.contains(needle), "{message:?} lacks {needle:?}");
            }
            (result, expected) => panic!("{json}: got {result:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn json_round_trip_keeps_every_field() {
        let signed = Operation::genesis(sample_data()).sign(&key(1));
        let json = signed.to_json();
        let parsed = SignedOperation::from_json(&json).expect("parses");
        assert_eq!(parsed, signed);
        assert_eq!(parsed.to_json(), json);
        assert_eq!(json["prev"], Json::Null);
        assert_eq!(json["type"], "plc_operation");
    }

    #[test]
    fn signature_covers_the_operation_without_sig() {
        let signed = Operation::genesis(sample_data()).sign(&key(1));
        let keys = signed.operation().rotation_keys();
        assert_eq!(signed.verify_signature(&keys), Ok(0));
        // The signed bytes differ from the unsigned ones only by the sig field.
        assert_ne!(signed.to_cbor(), signed.operation().unsigned_cbor());
        let other = vec![key(3).public_key().to_did_key()];
        assert!(matches!(
            signed.verify_signature(&other),
            Err(SignatureError::NoMatch { n_keys: 1, .. })
        ));
        assert_eq!(signed.verify_signature(&[]), Err(SignatureError::NoKeys));
    }

    #[test]
    fn genesis_did_is_base32_of_the_signed_bytes() {
        let signed = Operation::genesis(sample_data()).sign(&key(1));
        let did = signed.genesis_did().expect("genesis");
        let digest = Sha256::digest(signed.to_cbor());
        // An independent base32 (RFC 4648, lowercase) of the first 15 bytes: 24 characters.
        let alphabet = b"abcdefghijklmnopqrstuvwxyz234567";
        let mut bits = 0u64;
        let mut expected = String::new();
        for chunk in digest[..15].chunks(5) {
            for byte in chunk {
                bits = (bits << 8) | u64::from(*byte);
            }
            for shift in (0..8).rev() {
                expected.push(char::from(alphabet[((bits >> (shift * 5)) & 31) as usize]));
            }
            bits = 0;
        }
        assert_eq!(did.as_str(), format!("did:plc:{expected}"));
        let update = Operation::update(signed.cid(), sample_data()).sign(&key(1));
        assert_eq!(update.genesis_did(), None);
    }

    #[test]
    fn strict_shapes() {
        let good = Operation::genesis(sample_data()).sign(&key(1)).to_json();
        check(good.clone(), Ok(()));
        let with = |field: &str, value: Json| {
            let mut json = good.clone();
            json[field] = value;
            json
        };
        let without = |field: &str| {
            let mut json = good.clone();
            json.as_object_mut().expect("object").remove(field);
            json
        };
        check(json!([]), Err("at $: expected an object, found an array"));
        check(
            with("type", json!("plc_op")),
            Err("type \"plc_op\" is unknown"),
        );
        check(with("type", json!(1)), Err("$.type: expected a string"));
        check(with("extra", json!("x")), Err("unknown field \"extra\""));
        check(without("sig"), Err("missing field \"sig\""));
        check(without("prev"), Err("missing field \"prev\""));
        check(with("rotationKeys", json!([1])), Err("$.rotationKeys[0]"));
        check(with("rotationKeys", json!("k")), Err("expected an array"));
        check(with("alsoKnownAs", json!([true])), Err("$.alsoKnownAs[0]"));
        check(
            with("verificationMethods", json!({"atproto": 1.5})),
            Err("$.verificationMethods.atproto: expected a string, found a number"),
        );
        check(
            with("services", json!({"pds": {"type": "x"}})),
            Err("missing field \"endpoint\""),
        );
        check(
            with(
                "services",
                json!({"pds": {"type": "x", "endpoint": "y", "z": 1}}),
            ),
            Err("unknown field \"z\""),
        );
        check(
            with("rotationKeys", json!(vec!["did:key:z"; 17])),
            Err("17 rotation keys, expected 0 to 16"),
        );
        check(with("prev", json!(5)), Err("expected a CID string or null"));
        check(with("prev", json!("bafy")), Err("prev \"bafy\""));
        // A raw-codec CID is not an operation's CID.
        let raw = butterfly_data::cid_for_raw(b"x").to_string();
        check(with("prev", json!(raw)), Err("dag-cbor sha-256"));
        // The same CID in base58 (CIDv0-looking) or uppercase is not canonical.
        let cid = Operation::genesis(sample_data()).sign(&key(1)).cid();
        let upper = cid
            .to_string_of_base(multibase::Base::Base32Upper)
            .expect("encodes");
        check(with("prev", json!(upper)), Err("not in canonical form"));
    }

    #[test]
    fn strict_signature_encoding() {
        let signed = Operation::genesis(sample_data()).sign(&key(1));
        let good = signed.to_json();
        let sig = good["sig"].as_str().expect("string").to_owned();
        let with_sig = |sig: String| {
            let mut json = good.clone();
            json["sig"] = Json::String(sig);
            json
        };
        check(
            with_sig(format!("{sig}==")),
            Err("not strict unpadded base64url"),
        );
        let standard = base64::engine::general_purpose::STANDARD_NO_PAD.encode(signed.signature());
        if standard != sig {
            check(with_sig(standard), Err("not strict unpadded base64url"));
        }
        check(
            with_sig(format!("+{}", &sig[1..])),
            Err("not strict unpadded base64url"),
        );
        check(
            with_sig(format!("{sig}\n")),
            Err("not strict unpadded base64url"),
        );
        // 64 bytes take 86 characters, the last holding 2 bits and 4 zero bits.
        let mut last_changed = sig.clone();
        let last = last_changed.pop().expect("non-empty");
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let position = alphabet.find(last).expect("base64url character");
        let sloppy = alphabet.chars().nth(position | 1).expect("in range");
        last_changed.push(sloppy);
        check(with_sig(last_changed), Err("not strict unpadded base64url"));
        check(
            with_sig(SIG_BASE64.encode([1u8; 63])),
            Err("expected 64 bytes (compact r||s), found 63"),
        );
        check(
            with_sig(SIG_BASE64.encode([1u8; 70])),
            Err("expected 64 bytes (compact r||s), found 70"),
        );
    }

    #[test]
    fn tombstone_and_legacy_shapes() {
        let genesis = Operation::genesis(sample_data()).sign(&key(1));
        let tombstone = Operation::tombstone(genesis.cid()).sign(&key(1));
        let json = tombstone.to_json();
        assert_eq!(
            json.as_object().expect("object").len(),
            3,
            "type, prev and sig"
        );
        check(json.clone(), Ok(()));
        let mut null_prev = json.clone();
        null_prev["prev"] = Json::Null;
        check(null_prev, Err("a tombstone must name its prev"));
        let mut extra = json;
        extra["rotationKeys"] = json!([]);
        check(extra, Err("unknown field \"rotationKeys\""));

        let legacy = Operation::LegacyCreate(LegacyCreate {
            signing_key: key(2).public_key().to_did_key(),
            recovery_key: key(1).public_key().to_did_key(),
            handle: "alice.test".into(),
            service: "https://pds.example.com".into(),
        })
        .sign(&key(1));
        let json = legacy.to_json();
        check(json.clone(), Ok(()));
        let mut with_prev = json;
        with_prev["prev"] = Json::String(genesis.cid().to_string());
        check(with_prev, Err("must have prev null"));
    }

    #[test]
    fn legacy_normalization() {
        let create = |handle: &str, service: &str| LegacyCreate {
            signing_key: "did:key:signing".into(),
            recovery_key: "did:key:recovery".into(),
            handle: handle.into(),
            service: service.into(),
        };
        let data = create("alice.test", "pds.example.com").normalize();
        assert_eq!(data.rotation_keys, ["did:key:recovery", "did:key:signing"]);
        assert_eq!(data.also_known_as, ["at://alice.test"]);
        assert_eq!(
            data.verification_methods.get("atproto").map(String::as_str),
            Some("did:key:signing")
        );
        let pds = &data.services["atproto_pds"];
        assert_eq!(pds.endpoint, "https://pds.example.com");
        assert_eq!(pds.service_type, "AtprotoPersonalDataServer");
        let data = create("https://alice.test", "http://localhost:2583").normalize();
        assert_eq!(data.also_known_as, ["at://alice.test"]);
        assert_eq!(
            data.services["atproto_pds"].endpoint,
            "http://localhost:2583"
        );
        let data = create("at://alice.test", "https://pds").normalize();
        assert_eq!(data.also_known_as, ["at://alice.test"]);
    }

    #[test]
    fn validate_applies_the_directory_rules() {
        let mut data = sample_data();
        assert_eq!(Operation::genesis(data.clone()).validate(), Ok(()));
        data.rotation_keys.clear();
        assert!(matches!(
            data.validate(),
            Err(OperationError::RotationKeyCount { count: 0, .. })
        ));
        data.rotation_keys = (1..=6)
            .map(|seed| key(seed).public_key().to_did_key())
            .collect();
        assert!(matches!(
            data.validate(),
            Err(OperationError::RotationKeyCount { count: 6, .. })
        ));
        data.rotation_keys = vec![key(1).public_key().to_did_key(); 2];
        assert!(matches!(
            data.validate(),
            Err(OperationError::DuplicateRotationKey { .. })
        ));
        data.rotation_keys = vec!["did:key:zNope".into()];
        assert!(matches!(
            data.validate(),
            Err(OperationError::InvalidKey { ref field, .. }) if field == "rotationKeys[0]"
        ));
        let mut data = sample_data();
        data.verification_methods
            .insert("atproto".into(), "nope".into());
        assert!(matches!(
            data.validate(),
            Err(OperationError::InvalidKey { ref field, .. }) if field == "verificationMethods.atproto"
        ));
        let mut data = sample_data();
        data.also_known_as = vec!["at://x".repeat(2000)];
        assert!(matches!(
            Operation::genesis(data).validate(),
            Err(OperationError::TooLarge { .. })
        ));
    }

    #[test]
    fn set_handle_replaces_the_first_at_uri() {
        let mut data = sample_data();
        data.also_known_as = vec!["https://example.com".into(), "at://old.test".into()];
        data.set_handle(&Handle::parse("new.test").expect("valid"));
        assert_eq!(data.also_known_as, ["https://example.com", "at://new.test"]);
        data.also_known_as = vec!["https://example.com".into()];
        data.set_handle(&Handle::parse("new.test").expect("valid"));
        assert_eq!(data.also_known_as, ["at://new.test", "https://example.com"]);
    }

    #[test]
    fn link_like_maps_are_hashed_as_plain_maps() {
        // `{"$link": ...}` would become a CID link through Value::from_json; an operation keeps it
        // a string map.
        let mut data = sample_data();
        let cid = butterfly_data::cid_for_raw(b"x").to_string();
        data.verification_methods = BTreeMap::from([("$link".to_owned(), cid)]);
        let signed = Operation::genesis(data).sign(&key(1));
        let json = signed.to_json();
        let parsed = SignedOperation::from_json(&json).expect("parses");
        assert_eq!(parsed.cid(), signed.cid());
        let decoded = Value::from_cbor(&signed.to_cbor()).expect("valid cbor");
        assert!(matches!(
            decoded.get("verificationMethods"),
            Some(Value::Map(map)) if matches!(map.get("$link"), Some(Value::String(_)))
        ));
    }
}
