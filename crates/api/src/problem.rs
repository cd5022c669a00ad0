//! RFC 9457 problem details: the body of every error answer, and the one error type of the
//! handlers.
//!
//! [`ApiError`] has a variant per way a request fails; most map to one status each, and two
//! statuses have two variants: 400 (`BadRequest`, a bad header or query, and `Invalid`, with
//! the invalid fields) and 429 (`RateLimited`, `TooManyStreams`). A 500 or 503 keeps the
//! error it comes from as its source; the answer shows a short detail, and the log line
//! prints the whole chain of causes.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use delivery::DeliveryError;
use domain::{DomainError, FieldError};
use notices::NoticeError;
use projections::{CommandError, ProjectionError};
use serde::Serialize;
use tasks::Chain;
use utoipa::ToSchema;

/// The error a 500 or 503 comes from, shared (a coalesced lookup's failure answers every
/// caller of its round).
pub type Cause = Arc<dyn StdError + Send + Sync + 'static>;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// How long a client should wait after a 503 before trying again.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 2;

/// An RFC 9457 problem.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// `about:blank`: the status code says what went wrong; `title` is its phrase.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub kind: String,
    #[schema(example = "Bad Request")]
    pub title: String,
    #[schema(example = 400)]
    pub status: u16,
    /// What went wrong with this request, for people.
    pub detail: String,
    /// Every invalid field, when the request was refused as invalid.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<ProblemField>)]
    pub errors: Vec<FieldError>,
}

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemField {
    /// The field's path in the body (`affected_services[0].status`) or the parameter.
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            kind: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn response(&self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut builder = HttpResponse::build(status);
        builder.insert_header((header::CONTENT_TYPE, CONTENT_TYPE));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            builder.insert_header((
                header::RETRY_AFTER,
                UNAVAILABLE_RETRY_AFTER_SECS.to_string(),
            ));
        }
        if status == StatusCode::UNAUTHORIZED {
            builder.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        builder.json(self)
    }
}

/// Every way a request can fail, each with its status code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 400 without field details (a bad header or query).
    #[error("{0}")]
    BadRequest(String),
    /// 400 with the invalid fields.
    #[error("the request is invalid")]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("If-Match names version {expected}, but the resource is at version {current}")]
    PreconditionFailed { expected: u64, current: u64 },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("too many requests; retry in {} s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error("this address has {limit} event streams open, the most it may; close one first")]
    TooManyStreams { limit: u32 },
    /// 503: the database is away or busy, or the process is starting or stopping.
    #[error("{context}")]
    Unavailable {
        context: String,
        #[source]
        cause: Option<Cause>,
    },
    /// 500: a fault of the server; the detail and its causes are logged, never shown.
    #[error("{context}")]
    Internal {
        context: String,
        #[source]
        cause: Option<Cause>,
    },
}

impl ApiError {
    /// The database is away or busy: worth retrying as it is.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ApiError::Unavailable { .. })
    }

    /// 503 for a reason of our own, with no error behind it.
    pub fn unavailable(context: impl Into<String>) -> Self {
        ApiError::Unavailable {
            context: context.into(),
            cause: None,
        }
    }

    /// 503 because of `cause`.
    pub fn unavailable_by(
        context: impl Into<String>,
        cause: impl StdError + Send + Sync + 'static,
    ) -> Self {
        ApiError::Unavailable {
            context: context.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// 500 for a fault found here, with no error behind it.
    pub fn internal(context: impl Into<String>) -> Self {
        ApiError::Internal {
            context: context.into(),
            cause: None,
        }
    }

    /// 500 because of `cause`.
    pub fn internal_by(
        context: impl Into<String>,
        cause: impl StdError + Send + Sync + 'static,
    ) -> Self {
        ApiError::Internal {
            context: context.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn problem(&self) -> Problem {
        let mut problem = Problem::new(self.status_code(), self.to_string());
        match self {
            ApiError::Invalid(errors) => {
                problem.detail = match errors.as_slice() {
                    [one] if one.field.is_empty() => one.message.clone(),
                    [one] => format!("{}: {}", one.field, one.message),
                    _ => format!("{} fields are invalid", errors.len()),
                };
                problem.errors = errors.clone();
            }
            ApiError::Internal { .. } => {
                problem.detail = "the server failed to handle this request".into();
            }
            _ => {}
        }
        problem
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } | ApiError::TooManyStreams { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Internal { .. } => tracing::error!(error = %Chain(self), "request failed"),
            ApiError::Unavailable { .. } => {
                tracing::warn!(error = %Chain(self), "request refused for now")
            }
            _ => {}
        }
        let mut response = self.problem().response();
        let retry_after = match self {
            ApiError::RateLimited { retry_after } => Some(*retry_after),
            // Nobody knows when one closes: a reconnecting EventSource waits this long.
            ApiError::TooManyStreams { .. } => Some(Duration::from_secs(30)),
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            // Whole seconds, rounded up: a client that waits that long gets through.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            if let Ok(value) = header::HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(err: DomainError) -> Self {
        match err {
            DomainError::Invalid(errors) => ApiError::Invalid(errors),
            DomainError::NotFound(what) => ApiError::NotFound(format!("no such {what}")),
            DomainError::Conflict(why) => ApiError::Conflict(why),
        }
    }
}

impl From<ProjectionError> for ApiError {
    fn from(err: ProjectionError) -> Self {
        if err.is_unavailable() {
            return ApiError::unavailable_by("the database is unavailable", err);
        }
        match err {
            ProjectionError::Busy(why) => ApiError::unavailable(why),
            ProjectionError::Store(ref store) if store.is_schema_outdated() => {
                ApiError::unavailable("the database is being migrated")
            }
            ProjectionError::Store(ref store)
                if matches!(
                    store.sql_state(),
                    // Serialization failure, deadlock, statement or lock timeout, cancel.
                    Some("40001" | "40P01" | "57014" | "55P03")
                ) =>
            {
                ApiError::unavailable_by("the database is busy", err)
            }
            ProjectionError::Store(ref store)
                if matches!(
                    store.sql_state(),
                    // An undefined table, function or schema: a schema not migrated yet.
                    Some("42P01" | "42883" | "3F000")
                ) =>
            {
                ApiError::unavailable_by("the database is being migrated", err)
            }
            other => ApiError::internal_by("the read models failed", other),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(err: CommandError) -> Self {
        match err {
            CommandError::Domain(e) => e.into(),
            CommandError::VersionMismatch { expected, current } => {
                ApiError::PreconditionFailed { expected, current }
            }
            CommandError::IdempotencyKeyReused => ApiError::IdempotencyKeyReused,
            CommandError::Contended => ApiError::unavailable(
                "the resource is changing too fast to apply this command; retry",
            ),
            err @ (CommandError::Refused(_) | CommandError::Randomness(_)) => {
                ApiError::internal_by("a command failed", err)
            }
            CommandError::Projection(e) => e.into(),
        }
    }
}

impl From<NoticeError> for ApiError {
    fn from(err: NoticeError) -> Self {
        match err {
            NoticeError::Read(e) => e.into(),
            NoticeError::Stopping => ApiError::unavailable("the process is stopping"),
            other => ApiError::internal_by("a notice could not be rendered", other),
        }
    }
}

impl From<DeliveryError> for ApiError {
    fn from(err: DeliveryError) -> Self {
        match err {
            DeliveryError::Database(e) => e.into(),
            DeliveryError::Notice(e) => e.into(),
            DeliveryError::Command(e) => e.into(),
            DeliveryError::Timeout => ApiError::unavailable_by("the database is slow", err),
            other => ApiError::internal_by("delivery failed", other),
        }
    }
}

impl From<eventstore::StoreError> for ApiError {
    fn from(err: eventstore::StoreError) -> Self {
        ProjectionError::Store(err).into()
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(err: tokio_postgres::Error) -> Self {
        ProjectionError::from(err).into()
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        ProjectionError::from(err).into()
    }
}

/// The answer for every path no route matches.
pub async fn not_found(request: HttpRequest) -> HttpResponse {
    Problem::new(
        StatusCode::NOT_FOUND,
        format!(
            "there is nothing at {} {}",
            request.method(),
            request.path()
        ),
    )
    .response()
}

/// The error answers of the operations, by kind of operation, for the OpenAPI document.
/// Every answer with a key can be 429 (the failed-authentication limit of its address).
#[allow(dead_code)] // Read by utoipa only.
pub mod documented {
    use utoipa::IntoResponses;

    use super::Problem;

    /// Creating a resource (`POST` of a new one).
    #[derive(IntoResponses)]
    pub enum CreateProblems {
        #[response(
            status = 400,
            description = "Malformed JSON, invalid fields or a bad parameter",
            content_type = "application/problem+json"
        )]
        BadRequest(Problem),
        #[response(
            status = 401,
            description = "Missing, malformed, unknown or revoked key",
            content_type = "application/problem+json"
        )]
        Unauthorized(Problem),
        #[response(
            status = 403,
            description = "The key's role (or tenant) may not do this",
            content_type = "application/problem+json"
        )]
        Forbidden(Problem),
        #[response(
            status = 413,
            description = "Body over 64 KiB",
            content_type = "application/problem+json"
        )]
        TooLarge(Problem),
        #[response(
            status = 415,
            description = "Body not application/json",
            content_type = "application/problem+json"
        )]
        UnsupportedMediaType(Problem),
        #[response(
            status = 422,
            description = "Idempotency-Key reused with another request",
            content_type = "application/problem+json"
        )]
        KeyReused(Problem),
        #[response(
            status = 429,
            description = "Rate limited; see Retry-After",
            content_type = "application/problem+json"
        )]
        RateLimited(Problem),
        #[response(
            status = 503,
            description = "Database unreachable; see Retry-After",
            content_type = "application/problem+json"
        )]
        Unavailable(Problem),
    }

    /// A command on an existing resource (`POST` or `PATCH` with a body).
    #[derive(IntoResponses)]
    pub enum CommandProblems {
        #[response(
            status = 400,
            description = "Malformed JSON, invalid fields or a bad parameter",
            content_type = "application/problem+json"
        )]
        BadRequest(Problem),
        #[response(
            status = 401,
            description = "Missing, malformed, unknown or revoked key",
            content_type = "application/problem+json"
        )]
        Unauthorized(Problem),
        #[response(
            status = 403,
            description = "The key's role (or tenant) may not do this",
            content_type = "application/problem+json"
        )]
        Forbidden(Problem),
        #[response(
            status = 404,
            description = "No such resource, or not visible to this caller",
            content_type = "application/problem+json"
        )]
        NotFound(Problem),
        #[response(
            status = 409,
            description = "Not valid in the resource's current state",
            content_type = "application/problem+json"
        )]
        Conflict(Problem),
        #[response(
            status = 412,
            description = "If-Match names another version than the current one",
            content_type = "application/problem+json"
        )]
        PreconditionFailed(Problem),
        #[response(
            status = 413,
            description = "Body over 64 KiB",
            content_type = "application/problem+json"
        )]
        TooLarge(Problem),
        #[response(
            status = 415,
            description = "Body not application/json",
            content_type = "application/problem+json"
        )]
        UnsupportedMediaType(Problem),
        #[response(
            status = 422,
            description = "Idempotency-Key reused with another request",
            content_type = "application/problem+json"
        )]
        KeyReused(Problem),
        #[response(
            status = 429,
            description = "Rate limited; see Retry-After",
            content_type = "application/problem+json"
        )]
        RateLimited(Problem),
        #[response(
            status = 503,
            description = "Database unreachable; see Retry-After",
            content_type = "application/problem+json"
        )]
        Unavailable(Problem),
    }

    /// Retiring or revoking a resource (`DELETE`).
    #[derive(IntoResponses)]
    pub enum RemoveProblems {
        #[response(
            status = 400,
            description = "Malformed JSON, invalid fields or a bad parameter",
            content_type = "application/problem+json"
        )]
        BadRequest(Problem),
        #[response(
            status = 401,
            description = "Missing, malformed, unknown or revoked key",
            content_type = "application/problem+json"
        )]
        Unauthorized(Problem),
        #[response(
            status = 403,
            description = "The key's role (or tenant) may not do this",
            content_type = "application/problem+json"
        )]
        Forbidden(Problem),
        #[response(
            status = 404,
            description = "No such resource, or not visible to this caller",
            content_type = "application/problem+json"
        )]
        NotFound(Problem),
        #[response(
            status = 409,
            description = "Not valid in the resource's current state",
            content_type = "application/problem+json"
        )]
        Conflict(Problem),
        #[response(
            status = 412,
            description = "If-Match names another version than the current one",
            content_type = "application/problem+json"
        )]
        PreconditionFailed(Problem),
        #[response(
            status = 422,
            description = "Idempotency-Key reused with another request",
            content_type = "application/problem+json"
        )]
        KeyReused(Problem),
        #[response(
            status = 429,
            description = "Rate limited; see Retry-After",
            content_type = "application/problem+json"
        )]
        RateLimited(Problem),
        #[response(
            status = 503,
            description = "Database unreachable; see Retry-After",
            content_type = "application/problem+json"
        )]
        Unavailable(Problem),
    }

    /// Listing what only admins may list.
    #[derive(IntoResponses)]
    pub enum AdminListProblems {
        #[response(
            status = 400,
            description = "Malformed JSON, invalid fields or a bad parameter",
            content_type = "application/problem+json"
        )]
        BadRequest(Problem),
        #[response(
            status = 401,
            description = "Missing, malformed, unknown or revoked key",
            content_type = "application/problem+json"
        )]
        Unauthorized(Problem),
        #[response(
            status = 403,
            description = "The key's role (or tenant) may not do this",
            content_type = "application/problem+json"
        )]
        Forbidden(Problem),
        #[response(
            status = 429,
            description = "Rate limited; see Retry-After",
            content_type = "application/problem+json"
        )]
        RateLimited(Problem),
        #[response(
            status = 503,
            description = "Database unreachable; see Retry-After",
            content_type = "application/problem+json"
        )]
        Unavailable(Problem),
    }

    /// Reading one thing only admins may read.
    #[derive(IntoResponses)]
    pub enum AdminGetProblems {
        #[response(
            status = 400,
            description = "Malformed JSON, invalid fields or a bad parameter",
            content_type = "application/problem+json"
        )]
        BadRequest(Problem),
        #[response(
            status = 401,
            description = "Missing, malformed, unknown or revoked key",
            content_type = "application/problem+json"
        )]
        Unauthorized(Problem),
        #[response(
            status = 403,
            description = "The key's role (or tenant) may not do this",
            content_type = "application/problem+json"
        )]
        Forbidden(Problem),
        #[response(
            status = 404,
            description = "No such resource, or not visible to this caller",
            content_type = "application/problem+json"
        )]
        NotFound(Problem),
        #[response(
            status = 429,
            description = "Rate limited; see Retry-After",
            content_type = "application/problem+json"
        )]
        RateLimited(Problem),
        #[response(
            status = 503,
            description = "Database unreachable; see Retry-After",
            content_type = "application/problem+json"
        )]
        Unavailable(Problem),
    }

    /// Listing notices (anyone; a key adds its tenant's).
    #[derive(IntoResponses)]
    pub enum PublicListProblems {
        #[response(
            status = 400,
            description = "Malformed JSON, invalid fields or a bad parameter",
            content_type = "application/problem+json"
        )]
        BadRequest(Problem),
        #[response(
            status = 401,
            description = "Missing, malformed, unknown or revoked key",
            content_type = "application/problem+json"
        )]
        Unauthorized(Problem),
        #[response(
            status = 429,
            description = "Rate limited; see Retry-After",
            content_type = "application/problem+json"
        )]
        RateLimited(Problem),
        #[response(
            status = 503,
            description = "Database unreachable; see Retry-After",
            content_type = "application/problem+json"
        )]
        Unavailable(Problem),
    }

    /// Reading a public document (Statuspage, feeds).
    #[derive(IntoResponses)]
    pub enum PublicDocumentProblems {
        #[response(
            status = 400,
            description = "A `lang` that is not a language tag",
            content_type = "application/problem+json"
        )]
        BadRequest(Problem),
        #[response(
            status = 429,
            description = "Rate limited; see Retry-After",
            content_type = "application/problem+json"
        )]
        RateLimited(Problem),
        #[response(
            status = 503,
            description = "Database unreachable and nothing rendered yet; see Retry-After",
            content_type = "application/problem+json"
        )]
        Unavailable(Problem),
    }

    /// Reading a page of the status page (anyone; public notices only).
    #[derive(IntoResponses)]
    pub enum PageProblems {
        #[response(
            status = 400,
            description = "A bad `lang` (or `cursor`)",
            content_type = "application/problem+json"
        )]
        BadRequest(Problem),
        #[response(
            status = 429,
            description = "Rate limited; see Retry-After",
            content_type = "application/problem+json"
        )]
        RateLimited(Problem),
        #[response(
            status = 503,
            description = "Database unreachable and nothing rendered yet, or the process is starting",
            content_type = "application/problem+json"
        )]
        Unavailable(Problem),
    }

    /// Reading one notice (anyone; a key adds its tenant's).
    #[derive(IntoResponses)]
    pub enum PublicGetProblems {
        #[response(
            status = 400,
            description = "Malformed JSON, invalid fields or a bad parameter",
            content_type = "application/problem+json"
        )]
        BadRequest(Problem),
        #[response(
            status = 401,
            description = "Missing, malformed, unknown or revoked key",
            content_type = "application/problem+json"
        )]
        Unauthorized(Problem),
        #[response(
            status = 404,
            description = "No such resource, or not visible to this caller",
            content_type = "application/problem+json"
        )]
        NotFound(Problem),
        #[response(
            status = 429,
            description = "Rate limited; see Retry-After",
            content_type = "application/problem+json"
        )]
        RateLimited(Problem),
        #[response(
            status = 503,
            description = "Database unreachable; see Retry-After",
            content_type = "application/problem+json"
        )]
        Unavailable(Problem),
    }
}
