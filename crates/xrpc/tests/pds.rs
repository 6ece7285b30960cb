//! The client against the reference PDS and PLC directory (`butterfly_testnet`, from
//! `../shared/peers`): one network, shared by the sequential steps of one test.

use std::sync::Arc;
use std::time::Duration;

use butterfly_repo::car::AsyncCarReader;
use butterfly_repo::commit::Commit;
use butterfly_syntax::{Did, Nsid, Tid};
use butterfly_testnet::TestNetwork;
use butterfly_xrpc::repo::WriteRecordOutput;
use butterfly_xrpc::{
    Agent, AgentConfig, ApplyWrites, ClientConfig, CreateRecord, CreateSession, DeleteRecord,
    Error, ListRecords, MemorySessionStore, PutRecord, SessionStore, WriteOp, WriteResult,
    XrpcClient,
};
use serde_json::{json, Value};
use url::Url;

const POST: &str = "app.bsky.feed.post";
/// A collection without a Lexicon on the PDS, so any record key goes.
const NOTE: &str = "com.example.note";

fn post(text: &str) -> Value {
    json!({"$type": POST, "text": text, "createdAt": "2024-05-01T12:00:00.000Z"})
}

fn note(text: &str) -> Value {
    json!({"$type": NOTE, "text": text})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pds_end_to_end() {
    let network = tokio::task::spawn_blocking(TestNetwork::start)
        .await
        .expect("network starts");
    let client = XrpcClient::new(
        Url::parse(&network.pds).expect("pds url"),
        ClientConfig::with_private_network(true),
    )
    .expect("client builds");
    let alice = network.account("alice").clone();
    let did = Did::parse(&alice.did).expect("seeded did");

    let store = MemorySessionStore::new();
    let agent = client
        .login_with(
            &CreateSession::new(&alice.handle, &alice.password),
            AgentConfig {
                store: Some(Arc::new(store.clone())),
                ..AgentConfig::default()
            },
        )
        .await
        .expect("alice logs in");
    assert_eq!(agent.did(), &did);
    assert_eq!(store.load().expect("session saved").did, alice.did);

    let before_writes = client
        .sync()
        .get_latest_commit(&did)
        .await
        .expect("latest commit");

    describe_repo(&client, &did).await;
    let blob_cid = records_and_blobs(&agent).await;
    apply_writes(&agent).await;
    session_refresh(&client, &agent, &store).await;
    get_repo(
        &network,
        &client,
        &did,
        &before_writes.parse_rev().expect("tid"),
    )
    .await;
    sync_lists(&network, &client, &did, &blob_cid).await;
}

async fn describe_repo(client: &XrpcClient, did: &Did) {
    let described = client
        .repo()
        .describe_repo(did.as_str())
        .await
        .expect("describeRepo");
    assert_eq!(described.handle, "alice.test");
    assert_eq!(described.parse_did().expect("did"), *did);
    assert!(
        described.collections.iter().any(|c| c == POST),
        "{:?}",
        described.collections
    );
    assert_eq!(described.did_doc["id"], did.as_str());

    // By handle too; and a missing repo is a typed error.
    let by_handle = client
        .repo()
        .describe_repo("alice.test")
        .await
        .expect("describeRepo by handle");
    assert_eq!(by_handle.did, did.as_str());
    let error = client
        .repo()
        .describe_repo("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
        .await
        .expect_err("no such repo");
    assert!(
        matches!(error, Error::Xrpc { status: 400, .. }),
        "{error:?}"
    );
}

/// Create, read, update, list, delete; upload a blob and reference it. Returns the blob's CID.
async fn records_and_blobs(agent: &Agent) -> String {
    let repo = agent.repo();
    let did = agent.did().as_str();

    let created = repo
        .create_record(&CreateRecord::new(did, POST, post("first draft")))
        .await
        .expect("createRecord");
    let uri = created.at_uri().expect("at-uri");
    assert_eq!(uri.authority().as_str(), did);
    let rkey = created.rkey().expect("rkey").to_owned();
    assert!(created.commit.is_some());

    let fetched = repo.get_record(did, POST, &rkey).await.expect("getRecord");
    assert_eq!(fetched.value["text"], "first draft");
    assert_eq!(fetched.cid.as_deref(), Some(created.cid.as_str()));

    let updated = repo
        .put_record(&PutRecord {
            swap_record: Some(Some(created.cid.clone())),
            ..PutRecord::new(did, POST, &rkey, post("final text"))
        })
        .await
        .expect("putRecord");
    assert_ne!(updated.cid, created.cid);
    assert_eq!(updated.uri, created.uri);
    let fetched = repo.get_record(did, POST, &rkey).await.expect("getRecord");
    assert_eq!(fetched.value["text"], "final text");

    // A stale swap is refused with the lexicon's error.
    let error = repo
        .put_record(&PutRecord {
            swap_record: Some(Some(created.cid.clone())),
            ..PutRecord::new(did, POST, &rkey, post("lost update"))
        })
        .await
        .expect_err("stale swap");
    assert_eq!(error.xrpc_error(), Some("InvalidSwap"), "{error:?}");

    // A blob, referenced from a record.
    let bytes: Vec<u8> = (0..2000u32).map(|i| (i * 7 % 251) as u8).collect();
    let uploaded = repo
        .upload_blob(bytes.clone(), "application/octet-stream")
        .await
        .expect("uploadBlob");
    let blob = uploaded.blob_ref().expect("blob ref");
    assert_eq!(blob.size, Some(2000));
    let blob_cid = blob.cid.to_string();
    let attachment = repo
        .create_record(&CreateRecord::new(
            did,
            "com.example.attachment",
            json!({"$type": "com.example.attachment", "file": uploaded.blob, "note": "bytes"}),
        ))
        .await
        .expect("record with a blob");
    assert_eq!(attachment.validation_status.as_deref(), Some("unknown"));
    let fetched = repo
        .get_record(
            did,
            "com.example.attachment",
            attachment.rkey().expect("rkey"),
        )
        .await
        .expect("getRecord");
    assert_eq!(fetched.value["file"]["ref"]["$link"], blob_cid.as_str());
    let downloaded = agent
        .sync()
        .get_blob(agent.did(), &blob_cid)
        .await
        .expect("getBlob");
    assert_eq!(downloaded.as_ref(), bytes.as_slice());

    // Paginate the posts one at a time: the two seeded ones and ours.
    let mut pager = repo.list_records_pager(&ListRecords {
        limit: Some(1),
        ..ListRecords::new(did, POST)
    });
    let mut uris = Vec::new();
    let mut n_pages = 0;
    while let Some(page) = pager.next_page().await.expect("listRecords page") {
        n_pages += 1;
        uris.extend(page.records.into_iter().map(|record| record.uri));
    }
    assert_eq!(uris.len(), 3, "{uris:?}");
    assert!(n_pages >= 3);
    assert!(uris.contains(&created.uri));
    let page = repo
        .list_records(&ListRecords {
            limit: Some(2),
            reverse: Some(true),
            ..ListRecords::new(did, POST)
        })
        .await
        .expect("listRecords");
    assert_eq!(page.records.len(), 2);
    assert!(page.cursor.is_some());

    // Delete, then the record is gone (typed error), and deleting again is fine.
    let deleted = repo
        .delete_record(&DeleteRecord::new(did, POST, &rkey))
        .await
        .expect("deleteRecord");
    assert!(deleted.commit.is_some());
    let error = repo
        .get_record(did, POST, &rkey)
        .await
        .expect_err("deleted");
    assert_eq!(error.xrpc_error(), Some("RecordNotFound"), "{error:?}");
    repo.delete_record(&DeleteRecord::new(did, POST, &rkey))
        .await
        .expect("deleting again succeeds");
    blob_cid
}

async fn apply_writes(agent: &Agent) {
    let repo = agent.repo();
    let did = agent.did().as_str();
    let keep: WriteRecordOutput = repo
        .create_record(&CreateRecord {
            rkey: Some("keep".into()),
            ..CreateRecord::new(did, NOTE, note("to be updated"))
        })
        .await
        .expect("createRecord");
    repo.create_record(&CreateRecord {
        rkey: Some("drop".into()),
        ..CreateRecord::new(did, NOTE, note("to be deleted"))
    })
    .await
    .expect("createRecord");
    let output = repo
        .apply_writes(&ApplyWrites {
            repo: did.to_owned(),
            writes: vec![
                WriteOp::Create {
                    collection: NOTE.into(),
                    rkey: Some("batch".into()),
                    value: note("made in a batch"),
                },
                WriteOp::Update {
                    collection: NOTE.into(),
                    rkey: "keep".into(),
                    value: note("updated in a batch"),
                },
                WriteOp::Delete {
                    collection: NOTE.into(),
                    rkey: "drop".into(),
                },
            ],
            ..ApplyWrites::default()
        })
        .await
        .expect("applyWrites");
    assert!(output.commit.is_some());
    assert_eq!(output.results.len(), 3, "{:?}", output.results);
    assert!(
        matches!(&output.results[0], WriteResult::Create { uri, .. } if uri.ends_with("/batch")),
        "{:?}",
        output.results[0]
    );
    assert!(
        matches!(&output.results[1], WriteResult::Update { cid, .. } if *cid != keep.cid),
        "{:?}",
        output.results[1]
    );
    assert_eq!(output.results[2], WriteResult::Delete);
    let kept = repo.get_record(did, NOTE, "keep").await.expect("getRecord");
    assert_eq!(kept.value["text"], "updated in a batch");
    let batch = repo
        .get_record(did, NOTE, "batch")
        .await
        .expect("getRecord");
    assert_eq!(batch.value["text"], "made in a batch");
    let error = repo
        .get_record(did, NOTE, "drop")
        .await
        .expect_err("deleted");
    assert_eq!(error.xrpc_error(), Some("RecordNotFound"));

    // A stale swapCommit fails the whole batch.
    let error = repo
        .apply_writes(&ApplyWrites {
            repo: did.to_owned(),
            writes: vec![WriteOp::Delete {
                collection: NOTE.into(),
                rkey: "keep".into(),
            }],
            swap_commit: Some(keep.commit.expect("commit").cid),
            ..ApplyWrites::default()
        })
        .await
        .expect_err("stale commit");
    assert_eq!(error.xrpc_error(), Some("InvalidSwap"), "{error:?}");
    repo.get_record(did, NOTE, "keep")
        .await
        .expect("still there");
}

async fn session_refresh(client: &XrpcClient, agent: &Agent, store: &MemorySessionStore) {
    // Explicitly.
    let before = store.load().expect("saved");
    let refreshed = agent.refresh_session().await.expect("refreshSession");
    // Access tokens issued within the same second can be identical; refresh tokens never are.
    assert_ne!(refreshed.refresh_jwt, before.refresh_jwt);
    assert_eq!(store.load().as_ref(), Some(&refreshed));
    assert_eq!(refreshed.email.as_deref(), Some("alice@example.com"));

    // Proactively: a margin longer than the token's lifetime refreshes before the call.
    let eager = Agent::new(
        client,
        refreshed.clone(),
        AgentConfig {
            store: Some(Arc::new(store.clone())),
            refresh_margin: Duration::from_secs(365 * 86_400),
        },
    )
    .expect("agent");
    let described = eager
        .repo()
        .describe_repo(eager.did().as_str())
        .await
        .expect("call");
    assert_eq!(described.handle, "alice.test");
    let after = store.load().expect("saved");
    assert_ne!(after.refresh_jwt, refreshed.refresh_jwt);
    assert_eq!(after, eager.session());

    // The eager agent's session still works for writes.
    eager
        .repo()
        .put_record(&PutRecord::new(
            eager.did().as_str(),
            "app.bsky.actor.profile",
            "self",
            json!({"$type": "app.bsky.actor.profile", "displayName": "Alice A."}),
        ))
        .await
        .expect("putRecord after refreshes");
}

async fn get_repo(network: &TestNetwork, client: &XrpcClient, did: &Did, since: &Tid) {
    // The repo's signing key, from the PLC directory.
    let plc = Url::parse(&format!("{}/{}/data", network.plc, did)).expect("plc url");
    let response = client
        .http()
        .get_limited(&plc, "application/json", 1 << 20, Duration::from_secs(10))
        .await
        .expect("plc data");
    assert_eq!(response.status, 200);
    let data: Value = serde_json::from_slice(&response.body).expect("plc json");
    let did_key = data["verificationMethods"]["atproto"]
        .as_str()
        .expect("atproto key");
    let key = butterfly_crypto::PublicKey::parse_did_key(did_key).expect("did:key");

    let latest = client
        .sync()
        .get_latest_commit(did)
        .await
        .expect("latest commit");

    let (full_blocks, full_bytes) = {
        let stream = client.sync().get_repo(did, None).await.expect("getRepo");
        let mut car = AsyncCarReader::new(stream).await.expect("car header");
        let root = car.header().roots[0];
        assert_eq!(root.to_string(), latest.cid);
        let mut commit = None;
        let mut n_blocks = 0;
        while let Some(block) = car.next_block().await.expect("car block") {
            n_blocks += 1;
            if block.cid == root {
                commit = Some(Commit::decode(&block.cid, &block.data).expect("commit decodes"));
            }
        }
        let commit = commit.expect("the CAR holds its root commit");
        commit.verify_signature(&key).expect("signature holds");
        let verified = commit.verify(&key).expect("verifies");
        assert_eq!(&verified.did, did);
        assert_eq!(
            verified.rev.as_ref().map(Tid::as_str),
            Some(latest.rev.as_str())
        );
        (n_blocks, car.offset())
    };

    // Since a revision before our writes: a smaller diff CAR with the same root.
    let stream = client
        .sync()
        .get_repo(did, Some(since))
        .await
        .expect("getRepo since");
    let mut car = AsyncCarReader::new(stream).await.expect("car header");
    assert_eq!(car.header().roots[0].to_string(), latest.cid);
    let mut n_blocks = 0;
    let mut saw_root = false;
    while let Some(block) = car.next_block().await.expect("car block") {
        n_blocks += 1;
        saw_root |= block.cid == car.header().roots[0];
    }
    assert!(saw_root);
    assert!(
        n_blocks < full_blocks && car.offset() < full_bytes,
        "diff {n_blocks} blocks / {} bytes, full {full_blocks} / {full_bytes}",
        car.offset()
    );

    // Too small a stream limit fails the read with our error inside.
    let limited = XrpcClient::new(
        client.base_url().clone(),
        ClientConfig {
            max_stream_bytes: Some(100),
            ..ClientConfig::with_private_network(true)
        },
    )
    .expect("client");
    let outcome = match limited.sync().get_repo(did, None).await {
        Err(error) => Err(error.to_string()),
        Ok(stream) => match AsyncCarReader::new(stream).await {
            Err(error) => Err(error.to_string()),
            Ok(mut car) => loop {
                match car.next_block().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => break Ok(()),
                    Err(error) => break Err(error.to_string()),
                }
            },
        },
    };
    let message = outcome.expect_err("the repo is larger than 100 bytes");
    assert!(message.contains("exceeds 100 bytes"), "{message}");
}

async fn sync_lists(network: &TestNetwork, client: &XrpcClient, did: &Did, blob_cid: &str) {
    let sync = client.sync();

    // listRepos, one repo per page, walks all three accounts.
    let mut pager = sync.list_repos_pager(Some(1));
    let mut dids = Vec::new();
    while let Some(page) = pager.next_page().await.expect("listRepos page") {
        assert!(page.repos.len() <= 1);
        dids.extend(page.repos.into_iter().map(|repo| repo.did));
    }
    let mut expected: Vec<String> = network.accounts.iter().map(|a| a.did.clone()).collect();
    dids.sort();
    expected.sort();
    assert_eq!(dids, expected);

    // listBlobs: the seeded avatar and our upload.
    let seeded_blob = network.ready["blob"]["cid"]
        .as_str()
        .expect("seeded blob")
        .to_owned();
    let page = sync
        .list_blobs(did, None, None, None)
        .await
        .expect("listBlobs");
    assert!(page.cids.contains(&seeded_blob), "{:?}", page.cids);
    assert!(
        page.cids.iter().any(|cid| cid == blob_cid),
        "{:?}",
        page.cids
    );
    let mut pager = sync.list_blobs_pager(did, None, Some(1));
    let mut all = Vec::new();
    while let Some(page) = pager.next_page().await.expect("listBlobs page") {
        all.extend(page.cids);
    }
    all.sort();
    let mut listed = page.cids.clone();
    listed.sort();
    assert_eq!(all, listed);

    let seeded = sync
        .get_blob(did, &seeded_blob)
        .await
        .expect("getBlob seeded");
    assert_eq!(
        seeded.len() as u64,
        network.ready["blob"]["size"].as_u64().expect("size")
    );
    let error = sync
        .get_blob(
            did,
            "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
        )
        .await
        .expect_err("no such blob");
    assert!(
        matches!(
            error,
            Error::Xrpc {
                status: 400 | 404,
                ..
            }
        ),
        "{error:?}"
    );

    // getLatestCommit and getRepoStatus agree.
    let latest = sync.get_latest_commit(did).await.expect("latest commit");
    let status = sync.get_repo_status(did).await.expect("getRepoStatus");
    assert_eq!(status.did, did.as_str());
    assert!(status.active);
    assert_eq!(status.rev.as_deref(), Some(latest.rev.as_str()));
    let error = sync
        .get_latest_commit(&Did::parse("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa").expect("did"))
        .await
        .expect_err("unknown repo");
    assert_eq!(error.xrpc_error(), Some("RepoNotFound"), "{error:?}");

    // listReposByCollection is a relay method. The reference PDS has no handler for it and tries to
    // proxy it to an AppView, of which the test network has none: a typed 400.
    let collection = Nsid::parse(POST).expect("nsid");
    let error = sync
        .list_repos_by_collection(&collection, None, None)
        .await
        .expect_err("not served by the reference PDS");
    assert!(
        matches!(&error, Error::Xrpc { status: 400, error: Some(name), message: Some(message), .. }
            if name == "InvalidRequest" && message.contains("No service configured")),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}
