//! Read models on a real PostgreSQL: read-your-writes, derived service status under
//! concurrency, tenancy, the builder, replay and time travel.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use domain::incident::{self, IncidentDecider};
use domain::maintenance::{self, MaintenanceDecider, MaintenanceStatus};
use domain::service::{self, ServiceDecider};
use domain::values::{
    AffectedService, Audience, ClientAction, Impact, IncidentStatus, ServiceStatus,
};
use domain::{Decider, DomainError};
use eventstore::testing::{TestDatabase, UNDO_V9_SQL};
use eventstore::{EventStore, Metadata};
use projections::history::{self, AsOf};
use projections::queries::{self, Viewer};
use projections::testing::{self, Shape};
use projections::{
    Builder, BuilderOptions, CommandError, Kind, ProjectionError, Publisher, ReplayOptions,
    READ_MODEL_TABLES,
};
use uuid::Uuid;

/// A small history of every kind, for tests that need some rows.
const SMALL: Shape = Shape {
    services: 3,
    incidents: 20,
    updates_per_incident: 3,
    maintenances: 2,
};

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 9, minute, 0).unwrap()
}

fn by() -> Metadata {
    Metadata::by("publisher-key")
}

async fn create_service(publisher: &Publisher, name: &str) -> Uuid {
    let id = Uuid::new_v4();
    let command = service::Command::Create(service::Create {
        service_id: id,
        name: name.into(),
        description: String::new(),
        group: None,
        author: "admin".into(),
        at: at(0),
    });
    publisher
        .execute::<ServiceDecider>(id, &command, None, &by())
        .await
        .unwrap();
    id
}

fn declare(id: Uuid, affected: Vec<AffectedService>, audience: Audience) -> incident::Command {
    incident::Command::Declare(incident::Declare {
        incident_id: id,
        update_id: Uuid::new_v4(),
        title: "Users cannot sign in".into(),
        impact: Impact::Major,
        status: None,
        message: "We are investigating.".into(),
        affected_services: affected,
        regions: vec!["europe".into()],
        audience,
        client_action: ClientAction::default(),
        translations: Default::default(),
        default_language: domain::language::Language::english(),
        author: "publisher".into(),
        at: at(1),
    })
}

fn post(status: IncidentStatus, minute: u32) -> incident::Command {
    incident::Command::PostUpdate(incident::PostUpdate {
        update_id: Uuid::new_v4(),
        status,
        message: format!("Now {}.", status.as_str()),
        impact: None,
        affected_services: None,
        client_action: None,
        translations: Default::default(),
        default_language: domain::language::Language::english(),
        author: "publisher".into(),
        at: at(minute),
    })
}

fn hit(service_id: Uuid, status: ServiceStatus) -> Vec<AffectedService> {
    vec![AffectedService { service_id, status }]
}

async fn status_for(store: &EventStore, service_id: Uuid, viewer: &Viewer) -> ServiceStatus {
    let client = store.pool().get().await.unwrap();
    queries::service(&client, service_id, viewer)
        .await
        .unwrap()
        .unwrap()
        .status
}

async fn snapshot(store: &EventStore) -> BTreeMap<&'static str, Vec<String>> {
    testing::read_model_snapshot(store).await
}

/// The first column of every row `sql` returns, as text.
async fn strings(store: &EventStore, sql: &str) -> Vec<String> {
    let client = store.pool().get().await.unwrap();
    let rows = client.query(sql, &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// Each live read-model table's owner, and each privilege it grants: `table owner`, and
/// `table grantee privilege`.
async fn owners_and_privileges(store: &EventStore) -> Vec<String> {
    strings(
        store,
        "SELECT c.relname || ' owner ' || pg_get_userbyid(c.relowner) FROM pg_class c \
           JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname LIKE 'rm\\_%' \
         UNION ALL \
         SELECT c.relname || ' ' || CASE WHEN a.grantee = 0 THEN 'PUBLIC' \
                                        ELSE pg_get_userbyid(a.grantee) END \
                || ' ' || a.privilege_type FROM pg_class c \
           JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a \
          WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname LIKE 'rm\\_%' \
         ORDER BY 1",
    )
    .await
}

/// `table.column` of every live read-model column compressed with lz4.
async fn lz4_columns(store: &EventStore) -> Vec<String> {
    strings(
        store,
        "SELECT c.relname || '.' || a.attname FROM pg_attribute a \
           JOIN pg_class c ON c.oid = a.attrelid \
           JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = 'public' AND c.relname LIKE 'rm\\_%' AND a.attcompression = 'l' \
          ORDER BY 1",
    )
    .await
}

async fn index_names(store: &EventStore) -> Vec<String> {
    strings(
        store,
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' \
           AND tablename LIKE 'rm\\_%' ORDER BY 1",
    )
    .await
}

#[tokio::test]
async fn a_write_is_visible_to_the_next_read_on_another_process_at_once() {
    let db = TestDatabase::create().await;
    let (writer, reader) = (db.store(), db.store());
    let publisher = Publisher::new(&writer);
    let service_id = create_service(&publisher, "Teams").await;
    let id = Uuid::new_v4();
    let written = publisher
        .execute::<IncidentDecider>(
            id,
            &declare(
                id,
                hit(service_id, ServiceStatus::MajorOutage),
                Audience::Public,
            ),
            None,
            &by(),
        )
        .await
        .unwrap();
    assert_eq!((written.resource.version, written.events), (1, 1));

    // No sealing, no builder: the read models were written with the events.
    let client = reader.pool().get().await.unwrap();
    let read = queries::incident(&client, id, &Viewer::Public)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, written.resource);
    assert_eq!(
        status_for(&reader, service_id, &Viewer::Public).await,
        ServiceStatus::MajorOutage
    );

    let resolved = publisher
        .execute::<IncidentDecider>(id, &post(IncidentStatus::Resolved, 5), Some(1), &by())
        .await
        .unwrap();
    assert_eq!(resolved.resource.version, 2);
    let read = queries::incident(&client, id, &Viewer::Public)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (read.version, read.state.status),
        (2, IncidentStatus::Resolved)
    );
    assert_eq!(
        status_for(&reader, service_id, &Viewer::Public).await,
        ServiceStatus::Operational
    );
}

#[tokio::test]
async fn concurrent_incidents_on_one_service_give_the_worst_open_status() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let publisher = Publisher::new(&store);
    let service_id = create_service(&publisher, "Exchange Online").await;
    let statuses = [
        ServiceStatus::DegradedPerformance,
        ServiceStatus::PartialOutage,
        ServiceStatus::MajorOutage,
    ];
    // 24 incidents on the same service, declared at once by writers on two pools.
    let second = Publisher::new(&db.store());
    let mut tasks = Vec::new();
    for n in 0..24 {
        let publisher = if n % 2 == 0 {
            publisher.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            let id = Uuid::new_v4();
            let status = statuses[n % 3];
            publisher
                .execute::<IncidentDecider>(
                    id,
                    &declare(id, hit(service_id, status), Audience::Public),
                    None,
                    &by(),
                )
                .await
                .unwrap();
            (id, status)
        }));
    }
    let mut incidents = Vec::new();
    for task in tasks {
        incidents.push(task.await.unwrap());
    }
    assert_eq!(
        status_for(&store, service_id, &Viewer::Public).await,
        ServiceStatus::MajorOutage
    );

    // Resolve every major outage concurrently, plus one partial one: partial remains.
    let mut tasks = Vec::new();
    let mut partial_resolved = false;
    for (id, status) in &incidents {
        let resolve = match status {
            ServiceStatus::MajorOutage => true,
            ServiceStatus::PartialOutage if !partial_resolved => {
                partial_resolved = true;
                true
            }
            _ => false,
        };
        if resolve {
            let (publisher, id) = (publisher.clone(), *id);
            tasks.push(tokio::spawn(async move {
                publisher
                    .execute::<IncidentDecider>(id, &post(IncidentStatus::Resolved, 9), None, &by())
                    .await
                    .unwrap();
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        status_for(&store, service_id, &Viewer::Public).await,
        ServiceStatus::PartialOutage
    );

    // A maintenance in progress shows only once no incident is worse.
    let maintenance_id = Uuid::new_v4();
    let schedule = maintenance::Command::Schedule(maintenance::Schedule {
        maintenance_id,
        update_id: Uuid::new_v4(),
        title: "Database upgrade".into(),
        message: "Mail may be delayed.".into(),
        affected_services: vec![service_id],
        regions: vec![],
        starts_at: at(30),
        ends_at: at(50),
        audience: Audience::Public,
        translations: Default::default(),
        default_language: domain::language::Language::english(),
        auto_start: false,
        auto_complete: false,
        remind_before_minutes: 0,
        author: "publisher".into(),
        at: at(2),
    });
    publisher
        .execute::<MaintenanceDecider>(maintenance_id, &schedule, None, &by())
        .await
        .unwrap();
    let start = maintenance::Command::PostUpdate(maintenance::PostUpdate {
        update_id: Uuid::new_v4(),
        status: MaintenanceStatus::InProgress,
        message: "Started.".into(),
        translations: Default::default(),
        default_language: domain::language::Language::english(),
        author: "publisher".into(),
        at: at(30),
    });
    publisher
        .execute::<MaintenanceDecider>(maintenance_id, &start, None, &by())
        .await
        .unwrap();
    assert_eq!(
        status_for(&store, service_id, &Viewer::Public).await,
        ServiceStatus::PartialOutage
    );
    let open: Vec<Uuid> = {
        let client = store.pool().get().await.unwrap();
        queries::incidents(&client, &Viewer::Public, queries::IncidentState::Open, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect()
    };
    for id in open {
        publisher
            .execute::<IncidentDecider>(id, &post(IncidentStatus::Resolved, 40), None, &by())
            .await
            .unwrap();
    }
    assert_eq!(
        status_for(&store, service_id, &Viewer::Public).await,
        ServiceStatus::UnderMaintenance
    );
}

#[tokio::test]
async fn a_private_notice_and_its_effect_on_status_reach_only_its_tenant() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let publisher = Publisher::new(&store);
    let service_id = create_service(&publisher, "Teams").await;
    let id = Uuid::new_v4();
    let private = Audience::Tenants {
        tenants: vec!["contoso".into()],
    };
    publisher
        .execute::<IncidentDecider>(
            id,
            &declare(id, hit(service_id, ServiceStatus::MajorOutage), private),
            None,
            &by(),
        )
        .await
        .unwrap();
    let client = store.pool().get().await.unwrap();
    for (viewer, sees) in [
        (Viewer::Public, false),
        (Viewer::Tenant("fabrikam".into()), false),
        (Viewer::Tenant("contoso".into()), true),
        (Viewer::Everyone, true),
    ] {
        let found = queries::incident(&client, id, &viewer).await.unwrap();
        assert_eq!(found.is_some(), sees, "{viewer:?}");
        let listed = queries::incidents(&client, &viewer, queries::IncidentState::All, 10)
            .await
            .unwrap();
        assert_eq!(listed.len(), usize::from(sees), "{viewer:?}");
        let status = status_for(&store, service_id, &viewer).await;
        let want = if sees {
            ServiceStatus::MajorOutage
        } else {
            ServiceStatus::Operational
        };
        assert_eq!(status, want, "{viewer:?}");
    }
    // Every derived row carries the audience of its notice.
    let rows = client
        .query(
            "SELECT public, tenants FROM rm_updates UNION ALL SELECT public, tenants FROM rm_service_impacts",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert!(!row.get::<_, bool>(0));
        assert_eq!(row.get::<_, Vec<String>>(1), vec!["contoso".to_owned()]);
    }

    // Time travel filters the same way.
    store.seal_all(Duration::from_secs(10)).await.unwrap();
    let now = AsOf::Time(Utc::now());
    assert!(
        history::as_of::<IncidentDecider>(&store, id, now, &Viewer::Public)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        history::as_of::<IncidentDecider>(&store, id, now, &Viewer::Tenant("contoso".into()))
            .await
            .unwrap()
            .is_some()
    );

    // A notice shared with two tenants: each sees it, and neither learns of the other.
    let shared_id = Uuid::new_v4();
    let shared = Audience::Tenants {
        tenants: vec!["contoso".into(), "fabrikam".into()],
    };
    publisher
        .execute::<IncidentDecider>(
            shared_id,
            &declare(shared_id, vec![], shared.clone()),
            None,
            &by(),
        )
        .await
        .unwrap();
    for tenant in ["contoso", "fabrikam"] {
        let viewer = Viewer::Tenant(tenant.into());
        let seen = queries::incident(&client, shared_id, &viewer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            seen.state.audience,
            Audience::Tenants {
                tenants: vec![tenant.into()]
            }
        );
        let listed = queries::incidents(&client, &viewer, queries::IncidentState::All, 10)
            .await
            .unwrap();
        assert!(listed.iter().all(|i| i.state.audience.admits(Some(tenant))
            && !matches!(&i.state.audience, Audience::Tenants { tenants } if tenants.len() > 1)));
        let past =
            history::as_of::<IncidentDecider>(&store, shared_id, AsOf::Time(Utc::now()), &viewer)
                .await
                .unwrap()
                .unwrap();
        assert_eq!(
            past.state.audience,
            Audience::Tenants {
                tenants: vec![tenant.into()]
            }
        );
    }
    let everyone = queries::incident(&client, shared_id, &Viewer::Everyone)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(everyone.state.audience, shared);
}

#[tokio::test]
async fn rows_the_builder_derives_carry_their_notices_audience() {
    let db = TestDatabase::create().await;
    let store = db.store();
    testing::append_and_build(
        &store,
        Shape {
            services: 4,
            incidents: 40,
            updates_per_incident: 3,
            maintenances: 10,
        },
    )
    .await;
    let client = store.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM rm_updates u JOIN rm_incidents i ON i.id = u.resource_id \
                      WHERE u.resource_kind = 'incident' AND (u.public, u.tenants) <> (i.public, i.tenants)) \
                  + (SELECT count(*) FROM rm_updates u JOIN rm_maintenances m ON m.id = u.resource_id \
                      WHERE u.resource_kind = 'maintenance' AND (u.public, u.tenants) <> (m.public, m.tenants)) \
                  + (SELECT count(*) FROM rm_service_impacts x JOIN rm_incidents i ON i.id = x.source_id \
                      WHERE (x.public, x.tenants) <> (i.public, i.tenants)) AS disagreeing, \
                    (SELECT count(*) FROM rm_updates WHERE NOT public AND cardinality(tenants) > 0) AS private",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>("disagreeing"), 0);
    assert!(row.get::<_, i64>("private") > 0);
    // Private incidents do not move the public status of the services they affect.
    for view in queries::services(&client, &Viewer::Public).await.unwrap() {
        let public_worst = client
            .query_one(
                "SELECT coalesce(max(severity), 0::int2) FROM rm_service_impacts WHERE service_id = $1 AND public",
                &[&view.service.id],
            )
            .await
            .unwrap()
            .get::<_, i16>(0);
        assert_eq!(i16::from(view.status.severity()), public_worst);
    }
}

#[tokio::test]
async fn if_match_refuses_a_stale_version_and_writes_nothing() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let publisher = Publisher::new(&store);
    let id = Uuid::new_v4();
    publisher
        .execute::<IncidentDecider>(id, &declare(id, vec![], Audience::Public), None, &by())
        .await
        .unwrap();
    publisher
        .execute::<IncidentDecider>(id, &post(IncidentStatus::Identified, 3), Some(1), &by())
        .await
        .unwrap();
    let stale = publisher
        .execute::<IncidentDecider>(id, &post(IncidentStatus::Monitoring, 4), Some(1), &by())
        .await;
    assert!(
        matches!(
            stale,
            Err(CommandError::VersionMismatch {
                expected: 1,
                current: 2
            })
        ),
        "{stale:?}"
    );
    assert_eq!(
        store
            .stream_version(&format!("incident-{id}"))
            .await
            .unwrap(),
        2
    );
    let client = store.pool().get().await.unwrap();
    let read = queries::incident(&client, id, &Viewer::Public)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (read.version, read.state.status),
        (2, IncidentStatus::Identified)
    );

    // An unknown incident is not found, whatever version is named.
    let missing = Uuid::new_v4();
    let result = publisher
        .execute::<IncidentDecider>(
            missing,
            &post(IncidentStatus::Identified, 3),
            Some(4),
            &by(),
        )
        .await;
    assert!(
        matches!(result, Err(CommandError::Domain(DomainError::NotFound(_)))),
        "{result:?}"
    );
}

#[tokio::test]
async fn concurrent_updates_without_if_match_all_land_in_some_order() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let publisher = Publisher::new(&store);
    let id = Uuid::new_v4();
    publisher
        .execute::<IncidentDecider>(id, &declare(id, vec![], Audience::Public), None, &by())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for n in 0..16 {
        let publisher = publisher.clone();
        let status = [IncidentStatus::Identified, IncidentStatus::Monitoring][n % 2];
        tasks.push(tokio::spawn(async move {
            publisher
                .execute::<IncidentDecider>(id, &post(status, 10), None, &by())
                .await
                .unwrap()
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.unwrap().resource.version);
    }
    versions.sort_unstable();
    assert_eq!(versions, (2..=17).collect::<Vec<u64>>());
    let client = store.pool().get().await.unwrap();
    let read = queries::incident(&client, id, &Viewer::Public)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((read.version, read.state.updates.len()), (17, 17));
}

#[tokio::test]
async fn the_builder_folds_events_appended_without_read_models_and_twice_changes_nothing() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let shape = Shape {
        services: 5,
        incidents: 40,
        updates_per_incident: 4,
        maintenances: 8,
    };
    testing::append_directly(&store, shape).await;
    store.seal_all(Duration::from_secs(10)).await.unwrap();
    let builder = Builder::new(&store, BuilderOptions { batch_size: 37 });
    let events = builder.catch_up().await.unwrap();
    assert_eq!(events, store.log_head().await.unwrap().unwrap().0);
    let built = snapshot(&store).await;

    // The same history published command by command, with inline read models, gives the
    // same tables.
    let inline = TestDatabase::create().await;
    let inline_store = inline.store();
    testing::publish(&Publisher::new(&inline_store), shape).await;
    testing::seal_and_build(&inline_store).await;
    assert_eq!(snapshot(&inline_store).await, built);

    // Folding the log again from the start applies nothing twice.
    let client = store.pool().get().await.unwrap();
    client
        .execute("UPDATE rm_checkpoint SET position = 0", &[])
        .await
        .unwrap();
    builder.catch_up().await.unwrap();
    assert_eq!(snapshot(&store).await, built);
}

#[tokio::test]
async fn a_builder_aborted_at_any_moment_resumes_without_applying_anything_twice() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let shape = Shape {
        services: 4,
        incidents: 60,
        updates_per_incident: 5,
        maintenances: 6,
    };
    testing::append_directly(&store, shape).await;
    store.seal_all(Duration::from_secs(10)).await.unwrap();
    let head = store.log_head().await.unwrap().unwrap().0;

    // Abort the builder task after varying delays, mid-transaction or not.
    for round in 0..12u64 {
        let builder = Builder::new(&store, BuilderOptions { batch_size: 25 });
        let task = tokio::spawn(async move { builder.catch_up().await });
        tokio::time::sleep(Duration::from_millis(3 + round * 7)).await;
        task.abort();
        let _ = task.await;
    }
    Builder::new(&store, BuilderOptions { batch_size: 25 })
        .catch_up()
        .await
        .unwrap();

    let reference = TestDatabase::create().await;
    let reference_store = reference.store();
    testing::append_and_build(&reference_store, shape).await;
    let (got, want) = (snapshot(&store).await, snapshot(&reference_store).await);
    assert_eq!(got["rm_checkpoint"], want["rm_checkpoint"]);
    assert_eq!(got, want);
    assert_eq!(want["rm_checkpoint"], vec![format!("(t,{head})")]);
}

#[tokio::test]
async fn replay_rebuilds_every_table_exactly_as_it_was() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let publisher = Publisher::new(&store);
    testing::publish(
        &publisher,
        Shape {
            services: 6,
            incidents: 30,
            updates_per_incident: 3,
            maintenances: 8,
        },
    )
    .await;
    testing::seal_and_build(&store).await;
    let before = snapshot(&store).await;
    let indexes = index_names(&store).await;
    assert!(before["rm_updates"].len() > 100 && !before["rm_service_impacts"].is_empty());
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute("GRANT SELECT ON rm_incidents TO PUBLIC")
        .await
        .unwrap();
    drop(client);
    let access = owners_and_privileges(&store).await;
    assert!(access
        .iter()
        .any(|a| a.contains("rm_incidents PUBLIC SELECT")));

    let mut positions = Vec::new();
    let options = ReplayOptions {
        batch_size: 50,
        ..ReplayOptions::default()
    };
    let report = projections::replay(&store, &options, |p| positions.push(p))
        .await
        .unwrap();
    assert_eq!(report.resumed_from, 0);
    assert_eq!(report.events, report.position);
    assert!(positions.len() > 3 && positions.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(snapshot(&store).await, before);
    assert_eq!(
        index_names(&store).await,
        indexes,
        "index names survive the swap"
    );
    assert_eq!(
        owners_and_privileges(&store).await,
        access,
        "owners and privileges survive the swap"
    );
    assert_eq!(
        lz4_columns(&store).await,
        ["rm_incidents.state", "rm_maintenances.state"],
        "the states that grow stay compressed with lz4 (this server has it)"
    );

    // The rebuilt tables are the live ones: writes and the builder go on working.
    let service_id = create_service(&publisher, "After replay").await;
    assert_eq!(
        status_for(&store, service_id, &Viewer::Public).await,
        ServiceStatus::Operational
    );
    let again = projections::replay(&store, &ReplayOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(again.position, report.position + 1);
}

#[tokio::test]
async fn the_read_model_list_names_every_table_of_the_schema() {
    let db = TestDatabase::create().await;
    let client = db.store().pool().get().await.unwrap();
    let tables: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
               AND tablename LIKE 'rm\\_%' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut listed: Vec<String> = READ_MODEL_TABLES.iter().map(|t| t.to_string()).collect();
    listed.sort();
    assert_eq!(tables, listed);
}

/// Every incident and maintenance as the read models give them to someone who sees all.
async fn every_notice(
    store: &EventStore,
) -> (
    Vec<projections::Versioned<incident::Incident>>,
    Vec<projections::Versioned<maintenance::Maintenance>>,
) {
    let client = store.pool().get().await.unwrap();
    let incidents = queries::incidents(
        &client,
        &Viewer::Everyone,
        queries::IncidentState::All,
        1000,
    )
    .await
    .unwrap();
    let maintenances = queries::maintenances_page(
        &client,
        &Viewer::Everyone,
        queries::MaintenanceState::All,
        None,
        1000,
    )
    .await
    .unwrap()
    .items;
    (incidents, maintenances)
}

#[tokio::test]
async fn a_notice_read_from_its_rows_is_its_events_folded_corrections_and_all() {
    let db = TestDatabase::create().await;
    let store = db.store();
    testing::publish(&Publisher::new(&store), SMALL).await;
    store.seal_all(Duration::from_secs(10)).await.unwrap();
    let head = store.log_head().await.unwrap().unwrap().0;
    let (incidents, maintenances) = every_notice(&store).await;
    let corrected = incidents
        .iter()
        .flat_map(|i| i.state.updates.iter())
        .any(|u| !u.corrections.is_empty());
    assert!(corrected, "the history corrects some updates");
    let at = AsOf::Position(head);
    for incident in incidents {
        let folded = history::as_of::<IncidentDecider>(&store, incident.id, at, &Viewer::Everyone)
            .await
            .unwrap();
        assert_eq!(Some(incident), folded);
    }
    for maintenance in maintenances {
        let folded =
            history::as_of::<MaintenanceDecider>(&store, maintenance.id, at, &Viewer::Everyone)
                .await
                .unwrap();
        assert_eq!(Some(maintenance), folded);
    }
}

#[tokio::test]
async fn migration_v8_moves_every_timeline_into_its_update_rows_unchanged() {
    let db = TestDatabase::create().await;
    let store = db.store();
    testing::publish(&Publisher::new(&store), SMALL).await;
    let before = every_notice(&store).await;
    assert!(before.0.iter().any(|i| i.state.updates.len() > 3));
    assert!(!before.1.is_empty());

    // Back to the layout V7 left: each timeline inside its state, update rows without it
    // (and the log in `event_log`, as before V9).
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(&format!(
            "UPDATE rm_incidents r SET state = (r.state::jsonb || jsonb_build_object('updates', \
                 (SELECT jsonb_agg(u.body::jsonb ORDER BY u.seq) FROM rm_updates u \
                   WHERE u.resource_kind = 'incident' AND u.resource_id = r.id)))::json; \
             UPDATE rm_maintenances r SET state = (r.state::jsonb || jsonb_build_object('updates', \
                 (SELECT jsonb_agg(u.body::jsonb ORDER BY u.seq) FROM rm_updates u \
                   WHERE u.resource_kind = 'maintenance' AND u.resource_id = r.id)))::json; \
             ALTER TABLE rm_updates DROP COLUMN seq, DROP COLUMN body; \
             DELETE FROM refinery_schema_history WHERE version = 8; {UNDO_V9_SQL}"
        ))
        .await
        .unwrap();
    drop(client);
    drop(store);

    eventstore::migrate(&db.url).await.unwrap();
    let store = db.store();
    assert_eq!(every_notice(&store).await, before);
    let client = store.pool().get().await.unwrap();
    let timelines_left: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM rm_incidents WHERE json_array_length(state -> 'updates') > 0) \
                  + (SELECT count(*) FROM rm_maintenances WHERE json_array_length(state -> 'updates') > 0)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        timelines_left, 0,
        "the states no longer hold their timelines"
    );

    // Writes go on from the migrated rows.
    let publisher = Publisher::new(&store);
    let incident = (before.0.iter())
        .find(|i| i.state.status.is_open())
        .expect("an open incident");
    let written = publisher
        .execute::<IncidentDecider>(
            incident.id,
            &post(IncidentStatus::Monitoring, 30),
            Some(incident.version),
            &by(),
        )
        .await
        .unwrap();
    let read = queries::incident(&client, incident.id, &Viewer::Everyone)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, written.resource);
    assert_eq!(read.state.updates.len(), incident.state.updates.len() + 1);
}

#[tokio::test]
async fn a_write_in_flight_when_a_replay_swaps_is_waited_for_and_kept() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let publisher = Publisher::new(&store);
    testing::publish(&publisher, SMALL).await;

    // A writer as the Publisher writes: shared projections lock, append, read models; held
    // open while the replay reaches its swap.
    let id = Uuid::new_v4();
    let mut client = store.pool().get().await.unwrap();
    let mut writer = client.transaction().await.unwrap();
    writer
        .execute(
            "SELECT pg_advisory_xact_lock_shared($1)",
            &[&0x6372_6965_7203_i64],
        )
        .await
        .unwrap();
    let command = declare(id, vec![], Audience::Public);
    let event = match IncidentDecider::decide(&command, &None).unwrap().remove(0) {
        incident::Event::Declared(e) => incident::Event::Declared(e),
        other => panic!("{other:?}"),
    };
    let (type_name, version, data) = IncidentDecider::encode(&event).unwrap();
    let mut new_event = eventstore::NewEvent::new(type_name, data, by());
    new_event.schema_version = version;
    store
        .append_in_transaction(
            &mut writer,
            &format!("incident-{id}"),
            eventstore::ExpectedVersion::NoStream,
            &[new_event],
        )
        .await
        .unwrap();
    let mut changes = projections::Changes::default();
    IncidentDecider::add_to(
        &mut changes,
        projections::Versioned {
            id,
            version: 1,
            state: IncidentDecider::fold([&event]).unwrap(),
        },
    );
    projections::write_changes(&writer, &changes).await.unwrap();

    let replay = {
        let store = store.clone();
        tokio::spawn(async move {
            projections::replay(
                &store,
                &ReplayOptions {
                    batch_size: 20,
                    ..ReplayOptions::default()
                },
                |_| {},
            )
            .await
        })
    };
    // Wait until the replay queues for the exclusive lock behind the writer.
    let observer = store.pool().get().await.unwrap();
    for attempt in 0.. {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(attempt < 500, "the replay never waited for the writer");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!replay.is_finished());
    writer.commit().await.unwrap();
    replay.await.unwrap().unwrap();

    let read = queries::incident(&observer, id, &Viewer::Public)
        .await
        .unwrap();
    assert_eq!(
        read.map(|i| i.version),
        Some(1),
        "the write acknowledged during the swap is kept"
    );
    drop(observer);
    drop(client);
    Builder::new(&store, BuilderOptions::default())
        .catch_up()
        .await
        .unwrap();
    let live = snapshot(&store).await;
    projections::replay(&store, &ReplayOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(snapshot(&store).await, live);
}

#[tokio::test]
async fn writers_racing_replays_lose_nothing() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let publisher = Publisher::new(&store);
    testing::publish(&publisher, SMALL).await;
    let service_id = create_service(&publisher, "Busy").await;
    let writer = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..60 {
                let id = Uuid::new_v4();
                publisher
                    .execute::<IncidentDecider>(
                        id,
                        &declare(
                            id,
                            hit(service_id, ServiceStatus::PartialOutage),
                            Audience::Public,
                        ),
                        None,
                        &by(),
                    )
                    .await
                    .unwrap();
                ids.push(id);
            }
            ids
        })
    };
    for _ in 0..3 {
        projections::replay(
            &store,
            &ReplayOptions {
                batch_size: 20,
                ..ReplayOptions::default()
            },
            |_| {},
        )
        .await
        .unwrap();
    }
    let ids = writer.await.unwrap();
    let client = store.pool().get().await.unwrap();
    for id in ids {
        assert!(
            queries::incident(&client, id, &Viewer::Public)
                .await
                .unwrap()
                .is_some(),
            "{id} lost"
        );
    }
}

#[tokio::test]
async fn as_of_gives_the_incident_as_it_stood_at_each_position_and_time() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let publisher = Publisher::new(&store);
    let id = Uuid::new_v4();
    let mut states = Vec::new();
    let written = publisher
        .execute::<IncidentDecider>(id, &declare(id, vec![], Audience::Public), None, &by())
        .await
        .unwrap();
    states.push(written.resource);
    for (status, minute) in [
        (IncidentStatus::Identified, 3),
        (IncidentStatus::Resolved, 7),
    ] {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let written = publisher
            .execute::<IncidentDecider>(id, &post(status, minute), None, &by())
            .await
            .unwrap();
        states.push(written.resource);
    }
    store.seal_all(Duration::from_secs(10)).await.unwrap();

    // Not there before its first event; then each version at its own position and time.
    assert_eq!(
        history::as_of::<IncidentDecider>(&store, id, AsOf::Position(0), &Viewer::Public)
            .await
            .unwrap(),
        None
    );
    let events = store
        .read_stream_forward(&format!("incident-{id}"), 1, 10)
        .await
        .unwrap();
    let log = eventstore::testing::whole_log(&store).await;
    for (event, state) in events.iter().zip(&states) {
        let position = log
            .iter()
            .find(|l| l.event.event_id == event.event_id)
            .unwrap()
            .position;
        let by_position = history::as_of::<IncidentDecider>(
            &store,
            id,
            AsOf::Position(position),
            &Viewer::Public,
        )
        .await
        .unwrap();
        assert_eq!(by_position.as_ref(), Some(state));
        // As of the time the resource shows for the event (its command's `at`).
        let shown: chrono::DateTime<chrono::Utc> =
            event.data.decode::<serde_json::Value>().unwrap()["at"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
        let by_time =
            history::as_of::<IncidentDecider>(&store, id, AsOf::Time(shown), &Viewer::Public)
                .await
                .unwrap();
        assert_eq!(by_time.as_ref(), Some(state));
    }
    let first: chrono::DateTime<chrono::Utc> =
        events[0].data.decode::<serde_json::Value>().unwrap()["at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    let before = first - chrono::Duration::microseconds(1);
    assert_eq!(
        history::as_of::<IncidentDecider>(&store, id, AsOf::Time(before), &Viewer::Public)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_key_authenticates_by_its_secret_hash_until_revoked_on_every_process() {
    use domain::api_key::{self, ApiKeyDecider, Role};
    let db = TestDatabase::create().await;
    let (admin_process, other_process) = (db.store(), db.store());
    let publisher = Publisher::new(&admin_process);
    let id = Uuid::new_v4();
    let hash = "7".repeat(64);
    let create = api_key::Command::Create(api_key::Create {
        key_id: id,
        name: "reader for contoso".into(),
        role: Role::Reader,
        tenant: Some("contoso".into()),
        author: "admin".into(),
        at: at(0),
    });
    let verifier = projections::AlsoWrite {
        statement: projections::access::INSERT_VERIFIER_SQL,
        params: &[&id, &hash],
    };
    publisher
        .execute_once::<ApiKeyDecider>(id, &create, None, &by(), None, Some(&verifier))
        .await
        .unwrap();
    let history: Vec<String> = admin_process
        .pool()
        .get()
        .await
        .unwrap()
        .query("SELECT data::text || metadata::text FROM events", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        history.iter().all(|e| !e.contains(&hash)),
        "the verifier is not in the history: {history:?}"
    );
    let client = other_process.pool().get().await.unwrap();
    let unknown = "8".repeat(64);
    let mut keys = queries::live_keys_by_secret_hashes(&client, &[hash.clone(), unknown])
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "the unknown hash has no key");
    let key = keys.remove(&hash).unwrap();
    assert_eq!(
        (key.id, key.state.role, key.state.tenant.as_deref()),
        (id, Role::Reader, Some("contoso"))
    );

    // A second key cannot be given the same secret: a verifier is unique.
    let forged = client
        .execute(
            "INSERT INTO api_key_verifiers (key_id, secret_sha256) VALUES (gen_random_uuid(), $1)",
            &[&hash],
        )
        .await;
    assert!(
        forged.is_err(),
        "a second verifier of one secret was stored"
    );
    let keys = queries::live_keys_by_secret_hashes(&client, std::slice::from_ref(&hash))
        .await
        .unwrap();
    assert_eq!(keys.keys().collect::<Vec<_>>(), [&hash]);

    let revoke = api_key::Command::Revoke(api_key::Revoke {
        author: "admin".into(),
        at: at(1),
    });
    publisher
        .execute::<ApiKeyDecider>(id, &revoke, None, &by())
        .await
        .unwrap();
    assert!(
        queries::live_keys_by_secret_hashes(&client, &[hash])
            .await
            .unwrap()
            .is_empty(),
        "revoked at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_of_several_processes_each_decide_on_the_others_latest_writes() {
    // Each publisher keeps the states it wrote last; taking turns, each must still build on
    // the other's newer version, never on its own older one.
    let db = TestDatabase::create().await;
    let store = db.store();
    let (first, second) = (Publisher::new(&store), Publisher::new(&store));
    let service_id = create_service(&first, "Teams").await;
    let id = Uuid::new_v4();
    let affected = hit(service_id, ServiceStatus::MajorOutage);
    first
        .execute::<IncidentDecider>(id, &declare(id, affected, Audience::Public), None, &by())
        .await
        .unwrap();
    for minute in 2..=7 {
        let publisher = if minute % 2 == 0 { &second } else { &first };
        let status = if minute == 7 {
            IncidentStatus::Resolved
        } else {
            IncidentStatus::Identified
        };
        let written = publisher
            .execute::<IncidentDecider>(id, &post(status, minute), None, &by())
            .await
            .unwrap();
        assert_eq!(written.resource.version, u64::from(minute));
        assert_eq!(written.resource.state.updates.len(), minute as usize);
    }
    // The derived rows agree with the last state: the incident is resolved.
    assert_eq!(
        status_for(&store, service_id, &Viewer::Public).await,
        ServiceStatus::Operational
    );
    // The second publisher last wrote the incident open, where a reopening is refused; it
    // must decide on the resolved incident the first one wrote instead.
    let reopen = incident::Command::Reopen(incident::Reopen {
        update_id: Uuid::new_v4(),
        message: "Failures are back.".into(),
        translations: Default::default(),
        default_language: domain::language::Language::english(),
        author: "comms".into(),
        at: at(8),
    });
    let reopened = second
        .execute::<IncidentDecider>(id, &reopen, None, &by())
        .await
        .unwrap();
    assert_eq!(reopened.resource.version, 8);
    assert_eq!(
        reopened.resource.state.status,
        IncidentStatus::Investigating
    );
    // And the first, which last wrote version 7, is told the incident is at 8.
    let stale = first
        .execute::<IncidentDecider>(id, &post(IncidentStatus::Identified, 9), Some(7), &by())
        .await;
    assert!(
        matches!(
            stale,
            Err(CommandError::VersionMismatch {
                expected: 7,
                current: 8
            })
        ),
        "{stale:?}"
    );
}

#[tokio::test]
async fn services_read_by_ids_come_in_the_order_asked_with_the_status_each_viewer_sees() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let publisher = Publisher::new(&store);
    let teams = create_service(&publisher, "Teams").await;
    let outlook = create_service(&publisher, "Outlook").await;
    let id = Uuid::new_v4();
    let private = Audience::Tenants {
        tenants: vec!["nhs-wales".into()],
    };
    publisher
        .execute::<IncidentDecider>(
            id,
            &declare(id, hit(outlook, ServiceStatus::MajorOutage), private),
            None,
            &by(),
        )
        .await
        .unwrap();
    let client = store.pool().get().await.unwrap();
    // A missing id is left out; one asked twice comes twice, as asking for each would give.
    let asked = [outlook, Uuid::new_v4(), teams, outlook];
    for (viewer, outlook_status) in [
        (Viewer::Public, ServiceStatus::Operational),
        (
            Viewer::Tenant("nhs-wales".into()),
            ServiceStatus::MajorOutage,
        ),
        (Viewer::Everyone, ServiceStatus::MajorOutage),
    ] {
        let read = queries::services_with_ids(&client, &asked, &viewer)
            .await
            .unwrap();
        let seen: Vec<(Uuid, ServiceStatus)> = read
            .iter()
            .map(|view| (view.service.id, view.status))
            .collect();
        assert_eq!(
            seen,
            [
                (outlook, outlook_status),
                (teams, ServiceStatus::Operational),
                (outlook, outlook_status)
            ],
            "{viewer:?}"
        );
        for view in &read {
            let one = queries::service(&client, view.service.id, &viewer)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(one.service.version, view.service.version);
            assert_eq!(one.status, view.status);
        }
    }
    assert!(queries::services_with_ids(&client, &[], &Viewer::Public)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_resource_made_under_a_new_id_is_created_and_a_taken_stream_still_refuses_it() {
    // The first write to an id from `new_id` decides on no resource and appends at version 0
    // without reading (that it reads nothing is measured, not tested: see PERFORMANCE.md).
    // Should that stream exist after all (here another process wrote it first), the append
    // refuses it and the command is decided on what the database holds.
    let db = TestDatabase::create().await;
    let store = db.store();
    let (first, second) = (Publisher::new(&store), Publisher::new(&store));
    let fresh = first.new_id();
    let written = first
        .execute::<IncidentDecider>(
            fresh,
            &declare(fresh, vec![], Audience::Public),
            None,
            &by(),
        )
        .await
        .unwrap();
    assert_eq!(written.resource.version, 1);
    let updated = first
        .execute::<IncidentDecider>(fresh, &post(IncidentStatus::Identified, 2), None, &by())
        .await
        .unwrap();
    assert_eq!(updated.resource.version, 2);

    let taken = second.new_id();
    first
        .execute::<IncidentDecider>(
            taken,
            &declare(taken, vec![], Audience::Public),
            None,
            &by(),
        )
        .await
        .unwrap();
    let again = second
        .execute::<IncidentDecider>(
            taken,
            &declare(taken, vec![], Audience::Public),
            None,
            &by(),
        )
        .await;
    assert!(
        matches!(again, Err(CommandError::Domain(DomainError::Conflict(_)))),
        "{again:?}"
    );
    // The first one's write stands, and on it the second process now builds.
    let on_top = second
        .execute::<IncidentDecider>(taken, &post(IncidentStatus::Resolved, 3), None, &by())
        .await
        .unwrap();
    assert_eq!(on_top.resource.version, 2);

    // A command that needs a resource is refused on a new id, and writes nothing.
    let unwritten = second.new_id();
    let refused = second
        .execute::<IncidentDecider>(unwritten, &post(IncidentStatus::Resolved, 4), None, &by())
        .await;
    assert!(
        matches!(refused, Err(CommandError::Domain(DomainError::NotFound(_)))),
        "{refused:?}"
    );
    let client = store.pool().get().await.unwrap();
    let events: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 4, "two declarations and two updates");
}

/// Appends `payload` to `stream` as schema version 1 of `type_name` wrote it, the way a
/// database upgraded from before translations holds it.
async fn append_version_1(
    store: &EventStore,
    stream: &str,
    type_name: &str,
    payload: serde_json::Value,
) {
    let mut event = eventstore::NewEvent::new(type_name, payload, by());
    event.schema_version = 1;
    store
        .append(stream, eventstore::ExpectedVersion::Any, &[event])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_history_mixing_version_1_and_translated_version_2_events_replays_to_the_live_read_models(
) {
    let db = TestDatabase::create().await;
    let store = db.store();
    let publisher = Publisher::new(&store);
    testing::publish(&publisher, SMALL).await;
    let service_id = create_service(&publisher, "Teams").await;

    // An incident declared, updated and corrected before translations existed.
    let id = Uuid::new_v4();
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let stream = format!("incident-{id}");
    append_version_1(
        &store,
        &stream,
        "incident.declared",
        serde_json::json!({
            "incident_id": id, "update_id": first, "title": "Users cannot sign in",
            "impact": "major", "status": "investigating", "message": "We are investigating.",
            "affected_services": [{"service_id": service_id, "status": "major_outage"}],
            "regions": [], "audience": {"visibility": "public"},
            "client_action": {"kind": "none", "message": ""}, "author": "publisher-key",
            "at": "2026-11-24T09:00:00Z"
        }),
    )
    .await;
    append_version_1(
        &store,
        &stream,
        "incident.update_posted",
        serde_json::json!({
            "update_id": second, "status": "identified", "message": "Found it.", "impact": null,
            "affected_services": null, "client_action": null, "author": "publisher-key",
            "at": "2026-11-24T09:10:00Z"
        }),
    )
    .await;
    append_version_1(
        &store,
        &stream,
        "incident.update_corrected",
        serde_json::json!({
            "update_id": first, "message": "We are investigating sign-in failures.",
            "reason": "clearer", "author": "publisher-key", "at": "2026-11-24T09:11:00Z"
        }),
    )
    .await;
    testing::seal_and_build(&store).await;
    {
        let client = store.pool().get().await.unwrap();
        let old = queries::incident(&client, id, &Viewer::Public)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (old.version, old.state.updates[0].corrections.len()),
            (3, 1),
            "{old:?}"
        );
    }
    // Then, today, an update in English and Welsh, decided on the folded old history.
    let mut welsh = domain::language::RawTranslations::new();
    welsh.insert(
        "cy".to_owned(),
        incident::UpdateTexts {
            message: Some("Wedi'i drwsio.".into()),
            client_action: None,
        },
    );
    publisher
        .execute::<IncidentDecider>(
            id,
            &incident::Command::PostUpdate(incident::PostUpdate {
                update_id: Uuid::new_v4(),
                status: IncidentStatus::Resolved,
                message: "Fixed.".into(),
                impact: None,
                affected_services: None,
                client_action: None,
                translations: welsh,
                default_language: domain::language::Language::english(),
                author: "publisher-key".into(),
                at: chrono::Utc::now(),
            }),
            Some(3),
            &by(),
        )
        .await
        .unwrap();
    testing::seal_and_build(&store).await;

    let client = store.pool().get().await.unwrap();
    let live_incident = queries::incident(&client, id, &Viewer::Public)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live_incident.version, 4);
    assert_eq!(live_incident.state.updates[0].corrections.len(), 1);
    let cy = domain::language::Language::parse("lang", "cy").unwrap();
    let in_welsh = live_incident.state.clone().in_language(Some(&cy));
    assert_eq!(in_welsh.updates[2].message, "Wedi'i drwsio.");
    assert_eq!(
        in_welsh.updates[0].message,
        "We are investigating sign-in failures."
    );
    drop(client);

    let live = snapshot(&store).await;
    projections::replay(&store, &ReplayOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(snapshot(&store).await, live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_committed_together_share_a_transaction_and_one_refusal_costs_the_others_nothing() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let (publisher, other_process) = (Publisher::new(&store), Publisher::new(&store));
    let ids: Vec<Uuid> = (0..24).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        publisher
            .execute::<IncidentDecider>(*id, &declare(*id, vec![], Audience::Public), None, &by())
            .await
            .unwrap();
    }
    // Writes sent together, none refused, are committed in fewer transactions than writes.
    let posted = concurrently(&publisher, &ids, IncidentStatus::Identified, 2).await;
    for written in &posted {
        assert_eq!(written.resource.version, 2);
    }
    let (events, transactions) = posted_events(&store, &ids, "identified").await;
    assert_eq!(events, 24, "each write once");
    assert!(
        transactions < 24,
        "writes sent together were committed together ({transactions} transactions)"
    );

    // Another process moves some incidents on: this publisher's kept states of them are
    // stale, so their appends are refused inside whatever batch they join, rolling it back.
    // How the batches fall then depends on timing; what must hold is that every write lands
    // exactly once.
    let stale = &ids[..4];
    for id in stale {
        other_process
            .execute::<IncidentDecider>(*id, &post(IncidentStatus::Identified, 3), None, &by())
            .await
            .unwrap();
    }
    let written = concurrently(&publisher, &ids, IncidentStatus::Monitoring, 4).await;
    for (id, written) in ids.iter().zip(written) {
        let expected = if stale.contains(id) { 4 } else { 3 };
        assert_eq!(written.resource.version, expected, "{id}");
        assert_eq!(written.resource.state.updates.len() as u64, expected);
    }
    // Each incident's events are exactly its commands', each once, and the rows agree.
    let client = store.pool().get().await.unwrap();
    for id in &ids {
        let read = queries::incident(&client, *id, &Viewer::Public)
            .await
            .unwrap()
            .unwrap();
        let expected = if stale.contains(id) { 4 } else { 3 };
        assert_eq!(
            (read.version, read.state.updates.len() as u64),
            (expected, expected)
        );
        assert_eq!(read.state.status, IncidentStatus::Monitoring);
    }
    let (events, _) = posted_events(&store, &ids, "monitoring").await;
    assert_eq!(events, 24, "each write once");
}

/// Posts an update of `status` to every incident of `ids` at once, through `publisher`.
async fn concurrently(
    publisher: &Publisher,
    ids: &[Uuid],
    status: IncidentStatus,
    minute: u32,
) -> Vec<projections::Written<domain::incident::Incident>> {
    let writes = ids.iter().map(|id| {
        let (publisher, id) = (publisher.clone(), *id);
        tokio::spawn(async move {
            publisher
                .execute::<IncidentDecider>(id, &post(status, minute), None, &by())
                .await
        })
    });
    let written = futures_util::future::join_all(writes).await;
    written.into_iter().map(|w| w.unwrap().unwrap()).collect()
}

/// How many `incident.update_posted` events of `status` the incidents `ids` have, and in
/// how many transactions they were committed.
async fn posted_events(store: &EventStore, ids: &[Uuid], status: &str) -> (i64, i64) {
    let stream_ids: Vec<String> = ids
        .iter()
        .map(|id| IncidentDecider::stream_id(*id))
        .collect();
    let row = store
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*), count(DISTINCT transaction_id) FROM events \
              WHERE stream_id = ANY($1) AND event_type = 'incident.update_posted' \
                AND data->>'status' = $2",
            &[&stream_ids, &status],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// `--db-pool-size` may be small: with two connections, a replay's second writer waits for
/// the one the fold or the log reader holds, which each give back without needing another,
/// so the replay finishes. (A pool of one fails with a pool timeout, as it did before the
/// second writer: the replay's stages need connections at once.)
#[tokio::test]
async fn a_replay_through_a_pool_of_two_connections_finishes_with_the_same_read_models() {
    let db = TestDatabase::create().await;
    let mut config = db.config();
    config.pool_size = 2;
    let store = EventStore::connect(config).unwrap();
    testing::append_and_build(
        &store,
        Shape {
            services: 4,
            incidents: 40,
            updates_per_incident: 4,
            maintenances: 4,
        },
    )
    .await;
    let before = snapshot(&store).await;
    let options = ReplayOptions {
        batch_size: 40,
        ..ReplayOptions::default()
    };
    let replayed = tokio::time::timeout(
        Duration::from_secs(60),
        projections::replay(&store, &options, |_| {}),
    )
    .await
    .expect("the replay finishes")
    .unwrap();
    assert!(replayed.events > 200);
    assert_eq!(snapshot(&store).await, before);
}

/// One replay at a time: a second one waits for the first to let go of the lock, up to its
/// `lock_wait`, and is refused saying why once that runs out. (A replay started right after
/// another was killed finds the lock held until the server notices the dead client.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replay_waits_for_the_first_and_is_refused_once_its_wait_runs_out() {
    let db = TestDatabase::create().await;
    let store = db.store();
    // Long enough a replay (in batches of 5) for the second to find it running.
    let shape = Shape {
        incidents: 150,
        ..SMALL
    };
    testing::append_and_build(&store, shape).await;
    let before = snapshot(&store).await;
    let (reached, mut reached_seen) = tokio::sync::watch::channel(0u64);
    let slow = ReplayOptions {
        batch_size: 5,
        ..ReplayOptions::default()
    };
    let first = projections::replay(&store, &slow, move |position| {
        reached.send_replace(position);
    });
    let others = async {
        reached_seen.wait_for(|p| *p > 0).await.unwrap();
        let impatient = ReplayOptions {
            lock_wait: Duration::from_millis(50),
            ..ReplayOptions::default()
        };
        let refused = projections::replay(&store, &impatient, |_| {}).await;
        let patient = ReplayOptions {
            lock_wait: Duration::from_secs(60),
            ..ReplayOptions::default()
        };
        let waited = projections::replay(&store, &patient, |_| {}).await;
        (refused, waited)
    };
    let (first, (refused, waited)) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(first, others)
    })
    .await
    .expect("the replays end");
    let first = first.unwrap();
    match refused {
        Err(ProjectionError::Busy(why)) => {
            assert!(why.contains("another replay is running"), "{why}");
            assert!(why.contains("50ms"), "{why}");
        }
        other => panic!("a replay while another runs: {other:?}"),
    }
    let waited = waited.unwrap();
    assert!(waited.position >= first.position);
    assert_eq!(snapshot(&store).await, before);
}

#[tokio::test]
async fn lookups_by_a_short_list_of_keys_keep_one_plan_per_connection() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let client = store.pool().get().await.unwrap();
    let unknown = Uuid::new_v4();
    for _ in 0..8 {
        queries::current_versions(&client, queries::NoticeTable::Incidents, &[unknown])
            .await
            .unwrap();
        queries::live_keys_by_secret_hashes(&client, &["0".repeat(64)])
            .await
            .unwrap();
        queries::unknown_services(&client, &[unknown])
            .await
            .unwrap();
        queries::key_tenants(&client, &[unknown, Uuid::new_v4()])
            .await
            .unwrap();
        queries::services_with_ids(&client, &[unknown], &Viewer::Public)
            .await
            .unwrap();
    }
    // After PostgreSQL's five custom plans, every later execution runs the generic plan.
    let plans = client
        .query(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements \
              WHERE statement ~ '= ANY\\(\\$[13]\\)' \
                AND statement ~ '(rm_incidents|api_key_verifiers|rm_services|rm_api_keys) '",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(plans.len(), 5);
    for row in plans {
        let (statement, generic, custom): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
        assert!(
            generic >= 3 && custom <= 5,
            "{statement}: {generic} generic plans, {custom} custom"
        );
    }
}
