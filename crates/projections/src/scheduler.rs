//! The scheduler: maintenances that start and end on time, and their reminders.
//!
//! Time-driven moves are events like any other, decided by the domain on the time the
//! scheduler hands it (`maintenance::Command::Start`, `Complete`, `Remind`), appended by the
//! one write path with the expected version of the maintenance as the scheduler read it,
//! under the actor `system`. Every `serve` process runs a scheduler; when several see the
//! same move due, the expected version lets one append it and the others find the version
//! moved (and do nothing), so each move happens once. A publisher's own move first
//! (starting early, cancelling, completing) leaves nothing due. No timer is trusted: each
//! tick reads what is due from the read models, so a process started after the time
//! catches up at once, and one killed mid-move leaves it to the next tick of any process.

use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::language::Language;
use domain::maintenance::{Automatic, MaintenanceDecider, SYSTEM};
use eventstore::{CancellationToken, EventStore, Metadata};
use tasks::Chain;
use uuid::Uuid;

use crate::{queries, CommandError, Publisher};

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Time between looks at what is due: how late a move may be.
    pub interval: Duration,
    /// The language of its updates' texts (with a translation where Crier has one).
    pub default_language: Language,
}

/// Makes every move due at `now` once; answers how many it made (another process may have
/// made the others).
pub async fn tick(
    publisher: &Publisher,
    store: &EventStore,
    default_language: &Language,
    now: DateTime<Utc>,
) -> Result<usize, CommandError> {
    let unfinished = {
        let client = store
            .pool()
            .get()
            .await
            .map_err(crate::ProjectionError::from)?;
        queries::unfinished_maintenances(&client, now).await?
    };
    let mut made = 0;
    for maintenance in unfinished {
        let Some(next) = maintenance.state.due(now) else {
            continue;
        };
        let command = next.command(Automatic {
            update_id: Uuid::new_v4(),
            default_language: default_language.clone(),
            at: now,
        });
        let written = publisher
            .execute::<MaintenanceDecider>(
                maintenance.id,
                &command,
                Some(maintenance.version),
                &Metadata::by(SYSTEM),
            )
            .await;
        match written {
            Ok(written) => made += written.events,
            // Another process, or a publisher, moved it first: nothing is due any more.
            Err(CommandError::VersionMismatch { .. } | CommandError::Contended) => {}
            // The database away: the next tick tries everything again.
            Err(CommandError::Projection(e)) if e.is_unavailable() => {
                return Err(CommandError::Projection(e))
            }
            // One maintenance that cannot be moved holds back no other.
            Err(e) => tracing::warn!(
                error = %Chain(&e), maintenance = %maintenance.id,
                "the scheduler could not move a maintenance"
            ),
        }
    }
    Ok(made)
}

/// Ticks every `settings.interval` until `cancel`; a failed tick (the database away) is
/// logged and tried again at the next.
pub async fn run(
    publisher: Publisher,
    store: EventStore,
    settings: SchedulerSettings,
    cancel: CancellationToken,
) -> Result<(), CommandError> {
    loop {
        match tick(&publisher, &store, &settings.default_language, Utc::now()).await {
            Ok(0) => {}
            Ok(made) => tracing::info!(made, "the scheduler moved maintenances"),
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "the scheduler could not look at what is due")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.interval) => {}
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}
