//! Reads a DID document file for offline signature checks, through the identity crate.

use anyhow::{anyhow, Context};
use butterfly_crypto::PublicKey;
use butterfly_identity::DidDocument;
use butterfly_syntax::Did;

/// The parts of a DID document a signature check needs.
pub struct SigningIdentity {
    pub did: Did,
    pub key: PublicKey,
}

/// Reads the DID and the `#atproto` signing key from a DID document file.
pub fn read(path: &std::path::Path) -> anyhow::Result<SigningIdentity> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading DID document {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let id = json["id"]
        .as_str()
        .ok_or_else(|| anyhow!("DID document {}: no \"id\" string", path.display()))?;
    let did = Did::parse(id).with_context(|| format!("DID document {}", path.display()))?;
    let document = DidDocument::from_json(json, &did)?;
    let key = document.signing_key()?.ok_or_else(|| {
        anyhow!(
            "DID document {}: no #atproto verification method",
            path.display()
        )
    })?;
    Ok(SigningIdentity { did, key })
}
