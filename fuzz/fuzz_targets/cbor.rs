//! Strict DAG-CBOR decoding of arbitrary bytes.
//!
//! Properties: never panics; anything accepted re-encodes to exactly the input (only the canonical
//! encoding is accepted); a value that atproto JSON can represent unambiguously survives
//! `to_json` / `from_json` unchanged.
#![no_main]

use butterfly_data::Value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = Value::from_cbor(data) else {
        return;
    };
    assert_eq!(
        value.to_cbor(),
        data,
        "accepted a non-canonical encoding of {value:?}"
    );

    let json = value.to_json();
    let back = Value::from_json(&json);
    if json_representable(&value) {
        match back {
            Ok(back) => assert_eq!(back, value, "json round trip changed the value ({json})"),
            Err(e) => panic!("json round trip failed for {value:?}: {e} ({json})"),
        }
    }
    // Otherwise `from_json` may reject the JSON or read it differently; it must only not panic.
});

/// Whether `to_json` / `from_json` can round-trip `value`. atproto JSON is ambiguous on purpose for two
/// kinds of maps, which DAG-CBOR can hold but JSON cannot tell apart from something else:
/// - a map with a `$link` or `$bytes` key: JSON reads `{"$link": ...}` / `{"$bytes": ...}` as a link or
///   bytes, and rejects those keys next to others;
/// - a map whose `$type` breaks the data-model rules (not a string, empty, or a malformed blob):
///   `from_json` checks `$type` and rejects it.
fn json_representable(value: &Value) -> bool {
    fn no_reserved_keys(value: &Value) -> bool {
        match value {
            Value::Map(map) => {
                !map.contains_key("$link")
                    && !map.contains_key("$bytes")
                    && map.values().all(no_reserved_keys)
            }
            Value::Array(items) => items.iter().all(no_reserved_keys),
            _ => true,
        }
    }
    // validate_record checks every `$type` in the tree but wants a map at the top: wrap the value.
    let wrapped = Value::Map([("v".to_string(), value.clone())].into_iter().collect());
    no_reserved_keys(value) && butterfly_data::validate_record(&wrapped).is_ok()
}
