//! Just enough of a DID document to check a commit offline: its DID and its atproto signing key.
//! (The identity crate, with resolution and caching, is the full story.)

use anyhow::{anyhow, Context};
use butterfly_crypto::PublicKey;
use serde_json::Value as Json;

/// The parts of a DID document a signature check needs.
pub struct SigningIdentity {
    pub did: String,
    pub key: PublicKey,
}

/// Reads the DID and the `#atproto` verification method from a DID document file.
pub fn read(path: &std::path::Path) -> anyhow::Result<SigningIdentity> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading DID document {}", path.display()))?;
    let doc: Json =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    parse(&doc).with_context(|| format!("DID document {}", path.display()))
}

fn parse(doc: &Json) -> anyhow::Result<SigningIdentity> {
    let did = doc["id"]
        .as_str()
        .ok_or_else(|| anyhow!("no \"id\" string"))?
        .to_owned();
    let methods = doc["verificationMethod"]
        .as_array()
        .ok_or_else(|| anyhow!("no \"verificationMethod\" list"))?;
    let method = methods
        .iter()
        .find(|m| {
            m["id"]
                .as_str()
                .is_some_and(|id| id == "#atproto" || id == format!("{did}#atproto"))
        })
        .ok_or_else(|| anyhow!("no #atproto verification method"))?;
    let method_type = method["type"]
        .as_str()
        .ok_or_else(|| anyhow!("#atproto method has no type"))?;
    let multibase = method["publicKeyMultibase"]
        .as_str()
        .ok_or_else(|| anyhow!("#atproto method has no publicKeyMultibase"))?;
    let key = PublicKey::from_did_doc_method(method_type, multibase)?;
    Ok(SigningIdentity { did, key })
}
