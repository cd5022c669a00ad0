//! Maintenances: planned work, `scheduled → in_progress → verifying → completed`, or
//! `cancelled` before it completes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::collections::{BTreeMap, BTreeSet};

use crate::incident::{
    message_translations, translated_message, translated_title, MessageText, WITHOUT_TRANSLATIONS,
};
use crate::language::{pick, refuse_empty, translations, Language, RawTranslations};
use crate::values::{
    labels, text, time, Audience, MaintenanceId, ServiceId, Timeline, UpdateId, MAX_LIST_LEN,
    MAX_MESSAGE_CHARS, MAX_TITLE_CHARS,
};
use crate::{decode, Decider, DecodeError, DomainError, StoredData, Validation};

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
    /// The scheduler's moves, each decided on the time it carries: start at `starts_at`,
    /// complete at `ends_at`, remind before the start. Each does nothing (no event) when it
    /// is not due or a publisher moved first.
    Start(Automatic),
    Complete(Automatic),
    Remind(Automatic),
}

/// A move the scheduler makes at `at` (the time comes in the command: the domain reads no
/// clock).
#[derive(Debug, Clone, PartialEq)]
pub struct Automatic {
    pub update_id: UpdateId,
    pub default_language: Language,
    pub at: DateTime<Utc>,
}

/// The longest a reminder may come before the start: a year.
pub const MAX_REMIND_BEFORE_MINUTES: u32 = 525_600;

/// Who the scheduler's events name as their author.
pub const SYSTEM: &str = "system";

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
    /// Move it to `in_progress` at `starts_at`, and to `completed` at `ends_at`, unless a
    /// publisher moved it first.
    pub auto_start: bool,
    pub auto_complete: bool,
    /// Remind subscribers this many minutes before the start; 0: no reminder.
    pub remind_before_minutes: u32,
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
    ReminderSent(ReminderSent),
}

/// Subscribers were reminded that the work starts soon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderSent {
    pub starts_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
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
    /// What the scheduler does with it (schema version 3; older ones: nothing).
    pub auto_start: bool,
    pub auto_complete: bool,
    pub remind_before_minutes: u32,
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
    /// When it happened, as its command said.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Event::Scheduled(e) => e.at,
            Event::UpdatePosted(e) => e.at,
            Event::ReminderSent(e) => e.at,
        }
    }

    /// The schema version of the stored form written today. `maintenance.scheduled` v2
    /// added `regions` and v3 `translations` and the automation (`auto_start`,
    /// `auto_complete`, `remind_before_minutes`); `maintenance.update_posted` v2 added
    /// `translations`. Older payloads are upcast with none (and no automation: the
    /// scheduler never moves a maintenance its publisher did not hand it).
    pub fn schema_version(&self) -> u32 {
        match self {
            Event::Scheduled(_) => 3,
            Event::UpdatePosted(_) => 2,
            Event::ReminderSent(_) => 1,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Scheduled(_) => "maintenance.scheduled",
            Event::UpdatePosted(_) => "maintenance.update_posted",
            Event::ReminderSent(_) => "maintenance.reminder_sent",
        }
    }

    pub fn from_stored<'a>(
        type_name: &str,
        schema_version: u32,
        data: impl Into<StoredData<'a>>,
    ) -> Result<Event, DecodeError> {
        let data = data.into();
        match type_name {
            "maintenance.scheduled" => decode(
                type_name,
                schema_version,
                data,
                &[scheduled_v1_to_v2, scheduled_v2_to_v3],
                Event::Scheduled,
            ),
            "maintenance.reminder_sent" => {
                decode(type_name, schema_version, data, &[], Event::ReminderSent)
            }
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

/// v2 had no translations and no automation: read with none of either.
fn scheduled_v2_to_v3(
    v2: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let mut v3 = WITHOUT_TRANSLATIONS(v2)?;
    for field in ["auto_start", "auto_complete", "remind_before_minutes"] {
        if v3.contains_key(field) {
            return Err(format!("a version 2 schedule has no {field}"));
        }
    }
    v3.insert("auto_start".into(), false.into());
    v3.insert("auto_complete".into(), false.into());
    v3.insert("remind_before_minutes".into(), 0.into());
    Ok(v3)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MaintenanceUpdate {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub id: UpdateId,
    pub status: MaintenanceStatus,
    pub message: String,
    #[serde(serialize_with = "crate::values::rfc3339::serialize")]
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
    #[serde(serialize_with = "crate::values::rfc3339::serialize")]
    pub starts_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::values::rfc3339::serialize")]
    pub ends_at: DateTime<Utc>,
    pub audience: Audience,
    /// Oldest first.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<MaintenanceUpdate>))]
    pub updates: Timeline<MaintenanceUpdate>,
    /// Crier moves it to `in_progress` at `starts_at` (unless a publisher moved it first).
    #[serde(default)]
    pub auto_start: bool,
    /// Crier moves it to `completed` at `ends_at` (unless a publisher moved it first).
    #[serde(default)]
    pub auto_complete: bool,
    /// Subscribers are reminded this many minutes before the start; 0: never.
    #[serde(default)]
    pub remind_before_minutes: u32,
    /// When they were reminded.
    #[serde(default)]
    #[serde(serialize_with = "crate::values::rfc3339::option::serialize")]
    pub reminded_at: Option<DateTime<Utc>>,
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

/// The words of the scheduler's updates, in the languages Crier has them in.
fn automatic_texts(status: MaintenanceStatus) -> [(&'static str, &'static str); 2] {
    match status {
        MaintenanceStatus::InProgress => [
            ("en", "The maintenance has started."),
            ("cy", "Mae'r gwaith cynnal wedi dechrau."),
        ],
        _ => [
            ("en", "The maintenance is complete."),
            ("cy", "Mae'r gwaith cynnal wedi'i gwblhau."),
        ],
    }
}

/// The scheduler moving a maintenance to `to` at `c.at`: an update by `system` when the
/// maintenance hands that move to Crier, it is due, and nobody made it (or a later one)
/// first; otherwise nothing.
fn automatic_move(state: &State, c: &Automatic, to: MaintenanceStatus) -> Vec<Event> {
    let Some(maintenance) = state else {
        return Vec::new();
    };
    let due = match to {
        MaintenanceStatus::InProgress => {
            maintenance.auto_start
                && maintenance.status == MaintenanceStatus::Scheduled
                && c.at >= maintenance.starts_at
        }
        _ => {
            maintenance.auto_complete
                && maintenance.status.is_active()
                && c.at >= maintenance.ends_at
                && maintenance.began_in_time()
        }
    };
    if !due || maintenance.updates.iter().any(|u| u.id == c.update_id) {
        return Vec::new();
    }
    let texts = automatic_texts(to);
    let default = c.default_language.as_str();
    let message = texts
        .iter()
        .find(|(tag, _)| *tag == default)
        .unwrap_or(&texts[0])
        .1
        .to_owned();
    let translations = texts
        .iter()
        .filter(|(_, text)| *text != message)
        .filter_map(|(tag, text)| {
            let language = Language::parse("language", tag).ok()?;
            let text = MessageText {
                message: (*text).to_owned(),
            };
            Some((language, text))
        })
        .collect();
    vec![Event::UpdatePosted(MaintenanceUpdatePosted {
        update_id: c.update_id,
        status: to,
        message,
        translations,
        author: SYSTEM.to_owned(),
        at: c.at,
    })]
}

/// The reminder, when due (`Maintenance::reminder_due`).
fn reminder(state: &State, c: &Automatic) -> Vec<Event> {
    let Some(maintenance) = state else {
        return Vec::new();
    };
    if !maintenance.reminder_due(c.at) {
        return Vec::new();
    }
    vec![Event::ReminderSent(ReminderSent {
        starts_at: maintenance.starts_at,
        at: c.at,
    })]
}

impl Maintenance {
    /// Did the work get under way before `ends_at`, or by the scheduler (catching up)? One
    /// a publisher started only after its end was due is theirs to complete: the scheduler
    /// would end it the moment it began.
    fn began_in_time(&self) -> bool {
        self.updates
            .iter()
            .find(|u| u.status.is_active())
            .is_none_or(|u| u.author == SYSTEM || u.created_at < self.ends_at)
    }

    /// Is the reminder due at `at`? Once, from `remind_before_minutes` before the start
    /// until the start, and only for a maintenance announced before that window opened: one
    /// scheduled inside it has just told every subscriber, and a reminder seconds later
    /// would say the same again.
    fn reminder_due(&self, at: DateTime<Utc>) -> bool {
        let window_opens =
            self.starts_at - chrono::Duration::minutes(i64::from(self.remind_before_minutes));
        // A timeline without its first update (never expected) keeps the reminder.
        let announced_before_window =
            (self.updates.first()).is_none_or(|u| u.created_at < window_opens);
        self.remind_before_minutes > 0
            && self.status == MaintenanceStatus::Scheduled
            && self.reminded_at.is_none()
            && announced_before_window
            && at >= window_opens
            && at < self.starts_at
    }

    /// The scheduler's next move for this maintenance at `now`, if any is due.
    pub fn due(&self, now: DateTime<Utc>) -> Option<AutomaticMove> {
        match self.status {
            MaintenanceStatus::Scheduled if self.auto_start && now >= self.starts_at => {
                Some(AutomaticMove::Start)
            }
            MaintenanceStatus::Scheduled if self.reminder_due(now) => Some(AutomaticMove::Remind),
            status
                if status.is_active()
                    && self.auto_complete
                    && now >= self.ends_at
                    && self.began_in_time() =>
            {
                Some(AutomaticMove::Complete)
            }
            _ => None,
        }
    }
}

/// What the scheduler does next to a maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutomaticMove {
    Start,
    Complete,
    Remind,
}

impl AutomaticMove {
    pub fn command(self, automatic: Automatic) -> Command {
        match self {
            AutomaticMove::Start => Command::Start(automatic),
            AutomaticMove::Complete => Command::Complete(automatic),
            AutomaticMove::Remind => Command::Remind(automatic),
        }
    }
}

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
                            title: translated_title(v, field, t.title.as_deref(), true),
                            message: translated_message(v, field, t.message.as_deref(), true),
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
                if c.remind_before_minutes > MAX_REMIND_BEFORE_MINUTES {
                    v.refuse(
                        "remind_before_minutes",
                        "must be at most 525600 (a year); 0 for no reminder",
                    );
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
                    auto_start: c.auto_start,
                    auto_complete: c.auto_complete,
                    remind_before_minutes: c.remind_before_minutes,
                    author,
                    at: c.at,
                })])
            }
            Command::Start(c) => Ok(automatic_move(state, c, MaintenanceStatus::InProgress)),
            Command::Complete(c) => Ok(automatic_move(state, c, MaintenanceStatus::Completed)),
            Command::Remind(c) => Ok(reminder(state, c)),
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
                auto_start: e.auto_start,
                auto_complete: e.auto_complete,
                remind_before_minutes: e.remind_before_minutes,
                reminded_at: None,
            }),
            (Some(mut maintenance), Event::ReminderSent(e)) => {
                maintenance.reminded_at = Some(e.at);
                Some(maintenance)
            }
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
            auto_start: true,
            auto_complete: true,
            remind_before_minutes: 60,
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
            // Read with no automation: it was never handed to the scheduler.
            (payload.auto_start, payload.auto_complete) = (false, false);
            payload.remind_before_minutes = 0;
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

    fn automatic(n: u128, hour: u32, minute: u32) -> Automatic {
        Automatic {
            update_id: Uuid::from_u128(900 + n),
            default_language: Language::english(),
            at: Utc.with_ymd_and_hms(2026, 11, 28, hour, minute, 0).unwrap(),
        }
    }

    #[test]
    fn the_scheduler_reminds_starts_and_completes_each_once_and_only_when_due() {
        let mut history = vec![scheduled()];
        let state = |h: &[Event]| MaintenanceDecider::fold(h);
        // Too early for anything; then the reminder, once, an hour before 22:00.
        assert!(given::<MaintenanceDecider>(&history)
            .when(Command::Remind(automatic(1, 20, 59)))
            .unwrap()
            .is_empty());
        assert_eq!(
            state(&history).unwrap().due(automatic(0, 21, 0).at),
            Some(AutomaticMove::Remind)
        );
        let reminded = given::<MaintenanceDecider>(&history)
            .when(Command::Remind(automatic(1, 21, 0)))
            .unwrap();
        assert!(matches!(reminded[..], [Event::ReminderSent(_)]));
        history.extend(reminded);
        assert!(given::<MaintenanceDecider>(&history)
            .when(Command::Remind(automatic(2, 21, 30)))
            .unwrap()
            .is_empty());
        assert_eq!(state(&history).unwrap().due(automatic(0, 21, 30).at), None);
        // Not started before its time; started at it, by the system, in both languages.
        assert!(given::<MaintenanceDecider>(&history)
            .when(Command::Start(automatic(3, 21, 59)))
            .unwrap()
            .is_empty());
        let started = given::<MaintenanceDecider>(&history)
            .when(Command::Start(automatic(3, 22, 0)))
            .unwrap();
        let Event::UpdatePosted(e) = &started[0] else {
            panic!("{started:?}")
        };
        assert_eq!((e.status, e.author.as_str()), (InProgress, SYSTEM));
        assert_eq!(e.message, "The maintenance has started.");
        assert!(e
            .translations
            .contains_key(&Language::parse("l", "cy").unwrap()));
        history.extend(started);
        assert!(given::<MaintenanceDecider>(&history)
            .when(Command::Start(automatic(4, 22, 1)))
            .unwrap()
            .is_empty());
        assert_eq!(
            state(&history).unwrap().due(automatic(0, 23, 0).at),
            Some(AutomaticMove::Complete)
        );
        let completed = given::<MaintenanceDecider>(&history)
            .when(Command::Complete(automatic(5, 23, 0)))
            .unwrap();
        history.extend(completed);
        assert_eq!(state(&history).unwrap().status, Completed);
        assert_eq!(state(&history).unwrap().due(automatic(0, 23, 30).at), None);
    }

    #[test]
    fn a_publishers_own_move_first_wins_and_the_scheduler_then_does_nothing() {
        let cancelled = through(&[Cancelled]).unwrap();
        let mut history = vec![scheduled()];
        history.extend(cancelled);
        for command in [
            Command::Start(automatic(1, 22, 0)),
            Command::Complete(automatic(2, 23, 0)),
            Command::Remind(automatic(3, 21, 30)),
        ] {
            assert!(given::<MaintenanceDecider>(&history)
                .when(command)
                .unwrap()
                .is_empty());
        }
        // Started early by hand: no second start; completed on time by the scheduler.
        let mut early = vec![scheduled()];
        early.extend(through(&[InProgress]).unwrap().into_iter().skip(1));
        assert!(given::<MaintenanceDecider>(&early)
            .when(Command::Start(automatic(4, 22, 0)))
            .unwrap()
            .is_empty());
        assert_eq!(
            given::<MaintenanceDecider>(&early)
                .when(Command::Complete(automatic(5, 23, 0)))
                .unwrap()
                .len(),
            1
        );
        // Without automation, nothing moves by itself.
        let mut manual = schedule();
        manual.auto_start = false;
        manual.auto_complete = false;
        manual.remind_before_minutes = 0;
        let events = given::<MaintenanceDecider>(&[])
            .when(Command::Schedule(manual))
            .unwrap();
        let state = MaintenanceDecider::fold(&events).unwrap();
        assert_eq!(state.due(automatic(0, 21, 30).at), None);
        assert_eq!(state.due(automatic(0, 23, 30).at), None);
    }

    #[test]
    fn a_maintenance_announced_inside_its_reminder_window_gets_no_reminder() {
        let announced_at = |hour, minute| {
            let mut c = schedule();
            c.at = Utc.with_ymd_and_hms(2026, 11, 28, hour, minute, 0).unwrap();
            MaintenanceDecider::decide(&Command::Schedule(c), &None).unwrap()
        };
        // The scheduler's next move at hour:minute for a maintenance with this history.
        let due_at = |history: &[Event], hour, minute| {
            MaintenanceDecider::fold(history)
                .unwrap()
                .due(automatic(0, hour, minute).at)
        };
        // Announced at 21:30 for 22:00 with an hour's reminder: the announcement was it.
        let late = announced_at(21, 30);
        assert_eq!(due_at(&late, 21, 31), None);
        assert!(given::<MaintenanceDecider>(&late)
            .when(Command::Remind(automatic(1, 21, 31)))
            .unwrap()
            .is_empty());
        // Announced as the window opens: inside it, so the announcement was the reminder.
        assert_eq!(due_at(&announced_at(21, 0), 21, 0), None);
        // Announced before the window opened (20:59 is before 21:00): reminded inside it.
        assert_eq!(
            due_at(&announced_at(20, 59), 21, 0),
            Some(AutomaticMove::Remind)
        );
        // The start is still made on time for the late one.
        assert_eq!(due_at(&late, 22, 0), Some(AutomaticMove::Start));
    }

    #[test]
    fn a_reminder_longer_than_a_year_is_refused() {
        let mut c = schedule();
        c.remind_before_minutes = MAX_REMIND_BEFORE_MINUTES + 1;
        let Err(DomainError::Invalid(errors)) =
            given::<MaintenanceDecider>(&[]).when(Command::Schedule(c))
        else {
            panic!("refused")
        };
        assert_eq!(errors[0].field, "remind_before_minutes");
    }

    #[test]
    fn work_started_by_hand_after_its_end_is_not_completed_the_moment_it_begins() {
        let mut history = vec![scheduled()];
        history.extend(
            given::<MaintenanceDecider>(&history)
                .when(Command::PostUpdate(PostUpdate {
                    update_id: Uuid::from_u128(77),
                    status: InProgress,
                    message: "Late, but starting.".into(),
                    translations: RawTranslations::new(),
                    default_language: Language::english(),
                    author: "key-1".into(),
                    at: Utc.with_ymd_and_hms(2026, 11, 28, 23, 30, 0).unwrap(),
                }))
                .unwrap(),
        );
        let late = automatic(1, 23, 31);
        assert_eq!(
            MaintenanceDecider::fold(&history).unwrap().due(late.at),
            None
        );
        assert!(given::<MaintenanceDecider>(&history)
            .when(Command::Complete(late))
            .unwrap()
            .is_empty());
    }
}
