//! The `subscribeRepos` client against the reference PDS (`../shared/peers`): it replays its whole
//! firehose from cursor 0, and every frame decodes.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use butterfly_firehose::Frame;
use butterfly_stream::{subscribe_repos, StreamConfig, StreamItem};
use butterfly_testnet::TestNetwork;

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
        // The seeded history is replayed at once; after it the PDS is quiet.
        let mut seqs = Vec::new();
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        while let Ok(item) = tokio::time::timeout(Duration::from_secs(3), items.recv()).await {
            match item {
                Some(StreamItem::Frame {
                    frame: Ok(Frame::Message(message)),
                    ..
                }) => {
                    *kinds.entry(message.kind().to_owned()).or_default() += 1;
                    seqs.extend(message.seq());
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
