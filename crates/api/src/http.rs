//! What every handler shares: reading bodies and headers, cursors, and running a command
//! with `If-Match`, `Idempotency-Key`, rate limits and the answer's headers.

use std::sync::Mutex;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use domain::api_key::ApiKey;
use eventstore::Metadata;
use projections::idempotency::{IdempotentRequest, StoredAnswer};
use projections::queries::Page;
use projections::{AlsoWrite, Kind, Once, Outcome, Versioned, Written};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::observe::RequestId;
use crate::problem::ApiError;
use crate::AppState;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

/// The header that marks a replayed answer.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// A JSON request body: `application/json` (or `+json`), well-formed, of the right shape.
/// Field errors name the path of the offending field.
pub fn json_body<T: DeserializeOwned>(request: &HttpRequest, body: &[u8]) -> Result<T, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" && !essence.ends_with("+json") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body must be application/json, not {}",
            if content_type.is_empty() {
                "absent"
            } else {
                content_type
            }
        )));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::BadRequest(format!("malformed JSON: {inner}"))
        } else {
            let message = inner.to_string();
            let mut field = if path == "." { String::new() } else { path };
            // serde names a missing field in its message, not in the path.
            if let Some(missing) = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                field = if field.is_empty() {
                    missing.to_owned()
                } else {
                    format!("{field}.{missing}")
                };
            }
            ApiError::invalid(field, message)
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    Ok(value)
}

pub fn too_large() -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "the body is larger than the limit of {MAX_BODY_BYTES} bytes"
    ))
}

/// The version named by `If-Match: "<version>"` (or a bare `<version>`), if the header is
/// there. `*` names any version of an existing resource, which every command on a resource
/// requires anyway.
pub fn if_match(request: &HttpRequest) -> Result<Option<u64>, ApiError> {
    let Some(value) = request.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::BadRequest(
            "If-Match must be the ETag the resource was served with, such as \"3\"".into(),
        )
    };
    let value = value.to_str().map_err(|_| bad())?.trim();
    if value == "*" {
        return Ok(None);
    }
    // The quotes an entity tag has; a bare version, as hand-typed, is taken too.
    let unquoted = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    Some(unquoted)
        .filter(|v| !v.is_empty() && v.len() <= 18 && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(bad)
}

/// The `Idempotency-Key` header, if any: 1 to 255 visible ASCII characters.
pub fn idempotency_key(request: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or("");
    if value.is_empty()
        || value.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !value.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
        )));
    }
    Ok(Some(value.to_owned()))
}

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

/// `ETag` for a stream version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// Whether the request's `If-None-Match` names `etag` (or `*`), compared weakly as RFC 9110
/// §13.1.2 requires: `W/"x"` and `"x"` match.
pub fn if_none_match_names(request: &HttpRequest, etag: &str) -> bool {
    let ours = etag.trim_start_matches("W/");
    request
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == ours)
}

/// A resource as JSON, with its `ETag`.
pub fn resource<T: Serialize>(status: StatusCode, version: u64, body: &T) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::ETAG, etag(version)))
        .json(body)
}

/// A list page's `limit`: 50 when absent, 1 to 500.
pub fn page_limit(limit: Option<i64>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE as i64).contains(&n) => Ok(n as usize),
        Some(_) => Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        )),
    }
}

/// A global position or stream version given by a client: stored as a PostgreSQL bigint,
/// so at most `i64::MAX`.
pub fn position_param(field: &str, value: Option<u64>) -> Result<Option<u64>, ApiError> {
    match value {
        Some(n) if n > i64::MAX as u64 => Err(ApiError::invalid(
            field,
            format!("must be at most {}", i64::MAX),
        )),
        other => Ok(other),
    }
}

/// An opaque cursor: the sort key of the last item of a page, as URL-safe base64 JSON.
pub fn encode_cursor<T: Serialize>(key: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).unwrap_or_default())
}

/// The cursor of the page after `page`: its last item's sort key, or `None` on the last page.
pub fn next_cursor<T, K: Serialize>(page: &Page<T>, sort_key: impl Fn(&T) -> K) -> Option<String> {
    page.has_more
        .then(|| page.items.last())
        .flatten()
        .map(|last| encode_cursor(&sort_key(last)))
}

pub fn decode_cursor<T: DeserializeOwned>(cursor: Option<&str>) -> Result<Option<T>, ApiError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid("cursor", "not a cursor this list gave; start without one")
        })
}

/// The metadata of the events a request causes: who, and which request.
pub fn metadata(request: &HttpRequest, key: &Versioned<ApiKey>) -> Metadata {
    let request_id = request.extensions().get::<RequestId>().cloned();
    Metadata {
        actor: key.id.to_string(),
        correlation_id: request_id
            .as_ref()
            .and_then(|id| Uuid::parse_str(&id.0).ok()),
        request_id: request_id.map(|id| id.0),
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
