//! The webhook channel: notices POSTed to registered endpoints as CloudEvents, signed per
//! the Standard Webhooks specification (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`), through the crate's outbox and sender. [`target`] keeps endpoints
//! off internal addresses (SSRF).

pub mod target;

use std::time::Duration;

use base64::Engine;

pub use target::TargetPolicy;

/// The Standard Webhooks prefix of a signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// How webhooks are sent, from `crier serve` settings.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub policy: TargetPolicy,
    /// The longest one attempt may take, connection to last byte.
    pub timeout: Duration,
    /// The wait after the first failed attempt; it doubles after each further one.
    pub retry_base: Duration,
    /// The longest wait between attempts that backoff alone gives.
    pub retry_max: Duration,
    /// Attempts before a delivery is given up as failed.
    pub max_attempts: u32,
    /// Sends in flight at once in this process.
    pub concurrency: usize,
    /// Sends in flight at once to one endpoint, so that a slow one cannot take every slot.
    pub per_endpoint: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            policy: TargetPolicy::default(),
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            max_attempts: 18,
            concurrency: 256,
            per_endpoint: 16,
        }
    }
}

/// Why a webhook stops when the key that registered it is revoked.
pub const KEY_REVOKED: &str = "the API key that registered it was revoked";

/// Disables every active webhook that key `key_id` registered, with an event saying why
/// (`webhook.disabled`, caused by the revocation). The outbox has already stopped them at the
/// revocation's position, whether or not this runs; this makes it visible and final.
pub async fn disable_registered_by(
    publisher: &projections::Publisher,
    key_id: uuid::Uuid,
    metadata: &eventstore::Metadata,
) -> Result<usize, crate::DeliveryError> {
    let ids = {
        let client = publisher.store().pool().get().await?;
        projections::queries::active_webhooks_registered_by(&client, key_id).await?
    };
    let command = domain::webhook::Command::Disable(domain::webhook::Disable {
        reason: KEY_REVOKED.to_owned(),
        at: chrono::Utc::now(),
    });
    for id in &ids {
        publisher
            .execute::<domain::webhook::WebhookDecider>(*id, &command, None, metadata)
            .await
            .map_err(crate::DeliveryError::Command)?;
    }
    Ok(ids.len())
}

/// Keeps a new endpoint's signing secret beside its registration: run in the registration's
/// own transaction (`$1` the webhook id, `$2` the secret), so that neither exists without
/// the other. The secret never enters the history.
pub const STORE_SECRET_SQL: &str =
    "INSERT INTO webhook_secrets (webhook_id, secret) VALUES ($1, $2)";

/// The `webhook-signature` of one request, as Standard Webhooks defines it: `v1,` and the
/// base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` under the secret's bytes (its base64 after
/// `whsec_`). The pieces go into the HMAC one after another, so the body is never copied, and
/// ring's SHA-256 uses the processor's SHA instructions: the `standardwebhooks` crate's
/// signing (a copy and a software SHA-256) took 9 % of crier's CPU in a webhook fan-out.
pub fn signature(
    secret: &str,
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, base64::DecodeError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key_bytes = base64::engine::general_purpose::STANDARD.decode(encoded)?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes);
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(message_id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    ))
}

/// A new signing secret: `whsec_` and 32 random bytes in base64, as Standard Webhooks
/// libraries read it.
pub fn new_secret() -> Result<String, crate::DeliveryError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(crate::DeliveryError::Randomness)?;
    Ok(format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries.
    #[test]
    fn signs_the_reference_example() {
        let signed = signature(
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(
            signed.as_deref(),
            Ok("v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=")
        );
    }

    /// Whatever the secret, id, time and body, the signature is the reference crate's.
    #[test]
    fn signs_as_the_standard_webhooks_crate_does() {
        let long_body = "é".repeat(3000);
        let unprefixed = new_secret()
            .unwrap()
            .trim_start_matches(SECRET_PREFIX)
            .to_owned();
        // Longer than a SHA-256 block: HMAC hashes such a key first.
        let long_key = format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 100])
        );
        for secret in [new_secret().unwrap(), unprefixed, long_key] {
            for (id, timestamp, body) in [
                ("0193a9a0-7c1e-7000-8000-000000000001", 1_764_000_000, "{}"),
                ("x", 0, ""),
                ("a.b", -1, long_body.as_str()),
            ] {
                let reference = standardwebhooks::Webhook::new(&secret)
                    .and_then(|w| w.sign(id, timestamp, body.as_bytes()))
                    .unwrap();
                assert_eq!(
                    signature(&secret, id, timestamp, body.as_bytes()).unwrap(),
                    reference
                );
            }
        }
    }

    #[test]
    fn a_secret_that_is_not_base64_is_refused() {
        assert!(signature("whsec_not base64!", "id", 1, b"{}").is_err());
    }
}
