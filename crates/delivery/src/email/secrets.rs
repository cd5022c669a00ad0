//! What keeps an address private in a history that is never rewritten.
//!
//! Each subscriber has a key of its own: 32 random bytes in `subscriber_keys`, outside the
//! history. Two keys are derived from it (HMAC-SHA256 of a label): one seals the address
//! (ChaCha20-Poly1305, a random nonce, the subscriber id as associated data, so a sealed
//! address cannot be moved to another subscriber), the other signs the links mailed to
//! the subscriber. Erasure deletes the key: every sealed copy (events, exports, read
//! models) becomes unreadable, and every link stops working.
//!
//! The address digest (SHA-256 of the tenant and the address in lower case) finds an
//! existing subscription, so that subscribing twice sends no second subscription; it lives
//! in the key's row and goes with it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hmac;
use uuid::Uuid;

use crate::DeliveryError;

/// How long a confirmation link works.
pub const CONFIRMATION_VALIDITY: chrono::Duration = chrono::Duration::days(7);

/// The prefix of a sealed address: the form's version.
const SEALED_PREFIX: &str = "v1.";
/// Bytes of a link's signature kept in the link (128 bits).
const SIGNATURE_LEN: usize = 16;

/// A subscriber's own key.
#[derive(Clone)]
pub struct SubscriberKey([u8; 32]);

impl std::fmt::Debug for SubscriberKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubscriberKey(..)")
    }
}

impl SubscriberKey {
    pub fn generate() -> Result<SubscriberKey, DeliveryError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(DeliveryError::Randomness)?;
        Ok(SubscriberKey(bytes))
    }

    /// The key as `subscriber_keys.key` holds it.
    pub fn from_bytes(bytes: &[u8]) -> Option<SubscriberKey> {
        Some(SubscriberKey(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn derived(&self, label: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.0), label);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn sealing(&self) -> Option<LessSafeKey> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &self.derived(b"crier address")).ok()?;
        Some(LessSafeKey::new(unbound))
    }

    fn signing(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.derived(b"crier links"))
    }

    /// `address` sealed for subscriber `id`: `v1.` and base64url(nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, id: Uuid, address: &str) -> Result<String, DeliveryError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(DeliveryError::Randomness)?;
        let key = self.sealing().ok_or(DeliveryError::Sealing)?;
        let mut sealed = address.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(id.as_bytes()),
            &mut sealed,
        )
        .map_err(|_| DeliveryError::Sealing)?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The address sealed for subscriber `id`, if this key sealed it.
    pub fn open(&self, id: Uuid, sealed: &str) -> Option<String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(sealed.strip_prefix(SEALED_PREFIX)?)
            .ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .sealing()?
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut in_out)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }

    fn signature(&self, purpose: &[u8], body: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut message = purpose.to_vec();
        message.push(0);
        message.extend_from_slice(body);
        let tag = hmac::sign(&self.signing(), &message);
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(&tag.as_ref()[..SIGNATURE_LEN]);
        out
    }

    /// The token of the confirmation link for the request made at `requested_at`.
    pub fn confirmation_token(&self, id: Uuid, requested_at: DateTime<Utc>) -> String {
        let mut body = id.as_bytes().to_vec();
        body.extend_from_slice(&requested_at.timestamp().to_be_bytes());
        let signature = self.signature(b"confirm", &body);
        body.extend_from_slice(&signature);
        URL_SAFE_NO_PAD.encode(body)
    }

    /// The token of the unsubscribe link: the same in every email to this subscriber.
    pub fn unsubscribe_token(&self, id: Uuid) -> String {
        let mut body = id.as_bytes().to_vec();
        let signature = self.signature(b"unsubscribe", &body);
        body.extend_from_slice(&signature);
        URL_SAFE_NO_PAD.encode(body)
    }
}

/// A link's token as it reads before its key is found: whose it is and what it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkToken {
    pub subscriber_id: Uuid,
    /// A confirmation's request time; `None` for an unsubscribe link.
    pub requested_at: Option<DateTime<Utc>>,
    signature: [u8; SIGNATURE_LEN],
}

impl LinkToken {
    /// A confirmation token's parts, or `None` when it is not one.
    pub fn confirmation(token: &str) -> Option<LinkToken> {
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        if bytes.len() != 16 + 8 + SIGNATURE_LEN {
            return None;
        }
        let subscriber_id = Uuid::from_slice(&bytes[..16]).ok()?;
        let seconds = i64::from_be_bytes(bytes[16..24].try_into().ok()?);
        Some(LinkToken {
            subscriber_id,
            requested_at: Some(DateTime::from_timestamp(seconds, 0)?),
            signature: bytes[24..].try_into().ok()?,
        })
    }

    /// An unsubscribe token's parts, or `None` when it is not one.
    pub fn unsubscribe(token: &str) -> Option<LinkToken> {
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        if bytes.len() != 16 + SIGNATURE_LEN {
            return None;
        }
        Some(LinkToken {
            subscriber_id: Uuid::from_slice(&bytes[..16]).ok()?,
            requested_at: None,
            signature: bytes[16..].try_into().ok()?,
        })
    }

    /// Was it signed with `key`? (Compared in constant time.)
    pub fn signed_by(&self, key: &SubscriberKey) -> bool {
        let (purpose, mut body): (&[u8], Vec<u8>) = match self.requested_at {
            Some(at) => {
                let mut body = self.subscriber_id.as_bytes().to_vec();
                body.extend_from_slice(&at.timestamp().to_be_bytes());
                (b"confirm", body)
            }
            None => (b"unsubscribe", self.subscriber_id.as_bytes().to_vec()),
        };
        let mut message = purpose.to_vec();
        message.push(0);
        message.append(&mut body);
        let tag = hmac::sign(&key.signing(), &message);
        ring_constant_time_eq(&tag.as_ref()[..SIGNATURE_LEN], &self.signature)
    }

    /// A confirmation link made at its request time is good until then plus 7 days.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.requested_at
            .is_some_and(|at| now > at + CONFIRMATION_VALIDITY)
    }
}

fn ring_constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The digest that finds an address's subscription in a tenant (`None`: the public one).
/// Addresses differing only in case are one subscription.
pub fn address_digest(tenant: Option<&str>, address: &str) -> Vec<u8> {
    let mut input = b"crier subscriber address v1\0".to_vec();
    input.extend_from_slice(tenant.unwrap_or("").as_bytes());
    input.push(0);
    input.extend_from_slice(address.trim().to_lowercase().as_bytes());
    ring::digest::digest(&ring::digest::SHA256, &input)
        .as_ref()
        .to_vec()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_sealed_address_opens_only_with_its_key_and_its_subscriber() {
        let key = SubscriberKey::generate().unwrap();
        let id = Uuid::from_u128(1);
        let sealed = key.seal(id, "nurse@nhs.example").unwrap();
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("nurse"));
        assert_ne!(sealed, key.seal(id, "nurse@nhs.example").unwrap());
        assert_eq!(key.open(id, &sealed).as_deref(), Some("nurse@nhs.example"));
        assert_eq!(key.open(Uuid::from_u128(2), &sealed), None);
        let other = SubscriberKey::generate().unwrap();
        assert_eq!(other.open(id, &sealed), None);
        let stored = SubscriberKey::from_bytes(key.as_bytes()).unwrap();
        assert_eq!(
            stored.open(id, &sealed).as_deref(),
            Some("nurse@nhs.example")
        );
    }

    #[test]
    fn links_verify_with_their_key_only_and_confirmations_expire_after_seven_days() {
        let key = SubscriberKey::generate().unwrap();
        let id = Uuid::from_u128(7);
        let at = DateTime::from_timestamp(1_796_000_000, 0).unwrap();
        let confirm = LinkToken::confirmation(&key.confirmation_token(id, at)).unwrap();
        assert_eq!(confirm.subscriber_id, id);
        assert!(confirm.signed_by(&key));
        assert!(!confirm.signed_by(&SubscriberKey::generate().unwrap()));
        assert!(!confirm.expired(at + chrono::Duration::days(7)));
        assert!(confirm.expired(at + chrono::Duration::days(7) + chrono::Duration::seconds(1)));
        let unsubscribe = LinkToken::unsubscribe(&key.unsubscribe_token(id)).unwrap();
        assert!(unsubscribe.signed_by(&key) && !unsubscribe.expired(at));
        // One kind of link is not the other, and a changed byte is no link.
        assert_eq!(
            LinkToken::unsubscribe(&key.confirmation_token(id, at)),
            None
        );
        let mut forged = key.unsubscribe_token(id).into_bytes();
        forged[30] = if forged[30] == b'A' { b'B' } else { b'A' };
        let forged = LinkToken::unsubscribe(std::str::from_utf8(&forged).unwrap()).unwrap();
        assert!(!forged.signed_by(&key));
        assert_eq!(LinkToken::confirmation("not a token"), None);
    }

    #[test]
    fn the_digest_ignores_case_and_separates_tenants() {
        assert_eq!(
            address_digest(None, "Nurse@NHS.example"),
            address_digest(None, "nurse@nhs.example ")
        );
        assert_ne!(
            address_digest(None, "nurse@nhs.example"),
            address_digest(Some("wales"), "nurse@nhs.example")
        );
    }
}
