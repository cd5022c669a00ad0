//! The hash chain: the canonical bytes of an event and how its link is computed.
//!
//! Two levels, so that the writer (which holds the JSON already) hashes the content and the
//! sealer links events without decoding their JSON:
//!
//! ```text
//! content_hash = SHA-256( "crier.content.v1" 0x00
//!                         || event_id                 16 bytes, RFC 9562 byte order
//!                         || lp(event_type) || u32be(schema_version)
//!                         || lp(JCS(data)) || lp(JCS(metadata)) )
//!
//! hash(p)      = SHA-256( prev_hash                   hash(p - 1); 32 zero bytes for p = 1
//!                         || "crier.link.v1" 0x00
//!                         || u64be(p)                 the global position
//!                         || lp(stream_id) || u64be(stream_version)
//!                         || lp(recorded_at)          RFC 3339, UTC, 6 fractional digits, "Z"
//!                         || content_hash )
//!
//! lp(bytes) = u32be(length) || bytes;  strings are UTF-8;  JCS = RFC 8785
//! ```
//!
//! Every field an auditor reads is covered, length prefixes make the encoding unambiguous,
//! and JCS lets any RFC 8785 implementation reproduce the JSON bytes.
//!
//! docs/EVENT-STORE.md gives what an auditor needs to reimplement it (the UUID's byte order,
//! the time's form, the metadata's four keys, JCS in detail, how to read an export), with the
//! worked example that `tests::the_encoding_is_stable` pins. Changing any of it would break
//! every stored chain.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const CONTENT_TAG: &[u8] = b"crier.content.v1\0";
pub const LINK_TAG: &[u8] = b"crier.link.v1\0";

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

/// A recorded time as the chain (and the audit API) writes it.
pub fn canonical_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn length_prefixed(hasher: &mut Sha256, bytes: &[u8]) {
    // Stored fields are far below 4 GiB (PostgreSQL caps a value at 1 GiB).
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    hasher.update(len.to_be_bytes());
    hasher.update(bytes);
}

/// The hash of an event's content.
pub fn content_hash(
    event_id: &Uuid,
    event_type: &str,
    schema_version: u32,
    data: &Value,
    metadata: &Value,
) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(CONTENT_TAG);
    hasher.update(event_id.as_bytes());
    length_prefixed(&mut hasher, event_type.as_bytes());
    hasher.update(schema_version.to_be_bytes());
    let mut json = Vec::with_capacity(512);
    for value in [data, metadata] {
        json.clear();
        crate::jcs::write(value, &mut json);
        length_prefixed(&mut hasher, &json);
    }
    Hash(hasher.finalize().into())
}

/// What the link of one position covers besides the previous hash.
pub struct LinkInput<'a> {
    pub position: u64,
    pub stream_id: &'a str,
    pub stream_version: u64,
    pub recorded_at: &'a DateTime<Utc>,
    pub content_hash: &'a Hash,
}

/// The chain link at `input.position` after `prev_hash`.
pub fn link(prev_hash: &Hash, input: &LinkInput<'_>) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.0);
    hasher.update(LINK_TAG);
    hasher.update(input.position.to_be_bytes());
    length_prefixed(&mut hasher, input.stream_id.as_bytes());
    hasher.update(input.stream_version.to_be_bytes());
    length_prefixed(&mut hasher, canonical_time(input.recorded_at).as_bytes());
    hasher.update(input.content_hash.0);
    Hash(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_hash_ignores_key_order_and_whitespace_but_not_values() {
        let id = Uuid::nil();
        let meta = json!({ "actor": "a" });
        let a = content_hash(&id, "t", 1, &json!({ "x": 1, "y": [true, null] }), &meta);
        let b: Value = serde_json::from_str(r#"{ "y" : [ true , null ] , "x" : 1 }"#).unwrap();
        let b = content_hash(&id, "t", 1, &b, &meta);
        assert_eq!(a, b);
        let c = content_hash(&id, "t", 1, &json!({ "x": 2, "y": [true, null] }), &meta);
        assert_ne!(a, c);
        let d = content_hash(&id, "t", 2, &json!({ "x": 1, "y": [true, null] }), &meta);
        assert_ne!(a, d);
    }

    #[test]
    fn length_prefixes_keep_neighbouring_fields_apart() {
        let time = DateTime::<Utc>::from_timestamp(0, 0).unwrap();
        let content = Hash::GENESIS;
        let one = link(
            &Hash::GENESIS,
            &LinkInput {
                position: 1,
                stream_id: "ab",
                stream_version: 1,
                recorded_at: &time,
                content_hash: &content,
            },
        );
        let other = link(
            &Hash::GENESIS,
            &LinkInput {
                position: 1,
                stream_id: "a",
                stream_version: 1,
                recorded_at: &time,
                content_hash: &content,
            },
        );
        assert_ne!(one, other);
    }

    #[test]
    fn the_encoding_is_stable() {
        // A fixed vector, also computed independently (Python hashlib) from the documented
        // encoding: changing the encoding would break every stored chain.
        let time = DateTime::<Utc>::from_timestamp(1_700_000_000, 123_456_000).unwrap();
        assert_eq!(canonical_time(&time), "2023-11-14T22:13:20.123456Z");
        let content = content_hash(
            &Uuid::from_u128(1),
            "incident.declared",
            1,
            &json!({ "title": "Sign-in failures", "n": 1.5 }),
            &json!({ "actor": "key-1", "request_id": null, "correlation_id": null, "causation_id": null }),
        );
        let hash = link(
            &Hash::GENESIS,
            &LinkInput {
                position: 1,
                stream_id: "incident-1",
                stream_version: 1,
                recorded_at: &time,
                content_hash: &content,
            },
        );
        assert_eq!(
            (content.to_hex(), hash.to_hex()),
            (
                "80ab9a102876cdc123a65bd395d5d96496c53341de06e5f07dbca74c7ac6e9b2".to_owned(),
                "6356a47c07537682b67297d0d2afbf5041296ade4de9c2fb0fa95c4664fa5503".to_owned()
            )
        );
    }
}
