//! `/healthz`, `/readyz` and `/metrics`: what operators and orchestrators look at.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use sha2::Digest;
use utoipa::OpenApi;

use crate::metrics::prometheus_handle;
use crate::problem::Problem;
use crate::routing::{get_and_head, Routes};
use crate::state::AppState;

pub fn configure(routes: &mut Routes<'_>) {
    routes
        .resource("/healthz", [get_and_head(healthz)])
        .resource("/readyz", [get_and_head(readyz)])
        .resource("/metrics", [get_and_head(metrics)]);
}

#[derive(OpenApi)]
#[openapi(paths(healthz, readyz, metrics))]
pub struct Doc;

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
/// its background tasks run, and the database answers with this build's schema.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = serde_json::Value, example = json!({"status": "ready"})),
        (status = 503, description = "The database is unreachable or not migrated yet, the notice stream has not started, or a background task has failed", body = Problem, content_type = "application/problem+json"),
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
    if let Some((task, why)) = state.tasks.failing().into_iter().next() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: background task {task} failed ({why})"),
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
            tracing::debug!(error = %tasks::Chain(&e), "not ready");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}")).response()
        }
    }
}

/// Prometheus metrics: requests by route pattern (never an id) and status, latency
/// histograms, database pool usage, the log head, events appended and sealed, webhook
/// deliveries and attempts, background task failures. No count is split by tenant, key or
/// notice, but together they show how busy the server is, private activity included: give
/// them an address of their own (`CRIER_METRICS_LISTEN`) or a bearer token
/// (`CRIER_METRICS_TOKEN`) where that matters.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "A metrics token is configured and was not sent", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Metrics are served on an address of their own", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn metrics(state: web::Data<AppState>, request: HttpRequest) -> HttpResponse {
    let access = &state.metrics;
    if access.listen.is_some() && !access.on_metrics_address(&request) {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "metrics are served on an address of their own",
        )
        .response();
    }
    if let Some(token) = &access.token {
        let presented = request
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Compared in constant time: the digests of equal strings are equal.
        let same =
            sha2::Sha256::digest(presented.as_bytes()) == sha2::Sha256::digest(token.as_bytes());
        if !same {
            return Problem::new(
                StatusCode::UNAUTHORIZED,
                "metrics need the bearer token this server was given (CRIER_METRICS_TOKEN)",
            )
            .response();
        }
    }
    let pool = state.store.pool().status();
    metrics::gauge!("crier_db_pool_connections").set(pool.size as f64);
    metrics::gauge!("crier_db_pool_available").set(pool.available as f64);
    metrics::gauge!("crier_db_pool_waiting").set(pool.waiting as f64);
    metrics::gauge!("crier_db_pool_max").set(pool.max_size as f64);
    metrics::gauge!("crier_log_head_position").set(state.store.known_log_head() as f64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(prometheus_handle().render())
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

    #[actix_web::test]
    async fn not_ready_while_a_background_task_has_failed() {
        let config = eventstore::StoreConfig::new("postgres://postgres@127.0.0.1:9/none");
        let store = eventstore::EventStore::connect(config).expect("a lazy pool");
        let page = PublicPage::new("Status", "http://127.0.0.1:8080");
        let mut state = AppState::new(
            store,
            Arc::new(AtomicBool::new(true)),
            LimitSettings::default(),
            page,
        );
        let background = tasks::Tasks::new();
        background.spawn("doomed", |_cancel| async {
            Err::<(), tasks::BoxError>("the log cannot be read".into())
        });
        state.tasks = background.health();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let answer = readyz(web::Data::new(state)).await;
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = actix_web::body::to_bytes(answer.into_body()).await;
        let body = String::from_utf8(body.expect("body").to_vec()).expect("utf-8");
        assert!(
            body.contains("background task doomed failed (the log cannot be read)"),
            "{body}"
        );
        background.stop(std::time::Duration::from_secs(1)).await;
    }
}
