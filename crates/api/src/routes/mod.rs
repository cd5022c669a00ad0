//! The handlers, one module per resource. Each module registers its own paths
//! (`configure`) and lists its operations for the OpenAPI document (`Doc`); no module here
//! imports another.

pub mod audit;
pub mod incidents;
pub mod keys;
pub mod maintenances;
pub mod operations;
pub mod public;
pub mod services;
pub mod stream;
pub mod subscribers;
pub mod templates;
pub mod webhooks;

use utoipa::OpenApi;

use crate::routing::Routes;

/// Registers every module's routes.
///
/// actix tries a request's path against the resources in the order they were registered,
/// and a path with a `{segment}` costs a regular-expression match: the reads that carry an
/// outage's load (the Statuspage documents and feeds, the status page, the stream) come
/// first, so that they are found before any such match is tried (`benches/public/summary.sh`:
/// the regular expressions of the routes before them were 15 % of the server's CPU), and
/// [`Routes::register`] scopes the rest so that a request tries only its own scope's.
pub fn configure(routes: &mut Routes<'_>) {
    public::configure(routes);
    crate::status_page::configure(routes);
    stream::configure(routes);
    operations::configure(routes);
    keys::configure(routes);
    webhooks::configure(routes);
    subscribers::configure(routes);
    templates::configure(routes);
    services::configure(routes);
    incidents::configure(routes);
    maintenances::configure(routes);
    audit::configure(routes);
}

/// Every module's operations, in the order the document lists them.
pub fn documents() -> Vec<utoipa::openapi::OpenApi> {
    vec![
        operations::Doc::openapi(),
        keys::Doc::openapi(),
        services::Doc::openapi(),
        incidents::Doc::openapi(),
        maintenances::Doc::openapi(),
        audit::Doc::openapi(),
        public::Doc::openapi(),
        stream::Doc::openapi(),
        webhooks::Doc::openapi(),
        subscribers::Doc::openapi(),
        templates::Doc::openapi(),
        crate::status_page::Doc::openapi(),
    ]
}

/// Every (method, path) the routes register, `GET` implying `HEAD`.
pub fn registered() -> Vec<(String, String)> {
    let mut routes = Routes::recording();
    configure(&mut routes);
    routes
        .registered()
        .iter()
        .map(|(method, path)| (method.as_str().to_ascii_lowercase(), path.clone()))
        .collect()
}
