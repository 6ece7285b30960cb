//! The verifier on frames recorded from the reference PDS (`shared/peers`, cursor 0: three accounts
//! created, each with an empty first commit and a `#sync`, then creates, an update and a delete with
//! `prev`), and on tampered copies of them.
#![allow(clippy::unwrap_used)]

use butterfly_firehose::keys::StaticKeys;
use butterfly_firehose::message::{self, CommitEvent, Message};
use butterfly_firehose::{
    decode_frame, Frame, FrameLogReader, Outcome, Pipeline, PipelineConfig, Reason, Verifier,
    VerifierConfig, VerifyMode,
};
use butterfly_repo::proof::RepoOp;
use std::sync::Arc;

fn messages() -> Vec<Message> {
    let bytes = include_bytes!("data/reference-pds.frames");
    FrameLogReader::new(&bytes[..])
        .map(|frame| match decode_frame(&frame.unwrap()).unwrap() {
            Frame::Message(m) => m,
            Frame::Error(e) => panic!("error frame {e:?}"),
        })
        .collect()
}

fn keys() -> Arc<StaticKeys> {
    Arc::new(
        StaticKeys::from_json_array(include_bytes!("data/reference-pds.identities.json")).unwrap(),
    )
}

fn verifier(mode: VerifyMode) -> Verifier {
    Verifier::new(
        VerifierConfig {
            mode,
            ..VerifierConfig::default()
        },
        keys(),
    )
}

/// Runs `messages` through one verifier in order; returns the rejection reasons by seq.
fn rejections(mode: VerifyMode, messages: Vec<Message>) -> Vec<(Option<i64>, Reason)> {
    let verifier = verifier(mode);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut out = Vec::new();
        for message in messages {
            if let Outcome::Rejected(r) = verifier.verify(message).await {
                out.push((r.seq, r.reason));
            }
        }
        out
    })
}

fn commit_mut(messages: &mut [Message], seq: i64) -> &mut CommitEvent {
    messages
        .iter_mut()
        .find_map(|m| match m {
            Message::Commit(c) if c.seq == seq => Some(c),
            _ => None,
        })
        .unwrap()
}

#[test]
fn the_reference_replay_verifies_cleanly_in_every_mode() {
    let all = messages();
    assert_eq!(all.len(), 22);
    let kinds: std::collections::BTreeSet<_> = all.iter().map(|m| m.kind().to_owned()).collect();
    assert_eq!(
        kinds,
        ["#account", "#commit", "#identity", "#sync"]
            .map(String::from)
            .into()
    );
    for mode in [VerifyMode::Strict, VerifyMode::Lenient, VerifyMode::Off] {
        assert_eq!(rejections(mode, messages()), vec![], "{mode:?}");
    }
}

#[test]
fn every_accepted_commit_chains_and_inverts_to_prev_data() {
    let verifier = verifier(VerifyMode::Strict);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut checked = 0;
    runtime.block_on(async {
        for message in messages() {
            let prev_data = match &message {
                Message::Commit(c) => c.prev_data,
                _ => None,
            };
            let Outcome::Accepted(accepted) = verifier.verify(message).await else {
                panic!("rejected")
            };
            if let (Some(prev_data), Some(commit)) = (prev_data, &accepted.commit) {
                assert_eq!(
                    commit.inversion,
                    Some(butterfly_repo::proof::Inversion::Complete(prev_data))
                );
                checked += 1;
            }
        }
    });
    assert_eq!(checked, 10, "commits after the three first ones");
}

#[test]
fn tampering_is_rejected_with_the_right_reason() {
    // Seq 19 updates bob's profile, seq 22 deletes carol's post: both carry `prev`.
    let check =
        |mode: VerifyMode, edit: &dyn Fn(&mut Vec<Message>), expected: Vec<(i64, Reason)>| {
            let mut all = messages();
            edit(&mut all);
            let got: Vec<_> = rejections(mode, all)
                .into_iter()
                .map(|(seq, r)| (seq.unwrap(), r))
                .collect();
            assert_eq!(got, expected);
        };
    let strict = VerifyMode::Strict;

    // A pre-sync-1.1 commit: no prevData. Strict refuses; lenient accepts on the signature.
    check(
        strict,
        &|m| commit_mut(m, 19).prev_data = None,
        vec![(19, Reason::MissingPrevData)],
    );
    check(
        VerifyMode::Lenient,
        &|m| commit_mut(m, 19).prev_data = None,
        vec![],
    );

    // An op without prev cannot be undone.
    let drop_prev = |m: &mut Vec<Message>| {
        if let RepoOp::Delete { prev, .. } = &mut commit_mut(m, 22).ops[0] {
            *prev = None;
        }
    };
    check(strict, &drop_prev, vec![(22, Reason::IncompleteProof)]);

    // prevData that the ops do not lead to.
    let wrong_prev_data = |m: &mut Vec<Message>| {
        let other = commit_mut(m, 21).prev_data;
        commit_mut(m, 22).prev_data = other;
    };
    check(
        strict,
        &wrong_prev_data,
        vec![(22, Reason::InversionMismatch)],
    );

    // A missed commit breaks the chain: the next one is refused and the repo marked for resync.
    check(
        strict,
        &|m| m.retain(|m| m.seq() != Some(21)),
        vec![(22, Reason::BrokenChain)],
    );

    // A replayed commit: its rev is not newer.
    check(
        strict,
        &|m| {
            let again = m.iter().find(|m| m.seq() == Some(15)).unwrap().clone();
            m.push(again);
        },
        vec![(15, Reason::StaleRev)],
    );

    // The message claims another rev than the signed commit.
    check(
        strict,
        &|m| {
            let rev = commit_mut(m, 14).rev.clone();
            commit_mut(m, 15).rev = rev;
        },
        vec![(15, Reason::CommitMismatch)],
    );

    // A flipped byte in the CAR slice fails its hash check; the repo's next commit then no longer
    // chains from what was accepted.
    check(
        strict,
        &|m| {
            let blocks = &mut commit_mut(m, 14).blocks;
            let last = blocks.len() - 1;
            blocks[last] ^= 1;
        },
        vec![(14, Reason::BadCar), (15, Reason::BrokenChain)],
    );

    // Too many ops and oversized slices are refused before any parsing.
    check(
        strict,
        &|m| {
            let op = commit_mut(m, 14).ops[0].clone();
            commit_mut(m, 14).ops = vec![op; 201];
        },
        vec![(14, Reason::TooManyOps), (15, Reason::BrokenChain)],
    );
    check(
        strict,
        &|m| commit_mut(m, 14).blocks.resize(2_000_001, 0),
        vec![(14, Reason::BlocksTooLarge), (15, Reason::BrokenChain)],
    );

    // A deactivated account's commits are dropped until it is active again.
    let deactivate = |m: &mut Vec<Message>, before_seq: i64, active: bool| {
        let did = commit_mut(m, before_seq).repo.clone();
        let at = m.iter().position(|x| x.seq() == Some(before_seq)).unwrap();
        m.insert(
            at,
            Message::Account(message::AccountEvent {
                seq: before_seq,
                did,
                time: "2026-01-01T00:00:00Z".into(),
                active,
                status: (!active).then(|| "deactivated".to_owned()),
            }),
        );
    };
    check(
        strict,
        &|m| {
            deactivate(m, 21, false);
            deactivate(m, 22, true);
        },
        vec![(21, Reason::InactiveAccount), (22, Reason::BrokenChain)],
    );
}

#[test]
fn signatures_are_checked_against_the_repo_key() {
    // Keys swapped between two accounts: every signed message of theirs fails.
    let mut docs: serde_json::Value =
        serde_json::from_slice(include_bytes!("data/reference-pds.identities.json")).unwrap();
    let a = docs[0]["verificationMethod"][0]["publicKeyMultibase"].clone();
    let b = docs[1]["verificationMethod"][0]["publicKeyMultibase"].clone();
    docs[0]["verificationMethod"][0]["publicKeyMultibase"] = b;
    docs[1]["verificationMethod"][0]["publicKeyMultibase"] = a;
    let keys = StaticKeys::from_json_array(docs.to_string().as_bytes()).unwrap();
    let verifier = Verifier::new(VerifierConfig::default(), Arc::new(keys));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let reasons: Vec<_> = runtime.block_on(async {
        let mut out = Vec::new();
        for message in messages() {
            if let Outcome::Rejected(r) = verifier.verify(message).await {
                out.push(r.reason);
            }
        }
        out
    });
    // alice: 4 commits + 1 sync; bob: 5 commits + 1 sync, all with the other's key.
    assert_eq!(reasons.len(), 5 + 6);
    assert!(
        reasons.iter().all(|r| *r == Reason::BadSignature),
        "{reasons:?}"
    );
    let stats = verifier.stats();
    assert_eq!(stats.total_rejected(), 11);
}

#[test]
fn the_pipeline_orders_each_repo_drops_old_seqs_and_tracks_the_low_water_mark() {
    for ordered in [false, true] {
        pipeline_run(ordered);
    }
}

fn pipeline_run(ordered: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async {
        let verifier = Arc::new(verifier(VerifyMode::Strict));
        let config = PipelineConfig {
            workers: 3,
            worker_queue: 2,
            output_queue: 2,
            max_in_flight: 4,
            ordered,
        };
        let (mut pipeline, mut outcomes) = Pipeline::start(verifier, config, None);
        let mark = pipeline.low_water_mark();
        let consumer = tokio::spawn(async move {
            let mut held = Vec::new();
            let mut reasons = Vec::new();
            let mut order = Vec::new();
            while let Some(processed) = outcomes.recv().await {
                order.push(processed.outcome.seq());
                if let Outcome::Rejected(r) = &processed.outcome {
                    reasons.push((r.seq, r.reason));
                }
                // Hold back seq 5's ticket: the mark must stay below it.
                match processed.ticket {
                    Some(t) if t.seq() == 5 => held.push(t),
                    Some(t) => mark.finish(t),
                    None => {}
                }
            }
            (held, reasons, mark, order)
        });
        let mut all = messages();
        let replayed = all[9].clone(); // seq 10 again, out of order
        all.insert(12, replayed);
        for message in all {
            pipeline.submit(Ok(message)).await.unwrap();
        }
        pipeline
            .submit(Err(message::Error::TooLarge(usize::MAX)))
            .await
            .unwrap();
        drop(pipeline);
        let (held, reasons, mark, order) = consumer.await.unwrap();
        let mut expected: Vec<Option<i64>> = (1..=22).map(Some).collect();
        expected.insert(12, Some(10));
        expected.push(None);
        if ordered {
            assert_eq!(order, expected, "stream order");
        } else {
            let mut sorted = order.clone();
            sorted.sort();
            let mut expected_sorted = expected.clone();
            expected_sorted.sort();
            assert_eq!(sorted, expected_sorted, "every message once");
        }
        assert_eq!(
            reasons,
            vec![
                (Some(10), Reason::SeqNotIncreasing),
                (None, Reason::MalformedFrame)
            ]
        );
        assert_eq!(mark.get(), Some(4), "seq 5 is not finished");
        for t in held {
            mark.finish(t);
        }
        assert_eq!(mark.get(), Some(22));
    });
}
