//! The one middleware every request passes through, inside actix's compression: CORS
//! ([`crate::cors`]), then what [`crate::observe`] does (request id, metrics, problem+json
//! for every error, security headers), then the request's bounds ([`crate::limits`]) and
//! the database's readiness ([`crate::readiness`]), then the route.
//!
//! They are one layer rather than four because a layer of actix's `from_fn` boxes the
//! future of the layer inside it and calls it through a boxed service: on a public read
//! served from memory, four of them cost a measurable share of the request's CPU. The order
//! is the one the four layers had, outermost first: a preflight is answered before the
//! request gets an id, and a request refused for its size or for an unprepared database is
//! still counted, logged and given an id.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::Error;

use crate::{cors, limits, observe, readiness};

/// Wrap the app in it with `actix_web::middleware::from_fn(every_request)`.
pub async fn every_request(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    if let Some(answer) = cors::preflight_answer(&request) {
        return Ok(request.into_response(answer));
    }
    let cors_headers = cors::AnswerHeaders::for_request(&request);
    let mut response = observe::observed(request, |request| within_bounds(request, next)).await?;
    cors_headers.apply(response.headers_mut());
    Ok(response)
}

async fn within_bounds(
    mut request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let refusal = limits::head_refusal(&request).or_else(|| readiness::refusal(&request));
    if let Some(refusal) = refusal {
        return Ok(request.into_response(refusal));
    }
    let body_deadline = limits::BodyDeadline::set(&mut request);
    let response = next.call(request).await?.map_into_boxed_body();
    Ok(body_deadline.enforce(response))
}
