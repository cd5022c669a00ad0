use std::sync::OnceLock;

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; the handle still renders.
            let _ = metrics::set_global_recorder(recorder);
            // Counters show from the start, not from their first event.
            metrics::counter!("crier_events_appended_total").increment(0);
            metrics::counter!("crier_events_sealed_total").increment(0);
            handle
        })
        .clone()
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
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
