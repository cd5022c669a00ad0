//! How route modules register their routes.
//!
//! Each module under `routes` registers its own paths through [`Routes`], so that a route is
//! written in one place, beside its handler. A path is one actix resource: it answers the
//! methods registered for it, and any other method with 405 and the `Allow` header RFC 9110
//! asks for. [`Routes`] also records every (method, path) it registers, so that a test can
//! compare them with the OpenAPI document both ways.

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

/// The registrar the route modules write to.
pub struct Routes<'a> {
    /// `None` when only recording (to check the OpenAPI document).
    config: Option<&'a mut web::ServiceConfig>,
    registered: Vec<(Method, String)>,
}

impl<'a> Routes<'a> {
    pub fn new(config: &'a mut web::ServiceConfig) -> Routes<'a> {
        Routes {
            config: Some(config),
            registered: Vec::new(),
        }
    }

    /// A registrar that only records what would be registered.
    pub fn recording() -> Routes<'static> {
        Routes {
            config: None,
            registered: Vec::new(),
        }
    }

    /// Registers `path` with its methods.
    pub fn resource(&mut self, path: &str, routes: impl IntoIterator<Item = Route>) -> &mut Self {
        let routes: Vec<Route> = routes.into_iter().collect();
        self.registered
            .extend(routes.iter().map(|r| (r.method.clone(), path.to_owned())));
        let Some(config) = self.config.as_deref_mut() else {
            return self;
        };
        let allow = allow(routes.iter().map(|r| &r.method));
        let mut resource = web::resource(path);
        for route in routes {
            resource = resource.route(route.route);
            if let Some(head) = route.with_head {
                resource = resource.route(head);
            }
        }
        config.service(resource.default_service(web::to(move || {
            let allow = allow.clone();
            async move { method_not_allowed(&allow) }
        })));
        self
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
    fn allow_lists_the_methods_in_a_fixed_order() {
        let methods = [Method::DELETE, Method::GET, Method::PATCH];
        assert_eq!(allow(methods.iter()), "GET, HEAD, PATCH, DELETE");
        assert_eq!(allow([Method::POST].iter()), "POST");
    }
}
