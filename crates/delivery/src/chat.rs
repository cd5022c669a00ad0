//! Chat formats: a notice as a message that a chat product's incoming webhook takes and
//! shows to people, readable on its own: the title, status and impact, what to do (the
//! client action, first), the latest message, and a link.
//!
//! * Slack (incoming webhooks): `text` (the notification's fallback) and `blocks` (a
//!   header, the status and impact as fields, the client action, the message, a link).
//!   Text in `mrkdwn` (the fallback too) has `&`, `<` and `>` escaped, as Slack requires.
//!   A maintenance's message begins with its window; a reminder's title says it starts
//!   soon.
//! * Microsoft Teams (incoming webhooks and Workflows): a `message` with one attachment, an
//!   Adaptive Card 1.4 (a title, a fact set, the action, the message, an `Action.OpenUrl`).
//!
//! Both are made from the notice's CloudEvent as rendered for the endpoint (its viewer and
//! language), so they show exactly what a CloudEvents endpoint would receive.

use domain::webhook::WebhookFormat;
use serde_json::{json, Value};

use crate::DeliveryError;
use notices::Site;

/// What a chat message (or an email) says, read from a notice's CloudEvent.
pub(crate) struct Summary {
    pub(crate) title: String,
    pub(crate) status: String,
    pub(crate) impact: Option<String>,
    pub(crate) action: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) link: String,
    pub(crate) language: String,
    pub(crate) labels: &'static Labels,
}

/// The words around the notice's own texts, in the languages Crier has them in.
pub(crate) struct Labels {
    pub(crate) status: &'static str,
    pub(crate) impact: &'static str,
    pub(crate) what_to_do: &'static str,
    pub(crate) open: &'static str,
    when: &'static str,
    reminder: &'static str,
    term: fn(&str) -> Option<&'static str>,
}

const ENGLISH: Labels = Labels {
    status: "Status",
    impact: "Impact",
    what_to_do: "What to do",
    open: "Open",
    when: "When:",
    reminder: "Starting soon",
    term: english_term,
};

const WELSH: Labels = Labels {
    status: "Statws",
    impact: "Effaith",
    what_to_do: "Beth i'w wneud",
    open: "Agor",
    when: "Pryd:",
    reminder: "Yn dechrau cyn bo hir",
    term: welsh_term,
};

fn english_term(value: &str) -> Option<&'static str> {
    Some(match value {
        "investigating" => "Investigating",
        "identified" => "Identified",
        "monitoring" => "Monitoring",
        "resolved" => "Resolved",
        "scheduled" => "Scheduled",
        "in_progress" => "In progress",
        "verifying" => "Verifying",
        "completed" => "Completed",
        "cancelled" => "Cancelled",
        "operational" => "Operational",
        "degraded_performance" => "Degraded performance",
        "partial_outage" => "Partial outage",
        "major_outage" => "Major outage",
        "under_maintenance" => "Under maintenance",
        "none" => "None",
        "minor" => "Minor",
        "major" => "Major",
        "critical" => "Critical",
        _ => return None,
    })
}

fn welsh_term(value: &str) -> Option<&'static str> {
    Some(match value {
        "investigating" => "Yn ymchwilio",
        "identified" => "Wedi'i nodi",
        "monitoring" => "Yn monitro",
        "resolved" => "Wedi'i ddatrys",
        "scheduled" => "Wedi'i drefnu",
        "in_progress" => "Ar y gweill",
        "verifying" => "Yn gwirio",
        "completed" => "Wedi'i gwblhau",
        "cancelled" => "Wedi'i ganslo",
        "operational" => "Yn gweithio",
        "degraded_performance" => "Perfformiad is",
        "partial_outage" => "Toriad rhannol",
        "major_outage" => "Toriad mawr",
        "under_maintenance" => "Dan waith cynnal",
        "none" => "Dim",
        "minor" => "Bach",
        "major" => "Mawr",
        "critical" => "Difrifol",
        _ => return None,
    })
}

impl Labels {
    pub(crate) fn for_language(tag: &str) -> &'static Labels {
        if tag == "cy" || tag.starts_with("cy-") {
            &WELSH
        } else {
            &ENGLISH
        }
    }

    fn term(&self, value: &str) -> String {
        (self.term)(value)
            .map(str::to_owned)
            .unwrap_or_else(|| value.replace('_', " "))
    }
}

/// A status, impact or other enumerated value (`major_outage`) as a reader of `language`
/// reads it: in Welsh for Welsh tags, else in English.
pub fn term(language: &str, value: &str) -> String {
    Labels::for_language(language).term(value)
}

fn text(value: &Value) -> Option<String> {
    value
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
}

impl Summary {
    pub(crate) fn of(event: &Value, site: &Site) -> Summary {
        let data = &event["data"];
        let language = data["language"]
            .as_str()
            .unwrap_or(site.default_language.as_str());
        let labels = Labels::for_language(language);
        let title = text(&data["title"])
            .or_else(|| text(&data["name"]))
            .unwrap_or_default();
        // The newest update's message: the timeline is oldest first.
        let mut message = data["updates"]
            .as_array()
            .and_then(|updates| updates.last())
            .and_then(|update| text(&update["message"]));
        // A maintenance says when the work is; its reminder says it first.
        let mut title = title;
        if let (Some(starts), Some(ends)) = (data["starts_at"].as_str(), data["ends_at"].as_str()) {
            let window = format!("{} {starts} – {ends} (UTC)", labels.when);
            message = Some(match message {
                Some(message) => format!("{window}\n{message}"),
                None => window,
            });
            if event["type"] == "maintenance.reminder" {
                title = format!("{}: {title}", labels.reminder);
            }
        }
        Summary {
            title,
            status: labels.term(data["status"].as_str().unwrap_or_default()),
            impact: data["impact"].as_str().map(|i| labels.term(i)),
            action: (data["client_action"]["kind"].as_str() != Some("none"))
                .then(|| text(&data["client_action"]["message"]))
                .flatten(),
            message,
            link: event["source"].as_str().unwrap_or_default().to_owned(),
            language: language.to_owned(),
            labels,
        }
    }
}

/// Slack's `mrkdwn` gives `&`, `<` and `>` meaning: they are sent escaped.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn slack(summary: &Summary) -> Value {
    let l = summary.labels;
    let mut fields = vec![json!({
        "type": "mrkdwn",
        "text": format!("*{}:* {}", l.status, slack_escape(&summary.status)),
    })];
    if let Some(impact) = &summary.impact {
        fields.push(json!({
            "type": "mrkdwn",
            "text": format!("*{}:* {}", l.impact, slack_escape(impact)),
        }));
    }
    // Slack's header block takes at most 150 characters of plain text.
    let header: String = summary.title.chars().take(150).collect();
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": header}}),
        json!({"type": "section", "fields": fields}),
    ];
    if let Some(action) = &summary.action {
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!(":warning: *{}:* {}", l.what_to_do, slack_escape(action))},
        }));
    }
    if let Some(message) = &summary.message {
        // A section's text takes at most 3,000 characters.
        let message: String = slack_escape(message).chars().take(3000).collect();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": message}}));
    }
    if !summary.link.is_empty() {
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!("<{}|{}>", summary.link, l.open)}],
        }));
    }
    let mut fallback = format!("{} ({})", summary.title, summary.status);
    if let Some(action) = &summary.action {
        fallback = format!("{fallback}: {action}");
    }
    // The fallback is mrkdwn too: escaped, so a title cannot ping a channel or hide a link.
    json!({"text": slack_escape(&fallback), "blocks": blocks})
}

fn teams(summary: &Summary) -> Value {
    let l = summary.labels;
    let mut facts = vec![json!({"title": l.status, "value": summary.status})];
    if let Some(impact) = &summary.impact {
        facts.push(json!({"title": l.impact, "value": impact}));
    }
    let mut body = vec![
        json!({"type": "TextBlock", "text": summary.title, "weight": "Bolder", "size": "Medium", "wrap": true}),
        json!({"type": "FactSet", "facts": facts}),
    ];
    if let Some(action) = &summary.action {
        body.push(json!({
            "type": "TextBlock",
            "text": format!("{}: {action}", l.what_to_do),
            "weight": "Bolder",
            "color": "Attention",
            "wrap": true,
        }));
    }
    if let Some(message) = &summary.message {
        body.push(json!({"type": "TextBlock", "text": message, "wrap": true}));
    }
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    });
    if !summary.link.is_empty() {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": l.open, "url": summary.link}]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

/// The body of a delivery in `format` for the notice whose CloudEvent is `cloud_event`.
pub fn message(
    format: WebhookFormat,
    cloud_event: &[u8],
    site: &Site,
) -> Result<String, DeliveryError> {
    let event: Value = serde_json::from_slice(cloud_event)?;
    let summary = Summary::of(&event, site);
    let body = match format {
        WebhookFormat::Slack => slack(&summary),
        WebhookFormat::Teams => teams(&summary),
        WebhookFormat::Cloudevents => event,
    };
    Ok(serde_json::to_string(&body)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn incident_event(language: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "specversion": "1.0",
            "type": "incident.resolved",
            "source": "https://status.example.com/v1/incidents/0b6c",
            "data": {
                "title": "Users cannot sign in <to> Teams & Outlook",
                "status": "resolved",
                "impact": "major",
                "language": language,
                "client_action": {"kind": "restart_client", "message": "Restart your clients to recover."},
                "updates": [
                    {"message": "We are investigating."},
                    {"message": "Fixed. If a user is still experiencing impact, they need to restart their clients to recover."}
                ]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_slack_message_has_text_and_blocks_with_the_action_first_and_mrkdwn_escaped() {
        let body: Value = serde_json::from_str(
            &message(
                WebhookFormat::Slack,
                &incident_event("en"),
                &Site::default(),
            )
            .unwrap(),
        )
        .unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(text.contains("Resolved") && text.contains("Restart your clients"));
        let blocks = body["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert!(blocks[1]["fields"][1]["text"]
            .as_str()
            .unwrap()
            .contains("Major"));
        let action = blocks[2]["text"]["text"].as_str().unwrap();
        assert!(action.contains("What to do") && action.contains("Restart your clients"));
        let message = blocks[3]["text"]["text"].as_str().unwrap();
        assert!(message.starts_with("Fixed."));
        assert!(blocks[4]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("<https://status.example.com/v1/incidents/0b6c|"));
        let escaped = message_of_title("Users cannot sign in <to> Teams & Outlook");
        assert_eq!(
            escaped,
            "Users cannot sign in &lt;to&gt; Teams &amp; Outlook"
        );
    }

    fn message_of_title(title: &str) -> String {
        slack_escape(title)
    }

    #[test]
    fn a_teams_message_carries_an_adaptive_card_in_the_notices_language() {
        let body: Value = serde_json::from_str(
            &message(
                WebhookFormat::Teams,
                &incident_event("cy"),
                &Site::default(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(body["type"], "message");
        let attachment = &body["attachments"][0];
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = &attachment["content"];
        assert_eq!(
            (card["type"].as_str(), card["version"].as_str()),
            (Some("AdaptiveCard"), Some("1.4"))
        );
        assert_eq!(card["body"][1]["facts"][0]["title"], "Statws");
        assert_eq!(card["body"][1]["facts"][0]["value"], "Wedi'i ddatrys");
        assert!(card["body"][2]["text"]
            .as_str()
            .unwrap()
            .contains("Restart your clients"));
        assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
    }
}
