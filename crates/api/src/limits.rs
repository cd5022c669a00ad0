//! Rate limits: writes per API key, failed authentications per client address, and (off by
//! default) public reads per client address. Each process keeps its own counts, so N
//! processes behind a balancer allow up to N times the configured rates.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use crate::problem::ApiError;

/// The configured rates; `0` turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Writes per second allowed to one API key, with a burst of twice that.
    pub writes_per_second: u32,
    /// Failed authentications per minute allowed from one address (as a burst); past it,
    /// the address is refused with 429 until the budget refills, whatever key it presents.
    pub auth_failures_per_minute: u32,
    /// Reads per second allowed from one address, with a burst of twice that.
    pub reads_per_second: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            writes_per_second: 50,
            auth_failures_per_minute: 30,
            reads_per_second: 0,
        }
    }
}

pub struct Limits {
    writes: Option<DefaultKeyedRateLimiter<Uuid>>,
    auth_failures: Option<DefaultKeyedRateLimiter<IpAddr>>,
    reads: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Addresses that spent their failed-authentication budget, until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

fn per_second_with_double_burst(rate: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
    Some(Quota::per_second(rate).allow_burst(burst))
}

fn refused<K: std::hash::Hash + Eq + Clone>(
    limiter: &Option<DefaultKeyedRateLimiter<K>>,
    key: &K,
) -> Option<Duration> {
    let limiter = limiter.as_ref()?;
    limiter
        .check_key(key)
        .err()
        .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        Limits {
            writes: per_second_with_double_burst(settings.writes_per_second)
                .map(RateLimiter::keyed),
            auth_failures: NonZeroU32::new(settings.auth_failures_per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            reads: per_second_with_double_burst(settings.reads_per_second).map(RateLimiter::keyed),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one write of `key`; 429 when it is over its rate.
    pub fn allow_write(&self, key: Uuid) -> Result<(), ApiError> {
        match refused(&self.writes, &key) {
            None => Ok(()),
            Some(retry_after) => Err(ApiError::RateLimited { retry_after }),
        }
    }

    /// Counts one public read from `address`; 429 when it is over its rate.
    pub fn allow_read(&self, address: Option<IpAddr>) -> Result<(), ApiError> {
        match address.and_then(|a| refused(&self.reads, &a)) {
            None => Ok(()),
            Some(retry_after) => Err(ApiError::RateLimited { retry_after }),
        }
    }

    pub fn reads_limited(&self) -> bool {
        self.reads.is_some()
    }

    /// 429 while `address` is serving a penalty for failed authentications.
    pub fn refuse_blocked_address(&self, address: IpAddr) -> Result<(), ApiError> {
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        match blocked.get(&address) {
            Some(until) if *until > Instant::now() => Err(ApiError::RateLimited {
                retry_after: *until - Instant::now(),
            }),
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication from `address`: the failure itself, or 429 once the
    /// address has failed too often (and then until its budget refills).
    pub fn failed_authentication(&self, address: Option<IpAddr>, failure: ApiError) -> ApiError {
        let Some(address) = address else {
            return failure;
        };
        match refused(&self.auth_failures, &address) {
            None => failure,
            Some(retry_after) => {
                tracing::warn!(%address, "too many failed authentications");
                let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
                blocked.insert(address, Instant::now() + retry_after);
                ApiError::RateLimited { retry_after }
            }
        }
    }

    /// Forgets keys and addresses whose limits are back to full, so memory stays bounded by
    /// the recently active ones. Run it every minute or so.
    pub fn forget_idle(&self) {
        for limiter in [&self.auth_failures, &self.reads].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(writes) = &self.writes {
            writes.retain_recent();
            writes.shrink_to_fit();
        }
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        blocked.retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_a_burst_of_twice_its_rate_then_429_with_a_wait() {
        let limits = Limits::new(LimitSettings {
            writes_per_second: 2,
            ..LimitSettings::default()
        });
        let key = Uuid::new_v4();
        for _ in 0..4 {
            limits.allow_write(key).unwrap();
        }
        match limits.allow_write(key) {
            Err(ApiError::RateLimited { retry_after }) => {
                assert!(retry_after <= Duration::from_millis(500), "{retry_after:?}")
            }
            other => panic!("{other:?}"),
        }
        limits
            .allow_write(Uuid::new_v4())
            .expect("other keys are not affected");
    }

    #[test]
    fn zero_turns_limits_off() {
        let limits = Limits::new(LimitSettings {
            writes_per_second: 0,
            auth_failures_per_minute: 0,
            reads_per_second: 0,
        });
        let key = Uuid::new_v4();
        let address: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..1000 {
            limits.allow_write(key).unwrap();
            limits.allow_read(Some(address)).unwrap();
            assert!(matches!(
                limits.failed_authentication(Some(address), ApiError::Unauthorized("no".into())),
                ApiError::Unauthorized(_)
            ));
        }
        limits.refuse_blocked_address(address).unwrap();
    }

    #[test]
    fn an_address_that_fails_too_often_is_refused_even_with_a_good_key() {
        let limits = Limits::new(LimitSettings {
            auth_failures_per_minute: 3,
            ..LimitSettings::default()
        });
        let address: IpAddr = [10, 0, 0, 7].into();
        for _ in 0..3 {
            let e = limits.failed_authentication(Some(address), ApiError::Unauthorized("".into()));
            assert!(matches!(e, ApiError::Unauthorized(_)));
        }
        let e = limits.failed_authentication(Some(address), ApiError::Unauthorized("".into()));
        assert!(matches!(e, ApiError::RateLimited { .. }));
        assert!(limits.refuse_blocked_address(address).is_err());
        assert!(limits.refuse_blocked_address([10, 0, 0, 8].into()).is_ok());
    }
}
