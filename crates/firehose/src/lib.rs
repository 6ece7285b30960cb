//! The live half of atproto sync: the `subscribeRepos` wire format, frame logs, and the sync 1.1
//! verification boundary.
//!
//! - [`message`] decodes (and, for simulators, encodes) WebSocket frames into typed messages.
//! - [`frame_log`] reads and writes recordings of raw frames.
//! - [`verify`] checks each message against the sync boundary ([`verify::Verifier`]) with keys from a
//!   [`keys::KeySource`].
//! - [`pipeline`] runs the verifier in parallel across repos and in order within each, and keeps the
//!   low-water mark that says which cursor is safe to save.
//!
//! No sockets here: the stream clients live in `butterfly-stream`.
//!
//! Spec: <https://atproto.com/specs/sync>, <https://atproto.com/specs/event-stream>.
#![warn(missing_docs)]

pub mod frame_log;
pub mod keys;
pub mod message;
pub mod pipeline;
pub mod verify;

pub use frame_log::{FrameLogReader, FrameLogWriter};
pub use message::{decode_frame, encode_frame, Frame, Message};
pub use pipeline::{LowWaterMark, Pipeline, PipelineConfig, Processed, Ticket};
pub use verify::{Outcome, Reason, Verifier, VerifierConfig, VerifyMode};
