//! `GET /v1/stream`: Server-Sent Events of the notices the caller may see.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, ContentEncoding};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use eventstore::EventStore;
use notices::{NoticeFilter, NoticeHub, StreamKey, Subscriber};
use projections::queries::Viewer;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract;
use crate::problem::ApiError;
use crate::routing::{self, Routes};
use crate::server::DirectWrites;
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
    /// The language to render notices in where they have it (a BCP 47 tag); without it,
    /// `Accept-Language` chooses, and without that the default language.
    #[param(pattern = r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,7}$")]
    pub lang: Option<String>,
}

/// Notices as Server-Sent Events: `id:` the global position, `event:` the CloudEvent type,
/// `data:` the CloudEvent (its `data` the resource as it stood after the event, with its
/// services' statuses as the caller sees them). Resumable with `Last-Event-ID`; a comment
/// at least every 15 s. A subscriber too far behind is closed with a comment naming the
/// position to resume from.
#[utoipa::path(
    operation_id = "stream_notices", get, path = "/v1/stream", tag = "subscriptions",
    params(
        StreamQuery, crate::language::LanguageHeader,
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
        // database's) would silently hold back every notice until the log caught up. While
        // the database is not ready that cannot be known yet: the stream waits instead, as
        // a refusal would end a browser's EventSource for good.
        match state.store.log_head().await {
            Ok(head) => {
                let head = head.map_or(0, |(position, _)| position);
                if after > head {
                    return Err(ApiError::invalid(
                        "Last-Event-ID",
                        format!("position {after} is beyond the history's head {head}"),
                    ));
                }
            }
            Err(e) if state.prepared.load(Ordering::Acquire) && !e.is_unavailable() => {
                return Err(e.into())
            }
            Err(_) => {}
        }
    }
    let preferences = crate::language::preferences(&request)?;
    let region = match query.region.as_deref() {
        None => None,
        Some(region) => Some(domain::values::label("region", region).map_err(ApiError::from)?),
    };
    let opening = Opening {
        store: state.store.clone(),
        hub: state.notices.clone(),
        viewer: caller.viewer(),
        filter: NoticeFilter {
            services: query.service_id.into_iter().collect(),
            region,
            types: Vec::new(),
            preferences,
        },
        key: caller.key.as_ref().map(|key| StreamKey { id: key.id }),
        after,
        announced: false,
        direct: DirectWrites::default(),
    };
    let direct = opening.direct.clone();
    // The slot travels with the stream and is given back when the stream ends.
    let body = futures_util::stream::unfold(
        (Phase::Opening(Box::new(opening)), slot),
        |(phase, slot)| async move {
            let (chunk, next) = phase.next().await?;
            Some((Ok::<_, Infallible>(chunk), (next, slot)))
        },
    );
    let mut response = HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Compression would hold messages back until a buffer fills.
        .insert_header(ContentEncoding::Identity)
        .insert_header(("X-Accel-Buffering", "no"))
        .insert_header((header::VARY, "Accept-Language"))
        .streaming(body);
    // The lean dispatcher puts the connection in it, for the thread's relay to write to.
    response.extensions_mut().insert(direct);
    Ok(response)
}

/// A stream before its subscriber exists: it may have to wait for the process's notice hub
/// to start (right after a restart, while the database is being prepared). It answers at
/// once all the same, and says every second that it is waiting: a browser's EventSource
/// treats any answer but 200 as final, so a reconnect must never be refused for a moment's
/// reason.
struct Opening {
    store: EventStore,
    hub: Arc<NoticeHub>,
    viewer: Viewer,
    filter: NoticeFilter,
    key: Option<StreamKey>,
    after: Option<u64>,
    announced: bool,
    /// Where the connection arrives, when the relay may write to it.
    direct: DirectWrites,
}

enum Phase {
    Opening(Box<Opening>),
    Streaming(Box<Subscriber>),
    Done,
}

/// How often a waiting stream says it is alive.
const WAITING_NOTE_EVERY: Duration = Duration::from_secs(1);

/// The goodbye of a stream the stopping server will not open: come back in a few seconds.
fn stopping() -> Bytes {
    Bytes::from(format!(
        "retry: {}\n: the server is stopping; reconnect\n\n",
        notices::hub::reconnect_hint()
    ))
}

impl Phase {
    async fn next(self) -> Option<(Bytes, Phase)> {
        match self {
            Phase::Opening(mut opening) => {
                if opening.hub.stopping() {
                    return Some((stopping(), Phase::Done));
                }
                if !opening.hub.is_started() {
                    if opening.announced {
                        let _ =
                            tokio::time::timeout(WAITING_NOTE_EVERY, opening.hub.until_started())
                                .await;
                        if !opening.hub.is_started() {
                            return Some((
                                Bytes::from_static(b": the notice stream is starting\n\n"),
                                Phase::Opening(opening),
                            ));
                        }
                    } else {
                        opening.announced = true;
                        return Some((
                            Bytes::from_static(
                                b"retry: 2000\n: the notice stream is starting; wait\n\n",
                            ),
                            Phase::Opening(opening),
                        ));
                    }
                }
                let Opening {
                    store,
                    hub,
                    viewer,
                    filter,
                    key,
                    after,
                    direct,
                    ..
                } = *opening;
                let subscriber =
                    Subscriber::new(store, hub, viewer, filter, key, after).map(|subscriber| {
                        match direct.take() {
                            Some(socket) => subscriber.writing_directly_to(socket),
                            None => subscriber,
                        }
                    });
                match subscriber {
                    Some(subscriber) => Phase::Streaming(Box::new(subscriber)).next_chunk().await,
                    None => Some((stopping(), Phase::Done)),
                }
            }
            Phase::Streaming(subscriber) => Phase::Streaming(subscriber).next_chunk().await,
            Phase::Done => None,
        }
    }

    async fn next_chunk(self) -> Option<(Bytes, Phase)> {
        let Phase::Streaming(mut subscriber) = self else {
            return None;
        };
        let chunk = subscriber.next_chunk().await?;
        Some((chunk, Phase::Streaming(subscriber)))
    }
}
