//! The operators' endpoints: `/healthz` (the process answers), `/readyz` (each backend's state)
//! and `/metrics` (Prometheus).

use std::time::Duration;

use actix_web::{HttpResponse, web};

use crate::platform::telemetry;

use super::Handles;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics_page));
}

/// `GET /metrics`: Prometheus text format. Counters kept by the components are copied in at
/// scrape time; the job queue's depth is read from the database.
async fn metrics_page(handles: web::Data<Handles>) -> HttpResponse {
    use std::sync::atomic::Ordering::Relaxed;
    telemetry::prometheus();
    let jobs = handles.jobs.stats();
    metrics::counter!("reklama_jobs_succeeded_total").absolute(jobs.succeeded.load(Relaxed));
    metrics::counter!("reklama_jobs_retried_total").absolute(jobs.retried.load(Relaxed));
    metrics::counter!("reklama_jobs_dead_lettered_total").absolute(jobs.dead.load(Relaxed));
    if let Ok(Ok(depth)) = tokio::time::timeout(Duration::from_secs(1), handles.jobs.depth()).await
    {
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
    let syncs = handles.audience.sync_stats();
    metrics::counter!("reklama_serving_syncs_total").absolute(syncs.rounds.load(Relaxed));
    metrics::counter!("reklama_serving_sync_failures_total").absolute(syncs.failures.load(Relaxed));
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

/// `GET /readyz`: each backend this instance uses, with its state. 200 while the instance
/// answers, "degraded" when a backend is down: redirects and serving go on from memory and the
/// journal, so taking every instance out of a load balancer because a shared backend failed would
/// turn a partial outage (intake, reports) into a whole one. The checks run side by side, each
/// within 2 s, so a hung backend shows as down within that.
async fn readyz(handles: web::Data<Handles>) -> HttpResponse {
    const LIMIT: Duration = Duration::from_secs(2);
    let state = |ok: bool| if ok { "up" } else { "down" };
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
    let (database, cloud) = (up(database), up(cloud));
    let all_up = database && cloud && redis.unwrap_or(true);
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({
            "status": if all_up { "ready" } else { "degraded" },
            "checks": {
                "database": state(database),
                "redis": redis.map_or("disabled", state),
                "cloud": state(cloud),
            }
        }))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({ "status": "ok" }))
}
