//! The JSON representations of the resources that notices carry and the API serves: what a
//! client reads in `GET /v1/incidents/{id}`, in a webhook's body and in an SSE message is
//! the same shape, with the same OpenAPI schema.

use chrono::{DateTime, Utc};
use domain::incident::{Incident, Postmortem, Update};
use domain::language::{Language, Negotiation};
use domain::maintenance::Maintenance;
use domain::values::{
    rfc3339, AffectedService, Audience, ClientAction, Impact, IncidentStatus, ServiceStatus,
    Timeline,
};
use projections::queries::{for_viewer, ServiceView, Viewer};
use projections::Versioned;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// A service, with its status derived from the open incidents and active maintenances
/// that the caller may see.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServiceBody {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub group: Option<String>,
    pub status: ServiceStatus,
    /// The stream version, also served as `ETag`.
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set once the service is retired; retired services leave the lists.
    pub retired_at: Option<DateTime<Utc>>,
}

impl From<ServiceView> for ServiceBody {
    fn from(view: ServiceView) -> Self {
        let service = view.service.state;
        ServiceBody {
            id: view.service.id,
            name: service.name,
            description: service.description,
            group: service.group,
            status: view.status,
            version: view.service.version,
            created_at: service.created_at,
            updated_at: service.updated_at,
            retired_at: service.retired_at,
        }
    }
}

/// An incident as it stands, with its whole timeline, in one language.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IncidentBody {
    #[serde(flatten)]
    pub incident: Incident,
    /// The language its texts are shown in (a text it lacks there is shown in the default
    /// language).
    pub language: Language,
    /// Every language it has texts in, the default one first: ask for one with `?lang=` or
    /// `Accept-Language`.
    pub translations: Vec<Language>,
    /// The stream version, also served as `ETag`.
    pub version: u64,
}

impl IncidentBody {
    /// The incident in the language `negotiation` chooses among those it has.
    pub fn new(v: Versioned<Incident>, negotiation: &Negotiation) -> Self {
        let (chosen, translations) = {
            let languages = v.state.languages();
            let chosen = negotiation.choose(languages.iter().copied()).cloned();
            let translations = all_languages(negotiation, languages);
            (chosen, translations)
        };
        IncidentBody {
            language: negotiation.tag(chosen.as_ref()),
            incident: v.state.in_language(chosen.as_ref()),
            translations,
            version: v.version,
        }
    }
}

impl IncidentBody {
    /// The JSON of [`IncidentBody::new`] for what `viewer` may see of the incident (`None`
    /// when it may see none of it). In the default language, each update's rendering is
    /// the one its timeline keeps ([`Timeline::shown`]), so an answer that
    /// carries a long timeline renders only the updates it has not rendered before.
    pub fn json(
        v: &Versioned<Incident>,
        viewer: &Viewer,
        negotiation: &Negotiation,
    ) -> Option<String> {
        let incident = &v.state;
        if !viewer.may_see(&incident.audience) {
            return None;
        }
        let languages = incident.languages();
        if negotiation.choose(languages.iter().copied()).is_some() {
            let body = for_viewer(v.clone(), viewer).map(|v| IncidentBody::new(v, negotiation));
            return body.and_then(|body| serde_json::to_string(&body).ok());
        }
        let mut audience = incident.audience.clone();
        viewer.redact(&mut audience);
        let shown = InDefaultLanguage {
            id: incident.id,
            title: &incident.title,
            status: incident.status,
            impact: incident.impact,
            affected_services: &incident.affected_services,
            regions: &incident.regions,
            audience,
            client_action: &incident.client_action,
            started_at: incident.started_at,
            resolved_at: incident.resolved_at,
            updates: Shown(&incident.updates),
            postmortem: (incident.postmortem.as_ref()).map(|p| Postmortem {
                translations: Default::default(),
                ..p.clone()
            }),
            language: &negotiation.default,
            translations: all_languages(negotiation, languages),
            version: v.version,
        };
        // Sized up front: the timeline is most of the answer, and growing the buffer as
        // it is written would copy it again and again.
        let timeline: usize = (incident.updates.shown())
            .map(|update| update.get().len() + 1)
            .sum();
        let mut json = Vec::with_capacity(timeline + 4096);
        serde_json::to_writer(&mut json, &shown).ok()?;
        String::from_utf8(json).ok()
    }
}

/// An [`IncidentBody`] in the default language, borrowed: the same fields in the same
/// order (its test compares the bytes), with the timeline's kept renderings.
#[derive(Serialize)]
struct InDefaultLanguage<'a> {
    id: Uuid,
    title: &'a str,
    status: IncidentStatus,
    impact: Impact,
    affected_services: &'a [AffectedService],
    regions: &'a [String],
    audience: Audience,
    client_action: &'a ClientAction,
    #[serde(serialize_with = "rfc3339::serialize")]
    started_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339::option::serialize")]
    resolved_at: Option<DateTime<Utc>>,
    updates: Shown<'a>,
    postmortem: Option<Postmortem>,
    language: &'a Language,
    translations: Vec<Language>,
    version: u64,
}

/// A timeline as its readers in the default language are shown it.
struct Shown<'a>(&'a Timeline<Update>);

impl Serialize for Shown<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.shown())
    }
}

/// The default language, then every other a resource has.
fn all_languages<'a>(
    negotiation: &Negotiation,
    others: impl IntoIterator<Item = &'a Language>,
) -> Vec<Language> {
    std::iter::once(negotiation.default.clone())
        .chain(others.into_iter().cloned())
        .collect()
}

/// A maintenance as it stands, in one language.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MaintenanceBody {
    #[serde(flatten)]
    pub maintenance: Maintenance,
    /// The language its texts are shown in (a text it lacks there is shown in the default
    /// language).
    pub language: Language,
    /// Every language it has texts in, the default one first.
    pub translations: Vec<Language>,
    /// The stream version, also served as `ETag`.
    pub version: u64,
}

impl MaintenanceBody {
    /// The maintenance in the language `negotiation` chooses among those it has.
    pub fn new(v: Versioned<Maintenance>, negotiation: &Negotiation) -> Self {
        let (chosen, translations) = {
            let languages = v.state.languages();
            let chosen = negotiation.choose(languages.iter().copied()).cloned();
            let translations = all_languages(negotiation, languages);
            (chosen, translations)
        };
        MaintenanceBody {
            language: negotiation.tag(chosen.as_ref()),
            maintenance: v.state.in_language(chosen.as_ref()),
            translations,
            version: v.version,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;
    use domain::incident::{Correction, TranslatedMessage};
    use domain::values::ClientActionKind;

    use super::*;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 5, 9, minute, 0).unwrap()
    }

    fn welsh() -> Language {
        Language::parse("lang", "cy").unwrap()
    }

    fn update(n: u128, message: &str) -> Update {
        Update {
            id: Uuid::from_u128(n),
            status: IncidentStatus::Investigating,
            message: message.into(),
            created_at: at(n as u32),
            author: "comms \"on call\"".into(),
            corrections: Vec::new(),
            translations: BTreeMap::new(),
        }
    }

    /// An incident with a bit of everything a rendering shows: a private audience, a
    /// client action, a correction, a translated update, a postmortem.
    fn incident() -> Versioned<Incident> {
        let mut corrected = update(2, "Sign-in fails in Europe.");
        corrected.corrections.push(Correction {
            message: "Sign-in fails.".into(),
            reason: "Only Europe".into(),
            created_at: at(3),
            author: "comms".into(),
        });
        let mut translated = update(4, "Restart Teams to recover.\n\u{1F4A1}");
        translated.translations.insert(
            welsh(),
            TranslatedMessage {
                message: "Ailgychwynnwch Teams.".into(),
                corrections: Vec::new(),
            },
        );
        let state = Incident {
            id: Uuid::from_u128(1),
            title: "Users cannot sign in to Teams".into(),
            status: IncidentStatus::Resolved,
            impact: Impact::Major,
            affected_services: vec![AffectedService {
                service_id: Uuid::from_u128(9),
                status: ServiceStatus::MajorOutage,
            }],
            regions: vec!["europe".into()],
            audience: Audience::Tenants {
                tenants: vec!["contoso".into(), "fabrikam".into()],
            },
            client_action: ClientAction {
                kind: ClientActionKind::RestartClient,
                message: "If a user is still experiencing impact, restart the client.".into(),
            },
            started_at: at(1),
            resolved_at: Some(at(5)),
            updates: vec![update(1, "Investigating."), corrected, translated].into(),
            postmortem: Some(Postmortem {
                body: "A certificate rotation broke token refresh.".into(),
                published_at: at(6),
                author: "comms".into(),
                translations: BTreeMap::from([(welsh(), "Cylchdro tystysgrif.".into())]),
            }),
            title_translations: BTreeMap::from([(welsh(), "Ni all defnyddwyr fewngofnodi".into())]),
            client_action_translations: BTreeMap::new(),
        };
        Versioned {
            id: state.id,
            version: 7,
            state,
        }
    }

    /// What [`IncidentBody::json`] must equal: the body made and serialised whole.
    fn whole(
        v: &Versioned<Incident>,
        viewer: &Viewer,
        negotiation: &Negotiation,
    ) -> Option<String> {
        for_viewer(v.clone(), viewer)
            .map(|v| IncidentBody::new(v, negotiation))
            .map(|body| serde_json::to_string(&body).unwrap())
    }

    #[test]
    fn the_json_of_an_incident_is_its_body_serialised_whole_for_every_viewer_and_language() {
        let english = Language::parse("lang", "en").unwrap();
        let negotiations = [
            Negotiation::default_only(english.clone()),
            Negotiation::fixed(Some(welsh()), english.clone()),
        ];
        let viewers = [
            Viewer::Everyone,
            Viewer::Tenant("contoso".into()),
            Viewer::Tenant("northwind".into()),
            Viewer::Public,
        ];
        // Also the other shape: public, open, no postmortem, nothing translated, no updates.
        let mut bare = incident();
        bare.state.audience = Audience::Public;
        bare.state.status = IncidentStatus::Investigating;
        bare.state.resolved_at = None;
        bare.state.postmortem = None;
        bare.state.title_translations.clear();
        bare.state.updates = Timeline::default();
        for v in [incident(), bare] {
            for negotiation in &negotiations {
                for viewer in &viewers {
                    let expected = whole(&v, viewer, negotiation);
                    // Twice: rendered, then from what the timeline kept.
                    assert_eq!(IncidentBody::json(&v, viewer, negotiation), expected);
                    assert_eq!(IncidentBody::json(&v, viewer, negotiation), expected);
                }
            }
        }
        assert_eq!(whole(&incident(), &Viewer::Public, &negotiations[0]), None);
    }

    #[test]
    fn a_corrected_update_is_rendered_again_in_every_state_that_holds_the_correction() {
        let english = Negotiation::default_only(Language::parse("lang", "en").unwrap());
        let before = incident();
        let shown = |v: &Versioned<Incident>| IncidentBody::json(v, &Viewer::Everyone, &english);
        let first = shown(&before);
        // A later state shares the earlier one's updates, and what was rendered of them.
        let mut after = before.clone();
        after.state.updates.push(update(5, "Resolved."));
        let corrected = after.state.updates.find_mut(|u| u.id == Uuid::from_u128(1));
        corrected.unwrap().message = "Investigating sign-in failures.".into();
        assert_eq!(shown(&after), whole(&after, &Viewer::Everyone, &english));
        assert!(shown(&after)
            .unwrap()
            .contains("Investigating sign-in failures."));
        // The earlier state is untouched by the later one's change.
        assert_eq!(shown(&before), first);
        assert!(!first.unwrap().contains("Investigating sign-in failures."));
        // A state that shares nothing, corrected in place after it was rendered.
        let mut alone = incident();
        shown(&alone);
        let corrected = alone.state.updates.find_mut(|u| u.id == Uuid::from_u128(2));
        corrected.unwrap().message = "Sign-in fails in Europe and Asia.".into();
        assert_eq!(shown(&alone), whole(&alone, &Viewer::Everyone, &english));
    }
}
