use std::error::Error as _;
use std::sync::Arc;

/// An error of another library, kept as the cause of one of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Failures of the store itself, as opposed to a refused append (see `AppendError`). Each
/// keeps the error it comes from as its `source`, so that a log line can print the whole
/// chain.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached now; the operation can be retried later and the pool
    /// reconnects by itself.
    #[error("the database is unavailable")]
    Unavailable(#[source] BoxError),
    /// The database answers but its schema is older than this build expects.
    #[error("the database schema is not migrated to this version of crier")]
    SchemaOutdated,
    #[error("invalid configuration: {what}")]
    Config {
        what: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("stored history is malformed: {what}")]
    Corrupt {
        what: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("the database refused a statement")]
    Database(#[source] tokio_postgres::Error),
    #[error("migration failed")]
    Migration(#[source] BoxError),
    /// One failure met by several operations at once (the writes committed together in one
    /// transaction): each is answered with the same cause.
    #[error(transparent)]
    Shared(Arc<StoreError>),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Shared(cause) => cause.is_unavailable(),
            _ => false,
        }
    }

    /// The database's schema is older than this build expects.
    pub fn is_schema_outdated(&self) -> bool {
        match self {
            StoreError::SchemaOutdated => true,
            StoreError::Shared(cause) => cause.is_schema_outdated(),
            _ => false,
        }
    }

    /// The SQLSTATE of a database error, if the server sent one.
    pub fn sql_state(&self) -> Option<&str> {
        match self {
            StoreError::Database(e) => e.code().map(|c| c.code()),
            StoreError::Shared(cause) => cause.sql_state(),
            _ => None,
        }
    }

    /// Stored history is not what this build can read.
    pub fn corrupt(what: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            what: what.into(),
            source: None,
        }
    }

    /// Stored history is not what this build can read, as `source` found.
    pub fn corrupt_by(what: impl Into<String>, source: impl Into<BoxError>) -> StoreError {
        StoreError::Corrupt {
            what: what.into(),
            source: Some(source.into()),
        }
    }

    pub fn config(what: impl Into<String>) -> StoreError {
        StoreError::Config {
            what: what.into(),
            source: None,
        }
    }

    pub fn config_by(what: impl Into<String>, source: impl Into<BoxError>) -> StoreError {
        StoreError::Config {
            what: what.into(),
            source: Some(source.into()),
        }
    }
}

/// Connection exceptions (class 08), insufficient resources such as too many connections
/// (class 53), an administrator or crash shutdown (57P01..57P03) and a closed or unreachable
/// socket all mean "try again later", not "your request is wrong".
fn is_unavailable(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    if let Some(state) = err.code() {
        let code = state.code();
        return code.starts_with("08")
            || code.starts_with("53")
            || matches!(code, "57P01" | "57P02" | "57P03");
    }
    // No SQLSTATE: unavailable only if the socket failed (refused, reset, timed out).
    err.source().is_some_and(|s| s.is::<std::io::Error>())
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        if is_unavailable(&err) {
            StoreError::Unavailable(Box::new(err))
        } else {
            StoreError::Database(err)
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(Box::new(other)),
        }
    }
}
