//! A Jetstream-compatible `/subscribe` WebSocket over an [`crate::feed::EventFeed`].
