//! The process-wide Prometheus recorder that `/metrics` renders.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
