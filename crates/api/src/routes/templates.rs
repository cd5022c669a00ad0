//! `/v1/templates`: publishers and admins keep the notices they send again and again. A
//! tenant-bound key's templates belong to its tenant; it sees those and the ones of no
//! tenant, and changes its own only.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use domain::template::{self, RawFields, TemplateDecider};
use projections::{queries, Versioned};
use utoipa::OpenApi;
use uuid::Uuid;

use crate::auth::{Caller, Permission};
use crate::bodies::{NewTemplate, TemplateBody, TemplateChanges, TemplatePage};
use crate::commands::{self, Answer};
use crate::extract;
use crate::lookups;
use crate::paging;
use crate::problem::ApiError;
use crate::routing::{self, Routes};
use crate::state::AppState;

pub fn configure(routes: &mut Routes<'_>) {
    routes
        .resource("/v1/templates", [routing::post(create), routing::get(list)])
        .resource(
            "/v1/templates/{id}",
            [
                routing::get(get),
                routing::patch(change),
                routing::delete(delete),
            ],
        );
}

#[derive(OpenApi)]
#[openapi(paths(create, list, get, change, delete))]
pub struct Doc;

fn render(template: &Versioned<template::Template>) -> String {
    serde_json::to_string(&TemplateBody::from(template.clone())).unwrap_or_default()
}

/// Keep a template.
#[utoipa::path(
    operation_id = "create_template", post, path = "/v1/templates", tag = "templates",
    request_body = NewTemplate,
    params(commands::CreateHeaders),
    responses(
        (status = 201, body = TemplateBody, headers(("Location" = String), ("ETag" = String))),
        crate::problem::documented::CreateProblems,
    ),
    security(("bearer" = []))
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let key = caller.require(Permission::Publish)?;
    let new: NewTemplate = extract::json_body(&request, &body)?;
    let id = state.publisher.new_id();
    let command = template::Command::Create(template::Create {
        template_id: id,
        name: new.name,
        fields: RawFields {
            title: new.title,
            message: new.message,
            impact: new.impact,
            status: new.status,
            client_action: new.client_action,
            translations: new.translations,
        },
        tenant: caller.tenant().map(str::to_owned),
        default_language: state.default_language.clone(),
        author: key.id.to_string(),
        at: Utc::now(),
    });
    commands::execute::<TemplateDecider>(
        &state,
        &request,
        &body,
        key,
        id,
        &command,
        Answer {
            status: StatusCode::CREATED,
            location: Some(format!("/v1/templates/{id}")),
            render: &render,
        },
    )
    .await
}

/// The templates the caller may use, by name.
#[utoipa::path(
    operation_id = "list_templates", get, path = "/v1/templates", tag = "templates",
    params(paging::PageQuery),
    responses(
        (status = 200, description = "One page of templates", body = TemplatePage),
        crate::problem::documented::AdminListProblems,
    ),
    security(("bearer" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<paging::PageQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::Publish)?;
    let limit = paging::page_limit(query.limit)?;
    let after: Option<(String, Uuid)> = paging::decode_cursor(query.cursor.as_deref())?;
    let client = state.store.pool().get().await?;
    let page = queries::templates_page(&client, caller.tenant(), after, limit).await?;
    let next_cursor = paging::next_cursor(&page, |last| (last.state.name.clone(), last.id));
    Ok(HttpResponse::Ok().json(TemplatePage {
        items: page.items.into_iter().map(TemplateBody::from).collect(),
        next_cursor,
    }))
}

/// One template (a deleted one too, with its `deleted_at`).
#[utoipa::path(
    operation_id = "get_template", get, path = "/v1/templates/{id}", tag = "templates",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The template", body = TemplateBody, headers(("ETag" = String))),
        crate::problem::documented::AdminGetProblems,
    ),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::Publish)?;
    let found = lookups::visible_template(&state, caller.tenant(), *id).await?;
    Ok(commands::resource(
        StatusCode::OK,
        found.version,
        &TemplateBody::from(found),
    ))
}

/// The template `id` if the caller may change it: its own tenant's (an unbound key: any),
/// deleted ones too (deleting again is no change; changing one is refused by the domain).
async fn changeable(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Versioned<template::Template>, ApiError> {
    let found = lookups::visible_template(state, caller.tenant(), id).await?;
    if caller.tenant().is_some() && found.state.tenant.as_deref() != caller.tenant() {
        return Err(ApiError::Forbidden(
            "a template of no tenant is changed by an unbound key".into(),
        ));
    }
    Ok(found)
}

/// Change a template: notices already sent keep what they said.
#[utoipa::path(
    operation_id = "change_template", patch, path = "/v1/templates/{id}", tag = "templates",
    request_body = TemplateChanges,
    params(("id" = Uuid, Path), commands::CommandHeaders),
    responses(
        (status = 200, description = "The template as changed", body = TemplateBody, headers(("ETag" = String))),
        crate::problem::documented::CommandProblems,
    ),
    security(("bearer" = []))
)]
pub async fn change(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    id: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let key = caller.require(Permission::Publish)?;
    let changes: TemplateChanges = extract::json_body(&request, &body)?;
    changeable(&state, &caller, *id).await?;
    // Merged into the template as it stands when the command is decided: two changes of
    // different fields both hold.
    let command = template::Command::Change(template::Change {
        patch: template::Patch {
            name: changes.name,
            title: changes.title,
            message: changes.message,
            impact: changes.impact,
            status: changes.status,
            client_action: changes.client_action,
            translations: changes.translations,
        },
        default_language: state.default_language.clone(),
        author: key.id.to_string(),
        at: Utc::now(),
    });
    commands::execute::<TemplateDecider>(
        &state,
        &request,
        &body,
        key,
        *id,
        &command,
        Answer {
            status: StatusCode::OK,
            location: None,
            render: &render,
        },
    )
    .await
}

/// Delete a template: notices may no longer name it; those that did keep what they said.
#[utoipa::path(
    operation_id = "delete_template", delete, path = "/v1/templates/{id}", tag = "templates",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "Deleted (or already deleted)", body = TemplateBody, headers(("ETag" = String))),
        crate::problem::documented::RemoveProblems,
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let key = caller.require(Permission::Publish)?;
    changeable(&state, &caller, *id).await?;
    let command = template::Command::Delete(template::Delete {
        author: key.id.to_string(),
        at: Utc::now(),
    });
    commands::execute::<TemplateDecider>(
        &state,
        &request,
        b"",
        key,
        *id,
        &command,
        Answer {
            status: StatusCode::OK,
            location: None,
            render: &render,
        },
    )
    .await
}
