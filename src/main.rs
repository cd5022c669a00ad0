mod audit;
mod cli;
mod startup;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;
use eventstore::{EventStore, StoreConfig};

use cli::{CheckpointCommand, Cli, Command, HistoryCommand, KeysCommand};
use startup::{Application, Settings};

/// mimalloc rather than the system's allocator: the log's readers hand each batch of
/// decoded events to another task (often another thread) that frees it, which glibc's
/// arenas do slowly. Reading the log runs about 10 % faster (`cargo bench --bench
/// eventstore -- --only c`, both sides), replay 4-8 %; a burst of requests leaves a higher
/// peak (43 against 34 MiB over 20,000 subscriptions). Without transparent huge pages: with them its
/// arenas took an idle server from 22 to 45 MiB resident. `no_thp` only stops mimalloc
/// asking for them, so `main` also turns them off for the process, for hosts whose kernel
/// hands them out unasked (`transparent_hugepage=always`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn store_config(cli: &Cli) -> anyhow::Result<StoreConfig> {
    let mut config = StoreConfig::new(cli.database.database_url.clone());
    config.pool_size = cli.database.db_pool_size.max(1);
    if let Some(path) = &cli.database.history_key_file {
        config.history_keys = Some(eventstore::HistoryKeys::load(path)?);
    }
    Ok(config)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = store_config(&cli)?;
    match cli.command {
        Command::Serve(args) => {
            if let Some(secret) = &args.bootstrap_admin_key {
                projections::access::check_bootstrap_secret(secret).map_err(|rule| {
                    anyhow::anyhow!("CRIER_BOOTSTRAP_ADMIN_KEY is refused: {rule}")
                })?;
            }
            let app = Application::build(Settings {
                store: config,
                listen: args.listen,
                workers: args.workers,
                bootstrap_admin_key: args.bootstrap_admin_key,
                limits: api::LimitSettings {
                    writes_per_second: args.write_rate_limit,
                    auth_failures_per_minute: args.auth_failure_limit,
                    reads_per_second: args.read_rate_limit,
                    streams_per_client: args.stream_per_client_limit,
                    streams_total: args
                        .stream_limit
                        .unwrap_or_else(startup::default_stream_limit),
                    max_head_bytes: usize::try_from(args.max_header_bytes)?,
                    body_timeout: std::time::Duration::from_secs(args.body_timeout),
                    subscriptions_per_minute: args.subscribe_rate_limit,
                    confirmations_per_hour: args.confirmation_rate_limit,
                },
                email: args
                    .smtp_url
                    .clone()
                    .map(|smtp_url| delivery::email::EmailSettings {
                        connections: args.smtp_connections,
                        timeout: std::time::Duration::from_secs(args.smtp_timeout),
                        retry_base: std::time::Duration::from_millis(args.email_retry_base_ms),
                        ca_file: args.smtp_ca_file.clone(),
                        ..delivery::email::EmailSettings::new(smtp_url, args.email_from.clone())
                    }),
                page_name: args.page_name.clone(),
                default_language: args.default_language.clone(),
                scheduler_interval: std::time::Duration::from_millis(args.scheduler_interval_ms),
                stream_buffer: usize::try_from(args.stream_buffer)?,
                stream_heartbeat: std::time::Duration::from_secs(args.stream_heartbeat),
                public_url: cli.public_url.clone(),
                trusted_proxies: args.trusted_proxies.clone(),
                cors: api::cors::CorsOrigins::new(&args.cors_origins),
                metrics: api::observe::MetricsAccess {
                    listen: args.metrics_listen,
                    token: args.metrics_token.clone(),
                },
                webhooks: delivery::WebhookSettings {
                    policy: delivery::TargetPolicy {
                        allow_private: args.webhook_allow_private,
                    },
                    timeout: std::time::Duration::from_secs(args.webhook_timeout),
                    retry_base: std::time::Duration::from_millis(args.webhook_retry_base_ms),
                    max_attempts: args.webhook_max_attempts,
                    ..delivery::WebhookSettings::default()
                },
                checkpoints: match &args.checkpoint_key {
                    Some(path) => Some(startup::CheckpointSettings {
                        key: std::sync::Arc::new(eventstore::checkpoint::load_signing_key(path)?),
                        interval: std::time::Duration::from_secs(args.checkpoint_interval),
                    }),
                    None => None,
                },
            })?;
            println!("crier listening on http://{}", app.address());
            app.run_until_stopped().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate(args) => {
            eventstore::ensure_database(&config.database_url).await?;
            eventstore::migrate(&config.database_url).await?;
            println!("database migrated");
            if let Some(role) = &args.app_role {
                eventstore::grant_app_role(&config.database_url, role).await?;
                println!("role {role} may run crier serve");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(args) => {
            let store = EventStore::connect(config)?;
            audit::verify(&store, &args).await
        }
        Command::Keys {
            command: KeysCommand::Create { role, tenant, name },
        } => {
            eventstore::ensure_database(&config.database_url).await?;
            eventstore::migrate(&config.database_url).await?;
            let store = EventStore::connect(config)?;
            let publisher = projections::Publisher::new(&store);
            let issued = projections::access::issue_key(
                &publisher,
                &name,
                role.into(),
                tenant.as_deref(),
                "cli",
            )
            .await?;
            let key = &issued.key.state;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "id": key.id,
                    "name": key.name,
                    "role": key.role,
                    "tenant": key.tenant,
                    "key": issued.secret,
                }))?
            );
            // Give the key its place in the global log before exiting.
            store.seal_all(std::time::Duration::from_secs(5)).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(args) => {
            let store = EventStore::connect(config)?;
            let options = projections::ReplayOptions {
                batch_size: usize::try_from(args.batch_size)?,
                fresh: args.fresh,
                ..projections::ReplayOptions::default()
            };
            let report = projections::replay(&store, &options, |position| {
                println!("rebuilt up to position {position}");
            })
            .await?;
            if report.resumed_from > 0 {
                println!(
                    "resumed an interrupted replay at position {}",
                    report.resumed_from
                );
            }
            println!(
                "replayed {} events in {:.2} s ({:.0} events/s); read models at position {}",
                report.events,
                report.elapsed.as_secs_f64(),
                report.events_per_second(),
                report.position
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(args) => {
            let store = EventStore::connect(config)?;
            let base = cli
                .public_url
                .clone()
                .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
            audit::export(&store, args.after, &api::audit_stream_url_prefix(&base)).await
        }
        Command::Checkpoint {
            command: CheckpointCommand::Keygen { out },
        } => audit::keygen(&out),
        Command::History {
            command: HistoryCommand::Keygen { out },
        } => audit::history_keygen(&out),
        Command::Checkpoint {
            command: CheckpointCommand::Sign { key },
        } => {
            let key = eventstore::checkpoint::load_signing_key(&key)?;
            let store = EventStore::connect(config)?;
            audit::sign(&store, &key).await
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Dropped last: writes out the access lines still gathered.
    let _access_log = telemetry::init(cli.log_format);
    // Before the first large allocation that matters; see ALLOCATOR. A kernel without the
    // setting leaves huge pages as they were: nothing depends on it but memory.
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!("transparent huge pages left on: {e}");
    }
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crier: {e:#}");
            ExitCode::from(2)
        }
    }
}
