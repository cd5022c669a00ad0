//! The process-wide Prometheus recorder that `/metrics` renders.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// How often the recorder folds the samples its histograms took into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process-wide Prometheus recorder, installed on first use, with a thread that keeps
/// it: a histogram holds every sample it took until upkeep (or a scrape of `/metrics`)
/// folds them into its buckets, so a server nobody scrapes would otherwise grow by each
/// request's sample (about 18 bytes a request measured: 6 GB an hour at 100,000 requests
/// a second).
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
            let kept = handle.clone();
            let upkeep = std::thread::Builder::new()
                .name("metrics-upkeep".to_owned())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    kept.run_upkeep();
                });
            if let Err(e) = upkeep {
                tracing::warn!(error = %e, "no thread for metrics upkeep: histograms grow until /metrics is read");
            }
            // Fails only if another recorder was installed first; the handle still renders.
            let _ = metrics::set_global_recorder(recorder);
            // Counters show from the start, not from their first event.
            metrics::counter!("crier_events_appended_total").increment(0);
            metrics::counter!("crier_events_sealed_total").increment(0);
            handle
        })
        .clone()
}
