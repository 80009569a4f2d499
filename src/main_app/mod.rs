//! The composition root: reads the configuration, builds the pools, caches and stores, wires the
//! modules through their traits, and runs the HTTP server and the background workers until a
//! signal (or a test) stops them.

pub mod asyncapi;
mod bridges;
pub mod cli;
pub mod openapi;
mod ops;
pub mod settings;
mod wiring;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::modules::{integrations, serving, tracking};
use crate::platform::auth::Customers;
use crate::platform::cloud::CloudStore;
use crate::platform::db::Db;
use crate::platform::jobs::JobQueue;
use crate::platform::mail::MailQueue;
use crate::platform::redis::Redis;

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
    /// Serving: its users, its inventory of adverts, and their sync with Redis.
    pub serving: Arc<serving::ServingService>,
    /// Compressed creatives served over HTTP, cached in memory.
    pub media: serving::MediaService,
    pub redis: Option<Redis>,
    /// Queues e-mail (`mail.send` jobs) inside a caller's transaction; nothing while mail is off.
    pub mail: MailQueue,
    /// The report e-mails' job (`mail.reports`), registered in the queue.
    pub reports: Arc<integrations::ReportJob>,
}

pub struct Application {
    server: Server,
    port: u16,
    /// The `server.admin_listen` server and its port, when set.
    admin: Option<(Server, u16)>,
    stopper: Stopper,
    workers: Vec<JoinHandle<()>>,
    handles: Handles,
}

/// Stops a running application gracefully: no new connections, in-flight requests finish, then
/// the workers finish their current job.
#[derive(Clone)]
pub struct Stopper {
    server: ServerHandle,
    admin: Option<ServerHandle>,
    cancel: CancellationToken,
}

impl Stopper {
    pub async fn stop(&self) {
        match &self.admin {
            Some(admin) => {
                tokio::join!(self.server.stop(true), admin.stop(true));
            }
            None => self.server.stop(true).await,
        }
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
    /// The port actually bound (useful with `listen = "127.0.0.1:0"`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port `server.admin_listen` bound, when it is set.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(|(_, port)| *port)
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
        let admin = async {
            match self.admin {
                Some((admin, _)) => admin.await,
                None => Ok(()),
            }
        };
        let (served, admin) = tokio::join!(self.server, admin);
        let served = served.and(admin);
        signals.abort();
        self.stopper.cancel.cancel();
        // Every request has been answered: delivery leases go back to the other instances, and
        // what the requests counted goes to Redis or the database, side by side.
        let serving_synced = async {
            if tokio::time::timeout(COUNTER_DRAIN_DEADLINE, self.handles.serving.shutdown())
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
