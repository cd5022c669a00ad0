//! API keys: who may do what. Created with a role (and optionally a tenant), revoked once.
//!
//! Neither the secret nor any digest of it enters the domain or the history: the verifier
//! that requests are matched by is kept beside the read models, outside the history, so that
//! an export never carries something a secret could be guessed from offline. A key's secret
//! is shown once, by whoever made it. `api_key.created` v1 carried the secret's SHA-256; v2
//! does not, and v1 payloads are upcast without it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{label, text, MAX_TITLE_CHARS};
use crate::{decode, Decider, DecodeError, DomainError, StoredData, Validation};

pub type ApiKeyId = Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// Everything, including keys, services and webhooks.
    Admin,
    /// Declares and updates incidents and maintenances, corrections, postmortems.
    Publisher,
    /// Reads the event history, verifies, exports (every tenant).
    Auditor,
    /// Reads notices, including the private ones of its own tenant.
    Reader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Publisher => "publisher",
            Role::Auditor => "auditor",
            Role::Reader => "reader",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Create(Create),
    Revoke(Revoke),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Create {
    pub key_id: ApiKeyId,
    pub name: String,
    pub role: Role,
    pub tenant: Option<String>,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Revoke {
    pub author: String,
    pub at: DateTime<Utc>,
}

/// Serialises as its payload alone; read back by type name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    Created(ApiKeyCreated),
    Revoked(ApiKeyRevoked),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyCreated {
    pub key_id: ApiKeyId,
    pub name: String,
    pub role: Role,
    pub tenant: Option<String>,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRevoked {
    pub author: String,
    pub at: DateTime<Utc>,
}

impl Event {
    /// The schema version of the stored form written today: `api_key.created` v2 dropped
    /// `secret_sha256`.
    pub fn schema_version(&self) -> u32 {
        match self {
            Event::Created(_) => 2,
            Event::Revoked(_) => 1,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Created(_) => "api_key.created",
            Event::Revoked(_) => "api_key.revoked",
        }
    }

    pub fn from_stored<'a>(
        type_name: &str,
        schema_version: u32,
        data: impl Into<StoredData<'a>>,
    ) -> Result<Event, DecodeError> {
        let data = data.into();
        match type_name {
            "api_key.created" => decode(
                type_name,
                schema_version,
                data,
                &[created_v1_to_v2],
                Event::Created,
            ),
            "api_key.revoked" => decode(type_name, schema_version, data, &[], Event::Revoked),
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

/// v1 carried the secret's SHA-256, which now lives outside the history.
fn created_v1_to_v2(
    mut object: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    object.remove("secret_sha256");
    Ok(object)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: String,
    pub role: Role,
    pub tenant: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub type State = Option<ApiKey>;

pub struct ApiKeyDecider;

impl Decider for ApiKeyDecider {
    type Command = Command;
    type Event = Event;
    type State = State;

    fn decide(command: &Command, state: &State) -> Result<Vec<Event>, DomainError> {
        match command {
            Command::Create(c) => {
                if state.is_some() {
                    return Err(DomainError::Conflict("this key exists already".into()));
                }
                let mut v = Validation::default();
                let name = v.check(text("name", &c.name, MAX_TITLE_CHARS));
                let tenant = v.check(c.tenant.as_deref().map(|t| label("tenant", t)).transpose());
                let author = v.check(text("author", &c.author, MAX_TITLE_CHARS));
                v.finish()?;
                Ok(vec![Event::Created(ApiKeyCreated {
                    key_id: c.key_id,
                    name,
                    role: c.role,
                    tenant,
                    author,
                    at: c.at,
                })])
            }
            Command::Revoke(c) => {
                let key = state
                    .as_ref()
                    .ok_or_else(|| DomainError::NotFound("API key".into()))?;
                if key.revoked_at.is_some() {
                    // Revoking twice changes nothing: the key is revoked, as asked.
                    return Ok(Vec::new());
                }
                let author = text("author", &c.author, MAX_TITLE_CHARS)?;
                Ok(vec![Event::Revoked(ApiKeyRevoked { author, at: c.at })])
            }
        }
    }

    fn evolve(state: State, event: &Event) -> State {
        match (state, event) {
            (None, Event::Created(e)) => Some(ApiKey {
                id: e.key_id,
                name: e.name.clone(),
                role: e.role,
                tenant: e.tenant.clone(),
                created_at: e.at,
                created_by: e.author.clone(),
                revoked_at: None,
            }),
            (Some(mut key), Event::Revoked(e)) => {
                key.revoked_at.get_or_insert(e.at);
                Some(key)
            }
            (state, _) => state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::given::given;
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 9, minute, 0).unwrap()
    }

    fn create() -> Create {
        Create {
            key_id: Uuid::from_u128(1),
            name: "Status page publisher".into(),
            role: Role::Publisher,
            tenant: None,
            author: "bootstrap".into(),
            at: at(0),
        }
    }

    fn created() -> Event {
        ApiKeyDecider::decide(&Command::Create(create()), &None)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn a_key_is_created_once_with_its_role_and_tenant_and_nothing_of_its_secret() {
        let mut bound = create();
        bound.tenant = Some(" Contoso ".into());
        let events = given::<ApiKeyDecider>(&[])
            .when(Command::Create(bound))
            .unwrap();
        let key = ApiKeyDecider::fold(&events).unwrap();
        assert_eq!(
            (key.role, key.tenant.as_deref()),
            (Role::Publisher, Some("contoso"))
        );
        assert_eq!(
            given::<ApiKeyDecider>(&[created()]).when(Command::Create(create())),
            Err(DomainError::Conflict("this key exists already".into()))
        );
    }

    #[test]
    fn a_create_without_a_proper_name_or_tenant_names_every_field() {
        let mut bad = create();
        bad.name = " ".into();
        bad.tenant = Some("not a label!".into());
        let Err(DomainError::Invalid(errors)) =
            given::<ApiKeyDecider>(&[]).when(Command::Create(bad))
        else {
            panic!("accepted");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "tenant"]);
    }

    #[test]
    fn revoking_takes_effect_once_and_again_is_a_no_op_and_unknown_is_not_found() {
        let revoke = || {
            Command::Revoke(Revoke {
                author: "admin".into(),
                at: at(5),
            })
        };
        let events = given::<ApiKeyDecider>(&[created()]).when(revoke()).unwrap();
        let mut history = vec![created()];
        history.extend(events);
        assert_eq!(
            ApiKeyDecider::fold(&history).unwrap().revoked_at,
            Some(at(5))
        );
        assert_eq!(
            given::<ApiKeyDecider>(&history).when(revoke()),
            Ok(Vec::new())
        );
        assert!(matches!(
            given::<ApiKeyDecider>(&[]).when(revoke()),
            Err(DomainError::NotFound(_))
        ));
    }

    #[test]
    fn a_version_1_creation_is_read_without_its_secret_digest() {
        let stored = serde_json::json!({
            "key_id": Uuid::from_u128(1), "name": "Status page publisher", "role": "publisher",
            "tenant": null, "secret_sha256": "ab".repeat(32), "author": "bootstrap",
            "at": "2026-11-24T09:00:00Z"
        });
        let event = Event::from_stored("api_key.created", 1, stored).unwrap();
        assert_eq!(event, created());
        let data = serde_json::to_value(&event).unwrap();
        assert!(data.get("secret_sha256").is_none(), "{data}");
    }

    #[test]
    fn stored_events_read_back_by_type_and_role_names_are_the_serde_names() {
        for role in [Role::Admin, Role::Publisher, Role::Auditor, Role::Reader] {
            assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        }
        let event = created();
        let data = serde_json::to_value(&event).unwrap();
        assert_eq!(
            Event::from_stored(event.type_name(), event.schema_version(), data).unwrap(),
            event
        );
    }
}
