//! The loop both WebSocket clients run: connect, report it, read until the connection ends, close it,
//! report why, back off, and again, until the consumer goes away or asks to stop.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use url::Url;

use crate::backoff::Backoff;
use crate::config::StreamConfig;
use crate::socket::{Connector, Socket};
use crate::{channel, Connection, Cursor, DisconnectReason, Driver};

/// How one connection ended.
pub(crate) enum Outcome {
    /// Reconnect after this.
    Ended(DisconnectReason),
    /// The consumer is gone or asked to stop.
    Stopped,
}

/// What differs between the clients: the request, the items, and how messages are read.
pub(crate) trait Session: Send + 'static {
    /// The channel's item.
    type Item: Send + 'static;
    /// The stream's name in logs.
    const NAME: &'static str;

    /// The cursor the next connection will send.
    fn resume_cursor(&self) -> Option<i64>;
    /// The URL of the next connection, carrying `cursor`.
    fn url(&mut self, cursor: Option<i64>) -> Url;
    /// The item for an open connection.
    fn connected(cursor: Option<i64>) -> Self::Item;
    /// The item for an ended connection.
    fn disconnected(
        reason: DisconnectReason,
        retry_in: Duration,
        cursor: Option<i64>,
    ) -> Self::Item;
    /// Reads `socket` until the connection ends, delivering what comes. The loop closes the socket.
    fn read(
        &mut self,
        socket: &mut Socket,
        driver: &mut Driver<Self::Item>,
    ) -> impl Future<Output = Outcome> + Send;
}

/// Starts `session` on the current tokio runtime. `cursor` is the one the returned handle reads; a
/// connection that moved it counts as healthy for the backoff.
pub(crate) fn spawn<S: Session>(
    session: S,
    connector: Connector,
    config: StreamConfig,
    cursor: Cursor,
) -> (Connection, mpsc::Receiver<S::Item>) {
    let (sender, receiver) = channel(config.queue_capacity);
    let connection = Connection::spawn(cursor.clone(), |shutdown| {
        tokio::spawn(run(
            session,
            connector,
            config,
            cursor,
            Driver::new(sender, shutdown),
        ))
    });
    (connection, receiver)
}

async fn run<S: Session>(
    mut session: S,
    connector: Connector,
    config: StreamConfig,
    cursor: Cursor,
    mut driver: Driver<S::Item>,
) {
    let mut backoff = Backoff::new(config.backoff.clone());
    loop {
        let resume = session.resume_cursor();
        let url = session.url(resume);
        let connecting = tokio::select! {
            biased;
            () = driver.stopped() => return,
            connected = connector.connect(&url) => connected,
        };
        let (reason, connected_for) = match connecting {
            Err(error) => (DisconnectReason::Connect(error), None),
            Ok(ws) => {
                let since = Instant::now();
                let cursor_before = cursor.get();
                tracing::info!(url = %url, cursor = ?resume, "{} connected", S::NAME);
                let mut socket = Socket::new(ws, &config);
                let outcome = match driver.deliver(S::connected(resume)).await {
                    Ok(()) => session.read(&mut socket, &mut driver).await,
                    Err(_) => Outcome::Stopped,
                };
                socket.close().await;
                let Outcome::Ended(reason) = outcome else {
                    return;
                };
                if cursor.get() != cursor_before {
                    backoff.reset();
                }
                (reason, Some(since.elapsed()))
            }
        };
        let retry_in = backoff.next_delay(connected_for);
        let next = session.resume_cursor();
        tracing::warn!(url = %url, %reason, ?retry_in, cursor = ?next, "{} disconnected", S::NAME);
        if driver
            .deliver(S::disconnected(reason, retry_in, next))
            .await
            .is_err()
            || driver.sleep(retry_in).await.is_err()
        {
            return;
        }
    }
}
