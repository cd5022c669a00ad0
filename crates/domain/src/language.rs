//! Languages: the tags that name them, the translations a notice's texts carry, and the
//! choice of the language a reader gets.
//!
//! A notice is written in the page's default language; every human text may also carry
//! translations keyed by BCP 47 tag. Tags are parsed and put in canonical form by ICU4X's
//! `icu_locale_core` (`EN-gb` becomes `en-GB`), never by hand. A reader's wishes are
//! [`Preferences`] (from `?lang=`, `Accept-Language`, or a subscription's language), and
//! [`Preferences::choose`] picks one language per resource; texts missing in it fall back
//! one by one to the default language.

use std::collections::BTreeMap;

use icu_locale_core::LanguageIdentifier;
use serde::{Deserialize, Serialize};

use crate::{DomainError, Validation};

/// A BCP 47 language tag in canonical form, such as `cy` or `en-GB`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Language(String);

/// What [`Language::parse`] accepts, as JSON Schema: the shape of a language tag (language,
/// script, region and variants); the subtags' own rules are checked on parsing.
pub const LANGUAGE_PATTERN: &str = "^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,7}$";

impl Language {
    /// Parses `tag` (named `field` in the error) into canonical form. Extensions, private
    /// use and `und` are refused: a text is written in one known language.
    pub fn parse(field: &str, tag: &str) -> Result<Language, DomainError> {
        let refused = || {
            DomainError::invalid(
                field,
                "must be a BCP 47 language tag such as cy, en or pt-BR",
            )
        };
        let id = LanguageIdentifier::try_from_str(tag.trim()).map_err(|_| refused())?;
        if id.language.is_unknown() || tag.trim().len() > 64 {
            return Err(refused());
        }
        Ok(Language(id.to_string()))
    }

    /// `en`, the default of the default language.
    pub fn english() -> Language {
        Language("en".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Does the language range `range` (a tag a reader asked for) match this language?
    /// RFC 4647 lookup (`cy-GB` asked finds `cy`), then basic filtering (`cy` asked finds
    /// `cy-GB`).
    fn answers(&self, range: &Language) -> Matched {
        let (have, want) = (self.0.to_ascii_lowercase(), range.0.to_ascii_lowercase());
        if have == want {
            return Matched::Exactly;
        }
        if want.starts_with(&format!("{have}-")) {
            return Matched::ByPrefix(have.len());
        }
        if have.starts_with(&format!("{want}-")) {
            return Matched::ByPrefix(0);
        }
        Matched::No
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Matched {
    No,
    /// The length of the prefix that matched: the longer, the closer.
    ByPrefix(usize),
    Exactly,
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Language {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some(LANGUAGE_PATTERN))
            .description(Some("A BCP 47 language tag, such as `cy` or `en-GB`."))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Language {}

/// A reader's wishes, most wanted first: language ranges, and `*` (any language: the
/// default one will do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Preferences(Vec<Range>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Range {
    Language(Language),
    Any,
}

impl Preferences {
    /// Exactly one language (`?lang=`, a subscription's language).
    pub fn only(language: Language) -> Preferences {
        Preferences(vec![Range::Language(language)])
    }

    /// Ranges already ranked, most wanted first (`Accept-Language` once sorted by its
    /// quality values, without the ranges of quality 0).
    pub fn ranked(ranges: impl IntoIterator<Item = Range>) -> Preferences {
        Preferences(ranges.into_iter().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The language to render a resource in, given the languages its texts have besides
    /// `default`: the first range that some language answers (the closest of those),
    /// `None` for the default language (asked for, `*`, or nothing matched).
    pub fn choose<'a>(
        &self,
        default: &Language,
        translations: impl IntoIterator<Item = &'a Language> + Clone,
    ) -> Option<&'a Language> {
        for range in &self.0 {
            let Range::Language(range) = range else {
                return None;
            };
            let default_match = default.answers(range);
            let best = translations
                .clone()
                .into_iter()
                .map(|l| (l.answers(range), l))
                .filter(|(m, _)| *m != Matched::No)
                .max_by_key(|(m, _)| *m);
            match best {
                Some((matched, language)) if matched > default_match => return Some(language),
                Some(_) => return None,
                None if default_match != Matched::No => return None,
                None => {}
            }
        }
        None
    }
}

/// What renders a resource for a reader: the reader's preferences and the page's default
/// language.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Negotiation {
    pub preferences: Preferences,
    pub default: Language,
}

impl Negotiation {
    /// The default language, whatever the resource has.
    pub fn default_only(default: Language) -> Negotiation {
        Negotiation {
            preferences: Preferences::default(),
            default,
        }
    }

    /// Exactly `language` where a resource has it (`None`: the default language): how one
    /// rendering of a cache of renderings per language is made.
    pub fn fixed(language: Option<Language>, default: Language) -> Negotiation {
        Negotiation {
            preferences: language.map(Preferences::only).unwrap_or_default(),
            default,
        }
    }

    /// The language of a resource whose texts also exist in `translations`: `None` for the
    /// default language.
    pub fn choose<'a>(
        &self,
        translations: impl IntoIterator<Item = &'a Language> + Clone,
    ) -> Option<&'a Language> {
        self.preferences.choose(&self.default, translations)
    }

    /// The tag of what [`Negotiation::choose`] gave.
    pub fn tag(&self, chosen: Option<&Language>) -> Language {
        chosen.unwrap_or(&self.default).clone()
    }
}

/// The translations of a request's texts, keyed by language tag as the client wrote it.
pub type RawTranslations<T> = BTreeMap<String, T>;

/// Checks every language of `raw`: its tag (valid, not the default language, not the same
/// language twice) and, through `texts`, its texts (given the field path
/// `translations.<tag as written>` to name in errors). Records every error in `v`.
pub fn translations<T, U>(
    raw: &RawTranslations<T>,
    default: &Language,
    v: &mut Validation,
    texts: impl Fn(&str, &T, &mut Validation) -> U,
) -> BTreeMap<Language, U> {
    let mut out = BTreeMap::new();
    if raw.len() > MAX_TRANSLATIONS {
        v.refuse(
            "translations",
            &format!("at most {MAX_TRANSLATIONS} languages"),
        );
        return out;
    }
    for (tag, raw_texts) in raw {
        let field = format!("translations.{tag}");
        let Some(language) = v.check(Language::parse(&field, tag).map(Some)) else {
            continue;
        };
        if &language == default {
            v.refuse(
                &field,
                "is the default language: its texts are the request's own fields",
            );
            continue;
        }
        if out.contains_key(&language) {
            v.refuse(&field, "names a language given already");
            continue;
        }
        let texts = texts(&field, raw_texts, v);
        out.insert(language, texts);
    }
    out
}

/// Reads a version 1 payload of a text-carrying event as version 2: no translations.
pub(crate) fn v1_without_translations(
    mut v1: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    if v1.contains_key("translations") {
        return Err("a version 1 payload has no translations".into());
    }
    v1.insert(
        "translations".into(),
        serde_json::Value::Object(serde_json::Map::new()),
    );
    Ok(v1)
}

/// Most languages one request may carry.
pub const MAX_TRANSLATIONS: usize = 50;

/// A translated text of a request: `Some(text)` checked by `check` when the request
/// carries that text in the default language, else an error naming the translation.
pub fn translated<T: Default>(
    v: &mut Validation,
    field: &str,
    given: Option<&str>,
    carried: bool,
    check: impl Fn(&str, &str) -> Result<T, DomainError>,
) -> Option<T> {
    let text = given?;
    if !carried {
        v.refuse(
            field,
            "translates a text the request does not carry in the default language",
        );
        return None;
    }
    Some(v.check(check(field, text)))
}

/// A language of a translation whose texts are all absent is refused: it would say nothing.
pub fn refuse_empty(v: &mut Validation, field: &str, empty: bool) {
    if empty {
        v.refuse(field, "translates no text: give at least one");
    }
}

/// The text in `language`, or the default one when it has none there.
pub fn pick<'a>(
    default: &'a str,
    translations: &'a BTreeMap<Language, String>,
    language: Option<&Language>,
) -> &'a str {
    language
        .and_then(|l| translations.get(l))
        .map(String::as_str)
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lang(tag: &str) -> Language {
        Language::parse("lang", tag).unwrap()
    }

    #[test]
    fn tags_are_parsed_into_canonical_form_and_junk_is_refused() {
        assert_eq!(lang("EN-gb").as_str(), "en-GB");
        assert_eq!(lang("cy").as_str(), "cy");
        assert_eq!(lang("zh-hant-tw").as_str(), "zh-Hant-TW");
        for bad in [
            "",
            "e",
            "english!",
            "und",
            "en--GB",
            "x-private",
            "en_GB_",
            "12",
        ] {
            assert!(Language::parse("lang", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_first_range_a_language_answers_wins_and_the_default_answers_too() {
        let en = lang("en");
        let have = [lang("cy"), lang("fr-CA")];
        let choose = |ranges: &[&str]| {
            let prefs = Preferences::ranked(ranges.iter().map(|r| match *r {
                "*" => Range::Any,
                tag => Range::Language(lang(tag)),
            }));
            prefs
                .choose(&en, have.iter())
                .map(|l| l.as_str().to_owned())
        };
        assert_eq!(choose(&["cy-GB", "en"]), Some("cy".into()));
        assert_eq!(choose(&["de", "fr"]), Some("fr-CA".into()));
        assert_eq!(choose(&["en-GB", "cy"]), None, "the default answers en-GB");
        assert_eq!(choose(&["*", "cy"]), None);
        assert_eq!(choose(&["de"]), None);
        assert_eq!(choose(&[]), None);
    }

    #[test]
    fn translations_name_the_field_of_each_refusal() {
        let mut v = Validation::default();
        let raw: RawTranslations<&str> = [
            ("cy".to_owned(), "ok"),
            ("EN".to_owned(), "default"),
            ("no good".to_owned(), "x"),
        ]
        .into();
        let got = translations(&raw, &lang("en"), &mut v, |_, t, _| t.to_string());
        assert_eq!(got.len(), 1);
        let Err(DomainError::Invalid(errors)) = v.finish() else {
            panic!("expected errors")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["translations.EN", "translations.no good"]);
    }
}
