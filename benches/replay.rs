//! Rebuilding the read models (`crier replay`) against reading the same log, in one run.
//!
//!     cargo bench --bench replay                       # ~100,000 events, 3 rounds
//!     cargo bench --bench replay -- --incidents 20000 --rounds 5
//!
//! Makes a history of services, incidents (declared, updated, corrected, resolved,
//! reopened, given postmortems; some private to a tenant) and maintenances, appended
//! directly; builds the live read models; then times full replays (fresh rebuild, swap
//! included) and, as the baseline, reading the whole log in order with the store's reader.
//!
//! Needs PostgreSQL at CRIER_TEST_DATABASE_URL (default the local one); makes and drops
//! its own database.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{median, read_whole_log};

use eventstore::testing::TestDatabase;
use projections::testing::{append_directly, read_model_snapshot, Shape};
use projections::{Builder, BuilderOptions, ReplayOptions};

struct Args {
    incidents: usize,
    rounds: usize,
    batch_size: usize,
}

fn args() -> Args {
    let mut args = Args {
        incidents: 10_000,
        rounds: 3,
        batch_size: ReplayOptions::default().batch_size,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let value = it.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--incidents", Some(v)) => args.incidents = v,
            ("--rounds", Some(v)) => args.rounds = v,
            ("--batch-size", Some(v)) => args.batch_size = v,
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

#[tokio::main]
async fn main() {
    let args = args();
    let db = TestDatabase::create().await;
    let store = db.store();
    let shape = Shape {
        services: 50,
        incidents: args.incidents,
        updates_per_incident: 8,
        maintenances: args.incidents / 20,
    };
    let started = Instant::now();
    append_directly(&store, shape).await;
    store.seal_all(Duration::from_secs(60)).await.expect("seal");
    Builder::new(&store, BuilderOptions::default())
        .catch_up()
        .await
        .expect("build");
    let live = read_model_snapshot(&store).await;
    let events = store.log_head().await.expect("head").map_or(0, |(p, _)| p);
    println!(
        "history: {events} events ({} incidents), made and built in {:.1} s",
        args.incidents,
        started.elapsed().as_secs_f64()
    );

    let options = ReplayOptions {
        batch_size: args.batch_size,
        fresh: true,
        ..ReplayOptions::default()
    };
    let (mut reads, mut replays) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let (count, read_rate) = read_whole_log(&store).await;
        assert_eq!(count, events);
        let report = projections::replay(&store, &options, |_| {})
            .await
            .expect("replay");
        assert_eq!(report.events, events);
        println!(
            "round {round}: read {read_rate:>9.0} events/s · replay {:>9.0} events/s ({:.2} s)",
            report.events_per_second(),
            report.elapsed.as_secs_f64()
        );
        reads.push(read_rate);
        replays.push(report.events_per_second());
    }
    assert_eq!(
        read_model_snapshot(&store).await,
        live,
        "replay changed the read models"
    );
    let (read, replay) = (median(reads), median(replays));
    println!();
    println!("| measurement | events/s (median of {}) |", args.rounds);
    println!("|---|---:|");
    println!("| read the whole log ({events} events) | {read:.0} |");
    println!("| replay: rebuild every read model and swap it in | {replay:.0} |");
    println!("| ratio replay / read | {:.2} |", replay / read);
    println!(
        "| target | ≥ 50,000 events/s: {} |",
        if replay >= 50_000.0 { "met" } else { "NOT met" }
    );
}
