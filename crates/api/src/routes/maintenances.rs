//! `/v1/maintenances`: publishers schedule planned work and move it through its statuses;
//! anyone reads the ones they may see.

use crate::language::{self, LanguageHeader, LanguageQuery};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use domain::language::{Language, Negotiation};
use domain::maintenance::{self, Maintenance, MaintenanceDecider};
use projections::queries::{self, for_viewer, MaintenanceState, Viewer};
use projections::Versioned;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::auth::{Author, Caller};
use crate::bodies::{MaintenanceBody, MaintenancePage, NewMaintenance, NewMaintenanceUpdate};
use crate::commands::{self, Answer};
use crate::extract;
use crate::lookups::known_services;
use crate::paging;
use crate::problem::ApiError;
use crate::renderings::Rendering;
use crate::routing::{self, Routes};
use crate::state::AppState;

pub fn configure(routes: &mut Routes<'_>) {
    routes
        .resource(
            "/v1/maintenances",
            [routing::post(schedule), routing::get(list)],
        )
        .resource("/v1/maintenances/{id}", [routing::get(get)])
        .resource(
            "/v1/maintenances/{id}/updates",
            [routing::post(post_update)],
        );
}

#[derive(OpenApi)]
#[openapi(
    paths(schedule, list, get, post_update),
    components(schemas(MaintenanceListState))
)]
pub struct Doc;

/// Which maintenances a list shows.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceListState {
    /// Scheduled, not started.
    Upcoming,
    /// In progress or verifying.
    Active,
    /// Completed or cancelled.
    Completed,
    #[default]
    All,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `upcoming`, `active`, `completed` (completed or cancelled) or `all` (default).
    pub state: Option<MaintenanceListState>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn render(
    viewer: Viewer,
    negotiation: Negotiation,
) -> impl Fn(&Versioned<Maintenance>) -> String + Sync {
    move |maintenance: &Versioned<Maintenance>| {
        for_viewer(maintenance.clone(), &viewer)
            .map(|maintenance| MaintenanceBody::new(maintenance, &negotiation))
            .and_then(|body| serde_json::to_string(&body).ok())
            .unwrap_or_default()
    }
}

async fn run(
    state: &AppState,
    request: &HttpRequest,
    body: &[u8],
    author: &Author<'_>,
    id: Uuid,
    command: maintenance::Command,
) -> Result<HttpResponse, ApiError> {
    commands::execute::<MaintenanceDecider>(
        state,
        request,
        body,
        author.key,
        id,
        &command,
        Answer {
            status: StatusCode::CREATED,
            location: Some(format!("/v1/maintenances/{id}")),
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

/// Schedule planned work.
#[utoipa::path(
    operation_id = "schedule_maintenance", post, path = "/v1/maintenances", tag = "maintenances",
    request_body = NewMaintenance,
    params(commands::CreateHeaders),
    responses(
        (status = 201, body = MaintenanceBody, headers(("Location" = String), ("ETag" = String))),
        crate::problem::documented::CreateProblems,
    ),
    security(("bearer" = []))
)]
pub async fn schedule(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let author = caller.author()?;
    let new: NewMaintenance = extract::json_body(&request, &body)?;
    let audience = author.audience(new.audience)?;
    known_services(
        &state,
        "affected_services",
        new.affected_services.iter().copied(),
    )
    .await?;
    let id = state.publisher.new_id();
    let command = maintenance::Command::Schedule(maintenance::Schedule {
        maintenance_id: id,
        update_id: Uuid::new_v4(),
        title: new.title,
        message: new.message,
        affected_services: new.affected_services,
        regions: new.regions,
        starts_at: new.starts_at,
        ends_at: new.ends_at,
        audience,
        translations: new.translations,
        default_language: state.default_language.clone(),
        auto_start: new.auto_start.unwrap_or(true),
        auto_complete: new.auto_complete.unwrap_or(true),
        remind_before_minutes: new.remind_before_minutes.unwrap_or(60),
        author: author.key.state.name.clone(),
        at: Utc::now(),
    });
    run(&state, &request, &body, &author, id, command).await
}

/// Post an update: move the work to its next status, or note progress in the same one.
#[utoipa::path(
    operation_id = "post_maintenance_update", post, path = "/v1/maintenances/{id}/updates", tag = "maintenances",
    request_body = NewMaintenanceUpdate,
    params(("id" = Uuid, Path),
        commands::CommandHeaders),
    responses(
        (status = 201, description = "The maintenance with the new update", body = MaintenanceBody, headers(("Location" = String), ("ETag" = String))),
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
    let update: NewMaintenanceUpdate = extract::json_body(&request, &body)?;
    if author.tenant.is_some() {
        let client = state.store.pool().get().await?;
        // Read unredacted: the tenant's view would hide the other tenants it is shared with.
        let found = queries::maintenance(&client, *id, &Viewer::Everyone).await?;
        author.may_write(found.as_ref().map(|m| &m.state.audience))?;
    }
    let command = maintenance::Command::PostUpdate(maintenance::PostUpdate {
        update_id: Uuid::new_v4(),
        status: update.status,
        message: update.message,
        translations: update.translations,
        default_language: state.default_language.clone(),
        author: author.key.state.name.clone(),
        at: Utc::now(),
    });
    run(&state, &request, &body, &author, *id, command).await
}

/// The maintenances the caller may see, latest start first.
#[utoipa::path(
    operation_id = "list_maintenances", get, path = "/v1/maintenances", tag = "maintenances",
    params(ListQuery, LanguageQuery, LanguageHeader),
    responses(
        (status = 200, body = MaintenancePage, headers(("Content-Language" = String))),
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
    let filter = match query.state.unwrap_or_default() {
        MaintenanceListState::Upcoming => MaintenanceState::Upcoming,
        MaintenanceListState::Active => MaintenanceState::Active,
        MaintenanceListState::Completed => MaintenanceState::Completed,
        MaintenanceListState::All => MaintenanceState::All,
    };
    let after = paging::decode_cursor::<(DateTime<Utc>, Uuid)>(query.cursor.as_deref())?;
    let client = state.store.pool().get().await?;
    let page = queries::maintenances_page(&client, &caller.viewer(), filter, after, limit).await?;
    let next_cursor = paging::next_cursor(&page, |last| (last.state.starts_at, last.id));
    let items: Vec<MaintenanceBody> = (page.items.into_iter())
        .map(|maintenance| MaintenanceBody::new(maintenance, &negotiation))
        .collect();
    let rendered = language::distinct(items.iter().map(|m| &m.language), &negotiation.default);
    let mut response = HttpResponse::Ok();
    language::say_languages(&mut response, &rendered);
    Ok(response.json(MaintenancePage { items, next_cursor }))
}

/// One maintenance with its updates.
#[utoipa::path(
    operation_id = "get_maintenance", get, path = "/v1/maintenances/{id}", tag = "maintenances",
    params(
        ("id" = Uuid, Path), LanguageQuery, LanguageHeader,
        ("If-None-Match" = Option<String>, Header, description = "The ETag of an earlier answer: 304 while the maintenance is at that version"),
    ),
    responses(
        (status = 200, body = MaintenanceBody, headers(("ETag" = String), ("Content-Language" = String))),
        (status = 304, description = "Not modified: `If-None-Match` names the current version"),
        crate::problem::documented::PublicGetProblems,
    ),
    security((), ("bearer" = []))
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.limits.allow_read(caller.client_ip)?;
    let viewer = caller.viewer();
    let negotiation = language::negotiation(&state, &request)?;
    let rendering = state
        .maintenance_renderings
        .current(*id, &viewer, &negotiation, |language: Option<Language>| {
            let (state, viewer, id) = (&state, &viewer, *id);
            async move {
                let client = state.store.pool().get().await?;
                let fixed = Negotiation::fixed(language, state.default_language.clone());
                queries::maintenance(&client, id, viewer)
                    .await?
                    .map(|m| {
                        let version = m.version;
                        let body = MaintenanceBody::new(m, &fixed);
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
        .ok_or_else(|| ApiError::NotFound("no such maintenance".into()))?;
    Ok(rendering.respond(&request))
}
