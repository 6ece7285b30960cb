//! Changing what a running engine syncs: repos added or removed by hand, a new selector, a
//! resync. The admin API is the main user; each command is applied by the coordinator between
//! two events, and answered once it has taken effect in memory (the store follows with the next
//! batch).

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// Repos to add to tags, or to take away.
#[derive(Clone, Debug, Default)]
pub struct RepoUpdate {
    /// Each DID joins these tags, whatever the selector says.
    pub add: Vec<(String, Vec<String>)>,
    /// Each DID leaves these hand-added tags; with `None`, the repo is removed altogether: in
    /// no tag, never walked through, its data deleted, until it is added again.
    pub remove: Vec<(String, Option<Vec<String>>)>,
}

/// Where a repo stands after a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RepoStanding {
    pub did: String,
    /// Its tags now: empty when it is no longer selected.
    pub tags: Vec<String>,
    /// `pending`, `synced`, `resync` or `failed`; `None` when not selected.
    pub state: Option<String>,
}

/// What replacing the selector did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SelectorSwap {
    /// Repos selected now that were not.
    pub added: u64,
    /// Repos no longer selected (their data is removed).
    pub removed: u64,
    /// Repos fetched again because what they keep changed.
    pub resynced: u64,
    /// False while seeds (handles, discovery calls) of the new selector are still resolving: the
    /// counts then cover what is known so far.
    pub settled: bool,
}

/// Why a command was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Invalid(String),
    #[error("the engine has stopped")]
    Stopped,
}

pub(crate) enum Command {
    Repos {
        update: RepoUpdate,
        reply: oneshot::Sender<Result<Vec<RepoStanding>, ControlError>>,
    },
    Selector {
        document: String,
        reply: oneshot::Sender<Result<SelectorSwap, ControlError>>,
    },
    Resync {
        dids: Vec<String>,
        reply: oneshot::Sender<Result<Vec<RepoStanding>, ControlError>>,
    },
}

/// A handle on a running engine, cheap to clone.
#[derive(Clone)]
pub struct Control {
    pub(crate) commands: mpsc::Sender<Command>,
}

impl Control {
    /// Adds repos to tags or removes them. Tags must be the selector's. The changes persist in
    /// the store and survive restarts.
    pub async fn update_repos(
        &self,
        update: RepoUpdate,
    ) -> Result<Vec<RepoStanding>, ControlError> {
        self.ask(|reply| Command::Repos { update, reply }).await
    }

    /// Replaces the selector document. Repos that leave the selection are removed, new ones are
    /// backfilled, and repos whose retention changed are fetched again and reconciled. The new
    /// document is kept in the store and used after a restart as long as the selector given at
    /// start is the one it replaced.
    pub async fn replace_selector(&self, document: String) -> Result<SelectorSwap, ControlError> {
        self.ask(|reply| Command::Selector { document, reply })
            .await
    }

    /// Fetches repos again and reconciles the store with them.
    pub async fn resync(&self, dids: Vec<String>) -> Result<Vec<RepoStanding>, ControlError> {
        self.ask(|reply| Command::Resync { dids, reply }).await
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, ControlError>>) -> Command,
    ) -> Result<T, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }
}
