//! The live half of atproto sync: the `subscribeRepos` wire format, frame logs, and the sync 1.1
//! verification boundary.
//!
//! - [`message`] decodes (and, for simulators, encodes) WebSocket frames into typed messages.
//! - [`frame_log`] reads and writes recordings of raw frames.
//!
//! Spec: <https://atproto.com/specs/sync>, <https://atproto.com/specs/event-stream>.
#![warn(missing_docs)]

pub mod frame_log;
pub mod message;

pub use frame_log::{FrameLogReader, FrameLogWriter};
pub use message::{decode_frame, encode_frame, Frame, Message};
