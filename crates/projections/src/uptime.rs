//! A service's uptime, folded from the history: per UTC day, the share of the time the
//! service was not down.
//!
//! A service's status at any moment is the worst of what its open incidents and active
//! maintenances impose on it then (as its derived `status`). Its history is therefore the
//! merge of the histories of those resources: each incident and maintenance stream is
//! folded event by event, and after every event the services it affects and how are
//! noted at the event's time (`at`, the time its command carried). Sweeping the merged
//! changes in time order gives the service's status over each interval, and each interval
//! is split at UTC midnights. Nothing is sampled: an outage from 23:50 to 00:20 is ten
//! minutes in one day and twenty in the next.
//!
//! Time down: `major_outage` counts whole, `partial_outage` as 0.3, and
//! `degraded_performance` and `under_maintenance` as up. Measured to the second. A day
//! counts from the service's creation (days before it are absent) and today up to now.
//! Which resources count is the viewer's: public ones for everyone, and a tenant's own for
//! its keys, as the audience stood at each event.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use deadpool_postgres::GenericClient;
use domain::incident::{Incident, IncidentDecider};
use domain::maintenance::{Maintenance, MaintenanceDecider};
use domain::values::ServiceStatus;
use eventstore::RecordedEvent;
use eventstore::EVENT_COLUMNS;
use uuid::Uuid;

use crate::kinds::Kind;
use crate::queries::Viewer;
use crate::write::{incident_impacts, maintenance_impacts};
use crate::ProjectionError;

/// The most days an uptime covers.
pub const MAX_DAYS: u32 = 90;
/// How much of a minute of `partial_outage` counts as down.
const PARTIAL_OUTAGE_DOWN: f64 = 0.3;

/// A resource that can change a service's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Incident(Uuid),
    Maintenance(Uuid),
}

/// From `at` on, `source` imposes `status` on the service (`None`: nothing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    pub at: DateTime<Utc>,
    pub source: Source,
    pub status: Option<ServiceStatus>,
}

/// One UTC day of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct UptimeDay {
    pub date: NaiveDate,
    /// 100 × (1 − time down ÷ time observed), to four decimals.
    pub uptime_percent: f64,
    /// The worst status the service had that day.
    pub worst_status: ServiceStatus,
    /// The incidents that affected it that day, in the order they first did.
    pub incident_ids: Vec<Uuid>,
}

/// A service's uptime over its last days.
#[derive(Debug, Clone, PartialEq)]
pub struct Uptime {
    pub service_id: Uuid,
    /// Oldest first; today last.
    pub days: Vec<UptimeDay>,
    /// Over all the days shown, weighted by the time observed in each.
    pub uptime_percent: f64,
}

fn percent(down: f64, observed: f64) -> f64 {
    if observed <= 0.0 {
        return 100.0;
    }
    let value = 100.0 * (1.0 - down / observed);
    (value * 10_000.0).round() / 10_000.0
}

fn down_weight(status: ServiceStatus) -> f64 {
    match status {
        ServiceStatus::MajorOutage => 1.0,
        ServiceStatus::PartialOutage => PARTIAL_OUTAGE_DOWN,
        _ => 0.0,
    }
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    date.and_time(NaiveTime::MIN).and_utc()
}

/// The uptime of a service created at `created_at`, over the `days` UTC days that end with
/// the one holding `now`, from its status `changes` (any order).
pub fn uptime(
    service_id: Uuid,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
    days: u32,
    changes: &[Change],
) -> Uptime {
    let days = days.clamp(1, MAX_DAYS);
    let today = now.date_naive();
    let first = today
        .checked_sub_days(Days::new(u64::from(days - 1)))
        .unwrap_or(today);
    let mut changes = changes.to_vec();
    changes.sort_by_key(|c| c.at);

    // The status imposed by each source, as of the sweep's position.
    let mut imposed: BTreeMap<Source, ServiceStatus> = BTreeMap::new();
    let mut next = changes.iter().peekable();
    let mut out = Vec::new();
    let (mut total_down, mut total_observed) = (0.0, 0.0);
    let mut date = first;
    while date <= today {
        let day_end = midnight(date + Days::new(1));
        let from = midnight(date).max(created_at);
        let until = day_end.min(now);
        if until <= from {
            // Before the service existed (or an empty instant at its creation).
            date = date + Days::new(1);
            continue;
        }
        let (mut down, mut worst) = (0.0, ServiceStatus::Operational);
        let mut incidents: Vec<Uuid> = Vec::new();
        let mut cursor = from;
        loop {
            // Every change up to this instant (before the window: the scene it opens on).
            while let Some(change) = next.next_if(|c| c.at <= cursor) {
                apply(&mut imposed, change);
            }
            let segment_end = next.peek().map_or(until, |c| c.at.min(until));
            if segment_end > cursor {
                note_incidents(&imposed, &mut incidents);
                let status = ServiceStatus::worst(imposed.values().copied());
                if status.severity() > worst.severity() {
                    worst = status;
                }
                down += down_weight(status) * seconds(cursor, segment_end);
                cursor = segment_end;
            }
            if cursor >= until {
                break;
            }
        }
        let observed = seconds(from, until);
        out.push(UptimeDay {
            date,
            uptime_percent: percent(down, observed),
            worst_status: worst,
            incident_ids: incidents,
        });
        total_down += down;
        total_observed += observed;
        date = date + Days::new(1);
    }
    Uptime {
        service_id,
        days: out,
        uptime_percent: percent(total_down, total_observed),
    }
}

fn seconds(from: DateTime<Utc>, until: DateTime<Utc>) -> f64 {
    (until - from).num_milliseconds().max(0) as f64 / 1000.0
}

fn apply(imposed: &mut BTreeMap<Source, ServiceStatus>, change: &Change) {
    match change.status {
        Some(status) => imposed.insert(change.source, status),
        None => imposed.remove(&change.source),
    };
}

fn note_incidents(imposed: &BTreeMap<Source, ServiceStatus>, incidents: &mut Vec<Uuid>) {
    for source in imposed.keys() {
        if let Source::Incident(id) = source {
            if !incidents.contains(id) {
                incidents.push(*id);
            }
        }
    }
}

/// Notes, after each event of one resource's stream, what the resource then imposes on
/// each service it affects (or affected before), as `viewer` may see it.
fn stream_changes<K: Kind>(
    events: &[RecordedEvent],
    viewer: &Viewer,
    source: Source,
    at: fn(&K::Event) -> DateTime<Utc>,
    impacts: fn(&K::Resource) -> Vec<(Uuid, ServiceStatus)>,
    visible: fn(&K::Resource, &Viewer) -> bool,
    out: &mut HashMap<Uuid, Vec<Change>>,
) -> Result<(), ProjectionError> {
    let mut state: K::State = Default::default();
    let mut before: HashMap<Uuid, ServiceStatus> = HashMap::new();
    for recorded in events {
        let event = K::decode(recorded).map_err(ProjectionError::Decode)?;
        let when = at(&event);
        state = K::evolve(state, &event);
        let now: HashMap<Uuid, ServiceStatus> = match state.as_ref() {
            Some(resource) if visible(resource, viewer) => impacts(resource).into_iter().collect(),
            _ => HashMap::new(),
        };
        for (service, status) in &now {
            if before.get(service) != Some(status) {
                out.entry(*service).or_default().push(Change {
                    at: when,
                    source,
                    status: Some(*status),
                });
            }
        }
        for service in before.keys().filter(|s| !now.contains_key(s)) {
            out.entry(*service).or_default().push(Change {
                at: when,
                source,
                status: None,
            });
        }
        before = now;
    }
    Ok(())
}

/// The status changes of every service over the time since `since`, as `viewer` sees
/// them: from the incidents and maintenances that were open or active then or have had an
/// update since, each folded from its whole stream.
pub async fn service_changes<C: GenericClient>(
    client: &C,
    viewer: &Viewer,
    since: DateTime<Utc>,
) -> Result<HashMap<Uuid, Vec<Change>>, ProjectionError> {
    let sql = format!(
        "WITH concerned AS ( \
             SELECT resource_kind || '-' || resource_id AS stream_id FROM rm_updates \
              WHERE created_at >= $1 AND resource_kind IN ('incident', 'maintenance') \
             UNION SELECT 'incident-' || id FROM rm_incidents WHERE is_open \
             UNION SELECT 'maintenance-' || id FROM rm_maintenances \
              WHERE status IN ('in_progress', 'verifying')) \
         SELECT {EVENT_COLUMNS} FROM events e JOIN concerned USING (stream_id) \
          ORDER BY e.stream_id, e.stream_version"
    );
    let rows = client.query(&sql, &[&since]).await?;
    let mut streams: Vec<(String, Vec<RecordedEvent>)> = Vec::new();
    for row in &rows {
        let event = RecordedEvent::from_row(row)?;
        match streams.last_mut() {
            Some((id, events)) if *id == event.stream_id => events.push(event),
            _ => streams.push((event.stream_id.clone(), vec![event])),
        }
    }
    let mut out: HashMap<Uuid, Vec<Change>> = HashMap::new();
    for (stream_id, events) in &streams {
        if let Some(id) = stream_id.strip_prefix("incident-") {
            let Ok(id) = id.parse() else { continue };
            stream_changes::<IncidentDecider>(
                events,
                viewer,
                Source::Incident(id),
                domain::incident::Event::at,
                |i: &Incident| incident_impacts(i),
                |i: &Incident, v| v.may_see(&i.audience),
                &mut out,
            )?;
        } else if let Some(id) = stream_id.strip_prefix("maintenance-") {
            let Ok(id) = id.parse() else { continue };
            stream_changes::<MaintenanceDecider>(
                events,
                viewer,
                Source::Maintenance(id),
                domain::maintenance::Event::at,
                |m: &Maintenance| maintenance_impacts(m),
                |m: &Maintenance, v| v.may_see(&m.audience),
                &mut out,
            )?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, hour, minute, 0)
            .single()
            .unwrap_or_default()
    }

    fn date(day: u32) -> NaiveDate {
        at(day, 0, 0).date_naive()
    }

    fn change(when: DateTime<Utc>, source: Source, status: Option<ServiceStatus>) -> Change {
        Change {
            at: when,
            source,
            status,
        }
    }

    const SERVICE: Uuid = Uuid::from_u128(1);
    const A: Uuid = Uuid::from_u128(0xa);
    const B: Uuid = Uuid::from_u128(0xb);
    const M: Uuid = Uuid::from_u128(0xc);

    fn day(uptime: &Uptime, d: u32) -> &UptimeDay {
        uptime
            .days
            .iter()
            .find(|x| x.date == date(d))
            .unwrap_or_else(|| panic!("no day {d}"))
    }

    #[test]
    fn an_outage_across_midnight_is_split_between_the_two_days() {
        // Major outage 23:50 on the 10th to 00:20 on the 11th: 10 and 20 minutes.
        let changes = [
            change(
                at(10, 23, 50),
                Source::Incident(A),
                Some(ServiceStatus::MajorOutage),
            ),
            change(at(11, 0, 20), Source::Incident(A), None),
        ];
        let u = uptime(SERVICE, at(1, 0, 0), at(12, 12, 0), 90, &changes);
        assert_eq!(day(&u, 10).uptime_percent, percent(10.0 * 60.0, 86_400.0));
        assert_eq!(day(&u, 11).uptime_percent, percent(20.0 * 60.0, 86_400.0));
        assert_eq!(day(&u, 10).worst_status, ServiceStatus::MajorOutage);
        assert_eq!(day(&u, 11).incident_ids, vec![A]);
        assert_eq!(day(&u, 9).uptime_percent, 100.0);
        assert_eq!(day(&u, 9).worst_status, ServiceStatus::Operational);
        assert!(day(&u, 9).incident_ids.is_empty());
        // 30 minutes down out of 11 days and 12 hours observed.
        let observed = (11.0 * 24.0 + 12.0) * 3600.0;
        assert_eq!(u.uptime_percent, percent(30.0 * 60.0, observed));
    }

    #[test]
    fn a_partial_outage_counts_three_tenths_and_degraded_and_maintenance_count_as_up() {
        let changes = [
            // 100 minutes of partial outage: 30 minutes down.
            change(
                at(5, 10, 0),
                Source::Incident(A),
                Some(ServiceStatus::PartialOutage),
            ),
            change(
                at(5, 11, 40),
                Source::Incident(A),
                Some(ServiceStatus::DegradedPerformance),
            ),
            change(at(5, 15, 0), Source::Incident(A), None),
            // Two hours of maintenance the next day.
            change(
                at(6, 1, 0),
                Source::Maintenance(M),
                Some(ServiceStatus::UnderMaintenance),
            ),
            change(at(6, 3, 0), Source::Maintenance(M), None),
        ];
        let u = uptime(SERVICE, at(1, 0, 0), at(7, 0, 0), 90, &changes);
        assert_eq!(day(&u, 5).uptime_percent, percent(30.0 * 60.0, 86_400.0));
        assert!((day(&u, 5).uptime_percent - 97.9167).abs() < 1e-9);
        assert_eq!(day(&u, 5).worst_status, ServiceStatus::PartialOutage);
        assert_eq!(day(&u, 6).uptime_percent, 100.0);
        assert_eq!(day(&u, 6).worst_status, ServiceStatus::UnderMaintenance);
        assert!(day(&u, 6).incident_ids.is_empty());
    }

    #[test]
    fn overlapping_incidents_count_their_worst_once() {
        // A: partial 08:00–12:00; B: major 10:00–11:00. Down: 08–10 and 11–12 at 0.3
        // (3 h → 54 min) and 10–11 whole (60 min).
        let changes = [
            change(
                at(3, 8, 0),
                Source::Incident(A),
                Some(ServiceStatus::PartialOutage),
            ),
            change(
                at(3, 10, 0),
                Source::Incident(B),
                Some(ServiceStatus::MajorOutage),
            ),
            change(at(3, 11, 0), Source::Incident(B), None),
            change(at(3, 12, 0), Source::Incident(A), None),
        ];
        let u = uptime(SERVICE, at(1, 0, 0), at(4, 0, 0), 90, &changes);
        assert_eq!(day(&u, 3).uptime_percent, percent(114.0 * 60.0, 86_400.0));
        assert_eq!(day(&u, 3).worst_status, ServiceStatus::MajorOutage);
        assert_eq!(day(&u, 3).incident_ids, vec![A, B]);
    }

    #[test]
    fn a_maintenance_under_an_incident_does_not_hide_it() {
        let changes = [
            change(
                at(3, 8, 0),
                Source::Maintenance(M),
                Some(ServiceStatus::UnderMaintenance),
            ),
            change(
                at(3, 9, 0),
                Source::Incident(A),
                Some(ServiceStatus::MajorOutage),
            ),
            change(at(3, 9, 30), Source::Incident(A), None),
            change(at(3, 10, 0), Source::Maintenance(M), None),
        ];
        let u = uptime(SERVICE, at(1, 0, 0), at(4, 0, 0), 90, &changes);
        assert_eq!(day(&u, 3).uptime_percent, percent(30.0 * 60.0, 86_400.0));
    }

    #[test]
    fn days_before_the_service_existed_are_absent_and_its_first_day_counts_from_creation() {
        // Created at noon on the 20th; down 12:00–13:00; now is 06:00 on the 22nd.
        let changes = [
            change(
                at(20, 12, 0),
                Source::Incident(A),
                Some(ServiceStatus::MajorOutage),
            ),
            change(at(20, 13, 0), Source::Incident(A), None),
        ];
        let u = uptime(SERVICE, at(20, 12, 0), at(22, 6, 0), 90, &changes);
        let dates: Vec<NaiveDate> = u.days.iter().map(|d| d.date).collect();
        assert_eq!(dates, vec![date(20), date(21), date(22)]);
        assert_eq!(day(&u, 20).uptime_percent, percent(3600.0, 12.0 * 3600.0));
        // Today counts up to now.
        assert_eq!(day(&u, 22).uptime_percent, 100.0);
        assert_eq!(u.uptime_percent, percent(3600.0, 42.0 * 3600.0));
    }

    #[test]
    fn an_incident_open_since_before_the_window_counts_from_the_window_on() {
        let changes = [change(
            at(1, 0, 0),
            Source::Incident(A),
            Some(ServiceStatus::MajorOutage),
        )];
        // Three days: the 8th, 9th and 10th (until noon), all down.
        let u = uptime(SERVICE, at(1, 0, 0), at(10, 12, 0), 3, &changes);
        assert_eq!(u.days.len(), 3);
        assert!(u.days.iter().all(|d| d.uptime_percent == 0.0));
        assert!(u.days.iter().all(|d| d.incident_ids == vec![A]));
        assert_eq!(u.uptime_percent, 0.0);
    }

    #[test]
    fn a_day_with_nothing_is_whole() {
        let u = uptime(SERVICE, at(1, 0, 0), at(30, 23, 59), 90, &[]);
        assert_eq!(u.days.len(), 30);
        assert!(u.days.iter().all(|d| d.uptime_percent == 100.0));
        assert_eq!(u.uptime_percent, 100.0);
    }
}
