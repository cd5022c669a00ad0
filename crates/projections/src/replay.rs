//! `crier replay`: rebuilds every read model from the first event.
//!
//! The rebuild fills a shadow schema, `crier_rebuild`, with tables `LIKE` the live ones, while
//! the live tables keep serving. A builder runs there (`SET LOCAL search_path = crier_rebuild,
//! public`), fed by a [`eventstore::LogReader`] that reads the log ahead on other connections;
//! each batch commits with its checkpoint (asynchronously: a crash loses at most the last
//! batches, which are folded again), so a killed replay resumes where it stopped. A batch is
//! folded while the one before is written on another task: the fold reads the rows as
//! committed and takes the states the batch before is writing from memory, so crier's part and
//! PostgreSQL's run side by side (the cores were 40–60 % idle while they took turns). Each
//! batch is written on two connections at once, its resources dealt between them (see
//! [`crate::builder::Builder::write_folded`] for why a crash between their commits is
//! harmless), and the rebuilt tables are analysed on two connections too: PostgreSQL's side
//! had kept one core busy while the other idled.
//! The schema is tagged with the migration version, and rebuilt from scratch if that differs.
//!
//! At the end, one transaction takes the projections lock exclusively: every inline write and
//! builder batch holds it shared, so none is in flight and none starts. It seals every
//! committed event, refusing to swap while an older transaction holds the log back (acknowledged
//! writes would be missing), folds the rest, and replaces each live table with its rebuilt twin,
//! giving it the live owner, privileges and index names. The waits that could stall writers
//! happen before the lock (sealing with patience, `ANALYZE`), the locked step has a
//! `lock_timeout`, and a migration applied during the rebuild makes it refuse to swap. Readers
//! wait only for the swap itself.
//!
//! One replay runs at a time, across processes: a session advisory lock on a connection taken
//! out of the pool, released even if the replay is dropped. A replay waits a few seconds for
//! the lock, so that one started right after another was killed finds it let go.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::GenericClient;
use eventstore::EventStore;
use tokio_postgres::types::ToSql;

use crate::builder::{Builder, BuilderOptions, Folded};
use crate::{ProjectionError, PROJECTIONS_LOCK, READ_MODEL_TABLES};

/// Where a replay builds.
const REBUILD_SCHEMA: &str = "crier_rebuild";
/// How long the locked step waits for older transactions (writers wait meanwhile).
const SEAL_WAIT_UNDER_LOCK: Duration = Duration::from_secs(2);
/// One replay at a time, across processes.
const REPLAY_LOCK: i64 = 0x6372_6965_7204;
/// Takes the replay lock on `session` for as long as the session lasts, waiting up to `wait`
/// for whoever holds it; `busy` says who that is when the wait runs out.
async fn take_replay_lock(
    session: &tokio_postgres::Client,
    wait: Duration,
    busy: &str,
) -> Result<(), ProjectionError> {
    // 0 would mean no limit at all.
    let wait_ms = wait.as_millis().clamp(1, i32::MAX as u128);
    session
        .batch_execute(&format!("SET lock_timeout = {wait_ms}"))
        .await?;
    match session
        .execute("SELECT pg_advisory_lock($1)", &[&REPLAY_LOCK])
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => Err(
            ProjectionError::Busy(format!("{busy} (waited {wait:?} for it to end)")),
        ),
        Err(e) => Err(e.into()),
    }
}

/// Refuses a rebuild (a replay, or the read models' check) at once on a pool too small for
/// it, rather than after the pool's wait: its writers hold a connection each at once. The
/// replay's lock is taken out of the pool, and the log's reads ahead each hold one only
/// while they read.
fn has_room_for_a_rebuild(store: &EventStore) -> Result<(), ProjectionError> {
    let (pool_size, needed) = (store.config().pool_size, crate::builder::REBUILD_WRITERS);
    if pool_size < needed {
        return Err(ProjectionError::TooFewConnections { needed, pool_size });
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub batch_size: usize,
    /// Start over even if an interrupted replay left a partial rebuild.
    pub fresh: bool,
    /// How long the final step waits for older transactions so that every event committed
    /// before it is sealed and folded.
    pub seal_timeout: Duration,
    /// How long to wait for another replay or check to end before refusing. A replay killed
    /// a moment ago holds its lock until its server process notices that the client is gone.
    pub lock_wait: Duration,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            batch_size: 5_000,
            fresh: false,
            seal_timeout: Duration::from_secs(30),
            lock_wait: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplayReport {
    /// Events folded by this run.
    pub events: u64,
    /// The position an interrupted replay had reached (0: a fresh start).
    pub resumed_from: u64,
    /// The checkpoint of the swapped-in read models.
    pub position: u64,
    pub elapsed: Duration,
}

impl ReplayReport {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Rebuilds every read model from the log and swaps the result in. `progress` is called
/// after each committed batch with the position reached.
pub async fn replay(
    store: &EventStore,
    options: &ReplayOptions,
    mut progress: impl FnMut(u64),
) -> Result<ReplayReport, ProjectionError> {
    let started = Instant::now();
    has_room_for_a_rebuild(store)?;
    // A session lock on a connection taken out of the pool: it ends with this replay
    // (closing the connection releases it even if this future is dropped).
    let session = deadpool_postgres::Object::take(store.pool().get().await?);
    take_replay_lock(&session, options.lock_wait, "another replay is running").await?;
    let result = rebuild_and_swap(store, options, &mut progress, started).await;
    // Closing the connection releases the lock too, but only once the server notices; a
    // replay that starts right after this one must find it free.
    let _ = session
        .execute("SELECT pg_advisory_unlock($1)", &[&REPLAY_LOCK])
        .await;
    drop(session);
    result
}

async fn rebuild_and_swap(
    store: &EventStore,
    options: &ReplayOptions,
    progress: &mut impl FnMut(u64),
    started: Instant,
) -> Result<ReplayReport, ProjectionError> {
    let (resumed_from, shape) = prepare_rebuild_schema(store, options.fresh).await?;
    let builder = Builder::new(
        store,
        BuilderOptions {
            batch_size: options.batch_size,
        },
    )
    .into_schema("crier_rebuild, public");
    let batch_size = builder.batch_size();
    // The log is read ahead on another connection while each batch is written: sealed
    // history never changes, so what is read ahead stays valid.
    let (read_ahead, mut batches) = tokio::sync::mpsc::channel(2);
    let reader = tokio::spawn(read_ahead_from(
        store.clone(),
        resumed_from,
        batch_size,
        read_ahead,
    ));
    let mut events = fold_and_write(&builder, &mut batches, progress).await?;
    let _ = reader.await;
    analyze_rebuilt(store).await?;
    // Wait for older transactions now, before anyone waits on us.
    store.seal_all(options.seal_timeout).await?;

    let mut client = store.pool().get().await?;
    let transaction = client.transaction().await?;
    // Writers queue behind the exclusive lock; never make them wait long.
    transaction
        .batch_execute("SET LOCAL lock_timeout = '10s'")
        .await?;
    // No inline write or builder batch is in flight past this point, and none starts.
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&PROJECTIONS_LOCK])
        .await?;
    if schema_version(&transaction).await? != shape {
        return Err(ProjectionError::Busy(
            "the database was migrated during the replay; run it again".into(),
        ));
    }
    // Every event committed so far gets a position (this transaction has no transaction id
    // yet, so it holds no event back). Transaction ids are cluster-wide: any short
    // transaction anywhere delays sealing for a moment, so wait a little, not forever.
    let sealed = store.seal_all(SEAL_WAIT_UNDER_LOCK).await?;
    if sealed.waiting_for_older_transactions {
        // Swapping now would leave out acknowledged writes that cannot be sealed yet.
        return Err(ProjectionError::Busy(
            "a long-running transaction holds back the global log; the rebuild is kept and \
             the next replay resumes it"
                .into(),
        ));
    }
    let position = loop {
        let batch = builder.apply_batch_in(&transaction).await?;
        events += batch.events as u64;
        if batch.events < batch_size {
            break batch.position;
        }
    };
    swap_in(&transaction).await?;
    transaction.commit().await?;
    progress(position);
    Ok(ReplayReport {
        events,
        resumed_from,
        position,
        elapsed: started.elapsed(),
    })
}

/// A live read-model row that a fold of the history does not give, or the other way round.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReadModelDifference {
    pub table: String,
    /// The row's key (its `id`, or the first id column it has).
    pub key: Option<String>,
    /// `live` (in the read models, not in the fold) or `history` (the other way round).
    pub side: String,
    /// The row, as JSON.
    pub row: serde_json::Value,
}

/// What [`check_read_models`] found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReadModelCheck {
    /// Whether every read-model table equals a fold of the history.
    pub ok: bool,
    /// The position the fold reached.
    pub position: u64,
    /// The first difference, if any.
    pub difference: Option<ReadModelDifference>,
}

/// Folds the whole history into a shadow schema, as a replay does, and compares every read
/// model with it, table by table, without swapping anything in: a row changed, added or
/// removed by hand is found and named. Writers wait for the comparison itself (it runs
/// under the projections lock, so that the live tables hold still); the fold before it does
/// not stop them.
pub async fn check_read_models(
    store: &EventStore,
    options: &ReplayOptions,
) -> Result<ReadModelCheck, ProjectionError> {
    has_room_for_a_rebuild(store)?;
    let session = deadpool_postgres::Object::take(store.pool().get().await?);
    take_replay_lock(
        &session,
        options.lock_wait,
        "a replay or a check is running",
    )
    .await?;
    let result = fold_and_compare(store, options).await;
    let _ = session
        .execute("SELECT pg_advisory_unlock($1)", &[&REPLAY_LOCK])
        .await;
    drop(session);
    // The shadow is not kept: the next replay or check starts fresh.
    if let Ok(client) = store.pool().get().await {
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE"))
            .await;
    }
    result
}

async fn fold_and_compare(
    store: &EventStore,
    options: &ReplayOptions,
) -> Result<ReadModelCheck, ProjectionError> {
    prepare_rebuild_schema(store, true).await?;
    let builder = Builder::new(
        store,
        BuilderOptions {
            batch_size: options.batch_size,
        },
    )
    .into_schema("crier_rebuild, public");
    let batch_size = builder.batch_size();
    let (read_ahead, mut batches) = tokio::sync::mpsc::channel(2);
    let reader = tokio::spawn(read_ahead_from(store.clone(), 0, batch_size, read_ahead));
    fold_and_write(&builder, &mut batches, &mut |_| {}).await?;
    let _ = reader.await;
    store.seal_all(options.seal_timeout).await?;
    let mut client = store.pool().get().await?;
    let transaction = client.transaction().await?;
    transaction
        .batch_execute("SET LOCAL lock_timeout = '10s'")
        .await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&PROJECTIONS_LOCK])
        .await?;
    let position = loop {
        let batch = builder.apply_batch_in(&transaction).await?;
        if batch.events < batch_size {
            break batch.position;
        }
    };
    // The live builder may trail the log; what it has not folded yet is not a difference.
    let live_position: i64 = transaction
        .query_one("SELECT position FROM public.rm_checkpoint", &[])
        .await?
        .try_get(0)?;
    if u64::try_from(live_position).unwrap_or(0) < position {
        transaction
            .batch_execute("SET LOCAL search_path = public")
            .await?;
        Builder::new(store, BuilderOptions::default())
            .apply_batch_in(&transaction)
            .await?;
    }
    for table in READ_MODEL_TABLES.iter().filter(|t| **t != "rm_checkpoint") {
        if let Some(difference) = first_difference(&transaction, table).await? {
            return Ok(ReadModelCheck {
                ok: false,
                position,
                difference: Some(difference),
            });
        }
    }
    Ok(ReadModelCheck {
        ok: true,
        position,
        difference: None,
    })
}

/// The first row of `table` that is in the live read models and not in the fold, or the
/// other way round (json columns compared as their text, which has no equality otherwise).
async fn first_difference<C: GenericClient>(
    client: &C,
    table: &str,
) -> Result<Option<ReadModelDifference>, ProjectionError> {
    let columns: String = client
        .query_one(
            "SELECT string_agg(quote_ident(column_name) \
                    || CASE WHEN data_type = 'json' THEN '::text' ELSE '' END \
                    || ' AS ' || quote_ident(column_name), ', ' ORDER BY ordinal_position) \
               FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1",
            &[&table],
        )
        .await?
        .try_get(0)?;
    let live = format!("SELECT {columns} FROM public.{table}");
    let folded = format!("SELECT {columns} FROM {REBUILD_SCHEMA}.{table}");
    let row = client
        .query_opt(
            &format!(
                "SELECT side, to_jsonb(d) - 'side' AS row FROM ( \
                   (SELECT 'live' AS side, * FROM ({live} EXCEPT {folded}) a) \
                   UNION ALL \
                   (SELECT 'history' AS side, * FROM ({folded} EXCEPT {live}) b)) d \
                 LIMIT 1"
            ),
            &[],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let side: String = row.try_get("side")?;
    let row: serde_json::Value = row.try_get("row")?;
    let key = [
        "id",
        "update_id",
        "incident_id",
        "maintenance_id",
        "service_id",
    ]
    .iter()
    .find_map(|k| row.get(*k))
    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
    Ok(Some(ReadModelDifference {
        table: table.to_owned(),
        key,
        side,
        row,
    }))
}

/// Folds and writes the batches read ahead, in order; answers how many events. The fold of
/// a batch runs while the batch before is written (it takes the states that one leaves from
/// memory), so crier's part and PostgreSQL's overlap instead of taking turns.
async fn fold_and_write(
    builder: &Builder,
    batches: &mut tokio::sync::mpsc::Receiver<
        Result<Vec<eventstore::LoggedEvent>, ProjectionError>,
    >,
    progress: &mut impl FnMut(u64),
) -> Result<u64, ProjectionError> {
    let mut events = 0;
    let mut folded: Option<Arc<Folded>> = None;
    loop {
        let batch = match batches.recv().await {
            Some(batch) => batch?,
            None => Vec::new(),
        };
        // On a task of its own, so that its encoding runs beside the fold on another core.
        let write = folded.clone().map(|folded| {
            let builder = builder.clone();
            tokio::spawn(async move { builder.write_folded(&folded).await })
        });
        let next = builder.fold_read_ahead(&batch, folded.as_deref()).await;
        let written = match write {
            Some(write) => Some(write.await.map_err(|e| {
                ProjectionError::Busy(format!(
                    "a rebuild write failed ({e}); the rebuild is kept and the next replay \
                     resumes it"
                ))
            })??),
            None => None,
        };
        let next = next?.map(Arc::new);
        if let Some(report) = written {
            events += report.events as u64;
            progress(report.position);
        }
        match next {
            Some(next) => folded = Some(next),
            None => return Ok(events),
        }
    }
}

/// Gathers planner statistics for the rebuilt tables, which are about to serve, on two
/// connections at once: one core did it all while the other idled. The largest table goes
/// first, and each connection takes the next table when it is done.
async fn analyze_rebuilt(store: &EventStore) -> Result<(), ProjectionError> {
    let tables: Vec<String> = store
        .pool()
        .get()
        .await?
        .query(
            "SELECT t FROM unnest($1::text[]) AS t \
              ORDER BY pg_relation_size(format('%I.%I', $2::text, t)::regclass) DESC",
            &[&READ_MODEL_TABLES.as_slice(), &REBUILD_SCHEMA],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let queue = std::sync::Mutex::new(tables.into_iter());
    let next_table = || {
        queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next()
    };
    let analyze = || async {
        let client = store.pool().get().await?;
        while let Some(table) = next_table() {
            // On the columns queries filter and sort by: not the state documents (sampling
            // them would cost more than the rest of the replay), nor the updates' free texts
            // (a third of the time of `ANALYZE` on `rm_updates`, and no query filters or
            // sorts by them).
            let columns: String = client
                .query_one(
                    "SELECT string_agg(quote_ident(column_name), ', ') \
                       FROM information_schema.columns \
                      WHERE table_schema = $1 AND table_name = $2 \
                        AND data_type NOT IN ('json', 'jsonb') \
                        AND NOT (table_name = 'rm_updates' \
                                 AND column_name IN ('title', 'message'))",
                    &[&REBUILD_SCHEMA, &table],
                )
                .await?
                .try_get(0)?;
            client
                .batch_execute(&format!("ANALYZE {REBUILD_SCHEMA}.{table} ({columns})"))
                .await?;
        }
        Ok::<_, ProjectionError>(())
    };
    futures_util::try_join!(analyze(), analyze())?;
    Ok(())
}

/// Sends the sealed log after `position` in batches until it reaches the head.
async fn read_ahead_from(
    store: EventStore,
    position: u64,
    batch_size: usize,
    batches: tokio::sync::mpsc::Sender<Result<Vec<eventstore::LoggedEvent>, ProjectionError>>,
) {
    let mut reader = store.log_reader(position, batch_size);
    loop {
        let batch = reader.next_batch().await;
        let last = match &batch {
            Ok(events) if events.is_empty() => return,
            Ok(events) => events.len() < batch_size,
            Err(_) => true,
        };
        if batches
            .send(batch.map_err(ProjectionError::from))
            .await
            .is_err()
            || last
        {
            return; // the rebuild stopped, or the head or an error was reached
        }
    }
}

/// The schema history version, which tells whether a partial rebuild has today's shape.
async fn schema_version<C: GenericClient>(client: &C) -> Result<String, ProjectionError> {
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0)::text FROM refinery_schema_history",
            &[],
        )
        .await?;
    Ok(format!(
        "crier read models, migration {}",
        row.try_get::<_, String>(0)?
    ))
}

/// Creates the rebuild schema, or keeps the one an interrupted replay left if it has
/// today's shape. Answers the position the rebuild has reached and the shape.
async fn prepare_rebuild_schema(
    store: &EventStore,
    fresh: bool,
) -> Result<(u64, String), ProjectionError> {
    let mut client = store.pool().get().await?;
    let transaction = client.transaction().await?;
    let expected = schema_version(&transaction).await?;
    let row = transaction
        .query_one(
            "SELECT to_regnamespace($1) IS NOT NULL AS present, \
                    obj_description(to_regnamespace($1), 'pg_namespace') AS shape",
            &[&REBUILD_SCHEMA],
        )
        .await?;
    let present: bool = row.try_get("present")?;
    let found: Option<String> = row.try_get("shape")?;
    if !fresh && found.as_deref() == Some(expected.as_str()) {
        let row = transaction
            .query_one(
                &format!("SELECT position FROM {REBUILD_SCHEMA}.rm_checkpoint"),
                &[],
            )
            .await?;
        let position = u64::try_from(row.try_get::<_, i64>(0)?)
            .map_err(|_| ProjectionError::Corrupt("negative rebuild checkpoint".into()))?;
        transaction.commit().await?;
        tracing::info!(position, "resuming an interrupted replay");
        return Ok((position, expected));
    }
    let mut ddl = if present {
        format!("DROP SCHEMA {REBUILD_SCHEMA} CASCADE;")
    } else {
        String::new()
    };
    ddl.push_str(&format!(
        "CREATE SCHEMA {REBUILD_SCHEMA}; COMMENT ON SCHEMA {REBUILD_SCHEMA} IS '{}';",
        expected.replace('\'', "''")
    ));
    for table in READ_MODEL_TABLES {
        ddl.push_str(&format!(
            "CREATE TABLE {REBUILD_SCHEMA}.{table} (LIKE public.{table} INCLUDING ALL);"
        ));
    }
    ddl.push_str(&format!(
        "INSERT INTO {REBUILD_SCHEMA}.rm_checkpoint (position) VALUES (0);"
    ));
    transaction.batch_execute(&ddl).await?;
    transaction.commit().await?;
    Ok((0, expected))
}

/// Replaces each live table by its rebuilt twin, keeping the live owner, privileges and
/// index names. Writers wait on the exclusive lock while this runs, so the catalog is read
/// with three queries sent together and every change goes as one batch (a statement at a
/// time, it was seven or more round trips a table).
async fn swap_in<C: GenericClient>(transaction: &C) -> Result<(), ProjectionError> {
    let catalog = SwapCatalog::read(transaction).await?;
    transaction.batch_execute(&catalog.statements()?).await?;
    Ok(())
}

/// What the swap keeps of the live tables, and the names the rebuilt indexes were given.
struct SwapCatalog {
    /// Each live table's owner (quoted).
    owners: HashMap<String, String>,
    /// Each live table's grants to others than its owner: (table, grantee, privileges).
    grants: Vec<(String, String, String)>,
    /// Each index by (schema, table) and by what it indexes: (unique, definition) → name.
    indexes: HashMap<(String, String), HashMap<(bool, String), String>>,
}

impl SwapCatalog {
    async fn read<C: GenericClient>(client: &C) -> Result<SwapCatalog, ProjectionError> {
        let tables = READ_MODEL_TABLES.as_slice();
        let just_tables: [&(dyn ToSql + Sync); 1] = [&tables];
        let tables_and_schema: [&(dyn ToSql + Sync); 2] = [&tables, &REBUILD_SCHEMA];
        // `LIKE` copies neither the owner nor the privileges.
        let owners = client.query(
            "SELECT t, quote_ident(pg_get_userbyid(c.relowner)) \
               FROM unnest($1::text[]) AS t \
               JOIN pg_class c ON c.oid = ('public.' || t)::regclass",
            &just_tables,
        );
        let grants = client.query(
            "SELECT t, CASE WHEN a.grantee = 0 THEN 'PUBLIC' \
                            ELSE quote_ident(pg_get_userbyid(a.grantee)) END, \
                    string_agg(a.privilege_type, ', ' ORDER BY a.privilege_type) \
               FROM unnest($1::text[]) AS t \
               JOIN pg_class c ON c.oid = ('public.' || t)::regclass, \
                    aclexplode(c.relacl) AS a \
              WHERE a.grantee <> c.relowner \
              GROUP BY 1, 2",
            &just_tables,
        );
        // An index is known by what it indexes, so that a rebuilt table's indexes can take
        // the names the migrations gave the live ones.
        let indexes = client.query(
            "SELECT n.nspname::text, t.relname::text, c.relname::text, x.indisunique, \
                    regexp_replace(pg_get_indexdef(x.indexrelid), '^.* USING ', '') \
               FROM pg_index x \
               JOIN pg_class c ON c.oid = x.indexrelid \
               JOIN pg_class t ON t.oid = x.indrelid \
               JOIN pg_namespace n ON n.oid = t.relnamespace \
              WHERE n.nspname::text IN ('public', $2::text) AND t.relname::text = ANY($1::text[])",
            &tables_and_schema,
        );
        let (owners, grants, indexes) = futures_util::try_join!(owners, grants, indexes)?;
        let mut catalog = SwapCatalog {
            owners: HashMap::new(),
            grants: Vec::new(),
            indexes: HashMap::new(),
        };
        for row in owners {
            catalog.owners.insert(row.try_get(0)?, row.try_get(1)?);
        }
        for row in grants {
            catalog
                .grants
                .push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
        }
        for row in indexes {
            catalog
                .indexes
                .entry((row.try_get(0)?, row.try_get(1)?))
                .or_default()
                .insert((row.try_get(3)?, row.try_get(4)?), row.try_get(2)?);
        }
        Ok(catalog)
    }

    /// The swap as one batch: per table, the live owner and grants given to the rebuilt
    /// twin, the live table dropped and the twin moved in, its indexes renamed to the live
    /// names; then the empty schema dropped.
    fn statements(&self) -> Result<String, ProjectionError> {
        let mut ddl = String::new();
        for table in READ_MODEL_TABLES {
            let owner = self.owners.get(table).ok_or_else(|| {
                ProjectionError::Corrupt(format!("the live table {table} is missing"))
            })?;
            ddl.push_str(&format!(
                "ALTER TABLE {REBUILD_SCHEMA}.{table} OWNER TO {owner};"
            ));
            for (_, grantee, privileges) in self.grants.iter().filter(|g| g.0 == table) {
                ddl.push_str(&format!(
                    "GRANT {privileges} ON {REBUILD_SCHEMA}.{table} TO {grantee};"
                ));
            }
            ddl.push_str(&format!(
                "DROP TABLE public.{table}; ALTER TABLE {REBUILD_SCHEMA}.{table} SET SCHEMA public;"
            ));
            let no_indexes = HashMap::new();
            let indexes_of = |schema: &str| {
                (self.indexes)
                    .get(&(schema.to_owned(), table.to_owned()))
                    .unwrap_or(&no_indexes)
            };
            let live = indexes_of("public");
            for (shape, rebuilt_name) in indexes_of(REBUILD_SCHEMA) {
                if let Some(live_name) = live.get(shape).filter(|name| *name != rebuilt_name) {
                    ddl.push_str(&format!(
                        "ALTER INDEX public.{} RENAME TO {};",
                        quote(rebuilt_name),
                        quote(live_name)
                    ));
                }
            }
        }
        ddl.push_str(&format!("DROP SCHEMA {REBUILD_SCHEMA};"));
        Ok(ddl)
    }
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}
