//! The public status page: `GET /` (overall status, services by group with their 90-day
//! uptime, open incidents, maintenances, the email subscription form, a language switch),
//! `GET /incidents/{id}` (one incident's whole timeline and postmortem) and `GET /history`
//! (resolved incidents, newest first, paged). Public notices only, whatever key is sent.
//!
//! Server-rendered from templates (minijinja, escaping every value of the `.html`
//! templates), complete without JavaScript. `/assets/live.js`, Crier's own script, listens
//! on `/v1/stream` from the position the page was rendered at (the browser resumes with
//! `Last-Event-ID` after a drop) and on each notice fetches the page again and swaps its
//! live sections, announcing the change politely (`aria-live`) without moving focus.
//! Nothing is loaded from another origin: the answers carry a strict
//! `Content-Security-Policy`.
//!
//! `GET /` is rendered once per generation and language and served from memory like the
//! Statuspage documents (`documents`: `ETag`, 304); incident and history pages are kept per
//! generation, language and page in a small cache. Uptime bars are folded from the history
//! (`projections::uptime`) while rendering.

mod words;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use domain::incident::Incident;
use domain::language::Language;
use domain::maintenance::Maintenance;
use domain::values::{ClientActionKind, ServiceStatus};
use minijinja::Environment;
use projections::queries::{
    self, IncidentFilter, IncidentState, MaintenanceState, ServiceView, Viewer,
};
use projections::uptime::{self, Uptime};
use projections::Versioned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, OpenApi};
use uuid::Uuid;

use crate::documents::{Document, Generation};
use crate::language;
use crate::paging;
use crate::problem::ApiError;
use crate::routing::{self, Routes};
use crate::state::AppState;
use crate::statuspage::localized;
pub use words::{words, Words};

/// What a page may load and do: only its own styles, script and stream, forms posted to
/// itself, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'; object-src 'none'";
/// The days of an uptime bar.
const UPTIME_DAYS: u32 = uptime::MAX_DAYS;
/// Most open incidents and maintenances a page shows.
const OPEN: usize = 100;
/// Resolved incidents per history page.
const HISTORY_PAGE: usize = 20;
/// Incident and history pages kept in memory (per generation, language and page).
const PAGES_KEPT: usize = 128;
/// Assets change only with the binary.
const ASSET_CACHE_CONTROL: HeaderValue = HeaderValue::from_static("public, max-age=3600");

/// The index page in one language, as rendered at one generation.
pub struct IndexDocument {
    pub language: Language,
    /// Every language the page can be read in besides the default one.
    pub translations: Vec<Language>,
    pub page: Document,
}

/// Each service's status changes over the uptime window.
pub type ServiceChanges = std::collections::HashMap<Uuid, Vec<uptime::Change>>;

/// Every service's status changes over the last 90 days as the public sees them, folded
/// from the history once per generation (and at most a second old), so that neither the
/// page nor the uptime endpoint reads the streams again for each request.
pub async fn public_changes(state: &AppState) -> Result<Arc<ServiceChanges>, ApiError> {
    state
        .public_uptime
        .get(state.document_generation(), || async {
            let client = state.store.pool().get().await?;
            let since = Utc::now() - chrono::Duration::days(i64::from(UPTIME_DAYS));
            Ok(uptime::service_changes(&client, &Viewer::Public, since).await?)
        })
        .await
}

/// Incident and history pages as last rendered.
pub type PageRenderings = quick_cache::sync::Cache<(Generation, String, Language), Arc<Document>>;

pub fn page_renderings() -> PageRenderings {
    quick_cache::sync::Cache::new(PAGES_KEPT)
}

pub fn configure(routes: &mut Routes<'_>) {
    routes
        .resource("/", [routing::get_and_head(index)])
        .resource("/incidents/{id}", [routing::get_and_head(incident_page)])
        .resource("/history", [routing::get_and_head(history)])
        .resource("/assets/{name}", [routing::get_and_head(asset)]);
}

#[derive(OpenApi)]
#[openapi(paths(index, incident_page, history, asset))]
pub struct Doc;

fn environment() -> &'static Environment<'static> {
    static ENVIRONMENT: OnceLock<Environment<'static>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in [
            ("layout.html", include_str!("templates/layout.html")),
            ("parts.html", include_str!("templates/parts.html")),
            ("index.html", include_str!("templates/index.html")),
            ("incident.html", include_str!("templates/incident.html")),
            ("history.html", include_str!("templates/history.html")),
            ("message.html", include_str!("templates/message.html")),
        ] {
            // The templates are part of the binary and rendered by the tests.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "a page template does not parse");
            }
        }
        env
    })
}

fn render(name: &str, values: &Value) -> Result<String, ApiError> {
    environment()
        .get_template(name)
        .and_then(|template| {
            template.render(minijinja::Value::from(minijinja::value::Serde(values)))
        })
        .map_err(|e| ApiError::internal_by("cannot render the status page", e))
}

/// The headers every page and asset carries.
fn secured(mut response: HttpResponse) -> HttpResponse {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    response
}

fn html(body: String) -> Document {
    Document::new(body.into_bytes(), "text/html; charset=utf-8")
}

/// `at` as the pages show it (UTC, to the minute), and as `<time datetime>` takes it.
fn time(at: &DateTime<Utc>) -> Value {
    json!({
        "iso": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "shown": at.format("%Y-%m-%d %H:%M UTC").to_string(),
    })
}

fn serde_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        _ => String::new(),
    }
}

/// A status or other enumerated value for the page: its name (for the style) and its
/// words in the page's language.
fn term(language: &str, name: &str) -> Value {
    json!({ "name": name, "label": delivery::chat::term(language, name) })
}

/// The languages offered by the switch: the page's own words' and every notice's.
fn switch(current: &Language, default: &Language, translations: &[Language], path: &str) -> Value {
    let mut tags: Vec<String> = vec![default.as_str().to_owned()];
    for tag in words::LANGUAGES.iter().map(|(tag, _)| (*tag).to_owned()) {
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    for language in translations {
        if !tags.iter().any(|t| t == language.as_str()) {
            tags.push(language.as_str().to_owned());
        }
    }
    let separator = if path.contains('?') { '&' } else { '?' };
    let languages: Vec<Value> = tags
        .iter()
        .map(|tag| {
            let name = words::LANGUAGES
                .iter()
                .find(|(t, _)| t == tag)
                .map_or(tag.as_str(), |(_, name)| name);
            json!({
                "tag": tag,
                "name": name,
                "href": format!("{path}{separator}lang={tag}"),
                "current": tag == current.as_str(),
            })
        })
        .collect();
    Value::Array(languages)
}

/// What every page's layout shows.
fn layout(state: &AppState, language: &Language, words: &Words, position: u64) -> Value {
    json!({
        "lang": language.as_str(),
        "page_name": state.page.name,
        "words": words,
        "position": position,
    })
}

/// Each service's name by its id.
fn service_names(services: &[ServiceView]) -> BTreeMap<Uuid, String> {
    (services.iter())
        .map(|s| (s.service.id, s.service.state.name.clone()))
        .collect()
}

fn incident_value(
    incident: &Versioned<Incident>,
    language: &str,
    names: &BTreeMap<Uuid, String>,
) -> Value {
    let i = &incident.state;
    let mut updates: Vec<Value> = (i.updates.iter())
        .map(|u| {
            json!({
                "status": term(language, u.status.as_str()),
                "message": u.message,
                "at": time(&u.created_at),
                "corrections": (u.corrections.iter()).map(|c| json!({
                    "message": c.message,
                    "reason": c.reason,
                    "at": time(&c.created_at),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    updates.reverse();
    let action = (i.client_action.kind != ClientActionKind::None
        && !i.client_action.message.trim().is_empty())
    .then(|| {
        json!({
            "kind": serde_name(&i.client_action.kind),
            "message": i.client_action.message,
        })
    });
    json!({
        "id": incident.id,
        "title": i.title,
        "status": term(language, i.status.as_str()),
        "impact": term(language, &serde_name(&i.impact)),
        "open": i.status.is_open(),
        "action": action,
        "affected": (i.affected_services.iter()).map(|a| json!({
            "name": names.get(&a.service_id).cloned().unwrap_or_else(|| a.service_id.to_string()),
            "status": term(language, a.status.as_str()),
        })).collect::<Vec<_>>(),
        "started": time(&i.started_at),
        "resolved": i.resolved_at.as_ref().map(time),
        "updates": updates,
        "postmortem": i.postmortem.as_ref().map(|p| json!({
            "body": p.body,
            "at": time(&p.published_at),
        })),
    })
}

fn maintenance_value(
    maintenance: &Versioned<Maintenance>,
    language: &str,
    names: &BTreeMap<Uuid, String>,
) -> Value {
    let m = &maintenance.state;
    let latest = m.updates.iter().last().map(|u| u.message.clone());
    json!({
        "id": maintenance.id,
        "title": m.title,
        "status": term(language, m.status.as_str()),
        "starts": time(&m.starts_at),
        "ends": time(&m.ends_at),
        "message": latest,
        "affected": (m.affected_services.iter())
            .map(|id| names.get(id).cloned().unwrap_or_else(|| id.to_string()))
            .collect::<Vec<_>>(),
    })
}

fn status_class(status: ServiceStatus) -> &'static str {
    match status {
        ServiceStatus::Operational => "ok",
        ServiceStatus::DegradedPerformance => "degraded",
        ServiceStatus::UnderMaintenance => "maintenance",
        ServiceStatus::PartialOutage => "partial",
        ServiceStatus::MajorOutage => "major",
    }
}

/// An uptime as a bar of runs of days alike (few elements, whatever the history), the
/// days before the service existed first, and the days that had incidents as a list.
fn uptime_value(
    uptime: &Uptime,
    language: &str,
    titles: &BTreeMap<Uuid, String>,
    words: &Words,
) -> Value {
    let mut runs: Vec<(String, usize)> = Vec::new();
    let missing = (UPTIME_DAYS as usize).saturating_sub(uptime.days.len());
    if missing > 0 {
        runs.push(("none".to_owned(), missing));
    }
    for day in &uptime.days {
        let class = status_class(day.worst_status);
        match runs.last_mut() {
            Some((last, count)) if last == class => *count += 1,
            _ => runs.push((class.to_owned(), 1)),
        }
    }
    let troubled: Vec<Value> = (uptime.days.iter().rev())
        .filter(|d| !d.incident_ids.is_empty() || d.uptime_percent < 100.0)
        .map(|d| {
            json!({
                "date": d.date.to_string(),
                "percent": format!("{:.2}", d.uptime_percent),
                "worst": term(language, d.worst_status.as_str()),
                "incidents": (d.incident_ids.iter()).map(|id| json!({
                    "id": id,
                    "title": titles.get(id).cloned().unwrap_or_else(|| words.incident.to_owned()),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "percent": format!("{:.2}", uptime.uptime_percent),
        "runs": runs.iter().map(|(class, days)| json!({"class": class, "days": days})).collect::<Vec<_>>(),
        "troubled": troubled,
    })
}

/// Renders `GET /` in `language` (`None`: the default) from the public read models.
async fn render_index(
    state: &AppState,
    language: Option<&Language>,
    position: u64,
) -> Result<IndexDocument, ApiError> {
    let default = &state.default_language;
    let shown = language.unwrap_or(default);
    let tag = shown.as_str();
    let words = words(tag);
    let client = state.store.pool().get().await?;
    let viewer = Viewer::Public;
    let services = queries::services(&client, &viewer).await?;
    let open = queries::incidents(&client, &viewer, IncidentState::Open, OPEN).await?;
    let recent = queries::incidents(&client, &viewer, IncidentState::All, OPEN).await?;
    let active = queries::maintenances_page(&client, &viewer, MaintenanceState::Active, None, OPEN)
        .await?
        .items;
    let upcoming = queries::soonest_upcoming_maintenances(&client, &viewer, OPEN).await?;
    drop(client);
    let now = Utc::now();
    let changes = public_changes(state).await?;

    let mut translations: std::collections::BTreeSet<Language> = Default::default();
    for incident in open.iter().chain(&recent) {
        translations.extend(incident.state.languages().into_iter().cloned());
    }
    for maintenance in active.iter().chain(&upcoming) {
        translations.extend(maintenance.state.languages().into_iter().cloned());
    }
    for (tag, _) in words::LANGUAGES {
        if let Ok(language) = Language::parse("lang", tag) {
            translations.insert(language);
        }
    }
    translations.remove(default);

    let open = localized(open, language, Incident::in_language);
    let recent = localized(recent, language, Incident::in_language);
    let maintenances = localized(
        active.into_iter().chain(upcoming).collect(),
        language,
        Maintenance::in_language,
    );
    let names = service_names(&services);
    let titles: BTreeMap<Uuid, String> = (open.iter().chain(&recent))
        .map(|i| (i.id, i.state.title.clone()))
        .collect();

    // Services by group, in the order the read model keeps them; ungrouped ones last.
    let mut groups: Vec<(Option<String>, Vec<Value>)> = Vec::new();
    let mut worst = ServiceStatus::Operational;
    for view in &services {
        let service = &view.service;
        if view.status.severity() > worst.severity() {
            worst = view.status;
        }
        let history = changes.get(&service.id).map_or(&[][..], Vec::as_slice);
        let uptime = uptime::uptime(
            service.id,
            service.state.created_at,
            now,
            UPTIME_DAYS,
            history,
        );
        let value = json!({
            "id": service.id,
            "name": service.state.name,
            "description": service.state.description,
            "status": term(tag, view.status.as_str()),
            "uptime": uptime_value(&uptime, tag, &titles, words),
        });
        let group = service.state.group.clone();
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, list)) => list.push(value),
            None => groups.push((group, vec![value])),
        }
    }
    groups.sort_by_key(|(group, _)| group.is_none());
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(group, services)| json!({"name": group.unwrap_or_else(|| words.ungrouped.to_owned()), "services": services}))
        .collect();

    let incidents: Vec<Value> = (open.iter())
        .map(|i| incident_value(i, tag, &names))
        .collect();
    let maintenance: Vec<Value> = (maintenances.iter())
        .map(|m| maintenance_value(m, tag, &names))
        .collect();
    let translations: Vec<Language> = translations.into_iter().collect();
    let mut values = layout(state, shown, words, position);
    values["switch"] = switch(shown, default, &translations, "/");
    values["overall"] = json!({
        "class": status_class(worst),
        "headline": words.overall(worst),
    });
    values["groups"] = Value::Array(groups);
    values["incidents"] = Value::Array(incidents);
    values["maintenance"] = Value::Array(maintenance);
    values["services"] = Value::Array(
        (services.iter())
            .map(|s| json!({"id": s.service.id, "name": s.service.state.name}))
            .collect(),
    );
    values["subscribe"] = json!(state.email.is_some());
    values["updated"] = time(&now);
    let body = render("index.html", &values)?;
    Ok(IndexDocument {
        language: shown.clone(),
        translations,
        page: html(body),
    })
}

/// The status page: the overall status, every service by group with its status and 90-day
/// uptime, the open incidents (updates newest first, the client action set apart,
/// corrections marked with the earlier texts reachable), active and upcoming
/// maintenances, the email subscription form and a language switch. HTML, complete
/// without JavaScript; public notices only.
#[utoipa::path(
    operation_id = "status_page", get, path = "/", tag = "status page",
    params(crate::language::LanguageQuery, crate::language::LanguageHeader),
    responses(
        (status = 200, description = "The status page", content_type = "text/html"),
        (status = 304, description = "Not modified (`If-None-Match`)"),
        crate::problem::documented::PageProblems,
    ),
    security(())
)]
pub async fn index(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state
        .limits
        .allow_read(state.limits.client_address(&request))?;
    let negotiation = language::negotiation(&state, &request)?;
    let generation = state.document_generation();
    let documents = state
        .status_page
        .default
        .get(generation, || render_index(&state, None, generation.0))
        .await?;
    let documents = match negotiation.choose(&documents.translations) {
        None => documents,
        Some(language) => {
            let cache = state.status_page.of(language);
            cache
                .get(generation, || {
                    render_index(&state, Some(language), generation.0)
                })
                .await?
        }
    };
    Ok(secured(language::mark(
        documents.page.respond(&request),
        &documents.language,
    )))
}

/// The language a page other than the index is rendered in: one the page's words or the
/// default language have (a notice's own translations show where it has them).
fn page_language(state: &AppState, request: &HttpRequest) -> Result<Language, ApiError> {
    let negotiation = language::negotiation(state, request)?;
    let offered: Vec<Language> = (words::LANGUAGES.iter())
        .filter_map(|(tag, _)| Language::parse("lang", tag).ok())
        .filter(|l| *l != state.default_language)
        .collect();
    Ok(negotiation.tag(negotiation.choose(&offered)))
}

/// What every page but the index starts with: the client's read allowance, and the
/// language and words the page is rendered in.
fn page_request(
    state: &AppState,
    request: &HttpRequest,
) -> Result<(Language, &'static Words), ApiError> {
    state
        .limits
        .allow_read(state.limits.client_address(request))?;
    let language = page_language(state, request)?;
    let words = words(language.as_str());
    Ok((language, words))
}

/// A page kept per generation, language and `key`, rendered by `render` when missing.
async fn kept_page<F, Fut>(
    state: &AppState,
    key: String,
    language: &Language,
    render: F,
) -> Result<Arc<Document>, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Document, ApiError>>,
{
    let cache_key = (state.document_generation(), key, language.clone());
    state
        .page_renderings
        .get_or_insert_async(&cache_key, async { render().await.map(Arc::new) })
        .await
}

fn message_page(
    state: &AppState,
    language: &Language,
    status: StatusCode,
    title: &str,
    text: &str,
) -> HttpResponse {
    let words = words(language.as_str());
    let mut values = layout(state, language, words, 0);
    values["title"] = json!(title);
    values["text"] = json!(text);
    match render("message.html", &values) {
        Ok(body) => secured(
            HttpResponse::build(status)
                .content_type("text/html; charset=utf-8")
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .insert_header((header::CONTENT_LANGUAGE, language.as_str().to_owned()))
                .body(body),
        ),
        Err(_) => HttpResponse::build(status)
            .content_type("text/plain; charset=utf-8")
            .body(format!("{title}\n\n{text}\n")),
    }
}

/// One incident's page: its whole timeline, newest first, with corrections and the
/// postmortem. Public incidents only.
#[utoipa::path(
    operation_id = "incident_page", get, path = "/incidents/{id}", tag = "status page",
    params(("id" = String, Path), crate::language::LanguageQuery, crate::language::LanguageHeader),
    responses(
        (status = 200, description = "The incident's page", content_type = "text/html"),
        (status = 304, description = "Not modified (`If-None-Match`)"),
        (status = 404, description = "No such public incident: a page saying so", content_type = "text/html"),
        crate::problem::documented::PageProblems,
    ),
    security(())
)]
pub async fn incident_page(
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (language, words) = page_request(&state, &request)?;
    let Ok(id) = id.parse::<Uuid>() else {
        return Ok(message_page(
            &state,
            &language,
            StatusCode::NOT_FOUND,
            words.incident,
            "404",
        ));
    };
    let position = state.document_generation().0;
    let rendered = kept_page(&state, format!("incident/{id}"), &language, || async {
        let client = state.store.pool().get().await?;
        let Some(incident) = queries::incident(&client, id, &Viewer::Public).await? else {
            return Ok(Document::new(Vec::new(), "text/html; charset=utf-8"));
        };
        let services = queries::services(&client, &Viewer::Public).await?;
        drop(client);
        let names = service_names(&services);
        let chosen = (language != state.default_language).then_some(&language);
        let incident = Versioned {
            state: incident.state.in_language(chosen),
            ..incident
        };
        let mut values = layout(&state, &language, words, position);
        values["switch"] = switch(
            &language,
            &state.default_language,
            &[],
            &format!("/incidents/{id}"),
        );
        values["incident"] = incident_value(&incident, language.as_str(), &names);
        Ok(html(render("incident.html", &values)?))
    })
    .await?;
    if rendered.body.is_empty() {
        return Ok(message_page(
            &state,
            &language,
            StatusCode::NOT_FOUND,
            words.incident,
            "404",
        ));
    }
    Ok(secured(language::mark(
        rendered.respond(&request),
        &language,
    )))
}

/// Which page of the history.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// The `Older incidents` link of the page before.
    pub cursor: Option<String>,
}

/// The resolved incidents, newest first, 20 a page. Public incidents only.
#[utoipa::path(
    operation_id = "history_page", get, path = "/history", tag = "status page",
    params(HistoryQuery, crate::language::LanguageQuery, crate::language::LanguageHeader),
    responses(
        (status = 200, description = "A page of past incidents", content_type = "text/html"),
        (status = 304, description = "Not modified (`If-None-Match`)"),
        crate::problem::documented::PageProblems,
    ),
    security(())
)]
pub async fn history(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let (language, words) = page_request(&state, &request)?;
    let after = paging::decode_cursor::<(DateTime<Utc>, Uuid)>(query.cursor.as_deref())?;
    let position = state.document_generation().0;
    let key = format!("history/{}", query.cursor.as_deref().unwrap_or_default());
    let rendered = kept_page(&state, key, &language, || async {
        let client = state.store.pool().get().await?;
        let filter = IncidentFilter {
            state: IncidentState::Resolved,
            after,
            ..Default::default()
        };
        let page = queries::incidents_page(&client, &Viewer::Public, &filter, HISTORY_PAGE).await?;
        let services = queries::services(&client, &Viewer::Public).await?;
        drop(client);
        let names = service_names(&services);
        let next = paging::next_cursor(&page, |last| (last.state.started_at, last.id));
        let chosen = (language != state.default_language).then_some(&language);
        let incidents: Vec<Value> = (localized(page.items, chosen, Incident::in_language).iter())
            .map(|i| incident_value(i, language.as_str(), &names))
            .collect();
        let mut values = layout(&state, &language, words, position);
        values["switch"] = switch(&language, &state.default_language, &[], "/history");
        values["incidents"] = Value::Array(incidents);
        values["older"] = json!(next);
        values["first_page"] = json!(after.is_some());
        Ok(html(render("history.html", &values)?))
    })
    .await?;
    Ok(secured(language::mark(
        rendered.respond(&request),
        &language,
    )))
}

/// The page's style sheet: its own rules, and one width class per run length of an
/// uptime bar (`g1` … `g90`), so that no style attribute is needed.
fn stylesheet() -> &'static Document {
    static CSS: OnceLock<Document> = OnceLock::new();
    CSS.get_or_init(|| {
        let mut css = include_str!("assets/page.css").to_owned();
        for days in 1..=UPTIME_DAYS {
            css.push_str(&format!(".g{days}{{flex-grow:{days}}}"));
        }
        css.push('\n');
        Document::new(css.into_bytes(), "text/css; charset=utf-8")
    })
}

fn script() -> &'static Document {
    static JS: OnceLock<Document> = OnceLock::new();
    JS.get_or_init(|| {
        Document::new(
            include_bytes!("assets/live.js").to_vec(),
            "text/javascript; charset=utf-8",
        )
    })
}

fn icon() -> &'static Document {
    static SVG: OnceLock<Document> = OnceLock::new();
    SVG.get_or_init(|| Document::new(include_bytes!("assets/icon.svg").to_vec(), "image/svg+xml"))
}

/// The page's own style sheet (`page.css`), script (`live.js`) and icon (`icon.svg`).
#[utoipa::path(
    operation_id = "status_page_asset", get, path = "/assets/{name}", tag = "status page",
    params(("name" = String, Path, description = "`page.css`, `live.js` or `icon.svg`")),
    responses(
        (status = 200, description = "The asset", content_type = "text/css"),
        (status = 304, description = "Not modified (`If-None-Match`)"),
        (status = 404, description = "No such asset", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(())
)]
pub async fn asset(
    request: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let document = match name.as_str() {
        "page.css" => stylesheet(),
        "live.js" => script(),
        "icon.svg" => icon(),
        _ => return Err(ApiError::NotFound("no such asset".into())),
    };
    Ok(secured(
        document.respond_cached_as(&request, ASSET_CACHE_CONTROL),
    ))
}

/// The answer to the page's subscription form: a page saying a confirmation is on its way,
/// or why nothing was done.
pub fn subscription_page(
    state: &AppState,
    request: &HttpRequest,
    outcome: Result<(), ApiError>,
) -> HttpResponse {
    let language = page_language(state, request).unwrap_or_else(|_| state.default_language.clone());
    let words = words(language.as_str());
    match outcome {
        Ok(()) => message_page(
            state,
            &language,
            StatusCode::ACCEPTED,
            words.subscribed_title,
            words.subscribed_text,
        ),
        Err(e) => {
            let status = actix_web::ResponseError::status_code(&e);
            let problem = e.problem();
            let mut text = problem.detail;
            for field in &problem.errors {
                text.push_str(&format!(" {}: {}.", field.field, field.message));
            }
            message_page(state, &language, status, words.subscribe_failed, &text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        for name in [
            "layout.html",
            "parts.html",
            "index.html",
            "incident.html",
            "history.html",
            "message.html",
        ] {
            assert!(environment().get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn the_style_sheet_has_a_width_for_every_run_length() {
        let css = String::from_utf8_lossy(&stylesheet().body.plain).into_owned();
        assert!(css.contains(".g1{flex-grow:1}"));
        assert!(css.contains(".g90{flex-grow:90}"));
    }
}
