//! Crier's HTTP layer: the only crate that knows HTTP (actix-web), documented with utoipa.
//!
//! Every handler authenticates the caller ([`auth::Caller`]), checks its role, parses the
//! body itself (so that a bad key is a 401 before a bad body is a 400), and runs commands
//! through [`commands::execute`], which applies `If-Match`, `Idempotency-Key` and the write
//! rate limit around the one write path, [`projections::Publisher`]. Each module under
//! [`routes`] registers its own paths ([`routing::Routes`]) and documents them
//! ([`openapi::document`] merges the modules' documents).
//!
//! The crate runs no background work of its own: the notice hub, the delivery workers and
//! the store's sealer run in `notices`, `delivery` and `eventstore`, started by the binary.

pub mod auth;
pub mod bodies;
mod coalesce;
pub mod commands;
pub mod cors;
mod documents;
pub mod edge;
pub mod extract;
mod feeds;
pub mod language;
pub mod limits;
mod lookups;
mod metrics;
pub mod observe;
pub mod openapi;
pub mod paging;
pub mod problem;
pub mod readiness;
mod renderings;
pub mod routes;
pub mod routing;
pub mod server;
pub mod state;
pub mod status_page;
pub mod statuspage;

use actix_web::web;
use utoipa_swagger_ui::SwaggerUi;

pub use limits::{LimitSettings, Limits};
pub use metrics::prometheus_handle;
pub use state::AppState;
pub use statuspage::PublicPage;

use problem::ApiError;
use routing::Routes;

/// Whole-history reads (verify, export) one process runs at once.
pub const WHOLE_HISTORY_READS: usize = 2;

/// The `source` prefix of exported events: the audit URL of their streams under the public
/// URL, to which the export appends each stream id.
pub fn audit_stream_url_prefix(public_url: &str) -> String {
    format!("{}/v1/audit/streams/", public_url.trim_end_matches('/'))
}

/// Registers every route, the documentation and the problem+json answers for requests no
/// route takes. Wrap the app in [`edge::every_request`].
pub fn configure(state: AppState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::from(state.limits.clone()))
            .app_data(web::Data::new(state.metrics.clone()))
            .app_data(web::Data::new(state.cors.clone()))
            .app_data(web::Data::new(readiness::Preparation(
                state.prepared.clone(),
            )))
            .app_data(web::Data::new(state))
            .app_data(web::PayloadConfig::new(extract::MAX_BODY_BYTES))
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| ApiError::BadRequest(format!("bad query: {e}")).into()),
            )
            .app_data(web::PathConfig::default().error_handler(|e, _| {
                ApiError::BadRequest(format!("bad path: {e} (ids are UUIDs)")).into()
            }));
        let mut routes = Routes::new(cfg);
        routes::configure(&mut routes);
        routes.register();
        cfg.route(
            "/docs",
            web::get().to(|| async {
                actix_web::HttpResponse::PermanentRedirect()
                    .insert_header((actix_web::http::header::LOCATION, "/docs/"))
                    .finish()
            }),
        )
        .route(
            "/openapi.json",
            web::get().to(|| async {
                actix_web::HttpResponse::Ok()
                    .content_type("application/json")
                    .body(openapi::served())
            }),
        )
        .service(
            SwaggerUi::new("/docs/{_:.*}")
                .config(utoipa_swagger_ui::Config::new(["/openapi.json"])),
        )
        .default_service(web::to(problem::not_found));
    }
}
