//! What the API sends and accepts: the JSON shapes of `../shared/API.md`, with their
//! OpenAPI schemas. Requests refuse unknown fields, so a misspelt field is a 400, not a
//! silently ignored setting.

use chrono::{DateTime, Utc};
use domain::api_key::{ApiKey, Role};
use domain::incident::Incident;
use domain::maintenance::{Maintenance, MaintenanceStatus};
use domain::values::{
    AffectedService, Audience, ClientAction, Impact, IncidentStatus, ServiceStatus,
};
use projections::queries::ServiceView;
use projections::Versioned;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A service, with its status derived from the open incidents and active maintenances
/// that the caller may see.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServiceBody {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub group: Option<String>,
    pub status: ServiceStatus,
    /// The stream version, also served as `ETag`.
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set once the service is retired; retired services leave the lists.
    pub retired_at: Option<DateTime<Utc>>,
}

impl From<ServiceView> for ServiceBody {
    fn from(view: ServiceView) -> Self {
        let service = view.service.state;
        ServiceBody {
            id: view.service.id,
            name: service.name,
            description: service.description,
            group: service.group,
            status: view.status,
            version: view.service.version,
            created_at: service.created_at,
            updated_at: service.updated_at,
            retired_at: service.retired_at,
        }
    }
}

/// An incident as it stands, with its whole timeline.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IncidentBody {
    #[serde(flatten)]
    pub incident: Incident,
    /// The stream version, also served as `ETag`.
    pub version: u64,
}

impl From<Versioned<Incident>> for IncidentBody {
    fn from(v: Versioned<Incident>) -> Self {
        IncidentBody {
            incident: v.state,
            version: v.version,
        }
    }
}

/// A maintenance as it stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MaintenanceBody {
    #[serde(flatten)]
    pub maintenance: Maintenance,
    /// The stream version, also served as `ETag`.
    pub version: u64,
}

impl From<Versioned<Maintenance>> for MaintenanceBody {
    fn from(v: Versioned<Maintenance>) -> Self {
        MaintenanceBody {
            maintenance: v.state,
            version: v.version,
        }
    }
}

/// An API key, without its secret (which only its creator ever saw).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyBody {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    /// The tenant the key is bound to, if any.
    pub tenant: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Who created it: an API key id, `cli` or `bootstrap`.
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
    pub name: String,
    pub role: Role,
    /// Bind the key to a tenant: it then sees public notices and that tenant's only.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// `POST /v1/services`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewService {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub group: Option<String>,
}

/// `PATCH /v1/services/{id}`: only the fields present change; `"group": null` takes the
/// service out of its group.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceChanges {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
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
    #[schema(example = "Users cannot sign in to Teams")]
    pub title: String,
    pub impact: Impact,
    /// `investigating` when absent; an incident cannot be declared resolved.
    #[serde(default)]
    pub status: Option<IncidentStatus>,
    /// The first update's text.
    pub message: String,
    pub affected_services: Vec<AffectedService>,
    /// Free labels such as `europe` or `global`.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Public when absent (a tenant-bound key's own tenant).
    #[serde(default)]
    pub audience: Option<Audience>,
    #[serde(default)]
    pub client_action: Option<ClientAction>,
}

/// `POST /v1/incidents/{id}/updates`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIncidentUpdate {
    /// `resolved` closes the incident.
    pub status: IncidentStatus,
    pub message: String,
    #[serde(default)]
    pub impact: Option<Impact>,
    /// Replaces the list when present.
    #[serde(default)]
    pub affected_services: Option<Vec<AffectedService>>,
    /// Replaces the action when present.
    #[serde(default)]
    pub client_action: Option<ClientAction>,
}

/// `POST /v1/incidents/{id}/updates/{update_id}/corrections`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCorrection {
    /// The corrected text; the text it replaces stays in the update's `corrections`.
    pub message: String,
    pub reason: String,
}

/// `POST /v1/incidents/{id}/reopen`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reopening {
    pub message: String,
}

/// `POST /v1/incidents/{id}/postmortem`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPostmortem {
    pub body: String,
}

/// `POST /v1/maintenances`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMaintenance {
    pub title: String,
    pub message: String,
    pub affected_services: Vec<Uuid>,
    #[serde(default)]
    pub regions: Vec<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    #[serde(default)]
    pub audience: Option<Audience>,
}

/// `POST /v1/maintenances/{id}/updates`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMaintenanceUpdate {
    pub status: MaintenanceStatus,
    pub message: String,
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
