//! An append-only, hash-chained event store on PostgreSQL.
//!
//! It knows streams, stream versions, global positions, hashes and subscribers, and nothing
//! of what the events mean. docs/EVENT-STORE.md at the workspace root describes what spans
//! the modules: the tables, the global order, the exact bytes the hash chain covers (enough
//! for an auditor to verify it with other tools), what verification and checkpoints prove,
//! and several processes on one database.
//!
//! * [`EventStore::append`] appends to one stream atomically with an [`ExpectedVersion`];
//!   retries of stored event ids are recognised ([`AppendOutcome::already_stored`]).
//!   [`EventStore::append_in_transaction`] and [`EventStore::prepare_pipelined_append`] do
//!   the same inside the caller's transaction, for writes that must commit with the events.
//! * The [`sealer`] gives committed events their global `position` and hash-chain link, in an
//!   order that never lets an event appear before one a reader has already seen.
//! * [`EventStore::read_log`] reads the global log by position, [`EventStore::log_reader`]
//!   with the next batches in flight; streams are read forwards, backwards, or as a reader
//!   at some position saw them.
//! * [`Subscription`] follows the global log from a durable checkpoint.
//! * [`pipeline`] sends several statements in one round trip.
//! * [`chain`] is the canonical encoding, [`verify`] recomputes the chain, [`export`] writes
//!   the history as CloudEvents, and [`checkpoint`] signs the chain head.

mod append;
pub mod authentication;
pub mod chain;
pub mod checkpoint;
mod db;
mod error;
pub mod export;
mod jcs;
mod log_reader;
mod model;
pub mod pipeline;
mod read;
pub mod sealer;
mod subscription;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod verify;
mod xid;

pub use append::{AppendError, AppendOutcome, ExpectedVersion, NewEvent, PipelinedAppend};
pub use authentication::{Authenticity, HistoryKey, HistoryKeys};
pub use chain::Hash;
pub use db::{
    ensure_current_schema, ensure_database, grant_app_role, migrate, schema_is_current,
    StoreConfig, HISTORY_TABLES,
};
pub use error::{BoxError, StoreError};
pub use log_reader::LogReader;
pub use model::{EventData, LoggedEvent, Metadata, RecordedEvent};
pub use read::{read_log_after, read_stream_forward_with, EVENT_COLUMNS, MAX_READ_BATCH};
pub use subscription::{
    listen, load_checkpoint, save_checkpoint, Subscription, SubscriptionOptions,
};
pub use tokio_util::sync::CancellationToken;
pub use verify::{ChainHead, VerifyReport};

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{watch, Notify};

/// A handle on one event store database. Cheap to clone; clones share the pool and the
/// process-wide wake-ups.
#[derive(Clone)]
pub struct EventStore {
    pool: Pool,
    shared: Arc<Shared>,
}

/// What one process shares among its appenders, its sealer and its subscribers.
struct Shared {
    config: StoreConfig,
    /// Woken after every local append, so the local sealer seals it without waiting to poll.
    appended: Notify,
    /// The highest sealed position this process knows of: moved by the local sealer, by
    /// NOTIFY from other processes' sealers, and by polling.
    log_head: watch::Sender<u64>,
    /// Stream versions seen committed, which spare appends a probe.
    known_versions: append::KnownVersions,
}

impl EventStore {
    /// Connects to an existing, migrated database. See [`ensure_database`] and [`migrate`].
    pub fn connect(config: StoreConfig) -> Result<Self, StoreError> {
        let pool = db::build_pool(&config)?;
        let (log_head, _) = watch::channel(0);
        Ok(EventStore {
            pool,
            shared: Arc::new(Shared {
                config,
                appended: Notify::new(),
                log_head,
                known_versions: append::KnownVersions::new(),
            }),
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// The highest sealed position this process has heard of (it may lag the database).
    pub fn known_log_head(&self) -> u64 {
        *self.shared.log_head.borrow()
    }

    /// A receiver that changes whenever the known log head may have moved.
    pub fn watch_log_head(&self) -> watch::Receiver<u64> {
        self.shared.log_head.subscribe()
    }

    pub(crate) fn note_log_head(&self, position: u64) {
        self.shared.log_head.send_if_modified(|head| {
            if position > *head {
                *head = position;
                true
            } else {
                false
            }
        });
    }

    /// Wakes every local waiter so that it re-reads the database (after a reconnection, when
    /// notifications may have been missed).
    pub(crate) fn nudge_subscribers(&self) {
        self.shared.log_head.send_modify(|_| {});
    }

    /// Is the database reachable and its schema up to date?
    pub async fn ready(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        if schema_is_current(&client).await? {
            Ok(())
        } else {
            Err(StoreError::SchemaOutdated)
        }
    }

    /// Starts the sealer and the listener that turns other processes' NOTIFY into local
    /// wake-ups, unsupervised, until `cancel`: for tools and tests. `crier serve` runs
    /// [`sealer::run`] and [`listen`] under its supervisor instead.
    pub fn spawn_background(&self, cancel: CancellationToken) -> BackgroundTasks {
        let sealer = tokio::spawn(sealer::run(self.clone(), cancel.clone()));
        let listener = tokio::spawn(subscription::listen(self.clone(), cancel));
        BackgroundTasks { sealer, listener }
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        self.shared.config.poll_interval
    }
}

/// The join handles of [`EventStore::spawn_background`].
pub struct BackgroundTasks {
    pub sealer: tokio::task::JoinHandle<Result<(), StoreError>>,
    pub listener: tokio::task::JoinHandle<Result<(), StoreError>>,
}

impl BackgroundTasks {
    pub async fn join(self) {
        let _ = self.sealer.await;
        let _ = self.listener.await;
    }
}
