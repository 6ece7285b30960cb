//! Webhook delivery: POSTs batches of events from an [`crate::feed::EventFeed`] to a URL.
