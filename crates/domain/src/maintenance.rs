//! Maintenances: planned work, `scheduled → in_progress → verifying → completed`, or
//! `cancelled` before it completes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::collections::{BTreeMap, BTreeSet};

use crate::incident::{message_translations, MessageText, WITHOUT_TRANSLATIONS};
use crate::language::{pick, refuse_empty, translated, translations, Language, RawTranslations};
use crate::values::{
    labels, text, time, Audience, MaintenanceId, ServiceId, Timeline, UpdateId, MAX_LIST_LEN,
    MAX_MESSAGE_CHARS, MAX_TITLE_CHARS,
};
use crate::{decode, Decider, DecodeError, DomainError, Validation};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MaintenanceStatus {
    Scheduled,
    InProgress,
    Verifying,
    Completed,
    Cancelled,
}

impl MaintenanceStatus {
    /// The stored and served name (the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            MaintenanceStatus::Scheduled => "scheduled",
            MaintenanceStatus::InProgress => "in_progress",
            MaintenanceStatus::Verifying => "verifying",
            MaintenanceStatus::Completed => "completed",
            MaintenanceStatus::Cancelled => "cancelled",
        }
    }

    /// Is the work under way, so that the services it affects are under maintenance?
    pub fn is_active(self) -> bool {
        matches!(
            self,
            MaintenanceStatus::InProgress | MaintenanceStatus::Verifying
        )
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            MaintenanceStatus::Completed | MaintenanceStatus::Cancelled
        )
    }

    /// May an update move a maintenance from `self` to `next`? An update may also keep the
    /// status (a progress note). Verification can send the work back to in progress.
    pub fn may_become(self, next: MaintenanceStatus) -> bool {
        use MaintenanceStatus::*;
        match (self, next) {
            (Completed | Cancelled, _) => false,
            (_, Cancelled) => true,
            (from, to) if from == to => true,
            (Scheduled, InProgress) => true,
            (InProgress, Verifying | Completed) => true,
            (Verifying, InProgress | Completed) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Schedule(Schedule),
    PostUpdate(PostUpdate),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub maintenance_id: MaintenanceId,
    pub update_id: UpdateId,
    pub title: String,
    pub message: String,
    pub affected_services: Vec<ServiceId>,
    /// Free labels such as `europe`; empty when the work is not tied to any.
    pub regions: Vec<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub audience: Audience,
    pub translations: RawTranslations<ScheduleTexts>,
    /// The language of the command's own texts.
    pub default_language: Language,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PostUpdate {
    pub update_id: UpdateId,
    pub status: MaintenanceStatus,
    pub message: String,
    pub translations: RawTranslations<MessageText>,
    pub default_language: Language,
    pub author: String,
    pub at: DateTime<Utc>,
}

/// A schedule's texts in one more language.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleTexts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::values::schema::title))]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::values::schema::message))]
    pub message: Option<String>,
}

/// Serialises as its payload alone; read back by type name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    Scheduled(MaintenanceScheduled),
    UpdatePosted(MaintenanceUpdatePosted),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceScheduled {
    pub maintenance_id: MaintenanceId,
    pub update_id: UpdateId,
    pub title: String,
    pub message: String,
    pub affected_services: Vec<ServiceId>,
    /// Free labels such as `europe`; empty when the work is not tied to any.
    pub regions: Vec<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub audience: Audience,
    /// The texts in other languages than the default (schema version 3).
    #[serde(default)]
    pub translations: BTreeMap<Language, ScheduleTexts>,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceUpdatePosted {
    pub update_id: UpdateId,
    pub status: MaintenanceStatus,
    pub message: String,
    /// The message in other languages (schema version 2).
    #[serde(default)]
    pub translations: BTreeMap<Language, MessageText>,
    pub author: String,
    pub at: DateTime<Utc>,
}

impl Event {
    /// The schema version of the stored form written today. `maintenance.scheduled` v2
    /// added `regions` and v3 `translations`; `maintenance.update_posted` v2 added
    /// `translations`. Older payloads are upcast with none.
    pub fn schema_version(&self) -> u32 {
        match self {
            Event::Scheduled(_) => 3,
            Event::UpdatePosted(_) => 2,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Scheduled(_) => "maintenance.scheduled",
            Event::UpdatePosted(_) => "maintenance.update_posted",
        }
    }

    pub fn from_stored(
        type_name: &str,
        schema_version: u32,
        data: serde_json::Value,
    ) -> Result<Event, DecodeError> {
        match type_name {
            "maintenance.scheduled" => decode(
                type_name,
                schema_version,
                data,
                &[scheduled_v1_to_v2, WITHOUT_TRANSLATIONS],
                Event::Scheduled,
            ),
            "maintenance.update_posted" => decode(
                type_name,
                schema_version,
                data,
                &[WITHOUT_TRANSLATIONS],
                Event::UpdatePosted,
            ),
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

/// v1 named no regions: the work was not tied to any.
fn scheduled_v1_to_v2(
    mut v1: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    if v1.contains_key("regions") {
        return Err("a version 1 payload has no regions".into());
    }
    v1.insert("regions".into(), serde_json::Value::Array(Vec::new()));
    Ok(v1)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MaintenanceUpdate {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub id: UpdateId,
    pub status: MaintenanceStatus,
    pub message: String,
    pub created_at: DateTime<Utc>,
    pub author: String,
    /// The message in other languages.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub translations: BTreeMap<Language, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Maintenance {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub id: MaintenanceId,
    pub title: String,
    pub status: MaintenanceStatus,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>, format = Uuid))]
    pub affected_services: Vec<ServiceId>,
    pub regions: Vec<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub audience: Audience,
    /// Oldest first.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<MaintenanceUpdate>))]
    pub updates: Timeline<MaintenanceUpdate>,
    /// The title in other languages.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub title_translations: BTreeMap<Language, String>,
}

impl Maintenance {
    /// Every language the maintenance has a text in besides the default one.
    pub fn languages(&self) -> BTreeSet<&Language> {
        let mut languages: BTreeSet<&Language> = self.title_translations.keys().collect();
        for update in &self.updates {
            languages.extend(update.translations.keys());
        }
        languages
    }

    /// The maintenance with every text in `language` where it has one (else in the
    /// default language), and no translations left.
    pub fn in_language(mut self, language: Option<&Language>) -> Maintenance {
        self.title = pick(&self.title, &self.title_translations, language).to_owned();
        self.title_translations.clear();
        if self.updates.iter().any(|u| !u.translations.is_empty()) {
            let updates: Vec<MaintenanceUpdate> = (self.updates.iter())
                .map(|update| MaintenanceUpdate {
                    message: pick(&update.message, &update.translations, language).to_owned(),
                    translations: BTreeMap::new(),
                    ..MaintenanceUpdate::clone(update)
                })
                .collect();
            self.updates = updates.into();
        }
        self
    }
}

pub type State = Option<Maintenance>;

pub struct MaintenanceDecider;

fn services(values: &[ServiceId]) -> Result<Vec<ServiceId>, DomainError> {
    if values.len() > MAX_LIST_LEN {
        return Err(DomainError::invalid(
            "affected_services",
            format!("at most {MAX_LIST_LEN} services"),
        ));
    }
    let mut out: Vec<ServiceId> = Vec::with_capacity(values.len());
    for (i, id) in values.iter().enumerate() {
        if out.contains(id) {
            return Err(DomainError::invalid(
                format!("affected_services[{i}]"),
                "listed twice",
            ));
        }
        out.push(*id);
    }
    Ok(out)
}

impl Decider for MaintenanceDecider {
    type Command = Command;
    type Event = Event;
    type State = State;

    fn decide(command: &Command, state: &State) -> Result<Vec<Event>, DomainError> {
        match command {
            Command::Schedule(c) => {
                if state.is_some() {
                    return Err(DomainError::Conflict(
                        "this maintenance is scheduled already".into(),
                    ));
                }
                let mut v = Validation::default();
                let title = v.check(text("title", &c.title, MAX_TITLE_CHARS));
                let message = v.check(text("message", &c.message, MAX_MESSAGE_CHARS));
                let affected_services = v.check(services(&c.affected_services));
                let regions = v.check(labels("regions", &c.regions));
                let audience = v.check(c.audience.validated());
                let translations = translations(
                    &c.translations,
                    &c.default_language,
                    &mut v,
                    |field, t: &ScheduleTexts, v| {
                        let texts = ScheduleTexts {
                            title: translated(
                                v,
                                &format!("{field}.title"),
                                t.title.as_deref(),
                                true,
                                |f, x| text(f, x, MAX_TITLE_CHARS),
                            ),
                            message: translated(
                                v,
                                &format!("{field}.message"),
                                t.message.as_deref(),
                                true,
                                |f, x| text(f, x, MAX_MESSAGE_CHARS),
                            ),
                        };
                        refuse_empty(v, field, t == &ScheduleTexts::default());
                        texts
                    },
                );
                let author = v.check(text("author", &c.author, MAX_TITLE_CHARS));
                let starts_at = v.check(time("starts_at", c.starts_at).map(Some));
                let ends_at = v.check(time("ends_at", c.ends_at).map(Some));
                if let (Some(starts_at), Some(ends_at)) = (starts_at, ends_at) {
                    if ends_at <= starts_at {
                        v.refuse("ends_at", "must be after starts_at");
                    }
                }
                v.finish()?;
                Ok(vec![Event::Scheduled(MaintenanceScheduled {
                    maintenance_id: c.maintenance_id,
                    update_id: c.update_id,
                    title,
                    message,
                    affected_services,
                    regions,
                    starts_at: c.starts_at,
                    ends_at: c.ends_at,
                    audience,
                    translations,
                    author,
                    at: c.at,
                })])
            }
            Command::PostUpdate(c) => {
                let maintenance = state
                    .as_ref()
                    .ok_or_else(|| DomainError::NotFound("maintenance".into()))?;
                let mut v = Validation::default();
                let message = v.check(text("message", &c.message, MAX_MESSAGE_CHARS));
                let translations =
                    message_translations(&c.translations, &c.default_language, &mut v);
                let author = v.check(text("author", &c.author, MAX_TITLE_CHARS));
                v.finish()?;
                if maintenance.status.is_finished() {
                    return Err(DomainError::Conflict(format!(
                        "the maintenance is {}",
                        if maintenance.status == MaintenanceStatus::Completed {
                            "completed"
                        } else {
                            "cancelled"
                        }
                    )));
                }
                if !maintenance.status.may_become(c.status) {
                    return Err(DomainError::Conflict(format!(
                        "a maintenance cannot go from {:?} to {:?}",
                        maintenance.status, c.status
                    )));
                }
                if maintenance.updates.iter().any(|u| u.id == c.update_id) {
                    return Err(DomainError::Conflict(
                        "an update with this id exists".into(),
                    ));
                }
                Ok(vec![Event::UpdatePosted(MaintenanceUpdatePosted {
                    update_id: c.update_id,
                    status: c.status,
                    message,
                    translations,
                    author,
                    at: c.at,
                })])
            }
        }
    }

    fn evolve(state: State, event: &Event) -> State {
        match (state, event) {
            (None, Event::Scheduled(e)) => Some(Maintenance {
                id: e.maintenance_id,
                title: e.title.clone(),
                status: MaintenanceStatus::Scheduled,
                affected_services: e.affected_services.clone(),
                regions: e.regions.clone(),
                starts_at: e.starts_at,
                ends_at: e.ends_at,
                audience: e.audience.clone(),
                updates: vec![MaintenanceUpdate {
                    id: e.update_id,
                    status: MaintenanceStatus::Scheduled,
                    message: e.message.clone(),
                    created_at: e.at,
                    author: e.author.clone(),
                    translations: (e.translations.iter())
                        .filter_map(|(l, t)| Some((l.clone(), t.message.clone()?)))
                        .collect(),
                }]
                .into(),
                title_translations: (e.translations.iter())
                    .filter_map(|(l, t)| Some((l.clone(), t.title.clone()?)))
                    .collect(),
            }),
            (Some(mut maintenance), Event::UpdatePosted(e)) => {
                maintenance.status = e.status;
                maintenance.updates.push(MaintenanceUpdate {
                    id: e.update_id,
                    status: e.status,
                    message: e.message.clone(),
                    created_at: e.at,
                    author: e.author.clone(),
                    translations: (e.translations.iter())
                        .map(|(l, t)| (l.clone(), t.message.clone()))
                        .collect(),
                });
                Some(maintenance)
            }
            (state, _) => state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::given::given;
    use chrono::TimeZone;
    use uuid::Uuid;
    use MaintenanceStatus::*;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, hour, 0, 0).unwrap()
    }

    fn schedule() -> Schedule {
        Schedule {
            maintenance_id: Uuid::from_u128(1),
            update_id: Uuid::from_u128(10),
            title: "Exchange database upgrade".into(),
            message: "Mail may be delayed for up to ten minutes.".into(),
            affected_services: vec![Uuid::from_u128(7)],
            regions: vec!["europe".into()],
            starts_at: at(22),
            ends_at: at(23),
            audience: Audience::Public,
            translations: RawTranslations::new(),
            default_language: Language::english(),
            author: "key-1".into(),
            at: at(8),
        }
    }

    fn scheduled() -> Event {
        MaintenanceDecider::decide(&Command::Schedule(schedule()), &None)
            .unwrap()
            .remove(0)
    }

    fn update(n: u128, status: MaintenanceStatus) -> Command {
        Command::PostUpdate(PostUpdate {
            update_id: Uuid::from_u128(10 + n),
            status,
            message: format!("step {n}"),
            translations: RawTranslations::new(),
            default_language: Language::english(),
            author: "key-1".into(),
            at: at(22),
        })
    }

    /// Applies `statuses` one after another from a scheduled maintenance.
    fn through(statuses: &[MaintenanceStatus]) -> Result<Vec<Event>, DomainError> {
        let mut history = vec![scheduled()];
        for (n, status) in statuses.iter().enumerate() {
            let events =
                given::<MaintenanceDecider>(&history).when(update(n as u128 + 1, *status))?;
            history.extend(events);
        }
        Ok(history)
    }

    #[test]
    fn a_maintenance_moves_forward_to_completion() {
        let history = through(&[
            InProgress, InProgress, Verifying, InProgress, Verifying, Completed,
        ])
        .unwrap();
        let done = MaintenanceDecider::fold(&history).unwrap();
        assert_eq!((done.status, done.updates.len()), (Completed, 7));
        assert!(
            through(&[InProgress, Completed]).is_ok(),
            "verification may be skipped"
        );
        assert!(through(&[Cancelled]).is_ok());
        assert!(through(&[InProgress, Verifying, Cancelled]).is_ok());
    }

    #[test]
    fn a_maintenance_never_goes_back_to_scheduled_skips_the_work_or_changes_once_finished() {
        for path in [
            &[Completed][..],
            &[Verifying],
            &[InProgress, Scheduled],
            &[InProgress, Completed, InProgress],
            &[Cancelled, InProgress],
            &[Cancelled, Cancelled],
        ] {
            assert!(
                matches!(through(path), Err(DomainError::Conflict(_))),
                "{path:?}"
            );
        }
    }

    #[test]
    fn times_outside_1970_to_9999_are_refused_by_field() {
        // -4714-12-01 reached PostgreSQL once and answered 500.
        let mut bad = schedule();
        bad.starts_at = Utc.with_ymd_and_hms(-4714, 12, 1, 0, 0, 0).unwrap();
        bad.ends_at = Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap();
        let Err(DomainError::Invalid(errors)) =
            given::<MaintenanceDecider>(&[]).when(Command::Schedule(bad))
        else {
            panic!()
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["starts_at", "ends_at"]);
        let mut edge = schedule();
        edge.starts_at = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
        edge.ends_at = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap();
        assert!(given::<MaintenanceDecider>(&[])
            .when(Command::Schedule(edge))
            .is_ok());
    }

    #[test]
    fn scheduling_checks_its_window_and_fields() {
        let mut bad = schedule();
        bad.ends_at = bad.starts_at;
        bad.title = "".into();
        bad.affected_services.push(bad.affected_services[0]);
        let Err(DomainError::Invalid(errors)) =
            given::<MaintenanceDecider>(&[]).when(Command::Schedule(bad))
        else {
            panic!()
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["title", "affected_services[1]", "ends_at"]);
        assert!(matches!(
            given::<MaintenanceDecider>(&[scheduled()]).when(Command::Schedule(schedule())),
            Err(DomainError::Conflict(_))
        ));
        assert!(matches!(
            given::<MaintenanceDecider>(&[]).when(update(1, InProgress)),
            Err(DomainError::NotFound(_))
        ));
    }

    #[test]
    fn status_names_are_the_serde_names() {
        for status in [Scheduled, InProgress, Verifying, Completed, Cancelled] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }

    #[test]
    fn stored_events_read_back_by_type() {
        for event in through(&[InProgress]).unwrap() {
            let data = serde_json::to_value(&event).unwrap();
            assert_eq!(
                Event::from_stored(event.type_name(), event.schema_version(), data).unwrap(),
                event
            );
        }
    }

    /// A `maintenance.scheduled` payload exactly as schema version 1 wrote it.
    fn scheduled_v1() -> serde_json::Value {
        serde_json::json!({
            "maintenance_id": Uuid::from_u128(1),
            "update_id": Uuid::from_u128(10),
            "title": "Exchange database upgrade",
            "message": "Mail may be delayed for up to ten minutes.",
            "affected_services": [Uuid::from_u128(7)],
            "starts_at": "2026-11-28T22:00:00Z",
            "ends_at": "2026-11-28T23:00:00Z",
            "audience": {"visibility": "public"},
            "author": "key-1",
            "at": "2026-11-28T08:00:00Z"
        })
    }

    #[test]
    fn a_version_1_schedule_is_upcast_with_no_regions_and_folds_like_a_new_one() {
        let old = Event::from_stored("maintenance.scheduled", 1, scheduled_v1()).unwrap();
        let Event::Scheduled(ref old_payload) = old else {
            panic!("read back as {old:?}");
        };
        assert!(old_payload.regions.is_empty());
        let mut today = scheduled();
        if let Event::Scheduled(ref mut payload) = today {
            payload.regions.clear();
        }
        assert_eq!(old, today);
        assert_eq!(
            MaintenanceDecider::fold([&old]),
            MaintenanceDecider::fold([&today])
        );
    }

    #[test]
    fn versions_this_build_cannot_read_are_refused_not_guessed() {
        let current = serde_json::to_value(scheduled()).unwrap();
        for version in [0, 4, u32::MAX] {
            assert!(matches!(
                Event::from_stored("maintenance.scheduled", version, current.clone()),
                Err(DecodeError::UnknownVersion(_, v)) if v == version
            ));
        }
        // A version 1 payload that already has regions is not what version 1 wrote.
        assert!(matches!(
            Event::from_stored("maintenance.scheduled", 1, current),
            Err(DecodeError::Malformed(..))
        ));
        assert!(matches!(
            Event::from_stored("maintenance.scheduled", 1, serde_json::json!([1])),
            Err(DecodeError::Malformed(..))
        ));
    }

    #[test]
    fn a_translated_schedule_reads_in_each_language_and_old_versions_read_with_none() {
        let mut c = schedule();
        c.translations.insert(
            "cy".into(),
            ScheduleTexts {
                title: Some("Uwchraddio cronfa ddata Exchange".into()),
                message: None,
            },
        );
        let events = given::<MaintenanceDecider>(&[])
            .when(Command::Schedule(c.clone()))
            .unwrap();
        let maintenance = MaintenanceDecider::fold(&events).unwrap();
        let welsh = Language::parse("lang", "cy").unwrap();
        let cy = maintenance.clone().in_language(Some(&welsh));
        assert_eq!(cy.title, "Uwchraddio cronfa ddata Exchange");
        assert_eq!(cy.updates[0].message, schedule().message, "falls back");
        assert_eq!(maintenance.in_language(None).title, schedule().title);

        c.translations.insert("cy".into(), ScheduleTexts::default());
        let Err(DomainError::Invalid(errors)) =
            given::<MaintenanceDecider>(&[]).when(Command::Schedule(c))
        else {
            panic!("an empty translation is refused")
        };
        assert_eq!(errors[0].field, "translations.cy");

        let Event::Scheduled(old) =
            Event::from_stored("maintenance.scheduled", 1, scheduled_v1()).unwrap()
        else {
            panic!()
        };
        assert!(old.translations.is_empty());
        let mut v2 = scheduled_v1();
        v2["regions"] = serde_json::json!([]);
        assert!(Event::from_stored("maintenance.scheduled", 2, v2).is_ok());
    }
}
