//! Faults: a writer process killed with SIGKILL mid-write, and the database going away.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failed test

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use eventstore::testing::{whole_log, OutageProxy, TestDatabase};
use eventstore::{AppendError, EventStore, ExpectedVersion, Metadata, NewEvent, StoreConfig};
use serde_json::json;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_append_survives_a_kill_9_of_the_writer_exactly_once() {
    let db = TestDatabase::create().await;
    for round in 0..3 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_eventstore-writer"))
            .arg(&db.url)
            .arg("8")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start writer");
        let stdout = child.stdout.take().expect("stdout");
        // Read acknowledgements until enough have come, then kill without warning.
        let acked = tokio::task::spawn_blocking(move || {
            let mut acked = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(id) = line.strip_prefix("ack ") {
                    acked.push(Uuid::parse_str(id).expect("uuid"));
                }
                if acked.len() >= 200 + round * 50 {
                    break;
                }
            }
            acked
        })
        .await
        .expect("reader");
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        assert!(
            acked.len() >= 200,
            "writer acknowledged too little: {}",
            acked.len()
        );

        let store = db.store();
        store
            .seal_all(Duration::from_secs(30))
            .await
            .expect("seal after crash");
        let logged = whole_log(&store).await;
        let ids: Vec<Uuid> = logged.iter().map(|e| e.event.event_id).collect();
        let unique: HashSet<Uuid> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "an event is in the log twice");
        for id in &acked {
            assert!(unique.contains(id), "acknowledged event {id} was lost");
        }
        let positions: Vec<u64> = logged.iter().map(|e| e.position).collect();
        assert_eq!(positions, (1..=logged.len() as u64).collect::<Vec<_>>());
        // Appends in flight at the kill (never acknowledged) may still commit a moment
        // later, when their backends notice: seal those too before the last check.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let report = loop {
            store.seal_all(Duration::from_secs(10)).await.expect("seal");
            let report = store.verify().await.expect("verify");
            if report.unsealed == 0 || tokio::time::Instant::now() > deadline {
                break report;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(report.ok && report.unsealed == 0, "{report:?}");
    }
}

fn event() -> NewEvent {
    NewEvent::new("outage.test", json!({ "x": 1 }), Metadata::by("tester"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_fail_as_unavailable_while_the_database_is_away_and_recover_by_themselves() {
    let db = TestDatabase::create().await;
    let proxy = OutageProxy::start().await;
    let mut config = StoreConfig::new(proxy.url(&db));
    config.pool_size = 4;
    config.connect_timeout = Duration::from_secs(2);
    let store = EventStore::connect(config).expect("connect");
    store
        .append("s", ExpectedVersion::Any, &[event()])
        .await
        .expect("append while up");

    proxy.cut();
    // Let the proxy close the open connections before trying.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Every attempt fails cleanly (no hang, no panic), however many times it is tried.
    for _ in 0..3 {
        match store.append("s", ExpectedVersion::Any, &[event()]).await {
            Err(AppendError::Store(e)) => assert!(e.is_unavailable(), "{e:?}"),
            other => panic!("expected unavailable, got {other:?}"),
        }
        assert!(store.ready().await.expect_err("not ready").is_unavailable());
    }

    proxy.restore();
    // The same store, not rebuilt, works again once the database is back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match store.append("s", ExpectedVersion::Any, &[event()]).await {
            Ok(outcome) => {
                assert_eq!(
                    outcome.stream_version, 2,
                    "nothing was half-written during the outage"
                );
                break;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("did not recover: {e}"),
        }
    }
    store.ready().await.expect("ready again");
}
