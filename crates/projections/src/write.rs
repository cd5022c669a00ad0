//! Writing resource states into the read-model tables, in bulk: one statement per table
//! for any number of resources, the same code for one command and for a replay batch, and
//! every statement of a write sent in one pipeline (see [`eventstore::pipeline`]).
//!
//! A row only ever moves to a higher version (the upsert's `WHERE`), and a resource's
//! derived rows (its updates, its service impacts) are written only while its row holds the
//! very version they were derived from, so writing a state twice, or an older one after a
//! newer, changes nothing. That condition is a subquery of the derived rows' own statement, so
//! they need not wait for the upsert's answer. It looks the parent up in a `LATERAL … LIMIT 1`
//! subquery, which plans as a primary-key lookup per row whatever the table's size; as a join,
//! the generic plan the write runs under (see `READ_MODEL_WRITE_SQL`) scanned small parent
//! tables whole.
//!
//! What the resource's previous state already made is left out ([`Changes::stored_timelines`],
//! [`Changes::stored_impacts`]): update rows unchanged at their place in the timeline, and the
//! impact rows when all of them are unchanged; none when the title or audience changed, since
//! every derived row holds them. What a write notes is what changed (the updates it made or
//! corrected), not the whole timeline, and where in the timeline the first of them is: on a
//! long timeline, building the statements looks only at the updates from there on (the new
//! ones, when updates were appended), where it used to look up every update in a set, and
//! before that hashed every update id into sets. The rows
//! of the updates that the write's own events create ([`Changes::new_updates`]) are plain
//! inserts; the others are upserts. A resource those events create
//! ([`Changes::new_resources`]) has no impact rows to delete before its own are inserted.
//!
//! # Timelines in update rows
//!
//! An incident's or a maintenance's timeline is not in its row's `state` (which holds the
//! resource with an empty `updates`) but in its `rm_updates` rows: each holds its update whole
//! (`body`, `json`) at its place in the timeline (`seq`), beside the columns the feeds read
//! (migration V8). A new update then writes one small row and a state of constant size, where
//! it used to rewrite a state that grew with every update, the largest cost of a write on a
//! long timeline. Readers put the timeline back in the same statement, so from the same
//! snapshot, as the state (see [`crate::queries::StoredState`]); and since update rows are
//! written only where the resource row holds their version, a snapshot never pairs a state
//! with another version's timeline.
//!
//! Incident and maintenance states are `json`, not `jsonb` (migration V7): they are written
//! whole and only read whole, by the application, so PostgreSQL need not convert them into its
//! binary form on every write. They and the stored idempotency answers are compressed with lz4
//! where the server has it (V6). The array columns that SQL filters by (regions, services,
//! tenants) travel as one small jsonb per row beside the state. In memory a timeline is a
//! [`domain::values::Timeline`] of shared updates, so the copies a write makes of a state
//! (decided on, written, kept, answered) share every update's text.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use domain::api_key::ApiKey;
use domain::incident::Incident;
use domain::maintenance::Maintenance;
use domain::service::Service;
use domain::subscriber::Subscriber;
use domain::template::Template;
use domain::values::{Audience, ServiceStatus, Timeline};
use domain::webhook::{Webhook, WebhookStatus};
use serde::Serialize;
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

use crate::kinds::Versioned;
use crate::ProjectionError;

/// A set of resource or update ids, hashed with foldhash: a write fills them with every
/// update of its resource's timeline, which SipHash made a tenth of its CPU on long ones.
pub type IdSet = foldhash::HashSet<Uuid>;
/// Resource ids, each with a place in its timeline.
pub type PlaceMap = foldhash::HashMap<Uuid, usize>;

/// Resource states to write. At most one per resource: a statement cannot upsert one row
/// twice.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    pub api_keys: Vec<Versioned<ApiKey>>,
    pub services: Vec<Versioned<Service>>,
    pub incidents: Vec<Versioned<Incident>>,
    pub maintenances: Vec<Versioned<Maintenance>>,
    pub webhooks: Vec<Versioned<Webhook>>,
    pub templates: Vec<Versioned<Template>>,
    pub subscribers: Vec<Versioned<Subscriber>>,
    /// Incidents and maintenances whose update rows are known to be stored exactly as these
    /// states would write them, but for those in `changed_updates`: only those are written,
    /// so that a write costs what changed rather than the length of the timeline. Each maps
    /// to the place in its timeline of the first update that may differ (the timeline's
    /// length if none does): those before it are not even looked at. Any other resource has
    /// every update row written.
    pub stored_timelines: PlaceMap,
    /// Of the resources in `stored_timelines`, the updates whose rows differ or are new.
    pub changed_updates: IdSet,
    /// Incidents and maintenances whose service impact rows are known to be stored exactly
    /// as these states would write them: left alone rather than deleted and inserted again.
    pub stored_impacts: IdSet,
    /// Updates that the events appended with this write bring into being: no row can hold
    /// them yet, so theirs are inserted without the upsert's conflict check.
    pub new_updates: IdSet,
    /// Resources that the events appended with this write create: an incident or a
    /// maintenance among them can have no impact rows yet, so none are deleted before its
    /// own are inserted.
    pub new_resources: IdSet,
}

/// What an incident's or a maintenance's derived rows are made of: an update row holds the
/// update with its resource's title and audience, an impact row the service's status with
/// the resource's audience.
pub(crate) struct Derived<'a, U> {
    title: &'a str,
    audience: &'a Audience,
    updates: &'a [Arc<U>],
    impacts: Vec<(Uuid, ServiceStatus)>,
}

impl<'a> Derived<'a, domain::incident::Update> {
    pub(crate) fn of_incident(incident: &'a Incident) -> Self {
        Derived {
            title: &incident.title,
            audience: &incident.audience,
            updates: &incident.updates,
            impacts: incident_impacts(incident),
        }
    }
}

impl<'a> Derived<'a, domain::maintenance::MaintenanceUpdate> {
    pub(crate) fn of_maintenance(maintenance: &'a Maintenance) -> Self {
        Derived {
            title: &maintenance.title,
            audience: &maintenance.audience,
            updates: &maintenance.updates,
            impacts: maintenance_impacts(maintenance),
        }
    }
}

/// The services an incident affects while it is open, with their status.
pub(crate) fn incident_impacts(incident: &Incident) -> Vec<(Uuid, ServiceStatus)> {
    if !incident.status.is_open() {
        return Vec::new();
    }
    (incident.affected_services.iter())
        .map(|a| (a.service_id, a.status))
        .collect()
}

/// The services a maintenance puts under maintenance while it is active.
pub(crate) fn maintenance_impacts(maintenance: &Maintenance) -> Vec<(Uuid, ServiceStatus)> {
    if !maintenance.status.is_active() {
        return Vec::new();
    }
    (maintenance.affected_services.iter())
        .map(|id| (*id, ServiceStatus::UnderMaintenance))
        .collect()
}

/// An update of a timeline, as its `rm_updates` row holds it: id, status, message, time.
pub(crate) trait TimelineUpdate {
    fn row(&self) -> (Uuid, &'static str, &str, DateTime<Utc>);
}

impl TimelineUpdate for domain::incident::Update {
    fn row(&self) -> (Uuid, &'static str, &str, DateTime<Utc>) {
        (
            self.id,
            self.status.as_str(),
            &self.message,
            self.created_at,
        )
    }
}

impl TimelineUpdate for domain::maintenance::MaintenanceUpdate {
    fn row(&self) -> (Uuid, &'static str, &str, DateTime<Utc>) {
        (
            self.id,
            self.status.as_str(),
            &self.message,
            self.created_at,
        )
    }
}

impl Changes {
    /// Adds the changes of other resources, to be written in the same statements. Each
    /// resource must be in at most one of the two; the notes are all keyed by resource or
    /// update ids, so they never mix.
    pub(crate) fn absorb(&mut self, other: Changes) {
        let Changes {
            api_keys,
            services,
            incidents,
            maintenances,
            webhooks,
            templates,
            subscribers,
            stored_timelines,
            changed_updates,
            stored_impacts,
            new_updates,
            new_resources,
        } = other;
        self.api_keys.extend(api_keys);
        self.services.extend(services);
        self.incidents.extend(incidents);
        self.maintenances.extend(maintenances);
        self.webhooks.extend(webhooks);
        self.templates.extend(templates);
        self.subscribers.extend(subscribers);
        for (id, place) in stored_timelines {
            self.note_stored_timeline(id, place);
        }
        self.changed_updates.extend(changed_updates);
        self.stored_impacts.extend(stored_impacts);
        self.new_updates.extend(new_updates);
        self.new_resources.extend(new_resources);
    }

    /// Notes that resource `id`'s update rows are stored up to `place` (see
    /// [`Changes::stored_timelines`]); noted twice, the earlier place stands.
    fn note_stored_timeline(&mut self, id: Uuid, place: usize) {
        (self.stored_timelines.entry(id))
            .and_modify(|noted| *noted = (*noted).min(place))
            .or_insert(place);
    }

    /// These changes dealt into `hands` parts, each resource to one (round robin within each
    /// kind, so that the parts are about as large), with every note in each part: the notes
    /// are keyed by resource or update ids, so a part's writes read only its own.
    pub(crate) fn dealt(&self, hands: usize) -> Vec<Changes> {
        fn deal<T: Clone>(all: &[T], hands: usize, hand: usize) -> Vec<T> {
            all.iter().skip(hand).step_by(hands).cloned().collect()
        }
        let hands = hands.max(1);
        (0..hands)
            .map(|hand| Changes {
                api_keys: deal(&self.api_keys, hands, hand),
                services: deal(&self.services, hands, hand),
                incidents: deal(&self.incidents, hands, hand),
                maintenances: deal(&self.maintenances, hands, hand),
                webhooks: deal(&self.webhooks, hands, hand),
                templates: deal(&self.templates, hands, hand),
                subscribers: deal(&self.subscribers, hands, hand),
                stored_timelines: self.stored_timelines.clone(),
                changed_updates: self.changed_updates.clone(),
                stored_impacts: self.stored_impacts.clone(),
                new_updates: self.new_updates.clone(),
                new_resources: self.new_resources.clone(),
            })
            .collect()
    }

    /// Notes which derived rows of resource `id` at `after` are the ones `before` made:
    /// updates that are the same at the same place of the timeline, and impacts that are
    /// all the same; none when the title or the audience changed, which every row holds.
    pub(crate) fn note_unchanged<U: PartialEq + TimelineUpdate>(
        &mut self,
        id: Uuid,
        before: Derived<'_, U>,
        after: Derived<'_, U>,
    ) {
        if before.title != after.title || before.audience != after.audience {
            return;
        }
        // Unchanged updates share their `Arc` with `before`'s: comparing them is a pointer's
        // comparison.
        let at_their_place = before
            .updates
            .iter()
            .map(Some)
            .chain(std::iter::repeat(None));
        let mut first_changed = after.updates.len();
        for (place, (b, a)) in at_their_place.zip(after.updates).enumerate() {
            if b != Some(a) {
                first_changed = first_changed.min(place);
                self.changed_updates.insert(a.row().0);
            }
        }
        self.note_stored_timeline(id, first_changed);
        if before.impacts == after.impacts {
            self.stored_impacts.insert(id);
        }
    }

    /// Notes the updates of `after` that `before` (the state the write's events were
    /// decided on; none for a new resource) does not have: a resource's update ids are
    /// unique and never removed, so only the events appended with `after` made them.
    pub(crate) fn note_new_updates<U: TimelineUpdate>(
        &mut self,
        before: Option<Derived<'_, U>>,
        after: Derived<'_, U>,
    ) {
        let before = before.map_or(&[][..], |b| b.updates);
        let id = |u: &Arc<U>| u.row().0;
        // Updates are only ever appended: the new ones follow those `before` had, which
        // is checked rather than trusted.
        let appended = after.updates.len() >= before.len()
            && (before.iter().zip(after.updates)).all(|(b, a)| id(b) == id(a));
        if appended {
            (self.new_updates).extend(after.updates[before.len()..].iter().map(id));
        } else {
            let known: IdSet = before.iter().map(id).collect();
            let ids = after.updates.iter().map(id);
            self.new_updates
                .extend(ids.filter(|id| !known.contains(id)));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.api_keys.is_empty()
            && self.services.is_empty()
            && self.incidents.is_empty()
            && self.maintenances.is_empty()
            && self.webhooks.is_empty()
    }
}

fn version(v: &Versioned<impl Sized>) -> Result<i64, ProjectionError> {
    i64::try_from(v.version).map_err(|_| {
        ProjectionError::Corrupt(format!("version {} of {} is out of range", v.version, v.id))
    })
}

/// A state as its `json` or `jsonb` parameter: serialised straight into the statement,
/// without an intermediate JSON tree.
fn state_json<T>(v: &Versioned<T>) -> Json<&T> {
    Json(&v.state)
}

/// The array columns of a resource row (regions, affected services, tenants). Their
/// lengths differ from row to row, so a batch cannot pass them as SQL arrays; each row's go
/// as one small jsonb, which is cheap to take apart, unlike the row's whole state (stored
/// as `json` and never read inside by SQL: migration V7).
#[derive(Debug, Serialize)]
struct ArrayColumns<'a> {
    regions: &'a [String],
    service_ids: Vec<Uuid>,
    tenants: &'a [String],
}

impl<'a> ArrayColumns<'a> {
    fn of(
        regions: &'a [String],
        services: impl Iterator<Item = Uuid>,
        audience: &'a Audience,
    ) -> Json<Self> {
        let tenants = match audience {
            Audience::Public => &[][..],
            Audience::Tenants { tenants } => tenants,
        };
        Json(ArrayColumns {
            regions,
            service_ids: services.collect(),
            tenants,
        })
    }
}

fn is_public(audience: &Audience) -> bool {
    matches!(audience, Audience::Public)
}

/// Writes every state of `changes` whose row is older (or missing).
pub async fn write_changes<C: GenericClient>(
    client: &C,
    changes: &Changes,
) -> Result<(), ProjectionError> {
    Writes::of(changes)?
        .prepare(client)
        .await?
        .send(client)
        .await
}

/// A statement's parameters, owned (they borrow at most from the changes).
type Params<'a> = Vec<Box<dyn ToSql + Sync + Send + 'a>>;

macro_rules! params {
    ($($param:expr),* $(,)?) => {
        vec![$(Box::new($param) as Box<dyn ToSql + Sync + Send + '_>),*]
    };
}

/// The statements that bring the read models in line with some [`Changes`], in the order
/// they must run.
#[derive(Default)]
pub struct Writes<'a> {
    statements: Vec<(String, Params<'a>)>,
}

/// [`Writes`] with every statement prepared: ready to send in a pipeline.
pub struct PreparedWrites<'a> {
    statements: Vec<(tokio_postgres::Statement, Params<'a>)>,
}

impl<'a> Writes<'a> {
    pub fn of(changes: &'a Changes) -> Result<Self, ProjectionError> {
        let mut writes = Writes::default();
        if !changes.api_keys.is_empty() {
            writes.api_keys(&changes.api_keys)?;
        }
        if !changes.services.is_empty() {
            writes.services(&changes.services)?;
        }
        if !changes.incidents.is_empty() {
            writes.incidents(&changes.incidents, changes)?;
        }
        if !changes.maintenances.is_empty() {
            writes.maintenances(&changes.maintenances, changes)?;
        }
        if !changes.webhooks.is_empty() {
            writes.webhooks(&changes.webhooks)?;
        }
        if !changes.templates.is_empty() {
            writes.templates(&changes.templates)?;
        }
        if !changes.subscribers.is_empty() {
            writes.subscribers(&changes.subscribers)?;
        }
        Ok(writes)
    }

    pub async fn prepare<C: GenericClient>(
        self,
        client: &C,
    ) -> Result<PreparedWrites<'a>, ProjectionError> {
        let mut statements = Vec::with_capacity(self.statements.len());
        for (sql, params) in self.statements {
            statements.push((client.prepare_cached(&sql).await?, params));
        }
        Ok(PreparedWrites { statements })
    }

    fn push(&mut self, sql: impl Into<String>, params: Params<'a>) {
        self.statements.push((sql.into(), params));
    }
}

impl PreparedWrites<'_> {
    /// Sends every statement, in order, when first polled (see [`eventstore::pipeline`]), and
    /// waits for all of them.
    pub async fn send<C: GenericClient>(&self, client: &C) -> Result<(), ProjectionError> {
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = self
            .statements
            .iter()
            .map(|(_, params)| params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect())
            .collect();
        let sent = self
            .statements
            .iter()
            .zip(&params)
            .map(|((statement, _), params)| client.execute(statement, params));
        for result in eventstore::pipeline::in_order(sent).await {
            result?;
        }
        Ok(())
    }
}

/// One derived row per update of a resource: its place in the timeline (which readers put
/// back into the state from these rows, migration V8) and the columns the feeds read.
struct UpdateRows<'a, U> {
    update_ids: Vec<Uuid>,
    resource_ids: Vec<Uuid>,
    resource_versions: Vec<i64>,
    titles: Vec<&'a str>,
    statuses: Vec<&'static str>,
    messages: Vec<&'a str>,
    created: Vec<DateTime<Utc>>,
    seqs: Vec<i32>,
    bodies: Vec<Json<&'a U>>,
}

impl<U> Default for UpdateRows<'_, U> {
    fn default() -> Self {
        UpdateRows {
            update_ids: Vec::new(),
            resource_ids: Vec::new(),
            resource_versions: Vec::new(),
            titles: Vec::new(),
            statuses: Vec::new(),
            messages: Vec::new(),
            created: Vec::new(),
            seqs: Vec::new(),
            bodies: Vec::new(),
        }
    }
}

/// One derived row per service an open incident or active maintenance affects.
#[derive(Default)]
struct ImpactRows {
    service_ids: Vec<Uuid>,
    source_ids: Vec<Uuid>,
    source_versions: Vec<i64>,
    statuses: Vec<&'static str>,
    severities: Vec<i16>,
}

impl ImpactRows {
    fn push(&mut self, service_id: Uuid, source: (Uuid, i64), status: ServiceStatus) {
        self.service_ids.push(service_id);
        self.source_ids.push(source.0);
        self.source_versions.push(source.1);
        self.statuses.push(status.as_str());
        self.severities.push(i16::from(status.severity()));
    }
}

impl<'a> Writes<'a> {
    fn api_keys(&mut self, keys: &'a [Versioned<ApiKey>]) -> Result<(), ProjectionError> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.id).collect();
        let versions = keys.iter().map(version).collect::<Result<Vec<_>, _>>()?;
        let roles: Vec<&str> = keys.iter().map(|k| k.state.role.as_str()).collect();
        let tenants: Vec<Option<&str>> = keys.iter().map(|k| k.state.tenant.as_deref()).collect();
        let revoked: Vec<bool> = keys.iter().map(|k| k.state.revoked_at.is_some()).collect();
        let states: Vec<_> = keys.iter().map(state_json).collect();
        self.push(
            "INSERT INTO rm_api_keys AS r (id, version, role, tenant, revoked, state) \
             SELECT * FROM unnest($1::uuid[], $2::int8[], $3::text[], $4::text[], \
                                  $5::bool[], $6::jsonb[]) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, \
                 role = excluded.role, tenant = excluded.tenant, revoked = excluded.revoked, \
                 state = excluded.state \
             WHERE r.version < excluded.version",
            params![ids, versions, roles, tenants, revoked, states],
        );
        Ok(())
    }

    fn templates(&mut self, templates: &'a [Versioned<Template>]) -> Result<(), ProjectionError> {
        let ids: Vec<Uuid> = templates.iter().map(|t| t.id).collect();
        let versions = templates
            .iter()
            .map(version)
            .collect::<Result<Vec<_>, _>>()?;
        let tenants: Vec<Option<&str>> = templates
            .iter()
            .map(|t| t.state.tenant.as_deref())
            .collect();
        let deleted: Vec<bool> = templates
            .iter()
            .map(|t| t.state.deleted_at.is_some())
            .collect();
        let names: Vec<&str> = templates.iter().map(|t| t.state.name.as_str()).collect();
        let states: Vec<_> = templates.iter().map(state_json).collect();
        self.push(
            "INSERT INTO rm_templates AS r (id, version, tenant, deleted, name, state) \
             SELECT * FROM unnest($1::uuid[], $2::int8[], $3::text[], $4::bool[], \
                                  $5::text[], $6::jsonb[]) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, \
                 tenant = excluded.tenant, deleted = excluded.deleted, name = excluded.name, \
                 state = excluded.state \
             WHERE r.version < excluded.version",
            params![ids, versions, tenants, deleted, names, states],
        );
        Ok(())
    }

    fn subscribers(
        &mut self,
        subscribers: &'a [Versioned<Subscriber>],
    ) -> Result<(), ProjectionError> {
        let ids: Vec<Uuid> = subscribers.iter().map(|s| s.id).collect();
        let versions = subscribers
            .iter()
            .map(version)
            .collect::<Result<Vec<_>, _>>()?;
        let tenants: Vec<Option<&str>> = subscribers
            .iter()
            .map(|s| s.state.tenant.as_deref())
            .collect();
        let statuses: Vec<&str> = subscribers.iter().map(|s| s.state.state.as_str()).collect();
        let created: Vec<DateTime<Utc>> = subscribers.iter().map(|s| s.state.created_at).collect();
        let states: Vec<_> = subscribers.iter().map(state_json).collect();
        self.push(
            "INSERT INTO rm_subscribers AS r (id, version, tenant, status, created_at, state) \
             SELECT * FROM unnest($1::uuid[], $2::int8[], $3::text[], $4::text[], \
                                  $5::timestamptz[], $6::jsonb[]) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, \
                 tenant = excluded.tenant, status = excluded.status, \
                 created_at = excluded.created_at, state = excluded.state \
             WHERE r.version < excluded.version",
            params![ids, versions, tenants, statuses, created, states],
        );
        Ok(())
    }

    fn webhooks(&mut self, webhooks: &'a [Versioned<Webhook>]) -> Result<(), ProjectionError> {
        let ids: Vec<Uuid> = webhooks.iter().map(|w| w.id).collect();
        let versions = webhooks
            .iter()
            .map(version)
            .collect::<Result<Vec<_>, _>>()?;
        let tenants: Vec<Option<&str>> =
            webhooks.iter().map(|w| w.state.tenant.as_deref()).collect();
        let active: Vec<bool> = webhooks
            .iter()
            .map(|w| w.state.status == WebhookStatus::Active)
            .collect();
        let created: Vec<DateTime<Utc>> = webhooks.iter().map(|w| w.state.created_at).collect();
        let states: Vec<_> = webhooks.iter().map(state_json).collect();
        self.push(
            "INSERT INTO rm_webhooks AS r (id, version, tenant, active, created_at, state) \
             SELECT * FROM unnest($1::uuid[], $2::int8[], $3::text[], $4::bool[], \
                                  $5::timestamptz[], $6::jsonb[]) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, \
                 tenant = excluded.tenant, active = excluded.active, \
                 created_at = excluded.created_at, state = excluded.state \
             WHERE r.version < excluded.version",
            params![ids, versions, tenants, active, created, states],
        );
        Ok(())
    }

    fn services(&mut self, services: &'a [Versioned<Service>]) -> Result<(), ProjectionError> {
        let ids: Vec<Uuid> = services.iter().map(|s| s.id).collect();
        let versions = services
            .iter()
            .map(version)
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<&str> = services.iter().map(|s| s.state.name.as_str()).collect();
        let groups: Vec<Option<&str>> = services.iter().map(|s| s.state.group.as_deref()).collect();
        let created: Vec<DateTime<Utc>> = services.iter().map(|s| s.state.created_at).collect();
        let retired: Vec<bool> = services
            .iter()
            .map(|s| s.state.retired_at.is_some())
            .collect();
        let states: Vec<_> = services.iter().map(state_json).collect();
        self.push(
            "INSERT INTO rm_services AS r (id, version, name, group_name, created_at, retired, state) \
             SELECT * FROM unnest($1::uuid[], $2::int8[], $3::text[], $4::text[], \
                                  $5::timestamptz[], $6::bool[], $7::jsonb[]) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, name = excluded.name, \
                 group_name = excluded.group_name, created_at = excluded.created_at, \
                 retired = excluded.retired, state = excluded.state \
             WHERE r.version < excluded.version",
            params![ids, versions, names, groups, created, retired, states],
        );
        Ok(())
    }

    /// Brings the derived rows of `resources` in line with their states, after their
    /// resource rows were upserted: only where the resource row holds the version the
    /// derived rows come from (it was just written, or already held that version), and
    /// taking their audience from that row (so a derived row never disagrees with its
    /// resource). Timelines only grow, so update rows are upserted (an unchanged one is not
    /// rewritten); impacts, which come and go with the resource's status, are replaced.
    /// Rows that [`Changes`] says are stored already are left out.
    fn derived<R, U: TimelineUpdate + Serialize + std::fmt::Debug + Sync + 'a>(
        &mut self,
        kind: &'static str,
        parent_table: &str,
        resources: &'a [Versioned<R>],
        derive: impl Fn(&'a R) -> Derived<'a, U>,
        changes: &Changes,
    ) -> Result<(), ProjectionError> {
        let (mut new_updates, mut updates) = (UpdateRows::default(), UpdateRows::default());
        let mut impacts = ImpactRows::default();
        let (mut ids, mut versions) = (Vec::new(), Vec::new());
        for resource in resources {
            let derived = derive(&resource.state);
            let version = version(resource)?;
            let stored_until = changes.stored_timelines.get(&resource.id).copied();
            let partly_stored = stored_until.is_some();
            let from = stored_until.unwrap_or(0);
            for (seq, update) in derived.updates.iter().enumerate().skip(from) {
                let (update_id, status, message, created) = update.row();
                if !partly_stored || changes.changed_updates.contains(&update_id) {
                    let seq = i32::try_from(seq).map_err(|_| {
                        ProjectionError::Corrupt(format!(
                            "the timeline of {} is too long",
                            resource.id
                        ))
                    })?;
                    let updates = if changes.new_updates.contains(&update_id) {
                        &mut new_updates
                    } else {
                        &mut updates
                    };
                    updates.update_ids.push(update_id);
                    updates.resource_ids.push(resource.id);
                    updates.resource_versions.push(version);
                    updates.titles.push(derived.title);
                    updates.statuses.push(status);
                    updates.messages.push(message);
                    updates.created.push(created);
                    updates.seqs.push(seq);
                    updates.bodies.push(Json(&**update));
                }
            }
            if !changes.stored_impacts.contains(&resource.id) {
                if !changes.new_resources.contains(&resource.id) {
                    ids.push(resource.id);
                    versions.push(version);
                }
                for (service_id, status) in derived.impacts {
                    impacts.push(service_id, (resource.id, version), status);
                }
            }
        }
        if !ids.is_empty() {
            self.push(
                format!(
                    "DELETE FROM rm_service_impacts i \
                      WHERE i.source_kind = $3 AND i.source_id = ANY($1) \
                        AND EXISTS (SELECT 1 FROM unnest($1::uuid[], $2::int8[]) AS w(id, version) \
                                      JOIN {parent_table} p ON p.id = w.id AND p.version = w.version \
                                     WHERE w.id = i.source_id)"
                ),
                params![ids, versions, kind],
            );
        }
        // The rows of new updates are plain inserts; the others are upserted, and left
        // alone when they already hold the same.
        for (rows, on_conflict) in [
            (new_updates, ""),
            (
                updates,
                "ON CONFLICT (resource_kind, resource_id, update_id) DO UPDATE SET \
                     title = excluded.title, status = excluded.status, \
                     message = excluded.message, created_at = excluded.created_at, \
                     public = excluded.public, tenants = excluded.tenants, \
                     seq = excluded.seq, body = excluded.body \
                 WHERE (rm_updates.title, rm_updates.status, rm_updates.message, \
                        rm_updates.created_at, rm_updates.public, rm_updates.tenants, \
                        rm_updates.seq, rm_updates.body::text) \
                       IS DISTINCT FROM (excluded.title, excluded.status, excluded.message, \
                        excluded.created_at, excluded.public, excluded.tenants, \
                        excluded.seq, excluded.body::text)",
            ),
        ] {
            if rows.update_ids.is_empty() {
                continue;
            }
            self.push(
                format!(
                    "INSERT INTO rm_updates (update_id, resource_kind, resource_id, title, status, \
                                             message, created_at, public, tenants, seq, body) \
                     SELECT u.update_id, $8, u.resource_id, u.title, u.status, u.message, \
                            u.created_at, p.public, p.tenants, u.seq, u.body \
                       FROM unnest($1::uuid[], $2::uuid[], $3::int8[], $4::text[], $5::text[], \
                                   $6::text[], $7::timestamptz[], $9::int4[], $10::json[]) \
                            AS u(update_id, resource_id, version, title, status, message, \
                                 created_at, seq, body) \
                       CROSS JOIN LATERAL ({}) p \
                     {on_conflict}",
                    parent_at_version(parent_table, "u.resource_id", "u.version")
                ),
                params![
                    rows.update_ids,
                    rows.resource_ids,
                    rows.resource_versions,
                    rows.titles,
                    rows.statuses,
                    rows.messages,
                    rows.created,
                    kind,
                    rows.seqs,
                    rows.bodies,
                ],
            );
        }
        if !impacts.service_ids.is_empty() {
            self.push(
                format!(
                    "INSERT INTO rm_service_impacts (service_id, source_id, source_kind, status, \
                                                     severity, public, tenants) \
                     SELECT i.service_id, i.source_id, $6, i.status, i.severity, p.public, \
                            p.tenants \
                       FROM unnest($1::uuid[], $2::uuid[], $3::int8[], $4::text[], $5::int2[]) \
                            AS i(service_id, source_id, version, status, severity) \
                       CROSS JOIN LATERAL ({}) p",
                    parent_at_version(parent_table, "i.source_id", "i.version")
                ),
                params![
                    impacts.service_ids,
                    impacts.source_ids,
                    impacts.source_versions,
                    impacts.statuses,
                    impacts.severities,
                    kind,
                ],
            );
        }
        Ok(())
    }

    fn incidents(
        &mut self,
        incidents: &'a [Versioned<Incident>],
        changes: &Changes,
    ) -> Result<(), ProjectionError> {
        let ids: Vec<Uuid> = incidents.iter().map(|i| i.id).collect();
        let versions = incidents
            .iter()
            .map(version)
            .collect::<Result<Vec<_>, _>>()?;
        let statuses: Vec<&str> = incidents.iter().map(|i| i.state.status.as_str()).collect();
        let open: Vec<bool> = incidents.iter().map(|i| i.state.status.is_open()).collect();
        let started: Vec<DateTime<Utc>> = incidents.iter().map(|i| i.state.started_at).collect();
        let resolved: Vec<Option<DateTime<Utc>>> =
            incidents.iter().map(|i| i.state.resolved_at).collect();
        let public: Vec<bool> = incidents
            .iter()
            .map(|i| is_public(&i.state.audience))
            .collect();
        // The timeline is in the update rows (see `derived`).
        let states: Vec<_> = incidents
            .iter()
            .map(|i| {
                Json(Incident {
                    updates: Timeline::default(),
                    ..i.state.clone()
                })
            })
            .collect();
        let arrays: Vec<_> = incidents
            .iter()
            .map(|i| {
                let services = i.state.affected_services.iter().map(|a| a.service_id);
                ArrayColumns::of(&i.state.regions, services, &i.state.audience)
            })
            .collect();
        self.push(
            "INSERT INTO rm_incidents AS r (id, version, status, is_open, started_at, resolved_at, \
                                            regions, service_ids, public, tenants, state) \
             SELECT t.id, t.version, t.status, t.is_open, t.started_at, t.resolved_at, \
                    ARRAY(SELECT jsonb_array_elements_text(t.arrays->'regions')), \
                    ARRAY(SELECT s::uuid FROM jsonb_array_elements_text(t.arrays->'service_ids') s), \
                    t.public, \
                    ARRAY(SELECT jsonb_array_elements_text(t.arrays->'tenants')), \
                    t.state \
               FROM unnest($1::uuid[], $2::int8[], $3::text[], $4::bool[], $5::timestamptz[], \
                           $6::timestamptz[], $7::bool[], $8::json[], $9::jsonb[]) \
                    AS t(id, version, status, is_open, started_at, resolved_at, public, state, arrays) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, status = excluded.status, \
                 is_open = excluded.is_open, started_at = excluded.started_at, \
                 resolved_at = excluded.resolved_at, regions = excluded.regions, \
                 service_ids = excluded.service_ids, public = excluded.public, \
                 tenants = excluded.tenants, state = excluded.state \
             WHERE r.version < excluded.version",
            params![ids, versions, statuses, open, started, resolved, public, states, arrays],
        );
        self.derived(
            "incident",
            "rm_incidents",
            incidents,
            Derived::of_incident,
            changes,
        )
    }

    fn maintenances(
        &mut self,
        maintenances: &'a [Versioned<Maintenance>],
        changes: &Changes,
    ) -> Result<(), ProjectionError> {
        let ids: Vec<Uuid> = maintenances.iter().map(|m| m.id).collect();
        let versions = maintenances
            .iter()
            .map(version)
            .collect::<Result<Vec<_>, _>>()?;
        let statuses: Vec<&str> = maintenances
            .iter()
            .map(|m| m.state.status.as_str())
            .collect();
        let starts: Vec<DateTime<Utc>> = maintenances.iter().map(|m| m.state.starts_at).collect();
        let ends: Vec<DateTime<Utc>> = maintenances.iter().map(|m| m.state.ends_at).collect();
        let public: Vec<bool> = maintenances
            .iter()
            .map(|m| is_public(&m.state.audience))
            .collect();
        // The timeline is in the update rows (see `derived`).
        let states: Vec<_> = maintenances
            .iter()
            .map(|m| {
                Json(Maintenance {
                    updates: Timeline::default(),
                    ..m.state.clone()
                })
            })
            .collect();
        let arrays: Vec<_> = maintenances
            .iter()
            .map(|m| {
                let services = m.state.affected_services.iter().copied();
                ArrayColumns::of(&m.state.regions, services, &m.state.audience)
            })
            .collect();
        self.push(
            "INSERT INTO rm_maintenances AS r (id, version, status, starts_at, ends_at, regions, \
                                               service_ids, public, tenants, state) \
             SELECT t.id, t.version, t.status, t.starts_at, t.ends_at, \
                    ARRAY(SELECT jsonb_array_elements_text(t.arrays->'regions')), \
                    ARRAY(SELECT s::uuid FROM jsonb_array_elements_text(t.arrays->'service_ids') s), \
                    t.public, \
                    ARRAY(SELECT jsonb_array_elements_text(t.arrays->'tenants')), \
                    t.state \
               FROM unnest($1::uuid[], $2::int8[], $3::text[], $4::timestamptz[], \
                           $5::timestamptz[], $6::bool[], $7::json[], $8::jsonb[]) \
                    AS t(id, version, status, starts_at, ends_at, public, state, arrays) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, status = excluded.status, \
                 starts_at = excluded.starts_at, ends_at = excluded.ends_at, \
                 regions = excluded.regions, service_ids = excluded.service_ids, \
                 public = excluded.public, tenants = excluded.tenants, state = excluded.state \
             WHERE r.version < excluded.version",
            params![ids, versions, statuses, starts, ends, public, states, arrays],
        );
        self.derived(
            "maintenance",
            "rm_maintenances",
            maintenances,
            Derived::of_maintenance,
            changes,
        )
    }
}

/// The parent row's audience when it holds the version a derived row was made from: a
/// subquery that always plans as one primary-key lookup per row. (As a join, the generic plan
/// of a write (see `READ_MODEL_WRITE_SQL`) scans a small parent table whole, guessing ten
/// rows per array.)
fn parent_at_version(parent_table: &str, id: &str, version: &str) -> String {
    format!(
        "SELECT p.public, p.tenants FROM {parent_table} p \
          WHERE p.id = {id} AND p.version = {version} LIMIT 1"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(PartialEq)]
    struct Update(Uuid, &'static str);

    impl TimelineUpdate for Update {
        fn row(&self) -> (Uuid, &'static str, &str, DateTime<Utc>) {
            (self.0, "investigating", self.1, DateTime::UNIX_EPOCH)
        }
    }

    /// A timeline of updates `(id, message)`.
    fn timeline<const N: usize>(updates: [(Uuid, &'static str); N]) -> Vec<Arc<Update>> {
        updates
            .into_iter()
            .map(|(id, message)| Arc::new(Update(id, message)))
            .collect()
    }

    fn derived<'a>(
        title: &'a str,
        audience: &'a Audience,
        updates: &'a [Arc<Update>],
        impacts: &[(Uuid, ServiceStatus)],
    ) -> Derived<'a, Update> {
        Derived {
            title,
            audience,
            updates,
            impacts: impacts.to_vec(),
        }
    }

    #[test]
    fn a_derived_row_is_noted_unchanged_only_when_everything_it_holds_is() {
        let id = Uuid::from_u128(7);
        let [a, b, c, service] = [1, 2, 3, 4].map(Uuid::from_u128);
        let public = Audience::Public;
        let tenant = Audience::Tenants {
            tenants: vec!["contoso".into()],
        };
        let outage = [(service, ServiceStatus::MajorOutage)];
        let before = timeline([(a, "a"), (b, "b")]);
        // The place from which updates are looked at and those whose rows are to be written
        // (all: `None`), and whether the impacts are.
        let noted = |after: Derived<'_, Update>| {
            let mut changes = Changes::default();
            changes.note_unchanged(id, derived("Teams", &public, &before, &outage), after);
            let mut updates: Vec<Uuid> = changes.changed_updates.into_iter().collect();
            updates.sort();
            let written = changes
                .stored_timelines
                .get(&id)
                .map(|from| (*from, updates));
            (written, changes.stored_impacts.contains(&id))
        };

        // An update appended: the earlier ones and the impacts are as stored.
        let appended = timeline([(a, "a"), (b, "b"), (c, "c")]);
        let after = derived("Teams", &public, &appended, &outage);
        assert_eq!(noted(after), (Some((2, vec![c])), true));
        // A correction, and a service that recovered.
        let corrected = timeline([(a, "a"), (b, "b, corrected")]);
        let recovered = [(service, ServiceStatus::PartialOutage)];
        let after = derived("Teams", &public, &corrected, &recovered);
        assert_eq!(noted(after), (Some((1, vec![b])), false));
        // A correction and an update appended together: from the corrected one's place.
        let d = Uuid::from_u128(5);
        let both = timeline([(a, "a"), (b, "b, corrected"), (d, "d")]);
        let after = derived("Teams", &public, &both, &outage);
        assert_eq!(noted(after), (Some((1, vec![b, d])), true));
        // Nothing changed: nothing is written.
        let after = derived("Teams", &public, &before, &outage);
        assert_eq!(noted(after), (Some((2, vec![])), true));
        // A new title or audience is in every row.
        let after = derived("Teams sign-in", &public, &before, &outage);
        assert_eq!(noted(after), (None, false));
        let after = derived("Teams", &tenant, &before, &outage);
        assert_eq!(noted(after), (None, false));
    }

    #[test]
    fn only_updates_the_state_before_did_not_have_are_noted_new() {
        let [a, b, c] = [1, 2, 3].map(Uuid::from_u128);
        let public = Audience::Public;
        let new = |before: Option<&[Arc<Update>]>, after: &[Arc<Update>]| {
            let mut changes = Changes::default();
            changes.note_new_updates(
                before.map(|b| derived("Teams", &public, b, &[])),
                derived("Teams", &public, after, &[]),
            );
            let mut ids: Vec<Uuid> = changes.new_updates.into_iter().collect();
            ids.sort();
            ids
        };
        let before = timeline([(a, "a"), (b, "b")]);
        // An update posted: only it.
        let posted = timeline([(a, "a"), (b, "b"), (c, "c")]);
        assert_eq!(new(Some(&before), &posted), vec![c]);
        // A correction changes an update the rows may hold already: not new.
        let corrected = timeline([(a, "a"), (b, "b, corrected")]);
        assert_eq!(new(Some(&before), &corrected), Vec::<Uuid>::new());
        // A new resource: every one.
        assert_eq!(new(None, &posted), vec![a, b, c]);
        // Were a timeline ever not to grow by appending, the ids still decide.
        let reordered = timeline([(b, "b"), (c, "c"), (a, "a")]);
        assert_eq!(new(Some(&before), &reordered), vec![c]);
    }
}
