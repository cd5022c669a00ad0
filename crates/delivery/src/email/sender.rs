//! The email sender: claims due email deliveries with leases, sends them through a bounded
//! pool of SMTP connections, and records every attempt, as the webhook sender does. It
//! claims up to 64 deliveries per connection ahead, so that one claim and one record
//! transaction serve many messages while no more than `connections` SMTP conversations run
//! at once.
//!
//! A message is put together when it is sent: the address is opened with the subscriber's
//! key (gone: the subscription ended, the delivery is cancelled), the notice's parts come
//! from `email_notices`, the links are signed for the subscriber. Its `Message-ID` is
//! `<{event id}.{subscriber id}@{domain of CRIER_EMAIL_FROM}>` (the same on every retry);
//! a notice that does not open its resource's thread names that thread's first message in
//! `In-Reply-To` and `References`, so mail clients show an incident as one conversation.
//!
//! SMTP replies: accepted delivers; a permanent (5xx) refusal fails that delivery at once
//! and only it; a transient (4xx) one, a timeout or a lost connection is retried after a
//! backoff. An attempt is recorded by its reply code and a fixed description, never the
//! server's text, which may quote the address.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use eventstore::{CancellationToken, EventStore};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::Message;
use tasks::Chain;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::email::render::{self, NoticeEmail};
use crate::email::secrets::SubscriberKey;
use crate::email::smtp::{ReadyMessage, SmtpPool, SmtpServer};
use crate::email::EmailSettings;

/// The email recorder's statements ([`crate::record_attempts`]).
static RECORD_SQL: LazyLock<crate::RecordSql> = LazyLock::new(|| {
    crate::RecordSql::new(
        "email_deliveries",
        "email_attempts",
        "subscriber_id",
        "reply_code",
    )
});
use crate::sender::{backoff_between, jitter};
use crate::DeliveryError;

/// Deliveries claimed ahead per SMTP connection: one claim and one record transaction serve
/// many messages, while the connections stay as few as configured. It also bounds what a
/// `kill -9` can make be sent twice: what was claimed, sent, and not yet recorded.
/// (`cargo bench --bench email -- --subscribers 5000`, 4 connections: 16 gave 0.25 of the
/// baseline's rate, 64 gave 0.53; at 100,000 subscribers 128 did no better than 64.)
pub const CLAIMED_PER_CONNECTION: usize = 64;
const IDLE_POLL: Duration = Duration::from_millis(500);
const CLAIM_GATHER: Duration = Duration::from_millis(5);
const RECORD_BATCH: usize = 512;
/// How long the recorder waits for more records, unless it has enough already.
const RECORD_GATHER: Duration = Duration::from_millis(10);
const RECORD_GATHER_ENOUGH: usize = 64;
/// Renderings of notices kept in memory (a fan-out reads one for many messages).
const NOTICES_KEPT: usize = 256;

/// A delivery this process holds the lease of, with what its message is made of.
struct Claimed {
    /// The last moment its send may start and still end within the lease.
    start_by: Instant,
    subscriber_id: Uuid,
    position: i64,
    /// Its queue: the subscriber's deliveries of one resource, sent in order.
    ordering_key: String,
    attempt: i32,
    kind: Kind,
    address: Option<String>,
    key: Option<SubscriberKey>,
}

enum Kind {
    Confirmation {
        language: String,
        requested_at: DateTime<Utc>,
    },
    Notice(Arc<NoticeRow>),
    /// Its rendering is missing (cannot happen: written with the delivery).
    Unknown,
}

/// One row of `email_notices`.
struct NoticeRow {
    email: NoticeEmail,
    event_id: Uuid,
    thread: String,
    opens_thread: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Delivered,
    /// Refused for good, or out of attempts.
    Failed,
    /// Its subscription ended: nothing to send.
    Cancelled,
    Retry,
}

struct Record {
    subscriber_id: Uuid,
    position: i64,
    ordering_key: String,
    attempt: i32,
    started_at: DateTime<Utc>,
    duration_ms: i32,
    reply_code: Option<i16>,
    error: Option<String>,
    state: &'static str,
    next_attempt_at: Option<DateTime<Utc>>,
}

type Records = mpsc::UnboundedReceiver<Option<(Record, OwnedSemaphorePermit)>>;
type RecordsSender = mpsc::UnboundedSender<Option<(Record, OwnedSemaphorePermit)>>;

pub struct EmailSender {
    store: EventStore,
    settings: EmailSettings,
    /// Where links point and notices are rendered for.
    site: notices::Site,
    smtp: SmtpPool,
    from: Mailbox,
    /// The right-hand side of every Message-ID.
    domain: String,
    wake: Arc<Notify>,
    /// Deliveries claimed and not yet recorded.
    slots: Arc<Semaphore>,
    /// SMTP conversations at once: the connections the pool may hold.
    connections: Semaphore,
    notices: Mutex<HashMap<(i64, String, String), Arc<NoticeRow>>>,
}

/// The settings of the claim's transaction. A lease lost in a crash only means the
/// delivery is sent again (at least once allows it): no need to wait for the disk. The
/// claim is planned for the table as it is at each execution: a plan cached while the
/// table was small scans it whole once a fan-out has filled it, and the claim's generic
/// plan under the recorder's settings ([`crate::KEYED_TRANSACTION_SQL`]) ran 2.6 times
/// slower in `cargo bench --bench email`.
const CLAIM_TRANSACTION_SQL: &str =
    "SET LOCAL synchronous_commit = off; SET LOCAL plan_cache_mode = force_custom_plan";

impl EmailSender {
    /// A sender of `settings`, or why they cannot work (checked at start, so that a typo
    /// fails loudly).
    pub fn new(
        store: &EventStore,
        settings: EmailSettings,
        site: notices::Site,
        wake: Arc<Notify>,
    ) -> Result<Arc<EmailSender>, DeliveryError> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|_| DeliveryError::Settings("CRIER_EMAIL_FROM is not an address".into()))?;
        let domain = from.email.domain().to_owned();
        let connections = settings.connections.max(1);
        let extra_roots = match &settings.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|_| {
                DeliveryError::Settings(format!(
                    "CRIER_SMTP_CA_FILE: cannot read {}",
                    path.display()
                ))
            })?),
            None => None,
        };
        let smtp = SmtpPool::new(SmtpServer::from_url_trusting(
            &settings.smtp_url,
            settings.timeout,
            extra_roots.as_deref(),
        )?);
        Ok(Arc::new(EmailSender {
            store: store.clone(),
            slots: Arc::new(Semaphore::new(
                connections as usize * CLAIMED_PER_CONNECTION,
            )),
            connections: Semaphore::new(connections as usize),
            settings,
            site,
            smtp,
            from,
            domain,
            wake,
            notices: Mutex::new(HashMap::new()),
        }))
    }

    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Sends until `cancel`, then waits a little for the sends in flight.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> Result<(), DeliveryError> {
        let (records, recorded) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(self.clone().record_loop(recorded));
        let mut retry = Duration::from_millis(100);
        loop {
            if cancel.is_cancelled() {
                break;
            }
            if recorder.is_finished() {
                return Err(DeliveryError::RecorderStopped);
            }
            let free = self.slots.available_permits();
            let claimed = if free == 0 {
                Ok(Vec::new())
            } else {
                self.claim(free).await
            };
            match claimed {
                Ok(claimed) if !claimed.is_empty() => {
                    retry = Duration::from_millis(100);
                    for delivery in claimed {
                        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                            continue; // its lease runs out and it is sent later
                        };
                        let sender = self.clone();
                        let records = records.clone();
                        tokio::spawn(
                            async move { sender.attempt(delivery, permit, records).await },
                        );
                    }
                    continue;
                }
                Ok(_) => retry = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "email sender cannot claim deliveries; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = cancel.cancelled() => break,
                    }
                    retry = (retry * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
            tokio::select! {
                _ = self.wake.notified() => tokio::time::sleep(CLAIM_GATHER).await,
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = cancel.cancelled() => break,
            }
        }
        let all = u32::try_from(self.settings.connections.max(1) as usize * CLAIMED_PER_CONNECTION)
            .unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.slots.acquire_many(all)).await;
        let _ = records.send(None);
        let _ = tokio::time::timeout(Duration::from_secs(2), recorder).await;
        tracing::debug!("email sender stopped");
        Ok(())
    }

    /// Leases up to `limit` due deliveries, soonest first.
    async fn claim(&self, limit: usize) -> Result<Vec<Claimed>, DeliveryError> {
        // A claimed delivery may wait one command timeout for a connection, then its send
        // (a few commands) must end within the lease. One that waited longer is not sent
        // (another process may have taken it over) and is claimed again once the lease
        // runs out.
        let queue_wait = self.settings.timeout;
        let start_by = Instant::now() + queue_wait;
        let lease = (queue_wait + self.settings.timeout * 3).as_secs_f64();
        let mut client = self.store.pool().get().await?;
        let transaction = client.transaction().await?;
        transaction.batch_execute(CLAIM_TRANSACTION_SQL).await?;
        let statement = transaction
            .prepare_cached(
                "WITH due AS ( \
                   SELECT ctid AS row_id, subscriber_id FROM email_deliveries \
                    WHERE state = 'pending' AND next_attempt_at < 'infinity' \
                      AND next_attempt_at <= now() \
                      AND (leased_until IS NULL OR leased_until < now()) \
                    ORDER BY next_attempt_at LIMIT $1 \
                      FOR UPDATE SKIP LOCKED) \
                 UPDATE email_deliveries d \
                    SET leased_until = now() + make_interval(secs => $2), \
                        attempts = d.attempts + 1 \
                   FROM due JOIN email_recipients r USING (subscriber_id) \
                   LEFT JOIN subscriber_keys k USING (subscriber_id) \
                  WHERE d.ctid = due.row_id \
                 RETURNING d.subscriber_id, d.position, d.ordering_key, d.attempts, d.kind, \
                           d.audience, \
                           d.language, r.language AS wanted_language, r.requested_at, \
                           r.sealed_address, k.key",
            )
            .await?;
        let rows = transaction
            .query(&statement, &[&(limit as i64), &lease])
            .await?;
        transaction.commit().await?;
        let wanted: Vec<(i64, String, String)> = rows
            .iter()
            .filter_map(|row| {
                Some((
                    row.try_get("position").ok()?,
                    row.try_get::<_, Option<String>>("audience").ok()??,
                    row.try_get::<_, Option<String>>("language").ok()??,
                ))
            })
            .collect();
        self.load_notices(&client, &wanted).await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let subscriber_id: Uuid = row.try_get("subscriber_id")?;
            let position: i64 = row.try_get("position")?;
            let key: Option<Vec<u8>> = row.try_get("key")?;
            let key = key.as_deref().and_then(SubscriberKey::from_bytes);
            let sealed: Option<String> = row.try_get("sealed_address")?;
            let address = key
                .as_ref()
                .zip(sealed.as_deref())
                .and_then(|(key, sealed)| key.open(subscriber_id, sealed));
            let kind: String = row.try_get("kind")?;
            let kind = if kind == "confirmation" {
                Kind::Confirmation {
                    language: row
                        .try_get::<_, Option<String>>("wanted_language")?
                        .unwrap_or_else(|| self.site.default_language.as_str().to_owned()),
                    requested_at: row.try_get("requested_at")?,
                }
            } else {
                let audience: Option<String> = row.try_get("audience")?;
                let language: Option<String> = row.try_get("language")?;
                let found = audience.zip(language).and_then(|(a, l)| {
                    self.notices
                        .lock()
                        .ok()
                        .and_then(|n| n.get(&(position, a, l)).cloned())
                });
                found.map_or(Kind::Unknown, Kind::Notice)
            };
            claimed.push(Claimed {
                start_by,
                subscriber_id,
                position,
                ordering_key: row.try_get("ordering_key")?,
                attempt: row.try_get("attempts")?,
                kind,
                address,
                key,
            });
        }
        Ok(claimed)
    }

    /// Reads the renderings of notices not in memory yet.
    async fn load_notices(
        &self,
        client: &deadpool_postgres::Client,
        wanted: &[(i64, String, String)],
    ) -> Result<(), DeliveryError> {
        let missing: Vec<&(i64, String, String)> = match self.notices.lock() {
            Ok(notices) => wanted
                .iter()
                .filter(|k| !notices.contains_key(*k))
                .collect(),
            Err(_) => return Ok(()),
        };
        if missing.is_empty() {
            return Ok(());
        }
        let positions: Vec<i64> = missing.iter().map(|k| k.0).collect();
        let audiences: Vec<&str> = missing.iter().map(|k| k.1.as_str()).collect();
        let languages: Vec<&str> = missing.iter().map(|k| k.2.as_str()).collect();
        let rows = client
            .query(
                "SELECT n.position, n.audience, n.language, n.event_id, n.thread, \
                        n.opens_thread, n.subject, n.text_body, n.html_body \
                   FROM email_notices n \
                   JOIN (SELECT DISTINCT * FROM unnest($1::int8[], $2::text[], $3::text[])) \
                        AS w(position, audience, language) \
                     USING (position, audience, language)",
                &[&positions, &audiences, &languages],
            )
            .await?;
        let mut notices = match self.notices.lock() {
            Ok(notices) => notices,
            Err(_) => return Ok(()),
        };
        if notices.len() + rows.len() > NOTICES_KEPT {
            notices.clear();
        }
        for row in rows {
            let language: String = row.try_get("language")?;
            let key = (
                row.try_get("position")?,
                row.try_get("audience")?,
                language.clone(),
            );
            notices.insert(
                key,
                Arc::new(NoticeRow {
                    email: NoticeEmail {
                        language,
                        subject: row.try_get("subject")?,
                        text: row.try_get("text_body")?,
                        html: row.try_get("html_body")?,
                    },
                    event_id: row.try_get("event_id")?,
                    thread: row.try_get("thread")?,
                    opens_thread: row.try_get("opens_thread")?,
                }),
            );
        }
        Ok(())
    }

    fn link(&self, path: &str, token: &str) -> String {
        format!(
            "{}/v1/subscribers/{path}?token={token}",
            self.site.source_base
        )
    }

    fn message_id(&self, part: &str, subscriber_id: Uuid) -> String {
        format!("<{part}.{}@{}>", subscriber_id.simple(), self.domain)
    }

    /// The message for a claimed delivery, or why there is none.
    fn message(&self, delivery: &Claimed) -> Result<Message, (Outcome, &'static str)> {
        let (Some(address), Some(key)) = (&delivery.address, &delivery.key) else {
            return Err((Outcome::Cancelled, "the subscription has ended"));
        };
        let to: Mailbox = address
            .parse()
            .map_err(|_| (Outcome::Failed, "the stored address does not parse"))?;
        let unsubscribe_url = self.link(
            "unsubscribe",
            &key.unsubscribe_token(delivery.subscriber_id),
        );
        let header = |name: &'static str, value: String| {
            HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
        };
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .raw_header(header("Auto-Submitted", "auto-generated".into()));
        let (builder, text, html) = match &delivery.kind {
            Kind::Confirmation {
                language,
                requested_at,
            } => {
                let token = key.confirmation_token(delivery.subscriber_id, *requested_at);
                let (subject, text, html) =
                    render::confirmation(language, &self.link("confirm", &token))
                        .map_err(|_| (Outcome::Failed, "the confirmation cannot be rendered"))?;
                let builder = builder
                    .subject(subject)
                    .message_id(Some(self.message_id(
                        &format!("confirm-{}", delivery.position),
                        delivery.subscriber_id,
                    )))
                    .raw_header(header("Content-Language", language.clone()));
                (builder, text, html)
            }
            Kind::Notice(notice) => {
                let (text, html) = render::notice_parts(&notice.email, &unsubscribe_url)
                    .map_err(|_| (Outcome::Failed, "the notice cannot be rendered"))?;
                let root = self.message_id(&notice.thread, delivery.subscriber_id);
                let own = if notice.opens_thread {
                    root.clone()
                } else {
                    self.message_id(
                        &notice.event_id.simple().to_string(),
                        delivery.subscriber_id,
                    )
                };
                let mut builder = builder
                    .subject(notice.email.subject.clone())
                    .message_id(Some(own))
                    .raw_header(header("Content-Language", notice.email.language.clone()))
                    .raw_header(header("List-Unsubscribe", format!("<{unsubscribe_url}>")))
                    .raw_header(header(
                        "List-Unsubscribe-Post",
                        "List-Unsubscribe=One-Click".into(),
                    ));
                if !notice.opens_thread {
                    builder = builder.in_reply_to(root.clone()).references(root);
                }
                (builder, text, html)
            }
            Kind::Unknown => return Err((Outcome::Failed, "the notice's rendering is missing")),
        };
        builder
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|_| (Outcome::Failed, "the message cannot be built"))
    }

    async fn attempt(&self, delivery: Claimed, slot: OwnedSemaphorePermit, records: RecordsSender) {
        // Put together before a connection is taken: the connections, few, are kept busy
        // sending while the messages behind them are made.
        let message = self
            .message(&delivery)
            .map(|message| ReadyMessage::from(&message));
        let Ok(_connection) = self.connections.acquire().await else {
            return;
        };
        if Instant::now() > delivery.start_by {
            // Waited too long for a connection to finish within its lease: another process
            // may take it over. It is left, unrecorded, to be claimed again.
            return;
        }
        let started_at = Utc::now();
        let clock = Instant::now();
        let (outcome, reply_code, error) = match message {
            Err((outcome, why)) => (outcome, None, Some(why.to_owned())),
            Ok(message) => match self.smtp.send_ready(&message).await {
                Ok(()) => (Outcome::Delivered, None, None),
                Err(e) => {
                    let code = e.code().and_then(|c| i16::try_from(c).ok());
                    let (outcome, why) = if e.is_permanent() {
                        (Outcome::Failed, "the server refused the message for good")
                    } else if e.is_transient() {
                        (Outcome::Retry, "the server deferred the message")
                    } else if e.is_timeout() {
                        (Outcome::Retry, "timed out")
                    } else {
                        (Outcome::Retry, "could not talk to the SMTP server")
                    };
                    (outcome, code, Some(why.to_owned()))
                }
            },
        };
        let duration = clock.elapsed();
        let max_attempts = i32::try_from(self.settings.max_attempts).unwrap_or(i32::MAX);
        let (state, next_in) = match outcome {
            Outcome::Delivered => ("delivered", None),
            Outcome::Failed => ("failed", None),
            Outcome::Cancelled => ("cancelled", None),
            Outcome::Retry if delivery.attempt >= max_attempts => ("failed", None),
            Outcome::Retry => (
                "pending",
                Some(backoff_between(
                    self.settings.retry_base,
                    self.settings.retry_max,
                    delivery.attempt,
                    jitter(),
                )),
            ),
        };
        metrics::counter!("crier_email_attempts_total", "outcome" => state).increment(1);
        metrics::histogram!("crier_email_attempt_seconds").record(duration.as_secs_f64());
        let record = Record {
            subscriber_id: delivery.subscriber_id,
            position: delivery.position,
            ordering_key: delivery.ordering_key,
            attempt: delivery.attempt,
            started_at,
            duration_ms: i32::try_from(duration.as_millis()).unwrap_or(i32::MAX),
            reply_code,
            error,
            state,
            next_attempt_at: next_in
                .and_then(|wait| chrono::Duration::from_std(wait).ok())
                .map(|wait| Utc::now() + wait),
        };
        // The recorder gone (the process stops): the lease runs out and it is sent again.
        let _ = records.send(Some((record, slot)));
    }

    async fn record_loop(self: Arc<Self>, mut records: Records) {
        let mut stopping = false;
        while !stopping {
            let mut batch = Vec::new();
            match records.recv().await {
                Some(Some(record)) => batch.push(record),
                Some(None) | None => stopping = true,
            }
            // A record transaction costs about as much for a few records as for many: wait a
            // little for more (their slots are held meanwhile, but sends go on).
            let gather_until = tokio::time::Instant::now() + RECORD_GATHER;
            while batch.len() < RECORD_BATCH && !stopping {
                match records.try_recv() {
                    Ok(Some(record)) => batch.push(record),
                    Ok(None) => stopping = true,
                    Err(_) if batch.len() >= RECORD_GATHER_ENOUGH => break,
                    Err(_) => match tokio::time::timeout_at(gather_until, records.recv()).await {
                        Ok(Some(Some(record))) => batch.push(record),
                        Ok(Some(None)) | Ok(None) => stopping = true,
                        Err(_) => break,
                    },
                }
            }
            if batch.is_empty() {
                continue;
            }
            let mut wait = Duration::from_millis(100);
            for _ in 0..6 {
                match self.record_batch(&batch).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %Chain(&e), records = batch.len(), "could not record email attempts; retrying");
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                }
            }
            drop(batch);
            self.wake.notify_one();
        }
    }

    async fn record_batch(
        &self,
        batch: &[(Record, OwnedSemaphorePermit)],
    ) -> Result<(), DeliveryError> {
        let records: Vec<crate::AttemptRecord> = batch
            .iter()
            .map(|(r, _)| crate::AttemptRecord {
                recipient: r.subscriber_id,
                position: r.position,
                ordering_key: &r.ordering_key,
                attempt: r.attempt,
                started_at: r.started_at,
                duration_ms: r.duration_ms,
                code: r.reply_code,
                error: r.error.as_deref(),
                state: r.state,
                next_attempt_at: r.next_attempt_at,
            })
            .collect();
        let client = self.store.pool().get().await?;
        crate::record_attempts(&client, &RECORD_SQL, &records)
            .await
            .map(|_released| ())
    }
}
