//! The JSON bodies the API accepts and answers, with their OpenAPI schemas (the incidents,
//! maintenances and services that notices carry too are in `notices::representation`).
//! Requests refuse unknown fields, so a misspelt field is a 400, not a silently ignored
//! setting.

use chrono::{DateTime, Utc};
use domain::api_key::{ApiKey, Role};
use domain::incident::{BodyText, DeclarationTexts, MessageText, UpdateTexts};
use domain::language::{RawTranslations, LANGUAGE_PATTERN, MAX_TRANSLATIONS};
use domain::maintenance::MaintenanceStatus;
use domain::maintenance::ScheduleTexts;
use domain::values::{
    AffectedService, Audience, ClientAction, Impact, IncidentStatus, NoticeType, ServiceStatus,
};
use domain::webhook::{Webhook, WebhookFormat, WebhookStatus};
pub use notices::representation::{IncidentBody, MaintenanceBody, ServiceBody};
use projections::Versioned;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// An API key, without its secret (which only its creator ever saw).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyBody {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    /// The tenant the key is bound to, if any.
    pub tenant: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Who created it: an API key id, `cli` or `bootstrap`; to a tenant-bound caller, a key
    /// of its tenant by id and anything else as `operator`.
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
    pub version: u64,
}

impl From<Versioned<ApiKey>> for ApiKeyBody {
    fn from(v: Versioned<ApiKey>) -> Self {
        ApiKeyBody {
            id: v.id,
            name: v.state.name,
            role: v.state.role,
            tenant: v.state.tenant,
            created_at: v.state.created_at,
            created_by: v.state.created_by,
            revoked_at: v.state.revoked_at,
            version: v.version,
        }
    }
}

/// A key just created, with its secret, shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedApiKey {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub tenant: Option<String>,
    /// The secret to send as `Authorization: Bearer <key>`. Only its SHA-256 is kept.
    #[schema(example = "crier_3f9a…")]
    pub key: String,
}

/// One page of services.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServicePage {
    pub items: Vec<ServiceBody>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// One page of incidents, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IncidentPage {
    pub items: Vec<IncidentBody>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// One page of maintenances, latest start first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MaintenancePage {
    pub items: Vec<MaintenanceBody>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// One page of API keys, by name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyPage {
    pub items: Vec<ApiKeyBody>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// `POST /v1/api-keys`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// What the key is for, shown in key lists.
    #[schema(schema_with = domain::values::schema::title)]
    pub name: String,
    pub role: Role,
    /// Bind the key to a tenant: it then sees public notices and that tenant's only.
    #[serde(default)]
    #[schema(schema_with = domain::values::schema::optional_label)]
    pub tenant: Option<String>,
}

/// `POST /v1/services`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewService {
    #[schema(schema_with = domain::values::schema::title)]
    pub name: String,
    #[serde(default)]
    #[schema(schema_with = domain::values::schema::description)]
    pub description: String,
    #[serde(default)]
    #[schema(schema_with = domain::values::schema::optional_title)]
    pub group: Option<String>,
}

/// `PATCH /v1/services/{id}`: only the fields present change; `"group": null` takes the
/// service out of its group.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceChanges {
    #[serde(default)]
    #[schema(schema_with = domain::values::schema::optional_title)]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(schema_with = domain::values::schema::optional_description)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = domain::values::schema::optional_title)]
    pub group: Option<Option<String>>,
}

/// A field that is present (even as `null`) becomes `Some`; an absent one stays `None`
/// through `#[serde(default)]`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `POST /v1/incidents`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIncident {
    /// Required, unless the template named by `template_id` has it.
    #[serde(default)]
    #[schema(schema_with = incident_title)]
    pub title: Option<String>,
    /// Required, unless the template named by `template_id` has it.
    #[serde(default)]
    pub impact: Option<Impact>,
    /// `investigating` when absent; an incident cannot be declared resolved.
    #[serde(default)]
    #[schema(schema_with = open_status)]
    pub status: Option<IncidentStatus>,
    /// The first update's text. Required, unless the template named by `template_id` has it.
    #[serde(default)]
    #[schema(schema_with = optional_message)]
    pub message: Option<String>,
    pub affected_services: Vec<AffectedService>,
    /// Free labels such as `europe` or `global`.
    #[serde(default)]
    #[schema(schema_with = domain::values::schema::labels)]
    pub regions: Vec<String>,
    /// Public when absent (a tenant-bound key's own tenant).
    #[serde(default)]
    pub audience: Option<Audience>,
    #[serde(default)]
    pub client_action: Option<ClientAction>,
    /// The texts in other languages, by BCP 47 tag: each translates texts this request
    /// carries (`title`, `message`, `client_action.message`).
    #[serde(default)]
    #[schema(schema_with = translations::<DeclarationTexts>)]
    pub translations: RawTranslations<DeclarationTexts>,
    /// A template (`/v1/templates`) that fills every field this request does not give.
    #[serde(default)]
    pub template_id: Option<Uuid>,
}

/// Translations keyed by language tag, as JSON Schema: an object whose property names are
/// tags and whose values are `T`.
fn translations<T: utoipa::ToSchema>() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .property_names(Some(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::Type::String)
                .pattern(Some(LANGUAGE_PATTERN)),
        ))
        .additional_properties(Some(utoipa::openapi::Ref::from_schema_name(T::name())))
        .max_properties(Some(MAX_TRANSLATIONS))
        .description(Some(
            "The same texts in other languages than the default, by BCP 47 tag (`cy`, \
             `en-GB`); each translates only texts the request carries.",
        ))
        .build()
}

/// The statuses an incident may be declared with: the open ones.
fn open_status() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    let mut status = utoipa::openapi::ObjectBuilder::new()
        .enum_values(Some(
            ["investigating", "identified", "monitoring"]
                .into_iter()
                .map(serde_json::Value::from)
                .chain([serde_json::Value::Null]),
        ))
        .description(Some(
            "`investigating` when absent; an incident cannot be declared resolved.",
        ))
        .build();
    status.schema_type = SchemaType::from_iter([Type::String, Type::Null]);
    status
}

/// An incident's title, with the example the documentation shows.
fn incident_title() -> utoipa::openapi::Object {
    let mut title = domain::values::schema::optional_title();
    title.examples = vec!["Users cannot sign in to Teams".into()];
    title
}

/// `POST /v1/incidents/{id}/updates`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIncidentUpdate {
    /// `resolved` closes the incident. Required, unless the template named by
    /// `template_id` has it.
    #[serde(default)]
    pub status: Option<IncidentStatus>,
    /// Required, unless the template named by `template_id` has it.
    #[serde(default)]
    #[schema(schema_with = optional_message)]
    pub message: Option<String>,
    #[serde(default)]
    pub impact: Option<Impact>,
    /// Replaces the list when present.
    #[serde(default)]
    pub affected_services: Option<Vec<AffectedService>>,
    /// Replaces the action when present.
    #[serde(default)]
    pub client_action: Option<ClientAction>,
    #[serde(default)]
    #[schema(schema_with = translations::<UpdateTexts>)]
    pub translations: RawTranslations<UpdateTexts>,
    /// A template (`/v1/templates`) that fills every field this request does not give.
    #[serde(default)]
    pub template_id: Option<Uuid>,
}

/// `POST /v1/incidents/{id}/updates/{update_id}/corrections`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCorrection {
    /// The corrected text; the text it replaces stays in the update's `corrections`.
    #[schema(schema_with = domain::values::schema::message)]
    pub message: String,
    #[schema(schema_with = domain::values::schema::message)]
    pub reason: String,
    /// The language of the text corrected (default: the default language's text). A
    /// correction corrects one language at a time; in a language the update has no text in
    /// yet, it adds one.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,7}$")]
    pub language: Option<String>,
}

/// `POST /v1/incidents/{id}/reopen`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reopening {
    #[schema(schema_with = domain::values::schema::message)]
    pub message: String,
    #[serde(default)]
    #[schema(schema_with = translations::<MessageText>)]
    pub translations: RawTranslations<MessageText>,
}

/// `POST /v1/incidents/{id}/postmortem`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPostmortem {
    #[schema(schema_with = domain::values::schema::postmortem)]
    pub body: String,
    #[serde(default)]
    #[schema(schema_with = translations::<BodyText>)]
    pub translations: RawTranslations<BodyText>,
}

/// `POST /v1/maintenances`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMaintenance {
    #[schema(schema_with = domain::values::schema::title)]
    pub title: String,
    #[schema(schema_with = domain::values::schema::message)]
    pub message: String,
    pub affected_services: Vec<Uuid>,
    #[serde(default)]
    #[schema(schema_with = domain::values::schema::labels)]
    pub regions: Vec<String>,
    /// When the work starts: between 1970 and 9999 (UTC).
    #[schema(schema_with = domain::values::schema::time)]
    pub starts_at: DateTime<Utc>,
    /// When it ends, after `starts_at`: between 1970 and 9999 (UTC).
    #[schema(schema_with = domain::values::schema::time)]
    pub ends_at: DateTime<Utc>,
    #[serde(default)]
    pub audience: Option<Audience>,
    #[serde(default)]
    #[schema(schema_with = translations::<ScheduleTexts>)]
    pub translations: RawTranslations<ScheduleTexts>,
    /// Crier moves it to `in_progress` at `starts_at` (default `true`), unless a publisher
    /// moved it first.
    #[serde(default)]
    pub auto_start: Option<bool>,
    /// Crier moves it to `completed` at `ends_at` (default `true`), unless a publisher
    /// moved it first.
    #[serde(default)]
    pub auto_complete: Option<bool>,
    /// Send subscribers a `maintenance.reminder` notice this many minutes before it starts
    /// (default 60; 0: none; at most a year). A maintenance announced inside that window
    /// (this many minutes before its start, or later) gets none: its announcement is the
    /// reminder.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 525_600)]
    pub remind_before_minutes: Option<u32>,
}

/// `POST /v1/maintenances/{id}/updates`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMaintenanceUpdate {
    pub status: MaintenanceStatus,
    #[schema(schema_with = domain::values::schema::message)]
    pub message: String,
    #[serde(default)]
    #[schema(schema_with = translations::<MessageText>)]
    pub translations: RawTranslations<MessageText>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_present_null_group_differs_from_an_absent_one() {
        let absent: ServiceChanges = serde_json::from_value(json!({"name": "Teams"})).unwrap();
        assert_eq!(absent.group, None);
        let cleared: ServiceChanges = serde_json::from_value(json!({"group": null})).unwrap();
        assert_eq!(cleared.group, Some(None));
        let set: ServiceChanges = serde_json::from_value(json!({"group": "M365"})).unwrap();
        assert_eq!(set.group, Some(Some("M365".into())));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let typo = json!({"title": "t", "impact": "major", "message": "m",
            "affected_services": [], "client_acton": {"kind": "none"}});
        assert!(serde_json::from_value::<NewIncident>(typo).is_err());
    }
}

/// Who caused an event and in answer to what.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditMetadata {
    /// The API key id (or `system`, or a CLI user) that caused the event.
    pub actor: String,
    /// The `X-Request-Id` of the request that caused it.
    pub request_id: Option<String>,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
}

/// One event of the history, as stored, with its place in the global log and the chain.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEvent {
    /// Global position: 1, 2, 3… without gaps.
    pub position: u64,
    pub stream_id: String,
    pub stream_version: u64,
    pub event_id: Uuid,
    /// The event type, e.g. `incident.declared`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    /// The event's payload, exactly as stored.
    #[schema(value_type = Object)]
    pub data: eventstore::EventData,
    pub metadata: AuditMetadata,
    /// When it was stored: RFC 3339 UTC with microseconds, as the chain hashes it.
    pub recorded_at: String,
    /// Lower-case hex SHA-256 link of the previous position (zeros at position 1).
    pub prev_hash: String,
    /// Lower-case hex SHA-256 link of this position.
    pub hash: String,
}

impl From<eventstore::LoggedEvent> for AuditEvent {
    fn from(logged: eventstore::LoggedEvent) -> Self {
        let event = logged.event;
        AuditEvent {
            position: logged.position,
            stream_id: event.stream_id,
            stream_version: event.stream_version,
            event_id: event.event_id,
            event_type: event.event_type,
            schema_version: event.schema_version,
            data: event.data,
            metadata: AuditMetadata {
                actor: event.metadata.actor,
                request_id: event.metadata.request_id,
                correlation_id: event.metadata.correlation_id,
                causation_id: event.metadata.causation_id,
            },
            recorded_at: eventstore::chain::canonical_time(&event.recorded_at),
            prev_hash: logged.prev_hash.to_hex(),
            hash: logged.hash.to_hex(),
        }
    }
}

/// A page of the history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEventPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `after` for the next page: the global position (or, for one stream, the
    /// stream version) of the last event here, or `after` itself when the page is empty,
    /// which means the end has been reached for now.
    pub next_after: u64,
}

/// The last link of the chain that verified.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChainHeadBody {
    pub position: u64,
    /// Lower-case hex of the SHA-256 link.
    pub hash: String,
}

/// The result of recomputing the hash chain from the stored bytes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerificationBody {
    /// Every link recomputed matches, positions run without gaps, and no committed event
    /// was left out.
    pub ok: bool,
    /// Positions verified (from 1).
    pub checked: u64,
    /// The last good link: the head of the chain when `ok`; null when nothing is sealed.
    pub head: Option<ChainHeadBody>,
    /// The first position whose stored bytes do not give its stored link, or that is
    /// missing; null when `ok`.
    pub first_bad_position: Option<u64>,
    /// What is wrong there.
    pub problem: Option<String>,
    /// Committed events the verification did not reach: not given a position yet, or given
    /// one after it read the log (not an error). 0: it covered everything committed.
    pub unsealed: u64,
    /// When the server has a history key: the events whose authenticator holds (`null`
    /// without a key).
    pub authenticated: Option<u64>,
    /// When the server has a history key: the events before the first authenticated one,
    /// written before a key was set (not an error).
    pub unauthenticated: Option<u64>,
}

impl From<eventstore::VerifyReport> for VerificationBody {
    fn from(report: eventstore::VerifyReport) -> Self {
        VerificationBody {
            ok: report.ok,
            checked: report.checked,
            head: report.head.map(|head| ChainHeadBody {
                position: head.position,
                hash: head.hash,
            }),
            first_bad_position: report.first_bad_position,
            problem: report.problem,
            unsealed: report.unsealed,
            authenticated: report.authenticated,
            unauthenticated: report.unauthenticated,
        }
    }
}

/// "The chain had `hash` at `position`", signed with Crier's Ed25519 key. Keep it: `crier
/// verify --checkpoint FILE` later proves that the history still extends it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckpointBody {
    pub position: u64,
    /// Lower-case hex of the link at `position`.
    pub hash: String,
    /// RFC 3339 UTC with microseconds, as in the signed text.
    pub signed_at: String,
    /// Base64 of the raw 32-byte Ed25519 public key.
    pub public_key: String,
    /// Base64 of the Ed25519 signature of `message`.
    pub signature: String,
    /// The exact text that was signed (UTF-8, each line ending in a line feed).
    pub message: String,
}

impl From<eventstore::checkpoint::SignedCheckpoint> for CheckpointBody {
    fn from(signed: eventstore::checkpoint::SignedCheckpoint) -> Self {
        CheckpointBody {
            message: signed.message(),
            position: signed.position,
            hash: signed.hash,
            signed_at: signed.signed_at,
            public_key: signed.public_key,
            signature: signed.signature,
        }
    }
}

/// A webhook (never its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookBody {
    pub id: Uuid,
    pub url: String,
    /// The notice types it receives; empty: all.
    pub event_types: Vec<NoticeType>,
    /// The services whose notices it receives; empty: all.
    pub service_ids: Vec<Uuid>,
    /// It also receives this tenant's private notices (the registering key's tenant).
    pub tenant: Option<String>,
    /// The language its notices are rendered in; `null`: the default language.
    pub language: Option<domain::language::Language>,
    /// What its bodies are: CloudEvents, or Slack or Teams messages.
    pub format: WebhookFormat,
    pub status: WebhookStatus,
    pub created_at: DateTime<Utc>,
    /// The API key id that registered it.
    pub created_by: String,
    /// When it stopped receiving (deleted, or disabled after a 410 Gone), and why.
    pub ended_at: Option<DateTime<Utc>>,
    pub ended_reason: Option<String>,
    pub version: u64,
}

impl From<Versioned<Webhook>> for WebhookBody {
    fn from(v: Versioned<Webhook>) -> Self {
        WebhookBody {
            id: v.id,
            url: v.state.url,
            event_types: v.state.event_types,
            service_ids: v.state.service_ids,
            tenant: v.state.tenant,
            language: v.state.language,
            format: v.state.format,
            status: v.state.status,
            created_at: v.state.created_at,
            created_by: v.state.created_by,
            ended_at: v.state.ended_at,
            ended_reason: v.state.ended_reason,
            version: v.version,
        }
    }
}

/// A webhook just registered, with its signing secret, shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookBody,
    /// The Standard Webhooks signing secret (`whsec_` and base64): verify each delivery's
    /// `webhook-signature` with it.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

/// `POST /v1/webhooks`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where notices are POSTed: an absolute http or https URL.
    #[schema(example = "https://hooks.example.com/crier")]
    pub url: String,
    /// Only these notice types (default: all).
    #[serde(default)]
    pub event_types: Option<Vec<NoticeType>>,
    /// Only notices that concern these services (default: all).
    #[serde(default)]
    pub service_ids: Option<Vec<Uuid>>,
    /// The language to render its notices in where they have it (a BCP 47 tag; default:
    /// the default language).
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,7}$")]
    pub language: Option<String>,
    /// `cloudevents` (default), `slack` (a Slack incoming-webhook message) or `teams` (a
    /// Microsoft Teams incoming-webhook or Workflows message with an Adaptive Card).
    #[serde(default)]
    pub format: WebhookFormat,
}

/// One page of webhooks, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookPage {
    pub items: Vec<WebhookBody>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// One page of a webhook's deliveries, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<Delivery>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// One notice owed to one endpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivery {
    /// The `webhook-id` header: the same on every attempt.
    pub message_id: Uuid,
    /// The notice's global position.
    pub position: u64,
    /// The CloudEvent type.
    pub event_type: String,
    /// `pending` (to be sent or retried), `delivered`, `failed` (attempts ran out) or
    /// `cancelled` (the webhook was deleted or disabled).
    pub status: String,
    pub created_at: DateTime<Utc>,
    /// When the next attempt is due (pending deliveries); `null` while the delivery waits
    /// for an earlier one of the same incident or maintenance to this endpoint.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Every attempt, first first.
    pub attempts: Vec<Attempt>,
}

/// One attempt to deliver.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Attempt {
    /// 1 for the first. A number missing from the list is an attempt whose sender stopped
    /// before it could record it.
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u32,
    /// The endpoint's HTTP status; absent when it gave none (refused, timed out).
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

impl From<delivery::log::Delivery> for Delivery {
    fn from(logged: delivery::log::Delivery) -> Self {
        Delivery {
            message_id: logged.message_id,
            position: logged.position,
            event_type: logged.event_type,
            status: logged.status,
            created_at: logged.created_at,
            next_attempt_at: logged.next_attempt_at,
            finished_at: logged.finished_at,
            attempts: logged
                .attempts
                .into_iter()
                .map(|a| Attempt {
                    attempt: a.attempt,
                    started_at: a.started_at,
                    duration_ms: a.duration_ms,
                    status_code: a.status_code,
                    error: a.error,
                })
                .collect(),
        }
    }
}

/// `POST /v1/templates`: any of a notice's fields, which a declaration or an update naming
/// the template takes when it does not give them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTemplate {
    /// What the team calls it, e.g. "Restart your clients".
    #[schema(schema_with = domain::values::schema::title)]
    pub name: String,
    #[serde(default)]
    #[schema(schema_with = domain::values::schema::optional_title)]
    pub title: Option<String>,
    #[serde(default)]
    #[schema(schema_with = optional_message)]
    pub message: Option<String>,
    #[serde(default)]
    pub impact: Option<Impact>,
    #[serde(default)]
    pub status: Option<IncidentStatus>,
    #[serde(default)]
    pub client_action: Option<ClientAction>,
    #[serde(default)]
    #[schema(schema_with = translations::<DeclarationTexts>)]
    pub translations: RawTranslations<DeclarationTexts>,
}

fn optional_message() -> utoipa::openapi::Object {
    let mut message = domain::values::schema::message();
    message.schema_type = utoipa::openapi::schema::SchemaType::from_iter([
        utoipa::openapi::Type::String,
        utoipa::openapi::Type::Null,
    ]);
    message
}

/// `PATCH /v1/templates/{id}`: the fields present replace the template's (`null` clears
/// one); `translations`, when present, replaces them all.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateChanges {
    #[serde(default)]
    #[schema(schema_with = domain::values::schema::optional_title)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = domain::values::schema::optional_title)]
    pub title: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = optional_message)]
    pub message: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Impact>)]
    pub impact: Option<Option<Impact>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<IncidentStatus>)]
    pub status: Option<Option<IncidentStatus>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<ClientAction>)]
    pub client_action: Option<Option<ClientAction>>,
    #[serde(default)]
    #[schema(schema_with = translations::<DeclarationTexts>)]
    pub translations: Option<RawTranslations<DeclarationTexts>>,
}

/// A template.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TemplateBody {
    pub id: Uuid,
    pub name: String,
    pub title: Option<String>,
    pub message: Option<String>,
    pub impact: Option<Impact>,
    pub status: Option<IncidentStatus>,
    pub client_action: Option<ClientAction>,
    /// The texts in other languages, by tag.
    #[schema(value_type = Object)]
    pub translations: std::collections::BTreeMap<domain::language::Language, DeclarationTexts>,
    /// The tenant it belongs to (the creating key's); `null`: every publisher's.
    pub tenant: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub version: u64,
}

impl From<Versioned<domain::template::Template>> for TemplateBody {
    fn from(v: Versioned<domain::template::Template>) -> Self {
        let fields = v.state.fields;
        TemplateBody {
            id: v.id,
            name: v.state.name,
            title: fields.title,
            message: fields.message,
            impact: fields.impact,
            status: fields.status,
            client_action: fields.client_action,
            translations: fields.translations,
            tenant: v.state.tenant,
            created_at: v.state.created_at,
            updated_at: v.state.updated_at,
            deleted_at: v.state.deleted_at,
            version: v.version,
        }
    }
}

/// One page of templates, by name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TemplatePage {
    pub items: Vec<TemplateBody>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// `POST /v1/subscribers`: an address to mail notices to, once it confirms.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscriber {
    /// The address (at most 254 characters).
    #[schema(example = "ward.manager@nhs.example", max_length = 254)]
    pub email: String,
    /// Only notices that concern these services (default: all).
    #[serde(default)]
    pub service_ids: Option<Vec<Uuid>>,
    /// The language of its emails where notices have it (a BCP 47 tag; default: the
    /// default language).
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,7}$")]
    pub language: Option<String>,
}

/// The answer to every well-formed subscription request, whether or not the address is
/// subscribed already: nothing tells one address from another.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubscriptionAccepted {
    /// Always `confirmation_sent`.
    #[schema(example = "confirmation_sent")]
    pub status: &'static str,
}

/// An email subscriber, as an admin sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubscriberBody {
    pub id: Uuid,
    /// The address; `null` once the subscription ended (it is erased).
    pub email: Option<String>,
    pub state: domain::subscriber::SubscriberState,
    /// Only notices of these services (empty: all).
    pub service_ids: Vec<Uuid>,
    /// The language of its emails (`null`: the default language).
    pub language: Option<String>,
    /// The tenant whose private notices it also receives.
    pub tenant: Option<String>,
    pub created_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    /// When it ended, and why (`unsubscribed`, `deleted`, or `key_revoked`: the API key
    /// that subscribed the address was revoked).
    pub ended_at: Option<DateTime<Utc>>,
    pub ended_reason: Option<String>,
}

impl SubscriberBody {
    /// The subscriber with its address opened by its key (`None`: erased).
    pub fn of(
        subscriber: Versioned<domain::subscriber::Subscriber>,
        key: Option<&delivery::email::SubscriberKey>,
    ) -> Self {
        let s = subscriber.state;
        SubscriberBody {
            id: subscriber.id,
            email: key.and_then(|k| k.open(s.id, &s.sealed_address)),
            state: s.state,
            service_ids: s.service_ids,
            language: s.language.map(|l| l.as_str().to_owned()),
            tenant: s.tenant,
            created_at: s.created_at,
            confirmed_at: s.confirmed_at,
            ended_at: s.ended_at,
            ended_reason: s.ended_reason.map(|r| match r {
                domain::subscriber::ErasureReason::Unsubscribed => "unsubscribed".to_owned(),
                domain::subscriber::ErasureReason::Deleted => "deleted".to_owned(),
                domain::subscriber::ErasureReason::KeyRevoked => "key_revoked".to_owned(),
            }),
        }
    }
}

/// How many subscribers are in each state.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct SubscriberCounts {
    pub pending: i64,
    pub active: i64,
    pub unsubscribed: i64,
}

/// One page of subscribers, newest first, with the counts of every state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubscriberPage {
    pub items: Vec<SubscriberBody>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
    /// Of all subscribers the caller may see, whatever the `state` asked.
    pub counts: SubscriberCounts,
}

/// One email owed to a subscriber.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmailDelivery {
    /// The global position of the notice, or of the request a confirmation answers.
    pub position: u64,
    /// `confirmation` or `notice`.
    pub kind: String,
    /// `pending`, `delivered`, `failed` (refused for good or attempts ran out) or
    /// `cancelled` (the subscription ended first).
    pub status: String,
    pub created_at: DateTime<Utc>,
    /// When the next attempt is due (pending ones); `null` while it waits for an earlier
    /// email of the same incident.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Every attempt, first first.
    pub attempts: Vec<EmailAttempt>,
}

/// One attempt to hand an email to the SMTP server.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmailAttempt {
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u32,
    /// The server's reply code when it refused or deferred the message.
    pub reply_code: Option<u16>,
    /// What went wrong, in Crier's words (never the server's text, which may quote the
    /// address).
    pub error: Option<String>,
}

/// One page of a subscriber's emails, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmailDeliveryPage {
    pub items: Vec<EmailDelivery>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

impl From<delivery::email::log::EmailDelivery> for EmailDelivery {
    fn from(logged: delivery::email::log::EmailDelivery) -> Self {
        EmailDelivery {
            position: logged.position,
            kind: logged.kind,
            status: logged.status,
            created_at: logged.created_at,
            next_attempt_at: logged.next_attempt_at,
            finished_at: logged.finished_at,
            attempts: logged
                .attempts
                .into_iter()
                .map(|a| EmailAttempt {
                    attempt: a.attempt,
                    started_at: a.started_at,
                    duration_ms: a.duration_ms,
                    reply_code: a.reply_code,
                    error: a.error,
                })
                .collect(),
        }
    }
}

/// One UTC day of a service's uptime.
#[derive(Debug, Serialize, ToSchema)]
pub struct UptimeDayBody {
    /// The UTC date, `YYYY-MM-DD`.
    #[schema(value_type = String, format = Date)]
    pub date: chrono::NaiveDate,
    /// 100 × (1 − time down ÷ time observed that day), to four decimals.
    pub uptime_percent: f64,
    /// The worst status the service had that day.
    pub worst_status: ServiceStatus,
    /// The incidents that affected it that day.
    #[schema(value_type = Vec<String>)]
    pub incident_ids: Vec<Uuid>,
}

/// A service's uptime over its last days.
#[derive(Debug, Serialize, ToSchema)]
pub struct UptimeBody {
    #[schema(value_type = String, format = Uuid)]
    pub service_id: Uuid,
    /// Oldest first, today last; days before the service existed are absent.
    pub days: Vec<UptimeDayBody>,
    /// Over every day shown, weighted by the time observed in each.
    pub uptime_percent: f64,
}

impl From<projections::uptime::Uptime> for UptimeBody {
    fn from(uptime: projections::uptime::Uptime) -> Self {
        UptimeBody {
            service_id: uptime.service_id,
            days: (uptime.days.into_iter())
                .map(|d| UptimeDayBody {
                    date: d.date,
                    uptime_percent: d.uptime_percent,
                    worst_status: d.worst_status,
                    incident_ids: d.incident_ids,
                })
                .collect(),
            uptime_percent: uptime.uptime_percent,
        }
    }
}
