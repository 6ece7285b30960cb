//! The state a verified log leaves a DID in, and the DID document the directory renders from it.

use butterfly_crypto::{Algorithm, PublicKey};
use butterfly_syntax::Did;
use serde_json::{json, Value as Json};

use super::operation::{
    excerpt, OperationError, PlcData, ATPROTO_PDS_SERVICE, ATPROTO_PDS_TYPE,
    ATPROTO_VERIFICATION_METHOD,
};

/// The state of a DID after its last valid operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlcState {
    /// The DID is active with this data.
    Active(PlcData),
    /// The last valid operation is a tombstone: the DID is deactivated and has no document.
    Tombstoned,
}

impl PlcState {
    /// The data of an active DID; `None` once tombstoned.
    pub fn data(&self) -> Option<&PlcData> {
        match self {
            PlcState::Active(data) => Some(data),
            PlcState::Tombstoned => None,
        }
    }

    /// Whether the DID is deactivated.
    pub fn is_tombstoned(&self) -> bool {
        matches!(self, PlcState::Tombstoned)
    }

    /// [`PlcData::handle`] of an active DID.
    pub fn handle(&self) -> Option<&str> {
        self.data().and_then(PlcData::handle)
    }

    /// [`PlcData::pds_endpoint`] of an active DID.
    pub fn pds_endpoint(&self) -> Option<&str> {
        self.data().and_then(PlcData::pds_endpoint)
    }

    /// [`PlcData::signing_key`] of an active DID.
    pub fn signing_key(&self) -> Option<&str> {
        self.data().and_then(PlcData::signing_key)
    }
}

const CONTEXT_DID: &str = "https://www.w3.org/ns/did/v1";
const CONTEXT_MULTIKEY: &str = "https://w3id.org/security/multikey/v1";
const CONTEXT_K256: &str = "https://w3id.org/security/suites/secp256k1-2019/v1";
const CONTEXT_P256: &str = "https://w3id.org/security/suites/ecdsa-2019/v1";

impl PlcData {
    /// The handle: the first `alsoKnownAs` entry that starts with `at://`, without that prefix.
    /// It is returned as written; parse it with `butterfly_syntax::Handle::parse`, and remember
    /// that a handle counts only once it resolves back to the DID.
    pub fn handle(&self) -> Option<&str> {
        self.also_known_as
            .iter()
            .find_map(|entry| entry.strip_prefix("at://"))
    }

    /// The PDS endpoint: the `atproto_pds` service, if its type is `AtprotoPersonalDataServer`.
    pub fn pds_endpoint(&self) -> Option<&str> {
        self.services
            .get(ATPROTO_PDS_SERVICE)
            .filter(|service| service.service_type == ATPROTO_PDS_TYPE)
            .map(|service| service.endpoint.as_str())
    }

    /// The atproto signing key, as a did:key string: the `atproto` verification method.
    pub fn signing_key(&self) -> Option<&str> {
        self.verification_methods
            .get(ATPROTO_VERIFICATION_METHOD)
            .map(String::as_str)
    }

    /// The DID document the PLC directory serves for this data, in its current form:
    /// verification methods as `Multikey` with the compressed key in `publicKeyMultibase` and the
    /// id `DID#name`; services with the id `#name`; `@context` with the DID and Multikey contexts
    /// and then one suite context per curve in use (secp256k1-2019 for K-256, ecdsa-2019 for
    /// P-256), as the reference implementation's `formatDidDoc` writes it.
    ///
    /// Fails if a verification method is not a did:key on a supported curve: the directory cannot
    /// render such a document either.
    pub fn to_did_document(&self, did: &Did) -> Result<Json, OperationError> {
        let mut context = vec![CONTEXT_DID, CONTEXT_MULTIKEY];
        let mut methods = Vec::with_capacity(self.verification_methods.len());
        for (id, did_key) in &self.verification_methods {
            let key =
                PublicKey::parse_did_key(did_key).map_err(|error| OperationError::InvalidKey {
                    field: format!("verificationMethods.{id}"),
                    key: excerpt(did_key),
                    reason: error.to_string(),
                })?;
            let suite = match key.algorithm() {
                Algorithm::K256 => CONTEXT_K256,
                Algorithm::P256 => CONTEXT_P256,
            };
            if !context.contains(&suite) {
                context.push(suite);
            }
            methods.push(json!({
                "id": format!("{did}#{id}"),
                "type": "Multikey",
                "controller": did.as_str(),
                // The did:key without its prefix, as the directory writes it; parsing succeeded,
                // so the prefix is there.
                "publicKeyMultibase": did_key.strip_prefix("did:key:").unwrap_or(did_key),
            }));
        }
        let services: Vec<Json> = self
            .services
            .iter()
            .map(|(id, service)| {
                json!({
                    "id": format!("#{id}"),
                    "type": service.service_type,
                    "serviceEndpoint": service.endpoint,
                })
            })
            .collect();
        Ok(json!({
            "@context": context,
            "id": did.as_str(),
            "alsoKnownAs": self.also_known_as,
            "verificationMethod": methods,
            "service": services,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plc::Service;
    use butterfly_crypto::PrivateKey;
    use butterfly_syntax::Handle;

    fn did_key(algorithm: Algorithm, seed: u8) -> String {
        PrivateKey::from_bytes(algorithm, &[seed; 32])
            .expect("a valid scalar")
            .public_key()
            .to_did_key()
    }

    #[test]
    fn helpers_read_the_atproto_entries() {
        let signing_key = did_key(Algorithm::K256, 2);
        let mut data = PlcData::atproto(
            vec![did_key(Algorithm::P256, 1)],
            &signing_key,
            &Handle::parse("alice.test").expect("valid"),
            "https://pds.example.com",
        );
        data.also_known_as
            .insert(0, "https://alice.example.com".into());
        let state = PlcState::Active(data.clone());
        assert_eq!(state.handle(), Some("alice.test"));
        assert_eq!(state.pds_endpoint(), Some("https://pds.example.com"));
        assert_eq!(state.signing_key(), Some(signing_key.as_str()));
        assert!(!state.is_tombstoned());

        data.services.insert(
            "atproto_pds".into(),
            Service {
                service_type: "SomethingElse".into(),
                endpoint: "https://pds.example.com".into(),
            },
        );
        assert_eq!(data.pds_endpoint(), None);
        assert_eq!(PlcState::Tombstoned.handle(), None);
        assert_eq!(PlcState::Tombstoned.data(), None);
    }

    #[test]
    fn did_document_has_the_directory_shape() {
        let did = Did::parse("did:plc:ewvi7nxzyoun6zhxrhs64oiz").expect("valid");
        let k256 = did_key(Algorithm::K256, 2);
        let p256 = did_key(Algorithm::P256, 3);
        let mut data = PlcData::atproto(
            vec![did_key(Algorithm::K256, 1)],
            &k256,
            &Handle::parse("alice.test").expect("valid"),
            "https://pds.example.com",
        );
        data.verification_methods
            .insert("other".into(), p256.clone());
        let document = data.to_did_document(&did).expect("renders");
        let expected = json!({
            "@context": [
                "https://www.w3.org/ns/did/v1",
                "https://w3id.org/security/multikey/v1",
                "https://w3id.org/security/suites/secp256k1-2019/v1",
                "https://w3id.org/security/suites/ecdsa-2019/v1",
            ],
            "id": "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
            "alsoKnownAs": ["at://alice.test"],
            "verificationMethod": [
                {
                    "id": "did:plc:ewvi7nxzyoun6zhxrhs64oiz#atproto",
                    "type": "Multikey",
                    "controller": "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
                    "publicKeyMultibase": k256.trim_start_matches("did:key:"),
                },
                {
                    "id": "did:plc:ewvi7nxzyoun6zhxrhs64oiz#other",
                    "type": "Multikey",
                    "controller": "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
                    "publicKeyMultibase": p256.trim_start_matches("did:key:"),
                },
            ],
            "service": [{
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "https://pds.example.com",
            }],
        });
        assert_eq!(document, expected);

        data.verification_methods
            .insert("atproto".into(), "did:key:zBad".into());
        let error = data.to_did_document(&did).expect_err("bad key");
        assert!(
            error.to_string().contains("verificationMethods.atproto"),
            "{error}"
        );
    }
}
