//! What one client may cost: rate limits (writes per API key, failed authentications per
//! client address, and, off by default, public reads per client address), open event
//! streams per client address and in all, and bounds on each request (its head's size, the
//! time its body may take to arrive). Each process keeps its own counts, so N processes
//! behind a balancer allow up to N times the configured rates.
//!
//! A client address is the TCP peer's, unless the peer is one of the trusted proxies
//! (`CRIER_TRUSTED_PROXIES`): then it is the right-most address of `Forwarded` (or, without
//! it, `X-Forwarded-For`) that is not a trusted proxy, since every proxy appends the address
//! it heard from and only the trusted ones can be believed. From any other peer those
//! headers are ignored, so a client cannot choose the address it is counted by. Limits count
//! an IPv6 address by its /64, the block one subscriber line usually gets.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::body::BoxBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpMessage, HttpResponse};
use futures_util::StreamExt;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use crate::problem::{ApiError, Problem};

/// The configured limits; `0` turns a rate or count off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Writes per second allowed to one API key, with a burst of twice that.
    pub writes_per_second: u32,
    /// Failed authentications per minute allowed from one address (as a burst); past it,
    /// the address is refused with 429 until the budget refills, whatever key it presents.
    pub auth_failures_per_minute: u32,
    /// Reads per second allowed from one address, with a burst of twice that.
    pub reads_per_second: u32,
    /// `/v1/stream` connections open at once from one address.
    pub streams_per_client: u32,
    /// `/v1/stream` connections open at once in this process, below its open-file limit
    /// (503 with `Retry-After` past it); `0`: no cap.
    pub streams_total: u32,
    /// Largest request line plus headers, in bytes (431 past it).
    pub max_head_bytes: usize,
    /// How long a request's body may take to arrive once its head has (408 past it).
    pub body_timeout: Duration,
    /// Email subscriptions per minute allowed from one address (as a burst); 429 past it.
    pub subscriptions_per_minute: u32,
    /// Confirmation emails per hour sent to one recipient (as a burst): past it, a
    /// subscription request is answered alike and sends nothing, so that nobody can flood
    /// an inbox through Crier.
    pub confirmations_per_hour: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            writes_per_second: 50,
            auth_failures_per_minute: 30,
            reads_per_second: 0,
            streams_per_client: 1_000,
            streams_total: 0,
            max_head_bytes: 16 * 1024,
            body_timeout: Duration::from_secs(10),
            subscriptions_per_minute: 10,
            confirmations_per_hour: 3,
        }
    }
}

pub struct Limits {
    writes: Option<DefaultKeyedRateLimiter<Uuid>>,
    auth_failures: Option<DefaultKeyedRateLimiter<IpAddr>>,
    reads: Option<DefaultKeyedRateLimiter<IpAddr>>,
    subscriptions: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// By the digest of the recipient's address.
    confirmations: Option<DefaultKeyedRateLimiter<Vec<u8>>>,
    /// Addresses that spent their failed-authentication budget, until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    /// Open streams by address (addresses with none are removed), and in all.
    streams: Mutex<HashMap<IpAddr, u32>>,
    open_streams: std::sync::atomic::AtomicU32,
    settings: LimitSettings,
    trusted_proxies: Vec<ipnet::IpNet>,
}

/// One open stream of a client address, given back when dropped.
pub struct StreamSlot {
    limits: Arc<Limits>,
    address: IpAddr,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.limits
            .open_streams
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        let mut streams = self
            .limits
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(open) = streams.get_mut(&self.address) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                streams.remove(&self.address);
            }
        }
    }
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

/// The address a limit counts `ip` by: an IPv4 address as it is (also when written as
/// IPv4-mapped IPv6), an IPv6 address by its /64.
pub fn counted_as(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// The hops a proxy chain reports, left (the first client) to right (the last proxy):
/// `Forwarded` `for=` values when there is such a header, else `X-Forwarded-For`. A hop that
/// is not an address (`unknown`, an obfuscated name) is `None`.
fn forwarded_hops(request: &actix_web::HttpRequest) -> Vec<Option<IpAddr>> {
    let headers = request.headers();
    let forwarded: Vec<&str> = headers
        .get_all(header::FORWARDED)
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| parse_hop(value.trim().trim_matches('"')))
                })
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| parse_hop(hop.trim()))
        .collect()
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]:4711`,
/// `2001:db8::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        Limits::with_trusted_proxies(settings, Vec::new())
    }

    /// Limits that take the client address from `Forwarded` or `X-Forwarded-For` of these
    /// peers only.
    pub fn with_trusted_proxies(
        settings: LimitSettings,
        trusted_proxies: Vec<ipnet::IpNet>,
    ) -> Self {
        Limits {
            writes: per_second_with_double_burst(settings.writes_per_second)
                .map(RateLimiter::keyed),
            auth_failures: NonZeroU32::new(settings.auth_failures_per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            reads: per_second_with_double_burst(settings.reads_per_second).map(RateLimiter::keyed),
            subscriptions: NonZeroU32::new(settings.subscriptions_per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            confirmations: NonZeroU32::new(settings.confirmations_per_hour)
                .map(|n| RateLimiter::keyed(Quota::per_hour(n))),
            blocked: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            open_streams: std::sync::atomic::AtomicU32::new(0),
            settings,
            trusted_proxies,
        }
    }

    /// Is `ip` one of the trusted proxies? Matched as the address it is (an IPv4-mapped
    /// IPv6 address as IPv4), not by the /64 limits count it by: a proxy named by its own
    /// address or a block narrower than /64 must match, and its neighbours must not.
    fn trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client address of `request`: its TCP peer, or, when the peer is a trusted proxy,
    /// the right-most hop it reports that is not one (see the module documentation).
    pub fn client_address(&self, request: &actix_web::HttpRequest) -> Option<IpAddr> {
        let peer = request.peer_addr()?.ip();
        if !self.trusted(peer) {
            return Some(peer);
        }
        let mut client = peer;
        for hop in forwarded_hops(request).into_iter().rev() {
            match hop {
                Some(ip) if self.trusted(ip) => client = ip,
                Some(ip) => return Some(ip),
                // Not an address: the proxy that reported it is as far as can be known.
                None => return Some(client),
            }
        }
        Some(client)
    }

    /// Streams open in this process.
    pub fn open_streams(&self) -> u32 {
        self.open_streams.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn settings(&self) -> LimitSettings {
        self.settings
    }

    /// A slot for one more open stream from `address`; 429 when it has all it may have.
    /// Without an address (a test request) nothing is counted.
    pub fn open_stream(
        self: &Arc<Self>,
        address: Option<IpAddr>,
    ) -> Result<Option<StreamSlot>, ApiError> {
        let Some(address) = address.map(counted_as) else {
            return Ok(None);
        };
        let total = self.settings.streams_total;
        let open = self
            .open_streams
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if total != 0 && open >= total {
            self.open_streams
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            return Err(ApiError::unavailable(format!(
                "this process holds {total} event streams, the most it may (set \
                 CRIER_STREAM_LIMIT, or add processes); retry later"
            )));
        }
        let limit = self.settings.streams_per_client;
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let open = streams.entry(address).or_insert(0);
        if limit != 0 && *open >= limit {
            drop(streams);
            self.open_streams
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            return Err(ApiError::TooManyStreams { limit });
        }
        *open += 1;
        Ok(Some(StreamSlot {
            limits: self.clone(),
            address,
        }))
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
        match address.and_then(|a| refused(&self.reads, &counted_as(a))) {
            None => Ok(()),
            Some(retry_after) => Err(ApiError::RateLimited { retry_after }),
        }
    }

    /// Counts one subscription request from `address`; 429 when it is over its rate.
    pub fn allow_subscription(&self, address: Option<IpAddr>) -> Result<(), ApiError> {
        match address.and_then(|a| refused(&self.subscriptions, &counted_as(a))) {
            None => Ok(()),
            Some(retry_after) => Err(ApiError::RateLimited { retry_after }),
        }
    }

    /// May one more confirmation be mailed to the recipient of this address digest?
    pub fn allow_confirmation(&self, digest: &[u8]) -> bool {
        refused(&self.confirmations, &digest.to_vec()).is_none()
    }

    pub fn reads_limited(&self) -> bool {
        self.reads.is_some()
    }

    /// 429 while `address` is serving a penalty for failed authentications.
    pub fn refuse_blocked_address(&self, address: IpAddr) -> Result<(), ApiError> {
        let address = counted_as(address);
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
        let Some(address) = address.map(counted_as) else {
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
        for limiter in [&self.auth_failures, &self.reads, &self.subscriptions]
            .into_iter()
            .flatten()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(writes) = &self.writes {
            writes.retain_recent();
            writes.shrink_to_fit();
        }
        if let Some(confirmations) = &self.confirmations {
            confirmations.retain_recent();
            confirmations.shrink_to_fit();
        }
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        blocked.retain(|_, until| *until > now);
    }
}

fn settings_of(request: &actix_web::HttpRequest) -> LimitSettings {
    request
        .app_data::<web::Data<Limits>>()
        .map(|limits| limits.settings())
        .unwrap_or_default()
}

/// 431 for a request whose line and headers are over [`LimitSettings::max_head_bytes`],
/// before any handler spends more on it. actix itself caps a head at 128 KiB and gives up on
/// a head not sent within 5 s.
pub fn head_refusal(request: &ServiceRequest) -> Option<HttpResponse> {
    let max_head_bytes = settings_of(request.request()).max_head_bytes;
    let head_bytes = head_bytes(request);
    (head_bytes > max_head_bytes).then(|| {
        Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request line and headers take {head_bytes} bytes, more than the \
                 {max_head_bytes} allowed"
            ),
        )
        .response()
    })
}

/// Whether a request's body missed [`LimitSettings::body_timeout`]; see [`BodyDeadline::set`].
pub struct BodyDeadline(Option<Rc<Cell<bool>>>);

impl BodyDeadline {
    /// Gives `request`'s body until [`LimitSettings::body_timeout`] from now to arrive.
    pub fn set(request: &mut ServiceRequest) -> BodyDeadline {
        // Only a request that announces a body has one to wait for.
        let has_body = request.headers().contains_key(header::CONTENT_LENGTH)
            || request.headers().contains_key(header::TRANSFER_ENCODING);
        if !has_body {
            return BodyDeadline(None);
        }
        let timed_out = Rc::new(Cell::new(false));
        let payload = request.take_payload();
        request.set_payload(Payload::from(body_within(
            payload,
            tokio::time::Instant::now() + settings_of(request.request()).body_timeout,
            timed_out.clone(),
        )));
        BodyDeadline(Some(timed_out))
    }

    /// `response`, or 408 (closing the connection) if the body arrived too late for it.
    pub fn enforce(self, response: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
        if !self.0.is_some_and(|timed_out| timed_out.get()) {
            return response;
        }
        let (request, _) = response.into_parts();
        let body_timeout = settings_of(&request).body_timeout;
        let mut refusal = Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                body_timeout.as_secs_f64()
            ),
        )
        .response();
        refusal
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
        ServiceResponse::new(request, refusal)
    }
}

/// The request line and headers as sent, near enough: method, target, and each header's
/// name and value with their separators.
fn head_bytes(request: &ServiceRequest) -> usize {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    request.method().as_str().len() + target + headers
}

type BoxedPayloadStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<actix_web::web::Bytes, PayloadError>>>,
>;

/// `payload`, failing (and setting `timed_out`) if it has not ended by `deadline`.
fn body_within(
    payload: Payload,
    deadline: tokio::time::Instant,
    timed_out: Rc<Cell<bool>>,
) -> BoxedPayloadStream {
    Box::pin(futures_util::stream::unfold(
        Some(payload),
        move |payload| {
            let timed_out = timed_out.clone();
            async move {
                let mut payload = payload?;
                match tokio::time::timeout_at(deadline, payload.next()).await {
                    Ok(Some(chunk)) => Some((chunk, Some(payload))),
                    Ok(None) => None,
                    Err(_) => {
                        timed_out.set(true);
                        let late = std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the request body arrived too slowly",
                        );
                        Some((Err(PayloadError::Io(late)), None))
                    }
                }
            }
        },
    ))
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
    fn an_ipv6_address_counts_by_its_64_and_a_mapped_ipv4_as_ipv4() {
        let limits = Arc::new(Limits::new(LimitSettings {
            streams_per_client: 2,
            ..LimitSettings::default()
        }));
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_line: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let next_line: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _a = limits.open_stream(Some(one)).unwrap();
        let _b = limits.open_stream(Some(same_line)).unwrap();
        assert!(matches!(
            limits.open_stream(Some("2001:db8:1:2:abcd::1".parse().unwrap())),
            Err(ApiError::TooManyStreams { .. })
        ));
        let _c = limits.open_stream(Some(next_line)).unwrap();
        assert_eq!(
            counted_as("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_process_holds_at_most_its_total_of_streams_and_gives_each_back() {
        let limits = Arc::new(Limits::new(LimitSettings {
            streams_total: 3,
            ..LimitSettings::default()
        }));
        let held: Vec<_> = (1..=3u8)
            .map(|n| limits.open_stream(Some([10, 0, 0, n].into())).unwrap())
            .collect();
        let refused = limits.open_stream(Some([10, 0, 0, 9].into()));
        assert!(matches!(refused, Err(ApiError::Unavailable { .. })));
        assert_eq!(limits.open_streams(), 3);
        drop(held);
        assert_eq!(limits.open_streams(), 0);
        assert!(limits.open_stream(Some([10, 0, 0, 9].into())).is_ok());
    }

    #[test]
    fn an_ipv6_proxy_named_by_its_address_or_a_narrow_block_is_trusted_and_its_neighbours_not() {
        use actix_web::test::TestRequest;
        let proxies = vec![
            ipnet::IpNet::from("::1".parse::<IpAddr>().unwrap()),
            "2001:db8::10/125".parse().unwrap(),
        ];
        let limits = Limits::with_trusted_proxies(LimitSettings::default(), proxies);
        let from = |peer: &str| {
            let request = TestRequest::default()
                .peer_addr(peer.parse().unwrap())
                .insert_header(("x-forwarded-for", "203.0.113.9"));
            limits.client_address(&request.to_http_request())
        };
        let forwarded = Some("203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(from("[::1]:443"), forwarded);
        assert_eq!(from("[2001:db8::11]:443"), forwarded);
        // The same /64, outside the block: its header is not believed.
        assert_eq!(
            from("[2001:db8::20]:443"),
            Some("2001:db8::20".parse().unwrap())
        );
    }

    #[test]
    fn forwarded_addresses_are_believed_from_trusted_proxies_only() {
        use actix_web::test::TestRequest;
        let proxies = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        let limits = Limits::with_trusted_proxies(LimitSettings::default(), proxies);
        let from = |peer: &str, headers: &[(&str, &str)]| {
            let mut request = TestRequest::default().peer_addr(peer.parse().unwrap());
            for (name, value) in headers {
                request = request.insert_header((*name, *value));
            }
            limits.client_address(&request.to_http_request())
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // A trusted proxy: the right-most untrusted hop; a client's own claim to its left is
        // not believed.
        assert_eq!(
            from(
                "10.0.0.2:443",
                &[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.5")]
            ),
            ip("203.0.113.9")
        );
        assert_eq!(
            from(
                "10.0.0.2:443",
                &[(
                    "forwarded",
                    "for=1.1.1.1, for=\"[2001:db8:cafe::17]:4711\";proto=https"
                )]
            ),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            from(
                "10.0.0.2:443",
                &[("forwarded", "for=192.0.2.60:80;by=10.0.0.2")]
            ),
            ip("192.0.2.60")
        );
        // Only proxies in the chain: the left-most of them.
        assert_eq!(
            from("10.0.0.2:443", &[("x-forwarded-for", "10.1.1.1, 10.0.0.5")]),
            ip("10.1.1.1")
        );
        // Not an address: the proxy that reported it.
        assert_eq!(
            from("10.0.0.2:443", &[("forwarded", "for=unknown")]),
            ip("10.0.0.2")
        );
        // Anyone else: the peer, whatever the headers say.
        assert_eq!(
            from("198.51.100.4:5000", &[("x-forwarded-for", "1.1.1.1")]),
            ip("198.51.100.4")
        );
        assert_eq!(
            from("198.51.100.4:5000", &[("forwarded", "for=1.1.1.1")]),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn zero_turns_limits_off() {
        let limits = Arc::new(Limits::new(LimitSettings {
            writes_per_second: 0,
            auth_failures_per_minute: 0,
            reads_per_second: 0,
            streams_per_client: 0,
            ..LimitSettings::default()
        }));
        let key = Uuid::new_v4();
        let address: IpAddr = [127, 0, 0, 1].into();
        let mut streams = Vec::new();
        for _ in 0..1000 {
            streams.push(limits.open_stream(Some(address)).unwrap());
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
