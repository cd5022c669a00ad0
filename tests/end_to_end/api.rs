//! The publishing REST API end to end: the real `crier serve` against a fresh database,
//! driven as a client would.

use std::collections::HashSet;

use eventstore::testing::{OutageProxy, TestDatabase};
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

fn outage(service_id: &str) -> Value {
    json!({
        "title": "Users cannot sign in to Microsoft Teams",
        "impact": "major",
        "message": "We are investigating reports of sign-in failures.",
        "affected_services": [{"service_id": service_id, "status": "major_outage"}],
        "regions": ["europe"],
        "client_action": {"kind": "retry_later", "message": "Try again in a few minutes."}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_polling_with_its_etag_gets_304_until_the_notice_changes() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let teams = api.service("Microsoft Teams").await;
    let comms = api.key("publisher", None).await;
    let id = api.declare(&comms, outage(&teams)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/incidents/{id}");
    let first = api.get(&path, None).await;
    let etag = first.header("etag").unwrap().to_owned();
    assert_eq!(etag, "\"1\"");
    for tag in [etag.as_str(), "W/\"1\"", "\"7\", \"1\""] {
        let again = api
            .send(Method::GET, &path, None, &[("if-none-match", tag)], None)
            .await;
        assert_eq!(again.status.as_u16(), 304, "If-None-Match: {tag}");
        assert_eq!(again.header("etag"), Some(etag.as_str()));
    }
    api.post(
        &format!("{path}/updates"),
        &comms,
        json!({"status": "identified", "message": "A certificate expired."}),
    )
    .await
    .expect(201);
    let changed = api
        .send(Method::GET, &path, None, &[("if-none-match", &etag)], None)
        .await;
    assert_eq!(changed.header("etag"), Some("\"2\""));
    assert_eq!(changed.expect(200)["status"], "identified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_outage_goes_through_its_whole_lifecycle() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let teams = api.service("Microsoft Teams").await;
    let comms = api.key("publisher", None).await;

    let declared = api.post("/v1/incidents", &comms, outage(&teams)).await;
    assert_eq!(declared.status, 201);
    let id = declared.body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        declared.header("location"),
        Some(format!("/v1/incidents/{id}").as_str())
    );
    assert_eq!(declared.header("etag"), Some("\"1\""));
    assert_eq!(declared.body["status"], "investigating");
    assert_eq!(declared.body["version"], 1);
    let service = api
        .get(&format!("/v1/services/{teams}"), None)
        .await
        .expect(200);
    assert_eq!(service["status"], "major_outage");

    let identified = api
        .post(
            &format!("/v1/incidents/{id}/updates"),
            &comms,
            json!({"status": "identified", "message": "A configuration change broke token refresh."}),
        )
        .await
        .expect(201);
    assert_eq!(identified["version"], 2);
    let resolved = api
        .post(
            &format!("/v1/incidents/{id}/updates"),
            &comms,
            json!({"status": "resolved", "message": "The change was rolled back.",
                   "client_action": {"kind": "restart_client", "message": RESTART}}),
        )
        .await
        .expect(201);
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(
        resolved["client_action"],
        json!({"kind": "restart_client", "message": RESTART})
    );
    assert!(resolved["resolved_at"].is_string());
    let service = api
        .get(&format!("/v1/services/{teams}"), None)
        .await
        .expect(200);
    assert_eq!(
        service["status"], "operational",
        "a resolved incident affects nothing"
    );

    // A correction keeps the earlier text.
    let update_id = resolved["updates"][1]["id"]
        .as_str()
        .expect("update id")
        .to_owned();
    let corrected = api
        .post(
            &format!("/v1/incidents/{id}/updates/{update_id}/corrections"),
            &comms,
            json!({"message": "A certificate rotation broke token refresh.", "reason": "root cause"}),
        )
        .await
        .expect(201);
    let update = &corrected["updates"][1];
    assert_eq!(
        update["message"],
        "A certificate rotation broke token refresh."
    );
    assert_eq!(
        update["corrections"][0]["message"],
        "A configuration change broke token refresh."
    );

    let postmortem = api
        .post(
            &format!("/v1/incidents/{id}/postmortem"),
            &comms,
            json!({"body": "## What happened\nAn expired certificate…"}),
        )
        .await
        .expect(201);
    assert!(postmortem["postmortem"]["body"]
        .as_str()
        .unwrap()
        .starts_with("## What happened"));

    let reopened = api
        .post(
            &format!("/v1/incidents/{id}/reopen"),
            &comms,
            json!({"message": "Failures are back in Europe."}),
        )
        .await
        .expect(200);
    assert_eq!(reopened["status"], "investigating");
    assert!(reopened["resolved_at"].is_null());

    // Every reader sees the same incident, the timeline oldest first.
    let now = api.get(&format!("/v1/incidents/{id}"), None).await;
    assert_eq!(
        now.header("etag"),
        Some(format!("\"{}\"", reopened["version"]).as_str())
    );
    let now = now.expect(200);
    assert_eq!(now, reopened);
    let statuses: Vec<_> = now["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [
            json!("investigating"),
            json!("identified"),
            json!("resolved"),
            json!("investigating")
        ]
    );

    // As it stood after the resolution, by position.
    let open = api.get("/v1/incidents?state=open", None).await.expect(200);
    assert_eq!(open["items"].as_array().unwrap().len(), 1);
    let resolved_only = api
        .get("/v1/incidents?state=resolved", None)
        .await
        .expect(200);
    assert!(resolved_only["items"].as_array().unwrap().is_empty());
    let then = api
        .get(
            &format!("/v1/incidents/{id}?as_of=2000-01-01T00:00:00Z"),
            None,
        )
        .await;
    then.problem(404);
    let now_by_time = api
        .get(
            &format!("/v1/incidents/{id}?as_of=2999-01-01T00:00:00Z"),
            None,
        )
        .await
        .expect(200);
    assert_eq!(now_by_time, now);

    // The history names who did what; the API key secrets appear nowhere in it.
    let store = db.store();
    let log = eventstore::testing::whole_log(&store).await;
    let dump = serde_json::to_string(
        &log.iter()
            .map(|e| (&e.event.data, &e.event.metadata))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(!dump.contains(&comms) && !dump.contains(ADMIN_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_error_status_is_a_problem() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(
        &db,
        &[
            ("CRIER_WRITE_RATE_LIMIT", "20"),
            ("CRIER_AUTH_FAILURE_LIMIT", "5"),
        ],
    )
    .await;
    let teams = api.service("Microsoft Teams").await;
    let comms = api.key("publisher", None).await;
    let reader = api.key("reader", None).await;
    let incident = api.declare(&comms, outage(&teams)).await;
    let id = incident["id"].as_str().unwrap().to_owned();
    let json = [("content-type", "application/json")];

    // 400: malformed JSON, wrong type, unknown enum value, unknown field, bad query, bad id.
    let malformed = api
        .http
        .post(api.server.url("/v1/incidents"))
        .bearer_auth(&comms)
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let mut wrong = outage(&teams);
    wrong["impact"] = json!("apocalyptic");
    let problem = api.post("/v1/incidents", &comms, wrong).await.problem(400);
    assert_eq!(problem["errors"][0]["field"], "impact", "{problem}");
    let mut wrong = outage(&teams);
    wrong["regions"] = json!("europe");
    api.post("/v1/incidents", &comms, wrong).await.problem(400);
    let mut wrong = outage(&teams);
    wrong["client_acton"] = json!({"kind": "none"});
    api.post("/v1/incidents", &comms, wrong).await.problem(400);
    let mut empty_title = outage(&teams);
    empty_title["title"] = json!("   ");
    let problem = api
        .post("/v1/incidents", &comms, empty_title)
        .await
        .problem(400);
    assert_eq!(problem["errors"][0]["field"], "title");
    let mut unknown_service = outage(&teams);
    unknown_service["affected_services"][0]["service_id"] = json!(uuid::Uuid::new_v4());
    api.post("/v1/incidents", &comms, unknown_service)
        .await
        .problem(400);
    api.get("/v1/incidents?limit=0", None).await.problem(400);
    api.get("/v1/incidents?limit=many", None).await.problem(400);
    api.get("/v1/incidents?state=sideways", None)
        .await
        .problem(400);
    api.get("/v1/incidents?cursor=garbage", None)
        .await
        .problem(400);
    api.get("/v1/incidents/not-a-uuid", None).await.problem(400);
    api.get(&format!("/v1/incidents/{id}?as_of=yesterday"), None)
        .await
        .problem(400);

    // 401: missing, malformed, unknown, revoked.
    let missing = api
        .send(
            Method::POST,
            "/v1/incidents",
            None,
            &[],
            Some(&outage(&teams)),
        )
        .await;
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    missing.problem(401);
    api.send(
        Method::GET,
        "/v1/incidents",
        None,
        &[("authorization", "Basic Zm9vOmJhcg==")],
        None,
    )
    .await
    .problem(401);
    api.get("/v1/incidents", Some("crier_not_a_key"))
        .await
        .problem(401);
    let doomed = api.key("reader", None).await;
    let doomed_id = api
        .get("/v1/api-keys?limit=500", Some(ADMIN_SECRET))
        .await
        .expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["role"] == "reader")
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    for key_id in &doomed_id {
        api.send(
            Method::DELETE,
            &format!("/v1/api-keys/{key_id}"),
            Some(ADMIN_SECRET),
            &[],
            None,
        )
        .await
        .expect(200);
    }
    api.get("/v1/incidents", Some(&doomed)).await.problem(401);
    api.get("/v1/incidents", Some(&reader)).await.problem(401);

    // 403: a reader may not publish; a publisher may not manage keys or services.
    let publisher_key = api.key("reader", None).await;
    api.post("/v1/incidents", &publisher_key, outage(&teams))
        .await
        .problem(403);
    api.post(
        "/v1/api-keys",
        &comms,
        json!({"name": "x", "role": "admin"}),
    )
    .await
    .problem(403);
    api.post("/v1/services", &comms, json!({"name": "x"}))
        .await
        .problem(403);

    // 404: unknown route, unknown resource; 405 for a method a path does not have.
    api.get("/v1/nothing-here", None).await.problem(404);
    // Paths under a scope of the router (`/v1/incidents/…`) that no route of it takes.
    api.get(&format!("/v1/incidents/{id}/nothing-here"), None)
        .await
        .problem(404);
    api.get("/v1/incidents/", None).await.problem(404);
    api.get(&format!("/v1/incidents/{}", uuid::Uuid::new_v4()), None)
        .await
        .problem(404);
    api.post(
        &format!("/v1/incidents/{}/updates", uuid::Uuid::new_v4()),
        &comms,
        json!({"status": "identified", "message": "m"}),
    )
    .await
    .problem(404);
    let not_allowed = api
        .send(Method::PUT, "/v1/incidents", Some(&comms), &[], None)
        .await;
    assert_eq!(not_allowed.header("allow"), Some("GET, HEAD, POST"));
    not_allowed.problem(405);
    let not_allowed = api
        .send(
            Method::DELETE,
            &format!("/v1/incidents/{id}/updates"),
            Some(&comms),
            &[],
            None,
        )
        .await;
    assert_eq!(not_allowed.header("allow"), Some("POST"));
    not_allowed.problem(405);
    let not_allowed = api.send(Method::POST, "/healthz", None, &[], None).await;
    assert_eq!(not_allowed.header("allow"), Some("GET, HEAD"));
    not_allowed.problem(405);

    // 409: updating a resolved incident.
    let updates = format!("/v1/incidents/{id}/updates");
    api.post(
        &updates,
        &comms,
        json!({"status": "resolved", "message": "Fixed."}),
    )
    .await
    .expect(201);
    api.post(
        &updates,
        &comms,
        json!({"status": "identified", "message": "m"}),
    )
    .await
    .problem(409);

    // 412: If-Match on an older version writes nothing.
    let reopen = format!("/v1/incidents/{id}/reopen");
    let body = json!({"message": "again"});
    let stale = api
        .send(
            Method::POST,
            &reopen,
            Some(&comms),
            &[("if-match", "\"1\"")],
            Some(&body),
        )
        .await;
    stale.problem(412);
    assert_eq!(
        api.get(&format!("/v1/incidents/{id}"), None)
            .await
            .expect(200)["status"],
        "resolved"
    );
    api.send(
        Method::POST,
        &reopen,
        Some(&comms),
        &[("if-match", "seven")],
        Some(&body),
    )
    .await
    .problem(400);

    // 413 and 415.
    let mut huge = outage(&teams);
    huge["message"] = json!("x".repeat(70 * 1024));
    api.post("/v1/incidents", &comms, huge).await.problem(413);
    let text = api
        .http
        .post(api.server.url("/v1/incidents"))
        .bearer_auth(&comms)
        .header("content-type", "text/plain")
        .body(outage(&teams).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    assert_eq!(text.headers()["content-type"], "application/problem+json");
    let _ = json;

    // 422: an idempotency key reused with another body.
    let once = [("idempotency-key", "declare-1")];
    api.send(
        Method::POST,
        "/v1/incidents",
        Some(&comms),
        &once,
        Some(&outage(&teams)),
    )
    .await
    .expect(201);
    let mut other = outage(&teams);
    other["title"] = json!("Another incident");
    api.send(
        Method::POST,
        "/v1/incidents",
        Some(&comms),
        &once,
        Some(&other),
    )
    .await
    .problem(422);

    // 429: writes over the key's rate (20/s, burst 40), with Retry-After.
    let mut limited = None;
    for _ in 0..200 {
        let answer = api
            .post(
                &updates,
                &comms,
                json!({"status": "identified", "message": "m"}),
            )
            .await;
        if answer.status == 429 {
            limited = Some(answer);
            break;
        }
    }
    let limited = limited.expect("the write rate limit never answered 429");
    assert!(limited.header("retry-after").is_some());
    limited.problem(429);
    // … and failed authentications from one address (5 a minute), even with a good key after.
    let mut refused = false;
    for _ in 0..8 {
        if api.get("/v1/incidents", Some("crier_wrong")).await.status == 429 {
            refused = true;
            break;
        }
    }
    assert!(refused, "failed authentications were never limited");
    api.get("/v1/incidents", Some(&comms)).await.problem(429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_admin_never_sees_the_id_of_a_key_outside_its_tenant() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let contoso_admin = api.key("admin", Some("contoso")).await;
    let made_by_tenant = api
        .post(
            "/v1/api-keys",
            &contoso_admin,
            json!({"name": "contoso reader", "role": "reader"}),
        )
        .await
        .expect(201);
    let all = api
        .get("/v1/api-keys", Some(ADMIN_SECRET))
        .await
        .expect(200);
    let operator_ids: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["tenant"].is_null())
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert!(!operator_ids.is_empty());
    let seen = api
        .get("/v1/api-keys", Some(&contoso_admin))
        .await
        .expect(200);
    let items = seen["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{seen:#}");
    let admin = items.iter().find(|k| k["role"] == "admin").unwrap();
    assert_eq!(admin["created_by"], "operator", "{admin:#}");
    let reader = items.iter().find(|k| k["role"] == "reader").unwrap();
    assert_eq!(reader["created_by"], admin["id"]);
    let one = api
        .get(
            &format!("/v1/api-keys/{}", admin["id"].as_str().unwrap()),
            Some(&contoso_admin),
        )
        .await
        .expect(200);
    assert_eq!(one["created_by"], "operator");
    let revoked = api
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/api-keys/{}", made_by_tenant["id"].as_str().unwrap()),
            Some(&contoso_admin),
            &[],
            None,
        )
        .await
        .expect(200);
    assert_eq!(revoked["created_by"], admin["id"]);
    let text = seen.to_string() + &one.to_string();
    for id in operator_ids {
        assert!(
            !text.contains(id),
            "an operator key's id {id} reached a tenant: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_outside_1970_to_9999_is_a_400_naming_its_field_and_writes_nothing() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let exchange = api.service("Exchange Online").await;
    let comms = api.key("publisher", None).await;
    // The first was stored as far as PostgreSQL once, and answered 500.
    for (starts_at, ends_at, field) in [
        ("-4714-12-01T00:00:00Z", "2026-12-01T01:00:00Z", "starts_at"),
        ("1969-12-31T23:59:59Z", "2026-12-01T01:00:00Z", "starts_at"),
        ("2026-12-01T00:00:00Z", "+10000-01-01T00:00:00Z", "ends_at"),
        ("2026-12-01T00:00:00Z", "10000-01-01T00:00:00Z", "ends_at"),
    ] {
        let problem = api
            .post(
                "/v1/maintenances",
                &comms,
                json!({"title": "Mailbox moves", "message": "Mail may be slow.",
                       "affected_services": [exchange], "starts_at": starts_at, "ends_at": ends_at}),
            )
            .await
            .problem(400);
        assert_eq!(problem["errors"][0]["field"], field, "{problem:#}");
    }
    let listed = api.get("/v1/maintenances", None).await.expect(200);
    assert_eq!(listed["items"], json!([]));
    let incident = api.declare(&comms, outage(&exchange)).await;
    let id = incident["id"].as_str().unwrap();
    for as_of in [
        "-4714-12-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "%2B10000-01-01T00:00:00Z",
    ] {
        let problem = api
            .get(&format!("/v1/incidents/{id}?as_of={as_of}"), None)
            .await
            .problem(400);
        assert_eq!(problem["errors"][0]["field"], "as_of", "{problem:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_with_retry_after_and_the_server_recovers() {
    let db = TestDatabase::create().await;
    let proxy = OutageProxy::start().await;
    let api = Api::on(serve(&proxy.url(&db), &[])).await;
    let teams = api.service("Microsoft Teams").await;
    proxy.cut();
    let down = api.get(&format!("/v1/services/{teams}"), None).await;
    assert!(down.header("retry-after").is_some());
    down.problem(503);
    api.post("/v1/services", ADMIN_SECRET, json!({"name": "Exchange"}))
        .await
        .problem(503);
    assert_eq!(api.get("/healthz", None).await.status, 200);
    proxy.restore();
    wait_for_status(
        &api.http,
        &api.server.url(&format!("/v1/services/{teams}")),
        200,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_private_notice_reaches_that_tenant_only_on_every_read() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let teams = api.service("Microsoft Teams").await;
    let comms = api.key("publisher", None).await;
    let contoso = api.key("reader", Some("contoso")).await;
    let fabrikam = api.key("reader", Some("fabrikam")).await;
    let unbound_reader = api.key("reader", None).await;
    let contoso_publisher = api.key("publisher", Some("contoso")).await;

    let mut private = outage(&teams);
    private["audience"] = json!({"visibility": "tenants", "tenants": ["contoso", "northwind"]});
    let secret = api.declare(&comms, private).await;
    let id = secret["id"].as_str().unwrap();
    let maintenance = api
        .post(
            "/v1/maintenances",
            &comms,
            json!({
            "title": "Contoso tenant migration", "message": "Planned.",
            "affected_services": [teams], "starts_at": "2030-01-01T00:00:00Z",
            "ends_at": "2030-01-01T02:00:00Z",
            "audience": {"visibility": "tenants", "tenants": ["contoso"]}}),
        )
        .await
        .expect(201);
    let maintenance_id = maintenance["id"].as_str().unwrap();

    for outsider in [None, Some(fabrikam.as_str()), Some(unbound_reader.as_str())] {
        api.get(&format!("/v1/incidents/{id}"), outsider)
            .await
            .problem(404);
        api.get(
            &format!("/v1/incidents/{id}?as_of=2999-01-01T00:00:00Z"),
            outsider,
        )
        .await
        .problem(404);
        api.get(&format!("/v1/maintenances/{maintenance_id}"), outsider)
            .await
            .problem(404);
        for list in [
            "/v1/incidents",
            "/v1/incidents?state=open",
            "/v1/maintenances",
            "/v1/maintenances?state=upcoming",
        ] {
            let items = api.get(list, outsider).await.expect(200);
            assert_eq!(items["items"], json!([]), "{list} for {outsider:?}");
        }
        let service = api
            .get(&format!("/v1/services/{teams}"), outsider)
            .await
            .expect(200);
        assert_eq!(
            service["status"], "operational",
            "the private outage does not show"
        );
        let services = api.get("/v1/services", outsider).await.expect(200);
        assert_eq!(services["items"][0]["status"], "operational");
    }

    let seen = api
        .get(&format!("/v1/incidents/{id}"), Some(&contoso))
        .await
        .expect(200);
    assert_eq!(
        seen["audience"],
        json!({"visibility": "tenants", "tenants": ["contoso"]}),
        "a tenant does not learn which other tenants a notice is shared with"
    );
    api.get(
        &format!("/v1/maintenances/{maintenance_id}"),
        Some(&contoso),
    )
    .await
    .expect(200);
    // What the tenant was shown is kept in memory for it alone.
    for outsider in [None, Some(fabrikam.as_str()), Some(unbound_reader.as_str())] {
        api.get(&format!("/v1/incidents/{id}"), outsider)
            .await
            .problem(404);
        api.get(&format!("/v1/maintenances/{maintenance_id}"), outsider)
            .await
            .problem(404);
    }
    let everyone = api
        .get(&format!("/v1/incidents/{id}"), Some(&comms))
        .await
        .expect(200);
    assert_eq!(
        everyone["audience"]["tenants"],
        json!(["contoso", "northwind"])
    );
    assert_eq!(
        api.get("/v1/incidents", Some(&contoso)).await.expect(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        api.get("/v1/maintenances", Some(&contoso))
            .await
            .expect(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        api.get(&format!("/v1/services/{teams}"), Some(&contoso))
            .await
            .expect(200)["status"],
        "major_outage"
    );

    // A tenant-bound publisher writes to its own tenant only.
    let own = api.declare(&contoso_publisher, outage(&teams)).await;
    assert_eq!(
        own["audience"],
        json!({"visibility": "tenants", "tenants": ["contoso"]})
    );
    let mut public = outage(&teams);
    public["audience"] = json!({"visibility": "public"});
    api.post("/v1/incidents", &contoso_publisher, public)
        .await
        .problem(403);
    api.post(
        &format!("/v1/incidents/{id}/updates"),
        &contoso_publisher,
        json!({"status": "identified", "message": "m"}),
    )
    .await
    .problem(403);
    api.get(
        &format!("/v1/incidents/{}", own["id"].as_str().unwrap()),
        Some(&fabrikam),
    )
    .await
    .problem(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_writers_with_one_if_match_exactly_one_wins() {
    let db = TestDatabase::create().await;
    let api = std::sync::Arc::new(Api::start(&db).await);
    let teams = api.service("Microsoft Teams").await;
    let comms = api.key("publisher", None).await;
    let incident = api.declare(&comms, outage(&teams)).await;
    let updates = format!("/v1/incidents/{}/updates", incident["id"].as_str().unwrap());
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let (api, comms, updates) = (api.clone(), comms.clone(), updates.clone());
            tokio::spawn(async move {
                let body = json!({"status": "identified", "message": format!("racer {i}")});
                api.send(
                    Method::POST,
                    &updates,
                    Some(&comms),
                    &[("if-match", "\"1\"")],
                    Some(&body),
                )
                .await
                .status
                .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for racer in racers {
        statuses.push(racer.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        15,
        "{statuses:?}"
    );
    let now = api
        .get(
            &format!("/v1/incidents/{}", incident["id"].as_str().unwrap()),
            None,
        )
        .await
        .expect(200);
    assert_eq!(now["version"], 2);
    assert_eq!(now["updates"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_racing_its_original_writes_once_and_answers_the_same() {
    let db = TestDatabase::create().await;
    let api = std::sync::Arc::new(Api::start(&db).await);
    let teams = api.service("Microsoft Teams").await;
    let comms = api.key("publisher", None).await;
    let incident = api.declare(&comms, outage(&teams)).await;
    let id = incident["id"].as_str().unwrap().to_owned();

    for (path, body, idempotency_key) in [
        ("/v1/incidents".to_owned(), outage(&teams), "declare-once"),
        (
            format!("/v1/incidents/{id}/updates"),
            json!({"status": "identified", "message": "Found it."}),
            "update-once",
        ),
    ] {
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (api, comms, path, body) =
                    (api.clone(), comms.clone(), path.clone(), body.clone());
                tokio::spawn(async move {
                    api.send(
                        Method::POST,
                        &path,
                        Some(&comms),
                        &[("idempotency-key", idempotency_key)],
                        Some(&body),
                    )
                    .await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for racer in racers {
            answers.push(racer.await.unwrap());
        }
        let first = answers
            .iter()
            .find(|a| a.header("idempotent-replayed").is_none())
            .expect("an original");
        for answer in &answers {
            assert_eq!(answer.status, 201, "{:?}", answer.body);
            assert_eq!(
                answer.body, first.body,
                "every retry gets the original answer"
            );
            assert_eq!(answer.header("etag"), first.header("etag"));
        }
        assert_eq!(
            answers
                .iter()
                .filter(|a| a.header("idempotent-replayed") == Some("true"))
                .count(),
            7
        );
    }
    let incidents = api.get("/v1/incidents", None).await.expect(200);
    assert_eq!(
        incidents["items"].as_array().unwrap().len(),
        2,
        "one declared by the racers"
    );
    let now = api
        .get(&format!("/v1/incidents/{id}"), None)
        .await
        .expect(200);
    assert_eq!(
        now["updates"].as_array().unwrap().len(),
        2,
        "one update posted by the racers"
    );
    // Keys are per API key: another caller's same key is its own.
    let other = api.key("publisher", None).await;
    api.send(
        Method::POST,
        "/v1/incidents",
        Some(&other),
        &[("idempotency-key", "declare-once")],
        Some(&outage(&teams)),
    )
    .await
    .expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_with_cursors_through_every_item_once() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let teams = api.service("Microsoft Teams").await;
    for name in ["Exchange Online", "SharePoint", "OneDrive", "Outlook"] {
        api.service(name).await;
    }
    let comms = api.key("publisher", None).await;
    let mut declared = HashSet::new();
    for _ in 0..7 {
        declared.insert(
            api.declare(&comms, outage(&teams)).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for (list, total) in [
        ("/v1/incidents?limit=3", 7),
        ("/v1/services?limit=2", 5),
        ("/v1/api-keys?limit=1", 2),
    ] {
        let mut seen = Vec::new();
        let mut path = list.to_owned();
        loop {
            let page = api.get(&path, Some(ADMIN_SECRET)).await.expect(200);
            seen.extend(
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["id"].as_str().unwrap().to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(cursor) => path = format!("{list}&cursor={cursor}"),
                None => break,
            }
        }
        let distinct: HashSet<_> = seen.iter().cloned().collect();
        assert_eq!((seen.len(), distinct.len()), (total, total), "{list}");
    }
    let europe = api
        .get(
            &format!("/v1/incidents?region=Europe&service_id={teams}&limit=500"),
            None,
        )
        .await
        .expect(200);
    assert_eq!(europe["items"].as_array().unwrap().len(), 7);
    let asia = api.get("/v1/incidents?region=asia", None).await.expect(200);
    assert_eq!(asia["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_on_one_database_answer_consistently() {
    let db = TestDatabase::create().await;
    let first = Api::start(&db).await;
    let second = Api::start(&db).await;
    let teams = first.service("Microsoft Teams").await;
    let comms = first.key("publisher", None).await;
    for round in 0..5 {
        let (writer, reader) = if round % 2 == 0 {
            (&first, &second)
        } else {
            (&second, &first)
        };
        let incident = writer.declare(&comms, outage(&teams)).await;
        let id = incident["id"].as_str().unwrap();
        // The reader renders (and keeps) the incident as declared...
        let declared = reader
            .get(&format!("/v1/incidents/{id}"), None)
            .await
            .expect(200);
        assert_eq!(declared, incident);
        let updated = writer
            .post(
                &format!("/v1/incidents/{id}/updates"),
                &comms,
                json!({"status": "monitoring", "message": "m"}),
            )
            .await
            .expect(201);
        // ...and still shows the update at once: read-your-writes on the other process.
        let seen = reader
            .get(&format!("/v1/incidents/{id}"), None)
            .await
            .expect(200);
        assert_eq!(seen, updated);
    }
    // A key revoked through one process is refused by the other at once.
    let reader_key = first.key("reader", None).await;
    second
        .get("/v1/incidents", Some(&reader_key))
        .await
        .expect(200);
    let keys = first
        .get("/v1/api-keys", Some(ADMIN_SECRET))
        .await
        .expect(200);
    let reader_id = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "reader")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    first
        .send(
            Method::DELETE,
            &format!("/v1/api-keys/{reader_id}"),
            Some(ADMIN_SECRET),
            &[],
            None,
        )
        .await
        .expect(200);
    second
        .get("/v1/incidents", Some(&reader_key))
        .await
        .problem(401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_has_a_request_id_and_metrics_count_requests_by_route() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let given = api
        .send(
            Method::GET,
            "/v1/services",
            None,
            &[("x-request-id", "trace-me-42")],
            None,
        )
        .await;
    assert_eq!(given.header("x-request-id"), Some("trace-me-42"));
    let made = api.get("/v1/nothing", None).await;
    assert!(made
        .header("x-request-id")
        .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()));
    api.service("Microsoft Teams").await;
    // A method no route knows counts as `other`: any token is a method, and each would
    // otherwise be a series of its own.
    let odd = api
        .send(
            Method::from_bytes(b"FROBNICATE").unwrap(),
            "/v1/services",
            None,
            &[],
            None,
        )
        .await;
    assert!(odd.status.is_client_error(), "{:?}", odd.status);
    let metrics = api.text("/metrics").await;
    assert!(
        metrics.contains(
            "crier_http_requests_total{method=\"GET\",route=\"/v1/services\",status=\"200\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("crier_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("method=\"other\",route=\"/v1/services\""),
        "{metrics}"
    );
    assert!(!metrics.contains("FROBNICATE"), "{metrics}");
    assert!(metrics.contains("crier_db_pool_connections"));
    assert!(metrics.contains("crier_events_appended_total"));

    // The request id is in the event's metadata.
    let created = api
        .send(
            Method::POST,
            "/v1/services",
            Some(ADMIN_SECRET),
            &[("x-request-id", "svc-create-1")],
            Some(&json!({"name": "Exchange"})),
        )
        .await
        .expect(201);
    let stream = format!("service-{}", created["id"].as_str().unwrap());
    let store = db.store();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let event = loop {
        // Sealed into the global log shortly after the answer.
        let log = eventstore::testing::whole_log(&store).await;
        if let Some(logged) = log.into_iter().find(|e| e.event.stream_id == stream) {
            break logged.event;
        }
        assert!(tokio::time::Instant::now() < deadline, "never sealed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(event.metadata.request_id.as_deref(), Some("svc-create-1"));
    assert_eq!(
        event.metadata.actor.len(),
        36,
        "the actor is the API key id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_is_the_committed_one_and_docs_are_served() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let served = api.get("/openapi.json", None).await.expect(200);
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(served, committed);
    for path in ["/docs/", "/docs"] {
        // `/docs` redirects to `/docs/`, which reqwest follows.
        let docs = api.http.get(api.server.url(path)).send().await.unwrap();
        assert_eq!(docs.status(), 200, "{path}");
        assert!(docs.text().await.unwrap().contains("swagger"), "{path}");
    }
}

/// Connects to `url` with tokio-postgres, the connection driven in the background.
async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// The database is reachable but its migrations have not run (another process holds the
/// migration lock, as on a fresh deployment while the first process migrates): every read
/// is a 503 with Retry-After, never a 500 for a table that is not there yet, and the
/// server serves as soon as the migrations are done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_migrations_wait_every_read_is_503_with_retry_after_then_the_server_serves() {
    let db = TestDatabase::reserve();
    connect(&eventstore::testing::server_url())
        .await
        .batch_execute(&format!("CREATE DATABASE \"{}\"", db.name))
        .await
        .unwrap();
    let holder = connect(&db.url).await;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&0x6372_6965_7201_i64])
        .await
        .unwrap();
    let server = serve(&db.url, &[("CRIER_WRITE_RATE_LIMIT", "0")]);
    let http = reqwest::Client::new();
    wait_for_status(&http, &server.url("/healthz"), 200).await;
    for _ in 0..3 {
        for path in [
            "/readyz",
            "/v1/incidents",
            "/v1/services",
            "/v1/maintenances",
            "/api/v2/summary.json",
            "/v1/feed.atom",
        ] {
            let answer = http.get(server.url(path)).send().await.unwrap();
            assert_eq!(answer.status(), 503, "{path}");
            assert!(answer.headers().contains_key("retry-after"), "{path}");
        }
        let write = http
            .post(server.url("/v1/services"))
            .bearer_auth(ADMIN_SECRET)
            .json(&json!({"name": "Teams"}))
            .send()
            .await
            .unwrap();
        assert_eq!(write.status(), 503);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&0x6372_6965_7201_i64])
        .await
        .unwrap();
    let api = Api::on(server).await;
    api.get("/v1/incidents", None).await.expect(200);
    api.service("Teams").await;
}
