//! A load generator for crash tests and demonstrations: `WRITERS` tasks append single
//! events to their own streams, each with the exact expected version, and print
//! `ack <event_id>` once the append is acknowledged. Runs the sealer as `crier serve` does.
//!
//! Usage: `eventstore-writer DATABASE_URL [WRITERS]`

use std::io::Write;

use eventstore::{EventStore, ExpectedVersion, Metadata, NewEvent, StoreConfig};
use serde_json::json;
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(url) = args.next() else {
        eprintln!("usage: eventstore-writer DATABASE_URL [WRITERS]");
        return std::process::ExitCode::from(2);
    };
    let writers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(8);
    let store = match EventStore::connect(StoreConfig::new(url)) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("eventstore-writer: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let _background = store.spawn_background(eventstore::CancellationToken::new());
    let (acks, mut acked) = mpsc::unbounded_channel();
    for writer in 0..writers {
        let store = store.clone();
        let acks = acks.clone();
        tokio::spawn(async move {
            let stream = format!("writer-{writer}-{}", uuid::Uuid::new_v4().simple());
            for version in 0u64.. {
                let event = NewEvent::new(
                    "load.written",
                    json!({ "writer": writer, "version": version + 1 }),
                    Metadata::by("eventstore-writer"),
                );
                let id = event.event_id;
                match store
                    .append(&stream, ExpectedVersion::Exact(version), &[event])
                    .await
                {
                    Ok(_) => {
                        if acks.send(id).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        eprintln!("append failed: {e}");
                        return;
                    }
                }
            }
        });
    }
    drop(acks);
    let mut stdout = std::io::stdout().lock();
    while let Some(id) = acked.recv().await {
        // Flushed line by line: an ack printed is an append acknowledged.
        if writeln!(stdout, "ack {id}")
            .and_then(|_| stdout.flush())
            .is_err()
        {
            break;
        }
    }
    std::process::ExitCode::SUCCESS
}
