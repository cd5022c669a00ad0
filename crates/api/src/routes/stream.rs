//! `GET /v1/stream`: Server-Sent Events of the notices the caller may see.

use std::convert::Infallible;

use actix_web::http::header::{self, ContentEncoding};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract;
use notices::{NoticeFilter, StreamKey, Subscriber};

use crate::problem::ApiError;
use crate::routing::{self, Routes};
use crate::state::AppState;

pub fn configure(routes: &mut Routes<'_>) {
    routes.resource("/v1/stream", [routing::get_and_head(stream)]);
}

#[derive(OpenApi)]
#[openapi(paths(stream))]
pub struct Doc;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Only notices about this service (incidents and maintenances affecting it, and the
    /// service itself).
    pub service_id: Option<Uuid>,
    /// Only notices concerning this region: those naming it, naming `global`, or naming
    /// no region.
    #[param(schema_with = domain::values::schema::label)]
    pub region: Option<String>,
    /// Resume after this global position (as `Last-Event-ID`, which wins when both are
    /// sent). Without either, the stream starts with the next notice.
    #[param(maximum = 9_223_372_036_854_775_807_i64)]
    pub after: Option<u64>,
}

/// Notices as Server-Sent Events: `id:` the global position, `event:` the CloudEvent type,
/// `data:` the CloudEvent (its `data` the resource as it stood after the event, with its
/// services' statuses as the caller sees them). Resumable with `Last-Event-ID`; a comment
/// at least every 15 s. A subscriber too far behind is closed with a comment naming the
/// position to resume from.
#[utoipa::path(
    operation_id = "stream_notices", get, path = "/v1/stream", tag = "subscriptions",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this global position"),
    ),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
            description = "An endless stream of `id`/`event`/`data` messages and `:` comments"),
        crate::problem::documented::PublicListProblems,
    ),
    security((), ("bearer" = []))
)]
pub async fn stream(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    state.limits.allow_read(caller.client_ip)?;
    let slot = state.limits.open_stream(caller.client_ip)?;
    let last_event_id = match request.headers().get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::invalid("Last-Event-ID", "must be a global position (an integer)")
                })?,
        ),
    };
    let last_event_id = extract::position_param("Last-Event-ID", last_event_id)?;
    let after = last_event_id.or(extract::position_param("after", query.after)?);
    if let Some(after) = after {
        // A position this history has not reached (another deployment's, or a restored
        // database's) would silently hold back every notice until the log caught up.
        let head = state
            .store
            .log_head()
            .await?
            .map_or(0, |(position, _)| position);
        if after > head {
            return Err(ApiError::invalid(
                "Last-Event-ID",
                format!("position {after} is beyond the history's head {head}"),
            ));
        }
    }
    let region = match query.region.as_deref() {
        None => None,
        Some(region) => Some(domain::values::label("region", region).map_err(ApiError::from)?),
    };
    let subscriber = Subscriber::new(
        state.store.clone(),
        state.notices.clone(),
        caller.viewer(),
        NoticeFilter {
            services: query.service_id.into_iter().collect(),
            region,
            types: Vec::new(),
        },
        caller.key.as_ref().map(|key| StreamKey { id: key.id }),
        after,
    )
    .ok_or_else(|| ApiError::unavailable("the notice stream is starting or stopping"))?;
    // The slot travels with the stream and is given back when the stream ends.
    let body =
        futures_util::stream::unfold((subscriber, slot), |(mut subscriber, slot)| async move {
            let chunk = subscriber.next_chunk().await?;
            Some((Ok::<_, Infallible>(chunk), (subscriber, slot)))
        });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Compression would hold messages back until a buffer fills.
        .insert_header(ContentEncoding::Identity)
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}
