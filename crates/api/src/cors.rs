//! Cross-origin reads and writes from browsers (CORS).
//!
//! * A request without `Authorization` can only read public notices, so whoever asks may
//!   read the answer: `Access-Control-Allow-Origin: *`. That covers the Statuspage documents
//!   (Atlassian's status widget runs on other origins), the feeds, the notice reads and
//!   `/v1/stream` for a browser's `EventSource`.
//! * A request with a key is allowed only from an origin in `CRIER_CORS_ORIGINS` (the
//!   communications team's own tools): its answer names that origin, and varies on `Origin`.
//!   From any other origin the answer carries no CORS header, so the browser keeps it from
//!   the page.
//! * Preflights (`OPTIONS` with `Access-Control-Request-Method`) are answered here, before
//!   any route: a listed origin may send every method and the headers the API reads
//!   (`Authorization`, `If-Match`, `Idempotency-Key`, …); any origin may send a `GET` with
//!   the headers a public read uses (`If-None-Match`, `Last-Event-ID` for an `EventSource`
//!   that reconnects); anything else is refused with 403.
//!
//! Answers expose the headers a client acts on: `ETag`, `Location`, `Retry-After`,
//! `Idempotent-Replayed`, `X-Request-Id`, `Content-Language`, `Crier-Export-Head`.

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpResponse};

use crate::problem::Problem;

/// The origins allowed to send requests with a key (`CRIER_CORS_ORIGINS`).
#[derive(Debug, Clone, Default)]
pub struct CorsOrigins(pub Vec<String>);

impl CorsOrigins {
    /// Origins as configured: `https://ops.example.org`, compared without a trailing slash
    /// and case-insensitively (an origin is a scheme, a host and a port).
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(origins: I) -> CorsOrigins {
        CorsOrigins(
            origins
                .into_iter()
                .map(|o| o.as_ref().trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect(),
        )
    }

    fn allows(&self, origin: &str) -> bool {
        self.0.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }
}

const EXPOSED: &str =
    "ETag, Location, Retry-After, Idempotent-Replayed, X-Request-Id, Content-Language, Crier-Export-Head";
/// What a listed origin may send.
const KEYED_METHODS: &str = "GET, HEAD, POST, PATCH, DELETE";
const KEYED_HEADERS: &str = "Authorization, Content-Type, If-Match, If-None-Match, \
     Idempotency-Key, Last-Event-ID, X-Request-Id, Accept-Language";
/// What any origin may send: the headers of a public read.
const PUBLIC_HEADERS: [&str; 4] = [
    "if-none-match",
    "last-event-id",
    "x-request-id",
    "accept-language",
];
/// How long a browser may keep a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

fn origin_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
        .filter(|o| !o.is_empty() && o != "null")
}

fn preflight(headers: &HeaderMap, origin: &str, origins: &CorsOrigins) -> HttpResponse {
    let method = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_ascii_uppercase();
    let requested: Vec<String> = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    if origins.allows(origin) {
        return HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, KEYED_METHODS))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, KEYED_HEADERS))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE))
            .insert_header((header::VARY, "Origin"))
            .finish();
    }
    let public_read = matches!(method.as_str(), "GET" | "HEAD")
        && requested
            .iter()
            .all(|h| PUBLIC_HEADERS.contains(&h.as_str()));
    if public_read {
        return HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD"))
            .insert_header((
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                PUBLIC_HEADERS.join(", "),
            ))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE))
            .finish();
    }
    Problem::new(
        StatusCode::FORBIDDEN,
        format!(
            "{origin} may only read public documents; requests with a key come from the \
             origins in CRIER_CORS_ORIGINS"
        ),
    )
    .response()
}

/// The answer to `request` if it is a preflight, given before any route.
pub fn preflight_answer(request: &ServiceRequest) -> Option<HttpResponse> {
    if request.method() != Method::OPTIONS
        || !request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    let origin = origin_of(request.headers())?;
    let no_origins = CorsOrigins::default();
    let origins = request
        .app_data::<web::Data<CorsOrigins>>()
        .map_or(&no_origins, |o| o.get_ref());
    Some(preflight(request.headers(), &origin, origins))
}

/// The CORS headers `request`'s answer gets, decided from the request alone.
pub struct AnswerHeaders {
    keyed: bool,
    allowed_origin: Option<HeaderValue>,
}

impl AnswerHeaders {
    pub fn for_request(request: &ServiceRequest) -> AnswerHeaders {
        let keyed = request.headers().contains_key(header::AUTHORIZATION);
        let allowed_origin = if !keyed {
            Some(HeaderValue::from_static("*"))
        } else {
            origin_of(request.headers())
                .filter(|origin| {
                    request
                        .app_data::<web::Data<CorsOrigins>>()
                        .is_some_and(|origins| origins.allows(origin))
                })
                .and_then(|origin| HeaderValue::from_str(&origin).ok())
        };
        AnswerHeaders {
            keyed,
            allowed_origin,
        }
    }

    pub fn apply(self, headers: &mut HeaderMap) {
        if self.keyed {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if let Some(allowed) = self.allowed_origin {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSED),
            );
        }
    }
}
