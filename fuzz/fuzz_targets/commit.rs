//! Commit decoding and signature checking of arbitrary bytes.
//!
//! Properties: never panics; a decoded commit's signature check returns Ok or Err (it is almost always
//! Err, since the fuzzer cannot forge a K-256 signature).
#![no_main]

use butterfly_crypto::{Algorithm, PrivateKey};
use butterfly_repo::commit::Commit;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// The key the seed commit is signed with (built once: deriving it is a scalar multiplication).
static KEY: OnceLock<PrivateKey> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let cid = butterfly_data::cid_for_cbor(data);
    let Ok(commit) = Commit::decode(&cid, data) else {
        return;
    };
    let key = KEY
        .get_or_init(|| match PrivateKey::from_bytes(Algorithm::K256, &[7u8; 32]) {
            Ok(private_key) => private_key,
            Err(e) => panic!("fixed private key rejected: {e}"),
        })
        .public_key();
    let _ = commit.verify_signature(key);
    // unsigned_bytes is the canonical map without `sig`: it must itself be strict DAG-CBOR.
    assert!(butterfly_data::Value::from_cbor(commit.unsigned_bytes()).is_ok());
    let _ = commit.verify(key);
});
