//! The whole history as NDJSON, one CloudEvents 1.0 structured JSON object per line, for
//! `GET /v1/audit/export` and `crier export`.
//!
//! Each line carries everything the chain covers, so an auditor can recompute it from the
//! export alone (docs/EVENT-STORE.md says how; `tools/verify_export.py` does it):
//!
//! ```json
//! {"specversion":"1.0","id":"<event id>","source":"<stream URL prefix><stream id>",
//!  "type":"incident.declared","subject":"<stream id>","time":"<recorded at>",
//!  "datacontenttype":"application/json","position":1,"streamversion":1,"schemaversion":1,
//!  "actor":"…","requestid":"…","correlationid":"…","causationid":"…",
//!  "prevhash":"<hex>","hash":"<hex>","authenticator":"<hex>","data":{…}}
//! ```
//!
//! `source` is the caller's prefix (the server uses the audit URL of the stream,
//! `<public URL>/v1/audit/streams/`) followed by the stream id, percent-encoded as a path
//! segment: the store knows nothing of where that URL is served. Extension attributes are
//! lower-case letters only, as CloudEvents requires; metadata fields that are null are left
//! out, and the hashed metadata is the four fields with null for each one absent. `time` is
//! exactly the `recorded_at` string the link hashes, `subject` is the stream id, and `data`
//! is the stored JSON's text, copied as it is, without building a JSON tree.
//!
//! Memory stays constant however long the history: rows stream from the database (one
//! query per 10,000 events, so no snapshot is held for the whole export) and leave as chunks
//! of about 64 KiB; a slow reader slows the query instead of filling memory. The export ends at
//! the head the caller read when it began (the HTTP answer names it in `Crier-Export-Head`). An
//! error, a missing position included, ends the stream; a caller that has started answering
//! must then cut its answer short rather than end it cleanly.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_postgres::{RowStream, Statement};
use uuid::Uuid;

use crate::chain::canonical_time;
use crate::xid::RawJson;
use crate::{EventStore, StoreError};

/// Rows one query reads.
const EXPORT_BATCH: i64 = 10_000;
/// Bytes gathered before a chunk is handed on.
const CHUNK_BYTES: usize = 64 * 1024;

/// What a path segment keeps unescaped (RFC 3986 unreserved characters).
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `source` of an exported event: `prefix` followed by its stream id as a path segment.
pub fn stream_source(prefix: &str, stream_id: &str) -> String {
    format!("{prefix}{}", utf8_percent_encode(stream_id, PATH_SEGMENT))
}

#[derive(Serialize)]
struct ExportLine<'a> {
    specversion: &'static str,
    id: Uuid,
    source: String,
    #[serde(rename = "type")]
    event_type: &'a str,
    subject: &'a str,
    time: String,
    datacontenttype: &'static str,
    position: i64,
    streamversion: i64,
    schemaversion: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requestid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlationid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    causationid: Option<&'a str>,
    prevhash: String,
    hash: String,
    /// The history key's authenticator, when the event was appended with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    authenticator: Option<String>,
    data: &'a RawValue,
}

const EXPORT_SQL: &str = "SELECT l.position, l.prev_hash, l.hash, e.stream_id, e.stream_version, \
        e.event_id, e.event_type, e.schema_version, e.data, e.recorded_at, \
        e.metadata->>'actor' AS actor, e.metadata->>'request_id' AS request_id, \
        e.metadata->>'correlation_id' AS correlation_id, \
        e.metadata->>'causation_id' AS causation_id, e.authenticator \
   FROM log_links($1, $2) l JOIN events e ON e.seq = l.seq ORDER BY l.position";

/// Appends one event's line (with its newline) to `out`; answers its position.
fn write_line(
    row: &tokio_postgres::Row,
    source_prefix: &str,
    out: &mut Vec<u8>,
) -> Result<i64, StoreError> {
    let stream_id: &str = row.try_get("stream_id")?;
    let data: RawJson = row.try_get("data")?;
    let data: &RawValue = serde_json::from_str(data.0)
        .map_err(|e| StoreError::corrupt_by("stored data is not JSON", e))?;
    let position: i64 = row.try_get("position")?;
    let line = ExportLine {
        specversion: "1.0",
        id: row.try_get("event_id")?,
        source: stream_source(source_prefix, stream_id),
        event_type: row.try_get("event_type")?,
        subject: stream_id,
        time: canonical_time(&row.try_get("recorded_at")?),
        datacontenttype: "application/json",
        position,
        streamversion: row.try_get("stream_version")?,
        schemaversion: row.try_get("schema_version")?,
        actor: row.try_get("actor")?,
        requestid: row.try_get("request_id")?,
        correlationid: row.try_get("correlation_id")?,
        causationid: row.try_get("causation_id")?,
        prevhash: hex::encode(row.try_get::<_, &[u8]>("prev_hash")?),
        hash: hex::encode(row.try_get::<_, &[u8]>("hash")?),
        authenticator: row
            .try_get::<_, Option<&[u8]>>("authenticator")?
            .map(hex::encode),
        data,
    };
    serde_json::to_writer(&mut *out, &line)
        .map_err(|e| StoreError::corrupt_by(format!("cannot encode position {position}"), e))?;
    out.push(b'\n');
    Ok(position)
}

/// The state of one export between chunks.
struct Export {
    store: EventStore,
    source_prefix: String,
    connection: Option<(deadpool_postgres::Object, Statement)>,
    rows: Option<Pin<Box<RowStream>>>,
    rows_this_batch: usize,
    after: i64,
    /// The last position exported.
    until: i64,
    finished: bool,
}

impl Export {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        let mut out = Vec::with_capacity(CHUNK_BYTES + 8 * 1024);
        while !self.finished && out.len() < CHUNK_BYTES {
            let (client, statement) = match &self.connection {
                Some(connection) => connection,
                None => {
                    let client = self.store.pool().get().await?;
                    let statement = client.prepare(EXPORT_SQL).await?;
                    self.connection.insert((client, statement))
                }
            };
            let rows = match &mut self.rows {
                Some(rows) => rows,
                None if self.after >= self.until => {
                    self.finished = true;
                    break;
                }
                None => {
                    // The end is a LIMIT, not a `position <= until` condition: with a
                    // range, the planner may read and sort the whole rest of the log for
                    // every batch instead of walking the index.
                    let batch = EXPORT_BATCH.min(self.until - self.after);
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
                        [&self.after, &batch];
                    let rows = client.query_raw(statement, params).await?;
                    self.rows_this_batch = 0;
                    self.rows.insert(Box::pin(rows))
                }
            };
            match rows.next().await {
                Some(row) => {
                    let expected = self.after + 1;
                    let position = write_line(&row?, &self.source_prefix, &mut out)?;
                    // Positions are dense: a hole means a log row without its event.
                    if position != expected {
                        return Err(StoreError::corrupt(format!(
                            "position {expected} is missing from the log or its event"
                        )));
                    }
                    self.after = position;
                    self.rows_this_batch += 1;
                }
                None => {
                    self.rows = None;
                    if self.rows_this_batch == 0 {
                        return Err(StoreError::corrupt(format!(
                            "the log has no positions after {} up to its head {}",
                            self.after, self.until
                        )));
                    }
                }
            }
        }
        Ok((!out.is_empty()).then(|| Bytes::from(out)))
    }
}

impl EventStore {
    /// The sealed history after `after` up to `until` (the head when the export begins:
    /// see [`EventStore::log_head`]), as NDJSON chunks of CloudEvents whose `source` is
    /// `source_prefix` followed by the stream id (see the module documentation). Nothing is
    /// read until it is
    /// polled. A missing position ends the stream with an error.
    pub fn export(
        &self,
        after: u64,
        until: u64,
        source_prefix: &str,
    ) -> impl Stream<Item = Result<Bytes, StoreError>> + Send {
        let export = Export {
            store: self.clone(),
            source_prefix: source_prefix.to_owned(),
            connection: None,
            rows: None,
            rows_this_batch: 0,
            after: i64::try_from(after).unwrap_or(i64::MAX),
            until: i64::try_from(until).unwrap_or(i64::MAX),
            finished: false,
        };
        futures_util::stream::try_unfold(export, |mut export| async move {
            Ok(export.next_chunk().await?.map(|chunk| (chunk, export)))
        })
    }
}
