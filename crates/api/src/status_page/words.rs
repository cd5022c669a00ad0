//! The words of the status page around the notices' own texts, in English and Welsh. A
//! page in any other language has its notices' texts in that language and these words in
//! English.

use domain::values::ServiceStatus;
use serde::Serialize;

/// Every fixed text of the pages.
#[derive(Debug, Serialize)]
pub struct Words {
    pub skip: &'static str,
    pub status_page: &'static str,
    pub services: &'static str,
    pub uptime_over: &'static str,
    pub days_ago: &'static str,
    pub today: &'static str,
    pub days_with_incidents: &'static str,
    pub no_data: &'static str,
    pub current_incidents: &'static str,
    pub no_current_incidents: &'static str,
    pub what_to_do: &'static str,
    pub status: &'static str,
    pub impact: &'static str,
    pub affected: &'static str,
    pub updates: &'static str,
    pub corrected: &'static str,
    pub earlier_texts: &'static str,
    pub reason: &'static str,
    pub maintenance: &'static str,
    pub no_maintenance: &'static str,
    pub from: &'static str,
    pub until: &'static str,
    pub subscribe_title: &'static str,
    pub subscribe_hint: &'static str,
    pub email_address: &'static str,
    pub only_services: &'static str,
    pub subscribe: &'static str,
    pub language: &'static str,
    pub history: &'static str,
    pub no_history: &'static str,
    pub older: &'static str,
    pub newer: &'static str,
    pub started: &'static str,
    pub resolved: &'static str,
    pub postmortem: &'static str,
    pub back: &'static str,
    pub updated: &'static str,
    pub live_hint: &'static str,
    pub feeds: &'static str,
    pub api: &'static str,
    pub incident: &'static str,
    pub ungrouped: &'static str,
    pub subscribed_title: &'static str,
    pub subscribed_text: &'static str,
    pub subscribe_failed: &'static str,
    pub overall_operational: &'static str,
    pub overall_degraded: &'static str,
    pub overall_partial: &'static str,
    pub overall_major: &'static str,
    pub overall_maintenance: &'static str,
}

const ENGLISH: Words = Words {
    skip: "Skip to the current status",
    status_page: "Status",
    services: "Services",
    uptime_over: "uptime over the last {days} days",
    days_ago: "{days} days ago",
    today: "Today",
    days_with_incidents: "Days with incidents",
    no_data: "No data",
    current_incidents: "Current incidents",
    no_current_incidents: "No current incidents.",
    what_to_do: "What to do",
    status: "Status",
    impact: "Impact",
    affected: "Affected",
    updates: "Updates, newest first",
    corrected: "Corrected",
    earlier_texts: "Earlier texts of this update",
    reason: "Reason",
    maintenance: "Planned maintenance",
    no_maintenance: "No maintenance in progress or planned.",
    from: "From",
    until: "until",
    subscribe_title: "Get notices by email",
    subscribe_hint: "We first send a link to confirm the address. Every email has a one-click \
                     unsubscribe link.",
    email_address: "Email address",
    only_services: "Only these services (none chosen: all)",
    subscribe: "Subscribe",
    language: "Language",
    history: "Past incidents",
    no_history: "No past incidents.",
    older: "Older incidents",
    newer: "Newer incidents",
    started: "Started",
    resolved: "Resolved",
    postmortem: "Postmortem",
    back: "Current status",
    updated: "Updated",
    live_hint: "This page updates itself when a notice is published.",
    feeds: "Feeds",
    api: "API",
    incident: "Incident",
    ungrouped: "Other services",
    subscribed_title: "Check your inbox",
    subscribed_text: "If the address can receive notices, a link to confirm it is on its way. \
                      Nothing is sent until it is confirmed.",
    subscribe_failed: "The subscription could not be made",
    overall_operational: "All services are working normally",
    overall_degraded: "Some services are slower than usual",
    overall_partial: "Some services are partly down",
    overall_major: "Some services are down",
    overall_maintenance: "Maintenance is in progress",
};

const WELSH: Words = Words {
    skip: "Neidio i'r statws cyfredol",
    status_page: "Statws",
    services: "Gwasanaethau",
    uptime_over: "o amser gweithredu dros y {days} diwrnod diwethaf",
    days_ago: "{days} diwrnod yn ôl",
    today: "Heddiw",
    days_with_incidents: "Diwrnodau gyda digwyddiadau",
    no_data: "Dim data",
    current_incidents: "Digwyddiadau cyfredol",
    no_current_incidents: "Dim digwyddiadau cyfredol.",
    what_to_do: "Beth i'w wneud",
    status: "Statws",
    impact: "Effaith",
    affected: "Yr effeithir arnynt",
    updates: "Diweddariadau, y mwyaf newydd yn gyntaf",
    corrected: "Wedi'i gywiro",
    earlier_texts: "Testunau cynharach y diweddariad hwn",
    reason: "Rheswm",
    maintenance: "Gwaith cynnal wedi'i gynllunio",
    no_maintenance: "Dim gwaith cynnal ar y gweill nac wedi'i gynllunio.",
    from: "O",
    until: "tan",
    subscribe_title: "Cael hysbysiadau drwy e-bost",
    subscribe_hint: "Rydym yn anfon dolen i gadarnhau'r cyfeiriad yn gyntaf. Mae dolen \
                     dad-danysgrifio un clic ym mhob e-bost.",
    email_address: "Cyfeiriad e-bost",
    only_services: "Dim ond y gwasanaethau hyn (dim wedi'u dewis: pob un)",
    subscribe: "Tanysgrifio",
    language: "Iaith",
    history: "Digwyddiadau blaenorol",
    no_history: "Dim digwyddiadau blaenorol.",
    older: "Digwyddiadau hŷn",
    newer: "Digwyddiadau mwy newydd",
    started: "Dechreuodd",
    resolved: "Datryswyd",
    postmortem: "Adolygiad wedi'r digwyddiad",
    back: "Statws cyfredol",
    updated: "Diweddarwyd",
    live_hint: "Mae'r dudalen hon yn diweddaru ei hun pan gyhoeddir hysbysiad.",
    feeds: "Ffrydiau",
    api: "API",
    incident: "Digwyddiad",
    ungrouped: "Gwasanaethau eraill",
    subscribed_title: "Gwiriwch eich mewnflwch",
    subscribed_text: "Os gall y cyfeiriad dderbyn hysbysiadau, mae dolen i'w gadarnhau ar ei \
                      ffordd. Ni anfonir dim nes iddo gael ei gadarnhau.",
    subscribe_failed: "Nid oedd modd tanysgrifio",
    overall_operational: "Mae pob gwasanaeth yn gweithio'n iawn",
    overall_degraded: "Mae rhai gwasanaethau'n arafach na'r arfer",
    overall_partial: "Mae rhai gwasanaethau i lawr yn rhannol",
    overall_major: "Mae rhai gwasanaethau i lawr",
    overall_maintenance: "Mae gwaith cynnal ar y gweill",
};

/// Welsh for tags `cy` and `cy-…`, English otherwise.
pub fn words(language: &str) -> &'static Words {
    if is_welsh(language) {
        &WELSH
    } else {
        &ENGLISH
    }
}

fn is_welsh(language: &str) -> bool {
    language == "cy" || language.starts_with("cy-")
}

/// The languages the page's own words exist in, each named in itself.
pub const LANGUAGES: [(&str, &str); 2] = [("en", "English"), ("cy", "Cymraeg")];

impl Words {
    /// The headline of the page when the worst status of any service is `worst`.
    pub fn overall(&self, worst: ServiceStatus) -> &'static str {
        match worst {
            ServiceStatus::Operational => self.overall_operational,
            ServiceStatus::DegradedPerformance => self.overall_degraded,
            ServiceStatus::PartialOutage => self.overall_partial,
            ServiceStatus::MajorOutage => self.overall_major,
            ServiceStatus::UnderMaintenance => self.overall_maintenance,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welsh_is_chosen_for_welsh_tags_only() {
        assert_eq!(words("cy").skip, WELSH.skip);
        assert_eq!(words("cy-GB").skip, WELSH.skip);
        assert_eq!(words("en").skip, ENGLISH.skip);
        assert_eq!(words("fr").skip, ENGLISH.skip);
    }
}
