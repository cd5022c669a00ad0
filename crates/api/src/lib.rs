//! Crier's HTTP surface. The only crate that knows HTTP.

mod health;
mod metrics;
pub mod problem;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix_web::web;
use eventstore::EventStore;

pub use metrics::prometheus_handle;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: EventStore,
    /// Set once the process has prepared the database (migrations, bootstrap key) and
    /// started its background work; until then the process is not ready.
    pub prepared: Arc<AtomicBool>,
}

/// Registers every route and the problem+json answer for unknown ones.
pub fn configure(state: AppState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(state))
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .route("/metrics", web::get().to(metrics::metrics))
            .default_service(web::to(problem::not_found));
    }
}
