//! Reading the read models. Every read of a notice (an incident, a maintenance, their updates,
//! their effect on a service's status) is made for a [`Viewer`], so that a tenant's private
//! notices never reach anyone outside that tenant.
//!
//! The SQL filters rows with `$everyone OR public OR $tenant = ANY(tenants)`, and a service's
//! status is the worst impact row the viewer may see. A notice is returned only to a viewer its
//! audience admits, and a tenant viewer sees the audience narrowed to its own tenant: it never
//! learns which other tenants a notice is shared with ([`for_viewer`]).
//!
//! The other reads name no viewer, and their callers decide who may make them: API keys and
//! webhooks, for those who manage them (narrowed to a tenant when given one); the live keys
//! matching presented secrets ([`live_keys_by_secret_hashes`], read from the database on every
//! call so that a revocation takes effect at once on every process); the current versions of
//! notices, which cached renderings are checked against ([`current_versions`]).
//!
//! Incident and maintenance states are read with their timelines in the same statement (see
//! [`StoredState`]).
//!
//! The lookups by a list of keys that run on every request or notice (key verifiers, notice
//! versions, services named, key tenants, services and notices read by ids) pass their list
//! padded to [`GENERIC_PLAN_ARRAY_LENGTH`] ([`padded_for_a_generic_plan`]), so that
//! PostgreSQL plans each once per connection.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use domain::api_key::ApiKey;
use domain::incident::Incident;
use domain::language::Language;
use domain::maintenance::Maintenance;
use domain::service::Service;
use domain::values::{Audience, ServiceStatus, Timeline};
use domain::webhook::Webhook;
use serde::de::DeserializeOwned;
use tokio_postgres::types::Json;
use uuid::Uuid;

use crate::kinds::Versioned;
use crate::ProjectionError;
use eventstore::StoreError;

/// Who is reading.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Viewer {
    /// Anonymous, or a key bound to no tenant that may not see private notices: public
    /// notices only.
    Public,
    /// A key bound to a tenant: public notices and that tenant's.
    Tenant(String),
    /// A role that sees every tenant's notices (auditors, and publishers who write them).
    Everyone,
}

impl Viewer {
    /// May this viewer see a notice for `audience`?
    pub fn may_see(&self, audience: &Audience) -> bool {
        match self {
            Viewer::Public => audience.admits(None),
            Viewer::Tenant(tenant) => audience.admits(Some(tenant)),
            Viewer::Everyone => true,
        }
    }

    /// The audience as this viewer may know it: a tenant learns of no other tenant a
    /// notice is shared with.
    pub fn redact(&self, audience: &mut Audience) {
        if let (Viewer::Tenant(tenant), Audience::Tenants { tenants }) = (self, audience) {
            tenants.retain(|t| t == tenant);
        }
    }

    /// The two parameters of the audience filter `($n OR public OR $m = ANY(tenants))`.
    fn filter(&self) -> (bool, Option<&str>) {
        match self {
            Viewer::Public => (false, None),
            Viewer::Tenant(tenant) => (false, Some(tenant.as_str())),
            Viewer::Everyone => (true, None),
        }
    }
}

/// A resource that carries a notice, and so an audience.
pub trait Notice {
    fn audience(&self) -> &Audience;
    fn audience_mut(&mut self) -> &mut Audience;
}

impl Notice for Incident {
    fn audience(&self) -> &Audience {
        &self.audience
    }
    fn audience_mut(&mut self) -> &mut Audience {
        &mut self.audience
    }
}

impl Notice for Maintenance {
    fn audience(&self) -> &Audience {
        &self.audience
    }
    fn audience_mut(&mut self) -> &mut Audience {
        &mut self.audience
    }
}

/// `notice` as `viewer` may see it, or `None` if it may not.
pub fn for_viewer<T: Notice>(mut notice: Versioned<T>, viewer: &Viewer) -> Option<Versioned<T>> {
    if !viewer.may_see(notice.state.audience()) {
        return None;
    }
    viewer.redact(notice.state.audience_mut());
    Some(notice)
}

/// A resource as its row stores it. Incidents and maintenances keep their timeline in their
/// update rows, not in the row's `state` (migration V8): a query that reads their state
/// reads [`StoredState::TIMELINE`] beside it, as a `timeline` column, and
/// `stored_state` puts it back.
pub trait StoredState: DeserializeOwned {
    /// SQL of the `timeline` column (without its name) of the resource row aliased `r`: its
    /// update rows' bodies, in timeline order (NULL when it has none).
    const TIMELINE: &'static str = "NULL::json";

    /// Puts the `timeline` column of `row` into the state.
    fn restore_timeline(
        &mut self,
        _row: &tokio_postgres::Row,
    ) -> Result<(), tokio_postgres::Error> {
        Ok(())
    }
}

/// [`StoredState::TIMELINE`] of a resource of `rm_updates.resource_kind` `kind`.
macro_rules! timeline_sql {
    ($kind:literal) => {
        concat!(
            "(SELECT json_agg(u.body ORDER BY u.seq) FROM rm_updates u \
               WHERE u.resource_kind = '",
            $kind,
            "' AND u.resource_id = r.id)"
        )
    };
}

/// The `timeline` column of `row`: a timeline without updates reads as NULL.
fn timeline<U: DeserializeOwned>(
    row: &tokio_postgres::Row,
) -> Result<Timeline<U>, tokio_postgres::Error> {
    let timeline: Option<Json<Timeline<U>>> = row.try_get("timeline")?;
    Ok(timeline.map(|json| json.0).unwrap_or_default())
}

impl StoredState for Incident {
    const TIMELINE: &'static str = timeline_sql!("incident");

    fn restore_timeline(&mut self, row: &tokio_postgres::Row) -> Result<(), tokio_postgres::Error> {
        self.updates = timeline(row)?;
        Ok(())
    }
}

impl StoredState for Maintenance {
    const TIMELINE: &'static str = timeline_sql!("maintenance");

    fn restore_timeline(&mut self, row: &tokio_postgres::Row) -> Result<(), tokio_postgres::Error> {
        self.updates = timeline(row)?;
        Ok(())
    }
}

impl StoredState for Service {}
impl StoredState for ApiKey {}
impl StoredState for Webhook {}
impl StoredState for domain::template::Template {}
impl StoredState for domain::subscriber::Subscriber {}

/// A service with its status as this viewer may know it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    pub service: Versioned<Service>,
    pub status: ServiceStatus,
}

/// Reads the `id, version, state` columns of a resource row (and `timeline`, see
/// [`StoredState`]).
pub(crate) fn versioned<T: StoredState>(
    row: &tokio_postgres::Row,
) -> Result<Versioned<T>, ProjectionError> {
    let id: Uuid = row.try_get("id")?;
    let version = u64::try_from(row.try_get::<_, i64>("version")?)
        .map_err(|_| ProjectionError::Corrupt(format!("negative version of {id}")))?;
    let state = stored_state(row, id)?
        .ok_or_else(|| ProjectionError::Corrupt(format!("no stored state of {id}")))?;
    Ok(Versioned { id, version, state })
}

/// The `state` column of the row of `id` with its timeline (see [`StoredState`]), decoded
/// straight from the stored bytes (no intermediate JSON tree); `None` when it is NULL.
pub(crate) fn stored_state<T: StoredState>(
    row: &tokio_postgres::Row,
    id: Uuid,
) -> Result<Option<T>, ProjectionError> {
    let corrupt = |e: tokio_postgres::Error| {
        ProjectionError::Store(StoreError::corrupt_by(format!("stored state of {id}"), e))
    };
    let state: Option<Json<T>> = row.try_get("state").map_err(corrupt)?;
    let Some(Json(mut state)) = state else {
        return Ok(None);
    };
    state.restore_timeline(row).map_err(corrupt)?;
    Ok(Some(state))
}

/// The length PostgreSQL assumes for an array parameter it cannot see (its
/// `estimate_array_length`, 10 since at least version 12).
pub const GENERIC_PLAN_ARRAY_LENGTH: usize = 10;

/// `items` padded to [`GENERIC_PLAN_ARRAY_LENGTH`] with repeats of its first one, for a
/// prepared `= ANY($n)`, which a repeat changes nothing for. A prepared statement's plan for
/// any array (its generic plan) is costed for that length; given one or two keys, a plan made
/// for them looks cheaper, so PostgreSQL planned such a lookup afresh on every execution, and
/// planning cost more than running it (`benches/api/load.sh`, pg_stat_statements: the key
/// verifiers' lookup 423 ms of planning against 84 ms of running, the incidents' versions
/// 536 against 138). Padded, both plans cost the same and the generic one is kept.
pub fn padded_for_a_generic_plan<T: Clone>(items: &[T]) -> Cow<'_, [T]> {
    match items.first() {
        Some(first) if items.len() < GENERIC_PLAN_ARRAY_LENGTH => {
            let mut padded = items.to_vec();
            padded.resize(GENERIC_PLAN_ARRAY_LENGTH, first.clone());
            Cow::Owned(padded)
        }
        _ => Cow::Borrowed(items),
    }
}

fn service_status(text: &str) -> Result<ServiceStatus, ProjectionError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| ProjectionError::Corrupt(format!("unknown service status {text}")))
}

/// The worst impact the viewer may see, for each service row `s`.
const DERIVED_STATUS: &str = "coalesce((SELECT i.status FROM rm_service_impacts i \
      WHERE i.service_id = s.id AND ($1 OR i.public OR $2 = ANY(i.tenants)) \
      ORDER BY i.severity DESC LIMIT 1), 'operational') AS status";

fn service_view(row: &tokio_postgres::Row) -> Result<ServiceView, ProjectionError> {
    Ok(ServiceView {
        service: versioned(row)?,
        status: service_status(row.try_get("status")?)?,
    })
}

pub async fn service<C: GenericClient>(
    client: &C,
    id: Uuid,
    viewer: &Viewer,
) -> Result<Option<ServiceView>, ProjectionError> {
    let (everyone, tenant) = viewer.filter();
    let statement = client
        .prepare_cached(&format!(
            "SELECT s.id, s.version, s.state, {DERIVED_STATUS} FROM rm_services s WHERE s.id = $3"
        ))
        .await?;
    let row = client
        .query_opt(&statement, &[&everyone, &tenant, &id])
        .await?;
    row.as_ref().map(service_view).transpose()
}

/// The services of `ids` that exist, retired or not, in the order of `ids`: what
/// [`service`] gives for each, read in one round trip. (Put in order here rather than by
/// joining `unnest($3) WITH ORDINALITY`: a join with a short array was planned afresh on
/// every call, as [`padded_for_a_generic_plan`] tells; this lookup renders every notice.)
pub async fn services_with_ids<C: GenericClient>(
    client: &C,
    ids: &[Uuid],
    viewer: &Viewer,
) -> Result<Vec<ServiceView>, ProjectionError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let (everyone, tenant) = viewer.filter();
    let statement = client
        .prepare_cached(&format!(
            "SELECT s.id, s.version, s.state, {DERIVED_STATUS} \
               FROM rm_services s WHERE s.id = ANY($3)"
        ))
        .await?;
    let padded = padded_for_a_generic_plan(ids);
    let rows = client
        .query(&statement, &[&everyone, &tenant, &padded.as_ref()])
        .await?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in &rows {
        let view = service_view(row)?;
        found.insert(view.service.id, view);
    }
    Ok(ids.iter().filter_map(|id| found.get(id).cloned()).collect())
}

/// Every service that is not retired, by group and name.
pub async fn services<C: GenericClient>(
    client: &C,
    viewer: &Viewer,
) -> Result<Vec<ServiceView>, ProjectionError> {
    let (everyone, tenant) = viewer.filter();
    let statement = client
        .prepare_cached(&format!(
            "SELECT s.id, s.version, s.state, {DERIVED_STATUS} FROM rm_services s \
              WHERE NOT s.retired ORDER BY s.group_name NULLS FIRST, s.name, s.id"
        ))
        .await?;
    let rows = client.query(&statement, &[&everyone, &tenant]).await?;
    rows.iter().map(service_view).collect()
}

/// The statement of [`visible`] and [`visible_with_ids`]: the notice-carrying rows of
/// `table` (`rm_incidents`, `rm_maintenances`) whose id is `id_is`, that the viewer may see
/// (`$1` everyone, `$2` its tenant).
fn visible_rows_sql<T: StoredState>(table: &str, id_is: &str) -> String {
    format!(
        "SELECT r.id, r.version, r.state, {} AS timeline FROM {table} r \
          WHERE r.id {id_is} AND ($1 OR r.public OR $2 = ANY(r.tenants))",
        T::TIMELINE
    )
}

/// One notice-carrying row of `table` (`rm_incidents`, `rm_maintenances`) if the viewer
/// may see it.
async fn visible<C: GenericClient, T: StoredState + Notice>(
    client: &C,
    table: &str,
    id: Uuid,
    viewer: &Viewer,
) -> Result<Option<Versioned<T>>, ProjectionError> {
    let (everyone, tenant) = viewer.filter();
    let statement = client
        .prepare_cached(&visible_rows_sql::<T>(table, "= $3"))
        .await?;
    let row = client
        .query_opt(&statement, &[&everyone, &tenant, &id])
        .await?;
    // The SQL filter and this one agree; this one also redacts.
    Ok(row
        .as_ref()
        .map(versioned)
        .transpose()?
        .and_then(|notice| for_viewer(notice, viewer)))
}

pub async fn incident<C: GenericClient>(
    client: &C,
    id: Uuid,
    viewer: &Viewer,
) -> Result<Option<Versioned<Incident>>, ProjectionError> {
    visible(client, "rm_incidents", id, viewer).await
}

pub async fn maintenance<C: GenericClient>(
    client: &C,
    id: Uuid,
    viewer: &Viewer,
) -> Result<Option<Versioned<Maintenance>>, ProjectionError> {
    visible(client, "rm_maintenances", id, viewer).await
}

/// Those of `ids` that are incidents the viewer may see, in no particular order: what
/// [`incident`] gives for each, read in one round trip.
pub async fn incidents_with_ids<C: GenericClient>(
    client: &C,
    ids: &[Uuid],
    viewer: &Viewer,
) -> Result<Vec<Versioned<Incident>>, ProjectionError> {
    visible_with_ids(client, "rm_incidents", ids, viewer).await
}

/// Those of `ids` that are maintenances the viewer may see, in no particular order: what
/// [`maintenance`] gives for each, read in one round trip.
pub async fn maintenances_with_ids<C: GenericClient>(
    client: &C,
    ids: &[Uuid],
    viewer: &Viewer,
) -> Result<Vec<Versioned<Maintenance>>, ProjectionError> {
    visible_with_ids(client, "rm_maintenances", ids, viewer).await
}

/// [`visible`] for many ids at once.
async fn visible_with_ids<C: GenericClient, T: StoredState + Notice>(
    client: &C,
    table: &str,
    ids: &[Uuid],
    viewer: &Viewer,
) -> Result<Vec<Versioned<T>>, ProjectionError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let (everyone, tenant) = viewer.filter();
    let statement = client
        .prepare_cached(&visible_rows_sql::<T>(table, "= ANY($3)"))
        .await?;
    let ids = padded_for_a_generic_plan(ids);
    let rows = client
        .query(&statement, &[&everyone, &tenant, &ids.as_ref()])
        .await?;
    let mut visible = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(notice) = for_viewer(versioned(row)?, viewer) {
            visible.push(notice);
        }
    }
    Ok(visible)
}

/// The current versions of those of `ids` that are rows of `table` (`rm_incidents`,
/// `rm_maintenances`), whoever may see them: what a cached rendering is checked against.
pub async fn current_versions<C: GenericClient>(
    client: &C,
    table: NoticeTable,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, u64>, ProjectionError> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT id, version FROM {} WHERE id = ANY($1)",
            table.name()
        ))
        .await?;
    let ids = padded_for_a_generic_plan(ids);
    let rows = client.query(&statement, &[&ids.as_ref()]).await?;
    rows.iter()
        .map(|row| {
            let id: Uuid = row.try_get(0)?;
            let version = u64::try_from(row.try_get::<_, i64>(1)?)
                .map_err(|_| ProjectionError::Corrupt(format!("negative version of {id}")))?;
            Ok((id, version))
        })
        .collect()
}

/// The read-model tables whose rows are notices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeTable {
    Incidents,
    Maintenances,
}

impl NoticeTable {
    fn name(self) -> &'static str {
        match self {
            NoticeTable::Incidents => "rm_incidents",
            NoticeTable::Maintenances => "rm_maintenances",
        }
    }
}

/// Which incidents a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncidentState {
    Open,
    Resolved,
    #[default]
    All,
}

/// The incidents the viewer may see, newest first, at most `limit`.
pub async fn incidents<C: GenericClient>(
    client: &C,
    viewer: &Viewer,
    state: IncidentState,
    limit: usize,
) -> Result<Vec<Versioned<Incident>>, ProjectionError> {
    let filter = IncidentFilter {
        state,
        ..IncidentFilter::default()
    };
    Ok(incidents_page(client, viewer, &filter, limit).await?.items)
}

/// The live (not revoked) key of each of these secret SHA-256s, by its verifier (kept
/// outside the history, in `api_key_verifiers`). Read from the database on every call, so a
/// revocation takes effect at once on every process.
pub async fn live_keys_by_secret_hashes<C: GenericClient>(
    client: &C,
    secret_sha256s: &[String],
) -> Result<HashMap<String, Versioned<ApiKey>>, ProjectionError> {
    let statement = client
        .prepare_cached(
            "SELECT v.secret_sha256, k.id, k.version, k.state \
               FROM api_key_verifiers v JOIN rm_api_keys k ON k.id = v.key_id \
              WHERE v.secret_sha256 = ANY($1) AND NOT k.revoked",
        )
        .await?;
    let secret_sha256s = padded_for_a_generic_plan(secret_sha256s);
    let rows = client
        .query(&statement, &[&secret_sha256s.as_ref()])
        .await?;
    let mut keys = HashMap::with_capacity(rows.len());
    let mut ambiguous = Vec::new();
    for row in &rows {
        let hash: String = row.try_get("secret_sha256")?;
        if keys.insert(hash.clone(), versioned(row)?).is_some() {
            ambiguous.push(hash);
        }
    }
    // A verifier is unique, so only forged rows give two keys one secret: neither is anyone's.
    for hash in ambiguous {
        keys.remove(&hash);
    }
    Ok(keys)
}

/// One page of a list, and whether rows follow it.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

impl<T> Page<T> {
    /// `rows` fetched with a limit of `limit + 1`: the extra row only says that more follow.
    pub fn of(mut items: Vec<T>, limit: usize) -> Self {
        let has_more = items.len() > limit;
        items.truncate(limit);
        Page { items, has_more }
    }
}

/// The notices of `rows` that `viewer` may see, as it may see them.
fn visible_rows<T: StoredState + Notice>(
    rows: &[tokio_postgres::Row],
    viewer: &Viewer,
) -> Result<Vec<Versioned<T>>, ProjectionError> {
    let mut visible = Vec::with_capacity(rows.len());
    for row in rows {
        visible.extend(for_viewer(versioned(row)?, viewer));
    }
    Ok(visible)
}

fn fetch_limit(limit: usize) -> i64 {
    i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX)
}

/// Which incidents a list shows, and from where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncidentFilter {
    pub state: IncidentState,
    /// Only incidents affecting this service.
    pub service_id: Option<Uuid>,
    /// Only incidents that concern this region: those listing it, those listing `global`,
    /// and those tied to no region at all.
    pub region: Option<String>,
    /// Start after this incident of the previous page (its `started_at` and id).
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

/// The label of notices that concern every region.
pub const GLOBAL_REGION: &str = "global";

/// The incidents the viewer may see that match `filter`, newest first.
pub async fn incidents_page<C: GenericClient>(
    client: &C,
    viewer: &Viewer,
    filter: &IncidentFilter,
    limit: usize,
) -> Result<Page<Versioned<Incident>>, ProjectionError> {
    let (everyone, tenant) = viewer.filter();
    let open: Option<bool> = match filter.state {
        IncidentState::Open => Some(true),
        IncidentState::Resolved => Some(false),
        IncidentState::All => None,
    };
    let (after_time, after_id) = filter.after.unzip();
    let statement = client
        .prepare_cached(concat!(
            "SELECT id, version, state, ",
            timeline_sql!("incident"),
            " AS timeline FROM rm_incidents r \
              WHERE ($1 OR public OR $2 = ANY(tenants)) \
                AND ($3::bool IS NULL OR is_open = $3) \
                AND ($4::uuid IS NULL OR $4 = ANY(service_ids)) \
                AND ($5::text IS NULL OR $5 = ANY(regions) OR $6 = ANY(regions) \
                     OR cardinality(regions) = 0) \
                AND ($7::timestamptz IS NULL OR (started_at, id) < ($7, $8::uuid)) \
              ORDER BY started_at DESC, id DESC LIMIT $9",
        ))
        .await?;
    let rows = client
        .query(
            &statement,
            &[
                &everyone,
                &tenant,
                &open,
                &filter.service_id,
                &filter.region,
                &GLOBAL_REGION,
                &after_time,
                &after_id,
                &fetch_limit(limit),
            ],
        )
        .await?;
    Ok(Page::of(visible_rows(&rows, viewer)?, limit))
}

/// Which maintenances a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaintenanceState {
    /// Scheduled, not started.
    Upcoming,
    /// In progress or verifying.
    Active,
    /// Completed or cancelled.
    Completed,
    #[default]
    All,
}

impl MaintenanceState {
    fn statuses(self) -> Option<Vec<&'static str>> {
        use domain::maintenance::MaintenanceStatus as S;
        let statuses = match self {
            MaintenanceState::Upcoming => vec![S::Scheduled],
            MaintenanceState::Active => vec![S::InProgress, S::Verifying],
            MaintenanceState::Completed => vec![S::Completed, S::Cancelled],
            MaintenanceState::All => return None,
        };
        Some(statuses.into_iter().map(S::as_str).collect())
    }
}

/// The maintenances the viewer may see in `state`, latest start first, after the
/// maintenance `after` (its `starts_at` and id) of the previous page.
pub async fn maintenances_page<C: GenericClient>(
    client: &C,
    viewer: &Viewer,
    state: MaintenanceState,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: usize,
) -> Result<Page<Versioned<Maintenance>>, ProjectionError> {
    let (everyone, tenant) = viewer.filter();
    let statuses = state.statuses();
    let (after_time, after_id) = after.unzip();
    let statement = client
        .prepare_cached(concat!(
            "SELECT id, version, state, ",
            timeline_sql!("maintenance"),
            " AS timeline FROM rm_maintenances r \
              WHERE ($1 OR public OR $2 = ANY(tenants)) \
                AND ($3::text[] IS NULL OR status = ANY($3)) \
                AND ($4::timestamptz IS NULL OR (starts_at, id) < ($4, $5::uuid)) \
              ORDER BY starts_at DESC, id DESC LIMIT $6",
        ))
        .await?;
    let rows = client
        .query(
            &statement,
            &[
                &everyone,
                &tenant,
                &statuses,
                &after_time,
                &after_id,
                &fetch_limit(limit),
            ],
        )
        .await?;
    Ok(Page::of(visible_rows(&rows, viewer)?, limit))
}

/// Every maintenance that is not finished and starts within a year of `now` (no reminder
/// comes earlier than that), for the scheduler: all tenants' alike.
pub async fn unfinished_maintenances<C: GenericClient>(
    client: &C,
    now: DateTime<Utc>,
) -> Result<Vec<Versioned<Maintenance>>, ProjectionError> {
    let statement = client
        .prepare_cached(concat!(
            "SELECT id, version, state, ",
            timeline_sql!("maintenance"),
            " AS timeline FROM rm_maintenances r \
              WHERE status IN ('scheduled', 'in_progress', 'verifying') \
                AND starts_at - interval '1 year' <= $1 \
                AND (coalesce((state ->> 'auto_start')::boolean, false) \
                     OR coalesce((state ->> 'auto_complete')::boolean, false) \
                     OR coalesce((state ->> 'remind_before_minutes')::integer, 0) > 0)",
        ))
        .await?;
    let rows = client.query(&statement, &[&now]).await?;
    visible_rows(&rows, &Viewer::Everyone)
}

/// The maintenances the viewer may see that are scheduled and not started, soonest first.
pub async fn soonest_upcoming_maintenances<C: GenericClient>(
    client: &C,
    viewer: &Viewer,
    limit: usize,
) -> Result<Vec<Versioned<Maintenance>>, ProjectionError> {
    let (everyone, tenant) = viewer.filter();
    let statuses = MaintenanceState::Upcoming.statuses();
    let statement = client
        .prepare_cached(concat!(
            "SELECT id, version, state, ",
            timeline_sql!("maintenance"),
            " AS timeline FROM rm_maintenances r \
              WHERE ($1 OR public OR $2 = ANY(tenants)) AND status = ANY($3) \
              ORDER BY starts_at, id LIMIT $4",
        ))
        .await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(&statement, &[&everyone, &tenant, &statuses, &limit])
        .await?;
    visible_rows(&rows, viewer)
}

/// The sort key of a service in lists: its group (none first), its name, its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSortKey {
    pub group: String,
    pub name: String,
    pub id: Uuid,
}

impl ServiceSortKey {
    pub fn of(service: &Versioned<Service>) -> Self {
        ServiceSortKey {
            group: service.state.group.clone().unwrap_or_default(),
            name: service.state.name.clone(),
            id: service.id,
        }
    }
}

/// The services that are not retired, by group and name, after `after`.
pub async fn services_page<C: GenericClient>(
    client: &C,
    viewer: &Viewer,
    after: Option<&ServiceSortKey>,
    limit: usize,
) -> Result<Page<ServiceView>, ProjectionError> {
    let (everyone, tenant) = viewer.filter();
    let statement = client
        .prepare_cached(&format!(
            "SELECT s.id, s.version, s.state, {DERIVED_STATUS} FROM rm_services s \
              WHERE NOT s.retired \
                AND ($3::text IS NULL \
                     OR (coalesce(s.group_name, ''), s.name, s.id) > ($3, $4::text, $5::uuid)) \
              ORDER BY coalesce(s.group_name, ''), s.name, s.id LIMIT $6"
        ))
        .await?;
    let rows = client
        .query(
            &statement,
            &[
                &everyone,
                &tenant,
                &after.map(|a| a.group.as_str()),
                &after.map(|a| a.name.as_str()),
                &after.map(|a| a.id),
                &fetch_limit(limit),
            ],
        )
        .await?;
    let views = rows.iter().map(service_view).collect::<Result<_, _>>()?;
    Ok(Page::of(views, limit))
}

/// Of `ids`, those naming no live (existing, not retired) service.
pub async fn unknown_services<C: GenericClient>(
    client: &C,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, ProjectionError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let statement = client
        .prepare_cached("SELECT id FROM rm_services WHERE id = ANY($1) AND NOT retired")
        .await?;
    let rows = client
        .query(&statement, &[&padded_for_a_generic_plan(ids).as_ref()])
        .await?;
    let live: Vec<Uuid> = rows
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    Ok(ids
        .iter()
        .filter(|id| !live.contains(id))
        .copied()
        .collect())
}

/// API keys by name, after `after` (a name and id), only those of `tenant` when given.
pub async fn api_keys_page<C: GenericClient>(
    client: &C,
    tenant: Option<&str>,
    after: Option<(&str, Uuid)>,
    limit: usize,
) -> Result<Page<Versioned<ApiKey>>, ProjectionError> {
    let (after_name, after_id) = after.unzip();
    let statement = client
        .prepare_cached(
            "SELECT id, version, state FROM rm_api_keys \
              WHERE ($1::text IS NULL OR tenant = $1) \
                AND ($2::text IS NULL OR (state->>'name', id) > ($2, $3::uuid)) \
              ORDER BY state->>'name', id LIMIT $4",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[&tenant, &after_name, &after_id, &fetch_limit(limit)],
        )
        .await?;
    let keys = rows.iter().map(versioned).collect::<Result<_, _>>()?;
    Ok(Page::of(keys, limit))
}

/// An API key by id, revoked or not.
pub async fn api_key<C: GenericClient>(
    client: &C,
    id: Uuid,
) -> Result<Option<Versioned<ApiKey>>, ProjectionError> {
    let statement = client
        .prepare_cached("SELECT id, version, state FROM rm_api_keys WHERE id = $1")
        .await?;
    let row = client.query_opt(&statement, &[&id]).await?;
    row.as_ref().map(versioned).transpose()
}

/// The active webhooks that key `key_id` registered.
pub async fn active_webhooks_registered_by<C: GenericClient>(
    client: &C,
    key_id: Uuid,
) -> Result<Vec<Uuid>, ProjectionError> {
    let statement = client
        .prepare_cached(
            "SELECT id FROM rm_webhooks WHERE active AND state->>'created_by' = $1 ORDER BY id",
        )
        .await?;
    let rows = client.query(&statement, &[&key_id.to_string()]).await?;
    rows.iter()
        .map(|row| row.try_get(0).map_err(ProjectionError::from))
        .collect()
}

/// The tenant of each of these keys that exists (`None`: bound to no tenant).
pub async fn key_tenants<C: GenericClient>(
    client: &C,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Option<String>>, ProjectionError> {
    let statement = client
        .prepare_cached("SELECT id, tenant FROM rm_api_keys WHERE id = ANY($1)")
        .await?;
    let mut tenants = HashMap::with_capacity(ids.len());
    let padded = padded_for_a_generic_plan(ids);
    for row in client.query(&statement, &[&padded.as_ref()]).await? {
        tenants.insert(row.try_get("id")?, row.try_get("tenant")?);
    }
    Ok(tenants)
}

/// Webhooks, newest first, after the `(created_at, id)` of the previous page; only those of
/// `tenant` when the caller is bound to one.
pub async fn webhooks_page<C: GenericClient>(
    client: &C,
    tenant: Option<&str>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: usize,
) -> Result<Page<Versioned<Webhook>>, ProjectionError> {
    let (after_created, after_id) = after.unzip();
    let statement = client
        .prepare_cached(
            "SELECT id, version, state FROM rm_webhooks \
              WHERE ($1::text IS NULL OR tenant = $1) \
                AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid)) \
              ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[&tenant, &after_created, &after_id, &fetch_limit(limit)],
        )
        .await?;
    let webhooks = rows.iter().map(versioned).collect::<Result<_, _>>()?;
    Ok(Page::of(webhooks, limit))
}

/// Subscribers, newest first, after the `(created_at, id)` of the previous page; only
/// those of `tenant` when the caller is bound to one, only those in `state` when given.
pub async fn subscribers_page<C: GenericClient>(
    client: &C,
    tenant: Option<&str>,
    state: Option<domain::subscriber::SubscriberState>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: usize,
) -> Result<Page<Versioned<domain::subscriber::Subscriber>>, ProjectionError> {
    let (after_created, after_id) = after.unzip();
    let status = state.map(|s| s.as_str());
    let statement = client
        .prepare_cached(
            "SELECT id, version, state FROM rm_subscribers \
              WHERE ($1::text IS NULL OR tenant = $1) \
                AND ($2::text IS NULL OR status = $2) \
                AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid)) \
              ORDER BY created_at DESC, id DESC LIMIT $5",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[
                &tenant,
                &status,
                &after_created,
                &after_id,
                &fetch_limit(limit),
            ],
        )
        .await?;
    let subscribers = rows.iter().map(versioned).collect::<Result<_, _>>()?;
    Ok(Page::of(subscribers, limit))
}

/// How many subscribers are in each state (of `tenant` when the caller is bound to one).
pub async fn subscriber_counts<C: GenericClient>(
    client: &C,
    tenant: Option<&str>,
) -> Result<Vec<(String, i64)>, ProjectionError> {
    let statement = client
        .prepare_cached(
            "SELECT status, count(*) FROM rm_subscribers \
              WHERE ($1::text IS NULL OR tenant = $1) GROUP BY status",
        )
        .await?;
    let rows = client.query(&statement, &[&tenant]).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

/// A subscriber by id, whatever its state.
pub async fn subscriber<C: GenericClient>(
    client: &C,
    id: Uuid,
) -> Result<Option<Versioned<domain::subscriber::Subscriber>>, ProjectionError> {
    let statement = client
        .prepare_cached("SELECT id, version, state FROM rm_subscribers WHERE id = $1")
        .await?;
    let row = client.query_opt(&statement, &[&id]).await?;
    row.as_ref().map(versioned).transpose()
}

/// A webhook by id, whatever its status.
pub async fn webhook<C: GenericClient>(
    client: &C,
    id: Uuid,
) -> Result<Option<Versioned<Webhook>>, ProjectionError> {
    let statement = client
        .prepare_cached("SELECT id, version, state FROM rm_webhooks WHERE id = $1")
        .await?;
    let row = client.query_opt(&statement, &[&id]).await?;
    row.as_ref().map(versioned).transpose()
}

/// One update of an incident or a maintenance, as the feeds show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentUpdate {
    /// `incident` or `maintenance`.
    pub resource_kind: String,
    pub resource_id: Uuid,
    pub update_id: Uuid,
    /// The resource's title.
    pub title: String,
    /// The status the update set.
    pub status: String,
    /// Its latest text (corrections replace it).
    pub message: String,
    pub created_at: DateTime<Utc>,
    /// What an affected client should do, as the incident now says (none for a
    /// maintenance, or an action of kind `none`).
    pub client_action: Option<String>,
    /// The resource's title, the update's message and the client action in other languages.
    pub title_translations: BTreeMap<Language, String>,
    pub message_translations: BTreeMap<Language, String>,
    pub client_action_translations: BTreeMap<Language, String>,
}

impl RecentUpdate {
    /// Every language it has a text in besides the default one.
    pub fn languages(&self) -> impl Iterator<Item = &Language> {
        (self.title_translations.keys())
            .chain(self.message_translations.keys())
            .chain(self.client_action_translations.keys())
    }

    /// Its texts in `language` where it has them.
    pub fn in_language(mut self, language: &Language) -> RecentUpdate {
        if let Some(title) = self.title_translations.remove(language) {
            self.title = title;
        }
        if let Some(message) = self.message_translations.remove(language) {
            self.message = message;
        }
        if let (Some(action), Some(translated)) = (
            &mut self.client_action,
            self.client_action_translations.remove(language),
        ) {
            *action = translated;
        }
        self
    }
}

/// A stored map of translations: language → text, or language → `{message, …}` (an
/// update's message with its corrections).
fn translations_column(
    row: &tokio_postgres::Row,
    column: &str,
) -> Result<BTreeMap<Language, String>, ProjectionError> {
    let value: Option<Json<serde_json::Value>> = row.try_get(column)?;
    let Some(Json(serde_json::Value::Object(map))) = value else {
        return Ok(BTreeMap::new());
    };
    Ok(map
        .into_iter()
        .filter_map(|(tag, text)| {
            let text = match text {
                serde_json::Value::String(text) => text,
                serde_json::Value::Object(mut o) => match o.remove("message") {
                    Some(serde_json::Value::String(text)) => text,
                    _ => return None,
                },
                _ => return None,
            };
            let language = serde_json::from_value(serde_json::Value::String(tag)).ok()?;
            Some((language, text))
        })
        .collect())
}

/// The newest updates of incidents and maintenances the viewer may see, newest first.
pub async fn recent_updates<C: GenericClient>(
    client: &C,
    viewer: &Viewer,
    limit: usize,
) -> Result<Vec<RecentUpdate>, ProjectionError> {
    let (everyone, tenant) = viewer.filter();
    let statement = client
        .prepare_cached(
            "SELECT u.resource_kind, u.resource_id, u.update_id, u.title, u.status, u.message, \
                    u.created_at, \
                    CASE WHEN i.state -> 'client_action' ->> 'kind' <> 'none' \
                         THEN i.state -> 'client_action' ->> 'message' END AS client_action, \
                    u.body -> 'translations' AS message_translations, \
                    COALESCE(i.state, m.state) -> 'title_translations' AS title_translations, \
                    i.state -> 'client_action_translations' AS client_action_translations \
               FROM (SELECT * FROM rm_updates WHERE ($1 OR public OR $2 = ANY(tenants)) \
                      ORDER BY created_at DESC, update_id DESC LIMIT $3) u \
               LEFT JOIN rm_incidents i ON u.resource_kind = 'incident' AND i.id = u.resource_id \
               LEFT JOIN rm_maintenances m \
                      ON u.resource_kind = 'maintenance' AND m.id = u.resource_id \
              ORDER BY u.created_at DESC, u.update_id DESC",
        )
        .await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(&statement, &[&everyone, &tenant, &limit])
        .await?;
    rows.iter()
        .map(|row| {
            Ok(RecentUpdate {
                resource_kind: row.try_get("resource_kind")?,
                resource_id: row.try_get("resource_id")?,
                update_id: row.try_get("update_id")?,
                title: row.try_get("title")?,
                status: row.try_get("status")?,
                message: row.try_get("message")?,
                created_at: row.try_get("created_at")?,
                client_action: row
                    .try_get::<_, Option<String>>("client_action")?
                    .filter(|m| !m.trim().is_empty()),
                title_translations: translations_column(row, "title_translations")?,
                message_translations: translations_column(row, "message_translations")?,
                client_action_translations: translations_column(row, "client_action_translations")?,
            })
        })
        .collect()
}

/// The template `id` as a caller of `tenant` may see it: its tenant's, and those of no
/// tenant (an unbound caller sees every one). Deleted ones too (their `deleted_at` says so).
pub async fn template<C: GenericClient>(
    client: &C,
    id: Uuid,
    tenant: Option<&str>,
) -> Result<Option<Versioned<domain::template::Template>>, ProjectionError> {
    let statement = client
        .prepare_cached(
            "SELECT id, version, state FROM rm_templates \
              WHERE id = $1 AND ($2::text IS NULL OR tenant IS NULL OR tenant = $2)",
        )
        .await?;
    let row = client.query_opt(&statement, &[&id, &tenant]).await?;
    row.as_ref().map(versioned).transpose()
}

/// The templates a caller of `tenant` may use, by name (at most `limit`, after `after`).
pub async fn templates_page<C: GenericClient>(
    client: &C,
    tenant: Option<&str>,
    after: Option<(String, Uuid)>,
    limit: usize,
) -> Result<Page<Versioned<domain::template::Template>>, ProjectionError> {
    let (after_name, after_id) = after.unzip();
    let statement = client
        .prepare_cached(
            "SELECT id, version, state FROM rm_templates \
              WHERE NOT deleted AND ($1::text IS NULL OR tenant IS NULL OR tenant = $1) \
                AND ($2::text IS NULL OR (name, id) > ($2, $3::uuid)) \
              ORDER BY name, id LIMIT $4",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[&tenant, &after_name, &after_id, &fetch_limit(limit)],
        )
        .await?;
    let templates = rows.iter().map(versioned).collect::<Result<_, _>>()?;
    Ok(Page::of(templates, limit))
}
