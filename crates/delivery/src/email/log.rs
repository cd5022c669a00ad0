//! The delivery log of a subscriber: each email owed (a confirmation, a notice) and every
//! attempt at it.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use projections::queries::Page;
use uuid::Uuid;

use crate::DeliveryError;

#[derive(Debug, Clone)]
pub struct EmailDelivery {
    /// The global position of the notice, or of the request it confirms.
    pub position: u64,
    /// `confirmation` or `notice`.
    pub kind: String,
    /// `pending`, `delivered`, `failed` (refused for good, or attempts ran out) or
    /// `cancelled` (the subscription ended first).
    pub status: String,
    pub created_at: DateTime<Utc>,
    /// When the next attempt is due (pending ones); `null` while it waits for an earlier
    /// email of the same incident.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub attempts: Vec<EmailAttempt>,
}

#[derive(Debug, Clone)]
pub struct EmailAttempt {
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u32,
    /// The SMTP server's reply code when it refused or deferred; absent when it accepted
    /// or gave none.
    pub reply_code: Option<u16>,
    pub error: Option<String>,
}

/// A subscriber's deliveries, newest first, before the position `before`.
pub async fn deliveries_page<C: GenericClient>(
    client: &C,
    subscriber_id: Uuid,
    before: Option<u64>,
    limit: usize,
) -> Result<Page<EmailDelivery>, DeliveryError> {
    let before = before.map(|p| i64::try_from(p).unwrap_or(i64::MAX));
    let rows = client
        .query(
            "SELECT position, kind, state, created_at, \
                    NULLIF(next_attempt_at, 'infinity') AS next_attempt_at, finished_at \
               FROM email_deliveries \
              WHERE subscriber_id = $1 AND ($2::int8 IS NULL OR position < $2) \
              ORDER BY position DESC LIMIT $3",
            &[&subscriber_id, &before, &(limit as i64 + 1)],
        )
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let state: String = row.try_get("state")?;
        items.push(EmailDelivery {
            position: u64::try_from(row.try_get::<_, i64>("position")?).unwrap_or_default(),
            kind: row.try_get("kind")?,
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
    let rows = client
        .query(
            "SELECT position, attempt, started_at, duration_ms, reply_code, error \
               FROM email_attempts WHERE subscriber_id = $1 AND position = ANY($2) \
              ORDER BY position, attempt",
            &[&subscriber_id, &positions],
        )
        .await?;
    for row in rows {
        let position = u64::try_from(row.try_get::<_, i64>("position")?).unwrap_or_default();
        let attempt = EmailAttempt {
            attempt: u32::try_from(row.try_get::<_, i32>("attempt")?).unwrap_or_default(),
            started_at: row.try_get("started_at")?,
            duration_ms: u32::try_from(row.try_get::<_, i32>("duration_ms")?).unwrap_or_default(),
            reply_code: row
                .try_get::<_, Option<i16>>("reply_code")?
                .and_then(|s| u16::try_from(s).ok()),
            error: row.try_get("error")?,
        };
        if let Some(delivery) = page.items.iter_mut().find(|d| d.position == position) {
            delivery.attempts.push(attempt);
        }
    }
    Ok(page)
}
