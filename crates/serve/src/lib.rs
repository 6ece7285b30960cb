//! Butterfly's HTTP face over a store: XRPC reads, backlinks, a Jetstream-compatible stream,
//! webhooks, admin and metrics.
//!
//! The server never writes to the store itself: reads go through a pool of read connections, and
//! everything that changes what is synced goes to the engine as a command. Events come from an
//! [`feed::EventFeed`]: the engine's committed events as they happen, and the store's event log
//! for replay.

pub mod feed;
pub mod subscribe;
pub mod webhook;
