//! Recomputing the hash chain from the stored bytes.
//!
//! Each position's event is read as stored (its JSON as the text jsonb gives back, not a
//! struct serialised again), its content hash and link recomputed, and compared with the stored
//! ones; the first position that does not hold is reported with what is wrong there.
//! docs/EVENT-STORE.md lists what that catches. Besides the chain, verification checks what
//! the sealer relies on: each link's transaction id is its event's, `(transaction_id, seq)`
//! strictly increases along positions, and no committed event sorting before the last linked
//! one was left without a position (a count on the `(transaction_id, seq)` index first, a
//! search only when it finds too many). The readers of the log trust the seals to follow one
//! another, so that is checked apart, from each seal's first and last positions and its arrays'
//! shapes, and reported at the first position it leaves wrong; the positions before it are
//! verified, and nothing from it on is read.
//!
//! Rows are read in batches of 10,000 by position on one connection, as the store's reader
//! reads the log: the seals cut into positions here, then their events by one range of `seq`
//! (see [`read_batch_from_seals`]). While one batch is hashed on a blocking thread (content
//! hashes in parallel on up to four threads, then the links in order), the next is read, so
//! the database and the hashing work at the same time, and a long verification never stalls
//! the async workers of the process that runs it.
//!
//! [`EventStore::verify_after`] starts from a link verified earlier, which a signer holds in
//! memory (see [`crate::checkpoint`]); the stored link there must still be that one. Events
//! committed after the last verified one are counted, not judged ([`VerifyReport::unsealed`]).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Statement;
use uuid::Uuid;

use crate::authentication::{Authenticity, HistoryKeys};
use crate::chain;
use crate::model::{to_u64, Metadata};
use crate::read::{seals_covering_sql, too_sparse_for_a_range};
use crate::xid::{RawJson, Xid8};
use crate::{EventStore, Hash, StoreError};

const VERIFY_BATCH: i64 = 10_000;

/// The stored link at position `$1`, if there is one.
const LINK_AT_SQL: &str =
    "SELECT hash, transaction_id, seq FROM log_links($1::bigint - 1, 1) WHERE position = $1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub position: u64,
    /// Lower-case hex of the SHA-256 link.
    pub hash: String,
}

/// The result of recomputing the chain; serialises as the audit API's verify answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    /// Events whose link was recomputed and found right.
    pub checked: u64,
    /// The last good link (the head of the chain when `ok`).
    pub head: Option<ChainHead>,
    /// The first position whose stored bytes do not give its stored link, or that is
    /// missing.
    pub first_bad_position: Option<u64>,
    /// What is wrong at `first_bad_position`.
    pub problem: Option<String>,
    /// Committed events the verification did not reach: not given a position by the sealer
    /// yet, or given one after the verification read the log (not an error).
    pub unsealed: u64,
    /// With a history key: the events whose authenticator holds. `None` without a key.
    pub authenticated: Option<u64>,
    /// With a history key: the events before the first authenticated one, written before a
    /// key was set (not an error; any event after it without a valid authenticator is).
    pub unauthenticated: Option<u64>,
}

/// Where recomputation stands: the last good position and its link, and the
/// `(transaction_id, seq)` it sealed.
#[derive(Debug, Clone, Copy)]
struct Progress {
    checked: u64,
    prev_hash: Hash,
    last_pair: Option<(Xid8, i64)>,
    /// A position whose recomputed link is wanted, and that link once reached.
    probe: Option<u64>,
    probed: Option<Hash>,
    /// Events authenticated, and events before the first authenticated one.
    authenticated: u64,
    unauthenticated: u64,
    /// An authenticated event has been met: every later one must be too.
    authentication_began: bool,
}

impl Progress {
    fn head(&self) -> Option<ChainHead> {
        head_of(self.checked, &self.prev_hash)
    }

    fn bad(&self, position: u64, problem: impl Into<String>) -> VerifyReport {
        VerifyReport {
            ok: false,
            checked: self.checked,
            head: self.head(),
            first_bad_position: Some(position),
            problem: Some(problem.into()),
            unsealed: 0,
            authenticated: None,
            unauthenticated: None,
        }
    }
}

fn head_of(position: u64, hash: &Hash) -> Option<ChainHead> {
    (position > 0).then(|| ChainHead {
        position,
        hash: hash.to_hex(),
    })
}

/// One log row and its event exactly as stored, owned so that another thread can hash it.
#[cfg_attr(test, derive(Debug, PartialEq, Clone))]
struct ChainRow {
    position: i64,
    /// `None` when the seal's arrays are not all as long as it claims (a forged seal).
    link: Option<StoredLink>,
    event_xid: Option<Xid8>,
    /// `None` when the log row's event row is missing.
    event: Option<StoredEvent>,
}

#[cfg_attr(test, derive(Debug, PartialEq, Clone))]
struct StoredLink {
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
    pair: (Xid8, i64),
}

#[cfg_attr(test, derive(Debug, PartialEq, Clone))]
struct StoredEvent {
    stream_id: String,
    stream_version: i64,
    event_id: Uuid,
    event_type: String,
    schema_version: i32,
    data: String,
    metadata: String,
    recorded_at: DateTime<Utc>,
    content_hash: Vec<u8>,
    authenticator: Option<Vec<u8>>,
}

impl StoredEvent {
    /// The event of a row holding [`EVENT_COLUMNS`].
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, StoreError> {
        Ok(StoredEvent {
            stream_id: row.try_get("stream_id")?,
            stream_version: row.try_get("stream_version")?,
            event_id: row.try_get("event_id")?,
            event_type: row.try_get("event_type")?,
            schema_version: row.try_get("schema_version")?,
            data: row.try_get::<_, RawJson>("data")?.0.to_owned(),
            metadata: row.try_get::<_, RawJson>("metadata")?.0.to_owned(),
            recorded_at: row.try_get("recorded_at")?,
            content_hash: row.try_get("content_hash")?,
            authenticator: row.try_get("authenticator")?,
        })
    }
}

/// What verification reads of an event: its own columns and its transaction id.
const EVENT_COLUMNS: &str = "e.transaction_id AS event_xid, e.stream_id, e.stream_version, \
     e.event_id, e.event_type, e.schema_version, e.data, e.metadata, e.recorded_at, \
     e.content_hash, e.authenticator";

impl ChainRow {
    /// A row of [`joined_batch_sql`].
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, StoreError> {
        let event = if row.try_get::<_, bool>("present")? {
            Some(StoredEvent::from_row(row)?)
        } else {
            None
        };
        let link = match (
            row.try_get("prev_hash")?,
            row.try_get("hash")?,
            row.try_get("log_xid")?,
            row.try_get("log_seq")?,
        ) {
            (Some(prev_hash), Some(hash), Some(xid), Some(seq)) => Some(StoredLink {
                prev_hash,
                hash,
                pair: (xid, seq),
            }),
            _ => None,
        };
        Ok(ChainRow {
            position: row.try_get("position")?,
            link,
            event_xid: row.try_get("event_xid")?,
            event,
        })
    }
}

/// Checks one batch after `progress`: what the chain covers, and what the sealer relies on
/// (its event's transaction id, `(transaction_id, seq)` order). Pure computation.
// The error is the final report, made once per verification: not worth a box.
#[allow(clippy::result_large_err)]
fn check_batch(
    mut progress: Progress,
    rows: &[ChainRow],
    keys: Option<&HistoryKeys>,
) -> Result<Progress, VerifyReport> {
    let content_hashes = content_hashes(rows);
    for (row, content_hash) in rows.iter().zip(content_hashes) {
        let expected = progress.checked + 1;
        let position = u64::try_from(row.position).unwrap_or(0);
        if position != expected {
            return Err(progress.bad(
                expected,
                format!("position {expected} is missing (next is {})", row.position),
            ));
        }
        let Some(link) = &row.link else {
            return Err(progress.bad(
                position,
                "its seal does not hold a transaction id, seq and hash for it",
            ));
        };
        let Some(event) = &row.event else {
            return Err(progress.bad(position, "its event row is missing"));
        };
        // The sealer links events in (transaction_id, seq) order and resumes from the last
        // pair: a pair out of order, or not the event's own, would make it skip events.
        if Some(link.pair.0) != row.event_xid {
            return Err(progress.bad(position, "the log's transaction id is not its event's"));
        }
        if progress.last_pair.is_some_and(|last| link.pair <= last) {
            return Err(progress.bad(position, "out of (transaction, seq) order"));
        }
        if link.prev_hash.as_slice() != progress.prev_hash.0.as_slice() {
            return Err(progress.bad(
                position,
                "prev_hash is not the hash of the previous position",
            ));
        }
        let content_hash = match content_hash {
            Some(Ok(hash)) => hash,
            None => return Err(progress.bad(position, "its event row is missing")),
            Some(Err(problem)) => {
                return Err(progress.bad(position, format!("unreadable event: {problem}")))
            }
        };
        if content_hash.0.as_slice() != event.content_hash.as_slice() {
            return Err(progress.bad(
                position,
                "the stored content does not give the stored content hash",
            ));
        }
        let recomputed = chain::link(
            &progress.prev_hash,
            &chain::LinkInput {
                position,
                stream_id: &event.stream_id,
                stream_version: u64::try_from(event.stream_version).unwrap_or(0),
                recorded_at: &event.recorded_at,
                content_hash: &content_hash,
            },
        );
        if link.hash.as_slice() != recomputed.0.as_slice() {
            return Err(progress.bad(position, "the stored event does not give the stored hash"));
        }
        if let Some(keys) = keys {
            match keys.check(
                &event.stream_id,
                &content_hash,
                event.authenticator.as_deref(),
            ) {
                Authenticity::Valid => {
                    progress.authenticated += 1;
                    progress.authentication_began = true;
                }
                Authenticity::Missing if !progress.authentication_began => {
                    progress.unauthenticated += 1
                }
                Authenticity::Missing => {
                    return Err(progress.bad(
                        position,
                        "not authenticated, though events before it are: added by another \
                         path than crier's appends",
                    ))
                }
                Authenticity::UnknownKey(id) => {
                    return Err(progress.bad(
                        position,
                        format!(
                        "authenticated by history key {id}, which this verification was not given"
                    ),
                    ))
                }
                Authenticity::Invalid => {
                    return Err(progress.bad(
                        position,
                        "its authenticator is not its own: forged, or the event was changed",
                    ))
                }
            }
        }
        if progress.probe == Some(position) {
            progress.probed = Some(recomputed);
        }
        progress = Progress {
            checked: position,
            prev_hash: recomputed,
            last_pair: Some(link.pair),
            ..progress
        };
    }
    Ok(progress)
}

/// The content hash of every row's event, computed on the machine's cores in parallel
/// (independent of one another, unlike the links, and most of the work).
fn content_hashes(rows: &[ChainRow]) -> Vec<Option<Result<Hash, String>>> {
    let hash_all = |rows: &[ChainRow]| -> Vec<Option<Result<Hash, String>>> {
        rows.iter()
            .map(|row| row.event.as_ref().map(recompute_content_hash))
            .collect()
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    if threads < 2 || rows.len() < 256 {
        return hash_all(rows);
    }
    let chunk = rows.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = rows
            .chunks(chunk)
            .map(|part| scope.spawn(move || hash_all(part)))
            .collect();
        parts
            .into_iter()
            .flat_map(|part| {
                part.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

fn recompute_content_hash(event: &StoredEvent) -> Result<Hash, String> {
    let schema_version = u32::try_from(event.schema_version)
        .map_err(|_| format!("negative schema version {}", event.schema_version))?;
    if event.stream_version < 1 {
        return Err(format!("stream version {}", event.stream_version));
    }
    let data: Value = serde_json::from_str(&event.data).map_err(|e| format!("data: {e}"))?;
    let metadata: Value =
        serde_json::from_str(&event.metadata).map_err(|e| format!("metadata: {e}"))?;
    // The hash covers the metadata as stored, but it must be exactly what the store writes
    // (the export carries these four fields and nothing else).
    Metadata::deserialize(&metadata).map_err(|e| format!("metadata: {e}"))?;
    let keys: Option<Vec<&str>> = metadata
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect());
    let mut keys = keys.ok_or("metadata is not an object")?;
    keys.sort_unstable();
    if keys != ["actor", "causation_id", "correlation_id", "request_id"] {
        return Err(format!(
            "metadata must hold exactly actor, request_id, correlation_id and causation_id, not {keys:?}"
        ));
    }
    Ok(chain::content_hash(
        &event.event_id,
        &event.event_type,
        schema_version,
        &data,
        &metadata,
    ))
}

impl EventStore {
    /// Recomputes every link of the chain, in position order, from the stored bytes.
    pub async fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.verify_after(0, Hash::GENESIS).await
    }

    /// Recomputes the links after `position`, trusting that its link is `hash` (a
    /// checkpoint verified earlier): the stored link there must be `hash`. Position 0 with
    /// [`Hash::GENESIS`] verifies the whole chain.
    pub async fn verify_after(
        &self,
        position: u64,
        hash: Hash,
    ) -> Result<VerifyReport, StoreError> {
        Ok(self.verify_from(position, hash, None).await?.0)
    }

    /// Recomputes the whole chain and also answers the link it recomputed at `position`
    /// (none if the chain does not reach it or breaks before).
    pub async fn verify_with_link_at(
        &self,
        position: u64,
    ) -> Result<(VerifyReport, Option<Hash>), StoreError> {
        self.verify_from(0, Hash::GENESIS, Some(position)).await
    }

    async fn verify_from(
        &self,
        position: u64,
        hash: Hash,
        probe: Option<u64>,
    ) -> Result<(VerifyReport, Option<Hash>), StoreError> {
        let client = self.pool().get().await?;
        let keys = self.config().history_keys.clone();
        let mut progress = Progress {
            checked: position,
            prev_hash: hash,
            last_pair: None,
            probe,
            probed: None,
            authenticated: 0,
            unauthenticated: 0,
            authentication_began: false,
        };
        if position > 0 {
            let row = client
                .query_opt(LINK_AT_SQL, &[&i64::try_from(position).unwrap_or(i64::MAX)])
                .await?;
            let start = Progress {
                checked: position - 1,
                prev_hash: Hash::GENESIS,
                ..progress
            };
            let Some(row) = row else {
                let report = start.bad(position, format!("position {position} is missing"));
                return Ok((
                    VerifyReport {
                        head: None,
                        ..report
                    },
                    None,
                ));
            };
            if row.try_get::<_, &[u8]>("hash")? != hash.0.as_slice() {
                let report = start.bad(position, "the stored link is not the trusted one");
                return Ok((
                    VerifyReport {
                        head: None,
                        ..report
                    },
                    None,
                ));
            }
            progress.last_pair = Some((row.try_get("transaction_id")?, row.try_get("seq")?));
            if keys.is_some() {
                // Whether authentication had begun by the trusted position: its event says.
                let began: Option<bool> = client
                    .query_opt(
                        "SELECT e.authenticator IS NOT NULL FROM events e WHERE e.seq = $1",
                        &[&progress.last_pair.map(|(_, seq)| seq)],
                    )
                    .await?
                    .map(|row| row.try_get(0))
                    .transpose()?;
                progress.authentication_began = began == Some(true);
            }
        }
        let statements = BatchStatements::prepare(&client).await?;
        // The reads trust the seals to follow one another; whether they do is checked apart,
        // and nothing from the first position a broken seal leaves wrong is read: its arrays
        // may not even be readable (the join fails on two-dimensional ones). It is reported
        // once the positions before it are found right.
        let broken = broken_seal(&client)
            .await?
            .filter(|(bad, _)| *bad > position);
        let last_readable = broken.as_ref().map_or(i64::MAX, |(bad, _)| {
            i64::try_from(*bad).map_or(i64::MAX, |bad| bad - 1)
        });
        let fetch = |after: i64| {
            let count = VERIFY_BATCH.min(last_readable.saturating_sub(after));
            read_batch(&client, &statements, after, count)
        };
        let mut batch = fetch(i64::try_from(position).unwrap_or(i64::MAX)).await?;
        while !batch.is_empty() {
            let last_read = batch.last().map_or(0, |row| row.position);
            let more = batch.len() as i64 == VERIFY_BATCH;
            let batch_keys = keys.clone();
            #[allow(clippy::result_large_err)]
            let checking = tokio::task::spawn_blocking(move || {
                check_batch(progress, &batch, batch_keys.as_ref())
            });
            let reading = async {
                if more {
                    fetch(last_read).await
                } else {
                    Ok(Vec::new())
                }
            };
            let (checked, next) = tokio::join!(checking, reading);
            progress = match checked {
                Ok(Ok(progress)) => progress,
                Ok(Err(report)) => {
                    // A broken seal before the position this batch found wrong comes first.
                    let report = match broken {
                        Some((bad, problem)) if report.first_bad_position > Some(bad) => {
                            bad_after_good_links(&client, bad, problem).await?
                        }
                        _ => report,
                    };
                    return Ok((report, None));
                }
                Err(e) => return Err(StoreError::corrupt_by("the verification task failed", e)),
            };
            batch = next?;
        }
        if let Some((bad, problem)) = broken {
            return Ok((bad_after_good_links(&client, bad, problem).await?, None));
        }
        if let Some((seq, position)) =
            skipped_event(&client, progress.last_pair, progress.checked).await?
        {
            // The links up to `position - 1` are right; the event belongs before `position`.
            let problem =
                format!("event seq {seq} was committed before this position but never linked");
            return Ok((
                bad_after_good_links(&client, position, problem).await?,
                None,
            ));
        }
        let unsealed = self.count_unverified(&client, progress.last_pair).await?;
        let report = VerifyReport {
            ok: true,
            checked: progress.checked,
            head: progress.head(),
            first_bad_position: None,
            problem: None,
            unsealed,
            authenticated: keys.as_ref().map(|_| progress.authenticated),
            unauthenticated: keys.as_ref().map(|_| progress.unauthenticated),
        };
        Ok((report, progress.probed))
    }

    /// Committed events beyond the last verified one: not sealed yet, or sealed after this
    /// verification read the log (not an error). Counted after the verified pair, not after
    /// the log's current last row, so that `unsealed == 0` means the verification covered
    /// every event committed before it ended.
    async fn count_unverified(
        &self,
        client: &tokio_postgres::Client,
        last_pair: Option<(Xid8, i64)>,
    ) -> Result<u64, StoreError> {
        let (xid, seq) = last_pair.unwrap_or((Xid8(0), 0));
        let row = client
            .query_one(
                "SELECT count(*) AS n FROM events WHERE (transaction_id, seq) > ($1, $2)",
                &[&xid, &seq],
            )
            .await?;
        to_u64(row.try_get("n")?, "count")
    }
}

/// The positions after `$1`, at most `$2`, joined with their events: `log_links` as one
/// statement, its events probed by `seq` one link at a time.
fn joined_batch_sql() -> String {
    format!(
        "SELECT l.position, l.prev_hash, l.hash, l.seq AS log_seq, \
                l.transaction_id AS log_xid, e.seq IS NOT NULL AS present, {EVENT_COLUMNS} \
           FROM log_links($1, $2) l LEFT JOIN events e ON e.seq = l.seq \
          ORDER BY l.position"
    )
}

/// The seals covering a batch, each array as stored.
const SEALS_AS_STORED_SQL: &str =
    seals_covering_sql!("first_position, transaction_ids, seqs, prev_hash, hashes");

struct BatchStatements {
    joined: Statement,
    seals: Statement,
    events: Statement,
}

impl BatchStatements {
    async fn prepare(client: &tokio_postgres::Client) -> Result<Self, StoreError> {
        Ok(BatchStatements {
            joined: client.prepare(&joined_batch_sql()).await?,
            seals: client.prepare(SEALS_AS_STORED_SQL).await?,
            events: client
                .prepare(&format!(
                    "SELECT e.seq, {EVENT_COLUMNS} FROM events e WHERE e.seq BETWEEN $1 AND $2"
                ))
                .await?,
        })
    }
}

/// One position as its seal holds it: what `log_links` gives for it, where a part that a
/// forged seal lacks (an array too short, a null element) is `None`, as the function's NULL.
struct SealedPosition<'a> {
    position: i64,
    transaction_id: Option<Xid8>,
    seq: Option<i64>,
    prev_hash: Option<&'a [u8]>,
    hash: Option<&'a [u8]>,
}

/// At most `count` positions after `after`, as [`joined_batch_sql`] gives them.
async fn read_batch(
    client: &tokio_postgres::Client,
    statements: &BatchStatements,
    after: i64,
    count: i64,
) -> Result<Vec<ChainRow>, StoreError> {
    if count < 1 {
        return Ok(Vec::new());
    }
    match read_batch_from_seals(client, statements, after, count).await? {
        Some(rows) => Ok(rows),
        None => read_batch_joined(client, statements, after, count).await,
    }
}

/// At most `count` positions after `after`, as [`joined_batch_sql`] gives them.
async fn read_batch_joined(
    client: &tokio_postgres::Client,
    statements: &BatchStatements,
    after: i64,
    count: i64,
) -> Result<Vec<ChainRow>, StoreError> {
    let rows = client.query(&statements.joined, &[&after, &count]).await?;
    rows.iter().map(ChainRow::from_row).collect()
}

/// What [`read_batch_joined`] reads, read as the store's reader reads the log: the seals cut into
/// positions here, then their events by one range of `seq` (see
/// [`crate::read::read_log_after`], where the join, probing the events' index once per
/// position, cost twice as much). The seals are cut as `log_links` cuts them, whatever their
/// arrays hold, and ordered and limited as its `ORDER BY` and `LIMIT` do; the store's reader
/// cuts them the same way ([`crate::read`]'s `read_links_after`) but trusts their shape.
/// The one difference: a position that two seals link comes in their order, where the join
/// leaves it open. `None` when the join must read the batch instead: a seal's arrays do not
/// decode as one-dimensional, the positions' events are too sparse for one range, or two
/// event rows share a `seq` (which only a dropped primary key allows).
async fn read_batch_from_seals(
    client: &tokio_postgres::Client,
    statements: &BatchStatements,
    after: i64,
    count: i64,
) -> Result<Option<Vec<ChainRow>>, StoreError> {
    let last_wanted = after.saturating_add(count);
    let seals = client
        .query(&statements.seals, &[&after, &last_wanted])
        .await?;
    let mut positions: Vec<SealedPosition<'_>> = Vec::new();
    for seal in &seals {
        let first: i64 = seal.try_get("first_position")?;
        let prev_hash: &[u8] = seal.try_get("prev_hash")?;
        let arrays = (
            seal.try_get::<_, Vec<Option<Xid8>>>("transaction_ids"),
            seal.try_get::<_, Vec<Option<i64>>>("seqs"),
            seal.try_get::<_, Vec<Option<&[u8]>>>("hashes"),
        );
        let (Ok(transaction_ids), Ok(seqs), Ok(hashes)) = arrays else {
            return Ok(None);
        };
        // As `log_links`: a position for each element of `seqs`, the other arrays' elements
        // at the same index (none past their end), each `prev_hash` the hash before.
        for (index, &seq) in seqs.iter().enumerate() {
            let position = first.saturating_add(index as i64);
            if position <= after {
                continue;
            }
            positions.push(SealedPosition {
                position,
                transaction_id: transaction_ids.get(index).copied().flatten(),
                seq,
                prev_hash: match index.checked_sub(1) {
                    None => Some(prev_hash),
                    Some(before) => hashes.get(before).copied().flatten(),
                },
                hash: hashes.get(index).copied().flatten(),
            });
        }
    }
    // In order already unless seals overlap, where a position comes twice, as in `log_links`.
    positions.sort_by_key(|sealed| sealed.position);
    positions.truncate(usize::try_from(count).unwrap_or(0));
    let seqs = || positions.iter().filter_map(|sealed| sealed.seq);
    let events = match seqs().min().zip(seqs().max()) {
        None => Vec::new(), // no position names an event
        Some((lowest, highest)) if too_sparse_for_a_range(lowest, highest, positions.len()) => {
            return Ok(None)
        }
        Some((lowest, highest)) => {
            client
                .query(&statements.events, &[&lowest, &highest])
                .await?
        }
    };
    let mut by_seq: HashMap<i64, &tokio_postgres::Row> = HashMap::with_capacity(events.len());
    for row in &events {
        if by_seq.insert(row.try_get("seq")?, row).is_some() {
            return Ok(None); // the join gives each of them, as verification must see
        }
    }
    let rows = positions
        .into_iter()
        .map(|sealed| {
            let event = sealed.seq.and_then(|seq| by_seq.get(&seq).copied());
            let link = match (
                sealed.prev_hash,
                sealed.hash,
                sealed.transaction_id,
                sealed.seq,
            ) {
                (Some(prev_hash), Some(hash), Some(xid), Some(seq)) => Some(StoredLink {
                    prev_hash: prev_hash.to_vec(),
                    hash: hash.to_vec(),
                    pair: (xid, seq),
                }),
                _ => None,
            };
            Ok(ChainRow {
                position: sealed.position,
                link,
                event_xid: event.map(|row| row.try_get("event_xid")).transpose()?,
                event: event.map(StoredEvent::from_row).transpose()?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Some(rows))
}

/// The report for a problem at `position` when every link before it was recomputed and
/// found right.
async fn bad_after_good_links(
    client: &tokio_postgres::Client,
    position: u64,
    problem: String,
) -> Result<VerifyReport, StoreError> {
    let good = position.saturating_sub(1);
    let row = client
        .query_opt(LINK_AT_SQL, &[&i64::try_from(good).unwrap_or(i64::MAX)])
        .await?;
    let head = match row {
        Some(row) => Hash::from_slice(row.try_get("hash")?).and_then(|h| head_of(good, &h)),
        None => None,
    };
    Ok(VerifyReport {
        ok: false,
        checked: good,
        head,
        first_bad_position: Some(position),
        problem: Some(problem),
        unsealed: 0,
        authenticated: None,
        unauthenticated: None,
    })
}

/// The first seal that does not fit the log: one that does not start right after the one
/// before (a hole, or positions linked twice), or whose arrays are not one-dimensional from
/// index 1 and as long as one another. Answers the first position it leaves wrong, and why.
async fn broken_seal(client: &tokio_postgres::Client) -> Result<Option<(u64, String)>, StoreError> {
    let row = client
        .query_opt(
            "SELECT first_position, previous_last, positions, transaction_ids, hashes, from_one \
               FROM (SELECT first_position, \
                            lag(last_position) OVER (ORDER BY first_position) AS previous_last, \
                            cardinality(seqs) AS positions, \
                            cardinality(transaction_ids) AS transaction_ids, \
                            cardinality(hashes) AS hashes, \
                            coalesce(array_ndims(seqs) = 1 AND array_lower(seqs, 1) = 1 \
                                 AND array_ndims(transaction_ids) = 1 \
                                 AND array_lower(transaction_ids, 1) = 1 \
                                 AND array_ndims(hashes) = 1 AND array_lower(hashes, 1) = 1, \
                                 false) AS from_one \
                       FROM log_seals) s \
              WHERE first_position <> coalesce(previous_last, 0) + 1 OR NOT from_one \
                 OR transaction_ids <> positions OR hashes <> positions \
              ORDER BY first_position LIMIT 1",
            &[],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let first: i64 = row.try_get("first_position")?;
    let Ok(first) = u64::try_from(first) else {
        return Ok(Some((1, format!("a seal starts at position {first}"))));
    };
    let previous_last: Option<i64> = row.try_get("previous_last")?;
    let expected = previous_last.map_or(Ok(0), |p| to_u64(p, "position"))? + 1;
    if first > expected {
        return Ok(Some((
            expected,
            format!("position {expected} is missing (the next seal starts at {first})"),
        )));
    }
    if first < expected {
        return Ok(Some((first, "two seals link this position".to_owned())));
    }
    if !row.try_get::<_, bool>("from_one")? {
        return Ok(Some((
            first,
            "its seal's arrays are not one-dimensional from index 1".to_owned(),
        )));
    }
    let lengths: [i32; 3] = [
        row.try_get("positions")?,
        row.try_get("transaction_ids")?,
        row.try_get("hashes")?,
    ];
    let shortest = lengths.into_iter().min().unwrap_or(0);
    Ok(Some((
        first + u64::try_from(shortest).unwrap_or(0),
        format!(
            "the seal from position {first} holds {} seqs, {} transaction ids and {} hashes",
            lengths[0], lengths[1], lengths[2]
        ),
    )))
}

/// An event that sorts before the chain's last linked event but has no position: the chain
/// skipped it. Returns its seq and the first position that sorts after it.
///
/// The `linked` positions up to the last pair hold distinct events at or below it (verified
/// along the chain), so there is none unless more events than that sort at or below it: a
/// count on the `(transaction_id, seq)` index. Only then is the event looked for.
async fn skipped_event(
    client: &tokio_postgres::Client,
    last_pair: Option<(Xid8, i64)>,
    linked: u64,
) -> Result<Option<(i64, u64)>, StoreError> {
    let Some((xid, seq)) = last_pair else {
        return Ok(None);
    };
    let row = client
        .query_one(
            "SELECT count(*) AS n FROM events WHERE (transaction_id, seq) <= ($1, $2)",
            &[&xid, &seq],
        )
        .await?;
    if to_u64(row.try_get("n")?, "count")? <= linked {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "WITH linked AS (SELECT unnest(seqs) AS seq FROM log_seals) \
             SELECT e.seq, e.transaction_id FROM events e \
              WHERE (e.transaction_id, e.seq) < ($1, $2) \
                AND NOT EXISTS (SELECT 1 FROM linked l WHERE l.seq = e.seq) \
              ORDER BY e.transaction_id, e.seq LIMIT 1",
            &[&xid, &seq],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let skipped: (Xid8, i64) = (row.try_get("transaction_id")?, row.try_get("seq")?);
    // The first link after it is in the first seal that ends after it.
    let row = client
        .query_opt(
            "SELECT s.first_position + l.ord - 1 AS position \
               FROM (SELECT first_position, transaction_ids, seqs FROM log_seals \
                      WHERE (last_transaction_id, last_seq) > ($1, $2) \
                      ORDER BY last_transaction_id, last_seq LIMIT 1) s, \
                    unnest(s.transaction_ids, s.seqs) WITH ORDINALITY AS l(transaction_id, seq, ord) \
              WHERE (l.transaction_id, l.seq) > ($1, $2) \
              ORDER BY l.ord LIMIT 1",
            &[&skipped.0, &skipped.1],
        )
        .await?;
    let position = match row {
        Some(row) => to_u64(row.try_get("position")?, "position")?,
        None => 1,
    };
    Ok(Some((skipped.1, position)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{sealed_history, TestDatabase};

    /// Each forgery, made on a fresh history of 12 events, and whether the seals can still
    /// be cut here when read from the start (`false`: the join reads the batch).
    const FORGERIES: &[(&str, bool)] = &[
        ("SELECT 1", true),
        // Arrays shorter or longer than `seqs`, and null elements.
        (
            "UPDATE log_seals SET hashes = hashes[:9 - first_position + 1] \
           WHERE 10 BETWEEN first_position AND last_position",
            true,
        ),
        (
            "UPDATE log_seals SET transaction_ids = transaction_ids[:7 - first_position + 1] \
           WHERE 8 BETWEEN first_position AND last_position",
            true,
        ),
        (
            "UPDATE log_seals SET transaction_ids = transaction_ids || '99999999'::xid8",
            true,
        ),
        ("UPDATE log_seals SET hashes = hashes || sha256('y')", true),
        (
            "UPDATE log_seals SET seqs[3] = NULL, hashes[5] = NULL",
            true,
        ),
        // An element before index 1: `log_links` and the cut both read the array in order.
        ("UPDATE log_seals SET hashes[0] = sha256('x')", true),
        (
            "UPDATE log_seals SET seqs[0] = seqs[1], transaction_ids[0] = transaction_ids[1]",
            true,
        ),
        // Seals that overlap, or leave a hole. (Where the sealer happened to start a seal
        // at 5, the seals' key refuses the overlap, and the history stays as sealed.)
        (
            "INSERT INTO log_seals (first_position, transaction_ids, seqs, prev_hash, hashes) \
          VALUES (5, ARRAY['1'::xid8], ARRAY[-1::bigint], sha256(''), ARRAY[sha256('')]) \
          ON CONFLICT DO NOTHING",
            true,
        ),
        (
            "INSERT INTO log_seals (first_position, transaction_ids, seqs, prev_hash, hashes) \
          VALUES (20, ARRAY['1'::xid8], ARRAY[-1::bigint], sha256(''), ARRAY[sha256('')])",
            true,
        ),
        // Events missing, or linked twice.
        (
            "DELETE FROM events WHERE seq = (SELECT seq FROM log_links(5, 1))",
            true,
        ),
        ("UPDATE log_seals SET seqs[4] = seqs[2]", true),
        // Two event rows under one linked seq, the primary key dropped.
        (
            "ALTER TABLE events DROP CONSTRAINT events_pkey; \
             INSERT INTO events (seq, transaction_id, stream_id, stream_version, event_id, \
                                 event_type, schema_version, data, metadata, recorded_at, \
                                 content_hash) OVERRIDING SYSTEM VALUE \
             SELECT seq, transaction_id, 'forged', stream_version, gen_random_uuid(), \
                    event_type, schema_version, data, metadata, recorded_at, content_hash \
               FROM events WHERE seq = (SELECT seq FROM log_links(3, 1))",
            false,
        ),
        // Arrays of two dimensions, and a link to a seq far from the others.
        ("UPDATE log_seals SET seqs = ARRAY[seqs, seqs]", false),
        ("UPDATE log_seals SET seqs[2] = seqs[2] + 1000000", false),
    ];

    /// The rows by position, and a position linked twice by its rows' contents: the
    /// join's `ORDER BY` leaves the order of such ties open.
    fn in_order(mut rows: Vec<ChainRow>) -> Vec<ChainRow> {
        rows.sort_by_cached_key(|row| (row.position, format!("{row:?}")));
        rows
    }

    /// Whatever a forger leaves in the seals, cutting them here reads what `log_links`
    /// joined with the events reads, so verification judges the same rows either way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_cut_from_the_seals_is_the_batch_log_links_gives_whatever_the_seals_hold() {
        for &(forgery, cut_here) in FORGERIES {
            let db = TestDatabase::create().await;
            let store = db.store();
            sealed_history(&store, 12).await;
            db.forge(forgery).await;
            let client = store.pool().get().await.expect("client");
            let statements = BatchStatements::prepare(&client).await.expect("prepare");
            let whole = read_batch_joined(&client, &statements, 0, 1000)
                .await
                .expect("join");
            let rows_at = |rows: &[ChainRow], position: i64| {
                rows.iter().filter(|row| row.position == position).count()
            };
            // Batches that end inside a seal, at a hole, or past the end.
            for (after, count) in [0, 4, 9, 12]
                .into_iter()
                .flat_map(|a| [(a, 3), (a, 5), (a, 100)])
            {
                let joined = read_batch_joined(&client, &statements, after, count)
                    .await
                    .expect("join");
                let cut = read_batch_from_seals(&client, &statements, after, count)
                    .await
                    .expect("cut");
                if (after, count) == (0, 100) {
                    assert_eq!(cut.is_some(), cut_here, "{forgery}");
                }
                if let Some(cut) = cut {
                    let (mut cut, mut joined) = (in_order(cut), in_order(joined.clone()));
                    let positions =
                        |rows: &[ChainRow]| rows.iter().map(|row| row.position).collect::<Vec<_>>();
                    assert_eq!(
                        positions(&cut),
                        positions(&joined),
                        "{forgery}, {count} after {after}"
                    );
                    // A batch that ends part-way through a position linked twice holds
                    // either of its rows there: the join's `ORDER BY` leaves ties open (and
                    // verification names the overlapping seal apart from the rows).
                    if let Some(end) = joined.last().map(|row| row.position) {
                        if rows_at(&joined, end) < rows_at(&whole, end) {
                            cut.retain(|row| row.position != end);
                            joined.retain(|row| row.position != end);
                        }
                    }
                    assert_eq!(cut, joined, "{forgery}, {count} after {after}");
                }
                assert!(after > 0 || !joined.is_empty(), "{forgery}: read nothing");
            }
        }
    }
}
