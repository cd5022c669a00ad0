//! The `crier` binary as a user runs it, against a real PostgreSQL.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use eventstore::testing::{whole_log, OutageProxy, TestDatabase};
use eventstore::{EventStore, ExpectedVersion, Metadata, NewEvent};
use projections::testing::{read_model_snapshot, Shape};
use projections::{Builder, BuilderOptions};
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_a_missing_database_and_processes_racing_to_migrate_are_safe() {
    let db = TestDatabase::reserve();
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let mut command = crier(&db.url);
            command.arg("migrate");
            tokio::spawn(output(command))
        })
        .collect();
    for racer in racers {
        let out = racer.await.expect("join");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("the database exists");
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT version) FROM refinery_schema_history",
            &[],
        )
        .await
        .expect("history");
    let (applied, distinct): (i64, i64) = (row.get(0), row.get(1));
    assert!(applied >= 1);
    assert_eq!(applied, distinct, "a migration was applied twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_clean_history_and_names_the_first_forged_position() {
    let db = TestDatabase::create().await;
    let store = db.store();
    for n in 1..=6 {
        let e = NewEvent::new("e", json!({ "n": n }), Metadata::by("t"));
        store
            .append("s", ExpectedVersion::Any, &[e])
            .await
            .expect("append");
    }
    store.seal_all(Duration::from_secs(10)).await.expect("seal");

    let mut command = crier(&db.url);
    command.arg("verify");
    let out = output(command).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("ok: 6 events checked"), "{stdout}");

    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(
            "SET session_replication_role = replica; \
             UPDATE events SET data = '{\"n\": 33}' WHERE seq = (SELECT seq FROM log_links(2, 1))",
        )
        .await
        .expect("forge");

    let mut command = crier(&db.url);
    command.args(["verify", "--json"]);
    let out = output(command).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify must fail on a forged row"
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["ok"], json!(false));
    assert_eq!(report["first_bad_position"], json!(3));
    assert_eq!(report["checked"], json!(2));
    assert_eq!(report["head"]["position"], json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_health_readiness_and_metrics_and_stops_cleanly_on_sigterm() {
    let db = TestDatabase::reserve();
    let mut server = Server::start(&db.url);
    let client = reqwest::Client::new();

    assert_alive(&client, &server).await;
    // Serve created and migrated the database on its own.
    wait_for_status(&client, &server.url("/readyz"), 200).await;

    // Events appended by another process are sealed by this server's sealer.
    let store = EventStore::connect(db.config()).expect("connect");
    let e = NewEvent::new("e", json!({}), Metadata::by("t"));
    store
        .append("s", ExpectedVersion::Any, &[e])
        .await
        .expect("append");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.log_head().await.expect("head").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server's sealer never sealed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("body");
    for name in [
        "crier_events_sealed_total",
        "crier_db_pool_connections",
        "crier_log_head_position",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }

    let missing = client
        .get(server.url("/no/such/route"))
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"].to_str().expect("ascii"),
        "application/problem+json"
    );
    let problem: Value = missing.json().await.expect("problem json");
    assert_eq!(problem["status"], json!(404));

    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM must end with exit 0, got {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_each_request_once_within_moments_and_the_last_ones_before_it_exits() {
    let db = TestDatabase::create().await;
    let log = std::env::temp_dir().join(format!("crier-access-{}.log", uuid::Uuid::new_v4()));
    let mut server = Server::start_logging_to(crier(&db.url), &log);
    let client = reqwest::Client::new();
    wait_for_status(&client, &server.url("/readyz"), 200).await;
    let access_lines = |request_id: &str| -> Vec<Value> {
        let text = std::fs::read_to_string(&log).expect("read the log");
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| {
                line["target"] == "crier::access" && line["span"]["request_id"] == request_id
            })
            .collect()
    };
    let get = |path: &str, request_id: &str| {
        client
            .get(server.url(path))
            .header("x-request-id", request_id)
            .send()
    };

    // Access lines are gathered and written together, but none waits for more requests.
    assert_eq!(
        get("/healthz", "access-soon").await.expect("get").status(),
        200
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let soon = loop {
        let lines = access_lines("access-soon");
        if !lines.is_empty() || tokio::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(soon.len(), 1, "{soon:?}");
    assert_eq!(soon[0]["status"], 200);
    assert_eq!(soon[0]["span"]["method"], "GET");
    assert_eq!(soon[0]["span"]["path"], "/healthz");

    // Nor is the line of a request answered just before SIGTERM lost. (Stopping takes longer
    // than a flush period, so the flushing thread may write it before the guard that writes
    // the rest at exit: telemetry's unit tests check the guard.)
    let last = get("/no/such/route", "access-last").await.expect("get");
    assert_eq!(last.status(), 404);
    assert!(server.terminate().success());
    let last = access_lines("access-last");
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0]["status"], 404);
    std::fs::remove_file(&log).expect("remove the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stays_alive_through_a_database_outage_and_becomes_ready_again_by_itself() {
    let db = TestDatabase::create().await;
    let proxy = OutageProxy::start().await;
    let mut server = Server::start(&proxy.url(&db));
    let client = reqwest::Client::new();
    wait_for_status(&client, &server.url("/readyz"), 200).await;

    proxy.cut();
    let unready = wait_for_status(&client, &server.url("/readyz"), 503).await;
    assert!(unready.headers().contains_key("retry-after"));
    assert_alive(&client, &server).await;

    proxy.restore();
    wait_for_status(&client, &server.url("/readyz"), 200).await;
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_while_the_database_is_down_and_migrates_once_it_is_up() {
    let db = TestDatabase::reserve();
    let proxy = OutageProxy::start().await;
    proxy.cut();
    let server = Server::start(&proxy.url(&db));
    let client = reqwest::Client::new();
    assert_alive(&client, &server).await;
    wait_for_status(&client, &server.url("/readyz"), 503).await;
    // Until the database is prepared, what would read it is refused plainly, and a request
    // over its bounds is still refused for that first. (Driven without `Api::on`, which
    // waits for readiness.)
    let mut api = Api {
        server,
        http: client,
    };
    let early = api.get("/api/v2/summary.json", None).await;
    assert!(early.header("retry-after").is_some());
    assert!(early.header("x-request-id").is_some());
    let problem = early.problem(503);
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("preparing its database")),
        "{problem}"
    );
    let padding = "p".repeat(20 * 1024);
    api.send(
        Method::GET,
        "/api/v2/summary.json",
        None,
        &[("x-padding", &padding)],
        None,
    )
    .await
    .problem(431);

    proxy.restore();
    wait_for_status(&api.http, &api.server.url("/readyz"), 200).await;
    api.get("/api/v2/summary.json", None).await.expect(200);
    assert!(api.server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_on_one_database_seal_every_event_once_into_one_chain() {
    let db = TestDatabase::create().await;
    let mut first = Server::start(&db.url);
    let mut second = Server::start(&db.url);
    let client = reqwest::Client::new();
    wait_for_status(&client, &first.url("/readyz"), 200).await;
    wait_for_status(&client, &second.url("/readyz"), 200).await;

    // Writers outside both servers: only the servers' sealers give positions.
    let store = EventStore::connect(db.config()).expect("connect");
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..60u64 {
                    let e =
                        NewEvent::new("w", json!({ "writer": writer, "n": n }), Metadata::by("t"));
                    ids.push(e.event_id);
                    store
                        .append(&format!("w{writer}"), ExpectedVersion::Exact(n), &[e])
                        .await
                        .expect("append");
                }
                ids
            })
        })
        .collect();
    let mut written = std::collections::HashSet::new();
    for writer in writers {
        written.extend(writer.await.expect("writer"));
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let head = store.log_head().await.expect("head").map_or(0, |(p, _)| p);
        if head as usize >= written.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sealed only {head} of {}",
            written.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logged = whole_log(&store).await;
    let ids: Vec<_> = logged.iter().map(|e| e.event.event_id).collect();
    assert_eq!(ids.len(), written.len(), "each event sealed exactly once");
    assert_eq!(
        ids.into_iter().collect::<std::collections::HashSet<_>>(),
        written
    );
    let report = store.verify().await.expect("verify");
    assert!(report.ok, "{report:?}");
    assert!(first.terminate().success());
    assert!(second.terminate().success());
}

/// A history of about 5,000 events, appended directly, with its live read models built.
async fn seeded_read_models(db: &TestDatabase) -> EventStore {
    let shape = Shape {
        services: 20,
        incidents: 700,
        updates_per_incident: 5,
        maintenances: 40,
    };
    seeded_with(db, shape).await;
    EventStore::connect(db.config()).expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_killed_mid_way_resumes_and_ends_with_exactly_the_live_read_models() {
    let db = TestDatabase::create().await;
    let store = seeded_read_models(&db).await;
    let live = read_model_snapshot(&store).await;

    let mut child = crier(&db.url)
        .args(["replay", "--batch-size", "25"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start crier replay");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut reached = 0;
    for line in lines {
        let line = line.expect("read");
        if let Some(position) = line.strip_prefix("rebuilt up to position ") {
            reached = position.parse::<u64>().expect("position");
            if reached >= 500 {
                break;
            }
        }
    }
    assert!(reached >= 500, "the replay ended before it could be killed");
    child.kill().expect("kill -9");
    child.wait().expect("reap");

    let mut command = crier(&db.url);
    command.args(["replay", "--batch-size", "1000"]);
    let out = output(command).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let resumed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("resumed an interrupted replay at position "))
        .unwrap_or_else(|| panic!("did not resume: {stdout}"))
        .parse()
        .expect("position");
    assert!(
        resumed >= reached,
        "resumed at {resumed}, killed after {reached}"
    );
    assert!(stdout.contains("events/s"), "{stdout}");
    assert_eq!(read_model_snapshot(&store).await, live);
    let client = store.pool().get().await.expect("connect");
    let leftover = client
        .query_one("SELECT to_regnamespace('crier_rebuild') IS NULL", &[])
        .await
        .expect("query");
    assert!(
        leftover.get::<_, bool>(0),
        "the rebuild schema is dropped after the swap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_on_a_pool_too_small_for_it_is_refused_saying_what_to_raise() {
    let db = TestDatabase::create().await;
    for rebuild in [&["replay"][..], &["verify", "--read-models"]] {
        let mut command = crier(&db.url);
        command.args(["--db-pool-size", "1"]).args(rebuild);
        let refused = output(command).await;
        let said = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{rebuild:?}: {said}");
        // Not the pool's timeout: the reason, and what to raise to what.
        assert!(
            said.contains("writes on 2 database connections at once"),
            "{said}"
        );
        assert!(said.contains("--db-pool-size"), "{said}");
    }
    // Two are enough.
    let mut command = crier(&db.url);
    command.args(["--db-pool-size", "2", "replay"]);
    let replayed = output(command).await;
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_folds_events_that_another_writer_appended_into_the_read_models() {
    let db = TestDatabase::create().await;
    let server = Server::start(&db.url);
    let client = reqwest::Client::new();
    wait_for_status(&client, &server.url("/readyz"), 200).await;
    let store = EventStore::connect(db.config()).expect("connect");
    let shape = Shape {
        services: 3,
        incidents: 30,
        updates_per_incident: 3,
        maintenances: 3,
    };
    projections::testing::append_directly(&store, shape).await;
    let expected = {
        let reference = TestDatabase::create().await;
        seeded_with(&reference, shape).await
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while read_model_snapshot(&store).await != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server's builder did not fold the events"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The read models that `shape`'s history gives when built directly.
async fn seeded_with(
    db: &TestDatabase,
    shape: Shape,
) -> std::collections::BTreeMap<&'static str, Vec<String>> {
    let store = EventStore::connect(db.config()).expect("connect");
    projections::testing::append_directly(&store, shape).await;
    store.seal_all(Duration::from_secs(20)).await.expect("seal");
    Builder::new(&store, BuilderOptions::default())
        .catch_up()
        .await
        .expect("build");
    read_model_snapshot(&store).await
}

async fn key_rows(store: &EventStore) -> Vec<(String, String, Option<String>, bool)> {
    let client = store.pool().get().await.expect("connect");
    client
        .query(
            "SELECT v.secret_sha256, k.role, k.tenant, k.revoked \
               FROM rm_api_keys k JOIN api_key_verifiers v ON v.key_id = k.id ORDER BY k.id",
            &[],
        )
        .await
        .expect("keys")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_prints_the_secret_once_and_stores_only_its_hash() {
    let db = TestDatabase::create().await;
    let mut command = crier(&db.url);
    command.args([
        "keys", "create", "--role", "reader", "--tenant", "Contoso", "--name", "ops",
    ]);
    let out = output(command).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let secret = printed["key"].as_str().expect("key").to_owned();
    assert!(secret.starts_with("crier_"), "{secret}");
    assert_eq!(
        (&printed["role"], &printed["tenant"], &printed["name"]),
        (&json!("reader"), &json!("contoso"), &json!("ops"))
    );

    let store = EventStore::connect(db.config()).expect("connect");
    let hash = projections::access::secret_sha256(&secret);
    assert_eq!(
        key_rows(&store).await,
        vec![(hash, "reader".into(), Some("contoso".into()), false)]
    );
    // The secret is nowhere in the history.
    let log = whole_log(&store).await;
    assert_eq!(log.len(), 1, "sealed before the command exits");
    for logged in log {
        let stored = format!("{} {:?}", logged.event.data, logged.event.metadata);
        assert!(!stored.contains(&secret[6..]), "secret stored in {stored}");
    }

    let mut bad = crier(&db.url);
    bad.args(["keys", "create", "--role", "superuser"]);
    assert_eq!(output(bad).await.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_with_one_bootstrap_secret_make_exactly_one_admin_key() {
    let db = TestDatabase::create().await;
    let secret = "bootstrap-Secret-for-tests-0123456789";
    let start = || {
        let mut command = crier(&db.url);
        command.env("CRIER_BOOTSTRAP_ADMIN_KEY", secret);
        Server::start_with(command)
    };
    let (first, second) = (start(), start());
    let client = reqwest::Client::new();
    wait_for_status(&client, &first.url("/readyz"), 200).await;
    wait_for_status(&client, &second.url("/readyz"), 200).await;
    // Ready means the key exists: a script may use it at once.
    let store = EventStore::connect(db.config()).expect("connect");
    let hash = projections::access::secret_sha256(secret);
    assert_eq!(key_rows(&store).await.len(), 1);
    drop((first, second));
    // A restart finds it and adds nothing.
    let third = start();
    wait_for_status(&client, &third.url("/readyz"), 200).await;
    assert_eq!(
        key_rows(&store).await,
        vec![(hash.clone(), "admin".into(), None, false)]
    );
    // Nothing in the history could let the secret be guessed offline: no digest of it, and
    // the key's id is random, not derived from it.
    let client = store.pool().get().await.expect("connect");
    let history: Vec<String> = client
        .query(
            "SELECT stream_id || data::text || metadata::text FROM events",
            &[],
        )
        .await
        .expect("events")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(!history.is_empty());
    assert!(
        history
            .iter()
            .all(|e| !e.contains(&hash) && !e.contains(secret)),
        "{history:?}"
    );
    drop(third);
    let other_db = TestDatabase::create().await;
    let mut elsewhere = crier(&other_db.url);
    elsewhere.env("CRIER_BOOTSTRAP_ADMIN_KEY", secret);
    let elsewhere = Server::start_with(elsewhere);
    wait_for_status(&reqwest::Client::new(), &elsewhere.url("/readyz"), 200).await;
    let ids = |db: &TestDatabase| {
        let config = db.config();
        async move {
            let store = EventStore::connect(config).expect("connect");
            let client = store.pool().get().await.expect("connect");
            client
                .query_one("SELECT id FROM rm_api_keys", &[])
                .await
                .expect("one key")
                .get::<_, uuid::Uuid>(0)
        }
    };
    assert_ne!(
        ids(&db).await,
        ids(&other_db).await,
        "the id depends on the secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_guessable_bootstrap_secret_at_start_naming_the_rule() {
    let db = TestDatabase::create().await;
    let mut command = crier(&db.url);
    command
        .env("CRIER_BOOTSTRAP_ADMIN_KEY", "change-me-to-a-long-secret")
        .args(["serve", "--listen", "127.0.0.1:0"]);
    let refused = output(command).await;
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("CRIER_BOOTSTRAP_ADMIN_KEY"), "{said}");
    assert!(said.contains("at least 32 characters"), "{said}");
    assert!(said.contains("openssl rand -base64 32"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_read_models_names_a_row_changed_by_sql() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let service = api.service("Microsoft Teams").await;
    let comms = api.key("publisher", None).await;
    let declared = api
        .declare(
            &comms,
            json!({"title": "Users cannot sign in to Teams", "impact": "major",
                   "message": "We are investigating.",
                   "affected_services": [{"service_id": service, "status": "major_outage"}]}),
        )
        .await;
    let id = declared["id"].as_str().unwrap().to_owned();
    let verify = || {
        let mut command = crier(&db.url);
        command.args(["verify", "--read-models"]);
        output(command)
    };
    let clean = verify().await;
    let said = String::from_utf8_lossy(&clean.stdout).into_owned();
    assert_eq!(clean.status.code(), Some(0), "{said}");
    assert!(said.contains("read models ok"), "{said}");

    // Someone with the database's credentials rewrites what readers see.
    let store = EventStore::connect(db.config()).expect("connect");
    store
        .pool()
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE rm_incidents SET state = json_build_object('title', 'All is well') \
              WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    let found = verify().await;
    let said = String::from_utf8_lossy(&found.stdout).into_owned();
    assert_eq!(found.status.code(), Some(1), "{said}");
    assert!(said.contains("READ MODELS DIFFER: rm_incidents"), "{said}");
    assert!(said.contains(&id), "names the incident: {said}");
    drop(api);
}
