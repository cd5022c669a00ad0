//! Events authenticated by the process that appends them, with a key the database never sees.
//!
//! The hash chain makes any change to stored history detectable, but anyone who can write to
//! the database can also *add* an event: compute its content hash as documented, insert it,
//! and the sealer links it like any other. With a history key (`CRIER_HISTORY_KEY_FILE`),
//! every event the store appends carries an authenticator that only a holder of the key can
//! make:
//!
//! ```text
//! authenticator = key_id || HMAC-SHA256(key, "crier.auth.v1" 0x00 || lp(stream_id) || content_hash)
//! key_id        = the first 8 bytes of SHA-256("crier.history-key-id" 0x00 || key)
//! ```
//!
//! (`lp` and `content_hash` as in [`crate::chain`]: the content hash covers the event id,
//! type, schema version, data and metadata.) Verification given the key reports an event
//! without a valid authenticator at its position: from the first authenticated event on, every
//! later one must be authenticated too. Events before it, written before any key was set, are
//! counted as unauthenticated, not reported as forged.
//!
//! A key file holds one key per line, the standard base64 of at least 32 random bytes
//! (`crier history keygen`, or `openssl rand -base64 32`); blank lines and lines starting with
//! `#` are ignored. The first key authenticates new events; every key in the file is accepted
//! when verifying, so a key is rotated by putting the new one first and keeping the old one
//! below it.

use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::chain::Hash;
use crate::StoreError;

const AUTH_TAG: &[u8] = b"crier.auth.v1\0";
const KEY_ID_TAG: &[u8] = b"crier.history-key-id\0";
/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;
/// Bytes of an authenticator: the key id and the MAC.
pub const AUTHENTICATOR_BYTES: usize = 8 + 32;

/// One history key.
#[derive(Clone)]
pub struct HistoryKey {
    id: [u8; 8],
    secret: Vec<u8>,
    /// The HMAC keyed once, cloned for each event.
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for HistoryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HistoryKey({})", self.id_hex())
    }
}

impl HistoryKey {
    pub fn new(secret: Vec<u8>) -> Result<HistoryKey, StoreError> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(StoreError::config(format!(
                "a history key must be at least {MIN_KEY_BYTES} bytes"
            )));
        }
        let digest = Sha256::new()
            .chain_update(KEY_ID_TAG)
            .chain_update(&secret)
            .finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret)
            .map_err(|e| StoreError::config_by("the history key does not key an HMAC", e))?;
        Ok(HistoryKey { id, secret, keyed })
    }

    /// A new key of 32 random bytes.
    pub fn generate() -> Result<HistoryKey, StoreError> {
        let mut secret = vec![0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| StoreError::config_by("no randomness for a key", e))?;
        HistoryKey::new(secret)
    }

    /// The key as a line of a key file.
    pub fn to_line(&self) -> String {
        BASE64.encode(&self.secret)
    }

    /// Lower-case hex of the key id.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    fn mac(&self, stream_id: &str, content_hash: &Hash) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(AUTH_TAG);
        let length = u32::try_from(stream_id.len()).unwrap_or(u32::MAX);
        mac.update(&length.to_be_bytes());
        mac.update(stream_id.as_bytes());
        mac.update(&content_hash.0);
        mac
    }

    /// The authenticator of an event of `stream_id` with this content hash.
    pub fn authenticate(&self, stream_id: &str, content_hash: &Hash) -> Vec<u8> {
        let mut authenticator = Vec::with_capacity(AUTHENTICATOR_BYTES);
        authenticator.extend_from_slice(&self.id);
        authenticator.extend_from_slice(&self.mac(stream_id, content_hash).finalize().into_bytes());
        authenticator
    }
}

/// What verification found of one event's authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticity {
    /// Made by a given key over exactly this event.
    Valid,
    /// The event carries none.
    Missing,
    /// Made by a key the verification was not given.
    UnknownKey(String),
    /// Not the authenticator of this event under its key: forged, or the event was changed.
    Invalid,
}

/// The keys of a key file: the first authenticates new events, all are accepted.
#[derive(Debug, Clone)]
pub struct HistoryKeys {
    keys: Arc<Vec<HistoryKey>>,
}

impl HistoryKeys {
    pub fn new(keys: Vec<HistoryKey>) -> Result<HistoryKeys, StoreError> {
        if keys.is_empty() {
            return Err(StoreError::config("a history key file holds no key"));
        }
        Ok(HistoryKeys {
            keys: Arc::new(keys),
        })
    }

    /// Reads a key file (see the module documentation).
    pub fn load(path: &Path) -> Result<HistoryKeys, StoreError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            StoreError::config_by(
                format!("cannot read the history key file {}", path.display()),
                e,
            )
        })?;
        HistoryKeys::parse(&text)
            .map_err(|e| StoreError::config_by(format!("history key file {}", path.display()), e))
    }

    pub fn parse(text: &str) -> Result<HistoryKeys, StoreError> {
        let mut keys = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let secret = BASE64
                .decode(line)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(line))
                .map_err(|e| {
                    StoreError::config_by(format!("line {} is not base64", number + 1), e)
                })?;
            keys.push(HistoryKey::new(secret)?);
        }
        HistoryKeys::new(keys)
    }

    /// The key new events are authenticated with.
    pub fn current(&self) -> &HistoryKey {
        &self.keys[0]
    }

    /// Every key's id, the current one first.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(HistoryKey::id_hex).collect()
    }

    /// Checks an event's authenticator.
    pub fn check(
        &self,
        stream_id: &str,
        content_hash: &Hash,
        authenticator: Option<&[u8]>,
    ) -> Authenticity {
        let Some(authenticator) = authenticator else {
            return Authenticity::Missing;
        };
        if authenticator.len() != AUTHENTICATOR_BYTES {
            return Authenticity::Invalid;
        }
        let (id, tag) = authenticator.split_at(8);
        let Some(key) = self.keys.iter().find(|k| k.id == id) else {
            return Authenticity::UnknownKey(hex::encode(id));
        };
        // Compared in constant time.
        match key.mac(stream_id, content_hash).verify_slice(tag) {
            Ok(()) => Authenticity::Valid,
            Err(_) => Authenticity::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authenticator_holds_for_its_event_under_its_key_only() {
        let old = HistoryKey::new(vec![7; 32]).unwrap();
        let new = HistoryKey::generate().unwrap();
        let keys = HistoryKeys::parse(&format!(
            "# rotated\n{}\n\n{}\n",
            new.to_line(),
            old.to_line()
        ))
        .unwrap();
        assert_eq!(keys.current().id_hex(), new.id_hex());
        let content = Hash([3; 32]);
        let by_old = old.authenticate("incident-1", &content);
        assert_eq!(
            keys.check("incident-1", &content, Some(&by_old)),
            Authenticity::Valid
        );
        assert_eq!(
            keys.check("incident-2", &content, Some(&by_old)),
            Authenticity::Invalid
        );
        assert_eq!(
            keys.check("incident-1", &Hash([4; 32]), Some(&by_old)),
            Authenticity::Invalid
        );
        assert_eq!(
            keys.check("incident-1", &content, None),
            Authenticity::Missing
        );
        let stranger = HistoryKey::generate().unwrap();
        assert_eq!(
            keys.check(
                "incident-1",
                &content,
                Some(&stranger.authenticate("incident-1", &content))
            ),
            Authenticity::UnknownKey(stranger.id_hex())
        );
        assert!(
            HistoryKeys::parse("c2hvcnQ=").is_err(),
            "a short key is refused"
        );
        assert!(HistoryKeys::parse("# nothing\n").is_err());
    }

    #[test]
    fn the_encoding_is_stable() {
        // Pinned: tools/verify_export.py and docs/EVENT-STORE.md reproduce it.
        let key = HistoryKey::new((0u8..32).collect()).unwrap();
        let authenticator = key.authenticate("incident-1", &Hash([0xab; 32]));
        assert_eq!(hex::encode(&authenticator[..8]), key.id_hex());
        assert_eq!(hex::encode(&authenticator), PINNED);
    }

    const PINNED: &str =
        "87f38ff64c7ab2008351618d3829ba49adf345f2748318f1df4a5284948e2959f5ada3ef6a062500";
}
