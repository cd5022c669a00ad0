//! Notices in several languages: written once in the default language with translations,
//! read in the reader's (`?lang=`, `Accept-Language`), falling back text by text, on every
//! read that renders text.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;
use eventstore::testing::TestDatabase;

const WELSH_TITLE: &str = "Ni all defnyddwyr fewngofnodi i Teams";
const WELSH_MESSAGE: &str = "Rydym yn ymchwilio.";
const WELSH_ACTION: &str = "Os yw defnyddiwr yn dal i gael trafferth, ailgychwynnwch y cleient.";

fn bilingual(service: &str) -> Value {
    json!({
        "title": "Users cannot sign in to Teams",
        "impact": "major",
        "message": "We are investigating.",
        "affected_services": [{"service_id": service, "status": "major_outage"}],
        "client_action": {"kind": "restart_client", "message": RESTART},
        "translations": {"cy": {
            "title": WELSH_TITLE,
            "message": WELSH_MESSAGE,
            "client_action": {"message": WELSH_ACTION}
        }}
    })
}

async fn read(api: &Api, path: &str, headers: &[(&str, &str)]) -> Answer {
    api.send(Method::GET, path, None, headers, None).await
}

fn varies_by_language(answer: &Answer) -> bool {
    answer
        .headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("accept-language"))
}

#[tokio::test]
async fn an_incident_in_english_and_welsh_reads_in_each_language_and_falls_back_to_english() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    let declared = api.declare(&publisher, bilingual(&service)).await;
    let id = declared["id"].as_str().unwrap().to_owned();
    assert_eq!(declared["language"], "en");
    assert_eq!(declared["translations"], json!(["en", "cy"]));
    let path = format!("/v1/incidents/{id}");

    // ?lang= first, then Accept-Language with its quality values, then the default.
    for (query, headers) in [
        ("?lang=cy", vec![("accept-language", "en")]),
        ("", vec![("accept-language", "cy-GB;q=0.9, en;q=0.5")]),
        ("?lang=CY", vec![]),
    ] {
        let answer = read(&api, &format!("{path}{query}"), &headers).await;
        assert_eq!(
            answer.header("content-language"),
            Some("cy"),
            "{query} {headers:?}"
        );
        assert!(varies_by_language(&answer));
        assert_eq!(answer.header("etag"), Some("\"1-cy\""));
        let body = answer.expect(200);
        assert_eq!(body["language"], "cy");
        assert_eq!(body["title"], WELSH_TITLE);
        assert_eq!(body["updates"][0]["message"], WELSH_MESSAGE);
        assert_eq!(body["client_action"]["message"], WELSH_ACTION);
        assert_eq!(body["client_action"]["kind"], "restart_client");
    }
    for (query, headers) in [
        ("", vec![]),
        ("", vec![("accept-language", "fr, de;q=0.8")]),
        ("?lang=fr", vec![]),
        ("", vec![("accept-language", "cy;q=0, en")]),
        ("", vec![("accept-language", "*")]),
        ("", vec![("accept-language", "cy;q=banana")]),
    ] {
        let answer = read(&api, &format!("{path}{query}"), &headers).await;
        assert_eq!(
            answer.header("content-language"),
            Some("en"),
            "{query} {headers:?}"
        );
        assert_eq!(answer.header("etag"), Some("\"1\""));
        let body = answer.expect(200);
        assert_eq!(body["language"], "en");
        assert_eq!(body["title"], "Users cannot sign in to Teams");
        assert_eq!(body["translations"], json!(["en", "cy"]));
    }

    // Each language has its own validator; If-Match takes either.
    let unchanged = read(
        &api,
        &format!("{path}?lang=cy"),
        &[("if-none-match", "\"1-cy\"")],
    )
    .await;
    assert_eq!(unchanged.status, 304);
    let update = api
        .send(
            Method::POST,
            &format!("{path}/updates"),
            Some(&publisher),
            &[("if-match", "\"1-cy\""), ("accept-language", "cy")],
            Some(
                &json!({"status": "identified", "message": "Found the cause.",
                         "translations": {"cy": {"message": "Wedi dod o hyd i'r achos."}}}),
            ),
        )
        .await
        .expect(201);
    // A write answers in the default language: its ETag is the version alone.
    assert_eq!(update["language"], "en");
    assert_eq!(update["translations"], json!(["en", "cy"]));
    let welsh_update = read(&api, &format!("{path}?lang=cy"), &[]).await;
    assert_eq!(welsh_update.header("etag"), Some("\"2-cy\""));
    assert_eq!(
        welsh_update.expect(200)["updates"][1]["message"],
        "Wedi dod o hyd i'r achos."
    );

    // Lists and time travel too; a text without Welsh falls back, field by field.
    api.declare(
        &publisher,
        json!({"title": "Exchange is slow", "impact": "minor", "message": "Looking.",
               "affected_services": []}),
    )
    .await;
    let list = read(&api, "/v1/incidents?lang=cy", &[]).await;
    assert_eq!(list.header("content-language"), Some("en, cy"));
    let list = list.expect(200);
    let titles: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Exchange is slow", WELSH_TITLE]);
    let started_at = declared["started_at"].as_str().unwrap();
    let then = read(&api, &format!("{path}?as_of={started_at}&lang=cy"), &[]).await;
    assert_eq!(then.header("content-language"), Some("cy"));
    assert_eq!(then.header("etag"), Some("\"1-cy\""));
    assert_eq!(then.expect(200)["updates"].as_array().unwrap().len(), 1);

    // A maintenance, with a Welsh title and no Welsh message.
    let maintenance = api
        .post(
            "/v1/maintenances",
            &publisher,
            json!({"title": "Exchange database upgrade", "message": "Mail may be delayed.",
                   "affected_services": [service], "starts_at": "2030-01-01T22:00:00Z",
                   "ends_at": "2030-01-01T23:00:00Z",
                   "translations": {"cy": {"title": "Uwchraddio cronfa ddata Exchange"}}}),
        )
        .await
        .expect(201);
    let answer = read(
        &api,
        &format!("/v1/maintenances/{}", maintenance["id"].as_str().unwrap()),
        &[("accept-language", "cy")],
    )
    .await;
    assert_eq!(answer.header("content-language"), Some("cy"));
    let body = answer.expect(200);
    assert_eq!(body["title"], "Uwchraddio cronfa ddata Exchange");
    assert_eq!(body["updates"][0]["message"], "Mail may be delayed.");
}

#[tokio::test]
async fn statuspage_documents_and_feeds_render_in_the_readers_language() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    api.declare(&publisher, bilingual(&service)).await;

    let english = read(&api, "/api/v2/summary.json", &[]).await;
    assert_eq!(english.header("content-language"), Some("en"));
    let english_etag = english.header("etag").unwrap().to_owned();
    assert_eq!(
        english.expect(200)["incidents"][0]["name"],
        "Users cannot sign in to Teams"
    );
    let welsh = read(&api, "/api/v2/summary.json", &[("accept-language", "cy")]).await;
    assert_eq!(welsh.header("content-language"), Some("cy"));
    assert!(varies_by_language(&welsh));
    assert_ne!(welsh.header("etag"), Some(english_etag.as_str()));
    let body = welsh.expect(200);
    assert_eq!(body["incidents"][0]["name"], WELSH_TITLE);
    assert_eq!(
        body["incidents"][0]["incident_updates"][0]["body"],
        WELSH_MESSAGE
    );
    let fallback = read(&api, "/api/v2/incidents.json?lang=de", &[]).await;
    assert_eq!(fallback.header("content-language"), Some("en"));

    let atom = api
        .http
        .get(api.server.url("/v1/feed.atom?lang=cy"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        atom.headers()
            .get("content-language")
            .unwrap()
            .to_str()
            .unwrap(),
        "cy"
    );
    let atom = atom.text().await.unwrap();
    assert!(atom.contains("xml:lang=\"cy\""), "{atom}");
    assert!(
        atom.contains(WELSH_TITLE) && atom.contains(WELSH_ACTION),
        "{atom}"
    );
    let rss = api
        .http
        .get(api.server.url("/v1/feed.rss"))
        .header("accept-language", "cy-GB, en;q=0.1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(rss.contains("<language>cy</language>"), "{rss}");
    assert!(rss.contains(WELSH_TITLE), "{rss}");
    let rss = api.text("/v1/feed.rss").await;
    assert!(rss.contains("<language>en</language>") && !rss.contains(WELSH_TITLE));
}

#[tokio::test]
async fn bad_translations_are_refused_naming_the_field_and_nothing_is_written() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    let base = || {
        json!({"title": "Users cannot sign in", "impact": "major", "message": "Looking.",
               "affected_services": [{"service_id": service, "status": "major_outage"}]})
    };
    for (translations, field) in [
        (
            json!({"not a tag!": {"title": "x"}}),
            "translations.not a tag!",
        ),
        (json!({"cy": {}}), "translations.cy"),
        (json!({"cy": {"title": "  "}}), "translations.cy.title"),
        (
            json!({"cy": {"client_action": {"message": "Ailgychwynnwch"}}}),
            "translations.cy.client_action.message",
        ),
        (
            json!({"en": {"title": "Users cannot sign in"}}),
            "translations.en",
        ),
    ] {
        let mut body = base();
        body["translations"] = translations;
        let problem = api
            .post("/v1/incidents", &publisher, body)
            .await
            .problem(400);
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, [field], "{problem:#}");
    }
    let listed = api.get("/v1/incidents", None).await.expect(200);
    assert_eq!(listed["items"], json!([]), "nothing was written");

    let problem = read(&api, "/v1/incidents?lang=%3Cscript%3E", &[])
        .await
        .problem(400);
    assert_eq!(problem["errors"][0]["field"], "lang");
    for header in ["", "*;q=0", "en;q=2", ",,;", "é-ç"] {
        let answer = read(&api, "/v1/incidents", &[("accept-language", header)]).await;
        assert_eq!(answer.status, 200, "{header:?} is ignored, not refused");
    }
}

#[tokio::test]
async fn a_correction_of_the_welsh_text_keeps_the_earlier_welsh_and_leaves_the_english() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    let declared = api.declare(&publisher, bilingual(&service)).await;
    let id = declared["id"].as_str().unwrap();
    let update = declared["updates"][0]["id"].as_str().unwrap();
    let corrected = api
        .post(
            &format!("/v1/incidents/{id}/updates/{update}/corrections"),
            &publisher,
            json!({"language": "cy", "message": "Rydym yn ymchwilio i fethiannau mewngofnodi.",
                   "reason": "Mwy manwl."}),
        )
        .await
        .expect(201);
    assert_eq!(corrected["updates"][0]["message"], "We are investigating.");
    assert_eq!(corrected["updates"][0]["corrections"], json!([]));
    let welsh = api
        .get(&format!("/v1/incidents/{id}?lang=cy"), None)
        .await
        .expect(200);
    assert_eq!(
        welsh["updates"][0]["message"],
        "Rydym yn ymchwilio i fethiannau mewngofnodi."
    );
    assert_eq!(
        welsh["updates"][0]["corrections"][0]["message"],
        WELSH_MESSAGE
    );
    assert_eq!(
        welsh["updates"][0]["corrections"][0]["reason"],
        "Mwy manwl."
    );
    let history = api
        .get(
            &format!("/v1/audit/streams/incident-{id}/events"),
            Some(ADMIN_SECRET),
        )
        .await
        .expect(200);
    // Sealed shortly after it is written: the correction may not be there yet.
    if let Some(correction) = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "incident.update_corrected")
    {
        assert_eq!(correction["schema_version"], 2);
        assert_eq!(correction["data"]["language"], "cy");
    }
}

#[tokio::test]
async fn subscribers_in_two_languages_get_the_same_notices_in_order_each_in_its_own() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(
        &db,
        &[
            ("CRIER_WRITE_RATE_LIMIT", "0"),
            ("CRIER_WEBHOOK_ALLOW_PRIVATE", "true"),
            ("CRIER_WEBHOOK_RETRY_BASE_MS", "200"),
        ],
    )
    .await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    let base = api.server.url("");
    let base = base.trim_end_matches('/');
    let mut welsh = SseClient::open(base, "?lang=cy", None, None).await;
    let mut english = SseClient::open(base, "", None, None).await;
    let welsh_hook = Receiver::start(&[]);
    let created = api
        .post(
            "/v1/webhooks",
            ADMIN_SECRET,
            json!({"url": welsh_hook.url, "language": "cy"}),
        )
        .await
        .expect(201);
    assert_eq!(
        (created["language"].as_str(), created["format"].as_str()),
        (Some("cy"), Some("cloudevents"))
    );
    welsh_hook
        .set_secret(created["secret"].as_str().unwrap())
        .await;
    let slack = Receiver::start(&[]);
    let created = api
        .post(
            "/v1/webhooks",
            ADMIN_SECRET,
            json!({"url": slack.url, "format": "slack", "language": "cy"}),
        )
        .await
        .expect(201);
    slack.set_secret(created["secret"].as_str().unwrap()).await;

    let declared = api.declare(&publisher, bilingual(&service)).await;
    let id = declared["id"].as_str().unwrap();
    api.post(
        &format!("/v1/incidents/{id}/updates"),
        &publisher,
        json!({"status": "monitoring", "message": "A fix is rolling out."}),
    )
    .await
    .expect(201);
    api.post(
        &format!("/v1/incidents/{id}/updates"),
        &publisher,
        json!({"status": "resolved", "message": "Fixed.",
               "translations": {"cy": {"message": "Wedi'i drwsio."}}}),
    )
    .await
    .expect(201);

    let in_welsh = welsh.incidents(3).await;
    let in_english = english.incidents(3).await;
    let ids = |messages: &[Message]| messages.iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(in_welsh.len(), 3);
    assert_eq!(ids(&in_welsh), ids(&in_english), "same notices, same order");
    for (cy, en) in in_welsh.iter().zip(&in_english) {
        assert_eq!(cy.event, en.event);
        assert_eq!(cy.data["data"]["language"], "cy");
        assert_eq!(cy.data["data"]["title"], WELSH_TITLE);
        assert_eq!(en.data["data"]["language"], "en");
        assert_eq!(en.data["data"]["title"], "Users cannot sign in to Teams");
    }
    // The monitoring update has no Welsh: it falls back to English in the Welsh stream.
    assert_eq!(
        in_welsh[1].data["data"]["updates"][1]["message"],
        "A fix is rolling out."
    );
    assert_eq!(
        in_welsh[2].data["data"]["updates"][2]["message"],
        "Wedi'i drwsio."
    );
    // Each notice was ready in both languages before it reached the streams: their
    // threads' relays wrote them all (these six among them), waking neither stream's
    // task to render one.
    let relayed = api.metric("crier_stream_relay_writes_total").await;
    let rendering = "crier_stream_relay_returns_total{reason=\"rendering\"}";
    assert!(relayed >= 6.0, "{relayed}");
    assert_eq!(api.metric(rendering).await, 0.0);

    let delivered = welsh_hook
        .wait_until("three Welsh notices", |lines| {
            delivered_ids(lines).len() >= 3
        })
        .await;
    let first = delivered
        .iter()
        .find(|l| l["event"]["type"] == "incident.declared")
        .unwrap();
    assert_eq!(first["verified"], true);
    assert_eq!(first["event"]["data"]["title"], WELSH_TITLE);

    let messages = slack
        .wait_until("three Slack messages", |lines| {
            delivered_ids(lines).len() >= 3
        })
        .await;
    let declared_message = messages
        .iter()
        .map(|l| &l["event"])
        .find(|m| m["text"].as_str().is_some_and(|t| t.contains(WELSH_TITLE)))
        .unwrap_or_else(|| panic!("{messages:#?}"));
    let blocks = declared_message["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert!(blocks.iter().any(|b| b["text"]["text"]
        .as_str()
        .is_some_and(|t| t.contains(WELSH_ACTION))));
    tokio::time::sleep(Duration::from_millis(10)).await;
}
