//! Faults under load, against the real binary: `kill -9` of `crier serve` while 8 clients
//! write, and PostgreSQL going away while they write. Clients behave as docs/API.md asks:
//! each write carries an Idempotency-Key and is retried with it until it is acknowledged.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use eventstore::testing::{OutageProxy, TestDatabase};
use eventstore::EventStore;
use projections::testing::read_model_snapshot;
use serde_json::{json, Value};

use crate::support::*;

const CLIENTS: usize = 8;
const UPDATES_PER_CLIENT: usize = 12;

/// Where the clients send their writes: a server that may be killed and replaced.
type Target = Arc<RwLock<String>>;

/// What one client had acknowledged, and every status it was answered.
#[derive(Default)]
struct Outcome {
    incident: String,
    acknowledged: Vec<String>,
    statuses: Vec<u16>,
}

fn message(client: usize, n: usize) -> String {
    format!("Client {client}, update {n}.")
}

/// Sends `body` to `path` until it is acknowledged (2xx), with the same Idempotency-Key
/// every time, recording every status seen (0: no answer at all).
async fn until_acknowledged(
    http: &reqwest::Client,
    target: &Target,
    path: &str,
    key: &str,
    idempotency_key: &str,
    body: &Value,
    statuses: &mut Vec<u16>,
) -> Value {
    loop {
        let base = target.read().expect("target").clone();
        let answer = http
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .header("Idempotency-Key", idempotency_key)
            .json(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match answer {
            Ok(answer) => {
                let status = answer.status().as_u16();
                statuses.push(status);
                if status == 503 {
                    assert!(answer.headers().contains_key("retry-after"));
                }
                if answer.status().is_success() {
                    return answer.json().await.expect("JSON answer");
                }
            }
            Err(_) => statuses.push(0),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One client: declares its incident, then posts its updates one after another, counting
/// each acknowledged update in `acknowledged`.
async fn client(
    n: usize,
    target: Target,
    key: String,
    service: String,
    acknowledged: Arc<AtomicUsize>,
) -> Outcome {
    let http = reqwest::Client::new();
    let mut outcome = Outcome::default();
    let declaration = json!({
        "title": format!("Outage {n}"), "impact": "major", "message": "Investigating.",
        "affected_services": [{"service_id": service, "status": "major_outage"}],
    });
    let declared = until_acknowledged(
        &http,
        &target,
        "/v1/incidents",
        &key,
        &format!("declare-{n}"),
        &declaration,
        &mut outcome.statuses,
    )
    .await;
    outcome.incident = declared["id"].as_str().expect("id").to_owned();
    for update in 0..UPDATES_PER_CLIENT {
        let status = if update % 2 == 0 {
            "identified"
        } else {
            "monitoring"
        };
        until_acknowledged(
            &http,
            &target,
            &format!("/v1/incidents/{}/updates", outcome.incident),
            &key,
            &format!("update-{n}-{update}"),
            &json!({"status": status, "message": message(n, update)}),
            &mut outcome.statuses,
        )
        .await;
        outcome.acknowledged.push(message(n, update));
        acknowledged.fetch_add(1, Ordering::SeqCst);
    }
    outcome
}

/// The clients, and how many updates they have had acknowledged so far.
fn start_clients(
    target: &Target,
    key: &str,
    service: &str,
) -> (Vec<tokio::task::JoinHandle<Outcome>>, Arc<AtomicUsize>) {
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let clients = (0..CLIENTS)
        .map(|n| {
            tokio::spawn(client(
                n,
                target.clone(),
                key.to_owned(),
                service.to_owned(),
                acknowledged.clone(),
            ))
        })
        .collect();
    (clients, acknowledged)
}

/// Waits until a third of all updates are acknowledged: a fault injected then finds writes
/// in flight and two thirds still to come. (Counted by the clients rather than read from
/// the log, whose head trails the acknowledgements by the sealer's delay: with the head,
/// the writes could all be over before it got there.)
async fn a_third_acknowledged(acknowledged: &AtomicUsize) {
    while acknowledged.load(Ordering::SeqCst) < CLIENTS * UPDATES_PER_CLIENT / 3 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Every client's acknowledged updates are in its incident's timeline exactly once, in
/// the order they were sent, after the declaration and nothing else.
async fn assert_every_acknowledged_write_once(api: &Api, outcomes: &[Outcome]) {
    for outcome in outcomes {
        let incident = api
            .get(&format!("/v1/incidents/{}", outcome.incident), None)
            .await
            .expect(200);
        let messages: Vec<&str> = incident["updates"]
            .as_array()
            .expect("updates")
            .iter()
            .filter_map(|u| u["message"].as_str())
            .collect();
        let mut expected = vec!["Investigating."];
        expected.extend(outcome.acknowledged.iter().map(String::as_str));
        assert_eq!(messages, expected, "incident {}", outcome.incident);
    }
}

/// A subscriber that follows `/v1/stream` through the target, reconnecting with
/// Last-Event-ID whenever its connection breaks, and keeps every message it got.
fn follow(target: Target) -> (Arc<Mutex<Vec<Message>>>, tokio::task::JoinHandle<()>) {
    let received = Arc::new(Mutex::new(Vec::<Message>::new()));
    let kept = received.clone();
    let task = tokio::spawn(async move {
        let mut last = Some(0);
        loop {
            let base = target.read().expect("target").clone();
            let Some(mut stream) = SseClient::try_open(&base, "", None, last).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            while let Some(message) = stream.next(Duration::from_secs(30)).await {
                last = Some(message.id);
                kept.lock().expect("messages").push(message);
            }
        }
    });
    (received, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_write_load_loses_no_acknowledged_write_repeats_none_and_streams_resume() {
    let db = TestDatabase::create().await;
    let settings = [
        ("CRIER_WRITE_RATE_LIMIT", "0"),
        ("CRIER_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("CRIER_WEBHOOK_RETRY_BASE_MS", "200"),
    ];
    let api = Api::start_with(&db, &settings).await;
    let receiver = Receiver::start(&[]);
    let hook = api
        .post("/v1/webhooks", ADMIN_SECRET, json!({"url": receiver.url}))
        .await
        .expect(201);
    receiver
        .set_secret(hook["secret"].as_str().expect("secret"))
        .await;
    let key = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    let target: Target = Arc::new(RwLock::new(api.server.base.clone()));
    let (streamed, follower) = follow(target.clone());

    let (clients, acknowledged) = start_clients(&target, &key, &service);
    // Kill mid-way: once about a third of the updates are in.
    a_third_acknowledged(&acknowledged).await;
    let store = EventStore::connect(db.config()).expect("connect");
    let mut killed = api.server;
    killed.child.kill().expect("kill -9");
    killed.child.wait().expect("reap");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restarted = Api::on(serve(&db.url, &settings)).await;
    *target.write().expect("target") = restarted.server.base.clone();

    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.push(client.await.expect("client"));
    }
    assert!(
        outcomes.iter().any(|o| o.statuses.contains(&0)),
        "no write was cut off by the kill"
    );
    assert_every_acknowledged_write_once(&restarted, &outcomes).await;

    // The subscriber, reconnecting across the kill, got every notice once, in order.
    let notices = 1 + CLIENTS * (1 + UPDATES_PER_CLIENT); // the service, then the incidents
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while streamed.lock().expect("messages").len() < notices {
        assert!(tokio::time::Instant::now() < deadline, "the stream stalled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    follower.abort();
    let streamed = streamed.lock().expect("messages").clone();
    assert_eq!(streamed.len(), notices, "no notice repeated");
    assert!(
        streamed.windows(2).all(|w| w[0].id < w[1].id),
        "in log order"
    );
    let mut per_incident: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for message in &streamed {
        if message.event.starts_with("incident.") {
            let updates = message.data["data"]["updates"].as_array().expect("updates");
            let newest = updates.last().expect("an update")["message"]
                .as_str()
                .unwrap_or("");
            per_incident
                .entry(message.data["data"]["id"].as_str().expect("id").to_owned())
                .or_default()
                .push(newest.to_owned());
        }
    }
    for outcome in &outcomes {
        let mut expected = vec!["Investigating.".to_owned()];
        expected.extend(outcome.acknowledged.iter().cloned());
        assert_eq!(per_incident[&outcome.incident], expected);
    }

    // The webhook got every notice the subscriber did (at least once: the kill may
    // repeat an attempt that was in flight).
    let streamed_ids: HashSet<String> = streamed
        .iter()
        .map(|m| m.data["id"].as_str().expect("CloudEvent id").to_owned())
        .collect();
    let delivered = receiver
        .wait_until("every notice delivered", |lines| {
            delivered_ids(lines).len() >= streamed_ids.len()
        })
        .await;
    let delivered: HashSet<String> = delivered_ids(&delivered).into_iter().collect();
    assert_eq!(delivered, streamed_ids);

    // The read models are exactly what a fresh replay of the history makes.
    let live = read_model_snapshot(&store).await;
    let mut replay = crier(&db.url);
    replay.args(["replay", "--fresh"]);
    let replayed = output(replay).await;
    assert!(replayed.status.success(), "{replayed:?}");
    assert_eq!(read_model_snapshot(&store).await, live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_write_load_is_503_then_recovers_by_itself_losing_nothing() {
    let db = TestDatabase::create().await;
    let proxy = OutageProxy::start().await;
    let api = Api::on(serve(&proxy.url(&db), &[("CRIER_WRITE_RATE_LIMIT", "0")])).await;
    let key = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    let target: Target = Arc::new(RwLock::new(api.server.base.clone()));

    let (clients, acknowledged) = start_clients(&target, &key, &service);
    a_third_acknowledged(&acknowledged).await;
    proxy.cut();
    let down = api.get("/v1/incidents", None).await;
    assert!(down.header("retry-after").is_some());
    down.problem(503);
    assert_eq!(api.get("/healthz", None).await.status, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();

    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.push(client.await.expect("client"));
    }
    let statuses: HashSet<u16> = outcomes.iter().flat_map(|o| o.statuses.clone()).collect();
    assert!(
        statuses.contains(&503),
        "no write met the outage: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 201 | 503)),
        "only acknowledgements and 503 while the database was away: {statuses:?}"
    );
    assert_every_acknowledged_write_once(&api, &outcomes).await;
    assert_eq!(api.get("/readyz", None).await.status, 200);
    let mut api = api;
    assert!(
        api.server.child.try_wait().expect("status").is_none(),
        "the same process serves on"
    );
}
