//! Reading streams and the global log.
//!
//! A stream is readable as soon as its append commits, sealed or not. The global log holds
//! only sealed events: a range of positions is read as the seals covering it, whose arrays
//! are cut into one link per position here, then the events they name by one range of `seq`,
//! matched to their links (see [`read_log_after`]). The SQL function `log_links` (migration
//! V9) gives the same links as rows, for statements that join them with events.
//!
//! Positions follow `(transaction_id, seq)` order, so lookups that start from an event search
//! `log_seals` by its unique index on each seal's last pair: a stream's sealed events with their
//! links ([`EventStore::read_stream_sealed`]), and a stream as a reader at some position saw it
//! ([`EventStore::read_stream_until_position`]: its events at or before that position's pair).
//! The head is the last seal.
//!
//! Stream reads outside a transaction note the versions they saw committed, which spares later
//! appends at those versions a probe (see [`crate::append`]).

use deadpool_postgres::GenericClient;

use crate::model::{to_u64, LoggedEvent, RecordedEvent};
use crate::xid::Xid8;
use crate::{EventStore, Hash, StoreError};

/// Columns of `events e` that [`RecordedEvent::from_row`] reads: for callers that read a
/// stream together with their own tables in one statement.
pub const EVENT_COLUMNS: &str = "e.stream_id, e.stream_version, e.event_id, e.event_type, \
     e.schema_version, e.data, e.metadata, e.recorded_at, e.content_hash";

/// The last sealed position and its hash: the last element of the last seal.
pub(crate) const LOG_HEAD_SQL: &str =
    "SELECT last_position AS position, hashes[cardinality(seqs)] AS hash \
       FROM log_seals ORDER BY first_position DESC LIMIT 1";

/// Most events one read returns.
pub const MAX_READ_BATCH: usize = 10_000;

fn limit(count: usize) -> i64 {
    i64::try_from(count.clamp(1, MAX_READ_BATCH)).unwrap_or(1)
}

pub(crate) fn logged_from_row(row: &tokio_postgres::Row) -> Result<LoggedEvent, StoreError> {
    logged_from_link(row, RecordedEvent::from_row(row)?)
}

/// Reads up to `count` sealed events after `after`, in global order, on the caller's
/// connection or transaction.
///
/// The links come first, as the seals that hold them ([`read_links_after`]), then the events
/// they name by one range of `seq` (an index range scan, as a plain keyset read does),
/// matched to their links here. Joining the two in PostgreSQL probed the events' index once
/// per link, which made a read of the log cost twice what reading the same rows by range
/// does (`cargo bench --bench eventstore`, (c)).
/// Two statements are safe outside a transaction too: a seal only links committed events,
/// and events are never deleted, so a link seen by the first is matched by the second.
/// Should the links name sparse `seq`s (an event appended by a transaction that committed
/// long after it began), the range would hold many events of other positions: the join in
/// PostgreSQL then reads only those linked.
pub async fn read_log_after<C: GenericClient>(
    client: &C,
    after: u64,
    count: usize,
) -> Result<Vec<LoggedEvent>, StoreError> {
    // Nothing is after the largest bigint (and the range's end adds to `after`).
    let Some(after) = i64::try_from(after).ok().filter(|&p| p < i64::MAX) else {
        return Ok(Vec::new());
    };
    let links = read_links_after(client, after, count).await?;
    let (Some(lowest), Some(highest)) = (
        links.iter().map(|link| link.seq).min(),
        links.iter().map(|link| link.seq).max(),
    ) else {
        return Ok(Vec::new());
    };
    if too_sparse_for_a_range(lowest, highest, links.len()) {
        return read_log_after_joined(client, after, count).await;
    }
    let by_seq: std::collections::HashMap<i64, usize> = links
        .iter()
        .enumerate()
        .map(|(index, link)| (link.seq, index))
        .collect();
    let sql = format!("SELECT e.seq, {EVENT_COLUMNS} FROM events e WHERE e.seq BETWEEN $1 AND $2");
    let events = client.prepare_cached(&sql).await?;
    let events = client.query(&events, &[&lowest, &highest]).await?;
    let mut found: Vec<Option<RecordedEvent>> = Vec::new();
    found.resize_with(links.len(), || None);
    for row in &events {
        let seq: i64 = row.try_get(0)?;
        if let Some(&index) = by_seq.get(&seq) {
            found[index] = Some(RecordedEvent::from_row(row)?);
        }
    }
    // As the join did: a link whose event is missing is left out (`crier verify` names it).
    Ok(links
        .into_iter()
        .zip(found)
        .filter_map(|(link, event)| {
            event.map(|event| LoggedEvent {
                position: link.position,
                prev_hash: link.prev_hash,
                hash: link.hash,
                event,
            })
        })
        .collect())
}

/// One position of the log: the event it links (by `seq`) and its link.
struct Link {
    position: u64,
    seq: i64,
    prev_hash: Hash,
    hash: Hash,
}

/// The `columns` of the seals covering `$1 + 1 ..= $2`, in order: the one holding `$1 + 1`
/// (the last to start at or before it) and those starting within the range. `$1` is below the
/// largest bigint.
macro_rules! seals_covering_sql {
    ($columns:literal) => {
        concat!(
            "SELECT ",
            $columns,
            " FROM log_seals \
              WHERE first_position >= coalesce((SELECT max(first_position) FROM log_seals \
                                                 WHERE first_position <= $1::bigint + 1), 1) \
                AND first_position <= $2::bigint \
              ORDER BY first_position"
        )
    };
}
pub(crate) use seals_covering_sql;

/// The seals covering `$1 + 1 ..= $2`, as [`read_links_after`] cuts them.
const SEALS_COVERING_SQL: &str = seals_covering_sql!("first_position, seqs, prev_hash, hashes");

/// The links of up to `count` positions after `after`, in order, cut here from the arrays of
/// the seals that hold them. What `log_links` gives as rows: unnesting the arrays in
/// PostgreSQL (a row, a sort and a copy of the hashes array per position) cost more than
/// reading the events the links name. As there, the seals are trusted to follow one another
/// (`crier verify` checks that they do), and a position is a seal's for as long as its `seqs`
/// array runs; a hash missing from a seal's shorter `hashes` array is a corrupt log.
/// Verification cuts seals the same way, but keeps what a forged seal lacks for its report
/// (`verify::read_batch_from_seals`).
async fn read_links_after<C: GenericClient>(
    client: &C,
    after: i64,
    count: usize,
) -> Result<Vec<Link>, StoreError> {
    // `after` is below i64::MAX (the caller's check); the end of the range saturates there.
    let (first_wanted, last_wanted) = (after + 1, after.saturating_add(limit(count)));
    let statement = client.prepare_cached(SEALS_COVERING_SQL).await?;
    let seals = client.query(&statement, &[&after, &last_wanted]).await?;
    let mut links = Vec::with_capacity(count.min(MAX_READ_BATCH));
    for seal in &seals {
        let first: i64 = seal.try_get(0)?;
        let seqs: Vec<i64> = seal.try_get(1)?;
        let seal_prev_hash: Option<&[u8]> = seal.try_get(2)?;
        let hashes: Vec<Option<&[u8]>> = seal.try_get(3)?;
        // The offsets within this seal of the positions wanted (the seals after the first
        // start within the range, at offset 0).
        let from = usize::try_from(first_wanted.saturating_sub(first).max(0)).unwrap_or(usize::MAX);
        let to = usize::try_from(last_wanted.saturating_sub(first).saturating_add(1).max(0))
            .unwrap_or(usize::MAX);
        let hash_at = |offset: usize| hashes.get(offset).copied().flatten();
        for (offset, &seq) in seqs.iter().enumerate().take(to).skip(from) {
            let position = to_u64(first.saturating_add(offset as i64), "position")?;
            let prev_hash = match offset.checked_sub(1) {
                None => seal_prev_hash,
                Some(before) => hash_at(before),
            };
            links.push(Link {
                position,
                seq,
                prev_hash: hash_of(prev_hash, position)?,
                hash: hash_of(hash_at(offset), position)?,
            });
        }
    }
    // Seals follow one another, so this is already in order, which a stable sort leaves as
    // it is in one pass; in a forged log where two seals overlap, positions still come in
    // order (a repeated one twice, for `crier verify` to name), as `log_links` gives them.
    links.sort_by_key(|link| link.position);
    links.truncate(usize::try_from(limit(count)).unwrap_or(MAX_READ_BATCH));
    Ok(links)
}

/// A link's hash as stored, or why the log is corrupt at `position`.
fn hash_of(bytes: Option<&[u8]>, position: u64) -> Result<Hash, StoreError> {
    bytes.and_then(Hash::from_slice).ok_or_else(|| {
        StoreError::corrupt(format!(
            "the link of position {position} is missing or not 32 bytes"
        ))
    })
}

/// How much wider than its links the `seq` range of a read may be before the read joins in
/// PostgreSQL instead (see [`read_log_after`]).
const SPARSE_SPAN_FACTOR: u64 = 4;
const SPARSE_SPAN_SLACK: u64 = 1000;

/// Whether `links` links whose `seq`s run from `lowest` to `highest` are too sparse to read
/// their events by one range of `seq` (see [`read_log_after`]).
pub(crate) fn too_sparse_for_a_range(lowest: i64, highest: i64, links: usize) -> bool {
    let span = u64::try_from(highest.saturating_sub(lowest)).unwrap_or(u64::MAX);
    span > SPARSE_SPAN_FACTOR * links as u64 + SPARSE_SPAN_SLACK
}

/// [`read_log_after`] as one statement, the events probed by `seq` for each link.
async fn read_log_after_joined<C: GenericClient>(
    client: &C,
    after: i64,
    count: usize,
) -> Result<Vec<LoggedEvent>, StoreError> {
    let sql = format!(
        "SELECT l.position, l.prev_hash, l.hash, {EVENT_COLUMNS} \
           FROM log_links($1, $2) l JOIN events e ON e.seq = l.seq ORDER BY l.position"
    );
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &[&after, &limit(count)]).await?;
    rows.iter().map(logged_from_row).collect()
}

/// An event with its place in the log, from a row holding its link (`position`,
/// `prev_hash`, `hash`).
fn logged_from_link(
    link: &tokio_postgres::Row,
    event: RecordedEvent,
) -> Result<LoggedEvent, StoreError> {
    let hash = |column: &str| -> Result<Hash, StoreError> {
        let bytes: &[u8] = link.try_get(column)?;
        Hash::from_slice(bytes)
            .ok_or_else(|| StoreError::corrupt(format!("{column} is not 32 bytes")))
    };
    Ok(LoggedEvent {
        position: to_u64(link.try_get("position")?, "position")?,
        prev_hash: hash("prev_hash")?,
        hash: hash("hash")?,
        event,
    })
}

/// Events of `stream_id` from version `from` (inclusive) upwards, at most `count`, on the
/// caller's connection or transaction (see [`EventStore::read_stream_forward`]).
pub async fn read_stream_forward_with<C: GenericClient>(
    client: &C,
    stream_id: &str,
    from: u64,
    count: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events e \
          WHERE e.stream_id = $1 AND e.stream_version >= $2 \
          ORDER BY e.stream_version LIMIT $3"
    );
    query_stream(client, &sql, stream_id, from, count).await
}

async fn query_stream<C: GenericClient>(
    client: &C,
    sql: &str,
    stream_id: &str,
    from: u64,
    count: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let from = i64::try_from(from).unwrap_or(i64::MAX);
    let statement = client.prepare_cached(sql).await?;
    let rows = client
        .query(&statement, &[&stream_id, &from, &limit(count)])
        .await?;
    rows.iter().map(RecordedEvent::from_row).collect()
}

impl EventStore {
    /// Events of `stream_id` from version `from` (inclusive) upwards, at most `count`.
    /// Includes events not yet sealed into the global log: a stream is readable as soon as
    /// its append has committed.
    pub async fn read_stream_forward(
        &self,
        stream_id: &str,
        from: u64,
        count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.pool.get().await?;
        let events = read_stream_forward_with(&client, stream_id, from, count).await?;
        self.note_read(stream_id, &events);
        Ok(events)
    }

    /// Events of `stream_id` from version `from` (inclusive) downwards, newest first.
    /// `u64::MAX` starts at the newest event.
    pub async fn read_stream_backward(
        &self,
        stream_id: &str,
        from: u64,
        count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e \
              WHERE e.stream_id = $1 AND e.stream_version <= $2 \
              ORDER BY e.stream_version DESC LIMIT $3"
        );
        self.read_stream(&sql, stream_id, from, count).await
    }

    async fn read_stream(
        &self,
        sql: &str,
        stream_id: &str,
        from: u64,
        count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.pool.get().await?;
        let events = query_stream(&client, sql, stream_id, from, count).await?;
        self.note_read(stream_id, &events);
        Ok(events)
    }

    /// Versions read outside a transaction were committed: appends at them need no probe.
    fn note_read(&self, stream_id: &str, events: &[RecordedEvent]) {
        if let Some(version) = events.iter().map(|e| e.stream_version).max() {
            self.shared.known_versions.note(stream_id, version);
        }
    }

    /// The events of `stream_id` that the global log holds at or before `position`, in
    /// stream order: the stream as a reader at that position saw it. (A stream's events
    /// take positions in stream order, so this is a prefix of the stream.)
    pub async fn read_stream_until_position(
        &self,
        stream_id: &str,
        position: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.pool.get().await?;
        // Events take positions in `(transaction_id, seq)` order, every one up to the head:
        // those at or before `position` are those at or before its pair (or the head's, if
        // `position` is beyond it).
        let last = client
            .query_opt(
                "SELECT s.transaction_ids[i] AS transaction_id, s.seqs[i] AS seq \
                   FROM (SELECT transaction_ids, seqs, \
                                least($1, last_position) - first_position + 1 AS i \
                           FROM log_seals WHERE first_position <= $1 \
                          ORDER BY first_position DESC LIMIT 1) s",
                &[&i64::try_from(position).unwrap_or(i64::MAX)],
            )
            .await?;
        let Some(last) = last else {
            return Ok(Vec::new());
        };
        let last: (Xid8, i64) = (last.try_get("transaction_id")?, last.try_get("seq")?);
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e \
              WHERE e.stream_id = $1 AND (e.transaction_id, e.seq) <= ($2, $3) \
                AND e.stream_version > $4 \
              ORDER BY e.stream_version LIMIT $5"
        );
        let statement = client.prepare_cached(&sql).await?;
        let mut events: Vec<RecordedEvent> = Vec::new();
        loop {
            // Paged by stream version, so that a long stream is read whole.
            let after_version = events
                .last()
                .map_or(0, |e| i64::try_from(e.stream_version).unwrap_or(i64::MAX));
            let rows = client
                .query(
                    &statement,
                    &[
                        &stream_id,
                        &last.0,
                        &last.1,
                        &after_version,
                        &limit(MAX_READ_BATCH),
                    ],
                )
                .await?;
            for row in &rows {
                events.push(RecordedEvent::from_row(row)?);
            }
            if rows.len() < MAX_READ_BATCH {
                return Ok(events);
            }
        }
    }

    /// Up to `count` sealed events of `stream_id` after version `after_version`, in stream
    /// order, with their positions and links (the audit view of one stream: a stream's
    /// sealed events are a prefix of it).
    pub async fn read_stream_sealed(
        &self,
        stream_id: &str,
        after_version: u64,
        count: usize,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        let sql = format!(
            "SELECT s.first_position + l.i - 1 AS position, \
                    CASE WHEN l.i = 1 THEN s.prev_hash ELSE s.hashes[l.i - 1] END AS prev_hash, \
                    s.hashes[l.i] AS hash, {EVENT_COLUMNS} \
               FROM events e \
               CROSS JOIN LATERAL ( \
                    SELECT * FROM log_seals s \
                     WHERE (s.last_transaction_id, s.last_seq) >= (e.transaction_id, e.seq) \
                     ORDER BY s.last_transaction_id, s.last_seq LIMIT 1) s \
               CROSS JOIN LATERAL array_position(s.seqs, e.seq) AS l(i) \
              WHERE e.stream_id = $1 AND e.stream_version > $2 AND l.i IS NOT NULL \
              ORDER BY e.stream_version LIMIT $3"
        );
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(&sql).await?;
        let after_version = i64::try_from(after_version).unwrap_or(i64::MAX);
        let rows = client
            .query(&statement, &[&stream_id, &after_version, &limit(count)])
            .await?;
        rows.iter().map(logged_from_row).collect()
    }

    /// The current version of a stream (0 when it has no events).
    pub async fn stream_version(&self, stream_id: &str) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT coalesce(max(stream_version), 0) AS version FROM events WHERE stream_id = $1",
            )
            .await?;
        let row = client.query_one(&statement, &[&stream_id]).await?;
        let version = to_u64(row.try_get("version")?, "stream version")?;
        self.shared.known_versions.note(stream_id, version);
        Ok(version)
    }

    /// Up to `count` events of the global log after position `after`, in order. Only sealed
    /// events are in the global log; an event appended a moment ago may not be yet.
    pub async fn read_log(&self, after: u64, count: usize) -> Result<Vec<LoggedEvent>, StoreError> {
        let client = self.pool.get().await?;
        read_log_after(&client, after, count).await
    }

    /// The last sealed position and its hash, if anything is sealed.
    pub async fn log_head(&self) -> Result<Option<(u64, Hash)>, StoreError> {
        let client = self.pool.get().await?;
        let row = client.query_opt(LOG_HEAD_SQL, &[]).await?;
        row.map(|row| {
            let bytes: &[u8] = row.try_get("hash")?;
            let hash = Hash::from_slice(bytes)
                .ok_or_else(|| StoreError::corrupt("hash is not 32 bytes"))?;
            Ok((to_u64(row.try_get("position")?, "position")?, hash))
        })
        .transpose()
    }
}
