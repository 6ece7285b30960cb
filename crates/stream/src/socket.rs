//! One WebSocket connection: opened under the address policy, read with a ping/stall watchdog.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use url::Url;

use crate::config::StreamConfig;
use crate::{DisconnectReason, Error};

/// A TCP stream, with or without TLS.
pub(crate) enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_flush(cx),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

pub(crate) type WsStream = WebSocketStream<MaybeTls>;

/// Opens WebSocket connections: policy-checked TCP from `butterfly_net`, TLS for `wss`, then the
/// handshake with a message size limit.
pub(crate) struct Connector {
    config: StreamConfig,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Connector {
    /// Builds the TLS configuration up front when `url` needs it, so that a broken one is reported
    /// before the stream starts.
    pub(crate) fn new(config: &StreamConfig, url: &Url) -> Result<Connector, Error> {
        let tls = if url.scheme() == "wss" {
            butterfly_net::install_crypto_provider();
            let mut tls = butterfly_net::tls_client_config()?;
            // A WebSocket handshake is HTTP/1.1; say so, in case the server prefers h2.
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsConnector::from(Arc::new(tls)))
        } else {
            None
        };
        Ok(Connector {
            config: config.clone(),
            tls,
        })
    }

    /// Connects and performs the handshake, sending `headers` besides the standard ones.
    pub(crate) async fn connect(
        &self,
        url: &Url,
        headers: &[(&'static str, String)],
    ) -> Result<WsStream, Error> {
        let tcp = butterfly_net::connect_tcp(url, &self.config.network).await?;
        let handshake = async {
            let stream = match &self.tls {
                None => MaybeTls::Plain(tcp),
                Some(connector) => {
                    let name = server_name(url)?;
                    let stream =
                        connector
                            .connect(name, tcp)
                            .await
                            .map_err(|error| Error::Tls {
                                url: url.to_string(),
                                message: error.to_string(),
                            })?;
                    MaybeTls::Tls(Box::new(stream))
                }
            };
            let handshake_error = |message: String| Error::Handshake {
                url: url.to_string(),
                message,
            };
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(|error| handshake_error(error.to_string()))?;
            let user_agent = HeaderValue::from_str(&self.config.network.user_agent)
                .map_err(|error| handshake_error(format!("user agent: {error}")))?;
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::header::USER_AGENT,
                user_agent,
            );
            for (name, value) in headers {
                let value = HeaderValue::from_str(value)
                    .map_err(|error| handshake_error(format!("header {name}: {error}")))?;
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|error| handshake_error(format!("header {name}: {error}")))?;
                request.headers_mut().insert(name, value);
            }
            let limit = self.config.max_message_bytes;
            let ws_config = WebSocketConfig::default()
                .max_message_size(Some(limit))
                .max_frame_size(Some(limit));
            let (ws, _response) =
                tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config))
                    .await
                    .map_err(|error| handshake_error(error.to_string()))?;
            Ok(ws)
        };
        tokio::time::timeout(self.config.network.connect_timeout, handshake)
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
    /// A binary or text message.
    Data(Message),
    /// The connection is over.
    Ended(DisconnectReason),
    /// The caller's interrupt future finished first.
    Interrupted(I),
}

/// An open connection with its liveness clock.
///
/// Liveness: after `ping_interval` with nothing inbound (counted from the last inbound message or our
/// last ping), a ping is sent; once a ping is out, `stall_timeout` with nothing inbound at all ends the
/// connection as stalled. Any inbound message counts, not only the pong, so a busy stream never
/// needs an answer to prove itself, and an idle one only has to answer pings. Pings from the server
/// are answered by tungstenite while we read.
///
/// Backpressure never looks like a stall: the reader waits for a full queue outside `next`, right
/// after a message arrived (so no ping is out), and when it comes back, reading is preferred over the
/// timer, so whatever arrived meanwhile counts before a stall can be declared.
pub(crate) struct Socket {
    ws: WsStream,
    ping_interval: Duration,
    stall_timeout: Duration,
    last_inbound: Instant,
    last_ping: Option<Instant>,
    awaiting_since: Option<Instant>,
}

/// How long a polite close may take before the connection is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

impl Socket {
    pub(crate) fn new(ws: WsStream, config: &StreamConfig) -> Socket {
        Socket {
            ws,
            ping_interval: config.ping_interval,
            stall_timeout: config.stall_timeout,
            last_inbound: Instant::now(),
            last_ping: None,
            awaiting_since: None,
        }
    }

    /// The next binary or text message, handling control frames and the watchdog meanwhile. Returns
    /// early with whatever `interrupt` gives. Cancel-safe: nothing is lost if the future is dropped.
    pub(crate) async fn next<I>(&mut self, interrupt: impl Future<Output = I>) -> Inbound<I> {
        tokio::pin!(interrupt);
        loop {
            let deadline = match self.awaiting_since {
                Some(since) => since + self.stall_timeout,
                None => {
                    let quiet_since = match self.last_ping {
                        Some(ping) => ping.max(self.last_inbound),
                        None => self.last_inbound,
                    };
                    quiet_since + self.ping_interval
                }
            };
            enum Event<I> {
                Interrupted(I),
                Read(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
                Timer,
            }
            let event = tokio::select! {
                biased;
                value = &mut interrupt => Event::Interrupted(value),
                read = self.ws.next() => Event::Read(read),
                () = tokio::time::sleep_until(deadline) => Event::Timer,
            };
            match event {
                Event::Interrupted(value) => return Inbound::Interrupted(value),
                Event::Read(None) => {
                    return Inbound::Ended(DisconnectReason::Closed {
                        code: None,
                        reason: "connection closed without a close frame".to_owned(),
                    })
                }
                Event::Read(Some(Err(error))) => {
                    return Inbound::Ended(DisconnectReason::Transport(error.to_string()))
                }
                Event::Read(Some(Ok(message))) => {
                    self.last_inbound = Instant::now();
                    self.awaiting_since = None;
                    match message {
                        Message::Binary(_) | Message::Text(_) => return Inbound::Data(message),
                        Message::Close(frame) => {
                            let (code, reason) = match frame {
                                Some(frame) => {
                                    (Some(u16::from(frame.code)), frame.reason.to_string())
                                }
                                None => (None, String::new()),
                            };
                            return Inbound::Ended(DisconnectReason::Closed { code, reason });
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                Event::Timer => {
                    let now = Instant::now();
                    if let Some(since) = self.awaiting_since {
                        if now >= since + self.stall_timeout {
                            return Inbound::Ended(DisconnectReason::Stalled {
                                silent_for: now - self.last_inbound,
                            });
                        }
                        continue;
                    }
                    let ping = Message::Ping(bytes::Bytes::from_static(b"butterfly"));
                    let sent = tokio::select! {
                        biased;
                        value = &mut interrupt => return Inbound::Interrupted(value),
                        sent = tokio::time::timeout(self.stall_timeout, self.ws.send(ping)) => sent,
                    };
                    match sent {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            return Inbound::Ended(DisconnectReason::Transport(error.to_string()))
                        }
                        Err(_) => {
                            return Inbound::Ended(DisconnectReason::Stalled {
                                silent_for: Instant::now() - self.last_inbound,
                            })
                        }
                    }
                    self.last_ping = Some(now);
                    self.awaiting_since = Some(now);
                }
            }
        }
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

    /// Closes politely (a close frame), or drops the connection if that takes too long.
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.ws.close(None)).await;
    }
}
