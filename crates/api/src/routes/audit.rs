//! `/v1/audit/*`: the history for auditors (the auditor and admin roles, unbound to a
//! tenant, since the history holds every tenant's notices), and the latest signed
//! checkpoint for anyone.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use futures_util::TryStreamExt;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use crate::auth::{Caller, Permission};
use crate::bodies::{AuditEvent, AuditEventPage, CheckpointBody, VerificationBody};
use crate::extract;
use crate::paging;
use crate::problem::ApiError;
use crate::routing::{self, Routes};
use crate::state::AppState;

pub fn configure(routes: &mut Routes<'_>) {
    routes
        .resource("/v1/audit/events", [routing::get(events)])
        .resource(
            "/v1/audit/streams/{stream_id}/events",
            [routing::get(stream_events)],
        )
        .resource("/v1/audit/verify", [routing::get(verify)])
        .resource("/v1/audit/export", [routing::get(export)])
        .resource("/v1/audit/checkpoint", [routing::get(checkpoint)]);
}

#[derive(OpenApi)]
#[openapi(paths(events, stream_events, verify, export, checkpoint))]
pub struct Doc;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Start after this global position (default 0: from the first event).
    #[param(maximum = 9_223_372_036_854_775_807_i64)]
    pub after: Option<u64>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Start after this stream version (default 0: from the first event).
    #[param(maximum = 9_223_372_036_854_775_807_i64)]
    pub after: Option<u64>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Start after this global position (default 0: the whole history).
    #[param(maximum = 9_223_372_036_854_775_807_i64)]
    pub after: Option<u64>,
}

/// The caller, if it may read every tenant's history.
fn auditor(caller: &Caller) -> Result<(), ApiError> {
    caller.require(Permission::Audit)?;
    match caller.tenant() {
        None => Ok(()),
        Some(tenant) => Err(ApiError::Forbidden(format!(
            "the history holds every tenant's notices; a key bound to tenant {tenant} may not read it"
        ))),
    }
}

/// A position or version from the query (0 when absent).
fn after_param(after: Option<u64>) -> Result<u64, ApiError> {
    Ok(extract::position_param("after", after)?.unwrap_or(0))
}

/// A stream id as the store accepts them: 1 to 200 characters, no control characters.
fn stream_param(stream_id: &str) -> Result<&str, ApiError> {
    let length = stream_id.chars().count();
    if !(1..=200).contains(&length) || stream_id.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "stream_id",
            "must be 1 to 200 characters without control characters",
        ));
    }
    Ok(stream_id)
}

/// A turn to read the whole history, or 429 while this process runs enough of them.
fn whole_history_turn(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    state
        .whole_history_reads
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::RateLimited {
            retry_after: std::time::Duration::from_secs(5),
        })
}

/// The global log in order: every event of every tenant with its position and links.
#[utoipa::path(
    operation_id = "list_audit_events", get, path = "/v1/audit/events", tag = "audit",
    params(LogQuery),
    responses(
        (status = 200, body = AuditEventPage),
        crate::problem::documented::AdminListProblems,
    ),
    security(("bearer" = []))
)]
pub async fn events(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, ApiError> {
    auditor(&caller)?;
    let limit = paging::page_limit(query.limit)?;
    let after = after_param(query.after)?;
    let events = state.store.read_log(after, limit).await?;
    let next_after = events.last().map_or(after, |e| e.position);
    Ok(HttpResponse::Ok().json(AuditEventPage {
        events: events.into_iter().map(AuditEvent::from).collect(),
        next_after,
    }))
}

/// One stream's sealed events, in stream order (`next_after` is a stream version).
#[utoipa::path(
    operation_id = "list_audit_stream_events", get, path = "/v1/audit/streams/{stream_id}/events",
    tag = "audit",
    params(("stream_id" = String, Path, description = "e.g. incident-<uuid>",
        min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"), StreamQuery),
    responses(
        (status = 200, body = AuditEventPage),
        crate::problem::documented::AdminListProblems,
    ),
    security(("bearer" = []))
)]
pub async fn stream_events(
    state: web::Data<AppState>,
    caller: Caller,
    stream_id: web::Path<String>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    auditor(&caller)?;
    let limit = paging::page_limit(query.limit)?;
    let after = after_param(query.after)?;
    let stream_id = stream_param(&stream_id)?;
    let events = state
        .store
        .read_stream_sealed(stream_id, after, limit)
        .await?;
    let next_after = events.last().map_or(after, |e| e.event.stream_version);
    Ok(HttpResponse::Ok().json(AuditEventPage {
        events: events.into_iter().map(AuditEvent::from).collect(),
        next_after,
    }))
}

/// Recompute the hash chain from the stored bytes and report the first bad position.
/// Reads the whole history: seconds per million events.
#[utoipa::path(
    operation_id = "verify_chain", get, path = "/v1/audit/verify", tag = "audit",
    responses(
        (status = 200, description = "The verification, whether or not the chain holds", body = VerificationBody),
        crate::problem::documented::AdminListProblems,
    ),
    security(("bearer" = []))
)]
pub async fn verify(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    auditor(&caller)?;
    let _turn = whole_history_turn(&state)?;
    let report = state.store.verify().await?;
    Ok(HttpResponse::Ok().json(VerificationBody::from(report)))
}

/// The history as NDJSON, one CloudEvents 1.0 JSON object per line in global order, up to
/// the head when the export began (its position is in `Crier-Export-Head`). Streamed: an
/// error after the answer started aborts it (the chunked body has no end), and a reader
/// can always check that the last line is at that head.
#[utoipa::path(
    operation_id = "export_history", get, path = "/v1/audit/export", tag = "audit",
    params(ExportQuery),
    responses(
        (status = 200, content_type = "application/x-ndjson", body = String,
            headers(("Crier-Export-Head" = u64, description = "The last position the export holds")),
            description = "One CloudEvent per line: `id` the event id, `type` its type, `subject` its stream, `time` when stored, extensions `position`, `streamversion`, `schemaversion`, `actor`, `requestid`, `correlationid`, `causationid`, `prevhash`, `hash`; `data` the payload"),
        crate::problem::documented::AdminListProblems,
    ),
    security(("bearer" = []))
)]
pub async fn export(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    auditor(&caller)?;
    let after = after_param(query.after)?;
    let turn = whole_history_turn(&state)?;
    // Read before the answer starts: a database that is down is a 503, not a cut body.
    let head = state
        .store
        .log_head()
        .await?
        .map_or(0, |(position, _)| position);
    let chunks = state
        .store
        .export(
            after,
            head.max(after),
            &crate::audit_stream_url_prefix(&state.page.url),
        )
        .inspect_err(|e| tracing::warn!(error = %tasks::Chain(e), "export ended early"))
        // The turn is given back when the answer ends (or its reader goes away).
        .map_ok(move |chunk| {
            let _ = &turn;
            chunk
        });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("Crier-Export-Head", head.to_string()))
        .streaming(chunks))
}

/// The latest signed checkpoint of the chain head. Public, so that anyone can keep one and
/// later prove that the history still extends it.
#[utoipa::path(
    operation_id = "latest_checkpoint", get, path = "/v1/audit/checkpoint", tag = "audit",
    responses(
        (status = 200, body = CheckpointBody),
        crate::problem::documented::PublicGetProblems,
    ),
    security((), ("bearer" = []))
)]
pub async fn checkpoint(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    state.limits.allow_read(caller.client_ip)?;
    let signed = state
        .store
        .latest_checkpoint(state.checkpoint_key.as_ref())
        .await?
        .ok_or_else(|| {
            ApiError::NotFound("no checkpoint has been signed (serve with --checkpoint-key)".into())
        })?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=10"))
        .json(CheckpointBody::from(signed)))
}
