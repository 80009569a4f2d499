//! Rate limits for the customer API (intake and reports, per client address and per verified
//! API key; 429 with `Retry-After`), the head limits (414/431), and the per-instance budget for
//! lookups of unknown links and images. How they fit together, and why the hot paths pass
//! untouched: docs/ARCHITECTURE.md, "Protection at the edge".

use std::future::{Ready, ready};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::EitherBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::{ConnectionType, Method, StatusCode};
use actix_web::{Error, HttpMessage, ResponseError};
use futures_util::TryFutureExt;
use futures_util::future::{Either, MapOk};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::platform::client_addr::{TrustedProxies, subscriber_block};
use crate::platform::http::HttpError;

/// How often limiter entries that have fully recovered are dropped.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(60);
/// The public id in `rk_<id>_<secret>`.
const KEY_ID_LEN: usize = 12;

/// `[limits]` in the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    pub enabled: bool,
    pub intake_per_minute: u32,
    pub reports_per_minute: u32,
    pub burst: u32,
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    /// Peers (CIDR blocks or addresses) whose `Forwarded` / `X-Forwarded-For` are believed.
    pub trusted_proxies: Vec<String>,
    /// Backend look-ups a second for link codes and images memory does not know (0: unbounded).
    pub miss_lookups_per_second: u32,
}

impl LimitsSettings {
    /// Problems with these settings, each starting with the key at fault.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_uri_bytes < 256 {
            problems.push("limits.max_uri_bytes: must be at least 256".into());
        }
        if self.max_header_bytes < 1024 {
            problems.push("limits.max_header_bytes: must be at least 1024".into());
        }
        if let Err(e) = TrustedProxies::parse(&self.trusted_proxies) {
            problems.push(format!("limits.trusted_proxies: {e}"));
        }
        if self.enabled {
            for (key, value) in [
                ("limits.intake_per_minute", self.intake_per_minute),
                ("limits.reports_per_minute", self.reports_per_minute),
                ("limits.burst", self.burst),
            ] {
                if value == 0 {
                    problems.push(format!(
                        "{key}: must be at least 1 (set limits.enabled = false to turn limits off)"
                    ));
                }
            }
        }
        problems
    }
}

/// Which budget a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// `POST /adverts`, `POST /login`, and `POST`/`PATCH`/`PUT`/`DELETE` on `/api/v1/adverts`,
    /// `/dashboard/adverts`, `/api/v1/keys`, `/dashboard/keys`, `/api/v1/webhooks` and below.
    Intake,
    /// `GET /api/v1/adverts/{id}/report`, `GET /api/v1/reports`,
    /// `GET /dashboard/adverts/{id}/report.csv`.
    Reports,
}

/// The limited routes; `None` for everything else, decided from the method and path alone
/// (no allocation, no hashing).
pub fn classify(method: &Method, path: &str) -> Option<RouteClass> {
    const ADVERTS: &str = "/api/v1/adverts";
    const DASHBOARD_ADVERTS: &str = "/dashboard/adverts";
    const KEYS: &str = "/api/v1/keys";
    const DASHBOARD_KEYS: &str = "/dashboard/keys";
    const WEBHOOKS: &str = "/api/v1/webhooks";
    let below = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
    };
    if method == Method::GET || method == Method::HEAD {
        // The hot GETs (/r/, /media/, /api/v1/serve) fail the first comparison of each test.
        let report = path == "/api/v1/reports"
            || (path.ends_with("/report") && below(ADVERTS))
            || (path.ends_with("/report.csv") && below(DASHBOARD_ADVERTS));
        return report.then_some(RouteClass::Reports);
    }
    let writes = method == Method::POST
        || method == Method::PATCH
        || method == Method::PUT
        || method == Method::DELETE;
    let intake = writes
        && (path == "/adverts"
            || path == "/login"
            || path == ADVERTS
            || below(ADVERTS)
            || path == DASHBOARD_ADVERTS
            || below(DASHBOARD_ADVERTS)
            || path == KEYS
            || below(KEYS)
            || path == DASHBOARD_KEYS
            || below(DASHBOARD_KEYS)
            || path == WEBHOOKS
            || below(WEBHOOKS));
    intake.then_some(RouteClass::Intake)
}

/// The public id of a bearer key `rk_<id>_<secret>`, if the key has that shape.
pub fn key_id(token: &str) -> Option<[u8; KEY_ID_LEN]> {
    let (id, _secret) = token.strip_prefix("rk_")?.split_once('_')?;
    let id: [u8; KEY_ID_LEN] = id.as_bytes().try_into().ok()?;
    id.iter().all(u8::is_ascii_alphanumeric).then_some(id)
}

struct Budget {
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    by_key: DefaultKeyedRateLimiter<[u8; KEY_ID_LEN]>,
}

impl Budget {
    fn new(per_minute: u32, burst: u32) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Self {
            by_address: RateLimiter::keyed(quota),
            by_key: RateLimiter::keyed(quota),
        }
    }
}

/// The rate limiters of one instance.
pub struct RateLimits {
    intake: Budget,
    reports: Budget,
    proxies: TrustedProxies,
    clock: DefaultClock,
}

impl RateLimits {
    /// `None` when limits are off. The client address is the forwarded one only from `proxies`.
    pub fn from_settings(settings: &LimitsSettings, proxies: TrustedProxies) -> Option<Self> {
        settings.enabled.then(|| Self {
            intake: Budget::new(settings.intake_per_minute, settings.burst),
            reports: Budget::new(settings.reports_per_minute, settings.burst),
            proxies,
            clock: DefaultClock::default(),
        })
    }

    fn budget(&self, class: RouteClass) -> &Budget {
        match class {
            RouteClass::Intake => &self.intake,
            RouteClass::Reports => &self.reports,
        }
    }

    fn client_address(&self, req: &ServiceRequest) -> Option<IpAddr> {
        self.proxies
            .client_ip(req.peer_addr().map(|a| a.ip()), req.headers())
    }

    /// Draws one request from the address's budget; on refusal, how long until the request
    /// would have been allowed.
    pub fn check(&self, class: RouteClass, req: &ServiceRequest) -> Result<(), Duration> {
        match self.client_address(req) {
            Some(ip) => self
                .budget(class)
                .by_address
                .check_key(&subscriber_block(ip))
                .map_err(|refused| refused.wait_time_from(self.clock.now())),
            None => Ok(()),
        }
    }

    /// Draws one request from a verified key's budget (`key` is the whole key, already checked
    /// against the database).
    pub fn charge_key(&self, class: RouteClass, key: &str) -> Result<(), Duration> {
        match key_id(key.trim()) {
            Some(id) => self
                .budget(class)
                .by_key
                .check_key(&id)
                .map_err(|refused| refused.wait_time_from(self.clock.now())),
            None => Ok(()),
        }
    }

    /// Drops the entries of clients that are back at a full burst.
    pub fn cleanup(&self) {
        for budget in [&self.intake, &self.reports] {
            budget.by_address.retain_recent();
            budget.by_address.shrink_to_fit();
            budget.by_key.retain_recent();
            budget.by_key.shrink_to_fit();
        }
    }

    /// Entries held (addresses and keys, both classes).
    pub fn tracked(&self) -> usize {
        [&self.intake, &self.reports]
            .iter()
            .map(|b| b.by_address.len() + b.by_key.len())
            .sum()
    }

    /// Runs `cleanup` every minute until `cancel`.
    pub fn spawn_cleanup(self: &Arc<Self>, cancel: CancellationToken) -> JoinHandle<()> {
        let limits = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CLEANUP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => limits.cleanup(),
                }
            }
        })
    }
}

/// The budget a limited request's key draws from once it is verified (a request extension).
#[derive(Clone)]
pub struct KeyBudget {
    class: RouteClass,
    limits: Arc<RateLimits>,
}

impl KeyBudget {
    /// Draws one request from the verified `key`'s budget.
    pub fn charge(&self, key: &str) -> Result<(), Duration> {
        self.limits.charge_key(self.class, key)
    }
}

/// The instance's budget of backend look-ups for what memory does not know (a link code, an
/// image): a flood of made-up codes or image URLs gets this many database or Redis reads a
/// second in all, then answers from memory (503 with Retry-After) until the budget refills,
/// so it cannot starve intake, reports and cold links of connections. Shared by every path
/// it guards; one atomic compare-and-swap per look-up, nothing on a memory hit.
#[derive(Clone, Default)]
pub struct MissBudget(Option<Arc<governor::DefaultDirectRateLimiter>>);

impl MissBudget {
    /// `per_second` look-ups a second, bursts of as many; 0 leaves look-ups unbounded.
    pub fn new(per_second: u32) -> Self {
        Self(
            NonZeroU32::new(per_second)
                .map(|n| Arc::new(RateLimiter::direct(Quota::per_second(n)))),
        )
    }

    /// Takes one look-up from the budget: false when it is spent.
    pub fn try_spend(&self) -> bool {
        let spent = self.0.as_ref().is_some_and(|l| l.check().is_err());
        if spent {
            metrics::counter!("reklama_miss_lookups_deferred_total").increment(1);
        }
        !spent
    }
}

/// The 429 answer: the JSON error format with `Retry-After` in whole seconds (at least 1).
pub fn rate_limited(wait: Duration) -> HttpError {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HttpError {
        retry_after_secs: Some(u32::try_from(secs.max(1)).unwrap_or(u32::MAX)),
        ..HttpError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests; retry after the number of seconds in Retry-After",
        )
    }
}

/// Refuses oversized request heads before any handler runs: `App::new().wrap(HeadLimit {..})`.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimit {
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
}

impl HeadLimit {
    pub fn from_settings(settings: &LimitsSettings) -> Self {
        Self {
            max_uri_bytes: settings.max_uri_bytes,
            max_header_bytes: settings.max_header_bytes,
        }
    }

    /// The refusal for this request head, if any.
    fn refusal(&self, req: &ServiceRequest) -> Option<HttpError> {
        let uri = req.uri();
        let uri_len = uri.path().len() + uri.query().map_or(0, |q| q.len() + 1);
        if uri_len > self.max_uri_bytes {
            return Some(HttpError::new(
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                format!(
                    "the request URI is longer than {} bytes",
                    self.max_uri_bytes
                ),
            ));
        }
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        (header_bytes > self.max_header_bytes).then(|| {
            HttpError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                format!(
                    "the request headers are larger than {} bytes in all",
                    self.max_header_bytes
                ),
            )
        })
    }
}

impl<S, B> Transform<S, ServiceRequest> for HeadLimit
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = HeadLimitMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(HeadLimitMiddleware {
            service,
            limit: *self,
        }))
    }
}

pub struct HeadLimitMiddleware<S> {
    service: S,
    limit: HeadLimit,
}

impl<S, B> Service<ServiceRequest> for HeadLimitMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future =
        Either<MapOk<S::Future, Passed<B>>, Ready<Result<ServiceResponse<EitherBody<B>>, Error>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        if let Some(error) = self.limit.refusal(&req) {
            let mut response = error.error_response();
            // The rest of an oversized request is not worth reading.
            response
                .head_mut()
                .set_connection_type(ConnectionType::Close);
            return Either::Right(ready(Ok(req.into_response(response).map_into_right_body())));
        }
        let passed: Passed<B> = ServiceResponse::map_into_left_body;
        Either::Left(self.service.call(req).map_ok(passed))
    }
}

/// The middleware factory: `App::new().wrap(RateLimit::new(limits))`.
#[derive(Clone)]
pub struct RateLimit {
    limits: Option<Arc<RateLimits>>,
}

impl RateLimit {
    pub fn new(limits: Option<Arc<RateLimits>>) -> Self {
        Self { limits }
    }
}

impl<S, B> Transform<S, ServiceRequest> for RateLimit
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = RateLimitMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RateLimitMiddleware {
            service,
            limits: self.limits.clone(),
        }))
    }
}

pub struct RateLimitMiddleware<S> {
    service: S,
    limits: Option<Arc<RateLimits>>,
}

type Passed<B> = fn(ServiceResponse<B>) -> ServiceResponse<EitherBody<B>>;

impl<S, B> Service<ServiceRequest> for RateLimitMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future =
        Either<MapOk<S::Future, Passed<B>>, Ready<Result<ServiceResponse<EitherBody<B>>, Error>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        // `match_info` holds the path the router will match: percent-decoded (all but `%2F`,
        // `%25` and `%2B`), computed once when the request arrived.
        if let Some(limits) = &self.limits
            && let Some(class) = classify(req.method(), req.match_info().as_str())
        {
            if let Err(wait) = limits.check(class, &req) {
                let response = rate_limited(wait).error_response();
                return Either::Right(ready(Ok(req.into_response(response).map_into_right_body())));
            }
            // For the `Customer` extractor, which draws from the key's budget once verified.
            req.extensions_mut().insert(KeyBudget {
                class,
                limits: Arc::clone(limits),
            });
        }
        let passed: Passed<B> = ServiceResponse::map_into_left_body;
        Either::Left(self.service.call(req).map_ok(passed))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_intake_writes_and_reports_are_limited() {
        use RouteClass::{Intake, Reports};
        let cases: &[(Method, &str, Option<RouteClass>)] = &[
            (Method::POST, "/adverts", Some(Intake)),
            (Method::POST, "/api/v1/adverts", Some(Intake)),
            (Method::PATCH, "/api/v1/adverts/7", Some(Intake)),
            (Method::DELETE, "/api/v1/adverts/7", Some(Intake)),
            (Method::POST, "/api/v1/keys", Some(Intake)),
            (Method::DELETE, "/api/v1/keys/AbCdEf123456", Some(Intake)),
            (Method::POST, "/api/v1/webhooks", Some(Intake)),
            (Method::PATCH, "/api/v1/webhooks/wh_x", Some(Intake)),
            (Method::GET, "/api/v1/webhooks", None),
            (Method::POST, "/dashboard/keys", Some(Intake)),
            (
                Method::POST,
                "/dashboard/keys/AbCdEf123456/revoke",
                Some(Intake),
            ),
            (Method::GET, "/api/v1/keys", None),
            (Method::GET, "/api/v1/adverts/7/report", Some(Reports)),
            (Method::GET, "/api/v1/reports", Some(Reports)),
            (Method::POST, "/login", Some(Intake)),
            (Method::POST, "/dashboard/adverts", Some(Intake)),
            (Method::POST, "/dashboard/adverts/7/status", Some(Intake)),
            (
                Method::GET,
                "/dashboard/adverts/7/report.csv",
                Some(Reports),
            ),
            (Method::GET, "/dashboard/adverts/7", None),
            (Method::GET, "/dashboard", None),
            (Method::GET, "/login", None),
            (Method::POST, "/logout", None),
            // Hot paths and reads stay free.
            (Method::GET, "/r/Ab3dE5gH7jK9", None),
            (Method::HEAD, "/r/Ab3dE5gH7jK9", None),
            (Method::GET, "/api/v1/serve", None),
            (Method::GET, "/media/1/abc.jpg", None),
            (Method::GET, "/api/v1/adverts", None),
            (Method::GET, "/api/v1/adverts/7", None),
            (Method::GET, "/api/v1/adverts/7/full", None),
            (Method::GET, "/healthz", None),
            (Method::GET, "/", None),
            (Method::POST, "/api/v1/advertsX", None),
            (Method::GET, "/api/v1/advertsX/report", None),
            (Method::OPTIONS, "/api/v1/adverts", None),
        ];
        for (method, path, want) in cases {
            assert_eq!(classify(method, path), *want, "{method} {path}");
        }
    }

    #[test]
    fn the_key_id_is_the_public_part_only() {
        let id = key_id(&format!("rk_{}_{}", "AbC123xyz789", "s".repeat(32))).unwrap();
        assert_eq!(&id, b"AbC123xyz789");
        assert_eq!(key_id("rk_short_secret"), None);
        assert_eq!(key_id("rk_AbC123xyz789"), None);
        assert_eq!(key_id("xx_AbC123xyz789_secret"), None);
        assert_eq!(key_id("rk_AbC123xyz7-9_secret"), None);
    }

    #[test]
    fn ipv6_clients_share_their_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(subscriber_block(a), subscriber_block(b));
        assert_ne!(subscriber_block(a), subscriber_block(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            subscriber_block(mapped),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_miss_budget_refuses_past_its_burst_and_zero_is_unbounded() {
        let budget = MissBudget::new(3);
        assert_eq!((0..5).filter(|_| budget.try_spend()).count(), 3);
        let unbounded = MissBudget::new(0);
        assert!((0..1000).all(|_| unbounded.try_spend()));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let secs = |d| rate_limited(d).retry_after_secs.unwrap();
        assert_eq!(secs(Duration::from_millis(1)), 1);
        assert_eq!(secs(Duration::from_millis(1000)), 1);
        assert_eq!(secs(Duration::from_millis(1001)), 2);
        assert_eq!(
            rate_limited(Duration::ZERO).status,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(rate_limited(Duration::ZERO).code, "rate_limited");
    }

    #[test]
    fn zero_rates_are_refused_only_when_enabled() {
        let mut s = LimitsSettings {
            enabled: true,
            intake_per_minute: 0,
            reports_per_minute: 1,
            burst: 0,
            max_uri_bytes: 8192,
            max_header_bytes: 32768,
            trusted_proxies: vec!["10.0.0.0/8".into()],
            miss_lookups_per_second: 200,
        };
        let problems = s.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("limits.intake_per_minute"));
        s.enabled = false;
        assert!(s.problems().is_empty());
        s.trusted_proxies.push("10.0.0.0/99".into());
        assert!(s.problems()[0].starts_with("limits.trusted_proxies"));
    }
}
