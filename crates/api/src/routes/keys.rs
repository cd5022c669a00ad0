//! `/v1/api-keys`: admins create, list and revoke keys. A tenant-bound admin manages its own
//! tenant's keys only.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use domain::api_key::{self, ApiKeyDecider};
use projections::access::{new_key, INSERT_VERIFIER_SQL};
use projections::queries;
use projections::AlsoWrite;
use utoipa::OpenApi;
use uuid::Uuid;

use crate::auth::{Caller, Permission};
use crate::bodies::{ApiKeyBody, ApiKeyPage, CreatedApiKey, NewApiKey};
use crate::commands::{self, Answer};
use crate::extract;
use crate::paging;
use crate::problem::ApiError;
use crate::routing::{self, Routes};
use crate::state::AppState;

pub fn configure(routes: &mut Routes<'_>) {
    routes
        .resource("/v1/api-keys", [routing::post(create), routing::get(list)])
        .resource(
            "/v1/api-keys/{id}",
            [routing::get(get), routing::delete(revoke)],
        );
}

#[derive(OpenApi)]
#[openapi(paths(create, list, get, revoke))]
pub struct Doc;

/// Create an API key; its secret (`key`) is in this answer only.
#[utoipa::path(
    operation_id = "create_api_key", post, path = "/v1/api-keys", tag = "api-keys",
    request_body = NewApiKey,
    params(commands::CreateHeaders),
    responses(
        (status = 201, description = "Created; the only answer that shows the secret", body = CreatedApiKey,
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
    let key = caller.require(Permission::ManageKeys)?;
    let asked: NewApiKey = extract::json_body(&request, &body)?;
    let tenant = match (caller.tenant(), asked.tenant) {
        (None, tenant) => tenant,
        (Some(own), None) => Some(own.to_owned()),
        (Some(own), Some(asked)) if asked.trim().eq_ignore_ascii_case(own) => Some(own.to_owned()),
        (Some(own), Some(_)) => {
            return Err(ApiError::Forbidden(format!(
                "a key bound to tenant {own} creates keys of that tenant only"
            )))
        }
    };
    let made = new_key(
        &asked.name,
        asked.role,
        tenant.as_deref(),
        &key.id.to_string(),
    )?;
    let (id, secret) = (made.id, made.secret.clone());
    let verifier = AlsoWrite {
        statement: INSERT_VERIFIER_SQL,
        params: &[&made.id, &made.verifier],
    };
    let render = |created: &projections::Versioned<api_key::ApiKey>| {
        serde_json::to_string(&CreatedApiKey {
            id: created.id,
            name: created.state.name.clone(),
            role: created.state.role,
            tenant: created.state.tenant.clone(),
            key: secret.clone(),
        })
        .unwrap_or_default()
    };
    commands::execute_also::<ApiKeyDecider>(
        &state,
        &request,
        &body,
        key,
        id,
        &made.command,
        Answer {
            status: StatusCode::CREATED,
            location: Some(format!("/v1/api-keys/{id}")),
            render: &render,
        },
        Some(&verifier),
    )
    .await
}

/// What a tenant-bound caller is shown as the creator of its keys: a key of its own tenant by
/// id; anything else (an operator's key, `cli`, `bootstrap`) as `operator`, since a tenant
/// never learns the ids of keys outside it.
async fn creators_shown(
    state: &AppState,
    caller: &Caller,
    keys: &mut [ApiKeyBody],
) -> Result<(), ApiError> {
    let Some(own) = caller.tenant() else {
        return Ok(());
    };
    let ids: Vec<Uuid> = keys
        .iter()
        .filter_map(|k| Uuid::parse_str(&k.created_by).ok())
        .collect();
    let client = state.store.pool().get().await?;
    let tenants = queries::key_tenants(&client, &ids).await?;
    for key in keys {
        let same_tenant = Uuid::parse_str(&key.created_by)
            .ok()
            .and_then(|id| tenants.get(&id))
            .is_some_and(|tenant| tenant.as_deref() == Some(own));
        if !same_tenant {
            key.created_by = OPERATOR.to_owned();
        }
    }
    Ok(())
}

/// The creator a tenant-bound caller sees for a key made outside its tenant.
const OPERATOR: &str = "operator";

/// List API keys by name (never their secrets).
#[utoipa::path(
    operation_id = "list_api_keys", get, path = "/v1/api-keys", tag = "api-keys",
    params(paging::PageQuery),
    responses(
        (status = 200, body = ApiKeyPage),
        crate::problem::documented::AdminListProblems,
    ),
    security(("bearer" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<paging::PageQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::ManageKeys)?;
    let limit = paging::page_limit(query.limit)?;
    let after: Option<(String, Uuid)> = paging::decode_cursor(query.cursor.as_deref())?;
    let client = state.store.pool().get().await?;
    let page = queries::api_keys_page(
        &client,
        caller.tenant(),
        after.as_ref().map(|(name, id)| (name.as_str(), *id)),
        limit,
    )
    .await?;
    let next_cursor = paging::next_cursor(&page, |last| (last.state.name.clone(), last.id));
    let mut items: Vec<ApiKeyBody> = page.items.into_iter().map(ApiKeyBody::from).collect();
    creators_shown(&state, &caller, &mut items).await?;
    Ok(HttpResponse::Ok().json(ApiKeyPage { items, next_cursor }))
}

async fn visible_key(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<projections::Versioned<api_key::ApiKey>, ApiError> {
    let client = state.store.pool().get().await?;
    queries::api_key(&client, id)
        .await?
        .filter(|key| caller.manages(key.state.tenant.as_deref()))
        .ok_or_else(|| ApiError::NotFound("no such API key".into()))
}

/// One API key (never its secret).
#[utoipa::path(
    operation_id = "get_api_key", get, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = ApiKeyBody, headers(("ETag" = String))),
        crate::problem::documented::AdminGetProblems,
    ),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::ManageKeys)?;
    let key = visible_key(&state, &caller, *id).await?;
    let version = key.version;
    let mut body = [ApiKeyBody::from(key)];
    creators_shown(&state, &caller, &mut body).await?;
    Ok(commands::resource(StatusCode::OK, version, &body[0]))
}

/// Revoke an API key: every process refuses it from the next request on, and the webhooks it
/// registered are disabled.
#[utoipa::path(
    operation_id = "revoke_api_key", delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "Revoked (or already revoked)", body = ApiKeyBody, headers(("ETag" = String))),
        crate::problem::documented::RemoveProblems,
    ),
    security(("bearer" = []))
)]
pub async fn revoke(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let key = caller.require(Permission::ManageKeys)?;
    let target = visible_key(&state, &caller, *id).await?;
    let mut shown = [ApiKeyBody::from(target)];
    creators_shown(&state, &caller, &mut shown).await?;
    let created_by = shown[0].created_by.clone();
    let command = api_key::Command::Revoke(api_key::Revoke {
        author: key.id.to_string(),
        at: Utc::now(),
    });
    let render = |revoked: &projections::Versioned<api_key::ApiKey>| {
        let mut body = ApiKeyBody::from(revoked.clone());
        body.created_by = created_by.clone();
        serde_json::to_string(&body).unwrap_or_default()
    };
    let answer = commands::execute::<ApiKeyDecider>(
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
    .await?;
    // Its webhooks receive nothing after the revocation (the outbox ends them there); this
    // says so in their history, and a retry of the revocation finishes what a failure left.
    delivery::webhook::disable_registered_by(
        &state.publisher,
        *id,
        &commands::metadata(&request, key),
    )
    .await?;
    // Likewise the email subscriptions it made: ended by the outbox at the revocation,
    // erased here.
    delivery::email::erase_registered_by(&state.publisher, *id, &commands::metadata(&request, key))
        .await?;
    Ok(answer)
}
