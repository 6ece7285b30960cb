//! MST node decoding of arbitrary bytes.
//!
//! Properties: never panics; a decoded node re-encodes (canonically, with maximal prefix compression)
//! to bytes that decode to the same node.
#![no_main]

use butterfly_repo::mst::NodeData;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cid = butterfly_data::cid_for_cbor(b"\xa0");
    let Ok(node) = NodeData::decode(&cid, data) else {
        return;
    };
    let encoded = node.encode();
    let again = match NodeData::decode(&node.cid(), &encoded) {
        Ok(again) => again,
        Err(e) => panic!("re-encoded node does not decode: {e} ({node:?})"),
    };
    assert_eq!(again, node, "node changed across encode/decode");
    // The canonical encoding is a fixed point.
    assert_eq!(again.encode(), encoded);
});
