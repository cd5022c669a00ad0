//! Webhooks end to end: a receiver written apart from Crier (tools/webhook_receiver.py,
//! Python's standard library) verifies every Standard Webhooks signature, fails first
//! attempts and sees the retries; 410 disables; a slow endpoint delays no other; deliveries
//! survive kill -9 and are shared by several processes; registration is validated (SSRF).

use std::time::Duration;

use eventstore::testing::TestDatabase;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

const FAST_RETRIES: [(&str, &str); 4] = [
    ("CRIER_WRITE_RATE_LIMIT", "0"),
    ("CRIER_WEBHOOK_ALLOW_PRIVATE", "true"),
    ("CRIER_WEBHOOK_RETRY_BASE_MS", "200"),
    ("CRIER_WEBHOOK_TIMEOUT", "1"),
];

/// Registers a webhook to `receiver` and hands the receiver its secret.
async fn register(api: &Api, receiver: &Receiver, filters: Value) -> Value {
    let mut body = json!({ "url": receiver.url });
    if let (Some(body), Some(filters)) = (body.as_object_mut(), filters.as_object()) {
        body.extend(filters.clone());
    }
    let created = api
        .post("/v1/webhooks", ADMIN_SECRET, body)
        .await
        .expect(201);
    receiver
        .set_secret(created["secret"].as_str().expect("secret"))
        .await;
    created
}

fn incident(service: &str, title: &str) -> Value {
    json!({
        "title": title,
        "impact": "major",
        "message": "Users cannot send messages.",
        "affected_services": [{"service_id": service, "status": "major_outage"}],
        "client_action": {"kind": "restart_client", "message": RESTART},
    })
}

#[tokio::test]
async fn each_notice_arrives_signed_retried_after_a_failure_in_order_and_every_attempt_is_listed() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(&db, &FAST_RETRIES).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    let receiver = Receiver::start(&["--fail-first"]);
    let created = register(&api, &receiver, json!({})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(created["status"], "active");

    // The secret is shown once: never listed, never read back.
    let listed = api
        .get("/v1/webhooks", Some(ADMIN_SECRET))
        .await
        .expect(200);
    assert_eq!(listed["items"][0]["id"], id.as_str());
    let read = api
        .get(&format!("/v1/webhooks/{id}"), Some(ADMIN_SECRET))
        .await
        .expect(200);
    assert!(!listed.to_string().contains(secret) && !read.to_string().contains(secret));

    let declared = api
        .declare(&publisher, incident(&service, "Teams is down"))
        .await;
    let incident_id = declared["id"].as_str().unwrap();
    let updates = format!("/v1/incidents/{incident_id}/updates");
    api.post(
        &updates,
        &publisher,
        json!({"status": "identified", "message": "A bad configuration change."}),
    )
    .await
    .expect(201);
    api.post(
        &updates,
        &publisher,
        json!({"status": "resolved", "message": "Fixed. Restart to recover."}),
    )
    .await
    .expect(201);

    let lines = receiver
        .wait_until("three notices delivered", |l| delivered_ids(l).len() == 3)
        .await;
    for line in &lines {
        assert_eq!(line["verified"], true, "signature refused: {line}");
        assert_eq!(line["content_type"], "application/json");
    }
    // In order, each first refused (503, Retry-After: 1) then retried under the same id.
    let types: Vec<&str> = delivered_ids(&lines)
        .iter()
        .map(|id| {
            let line = lines.iter().find(|l| l["id"] == id.as_str()).unwrap();
            line["event"]["type"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        types,
        ["incident.declared", "incident.updated", "incident.resolved"]
    );
    let answered: Vec<u64> = lines
        .iter()
        .map(|l| l["answered"].as_u64().unwrap())
        .collect();
    assert_eq!(answered, [503, 204, 503, 204, 503, 204], "{lines:#?}");
    for pair in lines.chunks(2) {
        assert_eq!(pair[0]["id"], pair[1]["id"]);
        let waited =
            pair[1]["received_at"].as_f64().unwrap() - pair[0]["received_at"].as_f64().unwrap();
        assert!(waited >= 0.9, "Retry-After: 1 not honoured ({waited} s)");
    }
    let event = &lines[5]["event"];
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["subject"], incident_id);
    assert_eq!(event["data"]["status"], "resolved");
    assert_eq!(event["data"]["client_action"]["kind"], "restart_client");
    assert_eq!(event["id"], lines[5]["id"]);

    // Registering the webhook was history, not a notice: nothing else arrived.
    assert_eq!(lines.len(), 6);

    // The last answer is recorded a moment after the receiver saw it.
    let items = delivery_log_once_delivered(&api, &id).await;
    assert_eq!(items.len(), 3);
    for delivery in &items {
        assert_eq!(delivery["status"], "delivered", "{delivery}");
        let codes: Vec<u64> = delivery["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["status_code"].as_u64().unwrap())
            .collect();
        assert_eq!(codes, [503, 204]);
    }
    assert_eq!(items[0]["event_type"], "incident.resolved", "newest first");
}

#[tokio::test]
async fn registration_is_for_admins_validated_and_refuses_internal_addresses_by_default() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    let hook = json!({"url": "https://hooks.example.com/crier"});
    api.post("/v1/webhooks", &publisher, hook.clone())
        .await
        .problem(403);
    api.send(Method::POST, "/v1/webhooks", None, &[], Some(&hook))
        .await
        .problem(401);
    for (url, why) in [
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://localhost:9/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]/hook", "loopback"),
        ("http://10.0.0.8/hook", "private"),
        // Each of these was accepted once by an attack on a running server.
        ("http://[::ffff:0:127.0.0.1]/hook", "globally routable"),
        ("http://[64:ff9b:1::7f00:1]/hook", "globally routable"),
        ("http://[2002:7f00:1::]/hook", "globally routable"),
        ("http://[fec0::1]/hook", "globally routable"),
        ("http://[100::1]/hook", "globally routable"),
        ("http://192.0.0.8/hook", "globally routable"),
        ("http://198.18.0.1/hook", "globally routable"),
        ("http://240.0.0.1/hook", "globally routable"),
        ("http://localhost./hook", "globally routable"),
        ("ftp://hooks.example.com/", "http"),
        ("not a url", "absolute"),
    ] {
        let problem = api
            .post("/v1/webhooks", ADMIN_SECRET, json!({ "url": url }))
            .await
            .problem(400);
        assert_eq!(problem["errors"][0]["field"], "url", "{url}: {problem}");
        let message = problem["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(why), "{url}: {message}");
    }
    // A public address literal needs no name service: it passes the address check.
    let public_url = "http://93.184.215.14/crier";
    let unknown_type = api
        .post(
            "/v1/webhooks",
            ADMIN_SECRET,
            json!({"url": public_url, "event_types": ["incident.exploded"]}),
        )
        .await
        .problem(400);
    assert!(unknown_type["detail"]
        .as_str()
        .unwrap()
        .contains("event_types"));
    let unknown_service = api
        .post(
            "/v1/webhooks",
            ADMIN_SECRET,
            json!({"url": public_url, "service_ids": [service, "0b9a8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d"]}),
        )
        .await
        .problem(400);
    assert_eq!(unknown_service["errors"][0]["field"], "service_ids[1]");
    let created = api
        .post(
            "/v1/webhooks",
            ADMIN_SECRET,
            json!({"url": public_url, "service_ids": [service], "event_types": ["incident.resolved"]}),
        )
        .await
        .expect(201);
    assert_eq!(created["service_ids"], json!([service]));
    let path = format!("/v1/webhooks/{}", created["id"].as_str().unwrap());
    for _ in 0..2 {
        let deleted = api
            .send(Method::DELETE, &path, Some(ADMIN_SECRET), &[], None)
            .await
            .expect(200);
        assert_eq!(deleted["status"], "deleted");
    }
    api.get(
        "/v1/webhooks/3f1c2b4a-5d6e-4f70-8a9b-0c1d2e3f4a5b",
        Some(ADMIN_SECRET),
    )
    .await
    .problem(404);
    api.get("/v1/webhooks/not-a-uuid/deliveries", Some(ADMIN_SECRET))
        .await
        .problem(400);
}

#[tokio::test]
async fn a_tenant_admin_manages_its_own_webhooks_which_also_receive_its_private_notices() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(&db, &FAST_RETRIES).await;
    let contoso_admin = api.key("admin", Some("contoso")).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    let contoso = Receiver::start(&[]);
    let public = Receiver::start(&[]);
    let mine = api
        .post("/v1/webhooks", &contoso_admin, json!({"url": contoso.url}))
        .await
        .expect(201);
    contoso.set_secret(mine["secret"].as_str().unwrap()).await;
    assert_eq!(mine["tenant"], "contoso");
    register(&api, &public, json!({"event_types": ["incident.declared"]})).await;

    // The tenant's admin sees its webhook only; the unbound admin sees both.
    let seen = api
        .get("/v1/webhooks", Some(&contoso_admin))
        .await
        .expect(200);
    assert_eq!(seen["items"].as_array().unwrap().len(), 1);
    let all = api
        .get("/v1/webhooks", Some(ADMIN_SECRET))
        .await
        .expect(200);
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let public_id = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["tenant"].is_null())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.send(
        Method::DELETE,
        &format!("/v1/webhooks/{public_id}"),
        Some(&contoso_admin),
        &[],
        None,
    )
    .await
    .problem(404);

    let mut private = incident(&service, "Contoso's tenant is degraded");
    private["audience"] = json!({"visibility": "tenants", "tenants": ["contoso"]});
    let private = api.declare(&publisher, private).await;
    let open = api
        .declare(&publisher, incident(&service, "Teams is down"))
        .await;
    api.post(
        &format!("/v1/incidents/{}/updates", open["id"].as_str().unwrap()),
        &publisher,
        json!({"status": "monitoring", "message": "Recovering."}),
    )
    .await
    .expect(201);
    let to_contoso = contoso
        .wait_until("contoso's three notices", |l| delivered_ids(l).len() == 3)
        .await;
    // Different incidents may arrive in any order; each incident's own are in order.
    let private_ones = to_contoso
        .iter()
        .filter(|l| l["event"]["subject"] == private["id"])
        .count();
    assert_eq!(private_ones, 1, "{to_contoso:#?}");
    assert!(to_contoso.iter().all(|l| l["verified"] == true));
    // The public endpoint: the public declaration only (its filter leaves updates out).
    let to_public = public
        .wait_until("the public declaration", |l| !delivered_ids(l).is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let to_public = if public.lines().len() > to_public.len() {
        public.lines()
    } else {
        to_public
    };
    assert_eq!(to_public.len(), 1, "{to_public:#?}");
    assert_eq!(to_public[0]["event"]["subject"], open["id"]);
}

#[tokio::test]
async fn revoking_a_key_disables_its_webhooks_which_get_no_private_notice_after() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(&db, &FAST_RETRIES).await;
    let contoso_admin = api.key("admin", Some("contoso")).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    let contoso = Receiver::start(&[]);
    let hook = api
        .post("/v1/webhooks", &contoso_admin, json!({"url": contoso.url}))
        .await
        .expect(201);
    contoso.set_secret(hook["secret"].as_str().unwrap()).await;
    let private = || {
        let mut private = incident(&service, "Contoso's tenant is degraded");
        private["audience"] = json!({"visibility": "tenants", "tenants": ["contoso"]});
        private
    };
    let before = api.declare(&publisher, private()).await;
    contoso
        .wait_until("the private notice before", |l| delivered_ids(l).len() == 1)
        .await;

    // The attack: the key is revoked, the webhook it registered keeps listening.
    let key_id = api
        .get("/v1/api-keys", Some(ADMIN_SECRET))
        .await
        .expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["tenant"] == "contoso")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.send(
        Method::DELETE,
        &format!("/v1/api-keys/{key_id}"),
        Some(ADMIN_SECRET),
        &[],
        None,
    )
    .await
    .expect(200);
    let after = api.declare(&publisher, private()).await;
    // The webhook says why it stopped, in its resource and in its history.
    let shown = api
        .get(
            &format!("/v1/webhooks/{}", hook["id"].as_str().unwrap()),
            Some(ADMIN_SECRET),
        )
        .await
        .expect(200);
    assert_eq!(shown["status"], "disabled", "{shown:#}");
    assert_eq!(
        shown["ended_reason"],
        "the API key that registered it was revoked"
    );
    // The audit API shows sealed events only: the disabling is there once it is sealed.
    let mut types: Vec<String> = Vec::new();
    for _ in 0..100 {
        let history = api
            .get(
                &format!(
                    "/v1/audit/streams/webhook-{}/events",
                    hook["id"].as_str().unwrap()
                ),
                Some(ADMIN_SECRET),
            )
            .await
            .expect(200);
        types = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect();
        if types.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(types, ["webhook.registered", "webhook.disabled"]);
    // Another endpoint shows the fan-out has moved past the second notice.
    let witness = Receiver::start(&[]);
    register(&api, &witness, json!({})).await;
    api.declare(&publisher, incident(&service, "Teams is down"))
        .await;
    witness
        .wait_until("a later public notice", |l| !delivered_ids(l).is_empty())
        .await;
    let received: Vec<Value> = contoso.lines();
    assert!(
        received
            .iter()
            .all(|l| l["event"]["subject"] != after["id"]),
        "a revoked key's webhook got a private notice: {received:#?}"
    );
    assert!(received
        .iter()
        .any(|l| l["event"]["subject"] == before["id"]));
}

#[tokio::test]
async fn an_endpoint_answering_410_is_disabled_by_an_event_and_gets_nothing_more() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(&db, &FAST_RETRIES).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    let gone = Receiver::start(&["--status", "410"]);
    let created = register(&api, &gone, json!({})).await;
    let id = created["id"].as_str().unwrap();
    api.declare(&publisher, incident(&service, "Teams is down"))
        .await;
    gone.wait_until("the 410", |l| !l.is_empty()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let read = api
            .get(&format!("/v1/webhooks/{id}"), Some(ADMIN_SECRET))
            .await
            .expect(200);
        if read["status"] == "disabled" {
            assert_eq!(read["ended_reason"], "the endpoint answered 410 Gone");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never disabled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The history lists sealed events: the disabling shows there a moment after the
    // webhook's row.
    let auditor = api.key("auditor", None).await;
    let history = loop {
        let history = api
            .get(
                &format!("/v1/audit/streams/webhook-{id}/events"),
                Some(&auditor),
            )
            .await
            .expect(200);
        if history["events"].as_array().unwrap().len() >= 2 {
            break history;
        }
        assert!(tokio::time::Instant::now() < deadline, "never sealed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let events = history["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["type"], "webhook.disabled");
    assert_eq!(events[1]["metadata"]["actor"], "system");
    assert!(!history
        .to_string()
        .contains(created["secret"].as_str().unwrap()));

    api.declare(&publisher, incident(&service, "Teams is down again"))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        gone.lines().len(),
        1,
        "a disabled endpoint was called again"
    );
}

#[tokio::test]
async fn a_slow_endpoint_delays_neither_another_endpoint_nor_the_api() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(&db, &FAST_RETRIES).await;
    // Answers after 30 s; each attempt times out after 1 s.
    let slow = Receiver::start(&["--delay", "30"]);
    let fast = Receiver::start(&[]);
    let slow_hook = register(&api, &slow, json!({})).await;
    register(&api, &fast, json!({})).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    let mut first = Value::Null;
    for n in 0..12 {
        let declared = api
            .declare(&publisher, incident(&service, &format!("Outage {n}")))
            .await;
        first = if n == 0 { declared } else { first };
    }
    // Queued behind the first outage's declaration, which the slow endpoint holds.
    api.post(
        &format!(
            "/v1/incidents/{}/updates",
            first["id"].as_str().expect("id")
        ),
        &publisher,
        json!({"status": "identified", "message": "A certificate expired."}),
    )
    .await
    .expect(201);
    fast.wait_until("every notice at the fast endpoint", |l| {
        delivered_ids(l).len() == 14 // the service's creation, 12 declarations, 1 update
    })
    .await;
    assert!(
        slow.lines().is_empty(),
        "the slow endpoint answered before the fast one had everything"
    );

    // A delivery waiting its turn is listed as pending with no time set yet.
    let deliveries = format!(
        "/v1/webhooks/{}/deliveries",
        slow_hook["id"].as_str().expect("id")
    );
    let listed = api.get(&deliveries, Some(ADMIN_SECRET)).await.expect(200);
    let waiting = &listed["items"][0];
    assert_eq!(waiting["event_type"], "incident.updated", "{listed:#}");
    assert_eq!(waiting["status"], "pending", "{listed:#}");
    assert_eq!(waiting["next_attempt_at"], Value::Null, "{listed:#}");
}

#[tokio::test]
async fn deliveries_survive_kill_9_and_are_shared_by_two_processes_each_incident_in_order() {
    let db = TestDatabase::create().await;
    let first = Api::start_with(&db, &FAST_RETRIES).await;
    let mut second = Api::on(serve(&db.url, &FAST_RETRIES)).await;
    let receiver = Receiver::start(&["--fail-first"]);
    register(&first, &receiver, json!({})).await;
    let publisher = first.key("publisher", None).await;
    let service = first.service("Teams").await;
    let mut incidents = Vec::new();
    for n in 0..4 {
        let api = if n % 2 == 0 { &first } else { &second };
        let declared = api
            .declare(&publisher, incident(&service, &format!("Outage {n}")))
            .await;
        incidents.push(declared["id"].as_str().unwrap().to_owned());
    }
    // Kill one process while deliveries are in flight, write more through the other, and
    // bring it back.
    second.server.child.kill().expect("kill -9");
    second.server.child.wait().expect("reaped");
    for (n, id) in incidents.iter().enumerate() {
        first
            .post(
                &format!("/v1/incidents/{id}/updates"),
                &publisher,
                json!({"status": "resolved", "message": format!("Outage {n} is over.")}),
            )
            .await
            .expect(201);
    }
    second = Api::on(serve(&db.url, &FAST_RETRIES)).await;
    let lines = receiver
        .wait_until("every notice delivered", |l| delivered_ids(l).len() == 9)
        .await;
    assert!(lines.iter().all(|l| l["verified"] == true));
    // Per incident, a notice is first tried only once the one before it was delivered.
    for incident in &incidents {
        let mine: Vec<&Value> = lines
            .iter()
            .filter(|l| l["event"]["subject"] == incident.as_str())
            .collect();
        let first_delivery = mine
            .iter()
            .position(|l| l["answered"] == 204 && l["event"]["type"] == "incident.declared")
            .expect("declaration delivered");
        let first_resolution_try = mine
            .iter()
            .position(|l| l["event"]["type"] == "incident.resolved")
            .expect("resolution tried");
        assert!(first_delivery < first_resolution_try, "{mine:#?}");
    }
    drop(second);
}

/// An attempt's timeout of a minute: a lease lasts 65 s (69 s for a delivery handed over),
/// longer than a test waits, so a delivery that waited for one would fail it.
const LONG_LEASES: [(&str, &str); 3] = [
    ("CRIER_WRITE_RATE_LIMIT", "0"),
    ("CRIER_WEBHOOK_ALLOW_PRIVATE", "true"),
    ("CRIER_WEBHOOK_TIMEOUT", "60"),
];

/// The first 100 entries of a webhook's delivery log.
async fn delivery_log(api: &Api, webhook_id: &str) -> Vec<Value> {
    let page = api
        .get(
            &format!("/v1/webhooks/{webhook_id}/deliveries?limit=100"),
            Some(ADMIN_SECRET),
        )
        .await
        .expect(200);
    page["items"].as_array().unwrap().clone()
}

/// The delivery log once every delivery in it is recorded as delivered (the recorder
/// writes a moment after the receiver answered), or as it is after 10 s.
async fn delivery_log_once_delivered(api: &Api, webhook_id: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let items = delivery_log(api, webhook_id).await;
        if items.iter().all(|d| d["status"] == "delivered")
            || tokio::time::Instant::now() > deadline
        {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Declares `count` incidents all at once.
async fn declare_at_once(api: &Api, publisher: &str, service: &str, count: usize) {
    let declarations =
        (0..count).map(|n| api.declare(publisher, incident(service, &format!("Outage {n}"))));
    futures_util::future::join_all(declarations).await;
}

/// A burst of notices to several endpoints: the fan-out hands most first attempts to the
/// sender in memory and leaves the rest to its claims. Each delivery goes out exactly once,
/// and none waits for a lease to run out (with this timeout a lease lasts 65 s, more than
/// the wait below).
#[tokio::test]
async fn a_burst_to_several_endpoints_goes_out_once_each_and_none_waits_for_a_lease() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(&db, &LONG_LEASES).await;
    // The service first: its own notice would reach the endpoints too.
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    let receivers: Vec<Receiver> = (0..3).map(|_| Receiver::start(&[])).collect();
    for receiver in &receivers {
        register(&api, receiver, json!({})).await;
    }
    const NOTICES: usize = 40;
    declare_at_once(&api, &publisher, &service, NOTICES).await;
    for receiver in &receivers {
        let lines = receiver
            .wait_until("every notice delivered", |l| {
                delivered_ids(l).len() == NOTICES
            })
            .await;
        assert_eq!(lines.len(), NOTICES, "each sent once: {lines:#?}");
        assert!(lines.iter().all(|l| l["verified"] == true));
    }
}

/// More handed-over deliveries than a slow endpoint takes in time: those that waited too
/// long for a slot are given back to the claims at once rather than left to their lease
/// (65 s here, longer than the wait below), and each is still sent once, its first attempt
/// numbered 1.
#[tokio::test]
async fn handed_over_deliveries_that_wait_too_long_go_back_to_the_claims_and_out_once() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(&db, &LONG_LEASES).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    // 16 sends at a time, 1.5 s each: the fourth round starts past the 4 s a handed-over
    // delivery may wait.
    let receiver = Receiver::start(&["--delay", "1.5"]);
    let id = register(&api, &receiver, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    const NOTICES: usize = 72;
    declare_at_once(&api, &publisher, &service, NOTICES).await;
    let lines = receiver
        .wait_until("every notice delivered", |l| {
            delivered_ids(l).len() == NOTICES
        })
        .await;
    assert_eq!(lines.len(), NOTICES, "each sent once");
    let items = delivery_log_once_delivered(&api, &id).await;
    assert_eq!(items.len(), NOTICES);
    for delivery in &items {
        assert_eq!(delivery["status"], "delivered", "{delivery}");
        assert_eq!(delivery["attempts"][0]["attempt"], 1, "{delivery}");
        assert_eq!(
            delivery["attempts"].as_array().unwrap().len(),
            1,
            "{delivery}"
        );
    }
}

/// `DELETE /v1/webhooks/{id}` stops everything, including the deliveries the fan-out
/// already handed to the sender in memory, waiting there for a slot: once the deletion is
/// met, only the requests already under way reach the endpoint. (Each send takes 2 s, less
/// than the 4 s a handed delivery may wait, so the waiting ones would have been started
/// from memory, not given back to the claims.)
#[tokio::test]
async fn a_deleted_webhook_gets_none_of_the_deliveries_still_waiting_in_memory() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(&db, &LONG_LEASES).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    // 16 sends at a time, 2 s each: 16 under way and 32 waiting when the webhook goes.
    const DELAY_SECONDS: u64 = 2;
    let receiver = Receiver::start(&["--delay", &DELAY_SECONDS.to_string()]);
    let id = register(&api, &receiver, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    const NOTICES: usize = 48;
    declare_at_once(&api, &publisher, &service, NOTICES).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let written = delivery_log(&api, &id).await.len();
        if written == NOTICES {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{written} written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.send(
        Method::DELETE,
        &format!("/v1/webhooks/{id}"),
        Some(ADMIN_SECRET),
        &[],
        None,
    )
    .await
    .expect(200);
    let deleted_at = chrono::Utc::now();
    // Long enough for the next 16 to have come, had they been sent once slots freed.
    tokio::time::sleep(Duration::from_secs(3 * DELAY_SECONDS)).await;
    let started: Vec<chrono::DateTime<chrono::Utc>> = (delivery_log(&api, &id).await.iter())
        .flat_map(|d| d["attempts"].as_array().unwrap().clone())
        .map(|a| a["started_at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(!started.is_empty(), "the first sends were under way");
    assert!(
        started.len() < NOTICES,
        "some deliveries were still waiting when the webhook went"
    );
    assert!(
        started.iter().all(|at| *at < deleted_at),
        "attempts started after the deletion at {deleted_at}: {started:?}"
    );
    assert_eq!(
        receiver.lines().len(),
        started.len(),
        "nothing sent unrecorded"
    );
}
