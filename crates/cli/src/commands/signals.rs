//! Ctrl-C and SIGTERM as a clean stop for the long-running commands (`sync`, `serve`), and the
//! `select!` helper for optional futures they share.

use std::future::{pending, Future};

use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGINT and SIGTERM, listened for from the moment of [`StopSignals::install`].
pub struct StopSignals {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
}

impl StopSignals {
    /// Installs the handlers now, so that a signal arriving while the command is still starting
    /// (opening a database may replay its write-ahead log for a while) is kept and answered
    /// with a clean stop, instead of killing the process. Must run inside a Tokio runtime.
    pub fn install() -> StopSignals {
        StopSignals {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Completes at the first SIGINT or SIGTERM since [`StopSignals::install`]. A handler that
    /// could not be installed never fires; the signal then keeps its default action.
    pub async fn received(&mut self) {
        tokio::select! {
            _ = or_pending(self.interrupt.as_mut().map(Signal::recv)) => {}
            _ = or_pending(self.terminate.as_mut().map(Signal::recv)) => {}
        }
    }
}

/// `future`'s output, or never when there is none: a `select!` branch for something optional (a
/// signal handler that could not be installed, a task not started or already done).
pub async fn or_pending<F: Future>(future: Option<F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => pending().await,
    }
}
