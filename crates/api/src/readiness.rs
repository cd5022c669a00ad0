//! Until the process has prepared its database (created it, migrated it, made the bootstrap
//! key), a request that would read or write it gets 503 with `Retry-After`, never the error
//! a half-migrated schema would give. What answers without the database stays open: the
//! probes, metrics, the documentation, and `/v1/stream`, which waits rather than refuse.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::dev::ServiceRequest;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use crate::problem::Problem;

/// Whether the database is prepared (in the app data).
#[derive(Debug, Clone, Default)]
pub struct Preparation(pub Arc<AtomicBool>);

fn open_before_preparation(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/v1/stream"
    ) || path == "/docs"
        || path.starts_with("/docs/")
}

/// 503 with `Retry-After` for `request` while the database is being prepared, unless it
/// answers without the database.
pub fn refusal(request: &ServiceRequest) -> Option<HttpResponse> {
    let prepared = request
        .app_data::<web::Data<Preparation>>()
        .is_none_or(|p| p.0.load(Ordering::Acquire));
    if prepared || open_before_preparation(request.path()) {
        return None;
    }
    Some(
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is preparing its database; retry shortly",
        )
        .response(),
    )
}
