//! Ctrl-C and SIGTERM as a clean stop for the long-running commands (`sync`, `serve`).

use std::future::pending;

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
        let interrupt = async {
            match &mut self.interrupt {
                Some(signal) => drop(signal.recv().await),
                None => pending().await,
            }
        };
        let terminate = async {
            match &mut self.terminate {
                Some(signal) => drop(signal.recv().await),
                None => pending().await,
            }
        };
        tokio::select! {
            () = interrupt => {}
            () = terminate => {}
        }
    }
}
