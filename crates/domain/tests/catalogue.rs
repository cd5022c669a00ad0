//! docs/EVENTS.md is true: every example decodes as the type and schema version its heading
//! names (from a value and from its JSON text as the log reads it, alike), re-encodes to the
//! same JSON (current versions), and every event type is listed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failed test

use domain::{api_key, incident, maintenance, service, subscriber, template, webhook};
use serde_json::Value;

const CATALOGUE: &str = include_str!("../../../docs/EVENTS.md");

/// (type name, schema version, example payload) for each heading of the catalogue.
fn examples() -> Vec<(String, u32, Value)> {
    let mut found = Vec::new();
    let mut lines = CATALOGUE.lines();
    while let Some(line) = lines.next() {
        let Some(heading) = line.strip_prefix("### `") else {
            continue;
        };
        let (type_name, rest) = heading
            .split_once("` (schema version ")
            .expect("heading form");
        let version: u32 = rest.trim_end_matches(')').parse().expect("version");
        let json: String = lines
            .by_ref()
            .skip_while(|l| *l != "```json")
            .skip(1)
            .take_while(|l| *l != "```")
            .collect::<Vec<_>>()
            .join("\n");
        let payload = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("{type_name} v{version} example: {e}"));
        found.push((type_name.to_owned(), version, payload));
    }
    found
}

/// Decodes, and answers the (type, current version, payload) it would be stored as today.
fn round_trip<'a>(
    type_name: &str,
    version: u32,
    payload: impl Into<domain::StoredData<'a>>,
) -> (String, u32, Value) {
    let payload = payload.into();
    let stored = |t: &str, v: u32, e: Result<Value, serde_json::Error>| {
        (t.to_owned(), v, e.expect("encode"))
    };
    match type_name.split('.').next() {
        Some("service") => {
            let event = service::Event::from_stored(type_name, version, payload).expect("decode");
            stored(
                event.type_name(),
                event.schema_version(),
                serde_json::to_value(&event),
            )
        }
        Some("incident") => {
            let event = incident::Event::from_stored(type_name, version, payload).expect("decode");
            stored(
                event.type_name(),
                event.schema_version(),
                serde_json::to_value(&event),
            )
        }
        Some("maintenance") => {
            let event =
                maintenance::Event::from_stored(type_name, version, payload).expect("decode");
            stored(
                event.type_name(),
                event.schema_version(),
                serde_json::to_value(&event),
            )
        }
        Some("api_key") => {
            let event = api_key::Event::from_stored(type_name, version, payload).expect("decode");
            stored(
                event.type_name(),
                event.schema_version(),
                serde_json::to_value(&event),
            )
        }
        Some("webhook") => {
            let event = webhook::Event::from_stored(type_name, version, payload).expect("decode");
            stored(
                event.type_name(),
                event.schema_version(),
                serde_json::to_value(&event),
            )
        }
        Some("template") => {
            let event = template::Event::from_stored(type_name, version, payload).expect("decode");
            stored(
                event.type_name(),
                event.schema_version(),
                serde_json::to_value(&event),
            )
        }
        Some("subscriber") => {
            let event =
                subscriber::Event::from_stored(type_name, version, payload).expect("decode");
            stored(
                event.type_name(),
                event.schema_version(),
                serde_json::to_value(&event),
            )
        }
        _ => panic!("unknown kind in {type_name}"),
    }
}

#[test]
fn every_example_decodes_and_current_versions_re_encode_to_the_documented_json() {
    let examples = examples();
    assert!(examples.len() >= 11);
    for (type_name, version, payload) in examples {
        let (stored_type, current, encoded) = round_trip(&type_name, version, payload.clone());
        let text = payload.to_string();
        assert_eq!(
            round_trip(&type_name, version, text.as_str()),
            (stored_type.clone(), current, encoded.clone()),
            "{type_name} v{version} decodes from its text as from its value"
        );
        assert_eq!(stored_type, type_name);
        if current == version {
            assert_eq!(encoded, payload, "{type_name} v{version}");
        } else {
            assert!(
                current > version,
                "{type_name}: documented v{version} is newer than the code"
            );
        }
    }
}

#[test]
fn every_event_type_at_its_current_version_is_documented() {
    let documented: Vec<(String, u32)> = examples().into_iter().map(|(t, v, _)| (t, v)).collect();
    let current = [
        ("service.created", 1),
        ("service.changed", 1),
        ("service.retired", 1),
        ("incident.declared", 2),
        ("incident.update_posted", 2),
        ("incident.update_corrected", 2),
        ("incident.reopened", 2),
        ("incident.postmortem_published", 2),
        ("maintenance.scheduled", 3),
        ("maintenance.update_posted", 2),
        ("maintenance.reminder_sent", 1),
        ("api_key.created", 2),
        ("api_key.revoked", 1),
        ("webhook.registered", 2),
        ("webhook.deleted", 1),
        ("webhook.disabled", 1),
        ("template.created", 1),
        ("template.changed", 1),
        ("template.deleted", 1),
        ("subscriber.requested", 1),
        ("subscriber.confirmed", 1),
        ("subscriber.erased", 1),
    ];
    for (type_name, version) in current {
        assert!(
            documented.contains(&(type_name.to_owned(), version)),
            "{type_name} v{version} is not in docs/EVENTS.md"
        );
        // The list above is the code's: each decodes at that version.
        let (_, code_version, _) = round_trip(
            type_name,
            version,
            examples()
                .into_iter()
                .find(|(t, v, _)| t == type_name && *v == version)
                .map(|(_, _, p)| p)
                .unwrap_or_default(),
        );
        assert_eq!(code_version, version, "{type_name}");
    }
}
