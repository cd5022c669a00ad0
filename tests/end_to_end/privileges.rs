//! Least privilege: `crier serve` runs the whole API as a role that owns nothing, given its
//! privileges by `crier migrate --app-role` run as the owner, and that role cannot change,
//! delete or truncate the history, nor alter or disable its triggers.

use eventstore::testing::{TestDatabase, TestRole};
use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_runs_as_a_role_that_owns_nothing_and_cannot_rewrite_the_history() {
    let role = TestRole::create().await;
    let db = TestDatabase::create().await;
    let mut migrate = crier(&db.url);
    migrate.args(["migrate", "--app-role", &role.name]);
    let migrated = output(migrate).await;
    assert!(migrated.status.success(), "{migrated:?}");
    let app_url = role.url(&db);

    // The whole API, as that role: keys, services, incidents, updates, webhooks, the stream,
    // the audit API and its verification.
    let api = Api::on(serve(&app_url, &[("CRIER_WRITE_RATE_LIMIT", "0")])).await;
    let teams = api.service("Microsoft Teams").await;
    let comms = api.key("publisher", None).await;
    let declared = api
        .declare(
            &comms,
            json!({"title": "Users cannot sign in to Teams", "impact": "major",
                   "message": "We are investigating.",
                   "affected_services": [{"service_id": teams, "status": "major_outage"}]}),
        )
        .await;
    let id = declared["id"].as_str().unwrap();
    api.post(
        &format!("/v1/incidents/{id}/updates"),
        &comms,
        json!({"status": "resolved", "message": "Fixed.",
               "client_action": {"kind": "restart_client", "message": RESTART}}),
    )
    .await
    .expect(201);
    api.post(
        "/v1/webhooks",
        ADMIN_SECRET,
        json!({"url": "https://hooks.example.com/crier"}),
    )
    .await
    .expect(201);
    api.get("/api/v2/summary.json", None).await.expect(200);
    api.get(&format!("/v1/incidents/{id}"), None)
        .await
        .expect(200);
    let mut report = serde_json::Value::Null;
    for _ in 0..100 {
        report = api
            .get("/v1/audit/verify", Some(ADMIN_SECRET))
            .await
            .expect(200);
        if report["unsealed"] == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(report["ok"], true, "{report:#}");
    assert!(report["checked"].as_u64().unwrap() >= 6, "{report:#}");

    // What the role may not do to the history, each refused by the database.
    let (client, connection) = tokio_postgres::connect(&app_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    for attack in [
        "UPDATE events SET data = '{}' WHERE stream_version = 1",
        "DELETE FROM events",
        "TRUNCATE events",
        "UPDATE log_seals SET prev_hash = '\\x00'",
        "DELETE FROM log_seals",
        "TRUNCATE log_seals",
        "TRUNCATE chain_checkpoints",
        "ALTER TABLE events DISABLE TRIGGER ALL",
        "ALTER TABLE events DISABLE TRIGGER events_append_only",
        "ALTER TABLE log_seals DISABLE TRIGGER log_seals_append_only",
        "DROP TRIGGER log_seals_append_only ON log_seals",
        "ALTER TABLE events ADD COLUMN note text",
        "DROP TABLE events",
        "SET session_replication_role = replica",
        "CREATE TABLE side_door (x int)",
    ] {
        let refused = client.batch_execute(attack).await;
        assert!(refused.is_err(), "the application role could: {attack}");
    }
    let whoami: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(whoami, role.name);
    let owned: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner \
              WHERE r.rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owned, 0, "the application role owns nothing");
    drop(api);
}
