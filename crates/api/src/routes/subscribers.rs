//! `/v1/subscribers`: anyone subscribes an address to notices by email; the address
//! confirms through a link; every email carries a one-click unsubscribe link (RFC 8058).
//! Admins list, read and delete subscribers and read their deliveries; a tenant-bound
//! admin sees its tenant's only.
//!
//! The links answer small HTML pages (a person opens them in a browser), never JSON. No
//! answer, log line or metric tells whether an address is subscribed.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use delivery::email::render::{self, Page};
use delivery::email::{self, LinkToken, SubscriberKey};
use domain::language::Language;
use domain::subscriber::{self, SubscriberDecider, SubscriberState};
use eventstore::Metadata;
use projections::{queries, AlsoWrite, Versioned};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};
use uuid::Uuid;

use crate::auth::{Caller, Permission};
use crate::bodies::{
    EmailDelivery, EmailDeliveryPage, NewSubscriber, SubscriberBody, SubscriberCounts,
    SubscriberPage, SubscriptionAccepted,
};
use crate::commands;
use crate::extract;
use crate::lookups::known_services;
use crate::paging;
use crate::problem::ApiError;
use crate::routing::{self, Routes};
use crate::state::AppState;

pub fn configure(routes: &mut Routes<'_>) {
    routes
        .resource(
            "/v1/subscribers",
            [routing::post(subscribe), routing::get(list)],
        )
        .resource("/v1/subscribers/confirm", [routing::get(confirm)])
        .resource(
            "/v1/subscribers/unsubscribe",
            [routing::get(unsubscribe_page), routing::post(unsubscribe)],
        )
        .resource(
            "/v1/subscribers/{id}",
            [routing::get(get), routing::delete(delete)],
        )
        .resource(
            "/v1/subscribers/{id}/deliveries",
            [routing::get(deliveries)],
        );
}

#[derive(OpenApi)]
#[openapi(
    paths(
        subscribe,
        confirm,
        unsubscribe_page,
        unsubscribe,
        list,
        get,
        delete,
        deliveries
    ),
    components(schemas(SubscriberState))
)]
pub struct Doc;

/// Longest address accepted (RFC 5321's path limit, less its brackets).
const MAX_ADDRESS_CHARS: usize = 254;

fn accepted() -> HttpResponse {
    HttpResponse::Accepted().json(SubscriptionAccepted {
        status: "confirmation_sent",
    })
}

/// Subscribe an address to notices by email.
///
/// Always 202 for a well-formed address, subscribed already or not, and one confirmation
/// email with a link valid for 7 days (at most 3 an hour to one address: past that the
/// answer is the same and nothing is sent). Only confirmed addresses receive notices: the
/// public ones of the services chosen (all when none), and with a tenant-bound key (any
/// role) that tenant's private ones too, in `language` where a notice has it.
#[utoipa::path(
    operation_id = "subscribe", post, path = "/v1/subscribers", tag = "subscribers",
    request_body(content(
        (NewSubscriber = "application/json"),
        (NewSubscriber = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 202, description = "A confirmation is on its way (or the address is subscribed already). A form (the status page's; `service_ids` repeated once per service) gets an HTML page saying so, and for each error below an HTML page saying why, with the same status code", content(
            (SubscriptionAccepted = "application/json"),
            (String = "text/html"),
        )),
        (status = 400, description = "Not an address, an invalid field or a bad parameter", content(
            (crate::problem::Problem = "application/problem+json"),
            (String = "text/html"),
        )),
        (status = 401, description = "Missing, malformed, unknown or revoked key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body neither application/json nor a form", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited; see Retry-After", content(
            (crate::problem::Problem = "application/problem+json"),
            (String = "text/html"),
        )),
        (status = 503, description = "Email is not set up, or the database is unreachable", content(
            (crate::problem::Problem = "application/problem+json"),
            (String = "text/html"),
        )),
    ),
    security((), ("bearer" = []))
)]
pub async fn subscribe(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    if is_form(&request) {
        // The status page's form: the answer is a page for the person who sent it.
        let outcome = match form_subscriber(&body) {
            Ok(asked) => request_subscription(&state, &caller, &request, asked).await,
            Err(e) => Err(e),
        };
        return Ok(crate::status_page::subscription_page(
            &state, &request, outcome,
        ));
    }
    let asked: NewSubscriber = extract::json_body(&request, &body)?;
    request_subscription(&state, &caller, &request, asked).await?;
    Ok(accepted())
}

fn is_form(request: &HttpRequest) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
}

/// The fields of the status page's form: `email`, `language`, and `service_ids` once per
/// service chosen.
fn form_subscriber(body: &[u8]) -> Result<NewSubscriber, ApiError> {
    let mut asked = NewSubscriber {
        email: String::new(),
        service_ids: None,
        language: None,
    };
    for (name, value) in url::form_urlencoded::parse(body) {
        match name.as_ref() {
            "email" => asked.email = value.into_owned(),
            "language" if !value.is_empty() => asked.language = Some(value.into_owned()),
            "service_ids" => {
                let id: Uuid = value.parse().map_err(|_| {
                    ApiError::invalid("service_ids", "each must be a service id (a UUID)")
                })?;
                asked.service_ids.get_or_insert_with(Vec::new).push(id);
            }
            other => {
                return Err(ApiError::invalid(
                    other.to_owned(),
                    "is not a field of a subscription (email, language, service_ids)",
                ))
            }
        }
    }
    Ok(asked)
}

/// Requests the subscription `asked` for: a confirmation on its way, or nothing (an
/// address subscribed already, or past its confirmations for the hour), alike to the
/// caller.
async fn request_subscription(
    state: &AppState,
    caller: &Caller,
    request: &HttpRequest,
    asked: NewSubscriber,
) -> Result<(), ApiError> {
    if state.email.is_none() {
        return Err(ApiError::unavailable(
            "email is not set up on this server (CRIER_SMTP_URL); subscribe another way",
        ));
    }
    state
        .limits
        .allow_subscription(state.limits.client_address(request))?;
    // The address is never quoted back: problems and logs must not carry one.
    let address = asked.email.trim();
    let parsed: Option<email::EmailAddress> = (address.chars().count() <= MAX_ADDRESS_CHARS)
        .then(|| address.parse().ok())
        .flatten();
    let Some(parsed) = parsed else {
        return Err(ApiError::invalid(
            "email",
            format!("must be an email address of at most {MAX_ADDRESS_CHARS} characters"),
        ));
    };
    let language = asked
        .language
        .as_deref()
        .map(|tag| Language::parse("language", tag))
        .transpose()?;
    let service_ids = asked.service_ids.unwrap_or_default();
    known_services(state, "service_ids", service_ids.iter().copied()).await?;
    let tenant = caller.tenant().map(str::to_owned);
    let author = caller
        .key
        .as_ref()
        .map_or_else(|| "anonymous".to_owned(), |k| k.id.to_string());
    let digest = email::address_digest(tenant.as_deref(), parsed.as_ref());
    let existing = {
        let client = state.store.pool().get().await?;
        match email::subscriber_of_digest(&client, &digest).await? {
            Some(id) => {
                let keys = email::keys_of(&client, &[id]).await?;
                let found = queries::subscriber(&client, id).await?;
                found.zip(keys.get(&id).cloned())
            }
            None => None,
        }
    };
    if existing
        .as_ref()
        .is_some_and(|(s, _)| s.state.state != SubscriberState::Pending)
    {
        return Ok(());
    }
    if !state.limits.allow_confirmation(&digest) {
        return Ok(());
    }
    let (id, key, is_new) = match existing {
        Some((subscriber, key)) => (subscriber.id, key, false),
        None => (state.publisher.new_id(), SubscriberKey::generate()?, true),
    };
    let command = subscriber::Command::Request(subscriber::Request {
        subscriber_id: id,
        sealed_address: key.seal(id, parsed.as_ref())?,
        service_ids,
        language: language.map(|l| l.as_str().to_owned()),
        tenant: tenant.clone(),
        author: author.clone(),
        at: Utc::now(),
    });
    let key_bytes = key.as_bytes().to_vec();
    let also = AlsoWrite {
        statement: email::STORE_KEY_SQL,
        params: &[&id, &key_bytes, &digest],
    };
    let written = state
        .publisher
        .execute_once::<SubscriberDecider>(
            id,
            &command,
            None,
            &commands::metadata_by(request, author.clone()),
            None,
            is_new.then_some(&also),
        )
        .await;
    match written {
        Ok(_) => Ok(()),
        Err(e) if e.is_unavailable() => Err(e.into()),
        // A concurrent request for the same address won (its key holds the digest), or
        // the subscription moved on meanwhile: the answer is the same.
        Err(e) => {
            tracing::debug!(error = %tasks::Chain(&e), "a subscription request changed nothing");
            Ok(())
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// The token of the link, as mailed.
    pub token: Option<String>,
}

/// A page answering a link, in `language`.
fn page(status: StatusCode, which: Page, language: &str, action: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'",
        ))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(render::page(which, language, action))
}

/// The subscriber a link names, with its key if its subscription has not ended, and the
/// language its page is in.
async fn resolve(
    state: &AppState,
    token: &LinkToken,
) -> Result<
    (
        Option<Versioned<subscriber::Subscriber>>,
        Option<SubscriberKey>,
        String,
    ),
    ApiError,
> {
    let client = state.store.pool().get().await?;
    let found = queries::subscriber(&client, token.subscriber_id).await?;
    let keys = email::keys_of(&client, &[token.subscriber_id]).await?;
    let key = keys
        .get(&token.subscriber_id)
        .filter(|k| token.signed_by(k))
        .cloned();
    let language = found
        .as_ref()
        .and_then(|s| s.state.language.as_ref())
        .unwrap_or(&state.default_language)
        .as_str()
        .to_owned();
    Ok((found, key, language))
}

/// Confirm a subscription: the link of the confirmation email. Answers an HTML page.
#[utoipa::path(
    operation_id = "confirm_subscription", get, path = "/v1/subscribers/confirm", tag = "subscribers",
    params(TokenQuery),
    responses(
        (status = 200, description = "Confirmed (or confirmed already): a page saying so", content_type = "text/html"),
        (status = 400, description = "Not a confirmation link: a page saying so", content_type = "text/html"),
        (status = 404, description = "A link of no subscription, or of one that ended: a page saying so", content_type = "text/html"),
        (status = 410, description = "The link is more than 7 days old: a page saying so", content_type = "text/html"),
        (status = 503, description = "Database unreachable", content_type = "application/problem+json"),
    )
)]
pub async fn confirm(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<TokenQuery>,
) -> Result<HttpResponse, ApiError> {
    let default = state.default_language.as_str().to_owned();
    let Some(token) = query.token.as_deref().and_then(LinkToken::confirmation) else {
        return Ok(page(StatusCode::BAD_REQUEST, Page::Invalid, &default, ""));
    };
    let (found, key, language) = resolve(&state, &token).await?;
    let (Some(subscriber), Some(_)) = (found, key) else {
        return Ok(page(StatusCode::NOT_FOUND, Page::Invalid, &language, ""));
    };
    match subscriber.state.state {
        SubscriberState::Active => {
            return Ok(page(StatusCode::OK, Page::AlreadyConfirmed, &language, ""))
        }
        SubscriberState::Unsubscribed => {
            return Ok(page(StatusCode::NOT_FOUND, Page::Invalid, &language, ""))
        }
        SubscriberState::Pending => {}
    }
    if token.expired(Utc::now()) {
        return Ok(page(StatusCode::GONE, Page::Expired, &language, ""));
    }
    let command = subscriber::Command::Confirm(subscriber::Confirm { at: Utc::now() });
    state
        .publisher
        .execute::<SubscriberDecider>(
            subscriber.id,
            &command,
            None,
            &commands::metadata_by(&request, "subscriber".into()),
        )
        .await?;
    Ok(page(StatusCode::OK, Page::Confirmed, &language, ""))
}

/// The unsubscribe link opened in a browser: a page with the button that unsubscribes
/// (opening the link changes nothing, so a mail scanner following it cannot unsubscribe).
#[utoipa::path(
    operation_id = "unsubscribe_page", get, path = "/v1/subscribers/unsubscribe", tag = "subscribers",
    params(TokenQuery),
    responses(
        (status = 200, description = "A page with the unsubscribe button (or saying it is done already)", content_type = "text/html"),
        (status = 400, description = "Not an unsubscribe link: a page saying so", content_type = "text/html"),
        (status = 404, description = "A link of no subscription: a page saying so", content_type = "text/html"),
        (status = 503, description = "Database unreachable", content_type = "application/problem+json"),
    )
)]
pub async fn unsubscribe_page(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<TokenQuery>,
) -> Result<HttpResponse, ApiError> {
    unsubscribe_link(&state, &request, &query, false).await
}

/// Unsubscribe at once (RFC 8058 one-click: a mail client POSTs
/// `List-Unsubscribe=One-Click`): the address is erased everywhere. Answers an HTML page.
#[utoipa::path(
    operation_id = "unsubscribe", post, path = "/v1/subscribers/unsubscribe", tag = "subscribers",
    params(TokenQuery),
    responses(
        (status = 200, description = "Unsubscribed (or unsubscribed already): a page saying so", content_type = "text/html"),
        (status = 400, description = "Not an unsubscribe link: a page saying so", content_type = "text/html"),
        (status = 404, description = "A link of no subscription: a page saying so", content_type = "text/html"),
        (status = 503, description = "Database unreachable", content_type = "application/problem+json"),
    )
)]
pub async fn unsubscribe(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<TokenQuery>,
) -> Result<HttpResponse, ApiError> {
    unsubscribe_link(&state, &request, &query, true).await
}

async fn unsubscribe_link(
    state: &AppState,
    request: &HttpRequest,
    query: &TokenQuery,
    now: bool,
) -> Result<HttpResponse, ApiError> {
    let default = state.default_language.as_str().to_owned();
    let Some(token) = query.token.as_deref().and_then(LinkToken::unsubscribe) else {
        return Ok(page(StatusCode::BAD_REQUEST, Page::Invalid, &default, ""));
    };
    let (found, key, language) = resolve(state, &token).await?;
    let Some(subscriber) = found else {
        return Ok(page(StatusCode::NOT_FOUND, Page::Invalid, &language, ""));
    };
    if subscriber.state.state == SubscriberState::Unsubscribed {
        return Ok(page(StatusCode::OK, Page::Unsubscribed, &language, ""));
    }
    if key.is_none() {
        return Ok(page(StatusCode::NOT_FOUND, Page::Invalid, &language, ""));
    }
    if !now {
        let action = format!(
            "/v1/subscribers/unsubscribe?token={}",
            query.token.as_deref().unwrap_or_default().trim()
        );
        return Ok(page(
            StatusCode::OK,
            Page::ConfirmUnsubscribe,
            &language,
            &action,
        ));
    }
    erase(
        state,
        subscriber.id,
        subscriber::ErasureReason::Unsubscribed,
        &commands::metadata_by(request, "subscriber".into()),
    )
    .await?;
    Ok(page(StatusCode::OK, Page::Unsubscribed, &language, ""))
}

/// Ends a subscription and destroys its key, in one transaction.
async fn erase(
    state: &AppState,
    id: Uuid,
    reason: subscriber::ErasureReason,
    metadata: &Metadata,
) -> Result<Versioned<subscriber::Subscriber>, ApiError> {
    let written = email::erase(&state.publisher, id, reason, metadata).await?;
    match written {
        projections::Outcome::Written(written) => Ok(written.resource),
        projections::Outcome::Replayed(_) => Err(ApiError::Conflict(
            "the subscription changed meanwhile; read it again".into(),
        )),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only subscribers in this state.
    pub state: Option<SubscriberState>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// List email subscribers, newest first, with the counts of every state.
#[utoipa::path(
    operation_id = "list_subscribers", get, path = "/v1/subscribers", tag = "subscribers",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of subscribers", body = SubscriberPage),
        crate::problem::documented::AdminListProblems,
    ),
    security(("bearer" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::ManageSubscribers)?;
    let limit = paging::page_limit(query.limit)?;
    let after: Option<(chrono::DateTime<Utc>, Uuid)> =
        paging::decode_cursor(query.cursor.as_deref())?;
    let client = state.store.pool().get().await?;
    let page =
        queries::subscribers_page(&client, caller.tenant(), query.state, after, limit).await?;
    let next_cursor = paging::next_cursor(&page, |last| (last.state.created_at, last.id));
    let ids: Vec<Uuid> = page.items.iter().map(|s| s.id).collect();
    let keys = email::keys_of(&client, &ids).await?;
    let mut counts = SubscriberCounts::default();
    for (status, count) in queries::subscriber_counts(&client, caller.tenant()).await? {
        match status.as_str() {
            "pending" => counts.pending = count,
            "active" => counts.active = count,
            _ => counts.unsubscribed += count,
        }
    }
    Ok(HttpResponse::Ok().json(SubscriberPage {
        items: page
            .items
            .into_iter()
            .map(|s| {
                let key = keys.get(&s.id);
                SubscriberBody::of(s, key)
            })
            .collect(),
        next_cursor,
        counts,
    }))
}

async fn visible_subscriber(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<(Versioned<subscriber::Subscriber>, Option<SubscriberKey>), ApiError> {
    let client = state.store.pool().get().await?;
    let found = queries::subscriber(&client, id)
        .await?
        .filter(|s| caller.manages(s.state.tenant.as_deref()))
        .ok_or_else(|| ApiError::NotFound("no such subscriber".into()))?;
    let key = email::keys_of(&client, &[id]).await?.remove(&id);
    Ok((found, key))
}

/// One subscriber.
#[utoipa::path(
    operation_id = "get_subscriber", get, path = "/v1/subscribers/{id}", tag = "subscribers",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The subscriber", body = SubscriberBody, headers(("ETag" = String))),
        crate::problem::documented::AdminGetProblems,
    ),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::ManageSubscribers)?;
    let (found, key) = visible_subscriber(&state, &caller, *id).await?;
    let version = found.version;
    Ok(commands::resource(
        StatusCode::OK,
        version,
        &SubscriberBody::of(found, key.as_ref()),
    ))
}

/// Delete a subscriber: nothing more is sent to it, and its address is erased everywhere
/// (the history keeps it only sealed under a key that is destroyed now).
#[utoipa::path(
    operation_id = "delete_subscriber", delete, path = "/v1/subscribers/{id}", tag = "subscribers",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "Deleted (or ended already); `email` is null from now on", body = SubscriberBody, headers(("ETag" = String))),
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
    let key = caller.require(Permission::ManageSubscribers)?;
    state.limits.allow_write(key.id)?;
    visible_subscriber(&state, &caller, *id).await?;
    let erased = erase(
        &state,
        *id,
        subscriber::ErasureReason::Deleted,
        &commands::metadata(&request, key),
    )
    .await?;
    let version = erased.version;
    Ok(commands::resource(
        StatusCode::OK,
        version,
        &SubscriberBody::of(erased, None),
    ))
}

/// A subscriber's emails, newest first, each with every attempt made.
#[utoipa::path(
    operation_id = "list_subscriber_deliveries", get, path = "/v1/subscribers/{id}/deliveries", tag = "subscribers",
    params(("id" = Uuid, Path), paging::PageQuery),
    responses(
        (status = 200, description = "One page of deliveries", body = EmailDeliveryPage),
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
    caller.require(Permission::ManageSubscribers)?;
    let limit = paging::page_limit(query.limit)?;
    let before: Option<u64> = paging::decode_cursor(query.cursor.as_deref())?;
    visible_subscriber(&state, &caller, *id).await?;
    let client = state.store.pool().get().await?;
    let page = delivery::email::log::deliveries_page(&client, *id, before, limit).await?;
    let next_cursor = paging::next_cursor(&page, |last| last.position);
    Ok(HttpResponse::Ok().json(EmailDeliveryPage {
        items: page.items.into_iter().map(EmailDelivery::from).collect(),
        next_cursor,
    }))
}
