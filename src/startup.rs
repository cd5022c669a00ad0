//! Building and running the server, so that tests can start it on port 0.
//!
//! `serve` listens at once and prepares the database in the background (create, migrate,
//! retrying while it is down), so `/healthz` answers even when PostgreSQL does not. Every
//! long-running task then runs under [`tasks::Tasks`]: started, supervised (a failed one is
//! logged, counted, makes `/readyz` answer 503 and is started again), stopped and awaited
//! the same way.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{middleware, App};
use eventstore::{CancellationToken, EventStore, StoreConfig};
use tasks::{Chain, Tasks};

pub struct Settings {
    pub store: StoreConfig,
    pub listen: SocketAddr,
    pub workers: Option<usize>,
    pub bootstrap_admin_key: Option<String>,
    pub limits: api::LimitSettings,
    pub checkpoints: Option<CheckpointSettings>,
    pub page_name: String,
    pub default_language: domain::language::Language,
    pub scheduler_interval: Duration,
    pub public_url: Option<String>,
    pub stream_buffer: usize,
    pub stream_heartbeat: Duration,
    pub webhooks: delivery::WebhookSettings,
    /// `None`: no SMTP server, no email.
    pub email: Option<delivery::email::EmailSettings>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub metrics: api::observe::MetricsAccess,
    pub cors: api::cors::CorsOrigins,
}

/// Signing the chain head periodically.
pub struct CheckpointSettings {
    pub key: Arc<eventstore::checkpoint::SigningKey>,
    pub interval: Duration,
}

pub struct Application {
    address: SocketAddr,
    server: actix_web::dev::Server,
    store: EventStore,
    bootstrap_admin_key: Option<String>,
    prepared: Arc<AtomicBool>,
    limits: Arc<api::Limits>,
    checkpoints: Option<CheckpointSettings>,
    notices: Arc<notices::NoticeHub>,
    webhooks: Arc<delivery::Sender>,
    email: Option<Arc<delivery::email::EmailSender>>,
    site: notices::Site,
    scheduler_interval: Duration,
    tasks: Tasks,
}

impl Application {
    /// Binds the listener and prepares the server; nothing is served until
    /// [`Application::run_until_stopped`].
    pub fn build(settings: Settings) -> anyhow::Result<Application> {
        let store = EventStore::connect(settings.store)?;
        let listener = TcpListener::bind(settings.listen)?;
        let address = listener.local_addr()?;
        let prepared = Arc::new(AtomicBool::new(false));
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{address}"));
        let page = api::PublicPage::new(&settings.page_name, &public_url);
        let tasks = Tasks::new();
        let mut state = api::AppState::new(store.clone(), prepared.clone(), settings.limits, page);
        state.limits = Arc::new(api::Limits::with_trusted_proxies(
            settings.limits,
            settings.trusted_proxies,
        ));
        let site = notices::Site::new(&public_url, settings.default_language.clone());
        state.default_language = settings.default_language.clone();
        // Streams are served on the HTTP workers, each a local runtime of its own thread.
        state.notices = Arc::new(
            notices::NoticeHub::new(
                settings.stream_buffer,
                settings.stream_heartbeat,
                site.clone(),
            )
            .relaying_per_thread(),
        );
        state.checkpoint_key = settings.checkpoints.as_ref().map(|c| c.key.verifying_key());
        let webhooks = delivery::Sender::new(&store, settings.webhooks.clone(), Arc::default())?;
        state.webhooks = Arc::new(settings.webhooks);
        let email = match settings.email {
            Some(email) => {
                state.email = Some(Arc::new(email.clone()));
                Some(delivery::email::EmailSender::new(
                    &store,
                    email,
                    site.clone(),
                    Arc::default(),
                )?)
            }
            None => None,
        };
        state.tasks = tasks.health();
        state.cors = settings.cors.clone();
        // Metrics on an address of their own: the same server listens there too, and the
        // middleware lets only /metrics through it.
        let metrics_listener = match settings.metrics.listen {
            Some(address) => {
                let listener = TcpListener::bind(address)?;
                let bound = listener.local_addr()?;
                tracing::info!(address = %bound, "metrics served on an address of their own");
                state.metrics = api::observe::MetricsAccess {
                    listen: Some(bound),
                    ..settings.metrics.clone()
                };
                Some(listener)
            }
            None => {
                state.metrics = settings.metrics.clone();
                None
            }
        };
        let limits = state.limits.clone();
        let notices = state.notices.clone();
        api::prometheus_handle();
        let app = move || {
            // Compression outermost: every answer, problem+json made from actix's own
            // errors included, is final before it is compressed.
            App::new()
                .wrap(middleware::from_fn(api::edge::every_request))
                .wrap(middleware::Compress::default())
                .configure(api::configure(state.clone()))
        };
        let server = api::server::server(
            app,
            api::server::ServerSettings {
                listeners: std::iter::once(listener).chain(metrics_listener).collect(),
                workers: settings.workers.unwrap_or_else(default_workers),
                shutdown_timeout_secs: 10,
            },
        )?;
        Ok(Application {
            address,
            server,
            store,
            bootstrap_admin_key: settings.bootstrap_admin_key,
            prepared,
            limits,
            checkpoints: settings.checkpoints,
            notices,
            webhooks,
            email,
            site,
            scheduler_interval: settings.scheduler_interval,
            tasks,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until SIGTERM or SIGINT: then stops accepting, finishes in-flight requests,
    /// stops the background work and returns.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let tasks = self.tasks;
        // actix stops accepting on SIGTERM/SIGINT and waits for open answers; event streams
        // never end by themselves, so they are told to close at the same signal.
        let notices = self.notices.clone();
        tasks.spawn("signals", move |cancel| {
            close_streams_on_signal(notices.clone(), cancel)
        });
        let store = self.store.clone();
        let limits = self.limits;
        tasks.spawn("housekeeping", move |cancel| {
            housekeeping(store.clone(), limits.clone(), cancel)
        });
        tasks.spawn_once(
            "preparation",
            prepare_database(
                Background {
                    store: self.store.clone(),
                    checkpoints: self.checkpoints,
                    notices: self.notices,
                    webhooks: self.webhooks,
                    email: self.email,
                    site: self.site,
                    scheduler_interval: self.scheduler_interval,
                    tasks: tasks.clone(),
                },
                self.bootstrap_admin_key,
                self.prepared,
            ),
        );
        let served = self.server.await;
        tasks.stop(Duration::from_secs(10)).await;
        tracing::info!("stopped");
        Ok(served?)
    }
}

async fn ensure_bootstrap_admin(store: &EventStore, secret: &str) -> anyhow::Result<()> {
    use projections::access::Bootstrap;
    let publisher = projections::Publisher::new(store);
    match projections::access::ensure_bootstrap_admin(&publisher, secret).await? {
        Bootstrap::Created => tracing::info!("created the bootstrap admin key"),
        Bootstrap::Present => tracing::debug!("the bootstrap admin key exists"),
        Bootstrap::Revoked => tracing::warn!(
            "the bootstrap admin key was revoked; it is not re-created (set another secret)"
        ),
    }
    Ok(())
}

/// Every minute: forgets idle rate-limit entries; every hour: deletes idempotency records
/// past their retention.
async fn housekeeping(
    store: EventStore,
    limits: Arc<api::Limits>,
    cancel: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let mut minutes = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = cancel.cancelled() => return Ok(()),
        }
        limits.forget_idle();
        minutes += 1;
        if minutes % 60 == 1 {
            let forgotten = async {
                let client = store.pool().get().await?;
                projections::idempotency::forget_older_than(
                    &client,
                    projections::idempotency::RETENTION,
                )
                .await
            }
            .await;
            match forgotten {
                Ok(0) => {}
                Ok(n) => tracing::info!(records = n, "deleted expired idempotency records"),
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "could not delete idempotency records")
                }
            }
        }
    }
}

/// What the background work needs once the database is ready.
struct Background {
    store: EventStore,
    /// Signing the chain head, when a key is configured.
    checkpoints: Option<CheckpointSettings>,
    /// The hub that feeds `/v1/stream`.
    notices: Arc<notices::NoticeHub>,
    /// The webhook sender.
    webhooks: Arc<delivery::Sender>,
    /// The email sender, when an SMTP server is configured.
    email: Option<Arc<delivery::email::EmailSender>>,
    /// What notices are rendered for (CloudEvents `source`, the default language).
    site: notices::Site,
    /// How often the scheduler looks at what is due.
    scheduler_interval: Duration,
    tasks: Tasks,
}

async fn close_streams_on_signal(
    notices: Arc<notices::NoticeHub>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
        _ = cancel.cancelled() => return Ok(()),
    }
    notices.close();
    // Streams are closed; nothing more to watch for, until the process stops.
    cancel.cancelled().await;
    Ok(())
}

/// Creates and migrates the database, retrying while it is unreachable (the server answers
/// `/healthz` meanwhile and `/readyz` says 503), then starts the background work.
async fn prepare_database(
    background: Background,
    bootstrap_admin_key: Option<String>,
    prepared: Arc<AtomicBool>,
) -> Result<(), std::convert::Infallible> {
    let Background {
        store,
        checkpoints,
        notices,
        webhooks,
        email,
        site,
        scheduler_interval,
        tasks,
    } = background;
    let cancel = tasks.cancellation();
    let url = store.config().database_url.clone();
    let mut retry = Duration::from_millis(200);
    loop {
        let prepared = async {
            eventstore::ensure_database(&url).await?;
            eventstore::ensure_current_schema(&url).await.map_err(|e| {
                anyhow::Error::new(e).context(
                    "the schema is not migrated (a role that owns nothing cannot migrate it: \
                     run `crier migrate` as the database's owner)",
                )
            })?;
            if let Some(secret) = &bootstrap_admin_key {
                ensure_bootstrap_admin(&store, secret).await?;
            }
            Ok::<(), anyhow::Error>(())
        }
        .await;
        match prepared {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = retry.as_millis() as u64, "database not ready")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = cancel.cancelled() => return Ok(()),
        }
        retry = (retry * 2).min(Duration::from_secs(5));
    }
    tracing::info!("database ready");
    prepared.store(true, Ordering::Release);
    let s = store.clone();
    tasks.spawn("sealer", move |cancel| {
        eventstore::sealer::run(s.clone(), cancel)
    });
    let s = store.clone();
    tasks.spawn("log-listener", move |cancel| {
        eventstore::listen(s.clone(), cancel)
    });
    let s = store.clone();
    tasks.spawn("projection-builder", move |cancel| {
        projections::run_builder(s.clone(), projections::BuilderOptions::default(), cancel)
    });
    if let Some(settings) = checkpoints {
        let s = store.clone();
        tasks.spawn("checkpoint-signer", move |cancel| {
            sign_checkpoints(s.clone(), settings.key.clone(), settings.interval, cancel)
        });
    }
    let s = store.clone();
    tasks.spawn("notice-hub", move |cancel| {
        notices.clone().follow(s.clone(), cancel)
    });
    let scheduler = projections::scheduler::SchedulerSettings {
        interval: scheduler_interval,
        default_language: site.default_language.clone(),
    };
    let s = store.clone();
    let sender = webhooks.clone();
    let webhook_site = site.clone();
    tasks.spawn("webhook-outbox", move |cancel| {
        delivery::outbox::run(s.clone(), webhook_site.clone(), sender.clone(), cancel)
    });
    if let Some(email) = email {
        let s = store.clone();
        let wake = email.wake();
        let email_site = site.clone();
        tasks.spawn("email-outbox", move |cancel| {
            delivery::email::outbox::run(s.clone(), email_site.clone(), wake.clone(), cancel)
        });
        tasks.spawn("email-sender", move |cancel| email.clone().run(cancel));
    }
    tasks.spawn("webhook-sender", move |cancel| webhooks.clone().run(cancel));
    let s = store.clone();
    tasks.spawn("maintenance-scheduler", move |cancel| {
        projections::scheduler::run(
            projections::Publisher::new(&s),
            s.clone(),
            scheduler.clone(),
            cancel,
        )
    });
    Ok(())
}

/// How often the signer recomputes the whole chain rather than only what follows its last
/// checkpoint, so that a change to older history is reported too.
const FULL_VERIFICATION_EVERY: Duration = Duration::from_secs(3600);

/// Signs the chain head at once and then every interval. Each signing recomputes the chain
/// after the last checkpoint this process verified (kept in memory), and the whole chain at
/// start and every hour; a chain that does not verify is never signed, and is reported at
/// error level every time.
async fn sign_checkpoints(
    store: EventStore,
    key: Arc<eventstore::checkpoint::SigningKey>,
    interval: Duration,
    cancel: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    use eventstore::checkpoint::SignOutcome;
    let mut trusted: Option<(u64, eventstore::Hash)> = None;
    let mut full_verification = std::time::Instant::now();
    loop {
        if full_verification.elapsed() >= FULL_VERIFICATION_EVERY {
            trusted = None;
            full_verification = std::time::Instant::now();
        }
        let outcome = store.sign_checkpoint(&key, trusted).await;
        if let Ok(SignOutcome::Signed(signed) | SignOutcome::Unchanged(signed)) = &outcome {
            trusted = signed.link().ok().map(|link| (signed.position, link));
        }
        match outcome {
            Ok(SignOutcome::Signed(signed)) => {
                tracing::info!(position = signed.position, hash = %signed.hash, "signed a checkpoint")
            }
            Ok(SignOutcome::Unchanged(_) | SignOutcome::EmptyHistory) => {}
            Ok(SignOutcome::Refused(report)) => tracing::error!(
                first_bad_position = report.first_bad_position,
                problem = report.problem.as_deref().unwrap_or_default(),
                "the hash chain does not verify: no checkpoint signed"
            ),
            Ok(SignOutcome::Contradicted(stored)) => tracing::error!(
                position = stored.position,
                "this key's stored checkpoint is not its signature of today's link there \
                 (forged, or the history rewritten): no checkpoint signed"
            ),
            Err(e) => tracing::warn!(error = %Chain(&e), "could not sign a checkpoint"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}

/// HTTP workers when none are configured: one per core. Measured on 2 cores in paired
/// rounds, reads and writes together (docs/PERFORMANCE.md, 2026-12-05): two workers served
/// `summary.json` at 96,000–101,000 requests/s against 50,000–67,000 for one, and
/// `GET /v1/incidents/{id}` 20 % faster, while updates were the same (the database bounds
/// them) with an equal or lower p99. (An earlier measurement favoured one worker; it
/// predates the public routes' move to the front of the router, which took a
/// regular-expression match per route off every read.)
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get().max(1))
}

/// Streams a process may hold when none is configured: its open-file limit (the soft one,
/// raised to the hard one first) less what everything else needs (a tenth, at least 512:
/// database connections, outgoing webhook connections, the listener, files).
pub fn default_stream_limit() -> u32 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    let files = limit.current.unwrap_or(1 << 20);
    let reserve = (files / 10).max(512);
    u32::try_from(files.saturating_sub(reserve).max(1)).unwrap_or(u32::MAX)
}
