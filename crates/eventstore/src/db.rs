//! Connecting: database creation, migrations under a lock, the connection pool.
//!
//! Every session the store opens sets `synchronous_commit = on`, whatever the database's
//! default: an acknowledged append must be durable, and the sealer's asynchronous commit relies
//! on every event it reads being so (see [`crate::sealer`]). A connection that cannot be opened,
//! or a pooled one not free, within `connect_timeout` is [`StoreError::Unavailable`]; the pool
//! replaces broken connections by itself.
//!
//! Exclusive work across processes takes a PostgreSQL advisory lock, keys `0x637269657201`
//! ("crier" and a number) upwards: migrations and the sealer here, the read models' writers and
//! replay in `crates/projections`.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::StoreError;

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// Advisory lock keys, one per kind of exclusive work, shared by every crier process.
pub(crate) const MIGRATION_LOCK: i64 = 0x6372_6965_7201; // "crier" 01
pub(crate) const SEALER_LOCK: i64 = 0x6372_6965_7202;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub database_url: String,
    /// Most connections the pool opens.
    pub pool_size: usize,
    /// How long to wait for a connection (to open one, or for one to come free) before
    /// answering "unavailable".
    pub connect_timeout: Duration,
    /// The safety net under LISTEN/NOTIFY: how often idle followers re-read the database.
    pub poll_interval: Duration,
    /// Most events the sealer links into the chain in one transaction.
    pub seal_batch_size: usize,
    /// How long the sealer lets appends gather after being woken, so that a stream of
    /// single-event appends is sealed in batches rather than one transaction each.
    pub seal_delay: Duration,
    /// Under steady appends, the least time between the starts of two seals that link
    /// events: each seal is a transaction with a cost of its own, whatever the number of
    /// events it links, so this bounds how many the sealer runs a second however fast events
    /// come, for at most this much added latency (an append after a quiet moment is still
    /// sealed after `seal_delay`).
    pub seal_interval: Duration,
    /// The keys events are authenticated with (see [`crate::authentication`]): the first
    /// authenticates what this process appends, all are accepted when verifying. `None`:
    /// events are appended without an authenticator, and verification does not check them.
    pub history_keys: Option<crate::HistoryKeys>,
}

impl StoreConfig {
    pub const DEFAULT_URL: &'static str = "postgres://postgres@127.0.0.1:5432/crier";

    pub fn new(database_url: impl Into<String>) -> Self {
        StoreConfig {
            database_url: database_url.into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(500),
            seal_batch_size: 2000,
            seal_delay: Duration::from_millis(2),
            seal_interval: Duration::from_millis(20),
            history_keys: None,
        }
    }

    pub(crate) fn pg_config(&self) -> Result<tokio_postgres::Config, StoreError> {
        pg_config(&self.database_url, self.connect_timeout)
    }
}

pub(crate) fn pg_config(
    url: &str,
    timeout: Duration,
) -> Result<tokio_postgres::Config, StoreError> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| StoreError::config_by("DATABASE_URL is not a PostgreSQL URL", e))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("crier");
    }
    // Appends commit synchronously whatever the database's default: the sealer's
    // asynchronous commit relies on every event it reads being durable (see sealer.rs).
    let options = match config.get_options() {
        Some(existing) => format!("{existing} -c synchronous_commit=on"),
        None => "-c synchronous_commit=on".to_owned(),
    };
    config.options(&options);
    Ok(config)
}

pub(crate) fn build_pool(config: &StoreConfig) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        config.pg_config()?,
        NoTls,
        ManagerConfig {
            // A broken connection is noticed by the socket; checking every checkout with a
            // query would cost a round trip per operation.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .wait_timeout(Some(config.connect_timeout))
        .create_timeout(Some(config.connect_timeout))
        .recycle_timeout(Some(config.connect_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::config_by("cannot build the connection pool", e))
}

/// Opens one connection outside the pool (for LISTEN, migrations and administration).
pub(crate) async fn connect_one(
    config: &tokio_postgres::Config,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
    StoreError,
> {
    Ok(config.connect(NoTls).await?)
}

async fn connect_driven(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, StoreError> {
    let (client, connection) = connect_one(config).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "administrative connection ended");
        }
    });
    Ok(client)
}

/// Creates the database named in `url` unless it exists. Safe when several processes race.
pub async fn ensure_database(url: &str) -> Result<(), StoreError> {
    let config = pg_config(url, Duration::from_secs(5))?;
    let Some(name) = config.get_dbname().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = config.clone();
    admin.dbname("postgres");
    let client = connect_driven(&admin).await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if exists {
        return Ok(());
    }
    let statement = format!("CREATE DATABASE {}", quote_identifier(&name));
    match client.batch_execute(&statement).await {
        Ok(()) => {
            tracing::info!(database = %name, "created database");
            Ok(())
        }
        // Another process created it between our check and our CREATE.
        Err(e) if matches!(e.code().map(|c| c.code()), Some("42P04" | "23505")) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Applies the embedded migrations, holding an advisory lock so that processes starting
/// together apply each migration once.
pub async fn migrate(url: &str) -> Result<(), StoreError> {
    let config = pg_config(url, Duration::from_secs(5))?;
    let mut client = connect_driven(&config).await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .map_err(|e| StoreError::Migration(Box::new(e)));
    // Closing the connection would release the lock too; unlock explicitly all the same.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    for migration in report?.applied_migrations() {
        tracing::info!(migration = %migration, "applied migration");
    }
    Ok(())
}

/// The tables of the history: a role `serve` runs as may read them and add to them, and
/// nothing else (the append-only triggers refuse UPDATE and DELETE even to their owner; a role
/// without ownership can neither TRUNCATE them nor alter or disable their triggers).
pub const HISTORY_TABLES: [&str; 4] = ["events", "log_seals", "event_log", "chain_checkpoints"];

/// Migrates unless every migration is applied already: so that `serve`, running as a role
/// that owns nothing, starts on a schema its owner migrated.
pub async fn ensure_current_schema(url: &str) -> Result<(), StoreError> {
    let config = pg_config(url, Duration::from_secs(5))?;
    let client = connect_driven(&config).await?;
    if schema_is_current(&client).await? {
        return Ok(());
    }
    drop(client);
    migrate(url).await
}

/// Gives `role` exactly what `crier serve` needs on the migrated schema, as its owner: read
/// and add to the history ([`HISTORY_TABLES`]), read the migrations applied, and read and
/// write every other table (the read models, the delivery tables, idempotency records,
/// checkpoints of subscribers). Idempotent; run it again after new migrations (`crier
/// migrate --app-role` does). The role must exist and own nothing.
pub async fn grant_app_role(url: &str, role: &str) -> Result<(), StoreError> {
    let config = pg_config(url, Duration::from_secs(5))?;
    let client = connect_driven(&config).await?;
    let role = quote_identifier(role);
    let tables: Vec<String> = client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut statements = vec![
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"),
        format!("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {role}"),
    ];
    for table in &tables {
        let name = quote_identifier(table);
        let privileges = if HISTORY_TABLES.contains(&table.as_str()) {
            "SELECT, INSERT"
        } else if table == "refinery_schema_history" {
            "SELECT"
        } else {
            "SELECT, INSERT, UPDATE, DELETE"
        };
        statements.push(format!("REVOKE ALL ON {name} FROM {role}"));
        statements.push(format!("GRANT {privileges} ON {name} TO {role}"));
    }
    client.batch_execute(&statements.join("; ")).await?;
    Ok(())
}

fn latest_embedded_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// Is every migration this build embeds applied?
pub async fn schema_is_current(client: &tokio_postgres::Client) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL AS present",
            &[],
        )
        .await?;
    if !row.get::<_, bool>("present") {
        return Ok(false);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint AS version FROM refinery_schema_history",
            &[],
        )
        .await?;
    Ok(row.get::<_, i64>("version") >= latest_embedded_version())
}
