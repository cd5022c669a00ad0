//! Incidents: declared, updated through `investigating`, `identified`, `monitoring`,
//! closed by `resolved`, reopened, corrected (never erasing), and given a postmortem once
//! resolved.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use std::collections::{BTreeMap, BTreeSet};

use crate::language::{pick, refuse_empty, translated, translations, Language, RawTranslations};
use crate::values::{
    affected_services, labels, text, AffectedService, Audience, ClientAction, ClientActionKind,
    Impact, IncidentId, IncidentStatus, ShownInDefaultLanguage, Timeline, UpdateId,
    MAX_ACTION_MESSAGE_CHARS, MAX_MESSAGE_CHARS, MAX_POSTMORTEM_CHARS, MAX_TITLE_CHARS,
};
use crate::{decode, Decider, DecodeError, DomainError, StoredData, Upcast, Validation};

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Declare(Declare),
    PostUpdate(PostUpdate),
    Correct(Correct),
    Reopen(Reopen),
    PublishPostmortem(PublishPostmortem),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Declare {
    pub incident_id: IncidentId,
    /// The id of the first update, which carries `message`.
    pub update_id: UpdateId,
    pub title: String,
    pub impact: Impact,
    /// `None`: investigating.
    pub status: Option<IncidentStatus>,
    pub message: String,
    pub affected_services: Vec<AffectedService>,
    pub regions: Vec<String>,
    pub audience: Audience,
    pub client_action: ClientAction,
    pub translations: RawTranslations<DeclarationTexts>,
    /// The language of the command's own texts.
    pub default_language: Language,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PostUpdate {
    pub update_id: UpdateId,
    pub status: IncidentStatus,
    pub message: String,
    pub impact: Option<Impact>,
    pub affected_services: Option<Vec<AffectedService>>,
    pub client_action: Option<ClientAction>,
    pub translations: RawTranslations<UpdateTexts>,
    pub default_language: Language,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Correct {
    pub update_id: UpdateId,
    /// The language whose text this corrects (a tag as the client wrote it); `None`: the
    /// default language's.
    pub language: Option<String>,
    pub message: String,
    pub reason: String,
    pub default_language: Language,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reopen {
    pub update_id: UpdateId,
    pub message: String,
    pub translations: RawTranslations<MessageText>,
    pub default_language: Language,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PublishPostmortem {
    pub body: String,
    pub translations: RawTranslations<BodyText>,
    pub default_language: Language,
    pub author: String,
    pub at: DateTime<Utc>,
}

/// A declaration's texts in one more language: each one the declaration carries in the
/// default language may be translated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeclarationTexts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::values::schema::title))]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::values::schema::message))]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_action: Option<ActionText>,
}

/// An update's texts in one more language.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateTexts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::values::schema::message))]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_action: Option<ActionText>,
}

/// A client action's message in one more language.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionText {
    #[cfg_attr(feature = "openapi", schema(schema_with = action_message))]
    pub message: String,
}

#[cfg(feature = "openapi")]
fn action_message() -> utoipa::openapi::Object {
    crate::values::schema::text(MAX_ACTION_MESSAGE_CHARS)
}

/// A message in one more language.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageText {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::values::schema::message))]
    pub message: String,
}

/// A postmortem in one more language.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BodyText {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::values::schema::postmortem))]
    pub body: String,
}

/// What happened to an incident. Stored as `data` of an event whose type is
/// [`Event::type_name`]; the serialised form (field names, snake_case values) is stable.
/// Serialises as its payload alone; read back with [`Event::from_stored`], by type name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    Declared(IncidentDeclared),
    UpdatePosted(IncidentUpdatePosted),
    UpdateCorrected(UpdateCorrected),
    Reopened(IncidentReopened),
    PostmortemPublished(PostmortemPublished),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentDeclared {
    pub incident_id: IncidentId,
    pub update_id: UpdateId,
    pub title: String,
    pub impact: Impact,
    pub status: IncidentStatus,
    pub message: String,
    pub affected_services: Vec<AffectedService>,
    pub regions: Vec<String>,
    pub audience: Audience,
    pub client_action: ClientAction,
    /// The texts in other languages than the default (schema version 2).
    #[serde(default)]
    pub translations: BTreeMap<Language, DeclarationTexts>,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentUpdatePosted {
    pub update_id: UpdateId,
    pub status: IncidentStatus,
    pub message: String,
    /// Present when the update changed it.
    pub impact: Option<Impact>,
    pub affected_services: Option<Vec<AffectedService>>,
    pub client_action: Option<ClientAction>,
    #[serde(default)]
    pub translations: BTreeMap<Language, UpdateTexts>,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateCorrected {
    pub update_id: UpdateId,
    /// The language of the text corrected; absent: the default language (schema version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Language>,
    /// The new text; the one it replaces stays in the update's corrections.
    pub message: String,
    pub reason: String,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentReopened {
    pub update_id: UpdateId,
    pub message: String,
    #[serde(default)]
    pub translations: BTreeMap<Language, MessageText>,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostmortemPublished {
    pub body: String,
    #[serde(default)]
    pub translations: BTreeMap<Language, BodyText>,
    pub author: String,
    pub at: DateTime<Utc>,
}

impl Event {
    /// When it happened, as its command said.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Event::Declared(e) => e.at,
            Event::UpdatePosted(e) => e.at,
            Event::UpdateCorrected(e) => e.at,
            Event::Reopened(e) => e.at,
            Event::PostmortemPublished(e) => e.at,
        }
    }

    /// The stored event type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Declared(_) => "incident.declared",
            Event::UpdatePosted(_) => "incident.update_posted",
            Event::UpdateCorrected(_) => "incident.update_corrected",
            Event::Reopened(_) => "incident.reopened",
            Event::PostmortemPublished(_) => "incident.postmortem_published",
        }
    }

    /// The schema version of the stored form written today: version 2 added the texts'
    /// translations (and a correction's language); version 1 payloads are upcast with none.
    pub fn schema_version(&self) -> u32 {
        2
    }

    /// Reads a stored event back by its type (the JSON alone could be ambiguous).
    pub fn from_stored<'a>(
        type_name: &str,
        schema_version: u32,
        data: impl Into<StoredData<'a>>,
    ) -> Result<Event, DecodeError> {
        let data = data.into();
        match type_name {
            "incident.declared" => decode(
                type_name,
                schema_version,
                data,
                &[WITHOUT_TRANSLATIONS],
                Event::Declared,
            ),
            "incident.update_posted" => decode(
                type_name,
                schema_version,
                data,
                &[WITHOUT_TRANSLATIONS],
                Event::UpdatePosted,
            ),
            "incident.update_corrected" => decode(
                type_name,
                schema_version,
                data,
                &[correction_v1_to_v2],
                Event::UpdateCorrected,
            ),
            "incident.reopened" => decode(
                type_name,
                schema_version,
                data,
                &[WITHOUT_TRANSLATIONS],
                Event::Reopened,
            ),
            "incident.postmortem_published" => decode(
                type_name,
                schema_version,
                data,
                &[WITHOUT_TRANSLATIONS],
                Event::PostmortemPublished,
            ),
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

/// Version 1 of a text-carrying event had no translations: read as version 2 with none.
pub(crate) const WITHOUT_TRANSLATIONS: Upcast = crate::language::v1_without_translations;

/// Version 1 corrected the default language's text only: read as version 2 without a
/// language.
fn correction_v1_to_v2(
    v1: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    if v1.contains_key("language") {
        return Err("a version 1 correction names no language".into());
    }
    Ok(v1)
}

/// One correction: the text it replaced, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Correction {
    pub message: String,
    pub reason: String,
    #[serde(serialize_with = "crate::values::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    pub author: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Update {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub id: UpdateId,
    pub status: IncidentStatus,
    /// The latest text.
    pub message: String,
    #[serde(serialize_with = "crate::values::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    pub author: String,
    /// Every earlier text, oldest first.
    pub corrections: Vec<Correction>,
    /// The message in other languages, each with its own corrections.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub translations: BTreeMap<Language, TranslatedMessage>,
}

impl Update {
    /// The update as readers of the default language are shown it: its translations
    /// dropped.
    fn in_default_language(&self) -> Update {
        Update {
            translations: BTreeMap::new(),
            ..self.clone()
        }
    }
}

impl ShownInDefaultLanguage for Update {
    /// The update as [`Incident::in_language`] leaves it for the default language.
    fn json_in_default_language(&self) -> Box<RawValue> {
        let json = if self.translations.is_empty() {
            serde_json::value::to_raw_value(self)
        } else {
            serde_json::value::to_raw_value(&self.in_default_language())
        };
        // Strings, times and ids, in a map keyed by strings: serde_json cannot fail on them.
        json.unwrap_or_else(|_| RawValue::NULL.to_owned())
    }
}

/// An update's message in one more language, and every earlier text of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranslatedMessage {
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub corrections: Vec<Correction>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Postmortem {
    pub body: String,
    #[serde(serialize_with = "crate::values::rfc3339::serialize")]
    pub published_at: DateTime<Utc>,
    pub author: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub translations: BTreeMap<Language, String>,
}

/// An incident as it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Incident {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub id: IncidentId,
    pub title: String,
    pub status: IncidentStatus,
    pub impact: Impact,
    pub affected_services: Vec<AffectedService>,
    pub regions: Vec<String>,
    pub audience: Audience,
    pub client_action: ClientAction,
    #[serde(serialize_with = "crate::values::rfc3339::serialize")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::values::rfc3339::option::serialize")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// Oldest first.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Update>))]
    pub updates: Timeline<Update>,
    pub postmortem: Option<Postmortem>,
    /// The title in other languages.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub title_translations: BTreeMap<Language, String>,
    /// The client action's message in other languages.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub client_action_translations: BTreeMap<Language, String>,
}

impl Incident {
    /// Every language the incident has a text in besides the default one.
    pub fn languages(&self) -> BTreeSet<&Language> {
        let mut languages: BTreeSet<&Language> = self.title_translations.keys().collect();
        languages.extend(self.client_action_translations.keys());
        for update in &self.updates {
            languages.extend(update.translations.keys());
        }
        if let Some(postmortem) = &self.postmortem {
            languages.extend(postmortem.translations.keys());
        }
        languages
    }

    /// The incident with every text in `language` where it has one (else in the default
    /// language), and no translations left: what a reader of that language is shown. An
    /// update's corrections are those of the text shown.
    pub fn in_language(mut self, language: Option<&Language>) -> Incident {
        if let Some(language) = language {
            self.title = pick(&self.title, &self.title_translations, Some(language)).to_owned();
            self.client_action.message = pick(
                &self.client_action.message,
                &self.client_action_translations,
                Some(language),
            )
            .to_owned();
            let updates: Vec<Update> = (self.updates.iter())
                .map(|update| {
                    let mut update = Update::clone(update);
                    if let Some(translated) = update.translations.remove(language) {
                        update.message = translated.message;
                        update.corrections = translated.corrections;
                    }
                    update.translations.clear();
                    update
                })
                .collect();
            self.updates = updates.into();
            if let Some(postmortem) = &mut self.postmortem {
                if let Some(body) = postmortem.translations.remove(language) {
                    postmortem.body = body;
                }
            }
        } else if self.updates.iter().any(|u| !u.translations.is_empty()) {
            let updates: Vec<Update> = (self.updates.iter())
                .map(|update| update.in_default_language())
                .collect();
            self.updates = updates.into();
        }
        self.title_translations.clear();
        self.client_action_translations.clear();
        if let Some(postmortem) = &mut self.postmortem {
            postmortem.translations.clear();
        }
        self
    }
}

/// `None` until declared.
pub type State = Option<Incident>;

pub struct IncidentDecider;

fn message(value: &str) -> Result<String, DomainError> {
    text("message", value, MAX_MESSAGE_CHARS)
}

fn author(value: &str) -> Result<String, DomainError> {
    text("author", value, MAX_TITLE_CHARS)
}

fn existing(state: &State) -> Result<&Incident, DomainError> {
    state
        .as_ref()
        .ok_or_else(|| DomainError::NotFound("incident".into()))
}

// Each decision checks the command's own content first (400), then the state it meets
// (409): the answer to bad content does not depend on when it was sent.

/// An update id names one update of one incident.
fn new_update_id(incident: &Incident, update_id: UpdateId) -> Result<(), DomainError> {
    if incident.updates.iter().any(|u| u.id == update_id) {
        Err(DomainError::Conflict(
            "an update with this id exists".into(),
        ))
    } else {
        Ok(())
    }
}

fn checked_message(field: &str, value: &str) -> Result<String, DomainError> {
    text(field, value, MAX_MESSAGE_CHARS)
}

fn checked_action_message(field: &str, value: &str) -> Result<String, DomainError> {
    text(field, value, MAX_ACTION_MESSAGE_CHARS)
}

/// A translated title (`<field>.title`), where the command carries a title.
pub(crate) fn translated_title(
    v: &mut Validation,
    field: &str,
    given: Option<&str>,
    carried: bool,
) -> Option<String> {
    translated(v, &format!("{field}.title"), given, carried, |f, x| {
        text(f, x, MAX_TITLE_CHARS)
    })
}

/// A translated message (`<field>.message`), where the command carries a message.
pub(crate) fn translated_message(
    v: &mut Validation,
    field: &str,
    given: Option<&str>,
    carried: bool,
) -> Option<String> {
    translated(
        v,
        &format!("{field}.message"),
        given,
        carried,
        checked_message,
    )
}

/// A translated client action message, allowed where the command's own client action has
/// words to translate.
pub(crate) fn action_text(
    v: &mut Validation,
    field: &str,
    given: Option<&ActionText>,
    action: Option<&ClientAction>,
) -> Option<ActionText> {
    let carried = action.is_some_and(|a| a.kind != ClientActionKind::None || !a.message.is_empty());
    translated(
        v,
        &format!("{field}.client_action.message"),
        given.map(|a| a.message.as_str()),
        carried,
        checked_action_message,
    )
    .map(|message| ActionText { message })
}

fn decide_declare(c: &Declare, state: &State) -> Result<Vec<Event>, DomainError> {
    let status = c.status.unwrap_or(IncidentStatus::Investigating);
    let mut v = Validation::default();
    let title = v.check(text("title", &c.title, MAX_TITLE_CHARS));
    let message = v.check(message(&c.message));
    let affected_services = v.check(affected_services(&c.affected_services));
    let regions = v.check(labels("regions", &c.regions));
    let audience = v.check(c.audience.validated());
    let client_action = v.check(c.client_action.validated());
    let translations = translations(
        &c.translations,
        &c.default_language,
        &mut v,
        |field, t: &DeclarationTexts, v| {
            let texts = DeclarationTexts {
                title: translated_title(v, field, t.title.as_deref(), true),
                message: translated_message(v, field, t.message.as_deref(), true),
                client_action: action_text(
                    v,
                    field,
                    t.client_action.as_ref(),
                    Some(&c.client_action),
                ),
            };
            refuse_empty(v, field, t == &DeclarationTexts::default());
            texts
        },
    );
    let author = v.check(author(&c.author));
    if status == IncidentStatus::Resolved {
        v.refuse(
            "status",
            "an incident is declared open: investigating, identified or monitoring",
        );
    }
    v.finish()?;
    if state.is_some() {
        return Err(DomainError::Conflict(
            "this incident is declared already".into(),
        ));
    }
    Ok(vec![Event::Declared(IncidentDeclared {
        incident_id: c.incident_id,
        update_id: c.update_id,
        title,
        impact: c.impact,
        status,
        message,
        affected_services,
        regions,
        audience,
        client_action,
        translations,
        author,
        at: c.at,
    })])
}

fn decide_update(c: &PostUpdate, state: &State) -> Result<Vec<Event>, DomainError> {
    let incident = existing(state)?;
    let mut v = Validation::default();
    let message = v.check(message(&c.message));
    let affected_services = v.check(
        c.affected_services
            .as_deref()
            .map(affected_services)
            .transpose(),
    );
    let client_action = v.check(
        c.client_action
            .as_ref()
            .map(ClientAction::validated)
            .transpose(),
    );
    let translations = translations(
        &c.translations,
        &c.default_language,
        &mut v,
        |field, t: &UpdateTexts, v| {
            let texts = UpdateTexts {
                message: translated_message(v, field, t.message.as_deref(), true),
                client_action: action_text(
                    v,
                    field,
                    t.client_action.as_ref(),
                    c.client_action.as_ref(),
                ),
            };
            refuse_empty(v, field, t == &UpdateTexts::default());
            texts
        },
    );
    let author = v.check(author(&c.author));
    v.finish()?;
    if !incident.status.is_open() {
        return Err(DomainError::Conflict(
            "the incident is resolved; reopen it to post an update".into(),
        ));
    }
    new_update_id(incident, c.update_id)?;
    Ok(vec![Event::UpdatePosted(IncidentUpdatePosted {
        update_id: c.update_id,
        status: c.status,
        message,
        impact: c.impact,
        affected_services,
        client_action,
        translations,
        author,
        at: c.at,
    })])
}

fn decide_correct(c: &Correct, state: &State) -> Result<Vec<Event>, DomainError> {
    let incident = existing(state)?;
    let Some(update) = incident.updates.iter().find(|u| u.id == c.update_id) else {
        return Err(DomainError::NotFound("update".into()));
    };
    let mut v = Validation::default();
    let message = v.check(message(&c.message));
    let reason = v.check(text("reason", &c.reason, MAX_MESSAGE_CHARS));
    let language = v.check(
        c.language
            .as_deref()
            .map(|tag| Language::parse("language", tag))
            .transpose(),
    );
    let author = v.check(author(&c.author));
    v.finish()?;
    // The default language named is the default text.
    let language = language.filter(|l| l != &c.default_language);
    let current = match &language {
        None => Some(&update.message),
        Some(language) => update.translations.get(language).map(|t| &t.message),
    };
    if current == Some(&message) {
        return Err(DomainError::invalid(
            "message",
            "is the update's current text already",
        ));
    }
    Ok(vec![Event::UpdateCorrected(UpdateCorrected {
        update_id: c.update_id,
        language,
        message,
        reason,
        author,
        at: c.at,
    })])
}

/// Translations of a message (a reopening's, a maintenance update's).
pub(crate) fn message_translations(
    raw: &RawTranslations<MessageText>,
    default: &Language,
    v: &mut Validation,
) -> BTreeMap<Language, MessageText> {
    translations(raw, default, v, |field, t: &MessageText, v| MessageText {
        message: v.check(checked_message(&format!("{field}.message"), &t.message)),
    })
}

/// Each translated message of an event, as an update's translations.
fn translated_messages<'a>(
    messages: impl Iterator<Item = (&'a Language, Option<&'a String>)>,
) -> BTreeMap<Language, TranslatedMessage> {
    messages
        .filter_map(|(language, message)| {
            message.map(|message| {
                let translated = TranslatedMessage {
                    message: message.clone(),
                    corrections: Vec::new(),
                };
                (language.clone(), translated)
            })
        })
        .collect()
}

fn decide_reopen(c: &Reopen, state: &State) -> Result<Vec<Event>, DomainError> {
    let incident = existing(state)?;
    let mut v = Validation::default();
    let message = v.check(message(&c.message));
    let translations = message_translations(&c.translations, &c.default_language, &mut v);
    let author = v.check(author(&c.author));
    v.finish()?;
    if incident.status.is_open() {
        return Err(DomainError::Conflict(
            "the incident is open; only a resolved incident can be reopened".into(),
        ));
    }
    new_update_id(incident, c.update_id)?;
    Ok(vec![Event::Reopened(IncidentReopened {
        update_id: c.update_id,
        message,
        translations,
        author,
        at: c.at,
    })])
}

fn decide_postmortem(c: &PublishPostmortem, state: &State) -> Result<Vec<Event>, DomainError> {
    let incident = existing(state)?;
    let mut v = Validation::default();
    let body = v.check(text("body", &c.body, MAX_POSTMORTEM_CHARS));
    let translations = translations(
        &c.translations,
        &c.default_language,
        &mut v,
        |field, t: &BodyText, v| BodyText {
            body: v.check(text(
                &format!("{field}.body"),
                &t.body,
                MAX_POSTMORTEM_CHARS,
            )),
        },
    );
    let author = v.check(author(&c.author));
    v.finish()?;
    if incident.status.is_open() {
        return Err(DomainError::Conflict(
            "a postmortem is published once the incident is resolved".into(),
        ));
    }
    if incident.postmortem.is_some() {
        return Err(DomainError::Conflict(
            "the postmortem is published already".into(),
        ));
    }
    Ok(vec![Event::PostmortemPublished(PostmortemPublished {
        body,
        translations,
        author,
        at: c.at,
    })])
}

impl Decider for IncidentDecider {
    type Command = Command;
    type Event = Event;
    type State = State;

    fn decide(command: &Command, state: &State) -> Result<Vec<Event>, DomainError> {
        match command {
            Command::Declare(c) => decide_declare(c, state),
            Command::PostUpdate(c) => decide_update(c, state),
            Command::Correct(c) => decide_correct(c, state),
            Command::Reopen(c) => decide_reopen(c, state),
            Command::PublishPostmortem(c) => decide_postmortem(c, state),
        }
    }

    fn evolve(state: State, event: &Event) -> State {
        match (state, event) {
            (None, Event::Declared(e)) => Some(Incident {
                id: e.incident_id,
                title: e.title.clone(),
                status: e.status,
                impact: e.impact,
                affected_services: e.affected_services.clone(),
                regions: e.regions.clone(),
                audience: e.audience.clone(),
                client_action: e.client_action.clone(),
                started_at: e.at,
                resolved_at: None,
                updates: vec![Update {
                    id: e.update_id,
                    status: e.status,
                    message: e.message.clone(),
                    created_at: e.at,
                    author: e.author.clone(),
                    corrections: Vec::new(),
                    translations: translated_messages(
                        e.translations.iter().map(|(l, t)| (l, t.message.as_ref())),
                    ),
                }]
                .into(),
                postmortem: None,
                title_translations: (e.translations.iter())
                    .filter_map(|(l, t)| Some((l.clone(), t.title.clone()?)))
                    .collect(),
                client_action_translations: (e.translations.iter())
                    .filter_map(|(l, t)| Some((l.clone(), t.client_action.clone()?.message)))
                    .collect(),
            }),
            (Some(mut incident), Event::UpdatePosted(e)) => {
                incident.status = e.status;
                incident.resolved_at = (e.status == IncidentStatus::Resolved).then_some(e.at);
                if let Some(impact) = e.impact {
                    incident.impact = impact;
                }
                if let Some(services) = &e.affected_services {
                    incident.affected_services = services.clone();
                }
                if let Some(action) = &e.client_action {
                    incident.client_action = action.clone();
                    // A new action's words replace the old ones in every language.
                    incident.client_action_translations = (e.translations.iter())
                        .filter_map(|(l, t)| Some((l.clone(), t.client_action.clone()?.message)))
                        .collect();
                }
                incident.updates.push(Update {
                    id: e.update_id,
                    status: e.status,
                    message: e.message.clone(),
                    created_at: e.at,
                    author: e.author.clone(),
                    corrections: Vec::new(),
                    translations: translated_messages(
                        e.translations.iter().map(|(l, t)| (l, t.message.as_ref())),
                    ),
                });
                Some(incident)
            }
            (Some(mut incident), Event::UpdateCorrected(e)) => {
                if let Some(update) = incident.updates.find_mut(|u| u.id == e.update_id) {
                    let (text, corrections) = match &e.language {
                        None => (Some(&mut update.message), &mut update.corrections),
                        Some(language) => {
                            // A correction may bring a language the update lacked: then no
                            // earlier text of it is kept, for there was none.
                            let translated = update
                                .translations
                                .entry(language.clone())
                                .or_insert_with(|| TranslatedMessage {
                                    message: String::new(),
                                    corrections: Vec::new(),
                                });
                            (Some(&mut translated.message), &mut translated.corrections)
                        }
                    };
                    if let Some(text) = text {
                        let previous = std::mem::replace(text, e.message.clone());
                        if !previous.is_empty() {
                            corrections.push(Correction {
                                message: previous,
                                reason: e.reason.clone(),
                                created_at: e.at,
                                author: e.author.clone(),
                            });
                        }
                    }
                }
                Some(incident)
            }
            (Some(mut incident), Event::Reopened(e)) => {
                incident.status = IncidentStatus::Investigating;
                incident.resolved_at = None;
                incident.updates.push(Update {
                    id: e.update_id,
                    status: IncidentStatus::Investigating,
                    message: e.message.clone(),
                    created_at: e.at,
                    author: e.author.clone(),
                    corrections: Vec::new(),
                    translations: translated_messages(
                        e.translations.iter().map(|(l, t)| (l, Some(&t.message))),
                    ),
                });
                Some(incident)
            }
            (Some(mut incident), Event::PostmortemPublished(e)) => {
                incident.postmortem = Some(Postmortem {
                    body: e.body.clone(),
                    published_at: e.at,
                    author: e.author.clone(),
                    translations: (e.translations.iter())
                        .map(|(l, t)| (l.clone(), t.body.clone()))
                        .collect(),
                });
                Some(incident)
            }
            // An event that does not fit the state (never produced by `decide`) changes
            // nothing: history is read, not judged, here.
            (state, _) => state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::given::given;
    use crate::values::{ClientActionKind, ServiceStatus};
    use chrono::TimeZone;
    use uuid::Uuid;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 9, minute, 0).unwrap()
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn declare() -> Declare {
        Declare {
            incident_id: id(1),
            update_id: id(100),
            title: "Users cannot sign in to Teams".into(),
            impact: Impact::Major,
            status: None,
            message: "We are investigating reports of sign-in failures.".into(),
            affected_services: vec![AffectedService {
                service_id: id(7),
                status: ServiceStatus::MajorOutage,
            }],
            regions: vec!["Europe".into()],
            audience: Audience::Public,
            client_action: ClientAction::default(),
            translations: RawTranslations::new(),
            default_language: Language::english(),
            author: "key-1".into(),
            at: at(0),
        }
    }

    fn declared() -> Event {
        IncidentDecider::decide(&Command::Declare(declare()), &None)
            .unwrap()
            .remove(0)
    }

    fn update(n: u128, status: IncidentStatus, message: &str) -> PostUpdate {
        PostUpdate {
            update_id: id(100 + n),
            status,
            message: message.into(),
            impact: None,
            affected_services: None,
            client_action: None,
            translations: RawTranslations::new(),
            default_language: Language::english(),
            author: "key-1".into(),
            at: at(n as u32),
        }
    }

    fn posted(n: u128, status: IncidentStatus) -> Event {
        Event::UpdatePosted(IncidentUpdatePosted {
            update_id: id(100 + n),
            status,
            message: format!("update {n}"),
            impact: None,
            affected_services: None,
            client_action: None,
            translations: BTreeMap::new(),
            author: "key-1".into(),
            at: at(n as u32),
        })
    }

    fn incident(history: &[Event]) -> Incident {
        IncidentDecider::fold(history).expect("declared")
    }

    #[test]
    fn declaring_opens_an_investigating_incident_with_its_first_update() {
        let events = given::<IncidentDecider>(&[])
            .when(Command::Declare(declare()))
            .unwrap();
        let Event::Declared(e) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(
            (e.status, e.regions.clone()),
            (IncidentStatus::Investigating, vec!["europe".to_owned()])
        );
        let incident = incident(&events);
        assert_eq!(incident.updates.len(), 1);
        assert_eq!(
            incident.updates[0].message,
            "We are investigating reports of sign-in failures."
        );
        assert_eq!(incident.started_at, at(0));
    }

    #[test]
    fn declaring_twice_or_resolved_or_with_bad_fields_is_refused_with_every_field_named() {
        assert!(matches!(
            given::<IncidentDecider>(&[declared()]).when(Command::Declare(declare())),
            Err(DomainError::Conflict(_))
        ));
        let mut resolved = declare();
        resolved.status = Some(IncidentStatus::Resolved);
        assert!(matches!(
            given::<IncidentDecider>(&[]).when(Command::Declare(resolved)),
            Err(DomainError::Invalid(_))
        ));

        let mut bad = declare();
        bad.title = " ".into();
        bad.message = "x".repeat(MAX_MESSAGE_CHARS + 1);
        bad.regions = vec!["north america".into()];
        bad.client_action = ClientAction {
            kind: ClientActionKind::RestartClient,
            message: String::new(),
        };
        bad.affected_services.push(bad.affected_services[0]);
        let Err(DomainError::Invalid(errors)) =
            given::<IncidentDecider>(&[]).when(Command::Declare(bad))
        else {
            panic!("expected validation errors")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "title",
                "message",
                "affected_services[1].service_id",
                "regions[0]",
                "client_action.message"
            ]
        );
    }

    #[test]
    fn an_incident_cannot_put_a_service_under_maintenance() {
        let mut c = declare();
        c.affected_services[0].status = ServiceStatus::UnderMaintenance;
        assert!(matches!(
            given::<IncidentDecider>(&[]).when(Command::Declare(c)),
            Err(DomainError::Invalid(_))
        ));
    }

    #[test]
    fn updates_move_freely_among_open_statuses_and_resolving_closes() {
        let history = vec![
            declared(),
            posted(1, IncidentStatus::Monitoring),
            posted(2, IncidentStatus::Identified),
        ];
        assert_eq!(incident(&history).status, IncidentStatus::Identified);

        let mut resolve = update(3, IncidentStatus::Resolved, "If a user is still experiencing impact, they need to restart their clients to recover.");
        resolve.client_action = Some(ClientAction {
            kind: ClientActionKind::RestartClient,
            message: "Restart Teams to recover".into(),
        });
        let events = given::<IncidentDecider>(&history)
            .when(Command::PostUpdate(resolve))
            .unwrap();
        let mut all = history.clone();
        all.extend(events);
        let resolved = incident(&all);
        assert_eq!(
            (resolved.status, resolved.resolved_at),
            (IncidentStatus::Resolved, Some(at(3)))
        );
        assert_eq!(resolved.client_action.kind, ClientActionKind::RestartClient);
        assert_eq!(resolved.updates.len(), 4);

        assert!(matches!(
            given::<IncidentDecider>(&all).when(Command::PostUpdate(update(
                4,
                IncidentStatus::Monitoring,
                "more"
            ))),
            Err(DomainError::Conflict(_))
        ));
    }

    #[test]
    fn an_update_to_a_missing_incident_is_not_found_and_a_reused_update_id_conflicts() {
        assert!(matches!(
            given::<IncidentDecider>(&[]).when(Command::PostUpdate(update(
                1,
                IncidentStatus::Identified,
                "x"
            ))),
            Err(DomainError::NotFound(_))
        ));
        let mut reused = update(1, IncidentStatus::Identified, "x");
        reused.update_id = id(100);
        assert!(matches!(
            given::<IncidentDecider>(&[declared()]).when(Command::PostUpdate(reused)),
            Err(DomainError::Conflict(_))
        ));
    }

    #[test]
    fn an_update_can_change_impact_services_and_client_action_and_leaves_them_otherwise() {
        let mut c = update(1, IncidentStatus::Identified, "Cause identified.");
        c.impact = Some(Impact::Critical);
        c.affected_services = Some(vec![]);
        let events = given::<IncidentDecider>(&[declared()])
            .when(Command::PostUpdate(c))
            .unwrap();
        let mut all = vec![declared()];
        all.extend(events);
        let changed = incident(&all);
        assert_eq!(
            (changed.impact, changed.affected_services.len()),
            (Impact::Critical, 0)
        );
        all.push(posted(2, IncidentStatus::Monitoring));
        assert_eq!(
            incident(&all).impact,
            Impact::Critical,
            "unchanged when not given"
        );
    }

    #[test]
    fn a_correction_keeps_every_earlier_text() {
        let correct = |n: u128, message: &str| {
            Command::Correct(Correct {
                update_id: id(100),
                language: None,
                default_language: Language::english(),
                message: message.into(),
                reason: format!("typo {n}"),
                author: "key-2".into(),
                at: at(10 + n as u32),
            })
        };
        let mut history = vec![declared()];
        history.extend(
            given::<IncidentDecider>(&history)
                .when(correct(1, "We are investigating sign-in failures."))
                .unwrap(),
        );
        history.extend(
            given::<IncidentDecider>(&history)
                .when(correct(2, "We are investigating Teams sign-in failures."))
                .unwrap(),
        );
        let update = &incident(&history).updates[0];
        assert_eq!(
            update.message,
            "We are investigating Teams sign-in failures."
        );
        let earlier: Vec<&str> = update
            .corrections
            .iter()
            .map(|c| c.message.as_str())
            .collect();
        assert_eq!(
            earlier,
            vec![
                "We are investigating reports of sign-in failures.",
                "We are investigating sign-in failures."
            ]
        );
        assert_eq!(update.corrections[1].reason, "typo 2");

        // The same text again, an unknown update, or no reason are refused.
        assert!(matches!(
            given::<IncidentDecider>(&history)
                .when(correct(3, "We are investigating Teams sign-in failures.")),
            Err(DomainError::Invalid(_))
        ));
        let mut unknown = Correct {
            update_id: id(999),
            language: None,
            default_language: Language::english(),
            message: "x".into(),
            reason: "y".into(),
            author: "a".into(),
            at: at(20),
        };
        assert!(matches!(
            given::<IncidentDecider>(&history).when(Command::Correct(unknown.clone())),
            Err(DomainError::NotFound(_))
        ));
        unknown.update_id = id(100);
        unknown.reason = "".into();
        assert!(matches!(
            given::<IncidentDecider>(&history).when(Command::Correct(unknown)),
            Err(DomainError::Invalid(_))
        ));
    }

    #[test]
    fn only_a_resolved_incident_is_reopened_or_given_a_postmortem_once() {
        let reopen = |n: u128| {
            Command::Reopen(Reopen {
                update_id: id(200 + n),
                message: "Failures are back.".into(),
                translations: RawTranslations::new(),
                default_language: Language::english(),
                author: "key-1".into(),
                at: at(30),
            })
        };
        let postmortem = || {
            Command::PublishPostmortem(PublishPostmortem {
                body: "A certificate expired.".into(),
                translations: RawTranslations::new(),
                default_language: Language::english(),
                author: "key-1".into(),
                at: at(40),
            })
        };
        let open = vec![declared()];
        assert!(matches!(
            given::<IncidentDecider>(&open).when(reopen(1)),
            Err(DomainError::Conflict(_))
        ));
        assert!(matches!(
            given::<IncidentDecider>(&open).when(postmortem()),
            Err(DomainError::Conflict(_))
        ));

        let mut history = vec![declared(), posted(1, IncidentStatus::Resolved)];
        history.extend(
            given::<IncidentDecider>(&history)
                .when(postmortem())
                .unwrap(),
        );
        assert!(incident(&history).postmortem.is_some());
        assert!(matches!(
            given::<IncidentDecider>(&history).when(postmortem()),
            Err(DomainError::Conflict(_))
        ));

        history.extend(given::<IncidentDecider>(&history).when(reopen(1)).unwrap());
        let reopened = incident(&history);
        assert_eq!(
            (reopened.status, reopened.resolved_at),
            (IncidentStatus::Investigating, None)
        );
        assert_eq!(
            reopened.updates.last().map(|u| u.message.as_str()),
            Some("Failures are back.")
        );
        assert!(given::<IncidentDecider>(&history)
            .when(Command::PostUpdate(update(
                5,
                IncidentStatus::Identified,
                "again"
            )))
            .is_ok());
    }

    #[test]
    fn stored_events_read_back_by_type_and_refuse_unknown_types_and_versions() {
        let events = vec![declared(), posted(1, IncidentStatus::Resolved)];
        for event in &events {
            let data = serde_json::to_value(event).unwrap();
            assert_eq!(
                &Event::from_stored(event.type_name(), event.schema_version(), data).unwrap(),
                event
            );
        }
        let data = serde_json::to_value(&events[0]).unwrap();
        assert!(matches!(
            Event::from_stored("incident.exploded", 1, data.clone()),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            Event::from_stored("incident.declared", 9, data.clone()),
            Err(DecodeError::UnknownVersion(..))
        ));
        assert!(matches!(
            Event::from_stored("incident.postmortem_published", 1, data.clone()),
            Err(DecodeError::Malformed(..))
        ));
        // The same from the log's text: each error as from a value.
        let text = data.to_string();
        for version in [0, 9] {
            assert!(matches!(
                Event::from_stored("incident.declared", version, "not JSON"),
                Err(DecodeError::UnknownVersion(..))
            ));
        }
        assert!(matches!(
            Event::from_stored("incident.declared", 2, "not JSON"),
            Err(DecodeError::Malformed(..))
        ));
        assert!(matches!(
            Event::from_stored("incident.postmortem_published", 1, text.as_str()),
            Err(DecodeError::Malformed(..))
        ));
    }

    #[test]
    fn the_stored_form_is_stable() {
        let data = serde_json::to_value(declared()).unwrap();
        assert_eq!(data["status"], "investigating");
        assert_eq!(data["impact"], "major");
        assert_eq!(
            data["audience"],
            serde_json::json!({ "visibility": "public" })
        );
        assert_eq!(data["affected_services"][0]["status"], "major_outage");
        assert_eq!(
            data["client_action"],
            serde_json::json!({ "kind": "none", "message": "" })
        );
        assert_eq!(data["at"], "2026-11-24T09:00:00Z");
    }

    fn welsh() -> Language {
        Language::parse("lang", "cy").unwrap()
    }

    fn declare_in_welsh_too() -> Declare {
        let mut c = declare();
        c.client_action = ClientAction {
            kind: ClientActionKind::RestartClient,
            message: "Restart Teams to recover.".into(),
        };
        c.translations.insert(
            "CY".into(),
            DeclarationTexts {
                title: Some("Ni all defnyddwyr fewngofnodi i Teams".into()),
                message: Some("Rydym yn ymchwilio.".into()),
                client_action: Some(ActionText {
                    message: "Ailgychwynnwch Teams i adfer.".into(),
                }),
            },
        );
        c
    }

    #[test]
    fn a_translated_declaration_reads_in_each_language_and_falls_back_to_the_default() {
        let events = given::<IncidentDecider>(&[])
            .when(Command::Declare(declare_in_welsh_too()))
            .unwrap();
        let incident = incident(&events);
        assert_eq!(
            incident.languages().into_iter().collect::<Vec<_>>(),
            [&welsh()]
        );

        let cy = incident.clone().in_language(Some(&welsh()));
        assert_eq!(cy.title, "Ni all defnyddwyr fewngofnodi i Teams");
        assert_eq!(cy.updates[0].message, "Rydym yn ymchwilio.");
        assert_eq!(cy.client_action.message, "Ailgychwynnwch Teams i adfer.");
        assert!(
            cy.languages().is_empty(),
            "a rendering carries no translations"
        );

        let en = incident.clone().in_language(None);
        assert_eq!(en.title, "Users cannot sign in to Teams");
        assert_eq!(en.updates[0].message, declare().message);

        let french = Language::parse("lang", "fr").unwrap();
        assert_eq!(incident.in_language(Some(&french)).title, declare().title);
    }

    #[test]
    fn translations_are_refused_naming_the_field_for_a_bad_tag_a_text_not_carried_or_none() {
        let mut c = declare();
        c.translations.insert(
            "cy".into(),
            DeclarationTexts {
                client_action: Some(ActionText {
                    message: "Ailgychwynnwch".into(),
                }),
                ..DeclarationTexts::default()
            },
        );
        c.translations
            .insert("fr".into(), DeclarationTexts::default());
        c.translations.insert(
            "not a tag".into(),
            DeclarationTexts {
                title: Some("x".into()),
                ..DeclarationTexts::default()
            },
        );
        c.translations.insert(
            "en".into(),
            DeclarationTexts {
                title: Some("x".into()),
                ..DeclarationTexts::default()
            },
        );
        c.translations.insert(
            "de".into(),
            DeclarationTexts {
                title: Some("  ".into()),
                ..DeclarationTexts::default()
            },
        );
        let Err(DomainError::Invalid(errors)) =
            given::<IncidentDecider>(&[]).when(Command::Declare(c))
        else {
            panic!("expected validation errors")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "translations.cy.client_action.message",
                "translations.de.title",
                "translations.en",
                "translations.fr",
                "translations.not a tag",
            ]
        );
    }

    #[test]
    fn a_correction_of_the_welsh_text_keeps_the_earlier_welsh_and_leaves_the_english() {
        let mut history = given::<IncidentDecider>(&[])
            .when(Command::Declare(declare_in_welsh_too()))
            .unwrap();
        let correct = |message: &str, language: Option<&str>| {
            Command::Correct(Correct {
                update_id: id(100),
                language: language.map(str::to_owned),
                message: message.into(),
                reason: "Cywiro".into(),
                default_language: Language::english(),
                author: "key-2".into(),
                at: at(5),
            })
        };
        assert!(matches!(
            given::<IncidentDecider>(&history).when(correct("Cywiriad.", Some("cy-x"))),
            Err(DomainError::Invalid(_))
        ));
        history.extend(
            given::<IncidentDecider>(&history)
                .when(correct(
                    "Rydym yn ymchwilio i fethiannau mewngofnodi.",
                    Some("cy"),
                ))
                .unwrap(),
        );
        let Event::UpdateCorrected(e) = history.last().unwrap() else {
            panic!()
        };
        assert_eq!(e.language, Some(welsh()));
        let incident = incident(&history);
        let cy = incident.clone().in_language(Some(&welsh()));
        assert_eq!(
            cy.updates[0].message,
            "Rydym yn ymchwilio i fethiannau mewngofnodi."
        );
        assert_eq!(cy.updates[0].corrections.len(), 1);
        assert_eq!(cy.updates[0].corrections[0].message, "Rydym yn ymchwilio.");
        let en = incident.in_language(None);
        assert_eq!(en.updates[0].message, declare().message);
        assert!(en.updates[0].corrections.is_empty());

        // The same Welsh text again is refused; naming the default language corrects it.
        assert!(given::<IncidentDecider>(&history)
            .when(correct(
                "Rydym yn ymchwilio i fethiannau mewngofnodi.",
                Some("cy")
            ))
            .is_err());
        let events = given::<IncidentDecider>(&history)
            .when(correct("We are looking into it.", Some("EN")))
            .unwrap();
        let Event::UpdateCorrected(e) = &events[0] else {
            panic!()
        };
        assert_eq!(e.language, None);
    }

    #[test]
    fn a_new_client_action_drops_the_old_actions_translations() {
        let mut history = given::<IncidentDecider>(&[])
            .when(Command::Declare(declare_in_welsh_too()))
            .unwrap();
        let mut c = update(1, IncidentStatus::Identified, "Found it.");
        c.client_action = Some(ClientAction {
            kind: ClientActionKind::SignInAgain,
            message: "Sign in again.".into(),
        });
        history.extend(
            given::<IncidentDecider>(&history)
                .when(Command::PostUpdate(c))
                .unwrap(),
        );
        let cy = incident(&history).in_language(Some(&welsh()));
        assert_eq!(cy.client_action.message, "Sign in again.");
        assert_eq!(cy.title, "Ni all defnyddwyr fewngofnodi i Teams");
    }

    #[test]
    fn version_1_events_stored_before_translations_read_as_version_2_with_none() {
        let declared_v1 = serde_json::json!({
            "incident_id": id(1), "update_id": id(100), "title": "Users cannot sign in",
            "impact": "major", "status": "investigating", "message": "Investigating.",
            "affected_services": [], "regions": [], "audience": {"visibility": "public"},
            "client_action": {"kind": "none", "message": ""}, "author": "key-1",
            "at": "2026-11-24T09:00:00Z"
        });
        let Event::Declared(e) =
            Event::from_stored("incident.declared", 1, declared_v1.clone()).unwrap()
        else {
            panic!()
        };
        assert!(e.translations.is_empty());
        let corrected_v1 = serde_json::json!({
            "update_id": id(100), "message": "Investigating in Europe.", "reason": "where",
            "author": "key-1", "at": "2026-11-24T09:01:00Z"
        });
        let Event::UpdateCorrected(c) =
            Event::from_stored("incident.update_corrected", 1, corrected_v1).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.language, None);
        let mut forged = declared_v1;
        forged["translations"] = serde_json::json!({});
        assert!(matches!(
            Event::from_stored("incident.declared", 1, forged),
            Err(DecodeError::Malformed(..))
        ));
        // Written today: version 2, translations always present.
        let data = serde_json::to_value(declared()).unwrap();
        assert_eq!(declared().schema_version(), 2);
        assert_eq!(data["translations"], serde_json::json!({}));
    }
}
