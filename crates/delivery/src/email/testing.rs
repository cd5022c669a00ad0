//! Many confirmed subscribers at once, for tests and benchmarks of a fan-out: what
//! `POST /v1/subscribers` and the confirmation link do, through the same publisher and the
//! same key table, without the mail in between.

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
    let publisher = Publisher::new(store);
    let metadata = Metadata::by("seed");
    stream::iter(addresses)
        .map(|address| {
            let publisher = &publisher;
            let metadata = &metadata;
            async move {
                let id = Uuid::new_v4();
                let key = SubscriberKey::generate()?;
                let request = subscriber::Command::Request(subscriber::Request {
                    subscriber_id: id,
                    sealed_address: key.seal(id, &address)?,
                    service_ids: Vec::new(),
                    language: None,
                    tenant: None,
                    author: "seed".into(),
                    at: Utc::now(),
                });
                let key_bytes = key.as_bytes().to_vec();
                let digest = address_digest(None, &address);
                let also = AlsoWrite {
                    statement: STORE_KEY_SQL,
                    params: &[&id, &key_bytes, &digest],
                };
                publisher
                    .execute_once::<SubscriberDecider>(
                        id,
                        &request,
                        None,
                        metadata,
                        None,
                        Some(&also),
                    )
                    .await
                    .map_err(DeliveryError::Command)?;
                let confirm = subscriber::Command::Confirm(subscriber::Confirm { at: Utc::now() });
                publisher
                    .execute::<SubscriberDecider>(id, &confirm, None, metadata)
                    .await
                    .map_err(DeliveryError::Command)?;
                Ok::<Uuid, DeliveryError>(id)
            }
        })
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}
