//! A pool of read connections to the store.
//!
//! The engine's writer owns the store's write connection on its own thread; the server reads
//! through connections of its own (for DuckDB, [`try_clone`] of the engine's), each used by one
//! request at a time on a blocking thread, so a slow query never stalls the async runtime.
//!
//! [`try_clone`]: https://docs.rs/duckdb/latest/duckdb/struct.Connection.html#method.try_clone

use crate::feed::{EventLog, LogRead};
use butterfly_store::Store;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Read connections, shared by all requests.
#[derive(Clone)]
pub struct ReadPool {
    idle: Arc<Idle>,
    /// One per connection, held for a read's whole run (connection given back first): whoever
    /// holds one finds a free connection, and reads waiting for one wait here, without a thread.
    permits: Arc<Semaphore>,
}

struct Idle {
    stores: Mutex<Vec<Box<dyn Store>>>,
}

impl Idle {
    /// Runs `read` on a free connection and gives it back; `None` if none is free, which a
    /// caller holding a permit never sees (save for a pool made without connections).
    fn with<T>(&self, read: impl FnOnce(&dyn Store) -> T) -> Option<T> {
        let store = self
            .stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()?;
        // Given back on the way out, even if `read` panics: a lost connection would leave a
        // permit with no connection behind it.
        let lent = Lent {
            idle: self,
            store: Some(store),
        };
        Some(read(lent.store()))
    }
}

/// A connection out of the pool, given back when dropped.
struct Lent<'a> {
    idle: &'a Idle,
    store: Option<Box<dyn Store>>,
}

impl Lent<'_> {
    fn store(&self) -> &dyn Store {
        match &self.store {
            Some(store) => store.as_ref(),
            None => unreachable!("a lent connection is held until dropped"),
        }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            self.idle
                .stores
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(store);
        }
    }
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] butterfly_store::Error),
    #[error("the read task failed: {0}")]
    Task(String),
}

impl ReadPool {
    /// A pool over these connections (there must be at least one).
    pub fn new(connections: Vec<Box<dyn Store>>) -> ReadPool {
        let permits = Arc::new(Semaphore::new(connections.len().max(1)));
        ReadPool {
            idle: Arc::new(Idle {
                stores: Mutex::new(connections),
            }),
            permits,
        }
    }

    /// Runs `read` on a free connection, on a blocking thread.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&dyn Store) -> Result<T, butterfly_store::Error> + Send + 'static,
    ) -> Result<T, ReadError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ReadError::Task("the pool is closed".into()))?;
        let idle = self.idle.clone();
        // The permit goes with the read: a request that times out drops this future, but the
        // blocking read runs on, holding its connection, and must still count.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            idle.with(read)
                .ok_or_else(|| ReadError::Task("no free read connection".into()))?
                .map_err(ReadError::from)
        })
        .await
        .map_err(|e| ReadError::Task(e.to_string()))?
    }
}

/// Log reads take a permit like any other read: a replaying subscriber waits for a connection
/// without holding a thread.
impl EventLog for ReadPool {
    fn events_after(self: Arc<Self>, after: i64, limit: usize) -> LogRead {
        Box::pin(async move {
            self.read(move |store| store.events_after(after, limit))
                .await
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use butterfly_store::MemoryStore;

    #[tokio::test]
    async fn a_read_that_panics_gives_its_connection_back() {
        let pool = ReadPool::new(vec![Box::new(MemoryStore::new())]);
        let failed = pool
            .read(|_| -> Result<(), butterfly_store::Error> { panic!("a read that fails badly") })
            .await;
        assert!(matches!(failed, Err(ReadError::Task(_))));
        let next = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            pool.read(|store| store.kv_get("x")),
        )
        .await
        .expect("the only connection is back in the pool");
        assert!(matches!(next, Ok(None)));
    }
}
