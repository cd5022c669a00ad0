//! The status page as people use it: read with and without JavaScript, in English and
//! Welsh, checked by axe-core in Debian's headless Chromium in both colour schemes and at
//! 320 px, by keyboard, updating itself within a second of a notice; the subscription
//! form; and the uptime a service's bar is drawn from.

use std::path::Path;
use std::time::Duration;

use eventstore::testing::TestDatabase;
use serde_json::{json, Value};
use tokio::process::Command;

use crate::support::*;

/// What the seeded page holds.
struct Seeded {
    api: Api,
    comms: String,
    teams: String,
    outage: String,
    private: String,
    resolved: String,
}

const ACTION: &str =
    "If a user is still experiencing impact, they need to restart their clients to recover.";

/// A Teams outage (restart your clients, in English and Welsh, its first update
/// corrected), a private incident of tenant contoso, a resolved one with a postmortem, and
/// a maintenance tomorrow.
async fn seeded(db: &TestDatabase, env: &[(&str, &str)]) -> Seeded {
    let mut env = env.to_vec();
    env.push(("CRIER_WRITE_RATE_LIMIT", "0"));
    env.push(("CRIER_PAGE_NAME", "NHS Wales service status"));
    let api = Api::start_with(db, &env).await;
    let teams = api.service("Microsoft Teams").await;
    let exchange = api.service("Exchange Online").await;
    let comms = api.key("publisher", None).await;
    let outage = api
        .declare(
            &comms,
            json!({
                "title": "Teams: users cannot sign in",
                "impact": "major",
                "message": "We are looking into sign-in failures.",
                "affected_services": [{"service_id": teams, "status": "major_outage"},
                                      {"service_id": exchange, "status": "degraded_performance"}],
                "client_action": {"kind": "restart_client", "message": ACTION},
                "translations": {"cy": {
                    "title": "Teams: ni all defnyddwyr fewngofnodi",
                    "message": "Rydym yn ymchwilio.",
                    "client_action": {"message": "Ailgychwynnwch eich rhaglen i adfer."}}},
            }),
        )
        .await;
    let outage_id = outage["id"].as_str().unwrap().to_owned();
    let first_update = outage["updates"][0]["id"].as_str().unwrap().to_owned();
    api.post(
        &format!("/v1/incidents/{outage_id}/updates/{first_update}/corrections"),
        &comms,
        json!({"message": "We are investigating sign-in failures in Europe.", "reason": "scope"}),
    )
    .await
    .expect(201);
    api.post(
        &format!("/v1/incidents/{outage_id}/updates"),
        &comms,
        json!({"status": "identified", "message": "An expired certificate broke token refresh."}),
    )
    .await
    .expect(201);

    let private = api
        .declare(
            &comms,
            json!({"title": "Contoso private outage", "impact": "minor", "message": "Private.",
                   "affected_services": [{"service_id": teams, "status": "partial_outage"}],
                   "audience": {"visibility": "tenants", "tenants": ["contoso"]}}),
        )
        .await;
    let resolved = api
        .declare(
            &comms,
            json!({"title": "Exchange mail delayed", "impact": "minor", "message": "Mail is slow.",
                   "affected_services": [{"service_id": exchange, "status": "degraded_performance"}]}),
        )
        .await;
    let resolved_id = resolved["id"].as_str().unwrap().to_owned();
    api.post(
        &format!("/v1/incidents/{resolved_id}/updates"),
        &comms,
        json!({"status": "resolved", "message": "Mail flows again."}),
    )
    .await
    .expect(201);
    api.post(
        &format!("/v1/incidents/{resolved_id}/postmortem"),
        &comms,
        json!({"body": "A queue filled up after a failover."}),
    )
    .await
    .expect(201);
    let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    api.post(
        "/v1/maintenances",
        &comms,
        json!({"title": "Mailbox moves", "message": "Mail may be slow.",
               "affected_services": [exchange],
               "starts_at": tomorrow.to_rfc3339(),
               "ends_at": (tomorrow + chrono::Duration::hours(2)).to_rfc3339()}),
    )
    .await
    .expect(201);
    Seeded {
        api,
        comms,
        teams,
        outage: outage_id,
        private: private["id"].as_str().unwrap().to_owned(),
        resolved: resolved_id,
    }
}

/// Runs `tools/browser/page.mjs` with `args` and returns the JSON line it printed.
async fn driver(tools: &Path, args: &[&str]) -> Value {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new("node")
            .arg(tools.join("page.mjs"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser driver finished in time")
    .expect("node runs the browser driver");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "page.mjs {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|_| panic!("page.mjs said: {stdout}"))
}

async fn html(
    api: &Api,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = api.http.get(api.server.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_tells_what_is_happening_without_javascript_in_the_readers_language() {
    let tools = tokio::task::spawn_blocking(browser_tools).await.unwrap();
    let sink = SmtpSink::start();
    let db = TestDatabase::create().await;
    let smtp = sink.url();
    let s = seeded(&db, &[("CRIER_SMTP_URL", &smtp)]).await;
    let api = &s.api;

    // Served from memory with a validator; strict about what it loads; small.
    let (status, headers, page) = html(api, "/", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(
        page.starts_with("<!doctype html>\n<html lang=\"en\""),
        "{page}"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing from another origin"
    );
    // The same rendering answers 304 (the page is rendered again once the log moves, or
    // after a second: the uptime of an outage today changes as time goes on).
    let mut etag = headers["etag"].to_str().unwrap().to_owned();
    let mut revalidated = Vec::new();
    for _ in 0..5 {
        let (again, headers, _) = html(api, "/", &[("If-None-Match", &etag)]).await;
        revalidated.push(again);
        if again == 304 {
            break;
        }
        etag = headers["etag"].to_str().unwrap().to_owned();
    }
    assert_eq!(revalidated.last(), Some(&304), "{revalidated:?}");
    let (_, _, css) = html(api, "/assets/page.css", &[]).await;
    let (_, _, js) = html(api, "/assets/live.js", &[]).await;
    let weight = page.len() + css.len() + js.len();
    assert!(weight < 100 * 1024, "the page weighs {weight} bytes");

    // Without JavaScript, everything is there.
    let nojs = driver(&tools, &["nojs", &api.server.url("/")]).await;
    assert_eq!(nojs["status"], 200);
    let text = nojs["expanded"].as_str().unwrap();
    for wanted in [
        "NHS Wales service status",
        "Some services are down",
        "Teams: users cannot sign in",
        &format!("What to do: {ACTION}"),
        "Identified",
        "An expired certificate broke token refresh.",
        "We are investigating sign-in failures in Europe.",
        "Corrected",
        "We are looking into sign-in failures.",
        "Reason: scope",
        "Mailbox moves",
        "Microsoft Teams",
        "Major outage",
        "Exchange Online",
        "Degraded performance",
        "uptime over the last 90 days",
        "Get notices by email",
        "Cymraeg",
    ] {
        assert!(
            text.contains(wanted),
            "{wanted:?} is not on the page:\n{text}"
        );
    }
    // Updates newest first; the private incident and the resolved one are not shown.
    let newest = text.find("An expired certificate").unwrap();
    let oldest = text.find("We are investigating sign-in failures").unwrap();
    assert!(newest < oldest, "{text}");
    assert!(!text.contains("Contoso private"), "{text}");
    // The resolved one is no current incident (its day is listed under the service's
    // uptime).
    let current = &text[..text.find("Planned maintenance").unwrap()];
    assert!(!current.contains("Exchange mail delayed"), "{text}");
    assert!(text.contains("Exchange mail delayed"), "{text}");

    // Welsh, by the switch and by Accept-Language.
    for (path, headers) in [
        ("/?lang=cy", vec![]),
        ("/", vec![("Accept-Language", "cy-GB, en;q=0.5")]),
    ] {
        let (status, answer_headers, page) = html(api, path, &headers).await;
        assert_eq!(status, 200);
        assert_eq!(answer_headers["content-language"], "cy");
        assert!(page.contains("<html lang=\"cy\""), "{page}");
        assert!(
            page.contains("Teams: ni all defnyddwyr fewngofnodi"),
            "{page}"
        );
        assert!(
            page.contains("Ailgychwynnwch eich rhaglen i adfer."),
            "{page}"
        );
        assert!(page.contains("Mae rhai gwasanaethau i lawr"), "{page}");
    }

    // One incident's page; a private one is not found; the history lists the resolved one,
    // whose page has its postmortem.
    let (status, _, page) = html(api, &format!("/incidents/{}", s.outage), &[]).await;
    assert_eq!(status, 200);
    assert!(page.contains("<h1 id=\"incident-"), "{page}");
    let (status, _, page) = html(api, &format!("/incidents/{}", s.private), &[]).await;
    assert_eq!(status, 404);
    assert!(!page.contains("Contoso"), "{page}");
    let (status, _, _) = html(api, "/incidents/not-an-id", &[]).await;
    assert_eq!(status, 404);
    let (status, _, page) = html(api, "/history", &[]).await;
    assert_eq!(status, 200);
    assert!(page.contains("Exchange mail delayed"), "{page}");
    assert!(
        !page.contains("Teams: users cannot sign in"),
        "open incidents are not history"
    );
    let (_, _, page) = html(api, &format!("/incidents/{}", s.resolved), &[]).await;
    assert!(
        page.contains("A queue filled up after a failover."),
        "{page}"
    );
    assert_eq!(html(api, "/assets/nothing.js", &[]).await.0, 404);

    // The form subscribes, and answers a page (a person sent it), in the page's language.
    let form = |body: &str| {
        api.http
            .post(api.server.url("/v1/subscribers"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
    };
    let answer = form(&format!(
        "language=cy&email=ward.manager%40nhs.example&service_ids={}",
        s.teams
    ))
    .await
    .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    assert!(answer.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = answer.text().await.unwrap();
    assert!(page.contains("Check your inbox"), "{page}");
    let confirmation = sink.wait_for("ward.manager@nhs.example", 1).await;
    assert_eq!(
        confirmation[0]["headers"]["content-language"], "cy",
        "{confirmation:#?}"
    );
    let answer = form("email=not-an-address").await.unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    let page = answer.text().await.unwrap();
    assert!(
        page.contains("The subscription could not be made"),
        "{page}"
    );
    assert!(
        !page.contains("not-an-address"),
        "an address is never quoted back: {page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_passes_axe_in_both_schemes_works_by_keyboard_and_updates_itself_within_a_second()
{
    let tools = tokio::task::spawn_blocking(browser_tools).await.unwrap();
    let sink = SmtpSink::start();
    let db = TestDatabase::create().await;
    let smtp = sink.url();
    let s = seeded(&db, &[("CRIER_SMTP_URL", &smtp)]).await;
    let api = &s.api;
    let pages = [
        api.server.url("/"),
        api.server.url("/?lang=cy"),
        api.server.url(&format!("/incidents/{}", s.outage)),
        api.server.url("/history"),
    ];
    let mut args = vec!["axe"];
    args.extend(pages.iter().map(String::as_str));
    let checked = driver(&tools, &args).await;
    let checked = checked["pages"].as_array().unwrap();
    assert_eq!(checked.len(), pages.len() * 4);
    for page in checked {
        assert_eq!(page["status"], 200, "{page:#}");
        assert_eq!(
            page["violations"],
            json!([]),
            "axe-core found violations: {page:#}"
        );
        assert_eq!(page["overflow"], false, "wider than the screen: {page:#}");
    }

    // A picture of it, for README (CRIER_SCREENSHOT=docs/status-page.png to replace it).
    let shot = std::env::var("CRIER_SCREENSHOT").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/status-page.png").to_owned()
    });
    driver(&tools, &["screenshot", &api.server.url("/"), &shot]).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    // Keyboard alone reaches every control, each showing where focus is.
    let keyboard = driver(&tools, &["keyboard", &api.server.url("/")]).await;
    let focused = keyboard["focused"].as_array().unwrap();
    let texts: Vec<&str> = focused
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts.first(),
        Some(&"Skip to the current status"),
        "{texts:?}"
    );
    for wanted in [
        "Cymraeg",
        "Teams: users cannot sign in",
        "email",
        "Subscribe",
        "Past incidents",
    ] {
        assert!(
            texts.contains(&wanted),
            "{wanted} is not reachable by Tab: {texts:?}"
        );
    }
    assert!(
        focused.iter().all(|f| f["outline"] == true),
        "focus is not visible everywhere: {focused:#?}"
    );

    // A notice shows within a second, announced, without moving focus.
    let live = driver(
        &tools,
        &[
            "live",
            &api.server.url("/"),
            &api.server
                .url(&format!("/v1/incidents/{}/updates", s.outage)),
            &s.comms,
            &json!({"status": "monitoring", "message": "A fix is rolling out to every region."})
                .to_string(),
        ],
    )
    .await;
    assert_eq!(live["posted"], 201, "{live:#}");
    let shown = live["shownAfterMs"].as_u64().expect("the update was shown");
    assert!(shown < 1000, "shown {shown} ms after the publish: {live:#}");
    assert_eq!(live["focus"], "subscribe-email", "focus moved: {live:#}");
    assert!(
        live["live"].as_str().unwrap().starts_with("Updated: Teams"),
        "{live:#}"
    );
    assert_eq!(live["errors"], json!([]), "{live:#}");
}

#[tokio::test]
async fn uptime_is_served_per_day_as_the_caller_may_see_it() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let teams = api.service("Microsoft Teams").await;
    let comms = api.key("publisher", None).await;
    let contoso = api.key("reader", Some("contoso")).await;
    let path = format!("/v1/services/{teams}/uptime");

    let calm = api.get(&path, None).await.expect(200);
    assert_eq!(calm["service_id"], teams.as_str());
    let days = calm["days"].as_array().unwrap();
    assert_eq!(days.len(), 1, "only today: the service is new: {calm:#}");
    assert_eq!(days[0]["date"], chrono::Utc::now().date_naive().to_string());
    assert_eq!(days[0]["uptime_percent"], 100.0);
    assert_eq!(days[0]["worst_status"], "operational");
    assert_eq!(calm["uptime_percent"], 100.0);

    let private = api
        .declare(
            &comms,
            json!({"title": "Contoso only", "impact": "major", "message": "Down.",
                   "affected_services": [{"service_id": teams, "status": "major_outage"}],
                   "audience": {"visibility": "tenants", "tenants": ["contoso"]}}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let public = api.get(&path, None).await.expect(200);
    assert_eq!(
        public["days"][0]["worst_status"], "operational",
        "{public:#}"
    );
    assert_eq!(public["days"][0]["incident_ids"], json!([]));
    let theirs = api.get(&path, Some(&contoso)).await.expect(200);
    assert_eq!(
        theirs["days"][0]["worst_status"], "major_outage",
        "{theirs:#}"
    );
    assert_eq!(theirs["days"][0]["incident_ids"], json!([private["id"]]));
    assert!(
        theirs["uptime_percent"].as_f64().unwrap() < 100.0,
        "{theirs:#}"
    );

    for bad in ["days=0", "days=91", "days=ten", "days=-1"] {
        api.get(&format!("{path}?{bad}"), None).await.problem(400);
    }
    let week = api.get(&format!("{path}?days=7"), None).await.expect(200);
    assert_eq!(week["days"].as_array().unwrap().len(), 1);
    api.get(
        &format!("/v1/services/{}/uptime", uuid::Uuid::new_v4()),
        None,
    )
    .await
    .problem(404);
}

#[tokio::test]
async fn the_history_pages_through_every_resolved_incident_newest_first() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let teams = api.service("Microsoft Teams").await;
    let comms = api.key("publisher", None).await;
    for n in 1..=21 {
        let incident = api
            .declare(
                &comms,
                json!({"title": format!("Past incident number {n:02}"), "impact": "minor",
                       "message": "Slow.",
                       "affected_services": [{"service_id": teams, "status": "degraded_performance"}]}),
            )
            .await;
        api.post(
            &format!("/v1/incidents/{}/updates", incident["id"].as_str().unwrap()),
            &comms,
            json!({"status": "resolved", "message": "Fine again."}),
        )
        .await
        .expect(201);
    }
    let (status, _, first) = html(&api, "/history", &[]).await;
    assert_eq!(status, 200);
    assert!(
        first.contains("Past incident number 21"),
        "newest first: {first}"
    );
    assert!(first.contains("Past incident number 02"));
    assert!(!first.contains("Past incident number 01"), "20 a page");
    let older = first
        .split("href=\"")
        .filter_map(|part| part.split('"').next())
        .find(|href| href.starts_with("/history?cursor="))
        .expect("a link to older incidents")
        .replace("&amp;", "&");
    let (status, _, second) = html(&api, &older, &[]).await;
    assert_eq!(status, 200);
    assert!(second.contains("Past incident number 01"), "{second}");
    assert!(!second.contains("Past incident number 02"));
    assert!(
        second.contains("href=\"/history?lang=en\""),
        "a way back to the first page"
    );
}
