//! `/v1/webhooks`: admins register, list and delete webhooks and read their deliveries. A
//! tenant-bound admin's webhooks also receive its tenant's private notices, and it manages
//! its own tenant's webhooks only.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use domain::webhook::{self, WebhookDecider};
use projections::{queries, AlsoWrite, Versioned};
use utoipa::OpenApi;
use uuid::Uuid;

use crate::auth::{Caller, Permission};
use crate::bodies::{CreatedWebhook, Delivery, DeliveryPage, NewWebhook, WebhookBody, WebhookPage};
use crate::commands::{self, Answer};
use crate::extract;
use crate::lookups::known_services;
use crate::paging;
use crate::problem::ApiError;
use crate::routing::{self, Routes};
use crate::state::AppState;
use delivery::new_secret;

pub fn configure(routes: &mut Routes<'_>) {
    routes
        .resource("/v1/webhooks", [routing::post(create), routing::get(list)])
        .resource(
            "/v1/webhooks/{id}",
            [routing::get(get), routing::delete(delete)],
        )
        .resource("/v1/webhooks/{id}/deliveries", [routing::get(deliveries)]);
}

#[derive(OpenApi)]
#[openapi(paths(create, list, get, delete, deliveries))]
pub struct Doc;

/// Register a webhook; its signing secret is in this answer only.
///
/// Every notice after the registration that the webhook takes (its `event_types` and
/// `service_ids`; public notices, and the registering key's tenant's private ones) is
/// POSTed to `url` as a CloudEvent, signed per Standard Webhooks, at least once, in order
/// per incident. The URL must not reach a loopback, private or link-local address unless
/// the server runs with `CRIER_WEBHOOK_ALLOW_PRIVATE=true`.
#[utoipa::path(
    operation_id = "create_webhook", post, path = "/v1/webhooks", tag = "webhooks",
    request_body = NewWebhook,
    params(commands::CreateHeaders),
    responses(
        (status = 201, description = "Registered; the only answer that shows the secret", body = CreatedWebhook,
            headers(("Location" = String), ("ETag" = String))),
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
    let key = caller.require(Permission::ManageWebhooks)?;
    let asked: NewWebhook = extract::json_body(&request, &body)?;
    let url = webhook::endpoint_url(&asked.url)?;
    let parsed = url::Url::parse(&url).map_err(|e| ApiError::invalid("url", e.to_string()))?;
    state
        .webhooks
        .policy
        .check_endpoint(&parsed)
        .await
        .map_err(|why| ApiError::invalid("url", why))?;
    let service_ids = asked.service_ids.unwrap_or_default();
    known_services(&state, "service_ids", service_ids.iter().copied()).await?;
    let id = state.publisher.new_id();
    let secret = new_secret()?;
    let command = webhook::Command::Register(webhook::Register {
        webhook_id: id,
        url,
        event_types: asked.event_types.unwrap_or_default(),
        service_ids,
        tenant: caller.tenant().map(str::to_owned),
        language: asked.language,
        format: asked.format,
        author: key.id.to_string(),
        at: Utc::now(),
    });
    let render = |created: &Versioned<webhook::Webhook>| {
        serde_json::to_string(&CreatedWebhook {
            webhook: WebhookBody::from(created.clone()),
            secret: secret.clone(),
        })
        .unwrap_or_default()
    };
    let also = AlsoWrite {
        statement: delivery::webhook::STORE_SECRET_SQL,
        params: &[&id, &secret],
    };
    commands::execute_also::<WebhookDecider>(
        &state,
        &request,
        &body,
        key,
        id,
        &command,
        Answer {
            status: StatusCode::CREATED,
            location: Some(format!("/v1/webhooks/{id}")),
            render: &render,
        },
        Some(&also),
    )
    .await
}

/// List webhooks, newest first (never their secrets).
#[utoipa::path(
    operation_id = "list_webhooks", get, path = "/v1/webhooks", tag = "webhooks",
    params(paging::PageQuery),
    responses(
        (status = 200, description = "One page of webhooks", body = WebhookPage),
        crate::problem::documented::AdminListProblems,
    ),
    security(("bearer" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<paging::PageQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::ManageWebhooks)?;
    let limit = paging::page_limit(query.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = paging::decode_cursor(query.cursor.as_deref())?;
    let client = state.store.pool().get().await?;
    let page = queries::webhooks_page(&client, caller.tenant(), after, limit).await?;
    let next_cursor = paging::next_cursor(&page, |last| (last.state.created_at, last.id));
    Ok(HttpResponse::Ok().json(WebhookPage {
        items: page.items.into_iter().map(WebhookBody::from).collect(),
        next_cursor,
    }))
}

async fn visible_webhook(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Versioned<webhook::Webhook>, ApiError> {
    let client = state.store.pool().get().await?;
    queries::webhook(&client, id)
        .await?
        .filter(|w| caller.manages(w.state.tenant.as_deref()))
        .ok_or_else(|| ApiError::NotFound("no such webhook".into()))
}

/// One webhook (never its secret).
#[utoipa::path(
    operation_id = "get_webhook", get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The webhook", body = WebhookBody, headers(("ETag" = String))),
        crate::problem::documented::AdminGetProblems,
    ),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::ManageWebhooks)?;
    let found = visible_webhook(&state, &caller, *id).await?;
    Ok(commands::resource(
        StatusCode::OK,
        found.version,
        &WebhookBody::from(found),
    ))
}

/// Delete a webhook: nothing more is sent to it, retries included.
#[utoipa::path(
    operation_id = "delete_webhook", delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "Deleted (or already deleted)", body = WebhookBody, headers(("ETag" = String))),
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
    let key = caller.require(Permission::ManageWebhooks)?;
    visible_webhook(&state, &caller, *id).await?;
    let command = webhook::Command::Delete(webhook::Delete {
        author: key.id.to_string(),
        at: Utc::now(),
    });
    let render = |deleted: &Versioned<webhook::Webhook>| {
        serde_json::to_string(&WebhookBody::from(deleted.clone())).unwrap_or_default()
    };
    commands::execute::<WebhookDecider>(
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

/// A webhook's deliveries, newest first, each with every attempt made.
#[utoipa::path(
    operation_id = "list_webhook_deliveries", get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = Uuid, Path), paging::PageQuery),
    responses(
        (status = 200, description = "One page of deliveries", body = DeliveryPage),
        crate::problem::documented::AdminGetProblems,
    ),
    security(("bearer" = []))
)]
pub async fn deliveries(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    query: web::Query<paging::PageQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::ManageWebhooks)?;
    let limit = paging::page_limit(query.limit)?;
    let before: Option<u64> = paging::decode_cursor(query.cursor.as_deref())?;
    visible_webhook(&state, &caller, *id).await?;
    let client = state.store.pool().get().await?;
    let page = delivery::log::deliveries_page(&client, *id, before, limit).await?;
    let next_cursor = paging::next_cursor(&page, |last| last.position);
    Ok(HttpResponse::Ok().json(DeliveryPage {
        items: page.items.into_iter().map(Delivery::from).collect(),
        next_cursor,
    }))
}
