//! The values commands carry, validated where they enter the domain.

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::DomainError;

pub type ServiceId = Uuid;
pub type IncidentId = Uuid;
pub type MaintenanceId = Uuid;
pub type UpdateId = Uuid;

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_MESSAGE_CHARS: usize = 10_000;
pub const MAX_POSTMORTEM_CHARS: usize = 100_000;
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;
pub const MAX_ACTION_MESSAGE_CHARS: usize = 500;
pub const MAX_LABEL_CHARS: usize = 64;
pub const MAX_LIST_LEN: usize = 100;

/// The earliest time a command may carry: 1970-01-01T00:00:00Z.
pub const EARLIEST_TIME_SECS: i64 = 0;
/// The latest time a command may carry: 9999-12-31T23:59:59Z (RFC 3339 writes four-digit
/// years; PostgreSQL would store far more, and chrono parse it, but no client reads it back).
pub const LATEST_TIME_SECS: i64 = 253_402_300_799;

/// A time a client gave, between 1970 and the end of 9999 (UTC).
pub fn time(
    field: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, DomainError> {
    if (EARLIEST_TIME_SECS..=LATEST_TIME_SECS).contains(&at.timestamp()) {
        Ok(at)
    } else {
        Err(DomainError::invalid(
            field,
            "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
        ))
    }
}

/// Trimmed text of 1 to `max` characters, without control characters other than line
/// breaks and tabs (PostgreSQL's jsonb cannot even store NUL).
pub fn text(field: &str, value: &str, max: usize) -> Result<String, DomainError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if trimmed.chars().count() > max {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(DomainError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

/// Like [`text`], but empty is allowed (and gives an empty string).
pub fn optional_text(field: &str, value: &str, max: usize) -> Result<String, DomainError> {
    if value.trim().is_empty() {
        Ok(String::new())
    } else {
        text(field, value, max)
    }
}

/// A label such as a region or a tenant: 1 to 64 of `a-z 0-9 - _ .`, compared lower-case.
pub fn label(field: &str, value: &str) -> Result<String, DomainError> {
    let value = value.trim().to_ascii_lowercase();
    let valid = !value.is_empty()
        && value.len() <= MAX_LABEL_CHARS
        && value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if valid {
        Ok(value)
    } else {
        Err(DomainError::invalid(
            field,
            format!("must be 1 to {MAX_LABEL_CHARS} of a-z, 0-9, '-', '_', '.'"),
        ))
    }
}

/// Distinct labels, in the order first given, at most [`MAX_LIST_LEN`].
pub fn labels(field: &str, values: &[String]) -> Result<Vec<String>, DomainError> {
    if values.len() > MAX_LIST_LEN {
        return Err(DomainError::invalid(
            field,
            format!("at most {MAX_LIST_LEN} entries"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let value = label(&format!("{field}[{i}]"), value)?;
        if !out.contains(&value) {
            out.push(value);
        }
    }
    Ok(out)
}

/// The rules of [`text`] and [`label`] as JSON Schema, for the request bodies and parameters
/// of the OpenAPI document, so that clients (and the contract fuzzer) know them up front.
#[cfg(feature = "openapi")]
pub mod schema {
    use utoipa::openapi::schema::SchemaType;
    use utoipa::openapi::{Object, ObjectBuilder, Type};

    /// No control character but line breaks and tabs, and at least one that is not
    /// white space: what [`super::text`] accepts once the value is trimmed.
    const TEXT_PATTERN: &str = concat!(
        r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*",
        r"[^\s\u0000-\u001F\u007F-\u009F]",
        r"[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$",
    );

    const OPTIONAL_TEXT_PATTERN: &str =
        r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$";

    /// Text of 1 to `max` characters, as [`super::text`] takes it.
    pub fn text(max: usize) -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(max))
            .pattern(Some(TEXT_PATTERN))
            .build()
    }

    /// An RFC 3339 time between 1970 and 9999, as [`super::time`] takes it (the format says
    /// RFC 3339; the pattern, the years).
    pub fn time() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .pattern(Some(TIME_PATTERN))
            .build()
    }

    /// Years 1970 to 9999.
    pub const TIME_PATTERN: &str = r"^(19[7-9][0-9]|[2-9][0-9]{3})-";

    /// A label such as a region or a tenant, as [`super::label`] takes it.
    pub fn label() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!(
                "^[A-Za-z0-9._-]{{1,{}}}$",
                super::MAX_LABEL_CHARS
            )))
            .build()
    }

    /// Like [`text`] but blank is allowed, as [`super::optional_text`] takes it.
    pub fn optional_text(max: usize) -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(max))
            .pattern(Some(OPTIONAL_TEXT_PATTERN))
            .build()
    }

    pub fn description() -> Object {
        optional_text(super::MAX_DESCRIPTION_CHARS)
    }

    pub fn title() -> Object {
        text(super::MAX_TITLE_CHARS)
    }

    /// `schema`, or `null` (an optional field, where `null` means absent).
    fn or_null(mut schema: Object) -> Object {
        schema.schema_type = SchemaType::from_iter([Type::String, Type::Null]);
        schema
    }

    pub fn optional_title() -> Object {
        or_null(title())
    }

    pub fn optional_description() -> Object {
        or_null(description())
    }

    pub fn optional_label() -> Object {
        or_null(label())
    }

    pub fn message() -> Object {
        text(super::MAX_MESSAGE_CHARS)
    }

    pub fn postmortem() -> Object {
        text(super::MAX_POSTMORTEM_CHARS)
    }

    /// Labels, at most [`super::MAX_LIST_LEN`] (repeats count once).
    pub fn labels() -> utoipa::openapi::Array {
        utoipa::openapi::ArrayBuilder::new()
            .items(label())
            .max_items(Some(super::MAX_LIST_LEN))
            .build()
    }

    /// The tenants of a private notice: at least one.
    pub fn tenants() -> utoipa::openapi::Array {
        let mut tenants = labels();
        tenants.min_items = Some(1);
        tenants
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Impact {
    None,
    Minor,
    Major,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum IncidentStatus {
    Investigating,
    Identified,
    Monitoring,
    Resolved,
}

impl IncidentStatus {
    pub fn is_open(self) -> bool {
        self != IncidentStatus::Resolved
    }

    /// The stored and served name (the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Investigating => "investigating",
            IncidentStatus::Identified => "identified",
            IncidentStatus::Monitoring => "monitoring",
            IncidentStatus::Resolved => "resolved",
        }
    }
}

/// A service's status as users see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ServiceStatus {
    Operational,
    DegradedPerformance,
    PartialOutage,
    MajorOutage,
    UnderMaintenance,
}

impl ServiceStatus {
    /// The stored and served name (the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Operational => "operational",
            ServiceStatus::DegradedPerformance => "degraded_performance",
            ServiceStatus::PartialOutage => "partial_outage",
            ServiceStatus::MajorOutage => "major_outage",
            ServiceStatus::UnderMaintenance => "under_maintenance",
        }
    }

    /// Worse is higher. Maintenance ranks above operational but below any incident
    /// status: `under_maintenance` shows only when no incident is worse.
    pub fn severity(self) -> u8 {
        match self {
            ServiceStatus::Operational => 0,
            ServiceStatus::UnderMaintenance => 1,
            ServiceStatus::DegradedPerformance => 2,
            ServiceStatus::PartialOutage => 3,
            ServiceStatus::MajorOutage => 4,
        }
    }

    /// The worst of `statuses`, operational when there are none.
    pub fn worst(statuses: impl IntoIterator<Item = ServiceStatus>) -> ServiceStatus {
        statuses
            .into_iter()
            .max_by_key(|s| s.severity())
            .unwrap_or(ServiceStatus::Operational)
    }
}

/// Who may see a notice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "visibility", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Audience {
    #[default]
    Public,
    Tenants {
        #[cfg_attr(feature = "openapi", schema(schema_with = schema::tenants))]
        tenants: Vec<String>,
    },
}

impl Audience {
    pub fn validated(&self) -> Result<Audience, DomainError> {
        match self {
            Audience::Public => Ok(Audience::Public),
            Audience::Tenants { tenants } => {
                let tenants = labels("audience.tenants", tenants)?;
                if tenants.is_empty() {
                    return Err(DomainError::invalid(
                        "audience.tenants",
                        "name at least one tenant, or use visibility public",
                    ));
                }
                Ok(Audience::Tenants { tenants })
            }
        }
    }

    /// May a reader of `tenant` (none: anonymous or not tenant-bound) see this?
    pub fn admits(&self, tenant: Option<&str>) -> bool {
        match self {
            Audience::Public => true,
            Audience::Tenants { tenants } => tenant.is_some_and(|t| tenants.iter().any(|x| x == t)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ClientActionKind {
    None,
    RestartClient,
    SignInAgain,
    UpdateClient,
    ClearCache,
    RetryLater,
}

/// What an affected client app should do, machine-readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAction {
    pub kind: ClientActionKind,
    #[serde(default)]
    pub message: String,
}

/// The schema says what [`ClientAction::validated`] requires: `none` may leave the message
/// out, any other kind must say in words what to do.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ClientAction {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        let kinds = |names: &[&str]| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(names.iter().map(|n| serde_json::Value::from(*n))))
                .build()
        };
        let none = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("kind", kinds(&["none"]))
            .property("message", schema::optional_text(MAX_ACTION_MESSAGE_CHARS))
            .required("kind")
            .build();
        let act = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "kind",
                kinds(&[
                    "restart_client",
                    "sign_in_again",
                    "update_client",
                    "clear_cache",
                    "retry_later",
                ]),
            )
            .property("message", schema::text(MAX_ACTION_MESSAGE_CHARS))
            .required("kind")
            .required("message")
            .build();
        let one_of = OneOfBuilder::new()
            .item(none)
            .item(act)
            .description(Some(
                "What an affected client app should do, machine-readable: `kind` for the app, \
                 `message` for its user (required for every kind but `none`).",
            ))
            .build();
        utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::OneOf(one_of))
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ClientAction {}

impl Default for ClientAction {
    fn default() -> Self {
        ClientAction {
            kind: ClientActionKind::None,
            message: String::new(),
        }
    }
}

impl ClientAction {
    /// Any action but `none` tells the user what to do in words too.
    pub fn validated(&self) -> Result<ClientAction, DomainError> {
        let message = if self.kind == ClientActionKind::None {
            optional_text(
                "client_action.message",
                &self.message,
                MAX_ACTION_MESSAGE_CHARS,
            )?
        } else {
            text(
                "client_action.message",
                &self.message,
                MAX_ACTION_MESSAGE_CHARS,
            )?
        };
        Ok(ClientAction {
            kind: self.kind,
            message,
        })
    }
}

/// A service an incident affects, and how badly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AffectedService {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub service_id: ServiceId,
    pub status: ServiceStatus,
}

/// Validates the services an incident affects: distinct, at most [`MAX_LIST_LEN`], and
/// never `under_maintenance` (that status comes from maintenances only).
pub fn affected_services(values: &[AffectedService]) -> Result<Vec<AffectedService>, DomainError> {
    if values.len() > MAX_LIST_LEN {
        return Err(DomainError::invalid(
            "affected_services",
            format!("at most {MAX_LIST_LEN} services"),
        ));
    }
    let mut out: Vec<AffectedService> = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        if value.status == ServiceStatus::UnderMaintenance {
            return Err(DomainError::invalid(
                format!("affected_services[{i}].status"),
                "an incident cannot put a service under maintenance; schedule a maintenance",
            ));
        }
        if out.iter().any(|o| o.service_id == value.service_id) {
            return Err(DomainError::invalid(
                format!("affected_services[{i}].service_id"),
                "listed twice",
            ));
        }
        out.push(*value);
    }
    Ok(out)
}

/// What a notice says happened: the CloudEvents `type` of what subscribers receive, and
/// what a webhook may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NoticeType {
    #[serde(rename = "incident.declared")]
    IncidentDeclared,
    #[serde(rename = "incident.updated")]
    IncidentUpdated,
    #[serde(rename = "incident.resolved")]
    IncidentResolved,
    #[serde(rename = "incident.reopened")]
    IncidentReopened,
    #[serde(rename = "incident.corrected")]
    IncidentCorrected,
    #[serde(rename = "incident.postmortem_published")]
    IncidentPostmortemPublished,
    #[serde(rename = "maintenance.scheduled")]
    MaintenanceScheduled,
    #[serde(rename = "maintenance.updated")]
    MaintenanceUpdated,
    /// A maintenance starts soon (`remind_before_minutes` before it).
    #[serde(rename = "maintenance.reminder")]
    MaintenanceReminder,
    #[serde(rename = "service.updated")]
    ServiceUpdated,
}

impl NoticeType {
    pub const ALL: [NoticeType; 10] = [
        NoticeType::IncidentDeclared,
        NoticeType::IncidentUpdated,
        NoticeType::IncidentResolved,
        NoticeType::IncidentReopened,
        NoticeType::IncidentCorrected,
        NoticeType::IncidentPostmortemPublished,
        NoticeType::MaintenanceScheduled,
        NoticeType::MaintenanceUpdated,
        NoticeType::MaintenanceReminder,
        NoticeType::ServiceUpdated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NoticeType::IncidentDeclared => "incident.declared",
            NoticeType::IncidentUpdated => "incident.updated",
            NoticeType::IncidentResolved => "incident.resolved",
            NoticeType::IncidentReopened => "incident.reopened",
            NoticeType::IncidentCorrected => "incident.corrected",
            NoticeType::IncidentPostmortemPublished => "incident.postmortem_published",
            NoticeType::MaintenanceScheduled => "maintenance.scheduled",
            NoticeType::MaintenanceUpdated => "maintenance.updated",
            NoticeType::MaintenanceReminder => "maintenance.reminder",
            NoticeType::ServiceUpdated => "service.updated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notice_type_names_are_their_serde_names() {
        for notice in NoticeType::ALL {
            assert_eq!(serde_json::to_value(notice).unwrap(), notice.as_str());
        }
    }

    #[test]
    fn text_is_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(
            text("t", "  Sign-in failures \n", 200).unwrap(),
            "Sign-in failures"
        );
        assert!(text("t", "   ", 200).is_err());
        assert!(text("t", &"x".repeat(201), 200).is_err());
        assert!(
            text("t", &"é".repeat(200), 200).is_ok(),
            "characters, not bytes"
        );
        assert!(text("t", "a\u{0}b", 200).is_err());
        assert!(text("t", "line one\nline two\ttab", 200).is_ok());
    }

    #[test]
    fn labels_are_lower_case_distinct_and_restricted() {
        let given = vec!["Europe".to_owned(), "asia".into(), "europe".into()];
        assert_eq!(labels("regions", &given).unwrap(), vec!["europe", "asia"]);
        assert!(label("r", "north america").is_err());
        assert!(label("r", "").is_err());
        assert!(label("r", &"a".repeat(65)).is_err());
    }

    #[test]
    fn audience_and_client_action_have_their_documented_shape() {
        let tenants: Audience =
            serde_json::from_value(json!({ "visibility": "tenants", "tenants": ["contoso"] }))
                .unwrap();
        assert!(
            tenants.admits(Some("contoso"))
                && !tenants.admits(Some("fabrikam"))
                && !tenants.admits(None)
        );
        assert_eq!(
            serde_json::to_value(Audience::Public).unwrap(),
            json!({ "visibility": "public" })
        );
        assert!(Audience::Tenants { tenants: vec![] }.validated().is_err());
        assert!(serde_json::from_value::<Audience>(json!({ "visibility": "secret" })).is_err());

        let action: ClientAction = serde_json::from_value(
            json!({ "kind": "restart_client", "message": "Restart to recover" }),
        )
        .unwrap();
        assert!(action.validated().is_ok());
        let silent = ClientAction {
            kind: ClientActionKind::RestartClient,
            message: String::new(),
        };
        assert!(silent.validated().is_err(), "an action needs words");
        assert!(
            serde_json::from_value::<ClientAction>(json!({ "kind": "reboot_planet" })).is_err()
        );
    }

    #[test]
    fn status_names_are_the_serde_names() {
        use ServiceStatus::*;
        for status in [
            Operational,
            DegradedPerformance,
            PartialOutage,
            MajorOutage,
            UnderMaintenance,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        for status in [
            IncidentStatus::Investigating,
            IncidentStatus::Identified,
            IncidentStatus::Monitoring,
            IncidentStatus::Resolved,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }

    #[test]
    fn maintenance_shows_only_when_no_incident_is_worse() {
        use ServiceStatus::*;
        assert_eq!(ServiceStatus::worst([]), Operational);
        assert_eq!(
            ServiceStatus::worst([UnderMaintenance, Operational]),
            UnderMaintenance
        );
        assert_eq!(
            ServiceStatus::worst([UnderMaintenance, DegradedPerformance]),
            DegradedPerformance
        );
        assert_eq!(
            ServiceStatus::worst([PartialOutage, MajorOutage, DegradedPerformance]),
            MajorOutage
        );
    }
}

/// A resource's updates, oldest first. The list and each update are shared (`Arc`), so that
/// cloning a resource with a long timeline (the publisher keeps, compares and renders its
/// states) copies a pointer, not a pointer per update nor any update's text; adding an
/// update to a shared timeline copies the list of pointers once, and changing one update
/// copies only that one. Serialised as a plain array of updates.
///
/// Beside each update, shared with it, is the JSON its readers in the default language are
/// shown, once rendered ([`Timeline::shown`]): an update never changes after it is written
/// except through [`Timeline::find_mut`], which forgets it, so an answer that carries the
/// whole timeline renders only what is new since the last one.
#[derive(Clone)]
pub struct Timeline<T> {
    updates: Arc<Vec<Arc<T>>>,
    /// Same length as `updates`: each one's rendering, shared by every clone.
    shown: Arc<Vec<Arc<OnceLock<Box<RawValue>>>>>,
}

impl<T> Timeline<T> {
    pub fn push(&mut self, update: T) {
        Arc::make_mut(&mut self.updates).push(Arc::new(update));
        Arc::make_mut(&mut self.shown).push(Arc::default());
    }

    /// The first update that `matches`, to change (copied first if it is shared); its
    /// rendering is forgotten.
    pub fn find_mut(&mut self, matches: impl Fn(&T) -> bool) -> Option<&mut T>
    where
        T: Clone,
    {
        let at = self.updates.iter().position(|u| matches(u))?;
        Arc::make_mut(&mut self.shown)[at] = Arc::default();
        Some(Arc::make_mut(&mut Arc::make_mut(&mut self.updates)[at]))
    }
}

/// An update that readers in the default language are shown as one JSON value, the same
/// for every reader: what [`Timeline::shown`] keeps.
pub trait ShownInDefaultLanguage {
    fn json_in_default_language(&self) -> Box<RawValue>;
}

impl<T: ShownInDefaultLanguage> Timeline<T> {
    /// Each update as readers in the default language are shown it, rendered once per
    /// update and kept while the update stands.
    pub fn shown(&self) -> impl Iterator<Item = &RawValue> + '_ {
        (self.updates.iter().zip(self.shown.iter()))
            .map(|(update, shown)| &**shown.get_or_init(|| update.json_in_default_language()))
    }
}

impl<T: fmt::Debug> fmt::Debug for Timeline<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.updates.iter()).finish()
    }
}

impl<T: PartialEq> PartialEq for Timeline<T> {
    fn eq(&self, other: &Self) -> bool {
        self.updates == other.updates
    }
}

impl<T: Eq> Eq for Timeline<T> {}

impl<T> Default for Timeline<T> {
    fn default() -> Self {
        Timeline {
            updates: Arc::default(),
            shown: Arc::default(),
        }
    }
}

impl<T> std::ops::Deref for Timeline<T> {
    type Target = [Arc<T>];

    fn deref(&self) -> &[Arc<T>] {
        &self.updates
    }
}

impl<T> From<Vec<T>> for Timeline<T> {
    fn from(updates: Vec<T>) -> Self {
        let updates: Vec<Arc<T>> = updates.into_iter().map(Arc::new).collect();
        let shown = updates.iter().map(|_| Arc::default()).collect();
        Timeline {
            updates: Arc::new(updates),
            shown: Arc::new(shown),
        }
    }
}

impl<'a, T> IntoIterator for &'a Timeline<T> {
    type Item = &'a Arc<T>;
    type IntoIter = std::slice::Iter<'a, Arc<T>>;

    fn into_iter(self) -> Self::IntoIter {
        self.updates.iter()
    }
}

impl<T: Serialize> Serialize for Timeline<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.updates.iter().map(|u| &**u))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Timeline<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(deserializer).map(Timeline::from)
    }
}

/// Times as chrono's serde writes them, faster.
///
/// chrono's `Serialize` hands the serializer a `Display` (RFC 3339, `SecondsFormat::AutoSi`,
/// `Z` for UTC), which serde_json writes and escapes piece by piece: about a tenth of the
/// CPU of an update's answer, whose every timeline entry has a time. This formats the same
/// text with the same chrono function (`to_rfc3339_opts(AutoSi, true)`) and hands it over
/// as one string, so every byte written is the one chrono's serde writes: events, their
/// hashes and answers are unchanged (the tests compare the two).
pub mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    /// The same for an optional time (`null` when absent).
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Serialize, Serializer};

        struct Time<'a>(&'a DateTime<Utc>);

        impl Serialize for Time<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                super::serialize(self.0, serializer)
            }
        }

        pub fn serialize<S: Serializer>(
            at: &Option<DateTime<Utc>>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => serializer.serialize_some(&Time(at)),
                None => serializer.serialize_none(),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use chrono::{DateTime, TimeZone, Utc};
        use serde::Serialize;

        #[derive(Serialize)]
        struct Ours {
            #[serde(serialize_with = "super::serialize")]
            at: DateTime<Utc>,
            #[serde(serialize_with = "super::option::serialize")]
            maybe: Option<DateTime<Utc>>,
        }

        #[derive(Serialize)]
        struct Chronos {
            at: DateTime<Utc>,
            maybe: Option<DateTime<Utc>>,
        }

        #[test]
        fn times_are_written_byte_for_byte_as_chronos_serde_writes_them() {
            let mut times = vec![
                Utc.timestamp_opt(0, 0).unwrap(),
                Utc.timestamp_opt(253_402_300_799, 999_999_999).unwrap(),
                // A leap second, as chrono represents it (nanoseconds past 10⁹).
                Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap(),
            ];
            // Every precision AutoSi chooses: none, milli-, micro- and nanoseconds.
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
            for _ in 0..10_000 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let secs = (seed % 253_402_300_800) as i64;
                let nanos = match seed % 4 {
                    0 => 0,
                    1 => (seed >> 20) as u32 % 1000 * 1_000_000,
                    2 => (seed >> 20) as u32 % 1_000_000 * 1000,
                    _ => (seed >> 20) as u32 % 1_000_000_000,
                };
                times.push(Utc.timestamp_opt(secs, nanos).unwrap());
            }
            for (n, at) in times.iter().enumerate() {
                let maybe = (n % 2 == 0).then_some(*at);
                let ours = serde_json::to_string(&Ours { at: *at, maybe }).unwrap();
                let chronos = serde_json::to_string(&Chronos { at: *at, maybe }).unwrap();
                assert_eq!(ours, chronos);
            }
        }
    }
}
