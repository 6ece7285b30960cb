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

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::http::HeaderMap;
use url::Url;

use butterfly_firehose::message::{self, ErrorFrame};
use butterfly_firehose::{decode_frame, Frame};

use crate::config::StreamConfig;
use crate::reconnect::{self, Outcome, Session};
use crate::socket::{Connector, Inbound, Socket};
use crate::{
    set_query_param, websocket_url, Connection, Cursor, DisconnectReason, Driver, Error, StreamItem,
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
/// refuses, or a TLS configuration or `User-Agent` that cannot be used. Failures to connect are
/// delivered as [`StreamItem::Disconnected`] and retried.
///
/// # Panics
/// Outside a tokio runtime.
pub fn subscribe_repos(
    endpoint: &str,
    cursor: Option<i64>,
    config: StreamConfig,
) -> Result<(Connection, mpsc::Receiver<StreamItem>), Error> {
    let endpoint = repos_endpoint(endpoint)?;
    let connector = Connector::new(&config, &endpoint, HeaderMap::new())?;
    let cursor = Cursor::new(cursor);
    let session = Repos {
        endpoint,
        cursor: cursor.clone(),
    };
    Ok(reconnect::spawn(session, connector, config, cursor))
}

struct Repos {
    endpoint: Url,
    cursor: Cursor,
}

impl Session for Repos {
    type Item = StreamItem;
    const NAME: &'static str = "subscribeRepos";

    fn resume_cursor(&self) -> Option<i64> {
        self.cursor.get()
    }

    fn url(&mut self, cursor: Option<i64>) -> Url {
        let mut url = self.endpoint.clone();
        let cursor = cursor.map(|seq| seq.to_string());
        set_query_param(&mut url, "cursor", cursor.as_deref());
        url
    }

    fn connected(cursor: Option<i64>) -> StreamItem {
        StreamItem::Connected { cursor }
    }

    fn disconnected(
        reason: DisconnectReason,
        retry_in: Duration,
        cursor: Option<i64>,
    ) -> StreamItem {
        StreamItem::Disconnected {
            reason,
            retry_in,
            cursor,
        }
    }

    /// Delivers every frame; an error frame ends the connection.
    async fn read(&mut self, socket: &mut Socket, driver: &mut Driver<StreamItem>) -> Outcome {
        loop {
            let (raw, frame) = match socket.next(driver.stopped()).await {
                Inbound::Interrupted(()) => return Outcome::Stopped,
                Inbound::Ended(reason) => return Outcome::Ended(reason),
                Inbound::Binary(raw) => {
                    let frame = decode_frame(&raw);
                    (raw, frame)
                }
                Inbound::Text(raw) => (
                    raw,
                    Err(message::Error::Field {
                        kind: "header".to_owned(),
                        message: "a text message on a binary stream".to_owned(),
                    }),
                ),
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
            if driver
                .deliver(StreamItem::Frame { raw, frame })
                .await
                .is_err()
            {
                return Outcome::Stopped;
            }
            if let Some(seq) = seq {
                self.cursor.advance(seq);
            }
            if let Some((error, message)) = error_frame {
                if error == "FutureCursor" {
                    self.cursor.reset();
                }
                return Outcome::Ended(DisconnectReason::ErrorFrame { error, message });
            }
        }
    }
}
