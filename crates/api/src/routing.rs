//! How route modules register their routes.
//!
//! Each module under `routes` registers its own paths through [`Routes`], so that a route is
//! written in one place, beside its handler. A path is one actix resource: it answers the
//! methods registered for it, and any other method with 405 and the `Allow` header RFC 9110
//! asks for. [`Routes`] also records every (method, path) it registers, so that a test can
//! compare them with the OpenAPI document both ways.
//!
//! actix tries a request's path against its services in the order they were registered, and
//! a path with a `{segment}` is matched by a regular expression. So that a request does not
//! pay for the expressions of every other resource's path, [`Routes::register`] puts the
//! paths that begin with two fixed segments (`/v1/incidents/…`) in one scope per such
//! prefix: a scope is passed over by comparing its prefix, and only the paths inside the
//! request's own scope are tried. (The expressions are the `regex` crate's, through
//! actix-web's `unicode` feature: regex-lite's matcher was 4 % of a write's CPU.)

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, FromRequest, Handler, HttpResponse, Responder};

use crate::problem::Problem;

/// One method of a path and its handler.
pub struct Route {
    method: Method,
    /// Also answer `HEAD` with the same handler.
    with_head: Option<actix_web::Route>,
    route: actix_web::Route,
}

fn route<F, Args>(method: Method, handler: F) -> Route
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    Route {
        route: web::method(method.clone()).to(handler),
        method,
        with_head: None,
    }
}

pub fn get<F, Args>(handler: F) -> Route
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    route(Method::GET, handler)
}

/// `GET`, and `HEAD` with the same handler (actix sends no body for it).
pub fn get_and_head<F, Args>(handler: F) -> Route
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    let mut route = route(Method::GET, handler.clone());
    route.with_head = Some(web::head().to(handler));
    route
}

pub fn post<F, Args>(handler: F) -> Route
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    route(Method::POST, handler)
}

pub fn patch<F, Args>(handler: F) -> Route
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    route(Method::PATCH, handler)
}

pub fn delete<F, Args>(handler: F) -> Route
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    route(Method::DELETE, handler)
}

/// The registrar the route modules write to. Nothing reaches the app until
/// [`Routes::register`].
pub struct Routes<'a> {
    /// `None` when only recording (to check the OpenAPI document).
    config: Option<&'a mut web::ServiceConfig>,
    registered: Vec<(Method, String)>,
    /// In registration order; a scope stands where its first path was registered.
    services: Vec<Service>,
}

/// What [`Routes::register`] hands to actix.
enum Service {
    /// A path without two fixed segments to scope it by (`/`, `/assets/{name}`).
    Alone(actix_web::Resource),
    /// The paths under `prefix`, each written relative to it, in registration order.
    Scope {
        prefix: String,
        resources: Vec<actix_web::Resource>,
    },
}

/// `path` split into the scope it belongs in and its rest: its first two segments, when
/// both are fixed (`/v1/incidents/{id}` → `/v1/incidents` and `/{id}`; `/v1/webhooks` →
/// `/v1/webhooks` and the empty path).
fn scoped(path: &str) -> Option<(&str, &str)> {
    let mut ends = path
        .char_indices()
        .filter(|(_, c)| *c == '/')
        .map(|(at, _)| at)
        .skip(1)
        .chain([path.len()]);
    let (first, second) = (ends.next()?, ends.next()?);
    let prefix = &path[..second];
    let fixed = |segment: &str| !segment.is_empty() && !segment.contains('{');
    (path.starts_with('/') && fixed(&path[1..first]) && fixed(&path[first + 1..second]))
        .then(|| (prefix, &path[second..]))
}

impl<'a> Routes<'a> {
    pub fn new(config: &'a mut web::ServiceConfig) -> Routes<'a> {
        Routes {
            config: Some(config),
            registered: Vec::new(),
            services: Vec::new(),
        }
    }

    /// A registrar that only records what would be registered.
    pub fn recording() -> Routes<'static> {
        Routes {
            config: None,
            registered: Vec::new(),
            services: Vec::new(),
        }
    }

    /// Registers `path` with its methods.
    pub fn resource(&mut self, path: &str, routes: impl IntoIterator<Item = Route>) -> &mut Self {
        let routes: Vec<Route> = routes.into_iter().collect();
        self.registered
            .extend(routes.iter().map(|r| (r.method.clone(), path.to_owned())));
        if self.config.is_none() {
            return self;
        }
        let allow = allow(routes.iter().map(|r| &r.method));
        let (prefix, rest) = match scoped(path) {
            Some((prefix, rest)) => (Some(prefix), rest),
            None => (None, path),
        };
        let mut resource = web::resource(rest);
        for route in routes {
            resource = resource.route(route.route);
            if let Some(head) = route.with_head {
                resource = resource.route(head);
            }
        }
        let resource = resource.default_service(web::to(move || {
            let allow = allow.clone();
            async move { method_not_allowed(&allow) }
        }));
        let scope = prefix.and_then(|prefix| {
            self.services.iter_mut().find_map(|service| match service {
                Service::Scope {
                    prefix: p,
                    resources,
                } if p == prefix => Some(resources),
                _ => None,
            })
        });
        match (prefix, scope) {
            (_, Some(resources)) => resources.push(resource),
            (Some(prefix), None) => self.services.push(Service::Scope {
                prefix: prefix.to_owned(),
                resources: vec![resource],
            }),
            (None, _) => self.services.push(Service::Alone(resource)),
        }
        self
    }

    /// Hands every path registered to the app, in scopes (see the module doc).
    pub fn register(self) {
        let Some(config) = self.config else { return };
        for service in self.services {
            match service {
                Service::Alone(resource) => {
                    config.service(resource);
                }
                Service::Scope { prefix, resources } => {
                    let scope = (resources.into_iter())
                        .fold(web::scope(&prefix), |scope, resource| {
                            scope.service(resource)
                        });
                    config.service(scope);
                }
            }
        }
    }

    /// Every (method, path) registered so far.
    pub fn registered(&self) -> &[(Method, String)] {
        &self.registered
    }
}

/// The `Allow` value of a path with these methods, in a fixed order (`GET` implying
/// `HEAD`, as RFC 9110 expects of a server).
fn allow<'m>(methods: impl Iterator<Item = &'m Method>) -> String {
    let methods: Vec<&Method> = methods.collect();
    [
        (Method::GET, "GET, HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
    ]
    .into_iter()
    .filter(|(method, _)| methods.contains(&method))
    .map(|(_, name)| name)
    .collect::<Vec<_>>()
    .join(", ")
}

/// The answer for a known path with a method it does not have.
fn method_not_allowed(allow: &str) -> HttpResponse {
    let mut answer = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this path does not support this method",
    )
    .response();
    if let Ok(allow) = HeaderValue::from_str(allow) {
        answer.headers_mut().insert(header::ALLOW, allow);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_scoped_by_their_first_two_fixed_segments() {
        assert_eq!(
            scoped("/v1/incidents/{id}/updates"),
            Some(("/v1/incidents", "/{id}/updates"))
        );
        assert_eq!(scoped("/v1/incidents"), Some(("/v1/incidents", "")));
        assert_eq!(
            scoped("/api/v2/summary.json"),
            Some(("/api/v2", "/summary.json"))
        );
        for alone in [
            "/",
            "/healthz",
            "/incidents/{id}",
            "/assets/{name}",
            "/{a}/b/c",
        ] {
            assert_eq!(scoped(alone), None, "{alone}");
        }
    }

    #[test]
    fn allow_lists_the_methods_in_a_fixed_order() {
        let methods = [Method::DELETE, Method::GET, Method::PATCH];
        assert_eq!(allow(methods.iter()), "GET, HEAD, PATCH, DELETE");
        assert_eq!(allow([Method::POST].iter()), "POST");
    }
}
