use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::problem::Problem;
use crate::AppState;

/// Liveness: the process answers. Never looks at the database, so a database outage does
/// not get a healthy process restarted.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive", body = serde_json::Value, example = json!({"status": "ok"})))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: the process has prepared the database (migrated it, made the bootstrap key),
/// and the database answers with this build's schema.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = serde_json::Value, example = json!({"status": "ready"})),
        (status = 503, description = "The database is unreachable or not migrated yet", body = Problem, content_type = "application/problem+json"),
    )
)]
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
