//! Crier's domain: services, incidents and maintenances as deciders.
//!
//! `decide(command, state) → events | error` holds every rule; `evolve(state, event) →
//! state` folds history. Both are pure: no clock, no I/O, no randomness (ids and times come
//! in the commands), so replay, time travel and normal reads run the same code.

pub mod incident;
pub mod maintenance;
pub mod service;
pub mod values;

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

/// Refuses a schema version other than the one this build reads.
pub(crate) fn expect_version(
    type_name: &str,
    stored: u32,
    current: u32,
) -> Result<(), DecodeError> {
    if stored == current {
        Ok(())
    } else {
        Err(DecodeError::UnknownVersion(type_name.to_owned(), stored))
    }
}

/// Reads one event payload of `type_name` and wraps it in its aggregate's event enum.
pub(crate) fn decode<T: serde::de::DeserializeOwned, E>(
    type_name: &str,
    data: serde_json::Value,
    wrap: fn(T) -> E,
) -> Result<E, DecodeError> {
    serde_json::from_value(data)
        .map(wrap)
        .map_err(|e| DecodeError::Malformed(type_name.to_owned(), e.to_string()))
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
