//! The JSON representations of the resources that notices carry and the API serves: what a
//! client reads in `GET /v1/incidents/{id}`, in a webhook's body and in an SSE message is
//! the same shape, with the same OpenAPI schema.

use chrono::{DateTime, Utc};
use domain::incident::Incident;
use domain::maintenance::Maintenance;
use domain::values::ServiceStatus;
use projections::queries::ServiceView;
use projections::Versioned;
use serde::Serialize;
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
