//! DID documents and PLC audit logs from arbitrary bytes.
//!
//! Properties: never panics; a parsed document's accessors never panic; a parsed audit log verifies
//! to a report (valid or not) without panicking, and a valid report has a state.
#![no_main]

use butterfly_identity::{plc, DidDocument};
use butterfly_syntax::Did;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let did = match Did::parse("did:plc:ewvi7nxzyoun6zhxrhs64oiz") {
        Ok(did) => did,
        Err(e) => panic!("fixed DID rejected: {e}"),
    };
    if let Ok(document) = DidDocument::parse(data, &did) {
        let _ = document.signing_key();
        let _ = document.pds_endpoint();
        let _ = document.claimed_handle();
    }
    if let Ok(entries) = plc::parse_audit_log(data) {
        let subject = entries.first().map_or(did, |entry| entry.did().clone());
        let report = plc::verify_audit_log(&subject, &entries);
        assert_eq!(report.is_valid(), report.state().is_some());
    }
});
