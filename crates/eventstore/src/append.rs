//! Appending to a stream: expected versions, idempotent retries, and appends inside the
//! caller's transaction.
//!
//! # One statement
//!
//! [`EventStore::append`] is one `INSERT` in autocommit. With an exact version N (or
//! `NoStream`, N = 0), the usual case, it inserts version N + 1 where version N exists
//! (`INSERT … SELECT … WHERE EXISTS <version N>`, one probe of the unique index), and the
//! unique index refuses N + 1 if the stream is past N. The versions follow from N, so the row
//! count is the whole answer.
//!
//! The probe is skipped (a bare `INSERT … VALUES`, as raw PostgreSQL would write it) for N = 0
//! and when this process knows that version N exists: versions are never removed, so "N
//! exists" stays true once it was. [`KnownVersions`] keeps that per stream: the versions this
//! process's autocommit appends, conflicts and stream reads saw committed, never what an
//! [`EventStore::append_in_transaction`] wrote (its transaction may still roll back). An
//! entry missing, evicted or behind the stream costs only the probe. One ahead of the database
//! is impossible short of restoring the database under running processes (restart them after
//! a restore, as their publishers' kept states require anyway).
//!
//! With `Any` or `StreamExists` the statement reads the stream's highest version from the
//! unique index itself and returns the versions it took.
//!
//! # Refusals and retries
//!
//! If the insert writes nothing, or a unique index refuses it, a second query says why:
//!
//! * every event id is stored already, in this stream, in this order, with the same content
//!   hash (type, schema version, data and metadata): an idempotent retry, a success with
//!   [`AppendOutcome::already_stored`], nothing written;
//! * some ids are stored elsewhere or with other content: [`AppendError::EventIdReused`];
//! * none is stored and the stream is not at the expected version:
//!   [`AppendError::WrongExpectedVersion`], with the current version;
//! * none is stored and the expectation still holds (under `Any` or `StreamExists`, a
//!   concurrent append committed the same version first): tried again, at most
//!   [`MAX_RACE_RETRIES`] times before [`AppendError::Contended`].
//!
//! Two appends can never both take one stream version: the unique index decides, and the loser
//! waits for the winner's commit, then fails.
//!
//! # Inside the caller's transaction
//!
//! [`EventStore::append_in_transaction`] is for writes that must commit or roll back with the
//! events. Each attempt runs under a savepoint, so a lost race leaves the transaction usable.
//! It needs a READ COMMITTED transaction (a REPEATABLE READ snapshot cannot see the winner of a
//! race, and ends in `Contended`), and it must be the transaction's first write: the log orders
//! transactions by id, and a transaction that took its id (by writing) before reading the
//! stream's version could be sealed ahead of the version it builds on. It is refused
//! otherwise, so a stream's events always take positions in stream order, which the projection
//! builder and `as_of` by position rely on.
//!
//! The pipelined append ([`EventStore::prepare_pipelined_append`], then
//! [`PipelinedAppend::send`]) is for a caller that sends its whole transaction at once, as the
//! projections' publisher does (see [`crate::pipeline`]): every statement is prepared first,
//! then `BEGIN`, the append and the caller's writes go out together, and the server runs them
//! in order. Its statement must therefore fail rather than insert nothing. The new version is
//! `CASE WHEN <version N exists> THEN N + 1 END`, so a stream below N is a not-null violation,
//! and one past N, or taken concurrently, a unique violation: either aborts the transaction
//! ([`AppendError::StreamMoved`]), and the caller's later statements with it. It does not
//! recognise retries: the caller chooses fresh event ids for every attempt. Several pipelined
//! appends, to different streams, may share a transaction, provided every version they build
//! on was committed before the transaction began (read, or known, before `BEGIN`): each was
//! then written by a transaction that took its id before this one, so stream order holds
//! although only the first append is the transaction's first write.
//!
//! # Checks, hashes, durability
//!
//! Before any SQL, the store validates: stream ids and event types of 1 to [`MAX_NAME_LEN`]
//! characters, 1 to [`MAX_EVENTS_PER_APPEND`] events, schema versions from 1, distinct event
//! ids, and integers in data within ±(2^53 − 1) (RFC 7493 I-JSON), because the chain's RFC 8785
//! form writes numbers as doubles and two larger integers could share one. A data exception
//! from the server, such as a NUL character (which jsonb cannot store), is invalid input too.
//! The writer computes each event's content hash ([`crate::chain::content_hash`]) so that the
//! sealer links events without decoding their JSON.
//!
//! Appends always commit synchronously, whatever the database default: the pool's sessions
//! set `synchronous_commit = on`, and the in-transaction and pipelined appends set it for the
//! caller's transaction. The sealer's asynchronous commit relies on it (see [`crate::sealer`]).

use std::collections::HashSet;

use deadpool_postgres::GenericClient;
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
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
    /// Lost the race for the stream's next version too many times in a row (or the caller's
    /// transaction is not READ COMMITTED, so it cannot see the winners).
    #[error("stream {stream_id} is too contended: gave up after {MAX_RACE_RETRIES} lost races")]
    Contended { stream_id: String },
    /// A pipelined append found its stream past the expected version (another writer got
    /// there first): it wrote nothing, and the caller's transaction is aborted.
    #[error("stream {stream_id} is no longer at version {expected}")]
    StreamMoved { stream_id: String, expected: u64 },
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

/// The largest integer every JSON reader (and the chain's RFC 8785 form, which writes
/// numbers as IEEE doubles) holds exactly: RFC 7493 (I-JSON).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Refuses integers beyond ±(2^53 - 1): the hash chain covers numbers as doubles, so two
/// stored integers that share a double could be swapped unnoticed.
fn check_numbers(data: &Value) -> Result<(), AppendError> {
    let mut pending = vec![data];
    while let Some(value) = pending.pop() {
        match value {
            Value::Number(n) => {
                let safe = match (n.as_u64(), n.as_i64()) {
                    (Some(u), _) => u <= MAX_SAFE_INTEGER,
                    (None, Some(i)) => i.unsigned_abs() <= MAX_SAFE_INTEGER,
                    (None, None) => true, // a double: stored and read back exactly
                };
                if !safe {
                    return Err(AppendError::Invalid(format!(
                        "the integer {n} is beyond ±(2^53 - 1); send it as a string"
                    )));
                }
            }
            Value::Array(items) => pending.extend(items),
            Value::Object(members) => pending.extend(members.values()),
            Value::Null | Value::Bool(_) | Value::String(_) => {}
        }
    }
    Ok(())
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
        check_numbers(&event.data)?;
    }
    Ok(())
}

/// One statement checks the expected version (any, or a stream that exists) and inserts.
/// It inserts nothing when the version does not match; a concurrent append that committed
/// the same stream version (or a retry's event id) first makes it fail with a unique
/// violation. Either way [`classify`] then says why.
const INSERT_ONE_SQL: &str = "WITH current AS ( \
        SELECT coalesce(max(stream_version), 0) AS version FROM events WHERE stream_id = $1) \
     INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, data, metadata, content_hash, authenticator) \
     SELECT $1, current.version + 1, $3, $4, $5, $6, $7, $8, $9 FROM current \
      WHERE $2::bigint = -1 OR ($2::bigint = -2 AND current.version > 0) OR current.version = $2::bigint \
     RETURNING stream_version";

const INSERT_MANY_SQL: &str = "WITH current AS ( \
        SELECT coalesce(max(stream_version), 0) AS version FROM events WHERE stream_id = $1) \
     INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, data, metadata, content_hash, authenticator) \
     SELECT $1, current.version + i.ord, i.event_id, i.event_type, i.schema_version, i.data, i.metadata, i.content_hash, i.authenticator \
       FROM current, unnest($3::uuid[], $4::text[], $5::int[], $6::jsonb[], $7::jsonb[], $8::bytea[], $9::bytea[]) \
            WITH ORDINALITY AS i(event_id, event_type, schema_version, data, metadata, content_hash, authenticator, ord) \
      WHERE $2::bigint = -1 OR ($2::bigint = -2 AND current.version > 0) OR current.version = $2::bigint \
      ORDER BY i.ord \
     RETURNING stream_version";

/// The path for an exact expected version N (`NoStream` is 0), the usual case: a command
/// decided on a state it read. Version N must exist (unless N is 0) and N + 1 must not,
/// which the unique index decides. Probing one index entry costs less than finding the
/// stream's highest version (pgbench, 8 clients, against a bare INSERT: 0.88 instead of
/// 0.85; docs/PERFORMANCE.md). The versions are known, so nothing is returned.
const EXACT_ONE_SQL: &str = "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, data, metadata, content_hash, authenticator) \
     SELECT $1, $2::bigint + 1, $3, $4, $5, $6, $7, $8, $9 \
      WHERE $2::bigint = 0 OR EXISTS (SELECT 1 FROM events \
                                       WHERE stream_id = $1 AND stream_version = $2::bigint)";

const EXACT_MANY_SQL: &str = "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, data, metadata, content_hash, authenticator) \
     SELECT $1, $2::bigint + i.ord, i.event_id, i.event_type, i.schema_version, i.data, i.metadata, i.content_hash, i.authenticator \
       FROM unnest($3::uuid[], $4::text[], $5::int[], $6::jsonb[], $7::jsonb[], $8::bytea[], $9::bytea[]) \
            WITH ORDINALITY AS i(event_id, event_type, schema_version, data, metadata, content_hash, authenticator, ord) \
      WHERE $2::bigint = 0 OR EXISTS (SELECT 1 FROM events \
                                       WHERE stream_id = $1 AND stream_version = $2::bigint) \
      ORDER BY i.ord";

/// The path for an exact expected version N that is known to exist: versions are never
/// removed, so "N exists" stays true once it was, and the unique index alone decides
/// whether N + 1 is free (a stream past N refuses it). No probe: the bare insert, as raw
/// PostgreSQL would do it. Also the path for `NoStream`, where there is nothing to probe.
const KNOWN_ONE_SQL: &str = "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, data, metadata, content_hash, authenticator) \
     VALUES ($1, $2::bigint + 1, $3, $4, $5, $6, $7, $8, $9)";

const KNOWN_MANY_SQL: &str = "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, data, metadata, content_hash, authenticator) \
     SELECT $1, $2::bigint + i.ord, i.event_id, i.event_type, i.schema_version, i.data, i.metadata, i.content_hash, i.authenticator \
       FROM unnest($3::uuid[], $4::text[], $5::int[], $6::jsonb[], $7::jsonb[], $8::bytea[], $9::bytea[]) \
            WITH ORDINALITY AS i(event_id, event_type, schema_version, data, metadata, content_hash, authenticator, ord) \
      ORDER BY i.ord";

/// The pipelined form of [`EXACT_ONE_SQL`]: the statement must fail, never insert nothing,
/// because the caller's next statements are already on their way. A stream below the
/// expected version makes the new version NULL (a not-null violation); a stream past it, or
/// a concurrent append that took the version first, makes it a unique violation. It also
/// makes the transaction commit synchronously (see [`EventStore::append_in_transaction`]),
/// so that a pipeline needs no statement of its own for that.
const PIPELINED_ONE_SQL: &str = "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, data, metadata, content_hash, authenticator) \
     SELECT $1, CASE WHEN $2::bigint = 0 OR EXISTS (SELECT 1 FROM events \
                         WHERE stream_id = $1 AND stream_version = $2::bigint) \
                     THEN $2::bigint + 1 END, $3, $4, $5, $6, $7, $8, $9 \
       FROM (SELECT set_config('synchronous_commit', 'on', true)) AS synchronous \
     RETURNING stream_version";

const PIPELINED_MANY_SQL: &str = "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, data, metadata, content_hash, authenticator) \
     SELECT $1, CASE WHEN $2::bigint = 0 OR EXISTS (SELECT 1 FROM events \
                         WHERE stream_id = $1 AND stream_version = $2::bigint) \
                     THEN $2::bigint + i.ord END, i.event_id, i.event_type, \
            i.schema_version, i.data, i.metadata, i.content_hash, i.authenticator \
       FROM (SELECT set_config('synchronous_commit', 'on', true)) AS synchronous, \
            unnest($3::uuid[], $4::text[], $5::int[], $6::jsonb[], $7::jsonb[], $8::bytea[], $9::bytea[]) \
            WITH ORDINALITY AS i(event_id, event_type, schema_version, data, metadata, content_hash, authenticator, ord) \
      ORDER BY i.ord \
     RETURNING stream_version";

/// Which of the events' ids are stored already, where, and with the same content (type,
/// schema version, data and metadata, all covered by the content hash)?
const STORED_SQL: &str = "SELECT i.ord, e.stream_id, e.stream_version, \
            e.content_hash = i.content_hash AS same_content \
       FROM unnest($1::uuid[], $2::bytea[]) WITH ORDINALITY AS i(event_id, content_hash, ord) \
       JOIN events e ON e.event_id = i.event_id \
      ORDER BY i.ord";

const CURRENT_VERSION_SQL: &str =
    "SELECT coalesce(max(stream_version), 0) AS version FROM events WHERE stream_id = $1";

enum Attempt {
    Appended(AppendOutcome),
    /// The version did not match, or a unique index refused the insert: see [`classify`].
    Refused,
}

fn schema_version_param(event: &NewEvent) -> i32 {
    // `validate` has checked that it fits.
    i32::try_from(event.schema_version).unwrap_or(i32::MAX)
}

/// What the statements send besides the events themselves: metadata as JSON, the content
/// hash of each event, and its authenticator when the store has a history key.
struct Prepared {
    metadata: Vec<Value>,
    content_hashes: Vec<Vec<u8>>,
    authenticators: Vec<Option<Vec<u8>>>,
}

fn prepare(
    stream_id: &str,
    events: &[NewEvent],
    keys: Option<&crate::HistoryKeys>,
) -> Result<Prepared, AppendError> {
    let metadata = events
        .iter()
        .map(|e| serde_json::to_value(&e.metadata))
        .collect::<Result<Vec<Value>, _>>()
        .map_err(|e| AppendError::Invalid(format!("metadata: {e}")))?;
    let content_hashes = events
        .iter()
        .zip(&metadata)
        .map(|(e, m)| {
            crate::chain::content_hash(&e.event_id, &e.event_type, e.schema_version, &e.data, m)
        })
        .collect::<Vec<_>>();
    let authenticators = content_hashes
        .iter()
        .map(|hash| keys.map(|keys| keys.current().authenticate(stream_id, hash)))
        .collect();
    Ok(Prepared {
        metadata,
        content_hashes: content_hashes.iter().map(|h| h.0.to_vec()).collect(),
        authenticators,
    })
}

/// The parameters of the insert statements after `$1` (stream id) and `$2` (expected
/// version): one event's columns, or arrays of every event's.
enum InsertParams<'a> {
    One {
        event: &'a NewEvent,
        schema_version: i32,
        metadata: &'a Value,
        content_hash: &'a Vec<u8>,
        authenticator: &'a Option<Vec<u8>>,
    },
    Many {
        ids: Vec<Uuid>,
        types: Vec<&'a str>,
        schema_versions: Vec<i32>,
        data: Vec<&'a Value>,
        metadata: &'a Vec<Value>,
        content_hashes: &'a Vec<Vec<u8>>,
        authenticators: &'a Vec<Option<Vec<u8>>>,
    },
}

impl<'a> InsertParams<'a> {
    fn new(events: &'a [NewEvent], prepared: &'a Prepared) -> Self {
        match events {
            [event] => InsertParams::One {
                event,
                schema_version: schema_version_param(event),
                metadata: &prepared.metadata[0],
                content_hash: &prepared.content_hashes[0],
                authenticator: &prepared.authenticators[0],
            },
            _ => InsertParams::Many {
                ids: events.iter().map(|e| e.event_id).collect(),
                types: events.iter().map(|e| e.event_type.as_str()).collect(),
                schema_versions: events.iter().map(schema_version_param).collect(),
                data: events.iter().map(|e| &e.data).collect(),
                metadata: &prepared.metadata,
                content_hashes: &prepared.content_hashes,
                authenticators: &prepared.authenticators,
            },
        }
    }

    /// Which of two statements (one event, or many) these parameters are for.
    fn pick(&self, one: &'static str, many: &'static str) -> &'static str {
        match self {
            InsertParams::One { .. } => one,
            InsertParams::Many { .. } => many,
        }
    }

    fn with<'p>(
        &'p self,
        stream_id: &'p (dyn ToSql + Sync),
        expected: &'p (dyn ToSql + Sync),
    ) -> [&'p (dyn ToSql + Sync); 9] {
        match self {
            InsertParams::One {
                event,
                schema_version,
                metadata,
                content_hash,
                authenticator,
            } => [
                stream_id,
                expected,
                &event.event_id,
                &event.event_type,
                schema_version,
                &event.data,
                metadata,
                content_hash,
                authenticator,
            ],
            InsertParams::Many {
                ids,
                types,
                schema_versions,
                data,
                metadata,
                content_hashes,
                authenticators,
            } => [
                stream_id,
                expected,
                ids,
                types,
                schema_versions,
                data,
                metadata,
                content_hashes,
                authenticators,
            ],
        }
    }
}

/// A data exception (class 22), such as a NUL character that jsonb cannot store, is the
/// caller's input, not the store failing.
fn data_exception(e: &tokio_postgres::Error) -> Option<AppendError> {
    if !e.code().is_some_and(|c| c.code().starts_with("22")) {
        return None;
    }
    let message = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_owned());
    Some(AppendError::Invalid(message))
}

/// One insert attempt. `version_known`: the caller knows that the expected version N exists
/// (see [`KNOWN_ONE_SQL`]), so the statement need not probe for it.
async fn try_insert<C: GenericClient>(
    client: &C,
    stream_id: &str,
    expected: ExpectedVersion,
    version_known: bool,
    events: &[NewEvent],
    prepared: &Prepared,
) -> Result<Attempt, AppendError> {
    let expected_code = expected.code()?;
    let insert = InsertParams::new(events, prepared);
    let exact = match expected {
        ExpectedVersion::NoStream => Some(0),
        ExpectedVersion::Exact(n) => Some(n),
        ExpectedVersion::Any | ExpectedVersion::StreamExists => None,
    };
    let refused = |e: tokio_postgres::Error| {
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            Ok(Attempt::Refused)
        } else {
            Err(data_exception(&e).unwrap_or_else(|| e.into()))
        }
    };
    let params = insert.with(&stream_id, &expected_code);

    if let Some(n) = exact {
        // The versions follow from N: the row count alone says whether the insert happened.
        let sql = if n == 0 || version_known {
            insert.pick(KNOWN_ONE_SQL, KNOWN_MANY_SQL)
        } else {
            insert.pick(EXACT_ONE_SQL, EXACT_MANY_SQL)
        };
        let statement = client.prepare_cached(sql).await?;
        let inserted = match client.execute(&statement, &params).await {
            Ok(inserted) => inserted,
            Err(e) => return refused(e),
        };
        if inserted != events.len() as u64 {
            return Ok(Attempt::Refused);
        }
        return Ok(Attempt::Appended(AppendOutcome {
            first_version: n + 1,
            stream_version: n + events.len() as u64,
            already_stored: false,
        }));
    }

    let statement = client
        .prepare_cached(insert.pick(INSERT_ONE_SQL, INSERT_MANY_SQL))
        .await?;
    let rows = match client.query(&statement, &params).await {
        Ok(rows) => rows,
        Err(e) => return refused(e),
    };
    if rows.len() != events.len() {
        return Ok(Attempt::Refused);
    }
    let mut last = 0;
    for row in &rows {
        last = last.max(crate::model::to_u64(
            row.try_get("stream_version")?,
            "stream version",
        )?);
    }
    Ok(Attempt::Appended(AppendOutcome {
        first_version: last + 1 - events.len() as u64,
        stream_version: last,
        already_stored: false,
    }))
}

/// An append checked, hashed and prepared ahead, to be sent with the caller's other
/// statements in one pipeline: see [`EventStore::prepare_pipelined_append`].
pub struct PipelinedAppend<'a> {
    stream_id: &'a str,
    expected: u64,
    expected_param: i64,
    events: &'a [NewEvent],
    prepared: Prepared,
    statement: tokio_postgres::Statement,
}

impl PipelinedAppend<'_> {
    /// Sends the append. Its statement is written to the connection when this future is
    /// first polled, before it waits for anything: polled in order with the caller's
    /// other statements (`futures_util::join!`), it runs in that order, in the caller's
    /// transaction, which must not have written before it (see
    /// [`EventStore::append_in_transaction`]).
    ///
    /// Unlike the other appends, a mismatch is an error that aborts the transaction (the
    /// statements behind it then fail too), and retries of stored event ids are not
    /// recognised: choose fresh ids for every attempt.
    pub async fn send<C: GenericClient>(&self, client: &C) -> Result<AppendOutcome, AppendError> {
        let params = InsertParams::new(self.events, &self.prepared);
        let rows = client
            .query(
                &self.statement,
                &params.with(&self.stream_id, &self.expected_param),
            )
            .await
            .map_err(|e| self.refusal(e))?;
        if rows.len() != self.events.len() {
            return Err(StoreError::corrupt(format!(
                "a pipelined append of {} events inserted {}",
                self.events.len(),
                rows.len()
            ))
            .into());
        }
        let outcome = AppendOutcome {
            first_version: self.expected + 1,
            stream_version: self.expected + self.events.len() as u64,
            already_stored: false,
        };
        count_appended(&outcome);
        Ok(outcome)
    }

    fn refusal(&self, e: tokio_postgres::Error) -> AppendError {
        let moved = || AppendError::StreamMoved {
            stream_id: self.stream_id.to_owned(),
            expected: self.expected,
        };
        let Some(db) = e.as_db_error() else {
            return e.into();
        };
        match (db.code(), db.constraint(), db.column()) {
            (&SqlState::NOT_NULL_VIOLATION, _, Some("stream_version")) => moved(),
            (&SqlState::UNIQUE_VIOLATION, Some("events_stream_version_unique"), _) => moved(),
            (&SqlState::UNIQUE_VIOLATION, Some("events_event_id_unique"), _) => {
                AppendError::Invalid(
                    "an event id of this append is stored already (a pipelined append does \
                     not recognise retries)"
                        .into(),
                )
            }
            _ => data_exception(&e).unwrap_or_else(|| e.into()),
        }
    }
}

/// Why did the insert write nothing? `Ok(None)`: it lost a race that a retry can win.
async fn classify<C: GenericClient>(
    client: &C,
    stream_id: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
    prepared: &Prepared,
) -> Result<Option<AppendOutcome>, AppendError> {
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let stored = client
        .query(STORED_SQL, &[&ids, &prepared.content_hashes])
        .await?;
    let row = client.query_one(CURRENT_VERSION_SQL, &[&stream_id]).await?;
    let current = crate::model::to_u64(row.try_get("version")?, "stream version")?;

    if stored.is_empty() {
        let matches = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::StreamExists => current > 0,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::Exact(n) => current == n,
        };
        return if matches {
            Ok(None)
        } else {
            Err(AppendError::WrongExpectedVersion {
                stream_id: stream_id.to_owned(),
                expected,
                current,
            })
        };
    }

    // A retry: every event stored, in this stream, in this order, with the same content.
    let mut retry = stored.len() == events.len();
    let mut base: Option<u64> = None;
    let mut first_mismatch: Option<Uuid> = None;
    let mut first_stored: Option<Uuid> = None;
    for row in &stored {
        let ord: i64 = row.try_get("ord")?;
        let index = usize::try_from(ord - 1)
            .ok()
            .filter(|i| *i < events.len())
            .ok_or_else(|| StoreError::corrupt(format!("ordinality {ord} out of range")))?;
        let event_id = events[index].event_id;
        first_stored.get_or_insert(event_id);
        let version = crate::model::to_u64(row.try_get("stream_version")?, "stream version")?;
        let in_place = row.try_get::<_, &str>("stream_id")? == stream_id
            && *base.get_or_insert(version.wrapping_sub(index as u64)) + index as u64 == version;
        if !(row.try_get::<_, bool>("same_content")? && in_place) {
            retry = false;
            first_mismatch.get_or_insert(event_id);
        }
    }
    match (retry, base) {
        (true, Some(base)) => Ok(Some(AppendOutcome {
            first_version: base,
            stream_version: current,
            already_stored: true,
        })),
        // Name the first id stored with other content or elsewhere, or else (a batch mixing
        // stored and new events) the first stored one.
        _ => match first_mismatch.or(first_stored) {
            Some(event_id) => Err(AppendError::EventIdReused { event_id }),
            None => Err(StoreError::corrupt("classified an empty set of stored events").into()),
        },
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
        let prepared = prepare(stream_id, events, self.config().history_keys.as_ref())?;
        let version_known = match expected {
            ExpectedVersion::Exact(n) => self.shared.known_versions.knows(stream_id, n),
            _ => false,
        };
        let client = self.pool.get().await?;
        for _ in 0..MAX_RACE_RETRIES {
            // Autocommit: the insert is its own transaction, one round trip, and what it
            // answers is committed (so its versions are known to exist from then on).
            let attempt = try_insert(
                &client,
                stream_id,
                expected,
                version_known,
                events,
                &prepared,
            )
            .await?;
            let outcome = match attempt {
                Attempt::Appended(outcome) => outcome,
                Attempt::Refused => {
                    match classify(&client, stream_id, expected, events, &prepared).await {
                        Ok(Some(outcome)) => outcome,
                        Ok(None) => continue,
                        Err(e) => {
                            if let AppendError::WrongExpectedVersion { current, .. } = e {
                                self.shared.known_versions.note(stream_id, current);
                            }
                            return Err(e);
                        }
                    }
                }
            };
            self.shared
                .known_versions
                .note(stream_id, outcome.stream_version);
            count_appended(&outcome);
            self.notify_appended();
            return Ok(outcome);
        }
        Err(AppendError::Contended {
            stream_id: stream_id.to_owned(),
        })
    }

    /// Appends inside the caller's transaction, so that other writes (read models,
    /// idempotency records) commit or roll back with the events. The append must be the
    /// transaction's first write (reads before it are fine); other writes follow it. Call
    /// [`EventStore::notify_appended`] after committing.
    pub async fn append_in_transaction(
        &self,
        transaction: &mut deadpool_postgres::Transaction<'_>,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendOutcome, AppendError> {
        validate(stream_id, events)?;
        let prepared = prepare(stream_id, events, self.config().history_keys.as_ref())?;
        // The sealer's asynchronous commit is safe only because appends commit synchronously
        // (see sealer.rs); hold to that whatever the session or database default says.
        // And the transaction must not have written yet: the log orders transactions by id,
        // and one that took its id before reading the stream's version could be sealed
        // ahead of the version it builds on (a stream's events would then have positions
        // out of stream order).
        let statement = transaction
            .prepare_cached(
                "SELECT set_config('synchronous_commit', 'on', true), \
                        pg_current_xact_id_if_assigned() IS NULL AS fresh",
            )
            .await?;
        let row = transaction.query_one(&statement, &[]).await?;
        if !row.try_get::<_, bool>("fresh")? {
            return Err(AppendError::Invalid(
                "append_in_transaction must come before any other write of the transaction".into(),
            ));
        }
        for _ in 0..MAX_RACE_RETRIES {
            // A lost race aborts the statement; the savepoint keeps the caller's
            // transaction usable for the retry.
            let savepoint = transaction.savepoint("crier_append").await?;
            // Not `version_known`: what this process knows is only what committed.
            let attempt =
                try_insert(&savepoint, stream_id, expected, false, events, &prepared).await;
            match attempt {
                Ok(Attempt::Appended(outcome)) => {
                    savepoint.commit().await?;
                    count_appended(&outcome);
                    return Ok(outcome);
                }
                Ok(Attempt::Refused) => savepoint.rollback().await?,
                Err(e) => {
                    savepoint.rollback().await?;
                    return Err(e);
                }
            }
            if let Some(outcome) =
                classify(&*transaction, stream_id, expected, events, &prepared).await?
            {
                count_appended(&outcome);
                return Ok(outcome);
            }
        }
        Err(AppendError::Contended {
            stream_id: stream_id.to_owned(),
        })
    }

    /// Checks, hashes and prepares an append of `events` to `stream_id`, which must be at
    /// exactly version `expected`, for [`PipelinedAppend::send`]: the fast path of a caller
    /// that writes other rows in the append's transaction and wants all of them sent in one
    /// round trip. Call [`EventStore::notify_appended`] after committing.
    pub async fn prepare_pipelined_append<'a, C: GenericClient>(
        &self,
        client: &C,
        stream_id: &'a str,
        expected: u64,
        events: &'a [NewEvent],
    ) -> Result<PipelinedAppend<'a>, AppendError> {
        validate(stream_id, events)?;
        let expected_param = ExpectedVersion::Exact(expected).code()?;
        let prepared = prepare(stream_id, events, self.config().history_keys.as_ref())?;
        let sql = InsertParams::new(events, &prepared).pick(PIPELINED_ONE_SQL, PIPELINED_MANY_SQL);
        let statement = client.prepare_cached(sql).await?;
        Ok(PipelinedAppend {
            stream_id,
            expected,
            expected_param,
            events,
            prepared,
            statement,
        })
    }

    /// Tells this process's sealer that events were committed, so it links them at once
    /// rather than at its next poll.
    pub fn notify_appended(&self) {
        self.shared.appended.notify_one();
    }
}

/// Stream versions this process has seen committed, so that an append at a version known to
/// exist needs no probe for it (see [`KNOWN_ONE_SQL`]). Every entry is a fact that stays
/// true, since versions are never removed; an entry that is missing, evicted or lower than
/// the stream's version costs only the probe. Bounded: one entry per stream, the least
/// used evicted first.
pub(crate) struct KnownVersions(quick_cache::sync::Cache<String, u64>);

impl KnownVersions {
    /// About 100 bytes per stream besides its id.
    const STREAMS: usize = 100_000;

    pub(crate) fn new() -> Self {
        KnownVersions(quick_cache::sync::Cache::new(Self::STREAMS))
    }

    fn knows(&self, stream_id: &str, version: u64) -> bool {
        self.0.get(stream_id).is_some_and(|known| known >= version)
    }

    /// Records that `version` of `stream_id` was committed. Concurrent notes may leave the
    /// lower of two versions: still true, only less useful.
    pub(crate) fn note(&self, stream_id: &str, version: u64) {
        if version > 0 && !self.knows(stream_id, version) {
            self.0.insert(stream_id.to_owned(), version);
        }
    }
}
