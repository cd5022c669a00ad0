//! The sender: claims due deliveries, sends them signed, records each attempt.
//!
//! A claim is a lease (`leased_until`) committed before the request goes out, so that the
//! processes sharing a database never send one delivery at once, and a delivery whose
//! sender died is sent again once its lease runs out (at least once). A delivery is due
//! when its time has come; one behind a pending delivery of the same resource to the same
//! endpoint waits (`next_attempt_at` infinity) until the recorder ends that one and
//! releases it: that is what keeps each incident's notices in order. Only the record of
//! the attempt that holds the lease ends it: a sender whose lease ran out and was taken
//! over records nothing and releases nothing.
//!
//! Most first attempts skip the claim: the fan-out writes them leased to this process and
//! hands them over ([`Sender::reserve`], [`Sender::hand_over`]). They wait in a queue per
//! endpoint for a slot, within the same limits as claimed ones, and start as soon as one is
//! free (a send ends, the fan-out hands more over), not when the sender's loop next looks.
//! Their lease is longer than a claim's by the most they may wait; one that waited longer is
//! given back to the claims (unleased, due now), so that no delivery is ever sent by two
//! holders of one lease. An endpoint's queue is dropped ([`Sender::drop_handed`]) when it
//! answers 410 Gone, and when the fan-out meets its end (deleted, disabled, its key revoked)
//! and cancels what it is still owed; with several processes, a queue in another one may
//! still start what it holds for up to [`HANDED_WAIT`], and then gives the rest back to the
//! claims, which find it cancelled.
//!
//! A claim costs the database about a millisecond even when it finds nothing, so the loop
//! claims only when something may be due that no queue holds: the fan-out wrote deliveries
//! it could not hand over, a record made a waiting delivery due or set a retry, a send ended
//! at an endpoint that a claim passed by at its limit, or the last claim took some (there
//! may be more). Retries coming due and other processes' expired leases are found by the
//! idle poll ([`IDLE_POLL`]).
//!
//! Every request carries `webhook-id` (the notice's event id, the same on every retry),
//! `webhook-timestamp` (the attempt's Unix time) and `webhook-signature` (`v1,` and the
//! base64 HMAC-SHA256 of `id.timestamp.body` under the endpoint's secret). A 2xx delivers;
//! 410 Gone disables the endpoint; anything else, a timeout or a refused connection is
//! retried after an exponential backoff with jitter, or the endpoint's `Retry-After` when
//! that is later, until the attempts run out.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use domain::webhook::{self, WebhookDecider};
use eventstore::{CancellationToken, EventStore, Metadata};
use projections::Publisher;
use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use tasks::Chain;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::webhook::target::GuardedResolver;
use crate::webhook::WebhookSettings;
use crate::DeliveryError;

/// The webhook recorder's statements ([`crate::record_attempts`]).
static RECORD_SQL: LazyLock<crate::RecordSql> = LazyLock::new(|| {
    crate::RecordSql::new(
        "webhook_deliveries",
        "webhook_attempts",
        "webhook_id",
        "status_code",
    )
});

/// Time a lease holds beyond the attempt's own timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How long the sender sleeps when nothing is due and nothing wakes it (other processes'
/// deliveries and retries coming due are found by this poll).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How long the sender gathers wake-ups before claiming.
const CLAIM_GATHER: Duration = Duration::from_millis(5);
/// Most attempts recorded in one transaction.
const RECORD_BATCH: usize = 256;
/// Handed-over deliveries that may wait for a slot, per slot (and per endpoint, per place in
/// its limit of sends in flight): a few rounds of sends, so that none waits long enough for
/// its lease to be at risk.
pub(crate) const HANDED_PER_SLOT: usize = 16;
/// The longest a handed-over delivery waits for a slot. Its lease is this much longer than
/// a claim's, so that once started it has a claimed attempt's whole margin; one that waited
/// longer is given back to the claims (see [`Sender::give_back`]).
const HANDED_WAIT: Duration = Duration::from_secs(4);
/// Attempts that may wait for the recorder, per send slot.
const UNRECORDED_PER_SLOT: usize = 4;
/// Bytes of an answer read (and dropped) so that the connection can be reused.
const ANSWER_BYTES_READ: usize = 16 * 1024;

/// A delivery this process holds the lease of.
pub(crate) struct Claimed {
    pub(crate) webhook_id: Uuid,
    pub(crate) position: i64,
    pub(crate) message_id: Uuid,
    /// The queue (the notice's resource stream) whose next delivery waits for this one.
    pub(crate) ordering_key: String,
    pub(crate) body: String,
    pub(crate) attempt: i32,
    pub(crate) url: String,
    pub(crate) secret: String,
}

/// Room in the sender's queue of handed-over deliveries, taken by the fan-out for a
/// delivery it is about to write already leased to this process (see [`Sender::reserve`]).
/// Dropped without being handed over, it gives the room back.
pub(crate) struct Reservation {
    sender: Arc<Sender>,
    webhook_id: Uuid,
    held: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held {
            self.sender.handed_queues().forget(self.webhook_id);
        }
    }
}

/// Deliveries written leased to this process and handed over by the fan-out, waiting for a
/// send slot, one queue per endpoint; `room` counts each endpoint's reservations and queued
/// deliveries together.
#[derive(Default)]
struct HandedQueues {
    queues: HashMap<Uuid, VecDeque<Handed>>,
    room: HashMap<Uuid, usize>,
    total: usize,
    /// Where the next [`Sender::start_handed`] begins among the queues, so that when slots
    /// are short no endpoint is always served first.
    turn: usize,
}

struct Handed {
    /// Before the transaction that wrote the lease began: the lease runs out no sooner than
    /// [`Sender::lease`] after this.
    leased_from: Instant,
    delivery: Claimed,
}

impl HandedQueues {
    fn forget(&mut self, webhook_id: Uuid) {
        forget(&mut self.room, &mut self.total, webhook_id, 1);
    }

    /// Drops `webhook_id`'s queue, and its deliveries from the counts.
    fn drop_queue(&mut self, webhook_id: Uuid) {
        if let Some(queue) = self.queues.remove(&webhook_id) {
            forget(&mut self.room, &mut self.total, webhook_id, queue.len());
        }
    }
}

/// Takes `count` of `webhook_id`'s reservations or queued deliveries out of the counts.
fn forget(room: &mut HashMap<Uuid, usize>, total: &mut usize, webhook_id: Uuid, count: usize) {
    if let Some(n) = room.get_mut(&webhook_id) {
        *n = n.saturating_sub(count);
        if *n == 0 {
            room.remove(&webhook_id);
        }
    }
    *total = total.saturating_sub(count);
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Delivered,
    /// 410 Gone: the endpoint is disabled.
    Gone,
    /// Try again, not before `not_before` (the endpoint's `Retry-After`) when given.
    Failed {
        not_before: Option<Duration>,
    },
}

/// What one attempt changes, as the recorder writes it.
struct Record {
    webhook_id: Uuid,
    position: i64,
    ordering_key: String,
    attempt: i32,
    started_at: DateTime<Utc>,
    duration_ms: i32,
    status: Option<i16>,
    error: Option<String>,
    /// The delivery's state after it.
    state: &'static str,
    next_attempt_at: Option<DateTime<Utc>>,
    /// The endpoint answered 410 Gone.
    gone: bool,
}

/// Records for the recorder, each with its place among the unrecorded; `None` stops it.
type Records = mpsc::UnboundedReceiver<Option<(Record, OwnedSemaphorePermit)>>;
type RecordsSender = mpsc::UnboundedSender<Option<(Record, OwnedSemaphorePermit)>>;

/// What an attempt saw.
struct Seen {
    status: Option<u16>,
    error: Option<String>,
    outcome: Outcome,
}

pub struct Sender {
    store: EventStore,
    publisher: Publisher,
    settings: WebhookSettings,
    client: reqwest::Client,
    /// Woken when deliveries may have become due (fan-out wrote some, an attempt ended).
    wake: Arc<Notify>,
    slots: Arc<Semaphore>,
    /// Attempts over but not yet recorded: a send waits for room here before it frees its
    /// slot, so that sends cannot outrun their records by more than this.
    unrecorded: Arc<Semaphore>,
    /// Sends in flight per endpoint in this process.
    in_flight: Mutex<HashMap<Uuid, usize>>,
    /// The endpoints a claim passed by because they were at their limit of sends in flight
    /// (locked after `in_flight`, never before): the first of their sends to end wakes the
    /// sender to claim again. An endpoint at its limit only through handed-over deliveries
    /// owes no claim: when every send ending there woke the sender, a fan-out to one endpoint
    /// ran a claim for nothing per delivery (493 in 8 s of declarations to one endpoint).
    passed_by: Mutex<HashSet<Uuid>>,
    handed: Mutex<HandedQueues>,
    /// The recorder's channel while [`Sender::run`] runs, `None` otherwise (and then nothing
    /// is handed over): what a finished attempt or a hand-over uses to start handed-over
    /// deliveries at once, without waiting for the sender's loop (which may be in a claim's
    /// round trip).
    records: Mutex<Option<RecordsSender>>,
    /// Whether the last claim may have left due deliveries behind (it took some, or did not
    /// run): then a finished attempt wakes the sender to claim again. After a claim that
    /// found nothing, only a finished attempt of an endpoint the claim passed by at its limit
    /// can make room for one: a claim that found nothing cost the database about as much as
    /// one that found a hundred, and every finished attempt asked for one.
    claim_left_some: std::sync::atomic::AtomicBool,
}

impl Sender {
    pub fn new(
        store: &EventStore,
        settings: WebhookSettings,
        wake: Arc<Notify>,
    ) -> Result<Arc<Sender>, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: settings.policy,
            }))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Arc::new(Sender {
            store: store.clone(),
            publisher: Publisher::new(store),
            slots: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            unrecorded: Arc::new(Semaphore::new(
                settings
                    .concurrency
                    .max(1)
                    .saturating_mul(UNRECORDED_PER_SLOT),
            )),
            settings,
            client,
            wake,
            in_flight: Mutex::new(HashMap::new()),
            passed_by: Mutex::new(HashSet::new()),
            handed: Mutex::new(HandedQueues::default()),
            records: Mutex::new(None),
            claim_left_some: std::sync::atomic::AtomicBool::new(true),
        }))
    }

    /// How long a claim is held.
    fn lease(&self) -> Duration {
        self.settings.timeout + LEASE_MARGIN
    }

    /// How long a delivery written already leased for a hand-over is held.
    pub(crate) fn handed_lease(&self) -> Duration {
        self.lease() + HANDED_WAIT
    }

    /// Room to hand over one delivery to `webhook_id`, if the sender runs and its queue of
    /// handed-over deliveries has room: the fan-out then writes the delivery already leased
    /// to this process and hands it over once committed ([`Sender::hand_over`]), so that a
    /// first attempt needs no claim (no second write of the row, no round trip).
    pub(crate) fn reserve(self: &Arc<Self>, webhook_id: Uuid) -> Option<Reservation> {
        if self.records().is_none() {
            return None;
        }
        let per_endpoint = self.settings.per_endpoint.max(1) * HANDED_PER_SLOT;
        let total = self.settings.concurrency.max(1) * HANDED_PER_SLOT;
        let mut handed = self.handed_queues();
        if handed.total >= total {
            return None;
        }
        let room = handed.room.entry(webhook_id).or_default();
        if *room >= per_endpoint {
            return None;
        }
        *room += 1;
        handed.total += 1;
        Some(Reservation {
            sender: self.clone(),
            webhook_id,
            held: true,
        })
    }

    /// Queues `delivery` for a send slot: it was written leased to this process, in a
    /// transaction begun after `leased_from` and now committed.
    pub(crate) fn hand_over(
        &self,
        mut reservation: Reservation,
        delivery: Claimed,
        leased_from: Instant,
    ) {
        reservation.held = false;
        self.handed_queues()
            .queues
            .entry(delivery.webhook_id)
            .or_default()
            .push_back(Handed {
                leased_from,
                delivery,
            });
    }

    /// Drops the handed-over deliveries of endpoints that were ended (deleted, disabled):
    /// the transaction that ended them cancelled those deliveries, so none may start now.
    pub(crate) fn drop_handed(&self, webhook_ids: &[Uuid]) {
        if webhook_ids.is_empty() {
            return;
        }
        let mut handed = self.handed_queues();
        for webhook_id in webhook_ids {
            handed.drop_queue(*webhook_id);
        }
    }

    fn records(&self) -> MutexGuard<'_, Option<RecordsSender>> {
        // A channel's handle only: a panic elsewhere leaves nothing a later caller could not use.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn handed_queues(&self) -> MutexGuard<'_, HandedQueues> {
        // Counts only: a panic elsewhere leaves nothing a later caller could not use.
        self.handed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`Sender::start_handed`], for the fan-out once it has handed deliveries over: they
    /// start now if slots are free, not when the sender's loop next looks.
    pub(crate) fn start_handed_now(self: &Arc<Self>) {
        let records = self.records().clone();
        if let Some(records) = records {
            self.start_handed(&records);
        }
    }

    /// Starts the handed-over deliveries that free slots and their endpoints' limits allow,
    /// taking the queues in turn, from a different one each time. One that waited longer
    /// than [`HANDED_WAIT`] is given back to the claims. Runs whenever a slot may have come
    /// free or a delivery was handed over: the sender's loop, a finished attempt, the
    /// fan-out.
    fn start_handed(self: &Arc<Self>, records: &RecordsSender) {
        let per_endpoint = self.settings.per_endpoint.max(1);
        let mut waited_too_long: Vec<(Uuid, i64)> = Vec::new();
        let mut handed = self.handed_queues();
        if handed.queues.is_empty() {
            return;
        }
        // Counts only, as for the handed queues.
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut order: Vec<Uuid> = handed.queues.keys().copied().collect();
        let first = handed.turn % order.len();
        order.rotate_left(first);
        handed.turn = handed.turn.wrapping_add(1);
        let mut started = true;
        while started {
            started = false;
            let HandedQueues {
                queues,
                room,
                total,
                ..
            } = &mut *handed;
            for webhook_id in &order {
                let Some(queue) = queues.get_mut(webhook_id) else {
                    continue;
                };
                let sending = in_flight.entry(*webhook_id).or_default();
                let Some(waited) = queue.front().map(|h| h.leased_from.elapsed()) else {
                    continue;
                };
                if *sending >= per_endpoint {
                    continue;
                }
                let slot = if waited >= HANDED_WAIT {
                    None
                } else {
                    match self.slots.clone().try_acquire_owned() {
                        Ok(slot) => Some(slot),
                        Err(_) => break,
                    }
                };
                let Some(next) = queue.pop_front() else {
                    continue;
                };
                forget(room, total, *webhook_id, 1);
                started = true;
                let Some(slot) = slot else {
                    waited_too_long.push((next.delivery.webhook_id, next.delivery.position));
                    continue;
                };
                *sending += 1;
                let sender = self.clone();
                let records = records.clone();
                tokio::spawn(async move { sender.attempt(next.delivery, slot, records).await });
            }
            if self.slots.available_permits() == 0 {
                break;
            }
        }
        in_flight.retain(|_, n| *n > 0);
        handed.queues.retain(|_, queue| !queue.is_empty());
        if !waited_too_long.is_empty() {
            tokio::spawn(self.clone().give_back(waited_too_long));
        }
    }

    /// Gives handed-over deliveries that waited too long back to the claims: due now, no
    /// longer leased, their attempt not counted. Should that fail, their leases run out and
    /// claims take them then.
    async fn give_back(self: Arc<Self>, mut deliveries: Vec<(Uuid, i64)>) {
        deliveries.sort_unstable();
        let (webhook_ids, positions): (Vec<Uuid>, Vec<i64>) = deliveries.into_iter().unzip();
        let given_back = async {
            let client = self.store.pool().get().await?;
            client
                .execute(
                    "UPDATE webhook_deliveries d \
                        SET leased_until = NULL, attempts = d.attempts - 1, \
                            next_attempt_at = now() \
                       FROM unnest($1::uuid[], $2::int8[]) AS g(webhook_id, position) \
                      WHERE d.webhook_id = g.webhook_id AND d.position = g.position \
                        AND d.state = 'pending' AND d.attempts = 1 \
                        AND d.leased_until > now()",
                    &[&webhook_ids, &positions],
                )
                .await?;
            Ok::<(), DeliveryError>(())
        };
        match given_back.await {
            Ok(()) => self.wake.notify_one(),
            Err(e) => {
                tracing::warn!(error = %Chain(&e), deliveries = webhook_ids.len(), "could not give handed-over webhook deliveries back; their leases will run out")
            }
        }
    }

    /// What wakes the sender when deliveries may have become due.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Sends until `cancel`, then waits a little for the sends in flight.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> Result<(), DeliveryError> {
        let (records, recorded) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(self.clone().record_loop(recorded));
        *self.records() = Some(records.clone());
        let mut retry = Duration::from_millis(100);
        loop {
            if cancel.is_cancelled() {
                break;
            }
            // Without its recorder no attempt would be written or its slot given back: the
            // sender fails, to be logged, counted and started again with a new one.
            if recorder.is_finished() {
                self.stop_taking_hand_overs();
                return Err(DeliveryError::RecorderStopped);
            }
            self.start_handed(&records);
            // The free slots are held while claiming, for the deliveries the claim gets:
            // the fan-out takes slots too (for the deliveries it hands over), and a claimed
            // delivery without a slot would wait for its lease to run out.
            let mut slots = Vec::new();
            while let Ok(slot) = self.slots.clone().try_acquire_owned() {
                slots.push(slot);
            }
            let claimed = if slots.is_empty() {
                self.claim_left_some.store(true, Ordering::Release);
                Ok(Vec::new())
            } else {
                let claimed = self.claim(slots.len()).await;
                let left_some = claimed.as_ref().map_or(true, |c| !c.is_empty());
                self.claim_left_some.store(left_some, Ordering::Release);
                claimed
            };
            match claimed {
                Ok(claimed) if !claimed.is_empty() => {
                    retry = Duration::from_millis(100);
                    for (delivery, slot) in claimed.into_iter().zip(slots) {
                        let sender = self.clone();
                        let records = records.clone();
                        tokio::spawn(async move { sender.attempt(delivery, slot, records).await });
                    }
                    continue;
                }
                Ok(_) => {
                    // Free for the handed-over deliveries while the sender waits.
                    drop(slots);
                    retry = Duration::from_millis(100);
                }
                Err(e) => {
                    drop(slots);
                    tracing::warn!(error = %Chain(&e), "webhook sender cannot claim deliveries; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = cancel.cancelled() => break,
                    }
                    retry = (retry * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {
                    // What was handed over goes at once; then let the records written
                    // together free their slots, so that one claim serves many.
                    self.start_handed(&records);
                    tokio::time::sleep(CLAIM_GATHER).await;
                }
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = cancel.cancelled() => break,
            }
        }
        self.stop_taking_hand_overs();
        // The sends in flight end (each within its timeout) and are recorded, a little
        // while at most.
        let all = u32::try_from(self.settings.concurrency.max(1)).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.slots.acquire_many(all)).await;
        let _ = records.send(None);
        let _ = tokio::time::timeout(Duration::from_secs(2), recorder).await;
        tracing::debug!("webhook sender stopped");
        Ok(())
    }

    /// Leases up to `limit` due deliveries, at most `per_endpoint` in flight per endpoint.
    ///
    /// A delivery behind a pending one of its queue waits with an infinite
    /// `next_attempt_at`, so what is due is simply what is past its time: the claim reads
    /// each active endpoint's soonest due deliveries from an index, never the backlog.
    ///
    /// It reads at most twice an endpoint's fair share of `limit` from each (and no more than
    /// its room under `per_endpoint`), sharing among the endpoints that have a delivery due:
    /// the soonest of those are taken, and the next claim reads on. Reading each endpoint's
    /// whole room made every claim read up to `per_endpoint` rows of each of 100 endpoints
    /// to take the hundred or so that free slots allowed (claims ran back to back at 14–16 ms
    /// each in `cargo bench --bench webhooks -- --endpoints 100`). A claimed delivery in
    /// flight still counts as due, which only shrinks the share (more claims, nothing
    /// missed): leaving leased rows out of the count made it walk past them, and that bench
    /// ran slower (5,363–6,106 against 5,638–7,540 deliveries/s).
    pub(crate) async fn claim(&self, limit: usize) -> Result<Vec<Claimed>, DeliveryError> {
        let per_endpoint = self.settings.per_endpoint.max(1) as i64;
        let (busy_ids, busy_counts): (Vec<Uuid>, Vec<i64>) = {
            let in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut passed_by = self
                .passed_by
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            passed_by.extend(
                in_flight
                    .iter()
                    .filter(|(_, n)| **n as i64 >= per_endpoint)
                    .map(|(id, _)| *id),
            );
            in_flight.iter().map(|(id, n)| (*id, *n as i64)).unzip()
        };
        let lease = self.lease().as_secs_f64();
        let client = self.store.pool().get().await?;
        // One statement, so one round trip: as a transaction (`BEGIN`, the setting, the
        // claim, `COMMIT`) it took four, each waiting its turn on a busy machine, and claims
        // took 13-28 ms however few rows they took. A lease lost in a crash frees the
        // delivery for another attempt, which at least once allows: the claim's implicit
        // transaction need not wait for the disk (`quick`, a `SET LOCAL` for it).
        let statement = client
            .prepare_cached(
                "WITH quick AS (SELECT set_config('synchronous_commit', 'off', true)), \
                 share AS ( \
                   SELECT ceil(2.0 * $4::int8 / greatest(1, count(*)))::int8 AS most \
                     FROM rm_webhooks a \
                    WHERE a.active AND EXISTS ( \
                      SELECT FROM webhook_deliveries x \
                       WHERE x.webhook_id = a.id AND x.state = 'pending' \
                         AND x.next_attempt_at < 'infinity' \
                         AND x.next_attempt_at <= now())), \
                 due AS ( \
                   SELECT c.webhook_id, c.position FROM quick, share, rm_webhooks w \
                    CROSS JOIN LATERAL ( \
                      SELECT d.webhook_id, d.position, d.next_attempt_at \
                        FROM webhook_deliveries d \
                       WHERE d.webhook_id = w.id AND d.state = 'pending' \
                         AND d.next_attempt_at < 'infinity' \
                         AND d.next_attempt_at <= now() \
                         AND (d.leased_until IS NULL OR d.leased_until < now()) \
                       ORDER BY d.next_attempt_at \
                       LIMIT greatest(0, least( \
                               $3 - coalesce( \
                                 (SELECT b.n FROM unnest($1::uuid[], $2::int8[]) AS b(id, n) \
                                   WHERE b.id = w.id), 0), \
                               share.most))) c \
                    WHERE w.active \
                    ORDER BY c.next_attempt_at, c.position \
                    LIMIT $4), \
                 locked AS ( \
                   SELECT d.webhook_id, d.position FROM webhook_deliveries d \
                     JOIN due USING (webhook_id, position) \
                    WHERE d.state = 'pending' \
                      AND (d.leased_until IS NULL OR d.leased_until < now()) \
                    FOR UPDATE OF d SKIP LOCKED) \
                 UPDATE webhook_deliveries d \
                    SET leased_until = now() + make_interval(secs => $5), \
                        attempts = d.attempts + 1 \
                   FROM locked, webhook_secrets s, rm_webhooks w \
                  WHERE d.webhook_id = locked.webhook_id AND d.position = locked.position \
                    AND s.webhook_id = d.webhook_id AND w.id = d.webhook_id \
                 RETURNING d.webhook_id, d.position, d.message_id, d.ordering_key, \
                           coalesce(d.body, (SELECT b.body FROM webhook_bodies b \
                                              WHERE b.id = d.body_id)) AS body, \
                           d.attempts, w.state->>'url' AS url, s.secret",
            )
            .await?;
        let rows = client
            .query(
                &statement,
                &[
                    &busy_ids,
                    &busy_counts,
                    &per_endpoint,
                    &(limit as i64),
                    &lease,
                ],
            )
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            claimed.push(Claimed {
                webhook_id: row.try_get("webhook_id")?,
                position: row.try_get("position")?,
                message_id: row.try_get("message_id")?,
                ordering_key: row.try_get("ordering_key")?,
                body: row.try_get("body")?,
                attempt: row.try_get("attempts")?,
                url: row.try_get::<_, Option<String>>("url")?.unwrap_or_default(),
                secret: row.try_get("secret")?,
            });
        }
        // Counts only: a panic elsewhere cannot leave them half-changed.
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for c in &claimed {
            *in_flight.entry(c.webhook_id).or_default() += 1;
        }
        Ok(claimed)
    }

    /// Sends one delivery and hands what happened to the recorder. Its slot (and its place
    /// in the endpoint's count) is free once the recorder has room for the record: the
    /// next send need not wait for the database.
    async fn attempt(
        self: Arc<Self>,
        delivery: Claimed,
        slot: OwnedSemaphorePermit,
        records: RecordsSender,
    ) {
        let started_at = Utc::now();
        let clock = Instant::now();
        let seen = self.send(&delivery).await;
        let duration = clock.elapsed();
        let label = match &seen.outcome {
            Outcome::Delivered => "delivered",
            Outcome::Gone => "gone",
            Outcome::Failed { .. } => "failed",
        };
        metrics::counter!("crier_webhook_attempts_total", "outcome" => label).increment(1);
        metrics::histogram!("crier_webhook_attempt_seconds").record(duration.as_secs_f64());
        let record = self.record_of(&delivery, started_at, duration, seen);
        if let Ok(waiting) = self.unrecorded.clone().acquire_owned().await {
            // The delivery stays leased until its record is written, so no claim takes it
            // meanwhile. Should the recorder be gone (the process is stopping), the lease
            // runs out and the delivery is sent again.
            let _ = records.send(Some((record, waiting)));
        }
        let passed_by = self.release(delivery.webhook_id);
        drop(slot);
        // The slot goes to a handed-over delivery at once: the sender's loop may be waiting
        // on a claim's round trip, and a busy database made that wait the runs' gaps.
        self.start_handed(&records);
        if passed_by || self.claim_left_some.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }

    /// Handed-over deliveries not started are dropped: their leases run out and claims
    /// send them.
    fn stop_taking_hand_overs(&self) {
        *self.records() = None;
        let mut handed = self.handed_queues();
        let webhook_ids: Vec<Uuid> = handed.queues.keys().copied().collect();
        for webhook_id in webhook_ids {
            handed.drop_queue(webhook_id);
        }
    }

    /// Takes a finished send out of its endpoint's count; answers whether a claim passed
    /// the endpoint by at its limit of sends in flight, which this send's end makes room for.
    fn release(&self, webhook_id: Uuid) -> bool {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(n) = in_flight.get_mut(&webhook_id) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            in_flight.remove(&webhook_id);
        }
        self.passed_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&webhook_id)
    }

    async fn send(&self, delivery: &Claimed) -> Seen {
        let failed = |error: String| Seen {
            status: None,
            error: Some(error),
            outcome: Outcome::Failed { not_before: None },
        };
        let url = match url::Url::parse(&delivery.url) {
            Ok(url) => url,
            Err(e) => return failed(format!("the endpoint URL does not parse: {e}")),
        };
        if let Err(why) = self.settings.policy.check_literal(&url) {
            return failed(why);
        }
        let timestamp = Utc::now().timestamp();
        let message_id = delivery.message_id.to_string();
        let signature = match crate::webhook::signature(
            &delivery.secret,
            &message_id,
            timestamp,
            delivery.body.as_bytes(),
        ) {
            Ok(signature) => signature,
            // Not the decoder's words: they quote a byte of the secret.
            Err(_) => return failed("cannot sign: the signing secret is not base64".to_owned()),
        };
        let request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static("Crier-Webhooks/1"))
            .header("webhook-id", message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.body.clone());
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => return failed(describe(&e)),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, Utc::now()));
        // Read a little of the answer, so that the connection can serve the next request.
        let mut read = 0;
        while read < ANSWER_BYTES_READ {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
        let outcome = if status.is_success() {
            Outcome::Delivered
        } else if status == reqwest::StatusCode::GONE {
            Outcome::Gone
        } else {
            Outcome::Failed {
                not_before: retry_after,
            }
        };
        Seen {
            status: Some(status.as_u16()),
            error: (!status.is_success()).then(|| format!("the endpoint answered {status}")),
            outcome,
        }
    }

    /// What an attempt changes: its attempt row and the delivery's new state.
    fn record_of(
        &self,
        delivery: &Claimed,
        started_at: DateTime<Utc>,
        duration: Duration,
        seen: Seen,
    ) -> Record {
        let max_attempts = i32::try_from(self.settings.max_attempts).unwrap_or(i32::MAX);
        let (state, next_in) = match &seen.outcome {
            Outcome::Delivered => ("delivered", None),
            Outcome::Gone => ("cancelled", None),
            Outcome::Failed { .. } if delivery.attempt >= max_attempts => ("failed", None),
            Outcome::Failed { not_before } => {
                let backoff = backoff(&self.settings, delivery.attempt, jitter());
                let wait = not_before.map_or(backoff, |n| n.min(MAX_RETRY_AFTER).max(backoff));
                ("pending", Some(wait))
            }
        };
        Record {
            webhook_id: delivery.webhook_id,
            position: delivery.position,
            ordering_key: delivery.ordering_key.clone(),
            attempt: delivery.attempt,
            started_at,
            duration_ms: i32::try_from(duration.as_millis()).unwrap_or(i32::MAX),
            status: seen.status.map(|s| s as i16),
            error: seen.error.map(|e| e.chars().take(500).collect()),
            state,
            next_attempt_at: next_in
                .and_then(|wait| chrono::Duration::from_std(wait).ok())
                .map(|wait| Utc::now() + wait),
            gone: seen.outcome == Outcome::Gone,
        }
    }

    /// Writes records as they come, many per transaction, until told to stop (`None`).
    async fn record_loop(self: Arc<Self>, mut records: Records) {
        let mut stopping = false;
        while !stopping {
            let mut batch = Vec::new();
            match records.recv().await {
                Some(Some(record)) => batch.push(record),
                Some(None) | None => stopping = true,
            }
            while batch.len() < RECORD_BATCH {
                match records.try_recv() {
                    Ok(Some(record)) => batch.push(record),
                    Ok(None) => stopping = true,
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                continue;
            }
            // A batch that cannot be written is retried a little; if the database stays
            // away, the leases run out and the deliveries are sent again (at least once).
            let mut wait = Duration::from_millis(100);
            // Unless written, the batch may have made something due: a claim looks.
            let mut released = None;
            for _ in 0..6 {
                match self.record_batch(&batch).await {
                    Ok(count) => {
                        released = Some(count);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %Chain(&e), records = batch.len(), "could not record webhook attempts; retrying");
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                }
            }
            let gone: Vec<Uuid> = batch
                .iter()
                .filter(|(r, _)| r.gone)
                .map(|(r, _)| r.webhook_id)
                .collect();
            // A retry is due later; the sender looks for it as it did before a record could
            // skip the wake-up (a short `retry_base` may already have passed).
            let retries = batch.iter().any(|(r, _)| r.state == "pending");
            drop(batch);
            // Whatever else it holds for an endpoint that answered 410 would get 410 too.
            self.drop_handed(&gone);
            // Only a claim sends what the batch made due: a claim that would find nothing
            // costs the database about what sending a hundred costs.
            if released != Some(0) || retries || !gone.is_empty() {
                self.wake.notify_one();
            }
            for webhook_id in gone {
                self.disable(webhook_id).await;
            }
        }
    }

    /// Answers how many waiting deliveries the batch made due.
    async fn record_batch(
        &self,
        batch: &[(Record, OwnedSemaphorePermit)],
    ) -> Result<u64, DeliveryError> {
        let records: Vec<crate::AttemptRecord> = batch
            .iter()
            .map(|(r, _)| crate::AttemptRecord {
                recipient: r.webhook_id,
                position: r.position,
                ordering_key: &r.ordering_key,
                attempt: r.attempt,
                started_at: r.started_at,
                duration_ms: r.duration_ms,
                code: r.status,
                error: r.error.as_deref(),
                state: r.state,
                next_attempt_at: r.next_attempt_at,
            })
            .collect();
        let client = self.store.pool().get().await?;
        crate::record_attempts(&client, &RECORD_SQL, &records).await
    }

    /// The endpoint answered 410 Gone: it is disabled (an event, by `system`), and the
    /// fan-out cancels what it was still owed when it meets that event.
    async fn disable(&self, webhook_id: Uuid) {
        let command = webhook::Command::Disable(webhook::Disable {
            reason: "the endpoint answered 410 Gone".into(),
            at: Utc::now(),
        });
        let written = self
            .publisher
            .execute::<WebhookDecider>(webhook_id, &command, None, &Metadata::by("system"))
            .await;
        match written {
            Ok(_) => {
                tracing::info!(webhook = %webhook_id, "webhook disabled: its endpoint answered 410 Gone")
            }
            Err(e) => {
                tracing::warn!(error = %Chain(&e), webhook = %webhook_id, "could not disable a webhook")
            }
        }
    }
}

/// A transport error, with its causes (reqwest's own message rarely says what failed).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A random factor in [0, 1).
pub(crate) fn jitter() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// The wait after failed attempt `attempt` (1 for the first): `retry_base` doubled for each
/// attempt before, at most `retry_max`, of which the upper half is random ("equal jitter":
/// never sooner than half the backoff, and endpoints failing together do not retry in step).
fn backoff(settings: &WebhookSettings, attempt: i32, jitter: f64) -> Duration {
    backoff_between(settings.retry_base, settings.retry_max, attempt, jitter)
}

/// [`backoff`] for any channel: `base` doubled per attempt before, at most `max`.
pub(crate) fn backoff_between(
    base: Duration,
    max: Duration,
    attempt: i32,
    jitter: f64,
) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let full = base.saturating_mul(1u32 << doublings).min(max);
    full / 2 + full.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

/// A `Retry-After` value: seconds, or an HTTP date.
fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&Utc) - now).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap_with_jitter_in_the_upper_half() {
        let settings = WebhookSettings {
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            ..WebhookSettings::default()
        };
        assert_eq!(backoff(&settings, 1, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(&settings, 1, 0.0), Duration::from_millis(2500));
        assert_eq!(backoff(&settings, 4, 1.0), Duration::from_secs(40));
        assert_eq!(backoff(&settings, 40, 1.0), Duration::from_secs(3600));
        assert_eq!(backoff(&settings, 40, 0.0), Duration::from_secs(1800));
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }

    /// An endpoint per entry of `due`, with that many due deliveries at positions 1 to n:
    /// the first endpoint's are the soonest due, then the second's, and so on.
    async fn endpoints_with_due_deliveries(store: &EventStore, due: &[i64]) -> Vec<Uuid> {
        let client = store.pool().get().await.unwrap();
        let mut endpoints = Vec::new();
        for (n, count) in (0u32..).zip(due) {
            let id = Uuid::new_v4();
            client
                .execute(
                    "INSERT INTO rm_webhooks (id, version, active, created_at, state) \
                     VALUES ($1, 1, true, now(), '{\"url\": \"http://192.0.2.1/hook\"}')",
                    &[&id],
                )
                .await
                .unwrap();
            client
                .execute(
                    "INSERT INTO webhook_secrets (webhook_id, secret) VALUES ($1, 'whsec_x')",
                    &[&id],
                )
                .await
                .unwrap();
            client
                .execute(
                    "INSERT INTO webhook_deliveries (webhook_id, position, message_id, \
                                                     event_type, ordering_key, body, state, \
                                                     next_attempt_at) \
                     SELECT $1, p, gen_random_uuid(), 'incident.declared', 'incident-' || p, \
                            '{}', 'pending', \
                            now() - interval '1 hour' \
                              + make_interval(secs => $2::float8 * 100 + p) \
                       FROM generate_series(1, $3::int8) AS p",
                    &[&id, &f64::from(n), count],
                )
                .await
                .unwrap();
            endpoints.push(id);
        }
        endpoints
    }

    /// The endpoints of a test, in the order they were made.
    struct Endpoints(Vec<Uuid>);

    impl Endpoints {
        /// What a claim took: (the endpoint's index, the position), sorted.
        fn taken(&self, claimed: &[Claimed]) -> Vec<(usize, i64)> {
            let mut taken: Vec<(usize, i64)> = claimed
                .iter()
                .map(|c| {
                    let endpoint = self.0.iter().position(|e| *e == c.webhook_id).unwrap();
                    (endpoint, c.position)
                })
                .collect();
            taken.sort_unstable();
            taken
        }
    }

    fn sender_of(store: &EventStore, concurrency: usize) -> Arc<Sender> {
        let settings = WebhookSettings {
            concurrency,
            ..WebhookSettings::default()
        };
        Sender::new(store, settings, Arc::new(Notify::new())).unwrap()
    }

    #[tokio::test]
    async fn a_claim_with_few_free_slots_spreads_them_over_the_endpoints_soonest_first() {
        let db = eventstore::testing::TestDatabase::create().await;
        let store = db.store();
        let endpoints = Endpoints(endpoints_with_due_deliveries(&store, &[6, 6, 6, 6]).await);
        let sender = sender_of(&store, 4);
        let taken = |claimed: &[Claimed]| endpoints.taken(claimed);

        // Four slots over four endpoints: at most two (twice the fair share) from the
        // soonest endpoint, its two soonest, and the rest from the next soonest.
        let first = sender.claim(4).await.unwrap();
        assert_eq!(taken(&first), [(0, 1), (0, 2), (1, 1), (1, 2)]);
        // The next claim reads on, past what is leased.
        let second = sender.claim(4).await.unwrap();
        assert_eq!(taken(&second), [(0, 3), (0, 4), (1, 3), (1, 4)]);
        // Many free slots: a share of eight is more than any endpoint has left, so every due
        // delivery is taken.
        let third = taken(&sender.claim(16).await.unwrap());
        assert_eq!(third.len(), 16);
        let by_endpoint = |n: usize| third.iter().filter(|(e, _)| *e == n).count();
        assert_eq!(
            (
                by_endpoint(0),
                by_endpoint(1),
                by_endpoint(2),
                by_endpoint(3)
            ),
            (2, 2, 6, 6)
        );
    }

    #[tokio::test]
    async fn the_fair_share_counts_only_the_endpoints_with_something_due() {
        let db = eventstore::testing::TestDatabase::create().await;
        let store = db.store();
        // Registered endpoints with nothing due do not shrink a busy one's share.
        let endpoints = Endpoints(endpoints_with_due_deliveries(&store, &[6, 0, 0, 0]).await);
        let claimed = sender_of(&store, 4).claim(4).await.unwrap();
        assert_eq!(endpoints.taken(&claimed), [(0, 1), (0, 2), (0, 3), (0, 4)]);
    }

    /// A send's end asks for a claim only at an endpoint that a claim passed by at its
    /// limit; one at its limit through handed-over deliveries alone owes no claim.
    #[tokio::test]
    async fn only_an_endpoint_a_claim_passed_by_at_its_limit_asks_for_a_claim_when_a_send_ends() {
        let db = eventstore::testing::TestDatabase::create().await;
        let store = db.store();
        let endpoints = Endpoints(endpoints_with_due_deliveries(&store, &[3, 3]).await);
        let (full, other) = (endpoints.0[0], endpoints.0[1]);
        let sender = sender_of(&store, 8);
        let per_endpoint = sender.settings.per_endpoint;
        let sending = |n: usize| {
            sender.in_flight.lock().unwrap().insert(full, n);
        };

        sending(per_endpoint);
        assert!(!sender.release(full), "no claim passed it by");

        sending(per_endpoint);
        let claimed = sender.claim(8).await.unwrap();
        assert_eq!(endpoints.taken(&claimed), [(1, 1), (1, 2), (1, 3)]);
        assert!(!sender.release(other), "the claim did not pass this one by");
        assert!(sender.release(full), "the claim passed it by at its limit");
        assert!(!sender.release(full), "one claim asked for");
    }

    #[tokio::test]
    async fn a_record_whose_lease_was_taken_over_releases_nothing_behind_it() {
        let db = eventstore::testing::TestDatabase::create().await;
        let store = db.store();
        let webhook_id = endpoints_with_due_deliveries(&store, &[0]).await[0];
        let client = store.pool().get().await.unwrap();
        // A queue of two: the head claimed twice (a first sender's lease ran out and a
        // second claim took it: attempt 2 is in flight), the next one waiting behind it.
        client
            .execute(
                "INSERT INTO webhook_deliveries (webhook_id, position, message_id, event_type, \
                                                 ordering_key, body, state, next_attempt_at, \
                                                 attempts, leased_until) \
                 VALUES ($1, 1, gen_random_uuid(), 'incident.declared', 'incident-q', '{}', \
                         'pending', now(), 2, now() + interval '1 minute'), \
                        ($1, 2, gen_random_uuid(), 'incident.updated', 'incident-q', '{}', \
                         'pending', 'infinity', 0, NULL)",
                &[&webhook_id],
            )
            .await
            .unwrap();
        let record = |attempt| crate::AttemptRecord {
            recipient: webhook_id,
            position: 1,
            ordering_key: "incident-q",
            attempt,
            started_at: Utc::now(),
            duration_ms: 3,
            code: Some(204),
            error: None,
            state: "delivered",
            next_attempt_at: None,
        };
        let states = || async {
            client
                .query(
                    "SELECT state, next_attempt_at = 'infinity' FROM webhook_deliveries \
                      WHERE webhook_id = $1 ORDER BY position",
                    &[&webhook_id],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| (row.get::<_, String>(0), row.get::<_, bool>(1)))
                .collect::<Vec<_>>()
        };

        // The first sender's late record: it changes nothing, and the next one keeps
        // waiting for the head that is still being sent.
        let released = crate::record_attempts(&client, &RECORD_SQL, &[record(1)])
            .await
            .unwrap();
        assert_eq!(released, 0);
        assert_eq!(
            states().await,
            vec![("pending".to_owned(), false), ("pending".to_owned(), true)]
        );

        // The record of the attempt in flight ends the head and releases the next one, even
        // when the late record comes again in the same batch.
        let released = crate::record_attempts(&client, &RECORD_SQL, &[record(1), record(2)])
            .await
            .unwrap();
        assert_eq!(released, 1);
        assert_eq!(
            states().await,
            vec![
                ("delivered".to_owned(), false),
                ("pending".to_owned(), false)
            ]
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Tue, 24 Nov 2026 12:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(retry_after("Tue, 24 Nov 2026 11:00:00 GMT", now), None);
        assert_eq!(retry_after("soon", now), None);
    }
}
