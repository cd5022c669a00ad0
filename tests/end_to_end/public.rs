//! What everyone reads alike, end to end: the Statuspage v2 API checked field by field
//! against Statuspage's documented shapes, caching with ETag and 304, and the Atom and RSS
//! feeds read by a real feed parser (Python's feedparser).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use eventstore::testing::TestDatabase;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn set(names: &[&'static str]) -> BTreeSet<&'static str> {
    names.iter().copied().collect()
}

fn assert_time(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"));
}

fn assert_page(page: &Value) {
    assert_eq!(
        keys(page),
        set(&["id", "name", "url", "time_zone", "updated_at"])
    );
    assert_time(&page["updated_at"]);
}

const COMPONENT_STATUSES: [&str; 5] = [
    "operational",
    "degraded_performance",
    "partial_outage",
    "major_outage",
    "under_maintenance",
];

fn assert_component(component: &Value, page_id: &Value) {
    let mut expected = set(&[
        "id",
        "name",
        "status",
        "created_at",
        "updated_at",
        "position",
        "description",
        "showcase",
        "start_date",
        "group_id",
        "page_id",
        "group",
        "only_show_if_degraded",
    ]);
    if component["group"] == true {
        expected.insert("components");
        assert!(component["components"].is_array());
    }
    assert_eq!(keys(component), expected, "{component:#}");
    assert!(COMPONENT_STATUSES.contains(&component["status"].as_str().unwrap()));
    assert!(component["position"].as_u64().unwrap() >= 1);
    assert_eq!(&component["page_id"], page_id);
    assert_time(&component["created_at"]);
    assert_time(&component["updated_at"]);
}

/// An incident or a scheduled maintenance, with its updates.
fn assert_incident(incident: &Value, page_id: &Value, maintenance: bool) {
    let mut expected = set(&[
        "id",
        "name",
        "status",
        "created_at",
        "updated_at",
        "monitoring_at",
        "resolved_at",
        "impact",
        "shortlink",
        "started_at",
        "page_id",
        "incident_updates",
        "components",
    ]);
    let (statuses, impacts): (&[&str], &[&str]) = if maintenance {
        expected.extend(["scheduled_for", "scheduled_until"]);
        assert_time(&incident["scheduled_for"]);
        assert_time(&incident["scheduled_until"]);
        (
            &["scheduled", "in_progress", "verifying", "completed"],
            &["maintenance"],
        )
    } else {
        (
            &[
                "investigating",
                "identified",
                "monitoring",
                "resolved",
                "postmortem",
            ],
            &["none", "minor", "major", "critical"],
        )
    };
    assert_eq!(keys(incident), expected, "{incident:#}");
    assert!(statuses.contains(&incident["status"].as_str().unwrap()));
    assert!(impacts.contains(&incident["impact"].as_str().unwrap()));
    assert_eq!(&incident["page_id"], page_id);
    for field in ["created_at", "updated_at", "started_at"] {
        assert_time(&incident[field]);
    }
    let updates = incident["incident_updates"].as_array().unwrap();
    assert!(!updates.is_empty());
    let mut previous: Option<&str> = None;
    for update in updates {
        assert_eq!(
            keys(update),
            set(&[
                "id",
                "status",
                "body",
                "incident_id",
                "created_at",
                "updated_at",
                "display_at",
                "affected_components",
                "deliver_notifications",
                "custom_tweet",
                "tweet_id",
            ]),
            "{update:#}"
        );
        assert_eq!(update["incident_id"], incident["id"]);
        // Newest first.
        let created = update["created_at"].as_str().unwrap();
        assert!(previous.is_none_or(|p| p >= created));
        previous = Some(created);
        for affected in update["affected_components"].as_array().unwrap() {
            assert_eq!(
                keys(affected),
                set(&["code", "name", "old_status", "new_status"])
            );
            for status in ["old_status", "new_status"] {
                assert!(COMPONENT_STATUSES.contains(&affected[status].as_str().unwrap()));
            }
        }
    }
    for component in incident["components"].as_array().unwrap() {
        assert_component(component, page_id);
    }
}

async fn document(api: &Api, path: &str, key: Option<&str>) -> Value {
    let answer = api.get(path, key).await;
    assert_eq!(answer.status, 200, "{path}: {:#}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("cache-control"), Some("public, max-age=5"));
    assert!(answer.header("etag").is_some());
    answer.body
}

/// Waits until the documents show a change made a moment ago.
async fn eventually<F: Fn(&Value) -> bool>(api: &Api, path: &str, ready: F) -> Value {
    for _ in 0..100 {
        let body = document(api, path, None).await;
        if ready(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never showed the change");
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statuspage_api_has_statuspages_shapes_and_public_notices_only() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(
        &db,
        &[
            ("CRIER_WRITE_RATE_LIMIT", "0"),
            ("CRIER_PAGE_NAME", "Contoso status"),
            ("CRIER_PUBLIC_URL", "https://status.contoso.example/"),
        ],
    )
    .await;
    let publisher = api.key("publisher", None).await;
    let tenant_reader = api.key("reader", Some("fabrikam")).await;
    let teams = api.service("Teams").await;
    let outlook = api.service("Outlook").await;
    let portal = api
        .post(
            "/v1/services",
            ADMIN_SECRET,
            json!({"name": "Billing portal", "description": "Invoices and payments"}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Nothing happening yet.
    let status = document(&api, "/api/v2/status.json", None).await;
    assert_eq!(keys(&status), set(&["page", "status"]));
    assert_eq!(
        status["status"],
        json!({"indicator": "none", "description": "All Systems Operational"})
    );
    assert_eq!(status["page"]["name"], "Contoso status");
    assert_eq!(status["page"]["url"], "https://status.contoso.example");
    assert_eq!(status["page"]["time_zone"], "Etc/UTC");

    // A resolved incident with a postmortem, an open one, one private to a tenant, an
    // upcoming maintenance and an active one.
    let resolved = api
        .declare(
            &publisher,
            json!({"title": "Mail delays", "impact": "minor", "message": "Looking.",
                   "affected_services": [{"service_id": outlook, "status": "degraded_performance"}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for status in ["identified", "resolved"] {
        api.post(
            &format!("/v1/incidents/{resolved}/updates"),
            &publisher,
            json!({"status": status, "message": format!("Now {status}.")}),
        )
        .await
        .expect(201);
    }
    api.post(
        &format!("/v1/incidents/{resolved}/postmortem"),
        &publisher,
        json!({"body": "A certificate expired."}),
    )
    .await
    .expect(201);
    let open = api
        .declare(
            &publisher,
            json!({"title": "Users cannot sign in to Teams", "impact": "major",
                   "message": "We are investigating.",
                   "affected_services": [{"service_id": teams, "status": "partial_outage"}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let private = api
        .declare(
            &publisher,
            json!({"title": "Fabrikam tenant migration failing", "impact": "critical",
                   "message": "Only Fabrikam is affected.",
                   "audience": {"visibility": "tenants", "tenants": ["fabrikam"]},
                   "affected_services": [{"service_id": portal, "status": "major_outage"}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let window = |hours: i64| (chrono::Utc::now() + chrono::Duration::hours(hours)).to_rfc3339();
    let upcoming = api
        .post(
            "/v1/maintenances",
            &publisher,
            json!({"title": "Database upgrade", "message": "Planned.", "affected_services": [outlook],
                   "starts_at": window(24), "ends_at": window(26)}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let active = api
        .post(
            "/v1/maintenances",
            &publisher,
            json!({"title": "Portal redeploy", "message": "Planned.", "affected_services": [portal],
                   "starts_at": window(0), "ends_at": window(1)}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.post(
        &format!("/v1/maintenances/{active}/updates"),
        &publisher,
        json!({"status": "in_progress", "message": "Started."}),
    )
    .await
    .expect(201);

    let summary = eventually(&api, "/api/v2/summary.json", |s| {
        s["scheduled_maintenances"].as_array().map(Vec::len) == Some(2)
            && s["components"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["status"] == "under_maintenance")
    })
    .await;
    assert_eq!(
        keys(&summary),
        set(&[
            "page",
            "components",
            "incidents",
            "scheduled_maintenances",
            "status"
        ])
    );
    assert_page(&summary["page"]);
    let page_id = summary["page"]["id"].clone();
    for component in summary["components"].as_array().unwrap() {
        assert_component(component, &page_id);
    }
    for incident in summary["incidents"].as_array().unwrap() {
        assert_incident(incident, &page_id, false);
    }
    for maintenance in summary["scheduled_maintenances"].as_array().unwrap() {
        assert_incident(maintenance, &page_id, true);
    }
    // The open public incident only; the private one changes nothing anyone sees here.
    assert_eq!(ids(&summary["incidents"]), vec![open.as_str()]);
    assert_eq!(
        summary["status"],
        json!({"indicator": "major", "description": "Partial System Outage"})
    );
    let by_name = |name: &str| {
        summary["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no component {name}"))
            .clone()
    };
    assert_eq!(by_name("Teams")["status"], "partial_outage");
    assert_eq!(by_name("Outlook")["status"], "operational");
    assert_eq!(by_name("Billing portal")["status"], "under_maintenance");
    assert_eq!(
        by_name("Billing portal")["description"],
        "Invoices and payments"
    );
    // Grouped services sit under a group component that names them.
    let group = by_name("Microsoft 365");
    assert_eq!(group["group"], true);
    assert_eq!(group["status"], "partial_outage");
    let members: BTreeSet<&str> = group["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(members, [teams.as_str(), outlook.as_str()].into());
    assert_eq!(by_name("Teams")["group_id"], group["id"]);
    assert_eq!(by_name("Billing portal")["group_id"], Value::Null);
    let positions: Vec<u64> = summary["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (1..=positions.len() as u64).collect::<Vec<_>>());

    let open_incident = &summary["incidents"][0];
    assert_eq!(open_incident["name"], "Users cannot sign in to Teams");
    assert_eq!(open_incident["impact"], "major");
    assert_eq!(
        open_incident["shortlink"],
        format!("https://status.contoso.example/v1/incidents/{open}")
    );
    assert_eq!(
        open_incident["incident_updates"][0]["affected_components"],
        json!([{"code": teams, "name": "Teams", "old_status": "operational", "new_status": "partial_outage"}])
    );

    // incidents.json: the recent public ones, resolved with a postmortem shown as such.
    let incidents = document(&api, "/api/v2/incidents.json", Some(&tenant_reader)).await;
    assert_eq!(keys(&incidents), set(&["page", "incidents"]));
    let listed = ids(&incidents["incidents"]);
    assert!(listed.contains(&open.as_str()) && listed.contains(&resolved.as_str()));
    assert!(
        !listed.contains(&private.as_str()),
        "a tenant's notice leaked"
    );
    let done = incidents["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == resolved.as_str())
        .unwrap();
    assert_incident(done, &page_id, false);
    assert_eq!(done["status"], "postmortem");
    assert_time(&done["resolved_at"]);
    let statuses: Vec<&str> = done["incident_updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["resolved", "identified", "investigating"]);
    assert_eq!(
        done["incident_updates"][0]["affected_components"][0]["new_status"],
        "operational"
    );
    let unresolved = document(&api, "/api/v2/incidents/unresolved.json", None).await;
    assert_eq!(ids(&unresolved["incidents"]), vec![open.as_str()]);

    // Maintenances: every recent one, the upcoming one, the active one.
    let all = document(&api, "/api/v2/scheduled-maintenances.json", None).await;
    assert_eq!(keys(&all), set(&["page", "scheduled_maintenances"]));
    assert_eq!(all["scheduled_maintenances"].as_array().unwrap().len(), 2);
    // A later one scheduled after it: upcoming lists the soonest first.
    let later = api
        .post(
            "/v1/maintenances",
            &publisher,
            json!({"title": "Later upgrade", "message": "Planned.", "affected_services": [outlook],
                   "starts_at": window(48), "ends_at": window(50)}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let upcoming_doc = document(&api, "/api/v2/scheduled-maintenances/upcoming.json", None).await;
    assert_eq!(
        ids(&upcoming_doc["scheduled_maintenances"]),
        vec![upcoming.as_str(), later.as_str()]
    );
    assert_eq!(
        upcoming_doc["scheduled_maintenances"][0]["status"],
        "scheduled"
    );
    let active_doc = document(&api, "/api/v2/scheduled-maintenances/active.json", None).await;
    assert_eq!(
        ids(&active_doc["scheduled_maintenances"]),
        vec![active.as_str()]
    );
    assert_eq!(
        active_doc["scheduled_maintenances"][0]["status"],
        "in_progress"
    );
    assert_eq!(
        active_doc["scheduled_maintenances"][0]["impact"],
        "maintenance"
    );
    let components = document(&api, "/api/v2/components.json", None).await;
    assert_eq!(keys(&components), set(&["page", "components"]));
    assert_eq!(components["components"], summary["components"]);

    // Only GET (and HEAD).
    api.send(
        Method::POST,
        "/api/v2/summary.json",
        None,
        &[],
        Some(&json!({})),
    )
    .await
    .problem(405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_documents_are_cacheable_and_change_when_the_history_does() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let publisher = api.key("publisher", None).await;
    let teams = api.service("Teams").await;
    for path in [
        "/api/v2/summary.json",
        "/api/v2/status.json",
        "/v1/feed.atom",
        "/v1/feed.rss",
    ] {
        let first = api.get(path, None).await;
        assert_eq!(first.status, 200);
        let etag = first.header("etag").unwrap().to_owned();
        let again = api
            .send(Method::GET, path, None, &[("If-None-Match", &etag)], None)
            .await;
        assert_eq!(again.status, 304, "{path}");
        assert_eq!(again.header("etag"), Some(etag.as_str()));
        assert_eq!(again.header("cache-control"), Some("public, max-age=5"));
        assert_eq!(again.body, Value::Null, "a 304 has no body");
        let other = api
            .send(
                Method::GET,
                path,
                None,
                &[("If-None-Match", "\"something-else\"")],
                None,
            )
            .await;
        assert_eq!(other.status, 200);
    }
    let head = api
        .send(Method::HEAD, "/api/v2/summary.json", None, &[], None)
        .await;
    assert_eq!(head.status, 200);
    assert!(head.header("etag").is_some());
    assert_eq!(head.body, Value::Null, "HEAD has no body");
    let before = api.get("/api/v2/status.json", None).await;
    let etag = before.header("etag").unwrap().to_owned();
    api.declare(
        &publisher,
        json!({"title": "Calls drop", "impact": "critical", "message": "Looking.",
               "affected_services": [{"service_id": teams, "status": "major_outage"}]}),
    )
    .await;
    // The process that took the write serves the new status at once (read-your-writes),
    // with a new validator.
    let after = document(&api, "/api/v2/status.json", None).await;
    assert_eq!(after["status"]["indicator"], "critical");
    assert_eq!(after["status"]["description"], "Major System Outage");
    let changed = api
        .send(
            Method::GET,
            "/api/v2/status.json",
            None,
            &[("If-None-Match", &etag)],
            None,
        )
        .await;
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
}

/// Every browser asks for gzip. The documents polled during an outage (the Statuspage API,
/// the feeds, the status page, a notice) go out gzipped to a client that takes gzip, from
/// bytes compressed once: the same document as the plain bytes, under the same validator,
/// and caches are told that the answer varies with `Accept-Encoding`. A client that refuses
/// gzip (`q=0`) or does not ask gets the bytes as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_documents_go_out_gzipped_to_clients_that_take_gzip() {
    use std::io::Read;
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let publisher = api.key("publisher", None).await;
    let teams = api.service("Teams").await;
    let long =
        "Sign-in fails for users whose tokens were refreshed after the rotation. ".repeat(20);
    let incident = api
        .declare(
            &publisher,
            json!({"title": "Users cannot sign in", "impact": "major", "message": long,
                   "affected_services": [{"service_id": teams, "status": "major_outage"}]}),
        )
        .await;
    let notice = format!("/v1/incidents/{}", incident["id"].as_str().unwrap());
    for path in [
        "/api/v2/summary.json",
        "/v1/feed.atom",
        "/v1/feed.rss",
        "/",
        notice.as_str(),
    ] {
        let get = |accept: &'static str| {
            api.http
                .get(api.server.url(path))
                .header("Accept-Encoding", accept)
                .send()
        };
        // The page shows times, so two requests a second apart may see two renderings:
        // compared are a plain and a gzipped answer of one rendering (one ETag).
        let mut same_rendering = None;
        for _ in 0..5 {
            let plain = get("identity").await.unwrap();
            assert_eq!(plain.status(), 200, "{path}");
            assert_eq!(plain.headers().get("content-encoding"), None, "{path}");
            let vary = plain.headers().get("vary").unwrap().to_str().unwrap();
            assert!(vary.contains("Accept-Encoding"), "{path}: {vary}");
            let etag = plain.headers().get("etag").unwrap().clone();
            let plain = plain.bytes().await.unwrap();
            assert!(plain.len() > 1024, "{path}: {} bytes", plain.len());

            let gzipped = get("br;q=1.0, gzip;q=0.8").await.unwrap();
            assert_eq!(gzipped.status(), 200, "{path}");
            assert_eq!(
                gzipped.headers().get("content-encoding").unwrap(),
                "gzip",
                "{path}"
            );
            let vary = gzipped.headers().get("vary").unwrap().to_str().unwrap();
            assert!(vary.contains("Accept-Encoding"), "{path}: {vary}");
            if gzipped.headers().get("etag") == Some(&etag) {
                same_rendering = Some((plain, gzipped.bytes().await.unwrap()));
                break;
            }
        }
        let (plain, compressed) = same_rendering.expect("two answers of one rendering");
        assert!(compressed.len() < plain.len() / 2, "{path}");
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut unpacked)
            .unwrap();
        assert_eq!(unpacked, plain, "{path}: gzipped, the same bytes");

        let refused = get("gzip;q=0").await.unwrap();
        assert_eq!(refused.headers().get("content-encoding"), None, "{path}");
        let unasked = api.http.get(api.server.url(path)).send().await.unwrap();
        assert_eq!(unasked.headers().get("content-encoding"), None, "{path}");
    }
}

/// A Python virtual environment with feedparser (from PyPI), made once in the target
/// directory.
fn feedparser_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/feedparser");
    let python = venv.join("bin/python");
    if venv.join("installed").exists() {
        return python;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 makes a virtual environment");
    assert!(made.success());
    let installed = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "feedparser==6.0.11"])
        .status()
        .expect("pip runs");
    assert!(installed.success(), "pip could not install feedparser");
    std::fs::write(venv.join("installed"), "").unwrap();
    python
}

const READ_FEED: &str = r#"
import json, sys, feedparser
feed = feedparser.parse(sys.stdin.buffer.read())
print(json.dumps({
    "bozo": bool(feed.bozo),
    "problem": str(feed.get("bozo_exception", "")),
    "version": feed.version,
    "title": feed.feed.get("title"),
    "self": [l["href"] for l in feed.feed.get("links", []) if l.get("rel") == "self"],
    "entries": [{"id": e.get("id"), "title": e.get("title"), "link": e.get("link"),
                 "summary": e.get("summary"), "published": e.get("published")}
                for e in feed.entries],
}))
"#;

async fn parse_feed(body: String) -> Value {
    let python = tokio::task::spawn_blocking(feedparser_python)
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(python)
            .args(["-c", READ_FEED])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run feedparser");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_readers_parse_the_atom_and_rss_feeds_newest_first_with_public_updates_only() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(
        &db,
        &[
            ("CRIER_WRITE_RATE_LIMIT", "0"),
            ("CRIER_PAGE_NAME", "Contoso status"),
            ("CRIER_PUBLIC_URL", "https://status.contoso.example"),
        ],
    )
    .await;
    let publisher = api.key("publisher", None).await;
    let teams = api.service("Teams").await;
    let incident = api
        .declare(
            &publisher,
            json!({"title": "Sign-in <fails> & \"retries\"", "impact": "major",
                   "message": "We are investigating <b>not bold</b> & more.",
                   "affected_services": [{"service_id": teams, "status": "major_outage"}]}),
        )
        .await;
    let id = incident["id"].as_str().unwrap().to_owned();
    api.post(
        &format!("/v1/incidents/{id}/updates"),
        &publisher,
        json!({"status": "resolved", "message": "Fixed.",
               "client_action": {"kind": "restart_client", "message": RESTART}}),
    )
    .await
    .expect(201);
    api.declare(
        &publisher,
        json!({"title": "Fabrikam only", "impact": "minor", "message": "Private.",
               "audience": {"visibility": "tenants", "tenants": ["fabrikam"]},
               "affected_services": [{"service_id": teams, "status": "degraded_performance"}]}),
    )
    .await;

    for (path, version, content_type) in [
        (
            "/v1/feed.atom",
            "atom10",
            "application/atom+xml; charset=utf-8",
        ),
        (
            "/v1/feed.rss",
            "rss20",
            "application/rss+xml; charset=utf-8",
        ),
    ] {
        let mut parsed = Value::Null;
        for _ in 0..50 {
            let response = api
                .http
                .get(api.server.url(path))
                .send()
                .await
                .expect("feed");
            assert_eq!(response.status(), 200);
            assert_eq!(
                response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                Some(content_type)
            );
            parsed = parse_feed(response.text().await.unwrap()).await;
            if parsed["entries"].as_array().map(Vec::len) == Some(2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(parsed["bozo"], false, "{path}: {parsed:#}");
        assert_eq!(parsed["version"], version);
        assert_eq!(parsed["title"], "Contoso status");
        assert_eq!(
            parsed["self"],
            json!([format!("https://status.contoso.example{path}")])
        );
        let entries = parsed["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "{path}: the private update is not in it");
        // Newest first: the resolution, then the declaration. RSS readers take a title as
        // HTML, so it arrives escaped for HTML: a reader shows the characters, never markup.
        let title = |status: &str| {
            let text = format!("Sign-in <fails> & \"retries\" — {status}");
            if version == "atom10" {
                text
            } else {
                text.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('"', "&quot;")
            }
        };
        assert_eq!(entries[0]["title"], title("Resolved"));
        // What to do comes first: the sentence a reader most needs.
        assert_eq!(
            entries[0]["summary"],
            format!("What to do now: {RESTART}\n\nFixed.")
        );
        assert_eq!(entries[1]["title"], title("Investigating"));
        // Plain text everywhere: Atom says so (`type="text"`); an RSS description is HTML,
        // so the text arrives escaped and a reader shows the characters, not markup.
        let expected = if version == "atom10" {
            "We are investigating <b>not bold</b> & more."
        } else {
            "We are investigating &lt;b&gt;not bold&lt;/b&gt; &amp; more."
        };
        assert_eq!(
            entries[1]["summary"],
            format!("What to do now: {RESTART}\n\n{expected}")
        );
        for entry in entries {
            assert_eq!(
                entry["link"],
                format!("https://status.contoso.example/v1/incidents/{id}")
            );
            assert!(entry["id"].as_str().unwrap().starts_with("urn:uuid:"));
            assert!(entry["published"].is_string());
        }
    }

    // A tenant's key adds its tenant's notices, in an answer no shared cache keeps.
    let fabrikam = api.key("reader", Some("fabrikam")).await;
    let response = api
        .http
        .get(api.server.url("/v1/feed.atom"))
        .bearer_auth(&fabrikam)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("private, max-age=5")
    );
    let parsed = parse_feed(response.text().await.unwrap()).await;
    let titles: Vec<&str> = parsed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles.len(), 3);
    assert_eq!(titles[0], "Fabrikam only — Investigating");
}
