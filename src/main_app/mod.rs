//! The composition root: reads the configuration, builds the pools, caches and stores, wires the
//! modules through their traits, and runs the HTTP server and the background workers until a
//! signal (or a test) stops them.

pub mod cli;
pub mod openapi;
pub mod settings;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::{KeepAlive, header};
use actix_web::middleware::{Condition, DefaultHeaders, from_fn};
use actix_web::{App, HttpResponse, HttpServer, web};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::placement::Catalogue;
use crate::domain::{AdvertId, CustomerId};
use crate::modules::{intake, serving, tracking};
use crate::platform::auth::Customers;
use crate::platform::client_addr::TrustedProxies;
use crate::platform::cloud::{CloudStore, ObjectCloud};
use crate::platform::cpu::CpuPool;
use crate::platform::db::{Db, DbError};
use crate::platform::http::{self, HttpError};
use crate::platform::jobs::JobQueue;
use crate::platform::limits::{HeadLimit, MissBudget, RateLimit, RateLimits};
use crate::platform::redis::Redis;
use crate::platform::session::Sessions;
use crate::platform::urls::PublicUrls;
use crate::platform::{deadline, telemetry, tls};

pub use settings::Settings;

/// After the HTTP server has stopped, counters get this long to reach the database and job
/// workers this long to finish, so the process is gone within 10 s of SIGTERM.
const COUNTER_DRAIN_DEADLINE: Duration = Duration::from_secs(3);
const WORKER_DRAIN_DEADLINE: Duration = Duration::from_secs(1);

/// Replacements for real back-ends, so that tests can inject faults.
#[derive(Default)]
pub struct Overrides {
    pub cloud: Option<Arc<dyn CloudStore>>,
    /// An already bound socket to serve on instead of `server.listen`.
    pub listener: Option<TcpListener>,
}

/// Shared handles a running application exposes (to tests and operators' tooling).
#[derive(Clone)]
pub struct Handles {
    pub db: Db,
    pub jobs: Arc<JobQueue>,
    pub cloud: Arc<dyn CloudStore>,
    pub customers: Customers,
    pub tracking: Arc<tracking::TrackingService>,
    /// Serving's shared knowledge of users and adverts, and its sync with Redis.
    pub audience: Arc<serving::Audience>,
    pub redis: Option<Redis>,
}

pub struct Application {
    server: Server,
    port: u16,
    stopper: Stopper,
    workers: Vec<JoinHandle<()>>,
    handles: Handles,
}

/// Stops a running application gracefully: no new connections, in-flight requests finish, then
/// the workers finish their current job.
#[derive(Clone)]
pub struct Stopper {
    server: ServerHandle,
    cancel: CancellationToken,
}

impl Stopper {
    pub async fn stop(&self) {
        self.server.stop(true).await;
        self.cancel.cancel();
    }
}

/// Opens the database (creating and migrating it if needed) off the async workers.
pub async fn open_database(settings: &Settings) -> anyhow::Result<Db> {
    open_database_with(settings, Db::connect).await
}

/// [`open_database`] for a command that exits once done (see [`Db::connect_for_command`]).
pub async fn open_database_for_command(settings: &Settings) -> anyhow::Result<Db> {
    open_database_with(settings, Db::connect_for_command).await
}

async fn open_database_with(
    settings: &Settings,
    connect: fn(&crate::platform::db::DatabaseSettings) -> anyhow::Result<Db>,
) -> anyhow::Result<Db> {
    let mut db_settings = settings.database.clone();
    db_settings.sync_every_commit = settings.tracking.journal_fsync;
    tokio::task::spawn_blocking(move || {
        let db = connect(&db_settings)?;
        let applied = db.migrate()?;
        if !applied.is_empty() {
            tracing::info!(migrations = ?applied, "database migrated");
        }
        Ok(db)
    })
    .await?
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Overrides::default()).await
    }

    pub async fn build_with(settings: Settings, overrides: Overrides) -> anyhow::Result<Self> {
        tls::install_crypto_provider();
        // Before any component registers its metrics, so that none is lost to a no-op recorder.
        telemetry::prometheus();
        let db = open_database(&settings).await?;
        let cloud: Arc<dyn CloudStore> = match overrides.cloud {
            Some(cloud) => cloud,
            None => Arc::new(ObjectCloud::from_settings(&settings.cloud)?),
        };
        let customers = Customers::new(db.clone());
        let proxies = TrustedProxies::from_settings(
            &settings.limits.trusted_proxies,
            settings.tracking.trust_forwarded_for,
        )
        .map_err(|e| anyhow::anyhow!("limits.trusted_proxies: {e}"))?;
        let misses = MissBudget::new(settings.limits.miss_lookups_per_second);
        let redis = Redis::from_settings(&settings.redis)?;
        let public_urls = PublicUrls::new(&settings.server.public_url);
        let ledger = Arc::new(LedgerBridge::default());
        let audience = Arc::new(serving::Audience::new(
            db.clone(),
            redis.clone(),
            public_urls.clone(),
            &settings.serving,
            ledger.clone(),
        )?);
        let tracking_service = Arc::new(tracking::TrackingService::build(
            db.clone(),
            redis.clone(),
            &settings.tracking,
            &settings.serving.placements,
            proxies.clone(),
            misses.clone(),
            Arc::new(ClickBridge {
                audience: audience.clone(),
            }),
        )?);
        ledger.attach(tracking_service.clone());
        // Counts journaled by an earlier run reach the database before delivery caps read it.
        tracking_service.settle().await;
        let servable = audience.warm().await?;
        let serving_service = Arc::new(serving::ServingService::new(
            db.clone(),
            audience.clone(),
            Arc::new(ImpressionBridge {
                tracking: tracking_service.clone(),
            }),
            cloud.clone(),
            &settings.serving,
        ));

        let cpu = CpuPool::for_this_machine()?;
        let mut queue = JobQueue::new(db.clone(), settings.jobs.clone());
        queue.register(Arc::new(intake::OffloadJob::new(db.clone(), cloud.clone())));
        queue.register(Arc::new(intake::CloneSyncJob::new(
            db.clone(),
            cloud.clone(),
        )));
        let catalogue = Catalogue(Arc::new(settings.serving.placements.clone()));
        queue.register(Arc::new(intake::VariantsJob::new(
            db.clone(),
            cloud.clone(),
            catalogue.0.clone(),
            settings.intake.creative_spec(),
            cpu.clone(),
        )));
        let queue = Arc::new(queue);
        let catalogue_data = web::Data::new(catalogue);

        let media = web::Data::new(serving::MediaService::new(
            db.clone(),
            settings.serving.media_cache_bytes,
            misses.clone(),
        ));
        let intake_service = web::Data::new(intake::IntakeService::new(
            db.clone(),
            customers.clone(),
            &settings.intake,
            settings.jobs.max_attempts,
            queue.waker(),
            Arc::new(AdvertFanout {
                tracking: tracking_service.clone(),
                audience: audience.clone(),
                serving: serving_service.clone(),
                media: media.get_ref().clone(),
            }),
            cpu,
        ));
        if settings.dashboard.session_secret.is_empty() && redis.is_some() {
            tracing::warn!(
                "dashboard.session_secret is empty: each instance signs dashboard sessions with its \
                 own random key, so a browser stays signed in only on the instance it signed in on"
            );
        }
        let dashboard = web::Data::new(intake::Dashboard::new(
            Arc::new(StatisticsBridge {
                tracking: tracking_service.clone(),
            }),
            Sessions::new(
                db.clone(),
                customers.clone(),
                &settings.dashboard,
                &settings.server.public_url,
                settings.tls.enabled(),
            )?,
        ));
        let urls = web::Data::new(public_urls);
        let tracking_data = web::Data::from(tracking_service.clone());
        let serving_data = web::Data::from(serving_service.clone());
        let serving_routes = serving::configure(&settings.serving.cors_origins);
        let customers_data = web::Data::new(customers.clone());
        let body_limit = web::Data::new(intake::BodyLimit(settings.server.max_body_bytes));
        let handles = Handles {
            db: db.clone(),
            jobs: queue.clone(),
            cloud: cloud.clone(),
            customers: customers.clone(),
            tracking: tracking_service.clone(),
            audience: audience.clone(),
            redis: redis.clone(),
        };
        let handles_data = web::Data::new(handles.clone());
        // The first round before the first request, so readiness is never a guess.
        let (readiness_tx, readiness_rx) =
            tokio::sync::watch::channel(check_readiness(&handles).await);
        let readiness = web::Data::new(readiness_rx);
        let job_depth = web::Data::new(JobDepthCache::default());
        let max_body = settings.server.max_body_bytes;
        let request_deadline = web::Data::new(RequestDeadline(Duration::from_millis(
            settings.server.request_deadline_ms.max(1),
        )));

        let rate_limits =
            RateLimits::from_settings(&settings.limits, proxies.clone()).map(Arc::new);
        let rate_limit = RateLimit::new(rate_limits.clone());
        let head_limit = HeadLimit::from_settings(&settings.limits);
        let https = settings.tls.enabled();

        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(rate_limit.clone())
                .wrap(head_limit)
                .wrap(strict_transport_security(https))
                .wrap(from_fn(within_request_deadline))
                .wrap(from_fn(telemetry::observe))
                .app_data(request_deadline.clone())
                .app_data(intake_service.clone())
                .app_data(dashboard.clone())
                .app_data(media.clone())
                .app_data(tracking_data.clone())
                .app_data(catalogue_data.clone())
                .app_data(serving_data.clone())
                .app_data(urls.clone())
                .app_data(customers_data.clone())
                .app_data(body_limit.clone())
                .app_data(handles_data.clone())
                .app_data(readiness.clone())
                .app_data(job_depth.clone())
                .app_data(http::json_config(max_body))
                .app_data(http::path_config())
                .app_data(http::query_config())
                // The router tries routes in this order, matching each dynamic pattern with a
                // regex: the hot paths (the redirect, then serving) come first.
                .configure(tracking::configure_redirect)
                .configure(serving_routes.clone())
                .configure(tracking::configure)
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics_page))
                .configure(intake::configure)
                .configure(intake::configure_dashboard)
                .configure(openapi::configure)
                .default_service(web::to(no_route))
        })
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        .client_request_timeout(Duration::from_millis(
            settings.server.client_request_timeout_ms,
        ))
        .client_disconnect_timeout(Duration::from_millis(
            settings.server.client_disconnect_timeout_ms,
        ))
        .keep_alive(match settings.server.keep_alive_secs {
            0 => KeepAlive::Disabled,
            secs => KeepAlive::Timeout(Duration::from_secs(secs)),
        })
        .max_connections(settings.server.max_connections)
        .backlog(settings.server.backlog);
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }

        let listener = match overrides.listener {
            Some(listener) => listener,
            None => TcpListener::bind(&settings.server.listen).map_err(|e| {
                anyhow::anyhow!("server.listen: cannot bind {}: {e}", settings.server.listen)
            })?,
        };
        // A listener bound here (or handed in) was made with the standard library's backlog;
        // listening again sets ours.
        socket2::SockRef::from(&listener)
            .listen(i32::try_from(settings.server.backlog).unwrap_or(i32::MAX))
            .map_err(|e| anyhow::anyhow!("server.backlog: cannot listen with it: {e}"))?;
        let port = listener.local_addr()?.port();
        let server = if settings.tls.enabled() {
            server.listen_rustls_0_23(listener, tls::server_config(&settings.tls)?)?
        } else {
            server.listen(listener)?
        }
        .run();

        let cancel = CancellationToken::new();
        let mut workers = queue.spawn_workers(cancel.clone());
        workers.extend(tracking_service.spawn(cancel.clone()));
        if let Some(limits) = &rate_limits {
            workers.push(limits.spawn_cleanup(cancel.clone()));
        }
        workers.push(spawn_readiness(
            handles.clone(),
            readiness_tx,
            cancel.clone(),
        ));
        let forget_links = {
            let tracking = tracking_service.clone();
            Arc::new(move |codes: Vec<String>| {
                let tracking = tracking.clone();
                tokio::spawn(async move {
                    for code in codes {
                        tracking.forget_link(&code).await;
                    }
                });
            })
        };
        workers.extend(serving_service.spawn(cancel.clone(), forget_links));
        let stopper = Stopper {
            server: server.handle(),
            cancel,
        };
        tracing::info!(
            listen = %settings.server.listen,
            port,
            tls = settings.tls.enabled(),
            database = ?db.backend(),
            redis = redis.is_some(),
            servable,
            cloud = %cloud.describe(),
            "reklama started"
        );
        Ok(Self {
            server,
            port,
            stopper,
            workers,
            handles,
        })
    }

    /// The port actually bound (useful with `listen = "127.0.0.1:0"`).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    pub fn handles(&self) -> Handles {
        self.handles.clone()
    }

    /// Serves until SIGTERM/SIGINT or `Stopper::stop`, then drains and returns.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let stopper = self.stopper.clone();
        let signals = tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received; shutting down");
            stopper.stop().await;
        });
        let served = self.server.await;
        signals.abort();
        self.stopper.cancel.cancel();
        // Every request has been answered: delivery leases go back to the other instances, and
        // what the requests counted goes to Redis or the database, side by side.
        let serving_synced = async {
            if tokio::time::timeout(COUNTER_DRAIN_DEADLINE, self.handles.audience.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("the final serving sync timed out; leases return when they expire");
            }
        };
        tokio::join!(
            serving_synced,
            self.handles.tracking.shutdown(COUNTER_DRAIN_DEADLINE)
        );
        let drained = tokio::time::timeout(WORKER_DRAIN_DEADLINE, async {
            for worker in self.workers {
                let _ = worker.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("job workers did not finish in time; their jobs will be retried");
        }
        tracing::info!("reklama stopped");
        served.map_err(Into::into)
    }
}

/// Passes advert changes made on this instance to the caches of the other modules at once
/// (other instances notice them through serving's change polling).
struct AdvertFanout {
    tracking: Arc<tracking::TrackingService>,
    audience: Arc<serving::Audience>,
    serving: Arc<serving::ServingService>,
    media: serving::MediaService,
}

#[async_trait::async_trait]
impl intake::AdvertObserver for AdvertFanout {
    async fn advert_changed(&self, advert: AdvertId, link_code: &str) {
        self.tracking.forget_link(link_code).await;
        self.serving.full_records().forget(advert).await;
        // A replaced image's old URLs answer 404 here at once, not only once memory evicts it.
        self.media
            .forget(advert, self.serving.catalogue().placements())
            .await;
        if let Err(e) = self.audience.refresh(advert).await {
            tracing::warn!(%advert, error = %e, "serving will see this change at its next poll");
        }
    }
}

/// Lets tracking attribute clicks with serving's impression tokens.
struct ClickBridge {
    audience: Arc<serving::Audience>,
}

impl tracking::ClickHooks for ClickBridge {
    fn attribute(&self, token: &str, advert: AdvertId) -> Option<tracking::Attribution> {
        self.audience
            .visitor(token, advert)
            .map(|claims| tracking::Attribution {
                visitor: claims.user.0,
                placement: claims.placement,
            })
    }

    fn clicked(&self, advert: AdvertId, visitor: Option<u64>) {
        self.audience.clicked(advert, visitor.map(serving::UserKey));
    }
}

/// Gives intake's dashboard tracking's counts (its summary and reports).
struct StatisticsBridge {
    tracking: Arc<tracking::TrackingService>,
}

fn statistics_error(e: tracking::TrackingError) -> intake::StatisticsError {
    match e {
        tracking::TrackingError::NotFound => intake::StatisticsError::NotFound,
        tracking::TrackingError::Unavailable(reason) => {
            intake::StatisticsError::Unavailable(reason)
        }
        tracking::TrackingError::Db(e) => intake::StatisticsError::Internal(e.to_string()),
    }
}

fn advert_counts(counts: &[u64; 4]) -> intake::AdvertCounts {
    intake::AdvertCounts {
        clicks: counts[tracking::Metric::Click as usize],
        bot_clicks: counts[tracking::Metric::BotClick as usize],
        duplicate_clicks: counts[tracking::Metric::DuplicateClick as usize],
        impressions: counts[tracking::Metric::Impression as usize],
    }
}

#[async_trait::async_trait]
impl intake::AdvertStatistics for StatisticsBridge {
    async fn totals(
        &self,
        customer: CustomerId,
    ) -> Result<Vec<(AdvertId, intake::AdvertCounts)>, intake::StatisticsError> {
        let rows = self
            .tracking
            .summary(customer)
            .await
            .map_err(statistics_error)?;
        Ok(rows
            .iter()
            .map(|row| (row.advert_id, advert_counts(&row.counts)))
            .collect())
    }

    async fn series(
        &self,
        customer: CustomerId,
        advert: AdvertId,
        granularity: crate::domain::Granularity,
        from: i64,
        to: i64,
    ) -> Result<Vec<intake::SeriesPoint>, intake::StatisticsError> {
        let report = self
            .tracking
            .report(
                customer,
                advert,
                granularity,
                tracking::Breakdown::None,
                from,
                to,
            )
            .await
            .map_err(statistics_error)?;
        report
            .series
            .iter()
            .map(|point| {
                let start = time::OffsetDateTime::parse(
                    &point.bucket,
                    &time::format_description::well_known::Rfc3339,
                )
                .map_err(|e| {
                    intake::StatisticsError::Internal(format!("bucket {}: {e}", point.bucket))
                })?
                .unix_timestamp();
                Ok(intake::SeriesPoint {
                    start,
                    counts: intake::AdvertCounts {
                        clicks: point.clicks,
                        bot_clicks: point.bot_clicks,
                        duplicate_clicks: point.duplicate_clicks,
                        impressions: point.impressions,
                    },
                })
            })
            .collect()
    }

    async fn placements(
        &self,
        customer: CustomerId,
        advert: AdvertId,
    ) -> Result<Vec<(Option<String>, intake::AdvertCounts)>, intake::StatisticsError> {
        placement_counts(&self.tracking, customer, advert).await
    }
}

/// The dashboard's per-placement counts, from tracking's report split by placement.
async fn placement_counts(
    tracking: &tracking::TrackingService,
    customer: CustomerId,
    advert: AdvertId,
) -> Result<Vec<(Option<String>, intake::AdvertCounts)>, intake::StatisticsError> {
    let report = tracking
        .report(
            customer,
            advert,
            crate::domain::Granularity::Day,
            tracking::Breakdown::Placement,
            0,
            i64::from(i32::MAX) * 4,
        )
        .await
        .map_err(statistics_error)?;
    Ok(report
        .placements
        .unwrap_or_default()
        .into_iter()
        .map(|share| {
            (
                share.placement,
                intake::AdvertCounts {
                    clicks: share.clicks,
                    bot_clicks: share.bot_clicks,
                    duplicate_clicks: share.duplicate_clicks,
                    impressions: share.impressions,
                },
            )
        })
        .collect())
}

/// Lets serving settle tracking's ledger before it reads delivered totals for its caps. Tracking
/// is built after serving's audience (its click hooks need the audience), so the bridge is
/// attached once both exist, before the catalogue is warmed.
#[derive(Default)]
struct LedgerBridge {
    tracking: std::sync::OnceLock<Arc<tracking::TrackingService>>,
}

impl LedgerBridge {
    fn attach(&self, tracking: Arc<tracking::TrackingService>) {
        let _ = self.tracking.set(tracking);
    }
}

#[async_trait::async_trait]
impl serving::Ledger for LedgerBridge {
    async fn settle(&self) -> Result<(), DbError> {
        let tracking = self.tracking.get().ok_or_else(|| {
            DbError::Unavailable("the counter pipeline is not running yet".into())
        })?;
        tracking
            .flush()
            .await
            .map_err(|e| DbError::Unavailable(format!("settling counts: {e}")))
    }
}

/// Lets serving count impressions in tracking's counters.
struct ImpressionBridge {
    tracking: Arc<tracking::TrackingService>,
}

impl serving::ImpressionSink for ImpressionBridge {
    fn impression(&self, advert: AdvertId, placement: Option<usize>) {
        self.tracking
            .record(advert, tracking::Metric::Impression, placement);
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `GET /metrics`: Prometheus text format. Counters kept by the components are copied in at
/// scrape time; the job queue's depth is read from the database at most once a second.
async fn metrics_page(
    handles: web::Data<Handles>,
    job_depth: web::Data<JobDepthCache>,
) -> HttpResponse {
    use std::sync::atomic::Ordering::Relaxed;
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

/// `server.request_deadline_ms`, as the request middleware reads it.
struct RequestDeadline(Duration);

/// Gives a request its deadline (see [`deadline`]), counted from its arrival. A request with a
/// body is left to each call's own timeout: its clock would otherwise run while a slow client
/// uploads, which is no backend's fault.
async fn within_request_deadline(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let budget = req.app_data::<web::Data<RequestDeadline>>().map(|d| d.0);
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    match budget {
        Some(budget) if !has_body => {
            deadline::scope(tokio::time::Instant::now() + budget, next.call(req)).await
        }
        _ => next.call(req).await,
    }
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
/// a partial outage (intake, reports) into a whole one.
async fn readyz(state: web::Data<tokio::sync::watch::Receiver<Readiness>>) -> HttpResponse {
    let now = *state.borrow();
    let label = |ok: bool| if ok { "up" } else { "down" };
    let all_up = now.database && now.cloud && now.redis.unwrap_or(true);
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({
            "status": if all_up { "ready" } else { "degraded" },
            "checks": {
                "database": label(now.database),
                "redis": now.redis.map_or("disabled", label),
                "cloud": label(now.cloud),
            }
        }))
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

/// `Strict-Transport-Security` on every answer when this server speaks HTTPS (a browser that
/// saw it never tries plain HTTP on this host for a year); nothing over plain HTTP, where the
/// header would be ignored anyway.
fn strict_transport_security(https: bool) -> Condition<DefaultHeaders> {
    Condition::new(
        https,
        DefaultHeaders::new().add((header::STRICT_TRANSPORT_SECURITY, "max-age=31536000")),
    )
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({ "status": "ok" }))
}

async fn no_route() -> Result<HttpResponse, HttpError> {
    Err(HttpError::not_found("no such route"))
}
