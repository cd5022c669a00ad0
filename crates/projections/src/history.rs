//! Time travel: a resource as it stood at a time or at a global position, folded from its
//! events by the same `evolve` that builds the read models.
//!
//! [`as_of`] folds a prefix of the resource's stream. [`AsOf::Time`]: the events up to the
//! first one whose time, as the API shows it (the `at` of its command: an incident's
//! `started_at`, an update's `created_at`), is after that time, in stream order, so a later
//! version never counts even if its time were earlier. As of a time the API showed, the
//! answer includes what that time stamps. [`AsOf::Position`]: the events sealed at or before that
//! position, which are a prefix of the stream because a stream's events take positions in
//! stream order (see [`eventstore::EventStore::read_stream_until_position`]). The result is
//! shown as the viewer may see it, like any read (see [`crate::queries`]).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use eventstore::EventStore;
use uuid::Uuid;

use crate::builder::fold_stream;
use crate::kinds::{Kind, Versioned};
use crate::publish::read_whole_stream;
use crate::queries::{for_viewer, Notice, Viewer};
use crate::ProjectionError;

/// A point in history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Every event recorded at or before this time.
    Time(DateTime<Utc>),
    /// Every event at or before this global position (sealed events only: an event that has
    /// no position yet was not there for a reader at any position).
    Position(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "as_of must be an RFC 3339 time (2026-11-24T08:00:00Z) between 1970 and 9999, or a global \
     position (a whole number)"
)]
pub struct AsOfError;

impl FromStr for AsOf {
    type Err = AsOfError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text.parse().map(AsOf::Position).map_err(|_| AsOfError);
        }
        let time = DateTime::parse_from_rfc3339(text).map_err(|_| AsOfError)?;
        domain::values::time("as_of", time.with_timezone(&Utc))
            .map(AsOf::Time)
            .map_err(|_| AsOfError)
    }
}

/// The time the API shows for an event: the `at` its command carried (an incident's
/// `started_at`, an update's `created_at`), which is a little before the database recorded
/// it; the recorded time for an event without one.
fn shown_time(event: &eventstore::RecordedEvent) -> DateTime<Utc> {
    /// The one field wanted: the rest of the payload is skipped, not decoded.
    #[derive(serde::Deserialize)]
    struct At {
        at: Option<String>,
    }
    event
        .data
        .decode::<At>()
        .ok()
        .and_then(|payload| payload.at)
        .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
        .map_or(event.recorded_at, |at| at.with_timezone(&Utc))
}

/// Resource `id` of kind `K` as it stood at `as_of`, as `viewer` may see it; `None` if it
/// did not exist yet or the viewer may not see it.
pub async fn as_of<K: Kind>(
    store: &EventStore,
    id: Uuid,
    as_of: AsOf,
    viewer: &Viewer,
) -> Result<Option<Versioned<K::Resource>>, ProjectionError>
where
    K::Resource: Notice,
{
    let stream_id = K::stream_id(id);
    let events = match as_of {
        AsOf::Position(position) => {
            store
                .read_stream_until_position(&stream_id, position)
                .await?
        }
        AsOf::Time(time) => {
            let client = store.pool().get().await?;
            let mut events = read_whole_stream(&client, &stream_id).await?;
            // The prefix of events that the resource's own times show at or before `time`
            // (stream order, so a later version never counts even if its time were earlier).
            let cut = events
                .iter()
                .position(|e| shown_time(e) > time)
                .unwrap_or(events.len());
            events.truncate(cut);
            events
        }
    };
    let refs: Vec<_> = events.iter().collect();
    let (version, state) = fold_stream::<K>(id, 0, None, &refs)?;
    Ok(state.and_then(|state| for_viewer(Versioned { id, version, state }, viewer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_reads_a_position_or_an_rfc3339_time_and_nothing_else() {
        assert_eq!("42".parse(), Ok(AsOf::Position(42)));
        assert_eq!(
            "2026-11-24T09:30:00+01:00".parse::<AsOf>(),
            Ok(AsOf::Time("2026-11-24T08:30:00Z".parse().unwrap()))
        );
        for bad in [
            "",
            "-1",
            "4.2",
            "yesterday",
            "2026-11-24",
            "99999999999999999999999",
            "1969-12-31T23:59:59Z",
            "+10000-01-01T00:00:00Z",
        ] {
            assert_eq!(bad.parse::<AsOf>(), Err(AsOfError), "{bad}");
        }
    }
}
