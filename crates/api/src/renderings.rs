//! The answers to `GET /v1/incidents/{id}` and `GET /v1/maintenances/{id}`, rendered once
//! per version and viewer and served from memory while the notice stays at that version.
//!
//! During an outage every client polls the incident it was told about. Each request still
//! asks the database for the notice's current version (so a write answered on any process
//! shows at once: read-your-writes), but those questions are batched ([`Coalesced`]) and the
//! answer is a version number, not a state to decode and serialize again. A version is one
//! state, and what a viewer sees of it depends only on that state, so bytes rendered for
//! (notice, viewer) at a version are the answer for as long as the version holds.

use std::future::Future;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use deadpool_postgres::Pool;
use domain::language::{Language, Negotiation};
use projections::queries::{self, NoticeTable, Viewer};
use serde::Serialize;
use uuid::Uuid;

use crate::coalesce::Coalesced;
use crate::documents::Payload;
use crate::problem::ApiError;

/// Bytes of renderings one table's cache keeps (with a rough per-entry overhead).
const RENDERINGS_BYTES: u64 = 32 << 20;
const ENTRY_OVERHEAD: u64 = 128;

/// A notice as one viewer sees it at one version in one language, ready to send.
#[derive(Debug)]
pub struct Rendering {
    pub version: u64,
    body: Payload,
    etag: HeaderValue,
    language: Language,
    /// The languages the notice has texts in besides the default one.
    translations: Vec<Language>,
}

impl Rendering {
    /// `body` rendered in `language`, of a notice that also has texts in `translations`.
    /// The default language's rendering has the version as `ETag` (`"3"`), the others the
    /// version and the language (`"3-cy"`): each representation its own validator.
    pub fn new<T: Serialize>(
        version: u64,
        body: &T,
        language: &Language,
        translations: &[Language],
        default: &Language,
    ) -> Result<Rendering, ApiError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| ApiError::internal_by("cannot render a notice", e))?;
        let etag = crate::extract::etag_in(version, language, default);
        let etag = HeaderValue::from_str(&etag)
            .map_err(|e| ApiError::internal_by("cannot render an ETag", e))?;
        Ok(Rendering {
            version,
            body: Payload::new(body),
            etag,
            language: language.clone(),
            translations: translations
                .iter()
                .filter(|l| *l != default)
                .cloned()
                .collect(),
        })
    }

    /// 200 with the bytes, or 304 when the client's `If-None-Match` names this version.
    pub fn respond(&self, request: &HttpRequest) -> HttpResponse {
        // What a notice shows depends on the key (a tenant's view is redacted): a cache
        // must not give one caller's answer to another.
        let vary = (header::VARY, self.body.vary());
        let response =
            if crate::extract::if_none_match_names(request, self.etag.to_str().unwrap_or_default())
            {
                HttpResponse::build(StatusCode::NOT_MODIFIED)
                    .insert_header((header::ETAG, self.etag.clone()))
                    .insert_header(vary)
                    .finish()
            } else {
                let mut response = HttpResponse::Ok();
                response
                    .insert_header((header::ETAG, self.etag.clone()))
                    .insert_header(vary)
                    .content_type("application/json");
                self.body.send(request, response)
            };
        crate::language::mark(response, &self.language)
    }
}

/// A rendering's place in the cache: the notice, the viewer, the language (`None`: the
/// default one).
type Key = (Uuid, Viewer, Option<Language>);

#[derive(Clone)]
struct RenderingWeight;

impl quick_cache::Weighter<Key, Arc<Rendering>> for RenderingWeight {
    fn weight(&self, (_, viewer, language): &Key, rendering: &Arc<Rendering>) -> u64 {
        let tenant = match viewer {
            Viewer::Tenant(tenant) => tenant.len(),
            _ => 0,
        };
        let language = language.as_ref().map_or(0, |l| l.as_str().len());
        rendering.body.weight() as u64 + (tenant + language) as u64 + ENTRY_OVERHEAD
    }
}

type Cache = quick_cache::sync::Cache<Key, Arc<Rendering>, RenderingWeight>;

/// The current renderings of one notice table.
pub struct Renderings {
    versions: Coalesced<Uuid, u64>,
    rendered: Cache,
}

impl Renderings {
    pub fn new(pool: Pool, table: NoticeTable) -> Renderings {
        Renderings {
            versions: Coalesced::new(move |ids: Vec<Uuid>| {
                let pool = pool.clone();
                async move {
                    let client = pool.get().await?;
                    Ok(queries::current_versions(&client, table, &ids).await?)
                }
            }),
            rendered: Cache::with_weighter(10_000, RENDERINGS_BYTES, RenderingWeight),
        }
    }

    /// The notice `id` as `viewer` sees it now, in the language `negotiation` chooses
    /// among those the notice has; `None` when there is no such notice or the viewer may not
    /// see it. `render(language)` reads and renders it in that language (`None`: the
    /// default) when memory has no rendering of the current version.
    pub async fn current<F, Fut>(
        &self,
        id: Uuid,
        viewer: &Viewer,
        negotiation: &Negotiation,
        render: F,
    ) -> Result<Option<Arc<Rendering>>, ApiError>
    where
        F: Fn(Option<Language>) -> Fut,
        Fut: Future<Output = Result<Option<Rendering>, ApiError>>,
    {
        let Some(version) = self.versions.get(id).await? else {
            return Ok(None);
        };
        // The default rendering says which languages the notice has.
        let Some(default) = self.at_version(id, viewer, None, version, &render).await? else {
            return Ok(None);
        };
        match negotiation.choose(&default.translations) {
            None => Ok(Some(default)),
            Some(language) => {
                let language = Some(language.clone());
                self.at_version(id, viewer, language, version, &render)
                    .await
            }
        }
    }

    async fn at_version<F, Fut>(
        &self,
        id: Uuid,
        viewer: &Viewer,
        language: Option<Language>,
        version: u64,
        render: &F,
    ) -> Result<Option<Arc<Rendering>>, ApiError>
    where
        F: Fn(Option<Language>) -> Fut,
        Fut: Future<Output = Result<Option<Rendering>, ApiError>>,
    {
        let key = (id, viewer.clone(), language.clone());
        if let Some(hit) = self.rendered.get(&key).filter(|r| r.version == version) {
            return Ok(Some(hit));
        }
        // Not cached when invisible: a viewer polling a notice it may not see is rare, and
        // the rendering would say nothing.
        let Some(rendering) = render(language).await? else {
            return Ok(None);
        };
        // At `version` or later (a write may have landed since): either way it is what that
        // version holds, so it may serve a later request that finds the same version.
        let rendering = Arc::new(rendering);
        self.rendered.insert(key, rendering.clone());
        Ok(Some(rendering))
    }
}
