//! Documents everyone reads the same way (the Statuspage API, the feeds), rendered once and
//! served from memory until the global log moves.
//!
//! These pages take their heaviest load exactly during an outage, when every user's client
//! and every status widget polls them. A document is rendered from the read models, kept
//! with the log head it was rendered at, and served as the same bytes (with an `ETag` and a
//! short `max-age`, and 304 to `If-None-Match`) until the head moves or it is a second old
//! (a write by another process may reach the read models a moment after the head, through
//! the builder). Concurrent requests for a stale document wait for one rendering. If the
//! database is down, the last rendering keeps being served.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use crate::problem::ApiError;

/// Longest a rendering is served without looking at the read models again.
const MAX_AGE_IN_MEMORY: Duration = Duration::from_secs(1);
/// What clients and CDNs are told.
pub const CACHE_CONTROL: &str = "public, max-age=5";

/// One rendered document: its bytes and their strong validator.
#[derive(Debug)]
pub struct Document {
    pub body: actix_web::web::Bytes,
    pub etag: HeaderValue,
    pub content_type: &'static str,
}

impl Document {
    pub fn new(body: Vec<u8>, content_type: &'static str) -> Document {
        let digest = Sha256::digest(&body);
        let etag = format!("\"{}\"", hex::encode(&digest[..16]));
        Document {
            etag: HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\"")),
            body: body.into(),
            content_type,
        }
    }

    /// The answer: 304 when the client holds these bytes already.
    pub fn respond(&self, request: &HttpRequest) -> HttpResponse {
        let matches = request
            .headers()
            .get_all(header::IF_NONE_MATCH)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|tag| tag.trim().trim_start_matches("W/"))
            .any(|tag| tag == "*" || tag.as_bytes() == self.etag.as_bytes());
        let mut response = if matches {
            HttpResponse::build(StatusCode::NOT_MODIFIED)
        } else {
            HttpResponse::Ok()
        };
        response
            .insert_header((header::ETAG, self.etag.clone()))
            .insert_header((header::CACHE_CONTROL, CACHE_CONTROL));
        if matches {
            response.finish()
        } else {
            response
                .content_type(self.content_type)
                .body(self.body.clone())
        }
    }
}

struct Rendering<T> {
    head: u64,
    at: Instant,
    value: Arc<T>,
}

/// A value rendered from the read models, shared until the log head moves.
pub struct Published<T> {
    current: RwLock<Option<Rendering<T>>>,
    /// Held while rendering, so that a stampede renders once.
    rendering: tokio::sync::Mutex<()>,
}

impl<T> Default for Published<T> {
    fn default() -> Self {
        Published {
            current: RwLock::new(None),
            rendering: tokio::sync::Mutex::new(()),
        }
    }
}

impl<T> Published<T> {
    fn fresh(&self, head: u64) -> Option<Arc<T>> {
        let current = self.current.read().ok()?;
        current
            .as_ref()
            .filter(|r| r.head == head && r.at.elapsed() < MAX_AGE_IN_MEMORY)
            .map(|r| r.value.clone())
    }

    fn last(&self) -> Option<Arc<T>> {
        let current = self.current.read().ok()?;
        current.as_ref().map(|r| r.value.clone())
    }

    /// The rendering for log head `head`, rendering it with `render` if needed.
    pub async fn get<F, Fut>(&self, head: u64, render: F) -> Result<Arc<T>, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        if let Some(value) = self.fresh(head) {
            return Ok(value);
        }
        let _rendering = self.rendering.lock().await;
        if let Some(value) = self.fresh(head) {
            return Ok(value);
        }
        let started = Instant::now();
        match render().await {
            Ok(value) => {
                let value = Arc::new(value);
                if let Ok(mut current) = self.current.write() {
                    *current = Some(Rendering {
                        head,
                        at: started,
                        value: value.clone(),
                    });
                }
                Ok(value)
            }
            Err(e) => match self.last() {
                Some(stale) => {
                    tracing::warn!(error = %e, "serving the last rendering: cannot render a new one");
                    Ok(stale)
                }
                None => Err(e),
            },
        }
    }
}
