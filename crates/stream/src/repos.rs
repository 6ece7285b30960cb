//! The `com.atproto.sync.subscribeRepos` client.
//!
//! **Cursor.** The client keeps the highest `seq` it has delivered (put into the channel) and sends it
//! as `cursor` on every reconnection, so the server resumes just after it: nothing missed, nothing
//! repeated. A `seq` that is not above the previous one is still delivered (the verifier downstream
//! drops and counts it) but never moves the cursor back.
//!
//! **Error frames.** Each is delivered, then the client reconnects after its backoff, since the server
//! closes after an error frame:
//! - `ConsumerTooSlow` (the server dropped us for lagging): from the saved cursor, losing nothing.
//! - `FutureCursor` (our cursor is beyond the server's head): the server's numbering no longer matches
//!   ours — it was reset or restored, or the endpoint is another server. Resending the cursor would
//!   only fail again, so the client forgets it and reconnects **from the live head**. Events between
//!   the server's head and our old cursor cannot be asked for by seq; the consumer sees the error frame
//!   and the `Connected { cursor: None }` that follows, and must resynchronise repos it cares about.
//! - Any other error: from the saved cursor.
//!
//! `#info` messages (such as `OutdatedCursor`, sent when the cursor is older than the server keeps) are
//! only delivered.

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use url::Url;

use butterfly_firehose::message::{self, ErrorFrame};
use butterfly_firehose::{decode_frame, Frame};

use crate::backoff::Backoff;
use crate::config::StreamConfig;
use crate::socket::{Connector, Inbound, Socket};
use crate::{
    channel, check_literal_host, set_query_param, websocket_url, Connection, Cursor,
    DisconnectReason, Driver, Error, StreamItem,
};

const PATH: &str = "/xrpc/com.atproto.sync.subscribeRepos";

/// The `subscribeRepos` URL for `endpoint`: a ws(s) URL is used as given; an http(s) base URL of a
/// relay or PDS becomes `ws(s)://host/xrpc/com.atproto.sync.subscribeRepos`.
pub fn repos_endpoint(endpoint: &str) -> Result<Url, Error> {
    websocket_url(endpoint, PATH)
}

/// Starts a `subscribeRepos` client on the current tokio runtime and returns its handle and the
/// receiving end of its bounded channel (`config.queue_capacity` items). The module docs say how the
/// cursor and error frames are handled.
///
/// `cursor` is the `seq` to resume after; `None` starts from the live head. The client runs until the
/// receiver is dropped or the handle shuts it down, reconnecting forever with backoff.
///
/// Fails at once only for what retrying cannot fix: an unusable URL, a literal IP address the policy
/// refuses, or a TLS configuration that cannot be built. Failures to connect are delivered as
/// [`StreamItem::Disconnected`] and retried.
///
/// # Panics
/// Outside a tokio runtime.
pub fn subscribe_repos(
    endpoint: &str,
    cursor: Option<i64>,
    config: StreamConfig,
) -> Result<(Connection, mpsc::Receiver<StreamItem>), Error> {
    let endpoint = repos_endpoint(endpoint)?;
    check_literal_host(&endpoint, &config)?;
    let connector = Connector::new(&config, &endpoint)?;
    let (sender, receiver) = channel(config.queue_capacity);
    let cursor = Cursor::new(cursor);
    let connection = Connection::spawn(cursor.clone(), |shutdown| {
        let client = Client {
            endpoint,
            backoff: Backoff::new(config.backoff.clone()),
            config,
            connector,
            cursor,
            driver: Driver::new(sender, shutdown),
        };
        tokio::spawn(client.run())
    });
    Ok((connection, receiver))
}

struct Client {
    endpoint: Url,
    config: StreamConfig,
    connector: Connector,
    cursor: Cursor,
    backoff: Backoff,
    driver: Driver<StreamItem>,
}

/// What one connection ended with.
enum Outcome {
    /// Reconnect after this.
    Ended(DisconnectReason),
    /// The consumer is gone or asked to stop.
    Stopped,
}

impl Client {
    async fn run(mut self) {
        loop {
            let resume = self.cursor.get();
            let mut url = self.endpoint.clone();
            let cursor_text = resume.map(|seq| seq.to_string());
            set_query_param(&mut url, "cursor", cursor_text.as_deref());
            let connecting = tokio::select! {
                biased;
                () = self.driver.stopped() => return,
                connected = self.connector.connect(&url, &[]) => connected,
            };
            let (reason, connected_for) = match connecting {
                Err(error) => (DisconnectReason::Connect(error), None),
                Ok(ws) => {
                    let since = Instant::now();
                    let cursor_before = self.cursor.get();
                    tracing::info!(url = %url, cursor = ?resume, "subscribeRepos connected");
                    if self
                        .driver
                        .deliver(StreamItem::Connected { cursor: resume })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let socket = Socket::new(ws, &self.config);
                    match self.read(socket).await {
                        Outcome::Stopped => return,
                        Outcome::Ended(reason) => {
                            if self.cursor.get() != cursor_before {
                                self.backoff.reset();
                            }
                            (reason, Some(since.elapsed()))
                        }
                    }
                }
            };
            let retry_in = self.backoff.next_delay(connected_for);
            let cursor = self.cursor.get();
            tracing::warn!(url = %self.endpoint, %reason, ?retry_in, ?cursor, "subscribeRepos disconnected");
            let item = StreamItem::Disconnected {
                reason,
                retry_in,
                cursor,
            };
            if self.driver.deliver(item).await.is_err() {
                return;
            }
            if self.driver.sleep(retry_in).await.is_err() {
                return;
            }
        }
    }

    /// Reads one connection until it ends, delivering every frame.
    async fn read(&mut self, mut socket: Socket) -> Outcome {
        loop {
            let message = match socket.next(self.driver.stopped()).await {
                Inbound::Interrupted(()) => {
                    socket.close().await;
                    return Outcome::Stopped;
                }
                Inbound::Ended(reason) => return Outcome::Ended(reason),
                Inbound::Data(message) => message,
            };
            let (raw, frame) = match message {
                WsMessage::Binary(raw) => {
                    let frame = decode_frame(&raw);
                    (raw, frame)
                }
                WsMessage::Text(text) => (
                    text.into(),
                    Err(message::Error::Field {
                        kind: "header".to_owned(),
                        message: "a text message on a binary stream".to_owned(),
                    }),
                ),
                // `Socket::next` returns only data messages.
                _ => continue,
            };
            let seq = match &frame {
                Ok(Frame::Message(message)) => message.seq(),
                _ => None,
            };
            let error_frame = match &frame {
                Ok(Frame::Error(ErrorFrame { error, message })) => {
                    Some((error.clone(), message.clone()))
                }
                _ => None,
            };
            if self
                .driver
                .deliver(StreamItem::Frame { raw, frame })
                .await
                .is_err()
            {
                socket.close().await;
                return Outcome::Stopped;
            }
            if let Some(seq) = seq {
                self.cursor.advance(seq);
            }
            if let Some((error, message)) = error_frame {
                if error == "FutureCursor" {
                    self.cursor.reset();
                }
                socket.close().await;
                return Outcome::Ended(DisconnectReason::ErrorFrame { error, message });
            }
        }
    }
}
