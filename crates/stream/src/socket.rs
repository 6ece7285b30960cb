//! One WebSocket connection: opened under the address policy, read with a ping/stall watchdog.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderMap, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;
use url::Url;

use butterfly_net::HttpConfig;

use crate::config::StreamConfig;
use crate::{DisconnectReason, Error};

/// A TCP stream, without TLS (`ws`) or with it (`wss`).
pub(crate) type WsStream = WebSocketStream<Either<TcpStream, TlsStream<TcpStream>>>;

/// Opens WebSocket connections: policy-checked TCP from `butterfly_net`, TLS for `wss`, then the
/// handshake with a message size limit.
pub(crate) struct Connector {
    network: HttpConfig,
    tls: Option<tokio_rustls::TlsConnector>,
    /// The `User-Agent` and the client's own headers, sent with every handshake.
    headers: HeaderMap,
    ws_config: WebSocketConfig,
}

impl Connector {
    /// Checks what retrying cannot fix before the stream starts, so that it is reported at once: the
    /// address policy for a literal IP host of `url`, the TLS configuration when `url` needs it, and
    /// the `User-Agent`. `headers` are sent besides the standard ones.
    pub(crate) fn new(
        config: &StreamConfig,
        url: &Url,
        mut headers: HeaderMap,
    ) -> Result<Connector, Error> {
        butterfly_net::check_connect_url(url, &config.network)?;
        let tls = if url.scheme() == "wss" {
            let mut tls = butterfly_net::tls_client_config()?;
            // A WebSocket handshake is HTTP/1.1; say so, in case the server prefers h2.
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsConnector::from(Arc::new(tls)))
        } else {
            None
        };
        let user_agent = HeaderValue::from_str(&config.network.user_agent).map_err(|error| {
            Error::Handshake {
                url: url.to_string(),
                message: format!("user agent: {error}"),
            }
        })?;
        headers.insert(header::USER_AGENT, user_agent);
        let limit = config.max_message_bytes;
        Ok(Connector {
            network: config.network.clone(),
            tls,
            headers,
            ws_config: WebSocketConfig::default()
                .max_message_size(Some(limit))
                .max_frame_size(Some(limit)),
        })
    }

    /// Connects and performs the handshake.
    pub(crate) async fn connect(&self, url: &Url) -> Result<WsStream, Error> {
        let tcp = butterfly_net::connect_tcp(url, &self.network).await?;
        let handshake = async {
            let stream = match &self.tls {
                None => Either::Left(tcp),
                Some(connector) => {
                    let tls = connector
                        .connect(server_name(url)?, tcp)
                        .await
                        .map_err(|error| Error::Tls {
                            url: url.to_string(),
                            message: error.to_string(),
                        })?;
                    Either::Right(tls)
                }
            };
            let handshake_error = |error: tokio_tungstenite::tungstenite::Error| Error::Handshake {
                url: url.to_string(),
                message: error.to_string(),
            };
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(handshake_error)?;
            request.headers_mut().extend(self.headers.clone());
            let (ws, _response) =
                tokio_tungstenite::client_async_with_config(request, stream, Some(self.ws_config))
                    .await
                    .map_err(handshake_error)?;
            Ok(ws)
        };
        tokio::time::timeout(self.network.connect_timeout, handshake)
            .await
            .map_err(|_| Error::HandshakeTimeout {
                url: url.to_string(),
            })?
    }
}

fn server_name(url: &Url) -> Result<ServerName<'static>, Error> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    match url.host() {
        Some(url::Host::Domain(name)) => ServerName::try_from(name.to_owned())
            .map_err(|error| invalid(format!("tls server name: {error}"))),
        Some(url::Host::Ipv4(ip)) => Ok(ServerName::IpAddress(std::net::IpAddr::V4(ip).into())),
        Some(url::Host::Ipv6(ip)) => Ok(ServerName::IpAddress(std::net::IpAddr::V6(ip).into())),
        None => Err(invalid("no host".to_owned())),
    }
}

/// What reading a [`Socket`] gave.
pub(crate) enum Inbound<I> {
    /// A binary message.
    Binary(Bytes),
    /// A text message, as its UTF-8 bytes.
    Text(Bytes),
    /// The connection is over.
    Ended(DisconnectReason),
    /// The caller's interrupt future finished first.
    Interrupted(I),
}

/// An open connection with its liveness clock.
///
/// Liveness: after `ping_interval` with nothing inbound, a ping is sent; once a ping is out,
/// `stall_timeout` with nothing inbound at all ends the connection as stalled. Any inbound message
/// counts, not only the pong, so a busy stream never needs an answer to prove itself, and an idle one
/// only has to answer pings. Pings from the server are answered by tungstenite while we read.
///
/// Backpressure never looks like a stall: the reader waits for a full queue outside `next`, right
/// after a message arrived (so no ping is out), and when it comes back, reading is preferred over the
/// timer, so whatever arrived meanwhile counts before a stall can be declared.
pub(crate) struct Socket {
    ws: WsStream,
    ping_interval: Duration,
    stall_timeout: Duration,
    last_inbound: Instant,
    /// When the ping now awaiting an answer (any inbound message) was sent.
    ping_sent: Option<Instant>,
    /// The liveness check: at `ping_sent + stall_timeout` while a ping is out, otherwise at or before
    /// `last_inbound + ping_interval`. Messages do not move it (that would re-arm a timer per message):
    /// when it fires early, it is set again to the real time.
    timer: Pin<Box<Sleep>>,
}

/// How long a polite close may take before the connection is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

impl Socket {
    pub(crate) fn new(ws: WsStream, config: &StreamConfig) -> Socket {
        let now = Instant::now();
        Socket {
            ws,
            ping_interval: config.ping_interval,
            stall_timeout: config.stall_timeout,
            last_inbound: now,
            ping_sent: None,
            timer: Box::pin(tokio::time::sleep_until(later(now, config.ping_interval))),
        }
    }

    /// The next binary or text message, handling control frames and the watchdog meanwhile. Returns
    /// early with whatever `interrupt` gives. Cancel-safe: nothing is lost if the future is dropped.
    pub(crate) async fn next<I>(&mut self, interrupt: impl Future<Output = I>) -> Inbound<I> {
        tokio::pin!(interrupt);
        loop {
            let read = tokio::select! {
                biased;
                value = &mut interrupt => return Inbound::Interrupted(value),
                read = self.ws.next() => read,
                () = self.timer.as_mut() => {
                    if let Some(ended) = self.watchdog(interrupt.as_mut()).await {
                        return ended;
                    }
                    continue;
                }
            };
            let message = match read {
                None => {
                    return Inbound::Ended(DisconnectReason::Closed {
                        code: None,
                        reason: "connection closed without a close frame".to_owned(),
                    })
                }
                Some(Err(error)) => {
                    return Inbound::Ended(DisconnectReason::Transport(error.to_string()))
                }
                Some(Ok(message)) => message,
            };
            self.last_inbound = Instant::now();
            if self.ping_sent.take().is_some() {
                // Answered: the next ping is due a ping interval from now, not at the stall time.
                self.timer
                    .as_mut()
                    .reset(later(self.last_inbound, self.ping_interval));
            }
            match message {
                Message::Binary(bytes) => return Inbound::Binary(bytes),
                Message::Text(text) => return Inbound::Text(text.into()),
                Message::Close(frame) => {
                    let (code, reason) = match frame {
                        Some(frame) => (Some(u16::from(frame.code)), frame.reason.to_string()),
                        None => (None, String::new()),
                    };
                    return Inbound::Ended(DisconnectReason::Closed { code, reason });
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// The timer fired: declares a stall, sends a ping, or sets the timer again if it fired early.
    async fn watchdog<I>(
        &mut self,
        interrupt: Pin<&mut impl Future<Output = I>>,
    ) -> Option<Inbound<I>> {
        let now = Instant::now();
        if self.ping_sent.is_some() {
            return Some(Inbound::Ended(DisconnectReason::Stalled {
                silent_for: now - self.last_inbound,
            }));
        }
        let due = later(self.last_inbound, self.ping_interval);
        if now < due {
            self.timer.as_mut().reset(due);
            return None;
        }
        let ping = Message::Ping(Bytes::from_static(b"butterfly"));
        let sent = tokio::select! {
            biased;
            value = interrupt => return Some(Inbound::Interrupted(value)),
            sent = tokio::time::timeout(self.stall_timeout, self.ws.send(ping)) => sent,
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                return Some(Inbound::Ended(DisconnectReason::Transport(
                    error.to_string(),
                )))
            }
            Err(_) => {
                return Some(Inbound::Ended(DisconnectReason::Stalled {
                    silent_for: Instant::now() - self.last_inbound,
                }))
            }
        }
        self.ping_sent = Some(now);
        self.timer.as_mut().reset(later(now, self.stall_timeout));
        None
    }

    /// Sends a message (Jetstream's `options_update`), giving up after the stall timeout.
    pub(crate) async fn send(&mut self, message: Message) -> Result<(), DisconnectReason> {
        match tokio::time::timeout(self.stall_timeout, self.ws.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(DisconnectReason::Transport(error.to_string())),
            Err(_) => Err(DisconnectReason::Stalled {
                silent_for: Instant::now() - self.last_inbound,
            }),
        }
    }

    /// Closes politely, or drops the connection if that takes too long: sends our close frame, or,
    /// after the server's, the reply tungstenite queued for it (RFC 6455 §5.5.1 wants one). This is
    /// the `Sink` close: `WebSocketStream::close` sends a new close frame, which tungstenite refuses
    /// once the server's has come, and the reply would never leave.
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, SinkExt::close(&mut self.ws)).await;
    }
}

/// `at + after`, or a time too far away to matter if that overflows (a huge interval turns pings off).
fn later(at: Instant, after: Duration) -> Instant {
    at.checked_add(after)
        .unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 24 * 3600))
}
