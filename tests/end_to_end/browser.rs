//! Crier as browsers use it, in a real headless Chromium (tools/browser, Debian's
//! `chromium`): pages of other origins read the public documents and the notice stream, and
//! a listed origin writes with a key.

use std::process::Stdio;
use std::time::Duration;

use eventstore::testing::TestDatabase;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

use crate::support::*;

/// The next JSON line the driver reports that `wanted` accepts.
async fn until(
    lines: &mut Lines<BufReader<ChildStdout>>,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("the browser reported in time")
            .expect("read the driver")
            .expect("the driver is still running");
        let value: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("the driver said: {line}"));
        if wanted(&value) {
            return value;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_other_origins_read_and_stream_and_a_listed_origin_writes_with_a_key() {
    let tools = tokio::task::spawn_blocking(browser_tools).await.unwrap();
    let db = TestDatabase::create().await;
    let (allowed_port, other_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let allowed = format!("http://127.0.0.1:{allowed_port}");
    let start = || {
        let mut command = crier(&db.url);
        command
            .env("CRIER_BOOTSTRAP_ADMIN_KEY", ADMIN_SECRET)
            .env("CRIER_WRITE_RATE_LIMIT", "0")
            .env("CRIER_CORS_ORIGINS", &allowed)
            .env("CRIER_STREAM_HEARTBEAT", "1");
        Server::start_listening(command, &listen)
    };
    let api = Api::on(start()).await;
    let teams = api.service("Microsoft Teams").await;
    let comms = api.key("publisher", None).await;

    let mut driver = Command::new("node")
        .arg(tools.join("cors.mjs"))
        .args(["--crier", &api.server.base])
        .args(["--allowed-port", &allowed_port.to_string()])
        .args(["--other-port", &other_port.to_string()])
        .args(["--key", &comms, "--service", &teams])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs the browser driver");
    let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();

    // Another origin reads public documents, but may not write with a key.
    let other = until(&mut lines, |v| v["origin"] == "other").await;
    assert_eq!(other["public"]["status"], 200, "{other:#}");
    assert!(
        other["public"]["etag"].is_string(),
        "ETag is exposed: {other:#}"
    );
    assert!(
        other["keyed"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Failed to fetch")),
        "a keyed write from an unlisted origin is blocked: {other:#}"
    );
    // The listed origin writes, preflight and all, and reads the answer's headers.
    let mine = until(&mut lines, |v| v["origin"] == "allowed").await;
    assert_eq!(mine["public"]["status"], 200, "{mine:#}");
    assert_eq!(mine["keyed"]["status"], 201, "{mine:#}");
    assert!(mine["keyed"]["location"]
        .as_str()
        .unwrap()
        .starts_with("/v1/incidents/"));
    assert_eq!(mine["keyed"]["etag"], "\"1\"");
    until(&mut lines, |v| v["stream"] == "open").await;

    // A notice reaches the EventSource of the unlisted origin's page.
    let first = api
        .declare(
            &comms,
            json!({"title": "Teams is down", "impact": "major", "message": "Investigating.",
                   "affected_services": [{"service_id": teams, "status": "major_outage"}]}),
        )
        .await;
    // The browser's own declaration may come first: it was not sealed yet when the
    // stream opened, so it was still to come.
    let first_id = first["id"].clone();
    let heard = until(&mut lines, |v| {
        v["type"] == "incident.declared" && v["subject"] == first_id
    })
    .await;
    let first_position: u64 = heard["id"].as_str().unwrap().parse().unwrap();

    // The server restarts. While the page is away, another process publishes: only a
    // reconnect that sends Last-Event-ID can get that notice, since a new stream starts
    // with the next one. The EventSource reconnects by itself, with Last-Event-ID, into a
    // server that is still preparing; it is held, not refused, and gets what it missed and
    // what follows, in order, once.
    drop(api);
    let elsewhere = Api::start(&db).await;
    let missed = elsewhere
        .declare(
            &comms,
            json!({"title": "Published while the page was away", "impact": "minor",
                   "message": "Investigating.", "affected_services": []}),
        )
        .await;
    let api = Api::on(start()).await;
    let second = api
        .declare(
            &comms,
            json!({"title": "Teams is slow", "impact": "minor", "message": "Investigating.",
                   "affected_services": [{"service_id": teams, "status": "degraded_performance"}]}),
        )
        .await;
    let mut heard_after = Vec::new();
    while heard_after.len() < 2 {
        let heard = until(&mut lines, |v| {
            assert!(
                !(v["type"] == "incident.declared" && v["subject"] == first_id),
                "a notice heard before the restart came again: {v:#}"
            );
            v["type"] == "incident.declared"
        })
        .await;
        heard_after.push(heard);
    }
    assert_eq!(heard_after[0]["subject"], missed["id"], "{heard_after:#?}");
    assert_eq!(heard_after[1]["subject"], second["id"], "{heard_after:#?}");
    let missed_position: u64 = heard_after[0]["id"].as_str().unwrap().parse().unwrap();
    let position: u64 = heard_after[1]["id"].as_str().unwrap().parse().unwrap();
    assert!(first_position < missed_position && missed_position < position);
    drop(elsewhere);

    let mut stdin = driver.stdin.take().unwrap();
    stdin.write_all(b"done\n").await.unwrap();
    until(&mut lines, |v| v["done"] == true).await;
    assert!(driver.wait().await.unwrap().success());
}
