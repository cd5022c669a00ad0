//! Templates of the notices a team sends again and again: written once, named by a
//! declaration or an update, never changing what was sent, tenant-bound like notices, and
//! history like everything else.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;
use eventstore::testing::TestDatabase;

const WELSH_RESTART: &str = "Os yw defnyddiwr yn dal i gael trafferth, ailgychwynnwch y cleient.";

fn restart_template() -> Value {
    json!({
        "name": "Restart your clients",
        "message": RESTART,
        "status": "resolved",
        "client_action": {"kind": "restart_client", "message": "Restart your clients to recover."},
        "translations": {"cy": {"message": WELSH_RESTART,
                                "client_action": {"message": "Ailgychwynnwch eich cleientiaid."}}}
    })
}

#[tokio::test]
async fn a_template_fills_an_update_and_a_later_edit_never_changes_what_was_sent() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let publisher = api.key("publisher", None).await;
    let service = api.service("Teams").await;
    let template = api
        .post("/v1/templates", &publisher, restart_template())
        .await
        .expect(201);
    let template_id = template["id"].as_str().unwrap().to_owned();
    assert_eq!(template["version"], 1);

    let declared = api
        .declare(
            &publisher,
            json!({"title": "Users cannot sign in to Teams", "impact": "major",
                   "message": "We are investigating.",
                   "affected_services": [{"service_id": service, "status": "major_outage"}]}),
        )
        .await;
    let id = declared["id"].as_str().unwrap().to_owned();
    let resolved = api
        .post(
            &format!("/v1/incidents/{id}/updates"),
            &publisher,
            json!({"template_id": template_id}),
        )
        .await
        .expect(201);
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["updates"][1]["message"], RESTART);
    assert_eq!(resolved["client_action"]["kind"], "restart_client");
    let welsh = api
        .get(&format!("/v1/incidents/{id}?lang=cy"), None)
        .await
        .expect(200);
    assert_eq!(welsh["updates"][1]["message"], WELSH_RESTART);
    assert_eq!(
        welsh["client_action"]["message"],
        "Ailgychwynnwch eich cleientiaid."
    );

    // A declaration takes what it does not give; what it gives wins.
    let mut declaration = restart_template();
    declaration["name"] = json!("Teams down");
    declaration["title"] = json!("Teams is down");
    declaration["impact"] = json!("critical");
    declaration["status"] = json!("investigating");
    let teams_down = api
        .post("/v1/templates", &publisher, declaration)
        .await
        .expect(201);
    let from_template = api
        .declare(
            &publisher,
            json!({"template_id": teams_down["id"], "impact": "minor",
                   "affected_services": []}),
        )
        .await;
    assert_eq!(from_template["title"], "Teams is down");
    assert_eq!(from_template["impact"], "minor");
    assert_eq!(from_template["updates"][0]["message"], RESTART);

    // An edit makes a new version; what was sent stays as it was.
    let changed = api
        .send(
            Method::PATCH,
            &format!("/v1/templates/{template_id}"),
            Some(&publisher),
            &[],
            Some(&json!({"message": "Restart Teams to recover.", "status": null})),
        )
        .await
        .expect(200);
    assert_eq!(
        (changed["version"].as_u64(), changed["status"].is_null()),
        (Some(2), true)
    );
    let again = api
        .get(&format!("/v1/incidents/{id}"), None)
        .await
        .expect(200);
    assert_eq!(again["updates"][1]["message"], RESTART);

    // Deleted: no longer named; still readable, as history.
    api.send(
        Method::DELETE,
        &format!("/v1/templates/{template_id}"),
        Some(&publisher),
        &[],
        None,
    )
    .await
    .expect(200);
    api.post(
        &format!("/v1/incidents/{id}/reopen"),
        &publisher,
        json!({"message": "Back."}),
    )
    .await
    .expect(200);
    api.post(
        &format!("/v1/incidents/{id}/updates"),
        &publisher,
        json!({"template_id": template_id}),
    )
    .await
    .problem(404);
    let gone = api
        .get(&format!("/v1/templates/{template_id}"), Some(&publisher))
        .await
        .expect(200);
    assert!(gone["deleted_at"].is_string());
    let listed = api.get("/v1/templates", Some(&publisher)).await.expect(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);

    // Templates are history.
    let mut types: Vec<String> = Vec::new();
    for _ in 0..100 {
        let history = api
            .get(
                &format!("/v1/audit/streams/template-{template_id}/events"),
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
        if types.len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        types,
        ["template.created", "template.changed", "template.deleted"]
    );
}

#[tokio::test]
async fn templates_are_tenant_bound_and_bad_ones_are_refused_naming_the_field() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let contoso = api.key("publisher", Some("contoso")).await;
    let fabrikam = api.key("publisher", Some("fabrikam")).await;
    let unbound = api.key("publisher", None).await;
    let reader = api.key("reader", None).await;
    let mine = api
        .post("/v1/templates", &contoso, restart_template())
        .await
        .expect(201);
    assert_eq!(mine["tenant"], "contoso");
    let path = format!("/v1/templates/{}", mine["id"].as_str().unwrap());
    api.get(&path, Some(&fabrikam)).await.problem(404);
    api.get(&path, Some(&unbound)).await.expect(200);
    api.get(&path, Some(&reader)).await.problem(403);
    api.get(&path, None).await.problem(401);
    let listed = api.get("/v1/templates", Some(&fabrikam)).await.expect(200);
    assert_eq!(listed["items"], json!([]));
    let declared = api
        .post(
            "/v1/incidents",
            &fabrikam,
            json!({"template_id": mine["id"], "title": "x", "impact": "minor",
                   "affected_services": []}),
        )
        .await;
    assert_eq!(
        declared.status, 404,
        "another tenant's template is not there"
    );

    let mut silent = restart_template();
    silent["client_action"] = json!({"kind": "restart_client"});
    let problem = api
        .post("/v1/templates", &unbound, silent)
        .await
        .problem(400);
    assert_eq!(problem["errors"][0]["field"], "client_action.message");
    let mut translated_title = restart_template();
    translated_title["translations"] = json!({"cy": {"title": "Teitl"}});
    let problem = api
        .post("/v1/templates", &unbound, translated_title)
        .await
        .problem(400);
    assert_eq!(problem["errors"][0]["field"], "translations.cy.title");

    // A declaration neither the request nor the template gives a title to.
    let problem = api
        .post(
            "/v1/incidents",
            &contoso,
            json!({"template_id": mine["id"], "impact": "minor", "affected_services": []}),
        )
        .await
        .problem(400);
    assert_eq!(problem["errors"][0]["field"], "title");
    api.post(
        "/v1/incidents",
        &unbound,
        json!({"template_id": "00000000-0000-4000-8000-000000000000", "title": "x",
               "impact": "minor", "message": "y", "affected_services": []}),
    )
    .await
    .problem(404);
    let incidents = api.get("/v1/incidents", Some(&unbound)).await.expect(200);
    assert_eq!(incidents["items"], json!([]), "nothing was written");
}
