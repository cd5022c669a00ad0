//! The sealer gives committed events their global position and hash-chain link.
//!
//! Appends only insert into `events`, each with the id of its (top-level) transaction, and
//! never wait for one another. The sealer, one at a time across every process (an
//! advisory lock), reads the events of transactions that have *ended* — those whose id is
//! below `pg_snapshot_xmin` of its snapshot, so no running transaction can add one before
//! them — in `(transaction_id, seq)` order after the last sealed one, numbers them on from
//! the last position, chains their hashes, and inserts them into `event_log` in one
//! transaction. Readers of the global log read `event_log` by position, so a position, once
//! visible, never gets an event before it. The cost is a short delay between an append's
//! commit and its position, and one writer of `event_log` instead of many of `events`.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::{join, join4};
use futures_util::SinkExt;
use tokio::sync::watch;

use crate::chain;
use crate::db::SEALER_LOCK;
use crate::model::to_u64;
use crate::pipeline::OpenTransaction;
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

/// One event's place in the chain, as the sealer writes it to `event_log`.
struct Link {
    position: i64,
    seq: i64,
    xid: Xid8,
    prev_hash: Hash,
    hash: Hash,
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

/// The last sealed event: where the chain goes on from.
const HEAD_SQL: &str =
    "SELECT position, transaction_id, seq, hash FROM event_log ORDER BY position DESC LIMIT 1";

/// The events after the head, in sealing order. One statement, so that the rows and xmin
/// come from one snapshot (xmin in a subquery, computed once rather than for every row:
/// 1.1 µs an event in psql); it finds the head itself, so that it can go out with the lock
/// in one round trip (under the lock the head cannot move between the two statements).
/// Only what the link covers is read: the content is hashed already.
const PENDING_SQL: &str = "WITH head AS ( \
        SELECT transaction_id, seq FROM event_log ORDER BY position DESC LIMIT 1) \
     SELECT e.seq, e.transaction_id, (SELECT pg_snapshot_xmin(pg_current_snapshot())) AS xmin, \
            e.stream_id, e.stream_version, e.recorded_at, e.content_hash \
       FROM events e \
      WHERE (e.transaction_id, e.seq) > (coalesce((SELECT transaction_id FROM head), '0'::xid8), \
                                         coalesce((SELECT seq FROM head), 0)) \
      ORDER BY e.transaction_id, e.seq LIMIT $1";

/// The links go in by binary COPY: PostgreSQL then inserts a page of rows per WAL record
/// and skips the executor's work per row, which an `INSERT … FROM unnest(…)` pays (psql,
/// 200,000 links: 410 ms and 44 MB of WAL against 915 ms and 54 MB; docs/PERFORMANCE.md).
const COPY_SQL: &str =
    "COPY event_log (position, seq, transaction_id, prev_hash, hash) FROM STDIN (FORMAT binary)";

/// The links in PostgreSQL's binary COPY format for [`COPY_SQL`]'s columns, in one buffer:
/// tokio-postgres's `BinaryCopyInWriter` hands its sink 4 kB at a time, a wake-up of the
/// connection task each, which cost the appenders more than the COPY saved.
fn copy_data(links: &[Link]) -> Bytes {
    const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0";
    const COLUMNS: i16 = 5;
    let row_len = 2 + 4 * 5 + 8 + 8 + 8 + 32 + 32;
    let mut out = BytesMut::with_capacity(HEADER.len() + 8 + links.len() * row_len + 2);
    out.put_slice(HEADER);
    out.put_i32(0); // flags: no OIDs
    out.put_i32(0); // no header extension
    for link in links {
        out.put_i16(COLUMNS);
        for integer in [link.position, link.seq] {
            out.put_i32(8);
            out.put_i64(integer);
        }
        out.put_i32(8);
        out.put_u64(link.xid.0);
        for hash in [&link.prev_hash, &link.hash] {
            out.put_i32(32);
            out.put_slice(&hash.0);
        }
    }
    out.put_i16(-1); // end of data
    out.freeze()
}

/// A hint for other processes' followers (they poll as well, so losing it is harmless).
const NOTIFY_SQL: &str = "SELECT pg_notify('crier_log', $1)";

/// One batch in four round trips: `BEGIN`, the lock, the head and the pending events in the
/// first; the links in two (a COPY waits to be accepted before its data goes); the NOTIFY
/// and `COMMIT` in the last. Under steady appends a seal runs every `seal_interval`, and
/// its round trips are paid by the appenders' CPU.
async fn seal_batch(store: &EventStore) -> Result<Batch, StoreError> {
    let batch_size = i64::try_from(store.config().seal_batch_size.max(1)).unwrap_or(1000);
    let client = store.pool.get().await?;
    // Prepared before the pipeline goes out: a statement still to be prepared would be sent
    // after the ones behind it.
    let lock = client.prepare_cached(LOCK_SQL).await?;
    let head = client.prepare_cached(HEAD_SQL).await?;
    let pending = client.prepare_cached(PENDING_SQL).await?;
    let copy = client.prepare_cached(COPY_SQL).await?;
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
                .ok_or_else(|| StoreError::Corrupt("event_log hash is not 32 bytes".into()))?;
            (to_u64(row.try_get("position")?, "position")?, hash)
        }
        None => (0, Hash::GENESIS),
    };

    let mut links = Vec::with_capacity(rows.len());
    for row in &rows {
        let xid: Xid8 = row.try_get("transaction_id")?;
        let xmin: Xid8 = row.try_get("xmin")?;
        if xid >= xmin {
            // This transaction, or an older one still running, may yet commit events that
            // come before it: stop here and come back once they have ended.
            break;
        }
        let content_hash = Hash::from_slice(row.try_get("content_hash")?)
            .ok_or_else(|| StoreError::Corrupt("content hash is not 32 bytes".into()))?;
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
        links.push(Link {
            position: i64::try_from(position)
                .map_err(|_| StoreError::Corrupt("position overflow".into()))?,
            seq: row.try_get("seq")?,
            xid,
            prev_hash,
            hash,
        });
        prev_hash = hash;
    }
    let sealed = links.len();
    let waiting = sealed < rows.len();
    let full = rows.len() as i64 == batch_size && !waiting;

    if sealed > 0 {
        let written = async {
            let mut sink = std::pin::pin!(client.copy_in::<_, Bytes>(&copy).await?);
            sink.send(copy_data(&links)).await?;
            sink.finish().await
        }
        .await;
        if let Err(e) = written {
            transaction.finish(false).await?;
            return Err(e.into());
        }
        let notice = position.to_string();
        let (notified, committed) = join(
            client.execute(&notify, &[&notice]),
            // Sent behind the NOTIFY without waiting for it: a failed NOTIFY aborts the
            // transaction, and this COMMIT then rolls it back.
            transaction.finish(true),
        )
        .await;
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
pub(crate) async fn run(store: EventStore, mut shutdown: watch::Receiver<bool>) {
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
        if *shutdown.borrow() {
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
                tracing::warn!(error = %e, "sealer could not seal; retrying");
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
            changed = shutdown.changed() => if changed.is_err() { break },
        }
    }
    tracing::debug!("sealer stopped");
}
