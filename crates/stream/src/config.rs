//! Settings shared by the WebSocket clients: network policy, queue bound, liveness and backoff.

use std::time::Duration;

use butterfly_firehose::message::MAX_FRAME_BYTES;
use butterfly_net::HttpConfig;

/// How a WebSocket client connects, buffers, watches and retries. `Default` gives public addresses
/// only, a 128-item queue, a ping after 30 s of silence, a stall after 60 s without an answer, and
/// backoff from 1 s to 60 s.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// The address policy (`allow_private_network`), the connect timeout (applied to TCP, then again
    /// to TLS plus the WebSocket handshake) and the `User-Agent`. Its read timeout and redirect limit do
    /// not apply: a stream has no response to time out, and WebSocket handshakes are not redirected.
    pub network: HttpConfig,
    /// Items the channel holds. When it is full the client stops reading the socket until the consumer
    /// takes one, so memory is bounded by about `queue_capacity` × `max_message_bytes` (and the kernel's
    /// socket buffers); the server sees the backpressure as a slow reader. At least 1.
    pub queue_capacity: usize,
    /// After this long without any inbound message, the client sends a ping.
    pub ping_interval: Duration,
    /// After a ping, this long without any inbound message (pong, data or anything else) means the
    /// connection is dead: the client drops it and reconnects. An idle server that answers pings is
    /// never declared stalled, however long it sends nothing. Only whole messages count, so this must
    /// exceed the time the link needs to carry the largest one.
    pub stall_timeout: Duration,
    /// Waits between connection attempts.
    pub backoff: BackoffConfig,
    /// The largest WebSocket message accepted; a larger one ends the connection. For Jetstream, also
    /// the largest decompressed event.
    pub max_message_bytes: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            network: HttpConfig::default(),
            queue_capacity: 128,
            ping_interval: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            backoff: BackoffConfig::default(),
            max_message_bytes: MAX_FRAME_BYTES,
        }
    }
}

impl StreamConfig {
    /// The default configuration with non-public addresses allowed or not (a local PDS or relay needs
    /// them).
    pub fn with_private_network(allow_private_network: bool) -> Self {
        StreamConfig {
            network: HttpConfig::with_private_network(allow_private_network),
            ..StreamConfig::default()
        }
    }
}

/// Exponential backoff with jitter between connection attempts.
///
/// The n-th consecutive failure waits a random time between half and all of
/// `min(initial × 2ⁿ, max)`, so that many clients cut off at once do not come back at once. A
/// connection that stayed up for `reset_after` counts as healthy: the next wait starts again from
/// `initial`.
#[derive(Clone, Debug)]
pub struct BackoffConfig {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// How long a connection must last for the backoff to start over.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
        }
    }
}
