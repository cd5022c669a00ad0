//! Auditors end to end: the history over the API and the CLI, its verification, its export
//! checked by an independent implementation, time travel, and signed checkpoints that catch
//! a rewritten past.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use eventstore::testing::TestDatabase;
use serde_json::{json, Value};

use crate::support::*;

fn incident(service_id: &str, title: &str) -> Value {
    json!({
        "title": title,
        "impact": "minor",
        "message": "We are investigating.",
        "affected_services": [{"service_id": service_id, "status": "degraded_performance"}],
    })
}

/// A superuser connection that can do what no crier role can (triggers off).
async fn forger(db: &TestDatabase) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute("SET session_replication_role = replica")
        .await
        .expect("replica role");
    client
}

/// Every event of the audit log, paged with `limit`.
async fn audit_log(api: &Api, key: &str, limit: usize) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = api
            .get(
                &format!("/v1/audit/events?after={after}&limit={limit}"),
                Some(key),
            )
            .await
            .expect(200);
        let batch = page["events"].as_array().expect("events").clone();
        if batch.is_empty() {
            assert_eq!(page["next_after"], after);
            return events;
        }
        after = page["next_after"].as_u64().expect("next_after");
        assert_eq!(batch.last().unwrap()["position"], after);
        events.extend(batch);
    }
}

/// Waits until every committed event is sealed; answers the head position.
async fn settled_head(api: &Api, key: &str) -> u64 {
    for _ in 0..200 {
        let report = api.get("/v1/audit/verify", Some(key)).await.expect(200);
        assert_eq!(report["ok"], true, "{report:#}");
        if report["unsealed"] == 0 {
            return report["checked"].as_u64().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("events stayed unsealed");
}

/// The export over HTTP; checks that it reaches the head it announces.
async fn http_export(api: &Api, key: &str, after: u64) -> String {
    let response = api
        .http
        .get(api.server.url(&format!("/v1/audit/export?after={after}")))
        .bearer_auth(key)
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-ndjson")
    );
    let head: u64 = response
        .headers()
        .get("crier-export-head")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Crier-Export-Head");
    let body = response.text().await.expect("body");
    let last = body
        .lines()
        .last()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["position"].clone());
    assert_eq!(
        last.and_then(|p| p.as_u64()).unwrap_or(after),
        head.max(after)
    );
    body
}

const PUBLIC_URL: &str = "https://status.contoso.example";

async fn cli_export(db: &TestDatabase, after: u64) -> String {
    let mut command = crier(&db.url);
    command
        .env("CRIER_PUBLIC_URL", PUBLIC_URL)
        .args(["export", "--after", &after.to_string()]);
    let out = output(command).await;
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

fn tools_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/verify_export.py")
}

/// Runs the independent Python verifier on an export; answers its exit code and output.
async fn independent_verification(export: &str, checkpoint: Option<&Path>) -> (i32, String) {
    independent_verification_with(export, checkpoint, None).await
}

async fn independent_verification_with(
    export: &str,
    checkpoint: Option<&Path>,
    history_key: Option<&Path>,
) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("crier-export-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("history.ndjson");
    std::fs::write(&file, export).unwrap();
    let mut command = std::process::Command::new("python3");
    command.arg(tools_script()).arg(&file);
    if let Some(checkpoint) = checkpoint {
        command.arg("--checkpoint").arg(checkpoint);
    }
    if let Some(key) = history_key {
        command.arg("--history-key").arg(key);
    }
    let out = output(command).await;
    std::fs::remove_dir_all(&dir).ok();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A line of the export checked as a CloudEvents 1.0 structured JSON event, and turned
/// into the audit listing's shape for comparison.
fn cloud_event_as_audit_event(line: &str) -> Value {
    let event: Value = serde_json::from_str(line).expect("a JSON object per line");
    let attributes = event.as_object().expect("object");
    assert_eq!(event["specversion"], "1.0");
    for required in ["id", "source", "type"] {
        assert!(
            attributes[required].as_str().is_some_and(|s| !s.is_empty()),
            "{required} in {line}"
        );
    }
    assert_eq!(event["datacontenttype"], "application/json");
    chrono::DateTime::parse_from_rfc3339(event["time"].as_str().unwrap()).expect("RFC 3339 time");
    for (name, value) in attributes {
        if name == "data" {
            continue;
        }
        // CloudEvents: attribute names are lower-case ASCII letters and digits; values are
        // strings or 32-bit integers here.
        assert!(
            !name.is_empty()
                && name.len() <= 20
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "attribute name {name}"
        );
        assert!(
            value.is_string() || value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            "{name} = {value}"
        );
    }
    let stream = event["subject"].as_str().unwrap();
    assert_eq!(
        event["source"],
        format!("{PUBLIC_URL}/v1/audit/streams/{stream}")
    );
    json!({
        "position": event["position"],
        "stream_id": stream,
        "stream_version": event["streamversion"],
        "event_id": event["id"],
        "type": event["type"],
        "schema_version": event["schemaversion"],
        "data": event["data"],
        "metadata": {
            "actor": event["actor"],
            "request_id": event.get("requestid").cloned().unwrap_or(Value::Null),
            "correlation_id": event.get("correlationid").cloned().unwrap_or(Value::Null),
            "causation_id": event.get("causationid").cloned().unwrap_or(Value::Null),
        },
        "recorded_at": event["time"],
        "prev_hash": event["prevhash"],
        "hash": event["hash"],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_pages_in_order_without_gaps_or_repeats_under_concurrent_writers() {
    let db = TestDatabase::create().await;
    let api = Arc::new(Api::start(&db).await);
    let auditor = api.key("auditor", None).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Microsoft Teams").await;

    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (api, publisher, service) = (api.clone(), publisher.clone(), service.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..8 {
                    let declared = api
                        .declare(&publisher, incident(&service, &format!("w{writer} #{n}")))
                        .await;
                    let id = declared["id"].as_str().unwrap().to_owned();
                    for status in ["identified", "resolved"] {
                        api.post(
                            &format!("/v1/incidents/{id}/updates"),
                            &publisher,
                            json!({"status": status, "message": status}),
                        )
                        .await
                        .expect(201);
                    }
                    ids.push(id);
                }
                ids
            })
        })
        .collect();

    // An auditor follows the log while they write, a few events at a time.
    let mut followed: Vec<Value> = Vec::new();
    let mut after = 0u64;
    let mut writing = true;
    let mut ids = Vec::new();
    loop {
        let page = api
            .get(
                &format!("/v1/audit/events?after={after}&limit=7"),
                Some(&auditor),
            )
            .await
            .expect(200);
        let events = page["events"].as_array().unwrap().clone();
        after = page["next_after"].as_u64().unwrap();
        let caught_up = events.is_empty();
        followed.extend(events);
        if writing && writers.iter().all(|w| w.is_finished()) {
            writing = false;
        } else if !writing && caught_up && settled_head(&api, &auditor).await == after {
            break;
        }
    }
    for writer in writers {
        ids.extend(writer.await.unwrap());
    }

    // Positions 1, 2, 3… once each, every link on the previous one, and exactly what one
    // listing of the whole log says now.
    let positions: Vec<u64> = followed
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (1..=positions.len() as u64).collect::<Vec<_>>());
    for pair in followed.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
    }
    let whole = audit_log(&api, &auditor, 500).await;
    assert_eq!(followed, whole);
    // Bootstrap key, two keys, a service, and 4 writers × 8 incidents × 3 events.
    assert_eq!(whole.len(), 1 + 2 + 1 + 4 * 8 * 3);
    let incident_event = whole
        .iter()
        .find(|e| e["type"] == "incident.declared")
        .unwrap();
    assert!(incident_event["metadata"]["actor"].is_string());
    assert!(incident_event["metadata"]["request_id"].is_string());

    // One stream: its events in stream order, paged by stream version.
    let stream = format!("incident-{}", ids[0]);
    let mut by_stream = Vec::new();
    let mut version = 0;
    loop {
        let page = api
            .get(
                &format!("/v1/audit/streams/{stream}/events?after={version}&limit=1"),
                Some(&auditor),
            )
            .await
            .expect(200);
        let events = page["events"].as_array().unwrap().clone();
        if events.is_empty() {
            break;
        }
        version = page["next_after"].as_u64().unwrap();
        by_stream.extend(events);
    }
    let expected: Vec<Value> = whole
        .iter()
        .filter(|e| e["stream_id"] == stream.as_str())
        .cloned()
        .collect();
    assert_eq!(by_stream, expected);
    assert_eq!(
        by_stream
            .iter()
            .map(|e| e["stream_version"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_unbound_auditors_and_admins_read_the_history_and_bad_parameters_are_400() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let auditor = api.key("auditor", None).await;
    for (key, status) in [
        (None, 401),
        (Some(api.key("reader", None).await), 403),
        (Some(api.key("publisher", None).await), 403),
        (Some(api.key("auditor", Some("contoso")).await), 403),
        (Some(api.key("admin", Some("contoso")).await), 403),
    ] {
        for path in [
            "/v1/audit/events",
            "/v1/audit/streams/service-x/events",
            "/v1/audit/verify",
            "/v1/audit/export",
        ] {
            api.get(path, key.as_deref()).await.problem(status);
        }
    }
    for key in [&auditor, ADMIN_SECRET] {
        api.get("/v1/audit/events", Some(key)).await.expect(200);
    }
    for query in [
        "limit=0",
        "limit=501",
        "after=-1",
        "after=x",
        "limit=ten",
        "after=9223372036854775808",
    ] {
        api.get(&format!("/v1/audit/events?{query}"), Some(&auditor))
            .await
            .problem(400);
        api.get(
            &format!("/v1/audit/streams/s/events?{query}"),
            Some(&auditor),
        )
        .await
        .problem(400);
    }
    api.get("/v1/audit/export?after=9223372036854775808", Some(&auditor))
        .await
        .problem(400);
    api.get("/v1/audit/streams/a%00b/events", Some(&auditor))
        .await
        .problem(400);
    api.get("/v1/audit/streams/nothing-here/events", Some(&auditor))
        .await
        .expect(200);
    // Nothing is signed without a key; writing to the history is not a thing.
    api.get("/v1/audit/checkpoint", None).await.problem(404);
    api.send(
        reqwest::Method::POST,
        "/v1/audit/events",
        Some(ADMIN_SECRET),
        &[],
        Some(&json!({})),
    )
    .await
    .problem(405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_is_cloudevents_equal_to_the_audit_listing_and_verifies_independently() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(
        &db,
        &[
            ("CRIER_WRITE_RATE_LIMIT", "0"),
            ("CRIER_PUBLIC_URL", PUBLIC_URL),
        ],
    )
    .await;
    let auditor = api.key("auditor", None).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Exchange Online").await;
    for n in 0..5 {
        let declared = api
            .declare(
                &publisher,
                incident(&service, &format!("Mail delays {n} ✉ \"quoted\"")),
            )
            .await;
        let id = declared["id"].as_str().unwrap();
        api.post(
            &format!("/v1/incidents/{id}/updates"),
            &publisher,
            json!({"status": "resolved", "message": "Mail flows again.\nRestart Outlook if needed.",
                   "client_action": {"kind": "restart_client", "message": RESTART}}),
        )
        .await
        .expect(201);
    }
    let head = settled_head(&api, &auditor).await;
    let listing = audit_log(&api, &auditor, 500).await;
    // The bootstrap key, two keys, the service, five incidents of two events.
    assert_eq!(head, 14);
    assert_eq!(listing.len() as u64, head);

    let over_http = http_export(&api, &auditor, 0).await;
    let from_cli = cli_export(&db, 0).await;
    assert_eq!(
        over_http, from_cli,
        "the API and the CLI export the same bytes"
    );
    assert!(over_http.ends_with('\n'));
    let exported: Vec<Value> = over_http.lines().map(cloud_event_as_audit_event).collect();
    assert_eq!(exported, listing);

    // Resuming after a position gives exactly the rest.
    let rest = http_export(&api, &auditor, 4).await;
    let rest: Vec<Value> = rest.lines().map(cloud_event_as_audit_event).collect();
    assert_eq!(rest, listing[4..].to_vec());
    assert_eq!(http_export(&api, &auditor, head).await, "");

    // An auditor's own implementation (Python, standard library only) recomputes every
    // link from the export and arrives at the head the server reports.
    let verified = api
        .get("/v1/audit/verify", Some(&auditor))
        .await
        .expect(200);
    let (code, said) = independent_verification(&over_http, None).await;
    assert_eq!(code, 0, "{said}");
    assert_eq!(
        said.trim(),
        format!(
            "ok: {head} events; head {head} {}",
            verified["head"]["hash"].as_str().unwrap()
        )
    );

    // A forged byte: the server and the independent verifier both name its position.
    forger(&db)
        .await
        .batch_execute(
            "UPDATE events SET data = jsonb_set(data, '{title}', '\"Nothing happened\"') \
              WHERE seq = (SELECT seq FROM log_links(5, 1))",
        )
        .await
        .expect("forge");
    let report = api
        .get("/v1/audit/verify", Some(&auditor))
        .await
        .expect(200);
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_position"], 6);
    assert_eq!(report["checked"], 5);
    assert_eq!(report["head"]["position"], 5);
    let (code, said) = independent_verification(&http_export(&api, &auditor, 0).await, None).await;
    assert_eq!(
        (code, said.trim()),
        (1, "BAD at position 6: the event does not give its hash")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_a_position_or_time_is_the_incident_after_exactly_the_events_up_to_it() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let auditor = api.key("auditor", None).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("SharePoint").await;
    let declared = api
        .declare(&publisher, incident(&service, "Slow page loads"))
        .await;
    let id = declared["id"].as_str().unwrap().to_owned();
    let mut answers = vec![declared];
    for (status, other) in [
        ("identified", true),
        ("monitoring", true),
        ("resolved", false),
    ] {
        if other {
            // Someone else's event between two of this incident's.
            api.declare(&publisher, incident(&service, "Another one"))
                .await;
        }
        api.post(
            &format!("/v1/incidents/{id}/updates"),
            &publisher,
            json!({"status": status, "message": status}),
        )
        .await
        .expect(201);
        answers.push(
            api.get(&format!("/v1/incidents/{id}"), None)
                .await
                .expect(200),
        );
    }
    settled_head(&api, &auditor).await;
    let stream = api
        .get(
            &format!("/v1/audit/streams/incident-{id}/events"),
            Some(&auditor),
        )
        .await
        .expect(200);
    let events = stream["events"].as_array().unwrap();
    assert_eq!(events.len(), answers.len());
    for (event, answer) in events.iter().zip(&answers) {
        let position = event["position"].as_u64().unwrap();
        let at_position = api
            .get(&format!("/v1/incidents/{id}?as_of={position}"), None)
            .await
            .expect(200);
        assert_eq!(&at_position, answer, "as_of={position}");
        // Just before it: the previous version (another stream's event sits there).
        let before = api
            .get(&format!("/v1/incidents/{id}?as_of={}", position - 1), None)
            .await;
        match event["stream_version"].as_u64().unwrap() {
            1 => {
                before.problem(404);
            }
            version => assert_eq!(before.expect(200)["version"], version - 1),
        }
        let time = event["recorded_at"].as_str().unwrap();
        let at_time = api
            .get(
                &format!("/v1/incidents/{id}?as_of={}", time.replace('+', "%2B")),
                None,
            )
            .await
            .expect(200);
        assert_eq!(&at_time, answer, "as_of={time}");
    }
    // As of a time the API showed, the answer holds what that time stamps: the incident
    // as of its `started_at`, and each update as of its own `created_at` (both a few
    // milliseconds before the database recorded them).
    let last = answers.last().unwrap();
    let started_at = last["started_at"].as_str().unwrap();
    let declared = api
        .get(
            &format!(
                "/v1/incidents/{id}?as_of={}",
                started_at.replace('+', "%2B")
            ),
            None,
        )
        .await
        .expect(200);
    assert_eq!(declared["version"], 1);
    for (n, update) in last["updates"].as_array().unwrap().iter().enumerate() {
        let created_at = update["created_at"].as_str().unwrap();
        let then = api
            .get(
                &format!(
                    "/v1/incidents/{id}?as_of={}",
                    created_at.replace('+', "%2B")
                ),
                None,
            )
            .await
            .expect(200);
        let shown = then["updates"].as_array().unwrap();
        assert_eq!(shown.len(), n + 1, "as_of={created_at}: {then:#}");
        assert_eq!(shown[n]["id"], update["id"]);
    }
}

/// Recomputes every content hash and link from the stored rows, as someone with write
/// access who rewrote an event would, so that the chain alone verifies again.
async fn recompute_the_whole_chain(client: &tokio_postgres::Client) {
    use eventstore::chain::{content_hash, link, LinkInput};
    let rows = client
        .query(
            "SELECT l.position, e.seq, e.stream_id, e.stream_version, e.event_id, e.event_type, \
                    e.schema_version, e.data, e.metadata, e.recorded_at \
               FROM log_links(0, 1000000) l JOIN events e ON e.seq = l.seq ORDER BY l.position",
            &[],
        )
        .await
        .unwrap();
    let mut prev = eventstore::Hash::GENESIS;
    // Element p (from 1) is the new link of position p; element p of `prevs`, the one before.
    let (mut prevs, mut hashes): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
    for row in rows {
        let content = content_hash(
            &row.get("event_id"),
            row.get("event_type"),
            row.get::<_, i32>("schema_version") as u32,
            &row.get::<_, Value>("data"),
            &row.get::<_, Value>("metadata"),
        );
        let hash = link(
            &prev,
            &LinkInput {
                position: row.get::<_, i64>("position") as u64,
                stream_id: row.get("stream_id"),
                stream_version: row.get::<_, i64>("stream_version") as u64,
                recorded_at: &row.get("recorded_at"),
                content_hash: &content,
            },
        );
        let seq: i64 = row.get("seq");
        client
            .execute(
                "UPDATE events SET content_hash = $2 WHERE seq = $1",
                &[&seq, &content.0.as_slice()],
            )
            .await
            .unwrap();
        prevs.push(prev.0.to_vec());
        hashes.push(hash.0.to_vec());
        prev = hash;
    }
    client
        .execute(
            "UPDATE log_seals SET prev_hash = ($1::bytea[])[first_position], \
                                  hashes = ($2::bytea[])[first_position:last_position]",
            &[&prevs, &hashes],
        )
        .await
        .unwrap();
}

async fn crier_verify(db: &TestDatabase, args: &[&str]) -> (Option<i32>, String) {
    let mut command = crier(&db.url);
    command.arg("verify").args(args);
    let out = output(command).await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Waits for the public checkpoint to reach `position`.
async fn checkpoint_at(api: &Api, position: u64) -> Value {
    for _ in 0..200 {
        let answer = api.get("/v1/audit/checkpoint", None).await;
        if answer.status == 200 && answer.body["position"].as_u64() >= Some(position) {
            return answer.body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no checkpoint at {position}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_checkpoint_proves_the_history_extends_it_and_catches_a_rewritten_past() {
    let db = TestDatabase::create().await;
    let dir = std::env::temp_dir().join(format!("crier-checkpoint-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("checkpoint.pem");
    let mut keygen = crier(&db.url);
    keygen
        .args(["checkpoint", "keygen", "--out"])
        .arg(&key_file);
    let out = output(keygen).await;
    assert!(out.status.success(), "{out:?}");
    let public_key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut api = Api::start_with(
        &db,
        &[
            ("CRIER_WRITE_RATE_LIMIT", "0"),
            ("CRIER_CHECKPOINT_KEY_FILE", key_file.to_str().unwrap()),
            ("CRIER_CHECKPOINT_INTERVAL", "1"),
        ],
    )
    .await;
    let auditor = api.key("auditor", None).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    for n in 0..3 {
        api.declare(&publisher, incident(&service, &format!("#{n}")))
            .await;
    }
    let head = settled_head(&api, &auditor).await;
    // The bootstrap key, two keys, the service, three incidents.
    assert_eq!(head, 7);
    let kept = checkpoint_at(&api, head).await;
    assert_eq!(kept["position"], head);
    assert_eq!(kept["public_key"], public_key.as_str());
    let kept_file = dir.join("kept.json");
    std::fs::write(&kept_file, kept.to_string()).unwrap();

    // The signature checks with ordinary tools: openssl, given the text and the raw key.
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    };
    let mut spki = hex::decode("302a300506032b6570032100").unwrap();
    spki.extend(b64(&public_key));
    std::fs::write(dir.join("public.der"), spki).unwrap();
    std::fs::write(dir.join("message"), kept["message"].as_str().unwrap()).unwrap();
    std::fs::write(
        dir.join("signature"),
        b64(kept["signature"].as_str().unwrap()),
    )
    .unwrap();
    let mut openssl = std::process::Command::new("openssl");
    openssl.current_dir(&dir).args([
        "pkeyutl",
        "-verify",
        "-pubin",
        "-keyform",
        "DER",
        "-inkey",
        "public.der",
        "-rawin",
        "-in",
        "message",
        "-sigfile",
        "signature",
    ]);
    let checked = output(openssl).await;
    assert!(checked.status.success(), "openssl: {checked:?}");
    assert_eq!(
        kept["message"],
        format!(
            "crier checkpoint v1\nposition {head}\nhash {}\nsigned_at {}\n",
            kept["hash"].as_str().unwrap(),
            kept["signed_at"].as_str().unwrap()
        )
    );

    // The history grows; the server signs the new head (verifying from its last
    // checkpoint), and the kept checkpoint still holds, by itself and with the key pinned.
    for n in 3..6 {
        api.declare(&publisher, incident(&service, &format!("#{n}")))
            .await;
    }
    let grown = settled_head(&api, &auditor).await;
    assert!(grown > head);
    assert_eq!(checkpoint_at(&api, grown).await["position"], grown);
    let kept_arg = kept_file.to_str().unwrap();
    let (code, said) = crier_verify(&db, &["--checkpoint", kept_arg]).await;
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("checkpoint ok"), "{said}");
    let (code, said) = crier_verify(
        &db,
        &["--checkpoint", kept_arg, "--public-key", &public_key],
    )
    .await;
    assert_eq!(code, Some(0), "{said}");
    let (_, other_key) = eventstore::checkpoint::generate_signing_key().unwrap();
    let other_key_file = dir.join("other.pem");
    std::fs::write(&other_key_file, other_key).unwrap();
    let other_public = {
        let key = eventstore::checkpoint::load_signing_key(&other_key_file).unwrap();
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes())
    };
    let (code, said) = crier_verify(
        &db,
        &["--checkpoint", kept_arg, "--public-key", &other_public],
    )
    .await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("not by the trusted key"), "{said}");
    let mut forged_checkpoint = kept.clone();
    forged_checkpoint["position"] = json!(head - 1);
    let forged_file = dir.join("forged.json");
    std::fs::write(&forged_file, forged_checkpoint.to_string()).unwrap();
    let (code, said) = crier_verify(&db, &["--checkpoint", forged_file.to_str().unwrap()]).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("signature does not match"), "{said}");

    // Someone with write access rewrites an early event and recomputes the whole chain:
    // the chain alone verifies again, but not against the kept checkpoint, neither in crier
    // nor in the independent verifier.
    api.server.terminate();
    let forger = forger(&db).await;
    forger
        .batch_execute(
            "UPDATE events SET data = jsonb_set(data, '{title}', '\"Nothing happened\"') \
              WHERE seq = (SELECT seq FROM log_links(2, 1))",
        )
        .await
        .unwrap();
    recompute_the_whole_chain(&forger).await;
    let (code, said) = crier_verify(&db, &[]).await;
    assert_eq!(
        code,
        Some(0),
        "the rewritten chain is consistent by itself: {said}"
    );
    let (code, said) = crier_verify(&db, &["--checkpoint", kept_arg]).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("was rewritten"), "{said}");
    let (code, said) = independent_verification(&cli_export(&db, 0).await, Some(&kept_file)).await;
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("not the link the checkpoint signed"),
        "{said}"
    );
    // Nor does the signer vouch for it: its last checkpoint no longer matches the chain.
    let mut sign = crier(&db.url);
    sign.args(["checkpoint", "sign", "--key"]).arg(&key_file);
    let signed = output(sign).await;
    assert_eq!(signed.status.code(), Some(1), "{signed:?}");

    // Cutting the end off: the remaining chain verifies, the checkpoint shows the loss.
    forger
        .batch_execute(&format!(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM log_links({head} - 1, 1000000)); \
             UPDATE log_seals SET transaction_ids = transaction_ids[:{head} - first_position], \
                                  seqs = seqs[:{head} - first_position], \
                                  hashes = hashes[:{head} - first_position] \
              WHERE first_position < {head} AND last_position >= {head}; \
             DELETE FROM log_seals WHERE first_position >= {head};"
        ))
        .await
        .unwrap();
    let (code, said) = crier_verify(&db, &[]).await;
    assert_eq!(code, Some(0), "{said}");
    let (code, said) = crier_verify(&db, &["--checkpoint", kept_arg, "--json"]).await;
    assert_eq!(code, Some(1), "{said}");
    let report: Value = serde_json::from_str(&said).unwrap();
    assert_eq!(report["ok"], false);
    assert!(report["problem"]
        .as_str()
        .unwrap()
        .contains("events were removed"));
    std::fs::remove_dir_all(&dir).ok();
}

/// Appends events straight to the store and seals them.
async fn append_all(store: &eventstore::EventStore, stream: &str, data: Vec<Value>) {
    use eventstore::{ExpectedVersion, Metadata, NewEvent};
    let events: Vec<NewEvent> = data
        .into_iter()
        .map(|d| NewEvent::new("test.event", d, Metadata::by("auditor-test")))
        .collect();
    store
        .append(stream, ExpectedVersion::Any, &events)
        .await
        .expect("append");
    store.seal_all(Duration::from_secs(10)).await.expect("seal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_independent_verifier_agrees_on_awkward_json() {
    let db = TestDatabase::create().await;
    let store = db.store();
    append_all(
        &store,
        "awkward-1",
        vec![
            json!({"float": 1.5, "tiny": 1e-7, "small": 0.000001, "big": 1e16, "huge": 1.7976931348623157e308,
                   "negative": -2.25, "zero": -0.0, "whole": 100.0, "max_int": 9007199254740991i64}),
            json!({"\u{1F600}": "astral key", "\u{FFFF}": "last BMP key", "é": "accented", "a": {"z": 1, "b": [true, null]}}),
            json!({"text": "quote \" backslash \\ newline \n tab \t bell \u{7} unicode \u{2028} ☃ 😀"}),
            json!([1, "two", {"three": 3.0}]),
        ],
    )
    .await;
    let report = store.verify().await.unwrap();
    assert!(report.ok, "{report:?}");
    let head = report.head.unwrap();
    let (code, said) = independent_verification(&cli_export(&db, 0).await, None).await;
    assert_eq!(code, 0, "{said}");
    assert_eq!(
        said.trim(),
        format!(
            "ok: {} events; head {} {}",
            head.position, head.position, head.hash
        )
    );
    // An export that starts later builds on the link its first line names.
    let (code, said) = independent_verification(&cli_export(&db, 2).await, None).await;
    assert_eq!(code, 0, "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signer_trusts_no_stored_checkpoint_and_never_signs_a_changed_past() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let dir = std::env::temp_dir().join(format!("crier-signer-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("key.pem");
    let (key, pem) = eventstore::checkpoint::generate_signing_key().unwrap();
    std::fs::write(&key_file, pem).unwrap();
    let sign = || {
        let mut command = crier(&db.url);
        command.args(["checkpoint", "sign", "--key"]).arg(&key_file);
        output(command)
    };
    append_all(&store, "s", (0..5).map(|n| json!({"n": n})).collect()).await;
    let signed = sign().await;
    assert!(signed.status.success(), "{signed:?}");
    let first: Value = serde_json::from_slice(&signed.stdout).unwrap();
    assert_eq!(first["position"], 5);

    // Someone plants a checkpoint row for this key at the next head, with a signature that
    // is not one: the signer does not take it for its own, and nothing serves it.
    append_all(&store, "s", (5..8).map(|n| json!({"n": n})).collect()).await;
    let head = store.log_head().await.unwrap().unwrap();
    let forger = forger(&db).await;
    forger
        .execute(
            "INSERT INTO chain_checkpoints (position, hash, signed_at, public_key, signature) \
             VALUES ($1, $2, now(), $3, $4)",
            &[
                &(head.0 as i64),
                &head.1 .0.as_slice(),
                &key.verifying_key().to_bytes().as_slice(),
                &[0u8; 64].as_slice(),
            ],
        )
        .await
        .unwrap();
    let refused = sign().await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("a forged row"),
        "{refused:?}"
    );
    let served = store
        .latest_checkpoint(Some(&key.verifying_key()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(served.position, 5, "the forged row is never served");
    assert_eq!(
        store
            .latest_checkpoint(None)
            .await
            .unwrap()
            .unwrap()
            .position,
        5
    );

    // An event before the signed position changed without re-linking: a signing (which
    // recomputes everything, trusting no stored checkpoint) refuses.
    append_all(&store, "s", vec![json!({"n": 8})]).await;
    forger
        .batch_execute(
            "UPDATE events SET data = '{\"n\": 99}' \
              WHERE seq = (SELECT seq FROM log_links(1, 1))",
        )
        .await
        .unwrap();
    let refused = sign().await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stdout).contains("TAMPERED: first bad position 2"));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_added_by_plain_sql_is_reported_at_its_position_given_the_history_key() {
    let db = TestDatabase::create().await;
    let dir = std::env::temp_dir().join(format!("crier-history-key-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("history.key");
    // History written before any key was set.
    let service = {
        let api = Api::start(&db).await;
        api.service("Microsoft Teams").await
    };
    let mut keygen = crier(&db.url);
    keygen.args(["history", "keygen", "--out"]).arg(&key_file);
    let made = output(keygen).await;
    assert!(made.status.success(), "{made:?}");
    let key_id = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    assert_eq!(key_id.len(), 16);
    let key = key_file.to_str().unwrap();
    let api = Api::start_with(
        &db,
        &[
            ("CRIER_WRITE_RATE_LIMIT", "0"),
            ("CRIER_HISTORY_KEY_FILE", key),
        ],
    )
    .await;
    let comms = api.key("publisher", None).await;
    let declared = api
        .declare(&comms, incident(&service, "Users cannot sign in to Teams"))
        .await;
    let id = declared["id"].as_str().unwrap();
    let before = settled_head(&api, ADMIN_SECRET).await;
    let clean = api
        .get("/v1/audit/verify", Some(ADMIN_SECRET))
        .await
        .expect(200);
    assert_eq!(clean["ok"], true, "{clean:#}");
    let unauthenticated = clean["unauthenticated"].as_u64().unwrap();
    assert!(
        unauthenticated >= 2,
        "the key and the service came first: {clean:#}"
    );
    assert_eq!(
        clean["authenticated"].as_u64().unwrap() + unauthenticated,
        before
    );

    // The attack: someone with the database's credentials (no trigger bypassed) adds a
    // "resolved" update with its content hash computed as documented.
    let (attacker, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let event_id = uuid::Uuid::new_v4();
    let data = json!({"update_id": uuid::Uuid::new_v4(), "status": "resolved",
        "message": "Fixed.", "impact": null, "affected_services": null, "client_action": null,
        "author": "comms team", "at": "2026-12-01T10:00:00Z"});
    let metadata = json!({"actor": "system", "request_id": null, "correlation_id": null,
        "causation_id": null});
    let content_hash =
        eventstore::chain::content_hash(&event_id, "incident.update_posted", 1, &data, &metadata);
    attacker
        .execute(
            "INSERT INTO events (stream_id, stream_version, event_id, event_type, \
                                 schema_version, data, metadata, content_hash) \
             SELECT $1, max(stream_version) + 1, $2, 'incident.update_posted', 1, $3, $4, $5 \
               FROM events WHERE stream_id = $1",
            &[
                &format!("incident-{id}"),
                &event_id,
                &data,
                &metadata,
                &content_hash.0.as_slice(),
            ],
        )
        .await
        .unwrap();
    let forged_at = before + 1;
    // Sealed like any event, so the chain alone says nothing is wrong.
    let mut report = Value::Null;
    for _ in 0..100 {
        report = api
            .get("/v1/audit/verify", Some(ADMIN_SECRET))
            .await
            .expect(200);
        if report["checked"].as_u64() == Some(before) && report["ok"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(report["ok"], false, "{report:#}");
    assert_eq!(report["first_bad_position"], forged_at, "{report:#}");
    assert!(
        report["problem"]
            .as_str()
            .unwrap()
            .contains("not authenticated"),
        "{report:#}"
    );
    let (code, said) = crier_verify(&db, &["--history-key-file", key]).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains(&format!("first bad position {forged_at}")),
        "{said}"
    );
    let (code, said) = crier_verify(&db, &[]).await;
    assert_eq!(
        code,
        Some(0),
        "without the key the chain alone holds: {said}"
    );
    let export = cli_export(&db, 0).await;
    let (code, said) = independent_verification_with(&export, None, Some(&key_file)).await;
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains(&format!("BAD at position {forged_at}")),
        "{said}"
    );
    let (code, said) = independent_verification(&export, None).await;
    assert_eq!(code, 0, "{said}");
    std::fs::remove_dir_all(&dir).ok();
}
