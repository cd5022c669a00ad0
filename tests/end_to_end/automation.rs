//! Work that runs itself: maintenances that remind, start and complete on time, once,
//! whatever the number of processes, and that leave a publisher's own move alone.
//!
//! Time is real but short: maintenances start two or three seconds ahead, and the
//! scheduler looks every 100 ms (`CRIER_SCHEDULER_INTERVAL_MS`). A reminder goes only to a
//! maintenance announced before its reminder window opened, and the shortest window is a
//! minute: the tests of reminders wait a little over one.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::support::*;
use eventstore::testing::TestDatabase;

const FAST: [(&str, &str); 2] = [
    ("CRIER_WRITE_RATE_LIMIT", "0"),
    ("CRIER_SCHEDULER_INTERVAL_MS", "100"),
];

/// A time `seconds` from now, as the API takes it.
fn in_seconds(seconds: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn maintenance(service: &str, starts: i64, ends: i64) -> Value {
    json!({
        "title": "Exchange database upgrade",
        "message": "Mail may be delayed.",
        "affected_services": [service],
        "starts_at": in_seconds(starts),
        "ends_at": in_seconds(ends),
    })
}

/// The stream's events of `id` as the audit API lists them (sealed ones), waiting until
/// `done` holds (at most 15 s).
async fn history(api: &Api, id: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let answer = api
            .get(
                &format!("/v1/audit/streams/maintenance-{id}/events"),
                Some(ADMIN_SECRET),
            )
            .await
            .expect(200);
        let events = answer["events"].as_array().unwrap().clone();
        if done(&events) || tokio::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (type, status) of each event, in stream order.
fn moves(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["data"]["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn completed(events: &[Value]) -> bool {
    events.iter().any(|e| e["data"]["status"] == "completed")
}

#[tokio::test]
async fn a_maintenance_reminds_starts_and_completes_on_time_once_as_the_system() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(&db, &FAST).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Exchange").await;
    let base = api.server.url("");
    let mut stream = SseClient::open(base.trim_end_matches('/'), "", None, None).await;
    // Its reminder window opens 8 s after the announcement (time enough for the POST).
    let mut body = maintenance(&service, 68, 70);
    body["remind_before_minutes"] = json!(1);
    let scheduled = api
        .post("/v1/maintenances", &publisher, body)
        .await
        .expect(201);
    assert_eq!(
        (
            &scheduled["auto_start"],
            &scheduled["auto_complete"],
            &scheduled["remind_before_minutes"]
        ),
        (&json!(true), &json!(true), &json!(1))
    );
    let id = scheduled["id"].as_str().unwrap().to_owned();
    // Announced inside its window: the announcement was the reminder.
    let mut inside = maintenance(&service, 3, 4);
    inside["remind_before_minutes"] = json!(1);
    let inside = api
        .post("/v1/maintenances", &publisher, inside)
        .await
        .expect(201);

    let mut heard = Vec::new();
    while heard.len() < 4 {
        let Some(message) = stream.next(Duration::from_secs(75)).await else {
            break;
        };
        if message.event.starts_with("maintenance.") && message.data["data"]["id"] == id {
            heard.push(message);
        }
    }
    let types: Vec<&str> = heard.iter().map(|m| m.event.as_str()).collect();
    assert_eq!(
        types,
        [
            "maintenance.scheduled",
            "maintenance.reminder",
            "maintenance.updated",
            "maintenance.updated"
        ]
    );
    assert_eq!(heard[2].data["data"]["status"], "in_progress");
    assert_eq!(heard[3].data["data"]["status"], "completed");
    // Not before its time.
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let started_at = time(&heard[2].data["data"]["updates"][1]["created_at"]);
    assert!(started_at >= time(&scheduled["starts_at"]), "{started_at}");

    let events = history(&api, &id, completed).await;
    assert_eq!(
        moves(&events),
        [
            ("maintenance.scheduled".into(), "".into()),
            ("maintenance.reminder_sent".into(), "".into()),
            ("maintenance.update_posted".into(), "in_progress".into()),
            ("maintenance.update_posted".into(), "completed".into()),
        ]
    );
    for event in &events[1..] {
        assert_eq!(event["metadata"]["actor"], "system", "{event:#}");
    }
    let now = api
        .get(&format!("/v1/maintenances/{id}?lang=cy"), None)
        .await
        .expect(200);
    assert_eq!(now["status"], "completed");
    assert_eq!(now["updates"][1]["author"], "system");
    assert_eq!(
        now["updates"][1]["message"],
        "Mae'r gwaith cynnal wedi dechrau."
    );
    assert!(now["reminded_at"].is_string());

    let inside_events = history(&api, inside["id"].as_str().unwrap(), completed).await;
    assert_eq!(
        moves(&inside_events)[1..],
        [
            ("maintenance.update_posted".into(), "in_progress".into()),
            ("maintenance.update_posted".into(), "completed".into()),
        ],
        "no reminder seconds after the announcement"
    );
}

#[tokio::test]
async fn a_publishers_own_move_first_wins_and_the_scheduler_then_does_nothing() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(&db, &FAST).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Exchange").await;
    // Due a few seconds ahead, so that the publisher's moves come first even on a busy
    // machine. Without reminders: one due at once (60 minutes before a start seconds away)
    // would be the scheduler's move before the publisher's, a race this test is not about.
    let unreminded = |starts, ends| {
        let mut body = maintenance(&service, starts, ends);
        body["remind_before_minutes"] = json!(0);
        body
    };
    let cancelled = api
        .post("/v1/maintenances", &publisher, unreminded(3, 4))
        .await
        .expect(201);
    let cancelled_id = cancelled["id"].as_str().unwrap().to_owned();
    api.post(
        &format!("/v1/maintenances/{cancelled_id}/updates"),
        &publisher,
        json!({"status": "cancelled", "message": "Postponed."}),
    )
    .await
    .expect(201);
    let mut manual = maintenance(&service, 1, 2);
    manual["auto_start"] = json!(false);
    manual["auto_complete"] = json!(false);
    manual["remind_before_minutes"] = json!(0);
    let manual = api
        .post("/v1/maintenances", &publisher, manual)
        .await
        .expect(201);
    let early = api
        .post("/v1/maintenances", &publisher, unreminded(4, 5))
        .await
        .expect(201);
    let early_id = early["id"].as_str().unwrap().to_owned();
    api.post(
        &format!("/v1/maintenances/{early_id}/updates"),
        &publisher,
        json!({"status": "in_progress", "message": "Started early."}),
    )
    .await
    .expect(201);

    let early_events = history(&api, &early_id, completed).await;
    assert_eq!(
        moves(&early_events)[1..],
        [
            ("maintenance.update_posted".into(), "in_progress".into()),
            ("maintenance.update_posted".into(), "completed".into()),
        ],
        "started by hand, completed by the scheduler, never started twice"
    );
    // The others were due before the early one completed: a look now shows all there is.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancelled_events = history(&api, &cancelled_id, |_| true).await;
    assert_eq!(cancelled_events.len(), 2, "{cancelled_events:#?}");
    let manual_events = history(&api, manual["id"].as_str().unwrap(), |_| true).await;
    assert_eq!(manual_events.len(), 1, "{manual_events:#?}");
}

#[tokio::test]
async fn three_processes_one_killed_at_the_moment_make_each_move_exactly_once() {
    let db = TestDatabase::create().await;
    let fast = [
        ("CRIER_WRITE_RATE_LIMIT", "0"),
        ("CRIER_SCHEDULER_INTERVAL_MS", "20"),
    ];
    let first = Api::start_with(&db, &fast).await;
    let second = Api::start_with(&db, &fast).await;
    let victim = Api::start_with(&db, &fast).await;
    let publisher = first.key("publisher", None).await;
    let service = first.service("Exchange").await;
    let mut ids = Vec::new();
    // Reminded 6 s after they are announced (while all three processes run), started a
    // minute later (as one is killed).
    for _ in 0..3 {
        let mut body = maintenance(&service, 66, 67);
        body["remind_before_minutes"] = json!(1);
        let created = first
            .post("/v1/maintenances", &publisher, body)
            .await
            .expect(201);
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    // kill -9 of one scheduler at the moment the maintenances are due.
    tokio::time::sleep(Duration::from_millis(65_950)).await;
    let mut victim = victim.server;
    victim.child.kill().expect("kill -9");
    for id in &ids {
        let events = history(&second, id, completed).await;
        assert_eq!(
            moves(&events),
            [
                ("maintenance.scheduled".into(), "".into()),
                ("maintenance.reminder_sent".into(), "".into()),
                ("maintenance.update_posted".into(), "in_progress".into()),
                ("maintenance.update_posted".into(), "completed".into()),
            ],
            "{id}"
        );
    }
    drop(first);
}

#[tokio::test]
async fn a_process_started_after_the_time_catches_up_at_once() {
    let db = TestDatabase::create().await;
    let asleep = Api::start_with(
        &db,
        &[
            ("CRIER_WRITE_RATE_LIMIT", "0"),
            ("CRIER_SCHEDULER_INTERVAL_MS", "600000"),
        ],
    )
    .await;
    let publisher = asleep.key("publisher", None).await;
    let service = asleep.service("Exchange").await;
    let created = asleep
        .post("/v1/maintenances", &publisher, maintenance(&service, 1, 2))
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        history(&asleep, &id, |_| true).await.len(),
        1,
        "nobody was looking"
    );
    drop(asleep);
    let api = Api::start_with(&db, &FAST).await;
    let events = history(&api, &id, completed).await;
    assert_eq!(
        moves(&events)[1..],
        [
            ("maintenance.update_posted".into(), "in_progress".into()),
            ("maintenance.update_posted".into(), "completed".into()),
        ]
    );
}

#[tokio::test]
async fn bad_schedules_are_refused_naming_the_field_and_nothing_is_written() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Exchange").await;
    let backwards = maintenance(&service, 60, 30);
    let mut long_reminder = maintenance(&service, 60, 120);
    long_reminder["remind_before_minutes"] = json!(525_601);
    let mut negative = maintenance(&service, 60, 120);
    negative["remind_before_minutes"] = json!(-1);
    for (body, field) in [
        (backwards, Some("ends_at")),
        (long_reminder, Some("remind_before_minutes")),
        (negative, None),
    ] {
        let problem = api
            .post("/v1/maintenances", &publisher, body)
            .await
            .problem(400);
        if let Some(field) = field {
            assert_eq!(problem["errors"][0]["field"], field, "{problem:#}");
        }
    }
    let listed = api.get("/v1/maintenances", None).await.expect(200);
    assert_eq!(listed["items"], json!([]));
}
