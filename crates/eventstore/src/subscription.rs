//! Following the global log: durable checkpoints, and the LISTEN connection that wakes
//! followers when another process seals.
//!
//! A [`Subscription`] reads the log after its position in batches, then waits for this
//! process's log head to move, and reads again. The head moves when the local sealer seals,
//! when a `NOTIFY` on [`LOG_CHANNEL`] arrives from another process's sealer (received on a
//! dedicated LISTEN connection that reconnects by itself, and wakes every follower to re-read
//! after a reconnection, since notifications sent meanwhile are lost), or at the latest after
//! the poll interval (500 ms). A lost notification costs latency, never an event. Positions are
//! dense, so a gap is reported as corruption, never skipped.
//!
//! A follower with durable effects stores its position in the transaction of those effects,
//! so a crash neither repeats nor skips an event: [`save_checkpoint`] keeps named positions in
//! `subscription_checkpoints` (the webhook fan-out's, for one), and only ever moves one
//! forwards. The projection builder keeps its own, in the read models' `rm_checkpoint`, so that
//! a replay rebuilds it with them.
//!
//! A reader far behind the head, with nothing to wait for, uses [`crate::LogReader`] instead.

use std::time::Duration;

use deadpool_postgres::GenericClient;
use futures_util::StreamExt;
use tasks::Chain;
use tokio::sync::watch;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use crate::db::connect_one;
use crate::model::{to_u64, LoggedEvent};
use crate::read::read_log_after;
use crate::{EventStore, StoreError};

/// The NOTIFY channel on which sealers announce a new log head (the payload).
pub const LOG_CHANNEL: &str = "crier_log";

/// Loads the stored checkpoint of `subscription`: the last position it has processed.
pub async fn load_checkpoint<C: GenericClient>(
    client: &C,
    subscription: &str,
) -> Result<Option<u64>, StoreError> {
    let row = client
        .query_opt(
            "SELECT position FROM subscription_checkpoints WHERE subscription = $1",
            &[&subscription],
        )
        .await?;
    row.map(|r| to_u64(r.try_get("position")?, "checkpoint"))
        .transpose()
}

/// Stores the checkpoint of `subscription`. Call it in the transaction that stores the
/// effects of the events up to `position`, so that a crash loses or repeats neither. A
/// checkpoint only moves forwards: an older position is ignored.
pub async fn save_checkpoint<C: GenericClient>(
    client: &C,
    subscription: &str,
    position: u64,
) -> Result<(), StoreError> {
    let position = i64::try_from(position)
        .map_err(|_| StoreError::config(format!("checkpoint {position} out of range")))?;
    let statement = client
        .prepare_cached(
            "INSERT INTO subscription_checkpoints (subscription, position) VALUES ($1, $2) \
             ON CONFLICT (subscription) DO UPDATE SET position = excluded.position, updated_at = now() \
             WHERE subscription_checkpoints.position <= excluded.position",
        )
        .await?;
    client
        .execute(&statement, &[&subscription, &position])
        .await?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct SubscriptionOptions {
    /// Most events one [`Subscription::next_batch`] returns.
    pub batch_size: usize,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        SubscriptionOptions { batch_size: 500 }
    }
}

/// A follower of the global log: catches up from a position, then waits for new events,
/// woken by this process's sealer or by NOTIFY from other processes, and polling all the
/// same, so a lost notification costs latency, never an event.
pub struct Subscription {
    store: EventStore,
    position: u64,
    options: SubscriptionOptions,
    head: watch::Receiver<u64>,
}

impl Subscription {
    /// Follows the log from just after `position` (0: from the first event).
    pub fn from_position(store: &EventStore, position: u64, options: SubscriptionOptions) -> Self {
        Subscription {
            head: store.watch_log_head(),
            store: store.clone(),
            position,
            options,
        }
    }

    /// Follows the log from the durable checkpoint of `name`.
    pub async fn resume(
        store: &EventStore,
        name: &str,
        options: SubscriptionOptions,
    ) -> Result<Self, StoreError> {
        let client = store.pool().get().await?;
        let position = load_checkpoint(&client, name).await?.unwrap_or(0);
        Ok(Self::from_position(store, position, options))
    }

    /// The position of the last event returned (what a checkpoint should store once its
    /// effects are stored).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Returns the next events after the current position, in order, waiting until there
    /// is at least one.
    pub async fn next_batch(&mut self) -> Result<Vec<LoggedEvent>, StoreError> {
        loop {
            // Mark the head as seen before reading, so a seal after the read wakes us.
            self.head.borrow_and_update();
            if let Some(batch) = self.try_next_batch().await? {
                return Ok(batch);
            }
            tokio::select! {
                changed = self.head.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep(self.store.poll_interval()).await;
                    }
                }
                _ = tokio::time::sleep(self.store.poll_interval()) => {}
            }
        }
    }

    /// The next events after the current position, or `None` if there are none now.
    pub async fn try_next_batch(&mut self) -> Result<Option<Vec<LoggedEvent>>, StoreError> {
        let client = self.store.pool().get().await?;
        let events = read_log_after(&client, self.position, self.options.batch_size).await?;
        drop(client);
        let Some(last) = events.last() else {
            return Ok(None);
        };
        // Positions are dense: a hole means the log was tampered with, never "skip it".
        for (offset, event) in events.iter().enumerate() {
            if event.position != self.position + 1 + offset as u64 {
                return Err(StoreError::corrupt(format!(
                    "global log jumps from position {} to {}",
                    self.position + offset as u64,
                    event.position
                )));
            }
        }
        self.position = last.position;
        Ok(Some(events))
    }
}

/// Listens on a dedicated connection (a pooled one would drop notifications when it is
/// recycled) and moves the process's log head; reconnects with backoff.
pub async fn listen(store: EventStore, cancel: CancellationToken) -> Result<(), StoreError> {
    let mut retry = Duration::from_millis(100);
    loop {
        if cancel.is_cancelled() {
            break;
        }
        match store.config().pg_config() {
            Ok(config) => match connect_one(&config).await {
                Ok((client, mut connection)) => {
                    let notified = store.clone();
                    let mut driver = tokio::spawn(async move {
                        let mut messages =
                            futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                        while let Some(message) = messages.next().await {
                            match message {
                                Ok(AsyncMessage::Notification(n)) => {
                                    if let Ok(position) = n.payload().parse::<u64>() {
                                        notified.note_log_head(position);
                                    }
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    tracing::warn!(error = %Chain(&e), "log listener connection failed");
                                    break;
                                }
                            }
                        }
                    });
                    match client.batch_execute(&format!("LISTEN {LOG_CHANNEL}")).await {
                        Ok(()) => {
                            retry = Duration::from_millis(100);
                            // Notifications sent while we were away are lost: re-read.
                            store.nudge_subscribers();
                            tokio::select! {
                                _ = &mut driver => {}
                                _ = cancel.cancelled() => {}
                            }
                        }
                        Err(e) => tracing::warn!(error = %Chain(&e), "LISTEN failed"),
                    }
                    driver.abort();
                    drop(client);
                }
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "log listener cannot connect; retrying")
                }
            },
            Err(e) => return Err(e),
        }
        if cancel.is_cancelled() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = cancel.cancelled() => break,
        }
        retry = (retry * 2).min(Duration::from_secs(5));
    }
    tracing::debug!("log listener stopped");
    Ok(())
}
