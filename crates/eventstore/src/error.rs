use std::error::Error as _;

/// Failures of the store itself, as opposed to a refused append (see `AppendError`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached now; the operation can be retried later and the pool
    /// reconnects by itself.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database answers but its schema is older than this build expects.
    #[error("the database schema is not migrated to this version of crier")]
    SchemaOutdated,
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("stored history is malformed: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(tokio_postgres::Error),
    #[error("migration failed: {0}")]
    Migration(String),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// The SQLSTATE of a database error, if the server sent one.
    pub fn sql_state(&self) -> Option<&str> {
        match self {
            StoreError::Database(e) => e.code().map(|c| c.code()),
            _ => None,
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
            StoreError::Unavailable(err.to_string())
        } else {
            StoreError::Database(err)
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}
