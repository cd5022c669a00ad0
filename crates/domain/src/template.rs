//! Templates: the notices a team sends again and again ("If a user is still experiencing
//! impact, they need to restart their clients to recover"), written once. A template holds
//! any of a notice's fields (title, message, impact, status, client action, translations);
//! a declaration or an update naming it takes every field it does not give from it. A
//! notice copies the template's texts when it is written: a later edit of the template
//! never changes notices already sent.
//!
//! A template's events are history for auditors, never notices. A template made with a
//! tenant-bound key belongs to that tenant.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::incident::{action_text, translated_message, translated_title, DeclarationTexts};
use crate::language::{refuse_empty, translations, Language, RawTranslations};
use crate::values::{
    label, text, ClientAction, Impact, IncidentStatus, MAX_MESSAGE_CHARS, MAX_TITLE_CHARS,
};
use crate::{decode, Decider, DecodeError, DomainError, StoredData, Validation};

pub type TemplateId = Uuid;

/// What a template gives a notice: any of its fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateFields {
    pub title: Option<String>,
    pub message: Option<String>,
    pub impact: Option<Impact>,
    pub status: Option<IncidentStatus>,
    pub client_action: Option<ClientAction>,
    /// The texts in other languages, as a declaration carries them.
    #[serde(default)]
    pub translations: BTreeMap<Language, DeclarationTexts>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Create(Create),
    Change(Change),
    Delete(Delete),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Create {
    pub template_id: TemplateId,
    pub name: String,
    pub fields: RawFields,
    /// The tenant of the key that made it.
    pub tenant: Option<String>,
    pub default_language: Language,
    pub author: String,
    pub at: DateTime<Utc>,
}

/// The fields as a request gives them (translations keyed by tags as written).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawFields {
    pub title: Option<String>,
    pub message: Option<String>,
    pub impact: Option<Impact>,
    pub status: Option<IncidentStatus>,
    pub client_action: Option<ClientAction>,
    pub translations: RawTranslations<DeclarationTexts>,
}

/// What a `PATCH` changes: each field present replaces the template's (`Some(None)` clears
/// it), merged into the template as it stands when the command is decided, so that two
/// changes of different fields both hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch {
    pub name: Option<String>,
    pub title: Option<Option<String>>,
    pub message: Option<Option<String>>,
    pub impact: Option<Option<Impact>>,
    pub status: Option<Option<IncidentStatus>>,
    pub client_action: Option<Option<ClientAction>>,
    pub translations: Option<RawTranslations<DeclarationTexts>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub patch: Patch,
    pub default_language: Language,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delete {
    pub author: String,
    pub at: DateTime<Utc>,
}

/// Serialises as its payload alone; read back by type name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    Created(TemplateCreated),
    Changed(TemplateChanged),
    Deleted(TemplateDeleted),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateCreated {
    pub template_id: TemplateId,
    pub name: String,
    pub fields: TemplateFields,
    pub tenant: Option<String>,
    pub author: String,
    pub at: DateTime<Utc>,
}

/// The template's name and fields after the change, all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateChanged {
    pub name: String,
    pub fields: TemplateFields,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateDeleted {
    pub author: String,
    pub at: DateTime<Utc>,
}

impl Event {
    pub fn schema_version(&self) -> u32 {
        1
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Created(_) => "template.created",
            Event::Changed(_) => "template.changed",
            Event::Deleted(_) => "template.deleted",
        }
    }

    pub fn from_stored<'a>(
        type_name: &str,
        schema_version: u32,
        data: impl Into<StoredData<'a>>,
    ) -> Result<Event, DecodeError> {
        let data = data.into();
        match type_name {
            "template.created" => decode(type_name, schema_version, data, &[], Event::Created),
            "template.changed" => decode(type_name, schema_version, data, &[], Event::Changed),
            "template.deleted" => decode(type_name, schema_version, data, &[], Event::Deleted),
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

/// A template as it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub id: TemplateId,
    pub name: String,
    pub fields: TemplateFields,
    pub tenant: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
    /// Set once deleted: it can no longer be named, and leaves the lists.
    pub deleted_at: Option<DateTime<Utc>>,
}

pub type State = Option<Template>;

pub struct TemplateDecider;

/// The fields checked by the rules of the notices they would make, each error naming the
/// template's own field.
fn checked_fields(raw: &RawFields, default: &Language, v: &mut Validation) -> TemplateFields {
    let title = raw
        .title
        .as_deref()
        .map(|t| v.check(text("title", t, MAX_TITLE_CHARS)));
    let message = raw
        .message
        .as_deref()
        .map(|m| v.check(text("message", m, MAX_MESSAGE_CHARS)));
    let client_action = raw.client_action.as_ref().map(|a| v.check(a.validated()));
    let translations = translations(&raw.translations, default, v, |field, t, v| {
        let texts = DeclarationTexts {
            title: translated_title(v, field, t.title.as_deref(), raw.title.is_some()),
            message: translated_message(v, field, t.message.as_deref(), raw.message.is_some()),
            client_action: action_text(
                v,
                field,
                t.client_action.as_ref(),
                raw.client_action.as_ref(),
            ),
        };
        refuse_empty(v, field, t == &DeclarationTexts::default());
        texts
    });
    TemplateFields {
        title,
        message,
        impact: raw.impact,
        status: raw.status,
        client_action,
        translations,
    }
}

impl Decider for TemplateDecider {
    type Command = Command;
    type Event = Event;
    type State = State;

    fn decide(command: &Command, state: &State) -> Result<Vec<Event>, DomainError> {
        match command {
            Command::Create(c) => {
                let mut v = Validation::default();
                let name = v.check(text("name", &c.name, MAX_TITLE_CHARS));
                let fields = checked_fields(&c.fields, &c.default_language, &mut v);
                let tenant = v.check(c.tenant.as_deref().map(|t| label("tenant", t)).transpose());
                let author = v.check(text("author", &c.author, MAX_TITLE_CHARS));
                v.finish()?;
                if state.is_some() {
                    return Err(DomainError::Conflict("this template exists already".into()));
                }
                Ok(vec![Event::Created(TemplateCreated {
                    template_id: c.template_id,
                    name,
                    fields,
                    tenant,
                    author,
                    at: c.at,
                })])
            }
            Command::Change(c) => {
                let template = live(state)?;
                let patch = c.patch.clone();
                let mut raw = template.fields.as_raw();
                raw.title = patch.title.unwrap_or(raw.title);
                raw.message = patch.message.unwrap_or(raw.message);
                raw.impact = patch.impact.unwrap_or(raw.impact);
                raw.status = patch.status.unwrap_or(raw.status);
                raw.client_action = patch.client_action.unwrap_or(raw.client_action);
                raw.translations = patch.translations.unwrap_or(raw.translations);
                let name = patch.name.unwrap_or_else(|| template.name.clone());
                let mut v = Validation::default();
                let name = v.check(text("name", &name, MAX_TITLE_CHARS));
                let fields = checked_fields(&raw, &c.default_language, &mut v);
                let author = v.check(text("author", &c.author, MAX_TITLE_CHARS));
                v.finish()?;
                if name == template.name && fields == template.fields {
                    return Ok(Vec::new());
                }
                Ok(vec![Event::Changed(TemplateChanged {
                    name,
                    fields,
                    author,
                    at: c.at,
                })])
            }
            Command::Delete(c) => {
                let Some(template) = state else {
                    return Err(DomainError::NotFound("template".into()));
                };
                if template.deleted_at.is_some() {
                    return Ok(Vec::new());
                }
                let author = text("author", &c.author, MAX_TITLE_CHARS)?;
                Ok(vec![Event::Deleted(TemplateDeleted { author, at: c.at })])
            }
        }
    }

    fn evolve(state: State, event: &Event) -> State {
        match (state, event) {
            (None, Event::Created(e)) => Some(Template {
                id: e.template_id,
                name: e.name.clone(),
                fields: e.fields.clone(),
                tenant: e.tenant.clone(),
                created_at: e.at,
                created_by: e.author.clone(),
                updated_at: e.at,
                deleted_at: None,
            }),
            (Some(mut template), Event::Changed(e)) => {
                template.name = e.name.clone();
                template.fields = e.fields.clone();
                template.updated_at = e.at;
                Some(template)
            }
            (Some(mut template), Event::Deleted(e)) => {
                template.deleted_at.get_or_insert(e.at);
                Some(template)
            }
            (state, _) => state,
        }
    }
}

fn live(state: &State) -> Result<&Template, DomainError> {
    state
        .as_ref()
        .filter(|t| t.deleted_at.is_none())
        .ok_or_else(|| DomainError::NotFound("template".into()))
}

/// The texts of a notice that a template filled: the translations of those come from the
/// template, the others' from the request (a request's own title is not the template's,
/// so neither is its Welsh).
#[derive(Debug, Clone, Copy, Default)]
pub struct Taken {
    pub title: bool,
    pub message: bool,
    pub client_action: bool,
}

impl TemplateFields {
    /// The translations of a notice made from this template: the template's, for the texts
    /// it gave (`taken`), with the request's own (`given`) over them, language by language
    /// and text by text. Tags are compared in canonical form; one that does not parse is
    /// kept as written, for the decider to refuse.
    pub fn fill_translations(
        &self,
        given: RawTranslations<DeclarationTexts>,
        taken: Taken,
    ) -> RawTranslations<DeclarationTexts> {
        let mut out: RawTranslations<DeclarationTexts> = RawTranslations::new();
        for (language, texts) in &self.translations {
            let texts = DeclarationTexts {
                title: texts.title.clone().filter(|_| taken.title),
                message: texts.message.clone().filter(|_| taken.message),
                client_action: texts.client_action.clone().filter(|_| taken.client_action),
            };
            if texts != DeclarationTexts::default() {
                out.insert(language.to_string(), texts);
            }
        }
        for (tag, texts) in given {
            let key = Language::parse("translations", &tag)
                .map(|l| l.to_string())
                .unwrap_or(tag);
            let entry = out.entry(key).or_default();
            if texts.title.is_some() {
                entry.title = texts.title;
            }
            if texts.message.is_some() {
                entry.message = texts.message;
            }
            if texts.client_action.is_some() {
                entry.client_action = texts.client_action;
            }
        }
        out
    }

    /// Refuses, as a request without a template would be refused, a request's own
    /// translations that name one language twice (`cy` and `CY`) or translate nothing:
    /// merged with the template's they would pass unseen.
    pub fn check_given(given: &RawTranslations<DeclarationTexts>) -> Result<(), DomainError> {
        let mut v = Validation::default();
        let mut seen: Vec<String> = Vec::new();
        for (tag, texts) in given {
            let field = format!("translations.{tag}");
            let canonical = Language::parse(&field, tag).map(|l| l.to_string());
            match canonical {
                Ok(canonical) if seen.contains(&canonical) => {
                    v.refuse(&field, "names a language given already")
                }
                Ok(canonical) => seen.push(canonical),
                Err(_) => {}
            }
            refuse_empty(&mut v, &field, texts == &DeclarationTexts::default());
        }
        v.finish()
    }

    /// The template's fields as a request would give them (tags as stored).
    pub fn as_raw(&self) -> RawFields {
        RawFields {
            title: self.title.clone(),
            message: self.message.clone(),
            impact: self.impact,
            status: self.status,
            client_action: self.client_action.clone(),
            translations: (self.translations.iter())
                .map(|(l, t)| (l.to_string(), t.clone()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::given::given;
    use crate::values::ClientActionKind;
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 9, minute, 0).unwrap()
    }

    fn restart() -> RawFields {
        RawFields {
            message: Some("If a user is still experiencing impact, they need to restart their clients to recover.".into()),
            status: Some(IncidentStatus::Resolved),
            client_action: Some(ClientAction {
                kind: ClientActionKind::RestartClient,
                message: "Restart your clients to recover.".into(),
            }),
            translations: [(
                "cy".to_owned(),
                DeclarationTexts {
                    message: Some("Ailgychwynnwch eich cleientiaid.".into()),
                    ..DeclarationTexts::default()
                },
            )]
            .into(),
            ..RawFields::default()
        }
    }

    fn create(fields: RawFields) -> Command {
        Command::Create(Create {
            template_id: Uuid::from_u128(1),
            name: "Restart your clients".into(),
            fields,
            tenant: None,
            default_language: Language::english(),
            author: "key-1".into(),
            at: at(0),
        })
    }

    #[test]
    fn a_template_keeps_its_fields_changes_whole_and_is_deleted_once() {
        let created = given::<TemplateDecider>(&[])
            .when(create(restart()))
            .unwrap();
        let template = TemplateDecider::fold(&created).unwrap();
        assert_eq!(template.fields.status, Some(IncidentStatus::Resolved));
        assert_eq!(template.fields.translations.len(), 1);
        let mut history = created.clone();
        let change = |patch: Patch| {
            Command::Change(Change {
                patch,
                default_language: Language::english(),
                author: "key-1".into(),
                at: at(1),
            })
        };
        // Two changes of different fields, decided one after the other: both hold.
        history.extend(
            given::<TemplateDecider>(&history)
                .when(change(Patch {
                    name: Some("Restart Teams".into()),
                    ..Patch::default()
                }))
                .unwrap(),
        );
        history.extend(
            given::<TemplateDecider>(&history)
                .when(change(Patch {
                    message: Some(Some("Restart Teams to recover.".into())),
                    status: Some(None),
                    ..Patch::default()
                }))
                .unwrap(),
        );
        let changed = TemplateDecider::fold(&history).unwrap();
        assert_eq!(changed.name, "Restart Teams");
        assert_eq!(
            changed.fields.message.as_deref(),
            Some("Restart Teams to recover.")
        );
        assert_eq!(changed.fields.status, None);
        let delete = || {
            Command::Delete(Delete {
                author: "key-1".into(),
                at: at(2),
            })
        };
        history.extend(given::<TemplateDecider>(&history).when(delete()).unwrap());
        assert!(TemplateDecider::fold(&history)
            .unwrap()
            .deleted_at
            .is_some());
        assert!(given::<TemplateDecider>(&history)
            .when(delete())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn fields_that_would_make_an_invalid_notice_are_refused_naming_the_template_field() {
        let mut bad = restart();
        bad.title = Some("  ".into());
        bad.client_action = Some(ClientAction {
            kind: ClientActionKind::RestartClient,
            message: String::new(),
        });
        bad.translations.insert(
            "cy-GB".into(),
            DeclarationTexts {
                title: None,
                message: None,
                client_action: None,
            },
        );
        let Err(DomainError::Invalid(errors)) = given::<TemplateDecider>(&[]).when(create(bad))
        else {
            panic!("refused")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["title", "client_action.message", "translations.cy-GB"]
        );
    }

    #[test]
    fn stored_events_read_back_by_type() {
        let events = given::<TemplateDecider>(&[])
            .when(create(restart()))
            .unwrap();
        for event in &events {
            let data = serde_json::to_value(event).unwrap();
            assert_eq!(
                &Event::from_stored(event.type_name(), event.schema_version(), data).unwrap(),
                event
            );
        }
    }
}
