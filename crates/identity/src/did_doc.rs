//! DID documents: the parts atproto uses (signing key, PDS endpoint, handle), in current and legacy forms.

use std::sync::OnceLock;

use butterfly_crypto::PublicKey;
use butterfly_syntax::{Did, Handle};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::Error;

/// The largest DID document accepted, in bytes. Real ones are well under 2 KiB.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// The most verification methods, services or `alsoKnownAs` entries a document may list.
const MAX_LIST_LEN: usize = 64;

/// A DID document as atproto reads it. Unknown fields are ignored; the fields atproto needs are checked
/// when asked for, so a document with, say, a broken service entry still yields its signing key.
///
/// Both shapes in use are understood: current (`Multikey` with a compressed multibase key, ids written
/// `did:...#atproto`) and legacy (`EcdsaSecp256k1VerificationKey2019` / `EcdsaSecp256r1VerificationKey2019`
/// with an uncompressed key, ids written `#atproto`), as the reference PLC directory still serves.
///
/// The fields are read-only, so the signing key can be parsed once and kept: parsing a point costs
/// about a third of a signature check, and every firehose commit needs the key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DidDocument {
    id: String,
    #[serde(rename = "alsoKnownAs", default)]
    also_known_as: Vec<String>,
    #[serde(rename = "verificationMethod", default)]
    verification_method: Vec<VerificationMethod>,
    #[serde(default)]
    service: Vec<Service>,
    /// Every other field (`@context`, ...), kept so that the document prints back whole.
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    parsed_signing_key: OnceLock<Result<Option<PublicKey>, Error>>,
}

impl PartialEq for DidDocument {
    fn eq(&self, other: &DidDocument) -> bool {
        // The parsed key is derived from the fields, so it is left out.
        self.id == other.id
            && self.also_known_as == other.also_known_as
            && self.verification_method == other.verification_method
            && self.service == other.service
            && self.other == other.other
    }
}

impl Eq for DidDocument {}

/// One entry of `verificationMethod`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationMethod {
    /// `did:...#atproto` or `#atproto`.
    pub id: String,
    /// `Multikey`, or a legacy curve-specific type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The DID controlling the key.
    #[serde(default)]
    pub controller: String,
    /// The key, multibase encoded.
    #[serde(rename = "publicKeyMultibase", default)]
    pub public_key_multibase: Option<String>,
}

/// One entry of `service`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// `did:...#atproto_pds` or `#atproto_pds`.
    pub id: String,
    /// `AtprotoPersonalDataServer` for a PDS.
    #[serde(rename = "type")]
    pub kind: String,
    /// Usually a URL string; other shapes are kept but not used.
    #[serde(rename = "serviceEndpoint")]
    pub endpoint: serde_json::Value,
}

impl DidDocument {
    /// Parses a document and checks it is for `expected` (a document for another DID is an error).
    pub fn parse(bytes: &[u8], expected: &Did) -> Result<DidDocument, Error> {
        let invalid = |reason: String| Error::InvalidDocument {
            did: expected.to_string(),
            reason,
        };
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(invalid(format!(
                "{} bytes is over the {MAX_DOCUMENT_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let document: DidDocument =
            serde_json::from_slice(bytes).map_err(|error| invalid(error.to_string()))?;
        document.checked(expected)
    }

    /// Like [`DidDocument::parse`], from JSON already in memory (no byte limit: the caller read it).
    pub fn from_json(json: serde_json::Value, expected: &Did) -> Result<DidDocument, Error> {
        let document: DidDocument =
            serde_json::from_value(json).map_err(|error| Error::InvalidDocument {
                did: expected.to_string(),
                reason: error.to_string(),
            })?;
        document.checked(expected)
    }

    /// Checks the id and the list lengths.
    fn checked(self, expected: &Did) -> Result<DidDocument, Error> {
        let document = self;
        let invalid = |reason: String| Error::InvalidDocument {
            did: expected.to_string(),
            reason,
        };
        if document.id != expected.as_str() {
            return Err(invalid(format!("the document is for {:?}", document.id)));
        }
        for (name, len) in [
            ("alsoKnownAs", document.also_known_as.len()),
            ("verificationMethod", document.verification_method.len()),
            ("service", document.service.len()),
        ] {
            if len > MAX_LIST_LEN {
                return Err(invalid(format!(
                    "{name} has {len} entries (limit {MAX_LIST_LEN})"
                )));
            }
        }
        Ok(document)
    }

    /// The `id` field, as written.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `alsoKnownAs`: other names for the subject; atproto puts the handle here as `at://HANDLE`.
    pub fn also_known_as(&self) -> &[String] {
        &self.also_known_as
    }

    /// `verificationMethod`: public keys; atproto's signing key has the fragment `#atproto`.
    pub fn verification_methods(&self) -> &[VerificationMethod] {
        &self.verification_method
    }

    /// `service`: endpoints; the PDS has the fragment `#atproto_pds`.
    pub fn services(&self) -> &[Service] {
        &self.service
    }

    /// The document's DID. The id was checked by [`DidDocument::parse`]; a document deserialized some
    /// other way may hold anything, hence the `Result`.
    pub fn did(&self) -> Result<Did, Error> {
        Did::parse(&self.id).map_err(|error| Error::InvalidDocument {
            did: self.id.clone(),
            reason: format!("id: {error}"),
        })
    }

    fn fragment_matches(&self, id: &str, fragment: &str) -> bool {
        // "#atproto" or "did:plc:...#atproto"; a controller-relative id for another DID does not count.
        match id.split_once('#') {
            Some((prefix, found)) => found == fragment && (prefix.is_empty() || prefix == self.id),
            None => false,
        }
    }

    /// The atproto signing key (`#atproto`). `Ok(None)` when the document has none. Parsed on the first
    /// call and kept.
    pub fn signing_key(&self) -> Result<Option<PublicKey>, Error> {
        self.parsed_signing_key
            .get_or_init(|| self.parse_signing_key())
            .clone()
    }

    fn parse_signing_key(&self) -> Result<Option<PublicKey>, Error> {
        let Some(method) = self
            .verification_method
            .iter()
            .find(|method| self.fragment_matches(&method.id, "atproto"))
        else {
            return Ok(None);
        };
        let invalid = |reason: String| Error::InvalidDocument {
            did: self.id.clone(),
            reason,
        };
        let multibase = method
            .public_key_multibase
            .as_deref()
            .ok_or_else(|| invalid("#atproto has no publicKeyMultibase".to_owned()))?;
        PublicKey::from_did_doc_method(&method.kind, multibase)
            .map(Some)
            .map_err(|error| invalid(format!("#atproto key: {error}")))
    }

    /// The PDS endpoint (`#atproto_pds` of type `AtprotoPersonalDataServer`), if the document names a
    /// usable http(s) URL.
    pub fn pds_endpoint(&self) -> Option<Url> {
        let service = self.service.iter().find(|service| {
            self.fragment_matches(&service.id, "atproto_pds")
                && service.kind == "AtprotoPersonalDataServer"
        })?;
        let url = Url::parse(service.endpoint.as_str()?).ok()?;
        let usable = matches!(url.scheme(), "http" | "https")
            && url.host().is_some()
            && url.query().is_none()
            && url.fragment().is_none()
            && url.username().is_empty();
        usable.then_some(url)
    }

    /// The handle the document claims: the first `at://` entry of `alsoKnownAs`, if it is a valid
    /// handle. A claim is not proof; see `Resolver::resolve_did` for the check in the other direction.
    pub fn claimed_handle(&self) -> Option<Handle> {
        let first = self
            .also_known_as
            .iter()
            .find_map(|alias| alias.strip_prefix("at://"))?;
        Handle::parse(first).ok()
    }

    /// Whether `alsoKnownAs` lists `handle` (compared case-insensitively, as handles are).
    pub fn lists_handle(&self, handle: &Handle) -> bool {
        self.claimed_handle()
            .is_some_and(|claimed| claimed.normalized() == handle.normalized())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURRENT: &str = r##"{"@context":["https://www.w3.org/ns/did/v1"],"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","alsoKnownAs":["at://atproto.com"],"verificationMethod":[{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz#atproto","type":"Multikey","controller":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","publicKeyMultibase":"zQ3shunBKsXixLxKtC5qeSG9E4J5RkGN57im31pcTzbNQnm5w"}],"service":[{"id":"#atproto_pds","type":"AtprotoPersonalDataServer","serviceEndpoint":"https://enoki.us-east.host.bsky.network"}]}"##;

    const LEGACY: &str = r##"{"@context":["https://www.w3.org/ns/did/v1","https://w3id.org/security/suites/secp256k1-2019/v1"],"id":"did:plc:ik6hzieu7rkjp3p5a7bp6drg","alsoKnownAs":["at://alice.test"],"verificationMethod":[{"id":"#atproto","type":"EcdsaSecp256k1VerificationKey2019","controller":"did:plc:ik6hzieu7rkjp3p5a7bp6drg","publicKeyMultibase":"zQT1v2tjoZyzGnpSN5tYuxeTVKZno9hBa9CE6MfV69q6HvW1d8GxeU3CEAe4i5ogJVfw2popc4BUcUANk9mRt8jH6"}],"service":[{"id":"#atproto_pds","type":"AtprotoPersonalDataServer","serviceEndpoint":"http://localhost:46577"}]}"##;

    fn did(text: &str) -> Did {
        Did::parse(text).expect("test DID parses")
    }

    #[test]
    fn reads_current_documents() {
        let document =
            DidDocument::parse(CURRENT.as_bytes(), &did("did:plc:ewvi7nxzyoun6zhxrhs64oiz"))
                .expect("parses");
        let key = document
            .signing_key()
            .expect("key parses")
            .expect("has key");
        assert_eq!(
            key.to_did_key(),
            "did:key:zQ3shunBKsXixLxKtC5qeSG9E4J5RkGN57im31pcTzbNQnm5w"
        );
        assert_eq!(
            document.pds_endpoint().map(|url| url.to_string()),
            Some("https://enoki.us-east.host.bsky.network/".to_owned())
        );
        assert_eq!(
            document.claimed_handle().map(|h| h.to_string()),
            Some("atproto.com".to_owned())
        );
        assert!(document.lists_handle(&Handle::parse("ATPROTO.com").expect("handle")));
    }

    #[test]
    fn reads_legacy_documents() {
        let document =
            DidDocument::parse(LEGACY.as_bytes(), &did("did:plc:ik6hzieu7rkjp3p5a7bp6drg"))
                .expect("parses");
        let key = document
            .signing_key()
            .expect("key parses")
            .expect("has key");
        assert_eq!(
            key.to_did_key(),
            "did:key:zQ3shpf4UNWE4jjatNYaLgjMzY77A6KXa1qaSZK3gAfSbyjK4"
        );
        assert_eq!(
            document.pds_endpoint().map(|url| url.to_string()),
            Some("http://localhost:46577/".to_owned())
        );
    }

    #[test]
    fn rejects_documents_for_another_did_and_hostile_sizes() {
        let error =
            DidDocument::parse(CURRENT.as_bytes(), &did("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"))
                .expect_err("wrong DID");
        assert!(error.to_string().contains("is for"), "{error}");
        let huge = format!(
            r#"{{"id":"did:web:example.com","alsoKnownAs":["{}"]}}"#,
            "a".repeat(MAX_DOCUMENT_BYTES)
        );
        assert!(DidDocument::parse(huge.as_bytes(), &did("did:web:example.com")).is_err());
        let many = format!(
            r#"{{"id":"did:web:example.com","alsoKnownAs":[{}]}}"#,
            vec!["\"at://x.com\""; 65].join(",")
        );
        assert!(DidDocument::parse(many.as_bytes(), &did("did:web:example.com")).is_err());
        for garbage in ["", "[]", "{", r#"{"id":5}"#, "null"] {
            assert!(DidDocument::parse(garbage.as_bytes(), &did("did:web:example.com")).is_err());
        }
    }

    #[test]
    fn missing_or_foreign_parts_are_absent_not_errors() {
        let text = r##"{"id":"did:web:example.com","alsoKnownAs":["https://example.com","at://not a handle"],
            "verificationMethod":[{"id":"did:web:other.com#atproto","type":"Multikey","controller":"x","publicKeyMultibase":"zQ3shunBKsXixLxKtC5qeSG9E4J5RkGN57im31pcTzbNQnm5w"}],
            "service":[{"id":"#atproto_pds","type":"Other","serviceEndpoint":"https://pds.example.com"},
                       {"id":"#atproto_pds","type":"AtprotoPersonalDataServer","serviceEndpoint":{"uri":"x"}}]}"##;
        let document =
            DidDocument::parse(text.as_bytes(), &did("did:web:example.com")).expect("parses");
        assert!(document.signing_key().expect("no error").is_none());
        assert!(document.pds_endpoint().is_none());
        assert!(document.claimed_handle().is_none());
    }

    #[test]
    fn a_broken_key_is_an_error() {
        let text = r##"{"id":"did:web:example.com","verificationMethod":[{"id":"#atproto","type":"Multikey","controller":"x","publicKeyMultibase":"zNotAKey"}]}"##;
        let document =
            DidDocument::parse(text.as_bytes(), &did("did:web:example.com")).expect("parses");
        assert!(document.signing_key().is_err());
    }
}
