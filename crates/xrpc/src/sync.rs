//! `com.atproto.sync.*`: whole repos, blobs, and the lists a crawler walks. None of them needs a
//! session.
//!
//! [`SyncApi::get_repo`] streams: the CAR is never held in memory, and the returned
//! [`ResponseStream`] plugs into `butterfly_repo::car::AsyncCarReader`.

use butterfly_syntax::{Did, Nsid, Tid};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::client::{ResponseStream, XrpcClient, XrpcRequest};
use crate::error::Error;
use crate::pager::{Page, Pager};

/// One repo of a `listRepos` page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoInfo {
    /// The account's DID.
    pub did: String,
    /// The CID of the repo's current commit.
    pub head: String,
    /// The repo's current revision (a TID).
    pub rev: String,
    /// Whether the host serves the repo; absent means active.
    #[serde(default)]
    pub active: Option<bool>,
    /// Why it is not active (`takendown`, `suspended`, `deleted`, `deactivated`, ...).
    #[serde(default)]
    pub status: Option<String>,
}

impl RepoInfo {
    /// The account's DID, parsed.
    pub fn parse_did(&self) -> Result<Did, butterfly_syntax::Error> {
        Did::parse(&self.did)
    }
}

/// A page of `listRepos`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListReposOutput {
    /// The cursor of the next page; absent on the last one.
    #[serde(default)]
    pub cursor: Option<String>,
    /// The repos.
    pub repos: Vec<RepoInfo>,
}

impl Page for ListReposOutput {
    fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    fn n_items(&self) -> usize {
        self.repos.len()
    }
}

/// One repo of a `listReposByCollection` page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionRepo {
    /// The account's DID.
    pub did: String,
}

/// A page of `listReposByCollection`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListReposByCollectionOutput {
    /// The cursor of the next page; absent on the last one.
    #[serde(default)]
    pub cursor: Option<String>,
    /// The repos with at least one record in the collection.
    pub repos: Vec<CollectionRepo>,
}

impl Page for ListReposByCollectionOutput {
    fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    fn n_items(&self) -> usize {
        self.repos.len()
    }
}

/// A page of `listBlobs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListBlobsOutput {
    /// The cursor of the next page; absent on the last one.
    #[serde(default)]
    pub cursor: Option<String>,
    /// The blobs' CIDs.
    pub cids: Vec<String>,
}

impl Page for ListBlobsOutput {
    fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    fn n_items(&self) -> usize {
        self.cids.len()
    }
}

/// What `getLatestCommit` returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestCommit {
    /// The commit's CID.
    pub cid: String,
    /// The commit's revision.
    pub rev: String,
}

impl LatestCommit {
    /// The revision, parsed (e.g. to pass as `since`).
    pub fn parse_rev(&self) -> Result<Tid, butterfly_syntax::Error> {
        Tid::parse(&self.rev)
    }
}

/// What `getRepoStatus` returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoStatus {
    /// The account's DID.
    pub did: String,
    /// Whether the host serves the repo.
    pub active: bool,
    /// Why it is not active.
    #[serde(default)]
    pub status: Option<String>,
    /// The current revision, for active repos.
    #[serde(default)]
    pub rev: Option<String>,
}

/// The `com.atproto.sync.*` calls of a client; from [`XrpcClient::sync`] or
/// [`Agent::sync`](crate::Agent::sync).
#[derive(Clone, Copy, Debug)]
pub struct SyncApi<'a> {
    client: &'a XrpcClient,
}

impl<'a> SyncApi<'a> {
    pub(crate) fn new(client: &'a XrpcClient) -> SyncApi<'a> {
        SyncApi { client }
    }

    /// `getRepo`: the repo as a CAR stream; with `since`, only the blocks added after that revision.
    /// Bounded by [`ClientConfig::max_stream_bytes`](crate::ClientConfig::max_stream_bytes).
    pub async fn get_repo(&self, did: &Did, since: Option<&Tid>) -> Result<ResponseStream, Error> {
        let request = XrpcRequest::query("com.atproto.sync.getRepo")
            .param("did", did)
            .param_opt("since", since);
        self.client
            .send_stream(&request, self.client.config().max_stream_bytes)
            .await
    }

    /// `getBlob`, read into memory up to
    /// [`ClientConfig::max_blob_bytes`](crate::ClientConfig::max_blob_bytes).
    pub async fn get_blob(&self, did: &Did, cid: &str) -> Result<Bytes, Error> {
        let response = self
            .client
            .send_limited(&blob_request(did, cid), self.client.config().max_blob_bytes)
            .await?;
        Ok(response.body)
    }

    /// `getBlob` as a stream, with an optional size limit.
    pub async fn get_blob_stream(
        &self,
        did: &Did,
        cid: &str,
        max_bytes: Option<u64>,
    ) -> Result<ResponseStream, Error> {
        self.client
            .send_stream(&blob_request(did, cid), max_bytes)
            .await
    }

    /// `listBlobs`: one page of the account's blob CIDs, optionally only those added since a revision.
    pub async fn list_blobs(
        &self,
        did: &Did,
        since: Option<&Tid>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<ListBlobsOutput, Error> {
        let request = list_blobs_request(did, since, limit).param_opt("cursor", cursor);
        self.client.send_json(&request).await
    }

    /// `listBlobs`, every page.
    pub fn list_blobs_pager(
        &self,
        did: &Did,
        since: Option<&Tid>,
        limit: Option<u32>,
    ) -> Pager<ListBlobsOutput> {
        Pager::new(self.client, list_blobs_request(did, since, limit), None)
    }

    /// `listRepos`: one page of the repos the host serves.
    pub async fn list_repos(
        &self,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<ListReposOutput, Error> {
        let request = list_repos_request(limit).param_opt("cursor", cursor);
        self.client.send_json(&request).await
    }

    /// `listRepos`, every page.
    pub fn list_repos_pager(&self, limit: Option<u32>) -> Pager<ListReposOutput> {
        Pager::new(self.client, list_repos_request(limit), None)
    }

    /// `listReposByCollection`: one page of the repos with records in `collection` (a relay call;
    /// many PDSes answer `MethodNotImplemented` or 404).
    pub async fn list_repos_by_collection(
        &self,
        collection: &Nsid,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<ListReposByCollectionOutput, Error> {
        let request = by_collection_request(collection, limit).param_opt("cursor", cursor);
        self.client.send_json(&request).await
    }

    /// `listReposByCollection`, every page.
    pub fn list_repos_by_collection_pager(
        &self,
        collection: &Nsid,
        limit: Option<u32>,
    ) -> Pager<ListReposByCollectionOutput> {
        Pager::new(self.client, by_collection_request(collection, limit), None)
    }

    /// `getLatestCommit`: the repo's current commit CID and revision.
    pub async fn get_latest_commit(&self, did: &Did) -> Result<LatestCommit, Error> {
        let request = XrpcRequest::query("com.atproto.sync.getLatestCommit").param("did", did);
        self.client.send_json(&request).await
    }

    /// `getRepoStatus`: whether the host serves the repo, and its revision.
    pub async fn get_repo_status(&self, did: &Did) -> Result<RepoStatus, Error> {
        let request = XrpcRequest::query("com.atproto.sync.getRepoStatus").param("did", did);
        self.client.send_json(&request).await
    }
}

fn blob_request(did: &Did, cid: &str) -> XrpcRequest {
    XrpcRequest::query("com.atproto.sync.getBlob")
        .param("did", did)
        .param("cid", cid)
}

fn list_blobs_request(did: &Did, since: Option<&Tid>, limit: Option<u32>) -> XrpcRequest {
    XrpcRequest::query("com.atproto.sync.listBlobs")
        .param("did", did)
        .param_opt("since", since)
        .param_opt("limit", limit)
}

fn list_repos_request(limit: Option<u32>) -> XrpcRequest {
    XrpcRequest::query("com.atproto.sync.listRepos").param_opt("limit", limit)
}

fn by_collection_request(collection: &Nsid, limit: Option<u32>) -> XrpcRequest {
    XrpcRequest::query("com.atproto.sync.listReposByCollection")
        .param("collection", collection)
        .param_opt("limit", limit)
}

impl XrpcClient {
    /// `com.atproto.sync.*` calls.
    pub fn sync(&self) -> SyncApi<'_> {
        SyncApi::new(self)
    }
}
