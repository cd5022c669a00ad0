//! `/v1/stream` end to end with a real SSE client: resuming with nothing missed or repeated,
//! tenants, filters, several processes, heartbeats, and a slow subscriber that is closed
//! without slowing anyone else.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventstore::testing::TestDatabase;
use serde_json::{json, Value};

use crate::support::*;

fn incident_body(service: &str, title: &str, audience: Option<Value>, regions: &[&str]) -> Value {
    let mut body = json!({
        "title": title, "impact": "major", "message": "Investigating.",
        "affected_services": [{"service_id": service, "status": "major_outage"}],
        "regions": regions,
    });
    if let Some(audience) = audience {
        body["audience"] = audience;
    }
    body
}

async fn update(api: &Api, key: &str, id: &str, status: &str) {
    api.post(
        &format!("/v1/incidents/{id}/updates"),
        key,
        json!({"status": status, "message": format!("Now {status}."),
               "client_action": {"kind": "restart_client", "message": RESTART}}),
    )
    .await
    .expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_resumes_with_nothing_missed_or_repeated() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(
        &db,
        &[
            ("CRIER_WRITE_RATE_LIMIT", "0"),
            ("CRIER_STREAM_HEARTBEAT", "1"),
            ("CRIER_PUBLIC_URL", "https://status.contoso.example"),
        ],
    )
    .await;
    let publisher = api.key("publisher", None).await;
    let teams = api.service("Teams").await;
    let mut client = SseClient::open(&api.server.base, "", None, None).await;

    let declared = api
        .declare(
            &publisher,
            incident_body(&teams, "Sign-in failures", None, &[]),
        )
        .await;
    let id = declared["id"].as_str().unwrap().to_owned();
    let first = client
        .next_incident(Duration::from_secs(10))
        .await
        .expect("a notice");
    assert_eq!(first.event, "incident.declared");
    let event = &first.data;
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "incident.declared");
    assert_eq!(event["datacontenttype"], "application/json");
    assert_eq!(
        event["source"],
        format!("https://status.contoso.example/v1/incidents/{id}")
    );
    assert_eq!(event["subject"], id.as_str());
    assert_eq!(event["position"], first.id);
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(event["data"]["status"], "investigating");
    assert_eq!(event["data"]["services"][0]["status"], "major_outage");
    update(&api, &publisher, &id, "identified").await;
    let second = client
        .next(Duration::from_secs(10))
        .await
        .expect("a notice");
    assert_eq!(second.event, "incident.updated");
    assert!(second.id > first.id);

    // The client goes away; meanwhile the incident is resolved and reopened.
    drop(client);
    update(&api, &publisher, &id, "resolved").await;
    api.post(
        &format!("/v1/incidents/{id}/reopen"),
        &publisher,
        json!({"message": "It is back."}),
    )
    .await
    .expect(200);

    // Resuming with Last-Event-ID: exactly what it missed, in order, then live ones.
    let mut client = SseClient::open(&api.server.base, "", None, Some(second.id)).await;
    let missed = client.take(2).await;
    let types: Vec<&str> = missed.iter().map(|m| m.event.as_str()).collect();
    assert_eq!(types, vec!["incident.resolved", "incident.reopened"]);
    let resolved = &missed[0].data["data"];
    assert_eq!(
        resolved["status"], "resolved",
        "the resource as it stood then"
    );
    assert_eq!(resolved["client_action"]["kind"], "restart_client");
    assert_eq!(resolved["client_action"]["message"], RESTART);
    assert!(missed[0].id > second.id && missed[1].id > missed[0].id);
    update(&api, &publisher, &id, "resolved").await;
    let live = client.next(Duration::from_secs(10)).await.expect("live");
    assert_eq!(live.event, "incident.resolved");
    assert!(live.id > missed[1].id);
    assert!(
        client.next(Duration::from_millis(300)).await.is_none(),
        "nothing twice"
    );

    // From the start (?after=0): every notice once, in order, and no key administration.
    let mut everything = SseClient::open(&api.server.base, "?after=0", None, None).await;
    let all = everything.take(6).await;
    let types: Vec<&str> = all.iter().map(|m| m.event.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "service.updated",
            "incident.declared",
            "incident.updated",
            "incident.resolved",
            "incident.reopened",
            "incident.resolved"
        ]
    );
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert!(everything.next(Duration::from_millis(300)).await.is_none());

    // An idle stream hears a heartbeat comment (every second here).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = everything.next(Duration::from_millis(500)).await;
    assert!(
        everything.comments.iter().any(|c| c == "heartbeat"),
        "{:?}",
        everything.comments
    );

    // Live notices to a stream with nothing else to send were written by its thread's
    // relay, not by the stream's own task.
    let relayed = api.metric("crier_stream_relay_writes_total").await;
    assert!(relayed >= 1.0, "{relayed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_notices_reach_their_tenant_only_and_filters_apply() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let publisher = api.key("publisher", None).await;
    let contoso = api.key("reader", Some("contoso")).await;
    let fabrikam = api.key("reader", Some("fabrikam")).await;
    let teams = api.service("Teams").await;
    let outlook = api.service("Outlook").await;
    let base = api.server.base.clone();
    let mut anonymous = SseClient::open(&base, "", None, None).await;
    let mut contoso_client = SseClient::open(&base, "", Some(&contoso), None).await;
    let mut fabrikam_client = SseClient::open(&base, "", Some(&fabrikam), None).await;
    let mut outlook_only =
        SseClient::open(&base, &format!("?service_id={outlook}"), None, None).await;
    let mut asia_only = SseClient::open(&base, "?region=asia", None, None).await;

    let private = json!({"visibility": "tenants", "tenants": ["contoso", "fabrikam-not"]});
    let secret = api
        .declare(
            &publisher,
            incident_body(&teams, "Contoso only", Some(private), &["europe"]),
        )
        .await;
    let public = api
        .declare(
            &publisher,
            incident_body(&outlook, "Mail delays", None, &["asia"]),
        )
        .await;
    let european = api
        .declare(
            &publisher,
            incident_body(&teams, "Calls drop in Europe", None, &["europe"]),
        )
        .await;

    let ids = |messages: Vec<Message>| -> Vec<String> {
        messages
            .iter()
            .map(|m| m.data["data"]["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    assert_eq!(
        ids(contoso_client.incidents(3).await),
        vec![id(&secret), id(&public), id(&european)]
    );
    assert_eq!(
        ids(anonymous.incidents(2).await),
        vec![id(&public), id(&european)]
    );
    assert_eq!(
        ids(fabrikam_client.incidents(2).await),
        vec![id(&public), id(&european)]
    );
    assert_eq!(ids(outlook_only.incidents(1).await), vec![id(&public)]);
    assert_eq!(ids(asia_only.incidents(1).await), vec![id(&public)]);
    for client in [
        &mut anonymous,
        &mut fabrikam_client,
        &mut outlook_only,
        &mut asia_only,
    ] {
        assert!(
            client
                .next_incident(Duration::from_millis(500))
                .await
                .is_none(),
            "a notice reached a subscriber it must not"
        );
    }
    // The tenant sees its own tenant in the audience, and no other.
    api.post(
        &format!("/v1/incidents/{}/updates", id(&secret)),
        &publisher,
        json!({"status": "resolved", "message": "Done."}),
    )
    .await
    .expect(201);
    let seen = contoso_client
        .next_incident(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        seen.data["data"]["audience"],
        json!({"visibility": "tenants", "tenants": ["contoso"]})
    );
    // A bad filter or position is a problem, not a stream.
    api.get("/v1/stream?region=%20", None).await.problem(400);
    api.get("/v1/stream?service_id=nope", None)
        .await
        .problem(400);
    api.send(
        reqwest::Method::GET,
        "/v1/stream",
        None,
        &[("Last-Event-ID", "yesterday")],
        None,
    )
    .await
    .problem(400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_hears_a_heartbeat_only_once_it_has_been_silent_for_a_period() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(
        &db,
        &[
            ("CRIER_WRITE_RATE_LIMIT", "0"),
            ("CRIER_STREAM_HEARTBEAT", "2"),
        ],
    )
    .await;
    let publisher = api.key("publisher", None).await;
    let teams = api.service("Teams").await;
    let mut client = SseClient::open(&api.server.base, "", None, None).await;
    // Notices every 300 ms or so for two periods and more: the stream is never silent for
    // one, so no heartbeat is written between them.
    let started = std::time::Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(4500) {
        n += 1;
        api.declare(
            &publisher,
            incident_body(&teams, &format!("Busy {n}"), None, &[]),
        )
        .await;
        client
            .next_incident(Duration::from_secs(10))
            .await
            .expect("the notice");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        !client.comments.iter().any(|c| c == "heartbeat"),
        "{:?}",
        client.comments
    );
    // Silent for a period: now it hears one.
    assert!(client.next(Duration::from_secs(3)).await.is_none());
    assert!(
        client.comments.iter().any(|c| c == "heartbeat"),
        "{:?}",
        client.comments
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_published_through_one_process_reaches_subscribers_of_another() {
    let db = TestDatabase::create().await;
    let first = Api::start(&db).await;
    let mut second = Api::on(serve(&db.url, &[("CRIER_WRITE_RATE_LIMIT", "0")])).await;
    let publisher = first.key("publisher", None).await;
    let teams = first.service("Teams").await;
    let mut client = SseClient::open(&second.server.base, "", None, None).await;
    let declared = first
        .declare(&publisher, incident_body(&teams, "Elsewhere", None, &[]))
        .await;
    let message = client
        .next_incident(Duration::from_secs(10))
        .await
        .expect("notice");
    assert_eq!(message.data["data"]["id"], declared["id"]);

    // SIGTERM closes open streams at once instead of waiting for them.
    let started = std::time::Instant::now();
    assert!(second.server.terminate().success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        started.elapsed()
    );
    assert!(client.next(Duration::from_secs(2)).await.is_none());
    assert!(
        client.comments.iter().any(|c| c.contains("stopping")),
        "{:?}",
        client.comments
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_too_far_behind_is_closed_resumably_and_slows_nobody() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(
        &db,
        &[
            ("CRIER_WRITE_RATE_LIMIT", "0"),
            ("CRIER_STREAM_BUFFER", "64"),
        ],
    )
    .await;
    let publisher = api.key("publisher", None).await;
    let teams = api.service("Teams").await;
    // A reader that keeps up, and one that reads nothing for now.
    let mut fast = SseClient::open(&api.server.base, "", None, None).await;
    let mut slow = SseClient::open(&api.server.base, "", None, None).await;
    // Enough large notices (about 10 KB each) to fill the slow reader's socket buffers.
    let total = 1500;
    // The fast reader keeps up by construction: the notices are published no more than 16
    // ahead of what it has read. Unpaced, this (unoptimised) test client parsing 10 KB
    // messages on two busy cores fell more than the ring and its socket buffers behind
    // during a full test run, and was rightly closed.
    let read_so_far = Arc::new(AtomicUsize::new(0));
    let progress = read_so_far.clone();
    let fast_reader = tokio::spawn(async move {
        let got = fast.incidents_counted(total, &progress).await;
        (got.len(), fast.comments.clone())
    });
    let long = "x".repeat(9000);
    for n in 0..total {
        let paced_until = tokio::time::Instant::now() + Duration::from_secs(10);
        while n > read_so_far.load(Ordering::Acquire) + 16
            && !fast_reader.is_finished()
            && tokio::time::Instant::now() < paced_until
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut body = incident_body(&teams, &format!("Flapping {n}"), None, &[]);
        body["message"] = json!(long);
        api.post("/v1/incidents", &publisher, body)
            .await
            .expect(201);
    }
    let (fast_count, fast_comments) = fast_reader.await.unwrap();
    assert_eq!(fast_count, total, "the fast reader got everything");
    assert!(!fast_comments.iter().any(|c| c.contains("too far behind")));

    // The slow reader now reads: what it was sent, then a comment naming where to resume,
    // then the end of the stream.
    let mut got = Vec::new();
    while let Some(message) = slow.next_incident(Duration::from_secs(10)).await {
        got.push(message);
    }
    assert!(got.len() < total, "it was closed before the end");
    let closing = slow
        .comments
        .iter()
        .find(|c| c.contains("too far behind"))
        .expect("a closing comment")
        .clone();
    let resume_at: u64 = closing.rsplit(' ').next().unwrap().parse().unwrap();
    if let Some(last) = got.last() {
        assert_eq!(
            resume_at, last.id,
            "it resumes right after the last message it got"
        );
    }
    let mut resumed = SseClient::open(&api.server.base, "", None, Some(resume_at)).await;
    let rest = resumed.incidents(total - got.len()).await;
    let mut ids: Vec<u64> = got.iter().chain(&rest).map(|m| m.id).collect();
    let count = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), count, "nothing twice");
    assert_eq!(count, total, "nothing missed");
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    // The slow reader's socket took only part of a message the relay wrote: the rest went
    // out from the stream's own task, before anything else, as what it read shows.
    let partial = api
        .metric("crier_stream_relay_returns_total{reason=\"partial_write\"}")
        .await;
    assert!(partial >= 1.0, "{partial}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_ends_its_stream_and_a_service_filter_hears_the_service_freed() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let publisher = api.key("publisher", None).await;
    let teams = api.service("Teams").await;
    let outlook = api.service("Outlook").await;
    let created = api
        .post(
            "/v1/api-keys",
            ADMIN_SECRET,
            json!({"name": "contoso app", "role": "reader", "tenant": "contoso"}),
        )
        .await
        .expect(201);
    let (key_id, secret) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    let mut keyed = SseClient::open(&api.server.base, "", Some(&secret), None).await;
    let mut teams_only = SseClient::open(
        &api.server.base,
        &format!("?service_id={teams}"),
        None,
        None,
    )
    .await;

    // An incident moves from Teams to Outlook, then is resolved: the Teams subscriber
    // hears the move (it concerns Teams) and not the resolution (it no longer does).
    let declared = api
        .declare(&publisher, incident_body(&teams, "Moving", None, &[]))
        .await;
    let id = declared["id"].as_str().unwrap().to_owned();
    api.post(
        &format!("/v1/incidents/{id}/updates"),
        &publisher,
        json!({"status": "identified", "message": "It is Outlook.",
               "affected_services": [{"service_id": outlook, "status": "partial_outage"}]}),
    )
    .await
    .expect(201);
    update(&api, &publisher, &id, "resolved").await;
    let heard: Vec<String> = teams_only
        .incidents(2)
        .await
        .iter()
        .map(|m| m.event.clone())
        .collect();
    assert_eq!(heard, vec!["incident.declared", "incident.updated"]);
    assert!(teams_only
        .next_incident(Duration::from_millis(500))
        .await
        .is_none());
    assert_eq!(keyed.incidents(3).await.len(), 3);

    // Revoking the key ends its open stream at once.
    api.send(
        reqwest::Method::DELETE,
        &format!("/v1/api-keys/{key_id}"),
        Some(ADMIN_SECRET),
        &[],
        None,
    )
    .await;
    let started = std::time::Instant::now();
    while keyed.next(Duration::from_secs(5)).await.is_some() {}
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stream stayed open"
    );
    assert!(
        keyed.comments.iter().any(|c| c.contains("revoked")),
        "{:?}",
        keyed.comments
    );

    // A position beyond the history is refused, not silently waited on.
    api.send(
        reqwest::Method::GET,
        "/v1/stream",
        None,
        &[("Last-Event-ID", "999999")],
        None,
    )
    .await
    .problem(400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_that_join_and_rejoin_during_concurrent_writes_miss_and_repeat_nothing() {
    let db = TestDatabase::create().await;
    let api = std::sync::Arc::new(Api::start(&db).await);
    let publisher = api.key("publisher", None).await;
    let auditor = api.key("auditor", None).await;
    let teams = api.service("Teams").await;
    let base = api.server.base.clone();
    // One subscriber from the start of the history, joining while writers commit (its
    // catch-up hands over to the ring under load).
    let mut from_start = SseClient::open(&base, "?after=0", None, None).await;

    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (api, publisher, teams) = (api.clone(), publisher.clone(), teams.clone());
            tokio::spawn(async move {
                for n in 0..15 {
                    let declared = api
                        .declare(
                            &publisher,
                            incident_body(&teams, &format!("w{w} #{n}"), None, &[]),
                        )
                        .await;
                    let id = declared["id"].as_str().unwrap().to_owned();
                    update(&api, &publisher, &id, "resolved").await;
                }
            })
        })
        .collect();

    // Another that keeps dropping its connection and resuming with Last-Event-ID.
    let mut hopping: Vec<u64> = Vec::new();
    let mut last = None;
    for _ in 0..6 {
        let mut client = SseClient::open(&base, "", None, last).await;
        if last.is_none() {
            // Its first connection starts "now": note where, to compare from there.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for _ in 0..8 {
            match client.next(Duration::from_millis(500)).await {
                Some(message) => {
                    hopping.push(message.id);
                    last = Some(message.id);
                }
                None => break,
            }
        }
        if last.is_none() {
            last = Some(0);
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    // Drain both until quiet.
    let mut client = SseClient::open(&base, "", None, last).await;
    while let Some(message) = client.next(Duration::from_secs(2)).await {
        hopping.push(message.id);
    }
    let mut started: Vec<u64> = Vec::new();
    while let Some(message) = from_start.next(Duration::from_secs(2)).await {
        started.push(message.id);
    }

    // The notices in the log, in order: every incident and service event.
    let mut notices = Vec::new();
    let mut after = 0;
    loop {
        let page = api
            .get(
                &format!("/v1/audit/events?after={after}&limit=500"),
                Some(&auditor),
            )
            .await
            .expect(200);
        let events = page["events"].as_array().unwrap().clone();
        if events.is_empty() {
            break;
        }
        after = page["next_after"].as_u64().unwrap();
        notices.extend(
            events
                .iter()
                .filter(|e| !e["stream_id"].as_str().unwrap().starts_with("api_key-"))
                .map(|e| e["position"].as_u64().unwrap()),
        );
    }
    assert_eq!(notices.len(), 1 + 4 * 15 * 2);
    assert_eq!(
        started, notices,
        "the subscriber from the start got every notice once, in order"
    );
    let first = *hopping.first().expect("the hopping subscriber got notices");
    let expected: Vec<u64> = notices.iter().copied().filter(|p| *p >= first).collect();
    assert_eq!(
        hopping, expected,
        "the resuming subscriber missed or repeated a notice"
    );
}

/// Right after a (re)start the notice hub is not running yet: a browser's EventSource that
/// reconnects then must be held, not refused (it treats any answer but 200 as final), and
/// every other read answers 503 with Retry-After, never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_opened_before_the_database_is_ready_waits_then_delivers() {
    let db = TestDatabase::reserve();
    let proxy = eventstore::testing::OutageProxy::start().await;
    proxy.cut();
    let server = serve(&proxy.url(&db), &[("CRIER_WRITE_RATE_LIMIT", "0")]);
    let http = reqwest::Client::new();
    wait_for_status(&http, &server.url("/healthz"), 200).await;
    let mut early = SseClient::open(&server.base, "", None, None).await;
    for path in ["/v1/incidents", "/v1/services", "/api/v2/summary.json"] {
        let answer = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(answer.status(), 503, "{path}");
        assert!(answer.headers().contains_key("retry-after"), "{path}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["status"], 503, "{path}: {body}");
    }
    assert!(early.next(Duration::from_millis(1500)).await.is_none());
    assert!(
        early.comments.iter().any(|c| c.contains("starting")),
        "{:?}",
        early.comments
    );

    proxy.restore();
    let api = Api::on(server).await;
    let teams = api.service("Teams").await;
    let comms = api.key("publisher", None).await;
    let declared = api
        .declare(
            &comms,
            json!({"title": "Teams is down", "impact": "major", "message": "Investigating.",
                   "affected_services": [{"service_id": teams, "status": "major_outage"}]}),
        )
        .await;
    let notice = early
        .next_incident(Duration::from_secs(10))
        .await
        .expect("the stream held open gets the notice");
    assert_eq!(notice.event, "incident.declared");
    assert_eq!(notice.data["subject"], declared["id"]);
}
