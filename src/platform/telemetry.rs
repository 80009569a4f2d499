//! Logging: human-readable by default, JSON for log collectors, filtered by `log.level`
//! (overridden by RUST_LOG when set). Metrics: the process-wide Prometheus recorder, every
//! request's count and latency per route, and the caches' hits and misses per tier.

use std::cell::RefCell;
use std::time::Duration;

use actix_web::HttpMessage;
use actix_web::dev::ServiceResponse;
use actix_web::http::Method;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

/// Installs the global subscriber once; later calls (tests building several apps) are no-ops.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        // Latencies from half a millisecond (a warm redirect) to ten seconds (a report under load).
        let buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "another metrics recorder is installed; /metrics shows only its own view"
            );
        }
        // Histograms keep every sample until upkeep folds them into their buckets: without it
        // memory grows with the request rate between two scrapes, or for ever when nobody scrapes.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms fold only when scraped");
        }
        handle
    })
}

/// Records an answered request: its log line (`request`, at debug; `request failed`, at warn, for
/// a 5xx) on its span, and its count and latency per route, method and status. Routes are the
/// patterns (`/r/{code}`), so the number of series stays bounded whatever the paths asked.
pub fn record_request<B>(
    response: &ServiceResponse<B>,
    method: &'static str,
    known_route: Option<&'static str>,
    elapsed: Duration,
    span: &tracing::Span,
) {
    let request = response.request();
    // The router's pattern costs an allocation (and a walk of the routes when none matched):
    // a request its handler found no route for is marked, and the edge knows its prefix route.
    let pattern;
    let route = if request.extensions().contains::<Unmatched>() {
        UNMATCHED
    } else if let Some(route) = known_route {
        route
    } else {
        pattern = request.match_pattern();
        pattern.as_deref().unwrap_or(UNMATCHED)
    };
    let status = response.status();
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    if status.is_server_error() {
        tracing::warn!(parent: span, status = status.as_u16(), elapsed_ms, route, "request failed");
    } else {
        tracing::debug!(parent: span, status = status.as_u16(), elapsed_ms, route, "request");
    }
    ROUTES.with_borrow_mut(|routes| {
        let methods = match routes.get_mut(route) {
            Some(methods) => methods,
            None => routes.entry(route.into()).or_default(),
        };
        let index = match methods.iter().position(|m| m.method == method) {
            Some(index) => index,
            None => {
                methods.push(RouteMetrics::new(route, method));
                methods.len() - 1
            }
        };
        methods[index].record(status.as_u16(), elapsed.as_secs_f64());
    });
}

/// The route label of requests no route took.
const UNMATCHED: &str = "unmatched";

/// Marks a request its handler found no route for (in the request's extensions; a marker of
/// no size, so marking allocates nothing): [`record_request`] counts it as `unmatched`, before
/// any route the edge knows by the path's prefix (`Edge::with_prefix_route`) and without
/// asking the router. See `platform::http::no_route`.
#[derive(Debug, Clone, Copy)]
pub struct Unmatched;

/// The request metrics of one route and method. Registering a labelled metric hashes and looks
/// up its whole key, so each thread keeps the handles it has used and a request only adds to
/// atomics.
struct RouteMetrics {
    route: String,
    method: &'static str,
    duration: Histogram,
    /// One counter per status seen, few per route.
    by_status: Vec<(u16, Counter)>,
}

impl RouteMetrics {
    fn new(route: &str, method: &'static str) -> Self {
        Self {
            route: route.to_owned(),
            method,
            duration: metrics::histogram!(
                "reklama_http_request_duration_seconds",
                "method" => method,
                "route" => route.to_owned()
            ),
            by_status: Vec::new(),
        }
    }

    fn record(&mut self, status: u16, seconds: f64) {
        self.duration.record(seconds);
        let index = match self.by_status.iter().position(|(s, _)| *s == status) {
            Some(index) => index,
            None => {
                let counter = metrics::counter!(
                    "reklama_http_requests_total",
                    "method" => self.method,
                    "route" => self.route.clone(),
                    "status" => status.to_string()
                );
                self.by_status.push((status, counter));
                self.by_status.len() - 1
            }
        };
        self.by_status[index].1.increment(1);
    }
}

thread_local! {
    /// Per route pattern, then method: bounded by the routes and the method labels. The routes
    /// are this server's own patterns, not paths clients choose, so the map hashes with foldhash.
    static ROUTES: RefCell<foldhash::HashMap<Box<str>, Vec<RouteMetrics>>> =
        RefCell::new(foldhash::HashMap::default());
}

/// The standard methods by name; anything else as `other`, so odd methods cannot add series.
/// A request's method as a metric label (a bounded set).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// What one in-memory cache holds, for `/metrics`: its entries, and the bytes they are weighed
/// at when the cache is bounded in bytes (`None` for one bounded by a count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheUsage {
    pub entries: u64,
    pub bytes: Option<u64>,
}

impl CacheUsage {
    /// What a moka cache holds once its pending work is done; `weighed` for one bounded in bytes
    /// by a weigher (its weighted size is then in bytes).
    pub async fn of<K, V>(cache: &moka::future::Cache<K, V>, weighed: bool) -> Self
    where
        K: std::hash::Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        cache.run_pending_tasks().await;
        Self {
            entries: cache.entry_count(),
            bytes: weighed.then(|| cache.weighted_size()),
        }
    }
}

/// Sets `reklama_cache_entries{cache}` and, for caches bounded in bytes, `reklama_cache_bytes{cache}`.
pub fn record_cache_usage(cache: &'static str, usage: CacheUsage) {
    metrics::gauge!("reklama_cache_entries", "cache" => cache).set(usage.entries as f64);
    if let Some(bytes) = usage.bytes {
        metrics::gauge!("reklama_cache_bytes", "cache" => cache).set(bytes as f64);
    }
}

/// Hits and misses of one cache, per tier (`memory`, then `redis` when configured), as
/// `reklama_cache_lookups_total{cache, tier, result}`. The counters are registered once, so a
/// lookup only adds to an atomic.
#[derive(Clone)]
pub struct CacheMetrics {
    memory_hit: Counter,
    memory_miss: Counter,
    redis_hit: Counter,
    redis_miss: Counter,
}

impl CacheMetrics {
    pub fn new(cache: &'static str) -> Self {
        prometheus();
        let counter = |tier: &'static str, result: &'static str| {
            metrics::counter!(
                "reklama_cache_lookups_total",
                "cache" => cache,
                "tier" => tier,
                "result" => result
            )
        };
        Self {
            memory_hit: counter("memory", "hit"),
            memory_miss: counter("memory", "miss"),
            redis_hit: counter("redis", "hit"),
            redis_miss: counter("redis", "miss"),
        }
    }

    pub fn memory(&self, hit: bool) {
        if hit {
            self.memory_hit.increment(1);
        } else {
            self.memory_miss.increment(1);
        }
    }

    pub fn redis(&self, hit: bool) {
        if hit {
            self.redis_hit.increment(1);
        } else {
            self.redis_miss.increment(1);
        }
    }
}
