//! Running a command from a request, and answering it: the write rate limit, `If-Match`,
//! `Idempotency-Key` (recorded in the write's own transaction) and the answer's `ETag` and
//! `Location`, around the one write path, [`projections::Publisher`].

use std::sync::Mutex;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use domain::api_key::ApiKey;
use eventstore::Metadata;
use projections::idempotency::{IdempotentRequest, StoredAnswer};
use projections::{AlsoWrite, Kind, Once, Outcome, Versioned, Written};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::extract::{etag, idempotency_key, if_match};
use crate::observe::RequestId;
use crate::problem::ApiError;
use crate::state::AppState;

/// The header that marks a replayed answer.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// SHA-256 of the method, the path and the body (canonical JSON, so that spacing and key
/// order do not make the same request look different).
fn request_sha256(request: &HttpRequest, body: &[u8]) -> String {
    let canonical = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json_canonicalizer::to_vec(&v).ok())
        .unwrap_or_else(|| body.to_vec());
    let mut hasher = Sha256::new();
    hasher.update(request.method().as_str().as_bytes());
    hasher.update([0]);
    hasher.update(request.path().as_bytes());
    hasher.update([0]);
    hasher.update(&canonical);
    hex::encode(hasher.finalize())
}

/// A resource as JSON, with its `ETag`.
pub fn resource<T: Serialize>(status: StatusCode, version: u64, body: &T) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::ETAG, etag(version)))
        .json(body)
}

/// The metadata of the events a request causes: who, and which request.
pub fn metadata(request: &HttpRequest, key: &Versioned<ApiKey>) -> Metadata {
    metadata_by(request, key.id.to_string())
}

/// The metadata of a write by `actor` (a key id, or who acts without one: `anonymous`,
/// `subscriber`), with the request's id.
pub fn metadata_by(request: &HttpRequest, actor: String) -> Metadata {
    let extensions = request.extensions();
    let request_id = extensions.get::<RequestId>().map(RequestId::as_str);
    Metadata {
        actor,
        correlation_id: request_id.and_then(|id| Uuid::parse_str(id).ok()),
        request_id: request_id.map(str::to_owned),
        causation_id: None,
    }
}

/// How a write is answered when it succeeds.
pub struct Answer<'a, R> {
    pub status: StatusCode,
    /// `Location` of the resource, for 201 answers.
    pub location: Option<String>,
    /// The body for the resource as written.
    pub render: &'a (dyn Fn(&Versioned<R>) -> String + Sync),
}

/// Runs `command` on resource `id` for `key`: rate limit, `If-Match`, `Idempotency-Key`
/// (recorded with the write), and the answer with `ETag` (and `Location`).
pub async fn execute<K: Kind>(
    state: &AppState,
    request: &HttpRequest,
    body: &[u8],
    key: &Versioned<ApiKey>,
    id: Uuid,
    command: &K::Command,
    answer: Answer<'_, K::Resource>,
) -> Result<HttpResponse, ApiError> {
    execute_also::<K>(state, request, body, key, id, command, answer, None).await
}

/// [`execute`], with `also` written in the transaction of the command's events.
#[allow(clippy::too_many_arguments)]
pub async fn execute_also<K: Kind>(
    state: &AppState,
    request: &HttpRequest,
    body: &[u8],
    key: &Versioned<ApiKey>,
    id: Uuid,
    command: &K::Command,
    answer: Answer<'_, K::Resource>,
    also: Option<&AlsoWrite<'_>>,
) -> Result<HttpResponse, ApiError> {
    state.limits.allow_write(key.id)?;
    let if_match = if_match(request)?;
    let idempotent = idempotency_key(request)?.map(|idempotency_key| IdempotentRequest {
        api_key_id: key.id,
        key: idempotency_key,
        request_sha256: request_sha256(request, body),
    });
    let store_answer = |written: &Written<K::Resource>| StoredAnswer {
        status: answer.status.as_u16(),
        location: answer.location.clone(),
        etag: Some(etag(written.resource.version)),
        body: (answer.render)(&written.resource),
    };
    // The answer recorded by the attempt that committed, so that it is rendered once.
    let recorded: Mutex<Option<StoredAnswer>> = Mutex::new(None);
    let record = |written: &Written<K::Resource>| {
        let stored = store_answer(written);
        *recorded.lock().unwrap_or_else(|e| e.into_inner()) = Some(stored.clone());
        stored
    };
    let once = idempotent.as_ref().map(|request| Once {
        request,
        answer: &record,
    });
    let metadata = metadata(request, key);
    let outcome = state
        .publisher
        .execute_once::<K>(id, command, if_match, &metadata, once, also)
        .await?;
    let (stored, replayed) = match outcome {
        Outcome::Written(written) => {
            // Documents rendered before this write are stale for this process from now on.
            state
                .writes
                .fetch_add(1, std::sync::atomic::Ordering::Release);
            let recorded = recorded.into_inner().unwrap_or_else(|e| e.into_inner());
            (recorded.unwrap_or_else(|| store_answer(&written)), false)
        }
        Outcome::Replayed(stored) => (stored, true),
    };
    Ok(replay(stored, replayed))
}

fn replay(stored: StoredAnswer, replayed: bool) -> HttpResponse {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    response.content_type("application/json");
    if let Some(location) = stored.location {
        response.insert_header((header::LOCATION, location));
    }
    if let Some(etag) = stored.etag {
        response.insert_header((header::ETAG, etag));
    }
    if replayed {
        response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    response.body(stored.body)
}

/// The headers of a command on an existing resource, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read by utoipa only; handlers read the headers with `if_match` and
                    // `idempotency_key`.
pub struct CommandHeaders {
    /// The ETag last seen; 412 if the resource changed since.
    #[param(
        rename = "If-Match",
        nullable = false,
        pattern = r#"^("[0-9]{1,18}"|[0-9]{1,18}|\*)$"#
    )]
    pub if_match: Option<String>,
    /// Retry safely: the same key and body get the first answer.
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        pattern = "^[!-~]{1,255}$"
    )]
    pub idempotency_key: Option<String>,
}

/// The header of a request that creates a resource, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read by utoipa only.
pub struct CreateHeaders {
    /// Retry safely: the same key and body get the first answer.
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        pattern = "^[!-~]{1,255}$"
    )]
    pub idempotency_key: Option<String>,
}
