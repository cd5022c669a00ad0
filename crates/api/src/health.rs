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
        (status = 503, description = "The database is unreachable or not migrated yet, or the notice stream has not started", body = Problem, content_type = "application/problem+json"),
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
    if !state.notices.is_started() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the notice stream is starting",
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;
    use crate::limits::LimitSettings;
    use crate::statuspage::PublicPage;

    #[actix_web::test]
    async fn not_ready_until_the_notice_stream_has_started() {
        // Nothing listens there: the answer must come before the database is asked.
        let config = eventstore::StoreConfig::new("postgres://postgres@127.0.0.1:9/none");
        let store = eventstore::EventStore::connect(config).expect("a lazy pool");
        let prepared = Arc::new(AtomicBool::new(true));
        let page = PublicPage::new("Status", "http://127.0.0.1:8080");
        let state = AppState::new(store, prepared, LimitSettings::default(), page);
        let answer = readyz(web::Data::new(state)).await;
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = actix_web::body::to_bytes(answer.into_body()).await;
        let body = String::from_utf8(body.expect("body").to_vec()).expect("utf-8");
        assert!(body.contains("the notice stream is starting"), "{body}");
    }
}
