//! The email outbox: from the global log to email deliveries, as the webhook outbox does
//! it (one transaction per batch, checkpoint `email` locked so processes take turns).
//!
//! Subscriber events keep `email_recipients` in step (a request also owes its
//! confirmation email). A notice is rendered once per (audience, language) its
//! subscribers need, into `email_notices`, and owed to every subscriber confirmed before
//! it and not ended before it, in one `INSERT … SELECT` per (tenant, language): the
//! subscriber list is never loaded into memory, so a notice to 100,000 subscribers costs a
//! few statements.

use std::collections::HashSet;

use deadpool_postgres::GenericClient;
use domain::language::{Language, Preferences};
use domain::subscriber::{Event as SubscriberEvent, SubscriberDecider};
use eventstore::{EventStore, LoggedEvent};
use notices::{Notice, NoticeFilter, Site};
use projections::queries::Viewer;
use projections::{parse_stream_id, Kind, StreamKind};
use uuid::Uuid;

use crate::email::render;
use crate::outbox::Batch;
use crate::DeliveryError;

/// The subscription name of the outbox's checkpoint.
pub const SUBSCRIPTION: &str = "email";
/// Events read per batch.
const BATCH: usize = 500;

fn position_i64(position: u64) -> Result<i64, DeliveryError> {
    i64::try_from(position).map_err(|_| DeliveryError::PositionOutOfRange(position))
}

/// The subscribers that may be owed a notice of this batch, by (tenant, language).
struct Group {
    tenant: Option<String>,
    language: Option<String>,
}

/// One notice owed to one group, written at the end of the batch.
struct Owed {
    position: i64,
    audience: String,
    language: String,
    ordering_key: String,
    /// The group's subscribers: of this tenant, asking for this language.
    tenant: Option<String>,
    wanted_language: Option<String>,
    services: Vec<Uuid>,
}

/// Fans out the next batch; its sender is woken only when emails were written (a
/// confirmation or a notice owed): ending subscriptions gives it nothing to send.
async fn fan_out(store: &EventStore, site: &Site) -> Result<Batch, DeliveryError> {
    let mut client = store.pool().get().await?;
    let transaction = client.transaction().await?;
    let events = crate::outbox::next_batch(&transaction, SUBSCRIPTION, BATCH).await?;
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Ok(Batch {
            events: 0,
            behind: false,
            wakes_sender: false,
        });
    };
    let last = last.position;
    let first = position_i64(first.position)?;
    let mut groups: Option<Vec<Group>> = None;
    let mut owed: Vec<Owed> = Vec::new();
    let mut erased: Vec<Uuid> = Vec::new();
    let mut confirmations: u64 = 0;
    let mut rendered: HashSet<(i64, String, String)> = HashSet::new();
    for event in &events {
        match parse_stream_id(&event.event.stream_id) {
            Some((StreamKind::Subscriber, id)) => {
                match apply_subscriber_event(&transaction, id, event).await? {
                    Applied::Ended => erased.push(id),
                    Applied::OwesConfirmation => confirmations += 1,
                    Applied::Nothing => {}
                }
                groups = None;
                continue;
            }
            Some((StreamKind::ApiKey, key)) if event.event.event_type == "api_key.revoked" => {
                erased.extend(end_subscriptions_of_key(&transaction, key, event.position).await?);
                groups = None;
                continue;
            }
            _ => {}
        }
        let Some(notice) = Notice::of(event) else {
            continue;
        };
        if groups.is_none() {
            groups = Some(active_groups(&transaction, first).await?);
        }
        let Some(groups) = groups.as_ref().filter(|g| !g.is_empty()) else {
            continue;
        };
        let position = position_i64(notice.position)?;
        let services = notice.services(store).await?;
        for group in groups {
            let viewer = group.tenant.clone().map_or(Viewer::Public, Viewer::Tenant);
            let filter = NoticeFilter {
                preferences: group
                    .language
                    .as_deref()
                    .and_then(|l| Language::parse("language", l).ok())
                    .map(Preferences::only)
                    .unwrap_or_default(),
                ..NoticeFilter::default()
            };
            let Some(cloud_event) = notice.render_for(store, &viewer, &filter, site).await? else {
                continue;
            };
            let email = render::notice(&cloud_event.json, site)?;
            let audience = group.tenant.clone().unwrap_or_default();
            if rendered.insert((position, audience.clone(), email.language.clone())) {
                transaction
                    .execute(
                        "INSERT INTO email_notices (position, audience, language, event_id, \
                                thread, opens_thread, subject, text_body, html_body) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT DO NOTHING",
                        &[
                            &position,
                            &audience,
                            &email.language,
                            &notice.event_id(),
                            &notice.ordering_key(),
                            &notice.opens_thread(),
                            &email.subject,
                            &email.text,
                            &email.html,
                        ],
                    )
                    .await?;
            }
            owed.push(Owed {
                position,
                audience,
                language: email.language,
                ordering_key: notice.ordering_key(),
                tenant: group.tenant.clone(),
                wanted_language: group.language.clone(),
                services: services.clone(),
            });
        }
    }
    let written = confirmations + write_owed(&transaction, &owed).await?;
    if !erased.is_empty() {
        // Written above or before: an ended subscription is owed nothing more.
        transaction
            .execute(
                "UPDATE email_deliveries SET state = 'cancelled', finished_at = now(), \
                        leased_until = NULL \
                  WHERE subscriber_id = ANY($1) AND state = 'pending'",
                &[&erased],
            )
            .await?;
    }
    eventstore::save_checkpoint(&transaction, SUBSCRIPTION, last).await?;
    transaction.commit().await?;
    if written > 0 {
        metrics::counter!("crier_email_deliveries_created_total").increment(written);
    }
    Ok(Batch {
        events: events.len(),
        behind: events.len() == BATCH,
        wakes_sender: written > 0,
    })
}

/// The (tenant, language) of every subscriber confirmed and not ended before `from`, or
/// changed since.
async fn active_groups<C: GenericClient>(
    transaction: &C,
    from: i64,
) -> Result<Vec<Group>, DeliveryError> {
    let rows = transaction
        .query(
            "SELECT DISTINCT tenant, language FROM email_recipients \
              WHERE confirmed_position IS NOT NULL \
                AND (ended_position IS NULL OR ended_position >= $1)",
            &[&from],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Group {
                tenant: row.try_get(0)?,
                language: row.try_get(1)?,
            })
        })
        .collect()
}

/// Writes what the batch's notices owe, in log order. A delivery behind a pending one of
/// its queue (subscriber, resource) waits with `next_attempt_at` infinity until the sender
/// releases it; the pending ones of those resources are share-locked first, in the order
/// the sender's recorder locks them, so a release never misses a delivery being written.
async fn write_owed<C: GenericClient>(
    transaction: &C,
    owed: &[Owed],
) -> Result<u64, DeliveryError> {
    if owed.is_empty() {
        return Ok(0);
    }
    let keys: Vec<&str> = owed.iter().map(|o| o.ordering_key.as_str()).collect();
    transaction
        .execute(
            "SELECT 1 FROM email_deliveries d \
              WHERE d.state = 'pending' AND d.ordering_key = ANY($1) \
              ORDER BY d.subscriber_id, d.position FOR SHARE OF d",
            &[&keys],
        )
        .await?;
    let statement = transaction
        .prepare_cached(
            "INSERT INTO email_deliveries (subscriber_id, position, kind, audience, language, \
                                           ordering_key, state, next_attempt_at) \
             SELECT r.subscriber_id, $1, 'notice', $2, $3, $4, 'pending', \
                    CASE WHEN EXISTS (SELECT 1 FROM email_deliveries p \
                                       WHERE p.ordering_key = $4 \
                                         AND p.subscriber_id = r.subscriber_id \
                                         AND p.state = 'pending') \
                         THEN 'infinity'::timestamptz ELSE now() END \
               FROM email_recipients r \
              WHERE r.confirmed_position < $1 \
                AND (r.ended_position IS NULL OR r.ended_position > $1) \
                AND r.tenant IS NOT DISTINCT FROM $5 AND r.language IS NOT DISTINCT FROM $6 \
                AND (cardinality(r.service_ids) = 0 OR r.service_ids && $7) \
             ON CONFLICT DO NOTHING",
        )
        .await?;
    let mut written = 0;
    for o in owed {
        written += transaction
            .execute(
                &statement,
                &[
                    &o.position,
                    &o.audience,
                    &o.language,
                    &o.ordering_key,
                    &o.tenant,
                    &o.wanted_language,
                    &o.services,
                ],
            )
            .await?;
    }
    Ok(written)
}

/// Who subscribed an address, as `email_recipients.registered_by` keeps it: the key's id,
/// or nobody when anyone did without a key.
fn registered_by(author: &str) -> Option<&str> {
    (author != "anonymous").then_some(author)
}

/// Ends, at the position of its revocation, every subscription key `key` made: nothing
/// after it is owed to them. Answers the subscriptions ended.
async fn end_subscriptions_of_key<C: GenericClient>(
    transaction: &C,
    key: Uuid,
    revoked_at: u64,
) -> Result<Vec<Uuid>, DeliveryError> {
    let rows = transaction
        .query(
            "UPDATE email_recipients SET ended_position = $2 \
              WHERE registered_by = $1 AND ended_position IS NULL \
             RETURNING subscriber_id",
            &[&key.to_string(), &position_i64(revoked_at)?],
        )
        .await?;
    rows.iter()
        .map(|row| row.try_get(0).map_err(DeliveryError::from))
        .collect()
}

/// What one subscriber event changed, as the batch needs to know it.
enum Applied {
    /// A confirmation email is owed.
    OwesConfirmation,
    /// The subscription ended: whatever it is still owed is cancelled.
    Ended,
    Nothing,
}

/// Brings `email_recipients` up to date with one subscriber event.
async fn apply_subscriber_event<C: GenericClient>(
    transaction: &C,
    id: Uuid,
    event: &LoggedEvent,
) -> Result<Applied, DeliveryError> {
    let position = position_i64(event.position)?;
    let decoded = <SubscriberDecider as Kind>::decode(&event.event).map_err(|source| {
        DeliveryError::SubscriberEvent {
            position: event.position,
            source,
        }
    })?;
    match decoded {
        SubscriberEvent::Requested(requested) => {
            let language = requested.language.as_ref().map(Language::as_str);
            let open = transaction
                .execute(
                    "INSERT INTO email_recipients (subscriber_id, tenant, service_ids, language, \
                            sealed_address, requested_at, requested_position, registered_by) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (subscriber_id) DO UPDATE \
                        SET service_ids = excluded.service_ids, language = excluded.language, \
                            sealed_address = excluded.sealed_address, \
                            requested_at = excluded.requested_at, \
                            requested_position = excluded.requested_position, \
                            registered_by = excluded.registered_by \
                      WHERE email_recipients.ended_position IS NULL",
                    &[
                        &id,
                        &requested.tenant,
                        &requested.service_ids,
                        &language,
                        &requested.sealed_address,
                        &requested.at,
                        &position,
                        &registered_by(&requested.author),
                    ],
                )
                .await?;
            if open == 0 {
                return Ok(Applied::Nothing);
            }
            let owed = transaction
                .execute(
                    "INSERT INTO email_deliveries (subscriber_id, position, kind, \
                            ordering_key, state, next_attempt_at) \
                     VALUES ($1, $2, 'confirmation', $3, 'pending', now()) \
                     ON CONFLICT DO NOTHING",
                    &[&id, &position, &SubscriberDecider::stream_id(id)],
                )
                .await?;
            Ok(if owed > 0 {
                Applied::OwesConfirmation
            } else {
                Applied::Nothing
            })
        }
        SubscriberEvent::Confirmed(_) => {
            transaction
                .execute(
                    "UPDATE email_recipients SET confirmed_position = $2 \
                      WHERE subscriber_id = $1 AND confirmed_position IS NULL",
                    &[&id, &position],
                )
                .await?;
            Ok(Applied::Nothing)
        }
        SubscriberEvent::Erased(_) => {
            transaction
                .execute(
                    "UPDATE email_recipients SET ended_position = $2, sealed_address = NULL \
                      WHERE subscriber_id = $1 AND ended_position IS NULL",
                    &[&id, &position],
                )
                .await?;
            Ok(Applied::Ended)
        }
    }
}

/// Fans out until `cancel`, as the webhook outbox does ([`crate::outbox::follow_log`]).
/// `wake` is notified when emails were written.
pub async fn run(
    store: EventStore,
    site: Site,
    wake: std::sync::Arc<tokio::sync::Notify>,
    cancel: eventstore::CancellationToken,
) -> Result<(), DeliveryError> {
    let fan_out = || fan_out(&store, &site);
    crate::outbox::follow_log(&store, "email", fan_out, &wake, &cancel).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use domain::subscriber;
    use eventstore::testing::TestDatabase;
    use eventstore::Metadata;

    use super::*;
    use crate::outbox::tests::declare_incident;

    #[tokio::test]
    async fn a_batch_wakes_the_sender_only_when_it_wrote_emails() {
        let db = TestDatabase::create().await;
        let store = db.store();
        let site = Site::default();
        // The outbox reads what the sealer has given a position.
        let batch = || async {
            store.seal_all(Duration::from_secs(5)).await.unwrap();
            fan_out(&store, &site).await.unwrap()
        };

        // Nobody subscribed: the notice is read, and no email is owed.
        declare_incident(&store).await;
        let read = batch().await;
        assert_eq!((read.events, read.wakes_sender), (1, false));

        // A request owes its confirmation email; the confirmation itself owes none.
        let subscriber = crate::email::testing::requested_subscriber(&store, "a@example.com")
            .await
            .unwrap();
        let requested = batch().await;
        assert_eq!((requested.events, requested.wakes_sender), (1, true));
        crate::email::testing::confirm(&store, subscriber)
            .await
            .unwrap();
        let confirmed = batch().await;
        assert_eq!((confirmed.events, confirmed.wakes_sender), (1, false));

        // A notice to a confirmed subscriber owes an email.
        declare_incident(&store).await;
        let owed = batch().await;
        assert_eq!((owed.events, owed.wakes_sender), (1, true));

        // An erasure only cancels what was owed.
        let erase = subscriber::Command::Erase(subscriber::Erase {
            reason: subscriber::ErasureReason::Unsubscribed,
            author: "anonymous".into(),
            at: chrono::Utc::now(),
        });
        projections::Publisher::new(&store)
            .execute::<SubscriberDecider>(subscriber, &erase, None, &Metadata::by("anonymous"))
            .await
            .unwrap();
        let erased = batch().await;
        assert_eq!((erased.events, erased.wakes_sender), (1, false));

        let caught_up = batch().await;
        assert_eq!((caught_up.events, caught_up.wakes_sender), (0, false));
    }
}
