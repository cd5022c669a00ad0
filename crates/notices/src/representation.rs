//! The JSON representations of the resources that notices carry and the API serves: what a
//! client reads in `GET /v1/incidents/{id}`, in a webhook's body and in an SSE message is
//! the same shape, with the same OpenAPI schema.

use chrono::{DateTime, Utc};
use domain::incident::Incident;
use domain::language::{Language, Negotiation};
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

/// An incident as it stands, with its whole timeline, in one language.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IncidentBody {
    #[serde(flatten)]
    pub incident: Incident,
    /// The language its texts are shown in (a text it lacks there is shown in the default
    /// language).
    pub language: Language,
    /// Every language it has texts in, the default one first: ask for one with `?lang=` or
    /// `Accept-Language`.
    pub translations: Vec<Language>,
    /// The stream version, also served as `ETag`.
    pub version: u64,
}

impl IncidentBody {
    /// The incident in the language `negotiation` chooses among those it has.
    pub fn new(v: Versioned<Incident>, negotiation: &Negotiation) -> Self {
        let (chosen, translations) = {
            let languages = v.state.languages();
            let chosen = negotiation.choose(languages.iter().copied()).cloned();
            let translations = all_languages(negotiation, languages);
            (chosen, translations)
        };
        IncidentBody {
            language: negotiation.tag(chosen.as_ref()),
            incident: v.state.in_language(chosen.as_ref()),
            translations,
            version: v.version,
        }
    }
}

/// The default language, then every other a resource has.
fn all_languages<'a>(
    negotiation: &Negotiation,
    others: impl IntoIterator<Item = &'a Language>,
) -> Vec<Language> {
    std::iter::once(negotiation.default.clone())
        .chain(others.into_iter().cloned())
        .collect()
}

/// A maintenance as it stands, in one language.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MaintenanceBody {
    #[serde(flatten)]
    pub maintenance: Maintenance,
    /// The language its texts are shown in (a text it lacks there is shown in the default
    /// language).
    pub language: Language,
    /// Every language it has texts in, the default one first.
    pub translations: Vec<Language>,
    /// The stream version, also served as `ETag`.
    pub version: u64,
}

impl MaintenanceBody {
    /// The maintenance in the language `negotiation` chooses among those it has.
    pub fn new(v: Versioned<Maintenance>, negotiation: &Negotiation) -> Self {
        let (chosen, translations) = {
            let languages = v.state.languages();
            let chosen = negotiation.choose(languages.iter().copied()).cloned();
            let translations = all_languages(negotiation, languages);
            (chosen, translations)
        };
        MaintenanceBody {
            language: negotiation.tag(chosen.as_ref()),
            maintenance: v.state.in_language(chosen.as_ref()),
            translations,
            version: v.version,
        }
    }
}
