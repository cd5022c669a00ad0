//! What handlers read from a request, and the entity tags they compare: JSON bodies (with
//! the path of an invalid field), `If-Match`, `Idempotency-Key`, `If-None-Match` and
//! positions given by clients.

use actix_web::http::header;
use actix_web::HttpRequest;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

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
    // A rendering in another language than the default names its language after the
    // version (`"3-cy"`): the version is what must match.
    let version = match unquoted.split_once('-') {
        Some((version, language)) if !language.is_empty() => version,
        _ => unquoted,
    };
    Some(version)
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

/// `ETag` for a stream version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// The `ETag` of a resource at `version` rendered in `language`: the version alone in the
/// default language, `"<version>-<language>"` in another. `If-Match` takes either.
pub fn etag_in(
    version: u64,
    language: &domain::language::Language,
    default: &domain::language::Language,
) -> String {
    if language == default {
        etag(version)
    } else {
        format!("\"{version}-{language}\"")
    }
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
