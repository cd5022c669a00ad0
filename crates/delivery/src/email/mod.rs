//! The email channel: notices mailed to people who subscribed, through SMTP, on the
//! crate's design (outbox from the log, leases, backoff, per-incident order, every attempt
//! logged).
//!
//! * [`secrets`]: the subscriber's own key, the sealed address, the signed links.
//! * [`outbox`]: subscriber events and notices into `email_deliveries`.
//! * [`sender`]: messages put together and sent over a bounded pool of SMTP connections.
//! * [`render`]: the templates of emails and of the pages their links answer.
//! * [`log`]: a subscriber's deliveries and attempts.
//!
//! Erasure: ending a subscription appends `subscriber.erased` and deletes the subscriber's
//! key in the same transaction ([`ERASE_KEY_SQL`]); the outbox then clears the sealed copy
//! from `email_recipients` and cancels what was still owed. No table, log line, metric or
//! error holds an address in clear at any time: it is opened in memory when a message is
//! sent, and an SMTP reply is kept by its code only.

pub mod log;
pub mod outbox;
pub mod render;
pub mod secrets;
pub mod sender;
pub mod smtp;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use uuid::Uuid;

/// An email address as the SMTP library parses it (RFC 5321).
pub use lettre::Address as EmailAddress;
pub use secrets::{address_digest, LinkToken, SubscriberKey};
pub use sender::EmailSender;

use crate::DeliveryError;

/// How email is sent, from `crier serve` settings.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// `smtp://host:port`, `smtps://user:pass@host:465`, `smtp://…?tls=required`.
    pub smtp_url: String,
    /// The `From` of every email; its domain ends every `Message-ID`.
    pub from: String,
    /// SMTP connections (and so messages in flight) at once in this process.
    pub connections: u32,
    /// The longest one SMTP command may take.
    pub timeout: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub max_attempts: u32,
    /// PEM certificates trusted for the server's TLS besides the web's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

impl EmailSettings {
    /// The defaults for this server and sender.
    pub fn new(smtp_url: String, from: String) -> EmailSettings {
        EmailSettings {
            smtp_url,
            from,
            connections: 4,
            timeout: Duration::from_secs(30),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
            max_attempts: 30,
            ca_file: None,
        }
    }
}

/// Keeps a new subscriber's key and address digest beside its first request, in the
/// request's own transaction (`$1` the subscriber id, `$2` the key, `$3` the digest).
pub const STORE_KEY_SQL: &str =
    "INSERT INTO subscriber_keys (subscriber_id, key, address_digest) VALUES ($1, $2, $3)";

/// Destroys a subscriber's key in the transaction of its `subscriber.erased` event (`$1`
/// the subscriber id): every sealed copy of its address becomes unreadable.
pub const ERASE_KEY_SQL: &str = "DELETE FROM subscriber_keys WHERE subscriber_id = $1";

/// Ends the subscription `id` and destroys its key, in one transaction.
pub async fn erase(
    publisher: &projections::Publisher,
    id: uuid::Uuid,
    reason: domain::subscriber::ErasureReason,
    metadata: &eventstore::Metadata,
) -> Result<projections::Outcome<domain::subscriber::Subscriber>, DeliveryError> {
    let command = domain::subscriber::Command::Erase(domain::subscriber::Erase {
        reason,
        author: metadata.actor.clone(),
        at: chrono::Utc::now(),
    });
    let also = projections::AlsoWrite {
        statement: ERASE_KEY_SQL,
        params: &[&id],
    };
    publisher
        .execute_once::<domain::subscriber::SubscriberDecider>(
            id,
            &command,
            None,
            metadata,
            None,
            Some(&also),
        )
        .await
        .map_err(DeliveryError::Command)
}

/// Erases every subscription that key `key_id` made and that has not ended, with the
/// reason `key_revoked`. The email outbox has already ended them at the revocation's
/// position, whether or not this runs (a subscription requested so shortly before that
/// the outbox had not met it yet is ended there too, and erased by an admin later); this
/// makes it visible and destroys the addresses.
pub async fn erase_registered_by(
    publisher: &projections::Publisher,
    key_id: uuid::Uuid,
    metadata: &eventstore::Metadata,
) -> Result<usize, DeliveryError> {
    let ids: Vec<uuid::Uuid> = {
        let client = publisher.store().pool().get().await?;
        let rows = client
            .query(
                "SELECT r.subscriber_id FROM email_recipients r \
                   JOIN rm_subscribers s ON s.id = r.subscriber_id \
                  WHERE r.registered_by = $1 AND s.status <> 'unsubscribed'",
                &[&key_id.to_string()],
            )
            .await?;
        rows.iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?
    };
    for id in &ids {
        erase(
            publisher,
            *id,
            domain::subscriber::ErasureReason::KeyRevoked,
            metadata,
        )
        .await?;
    }
    Ok(ids.len())
}

/// The subscription (not ended) of an address digest, if there is one.
pub async fn subscriber_of_digest<C: GenericClient>(
    client: &C,
    digest: &[u8],
) -> Result<Option<Uuid>, DeliveryError> {
    let row = client
        .query_opt(
            "SELECT subscriber_id FROM subscriber_keys WHERE address_digest = $1",
            &[&digest],
        )
        .await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}

/// The keys of these subscribers (those whose subscription has not ended).
pub async fn keys_of<C: GenericClient>(
    client: &C,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, SubscriberKey>, DeliveryError> {
    let rows = client
        .query(
            "SELECT subscriber_id, key FROM subscriber_keys WHERE subscriber_id = ANY($1)",
            &[&ids],
        )
        .await?;
    let mut keys = HashMap::with_capacity(rows.len());
    for row in rows {
        let bytes: Vec<u8> = row.try_get(1)?;
        if let Some(key) = SubscriberKey::from_bytes(&bytes) {
            keys.insert(row.try_get(0)?, key);
        }
    }
    Ok(keys)
}
