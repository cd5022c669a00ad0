//! Recomputing the hash chain from the stored bytes.

use serde::Serialize;

use crate::chain;
use crate::model::{to_u64, RecordedEvent};
use crate::read::EVENT_COLUMNS;
use crate::xid::Xid8;
use crate::{EventStore, Hash, StoreError};

const VERIFY_BATCH: i64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    /// Committed events not yet given a position by the sealer (not an error).
    pub unsealed: u64,
}

impl EventStore {
    /// Recomputes every link of the chain, in position order, from the stored bytes.
    pub async fn verify(&self) -> Result<VerifyReport, StoreError> {
        let client = self.pool().get().await?;
        let sql = format!(
            "SELECT l.position, l.prev_hash, l.hash, l.seq AS log_seq, l.transaction_id AS log_xid, \
                    e.transaction_id AS event_xid, e.seq IS NOT NULL AS present, {EVENT_COLUMNS} \
               FROM event_log l LEFT JOIN events e ON e.seq = l.seq \
              WHERE l.position > $1 ORDER BY l.position LIMIT $2"
        );
        let statement = client.prepare(&sql).await?;
        let mut checked = 0u64;
        let mut prev_hash = Hash::GENESIS;
        let mut after = 0i64;
        // The sealer links events in (transaction_id, seq) order and resumes from the last
        // pair: a pair out of order, or not the event's own, would make it skip events.
        let mut last_pair: Option<(Xid8, i64)> = None;
        let bad =
            |position: u64, problem: String, checked: u64, head: Option<ChainHead>| VerifyReport {
                ok: false,
                checked,
                head,
                first_bad_position: Some(position),
                problem: Some(problem),
                unsealed: 0,
            };
        let head_of = |position: u64, hash: &Hash| {
            (position > 0).then(|| ChainHead {
                position,
                hash: hash.to_hex(),
            })
        };
        loop {
            let rows = client.query(&statement, &[&after, &VERIFY_BATCH]).await?;
            for row in &rows {
                let expected = checked + 1;
                let head = head_of(checked, &prev_hash);
                let position = to_u64(row.try_get("position")?, "position")?;
                if position != expected {
                    return Ok(bad(
                        expected,
                        format!("position {expected} is missing (next is {position})"),
                        checked,
                        head,
                    ));
                }
                if !row.try_get::<_, bool>("present")? {
                    return Ok(bad(
                        position,
                        "its event row is missing".into(),
                        checked,
                        head,
                    ));
                }
                let pair = (
                    row.try_get::<_, Xid8>("log_xid")?,
                    row.try_get::<_, i64>("log_seq")?,
                );
                if Some(pair.0) != row.try_get::<_, Option<Xid8>>("event_xid")? {
                    return Ok(bad(
                        position,
                        "the log's transaction id is not its event's".into(),
                        checked,
                        head,
                    ));
                }
                if last_pair.is_some_and(|last| pair <= last) {
                    return Ok(bad(
                        position,
                        "out of (transaction, seq) order".into(),
                        checked,
                        head,
                    ));
                }
                last_pair = Some(pair);
                let stored_prev: &[u8] = row.try_get("prev_hash")?;
                if stored_prev != prev_hash.0.as_slice() {
                    return Ok(bad(
                        position,
                        "prev_hash is not the hash of the previous position".into(),
                        checked,
                        head,
                    ));
                }
                let (event, metadata) = match RecordedEvent::from_row_with_stored_metadata(row) {
                    Ok(read) => read,
                    Err(e) => {
                        return Ok(bad(
                            position,
                            format!("unreadable event: {e}"),
                            checked,
                            head,
                        ))
                    }
                };
                let content_hash = chain::content_hash(
                    &event.event_id,
                    &event.event_type,
                    event.schema_version,
                    &event.data,
                    &metadata,
                );
                if content_hash != event.content_hash {
                    return Ok(bad(
                        position,
                        "the stored content does not give the stored content hash".into(),
                        checked,
                        head,
                    ));
                }
                let recomputed = chain::link(
                    &prev_hash,
                    &chain::LinkInput {
                        position,
                        stream_id: &event.stream_id,
                        stream_version: event.stream_version,
                        recorded_at: &event.recorded_at,
                        content_hash: &content_hash,
                    },
                );
                let stored: &[u8] = row.try_get("hash")?;
                if stored != recomputed.0.as_slice() {
                    return Ok(bad(
                        position,
                        "the stored event does not give the stored hash".into(),
                        checked,
                        head,
                    ));
                }
                prev_hash = recomputed;
                checked = position;
            }
            if (rows.len() as i64) < VERIFY_BATCH {
                break;
            }
            after = i64::try_from(checked).unwrap_or(i64::MAX);
        }
        if let Some((seq, position)) = skipped_event(&client, last_pair).await? {
            // The links up to `position - 1` are right; the event belongs before `position`.
            let good = position.saturating_sub(1);
            let row = client
                .query_opt(
                    "SELECT hash FROM event_log WHERE position = $1",
                    &[&i64::try_from(good).unwrap_or(i64::MAX)],
                )
                .await?;
            let head = match row {
                Some(row) => Hash::from_slice(row.try_get("hash")?).and_then(|h| head_of(good, &h)),
                None => None,
            };
            return Ok(bad(
                position,
                format!("event seq {seq} was committed before this position but never linked"),
                good,
                head,
            ));
        }
        let unsealed = self.count_unsealed(&client).await?;
        Ok(VerifyReport {
            ok: true,
            checked,
            head: head_of(checked, &prev_hash),
            first_bad_position: None,
            problem: None,
            unsealed,
        })
    }

    /// Events committed after the sealer's last linked event, not linked yet (not an error).
    async fn count_unsealed(&self, client: &tokio_postgres::Client) -> Result<u64, StoreError> {
        let head = client
            .query_opt(
                "SELECT transaction_id, seq FROM event_log ORDER BY position DESC LIMIT 1",
                &[],
            )
            .await?;
        let (xid, seq) = match head {
            Some(row) => (
                row.try_get::<_, Xid8>("transaction_id")?,
                row.try_get::<_, i64>("seq")?,
            ),
            None => (Xid8(0), 0),
        };
        let row = client
            .query_one(
                "SELECT count(*) AS n FROM events WHERE (transaction_id, seq) > ($1, $2)",
                &[&xid, &seq],
            )
            .await?;
        to_u64(row.try_get("n")?, "count")
    }
}

/// An event that sorts before the chain's last linked event but has no position: the chain
/// skipped it. Returns its seq and the first position that sorts after it.
async fn skipped_event(
    client: &tokio_postgres::Client,
    last_pair: Option<(Xid8, i64)>,
) -> Result<Option<(i64, u64)>, StoreError> {
    let Some((xid, seq)) = last_pair else {
        return Ok(None);
    };
    let row = client
        .query_opt(
            "SELECT e.seq, e.transaction_id FROM events e \
              WHERE (e.transaction_id, e.seq) < ($1, $2) \
                AND NOT EXISTS (SELECT 1 FROM event_log l WHERE l.seq = e.seq) \
              ORDER BY e.transaction_id, e.seq LIMIT 1",
            &[&xid, &seq],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let skipped: (Xid8, i64) = (row.try_get("transaction_id")?, row.try_get("seq")?);
    let row = client
        .query_one(
            "SELECT min(position) AS position FROM event_log WHERE (transaction_id, seq) > ($1, $2)",
            &[&skipped.0, &skipped.1],
        )
        .await?;
    let position = row
        .try_get::<_, Option<i64>>("position")?
        .map_or(Ok(1), |p| to_u64(p, "position"))?;
    Ok(Some((skipped.1, position)))
}
