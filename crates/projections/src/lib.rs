//! Crier's read models, derived from the event log by the domain's own `evolve`.
//!
//! * [`Publisher::execute`] runs a command: loads the resource, asks the decider, appends the
//!   events with the expected version, and writes the resource's new state into the read
//!   models in the same transaction. A write that answered is therefore visible to every
//!   later read on every process sharing the database (read-your-writes).
//! * [`Builder`] folds the global log into the same tables from a checkpoint kept in the same
//!   transaction as the rows it accounts for: it applies events no inline write applied
//!   (another writer, an older build) and it is how [`replay()`] rebuilds everything.
//! * [`history`] computes a resource as it stood at a time or a global position, with the
//!   same `evolve`.
//! * [`queries`] reads the tables. Every read of a notice names its [`queries::Viewer`], so a
//!   tenant's private notices never reach anyone else.
//! * [`idempotency`] keeps the answers of requests sent with an `Idempotency-Key`, and
//!   [`access`] issues API keys.
//!
//! Rows only move to higher stream versions, so applying an event twice, or racing an
//! inline write, never changes a result.
//!
//! # Tables
//!
//! The read models are the [`READ_MODEL_TABLES`], created by migrations V2 and V5 and reshaped
//! by V6 to V8:
//!
//! * `rm_services`, `rm_incidents`, `rm_maintenances`, `rm_api_keys`, `rm_webhooks`,
//!   `rm_templates` (V14), `rm_subscribers` (V15): one row
//!   per resource with its stream `version` and its domain `state` (JSON, as `evolve` made it),
//!   plus columns derived from the state for filtering and ordering. An incident's and a
//!   maintenance's timeline is not in its `state` but in its update rows (see
//!   [`queries::StoredState`]).
//! * `rm_updates`: one row per update of every incident and maintenance, holding the update
//!   whole at its place in the timeline, beside the columns the feeds read.
//! * `rm_service_impacts`: one row per (service, open incident or active maintenance) with the
//!   status it imposes.
//! * `rm_checkpoint`: the global position the builder has folded, in one row.
//!
//! Every row that carries a notice (incidents, maintenances and their derived rows) has
//! `public` and `tenants`, and derived rows copy them from their resource's row in the same
//! statement. Readers filter with `$everyone OR public OR $tenant = ANY(tenants)`.
//!
//! A service's status is not stored. It is the worst `rm_service_impacts` row the viewer may
//! see (operational when none): concurrent incidents on one service each write only their own
//! rows, so none overwrites another's effect, and a private incident never shows in the public
//! status.
//!
//! Not read models, and left alone by a replay: `api_idempotency` (see [`idempotency`]) and the
//! webhook dispatcher's tables.

pub mod access;
mod builder;
mod group_commit;
pub mod history;
pub mod idempotency;
mod kinds;
mod publish;
pub mod queries;
mod replay;
pub mod scheduler;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod uptime;
mod write;

pub use builder::{run as run_builder, BatchReport, Builder, BuilderOptions};
pub use kinds::{parse_stream_id, Kind, StreamKind, Versioned};
pub use publish::{AlsoWrite, CommandError, Once, Outcome, Publisher, Written};
pub use replay::{
    check_read_models, replay, ReadModelCheck, ReadModelDifference, ReplayOptions, ReplayReport,
};
pub use write::{write_changes, Changes};

use domain::DecodeError;
use eventstore::StoreError;

/// Held shared by every transaction that writes read models (inline writes, builder
/// batches) and exclusively by a replay while it swaps the rebuilt tables in.
pub(crate) const PROJECTIONS_LOCK: i64 = 0x6372_6965_7203;

/// The first statement of a transaction that writes read models: the shared side of
/// [`PROJECTIONS_LOCK`], and generic plans for the rest of the transaction. Each write is an
/// `INSERT … SELECT … FROM unnest($1, …)` whose custom plan PostgreSQL judges cheaper (it
/// knows how long the arrays are), so it would plan them again at every execution, about a
/// quarter of its work under write load; the generic plans are the same per-row index
/// lookups.
pub(crate) const READ_MODEL_WRITE_SQL: &str =
    "SELECT pg_advisory_xact_lock_shared($1), set_config('plan_cache_mode', 'force_generic_plan', true)";

/// Every read-model table. A replay rebuilds exactly these (a test checks that the schema
/// has no other).
pub const READ_MODEL_TABLES: [&str; 10] = [
    "rm_api_keys",
    "rm_webhooks",
    "rm_templates",
    "rm_subscribers",
    "rm_services",
    "rm_incidents",
    "rm_maintenances",
    "rm_updates",
    "rm_service_impacts",
    "rm_checkpoint",
];

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event this build cannot read: the builder stops rather than skip it.
    #[error("a stored event cannot be read")]
    Decode(#[from] DecodeError),
    #[error("read models are inconsistent with the log: {0}")]
    Corrupt(String),
    /// An event that cannot be encoded as JSON (a bug).
    #[error("a {type_name} event cannot be encoded")]
    Encode {
        type_name: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// Exclusive work (a replay) is already running elsewhere.
    #[error("{0}")]
    Busy(String),
    /// A rebuild writes on more connections at once than the pool may open: it would wait
    /// for one until the pool gave up.
    #[error(
        "a rebuild writes on {needed} database connections at once, and the pool may open \
         {pool_size}: raise the pool size (--db-pool-size, CRIER_DB_POOL_SIZE) to {needed}"
    )]
    TooFewConnections { needed: usize, pool_size: usize },
}

impl ProjectionError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ProjectionError::Store(e) if e.is_unavailable())
    }
}

impl From<tokio_postgres::Error> for ProjectionError {
    fn from(err: tokio_postgres::Error) -> Self {
        ProjectionError::Store(err.into())
    }
}

impl From<deadpool_postgres::PoolError> for ProjectionError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        ProjectionError::Store(err.into())
    }
}
