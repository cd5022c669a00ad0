//! The sealer gives committed events their global position and hash-chain link.
//!
//! A sequence value is taken at INSERT but becomes visible at COMMIT, so positions taken at
//! insert time would let an event appear *before* one a reader has already seen. Appends
//! therefore take no position: they only insert into `events`, each row with the id of its
//! (top-level) transaction, and never wait for one another. The sealer numbers them
//! afterwards ([`EventStore::seal_pending`]), in one transaction per seal:
//!
//! 1. take `pg_advisory_xact_lock`: one sealer at a time, across every process;
//! 2. read the last seal: its last position, its hash, and its last `(transaction_id, seq)`;
//! 3. read the events after that pair, in `(transaction_id, seq)` order, with
//!    `pg_snapshot_xmin(pg_current_snapshot())` from the same snapshot;
//! 4. keep the prefix whose `transaction_id` is below that xmin: those transactions have
//!    ended, and every transaction that has not has a larger id, so no event can ever sort
//!    before them;
//! 5. number them on from the last position, chain their hashes, and write them as one
//!    `log_seals` row, then `NOTIFY crier_log` and commit.
//!
//! Steps 1 to 3 go out in one pipeline (see [`crate::pipeline`]), and step 5 in another: a
//! failed `INSERT` or `NOTIFY` aborts the transaction, and the `COMMIT` behind them then rolls
//! back. The pending events' statement finds the head itself, which under the lock cannot move
//! between the two reads; it computes xmin once, in a subquery, rather than per row (1.1 µs an
//! event), and reads only the columns the link covers. A seal links at most `seal_batch_size`
//! events (2,000), and a full one is followed by the next at once. One row per seal rather than
//! per event: a heap tuple and two index entries per event were most of what sealing cost the
//! appenders (docs/PERFORMANCE.md).
//!
//! Readers read the log by position, and positions are only ever added after the highest, so a
//! reader that has seen position P never finds a new event before P. The price: a short delay
//! between commit and position, and an open transaction that holds a transaction id anywhere
//! on the cluster (long-running, or idle in transaction) holds positions back until it ends. It
//! never reorders or loses them; the wait is logged after 10 s.
//!
//! # Asynchronous commit
//!
//! The sealer's transaction commits with `synchronous_commit = off`, which spares the
//! appenders its WAL flushes. Its output is a deterministic function of durable events: every
//! event it links belongs to a transaction that had ended when it read it, appends commit
//! synchronously (see [`EventStore::append`]), so those events were durable before they
//! were visible, and the set of such events after a given `(transaction_id, seq)` cannot grow
//! below that pair. If PostgreSQL crashes before a seal reaches disk, the next sealer links the
//! same events at the same positions with the same hashes.
//!
//! # When it runs
//!
//! Each `crier serve` runs one in the background ([`EventStore::spawn_background`]). It is
//! woken at once by this process's appends ([`EventStore::notify_appended`]), retries quickly
//! (2 ms, doubling up to 50 ms) while events wait for older transactions, and otherwise polls
//! every `poll_interval` (500 ms) to pick up other processes' appends. Woken by an append, it
//! lets appends gather for `seal_delay` (2 ms), and while they keep coming, until
//! `seal_interval` (20 ms) after the start of the last seal that linked anything: each seal is a
//! transaction with a cost of its own, so under steady load the sealer runs at most 50 seals a
//! second whatever the rate of appends, for at most 20 ms of added latency, while an append
//! after a quiet moment waits only 2 ms. A short-lived process (a CLI command, a test) calls
//! [`EventStore::seal_pending`] or [`EventStore::seal_all`] itself.
//!
//! A sealer killed mid-seal rolls back; the next one starts from the last committed seal.

use std::time::{Duration, Instant};

use futures_util::future::{join3, join4};
use tasks::Chain;
use tokio_util::sync::CancellationToken;

use crate::chain;
use crate::db::SEALER_LOCK;
use crate::model::to_u64;
use crate::pipeline::OpenTransaction;
use crate::read::LOG_HEAD_SQL;
use crate::xid::Xid8;
use crate::{EventStore, Hash, StoreError};

/// What one call of [`EventStore::seal_pending`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealReport {
    /// Events given a position.
    pub sealed: u64,
    /// The last sealed position afterwards (0 when the log is empty).
    pub head: u64,
    /// Committed events are waiting for an older transaction, still running, to end.
    pub waiting_for_older_transactions: bool,
}

struct Batch {
    sealed: u64,
    head: u64,
    waiting: bool,
    full: bool,
}

/// Takes the sealer's lock for the transaction; its commit may be asynchronous (see below).
const LOCK_SQL: &str =
    "SELECT pg_advisory_xact_lock($1), set_config('synchronous_commit', 'off', true)";

/// The events after the head, in sealing order. One statement, so that the rows and xmin
/// come from one snapshot (xmin in a subquery, computed once rather than for every row:
/// 1.1 µs an event in psql); it finds the head itself, so that it can go out with the lock
/// in one round trip (under the lock the head cannot move between the two statements).
/// Only what the link covers is read: the content is hashed already.
const PENDING_SQL: &str = "WITH head AS ( \
        SELECT last_transaction_id, last_seq FROM log_seals ORDER BY first_position DESC LIMIT 1) \
     SELECT e.seq, e.transaction_id, (SELECT pg_snapshot_xmin(pg_current_snapshot())) AS xmin, \
            e.stream_id, e.stream_version, e.recorded_at, e.content_hash \
       FROM events e \
      WHERE (e.transaction_id, e.seq) > \
            (coalesce((SELECT last_transaction_id FROM head), '0'::xid8), \
             coalesce((SELECT last_seq FROM head), 0)) \
      ORDER BY e.transaction_id, e.seq LIMIT $1";

/// The seal as one row (see migrations/V9). The generated columns follow from the arrays.
const INSERT_SQL: &str =
    "INSERT INTO log_seals (first_position, transaction_ids, seqs, prev_hash, hashes) \
     VALUES ($1, $2, $3, $4, $5)";

/// A hint for other processes' followers (they poll as well, so losing it is harmless).
const NOTIFY_SQL: &str = "SELECT pg_notify('crier_log', $1)";

/// One batch in two round trips: `BEGIN`, the lock, the head and the pending events in the
/// first; the seal's row, the NOTIFY and `COMMIT` in the second. Under steady appends a
/// seal runs every `seal_interval`, and its round trips are paid by the appenders' CPU.
async fn seal_batch(store: &EventStore) -> Result<Batch, StoreError> {
    let batch_size = i64::try_from(store.config().seal_batch_size.max(1)).unwrap_or(1000);
    let client = store.pool.get().await?;
    // Prepared before the pipeline goes out: a statement still to be prepared would be sent
    // after the ones behind it.
    let lock = client.prepare_cached(LOCK_SQL).await?;
    // The last sealed event: where the chain goes on from.
    let head = client.prepare_cached(LOG_HEAD_SQL).await?;
    let pending = client.prepare_cached(PENDING_SQL).await?;
    let insert = client.prepare_cached(INSERT_SQL).await?;
    let notify = client.prepare_cached(NOTIFY_SQL).await?;

    // Asynchronous commit is safe here, and spares the appenders' WAL flushes: the seal is
    // a deterministic function of durable events. Every event it links belongs to a
    // transaction older than every running one, so all of them were committed, and durable
    // because appends always commit synchronously (db.rs, append.rs), when read. If
    // PostgreSQL crashes before this commit reaches disk, the next sealer links exactly
    // these events again, at the same positions, with the same hashes.
    let (transaction, begin) = OpenTransaction::begin(&client);
    let (begun, locked, head, rows) = join4(
        begin,
        client.execute(&lock, &[&SEALER_LOCK]),
        client.query_opt(&head, &[]),
        client.query(&pending, &[&batch_size]),
    )
    .await;
    begun?;
    locked?;
    let (head, rows) = (head?, rows?);

    let (mut position, mut prev_hash) = match head {
        Some(row) => {
            let bytes: &[u8] = row.try_get("hash")?;
            let hash = Hash::from_slice(bytes)
                .ok_or_else(|| StoreError::corrupt("log_seals hash is not 32 bytes"))?;
            (to_u64(row.try_get("position")?, "position")?, hash)
        }
        None => (0, Hash::GENESIS),
    };

    let first_position = position + 1;
    let seal_prev_hash = prev_hash;
    let mut transaction_ids = Vec::with_capacity(rows.len());
    let mut seqs: Vec<i64> = Vec::with_capacity(rows.len());
    let mut hashes: Vec<Hash> = Vec::with_capacity(rows.len());
    for row in &rows {
        let xid: Xid8 = row.try_get("transaction_id")?;
        let xmin: Xid8 = row.try_get("xmin")?;
        if xid >= xmin {
            // This transaction, or an older one still running, may yet commit events that
            // come before it: stop here and come back once they have ended.
            break;
        }
        let content_hash = Hash::from_slice(row.try_get("content_hash")?)
            .ok_or_else(|| StoreError::corrupt("content hash is not 32 bytes"))?;
        position += 1;
        let hash = chain::link(
            &prev_hash,
            &chain::LinkInput {
                position,
                stream_id: row.try_get("stream_id")?,
                stream_version: to_u64(row.try_get("stream_version")?, "stream version")?,
                recorded_at: &row.try_get("recorded_at")?,
                content_hash: &content_hash,
            },
        );
        transaction_ids.push(xid);
        seqs.push(row.try_get("seq")?);
        hashes.push(hash);
        prev_hash = hash;
    }
    let sealed = seqs.len();
    let waiting = sealed < rows.len();
    let full = rows.len() as i64 == batch_size && !waiting;

    if sealed > 0 {
        let first_position =
            i64::try_from(first_position).map_err(|_| StoreError::corrupt("position overflow"))?;
        let hashes: Vec<&[u8]> = hashes.iter().map(|hash| hash.0.as_slice()).collect();
        let notice = position.to_string();
        // Sent together without waiting for one another: a failed INSERT or NOTIFY aborts
        // the transaction, and the COMMIT behind them then rolls it back.
        let (inserted, notified, committed) = join3(
            client.execute(
                &insert,
                &[
                    &first_position,
                    &transaction_ids,
                    &seqs,
                    &seal_prev_hash.0.as_slice(),
                    &hashes,
                ],
            ),
            client.execute(&notify, &[&notice]),
            transaction.finish(true),
        )
        .await;
        inserted?;
        notified?;
        committed?;
    } else {
        transaction.finish(false).await?;
    }
    if sealed > 0 {
        metrics::counter!("crier_events_sealed_total").increment(sealed as u64);
        store.note_log_head(position);
    }
    Ok(Batch {
        sealed: sealed as u64,
        head: position,
        waiting,
        full,
    })
}

impl EventStore {
    /// Seals every event that can be sealed now. The background sealer calls this; a
    /// short-lived process (a CLI command, a test) may call it after appending.
    pub async fn seal_pending(&self) -> Result<SealReport, StoreError> {
        let mut report = SealReport::default();
        loop {
            let batch = seal_batch(self).await?;
            report.sealed += batch.sealed;
            report.head = batch.head;
            report.waiting_for_older_transactions = batch.waiting;
            if !batch.full {
                return Ok(report);
            }
        }
    }

    /// Seals until every event committed before this call has a position, waiting for older
    /// transactions to end if need be (at most `timeout`).
    pub async fn seal_all(&self, timeout: Duration) -> Result<SealReport, StoreError> {
        let deadline = Instant::now() + timeout;
        let mut total = 0;
        loop {
            let mut report = self.seal_pending().await?;
            total += report.sealed;
            if !report.waiting_for_older_transactions || Instant::now() >= deadline {
                report.sealed = total;
                return Ok(report);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The background sealer: seals whenever this process appends, whenever another process's
/// events are found by polling, and retries quickly while events wait for older
/// transactions.
/// Runs until `cancel`; failures to seal are retried, never fatal.
pub async fn run(store: EventStore, cancel: CancellationToken) -> Result<(), StoreError> {
    const QUICK_RETRY_MIN: Duration = Duration::from_millis(2);
    const QUICK_RETRY_MAX: Duration = Duration::from_millis(50);
    const ERROR_RETRY_MAX: Duration = Duration::from_secs(5);
    let mut quick_retry = QUICK_RETRY_MIN;
    let mut error_retry = Duration::from_millis(100);
    let mut waiting_since: Option<Instant> = None;
    let mut last_warning: Option<Instant> = None;
    // When the last seal that linked anything began: appends arriving while it or the ones
    // just before it ran gather until `seal_interval` after it. Idle polls do not count, so
    // that a lone append waits only `seal_delay`.
    let mut last_busy_seal: Option<Instant> = None;

    loop {
        if cancel.is_cancelled() {
            break;
        }
        let seal_started = Instant::now();
        let wait = match store.seal_pending().await {
            Ok(report) => {
                if report.sealed > 0 {
                    last_busy_seal = Some(seal_started);
                }
                error_retry = Duration::from_millis(100);
                if report.waiting_for_older_transactions {
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(10)
                        && last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                    {
                        tracing::warn!(
                            waiting_secs = since.elapsed().as_secs(),
                            "events wait for an older transaction of this cluster to end; \
                             a long-running or idle-in-transaction session delays the global log"
                        );
                        last_warning = Some(Instant::now());
                    }
                    let wait = quick_retry;
                    quick_retry = (quick_retry * 2).min(QUICK_RETRY_MAX);
                    wait
                } else {
                    waiting_since = None;
                    quick_retry = QUICK_RETRY_MIN;
                    store.poll_interval()
                }
            }
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "sealer could not seal; retrying");
                let wait = error_retry;
                error_retry = (error_retry * 2).min(ERROR_RETRY_MAX);
                wait
            }
        };
        tokio::select! {
            _ = store.shared.appended.notified() => {
                // Let the appends of the next moments join this batch, and while they keep
                // coming, let them gather for `seal_interval` after the last busy seal began.
                let config = store.config();
                let mut until = Instant::now() + config.seal_delay;
                if let Some(busy) = last_busy_seal {
                    until = until.max(busy + config.seal_interval);
                }
                tokio::time::sleep_until(until.into()).await;
            }
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => break,
        }
    }
    tracing::debug!("sealer stopped");
    Ok(())
}
