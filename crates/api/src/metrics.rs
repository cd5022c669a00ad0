use std::sync::OnceLock;

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Buckets from 1 ms to 10 s, so that p99 can be read off the histogram.
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".to_owned()), &buckets)
                .map_or_else(
                    |_| PrometheusBuilder::new().build_recorder(),
                    |b| b.build_recorder(),
                );
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

/// Prometheus metrics: requests by route and status, latency histograms, pool usage, events
/// appended and sealed.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
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
