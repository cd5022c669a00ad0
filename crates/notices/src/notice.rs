//! Notices: the events of the log that subscribers (SSE streams, webhooks) receive, and
//! how each renders as a CloudEvent for one kind of viewer.
//!
//! A notice's `data` is the incident or maintenance as it stood after that event, as the
//! viewer may see it, with its services' statuses as the viewer sees them now (a service
//! notice carries the service as it now stands). Administrative history (API keys,
//! webhooks) is never a notice. The resource is read once per notice and each viewer's
//! rendering made once, however many subscribers share it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use domain::incident::{Incident, IncidentDecider};
use domain::language::{Language, Negotiation, Preferences};
use domain::maintenance::{Maintenance, MaintenanceDecider};
use domain::values::NoticeType;
use eventstore::{EventStore, LoggedEvent};
use projections::history::{self, AsOf};
use projections::queries::{self, Viewer, GLOBAL_REGION};
use projections::Versioned;
use serde::Serialize;
use uuid::Uuid;

use crate::representation::{IncidentBody, MaintenanceBody, ServiceBody};
use crate::NoticeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ResourceKind {
    Incident,
    Maintenance,
    Service,
}

/// An event of the log that is a notice: what subscribers filter and render.
pub struct Notice {
    pub position: u64,
    /// The CloudEvent type, e.g. `incident.resolved`.
    pub notice_type: NoticeType,
    kind: ResourceKind,
    resource_id: Uuid,
    stream_version: u64,
    event_id: Uuid,
    recorded_at: DateTime<Utc>,
    /// The resource after this event, read once for all subscribers.
    state: tokio::sync::OnceCell<Option<Arc<Resource>>>,
    /// The services an incident affected just before this event (for service filters:
    /// the update that frees a service concerns it too).
    services_before: tokio::sync::OnceCell<Vec<Uuid>>,
    /// The notice for each kind of viewer and language it is rendered in, rendered once
    /// (`None`: it may not see it).
    rendered: Mutex<HashMap<RenderingKey, Option<Rendered>>>,
}

/// A rendering's kind of viewer and language (`None`: the default one).
type RenderingKey = (ViewerKey, Option<Language>);

/// Where notices are rendered for: the public base URL (CloudEvents `source` is under it)
/// and the default language of their texts.
#[derive(Debug, Clone)]
pub struct Site {
    pub source_base: String,
    pub default_language: Language,
}

impl Site {
    pub fn new(public_url: &str, default_language: Language) -> Site {
        Site {
            source_base: public_url.trim_end_matches('/').to_owned(),
            default_language,
        }
    }
}

impl Default for Site {
    fn default() -> Self {
        Site::new("http://127.0.0.1:8080", Language::english())
    }
}

/// One notice rendered for one kind of viewer.
#[derive(Clone)]
pub struct Rendered {
    /// The CloudEvent (a webhook's body).
    pub json: Bytes,
    /// The Server-Sent Events message: `id:` the position, `event:` the type, `data:` the
    /// CloudEvent.
    pub sse: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ViewerKey {
    Public,
    Tenant(String),
    Everyone,
}

impl From<&Viewer> for ViewerKey {
    fn from(viewer: &Viewer) -> Self {
        match viewer {
            Viewer::Public => ViewerKey::Public,
            Viewer::Tenant(t) => ViewerKey::Tenant(t.clone()),
            Viewer::Everyone => ViewerKey::Everyone,
        }
    }
}

#[derive(Clone)]
enum Resource {
    Incident(Versioned<Incident>),
    Maintenance(Versioned<Maintenance>),
    /// Services carry no audience: their notice shows the service as it now stands.
    Service(Uuid),
}

/// What a subscriber asked for. Empty lists and `None` take everything.
#[derive(Debug, Clone, Default)]
pub struct NoticeFilter {
    /// Notices that concern any of these services.
    pub services: Vec<Uuid>,
    /// Notices of incidents and maintenances in this region (or global).
    pub region: Option<String>,
    /// Notices of these types.
    pub types: Vec<NoticeType>,
    /// The languages to render them in, most wanted first, where they have them (none:
    /// the default language).
    pub preferences: Preferences,
}

impl NoticeFilter {
    /// Whether it takes notices of this type; the rest of it needs the notice's resource.
    pub fn takes_type(&self, notice_type: NoticeType) -> bool {
        self.types.is_empty() || self.types.contains(&notice_type)
    }
}

fn regions_match(regions: &[String], wanted: &str) -> bool {
    regions.is_empty() || regions.iter().any(|r| r == wanted || r == GLOBAL_REGION)
}

impl Resource {
    /// The language this resource renders in for `negotiation` (`None`: the default).
    fn language(&self, negotiation: &Negotiation) -> Option<Language> {
        if negotiation.preferences.is_empty() {
            return None; // the usual subscriber: no texts to look through
        }
        negotiation.choose(self.languages()).cloned()
    }

    /// The languages it has texts in besides the default one.
    fn languages(&self) -> BTreeSet<&Language> {
        match self {
            Resource::Incident(i) => i.state.languages(),
            Resource::Maintenance(m) => m.state.languages(),
            Resource::Service(_) => BTreeSet::new(),
        }
    }

    /// The services it concerns as it stands.
    fn services(&self) -> Vec<Uuid> {
        match self {
            Resource::Incident(i) => (i.state.affected_services.iter())
                .map(|a| a.service_id)
                .collect(),
            Resource::Maintenance(m) => m.state.affected_services.clone(),
            Resource::Service(id) => vec![*id],
        }
    }

    fn matches(&self, filter: &NoticeFilter) -> bool {
        let services = filter.services.is_empty()
            || self
                .services()
                .iter()
                .any(|id| filter.services.contains(id));
        let regions = match self {
            Resource::Incident(i) => Some(&i.state.regions),
            Resource::Maintenance(m) => Some(&m.state.regions),
            Resource::Service(_) => None,
        };
        let region = match (regions, filter.region.as_deref()) {
            (Some(regions), Some(wanted)) => regions_match(regions, wanted),
            _ => true,
        };
        services && region
    }
}

/// Whether the event's payload has this `status` (its other fields are skipped, not decoded).
fn posts_status(event: &LoggedEvent, status: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Status {
        status: Option<String>,
    }
    event
        .event
        .data
        .decode::<Status>()
        .is_ok_and(|payload| payload.status.as_deref() == Some(status))
}

fn classify(event: &LoggedEvent) -> Option<(ResourceKind, Uuid, NoticeType)> {
    let stream = &event.event.stream_id;
    let (kind, id) = if let Some(id) = stream.strip_prefix("incident-") {
        (ResourceKind::Incident, id)
    } else if let Some(id) = stream.strip_prefix("maintenance-") {
        (ResourceKind::Maintenance, id)
    } else if let Some(id) = stream.strip_prefix("service-") {
        (ResourceKind::Service, id)
    } else {
        return None; // administrative history (API keys, webhooks): never a notice
    };
    let id = Uuid::parse_str(id).ok()?;
    let notice_type = match event.event.event_type.as_str() {
        "incident.declared" => NoticeType::IncidentDeclared,
        "incident.update_posted" if posts_status(event, "resolved") => NoticeType::IncidentResolved,
        "incident.update_posted" => NoticeType::IncidentUpdated,
        "incident.update_corrected" => NoticeType::IncidentCorrected,
        "incident.reopened" => NoticeType::IncidentReopened,
        "incident.postmortem_published" => NoticeType::IncidentPostmortemPublished,
        "maintenance.scheduled" => NoticeType::MaintenanceScheduled,
        "maintenance.update_posted" => NoticeType::MaintenanceUpdated,
        "maintenance.reminder_sent" => NoticeType::MaintenanceReminder,
        t if t.starts_with("service.") => NoticeType::ServiceUpdated,
        _ => return None,
    };
    Some((kind, id, notice_type))
}

impl Notice {
    pub fn of(event: &LoggedEvent) -> Option<Notice> {
        let (kind, resource_id, notice_type) = classify(event)?;
        Some(Notice {
            position: event.position,
            notice_type,
            kind,
            resource_id,
            stream_version: event.event.stream_version,
            event_id: event.event.event_id,
            recorded_at: event.event.recorded_at,
            state: tokio::sync::OnceCell::new(),
            services_before: tokio::sync::OnceCell::new(),
            rendered: Mutex::new(HashMap::new()),
        })
    }

    /// A service's notice at `position`, already rendered for the public as `sse` (as
    /// the follower renders each notice before handing it on).
    #[cfg(test)]
    pub(crate) fn rendered_for_tests(position: u64, sse: &str) -> Notice {
        let id = Uuid::new_v4();
        let rendered = Rendered {
            json: Bytes::new(),
            sse: Bytes::from(sse.to_owned()),
        };
        Notice {
            position,
            notice_type: NoticeType::ServiceUpdated,
            kind: ResourceKind::Service,
            resource_id: id,
            stream_version: 1,
            event_id: Uuid::new_v4(),
            recorded_at: Utc::now(),
            state: tokio::sync::OnceCell::new_with(Some(Some(Arc::new(Resource::Service(id))))),
            services_before: tokio::sync::OnceCell::new(),
            rendered: Mutex::new(HashMap::from([((ViewerKey::Public, None), Some(rendered))])),
        }
    }

    /// Reads, in one round trip per kind, the resources of those of `notices` whose
    /// read-model rows are still as each left them (the usual case for live notices): what
    /// their first renderings would otherwise read one notice at a time, while a fan-out's
    /// transaction waits. The rest are read as before, when first rendered.
    pub async fn preload<'a>(
        store: &EventStore,
        notices: impl IntoIterator<Item = &'a Notice>,
    ) -> Result<(), NoticeError> {
        let (mut incidents, mut maintenances) = (Vec::new(), Vec::new());
        for notice in notices {
            if notice.state.initialized() {
                continue;
            }
            match notice.kind {
                ResourceKind::Incident => incidents.push(notice),
                ResourceKind::Maintenance => maintenances.push(notice),
                ResourceKind::Service => {}
            }
        }
        if incidents.is_empty() && maintenances.is_empty() {
            return Ok(());
        }
        let client = store.pool().get().await?;
        let ids = |notices: &[&Notice]| notices.iter().map(|n| n.resource_id).collect::<Vec<_>>();
        let rows =
            queries::incidents_with_ids(&client, &ids(&incidents), &Viewer::Everyone).await?;
        Notice::settle(incidents, rows, Resource::Incident);
        let rows =
            queries::maintenances_with_ids(&client, &ids(&maintenances), &Viewer::Everyone).await?;
        Notice::settle(maintenances, rows, Resource::Maintenance);
        Ok(())
    }

    /// Gives each of `notices` the one of `rows` at its version, if any.
    fn settle<T>(
        notices: Vec<&Notice>,
        rows: Vec<Versioned<T>>,
        resource: impl Fn(Versioned<T>) -> Resource,
    ) {
        let mut rows: HashMap<Uuid, Versioned<T>> = rows.into_iter().map(|r| (r.id, r)).collect();
        for notice in notices {
            let id = notice.resource_id;
            // Of the notices of one resource, only the last is at the row's version.
            if rows
                .get(&id)
                .is_some_and(|r| r.version == notice.stream_version)
            {
                if let Some(row) = rows.remove(&id) {
                    let _ = notice.state.set(Some(Arc::new(resource(row))));
                }
            }
        }
    }

    /// The resource as it stood right after this event: the read-model row when it is at
    /// that version (the usual case for a live notice), else folded from the log.
    async fn load(&self, store: &EventStore) -> Result<Option<Arc<Resource>>, NoticeError> {
        let everyone = Viewer::Everyone;
        let at = AsOf::Position(self.position);
        let id = self.resource_id;
        // The row's connection goes back to the pool before the fold takes one: holding
        // one while waiting for another could drain the pool.
        let resource = match self.kind {
            ResourceKind::Incident => {
                let row = {
                    let client = store.pool().get().await?;
                    queries::incident(&client, id, &everyone).await?
                };
                match row.filter(|r| r.version == self.stream_version) {
                    Some(row) => Some(row),
                    None => history::as_of::<IncidentDecider>(store, id, at, &everyone).await?,
                }
                .map(Resource::Incident)
            }
            ResourceKind::Maintenance => {
                let row = {
                    let client = store.pool().get().await?;
                    queries::maintenance(&client, id, &everyone).await?
                };
                match row.filter(|r| r.version == self.stream_version) {
                    Some(row) => Some(row),
                    None => history::as_of::<MaintenanceDecider>(store, id, at, &everyone).await?,
                }
                .map(Resource::Maintenance)
            }
            ResourceKind::Service => Some(Resource::Service(id)),
        };
        Ok(resource.map(Arc::new))
    }

    async fn load_services_before(&self, store: &EventStore) -> Result<Vec<Uuid>, NoticeError> {
        if self.kind != ResourceKind::Incident || self.stream_version <= 1 {
            return Ok(Vec::new());
        }
        let before = AsOf::Position(self.position.saturating_sub(1));
        let incident =
            history::as_of::<IncidentDecider>(store, self.resource_id, before, &Viewer::Everyone)
                .await?;
        Ok(incident
            .map(|i| {
                i.state
                    .affected_services
                    .iter()
                    .map(|a| a.service_id)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Does the subscriber's filter take this notice? An incident event also concerns the
    /// services it affected just before (the update that frees a service, the resolution).
    async fn wanted(
        &self,
        store: &EventStore,
        resource: &Resource,
        filter: &NoticeFilter,
    ) -> Result<bool, NoticeError> {
        if let Some(wanted) = self.wanted_without(resource, filter, self.services_before.get()) {
            return Ok(wanted);
        }
        let before = self
            .services_before
            .get_or_try_init(|| self.load_services_before(store))
            .await?;
        Ok(self
            .wanted_without(resource, filter, Some(before))
            .unwrap_or(false))
    }

    /// [`Notice::wanted`] when it can be told without the services affected before
    /// (`before`, if read already); `None` when only they can tell.
    fn wanted_without(
        &self,
        resource: &Resource,
        filter: &NoticeFilter,
        before: Option<&Vec<Uuid>>,
    ) -> Option<bool> {
        if resource.matches(filter) {
            return Some(true);
        }
        if filter.services.is_empty() || self.kind != ResourceKind::Incident {
            return Some(false);
        }
        let region_only = NoticeFilter {
            region: filter.region.clone(),
            ..NoticeFilter::default()
        };
        if !resource.matches(&region_only) {
            return Some(false);
        }
        Some(before?.iter().any(|id| filter.services.contains(id)))
    }

    /// The rendering key of `viewer` for `filter`'s languages.
    fn rendering_key(
        resource: &Resource,
        viewer: &Viewer,
        filter: &NoticeFilter,
        site: &Site,
    ) -> RenderingKey {
        // The usual subscriber asks for no language: nothing to negotiate (or clone).
        let language = if filter.preferences.is_empty() {
            None
        } else {
            resource.language(&Negotiation {
                preferences: filter.preferences.clone(),
                default: site.default_language.clone(),
            })
        };
        (ViewerKey::from(viewer), language)
    }

    /// Renders the notice for the public in the default language and in each language its
    /// resource has texts in: every public reader's rendering, whatever language it asks
    /// for, is then ready for the relays to write.
    pub async fn render_for_the_public(
        &self,
        store: &EventStore,
        site: &Site,
    ) -> Result<(), NoticeError> {
        let everyone = NoticeFilter::default();
        self.message_for(store, &Viewer::Public, &everyone, site)
            .await?;
        let Some(Some(resource)) = self.state.get() else {
            return Ok(());
        };
        for language in resource.languages() {
            let reader = NoticeFilter {
                preferences: Preferences::only(language.clone()),
                ..NoticeFilter::default()
            };
            self.message_for(store, &Viewer::Public, &reader, site)
                .await?;
        }
        Ok(())
    }

    /// The Server-Sent Events message for `viewer` when it is known without waiting for
    /// anything (the resource read, the rendering done): `Some(None)` when the notice is
    /// not for this subscriber, `None` when only [`Notice::message_for`] can tell. A live
    /// stream's relay writes most notices from this, with no task woken.
    pub fn known_message_for(
        &self,
        viewer: &Viewer,
        filter: &NoticeFilter,
        site: &Site,
    ) -> Option<Option<Bytes>> {
        if !filter.takes_type(self.notice_type) {
            return Some(None);
        }
        let Some(resource) = self.state.get()? else {
            return Some(None);
        };
        if !self.wanted_without(resource, filter, self.services_before.get())? {
            return Some(None);
        }
        let key = Notice::rendering_key(resource, viewer, filter, site);
        let rendered = self.rendered.lock().ok()?;
        rendered
            .get(&key)
            .map(|rendered| rendered.as_ref().map(|r| r.sse.clone()))
    }

    /// This notice rendered for `viewer`, or `None` if it may not see it or `filter`
    /// leaves it out.
    pub async fn render_for(
        &self,
        store: &EventStore,
        viewer: &Viewer,
        filter: &NoticeFilter,
        site: &Site,
    ) -> Result<Option<Rendered>, NoticeError> {
        if !filter.takes_type(self.notice_type) {
            return Ok(None);
        }
        let state = self
            .state
            .get_or_try_init(|| self.load(store))
            .await?
            .clone();
        let Some(resource) = state else {
            return Ok(None);
        };
        if !self.wanted(store, &resource, filter).await? {
            return Ok(None);
        }
        let key = Notice::rendering_key(&resource, viewer, filter, site);
        if let Some(rendered) = self.rendered.lock().ok().and_then(|r| r.get(&key).cloned()) {
            return Ok(rendered);
        }
        let negotiation = Negotiation {
            preferences: filter.preferences.clone(),
            default: site.default_language.clone(),
        };
        let rendered = match render_data(store, (*resource).clone(), viewer, &negotiation).await? {
            None => None,
            Some(data) => Some(self.cloud_event(data, &site.source_base)?),
        };
        if let Ok(mut cache) = self.rendered.lock() {
            cache.insert(key, rendered.clone());
        }
        Ok(rendered)
    }

    /// The Server-Sent Events message for `viewer` (see [`Notice::render_for`]).
    pub async fn message_for(
        &self,
        store: &EventStore,
        viewer: &Viewer,
        filter: &NoticeFilter,
        site: &Site,
    ) -> Result<Option<Bytes>, NoticeError> {
        let rendered = self.render_for(store, viewer, filter, site).await?;
        Ok(rendered.map(|r| r.sse))
    }

    fn cloud_event(
        &self,
        data: serde_json::Value,
        source_base: &str,
    ) -> Result<Rendered, NoticeError> {
        let collection = match self.kind {
            ResourceKind::Incident => "incidents",
            ResourceKind::Maintenance => "maintenances",
            ResourceKind::Service => "services",
        };
        let event = CloudEvent {
            specversion: "1.0",
            id: self.event_id,
            source: format!("{source_base}/v1/{collection}/{}", self.resource_id),
            event_type: self.notice_type,
            subject: self.resource_id.to_string(),
            time: self
                .recorded_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
            datacontenttype: "application/json",
            position: self.position,
            data,
        };
        let json = serde_json::to_string(&event)?;
        let sse = Bytes::from(format!(
            "id: {}\nevent: {}\ndata: {json}\n\n",
            self.position,
            self.notice_type.as_str()
        ));
        Ok(Rendered {
            json: Bytes::from(json),
            sse,
        })
    }

    /// The stream the notice's resource lives in: notices of one stream reach each
    /// webhook in their order.
    pub fn ordering_key(&self) -> String {
        let kind = match self.kind {
            ResourceKind::Incident => "incident",
            ResourceKind::Maintenance => "maintenance",
            ResourceKind::Service => "service",
        };
        format!("{kind}-{}", self.resource_id)
    }

    pub fn event_id(&self) -> Uuid {
        self.event_id
    }

    /// Is it the first notice of its resource (the declaration, the scheduling)? Emails
    /// thread the rest under it.
    pub fn opens_thread(&self) -> bool {
        self.stream_version == 1
    }

    /// Every service this notice concerns: a filter naming any of them takes it. For the
    /// channels that filter by service in bulk (one query for all email subscribers)
    /// rather than per subscriber through [`Notice::render_for`].
    pub async fn services(&self, store: &EventStore) -> Result<Vec<Uuid>, NoticeError> {
        let state = self
            .state
            .get_or_try_init(|| self.load(store))
            .await?
            .clone();
        let Some(mut services) = state.as_deref().map(Resource::services) else {
            return Ok(Vec::new());
        };
        if self.kind == ResourceKind::Incident {
            let before = self
                .services_before
                .get_or_try_init(|| self.load_services_before(store))
                .await?;
            for id in before {
                if !services.contains(id) {
                    services.push(*id);
                }
            }
        }
        Ok(services)
    }
}

#[derive(Serialize)]
struct CloudEvent {
    specversion: &'static str,
    id: Uuid,
    source: String,
    #[serde(rename = "type")]
    event_type: NoticeType,
    subject: String,
    time: String,
    datacontenttype: &'static str,
    /// Extension: the global position (also the SSE `id`).
    position: u64,
    data: serde_json::Value,
}

/// An incident or a maintenance with the services it affects as `viewer` sees them now.
#[derive(Serialize)]
struct WithServices<T: Serialize> {
    #[serde(flatten)]
    resource: T,
    services: Vec<ServiceBody>,
}

async fn services_for(
    store: &EventStore,
    ids: impl Iterator<Item = Uuid>,
    viewer: &Viewer,
) -> Result<Vec<ServiceBody>, NoticeError> {
    let ids: Vec<Uuid> = ids.collect();
    let client = store.pool().get().await?;
    let services = queries::services_with_ids(&client, &ids, viewer).await?;
    Ok(services.into_iter().map(ServiceBody::from).collect())
}

/// The resource as `viewer` may see it, or `None` when it may not.
async fn render_data(
    store: &EventStore,
    resource: Resource,
    viewer: &Viewer,
    negotiation: &Negotiation,
) -> Result<Option<serde_json::Value>, NoticeError> {
    let encode =
        |value: Result<serde_json::Value, serde_json::Error>| value.map_err(NoticeError::from);
    Ok(match resource {
        Resource::Incident(incident) => match queries::for_viewer(incident, viewer) {
            None => None,
            Some(incident) => {
                let ids = incident
                    .state
                    .affected_services
                    .iter()
                    .map(|a| a.service_id);
                let services = services_for(store, ids, viewer).await?;
                Some(encode(serde_json::to_value(WithServices {
                    resource: IncidentBody::new(incident, negotiation),
                    services,
                }))?)
            }
        },
        Resource::Maintenance(maintenance) => match queries::for_viewer(maintenance, viewer) {
            None => None,
            Some(maintenance) => {
                let ids = maintenance.state.affected_services.clone().into_iter();
                let services = services_for(store, ids, viewer).await?;
                Some(encode(serde_json::to_value(WithServices {
                    resource: MaintenanceBody::new(maintenance, negotiation),
                    services,
                }))?)
            }
        },
        Resource::Service(id) => {
            let client = store.pool().get().await?;
            // The service with the status this viewer sees now.
            match queries::service(&client, id, viewer).await? {
                Some(view) => Some(encode(serde_json::to_value(ServiceBody::from(view)))?),
                None => None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::time::Duration;

    use domain::values::{Audience, IncidentStatus};
    use eventstore::testing::TestDatabase;
    use eventstore::Metadata;
    use projections::Publisher;

    use super::*;

    /// Notices read together render exactly as notices read one at a time: the read-model
    /// row serves only the notice at its version, and an earlier notice of the same
    /// incident is still folded from the log.
    #[tokio::test]
    async fn notices_preloaded_together_render_as_notices_read_one_at_a_time() {
        let db = TestDatabase::create().await;
        let store = db.store();
        let publisher = Publisher::new(&store);
        let by = Metadata::by("publisher");
        let id = Uuid::new_v4();
        let declare =
            projections::testing::declaration(id, Vec::new(), Audience::Public, Utc::now());
        publisher
            .execute::<IncidentDecider>(id, &declare, None, &by)
            .await
            .unwrap();
        let update = projections::testing::update(
            IncidentStatus::Identified,
            "The cause is found.",
            Utc::now(),
        );
        publisher
            .execute::<IncidentDecider>(id, &update, None, &by)
            .await
            .unwrap();
        store.seal_all(Duration::from_secs(5)).await.unwrap();
        let events = eventstore::testing::whole_log(&store).await;
        let notices = || events.iter().filter_map(Notice::of).collect::<Vec<_>>();
        let (alone, together) = (notices(), notices());
        assert_eq!(together.len(), 2);

        Notice::preload(&store, &together).await.unwrap();
        assert!(
            !together[0].state.initialized(),
            "the row is past the declaration"
        );
        assert!(together[1].state.initialized(), "the row is at the update");
        let site = Site::default();
        let everything = NoticeFilter::default();
        for (one, other) in alone.iter().zip(&together) {
            let one = one
                .render_for(&store, &Viewer::Public, &everything, &site)
                .await
                .unwrap()
                .unwrap();
            let other = other
                .render_for(&store, &Viewer::Public, &everything, &site)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(one.json, other.json);
        }
        // And each shows the incident as it stood after its own event.
        let statuses: Vec<String> = together
            .iter()
            .map(|notice| {
                let rendered = notice.rendered.lock().unwrap();
                let json = &rendered.values().next().unwrap().as_ref().unwrap().json;
                let value: serde_json::Value = serde_json::from_slice(json).unwrap();
                value["data"]["status"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(statuses, ["investigating", "identified"]);
    }
}
