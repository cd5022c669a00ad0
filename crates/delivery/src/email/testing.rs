//! Subscribers requested and confirmed, one or many at once, for tests and benchmarks of a
//! fan-out: what `POST /v1/subscribers` and the confirmation link do, through the same
//! publisher and the same key table, without the mail in between. And the pieces the SMTP
//! servers of the tests and the email benchmark share.

use chrono::Utc;
use domain::subscriber::{self, SubscriberDecider};
use eventstore::{EventStore, Metadata};
use futures_util::{stream, StreamExt, TryStreamExt};
use projections::{AlsoWrite, Publisher};
use uuid::Uuid;

use crate::email::{address_digest, SubscriberKey, STORE_KEY_SQL};
use crate::DeliveryError;

/// Subscribes and confirms every address (public, all services, the default language),
/// `concurrency` at a time; answers their ids in the order given. Each still gets its
/// confirmation email, as a subscriber confirmed by hand did.
pub async fn confirmed_subscribers(
    store: &EventStore,
    addresses: Vec<String>,
    concurrency: usize,
) -> Result<Vec<Uuid>, DeliveryError> {
    stream::iter(addresses)
        .map(|address| async move {
            let id = requested_subscriber(store, &address).await?;
            confirm(store, id).await?;
            Ok::<Uuid, DeliveryError>(id)
        })
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

/// Asks for a subscription of `address` (public, all services, the default language), as
/// `POST /v1/subscribers` does, and answers its id: it owes a confirmation email.
pub async fn requested_subscriber(
    store: &EventStore,
    address: &str,
) -> Result<Uuid, DeliveryError> {
    let id = Uuid::new_v4();
    let key = SubscriberKey::generate()?;
    let request = subscriber::Command::Request(subscriber::Request {
        subscriber_id: id,
        sealed_address: key.seal(id, address)?,
        service_ids: Vec::new(),
        language: None,
        tenant: None,
        author: "seed".into(),
        at: Utc::now(),
    });
    let key_bytes = key.as_bytes().to_vec();
    let digest = address_digest(None, address);
    let also = AlsoWrite {
        statement: STORE_KEY_SQL,
        params: &[&id, &key_bytes, &digest],
    };
    Publisher::new(store)
        .execute_once::<SubscriberDecider>(
            id,
            &request,
            None,
            &Metadata::by("seed"),
            None,
            Some(&also),
        )
        .await
        .map_err(DeliveryError::Command)?;
    Ok(id)
}

/// Confirms subscriber `id`, as its confirmation link does.
pub async fn confirm(store: &EventStore, id: Uuid) -> Result<(), DeliveryError> {
    let confirm = subscriber::Command::Confirm(subscriber::Confirm { at: Utc::now() });
    Publisher::new(store)
        .execute::<SubscriberDecider>(id, &confirm, None, &Metadata::by("seed"))
        .await
        .map_err(DeliveryError::Command)?;
    Ok(())
}

/// The address between `<` and `>` in a `MAIL FROM:` or `RCPT TO:` command line, empty when
/// there is none.
pub fn envelope_address(command: &str) -> String {
    command
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(address, _)| address.to_owned())
        .unwrap_or_default()
}

/// Reads a message's content after the server's `354`, up to the line holding a lone dot,
/// giving every line before it (with its CRLF, dots as sent) to `each_line`. Answers false
/// when the connection closed first.
pub async fn read_content<R>(
    lines: &mut R,
    mut each_line: impl FnMut(&str),
) -> std::io::Result<bool>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(false);
        }
        if line == ".\r\n" {
            return Ok(true);
        }
        each_line(&line);
    }
}
