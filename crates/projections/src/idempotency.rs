//! Idempotency records: the stored answer of a request sent with an `Idempotency-Key`,
//! written in the transaction of the write it answers (see [`crate::Publisher::execute_once`]).
//!
//! The table `api_idempotency` (migration V3) keys each answer by the API key that sent the
//! request and the `Idempotency-Key` it gave, so callers never collide, and keeps the request's
//! hash (the caller computes it from the request) beside the answer: the same key with another
//! request is refused rather than answered with this one's answer. The answer is recorded after
//! the write's events, in their transaction, under the primary key: a crash leaves both or
//! neither, and of two concurrent requests under one key the second to record fails and rolls
//! back its whole write, its next attempt finding the first one's answer.
//!
//! Not a read model (nothing in it derives from events, and a replay leaves it alone) and not
//! history: records older than [`RETENTION`] (24 hours) may be deleted ([`forget_older_than`]).

use std::time::Duration;

use deadpool_postgres::GenericClient;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::ProjectionError;

/// How long an answer is kept at least; a background task deletes older ones.
pub const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// A request that carried an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentRequest {
    /// The API key that sent it: each caller has its own key space.
    pub api_key_id: Uuid,
    pub key: String,
    /// Tells the same request from another one sent under the same key.
    pub request_sha256: String,
}

/// An answer as it was given, to be given again byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub location: Option<String>,
    pub etag: Option<String>,
    pub body: String,
}

/// What the records say about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recall {
    /// Never answered under this key.
    Fresh,
    /// Answered before: give this answer again.
    Answered(StoredAnswer),
    /// The key was used for another request.
    OtherRequest,
}

pub(crate) async fn recall<C: GenericClient>(
    client: &C,
    request: &IdempotentRequest,
) -> Result<Recall, ProjectionError> {
    let statement = client
        .prepare_cached(
            "SELECT request_sha256, status, location, etag, body FROM api_idempotency \
              WHERE api_key_id = $1 AND idempotency_key = $2",
        )
        .await?;
    let Some(row) = client
        .query_opt(&statement, &[&request.api_key_id, &request.key])
        .await?
    else {
        return Ok(Recall::Fresh);
    };
    if row.try_get::<_, &str>("request_sha256")? != request.request_sha256 {
        return Ok(Recall::OtherRequest);
    }
    let status = u16::try_from(row.try_get::<_, i16>("status")?)
        .map_err(|_| ProjectionError::Corrupt("negative stored status".into()))?;
    Ok(Recall::Answered(StoredAnswer {
        status,
        location: row.try_get("location")?,
        etag: row.try_get("etag")?,
        body: row.try_get("body")?,
    }))
}

/// Records an answer. No `ON CONFLICT`: a concurrent request that recorded an answer under
/// the same key first makes this fail, which aborts the transaction of the write it answers.
const REMEMBER_SQL: &str = "INSERT INTO api_idempotency \
       (api_key_id, idempotency_key, request_sha256, status, location, etag, body) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// An answer to record, its statement prepared: to send in the pipeline of its write.
pub(crate) struct Remember<'a> {
    statement: tokio_postgres::Statement,
    request: &'a IdempotentRequest,
    status: i16,
    answer: StoredAnswer,
}

pub(crate) async fn prepare_remember<'a, C: GenericClient>(
    client: &C,
    request: &'a IdempotentRequest,
    answer: StoredAnswer,
) -> Result<Remember<'a>, ProjectionError> {
    let status = i16::try_from(answer.status)
        .map_err(|_| ProjectionError::Corrupt(format!("status {}", answer.status)))?;
    Ok(Remember {
        statement: client.prepare_cached(REMEMBER_SQL).await?,
        request,
        status,
        answer,
    })
}

impl Remember<'_> {
    /// Records the answer (sent when first polled); `false` when a concurrent request
    /// recorded one under the same key first: its transaction is then aborted.
    pub(crate) async fn send<C: GenericClient>(&self, client: &C) -> Result<bool, ProjectionError> {
        let recorded = client
            .execute(
                &self.statement,
                &[
                    &self.request.api_key_id,
                    &self.request.key,
                    &self.request.request_sha256,
                    &self.status,
                    &self.answer.location,
                    &self.answer.etag,
                    &self.answer.body,
                ],
            )
            .await;
        match recorded {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_db_error().is_some_and(|db| {
                    db.code() == &SqlState::UNIQUE_VIOLATION
                        && db.constraint() == Some("api_idempotency_pkey")
                }) =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Deletes the answers older than `retention`; returns how many.
pub async fn forget_older_than<C: GenericClient>(
    client: &C,
    retention: Duration,
) -> Result<u64, ProjectionError> {
    let seconds = retention.as_secs_f64();
    Ok(client
        .execute(
            "DELETE FROM api_idempotency \
              WHERE created_at < now() - make_interval(secs => $1)",
            &[&seconds],
        )
        .await?)
}
