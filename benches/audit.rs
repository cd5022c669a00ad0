//! The auditor's reads on a long history: `verify` and `export` against reading the same
//! log with the store's reader, in one run.
//!
//!     cargo bench --bench audit                          # ~1,020,000 events, 3 rounds
//!     cargo bench --bench audit -- --incidents 20000 --rounds 1
//!
//! Makes a history (services, incidents with their updates, corrections, postmortems,
//! maintenances) appended directly and sealed; then, per round: reads the whole log in
//! order (the baseline), verifies the chain (`EventStore::verify`, what `crier verify` and
//! `GET /v1/audit/verify` run) and exports it (`EventStore::export`, what `crier export`
//! and `GET /v1/audit/export` stream), counting lines and bytes. Finally runs the release
//! `crier export` binary on the whole history and on its last 10,000 events under
//! `/usr/bin/time` to show that its memory does not grow with the history.
//!
//! Needs PostgreSQL at CRIER_TEST_DATABASE_URL (default the local one); makes and drops
//! its own database.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failed test

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{median, read_whole_log};
use eventstore::testing::TestDatabase;
use futures_util::StreamExt;
use projections::testing::{append_directly, Shape};

struct Args {
    incidents: usize,
    rounds: usize,
}

fn args() -> Args {
    let mut args = Args {
        incidents: 105_000,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let value = it.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--incidents", Some(v)) => args.incidents = v,
            ("--rounds", Some(v)) => args.rounds = v,
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

/// Maximum resident set of `crier export --after <after>` (KiB) and the lines it wrote.
fn export_process_memory(database_url: &str, after: u64) -> (u64, u64) {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(env!("CARGO_BIN_EXE_crier"))
        .args(["export", "--after", &after.to_string()])
        .env("DATABASE_URL", database_url)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .expect("run /usr/bin/time crier export");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kib = stderr
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("max RSS");
    let lines = out.stdout.iter().filter(|b| **b == b'\n').count() as u64;
    (kib, lines)
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
    store
        .seal_all(Duration::from_secs(120))
        .await
        .expect("seal");
    let events = store.log_head().await.expect("head").map_or(0, |(p, _)| p);
    println!(
        "history: {events} events ({} incidents), made in {:.1} s",
        args.incidents,
        started.elapsed().as_secs_f64()
    );

    let (mut reads, mut verifies, mut exports) = (Vec::new(), Vec::new(), Vec::new());
    let mut export_bytes = 0u64;
    for round in 1..=args.rounds {
        let (count, read_rate) = read_whole_log(&store).await;
        assert_eq!(count, events);

        let start = Instant::now();
        let report = store.verify().await.expect("verify");
        let verify_rate = events as f64 / start.elapsed().as_secs_f64();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.checked, events);

        let start = Instant::now();
        let (mut lines, mut bytes) = (0u64, 0u64);
        let mut chunks = std::pin::pin!(store.export(0, events, "http://127.0.0.1:8080"));
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.expect("export");
            lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            bytes += chunk.len() as u64;
        }
        let export_rate = events as f64 / start.elapsed().as_secs_f64();
        assert_eq!(lines, events);
        export_bytes = bytes;

        println!(
            "round {round}: read {read_rate:>9.0} · verify {verify_rate:>9.0} · export {export_rate:>9.0} events/s"
        );
        reads.push(read_rate);
        verifies.push(verify_rate);
        exports.push(export_rate);
    }
    let (whole_kib, whole_lines) = export_process_memory(&db.url, 0);
    assert_eq!(whole_lines, events);
    let tail_after = events.saturating_sub(10_000);
    let (tail_kib, _) = export_process_memory(&db.url, tail_after);

    let (read, verify, export) = (median(reads), median(verifies), median(exports));
    let verdict = |rate: f64| if rate >= 100_000.0 { "met" } else { "NOT met" };
    println!();
    println!(
        "| measurement ({events} events) | events/s (median of {}) | ratio to the read |",
        args.rounds
    );
    println!("|---|---:|---:|");
    println!("| read the whole log with the store's reader (baseline) | {read:.0} | 1.00 |");
    println!(
        "| verify: recompute every link | {verify:.0} | {:.2} |",
        verify / read
    );
    println!(
        "| export: NDJSON CloudEvents ({:.0} MB) | {export:.0} | {:.2} |",
        export_bytes as f64 / 1e6,
        export / read
    );
    println!(
        "| target ≥ 100,000 events/s | verify {}, export {} | |",
        verdict(verify),
        verdict(export)
    );
    println!();
    println!(
        "`crier export` (release) max RSS: whole history {:.1} MiB; last 10,000 events {:.1} MiB",
        whole_kib as f64 / 1024.0,
        tail_kib as f64 / 1024.0
    );
}
