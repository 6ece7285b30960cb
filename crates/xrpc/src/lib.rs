//! atproto XRPC client (being written).
