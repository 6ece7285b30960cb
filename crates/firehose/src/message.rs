//! The `subscribeRepos` wire format: one WebSocket binary message is a DAG-CBOR header map followed by
//! a DAG-CBOR body map.
//!
//! The header is `{op: 1, t: "#commit"}` for a message or `{op: -1}` for an error frame, after which
//! the server closes the stream. Bodies are decoded field by field with the strict decoder, without a
//! generic value tree; unknown fields are skipped (checked, not kept) so that additions to the lexicon
//! do not break old readers, and unknown message types decode to [`Message::Unknown`].
//!
//! Spec: <https://atproto.com/specs/event-stream>, lexicon `com.atproto.sync.subscribeRepos`.

use butterfly_data::cbor::{Decoder, Limits};
use butterfly_data::{Cid, Value};
use butterfly_repo::proof::RepoOp;
use butterfly_syntax::{Did, Handle, Tid};

/// Largest WebSocket message accepted. The relay caps `blocks` at 2,000,000 bytes; the rest of a
/// message (ops, paths, CIDs) fits well within the margin.
pub const MAX_FRAME_BYTES: usize = 5 * 1024 * 1024;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not strict DAG-CBOR.
    #[error("frame {part}: {source}")]
    Cbor {
        /// `header` or `body`.
        part: &'static str,
        /// The decoding error.
        #[source]
        source: butterfly_data::Error,
    },
    /// A field is missing, of the wrong type or invalid.
    #[error("frame {kind}: {message}")]
    Field {
        /// The message type (`#commit`, …) or `header`.
        kind: String,
        /// What is wrong.
        message: String,
    },
    /// The frame is larger than [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes is over the {MAX_FRAME_BYTES} byte limit")]
    TooLarge(usize),
}

/// One decoded WebSocket message.
// Frames are built once and moved a few times; boxing the large variants would cost an allocation
// per message for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A message (`op: 1`).
    Message(Message),
    /// An error (`op: -1`); the server closes the connection after it.
    Error(ErrorFrame),
}

/// An error frame: `FutureCursor`, `ConsumerTooSlow`, or any other name the server chooses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorFrame {
    /// The error name.
    pub error: String,
    /// A human-readable explanation, if any.
    pub message: Option<String>,
}

/// A `subscribeRepos` message.
#[allow(clippy::large_enum_variant)] // as for `Frame`
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// `#commit`: a signed change to one repo.
    Commit(CommitEvent),
    /// `#sync`: a repo's current commit, declaring its state without a diff.
    Sync(SyncEvent),
    /// `#identity`: the DID document or handle may have changed.
    Identity(IdentityEvent),
    /// `#account`: the account's hosting status changed.
    Account(AccountEvent),
    /// `#info`: a notice from the server, such as `OutdatedCursor`.
    Info(InfoEvent),
    /// A message type this version does not know; kept so the consumer can count it and move on.
    Unknown {
        /// The `t` field, such as `#handle` (retired) or a future type.
        kind: String,
        /// Its `seq`, when it had one.
        seq: Option<i64>,
    },
}

impl Message {
    /// The type as on the wire: `#commit`, `#sync`, …
    pub fn kind(&self) -> &str {
        match self {
            Message::Commit(_) => "#commit",
            Message::Sync(_) => "#sync",
            Message::Identity(_) => "#identity",
            Message::Account(_) => "#account",
            Message::Info(_) => "#info",
            Message::Unknown { kind, .. } => kind,
        }
    }

    /// The sequence number; `#info` has none.
    pub fn seq(&self) -> Option<i64> {
        match self {
            Message::Commit(m) => Some(m.seq),
            Message::Sync(m) => Some(m.seq),
            Message::Identity(m) => Some(m.seq),
            Message::Account(m) => Some(m.seq),
            Message::Info(_) => None,
            Message::Unknown { seq, .. } => *seq,
        }
    }

    /// The repo the message is about; `#info` has none.
    pub fn did(&self) -> Option<&Did> {
        match self {
            Message::Commit(m) => Some(&m.repo),
            Message::Sync(m) => Some(&m.did),
            Message::Identity(m) => Some(&m.did),
            Message::Account(m) => Some(&m.did),
            Message::Info(_) | Message::Unknown { .. } => None,
        }
    }

    /// The event's timestamp as sent (an RFC 3339 string), when it has one.
    pub fn time(&self) -> Option<&str> {
        match self {
            Message::Commit(m) => Some(&m.time),
            Message::Sync(m) => Some(&m.time),
            Message::Identity(m) => Some(&m.time),
            Message::Account(m) => Some(&m.time),
            Message::Info(_) | Message::Unknown { .. } => None,
        }
    }

    /// The event's timestamp, to change it (a server stamps what it relays).
    pub fn time_mut(&mut self) -> Option<&mut String> {
        match self {
            Message::Commit(m) => Some(&mut m.time),
            Message::Sync(m) => Some(&mut m.time),
            Message::Identity(m) => Some(&mut m.time),
            Message::Account(m) => Some(&mut m.time),
            Message::Info(_) | Message::Unknown { .. } => None,
        }
    }
}

/// `#commit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitEvent {
    /// Stream sequence number.
    pub seq: i64,
    /// The repo's DID.
    pub repo: Did,
    /// CID of the commit block (which is in `blocks`).
    pub commit: Cid,
    /// The commit's revision.
    pub rev: Tid,
    /// The revision of the previous commit, if any.
    pub since: Option<Tid>,
    /// A CAR slice: the commit block, changed MST nodes, new records, and the nodes sync 1.1 needs to
    /// undo the change.
    pub blocks: Vec<u8>,
    /// The record operations, at most 200 on a conforming server.
    pub ops: Vec<RepoOp>,
    /// The MST root before this commit (sync 1.1); absent on older servers.
    pub prev_data: Option<Cid>,
    /// When the server emitted the event (RFC 3339).
    pub time: String,
    /// Deprecated: the change was too big to send. Always false since sync 1.1.
    pub too_big: bool,
    /// Deprecated: the repo was rebased. Always false since sync 1.1.
    pub rebase: bool,
    /// Deprecated list of new blobs; kept for re-encoding.
    pub blobs: Vec<Cid>,
}

/// `#sync`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncEvent {
    /// Stream sequence number.
    pub seq: i64,
    /// The repo's DID.
    pub did: Did,
    /// A CAR holding just the signed commit block.
    pub blocks: Vec<u8>,
    /// The commit's revision.
    pub rev: Tid,
    /// When the server emitted the event (RFC 3339).
    pub time: String,
}

/// `#identity`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityEvent {
    /// Stream sequence number.
    pub seq: i64,
    /// The DID whose identity may have changed.
    pub did: Did,
    /// When the server emitted the event (RFC 3339).
    pub time: String,
    /// The current handle, if the server knows it.
    pub handle: Option<Handle>,
}

/// `#account`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountEvent {
    /// Stream sequence number.
    pub seq: i64,
    /// The account's DID.
    pub did: Did,
    /// When the server emitted the event (RFC 3339).
    pub time: String,
    /// Whether the account's repo is served.
    pub active: bool,
    /// Why it is not active (`takendown`, `suspended`, `deleted`, `deactivated`, `desynchronized`,
    /// `throttled`, or a future value).
    pub status: Option<String>,
}

/// `#info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoEvent {
    /// The notice, such as `OutdatedCursor`.
    pub name: String,
    /// A human-readable explanation, if any.
    pub message: Option<String>,
}

/// Decodes one WebSocket binary message.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, Error> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(Error::TooLarge(bytes.len()));
    }
    let mut d = Decoder::new(bytes);
    let (op, t) = decode_header(&mut d)?;
    let body_start = d.position();
    let frame = match op {
        1 => {
            let kind = t.ok_or_else(|| field("header", "op 1 needs a type `t`"))?;
            Frame::Message(decode_body(kind, &mut d)?)
        }
        -1 => Frame::Error(decode_error_body(&mut d)?),
        other => return Err(field("header", format!("unknown op {other}"))),
    };
    if d.position() != bytes.len() {
        return Err(Error::Cbor {
            part: "body",
            source: butterfly_data::Error::Cbor {
                offset: d.position() - body_start,
                message: format!(
                    "{} trailing bytes after the body",
                    bytes.len() - d.position()
                ),
            },
        });
    }
    Ok(frame)
}

fn field(kind: &str, message: impl Into<String>) -> Error {
    Error::Field {
        kind: kind.to_owned(),
        message: message.into(),
    }
}

fn header_err(source: butterfly_data::Error) -> Error {
    Error::Cbor {
        part: "header",
        source,
    }
}

fn decode_header<'a>(d: &mut Decoder<'a>) -> Result<(i64, Option<&'a str>), Error> {
    let n = d.read_map_len().map_err(header_err)?;
    let mut previous = None;
    let (mut op, mut t) = (None, None);
    for _ in 0..n {
        let key = d.read_map_key(previous).map_err(header_err)?;
        previous = Some(key);
        match key {
            "op" => op = Some(d.read_i64().map_err(header_err)?),
            "t" => t = Some(d.read_str().map_err(header_err)?),
            _ => d.skip(&Limits::default()).map_err(header_err)?,
        }
    }
    let op = op.ok_or_else(|| field("header", "missing op"))?;
    Ok((op, t))
}

/// Walks a body map, calling `each` with every key; `each` must consume the value.
fn for_each_field<'a>(
    kind: &str,
    d: &mut Decoder<'a>,
    mut each: impl FnMut(&'a str, &mut Decoder<'a>) -> Result<(), Error>,
) -> Result<(), Error> {
    let n = d.read_map_len().map_err(|e| body_err(kind, e))?;
    let mut previous = None;
    for _ in 0..n {
        let key = d.read_map_key(previous).map_err(|e| body_err(kind, e))?;
        previous = Some(key);
        each(key, d)?;
    }
    Ok(())
}

fn body_err(kind: &str, source: butterfly_data::Error) -> Error {
    match source {
        butterfly_data::Error::Cbor { offset, message } => Error::Cbor {
            part: "body",
            source: butterfly_data::Error::Cbor {
                offset,
                message: format!("{kind}: {message}"),
            },
        },
        other => Error::Cbor {
            part: "body",
            source: other,
        },
    }
}

/// Typed readers that name the message type in their errors.
struct Fields<'k> {
    kind: &'k str,
}

impl Fields<'_> {
    fn cbor<T>(&self, r: Result<T, butterfly_data::Error>) -> Result<T, Error> {
        r.map_err(|e| body_err(self.kind, e))
    }
    fn skip(&self, d: &mut Decoder<'_>) -> Result<(), Error> {
        self.cbor(d.skip(&Limits::default()))
    }
    fn did(&self, d: &mut Decoder<'_>, name: &str) -> Result<Did, Error> {
        let text = self.cbor(d.read_str())?;
        Did::parse(text).map_err(|e| field(self.kind, format!("{name}: {e}")))
    }
    fn tid(&self, d: &mut Decoder<'_>, name: &str) -> Result<Tid, Error> {
        let text = self.cbor(d.read_str())?;
        Tid::parse(text).map_err(|e| field(self.kind, format!("{name}: {e}")))
    }
    fn string(&self, d: &mut Decoder<'_>) -> Result<String, Error> {
        self.cbor(d.read_str()).map(str::to_owned)
    }
    fn optional_string(&self, d: &mut Decoder<'_>) -> Result<Option<String>, Error> {
        if d.peek_null() {
            self.cbor(d.read_null())?;
            Ok(None)
        } else {
            self.string(d).map(Some)
        }
    }
    fn missing(&self, name: &str) -> Error {
        field(self.kind, format!("missing {name}"))
    }
}

fn decode_body(kind: &str, d: &mut Decoder<'_>) -> Result<Message, Error> {
    match kind {
        "#commit" => decode_commit(d).map(Message::Commit),
        "#sync" => decode_sync(d).map(Message::Sync),
        "#identity" => decode_identity(d).map(Message::Identity),
        "#account" => decode_account(d).map(Message::Account),
        "#info" => decode_info(d).map(Message::Info),
        other => {
            let f = Fields { kind: other };
            let mut seq = None;
            for_each_field(other, d, |key, d| match key {
                "seq" if d.peek_major().ok() == Some(butterfly_data::cbor::Major::Unsigned) => {
                    seq = Some(f.cbor(d.read_i64())?);
                    Ok(())
                }
                _ => f.skip(d),
            })?;
            Ok(Message::Unknown {
                kind: other.to_owned(),
                seq,
            })
        }
    }
}

fn decode_commit(d: &mut Decoder<'_>) -> Result<CommitEvent, Error> {
    let f = Fields { kind: "#commit" };
    let (mut seq, mut repo, mut commit, mut rev, mut since) = (None, None, None, None, None);
    let (mut blocks, mut ops, mut prev_data, mut time) = (None, None, None, None);
    let (mut too_big, mut rebase, mut blobs) = (false, false, Vec::new());
    for_each_field("#commit", d, |key, d| {
        match key {
            "seq" => seq = Some(f.cbor(d.read_i64())?),
            "repo" => repo = Some(f.did(d, "repo")?),
            "commit" => commit = Some(f.cbor(d.read_link())?),
            "rev" => rev = Some(f.tid(d, "rev")?),
            "since" => {
                since = if d.peek_null() {
                    f.cbor(d.read_null())?;
                    None
                } else {
                    Some(f.tid(d, "since")?)
                }
            }
            "blocks" => blocks = Some(f.cbor(d.read_bytes())?.to_vec()),
            "ops" => ops = Some(decode_ops(&f, d)?),
            "prevData" => prev_data = f.cbor(d.read_optional_link())?,
            "time" => time = Some(f.string(d)?),
            "tooBig" => too_big = f.cbor(d.read_bool())?,
            "rebase" => rebase = f.cbor(d.read_bool())?,
            "blobs" => {
                let n = f.cbor(d.read_array_len())?;
                blobs = Vec::with_capacity(n);
                for _ in 0..n {
                    blobs.push(f.cbor(d.read_link())?);
                }
            }
            _ => f.skip(d)?,
        }
        Ok(())
    })?;
    Ok(CommitEvent {
        seq: seq.ok_or_else(|| f.missing("seq"))?,
        repo: repo.ok_or_else(|| f.missing("repo"))?,
        commit: commit.ok_or_else(|| f.missing("commit"))?,
        rev: rev.ok_or_else(|| f.missing("rev"))?,
        since,
        blocks: blocks.ok_or_else(|| f.missing("blocks"))?,
        ops: ops.ok_or_else(|| f.missing("ops"))?,
        prev_data,
        time: time.ok_or_else(|| f.missing("time"))?,
        too_big,
        rebase,
        blobs,
    })
}

fn decode_ops(f: &Fields<'_>, d: &mut Decoder<'_>) -> Result<Vec<RepoOp>, Error> {
    let n = f.cbor(d.read_array_len())?;
    let mut ops = Vec::with_capacity(n);
    for i in 0..n {
        let (mut action, mut path, mut cid, mut prev) = (None, None, None, None);
        for_each_field("#commit", d, |key, d| {
            match key {
                "action" => action = Some(f.cbor(d.read_str())?),
                "path" => path = Some(f.string(d)?),
                "cid" => cid = Some(f.cbor(d.read_optional_link())?),
                "prev" => prev = f.cbor(d.read_optional_link())?,
                _ => f.skip(d)?,
            }
            Ok(())
        })?;
        let path = path.ok_or_else(|| f.missing(&format!("ops[{i}].path")))?;
        let cid = cid.ok_or_else(|| f.missing(&format!("ops[{i}].cid")))?;
        let op = match (action, cid) {
            (Some("create"), Some(cid)) => RepoOp::Create { path, cid },
            (Some("update"), Some(cid)) => RepoOp::Update { path, cid, prev },
            (Some("delete"), None) => RepoOp::Delete { path, prev },
            (Some(action @ ("create" | "update")), None) => {
                return Err(field(f.kind, format!("ops[{i}]: {action} with a null cid")))
            }
            (Some("delete"), Some(_)) => {
                return Err(field(f.kind, format!("ops[{i}]: delete with a cid")))
            }
            (Some(other), _) => {
                return Err(field(f.kind, format!("ops[{i}]: unknown action {other:?}")))
            }
            (None, _) => return Err(f.missing(&format!("ops[{i}].action"))),
        };
        ops.push(op);
    }
    Ok(ops)
}

fn decode_sync(d: &mut Decoder<'_>) -> Result<SyncEvent, Error> {
    let f = Fields { kind: "#sync" };
    let (mut seq, mut did, mut blocks, mut rev, mut time) = (None, None, None, None, None);
    for_each_field("#sync", d, |key, d| {
        match key {
            "seq" => seq = Some(f.cbor(d.read_i64())?),
            "did" => did = Some(f.did(d, "did")?),
            "blocks" => blocks = Some(f.cbor(d.read_bytes())?.to_vec()),
            "rev" => rev = Some(f.tid(d, "rev")?),
            "time" => time = Some(f.string(d)?),
            _ => f.skip(d)?,
        }
        Ok(())
    })?;
    Ok(SyncEvent {
        seq: seq.ok_or_else(|| f.missing("seq"))?,
        did: did.ok_or_else(|| f.missing("did"))?,
        blocks: blocks.ok_or_else(|| f.missing("blocks"))?,
        rev: rev.ok_or_else(|| f.missing("rev"))?,
        time: time.ok_or_else(|| f.missing("time"))?,
    })
}

fn decode_identity(d: &mut Decoder<'_>) -> Result<IdentityEvent, Error> {
    let f = Fields { kind: "#identity" };
    let (mut seq, mut did, mut time, mut handle) = (None, None, None, None);
    for_each_field("#identity", d, |key, d| {
        match key {
            "seq" => seq = Some(f.cbor(d.read_i64())?),
            "did" => did = Some(f.did(d, "did")?),
            "time" => time = Some(f.string(d)?),
            "handle" => {
                handle = match f.optional_string(d)? {
                    Some(text) => Some(
                        Handle::parse(&text).map_err(|e| field(f.kind, format!("handle: {e}")))?,
                    ),
                    None => None,
                }
            }
            _ => f.skip(d)?,
        }
        Ok(())
    })?;
    Ok(IdentityEvent {
        seq: seq.ok_or_else(|| f.missing("seq"))?,
        did: did.ok_or_else(|| f.missing("did"))?,
        time: time.ok_or_else(|| f.missing("time"))?,
        handle,
    })
}

fn decode_account(d: &mut Decoder<'_>) -> Result<AccountEvent, Error> {
    let f = Fields { kind: "#account" };
    let (mut seq, mut did, mut time, mut active, mut status) = (None, None, None, None, None);
    for_each_field("#account", d, |key, d| {
        match key {
            "seq" => seq = Some(f.cbor(d.read_i64())?),
            "did" => did = Some(f.did(d, "did")?),
            "time" => time = Some(f.string(d)?),
            "active" => active = Some(f.cbor(d.read_bool())?),
            "status" => status = f.optional_string(d)?,
            _ => f.skip(d)?,
        }
        Ok(())
    })?;
    Ok(AccountEvent {
        seq: seq.ok_or_else(|| f.missing("seq"))?,
        did: did.ok_or_else(|| f.missing("did"))?,
        time: time.ok_or_else(|| f.missing("time"))?,
        active: active.ok_or_else(|| f.missing("active"))?,
        status,
    })
}

fn decode_info(d: &mut Decoder<'_>) -> Result<InfoEvent, Error> {
    let f = Fields { kind: "#info" };
    let (mut name, mut message) = (None, None);
    for_each_field("#info", d, |key, d| {
        match key {
            "name" => name = Some(f.string(d)?),
            "message" => message = f.optional_string(d)?,
            _ => f.skip(d)?,
        }
        Ok(())
    })?;
    Ok(InfoEvent {
        name: name.ok_or_else(|| f.missing("name"))?,
        message,
    })
}

fn decode_error_body(d: &mut Decoder<'_>) -> Result<ErrorFrame, Error> {
    let f = Fields { kind: "error" };
    let (mut error, mut message) = (None, None);
    for_each_field("error", d, |key, d| {
        match key {
            "error" => error = Some(f.string(d)?),
            "message" => message = f.optional_string(d)?,
            _ => f.skip(d)?,
        }
        Ok(())
    })?;
    Ok(ErrorFrame {
        error: error.ok_or_else(|| f.missing("error"))?,
        message,
    })
}

/// Encodes a frame as a server sends it. Used by the simulator and tests; decoding it gives the same
/// frame back.
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    let (header, body) = match frame {
        Frame::Error(e) => {
            let mut header = butterfly_data::Map::new();
            header.insert("op".into(), Value::Integer(-1));
            let mut body = butterfly_data::Map::new();
            body.insert("error".into(), Value::String(e.error.clone()));
            if let Some(m) = &e.message {
                body.insert("message".into(), Value::String(m.clone()));
            }
            (header, body)
        }
        Frame::Message(m) => {
            let mut header = butterfly_data::Map::new();
            header.insert("op".into(), Value::Integer(1));
            header.insert("t".into(), Value::String(m.kind().to_owned()));
            (header, message_body(m))
        }
    };
    // The body is a second top-level value written straight after the header.
    let mut out = Value::Map(header).to_cbor();
    out.extend_from_slice(&Value::Map(body).to_cbor());
    out
}

fn message_body(m: &Message) -> butterfly_data::Map {
    let mut b = butterfly_data::Map::new();
    let s = |t: &str| Value::String(t.to_owned());
    match m {
        Message::Commit(c) => {
            b.insert("seq".into(), Value::Integer(c.seq));
            b.insert("repo".into(), s(c.repo.as_str()));
            b.insert("commit".into(), Value::Link(c.commit));
            b.insert("rev".into(), s(c.rev.as_str()));
            b.insert(
                "since".into(),
                c.since.as_ref().map_or(Value::Null, |t| s(t.as_str())),
            );
            b.insert("blocks".into(), Value::Bytes(c.blocks.clone()));
            b.insert(
                "ops".into(),
                Value::Array(c.ops.iter().map(op_value).collect()),
            );
            if let Some(prev_data) = c.prev_data {
                b.insert("prevData".into(), Value::Link(prev_data));
            }
            b.insert("time".into(), s(&c.time));
            b.insert("tooBig".into(), Value::Bool(c.too_big));
            b.insert("rebase".into(), Value::Bool(c.rebase));
            b.insert(
                "blobs".into(),
                Value::Array(c.blobs.iter().map(|c| Value::Link(*c)).collect()),
            );
        }
        Message::Sync(e) => {
            b.insert("seq".into(), Value::Integer(e.seq));
            b.insert("did".into(), s(e.did.as_str()));
            b.insert("blocks".into(), Value::Bytes(e.blocks.clone()));
            b.insert("rev".into(), s(e.rev.as_str()));
            b.insert("time".into(), s(&e.time));
        }
        Message::Identity(e) => {
            b.insert("seq".into(), Value::Integer(e.seq));
            b.insert("did".into(), s(e.did.as_str()));
            b.insert("time".into(), s(&e.time));
            if let Some(h) = &e.handle {
                b.insert("handle".into(), s(h.as_str()));
            }
        }
        Message::Account(e) => {
            b.insert("seq".into(), Value::Integer(e.seq));
            b.insert("did".into(), s(e.did.as_str()));
            b.insert("time".into(), s(&e.time));
            b.insert("active".into(), Value::Bool(e.active));
            if let Some(status) = &e.status {
                b.insert("status".into(), s(status));
            }
        }
        Message::Info(e) => {
            b.insert("name".into(), s(&e.name));
            if let Some(m) = &e.message {
                b.insert("message".into(), s(m));
            }
        }
        Message::Unknown { seq, .. } => {
            if let Some(seq) = seq {
                b.insert("seq".into(), Value::Integer(*seq));
            }
        }
    }
    b
}

fn op_value(op: &RepoOp) -> Value {
    let mut m = butterfly_data::Map::new();
    let (action, cid, prev) = match op {
        RepoOp::Create { cid, .. } => ("create", Some(*cid), None),
        RepoOp::Update { cid, prev, .. } => ("update", Some(*cid), *prev),
        RepoOp::Delete { prev, .. } => ("delete", None, *prev),
    };
    m.insert("action".into(), Value::String(action.into()));
    m.insert("path".into(), Value::String(op.path().to_owned()));
    m.insert("cid".into(), cid.map_or(Value::Null, Value::Link));
    if let Some(prev) = prev {
        m.insert("prev".into(), Value::Link(prev));
    }
    Value::Map(m)
}
