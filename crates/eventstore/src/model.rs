use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Hash;

/// Who caused an event and in answer to what. Stored with every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The API key id (or `system`, or a CLI user) that caused the event.
    pub actor: String,
    #[serde(default)]
    pub request_id: Option<String>,
    /// Ties together every event caused, directly or not, by one original request.
    #[serde(default)]
    pub correlation_id: Option<Uuid>,
    /// The event or command that directly caused this one.
    #[serde(default)]
    pub causation_id: Option<Uuid>,
}

impl Metadata {
    pub fn by(actor: impl Into<String>) -> Self {
        Metadata {
            actor: actor.into(),
            ..Metadata::default()
        }
    }
}

/// An event's data as its stored JSON text, decoded by whoever reads it into the type it
/// needs ([`EventData::decode`]).
///
/// Why not a `serde_json::Value`: reading the log decoded every event's data into a tree of
/// maps and strings (a dozen allocations), which its consumer then decoded again into its
/// own type and freed, often on another thread. That was most of the log reader's CPU, and
/// held it to 0.62-0.70 of raw PostgreSQL reading the same rows (`cargo bench --bench
/// eventstore`, (c)); kept as text, an event costs one allocation and a check that it is JSON.
#[derive(Clone)]
pub struct EventData(Box<serde_json::value::RawValue>);

impl EventData {
    /// JSON text as stored (checked to be JSON).
    pub fn from_text(text: &str) -> Result<EventData, serde_json::Error> {
        serde_json::value::RawValue::from_string(text.to_owned()).map(EventData)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The data decoded into `T`, straight from its text.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}

/// Equal when the texts are: what PostgreSQL gives back for one stored `jsonb` is always the
/// same text, so two reads of an event compare equal.
impl PartialEq for EventData {
    fn eq(&self, other: &EventData) -> bool {
        self.get() == other.get()
    }
}

/// The JSON text.
impl std::fmt::Display for EventData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.get())
    }
}

impl std::fmt::Debug for EventData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.get())
    }
}

/// Written as the JSON it holds, not as a string.
impl Serialize for EventData {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// An event as stored in its stream. Its global position is given later by the sealer: see
/// [`LoggedEvent`].
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub stream_id: String,
    pub stream_version: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub data: EventData,
    pub metadata: Metadata,
    pub recorded_at: DateTime<Utc>,
    /// The writer's hash of the content, as stored (verify recomputes it).
    pub content_hash: Hash,
}

/// An event in the global log: sealed, with its position and its link in the hash chain.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    pub position: u64,
    pub prev_hash: Hash,
    pub hash: Hash,
    pub event: RecordedEvent,
}

pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, crate::StoreError> {
    u64::try_from(value)
        .map_err(|_| crate::StoreError::corrupt(format!("negative {what}: {value}")))
}

pub(crate) fn to_u32(value: i32, what: &str) -> Result<u32, crate::StoreError> {
    u32::try_from(value)
        .map_err(|_| crate::StoreError::corrupt(format!("negative {what}: {value}")))
}

impl RecordedEvent {
    /// Reads the columns of [`crate::EVENT_COLUMNS`] by name.
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Self, crate::StoreError> {
        // The metadata goes straight from its stored text into `Metadata`, without a
        // `serde_json::Value` between (the verifier reads the stored text itself).
        let event_id: Uuid = row.try_get("event_id")?;
        let stored_metadata: crate::xid::RawJson = row.try_get("metadata")?;
        let metadata = serde_json::from_str(stored_metadata.0).map_err(|e| {
            crate::StoreError::corrupt_by(format!("metadata of event {event_id}"), e)
        })?;
        Ok(RecordedEvent {
            stream_id: row.try_get("stream_id")?,
            stream_version: to_u64(row.try_get("stream_version")?, "stream version")?,
            event_id,
            event_type: row.try_get("event_type")?,
            schema_version: to_u32(row.try_get("schema_version")?, "schema version")?,
            data: {
                let stored: crate::xid::RawJson = row.try_get("data")?;
                EventData::from_text(stored.0).map_err(|e| {
                    crate::StoreError::corrupt_by(format!("data of event {event_id}"), e)
                })?
            },
            metadata,
            recorded_at: row.try_get("recorded_at")?,
            content_hash: Hash::from_slice(row.try_get("content_hash")?).ok_or_else(|| {
                crate::StoreError::corrupt(format!(
                    "content hash of event {event_id} is not 32 bytes"
                ))
            })?,
        })
    }
}
