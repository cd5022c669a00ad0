//! Issuing API keys: secrets are made here, shown once to whoever asked, and only their
//! SHA-256 is kept (in the event and in `rm_api_keys`).
//!
//! A secret is [`SECRET_PREFIX`] and 256 random bits; requests are matched by its hash
//! ([`crate::queries::live_keys_by_secret_hashes`]). The bootstrap admin key's id derives from
//! its secret, so processes starting together create one key ([`ensure_bootstrap_admin`]).

use chrono::Utc;
use domain::api_key::{self, ApiKey, ApiKeyDecider, Role};
use domain::DomainError;
use eventstore::Metadata;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{CommandError, Publisher, Versioned};

/// Every secret starts so, which lets secret scanners recognise a leaked one.
pub const SECRET_PREFIX: &str = "crier_";

/// A key just made, with the only copy of its secret.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub key: Versioned<ApiKey>,
    pub secret: String,
}

/// The SHA-256 (lower-case hex) by which a presented secret is looked up.
pub fn secret_sha256(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new secret: the prefix and 256 bits from the operating system's generator.
pub fn new_secret() -> Result<String, CommandError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(CommandError::Randomness)?;
    Ok(format!("{SECRET_PREFIX}{}", hex::encode(bytes)))
}

/// The command that creates a key with a fresh secret, and that secret.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: Uuid,
    pub command: api_key::Command,
    pub secret: String,
}

/// Makes a fresh secret and the command that creates its key (whose events hold only the
/// secret's SHA-256).
pub fn new_key(
    name: &str,
    role: Role,
    tenant: Option<&str>,
    author: &str,
) -> Result<NewKey, CommandError> {
    let secret = new_secret()?;
    let id = Uuid::new_v4();
    let command = api_key::Command::Create(api_key::Create {
        key_id: id,
        name: name.to_owned(),
        role,
        tenant: tenant.map(str::to_owned),
        secret_sha256: secret_sha256(&secret),
        author: author.to_owned(),
        at: Utc::now(),
    });
    Ok(NewKey {
        id,
        command,
        secret,
    })
}

/// Creates a key with a fresh secret.
pub async fn issue_key(
    publisher: &Publisher,
    name: &str,
    role: Role,
    tenant: Option<&str>,
    actor: &str,
) -> Result<IssuedKey, CommandError> {
    let new = new_key(name, role, tenant, actor)?;
    let written = publisher
        .execute::<ApiKeyDecider>(new.id, &new.command, None, &Metadata::by(actor))
        .await?;
    Ok(IssuedKey {
        key: written.resource,
        secret: new.secret,
    })
}

/// What [`ensure_bootstrap_admin`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    Created,
    Present,
    /// The key was made once and later revoked: revocation wins, nothing is re-created.
    Revoked,
}

/// Makes sure an admin key with exactly `secret` exists. Its id is derived from the secret,
/// so processes starting together create one key, and restarts create none.
pub async fn ensure_bootstrap_admin(
    publisher: &Publisher,
    secret: &str,
) -> Result<Bootstrap, CommandError> {
    if secret.trim().len() < 16 {
        return Err(CommandError::Domain(DomainError::invalid(
            "CRIER_BOOTSTRAP_ADMIN_KEY",
            "must be at least 16 characters",
        )));
    }
    let hash = secret_sha256(secret);
    let mut derived = [0u8; 16];
    derived.copy_from_slice(&Sha256::digest(format!("crier.bootstrap-admin\0{hash}"))[..16]);
    let id = uuid::Builder::from_custom_bytes(derived).into_uuid();
    let command = api_key::Command::Create(api_key::Create {
        key_id: id,
        name: "bootstrap admin".into(),
        role: Role::Admin,
        tenant: None,
        secret_sha256: hash,
        author: "bootstrap".into(),
        at: Utc::now(),
    });
    match publisher
        .execute::<ApiKeyDecider>(id, &command, None, &Metadata::by("bootstrap"))
        .await
    {
        Ok(_) => Ok(Bootstrap::Created),
        Err(CommandError::Domain(DomainError::Conflict(_))) => {
            let client = publisher.store().pool().get().await?;
            let revoked = client
                .query_opt("SELECT revoked FROM rm_api_keys WHERE id = $1", &[&id])
                .await?
                .map(|row| row.try_get::<_, bool>(0))
                .transpose()?
                .unwrap_or(false);
            Ok(if revoked {
                Bootstrap::Revoked
            } else {
                Bootstrap::Present
            })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_only_their_hash_is_kept() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == SECRET_PREFIX.len() + 64);
        assert_ne!(a, b);
        let hash = secret_sha256(&a);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&a[SECRET_PREFIX.len()..]));
        // SHA-256("abc"), FIPS 180-2 example.
        assert_eq!(
            secret_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
