//! Webhooks: notices delivered to registered endpoints, per the Standard Webhooks
//! specification, at least once, in order per incident.
//!
//! * [`fanout`] follows the durable global log from its checkpoint (subscription
//!   `webhooks`) and, in the transaction that moves the checkpoint, writes one delivery per
//!   (endpoint, notice) with its body rendered once. A crash loses or repeats none.
//! * [`sender`] claims due deliveries with a lease (any number of processes share the
//!   work), sends them signed, records every attempt, and schedules retries with
//!   exponential backoff and jitter (or the endpoint's `Retry-After`). An endpoint answering
//!   410 Gone is disabled. Deliveries of one resource go one at a time in log order;
//!   endpoints never wait for one another: each has a bounded share of the sends in flight,
//!   and each send its own timeout.
//! * [`target`] keeps endpoints off internal addresses (SSRF).

pub mod deliveries;
pub mod fanout;
pub mod sender;
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

/// A new signing secret: `whsec_` and 32 random bytes in base64, as Standard Webhooks
/// libraries read it.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}
