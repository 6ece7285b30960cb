//! `com.atproto.repo.*`: reading and writing records, and uploading blobs.
//!
//! Records travel as atproto JSON (`serde_json::Value`, with `$link`, `$bytes` and blob objects); use
//! `butterfly_data::Value::from_json` for the data model. Identifiers are plain strings on the wire;
//! outputs offer typed accessors (`at_uri()`, `did()`...).
//!
//! Reads work on any client. Writes and `uploadBlob` need an [`Agent`](crate::Agent) and fail with
//! [`Error::Auth`] without one. Retries: `putRecord`, `deleteRecord` and `uploadBlob` are idempotent
//! and retried like queries; `createRecord` and `applyWrites` are retried only where nothing can have
//! happened (see [`RetryPolicy`](crate::RetryPolicy)).

use butterfly_syntax::{AtUri, Did};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::{XrpcClient, XrpcRequest};
use crate::error::Error;
use crate::pager::{Page, Pager};

/// The commit a write produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitMeta {
    /// The commit's CID.
    pub cid: String,
    /// The commit's revision (a TID).
    pub rev: String,
}

/// The input of `com.atproto.repo.createRecord`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRecord {
    /// The repo: the account's DID or handle.
    pub repo: String,
    /// The collection NSID, e.g. `app.bsky.feed.post`.
    pub collection: String,
    /// The record key; the server makes a TID when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rkey: Option<String>,
    /// `Some(false)` skips Lexicon validation, `Some(true)` requires it; absent validates known
    /// Lexicons only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validate: Option<bool>,
    /// The record, in atproto JSON.
    pub record: Value,
    /// Fail with `InvalidSwap` unless the repo's current commit has this CID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_commit: Option<String>,
}

impl CreateRecord {
    /// A record for `collection` in `repo`, with a server-chosen key.
    pub fn new(repo: &str, collection: &str, record: Value) -> CreateRecord {
        CreateRecord {
            repo: repo.to_owned(),
            collection: collection.to_owned(),
            record,
            ..CreateRecord::default()
        }
    }
}

/// The input of `com.atproto.repo.putRecord`: create or replace the record at a key.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PutRecord {
    /// The repo: the account's DID or handle.
    pub repo: String,
    /// The collection NSID.
    pub collection: String,
    /// The record key.
    pub rkey: String,
    /// Lexicon validation, as in [`CreateRecord::validate`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validate: Option<bool>,
    /// The record, in atproto JSON.
    pub record: Value,
    /// Compare-and-swap on the record: `Some(Some(cid))` fails unless the current record has that
    /// CID, `Some(None)` (sent as `null`) fails unless there is no record yet, `None` does not check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_record: Option<Option<String>>,
    /// Fail with `InvalidSwap` unless the repo's current commit has this CID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_commit: Option<String>,
}

impl PutRecord {
    /// Writes `record` at `collection/rkey` in `repo`.
    pub fn new(repo: &str, collection: &str, rkey: &str, record: Value) -> PutRecord {
        PutRecord {
            repo: repo.to_owned(),
            collection: collection.to_owned(),
            rkey: rkey.to_owned(),
            record,
            ..PutRecord::default()
        }
    }
}

/// The input of `com.atproto.repo.deleteRecord`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteRecord {
    /// The repo: the account's DID or handle.
    pub repo: String,
    /// The collection NSID.
    pub collection: String,
    /// The record key.
    pub rkey: String,
    /// Fail with `InvalidSwap` unless the current record has this CID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_record: Option<String>,
    /// Fail with `InvalidSwap` unless the repo's current commit has this CID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_commit: Option<String>,
}

impl DeleteRecord {
    /// Deletes `collection/rkey` from `repo` (succeeds if it is already gone).
    pub fn new(repo: &str, collection: &str, rkey: &str) -> DeleteRecord {
        DeleteRecord {
            repo: repo.to_owned(),
            collection: collection.to_owned(),
            rkey: rkey.to_owned(),
            ..DeleteRecord::default()
        }
    }
}

/// What `createRecord` and `putRecord` return.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteRecordOutput {
    /// The record's AT-URI.
    pub uri: String,
    /// The record's CID.
    pub cid: String,
    /// The commit that wrote it.
    #[serde(default)]
    pub commit: Option<CommitMeta>,
    /// `valid` or `unknown` (no Lexicon known to the server).
    #[serde(default)]
    pub validation_status: Option<String>,
}

impl WriteRecordOutput {
    /// The record's AT-URI, parsed.
    pub fn at_uri(&self) -> Result<AtUri, butterfly_syntax::Error> {
        AtUri::parse(&self.uri)
    }

    /// The record key, the last segment of the URI.
    pub fn rkey(&self) -> Option<&str> {
        self.uri.rsplit_once('/').map(|(_, rkey)| rkey)
    }
}

/// What `deleteRecord` returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRecordOutput {
    /// The commit that deleted it (absent if there was nothing to delete).
    #[serde(default)]
    pub commit: Option<CommitMeta>,
}

/// One write of an `applyWrites` batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "$type")]
pub enum WriteOp {
    /// Creates a record.
    #[serde(rename = "com.atproto.repo.applyWrites#create")]
    Create {
        /// The collection NSID.
        collection: String,
        /// The record key; the server makes a TID when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rkey: Option<String>,
        /// The record, in atproto JSON.
        value: Value,
    },
    /// Replaces an existing record.
    #[serde(rename = "com.atproto.repo.applyWrites#update")]
    Update {
        /// The collection NSID.
        collection: String,
        /// The record key.
        rkey: String,
        /// The record, in atproto JSON.
        value: Value,
    },
    /// Deletes a record.
    #[serde(rename = "com.atproto.repo.applyWrites#delete")]
    Delete {
        /// The collection NSID.
        collection: String,
        /// The record key.
        rkey: String,
    },
}

/// The input of `com.atproto.repo.applyWrites`: several writes in one commit.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyWrites {
    /// The repo: the account's DID or handle.
    pub repo: String,
    /// Lexicon validation, as in [`CreateRecord::validate`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validate: Option<bool>,
    /// The writes, applied in order, all or none.
    pub writes: Vec<WriteOp>,
    /// Fail with `InvalidSwap` unless the repo's current commit has this CID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_commit: Option<String>,
}

/// The outcome of one write of an `applyWrites` batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "$type")]
pub enum WriteResult {
    /// A record was created.
    #[serde(rename = "com.atproto.repo.applyWrites#createResult")]
    Create {
        /// The record's AT-URI.
        uri: String,
        /// The record's CID.
        cid: String,
        /// `valid` or `unknown`.
        #[serde(default, rename = "validationStatus")]
        validation_status: Option<String>,
    },
    /// A record was replaced.
    #[serde(rename = "com.atproto.repo.applyWrites#updateResult")]
    Update {
        /// The record's AT-URI.
        uri: String,
        /// The record's new CID.
        cid: String,
        /// `valid` or `unknown`.
        #[serde(default, rename = "validationStatus")]
        validation_status: Option<String>,
    },
    /// A record was deleted.
    #[serde(rename = "com.atproto.repo.applyWrites#deleteResult")]
    Delete,
    /// A result of a kind this crate does not know.
    #[serde(other)]
    Unknown,
}

/// What `applyWrites` returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyWritesOutput {
    /// The commit that applied the writes.
    #[serde(default)]
    pub commit: Option<CommitMeta>,
    /// One result per write, in order.
    #[serde(default)]
    pub results: Vec<WriteResult>,
}

/// What `getRecord` returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GetRecordOutput {
    /// The record's AT-URI.
    pub uri: String,
    /// The record's CID.
    #[serde(default)]
    pub cid: Option<String>,
    /// The record, in atproto JSON.
    pub value: Value,
}

/// The parameters of `com.atproto.repo.listRecords`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListRecords {
    /// The repo: a DID or handle.
    pub repo: String,
    /// The collection NSID.
    pub collection: String,
    /// Records per page (the server's default is 50, its maximum 100).
    pub limit: Option<u32>,
    /// Where to start; from a previous page.
    pub cursor: Option<String>,
    /// Oldest first instead of newest first.
    pub reverse: Option<bool>,
}

impl ListRecords {
    /// Every record of `collection` in `repo`, newest first.
    pub fn new(repo: &str, collection: &str) -> ListRecords {
        ListRecords {
            repo: repo.to_owned(),
            collection: collection.to_owned(),
            ..ListRecords::default()
        }
    }

    fn request(&self) -> XrpcRequest {
        XrpcRequest::query("com.atproto.repo.listRecords")
            .param("repo", &self.repo)
            .param("collection", &self.collection)
            .param_opt("limit", self.limit)
            .param_opt("reverse", self.reverse)
    }
}

/// One record of a `listRecords` page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordEntry {
    /// The record's AT-URI.
    pub uri: String,
    /// The record's CID.
    pub cid: String,
    /// The record, in atproto JSON.
    pub value: Value,
}

/// A page of `listRecords`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListRecordsOutput {
    /// The cursor of the next page; absent on the last one.
    #[serde(default)]
    pub cursor: Option<String>,
    /// The records.
    pub records: Vec<RecordEntry>,
}

impl Page for ListRecordsOutput {
    fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    fn n_items(&self) -> usize {
        self.records.len()
    }
}

/// What `describeRepo` returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeRepoOutput {
    /// The account's handle.
    pub handle: String,
    /// The account's DID.
    pub did: String,
    /// The DID document.
    #[serde(default)]
    pub did_doc: Value,
    /// The collections the repo has records in.
    #[serde(default)]
    pub collections: Vec<String>,
    /// Whether the handle resolves back to the DID.
    pub handle_is_correct: bool,
}

impl DescribeRepoOutput {
    /// The account's DID, parsed.
    pub fn parse_did(&self) -> Result<Did, butterfly_syntax::Error> {
        Did::parse(&self.did)
    }
}

/// What `uploadBlob` returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UploadBlobOutput {
    /// The blob reference, in atproto JSON (`{"$type": "blob", "ref": {"$link": ...}, "mimeType",
    /// "size"}`): put it in a record as is.
    pub blob: Value,
}

impl UploadBlobOutput {
    /// The blob reference in the data model.
    pub fn blob_ref(&self) -> Result<butterfly_data::Blob, Error> {
        let decode = |message: String| Error::Decode {
            nsid: "com.atproto.repo.uploadBlob".to_owned(),
            message,
        };
        let value = butterfly_data::Value::from_json(&self.blob)
            .map_err(|error| decode(error.to_string()))?;
        butterfly_data::Blob::from_value(&value).map_err(decode)
    }
}

/// The `com.atproto.repo.*` calls of a client; from [`XrpcClient::repo`] or
/// [`Agent::repo`](crate::Agent::repo).
#[derive(Clone, Copy, Debug)]
pub struct RepoApi<'a> {
    client: &'a XrpcClient,
}

impl<'a> RepoApi<'a> {
    pub(crate) fn new(client: &'a XrpcClient) -> RepoApi<'a> {
        RepoApi { client }
    }

    fn require_session(&self, nsid: &str) -> Result<(), Error> {
        if self.client.is_authenticated() {
            Ok(())
        } else {
            Err(Error::Auth {
                reason: format!("{nsid} needs a session: log in first"),
                source: None,
            })
        }
    }

    /// `createRecord`. Not retried on ambiguous failures: without an rkey a repeat would create a
    /// second record.
    pub async fn create_record(&self, input: &CreateRecord) -> Result<WriteRecordOutput, Error> {
        let nsid = "com.atproto.repo.createRecord";
        self.require_session(nsid)?;
        self.client
            .send_json(&XrpcRequest::procedure(nsid).json(input))
            .await
    }

    /// `putRecord`: creates or replaces the record at a key. Idempotent, so retried.
    pub async fn put_record(&self, input: &PutRecord) -> Result<WriteRecordOutput, Error> {
        let nsid = "com.atproto.repo.putRecord";
        self.require_session(nsid)?;
        self.client
            .send_json(&XrpcRequest::procedure(nsid).json(input).idempotent())
            .await
    }

    /// `deleteRecord`. Idempotent (deleting twice leaves no record), so retried.
    pub async fn delete_record(&self, input: &DeleteRecord) -> Result<DeleteRecordOutput, Error> {
        let nsid = "com.atproto.repo.deleteRecord";
        self.require_session(nsid)?;
        self.client
            .send_json(&XrpcRequest::procedure(nsid).json(input).idempotent())
            .await
    }

    /// `applyWrites`: several writes in one commit. Not retried on ambiguous failures.
    pub async fn apply_writes(&self, input: &ApplyWrites) -> Result<ApplyWritesOutput, Error> {
        let nsid = "com.atproto.repo.applyWrites";
        self.require_session(nsid)?;
        self.client
            .send_json(&XrpcRequest::procedure(nsid).json(input))
            .await
    }

    /// `getRecord`: one record by repo (DID or handle), collection and key. A missing record is
    /// [`Error::Xrpc`] with error `RecordNotFound`.
    pub async fn get_record(
        &self,
        repo: &str,
        collection: &str,
        rkey: &str,
    ) -> Result<GetRecordOutput, Error> {
        let request = XrpcRequest::query("com.atproto.repo.getRecord")
            .param("repo", repo)
            .param("collection", collection)
            .param("rkey", rkey);
        self.client.send_json(&request).await
    }

    /// `listRecords`: one page.
    pub async fn list_records(&self, params: &ListRecords) -> Result<ListRecordsOutput, Error> {
        let request = params
            .request()
            .param_opt("cursor", params.cursor.as_deref());
        self.client.send_json(&request).await
    }

    /// `listRecords`, page after page from `params.cursor`.
    pub fn list_records_pager(&self, params: &ListRecords) -> Pager<ListRecordsOutput> {
        Pager::new(self.client, params.request(), params.cursor.clone())
    }

    /// `describeRepo`: the account's handle, DID document and collections.
    pub async fn describe_repo(&self, repo: &str) -> Result<DescribeRepoOutput, Error> {
        let request = XrpcRequest::query("com.atproto.repo.describeRepo").param("repo", repo);
        self.client.send_json(&request).await
    }

    /// `uploadBlob`: stores `bytes` for the logged-in account and returns the reference to put in a
    /// record (the blob is dropped by the server unless a record refers to it soon). Content-addressed,
    /// so retried.
    pub async fn upload_blob(
        &self,
        bytes: impl Into<Bytes>,
        mime_type: &str,
    ) -> Result<UploadBlobOutput, Error> {
        let nsid = "com.atproto.repo.uploadBlob";
        self.require_session(nsid)?;
        let request = XrpcRequest::procedure(nsid)
            .body(bytes, mime_type)
            .idempotent();
        self.client.send_json(&request).await
    }
}

impl XrpcClient {
    /// `com.atproto.repo.*` calls (reads only, unless this client is an agent's).
    pub fn repo(&self) -> RepoApi<'_> {
        RepoApi::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_serialise_to_the_lexicon_shapes() {
        let mut put = PutRecord::new("did:plc:abc", "app.bsky.actor.profile", "self", json!({}));
        assert_eq!(
            serde_json::to_value(&put).expect("serialises"),
            json!({"repo": "did:plc:abc", "collection": "app.bsky.actor.profile", "rkey": "self", "record": {}})
        );
        put.swap_record = Some(None);
        assert_eq!(
            serde_json::to_value(&put).expect("serialises")["swapRecord"],
            Value::Null
        );
        put.swap_record = Some(Some("bafy".into()));
        assert_eq!(
            serde_json::to_value(&put).expect("serialises")["swapRecord"],
            json!("bafy")
        );

        let writes = ApplyWrites {
            repo: "did:plc:abc".into(),
            writes: vec![
                WriteOp::Create {
                    collection: "a.b.c".into(),
                    rkey: None,
                    value: json!({"x": 1}),
                },
                WriteOp::Delete {
                    collection: "a.b.c".into(),
                    rkey: "k".into(),
                },
            ],
            ..ApplyWrites::default()
        };
        assert_eq!(
            serde_json::to_value(&writes).expect("serialises"),
            json!({"repo": "did:plc:abc", "writes": [
                {"$type": "com.atproto.repo.applyWrites#create", "collection": "a.b.c", "value": {"x": 1}},
                {"$type": "com.atproto.repo.applyWrites#delete", "collection": "a.b.c", "rkey": "k"},
            ]})
        );
    }

    #[test]
    fn apply_writes_results_parse_including_unknown_kinds() {
        let output: ApplyWritesOutput = serde_json::from_value(json!({
            "commit": {"cid": "bafyc", "rev": "3l"},
            "results": [
                {"$type": "com.atproto.repo.applyWrites#createResult", "uri": "at://x/a.b.c/1", "cid": "bafy1", "validationStatus": "unknown"},
                {"$type": "com.atproto.repo.applyWrites#deleteResult"},
                {"$type": "com.example.future#result", "extra": true},
            ]
        }))
        .expect("parses");
        assert_eq!(output.results.len(), 3);
        assert!(matches!(output.results[0], WriteResult::Create { ref cid, .. } if cid == "bafy1"));
        assert_eq!(output.results[1], WriteResult::Delete);
        assert_eq!(output.results[2], WriteResult::Unknown);
    }
}
