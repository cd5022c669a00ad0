//! `/v1/feed.atom` (RFC 4287) and `/v1/feed.rss` (RSS 2.0): one entry per update of a
//! public incident or maintenance, newest first, for ordinary feed readers.

use chrono::{DateTime, SecondsFormat, Utc};
use domain::language::Language;
use projections::queries::{self, RecentUpdate, Viewer};
use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;

use crate::documents::Document;
use crate::problem::ApiError;
use crate::statuspage::PublicPage;

/// Entries in a feed.
const ENTRIES: usize = 50;

pub struct FeedDocuments {
    /// The language these feeds' texts are in.
    pub language: Language,
    /// The languages their entries have texts in besides the default one.
    pub translations: Vec<Language>,
    pub atom: Document,
    pub rss: Document,
}

/// XML 1.0 cannot carry most control characters, even escaped: they are left out.
fn xml_text(text: &str) -> BytesText<'_> {
    let allowed = |c: char| {
        matches!(c, '\t' | '\n' | '\r')
            || (!c.is_control() && c != '\u{FFFE}' && c != '\u{FFFF}')
            || ('\u{7F}'..='\u{9F}').contains(&c)
    };
    if text.chars().all(allowed) {
        BytesText::new(text)
    } else {
        BytesText::from_escaped(quick_xml::escape::escape(
            text.chars().filter(|c| allowed(*c)).collect::<String>(),
        ))
    }
}

fn status_name(status: &str) -> String {
    let spaced = status.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => spaced,
    }
}

fn entry_title(update: &RecentUpdate) -> String {
    format!("{} — {}", update.title, status_name(&update.status))
}

/// An entry's text: what to do first (the sentence a reader most needs), then the update.
fn entry_text(update: &RecentUpdate) -> String {
    match &update.client_action {
        Some(action) => format!("What to do now: {action}\n\n{}", update.message),
        None => update.message.clone(),
    }
}

/// Text for an element that RSS readers show as HTML: escaped for HTML first (then for XML
/// by the writer), so that a title like `<img src=x onerror=…>` stays text.
fn html_text(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

fn resource_url(page: &PublicPage, update: &RecentUpdate) -> String {
    let collection = match update.resource_kind.as_str() {
        "maintenance" => "maintenances",
        _ => "incidents",
    };
    format!("{}/v1/{collection}/{}", page.url, update.resource_id)
}

fn atom_time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn simple<W: std::io::Write>(
    writer: &mut Writer<W>,
    name: &str,
    text: &str,
) -> std::io::Result<()> {
    writer
        .create_element(name)
        .write_text_content(xml_text(text))?;
    Ok(())
}

fn atom(
    page: &PublicPage,
    updates: &[RecentUpdate],
    updated: &DateTime<Utc>,
    language: &Language,
) -> std::io::Result<Vec<u8>> {
    let mut writer = Writer::new(Vec::with_capacity(4096 + updates.len() * 600));
    writer.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let self_url = format!("{}/v1/feed.atom", page.url);
    writer
        .create_element("feed")
        .with_attribute(("xmlns", "http://www.w3.org/2005/Atom"))
        .with_attribute(("xml:lang", language.as_str()))
        .write_inner_content(|w| {
            simple(w, "id", &self_url)?;
            simple(w, "title", &page.name)?;
            simple(w, "subtitle", "Incidents and maintenances")?;
            simple(w, "updated", &atom_time(updated))?;
            w.create_element("link")
                .with_attribute(("rel", "self"))
                .with_attribute(("type", "application/atom+xml"))
                .with_attribute(("href", self_url.as_str()))
                .write_empty()?;
            w.create_element("link")
                .with_attribute(("rel", "alternate"))
                .with_attribute(("href", page.url.as_str()))
                .write_empty()?;
            w.create_element("author")
                .write_inner_content(|w| simple(w, "name", &page.name))?;
            w.create_element("generator")
                .write_text_content(BytesText::new("Crier"))?;
            for update in updates {
                w.create_element("entry").write_inner_content(|w| {
                    simple(w, "id", &format!("urn:uuid:{}", update.update_id))?;
                    simple(w, "title", &entry_title(update))?;
                    simple(w, "updated", &atom_time(&update.created_at))?;
                    simple(w, "published", &atom_time(&update.created_at))?;
                    w.create_element("link")
                        .with_attribute(("rel", "alternate"))
                        .with_attribute(("href", resource_url(page, update).as_str()))
                        .write_empty()?;
                    w.create_element("category")
                        .with_attribute(("term", update.resource_kind.as_str()))
                        .write_empty()?;
                    w.create_element("category")
                        .with_attribute(("term", update.status.as_str()))
                        .write_empty()?;
                    w.create_element("content")
                        .with_attribute(("type", "text"))
                        .write_text_content(xml_text(&entry_text(update)))?;
                    Ok(())
                })?;
            }
            Ok(())
        })?;
    Ok(writer.into_inner())
}

fn rss(
    page: &PublicPage,
    updates: &[RecentUpdate],
    updated: &DateTime<Utc>,
    language: &Language,
) -> std::io::Result<Vec<u8>> {
    let mut writer = Writer::new(Vec::with_capacity(4096 + updates.len() * 600));
    writer.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let self_url = format!("{}/v1/feed.rss", page.url);
    writer
        .create_element("rss")
        .with_attribute(("version", "2.0"))
        .with_attribute(("xmlns:atom", "http://www.w3.org/2005/Atom"))
        .write_inner_content(|w| {
            w.create_element("channel").write_inner_content(|w| {
                simple(w, "title", &html_text(&page.name))?;
                simple(w, "link", &page.url)?;
                simple(
                    w,
                    "description",
                    &html_text(&format!("{}: incidents and maintenances", page.name)),
                )?;
                w.create_element("atom:link")
                    .with_attribute(("href", self_url.as_str()))
                    .with_attribute(("rel", "self"))
                    .with_attribute(("type", "application/rss+xml"))
                    .write_empty()?;
                simple(w, "language", language.as_str())?;
                simple(w, "lastBuildDate", &updated.to_rfc2822())?;
                simple(w, "generator", "Crier")?;
                for update in updates {
                    w.create_element("item").write_inner_content(|w| {
                        // RSS readers take titles and descriptions as HTML.
                        simple(w, "title", &html_text(&entry_title(update)))?;
                        simple(w, "link", &resource_url(page, update))?;
                        simple(w, "description", &html_text(&entry_text(update)))?;
                        w.create_element("guid")
                            .with_attribute(("isPermaLink", "false"))
                            .write_text_content(BytesText::new(&format!(
                                "urn:uuid:{}",
                                update.update_id
                            )))?;
                        simple(w, "pubDate", &update.created_at.to_rfc2822())?;
                        simple(w, "category", &update.resource_kind)?;
                        Ok(())
                    })?;
                }
                Ok(())
            })?;
            Ok(())
        })?;
    Ok(writer.into_inner())
}

/// Reads the newest updates `viewer` may see once and renders both feeds, in `language`
/// (`None`: the default language, `default`).
pub async fn render(
    store: &eventstore::EventStore,
    page: &PublicPage,
    viewer: &Viewer,
    language: Option<&Language>,
    default: &Language,
) -> Result<FeedDocuments, ApiError> {
    let client = store.pool().get().await?;
    let updates = queries::recent_updates(&client, viewer, ENTRIES).await?;
    let mut translations: Vec<Language> = updates
        .iter()
        .flat_map(|u| u.languages())
        .cloned()
        .collect();
    translations.sort();
    translations.dedup();
    let updates: Vec<RecentUpdate> = match language {
        None => updates,
        Some(language) => updates
            .into_iter()
            .map(|u| u.in_language(language))
            .collect(),
    };
    let language = language.unwrap_or(default);
    // An empty feed still needs an `updated`: the newest update, or a fixed time (so that
    // its validator stays the same).
    let updated = updates
        .first()
        .map_or(DateTime::<Utc>::UNIX_EPOCH, |u| u.created_at);
    let failed = |e: std::io::Error| ApiError::internal_by("cannot render a feed", e);
    Ok(FeedDocuments {
        language: language.clone(),
        translations,
        atom: Document::new(
            atom(page, &updates, &updated, language).map_err(failed)?,
            "application/atom+xml; charset=utf-8",
        ),
        rss: Document::new(
            rss(page, &updates, &updated, language).map_err(failed)?,
            "application/rss+xml; charset=utf-8",
        ),
    })
}
