//! Email subscribers against a real SMTP server (aiosmtpd, tools/smtp_sink.py): subscribe,
//! confirm, receive each notice in one's language threaded per incident, unsubscribe in one
//! click, and erasure that leaves no address anywhere while the chain still verifies. The
//! messages are read as Python's standard MIME parser reads them.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;
use eventstore::testing::TestDatabase;

const WELSH_TITLE: &str = "Ni all defnyddwyr fewngofnodi i Teams";
const WELSH_ACTION: &str = "Ailgychwynnwch eich cleientiaid i adfer.";

async fn email_api(db: &TestDatabase, sink: &SmtpSink, extra: &[(&str, &str)]) -> Api {
    let url = sink.url();
    let mut env = vec![
        ("CRIER_WRITE_RATE_LIMIT", "0"),
        ("CRIER_SMTP_URL", url.as_str()),
        ("CRIER_EMAIL_FROM", "NHS Wales Status <status@nhs.example>"),
        ("CRIER_EMAIL_RETRY_BASE_MS", "200"),
        ("CRIER_SUBSCRIBE_RATE_LIMIT", "0"),
    ];
    env.extend_from_slice(extra);
    Api::start_with(db, &env).await
}

async fn subscribe(api: &Api, body: Value) -> Answer {
    api.send(Method::POST, "/v1/subscribers", None, &[], Some(&body))
        .await
}

/// The link of a message's text that starts with `prefix`.
fn link(message: &Value, prefix: &str) -> String {
    let text = message["text"].as_str().unwrap();
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} link in {text}"));
    text[start..].split_whitespace().next().unwrap().to_owned()
}

async fn open_page(api: &Api, method: Method, url: &str) -> (u16, String) {
    let response = api.http.request(method, url).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "text/html; charset=utf-8", "{url}");
    (status, response.text().await.unwrap())
}

/// Subscribes `address` and follows its confirmation link.
async fn subscribe_and_confirm(api: &Api, sink: &SmtpSink, address: &str, language: Option<&str>) {
    let before = sink.messages_to(address).len();
    subscribe(api, json!({"email": address, "language": language}))
        .await
        .expect(202);
    let messages = sink.wait_for(address, before + 1).await;
    let confirm = link(&messages[before], "http");
    let (status, _) = open_page(api, Method::GET, &confirm).await;
    assert_eq!(status, 200);
}

fn bilingual(service: &str) -> Value {
    json!({
        "title": "Users cannot sign in to Teams",
        "impact": "major",
        "message": "We are investigating.",
        "affected_services": [{"service_id": service, "status": "major_outage"}],
        "client_action": {"kind": "restart_client", "message": RESTART},
        "translations": {"cy": {
            "title": WELSH_TITLE,
            "message": "Rydym yn ymchwilio.",
            "client_action": {"message": WELSH_ACTION}
        }}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_confirms_then_gets_each_notice_in_its_language_threaded_with_one_click_unsubscribe(
) {
    let db = TestDatabase::create().await;
    let sink = SmtpSink::start();
    let api = email_api(&db, &sink, &[]).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;

    // Not an address: 400, and the problem does not quote it.
    let refused = subscribe(&api, json!({"email": "ward manager at nhs"}))
        .await
        .problem(400);
    assert!(!refused.to_string().contains("ward manager"), "{refused:#}");

    for (address, language) in [
        ("nurse@nhs.example", Some("cy")),
        ("ward@nhs.example", None),
    ] {
        let accepted = subscribe(&api, json!({"email": address, "language": language}))
            .await
            .expect(202);
        assert_eq!(accepted, json!({"status": "confirmation_sent"}));
    }
    let confirmation = sink.wait_for("nurse@nhs.example", 1).await.remove(0);
    assert_eq!(confirmation["content_type"], "multipart/alternative");
    // The sink, as Postfix does, offers PIPELINING: the envelope went in one write.
    assert_eq!(confirmation["pipelined"], true);
    assert!(confirmation["headers"]["subject"]
        .as_str()
        .unwrap()
        .starts_with("Cadarnhewch"));
    assert_eq!(confirmation["headers"]["content-language"], "cy");
    let confirm = link(&confirmation, "http");
    assert!(
        confirm.contains("/v1/subscribers/confirm?token="),
        "{confirm}"
    );
    let (status, page) = open_page(&api, Method::GET, &confirm).await;
    assert_eq!(status, 200);
    // (The page escapes the apostrophe, as HTML may.)
    assert!(page.contains("Tanysgrifiad wedi"), "{page}");
    // The link is used: it says so.
    let (status, page) = open_page(&api, Method::GET, &confirm).await;
    assert_eq!(status, 200);
    assert!(page.contains("gadarnhau eisoes"), "{page}");
    let ward = sink.wait_for("ward@nhs.example", 1).await.remove(0);
    assert_eq!(ward["headers"]["content-language"], "en");
    open_page(&api, Method::GET, &link(&ward, "http")).await;

    // Subscribing an address again answers alike and sends nothing.
    subscribe(&api, json!({"email": "Nurse@NHS.example"}))
        .await
        .expect(202);

    let declared = api.declare(&publisher, bilingual(&service)).await;
    let id = declared["id"].as_str().unwrap();
    api.post(
        &format!("/v1/incidents/{id}/updates"),
        &publisher,
        json!({"status": "identified", "message": "Found the cause.",
               "translations": {"cy": {"message": "Wedi dod o hyd i'r achos."}}}),
    )
    .await
    .expect(201);

    let nurse = sink.wait_for("nurse@nhs.example", 3).await;
    assert_eq!(
        nurse.len(),
        3,
        "one confirmation and two notices: {nurse:#?}"
    );
    let (first, second) = (&nurse[1], &nurse[2]);
    for message in [first, second] {
        let headers = &message["headers"];
        assert_eq!(message["content_type"], "multipart/alternative");
        assert_eq!(headers["content-language"], "cy");
        assert_eq!(headers["auto-submitted"], "auto-generated");
        assert_eq!(headers["from"], "NHS Wales Status <status@nhs.example>");
        assert_eq!(
            headers["list-unsubscribe-post"],
            "List-Unsubscribe=One-Click"
        );
        let unsubscribe = headers["list-unsubscribe"].as_str().unwrap();
        assert!(
            unsubscribe.starts_with(&format!(
                "<{}",
                api.server.url("/v1/subscribers/unsubscribe?token=")
            )),
            "{unsubscribe}"
        );
        assert!(headers["subject"].as_str().unwrap().contains(WELSH_TITLE));
        // What to do stands first, in Welsh, in both parts.
        let text = message["text"].as_str().unwrap();
        assert!(
            text.starts_with(&format!("Beth i'w wneud: {WELSH_ACTION}")),
            "{text}"
        );
        let html = message["html"].as_str().unwrap();
        assert!(html.find(WELSH_ACTION) < html.find("<h1"), "{html}");
        assert!(headers["message-id"]
            .as_str()
            .unwrap()
            .ends_with("@nhs.example>"));
    }
    assert!(first["headers"]["subject"]
        .as_str()
        .unwrap()
        .starts_with("Yn ymchwilio: "));
    assert!(second["text"]
        .as_str()
        .unwrap()
        .contains("Wedi dod o hyd i'r achos."));
    // The update threads under the declaration.
    let root = first["headers"]["message-id"].as_str().unwrap();
    assert!(first["headers"]["in-reply-to"].is_null());
    assert_eq!(second["headers"]["in-reply-to"], root);
    assert_eq!(second["headers"]["references"], root);
    assert_ne!(second["headers"]["message-id"], root);
    let ward = sink.wait_for("ward@nhs.example", 3).await;
    assert_eq!(ward[1]["headers"]["content-language"], "en");
    assert!(ward[1]["text"]
        .as_str()
        .unwrap()
        .starts_with(&format!("What to do: {RESTART}")));
    assert_ne!(
        ward[1]["headers"]["message-id"], root,
        "a Message-ID is per subscriber"
    );

    // The unsubscribe link opened shows a button; the one-click POST unsubscribes.
    let unsubscribe = first["headers"]["list-unsubscribe"]
        .as_str()
        .unwrap()
        .trim_matches(|c| c == '<' || c == '>')
        .to_owned();
    let (status, page) = open_page(&api, Method::GET, &unsubscribe).await;
    assert_eq!(status, 200);
    assert!(page.contains("<form method=\"post\""), "{page}");
    let response = api
        .http
        .post(&unsubscribe)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("Wedi dad-danysgrifio"));

    api.post(
        &format!("/v1/incidents/{id}/updates"),
        &publisher,
        json!({"status": "resolved", "message": "Fixed."}),
    )
    .await
    .expect(201);
    let ward = sink.wait_for("ward@nhs.example", 4).await;
    assert!(ward[3]["headers"]["subject"]
        .as_str()
        .unwrap()
        .starts_with("Resolved: "));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.messages_to("nurse@nhs.example").len(), 3);

    // What an admin sees: counts, the erased address gone, every attempt logged.
    let listed = api
        .get("/v1/subscribers", Some(ADMIN_SECRET))
        .await
        .expect(200);
    assert_eq!(
        listed["counts"],
        json!({"pending": 0, "active": 1, "unsubscribed": 1})
    );
    let items = listed["items"].as_array().unwrap();
    let ended = items.iter().find(|s| s["state"] == "unsubscribed").unwrap();
    assert!(ended["email"].is_null());
    assert_eq!(ended["ended_reason"], "unsubscribed");
    let active = items.iter().find(|s| s["state"] == "active").unwrap();
    assert_eq!(active["email"], "ward@nhs.example");
    let deliveries = api
        .get(
            &format!(
                "/v1/subscribers/{}/deliveries",
                active["id"].as_str().unwrap()
            ),
            Some(ADMIN_SECRET),
        )
        .await
        .expect(200);
    let deliveries = deliveries["items"].as_array().unwrap();
    assert_eq!(deliveries.len(), 4);
    assert!(deliveries
        .iter()
        .all(|d| d["status"] == "delivered" && d["attempts"].as_array().unwrap().len() == 1));
    assert_eq!(deliveries[3]["kind"], "confirmation");
    let only_active = api
        .get("/v1/subscribers?state=active", Some(ADMIN_SECRET))
        .await
        .expect(200);
    assert_eq!(only_active["items"].as_array().unwrap().len(), 1);
    // Anonymous callers and other roles see nothing of it.
    api.get("/v1/subscribers", None).await.problem(401);
    let reader = api.key("reader", None).await;
    api.get("/v1/subscribers", Some(&reader)).await.problem(403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_leaves_no_address_in_the_database_or_an_export_and_the_chain_still_verifies() {
    let db = TestDatabase::create().await;
    let sink = SmtpSink::start();
    let api = email_api(&db, &sink, &[]).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    let address = "erase.me.please@nhs.example";
    subscribe_and_confirm(&api, &sink, address, None).await;
    api.declare(&publisher, bilingual(&service)).await;
    sink.wait_for(address, 2).await;
    let listed = api
        .get("/v1/subscribers", Some(ADMIN_SECRET))
        .await
        .expect(200);
    let id = listed["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed["items"][0]["email"], address);

    let deleted = api
        .send(
            Method::DELETE,
            &format!("/v1/subscribers/{id}"),
            Some(ADMIN_SECRET),
            &[],
            None,
        )
        .await
        .expect(200);
    assert_eq!(deleted["state"], "unsubscribed");
    assert!(deleted["email"].is_null());
    let read = api
        .get(&format!("/v1/subscribers/{id}"), Some(ADMIN_SECRET))
        .await
        .expect(200);
    assert!(read["email"].is_null());

    // The whole database, as pg_dump writes it, and the export of the history.
    let dump = std::process::Command::new("pg_dump")
        .arg(&db.url)
        .output()
        .expect("pg_dump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout).to_lowercase();
    assert!(
        dump.contains("subscriber.erased"),
        "the dump holds the history"
    );
    assert!(!dump.contains("erase.me"), "the address is in the database");
    let mut export = crier(&db.url);
    export.arg("export");
    let exported = output(export).await;
    assert!(exported.status.success());
    let exported = String::from_utf8_lossy(&exported.stdout).to_lowercase();
    assert!(exported.contains("subscriber.requested"));
    assert!(
        !exported.contains("erase.me"),
        "the address is in the export"
    );
    let mut verify = crier(&db.url);
    verify.arg("verify");
    let verified = output(verify).await;
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    // A notice after the erasure goes nowhere.
    api.declare(&publisher, bilingual(&service)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.messages_to(address).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_recipient_fails_alone_and_deferrals_and_a_dead_server_are_retried_until_delivered(
) {
    let db = TestDatabase::create().await;
    let mut sink = SmtpSink::start();
    let api = email_api(&db, &sink, &[]).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    for address in ["gone@nhs.example", "here@nhs.example"] {
        subscribe_and_confirm(&api, &sink, address, None).await;
    }
    // One recipient refused for good, and every message deferred for a while.
    sink.control(json!({"refuse": {"gone@nhs.example": 550}, "defer": 451}));
    let declared = api.declare(&publisher, bilingual(&service)).await;
    let id = declared["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.messages_to("here@nhs.example").len(), 1);
    sink.control(json!({"refuse": {"gone@nhs.example": 550}}));
    let here = sink.wait_for("here@nhs.example", 2).await;
    assert!(here[1]["headers"]["subject"]
        .as_str()
        .unwrap()
        .contains("Users cannot sign in"));

    // The server away: nothing is lost, everything arrives once it is back, in order.
    sink.stop();
    for status in ["identified", "monitoring"] {
        api.post(
            &format!("/v1/incidents/{id}/updates"),
            &publisher,
            json!({"status": status, "message": format!("Now {status}.")}),
        )
        .await
        .expect(201);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    sink.restart();
    let here = sink.wait_for("here@nhs.example", 4).await;
    assert_eq!(here.len(), 4, "each notice once: {here:#?}");
    assert!(here[2]["text"]
        .as_str()
        .unwrap()
        .contains("Now identified."));
    assert!(here[3]["text"]
        .as_str()
        .unwrap()
        .contains("Now monitoring."));
    assert!(sink.messages_to("gone@nhs.example").len() == 1);

    let listed = api
        .get("/v1/subscribers", Some(ADMIN_SECRET))
        .await
        .expect(200);
    let gone = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["email"] == "gone@nhs.example")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deliveries = api
        .get(
            &format!("/v1/subscribers/{gone}/deliveries"),
            Some(ADMIN_SECRET),
        )
        .await
        .expect(200);
    // The oldest notice (items are newest first): the declaration, refused long ago; the
    // later ones may still be on their way.
    let declared = deliveries["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|d| d["kind"] == "notice")
        .unwrap()
        .clone();
    assert_eq!(declared["status"], "failed", "{declared:#}");
    let attempts = declared["attempts"].as_array().unwrap();
    assert_eq!(attempts.last().unwrap()["reply_code"], 550);
    assert!(!declared.to_string().contains("gone@"), "{declared:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_smtp_subscribing_is_503_and_bad_links_answer_pages_not_errors() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    subscribe(&api, json!({"email": "someone@nhs.example"}))
        .await
        .problem(503);
    for path in [
        "/v1/subscribers/confirm?token=nonsense",
        "/v1/subscribers/confirm",
        "/v1/subscribers/unsubscribe?token=AAAA",
    ] {
        let (status, page) = open_page(&api, Method::GET, &api.server.url(path)).await;
        assert_eq!(status, 400, "{path}");
        assert!(page.contains("does not work"), "{page}");
    }
    // A well-formed token of no subscriber.
    let token = "A".repeat(43);
    let (status, _) = open_page(
        &api,
        Method::POST,
        &api.server
            .url(&format!("/v1/subscribers/unsubscribe?token={token}")),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_fan_out_loses_nothing_and_repeats_only_emails_in_flight() {
    const SUBSCRIBERS: usize = 150;
    const CONNECTIONS: usize = 2;
    let db = TestDatabase::create().await;
    let sink = SmtpSink::start();
    let url = sink.url();
    let env = [
        ("CRIER_WRITE_RATE_LIMIT", "0"),
        ("CRIER_SMTP_URL", url.as_str()),
        ("CRIER_EMAIL_FROM", "NHS Wales Status <status@nhs.example>"),
        ("CRIER_SMTP_CONNECTIONS", "2"),
        ("CRIER_SMTP_TIMEOUT", "2"),
        ("CRIER_EMAIL_RETRY_BASE_MS", "200"),
    ];
    let mut api = Api::on(serve(&db.url, &env)).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    let addresses: Vec<String> = (0..SUBSCRIBERS)
        .map(|i| format!("r{i}@nhs.example"))
        .collect();
    delivery::email::testing::confirmed_subscribers(&db.store(), addresses.clone(), 8)
        .await
        .unwrap();
    let notices = |sink: &SmtpSink| -> Vec<Value> {
        sink.messages()
            .into_iter()
            .filter(|m| {
                !m["headers"]["subject"]
                    .as_str()
                    .unwrap()
                    .starts_with("Confirm")
            })
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while sink.messages().len() < SUBSCRIBERS {
        assert!(tokio::time::Instant::now() < deadline, "confirmations");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each message takes the sink 20 ms: the fan-out lasts long enough to be cut.
    sink.control(json!({"stall_seconds": 0.02}));
    api.declare(&publisher, bilingual(&service)).await;
    while notices(&sink).len() < SUBSCRIBERS / 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fan-out started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    api.server.child.kill().unwrap(); // SIGKILL
    api.server.child.wait().unwrap();
    let at_kill = notices(&sink).len();
    assert!(at_kill < SUBSCRIBERS, "the kill came after the fan-out");
    api = Api::on(serve(&db.url, &env)).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let counts = loop {
        let mut counts: std::collections::HashMap<String, usize> = Default::default();
        for message in notices(&sink) {
            *counts
                .entry(message["rcpt_tos"][0].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        if counts.len() == SUBSCRIBERS {
            break counts;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {SUBSCRIBERS} subscribers got the notice after the restart",
            counts.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(addresses.iter().all(|a| counts.contains_key(a)));
    let total = notices(&sink).len();
    // Sent twice: only what the killed process had handed to the server and not yet
    // recorded, at most what it had claimed ahead.
    let twice = total - SUBSCRIBERS;
    let claimed_ahead = CONNECTIONS * delivery::email::sender::CLAIMED_PER_CONNECTION;
    assert!(twice <= claimed_ahead, "{twice} emails sent twice");
    eprintln!("killed with {at_kill} of {SUBSCRIBERS} notice emails in; {twice} sent twice");
    drop(api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_key_that_subscribed_an_address_stops_its_emails_and_erases_it() {
    let db = TestDatabase::create().await;
    let sink = SmtpSink::start();
    let api = email_api(&db, &sink, &[]).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    let created = api
        .post(
            "/v1/api-keys",
            ADMIN_SECRET,
            json!({"name": "contoso portal", "role": "reader", "tenant": "contoso"}),
        )
        .await
        .expect(201);
    let portal = created["key"].as_str().unwrap().to_owned();
    let portal_id = created["id"].as_str().unwrap().to_owned();
    let address = "contoso.admin@nhs.example";
    let answer = api
        .send(
            Method::POST,
            "/v1/subscribers",
            Some(&portal),
            &[],
            Some(&json!({"email": address})),
        )
        .await;
    assert_eq!(answer.status.as_u16(), 202, "{:#?}", answer.body);
    let messages = sink.wait_for(address, 1).await;
    let (status, _) = open_page(&api, Method::GET, &link(&messages[0], "http")).await;
    assert_eq!(status, 200);
    let private = json!({"title": "Contoso sign-in failures", "impact": "minor",
                         "message": "Only Contoso.",
                         "affected_services": [{"service_id": service, "status": "partial_outage"}],
                         "audience": {"visibility": "tenants", "tenants": ["contoso"]}});
    api.declare(&publisher, private.clone()).await;
    let received = sink.wait_for(address, 2).await;
    assert!(received[1]["headers"]["subject"]
        .as_str()
        .unwrap()
        .contains("Contoso sign-in failures"));

    api.send(
        Method::DELETE,
        &format!("/v1/api-keys/{portal_id}"),
        Some(ADMIN_SECRET),
        &[],
        None,
    )
    .await
    .expect(200);
    api.declare(&publisher, private).await;
    api.declare(&publisher, bilingual(&service)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sink.messages_to(address).len(),
        2,
        "nothing after the revocation"
    );
    let listed = api
        .get("/v1/subscribers", Some(ADMIN_SECRET))
        .await
        .expect(200);
    let subscriber = &listed["items"][0];
    assert_eq!(subscriber["state"], "unsubscribed", "{listed:#}");
    assert_eq!(subscriber["ended_reason"], "key_revoked", "{listed:#}");
    assert_eq!(
        subscriber["email"],
        Value::Null,
        "the address is erased: {listed:#}"
    );
}

/// A private CA and a certificate it signed for 127.0.0.1, made with the openssl CLI in
/// `dir`: (ca.pem, server.pem, server.key).
fn private_ca(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Crier test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_over_starttls_and_implicit_tls_to_a_relay_of_a_private_ca_and_never_in_clear() {
    let dir = std::env::temp_dir().join(format!("crier-tls-{}", uuid::Uuid::new_v4().simple()));
    let (ca, cert, key) = private_ca(&dir);
    let ca_file = ca.to_str().unwrap().to_owned();
    for (mode, url) in [
        ("starttls", "smtp://127.0.0.1:{port}?tls=required"),
        ("implicit", "smtps://127.0.0.1:{port}"),
    ] {
        let sink = SmtpSink::start_tls(mode, cert.clone(), key.clone());
        let url = url.replace("{port}", &sink.port.to_string());
        let address = format!("{mode}@nhs.example");

        // Trusting the private CA: the confirmation arrives, over TLS.
        let db = TestDatabase::create().await;
        let api = email_api(
            &db,
            &sink,
            &[("CRIER_SMTP_URL", &url), ("CRIER_SMTP_CA_FILE", &ca_file)],
        )
        .await;
        subscribe(&api, json!({"email": address})).await.expect(202);
        let messages = sink.wait_for(&address, 1).await;
        assert_eq!(messages[0]["tls"], true, "{mode}: {messages:#?}");
        assert_eq!(messages[0]["pipelined"], true, "{mode}: {messages:#?}");
        drop(api);

        // Not trusting it: nothing is sent (the certificate is refused), and nothing in
        // clear either.
        let db = TestDatabase::create().await;
        let api = email_api(&db, &sink, &[("CRIER_SMTP_URL", &url)]).await;
        let stranger = format!("untrusted-{mode}@nhs.example");
        subscribe(&api, json!({"email": stranger}))
            .await
            .expect(202);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            sink.messages_to(&stranger).is_empty(),
            "{mode}: sent to an untrusted relay"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
