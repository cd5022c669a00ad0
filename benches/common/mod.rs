//! What the benchmarks share.

use std::time::Instant;

use eventstore::EventStore;

/// Reads the whole global log in order with the store's reader, in batches of 5000.
/// Answers the events read and events per second.
pub async fn read_whole_log(store: &EventStore) -> (u64, f64) {
    let start = Instant::now();
    let mut after = 0;
    let mut count = 0u64;
    loop {
        let batch = store.read_log(after, 5000).await.expect("read");
        let Some(last) = batch.last() else { break };
        after = last.position;
        count += batch.len() as u64;
    }
    (count, count as f64 / start.elapsed().as_secs_f64())
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
