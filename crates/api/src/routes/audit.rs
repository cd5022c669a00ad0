//! `/v1/audit/*`: the history for auditors (the auditor and admin roles, unbound to a
//! tenant, since the history holds every tenant's notices), and the latest signed
//! checkpoint for anyone.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use futures_util::TryStreamExt;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::{Caller, Permission};
use crate::problem::ApiError;
use crate::views::{AuditEvent, AuditEventPage, CheckpointBody, VerificationBody};
use crate::AppState;

const DEFAULT_AUDIT_PAGE: usize = 100;
const MAX_AUDIT_PAGE: usize = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Start after this global position (default 0: from the first event).
    pub after: Option<u64>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Start after this stream version (default 0: from the first event).
    pub after: Option<u64>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Start after this global position (default 0: the whole history).
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

fn audit_limit(limit: Option<i64>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_AUDIT_PAGE),
        Some(n) if (1..=MAX_AUDIT_PAGE as i64).contains(&n) => Ok(n as usize),
        Some(_) => Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_AUDIT_PAGE}"),
        )),
    }
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
    let limit = audit_limit(query.limit)?;
    let after = query.after.unwrap_or(0);
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
    params(("stream_id" = String, Path, description = "e.g. incident-<uuid>"), StreamQuery),
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
    let limit = audit_limit(query.limit)?;
    let after = query.after.unwrap_or(0);
    let events = state
        .store
        .read_stream_sealed(&stream_id, after, limit)
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
    let report = state.store.verify().await?;
    Ok(HttpResponse::Ok().json(VerificationBody::from(report)))
}

/// The history as NDJSON, one CloudEvents 1.0 JSON object per line in global order, up to
/// the head when the export began. Streamed: an error after the first line ends the body
/// early (the last line then lacks its newline or the chunked body its end).
#[utoipa::path(
    operation_id = "export_history", get, path = "/v1/audit/export", tag = "audit",
    params(ExportQuery),
    responses(
        (status = 200, content_type = "application/x-ndjson", body = String,
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
    // Fail with a 503 before the answer starts if the database is down.
    state.store.log_head().await?;
    let chunks = state
        .store
        .export(query.after.unwrap_or(0))
        .inspect_err(|e| tracing::warn!(error = %e, "export ended early"));
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .insert_header((header::CACHE_CONTROL, "no-store"))
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
    let signed = state.store.latest_checkpoint().await?.ok_or_else(|| {
        ApiError::NotFound("no checkpoint has been signed (serve with --checkpoint-key)".into())
    })?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=10"))
        .json(CheckpointBody::from(signed)))
}
