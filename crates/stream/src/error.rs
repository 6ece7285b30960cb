//! Why a stream could not start, or a connection attempt failed.

use std::path::PathBuf;

/// Errors of this crate: a bad endpoint, a refused or failed connection, or an unreadable frame log.
///
/// A WebSocket client returns these directly only for problems that retrying cannot fix (a malformed
/// URL, a literal non-public address). Connection failures while it runs are reported in
/// [`crate::DisconnectReason::Connect`] and retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint URL cannot be used: not ws(s) or http(s), or no host.
    #[error("endpoint {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The address policy refused the host, or the TCP connection failed or timed out.
    #[error(transparent)]
    Net(#[from] butterfly_net::Error),
    /// The TLS handshake failed (certificate, protocol).
    #[error("{url}: tls: {message}")]
    Tls {
        /// The URL being connected to.
        url: String,
        /// The TLS error, as text.
        message: String,
    },
    /// The WebSocket handshake failed: the server answered with an HTTP error, or not as a WebSocket
    /// server.
    #[error("{url}: websocket handshake: {message}")]
    Handshake {
        /// The URL being connected to.
        url: String,
        /// What the handshake returned, as text.
        message: String,
    },
    /// TLS and the WebSocket handshake did not finish within the connect timeout.
    #[error("{url}: websocket handshake timed out")]
    HandshakeTimeout {
        /// The URL being connected to.
        url: String,
    },
    /// A frame log could not be opened.
    #[error("frame log {path}: {source}")]
    OpenLog {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A frame log could not be read to its end: an I/O error, a corrupt length or a truncated tail.
    #[error("{path}: {source}")]
    FrameLog {
        /// The file.
        path: PathBuf,
        /// Where and why reading stopped.
        #[source]
        source: butterfly_firehose::frame_log::Error,
    },
    /// The zstd dictionary given for Jetstream cannot be loaded.
    #[error("zstd dictionary: {0}")]
    Dictionary(String),
}

impl Error {
    /// Whether the address policy refused the host (a non-public address without
    /// `allow_private_network`).
    pub fn is_policy_refusal(&self) -> bool {
        matches!(
            self,
            Error::Net(butterfly_net::Error::NonPublicAddress { .. })
        )
    }
}
