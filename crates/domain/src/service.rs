//! Services: created, renamed or regrouped, retired. A service's status is not kept here:
//! it is derived from the incidents and maintenances that affect it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::values::{optional_text, text, ServiceId, MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS};
use crate::{decode, Decider, DecodeError, DomainError, StoredData, Validation};

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Create(Create),
    Change(Change),
    Retire(Retire),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Create {
    pub service_id: ServiceId,
    pub name: String,
    pub description: String,
    pub group: Option<String>,
    pub author: String,
    pub at: DateTime<Utc>,
}

/// Only the fields given change; `group: Some(None)` takes the service out of its group.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub name: Option<String>,
    pub description: Option<String>,
    pub group: Option<Option<String>>,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retire {
    pub author: String,
    pub at: DateTime<Utc>,
}

/// Serialises as its payload alone; read back by type name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    Created(ServiceCreated),
    Changed(ServiceChanged),
    Retired(ServiceRetired),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCreated {
    pub service_id: ServiceId,
    pub name: String,
    pub description: String,
    pub group: Option<String>,
    pub author: String,
    pub at: DateTime<Utc>,
}

/// The service's name, description and group after the change, all three.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChanged {
    pub name: String,
    pub description: String,
    pub group: Option<String>,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRetired {
    pub author: String,
    pub at: DateTime<Utc>,
}

impl Event {
    /// The schema version of the stored form written today.
    pub fn schema_version(&self) -> u32 {
        1
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Created(_) => "service.created",
            Event::Changed(_) => "service.changed",
            Event::Retired(_) => "service.retired",
        }
    }

    pub fn from_stored<'a>(
        type_name: &str,
        schema_version: u32,
        data: impl Into<StoredData<'a>>,
    ) -> Result<Event, DecodeError> {
        let data = data.into();
        match type_name {
            "service.created" => decode(type_name, schema_version, data, &[], Event::Created),
            "service.changed" => decode(type_name, schema_version, data, &[], Event::Changed),
            "service.retired" => decode(type_name, schema_version, data, &[], Event::Retired),
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: ServiceId,
    pub name: String,
    pub description: String,
    pub group: Option<String>,
    #[serde(serialize_with = "crate::values::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::values::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::values::rfc3339::option::serialize")]
    pub retired_at: Option<DateTime<Utc>>,
}

pub type State = Option<Service>;

pub struct ServiceDecider;

fn name(value: &str) -> Result<String, DomainError> {
    text("name", value, MAX_TITLE_CHARS)
}

fn description(value: &str) -> Result<String, DomainError> {
    optional_text("description", value, MAX_DESCRIPTION_CHARS)
}

fn group(value: Option<&str>) -> Result<Option<String>, DomainError> {
    value.map(|g| text("group", g, MAX_TITLE_CHARS)).transpose()
}

fn live(state: &State) -> Result<&Service, DomainError> {
    match state {
        None => Err(DomainError::NotFound("service".into())),
        Some(service) if service.retired_at.is_some() => {
            Err(DomainError::Conflict("the service is retired".into()))
        }
        Some(service) => Ok(service),
    }
}

impl Decider for ServiceDecider {
    type Command = Command;
    type Event = Event;
    type State = State;

    fn decide(command: &Command, state: &State) -> Result<Vec<Event>, DomainError> {
        match command {
            Command::Create(c) => {
                if state.is_some() {
                    return Err(DomainError::Conflict("this service exists already".into()));
                }
                let mut v = Validation::default();
                let name = v.check(name(&c.name));
                let description = v.check(description(&c.description));
                let group = v.check(group(c.group.as_deref()));
                let author = v.check(text("author", &c.author, MAX_TITLE_CHARS));
                v.finish()?;
                Ok(vec![Event::Created(ServiceCreated {
                    service_id: c.service_id,
                    name,
                    description,
                    group,
                    author,
                    at: c.at,
                })])
            }
            Command::Change(c) => {
                let service = live(state)?;
                let mut v = Validation::default();
                // A field not given keeps its value.
                let new_name = match &c.name {
                    Some(n) => v.check(name(n)),
                    None => service.name.clone(),
                };
                let new_description = match &c.description {
                    Some(d) => v.check(description(d)),
                    None => service.description.clone(),
                };
                let new_group = match &c.group {
                    Some(g) => v.check(group(g.as_deref())),
                    None => service.group.clone(),
                };
                let author = v.check(text("author", &c.author, MAX_TITLE_CHARS));
                v.finish()?;
                let unchanged = new_name == service.name
                    && new_description == service.description
                    && new_group == service.group;
                // Nothing to record: the service already is as asked.
                if unchanged {
                    return Ok(Vec::new());
                }
                Ok(vec![Event::Changed(ServiceChanged {
                    name: new_name,
                    description: new_description,
                    group: new_group,
                    author,
                    at: c.at,
                })])
            }
            Command::Retire(c) => {
                live(state)?;
                let author = text("author", &c.author, MAX_TITLE_CHARS)?;
                Ok(vec![Event::Retired(ServiceRetired { author, at: c.at })])
            }
        }
    }

    fn evolve(state: State, event: &Event) -> State {
        match (state, event) {
            (None, Event::Created(e)) => Some(Service {
                id: e.service_id,
                name: e.name.clone(),
                description: e.description.clone(),
                group: e.group.clone(),
                created_at: e.at,
                updated_at: e.at,
                retired_at: None,
            }),
            (Some(mut service), Event::Changed(e)) => {
                service.name = e.name.clone();
                service.description = e.description.clone();
                service.group = e.group.clone();
                service.updated_at = e.at;
                Some(service)
            }
            (Some(mut service), Event::Retired(e)) => {
                service.retired_at = Some(e.at);
                service.updated_at = e.at;
                Some(service)
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
    use uuid::Uuid;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 8, minute, 0).unwrap()
    }

    fn create() -> Command {
        Command::Create(Create {
            service_id: Uuid::from_u128(7),
            name: "Microsoft Teams".into(),
            description: "Chat and meetings".into(),
            group: Some("Collaboration".into()),
            author: "admin".into(),
            at: at(0),
        })
    }

    fn created() -> Event {
        ServiceDecider::decide(&create(), &None).unwrap().remove(0)
    }

    fn change(name: Option<&str>, group: Option<Option<&str>>) -> Command {
        Command::Change(Change {
            name: name.map(str::to_owned),
            description: None,
            group: group.map(|g| g.map(str::to_owned)),
            author: "admin".into(),
            at: at(5),
        })
    }

    #[test]
    fn a_service_is_created_once_with_valid_fields() {
        let service = ServiceDecider::fold(&[created()]).unwrap();
        assert_eq!(
            (service.name.as_str(), service.group.as_deref()),
            ("Microsoft Teams", Some("Collaboration"))
        );
        assert!(matches!(
            given::<ServiceDecider>(&[created()]).when(create()),
            Err(DomainError::Conflict(_))
        ));
        let bad = Command::Create(Create {
            service_id: Uuid::from_u128(8),
            name: "".into(),
            description: "x".repeat(MAX_DESCRIPTION_CHARS + 1),
            group: Some(" ".into()),
            author: "admin".into(),
            at: at(0),
        });
        let Err(DomainError::Invalid(errors)) = given::<ServiceDecider>(&[]).when(bad) else {
            panic!()
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["name", "description", "group"]);
    }

    #[test]
    fn a_change_records_the_whole_new_shape_and_nothing_when_nothing_changes() {
        let events = given::<ServiceDecider>(&[created()])
            .when(change(Some("Teams"), Some(None)))
            .unwrap();
        let Event::Changed(e) = &events[0] else {
            panic!()
        };
        assert_eq!(
            (e.name.as_str(), e.description.as_str(), e.group.as_deref()),
            ("Teams", "Chat and meetings", None)
        );
        let mut history = vec![created()];
        history.extend(events);
        assert_eq!(ServiceDecider::fold(&history).unwrap().updated_at, at(5));
        assert_eq!(
            given::<ServiceDecider>(&history)
                .when(change(Some("Teams"), None))
                .unwrap(),
            vec![]
        );
        assert!(matches!(
            given::<ServiceDecider>(&[]).when(change(Some("x"), None)),
            Err(DomainError::NotFound(_))
        ));
    }

    #[test]
    fn a_retired_service_cannot_change_or_retire_again() {
        let retire = || {
            Command::Retire(Retire {
                author: "admin".into(),
                at: at(9),
            })
        };
        let mut history = vec![created()];
        history.extend(given::<ServiceDecider>(&history).when(retire()).unwrap());
        assert_eq!(
            ServiceDecider::fold(&history).unwrap().retired_at,
            Some(at(9))
        );
        assert!(matches!(
            given::<ServiceDecider>(&history).when(retire()),
            Err(DomainError::Conflict(_))
        ));
        assert!(matches!(
            given::<ServiceDecider>(&history).when(change(Some("x"), None)),
            Err(DomainError::Conflict(_))
        ));
    }

    #[test]
    fn stored_events_read_back_by_type() {
        let event = created();
        let data = serde_json::to_value(&event).unwrap();
        assert_eq!(
            Event::from_stored(event.type_name(), 1, data).unwrap(),
            event
        );
    }
}
