//! The atproto crypto interop vectors from `../shared/interop/crypto`, run through the public API
//! with both verifiers. Every failing case is named; none is skipped.

use std::path::PathBuf;

use base64::Engine as _;
use butterfly_crypto::{
    Algorithm, FastVerifier, PrivateKey, PublicKey, RustCryptoVerifier, SignatureVerifier,
    VerifyError,
};
use serde_json::Value;

fn interop_dir() -> PathBuf {
    butterfly_interop::folder("crypto")
}

fn load(name: &str) -> Vec<Value> {
    let path = interop_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    let value: Value = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()));
    match value {
        Value::Array(cases) => cases,
        other => panic!("{} should hold an array, found {other}", path.display()),
    }
}

fn field<'a>(case: &'a Value, name: &str) -> Result<&'a str, String> {
    case[name]
        .as_str()
        .ok_or_else(|| format!("field {name:?} missing or not a string"))
}

fn verifiers() -> [(&'static str, &'static dyn SignatureVerifier); 2] {
    [
        ("fast", &FastVerifier),
        ("rust-crypto", &RustCryptoVerifier),
    ]
}

/// Checks one signature case and returns what went wrong, if anything.
fn check_signature_case(case: &Value) -> Result<(), String> {
    let base64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let message = base64
        .decode(field(case, "messageBase64")?)
        .map_err(|error| format!("messageBase64: {error}"))?;
    let signature = base64
        .decode(field(case, "signatureBase64")?)
        .map_err(|error| format!("signatureBase64: {error}"))?;
    let algorithm = Algorithm::from_jwt_name(field(case, "algorithm")?)
        .ok_or_else(|| format!("unknown algorithm {:?}", case["algorithm"]))?;
    let valid = case["validSignature"]
        .as_bool()
        .ok_or("validSignature missing")?;
    let tags: Vec<&str> = case["tags"]
        .as_array()
        .ok_or("tags missing")?
        .iter()
        .filter_map(Value::as_str)
        .collect();

    let did_key = field(case, "publicKeyDid")?;
    let key = PublicKey::parse_did_key(did_key).map_err(|error| format!("did:key: {error}"))?;
    if key.algorithm() != algorithm {
        return Err(format!(
            "did:key parsed as {}, expected {algorithm}",
            key.algorithm()
        ));
    }
    if key.to_did_key() != did_key {
        return Err(format!("did:key re-encoded as {}", key.to_did_key()));
    }

    // publicKeyMultibase is the legacy form: no multicodec, compressed point.
    let suite = field(case, "didDocSuite")?;
    let legacy = PublicKey::from_did_doc_method(suite, field(case, "publicKeyMultibase")?)
        .map_err(|error| format!("publicKeyMultibase as {suite}: {error}"))?;
    if legacy != key {
        return Err(format!(
            "publicKeyMultibase gave {legacy}, expected {did_key}"
        ));
    }
    let multikey = PublicKey::from_did_doc_method("Multikey", &key.to_multikey())
        .map_err(|error| format!("Multikey: {error}"))?;
    if multikey != key {
        return Err(format!("Multikey gave {multikey}, expected {did_key}"));
    }

    let expected_error = if tags.contains(&"high-s") {
        Some(VerifyError::HighS { algorithm })
    } else if tags.contains(&"der-encoded") {
        Some(VerifyError::Length {
            found: signature.len(),
        })
    } else {
        None
    };
    let digest: [u8; 32] = sha2_digest(&message);
    for (name, verifier) in verifiers() {
        for (form, result) in [
            ("message", verifier.verify(&key, &message, &signature)),
            ("digest", verifier.verify_digest(&key, &digest, &signature)),
        ] {
            match (valid, result, expected_error) {
                (true, Ok(()), _) => {}
                (false, Err(found), Some(expected)) if found == expected => {}
                (false, Err(_), None) => {}
                (_, result, expected) => {
                    return Err(format!(
                        "{name} verifier ({form}): expected {}, found {result:?}",
                        match expected {
                            Some(error) => format!("Err({error:?})"),
                            None if valid => "Ok(())".to_owned(),
                            None => "an error".to_owned(),
                        }
                    ))
                }
            }
        }
    }
    Ok(())
}

fn sha2_digest(message: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(message).into()
}

fn check_did_key_case(
    algorithm: Algorithm,
    private_key: &[u8],
    case: &Value,
) -> Result<(), String> {
    let expected = field(case, "publicDidKey")?;
    let key = PrivateKey::from_bytes(algorithm, private_key).map_err(|error| error.to_string())?;
    let did_key = key.public_key().to_did_key();
    if did_key != expected {
        return Err(format!("derived {did_key}"));
    }
    let parsed = PublicKey::parse_did_key(expected).map_err(|error| error.to_string())?;
    if &parsed != key.public_key() {
        return Err(format!("parsing gave {parsed}"));
    }
    let signature = key.sign(b"interop");
    for (name, verifier) in verifiers() {
        verifier
            .verify(&parsed, b"interop", &signature)
            .map_err(|error| format!("{name} verifier on own signature: {error}"))?;
    }
    Ok(())
}

fn report(file: &str, n_checked: usize, n_expected: usize, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{file}: {} of {n_checked} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(n_checked, n_expected, "{file}: number of cases checked");
}

#[test]
fn signature_fixtures() {
    let cases = load("signature-fixtures.json");
    let mut failures = Vec::new();
    for (case_idx, case) in cases.iter().enumerate() {
        if let Err(failure) = check_signature_case(case) {
            failures.push(format!("case {case_idx} ({}): {failure}", case["comment"]));
        }
    }
    report("signature-fixtures.json", cases.len(), 6, failures);
}

#[test]
fn w3c_did_key_k256() {
    let cases = load("w3c_didkey_K256.json");
    let mut failures = Vec::new();
    for (case_idx, case) in cases.iter().enumerate() {
        let result = field(case, "privateKeyBytesHex")
            .and_then(|text| hex::decode(text).map_err(|error| format!("hex: {error}")))
            .and_then(|bytes| check_did_key_case(Algorithm::K256, &bytes, case));
        if let Err(failure) = result {
            failures.push(format!(
                "case {case_idx} ({}): {failure}",
                case["publicDidKey"]
            ));
        }
    }
    report("w3c_didkey_K256.json", cases.len(), 5, failures);
}

#[test]
fn w3c_did_key_p256() {
    let cases = load("w3c_didkey_P256.json");
    let mut failures = Vec::new();
    for (case_idx, case) in cases.iter().enumerate() {
        let result = field(case, "privateKeyBytesBase58")
            .and_then(|text| {
                multibase::Base::Base58Btc
                    .decode(text)
                    .map_err(|error| format!("base58: {error}"))
            })
            .and_then(|bytes| check_did_key_case(Algorithm::P256, &bytes, case));
        if let Err(failure) = result {
            failures.push(format!(
                "case {case_idx} ({}): {failure}",
                case["publicDidKey"]
            ));
        }
    }
    report("w3c_didkey_P256.json", cases.len(), 1, failures);
}
