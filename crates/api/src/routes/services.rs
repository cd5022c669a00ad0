//! `/v1/services`: admins create, change and retire services; anyone reads them, with the
//! status derived from the incidents and maintenances the caller may see.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use domain::service::{self, Service, ServiceDecider};
use domain::values::ServiceStatus;
use projections::queries::{self, ServiceSortKey, ServiceView, Viewer};
use projections::uptime;
use projections::Versioned;
use utoipa::OpenApi;
use uuid::Uuid;

use crate::auth::{Caller, Permission};
use crate::bodies::{NewService, ServiceBody, ServiceChanges, ServicePage, UptimeBody};
use crate::commands::{self, Answer};
use crate::extract;
use crate::paging;
use crate::problem::ApiError;
use crate::routing::{self, Routes};
use crate::state::AppState;

pub fn configure(routes: &mut Routes<'_>) {
    routes
        .resource("/v1/services", [routing::post(create), routing::get(list)])
        .resource(
            "/v1/services/{id}",
            [
                routing::get(get),
                routing::patch(change),
                routing::delete(retire),
            ],
        )
        .resource("/v1/services/{id}/uptime", [routing::get(uptime)]);
}

#[derive(OpenApi)]
#[openapi(paths(create, list, get, change, retire, uptime))]
pub struct Doc;

/// Services are shared by every tenant, so only an admin bound to no tenant manages them.
fn service_admin(caller: &Caller) -> Result<&Versioned<domain::api_key::ApiKey>, ApiError> {
    let key = caller.require(Permission::ManageServices)?;
    if let Some(tenant) = caller.tenant() {
        return Err(ApiError::Forbidden(format!(
            "services are shared by every tenant; a key bound to tenant {tenant} may not change them"
        )));
    }
    Ok(key)
}

fn body_with(status: ServiceStatus) -> impl Fn(&Versioned<Service>) -> String + Sync {
    move |service: &Versioned<Service>| {
        serde_json::to_string(&ServiceBody::from(ServiceView {
            service: service.clone(),
            status,
        }))
        .unwrap_or_default()
    }
}

/// Create a service.
#[utoipa::path(
    operation_id = "create_service", post, path = "/v1/services", tag = "services",
    request_body = NewService,
    params(commands::CreateHeaders),
    responses(
        (status = 201, body = ServiceBody, headers(("Location" = String), ("ETag" = String))),
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
    let key = service_admin(&caller)?;
    let new: NewService = extract::json_body(&request, &body)?;
    let id = state.publisher.new_id();
    let command = service::Command::Create(service::Create {
        service_id: id,
        name: new.name,
        description: new.description,
        group: new.group,
        author: key.state.name.clone(),
        at: Utc::now(),
    });
    commands::execute::<ServiceDecider>(
        &state,
        &request,
        &body,
        key,
        id,
        &command,
        Answer {
            status: StatusCode::CREATED,
            location: Some(format!("/v1/services/{id}")),
            render: &body_with(ServiceStatus::Operational),
        },
    )
    .await
}

/// The status the caller sees for service `id` now (the answer of a write shows it; a
/// service's own commands never change it).
async fn current_status(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<ServiceStatus, ApiError> {
    let client = state.store.pool().get().await?;
    Ok(queries::service(&client, id, &caller.viewer())
        .await?
        .map_or(ServiceStatus::Operational, |view| view.status))
}

/// Rename, describe or regroup a service: only the fields present change.
#[utoipa::path(
    operation_id = "change_service", patch, path = "/v1/services/{id}", tag = "services",
    request_body = ServiceChanges,
    params(("id" = Uuid, Path), commands::CommandHeaders),
    responses(
        (status = 200, body = ServiceBody, headers(("ETag" = String))),
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
    let key = service_admin(&caller)?;
    let changes: ServiceChanges = extract::json_body(&request, &body)?;
    let command = service::Command::Change(service::Change {
        name: changes.name,
        description: changes.description,
        group: changes.group,
        author: key.state.name.clone(),
        at: Utc::now(),
    });
    let status = current_status(&state, &caller, *id).await?;
    commands::execute::<ServiceDecider>(
        &state,
        &request,
        &body,
        key,
        *id,
        &command,
        Answer {
            status: StatusCode::OK,
            location: None,
            render: &body_with(status),
        },
    )
    .await
}

/// Retire a service: it leaves the lists; its history stays.
#[utoipa::path(
    operation_id = "retire_service", delete, path = "/v1/services/{id}", tag = "services",
    params(("id" = Uuid, Path), commands::CommandHeaders),
    responses(
        (status = 200, body = ServiceBody, headers(("ETag" = String))),
        crate::problem::documented::RemoveProblems,
    ),
    security(("bearer" = []))
)]
pub async fn retire(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let key = service_admin(&caller)?;
    let command = service::Command::Retire(service::Retire {
        author: key.state.name.clone(),
        at: Utc::now(),
    });
    let status = current_status(&state, &caller, *id).await?;
    commands::execute::<ServiceDecider>(
        &state,
        &request,
        b"",
        key,
        *id,
        &command,
        Answer {
            status: StatusCode::OK,
            location: None,
            render: &body_with(status),
        },
    )
    .await
}

/// The services in use, by group and name, with their derived status.
#[utoipa::path(
    operation_id = "list_services", get, path = "/v1/services", tag = "services",
    params(paging::PageQuery),
    responses(
        (status = 200, body = ServicePage),
        crate::problem::documented::PublicListProblems,
    ),
    security((), ("bearer" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<paging::PageQuery>,
) -> Result<HttpResponse, ApiError> {
    state.limits.allow_read(caller.client_ip)?;
    let limit = paging::page_limit(query.limit)?;
    let after: Option<(String, String, Uuid)> = paging::decode_cursor(query.cursor.as_deref())?;
    let after = after.map(|(group, name, id)| ServiceSortKey { group, name, id });
    let client = state.store.pool().get().await?;
    let page = queries::services_page(&client, &caller.viewer(), after.as_ref(), limit).await?;
    let next_cursor = paging::next_cursor(&page, |last| {
        let key = ServiceSortKey::of(&last.service);
        (key.group, key.name, key.id)
    });
    Ok(HttpResponse::Ok().json(ServicePage {
        items: page.items.into_iter().map(ServiceBody::from).collect(),
        next_cursor,
    }))
}

/// One service, with its derived status (retired ones too, with `retired_at`).
#[utoipa::path(
    operation_id = "get_service", get, path = "/v1/services/{id}", tag = "services",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = ServiceBody, headers(("ETag" = String))),
        crate::problem::documented::PublicGetProblems,
    ),
    security((), ("bearer" = []))
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    state.limits.allow_read(caller.client_ip)?;
    let client = state.store.pool().get().await?;
    let view = queries::service(&client, *id, &caller.viewer())
        .await?
        .ok_or_else(|| ApiError::NotFound("no such service".into()))?;
    Ok(commands::resource(
        StatusCode::OK,
        view.service.version,
        &ServiceBody::from(view),
    ))
}

/// The days of an uptime.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UptimeQuery {
    /// How many UTC days, today last: 1 to 90 (default 90).
    #[param(minimum = 1, maximum = 90)]
    pub days: Option<i64>,
}

/// `days` of an uptime query: 90 when absent, else 1 to 90.
pub fn uptime_days(days: Option<i64>) -> Result<u32, ApiError> {
    let max = i64::from(uptime::MAX_DAYS);
    match days {
        None => Ok(uptime::MAX_DAYS),
        Some(n) if (1..=max).contains(&n) => Ok(n as u32),
        Some(_) => Err(ApiError::invalid(
            "days",
            format!("must be between 1 and {max}"),
        )),
    }
}

/// A service's uptime per UTC day, folded from the history of the incidents and
/// maintenances the caller may see: the share of each day the service was not down (a
/// second of `major_outage` counts as down, of `partial_outage` as 0.3 down; degraded
/// performance and maintenance count as up). Days before the service existed are absent;
/// today counts up to now.
#[utoipa::path(
    operation_id = "get_service_uptime", get, path = "/v1/services/{id}/uptime", tag = "services",
    params(("id" = Uuid, Path), UptimeQuery),
    responses(
        (status = 200, body = UptimeBody),
        crate::problem::documented::PublicGetProblems,
    ),
    security((), ("bearer" = []))
)]
pub async fn uptime(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    query: web::Query<UptimeQuery>,
) -> Result<HttpResponse, ApiError> {
    state.limits.allow_read(caller.client_ip)?;
    let days = uptime_days(query.days)?;
    let viewer = caller.viewer();
    let client = state.store.pool().get().await?;
    let view = queries::service(&client, *id, &viewer)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such service".into()))?;
    drop(client);
    let now = Utc::now();
    // The public's changes are folded once per generation; a key's are its own.
    let changes = if viewer == Viewer::Public {
        let all = crate::status_page::public_changes(&state).await?;
        all.get(&*id).cloned().unwrap_or_default()
    } else {
        let client = state.store.pool().get().await?;
        let since = now - chrono::Duration::days(i64::from(days));
        let mut all = uptime::service_changes(&client, &viewer, since).await?;
        all.remove(&*id).unwrap_or_default()
    };
    let uptime = uptime::uptime(*id, view.service.state.created_at, now, days, &changes);
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "max-age=60"))
        .json(UptimeBody::from(uptime)))
}
