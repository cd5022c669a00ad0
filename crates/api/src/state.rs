//! What every handler can reach.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use delivery::WebhookSettings;
use domain::api_key::ApiKey;
use eventstore::EventStore;
use notices::NoticeHub;
use projections::queries::{self, NoticeTable};
use projections::{Publisher, Versioned};
use tasks::Health;

use crate::coalesce::Coalesced;
use crate::documents::LocalizedCache;
use crate::feeds::FeedDocuments;
use crate::limits::{LimitSettings, Limits};
use crate::renderings::Renderings;
use crate::statuspage::{PublicPage, StatusDocuments};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: EventStore,
    pub publisher: Publisher,
    /// Set once the process has prepared the database (migrations, bootstrap key) and
    /// started its background work; until then the process is not ready.
    pub prepared: Arc<AtomicBool>,
    pub limits: Arc<Limits>,
    /// The public page the Statuspage API and the feeds describe.
    pub page: Arc<PublicPage>,
    pub statuspage: Arc<LocalizedCache<StatusDocuments>>,
    pub feeds: Arc<LocalizedCache<FeedDocuments>>,
    /// The status page (`GET /`) per language, and its other pages as last rendered.
    pub status_page: Arc<LocalizedCache<crate::status_page::IndexDocument>>,
    pub page_renderings: Arc<crate::status_page::PageRenderings>,
    /// Every service's status changes over the uptime window, as the public sees them:
    /// folded once per generation for the page and `GET /v1/services/{id}/uptime`.
    pub public_uptime: Arc<crate::documents::DocumentCache<crate::status_page::ServiceChanges>>,
    /// The key this process signs checkpoints with: the public checkpoint endpoint serves
    /// only its signatures. `None`: any key's valid signature.
    pub checkpoint_key: Option<eventstore::checkpoint::VerifyingKey>,
    /// Reads of the whole history (verify, export) running at once in this process: each
    /// holds a database connection for seconds or longer.
    pub whole_history_reads: Arc<tokio::sync::Semaphore>,
    /// The process's follower of the log for `/v1/stream`.
    pub notices: Arc<NoticeHub>,
    /// Writes this process has committed: with the log head, what a cached public document
    /// must have seen to be current.
    pub writes: Arc<std::sync::atomic::AtomicU64>,
    /// How webhooks are registered (which targets are allowed) and sent.
    pub webhooks: Arc<WebhookSettings>,
    /// The live key of each secret hash, looked up for concurrent requests at once.
    pub live_keys: Arc<Coalesced<String, Versioned<ApiKey>>>,
    /// `GET /v1/incidents/{id}` and `GET /v1/maintenances/{id}` as last rendered.
    pub incident_renderings: Arc<Renderings>,
    pub maintenance_renderings: Arc<Renderings>,
    /// The process's background tasks: one that failed makes the process not ready.
    pub tasks: Arc<Health>,
    /// Who may read `/metrics`.
    pub metrics: crate::observe::MetricsAccess,
    /// The origins whose pages may send requests with a key.
    pub cors: crate::cors::CorsOrigins,
    /// The language notices are written in; translations add others.
    pub default_language: domain::language::Language,
    /// How email is sent; `None`: no SMTP server is configured, subscribing answers 503.
    pub email: Option<Arc<delivery::email::EmailSettings>>,
}

impl AppState {
    /// What the public documents are rendered at: the log head this process knows (moved
    /// by every process's writes once sealed) and this process's own writes (at once).
    pub fn document_generation(&self) -> (u64, u64) {
        (
            self.store.known_log_head(),
            self.writes.load(std::sync::atomic::Ordering::Acquire),
        )
    }
}

/// Whole-history reads (verify, export) one process runs at once.
pub const WHOLE_HISTORY_READS: usize = 2;

impl AppState {
    pub fn new(
        store: EventStore,
        prepared: Arc<AtomicBool>,
        limits: LimitSettings,
        page: PublicPage,
    ) -> Self {
        let pool = store.pool().clone();
        AppState {
            live_keys: Arc::new(live_keys(pool.clone())),
            incident_renderings: Arc::new(Renderings::new(pool.clone(), NoticeTable::Incidents)),
            maintenance_renderings: Arc::new(Renderings::new(pool, NoticeTable::Maintenances)),
            publisher: Publisher::new(&store),
            store,
            prepared,
            limits: Arc::new(Limits::new(limits)),
            page: Arc::new(page),
            statuspage: Arc::default(),
            feeds: Arc::default(),
            status_page: Arc::default(),
            page_renderings: Arc::new(crate::status_page::page_renderings()),
            public_uptime: Arc::default(),
            checkpoint_key: None,
            whole_history_reads: Arc::new(tokio::sync::Semaphore::new(WHOLE_HISTORY_READS)),
            notices: Arc::default(),
            writes: Arc::default(),
            webhooks: Arc::default(),
            tasks: Arc::default(),
            metrics: Default::default(),
            cors: Default::default(),
            default_language: domain::language::Language::english(),
            email: None,
        }
    }
}

/// Live keys by the SHA-256 of their secret, read from the database for every request (so
/// that a revocation takes effect at once, on every process), concurrent requests' in one
/// query.
pub fn live_keys(pool: deadpool_postgres::Pool) -> Coalesced<String, Versioned<ApiKey>> {
    Coalesced::new(move |hashes: Vec<String>| {
        let pool = pool.clone();
        async move {
            let client = pool.get().await?;
            Ok(queries::live_keys_by_secret_hashes(&client, &hashes).await?)
        }
    })
}
