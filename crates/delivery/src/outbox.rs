//! The outbox: from the global log to deliveries.
//!
//! One batch at a time, in one transaction: lock the checkpoint row of subscription
//! `webhooks` (so that the processes sharing a database take turns, each starting where the
//! last one committed), read the events after it, bring `webhook_endpoints` up to date
//! with the webhook events among them, write a delivery for every notice and every endpoint
//! registered before it that takes it, and move the checkpoint. Either all of it commits or
//! none, so a crash neither loses nor doubles a delivery. A batch ends early, before the
//! notice that would owe more than a few thousand deliveries, and the next one goes on from
//! there at once: the sender starts on one batch's deliveries while the next is written.
//!
//! A notice's body is written once for all the endpoints that see it alike (`webhook_bodies`,
//! one row per notice and rendering), and each delivery names it: stored in every delivery
//! row, the same kilobyte or two was most of what a batch wrote, and written again with
//! each row's new version when its attempt was recorded.
//!
//! A delivery due at once (the first of its queue) is written already leased to this
//! process's sender when the sender has room for it, and handed to it in memory after the
//! commit: its first attempt then costs no claim, which wrote the row a second time and took
//! a round trip (claims were most of the sender's time in `cargo bench --bench webhooks`).
//! Such a row's `next_attempt_at` is the lease's end, so claims pass over it until then; if
//! the process dies first, a claim sends it once the lease has run out (at least once, as
//! before).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use domain::language::{Language, Preferences};
use domain::values::NoticeType;
use domain::webhook::{Event as WebhookEvent, WebhookDecider, WebhookFormat};
use eventstore::{CancellationToken, EventStore, LoggedEvent};
use futures_util::{StreamExt, TryStreamExt};
use notices::{Notice, NoticeFilter, Site};
use projections::queries::Viewer;
use projections::{parse_stream_id, Kind, StreamKind};
use tasks::Chain;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::sender::{Claimed, Reservation};
use crate::{DeliveryError, Sender};

/// The subscription name of the fan-out's checkpoint.
pub const SUBSCRIPTION: &str = "webhooks";
/// Events read per batch.
const BATCH: usize = 500;
/// Deliveries a batch may owe: it stops before the notice that would take it past this,
/// counting each notice once for every endpoint whose event types take it (its tenant and
/// services are only known once rendered, so this counts high), though it always takes its
/// first event. A batch's deliveries start only once it commits, and its sender takes up to
/// [`crate::sender::HANDED_PER_SLOT`] per slot by hand-over (the rest wait for claims): 500
/// notices owed to 100 endpoints were 50,000 rows in one transaction, sent mostly by claims
/// after it, where batches of a few thousand let the sender start on one while the next is
/// written (`cargo bench --bench webhooks -- --endpoints 100 --notices 300`, in turns:
/// 10,535–11,884 deliveries/s against 6,071–6,331). A batch cut short reads its 500 events
/// again in the next: a few milliseconds, against the deliveries' writes.
const DELIVERIES_PER_BATCH: usize = 2048;

/// An endpoint taking notices, as the fan-out has met it in the log.
#[derive(Clone)]
struct Endpoint {
    id: Uuid,
    viewer: Viewer,
    filter: NoticeFilter,
    format: WebhookFormat,
}

/// The columns [`Endpoint::from_row`] reads.
const ENDPOINT_COLUMNS: &str = "webhook_id, event_types, service_ids, tenant, language, format";

impl Endpoint {
    fn from_row(row: &tokio_postgres::Row) -> Result<Endpoint, DeliveryError> {
        let types: Vec<String> = row.try_get("event_types")?;
        let tenant: Option<String> = row.try_get("tenant")?;
        let language: Option<String> = row.try_get("language")?;
        let format: String = row.try_get("format")?;
        Ok(Endpoint {
            id: row.try_get("webhook_id")?,
            viewer: tenant.map_or(Viewer::Public, Viewer::Tenant),
            filter: NoticeFilter {
                services: row.try_get("service_ids")?,
                region: None,
                types: types
                    .iter()
                    .filter_map(|t| NoticeType::ALL.into_iter().find(|n| n.as_str() == t))
                    .collect(),
                // Stored as the registration gave it, which was checked then.
                preferences: language
                    .and_then(|l| Language::parse("language", &l).ok())
                    .map(Preferences::only)
                    .unwrap_or_default(),
            },
            format: serde_json::from_value(serde_json::Value::String(format)).unwrap_or_default(),
        })
    }
}

/// Deliveries to write, one column per vector, and their bodies.
#[derive(Default)]
struct NewDeliveries {
    webhook_ids: Vec<Uuid>,
    positions: Vec<i64>,
    message_ids: Vec<Uuid>,
    event_types: Vec<&'static str>,
    ordering_keys: Vec<String>,
    /// Whether an earlier notice of its resource may have a delivery stored in its queue:
    /// not when it is the first notice of its resource (a declaration, a scheduling).
    may_follow_stored: Vec<bool>,
    /// Each delivery's body: its place in `bodies`, counted from 1.
    body_places: Vec<i64>,
    /// The distinct bodies of the deliveries: one per notice and rendering, however many
    /// endpoints take it.
    bodies: Vec<String>,
}

fn position_i64(position: u64) -> Result<i64, DeliveryError> {
    i64::try_from(position).map_err(|_| DeliveryError::PositionOutOfRange(position))
}

/// Locks the checkpoint row of `subscription` for this transaction (processes take turns,
/// each starting where the last one committed) and reads up to `batch` events after it,
/// which must follow it without a gap.
pub(crate) async fn next_batch<C: GenericClient>(
    transaction: &C,
    subscription: &str,
    batch: usize,
) -> Result<Vec<LoggedEvent>, DeliveryError> {
    transaction
        .execute(
            "INSERT INTO subscription_checkpoints (subscription, position) VALUES ($1, 0) \
             ON CONFLICT (subscription) DO NOTHING",
            &[&subscription],
        )
        .await?;
    let checkpoint: i64 = transaction
        .query_one(
            "SELECT position FROM subscription_checkpoints WHERE subscription = $1 FOR UPDATE",
            &[&subscription],
        )
        .await?
        .try_get(0)?;
    let checkpoint = u64::try_from(checkpoint).map_err(|_| DeliveryError::NegativeCheckpoint)?;
    let events = eventstore::read_log_after(transaction, checkpoint, batch).await?;
    for (offset, event) in events.iter().enumerate() {
        if event.position != checkpoint + 1 + offset as u64 {
            return Err(DeliveryError::Gap {
                from: checkpoint + offset as u64,
                to: event.position,
            });
        }
    }
    Ok(events)
}

/// Notices of one batch rendered at once, at most this many at a time: each may read its
/// resource and the services' names (a few round trips), and one after another they made a
/// batch of a few hundred notices take a few hundred milliseconds.
const RENDERED_AT_ONCE: usize = 8;

/// What one batch of the log did, as [`follow_log`] needs to know it.
pub(crate) struct Batch {
    /// Events taken (their checkpoint moved past).
    pub events: usize,
    /// Whether more events wait: the batch read as many as it may, or stopped early at its
    /// bound of deliveries. The follower then goes on at once.
    pub behind: bool,
    /// Whether the batch gave its sender something to claim: deliveries written and not
    /// handed over. Nothing else does (an endpoint registered has none yet; one ended only
    /// has them cancelled), most events give it nothing, and a claim costs the database
    /// about a millisecond.
    pub wakes_sender: bool,
}

/// Fans out the next batch after the checkpoint.
///
/// The batch's events are met in order first (webhook events change the endpoints that
/// later notices go to), noting each notice with the endpoints it is owed to; then the
/// notices are rendered concurrently, and the deliveries written in position order. Those
/// due at once that `sender` has room for are written leased to it and handed over after
/// the commit (see [`Sender::reserve`]); the rest wait for its claims. The batch stops
/// before the notice that would owe more than `deliveries_bound` deliveries in all (its
/// first event is always taken), and the rest of the events read wait for the next one.
async fn fan_out(
    store: &EventStore,
    site: &Site,
    sender: Option<&Arc<Sender>>,
    deliveries_bound: usize,
) -> Result<Batch, DeliveryError> {
    // Before the transaction begins: the leases it writes start later.
    let leased_from = std::time::Instant::now();
    let mut client = store.pool().get().await?;
    let transaction = client.transaction().await?;
    let events = next_batch(&transaction, SUBSCRIPTION, BATCH).await?;
    if events.is_empty() {
        return Ok(Batch {
            events: 0,
            behind: false,
            wakes_sender: false,
        });
    }
    let mut endpoints: Arc<Vec<Endpoint>> = Arc::new(
        transaction
            .query(
                &format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE ended_position IS NULL"
                ),
                &[],
            )
            .await?
            .iter()
            .map(Endpoint::from_row)
            .collect::<Result<_, _>>()?,
    );
    // Endpoints this batch ends (deleted, disabled, their key revoked): everything they are
    // still owed is cancelled, including the deliveries of this batch's earlier notices.
    let mut ended: HashSet<Uuid> = HashSet::new();
    let mut owed: Vec<(Notice, Arc<Vec<Endpoint>>)> = Vec::new();
    let mut owed_deliveries = 0;
    let mut taken = 0;
    for event in &events {
        match parse_stream_id(&event.event.stream_id) {
            Some((StreamKind::Webhook, id)) => {
                let taking = Arc::make_mut(&mut endpoints);
                apply_webhook_event(&transaction, taking, &mut ended, id, event).await?;
            }
            Some((StreamKind::ApiKey, key)) if event.event.event_type == "api_key.revoked" => {
                let taking = Arc::make_mut(&mut endpoints);
                end_endpoints_of_key(&transaction, taking, &mut ended, key, event.position).await?;
            }
            _ if endpoints.is_empty() => {}
            _ => {
                if let Some(notice) = Notice::of(event) {
                    let owing = endpoints
                        .iter()
                        .filter(|e| e.filter.takes_type(notice.notice_type))
                        .count();
                    if owed_deliveries > 0 && owed_deliveries + owing > deliveries_bound {
                        break;
                    }
                    owed_deliveries += owing;
                    owed.push((notice, endpoints.clone()));
                }
            }
        }
        taken += 1;
    }
    // Never: the first event is always taken (a batch stops only after a notice that owes).
    let Some(last) = events[..taken].last().map(|e| e.position) else {
        return Ok(Batch {
            events: 0,
            behind: false,
            wakes_sender: false,
        });
    };
    Notice::preload(store, owed.iter().map(|(notice, _)| notice)).await?;
    // Made here, not in the stream's closure, which would make the future's Send bound
    // higher-ranked over the borrow (a known limit of the compiler).
    let renders: Vec<_> = owed
        .iter()
        .map(|(notice, endpoints)| bodies(store, site, notice, endpoints))
        .collect();
    let rendered: Vec<NoticeBodies> = futures_util::stream::iter(renders)
        .buffered(RENDERED_AT_ONCE)
        .try_collect()
        .await?;
    let mut deliveries = NewDeliveries::default();
    for ((notice, _), bodies) in owed.iter().zip(rendered) {
        // Places in the batch's bodies count from 1, as `WITH ORDINALITY` does.
        let first_place = deliveries.bodies.len() as i64 + 1;
        deliveries.bodies.extend(bodies.distinct);
        for (endpoint_id, place) in bodies.taken_by {
            if ended.contains(&endpoint_id) {
                continue;
            }
            deliveries.body_places.push(first_place + place as i64);
            deliveries.webhook_ids.push(endpoint_id);
            deliveries.positions.push(position_i64(notice.position)?);
            deliveries.message_ids.push(notice.event_id());
            deliveries.event_types.push(notice.notice_type.as_str());
            deliveries.ordering_keys.push(notice.ordering_key());
            deliveries.may_follow_stored.push(!notice.opens_thread());
        }
    }
    let written = deliveries.webhook_ids.len();
    let handed = if written > 0 {
        insert_deliveries(&transaction, deliveries, sender).await?
    } else {
        Vec::new()
    };
    eventstore::save_checkpoint(&transaction, SUBSCRIPTION, last).await?;
    // What this process's sender holds for the ended endpoints may not start either; dropped
    // before the commit, so that none starts between it and the drop. Should the commit
    // fail, their leases run out and claims send them (at least once, as always).
    if let Some(sender) = sender {
        sender.drop_handed(&ended.iter().copied().collect::<Vec<_>>());
    }
    transaction.commit().await?;
    if written > 0 {
        metrics::counter!("crier_webhook_deliveries_created_total").increment(written as u64);
    }
    let handed_over = handed.len();
    if let Some(sender) = sender {
        if !handed.is_empty() {
            for (delivery, reservation) in handed {
                sender.hand_over(reservation, delivery, leased_from);
            }
            sender.start_handed_now();
        }
    }
    Ok(Batch {
        events: taken,
        behind: taken < events.len() || events.len() == BATCH,
        // What was handed over has started, or waits for a slot that a finished send
        // gives it: only the rest needs a claim.
        wakes_sender: written > handed_over,
    })
}

/// The bodies of `notice` for `endpoints`: each distinct one once, and each endpoint that
/// takes the notice, in their order, with the place of its body among them.
///
/// Endpoints that see the notice alike share its rendering (the notice renders once per
/// kind of viewer and language, and hands out that one buffer), so a body is told apart by
/// its rendering's buffer and its format, without comparing kilobytes of text. Each buffer
/// told apart is held until the end, so that no other rendering can be given its address.
async fn bodies(
    store: &EventStore,
    site: &Site,
    notice: &Notice,
    endpoints: &[Endpoint],
) -> Result<NoticeBodies, DeliveryError> {
    let mut bodies = NoticeBodies::default();
    let mut places: HashMap<(usize, usize, WebhookFormat), usize> = HashMap::new();
    let mut held = Vec::new();
    for endpoint in endpoints {
        let rendered = notice
            .render_for(store, &endpoint.viewer, &endpoint.filter, site)
            .await?;
        let Some(rendered) = rendered else {
            continue;
        };
        let json = &rendered.json;
        let rendering = (json.as_ptr() as usize, json.len(), endpoint.format);
        let place = match places.get(&rendering) {
            Some(place) => *place,
            None => {
                bodies.distinct.push(match endpoint.format {
                    WebhookFormat::Cloudevents => String::from_utf8(json.to_vec())?,
                    chat => crate::chat::message(chat, json, site)?,
                });
                places.insert(rendering, bodies.distinct.len() - 1);
                held.push(rendered);
                bodies.distinct.len() - 1
            }
        };
        bodies.taken_by.push((endpoint.id, place));
    }
    Ok(bodies)
}

/// What [`bodies`] gives for one notice.
#[derive(Default)]
struct NoticeBodies {
    distinct: Vec<String>,
    /// Each endpoint that takes the notice, with the place of its body in `distinct`.
    taken_by: Vec<(Uuid, usize)>,
}

/// Writes the deliveries, each waiting (`next_attempt_at` infinity) when an earlier one of
/// its queue (endpoint, resource stream) is pending: in this batch, or already stored.
/// Answers those written leased to `sender`, to hand over once this transaction commits.
///
/// The stored pending deliveries of those queues are share-locked first, in a fixed order:
/// a recorder finishing one of them waits for this transaction, and then sees the new
/// deliveries when it releases the next one; one that finished before is not pending any
/// more when the lock is granted. The queues of a resource's first notice are not looked
/// up: nothing of theirs can be stored yet. (With 170,000 deliveries stored, looking up
/// the 2,000 queues of a batch of declarations to 20 endpoints took 20 ms, a quarter of
/// PostgreSQL's time in such a run.)
async fn insert_deliveries<C: GenericClient>(
    transaction: &C,
    deliveries: NewDeliveries,
    sender: Option<&Arc<Sender>>,
) -> Result<Vec<(Claimed, Reservation)>, DeliveryError> {
    let (probed_ids, probed_keys): (Vec<Uuid>, Vec<&str>) = deliveries
        .webhook_ids
        .iter()
        .zip(&deliveries.ordering_keys)
        .zip(&deliveries.may_follow_stored)
        .filter(|(_, may_follow)| **may_follow)
        .map(|((id, key), _)| (*id, key.as_str()))
        .unzip();
    let locked = if probed_ids.is_empty() {
        Vec::new()
    } else {
        transaction
            .query(
                "SELECT d.webhook_id, d.ordering_key FROM webhook_deliveries d \
                   JOIN unnest($1::uuid[], $2::text[]) AS q(webhook_id, ordering_key) \
                     ON d.webhook_id = q.webhook_id AND d.ordering_key = q.ordering_key \
                  WHERE d.state = 'pending' \
                  ORDER BY d.webhook_id, d.position \
                    FOR SHARE OF d",
                &[&probed_ids, &probed_keys],
            )
            .await?
    };
    let mut busy: HashSet<(Uuid, String)> = HashSet::with_capacity(locked.len());
    for row in &locked {
        busy.insert((row.try_get(0)?, row.try_get(1)?));
    }
    let count = deliveries.webhook_ids.len();
    let mut waiting = Vec::with_capacity(count);
    let mut reserved: Vec<Option<Reservation>> = Vec::with_capacity(count);
    for (webhook_id, key) in deliveries.webhook_ids.iter().zip(&deliveries.ordering_keys) {
        // The first of a queue in this batch waits only for a stored one; the rest, for it.
        let waits = !busy.insert((*webhook_id, key.clone()));
        waiting.push(waits);
        reserved.push(match sender {
            Some(sender) if !waits => sender.reserve(*webhook_id),
            _ => None,
        });
    }
    let leased: Vec<bool> = reserved.iter().map(Option::is_some).collect();
    let lease = sender.map_or(0.0, |s| s.handed_lease().as_secs_f64());
    // Endpoints deleted since (their row is no longer active) get nothing more. Each body
    // gets its id first, and is stored only if a delivery written names it.
    let inserted = transaction
        .query(
            "WITH bodies AS MATERIALIZED ( \
               SELECT nextval('webhook_body_ids') AS id, b.body, b.place \
                 FROM unnest($10::text[]) WITH ORDINALITY AS b(body, place)), \
             written AS ( \
               INSERT INTO webhook_deliveries (webhook_id, position, message_id, event_type, \
                                               ordering_key, body_id, state, next_attempt_at, \
                                               leased_until, attempts) \
               SELECT d.webhook_id, d.position, d.message_id, d.event_type, d.ordering_key, \
                      b.id, 'pending', \
                      CASE WHEN d.waiting THEN 'infinity'::timestamptz \
                           WHEN d.leased THEN now() + make_interval(secs => $9) \
                           ELSE now() END, \
                      CASE WHEN d.leased THEN now() + make_interval(secs => $9) END, \
                      CASE WHEN d.leased THEN 1 ELSE 0 END \
                 FROM unnest($1::uuid[], $2::int8[], $3::uuid[], $4::text[], $5::text[], \
                             $6::int8[], $7::bool[], $8::bool[]) \
                      AS d(webhook_id, position, message_id, event_type, ordering_key, \
                           body_place, waiting, leased) \
                 JOIN bodies b ON b.place = d.body_place \
                 JOIN rm_webhooks w ON w.id = d.webhook_id \
                WHERE w.active \
               ON CONFLICT (webhook_id, position) DO NOTHING \
               RETURNING webhook_id, position, body_id, leased_until IS NOT NULL AS leased), \
             stored AS ( \
               INSERT INTO webhook_bodies (id, body) \
               SELECT b.id, b.body FROM bodies b \
                WHERE b.id IN (SELECT written.body_id FROM written)) \
             SELECT webhook_id, position, leased FROM written",
            &[
                &deliveries.webhook_ids,
                &deliveries.positions,
                &deliveries.message_ids,
                &deliveries.event_types,
                &deliveries.ordering_keys,
                &deliveries.body_places,
                &waiting,
                &leased,
                &lease,
                &deliveries.bodies,
            ],
        )
        .await?;
    if !leased.contains(&true) {
        return Ok(Vec::new());
    }
    let mut written_leased: HashSet<(Uuid, i64)> = HashSet::new();
    for row in &inserted {
        if row.try_get("leased")? {
            written_leased.insert((row.try_get("webhook_id")?, row.try_get("position")?));
        }
    }
    let mut targets: HashMap<Uuid, (String, String)> = HashMap::new();
    let mut endpoint_ids: Vec<Uuid> = written_leased.iter().map(|(id, _)| *id).collect();
    endpoint_ids.sort_unstable();
    endpoint_ids.dedup();
    for row in transaction
        .query(
            "SELECT w.id, w.state->>'url' AS url, s.secret FROM rm_webhooks w \
               JOIN webhook_secrets s ON s.webhook_id = w.id \
              WHERE w.id = ANY($1)",
            &[&endpoint_ids],
        )
        .await?
    {
        let url: Option<String> = row.try_get("url")?;
        targets.insert(
            row.try_get("id")?,
            (url.unwrap_or_default(), row.try_get("secret")?),
        );
    }
    let NewDeliveries {
        webhook_ids,
        positions,
        message_ids,
        ordering_keys,
        body_places,
        bodies,
        ..
    } = deliveries;
    let mut handed = Vec::with_capacity(written_leased.len());
    let columns = webhook_ids
        .into_iter()
        .zip(positions)
        .zip(message_ids)
        .zip(ordering_keys)
        .zip(body_places)
        .zip(reserved);
    for (((((webhook_id, position), message_id), ordering_key), place), reservation) in columns {
        // Dropped, a reservation gives its slot back; a delivery written leased but not
        // handed over is sent by a claim once its lease runs out.
        let Some(reservation) = reservation else {
            continue;
        };
        if !written_leased.contains(&(webhook_id, position)) {
            continue;
        }
        let Some((url, secret)) = targets.get(&webhook_id) else {
            continue;
        };
        let Some(body) = usize::try_from(place - 1).ok().and_then(|i| bodies.get(i)) else {
            continue;
        };
        let delivery = Claimed {
            webhook_id,
            position,
            message_id,
            ordering_key,
            body: body.clone(),
            attempt: 1,
            url: url.clone(),
            secret: secret.clone(),
        };
        handed.push((delivery, reservation));
    }
    Ok(handed)
}

/// Brings the fan-out's endpoints up to date with one webhook event.
async fn apply_webhook_event<C: GenericClient>(
    transaction: &C,
    endpoints: &mut Vec<Endpoint>,
    ended: &mut HashSet<Uuid>,
    id: Uuid,
    event: &LoggedEvent,
) -> Result<(), DeliveryError> {
    let position = position_i64(event.position)?;
    let decoded =
        WebhookDecider::decode(&event.event).map_err(|source| DeliveryError::WebhookEvent {
            position: event.position,
            source,
        })?;
    match decoded {
        WebhookEvent::Registered(registered) => {
            let types: Vec<&str> = registered.event_types.iter().map(|t| t.as_str()).collect();
            let language = registered.language.as_ref().map(Language::as_str);
            let format = serde_json::to_value(registered.format)?;
            let row = transaction
                .query_opt(
                    &format!(
                        "INSERT INTO webhook_endpoints (webhook_id, event_types, service_ids, \
                                tenant, registered_position, registered_by, language, format) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                         ON CONFLICT (webhook_id) DO NOTHING \
                         RETURNING {ENDPOINT_COLUMNS}"
                    ),
                    &[
                        &id,
                        &types,
                        &registered.service_ids,
                        &registered.tenant,
                        &position,
                        &registered.author,
                        &language,
                        &format.as_str().unwrap_or("cloudevents"),
                    ],
                )
                .await?;
            if let Some(row) = row {
                endpoints.push(Endpoint::from_row(&row)?);
            }
        }
        WebhookEvent::Deleted(_) | WebhookEvent::Disabled(_) => {
            end_endpoints(transaction, endpoints, ended, &[id], position).await?;
        }
    }
    Ok(())
}

/// Ends these endpoints at `position` and cancels what they were still owed; notes them in
/// `ended`.
async fn end_endpoints<C: GenericClient>(
    transaction: &C,
    endpoints: &mut Vec<Endpoint>,
    ended: &mut HashSet<Uuid>,
    ids: &[Uuid],
    position: i64,
) -> Result<(), DeliveryError> {
    transaction
        .execute(
            "UPDATE webhook_endpoints SET ended_position = $2 \
              WHERE webhook_id = ANY($1) AND ended_position IS NULL",
            &[&ids, &position],
        )
        .await?;
    // What they were still owed is owed no more.
    transaction
        .execute(
            "UPDATE webhook_deliveries SET state = 'cancelled', finished_at = now(), \
                    leased_until = NULL \
              WHERE webhook_id = ANY($1) AND state = 'pending'",
            &[&ids],
        )
        .await?;
    endpoints.retain(|e| !ids.contains(&e.id));
    ended.extend(ids.iter().copied());
    Ok(())
}

/// A key was revoked: the endpoints it registered take nothing after this position (the
/// revocation's handler also disables them, with an event saying why; this holds even if it
/// could not).
async fn end_endpoints_of_key<C: GenericClient>(
    transaction: &C,
    endpoints: &mut Vec<Endpoint>,
    ended: &mut HashSet<Uuid>,
    key: Uuid,
    position: u64,
) -> Result<(), DeliveryError> {
    let position = position_i64(position)?;
    let ids: Vec<Uuid> = transaction
        .query(
            "SELECT webhook_id FROM webhook_endpoints \
              WHERE registered_by = $1 AND ended_position IS NULL",
            &[&key.to_string()],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Ok(());
    }
    end_endpoints(transaction, endpoints, ended, &ids, position).await
}

/// Fans out until `cancel`, whenever the log head moves (and every poll interval), handing
/// what it can to `sender` and waking it for the rest; backs off while the database is
/// away.
pub async fn run(
    store: EventStore,
    site: Site,
    sender: Arc<Sender>,
    cancel: CancellationToken,
) -> Result<(), DeliveryError> {
    let wake = sender.wake();
    let fan_out = || fan_out(&store, &site, Some(&sender), DELIVERIES_PER_BATCH);
    follow_log(&store, "webhook", fan_out, &wake, &cancel).await
}

/// Runs `fan_out` (one batch) until `cancel`: again at once after a batch that left events
/// behind, else when the log head moves or a poll interval passes; after a failure,
/// with a backoff up to 10 s. `wake` is notified when a batch gave the sender something
/// to claim. Every channel's outbox (`name`) follows the log so.
pub(crate) async fn follow_log<F, Fut>(
    store: &EventStore,
    name: &'static str,
    fan_out: F,
    wake: &Notify,
    cancel: &CancellationToken,
) -> Result<(), DeliveryError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Batch, DeliveryError>>,
{
    let mut head = store.watch_log_head();
    let mut retry = Duration::from_millis(100);
    loop {
        if cancel.is_cancelled() {
            break;
        }
        head.borrow_and_update();
        match fan_out().await {
            Ok(done) => {
                retry = Duration::from_millis(100);
                if done.events > 0 {
                    tracing::debug!(
                        events = done.events,
                        behind = done.behind,
                        "{name} outbox fanned out a batch"
                    );
                }
                if done.wakes_sender {
                    wake.notify_one();
                }
                if done.behind {
                    continue;
                }
                tokio::select! {
                    _ = head.changed() => {}
                    _ = tokio::time::sleep(store.config().poll_interval) => {}
                    _ = cancel.cancelled() => break,
                }
            }
            Err(e) => {
                if e.is_unavailable() {
                    tracing::warn!(error = %Chain(&e), "{name} outbox cannot reach the database; retrying");
                } else {
                    tracing::error!(error = %Chain(&e), "{name} outbox stopped on an event; retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = cancel.cancelled() => break,
                }
                retry = (retry * 2).min(Duration::from_secs(10));
            }
        }
    }
    tracing::debug!("{name} outbox stopped");
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::Utc;
    use domain::incident::IncidentDecider;
    use domain::values::Audience;
    use domain::values::IncidentStatus;
    use domain::webhook;
    use eventstore::testing::TestDatabase;
    use eventstore::Metadata;
    use projections::Publisher;

    use super::*;

    /// Declares a public incident affecting no service: one notice.
    pub(crate) async fn declare_incident(store: &EventStore) {
        let id = Uuid::new_v4();
        let declare =
            projections::testing::declaration(id, Vec::new(), Audience::Public, Utc::now());
        Publisher::new(store)
            .execute::<IncidentDecider>(id, &declare, None, &Metadata::by("publisher"))
            .await
            .unwrap();
    }

    /// Registers an endpoint taking notices of `event_types` (empty: every type).
    async fn register_endpoint(store: &EventStore, event_types: Vec<NoticeType>) -> Uuid {
        register_endpoint_as(store, event_types, WebhookFormat::Cloudevents).await
    }

    /// [`register_endpoint`] for messages in `format`.
    async fn register_endpoint_as(
        store: &EventStore,
        event_types: Vec<NoticeType>,
        format: WebhookFormat,
    ) -> Uuid {
        let webhook_id = Uuid::new_v4();
        let register = webhook::Command::Register(webhook::Register {
            webhook_id,
            url: "https://hooks.example.com/crier".into(),
            event_types,
            service_ids: Vec::new(),
            tenant: None,
            language: None,
            format,
            author: "admin".into(),
            at: Utc::now(),
        });
        Publisher::new(store)
            .execute::<WebhookDecider>(webhook_id, &register, None, &Metadata::by("admin"))
            .await
            .unwrap();
        webhook_id
    }

    /// A resource's later notice waits behind its earlier one still pending from an earlier
    /// batch; a resource's first notice has nothing before it in its queue (it is not looked
    /// up) and is due at once, whatever else the endpoint has pending.
    #[tokio::test]
    async fn a_later_notice_waits_behind_its_resource_s_pending_one_and_a_first_one_for_nothing() {
        let db = TestDatabase::create().await;
        let store = db.store();
        let site = Site::default();
        let endpoint = register_endpoint(&store, Vec::new()).await;
        let fan_out_all = || async {
            store.seal_all(Duration::from_secs(5)).await.unwrap();
            while fan_out(&store, &site, None, DELIVERIES_PER_BATCH)
                .await
                .unwrap()
                .events
                > 0
            {}
        };
        let first = Uuid::new_v4();
        let publisher = Publisher::new(&store);
        let declare =
            projections::testing::declaration(first, Vec::new(), Audience::Public, Utc::now());
        publisher
            .execute::<IncidentDecider>(first, &declare, None, &Metadata::by("publisher"))
            .await
            .unwrap();
        fan_out_all().await;

        let update = projections::testing::update(
            IncidentStatus::Identified,
            "A certificate expired.",
            Utc::now(),
        );
        publisher
            .execute::<IncidentDecider>(first, &update, None, &Metadata::by("publisher"))
            .await
            .unwrap();
        declare_incident(&store).await;
        fan_out_all().await;

        let client = store.pool().get().await.unwrap();
        let rows = client
            .query(
                "SELECT ordering_key = $2, next_attempt_at = 'infinity' \
                   FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY position",
                &[&endpoint, &format!("incident-{first}")],
            )
            .await
            .unwrap();
        let written: Vec<(bool, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        // (of the first incident, waiting): its declaration, its update, the second
        // incident's declaration.
        assert_eq!(written, [(true, false), (true, true), (false, false)]);
    }

    /// A notice's body is stored once for the endpoints that see it alike, not once per
    /// delivery, and a claim sends each delivery the body of its own rendering, or the one
    /// in its row (where deliveries written before bodies had a table keep theirs).
    #[tokio::test]
    async fn endpoints_that_see_a_notice_alike_share_one_stored_body() {
        let db = TestDatabase::create().await;
        let store = db.store();
        let alike = [
            register_endpoint(&store, Vec::new()).await,
            register_endpoint(&store, Vec::new()).await,
        ];
        let slack = register_endpoint_as(&store, Vec::new(), WebhookFormat::Slack).await;
        declare_incident(&store).await;
        store.seal_all(Duration::from_secs(5)).await.unwrap();
        let site = Site::default();
        while fan_out(&store, &site, None, DELIVERIES_PER_BATCH)
            .await
            .unwrap()
            .events
            > 0
        {}
        let client = store.pool().get().await.unwrap();
        let rows = client
            .query(
                "SELECT d.webhook_id, b.body FROM webhook_deliveries d \
                   JOIN webhook_bodies b ON b.id = d.body_id WHERE d.body IS NULL",
                &[],
            )
            .await
            .unwrap();
        let body_of: HashMap<Uuid, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(body_of.len(), 3);
        assert_eq!(body_of[&alike[0]], body_of[&alike[1]]);
        assert_ne!(body_of[&alike[0]], body_of[&slack]);
        let stored: i64 = client
            .query_one("SELECT count(*) FROM webhook_bodies", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored, 2);

        client
            .execute(
                "INSERT INTO webhook_secrets (webhook_id, secret) \
                 SELECT id, 'whsec_x' FROM rm_webhooks",
                &[],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO webhook_deliveries (webhook_id, position, message_id, event_type, \
                                                 ordering_key, body, state, next_attempt_at) \
                 VALUES ($1, 1, gen_random_uuid(), 'incident.declared', 'incident-old', \
                         '{\"old\": true}', 'pending', now())",
                &[&alike[0]],
            )
            .await
            .unwrap();
        let sender = Sender::new(
            &store,
            crate::WebhookSettings::default(),
            Arc::new(Notify::new()),
        )
        .unwrap();
        let claimed = sender.claim(10).await.unwrap();
        assert_eq!(claimed.len(), 4);
        for delivery in claimed {
            let expected = match delivery.position {
                1 => "{\"old\": true}",
                _ => &body_of[&delivery.webhook_id],
            };
            assert_eq!(delivery.body, expected, "{}", delivery.position);
        }
    }

    #[tokio::test]
    async fn a_batch_stops_before_the_notice_that_would_owe_more_deliveries_than_its_bound() {
        let db = TestDatabase::create().await;
        let store = db.store();
        let site = Site::default();
        let client = store.pool().get().await.unwrap();
        // Each batch: (events taken, whether more wait), and the deliveries written by then
        // to each endpoint (a notice written twice would show: the insert skips conflicts).
        let batch = |bound| {
            let (store, site, client) = (&store, &site, &client);
            async move {
                store.seal_all(Duration::from_secs(5)).await.unwrap();
                let batch = fan_out(store, site, None, bound).await.unwrap();
                let rows = client
                    .query(
                        "SELECT webhook_id, array_agg(position ORDER BY position) \
                           FROM webhook_deliveries GROUP BY webhook_id",
                        &[],
                    )
                    .await
                    .unwrap();
                let written: HashMap<Uuid, Vec<i64>> =
                    rows.iter().map(|r| (r.get(0), r.get(1))).collect();
                ((batch.events, batch.behind), written)
            }
        };
        let positions = |range: std::ops::RangeInclusive<i64>| range.collect::<Vec<i64>>();

        // Two endpoints (positions 1 and 2), three notices (3 to 5), a third endpoint (6)
        // and a fourth notice (7).
        let first = register_endpoint(&store, Vec::new()).await;
        let second = register_endpoint(&store, Vec::new()).await;
        for _ in 0..3 {
            declare_incident(&store).await;
        }
        let third = register_endpoint(&store, Vec::new()).await;
        declare_incident(&store).await;

        // Up to four deliveries: two notices; the third would owe six.
        let (taken, written) = batch(4).await;
        assert_eq!(taken, (4, true));
        assert_eq!(written[&first], positions(3..=4));
        assert_eq!(written[&second], positions(3..=4));
        // The third notice, and the registration after it, met only now: the notice is
        // not owed to the endpoint registered after it. The fourth would make five.
        let (taken, written) = batch(4).await;
        assert_eq!(taken, (2, true));
        assert_eq!(written[&first], positions(3..=5));
        assert!(!written.contains_key(&third));
        let (taken, written) = batch(4).await;
        assert_eq!(taken, (1, false));
        assert_eq!(written[&first], vec![3, 4, 5, 7]);
        assert_eq!(written[&third], vec![7]);

        // A notice that alone owes more than the bound is still taken, alone.
        declare_incident(&store).await;
        declare_incident(&store).await;
        assert_eq!(batch(1).await.0, (1, true));
        let (taken, written) = batch(1).await;
        assert_eq!(taken, (1, false));
        assert_eq!(written[&second], vec![3, 4, 5, 7, 8, 9]);
        assert_eq!(batch(1).await.0, (0, false));

        // An endpoint whose event types leave a notice out is not counted for it: two
        // notices owe three deliveries each, six in all.
        let maintenances = register_endpoint(&store, vec![NoticeType::MaintenanceScheduled]).await;
        declare_incident(&store).await;
        declare_incident(&store).await;
        let (taken, written) = batch(6).await;
        assert_eq!(taken, (3, false));
        assert_eq!(written[&third], vec![7, 8, 9, 11, 12]);
        assert!(!written.contains_key(&maintenances));
    }

    #[tokio::test]
    async fn deliveries_handed_over_to_a_running_sender_do_not_wake_it_to_claim() {
        let db = TestDatabase::create().await;
        let store = db.store();
        let site = Site::default();
        let sender = Sender::new(
            &store,
            crate::webhook::WebhookSettings::default(),
            Arc::new(Notify::new()),
        )
        .unwrap();
        let cancel = CancellationToken::new();
        let running = tokio::spawn(sender.clone().run(cancel.clone()));
        // Hand-overs are taken once the sender runs (a reservation taken and given back).
        for waited in 0.. {
            if sender.reserve(Uuid::nil()).is_some() {
                break;
            }
            assert!(waited < 1000, "the sender did not start");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let batch = || async {
            store.seal_all(Duration::from_secs(5)).await.unwrap();
            fan_out(&store, &site, Some(&sender), DELIVERIES_PER_BATCH)
                .await
                .unwrap()
        };
        let endpoint = register_endpoint(&store, Vec::new()).await;
        let client = store.pool().get().await.unwrap();
        client
            .execute(
                "INSERT INTO webhook_secrets (webhook_id, secret) VALUES ($1, 'whsec_x')",
                &[&endpoint],
            )
            .await
            .unwrap();
        assert_eq!(batch().await.events, 1);

        // The delivery is written leased to this sender and started by it: nothing to claim.
        declare_incident(&store).await;
        let owed = batch().await;
        assert_eq!((owed.events, owed.wakes_sender), (1, false));
        let leased: i64 = client
            .query_one(
                "SELECT count(*) FROM webhook_deliveries WHERE attempts = 1",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(leased, 1);

        cancel.cancel();
        running.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_log_follower_wakes_the_sender_only_after_a_batch_that_gave_it_work() {
        use futures_util::FutureExt;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let db = TestDatabase::create().await;
        let store = db.store();
        let wake = Notify::new();
        let cancel = CancellationToken::new();
        let calls = AtomicUsize::new(0);
        // Batches that leave events behind, so that each call follows the last at once: the
        // first gives the sender nothing, the second gives it work, the third looks and stops.
        let fan_out = || {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            let (wake, cancel) = (&wake, &cancel);
            async move {
                let woken = wake.notified().now_or_never().is_some();
                match call {
                    0 => {}
                    1 => assert!(!woken, "woken after a batch that wrote nothing"),
                    _ => {
                        assert!(woken, "not woken after a batch that wrote deliveries");
                        cancel.cancel();
                    }
                }
                Ok(Batch {
                    events: 2,
                    behind: true,
                    wakes_sender: call == 1,
                })
            }
        };
        follow_log(&store, "test", fan_out, &wake, &cancel)
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_batch_wakes_the_sender_only_when_it_gave_it_something_to_claim() {
        let db = TestDatabase::create().await;
        let store = db.store();
        let site = Site::default();
        // The outbox reads what the sealer has given a position.
        let batch = || async {
            store.seal_all(Duration::from_secs(5)).await.unwrap();
            fan_out(&store, &site, None, DELIVERIES_PER_BATCH)
                .await
                .unwrap()
        };

        // A notice with no endpoint to owe it to is read, and nothing is written.
        declare_incident(&store).await;
        let read = batch().await;
        assert_eq!((read.events, read.wakes_sender), (1, false));

        // An endpoint registered has nothing due yet.
        register_endpoint(&store, Vec::new()).await;
        let registered = batch().await;
        assert_eq!((registered.events, registered.wakes_sender), (1, false));

        // A notice owed to it is a delivery to claim.
        declare_incident(&store).await;
        let owed = batch().await;
        assert_eq!((owed.events, owed.wakes_sender), (1, true));

        let caught_up = batch().await;
        assert_eq!((caught_up.events, caught_up.wakes_sender), (0, false));
    }
}
