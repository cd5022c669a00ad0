//! Crier's HTTP surface. The only crate that knows HTTP.
//!
//! Every handler authenticates the caller ([`auth::Caller`]), checks its role, parses the
//! body itself (so that a bad key is a 401 before a bad body is a 400), and runs commands
//! through [`http::execute`], which applies `If-Match`, `Idempotency-Key` and the write rate
//! limit around the one write path, [`projections::Publisher`].

pub mod auth;
mod coalesce;
mod feeds;
mod health;
pub mod http;
pub mod limits;
mod metrics;
pub mod notice;
pub mod observe;
pub mod openapi;
pub mod problem;
mod published;
mod renderings;
mod routes;
pub mod statuspage;
pub mod stream;
pub mod views;
pub mod webhooks;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix_web::web;
use eventstore::EventStore;
use projections::queries::NoticeTable;
use projections::Publisher;
use utoipa_swagger_ui::SwaggerUi;

pub use limits::{LimitSettings, Limits};
pub use metrics::prometheus_handle;
pub use statuspage::PublicPage;

use problem::ApiError;
use routes::{audit, incidents, keys, maintenances, public, services, webhooks as webhook_routes};

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
    pub statuspage: Arc<published::Published<statuspage::StatusDocuments>>,
    pub feeds: Arc<published::Published<feeds::FeedDocuments>>,
    /// The key this process signs checkpoints with: the public checkpoint endpoint serves
    /// only its signatures. `None`: any key's valid signature.
    pub checkpoint_key: Option<eventstore::checkpoint::VerifyingKey>,
    /// Reads of the whole history (verify, export) running at once in this process: each
    /// holds a database connection for seconds or longer.
    pub whole_history_reads: Arc<tokio::sync::Semaphore>,
    /// The process's follower of the log for `/v1/stream`.
    pub notices: Arc<stream::NoticeHub>,
    /// Writes this process has committed: with the log head, what a cached public document
    /// must have seen to be current.
    pub writes: Arc<std::sync::atomic::AtomicU64>,
    /// How webhooks are registered (which targets are allowed) and sent.
    pub webhooks: Arc<webhooks::WebhookSettings>,
    /// The live key of each secret hash, looked up for concurrent requests at once.
    pub live_keys:
        Arc<coalesce::Coalesced<String, projections::Versioned<domain::api_key::ApiKey>>>,
    /// `GET /v1/incidents/{id}` and `GET /v1/maintenances/{id}` as last rendered.
    pub incident_renderings: Arc<renderings::Renderings>,
    pub maintenance_renderings: Arc<renderings::Renderings>,
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
            live_keys: Arc::new(auth::live_keys(pool.clone())),
            incident_renderings: Arc::new(renderings::Renderings::new(
                pool.clone(),
                NoticeTable::Incidents,
            )),
            maintenance_renderings: Arc::new(renderings::Renderings::new(
                pool,
                NoticeTable::Maintenances,
            )),
            publisher: Publisher::new(&store),
            store,
            prepared,
            limits: Arc::new(Limits::new(limits)),
            page: Arc::new(page),
            statuspage: Arc::default(),
            feeds: Arc::default(),
            checkpoint_key: None,
            whole_history_reads: Arc::new(tokio::sync::Semaphore::new(WHOLE_HISTORY_READS)),
            notices: Arc::default(),
            writes: Arc::default(),
            webhooks: Arc::default(),
        }
    }
}

fn method_not_allowed() -> actix_web::Route {
    web::to(observe::method_not_allowed)
}

/// A resource answering GET (and so HEAD) with `handler`, 405 otherwise.
fn get_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(method_not_allowed())
}

/// Registers every route, the documentation and the problem+json answers for requests no
/// route takes. Wrap the app in [`observe::middleware`].
pub fn configure(state: AppState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(state))
            .app_data(web::PayloadConfig::new(http::MAX_BODY_BYTES))
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| ApiError::BadRequest(format!("bad query: {e}")).into()),
            )
            .app_data(web::PathConfig::default().error_handler(|e, _| {
                ApiError::BadRequest(format!("bad path: {e} (ids are UUIDs)")).into()
            }))
            .service(get_only("/healthz", health::healthz))
            .service(get_only("/readyz", health::readyz))
            .service(get_only("/metrics", metrics::metrics))
            .service(
                web::resource("/v1/api-keys")
                    .route(web::post().to(keys::create))
                    .route(web::get().to(keys::list))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/api-keys/{id}")
                    .route(web::get().to(keys::get))
                    .route(web::delete().to(keys::revoke))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/webhooks")
                    .route(web::post().to(webhook_routes::create))
                    .route(web::get().to(webhook_routes::list))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/webhooks/{id}")
                    .route(web::get().to(webhook_routes::get))
                    .route(web::delete().to(webhook_routes::delete))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/webhooks/{id}/deliveries")
                    .route(web::get().to(webhook_routes::deliveries))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/services")
                    .route(web::post().to(services::create))
                    .route(web::get().to(services::list))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/services/{id}")
                    .route(web::get().to(services::get))
                    .route(web::patch().to(services::change))
                    .route(web::delete().to(services::retire))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/incidents")
                    .route(web::post().to(incidents::declare))
                    .route(web::get().to(incidents::list))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/incidents/{id}")
                    .route(web::get().to(incidents::get))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/incidents/{id}/updates")
                    .route(web::post().to(incidents::post_update))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/incidents/{id}/updates/{update_id}/corrections")
                    .route(web::post().to(incidents::correct))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/incidents/{id}/reopen")
                    .route(web::post().to(incidents::reopen))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/incidents/{id}/postmortem")
                    .route(web::post().to(incidents::postmortem))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/maintenances")
                    .route(web::post().to(maintenances::schedule))
                    .route(web::get().to(maintenances::list))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/maintenances/{id}")
                    .route(web::get().to(maintenances::get))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/maintenances/{id}/updates")
                    .route(web::post().to(maintenances::post_update))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/audit/events")
                    .route(web::get().to(audit::events))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/audit/streams/{stream_id}/events")
                    .route(web::get().to(audit::stream_events))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/audit/verify")
                    .route(web::get().to(audit::verify))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/audit/export")
                    .route(web::get().to(audit::export))
                    .default_service(method_not_allowed()),
            )
            .service(
                web::resource("/v1/audit/checkpoint")
                    .route(web::get().to(audit::checkpoint))
                    .default_service(method_not_allowed()),
            )
            .service(get_only("/api/v2/summary.json", public::summary))
            .service(get_only("/api/v2/status.json", public::status))
            .service(get_only("/api/v2/components.json", public::components))
            .service(get_only("/api/v2/incidents.json", public::incidents))
            .service(get_only(
                "/api/v2/incidents/unresolved.json",
                public::unresolved,
            ))
            .service(get_only(
                "/api/v2/scheduled-maintenances.json",
                public::maintenances,
            ))
            .service(get_only(
                "/api/v2/scheduled-maintenances/upcoming.json",
                public::upcoming,
            ))
            .service(get_only(
                "/api/v2/scheduled-maintenances/active.json",
                public::active,
            ))
            .service(get_only("/v1/stream", routes::stream::stream))
            .service(get_only("/v1/feed.atom", public::atom))
            .service(get_only("/v1/feed.rss", public::rss))
            .route(
                "/docs",
                web::get().to(|| async {
                    actix_web::HttpResponse::PermanentRedirect()
                        .insert_header((actix_web::http::header::LOCATION, "/docs/"))
                        .finish()
                }),
            )
            .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", openapi::document()))
            .default_service(web::to(problem::not_found));
    }
}
