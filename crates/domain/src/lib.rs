//! Crier's domain: services, incidents and maintenances as deciders.
//!
//! `decide(command, state) → events | error` holds every rule; `evolve(state, event) →
//! state` folds history. Both are pure: no clock, no I/O, no randomness (ids and times come
//! in the commands), so replay, time travel and normal reads run the same code.

pub mod api_key;
pub mod incident;
pub mod language;
pub mod maintenance;
pub mod service;
pub mod subscriber;
pub mod template;
pub mod values;
pub mod webhook;

use serde::Serialize;

/// A command the domain refuses. Each maps to one HTTP status in the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Invalid input: one entry per offending field (400).
    #[error("invalid input: {0:?}")]
    Invalid(Vec<FieldError>),
    /// No such resource (404).
    #[error("{0} not found")]
    NotFound(String),
    /// Not valid in the resource's current state (409).
    #[error("{0}")]
    Conflict(String),
}

/// A stored event this build cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0}")]
    UnknownType(String),
    #[error("event type {0} has no reader for schema version {1}")]
    UnknownVersion(String, u32),
    #[error("event {0} is malformed: {1}")]
    Malformed(String, String),
}

/// One invalid field, as problem+json `errors` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::Invalid(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }
}

/// Gathers every field error of a command before refusing it, so a client learns all
/// of them at once.
#[derive(Debug, Default)]
pub struct Validation(Vec<FieldError>);

impl Validation {
    /// The value of a successful check. A failed check records its errors and gives
    /// `T::default()`, a placeholder that [`Validation::finish`] keeps from being used.
    pub fn check<T: Default>(&mut self, result: Result<T, DomainError>) -> T {
        match result {
            Ok(value) => value,
            Err(DomainError::Invalid(errors)) => {
                self.0.extend(errors);
                T::default()
            }
            Err(other) => {
                self.0.push(FieldError {
                    field: String::new(),
                    message: other.to_string(),
                });
                T::default()
            }
        }
    }

    /// Records an error that is not the result of a check.
    pub fn refuse(&mut self, field: &str, message: &str) {
        self.0.push(FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
        });
    }

    /// Refuses the command if any check failed.
    pub fn finish(self) -> Result<(), DomainError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DomainError::Invalid(self.0))
        }
    }
}

/// One step of an event's stored form: rewrites a payload of schema version n into
/// version n + 1, or says why it cannot.
pub(crate) type Upcast = fn(
    serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, String>;

/// The first of `steps` a payload stored at schema version `stored` needs (`steps.len()`
/// at the current version, which needs none), or why this build cannot read it.
fn first_step(type_name: &str, stored: u32, steps: &[Upcast]) -> Result<usize, DecodeError> {
    let current = steps.len() + 1;
    usize::try_from(stored)
        .ok()
        .filter(|v| (1..=current).contains(v))
        .map(|v| v - 1)
        .ok_or_else(|| DecodeError::UnknownVersion(type_name.to_owned(), stored))
}

/// Brings a payload of `type_name` stored at schema version `stored` up to the version this
/// build reads, which is `steps.len() + 1`: `steps[k]` turns version k + 1 into k + 2.
/// History is never rewritten; old payloads are upgraded each time they are read.
pub(crate) fn upcast(
    type_name: &str,
    stored: u32,
    data: serde_json::Value,
    steps: &[Upcast],
) -> Result<serde_json::Value, DecodeError> {
    let first_step = first_step(type_name, stored, steps)?;
    if first_step == steps.len() {
        return Ok(data);
    }
    let serde_json::Value::Object(mut object) = data else {
        return Err(DecodeError::Malformed(
            type_name.to_owned(),
            "the payload is not a JSON object".into(),
        ));
    };
    for step in &steps[first_step..] {
        object = step(object).map_err(|e| DecodeError::Malformed(type_name.to_owned(), e))?;
    }
    Ok(serde_json::Value::Object(object))
}

/// An event's payload as stored: the JSON text read from the log, or a value (tests, and
/// callers that built one).
#[derive(Debug, Clone)]
pub enum StoredData<'a> {
    Text(&'a str),
    Value(serde_json::Value),
}

impl From<serde_json::Value> for StoredData<'_> {
    fn from(value: serde_json::Value) -> Self {
        StoredData::Value(value)
    }
}

impl<'a> From<&'a str> for StoredData<'a> {
    fn from(text: &'a str) -> Self {
        StoredData::Text(text)
    }
}

/// Reads one event payload of `type_name`, stored at schema version `stored`, upcast
/// through `steps` (see [`upcast`]), and wraps it in its aggregate's event enum. A payload
/// read as text at the current version is decoded straight into `T`; only an older one
/// goes through a `serde_json::Value` to be upcast.
pub(crate) fn decode<T: serde::de::DeserializeOwned, E>(
    type_name: &str,
    stored: u32,
    data: StoredData<'_>,
    steps: &[Upcast],
    wrap: fn(T) -> E,
) -> Result<E, DecodeError> {
    let malformed =
        |e: serde_json::Error| DecodeError::Malformed(type_name.to_owned(), e.to_string());
    // A version this build does not know is refused as such, whatever the text holds.
    let current = first_step(type_name, stored, steps)? == steps.len();
    let data = match data {
        StoredData::Text(text) if current => {
            return serde_json::from_str(text).map(wrap).map_err(malformed);
        }
        StoredData::Text(text) => serde_json::from_str(text).map_err(malformed)?,
        StoredData::Value(value) => value,
    };
    let data = upcast(type_name, stored, data, steps)?;
    serde_json::from_value(data).map(wrap).map_err(malformed)
}

/// The decider pattern: one aggregate's rules and its fold.
pub trait Decider {
    type Command;
    type Event;
    type State: Default + Clone;

    /// The events `command` causes in `state`, or why it is refused.
    fn decide(
        command: &Self::Command,
        state: &Self::State,
    ) -> Result<Vec<Self::Event>, DomainError>;

    /// The state after `event`.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

    /// The state after every event of `history`, in order.
    fn fold<'a>(history: impl IntoIterator<Item = &'a Self::Event>) -> Self::State
    where
        Self::Event: 'a,
    {
        history
            .into_iter()
            .fold(Self::State::default(), Self::evolve)
    }
}

#[cfg(test)]
pub(crate) mod given {
    //! given(events).when(command).then(events | error)
    use super::{Decider, DomainError};

    pub struct Scenario<D: Decider> {
        state: D::State,
    }

    pub fn given<D: Decider>(history: &[D::Event]) -> Scenario<D> {
        Scenario {
            state: D::fold(history),
        }
    }

    impl<D: Decider> Scenario<D> {
        pub fn when(&self, command: D::Command) -> Result<Vec<D::Event>, DomainError> {
            D::decide(&command, &self.state)
        }
    }
}

#[cfg(test)]
mod upcast_tests {
    use super::*;
    use serde_json::{json, Map, Value};

    fn v1_to_v2(mut m: Map<String, Value>) -> Result<Map<String, Value>, String> {
        let name = m.remove("name").ok_or("no name")?;
        m.insert("title".into(), name);
        Ok(m)
    }

    fn v2_to_v3(mut m: Map<String, Value>) -> Result<Map<String, Value>, String> {
        m.insert("tags".into(), json!([]));
        Ok(m)
    }

    #[test]
    fn each_old_version_climbs_every_later_step_in_order_and_the_current_one_none() {
        let steps: [Upcast; 2] = [v1_to_v2, v2_to_v3];
        let want = json!({"title": "t", "tags": []});
        assert_eq!(upcast("x", 1, json!({"name": "t"}), &steps).unwrap(), want);
        assert_eq!(upcast("x", 2, json!({"title": "t"}), &steps).unwrap(), want);
        assert_eq!(upcast("x", 3, want.clone(), &steps).unwrap(), want);
        assert!(matches!(
            upcast("x", 1, json!({"title": "t"}), &steps),
            Err(DecodeError::Malformed(..))
        ));
    }
}
