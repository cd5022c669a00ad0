//! What every request gets from [`crate::edge::every_request`]: a request id (taken from
//! `X-Request-Id` when the caller sent a sane one, made otherwise) in a tracing span around
//! the request and in the answer; Prometheus metrics by route and status; problem+json for
//! every error answer, including those actix makes itself (unknown method, unreadable body,
//! …); security headers (`X-Content-Type-Options` everywhere, a strict
//! `Content-Security-Policy` and `X-Frame-Options` on the interactive docs); and, when
//! metrics have an address of their own, nothing but `/metrics` on it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::body::{self, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, Error, HttpMessage, HttpRequest};
use metrics::{Counter, Histogram};
use tracing::Instrument;

use crate::problem::{Problem, CONTENT_TYPE};

pub const REQUEST_ID_HEADER: &str = "x-request-id";
const MAX_REQUEST_ID_LEN: usize = 128;
/// Largest actix error text kept in a problem's detail.
const MAX_DETAIL_BYTES: usize = 4 * 1024;

/// What `/docs/` may load: its own scripts and styles (Swagger UI sets inline style
/// attributes), its own and inline images, and the OpenAPI document from this origin.
pub const DOCS_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Who may read `/metrics`: everyone (the default), only on an address of its own
/// (`CRIER_METRICS_LISTEN`), and/or only with a bearer token (`CRIER_METRICS_TOKEN`).
#[derive(Debug, Clone, Default)]
pub struct MetricsAccess {
    pub listen: Option<std::net::SocketAddr>,
    pub token: Option<String>,
}

impl MetricsAccess {
    /// Whether `request` arrived on the metrics' own address.
    pub fn on_metrics_address(&self, request: &HttpRequest) -> bool {
        self.listen
            .is_some_and(|listen| request.app_config().local_addr() == listen)
    }
}

/// The id of the request being served, in its extensions: kept as the header value it is
/// answered with, so that it is made once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only ASCII letters, digits and `-_.` are ever kept (see `request_id`).
        self.0.to_str().unwrap_or_default()
    }
}

fn request_id(request: &ServiceRequest) -> RequestId {
    let sent = request.headers().get(REQUEST_ID_HEADER).filter(|v| {
        !v.is_empty()
            && v.len() <= MAX_REQUEST_ID_LEN
            && v.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    RequestId(match sent {
        Some(sent) => sent.clone(),
        None => {
            let mut text = uuid::Uuid::encode_buffer();
            let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
            HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("unknown"))
        }
    })
}

/// Runs `serve` on `request` inside everything [`crate::edge::every_request`] owes it
/// here: the metrics-only address, the request id and its span, problem+json for errors,
/// the security headers, the metrics and the access log line.
pub async fn observed<F, Fut>(
    request: ServiceRequest,
    serve: F,
) -> Result<ServiceResponse<BoxBody>, Error>
where
    F: FnOnce(ServiceRequest) -> Fut,
    Fut: std::future::Future<Output = Result<ServiceResponse<BoxBody>, Error>>,
{
    let started = Instant::now();
    let metrics_only = request
        .app_data::<web::Data<MetricsAccess>>()
        .is_some_and(|access| access.on_metrics_address(request.request()));
    if metrics_only && request.path() != "/metrics" {
        let answer =
            Problem::new(StatusCode::NOT_FOUND, "this address serves /metrics only").response();
        return Ok(request.into_response(answer));
    }
    let id = request_id(&request);
    request.extensions_mut().insert(id.clone());
    let method = method_label(request.method());
    let interactive_docs = request.path().starts_with("/docs");
    let span =
        tracing::info_span!("request", request_id = id.as_str(), method, path = %request.path());
    let mut response = async {
        let response = serve(request).await?;
        problem_for_every_error(response).await
    }
    .instrument(span.clone())
    .await?;
    let headers = response.headers_mut();
    headers.insert(HeaderName::from_static(REQUEST_ID_HEADER), id.0);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if interactive_docs {
        // The documentation page runs scripts: only its own, and never inside a frame of
        // another page (clickjacking).
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DOCS_CONTENT_SECURITY_POLICY),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    let status = response.status();
    let elapsed = started.elapsed();
    // Asked once routing is done: before it, the pattern is found by matching the path
    // against every route again.
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    count_request(method, route, status, elapsed);
    span.in_scope(|| {
        tracing::info!(
            target: "crier::access",
            status = status.as_u16(),
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "served"
        )
    });
    Ok(response)
}

/// Most (method, route, status) series whose metric handles a worker thread keeps.
const MAX_KEPT_SERIES: usize = 4096;

/// A series of the request metrics: method, route, status.
type Series = (&'static str, String, u16);

thread_local! {
    /// The handles of the series this worker thread counted: looking a series up in the
    /// recorder means building and hashing its labels, on every request.
    static SERIES: RefCell<HashMap<Series, (Counter, Histogram)>> = RefCell::new(HashMap::new());
}

/// A request's method as a label: a client can send any token as a method, and each would
/// be a series of its own.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn count_request(method: &'static str, route: String, status: StatusCode, elapsed: Duration) {
    SERIES.with_borrow_mut(|series| {
        let key = (method, route, status.as_u16());
        if let Some((counter, histogram)) = series.get(&key) {
            counter.increment(1);
            histogram.record(elapsed.as_secs_f64());
            return;
        }
        let labels = [
            ("method", method.to_owned()),
            ("route", key.1.clone()),
            ("status", status.as_str().to_owned()),
        ];
        let counter = metrics::counter!("crier_http_requests_total", &labels);
        let histogram = metrics::histogram!("crier_http_request_duration_seconds", &labels);
        counter.increment(1);
        histogram.record(elapsed.as_secs_f64());
        if series.len() < MAX_KEPT_SERIES {
            series.insert(key, (counter, histogram));
        }
    });
}

/// An error answer that is not problem+json yet (actix's own) becomes one, keeping its
/// status, its headers (`Allow`, …) and its text as the detail. A page made for a person
/// (`text/html`: what a mailed link answers) stays a page.
async fn problem_for_every_error(
    response: ServiceResponse<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == CONTENT_TYPE.as_bytes());
    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem || is_page {
        return Ok(response.map_into_boxed_body());
    }
    let (request, response) = response.into_parts();
    let (head, body) = response.into_parts();
    let text = body::to_bytes_limited(body, MAX_DETAIL_BYTES)
        .await
        .ok()
        .and_then(|r| r.ok())
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|t| !t.is_empty());
    let detail = match (status, text) {
        (StatusCode::INTERNAL_SERVER_ERROR, _) => "the server failed to handle this request".into(),
        (_, Some(text)) => text,
        (_, None) => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let mut problem = Problem::new(status, detail).response();
    for (name, value) in head.headers() {
        if ![
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
            header::CONTENT_ENCODING,
        ]
        .contains(name)
        {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(ServiceResponse::new(request, problem))
}
