//! The JSON lines `butterfly firehose` prints: one object per event, rejection or inspected frame.
//! Documented in the README ("Firehose output").

use butterfly_data::{Cid, Value};
use butterfly_firehose::message::{CommitEvent, Message};
use butterfly_firehose::verify::{Accepted, CheckedCommit, Rejected};
use butterfly_repo::proof::{Incomplete, Inversion, RepoOp};
use butterfly_repo::CarSlice;
use serde_json::{json, Map, Value as Json};

fn cid_json(cid: Option<&Cid>) -> Json {
    cid.map_or(Json::Null, |c| Json::String(c.to_string()))
}

/// `{"action","path","cid","prev"}` plus `"record"` when the record's block is at hand.
fn op_json(op: &RepoOp, blocks: Option<&CarSlice>) -> Json {
    let (action, cid, prev) = match op {
        RepoOp::Create { cid, .. } => ("create", Some(cid), None),
        RepoOp::Update { cid, prev, .. } => ("update", Some(cid), prev.as_ref()),
        RepoOp::Delete { prev, .. } => ("delete", None, prev.as_ref()),
    };
    let mut out = json!({
        "action": action,
        "path": op.path(),
        "cid": cid_json(cid),
        "prev": cid_json(prev),
    });
    if let Some(blocks) = blocks {
        let record = cid
            .and_then(|cid| blocks.get(cid))
            .and_then(|bytes| Value::from_cbor(bytes).ok())
            .map_or(Json::Null, |value| value.to_json());
        out["record"] = record;
    }
    out
}

/// Adds `"inverted_root"`, `"proof"` and, when incomplete, `"proof_detail"`.
fn inversion_fields(out: &mut Map<String, Json>, inversion: &Inversion) {
    match inversion {
        Inversion::Complete(root) => {
            out.insert("inverted_root".into(), Json::String(root.to_string()));
            out.insert("proof".into(), "complete".into());
        }
        Inversion::Incomplete(why) => {
            out.insert("inverted_root".into(), Json::Null);
            out.insert("proof".into(), "incomplete".into());
            let detail = match why {
                Incomplete::MissingBlock(cid) => format!("missing block {cid}"),
                Incomplete::MissingPrev(path) => format!("no prev for {path}"),
            };
            out.insert("proof_detail".into(), detail.into());
        }
    }
}

fn base(message: &Message) -> Map<String, Json> {
    let mut out = Map::new();
    if let Some(seq) = message.seq() {
        out.insert("seq".into(), seq.into());
    }
    out.insert("type".into(), message.kind().into());
    if let Some(did) = message.did() {
        out.insert("did".into(), did.as_str().into());
    }
    if let Some(time) = message.time() {
        out.insert("time".into(), time.into());
    }
    out
}

fn commit_event_fields(out: &mut Map<String, Json>, event: &CommitEvent) {
    out.insert("rev".into(), event.rev.as_str().into());
    out.insert(
        "since".into(),
        event
            .since
            .as_ref()
            .map_or(Json::Null, |t| t.as_str().into()),
    );
    out.insert("commit".into(), event.commit.to_string().into());
    out.insert("prevData".into(), cid_json(event.prev_data.as_ref()));
}

/// The line for an accepted event. `collections` filters a commit's ops (None: all); a commit left
/// with no ops gives no line.
pub fn accepted(accepted: &Accepted, collections: Option<&[String]>) -> Option<Json> {
    let mut out = base(&accepted.message);
    match &accepted.message {
        Message::Commit(event) => {
            commit_event_fields(&mut out, event);
            let blocks = accepted.commit.as_ref().map(|c| &c.blocks);
            let ops: Vec<Json> = event
                .ops
                .iter()
                .filter(|op| collection_wanted(op.path(), collections))
                .map(|op| op_json(op, blocks))
                .collect();
            if ops.is_empty() && collections.is_some() {
                return None;
            }
            out.insert("ops".into(), Json::Array(ops));
            if let Some(CheckedCommit {
                inversion: Some(inversion),
                ..
            }) = &accepted.commit
            {
                inversion_fields(&mut out, inversion);
            }
        }
        Message::Sync(event) => {
            out.insert("rev".into(), event.rev.as_str().into());
            if let Some(checked) = &accepted.commit {
                out.insert("data".into(), checked.commit.data.to_string().into());
            }
            out.insert("resync".into(), accepted.resync.into());
        }
        other => status_fields(&mut out, other),
    }
    Some(Json::Object(out))
}

/// The fields of `#identity`, `#account` and `#info`, the same accepted or inspected.
fn status_fields(out: &mut Map<String, Json>, message: &Message) {
    let text = |t: Option<&str>| t.map_or(Json::Null, Json::from);
    match message {
        Message::Identity(event) => {
            out.insert(
                "handle".into(),
                text(event.handle.as_ref().map(|h| h.as_str())),
            );
        }
        Message::Account(event) => {
            out.insert("active".into(), event.active.into());
            out.insert("status".into(), text(event.status.as_deref()));
        }
        Message::Info(event) => {
            out.insert("name".into(), event.name.as_str().into());
            out.insert("message".into(), text(event.message.as_deref()));
        }
        Message::Commit(_) | Message::Sync(_) | Message::Unknown { .. } => {}
    }
}

/// Whether a record path's collection passes `--collections` (exact NSIDs or `prefix.*`).
pub fn collection_wanted(path: &str, collections: Option<&[String]>) -> bool {
    let Some(collections) = collections else {
        return true;
    };
    let collection = path.split('/').next().unwrap_or(path);
    collections
        .iter()
        .any(|wanted| match wanted.strip_suffix('*') {
            Some(prefix) => collection.starts_with(prefix),
            None => collection == wanted,
        })
}

/// The line for a rejected message: `{"seq","type","did","reason","detail"}` plus what inversion
/// computed for commits.
pub fn rejected(rejected: &Rejected) -> Json {
    let mut out = Map::new();
    out.insert("seq".into(), rejected.seq.map_or(Json::Null, Json::from));
    out.insert("type".into(), rejected.kind.as_str().into());
    out.insert(
        "did".into(),
        rejected
            .did
            .as_ref()
            .map_or(Json::Null, |d| d.as_str().into()),
    );
    out.insert("reason".into(), rejected.reason.as_str().into());
    out.insert("detail".into(), rejected.detail.as_str().into());
    if let Some(inversion) = &rejected.inversion {
        inversion_fields(&mut out, inversion);
    } else if rejected.kind == "#commit" {
        // Refused before inversion ran: no previous root was computed.
        out.insert("inverted_root".into(), Json::Null);
        out.insert("proof".into(), "incomplete".into());
        out.insert(
            "proof_detail".into(),
            "not computed: refused earlier".into(),
        );
    }
    if rejected.resync {
        out.insert("resync".into(), true.into());
    }
    Json::Object(out)
}

/// The line `firehose inspect` prints for one frame, decoded offline with no identity lookups.
pub fn inspected(message: &Message) -> Json {
    let mut out = base(message);
    match message {
        Message::Commit(event) => {
            commit_event_fields(&mut out, event);
            out.insert(
                "ops".into(),
                Json::Array(event.ops.iter().map(|op| op_json(op, None)).collect()),
            );
            inspect_proof(&mut out, event);
        }
        Message::Sync(event) => {
            out.insert("rev".into(), event.rev.as_str().into());
            out.insert(
                "blocks".into(),
                read_slice(&event.blocks).map_or(Json::Null, |b| b.n_blocks().into()),
            );
        }
        other => status_fields(&mut out, other),
    }
    Json::Object(out)
}

/// Adds `blocks`, `data` and what inversion computes; `proof` is `invalid` when the slice, the
/// commit block or the ops do not hold together.
fn inspect_proof(out: &mut Map<String, Json>, event: &CommitEvent) {
    let slice = read_slice(&event.blocks);
    out.insert(
        "blocks".into(),
        slice.as_ref().map_or(Json::Null, |b| b.n_blocks().into()),
    );
    let inversion = slice.and_then(|mut blocks| {
        let bytes = blocks
            .get(&event.commit)
            .ok_or("the commit block is missing")?;
        let data = butterfly_repo::commit::Commit::decode(&event.commit, bytes)
            .map_err(|e| e.to_string())?
            .data;
        out.insert("data".into(), data.to_string().into());
        butterfly_repo::proof::invert_ops(data, &event.ops, &mut blocks).map_err(|e| e.to_string())
    });
    match inversion {
        Ok(inversion) => inversion_fields(out, &inversion),
        Err(detail) => {
            out.insert("inverted_root".into(), Json::Null);
            out.insert("proof".into(), "invalid".into());
            out.insert("proof_detail".into(), detail.into());
        }
    }
}

fn read_slice(bytes: &[u8]) -> Result<CarSlice, String> {
    CarSlice::parse(bytes.to_vec(), Default::default()).map_err(|e| e.to_string())
}
