//! `GET /v1/stream`: notices as Server-Sent Events.
//!
//! One follower per process (the [`NoticeHub`]) reads the durable global log from the head
//! it found at start, so a notice published through any process reaches the subscribers of
//! every process, and hands each notice to its subscribers through a bounded broadcast
//! ring. Subscribers never slow the follower or one another: one that falls more than the
//! ring behind is closed, and reconnects with `Last-Event-ID` like any EventSource does.
//!
//! A subscriber that names a position (`Last-Event-ID` or `?after=`) first catches up from
//! the log itself, then joins the ring and catches up once more to the position it joined
//! at, so nothing between the two is missed, and nothing is sent twice (positions only
//! grow). Each message: `id:` the global position, `event:` the CloudEvent type, `data:`
//! the CloudEvent, whose `data` is the incident or maintenance as it stood after that
//! event, as the subscriber may see it, with its services' statuses as the subscriber sees
//! them now (a service notice carries the service as it now stands). A comment every 15 s keeps idle connections open.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use domain::incident::{Incident, IncidentDecider};
use domain::maintenance::{Maintenance, MaintenanceDecider};
use eventstore::{EventStore, LoggedEvent, Subscription, SubscriptionOptions};
use projections::history::{self, AsOf};
use projections::queries::{self, Viewer, GLOBAL_REGION};
use projections::Versioned;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::problem::ApiError;
use crate::views::{IncidentBody, MaintenanceBody, ServiceBody};

/// Notices the ring holds by default: how far behind a subscriber may fall before it is
/// closed.
pub const RING: usize = 1024;
/// A comment this often (by default) keeps proxies and clients from timing an idle stream
/// out.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events read per catch-up query.
const CATCH_UP_BATCH: usize = 500;

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
    pub notice_type: &'static str,
    kind: ResourceKind,
    resource_id: Uuid,
    stream_version: u64,
    event_id: Uuid,
    recorded_at: DateTime<Utc>,
    /// The resource after this event, read once for all subscribers.
    state: tokio::sync::OnceCell<Option<Arc<Resource>>>,
    /// The services an incident affected just before this event (for `service_id`
    /// filters: the update that frees a service concerns it too).
    services_before: tokio::sync::OnceCell<Vec<Uuid>>,
    /// The message for each kind of viewer, rendered once (`None`: it may not see it).
    rendered: Mutex<HashMap<ViewerKey, Option<Bytes>>>,
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

/// What a subscriber asked for.
#[derive(Debug, Clone, Default)]
pub struct StreamFilter {
    pub service_id: Option<Uuid>,
    pub region: Option<String>,
}

fn regions_match(regions: &[String], wanted: &str) -> bool {
    regions.is_empty() || regions.iter().any(|r| r == wanted || r == GLOBAL_REGION)
}

impl Resource {
    fn matches(&self, filter: &StreamFilter) -> bool {
        let service = |ids: Vec<Uuid>| filter.service_id.is_none_or(|wanted| ids.contains(&wanted));
        match self {
            Resource::Incident(i) => {
                service(
                    i.state
                        .affected_services
                        .iter()
                        .map(|a| a.service_id)
                        .collect(),
                ) && filter
                    .region
                    .as_deref()
                    .is_none_or(|r| regions_match(&i.state.regions, r))
            }
            Resource::Maintenance(m) => {
                service(m.state.affected_services.clone())
                    && filter
                        .region
                        .as_deref()
                        .is_none_or(|r| regions_match(&m.state.regions, r))
            }
            Resource::Service(id) => filter.service_id.is_none_or(|wanted| *id == wanted),
        }
    }
}

fn classify(event: &LoggedEvent) -> Option<(ResourceKind, Uuid, &'static str)> {
    let stream = &event.event.stream_id;
    let (kind, id) = if let Some(id) = stream.strip_prefix("incident-") {
        (ResourceKind::Incident, id)
    } else if let Some(id) = stream.strip_prefix("maintenance-") {
        (ResourceKind::Maintenance, id)
    } else if let Some(id) = stream.strip_prefix("service-") {
        (ResourceKind::Service, id)
    } else {
        return None; // administrative history (API keys): never a notice
    };
    let id = Uuid::parse_str(id).ok()?;
    let notice_type = match event.event.event_type.as_str() {
        "incident.declared" => "incident.declared",
        "incident.update_posted" if event.event.data["status"] == "resolved" => "incident.resolved",
        "incident.update_posted" => "incident.updated",
        "incident.update_corrected" => "incident.corrected",
        "incident.reopened" => "incident.reopened",
        "incident.postmortem_published" => "incident.postmortem_published",
        "maintenance.scheduled" => "maintenance.scheduled",
        "maintenance.update_posted" => "maintenance.updated",
        t if t.starts_with("service.") => "service.updated",
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

    /// The resource as it stood right after this event: the read-model row when it is at
    /// that version (the usual case for a live notice), else folded from the log.
    async fn load(&self, store: &EventStore) -> Result<Option<Arc<Resource>>, ApiError> {
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

    async fn load_services_before(&self, store: &EventStore) -> Result<Vec<Uuid>, ApiError> {
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
        filter: &StreamFilter,
    ) -> Result<bool, ApiError> {
        if resource.matches(filter) {
            return Ok(true);
        }
        let Some(wanted) = filter.service_id else {
            return Ok(false);
        };
        let region_only = StreamFilter {
            service_id: None,
            region: filter.region.clone(),
        };
        if self.kind != ResourceKind::Incident || !resource.matches(&region_only) {
            return Ok(false);
        }
        let before = self
            .services_before
            .get_or_try_init(|| self.load_services_before(store))
            .await?;
        Ok(before.contains(&wanted))
    }

    /// The SSE message for `viewer`, or `None` if it may not see this notice or the
    /// subscriber's filter leaves it out.
    pub async fn message_for(
        &self,
        store: &EventStore,
        viewer: &Viewer,
        filter: &StreamFilter,
        source_base: &str,
    ) -> Result<Option<Bytes>, ApiError> {
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
        let key = ViewerKey::from(viewer);
        if let Some(rendered) = self.rendered.lock().ok().and_then(|r| r.get(&key).cloned()) {
            return Ok(rendered);
        }
        let Some(data) = render_data(store, (*resource).clone(), viewer).await? else {
            if let Ok(mut rendered) = self.rendered.lock() {
                rendered.insert(key, None);
            }
            return Ok(None);
        };
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
        let json = serde_json::to_string(&event)
            .map_err(|e| ApiError::Internal(format!("cannot render a notice: {e}")))?;
        let bytes = Bytes::from(format!(
            "id: {}\nevent: {}\ndata: {json}\n\n",
            self.position, self.notice_type
        ));
        if let Ok(mut rendered) = self.rendered.lock() {
            rendered.insert(key, Some(bytes.clone()));
        }
        Ok(Some(bytes))
    }
}

#[derive(Serialize)]
struct CloudEvent {
    specversion: &'static str,
    id: Uuid,
    source: String,
    #[serde(rename = "type")]
    event_type: &'static str,
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
) -> Result<Vec<ServiceBody>, ApiError> {
    let client = store.pool().get().await?;
    let mut services = Vec::new();
    for id in ids {
        if let Some(view) = queries::service(&client, id, viewer).await? {
            services.push(ServiceBody::from(view));
        }
    }
    Ok(services)
}

/// The resource as `viewer` may see it, or `None` when it may not.
async fn render_data(
    store: &EventStore,
    resource: Resource,
    viewer: &Viewer,
) -> Result<Option<serde_json::Value>, ApiError> {
    let encode = |value: Result<serde_json::Value, serde_json::Error>| {
        value.map_err(|e| ApiError::Internal(format!("cannot render a notice: {e}")))
    };
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
                    resource: IncidentBody::from(incident),
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
                    resource: MaintenanceBody::from(maintenance),
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

/// The process's follower of the log and its ring of notices.
pub struct NoticeHub {
    ring: Mutex<HubState>,
    /// Set when the process stops: every stream ends.
    closing: watch::Sender<bool>,
    /// The ids of API keys revoked since start, as the log says: their streams end.
    revocations: broadcast::Sender<Uuid>,
    /// Subscribers reading the log to catch up at once (each holds a connection per read).
    catching_up: Arc<tokio::sync::Semaphore>,
    heartbeat: Duration,
    /// The public base URL: CloudEvents `source` is under it.
    source_base: String,
}

/// Subscribers of one process that may read the log to catch up at the same time.
const CATCH_UPS_AT_ONCE: usize = 4;

struct HubState {
    /// The last position the follower has handed on; `None` until it has started.
    published: Option<u64>,
    sender: broadcast::Sender<Arc<Notice>>,
}

impl Default for NoticeHub {
    fn default() -> Self {
        NoticeHub::new(RING, HEARTBEAT, "http://127.0.0.1:8080")
    }
}

impl NoticeHub {
    /// A hub whose ring holds `ring` notices, its streams sending a comment every
    /// `heartbeat`.
    pub fn new(ring: usize, heartbeat: Duration, source_base: &str) -> NoticeHub {
        let (sender, _) = broadcast::channel(ring.max(1));
        let (revocations, _) = broadcast::channel(256);
        NoticeHub {
            ring: Mutex::new(HubState {
                published: None,
                sender,
            }),
            closing: watch::Sender::new(false),
            revocations,
            catching_up: Arc::new(tokio::sync::Semaphore::new(CATCH_UPS_AT_ONCE)),
            heartbeat,
            source_base: source_base.trim_end_matches('/').to_owned(),
        }
    }

    /// Joins the ring: every notice after the returned position arrives on the receiver.
    /// `None` until the follower has started.
    fn join(&self) -> Option<(broadcast::Receiver<Arc<Notice>>, u64)> {
        let state = self.ring.lock().ok()?;
        let published = state.published?;
        Some((state.sender.subscribe(), published))
    }

    fn publish(&self, position: u64, notice: Option<Notice>) {
        if let Ok(mut state) = self.ring.lock() {
            if let Some(notice) = notice {
                // No receivers is not an error: nobody is listening.
                let _ = state.sender.send(Arc::new(notice));
            }
            state.published = Some(position);
        }
    }

    /// Ends every stream (the process is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Follows the log from its head at start until `shutdown`; retries while the
    /// database is away.
    pub async fn follow(self: Arc<Self>, store: EventStore, mut shutdown: watch::Receiver<bool>) {
        let start = loop {
            match store.log_head().await {
                Ok(head) => break head.map_or(0, |(position, _)| position),
                Err(e) => {
                    tracing::warn!(error = %e, "the notice stream waits for the database");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        self.publish(start, None);
        let options = SubscriptionOptions {
            batch_size: CATCH_UP_BATCH,
        };
        let mut log = Subscription::from_position(&store, start, options);
        loop {
            let batch = tokio::select! {
                batch = log.next_batch() => batch,
                _ = shutdown.changed() => return,
            };
            let events = match batch {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "the notice stream could not read the log");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for event in &events {
                if event.event.event_type == "api_key.revoked" {
                    if let Some(id) = event
                        .event
                        .stream_id
                        .strip_prefix("api_key-")
                        .and_then(|id| Uuid::parse_str(id).ok())
                    {
                        let _ = self.revocations.send(id);
                    }
                }
                let notice = Notice::of(event);
                let listened = self
                    .ring
                    .lock()
                    .is_ok_and(|state| state.sender.receiver_count() > 0);
                // Nobody listening on this process: no reading or rendering on the write
                // path's database for nothing (a catch-up renders what it needs).
                if let Some(notice) = notice.as_ref().filter(|_| listened) {
                    // Read the resource and render the public message once here, so that
                    // most subscribers only copy bytes and none falls behind waiting for
                    // the database. A failure is retried by whichever subscriber needs it.
                    let everyone = StreamFilter::default();
                    if let Err(e) = notice
                        .message_for(&store, &Viewer::Public, &everyone, &self.source_base)
                        .await
                    {
                        tracing::warn!(error = %e, position = event.position, "could not prepare a notice");
                    }
                }
                self.publish(event.position, notice);
            }
        }
    }
}

/// The key a stream was opened with, so that revoking it ends the stream.
pub struct StreamKey {
    pub id: Uuid,
}

/// One subscriber's stream of SSE bytes.
pub struct Subscriber {
    store: EventStore,
    hub: Arc<NoticeHub>,
    viewer: Viewer,
    filter: StreamFilter,
    key: Option<Uuid>,
    revocations: broadcast::Receiver<Uuid>,
    /// The last position handled (delivered or left out).
    last: u64,
    /// `None` while catching up from the log.
    ring: Option<broadcast::Receiver<Arc<Notice>>>,
    /// Where the catch-up must reach before the ring takes over.
    catch_up_to: Option<u64>,
    ready: VecDeque<Bytes>,
    heartbeat: tokio::time::Interval,
    last_sent: tokio::time::Instant,
    closing: watch::Receiver<bool>,
    done: bool,
}

/// Ends a stream with a comment, and an `id:` line so that EventSource clients (which
/// ignore comments) resume after `last` when they reconnect.
fn farewell(last: u64, why: &str) -> Bytes {
    Bytes::from(format!(
        "id: {last}\n: {why}; reconnect to resume after {last}\n\n"
    ))
}

impl Subscriber {
    /// A stream starting after `after`, or with the next notice when `None`. `None` if
    /// the hub has not started yet or the process is stopping.
    pub fn new(
        store: EventStore,
        hub: Arc<NoticeHub>,
        viewer: Viewer,
        filter: StreamFilter,
        key: Option<StreamKey>,
        after: Option<u64>,
    ) -> Option<Subscriber> {
        if hub.is_closing() {
            return None;
        }
        let mut heartbeat = tokio::time::interval(hub.heartbeat);
        heartbeat.reset(); // the first tick after a period, not at once
        let closing = hub.closing.subscribe();
        let revocations = hub.revocations.subscribe();
        let (ring, last) = match after {
            None => {
                let (ring, published) = hub.join()?;
                (Some(ring), published)
            }
            Some(after) => {
                hub.join()?;
                (None, after)
            }
        };
        Some(Subscriber {
            store,
            viewer,
            filter,
            key: key.map(|k| k.id),
            revocations,
            last,
            ring,
            catch_up_to: None,
            // The `id:` makes a client that hears no notice before it reconnects resume
            // from here rather than from "now".
            ready: VecDeque::from([Bytes::from(format!(
                "retry: 2000\nid: {last}\n: connected\n\n"
            ))]),
            heartbeat,
            last_sent: tokio::time::Instant::now(),
            closing,
            done: false,
            hub,
        })
    }

    /// Has this stream's key been revoked?
    fn revoked(&mut self) -> bool {
        let Some(key) = self.key else {
            return false;
        };
        loop {
            match self.revocations.try_recv() {
                Ok(id) if id == key => return true,
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Empty) => return false,
                // Missed some: assume the worst; the client reconnects and authenticates.
                Err(broadcast::error::TryRecvError::Lagged(_)) => return true,
                Err(broadcast::error::TryRecvError::Closed) => return false,
            }
        }
    }

    /// Reads the next events of the log after `last` and queues their messages; joins the
    /// ring once caught up.
    async fn catch_up(&mut self) -> Result<(), ApiError> {
        let turn = self
            .hub
            .catching_up
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Unavailable("the process is stopping".into()))?;
        let events = self.store.read_log(self.last, CATCH_UP_BATCH).await?;
        let caught_up = events.len() < CATCH_UP_BATCH;
        for event in &events {
            if self.catch_up_to.is_some_and(|to| event.position > to) {
                break;
            }
            if let Some(notice) = Notice::of(event) {
                if let Some(message) = notice
                    .message_for(
                        &self.store,
                        &self.viewer,
                        &self.filter,
                        &self.hub.source_base,
                    )
                    .await?
                {
                    self.ready.push_back(message);
                }
            }
            self.last = event.position;
        }
        drop(turn);
        match self.catch_up_to {
            // Joined the ring already: the log up to the join point is done.
            Some(to) if self.last >= to || caught_up => self.catch_up_to = None,
            Some(_) => {}
            None if caught_up => {
                // Join the ring, then fetch what was sealed between this read and the join.
                if let Some((ring, published)) = self.hub.join() {
                    self.ring = Some(ring);
                    if published > self.last {
                        self.catch_up_to = Some(published);
                    }
                }
            }
            None => {}
        }
        // A long catch-up through notices this subscriber does not see still says it is
        // alive, and how far it got.
        if self.ready.is_empty() && self.last_sent.elapsed() >= self.hub.heartbeat {
            self.ready
                .push_back(Bytes::from(format!("id: {}\n: catching up\n\n", self.last)));
        }
        Ok(())
    }

    /// The next bytes to send, or `None` when the stream ends.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        let chunk = self.produce().await;
        if chunk.is_some() {
            self.last_sent = tokio::time::Instant::now();
        }
        chunk
    }

    async fn produce(&mut self) -> Option<Bytes> {
        loop {
            if let Some(bytes) = self.ready.pop_front() {
                return Some(bytes);
            }
            if self.done {
                return None;
            }
            if self.hub.is_closing() {
                self.done = true;
                return Some(farewell(self.last, "the server is stopping"));
            }
            if self.revoked() {
                self.done = true;
                return Some(farewell(self.last, "the key of this stream was revoked"));
            }
            if self.ring.is_none() || self.catch_up_to.is_some() {
                if let Err(e) = self.catch_up().await {
                    tracing::warn!(error = %e, "a stream could not catch up; closing it");
                    self.done = true;
                    return Some(farewell(self.last, "the history is unavailable"));
                }
                continue;
            }
            let Some(ring) = self.ring.as_mut() else {
                continue;
            };
            tokio::select! {
                received = ring.recv() => match received {
                    Ok(notice) if notice.position <= self.last => {}
                    Ok(notice) => {
                        match notice
                            .message_for(&self.store, &self.viewer, &self.filter, &self.hub.source_base)
                            .await
                        {
                            Ok(Some(message)) => self.ready.push_back(message),
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "a notice could not be rendered; closing the stream");
                                self.done = true;
                                // Resuming before this notice gets it then.
                                return Some(farewell(self.last, "the history is unavailable"));
                            }
                        }
                        self.last = notice.position;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too far behind: close, and let the client resume from the log.
                        self.done = true;
                        return Some(farewell(self.last, "too far behind"));
                    }
                    Err(broadcast::error::RecvError::Closed) => self.done = true,
                },
                _ = self.heartbeat.tick() => {
                    return Some(Bytes::from(format!("id: {}\n: heartbeat\n\n", self.last)));
                }
                _ = self.closing.changed() => {}
                revoked = self.revocations.recv(), if self.key.is_some() => {
                    let ends = match revoked {
                        Ok(id) => Some(id) == self.key,
                        Err(broadcast::error::RecvError::Lagged(_)) => true,
                        Err(broadcast::error::RecvError::Closed) => false,
                    };
                    if ends {
                        self.done = true;
                        return Some(farewell(self.last, "the key of this stream was revoked"));
                    }
                }
            }
        }
    }
}
