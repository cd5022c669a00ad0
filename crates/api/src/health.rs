use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::problem::Problem;
use crate::AppState;

/// Liveness: the process answers. Never looks at the database, so a database outage does
/// not get a healthy process restarted.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: the process has prepared the database (migrated it, made the bootstrap key),
/// and the database answers with this build's schema.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if !state.prepared.load(std::sync::atomic::Ordering::Acquire) {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: preparing the database",
        )
        .response();
    }
    match state.store.ready().await {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Err(e) => {
            tracing::debug!(error = %e, "not ready");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}")).response()
        }
    }
}
