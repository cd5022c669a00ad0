//! The projection builder: folds the global log into the read models, batch by batch, each
//! batch in one transaction with the checkpoint that accounts for it.
//!
//! A batch takes the shared projections lock and locks the `rm_checkpoint` row (`FOR UPDATE`:
//! the builders of several processes take turns, each starting where the last one committed),
//! reads the next sealed events, continues each stream's fold from its row's `state` and
//! `version`, writes the new states, moves the checkpoint and commits. Events at or below a
//! row's version are skipped (an inline write got there first), and a row already at or past
//! the batch's last version of its stream is not even read: most of a busy log is folded that
//! way. A crash loses the whole batch, checkpoint included, so nothing is applied twice or
//! skipped; a gap in a stream's versions, or in positions, is reported, never skipped.
//!
//! Every `serve` runs one ([`run`]), woken by the log head. Inline writes make it a safety net
//! for the live tables (events appended by other writers or older builds); it is the engine of
//! [`crate::replay()`], which points it at a shadow schema.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use domain::api_key::ApiKeyDecider;
use domain::incident::IncidentDecider;
use domain::maintenance::MaintenanceDecider;
use domain::service::ServiceDecider;
use domain::subscriber::SubscriberDecider;
use domain::template::TemplateDecider;
use domain::webhook::WebhookDecider;
use eventstore::CancellationToken;
use eventstore::{EventStore, LoggedEvent, RecordedEvent};
use tasks::Chain;
use uuid::Uuid;

use crate::kinds::{parse_stream_id, Kind, StreamKind, Versioned};
use crate::queries::stored_state;
use crate::write::{write_changes, Changes};
use crate::{ProjectionError, PROJECTIONS_LOCK, READ_MODEL_WRITE_SQL};

/// Connections that write a rebuild batch at once ([`Builder::write_folded`]): enough to keep
/// two cores busy, where PostgreSQL's side of a batch ran on one.
pub(crate) const REBUILD_WRITERS: usize = 2;

#[derive(Debug, Clone)]
pub struct BuilderOptions {
    /// Most events folded in one transaction.
    pub batch_size: usize,
}

impl Default for BuilderOptions {
    fn default() -> Self {
        BuilderOptions { batch_size: 2_000 }
    }
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Events of the global log read (0: the builder was caught up).
    pub events: usize,
    /// The checkpoint after the batch.
    pub position: u64,
}

/// Folds the global log into the read-model tables that the transaction's `search_path`
/// names (the live ones, or a replay's rebuild schema).
#[derive(Clone)]
pub struct Builder {
    store: EventStore,
    options: BuilderOptions,
    /// `SET LOCAL search_path` for each batch; `None`: the live tables.
    search_path: Option<&'static str>,
}

impl Builder {
    pub fn new(store: &EventStore, mut options: BuilderOptions) -> Self {
        // A batch larger than one log read would end catching up early.
        options.batch_size = options.batch_size.clamp(1, eventstore::MAX_READ_BATCH);
        Builder {
            store: store.clone(),
            options,
            search_path: None,
        }
    }

    pub(crate) fn batch_size(&self) -> usize {
        self.options.batch_size
    }

    pub(crate) fn into_schema(mut self, search_path: &'static str) -> Self {
        self.search_path = Some(search_path);
        self
    }

    /// Folds the next batch after the checkpoint, in its own transaction.
    pub async fn apply_next_batch(&self) -> Result<BatchReport, ProjectionError> {
        let mut client = self.store.pool().get().await?;
        let transaction = client.transaction().await?;
        let report = self.apply_batch_in(&transaction).await?;
        transaction.commit().await?;
        if report.events > 0 {
            metrics::counter!("crier_projection_events_total").increment(report.events as u64);
        }
        Ok(report)
    }

    /// Folds batches until the checkpoint reaches the sealed head; answers how many events
    /// it read.
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        let mut total = 0;
        loop {
            let report = self.apply_next_batch().await?;
            total += report.events as u64;
            if report.events < self.options.batch_size {
                return Ok(total);
            }
        }
    }

    /// Folds the next batch inside the caller's transaction.
    pub(crate) async fn apply_batch_in<C: GenericClient>(
        &self,
        transaction: &C,
    ) -> Result<BatchReport, ProjectionError> {
        let checkpoint = self.lock_checkpoint(transaction).await?;
        let events =
            eventstore::read_log_after(transaction, checkpoint, self.options.batch_size).await?;
        self.apply_events(transaction, checkpoint, &events).await
    }

    /// Folds `events`, read ahead, without writing: each stream continues from its row as
    /// committed, or from the state `previous` (the batch just before, perhaps still being
    /// written) leaves it in. So the fold of a batch can run while the batch before is
    /// written ([`Builder::write_folded`]), which must commit first. `None`: no events.
    pub(crate) async fn fold_read_ahead(
        &self,
        events: &[LoggedEvent],
        previous: Option<&Folded>,
    ) -> Result<Option<Folded>, ProjectionError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(None);
        };
        // Positions start at 1; a batch from 0 fails the check below.
        let before = first.position.saturating_sub(1);
        if let Some(previous) = previous {
            if previous.last != before {
                return Err(ProjectionError::Corrupt(format!(
                    "the batch read ahead from {} does not follow the one before",
                    first.position
                )));
            }
        }
        check_follows(before, events)?;
        let mut client = self.store.pool().get().await?;
        let transaction = client.transaction().await?;
        self.set_search_path(&transaction).await?;
        let changes = fold_batch(&transaction, events, previous.map(|p| &p.changes)).await?;
        transaction.commit().await?;
        Ok(Some(Folded {
            changes,
            first: first.position,
            last: last.position,
        }))
    }

    /// Writes what [`Builder::fold_read_ahead`] gave, in transactions that commit
    /// asynchronously, which suits rebuilds only: a crash loses at most the last batches,
    /// checkpoint included, and they are folded again. The checkpoint must be just before the
    /// folded events.
    ///
    /// The resources are dealt between [`REBUILD_WRITERS`] connections written at once (one
    /// PostgreSQL backend writing a whole batch kept one core busy while the other idled).
    /// The first holds the checkpoint row and commits last, once every other part has
    /// committed: the checkpoint never passes a batch that is not all written. A crash between
    /// the commits leaves some rows ahead of the checkpoint, which is harmless: the batch is
    /// folded again, and a row already at its stream's last version is skipped. (The commit
    /// records are in the WAL in that order too, so an asynchronous commit lost in a crash
    /// takes every later one with it.) The parts touch disjoint rows: every derived row is
    /// keyed by its resource.
    pub(crate) async fn write_folded(
        &self,
        folded: &Folded,
    ) -> Result<BatchReport, ProjectionError> {
        let first = folded.first;
        let mut parts = folded.changes.dealt(REBUILD_WRITERS).into_iter();
        let own = parts.next().unwrap_or_default();
        let mut client = self.store.pool().get().await?;
        let transaction = client.transaction().await?;
        transaction
            .batch_execute("SET LOCAL synchronous_commit = off")
            .await?;
        let checkpoint = self.lock_checkpoint(&transaction).await?;
        if checkpoint + 1 != first {
            return Err(ProjectionError::Busy(format!(
                "the checkpoint moved to {checkpoint} while events from {first} were folded"
            )));
        }
        let others = parts.map(|part| self.write_part(part));
        let (report, others) = futures_util::join!(
            write_and_advance(&transaction, &own, first, folded.last),
            futures_util::future::join_all(others)
        );
        for other in others {
            other?;
        }
        let report = report?;
        transaction.commit().await?;
        Ok(report)
    }

    /// Writes and commits a part of a rebuild batch without touching the checkpoint (see
    /// [`Builder::write_folded`]).
    async fn write_part(&self, changes: Changes) -> Result<(), ProjectionError> {
        let mut client = self.store.pool().get().await?;
        let transaction = client.transaction().await?;
        transaction
            .batch_execute("SET LOCAL synchronous_commit = off")
            .await?;
        self.set_search_path(&transaction).await?;
        transaction
            .execute(READ_MODEL_WRITE_SQL, &[&PROJECTIONS_LOCK])
            .await?;
        write_changes(&transaction, &changes).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// `SET LOCAL search_path` to this builder's tables, if not the live ones.
    async fn set_search_path<C: GenericClient>(
        &self,
        transaction: &C,
    ) -> Result<(), ProjectionError> {
        if let Some(path) = self.search_path {
            transaction
                .batch_execute(&format!("SET LOCAL search_path = {path}"))
                .await?;
        }
        Ok(())
    }

    /// Takes this builder's turn: the projections lock (shared) and the checkpoint row.
    async fn lock_checkpoint<C: GenericClient>(
        &self,
        transaction: &C,
    ) -> Result<u64, ProjectionError> {
        self.set_search_path(transaction).await?;
        transaction
            .execute(READ_MODEL_WRITE_SQL, &[&PROJECTIONS_LOCK])
            .await?;
        // The row lock makes builders of several processes take turns, each starting where
        // the last one committed.
        let row = transaction
            .query_one("SELECT position FROM rm_checkpoint FOR UPDATE", &[])
            .await?;
        u64::try_from(row.try_get::<_, i64>("position")?)
            .map_err(|_| ProjectionError::Corrupt("negative checkpoint".into()))
    }

    /// Folds `events`, which follow `checkpoint`, and moves the checkpoint past them.
    async fn apply_events<C: GenericClient>(
        &self,
        transaction: &C,
        checkpoint: u64,
        events: &[LoggedEvent],
    ) -> Result<BatchReport, ProjectionError> {
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(BatchReport {
                events: 0,
                position: checkpoint,
            });
        };
        check_follows(checkpoint, events)?;
        let changes = fold_batch(transaction, events, None).await?;
        write_and_advance(transaction, &changes, checkpoint + 1, last).await
    }
}

/// Writes `changes`, the fold of the events `first..=last`, and moves the checkpoint to
/// `last`.
async fn write_and_advance<C: GenericClient>(
    transaction: &C,
    changes: &Changes,
    first: u64,
    last: u64,
) -> Result<BatchReport, ProjectionError> {
    write_changes(transaction, changes).await?;
    let position = i64::try_from(last)
        .map_err(|_| ProjectionError::Corrupt(format!("position {last} is out of range")))?;
    transaction
        .execute("UPDATE rm_checkpoint SET position = $1", &[&position])
        .await?;
    Ok(BatchReport {
        events: usize::try_from(last + 1 - first).unwrap_or(usize::MAX),
        position: last,
    })
}

/// Folded events, positions `first..=last` (without a gap), not yet written.
pub(crate) struct Folded {
    changes: Changes,
    first: u64,
    last: u64,
}

/// Refuses `events` unless they follow `checkpoint` without a gap.
fn check_follows(checkpoint: u64, events: &[LoggedEvent]) -> Result<(), ProjectionError> {
    for (offset, event) in events.iter().enumerate() {
        if event.position != checkpoint + 1 + offset as u64 {
            return Err(ProjectionError::Corrupt(format!(
                "the global log jumps from position {} to {}",
                checkpoint + offset as u64,
                event.position
            )));
        }
    }
    Ok(())
}

/// The events of `batch` per projected stream, each in log order.
type Streams<'a> = HashMap<Uuid, Vec<&'a RecordedEvent>>;

/// The new state of every resource the batch changes: each continues from the state
/// `written` (the batch before, not yet committed) gives it, or else from its row.
async fn fold_batch<C: GenericClient>(
    transaction: &C,
    batch: &[LoggedEvent],
    written: Option<&Changes>,
) -> Result<Changes, ProjectionError> {
    let mut api_keys: Streams = HashMap::new();
    let mut services: Streams = HashMap::new();
    let mut incidents: Streams = HashMap::new();
    let mut maintenances: Streams = HashMap::new();
    let mut webhooks: Streams = HashMap::new();
    let mut templates: Streams = HashMap::new();
    let mut subscribers: Streams = HashMap::new();
    for logged in batch {
        let Some((kind, id)) = parse_stream_id(&logged.event.stream_id) else {
            continue;
        };
        let streams = match kind {
            StreamKind::ApiKey => &mut api_keys,
            StreamKind::Service => &mut services,
            StreamKind::Incident => &mut incidents,
            StreamKind::Maintenance => &mut maintenances,
            StreamKind::Webhook => &mut webhooks,
            StreamKind::Template => &mut templates,
            StreamKind::Subscriber => &mut subscribers,
        };
        streams.entry(id).or_default().push(&logged.event);
    }
    // Each kind notes in `changes` which derived rows it leaves as they are.
    let mut changes = Changes::default();
    changes.api_keys =
        fold_kind::<ApiKeyDecider, C>(transaction, api_keys, &mut changes, written).await?;
    changes.services =
        fold_kind::<ServiceDecider, C>(transaction, services, &mut changes, written).await?;
    changes.incidents =
        fold_kind::<IncidentDecider, C>(transaction, incidents, &mut changes, written).await?;
    changes.maintenances =
        fold_kind::<MaintenanceDecider, C>(transaction, maintenances, &mut changes, written)
            .await?;
    changes.webhooks =
        fold_kind::<WebhookDecider, C>(transaction, webhooks, &mut changes, written).await?;
    changes.templates =
        fold_kind::<TemplateDecider, C>(transaction, templates, &mut changes, written).await?;
    changes.subscribers =
        fold_kind::<SubscriberDecider, C>(transaction, subscribers, &mut changes, written).await?;
    Ok(changes)
}

/// Continues each stream's fold from its read-model row. A row that holds the batch's
/// events already (the publisher wrote it with them) is left alone without reading its
/// state: most of a busy log is folded that way.
async fn fold_kind<K: Kind, C: GenericClient>(
    transaction: &C,
    streams: Streams<'_>,
    changes: &mut Changes,
    written: Option<&Changes>,
) -> Result<Vec<Versioned<K::Resource>>, ProjectionError> {
    if streams.is_empty() {
        return Ok(Vec::new());
    }
    // Per row: its version and its state, `None` when the row is up to date.
    let mut stored: HashMap<Uuid, (u64, Option<K::Resource>)> = HashMap::new();
    if let Some(written) = written {
        for resource in K::written(written) {
            if let Some(events) = streams.get(&resource.id) {
                let last = events.last().map_or(0, |e| e.stream_version);
                let state = (resource.version < last).then(|| resource.state.clone());
                stored.insert(resource.id, (resource.version, state));
            }
        }
    }
    let (ids, lasts): (Vec<Uuid>, Vec<i64>) = streams
        .iter()
        .filter(|(id, _)| !stored.contains_key(id))
        .map(|(id, events)| {
            let last = events.last().map_or(0, |e| e.stream_version);
            (*id, i64::try_from(last).unwrap_or(i64::MAX))
        })
        .unzip();
    let statement = transaction
        .prepare_cached(&format!(
            "SELECT r.id, r.version, CASE WHEN r.version < w.last THEN r.state END AS state, \
                    CASE WHEN r.version < w.last THEN {} END AS timeline \
               FROM {} r JOIN unnest($1::uuid[], $2::int8[]) AS w(id, last) ON r.id = w.id",
            <K::Resource as crate::queries::StoredState>::TIMELINE,
            K::TABLE
        ))
        .await?;
    let rows = if ids.is_empty() {
        Vec::new()
    } else {
        transaction.query(&statement, &[&ids, &lasts]).await?
    };
    for row in &rows {
        let id: Uuid = row.try_get("id")?;
        let version = u64::try_from(row.try_get::<_, i64>("version")?)
            .map_err(|_| ProjectionError::Corrupt(format!("negative version of {id}")))?;
        stored.insert(id, (version, stored_state(row, id)?));
    }
    let mut changed = Vec::new();
    for (id, events) in streams {
        let (start, before) = match stored.remove(&id) {
            Some((_, None)) => continue,
            Some((version, Some(state))) => (version, Some(state)),
            None => (0, None),
        };
        let (version, state) = fold_stream::<K>(id, start, before.clone(), &events)?;
        if let (true, Some(state)) = (version > start, state) {
            if let Some(before) = &before {
                K::note_unchanged(before, &state, changes);
            }
            changed.push(Versioned { id, version, state });
        }
    }
    Ok(changed)
}

/// Applies the events of one stream that come after `version`, refusing a gap.
pub(crate) fn fold_stream<K: Kind>(
    id: Uuid,
    mut version: u64,
    mut state: K::State,
    events: &[&RecordedEvent],
) -> Result<(u64, K::State), ProjectionError> {
    for event in events {
        if event.stream_version <= version {
            continue; // applied already (inline, or by an earlier batch)
        }
        if event.stream_version != version + 1 {
            return Err(ProjectionError::Corrupt(format!(
                "{} {id} is at version {version} but the log's next event is version {}",
                K::NAME,
                event.stream_version
            )));
        }
        state = K::evolve(state, &K::decode(event)?);
        version = event.stream_version;
        if state.as_ref().is_some_and(|s| K::resource_id(s) != id) {
            return Err(ProjectionError::Corrupt(format!(
                "stream {} holds another {}",
                K::stream_id(id),
                K::NAME
            )));
        }
    }
    Ok((version, state))
}

/// The live builder of a `serve` process: catches up whenever the log head moves (and at
/// every poll interval), until `shutdown`. Several processes may run one each; they take
/// turns on the checkpoint row.
pub async fn run(
    store: EventStore,
    options: BuilderOptions,
    cancel: CancellationToken,
) -> Result<(), ProjectionError> {
    let builder = Builder::new(&store, options);
    let mut head = store.watch_log_head();
    let mut retry = Duration::from_millis(100);
    loop {
        if cancel.is_cancelled() {
            break;
        }
        head.borrow_and_update();
        let wait_for_head = match builder.catch_up().await {
            Ok(_) => {
                retry = Duration::from_millis(100);
                true
            }
            Err(e) => {
                if e.is_unavailable() {
                    tracing::warn!(error = %Chain(&e), "projection builder cannot reach the database; retrying");
                } else {
                    tracing::error!(error = %Chain(&e), "projection builder stopped on an event; retrying");
                }
                false
            }
        };
        if wait_for_head {
            tokio::select! {
                changed = head.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep(store.config().poll_interval).await;
                    }
                }
                _ = tokio::time::sleep(store.config().poll_interval) => {}
                _ = cancel.cancelled() => break,
            }
        } else {
            // After a failure, back off whatever the log head does.
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = cancel.cancelled() => break,
            }
            retry = (retry * 2).min(Duration::from_secs(10));
        }
    }
    tracing::debug!("projection builder stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use eventstore::testing::TestDatabase;

    use super::*;
    use crate::testing::{append_directly, read_model_snapshot, seal_and_build, Shape};

    const SHAPE: Shape = Shape {
        services: 4,
        incidents: 20,
        updates_per_incident: 4,
        maintenances: 4,
    };

    /// A rebuild batch is written in parts, and a crash may come after some parts commit and
    /// before the one holding the checkpoint does. Folding that batch again must give exactly
    /// the read models one whole write gives.
    #[tokio::test]
    async fn a_batch_whose_checkpoint_part_never_committed_is_folded_again_into_the_same_read_models(
    ) {
        let reference = TestDatabase::create().await;
        let reference_store = reference.store();
        append_directly(&reference_store, SHAPE).await;
        seal_and_build(&reference_store).await;
        let want = read_model_snapshot(&reference_store).await;

        let db = TestDatabase::create().await;
        let store = db.store();
        append_directly(&store, SHAPE).await;
        store.seal_all(Duration::from_secs(10)).await.unwrap();
        let builder = Builder::new(&store, BuilderOptions { batch_size: 10_000 });
        let client = store.pool().get().await.unwrap();
        let events = eventstore::read_log_after(&client, 0, 10_000)
            .await
            .unwrap();
        let folded = builder
            .fold_read_ahead(&events, None)
            .await
            .unwrap()
            .unwrap();
        let mut parts = folded.changes.dealt(REBUILD_WRITERS);
        assert_eq!(parts.len(), 2);
        let ids = |changes: &[&Changes]| {
            let mut ids: Vec<Uuid> = (changes.iter())
                .flat_map(|c| {
                    let services = c.services.iter().map(|v| v.id);
                    let incidents = c.incidents.iter().map(|v| v.id);
                    let api_keys = c.api_keys.iter().map(|v| v.id);
                    services
                        .chain(incidents)
                        .chain(api_keys)
                        .chain(c.maintenances.iter().map(|v| v.id))
                })
                .collect();
            ids.sort();
            ids
        };
        let all = ids(&[&folded.changes]);
        assert_eq!(
            ids(&[&parts[0], &parts[1]]),
            all,
            "each resource in one part"
        );
        assert!(ids(&[&parts[0]]).len().abs_diff(ids(&[&parts[1]]).len()) <= 4);
        let second = parts.pop().unwrap();
        assert!(second.incidents.len() >= 5 && second.maintenances.len() >= 2);
        builder.write_part(second).await.unwrap();
        let checkpoint: i64 = client
            .query_one("SELECT position FROM rm_checkpoint", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(checkpoint, 0, "the crash left the checkpoint where it was");
        assert_ne!(read_model_snapshot(&store).await, want);

        let again = builder
            .fold_read_ahead(&events, None)
            .await
            .unwrap()
            .unwrap();
        builder.write_folded(&again).await.unwrap();
        assert_eq!(read_model_snapshot(&store).await, want);
    }
}
