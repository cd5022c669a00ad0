use std::collections::HashSet;

use serde_json::Value;
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use crate::{EventStore, Metadata, StoreError};

/// Longest stream id and event type accepted (the schema checks the same bounds).
pub const MAX_NAME_LEN: usize = 200;
/// Most events one append may carry.
pub const MAX_EVENTS_PER_APPEND: usize = 10_000;
/// How often an append retries after losing a race on its stream before giving up.
const MAX_RACE_RETRIES: usize = 100;

/// What the writer believes the stream's version to be. Versions count from 1; a stream
/// that does not exist is at version 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream must be exactly at this version (0 is the same as `NoStream`).
    Exact(u64),
}

impl ExpectedVersion {
    fn code(self) -> Result<i64, AppendError> {
        match self {
            ExpectedVersion::Any => Ok(-1),
            ExpectedVersion::StreamExists => Ok(-2),
            ExpectedVersion::NoStream => Ok(0),
            ExpectedVersion::Exact(n) => i64::try_from(n)
                .map_err(|_| AppendError::Invalid(format!("expected version {n} is too large"))),
        }
    }
}

/// An event to append. Its `event_id` makes retries idempotent: choose it once, before the
/// first attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub data: Value,
    pub metadata: Metadata,
}

impl NewEvent {
    pub fn new(event_type: impl Into<String>, data: Value, metadata: Metadata) -> Self {
        NewEvent {
            event_id: Uuid::new_v4(),
            event_type: event_type.into(),
            schema_version: 1,
            data,
            metadata,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The stream version of the first event of this append.
    pub first_version: u64,
    /// The stream's version after this append (the version of its last event when the
    /// append was not a retry).
    pub stream_version: u64,
    /// Every event had been stored before, by an earlier attempt: nothing was written.
    pub already_stored: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("stream {stream_id} is at version {current}, not {expected:?}")]
    WrongExpectedVersion {
        stream_id: String,
        expected: ExpectedVersion,
        current: u64,
    },
    #[error("event id {event_id} was already stored with other content or in another place")]
    EventIdReused { event_id: Uuid },
    #[error("invalid append: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for AppendError {
    fn from(err: tokio_postgres::Error) -> Self {
        AppendError::Store(err.into())
    }
}

impl From<deadpool_postgres::PoolError> for AppendError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        AppendError::Store(err.into())
    }
}

fn validate(stream_id: &str, events: &[NewEvent]) -> Result<(), AppendError> {
    let invalid = |m: String| Err(AppendError::Invalid(m));
    if stream_id.is_empty() || stream_id.chars().count() > MAX_NAME_LEN {
        return invalid(format!("a stream id has 1 to {MAX_NAME_LEN} characters"));
    }
    if events.is_empty() || events.len() > MAX_EVENTS_PER_APPEND {
        return invalid(format!("an append has 1 to {MAX_EVENTS_PER_APPEND} events"));
    }
    let mut ids = HashSet::with_capacity(events.len());
    for event in events {
        if event.event_type.is_empty() || event.event_type.chars().count() > MAX_NAME_LEN {
            return invalid(format!("an event type has 1 to {MAX_NAME_LEN} characters"));
        }
        if event.schema_version == 0 || i32::try_from(event.schema_version).is_err() {
            return invalid("a schema version is between 1 and 2^31-1".into());
        }
        if !ids.insert(event.event_id) {
            return invalid(format!("event id {} appears twice", event.event_id));
        }
    }
    Ok(())
}

const APPEND_SQL: &str = "SELECT outcome, current_version, first_version, detail \
     FROM append_to_stream($1, $2, $3, $4, $5, $6, $7)";

/// One call of `append_to_stream`; `Ok(None)` when a concurrent append to the same stream
/// won the race (the caller retries).
async fn call_append<C: GenericClient>(
    client: &C,
    stream_id: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<Option<AppendOutcome>, AppendError> {
    let expected_code = expected.code()?;
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let versions: Vec<i32> = events
        .iter()
        .map(|e| i32::try_from(e.schema_version).unwrap_or(i32::MAX))
        .collect();
    let data: Vec<&Value> = events.iter().map(|e| &e.data).collect();
    let metadata = events
        .iter()
        .map(|e| serde_json::to_value(&e.metadata))
        .collect::<Result<Vec<Value>, _>>()
        .map_err(|e| AppendError::Invalid(format!("metadata: {e}")))?;

    let statement = client.prepare_cached(APPEND_SQL).await?;
    let row = match client
        .query_one(
            &statement,
            &[&stream_id, &expected_code, &ids, &types, &versions, &data, &metadata],
        )
        .await
    {
        Ok(row) => row,
        Err(e) if e.code().map(|c| c.code()) == Some("23505") => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let outcome: &str = row.try_get("outcome")?;
    let current = row
        .try_get::<_, Option<i64>>("current_version")?
        .unwrap_or(0);
    let current = crate::model::to_u64(current, "stream version")?;
    let first = row
        .try_get::<_, Option<i64>>("first_version")?
        .map(|v| crate::model::to_u64(v, "stream version"))
        .transpose()?;
    match (outcome, first) {
        ("appended", Some(first)) | ("already_stored", Some(first)) => Ok(Some(AppendOutcome {
            first_version: first,
            stream_version: current,
            already_stored: outcome == "already_stored",
        })),
        ("wrong_expected_version", _) => Err(AppendError::WrongExpectedVersion {
            stream_id: stream_id.to_owned(),
            expected,
            current,
        }),
        ("event_id_reused", _) => {
            let detail: Option<String> = row.try_get("detail")?;
            let event_id = detail
                .as_deref()
                .and_then(|d| Uuid::parse_str(d).ok())
                .unwrap_or_default();
            Err(AppendError::EventIdReused { event_id })
        }
        (other, _) => Err(StoreError::Corrupt(format!("append_to_stream answered {other}")).into()),
    }
}

fn count_appended(outcome: &AppendOutcome) {
    if !outcome.already_stored {
        metrics::counter!("crier_events_appended_total")
            .increment(outcome.stream_version - outcome.first_version + 1);
    }
}

impl EventStore {
    /// Appends `events` to `stream_id` atomically if the stream is at `expected`.
    ///
    /// A mismatch appends nothing and returns [`AppendError::WrongExpectedVersion`] with the
    /// current version. If every event id was stored before (a retry), nothing is written
    /// and the outcome says `already_stored`.
    #[tracing::instrument(level = "debug", skip(self, events), fields(events = events.len()))]
    pub async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendOutcome, AppendError> {
        validate(stream_id, events)?;
        let client = self.pool.get().await?;
        for _ in 0..MAX_RACE_RETRIES {
            // Autocommit: the function runs as one transaction, in one round trip.
            if let Some(outcome) = call_append(&client, stream_id, expected, events).await? {
                count_appended(&outcome);
                self.notify_appended();
                return Ok(outcome);
            }
        }
        Err(StoreError::Unavailable(format!(
            "stream {stream_id} is too contended: gave up after {MAX_RACE_RETRIES} races"
        ))
        .into())
    }

    /// Appends inside the caller's transaction, so that other writes (read models,
    /// idempotency records) commit or roll back with the events. Call
    /// [`EventStore::notify_appended`] after committing.
    pub async fn append_in_transaction(
        &self,
        transaction: &mut deadpool_postgres::Transaction<'_>,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendOutcome, AppendError> {
        validate(stream_id, events)?;
        for _ in 0..MAX_RACE_RETRIES {
            // A lost race aborts the statement; the savepoint keeps the caller's
            // transaction usable for the retry.
            let savepoint = transaction.savepoint("crier_append").await?;
            match call_append(&savepoint, stream_id, expected, events).await {
                Ok(Some(outcome)) => {
                    savepoint.commit().await?;
                    count_appended(&outcome);
                    return Ok(outcome);
                }
                Ok(None) => savepoint.rollback().await?,
                Err(e) => {
                    savepoint.rollback().await?;
                    return Err(e);
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "stream {stream_id} is too contended: gave up after {MAX_RACE_RETRIES} races"
        ))
        .into())
    }

    /// Tells this process's sealer that events were committed, so it links them at once
    /// rather than at its next poll.
    pub fn notify_appended(&self) {
        self.shared.appended.notify_one();
    }
}
