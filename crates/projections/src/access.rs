//! Issuing API keys: secrets are made here and shown once to whoever asked. Neither the
//! secret nor a digest of it is in the history: the verifier requests are matched by (its
//! SHA-256, [`crate::queries::live_keys_by_secret_hashes`]) is written to
//! `api_key_verifiers` in the transaction of the key's creation, outside the events.
//!
//! A generated secret is [`SECRET_PREFIX`] and 256 random bits. The bootstrap admin key's
//! secret is chosen by an operator, so it must be strong ([`check_bootstrap_secret`]); its key
//! gets a random id like any other, and processes starting together with one secret make one
//! key because a verifier is unique ([`ensure_bootstrap_admin`]).

use chrono::Utc;
use domain::api_key::{self, ApiKey, ApiKeyDecider, Role};
use eventstore::Metadata;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{AlsoWrite, CommandError, Outcome, Publisher, Versioned};

/// Every secret starts so, which lets secret scanners recognise a leaked one.
pub const SECRET_PREFIX: &str = "crier_";

/// Writes a key's verifier in the transaction of its creation.
pub const INSERT_VERIFIER_SQL: &str =
    "INSERT INTO api_key_verifiers (key_id, secret_sha256) VALUES ($1, $2)";

/// The shortest bootstrap secret accepted.
pub const MIN_BOOTSTRAP_SECRET_CHARS: usize = 32;
/// The fewest different characters a bootstrap secret may be made of.
const MIN_BOOTSTRAP_DISTINCT_CHARS: usize = 16;
/// The least strength a bootstrap secret may have, estimated from its length and the kinds of
/// characters it uses.
const MIN_BOOTSTRAP_SECRET_BITS: f64 = 128.0;

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

/// The command that creates a key, its secret and the verifier to store beside it.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: Uuid,
    pub command: api_key::Command,
    pub secret: String,
    /// The secret's SHA-256: written with [`INSERT_VERIFIER_SQL`], never in an event.
    pub verifier: String,
}

/// Makes a fresh secret and the command that creates its key.
pub fn new_key(
    name: &str,
    role: Role,
    tenant: Option<&str>,
    author: &str,
) -> Result<NewKey, CommandError> {
    let secret = new_secret()?;
    Ok(key_with_secret(
        Uuid::new_v4(),
        name,
        role,
        tenant,
        author,
        secret,
    ))
}

fn key_with_secret(
    id: Uuid,
    name: &str,
    role: Role,
    tenant: Option<&str>,
    author: &str,
    secret: String,
) -> NewKey {
    let command = api_key::Command::Create(api_key::Create {
        key_id: id,
        name: name.to_owned(),
        role,
        tenant: tenant.map(str::to_owned),
        author: author.to_owned(),
        at: Utc::now(),
    });
    NewKey {
        id,
        command,
        verifier: secret_sha256(&secret),
        secret,
    }
}

/// Creates the key of `new` with its verifier, in one transaction.
async fn create(
    publisher: &Publisher,
    new: &NewKey,
    actor: &str,
) -> Result<Versioned<ApiKey>, CommandError> {
    let also = AlsoWrite {
        statement: INSERT_VERIFIER_SQL,
        params: &[&new.id, &new.verifier],
    };
    match publisher
        .execute_once::<ApiKeyDecider>(
            new.id,
            &new.command,
            None,
            &Metadata::by(actor),
            None,
            Some(&also),
        )
        .await?
    {
        Outcome::Written(written) => Ok(written.resource),
        Outcome::Replayed(_) => Err(CommandError::Refused(
            "a replayed answer without an idempotency key".into(),
        )),
    }
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
    let key = create(publisher, &new, actor).await?;
    Ok(IssuedKey {
        key,
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

/// Refuses a bootstrap secret that could be guessed: it must be at least
/// [`MIN_BOOTSTRAP_SECRET_CHARS`] characters, of at least 16 different ones, and hold at
/// least 128 bits by the kinds of characters it uses (lower case, upper case, digits,
/// others). `openssl rand -base64 32` makes one.
pub fn check_bootstrap_secret(secret: &str) -> Result<(), String> {
    let rule = format!(
        "a bootstrap admin key must be at least {MIN_BOOTSTRAP_SECRET_CHARS} characters, of at \
         least {MIN_BOOTSTRAP_DISTINCT_CHARS} different ones, and hold 128 bits by the kinds of \
         characters it uses (make one with `openssl rand -base64 32`)"
    );
    let chars: Vec<char> = secret.chars().collect();
    let mut distinct = chars.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let kinds = [
        (chars.iter().any(char::is_ascii_lowercase), 26.0),
        (chars.iter().any(char::is_ascii_uppercase), 26.0),
        (chars.iter().any(char::is_ascii_digit), 10.0),
        (chars.iter().any(|c| !c.is_ascii_alphanumeric()), 33.0),
    ];
    let alphabet: f64 = kinds.iter().filter(|(used, _)| *used).map(|(_, n)| n).sum();
    let bits = chars.len() as f64 * alphabet.max(1.0).log2();
    if chars.len() < MIN_BOOTSTRAP_SECRET_CHARS
        || distinct.len() < MIN_BOOTSTRAP_DISTINCT_CHARS
        || bits < MIN_BOOTSTRAP_SECRET_BITS
    {
        return Err(rule);
    }
    Ok(())
}

/// Whether a key with this verifier exists, and if so whether it is revoked.
async fn verified_key(publisher: &Publisher, verifier: &str) -> Result<Option<bool>, CommandError> {
    let client = publisher.store().pool().get().await?;
    let row = client
        .query_opt(
            "SELECT k.revoked FROM api_key_verifiers v JOIN rm_api_keys k ON k.id = v.key_id \
              WHERE v.secret_sha256 = $1",
            &[&verifier],
        )
        .await?;
    Ok(row.map(|row| row.try_get::<_, bool>(0)).transpose()?)
}

/// Makes sure an admin key with exactly `secret` exists (see [`check_bootstrap_secret`]).
/// Processes starting together create one key: the second's verifier collides with the
/// first's, which rolls its whole creation back, and it finds the first's key.
pub async fn ensure_bootstrap_admin(
    publisher: &Publisher,
    secret: &str,
) -> Result<Bootstrap, CommandError> {
    if let Err(rule) = check_bootstrap_secret(secret) {
        return Err(CommandError::Domain(domain::DomainError::invalid(
            "CRIER_BOOTSTRAP_ADMIN_KEY",
            rule,
        )));
    }
    let verifier = secret_sha256(secret);
    let found = |revoked: bool| {
        if revoked {
            Bootstrap::Revoked
        } else {
            Bootstrap::Present
        }
    };
    if let Some(revoked) = verified_key(publisher, &verifier).await? {
        return Ok(found(revoked));
    }
    let new = key_with_secret(
        Uuid::new_v4(),
        "bootstrap admin",
        Role::Admin,
        None,
        "bootstrap",
        secret.to_owned(),
    );
    match create(publisher, &new, "bootstrap").await {
        Ok(_) => Ok(Bootstrap::Created),
        Err(e) => match verified_key(publisher, &verifier).await? {
            Some(revoked) => Ok(found(revoked)),
            None => Err(e),
        },
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

    #[test]
    fn a_bootstrap_secret_a_person_could_guess_is_refused_naming_the_rule() {
        for weak in [
            "change-me-to-a-long-secret",
            "crier-test-bootstrap-admin-secret",
            "00000000000000000000000000000000000000000000",
            "12345678901234567890123456789012345678",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            let refused = check_bootstrap_secret(weak).unwrap_err();
            assert!(refused.contains("at least 32 characters"), "{refused}");
        }
        for strong in [
            "q7Jm2kL9xB4vR8nT1wZ5cF3hY6pD0sGa",
            "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Zw==",
            &new_secret().unwrap(),
        ] {
            assert_eq!(check_bootstrap_secret(strong), Ok(()), "{strong}");
        }
    }
}
