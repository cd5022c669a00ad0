//! Which language a read renders in: `?lang=` first, then `Accept-Language` with its
//! quality values (RFC 9110 §12.5.4), then the default language, chosen per resource among
//! the languages it has (`domain::language`). Answers say what they rendered
//! (`Content-Language`) and that they vary with `Accept-Language`.
//!
//! A malformed `Accept-Language` is ignored, as if absent (a browser's header is not the
//! reader's fault); a malformed `?lang=` is a 400 naming `lang`, like any bad query.

use actix_web::http::header::{self, AcceptLanguage, Header, HeaderValue, Preference};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use domain::language::{Language, Negotiation, Preferences, Range};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::problem::ApiError;
use crate::state::AppState;

/// `?lang=`, as the OpenAPI document lists it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LanguageQuery {
    /// The language to render texts in (a BCP 47 tag such as `cy`); texts the resource
    /// lacks in it are in the default language. Without it, `Accept-Language` chooses.
    #[param(pattern = r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,7}$")]
    pub lang: Option<String>,
}

/// `Accept-Language`, as the OpenAPI document lists it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct LanguageHeader {
    /// The reader's languages with quality values, such as `cy-GB;q=0.9, en;q=0.5`
    /// (`?lang=` wins over it; a malformed one is ignored).
    #[param(rename = "Accept-Language")]
    pub accept_language: Option<String>,
}

#[derive(Deserialize)]
struct LangParam {
    lang: Option<String>,
}

/// The reader's wishes: `?lang=` when given, else `Accept-Language`.
pub fn preferences(request: &HttpRequest) -> Result<Preferences, ApiError> {
    let lang = actix_web::web::Query::<LangParam>::from_query(request.query_string())
        .ok()
        .and_then(|q| q.into_inner().lang);
    if let Some(lang) = lang {
        return Ok(Preferences::only(Language::parse("lang", &lang)?));
    }
    Ok(accept_language(request))
}

/// `Accept-Language` ranked by quality, without ranges of quality 0; empty when absent or
/// malformed. Ranges that are not language tags crier can match are left out.
pub fn accept_language(request: &HttpRequest) -> Preferences {
    if !request.headers().contains_key(header::ACCEPT_LANGUAGE) {
        return Preferences::default();
    }
    let Ok(accepted) = AcceptLanguage::parse(request) else {
        return Preferences::default();
    };
    let mut items: Vec<_> = accepted
        .0
        .into_iter()
        .filter(|item| item.quality > header::Quality::ZERO)
        .collect();
    // Stable: equal qualities keep the order the client gave.
    items.sort_by_key(|item| std::cmp::Reverse(item.quality));
    let mut ranges: Vec<Range> = Vec::new();
    for item in items {
        let range = match item.item {
            Preference::Any => Range::Any,
            Preference::Specific(tag) => match Language::parse("Accept-Language", tag.as_str()) {
                Ok(language) => Range::Language(language),
                Err(_) => continue,
            },
        };
        if !ranges.contains(&range) {
            ranges.push(range);
        }
        // Each range is tried against every language of every resource rendered: a
        // header of thousands would cost that many times over.
        if ranges.len() == MAX_RANGES {
            break;
        }
    }
    Preferences::ranked(ranges)
}

/// The most ranges of `Accept-Language` taken, most wanted first (browsers send a handful).
const MAX_RANGES: usize = 16;

/// What renders this request's resources.
pub fn negotiation(state: &AppState, request: &HttpRequest) -> Result<Negotiation, ApiError> {
    Ok(Negotiation {
        preferences: preferences(request)?,
        default: state.default_language.clone(),
    })
}

/// `Content-Language` (the languages rendered, most wanted first) and `Vary:
/// Accept-Language` on an answer.
pub fn say_languages(response: &mut HttpResponseBuilder, rendered: &[Language]) {
    let value = rendered
        .iter()
        .map(Language::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.insert_header((header::CONTENT_LANGUAGE, value));
    }
    response.append_header((header::VARY, "Accept-Language"));
}

/// The same on an answer already built.
pub fn mark(mut response: HttpResponse, rendered: &Language) -> HttpResponse {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(rendered.as_str()) {
        headers.insert(header::CONTENT_LANGUAGE, value);
    }
    headers.append(header::VARY, HeaderValue::from_static("Accept-Language"));
    response
}

/// The distinct languages of `rendered`, in their order; the default when there are none.
pub fn distinct<'a>(
    rendered: impl IntoIterator<Item = &'a Language>,
    default: &Language,
) -> Vec<Language> {
    let mut out: Vec<Language> = Vec::new();
    for language in rendered {
        if !out.contains(language) {
            out.push(language.clone());
        }
    }
    if out.is_empty() {
        out.push(default.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use actix_web::test::TestRequest;

    fn ranked(header: &str) -> Vec<String> {
        let request = TestRequest::default()
            .insert_header((header::ACCEPT_LANGUAGE, header))
            .to_http_request();
        let prefs = accept_language(&request);
        let en = Language::english();
        let cy = Language::parse("t", "cy").unwrap();
        let fr = Language::parse("t", "fr").unwrap();
        // What each ranking picks among en (default), cy and fr, for the assertions below.
        vec![prefs
            .choose(&en, [&cy, &fr])
            .map_or("default".to_owned(), |l| l.to_string())]
    }

    #[test]
    fn accept_language_is_ranked_by_quality_and_its_edge_cases_are_ignored_not_refused() {
        assert_eq!(ranked("cy-GB;q=0.9, en;q=0.5"), ["cy"]);
        assert_eq!(ranked("en;q=0.5, cy-GB;q=0.9"), ["cy"]);
        assert_eq!(ranked("de, fr;q=0.1"), ["fr"]);
        assert_eq!(ranked("cy;q=0, fr;q=0.2"), ["fr"], "q=0 means not this one");
        assert_eq!(ranked("*"), ["default"]);
        assert_eq!(ranked("*;q=0.5, cy"), ["cy"]);
        assert_eq!(ranked("cy;q=nonsense"), ["default"], "malformed: ignored");
        assert_eq!(ranked(";;;,,"), ["default"]);
        assert_eq!(ranked("i-klingon, cy;q=0.3"), ["cy"]);
    }

    #[test]
    fn a_huge_accept_language_is_cut_to_its_most_wanted_ranges() {
        // 5,000 distinct three-letter tags, every one valid, none a language Crier has.
        let letter = |n: usize| char::from(b'a' + (n % 26) as u8);
        let mut header: Vec<String> = (0..5000)
            .map(|n| format!("{}{}{}", letter(n / 676 + 1), letter(n / 26), letter(n)))
            .filter(|tag| tag != "cym")
            .collect();
        header.push("cy;q=0.9".into());
        let request = TestRequest::default()
            .insert_header((header::ACCEPT_LANGUAGE, header.join(", ")))
            .to_http_request();
        let prefs = accept_language(&request);
        let cy = Language::parse("t", "cy").unwrap();
        assert_eq!(
            prefs.choose(&Language::english(), [&cy]),
            None,
            "cy ranked 5001st"
        );
        assert_eq!(
            ranked("cy, cy, cy, fr"),
            ["cy"],
            "repeats count once and the first still wins"
        );
    }

    #[test]
    fn lang_in_the_query_wins_and_a_bad_one_is_refused() {
        let request = TestRequest::with_uri("/v1/incidents?lang=CY")
            .insert_header((header::ACCEPT_LANGUAGE, "fr"))
            .to_http_request();
        assert_eq!(
            preferences(&request).unwrap(),
            Preferences::only(Language::parse("t", "cy").unwrap())
        );
        let bad = TestRequest::with_uri("/v1/incidents?lang=%3Cscript%3E").to_http_request();
        assert!(preferences(&bad).is_err());
    }
}
