//! The operators' endpoints: `/healthz` (the process answers), `/readyz` (each backend's state,
//! checked once a second in the background) and `/metrics` (Prometheus, behind `admin.token`),
//! on the public listener or on `server.admin_listen`.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use subtle::ConstantTimeEq;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::platform::jobs::JobQueue;
use crate::platform::telemetry;

use super::Handles;

/// What the operators' endpoints read: the readiness last checked, the job depth last read.
#[derive(Clone)]
pub(super) struct OpsState {
    readiness: web::Data<tokio::sync::watch::Receiver<Readiness>>,
    job_depth: web::Data<JobDepthCache>,
    token: web::Data<AdminToken>,
}

/// Which listener routes are registered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listener {
    /// `server.listen`, with the operations endpoints on it (no admin listener).
    PublicWithOps,
    /// `server.listen` while `server.admin_listen` serves the operations endpoints.
    PublicOnly,
    /// `server.admin_listen`.
    Admin,
}

impl Listener {
    /// Whether `/metrics`, `/readyz`, `/docs`, `/openapi.json` and `/asyncapi.json` are served
    /// here.
    pub(super) fn serves_ops(self) -> bool {
        self != Self::PublicOnly
    }
}

/// `admin.token` as `/metrics` compares it: the whole `Authorization` value it expects.
struct AdminToken(Option<Vec<u8>>);

impl AdminToken {
    fn new(token: &str) -> Self {
        Self((!token.is_empty()).then(|| format!("Bearer {token}").into_bytes()))
    }

    /// Whether `req` may read `/metrics`: no token configured, or its `Authorization` header is
    /// `Bearer <token>` (compared in constant time).
    fn admits(&self, req: &HttpRequest) -> bool {
        let Some(expected) = &self.0 else {
            return true;
        };
        req.headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|got| bool::from(got.as_bytes().ct_eq(expected)))
    }
}

impl OpsState {
    /// Checks the backends once before the first request (so readiness is never a guess), then
    /// once a second until `cancel`.
    pub(super) async fn start(
        handles: &Handles,
        admin_token: &str,
        cancel: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = tokio::sync::watch::channel(check_readiness(handles).await);
        let worker = spawn_readiness(handles.clone(), tx, cancel);
        let state = Self {
            readiness: web::Data::new(rx),
            job_depth: web::Data::new(JobDepthCache::default()),
            token: web::Data::new(AdminToken::new(admin_token)),
        };
        (state, worker)
    }

    /// `/healthz` on every listener; `/readyz` and `/metrics` where the operations endpoints
    /// are served.
    pub(super) fn configure(&self, cfg: &mut web::ServiceConfig, listener: Listener) {
        cfg.route("/healthz", web::get().to(healthz));
        if listener.serves_ops() {
            cfg.app_data(self.readiness.clone())
                .app_data(self.job_depth.clone())
                .app_data(self.token.clone())
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics_page));
        }
    }
}

/// `GET /metrics`: Prometheus text format. Counters kept by the components are copied in at
/// scrape time; the job queue's depth is read from the database at most once a second.
async fn metrics_page(
    req: HttpRequest,
    token: web::Data<AdminToken>,
    handles: web::Data<Handles>,
    job_depth: web::Data<JobDepthCache>,
) -> HttpResponse {
    use actix_web::ResponseError;
    use std::sync::atomic::Ordering::Relaxed;
    if !token.admits(&req) {
        let mut refused = crate::platform::http::HttpError::unauthorized(
            "/metrics needs Authorization: Bearer <admin.token>",
        )
        .error_response();
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"reklama-metrics\""),
        );
        return refused;
    }
    telemetry::prometheus();
    let jobs = handles.jobs.stats();
    metrics::counter!("reklama_jobs_succeeded_total").absolute(jobs.succeeded.load(Relaxed));
    metrics::counter!("reklama_jobs_retried_total").absolute(jobs.retried.load(Relaxed));
    metrics::counter!("reklama_jobs_dead_lettered_total").absolute(jobs.dead.load(Relaxed));
    if let Some(depth) = job_depth.get(&handles.jobs).await {
        metrics::gauge!("reklama_jobs", "status" => "queued").set(depth.queued as f64);
        metrics::gauge!("reklama_jobs", "status" => "running").set(depth.running as f64);
        metrics::gauge!("reklama_jobs", "status" => "dead").set(depth.dead as f64);
    }
    let counters = handles.tracking.stats();
    metrics::counter!("reklama_counter_flushes_total").absolute(counters.flushes.load(Relaxed));
    metrics::counter!("reklama_counter_flush_failures_total")
        .absolute(counters.flush_failures.load(Relaxed));
    metrics::counter!("reklama_counter_rows_flushed_total")
        .absolute(counters.rows_flushed.load(Relaxed));
    metrics::counter!("reklama_counter_redis_pushes_total")
        .absolute(counters.redis_pushes.load(Relaxed));
    metrics::counter!("reklama_counter_journal_appends_total")
        .absolute(counters.journal_appends.load(Relaxed));
    metrics::gauge!("reklama_counter_journal_bytes").set(handles.tracking.journal_bytes() as f64);
    metrics::gauge!("reklama_counter_pending_clicks").set(handles.tracking.pending_clicks() as f64);
    metrics::gauge!("reklama_counter_redis_drains").set(counters.redis_drains.load(Relaxed) as f64);
    let (generations, bytes) = handles.tracking.kept();
    metrics::gauge!("reklama_counter_kept_generations").set(generations as f64);
    metrics::gauge!("reklama_counter_kept_bytes").set(bytes as f64);
    let suspicious = handles.tracking.suspicious_clicks();
    for (reason, n) in [
        ("expired_token", &suspicious.expired_token),
        ("address_threshold", &suspicious.address_threshold),
        ("user_threshold", &suspicious.user_threshold),
    ] {
        metrics::counter!("reklama_suspicious_clicks_total", "reason" => reason)
            .absolute(n.load(Relaxed));
    }
    metrics::counter!("reklama_suspicious_serves_total")
        .absolute(handles.serving.suspicious_serves());
    let syncs = handles.serving.sync_stats();
    metrics::counter!("reklama_serving_syncs_total").absolute(syncs.rounds.load(Relaxed));
    metrics::counter!("reklama_serving_sync_failures_total").absolute(syncs.failures.load(Relaxed));
    for (cache, usage) in handles.serving.cache_usage().await {
        telemetry::record_cache_usage(cache, usage);
    }
    telemetry::record_cache_usage("media", handles.media.usage().await);
    for (cache, usage) in handles.tracking.cache_usage() {
        telemetry::record_cache_usage(cache, usage);
    }
    for (kind, (users, bytes)) in handles.serving.user_state() {
        metrics::gauge!("reklama_user_state_users", "kind" => kind).set(users as f64);
        metrics::gauge!("reklama_user_state_bytes", "kind" => kind).set(bytes as f64);
    }
    for (kind, results) in handles.serving.user_state_reads() {
        for (result, n) in results {
            metrics::counter!("reklama_user_state_reads_total", "kind" => kind, "result" => result)
                .absolute(n);
        }
    }
    metrics::counter!("reklama_db_checkouts_total").absolute(handles.db.checkouts());
    let (in_flight, cap) = handles.db.in_flight();
    metrics::gauge!("reklama_db_calls_in_flight").set(in_flight as f64);
    metrics::gauge!("reklama_db_calls_in_flight_max").set(cap as f64);
    let (open, idle, max) = handles.db.pool_usage();
    metrics::gauge!("reklama_pool_connections", "pool" => "database", "state" => "open")
        .set(f64::from(open));
    metrics::gauge!("reklama_pool_connections", "pool" => "database", "state" => "idle")
        .set(f64::from(idle));
    metrics::gauge!("reklama_pool_connections", "pool" => "database", "state" => "max")
        .set(f64::from(max));
    if let Some(redis) = &handles.redis {
        let (open, idle, max) = redis.pool_usage();
        metrics::gauge!("reklama_pool_connections", "pool" => "redis", "state" => "open")
            .set(open as f64);
        metrics::gauge!("reklama_pool_connections", "pool" => "redis", "state" => "idle")
            .set(idle as f64);
        metrics::gauge!("reklama_pool_connections", "pool" => "redis", "state" => "max")
            .set(max as f64);
    }
    let handle = telemetry::prometheus();
    handle.run_upkeep();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(handle.render())
}

/// How often readiness is checked, and how long a metrics scrape's job counts are reused.
const STATE_REFRESH: Duration = Duration::from_secs(1);

/// The backends' states as last checked: `/readyz` answers from it, so a flood of readiness
/// requests costs memory reads, and the backends see one round of checks a second at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Readiness {
    database: bool,
    /// `None`: no Redis configured.
    redis: Option<bool>,
    cloud: bool,
}

/// One round of checks, side by side, each within 2 s: a hung backend shows as down.
async fn check_readiness(handles: &Handles) -> Readiness {
    const LIMIT: Duration = Duration::from_secs(2);
    let up = |result: Result<Result<(), String>, tokio::time::error::Elapsed>| {
        matches!(result, Ok(Ok(())))
    };
    let redis_check = async {
        match &handles.redis {
            None => None,
            Some(redis) => Some(up(tokio::time::timeout(LIMIT, async {
                redis.ping().await.map_err(|e| e.to_string())
            })
            .await)),
        }
    };
    let (database, redis, cloud) = tokio::join!(
        tokio::time::timeout(LIMIT, async {
            handles.db.ping().await.map_err(|e| e.to_string())
        }),
        redis_check,
        tokio::time::timeout(LIMIT, async {
            handles.cloud.check().await.map_err(|e| e.to_string())
        }),
    );
    Readiness {
        database: up(database),
        redis,
        cloud: up(cloud),
    }
}

/// Checks the backends once a second until `cancel`, publishing each round.
fn spawn_readiness(
    handles: Handles,
    state: tokio::sync::watch::Sender<Readiness>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STATE_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A round in progress is dropped at shutdown, not waited for.
            let round = async {
                tick.tick().await;
                check_readiness(&handles).await
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                round = round => {
                    state.send_replace(round);
                }
            }
        }
    })
}

/// `GET /readyz`: each backend this instance uses, with its state as checked within the last
/// second or so (never a backend call per request). 200 while the instance answers,
/// "degraded" when a backend is down: redirects and serving go on from memory and the journal,
/// so taking every instance out of a load balancer because a shared backend failed would turn
/// a partial outage (intake, reports) into a whole one. With `admin.token` set, the backends'
/// states are left out unless the request carries the token: a probe needs the status only.
async fn readyz(
    req: HttpRequest,
    token: web::Data<AdminToken>,
    state: web::Data<tokio::sync::watch::Receiver<Readiness>>,
) -> HttpResponse {
    let now = *state.borrow();
    let label = |ok: bool| if ok { "up" } else { "down" };
    let all_up = now.database && now.cloud && now.redis.unwrap_or(true);
    let status = if all_up { "ready" } else { "degraded" };
    let body = if token.admits(&req) {
        serde_json::json!({
            "status": status,
            "checks": {
                "database": label(now.database),
                "redis": now.redis.map_or("disabled", label),
                "cloud": label(now.cloud),
            }
        })
    } else {
        serde_json::json!({ "status": status })
    };
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(body)
}

/// The job queue's depth as last read, for `/metrics`: read from the database at most once a
/// second, however often it is scraped (concurrent scrapes share one read).
#[derive(Default)]
struct JobDepthCache {
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, crate::platform::jobs::QueueDepth)>>,
}

impl JobDepthCache {
    async fn get(&self, jobs: &JobQueue) -> Option<crate::platform::jobs::QueueDepth> {
        let mut last = self.last.lock().await;
        if let Some((at, depth)) = &*last
            && at.elapsed() < STATE_REFRESH
        {
            return Some(*depth);
        }
        let depth = tokio::time::timeout(Duration::from_secs(1), jobs.depth())
            .await
            .ok()?
            .ok()?;
        *last = Some((tokio::time::Instant::now(), depth));
        Some(depth)
    }
}

/// Liveness: the answer is a constant, so a probe costs the process nothing but the request.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        ))
        .insert_header((
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        ))
        .body(r#"{"status":"ok"}"#)
}
