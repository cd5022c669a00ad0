//! Realistic, deterministic histories for tests and benchmarks: services, incidents with
//! updates, corrections, resolutions, reopenings and postmortems, private (tenant) notices,
//! and maintenances moving through their statuses.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a panic is a failed test

use chrono::{DateTime, Duration, TimeZone, Utc};
use domain::api_key::{self, ApiKeyDecider, Role};
use domain::incident::{self, IncidentDecider};
use domain::language::{Language, RawTranslations};
use domain::maintenance::{self, MaintenanceDecider, MaintenanceStatus};
use domain::service::{self, ServiceDecider};
use domain::values::{
    AffectedService, Audience, ClientAction, ClientActionKind, Impact, IncidentStatus,
    ServiceStatus,
};
use eventstore::{EventStore, ExpectedVersion, Metadata, NewEvent};
use uuid::Uuid;

use crate::{Kind, Publisher, READ_MODEL_TABLES};

/// How much history to make.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub services: usize,
    pub incidents: usize,
    /// Updates after the declaration, per incident.
    pub updates_per_incident: usize,
    pub maintenances: usize,
}

/// The commands of one resource, in order.
pub enum Script {
    ApiKey(Uuid, Vec<api_key::Command>),
    Service(Uuid, Vec<service::Command>),
    Incident(Uuid, Vec<incident::Command>),
    Maintenance(Uuid, Vec<maintenance::Command>),
}

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 8, 0, 0)
        .single()
        .unwrap_or_default()
}

fn id(kind: u128, n: usize) -> Uuid {
    Uuid::from_u128((kind << 64) | n as u128)
}

/// The same commands for the same shape, every time.
pub fn scripts(shape: Shape) -> Vec<Script> {
    let services: Vec<Uuid> = (0..shape.services.max(1)).map(|n| id(1, n)).collect();
    let mut scripts = key_scripts();
    for (n, service_id) in services.iter().enumerate() {
        let at = base_time() + Duration::seconds(n as i64);
        let mut commands = vec![service::Command::Create(service::Create {
            service_id: *service_id,
            name: format!("Service {n}"),
            description: format!("The service numbered {n}."),
            group: Some(format!("group {}", n % 3)),
            author: "admin-key".into(),
            at,
        })];
        if n % 4 == 1 {
            commands.push(service::Command::Change(service::Change {
                name: Some(format!("Service {n} (renamed)")),
                description: None,
                group: Some(None),
                author: "admin-key".into(),
                at: at + Duration::minutes(1),
            }));
        }
        scripts.push(Script::Service(*service_id, commands));
    }
    for n in 0..shape.incidents {
        scripts.push(Script::Incident(
            id(2, n),
            incident_script(n, &services, shape),
        ));
    }
    for n in 0..shape.maintenances {
        scripts.push(Script::Maintenance(
            id(3, n),
            maintenance_script(n, &services),
        ));
    }
    scripts
}

/// The declaration of incident `incident_id` as a test needs one: major, investigating,
/// in the default language, with no region and no client action.
pub fn declaration(
    incident_id: Uuid,
    affected_services: Vec<AffectedService>,
    audience: Audience,
    at: DateTime<Utc>,
) -> incident::Command {
    incident::Command::Declare(incident::Declare {
        incident_id,
        update_id: Uuid::new_v4(),
        title: "Users cannot sign in".into(),
        impact: Impact::Major,
        status: None,
        message: "We are investigating.".into(),
        affected_services,
        regions: Vec::new(),
        audience,
        client_action: ClientAction::default(),
        translations: Default::default(),
        default_language: Language::english(),
        author: "publisher".into(),
        at,
    })
}

/// An update of an incident as a test needs one: `status` and `message` in the default
/// language, changing nothing else.
pub fn update(status: IncidentStatus, message: &str, at: DateTime<Utc>) -> incident::Command {
    incident::Command::PostUpdate(incident::PostUpdate {
        update_id: Uuid::new_v4(),
        status,
        message: message.into(),
        impact: None,
        affected_services: None,
        client_action: None,
        translations: Default::default(),
        default_language: Language::english(),
        author: "publisher".into(),
        at,
    })
}

/// An admin key, a publisher bound to a tenant, and a reader key that was revoked.
fn key_scripts() -> Vec<Script> {
    let roles = [
        (Role::Admin, None, false),
        (Role::Publisher, Some("tenant-1"), false),
        (Role::Reader, Some("tenant-2"), true),
    ];
    roles
        .into_iter()
        .enumerate()
        .map(|(n, (role, tenant, revoked))| {
            let at = base_time() - Duration::days(1) + Duration::minutes(n as i64);
            let mut commands = vec![api_key::Command::Create(api_key::Create {
                key_id: id(6, n),
                name: format!("{} key", role.as_str()),
                role,
                tenant: tenant.map(str::to_owned),
                author: "bootstrap".into(),
                at,
            })];
            if revoked {
                commands.push(api_key::Command::Revoke(api_key::Revoke {
                    author: "admin-key".into(),
                    at: at + Duration::hours(1),
                }));
            }
            Script::ApiKey(id(6, n), commands)
        })
        .collect()
}

fn audience(n: usize) -> Audience {
    if n % 5 == 0 {
        Audience::Tenants {
            tenants: vec![format!("tenant-{}", n % 3)],
        }
    } else {
        Audience::Public
    }
}

fn incident_script(n: usize, services: &[Uuid], shape: Shape) -> Vec<incident::Command> {
    let start = base_time() + Duration::minutes(n as i64);
    let statuses = [
        ServiceStatus::DegradedPerformance,
        ServiceStatus::PartialOutage,
        ServiceStatus::MajorOutage,
    ];
    let mut affected = vec![AffectedService {
        service_id: services[n % services.len()],
        status: statuses[n % 3],
    }];
    if n % 2 == 1 && services.len() > 1 {
        affected.push(AffectedService {
            service_id: services[(n + 1) % services.len()],
            status: statuses[(n + 1) % 3],
        });
    }
    let update_id = |k: usize| id(4, n * 1000 + k);
    let mut commands = vec![incident::Command::Declare(incident::Declare {
        incident_id: id(2, n),
        update_id: update_id(0),
        title: format!(
            "Users cannot sign in to service {} ({n})",
            n % services.len()
        ),
        impact: [Impact::Minor, Impact::Major, Impact::Critical, Impact::None][n % 4],
        status: None,
        message: "We are investigating reports of sign-in failures.".into(),
        affected_services: affected,
        regions: vec![["europe", "asia", "global"][n % 3].to_owned()],
        audience: audience(n),
        client_action: ClientAction::default(),
        translations: welsh(n, |cy| incident::DeclarationTexts {
            title: Some(format!("Ni all defnyddwyr fewngofnodi ({n})")),
            message: Some(cy.into()),
            client_action: None,
        }),
        default_language: Language::english(),
        author: "publisher-key".into(),
        at: start,
    })];
    // Most incidents end resolved; every third stays open.
    let resolves = n % 3 != 0;
    let updates = shape.updates_per_incident;
    for k in 1..=updates {
        let last = k == updates;
        let status = if last && resolves {
            IncidentStatus::Resolved
        } else {
            [IncidentStatus::Identified, IncidentStatus::Monitoring][k % 2]
        };
        commands.push(incident::Command::PostUpdate(incident::PostUpdate {
            update_id: update_id(k),
            status,
            message: if status == IncidentStatus::Resolved {
                "If a user is still experiencing impact, they need to restart their clients to recover.".into()
            } else {
                format!("Update {k}: we have identified the cause and are applying a fix.")
            },
            impact: (k == 1).then_some(Impact::Major),
            affected_services: None,
            client_action: (status == IncidentStatus::Resolved).then(|| ClientAction {
                kind: ClientActionKind::RestartClient,
                message: "Restart the app to recover.".into(),
            }),
            translations: welsh(n, |cy| incident::UpdateTexts {
                message: Some(cy.into()),
                client_action: (status == IncidentStatus::Resolved).then(|| {
                    incident::ActionText {
                        message: "Ailgychwynnwch yr ap i adfer.".into(),
                    }
                }),
            }),
            default_language: Language::english(),
            author: "publisher-key".into(),
            at: start + Duration::seconds(10 * k as i64),
        }));
        if k == 1 && n % 4 == 0 {
            commands.push(incident::Command::Correct(incident::Correct {
                update_id: update_id(0),
                language: None,
                default_language: Language::english(),
                message: "We are investigating reports of sign-in failures in Europe.".into(),
                reason: "The first update did not say where.".into(),
                author: "publisher-key".into(),
                at: start + Duration::seconds(10 * k as i64 + 1),
            }));
        }
    }
    let end = start + Duration::seconds(10 * (updates as i64 + 1));
    if resolves && updates > 0 && n % 7 == 1 {
        commands.push(incident::Command::Reopen(incident::Reopen {
            update_id: update_id(updates + 1),
            message: "Sign-in failures have returned for some users.".into(),
            translations: welsh(n, |cy| incident::MessageText { message: cy.into() }),
            default_language: Language::english(),
            author: "publisher-key".into(),
            at: end,
        }));
    } else if resolves && updates > 0 && n % 2 == 0 {
        commands.push(incident::Command::PublishPostmortem(
            incident::PublishPostmortem {
                body:
                    "A configuration change removed a certificate; we now check before deploying."
                        .into(),
                translations: welsh(n, |cy| incident::BodyText { body: cy.into() }),
                default_language: Language::english(),
                author: "publisher-key".into(),
                at: end,
            },
        ));
    }
    commands
}

/// Every fifth resource of a script is published in Welsh too.
fn welsh<T>(n: usize, texts: impl Fn(&str) -> T) -> RawTranslations<T> {
    let mut translations = RawTranslations::new();
    if n % 5 == 2 {
        translations.insert("cy".to_owned(), texts("Testun Cymraeg."));
    }
    translations
}

fn maintenance_script(n: usize, services: &[Uuid]) -> Vec<maintenance::Command> {
    let at = base_time() + Duration::minutes(n as i64);
    let mut commands = vec![maintenance::Command::Schedule(maintenance::Schedule {
        maintenance_id: id(3, n),
        update_id: id(5, n * 10),
        title: format!("Database upgrade {n}"),
        message: "Mail may be delayed for up to ten minutes.".into(),
        affected_services: vec![services[n % services.len()]],
        regions: vec!["europe".into()],
        starts_at: at + Duration::hours(1),
        ends_at: at + Duration::hours(2),
        audience: audience(n + 1),
        translations: welsh(n, |cy| maintenance::ScheduleTexts {
            title: None,
            message: Some(cy.into()),
        }),
        default_language: Language::english(),
        auto_start: false,
        auto_complete: false,
        remind_before_minutes: 0,
        author: "publisher-key".into(),
        at,
    })];
    let path: &[MaintenanceStatus] = match n % 4 {
        0 => &[],
        1 => &[MaintenanceStatus::InProgress],
        2 => &[
            MaintenanceStatus::InProgress,
            MaintenanceStatus::Verifying,
            MaintenanceStatus::Completed,
        ],
        _ => &[MaintenanceStatus::Cancelled],
    };
    for (k, status) in path.iter().enumerate() {
        commands.push(maintenance::Command::PostUpdate(maintenance::PostUpdate {
            update_id: id(5, n * 10 + k + 1),
            status: *status,
            message: format!("The work is {}.", status.as_str().replace('_', " ")),
            translations: welsh(n, |cy| incident::MessageText { message: cy.into() }),
            default_language: Language::english(),
            author: "publisher-key".into(),
            at: at + Duration::hours(1) + Duration::minutes(k as i64 * 10),
        }));
    }
    commands
}

/// Runs every script through the publisher (inline read models), one command at a time.
pub async fn publish(publisher: &Publisher, shape: Shape) {
    for script in scripts(shape) {
        match script {
            Script::ApiKey(id, commands) => run::<ApiKeyDecider>(publisher, id, &commands).await,
            Script::Service(id, commands) => run::<ServiceDecider>(publisher, id, &commands).await,
            Script::Incident(id, commands) => {
                run::<IncidentDecider>(publisher, id, &commands).await
            }
            Script::Maintenance(id, commands) => {
                run::<MaintenanceDecider>(publisher, id, &commands).await
            }
        }
    }
}

async fn run<K: Kind>(publisher: &Publisher, id: Uuid, commands: &[K::Command]) {
    for command in commands {
        publisher
            .execute::<K>(id, command, None, &Metadata::by("test"))
            .await
            .unwrap_or_else(|e| panic!("{} {id}: {e}", K::NAME));
    }
}

/// Decides every script in memory and appends each resource's events in one append,
/// without touching the read models: the fast way to make a large history, which the
/// builder then folds.
pub async fn append_directly(store: &EventStore, shape: Shape) {
    for script in scripts(shape) {
        match script {
            Script::ApiKey(id, commands) => append::<ApiKeyDecider>(store, id, &commands).await,
            Script::Service(id, commands) => append::<ServiceDecider>(store, id, &commands).await,
            Script::Incident(id, commands) => append::<IncidentDecider>(store, id, &commands).await,
            Script::Maintenance(id, commands) => {
                append::<MaintenanceDecider>(store, id, &commands).await
            }
        }
    }
}

async fn append<K: Kind>(store: &EventStore, id: Uuid, commands: &[K::Command]) {
    let mut state = K::State::default();
    let mut events = Vec::new();
    for command in commands {
        let decided = K::decide(command, &state).unwrap_or_else(|e| panic!("{}: {e}", K::NAME));
        for event in decided {
            state = K::evolve(state, &event);
            let (type_name, version, data) = K::encode(&event).unwrap_or_else(|e| panic!("{e}"));
            let mut new_event = NewEvent::new(type_name, data, Metadata::by("test"));
            new_event.schema_version = version;
            events.push(new_event);
        }
    }
    store
        .append(&K::stream_id(id), ExpectedVersion::NoStream, &events)
        .await
        .unwrap_or_else(|e| panic!("append {} {id}: {e}", K::NAME));
}

/// Seals every event appended so far and folds the log into the read models, as a server's
/// builder would: what most tests do before they compare read models.
pub async fn seal_and_build(store: &EventStore) {
    store
        .seal_all(std::time::Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("seal: {e}"));
    crate::Builder::new(store, crate::BuilderOptions::default())
        .catch_up()
        .await
        .unwrap_or_else(|e| panic!("build: {e}"));
}

/// [`append_directly`], then [`seal_and_build`]: a history of `shape` with its read models.
pub async fn append_and_build(store: &EventStore, shape: Shape) {
    append_directly(store, shape).await;
    seal_and_build(store).await;
}

/// Every read-model table's rows as text, in order: equal snapshots mean equal read models.
pub async fn read_model_snapshot(
    store: &EventStore,
) -> std::collections::BTreeMap<&'static str, Vec<String>> {
    let client = store
        .pool()
        .get()
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let mut tables = std::collections::BTreeMap::new();
    for table in READ_MODEL_TABLES {
        let rows = client
            .query(&format!("SELECT t::text FROM {table} t ORDER BY 1"), &[])
            .await
            .unwrap_or_else(|e| panic!("read {table}: {e}"));
        tables.insert(table, rows.iter().map(|r| r.get::<_, String>(0)).collect());
    }
    tables
}
