//! The public Status API v2 of Atlassian Statuspage, so that the widgets, bots and
//! integrations that read a Statuspage page read Crier unchanged: the same paths, field
//! names, nesting and enumerations. Public notices only.
//!
//! Mapping: services are `components` (a service group is a group component, with
//! `group: true` and its services' ids in `components`, and each service names it in
//! `group_id`); incidents are `incidents` (status `postmortem` once resolved with a
//! postmortem) with their updates as `incident_updates`, newest first; maintenances are
//! `scheduled_maintenances` (impact `maintenance`; `cancelled` shows as `completed`, which
//! Statuspage has no other word for). Ids are Crier's UUIDs; times are RFC 3339 in UTC with
//! milliseconds.
//!
//! Crier keeps the services an incident affects, not the ones each update changed, so an
//! update's `affected_components` lists the incident's services when the update opened or
//! closed the incident (declared or reopened: from `operational` to the status the
//! incident imposes; resolved: back to `operational`), and is empty otherwise; likewise
//! for a maintenance starting (`under_maintenance`) and ending.

use chrono::{DateTime, SecondsFormat, Utc};
use domain::incident::Incident;
use domain::language::Language;
use domain::maintenance::{Maintenance, MaintenanceStatus};
use domain::values::{Impact, IncidentStatus, ServiceStatus};
use projections::queries::{self, IncidentState, MaintenanceState, ServiceView, Viewer};
use projections::Versioned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::documents::Document;
use crate::problem::ApiError;

/// Most incidents and maintenances a list shows (as Statuspage: the 50 most recent).
const RECENT: usize = 50;
/// Most unresolved incidents, upcoming or active maintenances a document shows.
const OPEN: usize = 100;

/// Who publishes: the page the documents describe.
#[derive(Debug, Clone)]
pub struct PublicPage {
    /// 12 lower-case hex digits derived from `url`, stable across restarts.
    pub id: String,
    pub name: String,
    /// The public base URL, without a trailing slash.
    pub url: String,
}

impl PublicPage {
    pub fn new(name: &str, url: &str) -> PublicPage {
        let url = url.trim_end_matches('/').to_owned();
        PublicPage {
            id: hex::encode(Sha256::digest(url.as_bytes()))[..12].to_owned(),
            name: name.to_owned(),
            url,
        }
    }
}

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The page the documents describe.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SpPage {
    pub id: String,
    pub name: String,
    pub url: String,
    pub time_zone: String,
    pub updated_at: String,
}

/// How the page stands overall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SpIndicator {
    None,
    Minor,
    Major,
    Critical,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SpStatus {
    pub indicator: SpIndicator,
    pub description: String,
}

/// A service (or a group of services, with `group: true`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SpComponent {
    pub id: String,
    pub name: String,
    pub status: ServiceStatus,
    pub created_at: String,
    pub updated_at: String,
    pub position: u32,
    pub description: Option<String>,
    pub showcase: bool,
    pub start_date: Option<String>,
    pub group_id: Option<String>,
    pub page_id: String,
    pub group: bool,
    pub only_show_if_degraded: bool,
    /// The ids of a group's components (groups only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SpAffectedComponent {
    pub code: String,
    pub name: String,
    pub old_status: ServiceStatus,
    pub new_status: ServiceStatus,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SpIncidentUpdate {
    pub id: String,
    /// The incident's (or maintenance's) status this update set.
    pub status: String,
    pub body: String,
    pub incident_id: String,
    pub created_at: String,
    pub updated_at: String,
    pub display_at: String,
    pub affected_components: Vec<SpAffectedComponent>,
    pub deliver_notifications: bool,
    pub custom_tweet: Option<String>,
    pub tweet_id: Option<String>,
}

/// An incident, or a scheduled maintenance (with `scheduled_for` and `scheduled_until`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SpIncident {
    pub id: String,
    pub name: String,
    /// `investigating`, `identified`, `monitoring`, `resolved`, `postmortem`; for
    /// maintenances `scheduled`, `in_progress`, `verifying`, `completed`.
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    pub monitoring_at: Option<String>,
    pub resolved_at: Option<String>,
    /// `none`, `minor`, `major`, `critical`, or `maintenance`.
    pub impact: String,
    pub shortlink: String,
    pub started_at: String,
    pub page_id: String,
    /// Newest first.
    pub incident_updates: Vec<SpIncidentUpdate>,
    pub components: Vec<SpComponent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_until: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SpSummary {
    pub page: SpPage,
    pub components: Vec<SpComponent>,
    pub incidents: Vec<SpIncident>,
    pub scheduled_maintenances: Vec<SpIncident>,
    pub status: SpStatus,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SpStatusDocument {
    pub page: SpPage,
    pub status: SpStatus,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SpComponents {
    pub page: SpPage,
    pub components: Vec<SpComponent>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SpIncidents {
    pub page: SpPage,
    pub incidents: Vec<SpIncident>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SpMaintenances {
    pub page: SpPage,
    pub scheduled_maintenances: Vec<SpIncident>,
}

/// Every document of the API, rendered from one reading of the read models.
pub struct StatusDocuments {
    /// The language these documents' texts are in.
    pub language: Language,
    /// The languages their notices have texts in besides the default one: each may be
    /// asked for.
    pub translations: Vec<Language>,
    pub summary: Document,
    pub status: Document,
    pub components: Document,
    pub incidents: Document,
    pub unresolved: Document,
    pub maintenances: Document,
    pub upcoming: Document,
    pub active: Document,
}

/// A stable id for a service group, from its name.
fn group_id(name: &str) -> String {
    let digest = Sha256::digest(format!("crier.group\0{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The components: services by group (ungrouped first), each group followed by its
/// services, positions in that order.
fn components(services: &[ServiceView], page: &PublicPage) -> Vec<SpComponent> {
    let mut out: Vec<SpComponent> = Vec::with_capacity(services.len() + 4);
    let mut position = 0u32;
    let mut next_position = || {
        position += 1;
        position
    };
    let component = |view: &ServiceView, group_id: Option<String>, position: u32| {
        let service = &view.service.state;
        SpComponent {
            id: view.service.id.to_string(),
            name: service.name.clone(),
            status: view.status,
            created_at: time(&service.created_at),
            updated_at: time(&service.updated_at),
            position,
            description: (!service.description.is_empty()).then(|| service.description.clone()),
            showcase: true,
            start_date: Some(service.created_at.date_naive().to_string()),
            group_id,
            page_id: page.id.clone(),
            group: false,
            only_show_if_degraded: false,
            components: None,
        }
    };
    // `services` comes ordered by group (none first), then name.
    let mut index = 0;
    while index < services.len() {
        let group = services[index].service.state.group.clone();
        let end = services[index..]
            .iter()
            .position(|s| s.service.state.group != group)
            .map_or(services.len(), |n| index + n);
        let members = &services[index..end];
        match group {
            None => {
                for view in members {
                    out.push(component(view, None, next_position()));
                }
            }
            Some(name) => {
                let id = group_id(&name);
                let created = members.iter().map(|m| m.service.state.created_at).min();
                let updated = members.iter().map(|m| m.service.state.updated_at).max();
                out.push(SpComponent {
                    id: id.clone(),
                    name,
                    status: ServiceStatus::worst(members.iter().map(|m| m.status)),
                    created_at: created.map(|t| time(&t)).unwrap_or_default(),
                    updated_at: updated.map(|t| time(&t)).unwrap_or_default(),
                    position: next_position(),
                    description: None,
                    showcase: false,
                    start_date: None,
                    group_id: None,
                    page_id: page.id.clone(),
                    group: true,
                    only_show_if_degraded: false,
                    components: Some(members.iter().map(|m| m.service.id.to_string()).collect()),
                });
                for view in members {
                    out.push(component(view, Some(id.clone()), next_position()));
                }
            }
        }
        index = end;
    }
    out
}

fn component_of<'a>(all: &'a [SpComponent], id: &Uuid) -> Option<&'a SpComponent> {
    let id = id.to_string();
    all.iter().find(|c| !c.group && c.id == id)
}

fn impact_name(impact: Impact) -> &'static str {
    match impact {
        Impact::None => "none",
        Impact::Minor => "minor",
        Impact::Major => "major",
        Impact::Critical => "critical",
    }
}

fn incident(incident: &Versioned<Incident>, all: &[SpComponent], page: &PublicPage) -> SpIncident {
    let state = &incident.state;
    let id = state.id.to_string();
    let status = match (state.status, &state.postmortem) {
        (IncidentStatus::Resolved, Some(_)) => "postmortem",
        (status, _) => status.as_str(),
    };
    let affected: Vec<(&SpComponent, ServiceStatus)> = state
        .affected_services
        .iter()
        .filter_map(|a| component_of(all, &a.service_id).map(|c| (c, a.status)))
        .collect();
    let mut previous_open = false;
    let mut updates: Vec<SpIncidentUpdate> = state
        .updates
        .iter()
        .map(|update| {
            let open = update.status.is_open();
            let imposed = |open: bool, status: ServiceStatus| {
                if open {
                    status
                } else {
                    ServiceStatus::Operational
                }
            };
            let affected_components = affected
                .iter()
                .filter(|_| open != previous_open)
                .map(|(component, status)| SpAffectedComponent {
                    code: component.id.clone(),
                    name: component.name.clone(),
                    old_status: imposed(previous_open, *status),
                    new_status: imposed(open, *status),
                })
                .collect();
            previous_open = open;
            let updated_at = update
                .corrections
                .iter()
                .map(|c| c.created_at)
                .max()
                .unwrap_or(update.created_at);
            SpIncidentUpdate {
                id: update.id.to_string(),
                status: update.status.as_str().to_owned(),
                body: update.message.clone(),
                incident_id: id.clone(),
                created_at: time(&update.created_at),
                updated_at: time(&updated_at),
                display_at: time(&update.created_at),
                affected_components,
                deliver_notifications: true,
                custom_tweet: None,
                tweet_id: None,
            }
        })
        .collect();
    updates.reverse();
    let last_change = state
        .updates
        .iter()
        .flat_map(|u| {
            std::iter::once(u.created_at).chain(u.corrections.iter().map(|c| c.created_at))
        })
        .chain(state.postmortem.iter().map(|p| p.published_at))
        .max()
        .unwrap_or(state.started_at);
    SpIncident {
        id: id.clone(),
        name: state.title.clone(),
        status: status.to_owned(),
        created_at: time(&state.started_at),
        updated_at: time(&last_change),
        monitoring_at: state
            .updates
            .iter()
            .rev()
            .find(|u| u.status == IncidentStatus::Monitoring)
            .map(|u| time(&u.created_at)),
        resolved_at: state.resolved_at.as_ref().map(time),
        impact: impact_name(state.impact).to_owned(),
        shortlink: format!("{}/v1/incidents/{id}", page.url),
        started_at: time(&state.started_at),
        page_id: page.id.clone(),
        incident_updates: updates,
        components: affected.iter().map(|(c, _)| (*c).clone()).collect(),
        scheduled_for: None,
        scheduled_until: None,
    }
}

fn maintenance_status(status: MaintenanceStatus) -> &'static str {
    match status {
        MaintenanceStatus::Scheduled => "scheduled",
        MaintenanceStatus::InProgress => "in_progress",
        MaintenanceStatus::Verifying => "verifying",
        MaintenanceStatus::Completed | MaintenanceStatus::Cancelled => "completed",
    }
}

fn maintenance(
    maintenance: &Versioned<Maintenance>,
    all: &[SpComponent],
    page: &PublicPage,
) -> SpIncident {
    let state = &maintenance.state;
    let id = state.id.to_string();
    let affected: Vec<&SpComponent> = state
        .affected_services
        .iter()
        .filter_map(|id| component_of(all, id))
        .collect();
    let under = |status: MaintenanceStatus| {
        if matches!(
            status,
            MaintenanceStatus::InProgress | MaintenanceStatus::Verifying
        ) {
            ServiceStatus::UnderMaintenance
        } else {
            ServiceStatus::Operational
        }
    };
    let mut previous = ServiceStatus::Operational;
    let mut updates: Vec<SpIncidentUpdate> = state
        .updates
        .iter()
        .map(|update| {
            let now = under(update.status);
            let affected_components = affected
                .iter()
                .filter(|_| now != previous)
                .map(|component| SpAffectedComponent {
                    code: component.id.clone(),
                    name: component.name.clone(),
                    old_status: previous,
                    new_status: now,
                })
                .collect();
            previous = now;
            SpIncidentUpdate {
                id: update.id.to_string(),
                status: maintenance_status(update.status).to_owned(),
                body: update.message.clone(),
                incident_id: id.clone(),
                created_at: time(&update.created_at),
                updated_at: time(&update.created_at),
                display_at: time(&update.created_at),
                affected_components,
                deliver_notifications: true,
                custom_tweet: None,
                tweet_id: None,
            }
        })
        .collect();
    updates.reverse();
    let created = state
        .updates
        .first()
        .map_or(state.starts_at, |u| u.created_at);
    let updated = state.updates.last().map_or(created, |u| u.created_at);
    let finished = state
        .updates
        .iter()
        .rev()
        .find(|u| {
            matches!(
                u.status,
                MaintenanceStatus::Completed | MaintenanceStatus::Cancelled
            )
        })
        .map(|u| time(&u.created_at));
    let started = state
        .updates
        .iter()
        .find(|u| u.status == MaintenanceStatus::InProgress)
        .map_or(state.starts_at, |u| u.created_at);
    SpIncident {
        id: id.clone(),
        name: state.title.clone(),
        status: maintenance_status(state.status).to_owned(),
        created_at: time(&created),
        updated_at: time(&updated),
        monitoring_at: None,
        resolved_at: finished,
        impact: "maintenance".to_owned(),
        shortlink: format!("{}/v1/maintenances/{id}", page.url),
        started_at: time(&started),
        page_id: page.id.clone(),
        incident_updates: updates,
        components: affected.into_iter().cloned().collect(),
        scheduled_for: Some(time(&state.starts_at)),
        scheduled_until: Some(time(&state.ends_at)),
    }
}

/// The page's overall status: the worse of its components' statuses and its unresolved
/// incidents' impacts.
fn rollup(components: &[SpComponent], unresolved: &[Versioned<Incident>]) -> SpStatus {
    let from_components = components
        .iter()
        .filter(|c| !c.group)
        .map(|c| match c.status {
            ServiceStatus::Operational | ServiceStatus::UnderMaintenance => SpIndicator::None,
            ServiceStatus::DegradedPerformance => SpIndicator::Minor,
            ServiceStatus::PartialOutage => SpIndicator::Major,
            ServiceStatus::MajorOutage => SpIndicator::Critical,
        });
    let from_incidents = unresolved.iter().map(|i| match i.state.impact {
        Impact::None => SpIndicator::None,
        Impact::Minor => SpIndicator::Minor,
        Impact::Major => SpIndicator::Major,
        Impact::Critical => SpIndicator::Critical,
    });
    let indicator = from_components
        .chain(from_incidents)
        .max()
        .unwrap_or(SpIndicator::None);
    let maintenance = components
        .iter()
        .any(|c| c.status == ServiceStatus::UnderMaintenance);
    let description = match indicator {
        SpIndicator::None if maintenance => "Service Under Maintenance",
        SpIndicator::None => "All Systems Operational",
        SpIndicator::Minor => "Minor Service Outage",
        SpIndicator::Major => "Partial System Outage",
        SpIndicator::Critical => "Major System Outage",
    };
    SpStatus {
        indicator,
        description: description.to_owned(),
    }
}

fn json<T: Serialize>(value: &T) -> Result<Document, ApiError> {
    let body = serde_json::to_vec(value)
        .map_err(|e| ApiError::internal_by("cannot render a status document", e))?;
    Ok(Document::new(body, "application/json"))
}

/// The notices' texts in `language` (`None`: the default language, as stored).
pub(crate) fn localized<T: Clone>(
    list: Vec<Versioned<T>>,
    language: Option<&Language>,
    in_language: fn(T, Option<&Language>) -> T,
) -> Vec<Versioned<T>> {
    match language {
        None => list,
        Some(language) => list
            .into_iter()
            .map(|v| Versioned {
                state: in_language(v.state, Some(language)),
                ..v
            })
            .collect(),
    }
}

/// Reads the public read models once and renders every document, in `language` (`None`:
/// the default language, `default`).
pub async fn render(
    store: &eventstore::EventStore,
    page: &PublicPage,
    language: Option<&Language>,
    default: &Language,
) -> Result<StatusDocuments, ApiError> {
    let client = store.pool().get().await?;
    let viewer = Viewer::Public;
    let services = queries::services(&client, &viewer).await?;
    let unresolved = queries::incidents(&client, &viewer, IncidentState::Open, OPEN).await?;
    let recent = queries::incidents(&client, &viewer, IncidentState::All, RECENT).await?;
    let maintenances =
        |state, limit| queries::maintenances_page(&client, &viewer, state, None, limit);
    // The soonest ones (a page of the newest would drop them when there are many).
    let upcoming = queries::soonest_upcoming_maintenances(&client, &viewer, OPEN).await?;
    let active = maintenances(MaintenanceState::Active, OPEN).await?.items;
    let all_maintenances = maintenances(MaintenanceState::All, RECENT).await?.items;
    let mut translations: std::collections::BTreeSet<Language> = Default::default();
    for incident in unresolved.iter().chain(&recent) {
        translations.extend(incident.state.languages().into_iter().cloned());
    }
    for maintenance in upcoming.iter().chain(&active).chain(&all_maintenances) {
        translations.extend(maintenance.state.languages().into_iter().cloned());
    }
    let unresolved = localized(unresolved, language, Incident::in_language);
    let recent = localized(recent, language, Incident::in_language);
    let upcoming = localized(upcoming, language, Maintenance::in_language);
    let active = localized(active, language, Maintenance::in_language);
    let all_maintenances = localized(all_maintenances, language, Maintenance::in_language);

    let all = components(&services, page);
    let as_incidents = |list: &[Versioned<Incident>]| -> Vec<SpIncident> {
        list.iter().map(|i| incident(i, &all, page)).collect()
    };
    let as_maintenances = |list: &[Versioned<Maintenance>]| -> Vec<SpIncident> {
        list.iter().map(|m| maintenance(m, &all, page)).collect()
    };
    let unresolved_docs = as_incidents(&unresolved);
    let recent_docs = as_incidents(&recent);
    let upcoming_docs = as_maintenances(&upcoming);
    let active_docs = as_maintenances(&active);
    let maintenance_docs = as_maintenances(&all_maintenances);
    let updated_at = all
        .iter()
        .map(|c| c.updated_at.as_str())
        .chain(recent_docs.iter().map(|i| i.updated_at.as_str()))
        .chain(maintenance_docs.iter().map(|m| m.updated_at.as_str()))
        .max()
        .map(str::to_owned)
        .unwrap_or_else(|| time(&DateTime::<Utc>::UNIX_EPOCH));
    let sp_page = SpPage {
        id: page.id.clone(),
        name: page.name.clone(),
        url: page.url.clone(),
        time_zone: "Etc/UTC".to_owned(),
        updated_at,
    };
    let status = rollup(&all, &unresolved);
    // Statuspage's summary shows upcoming and active maintenances, soonest first.
    let mut scheduled: Vec<SpIncident> =
        active_docs.iter().chain(&upcoming_docs).cloned().collect();
    scheduled.sort_by(|a, b| a.scheduled_for.cmp(&b.scheduled_for));
    Ok(StatusDocuments {
        language: language.unwrap_or(default).clone(),
        translations: translations.into_iter().collect(),
        summary: json(&SpSummary {
            page: sp_page.clone(),
            components: all.clone(),
            incidents: unresolved_docs.clone(),
            scheduled_maintenances: scheduled,
            status: status.clone(),
        })?,
        status: json(&SpStatusDocument {
            page: sp_page.clone(),
            status,
        })?,
        components: json(&SpComponents {
            page: sp_page.clone(),
            components: all.clone(),
        })?,
        incidents: json(&SpIncidents {
            page: sp_page.clone(),
            incidents: recent_docs,
        })?,
        unresolved: json(&SpIncidents {
            page: sp_page.clone(),
            incidents: unresolved_docs,
        })?,
        maintenances: json(&SpMaintenances {
            page: sp_page.clone(),
            scheduled_maintenances: maintenance_docs,
        })?,
        upcoming: json(&SpMaintenances {
            page: sp_page.clone(),
            scheduled_maintenances: upcoming_docs,
        })?,
        active: json(&SpMaintenances {
            page: sp_page,
            scheduled_maintenances: active_docs,
        })?,
    })
}
