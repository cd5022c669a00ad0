//! Email subscribers: people who asked for notices by email. A subscription is requested
//! (anyone, for an address), confirmed through the link mailed to that address, and ends
//! when the person unsubscribes or an admin deletes it.
//!
//! An address is personal data, and the history is never rewritten: so the domain never
//! sees one in clear. It carries the address *sealed* (encrypted under a key of that
//! subscriber's own, kept outside the history by the delivery crate); ending a
//! subscription is the event `subscriber.erased`, and the key is destroyed in the same
//! transaction, after which no copy of the history can give the address back.
//!
//! Its events are administrative history, never notices.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::language::Language;
use crate::values::{label, text, ServiceId, MAX_LIST_LEN, MAX_TITLE_CHARS};
use crate::{decode, Decider, DecodeError, DomainError, StoredData, Validation};

pub type SubscriberId = Uuid;

/// Longest sealed address accepted (an address is at most 254 characters; sealed and
/// encoded it is under 400).
pub const MAX_SEALED_CHARS: usize = 1_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Request(Request),
    Confirm(Confirm),
    Erase(Erase),
}

/// Asks for a subscription, or (while it waits for confirmation) asks again, perhaps with
/// another choice of services or language: each request sends a confirmation.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub subscriber_id: SubscriberId,
    /// The address sealed under the subscriber's key: opaque here.
    pub sealed_address: String,
    /// Empty: notices of every service.
    pub service_ids: Vec<ServiceId>,
    /// A tag as the client wrote it; `None`: the default language.
    pub language: Option<String>,
    /// The tenant whose private notices it also receives (the subscribing key's).
    pub tenant: Option<String>,
    /// `anonymous`, or the id of the key that subscribed the address.
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Confirm {
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Erase {
    pub reason: ErasureReason,
    pub author: String,
    pub at: DateTime<Utc>,
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasureReason {
    /// The person followed the unsubscribe link (or their mail client's one-click button).
    Unsubscribed,
    /// An admin deleted it.
    Deleted,
    /// The API key that subscribed the address was revoked.
    KeyRevoked,
}

/// Serialises as its payload alone; read back by type name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    Requested(SubscriberRequested),
    Confirmed(SubscriberConfirmed),
    Erased(SubscriberErased),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberRequested {
    pub subscriber_id: SubscriberId,
    pub sealed_address: String,
    pub service_ids: Vec<ServiceId>,
    pub language: Option<Language>,
    pub tenant: Option<String>,
    pub author: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberConfirmed {
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberErased {
    pub reason: ErasureReason,
    pub author: String,
    pub at: DateTime<Utc>,
}

impl Event {
    pub fn schema_version(&self) -> u32 {
        1
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Requested(_) => "subscriber.requested",
            Event::Confirmed(_) => "subscriber.confirmed",
            Event::Erased(_) => "subscriber.erased",
        }
    }

    pub fn from_stored<'a>(
        type_name: &str,
        schema_version: u32,
        data: impl Into<StoredData<'a>>,
    ) -> Result<Event, DecodeError> {
        let data = data.into();
        match type_name {
            "subscriber.requested" => {
                decode(type_name, schema_version, data, &[], Event::Requested)
            }
            "subscriber.confirmed" => {
                decode(type_name, schema_version, data, &[], Event::Confirmed)
            }
            "subscriber.erased" => decode(type_name, schema_version, data, &[], Event::Erased),
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

/// Where a subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SubscriberState {
    /// Waiting for the address to confirm: receives nothing but confirmations.
    Pending,
    /// Confirmed: receives every notice it chose.
    Active,
    /// Ended (unsubscribed or deleted): its address is erased.
    Unsubscribed,
}

impl SubscriberState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriberState::Pending => "pending",
            SubscriberState::Active => "active",
            SubscriberState::Unsubscribed => "unsubscribed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscriber {
    pub id: SubscriberId,
    /// Sealed; readable only while the subscriber's key exists.
    pub sealed_address: String,
    pub service_ids: Vec<ServiceId>,
    pub language: Option<Language>,
    pub tenant: Option<String>,
    pub state: SubscriberState,
    pub created_at: DateTime<Utc>,
    /// The latest request (each sends a confirmation, valid from then).
    pub requested_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub ended_reason: Option<ErasureReason>,
}

pub type State = Option<Subscriber>;

pub struct SubscriberDecider;

fn distinct(values: &[ServiceId]) -> Result<Vec<ServiceId>, DomainError> {
    if values.len() > MAX_LIST_LEN {
        return Err(DomainError::invalid(
            "service_ids",
            format!("at most {MAX_LIST_LEN} entries"),
        ));
    }
    let mut out = Vec::with_capacity(values.len());
    for value in values {
        if !out.contains(value) {
            out.push(*value);
        }
    }
    Ok(out)
}

fn sealed(value: &str) -> Result<String, DomainError> {
    if value.is_empty() || value.len() > MAX_SEALED_CHARS || !value.is_ascii() {
        return Err(DomainError::invalid(
            "sealed_address",
            "must be a sealed address",
        ));
    }
    Ok(value.to_owned())
}

impl Decider for SubscriberDecider {
    type Command = Command;
    type Event = Event;
    type State = State;

    fn decide(command: &Command, state: &State) -> Result<Vec<Event>, DomainError> {
        match command {
            Command::Request(c) => {
                match state.as_ref().map(|s| s.state) {
                    None | Some(SubscriberState::Pending) => {}
                    Some(SubscriberState::Active) => {
                        return Err(DomainError::Conflict("already subscribed".into()))
                    }
                    Some(SubscriberState::Unsubscribed) => {
                        return Err(DomainError::Conflict("this subscription has ended".into()))
                    }
                }
                let mut v = Validation::default();
                let sealed_address = v.check(sealed(&c.sealed_address));
                let service_ids = v.check(distinct(&c.service_ids));
                let tenant = v.check(c.tenant.as_deref().map(|t| label("tenant", t)).transpose());
                let language = v.check(
                    c.language
                        .as_deref()
                        .map(|tag| Language::parse("language", tag))
                        .transpose(),
                );
                let author = v.check(text("author", &c.author, MAX_TITLE_CHARS));
                v.finish()?;
                if let Some(existing) = state {
                    if existing.tenant != tenant {
                        return Err(DomainError::Conflict(
                            "a subscription keeps its tenant".into(),
                        ));
                    }
                }
                Ok(vec![Event::Requested(SubscriberRequested {
                    subscriber_id: c.subscriber_id,
                    sealed_address,
                    service_ids,
                    language,
                    tenant,
                    author,
                    at: c.at,
                })])
            }
            Command::Confirm(c) => {
                let subscriber = state
                    .as_ref()
                    .ok_or_else(|| DomainError::NotFound("subscriber".into()))?;
                match subscriber.state {
                    SubscriberState::Pending => {
                        Ok(vec![Event::Confirmed(SubscriberConfirmed { at: c.at })])
                    }
                    // Confirming twice changes nothing.
                    SubscriberState::Active => Ok(Vec::new()),
                    SubscriberState::Unsubscribed => {
                        Err(DomainError::Conflict("this subscription has ended".into()))
                    }
                }
            }
            Command::Erase(c) => {
                let subscriber = state
                    .as_ref()
                    .ok_or_else(|| DomainError::NotFound("subscriber".into()))?;
                if subscriber.state == SubscriberState::Unsubscribed {
                    return Ok(Vec::new());
                }
                let author = text("author", &c.author, MAX_TITLE_CHARS)?;
                Ok(vec![Event::Erased(SubscriberErased {
                    reason: c.reason,
                    author,
                    at: c.at,
                })])
            }
        }
    }

    fn evolve(state: State, event: &Event) -> State {
        match (state, event) {
            (None, Event::Requested(e)) => Some(Subscriber {
                id: e.subscriber_id,
                sealed_address: e.sealed_address.clone(),
                service_ids: e.service_ids.clone(),
                language: e.language.clone(),
                tenant: e.tenant.clone(),
                state: SubscriberState::Pending,
                created_at: e.at,
                requested_at: e.at,
                confirmed_at: None,
                ended_at: None,
                ended_reason: None,
            }),
            (Some(mut subscriber), Event::Requested(e)) => {
                subscriber.sealed_address = e.sealed_address.clone();
                subscriber.service_ids = e.service_ids.clone();
                subscriber.language = e.language.clone();
                subscriber.requested_at = e.at;
                Some(subscriber)
            }
            (Some(mut subscriber), Event::Confirmed(e)) => {
                if subscriber.state == SubscriberState::Pending {
                    subscriber.state = SubscriberState::Active;
                    subscriber.confirmed_at = Some(e.at);
                }
                Some(subscriber)
            }
            (Some(mut subscriber), Event::Erased(e)) => {
                subscriber.state = SubscriberState::Unsubscribed;
                subscriber.ended_at.get_or_insert(e.at);
                subscriber.ended_reason.get_or_insert(e.reason);
                Some(subscriber)
            }
            (state, _) => state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::given::given;
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, 9, minute, 0).unwrap()
    }

    fn request(minute: u32) -> Command {
        Command::Request(Request {
            subscriber_id: Uuid::from_u128(9),
            sealed_address: "v1.c2VhbGVk".into(),
            service_ids: vec![Uuid::from_u128(1), Uuid::from_u128(1)],
            language: Some("CY".into()),
            tenant: None,
            author: "anonymous".into(),
            at: at(minute),
        })
    }

    fn erase(reason: ErasureReason) -> Command {
        Command::Erase(Erase {
            reason,
            author: "anonymous".into(),
            at: at(30),
        })
    }

    #[test]
    fn a_request_waits_for_its_confirmation_and_may_be_asked_again_until_then() {
        let first = given::<SubscriberDecider>(&[]).when(request(0)).unwrap();
        let again = given::<SubscriberDecider>(&first).when(request(5)).unwrap();
        let history: Vec<Event> = first.into_iter().chain(again).collect();
        let pending = SubscriberDecider::fold(&history).unwrap();
        assert_eq!(pending.state, SubscriberState::Pending);
        assert_eq!(pending.service_ids, [Uuid::from_u128(1)]);
        assert_eq!(pending.language.as_ref().map(Language::as_str), Some("cy"));
        assert_eq!((pending.created_at, pending.requested_at), (at(0), at(5)));
        let confirm = Command::Confirm(Confirm { at: at(6) });
        let confirmed = given::<SubscriberDecider>(&history)
            .when(confirm.clone())
            .unwrap();
        let history: Vec<Event> = history.into_iter().chain(confirmed).collect();
        let active = SubscriberDecider::fold(&history).unwrap();
        assert_eq!(
            (active.state, active.confirmed_at),
            (SubscriberState::Active, Some(at(6)))
        );
        // Confirming again is no change; asking again once active is refused.
        assert_eq!(
            given::<SubscriberDecider>(&history).when(confirm),
            Ok(vec![])
        );
        assert!(matches!(
            given::<SubscriberDecider>(&history).when(request(7)),
            Err(DomainError::Conflict(_))
        ));
    }

    #[test]
    fn an_erased_subscription_stays_ended_and_erasing_twice_changes_nothing() {
        let history = given::<SubscriberDecider>(&[]).when(request(0)).unwrap();
        let erased = given::<SubscriberDecider>(&history)
            .when(erase(ErasureReason::Unsubscribed))
            .unwrap();
        let history: Vec<Event> = history.into_iter().chain(erased).collect();
        let ended = SubscriberDecider::fold(&history).unwrap();
        assert_eq!(ended.state, SubscriberState::Unsubscribed);
        assert_eq!(ended.ended_reason, Some(ErasureReason::Unsubscribed));
        assert_eq!(
            given::<SubscriberDecider>(&history).when(erase(ErasureReason::Deleted)),
            Ok(vec![])
        );
        for command in [request(40), Command::Confirm(Confirm { at: at(40) })] {
            assert!(matches!(
                given::<SubscriberDecider>(&history).when(command),
                Err(DomainError::Conflict(_))
            ));
        }
        assert!(matches!(
            given::<SubscriberDecider>(&[]).when(erase(ErasureReason::Deleted)),
            Err(DomainError::NotFound(_))
        ));
    }

    #[test]
    fn a_request_refuses_a_bad_language_and_too_many_services_at_once() {
        let Command::Request(mut bad) = request(0) else {
            unreachable!()
        };
        bad.language = Some("not a tag!".into());
        bad.service_ids = (0..=MAX_LIST_LEN as u128).map(Uuid::from_u128).collect();
        let Err(DomainError::Invalid(errors)) =
            given::<SubscriberDecider>(&[]).when(Command::Request(bad))
        else {
            panic!("accepted")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["service_ids", "language"]);
    }

    #[test]
    fn events_round_trip_through_their_stored_form() {
        for event in given::<SubscriberDecider>(&[]).when(request(0)).unwrap() {
            let stored = serde_json::to_value(&event).unwrap();
            assert_eq!(
                Event::from_stored(event.type_name(), event.schema_version(), stored),
                Ok(event)
            );
        }
    }
}
