//! Building an [`Application`]: the backends, the modules' services wired through the bridges,
//! the job queue, the portal, and the HTTP server with its middleware.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::KeepAlive;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use tokio_util::sync::CancellationToken;

use crate::domain::placement::PlacementCatalogue;
use crate::modules::{intake, integrations, serving, tracking};
use crate::platform::auth::Customers;
use crate::platform::client_addr::TrustedProxies;
use crate::platform::cloud::{CloudStore, ObjectCloud};
use crate::platform::cpu::CpuPool;
use crate::platform::db::Db;
use crate::platform::edge::Edge;
use crate::platform::events::{Outbox, Relay};
use crate::platform::http::{self, HttpError};
use crate::platform::jobs::JobQueue;
use crate::platform::limits::{HeadLimit, MissBudget, RateLimit, RateLimits};
use crate::platform::mail::{self, MailQueue, Mailer};
use crate::platform::redis::{Redis, SharedReads};
use crate::platform::session::Sessions;
use crate::platform::urls::PublicUrls;
use crate::platform::{telemetry, tls};
use crate::portal::{self, Portal};

use super::asyncapi::{self, AsyncApiDocument};
use super::bridges::{
    AdvertFanout, ClickBridge, ImpressionBridge, LedgerBridge, ReportBridge, TalliesBridge,
};
use super::ops::{Listener, OpsState};
use super::{Application, Handles, Overrides, Settings, Stopper, open_database, openapi};

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
        let redis = Redis::from_settings(&settings.redis)?;
        let urls = PublicUrls::new(&settings.server.public_url);
        let proxies = TrustedProxies::from_settings(
            &settings.limits.trusted_proxies,
            settings.tracking.trust_forwarded_for,
        )
        .map_err(|e| anyhow::anyhow!("limits.trusted_proxies: {e}"))?;
        let misses = MissBudget::new(settings.limits.miss_lookups_per_second);
        let placements = PlacementCatalogue(Arc::new(settings.serving.placements.clone()));

        // Which events are recorded: shared with the webhooks, which keep its subscriptions
        // current.
        let outbox = Outbox::new(&settings.events);
        let ledger = Arc::new(LedgerBridge::default());
        // Whole-key reads of new users' state and of cards missing from memory go to Redis
        // together, in shared pipelines.
        let reads = redis.clone().map(SharedReads::new);
        let users = Arc::new(serving::Users::new(
            reads.clone(),
            &settings.serving,
            &placements,
            proxies.clone(),
        )?);
        let inventory = Arc::new(serving::Inventory::new(
            db.clone(),
            reads,
            urls.clone(),
            &settings.serving,
            placements.clone(),
            ledger.clone(),
        ));
        let tracking = Arc::new(
            tracking::TrackingService::build(
                db.clone(),
                redis.clone(),
                &settings.tracking,
                placements.placements(),
                tracking::Edge {
                    proxies: proxies.clone(),
                    misses: misses.clone(),
                },
                Arc::new(ClickBridge {
                    users: users.clone(),
                    inventory: inventory.clone(),
                    country_header: actix_web::http::header::HeaderName::try_from(
                        settings.serving.country_header.as_str(),
                    )
                    .ok(),
                }),
                &outbox,
            )
            .await?,
        );
        ledger.attach(tracking.clone());
        // Counts journaled by an earlier run reach the database before delivery caps read it.
        tracking.settle().await;
        let servable = inventory.warm().await?;
        let serving = Arc::new(serving::ServingService::new(
            db.clone(),
            users,
            inventory,
            Arc::new(ImpressionBridge {
                tracking: tracking.clone(),
            }),
            cloud.clone(),
            &settings.serving,
            placements.clone(),
        ));

        let cpu = CpuPool::for_this_machine()?;
        let mut jobs = job_queue(&settings, &db, &cloud, &placements, &tracking, &cpu)?;
        jobs.register(Arc::new(integrations::DeliverJob::new(
            db.clone(),
            &settings.webhooks,
        )));
        let mail = MailQueue::new(&settings.mail, settings.jobs.max_attempts);
        let reports = Arc::new(integrations::ReportJob::new(
            db.clone(),
            Arc::new(ReportBridge {
                tracking: tracking.clone(),
            }),
            mail,
            urls.clone(),
            settings.jobs.max_attempts,
        ));
        jobs.register(reports.clone());
        if let Err(e) = reports.schedule().await {
            tracing::warn!(error = %e, "the report e-mails' job not scheduled; the next start does");
        }
        let webhooks = integrations::WebhooksService::new(
            db.clone(),
            &settings.webhooks,
            outbox.webhook_interest(),
        );
        // The outbox records what the webhooks subscribe to from the first event on.
        if let Err(e) = webhooks.refresh_interest().await {
            tracing::warn!(error = %e, "webhook subscriptions not read yet; tried again shortly");
        }
        let media =
            serving::MediaService::new(db.clone(), settings.serving.media_cache_bytes, misses);
        let handles = Handles {
            mail,
            reports,
            customers: Customers::new(db.clone()),
            db,
            jobs: Arc::new(jobs),
            cloud,
            tracking,
            serving: serving.clone(),
            media: media.clone(),
            redis,
        };
        let intake = web::Data::new(intake::IntakeService::new(
            handles.db.clone(),
            handles.customers.clone(),
            &settings.intake,
            handles.jobs.enqueuer(),
            Arc::new(AdvertFanout {
                tracking: handles.tracking.clone(),
                serving: handles.serving.clone(),
                media: media.clone(),
            }),
            cpu,
            urls.clone(),
        ));
        let portal = Portal::new(
            intake.clone(),
            handles.tracking.clone(),
            sessions(&settings, &handles)?,
            urls.clone(),
            placements.clone(),
            settings.server.max_body_bytes,
        );
        let alerts = integrations::Alerts::new(mail, urls.clone());
        let state = State {
            webhooks: web::Data::new(webhooks.clone()),
            intake,
            portal: web::Data::new(portal),
            media: web::Data::new(media),
            tracking: web::Data::from(handles.tracking.clone()),
            serving: web::Data::from(serving.clone()),
            placements: web::Data::new(placements),
            urls: web::Data::new(urls),
            customers: web::Data::new(handles.customers.clone()),
            body_limit: web::Data::new(intake::BodyLimit(settings.server.max_body_bytes)),
            handles: web::Data::new(handles.clone()),
        };
        let rate_limits = RateLimits::from_settings(&settings.limits, proxies).map(Arc::new);
        let cancel = CancellationToken::new();
        let (ops, readiness) =
            OpsState::start(&handles, &settings.admin.token, cancel.clone()).await;
        let admin = admin_server(&settings, &state, &ops)?;
        let (server, port) = http_server(
            &settings,
            state,
            ops,
            rate_limits.clone(),
            overrides.listener,
        )?;

        let mut workers = vec![readiness];
        workers.extend(handles.jobs.spawn_workers(cancel.clone()));
        workers.push(Relay::new(handles.db.clone(), settings.events.clone()).spawn(cancel.clone()));
        workers.extend(handles.tracking.spawn(cancel.clone()));
        workers.push(
            integrations::Dispatcher::new(
                handles.db.clone(),
                webhooks,
                alerts,
                handles.jobs.enqueuer(),
                settings.webhooks.max_attempts,
                Duration::from_millis(settings.events.poll_interval_ms),
                Duration::from_secs(settings.events.retention_hours.saturating_mul(3600)),
            )
            .spawn(cancel.clone()),
        );
        if let Some(limits) = &rate_limits {
            workers.push(limits.spawn_cleanup(cancel.clone()));
        }
        let forget_links = {
            let tracking = handles.tracking.clone();
            Arc::new(move |codes: Vec<String>| {
                let tracking = tracking.clone();
                tokio::spawn(async move {
                    for code in codes {
                        tracking.forget_link(&code).await;
                    }
                });
            })
        };
        workers.extend(serving.spawn(cancel.clone(), forget_links));
        let stopper = Stopper {
            server: server.handle(),
            admin: admin.as_ref().map(|(admin, _)| admin.handle()),
            cancel,
        };
        if admin.is_none() && settings.admin.token.is_empty() && !listens_on_loopback(&settings) {
            tracing::warn!(
                listen = %settings.server.listen,
                "/metrics answers anyone who reaches server.listen: set admin.token, or \
                 server.admin_listen on a private address"
            );
        }
        tracing::info!(
            listen = %settings.server.listen,
            port,
            admin_port = admin.as_ref().map(|(_, port)| *port),
            tls = settings.tls.enabled(),
            database = ?handles.db.backend(),
            redis = handles.redis.is_some(),
            servable,
            cloud = %handles.cloud.describe(),
            "reklama started"
        );
        Ok(Self {
            server,
            port,
            admin,
            stopper,
            workers,
            handles,
        })
    }
}

/// The durable job queue with every job kind registered: the cloud clone, its sync, the
/// placements' rendering, and e-mail.
fn job_queue(
    settings: &Settings,
    db: &Db,
    cloud: &Arc<dyn CloudStore>,
    placements: &PlacementCatalogue,
    tracking: &Arc<tracking::TrackingService>,
    cpu: &CpuPool,
) -> anyhow::Result<JobQueue> {
    let mut queue = JobQueue::new(db.clone(), settings.jobs.clone());
    queue.register(Arc::new(intake::OffloadJob::new(db.clone(), cloud.clone())));
    queue.register(Arc::new(intake::CloneSyncJob::new(
        db.clone(),
        cloud.clone(),
    )));
    queue.register(Arc::new(intake::VariantsJob::new(
        db.clone(),
        cloud.clone(),
        intake::VariantsSetup {
            catalogue: placements.0.clone(),
            spec: settings.intake.creative_spec(),
            tallies: Arc::new(TalliesBridge {
                tracking: tracking.clone(),
            }),
            max_attempts: settings.jobs.max_attempts,
        },
        cpu.clone(),
    )));
    queue.register(Arc::new(mail::SendJob::new(mailer(settings)?)));
    Ok(queue)
}

/// The mailer of `mail.*`, greeting the SMTP server with the host of `server.public_url`.
pub(super) fn mailer(settings: &Settings) -> anyhow::Result<Mailer> {
    let hello = url::Url::parse(&settings.server.public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned));
    Mailer::from_settings(&settings.mail, hello.as_deref())
}

/// The portal's sessions.
fn sessions(settings: &Settings, handles: &Handles) -> anyhow::Result<Sessions> {
    if settings.dashboard.session_secret.is_empty() && handles.redis.is_some() {
        tracing::warn!(
            "dashboard.session_secret is empty: each instance signs dashboard sessions with its \
             own random key, so a browser stays signed in only on the instance it signed in on"
        );
    }
    Sessions::new(
        handles.db.clone(),
        handles.customers.clone(),
        &settings.dashboard,
        &settings.server.public_url,
        settings.tls.enabled(),
    )
}

/// What every worker's `App` is given: the services and settings its handlers extract.
#[derive(Clone)]
struct State {
    webhooks: web::Data<integrations::WebhooksService>,
    intake: web::Data<intake::IntakeService>,
    portal: web::Data<Portal>,
    media: web::Data<serving::MediaService>,
    tracking: web::Data<tracking::TrackingService>,
    serving: web::Data<serving::ServingService>,
    placements: web::Data<PlacementCatalogue>,
    urls: web::Data<PublicUrls>,
    customers: web::Data<Customers>,
    body_limit: web::Data<intake::BodyLimit>,
    handles: web::Data<Handles>,
}

impl State {
    fn register(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(self.webhooks.clone())
            .app_data(self.intake.clone())
            .app_data(self.portal.clone())
            .app_data(self.media.clone())
            .app_data(self.tracking.clone())
            .app_data(self.placements.clone())
            .app_data(self.serving.clone())
            .app_data(self.urls.clone())
            .app_data(self.customers.clone())
            .app_data(self.body_limit.clone())
            .app_data(self.handles.clone());
    }
}

/// The HTTP server, listening (on `server.listen`, or the socket handed in), not yet awaited.
fn http_server(
    settings: &Settings,
    state: State,
    ops: OpsState,
    rate_limits: Option<Arc<RateLimits>>,
    listener: Option<TcpListener>,
) -> anyhow::Result<(Server, u16)> {
    let rate_limit = RateLimit::new(rate_limits);
    let edge = Edge::new(
        settings.tls.enabled(),
        Duration::from_millis(settings.server.request_deadline_ms.max(1)),
    )
    .with_prefix_route(tracking::REDIRECT_PREFIX, tracking::REDIRECT_ROUTE);
    let head_limit = HeadLimit::from_settings(&settings.limits);
    let https = settings.tls.enabled();
    let max_body = settings.server.max_body_bytes;
    let serving_routes = serving::configure(&settings.serving.cors_origins);
    let events_doc = AsyncApiDocument::new(&settings.events.exchange);
    let public = if settings.server.admin_listen.is_empty() {
        Listener::PublicWithOps
    } else {
        Listener::PublicOnly
    };
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(rate_limit.clone())
            .wrap(head_limit)
            .wrap(edge)
            .configure(|cfg| state.register(cfg))
            .app_data(http::json_config(max_body))
            .app_data(http::path_config())
            .app_data(http::query_config())
            // The router tries routes in this order, matching each dynamic pattern with a
            // regex: the hot paths (the redirect, then serving) come first.
            .configure(tracking::configure_redirect)
            .configure(serving_routes.clone())
            .configure(tracking::configure)
            .configure(|cfg| ops.configure(cfg, public))
            .configure(intake::configure)
            .configure(integrations::configure)
            .configure(portal::configure)
            .configure(|cfg| {
                if public.serves_ops() {
                    openapi::configure(cfg);
                    asyncapi::configure(cfg, events_doc.clone());
                }
            })
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

    let listener = match listener {
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
    let server = if https {
        server.listen_rustls_0_23(listener, tls::server_config(&settings.tls)?)?
    } else {
        server.listen(listener)?
    }
    .run();
    Ok((server, port))
}

/// The listener on `server.admin_listen`, when set: plain HTTP, one worker, the operations
/// endpoints and `/healthz` only.
fn admin_server(
    settings: &Settings,
    state: &State,
    ops: &OpsState,
) -> anyhow::Result<Option<(Server, u16)>> {
    if settings.server.admin_listen.is_empty() {
        return Ok(None);
    }
    let listener = TcpListener::bind(&settings.server.admin_listen).map_err(|e| {
        anyhow::anyhow!(
            "server.admin_listen: cannot bind {}: {e}",
            settings.server.admin_listen
        )
    })?;
    let port = listener.local_addr()?.port();
    let head_limit = HeadLimit::from_settings(&settings.limits);
    let (handles, serving, ops) = (state.handles.clone(), state.serving.clone(), ops.clone());
    let events_doc = AsyncApiDocument::new(&settings.events.exchange);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(head_limit)
            .app_data(handles.clone())
            .app_data(serving.clone())
            .configure(|cfg| ops.configure(cfg, Listener::Admin))
            .configure(openapi::configure)
            .configure(|cfg| asyncapi::configure(cfg, events_doc.clone()))
            .default_service(web::to(no_route))
    })
    .disable_signals()
    .workers(1)
    .shutdown_timeout(settings.server.shutdown_timeout_secs)
    .client_request_timeout(Duration::from_millis(
        settings.server.client_request_timeout_ms,
    ))
    .listen(listener)?
    .run();
    Ok(Some((server, port)))
}

/// Whether `server.listen` is a loopback address (reachable from this machine only).
fn listens_on_loopback(settings: &Settings) -> bool {
    settings
        .server
        .listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|addr| addr.ip().is_loopback())
}

async fn no_route(req: HttpRequest) -> Result<HttpResponse, HttpError> {
    Err(http::no_route(&req))
}
