//! The committed OpenAPI document is the one the code generates, and a validator accepts it.
//!
//! After changing the API, regenerate it with
//! `CRIER_UPDATE_OPENAPI=1 cargo nextest run -p api --test openapi`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

fn committed_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/openapi.json")
}

fn generated() -> String {
    let mut text = api::openapi::document()
        .to_pretty_json()
        .expect("the document serialises");
    text.push('\n');
    text
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let path = committed_path();
    let generated = generated();
    if std::env::var_os("CRIER_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write openapi/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: regenerate it with \
         CRIER_UPDATE_OPENAPI=1 cargo nextest run -p api --test openapi"
    );
}

#[test]
fn the_document_is_openapi_3_1_and_every_operation_is_complete() {
    let document: serde_json::Value = serde_json::from_str(&generated()).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/v1/api-keys",
        "/v1/api-keys/{id}",
        "/v1/services",
        "/v1/services/{id}",
        "/v1/incidents",
        "/v1/incidents/{id}",
        "/v1/incidents/{id}/updates",
        "/v1/incidents/{id}/updates/{update_id}/corrections",
        "/v1/incidents/{id}/reopen",
        "/v1/incidents/{id}/postmortem",
        "/v1/maintenances",
        "/v1/maintenances/{id}",
        "/v1/maintenances/{id}/updates",
    ] {
        let operations = paths[path].as_object().unwrap_or_else(|| panic!("{path}"));
        for (method, operation) in operations {
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} has no success answer"
            );
            for status in ["400", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
            assert!(
                operation["security"].is_array(),
                "{method} {path} names no security"
            );
            if method == "post" || method == "patch" {
                assert!(
                    operation["requestBody"].is_object() || path.ends_with("}"),
                    "{method} {path} has no request body"
                );
            }
        }
    }
}

/// A Python virtual environment with `openapi-spec-validator` (from PyPI), made once in the
/// target directory.
fn validator() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/openapi-validator");
    let program = target.join("bin/openapi-spec-validator");
    if program.exists() {
        return program;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&target)
        .status()
        .expect("python3 makes a virtual environment");
    assert!(made.success());
    let installed = Command::new(target.join("bin/pip"))
        .args(["install", "--quiet", "openapi-spec-validator==0.9.0"])
        .status()
        .expect("pip runs");
    assert!(
        installed.success(),
        "pip could not install openapi-spec-validator"
    );
    program
}

#[test]
fn a_validator_accepts_the_committed_document() {
    let output = Command::new(validator())
        .arg(committed_path())
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        output.status.success(),
        "openapi-spec-validator rejects openapi/openapi.json:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_registered_route_is_in_the_document_and_every_documented_one_is_registered() {
    use std::collections::BTreeSet;
    let registered: BTreeSet<(String, String)> = api::routes::registered().into_iter().collect();
    let document: serde_json::Value = serde_json::from_str(&generated()).unwrap();
    let mut documented = BTreeSet::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                documented.insert((method.clone(), path.clone()));
            }
        }
    }
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let unregistered: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty() && unregistered.is_empty(),
        "registered but not documented: {undocumented:?}; documented but not registered: {unregistered:?}"
    );
    assert!(registered.len() > 40, "only {} routes", registered.len());
}

/// Rules JSON Schema can state are in the document, so that a schema-valid request is not
/// refused for them: an incident is declared open, an action other than `none` has words,
/// and a translation is keyed by a language tag.
#[test]
fn the_document_states_what_the_server_refuses_where_json_schema_can() {
    let document: serde_json::Value = serde_json::from_str(&generated()).unwrap();
    let schemas = &document["components"]["schemas"];
    let new_incident = &schemas["NewIncident"]["properties"];
    assert_eq!(
        new_incident["status"]["enum"],
        serde_json::json!(["investigating", "identified", "monitoring", null]),
        "resolved is not a status to declare with"
    );
    let action = &schemas["ClientAction"]["oneOf"];
    let variants = action.as_array().expect("client_action is oneOf");
    assert_eq!(variants.len(), 2);
    let none = &variants[0];
    let act = &variants[1];
    assert_eq!(
        none["properties"]["kind"]["enum"],
        serde_json::json!(["none"])
    );
    assert!(act["properties"]["kind"]["enum"]
        .as_array()
        .unwrap()
        .contains(&"restart_client".into()));
    assert!(act["required"]
        .as_array()
        .unwrap()
        .contains(&"message".into()));
    assert_eq!(act["properties"]["message"]["minLength"], 1);
    let translations = &new_incident["translations"];
    assert!(translations["propertyNames"]["pattern"].is_string());
    assert_eq!(
        translations["additionalProperties"]["$ref"],
        "#/components/schemas/DeclarationTexts"
    );
}
