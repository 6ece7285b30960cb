//! The `subscribeRepos` client against the reference PDS (`../shared/peers`): it replays its whole
//! firehose from cursor 0, and every frame decodes.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use butterfly_firehose::{Frame, Message};
use butterfly_stream::{subscribe_repos, StreamConfig, StreamItem};
use butterfly_testnet::TestNetwork;
use butterfly_xrpc::{ClientConfig, XrpcClient};

#[test]
fn reads_the_reference_pds_firehose_from_cursor_zero() {
    let network = TestNetwork::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (connection, mut items) = subscribe_repos(
            &network.firehose,
            Some(0),
            StreamConfig::with_private_network(true),
        )
        .unwrap();
        match tokio::time::timeout(Duration::from_secs(10), items.recv()).await {
            Ok(Some(StreamItem::Connected { cursor: Some(0) })) => {}
            other => panic!("expected a connection: {other:?}"),
        }
        // The seeded history is replayed at once. Its last write is carol's (the deleted reply), so
        // it ends with the commit at her repo's current revision: read up to that frame, however long
        // a loaded machine takes, rather than guessing the end from a quiet spell.
        let carol = network.account("carol").did.clone();
        let last_rev = latest_rev(&network.pds, &carol).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut seqs = Vec::new();
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        loop {
            let item = tokio::time::timeout_at(deadline, items.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no commit at carol's revision {last_rev} after {} frames: {kinds:?}",
                        seqs.len()
                    )
                });
            match item {
                Some(StreamItem::Frame {
                    frame: Ok(Frame::Message(message)),
                    ..
                }) => {
                    *kinds.entry(message.kind().to_owned()).or_default() += 1;
                    seqs.extend(message.seq());
                    if let Message::Commit(commit) = &message {
                        if commit.repo.as_str() == carol && commit.rev.as_str() == last_rev {
                            break;
                        }
                    }
                }
                other => panic!("frame {} did not decode: {other:?}", seqs.len() + 1),
            }
        }
        assert!(seqs.len() >= 15, "only {} frames: {kinds:?}", seqs.len());
        assert!(
            seqs.windows(2).all(|pair| pair[0] < pair[1]),
            "seqs not increasing: {seqs:?}"
        );
        assert!(kinds.get("#commit").copied().unwrap_or(0) >= 3, "{kinds:?}");
        assert_eq!(connection.cursor(), seqs.last().copied());
        connection.close().await;
    });
}

/// The repo's current revision, from the PDS's `getLatestCommit`.
async fn latest_rev(pds: &str, did: &str) -> String {
    let client = XrpcClient::new(
        pds.parse().unwrap(),
        ClientConfig::with_private_network(true),
    )
    .unwrap();
    client
        .sync()
        .get_latest_commit(&butterfly_syntax::Did::parse(did).unwrap())
        .await
        .unwrap()
        .rev
}
