//! `/v1/incidents`: publishers declare and update incidents; anyone reads the ones they may
//! see. A tenant-bound publisher writes to its own tenant only.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use domain::api_key::ApiKey;
use domain::incident::{self, Incident, IncidentDecider};
use domain::values::{AffectedService, Audience};
use projections::history::{self, AsOf};
use projections::queries::{self, for_viewer, IncidentFilter, IncidentState, Viewer};
use projections::Versioned;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{Caller, Permission};
use crate::http::{self, Answer};
use crate::problem::ApiError;
use crate::renderings::Rendering;
use crate::views::{
    IncidentBody, IncidentPage, NewCorrection, NewIncident, NewIncidentUpdate, NewPostmortem,
    Reopening,
};
use crate::AppState;

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
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9]{1,18}$")),
        )
        .build()
        .into()
}

/// What a publisher writes, as the caller: the key, and the audience it is confined to.
pub(crate) struct Publisher<'a> {
    pub(crate) key: &'a Versioned<ApiKey>,
    pub(crate) tenant: Option<&'a str>,
}

pub(crate) fn publisher(caller: &Caller) -> Result<Publisher<'_>, ApiError> {
    Ok(Publisher {
        key: caller.require(Permission::Publish)?,
        tenant: caller.tenant(),
    })
}

impl Publisher<'_> {
    pub(crate) fn viewer(&self) -> Viewer {
        match self.tenant {
            Some(tenant) => Viewer::Tenant(tenant.to_owned()),
            None => Viewer::Everyone,
        }
    }

    /// The audience of a new notice: as asked, or for a tenant-bound key exactly its
    /// tenant (the default when none is asked).
    pub(crate) fn audience(&self, asked: Option<Audience>) -> Result<Audience, ApiError> {
        let Some(tenant) = self.tenant else {
            return Ok(asked.unwrap_or_default());
        };
        let own = Audience::Tenants {
            tenants: vec![tenant.to_owned()],
        };
        match asked {
            None => Ok(own),
            Some(Audience::Tenants { tenants })
                if tenants.len() == 1 && tenants[0].trim().eq_ignore_ascii_case(tenant) =>
            {
                Ok(own)
            }
            Some(_) => Err(ApiError::Forbidden(format!(
                "a key bound to tenant {tenant} publishes to that tenant only"
            ))),
        }
    }

    /// Refuses a command on a notice this key may not write, given the notice's whole
    /// (unredacted) audience, `None` if there is no such notice: 404 when the key may not
    /// even see it, 403 when it is shared beyond the key's tenant. Audiences never change,
    /// so the check holds for the write that follows.
    pub(crate) fn may_write(&self, audience: Option<&Audience>) -> Result<(), ApiError> {
        let audience = audience
            .filter(|a| self.viewer().may_see(a))
            .ok_or_else(|| ApiError::NotFound("no such notice".into()))?;
        let Some(tenant) = self.tenant else {
            return Ok(());
        };
        match audience {
            Audience::Tenants { tenants } if tenants.len() == 1 && tenants[0] == tenant => Ok(()),
            _ => Err(ApiError::Forbidden(format!(
                "a key bound to tenant {tenant} changes that tenant's notices only"
            ))),
        }
    }
}

/// 404 or 403 unless the caller may write to incident `id` (see [`Publisher::may_write`]).
async fn may_write_incident(
    state: &AppState,
    publisher: &Publisher<'_>,
    id: Uuid,
) -> Result<(), ApiError> {
    if publisher.tenant.is_none() {
        // Sees every incident; the command itself answers 404 for a missing one.
        return Ok(());
    }
    let client = state.store.pool().get().await?;
    // Read unredacted: the tenant's view would hide the other tenants it is shared with.
    let incident = queries::incident(&client, id, &Viewer::Everyone).await?;
    publisher.may_write(incident.as_ref().map(|i| &i.state.audience))
}

/// 400 naming every service of the list `field` that does not exist (or is retired).
pub(crate) async fn known_services(
    state: &AppState,
    field: &str,
    ids: impl Iterator<Item = Uuid>,
) -> Result<(), ApiError> {
    let ids: Vec<Uuid> = ids.collect();
    let client = state.store.pool().get().await?;
    let unknown = queries::unknown_services(&client, &ids).await?;
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid(
        ids.iter()
            .enumerate()
            .filter(|(_, id)| unknown.contains(id))
            .map(|(i, id)| domain::FieldError {
                field: format!("{field}[{i}]"),
                message: format!("there is no service {id} in use"),
            })
            .collect(),
    ))
}

fn service_ids(services: &[AffectedService]) -> impl Iterator<Item = Uuid> + '_ {
    services.iter().map(|s| s.service_id)
}

fn render(viewer: Viewer) -> impl Fn(&Versioned<Incident>) -> String + Sync {
    move |incident: &Versioned<Incident>| {
        for_viewer(incident.clone(), &viewer)
            .map(IncidentBody::from)
            .and_then(|body| serde_json::to_string(&body).ok())
            .unwrap_or_default()
    }
}

async fn run(
    state: &AppState,
    request: &HttpRequest,
    body: &[u8],
    publisher: &Publisher<'_>,
    id: Uuid,
    command: incident::Command,
    status: StatusCode,
) -> Result<HttpResponse, ApiError> {
    http::execute::<IncidentDecider>(
        state,
        request,
        body,
        publisher.key,
        id,
        &command,
        Answer {
            status,
            location: Some(format!("/v1/incidents/{id}")),
            render: &render(publisher.viewer()),
        },
    )
    .await
}

/// Declare an incident.
#[utoipa::path(
    operation_id = "declare_incident", post, path = "/v1/incidents", tag = "incidents",
    request_body = NewIncident,
    params(http::CreateHeaders),
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
    let publisher = publisher(&caller)?;
    let new: NewIncident = http::json_body(&request, &body)?;
    let audience = publisher.audience(new.audience)?;
    known_services(
        &state,
        "affected_services",
        service_ids(&new.affected_services),
    )
    .await?;
    let id = Uuid::new_v4();
    let command = incident::Command::Declare(incident::Declare {
        incident_id: id,
        update_id: Uuid::new_v4(),
        title: new.title,
        impact: new.impact,
        status: new.status,
        message: new.message,
        affected_services: new.affected_services,
        regions: new.regions,
        audience,
        client_action: new.client_action.unwrap_or_default(),
        author: publisher.key.state.name.clone(),
        at: Utc::now(),
    });
    run(
        &state,
        &request,
        &body,
        &publisher,
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
        http::CommandHeaders),
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
    let publisher = publisher(&caller)?;
    let update: NewIncidentUpdate = http::json_body(&request, &body)?;
    may_write_incident(&state, &publisher, *id).await?;
    if let Some(services) = &update.affected_services {
        known_services(&state, "affected_services", service_ids(services)).await?;
    }
    let command = incident::Command::PostUpdate(incident::PostUpdate {
        update_id: Uuid::new_v4(),
        status: update.status,
        message: update.message,
        impact: update.impact,
        affected_services: update.affected_services,
        client_action: update.client_action,
        author: publisher.key.state.name.clone(),
        at: Utc::now(),
    });
    run(
        &state,
        &request,
        &body,
        &publisher,
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
        http::CommandHeaders),
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
    let publisher = publisher(&caller)?;
    let correction: NewCorrection = http::json_body(&request, &body)?;
    may_write_incident(&state, &publisher, id).await?;
    let command = incident::Command::Correct(incident::Correct {
        update_id,
        message: correction.message,
        reason: correction.reason,
        author: publisher.key.state.name.clone(),
        at: Utc::now(),
    });
    run(
        &state,
        &request,
        &body,
        &publisher,
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
        http::CommandHeaders),
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
    let publisher = publisher(&caller)?;
    let reopening: Reopening = http::json_body(&request, &body)?;
    may_write_incident(&state, &publisher, *id).await?;
    let command = incident::Command::Reopen(incident::Reopen {
        update_id: Uuid::new_v4(),
        message: reopening.message,
        author: publisher.key.state.name.clone(),
        at: Utc::now(),
    });
    run(
        &state,
        &request,
        &body,
        &publisher,
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
        http::CommandHeaders),
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
    let publisher = publisher(&caller)?;
    let postmortem: NewPostmortem = http::json_body(&request, &body)?;
    may_write_incident(&state, &publisher, *id).await?;
    let command = incident::Command::PublishPostmortem(incident::PublishPostmortem {
        body: postmortem.body,
        author: publisher.key.state.name.clone(),
        at: Utc::now(),
    });
    run(
        &state,
        &request,
        &body,
        &publisher,
        *id,
        command,
        StatusCode::CREATED,
    )
    .await
}

/// The incidents the caller may see, newest first.
#[utoipa::path(
    operation_id = "list_incidents", get, path = "/v1/incidents", tag = "incidents",
    params(ListQuery),
    responses(
        (status = 200, body = IncidentPage),
        crate::problem::documented::PublicListProblems,
    ),
    security((), ("bearer" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    state.limits.allow_read(caller.client_ip)?;
    let limit = http::page_limit(query.limit)?;
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
        after: http::decode_cursor::<(DateTime<Utc>, Uuid)>(query.cursor.as_deref())?,
    };
    let client = state.store.pool().get().await?;
    let page = queries::incidents_page(&client, &caller.viewer(), &filter, limit).await?;
    let next_cursor = http::next_cursor(&page, |last| (last.state.started_at, last.id));
    Ok(HttpResponse::Ok().json(IncidentPage {
        items: page.items.into_iter().map(IncidentBody::from).collect(),
        next_cursor,
    }))
}

/// One incident with its whole timeline, now or as it stood at `as_of`.
#[utoipa::path(
    operation_id = "get_incident", get, path = "/v1/incidents/{id}", tag = "incidents",
    params(
        ("id" = Uuid, Path), GetQuery,
        ("If-None-Match" = Option<String>, Header, description = "The ETag of an earlier answer: 304 while the incident is at that version (without `as_of`)"),
    ),
    responses(
        (status = 200, body = IncidentBody, headers(("ETag" = String))),
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
    let not_found = || ApiError::NotFound("no such incident".into());
    let Some(as_of) = query.as_of.as_deref() else {
        let rendering = state
            .incident_renderings
            .current(*id, &viewer, || async {
                let client = state.store.pool().get().await?;
                queries::incident(&client, *id, &viewer)
                    .await?
                    .map(|incident| Rendering::new(incident.version, &IncidentBody::from(incident)))
                    .transpose()
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
    Ok(http::resource(
        StatusCode::OK,
        incident.version,
        &IncidentBody::from(incident),
    ))
}
