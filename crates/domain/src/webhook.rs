//! Webhooks: endpoints that receive notices. Registered by an admin, deleted by an admin,
//! disabled by the dispatcher when the endpoint answers 410 Gone.
//!
//! Their events are administrative history, never notices. The signing secret never enters
//! the domain (an export of the history would carry it): the API keeps it beside the
//! registration event, in the same transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::language::Language;
use crate::values::{label, text, NoticeType, ServiceId, MAX_LIST_LEN, MAX_TITLE_CHARS};
use crate::{decode, Decider, DecodeError, DomainError, StoredData, Validation};

/// What a delivery's body is: a CloudEvent, or a message a chat product's incoming webhook
/// takes and shows to people.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum WebhookFormat {
    /// The notice as a CloudEvents 1.0 JSON object, signed as Standard Webhooks say.
    #[default]
    Cloudevents,
    /// A Slack incoming-webhook message: `text` and `blocks`.
    Slack,
    /// A Microsoft Teams incoming-webhook (or Workflows) message carrying an Adaptive Card.
    Teams,
}

pub type WebhookId = Uuid;

/// Longest endpoint URL accepted.
pub const MAX_URL_CHARS: usize = 2_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Register(Register),
    Delete(Delete),
    Disable(Disable),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Register {
    pub webhook_id: WebhookId,
    pub url: String,
    /// Empty: every notice type.
    pub event_types: Vec<NoticeType>,
    /// Empty: notices of every service.
    pub service_ids: Vec<ServiceId>,
    /// The tenant whose private notices it also receives (the registering key's).
    pub tenant: Option<String>,
    /// The language its notices are rendered in (a tag as the client wrote it); `None`:
    /// the default language.
    pub language: Option<String>,
    pub format: WebhookFormat,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delete {
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Disable {
    /// Why, e.g. "the endpoint answered 410 Gone".
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// Serialises as its payload alone; read back by type name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    Registered(WebhookRegistered),
    Deleted(WebhookDeleted),
    Disabled(WebhookDisabled),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRegistered {
    pub webhook_id: WebhookId,
    pub url: String,
    pub event_types: Vec<NoticeType>,
    pub service_ids: Vec<ServiceId>,
    pub tenant: Option<String>,
    /// Schema version 2: the language of its notices (`null`: the default) and the format
    /// of its bodies.
    pub language: Option<Language>,
    pub format: WebhookFormat,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDeleted {
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDisabled {
    pub reason: String,
    pub at: DateTime<Utc>,
}

impl Event {
    /// The schema version of the stored form written today: `webhook.registered` v2 added
    /// `language` and `format`.
    pub fn schema_version(&self) -> u32 {
        match self {
            Event::Registered(_) => 2,
            _ => 1,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Registered(_) => "webhook.registered",
            Event::Deleted(_) => "webhook.deleted",
            Event::Disabled(_) => "webhook.disabled",
        }
    }

    pub fn from_stored<'a>(
        type_name: &str,
        schema_version: u32,
        data: impl Into<StoredData<'a>>,
    ) -> Result<Event, DecodeError> {
        let data = data.into();
        match type_name {
            "webhook.registered" => decode(
                type_name,
                schema_version,
                data,
                &[registered_v1_to_v2],
                Event::Registered,
            ),
            "webhook.deleted" => decode(type_name, schema_version, data, &[], Event::Deleted),
            "webhook.disabled" => decode(type_name, schema_version, data, &[], Event::Disabled),
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

/// Version 1 registrations received CloudEvents in the default language.
fn registered_v1_to_v2(
    mut v1: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    if v1.contains_key("language") || v1.contains_key("format") {
        return Err("a version 1 registration has no language or format".into());
    }
    v1.insert("language".into(), serde_json::Value::Null);
    v1.insert("format".into(), "cloudevents".into());
    Ok(v1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum WebhookStatus {
    /// Receives notices.
    Active,
    /// The endpoint answered 410 Gone: nothing more is sent.
    Disabled,
    /// An admin deleted it: nothing more is sent.
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: WebhookId,
    pub url: String,
    pub event_types: Vec<NoticeType>,
    pub service_ids: Vec<ServiceId>,
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Language>,
    #[serde(default)]
    pub format: WebhookFormat,
    pub status: WebhookStatus,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// When it stopped receiving (deleted or disabled), and why.
    pub ended_at: Option<DateTime<Utc>>,
    pub ended_reason: Option<String>,
}

pub type State = Option<Webhook>;

pub struct WebhookDecider;

/// An absolute `http` or `https` URL with a host, without credentials or fragment: what an
/// endpoint may be. Whether its host may be reached (private networks) is for the caller
/// to decide; it needs the network.
pub fn endpoint_url(value: &str) -> Result<String, DomainError> {
    let invalid = |why: &str| Err(DomainError::invalid("url", why));
    let value = value.trim();
    if value.chars().count() > MAX_URL_CHARS {
        return invalid(&format!("must be at most {MAX_URL_CHARS} characters"));
    }
    let Ok(url) = url::Url::parse(value) else {
        return invalid("must be an absolute http or https URL");
    };
    if !matches!(url.scheme(), "http" | "https") {
        return invalid("must be an http or https URL");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return invalid("must name a host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return invalid("must not carry credentials (they would show in every listing)");
    }
    if url.fragment().is_some() {
        return invalid("must not have a fragment");
    }
    Ok(url.to_string())
}

fn distinct<T: PartialEq + Copy>(field: &str, values: &[T]) -> Result<Vec<T>, DomainError> {
    if values.len() > MAX_LIST_LEN {
        return Err(DomainError::invalid(
            field,
            format!("at most {MAX_LIST_LEN} entries"),
        ));
    }
    let mut out = Vec::with_capacity(values.len());
    for value in values {
        if !out.contains(value) {
            out.push(*value);
        }
    }
    Ok(out)
}

impl Decider for WebhookDecider {
    type Command = Command;
    type Event = Event;
    type State = State;

    fn decide(command: &Command, state: &State) -> Result<Vec<Event>, DomainError> {
        match command {
            Command::Register(c) => {
                if state.is_some() {
                    return Err(DomainError::Conflict("this webhook exists already".into()));
                }
                let mut v = Validation::default();
                let url = v.check(endpoint_url(&c.url));
                let event_types = v.check(distinct("event_types", &c.event_types));
                let service_ids = v.check(distinct("service_ids", &c.service_ids));
                let tenant = v.check(c.tenant.as_deref().map(|t| label("tenant", t)).transpose());
                let language = v.check(
                    c.language
                        .as_deref()
                        .map(|tag| Language::parse("language", tag))
                        .transpose(),
                );
                let author = v.check(text("author", &c.author, MAX_TITLE_CHARS));
                v.finish()?;
                Ok(vec![Event::Registered(WebhookRegistered {
                    webhook_id: c.webhook_id,
                    url,
                    event_types,
                    service_ids,
                    tenant,
                    language,
                    format: c.format,
                    author,
                    at: c.at,
                })])
            }
            Command::Delete(c) => {
                let webhook = state
                    .as_ref()
                    .ok_or_else(|| DomainError::NotFound("webhook".into()))?;
                if webhook.status == WebhookStatus::Deleted {
                    // Deleting twice changes nothing: it is deleted, as asked.
                    return Ok(Vec::new());
                }
                let author = text("author", &c.author, MAX_TITLE_CHARS)?;
                Ok(vec![Event::Deleted(WebhookDeleted { author, at: c.at })])
            }
            Command::Disable(c) => {
                let webhook = state
                    .as_ref()
                    .ok_or_else(|| DomainError::NotFound("webhook".into()))?;
                if webhook.status != WebhookStatus::Active {
                    return Ok(Vec::new());
                }
                let reason = text("reason", &c.reason, MAX_TITLE_CHARS)?;
                Ok(vec![Event::Disabled(WebhookDisabled { reason, at: c.at })])
            }
        }
    }

    fn evolve(state: State, event: &Event) -> State {
        match (state, event) {
            (None, Event::Registered(e)) => Some(Webhook {
                id: e.webhook_id,
                url: e.url.clone(),
                event_types: e.event_types.clone(),
                service_ids: e.service_ids.clone(),
                tenant: e.tenant.clone(),
                language: e.language.clone(),
                format: e.format,
                status: WebhookStatus::Active,
                created_at: e.at,
                created_by: e.author.clone(),
                ended_at: None,
                ended_reason: None,
            }),
            (Some(mut webhook), Event::Deleted(e)) => {
                webhook.status = WebhookStatus::Deleted;
                webhook.ended_at.get_or_insert(e.at);
                webhook.ended_reason.get_or_insert_with(|| "deleted".into());
                Some(webhook)
            }
            (Some(mut webhook), Event::Disabled(e)) => {
                if webhook.status == WebhookStatus::Active {
                    webhook.status = WebhookStatus::Disabled;
                    webhook.ended_at = Some(e.at);
                    webhook.ended_reason = Some(e.reason.clone());
                }
                Some(webhook)
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

    fn register() -> Register {
        Register {
            webhook_id: Uuid::from_u128(7),
            url: " https://hooks.example.com/crier ".into(),
            event_types: vec![NoticeType::IncidentResolved, NoticeType::IncidentResolved],
            service_ids: vec![Uuid::from_u128(1), Uuid::from_u128(1), Uuid::from_u128(2)],
            tenant: Some("Contoso".into()),
            language: Some("CY".into()),
            format: WebhookFormat::Slack,
            author: "admin".into(),
            at: at(0),
        }
    }

    fn registered() -> Event {
        WebhookDecider::decide(&Command::Register(register()), &None)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn a_registration_keeps_a_normalised_url_and_distinct_filters() {
        let webhook = WebhookDecider::fold(&[registered()]).unwrap();
        assert_eq!(webhook.url, "https://hooks.example.com/crier");
        assert_eq!(webhook.event_types, [NoticeType::IncidentResolved]);
        assert_eq!(
            webhook.service_ids,
            [Uuid::from_u128(1), Uuid::from_u128(2)]
        );
        assert_eq!(webhook.tenant.as_deref(), Some("contoso"));
        assert_eq!(webhook.status, WebhookStatus::Active);
        assert!(matches!(
            given::<WebhookDecider>(&[registered()]).when(Command::Register(register())),
            Err(DomainError::Conflict(_))
        ));
    }

    #[test]
    fn only_plain_http_and_https_urls_with_a_host_are_endpoints() {
        for bad in [
            "hooks.example.com/crier",
            "ftp://hooks.example.com/",
            "https://user:pw@hooks.example.com/",
            "https://hooks.example.com/#part",
            "file:///etc/passwd",
            "https://",
            "",
        ] {
            assert!(endpoint_url(bad).is_err(), "{bad} accepted");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert!(endpoint_url(&long).is_err());
        assert_eq!(
            endpoint_url("HTTP://Example.COM:8080/a?b=c").unwrap(),
            "http://example.com:8080/a?b=c"
        );
    }

    #[test]
    fn deleting_or_disabling_ends_it_once_and_a_deleted_one_stays_deleted() {
        let delete = || {
            Command::Delete(Delete {
                author: "admin".into(),
                at: at(5),
            })
        };
        let disable = || {
            Command::Disable(Disable {
                reason: "the endpoint answered 410 Gone".into(),
                at: at(6),
            })
        };
        let mut history = vec![registered()];
        history.extend(given::<WebhookDecider>(&history).when(disable()).unwrap());
        let disabled = WebhookDecider::fold(&history).unwrap();
        assert_eq!(
            (disabled.status, disabled.ended_at),
            (WebhookStatus::Disabled, Some(at(6)))
        );
        assert_eq!(
            given::<WebhookDecider>(&history).when(disable()),
            Ok(vec![])
        );
        history.extend(given::<WebhookDecider>(&history).when(delete()).unwrap());
        let deleted = WebhookDecider::fold(&history).unwrap();
        assert_eq!(deleted.status, WebhookStatus::Deleted);
        assert_eq!(deleted.ended_at, Some(at(6)));
        assert_eq!(given::<WebhookDecider>(&history).when(delete()), Ok(vec![]));
        assert!(matches!(
            given::<WebhookDecider>(&[]).when(delete()),
            Err(DomainError::NotFound(_))
        ));
    }

    #[test]
    fn stored_events_read_back_by_type() {
        let event = registered();
        let data = serde_json::to_value(&event).unwrap();
        assert_eq!(
            Event::from_stored(event.type_name(), event.schema_version(), data).unwrap(),
            event
        );
    }

    #[test]
    fn a_registration_keeps_its_language_and_format_and_version_1_reads_with_neither() {
        let Event::Registered(e) = registered() else {
            panic!()
        };
        assert_eq!(e.language.as_ref().map(Language::as_str), Some("cy"));
        let webhook = WebhookDecider::fold(&[registered()]).unwrap();
        assert_eq!(webhook.format, WebhookFormat::Slack);
        let mut bad = register();
        bad.language = Some("Welsh please".into());
        assert!(WebhookDecider::decide(&Command::Register(bad), &None).is_err());

        let mut v1 = serde_json::to_value(registered()).unwrap();
        let object = v1.as_object_mut().unwrap();
        object.remove("language");
        object.remove("format");
        let Event::Registered(old) = Event::from_stored("webhook.registered", 1, v1).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (old.language, old.format),
            (None, WebhookFormat::Cloudevents)
        );
    }
}
