//! `butterfly firehose --jetstream URL`: Jetstream's JSON events, trusted (there is nothing to
//! verify: Jetstream drops signatures and proofs), printed in the same line shape as verified
//! `subscribeRepos` events. The `seq` of a Jetstream line is its `time_us`, which is also its cursor.

use super::FollowArgs;
use anyhow::Context;
use butterfly_stream::jetstream::{
    self, EventKind, Filters, JetstreamConfig, JetstreamItem, Operation,
};
use serde_json::{json, Value as Json};
use std::io::{BufWriter, Write};

pub async fn run(url: &str, args: &FollowArgs) -> anyhow::Result<bool> {
    if args.record.is_some() {
        anyhow::bail!("--record writes subscribeRepos frames; it cannot record Jetstream's JSON");
    }
    let config = JetstreamConfig {
        filters: Filters {
            wanted_collections: args.collections.clone().unwrap_or_default(),
            wanted_dids: args.dids.clone().unwrap_or_default(),
        },
        cursor: args.cursor,
        stream: butterfly_stream::StreamConfig::with_private_network(
            args.identity.network.allow_private_network,
        ),
        ..JetstreamConfig::default()
    };
    let (connection, mut items) = jetstream::subscribe(url, config)?;
    let mut out = BufWriter::new(std::io::stdout());
    let mut rejections = match &args.rejections {
        Some(path) => Some(BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let (mut printed, mut malformed) = (0u64, 0u64);
    // One listener for the whole run, so a Ctrl-C during an item's handling is not missed.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let item = tokio::select! {
            item = items.recv() => item,
            _ = &mut interrupted => None,
        };
        let Some(item) = item else { break };
        match item {
            JetstreamItem::Event {
                event: Ok(event), ..
            } => {
                if let Some(line) = event_json(&event, args.collections.as_deref()) {
                    serde_json::to_writer(&mut out, &line)?;
                    out.write_all(b"\n")?;
                    printed += 1;
                }
            }
            JetstreamItem::Event {
                event: Err(error), ..
            } => {
                malformed += 1;
                if let Some(file) = &mut rejections {
                    let line = json!({"seq": null, "type": "event", "did": null, "reason": "malformed_event", "detail": error.to_string()});
                    serde_json::to_writer(&mut *file, &line)?;
                    file.write_all(b"\n")?;
                }
            }
            JetstreamItem::Connected { cursor } if !args.quiet => {
                eprintln!("butterfly: connected to {url} (cursor {cursor:?})");
            }
            JetstreamItem::Disconnected {
                reason,
                retry_in,
                cursor,
            } if !args.quiet => {
                eprintln!(
                    "butterfly: disconnected: {reason}; retrying in {:.1} s from cursor {cursor:?}",
                    retry_in.as_secs_f64()
                );
            }
            _ => {}
        }
        if items.is_empty() {
            out.flush()?;
        }
        if args.limit.is_some_and(|limit| printed >= limit) {
            break;
        }
    }
    out.flush()?;
    if let Some(file) = &mut rejections {
        file.flush()?;
    }
    let cursor = connection.cursor();
    connection.close().await;
    if !args.quiet {
        eprintln!(
            "butterfly: {}",
            json!({"printed": printed, "rejected": {"malformed_event": malformed}, "cursor": cursor})
        );
    }
    Ok(true)
}

fn event_json(event: &jetstream::Event, collections: Option<&[String]>) -> Option<Json> {
    let time = butterfly_syntax::datetime::format_micros(event.time_us);
    let mut line = json!({
        "seq": event.time_us,
        "did": event.did.as_str(),
        "time": time,
    });
    match &event.kind {
        EventKind::Commit(commit) => {
            let path = format!("{}/{}", commit.collection.as_str(), commit.rkey.as_str());
            if !super::super::firehose_json::collection_wanted(&path, collections) {
                return None;
            }
            let action = match commit.operation {
                Operation::Create => "create",
                Operation::Update => "update",
                Operation::Delete => "delete",
            };
            line["type"] = "#commit".into();
            line["rev"] = commit.rev.as_str().into();
            line["ops"] = json!([{
                "action": action,
                "path": path,
                "cid": commit.cid.as_ref().map(|c| c.as_str()),
                "prev": null,
                "record": commit.record,
            }]);
        }
        EventKind::Identity(identity) => {
            line["type"] = "#identity".into();
            line["handle"] = identity.handle.as_ref().map(|h| h.as_str()).into();
        }
        EventKind::Account(account) => {
            line["type"] = "#account".into();
            line["active"] = account.active.into();
            line["status"] = account.status.clone().into();
        }
        _ => return None,
    }
    Some(line)
}
