//! The official atproto data-model vectors: `../shared/interop/data-model`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use butterfly_data::Value;
use std::path::PathBuf;

fn interop_dir() -> PathBuf {
    butterfly_interop::folder("data-model")
}

fn load(name: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(interop_dir().join(name)).expect("read fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

#[test]
fn fixtures_round_trip_byte_for_byte() {
    let base64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let cases = load("data-model-fixtures.json");
    assert_eq!(cases.len(), 3);
    let mut failures = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let cbor = base64
            .decode(case["cbor_base64"].as_str().unwrap())
            .unwrap();
        let expected_cid = case["cid"].as_str().unwrap();
        let from_json = match Value::from_json(&case["json"]) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("case {index}: json rejected: {e}"));
                continue;
            }
        };
        if from_json.to_cbor() != cbor {
            failures.push(format!("case {index}: json -> cbor differs"));
        }
        if from_json.cid().to_string() != expected_cid {
            failures.push(format!(
                "case {index}: cid {} != {expected_cid}",
                from_json.cid()
            ));
        }
        if butterfly_data::cid_for_cbor(&cbor).to_string() != expected_cid {
            failures.push(format!("case {index}: cid of the fixture bytes differs"));
        }
        match Value::from_cbor(&cbor) {
            Ok(decoded) => {
                if decoded != from_json {
                    failures.push(format!(
                        "case {index}: cbor -> value differs from json -> value"
                    ));
                }
                if decoded.to_json() != case["json"] {
                    failures.push(format!("case {index}: cbor -> json differs"));
                }
            }
            Err(e) => failures.push(format!("case {index}: cbor rejected: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn valid_values_are_accepted() {
    let cases = load("data-model-valid.json");
    assert_eq!(cases.len(), 5);
    for case in cases {
        let value = Value::record_from_json(&case["json"])
            .unwrap_or_else(|e| panic!("{}: rejected: {e}", case["note"]));
        assert_eq!(
            Value::from_cbor(&value.to_cbor()).unwrap(),
            value,
            "{}",
            case["note"]
        );
    }
}

#[test]
fn invalid_values_are_rejected() {
    let cases = load("data-model-invalid.json");
    assert_eq!(cases.len(), 12);
    let accepted: Vec<_> = cases
        .iter()
        .filter(|case| Value::record_from_json(&case["json"]).is_ok())
        .map(|case| case["note"].to_string())
        .collect();
    assert!(accepted.is_empty(), "accepted invalid values: {accepted:?}");
}
