//! Emails and the pages of their links, from templates (minijinja; the `.html` ones escape
//! every value, so no text of a notice can become markup).
//!
//! A notice is rendered once per (position, audience, language) into its subject, text and
//! HTML: what to do (the `client_action` message) first, then the title, status, impact,
//! the latest message and a link. Each message wraps that in a layout with the
//! subscriber's own unsubscribe link. The words around a notice's texts are English or
//! Welsh, as the notice's language is.

use std::sync::OnceLock;

use minijinja::{context, Environment};
use serde_json::Value;

use crate::chat::{Labels, Summary};
use crate::DeliveryError;
use notices::Site;

/// The words of emails and pages, per language.
pub struct Words {
    pub why: &'static str,
    pub unsubscribe: &'static str,
    pub confirm_subject: &'static str,
    pub asked: &'static str,
    pub confirm: &'static str,
    pub ignore: &'static str,
}

const ENGLISH: Words = Words {
    why: "You receive this email because this address subscribed to status notices.",
    unsubscribe: "Unsubscribe",
    confirm_subject: "Confirm your subscription to status notices",
    asked: "Someone, we hope you, asked for status notices to be sent to this address: \
            what is down, what is being done, and what to do.",
    confirm: "Confirm the subscription (the link works for 7 days)",
    ignore: "If it was not you, ignore this email: nothing more will be sent.",
};

const WELSH: Words = Words {
    why: "Rydych yn cael yr e-bost hwn oherwydd bod y cyfeiriad hwn wedi tanysgrifio i \
          hysbysiadau statws.",
    unsubscribe: "Dad-danysgrifio",
    confirm_subject: "Cadarnhewch eich tanysgrifiad i hysbysiadau statws",
    asked: "Gofynnodd rhywun, chi gobeithio, i hysbysiadau statws gael eu hanfon i'r \
            cyfeiriad hwn: beth sydd i lawr, beth sy'n cael ei wneud, a beth i'w wneud.",
    confirm: "Cadarnhewch y tanysgrifiad (mae'r ddolen yn gweithio am 7 diwrnod)",
    ignore: "Os nad chi oedd hyn, anwybyddwch yr e-bost hwn: ni fydd dim mwy yn cael ei anfon.",
};

/// Welsh for tags `cy` and `cy-…`, English otherwise.
pub fn words(language: &str) -> &'static Words {
    if language == "cy" || language.starts_with("cy-") {
        &WELSH
    } else {
        &ENGLISH
    }
}

fn environment() -> &'static Environment<'static> {
    static ENVIRONMENT: OnceLock<Environment<'static>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in [
            ("notice.txt", include_str!("templates/notice.txt")),
            ("notice.html", include_str!("templates/notice.html")),
            ("layout.txt", include_str!("templates/layout.txt")),
            ("layout.html", include_str!("templates/layout.html")),
            (
                "confirmation.txt",
                include_str!("templates/confirmation.txt"),
            ),
            (
                "confirmation.html",
                include_str!("templates/confirmation.html"),
            ),
            ("page.html", include_str!("templates/page.html")),
        ] {
            // The templates are part of the binary and checked by the tests below.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "an email template does not parse");
            }
        }
        env
    })
}

fn render(name: &str, values: minijinja::Value) -> Result<String, DeliveryError> {
    environment()
        .get_template(name)
        .and_then(|template| template.render(values))
        .map_err(|e| DeliveryError::Template(e.to_string()))
}

/// A notice as every subscriber of one audience and language reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeEmail {
    /// The language its texts are in.
    pub language: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The notice whose CloudEvent (rendered for the audience, in the language) is
/// `cloud_event`.
pub fn notice(cloud_event: &[u8], site: &Site) -> Result<NoticeEmail, DeliveryError> {
    let event: Value = serde_json::from_slice(cloud_event)?;
    let summary = Summary::of(&event, site);
    let labels: &Labels = summary.labels;
    let values = context! {
        what_to_do => labels.what_to_do,
        action => summary.action.clone(),
        title => summary.title.clone(),
        status_label => labels.status,
        status => summary.status.clone(),
        impact_label => labels.impact,
        impact => summary.impact.clone(),
        message => summary.message.clone(),
        open => labels.open,
        link => summary.link.clone(),
    };
    // A subject is one line, and not endless.
    let subject: String = format!("{}: {}", summary.status, summary.title)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    Ok(NoticeEmail {
        language: summary.language.clone(),
        subject,
        text: render("notice.txt", values.clone())?,
        html: render("notice.html", values)?,
    })
}

/// A notice's text and HTML parts, wrapped with the subscriber's unsubscribe link.
pub fn notice_parts(
    notice: &NoticeEmail,
    unsubscribe_url: &str,
) -> Result<(String, String), DeliveryError> {
    let w = words(&notice.language);
    let text = render(
        "layout.txt",
        context! {
            body => notice.text.trim_end(),
            why => w.why,
            unsubscribe => w.unsubscribe,
            unsubscribe_url,
        },
    )?;
    let html = render(
        "layout.html",
        context! {
            lang => notice.language.clone(),
            subject => notice.subject.clone(),
            body => notice.html.clone(),
            why => w.why,
            unsubscribe => w.unsubscribe,
            unsubscribe_url,
        },
    )?;
    Ok((text, html))
}

/// The confirmation email: subject, text, HTML.
pub fn confirmation(
    language: &str,
    confirm_url: &str,
) -> Result<(String, String, String), DeliveryError> {
    let w = words(language);
    let values = context! {
        lang => language,
        subject => w.confirm_subject,
        asked => w.asked,
        confirm => w.confirm,
        confirm_url,
        ignore => w.ignore,
    };
    Ok((
        w.confirm_subject.to_owned(),
        render("confirmation.txt", values.clone())?,
        render("confirmation.html", values)?,
    ))
}

/// What a page answering a link says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Confirmed,
    AlreadyConfirmed,
    Expired,
    /// The link is not one of ours, or its subscription has ended.
    Invalid,
    /// The unsubscribe link, opened: a button does it (a link scanner only opens).
    ConfirmUnsubscribe,
    Unsubscribed,
}

/// A page answering a link, in `language`; `action` is where its button posts.
pub fn page(page: Page, language: &str, action: &str) -> String {
    let welsh = words(language).unsubscribe == WELSH.unsubscribe;
    let (heading, text, button) = match (page, welsh) {
        (Page::Confirmed, false) => ("Subscription confirmed", "You will receive status notices at this address. Every email has a link to unsubscribe.", None),
        (Page::Confirmed, true) => ("Tanysgrifiad wedi'i gadarnhau", "Byddwch yn cael hysbysiadau statws yn y cyfeiriad hwn. Mae gan bob e-bost ddolen i ddad-danysgrifio.", None),
        (Page::AlreadyConfirmed, false) => ("Already confirmed", "This link has been used: the subscription is confirmed already.", None),
        (Page::AlreadyConfirmed, true) => ("Wedi'i gadarnhau eisoes", "Mae'r ddolen hon wedi'i defnyddio: mae'r tanysgrifiad wedi'i gadarnhau eisoes.", None),
        (Page::Expired, false) => ("This link has expired", "A confirmation link works for 7 days. Subscribe again to get a new one.", None),
        (Page::Expired, true) => ("Mae'r ddolen hon wedi dod i ben", "Mae dolen gadarnhau yn gweithio am 7 diwrnod. Tanysgrifiwch eto i gael un newydd.", None),
        (Page::Invalid, false) => ("This link does not work", "It is incomplete, or its subscription has ended. Nothing was changed.", None),
        (Page::Invalid, true) => ("Nid yw'r ddolen hon yn gweithio", "Mae'n anghyflawn, neu mae ei thanysgrifiad wedi dod i ben. Ni newidiwyd dim.", None),
        (Page::ConfirmUnsubscribe, false) => ("Unsubscribe", "Press the button to stop status notices to this address. Its address is then erased.", Some("Unsubscribe")),
        (Page::ConfirmUnsubscribe, true) => ("Dad-danysgrifio", "Pwyswch y botwm i atal hysbysiadau statws i'r cyfeiriad hwn. Yna caiff ei gyfeiriad ei ddileu.", Some("Dad-danysgrifio")),
        (Page::Unsubscribed, false) => ("Unsubscribed", "No more status notices will be sent to this address, and it has been erased.", None),
        (Page::Unsubscribed, true) => ("Wedi dad-danysgrifio", "Ni fydd mwy o hysbysiadau statws yn cael eu hanfon i'r cyfeiriad hwn, ac mae wedi'i ddileu.", None),
    };
    let lang = if welsh { "cy" } else { "en" };
    render(
        "page.html",
        context! { lang, heading, text, button, action },
    )
    .unwrap_or_else(|_| format!("<!DOCTYPE html><title>{heading}</title><h1>{heading}</h1>"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn event(language: &str, title: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "type": "incident.updated",
            "source": "https://status.example.com/v1/incidents/0b6c",
            "data": {
                "title": title,
                "status": "identified",
                "impact": "major",
                "language": language,
                "client_action": {"kind": "restart_client", "message": "Restart your clients to recover."},
                "updates": [{"message": "We found the cause."}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_notice_puts_what_to_do_first_and_escapes_every_text_in_html() {
        let email = notice(
            &event("en", "Teams <script>alert(1)</script> & co"),
            &Site::default(),
        )
        .unwrap();
        assert_eq!(
            email.subject,
            "Identified: Teams <script>alert(1)</script> & co"
        );
        assert!(email
            .text
            .starts_with("What to do: Restart your clients to recover.\n"));
        assert!(email.html.starts_with("<div role=\"alert\""));
        assert!(email
            .html
            .contains("Teams &lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; co"));
        assert!(!email.html.contains("<script>"));
        let (text, html) = notice_parts(&email, "https://status.example.com/u?token=a&b").unwrap();
        assert!(
            text.contains("We found the cause.")
                && text
                    .trim_end()
                    .ends_with("https://status.example.com/u?token=a&b")
        );
        assert!(html.contains("href=\"https:&#x2f;&#x2f;status.example.com&#x2f;u?token=a&amp;b\""));
        assert!(html.contains("<html lang=\"en\">"));
    }

    #[test]
    fn welsh_readers_get_welsh_words_around_the_notice() {
        let email = notice(&event("cy", "Teams"), &Site::default()).unwrap();
        assert_eq!(email.language, "cy");
        assert!(email.subject.starts_with("Wedi'i nodi: "));
        assert!(email.text.starts_with("Beth i'w wneud: "));
        let (subject, text, _) = confirmation("cy", "https://x/confirm?token=t").unwrap();
        assert!(subject.starts_with("Cadarnhewch"));
        assert!(text.contains("https://x/confirm?token=t"));
        assert!(page(Page::Unsubscribed, "cy", "").contains("Wedi dad-danysgrifio"));
    }

    #[test]
    fn every_page_renders_and_only_the_unsubscribe_page_has_a_button() {
        for p in [
            Page::Confirmed,
            Page::AlreadyConfirmed,
            Page::Expired,
            Page::Invalid,
            Page::ConfirmUnsubscribe,
            Page::Unsubscribed,
        ] {
            let html = page(p, "en", "/v1/subscribers/unsubscribe?token=x");
            assert!(html.starts_with("<!DOCTYPE html>"), "{p:?}");
            assert_eq!(
                html.contains("<form"),
                p == Page::ConfirmUnsubscribe,
                "{p:?}"
            );
        }
    }
}
