//! Uptime folded from a real history: incidents and a maintenance published through the
//! publisher at chosen times (the times come in the commands), read back from PostgreSQL
//! and swept into days whose expected minutes are known exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failed test

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use domain::incident::{self, IncidentDecider};
use domain::language::Language;
use domain::maintenance::{self, MaintenanceDecider, MaintenanceStatus};
use domain::service::{self, ServiceDecider};
use domain::values::{AffectedService, Audience, IncidentStatus, ServiceStatus};
use eventstore::testing::TestDatabase;
use eventstore::Metadata;
use projections::queries::Viewer;
use projections::uptime::{self, Uptime};
use projections::{testing, Publisher};
use uuid::Uuid;

/// The first day of the story: five days before today.
fn story_day() -> NaiveDate {
    Utc::now().date_naive() - Days::new(5)
}

/// `day` days into the story, at `hour:minute` UTC.
fn at(day: u64, hour: u32, minute: u32) -> DateTime<Utc> {
    (story_day() + Days::new(day))
        .and_time(NaiveTime::from_hms_opt(hour, minute, 0).unwrap())
        .and_utc()
}

fn by() -> Metadata {
    Metadata::by("publisher-key")
}

async fn declare(
    publisher: &Publisher,
    service_id: Uuid,
    status: ServiceStatus,
    audience: Audience,
    when: DateTime<Utc>,
) -> Uuid {
    let id = Uuid::new_v4();
    let affected = vec![AffectedService { service_id, status }];
    let command = testing::declaration(id, affected, audience, when);
    publisher
        .execute::<IncidentDecider>(id, &command, None, &by())
        .await
        .unwrap();
    id
}

async fn update(
    publisher: &Publisher,
    id: Uuid,
    status: IncidentStatus,
    affected: Option<(Uuid, ServiceStatus)>,
    when: DateTime<Utc>,
) {
    let command = incident::Command::PostUpdate(incident::PostUpdate {
        update_id: Uuid::new_v4(),
        status,
        message: format!("Now {}.", status.as_str()),
        impact: None,
        affected_services: affected
            .map(|(service_id, status)| vec![AffectedService { service_id, status }]),
        client_action: None,
        translations: Default::default(),
        default_language: Language::english(),
        author: "publisher".into(),
        at: when,
    });
    publisher
        .execute::<IncidentDecider>(id, &command, None, &by())
        .await
        .unwrap();
}

async fn maintenance_move(
    publisher: &Publisher,
    id: Uuid,
    status: MaintenanceStatus,
    when: DateTime<Utc>,
) {
    let command = maintenance::Command::PostUpdate(maintenance::PostUpdate {
        update_id: Uuid::new_v4(),
        status,
        message: "Moving on.".into(),
        translations: Default::default(),
        default_language: Language::english(),
        author: "publisher".into(),
        at: when,
    });
    publisher
        .execute::<MaintenanceDecider>(id, &command, None, &by())
        .await
        .unwrap();
}

fn day_percent(uptime: &Uptime, day: u64) -> f64 {
    let date = story_day() + Days::new(day);
    uptime
        .days
        .iter()
        .find(|d| d.date == date)
        .unwrap_or_else(|| panic!("no day {date}"))
        .uptime_percent
}

fn share_up(minutes_down: f64) -> f64 {
    let value = 100.0 * (1.0 - minutes_down / 1440.0);
    (value * 10_000.0).round() / 10_000.0
}

#[tokio::test]
async fn uptime_is_folded_from_the_history_to_the_minute() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let publisher = Publisher::new(&store);
    let teams = Uuid::new_v4();
    publisher
        .execute::<ServiceDecider>(
            teams,
            &service::Command::Create(service::Create {
                service_id: teams,
                name: "Teams".into(),
                description: String::new(),
                group: None,
                author: "admin".into(),
                at: at(0, 6, 0),
            }),
            None,
            &by(),
        )
        .await
        .unwrap();

    // Day 0 23:50 to day 1 00:20: a major outage across midnight (10 + 20 minutes).
    let midnight = declare(
        &publisher,
        teams,
        ServiceStatus::MajorOutage,
        Audience::Public,
        at(0, 23, 50),
    )
    .await;
    update(
        &publisher,
        midnight,
        IncidentStatus::Resolved,
        None,
        at(1, 0, 20),
    )
    .await;

    // Day 2, 10:00 to 11:00: a major outage only tenant contoso may see.
    let private = declare(
        &publisher,
        teams,
        ServiceStatus::MajorOutage,
        Audience::Tenants {
            tenants: vec!["contoso".into()],
        },
        at(2, 10, 0),
    )
    .await;
    update(
        &publisher,
        private,
        IncidentStatus::Resolved,
        None,
        at(2, 11, 0),
    )
    .await;

    // Day 3: partial 10:00–11:40 (30 minutes down), then degraded until 15:00 (up); and a
    // maintenance 01:00–03:00 (up).
    let partial = declare(
        &publisher,
        teams,
        ServiceStatus::PartialOutage,
        Audience::Public,
        at(3, 10, 0),
    )
    .await;
    update(
        &publisher,
        partial,
        IncidentStatus::Monitoring,
        Some((teams, ServiceStatus::DegradedPerformance)),
        at(3, 11, 40),
    )
    .await;
    update(
        &publisher,
        partial,
        IncidentStatus::Resolved,
        None,
        at(3, 15, 0),
    )
    .await;
    let work = Uuid::new_v4();
    publisher
        .execute::<MaintenanceDecider>(
            work,
            &maintenance::Command::Schedule(maintenance::Schedule {
                maintenance_id: work,
                update_id: Uuid::new_v4(),
                title: "Database upgrade".into(),
                message: "Upgrading.".into(),
                affected_services: vec![teams],
                regions: vec![],
                starts_at: at(3, 1, 0),
                ends_at: at(3, 3, 0),
                audience: Audience::Public,
                translations: Default::default(),
                default_language: Language::english(),
                auto_start: false,
                auto_complete: false,
                remind_before_minutes: 0,
                author: "publisher".into(),
                at: at(2, 20, 0),
            }),
            None,
            &by(),
        )
        .await
        .unwrap();
    maintenance_move(&publisher, work, MaintenanceStatus::InProgress, at(3, 1, 0)).await;
    maintenance_move(&publisher, work, MaintenanceStatus::Completed, at(3, 3, 0)).await;

    // Day 4: overlapping incidents, partial 08:00–12:00 and major 10:00–11:00: 54 + 60.
    let long = declare(
        &publisher,
        teams,
        ServiceStatus::PartialOutage,
        Audience::Public,
        at(4, 8, 0),
    )
    .await;
    let short = declare(
        &publisher,
        teams,
        ServiceStatus::MajorOutage,
        Audience::Public,
        at(4, 10, 0),
    )
    .await;
    update(
        &publisher,
        short,
        IncidentStatus::Resolved,
        None,
        at(4, 11, 0),
    )
    .await;
    update(
        &publisher,
        long,
        IncidentStatus::Resolved,
        None,
        at(4, 12, 0),
    )
    .await;

    let now = at(5, 0, 0);
    let client = store.pool().get().await.unwrap();
    let since = now - chrono::Duration::days(90);
    let for_viewer = |viewer: Viewer| {
        let client = &client;
        async move {
            let mut changes = uptime::service_changes(client, &viewer, since)
                .await
                .unwrap();
            let changes = changes.remove(&teams).unwrap_or_default();
            uptime::uptime(teams, at(0, 6, 0), now, 90, &changes)
        }
    };
    let public = for_viewer(Viewer::Public).await;
    // Day 0 counts from 06:00 (the service's creation); day 5 (today) has no time yet.
    let dates: Vec<NaiveDate> = public.days.iter().map(|d| d.date).collect();
    assert_eq!(
        dates,
        (0..5)
            .map(|d| story_day() + Days::new(d))
            .collect::<Vec<_>>()
    );
    let first_day: f64 = 100.0 * (1.0 - 10.0 / (18.0 * 60.0));
    assert_eq!(
        day_percent(&public, 0),
        (first_day * 10_000.0).round() / 10_000.0
    );
    assert_eq!(day_percent(&public, 1), share_up(20.0));
    assert_eq!(day_percent(&public, 2), 100.0);
    assert_eq!(day_percent(&public, 3), share_up(30.0));
    assert_eq!(day_percent(&public, 4), share_up(114.0));
    assert_eq!(public.days[1].incident_ids, vec![midnight]);
    assert_eq!(public.days[3].worst_status, ServiceStatus::PartialOutage);
    assert_eq!(public.days[4].incident_ids, vec![long, short]);
    assert!(public.days[2].incident_ids.is_empty());

    // The tenant sees its private outage too.
    let contoso = for_viewer(Viewer::Tenant("contoso".into())).await;
    assert_eq!(day_percent(&contoso, 2), share_up(60.0));
    assert_eq!(contoso.days[2].incident_ids, vec![private]);
    assert_eq!(contoso.days[2].worst_status, ServiceStatus::MajorOutage);
    let fabrikam = for_viewer(Viewer::Tenant("fabrikam".into())).await;
    assert_eq!(day_percent(&fabrikam, 2), 100.0);

    // Over the whole window: 10 + 20 + 30 + 114 minutes down of 4 days and 18 hours.
    let observed = (4.0 * 24.0 + 18.0) * 60.0;
    let overall: f64 = 100.0 * (1.0 - 174.0 / observed);
    assert_eq!(
        public.uptime_percent,
        (overall * 10_000.0).round() / 10_000.0
    );
}
