//! What the benchmarks share.

use std::time::Instant;

use eventstore::EventStore;

/// The allocator `crier` runs with (src/main.rs), so that what is measured here in-process
/// is what the binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Reads the whole global log in order with the store's log reader (which reads ahead), in
/// batches of 5000. Answers the events read and events per second.
pub async fn read_whole_log(store: &EventStore) -> (u64, f64) {
    let start = Instant::now();
    let mut reader = store.log_reader(0, 5000);
    let mut count = 0u64;
    loop {
        let batch = reader.next_batch().await.expect("read");
        if batch.is_empty() {
            break;
        }
        count += batch.len() as u64;
    }
    (count, count as f64 / start.elapsed().as_secs_f64())
}

/// As [`read_whole_log`], with one `read_log` call at a time: what the reading ahead gains.
#[allow(dead_code)] // used by some of the benches that include this module
pub async fn read_whole_log_one_read_at_a_time(store: &EventStore) -> (u64, f64) {
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
