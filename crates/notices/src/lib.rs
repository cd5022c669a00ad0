//! What subscribers receive, whatever carries it.
//!
//! * [`notice`]: which events of the log are notices (incident, maintenance and service
//!   events; never API key or webhook administration), the filter a subscriber gives, and
//!   a notice rendered as a CloudEvent for one kind of viewer, made once per viewer however
//!   many subscribers share it.
//! * [`representation`]: the JSON representations of incidents, maintenances and services
//!   that notices carry and the API serves, with their OpenAPI schemas.
//! * [`hub`]: the process's live follower of the log and the broadcast ring that hands
//!   notices to connected Server-Sent Events subscribers, with catch-up from the log.
//!
//! The crate knows nothing of HTTP servers: it produces bytes (a CloudEvent, an SSE
//! message) and the routes in `api` and the channels in `delivery` carry them.

pub mod direct;
pub mod hub;
pub mod notice;
pub mod representation;

pub use direct::{LiveSocket, LiveWrite};
pub use hub::{NoticeHub, StreamKey, Subscriber};
pub use notice::{Notice, NoticeFilter, Rendered, Site};

use projections::ProjectionError;

/// Why a notice could not be read or rendered.
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    #[error("cannot read the notice's resource")]
    Read(#[from] ProjectionError),
    #[error("cannot render a notice")]
    Render(#[from] serde_json::Error),
    #[error("the process is stopping")]
    Stopping,
}

impl NoticeError {
    /// The database is away: worth retrying as it is.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, NoticeError::Read(e) if e.is_unavailable())
    }
}

impl From<eventstore::StoreError> for NoticeError {
    fn from(err: eventstore::StoreError) -> Self {
        NoticeError::Read(err.into())
    }
}

impl From<deadpool_postgres::PoolError> for NoticeError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        NoticeError::Read(err.into())
    }
}

impl From<tokio_postgres::Error> for NoticeError {
    fn from(err: tokio_postgres::Error) -> Self {
        NoticeError::Read(err.into())
    }
}
