//! Notices taken out of the process to someone else: today webhooks (Standard Webhooks,
//! CloudEvents bodies). Every channel follows one design:
//!
//! 1. **From the durable log, never after commit.** The [`outbox`] follows the global log
//!    from its own checkpoint (subscription `webhooks` in `subscription_checkpoints`). In one
//!    transaction per batch it locks the checkpoint row (processes take turns), keeps the
//!    channel's endpoints in step with the registration events it passes (so a notice at
//!    position p goes exactly to the endpoints registered before p and not ended before p),
//!    writes one delivery per (endpoint, notice) with its body rendered once, and moves the
//!    checkpoint. A crash loses and doubles nothing.
//! 2. **Leases, so processes share the work.** The [`sender`] claims due deliveries with a
//!    lease (`leased_until`, `FOR UPDATE SKIP LOCKED`) committed before it sends, so no two
//!    processes send one delivery at once and a dead sender's deliveries are sent again when
//!    its lease runs out: delivery is at least once, and a restart or `kill -9` repeats at
//!    most the attempts that were in flight or not yet recorded. A webhook delivery due at
//!    once is written already leased by the fan-out and handed to its own process's sender
//!    after the commit, so its first attempt needs no claim; the lease means the same.
//! 3. **In order per incident.** A delivery written behind a pending one of the same
//!    resource stream to the same endpoint waits (`next_attempt_at` infinity) until the
//!    recorder ends that one and releases it. The outbox share-locks those pending ones in
//!    the order the recorder locks them, so a release never misses a delivery being
//!    written.
//! 4. **Bounded and fair.** A claim reads each active endpoint's soonest due deliveries
//!    from an index, never the backlog, at most `per_endpoint` in flight per endpoint and
//!    `concurrency` per process, so a slow or dead endpoint never delays the others, and
//!    each attempt has its own timeout. A claim reads at most twice each endpoint's fair
//!    share of the free slots (shared among the endpoints with a delivery due), so that few
//!    free slots are spread over the endpoints with work. Nothing here runs on a request's
//!    path.
//! 5. **Retries.** A failed attempt is retried after an equal-jitter exponential backoff
//!    (`retry_base` doubled per attempt, at most `retry_max`, the upper half random), or
//!    after the endpoint's `Retry-After` when that is later, until `max_attempts`. 410 Gone
//!    disables a webhook (event `webhook.disabled`, actor `system`).
//! 6. **Every attempt logged.** One recorder task writes each attempt (`webhook_attempts`,
//!    append-only) and the delivery's new state in batches; the [`log`] reads them back. A
//!    send frees its slot once the recorder has room for its record (a bounded number wait
//!    to be written), so the next send need not wait for the database, and the delivery
//!    keeps its lease until its record is written, so no claim takes it meanwhile.
//!
//! The delivery tables (`webhook_endpoints`, `webhook_deliveries`, `webhook_bodies`,
//! `webhook_attempts`, `webhook_secrets`) are not read models and `crier replay` leaves them
//! alone: they record what was sent to whom and when, which no fold of the history can
//! recompute (an attempt's outcome is the endpoint's, not an event), and rebuilding them
//! would send every notice again. The endpoints' registrations themselves are events and
//! their read model, `rm_webhooks`, is rebuilt like any other. Secrets live in
//! `webhook_secrets`, written in the registration's own transaction, never in an event.
//!
//! The crate knows nothing of the HTTP server; its errors are its own ([`DeliveryError`]).

pub mod chat;
pub mod email;
pub mod log;
pub mod outbox;
pub mod sender;
pub mod webhook;

pub use sender::Sender;
pub use webhook::{new_secret, target::TargetPolicy, WebhookSettings, SECRET_PREFIX};

use eventstore::pipeline::OpenTransaction;
use notices::NoticeError;
use projections::ProjectionError;
use tokio_postgres::types::ToSql;

/// The settings of the webhook and email recorders' transactions. A record lost in a crash
/// only means the delivery is sent again: no need to wait for the disk. And every statement
/// there finds its rows by probing indexes from the rows it is given: never a scan of the
/// table, a hash or a merge, which a plan made while the table was small would choose and
/// keep. Planning each execution afresh avoided that too, but planning cost as much as
/// running (`cargo bench --bench email`, pg_stat_statements: 5.5 s of planning for 200,000
/// emails). A generic plan made under these settings is the same whatever the table's size,
/// so it is used from the first execution: left to choose, PostgreSQL kept planning the
/// deliveries' update and the queues' release afresh for every batch (pg_stat_statements
/// in `cargo bench --bench webhooks`: planning 39 ms against 293 ms of running them).
pub(crate) const KEYED_TRANSACTION_SQL: &str = "SET LOCAL synchronous_commit = off; \
     SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; \
     SET LOCAL enable_mergejoin = off; SET LOCAL plan_cache_mode = force_generic_plan";

/// The statements a recorder runs for a batch of attempts: the attempts' rows, the
/// deliveries' new states, and the release of each finished queue's next delivery. Every
/// channel's tables have the same shape; only their names differ.
pub(crate) struct RecordSql {
    insert_attempts: String,
    update_deliveries: String,
    release_queues: String,
}

impl RecordSql {
    /// The statements over `deliveries` and `attempts`, whose rows name their recipient in
    /// `recipient` and keep the attempt's reply code in `code`.
    pub(crate) fn new(deliveries: &str, attempts: &str, recipient: &str, code: &str) -> Self {
        RecordSql {
            insert_attempts: format!(
                "INSERT INTO {attempts} ({recipient}, position, attempt, started_at, \
                                         duration_ms, {code}, error) \
                 SELECT * FROM unnest($1::uuid[], $2::int8[], $3::int4[], $4::timestamptz[], \
                                      $5::int4[], $6::int2[], $7::text[]) \
                 ON CONFLICT DO NOTHING"
            ),
            // Locked in the order the outbox locks them, so the two never deadlock, then
            // changed where they were locked (the row a lock found is the row updated: no
            // second probe). Only while the lease is ours: a sender whose lease ran out and
            // was taken over leaves the delivery to the one that holds it now.
            update_deliveries: format!(
                "UPDATE {deliveries} d \
                    SET state = u.state, leased_until = NULL, \
                        next_attempt_at = coalesce(u.next_attempt_at, d.next_attempt_at), \
                        finished_at = CASE WHEN u.state = 'pending' THEN NULL ELSE now() END \
                   FROM (SELECT l.ctid AS row_id, w.* FROM {deliveries} l \
                           JOIN unnest($1::uuid[], $2::int8[], $3::int4[], $4::text[], \
                                       $5::timestamptz[]) \
                                AS w({recipient}, position, attempt, state, next_attempt_at) \
                             ON l.{recipient} = w.{recipient} AND l.position = w.position \
                          ORDER BY l.{recipient}, l.position FOR UPDATE OF l) u \
                  WHERE d.ctid = u.row_id AND d.attempts = u.attempt AND d.state = 'pending'"
            ),
            // Only the head of a queue is ever due, so the next one is the first waiting one,
            // found in the index of waiting deliveries (nearly always empty: one probe each).
            // Only behind a head this batch ended: a record whose lease was taken over
            // changed nothing (its attempt is no longer the row's), and the head is still
            // being sent by whoever holds it now.
            release_queues: format!(
                "UPDATE {deliveries} d SET next_attempt_at = now() \
                   FROM (SELECT (SELECT n.ctid FROM {deliveries} n \
                                  WHERE n.{recipient} = q.{recipient} \
                                    AND n.ordering_key = q.ordering_key \
                                    AND n.state = 'pending' \
                                    AND n.next_attempt_at = 'infinity' \
                                  ORDER BY n.position LIMIT 1) AS row_id \
                           FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::int4[]) \
                                AS q({recipient}, ordering_key, position, attempt) \
                          WHERE EXISTS (SELECT 1 FROM {deliveries} h \
                                         WHERE h.{recipient} = q.{recipient} \
                                           AND h.position = q.position \
                                           AND h.attempts = q.attempt \
                                           AND h.state <> 'pending')) head \
                  WHERE d.ctid = head.row_id AND d.next_attempt_at = 'infinity'"
            ),
        }
    }
}

/// One attempt as a recorder writes it, whatever the channel.
pub(crate) struct AttemptRecord<'a> {
    /// The endpoint or subscriber.
    pub recipient: uuid::Uuid,
    pub position: i64,
    pub ordering_key: &'a str,
    pub attempt: i32,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub duration_ms: i32,
    /// The HTTP status or SMTP reply code.
    pub code: Option<i16>,
    pub error: Option<&'a str>,
    /// The delivery's state after it.
    pub state: &'a str,
    pub next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Writes a batch of attempts and their deliveries' new states, and makes the next delivery
/// of each queue they finished due, in one transaction sent as one round trip
/// ([`eventstore::pipeline`]): `BEGIN`, [`KEYED_TRANSACTION_SQL`], the three statements and
/// `COMMIT`. The recorder refuses no result, so a `COMMIT` that goes out before the answers
/// is safe: after any statement's error the server rolls the whole batch back, and the
/// caller retries it. A round trip per statement cost each batch five wake-ups of the
/// connection's task on a machine the delivery runs keep busy. Answers how many waiting
/// deliveries it made due, which only a claim can then send.
pub(crate) async fn record_attempts(
    client: &deadpool_postgres::Object,
    sql: &RecordSql,
    records: &[AttemptRecord<'_>],
) -> Result<u64, DeliveryError> {
    let recipients: Vec<uuid::Uuid> = records.iter().map(|r| r.recipient).collect();
    let positions: Vec<i64> = records.iter().map(|r| r.position).collect();
    let attempts: Vec<i32> = records.iter().map(|r| r.attempt).collect();
    let started: Vec<_> = records.iter().map(|r| r.started_at).collect();
    let durations: Vec<i32> = records.iter().map(|r| r.duration_ms).collect();
    let codes: Vec<Option<i16>> = records.iter().map(|r| r.code).collect();
    let errors: Vec<Option<&str>> = records.iter().map(|r| r.error).collect();
    let states: Vec<&str> = records.iter().map(|r| r.state).collect();
    let next: Vec<_> = records.iter().map(|r| r.next_attempt_at).collect();
    // Each queue whose delivery is over: its next one, waiting behind it, is due now.
    let finished = finished_queues(records);
    // Prepared before the pipeline: a statement still to be prepared would go out behind
    // the ones after it (once per connection; later batches find them cached).
    let insert = client.prepare_cached(&sql.insert_attempts).await?;
    let update = client.prepare_cached(&sql.update_deliveries).await?;
    let release = client.prepare_cached(&sql.release_queues).await?;
    let insert_params: [&(dyn ToSql + Sync); 7] = [
        &recipients,
        &positions,
        &attempts,
        &started,
        &durations,
        &codes,
        &errors,
    ];
    let update_params: [&(dyn ToSql + Sync); 5] =
        [&recipients, &positions, &attempts, &states, &next];
    let release_params: [&(dyn ToSql + Sync); 4] = [
        &finished.recipients,
        &finished.ordering_keys,
        &finished.positions,
        &finished.attempts,
    ];
    let (transaction, begin) = OpenTransaction::begin(client);
    let (begun, set, inserted, updated, released, committed) = futures_util::join!(
        begin,
        client.batch_execute(KEYED_TRANSACTION_SQL),
        client.execute(&insert, &insert_params),
        client.execute(&update, &update_params),
        client.execute(&release, &release_params),
        transaction.commit_in_pipeline(),
    );
    begun?;
    set?;
    inserted?;
    updated?;
    let released = released?;
    committed?;
    Ok(released)
}

/// The queues (recipient, ordering key) a batch of records ended a delivery of, as the
/// columns the release statement unnests: the next delivery of each, waiting behind it, is
/// due now if the record did end it. A record still `pending` (a retry) ends nothing. Not
/// one per queue: a late record whose lease was taken over may share a batch with the
/// record of the attempt that holds it now, and only the statement can tell which ended
/// the head. In key order, the order the release locks the waiting rows in.
fn finished_queues<'a>(records: &'a [AttemptRecord<'_>]) -> FinishedQueues<'a> {
    let mut finished: Vec<&AttemptRecord<'_>> =
        records.iter().filter(|r| r.state != "pending").collect();
    finished.sort_unstable_by_key(|r| (r.recipient, r.ordering_key));
    FinishedQueues {
        recipients: finished.iter().map(|r| r.recipient).collect(),
        ordering_keys: finished.iter().map(|r| r.ordering_key).collect(),
        positions: finished.iter().map(|r| r.position).collect(),
        attempts: finished.iter().map(|r| r.attempt).collect(),
    }
}

/// The heads of queues a batch of records may have ended, with their attempts, one column
/// per vector.
struct FinishedQueues<'a> {
    recipients: Vec<uuid::Uuid>,
    ordering_keys: Vec<&'a str>,
    positions: Vec<i64>,
    attempts: Vec<i32>,
}

/// Why delivery work failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("the delivery tables cannot be read or written")]
    Database(#[from] ProjectionError),
    #[error("a notice cannot be rendered")]
    Notice(#[from] NoticeError),
    #[error("the global log jumps from position {from} to {to}")]
    Gap { from: u64, to: u64 },
    #[error("the subscriber event at position {position} cannot be read")]
    SubscriberEvent {
        position: u64,
        #[source]
        source: domain::DecodeError,
    },
    #[error("an address cannot be sealed")]
    Sealing,
    #[error("an email template cannot be rendered: {0}")]
    Template(String),
    #[error("{0}")]
    Settings(String),
    #[error("the webhook event at position {position} cannot be read")]
    WebhookEvent {
        position: u64,
        #[source]
        source: domain::DecodeError,
    },
    #[error("position {0} is out of range")]
    PositionOutOfRange(u64),
    #[error("the delivery checkpoint is negative")]
    NegativeCheckpoint,
    #[error("the recorder of delivery attempts stopped")]
    RecorderStopped,
    #[error("a message cannot be encoded")]
    Encode(#[from] serde_json::Error),
    #[error("a rendered notice is not UTF-8")]
    NotUtf8(#[from] std::string::FromUtf8Error),
    #[error("the system has no randomness for a secret")]
    Randomness(#[source] getrandom::Error),
    #[error("the database did not answer in time")]
    Timeout,
    #[error("a command on a webhook failed")]
    Command(#[source] projections::CommandError),
}

impl DeliveryError {
    /// The database is away: worth retrying as it is.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DeliveryError::Database(e) => e.is_unavailable(),
            DeliveryError::Notice(e) => e.is_unavailable(),
            DeliveryError::Timeout => true,
            DeliveryError::Command(e) => e.is_unavailable(),
            _ => false,
        }
    }
}

impl From<eventstore::StoreError> for DeliveryError {
    fn from(err: eventstore::StoreError) -> Self {
        DeliveryError::Database(err.into())
    }
}

impl From<deadpool_postgres::PoolError> for DeliveryError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        DeliveryError::Database(err.into())
    }
}

impl From<tokio_postgres::Error> for DeliveryError {
    fn from(err: tokio_postgres::Error) -> Self {
        DeliveryError::Database(err.into())
    }
}
