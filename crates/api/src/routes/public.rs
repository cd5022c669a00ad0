//! The documents everyone reads alike: the Statuspage v2 API (public notices only, whatever
//! key is sent) and the feeds (a key adds its tenant's notices, rendered for it and cached
//! privately); the public renderings are served from memory (see `documents`).

use actix_web::http::header::HeaderValue;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use projections::queries::Viewer;
use utoipa::OpenApi;

use crate::auth::Caller;

use crate::documents::Document;
use crate::feeds::{self, FeedDocuments};
use crate::language::{self, LanguageHeader, LanguageQuery};
use crate::problem::ApiError;
use crate::routing::{self, Routes};
use crate::state::AppState;
use crate::statuspage::{self, StatusDocuments};

pub fn configure(routes: &mut Routes<'_>) {
    routes
        .resource("/api/v2/summary.json", [routing::get_and_head(summary)])
        .resource("/api/v2/status.json", [routing::get_and_head(status)])
        .resource(
            "/api/v2/components.json",
            [routing::get_and_head(components)],
        )
        .resource("/api/v2/incidents.json", [routing::get_and_head(incidents)])
        .resource(
            "/api/v2/incidents/unresolved.json",
            [routing::get_and_head(unresolved)],
        )
        .resource(
            "/api/v2/scheduled-maintenances.json",
            [routing::get_and_head(maintenances)],
        )
        .resource(
            "/api/v2/scheduled-maintenances/upcoming.json",
            [routing::get_and_head(upcoming)],
        )
        .resource(
            "/api/v2/scheduled-maintenances/active.json",
            [routing::get_and_head(active)],
        )
        .resource("/v1/feed.atom", [routing::get_and_head(atom)])
        .resource("/v1/feed.rss", [routing::get_and_head(rss)]);
}

#[derive(OpenApi)]
#[openapi(paths(
    summary,
    status,
    components,
    incidents,
    unresolved,
    maintenances,
    upcoming,
    active,
    atom,
    rss
))]
pub struct Doc;

async fn status_document(
    state: &AppState,
    request: &HttpRequest,
    pick: fn(&StatusDocuments) -> &Document,
) -> Result<HttpResponse, ApiError> {
    state
        .limits
        .allow_read(state.limits.client_address(request))?;
    let negotiation = language::negotiation(state, request)?;
    let generation = state.document_generation();
    let default = &state.default_language;
    let documents = state
        .statuspage
        .default
        .get(generation, || {
            statuspage::render(&state.store, &state.page, None, default)
        })
        .await?;
    let documents = match negotiation.choose(&documents.translations) {
        None => documents,
        Some(language) => {
            let cache = state.statuspage.of(language);
            cache
                .get(generation, || {
                    statuspage::render(&state.store, &state.page, Some(language), default)
                })
                .await?
        }
    };
    Ok(language::mark(
        pick(&documents).respond(request),
        &documents.language,
    ))
}

async fn feed(
    state: &AppState,
    request: &HttpRequest,
    pick: fn(&FeedDocuments) -> &Document,
) -> Result<HttpResponse, ApiError> {
    let caller = Caller::from_request(request, &mut actix_web::dev::Payload::None).await?;
    state.limits.allow_read(caller.client_ip)?;
    let negotiation = language::negotiation(state, request)?;
    let viewer = caller.viewer();
    let default = &state.default_language;
    if viewer == Viewer::Public {
        let generation = state.document_generation();
        let documents = state
            .feeds
            .default
            .get(generation, || {
                feeds::render(&state.store, &state.page, &Viewer::Public, None, default)
            })
            .await?;
        let documents = match negotiation.choose(&documents.translations) {
            None => documents,
            Some(language) => {
                let cache = state.feeds.of(language);
                cache
                    .get(generation, || {
                        feeds::render(&state.store, &state.page, &viewer, Some(language), default)
                    })
                    .await?
            }
        };
        return Ok(language::mark(
            pick(&documents).respond(request),
            &documents.language,
        ));
    }
    // A key that sees more than the public: its own rendering, never shared.
    let documents = feeds::render(&state.store, &state.page, &viewer, None, default).await?;
    let documents = match negotiation.choose(&documents.translations) {
        None => documents,
        Some(language) => {
            let language = language.clone();
            feeds::render(&state.store, &state.page, &viewer, Some(&language), default).await?
        }
    };
    let response =
        pick(&documents).respond_cached_as(request, HeaderValue::from_static("private, max-age=5"));
    Ok(language::mark(response, &documents.language))
}

macro_rules! documented {
    ($(#[$doc:meta])* $name:ident, $path:literal, $id:literal, $tag:literal, $body:ty, $content:literal, $get:expr, $source:ident) => {
        $(#[$doc])*
        #[utoipa::path(
            operation_id = $id, get, path = $path, tag = $tag,
            params(("If-None-Match" = Option<String>, Header, description = "An ETag of an earlier answer: 304 if unchanged"),
                LanguageQuery, LanguageHeader),
            responses(
                (status = 200, body = $body, content_type = $content,
                    headers(("ETag" = String), ("Cache-Control" = String, description = "public, max-age=5"),
                        ("Content-Language" = String, description = "The language of the texts"))),
                (status = 304, description = "Not modified since the ETag sent"),
                crate::problem::documented::PublicDocumentProblems,
            )
        )]
        pub async fn $name(state: web::Data<AppState>, request: HttpRequest) -> Result<HttpResponse, ApiError> {
            $source(&state, &request, $get).await
        }
    };
}

documented!(
    /// Statuspage v2: the page, its components, unresolved incidents, upcoming and active
    /// maintenances, and the overall status.
    summary, "/api/v2/summary.json", "statuspage_summary", "statuspage",
    crate::statuspage::SpSummary, "application/json", |d| &d.summary, status_document
);
documented!(
    /// Statuspage v2: the overall status (`indicator` none, minor, major or critical).
    status, "/api/v2/status.json", "statuspage_status", "statuspage",
    crate::statuspage::SpStatusDocument, "application/json", |d| &d.status, status_document
);
documented!(
    /// Statuspage v2: every component (service, and group of services).
    components, "/api/v2/components.json", "statuspage_components", "statuspage",
    crate::statuspage::SpComponents, "application/json", |d| &d.components, status_document
);
documented!(
    /// Statuspage v2: the 50 most recent incidents.
    incidents, "/api/v2/incidents.json", "statuspage_incidents", "statuspage",
    crate::statuspage::SpIncidents, "application/json", |d| &d.incidents, status_document
);
documented!(
    /// Statuspage v2: the unresolved incidents.
    unresolved, "/api/v2/incidents/unresolved.json", "statuspage_unresolved_incidents", "statuspage",
    crate::statuspage::SpIncidents, "application/json", |d| &d.unresolved, status_document
);
documented!(
    /// Statuspage v2: the 50 most recent scheduled maintenances.
    maintenances, "/api/v2/scheduled-maintenances.json", "statuspage_maintenances", "statuspage",
    crate::statuspage::SpMaintenances, "application/json", |d| &d.maintenances, status_document
);
documented!(
    /// Statuspage v2: maintenances scheduled and not started.
    upcoming, "/api/v2/scheduled-maintenances/upcoming.json", "statuspage_upcoming_maintenances", "statuspage",
    crate::statuspage::SpMaintenances, "application/json", |d| &d.upcoming, status_document
);
documented!(
    /// Statuspage v2: maintenances in progress or verifying.
    active, "/api/v2/scheduled-maintenances/active.json", "statuspage_active_maintenances", "statuspage",
    crate::statuspage::SpMaintenances, "application/json", |d| &d.active, status_document
);
documented!(
    /// Atom 1.0 feed of the 50 newest updates of incidents and maintenances: public ones,
    /// and with a key its tenant's.
    atom, "/v1/feed.atom", "feed_atom", "feeds",
    String, "application/atom+xml", |d| &d.atom, feed
);
documented!(
    /// RSS 2.0 feed of the 50 newest updates of incidents and maintenances: public ones,
    /// and with a key its tenant's.
    rss, "/v1/feed.rss", "feed_rss", "feeds",
    String, "application/rss+xml", |d| &d.rss, feed
);
