//! The delivery log: a webhook's deliveries and every attempt at each.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use projections::queries::Page;
use uuid::Uuid;

use crate::DeliveryError;

/// One notice owed to one endpoint.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The `webhook-id` header: the same on every attempt.
    pub message_id: Uuid,
    /// The notice's global position.
    pub position: u64,
    /// The CloudEvent type.
    pub event_type: String,
    /// `pending` (to be sent or retried), `delivered`, `failed` (attempts ran out) or
    /// `cancelled` (the webhook was deleted or disabled).
    pub status: String,
    pub created_at: DateTime<Utc>,
    /// When the next attempt is due (pending deliveries); `null` while the delivery waits
    /// for an earlier one of the same incident or maintenance to this endpoint. While a
    /// first attempt handed straight to the sender is under way, the end of its lease.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Every attempt, first first.
    pub attempts: Vec<Attempt>,
}

/// One attempt to deliver.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// 1 for the first. A number missing from the list is an attempt whose sender stopped
    /// before it could record it.
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u32,
    /// The endpoint's HTTP status; absent when it gave none (refused, timed out).
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

/// A webhook's deliveries, newest first, before the position `before`.
pub async fn deliveries_page<C: GenericClient>(
    client: &C,
    webhook_id: Uuid,
    before: Option<u64>,
    limit: usize,
) -> Result<Page<Delivery>, DeliveryError> {
    let before = before.map(|p| i64::try_from(p).unwrap_or(i64::MAX));
    let statement = client
        .prepare_cached(
            "SELECT position, message_id, event_type, state, created_at, \
                    NULLIF(next_attempt_at, 'infinity') AS next_attempt_at, finished_at \
               FROM webhook_deliveries \
              WHERE webhook_id = $1 AND ($2::int8 IS NULL OR position < $2) \
              ORDER BY position DESC LIMIT $3",
        )
        .await?;
    let rows = client
        .query(&statement, &[&webhook_id, &before, &(limit as i64 + 1)])
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let state: String = row.try_get("state")?;
        items.push(Delivery {
            message_id: row.try_get("message_id")?,
            position: u64::try_from(row.try_get::<_, i64>("position")?).unwrap_or_default(),
            event_type: row.try_get("event_type")?,
            next_attempt_at: if state == "pending" {
                row.try_get("next_attempt_at")?
            } else {
                None
            },
            status: state,
            created_at: row.try_get("created_at")?,
            finished_at: row.try_get("finished_at")?,
            attempts: Vec::new(),
        });
    }
    let mut page = Page::of(items, limit);
    let positions: Vec<i64> = page.items.iter().map(|d| d.position as i64).collect();
    let statement = client
        .prepare_cached(
            "SELECT position, attempt, started_at, duration_ms, status_code, error \
               FROM webhook_attempts WHERE webhook_id = $1 AND position = ANY($2) \
              ORDER BY position, attempt",
        )
        .await?;
    for row in client.query(&statement, &[&webhook_id, &positions]).await? {
        let position = u64::try_from(row.try_get::<_, i64>("position")?).unwrap_or_default();
        let attempt = Attempt {
            attempt: u32::try_from(row.try_get::<_, i32>("attempt")?).unwrap_or_default(),
            started_at: row.try_get("started_at")?,
            duration_ms: u32::try_from(row.try_get::<_, i32>("duration_ms")?).unwrap_or_default(),
            status_code: row
                .try_get::<_, Option<i16>>("status_code")?
                .and_then(|s| u16::try_from(s).ok()),
            error: row.try_get("error")?,
        };
        if let Some(delivery) = page.items.iter_mut().find(|d| d.position == position) {
            delivery.attempts.push(attempt);
        }
    }
    Ok(page)
}
