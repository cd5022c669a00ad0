//! The OpenAPI 3.1 document, generated from the handlers' annotations: this module gives
//! its description, tags and security scheme, and each route module its operations. It is
//! served at `/openapi.json` and committed as `openapi/openapi.json` (a test keeps the two
//! equal, and the document's operations equal to the registered routes).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::problem;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Crier",
        description = "Incident communications: publish incidents, updates, corrections, \
maintenances and postmortems; read them as their audience may see them. Every change is an \
event in an append-only, hash-chained history.\n\n\
Errors are RFC 9457 `application/problem+json`. Every resource carries its `version`, served \
as `ETag`; writes accept `If-Match` (412 on mismatch) and `Idempotency-Key` on POST (the same \
key and body get the first answer with `Idempotent-Replayed: true`; another body, 422).",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(problem::Problem, problem::ProblemField)),
    modifiers(&BearerKey),
    tags(
        (name = "operations", description = "Health, readiness and metrics"),
        (name = "api-keys", description = "API keys (admin)"),
        (name = "services", description = "What users use, with a status derived from incidents and maintenances"),
        (name = "incidents", description = "Unplanned outages and their timelines"),
        (name = "maintenances", description = "Planned work"),
        (name = "statuspage", description = "Atlassian Statuspage's public Status API v2, for the widgets and integrations that read it: public notices only, cacheable (ETag, 304)"),
        (name = "subscriptions", description = "Notices as they happen: Server-Sent Events"),
        (name = "feeds", description = "Atom and RSS feeds of public updates"),
        (name = "subscribers", description = "People who receive notices by email: anyone subscribes an address, which confirms through a mailed link; every email has a one-click unsubscribe (RFC 8058) that erases the address everywhere; admins list, read and delete subscribers"),
        (name = "webhooks", description = "Notices POSTed to your endpoints as CloudEvents, signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature), at least once, in order per incident, retried with backoff (admin)"),
        (name = "status page", description = "The public status page people open: HTML, server-rendered, live through its own script on /v1/stream, in the reader's language; public notices only"),
        (name = "audit", description = "The hash-chained history for auditors, its verification and export, and signed checkpoints of it"),
    )
)]
pub struct ApiDoc;

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`crier_…`) from `POST /v1/api-keys` or `crier keys create`",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as `/openapi.json` serves it, built and serialized once per process: the
/// tree takes about 2 MB, and each worker's app would otherwise keep one (each listener's
/// dispatchers have an app of their own).
pub fn served() -> actix_web::web::Bytes {
    static SERVED: std::sync::OnceLock<actix_web::web::Bytes> = std::sync::OnceLock::new();
    SERVED
        .get_or_init(|| {
            // Serializing a document of plain maps and strings cannot fail.
            serde_json::to_vec(&document()).unwrap_or_default().into()
        })
        .clone()
}

/// The document as served and committed.
pub fn document() -> utoipa::openapi::OpenApi {
    crate::routes::documents()
        .into_iter()
        .fold(ApiDoc::openapi(), |document, module| {
            document.merge_from(module)
        })
}
