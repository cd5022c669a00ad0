//! The hash chain: the canonical bytes of an event and how its link is computed.
//!
//! For the event at global position `p`:
//!
//! ```text
//! hash(p) = SHA-256( prev_hash || canonical(p) )      prev_hash = hash(p - 1), or 32 zero bytes for p = 1
//!
//! canonical(p) = "crier.event.v1" 0x00
//!              || u64be(position)
//!              || lp(stream_id)            || u64be(stream_version)
//!              || event_id (16 bytes, RFC 9562 order)
//!              || lp(event_type)           || u32be(schema_version)
//!              || lp(recorded_at)          RFC 3339, UTC, exactly 6 fractional digits, "Z"
//!              || lp(JCS(data))            RFC 8785 JSON Canonicalization Scheme
//!              || lp(JCS(metadata))
//! lp(bytes) = u32be(len(bytes)) || bytes      strings are UTF-8
//! ```
//!
//! Every field an auditor reads is covered, lengths make the encoding unambiguous, and JCS
//! lets any RFC 8785 implementation reproduce the JSON bytes.

use std::fmt;

use chrono::SecondsFormat;
use sha2::{Digest, Sha256};

use crate::model::RecordedEvent;

pub const DOMAIN_TAG: &[u8] = b"crier.event.v1\0";

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The `prev_hash` of the first event.
    pub const GENESIS: Hash = Hash([0; 32]);

    pub fn from_slice(bytes: &[u8]) -> Option<Hash> {
        bytes.try_into().ok().map(Hash)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Hash> {
        let bytes = hex::decode(text).ok()?;
        Hash::from_slice(&bytes)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The recorded time as the canonical encoding (and the audit API) writes it.
pub fn canonical_time(event: &RecordedEvent) -> String {
    event
        .recorded_at
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn put_length_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    // Stored fields are far below 4 GiB (PostgreSQL caps a value at 1 GiB).
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The canonical bytes of `event` at `position`, with its metadata as stored.
pub fn canonical_bytes(
    position: u64,
    event: &RecordedEvent,
    stored_metadata: &serde_json::Value,
) -> Result<Vec<u8>, crate::StoreError> {
    let jcs = |value: &serde_json::Value| {
        serde_json_canonicalizer::to_vec(value)
            .map_err(|e| crate::StoreError::Corrupt(format!("event {}: {e}", event.event_id)))
    };
    let data = jcs(&event.data)?;
    let metadata = jcs(stored_metadata)?;
    let mut out = Vec::with_capacity(128 + data.len() + metadata.len() + event.stream_id.len());
    out.extend_from_slice(DOMAIN_TAG);
    out.extend_from_slice(&position.to_be_bytes());
    put_length_prefixed(&mut out, event.stream_id.as_bytes());
    out.extend_from_slice(&event.stream_version.to_be_bytes());
    out.extend_from_slice(event.event_id.as_bytes());
    put_length_prefixed(&mut out, event.event_type.as_bytes());
    out.extend_from_slice(&event.schema_version.to_be_bytes());
    put_length_prefixed(&mut out, canonical_time(event).as_bytes());
    put_length_prefixed(&mut out, &data);
    put_length_prefixed(&mut out, &metadata);
    Ok(out)
}

/// The chain link of `event` at `position` after `prev_hash`.
pub fn link(
    prev_hash: &Hash,
    position: u64,
    event: &RecordedEvent,
    stored_metadata: &serde_json::Value,
) -> Result<Hash, crate::StoreError> {
    let canonical = canonical_bytes(position, event, stored_metadata)?;
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.0);
    hasher.update(&canonical);
    Ok(Hash(hasher.finalize().into()))
}
