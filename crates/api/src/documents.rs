//! Documents everyone reads the same way (the Statuspage API, the feeds), rendered once and
//! served from memory until the global log moves.
//!
//! These pages take their heaviest load exactly during an outage, when every user's client
//! and every status widget polls them. A document is rendered from the read models, kept
//! with the generation it was rendered at (the log head this process knows, and the count
//! of this process's own writes), and served as the same bytes (with an `ETag` and a short
//! `max-age`, and 304 to `If-None-Match`) until the generation moves or it is a second old.
//! So a write shows at once on the process that took it, and on the others as soon as its
//! event is sealed (milliseconds; the one-second limit covers events that reach the read
//! models through the builder). Concurrent requests for a stale document wait for one
//! rendering. If the database is down, the last rendering keeps being served (without
//! waiting: a failed rendering is not retried for a second).
//!
//! A document of some size is also kept gzipped, compressed once with its rendering: every
//! browser and most HTTP clients ask for gzip, and compressing the same bytes again for each
//! of them (what the compression middleware would do) serves about 60 times fewer requests
//! a second than handing out the bytes compressed once.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix_web::http::header::{self, Encoding, Header, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use domain::language::Language;
use sha2::{Digest, Sha256};

use crate::problem::ApiError;

/// Longest a rendering is served without looking at the read models again.
const MAX_AGE_IN_MEMORY: Duration = Duration::from_secs(1);
/// How long after a failed rendering the last good one is served without trying again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// What clients and CDNs are told.
pub const CACHE_CONTROL: HeaderValue = HeaderValue::from_static("public, max-age=5");

/// The smallest body kept gzipped as well: below it the gain is small, and the compression
/// middleware compresses the few bytes per request cheaply.
const GZIP_FROM_BYTES: usize = 1024;

/// Bytes to send, and the same gzipped when they are large enough to gain from it.
#[derive(Debug)]
pub struct Payload {
    pub plain: Bytes,
    pub gzipped: Option<Bytes>,
}

impl Payload {
    pub fn new(body: Vec<u8>) -> Payload {
        Payload {
            gzipped: (body.len() >= GZIP_FROM_BYTES)
                .then(|| gzip(&body))
                .flatten()
                .map(Into::into),
            plain: body.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.plain.is_empty()
    }

    /// Bytes held, for caches that weigh their entries.
    pub fn weight(&self) -> usize {
        self.plain.len() + self.gzipped.as_ref().map_or(0, Bytes::len)
    }

    /// The `Vary` of an answer carrying these bytes to a caller whose key may see more than
    /// the public (`Authorization`).
    pub fn vary(&self) -> HeaderValue {
        if self.gzipped.is_some() {
            HeaderValue::from_static("Authorization, Accept-Encoding")
        } else {
            HeaderValue::from_static("Authorization")
        }
    }

    /// `response` finished with the bytes as `request` accepts them: gzipped when it takes
    /// gzip over the bytes as they are. A client taking only another coding (deflate) still
    /// gets it from the compression middleware.
    pub fn send(&self, request: &HttpRequest, mut response: HttpResponseBuilder) -> HttpResponse {
        match &self.gzipped {
            Some(gzipped) if accepts_gzip(request) => response
                .insert_header((header::CONTENT_ENCODING, HeaderValue::from_static("gzip")))
                .body(gzipped.clone()),
            _ => response.body(self.plain.clone()),
        }
    }
}

/// `body` gzipped (`None` only if the compressor fails, which writing to memory does not).
fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::default(),
    );
    encoder.write_all(body).ok()?;
    encoder.finish().ok()
}

/// Whether the request's `Accept-Encoding` takes gzip over the bytes as they are (RFC 9110
/// §12.5.3: q-values, `*`, `identity;q=0`). No header: the bytes as they are.
fn accepts_gzip(request: &HttpRequest) -> bool {
    let Some(value) = request.headers().get(header::ACCEPT_ENCODING) else {
        return false;
    };
    // What browsers send (`gzip, deflate, br, zstd`): no q-values, so the first of gzip and
    // identity listed wins, as the full negotiation below would have it, without parsing.
    if let Ok(text) = value.to_str() {
        if !text.contains([';', '*']) {
            let first = text.split(',').map(str::trim).find(|coding| {
                coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("identity")
            });
            if let Some(coding) = first {
                return coding.eq_ignore_ascii_case("gzip");
            }
        }
    }
    header::AcceptEncoding::parse(request).is_ok_and(|accepted| {
        accepted.negotiate([Encoding::gzip(), Encoding::identity()].iter())
            == Some(Encoding::gzip())
    })
}

/// One rendered document: its bytes (also gzipped) and their validator.
#[derive(Debug)]
pub struct Document {
    pub body: Payload,
    pub etag: HeaderValue,
    pub content_type: HeaderValue,
}

impl Document {
    pub fn new(body: Vec<u8>, content_type: &'static str) -> Document {
        let digest = Sha256::digest(&body);
        // Weak: the bytes may go out gzipped, and a strong validator names one exact
        // representation.
        let etag = format!("W/\"{}\"", hex::encode(&digest[..16]));
        Document {
            etag: HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("W/\"0\"")),
            body: Payload::new(body),
            content_type: HeaderValue::from_static(content_type),
        }
    }

    /// The answer: 304 when the client holds these bytes already.
    pub fn respond(&self, request: &HttpRequest) -> HttpResponse {
        self.respond_cached_as(request, CACHE_CONTROL)
    }

    /// The answer, with this `Cache-Control`.
    pub fn respond_cached_as(
        &self,
        request: &HttpRequest,
        cache_control: HeaderValue,
    ) -> HttpResponse {
        let matches =
            crate::extract::if_none_match_names(request, self.etag.to_str().unwrap_or_default());
        let mut response = if matches {
            HttpResponse::build(StatusCode::NOT_MODIFIED)
        } else {
            HttpResponse::Ok()
        };
        response
            .insert_header((header::ETAG, self.etag.clone()))
            .insert_header((header::CACHE_CONTROL, cache_control))
            .insert_header((header::VARY, self.body.vary()));
        if matches {
            response.finish()
        } else {
            response.insert_header((header::CONTENT_TYPE, self.content_type.clone()));
            self.body.send(request, response)
        }
    }
}

/// What a rendering is current for: the log head this process knows and the count of its
/// own writes (`AppState::document_generation`).
pub type Generation = (u64, u64);

struct Rendering<T> {
    generation: Generation,
    at: Instant,
    value: Arc<T>,
}

/// A value rendered from the read models, shared until the generation moves.
pub struct DocumentCache<T> {
    current: RwLock<Option<Rendering<T>>>,
    /// When rendering last failed.
    failed_at: RwLock<Option<Instant>>,
    /// Held while rendering, so that a stampede renders once.
    rendering: tokio::sync::Mutex<()>,
}

impl<T> Default for DocumentCache<T> {
    fn default() -> Self {
        DocumentCache {
            current: RwLock::new(None),
            failed_at: RwLock::new(None),
            rendering: tokio::sync::Mutex::new(()),
        }
    }
}

impl<T> DocumentCache<T> {
    fn fresh(&self, generation: Generation) -> Option<Arc<T>> {
        let current = self.current.read().ok()?;
        current
            .as_ref()
            .filter(|r| r.generation == generation && r.at.elapsed() < MAX_AGE_IN_MEMORY)
            .map(|r| r.value.clone())
    }

    fn last(&self) -> Option<Arc<T>> {
        let current = self.current.read().ok()?;
        current.as_ref().map(|r| r.value.clone())
    }

    fn failed_recently(&self) -> bool {
        self.failed_at
            .read()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < RETRY_AFTER_FAILURE)
    }

    /// The rendering for `generation`, rendering it with `render` if needed.
    pub async fn get<F, Fut>(&self, generation: Generation, render: F) -> Result<Arc<T>, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        if let Some(value) = self.fresh(generation) {
            return Ok(value);
        }
        // The database just failed: serve what there is rather than queue up behind it.
        if self.failed_recently() {
            if let Some(stale) = self.last() {
                return Ok(stale);
            }
        }
        let _rendering = self.rendering.lock().await;
        if let Some(value) = self.fresh(generation) {
            return Ok(value);
        }
        if self.failed_recently() {
            if let Some(stale) = self.last() {
                return Ok(stale);
            }
        }
        let started = Instant::now();
        match render().await {
            Ok(value) => {
                let value = Arc::new(value);
                if let Ok(mut current) = self.current.write() {
                    *current = Some(Rendering {
                        generation,
                        at: started,
                        value: value.clone(),
                    });
                }
                Ok(value)
            }
            Err(e) => {
                if let Ok(mut failed_at) = self.failed_at.write() {
                    *failed_at = Some(Instant::now());
                }
                match self.last() {
                    Some(stale) => {
                        tracing::warn!(error = %tasks::Chain(&e), "serving the last rendering: cannot render a new one");
                        Ok(stale)
                    }
                    None => Err(e),
                }
            }
        }
    }
}

/// Documents in the default language and, rendered when first asked for, in each other
/// language their notices have: a cache per language, so that a language costs a rendering
/// only when someone reads it. Languages come from the notices, never from requests, so a
/// client cannot make the cache grow.
pub struct LocalizedCache<T> {
    pub default: DocumentCache<T>,
    others: Mutex<HashMap<Language, Arc<DocumentCache<T>>>>,
}

impl<T> Default for LocalizedCache<T> {
    fn default() -> Self {
        LocalizedCache {
            default: DocumentCache::default(),
            others: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> LocalizedCache<T> {
    /// The cache of `language`, one of the languages the default documents list.
    pub fn of(&self, language: &Language) -> Arc<DocumentCache<T>> {
        let Ok(mut others) = self.others.lock() else {
            return Arc::new(DocumentCache::default());
        };
        others.entry(language.clone()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::accepts_gzip;

    fn accepts(value: Option<&str>) -> bool {
        let mut request = TestRequest::default();
        if let Some(value) = value {
            request = request.insert_header(("Accept-Encoding", value));
        }
        accepts_gzip(&request.to_http_request())
    }

    #[test]
    fn gzip_is_chosen_as_the_full_negotiation_would_choose_it() {
        for (value, gzip) in [
            (None, false),
            (Some("gzip"), true),
            (Some("gzip, deflate, br, zstd"), true),
            (Some("br, GZIP"), true),
            (Some("identity, gzip"), false),
            (Some("br"), false),
            (Some("gzip;q=0"), false),
            (Some("gzip;q=0.5, identity;q=1"), false),
            (Some("identity;q=0.5, gzip;q=0.8"), true),
            (Some("*"), false),
            (Some("*;q=0"), false),
            (Some(""), false),
        ] {
            assert_eq!(accepts(value), gzip, "{value:?}");
        }
    }
}
