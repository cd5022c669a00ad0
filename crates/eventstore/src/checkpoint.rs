//! Signed checkpoints of the chain head.
//!
//! The chain shows that nothing *inside* the history changed; it cannot show that its last
//! events were removed, or that someone with write access recomputed every link after a
//! change. A checkpoint closes that: Crier signs "position P had link H" with an Ed25519
//! key, and anyone who kept the checkpoint can later check that today's chain still has H at
//! P (`crier verify --checkpoint`), which, the links being recomputed from position 1, means
//! the first P events are exactly the ones that were signed.
//!
//! The signed message is plain text, so that ordinary tools can check it:
//!
//! ```text
//! crier checkpoint v1
//! position <P>
//! hash <lower-case hex of the link at P>
//! signed_at <RFC 3339 UTC, 6 fractional digits, Z>
//! ```
//!
//! (each line ends with a line feed), signed with Ed25519 (RFC 8032, pure). Its JSON form,
//! [`SignedCheckpoint`], carries the key and the signature in standard base64.
//! docs/EVENT-STORE.md says how to check one with openssl.
//!
//! **Signing** ([`EventStore::sign_checkpoint`]). Nothing read back from the database is
//! trusted, since that is what a checkpoint guards against. The signer recomputes the chain
//! first: `crier checkpoint sign` from position 1; `serve --checkpoint-key` from position 1 at
//! start and every hour, and in between only what follows the last checkpoint it verified
//! itself, held in memory ([`EventStore::verify_after`] checks that the stored link there is
//! still that one). A chain that does not verify is never signed. Checkpoints go to
//! `chain_checkpoints`, append-only like the log (same triggers). When this key already has a
//! row at the head (another process signed it a moment ago), that row is accepted only if it
//! is this key's valid signature of the very link just recomputed; otherwise nothing is signed
//! and the contradiction is reported ([`SignOutcome::Contradicted`]): a planted row, or a
//! history rewritten and linked again since.
//!
//! **Serving** ([`EventStore::latest_checkpoint`]): the highest checkpoint whose signature
//! holds, by the given key, or by any key. Rows that do not verify are skipped and logged.
//!
//! **Checking** ([`EventStore::check_checkpoint`]): the signature must hold (by the trusted key
//! when one is given), and today's chain must verify from position 1, reach the position, and
//! have the signed link there. A history cut short before it, or rewritten and linked again,
//! fails.
//!
//! Keep the private key out of the database's reach: whoever holds both could sign a rewritten
//! history again.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, SubsecRound, Utc};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::chain::canonical_time;
use crate::verify::VerifyReport;
use crate::{EventStore, Hash, StoreError};

/// "The chain had `hash` at `position`", signed. The JSON form is what the public endpoint
/// serves and what an auditor keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    pub position: u64,
    /// Lower-case hex of the link at `position`.
    pub hash: String,
    /// RFC 3339, UTC, six fractional digits, as it appears in the signed text.
    pub signed_at: String,
    /// Base64 of the raw 32-byte Ed25519 public key.
    pub public_key: String,
    /// Base64 of the 64-byte Ed25519 signature of [`SignedCheckpoint::message`].
    pub signature: String,
}

/// Why a checkpoint does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint is malformed: {0}")]
    Malformed(String),
    #[error("the checkpoint was signed by {found}, not by the trusted key {trusted}")]
    UntrustedKey { found: String, trusted: String },
    #[error("the signature does not match the checkpoint")]
    BadSignature,
}

/// The text that is signed.
pub fn checkpoint_message(position: u64, hash: &str, signed_at: &str) -> String {
    format!("crier checkpoint v1\nposition {position}\nhash {hash}\nsigned_at {signed_at}\n")
}

impl SignedCheckpoint {
    /// Signs `(position, hash)` at `signed_at` (kept to the microsecond, as stored).
    pub fn sign(key: &SigningKey, position: u64, hash: &Hash, signed_at: DateTime<Utc>) -> Self {
        let signed_at = canonical_time(&signed_at.trunc_subsecs(6));
        let hash = hash.to_hex();
        let signature = key.sign(checkpoint_message(position, &hash, &signed_at).as_bytes());
        SignedCheckpoint {
            position,
            hash,
            signed_at,
            public_key: BASE64.encode(key.verifying_key().to_bytes()),
            signature: BASE64.encode(signature.to_bytes()),
        }
    }

    pub fn message(&self) -> String {
        checkpoint_message(self.position, &self.hash, &self.signed_at)
    }

    /// The raw 64 bytes of the signature.
    pub fn signature_bytes(&self) -> Result<[u8; 64], CheckpointError> {
        BASE64
            .decode(&self.signature)
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .ok_or_else(|| CheckpointError::Malformed("signature is not 64 bytes of base64".into()))
    }

    pub fn link(&self) -> Result<Hash, CheckpointError> {
        hex::decode(&self.hash)
            .ok()
            .and_then(|bytes| Hash::from_slice(&bytes))
            .ok_or_else(|| CheckpointError::Malformed("hash is not 64 hex digits".into()))
    }

    pub fn verifying_key(&self) -> Result<VerifyingKey, CheckpointError> {
        parse_public_key(&self.public_key)
    }

    /// Checks the signature, and that the signer is `trusted` when one is given.
    pub fn check_signature(&self, trusted: Option<&VerifyingKey>) -> Result<(), CheckpointError> {
        let key = self.verifying_key()?;
        if let Some(trusted) = trusted {
            if *trusted != key {
                return Err(CheckpointError::UntrustedKey {
                    found: self.public_key.clone(),
                    trusted: BASE64.encode(trusted.to_bytes()),
                });
            }
        }
        self.link()?;
        DateTime::parse_from_rfc3339(&self.signed_at)
            .map_err(|e| CheckpointError::Malformed(format!("signed_at: {e}")))?;
        let signature = self.signature_bytes()?;
        key.verify_strict(
            self.message().as_bytes(),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| CheckpointError::BadSignature)
    }
}

/// A public key given as base64 of its 32 raw bytes, or as a PEM `PUBLIC KEY` (SPKI).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, CheckpointError> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return VerifyingKey::from_public_key_pem(text)
            .map_err(|e| CheckpointError::Malformed(format!("public key PEM: {e}")));
    }
    let bytes = BASE64
        .decode(text)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| CheckpointError::Malformed("public key is not 32 bytes of base64".into()))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| CheckpointError::Malformed("not an Ed25519 public key".into()))
}

/// Reads an Ed25519 private key from a PKCS#8 PEM file (as `openssl genpkey -algorithm
/// ed25519` or `crier checkpoint keygen` write it).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, StoreError> {
    let pem = std::fs::read_to_string(path).map_err(|e| {
        StoreError::config(format!(
            "cannot read the checkpoint key {}: {e}",
            path.display()
        ))
    })?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
        StoreError::config(format!(
            "{} is not an Ed25519 private key in PKCS#8 PEM: {e}",
            path.display()
        ))
    })
}

/// A new random signing key and its PKCS#8 PEM.
pub fn generate_signing_key() -> Result<(SigningKey, String), StoreError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| StoreError::config_by("no randomness for a key", e))?;
    let key = SigningKey::from_bytes(&seed);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| StoreError::config_by("cannot encode the key", e))?;
    Ok((key, pem.to_string()))
}

/// What [`EventStore::sign_checkpoint`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignOutcome {
    /// The chain was recomputed up to its head and the head signed.
    Signed(SignedCheckpoint),
    /// The chain was recomputed up to its head, which this key had signed already.
    Unchanged(SignedCheckpoint),
    /// Nothing is sealed yet.
    EmptyHistory,
    /// The chain does not verify: nothing was signed.
    Refused(VerifyReport),
    /// The chain verifies, but this key's stored checkpoint at its head is not this key's
    /// signature of its link there: the row was forged, or the history rewritten and
    /// re-linked after it was signed. Nothing was signed.
    Contradicted(SignedCheckpoint),
}

/// What [`EventStore::check_checkpoint`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointReport {
    /// The signature holds and today's chain verifies and has the signed link at the
    /// signed position.
    pub ok: bool,
    pub problem: Option<String>,
    /// The verification of today's chain.
    pub verification: Option<VerifyReport>,
}

const CHECKPOINT_COLUMNS: &str = "position, hash, signed_at, public_key, signature";

fn checkpoint_from_row(row: &tokio_postgres::Row) -> Result<SignedCheckpoint, StoreError> {
    let position: i64 = row.try_get("position")?;
    let hash: &[u8] = row.try_get("hash")?;
    let public_key: &[u8] = row.try_get("public_key")?;
    let signature: &[u8] = row.try_get("signature")?;
    Ok(SignedCheckpoint {
        position: crate::model::to_u64(position, "checkpoint position")?,
        hash: hex::encode(hash),
        signed_at: canonical_time(&row.try_get("signed_at")?),
        public_key: BASE64.encode(public_key),
        signature: BASE64.encode(signature),
    })
}

impl EventStore {
    /// The most recent checkpoint (highest position) whose signature holds, by `key` when
    /// one is given, by any key otherwise. Rows that do not verify are skipped: the table is
    /// only as trustworthy as the database, the signatures are what count.
    pub async fn latest_checkpoint(
        &self,
        key: Option<&VerifyingKey>,
    ) -> Result<Option<SignedCheckpoint>, StoreError> {
        let client = self.pool().get().await?;
        let key_bytes = key.map(|k| k.to_bytes().to_vec());
        let rows = client
            .query(
                &format!(
                    "SELECT {CHECKPOINT_COLUMNS} FROM chain_checkpoints \
                      WHERE $1::bytea IS NULL OR public_key = $1 \
                      ORDER BY position DESC, signed_at DESC LIMIT 20"
                ),
                &[&key_bytes],
            )
            .await?;
        for row in &rows {
            let checkpoint = checkpoint_from_row(row)?;
            match checkpoint.check_signature(key) {
                Ok(()) => return Ok(Some(checkpoint)),
                Err(e) => tracing::error!(
                    position = checkpoint.position,
                    error = %e,
                    "a stored checkpoint does not verify: skipped"
                ),
            }
        }
        Ok(None)
    }

    /// Recomputes the chain and, if it holds, signs and stores its head.
    ///
    /// `trusted` is a checkpoint this process verified itself earlier (kept in memory, not
    /// read back from the database, which is what a checkpoint guards against): the links
    /// after it are recomputed. Without it, the whole chain is.
    pub async fn sign_checkpoint(
        &self,
        key: &SigningKey,
        trusted: Option<(u64, Hash)>,
    ) -> Result<SignOutcome, StoreError> {
        let public_key = key.verifying_key().to_bytes();
        let report = match trusted {
            Some((position, hash)) => self.verify_after(position, hash).await?,
            None => self.verify().await?,
        };
        if !report.ok {
            return Ok(SignOutcome::Refused(report));
        }
        let Some(head) = &report.head else {
            return Ok(SignOutcome::EmptyHistory);
        };
        let link = hex::decode(&head.hash)
            .ok()
            .and_then(|bytes| Hash::from_slice(&bytes))
            .ok_or_else(|| StoreError::corrupt("the verified head is not a hash"))?;
        // Kept to the microsecond, as both the signed text and the column hold it.
        let signed_at = Utc::now().trunc_subsecs(6);
        let checkpoint = SignedCheckpoint::sign(key, head.position, &link, signed_at);
        let signature = checkpoint
            .signature_bytes()
            .map_err(|e| StoreError::corrupt_by("the verified head", e))?;
        let client = self.pool().get().await?;
        let position = i64::try_from(head.position).unwrap_or(i64::MAX);
        let inserted = client
            .execute(
                "INSERT INTO chain_checkpoints (position, hash, signed_at, public_key, signature) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &position,
                    &link.0.as_slice(),
                    &signed_at,
                    &public_key.as_slice(),
                    &signature.as_slice(),
                ],
            )
            .await?;
        if inserted == 1 {
            return Ok(SignOutcome::Signed(checkpoint));
        }
        // This key has a checkpoint at this position already: another process signed the
        // same head a moment ago, or someone planted a row. Only a valid signature of this
        // very link by this key is accepted.
        let row = client
            .query_one(
                &format!(
                    "SELECT {CHECKPOINT_COLUMNS} FROM chain_checkpoints \
                      WHERE public_key = $1 AND position = $2"
                ),
                &[&public_key.as_slice(), &position],
            )
            .await?;
        let stored = checkpoint_from_row(&row)?;
        if stored.hash == checkpoint.hash
            && stored.check_signature(Some(&key.verifying_key())).is_ok()
        {
            Ok(SignOutcome::Unchanged(stored))
        } else {
            Ok(SignOutcome::Contradicted(stored))
        }
    }

    /// Does today's history extend the one `checkpoint` vouches for? Checks the signature
    /// (by `trusted` when given), recomputes the whole chain, and compares the link at the
    /// signed position.
    pub async fn check_checkpoint(
        &self,
        checkpoint: &SignedCheckpoint,
        trusted: Option<&VerifyingKey>,
    ) -> Result<CheckpointReport, StoreError> {
        let refuse = |problem: String, verification: Option<VerifyReport>| CheckpointReport {
            ok: false,
            problem: Some(problem),
            verification,
        };
        if let Err(e) = checkpoint.check_signature(trusted) {
            return Ok(refuse(e.to_string(), None));
        }
        let (report, link_at_position) = self.verify_with_link_at(checkpoint.position).await?;
        if !report.ok {
            let problem = format!(
                "today's chain does not verify (first bad position {})",
                report.first_bad_position.unwrap_or_default()
            );
            return Ok(refuse(problem, Some(report)));
        }
        if report.checked < checkpoint.position {
            let problem = format!(
                "the history ends at position {}, before the signed position {}: events were removed",
                report.checked, checkpoint.position
            );
            return Ok(refuse(problem, Some(report)));
        }
        // The link recomputed from position 1, not the stored one.
        if link_at_position.map(|h| h.to_hex()).as_deref() != Some(checkpoint.hash.as_str()) {
            let problem = format!(
                "the link at position {} is not the signed one: the history up to it was rewritten",
                checkpoint.position
            );
            return Ok(refuse(problem, Some(report)));
        }
        Ok(CheckpointReport {
            ok: true,
            problem: None,
            verification: Some(report),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    #[test]
    fn a_signed_checkpoint_checks_and_any_change_breaks_it() {
        let time = DateTime::<Utc>::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        let checkpoint = SignedCheckpoint::sign(&key(), 42, &Hash([3; 32]), time);
        assert_eq!(checkpoint.signed_at, "2023-11-14T22:13:20.123456Z");
        assert_eq!(
            checkpoint.message(),
            format!(
                "crier checkpoint v1\nposition 42\nhash {}\nsigned_at 2023-11-14T22:13:20.123456Z\n",
                "03".repeat(32)
            )
        );
        checkpoint.check_signature(None).unwrap();
        checkpoint
            .check_signature(Some(&key().verifying_key()))
            .unwrap();
        let moved = SignedCheckpoint {
            position: 41,
            ..checkpoint.clone()
        };
        assert_eq!(
            moved.check_signature(None),
            Err(CheckpointError::BadSignature)
        );
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(matches!(
            checkpoint.check_signature(Some(&other)),
            Err(CheckpointError::UntrustedKey { .. })
        ));
    }

    #[test]
    fn keys_round_trip_through_pem_and_base64() {
        let (key, pem) = generate_signing_key().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(SigningKey::from_pkcs8_pem(&pem).unwrap(), key);
        let public = BASE64.encode(key.verifying_key().to_bytes());
        assert_eq!(parse_public_key(&public).unwrap(), key.verifying_key());
        assert!(parse_public_key("not a key").is_err());
    }
}
