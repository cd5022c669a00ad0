//! A throw-away database per test, so tests run in parallel and leave nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a panic is a failed test

use std::time::Duration;

use crate::db::{pg_config, quote_identifier};
use crate::{migrate, EventStore, ExpectedVersion, Metadata, NewEvent, StoreConfig};

/// The server tests create their databases on: `CRIER_TEST_DATABASE_URL`, or the local
/// PostgreSQL.
pub fn server_url() -> String {
    std::env::var("CRIER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A freshly created and migrated database, dropped (with its connections) on drop.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

async fn admin_execute(sql: &str) -> Result<(), crate::StoreError> {
    let config = pg_config(&server_url(), Duration::from_secs(10))?;
    let (client, connection) = crate::db::connect_one(&config).await?;
    let driver = tokio::spawn(connection);
    let result = client.batch_execute(sql).await;
    drop(client);
    let _ = driver.await;
    Ok(result?)
}

impl TestDatabase {
    /// Creates `crier_test_<random>` and applies the migrations. Panics when PostgreSQL is
    /// unreachable: a test without its database cannot say anything.
    pub async fn create() -> TestDatabase {
        let name = format!("crier_test_{}", uuid::Uuid::new_v4().simple());
        admin_execute(&format!("CREATE DATABASE {}", quote_identifier(&name)))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let config = pg_config(&server_url(), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("bad CRIER_TEST_DATABASE_URL: {e}"));
        let url = url_for(&config, &name);
        migrate(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot migrate test database {name}: {e}"));
        TestDatabase { name, url }
    }

    pub fn config(&self) -> StoreConfig {
        let mut config = StoreConfig::new(self.url.clone());
        config.pool_size = 8;
        config.poll_interval = Duration::from_millis(200);
        config
    }

    pub fn store(&self) -> EventStore {
        EventStore::connect(self.config()).unwrap_or_else(|e| panic!("cannot connect: {e}"))
    }

    /// Runs `statement` on its own connection with triggers and foreign keys switched off,
    /// as an intruder with superuser rights could.
    pub async fn forge(&self, statement: &str) {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect: {e}"));
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "SET session_replication_role = replica; {statement}; \
                 SET session_replication_role = origin;"
            ))
            .await
            .unwrap_or_else(|e| panic!("cannot forge: {e:?}")); // the database's own words
    }
}

/// Appends `n` events (`thing.happened`, data `{"n": i}`) over three streams and seals them.
pub async fn sealed_history(store: &EventStore, n: u64) {
    for i in 1..=n {
        let event = NewEvent::new(
            "thing.happened",
            serde_json::json!({ "n": i }),
            Metadata::by("tester"),
        );
        store
            .append(&format!("s{}", i % 3), ExpectedVersion::Any, &[event])
            .await
            .unwrap_or_else(|e| panic!("cannot append: {e}"));
    }
    let report = store
        .seal_all(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("cannot seal: {e}"));
    assert_eq!(report.head, n);
}

fn url_for(config: &tokio_postgres::Config, dbname: &str) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let password = config
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    format!("postgres://{user}{password}@{host}:{port}/{dbname}")
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let statement = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_identifier(&self.name)
        );
        // Drop may run inside a runtime that is shutting down: use a thread of our own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(admin_execute(&statement))
                .map_err(|e| e.to_string())
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// A login role of its own for a test (`crier_test_role_<random>`), owning nothing and with
/// no attribute beyond LOGIN; dropped on drop. Declare it before the databases it is given
/// privileges in, so that they are dropped first (a role with privileges cannot be dropped).
pub struct TestRole {
    pub name: String,
}

impl TestRole {
    pub async fn create() -> TestRole {
        let name = format!("crier_test_role_{}", uuid::Uuid::new_v4().simple());
        admin_execute(&format!(
            "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT",
            quote_identifier(&name)
        ))
        .await
        .unwrap_or_else(|e| panic!("cannot create test role {name}: {e}"));
        TestRole { name }
    }

    /// The URL of `database` as this role.
    pub fn url(&self, database: &TestDatabase) -> String {
        let config = pg_config(&database.url, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("bad database URL: {e}"));
        let mut url = url_for(&config, &database.name);
        let user = config.get_user().unwrap_or("postgres");
        url = url.replacen(&format!("//{user}"), &format!("//{}", self.name), 1);
        url
    }
}

impl Drop for TestRole {
    fn drop(&mut self) {
        let statement = format!("DROP ROLE IF EXISTS {}", quote_identifier(&self.name));
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(admin_execute(&statement))
                .map_err(|e| e.to_string())
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test role {}: {e}", self.name);
        }
    }
}

/// A TCP proxy in front of PostgreSQL that a test can cut (every connection dropped, new
/// ones refused) and restore, to play a database outage without touching the shared server.
pub struct OutageProxy {
    pub port: u16,
    up: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    accept: tokio::task::JoinHandle<()>,
}

impl OutageProxy {
    /// Starts a proxy (up) towards the host and port of [`server_url`].
    pub async fn start() -> OutageProxy {
        let config = pg_config(&server_url(), Duration::from_secs(10)).expect("server url");
        let target_port = config.get_ports().first().copied().unwrap_or(5432);
        let target = format!("127.0.0.1:{target_port}");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (up, _) = tokio::sync::watch::channel(true);
        let up = std::sync::Arc::new(up);
        let state = up.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*state.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut cut = state.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        OutageProxy { port, up, accept }
    }

    /// The URL of `database` through this proxy.
    pub fn url(&self, database: &TestDatabase) -> String {
        database.url.replacen(
            &format!(":{}/", url_port(&database.url)),
            &format!(":{}/", self.port),
            1,
        )
    }

    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

fn url_port(url: &str) -> u16 {
    pg_config(url, Duration::from_secs(1))
        .ok()
        .and_then(|c| c.get_ports().first().copied())
        .unwrap_or(5432)
}

impl Drop for OutageProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

impl TestDatabase {
    /// A database name reserved for a test that wants crier itself to create it; dropped
    /// (if it was created) on drop.
    pub fn reserve() -> TestDatabase {
        let name = format!("crier_test_{}", uuid::Uuid::new_v4().simple());
        let config = pg_config(&server_url(), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("bad CRIER_TEST_DATABASE_URL: {e}"));
        let url = url_for(&config, &name);
        TestDatabase { name, url }
    }
}

/// Puts a migrated database back as it was before migration V9 (the global log as one
/// `event_log` row per event), undoing the migrations after it first, and forgets them, so
/// that migrating again runs V9 and the rest on it: for tests of V9 and of earlier
/// migrations. A new migration adds its undo at the front.
pub const UNDO_V9_SQL: &str = concat!(
    // V20: a service's worst impact by index.
    "DROP INDEX rm_service_impacts_worst; ",
    // V19: webhook bodies once per rendering.
    "UPDATE webhook_deliveries d SET body = b.body FROM webhook_bodies b \
      WHERE b.id = d.body_id; \
     ALTER TABLE webhook_deliveries DROP COLUMN body_id, ALTER COLUMN body SET NOT NULL; \
     DROP TABLE webhook_bodies; ",
    // V18: webhook deliveries lighter to record.
    "DROP INDEX webhook_deliveries_waiting, webhook_deliveries_due; \
     CREATE INDEX webhook_deliveries_due \
         ON webhook_deliveries (webhook_id, next_attempt_at) WHERE state = 'pending'; \
     ALTER TABLE webhook_deliveries RESET (fillfactor); \
     ALTER TABLE webhook_attempts ADD FOREIGN KEY (webhook_id, position) \
         REFERENCES webhook_deliveries; ",
    // V16 and V17 changed only the tables V15 made.
    // V15: email subscribers.
    "DROP TABLE email_attempts, email_deliveries, email_notices, email_recipients, \
         subscriber_keys, rm_subscribers; ",
    "DELETE FROM subscription_checkpoints WHERE subscription = 'email'; ",
    // V14: templates.
    "DROP TABLE rm_templates; ",
    // V13: endpoints know their language and format.
    "ALTER TABLE webhook_endpoints DROP COLUMN language, DROP COLUMN format; ",
    // V12: event authenticators.
    "ALTER TABLE events DROP COLUMN authenticator; ",
    // V11: endpoints know their registering key.
    "ALTER TABLE webhook_endpoints DROP COLUMN registered_by; ",
    // V10: key verifiers outside the history.
    "ALTER TABLE rm_api_keys ADD COLUMN secret_sha256 text; ",
    "UPDATE rm_api_keys k SET secret_sha256 = coalesce( \
         (SELECT v.secret_sha256 FROM api_key_verifiers v WHERE v.key_id = k.id), \
         encode(sha256(k.id::text::bytea), 'hex')); ",
    "ALTER TABLE rm_api_keys ALTER COLUMN secret_sha256 SET NOT NULL; ",
    "CREATE INDEX rm_api_keys_secret ON rm_api_keys (secret_sha256); ",
    "DROP TABLE api_key_verifiers; ",
    // V9: one log row per seal.
    "INSERT INTO event_log (position, seq, transaction_id, prev_hash, hash) \
     SELECT position, seq, transaction_id, prev_hash, hash FROM log_links(0, 1000000); \
     DROP FUNCTION log_links; DROP TABLE log_seals; ",
    "DELETE FROM refinery_schema_history WHERE version >= 9;"
);

/// The whole global log, read in batches.
pub async fn whole_log(store: &EventStore) -> Vec<crate::LoggedEvent> {
    let mut all = Vec::new();
    loop {
        let batch = store
            .read_log(all.len() as u64, 5000)
            .await
            .unwrap_or_else(|e| panic!("cannot read the log: {e}"));
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}
