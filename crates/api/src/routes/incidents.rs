//! `/v1/incidents`: publishers declare and update incidents; anyone reads the ones they may
//! see. A tenant-bound author writes to its own tenant only.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use domain::incident::{self, Incident, IncidentDecider};
use domain::language::{Language, Negotiation};
use domain::template::{Taken, TemplateFields};
use domain::values::AffectedService;
use projections::history::{self, AsOf};
use projections::queries::{self, IncidentFilter, IncidentState, Viewer};
use projections::Versioned;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::auth::{Author, Caller};
use crate::bodies::{
    IncidentBody, IncidentPage, NewCorrection, NewIncident, NewIncidentUpdate, NewPostmortem,
    Reopening,
};
use crate::commands::{self, Answer};
use crate::extract;
use crate::language::{self, LanguageHeader, LanguageQuery};
use crate::lookups::{self, known_services};
use crate::paging;
use crate::problem::ApiError;
use crate::renderings::Rendering;
use crate::routing::{self, Routes};
use crate::state::AppState;

pub fn configure(routes: &mut Routes<'_>) {
    routes
        .resource(
            "/v1/incidents",
            [routing::post(declare), routing::get(list)],
        )
        .resource("/v1/incidents/{id}", [routing::get(get)])
        .resource("/v1/incidents/{id}/updates", [routing::post(post_update)])
        .resource(
            "/v1/incidents/{id}/updates/{update_id}/corrections",
            [routing::post(correct)],
        )
        .resource("/v1/incidents/{id}/reopen", [routing::post(reopen)])
        .resource("/v1/incidents/{id}/postmortem", [routing::post(postmortem)]);
}

#[derive(OpenApi)]
#[openapi(
    paths(declare, list, get, post_update, correct, reopen, postmortem),
    components(schemas(IncidentListState))
)]
pub struct Doc;

/// Which incidents a list shows.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentListState {
    Open,
    Resolved,
    #[default]
    All,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `open`, `resolved` or `all` (default).
    pub state: Option<IncidentListState>,
    /// Only incidents affecting this service.
    pub service_id: Option<Uuid>,
    /// Only incidents concerning this region: those naming it, `global` ones, and those
    /// naming no region.
    #[param(schema_with = domain::values::schema::label)]
    pub region: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// The incident as it stood at this RFC 3339 time or global position.
    #[param(schema_with = as_of_schema)]
    pub as_of: Option<String>,
}

/// `as_of`: an RFC 3339 time, or a global position (a PostgreSQL bigint, so at most 18
/// digits keep it in range).
fn as_of_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                .pattern(Some(domain::values::schema::TIME_PATTERN)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9]{1,18}$")),
        )
        .build()
        .into()
}

/// 404 or 403 unless the caller may write to incident `id` (see [`Author::may_write`]).
async fn may_write_incident(
    state: &AppState,
    author: &Author<'_>,
    id: Uuid,
) -> Result<(), ApiError> {
    if author.tenant.is_none() {
        // Sees every incident; the command itself answers 404 for a missing one.
        return Ok(());
    }
    let client = state.store.pool().get().await?;
    // Read unredacted: the tenant's view would hide the other tenants it is shared with.
    let incident = queries::incident(&client, id, &Viewer::Everyone).await?;
    author.may_write(incident.as_ref().map(|i| &i.state.audience))
}

fn service_ids(services: &[AffectedService]) -> impl Iterator<Item = Uuid> + '_ {
    services.iter().map(|s| s.service_id)
}

fn render(
    viewer: Viewer,
    negotiation: Negotiation,
) -> impl Fn(&Versioned<Incident>) -> String + Sync {
    move |incident: &Versioned<Incident>| {
        IncidentBody::json(incident, &viewer, &negotiation).unwrap_or_default()
    }
}

async fn run(
    state: &AppState,
    request: &HttpRequest,
    body: &[u8],
    author: &Author<'_>,
    id: Uuid,
    command: incident::Command,
    status: StatusCode,
) -> Result<HttpResponse, ApiError> {
    commands::execute::<IncidentDecider>(
        state,
        request,
        body,
        author.key,
        id,
        &command,
        Answer {
            status,
            location: Some(format!("/v1/incidents/{id}")),
            // A write answers in the default language, so that its `ETag` (the version
            // alone) names what it sent; a read in another language has its own.
            render: &render(
                author.viewer(),
                Negotiation::default_only(state.default_language.clone()),
            ),
        },
    )
    .await
}

/// Declare an incident.
#[utoipa::path(
    operation_id = "declare_incident", post, path = "/v1/incidents", tag = "incidents",
    request_body = NewIncident,
    params(commands::CreateHeaders),
    responses(
        (status = 201, body = IncidentBody, headers(("Location" = String), ("ETag" = String))),
        crate::problem::documented::CreateProblems,
    ),
    security(("bearer" = []))
)]
pub async fn declare(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let author = caller.author()?;
    let new: NewIncident = extract::json_body(&request, &body)?;
    let template = match new.template_id {
        Some(id) => Some(
            lookups::template(&state, caller.tenant(), id)
                .await?
                .state
                .fields,
        ),
        None => None,
    };
    let from = |given: Option<String>, kept: Option<&String>| given.or_else(|| kept.cloned());
    let fields = template.as_ref();
    let taken = Taken {
        title: new.title.is_none() && fields.is_some_and(|t| t.title.is_some()),
        message: new.message.is_none() && fields.is_some_and(|t| t.message.is_some()),
        client_action: new.client_action.is_none()
            && fields.is_some_and(|t| t.client_action.is_some()),
    };
    let title = from(new.title, fields.and_then(|t| t.title.as_ref()));
    let message = from(new.message, fields.and_then(|t| t.message.as_ref()));
    let impact = new.impact.or(fields.and_then(|t| t.impact));
    let (title, message, impact) = (
        lookups::required("title", title)?,
        lookups::required("message", message)?,
        lookups::required("impact", impact)?,
    );
    let status = new.status.or(fields.and_then(|t| t.status));
    let client_action = new
        .client_action
        .or_else(|| fields.and_then(|t| t.client_action.clone()));
    let translations = match fields {
        Some(fields) => {
            TemplateFields::check_given(&new.translations)?;
            fields.fill_translations(new.translations, taken)
        }
        None => new.translations,
    };
    let audience = author.audience(new.audience)?;
    known_services(
        &state,
        "affected_services",
        service_ids(&new.affected_services),
    )
    .await?;
    let id = state.publisher.new_id();
    let command = incident::Command::Declare(incident::Declare {
        incident_id: id,
        update_id: Uuid::new_v4(),
        title,
        impact,
        status,
        message,
        affected_services: new.affected_services,
        regions: new.regions,
        audience,
        client_action: client_action.unwrap_or_default(),
        translations,
        default_language: state.default_language.clone(),
        author: author.key.state.name.clone(),
        at: Utc::now(),
    });
    run(
        &state,
        &request,
        &body,
        &author,
        id,
        command,
        StatusCode::CREATED,
    )
    .await
}

/// Post an update: a new status and message, and optionally a new impact, list of affected
/// services or client action. `resolved` closes the incident.
#[utoipa::path(
    operation_id = "post_incident_update", post, path = "/v1/incidents/{id}/updates", tag = "incidents",
    request_body = NewIncidentUpdate,
    params(("id" = Uuid, Path),
        commands::CommandHeaders),
    responses(
        (status = 201, description = "The incident with the new update", body = IncidentBody, headers(("Location" = String), ("ETag" = String))),
        crate::problem::documented::CommandProblems,
    ),
    security(("bearer" = []))
)]
pub async fn post_update(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    id: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let author = caller.author()?;
    let update: NewIncidentUpdate = extract::json_body(&request, &body)?;
    let template = match update.template_id {
        Some(id) => Some(
            lookups::template(&state, caller.tenant(), id)
                .await?
                .state
                .fields,
        ),
        None => None,
    };
    let fields = template.as_ref();
    let taken = Taken {
        title: false,
        message: update.message.is_none() && fields.is_some_and(|t| t.message.is_some()),
        client_action: update.client_action.is_none()
            && fields.is_some_and(|t| t.client_action.is_some()),
    };
    let message = update
        .message
        .or_else(|| fields.and_then(|t| t.message.clone()));
    let status = update.status.or(fields.and_then(|t| t.status));
    let (message, status) = (
        lookups::required("message", message)?,
        lookups::required("status", status)?,
    );
    let client_action = update
        .client_action
        .or_else(|| fields.and_then(|t| t.client_action.clone()));
    let impact = update.impact.or(fields.and_then(|t| t.impact));
    // An update has no title: the template's title and its translations stay out.
    let translations = match fields {
        Some(fields) => fields
            .fill_translations(
                {
                    let given = (update.translations.into_iter())
                        .map(|(tag, t)| {
                            let texts = domain::incident::DeclarationTexts {
                                title: None,
                                message: t.message,
                                client_action: t.client_action,
                            };
                            (tag, texts)
                        })
                        .collect();
                    TemplateFields::check_given(&given)?;
                    given
                },
                taken,
            )
            .into_iter()
            .map(|(tag, t)| {
                let texts = domain::incident::UpdateTexts {
                    message: t.message,
                    client_action: t.client_action,
                };
                (tag, texts)
            })
            .filter(|(_, t)| t != &domain::incident::UpdateTexts::default())
            .collect(),
        None => update.translations,
    };
    may_write_incident(&state, &author, *id).await?;
    if let Some(services) = &update.affected_services {
        known_services(&state, "affected_services", service_ids(services)).await?;
    }
    let command = incident::Command::PostUpdate(incident::PostUpdate {
        update_id: Uuid::new_v4(),
        status,
        message,
        impact,
        affected_services: update.affected_services,
        client_action,
        translations,
        default_language: state.default_language.clone(),
        author: author.key.state.name.clone(),
        at: Utc::now(),
    });
    run(
        &state,
        &request,
        &body,
        &author,
        *id,
        command,
        StatusCode::CREATED,
    )
    .await
}

/// Correct an update's text; the earlier text stays in its `corrections`.
#[utoipa::path(
    operation_id = "correct_incident_update", post, path = "/v1/incidents/{id}/updates/{update_id}/corrections", tag = "incidents",
    request_body = NewCorrection,
    params(("id" = Uuid, Path), ("update_id" = Uuid, Path),
        commands::CommandHeaders),
    responses(
        (status = 201, description = "The incident with the corrected update", body = IncidentBody, headers(("Location" = String), ("ETag" = String))),
        crate::problem::documented::CommandProblems,
    ),
    security(("bearer" = []))
)]
pub async fn correct(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    path: web::Path<(Uuid, Uuid)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (id, update_id) = path.into_inner();
    let author = caller.author()?;
    let correction: NewCorrection = extract::json_body(&request, &body)?;
    may_write_incident(&state, &author, id).await?;
    let command = incident::Command::Correct(incident::Correct {
        update_id,
        language: correction.language,
        message: correction.message,
        reason: correction.reason,
        default_language: state.default_language.clone(),
        author: author.key.state.name.clone(),
        at: Utc::now(),
    });
    run(
        &state,
        &request,
        &body,
        &author,
        id,
        command,
        StatusCode::CREATED,
    )
    .await
}

/// Reopen a resolved incident, with a message saying why.
#[utoipa::path(
    operation_id = "reopen_incident", post, path = "/v1/incidents/{id}/reopen", tag = "incidents",
    request_body = Reopening,
    params(("id" = Uuid, Path),
        commands::CommandHeaders),
    responses(
        (status = 200, description = "The reopened incident", body = IncidentBody, headers(("Location" = String), ("ETag" = String))),
        crate::problem::documented::CommandProblems,
    ),
    security(("bearer" = []))
)]
pub async fn reopen(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    id: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let author = caller.author()?;
    let reopening: Reopening = extract::json_body(&request, &body)?;
    may_write_incident(&state, &author, *id).await?;
    let command = incident::Command::Reopen(incident::Reopen {
        update_id: Uuid::new_v4(),
        message: reopening.message,
        translations: reopening.translations,
        default_language: state.default_language.clone(),
        author: author.key.state.name.clone(),
        at: Utc::now(),
    });
    run(
        &state,
        &request,
        &body,
        &author,
        *id,
        command,
        StatusCode::OK,
    )
    .await
}

/// Publish the postmortem of a resolved incident.
#[utoipa::path(
    operation_id = "publish_postmortem", post, path = "/v1/incidents/{id}/postmortem", tag = "incidents",
    request_body = NewPostmortem,
    params(("id" = Uuid, Path),
        commands::CommandHeaders),
    responses(
        (status = 201, description = "The incident with its postmortem", body = IncidentBody, headers(("Location" = String), ("ETag" = String))),
        crate::problem::documented::CommandProblems,
    ),
    security(("bearer" = []))
)]
pub async fn postmortem(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    id: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let author = caller.author()?;
    let postmortem: NewPostmortem = extract::json_body(&request, &body)?;
    may_write_incident(&state, &author, *id).await?;
    let command = incident::Command::PublishPostmortem(incident::PublishPostmortem {
        body: postmortem.body,
        translations: postmortem.translations,
        default_language: state.default_language.clone(),
        author: author.key.state.name.clone(),
        at: Utc::now(),
    });
    run(
        &state,
        &request,
        &body,
        &author,
        *id,
        command,
        StatusCode::CREATED,
    )
    .await
}

/// The incidents the caller may see, newest first.
#[utoipa::path(
    operation_id = "list_incidents", get, path = "/v1/incidents", tag = "incidents",
    params(ListQuery, LanguageQuery, LanguageHeader),
    responses(
        (status = 200, body = IncidentPage, headers(("Content-Language" = String))),
        crate::problem::documented::PublicListProblems,
    ),
    security((), ("bearer" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListQuery>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.limits.allow_read(caller.client_ip)?;
    let negotiation = language::negotiation(&state, &request)?;
    let limit = paging::page_limit(query.limit)?;
    let region = query
        .region
        .as_deref()
        .map(|r| domain::values::label("region", r))
        .transpose()?;
    let filter = IncidentFilter {
        state: match query.state.unwrap_or_default() {
            IncidentListState::Open => IncidentState::Open,
            IncidentListState::Resolved => IncidentState::Resolved,
            IncidentListState::All => IncidentState::All,
        },
        service_id: query.service_id,
        region,
        after: paging::decode_cursor::<(DateTime<Utc>, Uuid)>(query.cursor.as_deref())?,
    };
    let client = state.store.pool().get().await?;
    let page = queries::incidents_page(&client, &caller.viewer(), &filter, limit).await?;
    let next_cursor = paging::next_cursor(&page, |last| (last.state.started_at, last.id));
    let items: Vec<IncidentBody> = (page.items.into_iter())
        .map(|incident| IncidentBody::new(incident, &negotiation))
        .collect();
    let rendered = language::distinct(items.iter().map(|i| &i.language), &negotiation.default);
    let mut response = HttpResponse::Ok();
    language::say_languages(&mut response, &rendered);
    Ok(response.json(IncidentPage { items, next_cursor }))
}

/// One incident with its whole timeline, now or as it stood at `as_of`.
#[utoipa::path(
    operation_id = "get_incident", get, path = "/v1/incidents/{id}", tag = "incidents",
    params(
        ("id" = Uuid, Path), GetQuery, LanguageQuery, LanguageHeader,
        ("If-None-Match" = Option<String>, Header, description = "The ETag of an earlier answer: 304 while the incident is at that version (without `as_of`)"),
    ),
    responses(
        (status = 200, body = IncidentBody, headers(("ETag" = String), ("Content-Language" = String))),
        (status = 304, description = "Not modified: `If-None-Match` names the current version"),
        crate::problem::documented::PublicGetProblems,
    ),
    security((), ("bearer" = []))
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    query: web::Query<GetQuery>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.limits.allow_read(caller.client_ip)?;
    let viewer = caller.viewer();
    let negotiation = language::negotiation(&state, &request)?;
    let not_found = || ApiError::NotFound("no such incident".into());
    let Some(as_of) = query.as_of.as_deref() else {
        let rendering = state
            .incident_renderings
            .current(*id, &viewer, &negotiation, |language: Option<Language>| {
                let (state, viewer, id) = (&state, &viewer, *id);
                async move {
                    let client = state.store.pool().get().await?;
                    let fixed = Negotiation::fixed(language, state.default_language.clone());
                    queries::incident(&client, id, viewer)
                        .await?
                        .map(|incident| {
                            let version = incident.version;
                            let body = IncidentBody::new(incident, &fixed);
                            Rendering::new(
                                version,
                                &body,
                                &body.language,
                                &body.translations,
                                &fixed.default,
                            )
                        })
                        .transpose()
                }
            })
            .await?
            .ok_or_else(not_found)?;
        return Ok(rendering.respond(&request));
    };
    let as_of: AsOf = as_of
        .parse()
        .map_err(|e: history::AsOfError| ApiError::invalid("as_of", e.to_string()))?;
    let incident = history::as_of::<IncidentDecider>(&state.store, *id, as_of, &viewer)
        .await?
        .ok_or_else(not_found)?;
    let version = incident.version;
    let body = IncidentBody::new(incident, &negotiation);
    let etag = extract::etag_in(version, &body.language, &negotiation.default);
    let mut response = HttpResponse::Ok();
    response.insert_header((actix_web::http::header::ETAG, etag));
    language::say_languages(&mut response, std::slice::from_ref(&body.language));
    Ok(response.json(&body))
}
